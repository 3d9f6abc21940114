"""Malformed GTAlign parquet files fail with one line naming the file, the row and the column.

The files are small synthetic ones written with the real schema (checked against a real file
when the data is there), so these tests do not need the data.
"""

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gtalign.data import gtalign as gd
from gtalign.utils.errors import InvalidInput

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

MESSAGES = pa.list_(pa.field("element", pa.struct([("content", pa.string()),
                                                   ("role", pa.string())])))
REWARD = pa.struct([("ground_truth", pa.string()), ("style", pa.string())])
EXTRA = pa.struct([("adversarial", pa.null()), ("chat_history", MESSAGES), ("index", pa.int64()),
                   ("single_turn_completion", pa.string()), ("single_turn_prompt", pa.string()),
                   ("split", pa.string())])
# The math-hard files' schema (shared/data/gtalign/README.md), field order as in the files.
SCHEMA = pa.schema([("prompt", MESSAGES), ("adversarial", pa.bool_()), ("source", pa.string()),
                    ("conv_id", pa.int64()), ("unique_conv_id", pa.int64()),
                    ("turn_id", pa.int64()), ("data_source", pa.string()),
                    ("ability", pa.string()), ("reward_model", REWARD), ("extra_info", EXTRA)])
N_ROWS = 5
BAD = 3  # the row the row-level cases break


def row(i: int, source: str = "math-hard") -> dict:
  question = f"What is {i} + {i}?"
  return {
      "prompt": [{"content": "You are a helpful assistant.", "role": "system"},
                 {"content": f"<four-block instruction> Question: {question}", "role": "user"}],
      "adversarial": False, "source": source, "conv_id": i, "unique_conv_id": i, "turn_id": 1,
      "data_source": source, "ability": source,
      "reward_model": {"ground_truth": str(2 * i), "style": "rule"},
      "extra_info": {"adversarial": None, "index": i, "split": "train",
                     "chat_history": [{"content": question, "role": "user"}],
                     "single_turn_completion": str(2 * i), "single_turn_prompt": question},
  }


def write(directory, table: pa.Table, config: str = "math-hard", split: str = "train"):
  path = directory / gd.PATHS[(config, split)]
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(table, path)
  return path


def table(rows=None, schema=SCHEMA) -> pa.Table:
  return pa.Table.from_pylist(rows if rows is not None else [row(i) for i in range(N_ROWS)],
                              schema=schema)


def replace_column(t: pa.Table, name: str, values, type_) -> pa.Table:
  return t.set_column(t.schema.get_field_index(name), name, pa.array(values, type_))


def read_error(tmp_path, t: pa.Table, config="math-hard", split="train") -> tuple[str, str]:
  """(the file written, the one-line message reading it raises)."""
  path = write(tmp_path, t, config, split)
  with pytest.raises(InvalidInput) as e:
    gd.read_rows(tmp_path, config, split)
  message = str(e.value)
  assert "\n" not in message
  return str(path), message


def test_schema_mirrors_a_real_file(gtalign_data_dir):
  real = pq.read_schema(gtalign_data_dir / gd.PATHS[("math-hard", "train")])
  assert [(f.name, str(f.type)) for f in real] == [(f.name, str(f.type)) for f in SCHEMA]


def test_the_synthetic_file_reads(tmp_path):
  write(tmp_path, table())
  rows = gd.read_rows(tmp_path, "math-hard", "train")
  assert [r["row_id"] for r in rows] == [f"math-hard/train/{i}" for i in range(N_ROWS)]
  assert rows[2]["conv_id"] == "2" and rows[2]["prompt"][1]["role"] == "user"


def test_other_encodings_of_the_same_types_read(tmp_path):
  """large_string, dictionary-encoded strings and large_list hold the same values."""
  t = table()
  t = replace_column(t, "source", [r["source"] for r in t.to_pylist()], pa.large_string())
  t = t.set_column(t.schema.get_field_index("ability"), "ability",
                   t.column("ability").dictionary_encode())
  t = replace_column(t, "prompt", t.column("prompt").to_pylist(),
                     pa.large_list(MESSAGES.value_type))
  write(tmp_path, t)
  assert gd.read_rows(tmp_path, "math-hard", "train") == (
      gd.read_parquet(write(tmp_path / "plain", table()), "math-hard/train"))


# ------------------------------------------------------------------------ file-wide problems


def test_missing_column_lists_the_present_ones(tmp_path):
  path, message = read_error(tmp_path, table().drop_columns(["prompt"]))
  assert message.startswith(f"{path}: missing column 'prompt' (has [")
  assert "'reward_model'" in message and "'extra_info'" in message


def _prompt_as_int(t):
  return replace_column(t, "prompt", [7] * N_ROWS, pa.int64())


def _prompt_as_strings(t):
  return replace_column(t, "prompt", [["hi", "there"]] * N_ROWS, pa.list_(pa.string()))


def _prompt_as_json(t):
  return replace_column(t, "prompt", ['[{"role": "user"}]'] * N_ROWS, pa.string())


def _messages_without_content(t):
  values = [[{"role": m["role"]} for m in p] for p in t.column("prompt").to_pylist()]
  return replace_column(t, "prompt", values, pa.list_(pa.struct([("role", pa.string())])))


def _content_as_int(t):
  values = [[{"content": 1, "role": m["role"]} for m in p] for p in t.column("prompt").to_pylist()]
  type_ = pa.list_(pa.struct([("content", pa.int64()), ("role", pa.string())]))
  return replace_column(t, "prompt", values, type_)


def _reward_as_string(t):
  return replace_column(t, "reward_model", ["rule"] * N_ROWS, pa.string())


def _ground_truth_as_int(t):
  type_ = pa.struct([("ground_truth", pa.int64()), ("style", pa.string())])
  return replace_column(t, "reward_model", [{"ground_truth": 4, "style": "rule"}] * N_ROWS, type_)


def _turn_id_as_string(t):
  return replace_column(t, "turn_id", ["1"] * N_ROWS, pa.string())


def _adversarial_as_int(t):
  return replace_column(t, "adversarial", [0] * N_ROWS, pa.int8())


def _conv_id_as_float(t):
  return replace_column(t, "conv_id", [1.0] * N_ROWS, pa.float64())


def _extra_info_without_prompt(t):
  info = [{k: v for k, v in r.items() if k != "single_turn_prompt"}
          for r in t.column("extra_info").to_pylist()]
  type_ = pa.struct([f for f in EXTRA if f.name != "single_turn_prompt"])
  return replace_column(t, "extra_info", info, type_)


def _extra_info_as_string(t):
  return replace_column(t, "extra_info", ["{}"] * N_ROWS, pa.string())


def _chat_history_as_strings(t):
  info = [{**r, "chat_history": ["hello"]} for r in t.column("extra_info").to_pylist()]
  type_ = pa.struct([pa.field("chat_history", pa.list_(pa.string())) if f.name == "chat_history"
                     else f for f in EXTRA])
  return replace_column(t, "extra_info", info, type_)


# transform -> what the message must say after "<file>: "; every one names row 0's value too
SCHEMA_CASES = {
    _prompt_as_int: ("column 'prompt' is int64, expected "
                     "list<struct<content: string, role: string>>", "holds 7"),
    _prompt_as_strings: ("column 'prompt' is list<element: string>, expected list<struct<",
                         "'hi'"),
    _prompt_as_json: ("column 'prompt' is string, expected list<struct<", "'[{\"role\""),
    _messages_without_content: ("missing column 'prompt[].content' (its messages are "
                                "struct<role: string>)", "[{'role': 'system'}"),
    _content_as_int: ("column 'prompt[].content' is int64, expected string", "'content': 1"),
    _reward_as_string: ("column 'reward_model' is string, expected struct<ground_truth: string, "
                        "style: string>", "holds 'rule'"),
    _ground_truth_as_int: ("column 'reward_model.ground_truth' is int64, expected string",
                           "'ground_truth': 4"),
    _turn_id_as_string: ("column 'turn_id' is string, expected int64", "holds '1'"),
    _adversarial_as_int: ("column 'adversarial' is int8, expected bool", "holds 0"),
    _conv_id_as_float: ("column 'conv_id' is double, expected int64, string or null", "1.0"),
    _extra_info_without_prompt: ("missing column 'extra_info.single_turn_prompt' (extra_info is "
                                 "struct<", "{'adversarial': None"),
    _extra_info_as_string: ("column 'extra_info' is string, expected struct<", "holds '{}'"),
    _chat_history_as_strings: ("column 'extra_info.chat_history' is list<element: string>, "
                               "expected list<struct<", "'hello'"),
}


@pytest.mark.parametrize("transform", SCHEMA_CASES, ids=lambda f: f.__name__.strip("_"))
def test_wrong_type_names_file_column_expected_and_found(tmp_path, transform):
  path, message = read_error(tmp_path, transform(table()))
  problem, example = SCHEMA_CASES[transform]
  assert message.startswith(f"{path}: {problem}"), message
  assert ", in every row; row 0 (0-based) holds " in message and example in message, message


def test_wrong_type_in_an_empty_file_still_names_file_and_column(tmp_path):
  t = _prompt_as_int(table()).slice(0, 0)
  path, message = read_error(tmp_path, t)
  assert message == (f"{path}: column 'prompt' is int64, expected list<struct<content: string, "
                     "role: string>>, in every row.")


def test_not_a_parquet_file(tmp_path):
  path = tmp_path / gd.PATHS[("math-hard", "train")]
  path.parent.mkdir(parents=True)
  path.write_bytes(b"PAR1 not really")
  with pytest.raises(InvalidInput, match="not a readable parquet file") as e:
    gd.read_rows(tmp_path, "math-hard", "train")
  assert str(e.value).startswith(f"{path}: ")


# ------------------------------------------------------------------------ one bad row


def _set(path: str, value):
  """A row transform setting the (dotted, [index]ed) field `path` of the row to `value`."""
  def apply(r):
    keys = path.replace("[", ".").replace("]", "").split(".")
    node = r
    for k in keys[:-1]:
      node = node[int(k) if k.isdigit() else k]
    last = keys[-1]
    node[int(last) if last.isdigit() else last] = value
    return r
  return apply


# name -> (source of the rows, row transform, column named, expected, found)
ROW_CASES = {
    "null prompt": (None, _set("prompt", None), "prompt",
                    "a non-empty list of {role, content} messages", "null"),
    "empty prompt": (None, _set("prompt", []), "prompt",
                     "a non-empty list of {role, content} messages", "[]"),
    "null message": (None, _set("prompt[0]", None), "prompt[0]", "a {role, content} message",
                     "null"),
    "blank question": (None, _set("prompt[1].content", "  \n\t"), "prompt[1].content",
                       "a non-blank string", "only whitespace (4 characters)"),
    "empty question": (None, _set("prompt[1].content", ""), "prompt[1].content",
                       "a non-blank string", "an empty string"),
    "null question": (None, _set("prompt[1].content", None), "prompt[1].content",
                      "a non-blank string", "null"),
    "empty system": (None, _set("prompt[0].content", ""), "prompt[0].content",
                     "a non-blank string", "an empty string"),
    "null role": (None, _set("prompt[0].role", None), "prompt[0].role", "a non-blank string",
                  "null"),
    "null data_source": (None, _set("data_source", None), "data_source", "a non-blank string",
                         "null"),
    "blank data_source": (None, _set("data_source", " "), "data_source", "a non-blank string",
                          "only whitespace (1 character)"),
    "null turn_id": (None, _set("turn_id", None), "turn_id", "an integer", "null"),
    "null adversarial": (None, _set("adversarial", None), "adversarial", "a bool", "null"),
    "null reward_model": (None, _set("reward_model", None), "reward_model",
                          "a struct with ground_truth, style", "null"),
    "null ground_truth": (None, _set("reward_model.ground_truth", None),
                          "reward_model.ground_truth", "a string", "null"),
    "null extra_info": (None, _set("extra_info", None), "extra_info",
                        "a struct with single_turn_prompt", "null"),
    "null single_turn_prompt": (None, _set("extra_info.single_turn_prompt", None),
                                "extra_info.single_turn_prompt", "a string", "null"),
    "medium without chat history": ("medium", _set("extra_info.chat_history", []),
                                    "extra_info.chat_history",
                                    "messages, the last with a content string (data_source "
                                    "'medium' needs it)", "[]"),
    "medium with a null last message": ("medium", _set("extra_info.chat_history[0].content", None),
                                        "extra_info.chat_history", "messages, the last with a "
                                        "content string", "[{'content': None, 'role': 'user'}]"),
}


@pytest.mark.parametrize("name", sorted(ROW_CASES))
def test_bad_row_names_file_row_column_expected_and_found(tmp_path, name):
  source, transform, column, expected, found = ROW_CASES[name]
  rows = [row(i, source or "math-hard") for i in range(N_ROWS)]
  rows[BAD] = transform(rows[BAD])
  path, message = read_error(tmp_path, table(rows))
  assert message.startswith(f"{path}: row {BAD} (0-based; row_id math-hard/train/{BAD}), "
                            f"column {column!r}: expected {expected}"), message
  assert message.endswith(f", found {found}."), message


def test_the_first_bad_row_is_named(tmp_path):
  rows = [row(i) for i in range(N_ROWS)]
  rows[4]["prompt"] = None
  rows[1]["reward_model"]["style"] = None
  _, message = read_error(tmp_path, table(rows))
  assert "row 1 (0-based; row_id math-hard/train/1), column 'reward_model.style'" in message


def test_abg_coqa_rows_need_their_ground_truth(tmp_path):
  """abg-coqa's extra_info is struct<ground_truth, single_turn_prompt> (its reward reads it)."""
  info_type = pa.struct([("single_turn_prompt", pa.string())])
  schema = pa.schema([pa.field("extra_info", info_type) if f.name == "extra_info" else f
                      for f in SCHEMA])
  rows = [row(i, "abg-coqa") for i in range(N_ROWS)]
  for r in rows:
    r["extra_info"] = {"single_turn_prompt": "Context: ... Question: ?"}
  path, message = read_error(tmp_path, table(rows, schema), "abg-coqa", "test")
  assert message == (f"{path}: row 0 (0-based; row_id abg-coqa/test/0), column "
                     "'extra_info.ground_truth': expected a string (data_source 'abg-coqa' "
                     "needs it), found no such field.")


def test_long_values_are_cut(tmp_path):
  rows = [row(i, "medium") for i in range(N_ROWS)]
  history = [{"content": None, "role": "x" * 200}]
  rows[1]["extra_info"]["chat_history"] = history
  _, message = read_error(tmp_path, table(rows))
  assert message.endswith(f"found {repr(history)[:77]}....") and len(message) < 400


def test_score_reads_a_single_file_with_the_same_errors(tmp_path):
  rows = [row(i) for i in range(N_ROWS)]
  rows[2]["prompt"] = []
  path = tmp_path / "mine.parquet"
  pq.write_table(table(rows), path)
  with pytest.raises(InvalidInput, match=r"mine.parquet: row 2 \(0-based; row_id mine/2\), "
                     r"column 'prompt'"):
    gd.read_parquet(path, "mine")


# ------------------------------------------------------------------------ the command line


def test_training_on_a_malformed_file_fails_in_one_line(tmp_path):
  rows = [row(i) for i in range(N_ROWS)]
  rows[BAD]["prompt"][1]["content"] = " \n "
  path = write(tmp_path / "data", table(rows))
  proc = subprocess.run(
      [sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:tiny",
       "--config.data.source=math-hard", f"--config.data.dir={tmp_path / 'data'}",
       f"--workdir={tmp_path / 'work'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert errors == [f"error: {path}: row {BAD} (0-based; row_id math-hard/train/{BAD}), column "
                    "'prompt[1].content': expected a non-blank string, found only whitespace (3 "
                    "characters)."], proc.stderr
