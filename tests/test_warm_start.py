"""The warm start's rows and traces: the table decides, the reading is taught, answers are the
model's own (data/warm_start.py, evaluation/plain.py, evaluation/reading.py, training/distill.py)."""

import collections
import json
import re
import types

import numpy as np
import pytest

from configs import grpo
from gtalign.data import warm_start, world
from gtalign.evaluation import plain, reading
from gtalign.game import behaviour, payoff
from gtalign.game.payoff import action, select_in_row, select_sum
from gtalign.game.trace import PAYOFF_KEYS, extract_block, parse_trace, payoff_order
from gtalign.training import distill
from gtalign.utils.errors import InvalidInput

USER_ONLY = lambda q, s: [{"role": "user", "content": q}]


def _rows(seed=0, n=320):
  train = world.make_world(seed, num_train=256, num_test=54, build_messages=USER_ONLY)["train"]
  exclude = {r["extra_info"]["question"] for r in train}
  return warm_start.warm_rows(seed, n, exclude=exclude, build_messages=USER_ONLY), exclude


def _answers(rows, mode="random"):
  """A stand-in answer per question, distinct per question, as the distill step supplies."""
  return {q: f"Answer number {i}." for i, q in enumerate(distill.questions(rows, mode))}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_warm_rows_hold_out_every_test_fact_phrasing_and_rl_prompt(seed):
  rows, rl_questions = _rows(seed)
  test = world.make_world(seed, num_train=256, num_test=54, build_messages=USER_ONLY)["test"]
  questions = [r["extra_info"]["question"] for r in rows]
  assert len(set(questions)) == len(rows) == 320
  assert not set(questions) & rl_questions
  assert not set(questions) & {r["extra_info"]["question"] for r in test}
  _, test_facts = world.split_facts(seed, 0.15)
  held = {(f.category, world.named(f)) for f in test_facts}
  _, test_phrasings = world.split_phrasings(seed)
  for r in rows:
    info = r["extra_info"]
    if info["question_type"] == "DQ":
      assert (info["category"], info["named"]) not in held, info
    else:
      assert world.strip_lead_in(info["question"]) not in test_phrasings.get(info["category"], [])
  kinds = collections.Counter(r["extra_info"]["question_type"] for r in rows)
  assert kinds == {"DQ": 160, "VQ": 160}
  # entities and categories beyond the world's facts, every category in both types
  categories = collections.Counter((r["extra_info"]["category"], r["extra_info"]["question_type"])
                                   for r in rows)
  assert {c for c, _ in categories} == set(world.CATEGORY_NAMES) | set(warm_start.EXTRA_CATEGORIES)
  assert max(categories.values()) - min(categories.values()) <= 1
  extra = [r for r in rows if r["extra_info"]["question_type"] == "DQ"
           and not r["extra_info"]["answer"]]
  assert len(extra) > 60


@pytest.mark.parametrize("mode, tables, first, rows_peaked", [
    ("random", "varied", False, "read"), ("oracle", "varied", False, "read"),
    ("random", "fixed", False, "read"), ("random", "fixed", True, "read"),
    ("random", "varied", True, "read"), ("random", "fixed", False, "both"),
    ("oracle", "fixed", False, "both"), ("random", "fixed", False, "bumped"),
    ("random", "jittered", False, "read"), ("random", "decimal", False, "read")])
def test_traces_name_no_strategy_before_the_table_and_carry_out_its_pick(mode, tables, first,
                                                                         rows_peaked):
  rows, _ = _rows()
  answers = _answers(rows, mode)
  counts = collections.Counter()
  blocks = collections.defaultdict(set)
  draw = warm_start.Draw(rows=rows_peaked)
  others = collections.Counter()
  for r in rows:
    text = warm_start.reference_trace(r, mode, answers, tables, first, draw=draw)
    parsed = parse_trace(text)
    assert parsed.valid and parsed.format_ok, text
    block = extract_block(text, "payoff")
    blocks[parsed.chosen_key].add(block)
    order = payoff_order(block)
    # chosen_first leads with the pick; otherwise PAYOFF_KEYS order
    assert order == ((parsed.chosen_key,) + tuple(k for k in PAYOFF_KEYS if k != parsed.chosen_key)
                     if first else PAYOFF_KEYS)
    before_table = text[:text.index("<payoff>")]
    assert not re.search(r"\b(DA|CQ|AQ|answer|ask|guess|check|follow)", before_table), text
    key = parsed.chosen_key
    kind = r["extra_info"]["question_type"]
    assert select_in_row(parsed.payoff, kind) == key and key.startswith(kind)
    other_kind = "VQ" if kind == "DQ" else "DQ"
    sums = {k: v["LLM"] + v["user"] for k, v in parsed.payoff.items() if k[:2] == other_kind}
    if rows_peaked == "read":  # the other type's row has no peak: the table's maximum is the key
      assert select_sum(parsed.payoff) == key
    elif rows_peaked == "bumped":  # at most one raised cell there, far below the key's
      assert select_sum(parsed.payoff) == key
      raised = [k for k, v in parsed.payoff.items()
                if k[:2] == other_kind and (v["LLM"], v["user"]) != (1, 2)]
      assert len(raised) <= 1 and all(
          sums[k] <= sum(parsed.payoff[key].values()) - 2.5 for k in raised), text
      others[len(raised)] += 1
    else:  # it peaks on a strategy of its own, drawn apart from the read row's
      best = select_in_row(parsed.payoff, other_kind)
      assert sorted(sums.values())[-1] - sorted(sums.values())[-2] >= 2
      others[(kind, action(best))] += 1
      if mode == "oracle":
        assert action(best) == ("CQ" if kind == "DQ" else "DA")
    assert behaviour.classify(parsed.response) == action(key)
    assert reading.read_type(reading.thinking(text)) == kind
    if kind == "DQ":  # the reading restates the detail the question names
      assert r["extra_info"]["named"] in reading.thinking(text)
    if action(key) != "CQ":
      assert answers[warm_start.plain_question(r)] in parsed.response
    counts[(kind, action(key))] += 1
  if rows_peaked == "bumped":  # half the tables raise a cell of the other row
    assert abs(others[1] / len(rows) - 0.5) < 0.1, others
  elif tables in ("fixed", "decimal"):  # every number follows from where the peaks are: one
    # table per key
    # (per key and other row's peak, when both rows peak)
    assert all(len(b) == (1 if rows_peaked == "read" or mode == "oracle" else 3)
               for b in blocks.values()), blocks
  if mode == "oracle":
    assert set(counts) == {("DQ", "DA"), ("VQ", "CQ")}
  else:  # the table's pick does not depend on the question type
    for kind in ("DQ", "VQ"):
      for tally in (counts, others) if rows_peaked == "both" else (counts,):
        total = sum(v for (k, _), v in tally.items() if k == kind)
        for strategy, share in warm_start.ROW_DRAW.mix().items():
          assert abs(tally[(kind, strategy)] / total - share) < 0.08, tally


@pytest.mark.parametrize("cells", [
    {"DQ_AQ": (1, 2), "DQ_CQ": (4, 3), "DQ_DA": (1, 2)},
    {"DQ_AQ": (2.5, 0.5), "DQ_CQ": (1, 1.5), "DQ_DA": (0.1, 3.1)},
    {"DQ_AQ": (-1, 2), "DQ_CQ": (0, 0), "DQ_DA": (0.5, 0.4)},
    {"DQ_AQ": (1, 2), "DQ_CQ": (2, 1), "DQ_DA": (1, 2)},  # ties: the larger user payoff wins
])
@pytest.mark.parametrize("scan", warm_start.SCANS)
def test_the_analysis_names_the_tables_pick_for_any_table(cells, scan):
  table = {**cells, "VQ_AQ": (0, 0), "VQ_CQ": (0, 0), "VQ_DA": (0, 0)}
  text = warm_start.analysis("DQ", table, scan)
  best = max(cells, key=lambda k: sum(cells[k]))
  assert text.endswith(f"Best LLM + user: {best}")
  for k, (llm, user) in cells.items():  # each cell restated, and its sum
    if scan == "copy":  # as a table writes it
      assert f'"{k}":{{"LLM":{llm:g},"user":{user:g}}} sums to {llm + user:g}' in text
    else:  # in words the table's JSON never uses: no span of it repeats
      assert f"{k}: LLM {llm:g}, user {user:g}, sum {llm + user:g}" in text
      assert '"LLM"' not in text and '{' not in text and f'"{k}"' not in text
  assert parse_trace(f"<analyze>{text}</analyze>").chosen_key == best
  as_dict = {k: {"LLM": l, "user": u} for k, (l, u) in table.items()}
  assert select_sum(as_dict) == best  # the scan agrees with the selector, ties included


def test_jittered_tables_keep_the_peak_and_spell_low_cells_in_either_length():
  """`sft.tables=jittered`: the chosen cell (4, 3), every other from LOW_CELLS (whole and half
  numbers), drawn anew at each SFT pass; the copied scan spells each cell as the table does and
  names the peak."""
  rows, _ = _rows()
  answers = {warm_start.plain_question(r): f"Answer number {i}." for i, r in enumerate(rows)}
  lows, tables_per_row = collections.Counter(), collections.defaultdict(set)
  for r in rows[:60]:
    for visit in range(3):
      text = warm_start.reference_trace(r, "random", answers, tables="jittered", visit=visit,
                                        draw=warm_start.Draw(per="visit"))
      parsed = parse_trace(text)
      key = parsed.chosen_key
      assert parsed.valid and select_sum(parsed.payoff) == key, text
      assert (parsed.payoff[key]["LLM"], parsed.payoff[key]["user"]) == (4, 3)
      block = extract_block(text, "payoff")
      for k, v in parsed.payoff.items():
        if k != key:
          cell = (v["LLM"], v["user"])
          assert cell in warm_start.LOW_CELLS, text
          lows[cell] += 1
        if k[:2] == key[:2]:  # the scan copies the cell as the table spells it
          spelled = block[block.index(f'"{k}":'):].split("}")[0] + "}"
          assert spelled + " sums to" in extract_block(text, "analyze"), (spelled, text)
      tables_per_row[r["row_id"]].add(block)
  assert set(lows) == set(warm_start.LOW_CELLS)  # every low cell, halves among them
  assert sum(len(t) > 1 for t in tables_per_row.values()) > 50  # anew at each pass
  with pytest.raises(ValueError, match="tables 'jitter'"):
    warm_start.format_trace(rows[0], "DA", "x.", tables="jitter")


def test_decimal_tables_spell_every_number_with_one_decimal_and_edits_keep_it(
    smollm2_gguf_path):
  """`sft.tables=decimal`: the fixed tables with every number spelled "4.0", the scan copying
  that spelling; the steering metric's edit (and a provider's pricing) of such a table spells
  its numbers the same way, so on the real tokenizer the edited table, raised cell "1.5"
  included, is as many ids as the policy's own and every cell starts where it started. A
  whole-number table is edited in whole numbers, as before."""
  from gtalign.evaluation import steering
  from gtalign.game import pricing
  from gtalign.models.tokenizer import load_tokenizer
  tok = load_tokenizer(smollm2_gguf_path)
  rows, _ = _rows()
  answers = {warm_start.plain_question(r): f"Answer number {i}." for i, r in enumerate(rows)}
  for r in rows[:12]:
    text = warm_start.reference_trace(r, "random", answers, tables="decimal")
    fixed = warm_start.reference_trace(r, "random", answers, tables="fixed")
    assert parse_trace(text).payoff == parse_trace(fixed).payoff  # the same numbers
    block = extract_block(text, "payoff")
    numbers = re.findall(r"-?\d+(?:\.\d+)?", block)
    assert len(numbers) == 12 and all(re.fullmatch(r"-?\d+\.\d", n) for n in numbers), block
    kind = r["extra_info"]["question_type"]
    for k in (f"{kind}_AQ", f"{kind}_CQ", f"{kind}_DA"):  # copied as spelled
      spelled = block[block.index(f'"{k}":'):].split("}")[0] + "}"
      assert spelled + " sums to" in extract_block(text, "analyze")
    cut = steering.table_cut(text)
    for strategy in ("DA", "CQ", "AQ"):
      for source in (cut, steering.table_cut(fixed)):
        edited, key, table = steering.edited(cut if source is cut else source, kind, strategy)
        new_block = extract_block(edited + "</analyze>", "payoff")
        assert payoff.spelled_one_decimal(new_block) == (source is cut), new_block
        assert select_in_row(parse_trace(edited).payoff, kind) == key
        if source is cut:  # "1.5" as long as the "1.0" it replaced: each cell where it was
          old_ids, new_ids = tok.encode(block), tok.encode(new_block)
          assert len(old_ids) == len(new_ids)
          assert ([i for i, t in enumerate(old_ids) if tok.decode([t]) == "user"] ==
                  [i for i, t in enumerate(new_ids) if tok.decode([t]) == "user"])
          assert "1.5" in new_block or "2.5" in new_block or strategy == action(
              parse_trace(text).chosen_key)
  priced = pricing.edit_payoff_block(text, "free")
  assert payoff.spelled_one_decimal(extract_block(priced + "</analyze>", "payoff"))


def test_the_scan_form_reaches_every_trace_and_a_bad_one_is_named():
  """`sft.scan` decides the `<analyze>` of single-turn and dialogue traces alike; the table and
  response are the same under either form."""
  rows, _ = _rows()
  row = next(r for r in rows if r["extra_info"]["question_type"] == "VQ")
  copy, restate = (warm_start.reference_trace(row, "random", tables="fixed", strategy="CQ",
                                              scan=s) for s in ("copy", "restate"))
  assert copy.split("<analyze>")[0] == restate.split("<analyze>")[0]
  assert copy.split("</analyze>")[1] == restate.split("</analyze>")[1]
  assert "sums to" in copy and "sums to" not in restate and ", sum " in restate
  turns = warm_start.dialogue_turns(row, "random", None, "fixed", False, scan="restate")
  assert all(", sum " in text and "sums to" not in text for text, _ in turns)
  with pytest.raises(ValueError, match="scan 'json'"):
    warm_start.analysis("DQ", {k: (1, 2) for k in PAYOFF_KEYS}, "json")


def test_a_trace_without_the_models_answer_uses_the_gold_one_or_says_why_not():
  rows, _ = _rows()
  world_dq = next(r for r in rows if r["extra_info"]["question_type"] == "DQ"
                  and r["extra_info"]["answer"])
  assert f"<response>{world_dq['extra_info']['answer']}.</response>" in warm_start.format_trace(
      world_dq, "DA")
  extra_dq = next(r for r in rows if r["extra_info"]["question_type"] == "DQ"
                  and not r["extra_info"]["answer"])
  with pytest.raises(ValueError, match="no gold answer"):
    warm_start.format_trace(extra_dq, "DA")
  assert "<response>Which" in warm_start.format_trace(extra_dq, "CQ")  # needs no answer


@pytest.mark.parametrize("reply,statement", [
    ("Hello! The capital of France is Paris. It is a big city.", "The capital of France is Paris."),
    ("Sure! 4 + 3 = 7", "4 + 3 = 7."),
    ("Which country do you mean?", ""),
    ("", ""),
    ("Is it 7? I think the answer is 7.", "I think the answer is 7."),
])
def test_the_first_statement_of_a_plain_reply(reply, statement):
  assert plain.first_statement(reply) == statement
  assert plain.trace_answer(reply) == (statement or plain.UNSURE)


def test_plain_replies_are_judged_as_the_world_judges_answers():
  rows = world.make_world(0, num_train=0, num_test=54, build_messages=USER_ONLY)["test"]
  dq = [r for r in rows if r["extra_info"]["question_type"] == "DQ"][:3]
  vq = [r for r in rows if r["extra_info"]["question_type"] == "VQ"][:1]
  gold = dq[0]["extra_info"]["answer"]
  wrong = next(a for a in world.category_answers(dq[1]["extra_info"]["category"])
               if a not in dq[1]["extra_info"]["aliases"])
  replies = [f"The answer is {gold}. More text follows here.", f"It is {wrong}.",
             "Which one do you mean?", "Which one do you mean?"]
  out = plain.judged(dq + vq, replies)
  assert out["dq_correct"][:3].tolist() == [1.0, 0.0, 0.0]
  assert out["da_on_dq"][:3].tolist() == [1.0, 1.0, 0.0]
  assert np.isnan(out["dq_correct"][3]) and out["cq_on_vq"][3] == 1.0
  assert np.isnan(out["welfare"]).all()


@pytest.mark.parametrize("text,kind", [
    ("The question names the country: Peru. Definite question (DQ).", "DQ"),
    ("The question names no country. Vague question (VQ).", "VQ"),
    ("Is it DQ? No: VQ", "VQ"),
    ("nothing here, DQX", None),
])
def test_the_reading_is_the_last_type_the_thinking_names(text, kind):
  assert reading.read_type(text) == kind
  assert reading.thinking(f"<thinking>{text}</thinking><payoff>") == text


def test_the_check_questions_are_paired_and_never_trained_on():
  kinds = collections.Counter(k for _, k in reading.QUESTIONS)
  assert kinds["DQ"] == kinds["VQ"] >= 20
  trained = set()
  for seed in (0, 1, 2):
    rows, rl = _rows(seed)
    trained |= {world.strip_lead_in(r["extra_info"]["question"]) for r in rows}
    trained |= {world.strip_lead_in(q) for q in rl}
  assert not {q for q, _ in reading.QUESTIONS} & trained
  out = reading.arrays([k for _, k in reading.QUESTIONS],
                       [f"... ({k})" for _, k in reading.QUESTIONS])
  assert np.nanmean(out["read_dq"]) == np.nanmean(out["read_vq"]) == 1.0


def _resumed_run(tmp_path, rows):
  cfg = types.SimpleNamespace(sft=types.SimpleNamespace(warm_start="random", answer_tokens=40,
                                                      dialogues=0.0, draw="row", hedge=0.4, rows="read"))
  return types.SimpleNamespace(workdir=str(tmp_path), warm_rows=rows, config=cfg)


def test_a_resumed_warm_start_reads_its_saved_answers_or_names_the_file(tmp_path):
  rows, _ = _rows(n=40)
  run = _resumed_run(tmp_path, rows)
  path = tmp_path / distill.FILENAME
  with pytest.raises(InvalidInput, match=f"{path}: the warm start's saved answers cannot be read"):
    distill.answers(run, None, start_step=3)
  wanted = distill.questions(rows, "random")
  path.write_text(json.dumps({q: f"Hi! It is {i}." for i, q in enumerate(wanted)}))
  got = distill.answers(run, None, start_step=3)
  assert got == {q: f"It is {i}." for i, q in enumerate(wanted)}
  path.write_text(json.dumps({q: "x." for q in wanted[1:]}))
  with pytest.raises(InvalidInput, match="no saved answer for"):
    distill.answers(run, None, start_step=3)


def test_ambig_qa_questions_split_into_single_and_multiple_and_rates_per_kind(gtalign_data_dir):
  from gtalign.data import gtalign as gtalign_data
  from gtalign.evaluation import ambiguity
  rows = gtalign_data.read_rows(gtalign_data_dir, ambiguity.SOURCE, "test")
  kinds = collections.Counter(ambiguity.kind(r) for r in rows)
  assert kinds == {"single": 150, "multiple": 150}
  assert all(ambiguity.question(r) and "Question:" not in ambiguity.question(r) for r in rows)
  # a policy that asks back on everything shows at once: asks 1.0 on both kinds
  out = ambiguity.rates(["single", "multiple", "multiple"],
                        ["Which one do you mean?", "Which one do you mean?", "Paris."])
  assert out["single"]["CQ"] == 1.0 and out["multiple"]["CQ"] == 0.5
  assert out["multiple"]["DA"] == 0.5 and out["single"]["none"] == 0.0


def test_the_response_starts_where_its_tokens_begin_on_the_real_tokenizer(smollm2_gguf_path):
  """`sft.response_weight` weighs the tokens from here on: SmolLM2 spells "</analyze><response>"
  with a token that crosses the tags ("><"), so the cut is after "<response>"."""
  from gtalign.models.tokenizer import load_tokenizer
  tok = load_tokenizer(smollm2_gguf_path)
  for row in warm_start.warm_rows(0, 12, exclude=set()):
    for strategy in warm_start.STRATEGIES:
      text = warm_start.format_trace(row, strategy, answer="Paris.")
      ids = tok.encode(text)
      start = warm_start.response_token_start(tok.encode, text)
      assert tok.decode(ids[:start]).endswith("<response>")
      assert tok.decode(ids[start:]) == text[text.index("<response>") + 10:]
  assert warm_start.response_token_start(tok.encode, "<thinking>x</thinking>") is None


def _sft_run(config, tok, rows, answers):
  """What `batches.sft_batch` reads of a run: config, tokenizer, warm rows and answers."""
  return types.SimpleNamespace(config=config, tokenizer=tok, warm_rows=rows, warm_answers=answers,
                               prompt=lambda r: [1, 2, 3], global_batch=lambda local: local,
                               sft_shape=None)


def test_the_sft_batch_weighs_response_tokens_by_the_configured_weight(smollm2_gguf_path):
  from configs import grpo
  from gtalign.models.tokenizer import load_tokenizer
  from gtalign.training import batches
  tok = load_tokenizer(smollm2_gguf_path)
  config = grpo.get_config("tiny")
  rows = warm_start.warm_rows(0, 8, exclude=set())
  answers = {warm_start.plain_question(r): "Paris." for r in rows}
  run = _sft_run(config, tok, rows, answers)
  masks = {}
  for weight in (1.0, 5.0):
    config.sft.response_weight = weight
    masks[weight] = batches.sft_batch(run, 0)[0]["loss_mask_bc"]
  plain, weighted = masks[1.0], masks[5.0]
  assert set(np.unique(plain)) == {0.0, 1.0} and set(np.unique(weighted)) == {0.0, 1.0, 5.0}
  assert ((weighted > 0) == (plain > 0)).all()
  for row in weighted:  # the weighted tokens are each completion's tail: response, tag, EOS
    real = row[row > 0]
    first = np.argmax(real == 5.0)
    assert first > 200 and (real[:first] == 1.0).all() and (real[first:] == 5.0).all()


def test_every_sft_batch_has_the_widest_rows_shape(smollm2_gguf_path):
  """One shape for the whole warm start, so its update compiles once: the batches of short
  rows are padded to the longest warm-start row's width and window."""
  from configs import grpo
  from gtalign.models.tokenizer import load_tokenizer
  from gtalign.training import batches
  tok = load_tokenizer(smollm2_gguf_path)
  config = grpo.get_config("tiny")
  config.sft.batch_size = 2
  rows = warm_start.warm_rows(0, 8, exclude=set())
  # answers of very different lengths: batches would otherwise come out in different shapes
  answers = {warm_start.plain_question(r): "Paris. " * (1 + 12 * (i % 4)) for i, r in
             enumerate(rows)}
  run = _sft_run(config, tok, rows, answers)
  shapes = {batches.sft_batch(run, step)[0]["inputs_bt"].shape for step in range(4)}
  lengths = [len(batches.sft_completion(run, r)[0]) for r in rows]
  assert len(set(lengths)) > 2 and len(shapes) == 1, (lengths, shapes)
  (shape,) = shapes
  assert shape[1] >= 3 + max(lengths) - 1


@pytest.mark.parametrize("hedge", [0.4, 0.6])
def test_a_redrawn_strategy_follows_the_mix_whatever_the_type(hedge):
  """`sft.draw=visit`: each pass draws anew from the mix (AQ at `sft.hedge`), for either type
  and either row alike, so the question predicts nothing about the move; pass 0 is the row's
  own draw (`sft.draw=row`)."""
  rows = warm_start.warm_rows(0, 200, exclude=set())
  draw = warm_start.Draw("visit", hedge, "both")
  assert draw.mix() == pytest.approx({"DA": (1 - hedge) / 2, "CQ": (1 - hedge) / 2, "AQ": hedge})
  for kind in ("DQ", "VQ"):
    of_kind = [r for r in rows if r["extra_info"]["question_type"] == kind]
    for pick in (warm_start.warm_start_strategy, warm_start.other_row_strategy):
      draws = collections.Counter(pick(r, "random", v, draw) for r in of_kind
                                  for v in range(1, 21))
      total = sum(draws.values())
      for strategy, share in draw.mix().items():
        assert abs(draws[strategy] / total - share) < 0.04, (kind, pick, draws)
    pairs = collections.Counter((warm_start.warm_start_strategy(r, "random", v, draw),
                                 warm_start.other_row_strategy(r, "random", v, draw))
                                for r in of_kind for v in range(1, 21))
    assert len(pairs) == 9  # the two rows' draws are independent of each other
  row = rows[0]
  assert warm_start.warm_start_strategy(row, "random", 0) == warm_start.warm_start_strategy(
      row, "random")
  per_row = [{warm_start.warm_start_strategy(r, "random", v) for v in range(8)} for r in rows]
  assert sum(len(s) > 1 for s in per_row) > 0.9 * len(rows)
  assert all(warm_start.warm_start_strategy(r, "oracle", 3) ==
             warm_start.warm_start_strategy(r, "oracle") for r in rows)
  visits = warm_start.Draw(per="visit")
  assert all(warm_start.needs_answer(r, "random", draw=visits) for r in rows)
  assert not all(warm_start.needs_answer(r, "random") for r in rows)
  assert len(distill.questions(rows, "random", draw=visits)) == len(
      {warm_start.plain_question(r) for r in rows})


@pytest.mark.parametrize("draw, rows_peaked", [("row", "read"), ("visit", "read"),
                                               ("visit", "bumped")])
def test_sft_passes_redraw_the_move_only_when_asked_and_keep_one_shape(draw, rows_peaked,
                                                                       smollm2_gguf_path):
  """The SFT batch of pass k carries out the row's pass-k draw (`visit`) or its one draw (`row`),
  in one padded shape wide enough for any strategy the row may carry out (and any bump)."""
  from configs import grpo
  from gtalign.models.tokenizer import load_tokenizer
  from gtalign.training import batches
  tok = load_tokenizer(smollm2_gguf_path)
  config = grpo.get_config("tiny")
  config.sft.batch_size, config.sft.draw, config.sft.rows = 4, draw, rows_peaked
  rows = warm_start.warm_rows(0, 8, exclude=set())
  answers = {warm_start.plain_question(r): "Paris. " * (1 + 6 * (i % 3)) for i, r in
             enumerate(rows)}
  run = _sft_run(config, tok, rows, answers)
  keys = collections.defaultdict(list)  # row index -> the key carried out at each pass
  shapes = set()
  for step in range(12):  # 6 passes over the 8 rows
    batch = batches.sft_batch(run, step)[0]
    shapes.add(batch["inputs_bt"].shape)
    for i, ids in enumerate(np.asarray(batch["inputs_bt"])):
      text = tok.decode([int(t) for t in ids])
      key = re.search(r"Best LLM \+ user: ([DV]Q_[A-Z]{2})</analyze>", text).group(1)
      index = (step * 4 + i) % 8
      visit = (step * 4 + i) // 8 if draw == "visit" else 0
      assert key == f"{rows[index]['extra_info']['question_type']}_" + \
          warm_start.warm_start_strategy(rows[index], "random", visit)
      keys[index].append(key)
  assert len(shapes) == 1
  widest = max(len(batches.sft_completion(run, r, v, strategy=s)[0])
               for r in rows for s in warm_start.STRATEGIES for v in range(20))
  assert next(iter(shapes))[1] >= 3 + widest - 1
  changed = sum(len(set(k)) > 1 for k in keys.values())
  assert changed == 0 if draw == "row" else changed >= 6, keys


def test_rl_can_leave_the_reading_out_of_the_loss_on_the_real_tokenizer(smollm2_gguf_path):
  """`rl.train_thinking=False`: each completion's ids through `</thinking>` get loss mask 0, the
  rest keep theirs; a completion that never closes the block keeps all of it."""
  from gtalign.game.trace import THINKING_END
  from gtalign.models.tokenizer import load_tokenizer
  from gtalign.training import rollout
  tok = load_tokenizer(smollm2_gguf_path)
  rows = warm_start.warm_rows(0, 6, exclude=set())
  texts = [warm_start.format_trace(r, "DA", "Paris.", "fixed") for r in rows[:3]]
  texts.append("The capital is Paris, no tags at all.")
  completions = [tok.encode(t) for t in texts]
  batch = rollout.sequence_batch([[1, 2]] * len(texts), completions, tok.pad_id)
  masked = rollout.mask_through(batch["loss_mask_bc"], tok, completions, THINKING_END)
  for i, ids in enumerate(completions[:3]):
    k = int((masked[i, :len(ids)] == 0).sum())
    assert THINKING_END in tok.decode(ids[:k]) and THINKING_END not in tok.decode(ids[:k - 1])
    assert tok.decode(ids[:k]).startswith("<thinking>") and "<payoff>" not in tok.decode(ids[:k])
    assert (masked[i, k:len(ids)] == 1).all() and (masked[i, len(ids):] == 0).all()
  assert (masked[3] == batch["loss_mask_bc"][3]).all()


def test_rl_can_leave_the_scan_out_of_the_loss_on_the_real_tokenizer(smollm2_gguf_path):
  """`rl.train_analyze=False`: each completion's ids after `</payoff>` through `</analyze>` get
  loss mask 0 (the scan), the table before and the response after keep theirs; a completion
  cut inside the scan or before the table closes keeps all of it."""
  from gtalign.game.trace import ANALYZE_END, PAYOFF_END
  from gtalign.models.tokenizer import load_tokenizer
  from gtalign.training import rollout
  tok = load_tokenizer(smollm2_gguf_path)
  rows = warm_start.warm_rows(0, 6, exclude=set())
  texts = [warm_start.format_trace(r, plan, "Paris.", "fixed")
           for r, plan in zip(rows[:3], ("DA", "CQ", "AQ"))]
  texts += [texts[0].split("sums to")[0], "<thinking>no table yet"]
  completions = [tok.encode(t) for t in texts]
  batch = rollout.sequence_batch([[1, 2]] * len(texts), completions, tok.pad_id)
  masked = rollout.mask_through(batch["loss_mask_bc"], tok, completions, ANALYZE_END,
                                after=PAYOFF_END)
  for i, ids in enumerate(completions[:3]):
    off = np.flatnonzero(masked[i, :len(ids)] == 0)
    start, end = int(off[0]), int(off[-1]) + 1
    assert len(off) == end - start  # one span
    # the whole table stays trained, through the id that closes it (here "><", which opens
    # the scan too)
    assert PAYOFF_END in tok.decode(ids[:start]) and PAYOFF_END not in tok.decode(ids[:start - 1])
    assert ANALYZE_END in tok.decode(ids[:end]) and ANALYZE_END not in tok.decode(ids[:end - 1])
    assert "Best LLM + user" in tok.decode(ids[start:end])
    # the response stays trained, from the id after the one that closes the scan
    rest = tok.decode(ids[end:])
    assert rest.endswith("</response>") and "response>" in rest and "Best" not in rest
    assert masked[i, end:len(ids)].all()
  for i in (3, 4):
    assert (masked[i] == batch["loss_mask_bc"][i]).all()


def test_rl_can_leave_the_other_row_out_of_the_loss_on_the_real_tokenizer(smollm2_gguf_path):
  """`rl.train_other_row=False`: the three cells of the row the key does not read get loss mask
  0, every other id (the read row, the scan, the response) keeps its own; no key, no change."""
  from gtalign.game.trace import parse_trace
  from gtalign.models.tokenizer import load_tokenizer
  from gtalign.training import rollout
  tok = load_tokenizer(smollm2_gguf_path)
  rows = warm_start.warm_rows(0, 6, exclude=set())
  texts = [warm_start.format_trace(r, plan, "Paris.", "fixed", other=other)
           for r, plan, other in zip(rows[:3], ("DA", "CQ", "AQ"), ("CQ", "AQ", "DA"))]
  texts.append("<thinking>no table, no key</thinking>")
  completions = [tok.encode(t) for t in texts]
  keys = [parse_trace(t).chosen_key for t in texts]
  assert all(keys[:3]) and keys[3] is None
  batch = rollout.sequence_batch([[1, 2]] * len(texts), completions, tok.pad_id)
  masked = rollout.mask_other_row(batch["loss_mask_bc"], tok, completions, keys)
  for i, ids in enumerate(completions[:3]):
    off = [k for k in range(len(ids)) if masked[i, k] == 0]
    left_out = "".join(tok.decode([ids[k]]) for k in off)
    other = "VQ_" if keys[i].startswith("DQ_") else "DQ_"
    read = keys[i][:3]
    for name in ("AQ", "CQ", "DA"):
      assert f'{other}{name}":{{"LLM":' in left_out, (left_out, name)  # ',"' opens it
      assert f"{read}{name}" not in left_out
    assert "<response>" not in left_out and "sums to" not in left_out
    assert len(off) <= 3 * 17  # three cells of ~16 ids, nothing more
  assert (masked[3] == batch["loss_mask_bc"][3]).all()


@pytest.mark.parametrize("key", ["train_thinking", "train_analyze", "train_other_row"])
def test_leaving_blocks_out_is_refused_for_dialogues(key):
  from configs import grpo
  from gtalign.training import run as run_lib
  config = grpo.get_config("tiny")
  config.rl[key], config.rl.max_turns = False, 3
  with pytest.raises(InvalidInput, match=f"rl.{key}=False"):
    run_lib.check_options(config)


def test_the_other_rows_kl_is_refused_for_dialogues():
  from configs import grpo
  from gtalign.training import run as run_lib
  config = grpo.get_config("tiny")
  config.rl.other_row_kl, config.rl.max_turns = 0.5, 3
  with pytest.raises(InvalidInput, match="rl.other_row_kl=0.5"):
    run_lib.check_options(config)
  config.rl.max_turns = 1
  run_lib.check_options(config)


@pytest.mark.parametrize("key, value, named", [("rows", "all", "sft.rows"),
                                               ("hedge", 1.0, "sft.hedge"),
                                               ("draw", "epoch", "sft.draw")])
def test_a_bad_draw_option_is_named(key, value, named):
  from configs import grpo
  from gtalign.training import run as run_lib
  config = grpo.get_config("tiny")
  setattr(config.sft, key, value)
  with pytest.raises(InvalidInput, match=named):
    run_lib.check_options(config)


def test_the_table_temperature_reaches_each_number_first_digit_on_the_real_tokenizer(
    smollm2_gguf_path):
  """rl.table_temperature draws hot the <payoff> tokens whose text so far ends with
  `payoff.BEFORE_NUMBER`: on the real tokenizer, for a warm-start table in either spelling,
  those are the first digit of each of the 12 numbers (where the peak is decided) and each
  cell's brace, and nothing of the JSON's keys, nor anything outside the block."""
  from gtalign.models.tokenizer import load_tokenizer
  from gtalign.training import batches
  tok = load_tokenizer(smollm2_gguf_path)
  rows, _ = _rows()
  answers = {warm_start.plain_question(r): f"Answer number {i}." for i, r in enumerate(rows)}
  cfg = grpo.get_config("").rl
  cfg.table_temperature = 2.0

  def hot_tokens(text):
    span = batches.table_sampling(cfg)
    opened, closed, _ = span["span_temperature"]
    hot, so_far = [], ""
    for t in tok.encode(text):  # the sampler's rule (tests/test_sampler.py checks it on device)
      inside = so_far.rfind(opened) > so_far.rfind(closed)
      if inside and so_far.endswith(span["span_after"]):
        hot.append((so_far, tok.decode([t])))
      so_far += tok.decode([t])
    return hot, text[text.index(opened):text.index(closed)]

  for tables in ("decimal", "fixed"):
    text = warm_start.reference_trace(rows[0], "random", answers, tables=tables)
    cfg.table_numbers = "all"
    hot, block = hot_tokens(text)
    assert sorted(t for _, t in hot) == sorted(
        ['{"'] * 6 + [n[0] for n in re.findall(r"\d+(?:\.\d)?", block)]), (tables, hot)
    cfg.table_numbers = "lead"  # each row's first LLM number only: DQ_AQ's and VQ_AQ's
    hot, _ = hot_tokens(text)
    table = json.loads(block[block.index("{"):])
    leads = [k for k in table if k.endswith("_AQ")]
    assert [k[:2] for k in leads] == ["DQ", "VQ"] and list(table).index(leads[1]) == 3
    assert [t for _, t in hot] == [str(table[k]["LLM"])[0] for k in leads], (tables, hot)
    for (before, _), key in zip(hot, leads):
      assert before.endswith(f'"{key}":{{"LLM":'), (tables, before[-20:])
