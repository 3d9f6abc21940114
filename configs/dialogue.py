"""Multi-turn episodes against single-turn traces: one warm start, then RL arms per turn limit.

    python -m gtalign.main --config=configs/dialogue.py --workdir=workdir/dialogue

Every arm is the default GRPO run (configs/grpo.py) from the same warm start, with only
`rl.max_turns` (arm `turns<K>`: episodes of up to K assistant turns, the world's rule-based user
answering clarifying questions, U and L over the whole dialogue) and `rl.seed` changed. Each
arm's policy is scored on the held-out questions as greedy dialogues of up to 3 turns with the
same simulated user, so the single-turn policy meets the same test. Presets: (none) turns1
(single-turn, the reference) and turns3 at seeds 0, 1, 2; `tiny` for tests.
"""

import ml_collections

from configs import compare


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "tiny"):
    raise ValueError(f"unknown preset {arg!r} for configs/dialogue.py; expected '' or 'tiny'")
  c = compare.get_config(arg)
  c.compare.arms = "turns1,turns3"  # the first arm is the reference of every difference
  c.compare.seeds = "0" if arg == "tiny" else "0,1,2"
  c.eval.dialogue_turns = 3
  c.rl.simulator = "rule"
  # the shared warm start teaches half its vague questions as two-turn dialogues (ask, the
  # user gives the detail, answer), so that a policy can read a reply at all
  c.sft.dialogues = 0.5
  # an episode of up to 3 turns is ~1,400 tokens: the update runs in microbatches of 4
  # episodes (the same (sum, count) loss), so its logits fit the 2-core machine's 24 GiB
  c.rl.num_microbatches = max(4, c.rl.prompts_per_step * c.rl.num_samples // 4)
  # a dialogue's turns each write a <thinking> and an <analyze>; RL trains them all
  # (rl.train_thinking / train_analyze / train_other_row=False are single-turn only), in both arms alike
  c.rl.train_thinking = True
  c.rl.train_analyze = True
  c.rl.train_other_row = True
  return c
