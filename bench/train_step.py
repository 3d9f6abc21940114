"""GRPO update throughput and model-FLOPs utilisation, with a torch peer, same machine, one run.

    python bench/train_step.py [--rows=16] [--prompt=176] [--completion=160] [--trainable=all]

One jitted GTAlign update of SmolLM2-135M-Instruct (welfare -> group advantages -> clipped policy
loss -> AdamW) on a rollout-shaped batch, against the same token-level policy-gradient update of
the same weights in `transformers` + `torch.optim.AdamW`. MFU = 6 * N * tokens / time over the
matmul peak this script measures (jitted float32 and bfloat16->float32 2048^3 products); with
frozen layers the real work is less than 6N per token, so MFU is only comparable at
`--trainable=all`. Times are the mean of `--repeats` calls after a compile; CPU time taken by
other processes meanwhile is reported, and a noisy run flagged.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import OtherLoad, grpo_update, random_rollout_batch, timed_updates


def matmul_peak(dtype) -> float:
  a = jnp.ones((2048, 2048), dtype)
  dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  dot(a, a).block_until_ready()
  best = min(_timed(lambda: dot(a, a).block_until_ready()) for _ in range(5))
  return 2 * 2048 ** 3 / best


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=16)
  parser.add_argument("--prompt", type=int, default=176)
  parser.add_argument("--completion", type=int, default=160)
  parser.add_argument("--trainable", default="all")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  import torch
  import transformers

  from gtalign.models.checkpoints import load_pretrained
  from gtalign.models.weights_cache import smollm2_gguf_path
  from gtalign.rl import objective

  path = smollm2_gguf_path()
  config, params, _ = load_pretrained(path)
  n_params = config.num_params()
  batch = random_rollout_batch(args.rows, args.prompt, args.completion, config.vocab_size)
  window = batch["targets_bc"].shape[1]
  tokens = args.rows * (args.prompt + args.completion)
  print(f"SmolLM2-135M ({n_params / 1e6:.1f}M params), {args.rows} rows x ({args.prompt} prompt + "
        f"{args.completion} completion) = {tokens} tokens, trainable={args.trainable}, "
        f"{os.cpu_count()} CPUs")
  peaks = {"float32": matmul_peak(jnp.float32), "bfloat16": matmul_peak(jnp.bfloat16)}
  print(f"measured matmul peak: float32 {peaks['float32'] / 1e9:.0f} GFLOP/s, bfloat16 (float32 "
        f"accumulate) {peaks['bfloat16'] / 1e9:.0f} GFLOP/s")
  print(f"{'implementation':<34}{'s/update':>10}{'tokens/s':>10}{'MFU':>8}")

  results = {}
  for dtype in ("float32", "bfloat16"):
    cfg = config.replace(dtype=dtype, param_dtype="float32")
    ocfg = objective.ObjectiveConfig(group_size=4, num_sources=1)
    state, step, _ = grpo_update(cfg, params, args.trainable, ocfg)
    seconds, other, _ = timed_updates(state, step, batch, args.repeats)
    results[f"gtalign ({dtype} compute)"] = (seconds, peaks[dtype], other)

  ref = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).train()
  opt = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=1e-6)
  ids = torch.tensor(batch["inputs_bt"], dtype=torch.long)
  attn = torch.tensor(batch["attention_mask_bt"], dtype=torch.long)
  start = torch.tensor(batch["window_start_b"], dtype=torch.long)
  index = start[:, None] + torch.arange(window)[None]
  targets = torch.tensor(batch["targets_bc"], dtype=torch.long)
  mask = torch.tensor(batch["loss_mask_bc"])
  adv = torch.tensor(batch["user_b"] - batch["user_b"].mean())[:, None]

  def torch_step():
    opt.zero_grad()
    logits = ref(input_ids=ids, attention_mask=attn).logits
    logits = torch.gather(logits, 1, index[..., None].expand(-1, -1, logits.shape[-1]))
    logp = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None])[..., 0]
    loss = -(torch.exp(logp - logp.detach()) * adv * mask).sum() / mask.sum()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
    opt.step()

  torch_step()
  load = OtherLoad().start()
  results["transformers + torch (float32)"] = (
      sum(_timed(torch_step) for _ in range(args.repeats)) / args.repeats, peaks["float32"],
      load.stop())
  base = results["transformers + torch (float32)"][0]
  for name, (seconds, peak, other) in results.items():
    mfu = 6 * n_params * tokens / seconds / peak
    noisy = other > 0.05 * seconds * args.repeats
    flag = "  (noisy: other processes used the CPU)" if noisy else ""
    print(f"{name:<34}{seconds:>10.2f}{tokens / seconds:>10.0f}{mfu:>8.1%}"
          f"   ({base / seconds:.2f}x torch, other processes {other:.1f} CPU s){flag}")


if __name__ == "__main__":
  main()
