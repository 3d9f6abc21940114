"""`sample`, `score`, `serve` and `main`: bad flags, files and data end in one `error:` line, exit 2."""

import json
import subprocess
import sys

import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _one_error_line(*args, cwd=ROOT):
  proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  assert "Traceback" not in proc.stderr and "FATAL" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, proc.stderr[-2000:]
  return errors[0]


@pytest.mark.parametrize("module,flag", [("gtalign.main", "--config.seed"),
                                         ("gtalign.sample", "--seed"),
                                         ("gtalign.score", "--variant"),  # an enum flag
                                         ("gtalign.serve", "--port")])
def test_unknown_flag_and_bad_flag_value(module, flag):
  assert "'no_such_flag'" in _one_error_line(module, "--no_such_flag=1")
  line = _one_error_line(module, f"{flag}=not-a-number")
  assert flag in line and "not-a-number" in line


@pytest.mark.parametrize("module,extra", [("gtalign.sample", ["--prompt=hi"]),
                                          ("gtalign.serve", ["--port=0"])])
def test_missing_model_names_the_path_and_the_known_names(module, extra, tmp_path):
  line = _one_error_line(module, f"--model={tmp_path / 'nowhere'}", *extra)
  assert str(tmp_path / "nowhere") in line and "smollm2-135m-instruct" in line


def test_corrupt_gguf_is_named(tmp_path):
  bad = tmp_path / "model.gguf"
  bad.write_bytes(b"GGUF" + b"\0" * 20)
  line = _one_error_line("gtalign.sample", f"--model={bad}", "--prompt=hi")
  assert str(bad) in line and "GGUF" in line


def test_sample_usage_and_batch_file_errors(tmp_path):
  assert "exactly one of --prompt or --batch_file" in _one_error_line("gtalign.sample")
  batch = tmp_path / "prompts.jsonl"
  batch.write_text('"fine"\n{"prompt": 3}\n')
  line = _one_error_line("gtalign.sample", f"--batch_file={batch}")
  assert f"{batch}:2" in line and "'prompt'" in line
  line = _one_error_line("gtalign.sample", f"--batch_file={tmp_path / 'absent.jsonl'}")
  assert "absent.jsonl" in line and "no such file" in line


def test_score_bad_completions_name_file_and_line(tmp_path):
  completions = tmp_path / "c.jsonl"
  completions.write_text(json.dumps({"row_id": "nope", "text": "x"}) + "\n")
  line = _one_error_line("gtalign.score", "--data=world", f"--completions={completions}")
  assert f"{completions}:1" in line and "'nope'" in line
  completions.write_text("{not json\n")
  line = _one_error_line("gtalign.score", "--data=world", f"--completions={completions}")
  assert f"{completions}:1" in line and "not valid JSON" in line
  line = _one_error_line("gtalign.score", f"--data={tmp_path / 'no_data'}",
                         f"--completions={completions}")
  assert "no_data" in line
  completions.write_text("")
  line = _one_error_line("gtalign.score", "--data=world", f"--completions={completions}",
                         "--judge=grpc://x")
  assert "grpc://x" in line
  line = _one_error_line("gtalign.score", "--data=world", f"--completions={completions}",
                         f"--output={tmp_path / 'no_dir' / 'out.jsonl'}")
  assert "no_dir" in line and "cannot be written" in line


def test_main_unknown_preset_and_missing_config_file(tmp_path):
  line = _one_error_line("gtalign.main", "--config=configs/grpo.py:nope")
  assert "'nope'" in line and "tiny" in line
  line = _one_error_line("gtalign.main", f"--config={tmp_path / 'absent.py'}")
  assert "absent.py" in line and "not found" in line


def test_debug_shows_the_traceback(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "gtalign.sample", f"--model={tmp_path / 'x'}",
                         "--prompt=hi", "--debug"], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode != 0 and "Traceback" in proc.stderr and "MissingInput" in proc.stderr


def test_non_utf8_batch_file_and_bad_world_seed(tmp_path):
  batch = tmp_path / "latin1.jsonl"
  batch.write_bytes('"caf\xe9"\n'.encode("latin-1"))
  line = _one_error_line("gtalign.sample", f"--batch_file={batch}")
  assert f"{batch}:1" in line and "UTF-8" in line
  completions = tmp_path / "c.jsonl"
  completions.write_text("")
  line = _one_error_line("gtalign.score", "--data=world:abc", f"--completions={completions}")
  assert "world:abc" in line and "SEED" in line


@pytest.mark.parametrize("override,key", [("--config.rl.variant=mian", "rl.variant"),
                                          ("--config.rl.parse_mode=loose", "rl.parse_mode"),
                                          ("--config.rl.advantage=grpoo", "advantage"),
                                          ("--config.checkpoint.every=0", "checkpoint.every"),
                                          ("--config.checkpoint.sft_every=0",
                                           "checkpoint.sft_every"),
                                          ("--config.rl.updates_per_batch=0",
                                           "rl.updates_per_batch"),
                                          ("--config.sft.tables=fixd", "sft.tables"),
                                          ("--config.sft.scan=copied", "sft.scan"),
                                          ("--config.eval.steering_edit=one",
                                           "eval.steering_edit"),
                                          # tiny trains its <thinking>: nothing to hold
                                          ("--config.rl.thinking_kl=0.1", "rl.thinking_kl"),
                                          ("--config.rl.grade_reading=group",
                                           "rl.grade_reading"),
                                          ("--config.rl.steer_groups=-1", "rl.steer_groups"),
                                          ("--config.rl.priced_groups=-1",
                                           "rl.priced_groups"),
                                          ("--config.rl.priced_edit=all", "rl.priced_edit"),
                                          ("--config.rl.priced_train=cells", "rl.priced_train"),
                                          ("--config.rl.priced_types=definite",
                                           "rl.priced_types"),
                                          ("--config.rl.scan_rows=-2", "rl.scan_rows"),
                                          ("--config.rl.scan_weight=0", "rl.scan_weight"),
                                          ("--config.rl.world_hedge=-0.5", "rl.world_hedge")])
def test_main_bad_option_values_name_the_key(override, key, tmp_path):
  line = _one_error_line("gtalign.main", "--config=configs/grpo.py:tiny",
                         f"--workdir={tmp_path}", override)
  assert key in line, line


def test_corrupt_hf_directory_is_named(tmp_path):
  (tmp_path / "config.json").write_text("[1, 2]")
  line = _one_error_line("gtalign.sample", f"--model={tmp_path}", "--prompt=hi")
  assert str(tmp_path / "config.json") in line and "JSON object" in line


@pytest.mark.parametrize("spec, words", [
    ("{not json", "--pricing is not JSON"),
    ('{"policy": "nope"}', "gtalign.pricing.policy='nope'"),
    ('{"payoff": {"DQ_AQ": 1}}', "gtalign.payoff.DQ_AQ"),
])
def test_sample_pricing_errors_name_the_flag(spec, words):
  line = _one_error_line("gtalign.sample", "--prompt=hi", "--game", f"--pricing={spec}")
  assert "--pricing" in line and words in line


def test_evaluate_bad_steering_edit_names_the_key():
  line = _one_error_line("gtalign.evaluate", "--model=tiny-random", "--data=world",
                         "--steering_edit=all")
  assert "eval.steering_edit='all'" in line and "read" in line, line
