"""Frontier metrics against point sets worked out by hand (dominated, duplicate, collinear)."""

import math

import numpy as np
import pytest

from gtalign.evaluation import pareto, policy_report

# four collinear points on U + L = 1 (none dominates another), one dominated point, one duplicate
LINE = np.array([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75], [0.0, 1.0], [0.4, 0.4], [0.5, 0.5]])


def test_frontier_keeps_collinear_points_once_and_drops_the_dominated():
  front = pareto.frontier(LINE)
  np.testing.assert_allclose(front, [[1.0, 0.0], [0.5, 0.5], [0.25, 0.75], [0.0, 1.0]])


def test_a_point_equal_on_one_axis_and_worse_on_the_other_is_dominated():
  front = pareto.frontier([[1.0, 1.0], [1.0, 0.5], [0.2, 1.0]])
  np.testing.assert_allclose(front, [[1.0, 1.0]])


def test_hypervolume_of_the_staircase_by_hand():
  # rectangles [0,.5]x[0,.5] and [0,.25]x[0,.75]: .25 + .25 * .25; (1,0) and (0,1) add nothing
  assert pareto.hypervolume(LINE, (0.0, 0.0)) == pytest.approx(0.3125)
  # two rectangles 3x1 and 1x3 overlapping in 1x1
  assert pareto.hypervolume([[3.0, 1.0], [1.0, 3.0]], (0.0, 0.0)) == pytest.approx(5.0)
  # the original script counts the highest-U point's rectangle only
  assert pareto.hypervolume_first_rectangle([[3.0, 1.0], [1.0, 3.0]], (0.0, 0.0)) == 3.0
  assert pareto.hypervolume_first_rectangle(LINE, (0.0, 0.0)) == 0.0
  # points at or below the reference add nothing; a duplicate adds nothing
  assert pareto.hypervolume([[2.0, 2.0], [2.0, 2.0], [-1.0, 5.0]], (0.0, 0.0)) == 4.0


def test_regret_and_coverage_by_hand():
  scored = pareto.single(LINE, eps=0.1)
  # ranges 1 and 1; (.4,.4) is .1 below (.5,.5) on both axes; the rest are on the frontier
  assert scored["regret_max"] == pytest.approx(0.1)
  assert scored["regret_mean"] == pytest.approx(0.1 / 6)
  assert scored["coverage"] == 1.0
  assert pareto.single(LINE, eps=0.05)["coverage"] == pytest.approx(5 / 6)


def test_compare_against_the_joint_frontier():
  out = pareto.compare({"a": np.array([[1.0, 1.0]]), "b": np.array([[0.0, 0.0], [0.5, 0.5]])})
  a, b = out["a"], out["b"]
  assert (a["coverage"], a["regret_mean"], a["regret_max"]) == (1.0, 0.0, 0.0)
  assert (b["coverage"], b["regret_mean"], b["regret_max"]) == (0.0, 0.75, 1.0)
  assert a["hypervolume"] == pytest.approx(1.0) and b["hypervolume"] == pytest.approx(0.25)
  assert a["nash_social_welfare"] == pytest.approx(1.0)
  assert b["nash_social_welfare"] == pytest.approx(0.25, abs=1e-4)


def test_a_constant_axis_and_nan_points():
  pts = pareto.as_points([0.2, 0.4, float("nan")], [0.5, 0.5, 0.9])
  assert pts.shape == (2, 2)  # the unjudged row is dropped
  scored = pareto.single(pts)
  # L is constant: its range is taken as 1, so (.2,.5) is .2/.2 = 1 behind on U
  assert scored["regret_max"] == pytest.approx(1.0) and scored["coverage"] == 0.5
  assert math.isfinite(scored["hypervolume"])


def test_policy_report_ratio_and_intervals():
  arrays = {"format_ok": np.ones(4), "answer": np.array([1.0, 0.0, 1.0, 1.0]),
            "new_read_dq": np.ones(10),  # the reading check's own questions: not resampled
            "completion_tokens": np.array([100.0, 300.0, 200.0, 200.0]),
            "completion_chars": np.array([400.0, 1200.0, 800.0, 800.0]),
            "user": np.array([0.5, 0.2, 0.6, 0.6]), "llm": np.array([0.5, 0.3, 0.4, 0.4]),
            "da_on_dq": np.array([1.0, np.nan, 0.0, np.nan])}
  out = policy_report.summarise(arrays, n_boot=200)
  assert out["answers_per_1k_tokens"][0] == pytest.approx(1000 * 0.75 / 200)
  assert out["answers_per_1k_chars"][0] == pytest.approx(1000 * 0.75 / 800)
  assert out["da_on_dq"][0] == 0.5  # NaN rows have no part in it
  for value, lo, hi in out.values():
    assert lo <= value + 1e-12 and value <= hi + 1e-12
  text = policy_report.table({"world": out}, counts={"world": "4 of 4"})
  assert "answers / 1k tokens" in text and "| prompts | 4 of 4 |" in text
