"""Pretrained checkpoints in and out: HF directories (safetensors), GGUF files, named models."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gtalign.models import gguf_loader, hf_format, weights_cache
from gtalign.models.config import ModelConfig
from gtalign.models.hf_format import CheckpointError
from gtalign.models.tokenizer import Tokenizer, load_tokenizer, tokenizer_from_gguf_fields
from gtalign.utils.errors import MissingInput

# Names that resolve to a file without a hub: name -> function returning a local path.
NAMED_CHECKPOINTS = {"smollm2-135m-instruct": weights_cache.smollm2_gguf_path}


def _read_safetensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file

  index = directory / "model.safetensors.index.json"
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise CheckpointError(f"{index}: expected JSON with a 'weight_map' object ({e})") from e
    files = sorted(set(weight_map.values()))
  else:
    files = sorted(p.name for p in directory.glob("*.safetensors"))
  if not files:
    raise MissingInput(f"{directory}: no *.safetensors files (nor an index) found")
  tensors: dict[str, np.ndarray] = {}
  for name in files:
    shard = directory / name
    if not shard.is_file():
      raise MissingInput(f"{shard}: shard listed in {index.name} does not exist")
    try:
      tensors.update(load_file(str(shard)))
    except Exception as e:  # pylint: disable=broad-except  (safetensors raises its own errors)
      raise CheckpointError(f"{shard}: not a readable safetensors file ({e})") from e
  return tensors


def _load_hf_dir(directory: pathlib.Path, dtype: str | None):
  config_path = directory / "config.json"
  if not config_path.is_file():
    raise MissingInput(f"{directory}: missing config.json (expected a Hugging Face model "
                            "directory with config.json and *.safetensors)")
  try:
    hf_cfg = json.loads(config_path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{config_path}: invalid JSON ({e})") from e
  if not isinstance(hf_cfg, dict):
    raise CheckpointError(f"{config_path}: expected a JSON object, got {type(hf_cfg).__name__}")
  try:
    config = hf_format.model_config_from_hf(hf_cfg, str(config_path), **_dtype_overrides(dtype))
  except CheckpointError:
    raise
  except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
    raise CheckpointError(f"{config_path}: not a usable model config ({type(e).__name__}: "
                          f"{e})") from e
  params = hf_format.params_from_hf(_read_safetensors(directory), config, str(directory))
  tokenizer = load_tokenizer(str(directory)) if _has_tokenizer(directory) else None
  return config, params, tokenizer


def _has_tokenizer(directory: pathlib.Path) -> bool:
  return (directory / "tokenizer.json").is_file() or (directory / "tokenizer.model").is_file()


def _dtype_overrides(dtype: str | None) -> dict[str, Any]:
  return {} if dtype is None else {"param_dtype": dtype, "dtype": dtype}


def _load_gguf(path: str, dtype: str | None):
  hf_cfg, tensors, fields = gguf_loader.load_gguf(path)
  config = hf_format.model_config_from_hf(hf_cfg, path, **_dtype_overrides(dtype))
  params = hf_format.params_from_hf(tensors, config, path)
  tokenizer = (tokenizer_from_gguf_fields(fields, source=path)
               if "tokenizer.ggml.model" in fields else None)
  return config, params, tokenizer


def load_pretrained(name_or_path: str, dtype: str | None = None
                    ) -> tuple[ModelConfig, Any, Tokenizer | None]:
  """Load (config, params, tokenizer) from a HF directory, a .gguf file or a known name.

  `dtype` ("float32", "bfloat16") sets both the parameter and the compute dtype; the default
  keeps float32. Params come back as a nested dict of jax arrays on the default device.
  """
  if name_or_path in NAMED_CHECKPOINTS:
    name_or_path = NAMED_CHECKPOINTS[name_or_path]()
  path = pathlib.Path(name_or_path).expanduser()
  if path.is_dir():
    config, params, tokenizer = _load_hf_dir(path, dtype)
  elif path.is_file() and path.suffix == ".gguf":
    config, params, tokenizer = _load_gguf(str(path), dtype)
  elif path.exists():
    raise CheckpointError(f"{path}: expected a Hugging Face model directory or a .gguf file")
  else:
    raise MissingInput(
        f"{name_or_path}: no such file or directory, and not a known model name "
        f"(known: {sorted(NAMED_CHECKPOINTS)})")
  params = jax.tree.map(lambda a: jnp.asarray(a, config.jnp_param_dtype), params)
  return config, params, tokenizer


def save_pretrained(directory: str, config: ModelConfig, params, tokenizer: Tokenizer | None
                    ) -> None:
  """Write a HF directory (config.json, model.safetensors, tokenizer files)."""
  from safetensors.numpy import save_file

  out = pathlib.Path(directory)
  out.mkdir(parents=True, exist_ok=True)
  # safetensors' numpy writer has no bfloat16; float32 is lossless for every supported dtype.
  tensors = {k: v.astype(np.float32) for k, v in
             hf_format.params_to_hf(jax.device_get(params), config).items()}
  hf_cfg = hf_format.model_config_to_hf(config)
  hf_cfg["torch_dtype"] = "float32"
  if tokenizer is not None:
    hf_cfg.update(eos_token_id=list(tokenizer.eos_ids), pad_token_id=tokenizer.pad_id,
                  bos_token_id=tokenizer.bos_id)
    tokenizer.save(str(out))
  tmp = out / "model.safetensors.tmp"
  save_file(tensors, str(tmp), metadata={"format": "pt"})
  os.replace(tmp, out / "model.safetensors")
  (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
