"""GTAlign parquet + tfds readers against the README's counts, and the built-in world."""

import collections
import importlib.util
import json
import re
import sys

import pyarrow.parquet as pq
import pytest

from gtalign.data import gtalign as gd
from gtalign.data import world

# The table of shared/data/gtalign/README.md, typed in by hand: an independent oracle.
README_ROWS = {
    ("mixed", "test"): 1201,
    ("math-hard", "train"): 3176,
    ("math-hard", "test"): 353,
    ("medium", "test"): 248,
    ("wildguard", "train"): 2700,
    ("wildguard", "test"): 300,
    ("ambig_qa", "train"): 2700,
    ("ambig_qa", "test"): 300,
    ("abg-coqa", "test"): 1055,
    ("advbench", "test"): 520,
    ("minerva", "test"): 272,
}
README_MIXED_SOURCES = {"math-hard": 353, "wildguard": 300, "ambig_qa": 300, "medium": 248}
FILES = sorted(README_ROWS)
TEST_FILES = [f for f in FILES if f[1] == "test"]


def _stub_messages(question, system=None):
  return [{"role": "system", "content": system or "persona"}, {"role": "user", "content": question}]


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory, gtalign_data_dir):
  """Every config prepared once into ArrayRecord (about 4 s for all 11 files)."""
  out = tmp_path_factory.mktemp("tfds")
  for config in gd.CONFIGS:
    gd.GTAlignDataset(config=config, data_dir=str(out),
                      source_dir=gtalign_data_dir).download_and_prepare()
  return out


@pytest.fixture(scope="session")
def tokenizer(smollm2_gguf_path):
  from gtalign.models.tokenizer import load_tokenizer
  return load_tokenizer(smollm2_gguf_path)


def test_every_parquet_file_is_mapped(gtalign_data_dir):
  on_disk = {p.relative_to(gtalign_data_dir).as_posix()
             for p in gtalign_data_dir.rglob("*.parquet")}
  assert on_disk == {gd.PATHS[f] for f in FILES}


@pytest.mark.parametrize("config,split", FILES)
def test_parquet_reader_row_counts_and_shape(gtalign_data_dir, config, split):
  rows = gd.read_rows(gtalign_data_dir, config, split)
  assert len(rows) == README_ROWS[(config, split)]
  assert [r["row_id"] for r in rows] == [f"{config}/{split}/{i}" for i in range(len(rows))]
  sources = collections.Counter(r["data_source"] for r in rows)
  if config == "mixed":
    assert sources == README_MIXED_SOURCES
  else:
    assert set(sources) == {config}
  for r in rows:
    assert set(r) == set(gd.COLUMNS) | {"row_id"}
    assert [m["role"] for m in r["prompt"]] == ["system", "user"]
    assert all(isinstance(m["content"], str) and m["content"] for m in r["prompt"])
    assert set(r["reward_model"]) == {"ground_truth", "style"}
    assert isinstance(r["reward_model"]["ground_truth"], str)
    assert all(r[k] is None or isinstance(r[k], str) for k in ("conv_id", "unique_conv_id"))
    assert isinstance(r["extra_info"]["single_turn_prompt"], str)
  json.dumps(rows)  # plain Python types only


@pytest.mark.parametrize("config,split", FILES)
def test_tfds_reader_matches_parquet(gtalign_data_dir, tfds_dir, config, split):
  source = gd.load_tfds(gtalign_data_dir, config, split, tfds_dir)
  rows = gd.read_rows(gtalign_data_dir, config, split)
  assert len(source) == README_ROWS[(config, split)]
  for i, (a, b) in enumerate(zip(rows, source)):
    assert a == b, f"row {i} differs"
  assert source[-1] == rows[-1] and source[1:3] == rows[1:3]


def test_tfds_needs_no_tensorflow(tfds_dir):
  assert importlib.util.find_spec("tensorflow") is None
  assert "tensorflow" not in sys.modules
  prepared = [p.name for p in (tfds_dir / "gtalign").iterdir() if not p.name.startswith(".")]
  assert sorted(prepared) == sorted(gd.CONFIGS)
  assert list((tfds_dir / "gtalign" / "minerva" / "1.0.0").glob("*.array_record*"))


@pytest.mark.parametrize("config", ["medium", "mixed"])
def test_train_absent_from_snapshot(gtalign_data_dir, tmp_path, config):
  for read in (lambda: gd.read_rows(gtalign_data_dir, config, "train"),
               lambda: gd.load_tfds(gtalign_data_dir, config, "train", tmp_path)):
    with pytest.raises(FileNotFoundError, match="absent from the published") as e:
      read()
    assert gd.PATHS[(config, "train")] in str(e.value)


def test_unknown_config_split_and_missing_file(tmp_path):
  with pytest.raises(ValueError, match="Unknown GTAlign config 'nope'"):
    gd.read_rows(tmp_path, "nope", "test")
  with pytest.raises(ValueError, match="has no split 'train'"):
    gd.read_rows(tmp_path, "minerva", "train")
  with pytest.raises(FileNotFoundError) as e:
    gd.read_rows(tmp_path, "minerva", "test")
  assert str(tmp_path / "minerva_math" / "test.parquet") in str(e.value)
  assert "absent from the published" not in str(e.value)


def _write_variant(gtalign_data_dir, tmp_path, transform):
  table = pq.read_table(gtalign_data_dir / gd.PATHS[("minerva", "test")]).slice(0, 3)
  path = tmp_path / gd.PATHS[("minerva", "test")]
  path.parent.mkdir(parents=True)
  pq.write_table(transform(table), path)
  return path


def test_missing_column_names_file_and_column(gtalign_data_dir, tmp_path):
  path = _write_variant(gtalign_data_dir, tmp_path, lambda t: t.drop_columns(["extra_info"]))
  with pytest.raises(ValueError, match="missing column 'extra_info'") as e:
    gd.read_rows(tmp_path, "minerva", "test")
  assert str(path) in str(e.value)


def test_missing_ground_truth_names_nested_column(gtalign_data_dir, tmp_path):
  def drop_ground_truth(t):
    reward = t.column("reward_model").combine_chunks()
    style_only = reward.__class__.from_arrays([reward.field("style")], names=["style"])
    return t.set_column(t.schema.get_field_index("reward_model"), "reward_model", style_only)
  path = _write_variant(gtalign_data_dir, tmp_path, drop_ground_truth)
  with pytest.raises(ValueError, match=r"missing column 'reward_model\.ground_truth'") as e:
    gd.read_rows(tmp_path, "minerva", "test")
  assert str(path) in str(e.value)


def test_every_test_prompt_renders_and_tokenizes(gtalign_data_dir, tokenizer):
  texts = {}
  for config, split in TEST_FILES:
    for row in gd.read_rows(gtalign_data_dir, config, split):
      text = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True)
      assert row["prompt"][1]["content"] in text
      texts.setdefault(text, row["row_id"])
  assert len(texts) > 2500  # the mixed file repeats the by-source ones; dedupe saves half
  ids = tokenizer.encode_batch(list(texts))
  empty = [row_id for row_id, x in zip(texts.values(), ids) if not x]
  assert not empty and min(map(len, ids)) > 500  # the instruction alone is ~2.7k characters


def test_filter_long_prompts_drops_and_raises(gtalign_data_dir, tokenizer, caplog):
  rows = gd.read_rows(gtalign_data_dir, "minerva", "test")[:80]
  lengths = [len(tokenizer.encode(tokenizer.apply_chat_template(r["prompt"]))) for r in rows]
  limit = sorted(lengths)[len(lengths) // 2]
  expected = [r["row_id"] for r, n in zip(rows, lengths) if n <= limit]
  assert 0 < len(expected) < len(rows)
  with caplog.at_level("WARNING"):
    kept = gd.filter_long_prompts(rows, tokenizer, limit)
  assert [r["row_id"] for r in kept] == expected
  assert f"Dropped {len(rows) - len(expected)} of {len(rows)}" in caplog.text
  assert gd.filter_long_prompts(rows, tokenizer, max(lengths), on_overlong="raise") == rows
  first_long = next(i for i, n in enumerate(lengths) if n > limit)
  with pytest.raises(ValueError, match=rf"minerva/test/{first_long} is {lengths[first_long]} tok"):
    gd.filter_long_prompts(rows, tokenizer, limit, on_overlong="raise")


# ---------------------------------------------------------------------------------------- world


def _world(seed=0, **kw):
  return world.make_world(seed, build_messages=_stub_messages, **kw)


def test_world_deterministic_per_seed():
  assert _world(0) == _world(0)
  assert _world(0)["train"] != _world(1)["train"]
  assert ({r["extra_info"]["fact_id"] for r in _world(0)["test"]}
          != {r["extra_info"]["fact_id"] for r in _world(1)["test"]})


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_world_splits_by_fact(seed):
  w = _world(seed, num_train=600, num_test=50)
  train = {r["extra_info"]["fact_id"] for r in w["train"]}
  test = {r["extra_info"]["fact_id"] for r in w["test"]}
  assert not train & test
  categories = lambda ids: {i.split("/")[0] for i in ids}
  assert categories(train) == categories(test) == {f.category for f in world.facts()}
  assert len(world.facts()) >= 100 and len(train) > 3 * len(test)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_held_out_phrasing_or_fact_is_trained_on(seed):
  w = _world(seed)
  train, test = w["train"], w["test"]
  strip = world.strip_lead_in
  train_vq = {strip(r["extra_info"]["question"]) for r in train
              if r["extra_info"]["question_type"] == "VQ"}
  test_vq = [strip(r["extra_info"]["question"]) for r in test
             if r["extra_info"]["question_type"] == "VQ"]
  train_facts = {r["extra_info"]["fact_id"] for r in train}
  test_dq = [r["extra_info"]["fact_id"] for r in test if r["extra_info"]["question_type"] == "DQ"]
  assert test_vq and not set(test_vq) & train_vq  # vague phrasings never seen in training
  assert test_dq and not set(test_dq) & train_facts  # definite facts never seen in training
  # held out: every fact and every vague phrasing at most once, so every prompt is distinct
  assert len(set(test_vq)) == len(test_vq) and len(set(test_dq)) == len(test_dq)
  assert len({r["extra_info"]["question"] for r in test}) == len(test) == 54
  # training prompts are pairwise distinct too, so SFT and RL halves share none
  assert len({r["extra_info"]["question"] for r in train}) == len(train)
  train_q, test_q = world.split_phrasings(seed)
  for name in train_q:
    assert len(test_q[name]) == world.VQ_TEST_PHRASINGS and not set(train_q[name]) & set(
        test_q[name])


def test_rl_alternates_types():
  from gtalign.training.run import phase_orders
  rows = _world(0)["train"]
  orders = phase_orders(rows, 0)
  assert sorted(orders["rl"]) == list(range(len(rows)))
  kinds = [rows[i]["extra_info"]["question_type"] for i in orders["rl"]]
  pairs = len(kinds) // 2 - 8  # the surplus of the longer type may trail at the end
  assert all({kinds[2 * j], kinds[2 * j + 1]} == {"DQ", "VQ"} for j in range(pairs))
  untyped = [{"extra_info": {}} for _ in range(10)]  # other sources: a plain permutation
  assert sorted(phase_orders(untyped, 0)["rl"]) == list(range(10))


def test_asking_for_more_held_out_rows_than_exist_names_the_key():
  with pytest.raises(ValueError, match="distinct VQ questions.*num_test"):
    _world(0, num_test=200)


@pytest.mark.parametrize("vague_fraction", [0.5, 0.25, 0.0])
def test_world_question_types(vague_fraction):
  w = _world(3, num_train=200, num_test=30, vague_fraction=vague_fraction)
  for split, n in (("train", 200), ("test", 30)):
    rows = w[split]
    assert len(rows) == n
    vague = [r for r in rows if r["extra_info"]["question_type"] == "VQ"]
    assert len(vague) == round(n * vague_fraction)
    for r in rows:
      info = r["extra_info"]
      assert r["prompt"][-1]["content"] == info["question"]
      if info["question_type"] == "VQ":
        assert r["reward_model"]["ground_truth"] == world.AMBIGUOUS
        assert info["question"] != info["single_turn_prompt"] and info["missing_slot"]
      else:
        assert info["question_type"] == "DQ"
        assert r["reward_model"]["ground_truth"] == info["answer"]
        assert info["question"] == info["single_turn_prompt"]


def test_world_rows_look_like_gtalign_rows(gtalign_data_dir):
  reference = gd.read_rows(gtalign_data_dir, "minerva", "test")[0]
  for r in _world(0)["train"]:
    assert set(r) == set(reference)
    assert set(r["reward_model"]) == set(reference["reward_model"])
    assert r["reward_model"]["style"] == "rule" and r["data_source"] == "world"
    assert {"question_type", "single_turn_prompt", "answer", "fact_id"} <= set(r["extra_info"])
    assert [m["role"] for m in r["prompt"]] == ["system", "user"]
  json.dumps(_world(0))


def test_world_arithmetic_answers():
  facts = {f.fact_id: f for f in world.facts()}
  assert facts["add/7+5"].answer == "12" and facts["add/7+5"].question == "What is 7 + 5?"
  assert facts["subtract/9-4"].answer == "5" and "five" in facts["subtract/9-4"].aliases
  assert facts["capital/france"].answer == "Paris"
  assert facts["next_month/december"].answer == "January"
  checked = 0
  for r in _world(0)["train"] + _world(0)["test"]:
    m = re.search(r"(?:^|: |[.!] )What is (\d+) (\+|-|plus|minus) (\d+)\?$",
                  r["extra_info"]["single_turn_prompt"])
    if m:
      a, op, b = int(m[1]), m[2], int(m[3])
      assert r["extra_info"]["answer"] == str(a + b if op in ("+", "plus") else a - b)
      checked += 1
  assert checked > 100


def test_world_uses_the_game_prompt():
  if importlib.util.find_spec("gtalign.game.prompt") is None:
    pytest.skip("gtalign.game.prompt not written yet")
  from gtalign.game import prompt
  w = world.make_world(0, num_train=20, num_test=10)
  for r in w["train"] + w["test"]:
    assert r["prompt"] == prompt.build_messages(r["extra_info"]["question"])
    assert r["prompt"][0]["content"] == prompt.DEFAULT_SYSTEM
    assert r["extra_info"]["question"] in r["prompt"][-1]["content"]
