"""A game turn in two phases: the trace up to `</payoff>`, the table edited, the rest continued.

The table is the model's own estimate of what each move is worth to both players; a provider may
re-price it (a pricing policy) or set it outright, and the `<analyze>` and `<response>` that
follow are written from the edited table (method reference, section 10). The continuation keeps
the model's own token ids up to the edit (`Sampler.continue_from`), so an unedited table gives
back exactly the trace one greedy generation writes.

Every caller takes this one path: `play` in process (`gtalign.sample --game --pricing`, the
notebooks, the steering metric), and the server's game extension runs the same steps
(`first_phase`, `edit_table`, `Sampler.plan`, `second_phase`, `outcome`) through its engine.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from gtalign.game import behaviour, payoff, pricing, trace
from gtalign.sampling.sampler import Sampler, SamplingConfig


@dataclasses.dataclass(frozen=True)
class Edit:
  """What happens to the table between the phases: a pricing policy with its parameters, or a
  whole table set outright (`table`), or nothing (both None)."""

  policy: str | None = None
  params: dict = dataclasses.field(default_factory=dict)
  table: payoff.Bimatrix | None = None


def first_phase(sampling: SamplingConfig) -> SamplingConfig:
  return dataclasses.replace(sampling, stop=(trace.PAYOFF_END,), include_stop_str=True)


def second_phase(sampling: SamplingConfig, max_new_tokens: int) -> SamplingConfig:
  return dataclasses.replace(sampling, stop=(trace.RESPONSE_END,), include_stop_str=True,
                             num_samples=1, max_new_tokens=max_new_tokens)


def _payoff_content(text: str) -> str:
  start = text.find("<payoff>")
  if start < 0:
    return ""
  end = text.find(trace.PAYOFF_END, start)
  return text[start + len("<payoff>"):end if end >= 0 else len(text)]


def edit_table(text: str, edit: Edit | None) -> tuple[str, dict[str, Any]]:
  """The text with its table edited, and what the edit did: the table written and its pick,
  the table after the edit and its pick, or the error that left the text unedited."""
  edit = edit or Edit()
  info: dict[str, Any] = {"policy": edit.policy, "params": edit.params,
                          "table": edit.table.to_dict() if edit.table else None,
                          "payoff_written": None, "payoff_priced": None, "error": None}
  written, reason = trace.parse_payoff(_payoff_content(text), mode="lenient")
  if written is None:
    info["error"] = reason
    return text, info
  info["payoff_written"] = written
  info["selected_written"] = payoff.select(written)
  if edit.policy is None and edit.table is None:
    return text, info
  try:
    if edit.table is not None:
      edited = pricing.edit_payoff_block(text, lambda b: edit.table)
    else:
      edited = pricing.edit_payoff_block(text, edit.policy, **edit.params)
  except ValueError as e:
    info["error"] = str(e)
    return text, info
  info["payoff_priced"], _ = trace.parse_payoff(_payoff_content(edited), mode="lenient")
  info["selected_priced"] = payoff.select(info["payoff_priced"])
  return edited, info


def response_text(text: str) -> str | None:
  """What the trace's `<response>` says (to `</response>` or, cut short, to the end), or None
  when the trace never opened one."""
  start = text.find(trace.RESPONSE_START)
  if start < 0:
    return None
  start += len(trace.RESPONSE_START)
  end = text.find(trace.RESPONSE_END, start)
  return text[start:end if end >= 0 else len(text)].strip()


def outcome(text: str, finish_reason: str) -> dict[str, Any] | None:
  """None when the trace reached `<response>`; otherwise where it stopped and why, in words a
  client can show: the last block it closed and how generation ended."""
  if response_text(text) is not None:
    return None
  closed = [b for b in trace.BLOCKS if f"</{b}>" in text]
  after = f"</{closed[-1]}>" if closed else "the start"
  why = {"eos": "the model ended its turn", "length": "the token budget ran out",
         "stop": "a stop string", "cancelled": "the request was cancelled"}.get(
             finish_reason, finish_reason)
  return {"stopped_after": after, "finish_reason": finish_reason,
          "message": f"the trace stopped after {after} without a <response> block ({why})"}


@dataclasses.dataclass
class Turn:
  """One row of `play`: the whole trace, what the edit did, and how the turn ended."""

  text: str  # the trace as continued (the edited table in it)
  info: dict[str, Any] | None  # edit_table's account; None when phase 1 never closed </payoff>
  finish_reason: str  # of the phase that ended the turn
  tokens: np.ndarray  # every completion id, both phases (the edited table re-encoded)
  prompt_index: int
  sample_index: int

  @property
  def failure(self) -> dict[str, Any] | None:
    return outcome(self.text, self.finish_reason)

  @property
  def response(self) -> str | None:
    return response_text(self.text)

  def record(self) -> dict[str, Any]:
    """The parsed trace as JSON: blocks, key, response and its action, the edit, the failure."""
    parsed = trace.parse_trace(self.text)
    response = self.response
    return {"text": self.text, "pricing": self.info, "chosen_key": parsed.chosen_key,
            "key_action": payoff.action(parsed.chosen_key) if parsed.chosen_key else None,
            "response": response,
            "action": behaviour.classify(response) if response is not None else None,
            "valid": parsed.valid, "reason": parsed.reason, "failure": self.failure}


def play(sampler: Sampler, params, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
         edit: Edit | Sequence[Edit | None] | None = None,
         prompt_indices: Sequence[int] | None = None) -> list[Turn]:
  """Plays `sampling.num_samples` turns per prompt, each within `sampling.max_new_tokens`:
  phase 1 to `</payoff>`, the table edited (`edit`, or one per prompt), phase 2 continued from
  the edited text with phase 1's own ids (prompt-major rows, as `Sampler.generate`)."""
  budget = sampling.max_new_tokens
  first = sampler.generate(params, prompts, first_phase(sampling), prompt_indices)
  edits = list(edit) if isinstance(edit, (list, tuple)) else [edit] * len(prompts)
  if len(edits) != len(prompts):
    raise ValueError(f"{len(prompts)} prompts but {len(edits)} edits")
  turns, todo = [], []
  for r, text in enumerate(first.texts):
    i = r // sampling.num_samples
    turns.append(Turn(text, None, first.finish_reasons[r], first.tokens[r],
                      int(first.prompt_index[r]), int(first.sample_index[r])))
    if first.finish_reasons[r] == "stop":
      turns[r].text, turns[r].info = edit_table(text, edits[i])
      todo.append((r, i))
  resumes = sampler.plan([turns[r].text for r, _ in todo], [first.tokens[r] for r, _ in todo])
  # the budget counts the ids kept (a token crossing </payoff> is spelled again in phase 2)
  rest = [budget - len(resume.ids) for resume in resumes]
  live = [k for k, left in enumerate(rest) if left > 0]
  for k in set(range(len(todo))) - set(live):
    turns[todo[k][0]].finish_reason = "length"
  if not live:
    return turns
  todo, resumes, rest = ([x[k] for k in live] for x in (todo, resumes, rest))
  generation = sampler.start(
      # the whole budget, whatever each row has left: one compiled program for every turn
      params, [prompts[i] for _, i in todo], second_phase(sampling, budget),
      [first.prompt_index[r] for r, _ in todo], [first.sample_index[r] for r, _ in todo],
      resumes=resumes)
  generation.advance()
  second = generation.result()
  for k, (r, _) in enumerate(todo):
    tokens, reason, text = second.tokens[k], second.finish_reasons[k], second.texts[k]
    if len(tokens) > rest[k]:  # past this row's own budget: cut there
      tokens, reason = tokens[:rest[k]], "length"
      text = generation.text(tokens, reason, row=k)
    turns[r].text += text
    turns[r].finish_reason = reason
    turns[r].tokens = np.concatenate([resumes[k].ids, tokens]).astype(np.int32)
  return turns
