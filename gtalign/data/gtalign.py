"""The GTAlign parquet files: a direct reader and a TensorFlow-free tensorflow-datasets builder.

Layout, schema and row counts: `shared/data/gtalign/README.md`. Two readers exist because tests and
small jobs want plain rows straight from parquet, while training wants prepared ArrayRecord files
with random access (`as_data_source`), which needs no TensorFlow. Both give the same row dicts.
"""

from __future__ import annotations

import collections.abc
import json
from absl import logging
import os
from typing import Any, Literal, Sequence

import numpy as np
from etils import epath
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow_datasets as tfds

from gtalign.data.schema import COLUMNS, check_schema, plain, row_problem, show
from gtalign.utils.errors import InvalidInput, MissingInput

_MIXED = "gamellm_wildbreak_math_medium_abgqa"

# The four in-domain sources, each with a per-source 90/10 train/test split.
SOURCES = ("math-hard", "medium", "wildguard", "ambig_qa")
OOD = ("abg-coqa", "advbench", "minerva")
CONFIGS = SOURCES + ("mixed",) + OOD

# (config, split) -> parquet path relative to the data directory, as in the README.
PATHS: dict[tuple[str, str], str] = {
    **{(s, split): f"{_MIXED}/by_source/{s}/{split}.parquet"
       for s in SOURCES for split in ("train", "test")},
    ("mixed", "train"): f"{_MIXED}/train.parquet",
    ("mixed", "test"): f"{_MIXED}/test.parquet",
    ("abg-coqa", "test"): "abg_coqa/test.parquet",
    ("advbench", "test"): "advbench/test.parquet",
    ("minerva", "test"): "minerva_math/test.parquet",
}

# Files of the upstream repository whose blobs were absent from the snapshot we copied.
MISSING_FROM_SNAPSHOT = frozenset({("mixed", "train"), ("medium", "train")})

_ID_COLUMNS = ("conv_id", "unique_conv_id")


def splits(config: str) -> tuple[str, ...]:
  """The splits GTAlign defines for a config (including ones missing from the snapshot)."""
  _check_config(config)
  return tuple(split for c, split in PATHS if c == config)


def _check_config(config: str) -> None:
  if config not in CONFIGS:
    raise InvalidInput(f"Unknown GTAlign config {config!r}; expected one of {CONFIGS}.")


def parquet_path(data_dir: str | os.PathLike, config: str, split: str) -> str:
  """The absolute parquet path of (config, split); raises if it does not exist on disk."""
  _check_config(config)
  if (config, split) not in PATHS:
    raise InvalidInput(f"GTAlign config {config!r} has no split {split!r}; "
                     f"it has {splits(config)}.")
  path = os.path.join(os.fspath(data_dir), PATHS[(config, split)])
  if not os.path.isfile(path):
    if (config, split) in MISSING_FROM_SNAPSHOT:
      raise MissingInput(
          f"{path} does not exist: the {config}/{split} file is absent from the published "
          "GTAlign snapshot (its git blob was not in the repository copy; see the data README).")
    raise MissingInput(f"GTAlign {config}/{split} file {path} does not exist.")
  return path


def read_rows(data_dir: str | os.PathLike, config: str, split: str) -> list[dict[str, Any]]:
  """All rows of one file as plain dicts, plus a stable `row_id` "<config>/<split>/<index>".

  Ids (`conv_id`, `unique_conv_id`) are int64, string or null depending on the file; they come
  back as str or None so one type flows downstream.
  """
  return read_parquet(parquet_path(data_dir, config, split), f"{config}/{split}")


def read_parquet(path: str | os.PathLike, row_prefix: str) -> list[dict[str, Any]]:
  """Rows of any parquet file with the GTAlign schema; `row_id` is "<row_prefix>/<index>".

  A malformed file fails here, not later inside training or a reward, with an `InvalidInput`
  naming the file, the row and the column: a missing column or a wrong arrow type (from the
  schema, once), a null where a row needs a value, an empty prompt or a blank message.
  """
  path = str(path)
  try:
    schema = pq.read_schema(path)
  except (pa.ArrowException, OSError) as e:
    raise InvalidInput(f"{path}: not a readable parquet file: {e}") from e
  check_schema(path, schema)
  try:
    rows = pq.read_table(path, columns=list(COLUMNS)).to_pylist()
  except (pa.ArrowException, OSError) as e:
    raise InvalidInput(f"{path}: not a readable parquet file: {e}") from e
  out = []
  for i, row in enumerate(rows):
    row = plain(row)
    problem = row_problem(row)
    if problem is not None:
      column, expected, found = problem
      raise InvalidInput(f"{path}: row {i} (0-based; row_id {row_prefix}/{i}), column "
                         f"{column!r}: expected {expected}, found {show(found)}.")
    for column in _ID_COLUMNS:
      if row[column] is not None:
        row[column] = str(row[column])
    row["row_id"] = f"{row_prefix}/{i}"
    out.append(row)
  return out


def filter_long_prompts(rows: Sequence[dict[str, Any]], tokenizer, max_prompt_length: int,
                        on_overlong: Literal["drop", "raise"] = "drop") -> list[dict[str, Any]]:
  """Keeps rows whose chat-rendered prompt fits in `max_prompt_length` tokens.

  Length counts the ids the sampler will prefill: the chat template with the generation prompt,
  encoded without extra special tokens (the template writes them itself).
  """
  if on_overlong not in ("drop", "raise"):
    raise ValueError(f"on_overlong must be 'drop' or 'raise', got {on_overlong!r}.")
  texts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True) for r in rows]
  lengths = [len(ids) for ids in tokenizer.encode_batch(texts)]
  kept = []
  for row, n in zip(rows, lengths):
    if n <= max_prompt_length:
      kept.append(row)
    elif on_overlong == "raise":
      raise ValueError(f"Prompt of row {row.get('row_id')} is {n} tokens, over "
                       f"max_prompt_length={max_prompt_length}.")
  if len(kept) < len(rows):
    logging.warning("Dropped %d of %d prompts longer than %d tokens.", len(rows) - len(kept),
                    len(rows), max_prompt_length)
  return kept


class GTAlignDataset(tfds.core.GeneratorBasedBuilder):
  """GTAlign parquet files as ArrayRecord, read back with `as_data_source()` (no TensorFlow).

  The parquet files are not downloaded: pass the directory holding them as `source_dir`.
  Example order is the parquet order, so index i is `row_id` .../i.
  Features that cannot be null carry the optional ids as "" for None; `extra_info`, whose
  struct differs between files, is stored as JSON.
  """

  name = "gtalign"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "GTAlign data snapshot 1e353602 (2025-11-02)."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=c, description=f"GTAlign {c} files")
                     for c in CONFIGS]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds' own lookup, for a builder inside a package, touches the `importlib_resources`
    # backport, which tfds requires only on Python < 3.9; without it preparing would fail.
    return epath.Path(__file__)

  def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
    kwargs.setdefault("file_format", "array_record")  # tfrecord would need TensorFlow to write
    self._source_dir = None if source_dir is None else os.fspath(source_dir)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    # Not dataset_info_from_configs: it reads package metadata a builder outside tfds lacks.
    text = tfds.features.Text()
    return tfds.core.DatasetInfo(
        builder=self,
        description="GTAlign (game-theoretic alignment) prompts with reward ground truth.",
        features=tfds.features.FeaturesDict({
            "prompt": tfds.features.Sequence({"role": text, "content": text}),
            "adversarial": np.bool_,
            "source": text,
            "conv_id": text,
            "unique_conv_id": text,
            "turn_id": np.int64,
            "data_source": text,
            "ability": text,
            "ground_truth": text,
            "style": text,
            "extra_info_json": text,
            "row_id": text,
        }),
        homepage="https://github.com/ulab-uiuc/GTAlign",
        disable_shuffling=True,  # keep parquet order: index i is row_id <config>/<split>/i
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the files are local
    if self._source_dir is None:
      raise ValueError("GTAlignDataset needs source_dir= (the directory with the parquet files) "
                       "to prepare.")
    config = self.builder_config.name
    present = {split: os.path.join(self._source_dir, PATHS[(config, split)])
               for split in splits(config)
               if os.path.isfile(os.path.join(self._source_dir, PATHS[(config, split)]))}
    if not present:
      # Raises the FileNotFoundError that names the first expected file.
      parquet_path(self._source_dir, config, splits(config)[0])
    return {split: self._generate_examples(split) for split in present}

  def _generate_examples(self, split: str):
    # read_rows has rejected the nulls these features cannot hold (adversarial, turn_id, ...)
    for i, row in enumerate(read_rows(self._source_dir, self.builder_config.name, split)):
      yield i, {
          "prompt": row["prompt"],
          "adversarial": row["adversarial"],
          "source": row["source"],
          "conv_id": row["conv_id"] or "",
          "unique_conv_id": row["unique_conv_id"] or "",
          "turn_id": row["turn_id"],
          "data_source": row["data_source"],
          "ability": row["ability"],
          "ground_truth": row["reward_model"]["ground_truth"],
          "style": row["reward_model"]["style"],
          "extra_info_json": json.dumps(row["extra_info"], ensure_ascii=False),
          "row_id": row["row_id"],
      }


def _str(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def decode_example(ex: dict[str, Any]) -> dict[str, Any]:
  """One `as_data_source` example (numpy, bytes) -> the row dict `read_rows` returns."""
  prompt = ex["prompt"]
  return {
      "prompt": [{"role": _str(r), "content": _str(c)}
                 for r, c in zip(prompt["role"], prompt["content"])],
      "adversarial": bool(ex["adversarial"]),
      "source": _str(ex["source"]),
      "conv_id": _str(ex["conv_id"]) or None,
      "unique_conv_id": _str(ex["unique_conv_id"]) or None,
      "turn_id": int(ex["turn_id"]),
      "data_source": _str(ex["data_source"]),
      "ability": _str(ex["ability"]),
      "reward_model": {"ground_truth": _str(ex["ground_truth"]), "style": _str(ex["style"])},
      "extra_info": json.loads(_str(ex["extra_info_json"])),
      "row_id": _str(ex["row_id"]),
  }


class DecodedSource(collections.abc.Sequence):
  """Random access over a tfds data source, decoding each example to a `read_rows` dict."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    if index < 0:
      index += len(self)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} rows")
    return decode_example(self._source[index])


def load_tfds(source_dir: str | os.PathLike, config: str, split: str,
              data_dir: str | os.PathLike) -> DecodedSource:
  """Prepares (config) into `data_dir` once, then returns split as decoded random-access rows."""
  parquet_path(source_dir, config, split)  # same errors as read_rows for absent files
  builder = GTAlignDataset(config=config, data_dir=os.fspath(data_dir), source_dir=source_dir)
  builder.download_and_prepare()  # a no-op when already prepared
  sources = builder.as_data_source()
  if split not in sources:
    raise KeyError(f"{builder.data_dir} was prepared without split {split!r} (has "
                   f"{sorted(sources)}); delete it to prepare again.")
  return DecodedSource(sources[split])
