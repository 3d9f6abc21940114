"""A built-in task set for offline runs: short-answer facts (DQ) and vague variants of them (VQ).

The default run needs data that a 135M instruct model can sometimes get right, a rule judge can
score without a server, and where the game's two question types both occur: a definite question
(DQ) should be answered directly, while a vague one (VQ) lacks the key slot ("What is the
capital?"), so a clarifying question is the welfare-maximising move. Rows have the GTAlign row
shape (see `gtalign.data.gtalign.read_rows`), so the same reward and sampling code handles both.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from typing import Any, Callable

DATA_SOURCE = "world"
AMBIGUOUS = "ambiguous"  # VQ ground truth: the right move is to ask, not to answer

_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                 "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()


@dataclasses.dataclass(frozen=True)
class Fact:
  fact_id: str
  category: str
  question: str  # the definite question, first template
  answer: str
  aliases: tuple[str, ...]  # accepted spellings of the answer, the answer first
  slots: tuple[tuple[str, Any], ...]  # template fields, e.g. (("a", 7), ("b", 5))


@dataclasses.dataclass(frozen=True)
class _Category:
  dq_templates: tuple[str, ...]  # formatted with the fact's slots
  vq_questions: tuple[str, ...]  # the same question with its key slot missing (split by seed)
  missing_slot: str  # what a good clarifying question asks for
  slot_words: tuple[str, ...]  # words that name the missing slot in a clarifying question


_CATEGORIES = {
    "capital": _Category(
        ("What is the capital of {x}?", "Which city is the capital of {x}?"),
        ("What is the capital?", "Which city is the capital of the country?",
         "What's the capital city there?", "Can you tell me the capital of that country?",
         "Name the capital, please.", "What is the capital of this place?",
         "Which city is its capital?", "Do you know what the capital is?"),
        "country", ("country", "countries", "nation", "place")),
    "add": _Category(
        ("What is {a} + {b}?", "What is {a} plus {b}?"),
        ("What is the sum of the two numbers?", "What do I get if I add them?",
         "What do they add up to?", "Can you add these two numbers for me?",
         "What is the total of the numbers?", "What is one plus the other?",
         "How much do the two numbers make together?", "What is their sum?"),
        "numbers", ("number", "numbers", "values")),
    "subtract": _Category(
        ("What is {a} - {b}?", "What is {a} minus {b}?"),
        ("What is the difference between the two numbers?",
         "What is left if I subtract one from the other?",
         "What do I get if I take the smaller one away?", "Can you subtract them for me?",
         "What is the bigger number minus the smaller one?",
         "How much is one number minus the other?", "What remains after the subtraction?",
         "What is their difference?"),
        "numbers", ("number", "numbers", "values")),
    "colour": _Category(
        ("What colour is {x}?", "What is the colour of {x}?"),
        ("What colour is it?", "What is the colour of that thing?", "Which colour does it have?",
         "Can you tell me its colour?", "What colour would that be?",
         "What shade is the thing?", "What colour is this one?",
         "Do you know what colour it is?"),
        "thing", ("thing", "things", "object", "item")),
    "opposite": _Category(
        ("What is the opposite of {x}?", "What is the opposite of the word {x}?"),
        ("What is the opposite of the word?", "What is its opposite?",
         "Which word means the opposite?", "Can you give me the opposite of that word?",
         "What is the antonym?", "What word is the reverse of it?",
         "What's the opposite of this one?", "Tell me the opposite, please."),
        "word", ("word", "words")),
    "next_day": _Category(
        ("What day comes after {x}?", "Which day of the week follows {x}?"),
        ("What day comes after that day?", "Which day of the week comes next?",
         "What is the next day?", "Which day follows it?", "What day is after this one?",
         "Can you tell me the following day?", "What comes the day after?",
         "Which weekday is next?"),
        "day", ("day", "days", "weekday")),
    "next_month": _Category(
        ("What month comes after {x}?", "Which month follows {x}?"),
        ("What month comes after that one?", "Which month comes next?",
         "What is the following month?", "Which month follows it?",
         "What month is after this one?", "Can you tell me the next month?",
         "What comes after that month?", "Which month is next in the year?"),
        "month", ("month", "months")),
    "sound": _Category(
        ("What sound does {x} make?", "What noise does {x} make?"),
        ("What sound does it make?", "What noise does the animal make?", "What does it say?",
         "How does that animal sound?", "Which sound does this animal make?",
         "What noise does it make?", "Can you tell me the sound it makes?",
         "What call does the animal have?"),
        "animal", ("animal", "animals", "creature", "pet")),
    "legs": _Category(
        ("How many legs does {x} have?",),
        ("How many legs does it have?", "How many legs does the animal have?",
         "How many legs are there on it?", "Can you tell me its number of legs?",
         "How many legs does that creature have?", "What is the number of legs it has?",
         "How many feet does it walk on?", "How many legs has this one got?"),
        "animal", ("animal", "animals", "creature", "pet")),
}
VQ_TEST_PHRASINGS = 3  # per category, held out of training (the rest are for training)

# Openings put before either type of question, so that prompts are many and distinct (SFT and RL
# never share one) and an opening is no cue to the type.
LEAD_INS = ("", "Quick question: ", "Hi! ", "Hello. ", "I need some help. ", "One more thing: ",
            "Sorry to bother you. ", "Hey there. ")


def category_slot_words(category: str) -> tuple[str, ...]:
  return _CATEGORIES[category].slot_words


def category_answers(category: str) -> tuple[str, ...]:
  """Every accepted answer of a category: the candidates a hedging reply might list."""
  return tuple(dict.fromkeys(a for f in facts() if f.category == category for a in f.aliases))


# (country as written in the question, capital, other accepted answers)
_CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"),
    ("the United Kingdom", "London"), ("Egypt", "Cairo"), ("Greece", "Athens"),
    ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"),
    ("Austria", "Vienna"), ("Hungary", "Budapest"), ("the Czech Republic", "Prague"),
    ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"), ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
    ("Thailand", "Bangkok"), ("South Korea", "Seoul"), ("India", "New Delhi", "Delhi"),
    ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Cuba", "Havana"), ("Iran", "Tehran"),
    ("Indonesia", "Jakarta"), ("the Philippines", "Manila"),
    ("the United States", "Washington, D.C.", "Washington", "Washington DC"),
)
_COLOURS = (
    ("a banana", "yellow"), ("grass", "green"), ("snow", "white"), ("coal", "black"),
    ("a clear daytime sky", "blue"), ("a ripe strawberry", "red"), ("a ripe tomato", "red"),
    ("a lemon", "yellow"), ("milk", "white"), ("a carrot", "orange"), ("a pumpkin", "orange"),
    ("milk chocolate", "brown"), ("a crow", "black"), ("a lime", "green"),
    ("an elephant", "grey", "gray"), ("a polar bear", "white"), ("a fire truck", "red"),
    ("a frog", "green"), ("an egg yolk", "yellow"), ("a ripe cherry", "red"),
)
_OPPOSITES = (
    ("hot", "cold"), ("big", "small", "little"), ("up", "down"), ("left", "right"),
    ("day", "night"), ("happy", "sad"), ("fast", "slow"), ("open", "closed", "shut"),
    ("wet", "dry"), ("tall", "short"), ("full", "empty"), ("early", "late"), ("in", "out"),
    ("on", "off"), ("yes", "no"), ("black", "white"), ("push", "pull"), ("high", "low"),
    ("rich", "poor"), ("true", "false"), ("first", "last"), ("always", "never"),
    ("inside", "outside"), ("north", "south"), ("east", "west"), ("thick", "thin"),
    ("strong", "weak"), ("clean", "dirty"),
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_SOUNDS = (
    ("a cow", "moo"), ("a dog", "woof", "bark"), ("a cat", "meow", "miaow"), ("a sheep", "baa"),
    ("a duck", "quack"), ("a pig", "oink"), ("a horse", "neigh"), ("a lion", "roar"),
    ("an owl", "hoot"), ("a snake", "hiss"), ("a bee", "buzz"), ("a hen", "cluck"),
    ("a rooster", "cock-a-doodle-doo"), ("a frog", "ribbit", "croak"), ("a mouse", "squeak"),
    ("a donkey", "hee-haw", "bray"), ("a wolf", "howl"),
)
_LEGS = (("a spider", 8), ("a dog", 4), ("a cat", 4), ("a horse", 4), ("a cow", 4),
         ("a chicken", 2), ("a duck", 2), ("an ant", 6), ("a bee", 6), ("a person", 2))


def _slug(text: str) -> str:
  words = text.lower().replace(",", "").replace(".", "").split()
  return "_".join(w for w in words if w not in ("a", "an", "the"))


def _number(n: int) -> tuple[str, tuple[str, ...]]:
  return str(n), (str(n), _NUMBER_WORDS[n])


@functools.lru_cache(maxsize=1)
def facts() -> tuple[Fact, ...]:
  """Every fact of the world, in a fixed order (the seed only shuffles and splits them)."""
  out = []

  def add(category, key, slots, answer, aliases=()):
    question = _CATEGORIES[category].dq_templates[0].format(**slots)
    out.append(Fact(f"{category}/{key}", category, question, answer,
                    tuple(dict.fromkeys((answer, *aliases))), tuple(slots.items())))

  for country, capital, *aliases in _CAPITALS:
    add("capital", _slug(country), {"x": country}, capital, aliases)
  for a in range(1, 11):  # one fact per unordered pair, larger number first
    for b in range(1, a + 1):
      add("add", f"{a}+{b}", {"a": a, "b": b}, *_number(a + b))
  for a in range(2, 11):
    for b in range(1, a):
      add("subtract", f"{a}-{b}", {"a": a, "b": b}, *_number(a - b))
  for thing, colour, *aliases in _COLOURS:
    add("colour", _slug(thing), {"x": thing}, colour, aliases)
  for word, opposite, *aliases in _OPPOSITES:
    add("opposite", word, {"x": word}, opposite, aliases)
  for i, day in enumerate(_DAYS):
    add("next_day", day.lower(), {"x": day}, _DAYS[(i + 1) % 7])
  for i, month in enumerate(_MONTHS):
    add("next_month", month.lower(), {"x": month}, _MONTHS[(i + 1) % 12])
  for animal, sound, *aliases in _SOUNDS:
    add("sound", _slug(animal), {"x": animal}, sound, aliases)
  for animal, legs in _LEGS:
    add("legs", _slug(animal), {"x": animal}, *_number(legs))
  return tuple(out)


def _row(fact: Fact, question_type: str, question: str, split: str, index: int,
         build_messages: Callable[..., list[dict]], system: str | None,
         full: str) -> dict[str, Any]:
  category = _CATEGORIES[fact.category]
  return {
      "prompt": build_messages(question, system),
      "adversarial": False,
      "source": DATA_SOURCE,
      "conv_id": None,
      "unique_conv_id": None,
      "turn_id": 1,
      "data_source": DATA_SOURCE,
      "ability": DATA_SOURCE,
      "reward_model": {"ground_truth": fact.answer if question_type == "DQ" else AMBIGUOUS,
                       "style": "rule"},
      "extra_info": {
          "question_type": question_type,
          "question": question,  # what the user asked
          "single_turn_prompt": full,  # the full question (hidden for VQ)
          "answer": fact.answer,
          "aliases": list(fact.aliases),
          "fact_id": fact.fact_id,
          "category": fact.category,
          "missing_slot": category.missing_slot if question_type == "VQ" else None,
          "slot_words": list(category.slot_words),
      },
      "row_id": f"{DATA_SOURCE}/{split}/{index}",
  }


def _split_facts(rng: random.Random, test_fraction: float) -> tuple[list[Fact], list[Fact]]:
  """Per category, so every category is in both splits; a fact never is."""
  by_category: dict[str, list[Fact]] = {}
  for fact in facts():
    by_category.setdefault(fact.category, []).append(fact)
  train, test = [], []
  for group in by_category.values():
    rng.shuffle(group)
    n_test = round(len(group) * test_fraction)
    if 0 < test_fraction < 1:
      n_test = min(max(n_test, 1), len(group) - 1)
    test += group[:n_test]
    train += group[n_test:]
  return train, test


def split_phrasings(seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
  """(train, test) vague phrasings per category: VQ_TEST_PHRASINGS of each are held out."""
  rng = random.Random(f"phrasings/{seed}")
  train, test = {}, {}
  for name, category in _CATEGORIES.items():
    order = rng.sample(category.vq_questions, len(category.vq_questions))
    test[name], train[name] = order[:VQ_TEST_PHRASINGS], order[VQ_TEST_PHRASINGS:]
  return train, test


def _candidates(pool: list[Fact], phrasings: dict[str, list[str]], question_type: str,
                rng: random.Random) -> list[tuple[str, Fact, str]]:
  """Every distinct (question, fact, full question) a split offers for a type, shuffled.

  A DQ question is a fact's template with a lead-in; a VQ question is a phrasing with a lead-in,
  paired with a random fact of its category (the detail the user left out).
  """
  if question_type == "DQ":
    fulls = [(fact, t.format(**dict(fact.slots))) for fact in pool
             for t in _CATEGORIES[fact.category].dq_templates]
    out = [(lead + full, fact, full) for fact, full in fulls for lead in LEAD_INS]
  else:
    by_category: dict[str, list[Fact]] = {}
    for fact in pool:
      by_category.setdefault(fact.category, []).append(fact)
    out = []
    for name, questions in phrasings.items():
      for question in questions:
        for lead in LEAD_INS:
          fact = rng.choice(by_category[name])
          full = rng.choice(_CATEGORIES[name].dq_templates).format(**dict(fact.slots))
          out.append((lead + question, fact, full))
  rng.shuffle(out)
  return out


def _rows(pool: list[Fact], phrasings: dict[str, list[str]], num_rows: int,
          vague_fraction: float, rng: random.Random, split: str, build_messages, system,
          one_per_fact: bool) -> list[dict[str, Any]]:
  """Rows with pairwise distinct questions. `one_per_fact` (the test split): a DQ fact and a VQ
  phrasing appear at most once each, so no two held-out rows test the same thing."""
  num_vague = round(num_rows * vague_fraction)
  wanted = {"VQ": num_vague, "DQ": num_rows - num_vague}
  picked: dict[str, list] = {}
  for question_type, n in wanted.items():
    seen, chosen = set(), []
    for question, fact, full in _candidates(pool, phrasings, question_type, rng):
      if one_per_fact:
        key = fact.fact_id if question_type == "DQ" else _strip_lead_in(question)
        if key in seen:
          continue
        seen.add(key)
      chosen.append((question, fact, full))
      if len(chosen) == n:
        break
    if len(chosen) < n:
      raise ValueError(f"the world's {split} split has only {len(chosen)} distinct "
                       f"{question_type} questions; asked for {n} (lower data.num_{split})")
    picked[question_type] = chosen
  types = ["VQ"] * num_vague + ["DQ"] * (num_rows - num_vague)
  rng.shuffle(types)
  rows = []
  for i, question_type in enumerate(types):
    question, fact, full = picked[question_type].pop()
    rows.append(_row(fact, question_type, question, split, i, build_messages, system,
                     full=question if question_type == "DQ" else full))
  return rows


def _strip_lead_in(question: str) -> str:
  for lead in sorted(LEAD_INS, key=len, reverse=True):
    if lead and question.startswith(lead):
      return question[len(lead):]
  return question


def make_world(seed: int = 0, num_train: int = 512, num_test: int = 54,
               vague_fraction: float = 0.5, test_fact_fraction: float = 0.15,
               system: str | None = None,
               build_messages: Callable[..., list[dict]] | None = None
               ) -> dict[str, list[dict[str, Any]]]:
  """Train and test rows, deterministic for `seed`, that share no fact and no vague phrasing.

  A `test_fact_fraction` of each category's facts (at least one, never all) is held out,
  vague phrasings VQ_TEST_PHRASINGS per category to the test side; exactly
  round(vague_fraction * n) rows of each split are VQ, and no two rows ask the same question.
  Held-out rows test each fact and each vague phrasing at most once. `build_messages(question,
  system)` defaults to `gtalign.game.prompt.build_messages` (the GTAlign persona and instruction).
  """
  if not 0.0 <= vague_fraction <= 1.0:
    raise ValueError(f"vague_fraction must be in [0, 1], got {vague_fraction}.")
  if num_train < 0 or num_test < 0 or num_train + num_test == 0:
    raise ValueError(f"Need non-negative row counts, not both zero; got {num_train}, {num_test}.")
  if build_messages is None:
    from gtalign.game.prompt import build_messages  # pylint: disable=g-import-not-at-top
  rng = random.Random(seed)
  train_facts, test_facts = _split_facts(rng, test_fact_fraction)
  train_q, test_q = split_phrasings(seed)
  return {
      "train": _rows(train_facts, train_q, num_train, vague_fraction, rng, "train",
                     build_messages, system, one_per_fact=False),
      "test": _rows(test_facts, test_q, num_test, vague_fraction, rng, "test", build_messages,
                    system, one_per_fact=True),
  }


# ------------------------------------------------------------------------- warm-start traces

STRATEGIES = ("DA", "CQ", "AQ")
# What each strategy means for a question of each type, in words of the type's own: the plan's
# first word differs between types ("answer"/"check" on definite, "guess"/"ask" on vague
# questions), so what RL learns for one type does not move the other type's plan by sharing
# the same output token.
_PLANS = {
    "DQ": {"DA": "answer it directly (DA)", "CQ": "check what they mean anyway (CQ)",
           "AQ": "answer it, then offer a follow-up (AQ)"},
    "VQ": {"DA": "guess an answer (DA)", "CQ": "ask which {slot} (CQ)",
           "AQ": "guess, then ask which {slot} (AQ)"},
}


_BASE_PAYOFF = dict.fromkeys(("DQ_AQ", "DQ_CQ", "DQ_DA", "VQ_AQ", "VQ_CQ", "VQ_DA"), (1, 2))


def trace_payoff(question_type: str, strategy: str) -> dict[str, tuple[int, int]]:
  """The warm-start payoff table (LLM, user): (1, 2) on every key but the chosen one, (4, 3).

  Its LLM + user maximum is `question_type`_`strategy` (7 against 3), and every table has the
  same distinctness (P = 1: the players differ by over 10% on every key), so the payoff term of
  the reward cannot favour one strategy's table. Tables differ in one cell only: all the model
  has to carry from its plan into the table is where the 4 and 3 go.
  """
  if strategy not in STRATEGIES or question_type not in ("DQ", "VQ"):
    raise ValueError(f"no payoff table for {question_type!r}, {strategy!r}")
  return {k: (4, 3) if k == f"{question_type}_{strategy}" else v for k, v in _BASE_PAYOFF.items()}


def format_trace(row: dict[str, Any], strategy: str) -> str:
  """The four blocks for a world row carrying out `strategy`, the row's type read correctly.

  The plan is written once, early in <thinking>, and everything after it follows from it: the
  table's maximum, the key in <analyze> and what the response does. A DA on a vague question
  guesses the hidden fact's answer; a CQ asks for the category's missing detail.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
  info = row["extra_info"]
  kind = info["question_type"]
  slot = _CATEGORIES[info["category"]].missing_slot
  what = "Definite question (DQ)" if kind == "DQ" else f"Vague question (VQ): no {slot} given"
  payoff = ",".join(f'"{k}":{{"LLM":{llm},"user":{user}}}'
                    for k, (llm, user) in trace_payoff(kind, strategy).items())
  key = f"{kind}_{strategy}"
  answer, question = f"{info['answer']}.", f"Which {slot} do you mean?"
  response = {"DA": answer, "CQ": question,
              "AQ": f"{answer} Do you want another one?" if kind == "DQ"
              else f"Maybe {answer} {question}"}[strategy]
  plan = _PLANS[kind][strategy].format(slot=slot)
  return (f"<thinking>{what}. I will {plan}.</thinking><payoff>{{{payoff}}}</payoff>"
          f"<analyze>Best LLM + user: {key}</analyze><response>{response}</response>")


WARM_STARTS = ("random", "oracle")
# The random warm start's strategy mix, the same for both question types. AQ, the middle ground
# that is neither type's best move, is the most common, so the greedy policy after the warm start
# hedges with AQ everywhere rather than happening to play one type's optimum on every question;
# DA and CQ keep 30% each, so RL's samples try them.
WARM_START_MIX = {"DA": 0.3, "CQ": 0.3, "AQ": 0.4}


def warm_start_strategy(row: dict[str, Any], mode: str) -> str:
  """The strategy a warm-start trace carries out.

  "random" (the default) draws it from the row id alone with WARM_START_MIX, independently of
  the question type, so the warm start teaches the format and the reading of the question but
  not which move pays: that is left to RL. "oracle" hands over the welfare-maximising move.
  """
  if mode == "oracle":
    return "DA" if row["extra_info"]["question_type"] == "DQ" else "CQ"
  if mode == "random":
    rng = random.Random(f"warm-start/{row['row_id']}")
    return rng.choices(list(WARM_START_MIX), weights=list(WARM_START_MIX.values()))[0]
  raise ValueError(f"unknown warm start {mode!r}; expected one of {WARM_STARTS}")


def reference_trace(row: dict[str, Any], mode: str = "oracle") -> str:
  """The SFT target for a world row under warm-start `mode` (see `warm_start_strategy`)."""
  return format_trace(row, warm_start_strategy(row, mode))
