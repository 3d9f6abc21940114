"""Adapters as a Hugging Face PEFT directory: `adapter_config.json` and
`adapter_model.safetensors` with PEFT's key names, so `peft.PeftModel.from_pretrained(base, dir)`
loads what gtalign trained, and `gtalign.serve --adapter=DIR` loads what PEFT saved.

PEFT computes y = x W^T + (alpha / r) (x A^T) B^T with `lora_A.weight` [r, in] and
`lora_B.weight` [out, r]; gtalign's adapter is y = x W + (alpha / r) (x a) b with a [in, r] and
b [r, out], over the same flattened in/out order as the Hugging Face weights (heads-major), so
`lora_A.weight` = a^T and `lora_B.weight` = b^T.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

import numpy as np

from gtalign.adapters import lora
from gtalign.models.config import ModelConfig
from gtalign.utils.errors import InvalidInput
from gtalign.utils.jsonl import read_json_object

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_GROUP = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
          "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
_KEY = re.compile(r"base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)"
                  r"\.lora_([AB])\.weight")


def _key(layer: int, name: str, which: str) -> str:
  return f"base_model.model.model.layers.{layer}.{_GROUP[name]}.{name}.lora_{which}.weight"


def save(directory: str, model_config: ModelConfig, adapters, base_model: str) -> str:
  """Writes the PEFT directory (atomically per file); `base_model` is what PEFT loads the
  adapters onto (a directory or a Hugging Face repository id)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(directory)
  out.mkdir(parents=True, exist_ok=True)
  tensors = {}
  for layer in range(model_config.num_layers):
    block = adapters.get(f"layers_{layer}", {})
    for name, group in _GROUP.items():
      leaves = block.get(group, {}).get(name)
      if leaves:
        tensors[_key(layer, name, "A")] = np.ascontiguousarray(np.asarray(leaves["lora_a"]).T)
        tensors[_key(layer, name, "B")] = np.ascontiguousarray(np.asarray(leaves["lora_b"]).T)
  config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
      "r": model_config.lora_rank, "lora_alpha": model_config.lora_alpha,
      "target_modules": sorted(model_config.lora_targets), "lora_dropout": 0.0,
      "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
      "modules_to_save": None, "init_lora_weights": True, "inference_mode": True,
      "revision": None}
  tmp = out / (WEIGHTS_FILE + ".tmp")
  save_file({k: v.astype(np.float32) for k, v in tensors.items()}, str(tmp),
            metadata={"format": "pt"})
  os.replace(tmp, out / WEIGHTS_FILE)
  tmp = out / (CONFIG_FILE + ".tmp")
  tmp.write_text(json.dumps(config, indent=2) + "\n")
  os.replace(tmp, out / CONFIG_FILE)
  return str(out)


def base_reference(model_name: str) -> str | None:
  """What an exported adapter names as its base: an HF directory's absolute path, or None,
  and the export saves the base beside it. A GGUF file (the default model's is Q4_1: its
  weights are not the full-precision ones of the Hugging Face repository of the same name) or
  a random model has no directory PEFT could load."""
  path = pathlib.Path(model_name).expanduser()
  return str(path.resolve()) if path.is_dir() else None


def load(directory: str, model_config: ModelConfig) -> tuple[ModelConfig, dict]:
  """(the model config with the adapter's rank, alpha and targets, the adapter tree) from a
  PEFT directory; a field or tensor that does not fit the base is a one-line error naming the
  file and key."""
  from safetensors.flax import load_file  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(directory)
  cfg_path, weights_path = root / CONFIG_FILE, root / WEIGHTS_FILE
  for path in (cfg_path, weights_path):
    if not path.is_file():
      raise InvalidInput(f"--adapter={directory}: no {path.name} (expected a PEFT LoRA "
                         "directory, such as a run's export/adapter)")
  cfg = read_json_object(cfg_path)
  if cfg.get("peft_type", "LORA") != "LORA":
    raise InvalidInput(f"{cfg_path}: 'peft_type' is {cfg.get('peft_type')!r}; only LORA "
                       "adapters load")
  for key in ("use_rslora", "use_dora", "fan_in_fan_out"):
    if cfg.get(key):
      raise InvalidInput(f"{cfg_path}: '{key}': true is not supported")
  for key in ("rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform"):
    if cfg.get(key):
      raise InvalidInput(f"{cfg_path}: '{key}' is set; only one rank and alpha for every "
                         "adapted projection of every layer is supported")
  try:
    rank, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
  except (KeyError, TypeError, ValueError) as e:
    raise InvalidInput(f"{cfg_path}: 'r' and 'lora_alpha' must be numbers ({e!r})") from e
  try:  # the flax reader keeps bfloat16 and float16 adapters (numpy's has no bfloat16)
    tensors = load_file(str(weights_path))
  except Exception as e:  # pylint: disable=broad-except  (safetensors raises several types)
    raise InvalidInput(f"{weights_path}: not a readable safetensors file "
                       f"({type(e).__name__}: {e})") from e
  leaves, targets = [], set()
  for key, value in tensors.items():
    match = _KEY.fullmatch(key)
    if not match or match.group(3) not in _GROUP:
      raise InvalidInput(f"{weights_path}: tensor {key!r} is not a LoRA weight of a decoder "
                         "projection")
    layer, group, name, which = match.groups()
    if int(layer) >= model_config.num_layers:
      raise InvalidInput(f"{weights_path}: {key!r} names layer {layer} of a "
                         f"{model_config.num_layers}-layer base")
    targets.add(name)
    leaf = "lora_a" if which == "A" else "lora_b"
    leaves.append(((f"layers_{layer}", group, name, leaf), np.asarray(value, np.float32).T))
  if not leaves:
    raise InvalidInput(f"{weights_path}: holds no LoRA weights")
  config = model_config.replace(lora_rank=rank, lora_alpha=alpha,
                                lora_targets=tuple(n for n in _GROUP if n in targets))
  adapters = lora._nest(leaves)  # pylint: disable=protected-access
  _, want = lora.split(lora.abstract_params(config))
  want_flat, got_flat = dict(lora._flatten(want)), dict(lora._flatten(adapters))  # pylint: disable=protected-access
  for path, shape in want_flat.items():
    if path not in got_flat:
      raise InvalidInput(f"{weights_path}: no tensor for {'/'.join(path)} (every layer of a "
                         "target projection needs one)")
    if got_flat[path].shape != shape.shape:
      layer = int(path[0].split("_")[1])
      key = _key(layer, path[2], "A" if path[3] == "lora_a" else "B")
      raise InvalidInput(f"{weights_path}: {key} has shape {got_flat[path].T.shape}, the base "
                         f"needs {shape.shape[::-1]}")
  return config, adapters


def load_onto(directory: str, model_config: ModelConfig, params) -> dict:
  """`params` of a plain base with the PEFT adapter in `directory` merged in (what
  `gtalign.serve --adapter` and `gtalign.sample --adapter` run)."""
  adapted, adapters = load(directory, model_config)
  return lora.merge(adapted, lora.join(params, adapters))
