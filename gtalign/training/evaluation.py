"""Percentile-bootstrap confidence intervals and the held-out markdown table, in numpy.

Held-out metrics are per-sample arrays (0/1 rates, U, L, welfare, token counts); a policy's row
reports "mean [lo, hi]" so differences between policies are read against their sampling noise.
NaN entries (judge failures) are dropped, as `gtalign.score.summarise` excludes them from means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# held-out table columns: metric key -> column header
METRIC_LABELS = {
    "format_ok": "format-valid rate",
    "user": "mean U",
    "llm": "mean L",
    "welfare": "mean welfare",
    "welfare_optimal": "welfare-optimal strategy rate",
    "response_tokens": "mean response tokens",
}
DEFAULT_METRICS = tuple(METRIC_LABELS)
_MAX_DRAWS_PER_CHUNK = 1 << 22  # indices drawn at once: bounds memory for large held-out sets


def _bootstrap_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
  """Means of `n_boot` resamples (with replacement) of the 1-D `x`."""
  rng = np.random.default_rng(seed)
  n = x.shape[0]
  chunk = max(1, _MAX_DRAWS_PER_CHUNK // n)
  out = np.empty(n_boot, np.float64)
  for start in range(0, n_boot, chunk):
    stop = min(n_boot, start + chunk)
    out[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
  return out


def _ci(x: np.ndarray, n_boot: int, seed: int, alpha: float) -> tuple[float, float, float]:
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")
  if x.size == 0:
    return (float("nan"),) * 3
  mean = float(x.mean())
  if x.size == 1:
    return mean, mean, mean
  lo, hi = np.quantile(_bootstrap_means(x, n_boot, seed), [alpha / 2, 1.0 - alpha / 2])
  return mean, float(lo), float(hi)


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float, float]:
  """(mean, lo, hi): the sample mean and its percentile-bootstrap (1 - alpha) interval."""
  x = np.asarray(values, np.float64).ravel()
  return _ci(x[~np.isnan(x)], n_boot, seed, alpha)


def paired_difference_ci(a, b, n_boot: int = 2000, seed: int = 0,
                         alpha: float = 0.05) -> tuple[float, float, float]:
  """(mean(a - b), lo, hi) for paired samples, e.g. two policies on the same prompts.

  Resampling pairs jointly keeps the per-prompt correlation, so the interval is much narrower
  than comparing two independent intervals. Pairs with a NaN on either side are dropped.
  """
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(f"paired samples need equal lengths, got {a.shape[0]} and {b.shape[0]}")
  d = a - b
  return _ci(d[~np.isnan(d)], n_boot, seed, alpha)


def summary_table(rows: Mapping[str, Mapping[str, np.ndarray]],
                  metrics: Sequence[str] = DEFAULT_METRICS, n_boot: int = 2000, seed: int = 0,
                  alpha: float = 0.05) -> str:
  """A markdown table, one row per policy, each cell "mean [lo, hi]" ("-" when missing).

  `n` is the largest per-metric sample count of the policy (after dropping NaNs).
  """
  header = ["policy", "n", *(METRIC_LABELS.get(m, m) for m in metrics)]
  align = ["---"] + ["---:"] * (len(header) - 1)
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
  for policy, values in rows.items():
    cells, n = [], 0
    for metric in metrics:
      if metric not in values:
        cells.append("-")
        continue
      x = np.asarray(values[metric], np.float64).ravel()
      x = x[~np.isnan(x)]
      n = max(n, x.size)
      cells.append(_fmt_ci(*_ci(x, n_boot, seed, alpha)))
    lines.append("| " + " | ".join([str(policy).replace("|", "\\|"), str(n), *cells]) + " |")
  return "\n".join(lines)


def _fmt_ci(mean: float, lo: float, hi: float) -> str:
  if np.isnan(mean):
    return "-"
  spec = ".1f" if abs(mean) >= 10 else ".3f"  # token counts vs rates and payoffs
  return f"{mean:{spec}} [{lo:{spec}}, {hi:{spec}}]"
