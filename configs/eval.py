"""Held-out evaluation only (no training) of a model on the built-in world or GTAlign data.

    python -m gtalign.main --config=configs/eval.py --config.model.name=DIR_OR_GGUF \
        [--config.data.source=math-hard --config.data.dir=.../gtalign --config.data.prompt_style=full]

Prints format-valid rate, U, L and welfare, and per question type what the responses do (DA on
definite, CQ on vague questions, balanced accuracy, answer accuracy, key/table/response agreement,
<response> and reasoning tokens), with 95% bootstrap intervals. Presets: (none), `tiny`.
"""

from configs import grpo


def get_config(arg: str | None = None):
  c = grpo.get_config(arg)
  c.sft.steps = 0
  c.rl.steps = 0
  return c
