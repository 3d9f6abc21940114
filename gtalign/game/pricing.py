"""Pricing policies as payoff transforms, for steering a trained model without retraining.

The model writes its payoff bimatrix, stops at `</payoff>`, the matrix is rewritten to reflect who
pays for the interaction, and generation resumes (method reference, section 10). Each policy maps a
Bimatrix to a Bimatrix rounded to one decimal, the precision the prompt asks the model for.

The policies of our own design share one cost model: beyond a direct answer, AQ adds one
follow-up question that may open a further turn (1 extra unit of tokens) and CQ always costs a
further turn before the answer (2 units); DA costs no extra. `paper_*` reproduce the reference's
hard-coded offsets exactly.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from gtalign.game.payoff import Bimatrix, action, as_bimatrix, spelled_one_decimal
from gtalign.game.trace import PAYOFF_END, PAYOFF_KEYS, PAYOFF_START, parse_payoff

EXTRA_UNITS = {"DA": 0.0, "AQ": 1.0, "CQ": 2.0}  # extra tokens/turns beyond a direct answer


def _shift(b: Bimatrix | Mapping, llm: Callable[[str], float],
           user: Callable[[str], float]) -> Bimatrix:
  """Adds per-action offsets to each player's payoff and rounds to one decimal."""
  b = as_bimatrix(b)
  acts = [action(k) for k in PAYOFF_KEYS]
  return Bimatrix(llm=tuple(round(v + llm(a), 1) for v, a in zip(b.llm, acts)),
                  user=tuple(round(v + user(a), 1) for v, a in zip(b.user, acts)))


def llm_shift(b: Bimatrix | Mapping, scale_llm: float) -> Bimatrix:
  """The reference's "LLM-shift": LLM += scale_llm everywhere; user += 0 DA, 1.0 AQ, 0.5 CQ."""
  user_bonus = {"DA": 0.0, "AQ": 1.0, "CQ": 0.5}
  return _shift(b, lambda a: scale_llm, user_bonus.__getitem__)


def user_shift(b: Bimatrix | Mapping, scale_user: float) -> Bimatrix:
  """The reference's "user-shift": user += scale_user everywhere; LLM += 1.0 DA, 0.5 AQ, 0 CQ."""
  llm_bonus = {"DA": 1.0, "AQ": 0.5, "CQ": 0.0}
  return _shift(b, llm_bonus.__getitem__, lambda a: scale_user)


def free(b: Bimatrix | Mapping) -> Bimatrix:
  """No price signal: the model's own matrix, rounded."""
  return _shift(b, lambda a: 0.0, lambda a: 0.0)


def per_token(b: Bimatrix | Mapping, cost: float = 0.5, payer: str = "llm") -> Bimatrix:
  """The payer's payoff drops by cost per extra unit (AQ -cost, CQ -2 cost, DA 0).

  payer="llm": the provider bears compute per token (free tier, flat API price), which pushes the
  choice toward DA; payer="user": metered billing, the user bears it.
  """
  if payer not in ("llm", "user"):
    raise ValueError(f"payer must be 'llm' or 'user', got {payer!r}")
  charge = lambda a: -cost * EXTRA_UNITS[a]  # noqa: E731
  none = lambda a: 0.0  # noqa: E731
  return _shift(b, charge, none) if payer == "llm" else _shift(b, none, charge)


def subscription(b: Bimatrix | Mapping, fee: float = 1.0, cost: float = 0.5) -> Bimatrix:
  """A flat fee moves from user to provider, who then pays cost per extra unit.

  user -= fee everywhere; LLM += fee - cost * units (DA fee, AQ fee - cost, CQ fee - 2 cost). With
  fee=1, cost=0.5 this is paper_user_shift(-1.0): under a flat fee the provider profits most from
  conversations that end soonest.
  """
  return _shift(b, lambda a: fee - cost * EXTRA_UNITS[a], lambda a: -fee)


def paper_llm_shift(b: Bimatrix | Mapping, scale: float = -2.0) -> Bimatrix:
  """The reference's LLM-shift mode (its run() default scale -2.0)."""
  return llm_shift(b, scale)


def paper_user_shift(b: Bimatrix | Mapping, scale: float = -0.5) -> Bimatrix:
  """The reference's user-shift mode (its main() default scale -0.5)."""
  return user_shift(b, scale)


@dataclasses.dataclass(frozen=True)
class PricingPolicy:
  name: str
  fn: Callable[..., Bimatrix]  # (bimatrix, **params) -> bimatrix
  description: str  # one line, for the README table

  @property
  def params(self) -> dict[str, Any]:
    """Parameter name -> default, read from the function so the two cannot drift apart."""
    sig = inspect.signature(self.fn)
    return {n: p.default for n, p in list(sig.parameters.items())[1:]}


PRICING_POLICIES: dict[str, PricingPolicy] = {p.name: p for p in (
    PricingPolicy("free", free, "no price signal: the model's own payoffs, rounded to one decimal"),
    PricingPolicy("per_token", per_token,
                  "payer ('llm' or 'user') loses `cost` per extra unit: AQ -cost, CQ -2*cost, "
                  "DA 0"),
    PricingPolicy("subscription", subscription,
                  "flat fee: user -fee everywhere; LLM +fee minus `cost` per extra unit "
                  "(DA > AQ > CQ)"),
    PricingPolicy("paper_llm_shift", paper_llm_shift,
                  "reference LLM-shift: LLM +scale everywhere; user +1.0 AQ, +0.5 CQ, +0 DA"),
    PricingPolicy("paper_user_shift", paper_user_shift,
                  "reference user-shift: user +scale everywhere; LLM +1.0 DA, +0.5 AQ, +0 CQ"),
)}


def apply_pricing(b: Bimatrix | Mapping, name: str, **params: Any) -> Bimatrix:
  """Applies the named policy; unknown parameters raise TypeError."""
  if name not in PRICING_POLICIES:
    raise ValueError(f"unknown pricing policy {name!r}; expected one of {sorted(PRICING_POLICIES)}")
  return PRICING_POLICIES[name].fn(as_bimatrix(b), **params)


def describe_policies() -> list[tuple[str, str]]:
  """(name with its parameters, one-line description) for every policy, in registry order."""
  rows = []
  for p in PRICING_POLICIES.values():
    args = ", ".join(f"{k}={v!r}" for k, v in p.params.items())
    rows.append((f"{p.name}({args})" if args else p.name, p.description))
  return rows


def edit_payoff_block(text: str, policy: str | Callable[[Bimatrix], Bimatrix],
                      **params: Any) -> str:
  """Rewrites the first <payoff> block's JSON under a pricing policy, leaving the rest intact.

  `text` may be a partial completion stopped right before `</payoff>` (the block then runs to the
  end). Reads the payoff as the paper does (JSON, else a Python literal) but needs finite numbers.
  Raises ValueError when there is no <payoff> or it does not validate: steering must not silently
  pass an unpriced matrix on.
  """
  start = text.find(PAYOFF_START)
  if start < 0:
    raise ValueError("no <payoff> block to edit")
  start += len(PAYOFF_START)
  end = text.find(PAYOFF_END, start)
  end = len(text) if end < 0 else end
  payoff, reason = parse_payoff(text[start:end], mode="lenient")
  if payoff is None:
    raise ValueError(reason)
  b = Bimatrix.from_dict(payoff)
  priced = policy(b, **params) if callable(policy) else apply_pricing(b, policy, **params)
  spelled = spelled_one_decimal(text[start:end])  # "4.0" stays "4.0", "4" stays "4"
  return text[:start] + priced.to_json(one_decimal=spelled) + text[end:]
