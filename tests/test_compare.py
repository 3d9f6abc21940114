"""The welfare-objective comparison: verdicts on synthetic arms, and the tiny preset end to end
with a kill between arms."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gtalign.comparison import summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arm(user, llm, **extra):
  user, llm = np.asarray(user, float), np.asarray(llm, float)
  return {"user": user, "llm": llm, "welfare": np.sqrt(user * llm), **extra}


def test_verdicts_and_intervals_on_synthetic_arms():
  rng = np.random.default_rng(0)
  n = 40
  base_u, base_l = rng.uniform(0.3, 0.7, n), rng.uniform(0.3, 0.7, n)
  results = {
      "cobb_douglas": {s: _arm(base_u, base_l) for s in (0, 1)},
      # every prompt better on both sides, at both seeds
      "linear": {s: _arm(base_u + 0.1, base_l + 0.1) for s in (0, 1)},
      # every prompt worse for the LLM
      "user_only": {s: _arm(base_u, base_l - 0.2) for s in (0, 1)},
      # the same points in another order at seed 1: as good on average, not paired-distinguishable
      "llm_only": {0: _arm(base_u, base_l), 1: _arm(base_u[::-1], base_l[::-1])},
  }
  out = summary.summarise(results, n_boot=500)
  assert out["verdicts"]["linear"].startswith("linear vs Cobb-Douglas on mutual welfare: higher")
  assert "user_only vs Cobb-Douglas on mutual welfare: lower" in out["verdicts"]["user_only"]
  assert "not distinguishable" in out["verdicts"]["llm_only"]
  # linear's points each dominate Cobb-Douglas's: the joint frontier is made of linear's points
  # only, and Cobb-Douglas sits further from it
  linear, cd = out["arms"]["linear"], out["arms"]["cobb_douglas"]
  assert linear["regret"]["mean"] < cd["regret"]["mean"]
  assert linear["coverage"]["mean"] > cd["coverage"]["mean"]
  assert out["diffs"]["linear"]["regret"][2] < 0  # paired: lower regret on the whole interval
  # the arm's own objective: user_only's is its U
  assert out["arms"]["user_only"]["own"]["mean"] == pytest.approx(base_u.mean())
  assert out["arms"]["linear"]["own"]["mean"] == pytest.approx((base_u + base_l).mean() / 2 + 0.1)
  mutual = out["arms"]["cobb_douglas"]["mutual"]
  assert mutual["lo"] <= mutual["mean"] <= mutual["hi"]
  assert mutual["seed_min"] == mutual["seed_max"] == pytest.approx(np.sqrt(base_u * base_l).mean())
  text = summary.markdown(out)
  assert "| mutual welfare sqrt(U L) |" in text and "worst regret" in text
  assert text.count("higher") >= 1 and "- user_only vs Cobb-Douglas" in text


def test_verdict_thresholds():
  assert summary.verdict((0.02, 0.001, 0.04)) == "higher"
  assert summary.verdict((-0.02, -0.04, -0.001)) == "lower"
  assert summary.verdict((0.01, -0.01, 0.03)) == "not distinguishable"
  assert summary.verdict((0.0, float("nan"), float("nan"))) == "not distinguishable"


def test_unknown_arm_and_bad_seeds_are_one_line_errors(tmp_path):
  for override, expected in (("--config.compare.arms=cobb_douglas,utilitarian",
                              "compare.arms: unknown arm 'utilitarian'"),
                             ("--config.compare.arms=cobb_douglas,turns3",
                              "compare objectives or turn limits, not both"),
                             ("--config.compare.arms=turns1,turns2",
                              "set eval.dialogue_turns >= 1"),
                             ("--config.compare.seeds=0,x", "compare.seeds='0,x'")):
    proc = subprocess.run([sys.executable, "-m", "gtalign.main", "--config=configs/compare.py:tiny",
                           override, f"--workdir={tmp_path}/w"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]


def test_tiny_comparison_resumes_after_a_kill_between_arms(tmp_path):
  workdir = tmp_path / "compare"
  cmd = [sys.executable, "-m", "gtalign.main", "--config=configs/compare.py:tiny",
         f"--workdir={workdir}"]
  first_done = workdir / "arms" / "cobb_douglas_seed0" / "arm_done.json"
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)
  deadline = time.time() + 400
  while not first_done.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  assert first_done.exists(), proc.communicate()[0][-3000:]
  os.killpg(proc.pid, signal.SIGKILL)  # the second arm is starting: killed between arms
  proc.wait()
  assert not (workdir / "compare.json").exists()
  finished = first_done.read_text()
  metrics = (first_done.parent / "metrics.jsonl").read_text()
  resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  # the finished arm and the warm start are not run again; the second arm is
  first_line = resumed.stdout.splitlines()[0]
  assert "1 arm(s) left" in first_line and "(from measured arms)" in first_line, first_line
  assert "arm cobb_douglas_seed0 starts" not in resumed.stdout
  assert "arm linear_seed0 finished" in resumed.stdout
  assert first_done.read_text() == finished
  assert (first_done.parent / "metrics.jsonl").read_text() == metrics
  with open(workdir / "compare.json") as f:
    out = json.load(f)
  assert set(out["arms"]) == {"cobb_douglas", "linear"} and out["seeds"] == [0]
  assert "linear" in out["verdicts"] and out["prompts"] == 8
  for name in ("compare.md", "compare_scatter.png", "compare_curves.png"):
    assert os.path.getsize(workdir / name) > 0
  # both arms start from the one warm start: their first RL step sees the same policy
  first = {}
  for arm in ("cobb_douglas", "linear"):
    rows = [json.loads(l) for l in open(workdir / "arms" / f"{arm}_seed0" / "rollouts.jsonl")]
    first[arm] = [r["completion"] for r in rows if r["step"] == 9]
  assert first["cobb_douglas"] == first["linear"] and first["linear"]


def test_tiny_dialogue_comparison_trains_both_turn_limits_from_one_warm_start(tmp_path):
  """configs/dialogue.py:tiny: single-turn (turns1) and multi-turn (turns3) arms from one warm
  start, each scored as held-out dialogues; the report pairs them by prompt."""
  workdir = tmp_path / "dialogue"
  proc = subprocess.run([sys.executable, "-m", "gtalign.main", "--config=configs/dialogue.py:tiny",
                         f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(workdir / "compare.json") as f:
    out = json.load(f)
  assert out["reference"] == "turns1" and out["arms_order"] == ["turns1", "turns3"]
  multi = out["arms"]["turns3"]
  for key in ("dialogue_correct_vq", "dialogue_asks_on_dq", "dialogue_welfare"):
    assert len(multi[key]["diff"]) == 3 and multi[key]["verdict"]
    assert set(multi[key]["seeds"]) == {"0"}
  for arm, turns in (("turns1", 1), ("turns3", 3)):
    config = json.loads((workdir / "arms" / f"{arm}_seed0" / "config.json").read_text())
    assert config["rl"]["max_turns"] == turns and config["eval"]["dialogue_turns"] == 3
    lines = (workdir / "arms" / f"{arm}_seed0" / "dialogues_trained.jsonl").read_text()
    assert len(lines.splitlines()) == 8
  text = (workdir / "compare.md").read_text()
  assert "turns3 - turns1" in text and "Dialogues of turns3 (seed 0), verbatim:" in text
  # the multi-turn arm's rollouts are whole episodes, logged turn by turn
  rows = [json.loads(l) for l in open(workdir / "arms" / "turns3_seed0" / "rollouts.jsonl")]
  assert rows and all(r["turns"] and "completion" in r["turns"][0] for r in rows)
