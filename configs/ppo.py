"""PPO with a critic and GAE on mutual welfare: the paper's training setting.

Presets (`--config=configs/ppo.py:NAME`):
  (none)  the paper's run (method reference, section 9): Qwen2.5-3B-Instruct actor and critic,
          GTAlign math-hard data (`--config.data.dir=.../gtalign`), actor lr 1e-6, critic lr
          2e-6, AdamW (0.9, 0.999, wd 0.01), grad clip 1.0, constant rate, one sample per prompt,
          512 prompts per step, GAE gamma = lambda = 1 with whitened advantages, clip 0.2, dual
          clip 3, value clip 0.5, token-mean loss, no KL and no entropy bonus, 8192/8192 tokens,
          greedy validation every 5 steps. One optimizer step per rollout batch here, where verl
          splits the 512 into 16 mini-batches of 32.
  world   the same algorithm on SmolLM2-135M and the built-in world, sized for a CPU.
  tiny    seconds, for tests.
"""

from configs import grpo


def _ppo(c):
  """The paper's algorithm (method reference, section 9) on any grpo.py preset."""
  c.rl.algorithm = "ppo"
  c.rl.advantage = "gae"
  c.rl.adv_std_floor = 0.0  # GRPO's group-std floor; GAE whitens its advantages instead
  c.rl.num_samples = 1
  c.rl.updates_per_batch = 1
  c.rl.gamma = 1.0
  c.rl.lam = 1.0
  c.rl.clip_low = c.rl.clip_high = 0.2
  c.rl.dual_clip = 3.0
  c.rl.value_clip = 0.5
  c.rl.kl_coef = 0.0
  c.rl.entropy_coef = 0.0
  c.rl.loss_agg = "token-mean"
  return c


def get_config(arg: str | None = None):
  if arg == "tiny":
    c = _ppo(grpo.get_config("tiny"))
    c.rl.prompts_per_step = 4
    c.rl.critic_lr = 1e-4
    return c
  if arg == "world":
    c = _ppo(grpo.get_config())
    c.rl.prompts_per_step = 16
    c.rl.critic_lr = 1e-5
    return c
  if arg:
    raise ValueError(f"unknown preset {arg!r} for configs/ppo.py; expected '', 'world' or 'tiny'")
  # grpo.py's gtalign_math run (Qwen2.5-3B, math-hard, lr 1e-6, every weight) at the paper's
  # sizes: 512 prompts a step, 8192-token prompts and completions
  c = _ppo(grpo.get_config("gtalign_math"))
  c.data.max_prompt_length = 8192
  c.rl.prompts_per_step = 512
  c.rl.max_new_tokens = 8192
  c.rl.critic_lr = 2e-6
  c.rl.num_microbatches = 64
  c.eval.max_new_tokens = 8192
  return c
