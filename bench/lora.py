"""Adapters against full weights: update seconds, train-state bytes, the sampler's two ways of
running adapters, and the Qwen2.5-3B memory plan. One run, one machine.

    python bench/lora.py [--rows=16] [--prompt=176] [--completion=160] [--repeats=3]

Update: one jitted GRPO update of SmolLM2-135M-Instruct on a rollout-shaped batch (as
bench/train_step.py), for full weights, the top 8 blocks, and rank-8 and rank-64 adapters on
every projection of every block; train-state bytes are the params and AdamW moments the state
holds. Sampler: `--rows` rows decoding `--completion` tokens greedily, either with the adapters
merged into the weights at the hand-off (what the trainer does) or run in every forward; the
merge's own seconds are counted. Plan: `gtalign.adapters.memory` from shapes alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
from common import OtherLoad, grpo_update, random_rollout_batch, timed_updates

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _bytes(tree) -> int:
  return int(sum(x.nbytes for x in jax.tree.leaves(tree) if hasattr(x, "nbytes")))


def update_rows(config, params, batch, repeats):
  from gtalign.adapters import lora
  from gtalign.rl import objective, train_state
  ocfg = objective.ObjectiveConfig(group_size=4, num_sources=1)
  rows = []
  for name, rank, trainable in (("full weights", 0, "all"), ("top 8 blocks", 0, "top_k_blocks:8"),
                                ("LoRA r8, every block", 8, "all"),
                                ("LoRA r64, every block", 64, "all")):
    cfg = config.replace(lora_rank=rank, lora_alpha=2.0 * rank,
                         lora_targets=lora.parse_targets("all") if rank else ())
    host = lora.attach(cfg, params, jax.random.PRNGKey(0)) if rank else params
    state, step, _ = grpo_update(cfg, host, trainable, ocfg)
    seconds, other, state = timed_updates(state, step, batch, repeats)
    mask = (lora.trainable if rank else train_state.trainable_mask)(state.params, trainable)
    trained = lora.count(lora.select(state.params, mask)[0])
    rows.append((name, seconds, trained, _bytes(state.params), _bytes(state.opt_state), other))
    del state, step
  return rows


def sampler_rows(config, params, args):
  from gtalign.adapters import lora
  from gtalign.models.tokenizer import load_tokenizer
  from gtalign.models.weights_cache import smollm2_gguf_path
  from gtalign.sampling.sampler import Sampler, SamplingConfig
  tokenizer = load_tokenizer(smollm2_gguf_path())
  cfg = config.replace(lora_rank=16, lora_alpha=32.0, lora_targets=lora.parse_targets("all"))
  host = lora.attach(cfg, params, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(3, config.vocab_size, args.prompt)) for _ in range(args.rows)]
  sampling = SamplingConfig(max_new_tokens=args.completion, temperature=0.0, ignore_eos=True)
  compute = config.jnp_dtype
  merge = jax.jit(lambda p: lora.merge(cfg, p, dtype=compute))
  cast = jax.jit(lambda p: jax.tree.map(lambda a: a.astype(compute), p))
  ways = {"merged at the hand-off": (lora.plain(cfg).replace(param_dtype=cfg.dtype), merge),
          "adapters in every forward": (cfg.replace(param_dtype=cfg.dtype), cast)}
  rows = []
  for name, (sampler_config, handoff) in ways.items():
    sampler = Sampler(sampler_config, tokenizer)
    device = jax.device_put(host)
    weights = jax.block_until_ready(handoff(device))
    sampler.generate(weights, prompts, sampling)  # compile
    load = OtherLoad().start()
    hand = _timed(lambda: jax.block_until_ready(handoff(device)))
    gen = _timed(lambda: sampler.generate(weights, prompts, sampling))
    rows.append((name, hand, gen, load.stop()))
  return rows


def plan_rows():
  """Qwen2.5-3B with `gtalign_math_lora`'s batch shapes: full float32 weights, LoRA on a
  bfloat16 base, QLoRA on an NF4 base."""
  import grpo
  from gtalign.adapters import lora, memory
  from gtalign.models.config import get_preset
  rows = []
  for name, rank, quant, dtype in (("full weights (float32 state)", 0, "none", "float32"),
                                   ("LoRA r64, bfloat16 base", 64, "none", "bfloat16"),
                                   ("QLoRA r64, NF4 base", 64, "nf4", "bfloat16")):
    c = grpo.get_config("gtalign_math_lora")
    c.model.lora.rank, c.model.base_quant, c.model.param_dtype = rank, quant, dtype
    model = get_preset(c.model.name).replace(param_dtype=c.model.param_dtype,
                                            dtype=c.model.dtype, remat=c.model.remat)
    rows.append((name, memory.plan(lora.configure(model, c.model.lora, c.model.base_quant), c),
                 c))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=16)
  parser.add_argument("--prompt", type=int, default=176)
  parser.add_argument("--completion", type=int, default=160)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--skip_update", action="store_true")
  args = parser.parse_args()
  from gtalign.models.checkpoints import load_pretrained
  from gtalign.models.weights_cache import smollm2_gguf_path
  config, params, _ = load_pretrained(smollm2_gguf_path())
  config = config.replace(dtype="bfloat16", param_dtype="float32")
  params = jax.tree.map(np.asarray, params)
  print(f"SmolLM2-135M, {args.rows} rows x ({args.prompt} prompt + {args.completion} "
        f"completion), bfloat16 compute, {os.cpu_count()} CPUs, jax {jax.__version__}")
  gib = lambda n: f"{n / 2**30:.2f}"
  print("\n| model, weights that train | s/update (measured) | vs full | trained params | "
        "params + AdamW GiB | planned total GiB (one device) |")
  print("|---|---:|---:|---:|---:|---:|")
  if not args.skip_update:
    batch = random_rollout_batch(args.rows, args.prompt, args.completion, config.vocab_size)
    rows = update_rows(config, params, batch, args.repeats)
    full = rows[0][1]
    for name, seconds, trained, p_bytes, o_bytes, other in rows:
      noisy = " (noisy)" if other > 0.05 * seconds * args.repeats else ""
      print(f"| SmolLM2-135M, {name} | {seconds:.2f}{noisy} | {full / seconds:.2f}x | "
            f"{trained:,} | {gib(p_bytes + o_bytes)} | - |")
  for name, p, c in plan_rows():
    print(f"| Qwen2.5-3B, {name} | - | - | {p.gradients // 4:,} | "
          f"{gib(p.base + p.trained + p.optimizer)} | {gib(p.total)} "
          f"({'fits' if p.fits(24 * 2**30) else 'does not fit'} 24 GiB) |")
  print("\n| Qwen2.5-3B plan | base | trained | grads | AdamW | sampler weights | KV cache | "
        "activations |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  for name, p, c in plan_rows():
    print(f"| {name} ({c.rl.prompts_per_step}x{c.rl.num_samples} rollouts, "
          f"{c.rl.num_microbatches} microbatches) | {gib(p.base)} | {gib(p.trained)} | "
          f"{gib(p.gradients)} | {gib(p.optimizer)} | {gib(p.sampler_weights)} | "
          f"{gib(p.kv_cache)} | {gib(p.activations)} |")
  print("\n| sampler, rank-16 adapters | hand-off s | generate s | total s |")
  print("|---|---:|---:|---:|")
  for name, hand, gen, other in sampler_rows(config, params, args):
    noisy = " (noisy)" if other > 0.05 * (hand + gen) else ""
    print(f"| {name} | {hand:.2f} | {gen:.2f}{noisy} | {hand + gen:.2f} |")

if __name__ == "__main__":
  main()
