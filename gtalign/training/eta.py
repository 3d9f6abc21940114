"""Time left in a run whose phases cost differently per step, with evaluations still to come.

One rate for the whole run is wrong at every phase boundary: an RL step (sampling, judging, an
update on G completions per prompt) costs a few SFT steps, and a held-out evaluation tens of
them, so an ETA from the SFT rate promises minutes where a quarter of an hour is left. Each
phase's step cost is measured once it runs (the median, so a compile or a checkpoint does not
skew it); until then it is the measured phase's cost times a prior ratio.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Sequence


@dataclasses.dataclass
class Phase:
  name: str
  steps: int
  relative_cost: float  # seconds per step in units of the first phase's, until measured


class Eta:
  """`phases` in run order; `evals` evaluations still to come, each `eval_cost` first-phase
  steps until one has been timed."""

  def __init__(self, phases: Sequence[Phase], evals: int = 0, eval_cost: float = 0.0,
               start_step: int = 0):
    self.phases = [p for p in phases if p.steps > 0]
    self.evals_left = evals
    self.eval_cost = eval_cost
    self._seconds: dict[str, list[float]] = {p.name: [] for p in self.phases}
    self._eval_seconds: list[float] = []
    self._start = start_step

  def phase_of(self, step: int) -> Phase | None:
    """The phase that step `step` (0-based) belongs to."""
    end = 0
    for p in self.phases:
      end += p.steps
      if step < end:
        return p
    return None

  def record_step(self, step: int, seconds: float) -> None:
    phase = self.phase_of(step)
    if phase is not None:
      self._seconds[phase.name].append(seconds)

  def record_eval(self, seconds: float) -> None:
    self._eval_seconds.append(seconds)
    self.evals_left = max(0, self.evals_left - 1)

  def _per_step(self, phase: Phase) -> float | None:
    """Median seconds per step of `phase`, leaving out its first (compiling) step when later
    ones exist; else from a measured phase and the prior ratio."""
    own = self._seconds[phase.name]
    if own:
      return statistics.median(own[1:] or own)
    for other in self.phases:
      if self._seconds[other.name]:
        return self._per_step(other) * phase.relative_cost / other.relative_cost
    return None

  def remaining(self, done: int) -> float | None:
    """Seconds left once `done` steps are finished; None before anything was timed."""
    total, end = 0.0, 0
    for p in self.phases:
      left = min(p.steps, max(0, end + p.steps - done))
      end += p.steps
      if left:
        per_step = self._per_step(p)
        if per_step is None:
          return None
        total += left * per_step
    if self.evals_left:
      if self._eval_seconds:
        total += self.evals_left * statistics.mean(self._eval_seconds)
      else:
        first = self._per_step(self.phases[0]) if self.phases else None
        if first is None:
          return None
        total += self.evals_left * self.eval_cost * first / self.phases[0].relative_cost
    return total
