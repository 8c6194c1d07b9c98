"""One model against its compressed versions: which classes and which images the compression breaks.

The population analysis (pie.analysis) compares populations of independently trained models. Most people who compress
a model have one trained model and its compressed versions (pruned, int8, ...), and want to know before shipping
which classes and images change. Here the unit is the example: both models score the same eval split, so every
example gives a paired outcome (reference right or wrong, candidate right or wrong), and a class's change is measured
on its own examples.

Per candidate and class (compare_classes.csv, pie/outputs.py COMPARE_CLASSES):
  recall_change    candidate recall - reference recall
  excess_change    recall_change minus the overall top-1 change: how much more (negative) or less the class moved
                   than the model as a whole
  ci_low, ci_high  interval of excess_change at level 1 - alpha, each end a one-sided bound from a Bayesian bootstrap
                   over the examples with one pseudo-example on its side (`excess_change_bounds`): the harm bound
                   covers a class that is truly hurt
  p_value          exact McNemar test of the class's paired outcomes: the examples the candidate loses (right ->
                   wrong) against those it gains (wrong -> right), two-sided binomial test at 1/2
                   (scipy.stats.binomtest); 1 when no example flips. It asks whether the class's own recall changed;
                   the interval asks whether it changed more than top-1.
  q_value          Benjamini-Hochberg over the classes of the candidate; significant_fdr = q <= alpha
Per candidate (compare_summary.json `candidates`): top-1 of both, agreement of their top-1, flips each way, the classes
significant after FDR, the largest harm (most negative excess_change) with its interval, the intensification ratio,
the measured size, and the gate.

The intensification ratio follows Good et al. (NeurIPS 2022, "Recall distortion in neural network pruning"): among the
classes whose reference recall differs from the reference's top-1, the share that compression moves further from it,
relatively: a class below top-1 whose excess_change is negative, or a class above it whose excess_change is positive.
About 1/2 when compression moves classes at random, above 1/2 when it intensifies the differences between classes.
None when no class moved relative to top-1 (e.g. a candidate identical to the reference).

The gate, for CI pipelines: a candidate fails when some class's harm may exceed `max_excess_drop` (the upper end of
its interval of harm, -ci_low, is above it) or when the top-1 drop may exceed `max_top1_drop` (the upper end of its
interval, `excess_change_bounds` too, is above it). Upper ends, so that a gate passes only what the data show to be
within bounds.

`compare` (`pie.compare`) takes paths, models or arrays (pie.comparison_inputs says which) and returns a
`Comparison`; `Comparison.write` writes compare_classes.csv, compare_examples.csv, compare_summary.json and
compare.html; `run` does both for `python -m analysis.compare`. The statistics (`compare_outputs`, `compare_pair`,
`excess_change_bounds`, `mcnemar_p_values`) work on arrays and need no TensorFlow.
"""

import dataclasses
import os

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from pie import comparison_inputs
from pie import names as names_lib
from pie import outputs
from pie import significance
from pie.errors import PieError

# One model's answers on the eval split, as the statistics take them (defined with the loaders that make them).
ModelOutputs = comparison_inputs.ModelOutputs
DEFAULT_BOOTSTRAP = 2000
# Jeffreys' prior: half an example of each direction of change that occurs in the split, in every class
# (see bootstrap_changes).
PRIOR_COUNT = 0.5
# Classes whose Dirichlet draws are made at once: the gamma draws of 1000 classes would hold resamples x 1000 x 3
# doubles at a time; blocks keep that temporary to resamples x 256 x 3.
_CLASS_BLOCK = 256


@dataclasses.dataclass(frozen=True)
class Gate:
  """Bounds a candidate must stay within (fractions: 0.05 = 5 points of recall); None disables a bound."""

  max_excess_drop: float | None = None
  max_top1_drop: float | None = None

  def __post_init__(self):
    for name in ("max_excess_drop", "max_top1_drop"):
      value = getattr(self, name)
      if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
        raise PieError(f"{name} must be a fraction in [0, 1] (0.05 = 5 points), got {value!r}", parameter=name)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """What `compare` returns.

  classes: compare_classes.csv, one row per candidate per class (columns: pie.outputs.COMPARE_CLASSES).
  examples: compare_examples.csv, one row per candidate per example whose top-1 changed (pie.outputs.COMPARE_EXAMPLES).
  summary: compare_summary.json (keys: pie.outputs.COMPARE_SUMMARY_KEYS; one entry of `candidates` per candidate,
    keys pie.outputs.COMPARE_CANDIDATE_KEYS).
  """

  classes: pd.DataFrame
  examples: pd.DataFrame
  summary: dict
  split: object = dataclasses.field(default=None, repr=False, compare=False)  # comparison_inputs.EvalSplit
  # compare_groups.csv (pie.outputs.COMPARE_GROUPS), when groups were compared (prediction tables' task and group_by).
  groups: pd.DataFrame | None = None
  # table_examples.csv (pie.outputs.TABLE_EXAMPLES): what each example_id is in the prediction tables compared.
  example_table: pd.DataFrame | None = dataclasses.field(default=None, repr=False)

  @property
  def candidates(self):
    """The per-candidate summaries, in candidate order."""
    return self.summary["candidates"]

  @property
  def passed(self):
    """True when every candidate passes the gate (or no gate was set)."""
    return self.summary["passed"]

  def gate_line(self):
    """One line for a CI log: the verdict, and for each failing candidate the classes (or top-1) over the bounds."""
    gate = self.summary["settings"]
    bounds = [f"{k} {gate[k]:g}" for k in ("max_excess_drop", "max_top1_drop") if gate[k] is not None]
    if not bounds:
      return "no gate set (max_excess_drop, max_top1_drop)"
    if self.passed:
      return f"gate passed ({', '.join(bounds)}): {len(self.candidates)} candidate(s) within bounds"
    parts = [f"{c['name']}: {'; '.join(c['gate']['failures'])}" for c in self.candidates if not c["gate"]["passed"]]
    return f"gate failed ({', '.join(bounds)}): " + " | ".join(parts)

  def write(self, out_dir, images=True, page_size=60, log=print):
    """Writes the four files into out_dir, each atomically, once all of them are ready (an error writes none), and
    compare_groups.csv and table_examples.csv when the comparison has them (prediction tables).

    images: the changed examples' images for compare.html's gallery, from the eval split (`eval_display_images`);
      False, or a comparison of arrays without a dataset, shows labels only. A dict {example_id: uint8 [H, W, C]}
      gives them directly.
    page_size: gallery cards per page.
    """
    from pie import analysis  # pylint: disable=import-outside-toplevel
    from pie import io_utils  # pylint: disable=import-outside-toplevel
    from pie.report import compare_page  # pylint: disable=import-outside-toplevel

    out_dir = names_lib.resolve_path(out_dir, "out_dir")
    found = None
    if isinstance(images, dict):
      found = images
    elif images and self.split is not None and self.split.dataset is not None and len(self.examples):
      ids = np.unique(self.examples["example_id"].to_numpy())
      log(f"reading {len(ids)} images of changed examples from {self.split.name}/{self.split.split}")
      found = self.split.dataset.eval_display_images(ids)
    texts = {
        outputs.COMPARE_CLASSES_CSV: analysis.csv_text(self.classes),
        outputs.COMPARE_EXAMPLES_CSV: analysis.csv_text(self.examples),
        outputs.COMPARE_HTML: compare_page.render(self, found, page_size=page_size),
    }
    if self.groups is not None:
      texts[outputs.COMPARE_GROUPS_CSV] = analysis.csv_text(self.groups)
    if self.example_table is not None:
      texts[outputs.TABLE_EXAMPLES_CSV] = analysis.csv_text(self.example_table)
    io_utils.makedirs(out_dir)
    for name, text in texts.items():
      io_utils.write_text(os.path.join(out_dir, name), text)
    io_utils.write_json(os.path.join(out_dir, outputs.COMPARE_SUMMARY_JSON), self.summary)
    return out_dir


def mcnemar_p_values(lost, gained):
  """Exact two-sided McNemar p-values for discordant counts: binomial test of `lost` among `lost + gained` at 1/2.

  One value per class; 1 where no example flips (nothing to test).
  """
  lost, gained = np.asarray(lost, np.int64), np.asarray(gained, np.int64)
  return np.array(
      [scipy_stats.binomtest(int(a), int(a + b), 0.5).pvalue if a + b else 1.0 for a, b in zip(lost, gained)],
      dtype=np.float64,
  )


def correctness(labels, outputs):
  """bool [n_examples]: which examples a model (ModelOutputs) got right: its `correct` when a metric decides (prediction
  tables), else its top-1 against the label."""
  if outputs.correct is not None:
    return np.asarray(outputs.correct, bool)
  return np.asarray(outputs.top1, np.int64) == np.asarray(labels, np.int64)


@dataclasses.dataclass(frozen=True)
class Outcomes:
  """The paired outcomes counted per unit (a class, or a value of a group column): examples, reference hits,
  candidate hits, lost (right -> wrong) and gained (wrong -> right)."""

  sizes: np.ndarray
  reference_hits: np.ndarray
  candidate_hits: np.ndarray
  lost: np.ndarray
  gained: np.ndarray

  @classmethod
  def count(cls, units, num_units, reference_right, candidate_right):
    """Counts over examples whose unit is `units[i]` (examples with unit -1, e.g. without a class, count nowhere)."""
    units = np.asarray(units, np.int64)
    ref, cand = np.asarray(reference_right, bool), np.asarray(candidate_right, bool)
    valid = units >= 0

    def count(mask):
      return np.bincount(units[mask & valid], minlength=num_units)

    return cls(count(valid), count(ref), count(cand), count(ref & ~cand), count(~ref & cand))

  def plus(self, other):
    """These units followed by `other`'s."""
    return Outcomes(*(np.concatenate([a, b]) for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def flip_counts(labels, reference, candidate, num_classes):
  """Per class: examples, reference hits, candidate hits, lost (right -> wrong), gained (wrong -> right)."""
  labels = np.asarray(labels, np.int64)
  return dataclasses.astuple(Outcomes.count(labels, num_classes, reference == labels, candidate == labels))


def bootstrap_changes(sizes, lost, gained, num_resamples, seed=0):
  """Draws of every class's recall change and of the overall top-1 change: a stratified Bayesian bootstrap.

  Within each class, the shares of its examples that are lost, gained and unchanged are drawn from
  Dirichlet(counts + prior): Rubin's Bayesian bootstrap of the class's examples (Dirichlet weights on them), summed
  over the three outcomes, with Jeffreys' prior of 1/2 on each direction of change that occurs anywhere in the split
  (and on unchanged). The class sizes stay fixed, and the overall change of a draw is the size-weighted mean of its
  class changes.

  These draws were the interval and the gate until their bound was found to under-cover a class that is truly hurt
  (docs/statistics.md); ``excess_change_bounds`` replaced them. Kept for scripts that call it.

  Returns (class_change [num_resamples, C], overall_change [num_resamples]); classes without examples are NaN.
  """
  sizes, lost, gained = (np.asarray(x, np.int64) for x in (sizes, lost, gained))
  rng = np.random.default_rng(seed)
  num_classes = len(sizes)
  prior = np.array([PRIOR_COUNT * (lost.sum() > 0), PRIOR_COUNT * (gained.sum() > 0), PRIOR_COUNT])
  counts = np.stack([lost, gained, sizes - lost - gained], axis=1) + prior
  class_change = np.full((num_resamples, num_classes), np.nan)
  for start in range(0, num_classes, _CLASS_BLOCK):
    block = counts[start : start + _CLASS_BLOCK]
    draws = rng.gamma(np.broadcast_to(block, (num_resamples,) + block.shape))
    shares = draws / draws.sum(axis=2, keepdims=True)
    class_change[:, start : start + _CLASS_BLOCK] = shares[:, :, 1] - shares[:, :, 0]
  present = sizes > 0
  class_change[:, ~present] = np.nan
  total = sizes.sum()
  overall = (class_change[:, present] @ sizes[present]) / total if total else np.zeros(num_resamples)
  return class_change, overall


@dataclasses.dataclass(frozen=True)
class ExcessBounds:
  """Result of ``excess_change_bounds``: one-sided bounds at ``(1 + confidence) / 2`` each, so that each pair is an
  interval at ``confidence``.

  ci_low, ci_high: [C] bounds of each class's excess_change (NaN for a class without examples); ``-ci_low`` is the
    harm bound the gate's ``max_excess_drop`` reads.
  top1_change_low, top1_change_high: bounds of the overall top-1 change; ``-top1_change_low`` is the drop bound of
    ``max_top1_drop``.
  """

  ci_low: np.ndarray
  ci_high: np.ndarray
  top1_change_low: float
  top1_change_high: float


def _excess_draws(rng, counts, num_resamples):
  """Draws of each class's excess change with one pseudo-example on its harmful and on its helpful side.

  ``counts`` [C, 3] (lost, gained, unchanged) of the present classes. A Dirichlet is a set of gamma draws over their
  sum, and sums of its cells are Dirichlet with summed counts: one gamma draw per class and outcome serves both the
  class and the rest of the split for every class, and Gamma(1) draws add the pseudo-examples. Returns
  (harm [num_resamples, C], benefit [num_resamples, C], top-1 change low-side [num_resamples], high-side [...]).
  """
  num_classes = len(counts)
  cells = np.empty((num_resamples, num_classes, 3))
  for start in range(0, num_classes, _CLASS_BLOCK):
    block = counts[start : start + _CLASS_BLOCK]
    cells[:, start : start + _CLASS_BLOCK] = rng.gamma(np.broadcast_to(block, (num_resamples,) + block.shape))
  extra = rng.standard_exponential((4, num_resamples, num_classes))  # Gamma(1): the pseudo-examples
  lost, gained, total = cells[..., 0], cells[..., 1], cells.sum(axis=2)
  rest_lost, rest_gained = lost.sum(axis=1, keepdims=True) - lost, gained.sum(axis=1, keepdims=True) - gained
  rest_total = total.sum(axis=1, keepdims=True) - total

  def change(gain, loss, size):
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(size > 0, (gain - loss) / np.where(size > 0, size, 1.0), 0.0)

  harm = change(gained, lost + extra[0], total + extra[0]) - change(
      rest_gained + extra[1], rest_lost, rest_total + extra[1]
  )
  benefit = change(gained + extra[2], lost, total + extra[2]) - change(
      rest_gained, rest_lost + extra[3], rest_total + extra[3]
  )
  all_lost, all_gained, all_total = lost.sum(axis=1), gained.sum(axis=1), total.sum(axis=1)
  top1_low = (all_gained - all_lost - extra[0, :, 0]) / (all_total + extra[0, :, 0])
  top1_high = (all_gained + extra[2, :, 0] - all_lost) / (all_total + extra[2, :, 0])
  return harm, benefit, top1_low, top1_high


def excess_change_bounds(sizes, lost, gained, confidence=0.95, num_resamples=DEFAULT_BOOTSTRAP, seed=0) -> ExcessBounds:
  """Bounds of each class's excess_change and of the top-1 change that cover even when a class is truly hurt.

  The unit is the example: class c's examples are lost (right -> wrong), gained or unchanged with unknown shares, and
  ``excess_c = (1 - w_c) (change_c - change_rest)`` with ``w_c = n_c / n`` and ``change_rest`` the change of the
  other classes pooled. Each bound is a quantile of Bayesian-bootstrap draws (Dirichlet shares, Rubin) with one
  pseudo-example added on the side the bound guards against, as the Clopper-Pearson bound does: for the harm bound
  ``ci_low``, class c's shares are drawn from Dirichlet(L_c + 1, G_c, U_c) and the rest's from
  Dirichlet(L_r, G_r + 1, U_r), so that a class whose few losses went unseen (2.5 expected of 50, none observed in
  8% of splits) still gets a bound above its true harm; ``ci_high`` mirrors it. The top-1 bounds draw the whole
  split the same way (Dirichlet(L + 1, G, U) for the drop). A candidate that changes no example at all is the
  reference on this split: every bound is 0.

  The previous bounds (``bootstrap_changes``: Jeffreys' prior of 1/2 on the directions present) covered a harmless
  class but only about 94% of the harm of a class that truly lost 5 points (one-sided, nominal 97.5%); measured
  coverage of these is in docs/statistics.md. What an honest bound costs: with 50 examples and no loss seen, a
  class's harm bound stays near 6 points.
  """
  sizes, lost, gained = (np.asarray(x, np.int64) for x in (sizes, lost, gained))
  tail = (1.0 - confidence) / 2.0
  present = sizes > 0
  if not lost.any() and not gained.any():
    zero = np.where(present, 0.0, np.nan)
    return ExcessBounds(zero, zero.copy(), 0.0, 0.0)
  counts = np.stack([lost, gained, sizes - lost - gained], axis=1)[present].astype(np.float64)
  harm, benefit, top1_low, top1_high = _excess_draws(np.random.default_rng(seed), counts, num_resamples)
  weight = 1.0 - sizes[present] / sizes.sum()
  ci_low, ci_high = np.full(len(sizes), np.nan), np.full(len(sizes), np.nan)
  ci_low[present] = weight * np.quantile(harm, tail, axis=0)
  ci_high[present] = weight * np.quantile(benefit, 1.0 - tail, axis=0)
  return ExcessBounds(ci_low, ci_high, float(np.quantile(top1_low, tail)), float(np.quantile(top1_high, 1 - tail)))


def unit_statistics(counts, rest, top1_change, alpha, num_resamples, seed):
  """The statistics of compare_classes.csv for any partition of the examples into units (classes, or the values of a
  group column): per unit, both models' rate of right answers, its change, the excess over `top1_change`, the
  bounds of the excess (`excess_change_bounds` over the units and `rest`, the Outcomes of the examples in no unit, as
  one more stratum, None when every example has a unit), the exact McNemar p-value and the BH q-value over the units.

  Returns ({name: array over the units}, the `ExcessBounds` of every stratum, with the top-1 change's bounds).
  """
  present = counts.sizes > 0
  with np.errstate(invalid="ignore", divide="ignore"):
    ref_rate = np.where(present, counts.reference_hits / np.maximum(counts.sizes, 1), np.nan)
    cand_rate = np.where(present, counts.candidate_hits / np.maximum(counts.sizes, 1), np.nan)
  strata = counts if rest is None else counts.plus(rest)
  bounds = excess_change_bounds(strata.sizes, strata.lost, strata.gained, 1 - alpha, num_resamples, seed)
  ci_low, ci_high = bounds.ci_low[: len(present)], bounds.ci_high[: len(present)]
  p = np.where(present, mcnemar_p_values(counts.lost, counts.gained), np.nan)
  q = significance.bh_q_values(p)
  change = cand_rate - ref_rate
  return {
      "reference_rate": ref_rate,
      "candidate_rate": cand_rate,
      "change": change,
      "excess": change - top1_change,
      "ci_low": ci_low,
      "ci_high": ci_high,
      "p_value": p,
      "q_value": q,
      "significant_fdr": significance.bh_rejections(q, alpha),
  }, bounds


def compare_pair(
    labels, reference, candidate, class_names, alpha=0.05, num_resamples=DEFAULT_BOOTSTRAP, seed=0, gate=None
):
  """The class table, the flipped examples and the summary of one candidate (ModelOutputs) against the reference."""
  gate = gate or Gate()
  labels = np.asarray(labels, np.int64)
  num_classes = len(class_names)
  ref, cand = np.asarray(reference.top1, np.int64), np.asarray(candidate.top1, np.int64)
  if ref.shape != labels.shape or cand.shape != labels.shape:
    raise PieError(
        f"{candidate.name}: {cand.shape[0]} predictions, {reference.name}: {ref.shape[0]}, for "
        f"{labels.shape[0]} labels: the models must score the same eval split"
    )
  ref_right, cand_right = correctness(labels, reference), correctness(labels, candidate)
  counts = Outcomes.count(labels, num_classes, ref_right, cand_right)
  unclassed = labels < 0  # examples scored by a metric alone (prediction tables): in top-1, in no class
  rest = Outcomes.count(np.zeros(unclassed.sum(), np.int64), 1, ref_right[unclassed], cand_right[unclassed])
  n = len(labels)
  top1_change = (cand_right.sum() - ref_right.sum()) / n if n else 0.0
  units, bounds = unit_statistics(counts, rest if unclassed.any() else None, top1_change, alpha, num_resamples, seed)
  ref_recall, cand_recall = units["reference_rate"], units["candidate_rate"]
  recall_change, excess, ci_low, ci_high = units["change"], units["excess"], units["ci_low"], units["ci_high"]
  p, q = units["p_value"], units["q_value"]
  lost, gained = int((ref_right & ~cand_right).sum()), int((~ref_right & cand_right).sum())
  classes = pd.DataFrame(
      {
          "candidate": candidate.name,
          "class_id": np.arange(num_classes),
          "class_name": [str(c) for c in class_names],
          "num_examples": counts.sizes,
          "reference_recall": ref_recall,
          "candidate_recall": cand_recall,
          "recall_change": recall_change,
          "excess_change": excess,
          "ci_low": ci_low,
          "ci_high": ci_high,
          "p_value": p,
          "q_value": q,
          "significant_fdr": units["significant_fdr"],
      },
      columns=list(outputs.COMPARE_CLASSES.columns()),
  )
  changed = np.flatnonzero((ref != cand) | (ref_right != cand_right))
  examples = pd.DataFrame(
      {
          "candidate": candidate.name,
          "example_id": changed,
          "label": labels[changed],
          "reference_pred": ref[changed],
          "candidate_pred": cand[changed],
          "reference_prob": np.asarray(reference.prob, np.float64)[changed],
          "candidate_prob": np.asarray(candidate.prob, np.float64)[changed],
          "reference_correct": ref_right[changed],
          "candidate_correct": cand_right[changed],
      },
      columns=list(outputs.COMPARE_EXAMPLES.columns()),
  )
  top1_low, top1_high = (bounds.top1_change_low, bounds.top1_change_high) if n else (0.0, 0.0)
  summary = {
      "name": candidate.name,
      "source": candidate.source,
      "kind": candidate.kind,
      "reference_top1": float(np.mean(ref_right)) if n else None,
      "candidate_top1": float(np.mean(cand_right)) if n else None,
      "top1_change": float(top1_change),
      "top1_change_ci_low": float(top1_low),
      "top1_change_ci_high": float(top1_high),
      "agreement": (n - len(changed)) / n if n else None,
      "num_changed": int(len(changed)),
      "flips_correct_to_wrong": lost,
      "flips_wrong_to_correct": gained,
      "flips_wrong_to_wrong": int(len(changed) - lost - gained),
      **_significant(classes),
      "largest_harm": _largest_harm(classes),
      **_intensification(classes, float(np.mean(ref_right)) if n else None),
      "size": candidate.size,
      "gate": _gate(classes, -float(top1_low), gate),
  }
  return classes, examples, summary


def _significant(classes):
  significant = classes.loc[classes["significant_fdr"]]
  return {
      "num_significant_classes_fdr": int(len(significant)),
      "significant_classes_fdr": [str(n) for n in significant["class_name"]],
  }


def _largest_harm(classes):
  """The class with the most negative excess_change (ties: the smaller id), or None without examples."""
  present = classes.loc[classes["num_examples"] > 0]
  if present.empty:
    return None
  worst = present.loc[present["excess_change"].idxmin()]
  return {
      "class_id": int(worst["class_id"]),
      "class_name": str(worst["class_name"]),
      "excess_change": float(worst["excess_change"]),
      "ci_low": float(worst["ci_low"]),
      "ci_high": float(worst["ci_high"]),
  }


def _intensification(classes, reference_top1):
  """Good et al.'s intensification ratio (module docstring) and the counts it is made of."""
  present = classes.loc[classes["num_examples"] > 0]
  below = present["reference_recall"] < reference_top1
  above = present["reference_recall"] > reference_top1
  considered = int((below | above).sum())
  intensified = int(((below & (present["excess_change"] < 0)) | (above & (present["excess_change"] > 0))).sum())
  moved = bool((present.loc[below | above, "excess_change"] != 0).any())
  return {
      "intensification_ratio": intensified / considered if considered and moved else None,
      "intensified_classes": intensified,
      "intensification_classes": considered,
  }


def _gate(classes, top1_drop_high, gate):
  failures, failing = [], []
  if gate.max_excess_drop is not None:
    present = classes.loc[classes["num_examples"] > 0]
    over = present.loc[-present["ci_low"] > gate.max_excess_drop].sort_values("ci_low", kind="stable")
    failing = [str(name) for name in over["class_name"]]
    if len(over):
      worst = ", ".join(f"{r.class_name} ({-r.ci_low:.3f})" for r in over.itertuples(index=False))
      failures.append(f"class harm may exceed {gate.max_excess_drop:g}: {worst}")
  top1_failed = gate.max_top1_drop is not None and top1_drop_high > gate.max_top1_drop
  if top1_failed:
    failures.append(f"top-1 drop may reach {top1_drop_high:.3f} (bound {gate.max_top1_drop:g})")
  return {
      "max_excess_drop": gate.max_excess_drop,
      "max_top1_drop": gate.max_top1_drop,
      "top1_drop_ci_high": top1_drop_high,
      "passed": not failures,
      "failing_classes": failing,
      "top1_failed": bool(top1_failed),
      "failures": failures,
  }


@dataclasses.dataclass(frozen=True)
class Groups:
  """Partitions of the examples compared besides the classes (the task and group columns of prediction tables): for
  each column, every example's value as a code into `values[column index]`."""

  columns: tuple
  codes: np.ndarray  # int64 [n_examples, len(columns)]
  values: tuple  # per column, the names of its values

  def __len__(self):
    return len(self.columns)


def group_rows(groups, labels, reference, candidate, alpha, num_resamples, seed):
  """compare_groups.csv rows of one candidate (pie/outputs.py COMPARE_GROUPS): for each group column, the statistics
  of compare_classes.csv with its values in the place of the classes and right answers (a metric's, or top-1 against
  the label) in the place of recall. The values of one column partition the examples, so each column is its own
  bootstrap and its own Benjamini-Hochberg family."""
  ref_right, cand_right = correctness(labels, reference), correctness(labels, candidate)
  n = len(ref_right)
  top1_change = (cand_right.sum() - ref_right.sum()) / n if n else 0.0
  frames = []
  for j, column in enumerate(groups.columns):
    counts = Outcomes.count(groups.codes[:, j], len(groups.values[j]), ref_right, cand_right)
    units, _ = unit_statistics(counts, None, top1_change, alpha, num_resamples, seed)
    frames.append(
        pd.DataFrame(
            {
                "candidate": candidate.name,
                "group_column": column,
                "group_value": [str(v) for v in groups.values[j]],
                "num_examples": counts.sizes,
                "reference_accuracy": units["reference_rate"],
                "candidate_accuracy": units["candidate_rate"],
                "accuracy_change": units["change"],
                "excess_change": units["excess"],
                "ci_low": units["ci_low"],
                "ci_high": units["ci_high"],
                "flips_correct_to_wrong": counts.lost,
                "flips_wrong_to_correct": counts.gained,
                "p_value": units["p_value"],
                "q_value": units["q_value"],
                "significant_fdr": units["significant_fdr"],
            },
            columns=list(outputs.COMPARE_GROUPS.columns()),
        )
    )
  return pd.concat(frames, ignore_index=True) if frames else empty_groups()


def empty_groups():
  return pd.DataFrame(columns=list(outputs.COMPARE_GROUPS.columns()))


def _group_summary(rows, entry, gate):
  """A candidate's group keys of compare_summary.json (None and [] without groups), and the groups its gate fails."""
  present = rows.loc[rows["num_examples"] > 0]
  significant = present.loc[present["significant_fdr"].astype(bool)]
  entry["num_significant_groups_fdr"] = int(len(significant)) if len(rows) else None
  entry["significant_groups_fdr"] = [[str(r.group_column), str(r.group_value)] for r in significant.itertuples()]
  entry["largest_group_harm"] = None
  if len(present):
    worst = present.loc[present["excess_change"].astype(float).idxmin()]
    entry["largest_group_harm"] = {
        "group_column": str(worst["group_column"]),
        "group_value": str(worst["group_value"]),
        "excess_change": float(worst["excess_change"]),
        "ci_low": float(worst["ci_low"]),
        "ci_high": float(worst["ci_high"]),
    }
  failing = []
  if gate.max_excess_drop is not None and len(present):
    over = present.loc[-present["ci_low"].astype(float) > gate.max_excess_drop].sort_values("ci_low", kind="stable")
    failing = [[str(r.group_column), str(r.group_value)] for r in over.itertuples()]
    if failing:
      worst = ", ".join(f"{r.group_column} = {r.group_value} ({-r.ci_low:.3f})" for r in over.itertuples())
      entry["gate"]["failures"].append(f"group harm may exceed {gate.max_excess_drop:g}: {worst}")
      entry["gate"]["passed"] = False
  entry["gate"]["failing_groups"] = failing


def compare_outputs(
    labels,
    reference,
    candidates,
    class_names,
    alpha=0.05,
    bootstrap_resamples=DEFAULT_BOOTSTRAP,
    seed=0,
    gate=None,
    dataset_fields=None,
    groups=None,
):
  """Every candidate (ModelOutputs) against the reference: a `Comparison`, tables concatenated in candidate order.

  groups: a `Groups` of the examples: each candidate is also compared per value of each group column
  (Comparison.groups, compare_groups.csv), and the gate's max_excess_drop applies to those values too.
  """
  _check_settings(alpha, bootstrap_resamples)
  if not candidates:
    raise PieError("give at least one candidate to compare with the reference", parameter="candidates")
  names = [c.name for c in candidates]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise PieError(f"candidate names {repeated} repeat: give each candidate its own name", parameter="names")
  gate = gate or Gate()
  parts = [compare_pair(labels, reference, c, class_names, alpha, bootstrap_resamples, seed, gate) for c in candidates]
  labels = np.asarray(labels)
  group_frames = []
  for candidate, part in zip(candidates, parts):
    rows = (
        group_rows(groups, labels, reference, candidate, alpha, bootstrap_resamples, seed) if groups else empty_groups()
    )
    _group_summary(rows, part[2], gate)
    group_frames.append(rows)
  summary = {
      "reference": {
          "name": reference.name,
          "source": reference.source,
          "kind": reference.kind,
          "top1": float(np.mean(correctness(labels, reference))) if len(labels) else None,
          "size": reference.size,
      },
      "dataset": {
          "name": "in memory",
          "eval_split": "",
          **(dataset_fields or {}),
          "num_examples": int(len(labels)),
          "num_classes": len(class_names),
          "class_names": [str(c) for c in class_names],
      },
      "settings": {
          "alpha": alpha,
          "confidence_level": 1 - alpha,
          "bootstrap_resamples": bootstrap_resamples,
          "seed": seed,
          "interval": (
              "Bayesian bootstrap over examples, one pseudo-example on the side each end guards (excess_change_bounds)"
          ),
          "max_excess_drop": gate.max_excess_drop,
          "max_top1_drop": gate.max_top1_drop,
          "group_by": list(groups.columns) if groups else [],
      },
      "candidates": [p[2] for p in parts],
  }
  reference_gzip = (reference.size or {}).get("gzip_bytes")
  for entry in summary["candidates"]:
    gzip_bytes = (entry["size"] or {}).get("gzip_bytes")
    entry["size_ratio"] = gzip_bytes / reference_gzip if gzip_bytes and reference_gzip else None
  summary["passed"] = all(c["gate"]["passed"] for c in summary["candidates"])
  return Comparison(
      classes=pd.concat([p[0] for p in parts], ignore_index=True),
      examples=pd.concat([p[1] for p in parts], ignore_index=True),
      summary=summary,
      groups=pd.concat(group_frames, ignore_index=True) if groups else None,
  )


def _check_settings(alpha, bootstrap_resamples):
  if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
    raise PieError(f"alpha must be in (0, 1), got {alpha!r}", parameter="alpha")
  if isinstance(bootstrap_resamples, bool) or not isinstance(bootstrap_resamples, (int, np.integer)):
    raise PieError(
        f"bootstrap_resamples must be an integer, got {bootstrap_resamples!r}", parameter="bootstrap_resamples"
    )
  if bootstrap_resamples < 100:
    raise PieError(
        f"bootstrap_resamples must be at least 100 for a 1 - alpha interval, got {bootstrap_resamples}",
        parameter="bootstrap_resamples",
    )


def compare(
    reference,
    candidates,
    config=None,
    *,
    names=None,
    labels=None,
    class_names=None,
    alpha=0.05,
    bootstrap_resamples=DEFAULT_BOOTSTRAP,
    seed=0,
    max_excess_drop=None,
    max_top1_drop=None,
    batch_size=None,
    log=print,
):
  """One model against its compressed versions, class by class and example by example: a `Comparison`.

  Args:
    reference: the model the candidates are compared with: a path (Keras .h5/.keras/SavedModel folder, .tflite,
      prediction .tfrecord), a tf_keras Model, TFLite bytes, a pie.predictions.Predictions, ModelOutputs, or an array
      of top-1 labels [n] or scores [n, num_classes] (pie.comparison_inputs).
    candidates: one of those, or a list of them.
    config: a ConfigDict or the path of a config file: models are predicted on its eval split
      (pie.data.load_dataset(config.data)), prediction files and arrays checked against it.
    names: the candidates' names (default: file stems; `candidate1`, ... for objects in memory).
    labels, class_names: instead of a config, to compare arrays: the true labels of the examples and the class names.
    alpha: FDR level of significant_fdr; intervals are at level 1 - alpha.
    bootstrap_resamples: draws of the bootstrap behind ci_low/ci_high and the gate.
    seed: seed of the bootstrap (the same for every candidate, so a candidate's numbers do not depend on the others).
    max_excess_drop, max_top1_drop: the gate's bounds (fractions), None for no bound.
    batch_size: prediction batch size (default: config.eval_batch_size).
    log: progress printer.
  """
  gate = Gate(max_excess_drop, max_top1_drop)
  _check_settings(alpha, bootstrap_resamples)
  sources = list(candidates) if isinstance(candidates, (list, tuple)) else [candidates]
  if not sources:
    raise PieError("give at least one candidate to compare with the reference", parameter="candidates")
  given_names = names is not None
  if given_names:
    names = [str(n) for n in names]
    if len(names) != len(sources):
      raise PieError(
          f"{len(names)} names for {len(sources)} candidates: give one name per candidate", parameter="names"
      )
  else:
    names = [comparison_inputs.default_name(s, i, "candidate") for i, s in enumerate(sources)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
      raise PieError(
          f"candidates share the names {repeated} (file stems): give each its own with names", parameter="names"
      )
  for i, (source, name) in enumerate(zip(sources, names)):
    _check_name(name, f"names[{i}]" if given_names else source, "names" if given_names else "candidates")
  reference_name = comparison_inputs.default_name(reference, 0, "reference")
  _check_name(reference_name, reference, "reference")
  split = comparison_inputs.eval_split(comparison_inputs.load_config(config), labels, class_names, batch_size)
  ref = comparison_inputs.load(reference, reference_name, split, "reference", log=log)
  log(f"reference {ref.name}: {ref.kind}, top-1 {np.mean(ref.top1 == split.require_labels()):.2%}")
  cands = []
  for source, name in zip(sources, names):
    outputs_ = comparison_inputs.load(source, name, split, "candidates", log=log)
    log(f"candidate {name}: {outputs_.kind}, top-1 {np.mean(outputs_.top1 == split.require_labels()):.2%}")
    cands.append(outputs_)
  result = compare_outputs(
      split.require_labels(),
      ref,
      cands,
      split.class_names,
      alpha=alpha,
      bootstrap_resamples=bootstrap_resamples,
      seed=seed,
      gate=gate,
      dataset_fields={"name": split.name, "eval_split": split.split},
  )
  return dataclasses.replace(result, split=split)


def _check_name(name, where, parameter):
  """A model's name (given, or its file's stem) reaches compare.html, the CSVs and the gate's line on stderr: the
  rules of names from metadata (pie.names). `where` (an argument or the file) is only formatted on failure: names
  of objects in memory are always fit."""
  problem = names_lib.text_problem(name)
  if problem:
    raise PieError(f"{where}: the model's name {problem}", parameter=parameter)


def run(reference, candidates, config, out_dir, images=True, log=print, **options):
  """`compare` then `Comparison.write` into out_dir: what `python -m analysis.compare` runs. Returns the Comparison.

  Nothing is written unless every input loads and fits the eval split.
  """
  if not out_dir:
    raise PieError("an output folder (out_dir) is needed", parameter="out_dir")
  result = compare(reference, candidates, config, log=log, **options)
  result.write(out_dir, images=images, log=log)
  return result
