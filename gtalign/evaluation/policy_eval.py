"""Evaluating one policy per data source: the library behind `python -m gtalign.evaluate`.

A policy is rebuilt the way it was trained (a workdir's own config.json and newest checkpoint) or
from the default config (an exported directory, a base model), then scored on each source's
held-out or test rows with `training.heldout.evaluate` (greedy completions, the training judge)
and summarised by `evaluation.policy_report`.
"""

from __future__ import annotations

import json
import os
import sys
import time

from gtalign.utils.errors import InvalidInput


def policy_config(model: str, data: str, judge: str, judge_model: str, dtype: str = "",
                  preset: str = "", judge_max_tokens: int = 1024):
  """(config, workdir or None): a workdir's own config, else `preset`'s for `model`."""
  from configs import grpo
  from gtalign.training import export
  from gtalign.training import run as run_lib
  if os.path.isdir(os.path.join(model, "checkpoints")):
    # keys added since the run started take the defaults (its own values win)
    config, workdir = grpo.get_config(), model
    config.update(run_lib.read_config(model))
  else:
    try:
      config, workdir = grpo.get_config(preset or None), None
    except ValueError as e:
      raise InvalidInput(f"--preset={preset}: {e}") from None
    config.model.name = model
    config.model.lora.rank = 0
    config.data.prompt_style = export.settings_for_model(model)["prompt_style"]
  if data.startswith("world"):
    seed = data.partition(":")[2]
    if seed and not seed.isdigit():
      raise InvalidInput(f"--data={data}: expected world or world:SEED with an integer SEED")
    if seed:
      config.seed = int(seed)
  if dtype:
    config.model.dtype = dtype
  config.data.source = "world"  # the GTAlign sources' rows are read per source below
  config.rl.judge = judge
  config.rl.judge_model = judge_model
  config.rl.judge_max_tokens = judge_max_tokens
  config.sft.steps = config.rl.steps = 0
  config.mesh.update(dict(data=1, fsdp=-1, tensor=1, dcn_data=1, dcn_fsdp=1, dcn_tensor=1))
  config.sampler_mesh = ""
  return config, workdir


def check_sources(data: str, sources: list[str]) -> list[str]:
  """The sources `--data` and `--sources` name, checked before any model loads."""
  if data.startswith("world"):
    if sources and sources != ["world"]:
      raise InvalidInput(f"--sources={','.join(sources)} needs --data=<GTAlign data dir>")
    return ["world"]
  from gtalign.data import gtalign as gtalign_data
  if not os.path.isdir(data):
    raise InvalidInput(f"--data={data}: no such directory (expected world, world:SEED or a "
                       "GTAlign data directory)")
  for source in sources:
    if source not in gtalign_data.CONFIGS:
      raise InvalidInput(f"--sources: unknown source {source!r}; expected some of "
                         f"{', '.join(gtalign_data.CONFIGS)}")
  return list(sources) or list(gtalign_data.SOURCES)


def source_rows(data: str, source: str, run, restyle: bool = False) -> list:
  """A source's rows to evaluate: the world's held-out split, or a GTAlign test set (with
  `restyle`, each single-turn question re-asked in the run's prompt style)."""
  if source == "world":
    return run.eval_rows
  from gtalign.data import gtalign as gtalign_data
  from gtalign.game import prompt as prompt_lib
  rows = gtalign_data.read_rows(data, source, "test")
  if not restyle:
    return rows
  out = []
  for row in rows:
    question = (row.get("extra_info") or {}).get("single_turn_prompt")
    if not isinstance(question, str) or not question.strip():
      raise InvalidInput(f"--restyle: row {row['row_id']} of {source} has no "
                         "extra_info.single_turn_prompt to re-ask")
    out.append(dict(row, prompt=prompt_lib.build_messages(
        question, style=run.config.data.prompt_style)))
  return out


def evaluate(model: str, data: str = "world", sources=(), judge: str = "rule",
             judge_model: str = "judge", num_prompts: int = 0, max_new_tokens: int = 0,
             max_prompt_length: int = 2048, steering_prompts: int = 12, eps: float = 0.1,
             n_boot: int = 1000, output: str | None = None, chunk: int = 18,
             dtype: str = "", preset: str = "", judge_max_tokens: int = 1024,
             restyle: bool = False, dialogue_turns: int = 0, simulator: str = "rule",
             simulator_model: str = "user", steering_edit: str = "both") -> dict:
  """Evaluates `model` on each source; returns {"sources": {source: summary}, ...} as written
  to `output/evaluate.json`."""
  from gtalign.dialogue import evaluation as dialogues
  from gtalign.evaluation import policy_report
  from gtalign.training import heldout
  from gtalign.training import run as run_lib
  sources = check_sources(data, list(sources))
  if dialogue_turns and simulator == "rule" and not data.startswith("world"):
    raise InvalidInput("--dialogue_turns on GTAlign sources needs an LLM user: "
                       "--simulator=<OpenAI-compatible base URL> (the rule user knows only "
                       "the world)")
  config, workdir = policy_config(model, data, judge, judge_model, dtype, preset,
                                   judge_max_tokens)
  config.data.max_prompt_length = max_prompt_length
  max_new_tokens = max_new_tokens or config.eval.max_new_tokens
  config.eval.update(dict(max_new_tokens=max_new_tokens, chunk=chunk, bootstrap=n_boot,
                          steering=steering_prompts > 0, steering_prompts=steering_prompts,
                          steering_edit=steering_edit,
                          phrasings=data.startswith("world"), base_plain=False,
                          dialogue_turns=dialogue_turns))
  config.rl.simulator, config.rl.simulator_model = simulator, simulator_model
  output = output or os.path.join("evaluate", os.path.basename(os.path.normpath(model)))
  run, params, _, _ = run_lib.build(config, output)
  where = model
  if workdir:
    params, step = run_lib.policy_from_workdir(workdir, config, run.model_config, params)
    where = f"{workdir} (checkpoint step {step})"
  summaries, counts, results, every = {}, {}, {}, {}
  for source in sources:
    rows = source_rows(data, source, run, restyle)
    kept, ids = run_lib.tokenize_prompts(rows, run.tokenizer, max_prompt_length,
                                         f"--data={data} source {source}")
    limit = num_prompts or len(kept)
    run.eval_rows, run.workdir = kept, os.path.join(output, source)
    run.prompt_ids.update(ids)
    run.config.eval.num_prompts = limit
    os.makedirs(run.workdir, exist_ok=True)
    begin = time.perf_counter()
    arrays = heldout.evaluate(run, params, source)
    every[source] = arrays
    summaries[source] = policy_report.summarise(arrays, n_boot=n_boot, eps=eps)
    counts[source] = (f"{min(limit, len(kept))} of {len(rows)}"
                      + (f" ({len(rows) - len(kept)} over {max_prompt_length} tokens dropped)"
                         if len(kept) < len(rows) else ""))
    results[source] = {"summary": {k: list(v) for k, v in summaries[source].items()},
                       "prompts": counts[source], "seconds": time.perf_counter() - begin,
                       "rows": heldout.evals_to_json({"x": arrays})["x"]}
  style = (f"questions in the policy's {config.data.prompt_style!r} style" if restyle
           and not data.startswith("world") else "")
  text = (f"gtalign.evaluate: {where} on --data={data} {style}, judge {judge}, greedy, "
          f"{max_new_tokens} new tokens; 95% bootstrap intervals over prompts\n\n"
          + policy_report.table(summaries, eps=eps, counts=counts))
  if dialogue_turns:
    text += (f"\n\nAs dialogues of up to {dialogue_turns} turns with the {simulator} user "
             "(gtalign.dialogue; mean [95% CI]):\n\n" + dialogues.table(every, n_boot))
  print(text, flush=True)
  out = {"model": where, "data": data, "judge": judge, "eps": eps, "sources": results}
  with open(os.path.join(output, "evaluate.md"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  with open(os.path.join(output, "evaluate.json"), "w", encoding="utf-8") as f:
    json.dump(out, f)
  print(f"gtalign.evaluate: wrote {os.path.join(output, 'evaluate.md')} and evaluate.json",
        file=sys.stderr)
  return out
