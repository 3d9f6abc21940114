"""U and L of a whole dialogue: the final answer's worth, less the user's time on extra turns.

On the built-in world (rules, no judge), with T assistant turns and the final turn's answer:

  A = max(0, cell x gates - TURN_COST x (T - 1))
  cell   the single-turn definite cells (DA right 1.0 | wrong 0.4 | AQ right 0.3 | wrong 0.1) |
         no answer (the dialogue ended on a question, or broke off) 0 -- and a wrong answer is
         worth 0, not 0.4 / 0.1,
         when the user never gave the detail it needed (a guess at a vague question)
  gates  per turn, rl.world_misread unless the turn's key row is the question's type as it
         stands at that turn (a vague question becomes definite once the user gave the detail)
         times rl.world_unpriced unless the move is its own table's strict pick; the product
         over the turns (both 0 by default: every turn must read right and follow its table);
         and rl.world_hedge on the cell when the final answer comes with a follow-up (AQ)

  U = eps + 0.5 A + 0.2 mean R_u + 0.3 mean Q_r
  L = eps + 0.2 mean F + 0.2 mean P + 0.4 A + 0.2 mean R_l + rl.world_consistency x mean C

the single-turn world's formula (`rewards.tasks`, `rewards.world`) with its terms averaged over
the turns. A one-turn dialogue that answers a definite question scores exactly what the
single-turn reward gives it; a vague question pays only once it is answered right, which needs
the detail, which needs a question about it: asking the right thing and then answering (0.8 if
right) beats a guess (0, unless lucky) and beats asking about the wrong thing first (0.6), and on
a definite question a needless question costs a turn (0.8 against 1.0). A dialogue whose last
turn has no valid trace scores U = L = 0, like an invalid single-turn trace.

Other sources (an LLM user on ambig_qa, abg-coqa): the final turn's single-turn reward from the
run's judge, less the same time cost on its answer terms (0.5 TURN_COST per extra turn on U,
0.4 TURN_COST on L), floored at eps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from gtalign.data import world as world_data
from gtalign.dialogue import episodes as ep_lib
from gtalign.dialogue import simulator as sim_lib
from gtalign.rewards import components, tasks
from gtalign.rewards import world as world_rewards
from gtalign.training import rollout

TURN_COST = 0.2  # of the answer term, per assistant turn after the first
# right, wrong (the detail known): the single-turn world's definite-question cells
DA_CELLS = {right: world_rewards.DQ_CELLS[("DA", right)] for right in (True, False)}
AQ_CELLS = {right: world_rewards.DQ_CELLS[("AQ", right)] for right in (True, False)}


@dataclasses.dataclass
class Scored:
  user: float
  llm: float
  judge_failed: bool
  components: dict[str, float]

  @property
  def welfare(self) -> float:
    return math.sqrt(max(self.user, 0.0) * max(self.llm, 0.0))


def turn_types(episode: ep_lib.Episode) -> list[str]:
  """The question's type as each turn sees it: a vague world question is definite once the user
  has given the detail."""
  kind = episode.row["extra_info"].get("question_type")
  out = []
  for t in episode.turns:
    out.append(kind)
    if t.reply_kind == sim_lib.DETAIL:
      kind = "DQ"
  return out


def _gate(turn: ep_lib.Turn, kind: str, misread: float, unpriced: float) -> float:
  key = turn.parsed.chosen_key
  read_right = key is not None and key.startswith(f"{kind}_")
  return (1.0 if read_right else misread) * (1.0 if world_rewards.priced(turn.parsed)
                                             else unpriced)


def world_answer(episode: ep_lib.Episode, misread: float = world_rewards.DEFAULT_MISREAD,
                 unpriced: float = world_rewards.DEFAULT_UNPRICED,
                 hedge: float = world_rewards.DEFAULT_HEDGE) -> tuple[float, dict[str, float]]:
  """(A, components) of a world dialogue (the module docstring's formula)."""
  info = episode.row["extra_info"]
  final = episode.final
  kinds = turn_types(episode)
  answered = episode.ended == ep_lib.ANSWERED
  correct = answered and world_rewards.answer_correct(
      final.parsed.response, info.get("aliases") or [info["answer"]],
      info.get("single_turn_prompt", ""), world_data.category_answers(info["category"]))
  cells = DA_CELLS if final.action == "DA" else AQ_CELLS
  known = kinds[-1] == "DQ"
  cell = (cells[correct] if correct or known else 0.0) if answered else 0.0
  cell *= hedge if final.action == "AQ" else 1.0
  gates = math.prod(_gate(t, k, misread, unpriced) for t, k in zip(episode.turns, kinds))
  turns = len(episode.turns)
  asked = [t.action == "CQ" for t in episode.turns]
  parts = {"correct": float(correct), "turns": float(turns), "answered": float(answered),
           "asks": float(sum(asked)), "gates": float(gates),
           "wrong_detail": float(sum(t.reply_kind == sim_lib.UNKNOWN for t in episode.turns)),
           "got_detail": float(any(t.reply_kind == sim_lib.DETAIL for t in episode.turns))}
  return max(0.0, cell * gates - TURN_COST * (turns - 1)), parts


def _means(episode: ep_lib.Episode) -> dict[str, float]:
  turns = episode.turns
  mean = lambda f: float(np.mean([f(t) for t in turns]))
  return {"format": mean(lambda t: float(t.parsed.format_ok)),
          "payoff_distinctness": mean(lambda t: components.payoff_distinctness(t.parsed.payoff)),
          "user_length": mean(lambda t: components.user_length_term(t.parsed.response)),
          "llm_length": mean(lambda t: components.llm_length_term(t.parsed.text)),
          "reasoning_penalty": mean(lambda t: components.reasoning_penalty(t.parsed.reasoning,
                                                                           scale=500)),
          "consistency": mean(lambda t: world_rewards.consistency(t.parsed))}


def score_world(episode: ep_lib.Episode, consistency: float = world_rewards.DEFAULT_CONSISTENCY,
                misread: float = world_rewards.DEFAULT_MISREAD,
                unpriced: float = world_rewards.DEFAULT_UNPRICED,
                hedge: float = world_rewards.DEFAULT_HEDGE) -> Scored:
  a, parts = world_answer(episode, misread, unpriced, hedge)
  if not episode.final.parsed.valid:
    return Scored(0.0, 0.0, False, dict(parts, answer=0.0))
  m = _means(episode)
  eps = tasks.EPSILON
  user = eps + 0.5 * a + 0.2 * m["user_length"] + 0.3 * m["reasoning_penalty"]
  llm = (eps + 0.2 * m["format"] + 0.2 * m["payoff_distinctness"] + 0.4 * a
         + 0.2 * m["llm_length"] + consistency * m["consistency"])
  return Scored(user, llm, False, dict(parts, answer=a, **m))


def score_episodes(episodes: Sequence[ep_lib.Episode], judge, *, variant: str = "main",
                   parse_mode: str = "strict", on_judge_failure: str = "mask",
                   world_consistency: float = world_rewards.DEFAULT_CONSISTENCY,
                   world_misread: float = world_rewards.DEFAULT_MISREAD,
                   world_unpriced: float = world_rewards.DEFAULT_UNPRICED,
                   world_hedge: float = world_rewards.DEFAULT_HEDGE) -> list[Scored]:
  """Every episode's U and L: world rows by rule, the others through the judge (one batched
  call over their final turns)."""
  out: list[Scored | None] = [None] * len(episodes)
  others = []
  for i, e in enumerate(episodes):
    if e.row.get("data_source") == world_data.DATA_SOURCE:
      out[i] = score_world(e, world_consistency, world_misread, world_unpriced, world_hedge)
    else:
      others.append(i)
  if others:
    scored = rollout.score_rows([episodes[i].row for i in others],
                                [episodes[i].final.text for i in others], judge,
                                variant=variant, parse_mode=parse_mode,
                                on_judge_failure=on_judge_failure)
    for i, result in zip(others, scored.results):
      e = episodes[i]
      extra = len(e.turns) - 1
      user = result.user if result.user == 0 else max(tasks.EPSILON,
                                                       result.user - 0.5 * TURN_COST * extra)
      llm = result.llm if result.llm == 0 else max(tasks.EPSILON,
                                                   result.llm - 0.4 * TURN_COST * extra)
      parts = {k: float(v) for k, v in result.components.items()
               if isinstance(v, (int, float, bool))}
      parts.update(turns=float(len(e.turns)), asks=float(sum(t.action == "CQ"
                                                               for t in e.turns)),
                   answered=float(e.ended == ep_lib.ANSWERED))
      out[i] = Scored(user, llm, result.judge_failed, parts)
  return out
