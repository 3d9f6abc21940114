"""The training run: SFT warm start, then GRPO on mutual-welfare rewards, with evaluation.

Every step is a pure function of (config, step index, state): batch composition and sampling seeds
derive from the step, so a run killed at any point and resumed from its last checkpoint replays
exactly what an uninterrupted run would have done. Set-up lives in `training.run`, the host side
of a step in `training.batches`.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gtalign.adapters import lora, memory
from gtalign.dialogue import rollout as dialogue
from gtalign.parallel import distributed
from gtalign.rl import critic as critic_lib
from gtalign.rl import objective, train_state, update
from gtalign.training import batches, distill, export, heldout, phases
from gtalign.training import run as run_lib
from gtalign.training import checkpoint as checkpoint_lib
from gtalign.training.checkpoint import Checkpointer
from gtalign.training.eta import Eta, Phase
from gtalign.training.metrics import MetricsWriter
from gtalign.utils.errors import InvalidInput

# ETA priors, until measured (gtalign.training.eta): an RL step and a held-out evaluation of the
# default run cost this many SFT steps (SmolLM2-135M on a 2-core Intel Xeon: SFT step 4.2-4.6 s;
# RL step 30-37 s, median, once the warm start writes traces of its own length (6.6-8.7 SFT
# steps at seeds 0 and 2 of 120-step warm starts; 64 s before, when traces ran to the token
# budget); an evaluation with steering and the reading check about 120 s)
RL_STEP_COST = 7.5
EVAL_COST = 26.0
# with `sft.dialogues` a warm-start batch is about twice as wide (two turns and a reply: 896
# tokens against 475 for the default's widest row), and so is an SFT step
SFT_DIALOGUE_COST = 2.0
# an RL step on episodes of up to rl.max_turns turns costs this much more per turn allowed
# beyond the first (the dialogue comparison, 2-core Intel Xeon, seed 2's arms, each alone: a
# turns3 arm took 11.2 minutes, a turns1 arm 5.7)
DIALOGUE_TURN_COST = 0.5
# of an RL step, the policy update's share (the rest samples and scores): each further update
# of rl.updates_per_batch costs this much more (seed 2, 2-core Intel Xeon: 13 s of 35 s)
UPDATE_SHARE = 0.37
# the rollouts a step (prompts x samples) RL_STEP_COST was measured with; a step costs about
# in proportion (32 rollouts, 2 updates: 70-88 s against 4.2 s SFT steps, 2-core Intel Xeon)
RL_STEP_ROLLOUTS = 16


def step_costs(config) -> tuple[float, float]:
  """(SFT step, RL step) in units of a default SFT step: the ETA's priors until measured."""
  sft = SFT_DIALOGUE_COST if config.sft.dialogues else 1.0
  rollouts = ((config.rl.prompts_per_step + config.rl.steer_groups + config.rl.priced_groups)
              * config.rl.num_samples / RL_STEP_ROLLOUTS)
  # rl.scan_rows: an update on those rows after each policy update, no sampling
  scans = config.rl.scan_rows / RL_STEP_ROLLOUTS * UPDATE_SHARE * config.rl.updates_per_batch
  return sft, RL_STEP_COST * (rollouts * (1.0 + DIALOGUE_TURN_COST * (config.rl.max_turns - 1)
                                          + UPDATE_SHARE * (config.rl.updates_per_batch - 1))
                              + scans)


def phase_optimizer(config, phase: str, trainable) -> optax.GradientTransformation:
  """AdamW for the SFT or RL phase: that phase's rate, warmup and schedule over its own steps
  (a cosine reaches zero after the phase's last step); decay and clipping as `rl`."""
  cfg = config.sft if phase == "sft" else config.rl
  if cfg.lr_schedule not in train_state.SCHEDULES:
    raise InvalidInput(f"{phase}.lr_schedule={cfg.lr_schedule!r}; expected one of "
                     f"{train_state.SCHEDULES}")
  rate = train_state.make_schedule(cfg.lr, cfg.lr_schedule, cfg.warmup_steps,
                                   max(cfg.steps, cfg.warmup_steps + 1))
  return train_state.make_optimizer(rate, weight_decay=config.rl.weight_decay,
                                    grad_clip=config.rl.grad_clip, trainable=trainable)


def train(config, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) the configured training; returns the held-out results."""
  run, params, mesh, shardings = run_lib.build(config, workdir)
  run_lib.save_config(config, workdir)
  model_config, tokenizer = run.model_config, run.tokenizer
  data_sharding = run.data_sharding
  adapters_on = lora.enabled(model_config)
  adapter_meta = (lora.resume_meta(model_config, lora.split(params)[0]) if adapters_on
                  else {})
  trainable = (lora.trainable if adapters_on else train_state.trainable_mask)(
      params, config.rl.trainable)
  if adapters_on:
    distributed.log(lora.describe(model_config, params))
  sft_steps, rl_steps = config.sft.steps, config.rl.steps
  total_steps = sft_steps + rl_steps
  # one optimizer per phase, of identical structure: RL starts from fresh moments and its own
  # schedule (SFT's momentum would otherwise keep moving the weights on zero-advantage steps)
  sft_tx = phase_optimizer(config, "sft", trainable)
  tx = phase_optimizer(config, "rl", trainable)
  state_shardings = train_state.train_state_shardings(params, tx, mesh, shardings)
  state = train_state.create_train_state(params, sft_tx if sft_steps else tx, mesh, shardings)
  host_params = params if config.rl.algorithm == "ppo" else None  # the critic starts from them
  del params
  distributed.log(run_lib.sharding_summary(state, mesh))
  longest = max((len(i) for i in run.prompt_ids.values()), default=None)
  distributed.log(memory.plan(model_config, config, longest).line())

  ocfg = run_lib.objective_config(config, len(run.source_ids))
  # whole dialogues with a simulated user (gtalign.dialogue), or single-turn traces
  rollout_step = dialogue.rl_rollout if config.rl.max_turns > 1 else batches.rl_rollout
  ppo = config.rl.algorithm == "ppo"
  prepare = objective.gae_advantages if ppo else objective.welfare_advantages
  sft_update = update.make_update_step(
      functools.partial(objective.sft_loss, model_config), sft_tx, state_shardings, data_sharding,
      num_microbatches=1, trainable=trainable)
  rl_update = update.make_update_step(
      functools.partial(objective.policy_loss, model_config, ocfg), tx, state_shardings,
      data_sharding, num_microbatches=config.rl.num_microbatches, trainable=trainable,
      prepare_batch=functools.partial(prepare, ocfg))
  # rl.scan_rows: the scans of edited tables, taught by their likelihood with the RL optimizer
  scan_update = (update.make_update_step(
      functools.partial(objective.sft_loss, model_config, scale=config.rl.scan_weight), tx,
      state_shardings, data_sharding, num_microbatches=1, trainable=trainable)
                 if config.rl.scan_rows else None)
  critic = (critic_lib.make_critic(config, model_config, host_params, ocfg, mesh,
                                    data_sharding, trainable) if ppo else None)
  del host_params
  # with adapters the KL reference is the same weights with the adapters off: no copy
  ref_logprobs = jax.jit(functools.partial(
      objective.sequence_logprobs,
      lora.adapters_off(model_config) if adapters_on else model_config,
      temperature=config.rl.temperature, span_temperature=config.rl.table_temperature),
      out_shardings=data_sharding)
  uses_reference = bool(config.rl.kl_coef or config.rl.thinking_kl
                        or config.rl.other_row_kl)
  keep_reference = uses_reference and not adapters_on
  # the KL reference is the policy as RL starts (after the warm start), kept in checkpoints;
  # a copy, since the update step donates the train state's buffers
  copy_params = jax.jit(lambda p: jax.tree.map(jnp.copy, p),
                        out_shardings=state_shardings.params)
  ref_params = None
  init_opt = jax.jit(tx.init, out_shardings=state_shardings.opt_state)

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.max_to_keep,
                      save_every=config.checkpoint.every,
                      keep=(sft_steps,) if sft_steps and config.checkpoint.keep_warm_start
                      else ())
  evals: dict[str, dict[str, np.ndarray]] = {}
  # with adapters a checkpoint holds what trains (adapters, a critic's head), never the base
  policy_mask = trainable if adapters_on else None
  critic_mask = ({"decoder": trainable, "kernel": True, "bias": True}
                 if critic and adapters_on else None)

  def saved(policy, critic_state, reference):
    return {"policy": lora.trained_part(policy, policy_mask),
            "critic": lora.trained_part(critic_state, critic_mask),
            "reference": reference}

  found = ckpt.restore_latest_intact(lambda step: saved(
      state, critic["state"] if critic else None,
      state.params if keep_reference and step > sft_steps else None))
  start = found[0] if found else 0
  if found:
    step_found, restored, meta = found
    if adapters_on:
      lora.check_resume(meta, adapter_meta, os.path.join(ckpt.directory, str(step_found)),
                        config.model.name)
    state = lora.with_trained_part(state, restored["policy"], policy_mask)
    ref_params = restored["reference"]
    if critic:
      critic["state"] = lora.with_trained_part(critic["state"], restored["critic"], critic_mask)
    evals = heldout.evals_from_json(meta["evals"])
    distributed.log(f"gtalign: resumed from step {start} in {workdir}")
  elif config.eval.at_start or sft_steps == 0:  # without a warm start, start is the baseline
    evals["start"] = heldout.evaluate(run, state.params, "start")
  if sft_steps and start < sft_steps:  # the base model's own answers, for the warm start
    phases.enter("distill")
    run.warm_answers = distill.answers(run, state.params, start)
  if not found and config.eval.base_plain and config.data.source == "world":
    evals["base_plain"] = heldout.evaluate_plain(run, state.params)
  eval_names = ([f"step_{sft_steps + s}" for s in range(config.eval.every, rl_steps,
                                                      config.eval.every) if sft_steps + s > start]
                if config.eval.every else [])
  eval_names += ["after_sft"] * bool(sft_steps) + ["trained"] * bool(rl_steps)
  sft_cost, rl_cost = step_costs(config)
  eta = Eta([Phase("sft", sft_steps, sft_cost), Phase("rl", rl_steps, rl_cost)],
            evals=sum(n not in evals for n in eval_names), eval_cost=EVAL_COST)
  writer = MetricsWriter(workdir, total_steps, start_step=start, eta=eta)

  def timed_eval(name: str):
    begin = time.perf_counter()
    out = heldout.evaluate(run, state.params, name)
    eta.record_eval(time.perf_counter() - begin)
    return out

  for step in range(start, total_steps):
    begin = time.perf_counter()
    if step < sft_steps:
      phases.enter("sft", step)
      batch, tokens = batches.sft_batch(run, step)
      state, metrics = sft_update(state, batch)
      stats = {"phase": 0.0, "tokens": tokens}
      records = []
    else:
      if step == sft_steps and sft_steps:
        state = state.replace(opt_state=init_opt(state.params))  # the RL optimizer, fresh
      if step == sft_steps and keep_reference:
        ref_params = copy_params(state.params)
      batch, stats, records = rollout_step(run, state.params, step - sft_steps)
      scan_batch = batch.pop(batches.SCAN_KEY, None)
      if scan_batch is not None and not float(jnp.sum(scan_batch["loss_mask_bc"])):
        scan_batch = None  # no rollout wrote a table to edit: nothing to teach this step
      if ref_params is not None:
        batch["ref_logp_bc"] = ref_logprobs(ref_params, batch)
      elif adapters_on and uses_reference:
        batch["ref_logp_bc"] = ref_logprobs(state.params, batch)
      stats["phase"] = 1.0
      if critic:
        batch["old_values_bc"] = critic["values"](critic["state"].params, batch)
        critic["state"], critic_metrics = critic["update"](critic["state"], batch)
        stats.update({f"critic/{k}": float(v) for k, v in jax.device_get(critic_metrics).items()})
      phases.enter("update", step)
      # rl.updates_per_batch > 1: further updates on the same samples against their sampling
      # log-probs, so the ratio leaves 1 and the clip bounds how far the batch moves the policy
      for _ in range(config.rl.updates_per_batch):
        state, metrics = rl_update(state, batch)
        if scan_batch is not None:  # after each policy update, one on the scans (rl.scan_rows)
          state, scan_metrics = scan_update(state, scan_batch)
          scan_metrics = jax.device_get(scan_metrics)
          stats["scan/loss"] = float(scan_metrics["loss"]) / config.rl.scan_weight
          stats["scan/grad_norm"] = float(scan_metrics["grad_norm"])
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    metrics.update(stats, step_seconds=time.perf_counter() - begin)
    if records:  # every process's rows, logged by process 0
      writer.write_rollouts(step + 1, [r for part in distributed.gather_objects(records)
                                       for r in part])
    if step + 1 == sft_steps:
      evals["after_sft"] = timed_eval("after_sft")
    if (config.eval.every and step >= sft_steps
        and (step + 1 - sft_steps) % config.eval.every == 0 and step + 1 < total_steps):
      mid = timed_eval(f"step_{step + 1}")
      metrics.update(heldout.finite_means(mid, prefix="eval/"))
    writer.write(step + 1, metrics)
    meta = {"step": step + 1, "evals": heldout.evals_to_json(evals), **adapter_meta}
    phases.enter("checkpoint", step)
    if checkpoint_lib.due(step + 1, sft_steps, total_steps, config.checkpoint.every,
                          config.checkpoint.sft_every):
      ckpt.save(step + 1, saved(state, critic["state"] if critic else None, ref_params), meta,
                force=True)
  ckpt.wait()
  writer.close()

  if "trained" not in evals:
    if rl_steps == 0:  # nothing changed since the last evaluation
      evals["trained"] = evals["after_sft"] if sft_steps else evals["start"]
    else:
      evals["trained"] = timed_eval("trained")
  ckpt.close()
  phases.enter("export", total_steps)
  export.export_run(os.path.join(workdir, "export"), config, model_config,
                    distributed.host_params(state.params), tokenizer)
  return heldout.report(workdir, evals, config.eval.bootstrap,
                        {"start": 0, "after_sft": sft_steps, "trained": total_steps})

