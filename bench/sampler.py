"""Sampling throughput: gtalign's jitted sampler vs `transformers` `generate` (torch CPU), one run.

    python bench/sampler.py [--batches=1,16] [--new_tokens=128] [--dtypes=float32,bfloat16]

SmolLM2-135M-Instruct from its GGUF (both sides get the same dequantized weights), the chat
prompts of `bench/grpo_iteration.py`, temperature 1, exactly `new_tokens` per row (EOS ignored
on both sides). Compilation is excluded (a warm-up call with the same shapes); the mean of
`--repeats` calls is reported, with the CPU time other processes took meanwhile (a noisy run is
flagged). At batch 1 it also reports memory-bandwidth utilisation: bytes read per decode step
(every weight once, plus the keys and values of the context) over the step time, against the
read bandwidth this script measures with a jitted reduction over a 1 GiB array.

Each dtype is also checked for greedy fidelity: every side decodes the SmolLM2 parity prompts of
`tests/test_smollm2.py` greedily (up to `--greedy_tokens`, stopping at EOS) and a dtype counts
as exact for that side only if every output equals the side's own float32 output. The final
table compares each side in its fastest exact dtype.
"""

from __future__ import annotations

import argparse
import os
import sys
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


def parity_prompts() -> list[str]:
  """The prompts `tests/test_smollm2.py` checks logits on, read without importing the test."""
  import ast
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                      "test_smollm2.py")
  for node in ast.parse(open(path).read()).body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PROMPTS":
      return ast.literal_eval(node.value)
  raise ValueError(f"{path}: no PROMPTS list")


def first_difference(a: list[list[int]], b: list[list[int]]) -> str | None:
  """None when every greedy output agrees, else where the first disagreement is."""
  for i, (x, y) in enumerate(zip(a, b)):
    for k in range(max(len(x), len(y))):
      if k >= len(x) or k >= len(y) or x[k] != y[k]:
        return f"prompt {i}, token {k}"
  return None


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="1,16")
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--greedy_tokens", type=int, default=128)
  args = parser.parse_args()
  dtypes = args.dtypes.split(",")
  if not set(dtypes) <= {"float32", "bfloat16"}:
    parser.error(f"--dtypes={args.dtypes}: expected float32 and/or bfloat16")
  batches = [int(x) for x in args.batches.split(",")]

  import torch
  import transformers

  from gtalign.models.checkpoints import load_pretrained
  from gtalign.models.weights_cache import smollm2_gguf_path
  from gtalign.sampling.sampler import Sampler, SamplingConfig

  path = smollm2_gguf_path()
  n = args.new_tokens
  sampling = SamplingConfig(max_new_tokens=n, temperature=1.0, ignore_eos=True)
  print(f"SmolLM2-135M-Instruct, {n} new tokens, temperature 1, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, jax {jax.__version__}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}")
  print(f"{'dtype':>8} {'batch':>5} {'gtalign tok/s':>14} {'transformers tok/s':>19} {'ratio':>6}")
  speed, greedy = {}, {}
  for dtype in dtypes:
    config, params, tokenizer = load_pretrained(path, dtype=dtype)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path),
        dtype=getattr(torch, dtype)).eval()
    sampler = Sampler(config, tokenizer)
    chat = lambda text: tokenizer.encode(tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True))

    parity = [chat(p) for p in parity_prompts()]
    out = sampler.generate(params, parity, SamplingConfig(max_new_tokens=args.greedy_tokens,
                                                          temperature=0.0))
    greedy["gtalign", dtype] = [t.tolist() for t in out.tokens]
    with torch.inference_mode():
      greedy["transformers", dtype] = [
          ref.generate(torch.tensor([p]), max_new_tokens=args.greedy_tokens, do_sample=False,
                       eos_token_id=list(tokenizer.eos_ids), pad_token_id=tokenizer.pad_id
                       )[0, len(p):].tolist() for p in parity]

    for b in batches:
      prompts = [chat(QUESTIONS[i % len(QUESTIONS)]) for i in range(b)]
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
      speed["gtalign", dtype, b], speed["transformers", dtype, b] = b * n / ours, b * n / theirs
      other = load.stop()
      flag = "  (noisy: other processes used the CPU)" if other > 0.05 * args.repeats * (
          ours + theirs) else ""
      print(f"{dtype:>8} {b:>5} {b * n / ours:>14.1f} {b * n / theirs:>19.1f} "
            f"{theirs / ours:>6.2f}   other processes {other:.1f} CPU s{flag}", flush=True)

    if 1 in batches:
      weight_bytes = sum(a.nbytes for a in jax.tree.leaves(params))
      context = np.mean([len(chat(q)) for q in QUESTIONS]) + n / 2  # mean context over decode
      kv_bytes = (2 * config.num_layers * config.num_kv_heads * config.head_dim * context
                  * jnp.dtype(config.dtype).itemsize)
      achieved = (weight_bytes + kv_bytes) * speed["gtalign", dtype, 1] / 1e9
      peak = read_bandwidth_gbs()
      print(f"{dtype:>8} batch 1: {(weight_bytes + kv_bytes) / 1e6:.0f} MB read per token, "
            f"{achieved:.1f} GB/s achieved vs {peak:.1f} GB/s measured read bandwidth = "
            f"{achieved / peak:.0%} utilisation")

  print(f"greedy fidelity on {len(parity_prompts())} parity prompts, up to "
        f"{args.greedy_tokens} tokens, against the same side's float32:")
  exact = {}
  for side in ("gtalign", "transformers"):
    exact[side] = []
    for dtype in dtypes:
      diff = (first_difference(greedy[side, dtype], greedy[side, "float32"])
              if "float32" in dtypes else "float32 not measured")
      if diff is None:
        exact[side].append(dtype)
      print(f"  {side:>12} {dtype:>8}: {'identical' if diff is None else 'differs at ' + diff}")
  if "float32" in dtypes:
    diff = first_difference(greedy["gtalign", "float32"], greedy["transformers", "float32"])
    print(f"  gtalign float32 vs transformers float32: "
          f"{'identical' if diff is None else 'differs at ' + diff}")
  print("each side in its fastest dtype with float32-identical greedy outputs:")
  for b in batches:
    best = {side: max(exact[side], key=lambda d: speed[side, d, b], default=None)
            for side in exact}
    if None in best.values():
      print(f"  batch {b}: no exact dtype measured for {[s for s in best if best[s] is None]}")
      continue
    ours, theirs = speed["gtalign", best["gtalign"], b], speed["transformers", best["transformers"], b]
    print(f"  batch {b:>3}: gtalign {best['gtalign']} {ours:.1f} tok/s, transformers "
          f"{best['transformers']} {theirs:.1f} tok/s: {ours / theirs:.2f}x")


if __name__ == "__main__":
  main()
