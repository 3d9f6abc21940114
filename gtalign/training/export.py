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


def settings_for_model(model: str) -> dict:
  """The game settings a model was trained with: its directory's file, else the defaults (a
  known model name or a .gguf file was never exported by a run)."""
  return read_game_settings(model) if os.path.isdir(model) else dict(DEFAULT_SETTINGS)


def read_game_settings(directory: str) -> dict:
  """{"prompt_style", "system"} from `directory`'s gtalign_game.json, or the defaults without it."""
  path = pathlib.Path(directory) / GAME_SETTINGS_FILE
  if not path.is_file():
    return dict(DEFAULT_SETTINGS)
  try:
    settings = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InvalidInput(f"{path}: not valid JSON ({e})") from e
  if not isinstance(settings, dict):
    raise InvalidInput(f"{path}: expected a JSON object, got {json.dumps(settings)[:80]}")
  settings = {**DEFAULT_SETTINGS, **settings}
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
