"""Frontier, selectors, distinctness, pricing and the prompt, against hand-computed values."""

import dataclasses
import json

import pytest

from gtalign.game import payoff as P
from gtalign.game import pricing, prompt
from gtalign.game.payoff import Bimatrix, distinctness, pareto_frontier, select
from gtalign.game.trace import PAYOFF_KEYS, parse_trace

import reference_payoff

REF = reference_payoff.PAYOFF


def bm(*points) -> Bimatrix:
  """Six (LLM, user) points in PAYOFF_KEYS order: DQ_AQ, DQ_CQ, DQ_DA, VQ_AQ, VQ_CQ, VQ_DA."""
  return Bimatrix(llm=tuple(p[0] for p in points), user=tuple(p[1] for p in points))


def values(b: Bimatrix) -> list[tuple[float, float]]:
  return list(b.points().values())


# ---------------------------------------------------------------- Bimatrix


def test_bimatrix_round_trips():
  b = Bimatrix.from_dict(REF)
  assert b.to_dict() == REF
  assert b["DQ_CQ"] == (3.1, 3.5)
  assert json.loads(b.to_json()) == REF
  assert b.to_json().startswith('{"DQ_AQ":{"LLM":2.2,"user":1.9},"DQ_CQ":')
  assert hash(b) == hash(Bimatrix.from_dict(dict(reversed(list(REF.items())))))
  with pytest.raises(dataclasses.FrozenInstanceError):
    b.llm = ()  # type: ignore[misc]


def test_to_json_one_decimal_and_strict():
  b = bm((1, -0.04), (2.25, 3.96), (0, 0), (0, 0), (0, 0), (-1.0, 10))
  d = json.loads(b.to_json())
  # -0.04 rounds to -0.0, written as 0.0; 2.25 is exact in binary and rounds half-even to 2.2
  assert '"DQ_AQ":{"LLM":1,"user":0}' in b.to_json()
  assert d["DQ_CQ"] == {"LLM": 2.2, "user": 4.0}
  assert d["VQ_DA"] == {"LLM": -1.0, "user": 10.0}
  with pytest.raises(ValueError):
    bm((float("nan"), 0), *[(0, 0)] * 5).to_json()


def test_from_dict_rejects_wrong_keys():
  with pytest.raises(ValueError):
    Bimatrix.from_dict({k: v for k, v in REF.items() if k != "VQ_DA"})
  with pytest.raises(ValueError):
    Bimatrix(llm=(1.0,) * 5, user=(1.0,) * 6)


def test_action():
  assert [P.action(k) for k in PAYOFF_KEYS] == ["AQ", "CQ", "DA", "AQ", "CQ", "DA"]
  with pytest.raises(ValueError):
    P.action("DQ_XX")


# ---------------------------------------------------------------- frontier and selectors


def test_reference_matrix():
  b = Bimatrix.from_dict(REF)
  # DQ_DA (4.2, 4.3) is above every other point in both coordinates
  assert pareto_frontier(b) == ["DQ_DA"]
  # sums 4.1, 6.6, 8.5, 4.1, 2.5, 3.8; products 4.18, 10.85, 18.06, 4.2, 1.56, 3.6
  assert {rule: select(b, rule) for rule in P.SELECTORS} == \
      {"sum": "DQ_DA", "product": "DQ_DA", "pareto": "DQ_DA"}
  # without DQ_DA and DQ_CQ: DQ_AQ 2.2 + 1.9 and VQ_AQ 2.0 + 2.1 tie at 4.1 -> larger user: VQ_AQ
  low = bm((2.2, 1.9), (0, 0), (0, 0), (2.0, 2.1), (1.3, 1.2), (2.0, 1.8))
  assert select(low, "sum") == "VQ_AQ"


def test_frontier_with_ties():
  b = bm((2.0, 3.0),  # DQ_AQ: equal to DQ_DA, and equal points do not dominate each other
         (3.0, 2.0),  # DQ_CQ
         (2.0, 3.0),  # DQ_DA
         (1.0, 1.0),  # VQ_AQ: below DQ_AQ in both
         (3.0, 1.0),  # VQ_CQ: same LLM as DQ_CQ, lower user -> dominated
         (1.5, 3.5))  # VQ_DA: best user
  assert pareto_frontier(b) == ["DQ_AQ", "DQ_CQ", "DQ_DA", "VQ_DA"]
  # sums 5, 5, 5, 2, 4, 5: four-way tie at 5 -> largest user 3.5 -> VQ_DA
  assert select(b, "sum") == "VQ_DA"
  # products 6, 6, 6, 1, 3, 5.25: tie at 6 -> users 3, 2, 3 -> DQ_AQ, DQ_DA tie -> LLM 2, 2 tie
  # -> first in key order
  assert select(b, "product") == "DQ_AQ"
  assert select(b, "pareto") == "DQ_AQ"


def test_frontier_tolerance():
  # 1 + 5e-10 is within 1e-9 of 1: neither point dominates the other
  b = bm((1.0, 1.0), (1.0 + 5e-10, 1.0), (0, 0), (0, 0), (0, 0), (0, 0))
  assert pareto_frontier(b) == ["DQ_AQ", "DQ_CQ"]
  b = bm((1.0, 1.0), (1.0 + 2e-9, 1.0), (0, 0), (0, 0), (0, 0), (0, 0))
  assert pareto_frontier(b) == ["DQ_CQ"]


def test_all_equal_every_rule_takes_the_first_key():
  b = bm(*[(1.0, 1.0)] * 6)
  assert pareto_frontier(b) == list(PAYOFF_KEYS)
  assert {select(b, r) for r in P.SELECTORS} == {"DQ_AQ"}


def test_float_sums_tie():
  # 0.2 + 0.1 = 0.30000000000000004 > 0.0 + 0.3 = 0.3 in floats, but the model means a tie:
  # the tie goes to the larger user payoff, 0.3 (DQ_CQ), not to the float-larger sum
  b = bm((0.2, 0.1), (0.0, 0.3), (-1, -1), (-1, -1), (-1, -1), (-1, -1))
  assert select(b, "sum") == "DQ_CQ"


def test_product_tie_breaks_to_llm_when_user_is_zero():
  # products 0, 0, -0, -1, -1, -1 and users 0, 0, 0, 1, 1, 1: the three zeros tie on product
  # and on user -> larger LLM: DQ_CQ (3)
  b = bm((1, 0), (3, 0), (-1, 0), (-1, 1), (-1, 1), (-1, 1))
  assert select(b, "product") == "DQ_CQ"
  # frontier: DQ_CQ (3, 0) beats the other user-0 points; the three (-1, 1) are incomparable to it
  assert pareto_frontier(b) == ["DQ_CQ", "VQ_AQ", "VQ_CQ", "VQ_DA"]
  assert select(b, "pareto") == "DQ_CQ"


def test_product_prefers_two_negatives_pareto_does_not():
  # DQ_AQ (-3, -3): product 9 > DQ_CQ (2, 2): 4, although DQ_CQ is better for both players
  b = bm((-3, -3), (2, 2), (0, 0), (0, 0), (0, 0), (0, 0))
  assert select(b, "product") == "DQ_AQ"
  assert pareto_frontier(b) == ["DQ_CQ"]
  assert select(b, "pareto") == "DQ_CQ"
  assert select(b, "sum") == "DQ_CQ"  # sums -6, 4, 0, ...


def test_select_accepts_dicts_and_rejects_unknown_rules():
  assert select(REF) == "DQ_DA"
  with pytest.raises(ValueError):
    select(REF, "max")


# ---------------------------------------------------------------- distinctness


def test_distinctness_hand_computed():
  # per key: [differ] + [|u - l| / max(|u|, |l|, 1e-8) > 0.1]
  # DQ_AQ 0.3/2.2 = .136 -> 2; DQ_CQ 0.4/3.5 = .114 -> 2; DQ_DA 0.1/4.3 -> 1; VQ_AQ 0.1/2.1 -> 1;
  # VQ_CQ 0.1/1.3 -> 1; VQ_DA (2.0 - 1.8)/2.0 = 0.09999999999999998 in floats, not > 0.1 -> 1
  assert distinctness(REF) == pytest.approx(8 / 12)
  assert distinctness(bm(*[(1.5, 1.5)] * 6)) == 0.0
  assert distinctness(bm(*[(1.0, -1.0)] * 6)) == 1.0
  # (0, 1e-9): differ -> 1; 1e-9 / max(1e-9, 0, 1e-8) = 0.1, not > 0.1 -> 0; the rest equal
  assert distinctness(bm((0, 1e-9), *[(0, 0)] * 5)) == pytest.approx(1 / 12)
  assert distinctness(bm((float("nan"), 1.0), *[(0, 0)] * 5)) == pytest.approx(1 / 12)


# ---------------------------------------------------------------- pricing


def test_llm_shift_hand_computed():
  out = pricing.llm_shift(REF, -2.0)
  # LLM - 2 everywhere; user + 1.0 AQ, + 0.5 CQ, + 0 DA
  assert values(out) == [(0.2, 2.9), (1.1, 4.0), (2.2, 4.3), (0.0, 3.1), (-0.7, 1.7), (0.0, 1.8)]
  assert pricing.apply_pricing(REF, "paper_llm_shift") == out  # default scale -2.0


def test_user_shift_hand_computed():
  out = pricing.user_shift(REF, -0.5)
  # user - 0.5 everywhere; LLM + 1.0 DA, + 0.5 AQ, + 0 CQ
  assert values(out) == [(2.7, 1.4), (3.1, 3.0), (5.2, 3.8), (2.5, 1.6), (1.3, 0.7), (3.0, 1.3)]
  assert pricing.apply_pricing(REF, "paper_user_shift") == out  # default scale -0.5


def test_own_policies_hand_computed():
  assert pricing.apply_pricing(REF, "free") == Bimatrix.from_dict(REF)
  # cost 0.5 per extra unit (AQ 1, CQ 2): LLM - 0.5 AQ, - 1.0 CQ
  assert values(pricing.apply_pricing(REF, "per_token")) == \
      [(1.7, 1.9), (2.1, 3.5), (4.2, 4.3), (1.5, 2.1), (0.3, 1.2), (2.0, 1.8)]
  assert values(pricing.apply_pricing(REF, "per_token", cost=1.0, payer="user")) == \
      [(2.2, 0.9), (3.1, 1.5), (4.2, 4.3), (2.0, 1.1), (1.3, -0.8), (2.0, 1.8)]
  # fee 2, cost 0.5: user - 2; LLM + 2 DA, + 1.5 AQ, + 1.0 CQ
  assert values(pricing.apply_pricing(REF, "subscription", fee=2.0)) == \
      [(3.7, -0.1), (4.1, 1.5), (6.2, 2.3), (3.5, 0.1), (2.3, -0.8), (4.0, -0.2)]
  assert pricing.subscription(REF) == pricing.paper_user_shift(REF, -1.0)


def test_pricing_can_change_the_decision():
  # sums 6.5 (DQ_AQ) vs 6.2 (DQ_DA); metered billing costs the user 0.5 for AQ -> 6.0 < 6.2
  b = bm((3.0, 3.5), (1, 1), (3.0, 3.2), (0, 0), (0, 0), (0, 0))
  assert select(b) == "DQ_AQ"
  assert select(pricing.apply_pricing(b, "per_token", payer="user")) == "DQ_DA"


def test_pricing_errors_and_descriptions():
  with pytest.raises(ValueError):
    pricing.apply_pricing(REF, "auction")
  with pytest.raises(TypeError):
    pricing.apply_pricing(REF, "free", cost=1.0)
  with pytest.raises(ValueError):
    pricing.apply_pricing(REF, "per_token", payer="nobody")
  rows = pricing.describe_policies()
  assert [r[0].split("(")[0] for r in rows] == list(pricing.PRICING_POLICIES)
  assert ("per_token(cost=0.5, payer='llm')", pricing.PRICING_POLICIES["per_token"].description) \
      in rows
  assert all(d and "\n" not in d for _, d in rows)


PARTIAL = ("<thinking>DQ: clear.</thinking>\n<payoff>\n" + json.dumps(REF, indent=2) + "\n")


def test_edit_payoff_block_partial_round_trip():
  edited = pricing.edit_payoff_block(PARTIAL, "paper_llm_shift", scale=-2.0)
  assert edited.startswith("<thinking>DQ: clear.</thinking>\n<payoff>{")
  assert edited.endswith("}")  # still stops right before </payoff>: generation resumes there
  full = edited + "</payoff>\n<analyze>Chosen: DQ_DA</analyze>\n<response>Paris.</response>"
  t = parse_trace(full)
  assert t.valid and t.format_ok, t.reason
  assert Bimatrix.from_dict(t.payoff) == pricing.llm_shift(REF, -2.0)
  # identity policy: same matrix back, now in compact JSON, spelled as written ("2.0" stays)
  assert pricing.edit_payoff_block(PARTIAL, "free") == \
      PARTIAL.split("<payoff>")[0] + "<payoff>" + Bimatrix.from_dict(REF).to_json(
          one_decimal=True)
  whole = PARTIAL.replace("2.0", "2")  # a table that writes whole numbers bare gets them bare
  assert '"LLM":2,' in pricing.edit_payoff_block(whole, "free")


def test_edit_payoff_block_complete_text_and_errors():
  tail = "</payoff><analyze>x</analyze><response>y</response>"
  text = "<payoff>" + repr(REF) + tail  # a Python-literal payoff is read, written back as JSON
  edited = pricing.edit_payoff_block(text, lambda b: pricing.user_shift(b, 1.0))
  assert edited == "<payoff>" + pricing.user_shift(REF, 1.0).to_json(one_decimal=True) + tail
  with pytest.raises(ValueError, match="no <payoff>"):
    pricing.edit_payoff_block("<thinking>x</thinking>", "free")
  with pytest.raises(ValueError, match="missing key DQ_AQ"):
    pricing.edit_payoff_block("<payoff>{}", "free")


# ---------------------------------------------------------------- prompt


def test_instruction_content():
  text = prompt.instruction("What is the capital of France?")
  assert text.endswith("\n\nQuestion: What is the capital of France?")
  for key in PAYOFF_KEYS:
    assert key in text
  for rule in ("(1) the largest LLM + user", "(2) if tied, the largest user payoff",
               "(3) if still tied, the largest LLM payoff"):
    assert rule in text
  starts = [text.index(f"\n<{b}>:") for b in ("thinking", "payoff", "analyze", "response")]
  assert starts == sorted(starts)
  example = json.loads(text[text.index('{"DQ_AQ"'):].split("\n")[0])
  assert example == REF == prompt.EXAMPLE_PAYOFF
  assert prompt.instruction("a {b} c").endswith("Question: a {b} c")  # braces are not a template


def test_build_messages():
  single = prompt.build_messages("q?")
  assert single == [{"role": "system", "content": prompt.DEFAULT_SYSTEM},
                    {"role": "user", "content": prompt.instruction("q?")}]
  assert prompt.build_messages("q?", system="") == single[1:]
  assert prompt.build_messages("q?", system="Be terse.")[0]["content"] == "Be terse."
  multi = prompt.build_messages("last?", first_question="first?")
  user = multi[-1]["content"]
  assert user.startswith("The user's initial question isQuestion: first?")
  assert user.endswith(prompt.instruction("last?"))
  assert user.count("Question:") == 2


def test_render_uses_the_chat_template():
  class FakeTokenizer:
    def apply_chat_template(self, messages, add_generation_prompt=False):
      self.seen = (messages, add_generation_prompt)
      return "|".join(m["content"][:4] for m in messages) + ("<gen>" if add_generation_prompt
                                                             else "")

  tok = FakeTokenizer()
  messages = prompt.build_messages("q?")
  assert prompt.render(tok, messages) == "You |Repl<gen>"
  assert tok.seen == (messages, True)
