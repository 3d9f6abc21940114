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
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from gtalign.utils.errors import InvalidInput

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None


def _resolve_sizes(sizes: tuple[int, ...], names: Sequence[str],
                   num_devices: int) -> tuple[int, ...]:
  """Axis sizes with the (at most one) -1 filled so that their product is `num_devices`."""
  named = ", ".join(f"{n}={s}" for n, s in zip(names, sizes))
  if any(s == 0 or s < -1 for s in sizes):
    raise InvalidInput(f"mesh axis sizes must be positive or -1, got {named}")
  fill = [i for i, s in enumerate(sizes) if s == -1]
  if len(fill) > 1:
    raise InvalidInput(f"at most one mesh axis may be -1, got {named}")
  fixed = math.prod(s for s in sizes if s != -1)
  if fill:
    if num_devices % fixed:
      raise InvalidInput(f"mesh {named}: the fixed axes' product {fixed} does not divide the "
                       f"{num_devices} devices")
    resolved = list(sizes)
    resolved[fill[0]] = num_devices // fixed
    return tuple(resolved)
  if fixed != num_devices:
    raise InvalidInput(f"mesh {named} has {fixed} devices but {num_devices} are available; "
                     "set one axis to -1 or pass `devices` explicitly")
  return tuple(sizes)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Sizes of the mesh axes; in each group one may be -1, meaning "all remaining devices".

  `data`, `fsdp` and `tensor` are the axes within a slice (ICI: the fast chip-to-chip links);
  `dcn_*` repeat each axis across slices (DCN: the data-centre network between TPU slices, or
  between hosts when there are no slices). An axis of the mesh has size ICI factor x DCN
  factor. With every `dcn_*` = 1 the mesh spans all devices as one group.
  """

  data: int = 1
  fsdp: int = -1
  tensor: int = 1
  dcn_data: int = 1
  dcn_fsdp: int = 1
  dcn_tensor: int = 1

  @property
  def hybrid(self) -> bool:
    return (self.dcn_data, self.dcn_fsdp, self.dcn_tensor) != (1, 1, 1)

  def resolve_hybrid(self, num_devices: int, num_slices: int
                     ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(ICI sizes per slice, DCN sizes across slices) for `num_slices` equal slices."""
    if num_devices % num_slices:
      raise ValueError(f"{num_devices} devices do not split into {num_slices} equal slices")
    dcn = _resolve_sizes((self.dcn_data, self.dcn_fsdp, self.dcn_tensor),
                         [f"dcn_{n}" for n in MESH_AXES], num_slices)
    ici = _resolve_sizes((self.data, self.fsdp, self.tensor), MESH_AXES,
                         num_devices // num_slices)
    return ici, dcn

  def resolve(self, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes whose product is exactly `num_devices` (no DCN factors)."""
    sizes = (self.data, self.fsdp, self.tensor)
    return _resolve_sizes(sizes, MESH_AXES, num_devices)


def _grouped(devices: Sequence[jax.Device], by_slice: bool) -> list[list[jax.Device]]:
  """Devices grouped by TPU slice (`slice_index`) or, on other platforms, by process."""
  groups: dict[int, list[jax.Device]] = {}
  for d in devices:
    key = d.slice_index if by_slice and d.platform == "tpu" else d.process_index
    groups.setdefault(key, []).append(d)
  return [sorted(g, key=lambda d: d.id) for _, g in sorted(groups.items())]


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all) with Auto axis types.

  Without DCN factors, `jax.make_mesh` lays the axes out over the physical topology. With them,
  each mesh axis is DCN factor x ICI factor: the slow part of the axis steps between slices
  (TPU slices; hosts on other platforms), the fast part within a slice, so only
  axes given a DCN factor send traffic over the network.
  `jax.make_mesh` defaults to Explicit axes in jax 0.10, where `with_sharding_constraint`
  raises; every axis here is Auto so GSPMD propagates shardings as in MaxText.
  """
  devices = list(jax.devices() if devices is None else devices)
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if not cfg.hybrid:
    return jax.make_mesh(cfg.resolve(len(devices)), MESH_AXES, axis_types=axis_types,
                         devices=devices)
  groups = _grouped(devices, by_slice=True)
  if len({len(g) for g in groups}) != 1:
    raise ValueError(f"slices have unequal device counts {[len(g) for g in groups]}")
  ici, dcn = cfg.resolve_hybrid(len(devices), len(groups))
  grid = np.asarray(groups, dtype=object).reshape(*dcn, *ici)  # slice s = DCN index s
  grid = grid.transpose(0, 3, 1, 4, 2, 5).reshape([d * i for d, i in zip(dcn, ici)])
  return Mesh(grid, MESH_AXES, axis_types=axis_types)


def sampler_mesh(sizes: tuple[int, int, int], devices: Sequence[jax.Device] | None = None
                 ) -> Mesh:
  """The sampler's mesh over this process's devices, (data, fsdp, tensor) with one -1 allowed.

  Sampling is host-driven (stop strings, decoded text), so each process samples its own rows on
  its own devices; the weights reach it through `handoff_mesh`.
  """
  devices = sorted(jax.local_devices() if devices is None else devices, key=lambda d: d.id)
  shape = _resolve_sizes(tuple(sizes), [f"sampler {n}" for n in MESH_AXES], len(devices))
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))


def handoff_mesh(local: Mesh) -> Mesh:
  """Every process's sampler mesh stacked along `data`: a global mesh whose per-process blocks
  are the local meshes, so that resharding weights onto it (they never shard over `data`) leaves
  each process holding exactly its sampler's shards."""
  blocks = _grouped(jax.devices(), by_slice=False)
  grid = np.stack([np.asarray(b, dtype=object).reshape(local.devices.shape) for b in blocks])
  grid = grid.reshape(-1, *local.devices.shape[1:])
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


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
