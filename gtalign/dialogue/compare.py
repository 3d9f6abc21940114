"""Multi-turn against single-turn training: the `turns<K>` arms of `configs/dialogue.py`.

Every arm trains from the same warm start and is scored the same way: each held-out question
played as a greedy dialogue with the simulated user (`eval.dialogue_turns` turns at most).
Prompts pair the arms: per prompt a metric is averaged over an arm's seeds, its interval is a
bootstrap over prompts, and each arm's difference from the first arm (the reference: single-turn
training) is a paired bootstrap over the same prompts, with the seeds' spread beside it.
"""

from __future__ import annotations

import json
import os

import numpy as np

from gtalign.comparison import summary as summary_lib
from gtalign.dialogue import evaluation as dlg_eval
from gtalign.parallel import distributed
from gtalign.training import evaluation as ci

# metric (a key of the held-out arrays) -> (label, higher is better)
METRICS = {
    "dialogue_correct_vq": ("final-answer accuracy on VQ (after the user answers)", True),
    "dialogue_correct_dq": ("final-answer accuracy on DQ", True),
    "dialogue_asks_on_dq": ("asks on DQ", False),
    "dialogue_wrong_detail": ("asks about the wrong detail on VQ", False),
    "dialogue_welfare": ("dialogue welfare sqrt(U L)", True),
    "dialogue_welfare_dq": ("dialogue welfare on DQ", True),
    "dialogue_welfare_vq": ("dialogue welfare on VQ", True),
    "dialogue_turns_dq": ("turns on DQ", None),
    "dialogue_turns_vq": ("turns on VQ", None),
    "welfare": ("single-turn welfare (the single-turn reward)", True),
}


def _mean(x) -> float:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(x.mean()) if x.size else float("nan")


def verdict(lo: float, hi: float, higher_is_better: bool | None) -> str:
  if higher_is_better is None or not np.isfinite(lo):
    return "-"
  if lo > 0:
    return "higher (better)" if higher_is_better else "higher (worse)"
  if hi < 0:
    return "lower (worse)" if higher_is_better else "lower (better)"
  return "not distinguishable"


def summarise(results: dict[str, dict[int, dict[str, np.ndarray]]], n_boot: int) -> dict:
  """results[arm][seed] = that run's held-out arrays -> per arm and metric: mean and 95%
  interval over prompts (seed-averaged), per-seed means, and the difference from the first arm."""
  arms = list(results)
  reference = arms[0]
  out = {"reference": reference, "arms": {}}
  per_prompt = {arm: {m: summary_lib.seed_mean([np.asarray(results[arm][s][m], np.float64)
                                     for s in results[arm]])
                      for m in METRICS if all(m in results[arm][s] for s in results[arm])}
                for arm in arms}
  for arm in arms:
    entry = {}
    for m, values in per_prompt[arm].items():
      mean, lo, hi = ci.bootstrap_ci(values, n_boot=n_boot)
      seeds = {int(s): _mean(results[arm][s][m]) for s in results[arm]}
      item = {"mean": mean, "ci": [lo, hi], "seeds": seeds}
      if arm != reference and m in per_prompt[reference]:
        d, dlo, dhi = ci.paired_difference_ci(values, per_prompt[reference][m], n_boot=n_boot)
        item["diff"] = [d, dlo, dhi]
        item["verdict"] = verdict(dlo, dhi, METRICS[m][1])
      entry[m] = item
    out["arms"][arm] = entry
  return out


def markdown(summary: dict, warm: dict[str, np.ndarray] | None = None) -> str:
  arms = list(summary["arms"])
  ref = summary["reference"]
  lines = [f"| metric | {' | '.join(arms)} | "
           + " | ".join(f"{a} - {ref}" for a in arms[1:]) + " |",
           "|---|" + "---|" * (2 * len(arms) - 1)]
  for m, (label, _) in METRICS.items():
    if m not in summary["arms"][ref]:
      continue
    cells = []
    for arm in arms:
      item = summary["arms"][arm][m]
      seeds = ", ".join(f"{v:.2f}" for v in item["seeds"].values())
      cells.append(f"{item['mean']:.3f} [{item['ci'][0]:.3f}, {item['ci'][1]:.3f}] "
                   f"(seeds {seeds})")
    for arm in arms[1:]:
      d = summary["arms"][arm][m].get("diff")
      cells.append(f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] "
                   f"{summary['arms'][arm][m]['verdict']}" if d else "-")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  if warm is not None:
    lines.append("")
    lines.append("Warm start (shared, after SFT): " + ", ".join(
        f"{METRICS[m][0]} {_mean(warm[m]):.3f}" for m in METRICS if m in warm))
  return "\n".join(lines)


def examples(directory: str, per_type: int = 2) -> list[str]:
  """The first `per_type` held-out dialogues of each question type of a trained run, verbatim."""
  path = os.path.join(directory, "dialogues_trained.jsonl")
  if not os.path.isfile(path):
    return []
  with open(path, encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  out = []
  for kind in ("DQ", "VQ"):
    for r in [r for r in records if r["question_type"] == kind][:per_type]:
      text = [f"{kind} | {r['question']} | ended: {r['ended']}, welfare "
              f"{r['welfare'] if r['welfare'] is None else round(r['welfare'], 3)}"]
      for t in r["turns"]:
        text.append(f"  assistant: {t['completion']}")
        if t["reply"] is not None:
          text.append(f"  user ({t['reply_kind']}): {t['reply']}")
      out.append("\n".join(text))
  return out


def report(workdir: str, config, arms: list[str], seeds: list[int], dirs: dict) -> dict:
  """compare.md and compare.json from the finished arms' eval.json (their `trained` rows)."""
  from gtalign.comparison import runner  # pylint: disable=import-outside-toplevel
  results = {arm: {seed: runner.read_evals(dirs[(arm, seed)])["trained"] for seed in seeds}
             for arm in arms}
  summary = summarise(results, n_boot=config.eval.bootstrap)
  warm = runner.read_evals(os.path.join(workdir, "warm_start"))["after_sft"]
  if not distributed.is_main():
    return summary
  lines = [f"Held-out dialogues: {len(next(iter(results[arms[0]].values()))['welfare'])} "
           f"prompts x seeds {seeds}, up to {config.eval.dialogue_turns} turns, "
           f"simulator {config.rl.simulator}; mean [95% CI over prompts] (per-seed means)", "",
           markdown(summary, {k: v for k, v in warm.items()
                              if k in METRICS and dlg_eval.PREFIX + "welfare" in warm}), ""]
  for arm in arms:
    lines.append(f"Dialogues of {arm} (seed {seeds[0]}), verbatim:")
    lines += ["```text", *examples(dirs[(arm, seeds[0])]), "```", ""]
  text = "\n".join(lines)
  print(text, flush=True)
  with open(os.path.join(workdir, "compare.md"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  with open(os.path.join(workdir, "compare.json"), "w", encoding="utf-8") as f:
    json.dump({**summary, "arms_order": arms}, f, indent=1)
  return summary
