"""Scan rows (`rl.scan_rows`): a step's rollouts with their tables edited, the scan of the edited
table taught by its likelihood."""

import re

import numpy as np
import pytest

from gtalign.data import warm_start, world
from gtalign.evaluation import steering
from gtalign.game import payoff, prompt as prompt_lib, trace
from gtalign.models.tokenizer import load_tokenizer
from gtalign.training import scan_rows


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf_path):
  return load_tokenizer(smollm2_gguf_path)


@pytest.fixture(scope="module")
def rollouts(tokenizer):
  """Four rollouts of two prompts, each hedging (AQ) as a warm start's traces do, one of them
  cut before its table."""
  test = world.make_world(seed=0, num_train=0, num_test=12, build_messages=lambda q, s: (
      prompt_lib.build_messages(q, s, style="compact")))["test"]
  definite = next(r for r in test if r["extra_info"]["question_type"] == "DQ")
  vague = next(r for r in test if r["extra_info"]["question_type"] == "VQ")
  group = [definite, definite, vague, vague]
  texts = [warm_start.format_trace(r, "AQ", tables="fixed") for r in group]
  texts[1] = texts[1][:texts[1].index("<payoff>")]  # wrote no table
  tokens = [tokenizer.encode(t) for t in texts]
  kinds = [r["extra_info"]["question_type"] for r in group]
  return texts, tokens, kinds


def test_each_row_keeps_the_reading_edits_the_table_and_trains_only_its_scan(tokenizer,
                                                                             rollouts):
  """A row is the rollout's own ids through `<payoff>`, then the table edited to select the
  row's key, then the warm start's scan of that table; the ids that train spell exactly the
  `<analyze>` block, whose scan names the edited table's pick and copies its cells."""
  texts, tokens, kinds = rollouts
  out = scan_rows.scan_rows(tokenizer, texts, tokens, kinds, count=6, seed=3)
  assert len(out.sources) == 6 and 1 not in out.sources  # the tableless rollout never
  assert set(out.sources) == {0, 2, 3}
  for i, ids, mask, key in zip(out.sources, out.completions, out.trained, out.keys):
    cut = texts[i].index("<payoff>") + len("<payoff>")
    assert list(ids[:len(tokenizer.encode(texts[i][:cut]))]) == tokenizer.encode(
        texts[i][:cut])  # the rollout's own ids through the reading
    text = tokenizer.decode(list(ids))
    trained = tokenizer.decode([int(t) for t, m in zip(ids, mask) if m])
    after = text[text.index("</payoff>") + len("</payoff>"):]
    scan = after[:after.index(trace.ANALYZE_END) + len(trace.ANALYZE_END)]
    # the scan; at most the end of </payoff> and the start of <response> where one id spells
    # both tags, as in a whole trace (the row ends with the id that closes the scan)
    assert trained.endswith(after) and "</payoff>".endswith(trained[:-len(after)] or ">")
    assert scan.startswith("<analyze>") and trace.RESPONSE_START.startswith(after[len(scan):])
    whole = tokenizer.encode(text[:len(text) - len(after)] + scan + trace.RESPONSE_START)
    assert list(ids) == whole[:len(ids)]  # the ids a whole trace has there
    parsed = trace.parse_trace(text + "<response>x</response>")
    assert parsed.chosen_key == key == payoff.select_in_row(
        payoff.Bimatrix.from_dict(parsed.payoff), key[:2])
    assert key[:2] == kinds[i]
    for cell in (k for k in trace.PAYOFF_KEYS if k.startswith(key[:2])):
      llm, user = payoff.Bimatrix.from_dict(parsed.payoff)[cell]
      assert f'"{cell}":{{"LLM":{llm:g},"user":{user:g}}} sums to {llm + user:g}' in scan
  # the edits move the peak: some rows select another strategy than the AQ the rollouts wrote
  assert any(not k.endswith("AQ") for k in out.keys)


def test_the_scan_of_an_edited_table_is_the_one_the_warm_start_writes(tokenizer, rollouts):
  """The taught scan of a table is the warm start's `analysis` of it, number for number, with
  the edit the steering metric makes."""
  texts, tokens, kinds = rollouts
  out = scan_rows.scan_rows(tokenizer, texts, tokens, kinds, count=3, seed=0)
  for i, ids, key in zip(out.sources, out.completions, out.keys):
    prefix, want_key, table = steering.edited(steering.table_cut(texts[i]), kinds[i],
                                              key[3:])
    assert want_key == key
    text = tokenizer.decode(list(ids))
    scan = f"<analyze>{warm_start.analysis(key[:2], table.points())}</analyze>"
    assert text.startswith(prefix + scan)
    assert trace.RESPONSE_START.startswith(text[len(prefix + scan):])


def test_a_restated_scan_is_taught_in_the_runs_form(tokenizer, rollouts):
  """With `sft.scan=restate` the taught scan is the warm start's restated one, so RL's scan rows
  teach the form the warm start taught, not the copied one."""
  texts, tokens, kinds = rollouts
  out = scan_rows.scan_rows(tokenizer, texts, tokens, kinds, count=3, seed=0, scan="restate")
  for i, ids, key in zip(out.sources, out.completions, out.keys):
    prefix, _, table = steering.edited(steering.table_cut(texts[i]), kinds[i], key[3:])
    text = tokenizer.decode(list(ids))
    scan = f"<analyze>{warm_start.analysis(key[:2], table.points(), 'restate')}</analyze>"
    assert text.startswith(prefix + scan) and "sums to" not in text


def test_without_a_table_the_rows_train_nothing_and_keep_the_shape(tokenizer, rollouts):
  texts, tokens, kinds = rollouts
  out = scan_rows.scan_rows(tokenizer, texts[1:2], tokens[1:2], kinds[1:2], count=4, seed=0)
  assert len(out.completions) == 4
  assert all(not m.any() for m in out.trained)


def test_draws_are_a_function_of_the_seed(tokenizer, rollouts):
  texts, tokens, kinds = rollouts
  a = scan_rows.scan_rows(tokenizer, texts, tokens, kinds, count=5, seed=7)
  b = scan_rows.scan_rows(tokenizer, texts, tokens, kinds, count=5, seed=7)
  assert a.keys == b.keys and a.sources == b.sources
  assert all(np.array_equal(x, y) for x, y in zip(a.completions, b.completions))


def test_the_scan_weight_scales_the_sum_not_the_count(monkeypatch):
  """`rl.scan_weight`: the scan rows' NLL sum is scaled and their token count is not, so the
  update's mean (sum over count) is that much smaller, as is the pull on shared moments."""
  import math

  import jax.numpy as jnp

  from gtalign.rl import objective
  logits = jnp.array([[[0.0, math.log(3.0)], [0.0, 0.0]]])
  monkeypatch.setattr(objective, "window_logits", lambda *a, **k: logits)
  mb = {"targets_bc": jnp.array([[1, 0]]), "loss_mask_bc": jnp.array([[1.0, 1.0]])}
  plain, count, _ = objective.sft_loss(None, None, mb)
  scaled, scaled_count, _ = objective.sft_loss(None, None, mb, scale=0.25)
  assert float(plain) == pytest.approx(math.log(8.0 / 3.0), abs=1e-6)
  assert float(scaled) == pytest.approx(0.25 * float(plain)) and float(scaled_count) == 2.0


def test_scan_rows_of_a_decimal_table_copy_its_one_decimal_spelling(tokenizer):
  """Rollouts whose tables spell "4.0" (`sft.tables=decimal`) get edited tables and taught
  scans spelled the same way, never a bare "4"."""
  test = world.make_world(seed=0, num_train=0, num_test=12, build_messages=lambda q, s: (
      prompt_lib.build_messages(q, s, style="compact")))["test"]
  group = test[:4]
  texts = [warm_start.format_trace(r, "AQ", "x.", tables="decimal") for r in group]
  tokens = [tokenizer.encode(t) for t in texts]
  kinds = [r["extra_info"]["question_type"] for r in group]
  out = scan_rows.scan_rows(tokenizer, texts, tokens, kinds, count=4, seed=3)
  assert len(out.sources) == 4
  for ids in out.completions:
    text = tokenizer.decode(list(ids))
    block = text[text.index("<payoff>"):text.index("</payoff>")]
    scan = text[text.index("<analyze>"):]
    cells = re.findall(r'"(?:LLM|user)":(-?[\d.]+)', scan)  # the copied cells (sums stay bare)
    assert payoff.spelled_one_decimal(block) and len(cells) == 6, text
    assert all(re.fullmatch(r"-?\d+\.\d", c) for c in cells), text
