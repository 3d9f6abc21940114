"""One process of a multi-process run on CPU: `python multiprocess_worker.py PORT NUM_PROCESSES ID`.

Set XLA_FLAGS (devices per process) and JAX_PLATFORMS=cpu before starting; prints one JSON line
with what this process observed, for `test_multiprocess.py` to compare across processes.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gtalign.parallel import distributed  # noqa: E402
from gtalign.parallel import mesh as mesh_lib  # noqa: E402


def check_hybrid_mesh():
  """dcn_data=2: the data axis steps between processes, fsdp stays inside one."""
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1, fsdp=-1, tensor=1, dcn_data=2))
  procs = np.vectorize(lambda d: d.process_index)(mesh.devices)
  return {"shape": list(mesh.devices.shape),
          "process_of_data_row": [sorted(set(procs[i].ravel().tolist()))
                                  for i in range(procs.shape[0])]}


def check_handoff():
  """Trainer weights (fsdp over all 8 devices) -> this process's sampler mesh, cast to bf16."""
  from gtalign.models.config import get_preset
  from gtalign.models.transformer import init_params, logical_axes
  from gtalign.parallel.handoff import WeightHandoff
  config = get_preset("tiny-llama")
  host = jax.tree.map(np.asarray, jax.jit(init_params, static_argnums=0)(
      config, jax.random.PRNGKey(0)))
  trainer_mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig())
  shardings = mesh_lib.param_shardings(trainer_mesh, logical_axes(config), shapes=host)
  params = jax.device_put(host, shardings)
  local_mesh = mesh_lib.sampler_mesh((1, -1, 1))
  handoff = WeightHandoff(logical_axes(config), host, shardings, local_mesh, jnp.bfloat16)
  out = handoff(params)
  leaves = jax.tree.leaves(out)
  exact = all(np.array_equal(np.asarray(o), h.astype(jnp.bfloat16))
              for o, h in zip(leaves, jax.tree.leaves(host)))
  q = out["layers_0"]["self_attn"]["q_proj"]["kernel"]
  return {"exact": bool(exact),
          "fully_addressable": all(x.is_fully_addressable for x in leaves),
          "dtypes": sorted({str(x.dtype) for x in leaves}),
          "local_devices": sorted({d.id for x in leaves for d in x.sharding.device_set}),
          "q_spec": str(tuple(q.sharding.spec)),
          "q_shard_shape": list(q.addressable_shards[0].data.shape),
          # the sampler's jitted forward runs on it, with host (numpy) inputs
          "row_sum": float(jax.jit(lambda p, x: (x @ p["lm_head"]["kernel"].astype(jnp.float32))
                                   .sum())(out, np.ones((2, config.embed_dim), np.float32)))}


def check_rows_and_batches():
  p = jax.process_index()
  block = distributed.process_rows(5)
  rows = {"ids": np.arange(5)[block] * 10, "pairs": np.stack([np.arange(5)[block]] * 2, 1)}
  gathered = distributed.gather_rows(rows, 5)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig())
  local = {"x": np.arange(4, dtype=np.float32) + 4 * p}
  batch = distributed.global_batch(local, mesh_lib.batch_sharding(mesh))
  total = jax.jit(lambda b: b["x"].sum(), out_shardings=mesh_lib.replicated(mesh))(batch)
  return {"block": [block.start, block.stop],
          "gathered_ids": gathered["ids"].tolist(), "gathered_pairs": gathered["pairs"].tolist(),
          "agree_max": distributed.agree_max([p, 10 - p]),
          "objects": distributed.gather_objects({"process": p, "x": np.float32(0.5)}),
          "batch_shape": list(batch["x"].shape),
          "batch_sum": float(total.addressable_shards[0].data)}


def main():
  port, count, index = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
  spec = distributed.initialize(f"127.0.0.1:{port}", count, index)
  out = {"spec": spec.source, "process": jax.process_index(), "processes": jax.process_count(),
         "devices": jax.device_count(), "local_devices": jax.local_device_count(),
         "hybrid": check_hybrid_mesh(), "handoff": check_handoff(),
         "rows": check_rows_and_batches()}
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
