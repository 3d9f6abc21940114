"""The game as an API: the `gtalign` request field renders the question with the game prompt,
generates up to `</payoff>`, edits the table, and continues from the edited text.

    "gtalign": {"game": true,
                "pricing": {"policy": "per_token", "cost": 0.5, "payer": "user"},
                "prompt_style": "compact", "system": "..."}      # all optional
    "gtalign": {"game": true, "payoff": {"DQ_AQ": {"LLM": 2.0, "user": 2.5}, ...}}

`pricing` re-prices the model's own table; `payoff` replaces it with a whole table (both
players' payoffs for all six keys), so a client can state the game outright. The question is the
last user message (a system message, if any, is the game's system message). A final assistant
message is a trace already begun: generation continues from it, and if it already holds
`</payoff>` the edit applies to its table directly. The two phases are `gtalign.game.turn`'s
steps run through the batching engine, the second from the first's own token ids. Choice j's
continuation samples from the stream (seed + 1 + j, 0). A choice whose trace stopped before
`<response>` has empty `content` and says where and why in its `failure` field.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gtalign.game import payoff, pricing, trace, turn
from gtalign.game import prompt as prompt_lib
from gtalign.serving.protocol import ChatRequest, RequestError

_KEYS = {"game", "pricing", "payoff", "prompt_style", "system"}


@dataclasses.dataclass(frozen=True)
class GameOptions:
  policy: str | None
  params: dict
  prompt_style: str | None
  system: str | None
  table: payoff.Bimatrix | None = None

  @property
  def edit(self) -> turn.Edit:
    return turn.Edit(self.policy, self.params, self.table)


def _table(field: Any) -> payoff.Bimatrix:
  """A client's whole table, checked cell by cell (errors name gtalign.payoff.KEY.PLAYER)."""
  if not isinstance(field, dict):
    raise RequestError("gtalign.payoff", "gtalign.payoff must be an object with the keys "
                                         f"{', '.join(trace.PAYOFF_KEYS)}")
  for key in [*(k for k in field if k not in trace.PAYOFF_KEYS), *trace.PAYOFF_KEYS]:
    if key not in trace.PAYOFF_KEYS:
      raise RequestError(f"gtalign.payoff.{key}", f"gtalign.payoff.{key} is not a key; "
                                                  f"expected {', '.join(trace.PAYOFF_KEYS)}")
    cell = field.get(key)
    if not isinstance(cell, dict) or set(cell) != {"LLM", "user"}:
      raise RequestError(f"gtalign.payoff.{key}",
                         f'gtalign.payoff.{key} must be {{"LLM": number, "user": number}}')
    for player, value in cell.items():
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or not math.isfinite(value)):
        raise RequestError(f"gtalign.payoff.{key}.{player}",
                           f"gtalign.payoff.{key}.{player} must be a finite number")
  return payoff.Bimatrix.from_dict(field)


def parse_options(field: Any) -> GameOptions | None:
  """The checked `gtalign` field, or None when it asks for no game."""
  unknown = sorted(set(field) - _KEYS)
  if unknown:
    raise RequestError(f"gtalign.{unknown[0]}", f"gtalign.{unknown[0]} is not an option; "
                                                f"expected {', '.join(sorted(_KEYS))}")
  if not isinstance(field.get("game", False), bool):
    raise RequestError("gtalign.game", "gtalign.game must be true or false")
  spec = field.get("pricing")
  table = field.get("payoff")
  if not field.get("game", False):
    for name, value in (("pricing", spec), ("payoff", table)):
      if value is not None:
        raise RequestError(f"gtalign.{name}", f"gtalign.{name} needs gtalign.game = true")
    return None
  if spec is not None and table is not None:
    raise RequestError("gtalign.payoff", "gtalign.payoff replaces the table and "
                                         "gtalign.pricing re-prices it: give one of them")
  style = field.get("prompt_style")
  if style is not None and style not in prompt_lib.STYLES:
    raise RequestError("gtalign.prompt_style", f"gtalign.prompt_style={style!r}; expected one "
                                               f"of {', '.join(prompt_lib.STYLES)}")
  system = field.get("system")
  if system is not None and not isinstance(system, str):
    raise RequestError("gtalign.system", "gtalign.system must be a string")
  if spec is None:
    return GameOptions(None, {}, style, system, _table(table) if table is not None else None)
  if not isinstance(spec, dict):
    raise RequestError("gtalign.pricing", "gtalign.pricing must be an object with a policy")
  name = spec.get("policy")
  if not isinstance(name, str) or name not in pricing.PRICING_POLICIES:
    raise RequestError("gtalign.pricing.policy",
                       f"gtalign.pricing.policy={name!r}; expected one of "
                       f"{', '.join(sorted(pricing.PRICING_POLICIES))}")
  params = {k: v for k, v in spec.items() if k != "policy"}
  known = pricing.PRICING_POLICIES[name].params
  for key, value in params.items():
    if key not in known:
      raise RequestError(f"gtalign.pricing.{key}",
                         f"gtalign.pricing.{key} is not a parameter of {name} (it takes "
                         f"{', '.join(known) or 'none'})")
    if type(value) is not type(known[key]) and not (
        isinstance(known[key], float) and type(value) is int):
      raise RequestError(f"gtalign.pricing.{key}", f"gtalign.pricing.{key} must be a "
                                                   f"{type(known[key]).__name__}")
  probe = payoff.Bimatrix.from_dict({k: {"LLM": 1.0, "user": 1.0} for k in trace.PAYOFF_KEYS})
  try:
    pricing.apply_pricing(probe, name, **params)
  except (ValueError, TypeError) as e:
    raise RequestError("gtalign.pricing", f"gtalign.pricing: {e}") from None
  return GameOptions(name, params, style, system)


def prompt_and_prefix(req: ChatRequest, options: GameOptions, tokenizer,
                      settings: dict) -> tuple[str, str]:
  """(rendered game prompt, the assistant's trace so far) for a request."""
  turns = list(req.messages)
  prefix = turns.pop()[1] if turns[-1][0] == "assistant" else ""
  users = [c for r, c in turns if r == "user"]
  if not users:
    raise RequestError("messages", "a game request needs a user message (the question)")
  systems = [c for r, c in turns if r == "system"]
  system = options.system if options.system is not None else (
      systems[0] if systems else settings["system"])
  messages = prompt_lib.build_messages(users[-1], system,
                                       style=options.prompt_style or settings["prompt_style"])
  try:
    return prompt_lib.render(tokenizer, messages), prefix
  except Exception as e:  # the model's template rejects a system message, say
    raise RequestError("messages", f"messages: the chat template refused them: {e}") from None


def choice_trace(text: str, info: dict | None, finish_reason: str) -> dict:
  """The extension field of one choice: the parsed trace, what the edit did, and where it
  stopped when it never reached <response>."""
  return turn.Turn(text, info, finish_reason, None, 0, 0).record()
