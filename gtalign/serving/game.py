"""The game as an API: the `gtalign` request field renders the question with the game prompt,
generates up to `</payoff>`, re-prices the matrix, and continues from the edited text.

    "gtalign": {"game": true,
                "pricing": {"policy": "per_token", "cost": 0.5, "payer": "user"},
                "prompt_style": "compact", "system": "..."}      # both optional

The question is the last user message (a system message, if any, is the game's system
message). A final assistant message is a trace already begun: generation continues from it, and
if it already holds `</payoff>` the pricing applies to its matrix directly. The two phases are
the in-process `generate(stop="</payoff>")`, `edit_payoff_block`, `continue_from` steps, run
through the batching engine. Choice j's continuation samples from the stream (seed + 1 + j, 0).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gtalign.game import behaviour, payoff, pricing, trace
from gtalign.game import prompt as prompt_lib
from gtalign.serving.protocol import ChatRequest, RequestError

PAYOFF_END, RESPONSE_END = "</payoff>", "</response>"
_KEYS = {"game", "pricing", "prompt_style", "system"}


@dataclasses.dataclass(frozen=True)
class GameOptions:
  policy: str | None
  params: dict
  prompt_style: str | None
  system: str | None


def parse_options(field: Any) -> GameOptions | None:
  """The checked `gtalign` field, or None when it asks for no game."""
  unknown = sorted(set(field) - _KEYS)
  if unknown:
    raise RequestError(f"gtalign.{unknown[0]}", f"gtalign.{unknown[0]} is not an option; "
                                                f"expected {', '.join(sorted(_KEYS))}")
  if not isinstance(field.get("game", False), bool):
    raise RequestError("gtalign.game", "gtalign.game must be true or false")
  spec = field.get("pricing")
  if not field.get("game", False):
    if spec is not None:
      raise RequestError("gtalign.pricing", "gtalign.pricing needs gtalign.game = true")
    return None
  style = field.get("prompt_style")
  if style is not None and style not in prompt_lib.STYLES:
    raise RequestError("gtalign.prompt_style", f"gtalign.prompt_style={style!r}; expected one "
                                               f"of {', '.join(prompt_lib.STYLES)}")
  system = field.get("system")
  if system is not None and not isinstance(system, str):
    raise RequestError("gtalign.system", "gtalign.system must be a string")
  if spec is None:
    return GameOptions(None, {}, style, system)
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


def priced(text: str, options: GameOptions) -> tuple[str, dict]:
  """The text with its payoff re-priced, and what the pricing did (for the trace field)."""
  info: dict[str, Any] = {"policy": options.policy, "params": options.params,
                          "payoff_written": None, "payoff_priced": None, "error": None}
  written, reason = trace.parse_payoff(_payoff_content(text), mode="lenient")
  if written is None:
    info["error"] = reason
    return text, info
  info["payoff_written"] = written
  info["selected_written"] = payoff.select(written)
  if options.policy is None:
    return text, info
  try:
    edited = pricing.edit_payoff_block(text, options.policy, **options.params)
  except ValueError as e:
    info["error"] = str(e)
    return text, info
  info["payoff_priced"], _ = trace.parse_payoff(_payoff_content(edited), mode="lenient")
  info["selected_priced"] = payoff.select(info["payoff_priced"])
  return edited, info


def _payoff_content(text: str) -> str:
  start = text.find("<payoff>")
  if start < 0:
    return ""
  end = text.find(PAYOFF_END, start)
  return text[start + len("<payoff>"):end if end >= 0 else len(text)]


def choice_trace(text: str, info: dict) -> dict:
  """The extension field of one choice: the parsed trace and what pricing did."""
  parsed = trace.parse_trace(text)
  response = parsed.response if "response" in parsed.blocks else None
  return {"text": text, "pricing": info, "chosen_key": parsed.chosen_key,
          "key_action": payoff.action(parsed.chosen_key) if parsed.chosen_key else None,
          "response": response,
          "action": behaviour.classify(response) if response is not None else None,
          "valid": parsed.valid, "reason": parsed.reason}
