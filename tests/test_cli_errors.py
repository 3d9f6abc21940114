"""Bad input to `python -m gtalign.main` ends in one line `error: ...` and exit status 2."""

import re
import subprocess
import sys

import pytest

from gtalign.utils.errors import InvalidInput, MissingInput

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
CMD = [sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:tiny"]


def _fails_in_one_line(tmp_path, *overrides):
  proc = subprocess.run(CMD + [f"--workdir={tmp_path}", *overrides], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, proc.stderr[-2000:]
  return errors[0]


def test_error_classes_are_the_builtins_callers_catch():
  assert issubclass(InvalidInput, ValueError) and issubclass(MissingInput, FileNotFoundError)


def test_unknown_config_key(tmp_path):
  line = _fails_in_one_line(tmp_path, "--config.rl.lrr=0.1")
  assert "config.rl.lrr" in line and "num_samples" in line


def test_gtalign_source_without_data_dir_names_the_key(tmp_path):
  line = _fails_in_one_line(tmp_path, "--config.data.source=ambig_qa")
  assert "--config.data.dir" in line and "ambig_qa" in line


def test_missing_data_directory_names_the_file(tmp_path):
  line = _fails_in_one_line(tmp_path, "--config.data.source=ambig_qa",
                            f"--config.data.dir={tmp_path / 'nowhere'}")
  assert str(tmp_path / "nowhere") in line and "does not exist" in line


def test_every_prompt_too_long_names_the_key_the_length_and_the_file(tmp_path,
                                                                     gtalign_data_dir):
  line = _fails_in_one_line(tmp_path, "--config.data.source=ambig_qa",
                            f"--config.data.dir={gtalign_data_dir}",
                            "--config.data.max_prompt_length=64")
  assert "data.max_prompt_length=64" in line and "the shortest has" in line
  assert str(gtalign_data_dir) in line and ".parquet" in line


@pytest.mark.parametrize("data, sources, preset, expected", [
    ("world", ["ambig_qa"], "", "--sources=ambig_qa needs --data=<GTAlign data dir>"),
    ("/nonexistent/gtalign", [], "", "--data=/nonexistent/gtalign: no such directory"),
    ("world:x", [], "", "--data=world:x: expected world or world:SEED"),
    ("world", [], "huge", "--preset=huge: unknown preset 'huge'"),
])
def test_evaluate_bad_data_sources_and_presets(data, sources, preset, expected):
  from gtalign.evaluation import policy_eval as evaluate
  with pytest.raises(InvalidInput, match=re.escape(expected)):
    evaluate.check_sources(data, sources)
    evaluate.policy_config("tiny-random", data, "rule", "judge", preset=preset)


def test_evaluate_a_directory_that_is_not_a_run_or_a_model(tmp_path, gtalign_data_dir):
  from gtalign.evaluation import policy_eval as evaluate
  with pytest.raises(InvalidInput, match="unknown source 'chess'"):
    evaluate.check_sources(str(gtalign_data_dir), ["math-hard", "chess"])
  (tmp_path / "checkpoints").mkdir()  # looks like a workdir, but has no config.json
  proc = subprocess.run([sys.executable, "-m", "gtalign.evaluate", f"--model={tmp_path}",
                         "--data=world", f"--output={tmp_path / 'out'}"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "config.json not found" in proc.stderr, proc.stderr[-2000:]
