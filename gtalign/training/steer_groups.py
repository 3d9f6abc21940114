"""Steered groups in RL (`rl.steer_groups`): rollouts whose table the host edited, paid for
following it.

A policy's own rollouts only ever show its response a key its own table picked, and on a
paying sample that key agrees with the question's type, so the response can learn the type
instead of the key (README "The default run": the steering misses of the trained policies).
Each steered group takes one of the step's rollouts that wrote a table, prices that table for
a strategy drawn at random (`evaluation.steering.table_for`, the steering metric's edit), and
continues it `rl.num_samples` times from the edited `</payoff>` (token-exact, as the metric
does). A continuation scores U = L = 1 when its `<analyze>` key and its `<response>` both do
the edited strategy, else U = L = 0 (welfare = follows); its group is relative like any other,
and only the continuation's own tokens train (the edited prefix is part of its prompt; the
bytes the sampler forced to heal the cut are left out).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from gtalign.evaluation import steering
from gtalign.game import payoff
from gtalign.sampling.sampler import SamplingConfig
from gtalign.training import rollout


@dataclasses.dataclass
class SteeredGroups:
  """G rows per steered group: the prompt they continue (prompt ids + the edited prefix's ids),
  the continuation's ids, log-probs and loss mask, and whether each followed the edit."""

  prompts: list[list[int]]
  completions: list[np.ndarray]
  logprobs: list[np.ndarray]
  trained: list[np.ndarray]  # per completion token: 1 trains, 0 a forced (healing) token
  follows: np.ndarray  # float32 per row
  targets: list[str]  # per group, the key its edited table selects in the row read


def pick_sources(texts: Sequence[str], num_samples: int, groups: int) -> list[int]:
  """Rollout indices to edit: the first rollout with a table of each of the first `groups`
  prompts that have one (prompt-major rows: prompt i's samples at i*G .. i*G+G-1)."""
  out = []
  for start in range(0, len(texts), num_samples):
    found = next((i for i in range(start, start + num_samples)
                  if steering.table_cut(texts[i])), None)
    if found is not None:
      out.append(found)
    if len(out) == groups:
      break
  return out


def steer_groups(sampler, params, prompts: Sequence[Sequence[int]], texts: Sequence[str],
                 tokens: Sequence[Sequence[int]], kinds: Sequence[str], groups: int,
                 num_samples: int, sampling: SamplingConfig, seed: int,
                 edit: str = "both") -> SteeredGroups:
  """`groups` steered groups of `num_samples` continuations from this step's rollouts
  (`prompts`, `texts`, `tokens`, prompt-major; `kinds` each row's question type)."""
  rng = np.random.default_rng(seed)
  sources = pick_sources(texts, num_samples, groups)
  ids, prefixes, own, targets = [], [], [], []
  for i in sources:
    strategy = payoff.ACTIONS[int(rng.integers(len(payoff.ACTIONS)))]
    prefix, target, _ = steering.edited(steering.table_cut(texts[i]), kinds[i], strategy, edit)
    targets.append(target)
    for _ in range(num_samples):
      ids.append(list(prompts[i]))
      prefixes.append(prefix)
      own.append(tokens[i])
  if not sources:
    return SteeredGroups([], [], [], [], np.zeros(0, np.float32), [])
  resumes = sampler.plan(prefixes, own)
  out = sampler.continue_from(
      params, ids, prefixes, dataclasses.replace(sampling, num_samples=1),
      sample_offsets=list(range(len(ids))), prefix_tokens=own)
  follows, trained = [], []
  for r, (prefix, text, resume) in enumerate(zip(prefixes, out.texts, resumes)):
    follows.append(float(steering.followed(targets[r // num_samples],
                                           *steering.outcome(prefix, text))))
    mask = np.ones(len(out.tokens[r]), np.float32)
    forced = len(resume.forced.decode("utf-8", errors="replace"))
    mask[:rollout.tokens_spelling(sampler.tokenizer, out.tokens[r], forced) if forced else 0] = 0
    trained.append(mask)
  return SteeredGroups(
      prompts=[list(p) + [int(t) for t in pre] for p, pre in zip(ids, out.prefix_tokens)],
      completions=list(out.tokens), logprobs=list(out.logprobs), trained=trained,
      follows=np.asarray(follows, np.float32), targets=targets)
