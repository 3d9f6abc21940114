"""Token-exact continuation (`gtalign.sampling.continuation`) on the real SmolLM2 weights.

A continuation from a cut or edited trace must keep the model's own ids before the edit and
give back, under greedy decoding, exactly what one uninterrupted generation writes. A random
model cannot show that (its continuations are noise either way), so every check here runs on the
embedded default model, float32, greedy.
"""

import random

import jax.numpy as jnp
import numpy as np
import pytest

from gtalign.evaluation import cuts as cuts_lib
from gtalign.game import pricing, prompt as prompt_lib, trace
from gtalign.models.checkpoints import load_pretrained
from gtalign.sampling import continuation
from gtalign.sampling.sampler import Sampler, SamplingConfig

TABLE = ('{"DQ_AQ":{"LLM":2.0,"user":2.5},"DQ_CQ":{"LLM":1.0,"user":1.0},"DQ_DA":{"LLM":3.0,'
         '"user":3.0},"VQ_AQ":{"LLM":1.5,"user":1.5},"VQ_CQ":{"LLM":2.0,"user":1.8},'
         '"VQ_DA":{"LLM":1.0,"user":0.5}}')
TRACE = ("<thinking>The user names the country, so the question is definite (DQ).</thinking>"
         f"<payoff>{TABLE}</payoff><analyze>Best LLM + user: DQ_DA</analyze>"
         "<response>The capital of Italy is Rome.</response>")


@pytest.fixture(scope="module")
def model(smollm2_gguf_path):
  config, params, tokenizer = load_pretrained(smollm2_gguf_path, dtype="float32")
  return config, params, tokenizer, Sampler(config, tokenizer)


@pytest.fixture(scope="module")
def token_bytes(model):
  return model[2].token_bytes()


def _spell(token_bytes, ids):
  return b"".join(token_bytes[i] for i in ids)


def test_a_cut_inside_the_token_across_payoff_end_keeps_the_ids_before_it(model, token_bytes):
  tokenizer = model[2]
  own = tokenizer.encode(TRACE)  # how the trained policy writes it: "</", "pay", "off", "><"
  cross = next(i for i in range(len(own))
               if _spell(token_bytes, own[:i]).endswith(b"</payoff"))
  assert token_bytes[own[cross]] == b"><"
  cut = TRACE[:TRACE.index(trace.PAYOFF_END) + len(trace.PAYOFF_END)]
  plan = continuation.plan(tokenizer, token_bytes, cut, own)
  assert plan.ids == tuple(own[:cross]) and plan.kept == cross
  assert plan.forced == b">"  # spelled again by the model, which may write "><" once more
  # the naive path ends on a lone ">" the model never wrote there
  assert tokenizer.encode(cut)[-1] != own[cross]


def test_an_edited_table_changes_only_the_tables_ids(model, token_bytes):
  tokenizer = model[2]
  own = tokenizer.encode(TRACE)
  cut = TRACE[:TRACE.index(trace.PAYOFF_END) + len(trace.PAYOFF_END)]
  edited = pricing.edit_payoff_block(cut, "per_token", cost=1.5, payer="llm")
  assert edited != cut
  plan = continuation.plan(tokenizer, token_bytes, edited, own)
  assert _spell(token_bytes, plan.ids) + plan.forced == edited.encode()
  same = 0
  while same < min(len(own), len(plan.ids)) and own[same] == plan.ids[same]:
    same += 1
  assert same == plan.kept
  # every id before the first changed character of the table is the model's own
  first_change = next(i for i, (a, b) in enumerate(zip(cut, edited)) if a != b)
  assert len(_spell(token_bytes, own[:same])) <= first_change
  assert len(_spell(token_bytes, own[:same + 1])) > first_change - len(token_bytes[own[same]])
  assert _spell(token_bytes, own[:same]).decode().startswith(cut[:cut.index("<payoff>")])
  assert cut.index("<payoff>") < first_change


def test_plan_spells_any_edit_of_any_text(model, token_bytes):
  """Random cuts and edits of real texts (multi-byte characters too): the ids and the forced
  bytes spell the text, the kept ids are the model's own, the forced bytes fit one token."""
  tokenizer = model[2]
  rng = random.Random(0)
  texts = [TRACE, "Café déjà vu: naïve façades — 東京 and Zürich. Because because because!",
           "   spaces\n\n\tand tabs  ", "<response>Rome.</response>"]
  longest = max(map(len, token_bytes))
  for _ in range(300):
    text = rng.choice(texts)
    own = tokenizer.encode(text)
    cut = text[:rng.randint(0, len(text))]
    if rng.random() < 0.5 and cut:
      at = rng.randint(0, len(cut) - 1)
      cut = cut[:at] + rng.choice(["X", "é", "", "\n", "{}"]) + cut[at + 1:]
    for tokens in (own, None):
      plan = continuation.plan(tokenizer, token_bytes, cut, tokens)
      assert _spell(token_bytes, plan.ids) + plan.forced == cut.encode(), (cut, tokens)
      assert len(plan.forced) <= longest
      if tokens is not None:
        assert list(plan.ids[:plan.kept]) == own[:plan.kept]
        if text.startswith(cut) and plan.kept < len(own):  # an unedited cut keeps every id
          # wholly before it
          assert len(_spell(token_bytes, own[:plan.kept + 1])) > len(cut.encode())


def test_allowed_tokens_agree_with_the_bytes_to_spell(token_bytes):
  from gtalign.sampling.stop import TokenBytes
  table = TokenBytes.from_list(token_bytes, len(token_bytes))
  plans = [continuation.Resume((), f, 0, "") for f in (b">", b"pay", b"", b"\xc3")]
  forced_rf, forced_len_r = continuation.forced_array(plans)
  ok_rv = np.asarray(continuation.allowed_tokens(jnp.asarray(forced_rf), jnp.asarray(forced_len_r),
                                                 table.bytes_vl, table.len_v))
  for r, p in enumerate(plans):
    want = [bool(b) and (b.startswith(p.forced) or p.forced.startswith(b)) if p.forced else True
            for b in token_bytes]
    assert ok_rv[r].tolist() == want
  rest_rf, rest_r = continuation.consume(jnp.asarray(forced_rf), jnp.asarray(forced_len_r),
                                         jnp.asarray([2, 2, 2, 1], jnp.int32))
  assert np.asarray(rest_r).tolist() == [0, 1, 0, 0]
  assert bytes(np.asarray(rest_rf)[1, :1]) == b"y"


def _chat(tokenizer, question):
  return tokenizer.encode(tokenizer.apply_chat_template(
      [{"role": "user", "content": question}], add_generation_prompt=True))


def test_cut_generations_continue_token_for_token(model):
  """24+ cuts of the base model's own greedy generations: plain chat cut inside words, and game
  traces cut right after </thinking> and </payoff> (the base model does not write those tags, so
  the trace is written up to them and the model spells the tag itself, its own tokens choosing
  the boundary) and inside the words it writes next. A policy that writes the tags itself:
  tests/test_game_turns.py (slow)."""
  config, params, tokenizer, sampler = model
  chat = ["Name the capital of Italy.", "Explain why the sky is blue.",
          "How many legs does a spider have?", "Which planet is closest to the sun?"]
  game = [("Name the capital of Italy.", "thinking"), ("What is the capital?", "thinking"),
          ("Name the capital of Italy.", "payoff"), ("What is the capital?", "payoff")]
  sampling = SamplingConfig(max_new_tokens=40)
  found = cuts_lib.check(sampler, params, [_chat(tokenizer, q) for q in chat], sampling)
  prompts, forced = [], []
  for question, tag in game:
    ids = tokenizer.encode(prompt_lib.render(tokenizer, prompt_lib.build_messages(
        question, None, style="compact")))
    end = TRACE.index(f"</{tag}>")
    prompts.append(ids + tokenizer.encode(TRACE[:end]))
    forced.append(f"</{tag}>")
  found += cuts_lib.check(sampler, params, prompts, sampling, forced=forced, words=3)
  summary = cuts_lib.summary(found)
  print(summary)
  assert summary["cuts"] >= 24 and summary["tag_cuts"] >= 4, summary
  assert summary["exact"] == summary["cuts"], [c for c in found if not c.exact]
