"""Runs sharded checks in a fresh process, where the device count can still be chosen.

`python tests/parallel_worker.py --devices 8 --mesh 2,2,2 --checks shardings,train` prints one
JSON object. Set XLA_FLAGS before this starts (the test does); `--devices` is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gtalign.models.config import get_preset  # noqa: E402
from gtalign.models.transformer import Decoder, init_params, logical_axes  # noqa: E402
from gtalign.parallel import mesh as mesh_lib  # noqa: E402
from gtalign.rl import train_state as ts  # noqa: E402
from gtalign.rl.update import make_update_step  # noqa: E402

CONFIG = get_preset("tiny-llama")


def token_nll_loss(params, batch):
  """Token-level cross-entropy as (sum of masked NLL, number of target tokens)."""
  logits_btv, _ = Decoder(CONFIG).apply({"params": params}, batch["tokens"], batch["positions"])
  logp_btv = jax.nn.log_softmax(logits_btv.astype(jnp.float32))
  nll_bt = -jnp.take_along_axis(logp_btv, batch["targets"][..., None], -1)[..., 0]
  mask_bt = batch["mask"].astype(jnp.float32)
  correct_bt = (jnp.argmax(logits_btv, -1) == batch["targets"]).astype(jnp.float32)
  accuracy = jnp.sum(correct_bt * mask_bt) / jnp.maximum(mask_bt.sum(), 1.0)
  return jnp.sum(nll_bt * mask_bt), mask_bt.sum(), {"accuracy": accuracy}


def make_batch(batch_size: int = 16, length: int = 16, seed: int = 0):
  """Random tokens with a ragged loss mask, identical in every process."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, CONFIG.vocab_size, (batch_size, length + 1)).astype(np.int32)
  lengths = rng.integers(length // 4, length + 1, (batch_size,))
  return {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
          "positions": np.tile(np.arange(length, dtype=np.int32), (batch_size, 1)),
          "mask": np.arange(length)[None, :] < lengths[:, None]}


def init_tiny_params(config=CONFIG, seed: int = 0):
  """Jitted init: op-by-op `init_params` costs seconds of dispatch on 2 cores."""
  return jax.jit(init_params, static_argnums=0)(config, jax.random.PRNGKey(seed))


def spec_str(sharding) -> str:
  return str(tuple(sharding.spec))


def check_shardings(mesh):
  params = jax.eval_shape(lambda: init_params(CONFIG, jax.random.PRNGKey(0)))
  shardings = mesh_lib.param_shardings(mesh, logical_axes(CONFIG), shapes=params)
  flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
  qwen = get_preset("tiny-qwen2")
  qwen_params = jax.eval_shape(lambda: init_params(qwen, jax.random.PRNGKey(0)))
  qwen_shardings = mesh_lib.param_shardings(mesh, logical_axes(qwen), shapes=qwen_params)
  return {
      "mesh_shape": dict(mesh.shape),
      "axis_types": [str(t) for t in mesh.axis_types],
      "specs": {ts.path_str(p): spec_str(s) for p, s in flat},
      "qwen_k_proj": spec_str(qwen_shardings["layers_0"]["self_attn"]["k_proj"]["kernel"]),
      "batch": spec_str(mesh_lib.batch_sharding(mesh)),
  }


def check_train(mesh, steps: int, num_microbatches: int):
  params = init_tiny_params()
  shardings = mesh_lib.param_shardings(mesh, logical_axes(CONFIG), shapes=params)
  tx = ts.make_optimizer(1e-3, warmup_steps=2)
  state = ts.create_train_state(params, tx, mesh, shardings)
  state_shardings = ts.train_state_shardings(params, tx, mesh, shardings)
  step = make_update_step(token_nll_loss, tx, state_shardings, mesh_lib.batch_sharding(mesh),
                          num_microbatches)
  batch = make_batch()
  metrics = []
  for _ in range(steps):
    state, m = step(state, batch)
    metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
  count = jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
  scalars = [x for _, x in count if x.ndim == 0]
  mu = [(ts.path_str(p), x) for p, x in count if "mu" in ts.path_str(p)]
  q_mu = next(x for p, x in mu if p.endswith("layers_0/self_attn/q_proj/kernel"))
  q = state.params["layers_0"]["self_attn"]["q_proj"]["kernel"]
  return {
      "losses": [m["loss"] for m in metrics],
      "metrics": metrics,
      "step": int(state.step),
      "scalar_opt_leaves_fully_replicated": all(
          len(x.sharding.device_set) == mesh.size and x.sharding.is_fully_replicated
          for x in scalars),
      "q_spec": spec_str(q.sharding),
      "q_mu_spec": spec_str(q_mu.sharding),
      "q_shard_shape": list(q.addressable_shards[0].data.shape),
  }


def make_grpo_batch(rows: int = 8, window: int = 8, length: int = 20, seed: int = 1):
  """A rollout-shaped batch: 2 groups of 4 completions with U, L and sampler log-probs."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, CONFIG.vocab_size, (rows, length)).astype(np.int32)
  start = rng.integers(4, length - window, (rows,)).astype(np.int32)
  lengths = rng.integers(2, window + 1, (rows,))
  targets = np.take_along_axis(tokens, np.minimum(start[:, None] + 1 + np.arange(window),
                                                  length - 1), axis=1)
  return {"inputs_bt": tokens, "positions_bt": np.tile(np.arange(length, dtype=np.int32),
                                                       (rows, 1)),
          "attention_mask_bt": np.ones((rows, length), bool), "window_start_b": start,
          "targets_bc": targets.astype(np.int32),
          "loss_mask_bc": (np.arange(window)[None] < lengths[:, None]).astype(np.float32),
          "old_logp_bc": -rng.uniform(3, 7, (rows, window)).astype(np.float32),
          "user_b": rng.uniform(0, 0.9, rows).astype(np.float32),
          "llm_b": rng.uniform(0, 0.9, rows).astype(np.float32),
          "reward_valid_b": np.asarray([1, 1, 1, 0, 1, 1, 1, 1], np.float32)[:rows],
          "source_b": np.zeros(rows, np.int32)}


def check_grpo(mesh, steps: int, num_microbatches: int):
  """The GTAlign objective (welfare -> advantages inside the jitted step) on this mesh."""
  import functools
  from gtalign.rl import objective
  params = init_tiny_params()
  shardings = mesh_lib.param_shardings(mesh, logical_axes(CONFIG), shapes=params)
  tx = ts.make_optimizer(1e-3)
  state = ts.create_train_state(params, tx, mesh, shardings)
  state_shardings = ts.train_state_shardings(params, tx, mesh, shardings)
  ocfg = objective.ObjectiveConfig(group_size=4, num_sources=1, normalisation="zscore")
  step = make_update_step(functools.partial(objective.policy_loss, CONFIG, ocfg), tx,
                          state_shardings, mesh_lib.batch_sharding(mesh), num_microbatches,
                          prepare_batch=functools.partial(objective.welfare_advantages, ocfg))
  batch = make_grpo_batch()
  losses = []
  for _ in range(steps):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  return {"losses": losses}


def check_memory():
  """Compiled per-device argument bytes of the train step with fsdp over every device."""
  from gtalign.parallel import distributed
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1, fsdp=-1, tensor=1))
  params = init_tiny_params()
  shardings = mesh_lib.param_shardings(mesh, logical_axes(CONFIG), shapes=params)
  tx = ts.make_optimizer(1e-3)
  state = ts.create_train_state(params, tx, mesh, shardings)
  state_shardings = ts.train_state_shardings(params, tx, mesh, shardings)
  data_sharding = mesh_lib.batch_sharding(mesh)
  step = make_update_step(token_nll_loss, tx, state_shardings, data_sharding, 1)
  batch = make_batch()
  compiled = step.lower(state, batch).compile()
  analysis = compiled.memory_analysis()
  batch_bytes = sum(int(np.prod(data_sharding.shard_shape(x.shape))) * x.dtype.itemsize
                    for x in batch.values())
  return {
      "mesh_shape": dict(mesh.shape),
      "argument_bytes": int(analysis.argument_size_in_bytes),
      "batch_bytes_per_device": batch_bytes,
      "unsharded_state_bytes": distributed.total_bytes(state.params)
                               + distributed.total_bytes(state.opt_state),
      "state_bytes_per_device": max(distributed.bytes_per_device(state).values()),
  }


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--devices", type=int, required=True)
  parser.add_argument("--mesh", default="1,1,1")
  parser.add_argument("--checks", default="train")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--microbatches", type=int, default=2)
  args = parser.parse_args()
  assert jax.device_count() == args.devices, (jax.device_count(), os.environ.get("XLA_FLAGS"))
  data, fsdp, tensor = (int(x) for x in args.mesh.split(","))
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=data, fsdp=fsdp, tensor=tensor))
  out = {"devices": jax.device_count()}
  for check in args.checks.split(","):
    if check == "grpo":
      out["grpo"] = check_grpo(mesh, args.steps, args.microbatches)
    elif check == "memory":
      out["memory"] = check_memory()
    elif check == "shardings":
      out["shardings"] = check_shardings(mesh)
    elif check == "train":
      out["train"] = check_train(mesh, args.steps, args.microbatches)
    else:
      raise SystemExit(f"unknown check {check!r}")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
