"""The steering metric (`gtalign.evaluation.steering`) against scripted policies: one that does
what its table selects scores 1.0 (whichever type it read), one that ignores its table about 1/3,
one without a table 0."""

import json
import random
import types

import numpy as np
import pytest

from gtalign.evaluation import steering
from gtalign.game import payoff, trace

RESPONSES = {"DA": "Rome.", "CQ": "Which country do you mean?",
             "AQ": "Rome. Did you mean Italy?"}
TABLE = ('{"DQ_AQ":{"LLM":1,"user":2},"DQ_CQ":{"LLM":4,"user":3},"DQ_DA":{"LLM":1,"user":2},'
         '"VQ_AQ":{"LLM":1,"user":2},"VQ_CQ":{"LLM":1,"user":2},"VQ_DA":{"LLM":4,"user":3}}')


class Scripted:
  """Stands in for a Sampler: continues each prefix (a trace through </payoff>) by a rule of
  (the table, the row its <thinking> read)."""

  def __init__(self, rule):
    self.rule, self.calls = rule, []

  def continue_from(self, params, prompts, prefixes, sampling, prompt_indices=None,
                    prefix_tokens=None):
    self.calls.append((prefixes, prefix_tokens))
    texts = []
    for prefix in prefixes:
      table = payoff.Bimatrix.from_dict(
          trace.parse_payoff(trace.extract_block(prefix, "payoff"))[0])
      row = "VQ" if "(VQ)" in prefix else "DQ"
      key = self.rule(table, row)
      texts.append(f"<analyze>Best LLM + user: {key}</analyze>"
                   f"<response>{RESPONSES[payoff.action(key)]}</response>")
    return types.SimpleNamespace(texts=texts)


def _traces(n, misread=False):
  rows = ["DQ" if i % 2 == 0 else "VQ" for i in range(n)]
  read = [("VQ" if r == "DQ" else "DQ") if misread else r for r in rows]
  texts = [f"<thinking>Type ({t}).</thinking><payoff>{TABLE}</payoff><analyze>x</analyze>"
           for t in read]
  return rows, texts, [list(range(40))] * n


OWN = payoff.Bimatrix.from_dict(json.loads(TABLE))
FOLLOWS = lambda table, row: steering.row_pick(table, row)  # the best cell of the row it read


@pytest.mark.parametrize("rule, expected", [
    (FOLLOWS, 1.0),
    (lambda table, row: f"{row}_CQ", 1 / 3),  # reads the row, always asks: 1 edit in 3
    (lambda table, row: "VQ_CQ", 1 / 6),  # one key whatever the table: right on VQ asks only
    (lambda table, row: steering.row_pick(OWN, row), 1 / 3),  # its own table's pick, unedited
])
def test_scripted_policies(rule, expected):
  rows, texts, tokens = _traces(10)
  sampler = Scripted(rule)
  steered = steering.steer(sampler, None, [[1]] * 10, texts, tokens, rows)
  assert len(steered) == 30
  assert steering.score(steered, 10) == pytest.approx(expected)
  (prefixes, prefix_tokens), = sampler.calls
  assert all(p.endswith(trace.PAYOFF_END) for p in prefixes)  # cut right after the table
  assert [list(t) for t in prefix_tokens] == [tokens[0]] * 30  # the policy's own ids go along


def test_a_policy_that_misreads_but_follows_its_table_is_steered():
  """Every edit prices the strategy in both rows: reading is scored elsewhere (reading.py)."""
  rows, texts, tokens = _traces(10, misread=True)
  steered = steering.steer(Scripted(FOLLOWS), None, [[1]] * 10, texts, tokens, rows)
  assert steering.score(steered, 10) == 1.0
  assert all(s.target[:2] != rows[s.prompt] for s in steered)  # the row it read


def test_a_trace_without_a_table_cannot_be_steered():
  rows, texts, tokens = _traces(4)
  texts[1] = "<thinking>t</thinking><response>Rome.</response>"
  steered = steering.steer(Scripted(FOLLOWS), None, [[1]] * 4, texts, tokens, rows)
  got = steering.arrays(steered, 4)["steering"]
  np.testing.assert_allclose(got, [1.0, 0.0, 1.0, 1.0])


def test_the_edited_table_picks_each_strategy_in_both_rows_and_keeps_the_other_cells():
  rng = random.Random(0)
  for _ in range(300):
    own = payoff.Bimatrix(llm=tuple(rng.choice([-1.0, 0.0, 1.0, 2.5, 4.0]) for _ in range(6)),
                          user=tuple(rng.choice([-2.0, 1.0, 2.0, 3.5]) for _ in range(6)))
    strategy = rng.choice(payoff.ACTIONS)
    edited = steering.table_for(own, strategy)
    assert payoff.action(payoff.select(edited)) == strategy
    for row in steering.ROWS:
      target = f"{row}_{strategy}"
      assert steering.row_pick(edited, row) == target
      others = [k for k in trace.PAYOFF_KEYS if k.startswith(row) and k != target]
      assert all(sum(edited[target]) >= sum(edited[k]) + steering.MARGIN for k in others)
      moved = {k for k in others if edited[k] != own[k]}
      assert len(moved) <= 1  # at most the cell swapped with it
      lift = {edited[target][0] - v[0] for v in (own[k] for k in (target, *others))}
      assert any(abs(x * 2 - round(x * 2)) < 1e-9 for x in lift)  # raised in halves
  assert steering.row_pick(steering.table_for(None, "DA"), "VQ") == "VQ_DA"


def test_an_edit_keeps_the_order_the_policy_wrote_its_table_in():
  """A table written with its pick first (sft.chosen_first) is edited in place: the same keys
  in the same order, the numbers priced, so the first key is no longer the pick and a policy
  that reads "first key" instead of the numbers fails the edit."""
  first = ('{"VQ_DA":{"LLM":4,"user":3},"DQ_AQ":{"LLM":1,"user":2},"DQ_CQ":{"LLM":1,"user":2},'
           '"DQ_DA":{"LLM":1,"user":2},"VQ_AQ":{"LLM":1,"user":2},"VQ_CQ":{"LLM":1,"user":2}}')
  cut = f"<thinking>Type (VQ).</thinking><payoff>{first}</payoff>"
  edited = steering.table_for(payoff.Bimatrix.from_dict(json.loads(first)), "CQ")
  out = steering.with_table(cut, edited)
  block = trace.extract_block(out, "payoff")
  assert trace.payoff_order(block) == trace.payoff_order(first) != trace.PAYOFF_KEYS
  assert steering.row_pick(payoff.Bimatrix.from_dict(json.loads(block)), "VQ") == "VQ_CQ"
  rows, texts, tokens = ["VQ"] * 4, [cut + "<analyze>x</analyze>"] * 4, [[1]] * 4
  for rule, expected in ((FOLLOWS, 1.0), (lambda table, row: "VQ_DA", 1 / 3)):
    steered = steering.steer(Scripted(rule), None, [[1]] * 4, texts, tokens, rows)
    assert steering.score(steered, 4) == pytest.approx(expected)
  # a table that is not a JSON object is rewritten in PAYOFF_KEYS order
  assert trace.payoff_order("{'DQ_AQ': 1}") is None
  assert steering.with_table("<payoff>junk</payoff>", edited) == (
      f"<payoff>{edited.to_json()}</payoff>")


def test_a_read_row_edit_leaves_the_other_row_as_the_policy_wrote_it():
  """`edit="read"` prices only the row the policy read: a scan thrown by a changed cell in the
  row it never reads follows every such edit and misses the two-row ones."""
  for strategy in payoff.ACTIONS:
    edited = steering.table_for(OWN, strategy, rows=("DQ",))
    assert steering.row_pick(edited, "DQ") == f"DQ_{strategy}"
    assert all(edited[k] == OWN[k] for k in trace.PAYOFF_KEYS if k.startswith("VQ"))

  def thrown(table, row):  # reads its row, unless the other row no longer is its own
    other = "VQ" if row == "DQ" else "DQ"
    same = all(table[k] == OWN[k] for k in trace.PAYOFF_KEYS if k.startswith(other))
    return steering.row_pick(table, row) if same else f"{row}_CQ"

  rows, texts, tokens = _traces(10)
  both = steering.steer(Scripted(thrown), None, [[1]] * 10, texts, tokens, rows)
  read = steering.steer(Scripted(thrown), None, [[1]] * 10, texts, tokens, rows, edit="read")
  # two-row edits: followed only where the other row's own peak already was the strategy (DA
  # for definite traces, CQ for vague ones: 1/6) or the rule's fallback is right (CQ: 1/3)
  assert steering.score(read, 10) == 1.0 and steering.score(both, 10) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="steering edit 'all'"):
    steering.steer(Scripted(thrown), None, [[1]] * 10, texts, tokens, rows, edit="all")
