"""Multi-turn game episodes, sampled together: one batched sampler call per assistant turn.

An episode is the row's prompt, then up to `max_turns` assistant turns (each a four-block game
trace), with the simulated user's reply between them. Ids are never re-encoded: each turn's
completion ids are kept as the sampler wrote them, and a user turn appends only the chat
template's ids for the reply (`user_turn_ids`). So the ids the trainer scores are the ids that
were sampled, and a user turn's ids are masked out of the loss.

A turn ends the episode when its response answers (DA or AQ), when it has no response (a trace
that does not parse, or ran out of tokens), when it is the last allowed turn, or when the
simulator failed; a clarifying question (CQ) before the last turn gets a reply. Finished
episodes drop out of the next turn's batch. Episode (i, j) of prompt i draws turn t's
randomness from (seed + TURN_SEED_STRIDE * (t - 1), prompt index i, sample index j), as a
single-episode batch would: a batched rollout equals episode-by-episode generation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from gtalign.dialogue import simulator as sim_lib
from gtalign.game import behaviour
from gtalign.game import prompt as prompt_lib
from gtalign.game import trace as trace_lib
from gtalign.sampling.sampler import SamplingConfig

TURN_SEED_STRIDE = 100_003
# how an episode ended
ANSWERED, NO_RESPONSE, TURN_LIMIT, SIMULATOR_FAILED = ("answer", "no_response", "turn_limit",
                                                        "simulator_failed")
_MARK = "\x00gtalign-turn\x00"


@dataclasses.dataclass
class Turn:
  """One assistant turn, and the user's reply to it (none when the episode ended there)."""

  tokens: np.ndarray  # the completion ids as sampled (its stop token or EOS included)
  logprobs: np.ndarray  # the sampler's, per token
  text: str
  parsed: trace_lib.ParsedTrace
  action: str  # DA | CQ | AQ | none, read from the response (game.behaviour)
  reply: str | None = None
  reply_kind: str = ""
  reply_ids: tuple[int, ...] = ()  # the user turn's template ids appended after `tokens`


@dataclasses.dataclass
class Episode:
  row: dict[str, Any]
  prompt: tuple[int, ...]
  prompt_index: int
  sample_index: int
  turns: list[Turn] = dataclasses.field(default_factory=list)
  ended: str = ""  # "" while running, else ANSWERED | NO_RESPONSE | TURN_LIMIT | ...

  def ids(self) -> list[int]:
    """Prompt and every turn so far, as fed to the sampler for the next turn."""
    return list(self.prompt) + self.completion_ids()

  def completion_ids(self) -> list[int]:
    out: list[int] = []
    for t in self.turns:
      out += [int(i) for i in t.tokens] + list(t.reply_ids)
    return out

  def assistant_mask(self) -> np.ndarray:
    """1 on the assistant's completion ids, 0 on the user turns' (float32, per completion id)."""
    return np.concatenate([np.concatenate([np.ones(len(t.tokens), np.float32),
                                           np.zeros(len(t.reply_ids), np.float32)])
                           for t in self.turns])

  def completion_logprobs(self) -> np.ndarray:
    return np.concatenate([np.concatenate([np.asarray(t.logprobs, np.float32),
                                           np.zeros(len(t.reply_ids), np.float32)])
                           for t in self.turns])

  def messages(self) -> list[dict[str, str]]:
    """The dialogue as the user saw it: their question, responses and replies."""
    info = self.row.get("extra_info") or {}
    out = [{"role": "user", "content": str(info.get("question") or
                                           info.get("single_turn_prompt") or "")}]
    for t in self.turns:
      out.append({"role": "assistant", "content": t.parsed.response or ""})
      if t.reply is not None:
        out.append({"role": "user", "content": t.reply})
    return out

  @property
  def final(self) -> Turn:
    return self.turns[-1]


def user_turn_ids(tokenizer, reply: str, after_eos: bool, style: str) -> tuple[int, ...]:
  """The ids that close the assistant's turn and give the user's reply and the assistant's cue,
  through the tokenizer's own chat template: the reply is asked as the game's instruction (in
  the run's prompt style), so every assistant turn is a four-block trace. `after_eos`: the turn
  ended with EOS, which the template's turn end would repeat."""
  messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _MARK},
              {"role": "user", "content": prompt_lib.instruction(reply, style)}]
  text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
  ids = tokenizer.encode(text.split(_MARK, 1)[1])
  if after_eos and ids and ids[0] in tokenizer.eos_ids:
    ids = ids[1:]
  return tuple(ids)


def _close_turn(episode: Episode, turn: Turn, max_turns: int, reply_to: tuple[str, ...]) -> None:
  episode.turns.append(turn)
  if turn.action in reply_to and len(episode.turns) < max_turns:
    return
  episode.ended = {"DA": ANSWERED, "AQ": ANSWERED, "CQ": TURN_LIMIT}.get(turn.action,
                                                                          NO_RESPONSE)


def _turn(tokens, logprobs, text, parse_mode: str) -> Turn:
  parsed = trace_lib.parse_trace(text, mode=parse_mode)
  action = behaviour.classify(parsed.response) if parsed.valid else behaviour.NONE
  return Turn(np.asarray(tokens, np.int32), np.asarray(logprobs, np.float32), text, parsed,
              action)


def run_episodes(sampler, params, rows: Sequence[dict], prompts: Sequence[Sequence[int]],
                 simulator: sim_lib.UserSimulator, *, max_turns: int, sampling: SamplingConfig,
                 style: str, parse_mode: str = "strict",
                 prompt_indices: Sequence[int] | None = None,
                 sample_offsets: Sequence[int] | None = None,
                 reply_to: tuple[str, ...] = ("CQ",), first=None) -> list[Episode]:
  """`sampling.num_samples` episodes per prompt (prompt-major, as `Sampler.generate` orders
  rows); each assistant turn stops at `</response>` (add it to `sampling.stop`). The user
  replies to a turn whose response does one of `reply_to` (default: asks without answering).
  `first`: the first turns already sampled with these settings (a `SampleOutput` of
  `Sampler.generate`, e.g. a held-out evaluation's greedy traces), so they are not sampled twice."""
  if max_turns < 1:
    raise ValueError(f"max_turns={max_turns}; expected >= 1")
  b = len(prompts)
  prompt_indices = np.arange(b) if prompt_indices is None else np.asarray(prompt_indices)
  sample_offsets = np.zeros(b, int) if sample_offsets is None else np.asarray(sample_offsets)
  out = first or sampler.generate(params, prompts, sampling, prompt_indices=prompt_indices,
                                  sample_offsets=sample_offsets)
  if len(out.tokens) != b * sampling.num_samples:
    raise ValueError(f"{len(out.tokens)} first turns for {b} prompts x "
                     f"{sampling.num_samples} samples")
  episodes = []
  for r in range(len(out.tokens)):
    i = r // sampling.num_samples
    episode = Episode(rows[i], tuple(int(t) for t in prompts[i]), int(out.prompt_index[r]),
                      int(out.sample_index[r]))
    _close_turn(episode, _turn(out.tokens[r], out.logprobs[r], out.texts[r], parse_mode),
                max_turns, reply_to)
    episodes.append(episode)
  tokenizer = sampler.tokenizer
  for turn in range(2, max_turns + 1):
    waiting = [e for e in episodes if not e.ended]
    if not waiting:
      break
    replies = simulator.replies([sim_lib.Ask(e.row, tuple(e.messages())) for e in waiting])
    going = []
    for e, reply in zip(waiting, replies):
      last = e.final
      if reply.text is None:
        e.ended = SIMULATOR_FAILED
        continue
      last.reply, last.reply_kind = reply.text, reply.kind
      last.reply_ids = user_turn_ids(
          tokenizer, reply.text, bool(len(last.tokens)) and int(last.tokens[-1])
          in tokenizer.eos_ids, style)
      going.append(e)
    if not going:
      break
    out = sampler.generate(
        params, [e.ids() for e in going],
        dataclasses.replace(sampling, num_samples=1,
                            seed=sampling.seed + TURN_SEED_STRIDE * (turn - 1)),
        prompt_indices=[e.prompt_index for e in going],
        sample_offsets=[e.sample_index for e in going])
    for r, e in enumerate(going):
      _close_turn(e, _turn(out.tokens[r], out.logprobs[r], out.texts[r], parse_mode),
                  max_turns, reply_to)
  return episodes


def transcript(episode: Episode) -> str:
  """The dialogue as text, one line per message (the assistant's whole trace)."""
  info = episode.row.get("extra_info") or {}
  lines = [f"user: {info.get('question') or info.get('single_turn_prompt')}"]
  for t in episode.turns:
    lines.append(f"assistant: {t.text}")
    if t.reply is not None:
      lines.append(f"user: {t.reply}")
  return "\n".join(lines)
