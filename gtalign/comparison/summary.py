"""The welfare-objective comparison's numbers: per arm, its held-out results over seeds, and
each baseline against Cobb-Douglas with a paired interval and a verdict.

Every arm is evaluated on the same held-out prompts, so prompts pair the arms: a metric's value
per prompt is averaged over the arm's seeds, its interval is a bootstrap over prompts, and a
baseline's difference from Cobb-Douglas is a paired bootstrap over the same prompts. The spread
over seeds (min and max of the per-seed means) is reported beside it. Frontier metrics (coverage,
regret) are measured against the joint (U, L) frontier of all arms at the same seed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gtalign.evaluation import pareto
from gtalign.game import welfare
from gtalign.training import evaluation as evaluation_ci

REFERENCE = "cobb_douglas"
# metric -> (label, higher is better); per-prompt arrays named by the metric
METRICS = {
    "user": ("U", True),
    "llm": ("L", True),
    "mutual": ("mutual welfare sqrt(U L)", True),
    "own": ("the arm's own objective", True),
    "dq_correct": ("DQ answer accuracy", True),
    "da_on_dq": ("DA on DQ", True),
    "cq_on_vq": ("CQ on VQ", True),
    "response_tokens": ("response tokens", None),
    "reasoning_tokens": ("reasoning tokens", None),
    "coverage": ("eps-Pareto coverage", True),
    "regret": ("mean regret", False),
    "regret_max": ("worst regret", False),
}
DIFF_METRICS = ("mutual", "user", "llm", "coverage", "regret")

Arrays = Mapping[str, np.ndarray]


def per_prompt(arm: str, evals: Arrays) -> dict[str, np.ndarray]:
  """One seed's per-prompt values of an arm's held-out evaluation (frontier metrics added by
  `with_frontier`)."""
  u = np.asarray(evals["user"], np.float64)
  l = np.asarray(evals["llm"], np.float64)
  out = {"user": u, "llm": l,
         # the reward's own welfare: sqrt(U L) (the main variant's score), the common yardstick
         "mutual": np.asarray(evals["welfare"], np.float64),
         "own": np.asarray(welfare.aggregate(arm, u, l), np.float64)}
  for key in ("dq_correct", "da_on_dq", "cq_on_vq", "response_tokens", "reasoning_tokens"):
    if key in evals:
      out[key] = np.asarray(evals[key], np.float64)
  return out


def with_frontier(seed_arms: dict[str, dict[str, np.ndarray]], eps: float) -> None:
  """Adds per-prompt `regret` and `coverage` (regret <= eps) against the joint frontier of
  every arm's points at this seed, in place."""
  pts = {a: np.stack([v["user"], v["llm"]], 1) for a, v in seed_arms.items()}
  finite = {a: p[np.isfinite(p).all(1)] for a, p in pts.items()}
  every = np.concatenate(list(finite.values()))
  joint, span = pareto.frontier(every), pareto.ranges(every)
  for arm, v in seed_arms.items():
    r = np.full(len(pts[arm]), np.nan)
    ok = np.isfinite(pts[arm]).all(1)
    r[ok] = pareto.regret(pts[arm][ok], joint, span)
    v["regret"] = r
    v["coverage"] = np.where(np.isnan(r), np.nan, (r <= eps + pareto.TOLERANCE).astype(float))


def seed_mean(values: list[np.ndarray]) -> np.ndarray:
  """Per prompt, the mean over seeds (NaN where no seed has a value)."""
  stack = np.stack(values)
  count = np.isfinite(stack).sum(0)
  total = np.where(np.isfinite(stack), stack, 0.0).sum(0)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _finite_mean(x) -> float:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(x.mean()) if x.size else float("nan")


def verdict(diff: tuple[float, float, float]) -> str:
  """"higher", "lower" or "not distinguishable": where the 95% interval of baseline minus
  Cobb-Douglas lies relative to 0."""
  _, lo, hi = diff
  if not (np.isfinite(lo) and np.isfinite(hi)):
    return "not distinguishable"
  if lo > 0:
    return "higher"
  if hi < 0:
    return "lower"
  return "not distinguishable"


def summarise(results: Mapping[str, Mapping[int, Arrays]], eps: float = pareto.DEFAULT_EPS,
              n_boot: int = 2000) -> dict:
  """`results[arm][seed]` = the arm's trained held-out arrays at that seed (all arms on the same
  prompts). Returns {"arms": {arm: {metric: {mean, lo, hi, seed_min, seed_max, per_seed}}},
  "diffs": {arm: {metric: (mean, lo, hi)}}, "verdicts": {arm: line}}."""
  arms = list(results)
  seeds = sorted({s for a in arms for s in results[a]})
  values = {a: {} for a in arms}  # arm -> seed -> metric -> per-prompt array
  for seed in seeds:
    here = {a: per_prompt(a, results[a][seed]) for a in arms if seed in results[a]}
    with_frontier(here, eps)
    for a, v in here.items():
      values[a][seed] = v
  out = {"arms": {}, "diffs": {}, "verdicts": {}, "seeds": seeds, "eps": eps,
         "prompts": int(len(next(iter(values[arms[0]].values()))["user"]))}
  pooled = {}  # arm -> metric -> per-prompt seed mean
  for a in arms:
    pooled[a], out["arms"][a] = {}, {}
    for m in METRICS:
      source = "regret" if m == "regret_max" else m
      runs = [values[a][s][source] for s in values[a] if source in values[a][s]]
      if not runs:
        continue
      per_seed = [_finite_mean(r) if m != "regret_max" else float(np.nanmax(r)) for r in runs]
      if m == "regret_max":  # worst prompt per seed; its interval is the seed-mean regret's max
        pooled_m = seed_mean([values[a][s]["regret"] for s in values[a]])
        stat = _bootstrap_max(pooled_m, n_boot)
      else:
        pooled_m = pooled[a][m] = seed_mean(runs)
        stat = evaluation_ci.bootstrap_ci(pooled_m, n_boot=n_boot)
      # worst regret: the worst prompt's seed-mean regret (its interval's statistic); the
      # per-seed worst prompts are the spread
      out["arms"][a][m] = {"mean": stat[0],
                           "lo": stat[1], "hi": stat[2], "seed_min": float(np.min(per_seed)),
                           "seed_max": float(np.max(per_seed)), "per_seed": per_seed}
  if REFERENCE in arms:
    for a in arms:
      if a == REFERENCE:
        continue
      out["diffs"][a] = {m: evaluation_ci.paired_difference_ci(pooled[a][m], pooled[REFERENCE][m],
                                                               n_boot=n_boot)
                         for m in DIFF_METRICS if m in pooled[a] and m in pooled[REFERENCE]}
      d = out["diffs"][a]["mutual"]
      out["verdicts"][a] = (f"{a} vs Cobb-Douglas on mutual welfare: {verdict(d)} "
                            f"({d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}], 95% paired bootstrap over "
                            f"{out['prompts']} prompts, {len(seeds)} seed(s))")
  return out


def _bootstrap_max(x: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, float, float]:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  if not x.size:
    return (float("nan"),) * 3
  rng = np.random.default_rng(seed)
  draws = x[rng.integers(0, x.size, (n_boot, x.size))].max(1)
  lo, hi = np.quantile(draws, [0.025, 0.975])
  return float(x.max()), float(lo), float(hi)


def markdown(summary: dict) -> str:
  """The comparison table (a row per metric, a column per arm), then the differences from
  Cobb-Douglas and the verdicts."""
  arms = list(summary["arms"])
  lines = [f"Held-out, {summary['prompts']} prompts x seeds {summary['seeds']}: mean over "
           "prompts and seeds [95% bootstrap interval over prompts] (min-max of the per-seed "
           "means)", "", "| metric | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
  for m, (label, _) in METRICS.items():
    cells = []
    for a in arms:
      v = summary["arms"][a].get(m)
      if v is None:
        cells.append("-")
        continue
      f = ".1f" if "tokens" in m else ".3f"
      cells.append(f"{v['mean']:{f}} [{v['lo']:{f}}, {v['hi']:{f}}] ({v['seed_min']:{f}}-"
                   f"{v['seed_max']:{f}})")
    name = label.replace("eps", f"{summary['eps']:g}")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if summary["diffs"]:
    base = [a for a in arms if a in summary["diffs"]]
    lines += ["", "Baseline minus Cobb-Douglas, paired by prompt (95% bootstrap):", "",
              "| metric | " + " | ".join(base) + " |", "|---|" + "---|" * len(base)]
    for m in DIFF_METRICS:
      cells = []
      for a in base:
        d = summary["diffs"][a].get(m)
        cells.append("-" if d is None else
                     f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] {verdict(d)}")
      lines.append(f"| {METRICS[m][0].replace('eps', str(summary['eps']))} | "
                   + " | ".join(cells) + " |")
    lines += [""] + [f"- {v}" for v in summary["verdicts"].values()]
  return "\n".join(lines)
