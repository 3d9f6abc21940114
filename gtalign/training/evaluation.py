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
    "response_tokens": "<response> tokens",
    "reasoning_tokens": "reasoning tokens",
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


def _stratified_means(dq: np.ndarray, vq: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
  """Balanced accuracies of `n_boot` resamples, each type resampled within itself."""
  return 0.5 * (_bootstrap_means(dq, n_boot, seed) + _bootstrap_means(vq, n_boot, seed + 1))


def _finite(x) -> np.ndarray:
  x = np.asarray(x, np.float64).ravel()
  return x[~np.isnan(x)]


def balanced_accuracy_ci(da_on_dq, cq_on_vq, n_boot: int = 2000, seed: int = 0,
                         alpha: float = 0.05) -> tuple[float, float, float]:
  """(mean of the two per-type rates, lo, hi), bootstrapping each type's prompts separately.

  Any constant policy scores exactly 0.5: always answering gets 1 on DQ and 0 on VQ.
  """
  dq, vq = _finite(da_on_dq), _finite(cq_on_vq)
  if not dq.size or not vq.size:
    return (float("nan"),) * 3
  means = _stratified_means(dq, vq, n_boot, seed)
  lo, hi = np.quantile(means, [alpha / 2, 1.0 - alpha / 2])
  return 0.5 * (dq.mean() + vq.mean()), float(lo), float(hi)


def balanced_difference_ci(a_dq, a_vq, b_dq, b_vq, n_boot: int = 2000, seed: int = 0,
                           alpha: float = 0.05) -> tuple[float, float, float]:
  """Balanced accuracy of a minus b on the same prompts (paired, stratified by type)."""
  a_dq, b_dq = np.asarray(a_dq, np.float64), np.asarray(b_dq, np.float64)
  a_vq, b_vq = np.asarray(a_vq, np.float64), np.asarray(b_vq, np.float64)
  d_dq = _finite(a_dq - b_dq)
  d_vq = _finite(a_vq - b_vq)
  if not d_dq.size or not d_vq.size:
    return (float("nan"),) * 3
  means = _stratified_means(d_dq, d_vq, n_boot, seed)
  lo, hi = np.quantile(means, [alpha / 2, 1.0 - alpha / 2])
  return 0.5 * (d_dq.mean() + d_vq.mean()), float(lo), float(hi)


BEHAVIOUR_LABELS = {
    "da_on_dq": "DA-rate on DQ",
    "cq_on_vq": "CQ-rate on VQ",
    "balanced": "balanced accuracy",
    "dq_correct": "DQ answer accuracy",
    "aq_rate": "AQ-rate",
    "action_matches_key": "response does the key",
    "key_is_selected": "key = table's pick",
    "steering": "steering (edited table followed)",
    "read_dq": "reads DQ",
    "read_vq": "reads VQ",
    "new_read_dq": "reads DQ (new phrasings)",
    "new_read_vq": "reads VQ (new phrasings)",
    "welfare_dq": "welfare on DQ",
    "welfare_vq": "welfare on VQ",
    "response_tokens": "<response> tokens",
    "reasoning_tokens": "reasoning tokens",
}


def behaviour_table(rows: Mapping[str, Mapping[str, np.ndarray]], n_boot: int = 2000,
                    seed: int = 0, alpha: float = 0.05) -> str:
  """Per question type, one row per policy: "mean [lo, hi]" of each behaviour metric.

  Needs the arrays of `rollout.behaviour_arrays` (policies without them are skipped).
  """
  header = ["policy", "DQ n", "VQ n", *BEHAVIOUR_LABELS.values()]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] *
                                                             (len(header) - 1)) + "|"]
  for policy, v in rows.items():
    if "da_on_dq" not in v:
      continue
    dq = np.asarray(v["dq"], np.float64) == 1.0
    vq = np.asarray(v["dq"], np.float64) == 0.0
    cells = []
    for metric in BEHAVIOUR_LABELS:
      if metric == "balanced":
        ci = balanced_accuracy_ci(v["da_on_dq"], v["cq_on_vq"], n_boot, seed, alpha)
      elif metric in ("welfare_dq", "welfare_vq"):
        w = np.asarray(v["welfare"], np.float64)
        ci = bootstrap_ci(w[dq if metric == "welfare_dq" else vq], n_boot, seed, alpha)
      elif metric not in v:  # an evaluation that did not measure it
        ci = (float("nan"),) * 3
      else:
        ci = bootstrap_ci(v[metric], n_boot, seed, alpha)
      cells.append(_fmt_ci(*ci))
    lines.append("| " + " | ".join([str(policy), str(int(dq.sum())), str(int(vq.sum())),
                                    *cells]) + " |")
  return "\n".join(lines)
