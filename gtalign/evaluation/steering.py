"""Does the table decide? Price the policy's own table so that each strategy is the best cell
of both rows in turn, continue greedily, and count the continuations whose `<analyze>` key and
`<response>` carry that strategy out.

A policy that reads its table follows every edit (1.0); one that ignores it does the same thing
whatever the table says and follows one edit in three (about 1/3); one that writes no table
cannot be steered (0). The prefix up to `</payoff>` is the policy's own greedy trace and is
continued from its own token ids (`Sampler.continue_from`), so only the table differs from what
the policy wrote.

An edit prices a strategy in both rows, as a provider's pricing change would: whichever type
the policy's `<thinking>` read, its row now selects the strategy. Reading the type is measured
on its own (`evaluation.reading`); editing only the row of the question's true type would count
every misread question as a table ignored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from gtalign.evaluation import reading
from gtalign.game import behaviour, payoff, trace, turn
from gtalign.sampling.sampler import Sampler, SamplingConfig

ROWS = ("DQ", "VQ")
# stands in when the policy's own table does not parse: every cell alike, so only the edit
# decides the pick
NEUTRAL = payoff.Bimatrix(llm=(1.0,) * 6, user=(1.0,) * 6)
# which rows an edit prices (`eval.steering_edit`): "both", as a provider's pricing change
# would; "read", only the row the policy's <thinking> read (the other row as it wrote it), to
# tell a scan thrown by a changed row it never reads from one that ignores its table
EDITS = ("both", "read")
MARGIN = 0.5  # the strategy's welfare (LLM + user) beats every other cell of its row by this
STEP = 0.5  # a raised cell moves in halves, the grid of the tables the warm start writes


def table_for(own: payoff.Bimatrix | None, strategy: str,
              rows: Sequence[str] = ROWS) -> payoff.Bimatrix:
  """The policy's table edited so that `strategy` is the pick of each of `rows` (DQ and VQ by
  default): a row's best cell swapped onto the strategy, then, if another cell of the row still
  comes close, the strategy's cell raised for both players, in steps of STEP, until it leads by
  MARGIN. Other cells keep the policy's numbers."""
  if strategy not in payoff.ACTIONS:
    raise ValueError(f"strategy {strategy!r}; expected one of {payoff.ACTIONS}")
  pts = (own or NEUTRAL).points()
  pts = {k: (v if np.isfinite(v).all() else (0.0, 0.0)) for k, v in pts.items()}
  for row in rows:
    keys = [f"{row}_{a}" for a in payoff.ACTIONS]
    target = f"{row}_{strategy}"
    best = max(keys, key=lambda k: sum(pts[k]))
    pts[target], pts[best] = pts[best], pts[target]
    lead = max(sum(pts[k]) for k in keys if k != target)
    lift = max(0.0, (lead + MARGIN - sum(pts[target])) / 2)
    lift = math.ceil(lift / STEP - 1e-9) * STEP
    pts[target] = (pts[target][0] + lift, pts[target][1] + lift)
  edited = payoff.Bimatrix.from_dict({k: {"LLM": round(l, 1), "user": round(u, 1)}
                                      for k, (l, u) in pts.items()})
  assert all(row_pick(edited, row) == f"{row}_{strategy}" for row in rows), (edited, strategy)
  return edited


row_pick = payoff.select_in_row  # the key of a row with the largest LLM + user


def with_table(text: str, table: payoff.Bimatrix) -> str:
  """`text` (a trace through `</payoff>`) with its table replaced by `table`, whatever the
  model wrote inside the block; the cells in the order the model wrote them (when its block
  is JSON with the six keys) and its numbers spelled as the model spelled them ("4" or "4.0"),
  as a provider edits numbers in place."""
  start = text.index("<payoff>") + len("<payoff>")
  end = text.index(trace.PAYOFF_END, start)
  block = text[start:end]
  return (text[:start] + table.to_json(trace.payoff_order(block),
                                       payoff.spelled_one_decimal(block)) + text[end:])


def table_cut(text: str) -> str | None:
  """The trace through `</payoff>` when it wrote a `<payoff>` block (None otherwise)."""
  end = text.find(trace.PAYOFF_END)
  if end < 0 or "<payoff>" not in text[:end]:
    return None
  return text[:end + len(trace.PAYOFF_END)]


def edited(cut: str, row: str, strategy: str, edit: str = "both"
           ) -> tuple[str, str, payoff.Bimatrix]:
  """(the cut with its table priced for `strategy`, the key that table selects in the row the
  policy read, the table): `row` (DQ or VQ) stands in when the `<thinking>` names no type;
  `edit` one of EDITS."""
  if edit not in EDITS:
    raise ValueError(f"steering edit {edit!r}; expected one of {EDITS}")
  start = cut.index("<payoff>") + len("<payoff>")
  written, _ = trace.parse_payoff(cut[start:cut.index(trace.PAYOFF_END, start)],
                                  mode="lenient")
  own = payoff.Bimatrix.from_dict(written) if written else None
  row = reading.read_type(reading.thinking(cut)) or row  # the row the policy will scan
  table = table_for(own, strategy, ROWS if edit == "both" else (row,))
  return with_table(cut, table), f"{row}_{strategy}", table


def outcome(prefix: str, continuation: str) -> tuple[str | None, str | None]:
  """(the key the continuation's `<analyze>` names, what its `<response>` does)."""
  whole = prefix + continuation
  response = turn.response_text(whole)
  return (trace.parse_trace(whole).chosen_key,
          behaviour.classify(response) if response is not None else None)


def followed(target: str, key: str | None, action: str | None) -> bool:
  """Whether a continuation's key and response both carry out the edit's `target`."""
  return key == target and action == payoff.action(target)


@dataclasses.dataclass
class Steered:
  """One edited table and what the policy then did."""

  prompt: int  # index into the prompts given to `steer`
  target: str  # the key the edited table selects in the row the policy read
  table: dict  # the edited table
  chosen_key: str | None  # the key the continuation's <analyze> names
  action: str | None  # what its <response> does (behaviour.classify)
  text: str  # the continuation after </payoff>

  @property
  def key_follows(self) -> bool:
    return self.chosen_key == self.target

  @property
  def action_follows(self) -> bool:
    return self.action == payoff.action(self.target)

  @property
  def follows(self) -> bool:
    return followed(self.target, self.chosen_key, self.action)


def steer(sampler: Sampler, params, prompts: Sequence[Sequence[int]], texts: Sequence[str],
          tokens: Sequence[Sequence[int]], rows: Sequence[str], max_new_tokens: int = 192,
          prompt_indices: Sequence[int] | None = None, edit: str = "both") -> list[Steered]:
  """Three edits per prompt whose greedy trace (`texts`, `tokens`) reached `</payoff>`; `rows`
  are the questions' types (DQ or VQ), the row a target key names when the policy's
  `<thinking>` names no type; `edit` one of EDITS. Prompts without a table get no entry."""
  if edit not in EDITS:
    raise ValueError(f"steering edit {edit!r}; expected one of {EDITS}")
  cases, prefixes, own_ids, ids = [], [], [], []
  for i, (text, row) in enumerate(zip(texts, rows)):
    cut = table_cut(text)
    if cut is None:
      continue
    for strategy in payoff.ACTIONS:
      prefix, target, table = edited(cut, row, strategy, edit)
      cases.append((i, target, table))
      prefixes.append(prefix)
      own_ids.append(tokens[i])
      ids.append(prompts[i])
  if not cases:
    return []
  index = [prompt_indices[i] if prompt_indices is not None else i for i, _, _ in cases]
  out = sampler.continue_from(params, ids, prefixes, SamplingConfig(
      max_new_tokens=max_new_tokens, temperature=0.0, stop=(trace.RESPONSE_END,),
      include_stop_str=True), prompt_indices=index, prefix_tokens=own_ids)
  return [Steered(i, target, table.to_dict(), *outcome(prefix, text), text)
          for (i, target, table), prefix, text in zip(cases, prefixes, out.texts)]


def arrays(steered: Sequence[Steered], num_prompts: int) -> dict[str, np.ndarray]:
  """Per prompt: `steering` (share of its three edits followed in key and response; 0 without a
  table), `steer_key` and `steer_action` (the key alone, the response alone)."""
  out = {k: np.zeros(num_prompts, np.float64) for k in ("steering", "steer_key", "steer_action")}
  for s in steered:
    out["steering"][s.prompt] += s.follows / len(payoff.ACTIONS)
    out["steer_key"][s.prompt] += s.key_follows / len(payoff.ACTIONS)
    out["steer_action"][s.prompt] += s.action_follows / len(payoff.ACTIONS)
  return out


def score(steered: Sequence[Steered], num_prompts: int) -> float:
  """The steering metric: the share of all 3 x num_prompts edits that were followed."""
  return float(arrays(steered, num_prompts)["steering"].mean()) if num_prompts else float("nan")
