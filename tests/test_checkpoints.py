"""Checkpoints in and out: HF directories, sharded safetensors, GGUF files, and their errors."""

import json

import gguf
import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from gtalign.models import hf_format
from gtalign.models.checkpoints import load_pretrained, save_pretrained
from gtalign.models.config import get_preset
from gtalign.models.hf_format import CheckpointError
from gtalign.models.transformer import Decoder, init_params

TOKENS = np.array([[5, 17, 200, 3, 99, 42, 7]], np.int32)
POSITIONS = np.arange(TOKENS.shape[1], dtype=np.int32)[None]


def _ours_logits(config, params):
  return np.asarray(Decoder(config).apply({"params": params}, TOKENS, POSITIONS)[0])


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2"])
def test_save_pretrained_loads_in_transformers_with_same_logits(tmp_path, preset):
  config = get_preset(preset)
  params = init_params(config, jax.random.PRNGKey(0))
  save_pretrained(str(tmp_path), config, params, tokenizer=None)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
  with torch.no_grad():
    ref = model(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()
  ours = _ours_logits(config, params)
  assert np.abs(ours).max() > 0.1
  assert np.abs(ours - ref).max() <= 1e-5
  hf_weights = {k: v.numpy() for k, v in model.state_dict().items()}
  for name, value in hf_format.params_to_hf(jax.device_get(params), config).items():
    np.testing.assert_array_equal(hf_weights[name], value, err_msg=name)
  # and back in: the same params
  config2, params2, tok = load_pretrained(str(tmp_path))
  assert config2 == config and tok is None
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params2), jax.device_get(params))


def test_sharded_safetensors_from_transformers(tmp_path):
  config = get_preset("tiny-llama")
  hf_cfg = transformers.AutoConfig.for_model(**hf_format.model_config_to_hf(config))
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(hf_cfg).eval()
  model.save_pretrained(str(tmp_path), max_shard_size="100KB")
  assert (tmp_path / "model.safetensors.index.json").is_file()
  assert len(list(tmp_path.glob("*.safetensors"))) > 1
  config2, params, _ = load_pretrained(str(tmp_path), dtype="float32")
  with torch.no_grad():
    ref = model(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()
  assert np.abs(_ours_logits(config2, params) - ref).max() <= 1e-5


def test_bfloat16_load(tmp_path):
  config = get_preset("tiny-qwen2")
  save_pretrained(str(tmp_path), config, init_params(config, jax.random.PRNGKey(0)), None)
  config16, params16, _ = load_pretrained(str(tmp_path), dtype="bfloat16")
  assert config16.dtype == config16.param_dtype == "bfloat16"
  assert {a.dtype for a in jax.tree.leaves(params16)} == {np.dtype("bfloat16")}


# ---------------------------------------------------------------- errors name what is wrong


@pytest.fixture
def saved_dir(tmp_path):
  config = get_preset("tiny-llama")
  save_pretrained(str(tmp_path), config, init_params(config, jax.random.PRNGKey(0)), None)
  return tmp_path


def test_missing_path_is_named(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(FileNotFoundError, match="nowhere"):
    load_pretrained(str(missing))


def test_missing_config_json(saved_dir):
  (saved_dir / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_pretrained(str(saved_dir))


def test_unknown_architecture_names_file_and_arch(saved_dir):
  cfg = json.loads((saved_dir / "config.json").read_text())
  cfg.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
  (saved_dir / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError, match=r"config\.json.*GPT2LMHeadModel"):
    load_pretrained(str(saved_dir))


def test_shape_mismatch_names_tensor_and_both_shapes(saved_dir):
  tensors = load_file(str(saved_dir / "model.safetensors"))
  name = "model.layers.1.mlp.up_proj.weight"
  tensors[name] = np.zeros((100, 64), np.float32)
  save_file(tensors, str(saved_dir / "model.safetensors"))
  with pytest.raises(CheckpointError, match=r"up_proj\.weight.*\(100, 64\).*\(128, 64\)"):
    load_pretrained(str(saved_dir))


def test_missing_tensor_is_named(saved_dir):
  tensors = load_file(str(saved_dir / "model.safetensors"))
  del tensors["lm_head.weight"]
  save_file(tensors, str(saved_dir / "model.safetensors"))
  with pytest.raises(CheckpointError, match=r"lm_head\.weight.*untied"):
    load_pretrained(str(saved_dir))


def test_missing_shard_is_named(saved_dir):
  index = {"metadata": {}, "weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
  (saved_dir / "model.safetensors.index.json").write_text(json.dumps(index))
  with pytest.raises(FileNotFoundError, match="model-00002-of-00002"):
    load_pretrained(str(saved_dir))


def test_wrong_kind_of_file(tmp_path):
  path = tmp_path / "weights.bin"
  path.write_bytes(b"\0" * 16)
  with pytest.raises(CheckpointError, match=r"weights\.bin.*\.gguf"):
    load_pretrained(str(path))


# ---------------------------------------------------------------- GGUF written by the test


def _write_gguf(path, config, tensors_hf, arch="llama", qtypes=None):
  """A minimal GGUF the way llama.cpp's converter lays it out (q/k rows permuted)."""
  qtypes = qtypes or {}
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(config.num_layers)
  w.add_context_length(config.max_position_embeddings)
  w.add_embedding_length(config.embed_dim)
  w.add_feed_forward_length(config.mlp_dim)
  w.add_head_count(config.num_heads)
  w.add_head_count_kv(config.num_kv_heads)
  w.add_rope_freq_base(config.rope_theta)
  w.add_layer_norm_rms_eps(config.norm_eps)
  w.add_rope_dimension_count(config.head_dim)
  w.add_vocab_size(config.vocab_size)

  def permute(x, n_head):
    return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(
        x.shape)

  names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
           "output_norm.weight", "lm_head.weight": "output.weight"}
  block = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj":
           "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
           "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
           "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
  for name, arr in tensors_hf.items():
    if name in names:
      g = names[name]
    else:
      _, _, i, *mod, kind = name.split(".")
      g = f"blk.{i}.{block['.'.join(mod)]}.{kind}"
    arr = np.asarray(arr, np.float32)
    if g.endswith("attn_q.weight"):
      arr = permute(arr, config.num_heads)
    elif g.endswith("attn_k.weight"):
      arr = permute(arr, config.num_kv_heads)
    qtype = qtypes.get(g)
    if qtype is None:
      w.add_tensor(g, arr)
    else:
      block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
      raw = np.zeros((arr.shape[0], arr.shape[1] // block_size * type_size), np.uint8)
      w.add_tensor(g, raw, raw_dtype=qtype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def test_gguf_written_like_llama_cpp_loads_with_same_logits(tmp_path):
  config = get_preset("tiny-llama")
  params = init_params(config, jax.random.PRNGKey(4))
  _write_gguf(tmp_path / "tiny.gguf", config, hf_format.params_to_hf(jax.device_get(params),
                                                                     config))
  config2, params2, tokenizer = load_pretrained(str(tmp_path / "tiny.gguf"))
  assert tokenizer is None
  assert config2 == config
  np.testing.assert_allclose(_ours_logits(config2, params2), _ours_logits(config, params),
                             atol=1e-5)


def test_gguf_unsupported_quant_type_names_tensor(tmp_path):
  config = get_preset("tiny-llama")
  tensors = hf_format.params_to_hf(jax.device_get(init_params(config, jax.random.PRNGKey(0))),
                                   config)
  _write_gguf(tmp_path / "q.gguf", config, tensors,
              qtypes={"blk.0.ffn_up.weight": gguf.GGMLQuantizationType.Q8_1})
  with pytest.raises(CheckpointError, match=r"q\.gguf.*blk\.0\.ffn_up\.weight.*Q8_1"):
    load_pretrained(str(tmp_path / "q.gguf"))


def test_gguf_unknown_architecture(tmp_path):
  config = get_preset("tiny-llama")
  tensors = hf_format.params_to_hf(jax.device_get(init_params(config, jax.random.PRNGKey(0))),
                                   config)
  _write_gguf(tmp_path / "m.gguf", config, tensors, arch="mamba")
  with pytest.raises(CheckpointError, match=r"m\.gguf.*'mamba'"):
    load_pretrained(str(tmp_path / "m.gguf"))
