"""Statistics of disparate impact between a dense and a compressed population of models.

Everything here is a pure function over numpy arrays; nothing imports TensorFlow.

Shared conventions (the same as ``pie.stats``):

* A population's predictions are integer top-1 labels in an array ``[n_models, n_examples]``;
  ``labels`` is an integer array ``[n_examples]``; ``num_classes`` is an int.
* Modal label of an example: the label with the most votes among the models of a population, ties
  broken toward the smallest class id.  A PIE (pruning identified exemplar) is an example whose modal
  label differs between the pruned and the dense population; the true label plays no part.
* ``recall[m, c]`` is the fraction of the examples of class ``c`` that model ``m`` predicts correctly
  (NaN when the eval set has no example of class ``c``).  Normalized recall subtracts each model's own
  top-1 ("per_model", the default) or the population's mean top-1 accuracy ("population", the paper's rule,
  which treats that mean as known and so ignores its sampling variance).
* Class test: two-sided Welch t-test ``scipy.stats.ttest_ind(dense_norm[:, c], pruned_norm[:, c],
  equal_var=False)``, significant when ``p < alpha``; Benjamini-Hochberg rejects when ``q <= alpha``.

This module holds the one implementation of each statistic, scipy.stats-style: a vectorized kernel behind a
public name, with a documented result object.  ``pie.stats`` (the paper-level API) and ``pie.robustness`` call
these; this module imports neither.

  welch_test -> WelchResult           Welch t-test along the models axis, with the degenerate-case rules
  welch_confidence_interval, hedges_g the interval and effect size of a WelchResult
  bh_q_values, bh_rejections          Benjamini-Hochberg q-values and decisions (q <= alpha)
  SortedVotes, modal_votes -> ModalVotes  (weighted) modal labels, both tie rules, shares and ties
  paired_test -> PairedResult         paired t-test of each compressed model against its dense twin (paired design)
  pair_discordance, mcnemar_exact     one model pair alone: discordant examples per class, exact McNemar
  mitigation_effect                   a mitigated population against the unmitigated one: intervals and a verdict
  exchange_arrangements, exchange_pie_counts, pies_excess_test -> PiesExcessResult
                                      a level's PIEs against its matched control's: conditional permutation test
  dense_count_histograms, uniform_shift_tests -> UniformShiftResult
                                      each class's change beyond a uniform shift of every example's margin
  class_correlation_test -> CorrelationResult
                                      Spearman of class harm with a class property, p-values from the models

The formulas, the degenerate-case table and the references are in ``docs/statistics.md``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading

import numpy as np
import pandas as pd
from scipy import special, stats

__all__ = [
    "NORMALIZATIONS",
    "DEFAULT_NORMALIZATION",
    "TIE_BREAKS",
    "TIE_RULE",
    "CASE_REGULAR",
    "CASE_ABSENT",
    "CASE_SINGLE_MODEL",
    "CASE_CONSTANT_EQUAL",
    "CASE_CONSTANT_SEPARATED",
    "CASE_UNCHANGED",
    "CASE_CONSTANT_UNTESTABLE",
    "CASE_NOTES",
    "NOTE_ABSENT",
    "NOTE_UNCHANGED",
    "NOTE_CONSTANT_UNTESTABLE",
    "NOTE_SINGLE_MODEL",
    "NOTE_CONSTANT_EQUAL",
    "NOTE_CONSTANT_SEPARATED",
    "NOTE_DENSE_CONSTANT",
    "NOTE_PRUNED_CONSTANT",
    "NOTE_NO_VARIANCE",
    "NOTE_OVER_CAP",
    "NOTE_EMPTY_SUBSET",
    "NOTE_SMALL_SUBSET",
    "NOTE_SUBSET_UNCHANGED",
    "WelchResult",
    "ModalVotes",
    "SortedVotes",
    "BootstrapResult",
    "SampleSizePlan",
    "welch_test",
    "welch_confidence_interval",
    "hedges_g",
    "modal_votes",
    "normalized_recall",
    "class_hits",
    "normalized_recall_from_hits",
    "class_tests",
    "subset_hits",
    "subset_tests",
    "welch_power",
    "models_needed",
    "bootstrap_stability",
    "bootstrap_resamples",
    "bootstrap_class_stability",
    "bootstrap_pie_stability",
    "unchanged_classes",
    "bh_q_values",
    "bh_rejections",
    "half_splits",
    "split_pie_counts",
    "split_class_tests",
    "pies_against_floor",
    "ExchangePlan",
    "exchange_arrangements",
    "exchange_pie_counts",
    "PiesExcessResult",
    "pies_excess_test",
    "dense_count_histograms",
    "UniformShiftResult",
    "uniform_shift_tests",
    "CorrelationResult",
    "class_correlation_test",
    "class_correlation_tests",
    "aa_calibration",
    "exemplar_scores",
    "exemplar_parts",
    "exemplar_histogram",
    "exemplar_ranks",
    "exemplar_frame",
    "PairedResult",
    "PAIRED_CASE_NOTES",
    "PAIRED_COLUMNS",
    "NOTE_FEW_PAIRS",
    "NOTE_NO_PAIRS",
    "NOTE_PAIRED_ZERO",
    "NOTE_PAIRED_CONSTANT",
    "NOTE_PAIRED_UNTESTABLE",
    "SINGLE_PAIR_COLUMNS",
    "VERDICTS",
    "mitigation_verdict",
    "mitigation_effect",
    "paired_test",
    "paired_confidence_interval",
    "paired_class_tests",
    "paired_power",
    "pairs_needed",
    "pair_discordance",
    "mcnemar_exact",
    "single_pair_tests",
]

NORMALIZATIONS = ("population", "per_model")
# per_model: the same point estimate as the paper's "population" rule, with the right standard error (the
# subtracted top-1 varies from model to model and its variance is part of each value).
DEFAULT_NORMALIZATION = "per_model"
# What summary.json and the report say whenever the paper's normalization is used.
POPULATION_NORMALIZATION_WARNING = (
    "normalization 'population' (the paper's rule) subtracts the population's mean top-1 as if it were known: the "
    "test ignores the sampling variance of that mean, and flags classes whose recall barely varies between models "
    "too often; 'per_model' (the default) has the same estimate and the right standard error"
)

# Notes written in the ``note`` column of class_tests / models_needed.  Empty string: regular case.
NOTE_ABSENT = "class absent from the eval split (no recall in at least one population): test undefined"
NOTE_SINGLE_MODEL = "a population has fewer than 2 models: no variance estimate, test undefined"
NOTE_CONSTANT_EQUAL = "both populations constant and equal: no difference (t=0, p=1, no interval)"
NOTE_CONSTANT_SEPARATED = (
    "both populations constant with different values (complete separation): Welch t is infinite; "
    "p is the exact permutation p-value of complete separation; no interval"
)
NOTE_CONSTANT_UNTESTABLE = (
    "both populations constant with different values after subtracting each population's mean top-1: that "
    "normalization ignores the variance of the mean, so the test is undefined here (per_model normalization tests it)"
)
NOTE_UNCHANGED = (
    "recall identical in every model of both populations: nothing class-specific changed, not tested (never "
    "significant)"
)
NOTE_DENSE_CONSTANT = "dense population constant: Welch df comes from the pruned population alone"
NOTE_PRUNED_CONSTANT = "pruned population constant: Welch df comes from the dense population alone"
NOTE_NO_VARIANCE = "no variance in either population: sample size cannot be planned"
NOTE_OVER_CAP = "more models needed than max_models"
# Notes of subset_tests (slices of the eval split: attribute values, their intersections, class groups).
NOTE_EMPTY_SUBSET = "no example in the eval split: not tested"
NOTE_SMALL_SUBSET = "fewer than {min_size} examples (the minimum slice size): not tested, never significant"
NOTE_SUBSET_UNCHANGED = (
    "accuracy identical in every model of both populations: nothing slice-specific changed, not tested (never "
    "significant)"
)

# Case codes of ``WelchResult.case``, one per row of the degenerate-case table of docs/statistics.md.
CASE_REGULAR = 0  # a Welch test (one population may be constant: see WelchResult.note)
CASE_ABSENT = 1  # the column is NaN for every model of a population (a class absent from the eval split)
CASE_SINGLE_MODEL = 2  # a population has fewer than 2 models
CASE_CONSTANT_EQUAL = 3  # both populations constant, same value: t = 0, p = 1
CASE_CONSTANT_SEPARATED = 4  # both constant, different values, exchangeable: t = +-inf, exact permutation p
CASE_UNCHANGED = 5  # marked unchanged by the caller (raw recall identical everywhere): not tested
CASE_CONSTANT_UNTESTABLE = 6  # both constant, different values, not exchangeable: not tested
CASE_NOTES = {
    CASE_REGULAR: "",
    CASE_ABSENT: NOTE_ABSENT,
    CASE_SINGLE_MODEL: NOTE_SINGLE_MODEL,
    CASE_CONSTANT_EQUAL: NOTE_CONSTANT_EQUAL,
    CASE_CONSTANT_SEPARATED: NOTE_CONSTANT_SEPARATED,
    CASE_UNCHANGED: NOTE_UNCHANGED,
    CASE_CONSTANT_UNTESTABLE: NOTE_CONSTANT_UNTESTABLE,
}

# Modal labels: which of the labels tied for the most votes is modal.  "smallest" is pie's rule; "largest" is the
# authors' (pandas ``mode().max()``).  Either is arbitrary, which is why the ties are reported.
TIE_BREAKS = ("smallest", "largest")
TIE_RULE = "most votes; ties broken toward the smallest class id"


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------


# The one set of argument checks of the statistics: pie.stats uses them too, so that each problem has one message.


def _check_int(value, name: str, minimum: int) -> int:
  """An int >= minimum; a bool is refused (True is not a count)."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  return int(value)


def _check_num_classes(num_classes) -> int:
  return _check_int(num_classes, "num_classes", 1)


def _check_class_ids(values, ndim: int, name: str, num_classes=None) -> np.ndarray:
  """Integer class ids of the given rank, non-empty, in [0, num_classes) (only >= 0 when num_classes is None)."""
  arr = np.asarray(values)
  layout = "[n_models, n_examples]" if ndim == 2 else "[n_examples]"
  if arr.ndim != ndim:
    raise ValueError(f"{name} must be a {ndim}-D array {layout}, got shape {arr.shape}")
  if arr.size == 0:
    raise ValueError(f"{name} is empty (shape {arr.shape}): it needs at least one entry along each axis of {layout}")
  if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(
        f"{name} must hold integer class ids, got dtype {arr.dtype}; class ids stored as floats "
        "convert with .astype(np.int64)"
    )
  # Without num_classes only the minimum is needed (one pass over the array; the maximum is read for the message).
  low = arr.min()
  if low < 0 or (num_classes is not None and arr.max() >= num_classes):
    valid = f"[0, {num_classes - 1}]" if num_classes is not None else "[0, num_classes - 1]"
    raise ValueError(f"{name} holds class ids outside {valid} (min {low}, max {arr.max()})")
  return arr


def _check_predictions(predictions, name: str = "predictions", num_classes=None) -> np.ndarray:
  """A population's top-1 labels, int [n_models, n_examples]; ``num_classes`` must already be checked."""
  return _check_class_ids(predictions, 2, name, num_classes)


def _check_labels(labels, num_examples: int, num_classes=None) -> np.ndarray:
  arr = _check_class_ids(labels, 1, "labels", num_classes)
  if arr.shape[0] != num_examples:
    raise ValueError(
        f"labels has {arr.shape[0]} examples but the predictions have {num_examples}: both must "
        "cover the same eval split, in the same order"
    )
  return arr


def _check_same_examples(first: np.ndarray, second: np.ndarray, first_name: str, second_name: str) -> None:
  if first.shape[1] != second.shape[1]:
    raise ValueError(
        f"{first_name} and {second_name} cover different numbers of examples ({first.shape[1]} and "
        f"{second.shape[1]}): both populations must predict the same eval split, in the same order"
    )


def _check_probability(value, name: str) -> float:
  value = float(value)
  if not 0.0 < value < 1.0:
    raise ValueError(f"{name} must be in (0, 1), got {value}")
  return value


def _check_normalization(normalization: str) -> str:
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
  return normalization


def _check_tie_break(tie_break: str) -> str:
  if tie_break not in TIE_BREAKS:
    raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
  return tie_break


def _check_weights(weights, n_models: int, signed: bool = False) -> np.ndarray:
  """Vote weights of a population's models (e.g. their multiplicities in a resample), int64 [n_models].

  ``signed`` allows negative weights (run sums of two stacked populations), otherwise they must be >= 0 with one
  positive: a population needs votes to have a modal label.
  """
  arr = np.asarray(weights)
  if arr.shape != (n_models,):
    raise ValueError(
        f"weights must be an array [n_models] with one weight per model ({n_models}), got shape " f"{arr.shape}"
    )
  if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(
        f"weights must hold integer vote counts, got dtype {arr.dtype}; e.g. the multiplicities "
        "np.bincount(rows, minlength=n_models) of a resample"
    )
  if not signed and (arr.min() < 0 or not arr.any()):
    raise ValueError(f"weights must be >= 0 with at least one positive weight, got min {arr.min()}, sum {arr.sum()}")
  return arr.astype(np.int64, copy=False)


def _check_weight_rows(weights, n_models: int) -> np.ndarray:
  """Many weightings of a population's models, int64 [n_weightings, n_models], each as ``_check_weights`` requires."""
  arr = np.asarray(weights)
  if arr.ndim != 2 or arr.shape[1] != n_models:
    raise ValueError(f"weights must be an array [n_weightings, n_models] ({n_models} models), got shape {arr.shape}")
  if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"weights must hold integer vote counts, got dtype {arr.dtype}")
  if arr.size and (arr.min() < 0 or not arr.any(axis=1).all()):
    raise ValueError("weights must be >= 0 with at least one positive weight in every weighting")
  return arr.astype(np.int64, copy=False)


def _check_samples(dense, pruned, dense_name: str, pruned_name: str, matrix: bool = False):
  """The two samples of a Welch test, float64 arrays [..., n_models, n_columns] (exactly 2-D when ``matrix``).

  A column is a class when the samples are normalized recall: NaN in every model means the class is absent from
  the eval split, NaN in some models only is an error.  Returns (dense, pruned).
  """
  dense = np.asarray(dense, dtype=np.float64)
  pruned = np.asarray(pruned, dtype=np.float64)
  for name, arr in ((dense_name, dense), (pruned_name, pruned)):
    if matrix and arr.ndim != 2:
      raise ValueError(f"{name} must be a 2-D array [n_models, n_classes], got shape {arr.shape}")
    if arr.ndim < 2:
      raise ValueError(
          f"{name} must be an array [..., n_models, n_columns], got shape {arr.shape}; for one column "
          "of values per model pass values[:, None]"
      )
    if arr.shape[-2] < 1 or arr.shape[-1] < 1:
      raise ValueError(f"{name} is empty (shape {arr.shape}): it needs at least one model and one column")
    finite = np.isfinite(arr)
    if not finite.all():  # checked in detail only when something is not finite: this runs on every resample
      if np.isinf(arr).any():
        raise ValueError(f"{name} contains infinite values")
      nan = ~finite
      mixed = nan.any(axis=-2) & ~nan.all(axis=-2)
      if mixed.any():
        raise ValueError(
            f"{name} has classes (columns) with NaN for some models but not all (columns "
            f"{np.flatnonzero(mixed.reshape(-1, mixed.shape[-1]).any(axis=0))[:10].tolist()}): a class is either "
            "absent from the eval split (NaN for every model) or present for every model"
        )
  if dense.shape[-1] != pruned.shape[-1]:
    raise ValueError(
        f"{dense_name} has {dense.shape[-1]} classes (columns) but {pruned_name} has "
        f"{pruned.shape[-1]}: both must hold the same columns in the same order"
    )
  if dense.shape[:-2] != pruned.shape[:-2]:
    raise ValueError(
        f"{dense_name} and {pruned_name} must have the same leading (batch) shape, got "
        f"{dense.shape[:-2]} and {pruned.shape[:-2]}"
    )
  return dense, pruned


def _check_recall_pair(dense_norm, pruned_norm) -> tuple[np.ndarray, np.ndarray]:
  return _check_samples(dense_norm, pruned_norm, "dense_norm", "pruned_norm", matrix=True)


# --------------------------------------------------------------------------------------------------
# Recall
# --------------------------------------------------------------------------------------------------


def _class_hits(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  hits = np.empty((predictions.shape[0], num_classes), dtype=np.int64)
  labels = np.asarray(labels, dtype=np.intp)
  for model, row in enumerate(predictions):  # a model's correct predictions as weights: counts, exact in float64
    hits[model] = np.bincount(labels, weights=row == labels, minlength=num_classes)
  return hits


def class_hits(predictions, labels, num_classes: int) -> np.ndarray:
  """Correct predictions per model and class, int64 [n_models, num_classes].

  With the class sizes (``np.bincount(labels)``) these counts are all the class tests need, and they
  add up over disjoint sets of examples: a distributed analysis (``pie.beam_analysis``) sums them
  over blocks of examples and hands them to ``normalized_recall_from_hits``.
  """
  num_classes = _check_num_classes(num_classes)
  predictions = _check_predictions(predictions, "predictions", num_classes)
  labels = _check_labels(labels, predictions.shape[1], num_classes)
  return _class_hits(predictions, labels, num_classes)


def _recall_from_hits(hits: np.ndarray, class_count: np.ndarray):
  """Per-model per-class recall [n_models, C] (NaN for absent classes) and per-model top-1 [n_models]."""
  hits = np.asarray(hits)
  class_count = np.asarray(class_count)
  recall = np.full(hits.shape, np.nan)
  present = class_count > 0
  recall[:, present] = hits[:, present] / class_count[present]
  # Integer counts divided once: the same float as the mean of the 0/1 correctness vector.
  top1 = hits.sum(axis=1) / class_count.sum()
  return recall, top1


def _recall_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int):
  """Per-model per-class recall [n_models, C] (NaN for absent classes) and per-model top-1 [n_models]."""
  return _recall_from_hits(_class_hits(predictions, labels, num_classes), np.bincount(labels, minlength=num_classes))


def _normalize(recall: np.ndarray, top1: np.ndarray, normalization: str) -> np.ndarray:
  if normalization == "population":
    return recall - top1.mean()
  return recall - top1[:, None]


def unchanged_classes(dense_recall, pruned_recall) -> np.ndarray:
  """Classes whose raw recall is the same number in every model of both populations, bool [..., n_classes].

  Arguments are raw recall arrays [..., n_models, n_classes].  Such a class shows no class-specific
  change at all; after normalization its values still move with top-1, but a zero observed variance of
  its recall says nothing about its true between-model variance, so it is not tested.
  """
  dense_recall = np.asarray(dense_recall, dtype=np.float64)
  pruned_recall = np.asarray(pruned_recall, dtype=np.float64)
  first = dense_recall[..., :1, :]
  return (dense_recall == first).all(axis=-2) & (pruned_recall == first).all(axis=-2)


def normalized_recall(predictions, labels, num_classes: int, normalization: str = DEFAULT_NORMALIZATION) -> np.ndarray:
  """Per-model per-class recall minus a top-1 baseline, shape [n_models, num_classes].

  The paper's null hypothesis is that compression moves every class by the same amount as overall
  top-1.  Subtracting top-1 from each class recall turns that null into "the normalized recall has
  the same mean in both populations", which a two-sample test can check class by class.

  normalization:
    "per_model" (default): subtract each model's own top-1 accuracy from its row.  Each value is a
    function of one model, so the test's variance includes the variance of the subtracted top-1,
    and between-model differences in overall skill drop out of the class comparison.
    "population" (the paper's rule): subtract the population's mean top-1 accuracy (the mean over its
    models) from every entry.  Same point estimate, but the test treats the mean as known and ignores
    its variance: anti-conservative for classes whose recall barely varies between models.

  Classes with no example in the eval set are NaN for every model.
  """
  num_classes = _check_num_classes(num_classes)
  predictions = _check_predictions(predictions, "predictions", num_classes)
  labels = _check_labels(labels, predictions.shape[1], num_classes)
  normalization = _check_normalization(normalization)
  return _normalize(*_recall_matrix(predictions, labels, num_classes), normalization)


def normalized_recall_from_hits(hits, class_count, normalization: str = DEFAULT_NORMALIZATION) -> np.ndarray:
  """``normalized_recall`` from its sufficient statistics: ``class_hits`` [n_models, C] and the class
  sizes [C] (``np.bincount(labels, minlength=C)``).  Equal, float for float, to ``normalized_recall``
  on the predictions the counts come from."""
  hits = np.asarray(hits)
  class_count = np.asarray(class_count)
  if hits.ndim != 2 or class_count.shape != hits.shape[1:]:
    raise ValueError(
        f"hits must be [n_models, num_classes] and class_count [num_classes], got shapes "
        f"{hits.shape} and {class_count.shape}"
    )
  normalization = _check_normalization(normalization)
  return _normalize(*_recall_from_hits(hits, class_count), normalization)


# --------------------------------------------------------------------------------------------------
# Welch test: the kernel of every two-sample test of per-model values
# --------------------------------------------------------------------------------------------------


class _ColumnTests:
  """What a result of one test per column (its `p` array, NaN where the test is undefined) answers."""

  @property
  def tested(self) -> np.ndarray:
    """Columns with a defined p-value: those a multiple-testing correction counts."""
    return ~np.isnan(self.p)

  def significant(self, alpha: float) -> np.ndarray:
    """``p < alpha``; an undefined test is never significant."""
    return self.tested & (self.p < alpha)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value to compare
class WelchResult(_ColumnTests):
  """Result of ``welch_test``: one two-sided Welch test per column.

  Every array has the shape [..., n_columns] of the tests (the samples' shape without the models axis).

  mean_dense, mean_pruned: sample means (a constant column's mean is its value exactly).
  var_dense, var_pruned: sample variances (ddof=1; 0 for a constant column, NaN with fewer than 2 models).
  n_dense, n_pruned: models per population.
  t: Welch statistic with scipy's sign, ``ttest_ind(dense, pruned)``: t > 0 when the dense mean is higher.
  df: Welch-Satterthwaite degrees of freedom (NaN where both populations are constant or the test is undefined).
  p: two-sided p-value; NaN where the test is undefined (absent, single model, unchanged, untestable).
  case: int8 ``CASE_*`` code of the degenerate-case table (docs/statistics.md); ``CASE_REGULAR`` for a test.
  dense_constant, pruned_constant: the column is constant in that population.
  """

  mean_dense: np.ndarray
  mean_pruned: np.ndarray
  var_dense: np.ndarray
  var_pruned: np.ndarray
  n_dense: int
  n_pruned: int
  t: np.ndarray
  df: np.ndarray
  p: np.ndarray
  case: np.ndarray
  dense_constant: np.ndarray
  pruned_constant: np.ndarray

  @property
  def difference(self) -> np.ndarray:
    """``mean_pruned - mean_dense`` (negative: the pruned population is lower)."""
    return self.mean_pruned - self.mean_dense

  @property
  def note(self) -> np.ndarray:
    """Why a column has no regular test (``CASE_NOTES``), or which population is constant in a regular test; an
    empty string otherwise.  Object array of the tests' shape."""
    notes = np.full(self.case.shape, "", dtype=object)
    regular = self.case == CASE_REGULAR
    notes[self.dense_constant & ~self.pruned_constant & regular] = NOTE_DENSE_CONSTANT
    notes[self.pruned_constant & ~self.dense_constant & regular] = NOTE_PRUNED_CONSTANT
    for code, text in CASE_NOTES.items():
      if code != CASE_REGULAR:
        notes[self.case == code] = text
    return notes


def _complete_separation_p(n_dense: int, n_pruned: int) -> float:
  """Exact two-sided permutation p-value when each population is constant and the constants differ.

  Only the observed split (and, when the populations have the same size, its mirror image) reaches
  the observed absolute difference of means, so p = k / C(n_dense + n_pruned, n_dense), k = 2 if the
  sizes are equal, else 1.
  """
  log_splits = special.gammaln(n_dense + n_pruned + 1) - special.gammaln(n_dense + 1) - special.gammaln(n_pruned + 1)
  extreme = 2.0 if n_dense == n_pruned else 1.0
  return float(min(1.0, extreme * math.exp(-log_splits)))


def welch_test(dense, pruned, unchanged=None, exchangeable: bool = True) -> WelchResult:
  """Two-sided Welch t-test along the models axis, every column (and every leading index) at once.

  Equal to ``scipy.stats.ttest_ind(dense, pruned, axis=-2, equal_var=False)`` on every regular column (up to
  float rounding); degenerate columns get the values of the table in docs/statistics.md, never a 0/0: both
  populations constant and equal -> t = 0, p = 1; constant and different -> t = +-inf with the exact permutation
  p-value of complete separation (when ``exchangeable``), else not tested; a column NaN in every model of a
  population (an absent class), fewer than 2 models, or a column marked ``unchanged`` -> not tested (NaN).

  Args:
    dense, pruned: float arrays [..., n_models, n_columns] of per-model values (e.g. normalized recall, one
      column per class; or accuracy drops, one column per corrupted set); the leading shapes (e.g. bootstrap
      resamples) and the columns must agree, the numbers of models may differ.  No infinite values; a column
      with NaN is NaN for every model of that population.
    unchanged: optional bool, broadcastable to [..., n_columns]: columns where nothing changed at all (a class
      whose raw recall is the same number in every model of both populations); they are not tested, since a
      zero observed variance is no evidence of a column-specific change.
    exchangeable: each value is a function of its own model alone (per-model normalization, accuracy drops), so
      the models are exchangeable between the populations under the null and the exact permutation p-value of
      complete separation is valid; False when a population-level constant was subtracted ("population"
      normalization), where complete separation is untestable.

  Returns:
    A ``WelchResult``.
  """
  dense, pruned = _check_samples(dense, pruned, "the dense sample", "the pruned sample")
  if unchanged is not None:
    unchanged = np.asarray(unchanged)
    shape = dense.shape[:-2] + dense.shape[-1:]
    try:
      fits = unchanged.dtype == np.bool_ and np.broadcast_shapes(unchanged.shape, shape) == shape
    except ValueError:
      fits = False
    if not fits:
      raise ValueError(
          f"unchanged must be a bool array broadcastable to the tests' shape {shape}, got "
          f"{unchanged.dtype} of shape {unchanged.shape}"
      )
  return _welch(dense, pruned, unchanged, bool(exchangeable))


def _welch(
    dense: np.ndarray, pruned: np.ndarray, unchanged=None, exchangeable: bool = True, below: float | None = None
) -> WelchResult:
  """``welch_test`` on samples already checked (float64, the shapes of ``_check_samples``).

  The callers in this module check their inputs once (predictions, hits, recall matrices) and then test many
  resamples or splits of them, so the per-call checks are skipped there.

  ``below``: for callers that only ask which p-values are below it (resamples and A/A splits: ``p < alpha`` and
  Benjamini-Hochberg at alpha), the t tail is evaluated only where |t| reaches the normal quantile of ``below / 2``;
  elsewhere p is certainly above ``below`` (a t tail is heavier than the normal one) and is set to 1. The decisions
  at ``below`` are those of the exact p-values; the p-values themselves are not.
  """
  n_d, n_p = dense.shape[-2], pruned.shape[-2]
  absent = np.isnan(dense).all(axis=-2) | np.isnan(pruned).all(axis=-2)
  with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
    first_d, first_p = dense[..., 0, :], pruned[..., 0, :]
    const_d = dense.max(axis=-2) == dense.min(axis=-2)
    const_p = pruned.max(axis=-2) == pruned.min(axis=-2)
    # A constant column's mean is its value exactly (a float sum could drift by an ulp and turn
    # "equal" into "different").
    mean_d = np.where(const_d, first_d, dense.mean(axis=-2))
    mean_p = np.where(const_p, first_p, pruned.mean(axis=-2))
    nan = np.full(mean_d.shape, np.nan)
    var_d = np.where(const_d, 0.0, dense.var(axis=-2, ddof=1)) if n_d >= 2 else nan.copy()
    var_p = np.where(const_p, 0.0, pruned.var(axis=-2, ddof=1)) if n_p >= 2 else nan.copy()
    se_d, se_p = var_d / n_d, var_p / n_p
    se2 = se_d + se_p
    diff = mean_d - mean_p
    t = diff / np.sqrt(se2)
    df = se2**2 / (se_d**2 / (n_d - 1) + se_p**2 / (n_p - 1)) if min(n_d, n_p) >= 2 else nan.copy()
    if below is None:
      p = 2.0 * stats.t.sf(np.abs(t), df)
    else:
      # 1 - 1e-7: a margin far above the rounding of the computed tail, so that no p-value left out could be computed
      # below `below`.
      near = ~(np.abs(t) < special.ndtri(1 - below / 2) * (1 - 1e-7))
      p = np.ones(np.shape(t))
      p[near] = 2.0 * stats.t.sf(np.abs(t[near]), np.broadcast_to(df, np.shape(t))[near])

  case = np.full(mean_d.shape, CASE_REGULAR, dtype=np.int8)
  both_constant = (se2 == 0) & ~absent
  if min(n_d, n_p) < 2:
    case[...] = CASE_SINGLE_MODEL
  else:
    equal = both_constant & (diff == 0)
    separated = both_constant & (diff != 0)
    case[equal] = CASE_CONSTANT_EQUAL
    case[separated] = CASE_CONSTANT_SEPARATED if exchangeable else CASE_CONSTANT_UNTESTABLE
    separation_p = _complete_separation_p(n_d, n_p) if exchangeable else np.nan
    t = np.where(equal, 0.0, np.where(separated, np.copysign(np.inf, diff), t))
    p = np.where(equal, 1.0, np.where(separated, separation_p, p))
    df = np.where(both_constant, np.nan, df)
    if unchanged is not None:
      case[np.broadcast_to(unchanged, case.shape) & ~absent] = CASE_UNCHANGED
  case[absent] = CASE_ABSENT
  undefined = np.isin(case, (CASE_ABSENT, CASE_SINGLE_MODEL, CASE_UNCHANGED, CASE_CONSTANT_UNTESTABLE))
  t = np.where(undefined, np.nan, t)
  df = np.where(undefined, np.nan, df)
  p = np.where(undefined, np.nan, np.clip(p, 0.0, 1.0))
  return WelchResult(mean_d, mean_p, var_d, var_p, n_d, n_p, t, df, p, case, const_d, const_p)


def welch_confidence_interval(result: WelchResult, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """Welch confidence interval of ``mean_pruned - mean_dense`` at level ``confidence``: (low, high).

  ``difference ± t_{(1 + confidence)/2, df} · sqrt(var_dense/n_dense + var_pruned/n_pruned)`` with the test's
  Welch-Satterthwaite df, so at ``confidence = 1 - alpha`` it excludes 0 exactly when ``p < alpha``.  NaN for every
  column that is not ``CASE_REGULAR``: a degenerate case has no variance to build an interval from, and an
  interval of zero width would claim certainty.
  """
  confidence = _check_probability(confidence, "confidence")
  change = result.difference
  with np.errstate(invalid="ignore"):
    half = stats.t.ppf(0.5 + confidence / 2.0, result.df) * np.sqrt(
        result.var_dense / result.n_dense + result.var_pruned / result.n_pruned
    )
  no_interval = result.case != CASE_REGULAR
  return np.where(no_interval, np.nan, change - half), np.where(no_interval, np.nan, change + half)


def _hedges_correction(df: np.ndarray) -> np.ndarray:
  """Exact small-sample bias correction J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2))."""
  df = np.asarray(df, dtype=np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.exp(special.gammaln(df / 2.0) - 0.5 * np.log(df / 2.0) - special.gammaln((df - 1.0) / 2.0))


def hedges_g(result: WelchResult) -> np.ndarray:
  """Hedges' g of ``mean_pruned - mean_dense``: Cohen's d on the pooled standard deviation times the exact
  small-sample correction J(n_dense + n_pruned - 2).

  In units of the between-model standard deviation, whatever the population sizes.  +-inf under complete
  separation (``CASE_CONSTANT_SEPARATED``), NaN where the test is undefined or both populations are constant and
  equal, and with fewer than 2 models in a population.
  """
  n_d, n_p = result.n_dense, result.n_pruned
  change = result.difference
  if min(n_d, n_p) < 2:
    return np.full(change.shape, np.nan)
  pooled_df = n_d + n_p - 2
  with np.errstate(invalid="ignore", divide="ignore"):
    pooled_sd = np.sqrt(((n_d - 1) * result.var_dense + (n_p - 1) * result.var_pruned) / pooled_df)
    g = change / pooled_sd * _hedges_correction(pooled_df)
  g = np.where(
      np.isin(result.case, (CASE_CONSTANT_EQUAL, CASE_UNCHANGED, CASE_CONSTANT_UNTESTABLE, CASE_ABSENT)), np.nan, g
  )
  return np.where(result.case == CASE_CONSTANT_SEPARATED, np.copysign(np.inf, change), g)


# --------------------------------------------------------------------------------------------------
# Benjamini-Hochberg
# --------------------------------------------------------------------------------------------------


def bh_rejections(q_values, alpha: float) -> np.ndarray:
  """Benjamini-Hochberg decisions from q-values: reject when q <= alpha (NaN q: not tested, not rejected).

  ``q_(k) <= alpha`` is the step-up rule ``p_(j) <= j alpha / m`` for some j >= k, so ``<=`` (not ``<``)
  is the procedure's own boundary.
  """
  q_values = np.asarray(q_values, dtype=np.float64)
  return ~np.isnan(q_values) & (q_values <= alpha)


def bh_q_values(p_values) -> np.ndarray:
  """Benjamini-Hochberg q-values (``scipy.stats.false_discovery_control(p, method="bh")``) over the defined
  p-values; NaN p-values stay NaN and do not count among the tests."""
  p_values = np.asarray(p_values, dtype=np.float64)
  q = np.full(p_values.shape, np.nan)
  defined = ~np.isnan(p_values)
  if defined.any():
    q[defined] = stats.false_discovery_control(p_values[defined], method="bh")
  return q


# --------------------------------------------------------------------------------------------------
# Class tests
# --------------------------------------------------------------------------------------------------


def class_tests(
    dense_norm,
    pruned_norm,
    alpha: float = 0.05,
    confidence=None,
    unchanged=None,
    normalization: str = DEFAULT_NORMALIZATION,
) -> pd.DataFrame:
  """Per-class Welch test of normalized recall, dense vs pruned population.

  Arguments are normalized recall matrices [n_models, n_classes] (see ``normalized_recall``); the
  populations may have different sizes.  ``confidence`` is the interval level, 1 - alpha by default.
  ``unchanged`` (bool [n_classes], optional) marks classes whose raw recall is identical in every model
  of both populations: they are reported but never tested (``class_hits``-based callers compute it).
  ``normalization`` says how the matrices were normalized; it decides whether the permutation p-value
  of complete separation is valid (per_model) or the case is untestable (population).
  The statistics are those of ``welch_test``, ``welch_confidence_interval``, ``hedges_g`` and ``bh_q_values``.
  Returns one row per class (index ``class_id``) with:

    n_dense, n_pruned            population sizes
    dense_mean, pruned_mean      mean normalized recall of each population
    normalized_change            pruned_mean - dense_mean (negative: the class lost more than top-1)
    t_statistic                  Welch t with scipy's sign: ttest_ind(dense, pruned), so t > 0 when
                                 the class is hurt by pruning
    df                           Welch-Satterthwaite degrees of freedom
    p_value, significant         two-sided p and p < alpha (the paper's uncorrected rule)
    q_value, significant_fdr     Benjamini-Hochberg q over the classes with a defined p, q <= alpha
    ci_low, ci_high              Welch confidence interval (level ``confidence``) of pruned - dense
    hedges_g                     standardized pruned - dense difference with the exact small-sample
                                 correction
    note                         empty for a regular test, else the degenerate case met

  Degenerate cases (never a crash, never "significant" from 0/0, never a zero-width interval):
    class absent (NaN recall), a population with < 2 models, or an unchanged class -> t, df, p, q, CI,
    g are NaN and the class is not significant; both populations constant and equal -> t = 0, p = 1, no
    interval; both constant and different -> under per_model normalization t = +-inf, p is the exact
    permutation p-value of complete separation, 1/C(n_d + n_p, n_d) (2/C(...) when the sizes are equal),
    g = +-inf, no interval; under population normalization the test is undefined (NaN).  Each case is
    named in ``note``.
  """
  alpha = _check_probability(alpha, "alpha")
  confidence = 1.0 - alpha if confidence is None else _check_probability(confidence, "confidence")
  normalization = _check_normalization(normalization)
  dense, pruned = _check_recall_pair(dense_norm, pruned_norm)
  if unchanged is not None:
    unchanged = np.asarray(unchanged, dtype=bool)
    if unchanged.shape != dense.shape[1:]:
      raise ValueError(f"unchanged must be a bool array [n_classes] ({dense.shape[1]}), got shape {unchanged.shape}")
  w = _welch(dense, pruned, unchanged=unchanged, exchangeable=normalization == "per_model")
  ci_low, ci_high = welch_confidence_interval(w, confidence)
  q = bh_q_values(w.p)
  frame = pd.DataFrame(
      {
          "n_dense": w.n_dense,
          "n_pruned": w.n_pruned,
          "dense_mean": w.mean_dense,
          "pruned_mean": w.mean_pruned,
          "normalized_change": w.difference,
          "t_statistic": w.t,
          "df": w.df,
          "p_value": w.p,
          "significant": w.significant(alpha),
          "q_value": q,
          "significant_fdr": bh_rejections(q, alpha),
          "ci_low": ci_low,
          "ci_high": ci_high,
          "hedges_g": hedges_g(w),
          "note": w.note,
      },
      index=pd.RangeIndex(w.case.shape[0], name="class_id"),
  )
  return frame


def subset_hits(predictions, labels, membership) -> np.ndarray:
  """Correct predictions per model on each subset of the examples, int64 [n_models, n_subsets].

  ``membership`` is bool [n_examples, n_subsets] (subsets may overlap: an attribute value, an intersection of two,
  a group of classes).  With the subset sizes (``membership.sum(axis=0)``) and each model's top-1 these counts are
  all ``subset_tests`` needs, and they add up over disjoint blocks of examples, like ``class_hits``.
  """
  predictions = _check_predictions(predictions, "predictions")
  labels = _check_labels(labels, predictions.shape[1])
  membership = np.asarray(membership)
  if membership.dtype != np.bool_ or membership.ndim != 2 or membership.shape[0] != predictions.shape[1]:
    raise ValueError(
        f"membership must be a bool array [n_examples ({predictions.shape[1]}), n_subsets], got "
        f"{membership.dtype} of shape {membership.shape}"
    )
  correct = (predictions == labels[None, :]).astype(np.int64)
  return correct @ membership.astype(np.int64)


def subset_tests(
    dense_hits,
    pruned_hits,
    sizes,
    dense_top1,
    pruned_top1,
    alpha: float = 0.05,
    normalization: str = DEFAULT_NORMALIZATION,
    min_size: int = 1,
    confidence=None,
) -> pd.DataFrame:
  """Per-subset Welch test of normalized accuracy, dense vs pruned: the class test for any subset of the examples.

  ``*_hits`` are ``subset_hits`` [n_models, n_subsets], ``sizes`` the subsets' sizes [n_subsets] and ``*_top1``
  each model's top-1 on the whole eval split [n_models].  A model's normalized accuracy on a subset is its accuracy
  there minus its own top-1 (``per_model``) or minus its population's mean top-1 (``population``), so the null is
  the paper's: the subset moves by as much as top-1.  The test, interval, Hedges' g and their degenerate cases are
  those of ``class_tests`` on these values; besides, a subset with no example (``NOTE_EMPTY_SUBSET``) or fewer than
  ``min_size`` (``NOTE_SMALL_SUBSET``) and one whose accuracy is the same in every model of both populations
  (``NOTE_SUBSET_UNCHANGED``) is reported, not tested, never significant, and not counted by Benjamini-Hochberg,
  whose family is every tested subset given.  With the classes as subsets the statistics are those of
  ``class_tests`` (tests/test_slices.py checks it).

  Returns one row per subset: num_examples, dense_accuracy_mean, pruned_accuracy_mean, accuracy_change (pruned -
  dense), normalized_change, t_statistic, p_value, significant, q_value, significant_fdr, ci_low, ci_high, hedges_g,
  df, note (the columns of ``class_tests`` under the names of slice_stats.csv).
  """
  alpha = _check_probability(alpha, "alpha")
  confidence = 1.0 - alpha if confidence is None else _check_probability(confidence, "confidence")
  normalization = _check_normalization(normalization)
  min_size = _check_int(min_size, "min_size", 1)
  dense_hits, pruned_hits = np.asarray(dense_hits, np.int64), np.asarray(pruned_hits, np.int64)
  sizes = np.asarray(sizes, np.int64)
  dense_top1, pruned_top1 = np.asarray(dense_top1, np.float64), np.asarray(pruned_top1, np.float64)
  if (
      dense_hits.ndim != 2
      or pruned_hits.ndim != 2
      or dense_hits.shape[1:] != sizes.shape
      or pruned_hits.shape[1:] != sizes.shape
      or dense_top1.shape != dense_hits.shape[:1]
      or pruned_top1.shape != pruned_hits.shape[:1]
  ):
    raise ValueError(
        f"hits must be [n_models, n_subsets], sizes [n_subsets] and top-1 [n_models], got {dense_hits.shape}, "
        f"{pruned_hits.shape}, {sizes.shape}, {dense_top1.shape}, {pruned_top1.shape}"
    )
  present = sizes > 0
  dense_acc = np.where(present, dense_hits / np.maximum(sizes, 1), np.nan)
  pruned_acc = np.where(present, pruned_hits / np.maximum(sizes, 1), np.nan)
  dense_x = _normalize(dense_acc, dense_top1, normalization)
  pruned_x = _normalize(pruned_acc, pruned_top1, normalization)
  small = present & (sizes < min_size)
  # Subsets too small to test go to the kernel as absent ones (NaN), then get a note of their own.
  unchanged = unchanged_classes(dense_acc, pruned_acc) & ~small
  w = _welch(
      np.where(small, np.nan, dense_x),
      np.where(small, np.nan, pruned_x),
      unchanged=unchanged,
      exchangeable=normalization == "per_model",
  )
  ci_low, ci_high = welch_confidence_interval(w, confidence)
  q = bh_q_values(w.p)
  note = w.note
  note[~present] = NOTE_EMPTY_SUBSET
  note[small] = NOTE_SMALL_SUBSET.format(min_size=min_size)
  note[w.case == CASE_UNCHANGED] = NOTE_SUBSET_UNCHANGED
  with np.errstate(invalid="ignore"):
    dense_mean, pruned_mean = dense_acc.mean(axis=0), pruned_acc.mean(axis=0)
    # A small subset is not tested, but its change is shown: the estimate a tested one gets.
    normalized = np.where(small, pruned_x.mean(axis=0) - dense_x.mean(axis=0), w.difference)
  return pd.DataFrame(
      {
          "num_examples": sizes,
          "dense_accuracy_mean": dense_mean,
          "pruned_accuracy_mean": pruned_mean,
          "accuracy_change": pruned_mean - dense_mean,
          "normalized_change": normalized,
          "t_statistic": w.t,
          "p_value": w.p,
          "significant": w.significant(alpha),
          "q_value": q,
          "significant_fdr": bh_rejections(q, alpha),
          "ci_low": ci_low,
          "ci_high": ci_high,
          "hedges_g": hedges_g(w),
          "df": w.df,
          "note": note,
      }
  )


# --------------------------------------------------------------------------------------------------
# Power and sample size
# --------------------------------------------------------------------------------------------------


def welch_power(var_dense, var_pruned, n_dense, n_pruned, effect, alpha: float = 0.05) -> np.ndarray:
  """Power of the two-sided Welch test to detect a true mean difference ``effect``.

  The statistic under the alternative is approximated by a noncentral t with Welch-Satterthwaite
  degrees of freedom nu and noncentrality delta = |effect| / sqrt(var_d/n_d + var_p/n_p):
  power = P(T > t_crit) + P(T < -t_crit), T ~ nct(nu, delta), t_crit = t_{1 - alpha/2, nu}.
  Broadcasts over its array arguments; NaN where a variance is NaN or both are zero.
  """
  alpha = _check_probability(alpha, "alpha")
  var_d = np.asarray(var_dense, dtype=np.float64)
  var_p = np.asarray(var_pruned, dtype=np.float64)
  n_d = np.asarray(n_dense, dtype=np.float64)
  n_p = np.asarray(n_pruned, dtype=np.float64)
  if np.any(n_d < 2) or np.any(n_p < 2):
    raise ValueError("population sizes must be >= 2 for a Welch test")
  if np.any(var_d < 0) or np.any(var_p < 0):
    raise ValueError("variances must be >= 0")
  effect = np.abs(np.asarray(effect, dtype=np.float64))
  with np.errstate(invalid="ignore", divide="ignore"):
    se_d, se_p = var_d / n_d, var_p / n_p
    se2 = se_d + se_p
    df = se2**2 / (se_d**2 / (n_d - 1) + se_p**2 / (n_p - 1))
    ncp = effect / np.sqrt(se2)
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    power = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
  return np.where(se2 > 0, power, np.nan)


@dataclasses.dataclass(frozen=True)
class SampleSizePlan:
  """Result of ``models_needed``.

  per_class: one row per class (index ``class_id``) with dense_var, pruned_var, effect,
    current_power (power of the Welch test at the populations' current sizes), models_needed
    (models per population, equal sizes; NaN when it cannot be planned, inf above max_models),
    power_at_needed and note.
  summary: median, p90 and max of models_needed over the planned classes (inverted-CDF quantiles:
    with ``median`` models per population at least half of those classes reach the target power),
    and counts of planned, unplannable and over-cap classes.
  """

  per_class: pd.DataFrame
  summary: dict


def _smallest_sufficient_size(power_at, num_classes, power, max_models):
  """Per class, the smallest n >= 2 with power_at(classes, n) >= power (power grows with n): doubling, then
  bisection. ``power_at(classes, n)`` is the power of those classes (indices) at sizes n, one per class: each step
  evaluates only the classes still searching.

  Returns (n [num_classes] int64, over [num_classes] bool: not reached by max_models).
  """
  lo = np.full(num_classes, 2, dtype=np.int64)
  hi = np.full(num_classes, 2, dtype=np.int64)
  done = power_at(np.arange(num_classes), hi) >= power
  # Invariant for unfinished classes: power(lo) < target; grow hi until power(hi) >= target.
  while not done.all():
    grow = ~done & (hi < max_models)
    if not grow.any():
      break
    lo = np.where(grow, hi, lo)
    hi = np.where(grow, np.minimum(hi * 2, max_models), hi)
    growing = np.flatnonzero(grow)
    done[growing] = power_at(growing, hi[growing]) >= power
  lo = np.where(done & (hi > 2), lo, hi)
  while np.any(hi - lo > 1):
    mid = (lo + hi) // 2
    open_ = np.flatnonzero(hi - lo > 1)
    ok = power_at(open_, mid[open_]) >= power
    hi[open_] = np.where(ok, mid[open_], hi[open_])
    lo[open_] = np.where(ok, lo[open_], mid[open_])
  return hi, ~done


def models_needed(
    dense_norm,
    pruned_norm,
    effect,
    alpha: float = 0.05,
    power: float = 0.8,
    max_models: int = 100_000,
) -> SampleSizePlan:
  """Models per population (equal sizes) needed to detect a normalized change of size ``effect``.

  Uses each class's observed variances of normalized recall in the two populations as the true
  variances, and the noncentral-t power of the two-sided Welch test (``welch_power``), and finds
  for each class the smallest n >= 2 with power(n, n) >= ``power`` (power is increasing in n).
  ``effect`` is a scalar or an array [n_classes] in normalized-recall units; its sign is ignored.

  Unplannable classes (NaN): absent from the eval split, a population with < 2 models (no variance
  estimate), or zero variance in both populations.  Classes needing more than ``max_models`` get inf.
  """
  dense, pruned, effect, alpha, power, max_models = _plan_inputs(
      dense_norm, pruned_norm, effect, alpha, power, max_models
  )
  w = _welch(dense, pruned)
  var_d, var_p = w.var_dense, w.var_pruned
  return _plan(
      lambda idx, n_dense, n_pruned: welch_power(var_d[idx], var_p[idx], n_dense, n_pruned, effect[idx], alpha),
      (w.n_dense, w.n_pruned),
      w.case,
      var_d + var_p,
      {"dense_var": var_d, "pruned_var": var_p},
      NOTE_SINGLE_MODEL,
      effect,
      alpha,
      power,
      max_models,
  )


def _plan_inputs(dense_norm, pruned_norm, effect, alpha, power, max_models):
  """The checked inputs of a sample-size plan, `effect` broadcast to one positive value per class."""
  alpha = _check_probability(alpha, "alpha")
  power = _check_probability(power, "power")
  max_models = _check_int(max_models, "max_models", 2)
  dense, pruned = _check_recall_pair(dense_norm, pruned_norm)
  effect = np.broadcast_to(np.abs(np.asarray(effect, dtype=np.float64)), (dense.shape[1],)).copy()
  if not np.all(np.isfinite(effect)) or np.any(effect == 0):
    raise ValueError("effect must be finite and non-zero (a zero effect needs infinitely many models)")
  return dense, pruned, effect, alpha, power, max_models


def _plan(
    power_at, current_models, case, variance, variance_columns, few_models_note, effect, alpha, power, max_models
):
  """A SampleSizePlan from `power_at(classes, n_dense, n_pruned)`, the power of the design's test for those classes
  (an index array) at those population sizes; `variance` > 0 marks the classes with something to plan from, and
  `variance_columns` are the per-class variances the plan reports."""
  num_classes = len(effect)
  plannable = (case != CASE_ABSENT) & (case != CASE_SINGLE_MODEL) & (variance > 0)
  current = np.full(num_classes, np.nan)
  needed = np.full(num_classes, np.nan)
  achieved = np.full(num_classes, np.nan)
  idx = np.flatnonzero(plannable)
  if idx.size:
    current[idx] = power_at(idx, *current_models)
    found, over = _smallest_sufficient_size(lambda which, n: power_at(idx[which], n, n), idx.size, power, max_models)
    needed[idx] = np.where(over, np.inf, found.astype(np.float64))
    achieved[idx] = np.where(over, np.nan, power_at(idx, found, found))

  notes = np.full(num_classes, "", dtype=object)
  notes[~plannable & (case != CASE_ABSENT) & (case != CASE_SINGLE_MODEL)] = NOTE_NO_VARIANCE
  notes[case == CASE_SINGLE_MODEL] = few_models_note
  notes[case == CASE_ABSENT] = NOTE_ABSENT
  notes[np.isinf(needed)] = NOTE_OVER_CAP

  per_class = pd.DataFrame(
      {
          **variance_columns,
          "effect": effect,
          "current_power": current,
          "models_needed": needed,
          "power_at_needed": achieved,
          "note": notes,
      },
      index=pd.RangeIndex(num_classes, name="class_id"),
  )
  return SampleSizePlan(per_class=per_class, summary=_plan_summary(needed, effect, alpha, power, current_models))


def _plan_summary(needed, effect, alpha, power, current_models):
  """The summary of a SampleSizePlan from the models needed per class (NaN: unplannable, inf: over the cap)."""
  planned = needed[~np.isnan(needed)]
  return {
      "effect_median": float(np.median(effect)),
      "alpha": alpha,
      "power": power,
      "current_models": current_models,
      "classes_planned": int(np.isfinite(planned).sum()),
      "classes_over_cap": int(np.isinf(planned).sum()),
      "classes_unplannable": int(np.isnan(needed).sum()),
      "median": float(np.quantile(planned, 0.5, method="inverted_cdf")) if planned.size else math.nan,
      "p90": float(np.quantile(planned, 0.9, method="inverted_cdf")) if planned.size else math.nan,
      "max": float(planned.max()) if planned.size else math.nan,
  }


# --------------------------------------------------------------------------------------------------
# Paired design: each compressed model against its own dense twin
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value to compare
class PairedResult(_ColumnTests):
  """Result of ``paired_test``: one two-sided one-sample t-test of the per-pair differences, per column.

  Every array has the shape [..., n_columns] of the tests (the samples' shape without the pairs axis).

  mean_difference: mean over the pairs of ``pruned - dense`` (negative: the pruned member is lower).
  var_difference: sample variance of the differences (ddof=1; 0 when they are all equal, NaN with fewer than 2
    pairs).
  n_pairs: number of pairs.
  t: the one-sample t of ``dense - pruned`` (``scipy.stats.ttest_1samp(dense - pruned, 0)``), the sign of the Welch
    t: t > 0 when the pruned member is lower.
  df: ``n_pairs - 1`` (NaN where the test is undefined or every difference is equal).
  p: two-sided p-value; NaN where the test is undefined.
  case: int8 ``CASE_*`` code; for pairs the constant cases mean "every difference is equal" (``PAIRED_CASE_NOTES``).
  """

  mean_difference: np.ndarray
  var_difference: np.ndarray
  n_pairs: int
  t: np.ndarray
  df: np.ndarray
  p: np.ndarray
  case: np.ndarray

  @property
  def note(self) -> np.ndarray:
    """Why a column has no regular test (``PAIRED_CASE_NOTES``), else an empty string."""
    notes = np.full(self.case.shape, "", dtype=object)
    for code, text in PAIRED_CASE_NOTES.items():
      if code != CASE_REGULAR:
        notes[self.case == code] = text
    return notes


NOTE_FEW_PAIRS = "fewer than 2 pairs of a model and its dense twin: no variance estimate, paired test undefined"
NOTE_NO_PAIRS = "no model of this population has its dense twin in the study: no paired test"
NOTE_PAIRED_ZERO = "every pair's difference is 0: no change (t=0, p=1, no interval)"
NOTE_PAIRED_CONSTANT = (
    "every pair's difference is the same non-zero value: t is infinite; p is the exact sign-flip p-value 2^(1 - pairs);"
    " no interval"
)
NOTE_PAIRED_UNTESTABLE = (
    "every pair's difference is the same non-zero value after subtracting each population's mean top-1: that "
    "normalization ignores the variance of the mean, so the test is undefined here (per_model normalization tests it)"
)
PAIRED_CASE_NOTES = {
    CASE_REGULAR: "",
    CASE_ABSENT: NOTE_ABSENT,
    CASE_SINGLE_MODEL: NOTE_FEW_PAIRS,
    CASE_CONSTANT_EQUAL: NOTE_PAIRED_ZERO,
    CASE_CONSTANT_SEPARATED: NOTE_PAIRED_CONSTANT,
    CASE_UNCHANGED: NOTE_UNCHANGED,
    CASE_CONSTANT_UNTESTABLE: NOTE_PAIRED_UNTESTABLE,
}


def _sign_flip_p(n_pairs: int) -> float:
  """Exact two-sided sign-flip p-value when every difference is the same non-zero value: of the 2^n sign patterns
  only the observed one and its mirror reach the observed |mean|, so p = 2 / 2^n."""
  return float(min(1.0, 2.0 ** (1 - n_pairs)))


def paired_test(dense, pruned, unchanged=None, exchangeable: bool = True) -> PairedResult:
  """Two-sided paired t-test along the pairs axis: row i of ``dense`` and row i of ``pruned`` are one pair.

  Per column, the differences ``d_i = dense_i - pruned_i`` get a one-sample t-test of mean 0, equal to
  ``scipy.stats.ttest_1samp(dense - pruned, 0, axis=-2)`` on every regular column (up to float rounding).  The pairs
  share what the two members of a pair have in common (in pie: the dense twin a compressed model starts from, its
  seed), so the test sees the change with that shared part removed.  Degenerate columns get defined results, never
  a 0/0: every difference 0 -> t = 0, p = 1; every difference the same non-zero value -> t = +-inf and the exact
  sign-flip p-value 2^(1 - n) (when ``exchangeable``: each value a function of its own model, so under the null a
  pair's difference is symmetric about 0), else not tested; a column NaN in every pair (an absent class), fewer than
  2 pairs, or a column marked ``unchanged`` -> not tested (NaN).

  Args:
    dense, pruned: float arrays [..., n_pairs, n_columns], aligned row by row (the same shape).
    unchanged: optional bool, broadcastable to [..., n_columns]: columns where nothing changed at all (raw recall
      the same number in every model of both sides); not tested, as in ``welch_test``.
    exchangeable: False under the "population" normalization (a population-level constant was subtracted).
  """
  dense, pruned = _check_samples(dense, pruned, "the dense sample", "the pruned sample")
  if dense.shape != pruned.shape:
    raise ValueError(
        f"a paired test needs one dense row per pruned row, got shapes {dense.shape} and {pruned.shape}: pass the "
        "dense twins in the order of their pruned models"
    )
  if unchanged is not None:
    unchanged = np.broadcast_to(np.asarray(unchanged, dtype=bool), dense.shape[:-2] + dense.shape[-1:])
  return _paired(dense, pruned, unchanged, bool(exchangeable))


def _paired(dense: np.ndarray, pruned: np.ndarray, unchanged=None, exchangeable: bool = True) -> PairedResult:
  """``paired_test`` on samples already checked."""
  n = dense.shape[-2]
  diff = pruned - dense
  absent = np.isnan(diff).all(axis=-2)
  with np.errstate(invalid="ignore", divide="ignore"):
    constant = diff.max(axis=-2) == diff.min(axis=-2)
    first = diff[..., 0, :]
    mean = np.where(constant, first, diff.mean(axis=-2))
    var = np.where(constant, 0.0, diff.var(axis=-2, ddof=1)) if n >= 2 else np.full(mean.shape, np.nan)
    t = (0.0 - mean) / np.sqrt(var / n)  # the t of dense - pruned (0.0 - : no negative zero)
    df = np.full(mean.shape, float(n - 1))
    p = 2.0 * stats.t.sf(np.abs(t), df)
  case = np.full(mean.shape, CASE_REGULAR, dtype=np.int8)
  if n < 2:
    case[...] = CASE_SINGLE_MODEL
  else:
    zero = constant & (mean == 0) & ~absent
    same = constant & (mean != 0) & ~absent
    case[zero] = CASE_CONSTANT_EQUAL
    case[same] = CASE_CONSTANT_SEPARATED if exchangeable else CASE_CONSTANT_UNTESTABLE
    t = np.where(zero, 0.0, np.where(same, np.copysign(np.inf, -mean), t))
    p = np.where(zero, 1.0, np.where(same, _sign_flip_p(n) if exchangeable else np.nan, p))
    df = np.where(constant, np.nan, df)
    if unchanged is not None:
      case[unchanged & ~absent] = CASE_UNCHANGED
  case[absent] = CASE_ABSENT
  undefined = np.isin(case, (CASE_ABSENT, CASE_SINGLE_MODEL, CASE_UNCHANGED, CASE_CONSTANT_UNTESTABLE))
  t = np.where(undefined, np.nan, t)
  df = np.where(undefined, np.nan, df)
  p = np.where(undefined, np.nan, np.clip(p, 0.0, 1.0))
  return PairedResult(mean, var, n, t, df, p, case)


def paired_confidence_interval(result: PairedResult, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """Confidence interval of the mean pair difference ``pruned - dense``: (low, high).

  ``mean ± t_{(1 + confidence)/2, n - 1} · sqrt(var / n)``, so at ``confidence = 1 - alpha`` it excludes 0 exactly
  when ``p < alpha``.  NaN for every column that is not ``CASE_REGULAR``.
  """
  confidence = _check_probability(confidence, "confidence")
  with np.errstate(invalid="ignore"):
    half = stats.t.ppf(0.5 + confidence / 2.0, result.df) * np.sqrt(result.var_difference / result.n_pairs)
  no_interval = result.case != CASE_REGULAR
  change = result.mean_difference
  return np.where(no_interval, np.nan, change - half), np.where(no_interval, np.nan, change + half)


# The columns `paired_class_tests` returns, in order (class_stats.csv's paired columns).
PAIRED_COLUMNS = (
    "paired_change",
    "paired_t_statistic",
    "paired_p_value",
    "paired_significant",
    "paired_q_value",
    "paired_significant_fdr",
    "paired_ci_low",
    "paired_ci_high",
    "num_pairs",
    "paired_note",
)


def paired_class_tests(
    dense_norm,
    pruned_norm,
    alpha: float = 0.05,
    confidence=None,
    unchanged=None,
    normalization: str = DEFAULT_NORMALIZATION,
) -> pd.DataFrame:
  """Per-class paired t-test of normalized recall: each compressed model against its own dense twin.

  Arguments are normalized recall matrices [n_pairs, n_classes] whose row i is the dense twin (``dense_norm``) and
  the compressed model (``pruned_norm``) of pair i; ``unchanged`` and ``normalization`` as in ``class_tests``.  With
  no pair at all (zero rows) every class is reported untested (``NOTE_NO_PAIRS``).  Returns one row per class (index
  ``class_id``) with the columns of ``PAIRED_COLUMNS``:

    paired_change                mean over the pairs of pruned - dense (negative: the class lost more than top-1)
    paired_t_statistic           one-sample t of dense - pruned (t > 0: the class is hurt), df = pairs - 1
    paired_p_value, paired_significant   two-sided p, and p < alpha
    paired_q_value, paired_significant_fdr   Benjamini-Hochberg over the classes with a defined p, q <= alpha
    paired_ci_low, paired_ci_high        t interval of paired_change at ``confidence`` (1 - alpha by default)
    num_pairs                    pairs tested
    paired_note                  empty for a regular test, else the degenerate case (``PAIRED_CASE_NOTES``)
  """
  alpha = _check_probability(alpha, "alpha")
  confidence = 1.0 - alpha if confidence is None else _check_probability(confidence, "confidence")
  normalization = _check_normalization(normalization)
  dense = np.asarray(dense_norm, dtype=np.float64)
  pruned = np.asarray(pruned_norm, dtype=np.float64)
  if dense.ndim != 2 or dense.shape != pruned.shape:
    raise ValueError(
        f"dense_norm and pruned_norm must both be [n_pairs, n_classes], got shapes {dense.shape} and {pruned.shape}"
    )
  num_classes = dense.shape[1]
  index = pd.RangeIndex(num_classes, name="class_id")
  if dense.shape[0] == 0:
    frame = pd.DataFrame({name: np.full(num_classes, np.nan) for name in PAIRED_COLUMNS}, index=index)
    frame["paired_significant"] = frame["paired_significant_fdr"] = False
    frame["num_pairs"] = 0
    frame["paired_note"] = NOTE_NO_PAIRS
    return frame
  dense, pruned = _check_recall_pair(dense, pruned)
  result = _paired(
      dense,
      pruned,
      None if unchanged is None else np.asarray(unchanged, dtype=bool),
      exchangeable=normalization == "per_model",
  )
  low, high = paired_confidence_interval(result, confidence)
  q = bh_q_values(result.p)
  return pd.DataFrame(
      {
          "paired_change": result.mean_difference,
          "paired_t_statistic": result.t,
          "paired_p_value": result.p,
          "paired_significant": result.significant(alpha),
          "paired_q_value": q,
          "paired_significant_fdr": bh_rejections(q, alpha),
          "paired_ci_low": low,
          "paired_ci_high": high,
          "num_pairs": result.n_pairs,
          "paired_note": result.note,
      },
      index=index,
  )


def paired_power(var_difference, n_pairs, effect, alpha: float = 0.05) -> np.ndarray:
  """Power of the two-sided paired t-test to detect a true mean difference ``effect``: a noncentral t with
  ``n - 1`` degrees of freedom and noncentrality ``|effect| / sqrt(var / n)``.  NaN where the variance is 0 or NaN."""
  alpha = _check_probability(alpha, "alpha")
  var = np.asarray(var_difference, dtype=np.float64)
  n = np.asarray(n_pairs, dtype=np.float64)
  if np.any(n < 2):
    raise ValueError("a paired test needs at least 2 pairs")
  effect = np.abs(np.asarray(effect, dtype=np.float64))
  with np.errstate(invalid="ignore", divide="ignore"):
    df = n - 1
    ncp = effect / np.sqrt(var / n)
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    power = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
  return np.where(var > 0, power, np.nan)


def pairs_needed(
    dense_norm, pruned_norm, effect, alpha: float = 0.05, power: float = 0.8, max_models: int = 100_000
) -> SampleSizePlan:
  """``models_needed`` for the paired design: pairs (a dense model and the compressed model made from it) needed to
  detect a normalized change of size ``effect`` with the paired t-test, from each class's observed variance of the
  pair differences (rows of the two matrices are the pairs).  The result has the fields of ``models_needed``'s;
  ``per_class`` holds ``difference_var`` in place of the two variances, and a pair costs one model per population.
  """
  dense, pruned, effect, alpha, power, max_models = _plan_inputs(
      dense_norm, pruned_norm, effect, alpha, power, max_models
  )
  result = _paired(dense, pruned)
  var = result.var_difference
  return _plan(
      lambda idx, n_pairs, _: paired_power(var[idx], n_pairs, effect[idx], alpha),  # a pair: one model of each
      (result.n_pairs,) * 2,
      result.case,
      var,
      {"difference_var": var},
      NOTE_FEW_PAIRS,
      effect,
      alpha,
      power,
      max_models,
  )


def pair_discordance(dense_predictions, pruned_predictions, labels, num_classes: int) -> np.ndarray:
  """Per pair and class, the examples one member gets right and the other wrong: int64 [n_pairs, num_classes, 2].

  Row i of both prediction matrices is pair i (a compressed model and its dense twin).  ``[..., 0]`` counts the
  examples the dense member gets right and the compressed one wrong (lost), ``[..., 1]`` the reverse (gained): the
  discordant cells of each class's 2x2 table, which are all McNemar's test needs.  They add up over disjoint blocks
  of examples.
  """
  num_classes = _check_num_classes(num_classes)
  dense = _check_predictions(dense_predictions, "dense_predictions", num_classes)
  pruned = _check_predictions(pruned_predictions, "pruned_predictions", num_classes)
  if dense.shape != pruned.shape:
    raise ValueError(f"pairs need one dense row per compressed row, got shapes {dense.shape} and {pruned.shape}")
  labels = _check_labels(labels, dense.shape[1], num_classes)
  dense_right = dense == labels[None, :]
  pruned_right = pruned == labels[None, :]
  return np.stack(
      [
          _class_hits(np.where(dense_right & ~pruned_right, labels[None, :], -1), labels, num_classes),
          _class_hits(np.where(pruned_right & ~dense_right, labels[None, :], -1), labels, num_classes),
      ],
      axis=-1,
  ).astype(np.int64)


def mcnemar_exact(lost, gained) -> np.ndarray:
  """Exact two-sided McNemar p-values (``scipy.stats.binomtest(lost, lost + gained, 0.5)``), vectorized.

  ``min(1, 2 · P(Bin(n, 1/2) <= min(lost, gained)))`` with ``n = lost + gained``: under the null a discordant example
  is equally likely to go either way.  NaN where there is no discordant example (nothing to test).
  """
  lost = np.asarray(lost, dtype=np.int64)
  gained = np.asarray(gained, dtype=np.int64)
  n = lost + gained
  with np.errstate(invalid="ignore"):
    p = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(lost, gained), n, 0.5))
  return np.where(n > 0, p, np.nan)


def single_pair_tests(discordance, class_count, alpha: float = 0.05) -> pd.DataFrame:
  """What one model pair alone says, for every pair: exact McNemar per class, Benjamini-Hochberg over the classes.

  ``discordance`` is ``pair_discordance`` [n_pairs, C, 2]; ``class_count`` the class sizes.  Returns one row per
  pair with: classes_flagged_fdr (classes whose McNemar q <= alpha, either direction), classes_hurt_fdr (of those,
  the ones the compressed model lost more examples on than it gained), largest_class_drop (the largest fall of a
  class's recall, dense minus compressed, a fraction), largest_class_drop_class (its class id), and
  largest_normalized_drop (the largest fall beyond the pair's fall in top-1).  A class of the eval split without a
  discordant example gets p = 1 and counts among the Benjamini-Hochberg family, as in ``pie.compare`` (nothing flipped:
  no evidence of a change); a pair without any has 0 classes flagged.
  """
  alpha = _check_probability(alpha, "alpha")
  counts = np.asarray(discordance, dtype=np.int64)
  class_count = np.asarray(class_count)
  if counts.ndim != 3 or counts.shape[-1] != 2 or counts.shape[1] != class_count.shape[0]:
    raise ValueError(
        f"discordance must be [n_pairs, num_classes, 2] with num_classes = {class_count.shape[0]}, got shape "
        f"{counts.shape}"
    )
  lost, gained = counts[..., 0], counts[..., 1]
  present = class_count > 0
  p = np.where(present, np.nan_to_num(mcnemar_exact(lost, gained), nan=1.0), np.nan)
  with np.errstate(invalid="ignore", divide="ignore"):
    drop = np.where(present, (lost - gained) / np.where(present, class_count, 1), np.nan)
  top1_drop = (lost - gained).sum(axis=1) / class_count.sum()
  rows = []
  for i in range(counts.shape[0]):
    flagged = bh_rejections(bh_q_values(p[i]), alpha)
    worst = int(np.nanargmax(drop[i])) if present.any() else -1
    rows.append(
        {
            "classes_flagged_fdr": int(flagged.sum()),
            "classes_hurt_fdr": int((flagged & (lost[i] > gained[i])).sum()),
            "largest_class_drop": float(drop[i, worst]) if worst >= 0 else math.nan,
            "largest_class_drop_class": worst,
            "largest_normalized_drop": float(np.nanmax(drop[i] - top1_drop[i])) if worst >= 0 else math.nan,
        }
    )
  return pd.DataFrame(rows, columns=list(SINGLE_PAIR_COLUMNS))


SINGLE_PAIR_COLUMNS = (
    "classes_flagged_fdr",
    "classes_hurt_fdr",
    "largest_class_drop",
    "largest_class_drop_class",
    "largest_normalized_drop",
)


# --------------------------------------------------------------------------------------------------
# Modal labels: one algorithm for every population, weighting and tie rule
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value to compare
class ModalVotes:
  """Result of ``modal_votes`` (and ``SortedVotes.votes``), one entry per example.

  labels: int64 modal label: the label with the most (weighted) votes, ties broken by ``tie_break``.
  count: int64 weighted votes of the modal label.
  share: float64 ``count`` over the total weight: the fraction of the population's votes for the modal label.
  tied: bool, another label had as many votes (the tie rule chose the modal label among them).
  tie_break: the rule used, one of ``TIE_BREAKS``.
  """

  labels: np.ndarray
  count: np.ndarray
  share: np.ndarray
  tied: np.ndarray
  tie_break: str


class SortedVotes:
  """A population's votes sorted per example, so that any weighting of its models is tallied fast.

  Each column (example) of the [n_models, n_examples] label matrix is sorted once; equal labels then
  form runs.  For a vector of model weights w (1 per model; resampling multiplicities; 0/1 for a split),
  a running sum of w that restarts at every run start, read at the run's last position, is that label's
  weighted vote count.  The sum walks the n_models sorted rows one at a time, so each step is a
  contiguous vector operation over the examples and memory stays O(n_models x n_examples), never
  O(n_examples x n_classes) (50 M cells for ImageNet).

  The modal label is the maximum of the key ``count * C + label_code``, taken as the sum runs: the code
  is ``C - 1 - label`` for ties toward the smallest label, ``label`` for ties toward the largest.
  Inside a run the running total only grows, so the maximum over all positions is the maximum over run
  ends.  Sort once, then call ``modal`` or ``votes`` for as many weightings as needed.

  Args:
    predictions: int [n_models, n_examples] top-1 labels in [0, num_classes).
    num_classes: the size of the label space; by default the largest label + 1 (enough for modal labels).
  """

  def __init__(self, predictions, num_classes=None):
    if num_classes is not None:
      num_classes = _check_num_classes(num_classes)
    predictions = _check_predictions(predictions, "predictions", num_classes)
    if num_classes is None:
      num_classes = int(predictions.max()) + 1
    n_models, n_examples = predictions.shape
    self.shape = (n_models, n_examples)
    self.num_classes = num_classes
    # The stable argsort of each column, as one sort of the keys label * n_models + model along contiguous rows of
    # the transpose (every key distinct, so any sort is stable): several times faster than argsort along axis 0.
    key_type = np.int32 if num_classes * n_models < np.iinfo(np.int32).max else np.int64
    keys = predictions.T.astype(key_type) * key_type(n_models) + np.arange(n_models, dtype=key_type)
    keys.sort(axis=1)
    self.order = np.ascontiguousarray((keys % n_models).T).astype(np.intp)
    sorted_labels = np.ascontiguousarray((keys // n_models).T)
    # same_run[j] = 1 when sorted position j continues the run of position j - 1.
    same_run = np.zeros((n_models, n_examples), dtype=np.int64)
    same_run[1:] = sorted_labels[1:] == sorted_labels[:-1]
    self.run_end = np.ones((n_models, n_examples), dtype=bool)
    self.run_end[:-1] = same_run[1:] == 0
    # int32 keys halve the memory traffic of the hot loop; they hold every key while the total weight is at most
    # n_models (unit weights, resamples, splits).  Larger total weights use int64 tables (``_tables``).
    self.key_dtype = np.int32 if (n_models + 1) * num_classes < np.iinfo(np.int32).max else np.int64
    self.same_run = same_run.astype(self.key_dtype)
    # The only copy of the sorted labels kept, as the key code of the smallest-id rule (the other rule's code and
    # sorted_labels are derived from it).  In the key dtype before subtracting: C - 1 may not fit the labels' own
    # dtype (uint8 labels, 1000 classes).
    self._smallest_code = num_classes - 1 - sorted_labels.astype(self.key_dtype)

  @property
  def sorted_labels(self) -> np.ndarray:
    """The labels in sorted order per example, int64 [n_models, n_examples] (run ends: ``run_end``)."""
    return (self.num_classes - 1 - self._smallest_code).astype(np.int64)

  def _tables(self, total_weight: int, tie_break: str):
    """(dtype, same_run, label code) of the keys for this total weight and tie rule."""
    same_run = self.same_run
    code = self._smallest_code if tie_break == "smallest" else self.num_classes - 1 - self._smallest_code
    if (total_weight + 1) * self.num_classes < np.iinfo(self.key_dtype).max:
      return self.key_dtype, same_run, code
    return np.int64, same_run.astype(np.int64), code.astype(np.int64)

  def _tally(self, weights, tie_break: str, keep_totals: bool):
    """The running sums: (best key [n_examples], running totals [n_models, n_examples] or None, total weight)."""
    tie_break = _check_tie_break(tie_break)
    if weights is None:
      weights = np.ones(self.shape[0], dtype=np.int64)
    else:
      weights = _check_weights(weights, self.shape[0])
    total_weight = int(weights.sum())
    dtype, same_run, code = self._tables(total_weight, tie_break)
    weights = weights.astype(dtype)
    num_classes = self.num_classes
    total = weights[self.order[0]]
    best = total * num_classes + code[0]
    key = np.empty_like(best)
    totals = np.empty(self.shape, dtype=dtype) if keep_totals else None
    if keep_totals:
      totals[0] = total
    for j in range(1, self.shape[0]):
      np.multiply(total, same_run[j], out=total)
      np.add(total, weights[self.order[j]], out=total)
      if keep_totals:
        totals[j] = total
      np.multiply(total, num_classes, out=key)
      np.add(key, code[j], out=key)
      np.maximum(best, key, out=best)
    return best, totals, total_weight

  def _labels(self, best: np.ndarray, tie_break: str) -> np.ndarray:
    code = best % self.num_classes
    return (self.num_classes - 1 - code if tie_break == "smallest" else code).astype(np.int64)

  def modal(self, weights=None, tie_break: str = "smallest") -> np.ndarray:
    """Modal label per example, int64 [n_examples], for non-negative integer model weights (default: 1 each)."""
    best, _, _ = self._tally(weights, tie_break, keep_totals=False)
    return self._labels(best, tie_break)

  def votes(self, weights=None, tie_break: str = "smallest") -> ModalVotes:
    """Modal label, its votes, its share and the tie mask per example (``ModalVotes``)."""
    best, totals, total_weight = self._tally(weights, tie_break, keep_totals=True)
    count = best // self.num_classes
    tied = np.count_nonzero((totals == count) & self.run_end, axis=0) > 1
    return ModalVotes(
        labels=self._labels(best, tie_break),
        count=count.astype(np.int64),
        share=count / total_weight,
        tied=tied,
        tie_break=tie_break,
    )

  def _runs(self):
    """The runs as a matrix product: (membership float32 [n_models, n_runs], label code of each run [n_runs],
    first run of each example [n_examples]), runs ordered by example. Built once, on first use."""
    if getattr(self, "_run_table", None) is None:
      n_models, n_examples = self.shape
      run_start = np.ones(self.shape, dtype=bool)
      run_start[1:] = self.same_run[1:] == 0
      runs_per_example = run_start.sum(axis=0)
      first_run = np.zeros(n_examples, dtype=np.int64)
      np.cumsum(runs_per_example[:-1], out=first_run[1:])
      run_id = np.cumsum(run_start, axis=0) - 1 + first_run  # [n_models, n_examples]: the run of each sorted vote
      membership = np.zeros((n_models, int(runs_per_example.sum())), dtype=np.float32)
      membership[self.order, run_id] = 1.0
      code = np.empty(membership.shape[1], dtype=np.int64)
      code[run_id[run_start]] = self._smallest_code[run_start]
      self._run_table = (membership, code, first_run)
    return self._run_table

  def _leaders(self):
    """Each example's two largest runs and the size of its third: (membership of the largest [n_examples, n_models],
    of the second (zeros for an example with one run), their label codes (-1 for none), the third run's size (0 for
    none)). Built once, on first use."""
    if getattr(self, "_leader_table", None) is None:
      n_models, n_examples = self.shape
      run_start = np.ones(self.shape, dtype=bool)
      run_start[1:] = self.same_run[1:] == 0
      local_run = np.cumsum(run_start, axis=0) - 1  # each sorted vote's run, numbered within its example
      columns = np.arange(n_examples)
      flat = np.bincount((local_run * n_examples + columns).ravel(), minlength=n_models * n_examples)
      sizes = flat.reshape(n_models, n_examples)  # [run number, example]
      codes = np.full((n_models, n_examples), -1, dtype=np.int64)
      codes[local_run[run_start], np.nonzero(run_start)[1]] = self._smallest_code[run_start]
      model_run = np.empty_like(local_run)
      np.put_along_axis(model_run, self.order, local_run, axis=0)  # each model's run
      leaders = []
      for _ in range(3):  # the three largest runs, by turns
        run = np.argmax(sizes, axis=0)
        leaders.append((run, sizes[run, columns].copy()))
        sizes[run, columns] = 0
      (first, _), (second, second_size), (_, third_size) = leaders
      self._leader_table = (
          (model_run == first).T.astype(np.float32),
          ((model_run == second) & (second_size > 0)).T.astype(np.float32),
          codes[first, columns],
          np.where(second_size > 0, codes[second, columns], -1),
          third_size,
      )
    return self._leader_table

  def _columns(self, columns) -> "SortedVotes":
    """The same votes restricted to some examples (no re-sorting)."""
    sub = object.__new__(SortedVotes)
    sub.shape = (self.shape[0], len(columns))
    sub.num_classes, sub.key_dtype = self.num_classes, self.key_dtype
    sub.order, sub.run_end = self.order[:, columns], self.run_end[:, columns]
    sub.same_run, sub._smallest_code = self.same_run[:, columns], self._smallest_code[:, columns]
    return sub

  def _all_run_codes(self, scaled, tie_break, dtype):
    """Modal codes [n_examples, rows] of some weightings (``scaled``: float [n_models, rows], the weights times C),
    every run of every example tallied."""
    membership, smallest_code, first_run = self._runs()
    run_code = smallest_code if tie_break == "smallest" else self.num_classes - 1 - smallest_code
    keys = np.ascontiguousarray(membership.T, dtype=dtype) @ scaled
    keys += run_code.astype(dtype)[:, None]
    best = np.maximum.reduceat(keys, first_run, axis=0) if len(first_run) else keys[:0]
    return (best.astype(np.int64) % self.num_classes).astype(dtype)

  def _code_blocks(self, weights, tie_break, block: int = 512):
    """The modal label codes of many weightings, by blocks of examples: yields float [block, n_weightings] (exact
    integers: C - 1 - label for ties toward the smallest label, label for the largest) for consecutive blocks of
    ``block`` examples. See ``modal_many``."""
    tie_break = _check_tie_break(tie_break)
    weights = _check_weight_rows(weights, self.shape[0])
    first, second, code_first, code_second, third_size = self._leaders()
    if tie_break != "smallest":
      flip = self.num_classes - 1
      code_first, code_second = flip - code_first, np.where(code_second >= 0, flip - code_second, -1)
    num_classes = self.num_classes
    # float32 holds every key exactly while it is below 2**24; larger totals use float64.
    most = (int(weights.sum(axis=1).max(initial=0)) + 1) * num_classes
    dtype = np.float32 if most < 2**24 else np.float64
    # [examples, models + 1] x [models + 1, weightings]: the weights times C, then a row of ones that adds each run's
    # label code, so that one product gives every key votes * C + code.
    scaled = np.ones((self.shape[0] + 1, len(weights)), dtype=dtype)
    scaled[:-1] = weights.T * num_classes
    first = np.concatenate([first, code_first[:, None]], axis=1).astype(dtype)
    second = np.concatenate([second, code_second[:, None]], axis=1).astype(dtype)
    # top_sums[w, s]: the sum of weighting w's s largest weights, the most votes a run of s models can get.
    top_sums = np.zeros((len(weights), self.shape[0] + 1), dtype=np.int64)
    np.cumsum(-np.sort(-weights, axis=1), axis=1, out=top_sums[:, 1:])
    largest = int(top_sums[:, 1].max(initial=0))
    for start in range(0, self.shape[1], block):
      stop = min(start + block, self.shape[1])
      key_first, key_second = first[start:stop] @ scaled, second[start:stop] @ scaled
      codes = np.where(key_second > key_first, second[start:stop, -1:], first[start:stop, -1:])
      np.maximum(key_first, key_second, out=key_first)
      # A smaller run cannot reach the leader's votes when the leader's key reaches (bound + 1) * C + C - 1, the bound
      # being the third run's size times the largest weight of all weightings, then per weighting the sum of its s
      # largest weights; where even that does not exclude a smaller run, every run of the example is tallied.
      weakest = key_first.min(axis=1)
      check = np.flatnonzero(weakest < (third_size[start:stop] * largest + 2) * num_classes - 1)
      if check.size:
        bound = top_sums[:, third_size[start + check]].T
        uncertain = check[((bound + 2) * num_classes - 1 > key_first[check]).any(axis=1)]
        if uncertain.size:
          codes[uncertain] = self._columns(start + uncertain)._all_run_codes(scaled[:-1], tie_break, dtype)
      yield codes

  def modal_many(self, weights, tie_break: str = "smallest") -> np.ndarray:
    """Modal labels of many weightings of the models at once, int64 [n_weightings, n_examples]: row i is
    ``modal(weights[i], tie_break)``, for ``weights`` int [n_weightings, n_models] (non-negative, one positive per
    row).

    Computed as matrix products over blocks of examples: each example's two largest runs (the labels most models
    voted for) get their weighted votes * C + label code from one product, and the larger key is the modal one
    unless a smaller run could reach as many votes (a run of s models gets at most the weighting's s largest weights
    summed); only those examples are tallied over all their runs.
    """
    with _one_blas_thread():
      blocks = list(self._code_blocks(weights, tie_break))
    if not blocks:
      return np.zeros((len(weights), 0), dtype=np.int64)
    codes = np.concatenate(blocks, axis=0).T.astype(np.int64)
    return self.num_classes - 1 - codes if tie_break == "smallest" else codes

  def _run_sums(self, weights):
    """Yields (j, the signed int64 running total at sorted position j), row by row, in O(n_examples) memory."""
    weights = (
        np.ones(self.shape[0], dtype=np.int64)
        if weights is None
        else _check_weights(weights, self.shape[0], signed=True)
    )
    total = np.zeros(self.shape[1], dtype=np.int64)
    for j in range(self.shape[0]):
      total = total * self.same_run[j] + weights[self.order[j]]
      yield j, total

  def run_totals(self, weights=None) -> np.ndarray:
    """Weighted votes of each run, int64 [n_models, n_examples]: at a run's last sorted position, the summed
    weight of the models voting for its label (``sorted_labels``); 0 elsewhere.  Weights may be negative
    (signed sums compare two populations stacked in one table)."""
    out = np.zeros(self.shape, dtype=np.int64)
    for j, total in self._run_sums(weights):
      out[j] = np.where(self.run_end[j], total, 0)
    return out

  def abs_run_totals(self, weights) -> np.ndarray:
    """Sum over runs of |weighted run total| per example, int64 [n_examples], for signed integer weights."""
    result = np.zeros(self.shape[1], dtype=np.int64)
    for j, total in self._run_sums(weights):
      result += np.where(self.run_end[j], np.abs(total), 0)
    return result


class _ContentCache:
  """The last few values computed from some arrays, found again by the arrays' content (compared, not hashed: no
  collision can return another population's value). Locked: Beam's DirectRunner may call from several threads."""

  def __init__(self, size: int):
    self.size, self.entries, self.lock = size, [], threading.Lock()

  def get(self, extra, arrays):
    with self.lock:
      for i, (key, stored, value) in enumerate(self.entries):
        if key == extra and all(
            a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(stored, arrays)
        ):
          self.entries.append(self.entries.pop(i))
          return value
    return None

  def put(self, extra, arrays, value):
    with self.lock:
      self.entries.append((extra, tuple(np.array(a, copy=True) for a in arrays), value))
      del self.entries[: -self.size]


# The last populations sorted by ``shared_votes``: the analysis asks for the modal labels of the dense population under
# both tie rules, for its difficulty and against every level, and for each level's several times. Three entries of a
# few [n_models, n_examples] arrays each.
_SHARED_VOTES = _ContentCache(3)


def shared_votes(predictions, num_classes=None) -> SortedVotes:
  """``SortedVotes(predictions, num_classes)``, the same object for the same predictions (by content) while it is
  among the last three asked for: sorting is most of the cost of a population's modal labels."""
  predictions = np.ascontiguousarray(predictions)
  if predictions.ndim != 2 or predictions.dtype.kind not in "iu":
    return SortedVotes(predictions, num_classes)  # which refuses them with the reason
  if num_classes is not None:
    num_classes = _check_num_classes(num_classes)
  votes = _SHARED_VOTES.get(num_classes, (predictions,))
  if votes is None:
    votes = SortedVotes(predictions, num_classes)
    _SHARED_VOTES.put(num_classes, (predictions,), votes)
  return votes


def modal_votes(predictions, num_classes=None, weights=None, tie_break: str = "smallest") -> ModalVotes:
  """Modal label of every example over a population's (weighted) models, with its share and the tie mask.

  Args:
    predictions: int [n_models, n_examples] top-1 labels.
    num_classes: size of the label space (default: the largest label + 1).
    weights: optional non-negative integer vote weight per model [n_models] (e.g. multiplicities in a bootstrap
      resample); 1 each by default.
    tie_break: "smallest" (pie's rule) or "largest" (the authors' code): which of the labels tied for the most
      votes is modal.

  Returns:
    ``ModalVotes``.  ``pie.stats.modal_labels`` is this with unit weights.  To tally many weightings of one
    population, sort it once with ``SortedVotes``.
  """
  return shared_votes(predictions, num_classes).votes(weights, tie_break)


def _one_blas_thread():
  """BLAS on one thread while many small products run (the modal kernels): a thread pool synchronising on products
  of a fraction of a millisecond cost several times the work on a busy machine, and the analysis reads with threads
  of its own."""
  import threadpoolctl  # pylint: disable=g-import-not-at-top  (loaded only where the kernels run)

  return threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def resample_weights(rows, n_models: int) -> np.ndarray:
  """Each resample's multiplicity of every model, int64 [num_resamples, n_models], from its drawn model indices
  [num_resamples, draws] (``np.bincount(rows[b], minlength=n_models)`` for every b)."""
  rows = np.asarray(rows, dtype=np.int64)
  flat = (rows + n_models * np.arange(len(rows))[:, None]).ravel()
  return np.bincount(flat, minlength=len(rows) * n_models).reshape(len(rows), n_models)


def modal_disagreements(votes_a, weights_a, votes_b, weights_b, tie_break: str = "smallest"):
  """Where the modal labels of two weighted populations differ, for many pairs of weightings at once.

  ``votes_a`` and ``votes_b`` are ``SortedVotes`` of the same examples (two populations, or one pool twice);
  ``weights_a`` and ``weights_b`` are int [n_pairs, n_models] of each (resampling multiplicities, 0/1 memberships
  of A/A splits or permutations). Row i of both is one comparison: population A weighted by ``weights_a[i]`` against
  B weighted by ``weights_b[i]``.

  Returns (per_pair int64 [n_pairs]: the examples whose modal labels differ in each comparison, i.e. its PIEs;
  per_example int64 [n_examples]: in how many comparisons each example's modal labels differ). Computed by blocks
  of examples as ``SortedVotes.modal_many`` computes the labels: memory grows with n_pairs x the block, not with
  n_pairs x n_examples.
  """
  weights_a, weights_b = np.asarray(weights_a), np.asarray(weights_b)
  if len(weights_a) != len(weights_b):
    raise ValueError(f"weights_a and weights_b must have as many rows, got {len(weights_a)} and {len(weights_b)}")
  if votes_a.shape[1] != votes_b.shape[1]:
    raise ValueError(f"the populations must vote on the same examples, got {votes_a.shape[1]} and {votes_b.shape[1]}")
  per_pair = np.zeros(len(weights_a), dtype=np.int64)
  per_example = []
  blocks = zip(votes_a._code_blocks(weights_a, tie_break), votes_b._code_blocks(weights_b, tie_break))
  with _one_blas_thread():
    for codes_a, codes_b in blocks:  # [block of examples, n_pairs] each
      differ = codes_a != codes_b
      per_pair += np.count_nonzero(differ, axis=0)
      per_example.append(np.count_nonzero(differ, axis=1))
  per_example = np.concatenate(per_example).astype(np.int64) if per_example else np.zeros(0, dtype=np.int64)
  return per_pair, per_example


# --------------------------------------------------------------------------------------------------
# Bootstrap stability
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
  """Result of ``bootstrap_stability``.

  pie_stability: [n_examples] fraction of resamples in which the example is a PIE.
  class_significance: [n_classes] fraction of resamples in which the class test is significant
    (uncorrected, p < alpha); NaN where the test is undefined (absent class, < 2 models).
  observed_pie: [n_examples] PIE flags of the full populations.
  observed_significant: [n_classes] uncorrected significance of the full populations.
  dense_resamples, pruned_resamples: [num_resamples, n_models] model indices drawn for each
    resample, kept so any resample can be recomputed.
  pie_counts: [num_resamples] the number of PIEs in each resample.
  """

  pie_stability: np.ndarray
  class_significance: np.ndarray
  observed_pie: np.ndarray
  observed_significant: np.ndarray
  dense_resamples: np.ndarray
  pruned_resamples: np.ndarray
  num_resamples: int
  seed: int
  alpha: float
  normalization: str
  pie_counts: np.ndarray | None = None  # [num_resamples] PIEs in each resample


def _resampled_normalized(recall: np.ndarray, top1: np.ndarray, rows: np.ndarray, normalization: str):
  """Normalized recall of resampled populations, [n_resamples, n_models, n_classes]."""
  values = recall[rows]
  if normalization == "population":
    return values - top1[rows].mean(axis=1)[:, None, None]
  return values - top1[rows][:, :, None]


def bootstrap_resamples(n_dense: int, n_pruned: int, num_resamples: int, seed: int = 0):
  """The model indices of every resample: ([num_resamples, n_dense], [num_resamples, n_pruned]).

  Drawn as ``bootstrap_stability`` draws them (``np.random.default_rng(seed)``, dense first), so a
  caller that splits the work (``pie.beam_analysis``) resamples exactly the same models.
  """
  rng = np.random.default_rng(seed)
  dense_rows = rng.integers(0, n_dense, size=(num_resamples, n_dense))
  pruned_rows = rng.integers(0, n_pruned, size=(num_resamples, n_pruned))
  return dense_rows, pruned_rows


def bootstrap_class_stability(
    dense_hits,
    pruned_hits,
    class_count,
    dense_rows,
    pruned_rows,
    alpha: float = 0.05,
    normalization: str = DEFAULT_NORMALIZATION,
    chunk_size: int = 25,
):
  """The class part of ``bootstrap_stability`` from ``class_hits`` of both populations and the class sizes.

  Returns (class_significance [n_classes], observed_significant [n_classes]): the replicability of
  ``p < alpha`` when the models are resampled, and the observed ``p < alpha``.
  """
  recall_d, top1_d = _recall_from_hits(np.asarray(dense_hits), np.asarray(class_count))
  recall_p, top1_p = _recall_from_hits(np.asarray(pruned_hits), np.asarray(class_count))
  exchangeable = normalization == "per_model"
  observed = _welch(
      _normalize(recall_d, top1_d, normalization),
      _normalize(recall_p, top1_p, normalization),
      unchanged=unchanged_classes(recall_d, recall_p),
      exchangeable=exchangeable,
  )
  observed_significant = observed.significant(alpha)
  num_resamples = len(dense_rows)
  hits = np.zeros(recall_d.shape[1], dtype=np.int64)
  for start in range(0, num_resamples, chunk_size):
    stop = min(start + chunk_size, num_resamples)
    rows_d, rows_p = dense_rows[start:stop], pruned_rows[start:stop]
    res = _welch(
        _resampled_normalized(recall_d, top1_d, rows_d, normalization),
        _resampled_normalized(recall_p, top1_p, rows_p, normalization),
        unchanged=unchanged_classes(recall_d[rows_d], recall_p[rows_p]),
        exchangeable=exchangeable,
        below=alpha,
    )
    hits += res.significant(alpha).sum(axis=0)
  return np.where(observed.tested, hits / num_resamples, np.nan), observed_significant


# The last two populations' resampled modal codes: the analysis resamples the dense population alike for every
# compared level (same seed, same size), so its codes are computed once. Found by the predictions and the resampled
# rows; two entries of [n_examples, num_resamples] codes (uint16 for up to 65,536 classes).
_RESAMPLED_CODES = _ContentCache(2)


def _resampled_codes(preds: np.ndarray, rows: np.ndarray, num_classes: int):
  """(The modal label code ``C - 1 - label`` of every example in every resample [n_examples, num_resamples], the
  population's own modal codes [n_examples]), ``SortedVotes.modal`` with each resample's multiplicities as weights."""
  preds = np.ascontiguousarray(preds)
  rows = np.ascontiguousarray(rows, dtype=np.int64)
  cached = _RESAMPLED_CODES.get(int(num_classes), (preds, rows))
  if cached is not None:
    return cached
  n_models, n_examples = preds.shape
  dtype = np.uint16 if num_classes <= 2**16 else np.int64
  observed = (num_classes - 1 - preds[0].astype(np.int64)).astype(dtype)  # exact where the population is unanimous
  codes = np.repeat(observed[:, None], len(rows), axis=1)
  contested = np.flatnonzero(~(preds == preds[0]).all(axis=0)) if n_models else np.zeros(0, dtype=np.int64)
  if contested.size:
    votes = SortedVotes(preds[:, contested], num_classes)
    observed[contested] = num_classes - 1 - votes.modal()
    if len(rows):
      with _one_blas_thread():
        codes[contested] = np.concatenate(list(votes._code_blocks(resample_weights(rows, n_models), "smallest")))
  _RESAMPLED_CODES.put(int(num_classes), (preds, rows), (codes, observed))
  return codes, observed


def bootstrap_pie_stability(
    dense_preds, pruned_preds, num_classes: int, dense_rows, pruned_rows, return_counts: bool = False
):
  """The PIE part of ``bootstrap_stability``: (pie_stability [n_examples], observed_pie [n_examples]).

  With ``return_counts``, also the number of PIEs in every resample, int64 [num_resamples].  Each
  example's result depends on its own column of predictions only, so the examples may be split into
  blocks, the blocks' per-example results concatenated and their counts added.

  Each population's modal labels in all resamples come from ``SortedVotes.modal_many``'s kernel (matrix products
  over the examples where its models disagree); those of a population resampled as in the previous call (the dense
  one, from one level to the next) are reused.
  """
  dense_codes, dense_observed = _resampled_codes(np.asarray(dense_preds), dense_rows, num_classes)
  pruned_codes, pruned_observed = _resampled_codes(np.asarray(pruned_preds), pruned_rows, num_classes)
  observed_pie = dense_observed != pruned_observed
  differ = dense_codes != pruned_codes  # [n_examples, num_resamples]
  pie_stability = np.count_nonzero(differ, axis=1) / len(dense_rows)
  counts = np.count_nonzero(differ, axis=0).astype(np.int64)
  if return_counts:
    return pie_stability, observed_pie, counts
  return pie_stability, observed_pie


def bootstrap_stability(
    dense_preds,
    pruned_preds,
    labels,
    num_classes: int,
    num_resamples: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    normalization: str = DEFAULT_NORMALIZATION,
    chunk_size: int = 25,
) -> BootstrapResult:
  """How stable are PIEs and significant classes when the populations are resampled?

  Each of ``num_resamples`` resamples draws, independently for both populations, as many models
  as the population has, uniformly with replacement (``np.random.default_rng(seed)``).  For every
  resample the modal labels are recomputed with the models' multiplicities as vote weights, and
  the per-class Welch tests are recomputed on the resampled normalized recall (normalized by the
  resample's own mean top-1 under "population").  ``class_significance`` is the replicability of
  ``p < alpha`` under resampling of the models, not a probability that the class is truly affected:
  under the null a falsely significant class replicates in most resamples (docs/statistics.md measures it).

  Cost: recall matrices are computed once; each resample's tests are array indexing plus one
  vectorized Welch test over [chunk, n_models, n_classes]; its modal labels are a cumulative sum
  over each population's pre-sorted [n_models, n_examples] label matrix restricted to the examples
  where some model disagrees (unanimous examples have a fixed outcome).
  """
  num_classes = _check_num_classes(num_classes)
  dense_preds = _check_predictions(dense_preds, "dense_preds", num_classes)
  pruned_preds = _check_predictions(pruned_preds, "pruned_preds", num_classes)
  _check_same_examples(dense_preds, pruned_preds, "dense_preds", "pruned_preds")
  labels = _check_labels(labels, dense_preds.shape[1], num_classes)
  num_resamples = _check_int(num_resamples, "num_resamples", 1)
  chunk_size = _check_int(chunk_size, "chunk_size", 1)
  alpha = _check_probability(alpha, "alpha")
  normalization = _check_normalization(normalization)

  dense_rows, pruned_rows = bootstrap_resamples(dense_preds.shape[0], pruned_preds.shape[0], num_resamples, seed)
  class_count = np.bincount(labels, minlength=num_classes)
  class_significance, observed_significant = bootstrap_class_stability(
      _class_hits(dense_preds, labels, num_classes),
      _class_hits(pruned_preds, labels, num_classes),
      class_count,
      dense_rows,
      pruned_rows,
      alpha=alpha,
      normalization=normalization,
      chunk_size=chunk_size,
  )
  pie_stability, observed_pie, pie_counts = bootstrap_pie_stability(
      dense_preds, pruned_preds, num_classes, dense_rows, pruned_rows, return_counts=True
  )
  return BootstrapResult(
      pie_stability=pie_stability,
      class_significance=class_significance,
      observed_pie=observed_pie,
      observed_significant=observed_significant,
      dense_resamples=dense_rows,
      pruned_resamples=pruned_rows,
      num_resamples=int(num_resamples),
      seed=seed,
      alpha=alpha,
      normalization=normalization,
      pie_counts=pie_counts,
  )


# --------------------------------------------------------------------------------------------------
# Noise floor: A/A comparisons between random halves of a pool of dense models
# --------------------------------------------------------------------------------------------------


def half_splits(pool_size: int, n_first: int, n_second: int, num_splits: int, seed=0):
  """Random disjoint pairs of populations drawn from one pool of models, without replacement.

  Returns (first_rows [num_splits, n_first], second_rows [num_splits, n_second]), row indices into
  the pool (``np.random.default_rng(seed)``, one permutation per split; ``seed`` an int or a sequence
  of ints).  When the pool's models are exchangeable (dense models trained alike), every pair is an A/A
  comparison: whatever differs between its two populations is seed noise.
  """
  for name, value, minimum in (("n_first", n_first, 2), ("n_second", n_second, 2), ("num_splits", num_splits, 1)):
    _check_int(value, name, minimum)
  if n_first + n_second > pool_size:
    raise ValueError(f"a pool of {pool_size} models cannot be split into {n_first} + {n_second}")
  rng = np.random.default_rng(seed)
  order = np.stack([rng.permutation(pool_size) for _ in range(num_splits)])
  return order[:, :n_first], order[:, n_first : n_first + n_second]


def _split_weight_rows(rows: np.ndarray, pool_size: int) -> np.ndarray:
  """0/1 weights [num_splits, pool_size]: 1 for the pool's models in each split's population."""
  rows = np.asarray(rows)
  weights = np.zeros((len(rows), pool_size), dtype=np.int64)
  np.put_along_axis(weights, rows, 1, axis=1)
  return weights


def split_pie_counts(pool_predictions, first_rows, second_rows, num_classes: int) -> np.ndarray:
  """PIEs between the two populations of every split, int64 [num_splits].

  ``pool_predictions`` is int [pool_size, n_examples].  Each example counts on its own, so blocks of
  examples may be counted apart and the counts added.  Examples on which the whole pool agrees cannot
  be PIEs and are skipped.
  """
  num_classes = _check_num_classes(num_classes)
  pool = _check_predictions(pool_predictions, "pool_predictions", num_classes)
  first_rows, second_rows = np.asarray(first_rows), np.asarray(second_rows)
  counts = np.zeros(len(first_rows), dtype=np.int64)
  contested = np.flatnonzero(~(pool == pool[0]).all(axis=0))
  if contested.size and len(first_rows):
    votes = SortedVotes(pool[:, contested], num_classes)
    counts, _ = modal_disagreements(
        votes, _split_weight_rows(first_rows, len(pool)), votes, _split_weight_rows(second_rows, len(pool))
    )
  return counts


def split_class_tests(
    pool_hits,
    class_count,
    first_rows,
    second_rows,
    alpha: float = 0.05,
    normalization: str = DEFAULT_NORMALIZATION,
    chunk_size: int = 25,
) -> dict:
  """The class tests of every split, summarized per split.

  Returns {"num_tested", "num_significant" (p < alpha), "num_significant_fdr" (BH q <= alpha)}, each
  int64 [num_splits].  ``pool_hits`` is ``class_hits`` of the pool [pool_size, n_classes].
  """
  alpha = _check_probability(alpha, "alpha")
  normalization = _check_normalization(normalization)
  recall, top1 = _recall_from_hits(np.asarray(pool_hits), np.asarray(class_count))
  first_rows, second_rows = np.asarray(first_rows), np.asarray(second_rows)
  out = {k: np.zeros(len(first_rows), dtype=np.int64) for k in ("num_tested", "num_significant", "num_significant_fdr")}
  for start in range(0, len(first_rows), chunk_size):
    rows_a, rows_b = first_rows[start : start + chunk_size], second_rows[start : start + chunk_size]
    res = _welch(
        _resampled_normalized(recall, top1, rows_a, normalization),
        _resampled_normalized(recall, top1, rows_b, normalization),
        unchanged=unchanged_classes(recall[rows_a], recall[rows_b]),
        exchangeable=normalization == "per_model",
        below=alpha,  # the counts below need which p-values are below alpha, and BH at alpha: the same decisions
    )
    tested, significant = res.tested, res.significant(alpha)
    for i, p in enumerate(res.p):
      out["num_tested"][start + i] = np.count_nonzero(tested[i])
      out["num_significant"][start + i] = np.count_nonzero(significant[i])
      out["num_significant_fdr"][start + i] = np.count_nonzero(bh_rejections(bh_q_values(p), alpha))
  return out


def aa_calibration(
    pool_hits,
    class_count,
    n_first: int,
    n_second: int,
    num_splits: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    normalizations=NORMALIZATIONS,
    confidence: float = 0.95,
) -> pd.DataFrame:
  """Calibration of the class test on models where nothing differs (an A/A comparison), per normalization.

  The pool (``class_hits`` of models trained alike, e.g. a dense population and its replicate) is split
  ``num_splits`` times into two populations of ``n_first`` and ``n_second`` models; every class is tested
  in every split.  A calibrated test flags a fraction ``alpha`` of the tests at p < alpha, and BH flags at
  least one class in at most a fraction ``alpha`` of the splits (the family-wise error under the complete
  null).  Returns one row per normalization with the observed rates and Clopper-Pearson intervals at
  ``confidence``.  The splits reuse the same models, so the tests are not independent: the binomial
  intervals are a guide, narrower than the truth.
  """
  first, second = half_splits(int(np.shape(pool_hits)[0]), n_first, n_second, num_splits, seed)
  rows = []
  for normalization in normalizations:
    out = split_class_tests(pool_hits, class_count, first, second, alpha=alpha, normalization=normalization)
    tested, flagged = int(out["num_tested"].sum()), int(out["num_significant"].sum())
    with_discovery = int(np.count_nonzero(out["num_significant_fdr"]))
    rate_ci = stats.binomtest(flagged, tested).proportion_ci(confidence) if tested else None
    fwer_ci = stats.binomtest(with_discovery, num_splits).proportion_ci(confidence)
    rows.append(
        {
            "normalization": normalization,
            "pool_models": int(np.shape(pool_hits)[0]),
            "n_first": n_first,
            "n_second": n_second,
            "num_splits": num_splits,
            "alpha": alpha,
            "num_tests": tested,
            "rate_significant": flagged / tested if tested else math.nan,
            "rate_ci_low": rate_ci.low if rate_ci else math.nan,
            "rate_ci_high": rate_ci.high if rate_ci else math.nan,
            "splits_with_fdr_discovery": with_discovery / num_splits,
            "fdr_splits_ci_low": fwer_ci.low,
            "fdr_splits_ci_high": fwer_ci.high,
            "rate_consistent_with_alpha": bool(rate_ci and rate_ci.low <= alpha <= rate_ci.high),
            "fdr_splits_at_most_alpha": bool(fwer_ci.low <= alpha),
        }
    )
  return pd.DataFrame(rows)


def pies_against_floor(
    observed: int, floor_mean=None, level_counts=None, control_counts=None, alpha: float = 0.05
) -> dict:
  """A compressed population's PIEs set against seed noise.

  observed: PIEs of the compressed population against the dense one.
  floor_mean: the expected PIEs of two dense populations of these sizes (the mean of the A/A splits of the dense and
    replicate models), or None; ``excess = observed - floor_mean``.
  level_counts, control_counts: PIEs of the compressed population and of a control against the dense one in the same
    bootstrap resamples (the same dense resample for both: ``bootstrap_pie_stability`` with ``return_counts``).
  The interval is ``excess`` plus the alpha/2 and 1 - alpha/2 quantiles of the centred differences (``level -
  control`` minus its mean): the spread of the excess when the models are redrawn, with the dense population's own
  luck shared by both terms. ``distinguishable`` is ``ci_low > 0``. On real models where nothing differs it was true
  in 1 of 150 draws (10/10/10, docs/statistics.md): conservative, and with little power at unequal sizes
  (``pies_excess_test`` is the test against the matched control). All None without a floor, a control or resamples.

  (A permutation test that pools the dense and compressed models was tried and dropped: when the two populations
  disagree strongly on some examples, random mixtures of them disagree on those examples too, so the test loses its
  power exactly where the effect is largest.)
  """
  alpha = _check_probability(alpha, "alpha")
  out = {"excess": None, "ci_low": None, "ci_high": None, "distinguishable": None}
  if floor_mean is None:
    return out
  out["excess"] = float(observed) - float(floor_mean)
  if level_counts is not None and control_counts is not None and len(level_counts):
    diff = np.asarray(level_counts, dtype=np.float64) - np.asarray(control_counts, dtype=np.float64)
    low, high = np.quantile(diff - diff.mean(), [alpha / 2, 1 - alpha / 2])
    out.update(ci_low=out["excess"] + float(low), ci_high=out["excess"] + float(high))
    out["distinguishable"] = bool(out["ci_low"] > 0)
  return out


# --------------------------------------------------------------------------------------------------
# PIE excess: a conditional permutation test of a level against its matched control
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExchangePlan:
  """The arrangements of ``pies_excess_test``: which models of the pool play the level in each.

  The pool is the level's models (rows ``0 .. n_level - 1``) followed by its matched control's.
  rows: int [num_rows, n_level] pool rows of the level in every arrangement: row 0 is the observed level, rows
    ``1 .. num_arrangement_rows - 1`` the exchanged arrangements, the remaining rows subsets of the control alone of
    the level's size (what a level with no effect would show; none when the control is too small).
  num_arrangement_rows: rows 0 to this (exclusive) are the observed level and its arrangements.
  exact: True when the rows hold every distinct arrangement (the p-value is then exact), False when they are
    ``num_permutations`` draws.
  num_distinct: how many distinct arrangements the strata allow.
  fresh_variance_factor: how much larger the variance of a fresh level's PIEs is than their variance over the
    arrangements: ``n_level / sum_s l_s (N_s - l_s) / N_s`` over the strata (``N_s`` pool models, ``l_s`` of the
    level), the finite-population correction of drawing without replacement.
  control_variance_share: the variance of the control-only mean relative to one level's: ``n_level`` over the control
    models of the level's strata (the mean over subsets of a larger control varies less); NaN without such subsets.
  """

  rows: np.ndarray
  num_arrangement_rows: int
  exact: bool
  num_distinct: int
  seed: int
  fresh_variance_factor: float = 1.0
  control_variance_share: float = math.nan

  @property
  def arrangement_rows(self) -> np.ndarray:
    return self.rows[: self.num_arrangement_rows]

  @property
  def control_rows(self) -> np.ndarray:
    return self.rows[self.num_arrangement_rows :]


def _stratum_members(n_level: int, n_control: int, strata):
  """[(level pool rows, control pool rows)] per stratum: the models that may take each other's place."""
  if strata is None:
    return [(np.arange(n_level), np.arange(n_level, n_level + n_control))]
  strata = np.asarray(strata)
  if strata.shape != (n_level + n_control,):
    raise ValueError(
        f"strata must give one stratum per pool model (the level's {n_level}, then the control's {n_control}), got "
        f"shape {strata.shape}"
    )
  members = []
  for value in np.unique(strata):
    rows = np.flatnonzero(strata == value)
    members.append((rows[rows < n_level], rows[rows >= n_level]))
  return members


def _subsets(groups, rng, num_draws, enumerate_all):
  """Subsets with ``size`` rows taken from each group's ``rows``: all of them in order, or ``num_draws`` uniform."""
  if enumerate_all:
    choices = [list(itertools.combinations(rows, size)) for rows, size in groups]
    return np.array([np.concatenate(pick) for pick in itertools.product(*choices)], dtype=np.int64).reshape(
        -1, sum(size for _, size in groups)
    )
  parts = [np.stack([rng.permutation(rows)[:size] for _ in range(num_draws)]) for rows, size in groups]
  return np.concatenate(parts, axis=1).astype(np.int64)


def exchange_arrangements(n_level: int, n_control: int, strata=None, num_permutations: int = 999, seed=0):
  """The arrangements of a level's and its matched control's models for ``pies_excess_test``: an ``ExchangePlan``.

  Under the null the level's models are exchangeable with the control's: both populations bear the same relation to
  the dense population (both trained from seeds of their own, or both from the dense seeds). ``strata`` (one value
  per pool model, the level's first) restricts the exchanges to models of the same stratum: with shared seeds, the
  dense seed a model starts from, so that a level model only trades places with the control model of its own seed.
  Every arrangement keeps the level's number of models in each stratum. When the strata allow at most
  ``num_permutations + 1`` arrangements, all are enumerated (an exact test); otherwise ``num_permutations`` are drawn
  uniformly (``np.random.default_rng(seed)``) after the observed one. The control-only subsets of the level's size
  (enumerated up to ``num_permutations``, else drawn) give the PIEs a level with no effect would have.
  """
  n_level = _check_int(n_level, "n_level", 1)
  n_control = _check_int(n_control, "n_control", 1)
  num_permutations = _check_int(num_permutations, "num_permutations", 1)
  members = _stratum_members(n_level, n_control, strata)
  rng = np.random.default_rng(seed)
  pooled = [(np.concatenate([lvl, ctl]), lvl.size) for lvl, ctl in members if lvl.size]
  num_distinct = math.prod(math.comb(rows.size, size) for rows, size in pooled)
  observed = np.concatenate([lvl for lvl, _ in members if lvl.size])[None, :]
  exact = num_distinct <= num_permutations + 1
  arrangements = _subsets(pooled, rng, num_permutations, exact)
  if exact:  # the observed arrangement first, then the others
    arrangements = arrangements[~(np.sort(arrangements, axis=1) == np.sort(observed, axis=1)).all(axis=1)]
  arrangements = np.concatenate([observed, arrangements])
  control_groups = [(ctl, lvl.size) for lvl, ctl in members if lvl.size]
  share = math.nan
  if all(ctl.size >= size for ctl, size in control_groups):
    num_control = math.prod(math.comb(ctl.size, size) for ctl, size in control_groups)
    controls = _subsets(control_groups, rng, num_permutations, num_control <= num_permutations)
    share = n_level / sum(ctl.size for ctl, _ in control_groups)
  else:
    controls = np.zeros((0, n_level), dtype=np.int64)
  spread = sum(size * (rows.size - size) / rows.size for rows, size in pooled)
  return ExchangePlan(
      rows=np.concatenate([arrangements, controls]),
      num_arrangement_rows=len(arrangements),
      exact=bool(exact),
      num_distinct=int(num_distinct),
      seed=seed,
      fresh_variance_factor=n_level / spread if spread else math.nan,
      control_variance_share=share,
  )


def exchange_pie_counts(dense_predictions, pool_predictions, rows, num_classes: int) -> np.ndarray:
  """PIEs between the dense population and each arrangement of the pool, int64 [len(rows)].

  ``pool_predictions`` is int [n_level + n_control, n_examples] (the level's models, then the control's); ``rows``
  is ``ExchangePlan.rows``. The dense population is the same in every row (the test is conditional on it). Each
  example counts on its own, so blocks of examples may be counted apart and the counts added; this is
  ``split_pie_counts`` on the dense models stacked over the pool.
  """
  num_classes = _check_num_classes(num_classes)
  dense = _check_predictions(dense_predictions, "dense_predictions", num_classes)
  pool = _check_predictions(pool_predictions, "pool_predictions", num_classes)
  _check_same_examples(dense, pool, "dense_predictions", "pool_predictions")
  rows = np.asarray(rows, dtype=np.int64)
  if rows.ndim != 2 or (rows.size and (rows.min() < 0 or rows.max() >= len(pool))):
    raise ValueError(f"rows must be [num_rows, n_level] rows of the {len(pool)}-model pool, got shape {rows.shape}")
  dense_rows = np.broadcast_to(np.arange(len(dense)), (len(rows), len(dense)))
  return split_pie_counts(np.concatenate([dense, pool]), dense_rows, rows + len(dense), num_classes)


@dataclasses.dataclass(frozen=True)
class PiesExcessResult:
  """Result of ``pies_excess_test``.

  observed: the level's PIEs against the dense population.
  control_mean: the mean PIEs of the control's models at the level's size (a level with no effect); None when the
    control has fewer models than the level in some stratum.
  excess: ``observed - control_mean`` (``observed - null_mean`` without control subsets).
  null_mean: the mean PIEs over the arrangements (the observed one included).
  p_value: one-sided, ``P(arrangement PIEs >= observed)`` over the arrangements, the observed one included: exact
    when ``exact``, else ``(1 + #{draws >= observed}) / (1 + num_permutations)``. Small: more PIEs than noise.
  standard_error: of ``excess`` when the level and the control are redrawn given the dense population: the
    arrangements' variance of the PIEs times ``plan.fresh_variance_factor``, times ``1 + control_variance_share``
    (NaN without control subsets).
  ci_low, ci_high: ``excess -+ z_{1 - alpha / 2} standard_error``, an interval at level ``1 - alpha`` of the excess
    given the dense population (coverage measured in docs/statistics.md).
  num_arrangements: arrangements the p-value rests on (the observed one included); exact: every one.
  """

  observed: int
  control_mean: float | None
  excess: float
  null_mean: float
  p_value: float
  exact: bool
  num_arrangements: int
  standard_error: float
  ci_low: float
  ci_high: float
  alpha: float

  @property
  def distinguishable(self) -> bool:
    """More PIEs than noise: ``p_value <= alpha``."""
    return bool(self.p_value <= self.alpha)


def pies_excess_test(counts, plan: ExchangePlan, alpha: float = 0.05) -> PiesExcessResult:
  """Does a level have more PIEs than its matched control would? A conditional permutation test.

  ``counts`` are ``exchange_pie_counts`` of ``plan.rows`` (summed over blocks of examples). The dense population is
  fixed and the level's models are exchanged with its matched control's (``exchange_arrangements``): under the null
  that the level behaves like the control, every arrangement was as likely to be the observed one, so the share of
  arrangements with at least the observed PIEs is a valid one-sided p-value (exact under enumeration, valid
  Monte Carlo otherwise). Conditioning on the dense population removes its own luck, which a bootstrap of all
  populations spends as noise.
  """
  alpha = _check_probability(alpha, "alpha")
  counts = np.asarray(counts, dtype=np.int64)
  if counts.shape != (len(plan.rows),):
    raise ValueError(f"counts must hold one PIE count per row of the plan ({len(plan.rows)}), got {counts.shape}")
  arrangements = counts[: plan.num_arrangement_rows].astype(np.float64)
  controls = counts[plan.num_arrangement_rows :].astype(np.float64)
  observed = int(counts[0])
  null_mean = float(arrangements.mean())
  control_mean = float(controls.mean()) if controls.size else None
  excess = observed - (null_mean if control_mean is None else control_mean)
  fresh_variance = arrangements.var(ddof=1) * plan.fresh_variance_factor if arrangements.size > 1 else math.nan
  standard_error = math.sqrt(fresh_variance * (1.0 + plan.control_variance_share))
  half_width = stats.norm.isf(alpha / 2) * standard_error
  return PiesExcessResult(
      observed=observed,
      control_mean=control_mean,
      excess=excess,
      null_mean=null_mean,
      p_value=float(np.count_nonzero(arrangements >= observed) / arrangements.size),
      exact=plan.exact,
      num_arrangements=int(arrangements.size),
      standard_error=standard_error,
      ci_low=float(excess - half_width),
      ci_high=float(excess + half_width),
      alpha=alpha,
  )


# --------------------------------------------------------------------------------------------------
# Harm beyond a uniform shift of every example's margin
# --------------------------------------------------------------------------------------------------


def dense_count_histograms(dense_predictions, labels, num_classes: int):
  """The dense population's correct counts, binned per class: what ``uniform_shift_tests`` needs of the examples.

  Returns ``(by_class [C, n + 1], by_model [n, C, n + 1])``, int64: ``by_class[c, k]`` examples of class c that
  exactly k of the n dense models get right; ``by_model[j, c, k]`` those of them that dense model j gets right. Both
  add up over disjoint blocks of examples.
  """
  num_classes = _check_num_classes(num_classes)
  dense = _check_predictions(dense_predictions, "dense_predictions", num_classes)
  labels = _check_labels(labels, dense.shape[1], num_classes).astype(np.int64)
  n = dense.shape[0]
  right = dense == labels[None, :]
  cell = labels * (n + 1) + right.sum(axis=0)
  size = num_classes * (n + 1)
  by_class = np.bincount(cell, minlength=size).reshape(num_classes, n + 1)
  by_model = np.stack([np.bincount(cell[r], minlength=size) for r in right]).reshape(n, num_classes, n + 1)
  return by_class.astype(np.int64), by_model.astype(np.int64)


def _leave_one_out_histograms(by_class, by_model):
  """Per dense model j, the class x count histogram of the other n - 1 models' counts: [n, C, n]."""
  wrong = by_class[None, :, :-1] - by_model[:, :, :-1]  # j wrong: the others' count is k
  return wrong + by_model[:, :, 1:]  # j right: the others' count is k - 1


# Weight, in examples, of the whole split's moments in each class's (a class whose examples every model gets right
# would otherwise get infinite margins, and no uniform shift could move it).
_SHIFT_PRIOR_EXAMPLES = 1.0


def _probit_normal_fit(histogram):
  """Per class, the probit-normal margin model matching the first two factorial moments of its counts.

  ``histogram`` [..., C, m + 1]: examples of each class that k of m models get right. A margin mu ~ N(mean, sd^2)
  with P(right | mu) = Phi(mu) gives E[p] = Phi(a) and E[p^2] = Phi_2(a, a; rho), ``a = mean / sqrt(1 + sd^2)``,
  ``rho = sd^2 / (1 + sd^2)``; k (k - 1) / (m (m - 1)) is unbiased for p^2. A shift delta of every margin moves the
  class's recall to ``Phi(a + delta sqrt(1 - rho))``. Returns (size [..., C], a [..., C], sqrt(1 - rho) [..., C]).
  """
  m = histogram.shape[-1] - 1
  k = np.arange(m + 1)
  size = histogram.sum(axis=-1)
  first = histogram @ (k / m)
  second = histogram @ (k * (k - 1) / (m * (m - 1)))
  total = size.sum(axis=-1, keepdims=True)
  weight = _SHIFT_PRIOR_EXAMPLES / np.maximum(total, 1.0)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean1 = (first + weight * first.sum(axis=-1, keepdims=True)) / (size + _SHIFT_PRIOR_EXAMPLES)
    mean2 = (second + weight * second.sum(axis=-1, keepdims=True)) / (size + _SHIFT_PRIOR_EXAMPLES)
  mean1 = np.clip(mean1, 1e-9, 1 - 1e-9)
  a = special.ndtri(mean1)
  return size, a, np.sqrt(1.0 - _solve_rho(a, mean1, mean2))


def _solve_rho(a, mean1, mean2):
  """rho in [0, 1) with Phi_2(a, a; rho) = mean2, where Phi_2(a, a; rho) = Phi(a) - 2 T(a, sqrt((1 - rho) / (1 + rho)))
  rises with rho at the rate of the bivariate normal density phi_2(a, a; rho): Newton's method inside a shrinking
  bracket (a bisection step wherever Newton would leave it), to machine precision."""
  low, high = np.zeros_like(a), np.full_like(a, 1.0 - 1e-9)
  rho = np.full_like(a, 0.5)
  for _ in range(200):
    value = mean1 - 2.0 * special.owens_t(a, np.sqrt((1.0 - rho) / (1.0 + rho))) - mean2
    above = value > 0
    high, low = np.where(above, rho, high), np.where(above, low, rho)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
      density = np.exp(-a * a / (1.0 + rho)) / (2.0 * math.pi * np.sqrt(1.0 - rho * rho))
      step = rho - value / density
    step = np.where(np.isfinite(step) & (step >= low) & (step <= high), step, 0.5 * (low + high))
    converged = (np.abs(step - rho) <= 1e-13) | ~np.isfinite(value)
    rho = step
    if converged.all():
      break
  return rho


def _fit_shifts(size, a, slope, target):
  """Shifts delta [...] with ``sum_c size_c Phi(a_c + delta slope_c) = target``: Newton's method inside a shrinking
  bracket [-40, 40] (a bisection step wherever Newton would leave it), to machine precision. The left side rises with
  delta, so the root is unique; a target out of reach ends at the bracket's edge."""
  target = np.asarray(target, np.float64)
  low, high = np.full(target.shape, -40.0), np.full(target.shape, 40.0)
  delta = np.zeros(target.shape)
  for _ in range(200):
    z = a + delta[..., None] * slope
    value = (size * special.ndtr(z)).sum(axis=-1) - target
    above = value > 0
    high, low = np.where(above, delta, high), np.where(above, low, delta)
    slope_sum = (size * slope * np.exp(-0.5 * z * z)).sum(axis=-1) / math.sqrt(2.0 * math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
      step = delta - value / slope_sum
    step = np.where(np.isfinite(step) & (step >= low) & (step <= high), step, 0.5 * (low + high))
    converged = np.abs(step - delta) <= 1e-12 * (1.0 + np.abs(delta))
    delta = step
    if converged.all():
      break
  return delta


def _shift_change(fit, dense_hits, level_hits):
  """The (dense, level) shifts fitted to the populations' mean hits and the change of every class's expected hits."""
  size, a, slope = fit
  dense_shift = _fit_shifts(size, a, slope, dense_hits)
  level_shift = _fit_shifts(size, a, slope, level_hits)
  change = size * (special.ndtr(a + level_shift[..., None] * slope) - special.ndtr(a + dense_shift[..., None] * slope))
  return dense_shift, level_shift, change


@dataclasses.dataclass(frozen=True)
class UniformShiftResult:
  """Result of ``uniform_shift_tests``, one entry per class (fractions of the class's examples).

  uniform_shift_change: the recall change (level minus dense) that a uniform shift of every example's margin
    predicts, the shift fitted to the change in mean top-1.
  beyond_uniform_shift: the observed change of the mean recall minus ``uniform_shift_change`` (negative: the class
    lost more than a uniform shift explains).
  standard_error: of ``beyond_uniform_shift``: the jackknife over the dense models (their recall and the margins
    they give, refitted) plus the level models' spread around their own shifts' predictions.
  t, df, p_value: ``beyond / standard_error`` against Student's t with Welch-Satterthwaite degrees of freedom
    (``n_dense - 1`` and ``n_level - 1``), two-sided; NaN where not tested.
  tested: False for a class absent from the eval split, one whose raw recall is the same in every model of both
    populations (``unchanged_classes``), or one without variance.
  q_value (Benjamini-Hochberg over the tested classes), significant_fdr (q <= alpha).
  dense_shift, level_shift: the fitted shifts, probit units; level_shift - dense_shift is the uniform shift.
  """

  uniform_shift_change: np.ndarray
  beyond_uniform_shift: np.ndarray
  standard_error: np.ndarray
  t: np.ndarray
  df: np.ndarray
  p_value: np.ndarray
  tested: np.ndarray
  q_value: np.ndarray
  significant_fdr: np.ndarray
  dense_shift: float
  level_shift: float
  alpha: float

  @property
  def num_significant_fdr(self) -> int:
    return int(np.count_nonzero(self.significant_fdr))


def _check_shift_inputs(histograms, dense_hits, level_hits, class_count):
  by_class, by_model = (np.asarray(h, dtype=np.float64) for h in histograms)
  dense_hits, level_hits = np.asarray(dense_hits, np.float64), np.asarray(level_hits, np.float64)
  class_count = np.asarray(class_count, np.float64)
  n_dense, num_classes = by_model.shape[0], by_class.shape[0]
  if (
      n_dense < 3
      or by_class.shape != (num_classes, n_dense + 1)
      or by_model.shape != (n_dense, num_classes, n_dense + 1)
      or dense_hits.shape != (n_dense, num_classes)
      or level_hits.ndim != 2
      or level_hits.shape[0] < 2
      or level_hits.shape[1] != num_classes
      or class_count.shape != (num_classes,)
  ):
    raise ValueError(
        "uniform_shift_tests needs dense_count_histograms of at least 3 dense models, dense_hits [n_dense, C] and "
        f"level_hits [n_level >= 2, C] of the same classes, got histograms {by_class.shape} and {by_model.shape}, "
        f"dense_hits {dense_hits.shape}, level_hits {level_hits.shape}, class_count {class_count.shape}"
    )
  return by_class, by_model, dense_hits, level_hits, class_count


def uniform_shift_tests(histograms, dense_hits, level_hits, class_count, alpha: float = 0.05) -> UniformShiftResult:
  """Which classes change more (or less) than a uniform shift of every example's margin predicts?

  The model: an example's margin mu is its probit-scale ease for the dense population (P(a dense model is right) =
  Phi(mu)); a uniform shift moves every margin by one amount delta, the same for every example and class. Each
  class's margins are taken as normal, their mean and spread fitted to the first two moments of its examples' dense
  correct counts (``k`` of the n dense models right: unbiased for the mean and the square of each example's rate); a
  shift delta then moves the class's recall to ``Phi(a_c + delta sqrt(1 - rho_c))``. One delta is fitted to the
  dense population's mean top-1 and one to the level's, and ``uniform_shift_change`` is the difference of the
  class recalls they predict: what a compression that hurts every example alike would do to the class. Easy classes
  (near the ceiling) lose less than top-1 under a uniform shift alone, hard ones more: harm that "follows
  difficulty" may be nothing else. ``beyond_uniform_shift`` is what is left.

  Why moments and not each example's smoothed rate ``Phi^-1((k + 1/2) / (n + 1))``: examples every dense model gets
  right all get the same margin whatever their true ease, and how far above the line they lie decides how much a
  shift moves them; the error depends on the class, so that in simulated uniform shifts 26% of classes came out
  "beyond" at p < 0.05 (docs/statistics.md). The probit-normal shape extrapolates from the class's spread instead;
  each class's moments borrow one example's worth of the whole split's, so that a class every model gets right
  still has finite margins.

  The test: the dense models make both the dense recall and the margins, so their luck enters twice; the standard
  error is the delete-one jackknife over the dense models (each replicate refits the margins and both shifts on the
  other n - 1 models) plus the variance of the level models' residuals (each model's recall minus the recall its own
  fitted shift predicts) over ``n_level``. Welch-Satterthwaite degrees of freedom; Benjamini-Hochberg over the
  tested classes. With the same fit for both populations, a dense model's own votes in the margins bias nothing:
  no dense model is scored against its own margins. Calibration: docs/statistics.md.

  Args:
    histograms: ``dense_count_histograms`` of the dense population (summed over blocks of examples).
    dense_hits, level_hits: ``class_hits`` of both populations, [n_dense, C] and [n_level, C]; class_count: [C].
    alpha: the FDR level.
  """
  alpha = _check_probability(alpha, "alpha")
  by_class, by_model, dense_hits, level_hits, class_count = _check_shift_inputs(
      histograms, dense_hits, level_hits, class_count
  )
  n_dense, n_level = len(dense_hits), len(level_hits)
  fit = _probit_normal_fit(by_class)
  mean_dense, mean_level = dense_hits.mean(axis=0), level_hits.mean(axis=0)
  dense_shift, level_shift, change = _shift_change(fit, mean_dense.sum(), mean_level.sum())
  beyond = (mean_level - mean_dense) - change
  # Jackknife over the dense models: replicate d drops model d from the recall and from the margins.
  replicate_dense = (dense_hits.sum(axis=0) - dense_hits) / (n_dense - 1)
  _, _, replicate_change = _shift_change(
      _probit_normal_fit(_leave_one_out_histograms(by_class, by_model)),
      replicate_dense.sum(axis=1),
      np.full(n_dense, mean_level.sum()),
  )
  replicates = (mean_level - replicate_dense) - replicate_change
  var_dense = (n_dense - 1) / n_dense * ((replicates - replicates.mean(axis=0)) ** 2).sum(axis=0)
  # The level models around their own shifts' predictions (their skill drops out, as in the per-model normalization).
  size, a, slope = fit
  own_shift = _fit_shifts(size, a, slope, level_hits.sum(axis=1))
  residuals = level_hits - size * special.ndtr(a + own_shift[:, None] * slope)
  var_level = residuals.var(axis=0, ddof=1) / n_level
  with np.errstate(invalid="ignore", divide="ignore"):
    classes = np.where(class_count > 0, class_count, np.nan)
    variance = var_dense + var_level
    tested = (class_count > 0) & ~unchanged_classes(dense_hits / classes, level_hits / classes) & (variance > 0)
    standard_error = np.sqrt(variance) / classes
    t = np.where(tested, beyond / classes / standard_error, np.nan)
    df = np.where(tested, variance**2 / (var_dense**2 / (n_dense - 1) + var_level**2 / (n_level - 1)), np.nan)
  p = np.where(tested, 2.0 * stats.t.sf(np.abs(t), df), np.nan)
  q = bh_q_values(p)
  return UniformShiftResult(
      uniform_shift_change=change / classes,
      beyond_uniform_shift=beyond / classes,
      standard_error=np.where(tested, standard_error, np.nan),
      t=t,
      df=df,
      p_value=p,
      tested=tested,
      q_value=q,
      significant_fdr=bh_rejections(q, alpha),
      dense_shift=float(dense_shift),
      level_shift=float(level_shift),
      alpha=alpha,
  )


# --------------------------------------------------------------------------------------------------
# Correlations of class harm with class properties, with p-values that respect each model's shared luck
# --------------------------------------------------------------------------------------------------


def _spearman_rows(x, y):
  """Spearman's rho of each row pair of x, y [..., C] over the columns where both are finite (NaN when fewer than 3
  or one of them constant)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  shape = np.broadcast_shapes(x.shape, y.shape)
  keep = np.broadcast_to(np.isfinite(x), shape) & np.broadcast_to(np.isfinite(y), shape)
  if not keep.all():  # the same classes in every row: absent classes are NaN in every model
    columns = keep.reshape(-1, keep.shape[-1]).all(axis=0)
    x, y = x[..., columns], y[..., columns]
  if x.shape[-1] < 3:
    return np.full(shape[:-1], np.nan)
  # A property shared by every row (1-D) is ranked once; the rows broadcast against it.
  rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
  rx = rx - rx.mean(axis=-1, keepdims=True)
  ry = ry - ry.mean(axis=-1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    return (rx * ry).sum(axis=-1) / np.sqrt((rx**2).sum(axis=-1) * (ry**2).sum(axis=-1))


@dataclasses.dataclass(frozen=True)
class CorrelationResult:
  """Result of ``class_correlation_test``.

  rho: Spearman's rho between the class property and the normalized change (level minus dense, per-model
    normalization) over the classes present.
  p_value: two-sided, from the models: the share of ``num_permutations`` reassignments of the pooled models to the two
    populations (and the observed one) whose |rho| is at least the observed. Its null is "the level is one more
    dense population"; it counts each model's luck once, however many classes it touches.
  p_value_independent_classes: ``scipy.stats.spearmanr``'s, which treats the classes as independent (they are not:
    the models' luck is shared by all their classes).
  uniform_shift_rho: the rho a uniform shift of every margin would give (``uniform_shift_tests``' predicted changes
    minus the predicted top-1 change); NaN without histograms.
  beyond_uniform_shift_rho, beyond_uniform_shift_p_value: rho between the property and ``beyond_uniform_shift``,
    and its p-value from the same reassignments, each with its own shifts fitted on the dense population's margins
    (a reassignment's models differ in skill, and a shift takes that up as it does for the real populations); NaN
    without histograms.
  num_classes: classes in the correlation.
  """

  rho: float
  p_value: float
  p_value_independent_classes: float
  uniform_shift_rho: float
  beyond_uniform_shift_rho: float
  beyond_uniform_shift_p_value: float
  num_classes: int
  num_permutations: int


def _normalized_change(dense_hits, level_hits, class_count):
  """Per-model normalized recall change of each class, level minus dense: [..., C] from hits [..., n, C]."""
  size = np.where(class_count > 0, class_count, np.nan)

  def mean_normalized(hits):
    return (hits / size - (hits.sum(axis=-1, keepdims=True) / class_count.sum())).mean(axis=-2)

  return mean_normalized(level_hits) - mean_normalized(dense_hits)


def _row_means(values, rows):
  """The mean of `values` [n, C] over the rows each row of `rows` [B, k] picks, [B, C]: one matrix product."""
  weights = np.zeros((len(rows), len(values)))
  np.put_along_axis(weights, rows, 1.0 / rows.shape[1], axis=1)
  return weights @ values


class _CentredRanks:
  """Spearman's rho of arrays over a fixed set of class columns, each distinct array ranked once (the reassignments'
  [num_permutations, C] arrays are shared by every property tested)."""

  def __init__(self, columns):
    self.columns = columns
    self._ranked = {}

  def centred(self, values):
    key = id(values)
    if key not in self._ranked:
      ranked = stats.rankdata(values[..., self.columns], axis=-1)
      # Keeps `values` alive beside its ranks, so that its id cannot be reused by another array meanwhile.
      self._ranked[key] = (values, ranked - ranked.mean(axis=-1, keepdims=True))
    return self._ranked[key][1]

  def rho(self, x, y):
    if self.columns.sum() < 3:
      return np.full(np.broadcast_shapes(np.shape(x)[:-1], np.shape(y)[:-1]), np.nan)
    rx, ry = self.centred(x), self.centred(y)
    with np.errstate(invalid="ignore", divide="ignore"):
      return (rx * ry).sum(axis=-1) / np.sqrt((rx**2).sum(axis=-1) * (ry**2).sum(axis=-1))


def _p_from_reassignments(value, null):
  """Two-sided p-value of `value` among the reassignments' `null` values (the observed one counted)."""
  null = null[np.isfinite(null)]
  if not np.isfinite(value):
    return math.nan
  return float((1 + np.count_nonzero(np.abs(null) >= abs(value) - 1e-12)) / (1 + null.size))


def class_correlation_test(
    dense_hits, level_hits, class_count, first_rows, second_rows, class_property=None, histograms=None
) -> CorrelationResult:
  """Does class harm follow a class property, beyond the models' shared luck and beyond a uniform shift?

  The statistic is Spearman's rho between the property (``class_property`` [C], e.g. the training set's class
  counts; by default the dense population's mean recall of the class, its difficulty, recomputed for every
  reassignment) and the class's normalized change. Its p-value comes from reassigning the models: the pool is the
  dense models then the level's (``class_hits`` rows), and ``first_rows`` / ``second_rows`` [num_permutations,
  n_dense] / [..., n_level] say which pool rows play the dense and the level population in each reassignment
  (``half_splits(n_dense + n_level, n_dense, n_level, ...)`` for independent seeds; with shared seeds, exchanges
  between twins only, e.g. from ``exchange_arrangements`` with the seeds as strata).

  A uniform shift of every example's margin alone makes harm follow difficulty (classes near the ceiling lose
  less), so a small p-value does not say that compression singles out hard classes: ``uniform_shift_rho`` is what
  the shift alone gives, and ``beyond_uniform_shift_rho`` the correlation with what is left. Pass
  ``dense_count_histograms`` of the dense population as ``histograms`` to get them. ``class_correlation_tests``
  tests several properties on the same reassignments at the cost of one.
  """
  return class_correlation_tests(
      dense_hits, level_hits, class_count, first_rows, second_rows, {"property": class_property}, histograms
  )["property"]


def class_correlation_tests(
    dense_hits, level_hits, class_count, first_rows, second_rows, class_properties, histograms=None, shift=None
) -> dict:
  """``class_correlation_test`` of each property of ``class_properties`` ({name: [C] values, or None for the dense
  recall}), the reassignments' changes and shift fits computed once: {name: CorrelationResult}. ``shift``: the
  level's ``uniform_shift_tests`` result when the caller has it (computed from ``histograms`` otherwise)."""
  dense_hits, level_hits = np.asarray(dense_hits, np.float64), np.asarray(level_hits, np.float64)
  class_count = np.asarray(class_count, np.float64)
  first_rows, second_rows = np.asarray(first_rows, np.int64), np.asarray(second_rows, np.int64)
  if first_rows.ndim != 2 or second_rows.ndim != 2 or len(first_rows) != len(second_rows):
    raise ValueError("first_rows and second_rows must be [num_permutations, n] rows of the pooled models")
  pool = np.concatenate([dense_hits, level_hits])
  size = np.where(class_count > 0, class_count, np.nan)
  recall = pool / size  # per model and class
  normalized = recall - pool.sum(axis=1, keepdims=True) / class_count.sum()
  change = _normalized_change(dense_hits, level_hits, class_count)
  permuted_change = _row_means(normalized, second_rows) - _row_means(normalized, first_rows)
  dense_recall, permuted_recall = recall[: len(dense_hits)].mean(axis=0), _row_means(recall, first_rows)
  beyond_null = None
  if histograms is not None:
    shift = shift or uniform_shift_tests(histograms, dense_hits, level_hits, class_count)
    dense_mean, level_mean = _row_means(pool, first_rows), _row_means(pool, second_rows)
    fit = _probit_normal_fit(np.asarray(histograms[0], np.float64))
    _, _, predicted = _shift_change(fit, dense_mean.sum(axis=1), level_mean.sum(axis=1))
    beyond_null = (level_mean - dense_mean - predicted) / size
  # Spearman's rho over the classes every array has (absent classes are NaN everywhere), each array ranked once.
  fixed = {name: np.asarray(p, np.float64) for name, p in class_properties.items() if p is not None}
  columns = np.isfinite(change) & np.isfinite(dense_recall)
  for values in fixed.values():
    columns &= np.isfinite(values)
  ranks = _CentredRanks(columns)
  results = {}
  for name in class_properties:
    prop = fixed.get(name, dense_recall)
    rho = ranks.rho(prop, change)
    permuted = ranks.rho(prop if name in fixed else permuted_recall, permuted_change)
    keep = np.isfinite(prop) & np.isfinite(change)
    independent = stats.spearmanr(prop[keep], change[keep]).pvalue if keep.sum() >= 3 else math.nan
    shift_rho = beyond_rho = beyond_p = math.nan
    if beyond_null is not None:
      predicted_top1 = np.nansum(shift.uniform_shift_change * class_count) / class_count.sum()
      shift_rho = ranks.rho(prop, shift.uniform_shift_change - predicted_top1)
      beyond_rho = ranks.rho(prop, shift.beyond_uniform_shift)
      beyond_p = _p_from_reassignments(beyond_rho, ranks.rho(prop, beyond_null))
    results[name] = CorrelationResult(
        rho=float(rho),
        p_value=_p_from_reassignments(rho, permuted),
        p_value_independent_classes=float(independent),
        uniform_shift_rho=float(shift_rho),
        beyond_uniform_shift_rho=float(beyond_rho),
        beyond_uniform_shift_p_value=beyond_p,
        num_classes=int(keep.sum()),
        num_permutations=int(len(first_rows)),
    )
  return results


# --------------------------------------------------------------------------------------------------
# Mitigations: did training a compressed population differently reduce its harm?
# --------------------------------------------------------------------------------------------------

HELPED, NO_EFFECT, HURT, MIXED = "helped", "no measurable effect", "hurt", "mixed"
VERDICTS = (HELPED, NO_EFFECT, HURT, MIXED)


def mitigation_verdict(harm_interval, pies_interval) -> str:
  """The verdict on a mitigation from two intervals, never from point estimates.

  ``harm_interval``: interval of the change, mitigated minus unmitigated, of the normalized recall of the class
  compression hurts most (> 0: that class recovered). ``pies_interval``: interval of the change in PIEs (< 0: fewer
  PIEs). Either may be (None, None) or NaN (no interval: no evidence either way).  "helped" when an interval lies on
  the helpful side of 0 and none on the harmful side, "hurt" the reverse, "mixed" when both happen, "no measurable
  effect" when every interval covers 0.
  """

  def side(interval, sign):
    low, high = (np.nan, np.nan) if interval is None else interval
    low = np.nan if low is None else float(low)
    high = np.nan if high is None else float(high)
    return (low > 0) if sign > 0 else (high < 0)

  helped = side(harm_interval, +1) or side(pies_interval, -1)
  hurt = side(harm_interval, -1) or side(pies_interval, +1)
  if helped and hurt:
    return MIXED
  if helped:
    return HELPED
  if hurt:
    return HURT
  return NO_EFFECT


def mitigation_effect(
    dense_hits,
    unmitigated_hits,
    mitigated_hits,
    class_count,
    pies_unmitigated: int,
    pies_mitigated: int,
    boot_unmitigated=None,
    boot_mitigated=None,
    alpha: float = 0.05,
    normalization: str = DEFAULT_NORMALIZATION,
) -> dict:
  """What a mitigation changed, against the unmitigated population of the same method and level, with intervals.

  Three changes, mitigated minus unmitigated, each with an interval at ``1 - alpha / 2`` (Bonferroni over the two
  that decide the verdict, so that a mitigation that changes nothing gets a verdict other than "no measurable
  effect" in at most about ``alpha`` of studies):

  * ``harm_change``: the normalized recall of the *worst class*, the class whose normalized change against the dense
    population is most negative in the two compressed populations pooled (the sum of their changes); a Welch test of
    the per-model values of the two populations. Selecting on the sum and testing the difference keeps the selection
    from favouring either side (with equal variances the sum and the difference of the two means are independent):
    picking the class the unmitigated population hurts most, and comparing, would call a mitigation that does nothing
    "helped" by regression to the mean.
  * ``pies_change``: PIEs against the dense population; the interval is the change plus the centred quantiles of the
    bootstrap differences (``boot_*``: PIE counts in the same resamples of the dense models, as
    ``bootstrap_pie_stability`` returns them); None without resamples.
  * ``top1_change``: mean top-1; Welch over the models (reported, not part of the verdict).

  The verdict is ``mitigation_verdict(harm interval, PIE interval)``. Arguments: ``class_hits`` of the three
  populations and the class sizes; the PIE counts of both compressed populations.
  """
  alpha = _check_probability(alpha, "alpha")
  normalization = _check_normalization(normalization)
  level = alpha / 2.0  # each endpoint's share of alpha
  class_count = np.asarray(class_count)
  norm = {
      name: _normalize(*_recall_from_hits(np.asarray(hits), class_count), normalization)
      for name, hits in (("reference", dense_hits), ("unmitigated", unmitigated_hits), ("mitigated", mitigated_hits))
  }
  dense_mean = norm["reference"].mean(axis=0)
  pooled = (norm["unmitigated"].mean(axis=0) - dense_mean) + (norm["mitigated"].mean(axis=0) - dense_mean)
  out = {"worst_class": None, "harm_change": None, "harm_change_ci_low": None, "harm_change_ci_high": None}
  if np.isfinite(pooled).any():
    worst = int(np.nanargmin(pooled))
    result = _welch(norm["unmitigated"][:, worst : worst + 1], norm["mitigated"][:, worst : worst + 1])
    low, high = welch_confidence_interval(result, 1.0 - level)
    out.update(
        worst_class=worst,
        harm_change=float(result.difference[0]),
        harm_change_ci_low=None if np.isnan(low[0]) else float(low[0]),
        harm_change_ci_high=None if np.isnan(high[0]) else float(high[0]),
    )
  top1 = {
      name: np.asarray(hits).sum(axis=1) / class_count.sum()
      for name, hits in (("unmitigated", unmitigated_hits), ("mitigated", mitigated_hits))
  }
  result = _welch(top1["unmitigated"][:, None], top1["mitigated"][:, None])
  low, high = welch_confidence_interval(result, 1.0 - level)
  pies = pies_against_floor(pies_mitigated, pies_unmitigated, boot_mitigated, boot_unmitigated, level)
  out.update(
      top1_change=float(result.difference[0]),
      top1_change_ci_low=None if np.isnan(low[0]) else float(low[0]),
      top1_change_ci_high=None if np.isnan(high[0]) else float(high[0]),
      pies_change=int(pies_mitigated) - int(pies_unmitigated),
      pies_change_ci_low=pies["ci_low"],
      pies_change_ci_high=pies["ci_high"],
  )
  out["verdict"] = mitigation_verdict(
      (out["harm_change_ci_low"], out["harm_change_ci_high"]), (out["pies_change_ci_low"], out["pies_change_ci_high"])
  )
  return out


# --------------------------------------------------------------------------------------------------
# Compression identified exemplars
# --------------------------------------------------------------------------------------------------


def exemplar_scores(baseline_preds, compressed_preds, num_classes: int) -> pd.DataFrame:
  """Per-example comparison of a baseline and a compressed population (CIE, arXiv 2010.03058).

  Returns a DataFrame indexed by ``example_id`` with:
    baseline_modal, compressed_modal  modal labels (ties toward the smallest class id)
    is_cie                            modal labels differ (the PIE rule for any compression)
    l1_distance                       sum over labels of |f_baseline(label) - f_compressed(label)|,
                                      f = fraction of the population's votes; 0 (same vote
                                      distribution) to 2 (disjoint labels)
    rank                              1 = largest l1_distance; ties broken by example id ascending

  The L1 distance is computed exactly in integers (weights n_compressed and -n_baseline on a
  sorted, concatenated vote table) so ties are exact, then divided by n_baseline * n_compressed.
  """
  baseline_modal, compressed_modal, l1_int = exemplar_parts(baseline_preds, compressed_preds, num_classes)
  n_b, n_c = np.shape(baseline_preds)[0], np.shape(compressed_preds)[0]
  return exemplar_frame(baseline_modal, compressed_modal, l1_int, n_b, n_c, exemplar_ranks(l1_int))


def exemplar_parts(baseline_preds, compressed_preds, num_classes: int):
  """The per-example part of ``exemplar_scores``: (baseline_modal, compressed_modal, l1_int).

  ``l1_int`` is the L1 distance times n_baseline * n_compressed, an exact integer.  Each example's
  values depend on its own column of predictions only, so blocks of examples may be scored apart.
  """
  num_classes = _check_num_classes(num_classes)
  baseline = _check_predictions(baseline_preds, "baseline_preds", num_classes)
  compressed = _check_predictions(compressed_preds, "compressed_preds", num_classes)
  _check_same_examples(baseline, compressed, "baseline_preds", "compressed_preds")
  n_b, n_c = baseline.shape[0], compressed.shape[0]
  baseline_modal = shared_votes(baseline, num_classes).modal()
  compressed_modal = shared_votes(compressed, num_classes).modal()

  common = np.result_type(baseline.dtype, compressed.dtype)
  votes = SortedVotes(np.concatenate([baseline.astype(common), compressed.astype(common)]), num_classes)
  signed = np.concatenate([np.full(n_b, n_c, dtype=np.int64), np.full(n_c, -n_b, dtype=np.int64)])
  return baseline_modal, compressed_modal, votes.abs_run_totals(signed)


def exemplar_histogram(l1_int, n_baseline: int, n_compressed: int) -> np.ndarray:
  """Examples per integer L1 value (0 .. 2 n_baseline n_compressed): what ``exemplar_ranks`` needs to
  rank one block of examples among all of them.  Histograms of blocks add up."""
  return np.bincount(np.asarray(l1_int, dtype=np.int64), minlength=2 * n_baseline * n_compressed + 1)


def exemplar_ranks(l1_int, histogram=None, histogram_before=None) -> np.ndarray:
  """Ranks of ``exemplar_scores``: 1 = largest L1 distance, ties broken by example id ascending.

  Alone, ``l1_int`` covers every example.  For one block of consecutive example ids out of many,
  give the ``exemplar_histogram`` of all examples and that of the examples before the block: an
  example's rank is its rank within the block, plus the examples elsewhere with a larger distance,
  plus the earlier examples with the same distance.
  """
  l1_int = np.asarray(l1_int, dtype=np.int64)
  n_examples = len(l1_int)
  order = np.lexsort((np.arange(n_examples), -l1_int))
  rank = np.empty(n_examples, dtype=np.int64)
  rank[order] = np.arange(1, n_examples + 1)
  if histogram is None:
    return rank
  histogram = np.asarray(histogram, dtype=np.int64)
  local = np.bincount(l1_int, minlength=len(histogram))
  # larger[v]: examples with a distance above v.
  larger_all = np.concatenate([np.cumsum(histogram[::-1])[::-1][1:], [0]])
  larger_here = np.concatenate([np.cumsum(local[::-1])[::-1][1:], [0]])
  return rank + (larger_all - larger_here)[l1_int] + np.asarray(histogram_before, dtype=np.int64)[l1_int]


def exemplar_frame(
    baseline_modal, compressed_modal, l1_int, n_baseline: int, n_compressed: int, rank, example_ids=None
) -> pd.DataFrame:
  """The ``exemplar_scores`` table from its parts (``example_ids`` default to 0 .. n - 1)."""
  baseline_modal = np.asarray(baseline_modal)
  compressed_modal = np.asarray(compressed_modal)
  index = (
      pd.RangeIndex(len(l1_int), name="example_id")
      if example_ids is None
      else pd.Index(np.asarray(example_ids, dtype=np.int64), name="example_id")
  )
  return pd.DataFrame(
      {
          "baseline_modal": baseline_modal,
          "compressed_modal": compressed_modal,
          "is_cie": baseline_modal != compressed_modal,
          "l1_distance": np.asarray(l1_int) / float(n_baseline * n_compressed),
          "rank": rank,
      },
      index=index,
  )
