"""One warm start, then an RL arm per (welfare objective, RL seed), then the comparison.

    python -m gtalign.main --config=configs/compare.py [--workdir=workdir/compare]

Layout of the workdir: `warm_start/` (the shared SFT run, `rl.steps=0`), `arms/<arm>_seed<s>/`
(each a training run whose checkpoints start from a copy of the warm start's last one, so it
resumes past the SFT phase), and `compare.md`, `compare.json`, `compare_scatter.png`,
`compare_curves.png`. An arm is finished when its `arm_done.json` exists: a run killed between
arms redoes none of them, one killed inside an arm resumes it from the arm's own checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time

from gtalign.comparison import plots, summary as summary_lib
from gtalign.game import welfare
from gtalign.parallel import distributed
from gtalign.training import heldout, loop
from gtalign.training.checkpoint import COMMIT_FILE
from gtalign.training.metrics import read_metrics
from gtalign.utils.errors import InvalidInput

DONE_FILE = "arm_done.json"
# Seconds per SFT step of the default model on a 2-core CPU (the README's run), for the ETA
# printed before anything is timed; an RL arm costs loop.RL_STEP_COST SFT steps per RL step.
PRIOR_SFT_STEP_SECONDS = 4.6
# an arm's start (model load, compiles) and its held-out evaluation without steering, in SFT steps
ARM_OVERHEAD_COST = 20.0


def turns_of(arm: str) -> int | None:
  """K of an arm named `turns<K>` (episodes of up to K turns, gtalign.dialogue), else None."""
  k = arm[len("turns"):] if arm.startswith("turns") else ""
  return int(k) if k.isdigit() and int(k) >= 1 else None


def arms_and_seeds(config) -> tuple[list[str], list[int]]:
  """The arms (all welfare objectives, or all `turns<K>`) and the RL seeds, checked."""
  arms = [a.strip() for a in config.compare.arms.split(",") if a.strip()]
  for arm in arms:
    if arm not in welfare.AGGREGATIONS and turns_of(arm) is None:
      raise InvalidInput(f"compare.arms: unknown arm {arm!r}; expected objectives (some of "
                         f"{', '.join(welfare.AGGREGATIONS)}) or turns<K> (episodes of up to "
                         "K turns, e.g. turns1,turns3)")
  if len(set(arms)) != len(arms) or not arms:
    raise InvalidInput(f"compare.arms={config.compare.arms!r}: name each arm once")
  if len({turns_of(a) is None for a in arms}) > 1:
    raise InvalidInput(f"compare.arms={config.compare.arms!r}: compare objectives or turn "
                       "limits, not both")
  if turns_of(arms[0]) is not None and config.eval.dialogue_turns < 1:
    raise InvalidInput("compare.arms of turns<K> are scored as dialogues: set "
                       "eval.dialogue_turns >= 1")
  try:
    seeds = [int(s) for s in str(config.compare.seeds).split(",") if s.strip()]
  except ValueError:
    raise InvalidInput(f"compare.seeds={config.compare.seeds!r}; expected a comma list of "
                       "integers such as '0,1,2'") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise InvalidInput(f"compare.seeds={config.compare.seeds!r}: name each seed once")
  return arms, seeds


def arm_name(arm: str, seed: int) -> str:
  return f"{arm}_seed{seed}"


def _done(directory: str) -> dict | None:
  path = os.path.join(directory, DONE_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _mark_done(directory: str, seconds: float) -> None:
  path = os.path.join(directory, DONE_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump({"seconds": seconds}, f)
  os.replace(path + ".tmp", path)


def seed_from_warm_start(warm_dir: str, arm_dir: str, step: int) -> None:
  """The warm start's step-`step` checkpoint copied into the arm's checkpoints (copied aside,
  then renamed: a kill leaves no half step), unless the arm has checkpoints of its own."""
  source = os.path.join(warm_dir, "checkpoints", str(step))
  if not os.path.isfile(os.path.join(source, COMMIT_FILE)):
    raise InvalidInput(f"{source} is not a committed checkpoint: remove {warm_dir} to redo the "
                       "warm start")
  target_root = os.path.join(arm_dir, "checkpoints")
  if os.path.isdir(target_root) and any(d.isdigit() for d in os.listdir(target_root)):
    return
  os.makedirs(target_root, exist_ok=True)
  tmp = os.path.join(target_root, f"warm-start-copy-{time.time_ns()}")
  shutil.copytree(source, tmp)
  os.replace(tmp, os.path.join(target_root, str(step)))


def _arm_config(config, arm: str, seed: int):
  c = config.copy_and_resolve_references()
  if turns_of(arm) is None:
    c.rl.welfare = arm
  else:
    c.rl.max_turns = turns_of(arm)
  c.rl.seed = seed
  return c


def _warm_config(config):
  c = config.copy_and_resolve_references()
  c.rl.steps = 0
  return c


class Progress:
  """Time left. An arm still to run is estimated from the finished arms of the same name (the
  median), else from any finished arm scaled by the two arms' step costs, else from the warm
  start's SFT steps (or the prior) times the arm's cost in SFT steps (`loop.step_costs`)."""

  def __init__(self, config, arms_left: list[str], warm_left: bool):
    self.config = config
    self.left = list(arms_left)  # the arm name of each run still to do
    self.warm_left = warm_left
    self.arm_seconds: dict[str, list[float]] = {}
    self.sft_step_seconds: float | None = None  # one default SFT step's (corrected for width)

  @property
  def arms_left(self) -> int:
    return len(self.left)

  def cost(self, arm: str) -> float:
    """An arm's cost in default SFT steps: its RL steps and its start and evaluation."""
    return (self.config.rl.steps * loop.step_costs(_arm_config(self.config, arm, 0))[1]
            + ARM_OVERHEAD_COST * (1 + (self.config.eval.dialogue_turns > 0)))

  def arm_estimate(self, arm: str) -> float:
    if self.arm_seconds.get(arm):
      return statistics.median(self.arm_seconds[arm])
    for other, seconds in self.arm_seconds.items():
      if seconds:
        return statistics.median(seconds) * self.cost(arm) / self.cost(other)
    return (self.sft_step_seconds or PRIOR_SFT_STEP_SECONDS) * self.cost(arm)

  def record(self, arm: str, seconds: float) -> None:
    self.arm_seconds.setdefault(arm, []).append(seconds)

  def remaining(self) -> float:
    per_step = self.sft_step_seconds or PRIOR_SFT_STEP_SECONDS
    sft_cost = loop.step_costs(self.config)[0]
    warm = (per_step * (sft_cost * self.config.sft.steps + 2 * loop.EVAL_COST)
            if self.warm_left else 0.0)
    return warm + sum(self.arm_estimate(arm) for arm in self.left)

  def line(self, what: str) -> str:
    basis = ("measured arms" if any(self.arm_seconds.values()) else "the warm start's SFT steps"
             if self.sft_step_seconds else "prior timings of the default model on a 2-core CPU")
    return (f"gtalign compare: {what}; {self.arms_left} arm(s) left, ETA "
            f"{_clock(self.remaining())} (from {basis})")


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _sft_step_seconds(workdir: str, config) -> float | None:
  """A default SFT step's seconds on this machine, from the warm start's (a warm start with
  dialogue rows has wider steps)."""
  steps = [r["step_seconds"] for r in read_metrics(workdir)
           if r.get("phase") == 0.0 and "step_seconds" in r]
  if not steps:
    return None
  return statistics.median(steps[1:] or steps) / loop.step_costs(config)[0]


def compare(config, workdir: str) -> dict:
  """Runs (or resumes) the comparison; returns the summary written to compare.json."""
  arms, seeds = arms_and_seeds(config)
  if config.sft.steps < 1:
    raise InvalidInput("the comparison shares one warm start: sft.steps must be >= 1")
  if config.rl.steps < 1:
    raise InvalidInput("the comparison trains RL arms: rl.steps must be >= 1")
  os.makedirs(workdir, exist_ok=True)
  warm_dir = os.path.join(workdir, "warm_start")
  runs = [(arm, seed) for seed in seeds for arm in arms]  # every arm at one seed, then the next
  dirs = {r: os.path.join(workdir, "arms", arm_name(*r)) for r in runs}
  progress = Progress(config, [r[0] for r in runs if _done(dirs[r]) is None],
                      _done(warm_dir) is None)
  # a resumed comparison's ETA starts from what it already measured
  for r in runs:
    if done := _done(dirs[r]):
      progress.record(r[0], done["seconds"])
  if not progress.warm_left:
    progress.sft_step_seconds = _sft_step_seconds(warm_dir, config)
  distributed.log(progress.line(f"{len(arms)} arms x {len(seeds)} seed(s) from one warm "
                                f"start ({config.sft.steps} SFT steps), {config.rl.steps} RL "
                                "steps each"))
  if _done(warm_dir) is None:
    begin = time.perf_counter()
    loop.train(_warm_config(config), warm_dir)
    _mark_done(warm_dir, time.perf_counter() - begin)
    progress.warm_left = False
  progress.sft_step_seconds = _sft_step_seconds(warm_dir, config)
  for run in runs:
    if _done(dirs[run]) is not None:
      continue
    distributed.log(progress.line(f"arm {arm_name(*run)} starts"))
    begin = time.perf_counter()
    seed_from_warm_start(warm_dir, dirs[run], config.sft.steps)
    loop.train(_arm_config(config, *run), dirs[run])
    seconds = time.perf_counter() - begin
    _mark_done(dirs[run], seconds)
    progress.record(run[0], seconds)
    progress.left.remove(run[0])
    distributed.log(progress.line(f"arm {arm_name(*run)} finished in {_clock(seconds)}"))
  if turns_of(arms[0]) is not None:
    from gtalign.dialogue import compare as dialogue_compare  # pylint: disable=import-outside-toplevel
    return dialogue_compare.report(workdir, config, arms, seeds, dirs)
  return report(workdir, config, arms, seeds, dirs)


def read_evals(directory: str) -> dict:
  """A finished run's held-out evaluations (its eval.json)."""
  with open(os.path.join(directory, "eval.json"), encoding="utf-8") as f:
    return heldout.evals_from_json(json.load(f)["evals"])


def report(workdir: str, config, arms: list[str], seeds: list[int], dirs: dict) -> dict:
  """compare.md, compare.json and the two plots from the finished arms' eval.json files."""
  results = {arm: {seed: read_evals(dirs[(arm, seed)])["trained"] for seed in seeds}
             for arm in arms}
  out = summary_lib.summarise(results, eps=config.compare.eps, n_boot=config.eval.bootstrap)
  warm = read_evals(os.path.join(workdir, "warm_start"))["after_sft"]
  warm_point = (float(heldout.finite_mean(warm["user"])), float(heldout.finite_mean(warm["llm"])))
  series = {}
  for arm in arms:
    series[arm] = {k: [] for k in ("welfare", "da_on_dq", "cq_on_vq")}
    for seed in seeds:
      for r in read_metrics(dirs[(arm, seed)]):
        if r.get("phase") == 1.0:
          for k in series[arm]:
            if f"rollout/{k}" in r:
              series[arm][k].append((r["step"] - config.sft.steps, r[f"rollout/{k}"]))
  if not distributed.is_main():
    return out
  scatter = plots.scatter(out, os.path.join(workdir, "compare_scatter.png"), warm_point)
  curves = plots.curves(series, os.path.join(workdir, "compare_curves.png"))
  text = (summary_lib.markdown(out)
          + f"\n\nWarm start (after SFT, shared): U {warm_point[0]:.3f}, L {warm_point[1]:.3f}, "
          f"mutual welfare {heldout.finite_mean(warm['welfare']):.3f}\nplots: {scatter}, {curves}")
  print(text, flush=True)
  with open(os.path.join(workdir, "compare.md"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  with open(os.path.join(workdir, "compare.json"), "w", encoding="utf-8") as f:
    json.dump({**out, "warm_start": {"user": warm_point[0], "llm": warm_point[1]},
               "arms_order": arms}, f, indent=1)
  return out
