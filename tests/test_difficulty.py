"""Difficulty, risk and frequency statistics against hand computations and scikit-learn / scipy."""

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn import metrics

import pie  # noqa: F401  (sets the TensorFlow environment before anything else)
from pie import difficulty


def test_true_label_prob_from_top_k():
  classes = np.array([[2, 0, 1], [1, 2, 0], [0, 1, 2]])
  probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.6, 0.3, 0.1]])
  np.testing.assert_allclose(difficulty.true_label_prob(classes, probs, np.array([0, 0, 2])), [0.2, 0.2, 0.1])
  np.testing.assert_allclose(
      difficulty.true_label_prob(classes[:, :1], probs[:, :1], np.array([2, 0, 1])), [0.7, 0.0, 0.0]
  )  # not in the exported top-1: 0


def test_el2n_by_hand():
  logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
  # softmax: (.5, .5) and (.75, .25); minus onehot(0): (-.5, .5) and (-.25, .25).
  np.testing.assert_allclose(difficulty.el2n(logits, np.array([0, 0])), [np.sqrt(0.5), np.sqrt(0.125)])


def test_example_scores():
  preds = np.array([[0, 1, 2], [0, 1, 1], [0, 2, 1], [1, 2, 1]])
  true_probs = np.tile([0.9, 0.5, 0.1], (4, 1))
  scores = difficulty.example_scores(preds, true_probs)
  np.testing.assert_allclose(scores["dense_disagreement"], [0.25, 0.5, 0.25])
  np.testing.assert_allclose(scores["dense_true_prob"], [0.9, 0.5, 0.1])
  assert scores["dense_el2n"].isna().all() and set(difficulty.risk(scores)) == {"dense_true_prob", "dense_disagreement"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_equals_scikit_learn_with_ties(seed):
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, 5, 300).astype(float)  # many ties
  positives = rng.random(300) < 0.2 + 0.1 * scores
  assert difficulty.auroc(scores, positives) == pytest.approx(metrics.roc_auc_score(positives, scores))
  assert np.isnan(difficulty.auroc(scores, np.zeros(300, bool)))


def test_precision_at_k():
  scores = np.array([0.9, 0.1, 0.9, 0.5, 0.2])
  positives = np.array([False, True, True, True, False])
  assert difficulty.precision_at_k(scores, positives, 2) == 0.5  # examples 0 and 2 (tie by index)
  assert difficulty.precision_at_k(scores, positives, 3) == pytest.approx(2 / 3)
  assert np.isnan(difficulty.precision_at_k(scores, positives, 0))


def test_deciles_are_equal_sized_hardest_first():
  rng = np.random.default_rng(0)
  values = rng.integers(0, 3, 1003) / 2  # heavy ties
  bins = difficulty.deciles(values)
  counts = np.bincount(bins)[1:]
  assert counts.max() - counts.min() <= 1 and counts.sum() == 1003
  for d in range(1, 10):  # every value of a harder decile is at most every value of the next
    assert values[bins == d].max() <= values[bins == d + 1].min()


def test_difficulty_rows():
  true_prob = np.array([0.1, 0.2, 0.8, 0.9])
  bins = difficulty.deciles(true_prob, num_bins=2)
  pies = np.array([True, False, False, False])
  dense = np.array([[False, True, True, True], [False, False, True, True]])
  pruned = np.array([[False, False, True, True], [True, False, True, False]])
  rows = difficulty.difficulty_rows(0.9, true_prob, bins, pies, dense.sum(axis=0), 2, pruned.sum(axis=0), 2)
  assert list(rows.columns) == list(difficulty.DIFFICULTY_COLUMNS)
  assert rows["pie_rate"].tolist() == [0.5, 0.0]
  assert rows["dense_top1_mean"].tolist() == [0.25, 1.0] and rows["pruned_top1_mean"].tolist() == [0.25, 0.75]
  assert rows["dense_true_prob_low"].tolist() == [0.1, 0.8]


def test_spearman():
  x = np.array([1.0, 2.0, 3.0, np.nan, 5.0])
  y = np.array([2.0, 1.0, 4.0, 0.0, 5.0])
  out = difficulty.spearman(x, y)
  expected = scipy_stats.spearmanr([1, 2, 3, 5], [2, 1, 4, 5])
  assert out["rho"] == pytest.approx(expected.statistic) and out["num_classes"] == 4
  assert difficulty.spearman([1, 1, 1], [1, 2, 3])["rho"] is None
