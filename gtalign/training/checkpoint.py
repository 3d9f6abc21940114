"""Crash-safe training checkpoints: the state pytree and a JSON meta dict in one orbax step.

Each step directory holds two items written by one `ocp.CheckpointManager` save: `state`
(`StandardSave`: params, optax state, step counters, any dtype incl. bf16) and `meta` (`JsonSave`:
data position, RNG seed/state as plain ints/lists, config snapshot). Keeping both in the same
step means a resume can never pair the weights of one step with the data position of another.

Kill safety. Orbax writes a step into `<step>.orbax-checkpoint-tmp-<ts>/`, writes
`commit_success.txt` into it last, then renames it to `<step>/`. A kill before the rename leaves
only a tmp directory, which orbax never lists (and `cleanup_tmp_directories` deletes on the next
start). But orbax 0.12.8 lists *any* digit-named directory as a step, committed or not (e.g. one
left by an interrupted copy or a non-atomic filesystem), so `latest_step` would pick it, restore
would fail and `should_save` would skip every smaller step. Here a step counts only if its
`commit_success.txt` exists, and uncommitted step directories found at start-up are renamed
aside (never deleted) before orbax scans the directory; one older than the newest committed step
is what a kill left of orbax deleting an old step, and its deletion is finished.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from gtalign.utils.errors import InvalidInput

COMMIT_FILE = "commit_success.txt"  # orbax's atomicity_types.COMMIT_SUCCESS_FILE
INCOMPLETE_SUFFIX = ".incomplete"  # not a name orbax parses as a step or a tmp step


class Checkpointer:
  """Saves every `save_every` steps, keeps the newest `max_to_keep`, restores into shardings."""

  def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = 2,
               save_every: int = 1, *, async_save: bool = True, keep: tuple[int, ...] = ()):
    """`keep`: steps never deleted to make room (the warm start's last step, where RL starts:
    an RL run of other settings can start from it)."""
    if save_every < 1:
      raise InvalidInput(f"checkpoint.every must be >= 1, got {save_every}")
    self.directory = os.path.abspath(os.fspath(directory))
    self.save_every = save_every
    os.makedirs(self.directory, exist_ok=True)
    _set_aside_uncommitted_steps(self.directory)
    policy = {}
    if keep and max_to_keep is not None:
      from orbax.checkpoint import checkpoint_managers  # pylint: disable=g-import-not-at-top
      policy = {"preservation_policy": checkpoint_managers.AnyPreservationPolicy([
          checkpoint_managers.LatestN(max_to_keep), checkpoint_managers.CustomSteps(keep)])}
    options = ocp.CheckpointManagerOptions(
        **(policy or {"max_to_keep": max_to_keep}),
        save_interval_steps=1,  # the interval is decided in `save`, so `force` means one thing
        create=True,
        cleanup_tmp_directories=True,  # tmp dirs are only ever saves killed before the rename
        enable_async_checkpointing=async_save,
    )
    # the item handlers are named so that a fresh process can read a step's metadata
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def _committed(self, step: int) -> bool:
    return os.path.isfile(os.path.join(self.directory, str(step), COMMIT_FILE))

  def all_steps(self) -> list[int]:
    """Committed steps, ascending; an async save still in flight is not listed yet."""
    return sorted(s for s in self._manager.all_steps() if self._committed(s))

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, meta: Mapping[str, Any], force: bool = False) -> bool:
    """Starts a (by default async) save; returns False when skipped by `save_every` or a repeat.

    `force=True` saves off the interval (the final step, a preemption). `meta` must be
    JSON-able; numpy/jax scalars and arrays are converted to plain numbers/lists here so a bad
    value fails in this call rather than later inside orbax's background thread.
    """
    if not force and step % self.save_every:
      return False
    if step in self._manager.all_steps():
      logging.warning("checkpoint step %d already exists in %s; not saving", step, self.directory)
      return False
    meta = json.loads(json.dumps(dict(meta), default=_json_default))
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    return bool(self._manager.save(step, args=args, force=True))

  def restore(self, step: int | None = None, *, abstract_state: Any) -> tuple[Any, dict]:
    """Restores `(state, meta)` of `step` (default: latest committed) into `abstract_state`.

    `abstract_state` gives the tree structure (optax NamedTuples are rebuilt from it), dtypes and
    target shardings: leaves are `jax.ShapeDtypeStruct`s with `.sharding`, or arrays whose
    sharding is reused. Leaves without a sharding go to the first local device (single process
    only; with several processes a missing sharding is an error, not a silent guess).
    """
    self.wait()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no committed checkpoint in {self.directory}")
    elif not self._committed(step):
      raise FileNotFoundError(f"checkpoint step {step} is not committed in {self.directory}")
    target = jax.tree.map(_abstract_leaf, abstract_state)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
    out = self._manager.restore(step, args=args)
    return out["state"], dict(out["meta"])

  def restore_latest_intact(self, abstract_for: Callable[[int], Any]
                            ) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest committed step that restores, or None without any.

    `abstract_for(step)` is the abstract state to restore that step into. A step whose stored
    shapes or keys differ from it was written by another config: InvalidInput names the keys
    and nothing is moved. A step that fails to read (a truncated or damaged file) is reported with its path and reason, moved aside to
    `<step>.corrupt-<ns>` (never deleted) and the next older step is tried; when every committed
    step fails, InvalidInput names the directory to remove.
    """
    failures = []
    for step in reversed(self.all_steps()):
      try:
        abstract = abstract_for(step)
        stored = self._manager.item_metadata(step)["state"]
        diffs = shape_differences(getattr(stored, "tree", stored), abstract)
        if diffs:
          more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
          raise InvalidInput(
              f"checkpoint {os.path.join(self.directory, str(step))} was written by a different "
              f"config: {'; '.join(diffs[:4])}{more}; use another --workdir, or remove "
              f"{self.directory} to start this config over")
        state, meta = self.restore(step, abstract_state=abstract)
        return step, state, meta
      except InvalidInput:
        raise
      except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many)
        reason = _one_line(e)
        path = os.path.join(self.directory, str(step))
        logging.warning("checkpoint %s failed to restore (%s); trying the next older one",
                        path, reason)
        print(f"gtalign: checkpoint {path} failed to restore ({reason}); moved aside, "
              "trying the next older one", flush=True)
        failures.append(f"step {step}: {reason}")
        self._set_aside(step, ".corrupt")
    if failures:
      raise InvalidInput(f"no checkpoint in {self.directory} restores ({'; '.join(failures)}); "
                         f"remove {self.directory} to start the run over")
    return None

  def _set_aside(self, step: int, suffix: str) -> None:
    if jax.process_index() == 0:
      path = os.path.join(self.directory, str(step))
      os.rename(path, f"{path}{suffix}-{time.time_ns()}")
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"gtalign_checkpoint_set_aside_{step}")
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until an in-flight async save is committed (call before reading the directory)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def due(step: int, sft_steps: int, total_steps: int, every: int, sft_every: int) -> bool:
  """Whether the state after `step` steps is saved: every `sft_every` warm-start steps and at
  the warm start's end (where RL starts), every `every` steps after it, and at the last step.
  A warm-start step costs a few seconds and a save about two on 2 cores (the step after it
  shares the cores with the background write: bench/checkpoint_cost.py), so the warm start
  saves less often than RL, whose steps cost minutes."""
  if step in (sft_steps, total_steps):
    return True
  return step % (sft_every if step < sft_steps else every) == 0


def read_latest(directory: str | os.PathLike) -> tuple[int, Any, dict]:
  """(step, state as stored, meta) of the newest committed step in `directory`, read-only: no
  directory is created, renamed or cleaned, so a live run's checkpoints can be read beside it.
  The state comes back as nested dicts of host arrays, in the shapes and dtypes it was saved."""
  directory = os.path.abspath(os.fspath(directory))
  steps = sorted(int(d) for d in (os.listdir(directory) if os.path.isdir(directory) else [])
                 if d.isdigit() and os.path.isfile(os.path.join(directory, d, COMMIT_FILE)))
  if not steps:
    raise InvalidInput(f"{directory} has no committed checkpoint")
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                                      cleanup_tmp_directories=False),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler()})
  stored = manager.item_metadata(steps[-1])["state"]
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                                         sharding=_default_sharding()),
                          getattr(stored, "tree", stored))
  out = manager.restore(steps[-1], args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  manager.close()
  return steps[-1], jax.tree.map(np.asarray, out["state"]), dict(out["meta"])


def _set_aside_uncommitted_steps(directory: str) -> None:
  """Renames digit-named step dirs without a commit file to `<name>.incomplete-<ts>`, except
  those older than the newest committed step: orbax deletes old steps (`max_to_keep`) in place,
  so such a directory is a deletion a kill interrupted, and it is finished here."""
  if jax.process_index() == 0:
    names = [n for n in os.listdir(directory)
             if n.isdigit() and os.path.isdir(os.path.join(directory, n))]
    committed = [int(n) for n in names if os.path.isfile(os.path.join(directory, n, COMMIT_FILE))]
    for name in sorted(set(names) - {str(c) for c in committed}, key=int):
      path = os.path.join(directory, name)
      if committed and int(name) < max(committed):
        logging.warning("checkpoint step %s was being deleted (older than step %d); removing "
                        "the rest", name, max(committed))
        shutil.rmtree(path, ignore_errors=True)
        continue
      aside = f"{path}{INCOMPLETE_SUFFIX}-{time.time_ns()}"
      logging.warning("checkpoint step %s is uncommitted (interrupted write); moved to %s",
                      name, aside)
      os.rename(path, aside)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("gtalign_checkpoint_set_aside")


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def shape_differences(stored_tree: Any, abstract: Any) -> list[str]:
  """Leaves whose shapes differ between a checkpoint's stored metadata tree and the state this
  config would restore into, or that only one of them has; named by their path."""
  has_shape = lambda x: hasattr(x, "shape")
  stored = {_path_str(p): tuple(x.shape) for p, x in
            jax.tree_util.tree_flatten_with_path(stored_tree, is_leaf=has_shape)[0]
            if has_shape(x)}
  wanted = {_path_str(p): tuple(x.shape) for p, x in
            jax.tree_util.tree_flatten_with_path(abstract)[0] if has_shape(x)}
  diffs = [f"{k}: checkpoint {stored[k]}, this config {wanted[k]}"
           for k in sorted(wanted) if k in stored and stored[k] != wanted[k]]
  diffs += [f"{k}: missing from the checkpoint" for k in sorted(set(wanted) - set(stored))]
  diffs += [f"{k}: not in this config" for k in sorted(set(stored) - set(wanted))]
  return diffs


def _one_line(e: BaseException, limit: int = 300) -> str:
  text = " ".join(f"{type(e).__name__}: {e}".split())
  return text if len(text) <= limit else text[:limit] + "..."


def _abstract_leaf(x: Any) -> Any:
  if isinstance(x, jax.ShapeDtypeStruct):
    if x.sharding is not None:
      return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_default_sharding())
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  if isinstance(x, (np.ndarray, np.generic)):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_default_sharding())
  return x


def _default_sharding() -> jax.sharding.Sharding:
  if jax.process_count() > 1:
    raise ValueError("abstract_state leaf has no sharding; with several processes every leaf "
                     "needs one (orbax would otherwise place it process-locally)")
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _json_default(x: Any) -> Any:
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, (np.ndarray, jax.Array)):
    return np.asarray(x).tolist()
  raise TypeError(f"checkpoint meta value of type {type(x).__name__} is not JSON-serialisable")
