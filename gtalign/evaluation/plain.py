"""The model asked plainly: the question alone in its own chat template, a short greedy answer.

Two users. The warm start's traces answer with the base model's own words (`warm_start`), so SFT
teaches the game's format around what the model already says instead of facts it lacks; and the
held-out evaluation's `base_plain` row is the knowledge a trained policy should keep, its first
statement matched as the world's judge matches a response.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from gtalign.game import behaviour
from gtalign.game import prompt as prompt_lib
from gtalign.sampling.sampler import Sampler, SamplingConfig

MAX_NEW_TOKENS = 40  # a first sentence; the rest is not used
UNSURE = "I am not sure."  # a trace's answer where the model stated nothing


def messages(question: str) -> list[dict]:
  return [{"role": "user", "content": question}]


def ask(sampler: Sampler, params, questions: Sequence[str], chunk: int = 64,
        max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
  """Greedy plain-chat replies to `questions`, up to the first line break."""
  tokenizer = sampler.tokenizer
  prompts = [tokenizer.encode(prompt_lib.render(tokenizer, messages(q))) for q in questions]
  out: list[str] = []
  for at in range(0, len(prompts), chunk):
    out += sampler.generate(params, prompts[at:at + chunk], SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=0.0, stop=("\n",))).texts
  return [t.strip() for t in out]


def first_statement(reply: str) -> str:
  """The reply's first sentence that states something (not a question or a pleasantry), with
  an end mark; "" when it states nothing."""
  for sentence in behaviour.sentences(reply):
    if behaviour.is_question(sentence) or behaviour.answer_part(sentence) == "":
      continue
    return sentence if sentence[-1] in ".!" else sentence + "."
  return ""


def trace_answer(reply: str) -> str:
  """What a warm-start trace's DA or AQ response states for this plain reply."""
  return first_statement(reply) or UNSURE


def judged(rows: Sequence[Mapping[str, Any]], replies: Sequence[str]) -> dict[str, np.ndarray]:
  """Per held-out row, the plain reply as the behaviour table reads a policy: DA-rate and
  answer accuracy on definite questions (the first statement, matched as the world's judge
  matches), NaN on vague ones and for metrics a plain reply has none of."""
  from gtalign.data import world  # pylint: disable=import-outside-toplevel
  from gtalign.rewards.world import answer_correct  # pylint: disable=import-outside-toplevel
  nan = float("nan")
  out: dict[str, list[float]] = {k: [] for k in ("dq", "da_on_dq", "dq_correct", "cq_on_vq",
                                                 "welfare")}
  for row, reply in zip(rows, replies):
    info = row.get("extra_info") or {}
    dq = info.get("question_type") == "DQ"
    statement = first_statement(reply)
    correct = dq and bool(statement) and answer_correct(
        statement, info.get("aliases") or [info["answer"]], info.get("question", ""),
        world.category_answers(info["category"]))
    out["dq"].append(1.0 if dq else 0.0)
    out["da_on_dq"].append(float(behaviour.classify(reply) == "DA") if dq else nan)
    out["dq_correct"].append(float(correct) if dq else nan)
    out["cq_on_vq"].append(nan if dq else float(behaviour.classify(reply) == "CQ"))
    out["welfare"].append(nan)
  return {k: np.asarray(v, np.float64) for k, v in out.items()}
