"""LoRA and QLoRA (gtalign.adapters) on the decoder, the update step and the PEFT format.

References nobody here wrote: Hugging Face PEFT loads the exported adapters (tests/
test_adapters_run.py), and the NF4 grid and bounds are QLoRA's (Dettmers et al., 2023).
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gtalign.adapters import lora, memory, peft_format, quant
from gtalign.models.config import get_preset
from gtalign.models.transformer import Decoder, init_params
from gtalign.utils.errors import InvalidInput

ALL = lora.parse_targets("all")


def _tokens(vocab, b=2, t=7, seed=0):
  tokens = np.random.RandomState(seed).randint(0, vocab, (b, t)).astype(np.int32)
  return tokens, np.broadcast_to(np.arange(t, dtype=np.int32), (b, t))


def _logits(config, params, tokens, positions):
  return np.asarray(Decoder(config).apply({"params": params}, tokens, positions)[0])


def _with_random_b(params, scale=0.05, seed=1):
  """Adapters as training leaves them: B no longer zero."""
  base, adapters = lora.split(params)
  rng = np.random.RandomState(seed)
  adapters = jax.tree.map(lambda x: x + scale * rng.randn(*x.shape).astype(np.float32), adapters)
  return lora.join(base, adapters)


def _host(params):
  return jax.tree.map(np.asarray, params)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2"])
@pytest.mark.parametrize("base_quant", ["none", "nf4"])
def test_a_fresh_adapter_leaves_the_logits_bit_identical(preset, base_quant):
  config = get_preset(preset)
  params = _host(init_params(config, jax.random.PRNGKey(0)))
  adapted = config.replace(lora_rank=4, lora_alpha=8.0, lora_targets=ALL, base_quant=base_quant)
  tokens, positions = _tokens(config.vocab_size)
  full = lora.attach(adapted, params, jax.random.PRNGKey(1))
  # the same (possibly quantized) base without adapters
  reference = _logits(lora.adapters_off(adapted), lora.split(full)[0], tokens, positions)
  assert np.array_equal(_logits(adapted, full, tokens, positions), reference)
  if base_quant == "none":
    assert np.array_equal(reference, _logits(config, params, tokens, positions))
  # and trained adapters do change them
  assert not np.allclose(_logits(adapted, _with_random_b(full), tokens, positions), reference)


def test_a_fresh_adapter_on_the_real_smollm2_weights_changes_no_logit(smollm2_gguf_path):
  from gtalign.models.checkpoints import load_pretrained
  from gtalign.models.tokenizer import load_tokenizer
  config, params, _ = load_pretrained(smollm2_gguf_path)
  params = _host(params)
  tok = load_tokenizer(smollm2_gguf_path)
  ids = np.asarray([tok.encode("The capital of France is Paris. The capital of Italy is")],
                   np.int32)
  positions = np.arange(ids.shape[1], dtype=np.int32)[None]
  adapted = config.replace(lora_rank=16, lora_alpha=32.0, lora_targets=ALL)
  full = lora.attach(adapted, params, jax.random.PRNGKey(0))
  plain = _logits(config, params, ids, positions)
  assert np.array_equal(_logits(adapted, full, ids, positions), plain)
  assert tok.decode([int(plain[0, -1].argmax())]).strip() == "Rome"


def test_merging_the_adapters_gives_the_forward_that_runs_them():
  config = get_preset("tiny-llama")
  params = _host(init_params(config, jax.random.PRNGKey(0)))
  tokens, positions = _tokens(config.vocab_size)
  for base_quant in quant.KINDS:
    adapted = config.replace(lora_rank=4, lora_alpha=8.0, lora_targets=("q_proj", "o_proj",
                                                                         "down_proj"),
                             base_quant=base_quant)
    full = _with_random_b(lora.attach(adapted, params, jax.random.PRNGKey(1)))
    merged = lora.merge(adapted, full)
    assert not any(lora.is_adapter("/".join(p)) or p[-1].startswith("kernel_")
                   for p, _ in lora._flatten(merged))
    np.testing.assert_allclose(_logits(lora.plain(adapted), merged, tokens, positions),
                               _logits(adapted, full, tokens, positions), atol=2e-5)


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_the_quantized_base_is_within_its_stated_bound_of_the_float_base(kind):
  rng = np.random.RandomState(0)
  # a normal kernel, a heavy-tailed one, an all-zero block and a constant one
  for w in (rng.randn(96, 192) * 0.02, rng.standard_t(2, (64, 128)) * 0.05,
            np.zeros((4, 64)), np.full((2, 64), -0.3)):
    w = w.astype(np.float32)
    codes, absmax = quant.quantize(kind, w)
    back = np.asarray(quant.dequantize(codes, absmax, jnp.float32))
    block = quant.block_size(w.shape[1])
    per_block = np.repeat(absmax, block, axis=1)
    bound = quant.NF4_HALF_GAP if kind == "nf4" else 1 / 254
    assert np.all(np.abs(back - w) <= per_block * bound * (1 + 1e-6) + 1e-12)
    if kind == "nf4":
      assert codes.shape == (w.shape[0], w.shape[1] // 2) and codes.dtype == np.uint8
  # the extremes of each block are exact (NF4's grid holds -1 and 1)
  w = rng.randn(8, 64).astype(np.float32)
  back = np.asarray(quant.dequantize(*quant.quantize(kind, w), jnp.float32))
  top = np.abs(w).argmax(1)
  np.testing.assert_allclose(back[np.arange(8), top], w[np.arange(8), top], rtol=1e-6)


def test_nf4_on_smollm2_sized_kernels_reports_its_error():
  """The relative error NF4 leaves on a normal kernel: ~9% RMS (QLoRA's Table 2 territory);
  int8 ~0.8%. A regression in packing or the grid shows up as tens of percent."""
  w = np.random.RandomState(0).randn(576, 1536).astype(np.float32) * 0.02
  rel = {}
  for kind in ("nf4", "int8"):
    back = np.asarray(quant.dequantize(*quant.quantize(kind, w), jnp.float32))
    rel[kind] = float(np.linalg.norm(back - w) / np.linalg.norm(w))
  assert 0.05 < rel["nf4"] < 0.12 and rel["int8"] < 0.012, rel


def _step_setup(adapted, params):
  import functools
  from gtalign.parallel.mesh import MeshConfig, batch_sharding, make_mesh, param_shardings
  from gtalign.models.transformer import logical_axes
  from gtalign.rl import objective, train_state, update
  mesh = make_mesh(MeshConfig())
  shardings = param_shardings(mesh, logical_axes(adapted), shapes=params)
  mask = lora.trainable(params, "all")
  tx = train_state.make_optimizer(1e-2, trainable=mask)
  state = train_state.create_train_state(params, tx, mesh, shardings)
  step = update.make_update_step(functools.partial(objective.sft_loss, adapted), tx,
                                 train_state.train_state_shardings(params, tx, mesh, shardings),
                                 batch_sharding(mesh), trainable=mask)
  return state, step, batch_sharding(mesh)


def _sft_batch(vocab, sharding):
  from gtalign.training import rollout
  rng = np.random.RandomState(3)
  prompts = [list(rng.randint(1, vocab, 5)) for _ in range(4)]
  completions = [list(rng.randint(1, vocab, 9)) for _ in range(4)]
  batch = rollout.sequence_batch(prompts, completions, pad_id=0, multiple=8, window_multiple=8)
  return jax.device_put(batch, sharding)


@pytest.mark.parametrize("base_quant", ["none", "nf4"])
def test_the_update_step_trains_the_adapters_and_nothing_else(base_quant):
  config = get_preset("tiny-qwen2")
  adapted = config.replace(lora_rank=4, lora_alpha=8.0, lora_targets=ALL, base_quant=base_quant)
  params = lora.attach(adapted, _host(init_params(config, jax.random.PRNGKey(0))),
                       jax.random.PRNGKey(1))
  state, step, sharding = _step_setup(adapted, params)
  before = _host(state.params)
  # the optimizer keeps moments for the adapters only: two float32 copies of them
  opt_bytes = sum(x.nbytes for x in jax.tree.leaves(state.opt_state) if x.ndim)
  assert opt_bytes == 2 * sum(x.nbytes for x in jax.tree.leaves(lora.split(params)[1]))
  for _ in range(2):
    state, metrics = step(state, _sft_batch(config.vocab_size, sharding))
  assert float(metrics["grad_norm"]) > 0
  after = _host(state.params)
  for (path, old), new in zip(lora._flatten(before), jax.tree.leaves(after)):
    if lora.is_adapter("/".join(path)):
      assert not np.array_equal(old, new), path  # B from the first step, A from the second
    else:
      assert np.array_equal(old, new) and old.dtype == new.dtype, path


def test_the_kl_reference_with_adapters_off_is_the_base_model():
  from gtalign.rl import objective
  from gtalign.training import rollout
  config = get_preset("tiny-llama")
  params = _host(init_params(config, jax.random.PRNGKey(0)))
  adapted = config.replace(lora_rank=4, lora_alpha=8.0, lora_targets=ALL)
  full = _with_random_b(lora.attach(adapted, params, jax.random.PRNGKey(1)))
  rng = np.random.RandomState(0)
  batch = rollout.sequence_batch([list(rng.randint(1, 256, 6)) for _ in range(2)],
                                 [list(rng.randint(1, 256, 5)) for _ in range(2)], pad_id=0)
  reference = objective.sequence_logprobs(lora.adapters_off(adapted), full, batch)
  assert np.array_equal(reference, objective.sequence_logprobs(config, params, batch))
  assert not np.allclose(objective.sequence_logprobs(adapted, full, batch), reference)


def test_peft_files_round_trip_and_bad_ones_are_named(tmp_path):
  config = get_preset("tiny-qwen2")
  adapted = config.replace(lora_rank=4, lora_alpha=8.0, lora_targets=("q_proj", "v_proj",
                                                                      "gate_proj"))
  adapters = lora.split(_with_random_b(lora.attach(
      adapted, _host(init_params(config, jax.random.PRNGKey(0))), jax.random.PRNGKey(1))))[1]
  peft_format.save(tmp_path / "a", adapted, adapters, "some/base")
  cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
  assert cfg["r"] == 4 and cfg["lora_alpha"] == 8.0 and cfg["base_model_name_or_path"] == "some/base"
  loaded_config, loaded = peft_format.load(tmp_path / "a", config)
  assert loaded_config == adapted
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded, adapters))
  with pytest.raises(InvalidInput, match="no adapter_config.json"):
    peft_format.load(tmp_path, config)
  cfg["use_rslora"] = True
  (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(cfg))
  with pytest.raises(InvalidInput, match="'use_rslora': true"):
    peft_format.load(tmp_path / "a", config)
  # an adapter of another base's shape
  with pytest.raises(InvalidInput, match=r"adapter_model.safetensors: base_model.model.model."
                                         r"layers.0.*lora_A.weight has shape \(4, 64\), the "
                                         r"base needs \(4, 32\)"):
    cfg["use_rslora"] = False
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(cfg))
    peft_format.load(tmp_path / "a", config.replace(embed_dim=32, head_dim=8))


def _lora_cfg(**kw):
  return ml_collections.ConfigDict(dict(dict(rank=8, alpha=16.0, targets="all"), **kw))


@pytest.mark.parametrize("lora_cfg,base_quant,message", [
    (dict(targets="q,x"), "none", "model.lora.targets='q,x': unknown projection 'x'"),
    (dict(), "nf5", "model.base_quant='nf5'; expected one of none, nf4, int8"),
    (dict(rank=0), "nf4", "model.base_quant='nf4' freezes the base and needs adapters"),
    (dict(rank=-1), "none", "model.lora.rank=-1"),
    (dict(alpha=0.0), "none", "model.lora.alpha=0.0"),
])
def test_bad_adapter_options_are_one_line_errors_naming_the_key(lora_cfg, base_quant, message):
  with pytest.raises(InvalidInput, match=message.replace("(", r"\(")) as e:
    lora.check(_lora_cfg(**lora_cfg), base_quant)
  assert "\n" not in str(e.value)


def _plan(preset):
  import importlib.util
  import pathlib
  spec = importlib.util.spec_from_file_location(
      "grpo_config", pathlib.Path(__file__).parents[1] / "configs" / "grpo.py")
  grpo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(grpo)
  c = grpo.get_config(preset)
  model = get_preset(c.model.name).replace(param_dtype=c.model.param_dtype, dtype=c.model.dtype,
                                          remat=c.model.remat)
  return memory.plan(lora.configure(model, c.model.lora, c.model.base_quant), c)


def test_the_qwen_3b_qlora_preset_plans_to_fit_a_24_gb_card_and_full_weights_do_not():
  """From shapes alone (jax.eval_shape): no weights are read."""
  qlora, full = _plan("gtalign_math_lora"), _plan("gtalign_math")
  gib = 2 ** 30
  assert qlora.fits(24 * gib), qlora.line()
  assert not full.fits(24 * gib)
  # full weights: float32 weights, gradients and two moments of ~3.1e9 params, ~46 GiB
  assert 44 * gib < full.trained + full.gradients + full.optimizer < 48 * gib
  # QLoRA: the base in 4 bits (the embedding stays bfloat16), the adapters in float32
  assert 1.5 * gib < qlora.base < 2.5 * gib and qlora.trained < 0.6 * gib
  assert "fits a 24 GiB card" in qlora.line()


def test_the_memory_plan_counts_a_real_train_state_to_the_byte():
  from gtalign.rl import train_state
  from gtalign.parallel.mesh import MeshConfig, make_mesh, param_shardings
  from gtalign.models.transformer import logical_axes
  c = ml_collections.ConfigDict(dict(
      rl=dict(algorithm="grpo", trainable="all", prompts_per_step=2, num_samples=2,
              max_new_tokens=8, num_microbatches=1, max_turns=1, kl_coef=0.0, steer_groups=0,
              priced_groups=0,
              thinking_kl=0.1, other_row_kl=0.0),
      data=dict(max_prompt_length=8)))
  config = get_preset("tiny-llama")
  adapted = config.replace(lora_rank=4, lora_alpha=8.0, lora_targets=ALL, base_quant="nf4")
  params = lora.attach(adapted, _host(init_params(config, jax.random.PRNGKey(0))),
                       jax.random.PRNGKey(1))
  mesh = make_mesh(MeshConfig())
  mask = lora.trainable(params, "all")
  tx = train_state.make_optimizer(1e-3, trainable=mask)
  state = train_state.create_train_state(
      params, tx, mesh, param_shardings(mesh, logical_axes(adapted), shapes=params))
  plan = memory.plan(adapted, c)
  assert plan.base + plan.trained == sum(x.nbytes for x in jax.tree.leaves(state.params))
  assert plan.optimizer == sum(x.nbytes for x in jax.tree.leaves(state.opt_state) if x.ndim)
  assert plan.reference == 0  # a KL with adapters reads the base with them off: no copy
  # full weights: the KL reference is a copy of every param (training/loop.py copy_params)
  full = memory.plan(config, c)
  assert full.reference == sum(x.nbytes for x in jax.tree.leaves(init_params(
      config, jax.random.PRNGKey(0)))) and "KL reference" in full.line()
  c.rl.thinking_kl, c.rl.other_row_kl = 0.0, 0.1
  assert memory.plan(config, c).reference == full.reference
  c.rl.other_row_kl = 0.0
  assert memory.plan(config, c).reference == 0


def test_a_checkpoint_of_another_base_or_setting_is_refused_naming_both():
  config = get_preset("tiny-llama")
  params = _host(init_params(config, jax.random.PRNGKey(0)))
  adapted = config.replace(lora_rank=4, lora_alpha=8.0, lora_targets=("q_proj", "v_proj"))
  meta = lora.resume_meta(adapted, params)
  lora.check_resume(meta, meta, "/w/checkpoints/4", "m")
  lora.check_resume({}, meta, "/w/checkpoints/4", "m")  # written without adapters: shapes decide
  other_base = lora.resume_meta(adapted, jax.tree.map(lambda x: x * 1.01, params))
  with pytest.raises(InvalidInput, match=r"checkpoint /w/checkpoints/4 holds adapters trained "
                                         r"on another base \(base fingerprint [0-9a-f]{16}, "
                                         r"model.name='m' gives [0-9a-f]{16}\)"):
    lora.check_resume(other_base, meta, "/w/checkpoints/4", "m")
  # alpha changes no shape: only the record catches it
  other_alpha = lora.resume_meta(adapted.replace(lora_alpha=16.0), params)
  with pytest.raises(InvalidInput, match=r"holds adapters of rank 4, alpha 16 on q_proj,v_proj; "
                                         r"this config asks for rank 4, alpha 8 on "
                                         r"q_proj,v_proj \(model.lora\)"):
    lora.check_resume(other_alpha, meta, "/w/checkpoints/4", "m")


def test_peft_files_in_bfloat16_load_and_a_damaged_one_is_named(tmp_path):
  from safetensors.numpy import save_file as save_numpy
  import safetensors.flax
  config = get_preset("tiny-llama")
  adapted = config.replace(lora_rank=2, lora_alpha=4.0, lora_targets=("q_proj",))
  adapters = lora.split(_with_random_b(lora.attach(
      adapted, _host(init_params(config, jax.random.PRNGKey(0))), jax.random.PRNGKey(1))))[1]
  peft_format.save(tmp_path, adapted, adapters, "base")
  weights = tmp_path / peft_format.WEIGHTS_FILE
  tensors = safetensors.flax.load_file(str(weights))
  safetensors.flax.save_file({k: v.astype(jnp.bfloat16) for k, v in tensors.items()},
                             str(weights))
  _, loaded = peft_format.load(tmp_path, config)
  for (_, got), want in zip(lora._flatten(loaded), jax.tree.leaves(adapters)):
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-3)
  weights.write_bytes(weights.read_bytes()[:40])
  with pytest.raises(InvalidInput, match="adapter_model.safetensors: not a readable safetensors"):
    peft_format.load(tmp_path, config)
  save_numpy({"lm_head.weight": np.zeros((2, 2), np.float32)}, str(weights))
  with pytest.raises(InvalidInput, match="tensor 'lm_head.weight' is not a LoRA weight"):
    peft_format.load(tmp_path, config)
  cfg = json.loads((tmp_path / peft_format.CONFIG_FILE).read_text())
  cfg["alpha_pattern"] = {"q_proj": 8}
  (tmp_path / peft_format.CONFIG_FILE).write_text(json.dumps(cfg))
  with pytest.raises(InvalidInput, match="'alpha_pattern' is set"):
    peft_format.load(tmp_path, config)
