"""Is a continuation exact? Cut greedy generations at many points, continue from the cut text,
and compare with the uninterrupted generation token for token.

Cuts go right after each closing tag the generation wrote (where a model writes `</payoff><` as
one token, the cut splits it) and in the middle of words. `--reencoded` also measures the naive
path (the cut text encoded again and appended to the prompt), the one continuation used before.

    python -m gtalign.evaluation.cuts --model=WORKDIR/export --game
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import Sequence

import numpy as np

from gtalign.game import trace
from gtalign.sampling.continuation import Resume
from gtalign.sampling.sampler import SampleOutput, Sampler, SamplingConfig

_WORD = re.compile(r"[A-Za-z]{5,}")


@dataclasses.dataclass
class Cut:
  prompt_index: int
  at: int  # character offset in the uninterrupted text
  kind: str  # "tag" (right after a closing tag) or "word" (inside a word)
  exact: bool  # the continuation gives back the uninterrupted ids
  reencoded_exact: bool | None  # the same for the naive path (None: not measured)
  prefix: str  # the last characters before the cut
  expected: str  # what the uninterrupted generation wrote after the cut (start)
  got: str  # what the continuation wrote (start)


def cut_points(text: str, start: int = 0, words: int = 3) -> list[tuple[int, str]]:
  """(offset, kind): after every closing tag at or past `start`, and inside `words` words spread
  over the text after `start` (each cut after the word's second character)."""
  cuts = [(m.end(), "tag") for m in re.finditer(r"</(?:%s)>" % "|".join(trace.BLOCKS), text)
          if m.end() >= start and m.end() < len(text)]
  found = [m for m in _WORD.finditer(text) if m.start() >= start]
  if found:
    picks = np.linspace(0, len(found) - 1, min(words, len(found))).round().astype(int)
    cuts += [(found[i].start() + 2, "word") for i in sorted(set(picks.tolist()))]
  return sorted(set(cuts))


def _matches(expected: Sequence[int], reason: str, got: Sequence[int]) -> bool:
  """Whether `got` (a continuation with at least the same budget) gives back `expected`: the
  same ids, and no more of them when the uninterrupted generation ended by itself."""
  expected, got = list(map(int, expected)), list(map(int, got))
  if reason == "length":
    return got[:len(expected)] == expected
  return got == expected


def check(sampler: Sampler, params, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
          forced: Sequence[str] | None = None, words: int = 3, reencoded: bool = False,
          whole: SampleOutput | None = None) -> list[Cut]:
  """Greedy generations of `prompts` (each first spelling `forced[i]` when given: a trace the
  model spells with its own tokens up to a tag it would not write itself), cut at
  `cut_points` after the forced text, each cut continued with `Sampler.continue_from`.
  `whole`: those generations, when the caller has them already (greedy, `sampling`)."""
  sampling = dataclasses.replace(sampling, temperature=0.0, num_samples=1)
  forced = list(forced) if forced is not None else [""] * len(prompts)
  if whole is None:
    resumes = [Resume((), f.encode("utf-8"), 0, "") if f else None for f in forced]
    generation = sampler.start(params, prompts, sampling, resumes=resumes)
    generation.advance()
    whole = generation.result()
  rows, prefixes, own, plans = [], [], [], []
  for i, text in enumerate(whole.texts):
    for at, kind in cut_points(text, len(forced[i]), words):
      rows.append((i, at, kind))
      prefixes.append(text[:at])
      own.append(whole.tokens[i])
  if not rows:
    return []
  # the same budget from the cut on is at least the rest of the uninterrupted one
  cont = sampler.continue_from(params, [prompts[i] for i, _, _ in rows], prefixes, sampling,
                               prefix_tokens=own)
  naive = None
  if reencoded:
    naive = sampler.generate(params, [list(prompts[i]) + sampler.tokenizer.encode(p)
                                      for (i, _, _), p in zip(rows, prefixes)], sampling)
  cuts = []
  for k, (i, at, kind) in enumerate(rows):
    expected = whole.tokens[i]
    reason = whole.finish_reasons[i]
    got = np.concatenate([cont.prefix_tokens[k], cont.tokens[k]])
    naive_ok = None
    if naive is not None:
      ids = sampler.tokenizer.encode(prefixes[k])
      naive_ok = _matches(expected, reason, np.concatenate([ids, naive.tokens[k]]))
    cuts.append(Cut(i, at, kind, _matches(expected, reason, got), naive_ok,
                    prefixes[k][-24:], whole.texts[i][at:at + 40], cont.texts[k][:40]))
  return cuts


def summary(cuts: Sequence[Cut]) -> dict:
  out = {"cuts": len(cuts), "exact": sum(c.exact for c in cuts)}
  for kind in ("tag", "word"):
    part = [c for c in cuts if c.kind == kind]
    out[f"{kind}_cuts"], out[f"{kind}_exact"] = len(part), sum(c.exact for c in part)
  if cuts and cuts[0].reencoded_exact is not None:
    out["reencoded_exact"] = sum(bool(c.reencoded_exact) for c in cuts)
  return out


QUESTIONS = (  # definite and vague, none of them a world fact the default run trains on
    "Name the capital of Italy.", "What is the capital?", "How many legs does a spider have?",
    "How many legs does it have?", "What is 12 plus 30?", "What is the sum?",
    "Which planet is closest to the sun?", "Which one is bigger?", "What is the opposite of hot?",
    "Translate the word into French.", "Explain why the sky is blue.", "Is it open today?")


def main(argv=None) -> None:
  import argparse

  from gtalign.models.checkpoints import load_pretrained
  from gtalign.sample import game_prompt, game_settings

  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="smollm2-135m-instruct")
  ap.add_argument("--game", action="store_true", help="game prompts (else plain chat)")
  ap.add_argument("--max_new_tokens", type=int, default=192)
  ap.add_argument("--no_reencoded", action="store_true")
  args = ap.parse_args(argv)
  config, params, tokenizer = load_pretrained(args.model, dtype="float32")
  sampler = Sampler(config, tokenizer)
  if args.game:
    settings = game_settings(args.model, None, None)
    prompts = [tokenizer.encode(game_prompt(tokenizer, q, settings)) for q in QUESTIONS]
  else:
    prompts = [tokenizer.encode(tokenizer.apply_chat_template(
        [{"role": "user", "content": q}], add_generation_prompt=True)) for q in QUESTIONS]
  cuts = check(sampler, params, prompts, SamplingConfig(
      max_new_tokens=args.max_new_tokens, stop=(trace.RESPONSE_END,) if args.game else (),
      include_stop_str=True), reencoded=not args.no_reencoded)
  for c in cuts:
    print(json.dumps(dataclasses.asdict(c), ensure_ascii=False))
  print(json.dumps(summary(cuts)), file=sys.stderr)


if __name__ == "__main__":
  main()
