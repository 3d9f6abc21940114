"""Training metrics out to three sinks: a console line, TensorBoard and JSON lines.

`metrics.jsonl` is the record the plots and tables read (`read_metrics`); TensorBoard is for
watching a run live; the console line is for the log file. Every sink appends, so a run resumed
from a checkpoint continues the same files. Steps logged by the killed run after its last
checkpoint are re-run on resume: given `start_step`, the JSONL files are first cut back to it
(`truncate_after`), so they read as one uninterrupted run, and TensorBoard hides the stale points
(its `purge_step`). `read_metrics` also resolves older logs that were appended across a resume.
"""

from __future__ import annotations

import collections
import glob
import json
import math
import numbers
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
ROLLOUTS_FILE = "rollouts.jsonl"
TB_DIR = "tb"
CONSOLE_KEYS = ("loss", "kl", "welfare", "user", "llm", "format_ok")
_RATE_WINDOW = 20  # writes the step rate is averaged over: long enough to be steady, short
                   # enough that the first step's compile time soon drops out of it


class MetricsWriter:
  """Writes one step's scalar metrics to the console, TensorBoard and `metrics.jsonl`.

  `every` thins only the console line (files get every call). `start_step` is the step the run
  starts (or resumes) from: it anchors the first rate/ETA, purges stale TensorBoard points and
  cuts the JSONL logs back to it (0, a fresh start: earlier logs are moved to `*.prev-<ns>`);
  without it the first line has no rate yet. `tokens` in the metrics, if present, is the number
  of tokens processed in that step. Only process 0 writes unless `active` says otherwise, so
  every process of a multi-host run can call `write` unconditionally.
  """

  def __init__(self, workdir: str | os.PathLike, total_steps: int, every: int = 1, *,
               start_step: int | None = None, console_keys: Sequence[str] = CONSOLE_KEYS,
               active: bool | None = None, stream=None, eta=None):
    if active is None:
      import jax  # pylint: disable=g-import-not-at-top
      active = jax.process_index() == 0
    self.workdir = os.fspath(workdir)
    self.total_steps = total_steps
    self.every = max(1, int(every))
    self.active = active
    self._console_keys = tuple(console_keys)
    self._stream = stream
    self.eta = eta  # a training.eta.Eta: per-phase step costs and evaluations to come
    self._t0 = time.monotonic()
    # (time, step, tokens) of recent writes; the start anchor carries no tokens
    self._window = collections.deque(maxlen=_RATE_WINDOW)
    if start_step is not None:
      self._window.append((self._t0, start_step, None))
    self._tb = self._metrics_f = self._rollouts_f = None
    if not active:
      return
    os.makedirs(self.workdir, exist_ok=True)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    # purge_step: TensorBoard drops points >= it from earlier event files, i.e. the killed run's
    # steps after the checkpoint that this run is about to log again.
    purge = None if start_step is None else start_step + 1
    # tensorboardX names event files by the second and opens them "wb": without a unique
    # suffix a writer started within the same second (a quick restart) truncates the last one.
    self._tb = SummaryWriter(os.path.join(self.workdir, TB_DIR), purge_step=purge,
                             flush_secs=30, filename_suffix=f".{os.getpid()}.{time.time_ns()}")
    for name in (METRICS_FILE, ROLLOUTS_FILE):
      path = os.path.join(self.workdir, name)
      for stale in glob.glob(f"{glob.escape(path)}.tmp-*"):  # a kill during truncate_after
        os.remove(stale)
      if start_step:  # resumed: the killed run's lines after its checkpoint are redone
        truncate_after(path, start_step)
      elif start_step == 0 and os.path.isfile(path) and os.path.getsize(path):
        # a fresh start in a workdir with logs but no checkpoint: keep them, beside
        os.replace(path, f"{path}.prev-{time.time_ns()}")
    # append + line buffering: a kill loses at most the line being written
    self._metrics_f = open(os.path.join(self.workdir, METRICS_FILE), "a", buffering=1,
                           encoding="utf-8")

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Logs one step; non-numeric values go to `metrics.jsonl` only."""
    now = time.monotonic()
    tokens = _as_float(metrics.get("tokens"))
    self._window.append((now, step, tokens))
    seconds = _as_float(metrics.get("step_seconds"))
    if self.eta is not None and seconds is not None:
      self.eta.record_step(step - 1, seconds)
    if not self.active:
      return
    scalars = {k: f for k, v in metrics.items() if (f := _as_float(v)) is not None}
    for key, value in scalars.items():
      self._tb.add_scalar(key, value, global_step=step)
    record = {"step": int(step), "time": time.time(), **metrics}
    self._metrics_f.write(json.dumps(record, default=_json_default) + "\n")
    if step % self.every == 0 or step >= self.total_steps:
      print(self._console_line(step, scalars, now), file=self._stream or sys.stdout, flush=True)

  def write_rollouts(self, step: int, records: Iterable[Mapping[str, Any]]) -> None:
    """Appends sample rollouts (prompt, completion, rewards...) to `rollouts.jsonl`."""
    if not self.active:
      return
    if self._rollouts_f is None:
      self._rollouts_f = open(os.path.join(self.workdir, ROLLOUTS_FILE), "a", encoding="utf-8")
    for r in records:
      self._rollouts_f.write(json.dumps({"step": int(step), **r}, default=_json_default) + "\n")
    self._rollouts_f.flush()

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()
    for f in (self._metrics_f, self._rollouts_f):
      if f is not None:
        f.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
    for f in (self._metrics_f, self._rollouts_f):
      if f is not None:
        f.close()
    self._tb = self._metrics_f = self._rollouts_f = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _console_line(self, step: int, scalars: Mapping[str, float], now: float) -> str:
    width = len(str(self.total_steps))
    pct = 100.0 * step / max(self.total_steps, 1)
    parts = [f"step {step:>{width}}/{self.total_steps} ({pct:.0f}%)"]
    steps_per_s = tokens_per_s = None
    (t_a, s_a, _), (t_b, s_b, _) = self._window[0], self._window[-1]
    if s_b > s_a and t_b > t_a:
      steps_per_s = (s_b - s_a) / (t_b - t_a)
      toks = [t for _, _, t in self._window if t is not None]
      if toks:
        tokens_per_s = steps_per_s * sum(toks) / len(toks)
    rate = f"{steps_per_s:.3g} step/s" if steps_per_s else "-- step/s"
    if tokens_per_s:
      rate += f" {_si(tokens_per_s)} tok/s"
    parts.append(rate)
    parts.append(f"elapsed {_hms(now - self._t0)}")
    if self.eta is not None:
      eta = self.eta.remaining(step)
    else:
      eta = (self.total_steps - step) / steps_per_s if steps_per_s else None
    parts.append(f"eta {_hms(eta) if eta is not None else '--'}")
    keys = [k for k in self._console_keys if k in scalars] or sorted(scalars)[:4]
    if keys:
      parts.append(" ".join(f"{k} {scalars[k]:.4g}" for k in keys))
    return " | ".join(parts)


def truncate_after(path: str, step: int) -> None:
  """Keeps the lines of a JSONL log whose "step" is at most `step` (and drops a line a kill cut
  off), so that a resumed run's log reads as one uninterrupted run. The file is replaced
  atomically: a kill during this leaves the old file or the new one."""
  if not os.path.isfile(path):
    return
  kept, dropped = [], False
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        dropped = True
        continue
      if isinstance(record, dict) and record.get("step", step + 1) <= step:
        kept.append(line if line.endswith("\n") else line + "\n")
      else:
        dropped = True
  if not dropped:
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """Records of `metrics.jsonl` by ascending step, one per step, resumes resolved.

  A step lower than one already read marks a resume: the earlier records from that step on were
  logged by the killed run after its checkpoint, and are dropped for the re-run's. Records of
  the same step are merged (later keys win), so an eval written separately at a training step
  joins it. A truncated last line (a kill mid-write) is skipped.
  """
  path = os.path.join(os.fspath(workdir), METRICS_FILE)
  if not os.path.isfile(path):
    return []
  kept: list[dict[str, Any]] = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if not isinstance(record, dict) or "step" not in record:
        continue
      step = record["step"]
      if kept and step < kept[-1]["step"]:
        while kept and kept[-1]["step"] >= step:
          kept.pop()
      if kept and kept[-1]["step"] == step:
        kept[-1].update(record)
      else:
        kept.append(record)
  return kept


def _as_float(v: Any) -> float | None:
  """A real scalar (python, numpy or 0-d array) as float, else None."""
  if isinstance(v, numbers.Real):
    return float(v)
  if hasattr(v, "shape") and getattr(v, "shape", None) == () and hasattr(v, "dtype"):
    try:
      return float(v)
    except (TypeError, ValueError):
      return None
  return None


def _json_default(x: Any) -> Any:
  if isinstance(x, np.generic):
    return x.item()
  if hasattr(x, "__array__"):
    return np.asarray(x).tolist()
  return str(x)  # a log line should never crash a run


def _hms(seconds: float) -> str:
  if seconds is None or not math.isfinite(seconds):
    return "--"
  s = int(round(seconds))
  h, rem = divmod(s, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _si(x: float) -> str:
  for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(x) >= scale:
      return f"{x / scale:.3g}{unit}"
  return f"{x:.3g}"
