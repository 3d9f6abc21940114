"""parse_trace: exact reasons on hand-written traces, paper quirks, and robustness properties."""

import json
import math
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gtalign.game import trace
from gtalign.game.trace import BLOCKS, FORMAT_PATTERN, PAYOFF_KEYS, parse_trace

import reference_payoff

PAYOFF = reference_payoff.PAYOFF


def make(payoff=None, *, thinking="DQ: the question is clear.", analyze=None,
         response="Paris.", sep="\n") -> str:
  payoff = json.dumps(PAYOFF) if payoff is None else payoff
  analyze = "Frontier: DQ_DA. DQ_CQ and VQ_CQ are dominated. Chosen: DQ_DA" if analyze is None \
      else analyze
  return sep.join([f"<thinking>{thinking}</thinking>", f"<payoff>{payoff}</payoff>",
                   f"<analyze>{analyze}</analyze>", f"<response>{response}</response>"])


def with_value(key, field, value) -> str:
  """The reference payoff as JSON text with one value replaced by a raw JSON token."""
  d = json.loads(json.dumps(PAYOFF))
  d[key][field] = "@@"
  return json.dumps(d).replace('"@@"', value)


VALID = make()


# ---------------------------------------------------------------- hand-written, both modes


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_valid_trace(mode):
  t = parse_trace(VALID, mode)
  assert (t.valid, t.format_ok, t.reason, t.mode) == (True, True, "", mode)
  assert t.payoff == PAYOFF
  assert t.blocks["thinking"] == "DQ: the question is clear."
  assert t.response == "Paris."
  assert t.chosen_key == "DQ_DA"
  assert t.reasoning == VALID.split("<response>")[0]
  assert t.reasoning.endswith("</analyze>\n")


# (text, strict (valid, format_ok, reason), lenient (valid, format_ok, reason))
CASES = {
    "no response": (make().split("<response>")[0],
                    (False, False, "missing <response> block"),
                    (False, False, "missing <response> block")),
    "unclosed response": (make().replace("</response>", ""),
                          (False, False, "missing <response> block"),
                          (False, False, "missing <response> block")),
    "no payoff": (make().replace("<payoff>", "<pay>"),
                  (False, False, "missing <payoff> block"),
                  (False, False, "missing <payoff> block")),
    "missing key": (make(json.dumps({k: v for k, v in PAYOFF.items() if k != "VQ_DA"})),
                    (False, False, "payoff: missing key VQ_DA"),
                    (False, False, "payoff: missing key VQ_DA")),
    "extra key": (make(json.dumps({**PAYOFF, "XX_YY": {"LLM": 1, "user": 1}})),
                  (False, False, "payoff: unexpected key 'XX_YY'"),
                  (False, False, "payoff: unexpected key 'XX_YY'")),
    "missing field": (make(json.dumps({**PAYOFF, "DQ_AQ": {"LLM": 1}})),
                      (False, False, "payoff: DQ_AQ missing field user"),
                      (False, False, "payoff: DQ_AQ missing field user")),
    "extra field": (make(json.dumps({**PAYOFF, "DQ_AQ": {"LLM": 1, "user": 1, "x": 0}})),
                    (False, False, "payoff: DQ_AQ has unexpected field 'x'"),
                    (False, False, "payoff: DQ_AQ has unexpected field 'x'")),
    "value not object": (make(json.dumps({**PAYOFF, "VQ_CQ": [1, 2]})),
                         (False, False, "payoff: VQ_CQ is not an object"),
                         (False, False, "payoff: VQ_CQ is not an object")),
    "empty payoff": (make(" \n "),
                     (False, False, "payoff: empty block"),
                     (False, False, "payoff: empty block")),
    "payoff a list": (make("[1, 2]"),
                      (False, False, "payoff: not an object"),
                      (False, False, "payoff: not an object")),
    "string value": (make(with_value("DQ_AQ", "LLM", '"2"')),
                     (False, False, "payoff: DQ_AQ.LLM is not a number"),
                     (False, False, "payoff: DQ_AQ.LLM is not a number")),
    "garbage payoff": (make("{DQ_AQ: 1"),
                       (False, False, "payoff: not valid JSON"),
                       (False, False, "payoff: neither JSON nor a Python literal")),
    # response present, payoff valid, but the format is off: rewards still computed (valid)
    "text before thinking": ("Sure! " + VALID,
                             (True, False, "text before <thinking>"),
                             (True, False, "text before <thinking>")),
    "whitespace before thinking": ("  \n" + VALID,
                                   (True, True, ""),  # strict tolerates whitespace
                                   (True, False, "text before <thinking>")),  # ^ is literal
    "text after response": (VALID + " Hope this helps!",
                            (True, False, "text after </response>"),
                            (True, False, "text after </response>")),
    "trailing newline": (VALID + "\n", (True, True, ""), (True, True, "")),
    "missing analyze": (make().replace("<analyze>", "").replace("</analyze>", ""),
                        (True, False, "missing <analyze> block"),
                        (True, False, "no </payoff> followed by <analyze>")),
    "text between blocks": (make(sep=" so "),
                            (True, False, "text between </thinking> and <payoff>"),
                            (True, False, "no </thinking> followed by <payoff>")),
    "out of order": ("<thinking>a</thinking><analyze>DQ_DA</analyze><payoff>" + json.dumps(PAYOFF)
                     + "</payoff><response>b</response>",
                     (True, False, "blocks out of order"),
                     (True, False, "no </thinking> followed by <payoff>")),
    "no thinking": (VALID.split("\n", 1)[1],
                    (True, False, "missing <thinking> block"),
                    (True, False, "missing <thinking> block")),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_hand_written_cases(name, mode):
  text, strict, lenient = CASES[name]
  t = parse_trace(text, mode)
  assert (t.valid, t.format_ok, t.reason) == (strict if mode == "strict" else lenient)
  assert (t.payoff is None) == (t.reason.startswith("payoff:")
                                or t.reason == "missing <payoff> block")


# ---------------------------------------------------------------- paper quirks: lenient only

QUIRKS = {  # text -> the reason strict mode gives; lenient accepts each as valid and format_ok
    "text on a line after </response>": (VALID + "\nP.S. more text", "text after </response>"),
    "bool payoff": (make(with_value("DQ_AQ", "LLM", "true")),
                    "payoff: DQ_AQ.LLM is a bool, not a number"),
    "NaN payoff": (make(with_value("DQ_AQ", "user", "NaN")), "payoff: DQ_AQ.user is not finite"),
    "overflowing payoff": (make(with_value("VQ_DA", "user", "1e999")),
                           "payoff: VQ_DA.user is not finite"),
    "python dict payoff": (make(repr(PAYOFF)), "payoff: not valid JSON"),
    "curly quotes": (make(json.dumps(PAYOFF).replace('"', "\u201c", 1).replace('"', "\u201d", 1)),
                     "payoff: not valid JSON"),
    "curly single quotes": (make(repr(PAYOFF).replace("'", "\u2018")), "payoff: not valid JSON"),
    "duplicate key": (make(json.dumps(PAYOFF)[:-1] + ', "DQ_AQ": {"LLM": 0, "user": 0}}'),
                      "payoff: duplicate key DQ_AQ"),
    "repeated tag": (make(response="Use <thinking> tags."), "<thinking> appears 2 times"),
}


@pytest.mark.parametrize("name", sorted(QUIRKS))
def test_paper_quirks_pass_lenient_fail_strict(name):
  text, strict_reason = QUIRKS[name]
  lenient = parse_trace(text, "lenient")
  assert (lenient.valid, lenient.format_ok, lenient.reason) == (True, True, "")
  strict = parse_trace(text, "strict")
  assert strict.reason == strict_reason
  assert not strict.format_ok


def test_lenient_values():
  t = parse_trace(make(with_value("DQ_AQ", "LLM", "true")), "lenient")
  assert t.payoff["DQ_AQ"]["LLM"] == 1.0 and isinstance(t.payoff["DQ_AQ"]["LLM"], float)
  t = parse_trace(make(with_value("DQ_AQ", "user", "NaN")), "lenient")
  assert math.isnan(t.payoff["DQ_AQ"]["user"])
  t = parse_trace(make(repr(PAYOFF).replace("2.2", str(10**400))), "lenient")  # int > float max
  assert t.valid and t.payoff["DQ_AQ"]["LLM"] == math.inf
  padded = repr(PAYOFF).replace(", 'DQ_CQ'", "," + " " * 20_000 + "'DQ_CQ'")
  t = parse_trace(make(padded), "lenient")
  assert t.reason.startswith("payoff: not JSON, and too long")


def test_chosen_key_is_the_last_key_named():
  assert parse_trace(make(analyze="VQ_CQ is dominated by DQ_CQ. Chosen: DQ_AQ")).chosen_key \
      == "DQ_AQ"
  assert parse_trace(make(analyze="Pick `VQ_DA`.")).chosen_key == "VQ_DA"
  assert parse_trace(make(analyze="no key here, XDQ_DA nor DQ_DAY")).chosen_key is None
  assert parse_trace(make(analyze="前沿为DQ_CQ，选择DQ_DA。")).chosen_key == "DQ_DA"
  assert parse_trace(make().replace("<analyze>", "<analysis>")).chosen_key is None


def test_blocks_are_first_occurrence_stripped():
  t = parse_trace("<response> a </response><response>b</response>", "lenient")
  assert t.blocks == {"response": "a"} and t.response == "a"
  assert t.reasoning == ""
  assert parse_trace("no tags at all").reasoning == "no tags at all"


def test_bad_mode_and_non_string():
  with pytest.raises(ValueError):
    parse_trace(VALID, "loose")
  t = parse_trace(None)  # type: ignore[arg-type]
  assert not t.valid and t.reason == "missing <response> block"


def test_adversarial_inputs_are_fast():
  # the paper's regex backtracks over every combination of repeated closing tags (O(k^4) here)
  unit = "</thinking><payoff>" + json.dumps(PAYOFF) + "</payoff><analyze></analyze>" \
      "<response></response>x"
  texts = ["<thinking>" + unit * 3000, "<thinking>" * 200_000, "\U0001F600\u202e\x00" * 300_000,
           "<payoff>" + "[" * 100_000, "<payoff>" + "{'a':" * 3000 + "</payoff><response>"
           "</response>"]
  start = time.perf_counter()
  for text in texts:
    for mode in trace.MODES:
      assert not parse_trace(text, mode).format_ok
  assert time.perf_counter() - start < 5.0


# ---------------------------------------------------------------- properties


def independent_strict_ok(text: str) -> bool:
  """The strict rules restated from the spec, without the parser's helpers."""
  tags = [f"<{b}>" for b in BLOCKS] + [f"</{b}>" for b in BLOCKS]
  if any(text.count(tag) != 1 for tag in tags):
    return False
  m = re.fullmatch(r"\s*<thinking>.*?</thinking>\s*<payoff>(.*?)</payoff>\s*<analyze>.*?"
                   r"</analyze>\s*<response>.*?</response>\s*", text, re.DOTALL)
  if m is None:
    return False

  def pairs_hook(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
      raise ValueError("duplicate")
    return dict(pairs)

  try:
    payoff = json.loads(m.group(1), object_pairs_hook=pairs_hook)
  except ValueError:
    return False
  if not isinstance(payoff, dict) or sorted(payoff) != sorted(PAYOFF_KEYS):
    return False
  for pair in payoff.values():
    if not isinstance(pair, dict) or sorted(pair) != ["LLM", "user"]:
      return False
    for v in pair.values():
      if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
      try:
        if not math.isfinite(v):
          return False
      except OverflowError:
        return False
  return True


odd_values = st.one_of(
    st.sampled_from([True, False, math.nan, math.inf, -math.inf, 10**400, "1", None, [1]]),
    st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.booleans(),
    st.integers(min_value=10**300, max_value=10**320), st.sampled_from([1e308, -0.0, 5e-324]),
    st.text(max_size=3), st.none(), st.lists(st.integers(), max_size=2))
good_values = st.one_of(st.floats(-5, 5), st.integers(-5, 5))
random_pairs = st.one_of(
    st.fixed_dictionaries({"LLM": odd_values, "user": odd_values}),
    st.dictionaries(st.sampled_from(["LLM", "user", "llm", "x"]), odd_values, max_size=3),
    odd_values)


@st.composite
def payoff_objects(draw):
  """A valid matrix, the same with one defect, or something random."""
  kind = draw(st.sampled_from(["valid", "defect", "defect", "random"]))
  if kind == "random":
    return draw(st.one_of(
        st.fixed_dictionaries({k: random_pairs for k in PAYOFF_KEYS}),
        st.dictionaries(st.sampled_from(PAYOFF_KEYS + ("XX_YY", "dq_aq")), random_pairs,
                        max_size=7),
        st.lists(odd_values, max_size=3)))
  obj = {k: {"LLM": draw(good_values), "user": draw(good_values)} for k in PAYOFF_KEYS}
  if kind == "defect":
    key, field = draw(st.sampled_from(PAYOFF_KEYS)), draw(st.sampled_from(["LLM", "user"]))
    defect = draw(st.sampled_from(["value", "value", "value", "drop key", "add key", "drop field",
                                   "add field"]))
    if defect == "value":
      obj[key][field] = draw(odd_values)
    elif defect == "drop key":
      del obj[key]
    elif defect == "add key":
      obj["XX_YY"] = {"LLM": 1, "user": 1}
    elif defect == "drop field":
      del obj[key][field]
    else:
      obj[key]["x"] = 1
  return obj


@st.composite
def payoff_texts(draw):
  obj = draw(payoff_objects())
  style = draw(st.sampled_from(["json", "json", "json", "repr", "curly", "nested", "truncated",
                                "dup"]))
  text = json.dumps(obj)
  if style == "dup" and isinstance(obj, dict) and obj:
    return text[:-1] + ', "DQ_AQ": {"LLM": 1.0, "user": 1.0}}'
  if style == "repr":
    return repr(obj)
  if style == "curly":
    return text.replace('"', draw(st.sampled_from(["\u201c", "\u201d"])))
  if style == "nested":
    return "<payoff>" + text + "</payoff>"
  if style == "truncated":
    return text[:draw(st.integers(0, len(text)))]
  return text


tags = st.sampled_from([f"<{b}>" for b in BLOCKS] + [f"</{b}>" for b in BLOCKS])
spaces = st.text(alphabet=" \t\n\r\x0b\x0c\xa0\u2028\u3000", max_size=3)
junk = st.one_of(st.sampled_from(["x", " so ", "\nP.S.", "\n\nmore", "</", "DQ_DA"]),
                 st.text(max_size=4))
pieces = st.one_of(tags, spaces, st.text(max_size=8), payoff_texts(),
                   st.sampled_from(["DQ_DA", "VQ_CQ", "<", ">", "</", "<response", "\n"]))


@st.composite
def near_traces(draw):
  """Well-formed traces with random bodies and payoff, plus at most one structural defect."""
  bodies = [draw(payoff_texts()) if b == "payoff" else draw(st.text(max_size=10))
            for b in BLOCKS]
  gaps = [draw(spaces) for _ in range(len(BLOCKS) + 1)]
  order = list(range(len(BLOCKS)))
  defect = draw(st.sampled_from(["none", "none", "gap", "gap", "swap", "tag in body", "drop tag",
                                 "splice"]))
  if defect == "gap":
    i = draw(st.integers(0, len(gaps) - 1))
    gaps[i] += draw(junk)
  elif defect == "swap":
    i = draw(st.integers(0, len(BLOCKS) - 2))
    order[i], order[i + 1] = order[i + 1], order[i]
  elif defect == "tag in body":
    i = draw(st.integers(0, len(BLOCKS) - 1))
    bodies[i] += draw(tags)
  parts = [gaps[0]]
  for i, j in enumerate(order):
    parts += [f"<{BLOCKS[j]}>", bodies[j], f"</{BLOCKS[j]}>", gaps[i + 1]]
  if defect == "drop tag":
    del parts[draw(st.sampled_from([1 + 4 * i + d for i in range(len(BLOCKS)) for d in (0, 2)]))]
  elif defect == "splice":
    parts.insert(draw(st.integers(0, len(parts))), draw(pieces))
  return "".join(parts)


def assemble(bodies, gaps, order=(0, 1, 2, 3)) -> list[str]:
  parts = [gaps[0]]
  for i, j in enumerate(order):
    parts += [f"<{BLOCKS[j]}>", bodies[j], f"</{BLOCKS[j]}>", gaps[i + 1]]
  return parts


def single_defects() -> list[str]:
  """Every one-step departure from a valid trace: gaps, order, tags, and each payoff value."""
  bodies, gaps = ["DQ: clear.", json.dumps(PAYOFF), "Chosen: DQ_DA", "Paris."], [""] * 5
  texts = ["".join(assemble(bodies, gaps))]
  for i in range(5):
    for extra in [" ", "\n", "\u3000", "x", " so ", "\nP.S.", "\n\nmore", "</", "DQ_DA"]:
      texts.append("".join(assemble(bodies, gaps[:i] + [extra] + gaps[i + 1:])))
  for i in range(3):
    order = [0, 1, 2, 3]
    order[i], order[i + 1] = order[i + 1], order[i]
    texts.append("".join(assemble(bodies, gaps, order)))
  all_tags = [f"<{b}>" for b in BLOCKS] + [f"</{b}>" for b in BLOCKS]
  for i in range(4):
    for tag in all_tags:
      texts.append("".join(assemble(bodies[:i] + [bodies[i] + tag] + bodies[i + 1:], gaps)))
  for drop in range(1, 17, 2):
    parts = assemble(bodies, gaps)
    texts.append("".join(parts[:drop] + parts[drop + 1:]))
  for key in PAYOFF_KEYS:
    for field in ("LLM", "user"):
      for token in ["true", "false", "null", "NaN", "Infinity", "-Infinity", "1e999", "-1e999",
                    '"1"', "[1]", "{}", "1" * 400, "0", "-0.0", "5e-324", "1e308"]:
        texts.append(make(with_value(key, field, token), sep=""))
    texts.append(make(json.dumps({k: v for k, v in PAYOFF.items() if k != key})))
    texts.append(make(json.dumps({**PAYOFF, key: {"LLM": 1}})))
    texts.append(make(json.dumps({**PAYOFF, key: {"LLM": 1, "user": 2, "x": 3}})))
    texts.append(make(json.dumps(PAYOFF)[:-1] + f', "{key}": {{"LLM": 0, "user": 0}}}}'))
  texts += [make(repr(PAYOFF)), make(json.dumps(PAYOFF).replace('"', "\u201c")),
            make(json.dumps({**PAYOFF, "XX_YY": {"LLM": 1, "user": 1}}))]
  return texts


def test_every_single_defect_matches_the_rules():
  texts = single_defects()
  assert len(texts) > 300
  accepted = 0
  for text in texts:
    strict = parse_trace(text, "strict")
    assert (strict.valid and strict.format_ok) == independent_strict_ok(text), text
    accepted += strict.valid and strict.format_ok
    paper = re.match(FORMAT_PATTERN, text, re.DOTALL | re.MULTILINE) is not None
    assert (trace._lenient_format(text) == "") == paper, text
  assert 20 < accepted < len(texts) - 200  # both outcomes are exercised


any_trace = st.one_of(st.text(), st.lists(pieces, max_size=12).map("".join), near_traces(),
                      near_traces(), near_traces())


@settings(max_examples=300, deadline=None)
@given(text=any_trace)
def test_never_raises_and_strict_acceptance_is_exact(text):
  strict = parse_trace(text, "strict")
  lenient = parse_trace(text, "lenient")
  assert strict.valid == (strict.payoff is not None and "response" in strict.blocks)
  assert lenient.valid == (lenient.payoff is not None and "response" in lenient.blocks)
  assert (strict.reason == "") == (strict.valid and strict.format_ok)
  assert (lenient.reason == "") == (lenient.valid and lenient.format_ok)
  # strict accepts exactly what the rules allow, and anything it accepts lenient reads too
  assert (strict.valid and strict.format_ok) == independent_strict_ok(text)
  if strict.valid:
    assert lenient.valid
    assert all(math.isfinite(v) for pair in strict.payoff.values() for v in pair.values())


@settings(max_examples=300, deadline=None)
@given(payoff=payoff_texts(), gap=st.one_of(spaces, junk))
def test_strict_payoff_acceptance_is_exact(payoff, gap):
  text = make(payoff) + gap
  t = parse_trace(text, "strict")
  assert (t.valid and t.format_ok) == independent_strict_ok(text)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.lists(pieces, max_size=10).map("".join), near_traces(), near_traces()))
def test_lenient_format_equals_the_paper_regex(text):
  paper = re.match(FORMAT_PATTERN, text, re.DOTALL | re.MULTILINE) is not None
  assert (trace._lenient_format(text) == "") == paper
  t = parse_trace(text, "lenient")
  assert t.format_ok == (paper and t.payoff is not None)
