"""Weight hand-off from the trainer's shardings to the sampler's.

The trainer holds float32 (or bf16) weights sharded over the global mesh; the sampler wants them
in the compute dtype, laid out over the sampler mesh of its own process (`mesh.sampler_mesh`).
One hand-off casts under jit on the trainer mesh, reshards onto the hand-off mesh (all processes'
sampler meshes side by side, weights replicated across them), and re-wraps each process's shards
as arrays of its local sampler mesh. In a single-process run whose sampler mesh equals the
trainer mesh, the reshard is a no-op and only the cast remains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from gtalign.parallel import mesh as mesh_lib


class WeightHandoff:
  """`handoff(params) -> sampler params`; compiled once, reused every rollout."""

  def __init__(self, logical_specs: Any, shapes: Any, trainer_shardings: Any, local_mesh: Mesh,
               dtype: jnp.dtype, rules: mesh_lib.ShardingRules = mesh_lib.ShardingRules(),
               transform: Callable[[Any], Any] | None = None):
    """`transform(params)` (jitted with the cast) maps the trainer's tree to the sampler's, such
    as merging adapters; the specs, shapes and shardings given are then those of its output."""
    self.local_mesh = local_mesh
    self.local_shardings = mesh_lib.param_shardings(local_mesh, logical_specs, rules, shapes)
    self._multi = jax.process_count() > 1
    self.global_shardings = (
        mesh_lib.param_shardings(mesh_lib.handoff_mesh(local_mesh), logical_specs, rules, shapes)
        if self._multi else self.local_shardings)
    transform = transform or (lambda p: p)
    self._cast = jax.jit(lambda p: jax.tree.map(lambda a: a.astype(dtype), transform(p)),
                         out_shardings=trainer_shardings)

  def __call__(self, params: Any) -> Any:
    moved = jax.device_put(self._cast(params), self.global_shardings)
    if not self._multi:
      return moved
    return jax.tree.map(
        lambda x, s: jax.make_array_from_single_device_arrays(
            x.shape, s, [shard.data for shard in x.addressable_shards]),
        moved, self.local_shardings)
