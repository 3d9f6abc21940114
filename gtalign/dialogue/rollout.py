"""The multi-turn RL rollout (`rl.max_turns > 1`): episodes in, the update's batch out.

An episode is one row of the update batch: its prompt, then every turn's ids (the user turns'
masked out of the loss, and given sampler log-probs of 0 that the mask drops). U and L are the
episode's (`dialogue.welfare`), so the jitted step's group advantages compare the G episodes of
one prompt, as single-turn GRPO compares G completions.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from gtalign.dialogue import episodes as ep_lib
from gtalign.dialogue import simulator as sim_lib
from gtalign.dialogue import welfare as welfare_lib
from gtalign.game import trace as trace_lib
from gtalign.parallel import distributed
from gtalign.sampling.sampler import SamplingConfig
from gtalign.training import phases, rollout
from gtalign.training import run as run_lib

# per episode; a `_dq` / `_vq` metric is NaN on the other type's rows (means are per type)
ROW_METRICS = ("user", "llm", "welfare", "welfare_dq", "welfare_vq", "turns_dq", "turns_vq",
               "correct_dq", "correct_vq", "asks_on_dq", "wrong_detail", "da_on_dq", "cq_on_vq",
               "answered", "format_ok")


def simulator(config) -> sim_lib.UserSimulator:
  rl = config.rl
  return sim_lib.make_simulator(rl.simulator, **({} if rl.simulator == "rule" else dict(
      model=rl.simulator_model, max_tokens=rl.simulator_max_tokens)))


def episode_batch(episodes: Sequence[ep_lib.Episode], pad_id: int,
                  shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
  """`rollout.sequence_batch` of whole episodes: the loss mask is 1 on the assistant's ids only,
  `old_logp_bc` the sampler's log-probs there (0 on the user turns)."""
  prompts = [list(e.prompt) for e in episodes]
  completions = [e.completion_ids() for e in episodes]
  batch = rollout.sequence_batch(prompts, completions, pad_id, shape=shape)
  window = batch["targets_bc"].shape[1]
  batch["loss_mask_bc"] = batch["loss_mask_bc"] * rollout.completion_array(
      [e.assistant_mask() for e in episodes], window)
  batch["old_logp_bc"] = rollout.completion_array([e.completion_logprobs() for e in episodes],
                                                  window)
  return batch


def row_arrays(episodes: Sequence[ep_lib.Episode], scored: Sequence[welfare_lib.Scored]
               ) -> dict[str, np.ndarray]:
  """Per episode: U, L, welfare (NaN where the judge failed) and what the dialogue did; NaN where
  a metric does not apply (asks on DQ for a vague question)."""
  nan = float("nan")
  out: dict[str, list[float]] = {k: [] for k in ROW_METRICS}
  for e, s in zip(episodes, scored):
    kind = (e.row.get("extra_info") or {}).get("question_type")
    c = s.components
    per_type = lambda value, k: value if kind == k else nan
    welfare = nan if s.judge_failed else s.welfare
    out["user"].append(nan if s.judge_failed else s.user)
    out["llm"].append(nan if s.judge_failed else s.llm)
    out["welfare"].append(welfare)
    for k in ("DQ", "VQ"):
      out[f"welfare_{k.lower()}"].append(per_type(welfare, k))
      out[f"turns_{k.lower()}"].append(per_type(float(len(e.turns)), k))
      out[f"correct_{k.lower()}"].append(per_type(c.get("correct", nan), k))
    out["asks_on_dq"].append(per_type(float(c.get("asks", 0) > 0), "DQ"))
    out["wrong_detail"].append(per_type(float(c.get("wrong_detail", 0) > 0), "VQ"))
    out["da_on_dq"].append(per_type(float(e.turns[0].action == "DA"), "DQ"))
    out["cq_on_vq"].append(per_type(float(e.turns[0].action == "CQ"), "VQ"))
    out["answered"].append(float(e.ended == ep_lib.ANSWERED))
    out["format_ok"].append(float(np.mean([t.parsed.format_ok for t in e.turns])))
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def record(e: ep_lib.Episode, s: welfare_lib.Scored) -> dict[str, Any]:
  info = e.row.get("extra_info") or {}
  return {"row_id": e.row["row_id"], "question_type": info.get("question_type"),
          "question": info.get("question", ""), "ended": e.ended,
          "turns": [{"completion": t.text, "action": t.action, "reply": t.reply,
                     "reply_kind": t.reply_kind} for t in e.turns],
          "user": None if s.judge_failed else s.user, "llm": None if s.judge_failed else s.llm,
          "welfare": None if s.judge_failed else s.welfare,
          "components": {k: v for k, v in s.components.items()}}


def rl_rollout(run, params, step: int):
  """`training.batches.rl_rollout` for dialogues: G episodes per prompt of this process,
  scored, as the update's batch (global batch, stats, records)."""
  from gtalign.training import batches  # pylint: disable=import-outside-toplevel
  cfg = run.config.rl
  rows, part = batches.local_rows(run.batch_rows(step, cfg.prompts_per_step, "rl"))
  phases.enter("sample", run.config.sft.steps + step)
  sampler_params, handoff_seconds = run.sampler_params(params)
  start = time.perf_counter()
  episodes = ep_lib.run_episodes(
      run.sampler, sampler_params, rows, [run.prompt(r) for r in rows], run.simulator,
      max_turns=cfg.max_turns, style=run.config.data.prompt_style, parse_mode=cfg.parse_mode,
      sampling=SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, num_samples=cfg.num_samples,
                              stop=(trace_lib.RESPONSE_END,), include_stop_str=True,
                              seed=run_lib.rl_seed(run.config) * 1_000_003 + step),
      prompt_indices=np.arange(part.start, part.stop))
  sample_seconds = time.perf_counter() - start
  phases.enter("judge", run.config.sft.steps + step)
  start = time.perf_counter()
  scored = welfare_lib.score_episodes(
      episodes, run.judge, variant=cfg.variant, parse_mode=cfg.parse_mode,
      on_judge_failure=cfg.on_judge_failure, world_consistency=cfg.world_consistency,
      world_misread=cfg.world_misread, world_unpriced=cfg.world_unpriced,
      world_hedge=cfg.world_hedge)
  judge_seconds = time.perf_counter() - start
  prompts = [list(e.prompt) for e in episodes]
  completions = [e.completion_ids() for e in episodes]
  local = episode_batch(episodes, run.tokenizer.pad_id,
                        shape=tuple(distributed.agree_max(rollout.sequence_shape(prompts,
                                                                                 completions))))
  failed = np.asarray([s.judge_failed or e.ended == ep_lib.SIMULATOR_FAILED
                       for e, s in zip(episodes, scored)])
  local.update(user_b=np.asarray([s.user for s in scored], np.float32),
               llm_b=np.asarray([s.llm for s in scored], np.float32),
               reward_valid_b=(~failed).astype(np.float32),
               source_b=np.asarray([run.source_ids[e.row["data_source"]] for e in episodes],
                                   np.int32))
  per_row = dict(row_arrays(episodes, scored),
                 judge_failed=failed.astype(np.float32),
                 completion_tokens=np.asarray([local["loss_mask_bc"][i].sum()
                                               for i in range(len(episodes))], np.float32),
                 tokens=np.asarray([len(p) + len(c) for p, c in zip(prompts, completions)],
                                   np.float32))
  per_row = distributed.gather_rows(per_row, cfg.prompts_per_step * cfg.num_samples)
  handoff_s, sample_s, judge_s = distributed.agree_max([handoff_seconds, sample_seconds,
                                                        judge_seconds])
  stats = {f"rollout/{k}": float(v[np.isfinite(v)].mean()) for k, v in per_row.items()
           if k != "tokens" and np.isfinite(v).any()}
  stats.update({"time/handoff_s": float(handoff_s), "time/sample_s": float(sample_s),
                "time/judge_s": float(judge_s), "tokens": float(per_row["tokens"].sum())})
  return run.global_batch(local), stats, [record(e, s) for e, s in zip(episodes, scored)]
