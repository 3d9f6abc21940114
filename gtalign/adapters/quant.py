"""Blockwise quantization of the frozen base's projection kernels: NF4 (QLoRA) or int8.

A kernel, seen as the 2-D matrix [in, out] its matmul uses, is cut into blocks of `block`
consecutive elements along each row; each block stores its absolute maximum in float32 and its
elements as codes of `element / absmax`. NF4 codes index the 16 levels of the normal-float
4-bit grid of Dettmers et al., "QLoRA" (2023), Appendix E, two codes a byte; int8 codes are
round(127 * element / absmax). The absmax is kept in float32 (QLoRA's second quantization of
the absmax, 0.37 bits a weight, is not done here). Dequantization runs inside the forward, one
projection at a time, so the full-precision base never exists in memory at once.

Bounds (per element, tested): |w - dequant(w)| <= absmax * NF4_HALF_GAP for NF4 and
absmax / 254 for int8, up to the dequantized dtype's rounding.
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

KINDS = ("none", "nf4", "int8")
# the decoder's block projections; embeddings, norms and an untied lm_head stay unquantized
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
INPUT_DIMS = {"o_proj": 2}  # kernel dims its matmul contracts ([heads, head_dim, embed]); else 1
BLOCK = 64

NF4_LEVELS = np.asarray([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)
NF4_HALF_GAP = float(np.max(np.diff(NF4_LEVELS)) / 2)  # 0.1385: the widest rounding interval


def block_size(n_out: int) -> int:
  """BLOCK, or the largest power of two dividing a narrower row (a tiny model's k_proj)."""
  if n_out % BLOCK == 0:
    return BLOCK
  size = n_out & -n_out
  if size < 2:
    raise ValueError(f"a quantized kernel's output width must be even, got {n_out}")
  return size


def code_shapes(kind: str, k_in: int, n_out: int) -> tuple[tuple, tuple, np.dtype]:
  """(codes shape, absmax shape, codes dtype) of an [k_in, n_out] kernel."""
  blocks = n_out // block_size(n_out)
  if kind == "nf4":
    return (k_in, n_out // 2), (k_in, blocks), np.dtype(np.uint8)
  if kind == "int8":
    return (k_in, n_out), (k_in, blocks), np.dtype(np.int8)
  raise ValueError(f"model.base_quant={kind!r}; expected one of {', '.join(KINDS)}")


def quantize(kind: str, w_kn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(codes, absmax) of a float [in, out] kernel, on the host."""
  w = np.asarray(w_kn, np.float32)
  k_in, n_out = w.shape
  block = block_size(n_out)
  blocks_kbe = w.reshape(k_in, n_out // block, block)
  absmax_kb = np.abs(blocks_kbe).max(-1)
  scaled = blocks_kbe / np.where(absmax_kb > 0, absmax_kb, 1.0)[..., None]
  if kind == "int8":
    codes = np.clip(np.rint(scaled * 127), -127, 127).astype(np.int8)
    return codes.reshape(k_in, n_out), absmax_kb.astype(np.float32)
  if kind != "nf4":
    raise ValueError(f"model.base_quant={kind!r}; expected one of {', '.join(KINDS)}")
  midpoints = (NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2
  codes = np.searchsorted(midpoints, scaled).astype(np.uint8).reshape(k_in, n_out)
  packed = codes[:, 0::2] | (codes[:, 1::2] << 4)  # element 2j in the low nibble
  return packed.astype(np.uint8), absmax_kb.astype(np.float32)


def dequantize(codes, absmax_kb, dtype) -> jnp.ndarray:
  """The [in, out] kernel in `dtype` from its codes; runs under jit (or eagerly)."""
  codes = jnp.asarray(codes)
  k_in, blocks = absmax_kb.shape
  if codes.dtype == jnp.uint8:  # nf4, two codes a byte
    pairs = jnp.stack([codes & 0xF, codes >> 4], axis=-1).reshape(k_in, -1)
    values = jnp.asarray(NF4_LEVELS)[pairs.astype(jnp.int32)]
  else:
    values = codes.astype(jnp.float32) / 127.0
  n_out = values.shape[1]
  w_kbe = values.reshape(k_in, blocks, n_out // blocks) * jnp.asarray(absmax_kb)[..., None]
  return w_kbe.reshape(k_in, n_out).astype(dtype)


def quantize_params(params, kind: str):
  """A copy of the (host) param tree with every block projection's `kernel` replaced by
  `kernel_codes` and `kernel_absmax`, stored as the 2-D matrix the matmul uses."""
  if kind == "none":
    return params

  def walk(tree, name=""):
    if not isinstance(tree, dict):
      return tree
    if name in TARGETS and "kernel" in tree:
      out = {k: v for k, v in tree.items() if k != "kernel"}
      kernel = np.asarray(tree["kernel"], np.float32)
      k_in = int(np.prod(kernel.shape[:INPUT_DIMS.get(name, 1)]))
      codes, absmax = quantize(kind, kernel.reshape(k_in, -1))
      out.update(kernel_codes=codes, kernel_absmax=absmax)
      return out
    return {k: walk(v, k) for k, v in tree.items()}

  return walk(params)
