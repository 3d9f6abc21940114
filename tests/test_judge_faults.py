"""A training run of the tiny preset through a judge server that faults on half of its requests."""

import json
import math
import pathlib
import subprocess
import sys

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def faulty_judge():
  proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "judge_server.py")],
                          stdout=subprocess.PIPE, text=True)
  try:
    url = f"http://127.0.0.1:{int(proc.stdout.readline())}"
    # a pareto verdict when it answers; 5xx, late replies, broken JSON, empty messages, hung
    # and dropped connections when it does not
    httpx.post(f"{url}/control", json={"reply": "thought: fine. <po>1</po>", "fault_rate": 0.5,
                                       "seed": 1, "hang_s": 2.0}, trust_env=False)
    yield url
  finally:
    proc.terminate()
    proc.wait(timeout=5)


def _judge_prompts_of():
  """completion's row_id, text -> the judge prompts the trainer sent for it (tiny preset,
  ablation variant), from the rows the rollouts came from."""
  sys.path.insert(0, str(ROOT))
  from configs import grpo
  from gtalign.game.trace import parse_trace
  from gtalign.rewards import rubrics, tasks
  from gtalign.training.run import load_rows
  cfg = grpo.get_config("tiny")
  rows = {r["row_id"]: r for r in load_rows(cfg.data, cfg.seed)[0]}

  def prompts(row_id, text):
    parsed = parse_trace(text, mode=cfg.rl.parse_mode)
    return {rubrics.render(r) for r in tasks.judge_requests(rows[row_id], parsed,
                                                            variant="ablation")}
  return prompts


@pytest.mark.slow  # 100 SFT steps of the tiny model before judged traces come (~2.5 min)
def test_training_through_a_half_faulty_judge_masks_every_faulted_sample(faulty_judge, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:tiny",
       f"--workdir={tmp_path}", "--config.rl.variant=ablation",  # world rows ask a pareto judge
       f"--config.rl.judge={faulty_judge}/v1", "--config.rl.judge_max_retries=0",
       "--config.rl.judge_timeout_s=0.5", "--config.rl.steps=6",
       "--config.sft.steps=100",  # enough for the tiny model to write judged traces
       "--config.rl.prompts_per_step=8", "--config.eval.at_start=false",
       "--config.eval.num_prompts=4"],  # more judge traffic
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  stats = httpx.get(f"{faulty_judge}/stats", trust_env=False).json()
  faulted = sum(stats["faults"].values())
  assert faulted >= 6 and len(stats["faults"]) == 6, stats["faults"]  # every kind of fault

  steps = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  rl = [r for r in steps if r.get("phase") == 1.0]
  assert len(rl) == 6 and all("rollout/judge_failed" in r for r in rl)
  rollouts = [json.loads(line) for line in open(tmp_path / "rollouts.jsonl")]
  failed = [r for r in rollouts if r["judge_failed"]]
  print(f"{stats['requests']} judge requests, {faulted} faulted {stats['faults']}; "
        f"{len(failed)} of {len(rollouts)} samples masked; failure rate per step "
        f"{[round(r['rollout/judge_failed'], 3) for r in rl]}")
  assert failed and all(r["welfare"] is None and r["user"] is None and r["llm"] is None
                        for r in failed)
  # sample by sample: a masked one asked a request the server faulted, a scored one was
  # answered on every request it asked (identical prompts in a batch are asked once)
  faulted_prompts = {e["content"] for e in stats["log"] if e["fault"]}
  answered = {e["content"] for e in stats["log"] if not e["fault"]}
  prompts_of = _judge_prompts_of()
  judged = 0
  for record in rollouts:
    prompts = prompts_of(record["row_id"], record["completion"])
    if record["judge_failed"]:
      assert prompts & faulted_prompts, record["row_id"]
    elif prompts:
      judged += 1
      assert prompts <= answered and record["welfare"] is not None, record["row_id"]
  assert judged, "no sample was judged successfully"
  for record in rl:  # the step's welfare is the mean over the samples that have a score
    rows = [r for r in rollouts if r["step"] == record["step"]]
    kept = [r["welfare"] for r in rows if not r["judge_failed"]]
    assert record["rollout/judge_failed"] == pytest.approx(
        sum(r["judge_failed"] for r in rows) / len(rows))
    if kept:
      assert record["rollout/welfare"] == pytest.approx(sum(kept) / len(kept), abs=1e-5)
    else:
      assert "rollout/welfare" not in record
  for line in open(tmp_path / "metrics.jsonl"):
    assert "NaN" not in line and "Infinity" not in line
  saved = json.load(open(tmp_path / "eval.json"))["evals"]["trained"]
  for failed_row, welfare in zip(saved["judge_failed"], saved["welfare"]):
    assert (failed_row == 1.0) == (welfare is None or math.isnan(welfare))
