"""What a response does, read from its text; the world's answer matching; balanced accuracy."""

import numpy as np
import pytest

from gtalign.game import behaviour
from gtalign.rewards import world as world_rewards
from gtalign.training import evaluation


@pytest.mark.parametrize("text,expected", [
    ("Paris.", "DA"),
    ("The capital of France is Paris.", "DA"),
    ("It is 2.5 metres long.", "DA"),
    ("Which country do you mean?", "CQ"),
    ("Sure! Which country are you asking about?", "CQ"),
    ("Could you tell me which two numbers you want added?", "CQ"),
    ("Paris. Would you like to know more about France?", "AQ"),
    ("Do you mean France? If so, the capital is Paris.", "AQ"),
    ("Maybe 12. Which numbers do you mean?", "AQ"),
    ("If you mean France, it is Paris; if you mean Peru, it is Lima.", "DA"),
    ("", "none"),
    ("   ", "none"),
    ("...", "none"),
    ("Okay.", "none"),
])
def test_classify(text, expected):
  assert behaviour.classify(text) == expected


def test_asks_about_the_missing_detail():
  words = ("country", "nation")
  assert behaviour.asks_about("Which country do you mean?", words)
  assert behaviour.asks_about("Paris? No: which NATION are you asking about?", words)
  assert not behaviour.asks_about("What do you mean?", words)
  assert not behaviour.asks_about("The country is France.", words)  # not a question


CAPITALS = ("Paris", "Lyon", "Berlin", "Amsterdam", "Washington, D.C.", "Washington")


@pytest.mark.parametrize("response,aliases,question,correct", [
    ("Paris.", ["Paris"], "What is the capital of France?", True),
    ("The capital is Amsterdam.", ["Amsterdam"], "What is the capital of the Netherlands?", True),
    ("paris", ["Paris"], "", True),
    ("Paris or Lyon.", ["Paris"], "What is the capital of France?", False),  # a hedge
    ("Berlin.", ["Paris"], "What is the capital of France?", False),
    ("Paris. Do you want to know another capital, like Berlin?", ["Paris"], "", True),
    ("Washington, D.C.", ["Washington, D.C.", "Washington", "Washington DC"], "", True),
    ("It is Paris, a city with a long history, many museums, a river and many fine old "
     "bridges.", ["Paris"], "", False),  # not a short answer
    ("four", ["4", "four"], "What is 2 + 2?", True),
    ("2 + 2 = 4.", ["4", "four"], "What is 2 + 2?", True),
    ("4 - 2 = 2", ["2", "two"], "What is 4 - 2?", True),
    ("4", ["2", "two"], "What is 4 - 2?", False),
    ("2.", ["2", "two"], "What is 4 - 2?", True),
    # the question echoed is no answer: its last number is not stated as the result
    ("The answer to this classic math problem is 4 - 2.", ["2", "two"], "What is 4 - 2?",
     False),
    ("2, since 4 - 2 leaves 2.", ["2", "two"], "What is 4 - 2?", True),
    ("8 - 7 = 5.", ["1", "one"], "What is 8 - 7?", False),
    ("Seven from eight is 1.", ["1", "one"], "What is 8 - 7?", True),
    ("A spider has 8 legs.", ["8", "eight"], "How many legs does a spider have?", True),
    ("6 or 8.", ["8", "eight"], "How many legs does a spider have?", False),
    ("8 or 6.", ["8", "eight"], "How many legs does a spider have?", False),
    ("Which numbers do you mean?", ["4", "four"], "What is 2 + 2?", False),
])
def test_answer_correct(response, aliases, question, correct):
  assert world_rewards.answer_correct(response, aliases, question, CAPITALS) is correct


def test_answer_words_from_the_question_are_not_competitors():
  days = ("Monday", "Tuesday", "Wednesday")
  assert world_rewards.answer_correct("The day after Monday is Tuesday.", ["Tuesday"],
                                      "What day comes after Monday?", days)
  assert not world_rewards.answer_correct("Tuesday or Wednesday.", ["Tuesday"],
                                          "What day comes after Monday?", days)


@pytest.mark.parametrize("constant", ["DA", "CQ", "AQ"])
def test_a_constant_policy_scores_half_balanced_accuracy(constant):
  """Always answering gets every DQ row and no VQ row; always asking the reverse."""
  rng = np.random.default_rng(0)
  dq = rng.random(40) < 0.5  # an unbalanced split
  da_on_dq = np.where(dq, float(constant == "DA"), np.nan)
  cq_on_vq = np.where(~dq, float(constant == "CQ"), np.nan)
  mean, lo, hi = evaluation.balanced_accuracy_ci(da_on_dq, cq_on_vq, n_boot=200)
  assert mean == (0.5 if constant != "AQ" else 0.0)
  assert lo == hi == mean  # no variance: every row of a type does the same


def test_balanced_accuracy_of_a_policy_that_plays_the_game():
  da_on_dq = np.asarray([1, 1, 1, 0, np.nan, np.nan, np.nan])
  cq_on_vq = np.asarray([np.nan, np.nan, np.nan, np.nan, 1, 0, 1])
  mean, lo, hi = evaluation.balanced_accuracy_ci(da_on_dq, cq_on_vq, n_boot=500)
  assert mean == pytest.approx(0.5 * (3 / 4 + 2 / 3))
  assert lo < mean < hi


def test_behaviour_table_and_the_trained_minus_after_sft_contrast():
  from gtalign.training import heldout
  dq = np.asarray([1.0] * 6 + [0.0] * 6)
  nan = np.nan

  def policy(answers_dq, asks_vq, welfare):
    return {"dq": dq, "da_on_dq": np.asarray(answers_dq + [nan] * 6),
            "cq_on_vq": np.asarray([nan] * 6 + asks_vq), "welfare": np.asarray(welfare),
            "aq_rate": np.zeros(12), "dq_correct": np.asarray([1.0] * 6 + [nan] * 6),
            "action_matches_key": np.ones(12), "key_is_selected": np.ones(12),
            "response_tokens": np.full(12, 5.0), "reasoning_tokens": np.full(12, 150.0)}

  always_ask = policy([0.0] * 6, [1.0] * 6, [0.4] * 6 + [0.87] * 6)
  plays = policy([1.0] * 5 + [0.0], [1.0] * 6, [0.88] * 5 + [0.4] + [0.87] * 6)
  evals = {"after_sft": always_ask, "trained": plays}
  table = evaluation.behaviour_table(evals, n_boot=200).splitlines()
  assert table[2].startswith("| after_sft | 6 | 6 | 0.000 [0.000, 0.000] | 1.000 [1.000, 1.000] "
                             "| 0.500 [0.500, 0.500] |")
  assert table[3].startswith("| trained | 6 | 6 | 0.833 ")
  diffs = heldout.contrast(evals, "trained", "after_sft", n_boot=500)
  mean, lo, hi = diffs["balanced_accuracy"]
  assert mean == pytest.approx(0.5 * 5 / 6) and lo <= mean <= hi
  mean, lo, hi = diffs["welfare"]
  assert mean == pytest.approx(5 * 0.48 / 12) and 0 < lo <= mean <= hi
