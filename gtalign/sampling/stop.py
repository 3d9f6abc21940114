"""Stop strings matched on device, on the bytes of the decoded text.

Each row keeps a rolling window of the last bytes of its completion. Every new token appends its
bytes (from a [vocab, max_token_bytes] table built from the tokenizer), and the row stops when a
stop string ends inside the bytes just added. Matching bytes rather than token ids catches a stop
string however the model happened to tokenize it.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np


class TokenBytes(flax.struct.PyTreeNode):
  """Bytes of every vocabulary entry, padded: bytes_vl[i, :len_v[i]] is token i's text."""

  bytes_vl: jax.Array  # uint8 [vocab, max_len]
  len_v: jax.Array  # int32 [vocab]

  @classmethod
  def from_list(cls, token_bytes: list[bytes], vocab_size: int) -> "TokenBytes":
    width = max(1, max((len(b) for b in token_bytes), default=1))
    table = np.zeros((vocab_size, width), np.uint8)
    lengths = np.zeros((vocab_size,), np.int32)
    for i, b in enumerate(token_bytes[:vocab_size]):
      table[i, :len(b)] = np.frombuffer(b, np.uint8)
      lengths[i] = len(b)
    return cls(bytes_vl=jnp.asarray(table), len_v=jnp.asarray(lengths))

  @property
  def max_len(self) -> int:
    return self.bytes_vl.shape[1]


def window_size(stops: tuple[bytes, ...], max_token_len: int) -> int:
  """Bytes each row must remember: the longest stop string plus one token."""
  return max((len(s) for s in stops), default=0) + max_token_len


def append(window_rw: jax.Array, token_r: jax.Array,
           table: TokenBytes) -> tuple[jax.Array, jax.Array]:
  """(each row's window with its token's bytes appended, how many bytes were appended)."""
  width = window_rw.shape[1]
  n_r = table.len_v[token_r]
  new_rl = table.bytes_vl[token_r]
  # [old window | n new bytes | padding]: the last `width` real bytes are joined[n : n + width]
  joined = jnp.concatenate([window_rw, new_rl], axis=1)
  shifted = jnp.take_along_axis(joined, jnp.arange(width)[None, :] + n_r[:, None], axis=1)
  return shifted, n_r


def append_and_match(window_rw: jax.Array, token_r: jax.Array, table: TokenBytes,
                     stops: tuple[bytes, ...]) -> tuple[jax.Array, jax.Array]:
  """Appends each row's token bytes to its window; True where a stop string ends in them."""
  shifted, n_r = append(window_rw, token_r, table)
  return shifted, ends_in_new(shifted, n_r, stops)


def ends_in_new(window_rw: jax.Array, n_r: jax.Array, stops: tuple[bytes, ...]) -> jax.Array:
  """True where one of `stops` ends inside the last `n_r` bytes of each row's window."""
  rows, width = window_rw.shape
  hit_r = jnp.zeros((rows,), bool)
  for stop in stops:
    m = len(stop)
    pattern = jnp.asarray(np.frombuffer(stop, np.uint8))
    # a match ending at window position e (inclusive) must end inside the n new bytes
    ends = jnp.arange(m - 1, width)
    starts = ends - (m - 1)
    windows_rem = jnp.stack([window_rw[:, starts + i] for i in range(m)], axis=-1)
    match_re = jnp.all(windows_rem == pattern, axis=-1)
    fresh_re = ends[None, :] >= (width - n_r[:, None])
    hit_r = hit_r | jnp.any(match_re & fresh_re, axis=1)
  return hit_r
