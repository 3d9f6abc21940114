"""Multi-controller runs: one Python process per host (or per GPU), all running the same program.

JAX's own runtime (`jax.distributed`) connects the processes; after `initialize`, `jax.devices()`
lists every device of the run and a mesh spans all of them. Host work stays per process: each
process loads, samples, parses and judges only its own rows (`process_rows`), hands them to the
jitted step as its part of a global array (`global_batch`), and per-row results are gathered back
(`gather_rows`) so that every process computes the same metrics.

How the processes find each other (`cluster_from_env`), first match wins:
  flags: `--coordinator=HOST:PORT --num_processes=N --process_id=I`, anywhere.
  slurm: inside an `srun` step with more than one task, from SLURM_* variables; the coordinator is
         the step's first node, on port $GTALIGN_COORDINATOR_PORT or one derived from the job id.
  tpu:   on a Cloud TPU VM (a Google TPU on the PCI bus), `jax.distributed.initialize()` with no
         arguments: JAX reads the slice's workers from the TPU metadata.
  single: otherwise, or with GTALIGN_DISTRIBUTED=0; nothing to initialise.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding

from gtalign.utils.errors import InvalidInput

_GOOGLE_PCI_VENDOR = "0x1ae0"
# TPU chips' PCI device ids (v2/v3, v4, v5p, v5e, v6e, 7x); Google's vendor id alone also
# matches a GCE VM's virtual NIC.
_TPU_PCI_DEVICES = frozenset({"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f",
                              "0x0076"})


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
  """How this process joins the run; `source` says which rule decided it."""

  source: str  # "flags" | "slurm" | "tpu" | "single"
  coordinator: str | None = None  # HOST:PORT of process 0 (None: JAX detects it, or single)
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None  # GPUs this process drives (None: all)

  def describe(self) -> str:
    if self.source == "single":
      return "single process"
    if self.coordinator is None:
      return f"{self.source}: jax.distributed auto-detection"
    return (f"{self.source}: process {self.process_id} of {self.num_processes}, coordinator "
            f"{self.coordinator}")


def first_slurm_host(nodelist: str) -> str:
  """The first host of a SLURM node list: "gpu[003-005,9],cpu1" -> "gpu003"."""
  match = re.match(r"\s*([^,\[\s]+)(?:\[([^\]]+)\])?", nodelist)
  if not match or not match.group(1):
    raise ValueError(f"cannot read a host from SLURM node list {nodelist!r}")
  prefix, ranges = match.groups()
  if ranges is None:
    return prefix
  return prefix + ranges.split(",")[0].split("-")[0]


def tpu_chips_on_pci(sysfs: str = "/sys/bus/pci/devices") -> int:
  """Number of TPU chips attached to this machine, read from the PCI bus."""
  chips = 0
  for vendor in glob.glob(os.path.join(sysfs, "*", "vendor")):
    device = os.path.join(os.path.dirname(vendor), "device")
    try:
      with open(vendor, encoding="ascii") as v, open(device, encoding="ascii") as d:
        chips += v.read().strip() == _GOOGLE_PCI_VENDOR and d.read().strip() in _TPU_PCI_DEVICES
    except OSError:
      continue
  return chips


def cluster_from_env(env: Mapping[str, str], coordinator: str = "",
                     num_processes: int | None = None, process_id: int | None = None,
                     tpu_chips: int | None = None) -> ClusterSpec:
  """Decides how to join the run (see the module docstring); a pure function of its inputs.

  `tpu_chips` defaults to reading the PCI bus; tests pass it.
  """
  given = {"--coordinator": coordinator or None, "--num_processes": num_processes,
           "--process_id": process_id}
  if any(v is not None for v in given.values()):
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise ValueError(f"multi-process flags need all of --coordinator, --num_processes and "
                       f"--process_id; missing {', '.join(missing)}")
    if not re.fullmatch(r"[^:\s]+:\d+", coordinator):
      raise ValueError(f"--coordinator={coordinator!r}; expected HOST:PORT, e.g. 10.0.0.2:12355")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"--num_processes={num_processes} --process_id={process_id}; expected "
                       "num_processes >= 1 and 0 <= process_id < num_processes")
    return ClusterSpec("flags", coordinator, num_processes, process_id)
  if env.get("GTALIGN_DISTRIBUTED", "1") == "0":
    return ClusterSpec("single")
  tasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
  if "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and tasks > 1:
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not nodelist:
      raise ValueError("SLURM run with several tasks but neither SLURM_STEP_NODELIST nor "
                       "SLURM_JOB_NODELIST is set; pass --coordinator/--num_processes/"
                       "--process_id instead")
    port = int(env.get("GTALIGN_COORDINATOR_PORT") or 20000 + int(env["SLURM_JOB_ID"]) % 20000)
    return ClusterSpec("slurm", f"{first_slurm_host(nodelist)}:{port}", tasks,
                       int(env["SLURM_PROCID"]), _slurm_local_devices(env))
  chips = tpu_chips_on_pci() if tpu_chips is None else tpu_chips
  if chips:
    return ClusterSpec("tpu")
  return ClusterSpec("single")


def _slurm_local_devices(env: Mapping[str, str]) -> tuple[int, ...]:
  """The GPU indices a SLURM task drives, as this process sees them.

  JAX on its own would pick only GPU number SLURM_LOCALID, which is wrong when SLURM binds GPUs
  to tasks (`--gpus-per-task`: each task sees its own GPUs from index 0) and when one process
  drives a whole node. Order: $GTALIGN_LOCAL_DEVICE_IDS ("0,1,..."), else every GPU in
  CUDA_VISIBLE_DEVICES, else all SLURM_GPUS_ON_NODE GPUs for one task per node, else
  SLURM_LOCALID (one task per GPU, every GPU visible).
  """
  if env.get("GTALIGN_LOCAL_DEVICE_IDS"):
    return tuple(int(x) for x in env["GTALIGN_LOCAL_DEVICE_IDS"].split(","))
  if env.get("CUDA_VISIBLE_DEVICES"):
    return tuple(range(len(env["CUDA_VISIBLE_DEVICES"].split(","))))
  per_node = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_STEP_TASKS_PER_NODE", "")
  if per_node.split("(")[0] == "1" and env.get("SLURM_GPUS_ON_NODE"):
    return tuple(range(int(env["SLURM_GPUS_ON_NODE"])))
  return (int(env.get("SLURM_LOCALID", "0")),)


def initialize(coordinator: str = "", num_processes: int | None = None,
               process_id: int | None = None) -> ClusterSpec:
  """Joins the run described by flags and environment; call before any other JAX use."""
  spec = cluster_from_env(os.environ, coordinator, num_processes, process_id)
  if spec.source == "tpu":
    jax.distributed.initialize()
  elif spec.source != "single" and spec.num_processes > 1:
    jax.distributed.initialize(coordinator_address=spec.coordinator,
                               num_processes=spec.num_processes, process_id=spec.process_id,
                               local_device_ids=spec.local_device_ids)
  return spec


def is_main() -> bool:
  """Process 0 writes files and prints the run's log lines."""
  return jax.process_index() == 0


def log(message: str) -> None:
  """A progress line, printed once per run (by process 0)."""
  if is_main():
    print(message, flush=True)


def process_rows(num_rows: int, process: int | None = None,
                 count: int | None = None) -> slice:
  """The contiguous block of rows `[0, num_rows)` that this process works on.

  Blocks differ in size by at most one row and are empty only when num_rows < count.
  """
  process = jax.process_index() if process is None else process
  count = jax.process_count() if count is None else count
  return slice(process * num_rows // count, (process + 1) * num_rows // count)


def check_divisible(name: str, rows: int, shards: int | None = None) -> None:
  """Batches split evenly over processes and over the batch shards of the mesh."""
  shards = jax.process_count() if shards is None else shards
  if rows % shards:
    raise InvalidInput(f"{name}={rows} must be divisible by {shards} (the number of processes "
                     "or batch shards); change it or the mesh")


def agree_max(values: Sequence[float]) -> list:
  """Elementwise maximum over processes, e.g. the padded widths every process must use."""
  values = np.asarray(values)
  if jax.process_count() == 1:
    return values.tolist()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(values)).max(axis=0).tolist()


def gather_rows(arrays: Mapping[str, np.ndarray], num_rows: int) -> dict[str, np.ndarray]:
  """Per-row arrays of every process, concatenated in process order (blocks of `process_rows`).

  Each process passes its own rows; short blocks are padded for the exchange and the padding is
  dropped again, so the result has `num_rows` rows and is the same in every process.
  """
  if jax.process_count() == 1:
    return {k: np.asarray(v) for k, v in arrays.items()}
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  per = -(-num_rows // jax.process_count())
  out = {}
  for name, value in arrays.items():
    value = np.asarray(value)
    padded = np.zeros((per, *value.shape[1:]), value.dtype)
    padded[:len(value)] = value
    gathered = np.asarray(multihost_utils.process_allgather(padded))  # [processes, per, ...]
    sizes = [len(range(num_rows)[process_rows(num_rows, p)]) for p in range(len(gathered))]
    blocks = [block[:size] for block, size in zip(gathered, sizes)]
    out[name] = np.concatenate(blocks)
  return out


def host_params(tree: Any) -> Any:
  """Whole numpy copies of (possibly sharded, multi-host) arrays, in every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def gather_objects(obj: Any) -> list[Any]:
  """Every process's JSON-able `obj`, in process order (e.g. rollout records for the log)."""
  if jax.process_count() == 1:
    return [obj]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data = np.frombuffer(json.dumps(obj, default=_plain).encode("utf-8"), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.asarray([len(data)]))).reshape(-1)
  padded = np.zeros((lengths.max(),), np.uint8)
  padded[:len(data)] = data
  gathered = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(row[:n].tobytes().decode("utf-8")) for row, n in zip(gathered, lengths)]


def global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """This process's rows -> global arrays over the mesh; rows of all processes stack in order.

  Every process must pass the same number of rows and the same trailing shapes (see
  `agree_max`); each one feeds only the devices it owns.
  """
  rows = {np.shape(v)[0] for v in local.values()}
  if len(rows) != 1:
    raise ValueError(f"batch leaves disagree on the number of rows: {sorted(rows)}")
  (n,) = rows
  total = n * jax.process_count()
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v),
                                                    (total, *np.shape(v)[1:]))
          for k, v in local.items()}


def bytes_per_device(tree: Any) -> dict[int, int]:
  """Bytes of `tree`'s global arrays held by each of this process's devices."""
  out: dict[int, int] = {d.id: 0 for d in jax.local_devices()}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
  return out


def total_bytes(tree: Any) -> int:
  """Bytes of `tree` if stored once, unsharded."""
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def format_bytes(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if n < 1024 or unit == "GiB":
      return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  raise AssertionError("unreachable")


def _plain(x: Any) -> Any:
  if isinstance(x, (np.generic, np.ndarray)):
    return x.tolist()
  raise TypeError(f"{type(x).__name__} is not JSON-serialisable")
