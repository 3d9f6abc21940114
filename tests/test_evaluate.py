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
