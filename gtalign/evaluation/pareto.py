"""Multi-objective metrics on (U, L) points: how close a policy's answers sit to the best trade-off
any compared policy reached between the user's welfare and the LLM's.

Each evaluated prompt gives one point (U, L); both are maximised. Following the GTAlign analysis
scripts (method reference, section 12.3), policies are compared against the *joint* frontier of
the union of their points, each axis normalised by the union's range:

- `regret` of a point: its L-infinity gap to the nearest frontier point, max over the axes of
  (frontier - point) / range with negative gaps clipped to 0 (0 on the frontier);
- `coverage(eps)`: the share of a policy's points whose regret is at most eps (eps-Pareto coverage);
- `hypervolume`: the area a policy's own frontier dominates above the union's minimum corner (the
  true 2-D value; `hypervolume_first_rectangle` is the original script's, which counts only the
  rectangle under the frontier's highest-U point);
- `nash_social_welfare`: mean sqrt(max(U, 0) + 1e-9) * sqrt(max(L, 0) + 1e-9).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TOLERANCE = 1e-9  # points closer than this on an axis are equal on it (as the original's isclose)
DEFAULT_EPS = 0.1  # the coverage threshold the original comparison table used


def as_points(user, llm) -> np.ndarray:
  """[n, 2] float64 (U, L) points, rows with a NaN on either axis (unjudged) dropped."""
  pts = np.stack([np.asarray(user, np.float64).ravel(), np.asarray(llm, np.float64).ravel()], 1)
  return pts[np.isfinite(pts).all(1)]


def frontier(points: np.ndarray) -> np.ndarray:
  """The non-dominated points (duplicates kept once), sorted by U descending, so L ascends.

  a is dominated by b when b >= a on both axes and b > a on one (within TOLERANCE)."""
  pts = np.unique(np.asarray(points, np.float64).reshape(-1, 2), axis=0)
  if not len(pts):
    return pts
  ge = (pts[None, :, :] >= pts[:, None, :] - TOLERANCE).all(-1)  # [a, b]: b >= a on both
  gt = (pts[None, :, :] > pts[:, None, :] + TOLERANCE).any(-1)  # b > a on one
  dominated = (ge & gt).any(1)
  front = pts[~dominated]
  return front[np.lexsort((front[:, 1], -front[:, 0]))]


def ranges(points: np.ndarray) -> np.ndarray:
  """Per-axis range of `points`, 1 where an axis is constant (so gaps stay finite)."""
  span = np.ptp(points, axis=0) if len(points) else np.ones(2)
  return np.where(span > TOLERANCE, span, 1.0)


def regret(points: np.ndarray, front: np.ndarray, span: np.ndarray) -> np.ndarray:
  """Per point: min over frontier points of the L-infinity normalised gap, gaps clipped at 0."""
  if not len(points):
    return np.zeros(0)
  gap = np.clip((front[None, :, :] - points[:, None, :]) / span, 0.0, None)  # [p, f, 2]
  return gap.max(-1).min(1)


def hypervolume(front: np.ndarray, reference: Sequence[float]) -> float:
  """Area dominated by `front` (U descending, L ascending) and above `reference` (u0, l0)."""
  ref_u, ref_l = reference
  area, floor = 0.0, ref_l
  for u, l in frontier(front):
    if u > ref_u and l > floor:
      area += (u - ref_u) * (l - floor)
      floor = l
  return float(area)


def hypervolume_first_rectangle(front: np.ndarray, reference: Sequence[float]) -> float:
  """The original script's "hypervolume": the frontier's highest-U point's rectangle only."""
  front = frontier(front)
  if not len(front):
    return 0.0
  u, l = front[0]
  return float(max(0.0, u - reference[0]) * max(0.0, l - reference[1]))


def nash_social_welfare(points: np.ndarray) -> float:
  """Mean of sqrt(max(U, 0) + 1e-9) * sqrt(max(L, 0) + 1e-9): Cobb-Douglas at alpha 0.5."""
  if not len(points):
    return float("nan")
  safe = np.sqrt(np.clip(points, 0.0, None) + 1e-9)
  return float((safe[:, 0] * safe[:, 1]).mean())


def compare(policies: Mapping[str, np.ndarray], eps: float = DEFAULT_EPS) -> dict[str, dict]:
  """Per policy, against the joint frontier of all of them: coverage, average and worst regret,
  hypervolume (true and first-rectangle) from the union's minimum corner, Nash social welfare,
  and the per-point regret (for intervals over prompts)."""
  every = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in policies.values()])
  if not len(every):
    raise ValueError("no finite (U, L) points to compare")
  joint = frontier(every)
  span = ranges(every)
  corner = every.min(0)
  out = {}
  for name, pts in policies.items():
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    r = regret(pts, joint, span)
    own = frontier(pts)
    out[name] = {
        "coverage": float((r <= eps + TOLERANCE).mean()) if len(r) else float("nan"),
        "regret_mean": float(r.mean()) if len(r) else float("nan"),
        "regret_max": float(r.max()) if len(r) else float("nan"),
        "hypervolume": hypervolume(own, corner),
        "hypervolume_first_rectangle": hypervolume_first_rectangle(own, corner),
        "nash_social_welfare": nash_social_welfare(pts),
        "regret_per_point": r,
        "frontier": own,
    }
  return out


def single(points: np.ndarray, eps: float = DEFAULT_EPS) -> dict[str, float]:
  """One policy against its own frontier (what `gtalign.evaluate` reports for one model)."""
  scored = compare({"policy": points}, eps)["policy"]
  return {k: v for k, v in scored.items() if k not in ("regret_per_point", "frontier")}
