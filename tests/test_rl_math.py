"""Advantage estimators and RL losses against hand-computed values, all run through jax.jit."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gtalign.rl import advantages
from gtalign.rl import losses

# --------------------------------------------------------------------------- outcome advantages

# 2 groups x 3 samples. Group 0: 1, (invalid NaN), 3 -> valid mean 2, population std 1.
# Group 1: 0, 3, 6 -> mean 3, population std sqrt((9 + 0 + 9) / 3) = sqrt(6).
REWARD = np.array([1.0, np.nan, 3.0, 0.0, 3.0, 6.0], np.float32)
VALID = np.array([True, False, True, True, True, True])
S6 = math.sqrt(6.0)


@pytest.mark.parametrize("name,params,want", [
    ("grpo", {}, [-1.0, 0.0, 1.0, -3 / S6, 0.0, 3 / S6]),
    # eps sits beside the std: (r - 2) / (1 + 1) and (r - 3) / (sqrt 6 + 1).
    ("grpo", {"eps": 1.0}, [-0.5, 0.0, 0.5, -3 / (S6 + 1), 0.0, 3 / (S6 + 1)]),
    ("drgrpo", {}, [-1.0, 0.0, 1.0, -3.0, 0.0, 3.0]),
    # r_i minus the mean of the other valid rewards: 1 - 3, 3 - 1; 0 - 4.5, 3 - 3, 6 - 1.5.
    ("rloo", {}, [-2.0, 0.0, 2.0, -4.5, 0.0, 4.5]),
])
def test_outcome_advantages(name, params, want):
  f = jax.jit(functools.partial(advantages.get(name), **params), static_argnames="group_size")
  out = f(REWARD, group_size=3, valid_b=VALID)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo"])
def test_outcome_advantages_degenerate_groups(name):
  # Group 0 has a single valid member, groups 1 and 2 three equal rewards, group 3 none valid:
  # exactly 0 everywhere. (0.9 and 0.7: their float32 group mean is one ulp off, which GRPO's
  # division by std + 1e-6 would turn into ~0.06 unless equal rewards cancel exactly.)
  reward = jnp.array([5.0, 1.0, 2.0, 0.7, 0.7, 0.7, 0.9, 0.9, 0.9, 9.0, 9.0, 9.0])
  valid = jnp.array([True, False, False] + [True] * 6 + [False] * 3)
  f = jax.jit(advantages.get(name), static_argnames="group_size")
  np.testing.assert_array_equal(np.asarray(f(reward, group_size=3, valid_b=valid)), np.zeros(12))


def test_outcome_advantages_reject_ragged_batch_and_unknown_name():
  with pytest.raises(ValueError, match="multiple of group_size"):
    advantages.grpo(jnp.zeros(5), 2, jnp.ones(5, bool))
  with pytest.raises(ValueError, match="rloo"):
    advantages.get("ppo")


# --------------------------------------------------------------------------- GAE


def _gae_loop(reward, value, mask, gamma, lam):
  """Plain recursion over each row's masked tokens only; everything else is skipped."""
  adv, ret = np.zeros_like(reward), np.zeros_like(reward)
  for b in range(reward.shape[0]):
    steps = np.flatnonzero(mask[b])
    last = 0.0
    for i in reversed(range(len(steps))):
      t = steps[i]
      next_v = value[b, steps[i + 1]] if i + 1 < len(steps) else 0.0
      last = reward[b, t] + gamma * next_v - value[b, t] + gamma * lam * last
      adv[b, t] = last
      ret[b, t] = last + value[b, t]
  return adv, ret


def test_gae_hand_computed():
  # One row, mask [1, 1, 0]; the padding's reward 9 and value 7 must be ignored.
  # gamma 0.9, lam 0.5: A1 = 1 + 0.9 * 0 - 0.25 = 0.75 (value after the last token is 0);
  # A0 = (0 + 0.9 * 0.25 - 0.5) + 0.9 * 0.5 * 0.75 = -0.275 + 0.3375 = 0.0625.
  # Returns: 0.0625 + 0.5 = 0.5625, 0.75 + 0.25 = 1.0.
  r, v, m = [[0.0, 1.0, 9.0]], [[0.5, 0.25, 7.0]], [[1, 1, 0]]
  f = jax.jit(advantages.gae)
  adv, ret = f(jnp.array(r), jnp.array(v), jnp.array(m), 0.9, 0.5)
  np.testing.assert_allclose(np.asarray(adv), [[0.0625, 0.75, 0.0]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(ret), [[0.5625, 1.0, 0.0]], atol=1e-6)
  # gamma = lam = 1: A0 = 0 + 0.25 - 0.5 + 0.75 = 0.5; returns are the reward-to-go 1, 1.
  adv, ret = f(jnp.array(r), jnp.array(v), jnp.array(m), 1.0, 1.0)
  np.testing.assert_allclose(np.asarray(adv), [[0.5, 0.75, 0.0]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(ret), [[1.0, 1.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.9, 0.95)])
def test_gae_matches_python_loop_with_right_padding(gamma, lam):
  rng = np.random.default_rng(0)
  lengths = [9, 5, 1, 0, 7, 3]
  shape = (len(lengths), 9)
  reward = rng.normal(size=shape).astype(np.float32)
  value = rng.normal(size=shape).astype(np.float32)
  mask = np.arange(shape[1])[None, :] < np.array(lengths)[:, None]
  # Padding holds garbage (as a critic's outputs past EOS would): it must not leak in.
  reward_in = np.where(mask, reward, np.nan).astype(np.float32)
  value_in = np.where(mask, value, 50.0).astype(np.float32)
  want_adv, want_ret = _gae_loop(reward, value, mask, gamma, lam)
  adv, ret = jax.jit(advantages.gae)(reward_in, value_in, mask, gamma, lam)
  np.testing.assert_allclose(np.asarray(adv), want_adv, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ret), want_ret, atol=1e-5)
  if gamma == lam == 1.0:  # then returns are the plain reward-to-go, whatever the values
    rtg = np.where(mask, np.cumsum(reward[:, ::-1] * mask[:, ::-1], axis=1)[:, ::-1], 0.0)
    np.testing.assert_allclose(np.asarray(ret), rtg, atol=1e-5)


def test_gae_skips_masked_gaps():
  # Not needed for right-padded responses, but a masked gap (e.g. a tool observation inside a
  # multi-turn response) is skipped rather than treated as a step: the mask below has one at t2-t3.
  rng = np.random.default_rng(3)
  reward = rng.normal(size=(2, 7)).astype(np.float32)
  value = rng.normal(size=(2, 7)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0, 1, 1, 0], [0, 1, 1, 0, 1, 0, 0]], bool)
  want_adv, want_ret = _gae_loop(reward, value, mask, 0.9, 0.95)
  adv, ret = jax.jit(advantages.gae)(reward, value, mask, 0.9, 0.95)
  np.testing.assert_allclose(np.asarray(adv), want_adv, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ret), want_ret, atol=1e-5)


# --------------------------------------------------------------------------- whitening, broadcast


def test_whiten_hand_computed():
  # Masked 1, 2, 3: mean 2, unbiased var (1 + 0 + 1) / 2 = 1 -> -1, 0, 1 (population var 2/3
  # would give +-1.22). The padded 100 stays out of the statistics and comes out 0.
  x, m = jnp.array([[1.0, 2.0], [3.0, 100.0]]), jnp.array([[1, 1], [1, 0]])
  f = jax.jit(advantages.whiten, static_argnames="shift_mean")
  np.testing.assert_allclose(np.asarray(f(x, m)), [[-1.0, 0.0], [1.0, 0.0]], atol=1e-6)
  # shift_mean False adds the mean 2 back: only the scale (here 1) changes.
  np.testing.assert_allclose(np.asarray(f(x, m, shift_mean=False)), [[1.0, 2.0], [3.0, 0.0]],
                             atol=1e-6)


def test_whiten_matches_numpy():
  rng = np.random.default_rng(1)
  x = rng.normal(3.0, 2.0, size=(5, 11)).astype(np.float32)
  mask = np.arange(11)[None, :] < np.array([11, 4, 0, 7, 1])[:, None]
  sel = x[mask].astype(np.float64)
  mean, var = sel.mean(), sel.var(ddof=1)
  want = np.where(mask, (x - mean) / np.sqrt(var + 1e-8), 0.0)
  out = jax.jit(advantages.whiten)(x, mask)
  np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)
  sel_out = np.asarray(out)[mask]
  assert abs(sel_out.mean()) < 1e-5 and abs(sel_out.std(ddof=1) - 1.0) < 1e-4


def test_broadcast_to_tokens():
  out = jax.jit(advantages.broadcast_to_tokens)(jnp.array([2.0, -1.0]),
                                                jnp.array([[1, 1, 0], [1, 0, 0]]))
  np.testing.assert_array_equal(np.asarray(out), [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])


# --------------------------------------------------------------------------- log-probs, entropy

LN2 = math.log(2.0)


def test_token_logprobs_and_entropy():
  # Row 0: logits (0, l) with l = ln 3 rounded to bf16 (1.1016) -> p = (1 - q, q), q = 1/(1+e^-l)
  # (q = 3/4 for l = ln 3 exactly). Row 1: uniform over 2 -> ln(1/2), entropy ln 2.
  logits = jnp.array([[[0.0, math.log(3.0)], [0.0, 0.0]]], jnp.bfloat16)
  l = float(logits[0, 0, 1])
  q = 1.0 / (1.0 + math.exp(-l))
  logp = jax.jit(losses.token_logprobs)(logits, jnp.array([[1, 0]]))
  assert logp.dtype == jnp.float32  # math in float32 even for bf16 logits
  np.testing.assert_allclose(np.asarray(logp), [[math.log(q), -LN2]], atol=1e-6)
  ent = jax.jit(losses.entropy)(logits)
  assert ent.dtype == jnp.float32
  want_h0 = -(q * math.log(q) + (1 - q) * math.log(1 - q))  # 0.5623 for q = 3/4
  np.testing.assert_allclose(np.asarray(ent), [[want_h0, LN2]], atol=1e-6)


def test_sft_loss():
  # NLLs: -ln(3/4) + -ln(1/2) = ln(8/3) over 2 tokens; the masked third token (NLL ln 2) is out.
  logits = jnp.array([[[0.0, math.log(3.0)], [0.0, 0.0], [0.0, 0.0]]])
  total, count = jax.jit(losses.sft_loss)(logits, jnp.array([[1, 0, 1]]), jnp.array([[1, 1, 0]]))
  assert float(total) == pytest.approx(math.log(8.0 / 3.0), abs=1e-6)
  assert float(count) == 2.0
  # weights (sft.response_weight): the second token counts 5 times, the third is still out
  total, count = jax.jit(losses.sft_loss)(logits, jnp.array([[1, 0, 1]]),
                                          jnp.array([[1.0, 5.0, 0.0]]))
  assert float(total) == pytest.approx(-math.log(0.75) + 5 * math.log(2.0), abs=1e-6)
  assert float(count) == 6.0


# --------------------------------------------------------------------------- PPO policy loss

# Per token (A, ratio); clip 0.2 / 0.2 gives the clip range [0.8, 1.2]:
#   t0 A=+1 r=1.1: inside -> -1.1
#   t1 A=+1 r=1.5: max(-1.5, -1.2) = -1.2             (clipped)
#   t2 A=+1 r=0.5: max(-0.5, -0.8) = -0.5             (pessimistic: unclipped kept)
#   t3 A=-1 r=0.5: max(0.5, 0.8) = 0.8                (clipped)
#   t4 A=-1 r=5.0: max(5, 1.2) = 5; dual clip c=3: min(5, 3) = 3   (dual-clipped)
#   t5 A=-1 r=2.0: max(2, 1.2) = 2; min(2, 3) = 2     (dual clip inactive)
#   t6 masked, NaN advantage: loss 0 and no NaN in the gradient.
PPO_ADV = np.array([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0, np.nan]], np.float32)
PPO_RATIO = np.array([[1.1, 1.5, 0.5, 0.5, 5.0, 2.0, 1.0]])
PPO_MASK = np.array([[1, 1, 1, 1, 1, 1, 0]])
PPO_OLD = np.array([[-1.0, -2.0, -0.5, -3.0, -4.0, -1.5, -2.5]], np.float32)


def _ppo(dual_clip, clip_low=0.2, clip_high=0.2):
  logp = jnp.asarray(PPO_OLD + np.log(PPO_RATIO), jnp.float32)

  @jax.jit
  def f(logp_bt):
    loss_bt, metrics = losses.ppo_policy_loss(logp_bt, PPO_OLD, PPO_ADV, PPO_MASK,
                                              clip_low, clip_high, dual_clip)
    return jnp.sum(loss_bt), (loss_bt, metrics)

  (_, (loss_bt, metrics)), grad_bt = jax.value_and_grad(f, has_aux=True)(logp)
  return np.asarray(loss_bt)[0], metrics, np.asarray(grad_bt)[0]


def test_ppo_policy_loss_with_dual_clip():
  loss, metrics, grad = _ppo(dual_clip=3.0)
  np.testing.assert_allclose(loss, [-1.1, -1.2, -0.5, 0.8, 3.0, 2.0, 0.0], atol=1e-5)
  # d(-A r)/d logp = -A r where the unclipped term is active, 0 where a clip or the cap is.
  np.testing.assert_allclose(grad, [-1.1, 0.0, -0.5, 0.0, 0.0, 2.0, 0.0], atol=1e-5)
  assert float(metrics["ratio_min"]) == pytest.approx(0.5, abs=1e-6)
  assert float(metrics["ratio_max"]) == pytest.approx(5.0, abs=1e-5)
  assert float(metrics["ratio_mean"]) == pytest.approx(10.6 / 6, abs=1e-5)  # t6 excluded
  assert float(metrics["clip_frac"]) == pytest.approx(2 / 6)  # t1, t3
  assert float(metrics["dual_clip_frac"]) == pytest.approx(1 / 6)  # t4
  # approx_kl = mean(old - new) = -ln(1.1 * 1.5 * 0.5 * 0.5 * 5 * 2) / 6 = -ln(4.125) / 6.
  assert float(metrics["approx_kl"]) == pytest.approx(-math.log(4.125) / 6, abs=1e-5)


def test_ppo_policy_loss_without_dual_clip_and_asymmetric_clip():
  loss, metrics, _ = _ppo(dual_clip=None)
  np.testing.assert_allclose(loss, [-1.1, -1.2, -0.5, 0.8, 5.0, 2.0, 0.0], atol=1e-5)
  assert float(metrics["dual_clip_frac"]) == 0.0
  # clip_low 0.1, clip_high 0.28: t1 -> max(-1.5, -1.28) = -1.28; t3 -> max(0.5, 0.9) = 0.9.
  loss, _, _ = _ppo(dual_clip=None, clip_low=0.1, clip_high=0.28)
  np.testing.assert_allclose(loss, [-1.1, -1.28, -0.5, 0.9, 5.0, 2.0, 0.0], atol=1e-5)
  with pytest.raises(ValueError, match="dual_clip"):
    losses.ppo_policy_loss(PPO_OLD, PPO_OLD, PPO_ADV, PPO_MASK, dual_clip=1.0)


# --------------------------------------------------------------------------- KL estimators


@pytest.mark.parametrize("name,params,want", [
    # Columns (logp, ref): (0, ln 2), (ln 2, 0), (0, 15). d = ref - logp = ln 2, -ln 2, 15.
    ("k1", {}, [-LN2, LN2, -15.0]),  # logp - ref
    ("k1", {"clamp": 1.0}, [-LN2, LN2, -1.0]),
    ("k2", {}, [0.5 * LN2 ** 2, 0.5 * LN2 ** 2, 112.5]),  # 0.5 * 15^2 = 112.5
    ("k2", {"clamp": 100.0}, [0.5 * LN2 ** 2, 0.5 * LN2 ** 2, 100.0]),
    # e^d - d - 1: 2 - ln 2 - 1 = 0.3069; 0.5 + ln 2 - 1 = 0.1931; e^15 - 16.
    ("k3", {}, [1 - LN2, LN2 - 0.5, math.exp(15.0) - 16.0]),
    ("low_var_kl", {}, [1 - LN2, LN2 - 0.5, 10.0]),  # verl clamps k3 to [-10, 10]
])
def test_kl_estimators(name, params, want):
  logp = jnp.array([[0.0, LN2, 0.0]])
  ref = jnp.array([[LN2, 0.0, 15.0]])
  out = jax.jit(functools.partial(losses.kl, name, **params))(logp, ref)
  np.testing.assert_allclose(np.asarray(out)[0], want, rtol=1e-5, atol=1e-6)


def test_kl_k3_bounds_the_log_ratio_and_unknown_name():
  # d = 30 is clamped to 20 before exp: e^20 - 20 - 1 stays finite in float32.
  out = jax.jit(losses.kl_k3)(jnp.zeros((1, 1)), jnp.full((1, 1), 30.0))
  assert float(out[0, 0]) == pytest.approx(math.exp(20.0) - 21.0, rel=1e-5)
  with pytest.raises(ValueError, match="low_var_kl"):
    losses.kl("k4", jnp.zeros(1), jnp.zeros(1))


# --------------------------------------------------------------------------- value loss

# Per token (v, old, R), clip 0.5:
#   t0 v=1.0 old=0.8 R=2: v inside [0.3, 1.3] -> 0.5 * 1^2 = 0.5
#   t1 v=2.0 old=1.0 R=3: clip(v) = 1.5; max(1, 2.25) -> 0.5 * 2.25 = 1.125   (clipped term wins)
#   t2 v=2.0 old=1.0 R=0: clip(v) = 1.5; max(4, 2.25) -> 0.5 * 4 = 2.0
#   t3 masked -> 0
VALUES = np.array([[1.0, 2.0, 2.0, 9.0]], np.float32)
OLD_VALUES = np.array([[0.8, 1.0, 1.0, 0.0]], np.float32)
RETURNS = np.array([[2.0, 3.0, 0.0, -9.0]], np.float32)
V_MASK = np.array([[1, 1, 1, 0]])


@pytest.mark.parametrize("clip,want_loss,want_grad,want_frac", [
    (0.5, [0.5, 1.125, 2.0, 0.0], [-1.0, 0.0, 2.0, 0.0], 1 / 3),  # d/dv: v - R, or 0 if clipped
    (None, [0.5, 0.5, 2.0, 0.0], [-1.0, -1.0, 2.0, 0.0], 0.0),
])
def test_value_loss(clip, want_loss, want_grad, want_frac):
  @jax.jit
  def f(v_bt):
    loss_bt, metrics = losses.value_loss(v_bt, OLD_VALUES, RETURNS, V_MASK, clip=clip)
    return jnp.sum(loss_bt), (loss_bt, metrics)

  (_, (loss_bt, metrics)), grad_bt = jax.value_and_grad(f, has_aux=True)(jnp.asarray(VALUES))
  np.testing.assert_allclose(np.asarray(loss_bt)[0], want_loss, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grad_bt)[0], want_grad, atol=1e-6)
  assert float(metrics["vf_clip_frac"]) == pytest.approx(want_frac)


# --------------------------------------------------------------------------- aggregation

# Row 0: tokens 1, 2, 3 (padding 100); row 1: token 4; row 2: all padding (batch filler).
AGG_LOSS = np.array([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0], [100.0] * 4], np.float32)
AGG_MASK = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
AGG_PARAMS = {"token-mean": {}, "seq-mean-token-mean": {}, "seq-mean-token-sum-norm": {"norm": 4.0}}


@pytest.mark.parametrize("mode,want_sum,want_count", [
    ("token-mean", 10.0, 4.0),  # 1 + 2 + 3 + 4 over 4 tokens
    ("seq-mean-token-mean", 6.0, 2.0),  # 6/3 + 4/1 over 2 sequences (row 2 is not one)
    ("seq-mean-token-sum-norm", 2.5, 2.0),  # (6 + 4) / norm 4 over 2 sequences
])
def test_aggregations(mode, want_sum, want_count):
  f = jax.jit(functools.partial(losses.aggregate, mode, **AGG_PARAMS[mode]))
  total, count = f(AGG_LOSS, AGG_MASK)
  assert (float(total), float(count)) == pytest.approx((want_sum, want_count), abs=1e-6)


def test_registries_cover_all_modes():
  assert set(AGG_PARAMS) == set(losses.AGGREGATIONS)
  assert set(losses.KL_ESTIMATORS) == {"k1", "k2", "k3", "low_var_kl"}
  assert set(advantages.ADVANTAGES) == {"grpo", "drgrpo", "rloo", "gae"}
  with pytest.raises(ValueError, match="token-mean"):
    losses.aggregate("seq-sum", AGG_LOSS, AGG_MASK)


@pytest.mark.parametrize("mode", sorted(AGG_PARAMS))
def test_aggregation_is_exact_across_microbatches(mode):
  """1 vs 4 microbatches of a toy linear model: same (sum, count) totals, same gradient."""
  rng = np.random.default_rng(2)
  lengths = np.array([6, 1, 3, 6, 2, 5, 4, 1])  # unequal token counts per microbatch of 2
  x_btd = rng.normal(size=(8, 6, 3)).astype(np.float32)
  y_bt = rng.normal(size=(8, 6)).astype(np.float32)
  mask_bt = np.arange(6)[None, :] < lengths[:, None]
  w_d = jnp.array([0.3, -0.2, 0.5])
  agg = functools.partial(losses.aggregate, mode, **AGG_PARAMS[mode])

  @jax.jit
  def sum_and_grad(w, x, y, m):
    def loss_sum(w):
      total, count = agg(jnp.square(x @ w - y), m)
      return total, count
    return jax.value_and_grad(loss_sum, has_aux=True)(w)

  (full_sum, full_count), full_grad = sum_and_grad(w_d, x_btd, y_bt, mask_bt)
  parts = [sum_and_grad(w_d, x_btd[i:i + 2], y_bt[i:i + 2], mask_bt[i:i + 2])
           for i in range(0, 8, 2)]
  acc_sum = sum(float(s) for (s, _), _ in parts)
  acc_count = sum(float(c) for (_, c), _ in parts)
  acc_grad = sum(np.asarray(g) for _, g in parts)
  assert acc_count == float(full_count)
  assert acc_sum == pytest.approx(float(full_sum), rel=1e-6)
  np.testing.assert_allclose(acc_grad / acc_count, np.asarray(full_grad) / float(full_count),
                             rtol=1e-5)
  if mode == "token-mean":
    # The naive alternative, a mean of per-microbatch means, is measurably wrong here.
    mean_of_means = np.mean([float(s) / float(c) for (s, c), _ in parts])
    assert abs(mean_of_means - float(full_sum) / float(full_count)) > 1e-3
  if mode == "seq-mean-token-mean":
    # The documented limit: splitting along time breaks the per-sequence means.
    (head, _), _ = sum_and_grad(w_d, x_btd[:, :3], y_bt[:, :3], mask_bt[:, :3])
    (tail, _), _ = sum_and_grad(w_d, x_btd[:, 3:], y_bt[:, 3:], mask_bt[:, 3:])
    assert abs(float(head) + float(tail) - float(full_sum)) > 1e-3
