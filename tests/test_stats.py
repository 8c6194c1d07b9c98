"""The paper's statistics against hand-computed small cases and against scipy."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import pie
from pie import significance
from pie import stats


def test_modal_labels_majority_and_ties_toward_smallest_id():
  predictions = np.array([[1, 2, 3, 7], [2, 2, 3, 5], [1, 0, 3, 7], [2, 0, 4, 5]])
  modal, share, tied = pie.modal_labels(predictions, return_details=True)
  # Column 0: 1 and 2 tie (2 votes each) -> 1; column 1: 0 and 2 tie -> 0; column 2: 3 wins 3 of 4;
  # column 3: 5 and 7 tie -> 5.
  np.testing.assert_array_equal(modal, [1, 0, 3, 5])
  np.testing.assert_allclose(share, [0.5, 0.5, 0.75, 0.5])
  np.testing.assert_array_equal(tied, [True, True, False, True])


def test_modal_labels_matches_brute_force_on_random_votes():
  rng = np.random.default_rng(0)
  predictions = rng.integers(0, 6, size=(7, 400))
  modal, share, tied = pie.modal_labels(predictions, return_details=True)
  for j in range(predictions.shape[1]):
    counts = np.bincount(predictions[:, j], minlength=6)
    assert modal[j] == np.argmax(counts)  # argmax picks the smallest id among ties
    assert share[j] == counts.max() / 7
    assert tied[j] == ((counts == counts.max()).sum() > 1)


def test_find_pies_ignores_the_true_label():
  dense = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 1]])
  pruned = np.array([[0, 2, 2], [0, 2, 2], [1, 1, 2]])
  np.testing.assert_array_equal(pie.find_pies(dense, pruned), [False, True, False])


def test_find_pies_rejects_mismatched_populations():
  with pytest.raises(ValueError, match="different numbers of examples"):
    pie.find_pies(np.zeros((2, 3), int), np.zeros((2, 4), int))
  with pytest.raises(ValueError, match="integer class ids"):
    pie.find_pies(np.zeros((2, 3)), np.zeros((2, 3)))


def test_per_class_recall_by_hand_and_nan_for_absent_class():
  labels = np.array([0, 0, 1, 1, 1])
  predictions = np.array([[0, 1, 1, 1, 0], [0, 0, 0, 1, 1]])
  recall = pie.per_class_recall(predictions, labels, num_classes=3)
  np.testing.assert_allclose(recall[:, :2], [[0.5, 2 / 3], [1.0, 2 / 3]])
  assert np.isnan(recall[:, 2]).all()


def test_class_ttest_matches_scipy_on_normalized_recall():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 4, size=200)
  dense = np.where(rng.random((5, 200)) < 0.9, labels, rng.integers(0, 4, size=(5, 200)))
  pruned = np.where(rng.random((6, 200)) < 0.7, labels, rng.integers(0, 4, size=(6, 200)))
  table = pie.class_ttest(dense, pruned, labels, num_classes=4, alpha=0.05)
  paper = pie.class_ttest(dense, pruned, labels, num_classes=4, alpha=0.05, normalization="population")
  assert list(table.columns) == [
      "class_id",
      "class_name",
      "num_examples",
      "dense_recall_mean",
      "pruned_recall_mean",
      "recall_change",
      "normalized_change",
      "t_statistic",
      "p_value",
      "significant",
      "q_value",
      "significant_fdr",
      "ci_low",
      "ci_high",
      "hedges_g",
      "df",
      "note",
  ]
  dense_top1 = (dense == labels).mean(axis=1)  # per model: the default normalization
  pruned_top1 = (pruned == labels).mean(axis=1)
  for c in range(4):
    mask = labels == c
    dense_recall = (dense[:, mask] == c).mean(axis=1)
    pruned_recall = (pruned[:, mask] == c).mean(axis=1)
    expected = scipy.stats.ttest_ind(dense_recall - dense_top1, pruned_recall - pruned_top1, equal_var=False)
    expected_paper = scipy.stats.ttest_ind(
        dense_recall - dense_top1.mean(), pruned_recall - pruned_top1.mean(), equal_var=False
    )
    assert paper.iloc[c].p_value == pytest.approx(expected_paper.pvalue)
    # Both normalizations have the same point estimate; only the standard error differs.
    assert paper.iloc[c].normalized_change == pytest.approx(table.iloc[c].normalized_change)
    row = table.iloc[c]
    assert row.num_examples == mask.sum()
    assert row.t_statistic == pytest.approx(expected.statistic)
    assert row.p_value == pytest.approx(expected.pvalue)
    assert row.significant == (expected.pvalue < 0.05)
    assert row.ci_low < row.normalized_change < row.ci_high
    assert row.recall_change == pytest.approx(pruned_recall.mean() - dense_recall.mean())
    assert row.normalized_change == pytest.approx(
        (pruned_recall.mean() - pruned_top1.mean()) - (dense_recall.mean() - dense_top1.mean())
    )


def test_class_ttest_hand_computed_welch():
  # One class, every example of class 0: recall = top-1, so normalized recall is 0 for every model: no difference
  # at all, never significant (scipy reports p = 1 or NaN for this 0/0 case depending on its version).
  labels = np.zeros(4, int)
  table = pie.class_ttest(
      np.array([[0, 0, 1, 1], [0, 1, 1, 1]]), np.array([[0, 0, 0, 1], [1, 1, 1, 1]]), labels, num_classes=2
  )
  assert (np.isnan(table.p_value[0]) or table.p_value[0] == 1.0) and not table.significant[0]
  # Class 1 has no example: NaN recall, not significant.
  assert table.num_examples[1] == 0 and np.isnan(table.dense_recall_mean[1]) and not table.significant[1]


def test_class_ttest_two_classes_by_hand():
  # Two classes of two examples each. Dense models: recalls (1, .5) and (1, 1); top-1 .75 and 1 -> mean .875.
  # Pruned models: recalls (.5, .5) and (1, 0); top-1 .5 and .5 -> mean .5.
  labels = np.array([0, 0, 1, 1])
  dense = np.array([[0, 0, 1, 0], [0, 0, 1, 1]])
  pruned = np.array([[0, 1, 1, 0], [0, 0, 0, 0]])
  table = pie.class_ttest(dense, pruned, labels, num_classes=2, normalization="population")
  dense_norm = np.array([1, 1]) - 0.875
  pruned_norm = np.array([0.5, 1]) - 0.5
  t = (dense_norm.mean() - pruned_norm.mean()) / np.sqrt(dense_norm.var(ddof=1) / 2 + pruned_norm.var(ddof=1) / 2)
  assert table.t_statistic[0] == pytest.approx(t)  # dense variance 0, pruned variance .125: t = (.125-.25)/.25
  assert table.t_statistic[0] == pytest.approx(-0.5)
  assert table.normalized_change[0] == pytest.approx(0.75 - 1 - (0.5 - 0.875))
  # Per model (the default): dense (1 - .75, 1 - 1), pruned (.5 - .5, 1 - .5).
  per_model = pie.class_ttest(dense, pruned, labels, num_classes=2)
  expected = scipy.stats.ttest_ind([0.25, 0.0], [0.0, 0.5], equal_var=False)
  assert per_model.t_statistic[0] == pytest.approx(expected.statistic)
  assert per_model.normalized_change[0] == pytest.approx(table.normalized_change[0])


def test_class_names_are_used():
  table = pie.class_ttest(
      np.array([[0, 1], [0, 1]]), np.array([[0, 0], [1, 1]]), np.array([0, 1]), 2, class_names=["cat", "dog"]
  )
  assert list(table.class_name) == ["cat", "dog"]
  assert isinstance(table, pd.DataFrame)


def test_vote_counts():
  counts = stats.vote_counts(np.array([[0, 2], [0, 1], [1, 1]]), num_classes=3)
  np.testing.assert_array_equal(counts, [[2, 1, 0], [0, 2, 1]])


def test_class_ttest_fdr_matches_scipy():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 8, size=400)
  dense = np.where(rng.random((6, 400)) < 0.9, labels, rng.integers(0, 8, size=(6, 400)))
  pruned = np.where(rng.random((6, 400)) < 0.6 + 0.04 * labels, labels, rng.integers(0, 8, size=(6, 400)))
  table = pie.class_ttest(dense, pruned, labels, 8)
  np.testing.assert_allclose(table.q_value, scipy.stats.false_discovery_control(table.p_value))
  np.testing.assert_array_equal(table.significant_fdr, table.q_value < 0.05)
  assert table.significant_fdr.sum() <= table.significant.sum()


def test_class_ttest_per_model_normalization():
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 3, size=90)
  dense = np.where(rng.random((4, 90)) < 0.9, labels, 0)
  pruned = np.where(rng.random((5, 90)) < 0.7, labels, 0)
  table = pie.class_ttest(dense, pruned, labels, 3, normalization="per_model")
  c = 2
  mask = labels == c
  d = (dense[:, mask] == c).mean(1) - (dense == labels).mean(1)
  p = (pruned[:, mask] == c).mean(1) - (pruned == labels).mean(1)
  assert table.p_value[c] == pytest.approx(scipy.stats.ttest_ind(d, p, equal_var=False).pvalue)


def test_modal_labels_tie_break_largest():
  predictions = np.array([[0, 3, 2, 1], [1, 3, 2, 1], [2, 1, 0, 0], [2, 1, 0, 0]])
  np.testing.assert_array_equal(stats.modal_labels(predictions), [2, 1, 0, 0])
  np.testing.assert_array_equal(stats.modal_labels(predictions, tie_break="largest"), [2, 3, 2, 1])
  modal, share, tied = stats.modal_labels(predictions, return_details=True, tie_break="largest")
  np.testing.assert_array_equal(tied, [False, True, True, True])
  np.testing.assert_allclose(share, [0.5, 0.5, 0.5, 0.5])
  rng = np.random.default_rng(0)
  votes = rng.integers(0, 4, size=(6, 500))
  counts = np.stack([np.bincount(column, minlength=4) for column in votes.T])  # independent of the kernel
  np.testing.assert_array_equal(stats.vote_counts(votes, 4), counts)
  brute = 3 - np.argmax(counts[:, ::-1], axis=1)  # last maximum
  np.testing.assert_array_equal(stats.modal_labels(votes, tie_break="largest"), brute)
  with pytest.raises(ValueError, match="tie_break"):
    stats.modal_labels(votes, tie_break="random")


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 3)), "predictions must hold integer class ids"),
        (np.zeros(3, int), r"predictions must be a 2-D array \[n_models, n_examples\]"),
        (np.zeros((2, 0), int), "predictions is empty"),
        (np.full((2, 3), -1), r"predictions holds class ids outside \[0, "),
    ],
)
def test_one_message_per_problem_in_both_apis(bad, message):
  # pie.stats checks its arguments with pie.significance's checks: the same problem, the same message.
  labels = np.zeros(3, int)
  calls = [
      lambda: stats.modal_labels(bad),
      lambda: stats.top1_accuracy(bad, labels),
      lambda: stats.per_class_recall(bad, labels, 4),
      lambda: significance.class_hits(bad, labels, 4),
      lambda: significance.modal_votes(bad, 4),
  ]
  for call in calls:
    with pytest.raises(ValueError, match=message):
      call()


def test_label_problems_have_one_message():
  predictions = np.zeros((2, 3), int)
  for call in (
      lambda: stats.top1_accuracy(predictions, np.zeros(4, int)),
      lambda: stats.class_ttest(predictions, predictions, np.zeros(4, int), 2),
      lambda: significance.normalized_recall(predictions, np.zeros(4, int), 2),
  ):
    with pytest.raises(ValueError, match="labels has 4 examples but the predictions have 3"):
      call()
  with pytest.raises(ValueError, match=r"labels holds class ids outside \[0, 1\]"):
    stats.per_class_recall(predictions, np.full(3, 2), 2)
  with pytest.raises(ValueError, match="cover different numbers of examples"):
    stats.class_ttest(predictions, np.zeros((2, 4), int), np.zeros(3, int), 2)
