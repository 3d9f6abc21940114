"""The `tiny_lora` preset end to end: a run trains only its adapters, checkpoints only them,
resumes after SIGKILL exactly, exports a PEFT adapter that Hugging Face PEFT loads onto the base
to give the merged export's logits, and `gtalign.serve --adapter` serves it."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# short, with a KL term (its reference: the same weights with the adapters off)
CMD = [sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:tiny_lora",
       "--config.sft.steps=6", "--config.rl.steps=3", "--config.rl.kl_coef=0.05",
       "--config.checkpoint.every=1", "--config.eval.at_start=False",
       "--config.eval.base_plain=False", "--config.eval.phrasings=False",
       "--config.eval.num_prompts=2", "--config.eval.chunk=2", "--config.eval.max_new_tokens=32",
       "--config.rl.max_new_tokens=48"]


def _cmd(workdir, *extra):
  return CMD + [f"--workdir={workdir}", *extra]


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _adapter_tensors(workdir):
  from safetensors.numpy import load_file
  return load_file(os.path.join(workdir, "export", "adapter", "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("lora") / "run"
  proc = subprocess.run(_cmd(workdir), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_only_adapters_train_and_the_checkpoint_holds_no_base_weight(run):
  from gtalign.training.checkpoint import Checkpointer
  workdir, proc = run
  assert "adapter parameters train" in proc.stdout + proc.stderr
  assert "memory plan on one device" in proc.stdout + proc.stderr
  last = _metrics(workdir)[-1]
  # the KL to the base (the adapters off) is measured, and after the warm start it is not 0
  assert last["step"] == 9 and np.isfinite(last["loss"]) and last["kl"] > 0.01
  step_dir = os.path.join(workdir, "checkpoints", "9")
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    stored = ckpt._manager.item_metadata(9)["state"]  # pylint: disable=protected-access
  tree = getattr(stored, "tree", stored)
  import jax
  paths = ["/".join(str(getattr(k, "key", k)) for k in p) for p, _ in
           jax.tree_util.tree_flatten_with_path(tree["policy"]["params"])[0]]
  assert paths and all(p.endswith(("lora_a", "lora_b")) for p in paths), paths[:5]
  assert tree["reference"] is None  # no reference copy: the adapters switch off
  # the whole step directory is smaller than the base's float32 weights by far
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(step_dir) for f in fs)
  assert size < 1_000_000
  saved_meta = json.load(open(os.path.join(step_dir, "meta", "metadata")))
  assert len(saved_meta["base_fingerprint"]) == 16
  assert saved_meta["adapters"] == {"rank": 8, "alpha": 16.0, "targets": [
      "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def test_sigkill_then_resume_ends_identical_to_the_uninterrupted_run(run, tmp_path):
  workdir, _ = run
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_cmd(killed), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  # kill once an RL step's checkpoint (step 7) is committed: the resume replays RL steps
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.isfile(killed / "checkpoints" / "7" / "commit_success.txt"):
      os.kill(proc.pid, signal.SIGKILL)
      break
    time.sleep(0.05)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
  resumed = subprocess.run(_cmd(killed), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step" in resumed.stdout + resumed.stderr
  want, got = _metrics(workdir), _metrics(killed)
  drop = ("time", "step_seconds", "time/handoff_s", "time/sample_s", "time/judge_s")
  strip = lambda r: {k: v for k, v in r.items() if k not in drop}
  assert [strip(r) for r in got[-2:]] == [strip(r) for r in want[-2:]]
  a, b = _adapter_tensors(workdir), _adapter_tensors(killed)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_resume_on_another_base_is_refused_in_one_line(run, tmp_path):
  import shutil
  workdir, _ = run
  copy = tmp_path / "copy"
  shutil.copytree(workdir / "checkpoints", copy / "checkpoints")
  # bfloat16 base weights: the same adapters' shapes, another base
  proc = subprocess.run(_cmd(copy, "--config.model.param_dtype=bfloat16"), cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  err = proc.stderr.strip().splitlines()[-1]
  assert "holds adapters trained on another base" in err and "model.name='tiny-random'" in err


def test_peft_loads_the_exported_adapter_onto_the_base_with_the_merged_logits(run):
  import torch
  from peft import PeftModel
  from transformers import AutoModelForCausalLM
  workdir, _ = run
  export = workdir / "export"
  config = json.load(open(export / "adapter" / "adapter_config.json"))
  assert config["base_model_name_or_path"] == str(export / "base")
  assert config["r"] == 8 and len(config["target_modules"]) == 7
  base = AutoModelForCausalLM.from_pretrained(export / "base", dtype=torch.float32)
  adapted = PeftModel.from_pretrained(base, export / "adapter")
  merged = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
  ids = torch.tensor([[1, 20, 300, 4000, 5, 77, 900, 12, 4321, 33]])
  with torch.no_grad():
    want, got = merged(ids).logits, adapted(ids).logits
    plain = adapted.get_base_model()
    with adapted.disable_adapter():
      off = plain(ids).logits
  assert float((want - got).abs().max()) < 1e-4
  assert float((want - off).abs().max()) > 1e-2  # the adapters trained: they matter


def test_serve_with_adapter_answers_as_the_merged_export(run, tmp_path):
  import httpx
  from serve_process import ServerProcess
  workdir, _ = run
  export = workdir / "export"
  body = {"model": "tiny", "messages": [{"role": "user", "content": "What is 4 plus 3?"}],
          "max_tokens": 12, "temperature": 0}
  servers = [ServerProcess(model, tmp_path / f"{name}.log", *flags) for name, model, flags in
             (("adapter", export / "base", [f"--adapter={export / 'adapter'}"]),
              ("merged", export, []))]
  try:
    replies = [httpx.post(f"{server.base_url}/chat/completions", json=body,
                          timeout=120).json()["choices"][0]["message"]["content"]
               for server in servers]
  finally:
    for server in servers:
      server.close()
  assert replies[0] == replies[1] and replies[0]


def test_serve_refuses_a_directory_that_is_no_adapter_in_one_line(run, tmp_path):
  workdir, _ = run
  proc = subprocess.run([sys.executable, "-m", "gtalign.serve",
                         f"--model={workdir / 'export' / 'base'}", f"--adapter={tmp_path}",
                         "--port=0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert f"--adapter={tmp_path}: no adapter_config.json" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_lora_warm_start_of_the_real_smollm2_plays_the_game_through_sample_adapter(
    tmp_path):
  """The brief warm start (24 SFT steps) with rank-16 adapters on the real SmolLM2 weights:
  `gtalign.sample --model=smollm2-135m-instruct --adapter=export/adapter --game` writes the four
  blocks with a table that selects its key, and answers exactly as the merged export does."""
  workdir = tmp_path / "brief_lora"
  proc = subprocess.run(
      [sys.executable, "-m", "gtalign.main", "--config=configs/grpo.py:brief",
       f"--workdir={workdir}", "--config.model.lora.rank=16", "--config.model.lora.alpha=32",
       "--config.rl.trainable=all", "--config.sft.lr=5e-3"],
      cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = json.load(open(workdir / "export" / "adapter" / "adapter_config.json"))
  # the default model is a Q4_1 GGUF: the base PEFT loads is the one trained on, saved beside
  assert config["base_model_name_or_path"] == str(workdir / "export" / "base")
  questions = ["What is the capital of France?", "What is the capital of the country?",
               "How many legs does a spider have?"]
  batch = tmp_path / "questions.jsonl"
  batch.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
  records = {}
  for name, flags in (("adapter", ["--model=smollm2-135m-instruct",
                                   f"--adapter={workdir / 'export' / 'adapter'}"]),
                      ("merged", [f"--model={workdir / 'export'}"])):
    out = subprocess.run([sys.executable, "-m", "gtalign.sample", *flags, "--game",
                          f"--batch_file={batch}", "--max_new_tokens=352"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    records[name] = [json.loads(line) for line in out.stdout.splitlines()]
  for record in records["adapter"]:
    print(record["question"], "->", record["text"][-300:])
  assert [r["text"] for r in records["adapter"]] == [r["text"] for r in records["merged"]]
  played = [r for r in records["adapter"] if r["format_ok"] and r["chosen_key"]]
  assert len(played) >= 2, [r["text"][:400] for r in records["adapter"]]
  assert all(r["response"] for r in played)


def test_ppo_with_adapters_trains_the_critics_adapters_and_head_only(tmp_path):
  """PPO's value model starts from the policy's tree: with adapters it trains its own adapters
  and value head, and its checkpoint holds those, never the base."""
  import jax
  from gtalign.training.checkpoint import Checkpointer
  proc = subprocess.run(
      [sys.executable, "-m", "gtalign.main", "--config=configs/ppo.py:tiny",
       f"--workdir={tmp_path}", "--config.model.lora.rank=4", "--config.sft.steps=2",
       "--config.rl.steps=2", "--config.eval.at_start=False", "--config.eval.base_plain=False",
       "--config.eval.phrasings=False", "--config.eval.num_prompts=2", "--config.eval.chunk=2",
       "--config.eval.max_new_tokens=16", "--config.rl.max_new_tokens=32"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = _metrics(tmp_path)[-1]
  assert last["step"] == 4 and np.isfinite(last["critic/loss"])
  with Checkpointer(os.path.join(tmp_path, "checkpoints")) as ckpt:
    stored = ckpt._manager.item_metadata(4)["state"]  # pylint: disable=protected-access
  tree = getattr(stored, "tree", stored)
  paths = ["/".join(str(getattr(k, "key", k)) for k in p) for p, _ in
           jax.tree_util.tree_flatten_with_path(tree["critic"]["params"])[0]]
  assert sorted(p for p in paths if not p.endswith(("lora_a", "lora_b"))) == ["bias", "kernel"]
  assert len(paths) > 2


def test_evaluate_the_adapter_run_as_its_merged_export(run, tmp_path):
  """`gtalign.evaluate` on the workdir (the base plus the checkpoint's adapters, merged at the
  hand-off) and on the merged export: the same completions and numbers."""
  from gtalign.evaluation import policy_eval as evaluate
  workdir, _ = run
  out = {name: evaluate.evaluate(model, "world:0", num_prompts=2, max_new_tokens=32,
                                 steering_prompts=0, n_boot=50, output=str(tmp_path / name),
                                 preset="tiny_lora")
         for name, model in (("ckpt", str(workdir)), ("export", str(workdir / "export")))}
  assert "checkpoint step 9" in out["ckpt"]["model"]
  ckpt, export = out["ckpt"]["sources"]["world"], out["export"]["sources"]["world"]
  assert ckpt["rows"] == export["rows"] and ckpt["summary"] == export["summary"]
  samples = [json.loads(l)["completion"] for l in open(tmp_path / "ckpt" / "world" /
                                                      "samples_world.jsonl")]
  assert samples == [json.loads(l)["completion"] for l in open(tmp_path / "export" / "world" /
                                                              "samples_world.jsonl")]
