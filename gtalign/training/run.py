"""A run's set-up: the model, its rows and their tokens, the sampler and judge, and option checks.

Training, evaluation and comparison all start from `build(config, workdir)`: one place decides how
a config turns into loaded weights, tokenized prompts and a `Run`, so an evaluated policy sees
exactly the prompts and judge its training saw.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from gtalign.adapters import lora
from gtalign.data import warm_start
from gtalign.data import world as world_lib
from gtalign.evaluation import steering
from gtalign.game import payoff as payoff_lib
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
from gtalign.rl import objective
from gtalign.sampling.sampler import Sampler
from gtalign.training import phases, priced_groups
from gtalign.training.checkpoint import read_latest
from gtalign.utils.errors import InvalidInput

ALGORITHMS = {"grpo": ("grpo", "drgrpo", "rloo"), "ppo": ("gae",)}  # algorithm -> advantages


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


def run_judge(cfg):
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


def rows_origin(cfg, split: str) -> str:
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
  simulator: Any = None  # the simulated user of multi-turn episodes (gtalign.dialogue)

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


def rl_seed(config) -> int:
  """The RL phase's seed: `seed` alone when rl.seed is 0 (the runs before rl.seed existed)."""
  return config.seed + 1_000_003 * config.rl.seed


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


def tokenize_prompts(rows, tokenizer, max_len: int, where: str) -> tuple[list, dict]:
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


def make_handoff(config, model_config, params, shardings, mesh) -> WeightHandoff:
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


def check_batch_sizes(config, mesh) -> None:
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


def check_options(config) -> None:
  """Options a run reads only later (at its first rollout, evaluation or checkpoint), checked
  before anything loads, naming the key."""
  for key, value, allowed in (("rl.variant", config.rl.variant, tasks.VARIANTS),
                              ("rl.on_judge_failure", config.rl.on_judge_failure,
                               tasks.JUDGE_FAILURE_MODES),
                              ("rl.parse_mode", config.rl.parse_mode, trace_lib.MODES),
                              ("sft.warm_start", config.sft.warm_start, warm_start.WARM_STARTS),
                              ("sft.tables", config.sft.tables, warm_start.TABLES),
                              ("sft.scan", config.sft.scan, warm_start.SCANS),
                              ("sft.draw", config.sft.draw, warm_start.DRAWS),
                              ("sft.rows", config.sft.rows, warm_start.ROWS),
                              ("eval.steering_edit", config.eval.steering_edit,
                               steering.EDITS),
                              ("rl.priced_edit", config.rl.priced_edit, steering.EDITS),
                              ("rl.priced_train", config.rl.priced_train,
                               priced_groups.TRAINS),
                              ("rl.priced_types", config.rl.priced_types,
                               priced_groups.TYPES)):
    if value not in allowed:
      raise InvalidInput(f"{key}={value!r}; expected one of {', '.join(allowed)}")
  algorithm, advantage = config.rl.algorithm, config.rl.advantage
  if algorithm not in ALGORITHMS:
    raise InvalidInput(f"rl.algorithm={algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
  if advantage not in ALGORITHMS[algorithm]:
    raise InvalidInput(f"rl.advantage={advantage!r} does not go with rl.algorithm="
                       f"{algorithm!r} (a critic's 'gae' goes with 'ppo'; grpo, drgrpo and "
                       "rloo with 'grpo')")
  if not 0.0 <= config.sft.hedge < 1.0:
    raise InvalidInput(f"sft.hedge={config.sft.hedge}; expected AQ's share in [0, 1)")
  for key in ("train_thinking", "train_analyze", "train_other_row"):
    if not config.rl[key] and config.rl.max_turns > 1:
      raise InvalidInput(f"rl.{key}=False applies to single-turn rollouts; with "
                         f"rl.max_turns={config.rl.max_turns} set it to True")
  for key, off in (("thinking_kl", 0.0), ("grade_reading", "off")):
    if config.rl[key] != off and config.rl.train_thinking:
      raise InvalidInput(f"rl.{key}={config.rl[key]} applies to the <thinking> block that RL "
                         "leaves out of its welfare's loss; set rl.train_thinking=False")
  if config.rl.table_temperature and config.rl.max_turns > 1:
    raise InvalidInput(f"rl.table_temperature={config.rl.table_temperature} applies to "
                       f"single-turn rollouts; with rl.max_turns={config.rl.max_turns} set it to 0")
  if config.rl.table_numbers not in payoff_lib.NUMBERS_AFTER:
    raise InvalidInput(f"rl.table_numbers={config.rl.table_numbers!r}; expected one of "
                       f"{sorted(payoff_lib.NUMBERS_AFTER)}")
  if config.rl.table_top_k < 0:
    raise InvalidInput(f"rl.table_top_k={config.rl.table_top_k}; expected >= 0 (0 = all)")
  if config.rl.table_temperature < 0 or (config.rl.table_temperature
                                         and not config.rl.temperature):
    raise InvalidInput(f"rl.table_temperature={config.rl.table_temperature}; expected >= 0, "
                       f"with rl.temperature > 0 (got {config.rl.temperature})")
  if config.rl.other_row_kl and config.rl.max_turns > 1:
    raise InvalidInput(f"rl.other_row_kl={config.rl.other_row_kl} applies to single-turn "
                       f"rollouts; with rl.max_turns={config.rl.max_turns} set it to 0")
  if config.rl.world_hedge < 0:
    raise InvalidInput(f"rl.world_hedge={config.rl.world_hedge}; expected a factor >= 0 on "
                       "an AQ's answer term")
  if config.rl.scan_rows < 0 or (config.rl.scan_rows and config.rl.max_turns > 1):
    raise InvalidInput(f"rl.scan_rows={config.rl.scan_rows}; expected >= 0, and above 0 only "
                       "with single-turn rollouts (rl.max_turns=1)")
  if config.rl.scan_weight <= 0:
    raise InvalidInput(f"rl.scan_weight={config.rl.scan_weight}; expected > 0 (rl.scan_rows=0 "
                       "turns scan rows off)")
  for key in ("steer_groups", "priced_groups"):
    groups = config.rl[key]
    if groups < 0 or (groups and (config.rl.max_turns > 1 or algorithm != "grpo")):
      raise InvalidInput(f"rl.{key}={groups}; expected >= 0, and above 0 only with "
                         "single-turn rollouts (rl.max_turns=1) and rl.algorithm='grpo'")
    if groups and jax.process_count() > 1:
      # each process edits its own rollouts; processes whose rollouts wrote fewer tables
      # would hand the global batch different numbers of rows
      raise InvalidInput(f"rl.{key}={groups} runs in one process only; this run has "
                         f"{jax.process_count()}")
  if config.rl.max_turns < 1 or config.eval.dialogue_turns < 0:
    raise InvalidInput(f"rl.max_turns={config.rl.max_turns}, eval.dialogue_turns="
                       f"{config.eval.dialogue_turns}; expected max_turns >= 1 and "
                       "dialogue_turns >= 0")
  if config.rl.max_turns > 1 and algorithm != "grpo":
    raise InvalidInput(f"rl.max_turns={config.rl.max_turns} trains episodes with "
                       f"rl.algorithm='grpo', not {algorithm!r}")
  if (config.rl.max_turns > 1 or config.eval.dialogue_turns) and not (
      config.rl.simulator == "rule" or config.rl.simulator.startswith(("http://", "https://"))):
    raise InvalidInput(f"rl.simulator={config.rl.simulator!r}; expected 'rule' or an http(s):// "
                       "base URL of an OpenAI-compatible server")
  if config.rl.updates_per_batch < 1:
    raise InvalidInput(f"rl.updates_per_batch={config.rl.updates_per_batch}; expected >= 1")
  for key in ("every", "sft_every"):
    if config.checkpoint[key] < 1:
      raise InvalidInput(f"checkpoint.{key}={config.checkpoint[key]}; expected >= 1")
  lora.check(config.model.lora, config.model.base_quant)
  objective_config(config, num_sources=1)


def objective_config(config, num_sources: int) -> objective.ObjectiveConfig:
  """The objective's settings; a value it rejects is the user's rl.* config, named as such."""
  rl = config.rl
  try:
    return objective.ObjectiveConfig(
        group_size=rl.num_samples, num_sources=num_sources, advantage=rl.advantage,
        welfare=rl.welfare, welfare_alpha=rl.welfare_alpha, normalisation=rl.normalisation,
        clip_low=rl.clip_low, clip_high=rl.clip_high, dual_clip=rl.dual_clip or None,
        kl_coef=rl.kl_coef, kl_estimator=rl.kl_estimator, kl_in_reward=rl.kl_in_reward,
        thinking_kl=rl.thinking_kl, other_row_kl=rl.other_row_kl,
        grade_reading=rl.grade_reading,
        entropy_coef=rl.entropy_coef, adv_std_floor=rl.adv_std_floor,
        temperature=rl.temperature, span_temperature=rl.table_temperature,
        loss_agg=rl.loss_agg,
        loss_agg_norm=float(rl.max_new_tokens), gamma=rl.gamma, lam=rl.lam,
        value_clip=rl.value_clip)
  except ValueError as e:
    raise InvalidInput(f"rl config: {e}") from e




def build(config, workdir: str) -> tuple[Run, Any, Any, Any]:
  """(the run, host params, the global mesh, the params' shardings) for `config`: options
  checked, model loaded, rows read and tokenized (over-long prompts dropped with a count)."""
  check_options(config)
  os.makedirs(workdir, exist_ok=True)
  phases.enter("load")
  model_config, params, tokenizer = load_model(config.model, config.seed)
  train_rows, eval_rows, warm_rows = load_rows(config.data, config.seed)
  max_len = config.data.max_prompt_length
  train_rows, ids = tokenize_prompts(train_rows, tokenizer, max_len,
                                     rows_origin(config.data, "train"))
  warm_rows, warm_ids = tokenize_prompts(warm_rows, tokenizer, max_len, "the world's warm start")
  eval_rows, eval_ids = tokenize_prompts(eval_rows, tokenizer, max_len,
                                         rows_origin(config.data, config.data.eval_split))
  sources = sorted({r["data_source"] for r in train_rows + eval_rows})
  mesh = make_mesh(MeshConfig(**config.mesh))
  shardings = param_shardings(mesh, logical_axes(model_config), shapes=params)
  check_batch_sizes(config, mesh)
  # the sampler runs the plain decoder: adapters are merged into its weights at each hand-off
  sampler_config = lora.plain(model_config).replace(param_dtype=model_config.dtype)
  run = Run(config=config, model_config=model_config, tokenizer=tokenizer,
            sampler=Sampler(sampler_config, tokenizer), judge=run_judge(config.rl),
            train_rows=train_rows, eval_rows=eval_rows,
            prompt_ids={**ids, **eval_ids, **warm_ids},
            source_ids={s: i for i, s in enumerate(sources)},
            orders=phase_orders(train_rows, rl_seed(config)),
            handoff=make_handoff(config, model_config, params, shardings, mesh),
            data_sharding=batch_sharding(mesh), workdir=workdir, warm_rows=warm_rows)
  if config.rl.max_turns > 1 or config.eval.dialogue_turns:
    from gtalign.dialogue import rollout as dialogue  # pylint: disable=import-outside-toplevel
    run.simulator = dialogue.simulator(config)
  return run, params, mesh, shardings


CONFIG_FILE = "config.json"  # the run's config, written into its workdir at every start


def save_config(config, workdir: str) -> None:
  """`workdir/config.json`, so a workdir alone says how to rebuild its policy (gtalign.evaluate)."""
  if not distributed.is_main():
    return
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(config.to_json(indent=2) + "\n")
  os.replace(path + ".tmp", path)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run's workdir was started with (`save_config`)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise InvalidInput(f"{path} not found: {workdir} is not a workdir of a run started by this "
                       "version of gtalign.main (pass its export/ directory instead)")
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except json.JSONDecodeError as e:
    raise InvalidInput(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
  rl = saved.get("rl") if isinstance(saved, dict) else None
  if isinstance(rl, dict) and isinstance(rl.get("grade_reading"), bool):
    # runs of ba2c3aa and 01a8ff2 saved it as a bool: True was today's "group"
    rl["grade_reading"] = "group" if rl["grade_reading"] else "off"
  return ml_collections.ConfigDict(saved)


def policy_from_workdir(workdir: str, config, model_config, params) -> tuple[Any, int]:
  """(host params of the run's newest committed checkpoint, its step). With adapters the
  checkpoint holds only them: the base is `params`' own (as `load_model` built it)."""
  step, state, _ = read_latest(os.path.join(workdir, "checkpoints"))
  policy = state["policy"]["params"]
  if lora.enabled(model_config):
    mask = lora.trainable(params, config.rl.trainable)
    policy = lora.join(lora.select(params, mask)[1], policy)
  return policy, step
