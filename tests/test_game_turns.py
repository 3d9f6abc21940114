"""A game turn on a policy that writes the game's tags itself: the real SmolLM2 weights after a
brief warm start (`configs/grpo.py:brief`, 24 SFT steps). Like the trained policy, it writes
`</payoff><analyze>` with a token that crosses the cut, which is what broke continuation; a
random tiny model cannot show any of this.

Slow (about 6 minutes, most of it the warm start): CI runs tests/test_continuation.py, the same
continuation checks on the base model with the trace written up to the tags.
"""

import asyncio
import dataclasses
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from serve_process import ROOT, ServerProcess

from gtalign.evaluation import cuts as cuts_lib
from gtalign.game import payoff, trace, turn
from gtalign.game.payoff import select_in_row
from gtalign.models.checkpoints import load_pretrained
from gtalign.sample import game_prompt, game_settings
from gtalign.sampling.sampler import Sampler, SamplingConfig

QUESTIONS = ["Name the capital of Italy.", "What is the capital?",
             "How many legs does a spider have?", "What is the sum?",
             "How many legs does it have?"]
PRICING = {"policy": "per_token", "cost": 1.0, "payer": "llm"}
pytestmark = pytest.mark.slow

GREEDY = SamplingConfig(max_new_tokens=256, temperature=0.0, stop=(trace.RESPONSE_END,),
                        include_stop_str=True)


def _table_parses(text: str) -> bool:
  """Whether the trace's own table is a strict six-key table (the brief policy, 24 SFT steps,
  sometimes leaves a key out), the only kind a pricing edit can reprice."""
  block = trace.extract_block(text, "payoff") or ""
  return trace.parse_payoff(block, mode="lenient")[0] is not None


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("brief")
  proc = subprocess.run([sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:brief",
                         f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir / "export"


@pytest.fixture(scope="module")
def policy(export):
  config, params, tokenizer = load_pretrained(str(export), dtype="float32")
  settings = game_settings(str(export), None, None)
  prompts = [tokenizer.encode(game_prompt(tokenizer, q, settings)) for q in QUESTIONS]
  sampler = Sampler(config, tokenizer)
  whole = sampler.generate(params, prompts, GREEDY)
  return sampler, params, tokenizer, prompts, whole


def test_the_policy_writes_the_tags_with_tokens_that_cross_them(policy):
  sampler, params, tokenizer, prompts, whole = policy
  token_bytes = tokenizer.token_bytes()
  crossing = 0
  for text, tokens in zip(whole.texts, whole.tokens):
    assert trace.PAYOFF_END in text and "<response>" in text, text
    ends = np.cumsum([len(token_bytes[t]) for t in tokens])
    cut = text.encode().index(trace.PAYOFF_END.encode()) + len(trace.PAYOFF_END)
    crossing += cut not in set(ends.tolist())
  assert crossing > 0  # e.g. "><": a cut at </payoff> splits a token the model wrote


def test_cuts_after_its_own_tags_and_inside_words_continue_token_for_token(policy):
  """25 cuts of its own greedy game traces (right after each closing tag, and inside two words
  each), each continued from the cut text: the ids must be the uninterrupted generation's,
  token for token. (Plain chat cuts: tests/test_continuation.py, slow, on the base model.)"""
  sampler, params, tokenizer, prompts, whole = policy
  found = cuts_lib.check(sampler, params, prompts, GREEDY, words=2, whole=whole)
  summary = cuts_lib.summary(found)
  print(summary)
  assert summary["cuts"] >= 24 and summary["tag_cuts"] >= 3 * len(prompts), summary
  assert summary["exact"] == summary["cuts"], [c for c in found if not c.exact]


@pytest.fixture(scope="module")
def priced(policy):
  sampler, params, tokenizer, prompts, whole = policy
  edit = turn.Edit(PRICING["policy"], {"cost": 1.0, "payer": "llm"})
  return turn.play(sampler, params, prompts, GREEDY, edit)


def test_a_turn_without_an_edit_is_one_generation_and_an_edit_changes_only_the_table(policy,
                                                                                      priced):
  sampler, params, tokenizer, prompts, whole = policy
  turns = turn.play(sampler, params, prompts, GREEDY)
  for r, t in enumerate(turns):
    np.testing.assert_array_equal(t.tokens, whole.tokens[r])
    assert t.text == whole.texts[r] and t.failure is None
  token_bytes = tokenizer.token_bytes()
  assert sum(map(_table_parses, whole.texts)) >= 3, whole.texts
  for r, t in enumerate(priced):
    if not _table_parses(whole.texts[r]):  # nothing to price: the turn says why
      assert "payoff" in t.info["error"], t.info
      continue
    assert t.info["error"] is None and t.response is not None, t.text
    own, new = whole.texts[r].encode(), t.text.encode()
    changed = next(i for i, (a, b) in enumerate(zip(own, new)) if a != b)
    assert changed > own.index(b"<payoff>")  # pricing changes the table's numbers only
    same = next(i for i, (a, b) in enumerate(zip(t.tokens, whole.tokens[r])) if a != b)
    kept = len(b"".join(token_bytes[i] for i in whole.tokens[r][:same]))
    # every id wholly before the first changed byte is the model's own; the next one is not
    assert kept <= changed < kept + len(token_bytes[whole.tokens[r][same]])


def test_the_sample_cli_plays_a_priced_turn_as_play_does(export, priced):
  proc = subprocess.run(
      [sys.executable, "-m", "gtalign.sample", f"--model={export}", "--game",
       f"--prompt={QUESTIONS[1]}", "--max_new_tokens=256", f"--pricing={json.dumps(PRICING)}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  (record,) = [json.loads(line) for line in proc.stdout.splitlines()]
  assert record["text"] == priced[1].text and record["failure"] is None
  assert record["pricing"]["selected_priced"] == priced[1].info["selected_priced"]
  assert record["response"] == priced[1].response


def test_the_server_answers_with_a_response_whenever_one_generation_writes_one(policy, export,
                                                                                tmp_path):
  """Raw HTTP game requests, with and without pricing, all at once (the engine batches them):
  each reply carries the <response> the uninterrupted trace has, and without pricing the whole
  trace is the uninterrupted one."""
  sampler, params, tokenizer, prompts, whole = policy
  server = ServerProcess(export, tmp_path / "server.log", "--dtype=float32")

  async def ask_all():
    async with httpx.AsyncClient(timeout=600) as http:
      return await asyncio.gather(*[
          http.post(f"{server.base_url}/chat/completions", json={
              "model": "tiny", "temperature": 0, "seed": 0, "max_tokens": 256,
              "messages": [{"role": "user", "content": q}],
              "gtalign": {"game": True, **({"pricing": pricing} if pricing else {})}})
          for pricing in (None, PRICING) for q in QUESTIONS])

  try:
    replies = asyncio.run(ask_all())
  finally:
    server.close()
  for k, r in enumerate(replies):
    assert r.status_code == 200, r.text
    priced, text = k >= len(QUESTIONS), whole.texts[k % len(QUESTIONS)]
    (choice,) = r.json()["gtalign"]["choices"]
    content = r.json()["choices"][0]["message"]["content"]
    assert "<response>" in text
    assert content and choice["failure"] is None, choice
    assert content == turn.response_text(choice["text"])
    if not priced:  # token for token the uninterrupted greedy trace
      assert choice["text"] == text
    elif _table_parses(text):  # a brief policy's table does not always parse
      assert choice["pricing"]["payoff_priced"] != choice["pricing"]["payoff_written"]


@pytest.mark.parametrize("edit", ["both", "read"])
def test_steering_continues_every_edit_from_its_own_ids_and_reads_what_it_did(policy, edit):
  """The steering metric (evaluation.steering) on the real weights: three edits per trace, each
  continued past `</payoff>` from the policy's own ids; every continuation writes a key and a
  response, scored against the key the edited table selects in the row the policy read. With
  `edit="read"` the row the policy did not read stays as it wrote it."""
  from gtalign.evaluation import reading, steering
  from gtalign.game import payoff
  sampler, params, tokenizer, prompts, whole = policy
  rows = ["DQ", "VQ", "DQ", "VQ", "VQ"]  # the QUESTIONS' types
  steered = steering.steer(sampler, params, prompts, whole.texts, whole.tokens, rows, edit=edit)
  assert len(steered) == 3 * len(prompts)
  for s in steered:
    text = whole.texts[s.prompt]
    cut = text[:text.index(trace.PAYOFF_END) + len(trace.PAYOFF_END)]
    read = reading.read_type(reading.thinking(cut)) or rows[s.prompt]
    assert s.target[:2] == read
    assert steering.row_pick(payoff.Bimatrix.from_dict(s.table), read) == s.target
    written, _ = trace.parse_payoff(trace.extract_block(cut, "payoff") or "", mode="lenient")
    if edit == "read" and written:
      other = "VQ" if read == "DQ" else "DQ"
      own = payoff.Bimatrix.from_dict(written)
      assert all(payoff.Bimatrix.from_dict(s.table)[k] == own[k]
                 for k in trace.PAYOFF_KEYS if k.startswith(other)), (s.table, written)
    assert s.chosen_key is not None and s.action is not None, s.text
    assert s.text.endswith(trace.RESPONSE_END), s.text
  assert {s.target[-2:] for s in steered} == set(payoff.ACTIONS)
  score = steering.score(steered, len(prompts))
  print(f"steering of the brief policy: {score:.2f}",
        [(s.target, s.chosen_key, s.action) for s in steered])
  assert 0.0 <= score <= 1.0


def test_evaluate_the_real_weights_policy_from_its_workdir_and_its_export(export, tmp_path):
  """gtalign.evaluate on the warm-started real SmolLM2 (the brief run): its workdir's checkpoint
  and its export give the same completions and numbers, and the policy's own tables are read
  (valid traces, key = table's pick and steering measured, not left empty)."""
  from gtalign.evaluation import policy_eval
  out = {name: policy_eval.evaluate(str(model), "world:0", num_prompts=4, steering_prompts=2,
                                    n_boot=50, output=str(tmp_path / name), preset="brief",
                                    dtype="float32")
         for name, model in (("ckpt", export.parent), ("export", export))}
  assert "checkpoint step 24" in out["ckpt"]["model"]
  ckpt, exp = out["ckpt"]["sources"]["world"], out["export"]["sources"]["world"]
  assert ckpt["rows"] == exp["rows"] and ckpt["summary"] == exp["summary"]
  assert ckpt["summary"]["format_ok"][0] > 0  # the real policy writes the four blocks
  assert all(x is not None for x in ckpt["rows"]["steering"][:2])
  assert len(ckpt["rows"]["welfare"]) == 4


def test_priced_groups_continue_the_real_policys_reading_under_each_priced_table(policy):
  """`rl.priced_groups` on the real weights: each row is the policy's own ids through its
  reading, a table whose row read selects the row's key, and the policy's continuation; the
  ids spell the text scored, and only the table onward trains."""
  from gtalign.training import priced_groups, rollout
  sampler, params, tokenizer, prompts, whole = policy
  size = 3
  keep = [i for i, t in enumerate(whole.texts) if _table_parses(t)]
  assert keep, whole.texts
  texts = [whole.texts[i] for i in keep for _ in range(size)]
  tokens = [whole.tokens[i] for i in keep for _ in range(size)]
  rows_prompts = [prompts[i] for i in keep for _ in range(size)]
  out = priced_groups.priced_groups(
      sampler, params, rows_prompts, texts, tokens, ["DQ"] * len(texts), groups=len(keep),
      num_samples=size, sampling=dataclasses.replace(GREEDY, max_new_tokens=192), seed=0)
  assert len(out.sources) == size * len(keep)
  for r, (completion, text, key) in enumerate(zip(out.completions, out.texts, out.keys)):
    source = out.sources[r]
    assert tokenizer.decode(completion) == text
    reading = texts[source][:texts[source].index(trace.PAYOFF_START)]
    assert text.startswith(reading)
    own = list(tokens[source])
    cut = rollout.tokens_through(tokenizer, own, trace.PAYOFF_START)
    assert list(completion[:cut]) == own[:cut]  # the model's own ids through the reading
    table = trace.parse_payoff(trace.extract_block(text, "payoff"), mode="lenient")[0]
    assert select_in_row(payoff.Bimatrix.from_dict(table), key[:2]) == key
    mask = out.trained[r]
    assert not mask[:cut].any() and mask[cut:cut + 4].all()
  assert sorted({k[3:] for k in out.keys}) == ["AQ", "CQ", "DA"]
