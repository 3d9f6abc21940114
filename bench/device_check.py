"""Accelerator check: sampler tok/s against the memory-bandwidth roofline, update MFU against
the measured bfloat16 matmul peak, for a SmolLM2-135M and a Qwen2.5-1.5B-shaped model.

    bash bench/device_check.sh                  # on a lent GPU or TPU (installs what is missing)
    python bench/device_check.py --smoke        # the same code on a CPU with tiny shapes

Both models get random weights of their real shapes: throughput does not depend on the values,
and a GPU machine here cannot download checkpoints. Sampling runs in bfloat16 weights and
compute (the serving setting), 128 new tokens at temperature 1 with EOS ignored, 64-token
prompts, at batch 1, 64 and 256; the roofline of a decode step is the bytes it must read (every
weight once, plus each row's keys and values) over the measured copy bandwidth. The update is
the trainer's jitted GRPO step (welfare advantages inside, clipped loss, AdamW) with every
parameter trained, float32 weights and bfloat16 compute; MFU counts 6 * N * tokens (attention
products not counted, so it is a slight underestimate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import grpo_update, random_rollout_batch  # noqa: E402


class _IdTokenizer:
  """What the sampler needs of a tokenizer when prompts are ids and EOS is ignored."""

  pad_id = 0
  eos_ids = (1,)

  def __init__(self, vocab: int):
    self._vocab = vocab

  def token_bytes(self) -> list[bytes]:
    return [b"x"] * self._vocab

  def decode(self, ids) -> str:
    return ""


def _best_seconds(fn, repeats: int) -> float:
  fn()  # compile / warm up
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def matmul_peak(n: int, repeats: int) -> float:
  """FLOP/s of an n^3 bfloat16 product with float32 accumulation (random operands)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.bfloat16)
  dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  return 2 * n ** 3 / _best_seconds(lambda: dot(a, b).block_until_ready(), repeats)


def copy_bandwidth(nbytes: int, repeats: int) -> float:
  """Bytes/s read plus written by a jitted elementwise pass over `nbytes` of bfloat16."""
  holder = {"x": jnp.ones((nbytes // 2,), jnp.bfloat16)}
  bump = jax.jit(lambda v: v + 1, donate_argnums=0)  # in place: no fresh output pages

  def run():
    holder["x"] = bump(holder["x"])
    holder["x"].block_until_ready()

  return 2 * nbytes / _best_seconds(run, repeats)


def sampler_row(config, params, batch: int, prompt: int, new: int, bandwidth: float,
                repeats: int) -> dict:
  from gtalign.sampling.sampler import Sampler, SamplingConfig
  sampler = Sampler(config, _IdTokenizer(config.vocab_size))
  rng = np.random.default_rng(batch)
  prompts = [list(rng.integers(2, config.vocab_size, prompt)) for _ in range(batch)]
  sampling = SamplingConfig(max_new_tokens=new, temperature=1.0, ignore_eos=True)
  sampler.generate(params, prompts, sampling)  # compile
  decode = []
  for _ in range(repeats):
    out = sampler.generate(params, prompts, sampling)
    decode.append(out.decode_seconds)
  step = min(decode) / (new - 1)  # the first token comes from the prefill
  weight_bytes = sum(a.nbytes for a in jax.tree.leaves(params))
  context = prompt + new / 2
  kv_bytes = (2 * config.num_layers * config.num_kv_heads * config.head_dim * context
              * jnp.dtype(config.dtype).itemsize)
  floor = (weight_bytes + batch * kv_bytes) / bandwidth
  return dict(batch=batch, tok_s=batch / step, step_ms=1e3 * step,
              roofline_tok_s=batch / floor, roofline_share=floor / step,
              prefill_s=out.prefill_seconds)


def update_row(config, params, rows: int, prompt: int, completion: int, peak: float,
               repeats: int) -> dict:
  from gtalign.rl import objective
  cfg = config.replace(dtype="bfloat16", param_dtype="float32")
  batch = random_rollout_batch(rows, prompt, completion, cfg.vocab_size)
  state, step, _ = grpo_update(cfg, params, "all", objective.ObjectiveConfig(group_size=4,
                                                                             num_sources=1))
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics)

  seconds = _best_seconds(run, repeats)
  tokens = rows * (prompt + completion)
  return dict(rows=rows, tokens=tokens, seconds=seconds, tokens_s=tokens / seconds,
              mfu=6 * cfg.num_params() * tokens / seconds / peak)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true",
                      help="tiny shapes on any backend: checks the script, measures nothing")
  parser.add_argument("--models", default="smollm2-135m-instruct,qwen2.5-1.5b-instruct")
  parser.add_argument("--batches", default="1,64,256")
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--json", default="", help="also write the results here")
  args = parser.parse_args()

  from gtalign.models.config import get_preset
  from gtalign.models.transformer import init_params

  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({jax.default_backend()}, {jax.device_count()} "
        f"device(s)), jax {jax.__version__}", flush=True)
  if args.smoke:
    models, batches, prompt, new = ["tiny-llama"], [1, 4], 16, 8
    peak_n, copy_bytes, update_shape = 256, 1 << 22, (4, 16, 16)
  else:
    models, batches, prompt, new = (args.models.split(","), [int(b) for b in
                                    args.batches.split(",")], 64, args.new_tokens)
    peak_n, copy_bytes, update_shape = 8192, 4 << 30, (16, 256, 256)
  peak = matmul_peak(peak_n, args.repeats + 1)
  bandwidth = copy_bandwidth(copy_bytes, args.repeats + 1)
  print(f"measured: bfloat16 matmul {peak / 1e12:.1f} TFLOP/s ({peak_n}^3), copy bandwidth "
        f"{bandwidth / 1e9:.0f} GB/s (read + write)", flush=True)
  results = dict(device=device.device_kind, backend=jax.default_backend(), peak_flops=peak,
                 bandwidth=bandwidth, models={})
  for name in models:
    base = get_preset(name)
    started = time.perf_counter()
    serve_cfg = base.replace(dtype="bfloat16", param_dtype="bfloat16")
    params = jax.jit(init_params, static_argnums=0)(serve_cfg, jax.random.PRNGKey(0))
    rows = []
    print(f"\n{name} ({base.num_params() / 1e6:.0f}M params), sampler, bfloat16, {prompt}-token "
          f"prompts, {new} new tokens", flush=True)
    print(f"{'batch':>6} {'tok/s':>10} {'ms/step':>9} {'roofline tok/s':>15} {'share':>7}")
    for b in batches:
      r = sampler_row(serve_cfg, params, b, prompt, new, bandwidth, args.repeats)
      rows.append(r)
      print(f"{b:>6} {r['tok_s']:>10.0f} {r['step_ms']:>9.2f} {r['roofline_tok_s']:>15.0f} "
            f"{r['roofline_share']:>7.0%}", flush=True)
    del params
    train_params = jax.jit(init_params, static_argnums=0)(base, jax.random.PRNGKey(0))
    u = update_row(base, train_params, *update_shape, peak, args.repeats)
    del train_params
    print(f"update, all parameters, {u['rows']} rows x {update_shape[1] + update_shape[2]} "
          f"tokens: {u['seconds']:.3f} s, {u['tokens_s']:.0f} tokens/s, MFU {u['mfu']:.1%} "
          f"of the measured peak   ({time.perf_counter() - started:.0f} s for this model)",
          flush=True)
    results["models"][name] = dict(sampler=rows, update=u)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
