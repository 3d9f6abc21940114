"""PPO's value model: the policy's decoder with a scalar head, its own optimizer and update."""

from __future__ import annotations

import functools

import jax

from gtalign.models import value
from gtalign.models.transformer import logical_axes
from gtalign.parallel.mesh import param_shardings
from gtalign.rl import objective, train_state, update


def make_critic(config, model_config, policy_params, ocfg, mesh, data_sharding, trainable):
  """{"state", "update", "values"}: the critic initialised from the policy's host params, with
  the policy's trainable mask for its decoder (its head always trains)."""
  params = value.critic_params_from_policy(policy_params)
  shardings = param_shardings(mesh, value.critic_logical_axes(logical_axes(model_config)),
                              shapes=params)
  mask = {"decoder": trainable, "kernel": True, "bias": True}
  tx = train_state.make_optimizer(
      train_state.make_schedule(config.rl.critic_lr, warmup_steps=config.rl.warmup_steps),
      weight_decay=config.rl.weight_decay, grad_clip=config.rl.grad_clip, trainable=mask)
  state_shardings = train_state.train_state_shardings(params, tx, mesh, shardings)
  return {
      "state": train_state.create_train_state(params, tx, mesh, shardings),
      "update": update.make_update_step(
          functools.partial(objective.critic_loss, model_config, ocfg), tx, state_shardings,
          data_sharding, num_microbatches=config.rl.num_microbatches, trainable=mask,
          prepare_batch=functools.partial(objective.gae_advantages, ocfg)),
      "values": jax.jit(functools.partial(objective.window_values, model_config),
                        out_shardings=data_sharding),
  }
