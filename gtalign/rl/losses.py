"""Per-token policy, value, KL and SFT losses, and their aggregation to (sum, count).

All math is float32 `jax.numpy` and jit-able. Losses come out per token (`loss_bt`, 0 where
`mask_bt` is 0); an aggregation mode from `AGGREGATIONS` reduces them to `(loss_sum, count)`. The
trainer adds sums and counts over gradient-accumulation microbatches (and devices) and divides
once at the end, so the accumulated gradient equals the full-batch gradient for every mode instead
of being a mean of microbatch means.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

_LOG_RATIO_CLAMP = 20.0  # |log ratio| bound before exp, as verl: exp(20) is finite in float32


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _masked_mean(x_bt, mask_bt):
  return jnp.sum(jnp.where(mask_bt, x_bt, 0.0)) / jnp.maximum(jnp.sum(mask_bt), 1)


# --------------------------------------------------------------------------- log-probabilities


def token_logprobs(logits_btv: Array, targets_bt: Array) -> Array:
  """log softmax(logits)[target] in float32, as logit - logsumexp (no (B, T, V) log_softmax)."""
  logits_btv = _f32(logits_btv)
  picked_bt = jnp.take_along_axis(logits_btv, jnp.asarray(targets_bt)[..., None], axis=-1)[..., 0]
  return picked_bt - jax.nn.logsumexp(logits_btv, axis=-1)


def entropy(logits_btv: Array) -> Array:
  """Entropy of the next-token distribution per position, float32."""
  logp_btv = jax.nn.log_softmax(_f32(logits_btv), axis=-1)
  return -jnp.sum(jnp.exp(logp_btv) * logp_btv, axis=-1)


# --------------------------------------------------------------------------- policy loss


def ppo_policy_loss(logp_bt: Array, old_logp_bt: Array, adv_bt: Array, mask_bt: Array,
                    clip_low: float = 0.2, clip_high: float = 0.2,
                    dual_clip: float | None = None) -> tuple[Array, dict[str, Array]]:
  """Clipped PPO surrogate per token, with verl's dual clip; returns (loss_bt, metrics).

  loss = -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A). With dual_clip = c > 1, tokens with
  A < 0 are further capped at -c A: a huge ratio on a bad token would otherwise give an unbounded
  loss (Ye et al. 2020). Metrics are masked over this batch's tokens: ratio min/mean/max,
  clip_frac (the clipped term was the larger loss), dual_clip_frac (the cap was active, as a share
  of all tokens) and approx_kl (mean old - new log-prob, verl's ppo_kl).
  """
  if dual_clip is not None and dual_clip <= 1.0:
    raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
  mask_bt = jnp.asarray(mask_bt, dtype=bool)
  adv_bt = jnp.where(mask_bt, _f32(adv_bt), 0.0)  # keep padding garbage out of the gradient
  log_ratio_bt = jnp.where(mask_bt, _f32(logp_bt) - _f32(old_logp_bt), 0.0)
  ratio_bt = jnp.exp(jnp.clip(log_ratio_bt, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
  loss1_bt = -adv_bt * ratio_bt
  loss2_bt = -adv_bt * jnp.clip(ratio_bt, 1.0 - clip_low, 1.0 + clip_high)
  clipped_bt = jnp.maximum(loss1_bt, loss2_bt)
  if dual_clip is None:
    loss_bt, dual_bt = clipped_bt, jnp.zeros_like(mask_bt)
  else:
    cap_bt = -adv_bt * dual_clip
    negative_bt = adv_bt < 0
    loss_bt = jnp.where(negative_bt, jnp.minimum(clipped_bt, cap_bt), clipped_bt)
    dual_bt = negative_bt & (clipped_bt > cap_bt)
  n = jnp.sum(mask_bt)
  metrics = {
      "ratio_min": jnp.where(n > 0, jnp.min(jnp.where(mask_bt, ratio_bt, jnp.inf)), 1.0),
      "ratio_mean": _masked_mean(ratio_bt, mask_bt),
      "ratio_max": jnp.where(n > 0, jnp.max(jnp.where(mask_bt, ratio_bt, -jnp.inf)), 1.0),
      "clip_frac": _masked_mean((loss2_bt > loss1_bt).astype(jnp.float32), mask_bt),
      "dual_clip_frac": _masked_mean(dual_bt.astype(jnp.float32), mask_bt),
      "approx_kl": _masked_mean(-log_ratio_bt, mask_bt),
  }
  return jnp.where(mask_bt, loss_bt, 0.0), metrics


# --------------------------------------------------------------------------- KL estimators


def _clamp(kl_bt, clamp):
  return kl_bt if clamp is None else jnp.clip(kl_bt, -clamp, clamp)


def kl_k1(logp_bt: Array, ref_logp_bt: Array, clamp: float | None = None) -> Array:
  """logp - ref_logp: unbiased for KL(pi || ref) under pi's samples, high variance, can be < 0."""
  return _clamp(_f32(logp_bt) - _f32(ref_logp_bt), clamp)


def kl_k2(logp_bt: Array, ref_logp_bt: Array, clamp: float | None = None) -> Array:
  """0.5 (logp - ref_logp)^2: biased but >= 0; on-policy its gradient is the true KL gradient."""
  return _clamp(0.5 * jnp.square(_f32(logp_bt) - _f32(ref_logp_bt)), clamp)


def kl_k3(logp_bt: Array, ref_logp_bt: Array, clamp: float | None = None) -> Array:
  """exp(ref - logp) - (ref - logp) - 1: unbiased, >= 0 and low variance (Schulman's k3).

  The log ratio is bounded to +-20 before exp, as verl does, so one wild token cannot overflow.
  """
  d_bt = jnp.clip(_f32(ref_logp_bt) - _f32(logp_bt), -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
  return _clamp(jnp.exp(d_bt) - d_bt - 1.0, clamp)


def kl_low_var(logp_bt: Array, ref_logp_bt: Array, clamp: float | None = 10.0) -> Array:
  """verl's `low_var_kl`: k3 clamped to [-10, 10] (the GRPO recipe's KL loss, kl_coef 0.001)."""
  return kl_k3(logp_bt, ref_logp_bt, clamp)


KL_ESTIMATORS: dict[str, Callable[..., Array]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
    "low_var_kl": kl_low_var,
}


def kl(name: str, logp_bt: Array, ref_logp_bt: Array, **params) -> Array:
  """Per-token KL estimate by registry name; params go to the estimator (clamp)."""
  if name not in KL_ESTIMATORS:
    raise ValueError(f"unknown KL estimator {name!r}; known: {sorted(KL_ESTIMATORS)}")
  return KL_ESTIMATORS[name](logp_bt, ref_logp_bt, **params)


# --------------------------------------------------------------------------- value loss


def value_loss(values_bt: Array, old_values_bt: Array, returns_bt: Array, mask_bt: Array,
               clip: float | None = 0.5) -> tuple[Array, dict[str, Array]]:
  """0.5 max((v - R)^2, (clip(v, old - c, old + c) - R)^2) per token; returns (loss_bt, metrics).

  The clipped term keeps one critic update from moving a value further than c from the value the
  advantages were computed with (verl cliprange_value). clip None gives the plain 0.5 (v - R)^2.
  metrics: vf_clip_frac, the share of tokens where the clipped term was the larger.
  """
  mask_bt = jnp.asarray(mask_bt, dtype=bool)
  v_bt = _f32(values_bt)
  ret_bt = jnp.where(mask_bt, _f32(returns_bt), 0.0)
  loss1_bt = jnp.square(v_bt - ret_bt)
  if clip is None:
    loss_bt, clipped_bt = loss1_bt, jnp.zeros_like(mask_bt)
  else:
    old_bt = _f32(old_values_bt)
    loss2_bt = jnp.square(jnp.clip(v_bt, old_bt - clip, old_bt + clip) - ret_bt)
    loss_bt, clipped_bt = jnp.maximum(loss1_bt, loss2_bt), loss2_bt > loss1_bt
  metrics = {"vf_clip_frac": _masked_mean(clipped_bt.astype(jnp.float32), mask_bt)}
  return jnp.where(mask_bt, 0.5 * loss_bt, 0.0), metrics


# --------------------------------------------------------------------------- aggregation
#
# Each mode returns (loss_sum, count) with count float32; the loss is total_sum / total_count
# after summing both over microbatches. Rows whose mask is all 0 are batch padding, not
# sequences: they add nothing to either sum or count.


def token_mean(loss_bt: Array, mask_bt: Array) -> tuple[Array, Array]:
  """Every response token weighs the same: (sum of token losses, number of tokens)."""
  mask_bt = jnp.asarray(mask_bt, dtype=bool)
  return (jnp.sum(jnp.where(mask_bt, _f32(loss_bt), 0.0)),
          jnp.sum(mask_bt).astype(jnp.float32))


def seq_mean_token_mean(loss_bt: Array, mask_bt: Array) -> tuple[Array, Array]:
  """Every sequence weighs the same: (sum of per-sequence token means, number of sequences).

  The per-sequence mean is taken inside one microbatch, so the total is exact only while a
  sequence is never split across microbatches (split by rows, never along time).
  """
  mask_bt = jnp.asarray(mask_bt, dtype=bool)
  n_b = jnp.sum(mask_bt, axis=1).astype(jnp.float32)
  sum_b = jnp.sum(jnp.where(mask_bt, _f32(loss_bt), 0.0), axis=1)
  return jnp.sum(sum_b / jnp.maximum(n_b, 1.0)), jnp.sum(n_b > 0).astype(jnp.float32)


def seq_mean_token_sum_norm(loss_bt: Array, mask_bt: Array,
                            norm: float) -> tuple[Array, Array]:
  """Dr. GRPO: (sum of per-sequence token sums / norm, number of sequences).

  norm is a constant (e.g. the max response length), so a long sequence is not diluted by its own
  length as in seq-mean-token-mean; it must be the same for every microbatch.
  """
  mask_bt = jnp.asarray(mask_bt, dtype=bool)
  total = jnp.sum(jnp.where(mask_bt, _f32(loss_bt), 0.0)) / norm
  return total, jnp.sum(jnp.any(mask_bt, axis=1)).astype(jnp.float32)


AGGREGATIONS: dict[str, Callable[..., tuple[Array, Array]]] = {
    "token-mean": token_mean,
    "seq-mean-token-mean": seq_mean_token_mean,
    "seq-mean-token-sum-norm": seq_mean_token_sum_norm,
}


def aggregate(mode: str, loss_bt: Array, mask_bt: Array, **params) -> tuple[Array, Array]:
  """(loss_sum, count) by registry name; params go to the mode (norm for token-sum-norm)."""
  if mode not in AGGREGATIONS:
    raise ValueError(f"unknown loss aggregation {mode!r}; known: {sorted(AGGREGATIONS)}")
  return AGGREGATIONS[mode](loss_bt, mask_bt, **params)


# --------------------------------------------------------------------------- SFT


def sft_loss(logits_btv: Array, targets_bt: Array, weight_bt: Array) -> tuple[Array, Array]:
  """(sum of token negative log-likelihoods times their weight, sum of the weights): a weight
  is the loss mask, 0 off the completion and above 1 where a token counts more
  (`sft.response_weight`), so the loss is the weighted mean."""
  weight_bt = _f32(weight_bt)
  nll_bt = -_f32(token_logprobs(logits_btv, targets_bt))
  return jnp.sum(jnp.where(weight_bt > 0, nll_bt * weight_bt, 0.0)), jnp.sum(weight_bt)
