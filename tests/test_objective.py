"""The jitted GTAlign objective: welfare -> (KL-penalised) reward -> group advantages."""

import math

import jax
import numpy as np
import pytest

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


@pytest.mark.parametrize("name, key", objective.ANCHORS)
def test_an_anchor_kl_holds_only_the_anchored_tokens_to_the_reference(name, key):
  """rl.thinking_kl and rl.other_row_kl: the tokens their mask marks (the <thinking> block, or
  the cells of the row the key does not read, out of the policy loss) add their KL to the
  reference and nothing else; at 0 they do not count at all, and the token mean's count stays
  the trained tokens'."""
  import jax.numpy as jnp
  from gtalign.models.config import get_preset
  from gtalign.models.transformer import init_params
  from gtalign.rl import losses
  from gtalign.training import rollout
  config = get_preset("tiny-llama").replace(vocab_size=64, dtype="float32")
  params = init_params(config, jax.random.PRNGKey(0))
  prompts = [[1, 2, 3], [4, 5]]
  completions = [[6, 7, 8, 9, 10], [11, 12, 13]]
  batch = rollout.sequence_batch(prompts, completions, 0)
  anchor = np.zeros_like(batch["loss_mask_bc"])
  anchor[:, :2] = 1.0  # the first two tokens of each completion: "the reading"
  batch.update(loss_mask_bc=batch["loss_mask_bc"] - anchor, **{key: anchor},
               adv_b=np.asarray([1.0, -1.0], np.float32),
               reward_valid_b=np.ones(2, np.float32))
  logp = np.asarray(objective.sequence_logprobs(config, params, batch))
  batch["old_logp_bc"] = logp
  batch["ref_logp_bc"] = (logp - 0.3 * anchor).astype(np.float32)  # the reference differs
  batch = {k: jnp.asarray(v) for k, v in batch.items()}

  def loss(coef, b=batch):
    cfg = objective.ObjectiveConfig(group_size=2, num_sources=1, **{name: coef})
    return objective.policy_loss(config, cfg, params, b)

  plain_sum, plain_count, _ = loss(0.0)
  held_sum, held_count, metrics = loss(0.5)
  assert float(held_count) == float(plain_count) == 4.0  # 3 + 1 trained tokens
  # k3 of a 0.3 log-ratio on each of the 4 anchored tokens, weighed 0.5
  k3 = float(losses.kl_k3(jnp.zeros(()), jnp.asarray(-0.3)))
  assert math.isclose(float(metrics[name]), k3, rel_tol=1e-4)
  assert math.isclose(float(held_sum) - float(plain_sum), 0.5 * 4 * k3, rel_tol=1e-3)
  # the policy loss never reads the anchored tokens' advantages or sampler log-probs
  moved = dict(batch, old_logp_bc=batch["old_logp_bc"] - 2.0 * batch[key])
  assert float(loss(0.0, moved)[0]) == float(plain_sum)
  grad = jax.grad(lambda p: objective.policy_loss(
      config, objective.ObjectiveConfig(group_size=2, num_sources=1, **{name: 0.5}), p,
      dict(batch, loss_mask_bc=jnp.zeros_like(batch["loss_mask_bc"])))[0])(params)
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grad))  # the KL alone pulls


@pytest.mark.parametrize("name", [name for name, _ in objective.ANCHORS])
def test_an_anchor_kl_is_refused_where_it_cannot_apply(name):
  with pytest.raises(ValueError, match=name):
    objective.ObjectiveConfig(group_size=2, num_sources=1, loss_agg="seq-mean-token-mean",
                              **{name: 0.1})
  with pytest.raises(ValueError, match=name):
    objective.ObjectiveConfig(group_size=2, num_sources=1, **{name: -1.0})


def test_grade_reading_trains_the_reading_on_its_own_advantage():
  """rl.grade_reading: the reading's tokens move with whether it read the type right (its own
  group-relative advantage), whatever the sample's welfare; the other tokens with welfare's."""
  import jax.numpy as jnp
  from gtalign.models.config import get_preset
  from gtalign.models.transformer import init_params
  from gtalign.training import rollout
  config = get_preset("tiny-llama").replace(vocab_size=64, dtype="float32")
  params = init_params(config, jax.random.PRNGKey(0))
  batch = rollout.sequence_batch([[1, 2, 3], [1, 2, 3]], [[6, 7, 8, 9, 10], [6, 7, 8, 9]], 0)
  reading = np.zeros_like(batch["loss_mask_bc"])
  reading[0, :3] = reading[1, :1] = 1.0  # readings of 3 and 1 tokens; 2 and 3 trained after
  batch.update(loss_mask_bc=batch["loss_mask_bc"] - reading, reading_mask_bc=reading,
               user_b=np.asarray([0.8, 0.2], np.float32), llm_b=np.asarray([0.8, 0.2], np.float32),
               reward_valid_b=np.ones(2, np.float32), source_b=np.zeros(2, np.int32),
               read_right_b=np.asarray([0.0, 1.0], np.float32))  # the worse sample read right
  batch["old_logp_bc"] = np.asarray(objective.sequence_logprobs(config, params, batch))
  cfg = objective.ObjectiveConfig(group_size=2, num_sources=1, grade_reading="group")
  graded = objective.welfare_advantages(cfg, {k: jnp.asarray(v) for k, v in batch.items()})
  np.testing.assert_allclose(graded["adv_b"], [1.0, -1.0], atol=1e-4)
  np.testing.assert_allclose(graded["read_adv_b"], [-1.0, 1.0], atol=1e-4)
  total, count, _ = objective.policy_loss(config, cfg, params, graded)
  # at ratio 1 a token's loss is -its advantage: trained 2 x (+1) + 3 x (-1), reading 3 x (-1)
  # + 1 x (+1) (welfare's advantage on the reading would give +2 there, a sum of -1)
  assert float(count) == 9.0
  assert math.isclose(float(total), -(2 - 3) - (-3 + 1), abs_tol=1e-4)
  plain = objective.ObjectiveConfig(group_size=2, num_sources=1)
  total, count, _ = objective.policy_loss(config, plain, params, graded)
  assert float(count) == 5.0 and math.isclose(float(total), 1.0, abs_tol=1e-4)  # reading out


def test_read_right_names_the_question_type_from_the_thinking():
  from gtalign.training import rollout
  rows = [{"extra_info": {"question_type": "DQ"}}, {"extra_info": {"question_type": "VQ"}},
          {"extra_info": {"question_type": "VQ"}}, {"extra_info": {}}]
  texts = ["<thinking>Definite question (DQ): the day is named.</thinking><payoff>",
           "<thinking>Definite question (DQ).</thinking>",
           "<thinking>Vague question (VQ): no word given.</thinking>",
           "<thinking>Vague question (VQ).</thinking>"]
  right, known = rollout.read_right(rows, texts)
  assert right.tolist() == [1.0, 0.0, 1.0, 0.0] and known.tolist() == [1.0, 1.0, 1.0, 0.0]


def test_absolute_grading_moves_a_group_that_misreads_alike():
  """grade_reading='absolute': +-0.5 by the reading alone, so a prompt whose G samples all
  misread is still pushed (group-relative grading leaves it at 0); unknown modes are refused."""
  batch = dict(_batch(), read_right_b=np.asarray([0.0, 0.0, 1.0, 0.0], np.float32))
  group = objective.welfare_advantages(
      objective.ObjectiveConfig(group_size=2, num_sources=1, grade_reading="group"), batch)
  absolute = objective.welfare_advantages(
      objective.ObjectiveConfig(group_size=2, num_sources=1, grade_reading="absolute"), batch)
  np.testing.assert_allclose(group["read_adv_b"][:2], [0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(absolute["read_adv_b"], [-0.5, -0.5, 0.5, -0.5], atol=1e-6)
  import pytest
  with pytest.raises(ValueError, match="grade_reading"):
    objective.ObjectiveConfig(group_size=2, num_sources=1, grade_reading="yes")
