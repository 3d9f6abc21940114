"""The four-block game trace: <thinking>, <payoff>, <analyze>, <response>."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
from typing import Any

PAYOFF_KEYS = ("DQ_AQ", "DQ_CQ", "DQ_DA", "VQ_AQ", "VQ_CQ", "VQ_DA")
BLOCKS = ("thinking", "payoff", "analyze", "response")
THINKING_END = "</thinking>"  # the question's reading ends here (rl.train_thinking)
PAYOFF_START = "<payoff>"
PAYOFF_END = "</payoff>"  # where a game turn's first phase stops, to re-price the table
ANALYZE_END = "</analyze>"  # the scan of the table ends here (rl.train_analyze)
RESPONSE_START = "<response>"
RESPONSE_END = "</response>"  # where a game turn ends


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


MODES = ("strict", "lenient")

# The paper's four-block check, for reference and for equivalence tests: re.match with
# re.DOTALL | re.MULTILINE. `_lenient_format` decides the same language in linear time.
FORMAT_PATTERN = (r"^<thinking>.*?</thinking>\s*<payoff>.*?</payoff>\s*<analyze>.*?</analyze>\s*"
                  r"<response>.*?</response>$")

# ast.literal_eval recurses in C on nested input; beyond this size it can exhaust the stack or
# memory, and a real 6-key payoff is ~250 characters.
MAX_LITERAL_CHARS = 10_000

_CURLY_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
# ASCII-only boundaries: \b would miss a key glued to CJK text ("选择DQ_DA").
_KEY_RE = re.compile(r"(?<![A-Za-z0-9_])(?:DQ|VQ)_(?:AQ|CQ|DA)(?![A-Za-z0-9_])")
# (closing tag, next opening tag) pairs the lenient format chains through, earliest first.
_JOINS = tuple(re.compile(rf"</{a}>\s*<{b}>") for a, b in zip(BLOCKS, BLOCKS[1:]))
_FIELDS = ("LLM", "user")


def extract_block(text: str, tag: str) -> str | None:
  """Stripped content of the first `<tag>(.*?)</tag>` match (DOTALL), or None.

  str.find gives the same leftmost, non-greedy match as the paper's regex search, but in linear
  time: with many unclosed `<tag>`s the regex rescans the rest of the text from each one.
  """
  start = text.find(f"<{tag}>")
  if start < 0:
    return None
  start += len(tag) + 2
  end = text.find(f"</{tag}>", start)
  if end < 0:
    return None
  return text[start:end].strip()


class _DuplicateKey(Exception):
  pass


def _load_payoff(content: str, mode: str) -> tuple[Any, str]:
  """Decodes the payoff text: JSON, or (lenient only) a Python literal with curly quotes fixed."""
  if mode == "strict":
    def no_duplicates(pairs):
      seen = set()
      for k, _ in pairs:
        if k in seen:
          raise _DuplicateKey(k)
        seen.add(k)
      return dict(pairs)
    try:
      return json.loads(content, object_pairs_hook=no_duplicates), ""
    except _DuplicateKey as e:
      return None, f"payoff: duplicate key {e.args[0]}"
    except Exception:  # JSONDecodeError, RecursionError on deep nesting, ValueError on huge ints
      return None, "payoff: not valid JSON"
  try:
    return json.loads(content), ""
  except Exception:
    pass
  fixed = content.translate(_CURLY_QUOTES)
  if len(fixed) > MAX_LITERAL_CHARS:
    return None, f"payoff: not JSON, and too long (> {MAX_LITERAL_CHARS} chars) for a literal"
  try:
    return ast.literal_eval(fixed), ""
  except Exception:  # SyntaxError, ValueError, and MemoryError/RecursionError on deep nesting
    return None, "payoff: neither JSON nor a Python literal"


def _show(x: Any) -> str:
  """A short repr for a reason string; literal_eval can hand back keys of any type."""
  try:
    return repr(x)[:40]
  except Exception:  # e.g. an int too long for str()
    return type(x).__name__


def _as_number(value: Any, where: str, mode: str) -> tuple[float | None, str]:
  if isinstance(value, bool):
    if mode == "strict":
      return None, f"payoff: {where} is a bool, not a number"
    return float(value), ""
  if not isinstance(value, (int, float)):
    return None, f"payoff: {where} is not a number"
  try:
    number = float(value)
  except OverflowError:  # an int too large for a float
    number = math.inf if value > 0 else -math.inf
  if mode == "strict" and not math.isfinite(number):
    return None, f"payoff: {where} is not finite"
  return number, ""


def payoff_order(content: str) -> tuple[str, ...] | None:
  """The order a payoff block's JSON writes the six keys in; None unless it is a JSON object
  holding exactly those keys (then a rewrite uses PAYOFF_KEYS order)."""
  try:
    pairs = json.loads(content, object_pairs_hook=lambda kv: kv)
  except ValueError:
    return None
  if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
    return None  # not an object (an array, a number)
  order = tuple(k for k, _ in pairs)
  return order if sorted(order) == sorted(PAYOFF_KEYS) else None


def parse_payoff(content: str,
                 mode: str = "strict") -> tuple[dict[str, dict[str, float]] | None, str]:
  """Decodes and validates a payoff block's content: (bimatrix, "") or (None, reason).

  Both modes require exactly the six keys, each an object with exactly "LLM" and "user" holding
  numbers. lenient is the paper: JSON else a Python literal, bools and NaN/inf accepted. strict:
  JSON only, no duplicate keys, no bools, finite values. Values come back as floats.
  """
  content = content.strip()
  if not content:
    return None, "payoff: empty block"
  data, reason = _load_payoff(content, mode)
  if reason:
    return None, reason
  if not isinstance(data, dict):
    return None, "payoff: not an object"
  for key in PAYOFF_KEYS:
    if key not in data:
      return None, f"payoff: missing key {key}"
  for key in data:
    if key not in PAYOFF_KEYS:
      return None, f"payoff: unexpected key {_show(key)}"
  payoff = {}
  for key in PAYOFF_KEYS:
    pair = data[key]
    if not isinstance(pair, dict):
      return None, f"payoff: {key} is not an object"
    for field in _FIELDS:
      if field not in pair:
        return None, f"payoff: {key} missing field {field}"
    for field in pair:
      if field not in _FIELDS:
        return None, f"payoff: {key} has unexpected field {_show(field)}"
    values = {}
    for field in _FIELDS:
      values[field], reason = _as_number(pair[field], f"{key}.{field}", mode)
      if reason:
        return None, reason
    payoff[key] = values
  return payoff, ""


def _lenient_format(text: str) -> str:
  """"" when the paper's FORMAT_PATTERN matches, else why not; linear time.

  The regex is a chain: `<thinking>` at 0, then some `</thinking>\\s*<payoff>`, some
  `</payoff>\\s*<analyze>`, some `</analyze>\\s*<response>`, each after the previous one, then a
  `</response>` followed by a newline or the end (MULTILINE `$`). Taking the earliest occurrence at
  each step leaves the most room for the next, so it finds a match whenever one exists, without
  the regex's polynomial backtracking over repeated tags.
  """
  if not text.startswith("<thinking>"):
    return "text before <thinking>" if "<thinking>" in text else "missing <thinking> block"
  pos = len("<thinking>")
  for (a, b), join in zip(zip(BLOCKS, BLOCKS[1:]), _JOINS):
    m = join.search(text, pos)
    if m is None:
      return f"no </{a}> followed by <{b}>"
    pos = m.end()
  end = text.find("</response>", pos)
  if end < 0:
    return "missing </response>"
  while end >= 0:
    after = end + len("</response>")
    if after == len(text) or text[after] == "\n":
      return ""
    end = text.find("</response>", after)
  return "text after </response>"


def _strict_format(text: str) -> str:
  """"" when the text is exactly the four blocks, each tag once, only whitespace around them."""
  positions = []
  for tag in BLOCKS:
    opens, closes = text.count(f"<{tag}>"), text.count(f"</{tag}>")
    if opens == 0 and closes == 0:
      return f"missing <{tag}> block"
    if opens != 1:
      return f"<{tag}> appears {opens} times"
    if closes != 1:
      return f"</{tag}> appears {closes} times"
    positions.append((text.find(f"<{tag}>"), text.find(f"</{tag}>")))
  flat = [p for pair in positions for p in pair]
  if flat != sorted(flat):
    return "blocks out of order"
  if text[:positions[0][0]].strip():
    return "text before <thinking>"
  for (a, (_, a_close)), (b, (b_open, _)) in zip(zip(BLOCKS, positions),
                                                   zip(BLOCKS[1:], positions[1:])):
    if text[a_close + len(a) + 3:b_open].strip():
      return f"text between </{a}> and <{b}>"
  if text[positions[-1][1] + len("</response>"):].strip():
    return "text after </response>"
  return ""


def chosen_key(analyze: str | None) -> str | None:
  """The last joint-strategy key named in the analysis, or None.

  The analysis first discusses the frontier, naming several keys, and the instruction asks the
  model to name its pick last, so the last key is the recommendation. A key inside a longer
  identifier (XDQ_DA, DQ_DA2) does not count.
  """
  if not analyze:
    return None
  keys = _KEY_RE.findall(analyze)
  return keys[-1] if keys else None


def parse_trace(text: str, mode: str = "strict") -> ParsedTrace:
  """Parses one completion into its blocks and validated payoff; never raises on any text.

  lenient reproduces the paper exactly (section 3 of the method reference); strict (the default)
  rejects what the paper lets through by accident: text after `</response>` on a later line,
  repeated tags, bools and NaN/inf as payoffs, and Python-literal payoffs.
  """
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
  if not isinstance(text, str):
    text = ""
  blocks = {}
  for tag in BLOCKS:
    content = extract_block(text, tag)
    if content is not None:
      blocks[tag] = content
  payoff, reason = None, ""
  if "payoff" in blocks:
    payoff, reason = parse_payoff(blocks["payoff"], mode)
  if "response" not in blocks:
    reason = "missing <response> block"
  elif "payoff" not in blocks:
    reason = "missing <payoff> block"
  valid = not reason
  if payoff is not None:
    fmt_reason = _strict_format(text) if mode == "strict" else _lenient_format(text)
    reason = reason or fmt_reason
    format_ok = not fmt_reason
  else:
    format_ok = False
  return ParsedTrace(
      text=text,
      blocks=blocks,
      payoff=payoff,
      chosen_key=chosen_key(blocks.get("analyze")),
      format_ok=format_ok,
      valid=valid,
      reason=reason,
      response=blocks.get("response", ""),
      reasoning=text.split("<response>", 1)[0],
      mode=mode,
  )
