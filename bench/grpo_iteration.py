"""One GRPO iteration, gtalign against TRL, on this machine in one run.

    pip install -e ".[bench]"   # trl==1.16.0 with the test extra's torch and transformers
    python bench/grpo_iteration.py [--iterations=3] [--sides=trl,gtalign-float32,gtalign-bfloat16]

TRL's own setting: SmolLM2-135M-Instruct (both sides read the same float32 weights, written by
gtalign's `save_pretrained` from the GGUF), 64 chat prompts, 4 prompts x G = 4 completions per
iteration, exactly 128 new tokens at temperature 1, a reward that counts characters, every
parameter trained with AdamW, one update per iteration. gtalign is driven only through its
public modules (`Sampler.generate`, `rollout.sequence_batch`, `update.make_update_step` with
`objective.policy_loss`). Each side runs in its own process, one after the other; a warm-up
iteration (compilation) is timed apart, then the median of `--iterations`. The CPU time other
processes took during each side is reported, so that a noisy run is flagged, not believed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import PROMPTS, OtherLoad, grpo_update, prompts

PER_ITERATION = 4
GROUP = 4
NEW_TOKENS = 128


def length_reward(texts: list[str]) -> list[float]:
  return [float(len(t)) for t in texts]


# ------------------------------------------------------------------------------------ gtalign


def run_gtalign(model_dir: str, dtype: str, iterations: int) -> dict:
  import jax
  import numpy as np

  from gtalign.models.checkpoints import load_pretrained
  from gtalign.rl import objective
  from gtalign.sampling.sampler import Sampler, SamplingConfig
  from gtalign.training import rollout

  config, params, tokenizer = load_pretrained(model_dir, dtype=dtype)
  config = config.replace(param_dtype="float32")
  sampler_config = config.replace(param_dtype=dtype)  # the trainer's handoff: compute dtype
  sampler = Sampler(sampler_config, tokenizer)
  sampling = SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=1.0, num_samples=GROUP,
                            ignore_eos=True)
  ids = [tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": p}]))
         for p in prompts()]
  ocfg = objective.ObjectiveConfig(group_size=GROUP, num_sources=1, welfare="user_only")
  state, step, _ = grpo_update(config, params, "all", ocfg)
  to_sampler = jax.jit(lambda p: jax.tree.map(lambda a: a.astype(sampler_config.jnp_dtype), p))

  def iteration(i, state):
    begin = time.perf_counter()
    rows = ids[(i * PER_ITERATION) % PROMPTS:][:PER_ITERATION]
    out = sampler.generate(to_sampler(state.params), rows, sampling,
                           prompt_indices=np.arange(len(rows)) + i * PER_ITERATION)
    generated = time.perf_counter()
    reward = np.asarray(length_reward(out.texts), np.float32)
    batch = rollout.sequence_batch([rows[k] for k in out.prompt_index - i * PER_ITERATION],
                                   out.tokens, tokenizer.pad_id)
    window = batch["targets_bc"].shape[1]
    batch.update(old_logp_bc=rollout.completion_array(out.logprobs, window),
                 user_b=reward / max(1.0, float(reward.max())), llm_b=np.ones_like(reward),
                 reward_valid_b=np.ones_like(reward), source_b=np.zeros(len(reward), np.int32))
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return state, (generated - begin, time.perf_counter() - generated)

  times = []
  for i in range(iterations + 1):  # the first is the warm-up (compilation)
    state, seconds = iteration(i, state)
    times.append(seconds)
  return _summary(times)


def _summary(times: list[tuple[float, float]]) -> dict:
  gen = [g for g, _ in times[1:]]
  upd = [u for _, u in times[1:]]
  return {"iteration_s": statistics.median(g + u for g, u in times[1:]),
          "generation_s": statistics.median(gen), "update_s": statistics.median(upd),
          "warmup_s": sum(times[0])}


# ---------------------------------------------------------------------------------------- TRL


def run_trl(model_dir: str, iterations: int) -> dict:
  import datasets
  import torch
  import transformers
  import trl

  times, marks = [], {}

  class Clock(transformers.TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
      marks["begin"], marks["gen"] = time.perf_counter(), 0.0

    def on_step_end(self, args, state, control, **kwargs):
      total = time.perf_counter() - marks["begin"]
      times.append((marks["gen"], total - marks["gen"]))

  model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
  generate = model.generate

  def timed_generate(*args, **kwargs):
    start = time.perf_counter()
    try:
      return generate(*args, **kwargs)
    finally:
      marks["gen"] = marks.get("gen", 0.0) + time.perf_counter() - start

  model.generate = timed_generate
  data = datasets.Dataset.from_list(
      [{"prompt": [{"role": "user", "content": p}]} for p in prompts()])
  with tempfile.TemporaryDirectory() as out:
    args = trl.GRPOConfig(
        output_dir=out, per_device_train_batch_size=PER_ITERATION * GROUP,
        num_generations=GROUP, max_completion_length=NEW_TOKENS, temperature=1.0,
        generation_kwargs={"min_new_tokens": NEW_TOKENS}, learning_rate=1e-6,
        max_steps=iterations + 1, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=True, bf16=False, beta=0.0, shuffle_dataset=False, seed=0)
    trainer = trl.GRPOTrainer(
        model=model, reward_funcs=lambda completions, **_: length_reward(
            [c[0]["content"] if isinstance(c, list) else c for c in completions]),
        args=args, train_dataset=data,
        processing_class=transformers.AutoTokenizer.from_pretrained(model_dir))
    trainer.add_callback(Clock())
    trainer.train()
  return _summary(times)


# ------------------------------------------------------------------------------------- driver


def _child(side: str, model_dir: str, iterations: int) -> None:
  load = OtherLoad().start()
  result = (run_trl(model_dir, iterations) if side == "trl"
            else run_gtalign(model_dir, side.split("-", 1)[1], iterations))
  result["other_cpu_s"] = load.stop()
  print("RESULT " + json.dumps(result))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iterations", type=int, default=3)
  parser.add_argument("--sides", default="trl,gtalign-float32,gtalign-bfloat16")
  parser.add_argument("--model_dir", default="", help="float32 HF directory (default: written "
                      "from the SmolLM2 GGUF into a temporary directory)")
  parser.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return _child(args.child, args.model_dir, args.iterations)

  with tempfile.TemporaryDirectory() as tmp:
    model_dir = args.model_dir
    if not model_dir:
      from gtalign.models.checkpoints import load_pretrained, save_pretrained
      from gtalign.models.weights_cache import smollm2_gguf_path
      config, params, tokenizer = load_pretrained(smollm2_gguf_path(), dtype="float32")
      model_dir = os.path.join(tmp, "smollm2-f32")
      save_pretrained(model_dir, config, params, tokenizer)
    results = {}
    for side in args.sides.split(","):
      proc = subprocess.run([sys.executable, __file__, f"--child={side}",
                             f"--model_dir={model_dir}", f"--iterations={args.iterations}"],
                            capture_output=True, text=True)
      line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
      if proc.returncode or line is None:
        sys.exit(f"error: {side} failed:\n{proc.stderr[-3000:]}")
      results[side] = json.loads(line[len("RESULT "):])

  base = results.get("trl", {}).get("iteration_s")
  print(f"GRPO iteration: SmolLM2-135M-Instruct, {PER_ITERATION} prompts x G={GROUP}, "
        f"{NEW_TOKENS} new tokens, all parameters trained; {os.cpu_count()} CPUs; median of "
        f"{args.iterations} after a warm-up")
  print("| implementation | s / iteration | generation s | update s | warm-up s | vs TRL | "
        "other processes' CPU s |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
  for side, r in results.items():
    ratio = f"{base / r['iteration_s']:.2f}x" if base else "-"
    print(f"| {side} | {r['iteration_s']:.1f} | {r['generation_s']:.1f} | {r['update_s']:.1f} "
          f"| {r['warmup_s']:.1f} | {ratio} | {r['other_cpu_s']:.1f} |")
  noisy = [s for s, r in results.items() if r["other_cpu_s"] > 0.05 * r["iteration_s"] *
           (args.iterations + 1)]
  if noisy:
    print(f"warning: other processes used the CPU during {', '.join(noisy)}: not a clean run")
  print("command: python bench/grpo_iteration.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
  main()
