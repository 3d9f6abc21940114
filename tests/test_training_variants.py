"""The main job on variants of the tiny preset: PPO, several updates a batch, no warm start, a
bad key, the compile cache (beside tests/test_training.py, so that a parallel run of the suite
can run them beside its kill tests)."""

import json
import os
import subprocess
import sys

from test_training import ROOT, _run


def test_unknown_config_key_lists_the_valid_ones(tmp_path):
  proc, _ = _run(tmp_path, "--config.rl.lrr=0.1", timeout=120)
  assert proc.returncode != 0
  assert "config.rl.lrr" in proc.stderr and "lr" in proc.stderr and "num_samples" in proc.stderr


def test_ppo_with_a_critic_runs_and_trains_the_value_model(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "gtalign.main", "--config=configs/ppo.py:tiny",
                         f"--workdir={tmp_path}", "--config.sft.steps=10",
                         "--config.eval.num_prompts=2",
                         # the held-out extras have tests of their own (above)
                         "--config.eval.at_start=False", "--config.eval.base_plain=False",
                         "--config.eval.phrasings=False"],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  rl = [r for r in records if r.get("phase") == 1.0]
  assert len(rl) == 4 and all("critic/loss" in r and "critic/value_mean" in r for r in rl)


def test_updates_per_batch_moves_the_policy_off_its_samples(tmp_path):
  """`rl.updates_per_batch=2`: the second update of each batch sees a ratio away from 1 (its
  approx. KL to the sampler far above the on-policy run's, where only float rounding separates
  them); its RL steps write one metrics row each."""
  def rl_rows(workdir, updates):
    proc = subprocess.run([sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:tiny",
                           f"--workdir={workdir}", "--config.sft.steps=2",
                           "--config.rl.steps=3", "--config.rl.lr=3e-3",
                           f"--config.rl.updates_per_batch={updates}",
                           "--config.rl.max_new_tokens=64",  # the ratio needs no long trace
                           "--config.eval.num_prompts=2", "--config.eval.steering=False",
                           "--config.eval.at_start=False", "--config.eval.max_new_tokens=16",
                           "--config.eval.base_plain=False", "--config.eval.phrasings=False"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [r for r in map(json.loads, open(workdir / "metrics.jsonl")) if r.get("phase") == 1.0]

  once, twice = rl_rows(tmp_path / "one", 1), rl_rows(tmp_path / "two", 2)
  assert len(once) == len(twice) == 3
  kl_once = max(abs(r["approx_kl"]) for r in once)
  kl_twice = max(abs(r["approx_kl"]) for r in twice)
  assert kl_twice > 20 * kl_once, (kl_once, kl_twice)


def test_compile_cache_keeps_programs_across_processes(tmp_path):
  """A second process finds the first one's compiled program in the cache directory."""
  code = ("import sys, jax, jax.numpy as jnp; from gtalign.main import enable_compile_cache; "
          "hits = []; jax.monitoring.register_event_listener("
          "lambda name, **kw: hits.append(name) if 'cache_hits' in name else None); "
          "enable_compile_cache(sys.argv[1], min_compile_seconds=0); "
          "jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(3)).block_until_ready(); "
          "print('hits', len(hits))")
  runs = [subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120) for _ in range(2)]
  assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
  assert os.listdir(tmp_path)
  assert "hits 0" in runs[0].stdout and "hits 0" not in runs[1].stdout, [r.stdout for r in runs]


def test_without_a_warm_start_the_report_has_no_after_sft_row_and_no_nan(tmp_path):
  proc, _ = _run(tmp_path, "--config.sft.steps=0", "--config.rl.steps=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "eval.json") as f:
    saved = json.load(f)
  assert set(saved["evals"]) == {"start", "base_plain", "trained"} and saved["baseline"] == "start"
  assert "| after_sft |" not in proc.stdout and "welfare(trained) - welfare(start)" in proc.stdout
  assert "Mean of empty slice" not in proc.stderr
  for line in open(tmp_path / "metrics.jsonl"):
    record = json.loads(line)  # json.loads reads NaN too; every value must be finite
    assert all(v == v and abs(v) != float("inf") for v in record.values()
               if isinstance(v, float)), record
