"""Self-distilled answers for the warm start: the base model's plain replies, asked once.

The warm start's DA and AQ traces state the base model's own answer to the question (right or
wrong), so SFT teaches the game's format around what the model already says. The replies are
asked before the first SFT step, with the starting weights, and kept in the workdir: a run
resumed in the middle of its warm start reads them back instead of asking its half-trained
policy.
"""

from __future__ import annotations

import json
import os
import time

from gtalign.data import warm_start
from gtalign.evaluation import plain
from gtalign.parallel import distributed
from gtalign.utils.errors import InvalidInput

FILENAME = "warm_start_answers.json"


def questions(rows, mode: str, dialogues: float = 0.0,
              draw: warm_start.Draw = warm_start.ROW_DRAW) -> list[str]:
  """The distinct plain questions whose answers the rows' traces state."""
  return list(dict.fromkeys(warm_start.plain_question(r) for r in rows
                            if warm_start.needs_answer(r, mode, dialogues, draw)))


def answers(run, params, start_step: int) -> dict[str, str]:
  """{plain question: the answer a trace states} for the run's warm-start rows.

  At step 0 the base model (`params`) is asked and the replies saved; later (a resumed run) the
  saved replies are read. Every process asks all questions (a few hundred short greedy
  replies), so all hold the same traces.
  """
  path = os.path.join(run.workdir, FILENAME)
  cfg = run.config.sft
  wanted = questions(run.warm_rows, cfg.warm_start, cfg.dialogues, warm_start.draw_of(cfg))
  if start_step > 0:
    try:
      with open(path, encoding="utf-8") as f:
        replies = json.load(f)
    except (OSError, ValueError) as e:
      raise InvalidInput(f"{path}: the warm start's saved answers cannot be read ({e}); the run "
                         "resumes in its warm start and needs them (start a new workdir)") from e
    missing = [q for q in wanted if q not in replies]
    if missing:
      raise InvalidInput(f"{path}: no saved answer for {missing[0]!r} (and "
                         f"{len(missing) - 1} more); was the run's data config changed?")
  else:
    begin = time.perf_counter()
    sampler_params, _ = run.sampler_params(params)
    replies = dict(zip(wanted, plain.ask(run.sampler, sampler_params, wanted,
                                         max_new_tokens=run.config.sft.answer_tokens)))
    distributed.log(f"gtalign: warm start: the base model answered {len(wanted)} questions "
                    f"plainly in {time.perf_counter() - begin:.0f} s")
    if distributed.is_main():
      tmp = path + ".tmp"
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump(replies, f, ensure_ascii=False, indent=0)
      os.replace(tmp, path)
  return {q: plain.trace_answer(replies[q]) for q in wanted}
