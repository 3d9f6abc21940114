"""Multi-turn game episodes (gtalign.dialogue): the simulated user, the episode's token layout and
loss mask, its welfare against hand-computed values and the single-turn reward, and the batched
sampler against episode-by-episode generation (a random tiny model, and the real SmolLM2)."""

import dataclasses
import math

import numpy as np
import pytest

from gtalign.data import warm_start, world
from gtalign.dialogue import episodes as ep_lib
from gtalign.dialogue import rollout as dlg_rollout
from gtalign.dialogue import simulator as sim_lib
from gtalign.dialogue import welfare as welfare_lib
from gtalign.game import prompt as prompt_lib
from gtalign.game import trace
from gtalign.game.payoff import select_in_row
from gtalign.models.tokenizer import load_tokenizer
from gtalign.rewards import components, tasks
from gtalign.rewards.judges import make_judge
from gtalign.sampling.sampler import SampleOutput, SamplingConfig
from gtalign.training import rollout

STYLE = "compact"


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf_path):
  return load_tokenizer(smollm2_gguf_path)


@pytest.fixture(scope="module")
def rows():
  test = world.make_world(seed=0, num_train=0, num_test=54, build_messages=lambda q, s: (
      prompt_lib.build_messages(q, s, style=STYLE)))["test"]
  vague = [r for r in test if r["extra_info"]["question_type"] == "VQ"]
  definite = [r for r in test if r["extra_info"]["question_type"] == "DQ"]
  return vague, definite


def _trace(row, strategy, answer=None, kind=None):
  """A warm-start-shaped trace of `row` doing `strategy` (fixed tables: its pick is strict)."""
  if kind:
    row = {**row, "extra_info": {**row["extra_info"], "question_type": kind,
                                 "named": sim_lib.hidden_detail(row)}}
  return warm_start.format_trace(row, strategy, answer, tables="fixed")


class ScriptedSampler:
  """A sampler stand-in whose turn t of every row is `script[t]` (a function of the row's
  prompt index), tokenized with the real tokenizer; what it was fed is recorded."""

  def __init__(self, tokenizer, script):
    self.tokenizer, self.script, self.fed = tokenizer, script, []

  def generate(self, params, prompts, sampling, prompt_indices=None, sample_offsets=None):
    turn = len(self.fed)
    self.fed.append([list(p) for p in prompts])
    rows = [(int(i), int(o) + j) for i, o in zip(prompt_indices, sample_offsets)
            for j in range(sampling.num_samples)]
    texts = [self.script[turn](i) for i, _ in rows]
    tokens = [np.asarray(self.tokenizer.encode(t), np.int32) for t in texts]
    return SampleOutput(tokens=tokens, logprobs=[np.full(len(t), -0.5, np.float32)
                                                 for t in tokens],
                        texts=texts, finish_reasons=["stop"] * len(texts),
                        prompt_index=np.asarray([i for i, _ in rows]),
                        sample_index=np.asarray([j for _, j in rows]),
                        prefill_seconds=0.0, decode_seconds=0.0)


def _episodes(tokenizer, rows, script, max_turns=3, num_samples=1):
  sampler = ScriptedSampler(tokenizer, script)
  prompts = [tokenizer.encode(prompt_lib.render(tokenizer, r["prompt"])) for r in rows]
  found = ep_lib.run_episodes(sampler, None, rows, prompts, sim_lib.WorldUser(),
                              max_turns=max_turns, style=STYLE,
                              sampling=SamplingConfig(num_samples=num_samples,
                                                      stop=(trace.RESPONSE_END,)))
  return found, sampler, prompts


def test_the_world_user_gives_the_detail_only_to_a_question_about_it(rows):
  vague, definite = rows
  row = vague[0]
  info = row["extra_info"]
  slot = warm_start.category(info["category"]).missing_slot
  user = sim_lib.WorldUser()
  ask = lambda row, q: sim_lib.Ask(row, ({"role": "user", "content": "?"},
                                         {"role": "assistant", "content": q}))
  detail = user.reply(ask(row, f"Which {slot} do you mean?"))
  assert detail.kind == sim_lib.DETAIL
  assert detail.text == f"I mean {sim_lib.hidden_detail(row)}. {info['single_turn_prompt']}"
  fact = {f.fact_id: f for f in world.facts()}[info["fact_id"]]
  assert world.named(fact) in detail.text and fact.answer not in detail.text.split(". ", 1)[0]
  unknown = user.reply(ask(row, "Do you like it?"))
  assert unknown.kind == sim_lib.UNKNOWN and unknown.text.startswith("I don't know")
  assert world.strip_lead_in(info["question"]) in unknown.text
  repeat = user.reply(ask(definite[0], "Which one do you mean?"))
  assert repeat.kind == sim_lib.REPEAT
  assert repeat.text == "As I said: " + world.strip_lead_in(definite[0]["extra_info"]["question"])


def test_the_loss_mask_covers_the_assistant_ids_and_nothing_of_the_user_turns(tokenizer, rows):
  vague, definite = rows
  row = vague[0]
  script = [lambda i: _trace(row, "CQ"),
            lambda i: _trace(row, "DA", world_answer(row), kind="DQ")]
  (episode,), sampler, prompts = _episodes(tokenizer, [row], script)
  assert episode.ended == ep_lib.ANSWERED and len(episode.turns) == 2
  first = episode.turns[0]
  assert first.reply_kind == sim_lib.DETAIL and episode.turns[1].reply is None
  # turn 2 was fed the prompt, turn 1's own ids and the user turn, never re-encoded
  assert sampler.fed[1] == [prompts[0] + list(first.tokens) + list(first.reply_ids)]
  reply_text = tokenizer.decode(list(first.reply_ids), skip_special_tokens=False)
  assert reply_text.startswith("<|im_end|>\n<|im_start|>user\n")
  assert reply_text.endswith("<|im_end|>\n<|im_start|>assistant\n")
  assert prompt_lib.instruction(first.reply, STYLE) in reply_text
  batch = dlg_rollout.episode_batch([episode], tokenizer.pad_id)
  mask, targets = batch["loss_mask_bc"][0], batch["targets_bc"][0]
  n1, nu, n2 = len(first.tokens), len(first.reply_ids), len(episode.turns[1].tokens)
  expected = np.zeros_like(mask)
  expected[:n1] = 1
  expected[n1 + nu:n1 + nu + n2] = 1
  np.testing.assert_array_equal(mask, expected)
  np.testing.assert_array_equal(targets[mask == 1], np.concatenate(
      [first.tokens, episode.turns[1].tokens]))
  np.testing.assert_array_equal(targets[n1:n1 + nu], first.reply_ids)
  # the sampler's log-probs sit on the assistant's ids, 0 on the user's
  np.testing.assert_array_equal(batch["old_logp_bc"][0][mask == 1], -0.5)
  assert not batch["old_logp_bc"][0][n1:n1 + nu].any()
  # every id of the row is the model's input in order: prompt, then the completion
  width = len(prompts[0]) + n1 + nu + n2 - 1
  np.testing.assert_array_equal(batch["inputs_bt"][0][:width],
                                (prompts[0] + episode.completion_ids())[:-1])


def world_answer(row) -> str:
  return row["extra_info"]["answer"] + "."


def _hand_welfare(episode, a):
  """U and L by the documented formula, each term computed from its definition here."""
  turns = episode.turns
  words = lambda s: len(s.split())
  r_u = np.mean([components.length_logistic(words(t.parsed.response), 20, 500) for t in turns])
  r_l = np.mean([components.length_logistic(words(t.parsed.text), 500, 1000) for t in turns])
  q_r = np.mean([math.exp(-len(t.parsed.reasoning) / 500) for t in turns])
  p = np.mean([components.payoff_distinctness(t.parsed.payoff) for t in turns])
  user = 1e-4 + 0.5 * a + 0.2 * r_u + 0.3 * q_r
  llm = 1e-4 + 0.2 * 1.0 + 0.2 * p + 0.4 * a + 0.2 * r_l + 0.2 * 1.0  # format and C are 1
  return user, llm


def test_a_scripted_dialogue_scores_the_hand_computed_welfare(tokenizer, rows):
  vague, _ = rows
  row = vague[1]
  # ask about the wrong thing, then the right one, then answer right: A = 1.0 - 2 x 0.2
  script = [lambda i: _trace(row, "CQ").replace(
                "<response>Which", "<response>Is it big? Which").replace(
                f"{warm_start.category(row['extra_info']['category']).missing_slot} do you mean",
                "colour do you like"),
            lambda i: _trace(row, "CQ"),
            lambda i: _trace(row, "DA", world_answer(row), kind="DQ")]
  (episode,), _, _ = _episodes(tokenizer, [row], script)
  assert [t.reply_kind for t in episode.turns] == [sim_lib.UNKNOWN, sim_lib.DETAIL, ""]
  assert episode.ended == ep_lib.ANSWERED
  scored = welfare_lib.score_world(episode)
  assert scored.components["answer"] == pytest.approx(0.6)
  assert scored.components["wrong_detail"] == 1 and scored.components["correct"] == 1
  user, llm = _hand_welfare(episode, 0.6)
  assert scored.user == pytest.approx(user, abs=1e-9)
  assert scored.llm == pytest.approx(llm, abs=1e-9)
  assert scored.welfare == pytest.approx(math.sqrt(user * llm))


@pytest.mark.parametrize("moves,answer", [
    (("DA",), 0.0),  # a guess at a vague question: worth nothing unless right
    (("CQ", "DA"), 0.8),  # ask for the detail, then answer right
    (("CQ", "CQ", "CQ"), 0.0),  # never answers: the dialogue ends on a question
    (("AQ",), 0.0)])
def test_the_vague_dialogue_pays_asking_then_answering(tokenizer, rows, moves, answer):
  vague, _ = rows
  row = vague[2]
  def turn(move, k):
    if move == "CQ":
      return lambda i: _trace(row, "CQ")
    if k == 0:  # before the detail: a guess at another fact of the category
      wrong = next(a for a in world.category_answers(row["extra_info"]["category"])
                   if a != row["extra_info"]["answer"] and not a.isdigit())
      return lambda i: _trace(row, move, wrong + ".")
    return lambda i: _trace(row, move, world_answer(row), kind="DQ")
  (episode,), _, _ = _episodes(tokenizer, [row], [turn(m, k) for k, m in enumerate(moves)])
  assert len(episode.turns) == len(moves)
  assert welfare_lib.score_world(episode).components["answer"] == pytest.approx(answer)


@pytest.mark.parametrize("strategy", ["DA", "AQ", "CQ"])
@pytest.mark.parametrize("misread,unpriced,hedge", [(0.0, 0.0, 1.0), (1.0, 1.0, 1.0),
                                                   (0.0, 0.0, 0.5)])
def test_a_one_turn_definite_dialogue_scores_what_the_single_turn_reward_gives(
    tokenizer, rows, strategy, misread, unpriced, hedge):
  _, definite = rows
  row = definite[0]
  text = _trace(row, strategy, world_answer(row))
  (episode,), _, _ = _episodes(tokenizer, [row], [lambda i: text], max_turns=1)
  single = rollout.score_rows([row], [text], make_judge("rule"), variant="main",
                              parse_mode="strict", on_judge_failure="mask",
                              world_misread=misread, world_unpriced=unpriced,
                              world_hedge=hedge).results[0]
  dialogue = welfare_lib.score_world(episode, misread=misread, unpriced=unpriced, hedge=hedge)
  assert (dialogue.user, dialogue.llm) == pytest.approx((single.user, single.llm), abs=1e-12)
  assert single.user > tasks.EPSILON


def test_a_broken_last_turn_scores_zero_and_a_failed_simulator_ends_the_episode(tokenizer, rows):
  vague, _ = rows
  row = vague[0]
  (episode,), _, _ = _episodes(tokenizer, [row], [lambda i: _trace(row, "CQ"),
                                                   lambda i: "<thinking>oops"])
  assert episode.ended == ep_lib.NO_RESPONSE
  scored = welfare_lib.score_world(episode)
  assert (scored.user, scored.llm) == (0.0, 0.0)

  class Silent:
    def replies(self, asks):
      return [sim_lib.Reply(None) for _ in asks]
  sampler = ScriptedSampler(tokenizer, [lambda i: _trace(row, "CQ")])
  prompt = tokenizer.encode(prompt_lib.render(tokenizer, row["prompt"]))
  (episode,) = ep_lib.run_episodes(sampler, None, [row], [prompt], Silent(), max_turns=3,
                                   style=STYLE, sampling=SamplingConfig())
  assert episode.ended == ep_lib.SIMULATOR_FAILED and len(sampler.fed) == 1


def _tiny(tokenizer):
  import jax
  from gtalign.models.config import get_preset
  from gtalign.models.transformer import init_params
  from gtalign.sampling.sampler import Sampler
  config = get_preset("tiny-llama").replace(vocab_size=tokenizer.vocab_size,
                                            max_position_embeddings=4096, dtype="float32")
  return Sampler(config, tokenizer), init_params(config, jax.random.PRNGKey(3))


def _batched_equals_one_by_one(sampler, params, tokenizer, rows, sampling):
  prompts = [tokenizer.encode(prompt_lib.render(tokenizer, r["prompt"])) for r in rows]
  every = ("DA", "CQ", "AQ", "none")  # a reply to anything: every episode runs all its turns
  together = ep_lib.run_episodes(sampler, params, rows, prompts, sim_lib.WorldUser(),
                                 max_turns=3, style=STYLE, sampling=sampling, reply_to=every)
  g = sampling.num_samples
  for r, episode in enumerate(together):
    i, j = r // g, r % g
    (alone,) = ep_lib.run_episodes(sampler, params, [rows[i]], [prompts[i]],
                                   sim_lib.WorldUser(), max_turns=3, style=STYLE,
                                   sampling=dataclasses.replace(sampling, num_samples=1),
                                   prompt_indices=[i], sample_offsets=[j], reply_to=every)
    assert len(alone.turns) == len(episode.turns) == 3
    for a, b in zip(alone.turns, episode.turns):
      np.testing.assert_array_equal(a.tokens, b.tokens)
      assert a.reply_ids == b.reply_ids and a.text == b.text
      np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
  return together


def test_batched_episodes_equal_episode_by_episode_generation_on_a_tiny_model(tokenizer, rows):
  vague, definite = rows
  sampler, params = _tiny(tokenizer)
  # one prompt width for every call (a row's floats do not depend on the padding around it)
  sampling = SamplingConfig(max_new_tokens=24, temperature=1.0, num_samples=2, seed=5,
                            stop=(trace.RESPONSE_END,), include_stop_str=True,
                            prompt_buckets=(1024,))
  together = _batched_equals_one_by_one(sampler, params, tokenizer, [vague[0], definite[0]],
                                        sampling)
  assert len({tuple(e.turns[1].tokens) for e in together}) == 4  # samples and turns differ


def test_batched_episodes_equal_one_by_one_on_the_real_smollm2(smollm2_gguf_path, rows):
  """The real weights and tokenizer: each turn ends its trace, the user's reply follows, and
  the next turn continues from the ids the model wrote."""
  from gtalign.models.checkpoints import load_pretrained
  from gtalign.sampling.sampler import Sampler
  config, params, tokenizer = load_pretrained(smollm2_gguf_path, dtype="float32")
  vague, definite = rows
  sampling = SamplingConfig(max_new_tokens=32, temperature=0.0, stop=(trace.RESPONSE_END,),
                            include_stop_str=True, prompt_buckets=(1024,))
  together = _batched_equals_one_by_one(Sampler(config, tokenizer), params, tokenizer,
                                        [vague[0], definite[0]], sampling)
  for e in together:
    assert e.ids()[:len(e.prompt)] == list(e.prompt)
    assert len(e.ids()) == len(e.prompt) + sum(len(t.tokens) + len(t.reply_ids)
                                               for t in e.turns)


def test_sft_dialogue_rows_mask_the_users_reply_and_name_no_strategy_before_the_table(
    tokenizer):
  import types
  from gtalign.training import batches
  build = lambda q, s: prompt_lib.build_messages(q, s, style=STYLE)
  warm = warm_start.warm_rows(0, 80, build_messages=build)
  dialogue = [r for r in warm if warm_start.is_dialogue(r, 0.5)]
  assert 0 < len(dialogue) < sum(r["extra_info"]["question_type"] == "VQ" for r in warm)
  assert not any(warm_start.is_dialogue(r, 0.5) for r in warm
                 if r["extra_info"]["question_type"] == "DQ")
  config = types.SimpleNamespace(
      sft=types.SimpleNamespace(dialogues=0.5, warm_start="random", tables="fixed",
                                chosen_first=False, response_weight=5.0, draw="visit",
                                hedge=0.6, rows="both", scan="copy"),
      data=types.SimpleNamespace(prompt_style=STYLE))
  from gtalign.training import distill
  draw = warm_start.draw_of(config.sft)  # the default's: redrawn, both rows priced
  answers = {q: f"Answer number {i}." for i, q in enumerate(distill.questions(warm, "random",
                                                                             0.5, draw))}
  assert all(warm_start.plain_question(r) in answers for r in dialogue)
  run = types.SimpleNamespace(config=config, tokenizer=tokenizer, warm_answers=answers)
  row = dialogue[0]
  turns = warm_start.dialogue_turns(row, "random", answers, "fixed", False, draw=draw)
  (first, reply), (second, none) = turns
  assert none is None and reply == warm_start.detail_reply(row)
  for text in (first, second):
    parsed = trace.parse_trace(text)
    assert parsed.valid and parsed.format_ok
    head = text[:text.index(trace.PAYOFF_START)]
    assert not any(k in head for k in ("DA", "CQ", "AQ", "direct", "clarif"))
    # the table decides the key: its pick in the row of the type read
    assert select_in_row(parsed.payoff, parsed.chosen_key[:2]) == parsed.chosen_key
  assert trace.parse_trace(first).chosen_key == "VQ_CQ"
  assert trace.parse_trace(second).chosen_key in ("DQ_DA", "DQ_AQ")
  ids, weights = batches.sft_completion(run, row)
  eos = tokenizer.eos_ids[0]
  user = ep_lib.user_turn_ids(tokenizer, reply, True, STYLE)
  n1 = len(tokenizer.encode(first)) + 1
  assert ids[:n1] == tokenizer.encode(first) + [eos]
  assert tuple(ids[n1:n1 + len(user)]) == user and not weights[n1:n1 + len(user)].any()
  assert ids[n1 + len(user):] == tokenizer.encode(second) + [eos]
  assert (weights[:n1] > 0).all() and (weights[n1 + len(user):] > 0).all()
  assert set(weights.tolist()) == {0.0, 1.0, 5.0}


@pytest.mark.parametrize("overrides,words", [
    ({"rl.max_turns": 0}, ["rl.max_turns=0"]),
    ({"rl.max_turns": 3, "rl.algorithm": "ppo", "rl.advantage": "gae"},
     ["rl.max_turns=3", "grpo", "ppo"]),
    ({"rl.max_turns": 2, "rl.simulator": "gpt"}, ["rl.simulator='gpt'", "http"]),
    ({"eval.dialogue_turns": 2, "rl.simulator": "ftp://x"}, ["rl.simulator='ftp://x'"]),
    ({"rl.max_turns": 2, "rl.table_temperature": 2.0},
     ["rl.table_temperature=2.0", "rl.max_turns=2"]),
    ({"rl.table_temperature": -1.0}, ["rl.table_temperature=-1.0", ">= 0"]),
    ({"rl.table_numbers": "first"}, ["rl.table_numbers='first'", "'lead'"]),
    ({"rl.table_temperature": 2.0, "rl.temperature": 0.0}, ["rl.table_temperature=2.0",
                                                            "rl.temperature"])])
def test_bad_dialogue_options_are_one_line_naming_the_key(overrides, words):
  from configs import grpo
  from gtalign.training import run as run_lib
  from gtalign.utils.errors import InvalidInput
  config = grpo.get_config("tiny")
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  with pytest.raises(InvalidInput) as info:
    run_lib.check_options(config)
  assert "\n" not in str(info.value) and all(w in str(info.value) for w in words)


def test_the_llm_user_is_told_the_intent_of_real_ambig_qa_and_abg_coqa_rows(gtalign_data_dir):
  from gtalign.data import gtalign as gtalign_data
  ambig = gtalign_data.read_rows(gtalign_data_dir, "ambig_qa", "test")
  several = next(r for r in ambig if str(r["reward_model"]["ground_truth"]).startswith(
      "multipleQAs###"))
  told = sim_lib.intent(several)
  assert "(the answer you expect: " in told and "Meaning" not in told
  assert told.split(" (the answer")[0] in several["reward_model"]["ground_truth"]
  coqa = gtalign_data.read_rows(gtalign_data_dir, "abg-coqa", "test")[0]
  question = coqa["extra_info"]["single_turn_prompt"].rsplit("Question:", 1)[1].strip()
  assert question in sim_lib.intent(coqa) and "passage" in sim_lib.intent(coqa)


def test_the_policy_loss_reads_no_user_token_of_an_episode(tokenizer, rows):
  """The jitted objective's loss on an episode batch: changing what the batch says about the
  user's ids (their sampler log-probs) changes nothing; changing an assistant id's does."""
  import jax
  import jax.numpy as jnp
  from gtalign.models.config import get_preset
  from gtalign.models.transformer import init_params
  from gtalign.rl import objective
  vague, _ = rows
  row = vague[0]
  script = [lambda i: _trace(row, "CQ"),
            lambda i: _trace(row, "DA", world_answer(row), kind="DQ")]
  (episode,), _, _ = _episodes(tokenizer, [row], script)
  batch = dlg_rollout.episode_batch([episode], tokenizer.pad_id)
  batch.update(adv_b=np.asarray([1.0], np.float32), reward_valid_b=np.ones(1, np.float32))
  config = get_preset("tiny-llama").replace(vocab_size=tokenizer.vocab_size,
                                            max_position_embeddings=4096, dtype="float32")
  params = init_params(config, jax.random.PRNGKey(0))
  cfg = objective.ObjectiveConfig(group_size=1, num_sources=1)
  loss = jax.jit(lambda b: objective.policy_loss(config, cfg, params, b)[:2])
  base = loss({k: jnp.asarray(v) for k, v in batch.items()})
  user = (batch["loss_mask_bc"] == 0)
  user[0, len(episode.completion_ids()):] = False
  assert user.sum() == len(episode.turns[0].reply_ids)
  moved = dict(batch, old_logp_bc=np.where(user, -7.0, batch["old_logp_bc"]).astype(np.float32))
  assert [float(x) for x in loss(moved)] == [float(x) for x in base]
  assistant = dict(batch, old_logp_bc=batch["old_logp_bc"].copy())
  assistant["old_logp_bc"][0, len(episode.turns[0].tokens) + user.sum() + 1] = -7.0
  assert float(loss(assistant)[0]) != float(base[0])
  assert float(base[1]) == sum(len(t.tokens) for t in episode.turns)  # tokens counted
