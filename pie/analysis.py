"""The analysis of a study: PIEs, class-level tests and PIE accuracy per pruned level, written to one folder.

Outputs (each written to a temporary name, then renamed; pie/outputs.py is their contract):
  pies.csv            one row per PIE per level (with its bootstrap stability)
  class_stats.csv     one row per class per level (Welch test, FDR, CI, effect size, bootstrap stability)
  exemplar_scores.csv one row per example per level: modal labels and the L1 "taxicab" score, ranked
  pie_accuracy.csv    top-1 of both populations on PIEs, a random sample of the same size, and non-PIEs
  slice_stats.csv     one row per slice per level (attribute values, their pairs, class groups: pie.slices)
  summary.json        per level: models, top-1, measured sparsity, PIEs, significant classes, models needed, the
                      excess of PIEs over the noise floor; the noise floor itself (A/A comparisons of dense models)
  pies.tfrecord     the PIE images with their labels (unless images are skipped)
  report.html       the report (pie.report)
Columns are described in the README.

Compression methods (pie/variants.py): every population (method, level) other than the dense one is compared with
the dense one. When a study holds any method besides magnitude pruning, every CSV gains a last column `method`
(`sparsity` stays the level), and pies.tfrecord holds the PIEs of the report's per-level view (dense against the
primary pruning method, `variants.primary_method`). summary.json levels always carry `method`, `bits_per_weight` and
`compressed_bytes` (means over the population's models; None for exports that do not record them).

Controls (`config.controls`: a dense replicate with other seeds, a sham population through the pruning machinery at a
negligible target) are compared with the dense population like any other population; their rows carry their `method`.
The noise floor (summary.json `noise_floor`) comes from A/A comparisons: the control against the dense population,
and random splits of the pooled dense and replicate models into two populations of the compared sizes. A compressed
population whose PIE count does not exceed the floor's upper quantile is within seed noise.

The tables are built from sums over examples (correct predictions per model and class, PIE and tie counts) and from
per-example rows, by functions that `pie.beam_analysis` shares: it computes the same files for prediction sets too
large for one machine's memory.
"""

import dataclasses
import io
import os

import ml_collections
import numpy as np
import pandas as pd

from pie import difficulty
from pie import io_utils
from pie import names
from pie import outputs
from pie import saved_exports
from pie import significance
from pie import slices as slices_lib
from pie import stats
from pie import study as study_lib
from pie import validate
from pie import variants
from pie.errors import PieError

# The normalized change that the "models needed" plan is sized to detect (5 points of recall beyond the overall
# change), unless the caller asks for another.
DEFAULT_POWER_EFFECT = 0.05
# Random A/A splits of the pooled dense models that measure the noise floor, unless the caller asks for another number.
DEFAULT_NOISE_FLOOR_SPLITS = 200


def _names(class_names, ids):
  return [class_names[i] for i in ids]


def check_options(alpha, normalization, bootstrap_resamples, noise_floor_splits=DEFAULT_NOISE_FLOOR_SPLITS):
  """The analysis options, checked (a PieError names the argument)."""
  if not 0 < alpha < 1:
    raise PieError(f"alpha must be in (0, 1), got {alpha}", parameter="alpha")
  if normalization not in significance.NORMALIZATIONS:
    raise PieError(
        f"normalization must be one of {significance.NORMALIZATIONS}, got {normalization!r}", parameter="normalization"
    )
  if bootstrap_resamples < 0:
    raise PieError(f"bootstrap_resamples must be >= 0, got {bootstrap_resamples}", parameter="bootstrap_resamples")
  if noise_floor_splits < 0:
    raise PieError(f"noise_floor_splits must be >= 0, got {noise_floor_splits}", parameter="noise_floor_splits")


def output_dir(study_dir, prediction_files, out_dir):
  """Where the analysis writes: `out_dir`, or <study_dir>/analysis, resolved once (pie.names.resolve_path); exactly
  one of a study or prediction files."""
  if bool(study_dir) == bool(prediction_files):
    raise PieError(
        "give exactly one of a study directory (study_dir) or prediction files (predictions)", parameter="study_dir"
    )
  if out_dir is None:
    if not study_dir:
      raise PieError("an output folder (out_dir) is needed with prediction files", parameter="out_dir")
    return os.path.join(names.resolve_path(study_dir, "study_dir"), "analysis")
  return names.resolve_path(out_dir, "out_dir")


def run(
    study_dir=None,
    predictions=None,
    out_dir=None,
    alpha=0.05,
    seed=0,
    images=True,
    report=True,
    allow_mixed_configs=False,
    normalization=significance.DEFAULT_NORMALIZATION,
    bootstrap_resamples=200,
    power_effect=DEFAULT_POWER_EFFECT,
    validate_first=True,
    noise_floor_splits=DEFAULT_NOISE_FLOOR_SPLITS,
    export_missing=False,
    checkpoint_dirs=None,
    config=None,
    num_workers=None,
    class_groups=None,
    min_slice_size=slices_lib.DEFAULT_MIN_SLICE_SIZE,
    log=print,
):
  """The whole analysis of a study directory (or of a list of prediction files): validation, loading, every output.

  export_missing: first export the study's trained models that have no finished prediction file, from their saved
    models or final checkpoints (`pie.saved_exports.export_missing`, in `num_workers` processes).
  checkpoint_dirs: glob patterns of runs trained outside a study, one directory per model, instead of a study or
    prediction files: they are exported with `config` into <out_dir>/predictions (`pie.saved_exports.export_runs`)
    and analysed; with `validate_first`, unfinished runs and declared levels their weights contradict stop it.
  Returns (out_dir, summary). This is what `python -m analysis.analyze` and `train.population --analyze` run.
  """
  if checkpoint_dirs:
    if study_dir or predictions:
      raise PieError(
          "give runs (checkpoint_dirs), a study directory (study_dir) or prediction files (predictions), not several",
          parameter="checkpoint_dirs",
      )
    if config is None:
      raise PieError("checkpoint_dirs needs the config the runs were trained with (config)", parameter="config")
    if not out_dir:
      raise PieError(
          "checkpoint_dirs needs an output folder (out_dir); predictions go to its predictions/",
          parameter="out_dir",
      )
    out_dir = names.resolve_path(out_dir, "out_dir")  # the exports and the analysis write to the same place
    predictions = saved_exports.export_runs(
        config, checkpoint_dirs, out_dir, num_workers=num_workers, strict=validate_first, log=log
    )
  elif config is not None:
    raise PieError(
        "a config is read with checkpoint_dirs only (a study's config is in its study.json)", parameter="config"
    )
  out_dir = output_dir(study_dir, predictions, out_dir)
  if export_missing:
    if not study_dir:
      raise PieError(
          "export_missing exports the missing models of a study directory (study_dir)", parameter="export_missing"
      )
    saved_exports.export_missing(study_dir, num_workers=num_workers, log=log)
  if study_dir and validate_first:
    # Metadata-level checks here; load_study reads and checks every record, so no file is read twice.
    validate.require_valid(study_dir, allow_mixed_configs=allow_mixed_configs, read_records=False, log=log)
  study = study_lib.load_study(study_dir, predictions, allow_mixed_configs=allow_mixed_configs, log=log)
  summary = analyze_study(
      study,
      out_dir,
      alpha=alpha,
      seed=seed,
      images=images,
      report=report,
      normalization=normalization,
      bootstrap_resamples=bootstrap_resamples,
      power_effect=power_effect,
      noise_floor_splits=noise_floor_splits,
      class_groups=class_groups,
      min_slice_size=min_slice_size,
      log=log,
  )
  return out_dir, summary


def compared_populations(populations):
  """What the analysis compares with the dense population, given the (method, level) keys of a study.

  Returns (compressed, with_method, primary): the compressed populations in output order (registry order of the
  method, then level), whether the tables need a `method` column, and the method of the report's per-level view.
  """
  compressed = sorted(
      (k for k in populations if not variants.is_dense(k[0])), key=lambda k: (variants.method_rank(k[0]), k[1])
  )
  with_method = outputs.has_method_column(method for method, _ in populations)
  return compressed, with_method, variants.primary_method(method for method, _ in compressed)


class FloorPlan:
  """The A/A comparisons of the noise floor.

  The pool is the dense population and, when the study has one, the dense replicate (both dense, disjoint seeds).
  `splits` draw two disjoint populations from the pool, of the sizes of a compared population and the dense one, so
  that a level's PIEs are set against A/A counts at the same population sizes. `control` is the control compared
  directly with the dense population: the replicate, else the sham, else None.
  """

  def __init__(self, populations, compared, num_splits, seed):
    self.num_splits, self.seed = int(num_splits), int(seed)
    self.pool_keys = [variants.DENSE_KEY] + [k for k in populations if k[0] == variants.DENSE_REPLICATE]
    self.pool_size = sum(len(populations[k]) for k in self.pool_keys)
    controls = sorted((k for k in populations if variants.is_control(k[0])), key=lambda k: variants.method_rank(k[0]))
    self.control = controls[0] if controls else None
    self.n_dense = len(populations[variants.DENSE_KEY])
    if len(self.pool_keys) > 1:
      self.reference = (self.n_dense, len(populations[self.pool_keys[1]]))
    else:
      self.reference = (self.pool_size // 2, self.pool_size // 2)
    level_pairs = {(self.n_dense, len(populations[k])) for k in compared if not variants.is_control(k[0])}
    self.splits = {}
    if self.num_splits:
      for pair in sorted(level_pairs | ({self.reference} if self.reference[0] >= 2 else set())):
        if pair[0] + pair[1] <= self.pool_size:
          self.splits[pair] = significance.half_splits(self.pool_size, *pair, self.num_splits, self.seed)

  def pool_rows(self, row_of_key):
    """Rows of the pool's models in a matrix whose population `key` starts at `row_of_key[key]` (a slice)."""
    return np.concatenate([np.arange(row_of_key[k].start, row_of_key[k].stop) for k in self.pool_keys])

  def pie_counts(self, pool_predictions, num_classes):
    """{size pair: PIE counts per A/A split} over some examples (they add up over blocks of examples)."""
    return {
        pair: significance.split_pie_counts(pool_predictions, first, second, num_classes)
        for pair, (first, second) in self.splits.items()
    }


def _quantiles(values, alpha):
  return (
      float(np.quantile(values, alpha / 2, method="inverted_cdf")),
      float(np.quantile(values, 1 - alpha / 2, method="inverted_cdf")),
  )


def noise_floor(plan, levels, pool_hits, class_count, pie_counts, level_counts, alpha, normalization):
  """summary.json's `noise_floor`, and each compressed level set against it (in place in `levels`).

  `pie_counts` are `FloorPlan.pie_counts` summed over every example; `level_counts` maps each compared population's
  (method, sparsity) to {"bootstrap": its PIEs per bootstrap resample, or None}; `levels` are the summary's level
  entries.
  """
  num_examples = int(np.sum(class_count))
  floor = {
      "control": None,
      "control_models": None,
      "num_pies": None,
      "pie_fraction": None,
      "num_significant_classes": None,
      "num_significant_classes_fdr": None,
      "half_splits": None,
  }
  control_entry = None
  if plan.control is not None:
    control_entry = next(e for e in levels if (e["method"], e["sparsity"]) == plan.control)
    floor.update(
        control=plan.control[0],
        control_models=control_entry["num_models"],
        num_pies=control_entry["num_pies"],
        pie_fraction=control_entry["pie_fraction"],
        num_significant_classes=control_entry["num_significant_classes"],
        num_significant_classes_fdr=control_entry["num_significant_classes_fdr"],
    )
  if plan.reference in plan.splits:
    first, second = plan.splits[plan.reference]
    tests = significance.split_class_tests(
        pool_hits, class_count, first, second, alpha=alpha, normalization=normalization
    )
    counts = pie_counts[plan.reference]
    low, high = _quantiles(counts, alpha)
    spread = (lambda x: float(np.std(x, ddof=1))) if len(counts) > 1 else (lambda x: None)
    floor["half_splits"] = {
        "pool": [k[0] for k in plan.pool_keys],
        "pool_models": plan.pool_size,
        "sizes": list(plan.reference),
        "num_splits": plan.num_splits,
        "seed": plan.seed,
        "num_pies_mean": float(counts.mean()),
        "num_pies_std": spread(counts),
        "num_pies_low": low,
        "num_pies_high": high,
        "pie_fraction_mean": float(counts.mean() / num_examples),
        "num_significant_classes_mean": float(tests["num_significant"].mean()),
        "num_significant_classes_std": spread(tests["num_significant"]),
        "num_significant_classes_fdr_mean": float(tests["num_significant_fdr"].mean()),
        "num_significant_classes_fdr_std": spread(tests["num_significant_fdr"]),
        "splits_with_fdr_discovery": float(np.mean(tests["num_significant_fdr"] > 0)),
        "class_tests_significant_rate": (
            float(tests["num_significant"].sum() / tests["num_tested"].sum()) if tests["num_tested"].sum() else None
        ),
    }
  control_boot = level_counts.get(plan.control, {}).get("bootstrap") if plan.control else None
  for entry in levels:
    if entry["role"] != "pruned":
      continue
    pair = (plan.n_dense, entry["num_models"])
    if pair in plan.splits:
      floor_mean = float(np.mean(pie_counts[pair]))
    else:  # no A/A split of these sizes: the control's own comparison is the floor
      floor_mean = None if control_entry is None else float(control_entry["num_pies"])
    parts = level_counts.get((entry["method"], entry["sparsity"]), {})
    result = significance.pies_against_floor(entry["num_pies"], floor_mean, parts.get("bootstrap"), control_boot, alpha)
    entry.update(
        noise_floor_pies_mean=floor_mean,
        pies_excess=result["excess"],
        pies_excess_ci_low=result["ci_low"],
        pies_excess_ci_high=result["ci_high"],
        distinguishable_from_noise=result["distinguishable"],
    )
  floor["note"] = _floor_note(plan)
  return floor


def _floor_note(plan):
  if not plan.num_splits:
    return "no A/A splits were drawn (noise_floor_splits = 0)"
  text = (
      "pies_excess: PIEs minus the mean PIEs of two dense populations of the same sizes, with a bootstrap "
      "interval against the control; distinguishable_from_noise: that interval lies above 0. "
  )
  if len(plan.pool_keys) == 1:
    return text + (
        "Both need a dense replicate: add config.controls = ('dense_replicate',) (the A/A splits here "
        "halve the dense models, smaller than the compared populations)"
    )
  return text + "The floor comes from A/A splits of the pooled dense and replicate models"


def pie_rows(
    sparsity, example_ids, labels, dense_details, pruned_details, class_names, pie_stability=None, largest_id_modal=None
):
  """Rows of pies.csv for a run of examples (all of them, or one block), the PIE mask and the tie counts.

  `*_details` are `stats.modal_labels(..., return_details=True)` of both populations over those examples;
  `pie_stability`, when given, is the bootstrap stability of each of them; `largest_id_modal`, when given, the modal
  labels of both populations under the authors' rule (ties toward the largest class id), for the tie sensitivity.
  Tie counts add up over blocks.
  """
  dense_modal, dense_share, dense_tied = dense_details
  pruned_modal, pruned_share, pruned_tied = pruned_details
  pies = dense_modal != pruned_modal
  ids = np.nonzero(pies)[0]
  table = pd.DataFrame(
      {
          "sparsity": sparsity,
          "example_id": np.asarray(example_ids)[ids],
          "label": labels[ids],
          "dense_modal": dense_modal[ids],
          "pruned_modal": pruned_modal[ids],
          "dense_modal_share": dense_share[ids],
          "pruned_modal_share": pruned_share[ids],
          "modal_tie": (dense_tied | pruned_tied)[ids],
          "label_name": _names(class_names, labels[ids]),
          "dense_modal_name": _names(class_names, dense_modal[ids]),
          "pruned_modal_name": _names(class_names, pruned_modal[ids]),
      }
  )
  if pie_stability is not None:
    # pie_replicability says what the number is (the share of bootstrap resamples of the models in which the example
    # is still a PIE); pie_stability is its first name, kept for scripts that read it.
    table["pie_stability"] = pie_stability[ids]
    table["pie_replicability"] = pie_stability[ids]
  ties = {
      "num_ties_dense": int(dense_tied.sum()),
      "num_ties_pruned": int(pruned_tied.sum()),
      "num_pies_with_tie": int((dense_tied | pruned_tied)[pies].sum()),
  }
  if largest_id_modal is not None:
    pies_largest = largest_id_modal[0] != largest_id_modal[1]
    ties.update(
        num_pies_largest_id_rule=int(pies_largest.sum()), num_pies_tie_dependent=int((pies_largest != pies).sum())
    )
  return pies, table, ties


def random_sample(rng, num_examples, num_pies):
  """The ids of pie_accuracy.csv's random subset: as many examples as PIEs, drawn in level order from one rng."""
  return rng.choice(num_examples, num_pies, replace=False)


def subset_correct(correct, masks):
  """Correct predictions per model on each subset: {subset: int [n_models]}; `correct` is bool [n_models, n].

  Counts (not accuracies) add up over blocks of examples.
  """
  return {subset: correct[:, mask].sum(axis=1) for subset, mask in masks.items()}


def accuracy_rows(sparsity, sizes, correct):
  """Rows of pie_accuracy.csv from counts: `sizes[subset]` examples, `correct[population][subset]` per model."""
  rows = []
  for population in outputs.POPULATIONS:
    for subset in outputs.SUBSETS:
      if sizes[subset]:
        acc = correct[population][subset] / sizes[subset]
        mean, std = float(acc.mean()), float(acc.std(ddof=1)) if len(acc) > 1 else float("nan")
      else:
        mean = std = float("nan")
      rows.append(
          {
              "sparsity": sparsity,
              "population": population,
              "subset": subset,
              "num_examples": int(sizes[subset]),
              "top1_mean": mean,
              "top1_std": std,
          }
      )
  return pd.DataFrame(rows)


def pie_accuracy_table(sparsity, dense_predictions, pruned_predictions, labels, pies, rng):
  """Rows of pie_accuracy.csv: per population, top-1 mean/std over models on PIEs, random sample, non-PIEs."""
  labels = np.asarray(labels)
  masks = {
      "pie": pies,
      "random": np.isin(np.arange(len(labels)), random_sample(rng, len(labels), int(pies.sum()))),
      "non_pie": ~pies,
  }
  correct = {
      variants.DENSE: subset_correct(np.asarray(dense_predictions) == labels, masks),
      "pruned": subset_correct(np.asarray(pruned_predictions) == labels, masks),
  }
  return accuracy_rows(sparsity, {subset: int(mask.sum()) for subset, mask in masks.items()}, correct)


def _mean_or_none(values):
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def level_entry(key, models, top1):
  """The summary entry of a population: `key` is a sparsity (dense/magnitude) or a (method, level) pair; `top1` the
  models' top-1 accuracies, in the order of `models`."""
  method, sparsity = key if isinstance(key, tuple) else (variants.recorded_method(None, key == 0), key)
  role = variants.role(method)
  return {
      "sparsity": sparsity,
      "role": role,
      "num_models": len(models),
      "top1_mean": float(top1.mean()),
      "top1_std": float(top1.std(ddof=1)),
      "measured_sparsity_mean": float(np.mean([m.measured_sparsity for m in models])),
      "num_pies": None,
      "pie_fraction": None,
      "num_significant_classes": None,
      "num_ties_dense": None,
      "num_ties_pruned": None,
      "models": [m.name for m in models],
      "method": method,
      "bits_per_weight": _mean_or_none([m.bits_per_weight for m in models]),
      "compressed_bytes": _mean_or_none([m.compressed_bytes for m in models]),
  }


def top1_from_hits(hits, num_examples):
  """Each model's top-1 accuracy from its correct predictions per class (`significance.class_hits`)."""
  return np.asarray(hits).sum(axis=1) / num_examples


def exemplar_rows(sparsity, labels, scores, difficulty_scores=None):
  """Rows of exemplar_scores.csv from `significance.exemplar_scores` (or `exemplar_frame`) of some examples, with the
  examples' `difficulty.example_scores` (the same rows, in the same order) when given."""
  rows = pd.DataFrame(
      {
          "sparsity": sparsity,
          "example_id": scores.index.to_numpy(),
          "label": labels,
          "dense_modal": scores["baseline_modal"].to_numpy(),
          "pruned_modal": scores["compressed_modal"].to_numpy(),
          "is_pie": scores["is_cie"].to_numpy(bool),
          "l1_distance": scores["l1_distance"].to_numpy(),
          "rank": scores["rank"].to_numpy(),
      }
  )
  if difficulty_scores is not None:
    for name in difficulty.SCORES:
      rows[name] = difficulty_scores[name].to_numpy()
  return rows


def exemplar_table(sparsity, dense_predictions, pruned_predictions, labels, num_classes, difficulty_scores=None):
  """Rows of exemplar_scores.csv: every example with both modal labels and its L1 score, most different first."""
  scores = significance.exemplar_scores(dense_predictions, pruned_predictions, num_classes)
  return exemplar_rows(sparsity, labels, scores, difficulty_scores).sort_values("rank", kind="stable")


def dense_difficulty(dense_models, dense_predictions):
  """`difficulty.example_scores` of the dense population from its loaded models (EL2N when every one has logits)."""
  el2n = [m.el2n for m in dense_models]
  return difficulty.example_scores(
      dense_predictions,
      np.stack([m.true_prob for m in dense_models]),
      None if any(e is None for e in el2n) else np.stack(el2n),
  )


def harm_sources(entry, scores, pies, classes, train_class_counts):
  """Where a level's harm comes from, into its summary entry: how well each dense-only score predicts its PIEs (risk),
  and the Spearman correlation of each class's normalized change with its dense recall and its training frequency."""
  entry["risk"] = difficulty.risk_metrics(scores, pies)
  entry["class_difficulty_spearman"] = difficulty.spearman(classes["dense_recall_mean"], classes["normalized_change"])
  entry["train_frequency_spearman"] = (
      None if train_class_counts is None else difficulty.spearman(train_class_counts, classes["normalized_change"])
  )


def study_design(populations):
  """summary.json `design`: "paired" when compressed models started from their dense twins (their metadata records
  `init_from`, config.init_from_dense), else "independent"."""
  paired = any(m.init_from for models in populations.values() for m in models)
  return outputs.PAIRED_DESIGN if paired else outputs.INDEPENDENT_DESIGN


@dataclasses.dataclass(frozen=True)
class Pairs:
  """The model pairs of a compared population: model `rows[i]` of the population and model `dense_rows[i]` of the
  dense population (`names[i]`: their names, dense first). `twins`: each compressed model was made from its dense
  model (fine-tuned or derived: the paired design's pairs, which the paired tests use); False for pairs of the same
  seed trained independently (the independent design), which only the single-pair view uses."""

  dense_rows: np.ndarray
  rows: np.ndarray
  names: list
  twins: bool = True


def _pairs(dense_models, models, found, twins):
  return Pairs(
      np.array([d for d, _ in found], dtype=np.int64),
      np.array([j for _, j in found], dtype=np.int64),
      [(dense_models[d].name, models[j].name) for d, j in found],
      twins,
  )


def twin_pairs(dense_models, models):
  """The `Pairs` of a population: each of its models whose dense twin (the model it was fine-tuned or derived from,
  `ModelRecord.dense_twin`) is in the dense population; the others take no part in the paired tests."""
  index = {m.name: i for i, m in enumerate(dense_models)}
  found = [(index[m.dense_twin], j) for j, m in enumerate(models) if m.dense_twin in index]
  return _pairs(dense_models, models, found, twins=True)


def seed_pairs(dense_models, models):
  """Pairs of a dense and a compressed model with the same seed, trained independently (no pair for a seed that only
  one population has): what a user comparing one trained model with one compressed model would compare."""
  index = {m.seed: i for i, m in enumerate(dense_models)}
  found = [(index[m.seed], j) for j, m in enumerate(models) if m.seed in index]
  return _pairs(dense_models, models, found, twins=False)


def level_pairs(design, dense_models, models):
  """The `Pairs` of a compared population: its twin pairs in the paired design, its same-seed pairs otherwise."""
  return twin_pairs(dense_models, models) if design == outputs.PAIRED_DESIGN else seed_pairs(dense_models, models)


def single_pair_summary(discordance, class_count, pairs, alpha, class_names):
  """summary.json's `single_pair` of a level: what each model pair alone says (exact McNemar per class, BH over the
  classes: `significance.single_pair_tests`, as `pie.compare` tests one candidate), and the medians over the pairs."""
  tests = significance.single_pair_tests(discordance, class_count, alpha)

  def median(column):
    return float(np.median(tests[column])) if len(tests) else None

  rows = []
  for (dense, compressed), row in zip(pairs.names, tests.to_dict("records")):
    worst = int(row["largest_class_drop_class"])
    rows.append(
        {
            "dense_model": dense,
            "compressed_model": compressed,
            **{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()},
            "largest_class_drop_name": class_names[worst] if worst >= 0 else None,
        }
    )
  return {
      "num_pairs": len(tests),
      "test": ("one model against its dense twin" if pairs.twins else "one model against the dense model of its seed")
      + ": exact McNemar test per class, Benjamini-Hochberg over the classes",
      "classes_flagged_fdr_median": median("classes_flagged_fdr"),
      "classes_hurt_fdr_median": median("classes_hurt_fdr"),
      "largest_class_drop_median": median("largest_class_drop"),
      "largest_normalized_drop_median": median("largest_normalized_drop"),
      "pairs": rows,
  }


def _plan_dict(plan, alpha, effect):
  summary = {
      k: (None if v is None or not np.isfinite(v) else float(v)) if isinstance(v, (float, np.floating)) else v
      for k, v in plan.summary.items()
  }
  return {"effect": effect, "alpha": alpha, "power": 0.8, **summary}


def _power_plan(dense_hits, pruned_hits, class_count, normalization, alpha, effect):
  plan = significance.models_needed(
      significance.normalized_recall_from_hits(dense_hits, class_count, normalization),
      significance.normalized_recall_from_hits(pruned_hits, class_count, normalization),
      effect=effect,
      alpha=alpha,
  )
  return _plan_dict(plan, alpha, effect)


def _paired_power_plan(dense_hits, pruned_hits, class_count, pairs, normalization, alpha, effect):
  """`models_needed` for the paired test: pairs needed (one model per population each), or None under 2 pairs."""
  if len(pairs.rows) < 2:
    return None
  plan = significance.pairs_needed(
      significance.normalized_recall_from_hits(dense_hits, class_count, normalization)[pairs.dense_rows],
      significance.normalized_recall_from_hits(pruned_hits, class_count, normalization)[pairs.rows],
      effect=effect,
      alpha=alpha,
  )
  return _plan_dict(plan, alpha, effect)


def compare_level(
    entry,
    sparsity,
    dense_hits,
    pruned_hits,
    class_count,
    class_names,
    num_pies,
    ties,
    alpha,
    normalization,
    power_effect,
    class_stability=None,
    num_pies_stable_90=None,
    pairs=None,
    discordance=None,
):
  """class_stats.csv rows of one compared population, and its summary entry completed (in place).

  Everything here comes from sums over examples (correct predictions per model and class, PIE and tie counts), so
  the in-memory analysis and `pie.beam_analysis` share it. `pairs` (`level_pairs`) and `discordance`
  (`significance.pair_discordance` of the pairs, summed over every example) add the entry's `single_pair` (what each
  model pair alone says); twin pairs (the paired design) add the paired columns and the entry's paired keys too.
  """
  classes = stats.class_ttest_from_hits(
      dense_hits, pruned_hits, class_count, alpha=alpha, class_names=class_names, normalization=normalization
  )
  classes.insert(0, "sparsity", sparsity)
  if class_stability is not None:
    # The share of bootstrap resamples of the models in which p < alpha again: how replicable the uncorrected verdict
    # is, not the probability that the class is affected (on real A/A splits a false positive replicates 71% of the
    # time: docs/statistics.md).
    classes["significant_stability"] = class_stability
    classes["significance_replicability"] = class_stability
    entry["num_pies_stable_90"] = int(num_pies_stable_90)
  num_examples = int(np.sum(class_count))
  entry.update(
      ties,
      num_pies=int(num_pies),
      pie_fraction=float(num_pies / num_examples),
      num_significant_classes=int(classes["significant"].sum()),
      num_significant_classes_fdr=int(classes["significant_fdr"].sum()),
      models_needed=_power_plan(dense_hits, pruned_hits, class_count, normalization, alpha, power_effect),
  )
  if pairs is not None:
    entry["single_pair"] = single_pair_summary(discordance, class_count, pairs, alpha, class_names)
  if pairs is not None and pairs.twins:
    paired = stats.paired_class_ttest_from_hits(
        dense_hits, pruned_hits, class_count, pairs.dense_rows, pairs.rows, alpha=alpha, normalization=normalization
    )
    for column in significance.PAIRED_COLUMNS:
      classes[column] = paired[column].to_numpy()
    entry.update(
        num_pairs=len(pairs.rows),
        num_significant_classes_paired=int(paired["paired_significant"].sum()),
        num_significant_classes_paired_fdr=int(paired["paired_significant_fdr"].sum()),
        paired_models_needed=_paired_power_plan(
            dense_hits, pruned_hits, class_count, pairs, normalization, alpha, power_effect
        ),
        num_hurt_classes_paired_fdr=int((paired["paired_significant_fdr"] & (paired["paired_change"] < 0)).sum()),
    )
  entry.update(
      num_hurt_classes_fdr=int((classes["significant_fdr"] & (classes["normalized_change"] < 0)).sum()),
      largest_class_harm=largest_class_harm(classes),
  )
  return classes


# The fields of a level's `largest_class_harm` (summary.json), taken from its class_stats.csv row when it has them.
HARM_FIELDS = (
    "class_id",
    "class_name",
    "normalized_change",
    "ci_low",
    "ci_high",
    "q_value",
    "significant_fdr",
    "paired_change",
    "paired_ci_low",
    "paired_ci_high",
    "paired_q_value",
    "paired_significant_fdr",
)


def _json_value(value):
  """A table value as JSON: Python numbers, None for NaN."""
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return None if np.isnan(value) else float(value)
  return value


def largest_class_harm(classes):
  """The class whose normalized recall fell most (the most negative normalized_change), with its interval, q-value
  and, in the paired design, its paired change and interval; None when no class has a change.

  The interval is the class's own (Welch, and paired): picking the worst of many classes makes the point estimate
  lean toward harm, so read the interval, and the FDR verdict, rather than the number alone.
  """
  change = classes["normalized_change"].to_numpy(dtype=float)
  if not np.isfinite(change).any():
    return None
  row = classes.iloc[int(np.nanargmin(change))]
  return {field: _json_value(row[field]) for field in HARM_FIELDS if field in classes.columns}


def mitigation_comparisons(levels, dense_hits, hits_of, class_count, class_names, boot_counts, alpha, normalization):
  """summary.json's `mitigations`: every mitigated population against the unmitigated one of its method and level
  (`significance.mitigation_effect`: intervals of the changes and a verdict), with a sentence a reader can quote.

  `levels` are the summary's level entries; `hits_of` and `boot_counts` map (method, sparsity) to the population's
  `class_hits` and its bootstrap PIE counts (or None). Populations without an unmitigated counterpart are skipped.
  """
  by_key = {(entry["method"], entry["sparsity"]): entry for entry in levels}
  comparisons = []
  for (method, sparsity), entry in by_key.items():
    base = variants.base_method(method)
    if base == method or (base, sparsity) not in by_key:
      continue
    effect = significance.mitigation_effect(
        dense_hits,
        hits_of[(base, sparsity)],
        hits_of[(method, sparsity)],
        class_count,
        by_key[(base, sparsity)]["num_pies"],
        entry["num_pies"],
        boot_counts.get((base, sparsity)),
        boot_counts.get((method, sparsity)),
        alpha=alpha,
        normalization=normalization,
    )
    worst = effect.pop("worst_class")
    comparison = {
        "population": method,
        "method": base,
        "mitigation": variants.mitigation_of(method),
        "sparsity": sparsity,
        "num_models": entry["num_models"],
        "unmitigated_models": by_key[(base, sparsity)]["num_models"],
        "worst_class_id": worst,
        "worst_class_name": None if worst is None else class_names[worst],
        **effect,
        "interval_level": 1 - alpha / 2,
    }
    comparison["sentence"] = mitigation_sentence(comparison)
    comparisons.append(comparison)
  return comparisons


def _points(value):
  return f"{100 * value:+.1f}"


def _interval(low, high, scale=100, digits=1):
  if low is None or high is None:
    return "no interval"
  return f"{scale * low:+.{digits}f} to {scale * high:+.{digits}f}"


def mitigation_sentence(comparison):
  """One plain sentence: the verdict and the changes it rests on, each with its interval."""
  where = f"{comparison['mitigation']} on {comparison['method']}" + (
      f" at {100 * comparison['sparsity']:.4g}% sparsity" if comparison["sparsity"] else ""
  )
  parts = []
  if comparison["harm_change"] is not None:
    parts.append(
        f"the class compression hurts most here (class {comparison['worst_class_name']}) changed by "
        f"{_points(comparison['harm_change'])} points of normalized recall "
        f"({_interval(comparison['harm_change_ci_low'], comparison['harm_change_ci_high'])})"
    )
  pies_interval = _interval(comparison["pies_change_ci_low"], comparison["pies_change_ci_high"], scale=1, digits=1)
  parts.append(f"PIEs changed by {comparison['pies_change']:+d} ({pies_interval})")
  parts.append(
      f"top-1 by {_points(comparison['top1_change'])} points "
      f"({_interval(comparison['top1_change_ci_low'], comparison['top1_change_ci_high'])})"
  )
  return (
      f"{where}: {comparison['verdict']} (intervals at {100 * comparison['interval_level']:g}%, mitigated minus "
      f"unmitigated): " + "; ".join(parts) + "."
  )


def slice_table(entry, plan, sparsity, dense_hits, pruned_hits, sizes, dense_top1, pruned_top1, pies, *options):
  """slice_stats.csv rows of one compared population (`slices.slice_rows`), its slice counts into its summary entry.

  `options` are alpha, normalization and min_slice_size. From sums over examples, shared with `pie.beam_analysis`.
  """
  table = slices_lib.slice_rows(plan, sparsity, dense_hits, pruned_hits, sizes, dense_top1, pruned_top1, pies, *options)
  entry.update(slices_lib.level_counts(table))
  return table


def log_level(log, method, sparsity, entry):
  log(
      f"{'' if variants.named_by_level(method) else method + ' '}level {sparsity:g}: {entry['num_models']} models, "
      f"top-1 {entry['top1_mean']:.4f}, {entry['num_pies']} PIEs ({entry['pie_fraction']:.2%}), "
      f"{entry['num_significant_classes']} significant classes ({entry['num_significant_classes_fdr']} after FDR "
      "control)"
  )


def study_summary(
    study,
    levels,
    alpha,
    seed,
    normalization,
    bootstrap_resamples,
    noise_floor_summary=None,
    design=None,
    mitigations=None,
    slices_summary=None,
):
  """summary.json. `study` is a `pie.study.Study` or a `pie.study.StudyIndex` (the same fields)."""
  summary = {
      "study": {
          "name": study.config.get("name", study.dataset),
          "dataset": study.dataset,
          "eval_split": study.split,
          "num_classes": study.num_classes,
          "class_names": study.class_names,
          "num_examples": study.num_examples,
          "model": study.config.get("model", {}).get("name", ""),
          "config": study.config,
          "config_hash": study.config_hash,
          "study_dir": study.study_dir,
          "incomplete_exports_skipped": study.incomplete,
      },
      "alpha": alpha,
      "confidence_level": 1 - alpha,
      "seed": seed,
      "normalization": normalization,
      "bootstrap_resamples": bootstrap_resamples,
      "tie_rule": stats.TIE_RULE,
      "design": design or outputs.INDEPENDENT_DESIGN,
      "levels": levels,
      "noise_floor": noise_floor_summary,
      "mitigations": mitigations or [],
      "slices": slices_summary,
  }
  if normalization == "population":
    summary["normalization_warning"] = significance.POPULATION_NORMALIZATION_WARNING
  return summary


def check_populations(populations, where):
  """A study the analysis can compare: a dense population and either another population or enough dense models for
  an A/A floor (a study of dense models only)."""
  if len(populations) == 1 and len(populations[variants.DENSE_KEY]) < 4:
    raise PieError(
        f"{where}: only {len(populations[variants.DENSE_KEY])} dense models and no other population: a "
        "study of dense models only needs at least 4 to split them into two A/A populations"
    )


def analyze(
    study,
    alpha=0.05,
    seed=0,
    normalization=significance.DEFAULT_NORMALIZATION,
    bootstrap_resamples=200,
    power_effect=DEFAULT_POWER_EFFECT,
    noise_floor_splits=DEFAULT_NOISE_FLOOR_SPLITS,
    class_groups=None,
    min_slice_size=slices_lib.DEFAULT_MIN_SLICE_SIZE,
    log=print,
):
  """Computes every table of the analysis in memory: dict of DataFrames, the summary, and the PIE ids per level.

  `class_groups` (None: the study config's) and the study's exported slice features give slice_stats.csv
  (`pie.slices`); slices smaller than `min_slice_size` are reported, not tested.
  """
  check_options(alpha, normalization, bootstrap_resamples, noise_floor_splits)
  min_slice_size = slices_lib.check_min_slice_size(min_slice_size)
  rng = np.random.default_rng(seed)
  labels = study.labels
  num_classes, num_examples = study.num_classes, study.num_examples
  populations = study.populations or {
      variants.DENSE_KEY: study.levels[0.0],
      **{(variants.MAGNITUDE, s): study.levels[s] for s in study.pruned_levels},
  }
  check_populations(populations, study.study_dir or "the prediction files")
  compressed, with_method, primary = compared_populations(populations)
  dense_key = variants.DENSE_KEY if study.populations else 0.0
  dense = study.predictions(dense_key)
  class_count = np.bincount(labels, minlength=num_classes)
  dense_hits = significance.class_hits(dense, labels, num_classes)
  dense_details = stats.modal_labels(dense, return_details=True)
  dense_largest = stats.modal_labels(dense, tie_break="largest")
  scores = dense_difficulty(study.models(dense_key), dense)
  bins = difficulty.deciles(scores["dense_true_prob"].to_numpy())
  slice_plan = slices_lib.study_plan(study, class_groups)
  membership = slice_plan.membership(labels, study.slice_values)
  dense_slice_hits = significance.subset_hits(dense, labels, membership)
  levels = [level_entry(dense_key, study.models(dense_key), top1_from_hits(dense_hits, num_examples))]
  parts = {table.name: [] for table in outputs.ANALYSIS_TABLES}
  pie_ids = {}
  plan = FloorPlan(populations, compressed, noise_floor_splits, seed)
  design = study_design(populations)
  level_counts = {}
  hits_of = {}
  for method, sparsity in compressed:
    key = (method, sparsity) if study.populations else sparsity
    pruned = study.predictions(key)
    pruned_hits = significance.class_hits(pruned, labels, num_classes)
    hits_of[(method, sparsity)] = pruned_hits
    pairs = level_pairs(design, populations[variants.DENSE_KEY], study.models(key))
    discordance = (
        significance.pair_discordance(dense[pairs.dense_rows], pruned[pairs.rows], labels, num_classes)
        if len(pairs.rows)
        else np.zeros((0, num_classes, 2), np.int64)
    )
    boot = None
    if bootstrap_resamples:
      boot = significance.bootstrap_stability(
          dense,
          pruned,
          labels,
          num_classes,
          num_resamples=bootstrap_resamples,
          seed=seed,
          alpha=alpha,
          normalization=normalization,
      )
    level_counts[(method, sparsity)] = {"bootstrap": None if boot is None else boot.pie_counts}
    pies, table, ties = pie_rows(
        sparsity,
        np.arange(num_examples),
        labels,
        dense_details,
        stats.modal_labels(pruned, return_details=True),
        study.class_names,
        pie_stability=None if boot is None else boot.pie_stability,
        largest_id_modal=(dense_largest, stats.modal_labels(pruned, tie_break="largest")),
    )
    entry = level_entry(key, study.models(key), top1_from_hits(pruned_hits, num_examples))
    classes = compare_level(
        entry,
        sparsity,
        dense_hits,
        pruned_hits,
        class_count,
        study.class_names,
        int(pies.sum()),
        ties,
        alpha,
        normalization,
        power_effect,
        class_stability=None if boot is None else boot.class_significance,
        num_pies_stable_90=None if boot is None else (table["pie_stability"] >= 0.9).sum(),
        pairs=pairs,
        discordance=discordance,
    )
    level_tables = {
        outputs.PIES_CSV: table,
        outputs.CLASS_STATS_CSV: classes,
        outputs.EXEMPLAR_SCORES_CSV: exemplar_table(sparsity, dense, pruned, labels, num_classes, scores),
        outputs.PIE_ACCURACY_CSV: pie_accuracy_table(sparsity, dense, pruned, labels, pies, rng),
        outputs.DIFFICULTY_CSV: difficulty.difficulty_rows(
            sparsity,
            scores["dense_true_prob"].to_numpy(),
            bins,
            pies,
            (dense == labels).sum(axis=0),
            len(dense),
            (pruned == labels).sum(axis=0),
            len(pruned),
        ),
    }
    if len(slice_plan):
      level_tables[outputs.SLICE_STATS_CSV] = slice_table(
          entry,
          slice_plan,
          sparsity,
          dense_slice_hits,
          significance.subset_hits(pruned, labels, membership),
          membership.sum(axis=0),
          top1_from_hits(dense_hits, num_examples),
          top1_from_hits(pruned_hits, num_examples),
          slice_plan.pie_counts(pies, membership),
          alpha,
          normalization,
          min_slice_size,
      )
    harm_sources(entry, scores, pies, classes, study.train_class_counts)
    for name, frame in level_tables.items():
      if with_method:
        frame[outputs.METHOD_COLUMN] = method
      parts[name].append(frame)
    if method == primary:
      pie_ids[sparsity] = np.nonzero(pies)[0]
    levels.append(entry)
    log_level(log, method, sparsity, entry)
  pool = np.concatenate([np.stack([m.top1 for m in populations[k]]) for k in plan.pool_keys])
  if plan.splits:
    log(f"noise floor: {noise_floor_splits} A/A splits of {plan.pool_size} dense models")
  floor = noise_floor(
      plan,
      levels,
      significance.class_hits(pool, labels, num_classes),
      class_count,
      plan.pie_counts(pool, num_classes),
      level_counts,
      alpha,
      normalization,
  )
  log_floor(log, floor, levels)
  mitigations = mitigation_comparisons(
      levels,
      dense_hits,
      hits_of,
      class_count,
      study.class_names,
      {key: counts["bootstrap"] for key, counts in level_counts.items()},
      alpha,
      normalization,
  )
  log_mitigations(log, mitigations)
  summary = study_summary(
      study,
      levels,
      alpha,
      seed,
      normalization,
      bootstrap_resamples,
      floor,
      design,
      mitigations,
      slices_summary=slice_plan.summary(min_slice_size),
  )
  tables = {
      name: (pd.concat(frames, ignore_index=True) if frames else empty_table(name, with_method))
      for name, frames in parts.items()
  }
  return tables, summary, pie_ids


def log_floor(log, floor, levels):
  """One line for the floor and one for each level within it."""
  splits = floor["half_splits"]
  if floor["control"] is not None:
    log(
        f"noise floor: {floor['control']} against dense: {floor['num_pies']} PIEs, "
        f"{floor['num_significant_classes']} significant classes ({floor['num_significant_classes_fdr']} after FDR)"
    )
  if splits is not None:
    log(
        f"noise floor: A/A splits {splits['sizes'][0]} + {splits['sizes'][1]}: {splits['num_pies_mean']:.1f} PIEs on "
        f"average (up to {splits['num_pies_high']:g}), {splits['num_significant_classes_mean']:.2f} significant "
        f"classes, {splits['splits_with_fdr_discovery']:.1%} of splits with an FDR discovery"
    )
  within = [f"{e['method']} {e['sparsity']:g}" for e in levels if e.get("distinguishable_from_noise") is False]
  if within:
    log(f"within the noise floor (PIEs): {', '.join(within)}")


def log_mitigations(log, mitigations):
  for comparison in mitigations:
    log(f"mitigation: {comparison['sentence']}")


def empty_table(name, with_method=False):
  """A table with its header and no row (a study of dense models only compares nothing)."""
  return pd.DataFrame(columns=list(outputs.table(name).columns(method=with_method)))


def _float_texts(values):
  """repr of every float (the shortest text that reads back to the same float), "" for NaN: each distinct bit
  pattern formatted once (the exemplar table repeats the same scores for every level)."""
  bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
  distinct, inverse = np.unique(bits, return_inverse=True)
  texts = np.array(["" if v != v else repr(v) for v in distinct.view(np.float64).tolist()], dtype=object)
  return texts[inverse.reshape(-1)]


def _numeric_csv(frame):
  """The text `frame.to_csv(index=False)` writes for a table of numbers and booleans only (with the floats formatted
  as `csv_text` formats them), joined directly: no field of such a table needs quoting. None for other tables."""
  if len(frame.columns) < 2 or any(frame[name].dtype.kind not in "biuf" for name in frame.columns):
    return None
  if any(not isinstance(name, str) or any(c in name for c in ',"\r\n') for name in frame.columns):
    return None
  fields = []
  for name in frame.columns:
    values = frame[name].to_numpy()
    kind = values.dtype.kind
    if kind == "f":
      fields.append(_float_texts(values).tolist())
    elif kind == "b":
      fields.append(np.where(values, "True", "False").tolist())
    else:
      fields.append(list(map(str, values.tolist())))
  end = os.linesep
  return ",".join(frame.columns) + end + "".join(",".join(row) + end for row in zip(*fields))


def csv_text(frame):
  """The text of an output table (pie.beam_analysis writes its shards with it too, so the files match)."""
  # Floats are written as Python's shortest text that reads back to the same float (repr), so a reader can recompute
  # every statistic exactly; NaN is an empty field. Formatting the lists here is far faster than to_csv's per-value
  # formatter on the 250,000-row exemplar table, and a table of numbers alone is joined here too.
  text = _numeric_csv(frame)
  if text is not None:
    return text
  frame = frame.assign(
      **{
          name: pd.Series(_float_texts(frame[name].to_numpy()), index=frame.index, dtype=object)
          for name in frame.columns
          if frame[name].dtype.kind == "f"
      }
  )
  buffer = io.StringIO()
  frame.to_csv(buffer, index=False)
  return buffer.getvalue()


# pies.tfrecord has one reader, in the contract; scripts call it as pie.read_pie_images or from here.
read_pie_images = outputs.read_pie_images


def load_eval_images(config_dict, example_ids, log=print):
  """Display images of the given eval examples, from the dataset named in the study's config."""
  from pie import data as data_lib  # pylint: disable=g-import-not-at-top

  data_config = ml_collections.ConfigDict(config_dict["data"])
  dataset = data_lib.load_dataset(data_config)
  log(f"reading {len(np.unique(example_ids))} PIE images from {data_config.name}/{data_config.eval_split}")
  return dataset.eval_display_images(example_ids)


def analyze_study(
    study,
    out_dir,
    alpha=0.05,
    seed=0,
    images=True,
    report=True,
    normalization=significance.DEFAULT_NORMALIZATION,
    bootstrap_resamples=200,
    power_effect=DEFAULT_POWER_EFFECT,
    noise_floor_splits=DEFAULT_NOISE_FLOOR_SPLITS,
    class_groups=None,
    min_slice_size=slices_lib.DEFAULT_MIN_SLICE_SIZE,
    log=print,
):
  """Runs the analysis and writes every output file into `out_dir`; returns the summary dict."""
  tables, summary, pie_ids = analyze(
      study,
      alpha=alpha,
      seed=seed,
      normalization=normalization,
      bootstrap_resamples=bootstrap_resamples,
      power_effect=power_effect,
      noise_floor_splits=noise_floor_splits,
      class_groups=class_groups,
      min_slice_size=min_slice_size,
      log=log,
  )
  io_utils.makedirs(out_dir)
  if images:
    all_ids = np.unique(np.concatenate(list(pie_ids.values()))) if pie_ids else np.zeros(0, np.int64)
    try:
      found = load_eval_images(study.config, all_ids, log=log)
    except PieError as e:
      raise PieError(
          f"{e} (the PIE images come from the study's eval split; images=False skips them)", parameter="images"
      ) from None
    missing = sorted(set(all_ids.tolist()) - set(found))
    if missing:
      raise PieError(
          f"the eval split of {study.dataset} lacks example ids {missing[:5]}...: it is not the split "
          "the models predicted"
      )
    pies = tables[outputs.PIES_CSV]
    if outputs.METHOD_COLUMN in pies:
      # The images of the report's per-level view: dense against the primary pruning method.
      primary = variants.primary_method(pies[outputs.METHOD_COLUMN].unique())
      pies = pies.loc[pies[outputs.METHOD_COLUMN] == primary]
    outputs.write_pie_images(os.path.join(out_dir, outputs.PIES_TFRECORD), pies, found)
  elif io_utils.exists(os.path.join(out_dir, outputs.PIES_TFRECORD)):
    io_utils.remove(os.path.join(out_dir, outputs.PIES_TFRECORD))  # an earlier run's images would not match
  for name, frame in tables.items():
    io_utils.write_text(os.path.join(out_dir, name), csv_text(frame))
  io_utils.write_json(os.path.join(out_dir, outputs.SUMMARY_JSON), summary)
  if report:
    from pie import report as report_lib  # pylint: disable=g-import-not-at-top

    path = report_lib.write_report(out_dir)
    log(f"report: {path}")
  return summary
