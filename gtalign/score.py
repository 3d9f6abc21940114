"""Score completions of any model with the GTAlign rewards.

    python -m gtalign.score --data=DIR_OR_FILE --completions=FILE.jsonl [--judge=rule|http://...]

`--data` is a GTAlign data directory (every parquet file in its layout), one parquet file, or
`world[:SEED]` (the built-in world). `--completions` is JSONL, one object per line with the row id
(`row_id`) and the completion text (`text`). Prints per-source means of U, L, welfare, format
validity and answer score; `--output` also writes one JSON line per scored completion.
"""

from __future__ import annotations

import collections
import json
import math
import pathlib
import sys
from typing import Any

from absl import flags, logging

from gtalign.utils import cli
from gtalign.utils.errors import InvalidInput, MissingInput
from gtalign.utils.jsonl import read_jsonl

_DATA = flags.DEFINE_string("data", None, "GTAlign data dir, a parquet file, or world[:SEED].",
                            required=True)
_COMPLETIONS = flags.DEFINE_string("completions", None, "JSONL with row_id and text per line.",
                                   required=True)
_JUDGE = flags.DEFINE_string("judge", "rule", "'rule' or the base URL of an OpenAI-compatible "
                             "server (e.g. http://127.0.0.1:30000/v1).")
_JUDGE_MODEL = flags.DEFINE_string("judge_model", "judge", "Model name sent to an HTTP judge.")
_VARIANT = flags.DEFINE_enum("variant", "main", ["main", "ablation"], "Reward variant.")
_MODE = flags.DEFINE_enum("mode", "strict", ["strict", "lenient"],
                          "Trace parsing: strict, or lenient (paper-exact).")
_BLEU_UNIT = flags.DEFINE_enum("bleu_unit", "char", ["char", "word"], "BLEU units for medium.")
_ON_JUDGE_FAILURE = flags.DEFINE_enum("on_judge_failure", "mask", ["mask", "zero"],
                                      "Drop judge failures from the means, or score them 0.")
_OUTPUT = flags.DEFINE_string("output", None, "Optional JSONL of per-completion results.")


def load_rows(spec: str) -> dict[str, dict[str, Any]]:
  """row_id -> row for a data directory, a parquet file or the built-in world."""
  from gtalign.data import gtalign as gtalign_data
  if spec == "world" or spec.startswith("world:"):
    from gtalign.data.world import make_world
    seed = spec.split(":", 1)[1] if ":" in spec else "0"
    if not seed.isdigit():
      raise InvalidInput(f"--data={spec}: expected world or world:SEED with an integer SEED")
    seed = int(seed)
    rows = [r for split in make_world(seed=seed).values() for r in split]
  else:
    path = pathlib.Path(spec)
    if path.is_file():
      rows = gtalign_data.read_parquet(path, path.stem)
    elif path.is_dir():
      rows = []
      for config in gtalign_data.CONFIGS:
        for split in gtalign_data.splits(config):
          try:
            rows += gtalign_data.read_rows(path, config, split)
          except FileNotFoundError:
            continue
      if not rows:
        raise MissingInput(f"{path}: no GTAlign parquet files in the expected layout")
    else:
      raise MissingInput(f"{spec}: no such file or directory (expected a GTAlign data dir, "
                              "a parquet file or world[:SEED])")
  return {r["row_id"]: r for r in rows}


def read_completions(path: str, rows: dict[str, dict]) -> list[tuple[str, str]]:
  """(row_id, text) pairs; errors name the file, the line and what was expected."""
  out = []
  for n, item in read_jsonl(path):
    if not isinstance(item, dict) or not isinstance(item.get("row_id"), str) or not isinstance(
        item.get("text"), str):
      raise InvalidInput(f"{path}:{n}: expected an object with string keys 'row_id' and 'text'")
    if item["row_id"] not in rows:
      raise InvalidInput(f"{path}:{n}: row_id {item['row_id']!r} is not in the data "
                     f"(ids look like {next(iter(rows))!r})")
    out.append((item["row_id"], item["text"]))
  return out


def score(rows, completions, judge, *, variant="main", mode="strict", bleu_unit="char",
          on_judge_failure="mask") -> list[dict[str, Any]]:
  """Parse, judge in one batch, and compute U, L and welfare for every completion."""
  from gtalign.game.trace import parse_trace
  from gtalign.rewards import tasks

  parsed = [parse_trace(text, mode=mode) for _, text in completions]
  requests = [tasks.judge_requests(rows[rid], p, variant=variant)
              for (rid, _), p in zip(completions, parsed)]
  flat = [r for reqs in requests for r in reqs]
  verdicts = judge.score(flat) if flat else []
  results, at = [], 0
  for (rid, _), p, reqs in zip(completions, parsed, requests):
    r = tasks.reward(rows[rid], p, verdicts[at:at + len(reqs)], variant=variant,
                     bleu_unit=bleu_unit, on_judge_failure=on_judge_failure)
    at += len(reqs)
    failed = r.judge_failed  # masked: no score, rather than the failure's stand-in 0
    results.append({"row_id": rid, "data_source": rows[rid]["data_source"],
                    "user": None if failed else r.user, "llm": None if failed else r.llm,
                    "welfare": None if failed else r.score, "format_ok": p.format_ok,
                    "valid": p.valid, "reason": p.reason, "judge_failed": failed,
                    "answer": None if failed else r.components.get("answer_reward", 0.0)})
  return results


def summarise(results: list[dict[str, Any]]) -> str:
  """Per-source means (judge failures excluded) as a fixed-width table."""
  by_source = collections.defaultdict(list)
  for r in results:
    by_source[r["data_source"]].append(r)
  by_source["all"] = list(results)
  header = f"{'source':<12}{'n':>6}{'U':>8}{'L':>8}{'welfare':>9}{'format':>8}{'answer':>8}" \
           f"{'judge_failed':>14}"
  lines = [header]
  for source, items in sorted(by_source.items(), key=lambda kv: (kv[0] == "all", kv[0])):
    kept = [r for r in items if not r["judge_failed"]] or [{"user": math.nan, "llm": math.nan,
                                                            "welfare": math.nan,
                                                            "format_ok": math.nan,
                                                            "answer": math.nan}]
    mean = lambda key: sum(float(r[key]) for r in kept) / len(kept)
    lines.append(f"{source:<12}{len(items):>6}{mean('user'):>8.3f}{mean('llm'):>8.3f}"
                 f"{mean('welfare'):>9.3f}{mean('format_ok'):>8.3f}{mean('answer'):>8.3f}"
                 f"{sum(r['judge_failed'] for r in items):>14}")
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from gtalign.rewards.judges import make_judge

  rows = load_rows(_DATA.value)
  completions = read_completions(_COMPLETIONS.value, rows)
  judge = (make_judge(_JUDGE.value, model=_JUDGE_MODEL.value) if _JUDGE.value != "rule"
           else make_judge("rule"))
  results = score(rows, completions, judge, variant=_VARIANT.value, mode=_MODE.value,
                  bleu_unit=_BLEU_UNIT.value, on_judge_failure=_ON_JUDGE_FAILURE.value)
  if _OUTPUT.value:
    try:
      with open(_OUTPUT.value, "w", encoding="utf-8") as f:
        for r in results:
          f.write(json.dumps(r, ensure_ascii=False) + "\n")
    except OSError as e:
      raise InvalidInput(f"--output={_OUTPUT.value}: cannot be written ({e.strerror})") from e
  print(summarise(results))
  print(f"[{len(results)} completions scored with judge={_JUDGE.value}, variant={_VARIANT.value}, "
        f"mode={_MODE.value}]", file=sys.stderr)


if __name__ == "__main__":
  cli.run(main)
