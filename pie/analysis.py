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
and random splits of the pooled dense and replicate models into two populations of the compared sizes; each level's
PIEs are set against them (`pie.builder.noise_floor`).

This module computes the sums over examples from the prediction matrices in memory and the per-example tables
(pies.csv, exemplar_scores.csv); `pie.builder.build` makes every other table and summary.json from those sums, as it
does for `pie.beam_analysis`, which computes the same files for prediction sets too large for one machine's memory.
"""

import io
import os

import ml_collections
import numpy as np
import pandas as pd

from pie import builder
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

AnalysisOptions = builder.AnalysisOptions
# Defaults of the options, where scripts and the flags read them.
DEFAULT_POWER_EFFECT = builder.DEFAULT_POWER_EFFECT
DEFAULT_NOISE_FLOOR_SPLITS = builder.DEFAULT_NOISE_FLOOR_SPLITS
DEFAULT_EXCESS_PERMUTATIONS = builder.DEFAULT_EXCESS_PERMUTATIONS


def _names(class_names, ids):
  return [class_names[i] for i in ids]


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
    options=None,
    images=True,
    report=True,
    allow_mixed_configs=False,
    validate_first=True,
    export_missing=False,
    checkpoint_dirs=None,
    config=None,
    num_workers=None,
    log=print,
    **option_fields,
):
  """The whole analysis of a study directory (or of a list of prediction files): validation, loading, every output.

  options: the statistics' settings (`AnalysisOptions`); its fields may also be given as keywords (alpha=0.01).
  export_missing: first export the study's trained models that have no finished prediction file, from their saved
    models or final checkpoints (`pie.saved_exports.export_missing`, in `num_workers` processes).
  checkpoint_dirs: glob patterns of runs trained outside a study, one directory per model, instead of a study or
    prediction files: they are exported with `config` into <out_dir>/predictions (`pie.saved_exports.export_runs`)
    and analysed; with `validate_first`, unfinished runs and declared levels their weights contradict stop it.
  Returns (out_dir, summary). This is what `python -m analysis.analyze` and `train.population --analyze` run.
  """
  options = AnalysisOptions.of(options, **option_fields)  # checked before any export
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
  summary = analyze_study(study, out_dir, options, images=images, report=report, log=log)
  return out_dir, summary


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


def accuracy_sums(dense_correct, pruned_correct, pies, rng):
  """pie_accuracy.csv's sums of one level: (sizes of its PIE, random and non-PIE subsets, each population's correct
  predictions per model on them); `*_correct` are bool [n_models, n_examples]."""
  num_examples = len(pies)
  masks = {
      "pie": pies,
      "random": np.isin(np.arange(num_examples), random_sample(rng, num_examples, int(pies.sum()))),
      "non_pie": ~pies,
  }
  correct = {variants.DENSE: subset_correct(dense_correct, masks), "pruned": subset_correct(pruned_correct, masks)}
  return {subset: int(mask.sum()) for subset, mask in masks.items()}, correct


class _Dense:
  """The dense population as every compared level needs it in memory: predictions, modal labels, difficulty."""

  def __init__(self, models, labels, num_classes):
    self.models = models
    self.predictions = np.stack([m.top1 for m in models])
    self.details = stats.modal_labels(self.predictions, return_details=True)
    self.largest = stats.modal_labels(self.predictions, tie_break="largest")
    self.correct = self.predictions == labels
    self.scores = dense_difficulty(models, self.predictions)


def _level_sums(study, key, models, dense, slicing, design, options, rng):
  """One compared population's `builder.LevelSums`, and its rows of pies.csv and exemplar_scores.csv."""
  method, sparsity = key
  labels, num_classes = study.labels, study.num_classes
  slice_plan, membership = slicing
  pruned = np.stack([m.top1 for m in models])
  pairs = builder.level_pairs(design, dense.models, models)
  discordance = (
      significance.pair_discordance(dense.predictions[pairs.dense_rows], pruned[pairs.rows], labels, num_classes)
      if len(pairs.rows)
      else np.zeros((0, num_classes, 2), np.int64)
  )
  resamples = stability = boot_counts = None
  if options.bootstrap_resamples:
    resamples = significance.bootstrap_resamples(
        len(dense.models), len(models), options.bootstrap_resamples, options.seed
    )
    stability, _, boot_counts = significance.bootstrap_pie_stability(
        dense.predictions, pruned, num_classes, *resamples, return_counts=True
    )
  pies, pies_table, ties = pie_rows(
      sparsity,
      np.arange(len(labels)),
      labels,
      dense.details,
      stats.modal_labels(pruned, return_details=True),
      study.class_names,
      pie_stability=stability,
      largest_id_modal=(dense.largest, stats.modal_labels(pruned, tie_break="largest")),
  )
  correct = pruned == labels
  sizes, subset_counts = accuracy_sums(dense.correct, correct, pies, rng)
  level = builder.LevelSums(
      method,
      sparsity,
      models,
      hits=significance.class_hits(pruned, labels, num_classes),
      pies=pies,
      correct=correct.sum(axis=0),
      ties=ties,
      accuracy_sizes=sizes,
      accuracy_correct=subset_counts,
      slice_hits=significance.subset_hits(pruned, labels, membership),
      slice_pies=slice_plan.pie_counts(pies, membership),
      pairs=pairs,
      discordance=discordance,
      resamples=resamples,
      bootstrap_pie_counts=boot_counts,
      num_pies_stable_90=None if stability is None else int((pies_table["pie_stability"] >= 0.9).sum()),
  )
  exemplars = exemplar_table(sparsity, dense.predictions, pruned, labels, num_classes, dense.scores)
  return level, pies_table, exemplars


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


def analyze(study, options=None, log=print, **option_fields):
  """Computes every table of the analysis in memory: dict of DataFrames, the summary, and the PIE ids per level.

  options: `AnalysisOptions` (its fields may also be given as keywords). Its `class_groups` (None: the study
  config's) and the study's exported slice features give slice_stats.csv (`pie.slices`); slices smaller than
  `min_slice_size` are reported, not tested.
  """
  options = AnalysisOptions.of(options, **option_fields)
  populations = builder.study_populations(study)
  builder.check_populations(populations, study.study_dir or "the prediction files")
  compressed, with_method, primary = builder.compared_populations(populations)
  labels, num_classes = study.labels, study.num_classes
  dense = _Dense(populations[variants.DENSE_KEY], labels, num_classes)
  plan = builder.FloorPlan(
      populations, compressed, options.noise_floor_splits, options.seed, options.excess_permutations
  )
  slice_plan = slices_lib.study_plan(study, options.class_groups)
  membership = slice_plan.membership(labels, study.slice_values)
  pool = np.concatenate([np.stack([m.top1 for m in populations[k]]) for k in plan.pool_keys])
  dense_sums = builder.DenseSums(
      models=dense.models,
      hits=significance.class_hits(dense.predictions, labels, num_classes),
      class_count=np.bincount(labels, minlength=num_classes),
      correct=dense.correct.sum(axis=0),
      scores=dense.scores,
      slice_hits=significance.subset_hits(dense.predictions, labels, membership),
      slice_sizes=membership.sum(axis=0),
      pool_hits=significance.class_hits(pool, labels, num_classes),
      floor_pie_counts=plan.pie_counts(pool, num_classes),
      exchange_counts=plan.exchange_counts(
          dense.predictions, lambda key: np.stack([m.top1 for m in populations[key]]), num_classes
      ),
      count_histograms=significance.dense_count_histograms(dense.predictions, labels, num_classes),
  )
  rng = np.random.default_rng(options.seed)
  design = builder.study_design(populations)
  per_example = {outputs.PIES_CSV: [], outputs.EXEMPLAR_SCORES_CSV: []}
  levels, pie_ids = [], {}
  for key in compressed:
    level, pies_table, exemplars = _level_sums(
        study, key, populations[key], dense, (slice_plan, membership), design, options, rng
    )
    for name, frame in ((outputs.PIES_CSV, pies_table), (outputs.EXEMPLAR_SCORES_CSV, exemplars)):
      if with_method:
        frame[outputs.METHOD_COLUMN] = level.method
      per_example[name].append(frame)
    if level.method == primary:
      pie_ids[level.sparsity] = np.nonzero(level.pies)[0]
    levels.append(level)
  tables, summary = builder.build(study, dense_sums, levels, plan, slice_plan, options, log)
  for name, frames in per_example.items():
    tables[name] = pd.concat(frames, ignore_index=True) if frames else builder.empty_table(name, with_method)
  return {table.name: tables[table.name] for table in outputs.ANALYSIS_TABLES}, summary, pie_ids


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


def analyze_study(study, out_dir, options=None, images=True, report=True, log=print, **option_fields):
  """Runs the analysis and writes every output file into `out_dir`; returns the summary dict.

  options: `AnalysisOptions` (its fields may also be given as keywords: `pie.analyze_study(study, out, alpha=0.01)`);
  images: write the PIE images (pies.tfrecord, read from the study's eval split); report: write report.html.
  """
  tables, summary, pie_ids = analyze(study, options, log=log, **option_fields)
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
