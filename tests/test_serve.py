"""`python -m gtalign.serve` in its own process, driven by the official `openai` client and httpx.

The model is a random tiny Llama with SmolLM2's tokenizer and chat template, saved as a Hugging
Face directory, so the server's whole path (template, batching, streaming, stops) runs in
seconds; its text is noise, so tests compare the server with itself (same seed, streamed or not,
with or without a stop string) rather than with expected words.
"""

import asyncio
import json
import pathlib
import subprocess
import sys
import time

import httpx
import jax
import openai
import pytest
from serve_process import ServerProcess as _Server

from gtalign.models.checkpoints import save_pretrained
from gtalign.models.config import get_preset
from gtalign.models.tokenizer import load_tokenizer
from gtalign.models.transformer import init_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_gguf_path):
  tokenizer = load_tokenizer(smollm2_gguf_path)
  config = get_preset("tiny-llama").replace(vocab_size=tokenizer.vocab_size,
                                            max_position_embeddings=4096)
  directory = tmp_path_factory.mktemp("tiny_chat")
  save_pretrained(str(directory), config, init_params(config, jax.random.PRNGKey(0)), tokenizer)
  return directory


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
  s = _Server(tiny_model_dir, tmp_path_factory.mktemp("serve") / "server.log", "--chunk_steps=8")
  yield s
  s.close()


@pytest.fixture(scope="module")
def client(server):
  return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


def test_models_and_health(server, client):
  assert [m.id for m in client.models.list().data] == ["tiny"]
  assert server.health()["status"] == "ok"


def test_plain_chat_reports_usage_and_is_reproducible_by_seed(client, tiny_model_dir):
  tokenizer = load_tokenizer(str(tiny_model_dir))
  prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(MESSAGES,
                                                              add_generation_prompt=True))
  kwargs = dict(model="tiny", messages=MESSAGES, max_tokens=12, temperature=1.0, seed=11)
  first = client.chat.completions.create(**kwargs)
  again = client.chat.completions.create(**kwargs)
  (choice,) = first.choices
  assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
  assert choice.finish_reason in ("stop", "length")
  assert first.usage.prompt_tokens == len(prompt_ids)
  assert 0 < first.usage.completion_tokens <= 12
  assert again.choices[0].message.content == choice.message.content
  other = client.chat.completions.create(**{**kwargs, "seed": 12})
  assert other.choices[0].message.content != choice.message.content


def test_n_choices_are_distinct_streams_of_one_seed(client):
  kwargs = dict(model="tiny", messages=MESSAGES, max_tokens=10, temperature=1.0, seed=3, n=3)
  out = client.chat.completions.create(**kwargs)
  texts = [c.message.content for c in out.choices]
  assert [c.index for c in out.choices] == [0, 1, 2]
  assert len(set(texts)) == 3
  assert [c.message.content for c in client.chat.completions.create(**kwargs).choices] == texts
  single = client.chat.completions.create(**{**kwargs, "n": 1})
  assert single.choices[0].message.content == texts[0]


def test_streaming_equals_the_non_streamed_completion(client):
  kwargs = dict(model="tiny", messages=MESSAGES, max_tokens=40, temperature=1.0, seed=5, n=2)
  whole = client.chat.completions.create(**kwargs)
  parts, finish, usage = {0: "", 1: ""}, {}, None
  for event in client.chat.completions.create(**kwargs, stream=True,
                                              stream_options={"include_usage": True}):
    if event.usage is not None:
      usage = event.usage
    for c in event.choices:
      parts[c.index] += c.delta.content or ""
      if c.finish_reason:
        finish[c.index] = c.finish_reason
  assert [parts[0], parts[1]] == [c.message.content for c in whole.choices]
  assert finish == {c.index: c.finish_reason for c in whole.choices}
  assert usage.completion_tokens == whole.usage.completion_tokens


def test_stop_string_cuts_the_text_where_it_first_appears(client):
  kwargs = dict(model="tiny", messages=MESSAGES, max_tokens=32, temperature=1.0, seed=21)
  text = client.chat.completions.create(**kwargs).choices[0].message.content
  at = next(i for i in range(3, len(text) - 2) if text[i:i + 2].isascii()
            and text[i:i + 2].isalnum())
  stop = text[at:at + 2]
  out = client.chat.completions.create(**kwargs, stop=[stop, "\x00never"])
  assert out.choices[0].message.content == text[:text.find(stop)]
  assert out.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("body, param", [
    ({"messages": MESSAGES, "frobnicate": 1}, "frobnicate"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
    ({"messages": MESSAGES, "temperature": "hot"}, "temperature"),
    ({"messages": MESSAGES, "top_p": 0}, "top_p"),
    ({"messages": MESSAGES, "n": 0}, "n"),
    ({"messages": MESSAGES, "max_tokens": 100000}, "max_tokens"),
    ({"messages": MESSAGES, "max_tokens": "many"}, "max_tokens"),
    ({"messages": MESSAGES, "stop": [1]}, "stop"),
    ({"messages": MESSAGES, "stream": "yes"}, "stream"),
    ({"messages": MESSAGES, "gtalign": "yes"}, "gtalign"),
    ({"messages": MESSAGES, "gtalign": {"game": True, "pricing": {"policy": "nope"}}},
     "gtalign.pricing.policy"),
    ({"messages": MESSAGES, "gtalign": {"game": True, "pricing": {"policy": "per_token",
                                                                 "fee": 1.0}}},
     "gtalign.pricing.fee"),
    ({"messages": MESSAGES, "gtalign": {"game": True, "pricing": {"policy": "per_token",
                                                                 "cost": "high"}}},
     "gtalign.pricing.cost"),
    ({"messages": MESSAGES, "gtalign": {"game": True, "colour": 1}}, "gtalign.colour"),
    ({"messages": MESSAGES, "gtalign": {"game": True}, "stream": True}, "stream"),
    ({"messages": MESSAGES + [{"role": "assistant", "content": "<thinking>"}]}, "messages"),
    ({"messages": MESSAGES, "gtalign": {"game": True, "pricing": {"policy": ["per_token"]}}},
     "gtalign.pricing.policy"),
    ({"messages": MESSAGES, "stop": ["x" * 65]}, "stop"),
    ({"messages": MESSAGES, "gtalign": {"game": True, "payoff": {"DQ_AQ": 1}}},
     "gtalign.payoff.DQ_AQ"),
    ({"messages": MESSAGES, "gtalign": {"game": True, "payoff": {
        **{k: {"LLM": 1, "user": 1} for k in ("DQ_AQ", "DQ_CQ", "DQ_DA", "VQ_AQ", "VQ_CQ")},
        "VQ_DA": {"LLM": "x", "user": 1}}}}, "gtalign.payoff.VQ_DA.LLM"),
    ({"messages": MESSAGES, "gtalign": {"game": True, "payoff": {"XQ_DA": {}}}},
     "gtalign.payoff.XQ_DA"),
    ({"messages": MESSAGES, "gtalign": {"payoff": {}}}, "gtalign.payoff"),
    ({"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": "y"}},
     "stream_options"),
])
def test_bad_requests_get_a_400_naming_the_field(server, body, param):
  r = httpx.post(f"{server.base_url}/chat/completions", json={"model": "tiny", **body},
                 timeout=30)
  assert r.status_code == 400, r.text
  error = r.json()["error"]
  assert error["param"] == param and error["type"] == "invalid_request_error"
  assert param.split("[")[0].split(".")[0] in error["message"]


@pytest.mark.parametrize("raw, param, words", [
    (b"{not json", None, "not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, None, "nested too deeply"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature",
     "finite"),
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages[0].content",
     "Unicode"),
])
def test_raw_bodies_that_json_cannot_carry_get_a_400(server, raw, param, words):
  r = httpx.post(f"{server.base_url}/chat/completions", content=raw,
                 headers={"content-type": "application/json"}, timeout=30)
  assert r.status_code == 400, r.text
  assert r.json()["error"]["param"] == param and words in r.json()["error"]["message"]


def test_a_row_past_its_max_tokens_is_cut_and_finished_by_length():
  from gtalign.serving.engine import row_outcome
  assert row_outcome(list(range(12)), "stop", 10) == (list(range(10)), "length")
  assert row_outcome(list(range(12)), "eos", 12) == (list(range(12)), "eos")
  assert row_outcome(list(range(10)), "running", 10) == (list(range(10)), "length")
  assert row_outcome(list(range(5)), "running", 10) == (list(range(5)), "running")


def test_malformed_and_oversize_bodies_get_a_400_and_the_server_lives_on(server, client):
  huge = {"model": "tiny", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
  r = httpx.post(f"{server.base_url}/chat/completions", json=huge, timeout=30)
  assert r.status_code == 400 and "bytes" in r.json()["error"]["message"]
  with pytest.raises(openai.BadRequestError, match="temperature"):
    client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=5)
  assert client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2).choices


def test_concurrent_requests_share_batches(server):
  async def main():
    async with httpx.AsyncClient(timeout=120) as http:
      body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 24, "temperature": 1.0}
      return await asyncio.gather(*[
          http.post(f"{server.base_url}/chat/completions", json={**body, "seed": i})
          for i in range(12)])

  before = server.health()
  replies = asyncio.run(main())
  assert all(r.status_code == 200 for r in replies)
  after = server.health()
  assert after["rows"] - before["rows"] == 12
  assert after["batches"] - before["batches"] < 12  # some requests were decoded together


def test_a_client_that_disconnects_frees_its_rows(server):
  body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 3000, "temperature": 1.0,
          "seed": 1, "stream": True}
  before = server.health()
  with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body,
                    timeout=60) as r:
    lines = r.iter_lines()
    seen = [next(lines) for _ in range(4)]
  assert any(line.startswith("data: ") for line in seen)
  deadline = time.time() + 30
  while time.time() < deadline:
    health = server.health()
    if health["batches"] > before["batches"]:
      break
    time.sleep(0.1)
  assert health["batches"] == before["batches"] + 1
  assert health["rows_cancelled"] == before["rows_cancelled"] + 1
  assert health["last_batch_steps"] < 3000 and health["active_rows"] == 0


def test_a_full_queue_answers_429_with_retry_after(tiny_model_dir, tmp_path):
  small = _Server(tiny_model_dir, tmp_path / "small.log", "--max_queue=1", "--max_rows=1")
  try:
    async def main():
      async with httpx.AsyncClient(timeout=120) as http:
        body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 400}
        return await asyncio.gather(*[
            http.post(f"{small.base_url}/chat/completions", json={**body, "seed": i})
            for i in range(6)])

    replies = asyncio.run(main())
    codes = sorted(r.status_code for r in replies)
    assert 200 in codes and 429 in codes, codes
    busy = next(r for r in replies if r.status_code == 429)
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["type"] == "rate_limit_error"
    assert small.health()["status"] == "ok"
  finally:
    small.close()


QUESTION = "What is the capital of Italy?"
# sum-selection picks DQ_CQ as written; per_token pricing with the user paying (AQ -0.5, CQ -1)
# makes DQ_DA the best key
WRITTEN = {"DQ_AQ": {"LLM": 2.1, "user": 2.1}, "DQ_CQ": {"LLM": 2.4, "user": 2.4},
           "DQ_DA": {"LLM": 2.0, "user": 2.0}, "VQ_AQ": {"LLM": 1.0, "user": 1.0},
           "VQ_CQ": {"LLM": 1.0, "user": 1.0}, "VQ_DA": {"LLM": 1.0, "user": 1.0}}
PRICING = {"policy": "per_token", "cost": 0.5, "payer": "user"}


def _in_process(model_dir):
  from gtalign.game import prompt as prompt_lib
  from gtalign.models.checkpoints import load_pretrained
  from gtalign.sampling.sampler import Sampler
  config, params, tokenizer = load_pretrained(str(model_dir))
  ids = tokenizer.encode(prompt_lib.render(tokenizer, prompt_lib.build_messages(QUESTION)))
  return Sampler(config, tokenizer), params, tokenizer, ids


def test_game_request_reprices_a_given_trace_as_edit_payoff_block_and_continue_from(
    server, tiny_model_dir):
  from gtalign.game.pricing import edit_payoff_block
  from gtalign.sampling.sampler import SamplingConfig
  prefix = ("<thinking>A definite question (DQ).</thinking>\n<payoff>" + json.dumps(WRITTEN) +
            "</payoff>\n")
  body = {"model": "tiny", "temperature": 0, "max_tokens": 24, "seed": 0,
          "messages": [{"role": "user", "content": QUESTION},
                       {"role": "assistant", "content": prefix}],
          "gtalign": {"game": True, "pricing": PRICING}}
  r = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120)
  assert r.status_code == 200, r.text
  (trace,) = r.json()["gtalign"]["choices"]
  info = trace["pricing"]
  assert info["payoff_written"] == WRITTEN and info["error"] is None
  assert (info["selected_written"], info["selected_priced"]) == ("DQ_CQ", "DQ_DA")
  assert info["payoff_priced"]["DQ_CQ"] == {"LLM": 2.4, "user": 1.4}

  sampler, params, tokenizer, ids = _in_process(tiny_model_dir)
  edited = edit_payoff_block(prefix, PRICING["policy"], cost=0.5, payer="user")
  out = sampler.continue_from(params, [ids], [edited], SamplingConfig(
      max_new_tokens=24, temperature=0.0, stop=("</response>",), include_stop_str=True),
      prompt_indices=[1], sample_offsets=[0])  # the server's stream for choice 0: (seed + 1, 0)
  tokens = out.tokens[0]  # the server cuts a row at max_tokens: the same as a budget of 24
  assert trace["text"] == edited + out.texts[0]
  assert r.json()["usage"]["completion_tokens"] == len(tokens)

  client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
  reply = client.chat.completions.create(
      model="tiny", messages=body["messages"], temperature=0, max_tokens=24, seed=0,
      extra_body={"gtalign": body["gtalign"]})
  assert reply.model_extra["gtalign"]["choices"][0]["text"] == trace["text"]


def test_game_request_from_scratch_renders_the_game_prompt_and_stops_at_the_payoff(
    server, tiny_model_dir):
  from gtalign.sampling.sampler import SamplingConfig
  body = {"model": "tiny", "temperature": 0, "max_tokens": 20, "seed": 9,
          "messages": [{"role": "user", "content": QUESTION}],
          "gtalign": {"game": True, "pricing": PRICING}}
  reply = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120).json()
  (trace,) = reply["gtalign"]["choices"]
  sampler, params, tokenizer, ids = _in_process(tiny_model_dir)
  assert reply["gtalign"]["prompt"] == tokenizer.decode(ids) or QUESTION in reply["gtalign"][
      "prompt"]
  assert reply["usage"]["prompt_tokens"] == len(ids)
  out = sampler.generate(params, [ids], SamplingConfig(max_new_tokens=32, temperature=0.0,
                                                       stop=("</payoff>",)),
                         prompt_indices=[9], sample_offsets=[0])
  if out.finish_reasons[0] == "length":  # a random model: no payoff, so nothing to price
    assert trace["text"] == tokenizer.decode(out.tokens[0][:20])
    assert trace["pricing"] is None and trace["valid"] is False
    # the reply says the game failed and where; content is never the raw trace
    assert reply["choices"][0]["message"]["content"] == ""
    assert reply["choices"][0]["finish_reason"] == "length"
    assert trace["failure"]["finish_reason"] == "length"
    assert "without a <response> block" in trace["failure"]["message"]


def test_http_judge_talks_to_the_server(server):
  from gtalign.rewards import rubrics
  from gtalign.rewards.judge_types import JudgeRequest
  from gtalign.rewards.judges import HttpJudge
  judge = HttpJudge(server.base_url, model="tiny", max_tokens=8, max_retries=0,
                    extra_body={"seed": 4})
  requests = [JudgeRequest("accuracy", "What is 2 + 2?", "4", "4"),
              JudgeRequest("pareto", "", "I pick DQ_DA.", "DQ_DA, DQ_AQ")]
  before = server.health()["rows"]
  results = judge.score(requests)
  assert server.health()["rows"] - before == 2 and judge.stats.requests == 2
  for request, result in zip(requests, results):
    # a random tiny model writes no verdict: each result is a failure carrying the server's text
    direct = httpx.post(f"{server.base_url}/chat/completions", timeout=60, json={
        "model": "tiny", "max_tokens": 8, "seed": 4, "temperature": 0.6, "top_p": 0.95,
        "messages": [{"role": "user", "content": rubrics.render(request)}]}).json()
    assert result.failed and direct["choices"][0]["message"]["content"] in result.raw


@pytest.mark.slow  # 100 SFT steps of the tiny model before judged traces come
def test_a_training_run_judged_by_the_server_masks_its_unusable_verdicts(server, tmp_path):
  before = server.health()["rows"]
  proc = subprocess.run(
      [sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:tiny",
       f"--workdir={tmp_path}", "--config.rl.variant=ablation",  # world rows ask a pareto judge
       f"--config.rl.judge={server.base_url}", "--config.rl.judge_model=tiny",
       "--config.rl.judge_max_tokens=8", "--config.rl.judge_max_retries=0",
       "--config.sft.steps=100"],  # enough for the tiny model to write judged traces
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  rl = [r for r in records if "rollout/welfare" in r]
  judged = server.health()["rows"] - before
  assert judged > 0, "no sample was judged"
  failed = sum(r["rollout/judge_failed"] for r in rl)
  print(f"{judged} judge requests over {len(rl)} RL steps, failure rates "
        f"{[round(r['rollout/judge_failed'], 2) for r in rl]}")
  assert failed > 0 and all(0 <= r["rollout/judge_failed"] <= 1 for r in rl)


def test_the_http_user_simulator_talks_to_the_server(server):
  """gtalign.dialogue's LLM user over HTTP: the hidden intent in its instructions, the dialogue
  with the roles swapped, and the server's reply as the user's next message."""
  from gtalign.dialogue import simulator as sim_lib
  row = {"row_id": "ambig_qa/0", "extra_info": {"single_turn_prompt": "Who won the cup?"},
         "reward_model": {"ground_truth": "multipleQAs###There are multiple meanings of the "
                          "question.Meaning 0: Who won the cup in 1990?; Answer 0: Germany\n"
                          "Meaning 1: Who won the cup in 1994?; Answer 1: Brazil"}}
  ask = sim_lib.Ask(row, ({"role": "user", "content": "Who won the cup?"},
                          {"role": "assistant", "content": "Which year do you mean?"}))
  user = sim_lib.HttpUser(server.base_url, model="tiny", max_tokens=8)
  messages = user.messages(ask)
  assert messages[0]["role"] == "system"
  assert "Who won the cup in 1990? (the answer you expect: Germany)" in messages[0]["content"]
  assert messages[1:] == [{"role": "assistant", "content": "Who won the cup?"},
                          {"role": "user", "content": "Which year do you mean?"}]
  (reply,) = user.replies([ask])
  assert user.failures == 0 and isinstance(reply.text, str)
  direct = httpx.post(f"{server.base_url}/chat/completions", timeout=60, json={
      "model": "tiny", "messages": messages, "max_tokens": 8, "temperature": 0.0}).json()
  assert reply.text == direct["choices"][0]["message"]["content"].strip()
  dead = sim_lib.HttpUser("http://127.0.0.1:9/v1", max_retries=0, timeout_s=5)
  assert dead.replies([ask]) == [sim_lib.Reply(None)] and dead.failures == 1
