"""Gathers concurrent chat requests into shared sampler batches, on one worker thread.

Requests wait in a bounded queue (a full queue is the server's 429). The worker waits
`gather_ms` after a request arrives for others to join, then takes the oldest request and every
queued one that samples the same way (temperature, top-p, stop strings), up to
`max_rows` rows, and decodes them together in chunks of `chunk_steps` tokens: between chunks
it hands each request its new text (streaming), and stops the rows of requests whose client
went away or that reached their own `max_tokens`. Shapes are bucketed so a handful of programs
serve every request: rows to a power of four, at most `max_rows` (padding rows are stopped at
once), the token budget to a power of two of at least 16, prompts to the sampler's length
buckets.

Each request's randomness depends only on its seed: row j of a request samples from the
stream (seed, j), wherever it sits in the batch and whoever shares it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
import threading
import time
from typing import Any

from gtalign.sampling.continuation import Resume
from gtalign.sampling.sampler import Sampler, SamplingConfig


class QueueFull(RuntimeError):
  """The bounded request queue is full; retry after a moment."""


def _power_at_least(n: int, floor: int = 1, base: int = 2) -> int:
  size = floor
  while size < n:
    size *= base
  return size


@dataclasses.dataclass
class Job:
  """One request's rows and the channel back to its handler (an asyncio queue)."""

  prompt_ids: list[int]
  n: int
  max_tokens: int
  temperature: float
  top_p: float
  stop: tuple[str, ...]
  seed: int
  loop: asyncio.AbstractEventLoop
  resume: Resume | None = None  # continue from a completion begun (a game's second phase)
  events: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
  cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
  submitted: float = dataclasses.field(default_factory=time.perf_counter)

  @property
  def group(self) -> tuple:
    return (self.temperature, self.top_p, self.stop)

  def send(self, kind: str, payload: Any) -> None:
    """Thread-safe: queue (kind, payload) for the handler's event loop."""
    try:
      self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
    except RuntimeError:  # the loop is gone (server shutting down)
      self.cancelled.set()


class Engine:
  """The worker thread that owns the sampler; `submit` is called from the event loop."""

  def __init__(self, sampler: Sampler, params, max_rows: int = 16, max_queue: int = 64,
               chunk_steps: int = 16, gather_ms: float = 5.0):
    self.sampler, self.params = sampler, params
    self.max_rows, self.max_queue, self.chunk_steps = max_rows, max_queue, chunk_steps
    self.gather_s = gather_ms / 1e3
    self._pending: collections.deque[Job] = collections.deque()
    self._cv = threading.Condition()
    self._stopped = False
    self.batches = 0  # counters for /health and the load test
    self.rows_served = 0
    self.rows_cancelled = 0  # rows stopped because their client went away
    self.active_rows = 0
    self.last_batch_steps = 0
    self._thread = threading.Thread(target=self._run, name="gtalign-engine", daemon=True)
    self._thread.start()

  def submit(self, job: Job, force: bool = False) -> None:
    """Queues `job`; `force` (the second phase of a request already admitted) skips the
    bound, so a request is never refused halfway."""
    with self._cv:
      if not force and len(self._pending) >= self.max_queue:
        raise QueueFull(f"{len(self._pending)} requests are waiting (the queue holds "
                        f"{self.max_queue})")
      self._pending.append(job)
      self._cv.notify()

  @property
  def queued(self) -> int:
    return len(self._pending)

  def close(self) -> None:
    with self._cv:
      self._stopped = True
      self._cv.notify()
    self._thread.join(timeout=5)

  def _take_batch(self) -> list[Job]:
    """The oldest live job plus queued jobs of the same group, within `max_rows`."""
    with self._cv:
      while not self._stopped and not self._pending:
        self._cv.wait()
      if self._stopped:
        return []
      # a short gathering window: requests that arrive together are decoded together
      deadline = time.perf_counter() + self.gather_s
      while (sum(j.n for j in self._pending) < self.max_rows and not self._stopped
             and time.perf_counter() < deadline):
        self._cv.wait(timeout=max(0.0, deadline - time.perf_counter()))
      while self._pending and self._pending[0].cancelled.is_set():
        self._pending.popleft()
      if not self._pending:
        return []
      first = self._pending.popleft()
      batch, rows, rest = [first], first.n, collections.deque()
      while self._pending:
        job = self._pending.popleft()
        if job.cancelled.is_set():
          continue
        if job.group == first.group and rows + job.n <= self.max_rows:
          batch.append(job)
          rows += job.n
        else:
          rest.append(job)
      self._pending.extendleft(reversed(rest))
      return batch

  def _run(self) -> None:
    while not self._stopped:
      batch = self._take_batch()
      if not batch:
        continue
      try:
        self._serve(batch)
      except Exception as e:  # a failed batch fails its requests, never the server
        logging.exception("batch of %d requests failed", len(batch))
        for job in batch:
          job.send("error", f"generation failed: {type(e).__name__}: {e}")

  def _serve(self, batch: list[Job]) -> None:
    first = batch[0]
    budget = _power_at_least(max(j.max_tokens for j in batch), 16)
    sampling = SamplingConfig(max_new_tokens=budget, temperature=first.temperature,
                              top_p=first.top_p, stop=first.stop, seed=0)
    prompts, seeds, offsets, owner, resumes = [], [], [], [], []
    for k, job in enumerate(batch):
      for j in range(job.n):
        prompts.append(job.prompt_ids)
        seeds.append(job.seed)
        offsets.append(j)
        owner.append((k, j))
        resumes.append(job.resume)
    real = len(prompts)
    padded = min(_power_at_least(real, base=4), max(real, self.max_rows))
    prompts += [prompts[0]] * (padded - real)
    seeds += [0] * (padded - real)
    offsets += [0] * (padded - real)
    resumes += [resumes[0]] * (padded - real)
    generation = self.sampler.start(self.params, prompts, sampling, prompt_indices=seeds,
                                    sample_offsets=offsets,
                                    resumes=resumes if any(resumes) else None)
    generation.cancel(list(range(real, padded)))
    self.active_rows = real
    sent = [[0] * job.n for job in batch]  # characters already streamed, per row
    finished = [[False] * job.n for job in batch]
    while True:
      tokens, reasons = generation.snapshot()
      stop_rows = []
      for r in range(real):
        k, j = owner[r]
        job = batch[k]
        if finished[k][j]:
          continue
        if job.cancelled.is_set():
          stop_rows.append(r)
          finished[k][j] = True
          self.rows_cancelled += 1
          continue
        row_tokens, reason = row_outcome(tokens[r], reasons[r], job.max_tokens)
        over = len(tokens[r]) >= job.max_tokens
        text = generation.text(row_tokens, reason if reason != "running" else "length", row=r)
        if reason == "running":
          text = _stable_prefix(text, job.stop)
        if len(text) > sent[k][j]:
          job.send("delta", (j, text[sent[k][j]:]))
          sent[k][j] = len(text)
        if reason != "running":
          finished[k][j] = True
          if over:
            stop_rows.append(r)
          job.send("finish", (j, reason, len(row_tokens),
                              [*(job.resume.ids if job.resume else ()), *map(int, row_tokens)]))
          if all(finished[k]):  # answer now: its client can send the next request meanwhile
            job.send("done", {"prompt_tokens": len(job.prompt_ids)})
      generation.cancel(stop_rows)
      if all(all(f) for f in finished) or generation.done:
        break
      generation.advance(self.chunk_steps)
    self.batches += 1
    self.rows_served += real
    self.active_rows = 0
    self.last_batch_steps = generation.step


def row_outcome(tokens, sampler_reason: str, max_tokens: int):
  """(the tokens a request keeps, its finish reason) for one row of a batch whose budget may
  exceed the request's `max_tokens`: a row that ran past it is cut there and finished by
  "length", even if it reached EOS or a stop string later."""
  if len(tokens) > max_tokens:
    return tokens[:max_tokens], "length"
  if sampler_reason == "running" and len(tokens) == max_tokens:
    return tokens, "length"
  return tokens, sampler_reason


def _stable_prefix(text: str, stops: tuple[str, ...]) -> str:
  """What of a running row's text can be streamed: not a trailing partial character, and not
  a tail that could still grow into a stop string (it would have to be taken back)."""
  text = text.rstrip("\ufffd")
  hold = 0
  for stop in stops:
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
      if text.endswith(stop[:size]):
        hold = max(hold, size)
        break
  return text[:len(text) - hold] if hold else text


def random_seed() -> int:
  return random.randrange(2 ** 31)
