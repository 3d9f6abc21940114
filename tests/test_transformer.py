"""Logits parity of the Flax decoder with `transformers` (torch CPU, float32) on random tiny models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from gtalign.models import hf_format
from gtalign.models.config import ModelConfig, RopeScaling, get_preset
from gtalign.models.transformer import (Decoder, KVCache, init_params, logical_axes,
                                        positions_from_mask)

TINY = {
    "llama_gqa_untied": get_preset("tiny-llama"),
    "llama_tied_rope_scaling": get_preset("tiny-llama").replace(
        tie_embeddings=True, num_kv_heads=1, rope_theta=500000.0,
        rope_scaling=RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=32)),
    "qwen2_bias_tied_gqa": get_preset("tiny-qwen2"),
    "qwen2_bias_untied_mha": get_preset("tiny-qwen2").replace(
        tie_embeddings=False, num_kv_heads=4, num_layers=3),
}


def _hf_model(config: ModelConfig, seed: int = 0):
  """A random HF model; weights re-drawn at a scale where logits differ visibly."""
  hf_cfg = transformers.AutoConfig.for_model(**hf_format.model_config_to_hf(config))
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      else:
        p.copy_(0.15 * torch.randn_like(p))
  return model


def _our_params(model, config):
  tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  return hf_format.params_from_hf(tensors, config, "test")


def _left_padded_batch(config, lengths, seed=0):
  rng = np.random.default_rng(seed)
  t = max(lengths)
  tokens = rng.integers(0, config.vocab_size, size=(len(lengths), t))
  mask = np.zeros((len(lengths), t), bool)
  for i, n in enumerate(lengths):
    mask[i, t - n:] = True
  tokens = np.where(mask, tokens, 0)
  return tokens.astype(np.int32), mask


@pytest.mark.parametrize("name", sorted(TINY))
def test_logits_match_transformers(name):
  config = TINY[name]
  model = _hf_model(config)
  params = _our_params(model, config)
  tokens, mask = _left_padded_batch(config, [11, 4, 7])
  positions = np.asarray(positions_from_mask(jnp.asarray(mask)))
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long),
                position_ids=torch.tensor(positions, dtype=torch.long)).logits.numpy()
  ours, cache = Decoder(config).apply({"params": params}, tokens, positions,
                                      attention_mask_bt=mask)
  assert cache is None
  ours = np.asarray(ours)
  diff = np.abs(ours - ref)[mask]
  assert np.abs(ref[mask]).max() > 1.0  # the comparison is not between near-zero numbers
  assert diff.max() <= 1e-4, diff.max()


@pytest.mark.parametrize("name", ["llama_gqa_untied", "qwen2_bias_tied_gqa"])
def test_cached_decode_equals_full_forward(name):
  config = TINY[name]
  params = init_params(config, jax.random.PRNGKey(1))
  tokens, mask = _left_padded_batch(config, [9, 5], seed=3)
  positions = positions_from_mask(jnp.asarray(mask))
  model = Decoder(config)
  full, _ = model.apply({"params": params}, tokens, positions, attention_mask_bt=mask)

  split = 6  # prefill the first 6 slots, then feed one token at a time
  cache = KVCache.init(config, batch=2, max_len=16)
  logits, cache = model.apply({"params": params}, tokens[:, :split], positions[:, :split],
                              cache, attention_mask_bt=mask[:, :split])
  steps = [logits]
  for t in range(split, tokens.shape[1]):
    logits, cache = model.apply({"params": params}, tokens[:, t:t + 1], positions[:, t:t + 1],
                                cache, attention_mask_bt=mask[:, t:t + 1])
    steps.append(logits)
  incremental = np.concatenate([np.asarray(s) for s in steps], axis=1)
  assert int(cache.length) == tokens.shape[1]
  np.testing.assert_allclose(incremental[mask], np.asarray(full)[mask], atol=1e-5, rtol=1e-5)


def test_bfloat16_and_remat_stay_close_to_float32():
  config = TINY["qwen2_bias_tied_gqa"]
  model = _hf_model(config)
  params = _our_params(model, config)
  tokens, mask = _left_padded_batch(config, [8, 8])
  pos = positions_from_mask(jnp.asarray(mask))
  ref, _ = Decoder(config).apply({"params": params}, tokens, pos)
  remat, _ = Decoder(config.replace(remat=True)).apply({"params": params}, tokens, pos)
  np.testing.assert_allclose(np.asarray(remat), np.asarray(ref), atol=1e-6)
  bf16 = config.replace(param_dtype="bfloat16", dtype="bfloat16")
  params16 = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), params)
  low, _ = Decoder(bf16).apply({"params": params16}, tokens, pos)
  assert low.dtype == jnp.float32
  assert jax.tree.leaves(params16)[0].dtype == jnp.bfloat16
  rel = np.abs(np.asarray(low) - np.asarray(ref)).max() / np.abs(np.asarray(ref)).max()
  assert rel < 0.05, rel


def test_every_parameter_has_logical_axes():
  config = TINY["qwen2_bias_untied_mha"]
  specs = logical_axes(config)
  params = init_params(config, jax.random.PRNGKey(0))
  allowed = {"vocab", "embed", "heads", "kv_heads", "head_dim", "mlp"}
  flat_specs = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: x is not None and
                                                   not isinstance(x, dict))
  flat_params = jax.tree_util.tree_leaves_with_path(params)
  assert len(flat_specs) == len(flat_params)
  for (path, spec), (_, arr) in zip(flat_specs, flat_params):
    assert len(spec) == arr.ndim, (path, spec, arr.shape)
    assert set(spec) <= allowed, (path, spec)
  q = specs["layers_0"]["self_attn"]["q_proj"]
  assert tuple(q["kernel"]) == ("embed", "heads", "head_dim")
  assert tuple(specs["lm_head"]["kernel"]) == ("embed", "vocab")


def test_hf_round_trip_is_exact():
  config = TINY["llama_gqa_untied"]
  params = jax.device_get(init_params(config, jax.random.PRNGKey(2)))
  back = hf_format.params_from_hf(hf_format.params_to_hf(params, config), config, "round-trip")
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_cache_windows_give_the_same_logits():
  config = TINY["qwen2_bias_tied_gqa"]
  params = init_params(config, jax.random.PRNGKey(5))
  tokens, mask = _left_padded_batch(config, [7, 3], seed=4)
  positions = positions_from_mask(jnp.asarray(mask))
  results = []
  for windows in (None, (16, 32, 48, 64)):
    model = Decoder(config, windows)
    step = jax.jit(lambda p, x, pos, c, m: model.apply({"params": p}, x, pos, c,
                                                       attention_mask_bt=m))
    cache = KVCache.init(config, batch=2, max_len=64)
    logits, cache = step(params, tokens, positions, cache, mask)
    steps = [logits[:, -1]]
    for t in range(30):  # crosses the 16- and 32-slot window boundaries
      nxt = jnp.argmax(steps[-1], -1)[:, None].astype(jnp.int32)
      logits, cache = step(params, nxt, positions[:, -1:] + 1 + t, cache, jnp.ones((2, 1), bool))
      steps.append(logits[:, -1])
    results.append(np.stack([np.asarray(s) for s in steps]))
  np.testing.assert_allclose(results[0], results[1], atol=1e-5)


@pytest.mark.parametrize("cpu_kernels", [True, False])
@pytest.mark.parametrize("w_is_nk", [False, True])
def test_dense_backward_matches_autodiff(monkeypatch, cpu_kernels, w_is_nk):
  """The hand-written backward (materialised transposes on CPU, plain ones elsewhere) gives
  autodiff's gradients: exactly in float32, to bfloat16 rounding in bfloat16."""
  from gtalign.models import matmul
  monkeypatch.setattr(matmul, "_on_cpu", lambda: cpu_kernels)
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  x = jax.random.normal(keys[0], (37, 20))
  w = jax.random.normal(keys[1], (13, 20) if w_is_nk else (20, 13))
  dy = jax.random.normal(keys[2], (37, 13))
  spec = "mk,nk->mn" if w_is_nk else "mk,kn->mn"
  for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)):
    xd, wd = x.astype(dtype), w.astype(dtype)
    ours = jax.grad(lambda a, b: jnp.sum(matmul.dense(a, b, w_is_nk) * dy), (0, 1))(xd, wd)
    ref = jax.grad(lambda a, b: jnp.sum(
        jnp.einsum(spec, a, b, preferred_element_type=jnp.float32) * dy), (0, 1))(xd, wd)
    for got, want in zip(ours, ref):
      assert got.dtype == want.dtype == dtype
      scale = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
      np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                 atol=tol * scale, rtol=0)
    np.testing.assert_allclose(np.asarray(matmul.dense(xd, wd, w_is_nk)),
                               np.asarray(jnp.einsum(spec, xd, wd,
                                                     preferred_element_type=jnp.float32)))


@pytest.mark.parametrize("chunk", [1, 3, 4, 64])
def test_chunked_causal_attention_equals_full(chunk):
  """Query chunks over key prefixes give full causal attention's output (right padding too)."""
  from gtalign.models import transformer
  b, kv, g, t, d = 2, 2, 3, 10, 8
  keys = jax.random.split(jax.random.PRNGKey(5), 3)
  q = jax.random.normal(keys[0], (b, kv, g, t, d))
  k = jax.random.normal(keys[1], (b, kv, t, d))
  v = jax.random.normal(keys[2], (b, kv, t, d))
  valid_bt = jnp.arange(t)[None, :] < jnp.array([[t], [7]])  # row 1 right-padded
  mask_bts = jnp.tril(jnp.ones((t, t), bool))[None] & valid_bt[:, None, :]
  full = transformer._attend(q.reshape(b, kv, g * t, d), k, v, jnp.tile(mask_bts, (1, g, 1)),
                             jnp.float32).reshape(b, kv, g, t, d)
  ours = transformer._attend_causal(q, k, v, mask_bts, jnp.float32, chunk=chunk)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(full), atol=1e-6)
