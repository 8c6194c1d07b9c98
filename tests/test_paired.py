"""The paired design's statistics: the paired t-test against scipy, its degenerate cases, its calibration on A/A data
(simulated pairs that share what a model and its dense twin share, and real dense models), and the single-pair view
(exact McNemar per class)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import pie  # noqa: F401  (sets the TensorFlow environment before anything else)
from pie import significance as sig
from pie import stats as pie_stats
from tests.test_calibration_real import FIXTURE

NUM_CLASSES = 10


def test_paired_test_equals_scipy_ttest_1samp_on_regular_columns():
  rng = np.random.default_rng(0)
  dense = rng.normal(size=(3, 7, 6))  # leading axis: three independent sets of tests
  pruned = dense + rng.normal(0.05, 0.2, size=dense.shape)
  result = sig.paired_test(dense, pruned)
  expected = scipy_stats.ttest_1samp(dense - pruned, 0.0, axis=-2)
  assert (result.case == sig.CASE_REGULAR).all() and result.n_pairs == 7
  np.testing.assert_allclose(result.t, expected.statistic, rtol=1e-12)
  np.testing.assert_allclose(result.p, expected.pvalue, rtol=1e-12)
  np.testing.assert_allclose(result.df, 6.0)
  np.testing.assert_allclose(result.mean_difference, (pruned - dense).mean(axis=-2), rtol=1e-12)
  low, high = sig.paired_confidence_interval(result, 0.9)
  interval = scipy_stats.ttest_1samp(pruned - dense, 0.0, axis=-2).confidence_interval(0.9)
  np.testing.assert_allclose(low, interval.low, rtol=1e-12)
  np.testing.assert_allclose(high, interval.high, rtol=1e-12)
  # The interval at 1 - alpha excludes 0 exactly when p < alpha, and t > 0 means the pruned member is lower.
  low, high = sig.paired_confidence_interval(result, 0.95)
  np.testing.assert_array_equal((low > 0) | (high < 0), result.p < 0.05)
  assert ((result.t > 0) == (result.mean_difference < 0)).all()


def test_paired_test_degenerate_cases_have_defined_results():
  dense = np.zeros((4, 6))
  pruned = np.zeros((4, 6))
  pruned[:, 1] = -0.1  # every pair loses the same 0.1: t infinite, exact sign-flip p = 2 / 2^4
  pruned[:, 2] = [0.1, -0.1, 0.2, 0.0]  # regular
  dense[:, 3] = pruned[:, 3] = np.nan  # an absent class
  unchanged = np.array([False, False, False, False, True, False])
  result = sig.paired_test(dense, pruned, unchanged=unchanged)
  assert list(result.case) == [
      sig.CASE_CONSTANT_EQUAL,
      sig.CASE_CONSTANT_SEPARATED,
      sig.CASE_REGULAR,
      sig.CASE_ABSENT,
      sig.CASE_UNCHANGED,
      sig.CASE_CONSTANT_EQUAL,
  ]
  assert result.t[0] == 0 and result.p[0] == 1
  assert result.t[1] == np.inf and result.p[1] == pytest.approx(0.125)
  assert np.isnan(result.p[3]) and np.isnan(result.p[4]) and not result.tested[3] and not result.tested[4]
  low, high = sig.paired_confidence_interval(result)
  assert np.isnan(low[[0, 1, 3, 4, 5]]).all() and np.isfinite(low[2]) and np.isfinite(high[2])
  assert result.note[1] == sig.NOTE_PAIRED_CONSTANT and result.note[2] == ""
  # Under the population normalization the constant non-zero case is not testable (a population constant was
  # subtracted, so sign flips are not a null distribution); one pair has no variance at all.
  assert np.isnan(sig.paired_test(dense, pruned, exchangeable=False).p[1])
  single = sig.paired_test(dense[:1], pruned[:1])
  assert list(single.case) == [sig.CASE_SINGLE_MODEL] * 3 + [sig.CASE_ABSENT] + [sig.CASE_SINGLE_MODEL] * 2
  assert np.isnan(single.p).all() and single.note[0] == sig.NOTE_FEW_PAIRS
  with pytest.raises(ValueError, match="one dense row per pruned row"):
    sig.paired_test(dense, pruned[:3])


def test_paired_class_tests_columns_bh_and_no_pairs():
  rng = np.random.default_rng(1)
  dense = rng.normal(size=(8, 5))
  pruned = dense + rng.normal(0, 0.1, size=(8, 5))
  pruned[:, 2] -= 0.5  # a planted effect
  table = sig.paired_class_tests(dense, pruned, alpha=0.05)
  assert tuple(table.columns) == sig.PAIRED_COLUMNS
  np.testing.assert_allclose(table["paired_q_value"], scipy_stats.false_discovery_control(table["paired_p_value"]))
  assert table.loc[2, "paired_significant_fdr"] and (table["num_pairs"] == 8).all()
  assert table.loc[2, "paired_t_statistic"] > 0 and table.loc[2, "paired_change"] < 0
  empty = sig.paired_class_tests(np.zeros((0, 5)), np.zeros((0, 5)))
  assert (empty["num_pairs"] == 0).all() and (empty["paired_note"] == sig.NOTE_NO_PAIRS).all()
  assert not empty["paired_significant_fdr"].any() and empty["paired_p_value"].isna().all()


def test_paired_class_ttest_from_hits_pairs_rows_and_normalizes_per_model():
  rng = np.random.default_rng(2)
  labels = np.arange(200) % 4
  dense = np.where(rng.random((5, 200)) < 0.2, rng.integers(0, 4, (5, 200)), labels)
  pruned = np.where(rng.random((3, 200)) < 0.3, rng.integers(0, 4, (3, 200)), labels)
  counts = np.bincount(labels, minlength=4)
  dense_rows, pruned_rows = np.array([4, 0, 2]), np.array([0, 1, 2])
  table = pie_stats.paired_class_ttest_from_hits(
      sig.class_hits(dense, labels, 4), sig.class_hits(pruned, labels, 4), counts, dense_rows, pruned_rows
  )
  dense_norm = sig.normalized_recall(dense, labels, 4)[dense_rows]
  pruned_norm = sig.normalized_recall(pruned, labels, 4)[pruned_rows]
  expected = scipy_stats.ttest_1samp(dense_norm - pruned_norm, 0.0, axis=0)
  np.testing.assert_allclose(table["paired_t_statistic"], expected.statistic, rtol=1e-10)
  np.testing.assert_allclose(table["paired_p_value"], expected.pvalue, rtol=1e-10)


def _paired_populations(rng, n_pairs, num_classes=NUM_CLASSES, per_class=50, effect=None, shared_sd=1.0):
  """An A/A study of pairs: each pair shares a skill and a per-example latent (what a fine-tuned model shares with
  its dense twin); given them, the two members draw their answers independently, so the two members of a pair are
  exchangeable and every class's paired difference is symmetric about 0. `effect` [num_classes] moves the pruned
  members' probability of being right per class (a planted effect); `shared_sd` sets how much a pair shares."""
  labels = np.repeat(np.arange(num_classes), per_class)
  logit = (
      rng.normal(1.5, 1.0, size=labels.size)[None, :]
      + rng.normal(0.0, 0.3, size=(n_pairs, 1))
      + rng.normal(0.0, shared_sd, size=(n_pairs, labels.size))
  )
  right = 1.0 / (1.0 + np.exp(-logit))
  right_pruned = right if effect is None else np.clip(right + np.asarray(effect)[labels][None, :], 0.0, 1.0)
  wrong = (labels[None, :] + 1) % num_classes
  dense = np.where(rng.random(right.shape) < right, labels[None, :], wrong)
  pruned = np.where(rng.random(right.shape) < right_pruned, labels[None, :], wrong)
  return dense, pruned, labels


def _paired_tables(dense, pruned, labels):
  counts = np.bincount(labels, minlength=NUM_CLASSES)
  dense_hits, pruned_hits = sig.class_hits(dense, labels, NUM_CLASSES), sig.class_hits(pruned, labels, NUM_CLASSES)
  rows = np.arange(len(dense))
  paired = pie_stats.paired_class_ttest_from_hits(dense_hits, pruned_hits, counts, rows, rows)
  welch = pie_stats.class_ttest_from_hits(dense_hits, pruned_hits, counts)
  return paired, welch


def _binomial_interval(rate, trials, z=3.29):
  half = z * np.sqrt(rate * (1 - rate) / trials)
  return rate - half, rate + half


@pytest.mark.parametrize("n_pairs", [5, 10])
def test_paired_test_is_calibrated_on_simulated_aa_pairs(n_pairs):
  rng = np.random.default_rng(n_pairs)
  studies = 300
  tested = flagged = with_discovery = normal_flagged = welch_flagged = welch_tested = 0
  for _ in range(studies):
    paired, welch = _paired_tables(*_paired_populations(rng, n_pairs))
    tested += paired["paired_p_value"].notna().sum()
    flagged += paired["paired_significant"].sum()
    with_discovery += paired["paired_significant_fdr"].any()
    # A mutation: the normal distribution instead of t with n - 1 degrees of freedom.
    normal_p = 2 * scipy_stats.norm.sf(np.abs(paired["paired_t_statistic"].dropna()))
    normal_flagged += (normal_p < 0.05).sum()
    welch_tested += welch["p_value"].notna().sum()
    welch_flagged += welch["significant"].sum()
  # Measured: 5.5% (5 pairs) and 5.8% (10 pairs) of 3,000 class tests at p < 0.05; 6.7% and 7.3% of the 300 studies
  # with an FDR discovery.
  low, high = _binomial_interval(0.05, tested)
  assert low <= flagged / tested <= high, flagged / tested
  assert with_discovery / studies <= _binomial_interval(0.05, studies)[1], with_discovery / studies
  # The normal approximation flags too often with few pairs (12.9% at 5 pairs, 8.7% at 10): the check sees it.
  assert normal_flagged / tested > high
  # Welch's test ignores what a pair shares: valid, but conservative here (3.9% and 3.3%).
  assert welch_flagged / welch_tested < flagged / tested


def test_paired_test_finds_a_planted_effect_more_often_than_welch():
  rng = np.random.default_rng(7)
  effect = np.zeros(NUM_CLASSES)
  effect[[2, 5]] = -0.08
  paired_found = welch_found = 0
  studies = 60
  for _ in range(studies):
    paired, welch = _paired_tables(*_paired_populations(rng, 10, effect=effect, shared_sd=3.0))
    paired_found += paired.loc[[2, 5], "paired_significant_fdr"].sum()
    welch_found += welch.loc[[2, 5], "significant_fdr"].sum()
  assert paired_found > 1.2 * welch_found, (paired_found, welch_found)


def test_paired_test_is_calibrated_on_real_dense_models():
  """Real A/A pairs: 40 dense digits models, each split into two groups paired at random. The pairs share nothing
  (independent seeds), so this checks the test's level on real recall distributions, not the gain from pairing."""
  data = np.load(FIXTURE)
  top1, labels = data["top1"].astype(np.int64), data["labels"].astype(np.int64)
  hits = sig.class_hits(top1, labels, NUM_CLASSES)
  counts = np.bincount(labels, minlength=NUM_CLASSES)
  rng = np.random.default_rng(0)
  splits = 500
  tested = flagged = with_discovery = 0
  for _ in range(splits):
    order = rng.permutation(40)
    table = pie_stats.paired_class_ttest_from_hits(hits, hits, counts, order[:10], order[10:20])
    tested += table["paired_p_value"].notna().sum()
    flagged += table["paired_significant"].sum()
    with_discovery += table["paired_significant_fdr"].any()
  # Measured: 4.6% of 4,974 class tests at p < 0.05, 2.8% of the 500 splits with an FDR discovery. The splits reuse
  # the same 40 models, so the binomial interval is narrower than the truth.
  assert abs(flagged / tested - 0.05) < 0.01, flagged / tested
  assert with_discovery / splits <= 0.05


def test_pair_discordance_and_mcnemar_by_hand():
  labels = np.array([0, 0, 0, 1, 1, 1])
  dense = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]])
  pruned = np.array([[1, 0, 0, 1, 0, 0], [0, 1, 1, 1, 1, 1]])
  counts = sig.pair_discordance(dense, pruned, labels, 2)
  # Pair 0, class 0: lost example 0, gained example 2; class 1: lost example 4. Pair 1: identical models.
  np.testing.assert_array_equal(counts[0], [[1, 1], [1, 0]])
  np.testing.assert_array_equal(counts[1], [[0, 0], [0, 0]])
  rng = np.random.default_rng(3)
  lost, gained = rng.integers(0, 30, 200), rng.integers(0, 30, 200)
  expected = [scipy_stats.binomtest(int(b), int(b + c), 0.5).pvalue if b + c else np.nan for b, c in zip(lost, gained)]
  np.testing.assert_allclose(sig.mcnemar_exact(lost, gained), expected, rtol=1e-12)
  # Blocks of examples add up.
  np.testing.assert_array_equal(
      sig.pair_discordance(dense[:, :4], pruned[:, :4], labels[:4], 2)
      + sig.pair_discordance(dense[:, 4:], pruned[:, 4:], labels[4:], 2),
      counts,
  )


def test_single_pair_tests_flag_classes_at_fdr():
  # Two pairs, three classes of 100 examples: pair 0 loses 30 examples of class 1 and gains none (flagged, hurt),
  # class 0 is even; pair 1 changes nothing.
  discordance = np.zeros((2, 3, 2), np.int64)
  discordance[0, 0] = [5, 5]
  discordance[0, 1] = [30, 0]
  table = sig.single_pair_tests(discordance, np.array([100, 100, 100]), alpha=0.05)
  assert list(table.columns) == list(sig.SINGLE_PAIR_COLUMNS)
  assert table.loc[0, "classes_flagged_fdr"] == 1 and table.loc[0, "classes_hurt_fdr"] == 1
  assert table.loc[0, "largest_class_drop"] == pytest.approx(0.3) and table.loc[0, "largest_class_drop_class"] == 1
  assert table.loc[0, "largest_normalized_drop"] == pytest.approx(0.3 - 0.1)  # beyond the pair's top-1 drop
  assert table.loc[1, "classes_flagged_fdr"] == 0 and table.loc[1, "largest_class_drop"] == 0
  with pytest.raises(ValueError, match="discordance must be"):
    sig.single_pair_tests(discordance[:, :2], np.array([100, 100, 100]))


def test_pairs_needed_uses_the_variance_of_the_differences():
  rng = np.random.default_rng(4)
  shared = rng.normal(0, 0.05, size=(12, 4))
  dense = shared + rng.normal(0, 0.01, size=(12, 4))
  pruned = shared + rng.normal(0, 0.01, size=(12, 4))
  paired = sig.pairs_needed(dense, pruned, effect=0.02)
  unpaired = sig.models_needed(dense, pruned, effect=0.02)
  # The pairs share most of their variance: far fewer pairs than independent models are needed.
  assert paired.summary["median"] * 5 < unpaired.summary["median"]
  var = (dense - pruned).var(axis=0, ddof=1)
  np.testing.assert_allclose(paired.per_class["difference_var"], var)
  n = paired.per_class["models_needed"].to_numpy()
  assert (sig.paired_power(var, n, 0.02) >= 0.8).all() and (
      sig.paired_power(var, np.maximum(n - 1, 2), 0.02) < 0.8
  ).all()
  assert isinstance(paired.per_class, pd.DataFrame)


def test_pairs_of_a_population_by_twin_and_by_seed():
  from pie import builder  # pylint: disable=g-import-not-at-top
  from pie import study as study_lib  # pylint: disable=g-import-not-at-top

  def record(name, seed, twin=None):
    return study_lib.ModelRecord(name, name, 0.0, 0.0, seed, None, dense_twin=twin)

  dense = [record(f"sparsity0_seed{s}", s) for s in (0, 1, 2)]
  pruned = [record(f"sparsity90_seed{s}", s, f"sparsity0_seed{s}") for s in (2, 3, 1)]
  twins = builder.level_pairs("paired", dense, pruned)
  assert twins.twins and twins.dense_rows.tolist() == [2, 1] and twins.rows.tolist() == [0, 2]
  assert twins.names == [("sparsity0_seed2", "sparsity90_seed2"), ("sparsity0_seed1", "sparsity90_seed1")]
  scratch = [record(f"sparsity90_seed{s}", s) for s in (2, 3, 1)]
  assert len(builder.level_pairs("paired", dense, scratch).rows) == 0  # no twin recorded: no paired test
  by_seed = builder.level_pairs("independent", dense, scratch)
  assert not by_seed.twins and by_seed.dense_rows.tolist() == [2, 1] and by_seed.rows.tolist() == [0, 2]
