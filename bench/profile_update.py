"""Where one GRPO update of the default run spends its time: a breakdown and an XLA trace.

    python bench/profile_update.py [--rows=16] [--prompt=176] [--completion=192]
        [--trainable=top_k_blocks:8] [--dtype=bfloat16] [--trace=DIR]

Times, on SmolLM2-135M-Instruct with the default run's batch shape, the jitted pieces of the
update separately (forward to hidden states, the vocabulary head and log-probs, the loss's
forward, its gradient, the optimizer) and the whole update step, each the mean of `--repeats`
calls after a compile, plus XLA's own FLOP count and peak memory of the update. With `--trace`,
a `jax.profiler` trace of three updates is written there (open it with xprof/TensorBoard).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import grpo_update, random_rollout_batch


def _mean_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile and warm up
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn())
  return (time.perf_counter() - start) / repeats


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=16)
  parser.add_argument("--prompt", type=int, default=176)
  parser.add_argument("--completion", type=int, default=192)
  parser.add_argument("--trainable", default="top_k_blocks:8")
  parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--trace", default="")
  args = parser.parse_args()

  from gtalign.models.checkpoints import load_pretrained
  from gtalign.models.transformer import Decoder, lm_head
  from gtalign.models.weights_cache import smollm2_gguf_path
  from gtalign.rl import losses, objective

  config, params, _ = load_pretrained(smollm2_gguf_path())
  cfg = config.replace(dtype=args.dtype, param_dtype="float32")
  batch = jax.tree.map(jnp.asarray, random_rollout_batch(args.rows, args.prompt,
                                                         args.completion, cfg.vocab_size))
  window = batch["targets_bc"].shape[1]
  ocfg = objective.ObjectiveConfig(group_size=4, num_sources=1, adv_std_floor=0.1)
  prepared = objective.welfare_advantages(ocfg, batch)
  state, step, tx = grpo_update(cfg, params, args.trainable, ocfg)
  p = state.params
  print(f"SmolLM2-135M, {args.rows} rows x ({args.prompt} + {args.completion}) tokens, "
        f"{args.dtype} compute, trainable={args.trainable}, {os.cpu_count()} CPUs")

  def hidden(p, mb):
    return Decoder(cfg).apply({"params": p}, mb["inputs_bt"], mb["positions_bt"],
                              attention_mask_bt=mb["attention_mask_bt"], return_hidden=True)[0]

  def head_logp(p, h_bte, mb):
    index_bc = mb["window_start_b"][:, None] + jnp.arange(window)[None, :]
    h_bce = jnp.take_along_axis(h_bte, index_bc[:, :, None], axis=1)
    return losses.token_logprobs(lm_head(cfg, p, h_bce), mb["targets_bc"])

  loss = lambda p, mb: objective.policy_loss(cfg, ocfg, p, mb)[0]
  h = jax.jit(hidden)(p, batch)
  grad = jax.jit(jax.grad(loss))
  g = grad(p, prepared)
  opt = jax.jit(tx.update)
  holder = {"state": state}

  def run_step():
    holder["state"], metrics = step(holder["state"], batch)
    return metrics

  pieces = {
      "forward to hidden states": lambda: jax.jit(hidden)(p, batch),
      "head + log-probs (window)": lambda: jax.jit(head_logp)(p, h, batch),
      "loss forward": lambda: jax.jit(loss)(p, prepared),
      "loss gradient (fwd + bwd)": lambda: grad(p, prepared),
      "optimizer update": lambda: opt(g, state.opt_state, p),
      "whole update step": run_step,
  }
  for name, fn in pieces.items():
    print(f"{name:<28}{_mean_seconds(fn, args.repeats):>8.2f} s")
  compiled = jax.jit(jax.grad(loss)).lower(p, prepared).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  print(f"gradient: XLA counts {cost.get('flops', float('nan')) / 1e9:.0f} GFLOP; temp memory "
        f"{getattr(memory, 'temp_size_in_bytes', 0) / 2**30:.2f} GiB")
  if args.trace:
    with jax.profiler.trace(args.trace):
      for _ in range(3):
        jax.block_until_ready(run_step())
    print(f"trace written to {args.trace}")


if __name__ == "__main__":
  main()
