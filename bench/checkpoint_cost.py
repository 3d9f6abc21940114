"""What a checkpoint save costs the warm start, read from a finished run's own step times.

A save is asynchronous: the step after it pays for the background write (the two cores are
shared), the step that saves pays only for the copy to the host. This compares the SFT steps
that follow a save with the others, in one run, and prices the run's saves:

  python bench/checkpoint_cost.py WORKDIR [--every=4]

`--every` is the SFT save interval that run used (`checkpoint.sft_every`; `checkpoint.every`
before the two were separate). The first five steps (compilation) are left out.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("--every", type=int, default=4)
  args = parser.parse_args()
  with open(os.path.join(args.workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  sft = np.asarray([(r["step"], r["step_seconds"]) for r in records if r.get("phase") == 0.0])
  if len(sft) <= 5:
    raise SystemExit(f"{args.workdir}: {len(sft)} SFT steps in metrics.jsonl, need more than 5")
  steps, seconds = sft[5:, 0].astype(int), sft[5:, 1]
  after = (steps - 1) % args.every == 0  # metrics step s ran after the save of step s - 1
  saves = len(sft) // args.every
  extra = seconds[after].mean() - seconds[~after].mean()
  print(f"{args.workdir}: {len(sft)} SFT steps, saving every {args.every}: "
        f"{seconds[~after].mean():.2f} s a step, {seconds[after].mean():.2f} s after a save "
        f"(+{extra:.2f} s); {saves} saves cost about {saves * extra:.0f} s of "
        f"{sft[:, 1].sum():.0f} s")


if __name__ == "__main__":
  main()
