"""Multi-process training on one machine: 2 processes x 4 CPU devices against 1 process x 8.

Three tiny runs (SFT 2 steps, then GRPO) of `configs/grpo.py:tiny` with rank-4 adapters on every
projection (the base sharded as always, the adapters by their layers' axes, only they checkpointed
and restored across process counts, merged into the sampler's weights at each hand-off; the
full-weight sharded step has its own tests in test_parallel):
  two:     2 processes through `launch/local_multiprocess.sh`, 3 steps;
  one:     1 process with 8 devices, 4 steps;
  resumed: 1 process with 8 devices, continuing a copy of `two`'s run directory to step 4.
The global mesh is (data 1, fsdp 8, tensor 1) in all three, so their losses must agree: steps 1-3
of `two` with `one`, and step 4 of `resumed` (whose state comes from the 2-process checkpoint)
with `one`. RL samples greedily here: at temperature > 0 a random tiny model's near-uniform
next-token distribution lets float noise from the different shardings flip a draw.
"""

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

# run alone, after the rest of the suite (pytest.ini; the README's test command)
pytestmark = pytest.mark.multiprocess
ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = pathlib.Path(__file__).with_name("multiprocess_worker.py")
_DEVICE_FLAG = "--xla_force_host_platform_device_count"
TIMEOUT = 600

OVERRIDES = ["--config.sft.steps=2", "--config.sft.batch_size=8",  # a row per device, 8 ways
             "--config.eval.num_prompts=2",
             "--config.eval.max_new_tokens=8", "--config.rl.max_new_tokens=16",
             "--config.rl.temperature=0", "--config.rl.kl_coef=0.1",
             "--config.rl.entropy_coef=0.01", "--config.checkpoint.every=1",
             # the held-out extras have tests of their own (test_training; the reading check's
             # memory on several devices: test_sampler's prefill bound)
             "--config.eval.at_start=False", "--config.eval.base_plain=False",
             "--config.eval.phrasings=False",
             "--config.model.lora.rank=4", "--config.model.lora.alpha=8.0",
             "--config.sft.lr=1e-2", "--config.rl.lr=3e-4"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_FLAG)]
  return dict(os.environ, XLA_FLAGS=" ".join(flags + [f"{_DEVICE_FLAG}={devices}"]),
              JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


def _main(workdir, rl_steps: int) -> subprocess.Popen:
  cmd = [sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:tiny",
         f"--workdir={workdir}", f"--config.rl.steps={rl_steps}", *OVERRIDES]
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(8), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen, name: str) -> str:
  try:
    out, _ = proc.communicate(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
  assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{out[-5000:]}"
  return out


def _losses(workdir) -> dict[int, dict]:
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return {r["step"]: r for r in map(json.loads, f)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("multiprocess")
  port = _free_port()
  workers = [subprocess.Popen([sys.executable, str(WORKER), str(port + 1), "2", str(i)],
                              env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
  two = subprocess.Popen(
      ["bash", str(ROOT / "launch" / "local_multiprocess.sh"), "--", f"--config.rl.steps=1",
       *OVERRIDES],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=dict(os.environ, NUM_PROCESSES="2", DEVICES_PER_PROCESS="4", PORT=str(port),
               WORKDIR=str(base / "two"), PYTHON=sys.executable, PYTHONUNBUFFERED="1"))
  one = _main(base / "one", rl_steps=2)
  worker_out = []
  for i, proc in enumerate(workers):
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"worker {i} failed:\n{err[-4000:]}"
    worker_out.append(json.loads(out.strip().splitlines()[-1]))
  logs = {"two": _wait(two, "2-process run")}
  shutil.copytree(base / "two", base / "resumed", ignore=shutil.ignore_patterns("logs"))
  resumed = _main(base / "resumed", rl_steps=2)
  logs["one"] = _wait(one, "1-process run")
  logs["resumed"] = _wait(resumed, "resumed run")
  return {"base": base, "logs": logs, "workers": worker_out}


def test_two_processes_report_their_layout(runs):
  log = runs["logs"]["two"]
  assert "flags: process 0 of 2, coordinator 127.0.0.1:" in log
  assert ("mesh {'data': 1, 'fsdp': 8, 'tensor': 1} over 8 devices in 2 process(es)" in log)
  # params + optimizer sharded 8 ways; the adapters' B of q, k, v, gate and up (whose output
  # dims have no axis sharded over fsdp) are replicated: a little over 1/8
  share = float(re.search(r"(\d+\.\d)% per device", log).group(1))
  assert 12.5 <= share < 13.0, share
  assert (runs["base"] / "two" / "logs" / "process_1.log").exists()


def test_losses_match_between_2x4_and_1x8_devices(runs):
  two, one = _losses(runs["base"] / "two"), _losses(runs["base"] / "one")
  assert sorted(two) == [1, 2, 3] and sorted(one) == [1, 2, 3, 4]
  np.testing.assert_allclose([two[s]["loss"] for s in (1, 2, 3)],
                             [one[s]["loss"] for s in (1, 2, 3)], atol=1e-5, rtol=0)
  assert abs(two[3]["loss"]) > 1e-3  # the RL step's loss (KL and entropy terms) is not trivial
  assert two[3]["kl"] == pytest.approx(one[3]["kl"], abs=1e-5)
  assert two[3]["time/handoff_s"] > 0
  # every process's rollouts reach the log: 4 prompts x 2 samples, identical completions
  rollouts = {name: [json.loads(line)["completion"] for line in
                     open(runs["base"] / name / "rollouts.jsonl", encoding="utf-8")]
              for name in ("two", "one")}
  assert len(rollouts["two"]) == 8 and rollouts["two"] == rollouts["one"][:8]


def test_checkpoint_from_2_processes_resumes_in_1(runs):
  assert "resumed from step 3" in runs["logs"]["resumed"]
  resumed, one = _losses(runs["base"] / "resumed"), _losses(runs["base"] / "one")
  np.testing.assert_allclose(resumed[4]["loss"], one[4]["loss"], atol=1e-5, rtol=0)
  assert resumed[4]["kl"] == pytest.approx(one[4]["kl"], abs=1e-5)


def test_hybrid_mesh_puts_dcn_data_across_processes(runs):
  for w in runs["workers"]:
    assert w["hybrid"] == {"shape": [2, 4, 1], "process_of_data_row": [[0], [1]]}


def test_weight_handoff_lands_on_each_process_devices(runs):
  a, b = (w["handoff"] for w in runs["workers"])
  for h in (a, b):
    assert h["exact"] and h["fully_addressable"] and h["dtypes"] == ["bfloat16"]
    assert len(h["local_devices"]) == 4
    assert h["q_spec"] == str(("fsdp", "tensor")) and h["q_shard_shape"] == [16, 4, 16]
  assert not set(a["local_devices"]) & set(b["local_devices"])
  assert a["row_sum"] == b["row_sum"]


def test_rows_split_gather_and_stack_in_process_order(runs):
  a, b = (w["rows"] for w in runs["workers"])
  assert (a["block"], b["block"]) == ([0, 2], [2, 5])
  for r in (a, b):
    assert r["gathered_ids"] == [0, 10, 20, 30, 40]
    assert r["gathered_pairs"] == [[i, i] for i in range(5)]
    assert r["agree_max"] == [1, 10]
    assert r["objects"] == [{"process": 0, "x": 0.5}, {"process": 1, "x": 0.5}]
    assert r["batch_shape"] == [8] and r["batch_sum"] == sum(range(8))
