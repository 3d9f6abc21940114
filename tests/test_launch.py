"""The cluster launch scripts in launch/: shellcheck, `--help`, and the exact `--dry-run` commands.

Nothing here needs gcloud, sbatch or a network: dry runs print their commands and run none.
`local_multiprocess.sh` also runs for real, with a stub interpreter in place of Python.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
LOCAL = LAUNCH / "local_multiprocess.sh"
SLURM = LAUNCH / "slurm_gpu.sbatch"
TPU = LAUNCH / "tpu_pod.sh"
SCRIPTS = (LOCAL, SLURM, TPU)

# Variables the scripts read; removed from the environment so that the defaults are tested.
_SCRIPT_VARS = (
    "NUM_PROCESSES", "DEVICES_PER_PROCESS", "PORT", "CONFIG", "WORKDIR", "PYTHON", "LOG_DIR",
    "NODES", "GPUS_PER_NODE", "PROCESS_PER", "VENV", "SBATCH_ARGS", "TPU_NAME", "ZONE",
    "PROJECT", "ACCELERATOR_TYPE", "RUNTIME_VERSION", "SPOT", "CODE", "REPO_URL", "BRANCH",
    "REMOTE_DIR", "SETUP", "GCS_BUCKET", "XLA_FLAGS", "JAX_PLATFORMS")
LIBTPU = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"


def _env(**overrides):
  env = {k: v for k, v in os.environ.items()
         if k not in _SCRIPT_VARS and not k.startswith("SLURM_")}
  env.update({k: str(v) for k, v in overrides.items()})
  return env


def _run(script, *args, timeout=30, **env):
  return subprocess.run([str(script), *args], env=_env(**env), capture_output=True, text=True,
                        timeout=timeout, check=False)


def _dry_run(script, *args, **env):
  """The printed commands, each split into words; comment lines are left out."""
  result = _run(script, "--dry-run", *args, **env)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()
          if line.strip() and not line.startswith("#")]


def _shellcheck():
  found = shutil.which("shellcheck")
  if found is None:
    beside_python = pathlib.Path(sys.executable).with_name("shellcheck")
    found = str(beside_python) if beside_python.exists() else None
  if found is None:
    pytest.fail('shellcheck not found; install the test dependencies: pip install -e ".[test]"')
  return found


# -- all scripts --------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS + (ROOT / "launch" / "common.sh",),
                         ids=lambda p: p.name)
def test_shellcheck_clean(script):
  # -x: follow `source launch/common.sh`, which is also checked on its own
  result = subprocess.run([_shellcheck(), "-x", str(script)], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "shellcheck disable" not in script.read_text()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_executable(script):
  assert os.access(script, os.X_OK), f"chmod +x {script.relative_to(ROOT)}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_documents_every_variable(script):
  result = _run(script, "--help")
  assert result.returncode == 0, result.stderr
  assert _run(script, "-h").stdout == result.stdout
  text = script.read_text()
  read = set(re.findall(r"^\s*([A-Z][A-Z0-9_]+)=\$\{\1:-", text, flags=re.M))
  assert len(read) >= 6, read
  for name in read:
    assert re.search(rf"^  {name} ", result.stdout, flags=re.M), f"{name} not in --help"
  assert "--dry-run" in result.stdout and "Usage" in result.stdout
  assert "#" not in result.stdout.splitlines()[0]


# -- local_multiprocess.sh ----------------------------------------------------------------------


def _local_cmd(i, n=2, devices=4, port=12355, python="python", extra=(), xla=None,
               config="configs/grpo.py:tiny", workdir="workdir/local_multiprocess"):
  prefix = []
  if devices:
    flags = (xla + " " if xla else "") + f"--xla_force_host_platform_device_count={devices}"
    prefix = ["env", f"XLA_FLAGS={flags}", "JAX_PLATFORMS=cpu"]
  return [*prefix, python, "-m", "gtalign.main", f"--config={config}", f"--workdir={workdir}",
          f"--coordinator=127.0.0.1:{port}", f"--num_processes={n}", f"--process_id={i}",
          *extra]


def test_local_dry_run_defaults_and_forwarded_args():
  commands = _dry_run(LOCAL, "--", "--config.rl.steps=2", "two words", "--dry-run")
  extra = ["--config.rl.steps=2", "two words", "--dry-run"]
  assert commands == [_local_cmd(0, extra=extra), _local_cmd(1, extra=extra)]


def test_local_dry_run_three_processes_and_settings():
  commands = _dry_run(LOCAL, "--config.seed=3", NUM_PROCESSES=3, PORT=23456,
                      DEVICES_PER_PROCESS=2, CONFIG="configs/sft.py", WORKDIR="/tmp/w",
                      PYTHON="/opt/py/bin/python",
                      XLA_FLAGS="--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=8")
  assert commands == [
      _local_cmd(i, n=3, devices=2, port=23456, python="/opt/py/bin/python",
                 extra=["--config.seed=3"], xla="--xla_dump_to=/tmp/d",
                 config="configs/sft.py", workdir="/tmp/w")
      for i in range(3)]


def test_local_dry_run_zero_devices_leaves_the_environment_alone():
  commands = _dry_run(LOCAL, DEVICES_PER_PROCESS=0, XLA_FLAGS="--xla_dump_to=/tmp/d")
  assert commands == [_local_cmd(0, devices=0), _local_cmd(1, devices=0)]


@pytest.mark.parametrize("var,value", [("NUM_PROCESSES", "0"), ("DEVICES_PER_PROCESS", "-1"),
                                       ("PORT", "70000")])
def test_local_rejects_bad_settings(var, value):
  result = _run(LOCAL, "--dry-run", **{var: value})
  assert result.returncode == 2
  assert var in result.stderr and not result.stdout


_STUB = """\
#!{python}
import json, os, sys, time
process = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--process_id="))
with open(os.path.join(os.environ["STUB_PIDS"], process), "w") as f:
  f.write(str(os.getpid()))
print(json.dumps({{"argv": sys.argv[1:], "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
                  "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS")}}), flush=True)
mode = os.environ["STUB_MODE"]
if mode == "fail" and process == "1":
  print("stub failure in process 1", file=sys.stderr)
  sys.exit(3)
if mode in ("fail", "sleep"):
  time.sleep(60)
"""


@pytest.fixture
def stub(tmp_path):
  """An executable that stands in for Python: it records its argv and environment."""
  path = tmp_path / "python-stub"
  path.write_text(_STUB.format(python=sys.executable))
  path.chmod(0o755)
  (tmp_path / "pids").mkdir()
  return path


def _pids(tmp_path):
  return {int(p.name): int(p.read_text()) for p in (tmp_path / "pids").iterdir()
          if p.read_text()}


def _assert_gone(pids):
  for pid in pids:
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)


def test_local_runs_every_process_and_logs_it(stub, tmp_path):
  workdir = tmp_path / "run"
  result = _run(LOCAL, "--", "--config.seed=1", PYTHON=stub, WORKDIR=workdir,
                STUB_MODE="ok", STUB_PIDS=tmp_path / "pids")
  assert result.returncode == 0, result.stdout + result.stderr
  for i in range(2):
    log = workdir / "logs" / f"process_{i}.log"  # LOG_DIR defaults to $WORKDIR/logs
    record = json.loads(log.read_text())
    assert record["argv"] == _local_cmd(i, workdir=workdir, extra=["--config.seed=1"])[4:]
    assert record["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"
    assert record["JAX_PLATFORMS"] == "cpu"
  # Process 0 is streamed to the terminal too; the others only to their logs.
  assert "--process_id=0" in result.stdout and "--process_id=1" not in result.stdout


def test_local_failure_stops_the_others_and_names_the_process(stub, tmp_path):
  start = time.monotonic()
  result = _run(LOCAL, PYTHON=stub, WORKDIR=tmp_path / "run", LOG_DIR=tmp_path / "logs",
                NUM_PROCESSES=3, STUB_MODE="fail", STUB_PIDS=tmp_path / "pids")
  assert time.monotonic() - start < 20  # the sleeping processes were stopped, not awaited
  assert result.returncode == 3
  assert "process 1 of 3 failed with exit status 3" in result.stderr
  assert "stub failure in process 1" in result.stderr  # the tail of its log
  assert str(tmp_path / "logs" / "process_1.log") in result.stderr
  _assert_gone(_pids(tmp_path).values())


def test_local_sigterm_stops_every_process(stub, tmp_path):
  proc = subprocess.Popen(
      [str(LOCAL)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      env=_env(PYTHON=stub, WORKDIR=tmp_path / "run", STUB_MODE="sleep",
               STUB_PIDS=tmp_path / "pids"))
  deadline = time.monotonic() + 15
  while len(_pids(tmp_path)) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
  pids = _pids(tmp_path)
  assert len(pids) == 2
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=15) == 143
  _assert_gone(pids.values())


# -- slurm_gpu.sbatch ---------------------------------------------------------------------------


def _srun(nodes, tasks, gpus, ids, workdir, extra=(), python="python", config="configs/grpo.py"):
  return ["srun", f"--nodes={nodes}", f"--ntasks-per-node={tasks}", gpus,
          "--kill-on-bad-exit=1", "env", f"GTALIGN_LOCAL_DEVICE_IDS={ids}", python, "-m",
          "gtalign.main", f"--config={config}", f"--workdir={workdir}", *extra]


def _split_sbatch(stdout):
  """The sbatch command, and the srun command printed (as a comment) after it."""
  lines = stdout.splitlines()
  assert not lines[0].startswith("#")
  srun_lines = [l[2:] for l in lines[1:] if l.startswith("# srun ")]
  assert len(srun_lines) == 1, stdout
  assert all(l.startswith("#") for l in lines[1:]), "only the sbatch line may run outside a job"
  return shlex.split(lines[0]), shlex.split(srun_lines[0])


def _with_real_paths(words):
  return [os.path.realpath(w) if w.startswith("/") else
          "--chdir=" + os.path.realpath(w[len("--chdir="):]) if w.startswith("--chdir=") else w
          for w in words]


def test_slurm_header_is_a_valid_batch_file():
  lines = SLURM.read_text().splitlines()
  assert lines[0] == "#!/bin/bash"
  header = [l for l in lines[1:] if l.startswith("#SBATCH")]
  assert lines[1:len(header) + 1] == header  # before any other line
  for option in ("--job-name=gtalign", "--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=8",
                 "--exclusive", "--output="):
    assert any(l.split()[1].startswith(option) for l in header), option


def test_slurm_outside_a_job_submits_one_process_per_gpu():
  result = _run(SLURM, "--dry-run", "--", "--config.seed=1", "a b")
  assert result.returncode == 0, result.stderr
  sbatch, srun = _split_sbatch(result.stdout)
  assert _with_real_paths(sbatch) == _with_real_paths(
      ["sbatch", "--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=8", f"--chdir={ROOT}",
       str(SLURM), "--", "--config.seed=1", "a b"])
  assert srun == _srun(2, 8, "--gpus-per-task=1", "0", "workdir/slurm-JOBID",
                       extra=["--config.seed=1", "a b"])


def test_slurm_outside_a_job_one_process_per_node_with_sbatch_args():
  result = _run(SLURM, "--dry-run", NODES=4, GPUS_PER_NODE=4, PROCESS_PER="node",
                SBATCH_ARGS="--partition=gpu  --time=1:00:00", WORKDIR="/shared/run",
                VENV="/shared/venv")
  assert result.returncode == 0, result.stderr
  sbatch, srun = _split_sbatch(result.stdout)
  assert _with_real_paths(sbatch) == _with_real_paths(
      ["sbatch", "--nodes=4", "--gpus-per-node=4", "--ntasks-per-node=1", f"--chdir={ROOT}",
       "--partition=gpu", "--time=1:00:00", str(SLURM)])
  assert srun == _srun(4, 1, "--gpus-per-node=4", "0,1,2,3", "/shared/run")
  assert "# source /shared/venv/bin/activate" in result.stdout


def test_slurm_inside_a_job_runs_srun():
  assert _dry_run(SLURM, "--config.seed=1", SLURM_JOB_ID=4242, SLURM_JOB_NUM_NODES=3,
                  SLURM_GPUS_PER_NODE="h100:4") == [
      _srun(3, 4, "--gpus-per-task=1", "0", "workdir/slurm-4242", extra=["--config.seed=1"])]
  assert _dry_run(SLURM, SLURM_JOB_ID=7, PROCESS_PER="node", VENV="/v", PYTHON="python3.11",
                  CONFIG="configs/grpo.py:tiny") == [
      ["source", "/v/bin/activate"],
      _srun(2, 1, "--gpus-per-node=8", "0,1,2,3,4,5,6,7", "workdir/slurm-7",
            python="python3.11", config="configs/grpo.py:tiny")]


def test_slurm_rejects_bad_process_per():
  result = _run(SLURM, "--dry-run", PROCESS_PER="socket")
  assert result.returncode == 2 and "PROCESS_PER" in result.stderr and not result.stdout


# -- tpu_pod.sh ---------------------------------------------------------------------------------


def _gcloud(verb, *args, zone="us-west4-a", project=None):
  return ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, f"--zone={zone}",
          *([f"--project={project}"] if project else [])]


def _ssh(remote, name="pod", **kwargs):
  return [*_gcloud("ssh", name, **kwargs), "--worker=all", f"--command={remote}"]


def _remote(ssh_words):
  """The words of the remote command of a `gcloud ... ssh --command=...` line."""
  (command,) = [w[len("--command="):] for w in ssh_words if w.startswith("--command=")]
  return shlex.split(command)


def _mount(bucket):
  """The remote command that mounts gs://BUCKET at /gcs/BUCKET with gcsfuse, once."""
  d = f"/gcs/{bucket}"
  return ["mountpoint", "-q", d, "||", "(sudo", "mkdir", "-p", d, "&&", "sudo", "chown", "$USER",
          d, "&&", "gcsfuse", "--implicit-dirs", bucket, f"{d})"]


def test_tpu_dry_run_copy_with_gcs_bucket(tmp_path):
  result = _run(TPU, "--dry-run", "--", "--config.seed=1", "a b", TPU_NAME="pod",
                ZONE="us-west4-a", GCS_BUCKET="my-bucket", TMPDIR=tmp_path)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[1].startswith("# if the describe fails")
  commands = [shlex.split(l) for l in lines if not l.startswith("#")]
  assert len(commands) == 9, result.stdout
  describe, create, archive, scp, unpack, remove, install, mount, train = commands
  assert describe == _gcloud("describe", "pod")
  assert create == [*_gcloud("create", "pod"), "--accelerator-type=v5litepod-16",
                    "--version=v2-alpha-tpuv5-lite"]
  tarball = str(tmp_path / "gtalign-pod.tar.gz")
  assert archive[:5] == ["git", "-C", archive[2], "archive", "--format=tar.gz"]
  assert os.path.realpath(archive[2]) == str(ROOT)
  assert archive[5] == f"--output={tarball}" and len(archive) == 7
  rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", archive[6] + "^{commit}"],
                       capture_output=True, text=True, check=False)
  assert rev.returncode == 0, f"{archive[6]} is not a commit"
  assert scp == [*_gcloud("scp", tarball, "pod:gtalign-code.tar.gz"), "--worker=all"]
  assert unpack[:-1] == _ssh("")[:-1]
  assert _remote(unpack) == ["mkdir", "-p", "gtalign", "&&", "tar", "-xzf", "gtalign-code.tar.gz",
                             "-C", "gtalign", "&&", "rm", "gtalign-code.tar.gz"]
  assert remove == ["rm", "-f", tarball]
  assert _remote(install) == ["cd", "gtalign", "&&", "python3", "-m", "pip", "install", "-e", ".",
                              "jax[tpu]", "-f", LIBTPU]
  assert mount[:-1] == _ssh("")[:-1]
  assert _remote(mount) == _mount("my-bucket")
  # "$USER" stays quoted for the workers' shell, which expands it there.
  assert 'sudo chown "$USER" /gcs/my-bucket' in mount[-1]
  assert train[:-1] == _ssh("")[:-1]
  assert _remote(train) == ["cd", "gtalign", "&&", "python3", "-m", "gtalign.main",
                            "--config=configs/grpo.py", "--workdir=/gcs/my-bucket/gtalign/pod",
                            "--config.seed=1", "a b"]


def test_tpu_gcs_bucket_is_mounted_without_setup_and_workdir_can_be_set():
  commands = _dry_run(TPU, TPU_NAME="pod", ZONE="us-west4-a", GCS_BUCKET="b.example", SETUP=0,
                      CODE="clone", REPO_URL="u", WORKDIR="/gcs/b.example/runs/7")
  describe, create, clone, mount, train = commands
  assert mount[:-1] == _ssh("")[:-1] and _remote(mount) == _mount("b.example")
  assert "--workdir=/gcs/b.example/runs/7" in _remote(train)


def test_tpu_dry_run_clone_v5p_spot_project_no_setup():
  commands = _dry_run(TPU, "--config.seed=2", TPU_NAME="big", ZONE="us-east5-a",
                      PROJECT="my-proj", ACCELERATOR_TYPE="v5p-16", SPOT=1, CODE="clone",
                      REPO_URL="https://github.com/me/gtalign.git", BRANCH="dev",
                      REMOTE_DIR="src/gt", SETUP=0, WORKDIR="/mnt/nfs/run",
                      CONFIG="configs/grpo.py:tiny", PYTHON="python3.11")
  kw = {"zone": "us-east5-a", "project": "my-proj"}
  describe, create, clone, train = commands
  assert describe == _gcloud("describe", "big", **kw)
  assert create == [*_gcloud("create", "big", **kw), "--accelerator-type=v5p-16",
                    "--version=v2-alpha-tpuv5", "--spot"]
  assert clone[:-1] == _ssh("", name="big", **kw)[:-1]
  remote = _remote(clone)
  assert "git clone --branch dev https://github.com/me/gtalign.git src/gt" in " ".join(remote)
  assert "git -C src/gt checkout -B dev FETCH_HEAD" in " ".join(remote)
  assert _remote(train) == ["cd", "src/gt", "&&", "python3.11", "-m", "gtalign.main",
                            "--config=configs/grpo.py:tiny", "--workdir=/mnt/nfs/run",
                            "--config.seed=2"]


def test_tpu_runtime_version_override_and_project_only_when_set():
  commands = _dry_run(TPU, TPU_NAME="p", ZONE="z", ACCELERATOR_TYPE="v6e-8",
                      RUNTIME_VERSION="custom-1", CODE="clone", REPO_URL="u",
                      WORKDIR="/mnt/nfs/run")
  assert "--version=custom-1" in commands[1]
  assert "--spot" not in commands[1]
  assert not any(w.startswith("--project") for c in commands for w in c)
  assert not any("gcsfuse" in w for c in commands for w in c)  # no GCS_BUCKET, no mount
  for command in commands:
    assert command[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]
    assert "--zone=z" in command


@pytest.mark.parametrize("env,name", [
    ({"ZONE": "z"}, "TPU_NAME"),
    ({"TPU_NAME": "p"}, "ZONE"),
    ({"TPU_NAME": "p", "ZONE": "z", "CODE": "clone"}, "REPO_URL"),
    ({"TPU_NAME": "p", "ZONE": "z", "ACCELERATOR_TYPE": "v9-8"}, "RUNTIME_VERSION"),
    ({"TPU_NAME": "p", "ZONE": "z", "SPOT": "yes"}, "SPOT"),
    ({"TPU_NAME": "p", "ZONE": "z", "GCS_BUCKET": "gs://b"}, "GCS_BUCKET"),
])
def test_tpu_missing_or_bad_settings_exit_2(env, name):
  result = _run(TPU, "--dry-run", **env)
  assert result.returncode == 2
  assert name in result.stderr and "error" in result.stderr
  assert not result.stdout


def test_tpu_without_workdir_or_bucket_exit_2():
  result = _run(TPU, "--dry-run", TPU_NAME="p", ZONE="z")
  assert result.returncode == 2 and not result.stdout
  assert "WORKDIR is not set" in result.stderr
  assert "shared by all workers" in result.stderr and "GCS_BUCKET" in result.stderr


def test_tpu_rejects_gs_workdir():
  for env in ({}, {"GCS_BUCKET": "bkt"}):
    result = _run(TPU, "--dry-run", TPU_NAME="p", ZONE="z", WORKDIR="gs://b/run", **env)
    assert result.returncode == 2 and not result.stdout
    assert "WORKDIR=gs://b/run" in result.stderr and "GCS_BUCKET" in result.stderr
