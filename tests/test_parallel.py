"""Mesh sizing, logical-axis shardings, train state placement and the sharded update step.

Multi-device checks run in subprocesses (`parallel_worker.py`) with 8 fake CPU devices, because
this process's device count is fixed once jax starts. They are launched first so that they
compile while the single-device tests below run.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

import parallel_worker as worker
from gtalign.models.config import get_preset
from gtalign.models.transformer import logical_axes
from gtalign.parallel import mesh as mesh_lib
from gtalign.rl import train_state as ts
from gtalign.rl.update import make_update_step

WORKER = pathlib.Path(__file__).with_name("parallel_worker.py")
_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def _start_worker(devices: int, mesh: str, checks: str) -> subprocess.Popen:
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_FLAG)]
  if devices > 1:
    flags.append(f"{_DEVICE_FLAG}={devices}")
  env = dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")
  cmd = [sys.executable, str(WORKER), "--devices", str(devices), "--mesh", mesh,
         "--checks", checks]
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


class _Workers:
  """The two worker processes, read on first use."""

  def __init__(self):
    self._procs = {1: _start_worker(1, "1,1,1", "train,grpo"),
                   8: _start_worker(8, "2,2,2", "shardings,train,grpo,memory")}
    self._results = {}

  def __getitem__(self, devices: int) -> dict:
    if devices not in self._results:
      proc = self._procs[devices]
      out, err = proc.communicate(timeout=300)
      assert proc.returncode == 0, f"worker with {devices} devices failed:\n{err[-4000:]}"
      self._results[devices] = json.loads(out.strip().splitlines()[-1])
    return self._results[devices]

  def close(self):
    for proc in self._procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module", autouse=True)
def workers():
  started = _Workers()
  yield started
  started.close()


@pytest.fixture(scope="module")
def tiny_params():
  """Host (numpy) copies: the update step donates device buffers."""
  return jax.tree.map(np.asarray, worker.init_tiny_params())


@pytest.fixture(scope="module")
def mesh1():
  return mesh_lib.make_mesh(mesh_lib.MeshConfig(1, 1, 1), jax.devices()[:1])


# ----------------------------------------------------------------------------------- mesh


@pytest.mark.parametrize("cfg, devices, expected", [
    (mesh_lib.MeshConfig(), 8, (1, 8, 1)),
    (mesh_lib.MeshConfig(data=2, fsdp=-1, tensor=2), 8, (2, 2, 2)),
    (mesh_lib.MeshConfig(data=-1, fsdp=2, tensor=1), 8, (4, 2, 1)),
    (mesh_lib.MeshConfig(data=2, fsdp=2, tensor=2), 8, (2, 2, 2)),
    (mesh_lib.MeshConfig(), 1, (1, 1, 1)),
])
def test_mesh_config_resolves_the_fill_axis(cfg, devices, expected):
  assert cfg.resolve(devices) == expected


@pytest.mark.parametrize("cfg, devices, message", [
    (mesh_lib.MeshConfig(data=3), 8, r"product 3 does not divide the 8 devices"),
    (mesh_lib.MeshConfig(data=2, fsdp=2, tensor=1), 8, r"has 4 devices but 8 are available"),
    (mesh_lib.MeshConfig(data=-1, fsdp=-1), 8, r"at most one mesh axis may be -1"),
    (mesh_lib.MeshConfig(tensor=0), 8, r"positive or -1"),
])
def test_mesh_config_errors_name_the_numbers(cfg, devices, message):
  with pytest.raises(ValueError, match=message):
    cfg.resolve(devices)


def test_make_mesh_has_auto_axes(mesh1):
  assert mesh1.axis_names == mesh_lib.MESH_AXES
  assert dict(mesh1.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh1.axis_types)
  with pytest.raises(ValueError, match="has 2 devices but 1"):
    mesh_lib.make_mesh(mesh_lib.MeshConfig(data=2, fsdp=1), jax.devices()[:1])


def test_logical_specs_drop_axes_that_do_not_divide_or_repeat():
  mesh = AbstractMesh((2, 2, 2), mesh_lib.MESH_AXES)
  rules = mesh_lib.ShardingRules()
  to_mesh = lambda spec, shape: mesh_lib.logical_to_mesh_spec(P(*spec), rules, mesh, shape)
  assert to_mesh(("embed", "heads", "head_dim"), (64, 4, 16)) == P("fsdp", "tensor")
  assert to_mesh(("embed", "kv_heads", "head_dim"), (64, 1, 16)) == P("fsdp")  # 1 kv head
  assert to_mesh(("vocab", "embed"), (255, 64)) == P(None, "fsdp")  # odd vocab
  # head_dim on tensor too: tensor is taken by heads, so head_dim stays replicated
  both = mesh_lib.ShardingRules(head_dim="tensor")
  assert mesh_lib.logical_to_mesh_spec(P("embed", "heads", "head_dim"), both, mesh,
                                       (64, 4, 16)) == P("fsdp", "tensor")
  # a two-axis rule keeps the prefix of axes that divides
  batch = lambda n: mesh_lib.logical_to_mesh_spec(P("batch"), rules, mesh, (n,))
  assert batch(8) == P(("data", "fsdp"))
  assert batch(6) == P("data")
  with pytest.raises(KeyError, match="no sharding rule for logical axis 'nope'"):
    to_mesh(("nope",), (4,))


def test_param_shardings_cover_the_tree(mesh1, tiny_params):
  config = get_preset("tiny-llama")
  shardings = mesh_lib.param_shardings(mesh1, logical_axes(config), shapes=tiny_params)
  assert jax.tree.structure(shardings) == jax.tree.structure(tiny_params)
  assert mesh_lib.replicated(mesh1).spec == P()
  assert mesh_lib.batch_sharding(mesh1).spec == P(("data", "fsdp"))


# ---------------------------------------------------------------------- optimizer and masks


def test_trainable_mask_top_k_blocks(tiny_params):
  mask = ts.trainable_mask(tiny_params, "top_k_blocks:1")
  trained = {ts.path_str(p).split("/")[0] for p, t in
             jax.tree_util.tree_flatten_with_path(mask)[0] if t}
  assert trained == {"layers_1", "norm", "lm_head"}
  assert all(jax.tree.leaves(ts.trainable_mask(tiny_params, "all")))
  tied = jax.eval_shape(lambda: worker.init_params(get_preset("tiny-qwen2"),
                                                   jax.random.PRNGKey(0)))
  tied_mask = ts.trainable_mask(tied, "top_k_blocks:2")
  assert "lm_head" not in tied_mask and tied_mask["embed_tokens"]["embedding"] is False
  assert all(jax.tree.leaves(tied_mask["layers_0"]))
  for bad in ("top_k_blocks:0", "top_k_blocks:3", "last:1"):
    with pytest.raises(ValueError):
      ts.trainable_mask(tiny_params, bad)


def test_schedules():
  warm = ts.make_schedule(1.0, "constant", warmup_steps=4)
  assert [float(warm(s)) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
  cos = ts.make_schedule(1.0, "cosine", warmup_steps=2, total_steps=12)
  assert float(cos(2)) == pytest.approx(1.0) and float(cos(7)) == pytest.approx(0.5)
  assert float(cos(12)) == pytest.approx(0.0)
  with pytest.raises(ValueError, match="total_steps"):
    ts.make_schedule(1.0, "cosine", warmup_steps=2)


# ------------------------------------------------------------------------------ update step


def _step_once(params, tx, mesh, num_microbatches, trainable=None, batch=None):
  config = get_preset("tiny-llama")
  shardings = mesh_lib.param_shardings(mesh, logical_axes(config), shapes=params)
  state = ts.create_train_state(params, tx, mesh, shardings)
  step = make_update_step(worker.token_nll_loss, tx,
                          ts.train_state_shardings(params, tx, mesh, shardings),
                          mesh_lib.batch_sharding(mesh), num_microbatches, trainable=trainable)
  state, metrics = step(state, worker.make_batch() if batch is None else batch)
  return jax.device_get(state), jax.device_get(metrics)


def test_microbatches_give_the_full_batch_gradient(mesh1, tiny_params):
  # SGD with rate 1: the param change is minus the gradient.
  tx = optax.sgd(1.0)
  state1, m1 = _step_once(tiny_params, tx, mesh1, 1)
  state4, m4 = _step_once(tiny_params, tx, mesh1, 4)
  grads1 = jax.tree.map(np.subtract, tiny_params, state1.params)
  grads4 = jax.tree.map(np.subtract, tiny_params, state4.params)
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads1)) > 1e-3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), grads1, grads4)
  assert m1["count"] == m4["count"] == worker.make_batch()["mask"].sum()
  np.testing.assert_allclose(m1["loss"], m4["loss"], atol=1e-6, rtol=0)
  np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], atol=1e-6, rtol=0)
  assert int(state4.step) == 1


def test_batch_not_divisible_by_microbatches_raises(mesh1, tiny_params):
  with pytest.raises(ValueError, match="not divisible by num_microbatches=3"):
    _step_once(tiny_params, optax.sgd(1.0), mesh1, 3)


@pytest.mark.parametrize("mask_in_step", [True, False], ids=["step_mask", "optimizer_mask_only"])
def test_top_k_blocks_trains_only_the_top(mesh1, tiny_params, mask_in_step):
  mask = ts.trainable_mask(tiny_params, "top_k_blocks:1")
  tx = ts.make_optimizer(1e-2, trainable=mask)
  state, metrics = _step_once(tiny_params, tx, mesh1, 2, trainable=mask if mask_in_step else None)
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), tiny_params, state.params)
  assert jax.tree.leaves(changed) == jax.tree.leaves(mask)  # trained leaves all moved, rest kept
  assert metrics["learning_rate"] == pytest.approx(1e-2)
  # Adam moments only for trainable leaves: 2 floats per trainable param, plus scalars.
  trainable_size = sum(x.size for x, t in zip(jax.tree.leaves(tiny_params),
                                              jax.tree.leaves(mask)) if t)
  opt_arrays = [x for x in jax.tree.leaves(state.opt_state) if np.ndim(x)]
  assert sum(x.size for x in opt_arrays) == 2 * trainable_size
  frozen_size = sum(x.size for k in ("embed_tokens", "layers_0")
                    for x in jax.tree.leaves(tiny_params[k]))
  assert trainable_size + frozen_size == sum(x.size for x in jax.tree.leaves(tiny_params))


# ------------------------------------------------------------------------- 8 fake devices


def test_param_shardings_on_a_2x2x2_mesh(workers):
  result = workers[8]["shardings"]
  assert result["mesh_shape"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert result["axis_types"] == ["AxisType.Auto"] * 3
  specs = result["specs"]
  assert specs["embed_tokens/embedding"] == str(("tensor", "fsdp"))
  assert specs["layers_0/self_attn/q_proj/kernel"] == str(("fsdp", "tensor"))
  assert specs["layers_0/self_attn/k_proj/kernel"] == str(("fsdp", "tensor"))
  assert specs["layers_0/self_attn/o_proj/kernel"] == str(("tensor", None, "fsdp"))
  assert specs["layers_1/mlp/down_proj/kernel"] == str(("tensor", "fsdp"))
  assert specs["lm_head/kernel"] == str(("fsdp", "tensor"))
  assert specs["norm/scale"] == str(("fsdp",))
  assert result["qwen_k_proj"] == str(("fsdp",))  # one kv head: tensor dropped
  assert result["batch"] == str((("data", "fsdp"),))


def test_train_state_placement_on_8_devices(workers):
  train = workers[8]["train"]
  assert train["q_spec"] == train["q_mu_spec"] == str(("fsdp", "tensor"))
  assert train["q_shard_shape"] == [32, 2, 16]
  assert train["scalar_opt_leaves_fully_replicated"]
  assert train["step"] == 3


def test_losses_match_between_1_and_8_devices(workers):
  one, eight = workers[1]["train"], workers[8]["train"]
  assert workers[1]["devices"] == 1 and workers[8]["devices"] == 8
  np.testing.assert_allclose(one["losses"], eight["losses"], atol=1e-5, rtol=0)
  assert one["losses"][2] < one["losses"][0]
  assert [m["learning_rate"] for m in eight["metrics"]] == pytest.approx([5e-4, 1e-3, 1e-3])


def test_gtalign_objective_same_losses_on_1_and_8_devices(workers):
  """Welfare, per-source z-score and group advantages run inside the sharded jitted step."""
  one, eight = workers[1]["grpo"]["losses"], workers[8]["grpo"]["losses"]
  assert len(one) == 3 and any(abs(x) > 1e-4 for x in one)
  np.testing.assert_allclose(eight, one, atol=1e-5)


def test_fsdp_8_compiled_state_memory_is_an_eighth(workers):
  """The compiled train step's per-device params + optimizer state, from XLA's memory analysis,
  is at most 1/6 of the unsharded size (1/8 plus replicated scalars)."""
  memory = workers[8]["memory"]
  assert memory["mesh_shape"] == {"data": 1, "fsdp": 8, "tensor": 1}
  state_bytes = memory["argument_bytes"] - memory["batch_bytes_per_device"]
  unsharded = memory["unsharded_state_bytes"]
  assert unsharded > 1_000_000
  assert state_bytes <= unsharded / 6, (state_bytes, unsharded)
  assert state_bytes >= unsharded / 8  # the analysis does count the state
  # the placed arrays agree with what the compiled program expects
  assert abs(memory["state_bytes_per_device"] - state_bytes) <= 64
