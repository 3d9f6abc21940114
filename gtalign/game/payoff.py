"""Payoff bimatrices: the Pareto frontier, strategy selectors and the distinctness reward."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence

from gtalign.game.trace import PAYOFF_KEYS

ACTIONS = ("DA", "CQ", "AQ")
EPS = 1e-9  # the reference's tolerance for dominance and (here) for ties between scores


@dataclasses.dataclass(frozen=True)
class Bimatrix:
  """The 2x3 game as two payoff vectors in PAYOFF_KEYS order, so it is hashable and immutable.

  Non-finite values are allowed (lenient parsing lets NaN through and the distinctness reward must
  still be computed on them); selectors rank NaN lowest and to_json refuses them.
  """

  llm: tuple[float, ...]  # [6] the assistant's payoff per key
  user: tuple[float, ...]  # [6] the user's payoff per key

  def __post_init__(self):
    if len(self.llm) != len(PAYOFF_KEYS) or len(self.user) != len(PAYOFF_KEYS):
      raise ValueError(f"a bimatrix needs {len(PAYOFF_KEYS)} values per player")
    object.__setattr__(self, "llm", tuple(float(v) for v in self.llm))
    object.__setattr__(self, "user", tuple(float(v) for v in self.user))

  @classmethod
  def from_dict(cls, payoff: Mapping[str, Mapping[str, float]]) -> Bimatrix:
    """From {"DQ_AQ": {"LLM": x, "user": y}, ...} (a ParsedTrace.payoff); key order is free."""
    missing = [k for k in PAYOFF_KEYS if k not in payoff]
    extra = [k for k in payoff if k not in PAYOFF_KEYS]
    if missing or extra:
      raise ValueError(f"payoff keys: missing {missing}, unexpected {extra}")
    return cls(llm=tuple(payoff[k]["LLM"] for k in PAYOFF_KEYS),
               user=tuple(payoff[k]["user"] for k in PAYOFF_KEYS))

  def to_dict(self) -> dict[str, dict[str, float]]:
    return {k: {"LLM": l, "user": u} for k, l, u in zip(PAYOFF_KEYS, self.llm, self.user)}

  def to_json(self, order: Sequence[str] | None = None, one_decimal: bool = False) -> str:
    """Compact strict JSON with at most one decimal, the form the prompt asks the model to
    write; whole numbers without one ("4", as a policy writes them), so an edited table reads
    like the policy's own, or, `one_decimal`, every number with exactly one ("4.0", as a policy
    taught that spelling writes them; `spelled_one_decimal`). `order`: the keys in the order to
    write them (PAYOFF_KEYS by default; an edit keeps the order the policy wrote its table
    in)."""
    order = tuple(order) if order is not None else PAYOFF_KEYS
    if sorted(order) != sorted(PAYOFF_KEYS):
      raise ValueError(f"a table's key order must hold each of {PAYOFF_KEYS} once, got {order}")
    body = ",".join(f'"{k}":{{"LLM":{spell(self[k][0], one_decimal)},'
                    f'"user":{spell(self[k][1], one_decimal)}}}' for k in order)
    return "{" + body + "}"

  def points(self) -> dict[str, tuple[float, float]]:
    """Key -> (LLM, user), the coordinates the frontier is computed in."""
    return {k: (l, u) for k, l, u in zip(PAYOFF_KEYS, self.llm, self.user)}

  def __getitem__(self, key: str) -> tuple[float, float]:
    return self.points()[key]


# what a table's numbers follow as `Bimatrix.to_json` spells them ("LLM":4.0), each cell's
# brace too ("DQ_DA":{): the tokens that decide where the table peaks (rl.table_temperature)
BEFORE_NUMBER = '":'
# what each row's first LLM number follows, in PAYOFF_KEYS order ("DQ_AQ":{"LLM":, and the same
# for VQ_AQ): a one-peak table decides there first whether that cell peaks, and writes every
# later number of the row from that choice (rl.table_numbers="lead")
BEFORE_ROW_LEAD = f'{PAYOFF_KEYS[0][2:]}":{{"LLM":'
NUMBERS_AFTER = {"all": BEFORE_NUMBER, "lead": BEFORE_ROW_LEAD}  # rl.table_numbers -> the text


def as_bimatrix(b: Bimatrix | Mapping[str, Mapping[str, float]]) -> Bimatrix:
  return b if isinstance(b, Bimatrix) else Bimatrix.from_dict(b)


def action(key: str) -> str:
  """The assistant's move in a joint-strategy key: "DQ_CQ" -> "CQ"."""
  if key not in PAYOFF_KEYS:
    raise ValueError(f"unknown key {key!r}; expected one of {PAYOFF_KEYS}")
  return key.split("_")[1]


def _geq(x: float, y: float) -> bool:
  return x > y + EPS or math.isclose(x, y, abs_tol=EPS)


def dominates(b: tuple[float, float], a: tuple[float, float]) -> bool:
  """b is at least as good as a for both players (up to EPS) and better for one by more than EPS."""
  return (_geq(b[0], a[0]) and _geq(b[1], a[1])) and (b[0] > a[0] + EPS or b[1] > a[1] + EPS)


def pareto_frontier(b: Bimatrix | Mapping) -> list[str]:
  """Keys no other key dominates, in PAYOFF_KEYS order; DQ and VQ rows compete in one frontier.

  Both rows compete because that is what the prompt and the reference's checker do (method
  reference, open question 3), even though the row is the user's type, not a choice.
  """
  pts = as_bimatrix(b).points()
  return [k for k, a in pts.items() if not any(dominates(o, a) for j, o in pts.items() if j != k)]


def _ranked(score: Callable[[float, float], float], keys: tuple[str, ...] | list[str],
            b: Bimatrix) -> str:
  """argmax of (score, user, LLM), first key on a full tie; values within ~EPS count as tied.

  Rounding to 9 decimals makes 3.1 + 1.0 and 2.0 + 2.1 tie, as the model writing them intends,
  while keeping the comparison transitive. NaN ranks below everything.
  """
  def level(v: float) -> float:
    return -math.inf if math.isnan(v) else round(v, 9)
  pts = b.points()
  order = {k: i for i, k in enumerate(PAYOFF_KEYS)}
  return max(keys, key=lambda k: (level(score(*pts[k])), level(pts[k][1]), level(pts[k][0]),
                                  -order[k]))


def select_sum(b: Bimatrix | Mapping) -> str:
  """The prompt's rule: max LLM + user, then max user, then max LLM, then PAYOFF_KEYS order."""
  return _ranked(lambda l, u: l + u, PAYOFF_KEYS, as_bimatrix(b))


def select_in_row(b: Bimatrix | Mapping, row: str) -> str:
  """The prompt's rule within one row ("DQ" or "VQ"): its key with the largest LLM + user, same
  tie-breaks as `select_sum`."""
  return _ranked(lambda l, u: l + u, [k for k in PAYOFF_KEYS if k[:2] == row], as_bimatrix(b))


def is_own_row_pick(b: Bimatrix | Mapping | None, key: str | None) -> bool:
  """Whether `key` is its own row's pick (`select_in_row`): the move the table makes best for
  the question type the key reads."""
  return b is not None and key is not None and key[:2] in ("DQ", "VQ") and (
      select_in_row(b, key[:2]) == key)


def select_product(b: Bimatrix | Mapping) -> str:
  """max LLM * user (the Nash/Cobb-Douglas welfare, as inference_v2 uses), same tie-breaks.

  Two negative payoffs multiply to a positive welfare, so (-3, -3) beats (2, 2); `pareto` avoids it.
  """
  return _ranked(lambda l, u: l * u, PAYOFF_KEYS, as_bimatrix(b))


def select_pareto(b: Bimatrix | Mapping) -> str:
  """The product rule restricted to the Pareto frontier, so a dominated key is never chosen."""
  bm = as_bimatrix(b)
  return _ranked(lambda l, u: l * u, pareto_frontier(bm) or list(PAYOFF_KEYS), bm)


SELECTORS: dict[str, Callable[[Bimatrix], str]] = {
    "sum": select_sum,
    "product": select_product,
    "pareto": select_pareto,
}


def select(b: Bimatrix | Mapping, rule: str = "sum") -> str:
  """The key the named selector picks."""
  if rule not in SELECTORS:
    raise ValueError(f"unknown selector {rule!r}; expected one of {sorted(SELECTORS)}")
  return SELECTORS[rule](as_bimatrix(b))


def distinctness(b: Bimatrix | Mapping) -> float:
  """The payoff-distinctness reward P in [0, 1] (method reference, section 4).

  Per key, 1/12 if the players' payoffs differ and 1/12 more if they differ by over 10% relative,
  which discourages a model from copying one column into the other.
  """
  count = 0
  for l, u in as_bimatrix(b).points().values():
    count += (u != l) + (abs(u - l) / max(abs(u), abs(l), 1e-8) > 0.1)
  return count / 12


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def spell(v: float, one_decimal: bool = False) -> str:
  """A payoff as a table writes it: rounded to one decimal, whole numbers without one ("4")
  unless `one_decimal` ("4.0", "1.5": every number the same length in tokens)."""
  if not math.isfinite(v):
    raise ValueError(f"strict JSON cannot hold {v}")
  r = round(v, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
  return f"{r:.1f}" if one_decimal or r != int(r) else f"{r:.0f}"


def spelled_one_decimal(block: str) -> bool:
  """Whether a written `<payoff>` block spells every number with one decimal ("4.0"), so an
  edit writes its numbers the same way (a "1.5" among "1"s is two tokens longer, and a scan
  that finds cells by where they sit copies the wrong one; README "The default run")."""
  numbers = _NUMBER.findall(block)  # a whole number among them says which: "4.0" or "4"
  return any(re.fullmatch(r"-?\d+\.0+", n) for n in numbers) and all("." in n for n in numbers)
