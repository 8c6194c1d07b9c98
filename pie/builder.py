"""The one builder of the analysis: every table made from sums over examples, the noise floor and summary.json.

The in-memory analysis (`pie.analysis`) and the Beam pipeline (`pie.beam_analysis`) compute the same sums over
examples in their own way (the prediction matrices in memory; blocks of examples on workers) and hand them here: one
`DenseSums` for the dense population and one `LevelSums` per compared population. `build` runs the per-level sequence
(summary entry, class tests, PIE accuracy, difficulty, slices, harm sources, log line) and then what spans the study
(noise floor, mitigations, summary.json), so a new statistic made from sums is written once, here, for both.

Its settings are one `AnalysisOptions`, checked once when it is made.
"""

import dataclasses
from typing import Optional

import numpy as np
import pandas as pd

from pie import difficulty
from pie import outputs
from pie import significance
from pie import slices as slices_lib
from pie import stats
from pie import variants
from pie.errors import PieError

# The normalized change that the "models needed" plan is sized to detect (5 points of recall beyond the overall
# change), unless the caller asks for another.
DEFAULT_POWER_EFFECT = 0.05
# Random A/A splits of the pooled dense models that measure the noise floor, unless the caller asks for another number.
DEFAULT_NOISE_FLOOR_SPLITS = 200
# Arrangements drawn by the PIE-excess test (and the correlations' reassignments) when they cannot all be enumerated.
DEFAULT_EXCESS_PERMUTATIONS = 999


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
  """The settings of an analysis's statistics, checked when made (a PieError names the field).

  alpha: significance level of every test and 1 - confidence of every interval.
  seed: seed of the random draws (pie_accuracy.csv's random subset, bootstrap, A/A splits).
  normalization: how recall is normalized before the class tests (`significance.NORMALIZATIONS`).
  bootstrap_resamples: resamples of the models for PIE and class replicability (0: none).
  power_effect: the normalized change summary.json's `models_needed` plan is sized to detect.
  noise_floor_splits: random A/A splits of the pooled dense models (0: none).
  class_groups: class groups analysed as slices (a shipped grouping's name, a JSON file, a dict; None: the
    study config's).
  min_slice_size: slices with fewer examples are reported, not tested.
  fdr_scope: "level" (Benjamini-Hochberg over each compared population's classes) or "study" (over every class test
    of every level and method together: q-values that hold for the whole class_stats.csv).
  excess_permutations: arrangements the PIE-excess test and the correlation tests draw when they cannot enumerate
    every one (0: no PIE-excess test).
  """

  alpha: float = 0.05
  seed: int = 0
  normalization: str = significance.DEFAULT_NORMALIZATION
  bootstrap_resamples: int = 200
  power_effect: float = DEFAULT_POWER_EFFECT
  noise_floor_splits: int = DEFAULT_NOISE_FLOOR_SPLITS
  class_groups: object = None
  min_slice_size: int = slices_lib.DEFAULT_MIN_SLICE_SIZE
  fdr_scope: str = "level"
  excess_permutations: int = DEFAULT_EXCESS_PERMUTATIONS

  def __post_init__(self):
    if not 0 < self.alpha < 1:
      raise PieError(f"alpha must be in (0, 1), got {self.alpha}", parameter="alpha")
    if self.normalization not in significance.NORMALIZATIONS:
      raise PieError(
          f"normalization must be one of {significance.NORMALIZATIONS}, got {self.normalization!r}",
          parameter="normalization",
      )
    if self.fdr_scope not in outputs.FDR_SCOPES:
      raise PieError(f"fdr_scope must be one of {outputs.FDR_SCOPES}, got {self.fdr_scope!r}", parameter="fdr_scope")
    for name in ("bootstrap_resamples", "noise_floor_splits", "excess_permutations"):
      if getattr(self, name) < 0:
        raise PieError(f"{name} must be >= 0, got {getattr(self, name)}", parameter=name)
    object.__setattr__(self, "min_slice_size", slices_lib.check_min_slice_size(self.min_slice_size))

  @classmethod
  def of(cls, options=None, **fields):
    """`options` (None: the defaults) with the given fields replaced: what the analysis functions accept as keywords
    (`analyze(study, alpha=0.01)`) becomes one checked record."""
    unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(cls)})
    if unknown:
      raise TypeError(f"unknown analysis option(s) {', '.join(unknown)}")
    return dataclasses.replace(options or cls(), **fields)


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


# How a population's models stand to the dense models (`seed_relation`), which decides the control it is read against.
INDEPENDENT, SHARED, PAIRED, DERIVED, MIXED = outputs.SEED_RELATIONS


def seed_relation(models, dense_models):
  """How a population's models stand to the dense ones: PAIRED (fine-tuned from dense twins, `init_from`), DERIVED
  (made from dense models without training: post-training quantization), SHARED (trained from scratch on the dense
  seeds: same initialisation and data order, twins), INDEPENDENT (seeds disjoint from the dense ones), MIXED (none of
  these for every model)."""
  if all(m.init_from for m in models):
    return PAIRED
  if all(m.dense_twin and not m.init_from for m in models):
    return DERIVED
  if any(m.dense_twin for m in models):
    return MIXED
  dense_seeds = {m.seed for m in dense_models}
  shared = [m.seed in dense_seeds for m in models]
  return SHARED if all(shared) else INDEPENDENT if not any(shared) else MIXED


# Why a level has no matched control, by its relation, and the control that would give it one.
_NO_MATCHED_CONTROL = {
    INDEPENDENT: "no control trained on seeds of its own: add config.controls = ('dense_replicate',)",
    SHARED: (
        "its models start from the dense seeds (twins of the dense models), so the floor of independently seeded "
        "models is not its null: add config.controls = ('sham',), which shares the dense seeds too, or train with "
        "config.seed_design = 'independent'"
    ),
    PAIRED: (
        "its models are fine-tuned from their dense twins: its null is the twins fine-tuned alike with nothing pruned; "
        "add config.controls = ('sham',) (fine-tuned from the twins under config.init_from_dense)"
    ),
    DERIVED: (
        "derived from the dense models without training: no seed noise separates them from the dense population, so "
        "no control applies and every PIE is a change these very models made"
    ),
    MIXED: (
        "its models stand to the dense ones in different ways (some share their seeds, some do not, or some are "
        "fine-tuned twins): no control has that relation; train it with one config.seed_design"
    ),
}


class FloorPlan:
  """The noise floor: which control each compressed population is read against, and the A/A comparisons.

  Every population's `relations` to the dense one (`seed_relation`); a compressed population's `matched` control is
  the control with the same relation (the dense replicate before the sham), or None. Each matched pair gets the
  arrangements of the PIE-excess test (`exchanges`: `significance.exchange_arrangements`, exchanges between twins
  only when the models share the dense seeds), whose PIE counts the analyses sum over examples (`exchange_counts`).
  The pool of the A/A splits is the dense population and, when the study has one, the dense replicate (both dense,
  disjoint seeds); `splits` draw two disjoint populations from it, of the sizes of the dense population and the
  replicate, for summary.json's `noise_floor.half_splits`. `control` is the control of summary.json's `noise_floor`:
  the replicate, else the sham, else None.
  """

  def __init__(self, populations, compared, num_splits, seed, num_permutations=DEFAULT_EXCESS_PERMUTATIONS):
    self.num_splits, self.seed, self.num_permutations = int(num_splits), int(seed), int(num_permutations)
    self.pool_keys = [variants.DENSE_KEY] + [k for k in populations if k[0] == variants.DENSE_REPLICATE]
    self.pool_size = sum(len(populations[k]) for k in self.pool_keys)
    controls = sorted((k for k in populations if variants.is_control(k[0])), key=lambda k: variants.method_rank(k[0]))
    self.control = controls[0] if controls else None
    dense_models = populations[variants.DENSE_KEY]
    self.n_dense = len(dense_models)
    self.relations = {k: seed_relation(m, dense_models) for k, m in populations.items() if k != variants.DENSE_KEY}
    self.matched = {
        k: next((c for c in controls if self.relations[c] == self.relations[k] != DERIVED), None)
        for k in compared
        if not variants.is_control(k[0])
    }
    self.exchanges = {}
    for key, control in self.matched.items():
      if control is not None and self.num_permutations:
        level, other = populations[key], populations[control]
        strata = None if self.relations[key] == INDEPENDENT else [_twin_of(m) for m in level + other]
        self.exchanges[key] = (
            control,
            significance.exchange_arrangements(len(level), len(other), strata, self.num_permutations, self.seed),
        )
    if len(self.pool_keys) > 1:
      self.reference = (self.n_dense, len(populations[self.pool_keys[1]]))
    else:
      self.reference = (self.pool_size // 2, self.pool_size // 2)
    self.splits = {}
    if self.num_splits and self.reference[0] >= 2 and sum(self.reference) <= self.pool_size:
      self.splits[self.reference] = significance.half_splits(
          self.pool_size, *self.reference, self.num_splits, self.seed
      )

  def missing_control_note(self, key):
    """Why the compressed population `key` has no PIE-excess test, and what to do."""
    if self.matched[key] is not None:
      return "no exchange test was run (excess_permutations = 0)"
    return _NO_MATCHED_CONTROL[self.relations[key]]

  def pool_rows(self, row_of_key):
    """Rows of the pool's models in a matrix whose population `key` starts at `row_of_key[key]` (a slice)."""
    return np.concatenate([np.arange(row_of_key[k].start, row_of_key[k].stop) for k in self.pool_keys])

  def pie_counts(self, pool_predictions, num_classes):
    """{size pair: PIE counts per A/A split} over some examples (they add up over blocks of examples)."""
    return {
        pair: significance.split_pie_counts(pool_predictions, first, second, num_classes)
        for pair, (first, second) in self.splits.items()
    }

  def exchange_counts(self, dense_predictions, predictions_of, num_classes):
    """{compressed population: PIEs of every arrangement of its exchange test} over some examples (they add up over
    blocks); `predictions_of(key)` gives a population's predictions of those examples."""
    return {
        key: significance.exchange_pie_counts(
            dense_predictions, np.concatenate([predictions_of(key), predictions_of(control)]), plan.rows, num_classes
        )
        for key, (control, plan) in self.exchanges.items()
    }


def _twin_of(model):
  """The stratum of a compressed or control model in an exchange between twins: the dense model it was made from or
  is paired with."""
  if model.dense_twin:
    return model.dense_twin
  return variants.model_name(variants.DENSE, 0.0, model.seed if model.dense_seed is None else model.dense_seed)


def _quantiles(values, alpha):
  return (
      float(np.quantile(values, alpha / 2, method="inverted_cdf")),
      float(np.quantile(values, 1 - alpha / 2, method="inverted_cdf")),
  )


def noise_floor(plan, levels, dense, options):
  """summary.json's `noise_floor`, and each compressed level set against its matched control (in place in `levels`,
  the summary's level entries): the PIE-excess test (`significance.pies_excess_test`) on `dense.exchange_counts`."""
  num_examples = int(np.sum(dense.class_count))
  floor = {
      "control": None,
      "control_models": None,
      "num_pies": None,
      "pie_fraction": None,
      "num_significant_classes": None,
      "num_significant_classes_fdr": None,
      "half_splits": None,
  }
  by_key = {(e["method"], e["sparsity"]): e for e in levels}
  if plan.control is not None:
    control_entry = by_key[plan.control]
    floor.update(
        control=plan.control[0],
        control_models=control_entry["num_models"],
        num_pies=control_entry["num_pies"],
        pie_fraction=control_entry["pie_fraction"],
        num_significant_classes=control_entry["num_significant_classes"],
        num_significant_classes_fdr=control_entry["num_significant_classes_fdr"],
    )
  if plan.reference in plan.splits:
    floor["half_splits"] = _half_splits(plan, dense, num_examples, options)
  for key, control in plan.matched.items():
    result = None
    if key in plan.exchanges:
      result = significance.pies_excess_test(dense.exchange_counts[key], plan.exchanges[key][1], options.alpha)
    by_key[key].update(
        noise_floor_pies_mean=None if result is None else _or(result.control_mean, result.null_mean),
        pies_excess=None if result is None else float(result.excess),
        pies_excess_ci_low=None if result is None else _finite_or_none(result.ci_low),
        pies_excess_ci_high=None if result is None else _finite_or_none(result.ci_high),
        pies_excess_p_value=None if result is None else result.p_value,
        pies_excess_permutations=None if result is None else result.num_arrangements,
        distinguishable_from_noise=None if result is None else result.distinguishable,
        seed_relation=plan.relations[key],
        floor_control=None if control is None else control[0],
        floor_note=None if result is not None else plan.missing_control_note(key),
        # How well the dense-only scores predict the matched control's PIEs (pure seed noise): a level's `risk` is
        # read against it, since hard examples flip between seeds too.
        control_risk=None if control is None else by_key[control].get("risk"),
    )
  floor["note"] = _floor_note(plan)
  return floor


def _or(value, default):
  return default if value is None else float(value)


def _finite_or_none(value):
  return float(value) if value is not None and np.isfinite(value) else None


def _half_splits(plan, dense, num_examples, options):
  """summary.json's `noise_floor.half_splits`: A/A splits of the pooled dense and replicate models."""
  first, second = plan.splits[plan.reference]
  tests = significance.split_class_tests(
      dense.pool_hits, dense.class_count, first, second, alpha=options.alpha, normalization=options.normalization
  )
  counts = dense.floor_pie_counts[plan.reference]
  low, high = _quantiles(counts, options.alpha)
  spread = (lambda x: float(np.std(x, ddof=1))) if len(counts) > 1 else (lambda x: None)
  return {
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


def _floor_note(plan):
  text = (
      "Each compressed population is read against its matched control (floor_control: the control whose models stand "
      "to the dense ones as its own do, seed_relation). pies_excess: its PIEs minus those of the control's models at "
      "its size (noise_floor_pies_mean); pies_excess_p_value: a conditional permutation test (the dense population "
      "fixed, the level's and the control's models exchanged, between twins only when they share the dense seeds; "
      "exact when the arrangements are few, else excess_permutations draws), one-sided; distinguishable_from_noise: "
      "p <= alpha; pies_excess_ci_low/_high: an interval of the excess given the dense population. Without a matched "
      "control they are null and floor_note says which control to add. "
  )
  if not plan.num_splits:
    return text + "No A/A splits were drawn (noise_floor_splits = 0)"
  if len(plan.pool_keys) == 1:
    return text + "half_splits halve the dense models: add config.controls = ('dense_replicate',) for a replicate"
  return text + "half_splits are drawn from the pooled dense and replicate models"


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


def harm_sources(entry, dense, level, relation, train_class_counts, options, shift=None):
  """Where a level's harm comes from, into its summary entry: how well each dense-only score predicts its PIEs (risk),
  and the Spearman correlation of each class's normalized change with its dense recall and with its training
  frequency, with p-values from reassigning the models (`significance.class_correlation_test`) and what a uniform
  shift of every example's margin would give."""
  entry["risk"] = difficulty.risk_metrics(dense.scores, level.pies)
  first, second = _reassignments(dense.models, level.models, relation, options)
  properties = {"class_difficulty_spearman": None}
  if train_class_counts is not None:
    properties["train_frequency_spearman"] = train_class_counts
  results = significance.class_correlation_tests(
      dense.hits,
      level.hits,
      dense.class_count,
      first,
      second,
      properties,
      None if shift is None else dense.count_histograms,
      shift,
  )
  for key in ("class_difficulty_spearman", "train_frequency_spearman"):
    result = results.get(key)
    entry[key] = (
        None if result is None else {field: _json_value(getattr(result, field)) for field in outputs.CORRELATION_KEYS}
    )


def _reassignments(dense_models, models, relation, options):
  """Which of the pooled dense and level models play the dense population and the level in each of the correlation
  test's reassignments: any split for independently seeded models, exchanges between twins for models that share
  the dense seeds or were made from the dense models."""
  n_dense, n_level = len(dense_models), len(models)
  permutations = max(options.excess_permutations, 1)
  if relation in (INDEPENDENT, MIXED):
    return significance.half_splits(n_dense + n_level, n_dense, n_level, permutations, options.seed)
  dense_seed = {m.name: m.seed for m in dense_models}
  strata = [f"seed{m.seed}" for m in dense_models] + [
      f"seed{dense_seed.get(m.dense_twin, m.seed if m.dense_seed is None else m.dense_seed)}" for m in models
  ]
  plan = significance.exchange_arrangements(n_dense, n_level, strata, permutations, options.seed)
  first = plan.arrangement_rows[1:]  # the observed arrangement is the test's own
  pool = np.arange(n_dense + n_level)
  second = np.stack([np.setdiff1d(pool, row) for row in first]) if len(first) else np.zeros((0, n_level), np.int64)
  return first, second


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
  """Pairs of a dense and a compressed model trained independently, model i of each population: the dense model of
  its recorded `dense_seed`; for exports that record none, the dense model of its own seed when the seeds are shared,
  else the i-th dense model by seed (the pairing of pie's independent seed blocks). No pair for a model whose partner
  is absent. What a user comparing one trained model with one compressed model would compare."""
  index = {m.seed: i for i, m in enumerate(dense_models)}
  if all(m.dense_seed is None for m in models) and not any(m.seed in index for m in models):
    by_rank = sorted(range(len(dense_models)), key=lambda i: dense_models[i].seed)
    order = sorted(range(len(models)), key=lambda j: models[j].seed)
    return _pairs(dense_models, models, list(zip(by_rank, order)), twins=False)
  partner = [m.seed if m.dense_seed is None else m.dense_seed for m in models]
  found = [(index[seed], j) for j, seed in enumerate(partner) if seed in index]
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


def compare_level(entry, dense, level, class_names, options, class_stability=None, shift=None):
  """class_stats.csv rows of one compared population (`LevelSums`, against the `DenseSums`), and its summary entry
  completed (in place).

  Everything here comes from sums over examples (correct predictions per model and class, PIE and tie counts), so
  the in-memory analysis and `pie.beam_analysis` share it. The level's `pairs` and `discordance` add the entry's
  `single_pair` (what each model pair alone says); twin pairs (the paired design) add the paired columns and the
  entry's paired keys too. `class_stability`: the bootstrap replicability of each class's p < alpha, or None;
  `shift`: the level's `uniform_shift` (None: not tested).
  """
  alpha, normalization = options.alpha, options.normalization
  classes = stats.class_ttest_from_hits(
      dense.hits, level.hits, dense.class_count, alpha=alpha, class_names=class_names, normalization=normalization
  )
  classes.insert(0, "sparsity", level.sparsity)
  if class_stability is not None:
    # The share of bootstrap resamples of the models in which p < alpha again: how replicable the uncorrected verdict
    # is, not the probability that the class is affected (on real A/A splits a false positive replicates 71% of the
    # time: docs/statistics.md).
    classes["significant_stability"] = class_stability
    classes["significance_replicability"] = class_stability
    entry["num_pies_stable_90"] = int(level.num_pies_stable_90)
  num_pies = int(level.pies.sum())
  entry.update(
      level.ties,
      num_pies=num_pies,
      pie_fraction=float(num_pies / len(level.pies)),
      models_needed=_power_plan(dense.hits, level.hits, dense.class_count, normalization, alpha, options.power_effect),
  )
  pairs = level.pairs
  if pairs is not None:
    entry["single_pair"] = single_pair_summary(level.discordance, dense.class_count, pairs, alpha, class_names)
  if pairs is not None and pairs.twins:
    paired = stats.paired_class_ttest_from_hits(
        dense.hits,
        level.hits,
        dense.class_count,
        pairs.dense_rows,
        pairs.rows,
        alpha=alpha,
        normalization=normalization,
    )
    for column in significance.PAIRED_COLUMNS:
      classes[column] = paired[column].to_numpy()
    entry.update(
        num_pairs=len(pairs.rows),
        paired_models_needed=_paired_power_plan(
            dense.hits, level.hits, dense.class_count, pairs, normalization, alpha, options.power_effect
        ),
    )
  _beyond_uniform_shift(classes, shift)
  class_counts(entry, classes)
  return classes


def _shift_testable(dense, level):
  """The uniform-shift fit's jackknife needs 3 dense models and 2 of the level's."""
  return len(dense.models) >= 3 and len(level.models) >= 2


def uniform_shift(dense, level, alpha):
  """`significance.uniform_shift_tests` of a level, or None with fewer than 3 dense models or 2 of the level's, which
  its jackknife needs."""
  if not _shift_testable(dense, level):
    return None
  return significance.uniform_shift_tests(dense.count_histograms, dense.hits, level.hits, dense.class_count, alpha)


def _beyond_uniform_shift(classes, shift):
  """class_stats.csv's uniform-shift columns from the level's `uniform_shift` (not tested: NaN, never significant)."""
  columns = (
      "uniform_shift_change",
      "beyond_uniform_shift",
      "beyond_uniform_shift_p_value",
      "beyond_uniform_shift_q_value",
  )
  if shift is None:
    for column in columns:
      classes[column] = np.nan
    classes["beyond_uniform_shift_significant_fdr"] = False
    return
  for column, values in zip(
      columns, (shift.uniform_shift_change, shift.beyond_uniform_shift, shift.p_value, shift.q_value)
  ):
    classes[column] = values
  classes["beyond_uniform_shift_significant_fdr"] = shift.significant_fdr


def class_counts(entry, classes):
  """The summary entry's counts of its class_stats.csv rows (in place): classes significant uncorrected (the paper's
  rule) and after FDR, hurt after FDR, their paired counterparts, the largest class harm, and the classes that
  changed beyond a uniform shift after FDR. Recounted when the study's FDR scope redoes the q-values."""
  entry.update(
      num_significant_classes=int(classes["significant"].sum()),
      num_significant_classes_fdr=int(classes["significant_fdr"].sum()),
      num_hurt_classes_fdr=int((classes["significant_fdr"] & (classes["normalized_change"] < 0)).sum()),
  )
  if "paired_significant_fdr" in classes:
    entry.update(
        num_significant_classes_paired=int(classes["paired_significant"].sum()),
        num_significant_classes_paired_fdr=int(classes["paired_significant_fdr"].sum()),
        num_hurt_classes_paired_fdr=int((classes["paired_significant_fdr"] & (classes["paired_change"] < 0)).sum()),
    )
  entry["largest_class_harm"] = largest_class_harm(classes)
  beyond = classes["beyond_uniform_shift_significant_fdr"].to_numpy(bool)
  entry.update(
      num_classes_beyond_uniform_shift_fdr=int(beyond.sum()),
      num_hurt_classes_beyond_uniform_shift_fdr=int((beyond & (classes["beyond_uniform_shift"] < 0)).sum()),
  )


# The q-value columns of class_stats.csv: (p-value column, q-value column, FDR decision column).
FDR_COLUMNS = (
    ("p_value", "q_value", "significant_fdr"),
    ("paired_p_value", "paired_q_value", "paired_significant_fdr"),
    ("beyond_uniform_shift_p_value", "beyond_uniform_shift_q_value", "beyond_uniform_shift_significant_fdr"),
)


def study_wide_fdr(frames, entries, alpha):
  """fdr_scope "study": Benjamini-Hochberg over every class test of every compared population at once (in place),
  instead of over each population's classes; the q-values, decisions and the entries' counts redone."""
  for p_column, q_column, decision in FDR_COLUMNS:
    holders = [frame for frame in frames if p_column in frame]
    if not holders:
      continue
    q = significance.bh_q_values(np.concatenate([frame[p_column].to_numpy(float) for frame in holders]))
    bounds = np.cumsum([0] + [len(frame) for frame in holders])
    for frame, start, stop in zip(holders, bounds[:-1], bounds[1:]):
      frame[q_column] = q[start:stop]
      frame[decision] = significance.bh_rejections(q[start:stop], alpha)
  for entry, frame in zip(entries, frames):
    class_counts(entry, frame)


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
    "uniform_shift_change",
    "beyond_uniform_shift",
    "beyond_uniform_shift_q_value",
    "beyond_uniform_shift_significant_fdr",
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
      f"{entry['num_significant_classes_fdr']} classes significant after FDR ({entry['num_hurt_classes_fdr']} hurt; "
      f"{entry['num_significant_classes']} at p < alpha uncorrected, the paper's rule)"
  )


def study_summary(study, levels, options, noise_floor_summary=None, design=None, mitigations=None, slices_summary=None):
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
      "alpha": options.alpha,
      "confidence_level": 1 - options.alpha,
      "seed": options.seed,
      "normalization": options.normalization,
      "bootstrap_resamples": options.bootstrap_resamples,
      "fdr_scope": options.fdr_scope,
      "tie_rule": stats.TIE_RULE,
      "design": design or outputs.INDEPENDENT_DESIGN,
      "levels": levels,
      "noise_floor": noise_floor_summary,
      "mitigations": mitigations or [],
      "slices": slices_summary,
  }
  if options.normalization == "population":
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


def log_floor(log, floor, levels):
  """One line for the floor and one for each level within it."""
  splits = floor["half_splits"]
  if floor["control"] is not None:
    log(
        f"noise floor: {floor['control']} against dense: {floor['num_pies']} PIEs, "
        f"{floor['num_significant_classes_fdr']} classes significant after FDR ({floor['num_significant_classes']} "
        "uncorrected)"
    )
  if splits is not None:
    log(
        f"noise floor: A/A splits {splits['sizes'][0]} + {splits['sizes'][1]}: {splits['num_pies_mean']:.1f} PIEs on "
        f"average (up to {splits['num_pies_high']:g}), {splits['num_significant_classes_fdr_mean']:.2f} classes "
        f"significant after FDR ({splits['num_significant_classes_mean']:.2f} uncorrected), "
        f"{splits['splits_with_fdr_discovery']:.1%} of splits with an FDR discovery"
    )
  within = [f"{e['method']} {e['sparsity']:g}" for e in levels if e.get("distinguishable_from_noise") is False]
  if within:
    log(f"within the noise floor (PIEs): {', '.join(within)}")
  for entry in levels:
    if entry.get("floor_note"):
      log(f"{entry['method']} {entry['sparsity']:g}: no noise floor: {entry['floor_note']}")


def log_mitigations(log, mitigations):
  for comparison in mitigations:
    log(f"mitigation: {comparison['sentence']}")


def empty_table(name, with_method=False):
  """A table with its header and no row (a study of dense models only compares nothing)."""
  return pd.DataFrame(columns=list(outputs.table(name).columns(method=with_method)))


# --- The sums both analyses supply -----------------------------------------------------------------------------------


@dataclasses.dataclass
class DenseSums:
  """The dense population's sums, which every compared population is set against.

  hits: correct predictions per model and class, [n_dense, n_classes] (`significance.class_hits`).
  class_count: examples per class.
  correct: dense models right on each example, [n_examples].
  scores: `difficulty.example_scores` of the dense population, one row per example in id order.
  slice_hits, slice_sizes: correct predictions per model and slice, and the slices' sizes (`pie.slices`).
  pool_hits: `hits` of the noise floor's pool of dense models (`FloorPlan.pool_keys`).
  floor_pie_counts: `FloorPlan.pie_counts` summed over every example.
  exchange_counts: `FloorPlan.exchange_counts` summed over every example (the PIE-excess tests).
  count_histograms: `significance.dense_count_histograms` summed over every example (the uniform-shift tests).
  """

  models: list
  hits: np.ndarray
  class_count: np.ndarray
  correct: np.ndarray
  scores: pd.DataFrame
  slice_hits: np.ndarray
  slice_sizes: np.ndarray
  pool_hits: np.ndarray
  floor_pie_counts: dict
  exchange_counts: dict
  count_histograms: tuple


@dataclasses.dataclass
class LevelSums:
  """One compared population's sums over examples.

  hits: correct predictions per model and class; pies: each example's PIE flag (bool [n_examples]); correct: the
  population's models right on each example; ties: `pie_rows`' tie counts; accuracy_sizes and accuracy_correct: the
  sizes of pie_accuracy.csv's subsets and each population's correct predictions per model on them; slice_hits and
  slice_pies: per model and slice, and PIEs per slice; pairs and discordance: its model pairs (`level_pairs`) and
  their discordant examples per class (`significance.pair_discordance`); resamples: the bootstrap's (dense rows,
  pruned rows), bootstrap_pie_counts its PIEs per resample and num_pies_stable_90 the PIEs still PIEs in 90% of
  resamples (all None without a bootstrap).
  """

  method: str
  sparsity: float
  models: list
  hits: np.ndarray
  pies: np.ndarray
  correct: np.ndarray
  ties: dict
  accuracy_sizes: dict
  accuracy_correct: dict
  slice_hits: np.ndarray
  slice_pies: np.ndarray
  pairs: "Pairs"
  discordance: np.ndarray
  resamples: Optional[tuple] = None
  bootstrap_pie_counts: Optional[np.ndarray] = None
  num_pies_stable_90: Optional[int] = None

  @property
  def key(self):
    return (self.method, self.sparsity)


def study_populations(study):
  """Every population of a `pie.study.Study` or `StudyIndex` by (method, level); a Study made by hand with `levels`
  only holds dense and magnitude models."""
  return study.populations or {
      variants.DENSE_KEY: study.levels[0.0],
      **{(variants.MAGNITUDE, s): study.levels[s] for s in study.pruned_levels},
  }


def build(study, dense, levels, floor_plan, slice_plan, options, log=print):
  """Every table made from sums, and summary.json, for a study's `DenseSums` and its compared `LevelSums` (in output
  order).

  Returns (tables, summary): class_stats.csv, pie_accuracy.csv, difficulty.csv and slice_stats.csv as DataFrames (the
  per-example tables, pies.csv and exemplar_scores.csv, are made block by block by each analysis).
  """
  populations = study_populations(study)
  with_method = outputs.has_method_column(method for method, _ in populations)
  num_examples = int(np.sum(dense.class_count))
  entries = [level_entry(variants.DENSE_KEY, dense.models, top1_from_hits(dense.hits, num_examples))]
  parts = {name: [] for name in (outputs.CLASS_STATS_CSV, outputs.PIE_ACCURACY_CSV, outputs.DIFFICULTY_CSV)}
  parts[outputs.SLICE_STATS_CSV] = []
  bins = difficulty.deciles(dense.scores["dense_true_prob"].to_numpy())
  for level in levels:
    entry, frames = _level_tables(study, dense, level, bins, slice_plan, floor_plan.relations[level.key], options)
    for name, frame in frames.items():
      if with_method:
        frame[outputs.METHOD_COLUMN] = level.method
      parts[name].append(frame)
    entries.append(entry)
  if options.fdr_scope == "study":
    study_wide_fdr(parts[outputs.CLASS_STATS_CSV], entries[1:], options.alpha)
  for level, entry in zip(levels, entries[1:]):
    log_level(log, level.method, level.sparsity, entry)
  if floor_plan.splits:
    log(f"noise floor: {floor_plan.num_splits} A/A splits of {floor_plan.pool_size} dense models")
  boot_counts = {level.key: level.bootstrap_pie_counts for level in levels}
  floor = noise_floor(floor_plan, entries, dense, options)
  log_floor(log, floor, entries)
  mitigations = mitigation_comparisons(
      entries,
      dense.hits,
      {level.key: level.hits for level in levels},
      dense.class_count,
      study.class_names,
      boot_counts,
      options.alpha,
      options.normalization,
  )
  log_mitigations(log, mitigations)
  summary = study_summary(
      study,
      entries,
      options,
      floor,
      study_design(populations),
      mitigations,
      slices_summary=slice_plan.summary(options.min_slice_size),
  )
  tables = {
      name: (pd.concat(frames, ignore_index=True) if frames else empty_table(name, with_method))
      for name, frames in parts.items()
  }
  return tables, summary


def _level_tables(study, dense, level, bins, slice_plan, relation, options):
  """One compared population's summary entry and its rows of the tables made from sums."""
  num_examples = int(np.sum(dense.class_count))
  entry = level_entry(level.key, level.models, top1_from_hits(level.hits, num_examples))
  class_stability = None
  if level.resamples is not None:
    class_stability, _ = significance.bootstrap_class_stability(
        dense.hits,
        level.hits,
        dense.class_count,
        *level.resamples,
        alpha=options.alpha,
        normalization=options.normalization,
    )
  shift = uniform_shift(dense, level, options.alpha)
  classes = compare_level(entry, dense, level, study.class_names, options, class_stability, shift)
  frames = {
      outputs.CLASS_STATS_CSV: classes,
      outputs.PIE_ACCURACY_CSV: accuracy_rows(level.sparsity, level.accuracy_sizes, level.accuracy_correct),
      outputs.DIFFICULTY_CSV: difficulty.difficulty_rows(
          level.sparsity,
          dense.scores["dense_true_prob"].to_numpy(),
          bins,
          level.pies,
          dense.correct,
          len(dense.models),
          level.correct,
          len(level.models),
      ),
  }
  if len(slice_plan):
    frames[outputs.SLICE_STATS_CSV] = slice_table(
        entry,
        slice_plan,
        level.sparsity,
        dense.slice_hits,
        level.slice_hits,
        dense.slice_sizes,
        top1_from_hits(dense.hits, num_examples),
        top1_from_hits(level.hits, num_examples),
        level.slice_pies,
        options.alpha,
        options.normalization,
        options.min_slice_size,
    )
  harm_sources(entry, dense, level, relation, study.train_class_counts, options, shift)
  return entry, frames
