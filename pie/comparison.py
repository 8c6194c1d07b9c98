"""One model against its compressed versions: which classes and which images the compression breaks.

The population analysis (pie.analysis) compares populations of independently trained models. Most people who compress
a model have one trained model and its compressed versions (pruned, int8, ...), and want to know before shipping
which classes and images change. Here the unit is the example: both models score the same eval split, so every
example gives a paired outcome (reference right or wrong, candidate right or wrong), and a class's change is tested
on its own examples.

Per candidate and class:
  recall_change    candidate recall - reference recall
  excess_change    recall_change minus the overall top-1 change: how much more (negative) or less the class moved
                   than the model as a whole
  ci_low, ci_high  percentile interval of excess_change over a stratified bootstrap of the examples (each class's
                   examples resampled within the class, the overall change recomputed from all of them)
  p_value          exact McNemar test of the class's paired outcomes: the examples the candidate loses (right ->
                   wrong) against those it gains (wrong -> right), two-sided binomial test with p = 1/2
                   (scipy.stats.binomtest); 1 when no example flips
  q_value          Benjamini-Hochberg over the classes of the candidate; significant_fdr = q <= alpha
Per candidate (the summary): top-1 of both, agreement rate of their top-1, flips each way, classes significant after
FDR, the largest harm (most negative excess_change) with its interval, the intensification ratio (Good et al., NeurIPS
2022: among the classes whose reference recall is below the reference's top-1, the share whose excess_change is
negative) and the gate.

The gate, for CI pipelines: a candidate fails when some class's harm may exceed `max_excess_drop` (the upper end of
its interval of harm, -ci_low, is above it) or when the top-1 drop may exceed `max_top1_drop` (the upper end of its
bootstrap interval is above it). Upper ends, so that a gate passes only what the data show to be within bounds.

The statistics are numpy/scipy on label arrays (`compare_pair`, `compare` on `Predictions`); `compare_models` reads
models and prediction files and is what `pie.compare` and analysis/compare.py call.
"""

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from pie import significance
from pie.errors import PieError

CLASS_COLUMNS = (
    "candidate",
    "class_id",
    "class_name",
    "num_examples",
    "reference_recall",
    "candidate_recall",
    "recall_change",
    "excess_change",
    "ci_low",
    "ci_high",
    "p_value",
    "q_value",
    "significant_fdr",
)
EXAMPLE_COLUMNS = (
    "candidate",
    "example_id",
    "label",
    "reference_pred",
    "candidate_pred",
    "reference_prob",
    "candidate_prob",
    "reference_correct",
    "candidate_correct",
)
DEFAULT_BOOTSTRAP = 1000


@dataclasses.dataclass(frozen=True)
class Predictions:
  """One model's predictions on the eval split: top-1 labels and their probabilities (NaN when unknown)."""

  name: str
  top1: np.ndarray  # int [n_examples]
  prob: np.ndarray  # float [n_examples]


@dataclasses.dataclass(frozen=True)
class Gate:
  """Bounds a candidate must stay within; None disables a bound."""

  max_excess_drop: float | None = None
  max_top1_drop: float | None = None


@dataclasses.dataclass(frozen=True)
class Comparison:
  """The result of `compare`: the two tables and one summary dict per candidate (see the module docstring)."""

  classes: pd.DataFrame
  examples: pd.DataFrame
  summaries: list

  @property
  def passed(self):
    """True when every candidate passes the gate (or no gate was set)."""
    return all(s["gate"]["passed"] for s in self.summaries)


def mcnemar_p_values(lost, gained):
  """Exact two-sided McNemar p-values for discordant counts: binomial test of `lost` among `lost + gained` at 1/2.

  Vectorized over classes; 1 where no example flips (nothing to test).
  """
  lost, gained = np.asarray(lost, np.int64), np.asarray(gained, np.int64)
  return np.array(
      [scipy_stats.binomtest(int(a), int(a + b), 0.5).pvalue if a + b else 1.0 for a, b in zip(lost, gained)]
  )


def _flip_counts(labels, reference, candidate, num_classes):
  """Per class: examples, reference hits, candidate hits, lost (right -> wrong), gained (wrong -> right)."""
  ref_right, cand_right = reference == labels, candidate == labels

  def count(mask):
    return np.bincount(labels[mask], minlength=num_classes)

  return (
      np.bincount(labels, minlength=num_classes),
      count(ref_right),
      count(cand_right),
      count(ref_right & ~cand_right),
      count(~ref_right & cand_right),
  )


def bootstrap_changes(sizes, lost, gained, num_resamples, seed=0):
  """Stratified bootstrap of the per-class recall change and the overall top-1 change.

  Each class's examples are resampled within the class: its number of lost, gained and unchanged examples in a
  resample is multinomial with the observed shares. Returns (class_change [num_resamples, C], overall_change
  [num_resamples]); classes without examples are NaN.
  """
  rng = np.random.default_rng(seed)
  sizes, lost, gained = (np.asarray(x, np.int64) for x in (sizes, lost, gained))
  num_classes = len(sizes)
  net = np.zeros((num_resamples, num_classes))
  for c in np.flatnonzero(sizes):
    shares = np.array([lost[c], gained[c], sizes[c] - lost[c] - gained[c]]) / sizes[c]
    draws = rng.multinomial(sizes[c], shares, size=num_resamples)
    net[:, c] = draws[:, 1] - draws[:, 0]
  with np.errstate(invalid="ignore", divide="ignore"):
    class_change = np.where(sizes > 0, net / np.maximum(sizes, 1), np.nan)
  overall = net.sum(axis=1) / sizes.sum()
  return class_change, overall


def compare_pair(
    labels, reference, candidate, class_names, alpha=0.05, num_resamples=DEFAULT_BOOTSTRAP, seed=0, gate=Gate()
):
  """The class table, the flipped examples and the summary of one candidate against the reference."""
  labels = np.asarray(labels, np.int64)
  num_classes = len(class_names)
  ref, cand = np.asarray(reference.top1, np.int64), np.asarray(candidate.top1, np.int64)
  if ref.shape != labels.shape or cand.shape != labels.shape:
    raise PieError(
        f"{candidate.name}: {cand.shape[0]} predictions, {reference.name}: {ref.shape[0]}, for "
        f"{labels.shape[0]} labels: the models must score the same eval split"
    )
  for name, top1 in ((reference.name, ref), (candidate.name, cand)):
    if top1.size and (top1.min() < 0 or top1.max() >= num_classes):
      raise PieError(
          f"{name}: predicts class ids outside 0..{num_classes - 1}: its outputs do not match the "
          f"dataset's {num_classes} classes"
      )
  sizes, ref_hits, cand_hits, lost, gained = _flip_counts(labels, ref, cand, num_classes)
  n = len(labels)
  with np.errstate(invalid="ignore", divide="ignore"):
    ref_recall = np.where(sizes > 0, ref_hits / np.maximum(sizes, 1), np.nan)
    cand_recall = np.where(sizes > 0, cand_hits / np.maximum(sizes, 1), np.nan)
  top1_change = (cand_hits.sum() - ref_hits.sum()) / n
  recall_change = cand_recall - ref_recall
  excess = recall_change - top1_change
  class_change, overall = bootstrap_changes(sizes, lost, gained, num_resamples, seed)
  boot_excess = class_change - overall[:, None]
  with np.errstate(invalid="ignore"):
    low, high = (
        np.nanquantile(boot_excess, [alpha / 2, 1 - alpha / 2], axis=0)
        if num_resamples
        else (np.full(num_classes, np.nan),) * 2
    )
  low = np.where(sizes > 0, low, np.nan)
  high = np.where(sizes > 0, high, np.nan)
  p = np.where(sizes > 0, mcnemar_p_values(lost, gained), np.nan)
  q = significance.bh_q_values(p)
  classes = pd.DataFrame(
      {
          "candidate": candidate.name,
          "class_id": np.arange(num_classes),
          "class_name": list(class_names),
          "num_examples": sizes,
          "reference_recall": ref_recall,
          "candidate_recall": cand_recall,
          "recall_change": recall_change,
          "excess_change": excess,
          "ci_low": low,
          "ci_high": high,
          "p_value": p,
          "q_value": q,
          "significant_fdr": significance.bh_rejections(q, alpha),
      },
      columns=list(CLASS_COLUMNS),
  )
  changed = np.flatnonzero(ref != cand)
  examples = pd.DataFrame(
      {
          "candidate": candidate.name,
          "example_id": changed,
          "label": labels[changed],
          "reference_pred": ref[changed],
          "candidate_pred": cand[changed],
          "reference_prob": np.asarray(reference.prob, np.float64)[changed],
          "candidate_prob": np.asarray(candidate.prob, np.float64)[changed],
          "reference_correct": ref[changed] == labels[changed],
          "candidate_correct": cand[changed] == labels[changed],
      },
      columns=list(EXAMPLE_COLUMNS),
  )
  summary = _summary(classes, ref, cand, labels, lost, gained, overall, top1_change, alpha, gate)
  summary["candidate"] = candidate.name
  return classes, examples, summary


def _summary(classes, ref, cand, labels, lost, gained, overall_boot, top1_change, alpha, gate):
  ref_top1, cand_top1 = float(np.mean(ref == labels)), float(np.mean(cand == labels))
  present = classes.loc[classes["num_examples"] > 0]
  worst = present.loc[present["excess_change"].idxmin()] if len(present) else None
  below = present.loc[present["reference_recall"] < ref_top1]
  drop_high = float(np.quantile(-overall_boot, 1 - alpha / 2)) if len(overall_boot) else math.nan
  failures = []
  if gate.max_excess_drop is not None:
    harm_high = -present["ci_low"]
    over = present.loc[harm_high > gate.max_excess_drop]
    failures += [
        f"class {r.class_name} may lose up to {-r.ci_low:.3f} more than overall (bound " f"{gate.max_excess_drop:g})"
        for r in over.itertuples(index=False)
    ]
  if gate.max_top1_drop is not None and drop_high > gate.max_top1_drop:
    failures.append(f"top-1 may drop by up to {drop_high:.3f} (bound {gate.max_top1_drop:g})")
  return {
      "reference_top1": ref_top1,
      "candidate_top1": cand_top1,
      "top1_change": float(top1_change),
      "top1_drop_ci_high": drop_high,
      "agreement": float(np.mean(ref == cand)),
      "flips_correct_to_wrong": int(np.sum(lost)),
      "flips_wrong_to_correct": int(np.sum(gained)),
      "num_significant_classes_fdr": int(classes["significant_fdr"].sum()),
      "largest_harm": None
      if worst is None
      else {
          "class_id": int(worst["class_id"]),
          "class_name": str(worst["class_name"]),
          "excess_change": float(worst["excess_change"]),
          "ci_low": float(worst["ci_low"]),
          "ci_high": float(worst["ci_high"]),
      },
      "intensification_ratio": (float(np.mean(below["excess_change"] < 0)) if len(below) else None),
      "classes_below_top1": int(len(below)),
      "gate": {
          "max_excess_drop": gate.max_excess_drop,
          "max_top1_drop": gate.max_top1_drop,
          "passed": not failures,
          "failures": failures,
      },
  }


def compare(
    labels, reference, candidates, class_names, alpha=0.05, num_resamples=DEFAULT_BOOTSTRAP, seed=0, gate=Gate()
):
  """Every candidate against the reference: a `Comparison` (tables concatenated in candidate order)."""
  if not candidates:
    raise PieError("give at least one candidate to compare with the reference")
  names = [c.name for c in candidates]
  if len(set(names)) != len(names) or reference.name in names:
    raise PieError(f"the reference and candidates need distinct names, got {reference.name!r} and {names}")
  parts = [compare_pair(labels, reference, c, class_names, alpha, num_resamples, seed, gate) for c in candidates]
  return Comparison(
      classes=pd.concat([p[0] for p in parts], ignore_index=True),
      examples=pd.concat([p[1] for p in parts], ignore_index=True),
      summaries=[p[2] for p in parts],
  )
