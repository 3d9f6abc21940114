"""The trained policy as a Hugging Face directory, plus how the run rendered game prompts.

A policy trained on one prompt style answers best when asked in that style, so the export records
the style and system message beside the weights (`gtalign_game.json`); `python -m gtalign.sample
--game` reads it back to render a question exactly as training did.
"""

from __future__ import annotations

import json
import os
import pathlib

from gtalign.game.prompt import STYLES
from gtalign.models.checkpoints import save_pretrained
from gtalign.utils.errors import InvalidInput
from gtalign.utils.jsonl import read_json_object

GAME_SETTINGS_FILE = "gtalign_game.json"
DEFAULT_SETTINGS = {"prompt_style": "full", "system": None}


def export_policy(directory: str, model_config, params, tokenizer, prompt_style: str,
                  system: str | None) -> str:
  """Write the HF directory and its `gtalign_game.json`; returns the directory.

  `system=None` means the style's default persona (`prompt.build_messages`), "" means none.
  """
  _check({"prompt_style": prompt_style, "system": system}, f"export_policy({directory!r})")
  save_pretrained(directory, model_config, params, tokenizer)
  return write_game_settings(directory, prompt_style, system)


def write_game_settings(directory: str, prompt_style: str, system: str | None) -> str:
  """`gtalign_game.json` in `directory` (an export, or an adapter directory beside it)."""
  settings = {"prompt_style": prompt_style, "system": system}
  _check(settings, f"write_game_settings({directory!r})")
  path = pathlib.Path(directory) / GAME_SETTINGS_FILE
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
  os.replace(tmp, path)  # a kill mid-export leaves the old file or none, never half of one
  return str(directory)


def export_adapter(export_dir: str, model_name: str, model_config, params, tokenizer,
                   prompt_style: str) -> str:
  """`export_dir/adapter/`, a PEFT directory of `params`' adapters, with the game settings;
  its base is the model's HF directory or, for a base PEFT could not load (a .gguf file, a
  random model), `export_dir/base/`, written here. Returns the adapter directory."""
  from gtalign.adapters import lora, peft_format  # pylint: disable=g-import-not-at-top
  base_params, adapters = lora.split(params)
  base = peft_format.base_reference(model_name)
  if base is None:
    base = os.path.join(export_dir, "base")
    export_policy(base, lora.plain(model_config),
                  lora.merge(lora.adapters_off(model_config), base_params), tokenizer,
                  prompt_style="full", system=None)
  path = peft_format.save(os.path.join(export_dir, "adapter"), model_config, adapters, base)
  return write_game_settings(path, prompt_style, None)


def export_run(export_dir: str, config, model_config, host_params, tokenizer) -> None:
  """A finished run's policy (adapters merged) and, with adapters, their PEFT directory; written
  by the main process, with a line saying how to sample or serve it."""
  from gtalign.adapters import lora  # pylint: disable=g-import-not-at-top
  from gtalign.parallel import distributed  # pylint: disable=g-import-not-at-top
  if not distributed.is_main():
    return
  adapters_on = lora.enabled(model_config)
  style = config.data.prompt_style
  export_policy(export_dir, lora.plain(model_config) if adapters_on else model_config,
                lora.merge(model_config, host_params) if adapters_on else host_params,
                tokenizer, prompt_style=style, system=None)
  if adapters_on:
    path = export_adapter(export_dir, config.model.name, model_config, host_params, tokenizer,
                          prompt_style=style)
    distributed.log(f"gtalign: adapters written to {path} (PEFT format; python -m "
                    f"gtalign.serve --model=... --adapter={path})")
  distributed.log(f"gtalign: trained policy written to {export_dir} (python -m gtalign.sample "
                  f"--model={export_dir} --game --prompt=...)")


def settings_for_model(model: str) -> dict:
  """The game settings a model was trained with: its directory's file, else the defaults (a
  known model name or a .gguf file was never exported by a run)."""
  return read_game_settings(model) if os.path.isdir(model) else dict(DEFAULT_SETTINGS)


def read_game_settings(directory: str) -> dict:
  """{"prompt_style", "system"} from `directory`'s gtalign_game.json, or the defaults without it."""
  path = pathlib.Path(directory) / GAME_SETTINGS_FILE
  if not path.is_file():
    return dict(DEFAULT_SETTINGS)
  settings = {**DEFAULT_SETTINGS, **read_json_object(path)}
  _check(settings, str(path))
  return settings


def _check(settings: dict, where: str) -> None:
  unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
  if unknown:
    raise InvalidInput(f"{where}: unknown key {unknown[0]!r}; expected keys {sorted(DEFAULT_SETTINGS)}")
  style, system = settings["prompt_style"], settings["system"]
  if style not in STYLES:
    raise InvalidInput(f"{where}: 'prompt_style' is {json.dumps(style)}; expected one of {STYLES}")
  if system is not None and not isinstance(system, str):
    raise InvalidInput(f"{where}: 'system' is {json.dumps(system)[:80]}; expected a string or null")
