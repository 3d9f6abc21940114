"""The comparison's figures: U against L per arm, and welfare and strategy curves per arm.

Agg canvas only (no pyplot), as `training.plots`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gtalign.evaluation import pareto


def _save(fig: Figure, path: str) -> str:
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format="png")
  return path


def scatter(summary: dict, path: str, warm_start: tuple[float, float] | None = None) -> str:
  """Mean U (x) against mean L (y): each seed of an arm small, the arm's mean large, and the
  Pareto frontier of the arms' means as a staircase."""
  fig = Figure(figsize=(6.5, 5), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  means = {}
  for i, (arm, m) in enumerate(summary["arms"].items()):
    color = f"C{i}"
    ax.scatter(m["user"]["per_seed"], m["llm"]["per_seed"], s=18, color=color, alpha=0.5)
    means[arm] = (m["user"]["mean"], m["llm"]["mean"])
    ax.scatter(*means[arm], s=90, color=color, edgecolor="black", label=arm, zorder=3)
  if warm_start:
    ax.scatter(*warm_start, s=70, marker="x", color="gray", label="warm start", zorder=3)
  front = pareto.frontier(np.asarray(list(means.values())))
  if len(front) > 1:
    ax.step(front[:, 0], front[:, 1], where="post", color="black", lw=0.8, ls="--",
            label="frontier of the arm means")
  ax.set_xlabel("mean U (user welfare)")
  ax.set_ylabel("mean L (LLM welfare)")
  ax.set_title(f"held-out U and L per arm (seeds {summary['seeds']}: small markers)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, path)


def curves(series: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], path: str,
           keys: Sequence[str] = ("welfare", "da_on_dq", "cq_on_vq")) -> str:
  """One panel per key: each arm's RL rollout mean over steps (averaged over seeds).

  `series[arm][key]` = [(RL step, value), ...] pooled over seeds."""
  fig = Figure(figsize=(4.2 * len(keys), 3.8), dpi=100)
  FigureCanvasAgg(fig)
  for j, key in enumerate(keys):
    ax = fig.add_subplot(1, len(keys), j + 1)
    for i, (arm, by_key) in enumerate(series.items()):
      points = by_key.get(key, [])
      if not points:
        continue
      steps = sorted({s for s, _ in points})
      values = [np.mean([v for s2, v in points if s2 == s]) for s in steps]
      ax.plot(steps, values, color=f"C{i}", marker="o", ms=3, label=arm)
    ax.set_title(f"rollout {key} (mean over seeds)", fontsize=9)
    ax.set_xlabel("RL step")
    ax.grid(alpha=0.3)
    if j == 0:
      ax.legend(fontsize=8)
  return _save(fig, path)
