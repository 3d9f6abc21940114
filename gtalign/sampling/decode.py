"""A small cached decode loop: jitted prefill, jitted one-token step, host-side stopping.

This is the straightforward reference loop used by the sampling CLI; it is exact (greedy matches a
full forward pass) and shares the KV cache layout with the decoder.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from gtalign.models.config import ModelConfig
from gtalign.models.transformer import Decoder, KVCache


@dataclasses.dataclass
class Generation:
  tokens: list[list[int]]  # completion ids per row, stop token excluded
  finish_reasons: list[str]  # "eos" or "length"
  prefill_seconds: float
  decode_seconds: float

  @property
  def num_generated(self) -> int:
    return sum(len(t) for t in self.tokens)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=4)
def _forward(config: ModelConfig, params, tokens_bt, positions_bt, cache, mask_bt):
  return Decoder(config).apply({"params": params}, tokens_bt, positions_bt, cache,
                               attention_mask_bt=mask_bt)


@functools.partial(jax.jit, static_argnums=2)
def _pick(logits_bv, rng, temperature: float):
  if temperature == 0.0:
    return jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, logits_bv / temperature, axis=-1).astype(jnp.int32)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(tokens_bt, mask_bt) with each prompt right-aligned."""
  width = max(len(p) for p in prompts)
  tokens = np.full((len(prompts), width), pad_id, np.int32)
  mask = np.zeros((len(prompts), width), bool)
  for i, p in enumerate(prompts):
    tokens[i, width - len(p):] = p
    mask[i, width - len(p):] = True
  return tokens, mask


def generate(config: ModelConfig, params, prompts: list[list[int]], *, eos_ids, pad_id: int,
             max_new_tokens: int, temperature: float = 0.0, seed: int = 0) -> Generation:
  """Decode up to `max_new_tokens` for each prompt; temperature 0 means greedy."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token")
  tokens_bt, mask_bt = left_pad(prompts, pad_id)
  b, t = tokens_bt.shape
  positions_bt = np.maximum(np.cumsum(mask_bt, axis=1) - 1, 0).astype(np.int32)
  cache = KVCache.init(config, b, t + max_new_tokens)
  eos = np.asarray(sorted(eos_ids), np.int32)
  rng = jax.random.PRNGKey(seed)

  start = time.perf_counter()
  logits, cache = _forward(config, params, tokens_bt, positions_bt, cache, mask_bt)
  next_pos = positions_bt[:, -1] + 1
  rng, key = jax.random.split(rng)
  token_b = np.asarray(_pick(logits[:, -1], key, float(temperature)))
  prefill_seconds = time.perf_counter() - start

  out = [[] for _ in range(b)]
  done = np.zeros(b, bool)
  reasons = ["length"] * b
  start = time.perf_counter()
  for step in range(max_new_tokens):
    for i in range(b):
      if done[i]:
        continue
      if token_b[i] in eos:
        done[i], reasons[i] = True, "eos"
      else:
        out[i].append(int(token_b[i]))
    if done.all() or step == max_new_tokens - 1:
      break
    logits, cache = _forward(config, params, token_b[:, None], next_pos[:, None].astype(np.int32),
                             cache, np.ones((b, 1), bool))
    next_pos = next_pos + 1
    rng, key = jax.random.split(rng)
    token_b = np.asarray(_pick(logits[:, -1], key, float(temperature)))
  return Generation(out, reasons, prefill_seconds, time.perf_counter() - start)
