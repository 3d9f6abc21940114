"""The jitted sampler against full (cache-free) forward passes, on a tiny model with a byte vocab."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from gtalign.models.config import get_preset
from gtalign.models.tokenizer import load_tokenizer
from gtalign.models.transformer import Decoder, init_params
from gtalign.sampling import sampler as sampler_lib
from gtalign.sampling import stop as stop_lib
from gtalign.sampling import strategies
from gtalign.sampling.sampler import Sampler, SamplingConfig

CONFIG = get_preset("tiny-llama").replace(vocab_size=258)
EOS, PAD = 256, 257


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  """Byte-level tokenizer: ids 0..255 are single bytes, 256 is EOS, 257 is padding."""
  chars = pre_tokenizers.ByteLevel.alphabet()
  byte_char = {b: c for b, c in zip(range(256), sorted(chars, key=lambda c: _byte_of(c)))}
  tok = tokenizers.Tokenizer(models.BPE({byte_char[b]: b for b in range(256)}, []))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(["<eos>", "<pad>"])
  directory = tmp_path_factory.mktemp("bytes_tok")
  tok.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": "<eos>", "pad_token": "<pad>", "tokenizer_class": "PreTrainedTokenizerFast"}))
  loaded = load_tokenizer(str(directory))
  assert (loaded.eos_ids, loaded.pad_id) == ((EOS,), PAD)
  assert loaded.encode("hé") == list("hé".encode())
  return loaded


def _byte_of(char):
  from gtalign.models.tokenizer import _BYTE_OF_CHAR
  return _BYTE_OF_CHAR[char]


@pytest.fixture(scope="module")
def params():
  p = init_params(CONFIG, jax.random.PRNGKey(0))
  # scale the head so that distributions are peaked enough for greedy decoding to be stable
  p["lm_head"]["kernel"] = p["lm_head"]["kernel"] * 4.0
  return p


@pytest.fixture(scope="module")
def sampler(tokenizer):
  return Sampler(CONFIG, tokenizer)


PROMPTS = [list(b"Hello there"), list(b"Hi"), list(b"A longer prompt, with commas.")]


def _full_logits(params, ids):
  ids = np.asarray([ids], np.int32)
  logits, _ = Decoder(CONFIG).apply({"params": params}, ids, np.arange(ids.shape[1])[None])
  return np.asarray(logits[0])


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
def test_tokens_and_logprobs_match_full_forward(sampler, params, temperature):
  sc = SamplingConfig(max_new_tokens=12, temperature=temperature, seed=3)
  out = sampler.generate(params, PROMPTS, sc)
  assert out.finish_reasons.count("length") >= 1
  for prompt, tokens, logprobs in zip(PROMPTS, out.tokens, out.logprobs):
    logits = _full_logits(params, list(prompt) + tokens.tolist())
    positions = np.arange(len(prompt) - 1, len(prompt) - 1 + len(tokens))
    step_logits = logits[positions]
    if temperature == 0.0:
      np.testing.assert_array_equal(tokens, step_logits.argmax(-1))
    expected = jax.nn.log_softmax(step_logits / (temperature or 1.0), axis=-1)
    np.testing.assert_allclose(logprobs, np.take_along_axis(np.asarray(expected),
                                                            tokens[:, None], -1)[:, 0],
                               atol=1e-5)


def test_eos_and_stop_strings_end_rows_while_others_continue(params, tokenizer):
  original_eos = tokenizer.eos_ids
  try:
    tokenizer.eos_ids = ()  # first a run that only ends at the token budget
    base = Sampler(CONFIG, tokenizer).generate(params, PROMPTS,
                                               SamplingConfig(max_new_tokens=16, temperature=0.0))
    assert base.finish_reasons == ["length"] * 3
    rows = [t.tolist() for t in base.tokens]
    # an ASCII stop string (1-3 bytes) that row 0 completes with its token `s_end`, found in no
    # other row and not earlier in row 0
    def ok(k, n):
      piece = bytes(rows[0][k - n + 1:k + 1])
      return (piece.isascii() and all(piece not in bytes(r) for r in rows[1:])
              and piece not in bytes(rows[0][:k]))
    s_end, n = next((k, n) for n in (3, 2, 1) for k in range(4, 16) if ok(k, n))
    stop = bytes(rows[0][s_end - n + 1:s_end + 1])
    # an EOS id that row 1 emits first at step `e` and that rows 0 (before its stop) and 2 never do
    e = next(k for k in range(2, 16) if rows[1][k] not in rows[1][:k] + rows[0][:s_end + 1]
             + rows[2])
    tokenizer.eos_ids = (rows[1][e],)
    out = Sampler(CONFIG, tokenizer).generate(
        params, PROMPTS, SamplingConfig(max_new_tokens=16, temperature=0.0,
                                        stop=(stop.decode("ascii"),)))
  finally:
    tokenizer.eos_ids = original_eos
  assert out.finish_reasons == ["stop", "eos", "length"]
  assert out.tokens[0].tolist() == rows[0][:s_end + 1]  # the token completing the stop is kept
  assert out.texts[0] == tokenizer.decode(rows[0][:s_end - n + 1])  # text cut before the stop
  assert out.tokens[1].tolist() == rows[1][:e + 1]  # EOS token included
  assert out.tokens[2].tolist() == rows[2]


def test_stop_string_split_across_tokens():
  table = stop_lib.TokenBytes.from_list([b"ab", b"c", b"</pay", b"off>", b"x"], 5)
  stops = (b"</payoff>", b"bc")
  window = jnp.zeros((3, stop_lib.window_size(stops, table.max_len)), jnp.uint8)
  seqs = [[4, 2, 3], [0, 1, 4], [4, 4, 4]]
  hits = []
  for step in range(3):
    window, hit = stop_lib.append_and_match(window, jnp.asarray([s[step] for s in seqs]), table,
                                            stops)
    hits.append(np.asarray(hit).tolist())
  assert hits == [[False, False, False], [False, True, False], [True, False, False]]


def test_samples_from_one_prefill_equal_independent_runs(sampler, params):
  sc = SamplingConfig(max_new_tokens=10, temperature=1.0, num_samples=3, seed=11)
  together = sampler.generate(params, PROMPTS[:2], sc)
  assert together.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
  assert together.sample_index.tolist() == [0, 1, 2, 0, 1, 2]
  assert len({tuple(t) for t in together.tokens[:3]}) > 1  # samples differ from each other
  single = dataclasses_replace(sc, num_samples=1)
  for row in range(6):
    i, j = row // 3, row % 3
    alone = sampler.generate(params, [PROMPTS[i]], single, prompt_indices=[i], sample_offsets=[j])
    np.testing.assert_array_equal(alone.tokens[0], together.tokens[row])
    np.testing.assert_allclose(alone.logprobs[0], together.logprobs[row], atol=1e-5)


def dataclasses_replace(obj, **kw):
  import dataclasses
  return dataclasses.replace(obj, **kw)


def test_new_params_do_not_recompile(sampler, params):
  sc = SamplingConfig(max_new_tokens=6, temperature=1.0)
  sampler.generate(params, PROMPTS, sc)
  sizes = (sampler_lib._prefill._cache_size(), sampler_lib._decode._cache_size())
  new_params = jax.tree.map(lambda a: a * 1.01, params)
  out_new = sampler.generate(new_params, PROMPTS, sc)
  out_old = sampler.generate(params, [p[:-1] for p in PROMPTS], sc)  # same length bucket
  assert (sampler_lib._prefill._cache_size(), sampler_lib._decode._cache_size()) == sizes
  assert out_new.num_tokens == out_old.num_tokens == 18


def test_continue_from_an_unedited_cut_gives_back_the_generation(sampler, params):
  """Mechanics on the tiny model (the real-weights check is tests/test_continuation.py): the
  prefix ids are the generation's own, and greedy continuation writes the rest of it."""
  sc = SamplingConfig(max_new_tokens=12, temperature=0.0)
  whole = sampler.generate(params, PROMPTS[:2], sc)
  # random bytes decode to U+FFFD where they are not UTF-8: that text no longer spells them
  cuts = [min(c, t.find("\ufffd") % (len(t) + 1)) for c, t in zip([5, 9], whole.texts)]
  assert min(cuts) > 0
  cont = sampler.continue_from(params, PROMPTS[:2], [t[:c] for t, c in zip(whole.texts, cuts)],
                               dataclasses_replace(sc, max_new_tokens=12),
                               prefix_tokens=whole.tokens)
  for r, c in enumerate(cuts):
    joined = np.concatenate([cont.prefix_tokens[r], cont.tokens[r]])
    np.testing.assert_array_equal(joined[:len(whole.tokens[r])], whole.tokens[r])
    assert (whole.texts[r][:c] + cont.texts[r]).startswith(whole.texts[r])


def test_forced_bytes_are_spelled_first_even_when_sampling(sampler, params, tokenizer):
  from gtalign.sampling.continuation import Resume
  sc = SamplingConfig(max_new_tokens=10, temperature=1.0, num_samples=3, seed=3,
                      stop=("lo w",), include_stop_str=True)
  g = sampler.start(params, PROMPTS[:2], sc,
                    resumes=[Resume((), b"Hello w", 0, ""), Resume(tuple(b"He"), b"llo", 2, "He")])
  g.advance()
  out = g.result()
  for r in range(3):  # the stop string ends inside the forced bytes: those rows stop there
    assert bytes(out.tokens[r][:5].tolist()) == b"Hello"
    assert out.finish_reasons[r] == "stop" and out.texts[r] == "Hello w"
  for r in range(3, 6):  # a stop string may begin in the text continued from
    assert bytes(out.tokens[r][:3].tolist()) == b"llo"
    assert out.texts[r].startswith("llo")
    np.testing.assert_array_equal(out.prefix_tokens[r], list(b"He"))


def test_top_k_and_top_p_only_draw_allowed_tokens(sampler, params):
  for top_k, top_p in [(3, 1.0), (0, 0.5)]:
    sc = SamplingConfig(max_new_tokens=8, temperature=1.0, top_k=top_k, top_p=top_p, seed=2)
    out = sampler.generate(params, PROMPTS, sc)
    for prompt, tokens in zip(PROMPTS, out.tokens):
      logits = _full_logits(params, list(prompt) + tokens.tolist())
      for k, tok in enumerate(tokens):
        row = logits[len(prompt) - 1 + k]
        order = np.argsort(-row)
        rank = int(np.where(order == tok)[0][0])
        if top_k:
          assert rank < top_k
        else:
          probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
          assert probs[order[:rank]].sum() < top_p + 1e-6


def test_inverse_cdf_sampling_follows_the_distribution():
  probs = np.asarray([0.5, 0.25, 0.15, 0.1])
  logits = jnp.repeat(jnp.log(jnp.asarray([probs])), 20000, 0)
  u = jax.random.uniform(jax.random.PRNGKey(0), (20000,))

  def freq(temperature, top_k, top_p):
    tokens = strategies.sample(logits, u, temperature, top_k, top_p)
    return np.bincount(np.asarray(tokens), minlength=4) / 20000

  np.testing.assert_allclose(freq(1.0, 0, 1.0), probs, atol=0.015)
  renormalised_top2 = [0.5 / 0.75, 0.25 / 0.75, 0, 0]
  np.testing.assert_allclose(freq(1.0, 2, 1.0), renormalised_top2, atol=0.015)
  np.testing.assert_allclose(freq(1.0, 0, 0.6), renormalised_top2, atol=0.015)  # nucleus {0, 1}
  hot = probs ** 2 / (probs ** 2).sum()  # temperature 0.5 squares the probabilities
  np.testing.assert_allclose(freq(0.5, 0, 1.0), hot, atol=0.015)
  assert freq(0.0, 0, 1.0).tolist() == [1, 0, 0, 0]


def test_prompt_buckets_share_one_program(sampler, params):
  sc = SamplingConfig(max_new_tokens=4, temperature=0.0, prompt_buckets=(16, 64))
  sampler.generate(params, [list(b"abc")], sc)
  size = sampler_lib._decode._cache_size()
  sampler.generate(params, [list(b"abcdefghij")], sc)
  assert sampler_lib._decode._cache_size() == size
  sampler.generate(params, [list(b"x" * 20)], sc)
  assert sampler_lib._decode._cache_size() == size + 1


def test_bad_sampling_settings_are_rejected():
  with pytest.raises(ValueError, match="top_p"):
    SamplingConfig(top_p=0.0)
  with pytest.raises(ValueError, match="max_new_tokens"):
    SamplingConfig(max_new_tokens=0)


def _run_cli(*args):
  import subprocess
  import sys
  return subprocess.run([sys.executable, "-m", "gtalign.sample", *args], capture_output=True,
                        text=True, timeout=300)


def test_cli_batch_file_with_samples_and_stop(tmp_path, params, tokenizer):
  from gtalign.models.checkpoints import save_pretrained
  save_pretrained(str(tmp_path / "model"), CONFIG, params, tokenizer)
  (tmp_path / "model" / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": "<eos>", "pad_token": "<pad>", "tokenizer_class": "PreTrainedTokenizerFast",
       "chat_template": "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"}))
  batch = tmp_path / "prompts.jsonl"
  batch.write_text('"Hello there"\n{"prompt": "Hi", "system": "sys"}\n')
  proc = _run_cli(f"--model={tmp_path / 'model'}", f"--batch_file={batch}", "--num_samples=2",
                  "--temperature=1", "--top_k=50", "--top_p=0.95", "--stop=e", "--seed=4",
                  "--max_new_tokens=12")
  assert proc.returncode == 0, proc.stderr
  lines = [json.loads(line) for line in proc.stdout.splitlines()]
  assert [(r["prompt_index"], r["sample_index"]) for r in lines] == [(0, 0), (0, 1), (1, 0),
                                                                     (1, 1)]
  assert all(r["finish_reason"] in ("stop", "length", "eos") for r in lines)
  assert all("e" not in r["text"] for r in lines if r["finish_reason"] == "stop")
  assert "tok/s" in proc.stderr
  batch.write_text('"ok"\n{"text": 3}\n')
  bad = _run_cli(f"--model={tmp_path / 'model'}", f"--batch_file={batch}")
  assert bad.returncode != 0 and "prompts.jsonl:2" in bad.stderr


@pytest.mark.parametrize("temperature", [0.5, 1.3])
def test_trainer_logprobs_match_the_samplers_at_its_temperature(sampler, params, temperature):
  """The policy ratio starts at 1: the trainer's log-probs of sampled tokens are the sampler's.

  Both must use log_softmax(logits / T); the trainer once used T = 1, which at T = 0.5 put
  about half of the tokens outside the clip range before any update.
  """
  from gtalign.rl import objective
  from gtalign.training import rollout
  prompts = [list(b"Hi there"), list(b"abc"), list(b"What is 2 + 2?"), list(b"x")]
  out = sampler.generate(params, prompts, SamplingConfig(max_new_tokens=12,
                                                         temperature=temperature, seed=3))
  batch = rollout.sequence_batch(prompts, out.tokens, PAD)
  batch["old_logp_bc"] = rollout.completion_array(out.logprobs, batch["targets_bc"].shape[1])
  batch.update(adv_b=np.ones(4, np.float32), reward_valid_b=np.ones(4, np.float32))

  def gap(t):
    cfg = objective.ObjectiveConfig(group_size=1, num_sources=1, temperature=t)
    _, _, metrics = objective.policy_loss(CONFIG, cfg, params, batch)
    return float(metrics["sampler_logp_gap"])

  assert gap(temperature) < 1e-4
  assert gap(1.0) > 0.05  # the old trainer, unscaled, is far off
  ref = objective.sequence_logprobs(CONFIG, params, batch, temperature=temperature)
  mask = batch["loss_mask_bc"] > 0
  np.testing.assert_allclose(np.asarray(ref)[mask], batch["old_logp_bc"][mask], atol=1e-4)


def test_chunked_decoding_equals_one_call_and_cancel_stops_only_its_row(sampler, params):
  sc = SamplingConfig(max_new_tokens=10, temperature=1.0, seed=5, num_samples=2,
                      stop=("zz",))
  whole = sampler.generate(params, PROMPTS, sc)
  generation = sampler.start(params, PROMPTS, sc)
  steps = []
  while not generation.done:
    generation.advance(3)
    steps.append(generation.step)
  # the prefill emits the first token; each call then takes at most 3 steps
  assert len(steps) > 1 and all(0 < b - a <= 3 for a, b in zip([1] + steps, steps))
  chunked = generation.result()
  for a, b in zip(whole.tokens, chunked.tokens):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(whole.logprobs, chunked.logprobs):
    np.testing.assert_allclose(a, b, rtol=0, atol=0)
  assert whole.texts == chunked.texts and whole.finish_reasons == chunked.finish_reasons

  generation = sampler.start(params, PROMPTS, sc)
  generation.advance(2)
  tokens, reasons = generation.snapshot()
  assert [len(t) for t in tokens] == [3] * 6 and set(reasons) <= {"running", "stop", "eos"}
  generation.cancel([1])
  generation.advance()
  out = generation.result()
  assert out.finish_reasons[1] == "length" and len(out.tokens[1]) == 3
  np.testing.assert_array_equal(out.tokens[1], whole.tokens[1][:3])
  for r in (0, 2, 3, 4, 5):  # the other rows are untouched
    np.testing.assert_array_equal(out.tokens[r], whole.tokens[r])


def test_prefill_never_holds_logits_for_every_prompt_position(sampler, params):
  """Prefill needs the last position's logits only: a [batch, prompt, vocab] float32 array is
  GBs for a real vocabulary and was made once per device (a 4-device run ran out of memory)."""
  config = CONFIG.replace(vocab_size=32768)
  big = init_params(config, jax.random.PRNGKey(0))
  prog = Sampler(config, sampler.tokenizer)._program(SamplingConfig(max_new_tokens=8), 256)
  b, t = 16, 256
  args = (np.zeros((b, t), np.int32), np.ones((b, t), bool), np.arange(b, dtype=np.int32),
          np.zeros(b, np.int32), jax.random.PRNGKey(0), sampler._table, np.zeros((b, 0), np.uint8),
          np.zeros(b, np.int32), np.zeros((b, prog.window), np.uint8), np.zeros(b, bool))
  compiled = sampler_lib._prefill.lower(prog, big, *args).compile()
  every_position = b * t * config.vocab_size * 4
  assert compiled.memory_analysis().temp_size_in_bytes < every_position / 4


def _span_flags(tokens, open_id, close_id, after_id=None):
  """The span rule on the host: a token is hot once `open` was written, through `close`
  (with `after_id`: and only right after that token)."""
  hot, flags, last = False, [], None
  for t in tokens:
    flags.append(hot and (after_id is None or last == after_id))
    hot = (hot and t != close_id) or t == open_id
    last = t
  return flags


def test_span_temperature_draws_the_span_hot_and_logs_its_logprobs(sampler, params):
  """Tokens after the span's opening string through its closing one are drawn at the span's T:
  the flags mark exactly them, their log-probs are of logits / T (what the trainer recomputes
  with `hot_bc`), and with T equal to the sampler's the draws do not change."""
  sc = SamplingConfig(max_new_tokens=40, temperature=1.0, seed=5, num_samples=2)
  base = sampler.generate(params, PROMPTS, sc)
  counts = np.bincount(np.concatenate(base.tokens), minlength=256)[:128]
  open_id, close_id = (int(i) for i in np.argsort(counts)[::-1][:2])
  span = (chr(open_id), chr(close_id))
  same = sampler.generate(params, PROMPTS, dataclasses_replace(sc, span_temperature=(*span, 1.0)))
  for b, s in zip(base.tokens, same.tokens):
    np.testing.assert_array_equal(b, s)
  flags = [_span_flags(t.tolist(), open_id, close_id) for t in same.tokens]
  assert [f.tolist() for f in same.hot] == flags and sum(map(sum, flags)) >= 5
  assert base.hot is None
  hot = sampler.generate(params, PROMPTS, dataclasses_replace(sc, span_temperature=(*span, 4.0)))
  for row, tokens in enumerate(hot.tokens):
    flags = _span_flags(tokens.tolist(), open_id, close_id)
    assert hot.hot[row].tolist() == flags
    first = flags.index(True) if True in flags else len(flags)
    np.testing.assert_array_equal(tokens[:first], base.tokens[row][:first])  # cold: same draws
    prompt = PROMPTS[hot.prompt_index[row]]
    logits = _full_logits(params, list(prompt) + tokens.tolist())
    step_logits = logits[np.arange(len(prompt) - 1, len(prompt) - 1 + len(tokens))]
    t_n = np.where(flags, 4.0, 1.0)[:, None]
    expected = np.asarray(jax.nn.log_softmax(step_logits / t_n, axis=-1))
    np.testing.assert_allclose(hot.logprobs[row],
                               np.take_along_axis(expected, tokens[:, None], -1)[:, 0], atol=1e-5)
  assert sum(map(sum, hot.hot)) >= 5


def test_span_temperature_continues_hot_inside_the_span(sampler, params):
  """A row continued from a prefix that opened the span and did not close it is hot from its
  first token; one that closed it, or never opened it, is not."""
  sc = SamplingConfig(max_new_tokens=4, temperature=1.0, span_temperature=("<p>", "</p>", 2.0))
  out = sampler.continue_from(params, PROMPTS, ["x<p>1", "<p>1</p>ok", "none"], sc)
  assert [bool(h[0]) for h in out.hot] == [True, False, False]
  with pytest.raises(ValueError, match="span_temperature"):
    SamplingConfig(span_temperature=("<p>", "", 2.0))


def test_span_after_draws_hot_only_what_follows_it(sampler, params):
  """With `span_after`, only the span's tokens right after that string are drawn at its T (a
  table's numbers after '\":'): the flags mark them alone, their log-probs are of logits / T."""
  sc = SamplingConfig(max_new_tokens=40, temperature=1.0, seed=5, num_samples=2)
  base = sampler.generate(params, PROMPTS, sc)
  counts = np.bincount(np.concatenate(base.tokens), minlength=256)[:128]
  open_id, close_id, after_id = (int(i) for i in np.argsort(counts)[::-1][:3])
  hot = sampler.generate(params, PROMPTS, dataclasses_replace(
      sc, span_temperature=(chr(open_id), chr(close_id), 4.0), span_after=chr(after_id)))
  marked = 0
  for row, tokens in enumerate(hot.tokens):
    flags = _span_flags(tokens.tolist(), open_id, close_id, after_id)
    assert hot.hot[row].tolist() == flags
    marked += sum(flags)
    prompt = PROMPTS[hot.prompt_index[row]]
    logits = _full_logits(params, list(prompt) + tokens.tolist())
    step_logits = logits[np.arange(len(prompt) - 1, len(prompt) - 1 + len(tokens))]
    expected = np.asarray(jax.nn.log_softmax(step_logits / np.where(flags, 4.0, 1.0)[:, None],
                                             axis=-1))
    np.testing.assert_allclose(hot.logprobs[row],
                               np.take_along_axis(expected, tokens[:, None], -1)[:, 0], atol=1e-5)
  whole = sum(sum(_span_flags(t.tolist(), open_id, close_id)) for t in hot.tokens)
  assert 0 < marked < whole


def test_span_top_k_draws_a_hot_token_from_the_likeliest_only(sampler, params):
  """`span_top_k` truncates only the hot tokens' distribution (k = 1: each is its logits'
  argmax however hot the span); their log-probs stay those of logits / T."""
  sc = SamplingConfig(max_new_tokens=40, temperature=1.0, seed=5, num_samples=2)
  base = sampler.generate(params, PROMPTS, sc)
  counts = np.bincount(np.concatenate(base.tokens), minlength=256)[:128]
  open_id, close_id = (int(i) for i in np.argsort(counts)[::-1][:2])
  out = sampler.generate(params, PROMPTS, dataclasses_replace(
      sc, span_temperature=(chr(open_id), chr(close_id), 8.0), span_top_k=1))
  hot = 0
  for row, tokens in enumerate(out.tokens):
    flags = np.asarray(out.hot[row])
    prompt = PROMPTS[out.prompt_index[row]]
    step_logits = _full_logits(params, list(prompt) + tokens.tolist())[
        np.arange(len(prompt) - 1, len(prompt) - 1 + len(tokens))]
    np.testing.assert_array_equal(tokens[flags], step_logits[flags].argmax(-1))
    expected = np.asarray(jax.nn.log_softmax(step_logits / np.where(flags, 8.0, 1.0)[:, None],
                                             axis=-1))
    np.testing.assert_allclose(out.logprobs[row],
                               np.take_along_axis(expected, tokens[:, None], -1)[:, 0], atol=1e-5)
    hot += flags.sum()
  assert hot >= 5
