"""Training utilities: metrics sinks and resume, orbax checkpoints, bootstrap CIs, plots."""

import glob
import json
import os
import re
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gtalign.training import evaluation
from gtalign.training.checkpoint import Checkpointer
from gtalign.training.metrics import MetricsWriter, read_metrics
from gtalign.training.plots import plot_training

# --------------------------------------------------------------------------- metrics


def _tb_events(logdir):
  """Every event of every event file under `logdir` (TFRecord framing, no TF needed)."""
  from tensorboardX.proto import event_pb2
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      yield event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4  # u64 length, u32 length crc, payload, u32 payload crc


def _tb_scalars(logdir):
  """{tag: [(step, value)]}."""
  out = {}
  for event in _tb_events(logdir):
    for v in event.summary.value:
      out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def test_writer_drops_the_killed_runs_steps_after_the_checkpoint_on_resume(tmp_path):
  w = MetricsWriter(tmp_path, total_steps=10, every=100, active=True)
  for step in range(1, 6):
    w.write(step, {"welfare": float(step), "loss": 1.0 / step})
    w.write_rollouts(step, [{"prompt": f"p{step}", "completion": "c", "user": np.float32(0.5)}])
  w.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 6, "welfa')  # a kill mid-line
  # killed after step 5, resumed from the checkpoint at step 3: steps 4, 5 are re-run
  w = MetricsWriter(tmp_path, total_steps=10, every=100, start_step=3, active=True)
  for step in range(4, 7):
    w.write(step, {"welfare": 10.0 * step, "loss": 0.0})
  w.write_rollouts(6, [{"prompt": "q", "completion": "d"}, {"prompt": "r", "completion": "e"}])
  w.close()
  with open(tmp_path / "metrics.jsonl") as f:
    lines = [json.loads(line) for line in f]  # every line whole: the cut one is gone
  assert [(r["step"], r["welfare"]) for r in lines] == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]
  assert read_metrics(tmp_path) == lines
  with open(tmp_path / "rollouts.jsonl") as f:
    rollouts = [json.loads(line) for line in f]
  assert [(r["step"], r["prompt"]) for r in rollouts] == [(1, "p1"), (2, "p2"), (3, "p3"),
                                                          (6, "q"), (6, "r")]
  assert rollouts[0]["user"] == 0.5
  assert not glob.glob(str(tmp_path / "*.tmp-*"))
  assert len(glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))) == 2  # none truncated
  assert len(_tb_scalars(str(tmp_path / "tb"))["welfare"]) == 8
  starts = [e.step for e in _tb_events(str(tmp_path / "tb")) if e.HasField("session_log")]
  assert starts == [4]  # TensorBoard's purge: hides the killed run's steps >= 4


def test_a_fresh_start_keeps_earlier_logs_beside(tmp_path):
  """Logs of a run killed before its first checkpoint are moved aside, not appended to or lost."""
  w = MetricsWriter(tmp_path, total_steps=3, every=100, start_step=0, active=True)
  w.write(1, {"loss": 1.0})
  w.close()
  w = MetricsWriter(tmp_path, total_steps=3, every=100, start_step=0, active=True)
  w.write(1, {"loss": 2.0})
  w.close()
  assert [json.loads(l)["loss"] for l in open(tmp_path / "metrics.jsonl")] == [2.0]
  (prev,) = glob.glob(str(tmp_path / "metrics.jsonl.prev-*"))
  assert [json.loads(l)["loss"] for l in open(prev)] == [1.0]


def test_read_metrics_resolves_an_appended_resume(tmp_path):
  """Logs written before resumes truncated them still read as one run."""
  lines = [{"step": s, "welfare": float(s)} for s in (1, 2, 3, 4, 5)] + [
      {"step": s, "welfare": 10.0 * s} for s in (4, 5, 6)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines)
                                          + '{"step": 7, "we')
  assert [(r["step"], r["welfare"]) for r in read_metrics(tmp_path)] == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]


def test_console_line_has_step_rate_and_eta(tmp_path, capsys):
  w = MetricsWriter(tmp_path, total_steps=200, every=2, start_step=100, active=True)
  w.write(101, {"welfare": 0.5, "loss": 0.25, "tokens": 4096})  # off `every`: no line
  w.write(102, {"welfare": 0.625, "loss": 0.125, "tokens": 4096, "note": "text"})
  w.close()
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1, lines
  line = lines[0]
  assert "102/200" in line
  assert re.search(r"[\d.e+]+ step/s [\d.]+[kMG]? tok/s", line), line
  assert re.search(r"eta \d+:\d\d", line), line
  assert re.search(r"elapsed \d+:\d\d", line), line
  assert "welfare 0.625" in line and "loss 0.125" in line


def test_first_line_without_start_step_has_no_rate(tmp_path, capsys):
  w = MetricsWriter(tmp_path, total_steps=10, active=True)
  w.write(1, {"loss": 1.0})
  w.write(2, {"loss": 0.5})
  w.close()
  first, second = capsys.readouterr().out.strip().splitlines()
  assert "-- step/s" in first and "eta --" in first
  assert "-- step/s" not in second and re.search(r"eta \d+:\d\d", second)


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
  w = MetricsWriter(tmp_path, total_steps=3, every=100, active=True)
  for step in (1, 2, 3):
    w.write(step, {"welfare": 0.25 * step, "kl": np.float32(0.5), "note": "skipped"})
  w.close()
  scalars = _tb_scalars(str(tmp_path / "tb"))
  assert scalars["welfare"] == [(1, 0.25), (2, 0.5), (3, 0.75)]
  assert scalars["kl"] == [(1, 0.5), (2, 0.5), (3, 0.5)]
  assert "note" not in scalars


def test_inactive_writer_writes_nothing(tmp_path):
  w = MetricsWriter(tmp_path / "w", total_steps=3, active=False)
  w.write(1, {"loss": 1.0})
  w.write_rollouts(1, [{"a": 1}])
  w.close()
  assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------- checkpoints


def _train_state():
  params = {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4) / 7,
            "emb": (jnp.arange(8, dtype=jnp.float32) / 3).astype(jnp.bfloat16)}
  tx = optax.adamw(1e-2)
  opt_state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return {"params": params, "opt_state": opt_state, "step": jnp.int32(7)}


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def test_checkpoint_round_trip(tmp_path):
  state = _train_state()
  meta = {"data_position": 1234, "rng": {"seed": 0, "state": np.array([3, 5], np.uint32)},
          "config": {"lr": 1e-2, "aggregation": "cobb_douglas", "layers": (2, 4)}}
  with Checkpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:
    assert ckpt.save(7, state, meta)
    ckpt.wait()
    restored, restored_meta = ckpt.restore(abstract_state=_abstract(state))
  assert jax.tree.structure(restored) == jax.tree.structure(state)  # NamedTuples rebuilt
  assert type(restored["opt_state"][0]).__name__ == "ScaleByAdamState"
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert restored["params"]["emb"].dtype == jnp.bfloat16
  assert restored_meta == {"data_position": 1234, "rng": {"seed": 0, "state": [3, 5]},
                           "config": {"lr": 1e-2, "aggregation": "cobb_douglas", "layers": [2, 4]}}


def test_checkpoint_interval_and_max_to_keep(tmp_path):
  state = {"x": jnp.ones(3)}
  ckpt = Checkpointer(tmp_path, max_to_keep=2, save_every=2)
  saved = [ckpt.save(s, {"x": state["x"] * s}, {"s": s}) for s in range(1, 8)]
  assert saved == [False, True, False, True, False, True, False]
  assert ckpt.save(7, state, {"s": 7}, force=True)
  assert not ckpt.save(7, state, {"s": 7}, force=True)  # a repeat is skipped, not an error
  ckpt.wait()
  assert ckpt.all_steps() == [6, 7] and ckpt.latest_step() == 7
  assert sorted(os.listdir(tmp_path)) == ["6", "7"]
  restored, meta = ckpt.restore(6, abstract_state={"x": jax.ShapeDtypeStruct((3,), jnp.float32)})
  np.testing.assert_array_equal(restored["x"], np.full(3, 6.0))
  assert meta == {"s": 6}
  ckpt.close()


def test_a_kept_step_outlives_max_to_keep_and_survives_a_restart(tmp_path):
  """`keep` (checkpoint.keep_warm_start: the warm start's last step) is never deleted to make
  room for newer steps, in this process or a resumed one."""
  state = {"x": jnp.ones(3)}
  ckpt = Checkpointer(tmp_path, max_to_keep=2, keep=(3,))
  for s in range(1, 7):
    ckpt.save(s, {"x": state["x"] * s}, {"s": s})
  ckpt.wait()
  assert ckpt.all_steps() == [3, 5, 6]
  ckpt.close()
  again = Checkpointer(tmp_path, max_to_keep=2, keep=(3,))
  for s in (7, 8):
    again.save(s, state, {"s": s})
  again.wait()
  assert again.all_steps() == [3, 7, 8]
  restored, meta = again.restore(3, abstract_state={"x": jax.ShapeDtypeStruct((3,), jnp.float32)})
  np.testing.assert_array_equal(restored["x"], np.full(3, 3.0))
  assert meta == {"s": 3}
  again.close()


def test_the_warm_start_saves_at_its_own_interval_and_at_its_end():
  """checkpoint.sft_every for warm-start steps, checkpoint.every after them; the warm start's
  last step (where RL starts) and the run's last step are always saved."""
  from configs import grpo
  from gtalign.training.checkpoint import due
  c = grpo.get_config().checkpoint
  saved = [s for s in range(1, 127) if due(s, 120, 126, c.every, c.sft_every)]
  assert saved == [20, 40, 60, 80, 100, 120, 124, 126]
  assert [s for s in range(1, 11) if due(s, 7, 10, 4, 3)] == [3, 6, 7, 8, 10]
  assert [s for s in range(1, 6) if due(s, 0, 5, 2, 20)] == [2, 4, 5]  # RL only


def test_latest_step_ignores_incomplete_checkpoints(tmp_path):
  state = {"x": jnp.ones(3)}
  ckpt = Checkpointer(tmp_path, max_to_keep=3)
  ckpt.save(2, state, {"s": 2})
  ckpt.close()
  # a save killed before orbax's rename, and a step dir without commit file (interrupted copy)
  (tmp_path / "5.orbax-checkpoint-tmp-1764000000" / "state").mkdir(parents=True)
  (tmp_path / "5.orbax-checkpoint-tmp-1764000000" / "state" / "manifest.ocdbt").write_bytes(b"x")
  (tmp_path / "9" / "state").mkdir(parents=True)
  ckpt = Checkpointer(tmp_path, max_to_keep=3)
  assert ckpt.latest_step() == 2 and ckpt.all_steps() == [2]
  _, meta = ckpt.restore(abstract_state=state)
  assert meta == {"s": 2}
  assert ckpt.save(3, state, {"s": 3})
  ckpt.wait()
  assert ckpt.latest_step() == 3
  ckpt.close()
  names = os.listdir(tmp_path)
  assert "9" not in names and any(n.startswith("9.incomplete-") for n in names)  # set aside
  assert not any(".orbax-checkpoint-tmp" in n for n in names)  # killed save cleaned up


def test_a_deletion_cut_short_by_a_kill_is_finished_at_start_up(tmp_path):
  """orbax deletes steps beyond max_to_keep in place; a kill midway leaves an old step without
  its commit file. It is removed (it was being deleted), not kept as an incomplete write."""
  state = {"x": jnp.ones(3)}
  ckpt = Checkpointer(tmp_path, max_to_keep=3)
  for step in (2, 4):
    ckpt.save(step, state, {"s": step})
  ckpt.close()
  os.remove(tmp_path / "2" / "commit_success.txt")  # the deletion got this far
  ckpt = Checkpointer(tmp_path, max_to_keep=3)
  assert ckpt.all_steps() == [4] and sorted(os.listdir(tmp_path)) == ["4"]
  ckpt.close()


def _damage(step_dir):
  """Truncates every data file of a step's OCDBT store to a third, as a full disk or a bad
  copy would leave them (which of the files a restore reads depends on orbax's layout)."""
  data = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
  assert len(data) >= 2
  for p in data:
    p.write_bytes(p.read_bytes()[:max(1, p.stat().st_size // 3)])


def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path, capsys):
  from gtalign.utils.errors import InvalidInput
  state = _train_state()
  with Checkpointer(tmp_path, max_to_keep=3, async_save=False) as ckpt:
    ckpt.save(4, state, {"s": 4})
    ckpt.save(8, jax.tree.map(lambda x: x * 2, state), {"s": 8})
  _damage(tmp_path / "8")
  with Checkpointer(tmp_path, max_to_keep=3, async_save=False) as ckpt:
    step, restored, meta = ckpt.restore_latest_intact(lambda step: _abstract(state))
    assert (step, meta) == (4, {"s": 4})
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert ckpt.all_steps() == [4]
    assert ckpt.save(8, state, {"s": 8})  # the run can write step 8 again
  out = capsys.readouterr().out
  assert f"checkpoint {tmp_path / '8'} failed to restore" in out
  assert any(n.startswith("8.corrupt-") for n in os.listdir(tmp_path))  # kept, not deleted

  _damage(tmp_path / "4")
  _damage(tmp_path / "8")
  with Checkpointer(tmp_path, max_to_keep=3, async_save=False) as ckpt:
    with pytest.raises(InvalidInput, match=f"remove {tmp_path}"):
      ckpt.restore_latest_intact(lambda step: _abstract(state))
  with Checkpointer(tmp_path / "empty") as ckpt:
    assert ckpt.restore_latest_intact(lambda step: _abstract(state)) is None


def test_a_checkpoint_of_another_config_is_rejected_naming_the_keys(tmp_path):
  from gtalign.utils.errors import InvalidInput
  state = _train_state()
  with Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(3, state, {"s": 3})
  other = dict(state, params={"w": jnp.zeros((4, 4)), "emb": state["params"]["emb"]},
               extra=jnp.zeros(2))
  with Checkpointer(tmp_path, async_save=False) as ckpt:
    with pytest.raises(InvalidInput) as e:
      ckpt.restore_latest_intact(lambda step: _abstract(other))
  message = str(e.value)
  assert "params/w: checkpoint (3, 4), this config (4, 4)" in message
  assert "extra: missing from the checkpoint" in message and f"remove {tmp_path}" in message
  assert sorted(os.listdir(tmp_path)) == ["3"]  # another config's checkpoint is not moved


def test_restore_without_checkpoint_raises(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError):
      ckpt.restore(abstract_state={"x": jnp.ones(3)})


# --------------------------------------------------------------------------- evaluation


def test_bootstrap_ci_covers_true_mean_and_shrinks_with_n():
  rng = np.random.default_rng(0)
  widths = []
  for n in (100, 2500):
    mean, lo, hi = evaluation.bootstrap_ci(rng.normal(2.0, 1.0, n), n_boot=1000)
    assert lo < 2.0 < hi and lo < mean < hi
    assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(n), rel=0.25)
    widths.append(hi - lo)
  assert widths[1] < widths[0] / 3  # width ~ 1/sqrt(n): 5x narrower
  assert evaluation.bootstrap_ci([1.0, np.nan, 3.0], n_boot=200)[0] == 2.0  # NaN dropped


def test_paired_difference_ci():
  rng = np.random.default_rng(1)
  prompt_effect = rng.normal(0.0, 2.0, 300)  # shared per prompt: only pairing removes it
  a = prompt_effect + rng.normal(0.0, 0.3, 300)
  shifted = prompt_effect + 0.2 + rng.normal(0.0, 0.3, 300)
  same = prompt_effect + rng.normal(0.0, 0.3, 300)
  diff, lo, hi = evaluation.paired_difference_ci(shifted, a)
  assert 0.0 < lo < diff < hi and diff == pytest.approx(0.2, abs=0.06)
  _, lo, hi = evaluation.paired_difference_ci(same, a)
  assert lo < 0.0 < hi
  _, lo_u, hi_u = evaluation.bootstrap_ci(shifted)  # unpaired intervals overlap: pairing matters
  assert lo_u < evaluation.bootstrap_ci(a)[2]
  with pytest.raises(ValueError):
    evaluation.paired_difference_ci(a, a[:-1])


def test_summary_table_is_markdown():
  rng = np.random.default_rng(2)
  rows = {"sft": {"format_ok": rng.integers(0, 2, 50), "user": rng.normal(0.5, 0.1, 50),
                  "response_tokens": rng.normal(300, 20, 50)},
          "gtalign": {"format_ok": np.ones(40), "welfare": rng.normal(0.6, 0.1, 40)}}
  table = evaluation.summary_table(rows, n_boot=200)
  lines = table.splitlines()
  assert len(lines) == 4
  assert all(line.startswith("|") and line.endswith("|") for line in lines)
  assert len({line.count("|") for line in lines}) == 1
  assert "format-valid rate" in lines[0] and "<response> tokens" in lines[0]
  assert lines[3].startswith("| gtalign | 40 | 1.000 [1.000, 1.000] |")
  assert re.search(r"\| 3\d\d\.\d \[\d+\.\d, \d+\.\d\] \| - \|$", lines[2]), lines[2]


# --------------------------------------------------------------------------- plots


def test_plot_training_writes_png(tmp_path):
  records = [{"step": s, "welfare": np.tanh(s / 30), "user": 0.5, "llm": 0.4 + s / 500,
              "format_ok": min(1.0, s / 50), "loss": 1 / (1 + s), "kl": s / 1000}
             for s in range(1, 101)]
  records += [{"step": s, "eval/welfare": np.tanh(s / 30) - 0.05} for s in (25, 50, 75, 100)]
  path = plot_training(records, tmp_path / "plots" / "training.png")
  with open(path, "rb") as f:
    data = f.read()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  assert len(data) > 20_000


# --------------------------------------------------------------------------- phase optimizers


def _rates(tx, params, steps):
  """The learning rate each of `steps` updates used (the injected hyperparameter, read after
  the update as the update step reports it)."""
  state, out = tx.init(params), []
  grads = jax.tree.map(jnp.ones_like, params)
  for _ in range(steps):
    _, state = tx.update(grads, state, params)
    out.append(float(optax.tree_utils.tree_get(
        state, "learning_rate", filtering=lambda _, value: isinstance(value, jax.Array))))
  return out


def test_phase_optimizers_follow_their_own_schedules():
  from configs import grpo
  from gtalign.training.loop import phase_optimizer
  config = grpo.get_config()
  config.sft.lr, config.sft.steps, config.sft.warmup_steps = 1.0, 8, 4
  config.sft.lr_schedule = "constant"
  config.rl.lr, config.rl.steps, config.rl.warmup_steps = 0.5, 4, 0
  config.rl.lr_schedule = "cosine"
  params = {"w": jnp.zeros((2,))}
  trainable = {"w": True}
  # SFT: linear warmup to its rate, then constant
  assert _rates(phase_optimizer(config, "sft", trainable), params, 6) == pytest.approx(
      [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
  # RL: its own rate from its first step, cosine to zero over its own 4 steps
  half_cos = [0.5 * 0.5 * (1 + np.cos(np.pi * s / 4)) for s in range(4)]
  assert _rates(phase_optimizer(config, "rl", trainable), params, 4) == pytest.approx(half_cos)
  config.rl.steps = 0  # a run without RL still builds its (unused) RL optimizer
  phase_optimizer(config, "rl", trainable)
  config.sft.lr_schedule = "linear"
  with pytest.raises(ValueError, match=r"sft\.lr_schedule='linear'"):
    phase_optimizer(config, "sft", trainable)


def test_finite_means_leave_out_what_no_row_defines_without_warnings():
  import warnings

  import numpy as np

  from gtalign.training import heldout
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # "Mean of empty slice" would fail the test
    assert heldout.finite_mean([np.nan, np.nan]) is None
    assert heldout.finite_mean([1.0, np.nan, 3.0]) == 2.0
    assert heldout.finite_mean([]) is None
    means = heldout.finite_means({"da_on_dq": np.array([np.nan]), "welfare": np.array([0.5])},
                                 prefix="eval/")
  assert means == {"eval/welfare": 0.5}


def test_eta_counts_each_phases_step_cost_and_the_evaluations_to_come():
  from gtalign.training.eta import Eta, Phase
  eta = Eta([Phase("sft", 4, 1.0), Phase("rl", 2, 3.0)], evals=2, eval_cost=5.0)
  assert eta.remaining(0) is None  # nothing timed yet
  for step, seconds in enumerate([9.0, 2.0, 2.0]):  # the first step compiles
    eta.record_step(step, seconds)
  # 1 SFT step at 2 s, 2 RL steps at 3 x 2 s (prior), 2 evaluations at 5 x 2 s (prior)
  assert eta.remaining(3) == pytest.approx(2 + 12 + 20)
  eta.record_step(3, 2.0)
  eta.record_eval(30.0)  # after the warm start: one evaluation left, now timed
  assert eta.remaining(4) == pytest.approx(12 + 30)
  eta.record_step(4, 10.0)  # RL measured: its own cost replaces the prior
  assert eta.remaining(5) == pytest.approx(10 + 30)
  eta.record_step(5, 10.0)
  eta.record_eval(40.0)
  assert eta.remaining(6) == 0


def test_console_eta_follows_the_phases(tmp_path, capsys):
  from gtalign.training.eta import Eta, Phase
  eta = Eta([Phase("sft", 2, 1.0), Phase("rl", 2, 4.0)], evals=0)
  w = MetricsWriter(tmp_path, total_steps=4, every=1, start_step=0, active=True, eta=eta)
  w.write(1, {"step_seconds": 1.0})
  w.write(2, {"step_seconds": 1.0})
  w.close()
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert "eta 0:08" in last, last  # two RL steps at 4 x 1 s, not two more SFT-rate seconds


def test_the_eta_prior_of_an_rl_step_grows_with_rollouts_updates_and_turns():
  """Until measured, the ETA prices an RL step in SFT steps: in proportion to its rollouts, each
  further update of its samples at UPDATE_SHARE, each further dialogue turn at its own cost."""
  from configs import grpo
  from gtalign.training import loop
  config = grpo.get_config()
  config.rl.prompts_per_step, config.rl.num_samples, config.rl.updates_per_batch = 2, 8, 1
  config.rl.max_turns = 1
  sft, rl = loop.step_costs(config)
  assert sft == 1.0 and rl == pytest.approx(loop.RL_STEP_COST)
  config.rl.prompts_per_step = 4
  assert loop.step_costs(config)[1] == pytest.approx(2 * loop.RL_STEP_COST)
  config.rl.updates_per_batch = 2
  assert loop.step_costs(config)[1] == pytest.approx(
      2 * loop.RL_STEP_COST * (1 + loop.UPDATE_SHARE))
  config.rl.updates_per_batch, config.rl.max_turns, config.sft.dialogues = 1, 3, 0.5
  assert loop.step_costs(config) == pytest.approx(
      (loop.SFT_DIALOGUE_COST, 2 * loop.RL_STEP_COST * (1 + 2 * loop.DIALOGUE_TURN_COST)))
