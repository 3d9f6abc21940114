"""Steered groups (`rl.steer_groups`): edited tables continued, paid for following the edit."""

import numpy as np
import pytest

from gtalign.data import warm_start, world
from gtalign.game import payoff, prompt as prompt_lib, trace
from gtalign.models.tokenizer import load_tokenizer
from gtalign.sampling import continuation
from gtalign.sampling.sampler import SampleOutput, SamplingConfig
from gtalign.training import steer_groups

STYLE = "compact"


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf_path):
  return load_tokenizer(smollm2_gguf_path)


class EditFollower:
  """A sampler stand-in: plans continuations as the real one does; row r's continuation does
  the strategy its edited table selects when `obey(r)`, else answers directly."""

  def __init__(self, tokenizer, rows, obey):
    self.tokenizer, self.rows, self.obey, self.fed = tokenizer, rows, obey, None
    self._bytes = tokenizer.token_bytes()

  def plan(self, prefixes, prefix_tokens=None):
    return continuation.plans(self.tokenizer, self._bytes, prefixes, prefix_tokens)

  def continue_from(self, params, prompts, prefixes, sampling, prompt_indices=None,
                    sample_offsets=None, prefix_tokens=None):
    assert sampling.num_samples == 1 and sample_offsets == list(range(len(prompts)))
    resumes = self.plan(prefixes, prefix_tokens)
    self.fed = prefixes
    texts, tokens = [], []
    for r, (prefix, resume) in enumerate(zip(prefixes, resumes)):
      table = payoff.Bimatrix.from_dict(trace.parse_payoff(
          prefix[prefix.index("<payoff>") + 8:prefix.index(trace.PAYOFF_END)])[0])
      row = "VQ" if "(VQ)" in prefix else "DQ"
      move = payoff.action(payoff.select_in_row(table, row)) if self.obey(r) else "DA"
      whole = warm_start.format_trace(self.rows[r], move, tables="fixed")
      after = whole[whole.index(trace.PAYOFF_END) + len(trace.PAYOFF_END):]
      text = resume.forced.decode() + after
      texts.append(after)
      tokens.append(np.asarray(self.tokenizer.encode(text), np.int32))
    return SampleOutput(tokens=tokens, logprobs=[np.full(len(t), -0.5, np.float32)
                                                 for t in tokens],
                        texts=texts, finish_reasons=["stop"] * len(texts),
                        prompt_index=np.arange(len(texts)), sample_index=np.zeros(len(texts)),
                        prefill_seconds=0.0, decode_seconds=0.0,
                        prefix_tokens=[np.asarray(x.ids, np.int32) for x in resumes])


def test_steered_groups_continue_an_edited_table_and_pay_for_following_it(tokenizer):
  test = world.make_world(seed=0, num_train=0, num_test=12, build_messages=lambda q, s: (
      prompt_lib.build_messages(q, s, style=STYLE)))["test"]
  rows = test[:4]  # two prompts x G = 2, prompt-major
  group, size = [rows[0], rows[0], rows[1], rows[1]], 2
  texts = [warm_start.format_trace(r, "AQ", "four", tables="fixed") for r in group]
  texts[0] = "<thinking>no table"  # the first prompt's first rollout wrote none: its second
  tokens = [tokenizer.encode(t) for t in texts]
  prompts = [tokenizer.encode(prompt_lib.render(tokenizer, r["prompt"])) for r in group]
  kinds = [r["extra_info"]["question_type"] for r in group]
  sampler = EditFollower(tokenizer, [group[1]] * 2 + [group[2]] * 2, obey=lambda r: r % 2 == 0)
  out = steer_groups.steer_groups(sampler, None, prompts, texts, tokens, kinds, groups=2,
                                  num_samples=size, sampling=SamplingConfig(), seed=3)
  assert steer_groups.pick_sources(texts, size, 2) == [1, 2]
  assert len(out.prompts) == len(out.completions) == 4 and len(out.targets) == 2
  # each group continues one edited prefix: the source's prompt, then its trace through the
  # edited </payoff> (its own ids up to the edit), whose table selects the group's target
  for r, prefix in enumerate(sampler.fed):
    source = [1, 1, 2, 2][r]
    target = out.targets[r // size]
    assert out.prompts[r][:len(prompts[source])] == prompts[source]
    table = payoff.Bimatrix.from_dict(trace.parse_payoff(
        prefix[prefix.index("<payoff>") + 8:prefix.index(trace.PAYOFF_END)])[0])
    assert payoff.select_in_row(table, target[:2]) == target
    assert prefix.startswith(texts[source][:texts[source].index("<payoff>")])
  # obeying rows follow (key and response do the edit), the others answer directly: they
  # follow only where the edit asked for DA
  want = [1.0 if r % 2 == 0 or out.targets[r // size].endswith("DA") else 0.0 for r in range(4)]
  assert out.follows.tolist() == want
  # the bytes the sampler forced to heal the cut are not trained; the rest is
  for r, mask in enumerate(out.trained):
    forced = sampler.plan([sampler.fed[r]], [tokens[[1, 1, 2, 2][r]]])[0].forced
    assert mask[0] == (0.0 if forced else 1.0) and mask[-1] == 1.0


def test_steered_rows_join_the_batch_after_the_steps_own_in_groups():
  """The update batch: the step's rows, then each steered group's G rows, with welfare =
  follows, the forced tokens out of the loss, and no reading mask on a steered row."""
  import types
  from gtalign.training import batches, rollout
  own_prompts, own_completions = [[1, 2, 3]] * 2, [[4, 5, 6, 7], [4, 5]]
  steered = steer_groups.SteeredGroups(
      prompts=[[1, 2, 3, 9, 9], [1, 2, 3, 9, 9]], completions=[np.asarray([8, 6, 7]),
                                                               np.asarray([8, 6])],
      logprobs=[np.full(3, -0.2, np.float32), np.full(2, -0.3, np.float32)],
      trained=[np.asarray([0, 1, 1], np.float32), np.asarray([0, 1], np.float32)],
      follows=np.asarray([1.0, 0.0], np.float32), targets=["DQ_CQ"])
  shape = rollout.sequence_shape(own_prompts + steered.prompts,
                                 own_completions + steered.completions)
  local = rollout.sequence_batch(own_prompts, own_completions, 0, shape=shape)
  local.update(old_logp_bc=rollout.completion_array([[-1.0] * 4, [-1.0] * 2], shape[1]),
               user_b=np.asarray([0.3, 0.4], np.float32), llm_b=np.asarray([0.5, 0.6], np.float32),
               reward_valid_b=np.ones(2, np.float32), source_b=np.zeros(2, np.int32),
               reading_mask_bc=np.ones((2, shape[1]), np.float32),
               read_right_b=np.ones(2, np.float32))
  run = types.SimpleNamespace(tokenizer=types.SimpleNamespace(pad_id=0),
                              source_ids={"world": 5})
  out = batches._with_steered(local, steered, run, shape, {"data_source": "world"})
  assert {k: v.shape[0] for k, v in out.items()} == {k: 4 for k in local}
  np.testing.assert_allclose(out["user_b"], [0.3, 0.4, 1.0, 0.0])
  np.testing.assert_allclose(out["llm_b"], [0.5, 0.6, 1.0, 0.0])
  np.testing.assert_array_equal(out["source_b"], [0, 0, 5, 5])
  np.testing.assert_array_equal(out["loss_mask_bc"][2, :4], [0, 1, 1, 0])
  np.testing.assert_array_equal(out["loss_mask_bc"][3, :3], [0, 1, 0])
  np.testing.assert_allclose(out["old_logp_bc"][2, :3], [-0.2] * 3)
  assert out["reading_mask_bc"][2:].sum() == 0 and out["read_right_b"][2:].sum() == 0
  # the steered row reads its prompt (the edited prefix) and predicts the continuation
  assert out["window_start_b"][2] == 4 and list(out["targets_bc"][2, :3]) == [8, 6, 7]
