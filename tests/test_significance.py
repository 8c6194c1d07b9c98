"""Tests of pie.significance: every statistic against scipy or a hand computation, the degenerate cases,
power, the bootstrap and the compression-identified-exemplar scores."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import special, stats

import pie  # noqa: F401  (sets the TensorFlow environment before anything else)
from pie import significance as sig
from pie import simulate
from pie import stats as pie_stats


def _random_pair(seed, n_d=7, n_p=9, c=6):
  rng = np.random.default_rng(seed)
  dense = rng.normal(0.0, 0.05, size=(n_d, c)) + rng.normal(0, 0.02, size=c)
  pruned = rng.normal(-0.02, 0.08, size=(n_p, c)) + rng.normal(0, 0.02, size=c)
  return dense, pruned


# ------------------------------------------------------------------------------------------------
# normalized_recall
# ------------------------------------------------------------------------------------------------


def test_normalized_recall_by_hand():
  labels = np.array([0, 0, 1, 1, 1, 2])
  preds = np.array(
      [
          [0, 1, 1, 1, 0, 2],  # recall (1/2, 2/3, 1), top1 4/6
          [0, 0, 1, 0, 0, 0],  # recall (1, 1/3, 0), top1 3/6
      ]
  )
  recall = np.array([[0.5, 2 / 3, 1.0], [1.0, 1 / 3, 0.0]])
  top1 = np.array([4 / 6, 3 / 6])
  np.testing.assert_allclose(sig.normalized_recall(preds, labels, 3, "population"), recall - top1.mean())
  np.testing.assert_allclose(sig.normalized_recall(preds, labels, 3, "per_model"), recall - top1[:, None])
  # The default is per_model: the subtracted top-1 varies with the model, and the test sees that variance.
  np.testing.assert_array_equal(
      sig.normalized_recall(preds, labels, 3), sig.normalized_recall(preds, labels, 3, "per_model")
  )


def test_normalized_recall_absent_class_is_nan_and_matches_stats_module():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 5, size=200)
  labels[labels == 3] = 4  # class 3 absent
  preds = rng.integers(0, 5, size=(4, 200))
  norm = sig.normalized_recall(preds, labels, 5, "population")
  assert np.isnan(norm[:, 3]).all() and not np.isnan(np.delete(norm, 3, axis=1)).any()
  expected = pie_stats.per_class_recall(preds, labels, 5) - pie_stats.top1_accuracy(preds, labels).mean()
  np.testing.assert_allclose(norm, expected)
  per_model = sig.normalized_recall(preds, labels, 5)
  expected = pie_stats.per_class_recall(preds, labels, 5) - pie_stats.top1_accuracy(preds, labels)[:, None]
  np.testing.assert_allclose(per_model, expected)


@pytest.mark.parametrize(
    "preds, labels, message",
    [
        (np.zeros((2, 3)), np.zeros(3, int), "integer"),
        (np.zeros(3, int), np.zeros(3, int), "2-D"),
        (np.full((2, 3), 4), np.zeros(3, int), "outside"),
        (np.zeros((2, 3), int), np.zeros(4, int), "labels has 4"),
        (np.zeros((2, 3), int), np.full(3, -1), "outside"),
    ],
)
def test_normalized_recall_rejects_bad_input(preds, labels, message):
  with pytest.raises(ValueError, match=message):
    sig.normalized_recall(preds, labels, 4)


def test_normalized_recall_rejects_unknown_normalization():
  with pytest.raises(ValueError, match="normalization"):
    sig.normalized_recall(np.zeros((2, 3), int), np.zeros(3, int), 2, "global")


# ------------------------------------------------------------------------------------------------
# class_tests: regular cases
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_tests_match_scipy(seed):
  dense, pruned = _random_pair(seed)
  table = sig.class_tests(dense, pruned)
  ref = stats.ttest_ind(dense, pruned, axis=0, equal_var=False)
  np.testing.assert_allclose(table["t_statistic"], ref.statistic, rtol=1e-12)
  np.testing.assert_allclose(table["p_value"], ref.pvalue, rtol=1e-10)
  np.testing.assert_allclose(table["df"], ref.df, rtol=1e-12)
  np.testing.assert_allclose(table["dense_mean"], dense.mean(axis=0))
  np.testing.assert_allclose(table["normalized_change"], pruned.mean(axis=0) - dense.mean(axis=0))
  np.testing.assert_array_equal(table["significant"], ref.pvalue < 0.05)
  q = stats.false_discovery_control(ref.pvalue, method="bh")
  np.testing.assert_allclose(table["q_value"], q, rtol=1e-12)
  np.testing.assert_array_equal(table["significant_fdr"], q < 0.05)
  assert (table["note"] == "").all()
  assert table.index.name == "class_id" and list(table.index) == list(range(dense.shape[1]))


def test_confidence_interval_by_hand():
  dense = np.array([[0.10], [0.14], [0.09], [0.12]])
  pruned = np.array([[0.02], [0.05], [0.01], [0.08], [0.04]])
  table = sig.class_tests(dense, pruned)
  v_d, v_p = dense[:, 0].var(ddof=1), pruned[:, 0].var(ddof=1)
  se = math.sqrt(v_d / 4 + v_p / 5)
  df = (v_d / 4 + v_p / 5) ** 2 / ((v_d / 4) ** 2 / 3 + (v_p / 5) ** 2 / 4)
  diff = pruned.mean() - dense.mean()
  half = stats.t.ppf(0.975, df) * se
  assert table.loc[0, "ci_low"] == pytest.approx(diff - half, rel=1e-12)
  assert table.loc[0, "ci_high"] == pytest.approx(diff + half, rel=1e-12)
  assert table.loc[0, "df"] == pytest.approx(df, rel=1e-12)
  # A 95% CI excludes 0 exactly when the two-sided p < 0.05.
  assert (table.loc[0, "ci_high"] < 0) == (table.loc[0, "p_value"] < 0.05)
  wide = sig.class_tests(dense, pruned, confidence=0.99)
  assert wide.loc[0, "ci_low"] < table.loc[0, "ci_low"] and wide.loc[0, "ci_high"] > table.loc[0, "ci_high"]


def test_ci_excludes_zero_iff_significant():
  dense, pruned = _random_pair(3, c=40)
  table = sig.class_tests(dense, pruned)
  excludes = (table["ci_low"] > 0) | (table["ci_high"] < 0)
  np.testing.assert_array_equal(excludes, table["significant"])


def test_hedges_g_by_hand():
  dense = np.array([[0.10], [0.14], [0.09], [0.12]])
  pruned = np.array([[0.02], [0.05], [0.01], [0.08], [0.04]])
  g = sig.class_tests(dense, pruned).loc[0, "hedges_g"]
  n_d, n_p = 4, 5
  pooled = math.sqrt(((n_d - 1) * dense.var(ddof=1) + (n_p - 1) * pruned.var(ddof=1)) / (n_d + n_p - 2))
  d = (pruned.mean() - dense.mean()) / pooled
  df = n_d + n_p - 2
  j_exact = math.gamma(df / 2) / (math.sqrt(df / 2) * math.gamma((df - 1) / 2))
  assert g == pytest.approx(d * j_exact, rel=1e-12)
  # The usual approximation J ~ 1 - 3 / (4 df - 1) is within 0.1% at df = 7.
  assert g == pytest.approx(d * (1 - 3 / (4 * df - 1)), rel=1e-3)
  assert g < 0  # pruned lower: negative, like normalized_change


def test_t_sign_follows_scipy_dense_minus_pruned():
  dense = np.array([[0.3], [0.31], [0.29]])
  pruned = np.array([[0.1], [0.12], [0.11]])
  row = sig.class_tests(dense, pruned).loc[0]
  assert row["t_statistic"] > 0 and row["normalized_change"] < 0 and row["significant"]


def test_alpha_controls_the_flag():
  dense, pruned = _random_pair(4, c=30)
  loose = sig.class_tests(dense, pruned, alpha=0.2)
  strict = sig.class_tests(dense, pruned, alpha=0.01)
  np.testing.assert_array_equal(loose["significant"], loose["p_value"] < 0.2)
  np.testing.assert_array_equal(strict["significant"], strict["p_value"] < 0.01)
  assert loose["significant"].sum() > strict["significant"].sum()


# ------------------------------------------------------------------------------------------------
# class_tests: degenerate cases
# ------------------------------------------------------------------------------------------------


def test_constant_and_equal_populations():
  dense = np.full((5, 1), 0.2)
  pruned = np.full((7, 1), 0.2)
  row = sig.class_tests(dense, pruned).loc[0]
  assert row["t_statistic"] == 0 and row["p_value"] == 1 and not row["significant"]
  # No interval of zero width from a degenerate case: there is no variance to build one from.
  assert row["q_value"] == 1 and np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
  assert np.isnan(row["hedges_g"]) and row["note"] == sig.NOTE_CONSTANT_EQUAL


def test_constant_values_that_do_not_sum_exactly_are_still_equal():
  # 0.1 summed 7 or 5 times and divided does not give back 0.1 bit for bit; the test must say "equal".
  row = sig.class_tests(np.full((7, 1), 0.1), np.full((5, 1), 0.1)).loc[0]
  assert row["p_value"] == 1 and row["note"] == sig.NOTE_CONSTANT_EQUAL


@pytest.mark.parametrize("n_d, n_p, extreme", [(6, 6, 2), (4, 7, 1), (2, 2, 2)])
def test_constant_and_separated_populations_use_exact_permutation_p(n_d, n_p, extreme):
  dense = np.full((n_d, 1), 0.3)
  pruned = np.full((n_p, 1), 0.1)
  row = sig.class_tests(dense, pruned).loc[0]
  expected = extreme / special.comb(n_d + n_p, n_d, exact=True)
  assert row["p_value"] == pytest.approx(expected, rel=1e-12)
  assert row["t_statistic"] == np.inf and np.isnan(row["df"])
  assert row["significant"] == (expected < 0.05)
  assert row["normalized_change"] == pytest.approx(-0.2)
  assert np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
  assert row["hedges_g"] == -np.inf and row["note"] == sig.NOTE_CONSTANT_SEPARATED


@pytest.mark.parametrize("n_d, n_p", [(10, 10), (4, 7)])
def test_constant_and_separated_under_population_normalization_is_not_tested(n_d, n_p):
  # The subtracted constant depends on the population a model is in: permuting models between populations is not a
  # valid null distribution, and with no variance left the test is undefined.
  row = sig.class_tests(np.full((n_d, 1), 0.3), np.full((n_p, 1), 0.1), normalization="population").loc[0]
  assert np.isnan(row["p_value"]) and np.isnan(row["q_value"]) and np.isnan(row["t_statistic"])
  assert not row["significant"] and not row["significant_fdr"]
  assert np.isnan(row["ci_low"]) and np.isnan(row["hedges_g"]) and row["note"] == sig.NOTE_CONSTANT_UNTESTABLE


def test_unchanged_class_is_never_significant_under_either_normalization():
  # The quick start's class 6: recall 50/51 in every dense and every pruned model, top-1 lower when pruned. With the
  # paper's normalization it used to come out at t = -inf, p = 1.1e-5, significant after FDR.
  rng = np.random.default_rng(0)
  n, c = 10, 5
  class_count = np.full(c, 51)
  dense_hits = rng.integers(40, 51, size=(n, c))
  pruned_hits = rng.integers(30, 45, size=(n, c))
  dense_hits[:, 2] = pruned_hits[:, 2] = 50
  for normalization in ("per_model", "population"):
    frame = pie_stats.class_ttest_from_hits(dense_hits, pruned_hits, class_count, normalization=normalization)
    row = frame.loc[2]
    assert row["recall_change"] == 0 and row["note"] == sig.NOTE_UNCHANGED
    assert np.isnan(row["p_value"]) and not row["significant"] and not row["significant_fdr"]
    assert np.isnan(row["ci_low"]) and np.isnan(row["ci_high"]) and np.isnan(row["hedges_g"])
    # The other classes are tested, and the unchanged one does not count among the FDR's tests.
    assert frame.drop(index=2)["p_value"].notna().all()
    np.testing.assert_allclose(
        frame.drop(index=2)["q_value"], stats.false_discovery_control(frame.drop(index=2)["p_value"], method="bh")
    )


def test_unchanged_class_mask_from_recall():
  dense = np.array([[0.5, 1.0, 0.2], [0.5, 1.0, 0.3]])
  pruned = np.array([[0.5, 0.9, 0.2], [0.5, 1.0, 0.2]])
  np.testing.assert_array_equal(sig.unchanged_classes(dense, pruned), [True, False, False])
  # Over resamples: [n_resamples, n_models, n_classes].
  np.testing.assert_array_equal(sig.unchanged_classes(dense[None], pruned[None]), [[True, False, False]])


def test_confidence_level_follows_alpha():
  dense, pruned = _random_pair(3)
  for alpha in (0.05, 0.1, 0.01):
    frame = sig.class_tests(dense, pruned, alpha=alpha)
    half = stats.t.ppf(1 - alpha / 2, frame["df"]) * np.sqrt(dense.var(0, ddof=1) / 7 + pruned.var(0, ddof=1) / 9)
    np.testing.assert_allclose(frame["ci_high"] - frame["normalized_change"], half, rtol=1e-10)
    # With the interval at 1 - alpha, it excludes 0 exactly when p < alpha.
    excludes = (frame["ci_low"] > 0) | (frame["ci_high"] < 0)
    np.testing.assert_array_equal(excludes, frame["significant"])


def test_bh_rejects_at_q_equal_to_alpha():
  # p = (0.01, 0.02, 0.03, 0.04, 0.05) over 5 tests: every BH q is exactly 0.05, and the step-up rule rejects all.
  q = sig.bh_q_values([0.01, 0.02, 0.03, 0.04, 0.05])
  np.testing.assert_allclose(q, 0.05)
  np.testing.assert_array_equal(sig.bh_rejections(np.full(5, 0.05), 0.05), [True] * 5)
  np.testing.assert_array_equal(sig.bh_rejections([0.05, 0.0500001, np.nan], 0.05), [True, False, False])


def test_permutation_p_by_enumeration():
  # Enumerate every split of the pooled values for a small case: the exact p equals the formula.
  from itertools import combinations

  values = np.array([1.0] * 3 + [0.0] * 4)
  observed = abs(values[:3].mean() - values[3:].mean())
  count = total = 0
  for group in combinations(range(7), 3):
    mask = np.zeros(7, bool)
    mask[list(group)] = True
    total += 1
    count += abs(values[mask].mean() - values[~mask].mean()) >= observed - 1e-12
  row = sig.class_tests(values[:3, None], values[3:, None]).loc[0]
  assert row["p_value"] == pytest.approx(count / total)
  # The enumeration is the null of per_model values (each a function of its own model); population normalization
  # subtracts group-dependent constants and has no such null.
  assert np.isnan(sig.class_tests(values[:3, None], values[3:, None], normalization="population").loc[0, "p_value"])


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, on the constant sample
def test_one_constant_population_is_a_regular_welch_test():
  dense = np.full((5, 1), 0.2)
  pruned = np.array([[0.1], [0.15], [0.12], [0.05]])
  row = sig.class_tests(dense, pruned).loc[0]
  ref = stats.ttest_ind(dense[:, 0], pruned[:, 0], equal_var=False)
  assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
  assert row["df"] == pytest.approx(3.0)
  assert row["note"] == sig.NOTE_DENSE_CONSTANT


def test_absent_class_is_nan_and_excluded_from_fdr():
  dense, pruned = _random_pair(5, c=5)
  dense[:, 2] = np.nan
  pruned[:, 2] = np.nan
  table = sig.class_tests(dense, pruned)
  row = table.loc[2]
  for column in ("t_statistic", "p_value", "q_value", "ci_low", "ci_high", "hedges_g", "df"):
    assert np.isnan(row[column]), column
  assert not row["significant"] and not row["significant_fdr"] and row["note"] == sig.NOTE_ABSENT
  others = [0, 1, 3, 4]
  ref = stats.ttest_ind(dense[:, others], pruned[:, others], axis=0, equal_var=False)
  np.testing.assert_allclose(table.loc[others, "q_value"], stats.false_discovery_control(ref.pvalue))


def test_single_model_population_has_no_p_value():
  dense, pruned = _random_pair(6, n_d=1, n_p=5, c=3)
  table = sig.class_tests(dense, pruned)
  assert table["p_value"].isna().all() and table["q_value"].isna().all()
  assert not table["significant"].any() and not table["significant_fdr"].any()
  assert (table["note"] == sig.NOTE_SINGLE_MODEL).all()
  np.testing.assert_allclose(table["dense_mean"], dense[0])


def test_single_model_in_both_populations_with_equal_values_is_not_significant():
  table = sig.class_tests(np.array([[0.1, 0.2]]), np.array([[0.1, 0.3]]))
  assert table["p_value"].isna().all() and not table["significant"].any()


def test_class_tests_reject_bad_input():
  with pytest.raises(ValueError, match="NaN for some models"):
    sig.class_tests(np.array([[0.1], [np.nan]]), np.array([[0.1], [0.2]]))
  with pytest.raises(ValueError, match="classes"):
    sig.class_tests(np.zeros((3, 2)), np.zeros((3, 3)))
  with pytest.raises(ValueError, match="2-D"):
    sig.class_tests(np.zeros(3), np.zeros((3, 3)))
  with pytest.raises(ValueError, match="alpha"):
    sig.class_tests(np.zeros((3, 2)), np.zeros((3, 2)), alpha=1.5)
  with pytest.raises(ValueError, match="infinite"):
    sig.class_tests(np.full((3, 2), np.inf), np.zeros((3, 2)))


def test_vectorized_welch_over_resamples_matches_scipy():
  rng = np.random.default_rng(7)
  dense = rng.normal(size=(4, 6, 5))
  pruned = rng.normal(0.3, 2.0, size=(4, 8, 5))
  result = sig.welch_test(dense, pruned)
  ref = stats.ttest_ind(dense, pruned, axis=1, equal_var=False)
  np.testing.assert_allclose(result.t, ref.statistic, rtol=1e-12)
  np.testing.assert_allclose(result.p, ref.pvalue, rtol=1e-10)
  np.testing.assert_allclose(result.df, ref.df, rtol=1e-12)
  np.testing.assert_allclose(result.mean_dense, dense.mean(axis=1))
  np.testing.assert_allclose(result.var_pruned, pruned.var(axis=1, ddof=1))
  assert (result.n_dense, result.n_pruned) == (6, 8) and result.t.shape == (4, 5)
  assert (result.case == sig.CASE_REGULAR).all() and (result.note == "").all()
  np.testing.assert_array_equal(result.significant(0.05), ref.pvalue < 0.05)


# ------------------------------------------------------------------------------------------------
# welch_test, welch_confidence_interval, hedges_g: the kernel itself
# ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, on the constant sample
def test_welch_test_degenerate_columns_follow_the_table():
  # Columns: regular, dense constant, both constant and equal, both constant and different, absent, unchanged.
  dense = np.array(
      [[0.1, 0.2, 0.3, 0.3, np.nan, 0.1], [0.3, 0.2, 0.3, 0.3, np.nan, 0.2], [0.2, 0.2, 0.3, 0.3, np.nan, 0.4]]
  )
  pruned = np.array([[0.0, 0.1, 0.3, 0.1, np.nan, 0.3], [0.1, 0.15, 0.3, 0.1, np.nan, 0.1]])
  unchanged = np.array([False, False, False, False, False, True])
  result = sig.welch_test(dense, pruned, unchanged=unchanged)
  np.testing.assert_array_equal(
      result.case,
      [
          sig.CASE_REGULAR,
          sig.CASE_REGULAR,
          sig.CASE_CONSTANT_EQUAL,
          sig.CASE_CONSTANT_SEPARATED,
          sig.CASE_ABSENT,
          sig.CASE_UNCHANGED,
      ],
  )
  ref = stats.ttest_ind(dense[:, :2], pruned[:, :2], equal_var=False)
  np.testing.assert_allclose(result.p[:2], ref.pvalue, rtol=1e-10)
  assert result.df[1] == pytest.approx(1.0)  # dense constant: df = n_pruned - 1
  assert result.t[2] == 0 and result.p[2] == 1 and np.isnan(result.df[2])
  assert result.t[3] == np.inf and result.p[3] == pytest.approx(1 / special.comb(5, 3))
  assert np.isnan(result.p[4:]).all() and np.isnan(result.t[4:]).all()
  np.testing.assert_array_equal(result.tested, [True, True, True, True, False, False])
  assert list(result.note) == [
      "",
      sig.NOTE_DENSE_CONSTANT,
      sig.NOTE_CONSTANT_EQUAL,
      sig.NOTE_CONSTANT_SEPARATED,
      sig.NOTE_ABSENT,
      sig.NOTE_UNCHANGED,
  ]
  # Not exchangeable (a population-level constant was subtracted): complete separation is untestable.
  untestable = sig.welch_test(dense, pruned, exchangeable=False)
  assert untestable.case[3] == sig.CASE_CONSTANT_UNTESTABLE and np.isnan(untestable.p[3])
  assert untestable.note[3] == sig.NOTE_CONSTANT_UNTESTABLE
  single = sig.welch_test(dense[:1], pruned)
  assert (single.case[:4] == sig.CASE_SINGLE_MODEL).all() and np.isnan(single.p).all()
  with pytest.raises(dataclasses.FrozenInstanceError):
    result.p = None


def test_welch_interval_and_hedges_g_are_those_of_class_tests():
  dense, pruned = _random_pair(11, c=8)
  dense[:, 3] = 0.2
  pruned[:, 3] = 0.1  # complete separation: no interval, infinite g
  result = sig.welch_test(dense, pruned)
  table = sig.class_tests(dense, pruned, alpha=0.1)
  low, high = sig.welch_confidence_interval(result, 0.9)
  np.testing.assert_array_equal(low, table["ci_low"])
  np.testing.assert_array_equal(high, table["ci_high"])
  np.testing.assert_array_equal(sig.hedges_g(result), table["hedges_g"])
  assert np.isnan(low[3]) and sig.hedges_g(result)[3] == -np.inf
  half = stats.t.ppf(0.95, result.df[0]) * math.sqrt(dense[:, 0].var(ddof=1) / 7 + pruned[:, 0].var(ddof=1) / 9)
  assert high[0] == pytest.approx(pruned[:, 0].mean() - dense[:, 0].mean() + half, rel=1e-12)
  assert np.isnan(sig.hedges_g(sig.welch_test(dense[:1], pruned))).all()
  with pytest.raises(ValueError, match="confidence must be in"):
    sig.welch_confidence_interval(result, 95)


@pytest.mark.parametrize(
    "dense, pruned, kwargs, message",
    [
        (np.zeros(3), np.zeros((3, 1)), {}, r"the dense sample must be an array \[\.\.\., n_models, n_columns\]"),
        (np.full((3, 2), np.inf), np.zeros((3, 2)), {}, "the dense sample contains infinite values"),
        (np.array([[0.1], [np.nan]]), np.zeros((3, 1)), {}, "NaN for some models but not all"),
        (np.zeros((3, 2)), np.zeros((3, 3)), {}, "the dense sample has 2 classes"),
        (np.zeros((2, 3, 2)), np.zeros((3, 3, 2)), {}, "same leading"),
        (np.zeros((3, 2)), np.zeros((3, 2)), {"unchanged": np.zeros(3, bool)}, "unchanged must be a bool array"),
        (np.zeros((3, 2)), np.zeros((3, 2)), {"unchanged": np.zeros(2)}, "unchanged must be a bool array"),
    ],
)
def test_welch_test_rejects_bad_input(dense, pruned, kwargs, message):
  with pytest.raises(ValueError, match=message):
    sig.welch_test(dense, pruned, **kwargs)


# ------------------------------------------------------------------------------------------------
# Power and models_needed
# ------------------------------------------------------------------------------------------------


def test_welch_power_by_hand():
  v_d, v_p, n_d, n_p, effect = 0.004, 0.009, 12, 15, 0.05
  se2 = v_d / n_d + v_p / n_p
  df = se2**2 / ((v_d / n_d) ** 2 / (n_d - 1) + (v_p / n_p) ** 2 / (n_p - 1))
  crit = stats.t.ppf(0.975, df)
  ncp = effect / math.sqrt(se2)
  expected = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
  assert sig.welch_power(v_d, v_p, n_d, n_p, effect) == pytest.approx(expected, rel=1e-12)
  assert sig.welch_power(v_d, v_p, n_d, n_p, -effect) == pytest.approx(expected, rel=1e-12)


def test_welch_power_approaches_normal_approximation_for_large_samples():
  v, n, effect = 0.01, 2000, 0.01
  z = effect / math.sqrt(2 * v / n)
  normal = stats.norm.sf(1.959963984540054 - z) + stats.norm.cdf(-1.959963984540054 - z)
  assert sig.welch_power(v, v, n, n, effect) == pytest.approx(normal, abs=2e-3)
  assert sig.welch_power(v, v, 10, 10, 0.0) == pytest.approx(0.05, rel=1e-9)


def test_models_needed_is_the_smallest_sufficient_size():
  dense, pruned = _random_pair(8, n_d=20, n_p=20, c=12)
  plan = sig.models_needed(dense, pruned, effect=0.05, power=0.8)
  table = plan.per_class
  v_d, v_p = dense.var(axis=0, ddof=1), pruned.var(axis=0, ddof=1)
  np.testing.assert_allclose(table["dense_var"], v_d)
  for c in range(12):
    n = int(table.loc[c, "models_needed"])
    assert sig.welch_power(v_d[c], v_p[c], n, n, 0.05) >= 0.8
    if n > 2:
      assert sig.welch_power(v_d[c], v_p[c], n - 1, n - 1, 0.05) < 0.8
    assert table.loc[c, "power_at_needed"] == pytest.approx(sig.welch_power(v_d[c], v_p[c], n, n, 0.05))
    assert table.loc[c, "current_power"] == pytest.approx(sig.welch_power(v_d[c], v_p[c], 20, 20, 0.05))
  needed = table["models_needed"].to_numpy()
  assert plan.summary["median"] == np.quantile(needed, 0.5, method="inverted_cdf")
  assert plan.summary["p90"] == np.quantile(needed, 0.9, method="inverted_cdf")
  assert plan.summary["max"] == needed.max() and plan.summary["classes_planned"] == 12
  # A larger effect or a lower power never needs more models.
  assert (sig.models_needed(dense, pruned, 0.1).per_class["models_needed"] <= needed).all()
  assert (sig.models_needed(dense, pruned, 0.05, power=0.5).per_class["models_needed"] <= needed).all()


def test_models_needed_degenerate_classes_and_cap():
  dense, pruned = _random_pair(9, n_d=6, n_p=6, c=4)
  dense[:, 0] = pruned[:, 0] = np.nan
  dense[:, 1] = 0.1
  pruned[:, 1] = 0.1
  plan = sig.models_needed(dense, pruned, effect=1e-4, max_models=50)
  table = plan.per_class
  assert np.isnan(table.loc[0, "models_needed"]) and table.loc[0, "note"] == sig.NOTE_ABSENT
  assert np.isnan(table.loc[1, "models_needed"]) and table.loc[1, "note"] == sig.NOTE_NO_VARIANCE
  assert np.isinf(table.loc[2, "models_needed"]) and table.loc[2, "note"] == sig.NOTE_OVER_CAP
  assert plan.summary["classes_unplannable"] == 2 and plan.summary["classes_over_cap"] == 2
  with pytest.raises(ValueError, match="non-zero"):
    sig.models_needed(dense, pruned, effect=0.0)


def test_models_needed_delivers_the_predicted_power_on_normal_data():
  # Known variances, the size models_needed picks, many simulated studies: rejection rate = power.
  rng = np.random.default_rng(10)
  v_d, v_p, effect = 0.002, 0.005, 0.04
  pilot_d = rng.normal(0, 1, size=(4000, 1))
  pilot_p = rng.normal(0, 1, size=(4000, 1))
  pilot_d = (pilot_d - pilot_d.mean()) / pilot_d.std(ddof=1) * math.sqrt(v_d)
  pilot_p = (pilot_p - pilot_p.mean()) / pilot_p.std(ddof=1) * math.sqrt(v_p)
  plan = sig.models_needed(pilot_d, pilot_p, effect)
  n = int(plan.per_class.loc[0, "models_needed"])
  predicted = plan.per_class.loc[0, "power_at_needed"]
  reps = 4000
  dense = rng.normal(0, math.sqrt(v_d), size=(reps, n))
  pruned = rng.normal(-effect, math.sqrt(v_p), size=(reps, n))
  rate = (stats.ttest_ind(dense, pruned, axis=1, equal_var=False).pvalue < 0.05).mean()
  assert abs(rate - predicted) < 0.03, (n, rate, predicted)


def test_models_needed_predicts_the_power_on_planted_classes():
  # One eval set, many i.i.d. models: disjoint groups of n models are independent replicate studies.
  study = simulate.simulate_populations(
      2000,
      40,
      360,
      360,
      impacted_classes=[3, 11, 17, 25, 31, 38],
      class_effect=[-0.06, 0.06] * 3,
      class_spread=0.0,
      seed=11,
  )
  impacted = study.impacted_classes
  effect = np.abs(study.expected_normalized_change[impacted])
  full_d = sig.normalized_recall(study.dense_predictions, study.labels, 40)
  full_p = sig.normalized_recall(study.pruned_predictions, study.labels, 40)
  plan = sig.models_needed(full_d[:, impacted], full_p[:, impacted], effect)
  detections = trials = 0
  predicted = []
  for column, c in enumerate(impacted):
    n = int(plan.per_class.loc[column, "models_needed"])
    assert 4 <= n <= 40, n
    for g in range(360 // n):
      rows = slice(g * n, (g + 1) * n)
      d = sig.normalized_recall(study.dense_predictions[rows], study.labels, 40)
      p = sig.normalized_recall(study.pruned_predictions[rows], study.labels, 40)
      detections += bool(sig.class_tests(d[:, [c]], p[:, [c]]).loc[0, "significant"])
      trials += 1
      predicted.append(plan.per_class.loc[column, "power_at_needed"])
  rate = detections / trials
  # Stated tolerance: 0.1 (binomial SE about 0.02 on ~250 trials, plus pilot-variance error).
  assert abs(rate - np.mean(predicted)) < 0.1, (rate, np.mean(predicted), trials)


# ------------------------------------------------------------------------------------------------
# Modal labels on the sorted vote table
# ------------------------------------------------------------------------------------------------


def _brute_modal(preds, num_classes, weights=None):
  weights = np.ones(preds.shape[0]) if weights is None else weights
  counts = np.zeros((preds.shape[1], num_classes))
  for m in range(preds.shape[0]):
    counts[np.arange(preds.shape[1]), preds[m]] += weights[m]
  return counts.argmax(axis=1)  # first maximum = smallest id


def _brute_votes(preds, num_classes, weights, tie_break):
  """Modal label, its votes, share and tie flag from a dense vote table, one example at a time."""
  out = []
  for column in preds.T:
    counts = np.bincount(column, weights=weights, minlength=num_classes)
    best = np.flatnonzero(counts == counts.max())
    out.append((best[0] if tie_break == "smallest" else best[-1], counts.max(), len(best) > 1))
  labels, count, tied = map(np.array, zip(*out))
  return labels, count, count / weights.sum(), tied


@pytest.mark.parametrize("tie_break", sig.TIE_BREAKS)
@pytest.mark.parametrize("seed", [0, 1])
def test_modal_votes_match_brute_force(seed, tie_break):
  rng = np.random.default_rng(seed)
  preds = rng.integers(0, 4, size=(6, 500))  # 4 classes, 6 models: many ties
  unit = np.ones(6, dtype=np.int64)
  resample = np.bincount(rng.integers(0, 6, size=6), minlength=6)  # multiplicities, zeros included
  for weights in (None, unit, resample, np.array([0, 1, 0, 1, 1, 0]), np.array([3, 1, 4, 1, 5, 9])):
    votes = sig.modal_votes(preds, 4, weights=weights, tie_break=tie_break)
    labels, count, share, tied = _brute_votes(preds, 4, unit if weights is None else weights, tie_break)
    np.testing.assert_array_equal(votes.labels, labels)
    np.testing.assert_array_equal(votes.count, count)
    np.testing.assert_array_equal(votes.share, share)
    np.testing.assert_array_equal(votes.tied, tied)
    assert votes.tie_break == tie_break and votes.labels.dtype == np.int64
    # The fast path without details is the same labels.
    np.testing.assert_array_equal(sig.SortedVotes(preds, 4).modal(weights, tie_break), labels)
  # The paper-level API is the same kernel with unit weights.
  details = pie_stats.modal_labels(preds, return_details=True, tie_break=tie_break)
  labels, _, share, tied = _brute_votes(preds, 4, unit, tie_break)
  for got, expected in zip(details, (labels, share, tied)):
    np.testing.assert_array_equal(got, expected)


def test_weighted_modal_labels_match_brute_force():
  rng = np.random.default_rng(2)
  preds = rng.integers(0, 5, size=(7, 400))
  votes = sig.SortedVotes(preds, 5)
  for _ in range(5):
    weights = np.bincount(rng.integers(0, 7, size=7), minlength=7)
    np.testing.assert_array_equal(votes.modal(weights), _brute_modal(preds, 5, weights))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64])
def test_modal_votes_of_narrow_label_dtypes_in_a_large_label_space(dtype):
  # num_classes - 1 (999) does not fit uint8: the keys are computed in their own dtype.
  preds = np.array([[1, 2, 7], [1, 3, 7], [0, 3, 250]], dtype=dtype)
  for tie_break, expected in (("smallest", [1, 3, 7]), ("largest", [1, 3, 7])):
    np.testing.assert_array_equal(sig.modal_votes(preds, 1000, tie_break=tie_break).labels, expected)
  np.testing.assert_array_equal(sig.SortedVotes(preds[:2], 1000).modal(tie_break="largest"), [1, 3, 7])
  np.testing.assert_array_equal(sig.SortedVotes(preds[:2], 1000).modal(), [1, 2, 7])
  np.testing.assert_array_equal(pie_stats.modal_labels(preds[:2], tie_break="largest"), [1, 3, 7])


def test_modal_votes_with_weights_too_large_for_int32_keys():
  # Keys are count * num_classes + code: 1000 classes and a total weight of 5e6 overflow int32.
  rng = np.random.default_rng(3)
  preds = rng.integers(0, 1000, size=(5, 300))
  preds[:, :100] = rng.integers(0, 2, size=(5, 100))  # ties between labels 0 and 1
  weights = np.array([1_000_000, 1_000_000, 2_000_000, 1_000_000, 1_000_000])  # ties: 3e6 against 3e6
  for tie_break in sig.TIE_BREAKS:
    votes = sig.modal_votes(preds, 1000, weights=weights, tie_break=tie_break)
    labels, count, share, tied = _brute_votes(preds, 1000, weights, tie_break)
    np.testing.assert_array_equal(votes.labels, labels)
    np.testing.assert_array_equal(votes.count, count)
    np.testing.assert_array_equal(votes.share, share)
    np.testing.assert_array_equal(votes.tied, tied)
    assert votes.tied[:100].any() and votes.count.max() > np.iinfo(np.int32).max // 1000


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.ones(3, dtype=int), r"one weight per model \(4\)"),
        (np.ones(4), "integer vote counts"),
        (np.array([1, -1, 1, 1]), ">= 0 with at least one positive"),
        (np.zeros(4, dtype=int), ">= 0 with at least one positive"),
    ],
)
def test_sorted_votes_reject_bad_weights(weights, message):
  votes = sig.SortedVotes(np.zeros((4, 3), dtype=int), 2)
  with pytest.raises(ValueError, match=message):
    votes.modal(weights)
  with pytest.raises(ValueError, match="tie_break must be one of"):
    votes.modal(tie_break="random")


def test_run_totals_are_the_vote_table():
  rng = np.random.default_rng(9)
  preds = rng.integers(0, 6, size=(8, 200))
  votes = sig.SortedVotes(preds, 6)
  weights = rng.integers(-3, 4, size=8)
  totals = votes.run_totals(weights)
  table = np.zeros((200, 6), dtype=np.int64)
  for m in range(8):
    table[np.arange(200), preds[m]] += weights[m]
  rebuilt = np.zeros_like(table)
  j, i = np.nonzero(votes.run_end)
  rebuilt[i, votes.sorted_labels[j, i]] = totals[j, i]
  np.testing.assert_array_equal(rebuilt, table)
  np.testing.assert_array_equal(votes.abs_run_totals(weights), np.abs(table).sum(axis=1))
  np.testing.assert_array_equal(
      pie_stats.vote_counts(preds, 6), np.stack([np.bincount(c, minlength=6) for c in preds.T])
  )


# ------------------------------------------------------------------------------------------------
# bootstrap_stability
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_study():
  return simulate.simulate_populations(600, 12, 8, 9, pie_fraction=0.05, impacted_classes=2, class_effect=-0.2, seed=3)


def test_bootstrap_equals_a_brute_force_recomputation(small_study):
  s = small_study
  result = sig.bootstrap_stability(s.dense_predictions, s.pruned_predictions, s.labels, 12, num_resamples=15, seed=4)
  assert result.dense_resamples.shape == (15, 8) and result.pruned_resamples.shape == (15, 9)
  pie_hits = np.zeros(600)
  class_hits = np.zeros(12)
  for b in range(15):
    d_preds = s.dense_predictions[result.dense_resamples[b]]
    p_preds = s.pruned_predictions[result.pruned_resamples[b]]
    pie_hits += _brute_modal(d_preds, 12) != _brute_modal(p_preds, 12)
    d = sig.normalized_recall(d_preds, s.labels, 12)
    p = sig.normalized_recall(p_preds, s.labels, 12)
    with np.errstate(all="ignore"):
      pvalue = stats.ttest_ind(d, p, axis=0, equal_var=False).pvalue
    class_hits += np.nan_to_num(pvalue, nan=1.0) < 0.05
  np.testing.assert_allclose(result.pie_stability, pie_hits / 15)
  np.testing.assert_allclose(result.class_significance, class_hits / 15)
  observed = sig.class_tests(
      sig.normalized_recall(s.dense_predictions, s.labels, 12),
      sig.normalized_recall(s.pruned_predictions, s.labels, 12),
  )
  np.testing.assert_array_equal(result.observed_significant, observed["significant"])
  np.testing.assert_array_equal(result.observed_pie, pie_stats.find_pies(s.dense_predictions, s.pruned_predictions))


def test_bootstrap_per_model_normalization_matches_brute_force(small_study):
  s = small_study
  result = sig.bootstrap_stability(
      s.dense_predictions,
      s.pruned_predictions,
      s.labels,
      12,
      num_resamples=6,
      seed=5,
      normalization="per_model",
      chunk_size=4,
  )
  hits = np.zeros(12)
  for b in range(6):
    d = sig.normalized_recall(s.dense_predictions[result.dense_resamples[b]], s.labels, 12, "per_model")
    p = sig.normalized_recall(s.pruned_predictions[result.pruned_resamples[b]], s.labels, 12, "per_model")
    hits += sig.class_tests(d, p)["significant"].to_numpy()
  np.testing.assert_allclose(result.class_significance, hits / 6)


def test_bootstrap_is_reproducible_and_seed_dependent(small_study):
  s = small_study
  args = (s.dense_predictions, s.pruned_predictions, s.labels, 12)
  first = sig.bootstrap_stability(*args, num_resamples=20, seed=1)
  again = sig.bootstrap_stability(*args, num_resamples=20, seed=1)
  other = sig.bootstrap_stability(*args, num_resamples=20, seed=2)
  np.testing.assert_array_equal(first.pie_stability, again.pie_stability)
  np.testing.assert_array_equal(first.class_significance, again.class_significance)
  np.testing.assert_array_equal(first.dense_resamples, again.dense_resamples)
  assert not np.array_equal(first.dense_resamples, other.dense_resamples)
  assert not np.array_equal(first.pie_stability, other.pie_stability)


def test_bootstrap_unanimous_examples_and_absent_classes():
  labels = np.array([0, 0, 1, 1, 2, 2])
  dense = np.array([[0, 0, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2]])
  pruned = np.array([[0, 1, 1, 1, 2, 2], [0, 1, 1, 1, 2, 2], [0, 1, 1, 0, 2, 2]])
  result = sig.bootstrap_stability(dense, pruned, labels, 4, num_resamples=30, seed=0)
  assert result.pie_stability[0] == 0.0  # unanimous, same label
  assert result.pie_stability[1] == 1.0  # unanimous, different labels
  assert 0.0 <= result.pie_stability[5] < 1.0
  assert np.isnan(result.class_significance[3])  # class 3 has no example
  assert not np.isnan(result.class_significance[:3]).any()


def test_bootstrap_rejects_bad_input(small_study):
  s = small_study
  with pytest.raises(ValueError, match="examples"):
    sig.bootstrap_stability(s.dense_predictions[:, :10], s.pruned_predictions, s.labels, 12)
  with pytest.raises(ValueError, match="num_resamples"):
    sig.bootstrap_stability(s.dense_predictions, s.pruned_predictions, s.labels, 12, num_resamples=0)


# ------------------------------------------------------------------------------------------------
# exemplar_scores
# ------------------------------------------------------------------------------------------------


def test_exemplar_scores_by_hand():
  baseline = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [0, 2, 2, 1], [1, 2, 2, 1]])  # 4 models
  compressed = np.array([[0, 1, 3, 0], [0, 2, 3, 0]])  # 2 models
  table = sig.exemplar_scores(baseline, compressed, 4)
  # Example 0: baseline {0: 3/4, 1: 1/4}, compressed {0: 1} -> 1/4 + 1/4 = 0.5
  # Example 1: baseline {1: 1/2, 2: 1/2} (tie -> 1), compressed {1: 1/2, 2: 1/2} -> 0
  # Example 2: baseline {2: 1}, compressed {3: 1} -> 2
  # Example 3: baseline {3: 1/2, 1: 1/2} (tie -> 1), compressed {0: 1} -> 2
  np.testing.assert_allclose(table["l1_distance"], [0.5, 0.0, 2.0, 2.0])
  np.testing.assert_array_equal(table["baseline_modal"], [0, 1, 2, 1])
  np.testing.assert_array_equal(table["compressed_modal"], [0, 1, 3, 0])
  np.testing.assert_array_equal(table["is_cie"], [False, False, True, True])
  np.testing.assert_array_equal(table["rank"], [3, 4, 1, 2])  # the tie at 2.0 goes to the smaller id


def test_exemplar_scores_match_a_dense_computation():
  rng = np.random.default_rng(12)
  baseline = rng.integers(0, 6, size=(5, 300))
  compressed = rng.integers(0, 6, size=(8, 300))

  def fractions(preds):
    out = np.zeros((300, 6))
    for row in preds:
      out[np.arange(300), row] += 1
    return out / preds.shape[0]

  l1 = np.abs(fractions(baseline) - fractions(compressed)).sum(axis=1)
  table = sig.exemplar_scores(baseline, compressed, 6)
  np.testing.assert_allclose(table["l1_distance"], l1, atol=1e-12)
  assert table["l1_distance"].between(0, 2).all()
  order = sorted(range(300), key=lambda i: (-round(l1[i], 9), i))
  np.testing.assert_array_equal(table["rank"].to_numpy()[order], np.arange(1, 301))
  np.testing.assert_array_equal(table["is_cie"], pie_stats.find_pies(baseline, compressed))


def test_exemplar_scores_reject_mismatched_populations():
  with pytest.raises(ValueError, match="examples"):
    sig.exemplar_scores(np.zeros((2, 3), int), np.zeros((2, 4), int), 2)


# ------------------------------------------------------------------------------------------------
# The same statistics from blocks of examples (what pie.beam_analysis relies on)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuts", [[0, 300], [0, 1, 2, 300], [0, 37, 150, 151, 299, 300]])
def test_exemplar_ranks_of_blocks_equal_the_ranks_of_all_examples(cuts):
  rng = np.random.default_rng(3)
  baseline, compressed = rng.integers(0, 3, size=(3, 300)), rng.integers(0, 3, size=(2, 300))  # many equal distances
  expected = sig.exemplar_scores(baseline, compressed, 3)
  _, _, l1_int = sig.exemplar_parts(baseline, compressed, 3)
  histograms = [sig.exemplar_histogram(l1_int[a:b], 3, 2) for a, b in zip(cuts[:-1], cuts[1:])]
  total = np.sum(histograms, axis=0)
  ranks = [
      sig.exemplar_ranks(l1_int[a:b], total, np.sum(histograms[:i], axis=0) if i else np.zeros_like(total))
      for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))
  ]
  np.testing.assert_array_equal(np.concatenate(ranks), expected["rank"].to_numpy())


def test_statistics_from_hits_equal_those_from_predictions():
  s = simulate.simulate_populations(84, 7, 5, 4, seed=2)
  labels = s.labels
  hits = [
      sig.class_hits(p[:, :40], labels[:40], 7) + sig.class_hits(p[:, 40:], labels[40:], 7)
      for p in (s.dense_predictions, s.pruned_predictions)
  ]
  class_count = np.bincount(labels, minlength=7)
  for normalization in sig.NORMALIZATIONS:
    np.testing.assert_array_equal(
        sig.normalized_recall_from_hits(hits[0], class_count, normalization),
        sig.normalized_recall(s.dense_predictions, labels, 7, normalization),
    )
  from_hits = pie_stats.class_ttest_from_hits(hits[0], hits[1], class_count)
  from_predictions = pie_stats.class_ttest(s.dense_predictions, s.pruned_predictions, labels, 7)
  assert from_hits.equals(from_predictions)
  boot = sig.bootstrap_stability(s.dense_predictions, s.pruned_predictions, labels, 7, num_resamples=9, seed=4)
  rows = sig.bootstrap_resamples(5, 4, 9, seed=4)
  np.testing.assert_array_equal(rows[0], boot.dense_resamples)
  stability = np.concatenate(
      [
          sig.bootstrap_pie_stability(s.dense_predictions[:, a:b], s.pruned_predictions[:, a:b], 7, *rows)[0]
          for a, b in ((0, 30), (30, 84))
      ]
  )
  np.testing.assert_array_equal(stability, boot.pie_stability)


# ------------------------------------------------------------------------------------------------
# Noise floor: A/A splits
# ------------------------------------------------------------------------------------------------


def test_half_splits_are_disjoint_draws_from_the_pool():
  first, second = sig.half_splits(12, 5, 6, 50, seed=3)
  assert first.shape == (50, 5) and second.shape == (50, 6)
  for a, b in zip(first, second):
    assert len(set(a) | set(b)) == 11 and not set(a) & set(b) and max(max(a), max(b)) < 12
  again = sig.half_splits(12, 5, 6, 50, seed=3)
  np.testing.assert_array_equal(first, again[0])
  assert len({tuple(sorted(a)) for a in first}) > 40  # the splits differ
  with pytest.raises(ValueError, match="cannot be split"):
    sig.half_splits(10, 6, 5, 3)


def test_split_pie_counts_equal_the_modal_rule_on_each_split():
  rng = np.random.default_rng(4)
  pool = np.where(rng.random((14, 300)) < 0.6, 0, rng.integers(0, 5, size=(14, 300)))
  first, second = sig.half_splits(14, 7, 7, 30, seed=1)
  counts = sig.split_pie_counts(pool, first, second, 5)
  expected = [int(pie_stats.find_pies(pool[a], pool[b]).sum()) for a, b in zip(first, second)]
  np.testing.assert_array_equal(counts, expected)
  # Counts of blocks of examples add up.
  halves = sig.split_pie_counts(pool[:, :120], first, second, 5) + sig.split_pie_counts(pool[:, 120:], first, second, 5)
  np.testing.assert_array_equal(halves, counts)


def test_split_class_tests_equal_class_tests_on_each_split():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 6, size=400)
  pool = np.where(rng.random((16, 400)) < 0.8, labels, rng.integers(0, 6, size=(16, 400)))
  hits = sig.class_hits(pool, labels, 6)
  count = np.bincount(labels, minlength=6)
  first, second = sig.half_splits(16, 8, 8, 20, seed=2)
  out = sig.split_class_tests(hits, count, first, second, alpha=0.2)
  for i, (a, b) in enumerate(zip(first, second)):
    frame = pie_stats.class_ttest_from_hits(hits[a], hits[b], count, alpha=0.2)
    assert out["num_significant"][i] == frame["significant"].sum()
    assert out["num_significant_fdr"][i] == frame["significant_fdr"].sum()
    assert out["num_tested"][i] == frame["p_value"].notna().sum()


def test_pies_against_floor():
  level, control = np.array([12, 14, 16, 18, 20]), np.array([10, 10, 10, 10, 10])
  out = sig.pies_against_floor(15, floor_mean=9.0, level_counts=level, control_counts=control, alpha=0.5)
  # The interval is the excess plus the centred quantiles of level - control (2, 4, 6, 8, 10; centred -4 .. 4).
  assert out["excess"] == 6.0 and out["ci_low"] == pytest.approx(6 - 2) and out["ci_high"] == pytest.approx(6 + 2)
  assert out["distinguishable"]  # the interval lies above 0
  out = sig.pies_against_floor(11, floor_mean=9.0, level_counts=level, control_counts=control, alpha=0.5)
  assert out["ci_low"] == pytest.approx(0.0) and not out["distinguishable"]  # touching 0 is not above it
  out = sig.pies_against_floor(15, floor_mean=9.0)
  assert out["excess"] == 6.0 and out["ci_low"] is None and out["distinguishable"] is None  # no resamples
  assert sig.pies_against_floor(15)["excess"] is None  # no floor


def test_strong_effects_are_beyond_the_floor():
  # Populations that disagree strongly on a few examples: a test that pooled and re-split them would see the same
  # disagreement in its random mixtures; the interval against the replicate does not.
  rng = np.random.default_rng(3)
  n = 300
  labels = rng.integers(0, 4, n)
  dense, replicate = (np.where(rng.random((8, n)) < 0.9, labels, (labels + 1) % 4) for _ in range(2))
  pruned = np.where(rng.random((8, n)) < 0.9, labels, (labels + 1) % 4)
  pruned[:, :30] = (labels[:30] + 1) % 4  # 30 examples every pruned model gets wrong
  observed = int(pie_stats.find_pies(dense, pruned).sum())
  first, second = sig.half_splits(16, 8, 8, 200, seed=0)
  floor = sig.split_pie_counts(np.concatenate([dense, replicate]), first, second, 4)
  rows_d, rows_p = sig.bootstrap_resamples(8, 8, 200, seed=0)
  _, rows_r = sig.bootstrap_resamples(8, 8, 200, seed=1)
  level = sig.bootstrap_pie_stability(dense, pruned, 4, rows_d, rows_p, return_counts=True)[2]
  control = sig.bootstrap_pie_stability(dense, replicate, 4, rows_d, rows_r, return_counts=True)[2]
  out = sig.pies_against_floor(observed, floor.mean(), level, control)
  assert observed >= 30 and out["distinguishable"] and out["ci_low"] > 10


def test_bootstrap_pie_counts_are_the_pies_of_each_resample():
  rng = np.random.default_rng(8)
  dense = np.where(rng.random((6, 200)) < 0.7, 0, rng.integers(0, 4, size=(6, 200)))
  pruned = np.where(rng.random((5, 200)) < 0.5, 0, rng.integers(0, 4, size=(5, 200)))
  rows_d, rows_p = sig.bootstrap_resamples(6, 5, 30, seed=1)
  _, _, counts = sig.bootstrap_pie_stability(dense, pruned, 4, rows_d, rows_p, return_counts=True)
  expected = [int(pie_stats.find_pies(dense[rd], pruned[rp]).sum()) for rd, rp in zip(rows_d, rows_p)]
  np.testing.assert_array_equal(counts, expected)
  cut = [
      sig.bootstrap_pie_stability(dense[:, part], pruned[:, part], 4, rows_d, rows_p, return_counts=True)[2]
      for part in (slice(0, 77), slice(77, 200))
  ]
  np.testing.assert_array_equal(cut[0] + cut[1], counts)  # counts of blocks add up


# --- Modal labels of many weightings at once (bootstrap, A/A splits, permutations) ------------------------------


def _populations(rng, trials):
  """Small populations from unanimous to uniform, the weightings of resamples, splits and large integer weights."""
  for trial in range(trials):
    n_models, n_examples, num_classes = int(rng.integers(1, 12)), int(rng.integers(1, 1500)), int(rng.integers(2, 9))
    agreement = rng.random()
    preds = np.where(
        rng.random((n_models, n_examples)) < agreement,
        rng.integers(0, num_classes, (1, n_examples)),
        rng.integers(0, num_classes, (n_models, n_examples)),
    )
    top = [1, 2, 5, 10**6][trial % 4]  # 10**6: keys beyond float32's exact integers
    weights = rng.integers(0, top + 1, (int(rng.integers(1, 25)), n_models))
    weights[weights.sum(axis=1) == 0, 0] = 1
    yield preds, num_classes, weights


def test_modal_many_is_modal_for_every_weighting():
  rng = np.random.default_rng(11)
  for preds, num_classes, weights in _populations(rng, 120):
    votes = sig.SortedVotes(preds, num_classes)
    for tie_break in sig.TIE_BREAKS:
      expected = np.stack([votes.modal(w, tie_break) for w in weights])
      np.testing.assert_array_equal(votes.modal_many(weights, tie_break), expected)


def test_modal_disagreements_count_the_pies_of_every_pair():
  rng = np.random.default_rng(12)
  for preds, num_classes, weights in _populations(rng, 60):
    other = np.where(rng.random(preds.shape) < 0.2, rng.integers(0, num_classes, preds.shape), preds)
    votes_a, votes_b = sig.SortedVotes(preds, num_classes), sig.SortedVotes(other, num_classes)
    weights_b = rng.permutation(weights, axis=1)
    per_pair, per_example = sig.modal_disagreements(votes_a, weights, votes_b, weights_b)
    differ = np.stack([votes_a.modal(a) != votes_b.modal(b) for a, b in zip(weights, weights_b)])
    np.testing.assert_array_equal(per_pair, differ.sum(axis=1))
    np.testing.assert_array_equal(per_example, differ.sum(axis=0))
  with pytest.raises(ValueError, match="as many rows"):
    sig.modal_disagreements(votes_a, weights, votes_b, weights[:0])


def test_split_pie_counts_are_those_of_each_split():
  rng = np.random.default_rng(13)
  pool = np.where(rng.random((12, 400)) < 0.6, rng.integers(0, 5, (1, 400)), rng.integers(0, 5, (12, 400)))
  first, second = sig.half_splits(12, 5, 6, 40, seed=3)
  votes = sig.SortedVotes(pool, 5)
  expected = []
  for a, b in zip(first, second):
    wa, wb = np.zeros(12, np.int64), np.zeros(12, np.int64)
    wa[a], wb[b] = 1, 1
    expected.append(np.count_nonzero(votes.modal(wa) != votes.modal(wb)))
  np.testing.assert_array_equal(sig.split_pie_counts(pool, first, second, 5), expected)


def test_bootstrap_pie_stability_reuses_no_other_populations_codes():
  """The resampled codes are reused for the same predictions and resamples only: another population of the same
  shape, or other resamples, get their own."""
  rng = np.random.default_rng(14)
  dense, other = rng.integers(0, 4, (6, 300)), rng.integers(0, 4, (6, 300))
  pruned = np.where(rng.random((5, 300)) < 0.7, dense[:5], rng.integers(0, 4, (5, 300)))
  dense_rows, pruned_rows = sig.bootstrap_resamples(6, 5, 50, seed=1)

  def loop(d, p, d_rows, p_rows):
    votes_d, votes_p = sig.SortedVotes(d, 4), sig.SortedVotes(p, 4)
    differ = np.stack(
        [
            votes_d.modal(np.bincount(a, minlength=len(d))) != votes_p.modal(np.bincount(b, minlength=len(p)))
            for a, b in zip(d_rows, p_rows)
        ]
    )
    return differ.mean(axis=0), differ.sum(axis=1)

  for d, rows in ((dense, dense_rows), (other, dense_rows), (dense, sig.bootstrap_resamples(6, 5, 50, seed=2)[0])):
    stability, _, counts = sig.bootstrap_pie_stability(d, pruned, 4, rows, pruned_rows, return_counts=True)
    expected_stability, expected_counts = loop(d, pruned, rows, pruned_rows)
    np.testing.assert_array_equal(stability, expected_stability)
    np.testing.assert_array_equal(counts, expected_counts)


def test_welch_below_alpha_makes_the_decisions_of_the_exact_p_values():
  """Resamples and A/A splits evaluate the t tail only where |t| reaches the normal quantile: p < alpha and the BH
  rejections at alpha are those of the exact p-values, including t statistics at the threshold itself."""
  rng = np.random.default_rng(15)
  alpha = 0.05
  z = special.ndtri(1 - alpha / 2)
  for n_d, n_p in ((2, 2), (3, 8), (30, 30)):
    dense = rng.normal(size=(40, n_d, 300))
    pruned = rng.normal(size=(40, n_p, 300)) + rng.choice([0.0, 0.3, 1.0, 3.0], size=(40, 1, 300))
    exact = sig._welch(dense, pruned)
    # Shift some columns so that their t sits right at, just under and just over the normal quantile.
    target = z * np.array([1 - 1e-6, 1 - 1e-9, 1.0, 1 + 1e-9])
    scale = np.sqrt(exact.var_dense / n_d + exact.var_pruned / n_p)
    pruned[:, :, :4] += (exact.difference[:, :4] + target * scale[:, :4])[:, None, :]
    exact = sig._welch(dense, pruned)
    quick = sig._welch(dense, pruned, below=alpha)
    np.testing.assert_array_equal(quick.significant(alpha), exact.significant(alpha))
    np.testing.assert_array_equal(quick.tested, exact.tested)
    for p_quick, p_exact in zip(quick.p, exact.p):
      np.testing.assert_array_equal(
          sig.bh_rejections(sig.bh_q_values(p_quick), alpha), sig.bh_rejections(sig.bh_q_values(p_exact), alpha)
      )
    assert np.all(quick.p[~quick.significant(alpha) & quick.tested] >= alpha)


def test_shared_votes_follow_the_predictions_content():
  """Populations sorted once are reused for the same predictions only: an array changed in place, or another one of
  the same shape, is sorted anew."""
  rng = np.random.default_rng(16)
  preds = rng.integers(0, 3, (5, 200))
  first = pie_stats.modal_labels(preds)
  assert sig.shared_votes(preds) is sig.shared_votes(preds.copy())
  preds[:, :50] = 2  # changed in place: every model votes 2 on the first 50 examples
  again = pie_stats.modal_labels(preds)
  np.testing.assert_array_equal(again, sig.SortedVotes(preds).modal())
  assert np.all(again[:50] == 2) and not np.all(first[:50] == 2)
  other = rng.integers(0, 3, (5, 200))
  np.testing.assert_array_equal(pie_stats.modal_labels(other), sig.SortedVotes(other).modal())
