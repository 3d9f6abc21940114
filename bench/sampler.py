"""Sampling throughput: gtalign's jitted sampler vs `transformers` `generate` (torch CPU), one run.

    python bench/sampler.py [--batches=1,16] [--new_tokens=128] [--dtype=float32]

SmolLM2-135M-Instruct from its GGUF (both sides get the same dequantized weights), the chat
prompts of `bench/grpo_iteration.py`, temperature 1, exactly `new_tokens` per row (EOS ignored
on both sides). Compilation is excluded (a warm-up call with the same shapes); the mean of
`--repeats` calls is reported, with the CPU time other processes took meanwhile (a noisy run is
flagged). At batch 1 it also reports memory-bandwidth utilisation: bytes read per decode step
(every weight once, plus the keys and values of the context) over the step time, against the
read bandwidth this script measures with a jitted reduction over a 1 GiB array.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import OtherLoad, prompts as bench_prompts

QUESTIONS = bench_prompts()


def read_bandwidth_gbs() -> float:
  x = jnp.ones((256 * 1024 * 1024,), jnp.float32)  # 1 GiB
  total = jax.jit(jnp.sum)
  total(x).block_until_ready()
  best = min(_timed(lambda: total(x).block_until_ready()) for _ in range(5))
  return x.nbytes / best / 1e9


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="1,16")
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = parser.parse_args()

  import torch
  import transformers

  from gtalign.models.checkpoints import load_pretrained
  from gtalign.models.weights_cache import smollm2_gguf_path
  from gtalign.sampling.sampler import Sampler, SamplingConfig

  path = smollm2_gguf_path()
  config, params, tokenizer = load_pretrained(path, dtype=args.dtype)
  ref = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path),
      dtype=getattr(torch, args.dtype)).eval()
  sampler = Sampler(config, tokenizer)
  sampling = SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0, ignore_eos=True)
  n = args.new_tokens
  print(f"SmolLM2-135M-Instruct {args.dtype}, {n} new tokens, temperature 1, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, jax {jax.__version__}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}")
  print(f"{'batch':>5} {'gtalign tok/s':>14} {'transformers tok/s':>19} {'ratio':>6}")
  results = {}
  for b in [int(x) for x in args.batches.split(",")]:
    prompts = [tokenizer.encode(tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])) for i in range(b)]
    load = OtherLoad().start()
    sampler.generate(params, prompts, sampling)  # compile
    ours = sum(_timed(lambda: sampler.generate(params, prompts, sampling))
               for _ in range(args.repeats)) / args.repeats
    width = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kwargs = dict(attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=True,
                  temperature=1.0, top_k=0, top_p=1.0, pad_token_id=tokenizer.pad_id)
    with torch.inference_mode():
      ref.generate(ids, **dict(kwargs, max_new_tokens=4, min_new_tokens=4))  # warm-up
      theirs = sum(_timed(lambda: ref.generate(ids, **kwargs))
                   for _ in range(args.repeats)) / args.repeats
    results[b] = ours
    other = load.stop()
    flag = "  (noisy: other processes used the CPU)" if other > 0.05 * args.repeats * (
        ours + theirs) else ""
    print(f"{b:>5} {b * n / ours:>14.1f} {b * n / theirs:>19.1f} {theirs / ours:>6.2f}"
          f"   other processes {other:.1f} CPU s{flag}")

  if 1 in results:
    weight_bytes = sum(a.nbytes for a in jax.tree.leaves(params))
    context = 40 + n / 2  # mean context length over the decode
    kv_bytes = (2 * config.num_layers * config.num_kv_heads * config.head_dim * context
                * jnp.dtype(config.dtype).itemsize)
    achieved = (weight_bytes + kv_bytes) * n / results[1] / 1e9
    peak = read_bandwidth_gbs()
    print(f"batch 1: {(weight_bytes + kv_bytes) / 1e6:.0f} MB read per token, {achieved:.1f} GB/s "
          f"achieved vs {peak:.1f} GB/s measured read bandwidth = {achieved / peak:.0%} utilisation")


if __name__ == "__main__":
  main()
