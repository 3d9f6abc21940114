"""The main job end to end on the tiny preset: runs, resumes after SIGKILL, rejects bad keys."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

# with a KL term, so that resuming must also bring back the reference policy
CMD = [sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:tiny",
       "--config.rl.kl_coef=0.05"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(workdir, *extra, timeout=600):
  start = time.perf_counter()
  proc = subprocess.run(CMD + [f"--workdir={workdir}", *extra], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)
  return proc, time.perf_counter() - start


def _final(workdir):
  with open(os.path.join(workdir, "eval.json")) as f:
    evals = json.load(f)["evals"]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    last = [json.loads(line) for line in f][-1]
  return evals, last


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  proc, seconds = _run(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc, seconds


def test_tiny_run_finishes_quickly_with_a_report(uninterrupted):
  workdir, proc, seconds = uninterrupted
  print(f"tiny run: {seconds:.1f} s")
  assert seconds < 120
  assert "| policy |" in proc.stdout and "welfare(trained) - welfare(after_sft)" in proc.stdout
  assert "| DA-rate on DQ | CQ-rate on VQ | balanced accuracy |" in proc.stdout
  assert "balanced_accuracy(trained) - balanced_accuracy(after_sft)" in proc.stdout
  for name in ("metrics.jsonl", "rollouts.jsonl", "eval_table.md", "training.png", "eval.json",
               "strategy.png", "samples_trained.jsonl", "export/config.json",
               "export/model.safetensors", "export/gtalign_game.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  evals, last = _final(workdir)
  assert set(evals) == {"start", "after_sft", "trained"}
  assert {"da_on_dq", "cq_on_vq", "dq_correct", "action_matches_key", "key_is_selected",
          "response_tokens", "reasoning_tokens"} <= set(evals["trained"])
  assert last["step"] == 44 and "rollout/welfare" in last and "loss" in last
  assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tb")))
  steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "rollouts.jsonl"))]
  assert min(steps) == 41 and max(steps) == 44
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  first_rl = next(r for r in records if r.get("phase") == 1.0)
  # the KL reference is the policy as RL starts: before the first RL update the two agree
  # (a reference copied before the warm start would be far off, ~1 nat per token)
  assert abs(first_rl["kl"]) < 1e-4 and records[-1]["kl"] > 0
  # temperature 0.5: the trainer's log-probs are the sampler's
  assert first_rl["sampler_logp_gap"] < 1e-3


def test_sigkill_then_resume_gives_the_same_final_metrics(uninterrupted, tmp_path):
  reference_dir = uninterrupted[0]
  workdir = tmp_path / "killed"
  proc = subprocess.Popen(CMD + [f"--workdir={workdir}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline:  # kill after the first RL step has been logged
    if metrics.exists() and any(json.loads(l)["step"] >= 42 for l in metrics.read_text()
                                .splitlines() if l.strip()):
      break
    time.sleep(0.2)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = max(json.loads(l)["step"] for l in metrics.read_text().splitlines() if l.strip())
  assert killed_at < 44  # it really was interrupted
  resumed, _ = _run(workdir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step" in resumed.stdout
  evals, last = _final(workdir)
  ref_evals, ref_last = _final(reference_dir)
  assert evals == ref_evals
  for key in ("loss", "kl", "rollout/welfare", "rollout/user", "rollout/llm", "grad_norm"):
    assert last[key] == pytest.approx(ref_last[key], abs=1e-6), key


def test_unknown_config_key_lists_the_valid_ones(tmp_path):
  proc, _ = _run(tmp_path, "--config.rl.lrr=0.1", timeout=120)
  assert proc.returncode != 0
  assert "config.rl.lrr" in proc.stderr and "lr" in proc.stderr and "num_samples" in proc.stderr


def test_ppo_with_a_critic_runs_and_trains_the_value_model(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "gtalign.main", "--config=configs/ppo.py:tiny",
                         f"--workdir={tmp_path}", "--config.sft.steps=10",
                         "--config.eval.num_prompts=2"],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  rl = [r for r in records if r.get("phase") == 1.0]
  assert len(rl) == 4 and all("critic/loss" in r and "critic/value_mean" in r for r in rl)


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
  assert set(saved["evals"]) == {"start", "trained"} and saved["baseline"] == "start"
  assert "| after_sft |" not in proc.stdout and "welfare(trained) - welfare(start)" in proc.stdout
  assert "Mean of empty slice" not in proc.stderr
  for line in open(tmp_path / "metrics.jsonl"):
    record = json.loads(line)  # json.loads reads NaN too; every value must be finite
    assert all(v == v and abs(v) != float("inf") for v in record.values()
               if isinstance(v, float)), record
