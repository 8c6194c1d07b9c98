"""The paper's statistics on plain arrays: modal labels, PIEs, per-class recall and the class-level Welch t-test.

Conventions shared by every function here:
  * a population's predictions are top-1 labels, int array [n_models, n_examples];
  * labels are int [n_examples]; recalls and accuracies are fractions in [0, 1].

Modal label rule: the label most models predict; ties go to the SMALLEST class id. The paper's authors broke ties
toward the largest id (pandas `mode().max()`); either choice is arbitrary, so `modal_labels` can also return which
examples were tied, and the analysis reports how many there were.
"""
import numpy as np
import pandas as pd

TIE_RULE = "most votes; ties broken toward the smallest class id"
TIE_BREAKS = ("smallest", "largest")


def _as_predictions(predictions, name="predictions"):
  predictions = np.asarray(predictions)
  if predictions.ndim != 2 or predictions.shape[0] < 1:
    raise ValueError(f"{name} must be an int array [n_models, n_examples], got shape {predictions.shape}")
  if not np.issubdtype(predictions.dtype, np.integer):
    raise ValueError(f"{name} must hold integer class ids, got dtype {predictions.dtype}")
  return predictions


def vote_counts(predictions, num_classes=None):
  """Votes per (example, class): int32 [n_examples, num_classes]."""
  predictions = _as_predictions(predictions)
  if num_classes is None:
    num_classes = int(predictions.max()) + 1
  if predictions.min() < 0 or predictions.max() >= num_classes:
    raise ValueError(f"predictions hold class ids outside [0, {num_classes})")
  n_examples = predictions.shape[1]
  counts = np.zeros((n_examples, num_classes), np.int32)
  rows = np.broadcast_to(np.arange(n_examples), predictions.shape)
  np.add.at(counts, (rows.ravel(), predictions.ravel()), 1)
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
  if tie_break not in TIE_BREAKS:
    raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
  predictions = _as_predictions(predictions)
  n_models = predictions.shape[0]
  # Sorting each example's votes makes equal labels adjacent; runs give the counts without a [n, classes] table,
  # so memory stays O(models x examples) even with 1000 classes.
  ordered = np.sort(predictions, axis=0)
  starts = np.ones_like(ordered, dtype=bool)
  starts[1:] = ordered[1:] != ordered[:-1]
  run_id = np.cumsum(starts, axis=0) - 1  # run index within each column
  n_examples = predictions.shape[1]
  # bincount over flat (run, example) cells: the same tally as np.add.at, an order of magnitude faster.
  cells = (run_id * n_examples + np.arange(n_examples)).ravel()
  run_counts = np.bincount(cells, minlength=n_models * n_examples).astype(np.int32).reshape(n_models, n_examples)
  # Runs are in ascending label order, so argmax (first maximum) is the smallest of the tied labels and the
  # first maximum of the reversed runs the largest (runs past the last are empty: count 0, never the maximum).
  if tie_break == "smallest":
    best_run = np.argmax(run_counts, axis=0)
  else:
    best_run = n_models - 1 - np.argmax(run_counts[::-1], axis=0)
  best_count = run_counts[best_run, np.arange(n_examples)]
  run_label = np.zeros((n_models, n_examples), ordered.dtype)
  run_label[run_id[starts], np.nonzero(starts)[1]] = ordered[starts]
  modal = run_label[best_run, np.arange(n_examples)].astype(np.int64)
  if not return_details:
    return modal
  tied = (run_counts == best_count).sum(axis=0) > 1
  return modal, best_count / n_models, tied


def find_pies(dense_predictions, pruned_predictions):
  """PIE mask: examples whose modal label differs between the pruned and the dense population.

  Args:
    dense_predictions: int [n_dense_models, n_examples].
    pruned_predictions: int [n_pruned_models, n_examples].

  Returns:
    bool [n_examples]. The true label plays no part in the rule.
  """
  dense_predictions = _as_predictions(dense_predictions, "dense_predictions")
  pruned_predictions = _as_predictions(pruned_predictions, "pruned_predictions")
  if dense_predictions.shape[1] != pruned_predictions.shape[1]:
    raise ValueError(f"the populations cover different numbers of examples: {dense_predictions.shape[1]} dense, "
                     f"{pruned_predictions.shape[1]} pruned")
  return modal_labels(dense_predictions) != modal_labels(pruned_predictions)


def top1_accuracy(predictions, labels):
  """Per-model top-1 accuracy: float [n_models]."""
  predictions = _as_predictions(predictions)
  labels = np.asarray(labels)
  if labels.shape != predictions.shape[1:]:
    raise ValueError(f"labels have shape {labels.shape}, predictions cover {predictions.shape[1]} examples")
  return (predictions == labels).mean(axis=1)


def per_class_recall(predictions, labels, num_classes):
  """Per-model per-class recall: float [n_models, num_classes]; NaN for a class with no example."""
  predictions = _as_predictions(predictions)
  labels = np.asarray(labels)
  if labels.shape != predictions.shape[1:]:
    raise ValueError(f"labels have shape {labels.shape}, predictions cover {predictions.shape[1]} examples")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels hold class ids outside [0, {num_classes})")
  support = np.bincount(labels, minlength=num_classes)
  correct = predictions == labels
  hits = np.zeros((predictions.shape[0], num_classes))
  for m in range(predictions.shape[0]):  # a loop over models only: each bincount is vectorized over examples
    hits[m] = np.bincount(labels, weights=correct[m], minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(support > 0, hits / support, np.nan)


def class_ttest(dense_predictions, pruned_predictions, labels, num_classes, alpha=0.05, class_names=None,
                normalization="per_model"):
  """The paper's class-level test: Welch t-test of normalized recall, dense vs pruned, per class.

  Each model's recall on a class is normalized by subtracting the model's own top-1 accuracy (default;
  normalization="population" is the paper's rule, which subtracts the population's mean top-1 and ignores that
  mean's variance), so the null hypothesis is "this class moves by as much as overall top-1". Per class, a two-sided Welch test equal to
  `scipy.stats.ttest_ind(dense, pruned, equal_var=False)`; a positive t means the class does relatively worse in
  the pruned population. `significant` is the paper's uncorrected rule (p < alpha); `significant_fdr` controls the
  false discovery rate over the classes (Benjamini-Hochberg). Degenerate classes (absent from the eval split, zero
  variance in both populations, a population of one model) get the documented results of
  `pie.significance.class_tests`, named in `note`, and are never significant from a 0/0; a class whose recall is
  the same in every model of both populations is not tested.

  Returns:
    DataFrame, one row per class: class_id, class_name, num_examples, dense_recall_mean, pruned_recall_mean,
    recall_change (pruned - dense), normalized_change (recall_change minus the change in mean top-1), t_statistic,
    p_value, significant, q_value, significant_fdr, ci_low, ci_high (95% Welch interval of normalized_change),
    hedges_g, df, note. The interval's level is 1 - alpha; significant_fdr is q <= alpha.
  """
  from pie import significance  # pylint: disable=g-import-not-at-top
  labels = np.asarray(labels)
  # per_class_recall checks the arguments; its recall is the one class_ttest_from_hits computes from the counts.
  per_class_recall(dense_predictions, labels, num_classes)
  per_class_recall(pruned_predictions, labels, num_classes)
  return class_ttest_from_hits(significance.class_hits(dense_predictions, labels, num_classes),
                               significance.class_hits(pruned_predictions, labels, num_classes),
                               np.bincount(labels, minlength=num_classes), alpha=alpha, class_names=class_names,
                               normalization=normalization)


def class_ttest_from_hits(dense_hits, pruned_hits, class_count, alpha=0.05, class_names=None,
                          normalization="per_model"):
  """`class_ttest` from its sufficient statistics: correct predictions per model and class of both populations
  (`pie.significance.class_hits`, int [n_models, num_classes]) and the class sizes [num_classes].

  The counts add up over blocks of examples, so an analysis that never holds every prediction at once (e.g.
  `pie.beam_analysis`) gets the same table, float for float.
  """
  from pie import significance  # pylint: disable=g-import-not-at-top
  dense_hits, pruned_hits = np.asarray(dense_hits), np.asarray(pruned_hits)
  class_count = np.asarray(class_count)
  num_classes = len(class_count)
  with np.errstate(invalid="ignore", divide="ignore"):
    dense_recall = np.where(class_count > 0, dense_hits / class_count, np.nan)
    pruned_recall = np.where(class_count > 0, pruned_hits / class_count, np.nan)
  tests = significance.class_tests(
      significance.normalized_recall_from_hits(dense_hits, class_count, normalization),
      significance.normalized_recall_from_hits(pruned_hits, class_count, normalization), alpha=alpha,
      unchanged=significance.unchanged_classes(dense_recall, pruned_recall), normalization=normalization)
  dense_mean = dense_recall.mean(axis=0)  # NaN for a class with no example
  pruned_mean = pruned_recall.mean(axis=0)
  if class_names is None:
    class_names = [str(c) for c in range(num_classes)]
  return pd.DataFrame({
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
  })
