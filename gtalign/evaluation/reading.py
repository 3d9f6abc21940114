"""Does the policy read the question? The type its `<thinking>` names, against the truth.

Measured on the held-out world rows (`heldout`) and on QUESTIONS below: definite and vague
questions written for this check in phrasings and with entities that no training row uses, each
vague one the definite one above it with the detail taken out. A policy that learned "have I
seen this entity" instead of "is the missing detail given" reads the held-out rows well and
these badly.

`python -m gtalign.evaluation.reading --model=DIR` prints each question's reading.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from gtalign.game import prompt as prompt_lib
from gtalign.sampling.sampler import Sampler, SamplingConfig

THINKING_END = "</thinking>"
MAX_NEW_TOKENS = 48  # a warm-start <thinking> is about 20 tokens

_DEFINITE = (
    "Do you know the capital of Senegal?",
    "Please tell me what 12 plus 7 is.",
    "If I have 9 apples and eat 4, how many are left?",
    "What's 6 added to 5?",
    "Which colour is a ripe banana usually?",
    "What colour are the leaves of an oak tree in summer?",
    "What's the antonym of ancient?",
    "Which day follows Friday in the week?",
    "After October, which month comes?",
    "What sound does a camel make?",
    "How many legs does a centipede have?",
    "What is the capital city of Nicaragua?",
    "What language is spoken in Qatar?",
    "Who wrote The Great Gatsby?",
    "What is the plural of the word cherry?",
    "On what continent is Peru located?",
    "Hey, what's 15 minus 8?",
    "How many legs does an octopus have?",
    "What is the opposite of the word generous?",
    "Tell me which month comes right after February.",
)
_VAGUE = (
    "Do you know its capital?",
    "Please tell me what those two add up to.",
    "If I have some apples and eat a few, how many are left?",
    "What's that one added to the other?",
    "Which colour is it usually?",
    "What colour are they in summer?",
    "What's the antonym of it?",
    "Which day follows that one in the week?",
    "After that month, which month comes?",
    "What kind of sound does that animal make?",
    "How many legs does the creature have?",
    "What is the capital city of the country I mentioned?",
    "What language is spoken over there?",
    "Who wrote the book?",
    "And what would the plural of that one be?",
    "On what continent is it located?",
    "Hey, what's the difference between them?",
    "How many legs has that thing got?",
    "What is the opposite of the word I just said?",
    "Tell me which month comes right after it.",
)
QUESTIONS: tuple[tuple[str, str], ...] = (tuple((q, "DQ") for q in _DEFINITE)
                                          + tuple((q, "VQ") for q in _VAGUE))
_TYPE = re.compile(r"(?<![A-Za-z])(DQ|VQ)(?![A-Za-z])")


def read_type(text: str | None) -> str | None:
  """The type a `<thinking>` names last ("DQ" or "VQ"), None when it names neither."""
  found = _TYPE.findall(text or "")
  return found[-1] if found else None


def thinking(completion: str) -> str:
  """The `<thinking>` block of a completion (what precedes `</thinking>` when it never opens)."""
  start = completion.find("<thinking>")
  start = 0 if start < 0 else start + len("<thinking>")
  end = completion.find(THINKING_END, start)
  return completion[start:end if end >= 0 else len(completion)]


def read(sampler: Sampler, params, questions: Sequence[str], style: str = "compact",
         system: str | None = None) -> list[str]:
  """Each question's greedy `<thinking>` under the game prompt (generation stops after it)."""
  tokenizer = sampler.tokenizer
  prompts = [tokenizer.encode(prompt_lib.render(
      tokenizer, prompt_lib.build_messages(q, system, style=style))) for q in questions]
  out = sampler.generate(params, prompts, SamplingConfig(
      max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, stop=(THINKING_END,)))
  return [thinking(t) for t in out.texts]


def arrays(truth: Sequence[str], thoughts: Sequence[str], prefix: str = "read"
           ) -> dict[str, np.ndarray]:
  """`{prefix}_dq`: 1 where a definite question is read as DQ (NaN on vague ones), and
  `{prefix}_vq` likewise: the reading accuracy per type."""
  got = [read_type(t) for t in thoughts]
  nan = float("nan")
  return {f"{prefix}_{kind.lower()}": np.asarray(
      [float(g == kind) if t == kind else nan for t, g in zip(truth, got)], np.float64)
          for kind in ("DQ", "VQ")}


def main(argv: Sequence[str]) -> None:
  from gtalign.models.checkpoints import load_pretrained  # pylint: disable=import-outside-toplevel
  del argv
  config, params, tokenizer = load_pretrained(_MODEL.value, dtype="bfloat16")
  if tokenizer is None:
    raise SystemExit(f"{_MODEL.value}: no tokenizer files")
  sampler = Sampler(config, tokenizer)
  questions = [q for q, _ in QUESTIONS]
  thoughts = read(sampler, params, questions, style=_STYLE.value)
  for (q, truth), t in zip(QUESTIONS, thoughts):
    print(f"{truth} read {read_type(t) or '-'}: {q} -> {t.strip()}")
  for kind, v in arrays([t for _, t in QUESTIONS], thoughts).items():
    print(f"{kind}: {np.nanmean(v):.2f} of {int(np.isfinite(v).sum())}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  _MODEL = flags.DEFINE_string("model", None, "exported policy directory, .gguf file or known "
                               "model name", required=True)
  _STYLE = flags.DEFINE_enum("style", "compact", list(prompt_lib.STYLES), "game prompt style")
  app.run(main)
