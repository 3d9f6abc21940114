"""Host side of a training step: the SFT batch of reference traces and the RL rollout.

Both run outside jit (tokenizing, sampling, judging) and hand the jitted update a global batch of
arrays; both are pure functions of (run, step), so a resumed run replays the same batches.
"""

from __future__ import annotations

import time

import functools

import jax
import numpy as np

from gtalign.data import warm_start
from gtalign.dialogue import episodes
from gtalign.game import payoff as payoff_lib
from gtalign.game import trace as trace_lib
from gtalign.parallel import distributed
from gtalign.rewards import tasks
from gtalign.sampling.sampler import SamplingConfig
from gtalign.rl import objective
from gtalign.training import heldout, phases, rollout
from gtalign.training import priced_groups as priced_lib
from gtalign.training import scan_rows as scan_lib
from gtalign.training import steer_groups as steer_lib
from gtalign.training import run as run_lib
from gtalign.training.run import Run
from gtalign.utils.errors import InvalidInput


def local_rows(rows: list) -> tuple[list, slice]:
  """This process's block of a step's rows, and where it sits among them."""
  part = distributed.process_rows(len(rows))
  return rows[part], part


def _agreed_shape(prompts, completions) -> tuple[int, int]:
  """Padded (width, window) every process uses, so their rows stack into one global batch."""
  return tuple(distributed.agree_max(rollout.sequence_shape(prompts, completions)))


def sft_completion(run: Run, row, visit: int = 0, strategy: str | None = None
                   ) -> tuple[list[int], np.ndarray]:
  """(completion ids, per-id loss weight) of a warm-start row at SFT pass `visit` (or carrying
  out `strategy`): its trace and EOS, or for a dialogue row (`sft.dialogues`) each turn's trace
  and EOS with the user's reply between them at weight 0, as a multi-turn episode lays it out
  (`dialogue.episodes.user_turn_ids`). A `<response>`'s ids weigh `sft.response_weight`."""
  cfg = run.config.sft
  eos = run.tokenizer.eos_ids[0]
  draw = warm_start.draw_of(cfg)
  if warm_start.is_dialogue(row, cfg.dialogues):
    turns = warm_start.dialogue_turns(row, cfg.warm_start, run.warm_answers, cfg.tables,
                                      cfg.chosen_first, visit, strategy, draw, cfg.scan)
  else:
    turns = [(warm_start.reference_trace(row, cfg.warm_start, run.warm_answers, cfg.tables,
                                         cfg.chosen_first, visit, strategy, draw, cfg.scan),
              None)]
  ids: list[int] = []
  weights: list[np.ndarray] = []
  for text, reply in turns:
    own = run.tokenizer.encode(text) + [eos]
    weight = np.ones(len(own), np.float32)
    start = warm_start.response_token_start(run.tokenizer.encode, text)
    if start is not None:
      weight[start:] = cfg.response_weight  # its EOS too
    ids += own
    weights.append(weight)
    if reply is not None:
      user = episodes.user_turn_ids(run.tokenizer, reply, True, run.config.data.prompt_style)
      ids += list(user)
      weights.append(np.zeros(len(user), np.float32))
  return ids, np.concatenate(weights)


def sft_batch(run: Run, step: int) -> tuple[dict[str, jax.Array], float]:
  """(global SFT batch of reference traces, number of tokens in it)."""
  size = run.config.sft.batch_size
  if not run.warm_rows:
    raise InvalidInput("sft.steps > 0 needs warm-start rows: the built-in world "
                       "(data.source='world') with data.num_warm > 0")
  count = len(run.warm_rows)
  redraw = run.config.sft.draw == "visit"
  picks, _ = local_rows([((step * size + i) % count, (step * size + i) // count if redraw else 0)
                         for i in range(size)])
  rows = [run.warm_rows[i] for i, _ in picks]
  completions, weights = zip(*(sft_completion(run, run.warm_rows[i], visit)
                               for i, visit in picks))
  prompts = [run.prompt(r) for r in rows]
  if run.sft_shape is None:
    # one shape for every SFT step, the widest warm-start row's (every process sees all of
    # them, so they agree): a shape per batch recompiled the update whenever a batch came out
    # longer (tens of seconds each time for the 135M model on 2 cores, ~5 s for the tiny one);
    # rows redrawn at every pass may carry out any strategy, so the widest of the three
    # (and under `sft.rows=bumped` or `sft.tables=jittered` at every pass SFT makes: a bump or
    # a low cell spelled "1.5" lengthens a table)
    every = run.warm_rows
    forms = warm_start.STRATEGIES if redraw else (None,)
    per_pass = run.config.sft.rows == "bumped" or run.config.sft.tables == "jittered"
    passes = (range(1 + (run.config.sft.steps * size - 1) // count)
              if redraw and per_pass else (0,))
    run.sft_shape = rollout.sequence_shape(
        [run.prompt(r) for r in every for _ in forms for _ in passes],
        [sft_completion(run, r, v, strategy=s)[0] for r in every for s in forms for v in passes])
  local = rollout.sequence_batch(prompts, completions, run.tokenizer.pad_id,
                                 shape=run.sft_shape)
  # the response carries the key out: its tokens weigh more in the mean; user turns nothing
  local["loss_mask_bc"] *= rollout.completion_array(weights, local["loss_mask_bc"].shape[1])
  tokens = distributed.gather_rows({"t": local["attention_mask_bt"].sum(1)},
                                   run.config.sft.batch_size)["t"].sum()
  return run.global_batch(local), float(tokens)


def _with_steered(local: dict, steered, run: Run, shape, source_row) -> dict:
  """The step's batch with the steered groups' rows after its own (groups of G, in order):
  U = L = whether the continuation followed its edit, the edited prefix in the prompt, the
  forced (healing) tokens out of the loss; rows no reading or KL mask applies to get zeros."""
  extra = rollout.sequence_batch(steered.prompts, steered.completions, run.tokenizer.pad_id,
                                 shape=shape)
  window = extra["loss_mask_bc"].shape[1]
  extra["loss_mask_bc"] *= rollout.completion_array(steered.trained, window)
  extra["old_logp_bc"] = rollout.completion_array(steered.logprobs, window)
  n = len(steered.follows)
  extra.update(user_b=steered.follows, llm_b=steered.follows,
               reward_valid_b=np.ones(n, np.float32),
               source_b=np.full(n, run.source_ids[source_row["data_source"]], np.int32))
  return _joined(local, extra, n)


def _joined(local: dict, extra: dict, n: int) -> dict:
  """`local`'s rows, then `extra`'s `n` rows; a key only `local` has (the reading's masks and
  grades, a KL anchor) is zeros for them: nothing of the host-written prefix trains by it."""
  for key, value in local.items():
    if key not in extra:
      extra[key] = np.zeros((n, *np.shape(value)[1:]), np.asarray(value).dtype)
  return {k: np.concatenate([np.asarray(v), np.asarray(extra[k])]) for k, v in local.items()}


@functools.lru_cache(maxsize=4)
def _policy_logprobs(model_config, temperature: float):
  """Jitted teacher-forced log-probs of a batch's completion window under the policy."""
  return jax.jit(functools.partial(objective.sequence_logprobs, model_config,
                                   temperature=temperature))


def _with_priced(local: dict, priced, scored, run: Run, params, shape, prompts) -> dict:
  """The step's batch with the priced groups' rows after its own (groups of G, in order): U
  and L from the run's reward, the trained ids' log-probs under the policy as the old ones
  (the table was written by the host: the sampler never scored it), rows no reading or KL mask
  applies to get zeros."""
  cfg = run.config.rl
  extra = rollout.sequence_batch([prompts[i] for i in priced.sources], priced.completions,
                                 run.tokenizer.pad_id, shape=shape)
  window = extra["loss_mask_bc"].shape[1]
  extra["loss_mask_bc"] *= rollout.completion_array(priced.trained, window)
  # the other row was written by the policy and priced nothing the group compares
  extra["loss_mask_bc"] = rollout.mask_other_row(extra["loss_mask_bc"], run.tokenizer,
                                                 priced.completions, priced.keys)
  logp = _policy_logprobs(run.model_config, cfg.temperature)(
      params, {k: extra[k] for k in ("inputs_bt", "positions_bt", "attention_mask_bt",
                                     "window_start_b", "targets_bc")})
  extra["old_logp_bc"] = np.asarray(jax.device_get(logp), np.float32) * extra["loss_mask_bc"]
  arrays = scored.arrays()
  extra.update(user_b=arrays["user"], llm_b=arrays["llm"],
               reward_valid_b=(~scored.judge_failed).astype(np.float32),
               source_b=np.asarray([local["source_b"][i] for i in priced.sources], np.int32))
  return _joined(local, extra, len(priced.sources))


def table_sampling(cfg) -> dict:
  """rl.table_temperature as the sampler's span: inside the <payoff> block, the first token
  of the numbers rl.table_numbers names, where the table's peak and so the move is decided,
  drawn at its own temperature ({}: every token at rl.temperature). The whole block at T = 2
  wrote no table at all (the vocabulary's tail drowned the JSON: 28 of 32 rollouts invalid)."""
  if not cfg.table_temperature:
    return {}
  return dict(span_temperature=(trace_lib.PAYOFF_START, trace_lib.PAYOFF_END,
                                float(cfg.table_temperature)),
              span_after=payoff_lib.NUMBERS_AFTER[cfg.table_numbers],
              span_top_k=int(cfg.table_top_k))


SCAN_KEY = "scan"  # the rollout batch's entry holding `rl.scan_rows`' batch (training.loop)
ROLLOUT_ROW_METRICS = ("user", "llm", "welfare", "format_ok", "valid", "completion_tokens",
                       *rollout.BEHAVIOUR_KEYS[1:], "response_tokens", "reasoning_tokens",
                       "judge_failed", "tokens")


def rl_rollout(run: Run, params, step: int):
  """Sample G completions per prompt of this process, score them, build the update batch.

  Returns (global batch, stats reduced over all processes, this process's rollout records).
  """
  cfg = run.config.rl
  rows, part = local_rows(run.batch_rows(step, cfg.prompts_per_step, "rl"))
  phases.enter("sample", run.config.sft.steps + step)
  sampler_params, handoff_seconds = run.sampler_params(params)
  start = time.perf_counter()
  out = run.sampler.generate(
      sampler_params, [run.prompt(r) for r in rows],
      SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                     top_p=cfg.top_p, num_samples=cfg.num_samples, stop=(trace_lib.RESPONSE_END,),
                     include_stop_str=True, seed=run_lib.rl_seed(run.config) * 1_000_003 + step,
                     **table_sampling(cfg)),
      prompt_indices=np.arange(part.start, part.stop))
  sample_seconds = time.perf_counter() - start
  row_of = [rows[i - part.start] for i in out.prompt_index]  # global prompt index -> row
  phases.enter("judge", run.config.sft.steps + step)
  start = time.perf_counter()
  scored = rollout.score_rows(row_of, out.texts, run.judge, variant=cfg.variant,
                              parse_mode=cfg.parse_mode, on_judge_failure=cfg.on_judge_failure,
                              world_consistency=cfg.world_consistency,
                              world_misread=cfg.world_misread,
                              world_unpriced=cfg.world_unpriced, world_hedge=cfg.world_hedge)
  judge_seconds = time.perf_counter() - start
  arrays = scored.arrays()
  prompts = [run.prompt(r) for r in row_of]
  kinds = [(r.get("extra_info") or {}).get("question_type") or "DQ" for r in row_of]
  steered = None
  if cfg.steer_groups:  # rollouts whose table the host edited, paid for following it
    start = time.perf_counter()
    steered = steer_lib.steer_groups(
        run.sampler, sampler_params, prompts, out.texts, out.tokens,
        kinds, cfg.steer_groups, cfg.num_samples,
        SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                       top_p=cfg.top_p, stop=(trace_lib.RESPONSE_END,), include_stop_str=True,
                       seed=run_lib.rl_seed(run.config) * 1_000_003 + step + 500_009),
        seed=run_lib.rl_seed(run.config) * 1_000_003 + step, edit=run.config.eval.steering_edit)
    sample_seconds += time.perf_counter() - start
  priced = None
  if cfg.priced_groups:  # one rollout's reading under a table priced for each strategy
    start = time.perf_counter()
    priced = priced_lib.priced_groups(
        run.sampler, sampler_params, prompts, out.texts, out.tokens,
        kinds, cfg.priced_groups, cfg.num_samples,
        SamplingConfig(max_new_tokens=priced_lib.CONTINUATION_TOKENS,
                       temperature=cfg.temperature, top_p=cfg.top_p,
                       stop=(trace_lib.RESPONSE_END,), include_stop_str=True,
                       seed=run_lib.rl_seed(run.config) * 1_000_003 + step + 700_001),
        seed=run_lib.rl_seed(run.config) * 1_000_003 + step + 300_007, edit=cfg.priced_edit,
        train=cfg.priced_train, types=cfg.priced_types)
    sample_seconds += time.perf_counter() - start
  extra_prompts = ((steered.prompts if steered else [])
                   + ([prompts[i] for i in priced.sources] if priced else []))
  extra_completions = ((steered.completions if steered else [])
                       + (priced.completions if priced else []))
  shape = _agreed_shape(prompts + extra_prompts, list(out.tokens) + extra_completions)
  local = rollout.sequence_batch(prompts, out.tokens, run.tokenizer.pad_id, shape=shape)
  local["old_logp_bc"] = rollout.completion_array(out.logprobs, local["targets_bc"].shape[1])
  if out.hot is not None:  # drawn at rl.table_temperature: the loss divides their logits by it
    local["hot_bc"] = rollout.completion_array(out.hot, local["targets_bc"].shape[1])
  if not cfg.train_thinking:
    trained_bc = rollout.mask_through(local["loss_mask_bc"], run.tokenizer, out.tokens,
                                      trace_lib.THINKING_END)
    if cfg.thinking_kl:  # the reading: held to the reference by its KL (rl.thinking_kl)
      local["anchor_mask_bc"] = local["loss_mask_bc"] - trained_bc
    if cfg.grade_reading != "off":  # the reading, graded by the question's type
      right_b, known_b = rollout.read_right(row_of, out.texts)
      local["reading_mask_bc"] = (local["loss_mask_bc"] - trained_bc) * known_b[:, None]
      local["read_right_b"] = right_b
    local["loss_mask_bc"] = trained_bc
  if not cfg.train_other_row or cfg.other_row_kl:
    kept_bc = rollout.mask_other_row(
        local["loss_mask_bc"], run.tokenizer, out.tokens,
        [p.chosen_key if p.valid else None for p in scored.parsed])
    if cfg.other_row_kl:  # the row the key does not read: held to the reference by its KL
      local["other_row_mask_bc"] = local["loss_mask_bc"] - kept_bc
    if not cfg.train_other_row:
      local["loss_mask_bc"] = kept_bc
  if not cfg.train_analyze:
    local["loss_mask_bc"] = rollout.mask_through(local["loss_mask_bc"], run.tokenizer,
                                                 out.tokens, trace_lib.ANALYZE_END,
                                                 after=trace_lib.PAYOFF_END)
  local.update(user_b=arrays["user"], llm_b=arrays["llm"],
               reward_valid_b=(~scored.judge_failed).astype(np.float32),
               source_b=np.asarray([run.source_ids[r["data_source"]] for r in row_of], np.int32))
  per_row = dict(rollout.unjudged_as_nan(arrays, scored.judge_failed),
                 **rollout.behaviour_arrays(row_of, scored, run.tokenizer),
                 completion_tokens=out.lengths.astype(np.float32),
                 # the judge's failure rate in either mode ("zero" scores them 0 on purpose)
                 judge_failed=np.asarray([r.components.get("judge_failures", 0) > 0
                                          for r in scored.results], np.float32),
                 tokens=(out.lengths + local["attention_mask_bt"].sum(1)).astype(np.float32))
  if out.hot is not None:  # tokens drawn at rl.table_temperature (a table: 18)
    per_row["hot_tokens"] = np.asarray([h.sum() for h in out.hot], np.float32)
  per_row = distributed.gather_rows(per_row, cfg.prompts_per_step * cfg.num_samples)
  # the step waits for its slowest process
  handoff_s, sample_s, judge_s = distributed.agree_max([handoff_seconds, sample_seconds,
                                                        judge_seconds])
  stats = heldout.finite_means({k: per_row[k] for k in ROLLOUT_ROW_METRICS if k != "tokens"},
                               prefix="rollout/")
  if "hot_tokens" in per_row:
    stats["rollout/hot_tokens"] = float(np.mean(per_row["hot_tokens"]))
  stats.update({"time/handoff_s": float(handoff_s), "time/sample_s": float(sample_s),
                "time/judge_s": float(judge_s), "tokens": float(per_row["tokens"].sum())})
  if steered is not None:  # no rollout of the step wrote a table: no steered group
    if len(steered.follows):
      local = _with_steered(local, steered, run, shape, row_of[0])
    stats["rollout/steer_follows"] = (float(steered.follows.mean()) if len(steered.follows)
                                      else float("nan"))
  if priced is not None and priced.sources:
    priced_scored = rollout.score_rows(
        [row_of[i] for i in priced.sources], priced.texts, run.judge, variant=cfg.variant,
        parse_mode=cfg.parse_mode, on_judge_failure=cfg.on_judge_failure,
        world_consistency=cfg.world_consistency, world_misread=cfg.world_misread,
        world_unpriced=cfg.world_unpriced, world_hedge=cfg.world_hedge)
    local = _with_priced(local, priced, priced_scored, run, params, shape, prompts)
    welfare_r = priced_scored.arrays()["welfare"]
    for kind in ("DQ", "VQ"):  # what each priced strategy earned, by the question's type
      for action in ("DA", "CQ", "AQ"):
        picked = [w for w, i, key in zip(welfare_r, priced.sources, priced.keys)
                  if key.endswith(action)
                  and (row_of[i].get("extra_info") or {}).get("question_type") == kind]
        if picked:  # a strategy no row priced on this type this step is not logged
          stats[f"rollout/priced_{kind}_{action}"] = float(np.mean(picked))
  records = [{"row_id": r["row_id"], "question": r["extra_info"].get("question", ""),
              "question_type": r["extra_info"].get("question_type"),
              "completion": t, "judge_failed": res.judge_failed,
              # a sample the judge failed on has no score (it is masked from the loss)
              **{k: None if res.judge_failed else v
                 for k, v in (("user", res.user), ("llm", res.llm), ("welfare", res.score))},
              "valid": p.valid, "reason": p.reason,
              # a masked sample's judged components hold the failure's stand-in 0
              "components": {k: v for k, v in res.components.items()
                             if isinstance(v, (int, float, bool))
                             and (not res.judge_failed or k in tasks.UNJUDGED_COMPONENTS)}}
             for r, t, res, p in zip(row_of, out.texts, scored.results, scored.parsed)]
  batch = run.global_batch(local)
  if cfg.scan_rows:  # the step's tables edited, their scans taught (a batch of their own)
    batch[SCAN_KEY] = _scan_batch(run, prompts, out.texts, out.tokens, kinds, step)
  return batch, stats, records


def _scan_batch(run: Run, prompts, texts, tokens, kinds, step: int) -> dict:
  """The global batch of `rl.scan_rows` rows (`training.scan_rows`): the scan's ids trained."""
  scan = scan_lib.scan_rows(run.tokenizer, texts, tokens, kinds, run.config.rl.scan_rows,
                            seed=run_lib.rl_seed(run.config) * 1_000_003 + step + 900_007,
                            edit=run.config.eval.steering_edit, scan=run.config.sft.scan)
  scan_prompts = [prompts[i] for i in scan.sources]
  local = rollout.sequence_batch(scan_prompts, scan.completions, run.tokenizer.pad_id,
                                 shape=_agreed_shape(scan_prompts, scan.completions))
  local["loss_mask_bc"] *= rollout.completion_array(scan.trained,
                                                    local["loss_mask_bc"].shape[1])
  return run.global_batch(local)

