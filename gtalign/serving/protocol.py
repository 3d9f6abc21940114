"""The OpenAI chat-completions request, checked field by field, and the response shapes.

Validation is hand-written rather than a schema library's so that each error is one sentence
naming the field (`messages[2].role`), which the server returns as an OpenAI-style 400.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_STOPS = 4
MAX_STOP_CHARS = 64  # each stop string sets the on-device byte window
MAX_N = 16
_KNOWN = {"model", "messages", "n", "temperature", "top_p", "max_tokens",
          "max_completion_tokens", "stop", "seed", "stream", "stream_options", "user", "gtalign"}


class RequestError(ValueError):
  """A bad request: `param` names the offending field (OpenAI's `error.param`)."""

  def __init__(self, param: str | None, message: str, status: int = 400,
               kind: str = "invalid_request_error"):
    super().__init__(message)
    self.param, self.status, self.kind = param, status, kind

  def body(self) -> dict:
    return {"error": {"message": str(self), "type": self.kind, "param": self.param,
                      "code": None}}


@dataclasses.dataclass(frozen=True)
class ChatRequest:
  messages: tuple[tuple[str, str], ...]  # (role, content)
  n: int = 1
  temperature: float = 1.0
  top_p: float = 1.0
  max_tokens: int | None = None  # None: what the context leaves, capped by the server
  stop: tuple[str, ...] = ()
  seed: int | None = None
  stream: bool = False
  include_usage: bool = False  # stream_options.include_usage
  game: dict | None = None  # the "gtalign" extension, checked by serving.game


def _number(body: dict, key: str, default: float, lo: float, hi: float,
            lo_open: bool = False) -> float:
  value = body.get(key, default)
  if value is None:
    return default
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise RequestError(key, f"{key} must be a number, got {type(value).__name__}")
  if not math.isfinite(value):
    raise RequestError(key, f"{key}={value} is not a finite number")
  if value > hi or value < lo or (lo_open and value == lo):
    bound = f"{'(' if lo_open else '['}{lo}, {hi}]"
    raise RequestError(key, f"{key}={value} is outside {bound}")
  return float(value)


def _integer(body: dict, key: str, lo: int, hi: int | None = None) -> int | None:
  value = body.get(key)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, int):
    raise RequestError(key, f"{key} must be an integer, got {type(value).__name__}")
  if value < lo or (hi is not None and value > hi):
    raise RequestError(key, f"{key}={value} must be >= {lo}" +
                       (f" and <= {hi}" if hi is not None else ""))
  return value


def _encodable(text: str, field: str) -> None:
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    raise RequestError(field, f"{field} is not valid Unicode text ({e.reason})") from None


def parse_chat_request(body: Any) -> ChatRequest:
  """Checks a decoded JSON body; raises RequestError naming the first bad field."""
  if not isinstance(body, dict):
    raise RequestError(None, f"the request body must be a JSON object, got "
                             f"{type(body).__name__}")
  unknown = sorted(set(body) - _KNOWN)
  if unknown:
    raise RequestError(unknown[0], f"unrecognized request argument supplied: {unknown[0]}")
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages:
    raise RequestError("messages", "messages must be a non-empty list of {role, content}")
  parsed = []
  for i, m in enumerate(messages):
    if not isinstance(m, dict):
      raise RequestError(f"messages[{i}]", f"messages[{i}] must be an object")
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
      raise RequestError(f"messages[{i}].role",
                         f"messages[{i}].role={role!r}; expected one of {', '.join(ROLES)}")
    if isinstance(content, list):  # content parts: text only
      if not all(isinstance(p, dict) and p.get("type") == "text" and
                 isinstance(p.get("text"), str) for p in content):
        raise RequestError(f"messages[{i}].content",
                           f"messages[{i}].content parts must all be {{type: text, text: str}}")
      content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
      raise RequestError(f"messages[{i}].content",
                         f"messages[{i}].content must be a string")
    _encodable(content, f"messages[{i}].content")
    extra = sorted(set(m) - {"role", "content", "name"})
    if extra:
      raise RequestError(f"messages[{i}].{extra[0]}",
                         f"messages[{i}].{extra[0]} is not supported")
    parsed.append((role, content))
  game = body.get("gtalign")
  if game is not None and not isinstance(game, dict):
    raise RequestError("gtalign", "gtalign must be an object")
  if parsed[-1][0] == "assistant" and not (game and game.get("game") is True):
    raise RequestError("messages", "messages: the last one must be from the user or the system "
                                   "(a final assistant message is a game trace to continue, "
                                   "with gtalign.game)")

  stop = body.get("stop")
  if stop is None:
    stop = ()
  elif isinstance(stop, str):
    stop = (stop,)
  elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
    stop = tuple(stop)
  else:
    raise RequestError("stop", "stop must be a string or a list of strings")
  if len(stop) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in stop):
    raise RequestError("stop", f"stop takes up to {MAX_STOPS} non-empty strings of at most "
                               f"{MAX_STOP_CHARS} characters")
  for s in stop:
    _encodable(s, "stop")

  stream = body.get("stream", False)
  if not isinstance(stream, bool):
    raise RequestError("stream", "stream must be true or false")
  options = body.get("stream_options") or {}
  if (not isinstance(options, dict) or set(options) - {"include_usage"}
      or not isinstance(options.get("include_usage", False), bool)):
    raise RequestError("stream_options", "stream_options takes only include_usage, a boolean")
  if not isinstance(body.get("model", ""), str):
    raise RequestError("model", "model must be a string")
  max_tokens = _integer(body, "max_tokens", 1)
  if max_tokens is None:
    max_tokens = _integer(body, "max_completion_tokens", 1)
  return ChatRequest(
      messages=tuple(parsed), n=_integer(body, "n", 1, MAX_N) or 1,
      temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
      top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
      max_tokens=max_tokens, stop=stop, seed=_integer(body, "seed", 0), stream=stream,
      include_usage=bool(options.get("include_usage", False)), game=game)


def completion_id() -> str:
  return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def chat_completion(cid: str, model: str, choices: list[dict], prompt_tokens: int,
                    completion_tokens: int, extra: dict | None = None) -> dict:
  body = {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
          "choices": choices,
          "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens}}
  if extra:
    body.update(extra)
  return body


def chunk(cid: str, model: str, index: int, delta: dict, finish_reason: str | None) -> dict:
  return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
          "model": model,
          "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]}


def finish_reason(sampler_reason: str) -> str:
  """The sampler's eos/stop/length as OpenAI's stop/length."""
  return "length" if sampler_reason == "length" else "stop"
