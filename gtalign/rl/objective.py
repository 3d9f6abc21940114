"""The jitted GTAlign objectives: welfare -> advantages -> clipped policy loss, and SFT.

`welfare_advantages` runs inside the jitted update on the whole batch (groups must not be split by
microbatching): realised U and L per row become welfare (a registered aggregation), are normalised
per data source, and turn into group-relative advantages. `policy_loss` is the per-microbatch
(sum, count) loss the update step accumulates.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from gtalign.game import welfare
from gtalign.models.config import ModelConfig
from gtalign.models.transformer import Decoder, lm_head
from gtalign.rl import advantages, losses


# how rl.grade_reading turns "the reading named the question's type" into the reading's advantage:
# off (the reading is not trained), group (relative within the prompt's G samples: a group that
# reads alike learns nothing, lever g1), absolute (right +0.5, wrong -0.5: a prompt every sample
# misreads is still pushed off its reading)
GRADINGS = ("off", "group", "absolute")


# (coefficient's name, the batch's mask): tokens held to the reference by their KL alone
ANCHORS = (("thinking_kl", "anchor_mask_bc"), ("other_row_kl", "other_row_mask_bc"))


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """Static settings of the RL objective (hashable: part of the compiled program)."""

  group_size: int
  num_sources: int
  advantage: str = "grpo"
  adv_std_floor: float = 0.0  # grpo only: divide by max(group std, floor)
  temperature: float = 1.0  # the sampler's: log-probs compared with its own are of logits / T
  # > 0: the sampler's T on the tokens the batch's `hot_bc` marks (its span_temperature's span,
  # rl.table_temperature): their log-probs are of logits / this
  span_temperature: float = 0.0
  welfare: str = "cobb_douglas"
  welfare_alpha: float = 0.5
  normalisation: str = "none"
  clip_low: float = 0.2
  clip_high: float = 0.2
  dual_clip: float | None = 3.0
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  kl_in_reward: bool = False  # KL as a per-sequence reward penalty instead of a loss term
  # KL to the reference on the tokens the batch's `anchor_mask_bc` marks (the <thinking> block
  # left out of the policy loss): each weighs this much against a trained token's loss
  thinking_kl: float = 0.0
  # the same on the tokens `other_row_mask_bc` marks: the cells of the table's row that the
  # sample's key does not read (rollout.mask_other_row), kept as the starting policy writes them
  other_row_kl: float = 0.0
  # the tokens the batch's `reading_mask_bc` marks (the <thinking> block) train on an advantage
  # of their own from `read_right_b` (did it name the question's type): GRADINGS
  grade_reading: str = "off"
  entropy_coef: float = 0.0
  loss_agg: str = "token-mean"
  loss_agg_norm: float = 1.0  # seq-mean-token-sum-norm's constant (max response tokens)
  gamma: float = 1.0  # GAE (PPO with a critic)
  lam: float = 1.0
  value_clip: float = 0.5

  def __post_init__(self):
    for name, registry in (("advantage", advantages.ADVANTAGES),
                           ("welfare", welfare.AGGREGATIONS),
                           ("normalisation", welfare.NORMALISATIONS),
                           ("loss_agg", losses.AGGREGATIONS),
                           ("kl_estimator", losses.KL_ESTIMATORS)):
      if getattr(self, name) not in registry:
        raise ValueError(f"unknown {name} {getattr(self, name)!r}; known: {sorted(registry)}")
    if self.adv_std_floor < 0 or (self.adv_std_floor and self.advantage != "grpo"):
      raise ValueError(f"adv_std_floor={self.adv_std_floor} needs advantage 'grpo' and a value "
                       f">= 0; got advantage {self.advantage!r}")
    if self.temperature < 0:
      raise ValueError(f"temperature={self.temperature}; expected >= 0")
    if self.span_temperature < 0 or (self.span_temperature and not self.temperature):
      raise ValueError(f"span_temperature={self.span_temperature}; expected >= 0, and a "
                       f"sampling temperature > 0 (got {self.temperature})")
    if self.grade_reading not in GRADINGS:
      raise ValueError(f"unknown grade_reading {self.grade_reading!r}; known: {list(GRADINGS)}")
    if self.grade_reading == "group" and self.advantage == "gae":
      raise ValueError("grade_reading 'group' needs a group-relative advantage (grpo, drgrpo, "
                       "rloo), not a critic's 'gae'")
    for name, _ in ANCHORS:
      coef = getattr(self, name)
      if coef < 0 or (coef and self.loss_agg != "token-mean"):
        raise ValueError(f"{name}={coef} needs a value >= 0 and loss_agg 'token-mean'; got "
                         f"loss_agg {self.loss_agg!r}")


def welfare_of(cfg: ObjectiveConfig, user_b, llm_b):
  params = {"alpha": cfg.welfare_alpha} if cfg.welfare == "cobb_douglas" else {}
  return welfare.aggregate(cfg.welfare, user_b, llm_b, **params)


def _penalised_welfare(cfg: ObjectiveConfig, batch: dict):
  """Welfare of each row, minus kl_coef * (summed KL to the reference) when KL is in the reward."""
  reward_b = welfare_of(cfg, batch["user_b"], batch["llm_b"])
  if cfg.kl_coef and cfg.kl_in_reward:
    kl_bc = losses.kl(cfg.kl_estimator, batch["old_logp_bc"], batch["ref_logp_bc"])
    reward_b = reward_b - cfg.kl_coef * jnp.sum(kl_bc * batch["loss_mask_bc"], axis=1)
  return reward_b


def welfare_advantages(cfg: ObjectiveConfig, batch: dict) -> dict:
  """Adds `reward_b` (normalised welfare) and `adv_b` to the batch, from U, L, validity, source."""
  valid_b = batch["reward_valid_b"] > 0
  reward_b = _penalised_welfare(cfg, batch)
  reward_b = welfare.normalise(cfg.normalisation, reward_b, batch["source_b"], valid_b,
                               cfg.num_sources)
  extra = {"std_floor": cfg.adv_std_floor} if cfg.advantage == "grpo" else {}
  adv_b = advantages.get(cfg.advantage)(reward_b, cfg.group_size, valid_b, **extra)
  out = dict(batch, reward_b=reward_b, adv_b=adv_b)
  if cfg.grade_reading == "group":  # relative within its group, like welfare's
    out["read_adv_b"] = advantages.get(cfg.advantage)(batch["read_right_b"], cfg.group_size,
                                                      valid_b, **extra)
  elif cfg.grade_reading == "absolute":  # right +0.5, wrong -0.5, whatever the group did
    out["read_adv_b"] = (batch["read_right_b"] - 0.5) * valid_b
  return out


def window_logits(model_config: ModelConfig, params, mb: dict, temperature: float = 1.0,
                  span_temperature: float = 0.0):
  """Logits [batch, window, vocab] predicting each completion token (see rollout.sequence_batch).

  Only the completion window goes through the vocabulary projection; the prompt's positions
  need hidden states for attention but no logits. With a sampling `temperature` T > 0 they are
  divided by T: the sampler stores log_softmax(logits / T) (strategies.trainer_logprobs), and
  the policy ratio, KL and entropy must compare the same distribution (T = 0, greedy: unscaled).
  With a `span_temperature`, the tokens `mb["hot_bc"]` marks were drawn at it instead.
  """
  hidden_bte, _ = Decoder(model_config).apply(
      {"params": params}, mb["inputs_bt"], mb["positions_bt"],
      attention_mask_bt=mb["attention_mask_bt"], return_hidden=True)
  window = mb["targets_bc"].shape[1]
  index_bc = mb["window_start_b"][:, None] + jnp.arange(window)[None, :]
  hidden_bce = jnp.take_along_axis(hidden_bte, index_bc[:, :, None], axis=1)
  logits_bcv = lm_head(model_config, params, hidden_bce)
  if span_temperature and "hot_bc" in mb:
    temperature_bc = jnp.where(mb["hot_bc"] > 0, span_temperature, temperature or 1.0)
    return logits_bcv / temperature_bc[:, :, None].astype(logits_bcv.dtype)
  return logits_bcv if temperature in (0.0, 1.0) else logits_bcv / temperature


def gae_advantages(cfg: ObjectiveConfig, batch: dict) -> dict:
  """PPO: welfare as a terminal reward on each completion's last token, GAE over the critic's
  values (gamma = lambda = 1 by default), advantages whitened over the batch's tokens."""
  valid_b = batch["reward_valid_b"] > 0
  reward_b = _penalised_welfare(cfg, batch)
  reward_b = welfare.normalise(cfg.normalisation, reward_b, batch["source_b"], valid_b,
                               cfg.num_sources)
  mask_bc = batch["loss_mask_bc"] * batch["reward_valid_b"][:, None]
  last_b = jnp.maximum(jnp.sum(batch["loss_mask_bc"], axis=1).astype(jnp.int32) - 1, 0)
  reward_bc = jax.nn.one_hot(last_b, mask_bc.shape[1]) * reward_b[:, None] * mask_bc
  adv_bc, returns_bc = advantages.gae(reward_bc, batch["old_values_bc"], mask_bc, cfg.gamma,
                                     cfg.lam)
  return dict(batch, reward_b=reward_b, adv_bc=advantages.whiten(adv_bc, mask_bc),
              returns_bc=returns_bc)


def window_values(model_config: ModelConfig, critic_params, mb: dict):
  """V at the states that emit each completion token (the completion window)."""
  from gtalign.models.value import ValueModel
  values_bt = ValueModel(model_config).apply({"params": critic_params}, mb["inputs_bt"],
                                             mb["positions_bt"], mb["attention_mask_bt"])
  window = mb["targets_bc"].shape[1]
  index_bc = mb["window_start_b"][:, None] + jnp.arange(window)[None, :]
  return jnp.take_along_axis(values_bt, index_bc, axis=1)


def critic_loss(model_config: ModelConfig, cfg: ObjectiveConfig, critic_params, mb: dict):
  """Clipped value loss against the GAE returns (sum, count, metrics)."""
  values_bc = window_values(model_config, critic_params, mb)
  mask_bc = mb["loss_mask_bc"] * mb["reward_valid_b"][:, None]
  loss_bc, metrics = losses.value_loss(values_bc, mb["old_values_bc"], mb["returns_bc"],
                                       mask_bc, cfg.value_clip)
  loss_sum, count = losses.aggregate("token-mean", loss_bc, mask_bc)
  metrics["value_mean"] = jnp.sum(values_bc * mask_bc) / jnp.maximum(jnp.sum(mask_bc), 1.0)
  return loss_sum, count, metrics


def policy_loss(model_config: ModelConfig, cfg: ObjectiveConfig, params, mb: dict):
  """(loss_sum, count, metrics) of one microbatch; rows with a failed judge are masked out."""
  logits_bcv = window_logits(model_config, params, mb, cfg.temperature, cfg.span_temperature)
  logp_bc = losses.token_logprobs(logits_bcv, mb["targets_bc"])
  mask_bc = mb["loss_mask_bc"] * mb["reward_valid_b"][:, None]
  adv_bc = (mb["adv_bc"] if "adv_bc" in mb  # PPO: per-token GAE advantages
            else advantages.broadcast_to_tokens(mb["adv_b"], mask_bc))
  if cfg.grade_reading != "off":  # the reading joins the loss with its own advantage
    reading_bc = mb["reading_mask_bc"] * mb["reward_valid_b"][:, None]
    adv_bc = adv_bc + advantages.broadcast_to_tokens(mb["read_adv_b"], reading_bc)
    mask_bc = mask_bc + reading_bc
  loss_bc, metrics = losses.ppo_policy_loss(logp_bc, mb["old_logp_bc"], adv_bc, mask_bc,
                                            cfg.clip_low, cfg.clip_high, cfg.dual_clip)
  if cfg.kl_coef and not cfg.kl_in_reward:
    kl_bc = losses.kl(cfg.kl_estimator, logp_bc, mb["ref_logp_bc"])
    loss_bc = loss_bc + cfg.kl_coef * kl_bc
    metrics["kl"] = jnp.sum(kl_bc * mask_bc) / jnp.maximum(jnp.sum(mask_bc), 1.0)
  if cfg.entropy_coef:
    ent_bc = losses.entropy(logits_bcv)
    loss_bc = loss_bc - cfg.entropy_coef * ent_bc
    metrics["entropy"] = jnp.sum(ent_bc * mask_bc) / jnp.maximum(jnp.sum(mask_bc), 1.0)
  agg_params = {"norm": cfg.loss_agg_norm} if cfg.loss_agg == "seq-mean-token-sum-norm" else {}
  loss_sum, count = losses.aggregate(cfg.loss_agg, loss_bc, mask_bc, **agg_params)
  for name, key in ANCHORS:
    coef = getattr(cfg, name)
    if not coef:
      continue
    # the reading (or the other row) is held to the warm start's by its KL alone: no
    # advantage reaches it, and its sum joins the trained tokens' (the count stays theirs)
    anchor_bc = mb[key] * mb["reward_valid_b"][:, None]
    anchor_kl_bc = losses.kl(cfg.kl_estimator, logp_bc, mb["ref_logp_bc"])
    loss_sum = loss_sum + coef * jnp.sum(anchor_kl_bc * anchor_bc)
    metrics[name] = jnp.sum(anchor_kl_bc * anchor_bc) / jnp.maximum(jnp.sum(anchor_bc), 1.0)
  # how far the sampler's log-probs are from the trainer's (dtype, kernels): should be ~0
  gap_bc = jnp.abs(jax.lax.stop_gradient(logp_bc) - mb["old_logp_bc"]) * mask_bc
  metrics["sampler_logp_gap"] = jnp.sum(gap_bc) / jnp.maximum(jnp.sum(mask_bc), 1.0)
  return loss_sum, count, metrics


def sft_loss(model_config: ModelConfig, params, mb: dict, scale: float = 1.0):
  """(token NLL sum, token count, metrics) of one microbatch of teacher-forced traces; `scale`
  multiplies the sum (not the count): a term that shares an optimizer's moments with another
  loss (`rl.scan_weight`) pulls on them this much less."""
  logits_bcv = window_logits(model_config, params, mb)
  loss_sum, count = losses.sft_loss(logits_bcv, mb["targets_bc"], mb["loss_mask_bc"])
  return scale * loss_sum, count, {}


def sequence_logprobs(model_config: ModelConfig, params, batch: dict, temperature: float = 1.0,
                      span_temperature: float = 0.0):
  """Teacher-forced log-probs of the completion window (the KL reference), at the sampler's
  temperature (per token, with a span's) so they compare with the policy's and the sampler's."""
  return losses.token_logprobs(
      window_logits(model_config, params, batch, temperature, span_temperature),
      batch["targets_bc"])
