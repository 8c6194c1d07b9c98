"""The paper's statistics on plain arrays: modal labels, PIEs, per-class recall and the class-level Welch t-test.

Conventions shared by every function here:
  * a population's predictions are top-1 labels, int array [n_models, n_examples];
  * labels are int [n_examples]; recalls and accuracies are fractions in [0, 1].

Modal label rule: the label most models predict; ties go to the SMALLEST class id. The paper's authors broke ties
toward the largest id (pandas `mode().max()`); either choice is arbitrary, so `modal_labels` can also return which
examples were tied, and the analysis reports how many there were.

This is the paper-level API. Every statistic is computed by the one kernel in `pie.significance` (modal labels by
`significance.SortedVotes`, the class test by `significance.welch_test` and `bh_q_values`), and the arguments are
checked by its checks, so a function here and its kernel give the same results and the same error messages.
"""

# pylint: disable=protected-access  (the argument checks are significance's _check_* functions, shared on purpose:
# one message per problem whichever API is called)
import numpy as np
import pandas as pd

from pie import significance

TIE_RULE = significance.TIE_RULE
TIE_BREAKS = significance.TIE_BREAKS


def vote_counts(predictions, num_classes=None):
  """Votes per (example, class): int32 [n_examples, num_classes] (num_classes defaults to the largest label + 1).

  A dense table, O(n_examples x num_classes) in memory (50 M cells for ImageNet): for display and checks. Modal
  labels never need it (`modal_labels`).
  """
  votes = significance.SortedVotes(predictions, num_classes)
  totals = votes.run_totals()
  model_pos, example = np.nonzero(totals)  # run ends: one per (example, label voted for)
  counts = np.zeros((votes.shape[1], votes.num_classes), np.int32)
  counts[example, votes.sorted_labels[model_pos, example]] = totals[model_pos, example]
  return counts


def modal_labels(predictions, return_details=False, tie_break="smallest"):
  """Most frequent label per example over a population's models.

  Args:
    predictions: int [n_models, n_examples], each model's top-1 label.
    return_details: also return the modal share and the tie mask.
    tie_break: "smallest" (pie's rule) or "largest" (the authors' code): which of the tied labels is modal.

  Returns:
    int64 [n_examples] modal labels; with `return_details`, a tuple (modal, share, tied): share = fraction of
    models voting for the modal label, tied = another label had as many votes.
  """
  significance._check_tie_break(tie_break)
  votes = significance.shared_votes(predictions)
  if not return_details:
    return votes.modal(tie_break=tie_break)
  result = votes.votes(tie_break=tie_break)
  return result.labels, result.share, result.tied


def find_pies(dense_predictions, pruned_predictions):
  """PIE mask: examples whose modal label differs between the pruned and the dense population.

  Args:
    dense_predictions: int [n_dense_models, n_examples].
    pruned_predictions: int [n_pruned_models, n_examples].

  Returns:
    bool [n_examples]. The true label plays no part in the rule.
  """
  dense_predictions = significance._check_predictions(dense_predictions, "dense_predictions")
  pruned_predictions = significance._check_predictions(pruned_predictions, "pruned_predictions")
  significance._check_same_examples(dense_predictions, pruned_predictions, "dense_predictions", "pruned_predictions")
  return modal_labels(dense_predictions) != modal_labels(pruned_predictions)


def top1_accuracy(predictions, labels):
  """Per-model top-1 accuracy: float [n_models]."""
  predictions = significance._check_predictions(predictions)
  labels = significance._check_labels(labels, predictions.shape[1])
  return (predictions == labels).mean(axis=1)


def per_class_recall(predictions, labels, num_classes):
  """Per-model per-class recall: float [n_models, num_classes]; NaN for a class with no example."""
  num_classes = significance._check_num_classes(num_classes)
  predictions = significance._check_predictions(predictions, "predictions", num_classes)
  labels = significance._check_labels(labels, predictions.shape[1], num_classes)
  support = np.bincount(labels, minlength=num_classes)
  correct = predictions == labels
  hits = np.zeros((predictions.shape[0], num_classes))
  for m in range(predictions.shape[0]):  # a loop over models only: each bincount is vectorized over examples
    hits[m] = np.bincount(labels, weights=correct[m], minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(support > 0, hits / support, np.nan)


def class_ttest(
    dense_predictions, pruned_predictions, labels, num_classes, alpha=0.05, class_names=None, normalization="per_model"
):
  """The paper's class-level test: Welch t-test of normalized recall, dense vs pruned, per class.

  Each model's recall on a class is normalized by subtracting the model's own top-1 accuracy (default;
  normalization="population" is the paper's rule, which subtracts the population's mean top-1 and ignores that
  mean's variance), so the null hypothesis is "this class moves by as much as overall top-1". Per class, a
  two-sided Welch test (`pie.significance.welch_test`) equal to `scipy.stats.ttest_ind(dense, pruned,
  equal_var=False)`; a positive t means the class does relatively worse in the pruned population. `significant` is
  the paper's uncorrected rule (p < alpha); `significant_fdr` controls the false discovery rate over the classes
  (Benjamini-Hochberg). Degenerate classes (absent from the eval split, zero
  variance in both populations, a population of one model) get the documented results of
  `pie.significance.class_tests`, named in `note`, and are never significant from a 0/0; a class whose recall is
  the same in every model of both populations is not tested.

  Returns:
    DataFrame, one row per class: class_id, class_name, num_examples, dense_recall_mean, pruned_recall_mean,
    recall_change (pruned - dense), normalized_change (recall_change minus the change in mean top-1), t_statistic,
    p_value, significant, q_value, significant_fdr, ci_low, ci_high (95% Welch interval of normalized_change),
    hedges_g, df, note. The interval's level is 1 - alpha; significant_fdr is q <= alpha.
  """
  num_classes = significance._check_num_classes(num_classes)
  dense_predictions = significance._check_predictions(dense_predictions, "dense_predictions", num_classes)
  pruned_predictions = significance._check_predictions(pruned_predictions, "pruned_predictions", num_classes)
  labels = significance._check_labels(labels, dense_predictions.shape[1], num_classes)
  significance._check_same_examples(dense_predictions, pruned_predictions, "dense_predictions", "pruned_predictions")
  return class_ttest_from_hits(
      significance.class_hits(dense_predictions, labels, num_classes),
      significance.class_hits(pruned_predictions, labels, num_classes),
      np.bincount(labels, minlength=num_classes),
      alpha=alpha,
      class_names=class_names,
      normalization=normalization,
  )


def class_ttest_from_hits(
    dense_hits, pruned_hits, class_count, alpha=0.05, class_names=None, normalization="per_model"
):
  """`class_ttest` from its sufficient statistics: correct predictions per model and class of both populations
  (`pie.significance.class_hits`, int [n_models, num_classes]) and the class sizes [num_classes].

  The counts add up over blocks of examples, so an analysis that never holds every prediction at once (e.g.
  `pie.beam_analysis`) gets the same table, float for float.
  """
  dense_hits, pruned_hits = np.asarray(dense_hits), np.asarray(pruned_hits)
  class_count = np.asarray(class_count)
  num_classes = len(class_count)
  with np.errstate(invalid="ignore", divide="ignore"):
    dense_recall = np.where(class_count > 0, dense_hits / class_count, np.nan)
    pruned_recall = np.where(class_count > 0, pruned_hits / class_count, np.nan)
  tests = significance.class_tests(
      significance.normalized_recall_from_hits(dense_hits, class_count, normalization),
      significance.normalized_recall_from_hits(pruned_hits, class_count, normalization),
      alpha=alpha,
      unchanged=significance.unchanged_classes(dense_recall, pruned_recall),
      normalization=normalization,
  )
  dense_mean = dense_recall.mean(axis=0)  # NaN for a class with no example
  pruned_mean = pruned_recall.mean(axis=0)
  if class_names is None:
    class_names = [str(c) for c in range(num_classes)]
  return pd.DataFrame(
      {
          "class_id": np.arange(num_classes),
          "class_name": list(class_names),
          "num_examples": class_count,
          "dense_recall_mean": dense_mean,
          "pruned_recall_mean": pruned_mean,
          "recall_change": pruned_mean - dense_mean,
          "normalized_change": tests["normalized_change"].to_numpy(),
          "t_statistic": tests["t_statistic"].to_numpy(),
          "p_value": tests["p_value"].to_numpy(),
          "significant": tests["significant"].to_numpy(bool),
          "q_value": tests["q_value"].to_numpy(),
          "significant_fdr": tests["significant_fdr"].to_numpy(bool),
          "ci_low": tests["ci_low"].to_numpy(),
          "ci_high": tests["ci_high"].to_numpy(),
          "hedges_g": tests["hedges_g"].to_numpy(),
          "df": tests["df"].to_numpy(),
          "note": tests["note"].to_numpy(),
      }
  )


def paired_class_ttest_from_hits(
    dense_hits, pruned_hits, class_count, dense_rows, pruned_rows, alpha=0.05, normalization="per_model"
):
  """The paired test of `pie.significance.paired_class_tests` from correct predictions per model and class.

  Pair i is dense model `dense_rows[i]` and compressed model `pruned_rows[i]` (the compressed model fine-tuned or
  derived from that dense twin). Recall is normalized over each whole population first (as in
  `class_ttest_from_hits`), then the pairs are taken; a class whose recall is the same in every model of the pairs
  is not tested. Returns one row per class with `significance.PAIRED_COLUMNS`.
  """
  dense_hits, pruned_hits = np.asarray(dense_hits), np.asarray(pruned_hits)
  class_count = np.asarray(class_count)
  dense_rows, pruned_rows = np.asarray(dense_rows, dtype=np.int64), np.asarray(pruned_rows, dtype=np.int64)
  if dense_rows.shape != pruned_rows.shape or dense_rows.ndim != 1:
    raise ValueError(
        f"dense_rows and pruned_rows must be 1-D and of one length (one entry per pair), got shapes "
        f"{dense_rows.shape} and {pruned_rows.shape}"
    )
  dense_norm = significance.normalized_recall_from_hits(dense_hits, class_count, normalization)[dense_rows]
  pruned_norm = significance.normalized_recall_from_hits(pruned_hits, class_count, normalization)[pruned_rows]
  with np.errstate(invalid="ignore", divide="ignore"):
    dense_recall = np.where(class_count > 0, dense_hits[dense_rows] / class_count, np.nan)
    pruned_recall = np.where(class_count > 0, pruned_hits[pruned_rows] / class_count, np.nan)
  unchanged = significance.unchanged_classes(dense_recall, pruned_recall) if len(dense_rows) else None
  return significance.paired_class_tests(
      dense_norm, pruned_norm, alpha=alpha, unchanged=unchanged, normalization=normalization
  ).reset_index(drop=True)
