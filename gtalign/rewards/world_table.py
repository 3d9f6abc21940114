"""The world reward's cells as the README's table: (U, L, W) for every question type, move and
right-or-wrong case, on warm-start-shaped traces. Kept apart from `rewards.world` so the reward
itself imports nothing from the task router that calls it.

    python -m gtalign.rewards.world_table [--hedge=0.5]
"""

from __future__ import annotations

from typing import Any

from gtalign.data import warm_start
from gtalign.data import world as world_data
from gtalign.game.trace import RESPONSE_START, parse_trace
from gtalign.rewards import tasks
from gtalign.rewards import world as world_rewards


def cell_table(consistency_weight: float = world_rewards.DEFAULT_CONSISTENCY,
               hedge: float = world_rewards.DEFAULT_HEDGE) -> list[dict[str, Any]]:
  """(U, L, W) of every (question type, strategy, right or not) cell, on warm-start-shaped traces
  for one held-out definite and one vague world row: the table in the README.

  `python -m gtalign.rewards.world_table` prints it as markdown.
  """
  rows = world_data.make_world(0, num_train=0, num_test=2,
                               build_messages=lambda q, s: [{"role": "user", "content": q}])
  by_type = {r["extra_info"]["question_type"]: r for r in rows["test"]}
  dq, vq = by_type["DQ"], by_type["VQ"]
  wrong = next(a for a in world_data.category_answers(dq["extra_info"]["category"])
               if a not in dq["extra_info"]["aliases"])
  slot = vq["extra_info"]["missing_slot"]
  cases = [
      ("DQ", "DA", "correct", dq, "DA", None),
      ("DQ", "DA", "wrong", dq, "DA", (f"{dq['extra_info']['answer']}.", f"{wrong}.")),
      ("DQ", "AQ", "correct", dq, "AQ", None),
      ("DQ", "AQ", "wrong", dq, "AQ", (f"{dq['extra_info']['answer']}.", f"{wrong}.")),
      ("DQ", "CQ", "-", dq, "CQ", None),
      ("VQ", "CQ", "asks for the missing detail", vq, "CQ", None),
      ("VQ", "CQ", "asks about something else", vq, "CQ",
       (f"Which {slot} do you mean?", "What exactly do you mean?")),
      ("VQ", "AQ", "-", vq, "AQ", None),
      ("VQ", "DA", "a guess", vq, "DA", None),
  ]
  out = []
  for kind, strategy, note, row, plan, edit in cases:
    text = warm_start.format_trace(row, plan)
    if edit:
      head, response = text.split(RESPONSE_START)
      text = head + RESPONSE_START + response.replace(*edit)
    parsed = parse_trace(text)
    r = tasks.reward(row, parsed, [], world_consistency=consistency_weight, world_hedge=hedge)
    out.append({"type": kind, "strategy": strategy, "case": note, "response": parsed.response,
                "user": r.user, "llm": r.llm, "welfare": r.score})
  return out


if __name__ == "__main__":
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--hedge", type=float, default=world_rewards.DEFAULT_HEDGE,
                      help="rl.world_hedge: the factor on an AQ's cell")
  args = parser.parse_args()
  print("| question | strategy | case | example response | U | L | W = sqrt(U L) |")
  print("|---|---|---|---|---:|---:|---:|")
  for c in cell_table(hedge=args.hedge):
    print(f"| {c['type']} | {c['strategy']} | {c['case']} | {c['response']} | {c['user']:.3f} | "
          f"{c['llm']:.3f} | {c['welfare']:.3f} |")
