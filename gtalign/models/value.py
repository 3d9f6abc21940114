"""A value model (critic) for PPO: the decoder's hidden states and a scalar head per token."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gtalign.models.config import ModelConfig
from gtalign.models.transformer import Decoder


class ValueModel(nn.Module):
  """V(s_t) for every position; initialised from a policy's weights (verl does the same)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, tokens_bt, positions_bt, attention_mask_bt=None):
    hidden_bte, _ = Decoder(self.config, name="decoder")(
        tokens_bt, positions_bt, attention_mask_bt=attention_mask_bt, return_hidden=True)
    kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                        (self.config.embed_dim,), jnp.float32)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ()), (),
                      jnp.float32)
    return hidden_bte.astype(jnp.float32) @ kernel + bias


def critic_params_from_policy(policy_params) -> dict:
  """Critic weights: the policy's decoder and a zero value head (initial values are 0)."""
  return {"decoder": policy_params, "kernel": jnp.zeros(
      policy_params["norm"]["scale"].shape, jnp.float32), "bias": jnp.zeros((), jnp.float32)}


def critic_logical_axes(policy_axes) -> dict:
  return {"decoder": policy_axes, "kernel": jax.sharding.PartitionSpec("embed"),
          "bias": jax.sharding.PartitionSpec()}
