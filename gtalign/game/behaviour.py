"""What a `<response>` does, read from its text alone: answers (DA), asks (CQ), or both (AQ).

The key named in `<analyze>` is only what the model says it will do; evaluation and the world's
reward need what it did. A response is split into sentences; a sentence ending in "?" is a
question, and words outside questions and pleasantries ("Sure!", "Of course.") are answer
content. Questions with answer content make AQ, questions alone CQ, answer content alone DA;
an empty or content-free response is "none".
"""

from __future__ import annotations

import re

ACTIONS = ("DA", "CQ", "AQ")
NONE = "none"

_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")
_FILLER = re.compile(
    r"^(sure|certainly|of course|absolutely|okay|ok|great|good question|thanks|thank you|"
    r"happy to help|i'd be happy to help|i would be happy to help|i can help( with that)?|"
    r"let me help|no problem|hi|hello|hey)\W*$", re.I)
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def sentences(text: str) -> list[str]:
  """Sentences with their end marks; a decimal point ("2.5") does not end one."""
  text = re.sub(r"(\d)\.(\d)", r"\1<dot>\2", text.replace("\u2019", "'"))
  out = [s.strip().replace("<dot>", ".") for s in _SENTENCE.findall(text)]
  return [s for s in out if s and _WORD.search(s.lower())]


def is_question(sentence: str) -> bool:
  return sentence.rstrip(" \"')]*_").endswith("?")


def questions(text: str) -> list[str]:
  return [s for s in sentences(text) if is_question(s)]


def answer_part(text: str) -> str:
  """The response without its questions and pleasantries: what it states as an answer."""
  return " ".join(s for s in sentences(text) if not is_question(s) and not _FILLER.match(s))


def words(text: str) -> list[str]:
  return _WORD.findall(text.lower())


def classify(response: str) -> str:
  """"DA", "CQ", "AQ" or "none" for one response text."""
  asks = bool(questions(response))
  answers = bool(words(answer_part(response)))
  if asks and answers:
    return "AQ"
  if asks:
    return "CQ"
  return "DA" if answers else NONE


def asks_about(response: str, slot_words: tuple[str, ...] | list[str]) -> bool:
  """Whether one of the response's questions names the missing detail (any of `slot_words`)."""
  wanted = {w.lower() for w in slot_words}
  return any(wanted & set(words(q)) for q in questions(response))
