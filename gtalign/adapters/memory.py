"""A run's device-memory plan from shapes alone (`jax.eval_shape`, no weights): what the train
state holds (frozen base, trained weights, their float32 gradients and AdamW moments), the
sampler's weights and KV cache, and an estimate of the update step's activations.

The state terms are exact byte counts of the trees the trainer builds (a test checks them
against a real train state). The activation term is an estimate: with `remat`, one saved block
input per layer, one block's recomputed internals (q/k/v/o, the MLP's three products and a
query chunk's attention scores in float32) and the completion window's float32 logits twice
(values and gradient); without `remat`, every block's internals. XLA's own buffers and
fragmentation come on top: `fits` leaves 15% of the card free for them. Sequences are counted
at their longest: the longest prompt (`data.max_prompt_length` when the prompts are not known)
plus `rl.max_new_tokens`.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from gtalign.adapters import lora
from gtalign.models.config import ModelConfig
from gtalign.rl import train_state

HEADROOM = 0.15


@dataclasses.dataclass(frozen=True)
class Plan:
  base: int  # frozen params as stored (quantized codes and scales included)
  trained: int  # params that train (the adapters, or full weights)
  gradients: int  # float32, one per trained param
  optimizer: int  # AdamW's two float32 moments per trained param
  sampler_weights: int  # the sampler's copy in the compute dtype (merged adapters)
  kv_cache: int  # one rollout's cache: every row, every layer, prompt + completion
  activations: int  # one update microbatch (estimate)
  critic: int = 0  # PPO: the value model, a copy of the policy's tree with its own training
  reference: int = 0  # a KL to the starting policy (rl.kl_coef, rl.thinking_kl,
                     # rl.other_row_kl): its copy

  @property
  def total(self) -> int:
    return sum(dataclasses.astuple(self))

  def fits(self, card_bytes: float) -> bool:
    return self.total <= (1 - HEADROOM) * card_bytes

  def line(self, card_gib: float = 24.0) -> str:
    gib = lambda n: f"{n / 2**30:.2f}"
    verdict = "fits" if self.fits(card_gib * 2**30) else "does not fit"
    return (f"gtalign: memory plan on one device (GiB): base {gib(self.base)} + trained "
            f"{gib(self.trained)} + gradients {gib(self.gradients)} + AdamW "
            f"{gib(self.optimizer)} + sampler weights {gib(self.sampler_weights)} + KV cache "
            f"{gib(self.kv_cache)} + activations ~{gib(self.activations)}"
            + (f" + critic {gib(self.critic)}" if self.critic else "")
            + (f" + KL reference {gib(self.reference)}" if self.reference else "") + " = "
            f"{gib(self.total)}: {verdict} a {card_gib:g} GiB card with {HEADROOM:.0%} to spare")


def _bytes(tree) -> int:
  return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def plan(model_config: ModelConfig, config, prompt_length: int | None = None) -> Plan:
  """The plan of a run (`config`: the run's ConfigDict) on a model whose config carries its
  adapters and base storage (`lora.configure`), on one device; `prompt_length` (the run's
  longest tokenized prompt) in place of `data.max_prompt_length` when known."""
  shapes = lora.abstract_params(model_config)
  if lora.enabled(model_config):
    mask = lora.trainable(shapes, config.rl.trainable)
  else:
    mask = train_state.trainable_mask(shapes, config.rl.trainable)
  trained, frozen = lora.select(shapes, mask)
  n_trained = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trained))
  compute = np.dtype(model_config.dtype).itemsize
  plain = lora.plain(model_config)
  sampler = plain.num_params() * compute
  rl, m = config.rl, model_config
  rows = (rl.prompts_per_step + rl.steer_groups + rl.priced_groups) * rl.num_samples
  prompt = prompt_length or config.data.max_prompt_length
  # a dialogue's every later turn adds about a prompt (the user's reply inside the game's
  # instruction) and a completion; all of it after the first prompt is the completion window
  length = rl.max_turns * (prompt + rl.max_new_tokens)
  window = length - prompt
  kv = rows * m.num_layers * 2 * m.num_kv_heads * m.head_dim * length * compute
  micro = max(1, rows // rl.num_microbatches)
  tokens = micro * length
  block = tokens * (2 * m.num_heads * m.head_dim + 2 * m.num_kv_heads * m.head_dim
                    + 3 * m.mlp_dim + 4 * m.embed_dim) * compute
  # causal attention in query chunks: about half the square of scores and probabilities
  scores = micro * m.num_heads * length * (length + 128) // 2 * 4 * 2
  # the backward pass reaches down to the lowest block with a trained weight
  depth = m.num_layers - min((int(k.split("_")[1]) for k in trained if k.startswith("layers_")),
                             default=m.num_layers)
  if any(not k.startswith("layers_") for k in trained if k not in ("norm", "lm_head")):
    depth = m.num_layers  # trained embeddings: every block
  saved = depth * tokens * m.embed_dim * compute
  activations = (saved + block + scores if m.remat else depth * (block + scores))
  activations += 2 * micro * window * m.vocab_size * 4
  state = _bytes(frozen) + _bytes(trained) + 12 * n_trained
  # with adapters the reference is the same base with the adapters off: no copy
  copied = (rl.kl_coef or rl.thinking_kl or rl.other_row_kl) and not lora.enabled(model_config)
  return Plan(base=_bytes(frozen), trained=_bytes(trained), gradients=4 * n_trained,
              optimizer=8 * n_trained, sampler_weights=sampler, kv_cache=kv,
              activations=int(activations), critic=state if rl.algorithm == "ppo" else 0,
              reference=_bytes(shapes) if copied else 0)
