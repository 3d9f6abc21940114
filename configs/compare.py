"""The welfare-objective comparison: one warm start, then an RL arm per objective and seed.

    python -m gtalign.main --config=configs/compare.py --workdir=workdir/compare

Every arm is the default GRPO run (configs/grpo.py) from the same warm start, with only
`rl.welfare` (the objective its advantages come from) and `rl.seed` (its sampling and prompt
order) changed. Presets: (none) Cobb-Douglas, linear, user-only and LLM-only welfare at seeds
0, 1, 2 on the default model and world; `tiny` two arms of a random tiny model, for tests.
Add `nash` or `min` with --config.compare.arms=...
"""

import ml_collections

from configs import grpo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "tiny"):
    raise ValueError(f"unknown preset {arg!r} for configs/compare.py; expected '' or 'tiny'")
  c = grpo.get_config("tiny" if arg == "tiny" else None)
  c.compare = ml_collections.ConfigDict(dict(
      arms="cobb_douglas,linear,user_only,llm_only",  # names in gtalign.game.welfare
      seeds="0,1,2",  # rl.seed of each arm's runs
      eps=0.1,  # epsilon-Pareto coverage threshold, a share of each axis's range
  ))
  # the arms are scored on U, L and what their responses do; steering and the reading check
  # are `gtalign.evaluate`'s (they cost more than a third of an evaluation here)
  c.eval.steering = False
  c.eval.phrasings = False
  if arg == "tiny":
    c.compare.arms = "cobb_douglas,linear"
    c.compare.seeds = "0"
    c.sft.steps = 8  # the plumbing only: the verdicts are tested on synthetic arms
    c.rl.steps = 2
    c.rl.max_new_tokens = 64
    c.eval.max_new_tokens = 64
    c.eval.at_start = False
    c.eval.base_plain = False
    c.checkpoint.every = 8
  return c
