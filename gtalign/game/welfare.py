"""Welfare aggregation of (U, L) and per-source batch normalisation, in jax.numpy.

Method reference sections 6 and 8. Everything here is pure and jit-able: the host computes U and L
per sample (`gtalign.rewards.tasks`), and these run inside the jitted loss. Normalisations group the
batch by an integer source id in [0, num_sources) (`num_sources` must be static under jit) and
compute their statistics only over `valid_b` samples; invalid samples (judge failures, padding)
come out as exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

# --------------------------------------------------------------------------- aggregations


def cobb_douglas(u: Array, l: Array, alpha: float = 0.5) -> Array:
  """u^alpha * l^(1-alpha); alpha = 0.5 is the paper's sqrt(U L). Negatives clamp to 0."""
  return jnp.power(jnp.maximum(u, 0.0), alpha) * jnp.power(jnp.maximum(l, 0.0), 1.0 - alpha)


def linear(u: Array, l: Array, w: float = 0.5) -> Array:
  """w u + (1 - w) l; w = 0.5 is the `linear_comb` baseline (U + L) / 2."""
  return w * u + (1.0 - w) * l


def user_only(u: Array, l: Array) -> Array:
  """The user-welfare baseline: ignores the LLM's payoff."""
  del l
  return jnp.asarray(u)


def llm_only(u: Array, l: Array) -> Array:
  """The LLM-welfare baseline: ignores the user's payoff."""
  del u
  return jnp.asarray(l)


def nash(u: Array, l: Array, d_u: float = 0.0, d_l: float = 0.0) -> Array:
  """Nash bargaining product (u - d_u)_+ (l - d_l)_+ over a disagreement point (d_u, d_l)."""
  return jnp.maximum(u - d_u, 0.0) * jnp.maximum(l - d_l, 0.0)


def rawlsian_min(u: Array, l: Array) -> Array:
  """Rawlsian welfare: only the worse-off player counts."""
  return jnp.minimum(u, l)


AGGREGATIONS: dict[str, Callable[..., Array]] = {
    "cobb_douglas": cobb_douglas,
    "linear": linear,
    "user_only": user_only,
    "llm_only": llm_only,
    "nash": nash,
    "min": rawlsian_min,
}


def aggregate(name: str, u_b: Array, l_b: Array, **params) -> Array:
  """Welfare W(U, L) by registry name; params go to the aggregation (alpha, w, d_u, d_l)."""
  if name not in AGGREGATIONS:
    raise ValueError(f"unknown aggregation {name!r}; known: {sorted(AGGREGATIONS)}")
  return AGGREGATIONS[name](u_b, l_b, **params)


# --------------------------------------------------------------------------- segment helpers

_STD_FLOOR = 1e-6  # zscore: a population std below this is replaced by 1.0
_EPS = 1e-6  # added to every std in a denominator (as the original does)
_RANGE_FLOOR = 1e-6  # minmax: a smaller range maps the whole source to 0
_MAD_FLOOR = 1e-6  # robustz: a smaller MAD is replaced by 1.0
_MAD_SCALE = 1.4826  # MAD -> std for normal data
_WINSOR_Q = (0.01, 0.99)  # robustz winsorisation quantiles
_JAMES_KAPPA = 50.0  # james: shrinkage weight lambda = n / (n + kappa)
_SELFADAPT_TAU = 2.0  # selfadapt: tanh((s - mean_src) / tau)


def _prepare(score_b, source_b, valid_b):
  """float32 scores with invalid entries zeroed (they may be NaN), int ids, bool mask."""
  valid_b = jnp.asarray(valid_b, dtype=bool)
  x_b = jnp.where(valid_b, jnp.asarray(score_b, dtype=jnp.float32), 0.0)
  return x_b, jnp.asarray(source_b, dtype=jnp.int32), valid_b


def _segment_sum(x_b, source_b, valid_b, num_sources):
  return jax.ops.segment_sum(jnp.where(valid_b, x_b, 0.0), source_b, num_segments=num_sources)


def _segment_mean_std(x_b, source_b, valid_b, num_sources):
  """Per-source count, mean and population std over valid samples."""
  n_s = _segment_sum(jnp.ones_like(x_b), source_b, valid_b, num_sources)
  denom_s = jnp.maximum(n_s, 1.0)
  mean_s = _segment_sum(x_b, source_b, valid_b, num_sources) / denom_s
  sq_b = jnp.square(x_b - mean_s[source_b])
  std_s = jnp.sqrt(_segment_sum(sq_b, source_b, valid_b, num_sources) / denom_s)
  return n_s, mean_s, std_s


def _global_mean_std(x_b, valid_b):
  n = jnp.maximum(jnp.sum(valid_b), 1)
  mean = jnp.sum(jnp.where(valid_b, x_b, 0.0)) / n
  std = jnp.sqrt(jnp.sum(jnp.where(valid_b, jnp.square(x_b - mean), 0.0)) / n)
  return mean, std


def _sort_by_source(x_b, source_b, valid_b, num_sources):
  """Sorts by (source, value) with invalid samples last: each source becomes one sorted run.

  Returns the permutation, the sorted values, each sorted slot's group id (num_sources for invalid)
  and each source's run start and length.
  """
  group_b = jnp.where(valid_b, source_b, num_sources)
  order_b = jnp.lexsort((x_b, group_b))  # the last key is the primary one
  n_s = jax.ops.segment_sum(valid_b.astype(jnp.int32), source_b, num_segments=num_sources)
  start_s = jnp.cumsum(n_s) - n_s
  return order_b, x_b[order_b], group_b[order_b], start_s, n_s


def _interp_sorted(sorted_b, start, n, q):
  """Linear-interpolation quantile q of the run sorted_b[start:start+n] (numpy's default)."""
  last = sorted_b.shape[0] - 1
  pos = q * jnp.maximum(n - 1, 0).astype(jnp.float32)
  lo = jnp.floor(pos)
  frac = pos - lo
  lo_i = lo.astype(jnp.int32)
  hi_i = jnp.minimum(lo_i + 1, jnp.maximum(n - 1, 0))
  a = sorted_b[jnp.clip(start + lo_i, 0, last)]
  b = sorted_b[jnp.clip(start + hi_i, 0, last)]
  return a + frac * (b - a)


def _mid_rank(x_b, source_b, valid_b, num_sources):
  """1-based rank of each sample within its source, ties sharing their average rank."""
  order_b, sorted_b, group_sorted_b, start_s, n_s = _sort_by_source(
      x_b, source_b, valid_b, num_sources)
  size = x_b.shape[0]
  slot_b = jnp.arange(size)
  new_run_b = jnp.concatenate([
      jnp.ones((1,), bool),
      (sorted_b[1:] != sorted_b[:-1]) | (group_sorted_b[1:] != group_sorted_b[:-1]),
  ])
  run_b = jnp.cumsum(new_run_b) - 1  # id of the run of equal values (within one source)
  first_r = jax.ops.segment_min(slot_b, run_b, num_segments=size)
  last_r = jax.ops.segment_max(slot_b, run_b, num_segments=size)
  start_sorted_b = start_s[jnp.minimum(group_sorted_b, num_sources - 1)]
  rank_sorted_b = (first_r[run_b] + last_r[run_b]) / 2.0 - start_sorted_b + 1.0
  rank_b = jnp.zeros((size,), jnp.float32).at[order_b].set(rank_sorted_b)
  return rank_b, n_s


# --------------------------------------------------------------------------- normalisations


def no_normalisation(score_b, source_b, valid_b, num_sources):
  """Raw scores (the `gamellm` manager); invalid samples still come out as 0."""
  del num_sources
  x_b, _, valid_b = _prepare(score_b, source_b, valid_b)
  return jnp.where(valid_b, x_b, 0.0)


def zscore(score_b, source_b, valid_b, num_sources):
  """(s - mean_src) / (std_src + 1e-6); a std < 1e-6 becomes 1 (full_zscore.sh)."""
  x_b, source_b, valid_b = _prepare(score_b, source_b, valid_b)
  _, mean_s, std_s = _segment_mean_std(x_b, source_b, valid_b, num_sources)
  std_s = jnp.where(std_s > _STD_FLOOR, std_s, 1.0)
  out_b = (x_b - mean_s[source_b]) / (std_s[source_b] + _EPS)
  return jnp.where(valid_b, out_b, 0.0)


def minmax(score_b, source_b, valid_b, num_sources):
  """(s - min_src) / (max_src - min_src); a source whose range is < 1e-6 maps to 0."""
  x_b, source_b, valid_b = _prepare(score_b, source_b, valid_b)
  lo_s = jax.ops.segment_min(jnp.where(valid_b, x_b, jnp.inf), source_b, num_segments=num_sources)
  hi_s = jax.ops.segment_max(jnp.where(valid_b, x_b, -jnp.inf), source_b,
                             num_segments=num_sources)
  range_s = hi_s - lo_s
  ok_s = range_s >= _RANGE_FLOOR
  out_b = (x_b - lo_s[source_b]) / jnp.where(ok_s, range_s, 1.0)[source_b]
  return jnp.where(valid_b & ok_s[source_b], out_b, 0.0)


def robustz(score_b, source_b, valid_b, num_sources):
  """tanh(z / 2), z from the median and 1.4826 MAD of the 1%/99%-winsorised source scores."""
  x_b, source_b, valid_b = _prepare(score_b, source_b, valid_b)
  _, sorted_b, group_sorted_b, start_s, n_s = _sort_by_source(x_b, source_b, valid_b, num_sources)
  lo_s = _interp_sorted(sorted_b, start_s, n_s, _WINSOR_Q[0])
  hi_s = _interp_sorted(sorted_b, start_s, n_s, _WINSOR_Q[1])
  group_sorted_b = jnp.minimum(group_sorted_b, num_sources - 1)
  # Clipping is monotone, so the clipped runs stay sorted and the median can be read directly.
  wsorted_b = jnp.clip(sorted_b, lo_s[group_sorted_b], hi_s[group_sorted_b])
  med_s = _interp_sorted(wsorted_b, start_s, n_s, 0.5)
  w_b = jnp.clip(x_b, lo_s[source_b], hi_s[source_b])
  dev_b = jnp.abs(w_b - med_s[source_b])
  _, dsorted_b, _, dstart_s, dn_s = _sort_by_source(dev_b, source_b, valid_b, num_sources)
  mad_s = _interp_sorted(dsorted_b, dstart_s, dn_s, 0.5) * _MAD_SCALE
  mad_s = jnp.where(mad_s < _MAD_FLOOR, 1.0, mad_s)
  out_b = jnp.tanh((w_b - med_s[source_b]) / mad_s[source_b] / 2.0)
  return jnp.where(valid_b, out_b, 0.0)


def cdf(score_b, source_b, valid_b, num_sources):
  """2p - 1 with the mid-rank percentile p = (rank - 0.5) / n_src (ties: average rank)."""
  x_b, source_b, valid_b = _prepare(score_b, source_b, valid_b)
  rank_b, n_s = _mid_rank(x_b, source_b, valid_b, num_sources)
  p_b = (rank_b - 0.5) / jnp.maximum(n_s, 1)[source_b]
  return jnp.where(valid_b, 2.0 * p_b - 1.0, 0.0)


def quantile(score_b, source_b, valid_b, num_sources):
  """Per-source mid-rank ECDF value mapped through the batch-global empirical quantile function.

  Puts every source on the pooled score scale while keeping only its within-source order.
  """
  x_b, source_b, valid_b = _prepare(score_b, source_b, valid_b)
  rank_b, n_s = _mid_rank(x_b, source_b, valid_b, num_sources)
  p_b = (rank_b - 0.5) / jnp.maximum(n_s, 1)[source_b]
  zeros_b = jnp.zeros_like(source_b)
  _, gsorted_b, _, _, n_g = _sort_by_source(x_b, zeros_b, valid_b, 1)
  out_b = _interp_sorted(gsorted_b, 0, n_g[0], p_b)
  return jnp.where(valid_b, out_b, 0.0)


def james(score_b, source_b, valid_b, num_sources):
  """z-score with per-source mean/variance shrunk toward the batch-global ones.

  lambda = n_src / (n_src + 50): small sources lean on the global statistics.
  """
  x_b, source_b, valid_b = _prepare(score_b, source_b, valid_b)
  n_s, mean_s, std_s = _segment_mean_std(x_b, source_b, valid_b, num_sources)
  mean_g, std_g = _global_mean_std(x_b, valid_b)
  std_s, std_g = std_s + _EPS, std_g + _EPS
  lam_s = n_s / (n_s + _JAMES_KAPPA)
  mean_shrunk_s = lam_s * mean_s + (1.0 - lam_s) * mean_g
  std_shrunk_s = jnp.sqrt(lam_s * jnp.square(std_s) + (1.0 - lam_s) * jnp.square(std_g))
  out_b = (x_b - mean_shrunk_s[source_b]) / (std_shrunk_s[source_b] + _EPS)
  return jnp.where(valid_b, out_b, 0.0)


def decentralize(score_b, source_b, valid_b, num_sources):
  """(s - mean_src) / (std_global + 1e-6): centre per source, keep one global scale."""
  x_b, source_b, valid_b = _prepare(score_b, source_b, valid_b)
  _, mean_s, _ = _segment_mean_std(x_b, source_b, valid_b, num_sources)
  _, std_g = _global_mean_std(x_b, valid_b)
  out_b = (x_b - mean_s[source_b]) / (std_g + _EPS)
  return jnp.where(valid_b, out_b, 0.0)


def selfadapt(score_b, source_b, valid_b, num_sources):
  """tanh((s - mean_src) / 2): centre per source and squash, no scale estimate."""
  x_b, source_b, valid_b = _prepare(score_b, source_b, valid_b)
  _, mean_s, _ = _segment_mean_std(x_b, source_b, valid_b, num_sources)
  out_b = jnp.tanh((x_b - mean_s[source_b]) / _SELFADAPT_TAU)
  return jnp.where(valid_b, out_b, 0.0)


NORMALISATIONS: dict[str, Callable[[Array, Array, Array, int], Array]] = {
    "none": no_normalisation,
    "zscore": zscore,
    "minmax": minmax,
    "robustz": robustz,
    "cdf": cdf,
    "quantile": quantile,
    "james": james,
    "decentralize": decentralize,
    "selfadapt": selfadapt,
}


def normalise(name: str, score_b, source_b, valid_b, num_sources: int) -> Array:
  """Per-source batch normalisation by registry name (`name`, `num_sources` static under jit)."""
  if name not in NORMALISATIONS:
    raise ValueError(f"unknown normalisation {name!r}; known: {sorted(NORMALISATIONS)}")
  return NORMALISATIONS[name](score_b, source_b, valid_b, num_sources)
