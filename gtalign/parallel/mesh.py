"""A ("data", "fsdp", "tensor") device mesh and the rules that map logical axes onto it.

Parameters carry logical axis names (`vocab`, `embed`, `heads`, `kv_heads`, `head_dim`, `mlp`; see
`gtalign.models.transformer.logical_axes`) and batches the logical axis `batch`. `ShardingRules`
maps each name to mesh axes, so a parallelism layout is a config change, not a model change.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Sizes of the mesh axes; one of them may be -1, meaning "all remaining devices"."""

  data: int = 1
  fsdp: int = -1
  tensor: int = 1

  def resolve(self, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes whose product is exactly `num_devices`."""
    sizes = (self.data, self.fsdp, self.tensor)
    named = ", ".join(f"{n}={s}" for n, s in zip(MESH_AXES, sizes))
    if any(s == 0 or s < -1 for s in sizes):
      raise ValueError(f"mesh axis sizes must be positive or -1, got {named}")
    fill = [i for i, s in enumerate(sizes) if s == -1]
    if len(fill) > 1:
      raise ValueError(f"at most one mesh axis may be -1, got {named}")
    fixed = math.prod(s for s in sizes if s != -1)
    if fill:
      if num_devices % fixed:
        raise ValueError(f"mesh {named}: the fixed axes' product {fixed} does not divide the "
                         f"{num_devices} devices")
      resolved = list(sizes)
      resolved[fill[0]] = num_devices // fixed
      return tuple(resolved)
    if fixed != num_devices:
      raise ValueError(f"mesh {named} has {fixed} devices but {num_devices} are available; "
                       "set one axis to -1 or pass `devices` explicitly")
    return sizes


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all) with Auto axis types.

  `jax.make_mesh` defaults to Explicit axes in jax 0.10, where `with_sharding_constraint`
  raises; every axis here is Auto so GSPMD propagates shardings as in MaxText.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = cfg.resolve(len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


@dataclasses.dataclass(frozen=True)
class ShardingRules:
  """Logical axis name -> mesh axis (a name, a tuple of names, or None for replicated).

  The defaults are FSDP over `embed` plus Megatron-style tensor parallelism over heads, MLP
  and vocab; batches split over both the data and fsdp axes.
  """

  vocab: MeshAxes = "tensor"
  embed: MeshAxes = "fsdp"
  heads: MeshAxes = "tensor"
  kv_heads: MeshAxes = "tensor"
  head_dim: MeshAxes = None
  mlp: MeshAxes = "tensor"
  batch: MeshAxes = ("data", "fsdp")

  def mesh_axes(self, logical: str | None) -> tuple[str, ...]:
    """The mesh axes of one logical name, as a tuple (empty = replicated)."""
    if logical is None:
      return ()
    names = {f.name for f in dataclasses.fields(self)}
    if logical not in names:
      raise KeyError(f"no sharding rule for logical axis {logical!r}; known: {sorted(names)}")
    axes = getattr(self, logical)
    if axes is None:
      return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_mesh_spec(logical_spec: PartitionSpec | Sequence[str | None], rules: ShardingRules,
                         mesh: Mesh, shape: Sequence[int] | None = None) -> PartitionSpec:
  """Translate logical names to mesh axes for one array.

  A mesh axis is dropped where it does not divide the dimension (given `shape`), so tiny
  test models still shard, and where an earlier dimension already uses it: a PartitionSpec
  may name each mesh axis at most once.
  """
  logical = tuple(logical_spec)
  if shape is not None and len(logical) > len(shape):
    raise ValueError(f"logical spec {logical} has more entries than shape {tuple(shape)}")
  used: set[str] = set()
  out = []
  for dim, name in enumerate(logical):
    kept: list[str] = []
    for axis in rules.mesh_axes(name):
      if axis not in mesh.shape:
        raise ValueError(f"rule for {name!r} names mesh axis {axis!r}; mesh has "
                         f"{tuple(mesh.shape)}")
      if axis in used:
        continue
      size = math.prod(mesh.shape[a] for a in kept) * mesh.shape[axis]
      if shape is not None and shape[dim] % size:
        continue
      kept.append(axis)
      used.add(axis)
    out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  while out and out[-1] is None:
    out.pop()
  return PartitionSpec(*out)


def param_shardings(mesh: Mesh, logical_specs: Any, rules: ShardingRules = ShardingRules(),
                    shapes: Any = None) -> Any:
  """A pytree of NamedShardings from a pytree of logical PartitionSpecs.

  `shapes` (the params, or `jax.eval_shape` of their init, in the same tree structure) enables
  dropping mesh axes that do not divide a dimension; without it every rule applies as is.
  """
  is_spec = lambda x: isinstance(x, PartitionSpec)
  if shapes is None:
    return jax.tree.map(lambda spec: NamedSharding(mesh, logical_to_mesh_spec(spec, rules, mesh)),
                        logical_specs, is_leaf=is_spec)
  return jax.tree.map(
      lambda spec, x: NamedSharding(mesh, logical_to_mesh_spec(spec, rules, mesh, x.shape)),
      logical_specs, shapes, is_leaf=is_spec)


def batch_sharding(mesh: Mesh, rules: ShardingRules = ShardingRules()) -> NamedSharding:
  """Leading (batch) dimension split over the batch rule's axes, the rest replicated."""
  axes = rules.mesh_axes("batch")
  return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def replicated(mesh: Mesh) -> NamedSharding:
  """Full copy on every device: scalars, metrics, RNG keys."""
  return NamedSharding(mesh, PartitionSpec())
