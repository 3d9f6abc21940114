"""parse_trace at scale: over 10,000 seeded texts (valid traces, near-misses of the four-block
format and of the payoff JSON, random bytes, multi-megabyte inputs) never raise, give the
documented ParsedTrace, and parse in linear time.

The corpus is built deterministically from one seed, so a failure names a text that a rerun
reproduces; `pytest -s` prints the corpus size and the per-text parse times.
"""

import collections
import dataclasses
import functools
import gc
import json
import math
import random
import re
import statistics
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gtalign.game import payoff as payoff_lib
from gtalign.game import trace
from gtalign.game.trace import BLOCKS, FORMAT_PATTERN, MODES, PAYOFF_KEYS, ParsedTrace, parse_trace

import test_game_trace

SEED = 20251102
MB = 1 << 20
TAGS = tuple(f"<{b}>" for b in BLOCKS) + tuple(f"</{b}>" for b in BLOCKS)
# Body text: no "_" (so no joint-strategy key appears by accident) and no tag survives the
# redraw in `_body`; "<", ">" and "/" are in so that bodies hold tag-like fragments.
_POOL = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789     .,;:!?'\"()[]{}"
         "\n\t<>/=-+*#é中文😀\u200b\u00a0\u202e")
_GAPS = ("", "", " ", "\n", "\n\n", "\t", " \n ", "\r\n", "\u3000", "\u00a0\n")
_NUMBERS = tuple(range(-10, 11)) + (0.5, -1.5, 2.2, 3.1, 4.3, 1e-3, 7.25, -0.0, 1e10)


@dataclasses.dataclass(frozen=True)
class Case:
  kind: str  # the generator that made it, for failure messages and the size report
  text: object  # a str, except for the few non-str inputs
  expected: dict | None = None  # for well-formed traces: what strict parsing must return


# ---------------------------------------------------------------- valid traces


def _body(rng: random.Random, max_len: int = 40) -> str:
  while True:
    s = "".join(rng.choice(_POOL) for _ in range(rng.randint(0, max_len)))
    if not any(tag in s for tag in TAGS):
      return s


def _payoff_obj(rng: random.Random) -> dict:
  keys = list(PAYOFF_KEYS)
  rng.shuffle(keys)  # key order is free
  return {k: {"LLM": rng.choice(_NUMBERS), "user": rng.choice(_NUMBERS)} for k in keys}


def _payoff_text(rng: random.Random, obj) -> str:
  style = rng.randrange(4)
  if style == 0:
    return json.dumps(obj)
  if style == 1:
    return json.dumps(obj, indent=rng.choice([0, 2, "\t"]))
  if style == 2:
    return json.dumps(obj, separators=(",", ":"))
  return " \n" + json.dumps(obj, ensure_ascii=False) + "\n "


def _parts(bodies, gaps, order=(0, 1, 2, 3)) -> list[str]:
  """[gap0, <a>, body, </a>, gap1, ...]: tags at 1 + 4i and 3 + 4i, bodies at 2 + 4i."""
  parts = [gaps[0]]
  for i, j in enumerate(order):
    parts += [f"<{BLOCKS[j]}>", bodies[j], f"</{BLOCKS[j]}>", gaps[i + 1]]
  return parts


def _valid(rng: random.Random) -> tuple[list[str], dict]:
  """Parts of a well-formed trace and what strict parsing must return for it."""
  obj = _payoff_obj(rng)
  key = rng.choice(PAYOFF_KEYS)
  others = rng.sample(PAYOFF_KEYS, 2)
  analyze = rng.choice([f"{_body(rng)} Frontier: {others[0]}, {others[1]}. Chosen: {key}",
                        f"{key}", f"选择{key}。", _body(rng)])
  chosen = key if key in analyze else None
  bodies = [_body(rng), _payoff_text(rng, obj), analyze, _body(rng, 80)]
  gaps = [rng.choice(_GAPS) for _ in range(5)]
  parts = _parts(bodies, gaps)
  text = "".join(parts)
  expected = {
      "blocks": {b: s.strip() for b, s in zip(BLOCKS, bodies)},
      "payoff": {k: {f: float(v) for f, v in pair.items()} for k, pair in obj.items()},
      "chosen_key": chosen,
      "response": bodies[3].strip(),
      "reasoning": text.split("<response>", 1)[0],
  }
  return parts, expected


# ---------------------------------------------------------------- format near-misses


def _misspell(rng: random.Random, name: str) -> str:
  i = rng.randrange(len(name) - 1)
  return rng.choice([
      name[:i] + name[i + 1:],  # dropped letter
      name[:i] + rng.choice("aeiouxz") + name[i:],  # extra letter
      name[:i] + name[i + 1] + name[i] + name[i + 2:],  # swapped neighbours
      {"thinking": "think", "payoff": "payoffs", "analyze": "analysis",
       "response": "answer"}[name],
      name + "s", name.upper(), name.title(), name.swapcase(),
      "".join(c.upper() if rng.random() < 0.5 else c for c in name),
  ])


def _tag_variant(rng: random.Random, tag: str) -> str:
  """A near-miss spelling of one tag: misspelt, re-cased, with attributes or inner spaces."""
  closing = tag.startswith("</")
  name = tag.strip("</>")
  slash = "/" if closing else ""
  return rng.choice([
      f"<{slash}{_misspell(rng, name)}>",
      f"< {slash}{name}>", f"<{slash} {name}>", f"<{slash}{name} >", f"<{slash}{name}\n>",
      f"<{slash}\t{name}>", f"<{slash}{name} type=\"json\">", f"<{slash}{name} id=1>",
      f"<{name}/>", f"<{slash}{name}", f"{slash}{name}>", f"<<{slash}{name}>>",
      f"&lt;{slash}{name}&gt;", f"＜{slash}{name}＞", f"<{slash}{name}\u200b>",
      f"<{slash}{name}\x00>", f"<{slash}{name.upper()}>", f"[{slash}{name}]",
  ])


def _mutate_format(rng: random.Random, parts: list[str]) -> list[str]:
  parts = list(parts)
  tag_at = [i for i, p in enumerate(parts) if p in TAGS]
  op = rng.randrange(13)
  if op == 0 and tag_at:  # dropped tag
    del parts[rng.choice(tag_at)]
  elif op == 1 and tag_at:  # duplicated tag, anywhere
    parts.insert(rng.randrange(len(parts) + 1), parts[rng.choice(tag_at)])
  elif op == 2 and len(parts) >= 17:  # duplicated block
    i = 1 + 4 * rng.randrange(4)
    parts[rng.randrange(len(parts) + 1):0] = parts[i:i + 3]
  elif op == 3 and len(parts) >= 17:  # reordered blocks
    blocks = [parts[1 + 4 * i:4 + 4 * i] for i in range(4)]
    rng.shuffle(blocks)
    parts = [parts[0]] + [p for b, g in zip(blocks, parts[4::4]) for p in b + [g]]
  elif op == 4 and len(parts) >= 17:  # one block nested inside another's body
    i, j = rng.sample(range(4), 2)
    inner = "".join(parts[1 + 4 * j:4 + 4 * j])
    parts[2 + 4 * i] += inner
    if rng.random() < 0.5:
      parts[1 + 4 * j:4 + 4 * j] = ["", "", ""]
  elif op == 5 and tag_at:  # unclosed: a closing tag gone, maybe with everything after it
    closes = [i for i in tag_at if parts[i].startswith("</")]
    i = rng.choice(closes or tag_at)
    parts = parts[:i] if rng.random() < 0.3 else parts[:i] + parts[i + 1:]
  elif op in (6, 7) and tag_at:  # misspelt, re-cased, attributes, whitespace inside
    i = rng.choice(tag_at)
    parts[i] = _tag_variant(rng, parts[i])
  elif op == 8:  # text where only whitespace may go
    gap = rng.choice([i for i in range(0, len(parts), 4)] or [0])
    parts[gap] += rng.choice(["x", " so ", "\nP.S. more", "Sure! ", "</", "<", "DQ_DA", "\x00",
                              "\ud800", "```", "\n\n<response>again</response>"])
  elif op == 9:  # a stray tag or fragment inside a random part
    i = rng.randrange(len(parts))
    piece = rng.choice(TAGS + ("<", ">", "</", "<response", "</payoff", "<>", "</>"))
    k = rng.randint(0, len(parts[i]))
    parts[i] = parts[i][:k] + piece + parts[i][k:]
  elif op == 10:  # every tag re-cased or spaced the same way
    style = rng.choice([str.upper, str.title, lambda t: t.replace("<", "< ")])
    parts = [style(p) if p in TAGS else p for p in parts]
  elif op == 11:  # blocks glued without gaps, or spread over blank lines
    glue = rng.choice(["", "\n\n\n", " \t "])
    parts = [glue if i % 4 == 0 else p for i, p in enumerate(parts)]
  else:  # a markdown fence or a chat-template wrapper around the trace
    a, b = rng.choice([("```xml\n", "\n```"), ("<|im_start|>assistant\n", "<|im_end|>"),
                       ("<answer>", "</answer>"), ("<think>\n</think>\n", "")])
    parts = [a] + parts + [b]
  return parts


def _truncate(rng: random.Random, text: str) -> str:
  """The text cut at a random place, or at a structurally chosen one (in a tag, after it, in the
  payoff JSON, just before a closing tag)."""
  if not text:
    return text
  anchors = [m.start() for m in re.finditer(r"<|>|\{|\}|\"|:|,", text)]
  where = rng.randrange(4)
  if where == 0 or not anchors:
    k = rng.randrange(len(text) + 1)
  elif where == 1:
    k = rng.choice(anchors) + rng.choice([0, 1, 2, 3])
  elif where == 2:
    k = rng.choice(anchors)
  else:
    k = len(text) - rng.randint(1, 12)
  return text[:max(0, k)]


# ---------------------------------------------------------------- payoff near-misses

_ODD_TOKENS = ("NaN", "Infinity", "-Infinity", "nan", "inf", "-inf", '"1"', '"one"', "null",
               "true", "false", "True", "None", "[]", "{}", "[1]", "1e400", "-1e400", "1e-400",
               "1" * 20, "1" * 400, "1" * 4300, "1" * 4301, "9" * 5000, "1." + "0" * 5000,
               "1e" + "9" * 50, "0x10", "1_000", "+1", ".5", "5.", "01", "-0", "1e", "--1",
               "1/2", "2**3", '"\\ud800"', '"\x00"', '{"LLM": 1}', "1 2", "١", "１")


def _replace_value(text: str, rng: random.Random, token: str) -> str:
  """The payoff JSON with the k-th number replaced by a raw token."""
  numbers = list(re.finditer(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text))
  if not numbers:
    return text + token
  m = rng.choice(numbers)
  return text[:m.start()] + token + text[m.end():]


def _payoff_near_miss(rng: random.Random) -> str:
  obj = _payoff_obj(rng)
  key, field = rng.choice(PAYOFF_KEYS), rng.choice(["LLM", "user"])
  text = json.dumps(obj)
  op = rng.randrange(20)
  if op == 0:
    del obj[key]
  elif op == 1:
    obj[rng.choice(["XX_YY", "dq_aq", "DQ-AQ", f"{key} ", f"\u200b{key}", "Ｄ" + key[1:],
                    "DQ_AQ\x00", "\ud800"])] = {"LLM": 1, "user": 1}
  elif op == 2:
    del obj[key][field]
  elif op == 3:
    obj[key][rng.choice(["x", "llm", "User", "LLM "])] = 0
  elif op == 4:
    obj[key] = rng.choice([[1, 2], 3, "a", None, {"LLM": {"x": 1}, "user": 1}, True])
  elif op in (5, 6, 7):
    return _replace_value(text, rng, rng.choice(_ODD_TOKENS))
  elif op == 8:  # trailing commas
    return rng.choice([text[:-1] + ",}", text.replace("}", ",}", 1), text.replace("}", "},", 1)])
  elif op == 9:  # duplicate keys, outer or inner
    if rng.random() < 0.5:
      return text[:-1] + f', "{key}": {{"LLM": 0, "user": 0}}}}'
    return text.replace('"user"', '"LLM": 9, "user"', 1)
  elif op == 10:  # deep nesting of a value or of the whole object
    d = rng.choice([50, 999, 1000, 5000, 100_000])
    if rng.random() < 0.5:
      return _replace_value(text, rng, "[" * d + "1" + "]" * d)
    return '{"x":' * d + text + "}" * rng.choice([d, 0])
  elif op == 11:  # unicode, lone surrogates and NUL bytes in strings and whitespace
    return rng.choice([
        text.replace('"LLM"', '"L\u200dLM"', 1), text.replace('"user"', '"\\ud800user"', 1),
        text.replace('"LLM"', '"LLM\ud800"', 1), text.replace(" ", "\u00a0", 1),
        "\ufeff" + text, text.replace(" ", "\x00", 1), text.replace('"LLM"', '"\\u0000"', 1),
        text.replace(key, key + "\\u0000", 1), text.replace(key, "\udcff" + key, 1),
        text.replace('"', "\u201c", 2), text + "\u202e"])
  elif op == 12:  # Python literals, comments, quotes
    return rng.choice([repr(obj), repr(obj).replace("1", "True", 1), text.replace('"', "'"),
                       "// payoff\n" + text, text[:1] + "/* c */" + text[1:],
                       text.replace(":", ":\n", 3)])
  elif op == 13:  # trailing garbage, two objects, wrong top level
    return rng.choice([text + " extra", text + text, f"[{text}]", f'"{text}"', "42", "[]",
                       "{}", "null", text + "}", "{" + text])
  elif op == 14:
    return _truncate(rng, text)
  elif op == 15:  # empty and whitespace-only
    return rng.choice(["", " ", "\n\t", "\u3000", "\x00"])
  elif op == 16:  # huge but in-range numbers
    return _replace_value(text, rng, rng.choice([
        "1e308", "-1e308", "5e-324", "1.7976931348623157e308", "123456789012345678901234567890",
        "0." + "0" * 300 + "1"]))
  elif op == 17:  # bools and NaN the lenient mode accepts
    return _replace_value(text, rng, rng.choice(["true", "false", "NaN", "Infinity"]))
  elif op == 18:  # the payoff keys as a list of pairs, or transposed
    if rng.random() < 0.5:
      return json.dumps([[k, v] for k, v in obj.items()])
    return json.dumps({"LLM": {k: v["LLM"] for k, v in obj.items()},
                       "user": {k: v["user"] for k, v in obj.items()}})
  else:  # a mutation of the JSON text at a random place
    k = rng.randrange(len(text))
    return text[:k] + rng.choice(['"', "{", "}", ",", ":", "\\", "", "\n"]) + text[k + 1:]
  try:
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5)
  except UnicodeEncodeError:
    return json.dumps(obj)


# ---------------------------------------------------------------- random and huge inputs


def _random_unicode(nrng: np.random.Generator, n: int, surrogates: bool = True) -> str:
  hi = 0x110000 if nrng.random() < 0.3 else 0x800
  cps = nrng.integers(0, hi, n, dtype=np.uint32)
  if not surrogates:
    cps[(cps >= 0xD800) & (cps < 0xE000)] = 0x41
  return cps.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


def _random_bytes(nrng: np.random.Generator, n: int) -> str:
  data = nrng.integers(0, 256, n, dtype=np.uint8).tobytes()
  return data.decode(*{0: ("utf-8", "surrogateescape"), 1: ("latin-1",),
                       2: ("utf-8", "replace")}[int(nrng.integers(3))])


def _tag_soup(rng: random.Random, payoff_texts: list[str]) -> str:
  pieces = TAGS + ("<", ">", "</", "<response", "\n", " ", "DQ_DA", "VQ_CQ", "{", "}")
  out = []
  for _ in range(rng.randint(1, 14)):
    r = rng.random()
    if r < 0.5:
      out.append(rng.choice(pieces))
    elif r < 0.65:
      out.append(_tag_variant(rng, rng.choice(TAGS)))
    elif r < 0.8:
      out.append(rng.choice(payoff_texts))
    else:
      out.append(_body(rng, 10))
  return "".join(out)


def _valid_text(payoff: str, thinking: str = "t", analyze: str = "Chosen: DQ_DA",
                response: str = "r") -> str:
  return (f"<thinking>{thinking}</thinking>\n<payoff>{payoff}</payoff>\n"
          f"<analyze>{analyze}</analyze>\n<response>{response}</response>")


def _huge(nrng: np.random.Generator) -> list[Case]:
  """Multi-megabyte texts: long valid traces, repeated tags, megabyte payoff blocks, garbage."""
  obj = {k: {"LLM": 1.0, "user": 2.0} for k in PAYOFF_KEYS}
  js = json.dumps(obj)
  unit = _valid_text(js) + "x"
  big_thinking = nrng.choice(np.frombuffer(b"abc .\n", np.uint8), 2 * MB).tobytes().decode()
  valid = {  # texts that stay valid and format_ok in strict mode, with their expected payoff
      "2 MB thinking": _valid_text(js, thinking=big_thinking),
      "1 MB payoff whitespace": _valid_text(js[:1] + " " * MB + js[1:]),
      "1 MB response": _valid_text(js, response="word " * (MB // 5)),
      "300k keys in analyze": _valid_text(js, analyze="VQ_CQ, " * 150_000 + "DQ_DA " * 150_000),
  }
  cases = [Case(f"huge: {name}", text, {"payoff": obj}) for name, text in valid.items()]
  texts = {
      **{f"100k {tag}": tag * 100_000 for tag in TAGS},
      "100k <thinking> then a trace": "<thinking>" * 100_000 + _valid_text(js),
      "1 MB payoff of digits": _valid_text("1" * MB),
      "1 MB payoff of nesting": _valid_text("[" * MB),
      "1 MB payoff of deep objects": _valid_text('{"DQ_AQ":' * (MB // 9)),
      "1 MB payoff string value": _valid_text(js.replace("1.0", '"' + "a" * MB + '"', 1)),
      "1 MB payoff, unclosed": "<thinking></thinking><payoff>" + js * (MB // len(js)),
      "3 MB of traces": unit * (3 * MB // len(unit)),
      "300k </response>x": _valid_text(js) + "</response>x" * 300_000,
      "200k <thinkin near-misses": "<thinkin" * 200_000 + "</thinking>",
      "100k </thinking> + spaces": "<thinking>" + ("</thinking>" + " " * 10) * 100_000,
      "100k chains without a response": "<thinking>" + "</thinking><payoff>" * 100_000,
      "5 MB random unicode": _random_unicode(nrng, 5 * MB),
      "2 MB random bytes": _random_bytes(nrng, 2 * MB),
      "1 MB NUL": "\x00" * MB,
      "1 MB lone surrogates": "\ud800" * MB,
      "1 MB of '<'": "<" * MB,
  }
  return cases + [Case(f"huge: {name}", text) for name, text in texts.items()]


def small_cases(seed: int) -> list[Case]:
  """Every case but the multi-megabyte ones; the same list for the same seed."""
  rng, nrng = random.Random(seed), np.random.default_rng(seed)
  cases = []
  valid_parts = []
  for _ in range(2000):
    parts, expected = _valid(rng)
    valid_parts.append(parts)
    cases.append(Case("valid", "".join(parts), expected))
  payoffs = [_payoff_near_miss(rng) for _ in range(2000)]
  for p in payoffs:  # near-miss payoffs in an otherwise valid trace
    parts = list(rng.choice(valid_parts))
    parts[6] = p
    cases.append(Case("payoff near-miss", "".join(parts)))
  for _ in range(4000):  # one to three format mutations, sometimes also a bad payoff
    parts = rng.choice(valid_parts)
    if rng.random() < 0.2:
      parts = list(parts)
      parts[6] = rng.choice(payoffs)
    for _ in range(rng.choice([1, 1, 2, 3])):
      parts = _mutate_format(rng, parts)
    cases.append(Case("format near-miss", "".join(parts)))
  for _ in range(1000):
    cases.append(Case("truncated", _truncate(rng, "".join(rng.choice(valid_parts)))))
  for parts in valid_parts[:4]:  # truncation at every position of a few traces
    text = "".join(parts)
    cases += [Case("every prefix", text[:k]) for k in range(len(text))]
  for _ in range(600):
    cases.append(Case("tag soup", _tag_soup(rng, payoffs)))
  for _ in range(300):
    cases.append(Case("random unicode", _random_unicode(nrng, int(nrng.integers(0, 3000)))))
  for _ in range(300):
    cases.append(Case("random bytes", _random_bytes(nrng, int(nrng.integers(0, 3000)))))
  for _ in range(100):  # a valid trace with random junk spliced in
    text = "".join(rng.choice(valid_parts))
    k = rng.randint(0, len(text))
    cases.append(Case("spliced junk", text[:k] + _random_unicode(nrng, 20) + text[k:]))
  cases += [Case("not a str", x) for x in (None, b"<thinking>", 123, ["<response>x</response>"],
                                           bytearray(b"x"), 1.5)]
  return cases


@functools.lru_cache(maxsize=None)
def corpus() -> tuple[Case, ...]:
  return tuple(small_cases(SEED) + _huge(np.random.default_rng(SEED + 1)))


# ---------------------------------------------------------------- the checks


def check_result(t, text, mode: str) -> None:
  """The documented ParsedTrace, with its fields consistent with each other and the text."""
  assert type(t) is ParsedTrace
  text = text if isinstance(text, str) else ""
  assert (t.text is text or t.text == text == "") and t.mode == mode
  assert isinstance(t.blocks, dict) and set(t.blocks) <= set(BLOCKS)
  assert all(isinstance(v, str) and v == v.strip() for v in t.blocks.values())
  assert all(f"<{b}>" in text and f"</{b}>" in text for b in t.blocks)
  assert isinstance(t.format_ok, bool) and isinstance(t.valid, bool)
  assert isinstance(t.reason, str) and (t.reason == "") == (t.valid and t.format_ok)
  assert t.valid == (t.payoff is not None and "response" in t.blocks)
  assert not t.format_ok or t.payoff is not None
  assert t.response == t.blocks.get("response", "")
  assert t.reasoning == text.split("<response>", 1)[0]
  assert t.chosen_key is None or t.chosen_key in PAYOFF_KEYS
  assert (t.chosen_key is None) or "analyze" in t.blocks
  if t.payoff is not None:
    assert list(t.payoff) == list(PAYOFF_KEYS)
    for pair in t.payoff.values():
      assert list(pair) == ["LLM", "user"] and all(type(v) is float for v in pair.values())
      if mode == "strict":
        assert all(math.isfinite(v) for v in pair.values())
    # what the rewards do next with a parsed payoff must not raise either
    b = payoff_lib.Bimatrix.from_dict(t.payoff)
    payoff_lib.pareto_frontier(b)
    payoff_lib.distinctness(b)
    for rule in payoff_lib.SELECTORS:
      assert payoff_lib.select(b, rule) in PAYOFF_KEYS


@pytest.fixture(scope="module")
def results():
  """(case, {mode: (ParsedTrace, seconds)}) for every case, parsed once per mode.

  The collector is off while timing: a full collection over the kept results would otherwise
  land on whichever text happens to be parsing and make the max time noise.
  """
  out = []
  gc.collect()
  gc.disable()
  try:
    _parse_all(out)
  finally:
    gc.enable()
  return out


def _parse_all(out: list) -> None:
  for case in corpus():
    per_mode = {}
    for mode in MODES:
      start = time.perf_counter()
      try:
        t = parse_trace(case.text, mode)
      except Exception as e:  # pragma: no cover - the failure message is the point
        pytest.fail(f"parse_trace raised {e!r} ({case.kind}, mode {mode}, text "
                    f"{_short(case.text)})")
      per_mode[mode] = (t, time.perf_counter() - start)
    out.append((case, per_mode))


def _short(text) -> str:
  return repr(text[:300] if isinstance(text, (str, bytes)) else text) + (
      f"... ({len(text)} chars)" if isinstance(text, str) and len(text) > 300 else "")


def test_corpus_is_large_deterministic_and_has_huge_inputs():
  cases = corpus()
  assert len(cases) >= 10_000
  assert sum(isinstance(c.text, str) and len(c.text) >= MB for c in cases) >= 20
  assert max(len(c.text) for c in cases if isinstance(c.text, str)) >= 5 * MB
  again = small_cases(SEED)  # a second build gives the same texts
  assert [c.text for c in again] == [c.text for c in cases[:len(again)]]


def test_never_raises_and_returns_a_consistent_parsed_trace(results):
  for case, per_mode in results:
    for mode, (t, _) in per_mode.items():
      try:
        check_result(t, case.text, mode)
      except AssertionError as e:
        raise AssertionError(f"{case.kind}, mode {mode}: {e}; text {_short(case.text)}") from e
  report = {}
  for mode in MODES:
    times = [per_mode[mode][1] for _, per_mode in results]
    worst = max(results, key=lambda r: r[1][mode][1])[0]
    report[mode] = (statistics.median(times), max(times), worst.kind)
    assert max(times) < 10.0, (mode, worst.kind)  # measured: under 0.1 s (a 5 MB text); the
    # bound only catches a blow-up, with room for a loaded CI machine
  kinds = collections.Counter(case.kind.split(":")[0] for case, _ in results)
  print(f"\nparse_trace fuzz: {len(results)} texts ({dict(kinds)})")
  for mode, (median, worst, kind) in report.items():
    print(f"  {mode}: median {median * 1e6:.1f} us/text, max {worst * 1e3:.1f} ms ({kind})")


def test_valid_traces_parse_to_their_fields(results):
  checked = 0
  for case, per_mode in results:
    if case.expected is None:
      continue
    strict, lenient = per_mode["strict"][0], per_mode["lenient"][0]
    where = f"{case.kind}: {_short(case.text)}"
    assert (strict.valid, strict.format_ok, strict.reason) == (True, True, ""), where
    assert strict.payoff == case.expected["payoff"] and lenient.payoff == strict.payoff, where
    assert lenient.valid, where
    if "blocks" in case.expected:
      assert strict.blocks == case.expected["blocks"], where
      assert strict.chosen_key == case.expected["chosen_key"], where
      assert strict.response == case.expected["response"], where
      assert strict.reasoning == case.expected["reasoning"], where
      # lenient's format check is the paper's: no whitespace before <thinking> or after the end
      assert lenient.format_ok == (case.text.startswith("<thinking>")
                                   and re.search(r"</response>(\n.*)?\Z", case.text,
                                                 re.DOTALL) is not None)
    checked += 1
  assert checked >= 2000


def independent_strict_ok(text: str) -> bool:
  """test_game_trace's restatement of the strict rules; deep nesting is invalid JSON there too."""
  try:
    return test_game_trace.independent_strict_ok(text)
  except RecursionError:
    return False


def test_near_misses_are_judged_by_the_rules(results):
  """Strict acceptance equals the rules restated independently; lenient's format equals the
  paper's regex (where that regex is fast enough to run: short texts, few repeated tags)."""
  accepted = rejected = 0
  for case, per_mode in results:
    text = case.text
    if not isinstance(text, str) or len(text) > 20_000:
      continue
    strict, lenient = per_mode["strict"][0], per_mode["lenient"][0]
    ok = strict.valid and strict.format_ok
    assert ok == independent_strict_ok(text), f"{case.kind}: {_short(text)}"
    accepted += ok
    rejected += not ok
    if ok:
      assert lenient.valid
    if len(text) < 5000 and all(text.count(tag) <= 3 for tag in TAGS):
      paper = re.match(FORMAT_PATTERN, text, re.DOTALL | re.MULTILINE) is not None
      assert (trace._lenient_format(text) == "") == paper, f"{case.kind}: {_short(text)}"
      assert lenient.format_ok == (paper and lenient.payoff is not None)
  assert accepted > 2000 and rejected > 6000  # both outcomes are well exercised


# Any code point, lone surrogates and NUL included (st.text() leaves surrogates out by default).
_any_char = st.characters(blacklist_categories=())
_js = json.dumps({k: {"LLM": 1, "user": 2} for k in PAYOFF_KEYS})
_pieces = st.one_of(st.sampled_from(TAGS), st.text(_any_char, max_size=6),
                    st.sampled_from([_js, _js[:-1], "NaN", "\ud800", "\x00", "<", "</"]))


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(_any_char), st.lists(_pieces, max_size=12).map("".join)))
def test_any_code_points_never_raise(text):
  for mode in MODES:
    check_result(parse_trace(text, mode), text, mode)


# ---------------------------------------------------------------- linear time


def _best_time(parse, text: str, repeats: int = 3) -> float:
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    parse(text)
    best = min(best, time.perf_counter() - start)
  return best


def _growth(parse, make, n: int) -> tuple[float, list[float]]:
  """t(8n) / t(n) and the four times: about 8 when linear, 64 when quadratic."""
  times = [_best_time(parse, make(k)) for k in (n, 2 * n, 4 * n, 8 * n)]
  return times[-1] / max(times[0], 1e-5), times


_JS = json.dumps({k: {"LLM": 1.0, "user": 2.0} for k in PAYOFF_KEYS})
# name -> text of about n units; each family is timed at n, 2n, 4n and 8n
FAMILIES = {
    "<thinking> openers": lambda n: "<thinking>" * n,
    "each opener": lambda n: "".join(f"<{b}>" for b in BLOCKS) * (n // 4),
    "near-miss tags": lambda n: "<thinkin</thinkin<payof</payoff <response</respons>" * (n // 5),
    "closers and spaces": lambda n: "<thinking>" + ("</thinking>" + " " * 8) * n,
    "chains, no response": lambda n: "<thinking>" + "</thinking><payoff>" * n,
    "repeated </response>": lambda n: _valid_text(_JS) + "</response>x" * n,
    "repeated traces": lambda n: (_valid_text(_JS) + "x") * (n // 20),
    "keys in analyze": lambda n: _valid_text(_JS, analyze="DQ_DA " * n),
    "payoff padding": lambda n: _valid_text(_JS[:1] + " " * (10 * n) + _JS[1:]),
    "payoff nesting": lambda n: _valid_text("[" * (10 * n)),
    "payoff digits": lambda n: _valid_text(_JS.replace("1.0", "1." + "1" * (10 * n), 1)),
    "unclosed payoff": lambda n: "<thinking></thinking><payoff>" + "{" * (10 * n),
    "garbage": lambda n: _random_unicode(np.random.default_rng(n), 10 * n, surrogates=False),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_parse_time_is_linear(family, mode):
  ratio, times = _growth(lambda text: parse_trace(text, mode), FAMILIES[family], 25_000)
  print(f"\n{family} ({mode}): t(n..8n) = {[f'{t * 1e3:.2f} ms' for t in times]}, "
        f"ratio {ratio:.1f}")
  assert ratio < 8 * 3, (family, mode, times)


def test_the_growth_check_catches_a_quadratic_parser():
  """The regex extract_block replaced: from each unclosed <thinking> it rescans the rest."""
  regex = re.compile(r"<thinking>(.*?)</thinking>", re.DOTALL)
  ratio, times = _growth(regex.search, FAMILIES["<thinking> openers"], 400)
  assert ratio > 8 * 3, times
