"""Priced groups in RL (`rl.priced_groups`): one rollout's reading, continued under tables that
price each strategy in turn, paid the world's welfare, the table's tokens trained.

RL can only rank the tables its policy samples: a warm start whose definite rows rarely peak on
DA gives a group of 8 samples no direct answer to prefer (README "The default run": seed 2's
rollouts held 2, 0, 3, 0, 0, 0 DA samples of 16 over its six steps, and DA on DQ stayed 0.00).
A priced group takes one of the step's rollouts that wrote a table, keeps its `<thinking>` (the
reading), and writes its table anew for each row of the group: the row it read priced for
DA, CQ and AQ in turn (`evaluation.steering.edited`; with edit "read" the other row stays as
the policy wrote it, with "both" it is priced for the same strategy, as a provider's edit and
the steering metric price it, so RL sees the other rows a provider writes), continued once each from `</payoff>` (token-exact, as the steering metric does).
Each row is scored by the run's own reward, so the group's relative advantages say which
priced table paid on this question; the table's cells in the row read and the continuation
train, the reading and the other row do not, nor the bytes the sampler forced to heal the cut.
What trains is `rl.priced_train` (TRAINS): "all", the table's cells in the row read and the
continuation; "table", only those cells: a continuation that followed a table priced for the
move that does not pay is right to follow it, and its negative advantage taught the scan to
stop copying the table (lever n0 in the README); "numbers", only the numbers of those cells,
the tokens in which a group's rows differ: every row of a group writes the same keys, braces
and tags, and the rows priced for the move that does not pay pushed those down in their own
contexts until the table lost its shape (lever pr0).
The table's ids were written by the host, not sampled: their log-probs under the policy are
computed before the update (`needs_logp_b`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from gtalign.evaluation import steering
from gtalign.game import payoff, trace
from gtalign.training import rollout, steer_groups


TRAINS = ("all", "table", "numbers")  # what a priced row trains (`rl.priced_train`)
# the question types whose rollouts a step prices (`rl.priced_types`): both in turn, or one
TYPES = ("both", "DQ", "VQ")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# new tokens a continuation from </payoff> may take: a warm-start-shaped <analyze> and
# <response> are about 120 (the steering metric's budget)
CONTINUATION_TOKENS = 192


@dataclasses.dataclass
class PricedGroups:
  """G rows per priced group: the source rollout's prompt index, the completion (the source's
  reading and the priced table as fed, then the continuation), its text, the loss mask (1:
  trains), and the key each row's table selects in the row its reading read."""

  sources: list[int]  # per row, the index of the rollout it continues
  completions: list[np.ndarray]
  texts: list[str]
  trained: list[np.ndarray]
  keys: list[str]


def pick_sources(texts: Sequence[str], kinds: Sequence[str], num_samples: int,
                 groups: int, types: str = "both") -> list[int]:
  """Rollout indices to price: the first rollout with a table of a prompt of each question type
  in turn (DQ, VQ, DQ, ...; `types` DQ or VQ: of that type only), `groups` of them at most,
  each prompt once (prompt-major rows)."""
  if types not in TYPES:
    raise ValueError(f"priced types {types!r}; expected one of {TYPES}")
  rows = steering.ROWS if types == "both" else (types,)
  firsts = {}
  for found in steer_groups.pick_sources(texts, num_samples, len(texts)):
    firsts.setdefault(kinds[found], []).append(found)
  out = []
  while len(out) < groups and any(firsts.get(kind) for kind in rows):
    for kind in rows:
      if firsts.get(kind) and len(out) < groups:
        out.append(firsts[kind].pop(0))
  return out


def strategies(num_samples: int, rng: np.random.Generator) -> list[str]:
  """A group's strategies: DA, CQ and AQ in turn from a random one, so each is priced
  num_samples / 3 times (one more for the first num_samples % 3)."""
  first = int(rng.integers(len(payoff.ACTIONS)))
  return [payoff.ACTIONS[(first + i) % len(payoff.ACTIONS)] for i in range(num_samples)]


def priced_groups(sampler, params, prompts: Sequence[Sequence[int]], texts: Sequence[str],
                  tokens: Sequence[Sequence[int]], kinds: Sequence[str], groups: int,
                  num_samples: int, sampling, seed: int, edit: str = "read",
                  train: str = "all", types: str = "both") -> PricedGroups:
  """`groups` priced groups of `num_samples` rows from this step's rollouts (`prompts`,
  `texts`, `tokens`, prompt-major; `kinds` each row's question type); `edit` one of
  `steering.EDITS` (`rl.priced_edit`); `train` one of TRAINS (`rl.priced_train`); `types` one
  of TYPES (`rl.priced_types`)."""
  if train not in TRAINS:
    raise ValueError(f"priced rows train {train!r}; expected one of {TRAINS}")
  rng = np.random.default_rng(seed)
  sources, ids, prefixes, own, priced = [], [], [], [], []
  for i in pick_sources(texts, kinds, num_samples, groups, types):
    for strategy in strategies(num_samples, rng):
      prefix, key, _ = steering.edited(steering.table_cut(texts[i]), kinds[i], strategy,
                                     edit=edit)
      sources.append(i)
      ids.append(list(prompts[i]))
      prefixes.append(prefix)
      own.append(tokens[i])
      priced.append(key)
  if not sources:
    return PricedGroups([], [], [], [], [])
  resumes = sampler.plan(prefixes, own)
  out = sampler.continue_from(params, ids, prefixes,
                              dataclasses.replace(sampling, num_samples=1),
                              sample_offsets=list(range(len(ids))), prefix_tokens=own)
  tokenizer = sampler.tokenizer
  completions, trained, whole = [], [], []
  for r, (prefix, resume) in enumerate(zip(prefixes, resumes)):
    fed = [int(t) for t in out.prefix_tokens[r]]
    completion = np.asarray(fed + [int(t) for t in out.tokens[r]], np.int32)
    mask = np.zeros(len(completion), np.float32)
    # from the table's first id (after "<payoff>") to the end, but not the healing bytes
    mask[rollout.tokens_through(tokenizer, fed, trace.PAYOFF_START):] = 1.0
    if train != "all":  # the scan and response only follow a table the host wrote
      mask[len(fed):] = 0.0
    if train == "numbers":
      mask *= row_numbers(tokenizer, completion, priced[r][:2])
    forced = len(resume.forced.decode("utf-8", errors="replace"))
    if forced:
      mask[len(fed):len(fed) + rollout.tokens_spelling(tokenizer, out.tokens[r], forced)] = 0.0
    completions.append(completion)
    trained.append(mask)
    whole.append(prefix + out.texts[r])
  return PricedGroups(sources=sources, completions=completions, texts=whole, trained=trained,
                      keys=priced)


def row_numbers(tokenizer, ids: Sequence[int], row: str) -> np.ndarray:
  """1 on the ids that spell a number inside a cell of `row` (DQ or VQ) of the payoff block
  `ids` write, 0 elsewhere."""
  out = np.zeros(len(ids), np.float32)
  text = tokenizer.decode(list(ids))
  start = text.find(trace.PAYOFF_START)
  end = text.find(trace.PAYOFF_END, start)
  if start < 0 or end < 0:
    return out
  for name in (k for k in trace.PAYOFF_KEYS if k.startswith(f"{row}_")):
    cell = re.compile(rollout.CELL_PATTERN % name).search(text, start, end)
    if not cell:
      continue
    body = cell.group(0)
    for number in _NUMBER.finditer(body, body.index("{")):
      first = rollout.tokens_spelling(tokenizer, ids, cell.start() + number.start() + 1) - 1
      last = rollout.tokens_spelling(tokenizer, ids, cell.start() + number.end())
      out[first:last] = 1.0
  return out
