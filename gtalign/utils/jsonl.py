"""JSON Lines input whose errors say which file and line is wrong."""

from __future__ import annotations

import json
from typing import Any, Iterator


def read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
  """(line number, parsed value) for each non-blank line of `path`."""
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield n, json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n}: not valid JSON ({e})") from e
