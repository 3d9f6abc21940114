"""Held-out dialogues (`eval.dialogue_turns > 0`): greedy episodes with the run's simulated user.

Every policy, single-turn trained or not, is scored the same way: up to `eval.dialogue_turns`
assistant turns per held-out question, the simulator answering clarifying questions, and the
dialogue's U and L (`dialogue.welfare`). Arrays are per prompt under `dialogue_` keys, next to
the single-turn ones in eval.json; `table` prints them per question type with intervals.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from gtalign.dialogue import episodes as ep_lib
from gtalign.dialogue import rollout as dlg_rollout
from gtalign.dialogue import welfare as welfare_lib
from gtalign.game import trace as trace_lib
from gtalign.parallel import distributed
from gtalign.sampling.sampler import SamplingConfig
from gtalign.training import evaluation

PREFIX = "dialogue_"
# the table's columns: (key without the prefix, label)
COLUMNS = (("welfare", "welfare"), ("welfare_dq", "welfare DQ"), ("welfare_vq", "welfare VQ"),
           ("correct_dq", "final acc DQ"), ("correct_vq", "final acc VQ"),
           ("turns_dq", "turns DQ"), ("turns_vq", "turns VQ"), ("asks_on_dq", "asks on DQ"),
           ("wrong_detail", "wrong-detail Q on VQ"))


def sampling(config) -> SamplingConfig:
  """A held-out turn's settings: greedy, as the single-turn evaluation samples."""
  return SamplingConfig(max_new_tokens=config.eval.max_new_tokens, temperature=0.0,
                        stop=(trace_lib.RESPONSE_END,), include_stop_str=True)


def episodes(run, sampler_params, rows, first: int, first_turns=None) -> list[ep_lib.Episode]:
  """Greedy held-out episodes, in chunks of eval.chunk prompts with a progress line each;
  `first_turns` (a `SampleOutput` per chunk, sampled with `sampling`) are reused as turn 1."""
  cfg = run.config
  chunk = max(1, cfg.eval.chunk)
  out, begin = [], time.perf_counter()
  for at in range(0, len(rows), chunk):
    piece = rows[at:at + chunk]
    out += ep_lib.run_episodes(
        run.sampler, sampler_params, piece, [run.prompt(r) for r in piece], run.simulator,
        max_turns=cfg.eval.dialogue_turns, style=cfg.data.prompt_style,
        parse_mode=cfg.rl.parse_mode, sampling=sampling(cfg),
        prompt_indices=np.arange(first + at, first + at + len(piece)),
        first=first_turns[at // chunk] if first_turns else None)
    done, elapsed = at + len(piece), time.perf_counter() - begin
    distributed.log(f"gtalign: dialogues: {done}/{len(rows)} prompts, "
                    f"ETA {(len(rows) - done) * elapsed / done:.0f} s")
  return out


def evaluate(run, sampler_params, rows, first: int, name: str, first_turns=None
             ) -> dict[str, np.ndarray]:
  """This process's held-out rows as dialogues: `dialogue_*` arrays, and every dialogue
  verbatim in WORKDIR/dialogues_<name>.jsonl."""
  cfg = run.config
  found = episodes(run, sampler_params, rows, first, first_turns)
  scored = welfare_lib.score_episodes(
      found, run.judge, variant=cfg.rl.variant, parse_mode=cfg.rl.parse_mode,
      on_judge_failure="mask", world_consistency=cfg.rl.world_consistency,
      world_misread=cfg.rl.world_misread, world_unpriced=cfg.rl.world_unpriced,
      world_hedge=cfg.rl.world_hedge)
  if distributed.is_main() and run.workdir:
    with open(os.path.join(run.workdir, f"dialogues_{name}.jsonl"), "w", encoding="utf-8") as f:
      f.writelines(json.dumps(dlg_rollout.record(e, s), ensure_ascii=False) + "\n"
                   for e, s in zip(found, scored))
  return {PREFIX + k: v for k, v in dlg_rollout.row_arrays(found, scored).items()}


def table(evals: dict[str, dict[str, np.ndarray]], n_boot: int) -> str | None:
  """Markdown, one row per evaluation that has dialogues: every column "mean [95% CI]"."""
  named = {name: {label: arrays[PREFIX + key] for key, label in COLUMNS}
           for name, arrays in evals.items() if PREFIX + "welfare" in arrays}
  if not named:
    return None
  return evaluation.summary_table(named, metrics=[label for _, label in COLUMNS], n_boot=n_boot)
