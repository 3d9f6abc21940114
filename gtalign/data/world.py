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
class Category:
  dq_templates: tuple[str, ...]  # formatted with the fact's slots
  vq_questions: tuple[str, ...]  # the same question with its key slot missing (split by seed)
  missing_slot: str  # what a good clarifying question asks for
  slot_words: tuple[str, ...]  # words that name the missing slot in a clarifying question


_CATEGORIES = {
    "capital": Category(
        ("What is the capital of {x}?", "Which city is the capital of {x}?"),
        ("What is the capital?", "Which city is the capital of the country?",
         "What's the capital city there?", "Can you tell me the capital of that country?",
         "Name the capital, please.", "What is the capital of this place?",
         "Which city is its capital?", "Do you know what the capital is?"),
        "country", ("country", "countries", "nation", "place")),
    "add": Category(
        ("What is {a} + {b}?", "What is {a} plus {b}?"),
        ("What is the sum of the two numbers?", "What do I get if I add them?",
         "What do they add up to?", "Can you add these two numbers for me?",
         "What is the total of the numbers?", "What is one plus the other?",
         "How much do the two numbers make together?", "What is their sum?"),
        "numbers", ("number", "numbers", "values")),
    "subtract": Category(
        ("What is {a} - {b}?", "What is {a} minus {b}?"),
        ("What is the difference between the two numbers?",
         "What is left if I subtract one from the other?",
         "What do I get if I take the smaller one away?", "Can you subtract them for me?",
         "What is the bigger number minus the smaller one?",
         "How much is one number minus the other?", "What remains after the subtraction?",
         "What is their difference?"),
        "numbers", ("number", "numbers", "values")),
    "colour": Category(
        ("What colour is {x}?", "What is the colour of {x}?"),
        ("What colour is it?", "What is the colour of that thing?", "Which colour does it have?",
         "Can you tell me its colour?", "What colour would that be?",
         "What shade is the thing?", "What colour is this one?",
         "Do you know what colour it is?"),
        "thing", ("thing", "things", "object", "item")),
    "opposite": Category(
        ("What is the opposite of {x}?", "What is the opposite of the word {x}?"),
        ("What is the opposite of the word?", "What is its opposite?",
         "Which word means the opposite?", "Can you give me the opposite of that word?",
         "What is the antonym?", "What word is the reverse of it?",
         "What's the opposite of this one?", "Tell me the opposite, please."),
        "word", ("word", "words")),
    "next_day": Category(
        ("What day comes after {x}?", "Which day of the week follows {x}?"),
        ("What day comes after that day?", "Which day of the week comes next?",
         "What is the next day?", "Which day follows it?", "What day is after this one?",
         "Can you tell me the following day?", "What comes the day after?",
         "Which weekday is next?"),
        "day", ("day", "days", "weekday")),
    "next_month": Category(
        ("What month comes after {x}?", "Which month follows {x}?"),
        ("What month comes after that one?", "Which month comes next?",
         "What is the following month?", "Which month follows it?",
         "What month is after this one?", "Can you tell me the next month?",
         "What comes after that month?", "Which month is next in the year?"),
        "month", ("month", "months")),
    "sound": Category(
        ("What sound does {x} make?", "What noise does {x} make?"),
        ("What sound does it make?", "What noise does the animal make?", "What does it say?",
         "How does that animal sound?", "Which sound does this animal make?",
         "What noise does it make?", "Can you tell me the sound it makes?",
         "What call does the animal have?"),
        "animal", ("animal", "animals", "creature", "pet")),
    "legs": Category(
        ("How many legs does {x} have?",),
        ("How many legs does it have?", "How many legs does the animal have?",
         "How many legs are there on it?", "Can you tell me its number of legs?",
         "How many legs does that creature have?", "What is the number of legs it has?",
         "How many feet does it walk on?", "How many legs has this one got?"),
        "animal", ("animal", "animals", "creature", "pet")),
}
CATEGORY_NAMES = tuple(_CATEGORIES)
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


def named(fact: Fact) -> str:
  """The detail a definite question gives, as a warm-start trace restates it ("France",
  "4 and 3")."""
  slots = dict(fact.slots)
  return f"{slots['a']} and {slots['b']}" if "a" in slots else str(slots["x"])


def category(name: str) -> Category:
  return _CATEGORIES[name]


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
          "named": named(fact) if question_type == "DQ" else None,  # the detail the user gave
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


def split_facts(seed: int, test_fraction: float) -> tuple[list[Fact], list[Fact]]:
  """(train, test) facts of the world of `seed`, as `make_world` splits them."""
  return _split_facts(random.Random(seed), test_fraction)


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
        key = fact.fact_id if question_type == "DQ" else strip_lead_in(question)
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


def strip_lead_in(question: str) -> str:
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
