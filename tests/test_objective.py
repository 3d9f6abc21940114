"""The jitted GTAlign objective: welfare -> (KL-penalised) reward -> group advantages."""

import math

import jax
import numpy as np

from gtalign.rl import objective


def _batch():
  return {"user_b": np.asarray([0.81, 0.25, 0.49, 0.0], np.float32),
          "llm_b": np.asarray([0.25, 0.25, 0.36, 0.64], np.float32),
          "reward_valid_b": np.ones(4, np.float32), "source_b": np.zeros(4, np.int32),
          "loss_mask_bc": np.asarray([[1, 1, 0]] * 4, np.float32),
          "old_logp_bc": np.asarray([[-1.0, -2.0, -9.0]] * 4, np.float32),
          "ref_logp_bc": np.asarray([[-1.5, -2.0, -9.0]] * 4, np.float32)}


def test_cobb_douglas_welfare_and_grpo_advantages():
  cfg = objective.ObjectiveConfig(group_size=2, num_sources=1)
  out = jax.jit(lambda b: objective.welfare_advantages(cfg, b))(_batch())
  # sqrt(U L): sqrt(.81*.25)=.45, sqrt(.25*.25)=.25, sqrt(.49*.36)=.42, sqrt(0*.64)=0
  np.testing.assert_allclose(out["reward_b"], [0.45, 0.25, 0.42, 0.0], atol=1e-6)
  # groups (0.45, 0.25) and (0.42, 0): each member is one population std from its group mean
  np.testing.assert_allclose(out["adv_b"], [1, -1, 1, -1], atol=1e-4)


def test_kl_in_the_reward_is_subtracted_per_sequence():
  cfg = objective.ObjectiveConfig(group_size=2, num_sources=1, kl_coef=0.1, kl_estimator="k1",
                                  kl_in_reward=True)
  out = objective.welfare_advantages(cfg, _batch())
  # k1 = old - ref per token: 0.5 and 0.0 on the two masked tokens (the third is masked out)
  expected = np.asarray([0.45, 0.25, 0.42, 0.0]) - 0.1 * 0.5
  np.testing.assert_allclose(out["reward_b"], expected, atol=1e-6)
  assert math.isclose(float(out["adv_b"][0]), 1.0, abs_tol=1e-4)
