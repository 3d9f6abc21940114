"""Policy export (HF directory + gtalign_game.json) and `python -m gtalign.sample --game`."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from gtalign import sample
from gtalign.game import prompt as prompt_lib
from gtalign.models.checkpoints import load_pretrained
from gtalign.models.config import get_preset
from gtalign.models.tokenizer import load_tokenizer
from gtalign.models.transformer import init_params
from gtalign.training.export import GAME_SETTINGS_FILE, export_policy, read_game_settings

GAME_KEYS = {"question", "text", "blocks", "payoff", "chosen_key", "key_action", "response",
             "action", "valid", "format_ok", "reason", "finish_reason", "num_tokens"}


@pytest.fixture(scope="module")
def tiny(smollm2_gguf_path):
  """A random tiny Llama with SmolLM2's tokenizer, as training.run.load_model builds "tiny-random"."""
  tokenizer = load_tokenizer(smollm2_gguf_path)
  config = get_preset("tiny-llama").replace(vocab_size=tokenizer.vocab_size,
                                            max_position_embeddings=4096)
  return config, init_params(config, jax.random.PRNGKey(0)), tokenizer


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
  config, params, tokenizer = tiny
  directory = str(tmp_path_factory.mktemp("policy"))
  assert export_policy(directory, config, params, tokenizer, "compact", None) == directory
  return directory


def test_export_writes_settings_and_same_params(tiny, exported):
  config, params, _ = tiny
  path = os.path.join(exported, GAME_SETTINGS_FILE)
  assert json.load(open(path)) == {"prompt_style": "compact", "system": None}
  assert not [f for f in os.listdir(exported) if f.endswith(".tmp")]
  assert read_game_settings(exported) == {"prompt_style": "compact", "system": None}
  config2, params2, tokenizer2 = load_pretrained(exported)
  assert config2 == config and tokenizer2 is not None
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params2), jax.device_get(params))


def test_game_prompt_renders_as_training_did(tiny, exported):
  tokenizer = tiny[2]
  question = "What is the capital?"
  settings = sample.game_settings(exported, None, None)
  assert settings == {"prompt_style": "compact", "system": None}
  expected = prompt_lib.render(tokenizer, prompt_lib.build_messages(question, style="compact"))
  text = sample.game_prompt(tokenizer, question, settings)
  assert text == expected and prompt_lib.COMPACT_INSTRUCTION in text
  assert prompt_lib.INSTRUCTION not in text
  # flags override the export; a named model (not a directory) gets the defaults
  full = sample.game_settings(exported, "full", "")
  assert full == {"prompt_style": "full", "system": ""}
  assert sample.game_prompt(tokenizer, question, full) == prompt_lib.render(
      tokenizer, prompt_lib.build_messages(question, "", style="full"))
  assert sample.game_settings("smollm2-135m-instruct", None, None) == {
      "prompt_style": "full", "system": None}


def test_read_game_settings_defaults_and_errors(tmp_path):
  assert read_game_settings(str(tmp_path)) == {"prompt_style": "full", "system": None}
  path = tmp_path / GAME_SETTINGS_FILE
  cases = [('{"prompt_style": "tiny", "system": null}', "prompt_style"),
           ('{"prompt_style": "full", "system": 3}', "system"),
           ('{"prompt_style": "full", "colour": 1}', "colour"),
           ('["full"]', "JSON object"),
           ("{not json", "not valid JSON")]
  for text, needle in cases:
    path.write_text(text)
    with pytest.raises(ValueError) as e:
      read_game_settings(str(tmp_path))
    message = str(e.value)
    assert str(path) in message and needle in message and "\n" not in message, message
  path.write_text('{"system": "Be brief."}')  # a missing key takes its default
  assert read_game_settings(str(tmp_path)) == {"prompt_style": "full", "system": "Be brief."}


def test_export_rejects_unknown_style(tiny, tmp_path):
  config, params, tokenizer = tiny
  with pytest.raises(ValueError, match="prompt_style"):
    export_policy(str(tmp_path), config, params, tokenizer, "tiny", None)
  assert not (tmp_path / GAME_SETTINGS_FILE).exists()


def test_game_record_parses_trace():
  payoff = {k: {"LLM": 1.0, "user": 2.0} for k in ("DQ_AQ", "DQ_CQ", "DQ_DA", "VQ_AQ", "VQ_CQ",
                                                   "VQ_DA")}
  text = (f"<thinking>Clear.</thinking><payoff>{json.dumps(payoff)}</payoff>"
          "<analyze>All tie; pick DQ_CQ</analyze><response>Which country do you mean?</response>")
  record = sample.game_record("What is the capital?", text, "stop", 42)
  assert set(record) == GAME_KEYS
  assert record["valid"] and record["format_ok"] and record["reason"] == ""
  assert record["chosen_key"] == "DQ_CQ" and record["key_action"] == "CQ"
  assert record["action"] == "CQ" and record["payoff"] == payoff
  bad = sample.game_record("q", "no tags", "length", 8)
  assert bad["payoff"] is None and bad["chosen_key"] is None and bad["key_action"] is None
  assert bad["action"] == "none" and not bad["valid"]


def test_sample_cli_game(exported):
  result = subprocess.run(
      [sys.executable, "-m", "gtalign.sample", f"--model={exported}", "--game",
       "--prompt=What is the capital?", "--max_new_tokens=8"],
      capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout
  record = json.loads(lines[0])
  assert GAME_KEYS <= set(record)
  assert record["question"] == "What is the capital?"
  assert isinstance(record["blocks"], dict) and 1 <= record["num_tokens"] <= 8
  assert record["finish_reason"] in ("eos", "stop", "length")
  assert record["action"] in ("DA", "CQ", "AQ", "none")
