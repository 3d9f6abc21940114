"""Where a run is: one JSON line per phase it enters, appended to $GTALIGN_PHASE_LOG if set.

The kill-anywhere test reads it to SIGKILL a run inside a chosen phase (SFT, sampling, the
update, an evaluation) and to check afterwards which phase the kill landed in; it also tells
where a hung run stopped. Without the variable nothing is written.
"""

from __future__ import annotations

import json
import os
import time

ENV = "GTALIGN_PHASE_LOG"


def enter(phase: str, step: int | None = None, name: str | None = None) -> None:
  """Records that the run starts `phase` ("load", "sft", "sample", "judge", "update",
  "checkpoint", "eval", "export") at `step` (0-based: the step being computed)."""
  path = os.environ.get(ENV)
  if path:
    record = {"t": time.time(), "phase": phase, "step": step, **({"name": name} if name else {})}
    with open(path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
