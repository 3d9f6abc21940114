"""Train with GTAlign: `python -m gtalign.main --config=configs/grpo.py [--config.key=value]`."""

from __future__ import annotations

import os
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from gtalign.utils import cli

_CONFIG = config_flags.DEFINE_config_file("config", "configs/grpo.py",
                                          "Config file, optionally with a preset: FILE.py:NAME.")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/grpo",
                               "Checkpoints, metrics, rollouts and plots; a run resumes from here.")
# Multi-process runs; without these, TPU pods and SLURM steps are detected from the environment.
_COORDINATOR = flags.DEFINE_string("coordinator", "", "HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")
_COMPILE_CACHE = flags.DEFINE_bool(
    "compile_cache", True, "Keep compiled XLA programs in $GTALIGN_CACHE/xla (default "
    "~/.cache/gtalign/xla), so that a second run of the same config does not compile again.")


def enable_compile_cache(directory: str, min_compile_seconds: float = 1.0) -> None:
  """JAX's persistent compilation cache in `directory`, for every program that takes at least
  `min_compile_seconds` to compile (the sampler's, the update steps, the evaluation's)."""
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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
        cli.fail(f"unknown config key {seen + '.' + key!r} in {arg!r}; valid keys under "
                     f"{seen!r}: {', '.join(valid)}")
      node, seen = node[key], f"{seen}.{key}"


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _COMPILE_CACHE.value:
    from gtalign.models.weights_cache import cache_dir
    enable_compile_cache(str(cache_dir() / "xla"))
  from gtalign.parallel import distributed
  try:
    cluster = distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    cli.fail(str(e))
  if cluster.source != "single":
    distributed.log(f"gtalign: {cluster.describe()}")
  from gtalign.utils.errors import InputError
  if "compare" in _CONFIG.value:  # configs/compare.py: the welfare-objective comparison
    from gtalign.comparison.runner import compare as run
  else:
    from gtalign.training.loop import train as run
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except InputError as e:  # the user's config or files: one line, a usage error's status
    if jax.process_count() == 1:
      if cli.debug_requested(sys.argv):
        raise
      cli.fail(e)
    print(cli.error_line(e), file=sys.stderr, flush=True)  # os._exit: no sys.exit
    os._exit(2)
  except BaseException:  # pylint: disable=broad-except
    if jax.process_count() == 1:
      raise
    # JAX's shutdown would wait for the other processes, which wait for this one: exit now
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)


def _preparse():
  """Loads the config file early so that unknown override keys fail with the valid keys."""
  import importlib.util
  spec = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")),
              "configs/grpo.py")
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    cli.fail(f"config file {path!r} not found (run from the repository root, or give "
                 "--config=PATH/TO/configs/grpo.py)")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path))))  # `from configs`
  module_spec = importlib.util.spec_from_file_location("_gtalign_config", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    config = module.get_config(preset or None)
  except Exception as e:  # pylint: disable=broad-except  (the user's config file)
    if cli.debug_requested(sys.argv):
      raise
    cli.fail(f"config {spec!r}: {type(e).__name__}: {e}")
  check_overrides(sys.argv[1:], config)


if __name__ == "__main__":
  _preparse()
  app.run(main, flags_parser=cli.parse_flags)
