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

The formulas, the degenerate-case table and the references are in ``docs/statistics.md``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import special, stats

__all__ = [
  "NORMALIZATIONS",
  "DEFAULT_NORMALIZATION",
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
  "BootstrapResult",
  "SampleSizePlan",
  "normalized_recall",
  "class_hits",
  "normalized_recall_from_hits",
  "class_tests",
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
  "aa_calibration",
  "exemplar_scores",
  "exemplar_parts",
  "exemplar_histogram",
  "exemplar_ranks",
  "exemplar_frame",
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

# Internal case codes of the vectorized Welch test.
_REGULAR, _ABSENT, _SINGLE, _CONST_EQUAL, _CONST_SEPARATED, _UNCHANGED, _UNTESTABLE = 0, 1, 2, 3, 4, 5, 6


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------


def _check_num_classes(num_classes) -> int:
  if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
    raise ValueError(f"num_classes must be an int, got {num_classes!r}")
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  return int(num_classes)


def _check_int_array(values, ndim: int, name: str, num_classes: int) -> np.ndarray:
  arr = np.asarray(values)
  if arr.ndim != ndim:
    layout = "[n_models, n_examples]" if ndim == 2 else "[n_examples]"
    raise ValueError(f"{name} must be a {ndim}-D array {layout}, got shape {arr.shape}")
  if arr.size == 0:
    raise ValueError(f"{name} is empty (shape {arr.shape})")
  if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
  low, high = arr.min(), arr.max()
  if low < 0 or high >= num_classes:
    raise ValueError(
      f"{name} holds class ids outside [0, {num_classes - 1}] (min {low}, max {high})"
    )
  return arr


def _check_predictions(predictions, num_classes: int, name: str) -> np.ndarray:
  return _check_int_array(predictions, 2, name, num_classes)


def _check_labels(labels, num_examples: int, num_classes: int) -> np.ndarray:
  arr = _check_int_array(labels, 1, "labels", num_classes)
  if arr.shape[0] != num_examples:
    raise ValueError(
      f"labels has {arr.shape[0]} examples but the predictions have {num_examples}"
    )
  return arr


def _check_probability(value, name: str) -> float:
  value = float(value)
  if not 0.0 < value < 1.0:
    raise ValueError(f"{name} must be in (0, 1), got {value}")
  return value


def _check_normalization(normalization: str) -> str:
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
  return normalization


def _check_recall_pair(dense_norm, pruned_norm) -> tuple[np.ndarray, np.ndarray]:
  dense = np.asarray(dense_norm, dtype=np.float64)
  pruned = np.asarray(pruned_norm, dtype=np.float64)
  for name, arr in (("dense_norm", dense), ("pruned_norm", pruned)):
    if arr.ndim != 2:
      raise ValueError(f"{name} must be a 2-D array [n_models, n_classes], got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
      raise ValueError(f"{name} is empty (shape {arr.shape})")
    if np.isinf(arr).any():
      raise ValueError(f"{name} contains infinite values")
    nan = np.isnan(arr)
    mixed = nan.any(axis=0) & ~nan.all(axis=0)
    if mixed.any():
      raise ValueError(
        f"{name} has classes with NaN for some models but not all (classes "
        f"{np.flatnonzero(mixed)[:10].tolist()}): a class is either absent from the eval split "
        "(NaN for every model) or present for every model"
      )
  if dense.shape[1] != pruned.shape[1]:
    raise ValueError(
      f"dense_norm has {dense.shape[1]} classes but pruned_norm has {pruned.shape[1]}"
    )
  return dense, pruned


# --------------------------------------------------------------------------------------------------
# Recall
# --------------------------------------------------------------------------------------------------


def _class_hits(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  n_models = predictions.shape[0]
  correct = predictions == labels[None, :]
  cells = (np.arange(n_models)[:, None] * num_classes + labels[None, :])[correct]
  return np.bincount(cells, minlength=n_models * num_classes).reshape(n_models, num_classes)


def class_hits(predictions, labels, num_classes: int) -> np.ndarray:
  """Correct predictions per model and class, int64 [n_models, num_classes].

  With the class sizes (``np.bincount(labels)``) these counts are all the class tests need, and they
  add up over disjoint sets of examples: a distributed analysis (``pie.beam_analysis``) sums them
  over blocks of examples and hands them to ``normalized_recall_from_hits``.
  """
  num_classes = _check_num_classes(num_classes)
  predictions = _check_predictions(predictions, num_classes, "predictions")
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
  predictions = _check_predictions(predictions, num_classes, "predictions")
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
    raise ValueError(f"hits must be [n_models, num_classes] and class_count [num_classes], got shapes "
                     f"{hits.shape} and {class_count.shape}")
  normalization = _check_normalization(normalization)
  return _normalize(*_recall_from_hits(hits, class_count), normalization)


# --------------------------------------------------------------------------------------------------
# Vectorized Welch test
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Welch:
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


def _complete_separation_p(n_dense: int, n_pruned: int) -> float:
  """Exact two-sided permutation p-value when each population is constant and the constants differ.

  Only the observed split (and, when the populations have the same size, its mirror image) reaches
  the observed absolute difference of means, so p = k / C(n_dense + n_pruned, n_dense), k = 2 if the
  sizes are equal, else 1.
  """
  log_splits = (
    special.gammaln(n_dense + n_pruned + 1) - special.gammaln(n_dense + 1) - special.gammaln(n_pruned + 1)
  )
  extreme = 2.0 if n_dense == n_pruned else 1.0
  return float(min(1.0, extreme * math.exp(-log_splits)))


def _welch(dense: np.ndarray, pruned: np.ndarray, unchanged=None, exchangeable: bool = True) -> _Welch:
  """Welch t-test along axis -2 (models) of arrays [..., n_models, n_classes], all classes at once.

  Statistic sign follows scipy.stats.ttest_ind(dense, pruned): t > 0 when the dense mean is higher.
  Degenerate columns get the documented values (see docs/statistics.md), never a 0/0.

  unchanged: bool [..., n_classes], classes whose raw recall is the same in every model of both
    populations; they are not tested (a zero observed variance is no evidence of a class-specific change).
  exchangeable: each value is a function of its own model alone (per_model normalization), so the exact
    permutation p-value of complete separation is valid; False under "population" normalization, where
    the subtracted constant depends on the population a model is in.
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
    p = 2.0 * stats.t.sf(np.abs(t), df)

  case = np.full(mean_d.shape, _REGULAR, dtype=np.int8)
  both_constant = (se2 == 0) & ~absent
  if min(n_d, n_p) < 2:
    case[...] = _SINGLE
  else:
    equal = both_constant & (diff == 0)
    separated = both_constant & (diff != 0)
    case[equal] = _CONST_EQUAL
    case[separated] = _CONST_SEPARATED if exchangeable else _UNTESTABLE
    separation_p = _complete_separation_p(n_d, n_p) if exchangeable else np.nan
    t = np.where(equal, 0.0, np.where(separated, np.copysign(np.inf, diff), t))
    p = np.where(equal, 1.0, np.where(separated, separation_p, p))
    df = np.where(both_constant, np.nan, df)
    if unchanged is not None:
      case[np.broadcast_to(unchanged, case.shape) & ~absent] = _UNCHANGED
  case[absent] = _ABSENT
  undefined = (case == _ABSENT) | (case == _SINGLE) | (case == _UNCHANGED) | (case == _UNTESTABLE)
  t = np.where(undefined, np.nan, t)
  df = np.where(undefined, np.nan, df)
  p = np.where(undefined, np.nan, np.clip(p, 0.0, 1.0))
  return _Welch(mean_d, mean_p, var_d, var_p, n_d, n_p, t, df, p, case, const_d, const_p)


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


def _hedges_correction(df: np.ndarray) -> np.ndarray:
  """Exact small-sample bias correction J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2))."""
  df = np.asarray(df, dtype=np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.exp(special.gammaln(df / 2.0) - 0.5 * np.log(df / 2.0) - special.gammaln((df - 1.0) / 2.0))


def class_tests(dense_norm, pruned_norm, alpha: float = 0.05, confidence=None, unchanged=None,
                normalization: str = DEFAULT_NORMALIZATION) -> pd.DataFrame:
  """Per-class Welch test of normalized recall, dense vs pruned population.

  Arguments are normalized recall matrices [n_models, n_classes] (see ``normalized_recall``); the
  populations may have different sizes.  ``confidence`` is the interval level, 1 - alpha by default.
  ``unchanged`` (bool [n_classes], optional) marks classes whose raw recall is identical in every model
  of both populations: they are reported but never tested (``class_hits``-based callers compute it).
  ``normalization`` says how the matrices were normalized; it decides whether the permutation p-value
  of complete separation is valid (per_model) or the case is untestable (population).
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
  n_d, n_p = w.n_dense, w.n_pruned
  change = w.mean_pruned - w.mean_dense

  # Confidence interval of pruned - dense; none where the test has no variance estimate or is not made.
  with np.errstate(invalid="ignore"):
    half = stats.t.ppf(0.5 + confidence / 2.0, w.df) * np.sqrt(w.var_dense / n_d + w.var_pruned / n_p)
  no_interval = w.case != _REGULAR
  ci_low = np.where(no_interval, np.nan, change - half)
  ci_high = np.where(no_interval, np.nan, change + half)

  # Hedges' g: Cohen's d on the pooled standard deviation times J(n_d + n_p - 2).
  if min(n_d, n_p) >= 2:
    pooled_df = n_d + n_p - 2
    with np.errstate(invalid="ignore", divide="ignore"):
      pooled_sd = np.sqrt(((n_d - 1) * w.var_dense + (n_p - 1) * w.var_pruned) / pooled_df)
      g = change / pooled_sd * _hedges_correction(pooled_df)
    g = np.where(np.isin(w.case, (_CONST_EQUAL, _UNCHANGED, _UNTESTABLE, _ABSENT)), np.nan, g)
    g = np.where(w.case == _CONST_SEPARATED, np.copysign(np.inf, change), g)
  else:
    g = np.full(change.shape, np.nan)

  defined = ~np.isnan(w.p)
  q = bh_q_values(w.p)

  notes = np.full(change.shape, "", dtype=object)
  notes[w.dense_constant & ~w.pruned_constant & (w.case == _REGULAR)] = NOTE_DENSE_CONSTANT
  notes[w.pruned_constant & ~w.dense_constant & (w.case == _REGULAR)] = NOTE_PRUNED_CONSTANT
  for code, text in (
    (_ABSENT, NOTE_ABSENT),
    (_SINGLE, NOTE_SINGLE_MODEL),
    (_CONST_EQUAL, NOTE_CONSTANT_EQUAL),
    (_CONST_SEPARATED, NOTE_CONSTANT_SEPARATED),
    (_UNTESTABLE, NOTE_CONSTANT_UNTESTABLE),
    (_UNCHANGED, NOTE_UNCHANGED),
  ):
    notes[w.case == code] = text

  frame = pd.DataFrame(
    {
      "n_dense": n_d,
      "n_pruned": n_p,
      "dense_mean": w.mean_dense,
      "pruned_mean": w.mean_pruned,
      "normalized_change": change,
      "t_statistic": w.t,
      "df": w.df,
      "p_value": w.p,
      "significant": defined & (w.p < alpha),
      "q_value": q,
      "significant_fdr": bh_rejections(q, alpha),
      "ci_low": ci_low,
      "ci_high": ci_high,
      "hedges_g": g,
      "note": notes,
    },
    index=pd.RangeIndex(change.shape[0], name="class_id"),
  )
  return frame


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
  alpha = _check_probability(alpha, "alpha")
  power = _check_probability(power, "power")
  if isinstance(max_models, bool) or not isinstance(max_models, (int, np.integer)) or max_models < 2:
    raise ValueError(f"max_models must be an int >= 2, got {max_models!r}")
  dense, pruned = _check_recall_pair(dense_norm, pruned_norm)
  num_classes = dense.shape[1]
  effect = np.broadcast_to(np.abs(np.asarray(effect, dtype=np.float64)), (num_classes,)).copy()
  if not np.all(np.isfinite(effect)) or np.any(effect == 0):
    raise ValueError("effect must be finite and non-zero (a zero effect needs infinitely many models)")

  w = _welch(dense, pruned)
  var_d, var_p = w.var_dense, w.var_pruned
  plannable = (w.case != _ABSENT) & (w.case != _SINGLE) & ((var_d + var_p) > 0)

  current = np.full(num_classes, np.nan)
  needed = np.full(num_classes, np.nan)
  achieved = np.full(num_classes, np.nan)
  idx = np.flatnonzero(plannable)
  if idx.size:
    vd, vp, eff = var_d[idx], var_p[idx], effect[idx]
    current[idx] = welch_power(vd, vp, w.n_dense, w.n_pruned, eff, alpha)

    def power_at(n):
      return welch_power(vd, vp, n, n, eff, alpha)

    lo = np.full(idx.size, 2, dtype=np.int64)
    hi = np.full(idx.size, 2, dtype=np.int64)
    done = power_at(hi) >= power
    # Invariant for unfinished classes: power(lo) < target; grow hi until power(hi) >= target.
    while not done.all():
      grow = ~done & (hi < max_models)
      if not grow.any():
        break
      lo = np.where(grow, hi, lo)
      hi = np.where(grow, np.minimum(hi * 2, max_models), hi)
      done = done | (grow & (power_at(hi) >= power))
    over = ~done
    search = done & (hi > 2)
    lo = np.where(search, lo, hi)
    while np.any(hi - lo > 1):
      mid = (lo + hi) // 2
      open_ = hi - lo > 1
      ok = power_at(mid) >= power
      hi = np.where(open_ & ok, mid, hi)
      lo = np.where(open_ & ~ok, mid, lo)
    result = hi.astype(np.float64)
    result[over] = np.inf
    needed[idx] = result
    achieved[idx] = np.where(over, np.nan, power_at(hi))

  notes = np.full(num_classes, "", dtype=object)
  notes[~plannable & (w.case != _ABSENT) & (w.case != _SINGLE)] = NOTE_NO_VARIANCE
  notes[w.case == _SINGLE] = NOTE_SINGLE_MODEL
  notes[w.case == _ABSENT] = NOTE_ABSENT
  notes[np.isinf(needed)] = NOTE_OVER_CAP

  per_class = pd.DataFrame(
    {
      "dense_var": var_d,
      "pruned_var": var_p,
      "effect": effect,
      "current_power": current,
      "models_needed": needed,
      "power_at_needed": achieved,
      "note": notes,
    },
    index=pd.RangeIndex(num_classes, name="class_id"),
  )
  planned = needed[~np.isnan(needed)]
  summary = {
    "effect_median": float(np.median(effect)),
    "alpha": alpha,
    "power": power,
    "current_models": (w.n_dense, w.n_pruned),
    "classes_planned": int(np.isfinite(planned).sum()),
    "classes_over_cap": int(np.isinf(planned).sum()),
    "classes_unplannable": int(np.isnan(needed).sum()),
    "median": float(np.quantile(planned, 0.5, method="inverted_cdf")) if planned.size else math.nan,
    "p90": float(np.quantile(planned, 0.9, method="inverted_cdf")) if planned.size else math.nan,
    "max": float(planned.max()) if planned.size else math.nan,
  }
  return SampleSizePlan(per_class=per_class, summary=summary)


# --------------------------------------------------------------------------------------------------
# Weighted modal labels on a sorted vote table
# --------------------------------------------------------------------------------------------------


class _SortedVotes:
  """A population's votes sorted per example, so that any weighting of its models is tallied fast.

  Each column (example) of the [n_models, n_examples] label matrix is sorted once; equal labels then
  form runs.  For a vector of model weights w (resampling multiplicities), a running sum of w that
  restarts at every run start, read at the run's last position, is that label's weighted vote count.
  The sum walks the n_models sorted rows one at a time, so each step is a contiguous vector
  operation over the examples and memory stays O(n_models x n_examples), never
  O(n_examples x n_classes).
  """

  def __init__(self, predictions: np.ndarray, num_classes: int):
    n_models, n_examples = predictions.shape
    self.shape = (n_models, n_examples)
    self.num_classes = num_classes
    self.order = np.argsort(predictions, axis=0, kind="stable").astype(np.intp)
    sorted_labels = np.take_along_axis(predictions, self.order, axis=0)
    # same_run[j] = 1 when sorted position j continues the run of position j - 1.
    self.same_run = np.zeros((n_models, n_examples), dtype=np.int64)
    self.same_run[1:] = sorted_labels[1:] == sorted_labels[:-1]
    self.run_end = np.ones((n_models, n_examples), dtype=bool)
    self.run_end[:-1] = self.same_run[1:] == 0
    # Key = count * num_classes + (num_classes - 1 - label): its maximum picks the largest count,
    # then the smallest label.
    self.key_dtype = np.int32 if (n_models + 1) * num_classes < np.iinfo(np.int32).max else np.int64
    self.same_run = self.same_run.astype(self.key_dtype)
    self.label_key = (num_classes - 1 - sorted_labels).astype(self.key_dtype)

  def modal(self, weights: np.ndarray) -> np.ndarray:
    """Modal label per example for non-negative integer model weights (ties: smallest id).

    Inside a run the running total only grows, so the maximum key over all positions equals the
    maximum over run ends.
    """
    weights = np.asarray(weights).astype(self.key_dtype)
    total = weights[self.order[0]]
    best = total * self.num_classes + self.label_key[0]
    key = np.empty_like(best)
    for j in range(1, self.shape[0]):
      np.multiply(total, self.same_run[j], out=total)
      np.add(total, weights[self.order[j]], out=total)
      np.multiply(total, self.num_classes, out=key)
      np.add(key, self.label_key[j], out=key)
      np.maximum(best, key, out=best)
    return (self.num_classes - 1 - best % self.num_classes).astype(np.int64)

  def abs_run_totals(self, weights: np.ndarray) -> np.ndarray:
    """Sum over runs of |weighted run total| per example, for signed integer weights (int64)."""
    weights = np.asarray(weights, dtype=np.int64)
    same = self.same_run.astype(np.int64)
    total = np.zeros(self.shape[1], dtype=np.int64)
    result = np.zeros(self.shape[1], dtype=np.int64)
    for j in range(self.shape[0]):
      total = total * same[j] + weights[self.order[j]]
      result += np.where(self.run_end[j], np.abs(total), 0)
    return result


def _modal_labels(predictions: np.ndarray, num_classes: int) -> np.ndarray:
  votes = _SortedVotes(predictions, num_classes)
  return votes.modal(np.ones(predictions.shape[0], dtype=np.int64))


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


def bootstrap_class_stability(dense_hits, pruned_hits, class_count, dense_rows, pruned_rows, alpha: float = 0.05,
                              normalization: str = DEFAULT_NORMALIZATION, chunk_size: int = 25):
  """The class part of ``bootstrap_stability`` from ``class_hits`` of both populations and the class sizes.

  Returns (class_significance [n_classes], observed_significant [n_classes]): the replicability of
  ``p < alpha`` when the models are resampled, and the observed ``p < alpha``.
  """
  recall_d, top1_d = _recall_from_hits(np.asarray(dense_hits), np.asarray(class_count))
  recall_p, top1_p = _recall_from_hits(np.asarray(pruned_hits), np.asarray(class_count))
  exchangeable = normalization == "per_model"
  observed = _welch(_normalize(recall_d, top1_d, normalization), _normalize(recall_p, top1_p, normalization),
                    unchanged=unchanged_classes(recall_d, recall_p), exchangeable=exchangeable)
  observed_significant = ~np.isnan(observed.p) & (observed.p < alpha)
  num_resamples = len(dense_rows)
  hits = np.zeros(recall_d.shape[1], dtype=np.int64)
  for start in range(0, num_resamples, chunk_size):
    stop = min(start + chunk_size, num_resamples)
    rows_d, rows_p = dense_rows[start:stop], pruned_rows[start:stop]
    res = _welch(
      _resampled_normalized(recall_d, top1_d, rows_d, normalization),
      _resampled_normalized(recall_p, top1_p, rows_p, normalization),
      unchanged=unchanged_classes(recall_d[rows_d], recall_p[rows_p]), exchangeable=exchangeable,
    )
    hits += (~np.isnan(res.p) & (res.p < alpha)).sum(axis=0)
  testable = ~np.isnan(observed.p)
  return np.where(testable, hits / num_resamples, np.nan), observed_significant


def bootstrap_pie_stability(dense_preds, pruned_preds, num_classes: int, dense_rows, pruned_rows,
                            return_counts: bool = False):
  """The PIE part of ``bootstrap_stability``: (pie_stability [n_examples], observed_pie [n_examples]).

  With ``return_counts``, also the number of PIEs in every resample, int64 [num_resamples].  Each
  example's result depends on its own column of predictions only, so the examples may be split into
  blocks, the blocks' per-example results concatenated and their counts added.
  """
  dense_preds = np.asarray(dense_preds)
  pruned_preds = np.asarray(pruned_preds)
  n_d, n_p = dense_preds.shape[0], pruned_preds.shape[0]
  observed_pie = _modal_labels(dense_preds, num_classes) != _modal_labels(pruned_preds, num_classes)
  unanimous = (dense_preds == dense_preds[0]).all(axis=0) & (pruned_preds == pruned_preds[0]).all(axis=0)
  pie_stability = observed_pie.astype(np.float64)  # exact for unanimous examples
  contested = np.flatnonzero(~unanimous)
  num_resamples = len(dense_rows)
  counts = np.full(num_resamples, np.count_nonzero(observed_pie[unanimous]), dtype=np.int64)
  if contested.size:
    votes_d = _SortedVotes(dense_preds[:, contested], num_classes)
    votes_p = _SortedVotes(pruned_preds[:, contested], num_classes)
    pie_count = np.zeros(contested.size, dtype=np.int64)
    for b in range(num_resamples):
      w_d = np.bincount(dense_rows[b], minlength=n_d)
      w_p = np.bincount(pruned_rows[b], minlength=n_p)
      resampled_pie = votes_d.modal(w_d) != votes_p.modal(w_p)
      pie_count += resampled_pie
      counts[b] += np.count_nonzero(resampled_pie)
    pie_stability[contested] = pie_count / num_resamples
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
  dense_preds = _check_predictions(dense_preds, num_classes, "dense_preds")
  pruned_preds = _check_predictions(pruned_preds, num_classes, "pruned_preds")
  if dense_preds.shape[1] != pruned_preds.shape[1]:
    raise ValueError(
      f"dense_preds has {dense_preds.shape[1]} examples but pruned_preds has {pruned_preds.shape[1]}"
    )
  labels = _check_labels(labels, dense_preds.shape[1], num_classes)
  if isinstance(num_resamples, bool) or not isinstance(num_resamples, (int, np.integer)) or num_resamples < 1:
    raise ValueError(f"num_resamples must be an int >= 1, got {num_resamples!r}")
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
  alpha = _check_probability(alpha, "alpha")
  normalization = _check_normalization(normalization)

  dense_rows, pruned_rows = bootstrap_resamples(dense_preds.shape[0], pruned_preds.shape[0], num_resamples, seed)
  class_count = np.bincount(labels, minlength=num_classes)
  class_significance, observed_significant = bootstrap_class_stability(
    _class_hits(dense_preds, labels, num_classes), _class_hits(pruned_preds, labels, num_classes), class_count,
    dense_rows, pruned_rows, alpha=alpha, normalization=normalization, chunk_size=chunk_size)
  pie_stability, observed_pie, pie_counts = bootstrap_pie_stability(dense_preds, pruned_preds, num_classes,
                                                                    dense_rows, pruned_rows, return_counts=True)
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
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
      raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  if n_first + n_second > pool_size:
    raise ValueError(f"a pool of {pool_size} models cannot be split into {n_first} + {n_second}")
  rng = np.random.default_rng(seed)
  order = np.stack([rng.permutation(pool_size) for _ in range(num_splits)])
  return order[:, :n_first], order[:, n_first:n_first + n_second]


def _split_weights(rows: np.ndarray, pool_size: int) -> np.ndarray:
  weights = np.zeros(pool_size, dtype=np.int64)
  weights[rows] = 1
  return weights


def split_pie_counts(pool_predictions, first_rows, second_rows, num_classes: int) -> np.ndarray:
  """PIEs between the two populations of every split, int64 [num_splits].

  ``pool_predictions`` is int [pool_size, n_examples].  Each example counts on its own, so blocks of
  examples may be counted apart and the counts added.  Examples on which the whole pool agrees cannot
  be PIEs and are skipped.
  """
  num_classes = _check_num_classes(num_classes)
  pool = _check_predictions(pool_predictions, num_classes, "pool_predictions")
  first_rows, second_rows = np.asarray(first_rows), np.asarray(second_rows)
  counts = np.zeros(len(first_rows), dtype=np.int64)
  contested = np.flatnonzero(~(pool == pool[0]).all(axis=0))
  if contested.size:
    votes = _SortedVotes(pool[:, contested], num_classes)
    for s in range(len(first_rows)):
      counts[s] = np.count_nonzero(votes.modal(_split_weights(first_rows[s], len(pool)))
                                   != votes.modal(_split_weights(second_rows[s], len(pool))))
  return counts


def split_class_tests(pool_hits, class_count, first_rows, second_rows, alpha: float = 0.05,
                      normalization: str = DEFAULT_NORMALIZATION, chunk_size: int = 25) -> dict:
  """The class tests of every split, summarized per split.

  Returns {"num_tested", "num_significant" (p < alpha), "num_significant_fdr" (BH q <= alpha)}, each
  int64 [num_splits].  ``pool_hits`` is ``class_hits`` of the pool [pool_size, n_classes].
  """
  alpha = _check_probability(alpha, "alpha")
  normalization = _check_normalization(normalization)
  recall, top1 = _recall_from_hits(np.asarray(pool_hits), np.asarray(class_count))
  first_rows, second_rows = np.asarray(first_rows), np.asarray(second_rows)
  out = {k: np.zeros(len(first_rows), dtype=np.int64) for k in ("num_tested", "num_significant",
                                                                  "num_significant_fdr")}
  for start in range(0, len(first_rows), chunk_size):
    rows_a, rows_b = first_rows[start:start + chunk_size], second_rows[start:start + chunk_size]
    res = _welch(_resampled_normalized(recall, top1, rows_a, normalization),
                 _resampled_normalized(recall, top1, rows_b, normalization),
                 unchanged=unchanged_classes(recall[rows_a], recall[rows_b]),
                 exchangeable=normalization == "per_model")
    for i, p in enumerate(res.p):
      out["num_tested"][start + i] = np.count_nonzero(~np.isnan(p))
      out["num_significant"][start + i] = np.count_nonzero(~np.isnan(p) & (p < alpha))
      out["num_significant_fdr"][start + i] = np.count_nonzero(bh_rejections(bh_q_values(p), alpha))
  return out


def aa_calibration(pool_hits, class_count, n_first: int, n_second: int, num_splits: int = 200, alpha: float = 0.05,
                   seed: int = 0, normalizations=NORMALIZATIONS, confidence: float = 0.95) -> pd.DataFrame:
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
    rows.append({
      "normalization": normalization, "pool_models": int(np.shape(pool_hits)[0]), "n_first": n_first,
      "n_second": n_second, "num_splits": num_splits, "alpha": alpha, "num_tests": tested,
      "rate_significant": flagged / tested if tested else math.nan,
      "rate_ci_low": rate_ci.low if rate_ci else math.nan, "rate_ci_high": rate_ci.high if rate_ci else math.nan,
      "splits_with_fdr_discovery": with_discovery / num_splits, "fdr_splits_ci_low": fwer_ci.low,
      "fdr_splits_ci_high": fwer_ci.high,
      "rate_consistent_with_alpha": bool(rate_ci and rate_ci.low <= alpha <= rate_ci.high),
      "fdr_splits_at_most_alpha": bool(fwer_ci.low <= alpha),
    })
  return pd.DataFrame(rows)


def pies_against_floor(observed: int, floor_mean=None, level_counts=None, control_counts=None,
                       alpha: float = 0.05) -> dict:
  """A compressed population's PIEs set against seed noise.

  observed: PIEs of the compressed population against the dense one.
  floor_mean: the expected PIEs of two dense populations of these sizes (the mean of the A/A splits of the dense and
    replicate models), or None; ``excess = observed - floor_mean``.
  level_counts, control_counts: PIEs of the compressed population and of a control against the dense one in the same
    bootstrap resamples (the same dense resample for both: ``bootstrap_pie_stability`` with ``return_counts``).
  The interval is ``excess`` plus the alpha/2 and 1 - alpha/2 quantiles of the centred differences (``level -
  control`` minus its mean): the spread of the excess when the models are redrawn, with the dense population's own
  luck shared by both terms. ``distinguishable`` is ``ci_low > 0``. On real models where nothing differs it was true
  in 2 of 150 draws (docs/statistics.md): conservative. All None without a floor, a control or resamples.

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
  baseline = _check_predictions(baseline_preds, num_classes, "baseline_preds")
  compressed = _check_predictions(compressed_preds, num_classes, "compressed_preds")
  if baseline.shape[1] != compressed.shape[1]:
    raise ValueError(
      f"baseline_preds has {baseline.shape[1]} examples but compressed_preds has {compressed.shape[1]}"
    )
  n_b, n_c = baseline.shape[0], compressed.shape[0]
  baseline_modal = _modal_labels(baseline, num_classes)
  compressed_modal = _modal_labels(compressed, num_classes)

  common = np.result_type(baseline.dtype, compressed.dtype)
  votes = _SortedVotes(np.concatenate([baseline.astype(common), compressed.astype(common)]), num_classes)
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


def exemplar_frame(baseline_modal, compressed_modal, l1_int, n_baseline: int, n_compressed: int, rank,
                   example_ids=None) -> pd.DataFrame:
  """The ``exemplar_scores`` table from its parts (``example_ids`` default to 0 .. n - 1)."""
  baseline_modal = np.asarray(baseline_modal)
  compressed_modal = np.asarray(compressed_modal)
  index = (pd.RangeIndex(len(l1_int), name="example_id") if example_ids is None
           else pd.Index(np.asarray(example_ids, dtype=np.int64), name="example_id"))
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
