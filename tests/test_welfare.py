"""Welfare aggregations and per-source batch normalisations, all run through jax.jit."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gtalign.game import welfare

# --------------------------------------------------------------------------- aggregations


@pytest.mark.parametrize("name,params,u,l,want,want_ones", [
    # want = W(u, l); want_ones = W(1, 1).
    ("cobb_douglas", {}, 0.25, 0.64, 0.4, 1.0),  # sqrt(0.25 * 0.64) = 0.5 * 0.8
    ("cobb_douglas", {"alpha": 0.3}, 0.25, 0.64, 0.25 ** 0.3 * 0.64 ** 0.7, 1.0),
    ("cobb_douglas", {}, -0.5, 0.64, 0.0, 1.0),  # max(u, 0) = 0
    ("linear", {}, 0.2, 0.6, 0.4, 1.0),  # (0.2 + 0.6) / 2
    ("linear", {"w": 0.25}, 0.2, 0.6, 0.5, 1.0),  # 0.25 * 0.2 + 0.75 * 0.6
    ("user_only", {}, 0.2, 0.6, 0.2, 1.0),
    ("llm_only", {}, 0.2, 0.6, 0.6, 1.0),
    ("nash", {}, 0.5, 0.4, 0.2, 1.0),  # 0.5 * 0.4
    ("nash", {"d_u": 0.1, "d_l": 0.5}, 0.5, 0.4, 0.0, 0.45),  # 0.4 * max(-0.1, 0); 0.9 * 0.5
    ("nash", {"d_u": 0.1, "d_l": 0.2}, 0.5, 0.4, 0.08, 0.72),  # 0.4 * 0.2; 0.9 * 0.8
    ("min", {}, 0.5, 0.4, 0.4, 1.0),
])
def test_aggregations(name, params, u, l, want, want_ones):
  f = jax.jit(lambda u_b, l_b: welfare.aggregate(name, u_b, l_b, **params))
  out = f(jnp.array([u, 1.0]), jnp.array([l, 1.0]))
  assert float(out[0]) == pytest.approx(want, abs=1e-6)
  assert float(out[1]) == pytest.approx(want_ones, abs=1e-6)


def test_aggregate_unknown():
  with pytest.raises(ValueError, match="cobb_douglas"):
    welfare.aggregate("utilitarian", jnp.zeros(2), jnp.zeros(2))


# --------------------------------------------------------------------------- normalisations

# Source 0: 0.2, 0.5, 0.5 (a tie), 0.9, plus a masked NaN (e.g. a judge failure).
# Source 1: 0.1, 0.4, 0.7. Source 2 (of 3): only a masked 5.0.
SCORE = np.array([0.2, 0.5, 0.1, 0.5, np.nan, 0.4, 0.9, 0.7, 5.0])
SOURCE = np.array([0, 0, 1, 0, 0, 1, 0, 1, 2])
VALID = np.array([True, True, True, True, False, True, True, True, False])
NUM_SOURCES = 3


def _groups(x, src, valid):
  return {s: np.array([x[i] for i in range(len(x)) if valid[i] and src[i] == s], np.float64)
          for s in set(src[valid].tolist())}


def _mid_ranks(vals, v):
  # 1-based average rank of value v among vals: (#less) + (#equal + 1) / 2.
  return sum(w < v for w in vals) + (sum(w == v for w in vals) + 1) / 2


def reference(name, x, src, valid):
  """Plain numpy/python versions of the section 8 formulas (float64)."""
  g = _groups(x, src, valid)
  allv = np.concatenate(list(g.values()))
  out = np.zeros(len(x))
  for i in range(len(x)):
    if not valid[i]:
      continue
    v, vals = x[i], g[src[i]]
    n, mean, std = len(vals), vals.mean(), vals.std()
    if name == "none":
      out[i] = v
    elif name == "zscore":
      out[i] = (v - mean) / ((std if std > 1e-6 else 1.0) + 1e-6)
    elif name == "minmax":
      rng = vals.max() - vals.min()
      out[i] = 0.0 if rng < 1e-6 else (v - vals.min()) / rng
    elif name == "robustz":
      lo, hi = np.quantile(vals, 0.01), np.quantile(vals, 0.99)
      w = np.clip(vals, lo, hi)
      med = np.median(w)
      mad = np.median(np.abs(w - med)) * 1.4826
      mad = 1.0 if mad < 1e-6 else mad
      out[i] = math.tanh((np.clip(v, lo, hi) - med) / mad / 2)
    elif name == "cdf":
      out[i] = 2 * (_mid_ranks(vals, v) - 0.5) / n - 1
    elif name == "quantile":
      out[i] = np.quantile(allv, (_mid_ranks(vals, v) - 0.5) / n)  # linear interpolation
    elif name == "james":
      lam = n / (n + 50)
      mu_g, sd_g = allv.mean(), allv.std() + 1e-6
      mu_s = lam * mean + (1 - lam) * mu_g
      sd_s = math.sqrt(lam * (std + 1e-6) ** 2 + (1 - lam) * sd_g ** 2)
      out[i] = (v - mu_s) / (sd_s + 1e-6)
    elif name == "decentralize":
      out[i] = (v - mean) / (allv.std() + 1e-6)
    elif name == "selfadapt":
      out[i] = math.tanh((v - mean) / 2)
  return out


@functools.lru_cache(maxsize=None)
def jitted(name, num_sources=NUM_SOURCES):
  return jax.jit(functools.partial(welfare.normalise, name, num_sources=num_sources))


@pytest.mark.parametrize("name", sorted(welfare.NORMALISATIONS))
def test_normalisation_matches_reference(name):
  out = np.asarray(jitted(name)(SCORE, SOURCE, VALID))
  np.testing.assert_allclose(out, reference(name, SCORE, SOURCE, VALID), atol=2e-5)
  assert np.all(out[~VALID] == 0.0)  # masked samples, NaN included, come out as exactly 0


def test_hand_computed_values():
  f = lambda name: np.asarray(jitted(name)(SCORE, SOURCE, VALID))
  # zscore, source 1 = (0.1, 0.4, 0.7): mean 0.4, population std sqrt(0.06) = 0.2449.
  np.testing.assert_allclose(f("zscore")[[2, 5, 7]],
                             [-0.3 / (0.06 ** 0.5 + 1e-6), 0.0, 0.3 / (0.06 ** 0.5 + 1e-6)],
                             atol=1e-5)
  # minmax, source 0 = (0.2, 0.5, 0.5, 0.9): (v - 0.2) / 0.7.
  np.testing.assert_allclose(f("minmax")[[0, 1, 3, 6]], [0.0, 0.3 / 0.7, 0.3 / 0.7, 1.0],
                             atol=1e-6)
  # cdf, source 0: ranks 1, 2.5, 2.5, 4 of n = 4 -> p = 0.125, 0.5, 0.5, 0.875 -> 2p - 1.
  np.testing.assert_allclose(f("cdf")[[0, 1, 3, 6]], [-0.75, 0.0, 0.0, 0.75], atol=1e-6)
  # quantile: source 1 p = 1/6, 1/2, 5/6 over the 7 pooled valid scores
  # sorted (0.1, 0.2, 0.4, 0.5, 0.5, 0.7, 0.9): positions p * 6 = 1, 3, 5 -> 0.2, 0.5, 0.7.
  np.testing.assert_allclose(f("quantile")[[2, 5, 7]], [0.2, 0.5, 0.7], atol=1e-6)
  # selfadapt, source 0 mean 0.525: tanh((0.9 - 0.525) / 2).
  assert f("selfadapt")[6] == pytest.approx(math.tanh(0.375 / 2), abs=1e-6)


def test_degenerate_sources():
  # A constant source: zscore std -> 1 (output 0), minmax range < 1e-6 -> 0, robustz MAD -> 1.
  x, src, valid = np.array([0.3, 0.3, 0.3, 0.1]), np.array([0, 0, 0, 1]), np.ones(4, bool)
  for name in ("zscore", "minmax", "robustz", "selfadapt"):
    out = np.asarray(jitted(name, 2)(x, src, valid))
    np.testing.assert_allclose(out[:3], 0.0, atol=1e-6)
  # A single-sample source: cdf p = 0.5 -> 0.
  assert float(jitted("cdf", 2)(x, src, valid)[3]) == 0.0


def test_robustz_winsorises():
  # n = 101 values 0..99 plus an outlier 1e6: the 99% quantile is 99.01 (position 99), so the
  # outlier is clipped there; median 50, MAD 25 * 1.4826.
  x = np.concatenate([np.arange(100.0), [1e6]])
  out = np.asarray(jitted("robustz", 1)(x, np.zeros(101, int), np.ones(101, bool)))
  hi = np.quantile(x, 0.99)
  assert out[-1] == pytest.approx(math.tanh((hi - 50) / (25 * 1.4826) / 2), abs=1e-5)


def test_unknown_normalisation():
  with pytest.raises(ValueError, match="zscore"):
    welfare.normalise("rank", SCORE, SOURCE, VALID, 3)


_ZSCORE = jitted("zscore")
_CDF = jitted("cdf")


def test_properties():
  # 40 random batches (seeded) through one compiled function each.
  rng = np.random.default_rng(0)
  for _ in range(40):
    x = rng.uniform(-5, 5, 9).astype(np.float32)
    x[rng.random(9) < 0.3] = rng.choice(x)  # ties
    src, valid = rng.integers(0, NUM_SOURCES, 9), rng.random(9) < 0.7
    z = np.asarray(_ZSCORE(x, src, valid))
    c = np.asarray(_CDF(x, src, valid))
    for s in range(NUM_SOURCES):
      members = valid & (src == s)
      if members.any():
        assert abs(z[members].mean()) < 1e-4  # zscore: mean 0 over the valid samples of a source
    assert np.all((c >= -1) & (c <= 1))
    assert np.all(z[~valid] == 0) and np.all(c[~valid] == 0)
