"""Priced groups (`rl.priced_groups`): one rollout's reading under a table priced for each
strategy in turn, scored by the run's reward, the table's cells trained."""

import types

import numpy as np
import pytest

from gtalign.data import world
from gtalign.game import payoff, prompt as prompt_lib, trace
from gtalign.models.tokenizer import load_tokenizer
from gtalign.rewards.judges import make_judge
from gtalign.sampling.sampler import SamplingConfig
from gtalign.training import priced_groups, rollout

from test_steer_groups import EditFollower

STYLE = "compact"


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf_path):
  return load_tokenizer(smollm2_gguf_path)


@pytest.fixture(scope="module")
def rows():
  test = world.make_world(seed=0, num_train=0, num_test=12, build_messages=lambda q, s: (
      prompt_lib.build_messages(q, s, style=STYLE)))["test"]
  definite = [r for r in test if r["extra_info"]["question_type"] == "DQ"]
  vague = [r for r in test if r["extra_info"]["question_type"] == "VQ"]
  return definite, vague


def _group(tokenizer, rows, size):
  """Two prompts (one definite, one vague) x `size` rollouts, prompt-major, all hedging (AQ)
  with their gold answer: the tables RL's own samples would hold at a warm start that hedges."""
  from gtalign.data import warm_start
  definite, vague = rows
  group = [definite[0]] * size + [vague[0]] * size
  texts = [warm_start.format_trace(r, "AQ", tables="fixed") for r in group]
  tokens = [tokenizer.encode(t) for t in texts]
  prompts = [tokenizer.encode(prompt_lib.render(tokenizer, r["prompt"])) for r in group]
  kinds = [r["extra_info"]["question_type"] for r in group]
  return group, texts, tokens, prompts, kinds


def _priced(tokenizer, rows, size, edit="read", train="all"):
  """`_group`'s rollouts, priced in one group per prompt by a sampler that follows every
  table: (rows, texts, ids, prompts, the priced groups)."""
  group, texts, tokens, prompts, kinds = _group(tokenizer, rows, size)
  sampler = EditFollower(tokenizer, [group[0]] * size + [group[size]] * size,
                         obey=lambda r: True)
  out = priced_groups.priced_groups(sampler, None, prompts, texts, tokens, kinds, groups=2,
                                    num_samples=size, sampling=SamplingConfig(), seed=1,
                                    edit=edit, train=train)
  return group, texts, tokens, prompts, out


def test_sources_alternate_the_question_types_and_strategies_take_turns():
  texts = ["<thinking>x</thinking><payoff>{}</payoff>"] * 8
  texts[0] = "<thinking>no table"  # the first prompt's first rollout wrote none: its second
  kinds = ["DQ"] * 4 + ["VQ"] * 2 + ["DQ"] * 2
  assert priced_groups.pick_sources(texts, kinds, 2, 3) == [1, 4, 2]
  assert priced_groups.pick_sources(texts, kinds, 2, 9) == [1, 4, 2, 6]
  assert priced_groups.pick_sources(texts, kinds, 2, 1) == [1]
  # `rl.priced_types`: one type's prompts only, as many as there are
  assert priced_groups.pick_sources(texts, kinds, 2, 3, "DQ") == [1, 2, 6]
  assert priced_groups.pick_sources(texts, kinds, 2, 3, "VQ") == [4]
  with pytest.raises(ValueError, match="priced types 'dq'"):
    priced_groups.pick_sources(texts, kinds, 2, 3, "dq")
  chosen = priced_groups.strategies(8, np.random.default_rng(0))
  assert sorted(chosen[:6]) == sorted(payoff.ACTIONS * 2)
  assert all(a != b for a, b in zip(chosen, chosen[1:]))


def test_priced_rows_keep_the_reading_price_each_strategy_and_rank_them_by_welfare(tokenizer,
                                                                                  rows):
  """Each row: the source's prompt and its own ids through the reading, then a table whose
  row read selects the row's strategy, then the continuation. On a definite question the
  world's reward ranks a followed DA above AQ above CQ, on a vague one CQ above AQ above DA:
  the group's advantages say which priced table pays. The reading, the other row and the
  healing bytes are out of the loss; the read row's cells and the continuation are in."""
  size = 3
  group, texts, tokens, prompts, out = _priced(tokenizer, rows, size)
  assert out.sources == [0] * size + [size] * size
  assert sorted(out.keys[:size]) == ["DQ_AQ", "DQ_CQ", "DQ_DA"]
  assert sorted(out.keys[size:]) == ["VQ_AQ", "VQ_CQ", "VQ_DA"]
  for r, (completion, text, key) in enumerate(zip(out.completions, out.texts, out.keys)):
    source = out.sources[r]
    decoded = tokenizer.decode(completion)
    assert decoded == text, (decoded, text)
    reading = texts[source][:texts[source].index(trace.PAYOFF_START)]
    assert text.startswith(reading)
    parsed = trace.parse_trace(text)
    assert parsed.valid and parsed.chosen_key == key
    assert payoff.select_in_row(payoff.Bimatrix.from_dict(parsed.payoff), key[:2]) == key
    # the model's own ids up to the first edited byte
    assert list(completion[:len(tokenizer.encode(reading)) - 1]) == list(
        tokens[source][:len(tokenizer.encode(reading)) - 1])
    mask = out.trained[r]
    first = rollout.tokens_through(tokenizer, list(completion), trace.PAYOFF_START)
    assert not mask[:first].any() and mask[first] == 1.0 and mask[-1] == 1.0
  scored = rollout.score_rows([group[i] for i in out.sources], out.texts, make_judge("rule"),
                              variant="main", parse_mode="strict", on_judge_failure="mask")
  welfare = dict(zip(out.keys, scored.arrays()["welfare"]))
  assert welfare["DQ_DA"] > welfare["DQ_AQ"] > welfare["DQ_CQ"]
  assert welfare["VQ_CQ"] > welfare["VQ_AQ"] > welfare["VQ_DA"]


def test_priced_edit_both_prices_the_other_row_for_the_same_strategy(tokenizer, rows):
  """`rl.priced_edit=both`: each row's table selects its strategy in both rows (a provider's
  edit); with "read" the other row is the policy's own (the source's flat row)."""
  size = 3
  for edit in ("both", "read"):
    _, texts, _, _, out = _priced(tokenizer, rows, size, edit=edit)
    for r, key in enumerate(out.keys):
      table = payoff.Bimatrix.from_dict(trace.parse_trace(out.texts[r]).payoff)
      other = "VQ" if key.startswith("DQ") else "DQ"
      assert payoff.select_in_row(table, key[:2]) == key
      own = payoff.Bimatrix.from_dict(trace.parse_trace(texts[out.sources[r]]).payoff)
      other_cells = [table.points()[f"{other}_{a}"] for a in payoff.ACTIONS]
      if edit == "both":
        assert payoff.select_in_row(table, other) == f"{other}_{key[3:]}", (edit, key)
      else:
        assert other_cells == [own.points()[f"{other}_{a}"] for a in payoff.ACTIONS]


def test_priced_train_table_and_numbers_leave_the_scan_and_the_shared_tokens_out(tokenizer,
                                                                                  rows):
  """`rl.priced_train`: "table" trains the table's cells and no token of the `<analyze>` and
  `<response>` that continue it; "numbers" only the numbers of the read row's cells (where a
  group's rows differ), not the keys, braces and tags they share."""
  size = 3
  *_, whole = _priced(tokenizer, rows, size)
  *_, table = _priced(tokenizer, rows, size, train="table")
  *_, numbers = _priced(tokenizer, rows, size, train="numbers")
  assert whole.texts == table.texts == numbers.texts
  for ids, key, on, cells, digits in zip(whole.completions, whole.keys, whole.trained,
                                         table.trained, numbers.trained):
    kept = tokenizer.decode([int(t) for t, m in zip(ids, cells) if m])
    assert '"LLM"' in kept and "<analyze>" not in kept and "<response>" not in kept, kept
    assert cells.sum() < on.sum() and (cells <= on).all() and (digits <= cells).all()
    spelled = "".join(tokenizer.decode([int(t)]) for t, m in zip(ids, digits) if m)
    table_cells = payoff.Bimatrix.from_dict(trace.parse_trace(
        tokenizer.decode(list(ids))).payoff).points()
    want = "".join(f"{v:g}" for k in trace.PAYOFF_KEYS if k.startswith(key[:3])
                   for v in table_cells[k])
    assert "".join(c for c in spelled if c.isdigit() or c in ".-") == want, (spelled, want)
    assert not any(c.isalpha() for c in spelled), spelled


def test_row_numbers_marks_the_digits_of_one_row(tokenizer):
  text = ('<thinking>x</thinking><payoff>{"DQ_AQ":{"LLM":1,"user":2},"DQ_CQ":{"LLM":4.5,'
          '"user":-1},"DQ_DA":{"LLM":0,"user":2},"VQ_AQ":{"LLM":7,"user":8},"VQ_CQ":{"LLM":'
          '9,"user":3},"VQ_DA":{"LLM":6,"user":5}}</payoff><analyze>')
  ids = tokenizer.encode(text)
  for row, want in (("DQ", "124.5-102"), ("VQ", "789365")):
    marks = priced_groups.row_numbers(tokenizer, ids, row)
    spelled = "".join(tokenizer.decode([t]) for t, m in zip(ids, marks) if m)
    assert "".join(c for c in spelled if c.isdigit() or c in ".-") == want, spelled
  assert not priced_groups.row_numbers(tokenizer, tokenizer.encode("no table"), "DQ").any()


def test_priced_rows_join_the_batch_with_the_policys_log_probs_of_the_table(tokenizer, rows):
  """The update batch: the step's rows, then the priced rows with their reward, the other
  row's cells out of the loss, and old log-probs that are the policy's own teacher-forced
  ones (the host wrote the table), so the first update's ratio is 1 on every trained id."""
  import jax
  from configs import grpo
  from gtalign.models.config import get_preset
  from gtalign.models.transformer import init_params
  from gtalign.rl import objective
  from gtalign.training import batches
  size = 3
  group, texts, tokens, prompts, out = _priced(tokenizer, rows, size)
  scored = rollout.score_rows([group[i] for i in out.sources], out.texts, make_judge("rule"),
                              variant="main", parse_mode="strict", on_judge_failure="mask")
  shape = rollout.sequence_shape(prompts + [prompts[i] for i in out.sources],
                                 [list(t) for t in tokens] + out.completions)
  local = rollout.sequence_batch(prompts, tokens, tokenizer.pad_id, shape=shape)
  n = len(prompts)
  local.update(old_logp_bc=np.full((n, shape[1]), -1.0, np.float32),
               user_b=np.full(n, 0.3, np.float32), llm_b=np.full(n, 0.5, np.float32),
               reward_valid_b=np.ones(n, np.float32), source_b=np.full(n, 2, np.int32),
               anchor_mask_bc=np.ones((n, shape[1]), np.float32))
  model_config = get_preset("tiny-llama").replace(vocab_size=tokenizer.vocab_size,
                                                  dtype="float32")
  params = init_params(model_config, jax.random.PRNGKey(0))
  config = grpo.get_config("tiny")
  run = types.SimpleNamespace(tokenizer=tokenizer, model_config=model_config, config=config)
  batch = batches._with_priced(local, out, scored, run, params, shape, prompts)
  assert {k: v.shape[0] for k, v in batch.items()} == {k: n + len(out.sources) for k in local}
  arrays = scored.arrays()
  np.testing.assert_allclose(batch["user_b"][n:], arrays["user"])
  np.testing.assert_allclose(batch["llm_b"][n:], arrays["llm"])
  np.testing.assert_array_equal(batch["source_b"][n:], [2] * len(out.sources))
  assert batch["anchor_mask_bc"][n:].sum() == 0
  for r, key in enumerate(out.keys):
    mask = batch["loss_mask_bc"][n + r]
    ids = out.completions[r]
    kept = "".join(tokenizer.decode([ids[k]]) for k in range(len(ids)) if mask[k])
    other = "VQ_" if key.startswith("DQ_") else "DQ_"
    assert f"{key[:3]}DA" in kept and f"{other}DA" not in kept and "Definite" not in kept
  logp = objective.sequence_logprobs(model_config, params, {
      k: batch[k][n:] for k in ("inputs_bt", "positions_bt", "attention_mask_bt",
                                "window_start_b", "targets_bc")}, temperature=config.rl.temperature)
  trained = batch["loss_mask_bc"][n:] > 0
  np.testing.assert_allclose(batch["old_logp_bc"][n:][trained], np.asarray(logp)[trained],
                             rtol=1e-5, atol=1e-5)
