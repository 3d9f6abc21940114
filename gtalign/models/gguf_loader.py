"""Read a GGUF file (llama.cpp's format) into HF-named float32 tensors and a config.

The `gguf` package parses the file and dequantizes blocks to numpy. llama.cpp's converter
row-permutes Llama q/k projections for its interleaved RoPE; we undo that so the weights fit the
rotate-half convention used by `transformer.py` and by Hugging Face.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gtalign.models.hf_format import CheckpointError
from gtalign.utils.errors import MissingInput

_TENSOR_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _hf_name(gguf_name: str) -> str | None:
  if gguf_name in _TENSOR_NAMES:
    return _TENSOR_NAMES[gguf_name]
  parts = gguf_name.split(".")
  if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK_NAMES:
    return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{parts[3]}"
  return None


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Inverse of llama.cpp's q/k row permutation (interleaved pairs -> two halves)."""
  rows = w.shape[0]
  rest = w.shape[1:]
  return w.reshape(n_head, rows // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def _f32(value) -> float:
  """GGUF stores floats as float32; recover the decimal the converter wrote (1e-5, not 9.99e-6)."""
  return float(str(np.float32(value)))


def read_fields(reader) -> dict[str, Any]:
  """All metadata key/values of a `gguf.GGUFReader` as plain Python values."""
  return {name: field.contents() for name, field in reader.fields.items()}


def load_gguf(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
  """Returns (HF-style config dict, HF-named float32 tensors, raw metadata fields)."""
  import gguf  # imported lazily: only GGUF users pay for it

  if not os.path.isfile(path):
    raise MissingInput(f"GGUF file not found: {path}")
  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:  # the gguf package raises assorted errors on corrupt files
    raise CheckpointError(f"{path}: not a readable GGUF file ({e})") from e
  fields = read_fields(reader)
  arch = fields.get("general.architecture")
  if arch not in _ARCHITECTURES:
    raise CheckpointError(f"{path}: unknown architecture general.architecture={arch!r}; "
                          f"supported: {sorted(_ARCHITECTURES)}")

  def meta(key, default=None):
    full = f"{arch}.{key}"
    if full not in fields and default is None:
      raise CheckpointError(f"{path}: missing metadata key {full!r}")
    return fields.get(full, default)

  heads = int(meta("attention.head_count"))
  kv_heads = int(meta("attention.head_count_kv", heads))
  hidden = int(meta("embedding_length"))
  names = {t.name for t in reader.tensors}
  vocab = fields.get(f"{arch}.vocab_size") or len(fields.get("tokenizer.ggml.tokens", []))
  if fields.get(f"{arch}.rope.scaling.type") not in (None, "none"):
    raise CheckpointError(f"{path}: RoPE scaling {fields[f'{arch}.rope.scaling.type']!r} in "
                          "GGUF metadata is not supported")
  config = {
      "architectures": [_ARCHITECTURES[arch]],
      "model_type": arch,
      "vocab_size": int(vocab),
      "hidden_size": hidden,
      "intermediate_size": int(meta("feed_forward_length")),
      "num_hidden_layers": int(meta("block_count")),
      "num_attention_heads": heads,
      "num_key_value_heads": kv_heads,
      "head_dim": int(meta("rope.dimension_count", hidden // heads)),
      "rope_theta": _f32(meta("rope.freq_base", 10000.0)),
      "rms_norm_eps": _f32(meta("attention.layer_norm_rms_epsilon")),
      "max_position_embeddings": int(meta("context_length", 8192)),
      "tie_word_embeddings": "output.weight" not in names,
  }

  tensors: dict[str, np.ndarray] = {}
  for t in reader.tensors:
    name = _hf_name(t.name)
    if name is None:
      continue  # e.g. rope_freqs: derived from the config instead
    try:
      w = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError as e:
      raise CheckpointError(f"{path}: tensor {t.name!r} uses quantization type "
                            f"{t.tensor_type.name}, which cannot be dequantized ({e})") from e
    w = np.asarray(w, np.float32).reshape(tuple(int(n) for n in reversed(t.shape)))
    if arch == "llama" and t.name.endswith("attn_q.weight"):
      w = _unpermute(w, heads)
    elif arch == "llama" and t.name.endswith("attn_k.weight"):
      w = _unpermute(w, kv_heads)
    tensors[name] = w
  return config, tensors, fields
