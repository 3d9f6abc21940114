"""The training run: SFT warm start, then GRPO on mutual-welfare rewards, with evaluation.

Every step is a pure function of (config, step index, state): batch composition and sampling seeds
derive from the step, so a run killed at any point and resumed from its last checkpoint replays
exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import numpy as np

from gtalign.data import world as world_lib
from gtalign.game import prompt as prompt_lib
from gtalign.models.checkpoints import load_pretrained
from gtalign.models.config import get_preset
from gtalign.models.tokenizer import load_tokenizer
from gtalign.models.transformer import init_params, logical_axes
from gtalign.models.weights_cache import smollm2_gguf_path
from gtalign.parallel.mesh import MeshConfig, batch_sharding, make_mesh, param_shardings
from gtalign.rewards.judges import make_judge
from gtalign.rl import objective, train_state, update
from gtalign.sampling.sampler import Sampler, SamplingConfig
from gtalign.training import evaluation, plots, rollout
from gtalign.training.checkpoint import Checkpointer
from gtalign.training.metrics import MetricsWriter, read_metrics

STOP = "</response>"


def load_model(cfg):
  """(model_config, params, tokenizer); "tiny-random" is a random tiny Llama with SmolLM2's
  tokenizer, so tests exercise the real prompt and chat template in seconds."""
  if cfg.name == "tiny-random":
    tokenizer = load_tokenizer(smollm2_gguf_path())
    model_config = get_preset("tiny-llama").replace(vocab_size=tokenizer.vocab_size,
                                                    max_position_embeddings=4096)
    params = init_params(model_config, jax.random.PRNGKey(0))
  else:
    model_config, params, tokenizer = load_pretrained(cfg.name)
  model_config = model_config.replace(param_dtype=cfg.param_dtype, dtype=cfg.dtype,
                                      remat=cfg.remat)
  params = jax.tree.map(lambda a: a.astype(model_config.jnp_param_dtype), params)
  if tokenizer is None:
    raise ValueError(f"model {cfg.name!r} has no tokenizer")
  return model_config, params, tokenizer


def load_rows(cfg, seed: int):
  """(train rows, eval rows) with the configured prompt style."""
  build = functools.partial(prompt_lib.build_messages, style=cfg.prompt_style)
  if cfg.source == "world":
    world = world_lib.make_world(seed=seed, num_train=cfg.num_train, num_test=cfg.num_test,
                                 vague_fraction=cfg.vague_fraction, build_messages=build)
    return world["train"], world["test"]
  from gtalign.data import gtalign as gtalign_data
  if not cfg.dir:
    raise ValueError(f"data.source={cfg.source!r} needs --config.data.dir=<GTAlign data dir>")
  return (gtalign_data.read_rows(cfg.dir, cfg.source, "train"),
          gtalign_data.read_rows(cfg.dir, cfg.source, cfg.eval_split))


@dataclasses.dataclass
class Run:
  """Everything a step needs that is not in the (checkpointed) train state."""

  config: Any
  model_config: Any
  tokenizer: Any
  sampler: Sampler
  judge: Any
  train_rows: list
  eval_rows: list
  prompt_ids: dict  # row_id -> token ids of the rendered prompt
  source_ids: dict  # data_source -> int
  order: np.ndarray  # a fixed permutation of the training rows

  def sampling_params(self, params):
    """Weights in the compute dtype: the sampler reads them every decode step, so casting
    once per rollout beats casting inside each step."""
    dtype = self.model_config.jnp_dtype
    return jax.tree.map(lambda a: a.astype(dtype) if a.dtype != dtype else a, params)

  def prompt(self, row) -> list[int]:
    return self.prompt_ids[row["row_id"]]

  def batch_rows(self, step: int, size: int) -> list:
    """Rows of step `step`: consecutive slices of one seeded permutation, cycling."""
    n = len(self.order)
    return [self.train_rows[self.order[(step * size + i) % n]] for i in range(size)]


def _tokenize_prompts(rows, tokenizer, max_len: int) -> tuple[list, dict]:
  texts = [prompt_lib.render(tokenizer, r["prompt"]) for r in rows]
  ids = tokenizer.encode_batch(texts)
  kept = [(r, i) for r, i in zip(rows, ids) if len(i) <= max_len]
  if len(kept) < len(rows):
    print(f"gtalign: dropped {len(rows) - len(kept)} of {len(rows)} prompts longer than "
          f"{max_len} tokens")
  return [r for r, _ in kept], {r["row_id"]: i for r, i in kept}


def evaluate(run: Run, params, name: str) -> dict[str, np.ndarray]:
  """Greedy completions on the held-out prompts; per-row metrics as arrays."""
  cfg = run.config
  rows = run.eval_rows[:cfg.eval.num_prompts]
  out = run.sampler.generate(
      run.sampling_params(params), [run.prompt(r) for r in rows],
      SamplingConfig(max_new_tokens=cfg.eval.max_new_tokens, temperature=0.0, stop=(STOP,),
                     include_stop_str=True))
  scored = rollout.score_rows(rows, out.texts, run.judge, variant=cfg.rl.variant,
                              parse_mode=cfg.rl.parse_mode, on_judge_failure="zero")
  arrays = scored.arrays()
  arrays["welfare_optimal"] = np.asarray([rollout.chose_optimal(r, p)
                                          for r, p in zip(rows, scored.parsed)])
  arrays["response_tokens"] = out.lengths.astype(np.float64)
  print(f"gtalign: evaluated {name!r} on {len(rows)} held-out prompts: "
        f"welfare {arrays['welfare'].mean():.3f}, format {arrays['format_ok'].mean():.2f}")
  return arrays


def _sequence_arrays(run: Run, prompts, completions, user, llm, valid, sources, old_logp):
  batch = rollout.sequence_batch(prompts, completions, run.tokenizer.pad_id)
  batch["old_logp_bc"] = rollout.completion_array(old_logp, batch["targets_bc"].shape[1])
  batch.update(user_b=np.asarray(user, np.float32), llm_b=np.asarray(llm, np.float32),
               reward_valid_b=np.asarray(valid, np.float32),
               source_b=np.asarray(sources, np.int32))
  return batch


def sft_batch(run: Run, step: int) -> dict[str, np.ndarray]:
  rows = run.batch_rows(step, run.config.sft.batch_size)
  eos = run.tokenizer.eos_ids[0]
  completions = [run.tokenizer.encode(world_lib.reference_trace(r)) + [eos] for r in rows]
  return rollout.sequence_batch([run.prompt(r) for r in rows], completions, run.tokenizer.pad_id)


def rl_rollout(run: Run, params, step: int):
  """Sample G completions per prompt, score them, and build the update batch."""
  cfg = run.config.rl
  rows = run.batch_rows(step, cfg.prompts_per_step)
  start = time.perf_counter()
  out = run.sampler.generate(
      run.sampling_params(params), [run.prompt(r) for r in rows],
      SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                     top_p=cfg.top_p, num_samples=cfg.num_samples, stop=(STOP,),
                     include_stop_str=True, seed=run.config.seed * 1_000_003 + step))
  sample_seconds = time.perf_counter() - start
  row_of = [rows[i] for i in out.prompt_index]
  start = time.perf_counter()
  scored = rollout.score_rows(row_of, out.texts, run.judge, variant=cfg.variant,
                              parse_mode=cfg.parse_mode, on_judge_failure=cfg.on_judge_failure)
  judge_seconds = time.perf_counter() - start
  arrays = scored.arrays()
  batch = _sequence_arrays(
      run, [run.prompt(r) for r in row_of], out.tokens, arrays["user"], arrays["llm"],
      ~scored.judge_failed, [run.source_ids[r["data_source"]] for r in row_of], out.logprobs)
  stats = {f"rollout/{k}": float(v.mean()) for k, v in arrays.items()}
  stats.update({
      "rollout/response_tokens": float(out.lengths.mean()),
      "rollout/welfare_optimal": float(np.nanmean([rollout.chose_optimal(r, p) for r, p in
                                                   zip(row_of, scored.parsed)] or [np.nan])),
      "rollout/judge_failed": float(scored.judge_failed.mean()),
      "time/sample_s": sample_seconds, "time/judge_s": judge_seconds,
      "tokens": float(out.num_tokens + batch["attention_mask_bt"].sum()),
  })
  records = [{"row_id": r["row_id"], "question": r["extra_info"].get("question", ""),
              "completion": t, "user": res.user, "llm": res.llm, "welfare": res.score,
              "valid": p.valid, "reason": p.reason,
              "components": {k: v for k, v in res.components.items()
                             if isinstance(v, (int, float, bool))}}
             for r, t, res, p in zip(row_of, out.texts, scored.results, scored.parsed)]
  return batch, stats, records


def _make_critic(config, model_config, policy_params, ocfg, mesh, data_sharding, trainable):
  """PPO's value model, initialised from the policy, with its own optimizer and update step."""
  from gtalign.models import value
  params = value.critic_params_from_policy(policy_params)
  shardings = param_shardings(mesh, value.critic_logical_axes(logical_axes(model_config)),
                              shapes=params)
  mask = {"decoder": trainable, "kernel": True, "bias": True}
  tx = train_state.make_optimizer(
      train_state.make_schedule(config.rl.critic_lr, warmup_steps=config.rl.warmup_steps),
      weight_decay=config.rl.weight_decay, grad_clip=config.rl.grad_clip, trainable=mask)
  state_shardings = train_state.train_state_shardings(params, tx, mesh, shardings)
  return {
      "state": train_state.create_train_state(params, tx, mesh, shardings),
      "update": update.make_update_step(
          functools.partial(objective.critic_loss, model_config, ocfg), tx, state_shardings,
          data_sharding, num_microbatches=config.rl.num_microbatches, trainable=mask,
          prepare_batch=functools.partial(objective.gae_advantages, ocfg)),
      "values": jax.jit(functools.partial(objective.window_values, model_config)),
  }


def train(config, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) the configured training; returns the held-out results."""
  os.makedirs(workdir, exist_ok=True)
  model_config, params, tokenizer = load_model(config.model)
  train_rows, eval_rows = load_rows(config.data, config.seed)
  train_rows, ids = _tokenize_prompts(train_rows, tokenizer, config.data.max_prompt_length)
  eval_rows, eval_ids = _tokenize_prompts(eval_rows, tokenizer, config.data.max_prompt_length)
  sources = sorted({r["data_source"] for r in train_rows + eval_rows})
  sampler_config = model_config.replace(param_dtype=model_config.dtype)
  run = Run(config=config, model_config=model_config, tokenizer=tokenizer,
            sampler=Sampler(sampler_config, tokenizer), judge=make_judge(config.rl.judge),
            train_rows=train_rows, eval_rows=eval_rows, prompt_ids={**ids, **eval_ids},
            source_ids={s: i for i, s in enumerate(sources)},
            order=np.random.default_rng(config.seed).permutation(len(train_rows)))

  mesh = make_mesh(MeshConfig(**config.mesh))
  shardings = param_shardings(mesh, logical_axes(model_config), shapes=params)
  data_sharding = batch_sharding(mesh)
  trainable = train_state.trainable_mask(params, config.rl.trainable)
  sft_steps, rl_steps = config.sft.steps, config.rl.steps
  total_steps = sft_steps + rl_steps
  # one optimizer per phase, of identical structure: RL starts from fresh moments and its own
  # schedule (SFT's momentum would otherwise keep moving the weights on zero-advantage steps)
  def optimizer(lr, warmup):
    return train_state.make_optimizer(
        train_state.make_schedule(lr, warmup_steps=warmup), weight_decay=config.rl.weight_decay,
        grad_clip=config.rl.grad_clip, trainable=trainable)
  sft_tx = optimizer(config.sft.lr, config.sft.warmup_steps)
  tx = optimizer(config.rl.lr, config.rl.warmup_steps)
  state_shardings = train_state.train_state_shardings(params, tx, mesh, shardings)
  # a copy: the train state may share `params`' buffers, and the update step donates them
  ref_params = (jax.device_put(jax.tree.map(np.array, params), shardings) if config.rl.kl_coef
                else None)
  state = train_state.create_train_state(params, sft_tx if sft_steps else tx, mesh, shardings)
  del params

  ocfg = objective.ObjectiveConfig(
      group_size=config.rl.num_samples, num_sources=len(sources),
      advantage=config.rl.advantage, welfare=config.rl.welfare,
      welfare_alpha=config.rl.welfare_alpha, normalisation=config.rl.normalisation,
      clip_low=config.rl.clip_low, clip_high=config.rl.clip_high,
      dual_clip=config.rl.dual_clip or None, kl_coef=config.rl.kl_coef,
      kl_estimator=config.rl.kl_estimator, kl_in_reward=config.rl.kl_in_reward,
      entropy_coef=config.rl.entropy_coef,
      loss_agg=config.rl.loss_agg, loss_agg_norm=float(config.rl.max_new_tokens),
      gamma=config.rl.gamma, lam=config.rl.lam, value_clip=config.rl.value_clip)
  ppo = config.rl.algorithm == "ppo"
  if config.rl.algorithm not in ("grpo", "ppo"):
    raise ValueError(f"rl.algorithm={config.rl.algorithm!r}; expected 'grpo' or 'ppo'")
  if ppo != (config.rl.advantage == "gae"):
    raise ValueError("rl.algorithm='ppo' goes with rl.advantage='gae' (a critic), and 'grpo' "
                     f"with grpo/drgrpo/rloo; got advantage={config.rl.advantage!r}")
  prepare = objective.gae_advantages if ppo else objective.welfare_advantages
  sft_update = update.make_update_step(
      functools.partial(objective.sft_loss, model_config), sft_tx, state_shardings, data_sharding,
      num_microbatches=1, trainable=trainable)
  rl_update = update.make_update_step(
      functools.partial(objective.policy_loss, model_config, ocfg), tx, state_shardings,
      data_sharding, num_microbatches=config.rl.num_microbatches, trainable=trainable,
      prepare_batch=functools.partial(prepare, ocfg))
  critic = (_make_critic(config, model_config, jax.tree.map(np.asarray, state.params), ocfg,
                         mesh, data_sharding, trainable) if ppo else None)
  ref_logprobs = jax.jit(functools.partial(objective.sequence_logprobs, model_config))
  init_opt = jax.jit(tx.init, out_shardings=state_shardings.opt_state)

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.max_to_keep,
                      save_every=config.checkpoint.every)
  start = ckpt.latest_step() or 0
  evals: dict[str, dict[str, np.ndarray]] = {}
  if start:
    restored, meta = ckpt.restore(start, abstract_state={
        "policy": state, "critic": critic["state"] if critic else None})
    state = restored["policy"]
    if critic:
      critic["state"] = restored["critic"]
    evals = {k: {m: np.asarray(v) for m, v in d.items()} for k, d in meta["evals"].items()}
    print(f"gtalign: resumed from step {start} in {workdir}")
  else:
    evals["start"] = evaluate(run, state.params, "start")
    if sft_steps == 0:
      evals["after_sft"] = evals["start"]
  writer = MetricsWriter(workdir, total_steps, start_step=start)

  for step in range(start, total_steps):
    begin = time.perf_counter()
    if step < sft_steps:
      batch = sft_batch(run, step)
      state, metrics = sft_update(state, batch)
      stats = {"phase": 0.0, "tokens": float(batch["attention_mask_bt"].sum())}
      records = []
    else:
      if step == sft_steps and sft_steps:
        state = state.replace(opt_state=init_opt(state.params))  # the RL optimizer, fresh
      batch, stats, records = rl_rollout(run, state.params, step - sft_steps)
      if ref_params is not None:
        batch["ref_logp_bc"] = np.asarray(ref_logprobs(ref_params, batch))
      stats["phase"] = 1.0
      if critic:
        batch["old_values_bc"] = np.asarray(critic["values"](critic["state"].params, batch))
        critic["state"], critic_metrics = critic["update"](critic["state"], batch)
        stats.update({f"critic/{k}": float(v) for k, v in jax.device_get(critic_metrics).items()})
      state, metrics = rl_update(state, batch)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    metrics.update(stats, step_seconds=time.perf_counter() - begin)
    if records:
      writer.write_rollouts(step + 1, records)
    if step + 1 == sft_steps:
      evals["after_sft"] = evaluate(run, state.params, "after_sft")
    if (config.eval.every and step >= sft_steps
        and (step + 1 - sft_steps) % config.eval.every == 0 and step + 1 < total_steps):
      mid = evaluate(run, state.params, f"step_{step + 1}")
      metrics.update({f"eval/{k}": float(np.nanmean(v)) for k, v in mid.items()})
    writer.write(step + 1, metrics)
    meta = {"step": step + 1, "evals": {k: {m: v.tolist() for m, v in d.items()}
                                        for k, d in evals.items()}}
    ckpt.save(step + 1, {"policy": state, "critic": critic["state"] if critic else None}, meta,
              force=step + 1 == total_steps)
  ckpt.wait()
  writer.close()

  if "trained" not in evals:
    if rl_steps == 0:  # nothing changed since the last evaluation
      evals["trained"] = evals["after_sft"] if sft_steps else evals["start"]
    else:
      evals["trained"] = evaluate(run, state.params, "trained")
  ckpt.close()
  return report(workdir, evals, config.eval.bootstrap,
                {"start": 0, "after_sft": sft_steps, "trained": total_steps})


PLOT_KEYS = ("welfare", "user", "llm", "format_ok")


def plot_records(metrics: list[dict], evals: dict[str, dict[str, np.ndarray]],
                 eval_steps: dict[str, int]) -> list[dict]:
  """Training curves under the plot's keys, plus each held-out evaluation as eval/ points."""
  records = [dict(r, **{k: r[f"rollout/{k}"] for k in PLOT_KEYS if f"rollout/{k}" in r})
             for r in metrics]
  for name, step in eval_steps.items():
    if name in evals:
      records.append({"step": step, **{f"eval/{k}": float(np.nanmean(evals[name][k]))
                                        for k in PLOT_KEYS}})
  return records


def report(workdir: str, evals: dict[str, dict[str, np.ndarray]], n_boot: int,
           eval_steps: dict[str, int]) -> dict[str, Any]:
  """Held-out table (95% bootstrap intervals), welfare difference, plot; printed and saved."""
  table = evaluation.summary_table(evals, n_boot=n_boot)
  diff = evaluation.paired_difference_ci(evals["trained"]["welfare"], evals["start"]["welfare"],
                                         n_boot=n_boot)
  lines = [table, "", f"welfare(trained) - welfare(start): {diff[0]:+.3f} "
                      f"[{diff[1]:+.3f}, {diff[2]:+.3f}] (95% paired bootstrap)"]
  plot_path = plots.plot_training(plot_records(read_metrics(workdir), evals, eval_steps),
                                  os.path.join(workdir, "training.png"),
                                  title="welfare and its components (lines: RL rollouts at "
                                        "temperature 1; markers: greedy held-out evaluations)")
  lines.append(f"plot: {plot_path}")
  text = "\n".join(lines)
  print(text)
  with open(os.path.join(workdir, "eval_table.md"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  with open(os.path.join(workdir, "eval.json"), "w", encoding="utf-8") as f:
    json.dump({k: {m: v.tolist() for m, v in d.items()} for k, d in evals.items()}, f)
  return {"evals": evals, "welfare_diff": diff, "table": table}
