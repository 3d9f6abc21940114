"""Requests to and results from judges (rule-based or an OpenAI-compatible HTTP server)."""

from __future__ import annotations

import dataclasses

# Judge kinds and the score each returns (method reference, section 5):
#   "accuracy"  -> 0 or 1   (math-hard, minerva: final answer matches the ground truth)
#   "writing"   -> 0..4     (medium: helpfulness towards the hidden intent; tasks divide by 4)
#   "harm"      -> 0, 0.5, 1 (wildguard, advbench: unsafe / win-win / safe refusal or helpful)
#   "ambiguity" -> 0 or 1   (ambig_qa, abg-coqa, world: clarifies vague, answers definite)
#   "pareto"    -> 0, 0.5, 1 (ablation: <analyze> names a Pareto-frontier action)
JUDGE_KINDS = ("accuracy", "writing", "harm", "ambiguity", "pareto")


@dataclasses.dataclass(frozen=True)
class JudgeRequest:
  kind: str  # one of JUDGE_KINDS
  question: str  # the question / hidden intent the judge is told about
  response: str  # the text being judged (the <response> block, or <analyze> for "pareto")
  ground_truth: str = ""  # answer, reference text, harm tag, ambiguity tag or frontier keys
  query: str = ""  # "writing" only: the user's last message

  def __post_init__(self):
    if self.kind not in JUDGE_KINDS:
      raise ValueError(f"unknown judge kind {self.kind!r}; expected one of {JUDGE_KINDS}")


@dataclasses.dataclass(frozen=True)
class JudgeResult:
  score: float  # the parsed score (0.0 when failed)
  failed: bool = False  # no usable verdict after all retries (timeout, HTTP error, unparsable)
  raw: str = ""  # the judge's raw output or the error, for logs
