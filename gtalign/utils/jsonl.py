"""JSON and JSON Lines input whose errors say which file (and line) is wrong."""

from __future__ import annotations

import json
from typing import Any, Iterator

from gtalign.utils.errors import InvalidInput, MissingInput


def read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
  """(line number, parsed value) for each non-blank line of `path` (UTF-8)."""
  try:
    f = open(path, "rb")
  except FileNotFoundError as e:
    raise MissingInput(f"{path}: no such file") from e
  except OSError as e:
    raise InvalidInput(f"{path}: cannot be read ({e.strerror})") from e
  with f:
    for n, raw in enumerate(f, 1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise InvalidInput(f"{path}:{n}: not UTF-8 text ({e.reason} at byte {e.start})") from e
      if not line.strip():
        continue
      try:
        yield n, json.loads(line)
      except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}:{n}: not valid JSON ({e})") from e


def read_json_object(path) -> dict:
  """The JSON object in file `path` (a settings or config file); anything else is one line
  naming the file."""
  try:
    value = json.loads(open(path, "rb").read().decode("utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InvalidInput(f"{path}: not valid JSON ({e})") from e
  if not isinstance(value, dict):
    raise InvalidInput(f"{path}: expected a JSON object, got {json.dumps(value)[:80]}")
  return value
