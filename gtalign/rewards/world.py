"""The built-in world's answer terms: what each strategy is worth on a definite or vague question.

The GTAlign sources score answers with an LLM judge; the world scores them with rules that read
what the response does (`gtalign.game.behaviour`) and whether its answer is right. A_user =
A_llm = A below, then the generic U and L of `tasks.py` apply, plus one term of the world's
own (`consistency`, weighted by `rl.world_consistency`) added to L:

  definite (DQ)   DA correct 1.0 | DA wrong 0.4 | AQ correct 0.3 | AQ wrong 0.1 | CQ 0 | none 0
  vague (VQ)      CQ naming the missing detail 1.0 | other CQ 0.4 | AQ 0.3 | DA (a guess) 0 | none 0

A definite question asks for an answer and nothing more: a right one is worth most (1.0), a
wrong one clearly less (0.4, so that RL does not settle for a constant answer) but still more
than asking back (0): at any accuracy p the expected welfare of answering, p W(DA right) +
(1 - p) W(DA wrong), beats that of asking, W(CQ) (`python -m gtalign.rewards.world_table`
prints the cells' W). A follow-up question nobody asked for costs the user a turn, so AQ is
worth less than a plain answer, right or wrong: the move is priced before the answer's
correctness, as on a vague question, where asking about the wrong thing (0.4) still beats the
hedge (0.3). On a vague question only a question about the missing detail resolves it; a guess
is worth nothing. The two types mirror each other cell for cell (the right move done right 1.0,
done imperfectly 0.4, the hedge AQ 0.3, the other type's move 0), so neither type's signal
outweighs the other's in RL. With AQ right at 0.5 above a wrong DA's 0.3 (the cells before), a
definite question's GRPO group ranked its samples by the answer's luck, not the move: the
model's in-game answers are mostly wrong, its rare right AQ beat every wrong DA, and RL moved
the vague row of the table only (README "The default run").

  consistency C = 0.5 [key = the key its own payoff table selects in the key's row (the
                          type it read): max LLM + user]
                + 0.5 [the response does what the key says]

and two factors on A. `rl.world_unpriced` (0): A is multiplied by it unless the move is the one
the trace's own table prices highest: the key is the strict maximum of LLM + user in its row,
and the response does what the key says (`priced`). Without it RL wrote one flat table for every
question (every cell alike, the tie broken by key order) and chose the move in the response, from
the question alone: a table that decides nothing, which a pricing edit cannot steer.
`rl.world_misread` (0): A is multiplied by it when the row of the key in
<analyze> (DQ_ or VQ_, the model's reading of the question) is not the question's type: a move
that suits the question only by accident is not the game played right.
`rl.world_hedge` (1): A is multiplied by it when the response is an AQ, on either type: at 0.5
a hedge is worth half the cells above (a definite question's AQ right 0.15, wrong 0.05; a
vague one's 0.15), so that a wrong direct answer beats a right hedge by more than the answer's
luck moves either (W 0.558 against 0.432, where the cells above give 0.508). Without it a clarifying
question pays on a vague question whatever the model read, and RL learned to read every
question as definite and "check anyway", asking about everything; at 0.5 it still did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gtalign.game import behaviour
from gtalign.game.payoff import action, is_own_row_pick
from gtalign.game.trace import ParsedTrace

DEFAULT_CONSISTENCY = 0.2  # the weight of C in L; configs/grpo.py rl.world_consistency
DEFAULT_MISREAD = 0.0  # A's factor when the key's row is not the question's type; rl.world_misread
DEFAULT_UNPRICED = 0.0  # A's factor when the move is not its table's strict pick; rl.world_unpriced
DEFAULT_HEDGE = 1.0  # A's factor on an AQ (the cells above as they stand); rl.world_hedge
MAX_ANSWER_WORDS = 12  # an answer "inside a short sentence"; longer statements are not matched

DQ_CELLS = {("DA", True): 1.0, ("DA", False): 0.4, ("AQ", True): 0.3, ("AQ", False): 0.1,
            ("CQ", True): 0.0, ("CQ", False): 0.0}
VQ_CELLS = {("CQ", True): 1.0, ("CQ", False): 0.4, ("AQ", True): 0.3, ("AQ", False): 0.3,
            ("DA", True): 0.0, ("DA", False): 0.0}

_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}


def _numbers(tokens: Sequence[str]) -> list[int]:
  out = []
  for t in tokens:
    if t.isdigit():
      out.append(int(t))
    elif t in _NUMBER_WORDS:
      out.append(_NUMBER_WORDS[t])
  return out


def _contains(tokens: Sequence[str], phrase: Sequence[str]) -> bool:
  n = len(phrase)
  return n > 0 and any(list(tokens[i:i + n]) == list(phrase) for i in range(len(tokens) - n + 1))


def _without_echo(said: list[int], asked: list[int]) -> list[int]:
  """`said` without its first run of the question's own numbers in the question's order: "4 -
  2 = 2" states 2 for "What is 4 - 2?", "The answer is 4 - 2." states nothing."""
  n = len(asked)
  for i in range(len(said) - n + 1) if n else ():
    if said[i:i + n] == asked:
      return said[:i] + said[i + n:]
  return said


def answer_correct(response: str, aliases: Sequence[str], question: str = "",
                   candidates: Sequence[str] = ()) -> bool:
  """Whether the response's statements give the answer, and only it.

  Accepted: any alias, a number as digits or as a word ("four" for 4), inside a short sentence
  ("The capital is Amsterdam."), before or after a follow-up question. Not accepted: a hedge
  listing other candidates of the category ("Paris or Lyon", "6 or 8"), or a long statement.
  Words and numbers that the question itself contains do not count as competing candidates.
  """
  tokens = behaviour.words(behaviour.answer_part(response))
  if not tokens or len(tokens) > MAX_ANSWER_WORDS:
    return False
  asked = behaviour.words(question)
  gold_numbers = _numbers(behaviour.words(" ".join(aliases)))
  if gold_numbers:  # numeric: the last number stated is the answer, no other new number appears
    said = _without_echo(_numbers(tokens), _numbers(asked))
    new = set(said) - set(_numbers(asked))
    return bool(said) and said[-1] == gold_numbers[0] and new <= {gold_numbers[0]}
  if not any(_contains(tokens, behaviour.words(a)) for a in aliases):
    return False
  gold = {tuple(behaviour.words(a)) for a in aliases}
  for other in candidates:
    phrase = tuple(behaviour.words(other))
    if phrase in gold or any(set(phrase) <= set(g) for g in gold) or _contains(asked, phrase):
      continue
    if _contains(tokens, phrase):
      return False
  return True


def consistency(parsed: ParsedTrace) -> float:
  """C: half for a key its own table selects in the key's row (the reading it made), half for a
  response that does what the key says."""
  key = parsed.chosen_key
  if key is None or parsed.payoff is None:
    return 0.0
  return 0.5 * is_own_row_pick(parsed.payoff, key) + 0.5 * (
      behaviour.classify(parsed.response) == action(key))


def priced(parsed: ParsedTrace) -> bool:
  """The move is the one the trace's own table prices highest: its key has the largest LLM +
  user of its row, strictly (no tie a key order breaks), and its response does the key."""
  key = parsed.chosen_key
  if key is None or parsed.payoff is None or key not in parsed.payoff:
    return False
  welfare = {k: v["LLM"] + v["user"] for k, v in parsed.payoff.items() if k[:3] == key[:3]}
  return (all(welfare[key] > w + 1e-9 for k, w in welfare.items() if k != key)
          and behaviour.classify(parsed.response) == action(key))


def answer_term(row: Mapping[str, Any], parsed: ParsedTrace,
                misread: float = DEFAULT_MISREAD, unpriced: float = DEFAULT_UNPRICED,
                hedge: float = DEFAULT_HEDGE) -> tuple[float, dict[str, float]]:
  """(A, logged components) for a world row; `misread` scales A when the key's row is wrong,
  `unpriced` when the move is not its own table's strict pick, `hedge` when it is an AQ."""
  from gtalign.data import world as world_data  # pylint: disable=import-outside-toplevel
  info = row["extra_info"]
  kind = info.get("question_type")
  did = behaviour.classify(parsed.response)
  extra = {"consistency": consistency(parsed), "did_" + did.lower(): 1.0}
  read_right = parsed.chosen_key is not None and parsed.chosen_key.startswith(f"{kind}_")
  extra["read_right"] = float(read_right)
  extra["priced"] = float(priced(parsed))
  scale = ((1.0 if read_right else misread) * (1.0 if extra["priced"] else unpriced)
           * (hedge if did == "AQ" else 1.0))
  if kind == "DQ":
    correct = answer_correct(parsed.response, info.get("aliases") or [info["answer"]],
                             info.get("question", ""),
                             world_data.category_answers(info["category"]))
    extra["correct"] = float(correct and did in ("DA", "AQ"))
    return scale * DQ_CELLS.get((did, correct), 0.0), extra
  if kind == "VQ":
    on_slot = behaviour.asks_about(parsed.response, info.get("slot_words") or
                                   world_data.category_slot_words(info["category"]))
    extra["asks_missing"] = float(on_slot and did == "CQ")
    return scale * VQ_CELLS.get((did, on_slot), 0.0), extra
  raise ValueError(f"world row {row.get('row_id')!r} needs extra_info['question_type'] 'DQ' or "
                   f"'VQ', got {kind!r}")
