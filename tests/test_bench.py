"""The bench scripts keep running: the device check's code path on a CPU, the sampler bench's
greedy-fidelity helpers. (Their numbers are measured by running them, never in tests.)"""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_device_check_runs_end_to_end_on_cpu(tmp_path):
  out = tmp_path / "device.json"
  proc = subprocess.run([sys.executable, "bench/device_check.py", "--smoke", f"--json={out}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  assert result["peak_flops"] > 0 and result["bandwidth"] > 0
  (model,) = result["models"].values()
  assert [r["batch"] for r in model["sampler"]] == [1, 4]
  for row in model["sampler"]:
    # tokens/s follows from the step time; the roofline share is the floor over the step
    assert row["tok_s"] == pytest.approx(row["batch"] / (row["step_ms"] / 1e3), rel=1e-6)
    assert row["roofline_share"] == pytest.approx(row["tok_s"] / row["roofline_tok_s"],
                                                  rel=1e-6)
  assert 0 < model["update"]["mfu"] and model["update"]["tokens"] == 4 * 32
  assert "MFU" in proc.stdout and "roofline" in proc.stdout


def test_device_check_script_names_its_wheels_and_runs_the_check():
  script = (ROOT / "bench" / "device_check.sh").read_text()
  assert "bench/device_check.py" in script and "--fetch" in script
  for package in ("gguf==", "nltk=="):
    assert package in script


def test_sampler_bench_reads_the_parity_prompts_and_finds_differences():
  import sampler as bench_sampler
  sys.path.insert(0, str(ROOT / "tests"))
  from test_smollm2 import PROMPTS
  assert bench_sampler.parity_prompts() == PROMPTS
  assert bench_sampler.first_difference([[1, 2, 3], [4]], [[1, 2, 3], [4]]) is None
  assert bench_sampler.first_difference([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 6]]) == (
      "prompt 1, token 1")
  assert bench_sampler.first_difference([[1, 2]], [[1, 2, 7]]) == "prompt 0, token 2"
