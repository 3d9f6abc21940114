"""JSON Lines input whose errors say which file and line is wrong."""

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
