"""The training run: SFT warm start, then GRPO on mutual-welfare rewards, with evaluation.

Every step is a pure function of (config, step index, state): batch composition and sampling seeds
derive from the step, so a run killed at any point and resumed from its last checkpoint replays
exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gtalign.adapters import lora, memory
from gtalign.data import warm_start
from gtalign.data import world as world_lib
from gtalign.game import prompt as prompt_lib
from gtalign.game import trace as trace_lib
from gtalign.models.checkpoints import load_pretrained
from gtalign.models.config import get_preset
from gtalign.models.tokenizer import load_tokenizer
from gtalign.models.transformer import init_params, logical_axes
from gtalign.models.weights_cache import smollm2_gguf_path
from gtalign.parallel import distributed
from gtalign.parallel.handoff import WeightHandoff
from gtalign.parallel.mesh import (MeshConfig, ShardingRules, batch_sharding, make_mesh,
                                   param_shardings, sampler_mesh)
from gtalign.rewards import tasks
from gtalign.rewards.judges import make_judge
from gtalign.rl import objective, train_state, update
from gtalign.sampling.sampler import Sampler, SamplingConfig
from gtalign.training import distill, export, heldout, phases, rollout
from gtalign.training.eta import Eta, Phase
from gtalign.training.checkpoint import Checkpointer
from gtalign.training.metrics import MetricsWriter
from gtalign.utils.errors import InvalidInput

STOP = heldout.STOP
# ETA priors, until measured (gtalign.training.eta): an RL step and a held-out evaluation of the
# default run cost this many SFT steps (SmolLM2-135M on a 2-core CPU)
RL_STEP_COST = 2.4
EVAL_COST = 22.0


def load_model(cfg, seed: int = 0):
  """(model_config, host params, tokenizer); "tiny-random" is a random tiny Llama with SmolLM2's
  tokenizer, so tests exercise the real prompt and chat template in seconds. With `cfg.lora`
  (rank > 0) the params are the base (its projections quantized with `cfg.base_quant`) and
  fresh adapters drawn from `seed`."""
  if cfg.name == "tiny-random":
    tokenizer = load_tokenizer(smollm2_gguf_path())
    model_config = get_preset("tiny-llama").replace(vocab_size=tokenizer.vocab_size,
                                                    max_position_embeddings=4096)
    params = init_params(model_config, jax.random.PRNGKey(0))
  else:
    model_config, params, tokenizer = load_pretrained(cfg.name)
  model_config = model_config.replace(param_dtype=cfg.param_dtype, dtype=cfg.dtype,
                                      remat=cfg.remat)
  # host copies: every process places them onto the global mesh itself
  params = jax.tree.map(lambda a: np.asarray(a).astype(model_config.jnp_param_dtype), params)
  if tokenizer is None:
    raise InvalidInput(f"model.name={cfg.name!r} has no tokenizer files")
  model_config = lora.configure(model_config, cfg.lora, cfg.base_quant)
  if lora.enabled(model_config):
    params = lora.attach(model_config, params, jax.random.PRNGKey(seed))
  return model_config, params, tokenizer


def _judge(cfg):
  """The rule judge, or an HTTP judge with the run's model name, token budget and retries."""
  if cfg.judge == "rule":
    return make_judge("rule")
  return make_judge(cfg.judge, model=cfg.judge_model, max_tokens=cfg.judge_max_tokens,
                    max_retries=cfg.judge_max_retries, timeout_s=cfg.judge_timeout_s)


def load_rows(cfg, seed: int):
  """(train rows, eval rows, warm-start rows) with the configured prompt style; only the world
  has warm-start rows (questions no RL prompt asks)."""
  build = functools.partial(prompt_lib.build_messages, style=cfg.prompt_style)
  if cfg.source == "world":
    world = world_lib.make_world(seed=seed, num_train=cfg.num_train, num_test=cfg.num_test,
                                 vague_fraction=cfg.vague_fraction,
                                 test_fact_fraction=cfg.test_fact_fraction, build_messages=build)
    warm = warm_start.warm_rows(seed, cfg.num_warm, vague_fraction=cfg.vague_fraction,
                                test_fact_fraction=cfg.test_fact_fraction,
                                exclude={r["extra_info"]["question"] for r in world["train"]},
                                build_messages=build) if cfg.num_warm else []
    return world["train"], world["test"], warm
  from gtalign.data import gtalign as gtalign_data
  if not cfg.dir:
    raise InvalidInput(f"data.source={cfg.source!r} needs --config.data.dir=<GTAlign data "
                       "dir>")
  return (gtalign_data.read_rows(cfg.dir, cfg.source, "train"),
          gtalign_data.read_rows(cfg.dir, cfg.source, cfg.eval_split), [])


def _rows_origin(cfg, split: str) -> str:
  """Where a split's rows came from, for error messages: the parquet file, or the world."""
  if cfg.source == "world":
    return f"the built-in world's {split} split"
  from gtalign.data import gtalign as gtalign_data
  return gtalign_data.parquet_path(cfg.dir, cfg.source, split)


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
  orders: dict  # phase ("sft", "rl") -> its own slice of one seeded permutation of the rows
  handoff: WeightHandoff  # trainer params -> this process's sampler params (compute dtype)
  data_sharding: Any  # the update batch's sharding over the global mesh
  workdir: str = ""
  warm_rows: list = dataclasses.field(default_factory=list)  # the SFT warm start's questions
  warm_answers: dict = dataclasses.field(default_factory=dict)  # their plain answers (distill)
  sft_shape: tuple | None = None  # (width, window) of every SFT batch, set at the first one

  def sampler_params(self, params) -> tuple[Any, float]:
    """(the sampler's weights, seconds the hand-off took)."""
    start = time.perf_counter()
    out = jax.block_until_ready(self.handoff(params))
    return out, time.perf_counter() - start

  def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return distributed.global_batch(local, self.data_sharding)

  def prompt(self, row) -> list[int]:
    return self.prompt_ids[row["row_id"]]

  def batch_rows(self, step: int, size: int, phase: str) -> list:
    """Rows of the phase's step `step`: consecutive slices of its rows, cycling."""
    order = self.orders[phase]
    return [self.train_rows[order[(step * size + i) % len(order)]] for i in range(size)]


def phase_orders(rows: list, seed: int) -> dict[str, np.ndarray]:
  """RL's rows in the order its steps take them: one seeded permutation (the warm start has
  rows of its own, `warm_start.warm_rows`, that no RL prompt repeats).

  RL alternates definite and vague questions where rows have a type, so every step with an even
  number of prompts sees both types equally: a step of one type only would push the shared
  "answer" or "ask" direction for every question, and a few such steps in a row collapse the
  policy onto one move before it learns which type wants which.
  """
  order = np.random.default_rng(seed).permutation(len(rows))
  return {"rl": _alternate_types(order, rows)}


def _alternate_types(order: np.ndarray, rows: list) -> np.ndarray:
  """`order` re-interleaved DQ, VQ, DQ, VQ, ... (each type keeps its order); the longer type's
  surplus goes last. Rows without a question type keep `order`."""
  kind = [(rows[i].get("extra_info") or {}).get("question_type") for i in order]
  dq = [i for i, k in zip(order, kind) if k == "DQ"]
  vq = [i for i, k in zip(order, kind) if k == "VQ"]
  if len(dq) + len(vq) != len(order) or not dq or not vq:
    return order
  n = min(len(dq), len(vq))
  pairs = [i for pair in zip(dq[:n], vq[:n]) for i in pair]
  return np.asarray(pairs + dq[n:] + vq[n:], order.dtype)


def _tokenize_prompts(rows, tokenizer, max_len: int, where: str) -> tuple[list, dict]:
  """Token ids of each row's rendered prompt; rows over `max_len` tokens are dropped (with a
  logged count), and dropping every row is an error naming the key, the lengths and `where`."""
  texts = [prompt_lib.render(tokenizer, r["prompt"]) for r in rows]
  ids = tokenizer.encode_batch(texts)
  kept = [(r, i) for r, i in zip(rows, ids) if len(i) <= max_len]
  if rows and not kept:
    raise InvalidInput(f"every one of the {len(rows)} prompts of {where} is longer than "
                       f"data.max_prompt_length={max_len} tokens (the shortest has "
                       f"{min(map(len, ids))}); raise data.max_prompt_length")
  if len(kept) < len(rows):
    distributed.log(f"gtalign: dropped {len(rows) - len(kept)} of {len(rows)} prompts longer "
                    f"than {max_len} tokens")
  return [r for r, _ in kept], {r["row_id"]: i for r, i in kept}


def _local_rows(rows: list) -> tuple[list, slice]:
  """This process's block of a step's rows, and where it sits among them."""
  part = distributed.process_rows(len(rows))
  return rows[part], part


def _agreed_shape(prompts, completions) -> tuple[int, int]:
  """Padded (width, window) every process uses, so their rows stack into one global batch."""
  return tuple(distributed.agree_max(rollout.sequence_shape(prompts, completions)))


def _sft_text(run: Run, row) -> str:
  return warm_start.reference_trace(row, run.config.sft.warm_start, run.warm_answers,
                                    run.config.sft.tables, run.config.sft.chosen_first)


def _sft_ids(run: Run, text: str) -> list[int]:
  return run.tokenizer.encode(text) + [run.tokenizer.eos_ids[0]]


def sft_batch(run: Run, step: int) -> tuple[dict[str, jax.Array], float]:
  """(global SFT batch of reference traces, number of tokens in it)."""
  size = run.config.sft.batch_size
  if not run.warm_rows:
    raise InvalidInput("sft.steps > 0 needs warm-start rows: the built-in world "
                       "(data.source='world') with data.num_warm > 0")
  rows, _ = _local_rows([run.warm_rows[(step * size + i) % len(run.warm_rows)]
                         for i in range(size)])
  texts = [_sft_text(run, r) for r in rows]
  completions = [_sft_ids(run, t) for t in texts]
  prompts = [run.prompt(r) for r in rows]
  if run.sft_shape is None:
    # one shape for every SFT step, the widest warm-start row's (every process sees all of
    # them, so they agree): a shape per batch recompiled the update whenever a batch came out
    # longer (tens of seconds each time for the 135M model on 2 cores, ~5 s for the tiny one)
    every = run.warm_rows
    run.sft_shape = rollout.sequence_shape([run.prompt(r) for r in every],
                                           [_sft_ids(run, _sft_text(run, r)) for r in every])
  local = rollout.sequence_batch(prompts, completions, run.tokenizer.pad_id,
                                 shape=run.sft_shape)
  weight = run.config.sft.response_weight
  if weight != 1.0:  # the response carries the key out: its tokens weigh more in the mean
    for i, text in enumerate(texts):
      start = warm_start.response_token_start(run.tokenizer.encode, text)
      if start is not None:
        local["loss_mask_bc"][i, start:len(completions[i])] *= weight
  tokens = distributed.gather_rows({"t": local["attention_mask_bt"].sum(1)},
                                   run.config.sft.batch_size)["t"].sum()
  return run.global_batch(local), float(tokens)


ROLLOUT_ROW_METRICS = ("user", "llm", "welfare", "format_ok", "valid", "completion_tokens",
                       *rollout.BEHAVIOUR_KEYS[1:], "response_tokens", "reasoning_tokens",
                       "judge_failed", "tokens")


def rl_rollout(run: Run, params, step: int):
  """Sample G completions per prompt of this process, score them, build the update batch.

  Returns (global batch, stats reduced over all processes, this process's rollout records).
  """
  cfg = run.config.rl
  rows, part = _local_rows(run.batch_rows(step, cfg.prompts_per_step, "rl"))
  phases.enter("sample", run.config.sft.steps + step)
  sampler_params, handoff_seconds = run.sampler_params(params)
  start = time.perf_counter()
  out = run.sampler.generate(
      sampler_params, [run.prompt(r) for r in rows],
      SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                     top_p=cfg.top_p, num_samples=cfg.num_samples, stop=(STOP,),
                     include_stop_str=True, seed=run.config.seed * 1_000_003 + step),
      prompt_indices=np.arange(part.start, part.stop))
  sample_seconds = time.perf_counter() - start
  row_of = [rows[i - part.start] for i in out.prompt_index]  # global prompt index -> row
  phases.enter("judge", run.config.sft.steps + step)
  start = time.perf_counter()
  scored = rollout.score_rows(row_of, out.texts, run.judge, variant=cfg.variant,
                              parse_mode=cfg.parse_mode, on_judge_failure=cfg.on_judge_failure,
                              world_consistency=cfg.world_consistency,
                              world_misread=cfg.world_misread,
                              world_unpriced=cfg.world_unpriced)
  judge_seconds = time.perf_counter() - start
  arrays = scored.arrays()
  prompts = [run.prompt(r) for r in row_of]
  local = rollout.sequence_batch(prompts, out.tokens, run.tokenizer.pad_id,
                                 shape=_agreed_shape(prompts, out.tokens))
  local["old_logp_bc"] = rollout.completion_array(out.logprobs, local["targets_bc"].shape[1])
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
  per_row = distributed.gather_rows(per_row, cfg.prompts_per_step * cfg.num_samples)
  # the step waits for its slowest process
  handoff_s, sample_s, judge_s = distributed.agree_max([handoff_seconds, sample_seconds,
                                                        judge_seconds])
  stats = heldout.finite_means({k: per_row[k] for k in ROLLOUT_ROW_METRICS if k != "tokens"},
                               prefix="rollout/")
  stats.update({"time/handoff_s": float(handoff_s), "time/sample_s": float(sample_s),
                "time/judge_s": float(judge_s), "tokens": float(per_row["tokens"].sum())})
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
  return run.global_batch(local), stats, records


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
      "values": jax.jit(functools.partial(objective.window_values, model_config),
                        out_shardings=data_sharding),
  }


def _handoff(config, model_config, params, shardings, mesh) -> WeightHandoff:
  """Trainer params -> the sampler's: cast to the compute dtype, and with adapters merged into
  a plain decoder's weights (once per RL step; bench/lora.py measures it against running the
  adapters in the sampler's forward)."""
  local_mesh = _sampler_mesh(config, mesh)
  if not lora.enabled(model_config):
    return WeightHandoff(logical_axes(model_config), params, shardings, local_mesh,
                         model_config.jnp_dtype)
  plain = lora.plain(model_config)
  shapes = lora.abstract_params(plain)
  return WeightHandoff(logical_axes(plain), shapes,
                       param_shardings(mesh, logical_axes(plain), shapes=shapes), local_mesh,
                       model_config.jnp_dtype,
                       transform=functools.partial(lora.merge, model_config,
                                                   dtype=model_config.jnp_dtype))


def _check_batch_sizes(config, mesh) -> None:
  """Prompts split evenly over processes, and update batches over the mesh's batch shards."""
  shards = math.prod(mesh.shape[a] for a in ShardingRules().mesh_axes("batch"))
  distributed.check_divisible("rl.prompts_per_step", config.rl.prompts_per_step)
  if config.sft.steps:
    distributed.check_divisible("sft.batch_size", config.sft.batch_size)
    distributed.check_divisible("sft.batch_size", config.sft.batch_size, shards)
  distributed.check_divisible("rl.prompts_per_step * rl.num_samples",
                              config.rl.prompts_per_step * config.rl.num_samples, shards)


def _sampler_mesh(config, mesh):
  """`sampler_mesh` "data,fsdp,tensor" over this process's devices; "" = the trainer mesh in a
  single-process run, else FSDP over the process's devices."""
  spec = config.sampler_mesh
  if spec:
    try:
      sizes = tuple(int(x) for x in spec.split(","))
      if len(sizes) != 3:
        raise ValueError
    except ValueError:
      raise InvalidInput(f"sampler_mesh={spec!r}; expected 'data,fsdp,tensor' sizes such as "
                       "'1,-1,1'") from None
    return sampler_mesh(sizes)
  if jax.process_count() == 1:
    return sampler_mesh(tuple(mesh.shape[a] for a in mesh.axis_names))
  # FSDP over the process's devices, with as much of the trainer's tensor axis as fits in them
  return sampler_mesh((1, -1, math.gcd(mesh.shape["tensor"], jax.local_device_count())))


def sharding_summary(state, mesh) -> str:
  """Per-device parameter and optimizer bytes against their unsharded totals, as a log line."""
  fmt = distributed.format_bytes
  params = max(distributed.bytes_per_device(state.params).values())
  opt = max(distributed.bytes_per_device(state.opt_state).values())
  total_p = distributed.total_bytes(state.params)
  total_o = distributed.total_bytes(state.opt_state)
  return (f"gtalign: mesh {dict(mesh.shape)} over {jax.device_count()} devices in "
          f"{jax.process_count()} process(es); per device: params {fmt(params)} + optimizer "
          f"{fmt(opt)} (unsharded {fmt(total_p)} + {fmt(total_o)}, "
          f"{(params + opt) / max(total_p + total_o, 1):.1%} per device)")


def _check_options(config) -> None:
  """Options a run reads only later (at its first rollout, evaluation or checkpoint), checked
  before anything loads, naming the key."""
  for key, value, allowed in (("rl.variant", config.rl.variant, tasks.VARIANTS),
                              ("rl.on_judge_failure", config.rl.on_judge_failure,
                               tasks.JUDGE_FAILURE_MODES),
                              ("rl.parse_mode", config.rl.parse_mode, trace_lib.MODES),
                              ("sft.warm_start", config.sft.warm_start, warm_start.WARM_STARTS),
                              ("sft.tables", config.sft.tables, warm_start.TABLES)):
    if value not in allowed:
      raise InvalidInput(f"{key}={value!r}; expected one of {', '.join(allowed)}")
  if config.checkpoint.every < 1:
    raise InvalidInput(f"checkpoint.every={config.checkpoint.every}; expected >= 1")
  lora.check(config.model.lora, config.model.base_quant)
  _objective_config(config, num_sources=1)


def _objective_config(config, num_sources: int) -> objective.ObjectiveConfig:
  """The objective's settings; a value it rejects is the user's rl.* config, named as such."""
  rl = config.rl
  try:
    return objective.ObjectiveConfig(
        group_size=rl.num_samples, num_sources=num_sources, advantage=rl.advantage,
        welfare=rl.welfare, welfare_alpha=rl.welfare_alpha, normalisation=rl.normalisation,
        clip_low=rl.clip_low, clip_high=rl.clip_high, dual_clip=rl.dual_clip or None,
        kl_coef=rl.kl_coef, kl_estimator=rl.kl_estimator, kl_in_reward=rl.kl_in_reward,
        entropy_coef=rl.entropy_coef, adv_std_floor=rl.adv_std_floor,
        temperature=rl.temperature, loss_agg=rl.loss_agg,
        loss_agg_norm=float(rl.max_new_tokens), gamma=rl.gamma, lam=rl.lam,
        value_clip=rl.value_clip)
  except ValueError as e:
    raise InvalidInput(f"rl config: {e}") from e


def train(config, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) the configured training; returns the held-out results."""
  _check_options(config)
  os.makedirs(workdir, exist_ok=True)
  phases.enter("load")
  model_config, params, tokenizer = load_model(config.model, config.seed)
  adapters_on = lora.enabled(model_config)
  adapter_meta = (lora.resume_meta(model_config, lora.split(params)[0]) if adapters_on
                  else {})
  train_rows, eval_rows, warm_rows = load_rows(config.data, config.seed)
  train_rows, ids = _tokenize_prompts(train_rows, tokenizer, config.data.max_prompt_length,
                                      _rows_origin(config.data, "train"))
  warm_rows, warm_ids = _tokenize_prompts(warm_rows, tokenizer, config.data.max_prompt_length,
                                          "the world's warm start")
  eval_rows, eval_ids = _tokenize_prompts(eval_rows, tokenizer, config.data.max_prompt_length,
                                          _rows_origin(config.data, config.data.eval_split))
  sources = sorted({r["data_source"] for r in train_rows + eval_rows})
  mesh = make_mesh(MeshConfig(**config.mesh))
  shardings = param_shardings(mesh, logical_axes(model_config), shapes=params)
  data_sharding = batch_sharding(mesh)
  _check_batch_sizes(config, mesh)
  handoff = _handoff(config, model_config, params, shardings, mesh)
  # the sampler runs the plain decoder: adapters are merged into its weights at each hand-off
  sampler_config = lora.plain(model_config).replace(param_dtype=model_config.dtype)
  run = Run(config=config, model_config=model_config, tokenizer=tokenizer,
            sampler=Sampler(sampler_config, tokenizer), judge=_judge(config.rl),
            train_rows=train_rows, eval_rows=eval_rows,
            prompt_ids={**ids, **eval_ids, **warm_ids},
            source_ids={s: i for i, s in enumerate(sources)},
            orders=phase_orders(train_rows, config.seed),
            handoff=handoff, data_sharding=data_sharding, workdir=workdir, warm_rows=warm_rows)
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
  distributed.log(sharding_summary(state, mesh))
  longest = max((len(i) for i in run.prompt_ids.values()), default=None)
  distributed.log(memory.plan(model_config, config, longest).line())

  ocfg = _objective_config(config, len(sources))
  ppo = config.rl.algorithm == "ppo"
  if config.rl.algorithm not in ("grpo", "ppo"):
    raise InvalidInput(f"rl.algorithm={config.rl.algorithm!r}; expected 'grpo' or 'ppo'")
  if ppo != (config.rl.advantage == "gae"):
    raise InvalidInput("rl.algorithm='ppo' goes with rl.advantage='gae' (a critic), and 'grpo' "
                     f"with grpo/drgrpo/rloo; got advantage={config.rl.advantage!r}")
  prepare = objective.gae_advantages if ppo else objective.welfare_advantages
  sft_update = update.make_update_step(
      functools.partial(objective.sft_loss, model_config), sft_tx, state_shardings, data_sharding,
      num_microbatches=1, trainable=trainable)
  rl_update = update.make_update_step(
      functools.partial(objective.policy_loss, model_config, ocfg), tx, state_shardings,
      data_sharding, num_microbatches=config.rl.num_microbatches, trainable=trainable,
      prepare_batch=functools.partial(prepare, ocfg))
  critic = (_make_critic(config, model_config, host_params, ocfg, mesh, data_sharding,
                         trainable) if ppo else None)
  del host_params
  # with adapters the KL reference is the same weights with the adapters off: no copy
  ref_logprobs = jax.jit(functools.partial(
      objective.sequence_logprobs,
      lora.adapters_off(model_config) if adapters_on else model_config,
      temperature=config.rl.temperature), out_shardings=data_sharding)
  keep_reference = bool(config.rl.kl_coef) and not adapters_on
  # the KL reference is the policy as RL starts (after the warm start), kept in checkpoints;
  # a copy, since the update step donates the train state's buffers
  copy_params = jax.jit(lambda p: jax.tree.map(jnp.copy, p),
                        out_shardings=state_shardings.params)
  ref_params = None
  init_opt = jax.jit(tx.init, out_shardings=state_shardings.opt_state)

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.max_to_keep,
                      save_every=config.checkpoint.every)
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
  eta = Eta([Phase("sft", sft_steps, 1.0), Phase("rl", rl_steps, RL_STEP_COST)],
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
      batch, tokens = sft_batch(run, step)
      state, metrics = sft_update(state, batch)
      stats = {"phase": 0.0, "tokens": tokens}
      records = []
    else:
      if step == sft_steps and sft_steps:
        state = state.replace(opt_state=init_opt(state.params))  # the RL optimizer, fresh
      if step == sft_steps and keep_reference:
        ref_params = copy_params(state.params)
      batch, stats, records = rl_rollout(run, state.params, step - sft_steps)
      if ref_params is not None:
        batch["ref_logp_bc"] = ref_logprobs(ref_params, batch)
      elif adapters_on and config.rl.kl_coef:
        batch["ref_logp_bc"] = ref_logprobs(state.params, batch)
      stats["phase"] = 1.0
      if critic:
        batch["old_values_bc"] = critic["values"](critic["state"].params, batch)
        critic["state"], critic_metrics = critic["update"](critic["state"], batch)
        stats.update({f"critic/{k}": float(v) for k, v in jax.device_get(critic_metrics).items()})
      phases.enter("update", step)
      state, metrics = rl_update(state, batch)
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
    ckpt.save(step + 1, saved(state, critic["state"] if critic else None, ref_params), meta,
              force=step + 1 == total_steps)
  ckpt.wait()
  writer.close()

  if "trained" not in evals:
    if rl_steps == 0:  # nothing changed since the last evaluation
      evals["trained"] = evals["after_sft"] if sft_steps else evals["start"]
    else:
      evals["trained"] = timed_eval("trained")
  ckpt.close()
  phases.enter("export", total_steps)
  export_dir = os.path.join(workdir, "export")
  host_params = distributed.host_params(state.params)
  if distributed.is_main():
    export_config = lora.plain(model_config) if adapters_on else model_config
    export.export_policy(export_dir, export_config,
                         lora.merge(model_config, host_params) if adapters_on else host_params,
                         tokenizer, prompt_style=config.data.prompt_style, system=None)
    if adapters_on:
      path = export.export_adapter(export_dir, config.model.name, model_config, host_params,
                                   tokenizer, prompt_style=config.data.prompt_style)
      distributed.log(f"gtalign: adapters written to {path} (PEFT format; python -m "
                      f"gtalign.serve --model=... --adapter={path})")
    distributed.log(f"gtalign: trained policy written to {export_dir} (python -m gtalign.sample "
                    f"--model={export_dir} --game --prompt=...)")
  return heldout.report(workdir, evals, config.eval.bootstrap,
                        {"start": 0, "after_sft": sft_steps, "trained": total_steps})
