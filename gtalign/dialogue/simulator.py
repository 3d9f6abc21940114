"""Simulated users: who answers the assistant's clarifying question in a multi-turn episode.

An episode asks its simulator only when the assistant's last response was a clarifying question
(a response that answers, DA or AQ, ends the dialogue; see `dialogue.episodes`). A simulator
gets a batch of `Ask`s and returns one reply text each (None: it failed, and the episode is left
out of the loss like a failed judge verdict).

  WorldUser   rules for the built-in world: it knows the row's hidden detail, answers a question
              about it ("I mean France. What is the capital of France?"), says it does not know
              and repeats itself for a question about anything else, and repeats its question
              when a definite question was asked back.
  HttpUser    any OpenAI-compatible server (`gtalign.serve` included) playing the user, with
              the row's hidden intent in its instructions: GTAlign's ambig_qa and abg-coqa rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
from typing import Any, Protocol, Sequence

from gtalign.data import world as world_data
from gtalign.game import behaviour
from gtalign.utils import aio
from gtalign.utils.errors import InvalidInput

# what a world reply was: the detail given, "I don't know" to a question about something else,
# the question repeated to a definite question asked back
DETAIL, UNKNOWN, REPEAT = "detail", "unknown", "repeat"


@dataclasses.dataclass(frozen=True)
class Ask:
  """One clarifying question to answer: the row, and the dialogue so far as chat messages
  (`{"role": "user" | "assistant", "content": ...}`: the user's question, then each assistant
  response and user reply; the last message is the assistant's question)."""

  row: dict[str, Any]
  messages: tuple[dict[str, str], ...]

  @property
  def question(self) -> str:
    return self.messages[-1]["content"]


@dataclasses.dataclass(frozen=True)
class Reply:
  text: str | None  # None: the simulator failed
  kind: str = ""  # world: DETAIL, UNKNOWN or REPEAT; "" elsewhere


class UserSimulator(Protocol):
  def replies(self, asks: Sequence[Ask]) -> list[Reply]:
    ...


@functools.lru_cache(maxsize=1)
def _facts_by_id() -> dict[str, world_data.Fact]:
  return {f.fact_id: f for f in world_data.facts()}


def hidden_detail(row: dict[str, Any]) -> str:
  """The detail a world row's user has in mind: what its definite question names ("France",
  "4 and 3"), left out of a vague question."""
  info = row["extra_info"]
  if info.get("detail"):  # a warm-start row names it
    return str(info["detail"])
  try:
    return world_data.named(_facts_by_id()[info["fact_id"]])
  except KeyError:
    raise InvalidInput(f"world row {row.get('row_id')!r}: extra_info['fact_id'] "
                       f"{info.get('fact_id')!r} is not a fact of the world") from None


class WorldUser:
  """The built-in world's user, by rules (see the module docstring)."""

  def replies(self, asks: Sequence[Ask]) -> list[Reply]:
    return [self.reply(a) for a in asks]

  def reply(self, ask: Ask) -> Reply:
    info = ask.row["extra_info"]
    asked = world_data.strip_lead_in(info["question"])
    if info["question_type"] == "DQ":
      return Reply(f"As I said: {asked}", REPEAT)
    slot_words = info.get("slot_words") or world_data.category_slot_words(info["category"])
    if behaviour.asks_about(ask.question, slot_words):
      return Reply(f"I mean {hidden_detail(ask.row)}. {info['single_turn_prompt']}", DETAIL)
    return Reply(f"I don't know what you mean. {asked}", UNKNOWN)


SIMULATOR_INSTRUCTION = (
    "You are playing a person who asked an AI assistant a question. What you really want to "
    "know: {intent}\nThe assistant has just asked you a clarifying question. Reply as that "
    "person, in one or two short sentences: answer the assistant's question with what you "
    "want, and do not answer your own question or mention these instructions.")


_FIRST_MEANING = re.compile(r"Meaning 0:\s*(.*?);\s*Answer 0:\s*([^\n]*)")


def intent(row: dict[str, Any]) -> str:
  """The hidden intent an LLM user is told: for an ambig_qa row with several meanings, its first
  meaning (and answer); for other rows, the question as asked, with its passage's gist."""
  info = row.get("extra_info") or {}
  truth = str((row.get("reward_model") or {}).get("ground_truth", ""))
  question = str(info.get("single_turn_prompt") or info.get("question") or "")
  meaning = _FIRST_MEANING.search(truth)
  if truth.startswith("multipleQAs###") and meaning:
    return f"{meaning.group(1).strip()} (the answer you expect: {meaning.group(2).strip()})"
  if "Question:" in question:  # abg-coqa: a passage, earlier Q&A, then the question
    return "the answer to \"" + question.rsplit("Question:", 1)[1].strip() + "\", about the " \
        "passage you were reading: " + question.split("\n", 2)[1][:300].strip()
  return question


class HttpUser:
  """An OpenAI-compatible chat server plays the user; failed requests (after `max_retries`)
  give a Reply with no text."""

  def __init__(self, base_url: str, model: str = "user", max_tokens: int = 64,
               temperature: float = 0.0, max_retries: int = 2, timeout_s: float = 60.0,
               max_concurrency: int = 16, extra_body: dict | None = None):
    self.base_url = base_url.rstrip("/")
    self.model, self.max_tokens, self.temperature = model, max_tokens, temperature
    self.max_retries, self.timeout_s = max_retries, timeout_s
    self.max_concurrency = max_concurrency
    self.extra_body = dict(extra_body or {})
    self.failures = 0

  def messages(self, ask: Ask) -> list[dict[str, str]]:
    """The simulated user's view: its instructions, then the dialogue with the roles swapped
    (its own earlier messages are the "assistant" side)."""
    swap = {"user": "assistant", "assistant": "user"}
    return ([{"role": "system", "content": SIMULATOR_INSTRUCTION.format(intent=intent(ask.row))}]
            + [{"role": swap[m["role"]], "content": m["content"]} for m in ask.messages])

  def replies(self, asks: Sequence[Ask]) -> list[Reply]:
    if not asks:
      return []
    return aio.run(self._all(list(asks)))

  async def _all(self, asks: list[Ask]) -> list[Reply]:
    import httpx  # pylint: disable=import-outside-toplevel
    sem = asyncio.Semaphore(self.max_concurrency)
    async with httpx.AsyncClient(timeout=self.timeout_s) as client:
      return await asyncio.gather(*(self._one(client, sem, a) for a in asks))

  async def _one(self, client, sem, ask: Ask) -> Reply:
    import httpx  # pylint: disable=import-outside-toplevel
    body = {"model": self.model, "messages": self.messages(ask), "max_tokens": self.max_tokens,
            "temperature": self.temperature, **self.extra_body}
    for _ in range(self.max_retries + 1):
      try:
        async with sem:
          resp = await client.post(f"{self.base_url}/chat/completions", json=body)
        if resp.status_code == 200:
          text = resp.json()["choices"][0]["message"]["content"]
          if isinstance(text, str):
            return Reply(text.strip())
      except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        pass
    self.failures += 1
    return Reply(None)



def make_simulator(spec: str, **kw) -> UserSimulator:
  """"rule" -> WorldUser; an http(s) URL -> HttpUser(base_url=spec, **kw)."""
  if spec == "rule":
    return WorldUser()
  if spec.startswith(("http://", "https://")):
    return HttpUser(spec, **kw)
  raise InvalidInput(f"rl.simulator={spec!r}: expected 'rule' or an http(s):// base URL of an "
                     "OpenAI-compatible server")
