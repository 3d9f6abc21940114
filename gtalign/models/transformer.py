"""Pure-functional Flax Linen decoder for the Llama and Qwen2 families.

`Decoder(config).apply({"params": params}, tokens_bt, positions_bt, cache)` returns
`(logits_btv, cache)`. Every parameter carries logical axis names (`vocab`, `embed`, `heads`,
`kv_heads`, `head_dim`, `mlp`) so that sharding rules can map them onto any device mesh later.
Parameter names mirror the Hugging Face module names, which keeps checkpoint conversion a table.
"""

from __future__ import annotations

from typing import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gtalign.adapters import quant
from gtalign.models.config import ModelConfig, RopeScaling
from gtalign.models.matmul import dense

_NEG_INF = float(np.finfo(np.float32).min)


class KVCache(flax.struct.PyTreeNode):
  """Keys and values of every layer, written left to right in slot order.

  All rows share one write offset (`length`); prompts are left-padded so that their last tokens
  line up, and `valid_bs` marks which slots hold real tokens, so padding is never attended to.
  """

  k: tuple[jax.Array, ...]  # per layer: [batch, kv_heads, slots, head_dim]
  v: tuple[jax.Array, ...]
  valid_bs: jax.Array  # [batch, slots] bool
  length: jax.Array  # int32 scalar: slots written so far

  @classmethod
  def init(cls, config: ModelConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
    dtype = jnp.dtype(dtype or config.dtype)
    shape = (batch, config.num_kv_heads, max_len, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return cls(k=zeros, v=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
               valid_bs=jnp.zeros((batch, max_len), bool), length=jnp.zeros((), jnp.int32))

  @property
  def capacity(self) -> int:
    return self.valid_bs.shape[1]


def rope_inverse_frequencies(head_dim: int, theta: float,
                             scaling: RopeScaling | None = None) -> np.ndarray:
  """Inverse frequencies of rotary embeddings, with optional Llama-3 frequency scaling."""
  inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32)
                              / head_dim))
  if scaling is None:
    return inv_freq.astype(np.float32)
  # Llama 3.1+: long wavelengths are slowed by `factor`, short ones kept, the band between
  # interpolated smoothly.
  old_len = scaling.original_max_position_embeddings
  low_wavelen = old_len / scaling.low_freq_factor
  high_wavelen = old_len / scaling.high_freq_factor
  wavelen = 2 * np.pi / inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
  smooth = (old_len / wavelen - scaling.low_freq_factor) / (
      scaling.high_freq_factor - scaling.low_freq_factor)
  smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_tables(positions_bt: jax.Array, config: ModelConfig) -> tuple[jax.Array, jax.Array]:
  """cos and sin [batch, time, 1, head_dim], computed once per forward and shared by layers."""
  inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
  angles_btf = positions_bt[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)
  angles_btd = jnp.concatenate([angles_btf, angles_btf], -1)[:, :, None, :]
  return jnp.cos(angles_btd), jnp.sin(angles_btd)


def apply_rope(x_bthd: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Rotate-half RoPE (the Hugging Face convention), computed in float32."""
  cos, sin = rope
  x = x_bthd.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], -1)
  return (x * cos + rotated * sin).astype(x_bthd.dtype)


class RMSNorm(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), self.config.jnp_param_dtype)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.config.norm_eps)
    return scale.astype(self.config.jnp_dtype) * x32.astype(self.config.jnp_dtype)


class Linear(nn.Module):
  """An einsum against one named parameter, accumulating in float32.

  bfloat16 matmuls are only fast on CPUs (and exact enough everywhere) when they accumulate in
  float32, which `nn.DenseGeneral` does not let us ask for. A block projection may hold its
  kernel quantized (`config.base_quant`: `kernel_codes` and `kernel_absmax`, dequantized here)
  and a low-rank adapter (`lora_a` [in, r], `lora_b` [r, out], float32, B initialised to zero
  so that a fresh adapter leaves every output as it was): y = x W + (alpha / r) (x A) B.
  """

  config: ModelConfig
  equation: str
  shape: Sequence[int]
  axes: Sequence[str]
  bias_axes: Sequence[str] | None = None

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    # every equation contracts x's trailing dims with the kernel's leading ones: one 2-D matmul
    lead, n_in = x.shape[:2], x.ndim - 2
    k_in, n_out = int(np.prod(self.shape[:n_in])), int(np.prod(self.shape[n_in:]))
    # a flattened group of dims has no single logical axis: it stays unsharded
    in_axis = self.axes[0] if n_in == 1 else None
    out_axis = self.axes[-1] if len(self.shape) - n_in == 1 else None
    x_mk = x.reshape(-1, k_in).astype(cfg.jnp_dtype)
    if cfg.base_quant != "none" and self.name in quant.TARGETS:
      codes_shape, absmax_shape, codes_dtype = quant.code_shapes(cfg.base_quant, k_in, n_out)
      codes = self.param("kernel_codes", nn.with_logical_partitioning(
          nn.initializers.zeros, (in_axis, None)), codes_shape, codes_dtype)
      absmax = self.param("kernel_absmax", nn.with_logical_partitioning(
          nn.initializers.ones, (in_axis, None)), absmax_shape, jnp.float32)
      kernel_kn = quant.dequantize(codes, absmax, cfg.jnp_dtype)
    else:
      fan_in = self.shape[0] if self.axes[0] == "embed" else int(np.prod(self.shape[:-1]))
      kernel = self.param(
          "kernel",
          nn.with_logical_partitioning(nn.initializers.normal(fan_in ** -0.5), tuple(self.axes)),
          tuple(self.shape), cfg.jnp_param_dtype)
      kernel_kn = kernel.reshape(k_in, n_out).astype(cfg.jnp_dtype)
    y = dense(x_mk, kernel_kn, False)
    if cfg.lora_rank and self.name in cfg.lora_targets:
      r = cfg.lora_rank
      a = self.param("lora_a", nn.with_logical_partitioning(lora_a_init, (in_axis, None)),
                     (k_in, r), jnp.float32)
      b = self.param("lora_b", nn.with_logical_partitioning(nn.initializers.zeros,
                                                            (None, out_axis)),
                     (r, n_out), jnp.float32)
      xa_mr = dense(x_mk, a.astype(cfg.jnp_dtype), False).astype(cfg.jnp_dtype)
      y = y + (cfg.lora_alpha / r) * dense(xa_mr, b.astype(cfg.jnp_dtype), False)
    y = y.reshape(*lead, *self.shape[n_in:])
    if self.bias_axes is not None:
      bias_shape = self.shape[len(self.shape) - len(self.bias_axes):]
      bias = self.param("bias",
                        nn.with_logical_partitioning(nn.initializers.zeros, tuple(self.bias_axes)),
                        tuple(bias_shape), cfg.jnp_param_dtype)
      y = y + bias.astype(jnp.float32)
    return y.astype(cfg.jnp_dtype)


# Hugging Face PEFT's default for A (kaiming-uniform with a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))
lora_a_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _attend(q_bkqd, k_bksd, v_bksd, mask_bqs, dtype):
  """Softmax attention of grouped queries over one kv head each; float32 scores."""
  d = q_bkqd.shape[-1]
  scores_bkqs = jnp.einsum("bkqd,bksd->bkqs", q_bkqd, k_bksd.astype(dtype),
                           preferred_element_type=jnp.float32) * (d ** -0.5)
  scores_bkqs = jnp.where(mask_bqs[:, None], scores_bkqs, _NEG_INF)
  probs_bkqs = jax.nn.softmax(scores_bkqs, axis=-1).astype(dtype)
  return jnp.einsum("bkqs,bksd->bkqd", probs_bkqs, v_bksd.astype(dtype),
                    preferred_element_type=jnp.float32).astype(dtype)


def _attend_causal(q_bkgtd, k_bksd, v_bksd, mask_bts, dtype, chunk: int = 128):
  """Causal attention of a whole sequence (no cache) in query chunks of `chunk` positions.

  Queries in positions [lo, hi) can only see keys before hi, so each chunk attends over that
  prefix alone: at 4 chunks the score matrix, its softmax and their gradients shrink to 10/16
  of the square. Equal to `_attend` over everything for every query that sees at least one key.
  """
  b, kv, g, t, d = q_bkgtd.shape
  outs = []
  for lo in range(0, t, chunk):
    hi = min(t, lo + chunk)
    q_bkqd = q_bkgtd[:, :, :, lo:hi].reshape(b, kv, g * (hi - lo), d)
    mask_bqs = jnp.tile(mask_bts[:, lo:hi, :hi], (1, g, 1))
    out_bkqd = _attend(q_bkqd, k_bksd[:, :, :hi], v_bksd[:, :, :hi], mask_bqs, dtype)
    outs.append(out_bkqd.reshape(b, kv, g, hi - lo, d))
  return jnp.concatenate(outs, axis=3)


def _attend_windowed(q_bkqd, k_bksd, v_bksd, mask_bqs, dtype, used, windows):
  """Attend over only the smallest window of cache slots that covers the `used` slots.

  Slots past `used` are masked anyway, so the result equals attending over the whole cache, but
  a decode step then reads keys/values in proportion to the context, not to the cache capacity.
  """
  def branch(w):
    return lambda q, k, v, m: _attend(q, k[:, :, :w], v[:, :, :w], m[..., :w], dtype)

  index = jnp.minimum(jnp.searchsorted(jnp.asarray(windows), used), len(windows) - 1)
  return jax.lax.switch(index, [branch(w) for w in windows], q_bkqd, k_bksd, v_bksd, mask_bqs)


class Attention(nn.Module):
  config: ModelConfig
  windows: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, x_bte, rope, mask_bts, cache_kv):
    cfg = self.config
    e, h, kv, d = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    bias = lambda axes: axes if cfg.qkv_bias else None
    q_bthd = Linear(cfg, "bte,ehd->bthd", (e, h, d), ("embed", "heads", "head_dim"),
                    bias(("heads", "head_dim")), name="q_proj")(x_bte)
    k_btkd = Linear(cfg, "bte,ekd->btkd", (e, kv, d), ("embed", "kv_heads", "head_dim"),
                    bias(("kv_heads", "head_dim")), name="k_proj")(x_bte)
    v_btkd = Linear(cfg, "bte,ekd->btkd", (e, kv, d), ("embed", "kv_heads", "head_dim"),
                    bias(("kv_heads", "head_dim")), name="v_proj")(x_bte)
    q_bthd = apply_rope(q_bthd, rope)
    k_btkd = apply_rope(k_btkd, rope)

    # Attention runs in [batch, kv_heads, ...] layout: batch dims lead in both operands, so the
    # dot products read the cache in place instead of transposing it on every decode step.
    k_bktd = k_btkd.transpose(0, 2, 1, 3)
    v_bktd = v_btkd.transpose(0, 2, 1, 3)
    b, t = q_bthd.shape[:2]
    g = h // kv
    # queries of one kv head grouped together: [b, kv, g*t, d], query index = group * t + position
    q_bkgtd = q_bthd.reshape(b, t, kv, g, d).transpose(0, 2, 3, 1, 4)
    q_bkqd = q_bkgtd.reshape(b, kv, g * t, d)
    if cache_kv is None:  # a whole causal sequence (training, scoring)
      out_bkqd = _attend_causal(q_bkgtd, k_bktd, v_bktd, mask_bts, cfg.jnp_dtype).reshape(
          b, kv, g * t, d)
      new_kv = None
    else:  # write this chunk at the cache offset, then attend to the cache
      mask_bqs = jnp.tile(mask_bts, (1, g, 1))
      cache_k, cache_v, offset = cache_kv
      cache_k = jax.lax.dynamic_update_slice(cache_k, k_bktd.astype(cache_k.dtype),
                                             (0, 0, offset, 0))
      cache_v = jax.lax.dynamic_update_slice(cache_v, v_bktd.astype(cache_v.dtype),
                                             (0, 0, offset, 0))
      new_kv = (cache_k, cache_v)
      if self.windows:
        out_bkqd = _attend_windowed(q_bkqd, cache_k, cache_v, mask_bqs, cfg.jnp_dtype,
                                    offset + t, self.windows)
      else:
        out_bkqd = _attend(q_bkqd, cache_k, cache_v, mask_bqs, cfg.jnp_dtype)
    out_bthd = out_bkqd.reshape(b, kv, g, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
    out_bte = Linear(cfg, "bthd,hde->bte", (h, d, e), ("heads", "head_dim", "embed"),
                     name="o_proj")(out_bthd)
    return out_bte, new_kv


class MLP(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_bte):
    cfg = self.config
    e, f = cfg.embed_dim, cfg.mlp_dim
    gate = Linear(cfg, "bte,ef->btf", (e, f), ("embed", "mlp"), name="gate_proj")(x_bte)
    up = Linear(cfg, "bte,ef->btf", (e, f), ("embed", "mlp"), name="up_proj")(x_bte)
    return Linear(cfg, "btf,fe->bte", (f, e), ("mlp", "embed"), name="down_proj")(
        nn.silu(gate) * up)


class DecoderBlock(nn.Module):
  config: ModelConfig
  windows: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, x_bte, rope, mask_bts, cache_kv):
    attn_out, new_kv = Attention(self.config, self.windows, name="self_attn")(
        RMSNorm(self.config, name="input_layernorm")(x_bte), rope, mask_bts, cache_kv)
    x_bte = x_bte + attn_out
    x_bte = x_bte + MLP(self.config, name="mlp")(
        RMSNorm(self.config, name="post_attention_layernorm")(x_bte))
    return x_bte, new_kv


class Decoder(nn.Module):
  """Token ids in, float32 logits out; an optional KVCache makes incremental decoding cheap.

  `cache_windows` (ascending, the last one equal to the cache capacity) lets cached calls attend
  over only the smallest window of slots in use; see `_attend_windowed`.
  """

  config: ModelConfig
  cache_windows: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, tokens_bt, positions_bt, cache: KVCache | None = None,
               attention_mask_bt=None, return_hidden: bool = False):
    """`attention_mask_bt` (True = real token) defaults to all tokens being real.

    `return_hidden=True` returns the final-norm hidden states instead of logits, so a trainer can
    apply `lm_head` (below) only where it needs log-probs: the vocabulary projection is the
    largest matmul of a small model.
    """
    cfg = self.config
    b, t = tokens_bt.shape
    if attention_mask_bt is None:
      attention_mask_bt = jnp.ones((b, t), bool)
    attention_mask_bt = attention_mask_bt.astype(bool)

    embed = nn.Embed(cfg.vocab_size, cfg.embed_dim, dtype=cfg.jnp_dtype,
                     param_dtype=cfg.jnp_param_dtype,
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(cfg.embed_dim ** -0.5), ("vocab", "embed")),
                     name="embed_tokens")
    x_bte = embed(tokens_bt)

    if cache is None:
      q_slot_t = jnp.arange(t)
      valid_bs = attention_mask_bt
      offset = None
    else:
      offset = cache.length
      q_slot_t = offset + jnp.arange(t)
      valid_bs = jax.lax.dynamic_update_slice(cache.valid_bs, attention_mask_bt, (0, offset))
    s = valid_bs.shape[1]
    causal_ts = jnp.arange(s)[None, :] <= q_slot_t[:, None]
    mask_bts = causal_ts[None] & valid_bs[:, None, :]

    rope = rope_tables(positions_bt, cfg)
    block_cls = nn.remat(DecoderBlock) if cfg.remat else DecoderBlock
    new_k, new_v = [], []
    for i in range(cfg.num_layers):
      layer_kv = None if cache is None else (cache.k[i], cache.v[i], offset)
      x_bte, kv_out = block_cls(cfg, self.cache_windows, name=f"layers_{i}")(
          x_bte, rope, mask_bts, layer_kv)
      if kv_out is not None:
        new_k.append(kv_out[0])
        new_v.append(kv_out[1])
    x_bte = RMSNorm(cfg, name="norm")(x_bte)
    if return_hidden:
      new_cache = None if cache is None else KVCache(k=tuple(new_k), v=tuple(new_v),
                                                     valid_bs=valid_bs, length=cache.length + t)
      return x_bte, new_cache

    if cfg.tie_embeddings:
      table_ve = embed.embedding
      logits_btv = jnp.einsum("bte,ve->btv", x_bte, table_ve.astype(cfg.jnp_dtype),
                              preferred_element_type=jnp.float32)
    else:
      logits_btv = Linear(cfg, "bte,ev->btv", (cfg.embed_dim, cfg.vocab_size),
                          ("embed", "vocab"), name="lm_head")(x_bte).astype(jnp.float32)
    if cache is None:
      return logits_btv, None
    return logits_btv, KVCache(k=tuple(new_k), v=tuple(new_v), valid_bs=valid_bs,
                               length=cache.length + t)


def init_params(config: ModelConfig, rng: jax.Array):
  """Random parameters (plain arrays, no partitioning boxes)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  boxed = Decoder(config).init(rng, tokens, tokens)["params"]
  return nn.unbox(boxed)


def logical_axes(config: ModelConfig):
  """PartitionSpecs of logical axis names, in the same tree structure as the params."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  abstract = jax.eval_shape(lambda r: Decoder(config).init(r, tokens, tokens)["params"],
                            jax.random.PRNGKey(0))
  return nn.get_partition_spec(abstract)


def positions_from_mask(attention_mask_bt: jax.Array) -> jax.Array:
  """RoPE positions for left-padded rows: 0 at each row's first real token."""
  mask = attention_mask_bt.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)


def lm_head(config: ModelConfig, params, hidden_bte: jax.Array) -> jax.Array:
  """Float32 logits from final hidden states (the projection `Decoder` applies last)."""
  if config.tie_embeddings:
    weight, tied = params["embed_tokens"]["embedding"], True  # [vocab, embed]
  else:
    weight, tied = params["lm_head"]["kernel"], False  # [embed, vocab]
  b, t, e = hidden_bte.shape
  logits = dense(hidden_bte.reshape(b * t, e).astype(config.jnp_dtype),
                 weight.astype(config.jnp_dtype), tied)
  return logits.reshape(b, t, -1)
