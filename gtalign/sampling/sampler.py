"""Batched sampling: one jitted prefill, one jitted `lax.while_loop` decode, a donated state.

Rows are (prompt, sample) pairs: prompts are left-padded to a length bucket and prefilled once;
the cache is then repeated `num_samples` times. Each row draws its randomness from
(seed, step, prompt index, sample index) only, so a row's completion does not depend on which
other rows share its batch. Parameters are ordinary jit arguments: new weights of the same shapes
reuse the compiled programs.

Cost model: a decode step reads every weight once (shared by all rows) plus, per row, the keys and
values of the smallest cache window covering its context. The cache holds bucket(prompt) +
max_new_tokens slots; attention over it is split into `num_cache_windows` static windows, so a
step costs O(used context) rather than O(capacity), rounded up to the next window.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from gtalign.models.config import ModelConfig
from gtalign.models.tokenizer import Tokenizer
from gtalign.models.transformer import Decoder, KVCache, lm_head
from gtalign.sampling import continuation
from gtalign.sampling import stop as stop_lib
from gtalign.sampling import strategies

FINISH_REASONS = ("running", "eos", "stop", "length")
_RUNNING, _EOS, _STOP, _LENGTH = range(4)
# prompt widths the prefill compiles for (a prompt is left-padded to the next); 384 and 768
# keep a held-out trace continued after its table (~300 tokens) from paying for 512
DEFAULT_BUCKETS = (32, 64, 128, 256, 384, 512, 768, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """What to generate; hashable, and part of the compiled program's identity."""

  max_new_tokens: int = 256
  temperature: float = 1.0  # 0 = greedy
  top_k: int = 0  # 0 = off
  top_p: float = 1.0  # 1 = off
  num_samples: int = 1  # G completions per prompt, sharing one prefill
  stop: tuple[str, ...] = ()  # stop strings, matched on the decoded text
  include_stop_str: bool = False  # keep the stop string at the end of `texts`
  ignore_eos: bool = False  # run every row to max_new_tokens (benchmarks)
  seed: int = 0
  prompt_buckets: tuple[int, ...] = DEFAULT_BUCKETS
  num_cache_windows: int = 4
  # (open, close, T): tokens drawn after `open` has been written and through the token that
  # ends `close` are drawn at T instead of `temperature` (and their log-probs are of logits /
  # T, `SampleOutput.hot` marks them): exploration where a few tokens decide, e.g. the table
  # of a game turn (rl.table_temperature). Ignored when greedy.
  span_temperature: tuple[str, str, float] | None = None
  # with span_temperature: only the span's tokens whose text so far ends with this string
  # (e.g. '":', a JSON number's first token) are drawn at its T; "" = all of them
  span_after: str = ""
  # with span_temperature: > 0, a hot token is drawn from the `span_top_k` likeliest only (its
  # log-prob stays that of logits / T over the whole vocabulary, as top_k's): at T = 2 a
  # table's numbers drew "V.0" and " pericardial" from the vocabulary's tail
  span_top_k: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens={self.max_new_tokens}; expected >= 1")
    if self.temperature < 0:
      raise ValueError(f"temperature={self.temperature}; expected >= 0")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p}; expected 0 < top_p <= 1")
    if self.top_k < 0 or self.num_samples < 1:
      raise ValueError(f"top_k={self.top_k}, num_samples={self.num_samples}; expected top_k >= 0 "
                       "and num_samples >= 1")
    if any(not s for s in self.stop):
      raise ValueError("stop strings must be non-empty")
    if self.span_temperature is not None:
      open_, close, temperature = self.span_temperature
      if not open_ or not close or not temperature > 0:
        raise ValueError(f"span_temperature={self.span_temperature}; expected (open, close, T) "
                         "with non-empty strings and T > 0")
    if self.span_top_k < 0:
      raise ValueError(f"span_top_k={self.span_top_k}; expected >= 0")


@dataclasses.dataclass(frozen=True)
class _Program:
  """Static description of one compiled sampler program."""

  model: ModelConfig
  max_new_tokens: int
  temperature: float
  top_k: int
  top_p: float
  num_samples: int
  eos_ids: tuple[int, ...]
  pad_id: int
  stops: tuple[bytes, ...]
  span: tuple[bytes, bytes, float] | None  # SamplingConfig.span_temperature, encoded
  span_after: bytes  # SamplingConfig.span_after, encoded
  span_top_k: int
  window: int  # stop-string (and span-string) byte window
  capacity: int
  cache_windows: tuple[int, ...]


class SamplerState(flax.struct.PyTreeNode):
  """Everything the decode loop carries; donated, so the cache is updated in place."""

  cache: KVCache
  tokens_rn: jax.Array  # int32 [rows, max_new_tokens]
  logprobs_rn: jax.Array  # float32 [rows, max_new_tokens]
  last_token_r: jax.Array  # int32
  position_r: jax.Array  # int32 RoPE position of last_token_r
  done_r: jax.Array  # bool
  finish_r: jax.Array  # int32 index into FINISH_REASONS
  length_r: jax.Array  # int32 tokens emitted
  step: jax.Array  # int32 scalar: decode steps taken
  stop_window_rw: jax.Array  # uint8 rolling bytes of each completion
  prompt_index_r: jax.Array  # int32
  sample_index_r: jax.Array  # int32
  key: jax.Array  # base PRNG key of the seed
  forced_rf: jax.Array  # uint8 [rows, F] bytes a continued row must spell first (F = 0: none)
  forced_len_r: jax.Array  # int32 how many of them are still to spell
  hot_r: jax.Array  # bool: the row's next token is inside SamplingConfig.span_temperature's span
  hot_rn: jax.Array  # bool [rows, max_new_tokens] (no span: [rows, 0]): drawn at its T


@dataclasses.dataclass
class SampleOutput:
  """Per row (prompt-major: prompt i's samples are rows i*G .. i*G+G-1)."""

  tokens: list[np.ndarray]  # completion ids, the final EOS / stop token included
  logprobs: list[np.ndarray]  # float32, per token, see strategies.trainer_logprobs
  texts: list[str]  # decoded, special tokens skipped, cut at the first stop string
  finish_reasons: list[str]  # "eos", "stop" or "length"
  prompt_index: np.ndarray
  sample_index: np.ndarray
  prefill_seconds: float
  decode_seconds: float
  # continued rows only: the completion ids fed before `tokens` (the model's own up to the
  # edit, re-encoded after it), so prefix_tokens[r] + tokens[r] is the whole completion
  prefix_tokens: list[np.ndarray] | None = None
  # with SamplingConfig.span_temperature: per token, drawn at the span's T (bool)
  hot: list[np.ndarray] | None = None

  @property
  def lengths(self) -> np.ndarray:
    return np.asarray([len(t) for t in self.tokens])

  @property
  def num_tokens(self) -> int:
    return int(self.lengths.sum())


def _emit(state: SamplerState, logits_rv: jax.Array, prog: _Program,
          table: stop_lib.TokenBytes) -> SamplerState:
  """Sample one token per running row from `logits_rv` and record it."""
  step = state.step

  def row_uniform(prompt_index, sample_index):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(state.key, prompt_index),
                                                sample_index), step)
    return jax.random.uniform(key, (), jnp.float32)

  uniform_r = jax.vmap(row_uniform)(state.prompt_index_r, state.sample_index_r)
  free_rv = logits_rv
  if state.forced_rf.shape[1]:  # continued rows spell their healed boundary first
    def constrain(x_rv):
      ok_rv = continuation.allowed_tokens(state.forced_rf, state.forced_len_r, table.bytes_vl,
                                          table.len_v)
      return jnp.where(ok_rv, x_rv, -jnp.inf)
    logits_rv = jax.lax.cond(jnp.any(state.forced_len_r > 0), constrain, lambda x: x, logits_rv)
  hot_r = state.hot_r
  if prog.span and prog.span_after:  # only where the text so far ends with span_after
    tail = jnp.asarray(np.frombuffer(prog.span_after, np.uint8))
    hot_r = hot_r & jnp.all(state.stop_window_rw[:, -len(prog.span_after):] == tail, axis=1)
  temperature_r = jnp.where(hot_r, prog.span[2], prog.temperature) if prog.span else None
  if prog.span and prog.span_top_k:
    kth_r1 = jax.lax.top_k(logits_rv, prog.span_top_k)[0][:, -1:]
    logits_rv = jnp.where(hot_r[:, None] & (logits_rv < kth_r1), -jnp.inf, logits_rv)
  token_r = strategies.sample(logits_rv, uniform_r, prog.temperature, prog.top_k, prog.top_p,
                              temperature_r)
  logits_rv = free_rv  # log-probs over the whole vocabulary, as the trainer recomputes them
  logprob_r = jnp.take_along_axis(
      strategies.trainer_logprobs(logits_rv, prog.temperature, temperature_r),
      token_r[:, None], axis=-1)[:, 0]
  running_r = ~state.done_r
  token_r = jnp.where(running_r, token_r, prog.pad_id)
  logprob_r = jnp.where(running_r, logprob_r, 0.0)
  tokens_rn = jax.lax.dynamic_update_slice(state.tokens_rn, token_r[:, None], (0, step))
  logprobs_rn = jax.lax.dynamic_update_slice(state.logprobs_rn, logprob_r[:, None], (0, step))

  eos_r = jnp.isin(token_r, jnp.asarray(prog.eos_ids, jnp.int32)) & running_r
  stop_window_rw, stop_r = state.stop_window_rw, jnp.zeros_like(eos_r)
  drawn_hot_r, hot_r, hot_rn = hot_r, state.hot_r, state.hot_rn
  if prog.stops or prog.span:
    stop_window_rw, new_r = stop_lib.append(state.stop_window_rw, token_r, table)
    stop_r = stop_lib.ends_in_new(stop_window_rw, new_r, prog.stops) & running_r & ~eos_r
  if prog.span:  # this token was drawn hot or not; the next is hot once `open` ends, until
    hot_rn = jax.lax.dynamic_update_slice(hot_rn, (drawn_hot_r & running_r)[:, None], (0, step))
    opened_r = stop_lib.ends_in_new(stop_window_rw, new_r, (prog.span[0],))
    closed_r = stop_lib.ends_in_new(stop_window_rw, new_r, (prog.span[1],))
    hot_r = (hot_r & ~closed_r) | opened_r
  length_r = running_r & ~eos_r & ~stop_r & (step + 1 >= prog.max_new_tokens)
  finish_r = jnp.select([eos_r, stop_r, length_r], [_EOS, _STOP, _LENGTH], state.finish_r)
  forced_rf, forced_len_r = state.forced_rf, state.forced_len_r
  if forced_rf.shape[1]:
    forced_rf, forced_len_r = continuation.consume(forced_rf, forced_len_r,
                                                   jnp.where(running_r, table.len_v[token_r], 0))
  return state.replace(forced_rf=forced_rf, forced_len_r=forced_len_r,
      tokens_rn=tokens_rn, logprobs_rn=logprobs_rn, last_token_r=token_r,
      done_r=state.done_r | eos_r | stop_r | length_r, finish_r=finish_r,
      length_r=state.length_r + running_r.astype(jnp.int32), step=step + 1,
      stop_window_rw=stop_window_rw, hot_r=hot_r, hot_rn=hot_rn)


@functools.partial(jax.jit, static_argnums=0)
def _prefill(prog: _Program, params, tokens_bt, mask_bt, prompt_index_b, sample_offset_b, key,
             table: stop_lib.TokenBytes, forced_bf, forced_len_b, window_bw,
             hot_b) -> SamplerState:
  """Prefill each prompt once, repeat the cache for its samples, emit the first tokens."""
  b, t = tokens_bt.shape
  g = prog.num_samples
  positions_bt = jnp.maximum(jnp.cumsum(mask_bt.astype(jnp.int32), axis=1) - 1, 0)
  cache = KVCache.init(prog.model, b, prog.capacity)
  hidden_bte, cache = Decoder(prog.model, prog.cache_windows).apply(
      {"params": params}, tokens_bt, positions_bt, cache, attention_mask_bt=mask_bt,
      return_hidden=True)
  # only the last position's logits are needed: a [b, t, vocab] float32 array is GBs for a
  # batch of long prompts, and is made once per device when the batch is replicated
  logits_bv = lm_head(prog.model, params, hidden_bte[:, -1:])[:, 0]
  repeat = lambda x: jnp.repeat(x, g, axis=0)
  cache = KVCache(k=tuple(map(repeat, cache.k)), v=tuple(map(repeat, cache.v)),
                  valid_bs=repeat(cache.valid_bs), length=cache.length)
  rows = b * g
  state = SamplerState(
      cache=cache,
      tokens_rn=jnp.full((rows, prog.max_new_tokens), prog.pad_id, jnp.int32),
      logprobs_rn=jnp.zeros((rows, prog.max_new_tokens), jnp.float32),
      last_token_r=jnp.zeros((rows,), jnp.int32),
      position_r=repeat(positions_bt[:, -1]),
      done_r=jnp.zeros((rows,), bool),
      finish_r=jnp.zeros((rows,), jnp.int32),
      length_r=jnp.zeros((rows,), jnp.int32),
      step=jnp.zeros((), jnp.int32),
      stop_window_rw=repeat(window_bw),
      prompt_index_r=repeat(prompt_index_b),
      sample_index_r=repeat(sample_offset_b) + jnp.tile(jnp.arange(g, dtype=jnp.int32), b),
      key=key, forced_rf=repeat(forced_bf), forced_len_r=repeat(forced_len_b),
      hot_r=repeat(hot_b),
      hot_rn=jnp.zeros((rows, prog.max_new_tokens if prog.span else 0), bool))
  return _emit(state, repeat(logits_bv), prog, table)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _decode(prog: _Program, params, state: SamplerState, table: stop_lib.TokenBytes,
            until_step: jax.Array) -> SamplerState:
  """Decode until every row is done, the token budget is spent, or `until_step` steps are
  taken (a traced scalar: chunked decoding reuses the one compiled program)."""
  model = Decoder(prog.model, prog.cache_windows)
  limit = jnp.minimum(until_step, prog.max_new_tokens)

  def cond(s: SamplerState):
    return (s.step < limit) & ~jnp.all(s.done_r)

  def body(s: SamplerState):
    position_r = s.position_r + 1
    logits_r1v, cache = model.apply({"params": params}, s.last_token_r[:, None],
                                    position_r[:, None], s.cache)
    s = s.replace(cache=cache, position_r=position_r)
    return _emit(s, logits_r1v[:, 0], prog, table)

  return jax.lax.while_loop(cond, body, state)


def _bucket(n: int, buckets: Sequence[int]) -> int:
  for b in sorted(buckets):
    if b >= n:
      return b
  return n  # longer than every bucket: compile for the exact length


def _cache_windows(capacity: int, count: int) -> tuple[int, ...]:
  step = -(-capacity // count)
  step = -(-step // 16) * 16  # multiples of 16 slots
  return tuple(sorted({min(capacity, step * (i + 1)) for i in range(count)} | {capacity}))


class Sampler:
  """Generates completions for a model and tokenizer; reusable across parameter updates."""

  def __init__(self, model_config: ModelConfig, tokenizer: Tokenizer):
    self.model_config = model_config
    self.tokenizer = tokenizer
    self._token_bytes = tokenizer.token_bytes()
    self._table = stop_lib.TokenBytes.from_list(self._token_bytes, model_config.vocab_size)

  def _program(self, sampling: SamplingConfig, prompt_len: int) -> _Program:
    stops = tuple(s.encode("utf-8") for s in sampling.stop)
    span = sampling.span_temperature
    span = ((span[0].encode("utf-8"), span[1].encode("utf-8"), float(span[2]))
            if span and sampling.temperature > 0 else None)
    capacity = prompt_len + sampling.max_new_tokens
    return _Program(
        model=self.model_config, max_new_tokens=sampling.max_new_tokens,
        temperature=float(sampling.temperature), top_k=sampling.top_k,
        top_p=float(sampling.top_p), num_samples=sampling.num_samples,
        eos_ids=() if sampling.ignore_eos else tuple(self.tokenizer.eos_ids),
        pad_id=self.tokenizer.pad_id, stops=stops, span=span,
        span_after=sampling.span_after.encode("utf-8") if span else b"",
        span_top_k=sampling.span_top_k if span else 0,
        window=max(1, stop_lib.window_size(
            stops + (span[:2] + (sampling.span_after.encode("utf-8"),) if span else ()),
            self._table.max_len)), capacity=capacity,
        cache_windows=_cache_windows(capacity, sampling.num_cache_windows))

  def generate(self, params, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
               prompt_indices: Sequence[int] | None = None,
               sample_offsets: Sequence[int] | None = None) -> SampleOutput:
    """Samples `sampling.num_samples` completions for each tokenized prompt.

    `prompt_indices` (default 0..B-1) and `sample_offsets` (default 0) name each row's random
    stream: row (i, j) uses prompt index `prompt_indices[i]` and sample index
    `sample_offsets[i] + j`, wherever it sits in the batch.
    """
    generation = self.start(params, prompts, sampling, prompt_indices, sample_offsets)
    generation.advance()
    return generation.result()

  def start(self, params, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
            prompt_indices: Sequence[int] | None = None,
            sample_offsets: Sequence[int] | None = None,
            resumes: Sequence[continuation.Resume | None] | None = None) -> "Generation":
    """Prefills the prompts and emits every row's first token; `Generation.advance` decodes
    the rest, all at once or in chunks (arguments as in `generate`).

    `resumes[i]` (see `continue_from`) continues prompt i from a completion begun: its ids follow
    the prompt, and its forced bytes are spelled before the model is free.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
      raise ValueError("every prompt needs at least one token")
    b = len(prompts)
    prompt_indices = np.arange(b) if prompt_indices is None else np.asarray(prompt_indices)
    sample_offsets = np.zeros(b) if sample_offsets is None else np.asarray(sample_offsets)
    if prompt_indices.shape != (b,) or sample_offsets.shape != (b,):
      raise ValueError(f"prompt_indices and sample_offsets need one entry per prompt ({b})")
    resumes = [None] * b if resumes is None else list(resumes)
    if len(resumes) != b:
      raise ValueError(f"{b} prompts but {len(resumes)} resumes")
    rows = [list(p) + (list(r.ids) if r else []) for p, r in zip(prompts, resumes)]
    width = _bucket(max(len(p) for p in rows), sampling.prompt_buckets)
    tokens_bt = np.full((b, width), self.tokenizer.pad_id, np.int32)
    mask_bt = np.zeros((b, width), bool)
    for i, p in enumerate(rows):
      tokens_bt[i, width - len(p):] = p
      mask_bt[i, width - len(p):] = True
    prog = self._program(sampling, width)
    forced_bf, forced_len_b = continuation.forced_array(
        [r or continuation.Resume((), b"", 0, "") for r in resumes])
    window_bw = np.zeros((b, prog.window), np.uint8)
    hot_b = np.zeros((b,), bool)
    for i, r in enumerate(resumes):  # a stop string may begin in the text continued from
      spelled = self._spell(r.ids) if r else b""
      tail = spelled[-prog.window:]
      window_bw[i, prog.window - len(tail):] = np.frombuffer(tail, np.uint8)
      if prog.span:  # continued from inside the span: still hot
        hot_b[i] = spelled.rfind(prog.span[0]) > spelled.rfind(prog.span[1])
    key = jax.random.PRNGKey(sampling.seed)

    start = time.perf_counter()
    state = _prefill(prog, params, tokens_bt, mask_bt, prompt_indices.astype(np.int32),
                     sample_offsets.astype(np.int32), key, self._table, forced_bf, forced_len_b,
                     window_bw, hot_b)
    jax.block_until_ready(state.done_r)
    row_resumes = [r for r in resumes for _ in range(sampling.num_samples)]
    return Generation(self, prog, params, state, sampling, time.perf_counter() - start,
                      row_resumes)

  def _spell(self, ids: Sequence[int]) -> bytes:
    return b"".join(self._token_bytes[int(i)] for i in ids)

  def _text(self, tokens: np.ndarray, reason: str, sampling: SamplingConfig,
            resume: continuation.Resume | None = None) -> str:
    """The decoded completion, cut at its first stop string; a continued row's text is what
    follows `resume.text` (a stop string may begin in that text, as one generation sees it)."""
    full, begin = self.tokenizer.decode(tokens), 0
    if resume is not None:
      joined = self.tokenizer.decode(list(resume.ids) + [int(t) for t in tokens])
      if joined.startswith(resume.text):
        full, begin = joined, len(resume.text)
      else:  # a decode that does not give the text back: drop the spelled bytes alone
        spelled = resume.forced.decode("utf-8", errors="ignore")
        begin = len(spelled) if full.startswith(spelled) else 0
    if reason == "stop":
      hits = [(at, s) for s in sampling.stop
              if (at := full.find(s, max(0, begin - len(s) + 1))) >= 0]
      if hits:
        at, s = min(hits)
        return full[begin:max(begin, at + len(s) if sampling.include_stop_str else at)]
    return full[begin:]

  def continue_from(self, params, prompts: Sequence[Sequence[int]], prefixes: Sequence[str],
                    sampling: SamplingConfig, prompt_indices: Sequence[int] | None = None,
                    sample_offsets: Sequence[int] | None = None,
                    prefix_tokens: Sequence[Sequence[int] | None] | None = None) -> SampleOutput:
    """Continues each row from `prompt + prefix`, where `prefix` is completion text the model
    wrote, possibly edited on the host; one continuation per row.

    `prefix_tokens[i]` are the ids the model wrote for row i (its completion; it may run past
    the cut, e.g. `SampleOutput.tokens` of a generation stopped at "</payoff>"). They are kept
    up to the first edited byte and only the rest is re-encoded, its last token spelled again
    by the model (`continuation.plan`): an unedited cut continues exactly as one greedy
    generation would. Without them the whole prefix is re-encoded, with the same healed end.
    The output's `tokens` start with the token(s) spelling that end; `texts` hold only what
    follows the prefix; `prefix_tokens` hold the ids fed for the prefix.
    """
    if len(prompts) != len(prefixes):
      raise ValueError(f"{len(prompts)} prompts but {len(prefixes)} prefixes")
    resumes = self.plan(prefixes, prefix_tokens)
    generation = self.start(params, prompts, dataclasses.replace(sampling, num_samples=1),
                            prompt_indices, sample_offsets, resumes=resumes)
    generation.advance()
    return generation.result()

  def plan(self, prefixes: Sequence[str],
           prefix_tokens: Sequence[Sequence[int] | None] | None = None
           ) -> list[continuation.Resume]:
    """`continuation.plan` for each prefix with this sampler's tokenizer."""
    return continuation.plans(self.tokenizer, self._token_bytes, prefixes, prefix_tokens)


class Generation:
  """One batch being decoded: `advance` runs more decode steps (all by default), `snapshot`
  copies what each row has so far to the host, `cancel` stops rows (a client that went away),
  `result` is the `SampleOutput` of `Sampler.generate`."""

  def __init__(self, sampler: Sampler, prog: _Program, params, state: SamplerState,
               sampling: SamplingConfig, prefill_seconds: float,
               resumes: Sequence[continuation.Resume | None]):
    self._sampler, self._prog, self._params, self._state = sampler, prog, params, state
    self._sampling = sampling
    self.resumes = list(resumes)  # per row
    self.prefill_seconds = prefill_seconds
    self.decode_seconds = 0.0
    self.num_rows = int(state.done_r.shape[0])

  @property
  def step(self) -> int:
    return int(self._state.step)

  @property
  def done(self) -> bool:
    return self.step >= self._prog.max_new_tokens or bool(jnp.all(self._state.done_r))

  def advance(self, steps: int | None = None) -> None:
    """Decodes `steps` more tokens per running row (default: until every row is done)."""
    until = self._prog.max_new_tokens if steps is None else self.step + steps
    start = time.perf_counter()
    self._state = _decode(self._prog, self._params, self._state, self._sampler._table,
                          jnp.asarray(until, jnp.int32))
    jax.block_until_ready(self._state.done_r)
    self.decode_seconds += time.perf_counter() - start

  def cancel(self, rows: Sequence[int]) -> None:
    """Marks `rows` finished ("length") so they emit nothing more and stop holding the loop."""
    if not len(rows):
      return
    stop_r = np.zeros((self.num_rows,), bool)
    stop_r[np.asarray(rows)] = True
    stop_r = jnp.asarray(stop_r) & ~self._state.done_r
    self._state = self._state.replace(
        done_r=self._state.done_r | stop_r,
        finish_r=jnp.where(stop_r, _LENGTH, self._state.finish_r))

  def snapshot(self) -> tuple[list[np.ndarray], list[str]]:
    """(tokens so far, finish reason or "running") per row."""
    tokens_rn, length_r, finish_r = jax.device_get(
        (self._state.tokens_rn, self._state.length_r, self._state.finish_r))
    return ([tokens_rn[r, :length_r[r]] for r in range(self.num_rows)],
            [FINISH_REASONS[f] for f in finish_r])

  def text(self, tokens: np.ndarray, reason: str, row: int | None = None) -> str:
    """Row `row`'s text as `SampleOutput.texts` has it (cut at its stop string once stopped;
    for a continued row, what follows the text it continues)."""
    resume = self.resumes[row] if row is not None else None
    return self._sampler._text(tokens, reason, self._sampling, resume)

  def result(self) -> SampleOutput:
    start = time.perf_counter()
    tokens_rn, logprobs_rn, length_r, finish_r, prompt_r, sample_r, hot_rn = jax.device_get(
        (self._state.tokens_rn, self._state.logprobs_rn, self._state.length_r,
         self._state.finish_r, self._state.prompt_index_r, self._state.sample_index_r,
         self._state.hot_rn))
    self.decode_seconds += time.perf_counter() - start
    tokens = [tokens_rn[r, :length_r[r]] for r in range(len(length_r))]
    finish = [FINISH_REASONS[f] for f in finish_r]
    texts = [self.text(t, reason, r) for r, (t, reason) in enumerate(zip(tokens, finish))]
    prefix = ([np.asarray(r.ids if r else (), np.int32) for r in self.resumes]
              if any(self.resumes) else None)
    return SampleOutput(tokens=tokens, logprobs=[logprobs_rn[r, :length_r[r]]
                                                 for r in range(len(length_r))],
                        texts=texts, finish_reasons=finish, prompt_index=prompt_r,
                        sample_index=sample_r, prefill_seconds=self.prefill_seconds,
                        decode_seconds=self.decode_seconds, prefix_tokens=prefix,
                        hot=([hot_rn[r, :length_r[r]] for r in range(len(length_r))]
                             if self._prog.span else None))
