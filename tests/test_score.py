"""`python -m gtalign.score`: completions in, per-source welfare table out."""

import json
import math
import subprocess
import sys

import pytest

from gtalign.data.world import make_world
from gtalign.game.trace import parse_trace
from gtalign.rewards import tasks
from gtalign.rewards.judges import make_judge
from gtalign.score import load_rows, score, summarise

# DQ_DA and VQ_CQ are their rows' strict picks: the world pays the answer term only for the
# move the trace's own table prices highest (rewards/world.py)
PAYOFF = json.dumps({k: {"LLM": 4.0, "user": 3.0} if k in ("DQ_DA", "VQ_CQ") else
                     {"LLM": 1.0 + i % 2, "user": 2.0 - i % 2} for i, k in enumerate(
    ["DQ_AQ", "DQ_CQ", "DQ_DA", "VQ_AQ", "VQ_CQ", "VQ_DA"])})


def trace(response, key="DQ_DA"):
  return (f"<thinking>The question is clear.</thinking><payoff>{PAYOFF}</payoff>"
          f"<analyze>Frontier chosen: {key}.</analyze><response>{response}</response>")


def _completions():
  world = make_world(seed=0, num_train=8, num_test=8)["test"]
  dq = next(r for r in world if r["extra_info"]["question_type"] == "DQ")
  vq = next(r for r in world if r["extra_info"]["question_type"] == "VQ")
  return world, [
      {"row_id": dq["row_id"], "text": trace(dq["extra_info"]["answer"])},
      {"row_id": vq["row_id"], "text": trace(
          f"Which {vq['extra_info']['missing_slot']} do you mean? Could you tell me more?",
          "VQ_CQ")},
      {"row_id": dq["row_id"], "text": "no blocks at all"},
  ]


def test_score_matches_reward_functions():
  world, items = _completions()
  rows = {r["row_id"]: r for r in world}
  judge = make_judge("rule")
  results = score(rows, [(c["row_id"], c["text"]) for c in items], judge)
  assert [r["valid"] for r in results] == [True, True, False]
  assert results[2]["welfare"] == 0.0 and results[2]["user"] == 0.0  # parse failure: exactly 0
  for item, result in zip(items, results):
    parsed = parse_trace(item["text"])
    row = rows[item["row_id"]]
    expected = tasks.reward(row, parsed, judge.score(tasks.judge_requests(row, parsed)))
    assert math.isclose(result["welfare"], expected.score)
    assert math.isclose(result["welfare"], math.sqrt(result["user"] * result["llm"]))
  assert results[0]["answer"] == 1.0 and results[1]["answer"] == 1.0  # right answer; asked back
  table = summarise(results)
  assert table.splitlines()[0].split()[:3] == ["source", "n", "U"]
  assert any(line.startswith("world") for line in table.splitlines())


def test_cli_on_world_and_on_gtalign_math(tmp_path, gtalign_data_dir):
  _, items = _completions()
  path = tmp_path / "completions.jsonl"
  path.write_text("".join(json.dumps(c) + "\n" for c in items))
  out = tmp_path / "scored.jsonl"
  proc = subprocess.run([sys.executable, "-m", "gtalign.score", "--data=world",
                         f"--completions={path}", f"--output={out}"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  world_line = next(l for l in lines if l.startswith("world")).split()
  assert world_line[1] == "3"
  assert len(out.read_text().splitlines()) == 3

  test_file = gtalign_data_dir / "gamellm_wildbreak_math_medium_abgqa/by_source/math-hard/test.parquet"
  rows = load_rows(str(test_file))
  first = rows["test/0"]
  right = trace(f"The answer is \\boxed{{{first['reward_model']['ground_truth']}}}.")
  wrong = trace("The answer is \\boxed{12345}.")
  path.write_text(json.dumps({"row_id": "test/0", "text": right}) + "\n"
                  + json.dumps({"row_id": "test/0", "text": wrong}) + "\n")
  proc = subprocess.run([sys.executable, "-m", "gtalign.score", f"--data={test_file}",
                         f"--completions={path}", f"--output={out}"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  scored = [json.loads(l) for l in out.read_text().splitlines()]
  assert [s["answer"] for s in scored] == [1.0, 0.0]
  assert scored[0]["welfare"] > scored[1]["welfare"]


def test_bad_completions_are_named(tmp_path):
  rows = load_rows("world")
  path = tmp_path / "c.jsonl"
  path.write_text('{"row_id": "nope", "text": "x"}\n')
  proc = subprocess.run([sys.executable, "-m", "gtalign.score", "--data=world",
                         f"--completions={path}"], capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "c.jsonl:1" in proc.stderr and "'nope'" in proc.stderr
  assert len(rows) == 512 + 54  # the world's default train and held-out rows
