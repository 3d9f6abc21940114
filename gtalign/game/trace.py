"""The four-block game trace: <thinking>, <payoff>, <analyze>, <response>."""

from __future__ import annotations

import dataclasses
from typing import Any

PAYOFF_KEYS = ("DQ_AQ", "DQ_CQ", "DQ_DA", "VQ_AQ", "VQ_CQ", "VQ_DA")
BLOCKS = ("thinking", "payoff", "analyze", "response")


@dataclasses.dataclass(frozen=True)
class ParsedTrace:
  """What the reward functions need from one completion; parsing never raises.

  `valid` is False exactly when the reference returns an all-zero reward without calling a judge
  (response or payoff block missing, or payoff invalid); `format_ok` is the format term F.
  """

  text: str  # the full completion (special tokens already removed)
  blocks: dict[str, str]  # tag -> stripped content of its first occurrence (only tags found)
  payoff: dict[str, dict[str, float]] | None  # validated 2x3 bimatrix, else None
  chosen_key: str | None  # joint-strategy key named in <analyze> (e.g. "DQ_DA"), else None
  format_ok: bool  # the four-block format check passed (and the payoff validated)
  valid: bool  # response and a valid payoff present: rewards are computed
  reason: str  # "" when valid and format_ok, else a specific explanation
  response: str  # content of <response> ("" if missing)
  reasoning: str  # everything before the first "<response>" (the whole text if absent)
  mode: str = "strict"  # "strict" or "lenient" (paper-exact)

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)
