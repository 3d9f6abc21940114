"""Host side of a training step: prompts -> completions -> parsed traces -> judged rewards -> arrays.

Text work (decode, parse, judge) stays here, out of jitted code; what leaves is numbers: token
arrays, U, L, validity and source ids, which the jitted update turns into welfare and advantages.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np

from gtalign.evaluation import reading
from gtalign.game import behaviour
from gtalign.game.payoff import action, is_own_row_pick
from gtalign.game.trace import PAYOFF_END, PAYOFF_KEYS, PAYOFF_START, ParsedTrace, parse_trace
from gtalign.rewards import tasks


@dataclasses.dataclass
class Scored:
  """Per completion row: the trace, its reward, and the metrics reported on it."""

  parsed: list[ParsedTrace]
  results: list[tasks.RewardResult]
  judge_failed: np.ndarray  # bool [rows]

  def arrays(self) -> dict[str, np.ndarray]:
    return {
        "user": np.asarray([r.user for r in self.results], np.float32),
        "llm": np.asarray([r.llm for r in self.results], np.float32),
        "welfare": np.asarray([r.score for r in self.results], np.float32),
        "format_ok": np.asarray([p.format_ok for p in self.parsed], np.float32),
        "valid": np.asarray([p.valid for p in self.parsed], np.float32),
    }


def score_rows(rows: Sequence[dict[str, Any]], texts: Sequence[str], judge, *, variant: str,
               parse_mode: str, on_judge_failure: str,
               world_consistency: float = tasks.world_rewards.DEFAULT_CONSISTENCY,
               world_misread: float = tasks.world_rewards.DEFAULT_MISREAD,
               world_unpriced: float = tasks.world_rewards.DEFAULT_UNPRICED,
               world_hedge: float = tasks.world_rewards.DEFAULT_HEDGE) -> Scored:
  """Parses every text and scores it against its row, with one batched judge call."""
  parsed = [parse_trace(t, mode=parse_mode) for t in texts]
  requests = [tasks.judge_requests(row, p, variant=variant) for row, p in zip(rows, parsed)]
  flat = [r for reqs in requests for r in reqs]
  verdicts = judge.score(flat) if flat else []
  results, at = [], 0
  for row, p, reqs in zip(rows, parsed, requests):
    results.append(tasks.reward(row, p, verdicts[at:at + len(reqs)], variant=variant,
                                on_judge_failure=on_judge_failure,
                                world_consistency=world_consistency,
                                world_misread=world_misread,
                                world_unpriced=world_unpriced, world_hedge=world_hedge))
    at += len(reqs)
  failed = np.asarray([r.judge_failed for r in results], bool)
  return Scored(parsed, results, failed)


def unjudged_as_nan(arrays: dict[str, np.ndarray], judge_failed: np.ndarray
                    ) -> dict[str, np.ndarray]:
  """U, L and welfare set to NaN where the judge failed: such a sample has no score, and a mean
  over samples (the step's metrics, a held-out table) must leave it out, not count it as 0."""
  out = dict(arrays)
  for key in ("user", "llm", "welfare"):
    out[key] = np.where(judge_failed, np.nan, arrays[key]).astype(np.float32)
  return out


def behaviour_arrays(rows: Sequence[dict[str, Any]], scored: Scored, tokenizer
                     ) -> dict[str, np.ndarray]:
  """Per row: what the response did, against the question type, and how the trace hangs together.

  NaN marks a row a metric does not apply to (a DQ row has no CQ-rate on VQ), so per-type means
  come out of `np.nanmean` and a constant policy cannot score above 0.5 balanced accuracy.
  The action is read from the response text (`game.behaviour`), never from the key.
  """
  nan = float("nan")
  out: dict[str, list[float]] = {k: [] for k in BEHAVIOUR_KEYS}
  responses, reasonings = [], []
  for row, parsed, result in zip(rows, scored.parsed, scored.results):
    kind = (row.get("extra_info") or {}).get("question_type")
    did = behaviour.classify(parsed.response) if parsed.valid else behaviour.NONE
    key = parsed.chosen_key if parsed.valid else None
    out["dq"].append({"DQ": 1.0, "VQ": 0.0}.get(kind, nan))
    out["da_on_dq"].append(float(did == "DA") if kind == "DQ" else nan)
    out["cq_on_vq"].append(float(did == "CQ") if kind == "VQ" else nan)
    out["aq_rate"].append(float(did == "AQ"))
    out["dq_correct"].append(result.components.get("correct", 0.0) if kind == "DQ" else nan)
    out["action_matches_key"].append(float(key is not None and did == action(key)))
    # the pick of the row the key is in, the type the model read (`<analyze>` scans that row)
    out["key_is_selected"].append(float(is_own_row_pick(parsed.payoff, key)))
    responses.append(parsed.response)
    reasonings.append(parsed.reasoning)
    got = reading.read_type(reading.thinking(parsed.text))
    out["read_dq"].append(float(got == "DQ") if kind == "DQ" else nan)
    out["read_vq"].append(float(got == "VQ") if kind == "VQ" else nan)
  arrays = {k: np.asarray(v, np.float64) for k, v in out.items()}
  arrays["response_tokens"] = np.asarray([len(t) for t in tokenizer.encode_batch(responses)],
                                         np.float64)
  arrays["reasoning_tokens"] = np.asarray([len(t) for t in tokenizer.encode_batch(reasonings)],
                                          np.float64)
  return arrays


def read_right(rows: Sequence[dict[str, Any]], texts: Sequence[str]
               ) -> tuple[np.ndarray, np.ndarray]:
  """(1 where a completion's `<thinking>` names its question's type, 0 elsewhere; 1 where the
  row has a type to name (the world's), 0 where it has none), float32 per row."""
  kinds = [(row.get("extra_info") or {}).get("question_type") for row in rows]
  known = np.asarray([k in ("DQ", "VQ") for k in kinds], np.float32)
  right = np.asarray([k in ("DQ", "VQ") and reading.read_type(reading.thinking(t)) == k
                      for k, t in zip(kinds, texts)], np.float32)
  return right, known


def paper_arrays(rows: Sequence[dict[str, Any]], scored: Scored, texts: Sequence[str],
                 tokens: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
  """Per row: the answer score, and the completion's, response's and reasoning's lengths in
  characters, with the completion's in tokens: the paper's efficiency metrics (answers per 1k
  tokens or characters).

  The answer score is the task's `answer_reward` as the original logs it (an invalid trace 0,
  a judge failure NaN); on the world, whose answer term is shaped (a wrong answer earns part of a
  right one), it is whether the move was done right instead: a definite question answered
  correctly, a vague one asked about its missing detail.
  """
  answer = []
  for row, r in zip(rows, scored.results):
    if r.judge_failed:
      answer.append(np.nan)
    elif row.get("data_source") == "world":
      answer.append(max(r.components.get("correct", 0.0), r.components.get("asks_missing", 0.0)))
    else:
      answer.append(r.components.get("answer_reward", 0.0))
  return {"answer": np.asarray(answer, np.float64),
          "completion_tokens": np.asarray([len(t) for t in tokens], np.float64),
          "completion_chars": np.asarray([len(t) for t in texts], np.float64),
          "response_chars": np.asarray([len(p.response or "") for p in scored.parsed],
                                       np.float64),
          "reasoning_chars": np.asarray([len(p.reasoning or "") for p in scored.parsed],
                                        np.float64)}


BEHAVIOUR_KEYS = ("dq", "da_on_dq", "cq_on_vq", "aq_rate", "dq_correct", "action_matches_key",
                  "key_is_selected", "read_dq", "read_vq")


def pad_length(n: int, multiple: int = 64) -> int:
  """Lengths round up to a multiple, so the update compiles for a few shapes only."""
  return max(multiple, -(-n // multiple) * multiple)


def sequence_shape(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                   multiple: int = 64, window_multiple: int = 32) -> tuple[int, int]:
  """(width, window) that `sequence_batch` pads these rows to: rounded up, so the update
  compiles for a few shapes only, and wide enough for every row's completion window."""
  width = pad_length(max(len(p) + len(c) for p, c in zip(prompts, completions)) - 1, multiple)
  window = pad_length(max(len(c) for c in completions), window_multiple)
  # the window may run past the sequence end: widen so its gather indices stay in range
  return max(width, max(len(p) - 1 + window for p in prompts)), window


def sequence_batch(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                   pad_id: int, shape: tuple[int, int] | None = None, multiple: int = 64,
                   window_multiple: int = 32) -> dict[str, np.ndarray]:
  """Right-padded (prompt + completion) rows, with targets in a completion window.

  The model reads `inputs_bt` (positions from 0, like the sampler's for an unpadded prompt);
  log-probs are needed only for completion tokens, so targets live in a window of C slots per
  row: slot c predicts completion token c from the hidden state at `window_start_b + c`, where
  `window_start_b` is the index of the prompt's last token. `loss_mask_bc` marks real tokens.
  `shape` = (width, window) pads further, e.g. to sizes agreed by all processes.
  """
  need = sequence_shape(prompts, completions, multiple, window_multiple)
  width, window = need if shape is None else shape
  if width < need[0] or window < need[1]:
    raise ValueError(f"sequence_batch shape {shape} is smaller than the {need} these rows need")
  b = len(prompts)
  inputs = np.full((b, width), pad_id, np.int32)
  attn = np.zeros((b, width), bool)
  targets = np.full((b, window), pad_id, np.int32)
  loss_mask = np.zeros((b, window), np.float32)
  start = np.zeros((b,), np.int32)
  for i, (p, c) in enumerate(zip(prompts, completions)):
    s = list(p) + list(c)
    inputs[i, :len(s) - 1] = s[:-1]
    attn[i, :len(s) - 1] = True
    start[i] = len(p) - 1
    targets[i, :len(c)] = c
    loss_mask[i, :len(c)] = 1.0
  positions = np.broadcast_to(np.arange(width, dtype=np.int32), (b, width)).copy()
  return {"inputs_bt": inputs, "positions_bt": positions, "attention_mask_bt": attn,
          "window_start_b": start, "targets_bc": targets, "loss_mask_bc": loss_mask}


def tokens_spelling(tokenizer, ids: Sequence[int], n_chars: int) -> int:
  """How many leading `ids` it takes to spell the first `n_chars` characters of their text
  (decoding a prefix only grows, so a binary search over prefix lengths finds it in
  ~log2(len) decodes)."""
  low, high = 0, len(ids)
  while low < high:
    mid = (low + high) // 2
    if len(tokenizer.decode(ids[:mid])) >= n_chars:
      high = mid
    else:
      low = mid + 1
  return low


def tokens_through(tokenizer, ids: Sequence[int], tag: str) -> int:
  """How many leading `ids` it takes to spell `tag` in full (0: they never do)."""
  at = tokenizer.decode(ids).find(tag)
  return 0 if at < 0 else tokens_spelling(tokenizer, ids, at + len(tag))


def mask_through(loss_mask_bc: np.ndarray, tokenizer, completions: Sequence[Sequence[int]],
                 tag: str, after: str | None = None) -> np.ndarray:
  """The loss mask with each completion's ids up to and through `tag` left out, from the first
  id after `after` when it is given (`rl.train_thinking=False`: the `<thinking>` block, the
  question's reading, keeps what the warm start taught; `rl.train_analyze=False`: the
  `<analyze>` scan, from `</payoff>` through `</analyze>`, keeps reading the table as the warm
  start taught, so RL trains the table and the response). A completion that never spells `tag`
  (or `after`) keeps its whole mask."""
  out = loss_mask_bc.copy()
  for i, ids in enumerate(completions):
    ids = list(ids)
    start = tokens_through(tokenizer, ids, after) if after else 0
    end = tokens_through(tokenizer, ids, tag)
    if (start or not after) and end > start:
      out[i, start:end] = 0.0
  return out


CELL_PATTERN = r'"%s"\s*:\s*\{[^{}]*\}'  # one cell of a payoff block, by its key


def mask_other_row(loss_mask_bc: np.ndarray, tokenizer, completions: Sequence[Sequence[int]],
                   keys: Sequence[str | None]) -> np.ndarray:
  """The loss mask with the cells of the table's other row left out (`rl.train_other_row=
  False`): a sample's welfare depends on the row its key reads (the key, the misread gate and
  the price gate all read that row), so the other row's numbers got advantages that say
  nothing about them, and a definite question's success pushed whatever its vague row held.
  Each cell `"VQ_CQ":{...}` of the other row, as written inside `<payoff>`, is left out; a
  sample without a key keeps its whole mask."""
  out = loss_mask_bc.copy()
  for i, (ids, key) in enumerate(zip(completions, keys)):
    if not key or key[:3] not in ("DQ_", "VQ_"):
      continue
    ids = list(ids)
    text = tokenizer.decode(ids)
    start = text.find(PAYOFF_START)
    end = text.find(PAYOFF_END, start)
    if start < 0 or end < 0:
      continue
    other = "VQ_" if key.startswith("DQ_") else "DQ_"
    for name in (k for k in PAYOFF_KEYS if k.startswith(other)):
      cell = re.compile(CELL_PATTERN % name).search(text, start, end)
      if cell:
        out[i, tokens_spelling(tokenizer, ids, cell.start()):
            tokens_spelling(tokenizer, ids, cell.end())] = 0.0
  return out


def completion_array(values: Sequence[Sequence[float]], window: int) -> np.ndarray:
  """Per-completion-token values (e.g. sampler log-probs) in the completion window."""
  out = np.zeros((len(values), window), np.float32)
  for i, v in enumerate(values):
    out[i, :len(v)] = v
  return out
