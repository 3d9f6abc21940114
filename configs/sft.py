"""Supervised warm start on game-structured traces (the built-in world generates its own).

`python -m gtalign.main --config=configs/sft.py` trains only the SFT phase of configs/grpo.py
and reports the held-out table before and after it. Presets: (none), `tiny`.
"""

from configs import grpo


def get_config(arg: str | None = None):
  c = grpo.get_config(arg)
  c.rl.steps = 0
  return c
