"""Continuing a completion from its text, token for token as the model would have gone on.

A model writes token ids; a host edits text. Re-encoding the text to continue from it gives ids
the model never produced where the text was cut: SmolLM2 writes `</payoff><` as `</payoff` + `><`,
so `</payoff>` encoded again ends on a lone `>` the model has never seen there, and it ends the
turn. `plan` keeps the model's own ids for every token that lies wholly before the first edited
or cut byte, re-encodes only from there on, and backs off the last token of what it re-encoded:
those bytes (`Resume.forced`) are spelled by the model itself, under a constraint the sampler
applies (each forced token must agree with the bytes still to spell; see `allowed_tokens`). The
model is then free again, at a token boundary of its own choosing.

Why this is exact for an unedited cut under greedy decoding: the kept ids are the model's own
ids, and the token the model wrote across the cut spells the forced bytes, so it is among the
allowed tokens and, being the argmax of all tokens, is the argmax of the allowed ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Resume:
  """How to continue from a completion's text.

  ids: completion ids to feed after the prompt (the model's own, then any re-encoded ones).
  forced: bytes the next token(s) must spell before the model is free (b"": none).
  kept: how many of `ids` are the model's own, unchanged.
  text: the text continued from; `ids` spell it up to `forced`.
  """

  ids: tuple[int, ...]
  forced: bytes
  kept: int
  text: str


def _spell(token_bytes: Sequence[bytes], ids: Sequence[int]) -> bytes:
  return b"".join(token_bytes[int(i)] for i in ids)


def _char_start(data: bytes, at: int) -> bool:
  """Whether byte offset `at` starts a UTF-8 character (or is the end)."""
  return at >= len(data) or (data[at] & 0xC0) != 0x80


def plan(tokenizer, token_bytes: Sequence[bytes], text: str,
         tokens: Sequence[int] | None = None) -> Resume:
  """The `Resume` for continuing from `text`, given the ids the model wrote (`tokens`: its
  completion, possibly running past the cut; None when the text is not the model's own).

  The text may be any edit of the model's text: ids are kept up to the first differing byte.
  """
  data = text.encode("utf-8")
  own = [int(t) for t in tokens] if tokens is not None else []
  spelled = _spell(token_bytes, own)
  lead = b""
  if own and not spelled.startswith(data[:1]) and spelled[:1] == b" ":
    lead = b" "  # a SentencePiece decode drops the first token's space; keep the ids aligned
  aligned = lead + data
  same = 0
  limit = min(len(spelled), len(aligned))
  while same < limit and spelled[same] == aligned[same]:
    same += 1
  kept, end = 0, 0
  for t in own:  # tokens wholly before the first difference (or the cut)
    width = len(token_bytes[t])
    if end + width > same or (width == 0 and end == len(aligned)):
      break
    kept, end = kept + 1, end + width
  while kept and token_bytes[own[kept - 1]] == b"":  # no special token (EOS) right at the cut
    kept -= 1
  ids = own[:kept]
  if same == len(aligned):  # the text is the model's own up to the cut: spell the rest
    return Resume(tuple(ids), aligned[end:], kept, text)
  while kept and not _char_start(aligned, end):  # re-encode from a whole character
    kept -= 1
    end -= len(token_bytes[own[kept]])
    ids = own[:kept]
  if end < len(lead):
    end, kept, ids = 0, 0, []
  rest = aligned[max(end, len(lead)):].decode("utf-8")
  encoded = tokenizer.encode(rest) if rest else []
  if not encoded:
    return Resume(tuple(ids), b"", kept, text)
  last = encoded[-1]
  if token_bytes[last] == b"":  # the text ends on a special token: nothing to heal
    return Resume(tuple(ids + encoded), b"", kept, text)
  return Resume(tuple(ids + encoded[:-1]), token_bytes[last], kept, text)


def plans(tokenizer, token_bytes: Sequence[bytes], texts: Sequence[str],
          tokens: Sequence[Sequence[int] | None] | None = None) -> list[Resume]:
  """`plan` per row; `tokens` None (or a None entry) where a text is not the model's own."""
  tokens = [None] * len(texts) if tokens is None else list(tokens)
  if len(tokens) != len(texts):
    raise ValueError(f"{len(texts)} texts but {len(tokens)} token lists")
  return [plan(tokenizer, token_bytes, x, t) for x, t in zip(texts, tokens)]


def forced_array(resumes: Sequence[Resume]) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [rows, width], int32 [rows]) of the bytes each row must spell; width 0 when no row
  is forced (the sampler then compiles no constraint at all), else a power of two >= 8."""
  longest = max((len(r.forced) for r in resumes), default=0)
  width = 0 if longest == 0 else max(8, 1 << (longest - 1).bit_length())
  forced_rf = np.zeros((len(resumes), width), np.uint8)
  for i, r in enumerate(resumes):
    forced_rf[i, :len(r.forced)] = np.frombuffer(r.forced, np.uint8)
  return forced_rf, np.asarray([len(r.forced) for r in resumes], np.int32)


def allowed_tokens(forced_rf: jax.Array, forced_len_r: jax.Array, bytes_vl: jax.Array,
                   len_v: jax.Array) -> jax.Array:
  """bool [rows, vocab]: tokens that agree with the bytes a row must still spell (a prefix of
  them, or spelling them and more); every token where the row spells nothing. Special tokens
  (no bytes) are never allowed while spelling, so a forced row cannot end."""
  width = min(forced_rf.shape[1], bytes_vl.shape[1])
  ok_rv = (len_v > 0)[None, :]
  for i in range(width):
    need_rv = (i < forced_len_r)[:, None] & (i < len_v)[None, :]
    ok_rv = ok_rv & (~need_rv | (bytes_vl[None, :, i] == forced_rf[:, i:i + 1]))
  ok_rv = ok_rv | (forced_len_r == 0)[:, None]
  return ok_rv | ~jnp.any(ok_rv, axis=-1, keepdims=True)  # nothing spells it: leave it free


def consume(forced_rf: jax.Array, forced_len_r: jax.Array,
            emitted_len_r: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Drops the bytes each row's new token spelled from the front of what it must spell."""
  width = forced_rf.shape[1]
  take = jnp.minimum(emitted_len_r, forced_len_r)
  padded = jnp.concatenate([forced_rf, jnp.zeros_like(forced_rf)], axis=1)
  shifted = jnp.take_along_axis(padded, jnp.arange(width)[None, :] + take[:, None], axis=1)
  return shifted, forced_len_r - take
