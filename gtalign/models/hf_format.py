"""Conversion between Hugging Face checkpoint layout and this project's parameter tree.

Hugging Face stores `nn.Linear` weights as [out, in] matrices named after torch modules; we store
einsum kernels with one axis per logical dimension. Both directions are plain tables here, so a
mismatch is reported with the tensor name and both shapes.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from gtalign.models.config import ModelConfig, RopeScaling
from gtalign.utils.errors import InvalidInput

_ARCH_BY_HF = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
_HF_BY_ARCH = {v: k for k, v in _ARCH_BY_HF.items()}


class CheckpointError(InvalidInput):
  """A checkpoint that cannot be read; the message names the file, tensor or key."""


def model_config_from_hf(cfg: Mapping[str, Any], source: str, **overrides) -> ModelConfig:
  """ModelConfig from a parsed `config.json`; `source` names the file in error messages."""
  archs = list(cfg.get("architectures") or [])
  arch = next((_ARCH_BY_HF[a] for a in archs if a in _ARCH_BY_HF), None)
  if arch is None and cfg.get("model_type") in _HF_BY_ARCH:
    arch = cfg["model_type"]
  if arch is None:
    raise CheckpointError(
        f"{source}: unknown architecture (architectures={archs}, "
        f"model_type={cfg.get('model_type')!r}); supported: {sorted(_ARCH_BY_HF)}")

  def need(key):
    if key not in cfg:
      raise CheckpointError(f"{source}: missing required key {key!r}")
    return cfg[key]

  if cfg.get("hidden_act", "silu") != "silu":
    raise CheckpointError(f"{source}: hidden_act={cfg['hidden_act']!r}; only 'silu' is supported")
  for flag in ("mlp_bias", "attention_bias"):
    if arch == "llama" and cfg.get(flag):
      raise CheckpointError(f"{source}: {flag}=true is not supported for Llama checkpoints")
  rope = dict(cfg.get("rope_parameters") or {})
  rope.update(cfg.get("rope_scaling") or {})
  theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  scaling = None
  if rope_type == "llama3":
    scaling = RopeScaling(
        factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
        high_freq_factor=float(rope["high_freq_factor"]),
        original_max_position_embeddings=int(rope["original_max_position_embeddings"]))
  elif rope_type not in ("default", None):
    raise CheckpointError(f"{source}: rope type {rope_type!r} is not supported "
                          "(supported: default, llama3)")
  heads = int(need("num_attention_heads"))
  hidden = int(need("hidden_size"))
  values = dict(
      architecture=arch,
      vocab_size=int(need("vocab_size")),
      embed_dim=hidden,
      mlp_dim=int(need("intermediate_size")),
      num_layers=int(need("num_hidden_layers")),
      num_heads=heads,
      num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
      head_dim=int(cfg.get("head_dim") or hidden // heads),
      rope_theta=float(theta),
      rope_scaling=scaling,
      norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
      qkv_bias=arch == "qwen2",
      max_position_embeddings=int(cfg.get("max_position_embeddings", 8192)),
  )
  values.update(overrides)
  return ModelConfig(**values)


def model_config_to_hf(config: ModelConfig) -> dict[str, Any]:
  """A `config.json` dict that `transformers` reads back into the same model."""
  rope: dict[str, Any] = {"rope_theta": config.rope_theta, "rope_type": "default"}
  if config.rope_scaling is not None:
    s = config.rope_scaling
    rope.update(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                high_freq_factor=s.high_freq_factor,
                original_max_position_embeddings=s.original_max_position_embeddings)
  out = {
      "architectures": [_HF_BY_ARCH[config.architecture]],
      "model_type": config.architecture,
      "vocab_size": config.vocab_size,
      "hidden_size": config.embed_dim,
      "intermediate_size": config.mlp_dim,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": config.norm_eps,
      "tie_word_embeddings": config.tie_embeddings,
      "max_position_embeddings": config.max_position_embeddings,
      "rope_theta": config.rope_theta,
      "rope_parameters": rope,
      "torch_dtype": config.param_dtype,
  }
  if config.rope_scaling is not None:
    out["rope_scaling"] = dict(rope)
  if config.architecture == "llama":
    out.update(attention_bias=False, mlp_bias=False)
  return out


# Each entry: our path (under the params root) -> (HF name, to_ours, to_hf).
# `to_ours` maps the HF [out, in] array to our kernel layout; `to_hf` inverts it.
_Table = dict[tuple[str, ...], tuple[str, Callable, Callable]]


def _tensor_table(config: ModelConfig) -> _Table:
  e, h, kv, d, f = (config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim,
                    config.mlp_dim)
  ident = lambda w: w

  def proj_in(heads):  # [heads*d, e] -> [e, heads, d]
    return (lambda w: w.T.reshape(e, heads, d), lambda k: k.reshape(e, heads * d).T)

  def bias(heads):
    return (lambda b: b.reshape(heads, d), lambda b: b.reshape(heads * d))

  table: _Table = {("embed_tokens", "embedding"): ("model.embed_tokens.weight", ident, ident),
                   ("norm", "scale"): ("model.norm.weight", ident, ident)}
  if not config.tie_embeddings:
    table[("lm_head", "kernel")] = ("lm_head.weight", lambda w: w.T, lambda k: k.T)
  for i in range(config.num_layers):
    p, hf = f"layers_{i}", f"model.layers.{i}"
    entries = {
        ("self_attn", "q_proj", "kernel"): ("self_attn.q_proj.weight", *proj_in(h)),
        ("self_attn", "k_proj", "kernel"): ("self_attn.k_proj.weight", *proj_in(kv)),
        ("self_attn", "v_proj", "kernel"): ("self_attn.v_proj.weight", *proj_in(kv)),
        ("self_attn", "o_proj", "kernel"): ("self_attn.o_proj.weight",
                                            lambda w: w.T.reshape(h, d, e),
                                            lambda k: k.reshape(h * d, e).T),
        ("mlp", "gate_proj", "kernel"): ("mlp.gate_proj.weight", lambda w: w.T, lambda k: k.T),
        ("mlp", "up_proj", "kernel"): ("mlp.up_proj.weight", lambda w: w.T, lambda k: k.T),
        ("mlp", "down_proj", "kernel"): ("mlp.down_proj.weight", lambda w: w.T, lambda k: k.T),
        ("input_layernorm", "scale"): ("input_layernorm.weight", ident, ident),
        ("post_attention_layernorm", "scale"): ("post_attention_layernorm.weight", ident, ident),
    }
    if config.qkv_bias:
      entries[("self_attn", "q_proj", "bias")] = ("self_attn.q_proj.bias", *bias(h))
      entries[("self_attn", "k_proj", "bias")] = ("self_attn.k_proj.bias", *bias(kv))
      entries[("self_attn", "v_proj", "bias")] = ("self_attn.v_proj.bias", *bias(kv))
    for path, (name, to_ours, to_hf) in entries.items():
      table[(p, *path)] = (f"{hf}.{name}", to_ours, to_hf)
  return table


def expected_hf_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """HF tensor name -> shape, for checking a checkpoint before converting it."""
  e, h, kv, d, f, v = (config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim,
                       config.mlp_dim, config.vocab_size)
  shapes = {"model.embed_tokens.weight": (v, e), "model.norm.weight": (e,),
            "lm_head.weight": (v, e)}
  per_layer = {"self_attn.q_proj.weight": (h * d, e), "self_attn.k_proj.weight": (kv * d, e),
               "self_attn.v_proj.weight": (kv * d, e), "self_attn.o_proj.weight": (e, h * d),
               "mlp.gate_proj.weight": (f, e), "mlp.up_proj.weight": (f, e),
               "mlp.down_proj.weight": (e, f), "input_layernorm.weight": (e,),
               "post_attention_layernorm.weight": (e,), "self_attn.q_proj.bias": (h * d,),
               "self_attn.k_proj.bias": (kv * d,), "self_attn.v_proj.bias": (kv * d,)}
  for i in range(config.num_layers):
    shapes.update({f"model.layers.{i}.{k}": s for k, s in per_layer.items()})
  return shapes


def params_from_hf(tensors: Mapping[str, np.ndarray], config: ModelConfig, source: str,
                   dtype=None) -> dict:
  """Build our nested params dict from HF-named arrays (numpy), checking every shape."""
  dtype = np.dtype(dtype or config.jnp_param_dtype)
  shapes = expected_hf_shapes(config)
  params: dict = {}
  for path, (name, to_ours, _) in _tensor_table(config).items():
    if name not in tensors:
      if name == "lm_head.weight":
        raise CheckpointError(f"{source}: tensor {name!r} is missing but the config says the "
                              "embeddings are untied (tie_word_embeddings=false)")
      raise CheckpointError(f"{source}: tensor {name!r} is missing")
    w = tensors[name]
    if tuple(w.shape) != shapes[name]:
      raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(w.shape)}, "
                            f"expected {shapes[name]} from the config")
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = np.asarray(to_ours(np.asarray(w, np.float32))).astype(dtype)
  return params


def params_to_hf(params: Mapping, config: ModelConfig) -> dict[str, np.ndarray]:
  """HF-named float arrays from our params (the inverse of `params_from_hf`)."""
  out = {}
  for path, (name, _, to_hf) in _tensor_table(config).items():
    node = params
    for key in path:
      node = node[key]
    out[name] = np.ascontiguousarray(to_hf(np.asarray(node)))
  return out
