"""Training curves to a PNG: payoff/welfare means with eval points, and loss-type panels below.

Draws on an Agg canvas directly instead of through `pyplot`, so it needs no display, does not
switch the process-wide backend, and leaks no figures when called every few hundred steps.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

AUX_KEYS = ("loss", "kl")


def plot_training(metrics: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                  keys: Sequence[str] = ("welfare", "user", "llm", "format_ok"),
                  eval_key_prefix: str = "eval/", aux_keys: Sequence[str] = AUX_KEYS,
                  title: str | None = None) -> str:
  """Writes the curves of `metrics` (e.g. `read_metrics(workdir)`) over step; returns the path.

  Top panel: the training value of each of `keys` as a line and `eval_key_prefix + key` as
  markers in the same colour. Below, one panel per `aux_keys` entry present (loss and KL live
  on scales the payoffs do not share).
  """
  records = sorted(metrics, key=lambda r: r.get("step", 0))
  aux = [k for k in aux_keys if _series(records, k)[0]]
  fig = Figure(figsize=(10, 7 if aux else 4.5), dpi=100)
  FigureCanvasAgg(fig)
  grid = fig.add_gridspec(2 if aux else 1, max(1, len(aux)), height_ratios=[3, 2] if aux else None)
  ax = fig.add_subplot(grid[0, :])
  plotted = False
  for i, key in enumerate(keys):
    color = f"C{i}"
    steps, values = _series(records, key)
    if steps:
      ax.plot(steps, values, color=color, lw=1.2, label=key)
      plotted = True
    steps, values = _series(records, eval_key_prefix + key)
    if steps:
      ax.plot(steps, values, color=color, ls="--", marker="o", ms=4,
              label=eval_key_prefix + key)
      plotted = True
  if plotted:
    ax.legend(loc="best", fontsize=8, ncol=2)
  else:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
  ax.set_xlabel("step")
  ax.grid(alpha=0.3)
  if title:
    ax.set_title(title)
  for j, key in enumerate(aux):
    sub = fig.add_subplot(grid[1, j])
    steps, values = _series(records, key)
    sub.plot(steps, values, color="C7", lw=1.0)
    steps, values = _series(records, eval_key_prefix + key)
    if steps:
      sub.plot(steps, values, color="C3", ls="--", marker="o", ms=3, label=eval_key_prefix + key)
      sub.legend(fontsize=8)
    sub.set_title(key, fontsize=9)
    sub.set_xlabel("step")
    sub.grid(alpha=0.3)
  fig.tight_layout()
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format="png")
  return path


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list, list]:
  """(steps, values) of the records with a finite number under `key`."""
  steps, values = [], []
  for r in records:
    v = r.get(key)
    if isinstance(v, numbers.Real) and math.isfinite(v) and "step" in r:
      steps.append(r["step"])
      values.append(float(v))
  return steps, values
