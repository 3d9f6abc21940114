"""The SFT warm start on the built-in world: traces in which the payoff table decides.

A warm-start trace teaches the game's format, and two skills that RL cannot invent from a few
hundred samples:

- reading the question: `<thinking>` restates the detail the question names ("The question
  names the country: France.") or says that it names none, then gives the type; it plans nothing;
- reading the table: the strategy is drawn independently of the question type and written only
  as the table's maximum; `<analyze>` adds up the question's row and names the best key, and the
  response carries that key out.

After the warm start the table is the only thing that decides the move, so RL can earn more only
by pricing: writing tables whose maximum is the move that pays. Rows cover the world's training
facts plus entities and categories of this module's own whose answers nobody wrote down, so
"names the detail" cannot be learned as "is one of the facts I saw". The answers a trace gives
are the base model's own plain-chat answers (`gtalign.evaluation.plain`), right or wrong: the
warm start teaches the format around what the model already says instead of new facts.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, Mapping

from gtalign.data import world
from gtalign.game import payoff, trace

STRATEGIES = ("DA", "CQ", "AQ")
WARM_STARTS = ("random", "oracle")
# The random warm start's strategy mix is `Draw.mix()`, the same for both question types: AQ,
# the middle ground that is neither type's best move, at `Draw.hedge`, DA and CQ at half the
# rest each, so RL's samples try them.
# When the random warm start draws a row's strategy (`sft.draw`): "row", once per row, the same
# at every pass of SFT over it; "visit", anew at every pass. Drawn once, a warm start of several
# epochs learns each training question's strategy by heart, and a held-out question gets the
# strategy of the training questions it resembles: a near-constant move per question kind
# (one seed's policy answered every definite question with AQ), which RL's samples then never
# leave and which lets the response follow the question instead of the table. Drawn anew, the
# question predicts nothing about the move: only the table does.
DRAWS = ("row", "visit")
# Which rows of a random warm-start table peak (`sft.rows`): "read", only the row of the
# question's type (the other row flat); "both", each row on a strategy of its own, drawn
# independently. With one peaked row, writing the table means knowing the type first, and RL's
# push on vague questions' VQ_CQ peak spread to definite ones: their tables peaked in the VQ row
# while the key read the DQ row (key = pick 0.69 after 8 RL steps), and no definite answer was
# paid. With both rows priced, the table is the payoff of each reading, as the game has it, and
# definite and vague questions push the same table (DQ row to DA, VQ row to CQ).
# "bumped": as "read", but in half the traces one cell of the other row is raised a little
# (`BUMPS`, never near the peak): a provider's edit prices both rows, and a scan that had only
# seen flat other rows copied such a bump into the row it reads (README "The default run").
ROWS = ("read", "both", "bumped")


@dataclasses.dataclass(frozen=True)
class Draw:
  """How the random warm start draws the strategies its tables select (configs: sft.draw,
  sft.hedge, sft.rows)."""
  per: str = "row"  # DRAWS
  # AQ's share; DA and CQ split the rest. Above 0.5 the greedy policy after the warm start
  # hedges with AQ: a table is written cell by cell in AQ, CQ, DA order, and greedy decoding
  # peaks the AQ cell only when its odds beat even; at 0.4 it flipped a coin between CQ and DA
  # per question kind (CQ on 0.88 of one seed's vague questions before any RL)
  hedge: float = 0.4
  rows: str = "read"  # ROWS

  def mix(self) -> dict[str, float]:
    rest = (1.0 - self.hedge) / 2
    return {"DA": rest, "CQ": rest, "AQ": self.hedge}


ROW_DRAW = Draw()
# (strategy, (LLM, user)): the other row's cell raised under `sft.rows=bumped`
Bump = tuple[str, tuple[float, float]]


def draw_of(sft) -> Draw:
  """The Draw of a config's `sft` block."""
  return Draw(sft.draw, float(sft.hedge), sft.rows)

# Categories that only the warm start asks about: no gold answers, never held out.
EXTRA_CATEGORIES = {
    "language": world.Category(
        ("What language do people speak in {x}?", "Which language is spoken in {x}?"),
        ("What language do they speak there?", "Which language is spoken in that country?",
         "What language do people speak in it?", "Which language do they use there?",
         "What is the main language of the country?"),
        "country", ("country", "countries", "nation", "place")),
    "author": world.Category(
        ("Who wrote {x}?", "Who is the author of {x}?"),
        ("Who wrote it?", "Who is the author of the book?", "Who wrote that novel?",
         "Can you tell me who the author is?", "Which writer wrote this one?"),
        "book", ("book", "books", "novel", "play", "title")),
    "plural": world.Category(
        ("What is the plural of {x}?", "What is the plural form of the word {x}?"),
        ("What is the plural of the word?", "What is its plural?",
         "How do I write that word in the plural?", "What is the plural form?",
         "Can you give me the plural of that one?"),
        "word", ("word", "words")),
    "continent": world.Category(
        ("Which continent is {x} in?", "On which continent is {x}?"),
        ("Which continent is it in?", "What continent is that country on?",
         "On which continent is the place?", "Which continent would that be?",
         "Can you tell me its continent?"),
        "country", ("country", "countries", "nation", "place")),
}
_MORE_COUNTRIES = (
    "Chile", "Colombia", "Vietnam", "Nigeria", "Morocco", "Turkey", "Ukraine", "Switzerland",
    "Brazil", "Pakistan", "Saudi Arabia", "Israel", "Iceland", "New Zealand", "Malaysia",
    "Venezuela", "Ethiopia", "Ghana", "Romania", "Bulgaria", "Croatia", "Serbia", "Nepal",
    "Bangladesh", "Iraq", "Jordan", "Algeria", "Tunisia", "Uganda", "Jamaica", "Bolivia",
    "Ecuador", "Uruguay", "Mongolia", "Estonia", "Latvia", "Lithuania", "Slovakia", "Luxembourg",
    "Cambodia")
# Entities of the world's categories that no fact uses (their answers are the base model's).
EXTRA_ENTITIES = {
    "capital": _MORE_COUNTRIES,
    "colour": ("a sunflower", "a blueberry", "an orange", "a plum", "a pine tree", "the sun",
               "a flamingo", "a raven", "a swan", "chalk", "a ruby", "an emerald", "blood",
               "a school bus", "a cucumber", "an eggplant", "a peach", "a pearl", "ash",
               "a daffodil", "a tangerine", "cream", "a sapphire", "charcoal"),
    "opposite": ("good", "light", "old", "hard", "love", "win", "near", "start", "buy", "give",
                 "above", "before", "heavy", "loud", "soft", "young", "quiet", "cheap", "deep",
                 "wide", "sweet", "awake", "alive", "remember", "smooth", "sharp"),
    "sound": ("a goat", "a crow", "a pigeon", "a turkey", "a chick", "a monkey", "a goose",
              "a bear", "a parrot", "a cricket", "a seal", "a dove", "a tiger", "an elephant"),
    "legs": ("a crab", "a beetle", "a butterfly", "a fly", "a scorpion", "a kangaroo",
             "a penguin", "a sheep", "a goat", "a lion", "a frog", "a lizard", "a mosquito",
             "an ostrich"),
    "language": ("France", "Germany", "Spain", "Italy", "Japan", "China", "Russia", "Brazil",
                 "Mexico", "Portugal", "Greece", "Turkey", "Egypt", "Sweden", "Poland",
                 "the Netherlands", "Argentina", "Iran", "Vietnam", "Korea"),
    "author": ("Hamlet", "Romeo and Juliet", "Pride and Prejudice", "Don Quixote",
               "The Odyssey", "War and Peace", "Moby-Dick", "Great Expectations", "Frankenstein",
               "Dracula", "Oliver Twist", "Macbeth", "The Hobbit", "Jane Eyre", "Les Miserables",
               "The Iliad", "Little Women", "Anna Karenina"),
    "plural": ("mouse", "child", "tooth", "foot", "goose", "man", "woman", "person", "cactus",
               "leaf", "knife", "wolf", "fish", "box", "city", "baby", "ox", "potato"),
    "continent": ("France", "Japan", "Kenya", "Brazil", "Canada", "Egypt", "India", "Peru",
                  "Norway", "Australia", "Mexico", "Vietnam", "Nigeria", "Chile", "Germany",
                  "Thailand", "Morocco", "Argentina"),
}
# More definite phrasings of the world's categories, for the warm start only.
EXTRA_TEMPLATES = {
    "capital": ("What's the capital city of {x}?", "Tell me the capital of {x}."),
    "add": ("How much is {a} plus {b}?", "What do {a} and {b} add up to?"),
    "subtract": ("How much is {a} minus {b}?", "What do I get if I take {b} from {a}?"),
    "colour": ("Which colour is {x}?", "Tell me the colour of {x}."),
    "opposite": ("Which word means the opposite of {x}?", "Give me the opposite of {x}."),
    "next_day": ("What is the day after {x}?", "Which day comes after {x}?"),
    "next_month": ("What is the month after {x}?", "Which month comes after {x}?"),
    "sound": ("What does {x} say?", "Which sound does {x} make?"),
    "legs": ("How many legs has {x} got?", "What is the number of legs of {x}?"),
}


# Vague stand-ins for a category's missing detail: a definite template filled with one of them is
# a vague question of the same wording, so the warm start contrasts "names the detail" with
# "refers to one it does not name" in otherwise identical questions.
VAGUE_FILLERS = {
    "country": ({"x": "that country"}, {"x": "the country"}, {"x": "this country"},
                {"x": "the country I mentioned"}),
    "numbers": ({"a": "the first number", "b": "the second number"},
                {"a": "one of them", "b": "the other"}, {"a": "this number", "b": "that one"}),
    "thing": ({"x": "it"}, {"x": "that thing"}, {"x": "this thing"}, {"x": "the thing I mean"}),
    "word": ({"x": "that word"}, {"x": "the word"}, {"x": "this word"}, {"x": "the word I said"}),
    "day": ({"x": "that day"}, {"x": "the day I said"}, {"x": "this day"}),
    "month": ({"x": "that month"}, {"x": "the month I said"}, {"x": "this month"}),
    "animal": ({"x": "that animal"}, {"x": "the animal"}, {"x": "this creature"}, {"x": "it"}),
    "book": ({"x": "that book"}, {"x": "the book I mentioned"}, {"x": "it"}),
}


def category(name: str) -> world.Category:
  return EXTRA_CATEGORIES[name] if name in EXTRA_CATEGORIES else world.category(name)


# (LLM, user) pairs a warm-start table draws its cells from: every pair's players differ by over
# 10% (payoff distinctness P = 1 for every table, so the payoff term favours no strategy); the
# chosen cell's LLM + user (7 to 8.5) beats every other cell's (at most 5) by 2 or more.
_OTHER_CELLS = ((1, 2), (2, 1), (0, 1), (1, 0), (2, 3), (3, 2), (0.5, 1.5), (1.5, 0.5), (1, 2.5),
                (2.5, 1), (0, 2), (2, 0), (1.5, 3), (3, 1.5), (-1, 1), (1, -1))
_CHOSEN_CELLS = ((4, 3), (3, 4), (4.5, 3.5), (3.5, 4.5), (5, 3), (3, 5), (4, 4.5), (4.5, 4))
# the other row's raised cell under `sft.rows=bumped`: LLM + user 3.5-4.5, above the flat (1, 2)
# and well below a peak (7)
BUMPS = ((1.5, 2.5), (2, 2), (2.5, 1.5), (1, 3), (2, 2.5), (2.5, 2), (1.5, 3), (3, 1.5))
# every cell but the chosen (4, 3) under `sft.tables=jittered`: LLM + user 2.5-4, far below the
# peak's 7, spelled in one token or three ("1" against "1.5"; (1, 2) twice as often)
LOW_CELLS = ((1, 2), (1, 2), (1.5, 2.5), (2, 2), (1, 2.5), (1.5, 2), (2, 1.5), (0.5, 2),
             (1, 1.5), (2.5, 1.5))
PAYOFF_KEYS = ("DQ_AQ", "DQ_CQ", "DQ_DA", "VQ_AQ", "VQ_CQ", "VQ_DA")


def trace_payoff(question_type: str, strategy: str, seed: str | None = "",
                 other: str | None = None, bump: Bump | None = None, jitter: str | None = None
                 ) -> dict[str, tuple[float, float]]:
  """The warm-start payoff table (LLM, user), drawn from `seed`: its LLM + user maximum is
  `question_type`_`strategy`, by 2 or more (and the other row's, `other`, when given); the
  numbers vary from table to table, so reading the
  table means reading its numbers, not where a fixed pattern sits. `seed=None`: one fixed
  pattern, (4, 3) on the chosen cell and (1, 2) elsewhere (what a random tiny model can learn
  in a test's few steps). `bump`: (strategy, cell) of the other row raised to that cell.
  `jitter` (with `seed=None`): the chosen cells stay (4, 3), every other is drawn from
  LOW_CELLS with this seed."""
  if strategy not in STRATEGIES or question_type not in ("DQ", "VQ"):
    raise ValueError(f"no payoff table for {question_type!r}, {strategy!r}")
  if other is not None and other not in STRATEGIES:
    raise ValueError(f"no payoff table with the other row on {other!r}")
  chosen = {f"{question_type}_{strategy}"}
  if other is not None:
    chosen.add(f"{'VQ' if question_type == 'DQ' else 'DQ'}_{other}")
  if seed is None:  # one fixed pattern: (4, 3) on the chosen cells, (1, 2) or LOW_CELLS elsewhere
    low = (random.Random(f"jitter/{jitter}").choice if jitter is not None
           else lambda _: (1, 2))
    table = {k: (4, 3) if k in chosen else low(LOW_CELLS) for k in PAYOFF_KEYS}
  else:
    rng = random.Random(f"table/{seed}")
    table = {k: rng.choice(_CHOSEN_CELLS) if k in chosen else rng.choice(_OTHER_CELLS)
             for k in PAYOFF_KEYS}
  if bump is not None:
    if other is not None:
      raise ValueError("a table's other row either peaks (other) or is bumped (bump), not both")
    table[f"{'VQ' if question_type == 'DQ' else 'DQ'}_{bump[0]}"] = bump[1]
  return table


def reading(row: Mapping[str, Any]) -> str:
  """The `<thinking>` of a warm-start trace: the detail the question names, then its type."""
  info = row["extra_info"]
  slot = category(info["category"]).missing_slot
  if info["question_type"] == "DQ":
    return f"The question names the {slot}: {info['named']}. Definite question (DQ)."
  return f"The question names no {slot}. Vague question (VQ)."


# how <analyze> restates each cell it compares (`sft.scan`): copy = as the table writes it
# ("DQ_AQ":{"LLM":1,"user":2}); restate = in words of the scan's own (DQ_AQ: LLM 1, user 2)
SCANS = ("copy", "restate")


def analysis(question_type: str, table: Mapping[str, tuple[float, float]],
             scan: str = "copy", one_decimal: bool = False) -> str:
  """The `<analyze>` of a warm-start trace: a scan along the question's row keeping the best
  key so far, then that key, named last (what `trace.chosen_key` reads).

  Every step is local, so a small model can learn it from a few hundred traces and apply it to
  any table: each cell is restated from the table, its LLM + user compared with the best so
  far, written just before, and the best key carried on. Ties keep the earlier key unless the
  user payoff, then the LLM payoff, is larger, as `payoff.select_sum` decides.

  `scan` (SCANS): copy writes each cell as the table writes it (copying an earlier span is what
  a pretrained model does best); restate writes it in words the table does not use. Why
  restate: a copied cell repeats the table's own tokens ("DQ_DA":{"LLM": then a number), so
  when RL teaches the table to write 1 after them, the scan writes 1 after them too, whatever
  an edited table says there (the default run's steering misses, README "The default run").
  `one_decimal`: a copied cell spells its numbers as a `decimal` table does ("4.0").
  """
  if scan not in SCANS:
    raise ValueError(f"unknown scan {scan!r}; expected one of {SCANS}")
  keys = [f"{question_type}_{s}" for s in ("AQ", "CQ", "DA")]
  num = (lambda v: payoff.spell(v, True)) if one_decimal else (lambda v: f"{v:g}")
  steps, best = [], None
  for k in keys:
    llm, user = table[k]
    cell = (f'"{k}":{{"LLM":{num(llm)},"user":{num(user)}}} sums to {llm + user:g}'
            if scan == "copy"
            else f"{k}: LLM {llm:g}, user {user:g}, sum {llm + user:g}")
    if best is not None:
      b_llm, b_user = table[best]
      sign = ">" if llm + user > b_llm + b_user else "<" if llm + user < b_llm + b_user else "="
      cell += f" {sign} {b_llm + b_user:g}"
      if (llm + user, user, llm) > (b_llm + b_user, b_user, b_llm):
        best = k
    else:
      best = k
    steps.append(f"{cell}, best so far {best}")
  return "; ".join(steps) + f". Best LLM + user: {best}"


def plain_question(row: Mapping[str, Any]) -> str:
  """The question whose plain-chat answer a trace of this row gives: a definite question as
  asked, without its lead-in; for a vague one, the full question the user had in mind (a
  guess at it)."""
  info = row["extra_info"]
  return world.strip_lead_in(info["question"] if info["question_type"] == "DQ"
                             else info["single_turn_prompt"])


# varied: numbers drawn per cell; fixed: (4, 3) on the chosen cell, (1, 2) elsewhere;
# jittered: (4, 3) on the chosen cell, every other drawn from LOW_CELLS per row and SFT pass.
# Why jittered: with every low cell "1" and "2", the copied scan finds a cell by where it sits,
# not by its key: a provider's "1.5" two tokens longer in the other row moved the 4 one cell
# over in the scan (README "The default run", stop 42), while an edit by whole numbers was
# followed. A scan taught on cells of either length has to find each by its key.
# decimal: fixed, every number spelled with one decimal ("4.0", "1.0"), so a provider's "1.5"
# is as long in tokens as the "1.0" it replaces and a scan that finds cells by where they sit
# still finds them (steering.with_table keeps the policy's spelling).
TABLES = ("varied", "fixed", "jittered", "decimal")


def payoff_json(table: Mapping[str, tuple[float, float]], first: str | None = None,
                one_decimal: bool = False) -> str:
  """The `<payoff>` block's JSON: cells in PAYOFF_KEYS order, or with `first` leading.

  Why lead with the chosen cell: in PAYOFF_KEYS order a table whose peak sits on a random cell
  makes the policy decide three times, once per cell of the row ("is the 4 here?"), and a
  small model learns each cell's odds (1/3) but not that exactly one cell peaks: at
  temperature 1 about half its tables came out flat, greedy ones flatter still, and a flat
  table selects the row's first key by the tie-break. Leading with the chosen key puts the
  whole decision on the key's tokens; every number after them follows from it. JSON objects
  are unordered, so the block stays the strict format and the analysis still reads numbers.
  """
  keys = list(PAYOFF_KEYS)
  if first:
    keys.remove(first)
    keys.insert(0, first)
  cells = {k: {"LLM": llm, "user": user} for k, (llm, user) in table.items()}
  return payoff.Bimatrix.from_dict(cells).to_json(keys, one_decimal)


def format_trace(row: Mapping[str, Any], strategy: str, answer: str | None = None,
                 tables: str = "varied", chosen_first: bool = False,
                 other: str | None = None, bump: Bump | None = None, scan: str = "copy",
                 visit: int = 0) -> str:
  """The four blocks for a row carrying out `strategy`, the row's type read correctly; `other`:
  the strategy the other type's row peaks on (none: that row is flat, or `bump`ed); `scan`:
  how `<analyze>` restates the cells (SCANS); `visit`: the SFT pass (jittered tables draw
  their low cells anew at each).

  `answer` is what a DA or AQ response states (the base model's plain answer to
  `plain_question(row)`); by default the row's gold answer. The strategy appears first as the
  table's maximum; the key and the response follow from the table.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
  info = row["extra_info"]
  kind = info["question_type"]
  if answer is None and strategy != "CQ":
    if not info.get("answer"):
      raise ValueError(f"row {row.get('row_id')!r} has no gold answer: pass the base model's")
    answer = f"{info['answer']}."
  if tables not in TABLES:
    raise ValueError(f"unknown warm-start tables {tables!r}; expected one of {TABLES}")
  table = trace_payoff(kind, strategy, str(row.get("row_id")) if tables == "varied" else None,
                       other, bump, f"{row.get('row_id')}/{visit}" if tables == "jittered"
                       else None)
  decimal = tables == "decimal"
  block = payoff_json(table, f"{kind}_{strategy}" if chosen_first else None, decimal)
  question = f"Which {category(info['category']).missing_slot} do you mean?"
  follow_up = "Do you want another one?" if kind == "DQ" else question
  response = {"DA": answer, "CQ": question, "AQ": f"{answer} {follow_up}"}[strategy]
  return (f"<thinking>{reading(row)}</thinking><payoff>{block}</payoff>"
          f"<analyze>{analysis(kind, table, scan, decimal)}</analyze>"
          f"<response>{response}</response>")


def response_token_start(encode: Callable[[str], list[int]], text: str) -> int | None:
  """Index in `encode(text)` of the first token inside a trace's `<response>` block: where the
  move the key names is carried out. None when the text up to it does not tokenize alone the
  way it does in the whole trace (a token crossing the tag)."""
  at = text.find(trace.RESPONSE_START)
  if at < 0:
    return None
  head, whole = encode(text[:at + len(trace.RESPONSE_START)]), encode(text)
  return len(head) if whole[:len(head)] == head else None


def _drawn(name: str, hedge: float) -> str:
  """A strategy drawn from `name` alone: DA, CQ or AQ with shares (1 - hedge) / 2, (1 - hedge) /
  2, hedge (the draws of `random.choices` over that mix)."""
  u = random.Random(name).random()
  return "DA" if u < (1.0 - hedge) / 2 else "CQ" if u < 1.0 - hedge else "AQ"


def warm_start_strategy(row: Mapping[str, Any], mode: str, visit: int = 0,
                        draw: Draw = ROW_DRAW) -> str:
  """The strategy a warm-start trace's table selects.

  "random" (the default) draws it from the row id and `visit` (the SFT pass over the rows; 0
  under `sft.draw=row`) with `draw`'s mix, independently of the question type: the warm start
  teaches reading and the format, not which move pays. "oracle" hands over the
  welfare-maximising move.
  """
  if mode == "oracle":
    return "DA" if row["extra_info"]["question_type"] == "DQ" else "CQ"
  if mode == "random":
    return _drawn(f"warm-start/{row['row_id']}" + (f"/{visit}" if visit else ""), draw.hedge)
  raise ValueError(f"unknown warm start {mode!r}; expected one of {WARM_STARTS}")


def other_row_strategy(row: Mapping[str, Any], mode: str, visit: int = 0,
                       draw: Draw = ROW_DRAW) -> str | None:
  """The strategy the other type's row peaks on (`sft.rows=both`), drawn on its own; None
  when only the read row peaks. "oracle": that type's best move."""
  if draw.rows != "both":
    return None
  if mode == "oracle":
    return "CQ" if row["extra_info"]["question_type"] == "DQ" else "DA"
  return _drawn(f"warm-start-other/{row['row_id']}" + (f"/{visit}" if visit else ""),
                draw.hedge)


def other_row_bump(row: Mapping[str, Any], visit: int = 0, draw: Draw = ROW_DRAW
                   ) -> Bump | None:
  """`sft.rows=bumped`: in half the traces, drawn per row and pass, one cell of the other type's
  row raised to one of `BUMPS`; None otherwise (and under the other `sft.rows`)."""
  if draw.rows != "bumped":
    return None
  rng = random.Random(f"warm-start-bump/{row['row_id']}" + (f"/{visit}" if visit else ""))
  if rng.random() < 0.5:
    return None
  return rng.choice(STRATEGIES), rng.choice(BUMPS)


def needs_answer(row: Mapping[str, Any], mode: str, dialogues: float = 0.0,
                 draw: Draw = ROW_DRAW) -> bool:
  """Whether the row's trace states an answer (DA or AQ) at some pass, so needs the base
  model's."""
  if mode == "random" and draw.per == "visit":
    return True
  return warm_start_strategy(row, mode, 0, draw) != "CQ" or is_dialogue(row, dialogues)


def is_dialogue(row: Mapping[str, Any], fraction: float) -> bool:
  """Whether a vague warm-start row is taught as a two-turn dialogue (`sft.dialogues`, a
  fraction of the vague rows, drawn from the row id)."""
  return (fraction > 0 and row["extra_info"]["question_type"] == "VQ"
          and random.Random(f"dialogue/{row['row_id']}").random() < fraction)


def detail_reply(row: Mapping[str, Any]) -> str:
  """The world user's reply to a question about the missing detail (what
  `dialogue.simulator.WorldUser` says): the detail, then the full question."""
  info = row["extra_info"]
  return f"I mean {info['detail']}. {info['single_turn_prompt']}"


def dialogue_turns(row: Mapping[str, Any], mode: str, answers: Mapping[str, str] | None,
                   tables: str, chosen_first: bool, visit: int = 0,
                   strategy: str | None = None, draw: Draw = ROW_DRAW, scan: str = "copy"
                   ) -> list[tuple[str, str | None]]:
  """A vague row as a dialogue: (trace, the user's reply) per turn. Turn 1's table selects CQ
  and asks for the detail; the user gives it; turn 2 reads the now definite question and its
  table selects DA or AQ (the row's drawn strategy at this `visit`, or `strategy`; DA where
  that is CQ): what a clarifying question's answer is for."""
  info = row["extra_info"]
  second = {**row, "row_id": f"{row['row_id']}/turn2",
            "extra_info": {**info, "question_type": "DQ", "named": info["detail"],
                           "question": detail_reply(row)}}
  strategy = strategy or warm_start_strategy(second, mode, visit, draw)
  answer = (answers or {}).get(plain_question(row))
  return [(format_trace(row, "CQ", None, tables, chosen_first,
                        other_row_strategy(row, mode, visit, draw),
                        other_row_bump(row, visit, draw), scan, visit), detail_reply(row)),
          (format_trace(second, "DA" if strategy == "CQ" else strategy, answer, tables,
                        chosen_first, other_row_strategy(second, mode, visit, draw),
                        other_row_bump(second, visit, draw), scan, visit), None)]


def reference_trace(row: Mapping[str, Any], mode: str = "oracle",
                    answers: Mapping[str, str] | None = None, tables: str = "varied",
                    chosen_first: bool = False, visit: int = 0,
                    strategy: str | None = None, draw: Draw = ROW_DRAW, scan: str = "copy"
                    ) -> str:
  """The SFT target for a row under warm-start `mode` at SFT pass `visit` (or for `strategy`);
  `answers` maps `plain_question(row)` to the base model's answer (the gold answer where it has
  none)."""
  answer = (answers or {}).get(plain_question(row))
  return format_trace(row, strategy or warm_start_strategy(row, mode, visit, draw), answer,
                      tables, chosen_first, other_row_strategy(row, mode, visit, draw),
                      other_row_bump(row, visit, draw), scan, visit)


def _pool(name: str, train_facts: list[world.Fact]) -> list[tuple[dict, str]]:
  """(slots, answer or "") of every entity the warm start may name in a category."""
  out = [(dict(f.slots), f.answer) for f in train_facts if f.category == name]
  if name in ("add", "subtract"):  # larger first numbers than any fact's
    out += [({"a": a, "b": b}, "") for a in range(11, 21) for b in range(1, 10)]
  out += [({"x": x}, "") for x in EXTRA_ENTITIES.get(name, ())]
  return out


def _row(name: str, kind: str, question: str, full: str, slots: dict, answer: str,
         index: int, build_messages: Callable[..., list[dict]], system: str | None) -> dict:
  cat = category(name)
  named = f"{slots['a']} and {slots['b']}" if "a" in slots else str(slots["x"])
  return {
      "prompt": build_messages(question, system),
      "adversarial": False,
      "source": world.DATA_SOURCE,
      "conv_id": None,
      "unique_conv_id": None,
      "turn_id": 1,
      "data_source": world.DATA_SOURCE,
      "ability": world.DATA_SOURCE,
      "reward_model": {"ground_truth": answer if kind == "DQ" else world.AMBIGUOUS,
                       "style": "rule"},
      "extra_info": {"question_type": kind, "question": question, "single_turn_prompt": full,
                     "answer": answer, "category": name,
                     "missing_slot": cat.missing_slot if kind == "VQ" else None,
                     "named": named if kind == "DQ" else None,
                     "detail": named,  # what the user has in mind (a vague row leaves it out)
                     "slot_words": list(cat.slot_words)},
      "row_id": f"{world.DATA_SOURCE}/warm/{index}",
  }


def warm_rows(seed: int, num_rows: int, vague_fraction: float = 0.5,
              test_fact_fraction: float = 0.15, exclude: set[str] | frozenset = frozenset(),
              system: str | None = None,
              build_messages: Callable[..., list[dict]] | None = None) -> list[dict[str, Any]]:
  """`num_rows` distinct warm-start questions for the world of `seed`, categories taking turns.

  Definite questions name a training fact's entity or one of EXTRA_ENTITIES, in the world's
  templates or EXTRA_TEMPLATES; vague ones use the training phrasings (every phrasing of an
  extra category) and those templates with a VAGUE_FILLERS stand-in for the detail. No held-out
  fact or phrasing appears, nor a question in `exclude` (the RL prompts).
  """
  if build_messages is None:
    from gtalign.game.prompt import build_messages  # pylint: disable=g-import-not-at-top
  train_facts, _ = world.split_facts(seed, test_fact_fraction)
  train_phrasings, test_phrasings = world.split_phrasings(seed)
  rng = random.Random(f"warm/{seed}")
  names = [*world.CATEGORY_NAMES, *EXTRA_CATEGORIES]
  candidates: dict[str, dict[str, list]] = {"DQ": {}, "VQ": {}}
  for name in names:
    cat, pool = category(name), _pool(name, train_facts)
    templates = cat.dq_templates + EXTRA_TEMPLATES.get(name, ())
    dq = [(lead + t.format(**slots), slots, answer) for slots, answer in pool
          for t in templates for lead in world.LEAD_INS]
    phrasings = list(train_phrasings.get(name, cat.vq_questions))
    held_out = set(test_phrasings.get(name, ()))
    phrasings += [p for p in dict.fromkeys(
        t.format(**filler) for t in templates for filler in VAGUE_FILLERS[cat.missing_slot]
        # not "the plural of the word that word"
        if not any(f"{w} {{x}}" in t and w in filler.get("x", "") for w in cat.slot_words))
        if p not in held_out]
    vq = []
    for phrasing in phrasings:
      for lead in world.LEAD_INS:
        slots, answer = rng.choice(pool)
        vq.append((lead + phrasing, slots, answer))
    for kind, found in (("DQ", dq), ("VQ", vq)):
      found = [c for c in dict((c[0], c) for c in found).values() if c[0] not in exclude]
      rng.shuffle(found)
      candidates[kind][name] = found
  num_vague = round(num_rows * vague_fraction)
  types = ["VQ"] * num_vague + ["DQ"] * (num_rows - num_vague)
  rng.shuffle(types)
  rows, turn = [], {"DQ": 0, "VQ": 0}
  for index, kind in enumerate(types):
    for _ in range(len(names)):  # the next category that still has a question of this type
      name = names[turn[kind] % len(names)]
      turn[kind] += 1
      if candidates[kind][name]:
        break
    else:
      raise ValueError(f"the world's warm start has only {index} distinct questions; asked for "
                       f"{num_rows} (lower data.num_warm)")
    question, slots, answer = candidates[kind][name].pop()
    template = rng.choice(category(name).dq_templates)
    full = question if kind == "DQ" else template.format(**slots)
    rows.append(_row(name, kind, question, full, slots, answer, index, build_messages, system))
  return rows
