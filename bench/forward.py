"""Forward-pass throughput: gtalign's Flax decoder vs `transformers` (torch CPU), same machine, one run.

    python bench/forward.py [--batch=4] [--seq=256] [--repeats=5]

Loads SmolLM2-135M-Instruct once from its GGUF (both sides get the same dequantized float32
weights) and times (a) a full forward over batch x seq tokens (prefill / log-prob recompute) and
(b) one cached decode step at the end of that context. Prints tokens/s for both and the ratio.
Compilation is excluded (one warm-up call each); the best of `repeats` timed runs is reported.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def best_of(fn, repeats: int) -> float:
  fn()  # warm-up (compiles on the JAX side)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  import torch
  import transformers

  from gtalign.models.checkpoints import load_pretrained
  from gtalign.models.transformer import Decoder, KVCache
  from gtalign.models.weights_cache import smollm2_gguf_path

  path = smollm2_gguf_path()
  config, params, _ = load_pretrained(path)
  ref = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  b, t = args.batch, args.seq
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (b, t)).astype(np.int32)
  positions = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t))
  model = Decoder(config)

  full = jax.jit(lambda p, x, pos: model.apply({"params": p}, x, pos)[0])
  jax_full = best_of(lambda: full(params, tokens, positions).block_until_ready(), args.repeats)
  tokens_pt = torch.tensor(tokens, dtype=torch.long)
  with torch.inference_mode():
    pt_full = best_of(lambda: ref(tokens_pt, use_cache=False).logits, args.repeats)

  # one decode step with a cache holding t tokens
  step = jax.jit(lambda p, x, pos, c: model.apply({"params": p}, x, pos, c),
                 donate_argnums=3)
  _, cache = jax.jit(lambda p, x, pos, c: model.apply({"params": p}, x, pos, c))(
      params, tokens, positions, KVCache.init(config, b, t + args.repeats + 2))
  state = {"cache": cache}
  nxt = np.zeros((b, 1), np.int32)

  def jax_step():
    pos = jnp.full((b, 1), t, jnp.int32)
    logits, state["cache"] = step(params, nxt, pos, state["cache"])
    logits.block_until_ready()

  jax_dec = best_of(jax_step, args.repeats)
  with torch.inference_mode():
    past = ref(tokens_pt, use_cache=True).past_key_values
    nxt_pt = torch.zeros((b, 1), dtype=torch.long)
    pos_pt = torch.full((b, 1), t, dtype=torch.long)

    def pt_step():
      past.crop(-1) if past.get_seq_length() > t else None  # keep the context at t tokens
      ref(nxt_pt, past_key_values=past, position_ids=pos_pt, use_cache=True)

    pt_dec = best_of(pt_step, args.repeats)

  print(f"SmolLM2-135M float32, batch {b}, context {t}, {jax.devices()[0].platform}, "
        f"torch threads {torch.get_num_threads()}")
  print(f"{'phase':<22}{'gtalign tok/s':>15}{'transformers tok/s':>20}{'ratio':>8}")
  for name, ours, theirs, n in [("forward (prefill)", jax_full, pt_full, b * t),
                                ("decode step (cached)", jax_dec, pt_dec, b)]:
    print(f"{name:<22}{n / ours:>15.1f}{n / theirs:>20.1f}{theirs / ours:>8.2f}")


if __name__ == "__main__":
  main()
