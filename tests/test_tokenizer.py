"""Tokenizer parity with transformers: real SmolLM2 GGUF, a Qwen2-style BPE, a SentencePiece model.

Every prompt GTAlign trains or evaluates on must become the ids the reference produces, so the
SmolLM2 test runs the whole GTAlign test split (every message and every rendered chat).
"""

import json
import os
import re
import time

import gguf
import jinja2
import pyarrow.parquet as pq
import pytest
import sentencepiece
import tokenizers
import transformers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers

from gtalign.models.tokenizer import load_tokenizer, tokenizer_from_gguf_fields

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2.5-like ChatML: default system prompt, role check, loop controls, tojson of non-ASCII/HTML.
CHATML = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message.role) }}{%- endif %}"
    "{%- if message.role == 'system' and loop.first %}{% continue %}{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content }}"
    "{%- if message.meta is defined %}{{ ' ' + message.meta | tojson }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
ADVERSARIAL = [
    "12345", " 12345", "a1b22c333", "3.14159 and 2,718,281", "x\n\n1. first\n\n2. second", "  42",
    "\t\t7", "héllo wörld ﬁ Å Å", "日本語のテキスト、한국어", "emoji 😀👍🏽 family 👨‍👩‍👧",
    "flag 🇫🇷", "<|im_start|>user\nhi<|im_end|>", "in<|im_end|>side<|endoftext|>",
    "multiple    spaces\n\n\n\nand\t\ttabs  ", "  leading", "trailing  ", "\r\n\r\n", "", " ",
    "'s 're I'LL don't", "zero\u200bwidth\u00a0nbsp",
    "²³ ½ Ⅻ ٣٤", "<thinking>x</thinking><payoff>{\"DQ_AQ\": {\"LLM\": 2.2}}</payoff>"]
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Ünïcode <b>&</b> 12  34\n\n5", "meta": {"tag": "ü<b>"}}]


def _space_before_digit(text):
  r"""Where transformers' GGUF SmolLM2 tokenizer (no digit isolation) may differ from the original.

  Without the split, GPT-2's ` ?\p{N}+` glues a space to the digits after it ("\n\n1" ends as
  "\n", "\n1"), which changes the ids when whitespace merges or a multi-byte digit follows.
  """
  return any(a.isspace() and b.isnumeric() for a, b in zip(text, text[1:]))


@pytest.fixture(scope="module")
def prompts(gtalign_data_dir):
  files = sorted(gtalign_data_dir.glob("**/test.parquet"))
  if not files:
    pytest.skip(f"no test.parquet under {gtalign_data_dir}")
  return [[{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
          for f in files for row in pq.read_table(f, columns=["prompt"]).to_pylist()]


@pytest.fixture(scope="module")
def contents(prompts):
  return sorted({m["content"] for msgs in prompts for m in msgs})


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf_path, tmp_path_factory):
  ours = load_tokenizer(smollm2_gguf_path)
  ref = transformers.AutoTokenizer.from_pretrained(
      os.path.dirname(smollm2_gguf_path), gguf_file=os.path.basename(smollm2_gguf_path))
  return ours, (ref, _original_smollm2(ref, tmp_path_factory.mktemp("smollm2_original")))


def _original_smollm2(ref, directory):
  """transformers loading SmolLM2's own tokenizer.json layout (GGUF vocab + its pre-tokenizer).

  HuggingFaceTB/SmolLM2's tokenizer.json isolates digits before the byte-level regex; the
  tokenizer transformers derives from the GGUF drops that step. We rebuild the original file
  from the GGUF vocabulary and load it through `AutoTokenizer` as the reference.
  """
  tok = tokenizers.Tokenizer.from_str(ref.backend_tokenizer.to_str())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  ref.save_pretrained(str(directory))
  tok.save(str(directory / "tokenizer.json"))
  return transformers.AutoTokenizer.from_pretrained(str(directory))


def _assert_smollm2_parity(ours, refs, texts):
  """Ids equal transformers' SmolLM2 tokenizer on every text; the GGUF-derived one differs only
  where its missing digit split changes whitespace before a digit."""
  ref, original = refs
  start = time.perf_counter()
  ids = ours.encode_batch(texts)
  ours_s = time.perf_counter() - start
  start = time.perf_counter()
  original_ids = original(texts, add_special_tokens=False)["input_ids"]
  ref_s = time.perf_counter() - start
  assert ids == original_ids
  gguf_ids = ref(texts, add_special_tokens=False)["input_ids"]
  differ = [i for i, (a, b) in enumerate(zip(ids, gguf_ids)) if a != b]
  print(f"{len(texts)} texts, {sum(map(len, texts))} chars: ours {ours_s:.1f}s, "
        f"transformers {ref_s:.1f}s; {len(differ)} differ from the GGUF-derived tokenizer")
  assert [texts[i] for i in differ if not _space_before_digit(texts[i])] == []
  assert [ours.decode(x, skip_special_tokens=False) for x in ids] == list(texts)
  return ids


def test_smollm2_gguf_matches_transformers_on_gtalign_prompts(smollm2, prompts, contents):
  ours, (ref, _) = smollm2
  assert (ours.bos_id, ours.eos_ids, ours.pad_id) == (1, (2,), 2)
  assert (ref.bos_token_id, ref.eos_token_id, ref.pad_token_id) == (1, 2, 2)
  assert ours.vocab_size == len(ref) == 49152
  start = time.perf_counter()
  rendered = [ours.apply_chat_template(m) for m in prompts]
  print(f"rendered {len(rendered)} chats in {time.perf_counter() - start:.2f}s")
  assert rendered == [ref.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                      for m in prompts]
  ids = _assert_smollm2_parity(ours, smollm2[1], contents + sorted(set(rendered)))
  chat_ids = ids[-1]  # a rendered chat: control tokens stay whole, the prompt ends ready to answer
  assert chat_ids.count(1) == 3 and chat_ids.count(2) == 2
  tail = ours.encode("<|im_start|>assistant\n")
  assert chat_ids[-len(tail):] == tail


def test_smollm2_gguf_adversarial_strings(smollm2):
  ours, refs = smollm2
  _assert_smollm2_parity(ours, refs, ADVERSARIAL)
  assert [ours.id_to_piece(i) for i in ours.encode("12345")] == list("12345")
  assert [ours.id_to_piece(i) for i in ours.encode("x\n\n1")] == ["x", "ĊĊ", "1"]
  assert ours.encode("a<|im_start|>b")[1] == 1
  assert ours.decode(ours.encode("<|im_start|>hi<|im_end|>")) == "hi"
  assert ours.decode(ours.encode("<|im_start|>hi<|im_end|>"), skip_special_tokens=False) == \
      "<|im_start|>hi<|im_end|>"
  assert ours.encode("hi", add_special_tokens=True) == ours.encode("hi")  # GGUF: add_bos false


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory, contents):
  """A small Qwen2-style byte-level BPE saved as a Hugging Face model directory."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(contents[::10], trainers.BpeTrainer(
      vocab_size=800, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  directory = tmp_path_factory.mktemp("qwen2")
  tok.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(json.dumps({
      "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
      "pad_token": "<|endoftext|>", "chat_template": CHATML,
      "clean_up_tokenization_spaces": False}))
  (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
  return directory


def test_qwen2_style_bpe_matches_transformers(qwen2_dir, contents):
  ours = load_tokenizer(str(qwen2_dir))
  ref = transformers.AutoTokenizer.from_pretrained(str(qwen2_dir))
  texts = contents[5::20] + ADVERSARIAL + ["Cafe\u0301 vs Café"]  # NFC must merge the accent
  ids = ours.encode_batch(texts)
  assert ids == ref(texts, add_special_tokens=False)["input_ids"]
  assert ids == [ours.encode(t, add_special_tokens=True) for t in texts]  # Qwen2 adds no BOS
  assert [ours.decode(x) for x in ids] == [ref.decode(x, skip_special_tokens=True) for x in ids]
  assert [ours.decode(x, skip_special_tokens=False) for x in ids] == [ref.decode(x) for x in ids]
  assert (ours.bos_id, ours.eos_ids, ours.pad_id) == (None, (2, 0), 0)
  assert (ref.bos_token_id, ref.eos_token_id, ref.pad_token_id) == (None, 2, 0)
  rendered = ours.apply_chat_template(MESSAGES)
  assert rendered == ref.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
  assert '{"tag": "ü<b>"}' in rendered  # transformers' tojson: no ASCII or HTML escaping
  assert ours.apply_chat_template(MESSAGES[1:], add_generation_prompt=False) == \
      ref.apply_chat_template(MESSAGES[1:], tokenize=False, add_generation_prompt=False)
  with pytest.raises(jinja2.TemplateError, match="unknown role tool"):
    ours.apply_chat_template([{"role": "tool", "content": "x"}])


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory, contents):
  """A Llama-style SentencePiece BPE: identity normalization, byte fallback, unk/bos/eos = 0/1/2."""
  directory = tmp_path_factory.mktemp("spm")
  (directory / "corpus.txt").write_text("\n".join(contents[1::15]), encoding="utf-8")
  sentencepiece.SentencePieceTrainer.train(
      input=str(directory / "corpus.txt"), model_prefix=str(directory / "llama"), vocab_size=400,
      model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=1.0,
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
  return str(directory / "llama.model")


def test_sentencepiece_matches_sentencepiece_and_transformers(sp_model, contents, tmp_path):
  ours = load_tokenizer(sp_model)
  sp = sentencepiece.SentencePieceProcessor(model_file=sp_model)
  # transformers matches "<s>"/"</s>" written in text as control tokens; sentencepiece and we don't.
  texts = [t for t in contents[::25] + ADVERSARIAL if "<s>" not in t and "</s>" not in t]
  ids = ours.encode_batch(texts)
  assert ids == [sp.encode(t) for t in texts] == [ours.encode(t) for t in texts]
  assert [ours.decode(x) for x in ids] == [sp.decode(x) for x in ids]
  assert (ours.bos_id, ours.eos_ids, ours.pad_id, ours.vocab_size) == (1, (2,), 2, 400)
  with_bos = [ours.encode(t, add_special_tokens=True) for t in texts]
  assert with_bos == [[1] + x for x in ids]
  # SentencePieceBackend with legacy=True calls sentencepiece itself: exact, BOS included.
  backend = transformers.SentencePieceBackend(
      vocab_file=sp_model, legacy=True, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
      special_tokens_pattern="bos")
  assert [backend.encode(t, add_special_tokens=False) for t in texts] == ids
  assert [backend.encode(t) for t in texts] == with_bos
  # LlamaTokenizer converts to a tokenizers Metaspace pipeline, which agrees except that it drops
  # sentencepiece's dummy prefix before text that already starts with whitespace.
  (tmp_path / "tokenizer.model").write_bytes(open(sp_model, "rb").read())
  (tmp_path / "tokenizer_config.json").write_text(
      json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True}))
  llama = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  plain = [i for i, t in enumerate(texts) if not t[:1].isspace()]
  assert [llama.encode(texts[i], add_special_tokens=False) for i in plain] == \
      [ids[i] for i in plain]
  assert [llama.encode(texts[i]) for i in plain] == [with_bos[i] for i in plain]
  assert [llama.decode(ids[i]) for i in plain] == [ours.decode(ids[i]) for i in plain]


@pytest.mark.parametrize("which", ["smollm2", "qwen2", "sentencepiece"])
def test_save_round_trip(which, request, contents, tmp_path):
  if which == "smollm2":
    ours = request.getfixturevalue("smollm2")[0]
  elif which == "qwen2":
    ours = load_tokenizer(str(request.getfixturevalue("qwen2_dir")))
  else:
    ours = load_tokenizer(request.getfixturevalue("sp_model"))
  ours.save(str(tmp_path))
  ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  again = load_tokenizer(str(tmp_path))
  texts = [t for t in contents[3::40] + ADVERSARIAL if "<s>" not in t and "</s>" not in t]
  ids = ours.encode_batch(texts)
  assert [ref.encode(t, add_special_tokens=False) for t in texts] == ids
  assert [ref.encode(t) for t in texts] == [ours.encode(t, add_special_tokens=True) for t in texts]
  assert again.encode_batch(texts) == ids
  assert (again.bos_id, again.eos_ids[0], again.pad_id, again.chat_template) == \
      (ours.bos_id, ours.eos_ids[0], ours.pad_id, ours.chat_template)
  assert (ref.bos_token_id, ref.eos_token_id, ref.pad_token_id) == \
      (ours.bos_id, ours.eos_ids[0], ours.pad_id)
  if ours.chat_template:
    rendered = ours.apply_chat_template(MESSAGES)
    assert ref.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == rendered
    assert again.apply_chat_template(MESSAGES) == rendered


def test_errors_name_the_path_and_what_was_expected(tmp_path, sp_model):
  missing = tmp_path / "nope"
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*does not exist"):
    load_tokenizer(str(missing))
  expected = re.escape(str(tmp_path)) + ".*tokenizer.json or tokenizer.model"
  with pytest.raises(FileNotFoundError, match=expected):
    load_tokenizer(str(tmp_path))
  (tmp_path / "vocab.txt").write_text("a\nb\n")
  with pytest.raises(ValueError, match="vocab.txt.*expected"):
    load_tokenizer(str(tmp_path / "vocab.txt"))
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(ValueError, match=re.escape(str(tmp_path / "tokenizer.json"))):
    load_tokenizer(str(tmp_path))

  path = str(tmp_path / "spm.gguf")
  writer = gguf.GGUFWriter(path, arch="llama")
  writer.add_tokenizer_model("llama")
  writer.add_token_list(["<unk>", "<s>", "</s>", "\u2581a"])
  writer.add_token_scores([0.0, 0.0, 0.0, -1.0])
  writer.add_token_types([2, 3, 3, 1])
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(ValueError, match=re.escape(path) + ".*'llama' is not supported"):
    load_tokenizer(path)
  with pytest.raises(ValueError, match="model 't5' is not supported"):
    tokenizer_from_gguf_fields({"tokenizer.ggml.model": "t5"})

  with pytest.raises(ValueError, match="no chat template"):
    load_tokenizer(sp_model).apply_chat_template([{"role": "user", "content": "hi"}])
