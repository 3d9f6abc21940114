"""The world's reward cells: the intended behaviour is the optimum, checked by hand-computed U, L."""

import math

import numpy as np

import pytest

from gtalign.rewards import world as world_rewards
from gtalign.rewards import world_table


def _sigmoid(x):
  return 1 / (1 + math.exp(-x))


@pytest.fixture(scope="module")
def cells():
  return {(c["type"], c["strategy"], c["case"]): c for c in world_table.cell_table()}


# (type, strategy, case) -> answer term A (rewards/world.py's cells); C = 1 on every trace here
A = {("DQ", "DA", "correct"): 1.0, ("DQ", "DA", "wrong"): 0.4, ("DQ", "AQ", "correct"): 0.3,
     ("DQ", "AQ", "wrong"): 0.1, ("DQ", "CQ", "-"): 0.0,
     ("VQ", "CQ", "asks for the missing detail"): 1.0,
     ("VQ", "CQ", "asks about something else"): 0.4, ("VQ", "AQ", "-"): 0.3,
     ("VQ", "DA", "a guess"): 0.0}


def test_cells_match_the_hand_computed_formula(cells):
  from gtalign.data import warm_start, world
  from gtalign.game.trace import parse_trace
  assert set(cells) == set(A)
  # the cells' traces: warm-start traces, the response edited word for word (counts unchanged)
  for key, cell in cells.items():
    kind, plan = key[0], key[1]
    rows = world.make_world(0, num_train=0, num_test=2,
                            build_messages=lambda q, s: [{"role": "user", "content": q}])["test"]
    row = next(r for r in rows if r["extra_info"]["question_type"] == kind)
    text = warm_start.format_trace(row, plan)
    n = len(text.split())  # the response edits swap one word for one word, or 4 words for 4
    r_l = _sigmoid(0.005 * (n - 500)) * _sigmoid(0.005 * (1000 - n))
    parsed = parse_trace(text)
    q_r = math.exp(-len(parsed.reasoning) / 500)
    n_resp = len(cell["response"].split())
    r_u = _sigmoid(0.005 * (n_resp - 20)) * _sigmoid(0.005 * (500 - n_resp))
    llm = 1e-4 + 0.2 * 1 + 0.2 * 1 + 0.4 * A[key] + 0.2 * r_l + 0.2 * 1.0
    user = 1e-4 + 0.5 * A[key] + 0.2 * r_u + 0.3 * q_r
    assert cell["llm"] == pytest.approx(llm, abs=1e-9), key
    assert cell["user"] == pytest.approx(user, abs=1e-9), key
    assert cell["welfare"] == pytest.approx(math.sqrt(user * llm), abs=1e-9), key


def test_the_intended_behaviour_is_the_optimum(cells):
  w = {k: c["welfare"] for k, c in cells.items()}
  dq_da = w[("DQ", "DA", "correct")]
  # definite: a correct direct answer beats everything else ...
  assert all(dq_da > v for k, v in w.items() if k[0] == "DQ" and k[1:] != ("DA", "correct"))
  # ... and answering beats asking at any accuracy: even a wrong answer scores above CQ
  assert w[("DQ", "DA", "wrong")] > w[("DQ", "CQ", "-")] + 0.1
  assert w[("DQ", "DA", "correct")] > w[("DQ", "AQ", "correct")] + 0.1
  # a wrong answer is worth clearly less than a right one (a constant answer does not pay) ...
  assert w[("DQ", "DA", "correct")] > w[("DQ", "DA", "wrong")] + 0.25
  # ... and in expectation, at every accuracy p, a plain answer beats an answer with an unasked
  # follow-up
  for p in np.linspace(0, 1, 11):
    da = p * w[("DQ", "DA", "correct")] + (1 - p) * w[("DQ", "DA", "wrong")]
    aq = p * w[("DQ", "AQ", "correct")] + (1 - p) * w[("DQ", "AQ", "wrong")]
    assert da > aq + 0.05 and da > w[("DQ", "CQ", "-")] + 0.1, p
  # the move is priced before the answer's luck: a wrong plain answer beats a right one with an
  # unasked follow-up, as asking about the wrong thing beats the hedge on a vague question
  assert w[("DQ", "DA", "wrong")] > w[("DQ", "AQ", "correct")] + 0.03
  assert w[("VQ", "CQ", "asks about something else")] > w[("VQ", "AQ", "-")] + 0.03
  # the two types mirror each other cell for cell
  for dq, vq in ((("DA", "correct"), ("CQ", "asks for the missing detail")),
                 (("DA", "wrong"), ("CQ", "asks about something else")),
                 (("AQ", "correct"), ("AQ", "-")), (("CQ", "-"), ("DA", "a guess"))):
    assert w[("DQ",) + dq] == pytest.approx(w[("VQ",) + vq], abs=0.02), (dq, vq)
  # vague: the question about the missing detail beats a guess, answer + question, and a
  # question about something else
  best = w[("VQ", "CQ", "asks for the missing detail")]
  for other in (("VQ", "DA", "a guess"), ("VQ", "AQ", "-"), ("VQ", "CQ",
                                                              "asks about something else")):
    assert best > w[other] + 0.2, other


def test_consistency_term_pays_a_key_that_agrees_with_table_and_response():
  from gtalign.data import warm_start, world
  from gtalign.game.trace import parse_trace
  row = world.make_world(0, num_train=0, num_test=2,
                         build_messages=lambda q, s: [{"role": "user", "content": q}])["test"][0]
  text = warm_start.format_trace(row, "DA")
  assert world_rewards.consistency(parse_trace(text)) == 1.0
  key = f"{row['extra_info']['question_type']}_DA"
  other = key.replace("_DA", "_CQ")
  # the key contradicts its table and what the response does
  assert world_rewards.consistency(parse_trace(text.replace(f"user: {key}", f"user: {other}"))) == 0
  # the response asks although the key says DA
  asks = text.split("<response>")[0] + "<response>Which one do you mean?</response>"
  assert world_rewards.consistency(parse_trace(asks)) == 0.5
  # both rows priced (sft.rows=both): the key is its own row's pick, whatever the other row's
  # peak, which is the table's overall maximum by the key order when the key's row is VQ
  kind = row["extra_info"]["question_type"]
  for first in ("DQ", "VQ"):
    both = warm_start.format_trace({**row, "extra_info": {**row["extra_info"],
                                                         "question_type": first}},
                                   "DA", "Paris.", "fixed", other="CQ")
    assert world_rewards.consistency(parse_trace(both)) == 1.0, (kind, both)
    assert world_rewards.priced(parse_trace(both))
