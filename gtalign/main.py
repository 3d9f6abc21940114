"""Train with GTAlign: `python -m gtalign.main --config=configs/grpo.py [--config.key=value]`."""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/grpo.py",
                                          "Config file, optionally with a preset: FILE.py:NAME.")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/grpo",
                               "Checkpoints, metrics, rollouts and plots; a run resumes from here.")


def check_overrides(argv: list[str], config) -> None:
  """Rejects `--config.a.b=v` for a key the config lacks, listing the valid keys at that level."""
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0].split(".")
    node, seen = config, "config"
    for key in path:
      if not hasattr(node, "keys") or key not in node.keys():
        valid = sorted(node.keys()) if hasattr(node, "keys") else []
        sys.exit(f"error: unknown config key {seen + '.' + key!r} in {arg!r}; valid keys under "
                 f"{seen!r}: {', '.join(valid)}")
      node, seen = node[key], f"{seen}.{key}"


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from gtalign.training.loop import train
  train(_CONFIG.value, _WORKDIR.value)


def _preparse():
  """Loads the config file early so that unknown override keys fail with the valid keys."""
  import importlib.util
  spec = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")),
              "configs/grpo.py")
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    sys.exit(f"error: config file {path!r} not found (run from the repository root, or give "
             "--config=PATH/TO/configs/grpo.py)")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path))))  # `from configs`
  module_spec = importlib.util.spec_from_file_location("_gtalign_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  check_overrides(sys.argv[1:], module.get_config(preset or None))


if __name__ == "__main__":
  _preparse()
  app.run(main)
