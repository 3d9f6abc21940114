"""Training state, optimizer and partial fine-tuning masks, placed on a device mesh.

The optax transform is not part of `TrainState`: it is static (a pair of functions), so keeping it
outside leaves the state a pure array pytree that jit can donate and orbax can save as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# A params-shaped bool pytree, or a predicate on a param path such as "layers_3/mlp/up_proj/kernel".
Trainable = Any | Callable[[str], bool]

SCHEDULES = ("constant", "cosine")


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes from step to step; all leaves are global jax arrays."""

  step: jax.Array  # int32 scalar
  params: Any
  opt_state: optax.OptState


def path_str(path) -> str:
  """"layers_0/mlp/up_proj/kernel" for a jax key path."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def resolve_trainable(params: Any, trainable: Trainable | None) -> Any:
  """A params-shaped tree of Python bools from any accepted form of `trainable`."""
  if trainable is None:
    return jax.tree.map(lambda _: True, params)
  if callable(trainable):
    return jax.tree_util.tree_map_with_path(lambda p, _: bool(trainable(path_str(p))), params)
  try:
    return jax.tree.map(lambda _, t: bool(t), params, trainable)
  except ValueError as e:
    raise ValueError(f"`trainable` must have the params' tree structure: {e}") from None


def trainable_mask(params: Any, mode: str) -> Any:
  """Which params train, as a params-shaped bool tree.

  Modes:
    "all": every parameter.
    "top_k_blocks:N": the last N `layers_i` blocks, the final `norm` and, when the model has an
      untied `lm_head`, the head. With tied embeddings the shared `embed_tokens` table stays
      frozen: training it as the head would also move the input embeddings of every block.
  """
  if mode == "all":
    return jax.tree.map(lambda _: True, params)
  match = re.fullmatch(r"top_k_blocks:(\d+)", mode)
  if not match:
    raise ValueError(f"unknown trainable mode {mode!r}; expected 'all' or 'top_k_blocks:N'")
  blocks = sorted(int(m.group(1)) for k in params if (m := re.fullmatch(r"layers_(\d+)", k)))
  k = int(match.group(1))
  if not 1 <= k <= len(blocks):
    raise ValueError(f"{mode!r}: N must be in [1, {len(blocks)}] for a {len(blocks)}-block model")
  top = {f"layers_{i}" for i in blocks[-k:]} | {"norm", "lm_head"}
  return {name: jax.tree.map(lambda _: name in top, sub) for name, sub in params.items()}


def make_schedule(lr: float, schedule: str = "constant", warmup_steps: int = 0,
                  total_steps: int | None = None) -> optax.Schedule:
  """Linear warmup then constant or cosine-to-zero.

  Warmup gives step s the rate lr * (s + 1) / warmup_steps, so the first update is not wasted at
  rate zero and the full rate is reached on step warmup_steps - 1.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
  if warmup_steps < 0:
    raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
  if schedule == "cosine":
    if total_steps is None or total_steps <= warmup_steps:
      raise ValueError(f"cosine schedule needs total_steps > warmup_steps={warmup_steps}, "
                       f"got total_steps={total_steps}")
    main = optax.cosine_decay_schedule(lr, total_steps - warmup_steps)
  else:
    main = optax.constant_schedule(lr)
  if not warmup_steps:
    return main
  warmup = lambda step: lr * (step + 1) / warmup_steps
  return optax.join_schedules([warmup, main], [warmup_steps])


def make_optimizer(lr: float | optax.Schedule, weight_decay: float = 0.01, b1: float = 0.9, b2: float = 0.999,
                   grad_clip: float | None = 1.0, warmup_steps: int = 0,
                   total_steps: int | None = None, schedule: str = "constant",
                   trainable: Trainable | None = None) -> optax.GradientTransformation:
  """AdamW after global-norm clipping, with frozen params excluded.

  The learning rate is injected as a hyperparameter so the update step can report the rate it
  used. Frozen params (see `trainable_mask`) go to `set_to_zero`, which keeps no state: no Adam
  moments are allocated for them, and they do not count towards the clipping norm.
  """
  rate = lr if callable(lr) else make_schedule(lr, schedule, warmup_steps, total_steps)
  adamw = optax.inject_hyperparams(optax.adamw, static_args=("b1", "b2", "weight_decay"))(
      learning_rate=rate,
      b1=b1, b2=b2, weight_decay=weight_decay)
  tx = optax.chain(optax.clip_by_global_norm(grad_clip), adamw) if grad_clip else adamw
  if trainable is None:
    return tx

  def labels(params):
    return jax.tree.map(lambda t: "train" if t else "frozen", resolve_trainable(params, trainable))

  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def train_state_shardings(params: Any, tx: optax.GradientTransformation, mesh: Mesh,
                          shardings: Any) -> TrainState:
  """A TrainState of NamedShardings; also the target for restoring a checkpoint.

  Each optimizer-state leaf whose tree path ends with a param's path (and has its shape), such
  as Adam's `mu[...]["kernel"]`, takes that param's sharding; everything else (`count`, injected
  hyperparameters) is replicated.
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_shardings = jax.tree.leaves(shardings)
  if len(flat_params) != len(flat_shardings):
    raise ValueError(f"{len(flat_shardings)} shardings for {len(flat_params)} params")
  by_path = {tuple(path): (np.shape(x), s) for (path, x), s in zip(flat_params, flat_shardings)}
  depths = sorted({len(p) for p in by_path}, reverse=True)

  def pick(path, leaf):
    for depth in depths:
      hit = by_path.get(tuple(path[-depth:])) if len(path) >= depth else None
      if hit is not None and hit[0] == leaf.shape:
        return hit[1]
    return replicated

  abstract_opt = jax.eval_shape(tx.init, params)
  opt_shardings = jax.tree_util.tree_map_with_path(pick, abstract_opt)
  return TrainState(step=replicated, params=shardings, opt_state=opt_shardings)


def create_train_state(params: Any, tx: optax.GradientTransformation, mesh: Mesh,
                       shardings: Any) -> TrainState:
  """Params placed with `shardings`, optimizer state initialised directly in its shardings.

  `tx.init` runs under jit with `out_shardings`, so even scalar leaves such as Adam's `count` are
  replicated global arrays on the mesh rather than single-device arrays, which orbax cannot save
  across hosts. The state may share buffers with `params`, and the update step donates the state:
  do not read `params` after the first step.
  """
  target = train_state_shardings(params, tx, mesh, shardings)
  params = jax.device_put(params, shardings)
  opt_state = jax.jit(tx.init, out_shardings=target.opt_state)(params)
  step = jax.jit(lambda: jnp.zeros((), jnp.int32), out_shardings=target.step)()
  return TrainState(step=step, params=params, opt_state=opt_state)
