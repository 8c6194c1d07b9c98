"""The study analysis as an Apache Beam pipeline, for prediction sets larger than one machine's memory.

`analyze_study(study_dir, out_dir)` writes pies.csv, class_stats.csv, exemplar_scores.csv, pie_accuracy.csv,
difficulty.csv, slice_stats.csv and summary.json with the same columns, rows, order and text as
`pie.analysis.analyze_study` (tests/test_beam_analysis.py compares them byte for byte), bootstrap stability included.
It writes neither the PIE images (pies.tfrecord) nor report.html: both need the tables in one process;
`pie.report.write_report(out_dir)` makes the report from the files when they fit in memory.

What runs where:
  driver   the metadata of every prediction file (`study.scan_study`), the bootstrap's resampled model indices, and
           at the end the statistics of sums over examples (class tests, top-1, power plan, PIE accuracy, summary)
           by the functions of pie.analysis; then it concatenates the per-example shards the workers wrote.
  Beam     everything that touches predictions: one element per prediction file (read and checked by
           `pie.predictions.read_predictions`), cut into blocks of consecutive example ids; a GroupByKey brings every
           model's predictions of a block together, and each block is scored by the functions of the in-memory
           analysis (modal labels, ties, PIEs, exemplar L1 distances, bootstrap PIE stability: each example depends on
           its own predictions only). What needs every example (the random subset of pie_accuracy.csv, the exemplar
           ranks) is computed from small global sums: PIE counts per level, then the same random draw as in memory;
           histograms of the integer L1 distances, from which each block ranks its own examples.
The driver holds models x classes counts and per-level sums, never models x examples predictions. `out_dir` must be
reachable by the workers (e.g. gs:// on Dataflow): intermediate shards go to a folder in it, removed at the end.

The runner and its settings are Beam pipeline options (`pipeline_args`, e.g. ["--runner=DataflowRunner",
"--project=...", "--region=...", "--temp_location=gs://...", "--setup_file=./setup.py"]); DirectRunner by default.
"""

import collections
import hashlib
import os
import pickle
import time
import uuid

import numpy as np
import pandas as pd
import tensorflow as tf

from pie import analysis
from pie import builder
from pie import difficulty
from pie import io_utils
from pie import outputs
from pie import predictions as predictions_lib
from pie import significance
from pie import slices as slices_lib
from pie import stats
from pie import study as study_lib
from pie import validate
from pie import variants
from pie.errors import PieError

INSTALL_HINT = "pip install -e '.[beam]'"
DEFAULT_BLOCK_SIZE = 20_000  # examples per block: a worker holds models x block_size predictions at once
DEFAULT_SHARD_ROWS = 200_000  # rows per shard of exemplar_scores.csv
# Outputs of pie.analysis this pipeline does not write: an earlier run's copies would not match the new tables.
_STALE = (outputs.PIES_TFRECORD, outputs.REPORT_HTML)
# The tie counts of `analysis.pie_rows`, summed over blocks.
_TIE_COUNTS = (
    "num_ties_dense",
    "num_ties_pruned",
    "num_pies_with_tie",
    "num_pies_largest_id_rule",
    "num_pies_tie_dependent",
)


def import_beam():
  """apache_beam, or a PieError saying how to install it (it is an optional extra)."""
  try:
    import apache_beam  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise PieError(f"the Beam analysis needs apache_beam, which is not installed ({e}): {INSTALL_HINT}") from None
  return apache_beam


class _Level:
  """One compared population: its rows in the block's model matrix, its bootstrap resamples (or None) and, in the
  paired design, its pairs with their dense twins (`builder.Pairs`, rows within each population; or None)."""

  def __init__(self, method, sparsity, rows, dense_resamples=None, pruned_resamples=None, pairs=None):
    self.method, self.sparsity, self.rows = method, sparsity, rows
    self.dense_resamples, self.pruned_resamples = dense_resamples, pruned_resamples
    self.pairs = pairs


class _Plan:
  """Everything the workers need, pickled into the pipeline: small (no predictions)."""

  def __init__(
      self, index, models, levels, with_method, seed, block_size, shard_rows, work_dir, floor, pool_rows, slices
  ):
    self.paths = [m.path for m in models]  # model i of the block matrix reads paths[i]
    self.slices = slices  # the SlicePlan: slice_stats.csv's slices (features, intersections, class groups)
    self.floor, self.pool_rows = floor, pool_rows  # the noise floor's A/A splits and its models' rows
    self.reference = self.paths.index(index.paths[0])  # the file whose labels the others must equal
    self.num_examples, self.num_classes = index.num_examples, index.num_classes
    self.class_names = index.class_names
    self.dense = slice(0, len(index.populations[variants.DENSE_KEY]))
    self.levels, self.with_method, self.seed = levels, with_method, seed
    self.rows_of = {(level.method, level.sparsity): level.rows for level in levels}  # each population's model rows
    self.block_size, self.shard_rows, self.work_dir = block_size, shard_rows, work_dir
    # Logits give the EL2N difficulty score; read only when every export has them, as load_study does.
    self.with_logits = all(m.has_logits for m in models)

  @property
  def num_blocks(self):
    return -(-self.num_examples // self.block_size)

  def block_ids(self, block):
    start = block * self.block_size
    return np.arange(start, min(start + self.block_size, self.num_examples))

  def pies_shard(self, level, block):
    return os.path.join(self.work_dir, "pies", f"{level:05d}-{block:09d}.csv")

  def exemplar_shard(self, level, shard):
    return os.path.join(self.work_dir, "exemplar_scores", f"{level:05d}-{shard:09d}.csv")

  @property
  def small_results(self):
    return os.path.join(self.work_dir, "sums.pkl")


def _labels_digest(labels):
  return hashlib.sha256(np.ascontiguousarray(labels, np.int64).tobytes()).hexdigest()


def _model_sums(top1, labels, slice_values, plan, reference):
  """One model's sums over its examples: hits per class and per slice, with the sizes when it is the reference."""
  membership = plan.slices.membership(labels, slice_values)
  return {
      "hits": significance.class_hits(top1[None, :], labels, plan.num_classes)[0],
      "labels_digest": _labels_digest(labels),
      "slices_digest": _labels_digest(slice_values),
      "slice_hits": significance.subset_hits(top1[None, :], labels, membership)[0],
      "class_count": np.bincount(labels, minlength=plan.num_classes) if reference else None,
      "slice_sizes": membership.sum(axis=0) if reference else None,
  }


# --- Worker steps (module functions, so that any runner can pickle them by reference) -------------------------------


def _read_model(item, plan):
  """One prediction file -> its per-class hits, and its top-1 cut into blocks (with the labels, for the reference)."""
  beam = import_beam()
  index, path = item
  start = time.time()
  try:
    pred = predictions_lib.read_predictions(path, with_logits=plan.with_logits)
  except PieError as e:  # reported by the driver, in file order, like load_study would
    pred, error = None, str(e)
  if pred is None:
    yield beam.pvalue.TaggedOutput("errors", (index, error))
  else:
    top1, labels = pred.top1.astype(np.int32), pred.labels
    reference = index == plan.reference
    yield beam.pvalue.TaggedOutput("models", (index, _model_sums(top1, labels, pred.slice_values, plan, reference)))
    true_prob, el2n = study_lib.difficulty_parts(pred)
    for block in range(plan.num_blocks):
      ids = slice(block * plan.block_size, (block + 1) * plan.block_size)
      yield block, (
          index,
          top1[ids],
          true_prob[ids],
          None if el2n is None else el2n[ids],
          pred.slice_values[ids] if reference else None,
          labels[ids] if reference else None,
      )
    beam.metrics.Metrics.counter("pie", "prediction_files_read").inc()  # progress in the runner's monitoring
    print(f"read {path} ({len(labels)} examples, {time.time() - start:.1f}s)", flush=True)


def _score_block(item, plan):
  """Every model's predictions of one block -> pies.csv shards, per-level sums, exemplar parts, correctness bits."""
  block, parts = item
  parts = list(parts)
  reference = next((part for part in parts if part[-1] is not None), None)
  if len(parts) == len(plan.paths) and reference is not None:  # else a file was unreadable: the driver reports it
    yield from _scored_block(block, parts, reference[-1], reference[-2], plan)


def _scored_block(block, parts, labels, slice_values, plan):
  beam = import_beam()
  ids = plan.block_ids(block)
  predictions = np.empty((len(plan.paths), len(ids)), np.int32)
  true_prob = np.empty((len(plan.paths), len(ids)), np.float32)
  el2n = np.empty((len(plan.paths), len(ids)), np.float32) if plan.with_logits else None
  for index, top1, model_true_prob, model_el2n, _, _ in parts:
    predictions[index], true_prob[index] = top1, model_true_prob
    if el2n is not None:
      el2n[index] = model_el2n
  dense = predictions[plan.dense]
  scores = difficulty.example_scores(dense, true_prob[plan.dense], None if el2n is None else el2n[plan.dense])
  correct = predictions == labels
  dense_details = stats.modal_labels(dense, return_details=True)
  dense_largest = stats.modal_labels(dense, tie_break="largest")
  sums = {
      ("floor", pair): counts
      for pair, counts in plan.floor.pie_counts(predictions[plan.pool_rows], plan.num_classes).items()
  }
  exchanges = plan.floor.exchange_counts(dense, lambda key: predictions[plan.rows_of[key]], plan.num_classes)
  sums.update({("exchange", key): counts for key, counts in exchanges.items()})
  sums[("histograms", "by_class")], sums[("histograms", "by_model")] = significance.dense_count_histograms(
      dense, labels, plan.num_classes
  )
  pies = np.zeros((len(plan.levels), len(ids)), bool)
  membership = plan.slices.membership(labels, slice_values)
  for j, level in enumerate(plan.levels):
    pruned = predictions[level.rows]
    stability = None
    if level.dense_resamples is not None:
      stability, _, sums[(j, "bootstrap_counts")] = significance.bootstrap_pie_stability(
          dense, pruned, plan.num_classes, level.dense_resamples, level.pruned_resamples, return_counts=True
      )
    pies[j], table, ties = analysis.pie_rows(
        level.sparsity,
        ids,
        labels,
        dense_details,
        stats.modal_labels(pruned, return_details=True),
        plan.class_names,
        pie_stability=stability,
        largest_id_modal=(dense_largest, stats.modal_labels(pruned, tie_break="largest")),
    )
    if plan.with_method:
      table[outputs.METHOD_COLUMN] = level.method
    io_utils.write_text(plan.pies_shard(j, block), analysis.csv_text(table))
    if level.pairs is not None and len(level.pairs.rows):
      # The discordant examples of each pair, per class: counts that add up over blocks (one model pair alone).
      sums[(j, "discordance")] = significance.pair_discordance(
          dense[level.pairs.dense_rows], pruned[level.pairs.rows], labels, plan.num_classes
      )
    sums.update({(j, name): value for name, value in ties.items()})
    sums[(j, "num_pies")] = int(pies[j].sum())
    sums[(j, "slice_pies")] = plan.slices.pie_counts(pies[j], membership)
    if stability is not None:
      sums[(j, "num_pies_stable_90")] = int((table["pie_stability"] >= 0.9).sum())
    dense_modal, pruned_modal, l1_int = significance.exemplar_parts(dense, pruned, plan.num_classes)
    yield beam.pvalue.TaggedOutput("scores", (block, (j, labels, dense_modal, pruned_modal, l1_int, scores)))
    yield beam.pvalue.TaggedOutput(
        "histograms",
        (j, block, significance.exemplar_histogram(l1_int, plan.dense.stop, level.rows.stop - level.rows.start)),
    )
  yield beam.pvalue.TaggedOutput("sums", sums)
  # difficulty.csv and the risk metrics rank every example: the driver gathers a few numbers per example (never the
  # models x examples predictions).
  yield beam.pvalue.TaggedOutput(
      "difficulty",
      (
          block,
          {
              "scores": scores,
              "pies": pies,
              "dense_correct": correct[plan.dense].sum(axis=0),
              "pruned_correct": np.stack([correct[level.rows].sum(axis=0) for level in plan.levels])
              if plan.levels
              else np.zeros((0, len(ids)), np.int64),
          },
      ),
  )
  # pie_accuracy.csv needs each model's correctness on subsets known only once every block is scored: one bit each.
  yield block, (np.packbits(correct, axis=1), np.packbits(pies, axis=1))


def _add(values):
  """Sums dicts of numbers / arrays key by key (a commutative, associative combine)."""
  total = {}
  for value in values:
    for key, x in value.items():
      total[key] = total[key] + x if key in total else x
  return total


def _random_samples(sums, plan):
  """pie_accuracy.csv's random subsets, drawn exactly as pie.analysis draws them, cut by block."""
  rng = np.random.default_rng(plan.seed)
  starts = np.arange(plan.num_blocks + 1) * plan.block_size
  by_block = collections.defaultdict(dict)
  for j in range(len(plan.levels)):
    sample = np.sort(analysis.random_sample(rng, plan.num_examples, sums.get((j, "num_pies"), 0)))
    bounds = np.searchsorted(sample, starts)
    for block in range(plan.num_blocks):
      by_block[block][j] = sample[bounds[block] : bounds[block + 1]]
  for block in range(plan.num_blocks):
    yield block, by_block[block]


def _subset_counts(item, plan):
  """Correct predictions per model on the PIE, random and non-PIE examples of one block, and the subsets' sizes."""
  block, grouped = item
  if grouped["correct"] and grouped["sample"]:  # else the block was not scored (an unreadable file)
    yield _block_subset_counts(block, grouped["correct"][0], grouped["sample"][0], plan)


def _block_subset_counts(block, correct_and_pies, sample, plan):
  packed_correct, packed_pies = correct_and_pies
  ids = plan.block_ids(block)
  correct = np.unpackbits(packed_correct, axis=1, count=len(ids)).astype(bool)
  pies = np.unpackbits(packed_pies, axis=1, count=len(ids)).astype(bool)
  counts = {}
  for j, level in enumerate(plan.levels):
    masks = {"pie": pies[j], "random": np.isin(ids, sample[j]), "non_pie": ~pies[j]}
    for population, rows in ((variants.DENSE, plan.dense), ("pruned", level.rows)):
      for subset, value in analysis.subset_correct(correct[rows], masks).items():
        counts[(j, population, subset)] = value
    for subset, mask in masks.items():
      counts[(j, "size", subset)] = int(mask.sum())
  return counts


def _rank_offsets(histograms, plan):
  """Per block and level: the L1 histogram of every example and of the examples before the block."""
  by_level = collections.defaultdict(dict)
  for j, block, histogram in histograms:
    by_level[j][block] = histogram
  offsets = collections.defaultdict(dict)
  for j, blocks in by_level.items():
    total = np.sum(list(blocks.values()), axis=0)
    before = np.zeros_like(total)
    for block in range(plan.num_blocks):
      offsets[block][j] = (total, before)
      if block in blocks:
        before = before + blocks[block]
  yield from offsets.items()


def _ranked_rows(item, plan):
  """exemplar_scores.csv rows of one block with their global ranks, keyed by (level, shard of ranks)."""
  block, grouped = item
  offsets = grouped["offsets"][0] if grouped["offsets"] else {}
  ids = plan.block_ids(block)
  for j, labels, dense_modal, pruned_modal, l1_int, difficulty_scores in grouped["scores"]:
    level = plan.levels[j]
    total, before = offsets[j]
    rank = significance.exemplar_ranks(l1_int, total, before)
    scores = significance.exemplar_frame(
        dense_modal, pruned_modal, l1_int, plan.dense.stop, level.rows.stop - level.rows.start, rank, example_ids=ids
    )
    rows = analysis.exemplar_rows(level.sparsity, labels, scores, difficulty_scores)
    if plan.with_method:
      rows[outputs.METHOD_COLUMN] = level.method
    shard = (rank - 1) // plan.shard_rows
    for s in np.unique(shard):
      yield (j, int(s)), rows[shard == s]


def _write_exemplar_shard(item, plan):
  (j, shard), frames = item
  rows = pd.concat(list(frames), ignore_index=True).sort_values("rank", kind="stable")
  io_utils.write_text(plan.exemplar_shard(j, shard), analysis.csv_text(rows))


def _write_sums(unused_start, plan, models, errors, sums, accuracy, difficulty_parts):
  io_utils.write_bytes(
      plan.small_results,
      pickle.dumps(
          {
              "models": dict(models),
              "errors": dict(errors),
              "sums": sums,
              "accuracy": accuracy,
              "difficulty": dict(difficulty_parts),
          }
      ),
  )


def _build_pipeline(pipeline, plan):
  beam = import_beam()
  read = (
      pipeline
      | "PredictionFiles" >> beam.Create(list(enumerate(plan.paths)))
      | "ReadFiles" >> beam.FlatMap(_read_model, plan).with_outputs("models", "errors", main="blocks")
  )
  scored = (
      read.blocks
      | "GroupByBlock" >> beam.GroupByKey()
      | "ScoreBlocks"
      >> beam.FlatMap(_score_block, plan).with_outputs("scores", "histograms", "sums", "difficulty", main="correct")
  )
  sums = scored.sums | "SumLevels" >> beam.CombineGlobally(_add)
  samples = sums | "DrawRandomSubsets" >> beam.FlatMap(_random_samples, plan)
  accuracy = (
      {"correct": scored.correct, "sample": samples}
      | "JoinSubsets" >> beam.CoGroupByKey()
      | "CountOnSubsets" >> beam.FlatMap(_subset_counts, plan)
      | "SumSubsets" >> beam.CombineGlobally(_add)
  )
  offsets = (
      scored.histograms
      | "AllHistograms" >> beam.combiners.ToList()
      | "RankOffsets" >> beam.FlatMap(_rank_offsets, plan)
  )
  _ = (
      {"scores": scored.scores, "offsets": offsets}
      | "JoinRanks" >> beam.CoGroupByKey()
      | "RankExamples" >> beam.FlatMap(_ranked_rows, plan)
      | "GroupByRankShard" >> beam.GroupByKey()
      | "WriteExemplarShards" >> beam.Map(_write_exemplar_shard, plan)
  )
  _ = (
      pipeline
      | "Start" >> beam.Create([None])
      | "WriteSums"
      >> beam.Map(
          _write_sums,
          plan,
          models=beam.pvalue.AsList(read.models),
          errors=beam.pvalue.AsList(read.errors),
          sums=beam.pvalue.AsSingleton(sums),
          accuracy=beam.pvalue.AsSingleton(accuracy),
          difficulty_parts=beam.pvalue.AsList(scored.difficulty),
      )
  )


# --- Driver ---------------------------------------------------------------------------------------------------------


def pipeline_options(pipeline_args=()):
  """Beam PipelineOptions from command-line style arguments, DirectRunner unless they name a runner.

  An argument that is no Beam option is a PieError: a mistyped flag would otherwise be dropped silently.
  """
  import_beam()
  from apache_beam.options import pipeline_options as beam_options  # pylint: disable=g-import-not-at-top

  args = list(pipeline_args)
  for i, arg in enumerate(args):
    if not arg.startswith("-") and not (i and args[i - 1].startswith("--") and "=" not in args[i - 1]):
      raise PieError(
          f"unexpected argument {arg!r}: Beam pipeline options look like --name=value", parameter="pipeline_args"
      )
  if not any(a == "--runner" or a.startswith("--runner=") for a in args):
    args.append("--runner=DirectRunner")
  options = beam_options.PipelineOptions(args)
  unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options()))
  if unknown:
    raise PieError(
        f"unknown option(s) {', '.join('--' + u for u in unknown)}: neither a flag of the analysis nor "
        "an Apache Beam pipeline option"
    )
  return options


def _collect_sums(plan, index, log):
  """The pipeline's small results, after the driver's checks of what the workers found."""
  with tf.io.gfile.GFile(plan.small_results, "rb") as f:
    results = pickle.loads(f.read())
  by_path = {path: i for i, path in enumerate(plan.paths)}
  for path in index.paths:  # the order load_study reads them in, so that it reports the same file first
    i = by_path[path]
    if i in results["errors"]:
      raise PieError(results["errors"][i])
    if i not in results["models"]:
      raise PieError(f"{path}: the pipeline returned no result for it (a runner problem: rerun)")
    if results["models"][i]["labels_digest"] != results["models"][plan.reference]["labels_digest"]:
      raise PieError(f"{path}: labels differ from those of {index.paths[0]} for the same example ids")
    if results["models"][i]["slices_digest"] != results["models"][plan.reference]["slices_digest"]:
      raise PieError(f"{path}: slice feature values differ from those of {index.paths[0]} for the same example ids")
  log(f"beam: {len(results['models'])} prediction files read and checked")
  return results


def _concatenate(shards, path):
  """One output CSV from shards that each start with the same header."""
  with io_utils.atomic_path(path) as tmp:
    with tf.io.gfile.GFile(tmp, "w") as out:
      header = None
      for shard in shards:
        if not tf.io.gfile.exists(shard):
          raise PieError(f"{shard}: a shard of {os.path.basename(path)} is missing (a runner problem: rerun)")
        with tf.io.gfile.GFile(shard) as f:
          first, _, body = f.read().partition("\n")
        if header is None:
          header = first
          out.write(header + "\n")
        out.write(body)


def _make_plan(index, options, block_size, shard_rows, work_dir):
  """The pipeline's `_Plan`: every compared population's rows in the block matrix, its resamples and pairs."""
  compressed, with_method, _ = builder.compared_populations(index.populations)
  models = list(index.populations[variants.DENSE_KEY])
  n_dense = len(models)
  design = builder.study_design(index.populations)
  levels = []
  row_of_key = {variants.DENSE_KEY: slice(0, n_dense)}
  for method, sparsity in compressed:
    population = index.populations[(method, sparsity)]
    rows = slice(len(models), len(models) + len(population))
    row_of_key[(method, sparsity)] = rows
    resamples = (
        significance.bootstrap_resamples(n_dense, len(population), options.bootstrap_resamples, options.seed)
        if options.bootstrap_resamples
        else (None, None)
    )
    pairs = builder.level_pairs(design, index.populations[variants.DENSE_KEY], population)
    levels.append(_Level(method, sparsity, rows, *resamples, pairs=pairs))
    models += population
  floor = builder.FloorPlan(
      index.populations, compressed, options.noise_floor_splits, options.seed, options.excess_permutations
  )
  return _Plan(
      index,
      models,
      levels,
      with_method,
      options.seed,
      block_size,
      shard_rows,
      work_dir,
      floor,
      floor.pool_rows(row_of_key),
      slices_lib.study_plan(index, options.class_groups),
  )


def analyze_study(
    study_dir=None,
    out_dir=None,
    prediction_files=None,
    options=None,
    allow_mixed_configs=False,
    pipeline_args=(),
    block_size=DEFAULT_BLOCK_SIZE,
    shard_rows=DEFAULT_SHARD_ROWS,
    log=print,
    **option_fields,
):
  """Runs the analysis as a Beam pipeline and writes its tables and summary.json into `out_dir`; returns the summary.

  Arguments as for `pie.analysis.analyze_study` (`options`, or its fields as keywords) and `pie.study.load_study`,
  plus the Beam `pipeline_args` (command-line style), the examples per block a worker scores at once, and the rows
  per shard of exemplar_scores.csv. Both sizes change how the work is cut, never the outputs.
  """
  options = builder.AnalysisOptions.of(options, **option_fields)
  if out_dir is None:
    raise PieError("give an output folder (out_dir)", parameter="out_dir")
  if block_size < 1 or shard_rows < 1:
    raise PieError(f"block_size and shard_rows must be >= 1, got {block_size} and {shard_rows}")
  beam = import_beam()
  beam_options = pipeline_options(pipeline_args)
  index = study_lib.scan_study(study_dir, prediction_files, allow_mixed_configs=allow_mixed_configs, log=log)
  if index.num_examples < 1:
    raise PieError(f"{index.paths[0]}: the prediction files hold no example")
  builder.check_populations(index.populations, study_dir or "the prediction files")
  plan = _make_plan(index, options, block_size, shard_rows, os.path.join(out_dir, f".beam-work-{uuid.uuid4().hex[:8]}"))
  log(
      f"beam: {len(plan.paths)} prediction files, {len(plan.levels)} compared populations, {plan.num_blocks} block(s) "
      f"of up to {block_size} examples; runner {beam_options.get_all_options()['runner']}"
  )
  io_utils.makedirs(out_dir)
  try:
    start = time.time()
    pipeline = beam.Pipeline(options=beam_options)
    _build_pipeline(pipeline, plan)
    pipeline.run().wait_until_finish()
    log(f"beam: pipeline finished in {time.time() - start:.1f}s")
    dense, levels = _sums(plan, index, _collect_sums(plan, index, log))
    tables, summary = builder.build(index, dense, levels, plan.floor, plan.slices, options, log)
    _concatenate_per_example_tables(plan, out_dir)
  finally:
    if tf.io.gfile.exists(plan.work_dir):
      tf.io.gfile.rmtree(plan.work_dir)
  for name, frame in tables.items():
    io_utils.write_text(os.path.join(out_dir, name), analysis.csv_text(frame))
  io_utils.write_json(os.path.join(out_dir, outputs.SUMMARY_JSON), summary)
  for name in _STALE:
    if tf.io.gfile.exists(os.path.join(out_dir, name)):
      tf.io.gfile.remove(os.path.join(out_dir, name))
      log(f"removed {name} of an earlier analysis: it would not match these tables")
  return summary


def _concatenate_per_example_tables(plan, out_dir):
  """pies.csv and exemplar_scores.csv from the workers' shards (the header alone when nothing is compared)."""
  levels = range(len(plan.levels))
  shards = -(-plan.num_examples // plan.shard_rows)
  for name, paths in (
      (outputs.PIES_CSV, [plan.pies_shard(j, b) for j in levels for b in range(plan.num_blocks)]),
      (outputs.EXEMPLAR_SCORES_CSV, [plan.exemplar_shard(j, s) for j in levels for s in range(shards)]),
  ):
    if paths:
      _concatenate(paths, os.path.join(out_dir, name))
    else:
      io_utils.write_text(os.path.join(out_dir, name), analysis.csv_text(builder.empty_table(name, plan.with_method)))


def run(
    study_dir=None,
    predictions=None,
    out_dir=None,
    options=None,
    allow_mixed_configs=False,
    validate_first=True,
    pipeline_args=(),
    block_size=DEFAULT_BLOCK_SIZE,
    shard_rows=DEFAULT_SHARD_ROWS,
    log=print,
    **option_fields,
):
  """`pie.analysis.run` with Beam: validation first, then `analyze_study`; returns (out_dir, summary)."""
  options = builder.AnalysisOptions.of(options, **option_fields)
  out_dir = analysis.output_dir(study_dir, predictions, out_dir)
  import_beam()  # a missing extra is reported before any work
  if study_dir and validate_first:
    validate.require_valid(study_dir, allow_mixed_configs=allow_mixed_configs, read_records=False, log=log)
  summary = analyze_study(
      study_dir,
      out_dir,
      prediction_files=predictions,
      options=options,
      allow_mixed_configs=allow_mixed_configs,
      pipeline_args=pipeline_args,
      block_size=block_size,
      shard_rows=shard_rows,
      log=log,
  )
  return out_dir, summary


def _sums(plan, index, results):
  """The pipeline's sums as `builder.DenseSums` and one `builder.LevelSums` per compared population."""
  hits = np.stack([results["models"][i]["hits"] for i in range(len(plan.paths))])
  slice_hits = np.stack([results["models"][i]["slice_hits"] for i in range(len(plan.paths))])
  sums, accuracy = results["sums"], results["accuracy"]
  blocks = [results["difficulty"][block] for block in range(plan.num_blocks)]
  dense = builder.DenseSums(
      models=index.populations[variants.DENSE_KEY],
      hits=hits[plan.dense],
      class_count=results["models"][plan.reference]["class_count"],
      correct=np.concatenate([b["dense_correct"] for b in blocks]),
      scores=pd.concat([b["scores"] for b in blocks], ignore_index=True),
      slice_hits=slice_hits[plan.dense],
      slice_sizes=results["models"][plan.reference]["slice_sizes"],
      pool_hits=hits[plan.pool_rows],
      floor_pie_counts={pair: sums[("floor", pair)] for pair in plan.floor.splits},
      exchange_counts={key: sums[("exchange", key)] for key in plan.floor.exchanges},
      count_histograms=(sums[("histograms", "by_class")], sums[("histograms", "by_model")]),
  )
  levels = []
  for j, level in enumerate(plan.levels):
    key = (level.method, level.sparsity)
    levels.append(
        builder.LevelSums(
            level.method,
            level.sparsity,
            index.populations[key],
            hits=hits[level.rows],
            pies=np.concatenate([b["pies"][j] for b in blocks]),
            correct=np.concatenate([b["pruned_correct"][j] for b in blocks]),
            ties={name: sums[(j, name)] for name in _TIE_COUNTS},
            accuracy_sizes={subset: accuracy[(j, "size", subset)] for subset in outputs.SUBSETS},
            accuracy_correct={
                population: {subset: accuracy[(j, population, subset)] for subset in outputs.SUBSETS}
                for population in outputs.POPULATIONS
            },
            slice_hits=slice_hits[level.rows],
            slice_pies=sums[(j, "slice_pies")],
            pairs=level.pairs,
            discordance=sums.get((j, "discordance"), np.zeros((0, plan.num_classes, 2), np.int64)),
            resamples=None if level.dense_resamples is None else (level.dense_resamples, level.pruned_resamples),
            bootstrap_pie_counts=sums.get((j, "bootstrap_counts")),
            num_pies_stable_90=sums.get((j, "num_pies_stable_90")),
        )
    )
  return dense, levels
