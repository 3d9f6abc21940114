"""Reward building blocks (method reference, section 4), pure Python with the paper's constants.

These are host-side text measures; the per-task weights that combine them live in `tasks.py`.
Lengths are whitespace WORDS for the two length terms and CHARACTERS for the reasoning penalty,
exactly as in the original code.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

from nltk.translate.bleu_score import sentence_bleu

# Two payoffs count as "different enough" above this relative gap (section 4, distinctness).
_RELATIVE_GAP = 0.1
# Tolerance of the original `is_dominated` (absolute, both for >= and for the strict >).
_DOMINANCE_EPS = 1e-9

Payoff = Mapping[str, Mapping[str, float]]


def words(s: str) -> int:
  """Whitespace token count, the unit of both length terms."""
  return len(s.split())


def _sigmoid(x: float) -> float:
  return 1.0 / (1.0 + math.exp(-x))


def length_logistic(n: float, lo: float, hi: float, k: float = 0.005) -> float:
  """sigma(k (n - lo)) * sigma(k (hi - n)): a soft band that prefers lo <= n <= hi."""
  return _sigmoid(k * (n - lo)) * _sigmoid(k * (hi - n))


def user_length_term(response: str) -> float:
  """R_u: the user prefers a response of about 20-500 words (peak 0.591 near 260)."""
  return length_logistic(words(response), 20, 500)


def llm_length_term(full_output: str) -> float:
  """R_l: the LLM is paid for a full output of about 500-1000 words (peak 0.604 near 750)."""
  return length_logistic(words(full_output), 500, 1000)


def reasoning_penalty(reasoning: str, scale: float = 500.0) -> float:
  """Q_r = exp(-chars / scale): the user's waiting cost for everything before <response>."""
  return math.exp(-len(reasoning) / scale)


def payoff_distinctness(payoff: Payoff | None) -> float:
  """P in [0, 1]: 1/12 per key whose payoffs differ, another 1/12 if they differ by > 10%.

  Rewards bimatrices that model a real conflict instead of copying one number to both players.
  """
  if not payoff:
    return 0.0
  total = 0.0
  for pair in payoff.values():
    user, llm = pair["user"], pair["LLM"]
    if user != llm:
      total += 1 / 12
    denom = max(abs(user), abs(llm), 1e-8)
    if abs(user - llm) / denom > _RELATIVE_GAP:
      total += 1 / 12
  return total


def _dominated(a: tuple[float, float], b: tuple[float, float]) -> bool:
  """True if point b Pareto-dominates point a (maximising both coordinates)."""
  eps = _DOMINANCE_EPS
  ge_all = all(bi > ai + eps or math.isclose(bi, ai, abs_tol=eps) for ai, bi in zip(a, b))
  gt_any = any(bi > ai + eps for ai, bi in zip(a, b))
  return ge_all and gt_any


def pareto_keys(payoff: Payoff | None) -> list[str]:
  """Non-dominated joint-strategy keys over the (LLM, user) points, sorted by (LLM, user).

  All six keys compete in one frontier (DQ and VQ rows mixed), as in the original helper.
  """
  if not payoff:
    return []
  points = {key: (float(v["LLM"]), float(v["user"])) for key, v in payoff.items()}
  frontier = [
      key for key, p in points.items()
      if not any(_dominated(p, q) for other, q in points.items() if other != key)
  ]
  return sorted(frontier, key=lambda key: points[key])


def bleu(reference: str, hypothesis: str, unit: str = "char") -> float:
  """nltk sentence BLEU (uniform 1-4-gram weights, no smoothing, brevity penalty).

  unit="char" passes the raw strings, so n-grams are characters (paper-exact);
  unit="word" splits on whitespace first.
  """
  if unit == "char":
    refs, hyp = [reference], hypothesis
  elif unit == "word":
    refs, hyp = [reference.split()], hypothesis.split()
  else:
    raise ValueError(f"unknown BLEU unit {unit!r}; expected 'char' or 'word'")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # nltk warns on every zero n-gram overlap
    return float(sentence_bleu(refs, hyp))
