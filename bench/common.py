"""What the bench scripts share: their prompts, the other-process CPU check, a rollout-shaped
batch and the trainer's GRPO update step built the way `training/loop.py` builds it."""

from __future__ import annotations

import functools
import os

import numpy as np

PROMPTS = 64
_TOPICS = ("the sea", "a city at night", "autumn", "a lost key", "coffee", "the moon",
           "a long train ride", "a garden")
_ASKS = ("Write a short poem about {}.", "Describe {} in three sentences.",
         "Give me two facts about {}.", "Tell a tiny story about {}.",
         "What does {} make you think of?", "Explain {} to a child.",
         "List three words that go with {}.", "Write a haiku about {}.")


def prompts() -> list[str]:
  """64 distinct user turns."""
  return [a.format(t) for a in _ASKS for t in _TOPICS][:PROMPTS]


class OtherLoad:
  """CPU seconds used by other processes between start() and stop(), from /proc/stat.

  `ours` names further processes whose CPU counts as the benchmark's own (a server it started).
  """

  def __init__(self, ours: tuple[int, ...] = ()):
    self._ours = ours

  def start(self):
    self._busy, self._own = self._machine_busy(), self._own_cpu()
    return self

  def stop(self) -> float:
    return max(0.0, (self._machine_busy() - self._busy) - (self._own_cpu() - self._own))

  @staticmethod
  def _machine_busy() -> float:
    with open("/proc/stat") as f:
      fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

  def _own_cpu(self) -> float:
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    for pid in self._ours:
      with open(f"/proc/{pid}/stat") as f:  # utime and stime: fields 14 and 15
        fields = f.read().rsplit(")", 1)[1].split()
      own += (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own


def random_rollout_batch(rows: int, prompt: int, completion: int, vocab: int) -> dict:
  """A rollout-shaped update batch of random tokens and welfare (seeded)."""
  from gtalign.training import rollout
  rng = np.random.default_rng(0)
  batch = rollout.sequence_batch([list(rng.integers(0, vocab, prompt)) for _ in range(rows)],
                                 [list(rng.integers(0, vocab, completion)) for _ in range(rows)],
                                 pad_id=2)
  window = batch["targets_bc"].shape[1]
  batch.update(old_logp_bc=np.full((rows, window), -10.0, np.float32),
               user_b=rng.uniform(0.1, 0.9, rows).astype(np.float32),
               llm_b=rng.uniform(0.1, 0.9, rows).astype(np.float32),
               reward_valid_b=np.ones(rows, np.float32), source_b=np.zeros(rows, np.int32))
  return batch


def timed_updates(state, step, batch, repeats: int):
  """(mean seconds of `repeats` update steps after a compiling one, CPU seconds other processes
  took meanwhile, the final state)."""
  import time

  import jax
  holder = {"state": state}

  def run_step():
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics)

  run_step()  # compile
  load = OtherLoad().start()
  start = time.perf_counter()
  for _ in range(repeats):
    run_step()
  seconds = (time.perf_counter() - start) / repeats
  return seconds, load.stop(), holder["state"]


def grpo_update(model_config, params, trainable_spec: str, ocfg):
  """(train state, jitted update step, optimizer) of GRPO on `params`, one device mesh."""
  import jax

  from gtalign.models.transformer import logical_axes
  from gtalign.parallel.mesh import MeshConfig, batch_sharding, make_mesh, param_shardings
  from gtalign.rl import objective, train_state, update
  mesh = make_mesh(MeshConfig())
  host = jax.tree.map(np.asarray, params)
  shardings = param_shardings(mesh, logical_axes(model_config), shapes=host)
  from gtalign.adapters import lora
  trainable = (lora.trainable if lora.enabled(model_config) else train_state.trainable_mask)(
      host, trainable_spec)
  tx = train_state.make_optimizer(1e-6, trainable=trainable)
  state = train_state.create_train_state(host, tx, mesh, shardings)
  step = update.make_update_step(
      functools.partial(objective.policy_loss, model_config, ocfg), tx,
      train_state.train_state_shardings(host, tx, mesh, shardings), batch_sharding(mesh),
      trainable=trainable, prepare_batch=functools.partial(objective.welfare_advantages, ocfg))
  return state, step, tx
