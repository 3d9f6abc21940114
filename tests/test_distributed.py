"""How processes join a run, which rows each one owns, and hybrid (ICI x DCN) mesh sizing."""

import pytest

from gtalign.parallel import distributed
from gtalign.parallel.mesh import MeshConfig

SLURM = {"SLURM_JOB_ID": "81234", "SLURM_PROCID": "5", "SLURM_NTASKS": "16",
         "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "gpu[007-008]",
         "SLURM_JOB_NODELIST": "gpu[007-009]"}


def test_explicit_flags_win_over_the_environment():
  spec = distributed.cluster_from_env(SLURM, "10.0.0.2:12355", 4, 3, tpu_chips=4)
  assert spec == distributed.ClusterSpec("flags", "10.0.0.2:12355", 4, 3)
  assert "process 3 of 4" in spec.describe()


@pytest.mark.parametrize("args, message", [
    (("10.0.0.2:1", 2, None), "missing --process_id"),
    (("", 2, 0), "missing --coordinator"),
    (("10.0.0.2", 2, 0), "expected HOST:PORT"),
    (("h:1", 2, 2), "0 <= process_id < num_processes"),
])
def test_incomplete_or_bad_flags_name_the_problem(args, message):
  with pytest.raises(ValueError, match=message):
    distributed.cluster_from_env({}, *args, tpu_chips=0)


def test_slurm_step_gives_coordinator_rank_and_size():
  spec = distributed.cluster_from_env(SLURM, tpu_chips=0)
  assert spec.source == "slurm"
  assert spec.coordinator == f"gpu007:{20000 + 81234 % 20000}"
  assert (spec.num_processes, spec.process_id) == (16, 5)
  assert spec.local_device_ids == (1,)  # one task per GPU, all GPUs visible: SLURM_LOCALID
  port = distributed.cluster_from_env(dict(SLURM, GTALIGN_COORDINATOR_PORT="4000"), tpu_chips=0)
  assert port.coordinator == "gpu007:4000"
  # the step's own task count wins over the job's
  step = distributed.cluster_from_env(dict(SLURM, SLURM_STEP_NUM_TASKS="2"), tpu_chips=0)
  assert step.num_processes == 2


@pytest.mark.parametrize("extra, expected", [
    ({"CUDA_VISIBLE_DEVICES": "3"}, (0,)),  # --gpus-per-task=1: the task's GPU is its index 0
    ({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, (0, 1, 2, 3)),  # one task per node, bound GPUs
    ({"SLURM_NTASKS_PER_NODE": "1", "SLURM_GPUS_ON_NODE": "8"}, tuple(range(8))),
    ({"GTALIGN_LOCAL_DEVICE_IDS": "2,3", "CUDA_VISIBLE_DEVICES": "0"}, (2, 3)),
])
def test_slurm_local_devices(extra, expected):
  assert distributed.cluster_from_env(dict(SLURM, **extra), tpu_chips=0).local_device_ids == \
      expected


def test_single_task_slurm_tpu_and_opt_out():
  assert distributed.cluster_from_env(dict(SLURM, SLURM_NTASKS="1"), tpu_chips=0).source == \
      "single"
  assert distributed.cluster_from_env({}, tpu_chips=0) == distributed.ClusterSpec("single")
  tpu = distributed.cluster_from_env({}, tpu_chips=4)
  assert tpu.source == "tpu" and tpu.coordinator is None
  assert distributed.cluster_from_env({"GTALIGN_DISTRIBUTED": "0"}, tpu_chips=4).source == \
      "single"


@pytest.mark.parametrize("nodelist, host", [
    ("node1", "node1"), ("gpu[003-005,9]", "gpu003"), ("gpu[12,3-4],cpu1", "gpu12"),
    ("a-b-c01,a-b-c02", "a-b-c01"), ("tpu[0001-0004]", "tpu0001"),
])
def test_first_slurm_host(nodelist, host):
  assert distributed.first_slurm_host(nodelist) == host


def test_tpu_chips_are_read_from_the_pci_bus(tmp_path):
  def device(name, vendor, device_id):
    (tmp_path / name).mkdir()
    (tmp_path / name / "vendor").write_text(vendor + "\n")
    (tmp_path / name / "device").write_text(device_id + "\n")
  device("0000:00:04.0", "0x1ae0", "0x0063")  # v5e chip
  device("0000:00:05.0", "0x1ae0", "0x0063")
  device("0000:00:06.0", "0x1ae0", "0x0042")  # Google's virtual NIC: not a TPU
  device("0000:00:07.0", "0x10de", "0x2330")  # an NVIDIA GPU
  assert distributed.tpu_chips_on_pci(str(tmp_path)) == 2
  assert distributed.tpu_chips_on_pci(str(tmp_path / "missing")) == 0


@pytest.mark.parametrize("rows, count, sizes", [
    (8, 2, [4, 4]), (5, 2, [2, 3]), (7, 3, [2, 2, 3]), (2, 4, [0, 1, 0, 1]),
])
def test_process_rows_are_contiguous_balanced_blocks(rows, count, sizes):
  blocks = [distributed.process_rows(rows, p, count) for p in range(count)]
  assert [b.stop - b.start for b in blocks] == sizes
  assert [i for b in blocks for i in range(rows)[b]] == list(range(rows))


def test_single_process_helpers_pass_through():
  assert distributed.agree_max([3, 7]) == [3, 7]
  assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
  distributed.check_divisible("x", 8, 4)
  with pytest.raises(ValueError, match="rl.prompts_per_step=6 must be divisible by 4"):
    distributed.check_divisible("rl.prompts_per_step", 6, 4)


def test_hybrid_mesh_sizes_resolve_per_group():
  cfg = MeshConfig(data=1, fsdp=-1, tensor=2, dcn_data=-1)
  assert cfg.hybrid
  assert cfg.resolve_hybrid(num_devices=32, num_slices=4) == ((1, 4, 2), (4, 1, 1))
  assert MeshConfig(dcn_fsdp=2).resolve_hybrid(16, 2) == ((1, 8, 1), (1, 2, 1))
  assert not MeshConfig().hybrid
  with pytest.raises(ValueError, match="dcn_data=3.*does not divide the 2 devices"):
    MeshConfig(dcn_data=3, dcn_fsdp=-1).resolve_hybrid(8, 2)
  with pytest.raises(ValueError, match="do not split into 3 equal slices"):
    MeshConfig(dcn_data=3).resolve_hybrid(8, 3)


def test_byte_formatting():
  assert distributed.format_bytes(512) == "512 B"
  assert distributed.format_bytes(3 * 2**20) == "3.0 MiB"
  assert distributed.format_bytes(5 * 2**40) == "5120.0 GiB"
