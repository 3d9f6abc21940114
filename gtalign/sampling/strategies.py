"""Turning logits into tokens: greedy, temperature, top-k, top-p; and the log-prob convention.

Log-prob convention (what the trainer recomputes): the log-probability of the chosen token is
`log_softmax(logits / T)` over the whole vocabulary, with T = 1 for greedy decoding. Top-k/top-p
truncation changes which tokens can be drawn but is not part of the returned log-prob, exactly as
a trainer that recomputes `log_softmax(logits / T)` from a forward pass sees it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG_INF = -jnp.inf


def trainer_logprobs(logits_rv: jax.Array, temperature: float,
                     temperature_r: jax.Array | None = None) -> jax.Array:
  """log_softmax(logits / T) in float32; greedy (T = 0) uses T = 1; `temperature_r`, when
  given (and T > 0), is each row's own T."""
  if temperature == 0.0:
    return jax.nn.log_softmax(logits_rv.astype(jnp.float32), axis=-1)
  scale = 1.0 / (temperature if temperature_r is None else temperature_r[:, None])
  return jax.nn.log_softmax(logits_rv.astype(jnp.float32) * scale, axis=-1)


def truncate(logits_rv: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """Masks tokens outside the top-k and outside the smallest top-p nucleus with -inf."""
  vocab = logits_rv.shape[-1]
  if 0 < top_k < vocab:
    kth_r1 = jax.lax.top_k(logits_rv, top_k)[0][:, -1:]
    logits_rv = jnp.where(logits_rv < kth_r1, _NEG_INF, logits_rv)
  if top_p < 1.0:
    sorted_rv = jnp.sort(logits_rv, axis=-1)[:, ::-1]
    probs_rv = jax.nn.softmax(sorted_rv, axis=-1)
    before_rv = jnp.cumsum(probs_rv, axis=-1) - probs_rv  # mass strictly above each token
    # the nucleus keeps every token whose preceding mass is below top_p (at least one token)
    keep_rv = before_rv < top_p
    cutoff_r1 = jnp.min(jnp.where(keep_rv, sorted_rv, jnp.inf), axis=-1, keepdims=True)
    logits_rv = jnp.where(logits_rv < cutoff_r1, _NEG_INF, logits_rv)
  return logits_rv


def _inverse_cdf(probs_rv: jax.Array, uniform_r: jax.Array, block: int = 256) -> jax.Array:
  """Index where each row's CDF crosses `uniform * total`, in two levels.

  A cumulative sum over a 150k vocabulary is slow on CPUs; summing blocks, locating the block,
  then scanning inside it touches every probability once and keeps the scans short.
  """
  rows, vocab = probs_rv.shape
  pad = (-vocab) % block
  blocks_rbk = jnp.pad(probs_rv, ((0, 0), (0, pad))).reshape(rows, -1, block)
  block_cdf_rb = jnp.cumsum(jnp.sum(blocks_rbk, axis=-1), axis=-1)
  target_r = uniform_r * block_cdf_rb[:, -1]
  block_r = jnp.minimum(jnp.sum(block_cdf_rb <= target_r[:, None], axis=-1),
                        block_cdf_rb.shape[1] - 1)
  before_r = jnp.where(block_r > 0,
                       jnp.take_along_axis(block_cdf_rb, jnp.maximum(block_r - 1, 0)[:, None],
                                           axis=-1)[:, 0], 0.0)
  inner_rk = jnp.take_along_axis(blocks_rbk, block_r[:, None, None], axis=1)[:, 0]
  inner_r = jnp.sum(jnp.cumsum(inner_rk, axis=-1) <= (target_r - before_r)[:, None], axis=-1)
  return jnp.minimum(block_r * block + jnp.minimum(inner_r, block - 1), vocab - 1)


def sample(logits_rv: jax.Array, uniform_r: jax.Array, temperature: float, top_k: int,
           top_p: float, temperature_r: jax.Array | None = None) -> jax.Array:
  """One token per row by inverse-CDF sampling with one uniform draw per row.

  One draw per row (instead of a Gumbel draw per vocabulary entry) keeps sampling cheap and
  makes each row's token a function of its own logits and its own random number only.
  `temperature_r`, when given (and T > 0), is each row's own T.
  """
  if temperature == 0.0:
    return jnp.argmax(logits_rv, axis=-1).astype(jnp.int32)
  divisor = temperature if temperature_r is None else temperature_r[:, None]
  logits_rv = truncate(logits_rv.astype(jnp.float32) / divisor, top_k, top_p)
  probs_rv = jax.nn.softmax(logits_rv, axis=-1)
  token_r = _inverse_cdf(probs_rv, uniform_r)
  # rounding can land on a masked (zero-mass) token at a boundary: fall back to the mode
  masked_r = jnp.take_along_axis(probs_rv, token_r[:, None], axis=-1)[:, 0] <= 0
  return jnp.where(masked_r, jnp.argmax(logits_rv, axis=-1), token_r).astype(jnp.int32)
