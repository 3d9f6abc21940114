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


def get_config(arg: str | None = None):
  c = grpo.get_config("tiny" if arg == "tiny" else None)
  c.rl.algorithm = "ppo"
  c.rl.advantage = "gae"
  c.rl.adv_std_floor = 0.0  # GRPO's group-std floor; GAE whitens its advantages instead
  c.rl.num_samples = 1
  c.rl.gamma = 1.0
  c.rl.lam = 1.0
  c.rl.clip_low = c.rl.clip_high = 0.2
  c.rl.dual_clip = 3.0
  c.rl.value_clip = 0.5
  c.rl.kl_coef = 0.0
  c.rl.entropy_coef = 0.0
  c.rl.loss_agg = "token-mean"
  if arg == "tiny":
    c.rl.prompts_per_step = 4
    c.rl.critic_lr = 1e-4
    return c
  if arg == "world":
    c.rl.prompts_per_step = 16
    c.rl.critic_lr = 1e-5
    return c
  if arg:
    raise ValueError(f"unknown preset {arg!r} for configs/ppo.py; expected '', 'world' or 'tiny'")
  c.model.name = "qwen2.5-3b-instruct"
  c.model.remat = True
  c.data.source = "math-hard"
  c.data.prompt_style = "full"
  c.data.max_prompt_length = 8192
  c.sft.steps = 0
  c.rl.steps = 180
  c.rl.prompts_per_step = 512
  c.rl.max_new_tokens = 8192
  c.rl.lr = 1e-6
  c.rl.critic_lr = 2e-6
  c.rl.trainable = "all"
  c.rl.num_microbatches = 64
  c.eval.every = 5
  c.eval.num_prompts = 353
  c.eval.max_new_tokens = 8192
  c.checkpoint.every = 10
  return c
