"""One policy's held-out results as the paper's metrics, each with a 95% bootstrap interval over
prompts: answer accuracy, U, L, welfare, lengths, answers per 1k tokens and characters, the
(U, L) frontier metrics of `evaluation.pareto`, and what the responses do per question type.

Means are over prompts with a finite value (a judge failure, or a metric a row has no part in,
is NaN); ratios and frontier metrics are recomputed on each resample of the prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from gtalign.evaluation import pareto

Arrays = Mapping[str, np.ndarray]

# metric -> (label, per-row key); a mean over prompts
MEANS = {
    "format_ok": ("format-valid", "format_ok"),
    "judge_failed": ("judge failed (left out of the means)", "judge_failed"),
    "answer": ("answer accuracy", "answer"),
    "dq_correct": ("DQ answer accuracy", "dq_correct"),
    "user": ("U", "user"),
    "llm": ("L", "llm"),
    "welfare": ("welfare sqrt(U L)", "welfare"),
    "response_tokens": ("response tokens", "response_tokens"),
    "response_chars": ("response chars", "response_chars"),
    "reasoning_tokens": ("reasoning tokens", "reasoning_tokens"),
    "reasoning_chars": ("reasoning chars", "reasoning_chars"),
    "da_on_dq": ("DA on DQ", "da_on_dq"),
    "cq_on_vq": ("CQ on VQ", "cq_on_vq"),
    "read_dq": ("reads DQ", "read_dq"),
    "read_vq": ("reads VQ", "read_vq"),
    "key_is_selected": ("key = table's pick", "key_is_selected"),
    "steering": ("steering", "steering"),
}


def _mean(x) -> float:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(x.mean()) if x.size else float("nan")


def _per_1k(answer_key: str, length_key: str) -> Callable[[Arrays], float]:
  def stat(a: Arrays) -> float:
    length = _mean(a[length_key])
    return 1000.0 * _mean(a[answer_key]) / length if length > 0 else float("nan")
  return stat


def _frontier(metric: str, eps: float) -> Callable[[Arrays], float]:
  def stat(a: Arrays) -> float:
    pts = pareto.as_points(a["user"], a["llm"])
    return pareto.single(pts, eps)[metric] if len(pts) else float("nan")
  return stat


# metric -> (label, statistic of the resampled arrays); recomputed per resample
def statistics(eps: float = pareto.DEFAULT_EPS) -> dict[str, tuple[str, Callable[[Arrays], float]]]:
  return {
      "answers_per_1k_tokens": ("answers / 1k tokens", _per_1k("answer", "completion_tokens")),
      "answers_per_1k_chars": ("answers / 1k chars", _per_1k("answer", "completion_chars")),
      "coverage": (f"{eps:g}-Pareto coverage", _frontier("coverage", eps)),
      "hypervolume": ("hypervolume", _frontier("hypervolume", eps)),
      "hypervolume_first_rectangle": ("hypervolume (original's)",
                                      _frontier("hypervolume_first_rectangle", eps)),
      "regret_mean": ("mean regret", _frontier("regret_mean", eps)),
      "regret_max": ("worst regret", _frontier("regret_max", eps)),
      "nash_social_welfare": ("Nash social welfare", _frontier("nash_social_welfare", eps)),
  }


def bootstrap_stat(stat: Callable[[Arrays], float], arrays: Arrays, n_boot: int, seed: int = 0
                   ) -> tuple[float, float, float]:
  """(stat on all prompts, 2.5% and 97.5% quantiles of stat on `n_boot` resamples of them)."""
  n = len(next(iter(arrays.values())))
  value = stat(arrays)
  if n < 2 or not np.isfinite(value):
    return value, value, value
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(n_boot):
    idx = rng.integers(0, n, n)
    draws.append(stat({k: np.asarray(v)[idx] for k, v in arrays.items()}))
  draws = np.asarray(draws, np.float64)
  draws = draws[np.isfinite(draws)]
  if not draws.size:
    return value, value, value
  lo, hi = np.quantile(draws, [0.025, 0.975])
  return value, float(lo), float(hi)


def summarise(arrays: Arrays, n_boot: int = 1000, eps: float = pareto.DEFAULT_EPS,
              seed: int = 0) -> dict[str, tuple[float, float, float]]:
  """metric -> (value, lo, hi) for every metric the arrays have the rows for."""
  arrays = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
  # one entry per evaluated prompt; arrays over other items (the reading check's own
  # questions, `new_read_*`) are not resampled with the prompts
  n = len(arrays["format_ok"])
  arrays = {k: v for k, v in arrays.items() if v.shape == (n,)}
  out = {}
  for name, (_, key) in MEANS.items():
    if key in arrays and np.isfinite(arrays[key]).any():
      out[name] = bootstrap_stat(lambda a, key=key: _mean(a[key]), {key: arrays[key]}, n_boot,
                                 seed)
  for name, (_, stat) in statistics(eps).items():
    try:
      out[name] = bootstrap_stat(stat, arrays, n_boot, seed)
    except KeyError:  # arrays without the lengths or (U, L) this statistic needs
      continue
  return out


def label(metric: str, eps: float = pareto.DEFAULT_EPS) -> str:
  return MEANS[metric][0] if metric in MEANS else statistics(eps)[metric][0]


def table(results: Mapping[str, Mapping[str, tuple[float, float, float]]],
          eps: float = pareto.DEFAULT_EPS, counts: Mapping[str, str] | None = None) -> str:
  """Markdown: a row per metric, a column per source (or policy), "value [lo, hi]"."""
  names = list(results)
  metrics = [m for m in (*MEANS, *statistics(eps)) if any(m in results[n] for n in names)]
  lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  if counts:
    lines.append("| prompts | " + " | ".join(counts.get(n, "") for n in names) + " |")
  for m in metrics:
    cells = []
    for n in names:
      if m not in results[n]:
        cells.append("-")
        continue
      v, lo, hi = results[n][m]
      digits = 1 if ("tokens" in m or "chars" in m) and "per_1k" not in m else 3
      cells.append(f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
    lines.append(f"| {label(m, eps)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
