"""A built-in task set for offline runs: short-answer facts (DQ) and vague variants of them (VQ).

The default run needs data that a 135M instruct model can sometimes get right, a rule judge can
score without a server, and where the game's two question types both occur: a definite question
(DQ) should be answered directly, while a vague one (VQ) lacks the key slot ("What is the
capital?"), so a clarifying question is the welfare-maximising move. Rows have the GTAlign row
shape (see `gtalign.data.gtalign.read_rows`), so the same reward and sampling code handles both.
"""

from __future__ import annotations

import dataclasses
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
  vq_questions: tuple[str, ...]  # the same question with its key slot missing
  missing_slot: str  # what a good clarifying question asks for


_CATEGORIES = {
    "capital": _Category(("What is the capital of {x}?", "Which city is the capital of {x}?"),
                         ("What is the capital?", "Which city is the capital of the country?"),
                         "country"),
    "add": _Category(("What is {a} + {b}?", "What is {a} plus {b}?"),
                     ("What is the sum of the two numbers?", "What do I get if I add them?"),
                     "numbers"),
    "subtract": _Category(("What is {a} - {b}?", "What is {a} minus {b}?"),
                          ("What is the difference between the two numbers?",
                           "What is left if I subtract one from the other?"), "numbers"),
    "colour": _Category(("What colour is {x}?", "What is the colour of {x}?"),
                        ("What colour is it?", "What is the colour of that thing?"), "thing"),
    "opposite": _Category(("What is the opposite of {x}?", "What is the opposite of the word {x}?"),
                          ("What is the opposite of the word?", "What is its opposite?"), "word"),
    "next_day": _Category(("What day comes after {x}?", "Which day of the week follows {x}?"),
                          ("What day comes after that day?", "Which day of the week comes next?"),
                          "day"),
    "next_month": _Category(("What month comes after {x}?", "Which month follows {x}?"),
                            ("What month comes after that one?", "Which month comes next?"),
                            "month"),
    "sound": _Category(("What sound does {x} make?", "What noise does {x} make?"),
                       ("What sound does it make?", "What noise does the animal make?"),
                       "animal"),
    "legs": _Category(("How many legs does {x} have?",),
                      ("How many legs does it have?", "How many legs does the animal have?"),
                      "animal"),
}

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


def _row(fact: Fact, question_type: str, rng: random.Random, split: str, index: int,
         build_messages: Callable[..., list[dict]], system: str | None) -> dict[str, Any]:
  category = _CATEGORIES[fact.category]
  full = rng.choice(category.dq_templates).format(**dict(fact.slots))
  question = full if question_type == "DQ" else rng.choice(category.vq_questions)
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


def _rows(pool: list[Fact], num_rows: int, vague_fraction: float, rng: random.Random, split: str,
          build_messages, system) -> list[dict[str, Any]]:
  num_vague = round(num_rows * vague_fraction)
  types = ["VQ"] * num_vague + ["DQ"] * (num_rows - num_vague)
  rng.shuffle(types)
  # Each type walks its own shuffled pass over the facts, so (fact, type) pairs repeat only once
  # every fact has had its turn.
  order = {"DQ": [], "VQ": []}
  rows = []
  for i, question_type in enumerate(types):
    if not order[question_type]:
      order[question_type] = rng.sample(pool, len(pool))
    fact = order[question_type].pop()
    rows.append(_row(fact, question_type, rng, split, i, build_messages, system))
  return rows


def make_world(seed: int = 0, num_train: int = 512, num_test: int = 128,
               vague_fraction: float = 0.5, system: str | None = None,
               build_messages: Callable[..., list[dict]] | None = None
               ) -> dict[str, list[dict[str, Any]]]:
  """Train and test rows, deterministic for `seed`, with no fact in both splits.

  Facts are split in the ratio num_test : num_train (at least one per category on each side);
  exactly round(vague_fraction * n) rows of each split are VQ. `build_messages(question, system)`
  defaults to `gtalign.game.prompt.build_messages` (the GTAlign system persona and instruction).
  """
  if not 0.0 <= vague_fraction <= 1.0:
    raise ValueError(f"vague_fraction must be in [0, 1], got {vague_fraction}.")
  if num_train < 0 or num_test < 0 or num_train + num_test == 0:
    raise ValueError(f"Need non-negative row counts, not both zero; got {num_train}, {num_test}.")
  if build_messages is None:
    from gtalign.game.prompt import build_messages  # pylint: disable=g-import-not-at-top
  rng = random.Random(seed)
  train_facts, test_facts = _split_facts(rng, num_test / (num_train + num_test))
  return {
      "train": _rows(train_facts, num_train, vague_fraction, rng, "train", build_messages, system),
      "test": _rows(test_facts, num_test, vague_fraction, rng, "test", build_messages, system),
  }


# Payoffs of the reference traces: the welfare-maximising strategy (largest LLM + user) is DA for
# definite questions and CQ for vague ones, as the world's rewards make it.
_TRACE_PAYOFF = {  # integers: "3" is one token where "3.0" is three
    "DQ": {"DQ_AQ": (2, 3), "DQ_CQ": (1, 0), "DQ_DA": (3, 4),
           "VQ_AQ": (1, 1), "VQ_CQ": (2, 1), "VQ_DA": (0, 1)},
    "VQ": {"DQ_AQ": (1, 1), "DQ_CQ": (1, 2), "DQ_DA": (0, 0),
           "VQ_AQ": (2, 2), "VQ_CQ": (3, 4), "VQ_DA": (-1, -2)},
}


def reference_trace(row: dict[str, Any]) -> str:
  """A welfare-maximising four-block completion for a world row (the SFT warm-start target).

  Definite questions get a direct answer (DQ_DA); vague ones a clarifying question about the
  missing detail (VQ_CQ). Traces are kept short so that a small model trains on them quickly.
  """
  info = row["extra_info"]
  kind = info["question_type"]
  payoff = ",".join(f'"{k}":{{"LLM":{llm},"user":{user}}}'
                    for k, (llm, user) in _TRACE_PAYOFF[kind].items())
  if kind == "DQ":
    thinking = "Definite question (DQ): answer directly."
    key, response = "DQ_DA", f"{info['answer']}."
  else:
    slot = info["missing_slot"]
    thinking = f"Vague question (VQ): which {slot}? Ask first."
    key, response = "VQ_CQ", f"Which {slot} do you mean?"
  return (f"<thinking>{thinking}</thinking><payoff>{{{payoff}}}</payoff>"
          f"<analyze>Best LLM + user: {key}</analyze><response>{response}</response>")
