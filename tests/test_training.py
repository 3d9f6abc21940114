"""The main job end to end on the tiny preset: runs, resumes after SIGKILL, rejects bad keys."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

# with KL terms (on every token, and on the table's other row), so that resuming must also
# bring back the reference policy; with a priced group a step (rows the host re-prices), so
# that they replay after a kill; with the steering measurement, so that it is in the report
# and comes back equal after a kill; with scan rows (an update of their own after each policy
# update), so that they replay too; with the table's tokens drawn at a temperature of their
# own, so that the trainer must divide their logits by it to get the sampler's log-probs
CMD = [sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:tiny",
       "--config.rl.kl_coef=0.05", "--config.rl.other_row_kl=0.1",
       "--config.rl.priced_groups=1", "--config.eval.steering=True", "--config.rl.scan_rows=2",
       "--config.rl.table_temperature=0.8"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(workdir, *extra, timeout=600, env=None):
  start = time.perf_counter()
  proc = subprocess.run(CMD + [f"--workdir={workdir}", *extra], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, env=env)
  return proc, time.perf_counter() - start


def _final(workdir):
  with open(os.path.join(workdir, "eval.json")) as f:
    evals = json.load(f)["evals"]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    last = [json.loads(line) for line in f][-1]
  return evals, last


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run") / "run"
  # the phase log (read by the kill tests to aim) changes nothing else
  proc, seconds = _run(workdir, env=dict(os.environ,
                                         GTALIGN_PHASE_LOG=str(workdir.parent / "phases.jsonl")))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc, seconds


def test_tiny_run_finishes_quickly_with_a_report(uninterrupted):
  workdir, proc, seconds = uninterrupted
  print(f"tiny run: {seconds:.1f} s")
  assert seconds < 300  # a guard against a hang, not a speed measurement (bench/ measures)
  assert "| policy |" in proc.stdout and "welfare(trained) - welfare(after_sft)" in proc.stdout
  assert "| DA-rate on DQ | CQ-rate on VQ | balanced accuracy |" in proc.stdout
  assert "balanced_accuracy(trained) - balanced_accuracy(after_sft)" in proc.stdout
  for name in ("metrics.jsonl", "rollouts.jsonl", "eval_table.md", "training.png", "eval.json",
               "strategy.png", "samples_trained.jsonl", "export/config.json",
               "export/model.safetensors", "export/gtalign_game.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  evals, last = _final(workdir)
  assert set(evals) == {"start", "base_plain", "after_sft", "trained"}
  assert {"da_on_dq", "cq_on_vq", "dq_correct", "action_matches_key", "key_is_selected",
          "steering", "response_tokens", "reasoning_tokens", "read_dq", "read_vq",
          "new_read_dq", "new_read_vq"} <= set(evals["trained"])
  for name in ("steering_trained.jsonl", "reading_trained.jsonl", "samples_base_plain.jsonl",
               "warm_start_answers.json", "method.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  # the base model asked plainly: one reply per held-out question, judged on definite ones
  plain = evals["base_plain"]
  assert len(plain["dq_correct"]) == 8 and {x is None for x in plain["dq_correct"]} == {True, False}
  assert "| base_plain | 4 | 4 |" in proc.stdout
  assert last["step"] == 44 and "rollout/welfare" in last and "loss" in last
  assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tb")))
  steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "rollouts.jsonl"))]
  assert min(steps) == 41 and max(steps) == 44
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  first_rl = next(r for r in records if r.get("phase") == 1.0)
  # the KL reference is the policy as RL starts: before the first RL update the two agree
  # (a reference copied before the warm start would be far off, ~1 nat per token)
  assert abs(first_rl["kl"]) < 1e-4 and records[-1]["kl"] > 0
  # the other row's cells (rl.other_row_kl): measured from the same reference
  assert abs(first_rl["other_row_kl"]) < 1e-4 and "other_row_kl" in records[-1]
  # a priced group's rows were scored at some step (a step whose rollouts wrote no table has
  # none)
  assert any(k.startswith("rollout/priced_") for r in records for k in r)
  # the scans of edited tables trained (rl.scan_rows; a step whose rollouts wrote no table
  # teaches none)
  scans = [r["scan/loss"] for r in records if "scan/loss" in r]
  assert scans and np.isfinite(scans).all() and all(r["phase"] == 1.0 for r in records
                                                     if "scan/loss" in r)
  # temperature 0.5, the table's tokens 0.8: the trainer's log-probs are the sampler's
  assert first_rl["sampler_logp_gap"] < 1e-3
  assert min(r["rollout/hot_tokens"] for r in records if r.get("phase") == 1.0) > 4


# ---------------------------------------------------------------------------------------------
# Kill anywhere: SIGKILL inside a chosen phase, resume, and the run ends as if never killed
# ---------------------------------------------------------------------------------------------

PHASES = ("sft", "sample", "update", "checkpoint", "eval")
TIMING_KEYS = {"time", "step_seconds", "time/handoff_s", "time/judge_s", "time/sample_s"}


def _phase_log(path):
  """The run's phase records (gtalign.training.phases); a line cut by the kill is skipped."""
  if not os.path.exists(path):
    return []
  out = []
  for line in open(path):
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      pass
  return out


# the step index (0-based, the step being computed) at which each evaluation of the tiny
# preset (40 SFT + 4 RL steps) happens: a run resumed at step s makes the phase entries of
# steps >= s, so `after_sft` only when s < 40
EVAL_STEP = {"start": 0, "base_plain": 0, "after_sft": 39, "trained": 44}


@pytest.fixture(scope="module")
def reference_phases(uninterrupted):
  """(phase, step, seconds) of every phase entry of the uninterrupted run, to aim the kills."""
  records = _phase_log(uninterrupted[0].parent / "phases.jsonl")
  entries = [(a["phase"], EVAL_STEP[a["name"]] if a["phase"] == "eval" else a["step"],
              b["t"] - a["t"]) for a, b in zip(records, records[1:]) if a["phase"] in PHASES]
  assert set(PHASES) <= {e[0] for e in entries}, entries
  return entries


def _committed_step(workdir):
  ckpt_dir = workdir / "checkpoints"
  names = os.listdir(ckpt_dir) if ckpt_dir.is_dir() else []
  return max((int(n) for n in names if n.isdigit()
              and (ckpt_dir / n / "commit_success.txt").is_file()), default=0)


def _kill_inside(phase, workdir, attempt, rng, entries):
  """Starts (or resumes) the run, SIGKILLs it at a random moment inside one of the `phase`
  entries it will make; returns where the kill landed."""
  resume_step = _committed_step(workdir)
  ahead = [seconds for p, step, seconds in entries if p == phase and step >= resume_step]
  log = workdir.parent / f"{workdir.name}.phases{attempt}.jsonl"
  err_path = workdir.parent / f"{workdir.name}.killed{attempt}.stderr"
  with open(err_path, "w") as stderr:
    proc = subprocess.Popen(CMD + [f"--workdir={workdir}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=stderr, env=dict(os.environ, GTALIGN_PHASE_LOG=str(log)))
    deadline = time.time() + 400
    try:
      if phase == "checkpoint":  # a write is under way while orbax's tmp directory exists
        step = rng.randrange(resume_step // 2 + 1, 23) * 2  # saves: every 2nd of 44 steps
        ckpt_dir = workdir / "checkpoints"
        while time.time() < deadline and proc.poll() is None and step <= 44:
          names = os.listdir(ckpt_dir) if ckpt_dir.is_dir() else []
          if any(n.startswith(f"{step}.orbax-checkpoint-tmp") for n in names):
            time.sleep(rng.uniform(0, 0.02))
            break
          if str(step) in names:  # that write finished between two looks: aim at the next
            step += 2
          time.sleep(0.002)
      else:
        k = rng.randrange(len(ahead))
        delay = rng.uniform(0, 0.5 * ahead[k])  # inside it, though this run may be faster
        while time.time() < deadline and proc.poll() is None:
          if sum(r["phase"] == phase for r in _phase_log(log)) > k:
            time.sleep(delay)
            break
          time.sleep(0.01)
      alive = proc.poll() is None
      os.kill(proc.pid, signal.SIGKILL)
    finally:
      proc.kill()
      proc.wait()
  assert alive, f"the run ended before the kill aimed at {phase}:\n{err_path.read_text()[-3000:]}"
  if phase == "checkpoint":
    left = [n for n in os.listdir(workdir / "checkpoints")
            if n.startswith(f"{step}.orbax-checkpoint-tmp")]
    return f"checkpoint write of step {step}" if left else f"after the write of step {step}"
  last = _phase_log(log)[-1]
  return f"{last['phase']} at step {last['step']}" + (f" ({last['name']})" if "name" in last
                                                       else "")


def _assert_same_run(workdir, reference_dir):
  """Held-out results equal, every step's metrics equal, and only committed checkpoints."""
  evals, _ = _final(workdir)
  ref_evals, _ = _final(reference_dir)
  assert evals == ref_evals
  read = lambda d: [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
  records, ref_records = read(workdir), read(reference_dir)
  assert [r["step"] for r in records] == [r["step"] for r in ref_records]
  for got, want in zip(records, ref_records):
    assert set(got) == set(want)
    for key in set(want) - TIMING_KEYS:
      assert got[key] == pytest.approx(want[key], abs=1e-6), (got["step"], key)
  steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "rollouts.jsonl"))]
  assert steps == [json.loads(l)["step"] for l in open(os.path.join(reference_dir,
                                                                    "rollouts.jsonl"))]
  ckpt_dir = os.path.join(workdir, "checkpoints")
  for name in os.listdir(ckpt_dir):  # no tmp, incomplete or corrupt step is left behind
    assert name.isdigit() and os.path.isfile(os.path.join(ckpt_dir, name,
                                                          "commit_success.txt")), name


def _kill_chains(uninterrupted, entries, tmp_path, seed, chains, kills_per_chain):
  """`chains` runs, each SIGKILLed `kills_per_chain` times (every resume killed again, in a
  phase drawn from those it has left), then resumed to the end and compared with the
  uninterrupted run. Returns (aimed phase, where the kill landed) per kill."""
  rng = random.Random(seed)
  print(f"kill trials with GTALIGN_KILL_SEED={seed}", flush=True)
  n = chains * kills_per_chain  # each phase n // 5 times, the rest distinct and random
  draw = list(PHASES) * (n // len(PHASES)) + rng.sample(PHASES, n % len(PHASES))
  rng.shuffle(draw)
  kills = []
  for c in range(chains):
    workdir = tmp_path / f"chain{c}"
    for attempt in range(kills_per_chain):
      resume_step = _committed_step(workdir)
      left = {p for p, step, _ in entries if step >= resume_step}
      phase = next((p for p in draw if p in left), None) or rng.choice(sorted(left))
      if phase in draw:
        draw.remove(phase)
      kills.append((phase, _kill_inside(phase, workdir, attempt, rng, entries)))
    resumed, _ = _run(workdir)
    assert resumed.returncode == 0, (seed, kills, resumed.stderr[-3000:])
    try:
      _assert_same_run(workdir, uninterrupted[0])
    except AssertionError as e:
      raise AssertionError(f"GTALIGN_KILL_SEED={seed}, killed in {kills}: {e}") from e
  print(f"seed {seed}: {kills}; every resumed run equal to the uninterrupted one")
  return kills


def _landed_in_aim(kill):
  aimed, landed = kill
  return landed.startswith("checkpoint write" if aimed == "checkpoint" else aimed)


def test_sigkill_twice_at_random_moments_then_resume_gives_the_same_run(
    uninterrupted, reference_phases, tmp_path):
  seed = int(os.environ.get("GTALIGN_KILL_SEED", time.time_ns() % 10_000))
  kills = _kill_chains(uninterrupted, reference_phases, tmp_path, seed, chains=1,
                       kills_per_chain=2)
  assert len(kills) == 2


@pytest.mark.slow
def test_sigkill_ten_runs_twice_in_every_phase_then_resume_gives_the_same_run(
    uninterrupted, reference_phases, tmp_path):
  seed = int(os.environ.get("GTALIGN_KILL_SEED", time.time_ns() % 10_000))
  kills = _kill_chains(uninterrupted, reference_phases, tmp_path, seed, chains=10,
                       kills_per_chain=1)  # from the start every phase lies ahead: two each
  assert sorted(aimed for aimed, _ in kills) == sorted(PHASES * 2)
  # most kills land inside the phase aimed at (a short phase may end before the kill)
  assert sum(map(_landed_in_aim, kills)) >= 7, kills


def test_evaluate_a_checkpoint_and_its_export_gives_the_same_numbers(uninterrupted, tmp_path):
  """`gtalign.evaluate` on the run's workdir (its newest checkpoint, rebuilt from the
  workdir's config.json) and on the exported directory: same completions, same table."""
  workdir, _, _ = uninterrupted
  out = {}
  for name, model, extra in (("ckpt", str(workdir), []),
                             ("export", str(workdir / "export"), ["--preset=tiny"])):
    proc = subprocess.run([sys.executable, "-m", "gtalign.evaluate", f"--model={model}",
                           "--data=world:0", "--steering_prompts=2", "--bootstrap=100",
                           f"--output={tmp_path / name}", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / name / "evaluate.json") as f:
      out[name] = json.load(f)
    assert "| 0.1-Pareto coverage |" in proc.stdout and "| prompts | 8 of 8 |" in proc.stdout
  assert "checkpoint step 44" in out["ckpt"]["model"]
  ckpt, export = out["ckpt"]["sources"]["world"], out["export"]["sources"]["world"]
  assert ckpt["rows"] == export["rows"] and ckpt["summary"] == export["summary"]
  # the trained row of the run's own report: the same prompts, greedy, the same weights
  with open(workdir / "eval.json") as f:
    trained = json.load(f)["evals"]["trained"]
  assert ckpt["rows"]["welfare"] == trained["welfare"]
  assert ckpt["rows"]["steering"][:2] == trained["steering"][:2]
  samples = [json.loads(l) for l in open(tmp_path / "ckpt" / "world" / "samples_world.jsonl")]
  assert len(samples) == 8
