"""Shared fixtures: the real SmolLM2 GGUF and the GTAlign data directory."""

import os
import pathlib

import pytest

# The GTAlign parquet data: `shared/` beside the checkout, or wherever $GTALIGN_DATA_DIR says.
DATA_DIR = pathlib.Path(os.environ.get("GTALIGN_DATA_DIR") or
                        pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "gtalign")


@pytest.fixture(scope="session")
def smollm2_gguf_path():
  """The embedded default model, fetched once into the gtalign cache."""
  from gtalign.models.weights_cache import smollm2_gguf_path as resolve
  return resolve()


@pytest.fixture(scope="session")
def gtalign_data_dir():
  if not DATA_DIR.is_dir():
    if os.environ.get("CI"):  # CI always has shared/ beside the clone: a skip would hide a gap
      pytest.fail(f"GTAlign data not found at {DATA_DIR} (set GTALIGN_DATA_DIR)")
    pytest.skip(f"GTAlign data not found at {DATA_DIR} (set GTALIGN_DATA_DIR)")
  return DATA_DIR


# the modules that take minutes (each, on a 2-core CPU), longest first: the suite runs on
# pytest-xdist workers (pytest.ini), which take whole modules in collection order, and a long one
# taken last would finish last while the other workers idle
LONG_MODULES = ("test_training.py", "test_training_variants.py", "test_adapters_run.py",
                "test_compare.py", "test_dialogue.py", "test_notebooks.py",
                "test_continuation.py")


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: a worker a core, at most 4 (each may hold two copies of SmolLM2 and its
  reference model in memory)."""
  return max(1, min(4, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
  """The long modules first (LONG_MODULES). Tests marked `slow` run with GTALIGN_SLOW=1 (or when
  picked with -m slow); the default run, CI's, runs their quick variants (e.g. 2
  kill-and-resume trials instead of 10)."""
  rank = {name: i for i, name in enumerate(LONG_MODULES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: module order kept
  if os.environ.get("GTALIGN_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
    return
  skip = pytest.mark.skip(reason="slow: set GTALIGN_SLOW=1 to run it")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)
