"""Advantage estimators and whitening, registered by name so the estimator is a config choice.

Everything here is pure float32 `jax.numpy` and jit-able. Two kinds of estimator share the
`ADVANTAGES` registry:

* outcome estimators (`grpo`, `drgrpo`, `rloo`) take one scalar reward per sequence, grouped as
  consecutive blocks of `group_size` rows (the n samples drawn for one prompt), and return `adv_b`;
  `group_size` must be static under jit. Rows with `valid_b` False (judge failures, padding) get
  exactly 0 and never enter a group's statistics, so a NaN reward there is harmless.
* `gae` takes token-level rewards and critic values and returns `(adv_bt, ret_bt)`; this is the
  published GTAlign setting (method section 9: gamma = lam = 1, advantages whitened afterwards).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

# --------------------------------------------------------------------------- outcome estimators


def _grouped(reward_b, group_size, valid_b):
  """(num_groups, G) float32 rewards, shifted by the group's max valid reward, mask, valid counts.

  Every estimator uses only differences, so the shift changes nothing mathematically; it makes
  equal rewards cancel exactly. Without it the float32 mean of three 0.9s is off by one ulp and
  GRPO divides that residue by a std of ~eps, giving a spurious advantage of ~0.06.
  Invalid entries are 0 (they may hold NaN).
  """
  reward_b = jnp.asarray(reward_b, jnp.float32)
  if group_size < 1 or reward_b.shape[0] % group_size:
    raise ValueError(f"batch of {reward_b.shape[0]} rows is not a multiple of group_size "
                     f"{group_size}")
  valid_gn = jnp.asarray(valid_b, dtype=bool).reshape(-1, group_size)
  r_gn = jnp.where(valid_gn, reward_b.reshape(-1, group_size), -jnp.inf)
  ref_g1 = jnp.max(r_gn, axis=1, keepdims=True)
  r_gn = jnp.where(valid_gn, r_gn - jnp.where(jnp.isfinite(ref_g1), ref_g1, 0.0), 0.0)
  n_g1 = jnp.sum(valid_gn, axis=1, keepdims=True).astype(jnp.float32)
  return r_gn, valid_gn, n_g1


def _group_mean(r_gn, n_g1):
  return jnp.sum(r_gn, axis=1, keepdims=True) / jnp.maximum(n_g1, 1.0)


def grpo(reward_b: Array, group_size: int, valid_b: Array, eps: float = 1e-6,
         std_floor: float = 0.0) -> Array:
  """(r - mean_group) / (max(std_group, std_floor) + eps), population std over valid rows.

  A group whose valid rewards are all equal (including a single valid row) gets 0: it carries no
  preference signal, and the eps only keeps the division finite. `std_floor` > 0 stops a group
  whose rewards differ only by noise (length terms, 1e-3) from being blown up to advantages of
  +-1 like a group whose samples really differ.
  """
  r_gn, valid_gn, n_g1 = _grouped(reward_b, group_size, valid_b)
  mean_g1 = _group_mean(r_gn, n_g1)
  centred_gn = jnp.where(valid_gn, r_gn - mean_g1, 0.0)
  std_g1 = jnp.sqrt(jnp.sum(jnp.square(centred_gn), axis=1, keepdims=True)
                    / jnp.maximum(n_g1, 1.0))
  return (centred_gn / (jnp.maximum(std_g1, std_floor) + eps)).reshape(-1)


def drgrpo(reward_b: Array, group_size: int, valid_b: Array) -> Array:
  """r - mean_group: Dr. GRPO drops the std, which inflates low-variance (too easy/hard) groups."""
  r_gn, valid_gn, n_g1 = _grouped(reward_b, group_size, valid_b)
  return jnp.where(valid_gn, r_gn - _group_mean(r_gn, n_g1), 0.0).reshape(-1)


def rloo(reward_b: Array, group_size: int, valid_b: Array) -> Array:
  """r_i - mean of the other valid rewards: an unbiased baseline (it never sees r_i itself)."""
  r_gn, valid_gn, n_g1 = _grouped(reward_b, group_size, valid_b)
  others_g1 = n_g1 - 1.0
  loo_gn = (jnp.sum(r_gn, axis=1, keepdims=True) - r_gn) / jnp.maximum(others_g1, 1.0)
  return jnp.where(valid_gn & (others_g1 > 0), r_gn - loo_gn, 0.0).reshape(-1)


# --------------------------------------------------------------------------- GAE


def gae(reward_bt: Array, value_bt: Array, mask_bt: Array, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[Array, Array]:
  """Generalised advantage estimation as a reverse scan over time; returns (adv_bt, ret_bt).

  Masked positions are skipped, not treated as steps: the carried next-value and next-advantage
  pass through them unchanged, so for a right-padded response the value after the last response
  token is 0 (nothing follows it) whatever the critic says about padding. Both outputs are 0 at
  masked positions and `ret_bt = adv_bt + value_bt` is taken before any whitening, as verl does.
  """
  mask_bt = jnp.asarray(mask_bt, dtype=bool)
  r_tb = jnp.where(mask_bt, jnp.asarray(reward_bt, jnp.float32), 0.0).T
  v_tb = jnp.where(mask_bt, jnp.asarray(value_bt, jnp.float32), 0.0).T
  m_tb = mask_bt.T

  def step(carry, xs):
    next_v_b, next_adv_b = carry
    r_b, v_b, m_b = xs
    delta_b = r_b + gamma * next_v_b - v_b
    adv_b = delta_b + gamma * lam * next_adv_b
    carry = (jnp.where(m_b, v_b, next_v_b), jnp.where(m_b, adv_b, next_adv_b))
    return carry, jnp.where(m_b, adv_b, 0.0)

  zeros_b = jnp.zeros(r_tb.shape[1], jnp.float32)
  _, adv_tb = jax.lax.scan(step, (zeros_b, zeros_b), (r_tb, v_tb, m_tb), reverse=True)
  adv_bt = adv_tb.T
  return adv_bt, jnp.where(mask_bt, adv_bt + v_tb.T, 0.0)


# --------------------------------------------------------------------------- helpers


def whiten(x_bt: Array, mask_bt: Array, shift_mean: bool = True, eps: float = 1e-8) -> Array:
  """(x - mean) / sqrt(var + eps) over masked elements, var unbiased (verl's masked_whiten).

  With shift_mean False the mean is added back (only the scale changes). Masked-out positions come
  out as 0. Fewer than two masked elements gives variance 0 (verl raises there; jit cannot).
  """
  mask_bt = jnp.asarray(mask_bt, dtype=bool)
  x_bt = jnp.where(mask_bt, jnp.asarray(x_bt, jnp.float32), 0.0)
  n = jnp.sum(mask_bt).astype(jnp.float32)
  mean = jnp.sum(x_bt) / jnp.maximum(n, 1.0)
  sq_bt = jnp.where(mask_bt, jnp.square(x_bt - mean), 0.0)
  var = jnp.sum(sq_bt) / jnp.maximum(n - 1.0, 1.0)
  out_bt = (x_bt - mean) * jax.lax.rsqrt(var + eps)
  if not shift_mean:
    out_bt = out_bt + mean
  return jnp.where(mask_bt, out_bt, 0.0)


def broadcast_to_tokens(adv_b: Array, mask_bt: Array) -> Array:
  """Every response token of a sequence gets its sequence's advantage; other positions 0."""
  return jnp.where(jnp.asarray(mask_bt, dtype=bool), jnp.asarray(adv_b, jnp.float32)[:, None], 0.0)


ADVANTAGES: dict[str, Callable[..., Array | tuple[Array, Array]]] = {
    "grpo": grpo,
    "drgrpo": drgrpo,
    "rloo": rloo,
    "gae": gae,
}


def get(name: str) -> Callable[..., Array | tuple[Array, Array]]:
  """The estimator registered under name; an unknown name lists the known ones."""
  if name not in ADVANTAGES:
    raise ValueError(f"unknown advantage estimator {name!r}; known: {sorted(ADVANTAGES)}")
  return ADVANTAGES[name]
