"""Ask or answer, outside the world: GTAlign's ambig_qa test split (real user questions, 150
with a single answer and 150 with several meanings).

A policy that asks back on everything, or answers everything, shows at once: the rates are
reported per kind of question, with no bar (the world's training says nothing of these
questions). A policy answers through the game prompt (its `<response>` is classified); the base
model, which writes no game, is asked plainly (`--plain`) and its reply classified.

    python -m gtalign.evaluation.ambiguity --model=WORKDIR/export --data=../shared/data/gtalign
    python -m gtalign.evaluation.ambiguity --model=smollm2-135m-instruct --plain --data=...
"""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import numpy as np

from gtalign.game import behaviour, trace
from gtalign.game import prompt as prompt_lib
from gtalign.sampling.sampler import Sampler, SamplingConfig

SOURCE = "ambig_qa"
KINDS = ("single", "multiple")


def kind(row: dict[str, Any]) -> str:
  """"multiple" for a question with several meanings (ground truth `multipleQAs###...`)."""
  return "multiple" if str(row["reward_model"]["ground_truth"]).startswith("multipleQAs") \
      else "single"


def question(row: dict[str, Any]) -> str:
  return row["extra_info"]["single_turn_prompt"]


def replies(sampler: Sampler, params, questions: Sequence[str], plain_chat: bool,
            style: str = "compact", system: str | None = None, chunk: int = 25,
            max_new_tokens: int | None = None) -> list[str]:
  """What the policy says to each question: its `<response>` under the game prompt (up to 288
  new tokens, a whole trace), or the first 64 tokens of the plain reply (`plain_chat`: enough
  to tell an answer from a question); "" for a trace without a response."""
  max_new_tokens = max_new_tokens or (64 if plain_chat else 288)
  tokenizer = sampler.tokenizer
  if plain_chat:
    messages = [[{"role": "user", "content": q}] for q in questions]
    stop = ()
  else:
    messages = [prompt_lib.build_messages(q, system, style=style) for q in questions]
    stop = (trace.RESPONSE_END,)
  prompts = [tokenizer.encode(prompt_lib.render(tokenizer, m)) for m in messages]
  out: list[str] = []
  for at in range(0, len(prompts), chunk):
    texts = sampler.generate(params, prompts[at:at + chunk], SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=0.0, stop=stop,
        include_stop_str=True)).texts
    out += texts if plain_chat else [trace.parse_trace(t).response for t in texts]
    print(f"ambiguity: {len(out)}/{len(prompts)} questions", file=sys.stderr, flush=True)
  return out


def rates(kinds: Sequence[str], said: Sequence[str]) -> dict[str, dict[str, float]]:
  """Per kind of question, the share of replies that answer (DA), ask (CQ), do both (AQ) or
  neither."""
  did = np.asarray([behaviour.classify(s) for s in said])
  kinds = np.asarray(kinds)
  return {k: {a: float((did[kinds == k] == a).mean()) if (kinds == k).any() else float("nan")
              for a in (*behaviour.ACTIONS, behaviour.NONE)} for k in KINDS}


def main(argv: Sequence[str]) -> None:
  from gtalign.data import gtalign as gtalign_data  # pylint: disable=import-outside-toplevel
  from gtalign.models.checkpoints import load_pretrained  # pylint: disable=import-outside-toplevel
  from gtalign.training.export import settings_for_model  # pylint: disable=import-outside-toplevel
  del argv
  rows = gtalign_data.read_rows(_DATA.value, SOURCE, "test")
  if _LIMIT.value:  # the first N of each kind
    rows = [r for k in KINDS for r in [r for r in rows if kind(r) == k][:_LIMIT.value]]
  config, params, tokenizer = load_pretrained(_MODEL.value, dtype="bfloat16")
  settings = settings_for_model(_MODEL.value)
  said = replies(Sampler(config, tokenizer), params, [question(r) for r in rows], _PLAIN.value,
                 style=settings["prompt_style"], system=settings["system"])
  result = rates([kind(r) for r in rows], said)
  if _OUT.value:
    with open(_OUT.value, "w", encoding="utf-8") as f:
      f.writelines(json.dumps({"question": question(r), "kind": kind(r), "reply": s,
                               "did": behaviour.classify(s)}, ensure_ascii=False) + "\n"
                   for r, s in zip(rows, said))
  print(json.dumps({"model": _MODEL.value, "plain": _PLAIN.value, "n": len(rows),
                    "rates": result}))
  for k in KINDS:
    r = result[k]
    print(f"{k}: answers {r['DA']:.2f}, asks {r['CQ']:.2f}, both {r['AQ']:.2f}, "
          f"neither {r['none']:.2f}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  _MODEL = flags.DEFINE_string("model", None, "exported policy, .gguf file or known model name",
                               required=True)
  _DATA = flags.DEFINE_string("data", None, "GTAlign data directory", required=True)
  _PLAIN = flags.DEFINE_bool("plain", False, "ask plainly (the base model) instead of the game")
  _LIMIT = flags.DEFINE_integer("limit", 0, "questions of each kind (0: all 150)")
  _OUT = flags.DEFINE_string("out", "", "JSONL of every reply")
  app.run(main)
