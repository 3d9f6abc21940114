"""Scan rows in RL (`rl.scan_rows`): the step's own rollouts, their tables edited as a provider
would, taught the scan of the edited table by teacher forcing.

Why: the held-out steering misses of the default run are scans that do not copy the edited
table (README "The default run", stop 40): the policy's own tables peak where RL taught them
to, so a scan that writes the peak from habit earns as much in RL as one that reads it, and
after an edit it writes the cells the policy would have written ("DQ_DA":{"LLM":1,"user":2}
where the edit says {"LLM":4,"user":3}). The scan of a table is a function of the table
(`warm_start.analysis`, what the warm start taught), so a row needs no sampling and no reward:
the rollout's own ids through the reading, the edited table (`evaluation.steering.edited`, the
metric's edit) and the scan written out; only the scan's ids train, by their log-likelihood,
in an update of their own after the step's policy updates. The table and the response stay
RL's: what the policy prices and what it does are still learned from welfare.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from gtalign.data import warm_start
from gtalign.evaluation import steering
from gtalign.game import payoff, trace
from gtalign.training import rollout


@dataclasses.dataclass
class ScanRows:
  """One row per taught scan: the source rollout's index, the completion ids (the rollout's own
  reading, the edited table and its scan, through the id that closes it), the loss mask (1 on
  the scan) and the row's key."""

  sources: list[int]
  completions: list[np.ndarray]
  trained: list[np.ndarray]
  keys: list[str]


def scan_text(row: str, table: payoff.Bimatrix, scan: str = "copy",
              one_decimal: bool = False) -> str:
  """The `<analyze>` block a table gets, scanned along `row` (DQ or VQ) as the warm start
  scans (`scan`: warm_start.SCANS, the run's sft.scan; `one_decimal`: the table's spelling)."""
  return (f"<analyze>{warm_start.analysis(row, table.points(), scan, one_decimal)}"
          f"{trace.ANALYZE_END}")


def scan_rows(tokenizer, texts: Sequence[str], tokens: Sequence[Sequence[int]],
              kinds: Sequence[str], count: int, seed: int, edit: str = "both",
              scan: str = "copy") -> ScanRows:
  """`count` rows from this step's rollouts (`texts`, their ids `tokens`, `kinds` each one's
  question type): rollouts that wrote a table, drawn without replacement while there are
  enough (then again), each edited to select a strategy drawn at random; `edit` one of
  `steering.EDITS`; `scan` the warm start's form of the scan (warm_start.SCANS). No rollout
  with a table: `count` rows of the first rollout with nothing trained, so every step's batch
  has the same shape."""
  rng = np.random.default_rng(seed)
  cuts = {i: _cut_ids(tokenizer, tokens[i]) for i, t in enumerate(texts)
          if steering.table_cut(t)}  # each rollout's ids through <payoff>, found once
  candidates = [i for i, n in cuts.items() if n is not None]
  picks: list[int] = []
  while candidates and len(picks) < count:
    picks += list(rng.permutation(candidates)[:count - len(picks)])
  out = ScanRows([], [], [], [])
  for i in picks:
    strategy = payoff.ACTIONS[int(rng.integers(len(payoff.ACTIONS)))]
    prefix, key, table = steering.edited(steering.table_cut(texts[i]), kinds[i], strategy,
                                         edit=edit)
    head = list(tokens[i][:cuts[i]])
    head_text = tokenizer.decode(head)
    if not prefix.startswith(head_text):  # the rollout's text is not its ids' (never seen)
      continue
    table_text = prefix[len(head_text):]  # the edited table through </payoff>
    scanned = scan_text(key[:2], table, scan, payoff.spelled_one_decimal(table_text))
    # the response's tag after the scan, so the ids are the ones a whole trace has where the
    # two meet ("><" spells the end of one tag and the start of the next): a lone ">" closing
    # the scan, trained, is an id the policy never wrote there, and after it it wrote EOS
    tail = list(tokenizer.encode(table_text + scanned + trace.RESPONSE_START))
    tail = tail[:rollout.tokens_spelling(tokenizer, tail, len(table_text) + len(scanned))]
    mask = np.zeros(len(head) + len(tail), np.float32)
    # from the id that spells the scan's first character (one may close the table too)
    mask[len(head) + rollout.tokens_spelling(tokenizer, tail, len(table_text) + 1) - 1:] = 1.0
    out.sources.append(int(i))
    out.completions.append(np.asarray(head + tail, np.int32))
    out.trained.append(mask)
    out.keys.append(key)
  while len(out.sources) < count:  # nothing to teach this step: rows that train nothing
    out.sources.append(0)
    out.completions.append(np.asarray(list(tokens[0]) or [0], np.int32))
    out.trained.append(np.zeros(len(out.completions[-1]), np.float32))
    out.keys.append("")
  return out


def _cut_ids(tokenizer, ids: Sequence[int]) -> int | None:
  """How many of a rollout's ids spell it through `<payoff>` (the reading and the tag), when
  their text up to there is exactly the text the edit keeps; else None."""
  n = rollout.tokens_through(tokenizer, list(ids), trace.PAYOFF_START)
  if not n:
    return None
  text = tokenizer.decode(list(ids[:n]))
  return n if text.endswith(trace.PAYOFF_START) else None
