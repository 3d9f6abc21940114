"""gtalign.evaluate's row handling (its end-to-end runs are in test_training and
test_adapters_run, on the tiny runs those files train)."""

import types

import ml_collections
import pytest

from gtalign.evaluation import policy_eval as evaluate
from gtalign.game import prompt as prompt_lib
from gtalign.utils.errors import InvalidInput


def _run(style):
  config = ml_collections.ConfigDict({"data": {"prompt_style": style}})
  return types.SimpleNamespace(config=config, eval_rows=["held-out"])


def test_restyle_asks_each_question_in_the_policys_style(gtalign_data_dir):
  own = evaluate.source_rows(str(gtalign_data_dir), "ambig_qa", _run("compact"))
  restyled = evaluate.source_rows(str(gtalign_data_dir), "ambig_qa", _run("compact"),
                                  restyle=True)
  assert len(own) == len(restyled) == 300
  for a, b in zip(own[:5], restyled[:5]):
    question = a["extra_info"]["single_turn_prompt"]
    assert b["prompt"] == prompt_lib.build_messages(question, style="compact")
    assert a["prompt"] != b["prompt"] and a["row_id"] == b["row_id"]
    assert a["reward_model"] == b["reward_model"]  # judged against the same ground truth
  assert evaluate.source_rows("world", "world", _run("compact")) == ["held-out"]


def test_restyle_refuses_a_row_without_a_single_turn_question(gtalign_data_dir, monkeypatch):
  from gtalign.data import gtalign as gtalign_data
  rows = gtalign_data.read_rows(gtalign_data_dir, "math-hard", "test")[:2]
  rows[1] = dict(rows[1], extra_info={})
  monkeypatch.setattr(gtalign_data, "read_rows", lambda *a: rows)
  with pytest.raises(InvalidInput, match="math-hard/test/1 of math-hard has no"):
    evaluate.source_rows(str(gtalign_data_dir), "math-hard", _run("full"), restyle=True)


def test_dialogues_on_gtalign_sources_need_an_llm_user(gtalign_data_dir, tmp_path):
  with pytest.raises(InvalidInput, match="--simulator=<OpenAI-compatible base URL>"):
    evaluate.evaluate("tiny-random", str(gtalign_data_dir), ["ambig_qa"], dialogue_turns=2,
                      output=str(tmp_path))


def test_a_workdir_from_before_a_config_key_existed_gets_its_default(tmp_path):
  import json
  from configs import grpo
  config = json.loads(grpo.get_config("tiny").to_json())
  del config["rl"]["max_turns"], config["eval"]["dialogue_turns"]
  config["rl"]["lr"] = 0.123
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "config.json").write_text(json.dumps(config))
  got, workdir = evaluate.policy_config(str(tmp_path), "world", "rule", "judge")
  assert workdir == str(tmp_path) and got.rl.lr == 0.123  # the run's own values win
  assert got.rl.max_turns == 1 and got.eval.dialogue_turns == 0
  # rl.grade_reading was a bool in two commits of its first day: read as its mode
  for saved, mode in ((False, "off"), (True, "group")):
    config["rl"]["grade_reading"] = saved
    (tmp_path / "config.json").write_text(json.dumps(config))
    got, _ = evaluate.policy_config(str(tmp_path), "world", "rule", "judge")
    assert got.rl.grade_reading == mode


def test_evaluate_plays_the_held_out_questions_as_dialogues(tmp_path):
  out = evaluate.evaluate("tiny-random", "world", num_prompts=4, steering_prompts=0,
                          dialogue_turns=2, n_boot=20, output=str(tmp_path), max_new_tokens=16)
  rows = out["sources"]["world"]["rows"]
  assert len(rows["dialogue_welfare"]) == 4 and len(rows["dialogue_turns_dq"]) == 4
  text = (tmp_path / "evaluate.md").read_text()
  assert "As dialogues of up to 2 turns with the rule user" in text and "final acc VQ" in text
  assert len((tmp_path / "world" / "dialogues_world.jsonl").read_text().splitlines()) == 4
