"""A generic sharded, gradient-accumulating update step.

Losses come as per-microbatch (sum, count) and are divided once after accumulation, so any number
of microbatches gives the gradient of the full batch (up to float rounding), whatever the loss
normalisation (token mean, sequence mean) encoded in `count`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from gtalign.rl.train_state import Trainable, TrainState, resolve_trainable

# loss_fn(params, microbatch) -> (loss_sum, count, aux_metrics); aux values are scalars.
LossFn = Callable[[Any, dict[str, jax.Array]], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


def split_microbatches(batch: dict[str, jax.Array], num_microbatches: int):
  """[B, ...] leaves -> [M, B/M, ...]; microbatch i holds rows i, i + M, i + 2M, ...

  Strided rather than contiguous: with the batch split in blocks over devices, every device then
  holds an equal share of every microbatch and no rows move between devices.
  """
  def split(x):
    return x.reshape(x.shape[0] // num_microbatches, num_microbatches,
                     *x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, batch)


def _batch_size(batch, num_microbatches: int) -> int:
  sizes = {x.shape[0] if x.ndim else None for x in jax.tree.leaves(batch)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f"batch leaves need one shared leading batch dimension, got sizes {sizes}")
  (size,) = sizes
  if size % num_microbatches:
    raise ValueError(f"batch size {size} is not divisible by num_microbatches={num_microbatches}")
  return size


def make_update_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                     state_shardings: TrainState, batch_sharding: NamedSharding,
                     num_microbatches: int = 1, trainable: Trainable | None = None,
                     prepare_batch: Callable[[dict], dict] | None = None):
  """A jitted `(state, batch) -> (state, metrics)` that donates `state`.

  Gradients of `loss_sum` and the counts are summed over microbatches (`lax.scan`, float32),
  then the gradient is divided by the total count. Metrics (replicated): `loss` = total sum /
  total count, `count`, `grad_norm` (of the differentiated params, before clipping),
  `learning_rate` when `tx` injects one, and each aux metric averaged over microbatches.

  `trainable` (the same mask given to `make_optimizer`) is optional; with it the step
  differentiates only the trainable params, so no gradient memory or backward pass is spent
  below the lowest trainable layer, and frozen params are returned untouched.

  `prepare_batch(batch) -> batch` runs inside the jitted step on the whole batch before it is
  split: quantities that need every row (group-relative advantages, per-source normalisation)
  belong there, never in the per-microbatch loss.
  """
  if num_microbatches < 1:
    raise ValueError(f"num_microbatches={num_microbatches} must be >= 1")
  mesh = batch_sharding.mesh
  replicated = NamedSharding(mesh, PartitionSpec())
  microbatch_sharding = NamedSharding(mesh, PartitionSpec(None, *batch_sharding.spec))

  def step_fn(state: TrainState, batch):
    if prepare_batch is not None:  # whole-batch work, e.g. group-relative advantages
      batch = prepare_batch(batch)
    _batch_size(batch, num_microbatches)
    params = state.params
    mask = resolve_trainable(params, trainable)
    # Frozen leaves become None, which jax treats as an empty subtree: not differentiated.
    pick = lambda tree: jax.tree.map(lambda m, x: x if m else None, mask, tree)
    merge = lambda base, sub: jax.tree.map(lambda m, b, s: s if m else b, mask, base, sub)
    train_params = pick(params)
    grad_shardings = pick(state_shardings.params)

    def micro_loss(train, microbatch):
      loss_sum, count, aux = loss_fn(merge(params, train), microbatch)
      return loss_sum.astype(jnp.float32), (jnp.asarray(count, jnp.float32), aux)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def accumulate(carry, microbatch):
      grads_acc, loss_acc, count_acc = carry
      microbatch = jax.lax.with_sharding_constraint(microbatch, batch_sharding)
      (loss_sum, (count, aux)), grads = grad_fn(train_params, microbatch)
      grads_acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grads_acc, grads)
      grads_acc = jax.lax.with_sharding_constraint(grads_acc, grad_shardings)
      return (grads_acc, loss_acc + loss_sum, count_acc + count), aux

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), train_params)
    carry = (jax.lax.with_sharding_constraint(zeros, grad_shardings),
             jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    if num_microbatches == 1:
      (grads, loss_sum, count), aux = accumulate(carry, batch)
    else:
      microbatches = jax.lax.with_sharding_constraint(
          split_microbatches(batch, num_microbatches), microbatch_sharding)
      (grads, loss_sum, count), aux_m = jax.lax.scan(accumulate, carry, microbatches)
      aux = jax.tree.map(lambda x: jnp.mean(x.astype(jnp.float32), axis=0), aux_m)

    denom = jnp.where(count > 0, count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    grad_norm = optax.global_norm(grads)
    # Back to the params' dtype so optimizer moments keep theirs (no recompile on step 2).
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, train_params)
    grads = merge(jax.tree.map(jnp.zeros_like, params), grads)
    updates, opt_state = tx.update(grads, state.opt_state, params)
    new_params = merge(params, pick(optax.apply_updates(params, updates)))

    metrics = {name: jnp.asarray(value, jnp.float32) for name, value in aux.items()}
    metrics.update(loss=loss_sum / denom, count=count, grad_norm=grad_norm)
    # The injected value; the schedule's own state shares the key but is no array.
    lr = optax.tree_utils.tree_get(opt_state, "learning_rate",
                                   filtering=lambda _, value: isinstance(value, jax.Array))
    if lr is not None:
      metrics["learning_rate"] = jnp.asarray(lr, jnp.float32)
    new_state = state.replace(step=state.step + 1, params=new_params, opt_state=opt_state)
    return new_state, metrics

  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, replicated), donate_argnums=0)
