"""Where the harm of compression comes from: example difficulty, class difficulty and frequency, and risk prediction.

Everything here is measured from the dense population alone, before compressing, so a user can ask which examples
and classes are at risk (Iofinova et al., CVPR 2023; Tran et al., NeurIPS 2022; the seed paper found PIEs atypical and
hard). Per example, from the dense models' exports:

  dense_true_prob     mean over dense models of the probability of the true label (0 when it is not in a model's
                      exported top-k): low = hard
  dense_disagreement  1 - the share of dense models voting for the dense modal label: high = contested
  dense_el2n          mean over dense models of ||softmax(logits) - onehot(label)||_2 (EL2N, Paul et al. 2021); only
                      when the exports carry logits (config.export_logits)

Risk scores are oriented so that higher means more at risk: 1 - dense_true_prob, dense_disagreement, dense_el2n.
`auroc` says how well a score ranks the PIEs of a level above the other examples (0.5: no better than chance),
`precision_at_k` how many of the k highest-risk examples are PIEs when k is the number of PIEs.

All functions are numpy/scipy on arrays; nothing here imports TensorFlow.
"""

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from pie import stats

SCORES = ("dense_true_prob", "dense_disagreement", "dense_el2n")
DECILES = 10
DIFFICULTY_COLUMNS = (
    "sparsity",
    "decile",
    "num_examples",
    "dense_true_prob_low",
    "dense_true_prob_high",
    "pie_rate",
    "dense_top1_mean",
    "pruned_top1_mean",
)


def true_label_prob(top_k_classes, top_k_probs, labels):
  """One model's probability of the true label per example, from its exported top-k (0 when not among them)."""
  hit = np.asarray(top_k_classes) == np.asarray(labels)[:, None]
  return np.where(hit, np.asarray(top_k_probs, np.float64), 0.0).sum(axis=1)


def el2n(logits, labels):
  """EL2N error norm per example: ||softmax(logits) - onehot(label)||_2 for one model."""
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  probs[np.arange(len(labels)), np.asarray(labels)] -= 1.0
  return np.sqrt((probs**2).sum(axis=1))


def example_scores(dense_predictions, dense_true_probs, dense_el2n=None):
  """The per-example difficulty scores of the dense population (see the module docstring), a DataFrame.

  dense_predictions: int [n_dense, n_examples] top-1; dense_true_probs: float [n_dense, n_examples];
  dense_el2n: float [n_dense, n_examples] or None (then the column is NaN).
  """
  _, share, _ = stats.modal_labels(dense_predictions, return_details=True)
  n = np.shape(dense_predictions)[1]
  return pd.DataFrame(
      {
          "dense_true_prob": np.asarray(dense_true_probs, np.float64).mean(axis=0),
          "dense_disagreement": 1.0 - share,
          "dense_el2n": (np.full(n, np.nan) if dense_el2n is None else np.asarray(dense_el2n, np.float64).mean(axis=0)),
      }
  )


def risk(scores):
  """{score name: values where higher = more at risk} for the available scores of `example_scores`."""
  out = {
      "dense_true_prob": 1.0 - scores["dense_true_prob"].to_numpy(),
      "dense_disagreement": scores["dense_disagreement"].to_numpy(),
  }
  if scores["dense_el2n"].notna().all():
    out["dense_el2n"] = scores["dense_el2n"].to_numpy()
  return out


def auroc(scores, positives):
  """Area under the ROC curve of `scores` for the boolean `positives` (Mann-Whitney U / (n_pos n_neg), ties
  counting one half); NaN when either class is empty."""
  scores = np.asarray(scores, np.float64)
  positives = np.asarray(positives, bool)
  n_pos, n_neg = int(positives.sum()), int((~positives).sum())
  if not n_pos or not n_neg:
    return float("nan")
  ranks = scipy_stats.rankdata(scores)  # average ranks for ties
  return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_k(scores, positives, k):
  """Share of positives among the k highest scores (ties broken toward the smaller example index); NaN when k = 0."""
  if k <= 0:
    return float("nan")
  order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, np.float64)))
  return float(np.asarray(positives, bool)[order[:k]].mean())


def risk_metrics(scores, pies):
  """Per risk score: {"auroc", "precision_at_pies"} for one level's PIE mask."""
  k = int(np.sum(pies))
  return {
      name: {"auroc": auroc(values, pies), "precision_at_pies": precision_at_k(values, pies, k)}
      for name, values in risk(scores).items()
  }


def deciles(dense_true_prob, num_bins=DECILES):
  """Difficulty decile of every example, 1 (hardest: lowest dense_true_prob) to num_bins, equal-sized bins of the
  examples ranked by score and then by index (so ties never make bins uneven)."""
  values = np.asarray(dense_true_prob, np.float64)
  order = np.lexsort((np.arange(len(values)), values))
  bins = np.empty(len(values), np.int64)
  for i, chunk in enumerate(np.array_split(order, num_bins)):
    bins[chunk] = i + 1
  return bins


def difficulty_rows(sparsity, dense_true_prob, bins, pies, dense_correct, num_dense, pruned_correct, num_pruned):
  """Rows of difficulty.csv for one level: per decile its size, score range, PIE rate and both populations' top-1.

  dense_correct / pruned_correct: per example, how many models of the population are right (int [n_examples]): sums
  over examples, so blocks of examples can be counted apart.
  """
  dense_true_prob = np.asarray(dense_true_prob, np.float64)
  rows = []
  for decile in range(1, int(bins.max(initial=0)) + 1):
    mask = bins == decile
    if not mask.any():
      continue
    size = int(mask.sum())
    rows.append(
        {
            "sparsity": sparsity,
            "decile": decile,
            "num_examples": size,
            "dense_true_prob_low": float(dense_true_prob[mask].min()),
            "dense_true_prob_high": float(dense_true_prob[mask].max()),
            "pie_rate": float(np.mean(pies[mask])),
            "dense_top1_mean": float(np.sum(dense_correct[mask]) / (num_dense * size)),
            "pruned_top1_mean": float(np.sum(pruned_correct[mask]) / (num_pruned * size)),
        }
    )
  return pd.DataFrame(rows, columns=list(DIFFICULTY_COLUMNS))


def spearman(x, y):
  """{"rho", "p_value", "num_classes"} of the Spearman rank correlation over the entries where both are finite
  (None values when fewer than 3)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  keep = np.isfinite(x) & np.isfinite(y)
  if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
    return {"rho": None, "p_value": None, "num_classes": int(keep.sum())}
  result = scipy_stats.spearmanr(x[keep], y[keep])
  return {"rho": float(result.statistic), "p_value": float(result.pvalue), "num_classes": int(keep.sum())}
