"""Held-out evaluation of a policy and the run's report: what it does per question type.

A policy is judged by its behaviour on prompts it never trained on: per question type, the rate
of the welfare-maximising move read from the response text (DA on definite, CQ on vague
questions), their balanced accuracy (0.5 for any constant policy), answer accuracy, and whether
key, payoff table and response agree. The headline contrast is trained - after_sft: what RL did.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import numpy as np

from gtalign.dialogue import evaluation as dialogues
from gtalign.evaluation import plain, reading, steering
from gtalign.parallel import distributed
from gtalign.training import evaluation, phases, plots, rollout
from gtalign.training.metrics import read_metrics
from gtalign.utils.errors import InvalidInput

SUMMARY_METRICS = ("format_ok", "user", "llm", "welfare")


def evaluate(run, params, name: str) -> dict[str, np.ndarray]:
  """Greedy completions on the held-out prompts, in chunks with a progress line after each;
  per-row metrics as arrays (all processes')."""
  phases.enter("eval", name=name)
  cfg = run.config
  rows = run.eval_rows[:cfg.eval.num_prompts]
  part = distributed.process_rows(len(rows))
  if part.start == part.stop:
    raise InvalidInput(f"{len(rows)} held-out prompts cannot be split over "
                     f"{jax.process_count()} processes; raise eval.num_prompts")
  local = rows[part]
  sampler_params, _ = run.sampler_params(params)
  chunk = max(1, cfg.eval.chunk)
  texts: list[str] = []
  tokens: list = []
  outputs = []  # per chunk: the first turns of the held-out dialogues
  begin = time.perf_counter()
  for at in range(0, len(local), chunk):
    piece = local[at:at + chunk]
    out = run.sampler.generate(
        sampler_params, [run.prompt(r) for r in piece], dialogues.sampling(cfg),
        prompt_indices=np.arange(part.start + at, part.start + at + len(piece)))
    texts += out.texts
    tokens += out.tokens
    outputs.append(out)
    done, elapsed = at + len(piece), time.perf_counter() - begin
    distributed.log(f"gtalign: eval {name!r}: {done}/{len(local)} prompts, "
                    f"{done / elapsed:.2f} prompts/s, "
                    f"ETA {(len(local) - done) * elapsed / done:.0f} s")
  scored = rollout.score_rows(local, texts, run.judge, variant=cfg.rl.variant,
                              parse_mode=cfg.rl.parse_mode, on_judge_failure="mask",
                              world_consistency=cfg.rl.world_consistency,
                              world_misread=cfg.rl.world_misread,
                              world_unpriced=cfg.rl.world_unpriced,
                              world_hedge=cfg.rl.world_hedge)
  # a prompt the judge failed on has no score: NaN, left out of every mean and interval
  arrays = dict(rollout.unjudged_as_nan(scored.arrays(), scored.judge_failed),
                judge_failed=scored.judge_failed.astype(np.float32),
                **rollout.behaviour_arrays(local, scored, run.tokenizer),
                **rollout.paper_arrays(local, scored, texts, tokens))
  if cfg.eval.steering:
    arrays.update(steer(run, sampler_params, local, texts, tokens, scored, part.start, name))
  if cfg.eval.dialogue_turns:
    arrays.update(dialogues.evaluate(run, sampler_params, local, part.start, name, outputs))
  arrays = distributed.gather_rows(arrays, len(rows))
  if cfg.eval.phrasings:
    arrays.update(read_phrasings(run, sampler_params, name))
  show = lambda v, f=".2f": "n/a" if (m := finite_mean(v)) is None else f"{m:{f}}"
  failed = int(arrays["judge_failed"].sum())
  distributed.log(f"gtalign: evaluated {name!r} on {len(rows)} held-out prompts: "
                  f"welfare {show(arrays['welfare'], '.3f')}, DA on DQ "
                  f"{show(arrays['da_on_dq'])}, CQ on VQ {show(arrays['cq_on_vq'])}, "
                  + (f"steering {show(arrays['steering'])}, " if "steering" in arrays else "")
                  + f"reads DQ {show(arrays['read_dq'])} VQ {show(arrays['read_vq'])}, "
                  + (f"new phrasings DQ {show(arrays['new_read_dq'])} VQ "
                     f"{show(arrays['new_read_vq'])}, " if "new_read_dq" in arrays else "")
                  + "format "
                  f"{arrays['format_ok'].mean():.2f}"
                  + (f", judge failed on {failed} (left out)" if failed else ""))
  if distributed.is_main():
    samples = [{"row_id": r["row_id"], "question_type": r["extra_info"].get("question_type"),
                "question": r["extra_info"].get("question"), "completion": t}
               for r, t in zip(local, texts)]
    with open(os.path.join(run.workdir, f"samples_{name}.jsonl"), "w", encoding="utf-8") as f:
      f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
  return arrays


def read_phrasings(run, sampler_params, name: str) -> dict[str, np.ndarray]:
  """Reading accuracy per type on `reading.QUESTIONS` (questions no training row asks), as
  `new_read_dq` and `new_read_vq` (one entry per question; every process reads them all)."""
  questions = [q for q, _ in reading.QUESTIONS]
  thoughts = reading.read(run.sampler, sampler_params, questions,
                          style=run.config.data.prompt_style)
  if distributed.is_main():
    with open(os.path.join(run.workdir, f"reading_{name}.jsonl"), "w", encoding="utf-8") as f:
      f.writelines(json.dumps({"question": q, "question_type": kind, "thinking": t,
                               "read": reading.read_type(t)}, ensure_ascii=False) + "\n"
                   for (q, kind), t in zip(reading.QUESTIONS, thoughts))
  return reading.arrays([kind for _, kind in reading.QUESTIONS], thoughts, prefix="new_read")


def evaluate_plain(run, params, name: str = "base_plain") -> dict[str, np.ndarray]:
  """The model asked each held-out question plainly (no game prompt): what a policy should
  still know (`evaluation.plain`)."""
  phases.enter("eval", name=name)
  rows = run.eval_rows[:run.config.eval.num_prompts]
  part = distributed.process_rows(len(rows))
  local = rows[part]
  sampler_params, _ = run.sampler_params(params)
  begin = time.perf_counter()
  replies = plain.ask(run.sampler, sampler_params,
                      [r["extra_info"].get("question", "") for r in local])
  arrays = distributed.gather_rows(plain.judged(local, replies), len(rows))
  distributed.log(f"gtalign: evaluated {name!r} (asked plainly) in "
                  f"{time.perf_counter() - begin:.0f} s: DQ answer accuracy "
                  f"{finite_mean(arrays['dq_correct']) or 0:.2f}")
  if distributed.is_main():
    with open(os.path.join(run.workdir, f"samples_{name}.jsonl"), "w", encoding="utf-8") as f:
      f.writelines(json.dumps({"row_id": r["row_id"], "question_type":
                               r["extra_info"].get("question_type"),
                               "question": r["extra_info"].get("question"), "reply": t},
                              ensure_ascii=False) + "\n" for r, t in zip(local, replies))
  return arrays


def steer(run, sampler_params, rows, texts, tokens, scored, first: int, name: str
          ) -> dict[str, np.ndarray]:
  """The steering metric per prompt (`evaluation.steering`): each prompt's own greedy trace,
  its table priced to select each strategy in turn (in both rows), continued greedily; the first
  `eval.steering_prompts` held-out prompts only (0: all), NaN for the others. A target
  key's row is the one the policy's `<thinking>` read, else the question's type, else the row
  its key names."""
  limit = run.config.eval.steering_prompts
  count = len(rows) if limit <= 0 else max(0, min(len(rows), limit - first))
  types = []
  for row, parsed in zip(rows, scored.parsed):
    kind = (row.get("extra_info") or {}).get("question_type")
    if kind not in steering.ROWS:
      kind = parsed.chosen_key[:2] if parsed.chosen_key else "DQ"
    types.append(kind)
  begin = time.perf_counter()
  steered = []
  chunk = max(1, run.config.eval.chunk)
  for at in range(0, count, chunk):
    piece = slice(at, min(at + chunk, count))
    found = steering.steer(run.sampler, sampler_params, [run.prompt(r) for r in rows[piece]],
                           texts[piece], tokens[piece], types[piece],
                           prompt_indices=np.arange(first + at, first + at + len(rows[piece])),
                           edit=run.config.eval.steering_edit)
    steered += [dataclasses.replace(s, prompt=s.prompt + at) for s in found]
  distributed.log(f"gtalign: eval {name!r}: steering, {len(steered)} edited tables continued in "
                  f"{time.perf_counter() - begin:.0f} s")
  if distributed.is_main():
    with open(os.path.join(run.workdir, f"steering_{name}.jsonl"), "w", encoding="utf-8") as f:
      f.writelines(json.dumps({"row_id": rows[s.prompt]["row_id"], "question_type":
                               types[s.prompt], "target": s.target, "chosen_key": s.chosen_key,
                               "action": s.action, "follows": s.follows, "table": s.table,
                               "continuation": s.text}, ensure_ascii=False) + "\n"
                   for s in steered)
  out = steering.arrays(steered, len(rows))
  for v in out.values():  # prompts past eval.steering_prompts were not steered: no score
    v[count:] = np.nan
  return out


PLOT_KEYS = ("welfare", "user", "llm", "format_ok")
STRATEGY_KEYS = ("da_on_dq", "cq_on_vq", "aq_rate")
METHOD_KEYS = ("read_dq", "read_vq", "key_is_selected", "steering")


def evals_to_json(evals: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, list]]:
  """Per-row arrays as JSON lists, NaN (a metric that does not apply, a judge failure) as null:
  strict JSON for eval.json and checkpoint meta. `evals_from_json` reads them back."""
  return {k: {m: [None if x != x else x for x in np.asarray(v, np.float64).tolist()]
              for m, v in d.items()} for k, d in evals.items()}


def evals_from_json(evals: dict[str, dict[str, list]]) -> dict[str, dict[str, np.ndarray]]:
  return {k: {m: np.asarray([np.nan if x is None else x for x in v], np.float64)
              for m, v in d.items()} for k, d in evals.items()}


def plot_records(metrics: list[dict], evals: dict[str, dict[str, np.ndarray]],
                 eval_steps: dict[str, int], keys=PLOT_KEYS) -> list[dict]:
  """Training curves under the plot's keys, plus each held-out evaluation as eval/ points."""
  records = [dict(r, **{k: r[f"rollout/{k}"] for k in keys if f"rollout/{k}" in r})
             for r in metrics]
  for name, step in eval_steps.items():
    if name in evals:
      records.append({"step": step, **finite_means(evals[name], keys, prefix="eval/")})
  return records


def finite_mean(values) -> float | None:
  """The mean over finite entries, or None when there are none (a metric no row defines, e.g.
  DA on DQ for a set without definite questions): never NaN, never a warning."""
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  return float(finite.mean()) if finite.size else None


def finite_means(arrays: dict, keys=None, prefix: str = "") -> dict[str, float]:
  """{prefix + key: finite mean} for the keys that have one; the others are left out."""
  means = {k: finite_mean(arrays[k]) for k in (keys or arrays) if k in arrays}
  return {prefix + k: m for k, m in means.items() if m is not None}


def contrast(evals, a: str, b: str, n_boot: int) -> dict[str, tuple[float, float, float]]:
  """a - b on the same prompts: welfare (paired bootstrap) and balanced accuracy (paired,
  stratified by question type)."""
  out = {"welfare": evaluation.paired_difference_ci(evals[a]["welfare"], evals[b]["welfare"],
                                                    n_boot=n_boot)}
  if "da_on_dq" in evals[a] and "da_on_dq" in evals[b]:
    out["balanced_accuracy"] = evaluation.balanced_difference_ci(
        evals[a]["da_on_dq"], evals[a]["cq_on_vq"], evals[b]["da_on_dq"], evals[b]["cq_on_vq"],
        n_boot=n_boot)
  return out


def report(workdir: str, evals: dict[str, dict[str, np.ndarray]], n_boot: int,
           eval_steps: dict[str, int]) -> dict[str, Any]:
  """Held-out tables (95% bootstrap intervals), trained - after_sft, plots; printed and saved."""
  table = evaluation.summary_table({k: v for k, v in evals.items() if k != "base_plain"},
                                   metrics=SUMMARY_METRICS, n_boot=n_boot)
  per_type = evaluation.behaviour_table(evals, n_boot=n_boot)
  base = "after_sft" if "after_sft" in evals else "start"
  diffs = contrast(evals, "trained", base, n_boot)
  result = {"evals": evals, "welfare_diff": diffs["welfare"], "contrast": diffs, "table": table,
            "per_type": per_type}
  if not distributed.is_main():  # every process holds the same evals; one writes them
    return result
  lines = [table, "", per_type, ""]
  dialogue_table = dialogues.table(evals, n_boot)
  if dialogue_table:
    lines += ["held-out dialogues (gtalign.dialogue):", dialogue_table, ""]
  for metric, (mean, lo, hi) in diffs.items():
    lines.append(f"{metric}(trained) - {metric}({base}): {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                 "(95% paired bootstrap over prompts)")
  metrics = read_metrics(workdir)
  plot_path = plots.plot_training(plot_records(metrics, evals, eval_steps),
                                  os.path.join(workdir, "training.png"),
                                  title="welfare and its components (lines: RL rollouts at "
                                        "the sampling temperature; markers: greedy held-out)")
  strategy_path = plots.plot_training(
      plot_records(metrics, evals, eval_steps, keys=STRATEGY_KEYS),
      os.path.join(workdir, "strategy.png"), keys=STRATEGY_KEYS, aux_keys=(),
      title="what responses do per type (lines: RL rollouts; markers: greedy held-out)")
  method_path = plots.plot_training(
      plot_records(metrics, evals, eval_steps, keys=METHOD_KEYS),
      os.path.join(workdir, "method.png"), keys=METHOD_KEYS, aux_keys=(),
      title="type read right, key = table's pick, edited table followed\n"
            "(lines: RL rollouts; markers: greedy held-out)")
  lines += [f"plots: {plot_path}, {strategy_path}, {method_path}"]
  text = "\n".join(lines)
  print(text, flush=True)
  with open(os.path.join(workdir, "eval_table.md"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  with open(os.path.join(workdir, "eval.json"), "w", encoding="utf-8") as f:
    json.dump({"evals": evals_to_json(evals),
               "contrast": {k: list(v) for k, v in diffs.items()}, "baseline": base}, f)
  return result
