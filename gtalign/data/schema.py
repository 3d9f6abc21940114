"""What a GTAlign parquet file must hold, checked so that a malformed file fails with one line.

`check_schema` reads the arrow schema once (a column has one type, so a wrong type is wrong in
every row); `row_problem` finds a row's first unusable value (a null, an empty prompt, a blank
message, a field its data source's reward reads). Both feed `InvalidInput` messages that name the
file, the row and the column, and what was expected.
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gtalign.utils.errors import InvalidInput

# Every file has this column set; requiring all of it keeps the row dict shape fixed.
COLUMNS = ("prompt", "adversarial", "source", "conv_id", "unique_conv_id", "turn_id",
           "data_source", "ability", "reward_model", "extra_info")
_REWARD_FIELDS = ("ground_truth", "style")


def plain(value: Any) -> Any:
  """Nested numpy/arrow leftovers -> dict/list/str/int/float/bool/None, so rows JSON-serialise."""
  if isinstance(value, dict):
    return {str(k): plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [plain(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def _is_string(t: pa.DataType) -> bool:
  if pa.types.is_dictionary(t):
    return _is_string(t.value_type)
  return (pa.types.is_string(t) or pa.types.is_large_string(t)
          or getattr(pa.types, "is_string_view", lambda _: False)(t))


def _is_list(t: pa.DataType) -> bool:
  return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_id(t: pa.DataType) -> bool:
  return pa.types.is_integer(t) or _is_string(t) or pa.types.is_null(t)


_MESSAGES = "list<struct<content: string, role: string>>"
_MESSAGE_FIELDS = ("role", "content")
# Top-level column -> (its type as errors name it, the check); other arrow encodings of the same
# values (large_string, dictionary, large_list) pass too.
_COLUMN_TYPES = {
    "adversarial": ("bool", pa.types.is_boolean),
    "source": ("string", _is_string),
    "conv_id": ("int64, string or null", _is_id),
    "unique_conv_id": ("int64, string or null", _is_id),
    "turn_id": ("int64", pa.types.is_integer),
    "data_source": ("string", _is_string),
    "ability": ("string", _is_string),
    "reward_model": ("struct<ground_truth: string, style: string>", pa.types.is_struct),
    "extra_info": ("struct<single_turn_prompt: string, ...>", pa.types.is_struct),
}
# Struct column -> the string fields every file needs (the rewards read them for every source).
_STRUCT_FIELDS = {"reward_model": _REWARD_FIELDS, "extra_info": ("single_turn_prompt",)}
# Top-level columns a usable row cannot leave null, with what they hold (for the message).
_NOT_NULL = {"adversarial": "a bool", "source": "a string", "turn_id": "an integer",
             "data_source": "a non-blank string", "ability": "a string"}
# data_source -> the extra_info field its reward also reads (rewards/tasks.py).
_SOURCE_FIELDS = {"medium": "chat_history", "abg-coqa": "ground_truth"}


class _Absent:
  """A struct field a file does not have, as an error message's `found` shows it."""

  def __repr__(self) -> str:
    return "no such field"


_ABSENT = _Absent()


def show(value: Any) -> str:
  """A value as an error message shows it: its repr cut at 80 characters, null for None, and
  blank strings in words (the one-line `error:` printer would collapse their whitespace)."""
  if value is None:
    return "null"
  if isinstance(value, str) and not value.strip():
    n = len(value)
    return f"only whitespace ({n} character{'s' * (n != 1)})" if value else "an empty string"
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def _row_zero(path: str, column: str) -> str:
  """'; row 0 (0-based) holds ...' for a column of the wrong type; '' for an empty file."""
  try:
    values = pq.read_table(path, columns=[column]).column(0).slice(0, 1).to_pylist()
  except (pa.ArrowException, OSError):
    return ""
  return f"; row 0 (0-based) holds {show(plain(values[0]))}" if values else ""


def _messages_problem(t: pa.DataType, column: str) -> str:
  """'' when `t` is a list of structs with string content and role, else what is wrong."""
  if not _is_list(t) or not pa.types.is_struct(t.value_type):
    return f"column {column!r} is {t}, expected {_MESSAGES}"
  message = t.value_type
  for field in ("content", "role"):
    i = message.get_field_index(field)
    if i < 0:
      return f"missing column '{column}[].{field}' (its messages are {message})"
    if not _is_string(message.field(i).type):
      return f"column '{column}[].{field}' is {message.field(i).type}, expected string"
  return ""


def check_schema(path: str, schema: pa.Schema) -> None:
  """Column names and arrow types: a column has one type, so these hold for every row."""
  names = set(schema.names)
  for column in COLUMNS:
    if column not in names:
      raise InvalidInput(f"{path}: missing column {column!r} (has {sorted(names)}).")

  def fail(problem: str, column: str) -> NoReturn:
    raise InvalidInput(f"{path}: {problem}, in every row{_row_zero(path, column)}.")

  problem = _messages_problem(schema.field("prompt").type, "prompt")
  if problem:
    fail(problem, "prompt")
  for column, (expected, check) in _COLUMN_TYPES.items():
    t = schema.field(column).type
    if not check(t):
      fail(f"column {column!r} is {t}, expected {expected}", column)
  for column, fields in _STRUCT_FIELDS.items():
    struct = schema.field(column).type
    for field in fields:
      i = struct.get_field_index(field)
      if i < 0:
        fail(f"missing column '{column}.{field}' ({column} is {struct})", column)
      if not _is_string(struct.field(i).type):
        fail(f"column '{column}.{field}' is {struct.field(i).type}, expected string", column)
  info = schema.field("extra_info").type
  i = info.get_field_index("chat_history")
  if i >= 0 and not pa.types.is_null(info.field(i).type):
    problem = _messages_problem(info.field(i).type, "extra_info.chat_history")
    if problem:
      fail(problem, "extra_info")


def _blank(value: Any) -> bool:
  return not isinstance(value, str) or not value.strip()


def row_problem(row: dict[str, Any]) -> tuple[str, str, Any] | None:
  """(column, what it must hold, what it holds) for a row's first unusable value, else None.

  The schema check has settled the types; what is left are nulls, empty or blank prompt
  messages, and the per-source fields a file's schema cannot promise (the mixed file).
  """
  prompt = row["prompt"]
  if not prompt:
    return "prompt", "a non-empty list of {role, content} messages", prompt
  for j, message in enumerate(prompt):
    if message is None:
      return f"prompt[{j}]", "a {role, content} message", None
    for field in _MESSAGE_FIELDS:
      if _blank(message[field]):
        return f"prompt[{j}].{field}", "a non-blank string", message[field]
  for column, expected in _NOT_NULL.items():
    if row[column] is None:
      return column, expected, None
  if _blank(row["data_source"]):
    return "data_source", _NOT_NULL["data_source"], row["data_source"]
  for column, fields in _STRUCT_FIELDS.items():
    if row[column] is None:
      return column, f"a struct with {', '.join(fields)}", None
    for field in fields:
      if row[column][field] is None:
        return f"{column}.{field}", "a string", None
  field = _SOURCE_FIELDS.get(row["data_source"])
  if field is None:
    return None
  needs = f"(data_source {row['data_source']!r} needs it)"
  value = row["extra_info"].get(field, _ABSENT)
  if field == "chat_history":
    last = value[-1] if isinstance(value, list) and value else None
    if not isinstance(last, dict) or not isinstance(last.get("content"), str):
      return f"extra_info.{field}", f"messages, the last with a content string {needs}", value
  elif not isinstance(value, str):
    return f"extra_info.{field}", f"a string {needs}", value
  return None
