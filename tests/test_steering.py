"""The steering metric (`gtalign.evaluation.steering`) against scripted policies: one that does
what its table selects scores 1.0, one that ignores its table about 1/3, one without a table 0."""

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
  """Stands in for a Sampler: continues each prefix (a trace through </payoff>) by a rule."""

  def __init__(self, rule):
    self.rule, self.calls = rule, []

  def continue_from(self, params, prompts, prefixes, sampling, prompt_indices=None,
                    prefix_tokens=None):
    self.calls.append((prefixes, prefix_tokens))
    texts = []
    for prefix in prefixes:
      table = trace.parse_payoff(trace.extract_block(prefix, "payoff"))[0]
      key = self.rule(payoff.select(table))
      texts.append(f"<analyze>Best LLM + user: {key}</analyze>"
                   f"<response>{RESPONSES[payoff.action(key)]}</response>")
    return types.SimpleNamespace(texts=texts)


def _traces(n):
  rows = ["DQ" if i % 2 == 0 else "VQ" for i in range(n)]
  texts = [f"<thinking>t</thinking><payoff>{TABLE}</payoff><analyze>x</analyze>" for _ in rows]
  return rows, texts, [list(range(40))] * n


@pytest.mark.parametrize("rule, expected", [
    (lambda pick: pick, 1.0),  # follows its table
    (lambda pick: "VQ_CQ", 1 / 6),  # one key whatever the table: right 1 edit in 3 on VQ only
    (lambda pick: pick[:3] + "CQ", 1 / 3),  # reads the row, always asks: 1 edit in 3
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


def test_a_trace_without_a_table_cannot_be_steered():
  rows, texts, tokens = _traces(4)
  texts[1] = "<thinking>t</thinking><response>Rome.</response>"
  steered = steering.steer(Scripted(lambda pick: pick), None, [[1]] * 4, texts, tokens, rows)
  got = steering.arrays(steered, 4)["steering"]
  np.testing.assert_allclose(got, [1.0, 0.0, 1.0, 1.0])


def test_the_edited_table_picks_each_strategy_and_keeps_the_other_cells():
  rng = random.Random(0)
  for _ in range(300):
    own = payoff.Bimatrix(llm=tuple(rng.choice([-1.0, 0.0, 1.0, 2.5, 4.0]) for _ in range(6)),
                          user=tuple(rng.choice([-2.0, 1.0, 2.0, 3.5]) for _ in range(6)))
    row, strategy = rng.choice(steering.ROWS), rng.choice(payoff.ACTIONS)
    edited = steering.table_for(own, row, strategy)
    target = f"{row}_{strategy}"
    assert payoff.select(edited) == target
    moved = {k for k in trace.PAYOFF_KEYS if edited[k] != own[k]}
    assert moved <= {target, *(f"{row}_{a}" for a in payoff.ACTIONS)}  # its own row only
    assert len(moved - {target}) <= 1  # at most the cell swapped with it
  assert payoff.select(steering.table_for(None, "VQ", "DA")) == "VQ_DA"
