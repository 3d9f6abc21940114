"""Decoder configuration and named presets (Llama and Qwen2 families)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

ARCHITECTURES = ("llama", "qwen2")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3 style frequency-dependent RoPE scaling ("rope_type": "llama3")."""

  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static shape and numerics of a decoder; hashable so it can be a static jit argument."""

  architecture: str  # "llama" or "qwen2"
  vocab_size: int
  embed_dim: int
  mlp_dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  norm_eps: float = 1e-5
  tie_embeddings: bool = False
  qkv_bias: bool = False
  max_position_embeddings: int = 8192
  param_dtype: str = "float32"
  dtype: str = "float32"  # compute dtype of activations and matmuls
  remat: bool = False
  # low-rank adapters on the named projections (gtalign.adapters.lora); rank 0 = none
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = ()
  base_quant: str = "none"  # the block projections stored as "nf4" or "int8" (adapters.quant)

  def __post_init__(self):
    if self.architecture not in ARCHITECTURES:
      raise ValueError(
          f"unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{name}={getattr(self, name)!r}; expected float32, bfloat16 or float16")
    if self.base_quant not in ("none", "nf4", "int8"):
      raise ValueError(f"base_quant={self.base_quant!r}; expected none, nf4 or int8")
    if self.lora_rank < 0:
      raise ValueError(f"lora_rank={self.lora_rank} must be >= 0")

  @property
  def jnp_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def jnp_param_dtype(self):
    return jnp.dtype(self.param_dtype)

  def replace(self, **kwargs: Any) -> "ModelConfig":
    return dataclasses.replace(self, **kwargs)

  def num_params(self) -> int:
    """Parameter count, embeddings included (tied embeddings counted once)."""
    e, h, kv, d, f = self.embed_dim, self.num_heads, self.num_kv_heads, self.head_dim, self.mlp_dim
    attn = e * h * d + 2 * e * kv * d + h * d * e
    if self.qkv_bias:
      attn += h * d + 2 * kv * d
    block = attn + 3 * e * f + 2 * e
    head = 0 if self.tie_embeddings else e * self.vocab_size
    return self.vocab_size * e + self.num_layers * block + e + head


PRESETS: dict[str, ModelConfig] = {
    "smollm2-135m-instruct": ModelConfig(
        architecture="llama", vocab_size=49152, embed_dim=576, mlp_dim=1536, num_layers=30,
        num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100000.0, norm_eps=1e-5,
        tie_embeddings=True, max_position_embeddings=8192),
    "llama-3.2-1b-instruct": ModelConfig(
        architecture="llama", vocab_size=128256, embed_dim=2048, mlp_dim=8192, num_layers=16,
        num_heads=32, num_kv_heads=8, head_dim=64, rope_theta=500000.0,
        rope_scaling=RopeScaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=8192),
        norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=131072),
    "qwen2.5-0.5b-instruct": ModelConfig(
        architecture="qwen2", vocab_size=151936, embed_dim=896, mlp_dim=4864, num_layers=24,
        num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1000000.0, norm_eps=1e-6,
        tie_embeddings=True, qkv_bias=True, max_position_embeddings=32768),
    "qwen2.5-1.5b-instruct": ModelConfig(
        architecture="qwen2", vocab_size=151936, embed_dim=1536, mlp_dim=8960, num_layers=28,
        num_heads=12, num_kv_heads=2, head_dim=128, rope_theta=1000000.0, norm_eps=1e-6,
        tie_embeddings=True, qkv_bias=True, max_position_embeddings=32768),
    "qwen2.5-3b-instruct": ModelConfig(
        architecture="qwen2", vocab_size=151936, embed_dim=2048, mlp_dim=11008, num_layers=36,
        num_heads=16, num_kv_heads=2, head_dim=128, rope_theta=1000000.0, norm_eps=1e-6,
        tie_embeddings=True, qkv_bias=True, max_position_embeddings=32768),
    # Tiny configs for tests: seconds to build, exercise GQA, bias and untied heads.
    "tiny-llama": ModelConfig(
        architecture="llama", vocab_size=256, embed_dim=64, mlp_dim=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=10000.0, tie_embeddings=False,
        max_position_embeddings=256),
    "tiny-qwen2": ModelConfig(
        architecture="qwen2", vocab_size=256, embed_dim=64, mlp_dim=128, num_layers=2,
        num_heads=4, num_kv_heads=1, head_dim=16, rope_theta=1000000.0, norm_eps=1e-6,
        tie_embeddings=True, qkv_bias=True, max_position_embeddings=256),
}


def get_preset(name: str) -> ModelConfig:
  try:
    return PRESETS[name]
  except KeyError:
    raise KeyError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}") from None
