"""One small tokenizer interface over HF tokenizer.json, SentencePiece and GGUF vocabularies.

Prompts must become exactly the ids the reference (transformers) implementation produces, or
the policy is trained and sampled on text it never saw; the tests hold us to that parity.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import gguf
import jinja2
import jinja2.ext
import jinja2.sandbox
import sentencepiece
import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

from gtalign.utils.errors import InvalidInput, MissingInput

# llama.cpp's `tokenizer.ggml.pre` names -> the split regex the merges were learned with.
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GGUF_SPLITS = {"qwen2": _QWEN2_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT}
_GGUF_CONTROL, _GGUF_USER_DEFINED = 3, 4  # llama.cpp token types


@functools.lru_cache(maxsize=16)
def _compile_template(template: str) -> jinja2.Template:
  """Compiles as transformers' apply_chat_template does, so prompts match the training format."""
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson HTML-escapes; transformers' does not, and neither may we.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(template)


class Tokenizer:
  """Special ids and chat template shared by every backend; subclasses do the (de)tokenizing."""

  def __init__(self, *, bos_id: int | None, eos_ids: Sequence[int], pad_id: int | None,
               chat_template: str | None):
    self.bos_id = bos_id
    self.eos_ids = tuple(dict.fromkeys(eos_ids))  # dedupe, keep order: eos_ids[0] is "the" EOS
    # Padding is masked out anyway; an EOS id keeps the pad inside the vocabulary.
    self.pad_id = pad_id if pad_id is not None else (self.eos_ids[0] if self.eos_ids else 0)
    self.chat_template = chat_template

  @property
  def vocab_size(self) -> int:
    raise NotImplementedError

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    return self.encode_batch([text], add_special_tokens)[0]

  def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
    """Many texts at once; backends parallelize, which matters for thousands of long prompts."""
    raise NotImplementedError

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    raise NotImplementedError

  def id_to_piece(self, i: int) -> str:
    """The raw vocabulary string of one id (byte-level or "▁" spelling), for stop strings."""
    raise NotImplementedError

  def save(self, directory: str) -> None:
    """Writes files that transformers.AutoTokenizer.from_pretrained(directory) loads alike."""
    raise NotImplementedError

  def token_bytes(self) -> list[bytes]:
    """The UTF-8 bytes each id adds to decoded text (b"" for special tokens).

    Decoded text is the concatenation of these, which lets the sampler match stop strings on
    device, one token at a time, without decoding.
    """
    raise NotImplementedError

  def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
    if not self.chat_template:
      raise ValueError(f"{type(self).__name__} has no chat template; load one from a model "
                       "directory whose tokenizer_config.json (or chat_template.jinja) has it.")
    specials = {}
    if self.bos_id is not None:
      specials["bos_token"] = self.id_to_piece(self.bos_id)
    if self.eos_ids:
      specials["eos_token"] = self.id_to_piece(self.eos_ids[0])
    return _compile_template(self.chat_template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, tools=None, **specials)

  def _config(self, tokenizer_class: str) -> dict[str, Any]:
    """The tokenizer_config.json that lets transformers rebuild the same special tokens."""
    config = {"tokenizer_class": tokenizer_class, "clean_up_tokenization_spaces": False}
    if self.bos_id is not None:
      config["bos_token"] = self.id_to_piece(self.bos_id)
    if self.eos_ids:
      config["eos_token"] = self.id_to_piece(self.eos_ids[0])
    config["pad_token"] = self.id_to_piece(self.pad_id)
    if self.chat_template:
      config["chat_template"] = self.chat_template
    return config

  def _write_config(self, directory: str, config: dict[str, Any]) -> None:
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
      json.dump(config, f, indent=2, ensure_ascii=False)


class _HFTokenizer(Tokenizer):
  """A `tokenizers` pipeline: tokenizer.json files and byte-level BPE vocabularies from GGUF."""

  def __init__(self, tok: tokenizers.Tokenizer, **specials):
    super().__init__(**specials)
    self._tok = tok

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def encode_batch(self, texts, add_special_tokens=False):
    encodings = self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)
    return [e.ids for e in encodings]

  def decode(self, ids, skip_special_tokens=True):
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def id_to_piece(self, i):
    return self._tok.id_to_token(int(i))

  def token_bytes(self):
    specials = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
    pieces = [self._tok.id_to_token(i) for i in range(self.vocab_size)]
    if isinstance(self._tok.decoder, decoders.ByteLevel):
      return [b"" if p is None or p in specials else bytes(_BYTE_OF_CHAR[c] for c in p)
              for p in pieces]
    return [b"" if p is None or p in specials else _metaspace_bytes(p) for p in pieces]

  def save(self, directory):
    os.makedirs(directory, exist_ok=True)
    self._tok.save(os.path.join(directory, "tokenizer.json"))
    # BOS insertion, if any, lives in tokenizer.json's post-processor, so the config stays neutral.
    self._write_config(directory, self._config("PreTrainedTokenizerFast"))


class _SPTokenizer(Tokenizer):
  """SentencePiece .model files (Llama-style): BOS is prepended only when asked for."""

  def __init__(self, model_file: str, **specials):
    self._model_file = model_file
    self._sp = sentencepiece.SentencePieceProcessor(model_file=model_file)
    super().__init__(**specials)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode_batch(self, texts, add_special_tokens=False):
    prefix = [self.bos_id] if add_special_tokens and self.bos_id is not None else []
    return [prefix + ids for ids in self._sp.encode(list(texts))]

  def decode(self, ids, skip_special_tokens=True):
    # sentencepiece never prints control tokens; emit their pieces ourselves when they are wanted.
    out, run = [], []
    for i in (int(i) for i in ids):
      if self._sp.is_control(i):
        if not skip_special_tokens:
          out += [self._sp.decode(run), self._sp.id_to_piece(i)]
          run = []
      else:
        run.append(i)
    return "".join(out) + self._sp.decode(run)

  def id_to_piece(self, i):
    return self._sp.id_to_piece(int(i))

  def token_bytes(self):
    return [b"" if self._sp.is_control(i) or self._sp.is_unknown(i)
            else _metaspace_bytes(self._sp.id_to_piece(i)) for i in range(self.vocab_size)]

  def save(self, directory):
    os.makedirs(directory, exist_ok=True)
    shutil.copyfile(self._model_file, os.path.join(directory, "tokenizer.model"))
    # transformers' LlamaTokenizer converts to a `tokenizers` Metaspace pipeline that drops the
    # dummy prefix of text starting with a space; SentencePieceBackend with legacy=True calls
    # sentencepiece itself, so its ids are ours exactly (its decode() is cruder; ids matter).
    config = self._config("SentencePieceBackend")
    config.update(legacy=True, add_bos_token=self.bos_id is not None, add_eos_token=False,
                  special_tokens_pattern="bos" if self.bos_id is not None else "none",
                  unk_token=self._sp.id_to_piece(self._sp.unk_id()))
    self._write_config(directory, config)


def _gpt2_byte_of_char() -> dict[str, int]:
  """Inverse of GPT-2's byte-to-printable-character map used by byte-level BPE vocabularies."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
      range(ord("®"), ord("ÿ") + 1))
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[chr(b)] = b
    else:
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


_BYTE_OF_CHAR = _gpt2_byte_of_char()


def _metaspace_bytes(piece: str) -> bytes:
  """SentencePiece-style piece: "▁" is a space and "<0xNN>" a raw byte (byte fallback)."""
  if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
    return bytes([int(piece[3:5], 16)])
  return piece.replace("\u2581", " ").encode("utf-8")


def _read_json(path: Path) -> dict[str, Any]:
  if not path.is_file():
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _as_list(value) -> list[int]:
  if value is None:
    return []
  return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _hf_specials(directory: Path, token_to_id, bos=None, eos=(), pad=None) -> dict[str, Any]:
  """Special ids and chat template from the HF config files beside a vocabulary, else defaults."""
  config = _read_json(directory / "tokenizer_config.json")
  gen = _read_json(directory / "generation_config.json")
  model_eos = _as_list(_read_json(directory / "config.json").get("eos_token_id"))

  def lookup(key, default):
    if key not in config:  # an explicit null (e.g. Qwen2's bos_token) means "none"
      return default
    value = config[key]
    content = value.get("content") if isinstance(value, dict) else value
    return None if content is None else token_to_id(content)

  bos = lookup("bos_token", gen.get("bos_token_id", bos))
  # Instruct models often stop on several ids (e.g. <|im_end|> and <|endoftext|>): take them all.
  eos_ids = [i for i in [lookup("eos_token", None)] + _as_list(gen.get("eos_token_id")) + model_eos
             if i is not None] or list(eos)
  pad = lookup("pad_token", gen.get("pad_token_id", pad))
  template_file = directory / "chat_template.jinja"  # where transformers >= 4.5x saves it
  template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
  template = template or config.get("chat_template")
  if isinstance(template, list):  # legacy form: [{"name": ..., "template": ...}, ...]
    template = {t["name"]: t["template"] for t in template}.get("default")
  return {"bos_id": bos, "eos_ids": eos_ids, "pad_id": pad, "chat_template": template}


def _load_tokenizer_json(path: Path) -> Tokenizer:
  try:
    tok = tokenizers.Tokenizer.from_file(str(path))
  except Exception as e:  # tokenizers raises a bare Exception on malformed files
    raise InvalidInput(f"Could not read {str(path)!r} as a Hugging Face tokenizer.json: {e}") from e
  return _HFTokenizer(tok, **_hf_specials(path.parent, tok.token_to_id))


def _load_sentencepiece(path: Path) -> Tokenizer:
  try:
    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
  except (OSError, RuntimeError) as e:
    raise InvalidInput(f"Could not read {str(path)!r} as a SentencePiece model: {e}") from e

  def piece_id(piece):  # piece_to_id answers unk for unknown pieces; we want None
    i = sp.piece_to_id(piece)
    return i if sp.id_to_piece(i) == piece else None

  optional = lambda i: i if i >= 0 else None  # sentencepiece spells "no such token" as -1
  specials = _hf_specials(path.parent, piece_id, bos=optional(sp.bos_id()),
                          eos=[i for i in [optional(sp.eos_id())] if i is not None],
                          pad=optional(sp.pad_id()))
  return _SPTokenizer(str(path), **specials)


def tokenizer_from_gguf_fields(fields: dict[str, Any], source: str = "GGUF metadata") -> Tokenizer:
  """Builds the byte-level BPE a GGUF file embeds, pre-tokenizing as llama.cpp does."""
  kind = fields.get("tokenizer.ggml.model")
  if kind != "gpt2":
    raise InvalidInput(f"{source}: GGUF tokenizer model {kind!r} is not supported (only byte-level "
                     "BPE, 'gpt2'); load the model's tokenizer.json or tokenizer.model instead.")
  if "tokenizer.ggml.tokens" not in fields or "tokenizer.ggml.merges" not in fields:
    raise InvalidInput(f"{source}: GGUF metadata lacks tokenizer.ggml.tokens or .merges.")
  tokens = [str(t) for t in fields["tokenizer.ggml.tokens"]]
  merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
  tok = tokenizers.Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
  pre = fields.get("tokenizer.ggml.pre")
  if pre == "smollm":
    # SmolLM2's tokenizer.json and llama.cpp isolate digits before the GPT-2 regex. transformers'
    # GGUF loader does not, so it cuts "\n\n1" into "\n", "\n", "1" where the model saw "\n\n", "1".
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  elif pre in _GGUF_SPLITS:
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_GGUF_SPLITS[pre]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  else:
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  types = list(fields.get("tokenizer.ggml.token_type") or [])
  # Control tokens (<|im_start|>, ...) must match whole in text, never be cut into byte pieces.
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                          for t, ty in zip(tokens, types) if ty == _GGUF_CONTROL])
  tok.add_tokens([AddedToken(t, special=False, normalized=False)
                  for t, ty in zip(tokens, types) if ty == _GGUF_USER_DEFINED])

  def field_id(name):
    value = fields.get(f"tokenizer.ggml.{name}")
    return None if value is None else int(value)

  bos = field_id("bos_token_id")
  if fields.get("tokenizer.ggml.add_bos_token") and bos is not None:
    tok.post_processor = processors.TemplateProcessing(
        single=[tokens[bos], "$A"], pair=[tokens[bos], "$A", "$B"],
        special_tokens=[(tokens[bos], bos)])
  # llama.cpp ends generation on any end-of-generation id: EOS, end-of-turn, end-of-message.
  eos_ids = [i for i in map(field_id, ("eos_token_id", "eot_token_id", "eom_token_id"))
             if i is not None]
  return _HFTokenizer(tok, bos_id=bos, eos_ids=eos_ids, pad_id=field_id("padding_token_id"),
                      chat_template=fields.get("tokenizer.chat_template"))


def load_tokenizer(path: str) -> Tokenizer:
  """Loads a model directory, tokenizer.json, SentencePiece .model or .gguf file.

  Special ids and the chat template come from the HF config files beside the vocabulary
  (tokenizer_config.json, chat_template.jinja, generation_config.json, config.json), or from
  the GGUF metadata.
  """
  expected = "a model directory, a tokenizer.json, a SentencePiece .model or a .gguf file"
  p = Path(path)
  if not p.exists():
    raise MissingInput(f"Tokenizer path {path!r} does not exist; expected {expected}.")
  if p.is_dir():
    if (p / "tokenizer.json").is_file():
      return _load_tokenizer_json(p / "tokenizer.json")
    if (p / "tokenizer.model").is_file():
      return _load_sentencepiece(p / "tokenizer.model")
    raise MissingInput(
        f"Directory {path!r} has no tokenizer: expected tokenizer.json or tokenizer.model in it.")
  if p.suffix == ".gguf":
    try:
      reader = gguf.GGUFReader(str(p))
    except Exception as e:  # gguf raises ValueError/struct.error/... on foreign files
      raise InvalidInput(f"Could not read {path!r} as a GGUF file: {e}") from e
    fields = {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    return tokenizer_from_gguf_fields(fields, source=str(p))
  if p.suffix == ".json":
    return _load_tokenizer_json(p)
  if p.suffix == ".model":
    return _load_sentencepiece(p)
  raise InvalidInput(f"Unrecognized tokenizer file {path!r}; expected {expected}.")
