"""A study: the prediction files of dense and pruned populations, loaded and cross-checked.

Layout written by train/population.py: one folder per model, `<study_dir>/<name>/<name>.tfrecord` with
`<name>.json` beside it. Any list of prediction files can be loaded too.

Only what the analysis needs is kept in memory: per model, its top-1 labels (int32 [n_examples]). Files are read
a few at a time (pie.predictions.read_many), so memory grows with models x examples, not with the size of the records.
`scan_study` makes the same metadata checks without reading any record, for an analysis that reads the records on
other machines (pie.beam_analysis).
"""

import collections
import dataclasses
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from pie import difficulty
from pie import io_utils
from pie import predictions as predictions_lib
from pie import variants
from pie.errors import PieError

_CHECKED_FIELDS = ("dataset", "split", "num_classes", "num_examples")


@dataclasses.dataclass
class ModelRecord:
  name: str
  path: str
  sparsity: float  # the level it belongs to (target sparsity)
  measured_sparsity: float
  seed: int
  top1: np.ndarray  # int32 [n_examples]; None in a StudyIndex (metadata only)
  method: str = variants.MAGNITUDE  # compression method (variants.DENSE for the baseline); see pie/variants.py
  bits_per_weight: Optional[float] = None  # measured storage of the exported model, when the export records it
  compressed_bytes: Optional[int] = None
  # The dense model this one was made from: the twin it was fine-tuned from (`init_from`, config.init_from_dense) or
  # derived from (`source_model`, post-training quantization); None for a model trained from scratch.
  dense_twin: Optional[str] = None
  init_from: Optional[str] = None  # the metadata's `init_from`: set only for a model fine-tuned from its dense twin
  # The seed of the dense model it is paired with (metadata `dense_seed`, pie.variants.dense_seed); exports written
  # before seed designs existed, and runs from outside pie, pair by their own seed.
  dense_seed: Optional[int] = None
  # Per example, for the difficulty scores (pie.difficulty): the probability of the true label from the exported top-k,
  # and, when the export has logits, the EL2N error norm. float32 [n_examples]; None in a StudyIndex.
  true_prob: Optional[np.ndarray] = None
  el2n: Optional[np.ndarray] = None
  has_logits: bool = False  # the export carries logits (config.export_logits)


@dataclasses.dataclass
class Study:
  """Loaded populations. `levels` maps target sparsity (0.0 = dense) to its models, sorted by seed."""

  study_dir: Optional[str]
  dataset: str
  split: str
  num_classes: int
  class_names: List[str]
  labels: np.ndarray  # int64 [n_examples], indexed by example_id
  levels: Dict[float, List[ModelRecord]]
  config: dict  # the first model's config, minus its per-model fields
  config_hash: str
  incomplete: List[str] = dataclasses.field(default_factory=list)  # exports skipped as unfinished
  # Every population by (method, level): ("dense", 0.0), ("magnitude", 0.9), ("2:4", 0.5), ("ptq_full_int8", 0.0)...
  # `levels` is the dense and magnitude part of it, keyed by sparsity as before.
  populations: Dict[Tuple[str, float], List[ModelRecord]] = dataclasses.field(default_factory=dict)
  # Training examples per class, when the exports record them (config.data.train_class_fraction makes them unequal).
  train_class_counts: Optional[List[int]] = None
  # The slice features exported beside the predictions (config.slice_features: {"name", "kind", "values"} each) and
  # every eval example's value codes, int64 [n_examples, len(slice_features)] (the same in every file: checked).
  slice_features: List[dict] = dataclasses.field(default_factory=list)
  slice_values: Optional[np.ndarray] = None

  @property
  def num_examples(self):
    return len(self.labels)

  @property
  def pruned_levels(self):
    return sorted(s for s in self.levels if s > 0)

  @property
  def compressed_populations(self):
    """(method, level) of every population but the dense one, in registry order then by level."""
    return sorted(
        (k for k in self.populations if k[0] != variants.DENSE), key=lambda k: (variants.method_rank(k[0]), k[1])
    )

  def models(self, key):
    """The models of a level (a sparsity: dense or magnitude) or of a population ((method, level))."""
    return self.populations[key] if isinstance(key, tuple) else self.levels[key]

  def predictions(self, sparsity):
    """Top-1 labels of a level's (or a (method, level) population's) models: int32 [n_models, n_examples]."""
    return np.stack([m.top1 for m in self.models(sparsity)])

  def top1_accuracy(self, sparsity):
    return (self.predictions(sparsity) == self.labels).mean(axis=1)


def find_prediction_files(study_dir):
  """Prediction files of a study: `<study_dir>/<name>/<name>.tfrecord` (the launcher's layout) or top-level files.

  Other TFRecords below the study (e.g. the analysis folder's pies.tfrecord) are not predictions and are ignored.
  """
  if not io_utils.isdir(study_dir):
    raise PieError(f"{study_dir}: no such study directory", parameter="study_dir")
  in_model_dirs = [
      f
      for f in io_utils.glob(os.path.join(study_dir, "*", "*.tfrecord"))
      if os.path.basename(f)[: -len(".tfrecord")] == os.path.basename(os.path.dirname(f))
  ]
  files = sorted(set(in_model_dirs + io_utils.glob(os.path.join(study_dir, "*.tfrecord"))))
  return [f for f in files if ".tmp-" not in os.path.basename(f)]


def _finished_files(study_dir, prediction_files, log):
  """(finished, incomplete) prediction files: a TFRecord without its metadata is an unfinished export."""
  if prediction_files is None:
    if study_dir is None:
      raise PieError("give a study directory or a list of prediction files")
    prediction_files = find_prediction_files(study_dir)
  if not prediction_files:
    raise PieError(f"{study_dir}: no prediction files (*.tfrecord) found")
  incomplete, ready = [], []
  for path in prediction_files:
    if io_utils.exists(predictions_lib.metadata_path(path)):
      ready.append(path)
    else:
      incomplete.append(path)
  for path in incomplete:
    log(f"warning: skipping {path}: no metadata beside it, the export did not finish")
  if not ready:
    raise PieError(f"{study_dir or 'the prediction files'}: no finished prediction file (every one lacks its .json)")
  return ready, incomplete


def _check_fields(path, meta, reference):
  ref_path, ref_meta = reference
  for field in _CHECKED_FIELDS:
    if meta[field] != ref_meta[field]:
      raise PieError(
          f"{path}: {field} is {meta[field]!r} but {ref_path} has {ref_meta[field]!r}; "
          "a study must predict one eval split of one dataset"
      )


def _check_slice_features(path, meta, reference):
  """Every file must describe the same slice features (a study slices one eval split one way)."""
  ref_path, ref_meta = reference
  if (meta.get("slice_features") or []) != (ref_meta.get("slice_features") or []):
    raise PieError(
        f"{path}: its slice features differ from those of {ref_path} (config.slice_features, or their values): "
        "export every model of a study with the same slice features"
    )


def _check_config(path, meta, reference, allow_mixed_configs):
  ref_path, ref_meta = reference
  if meta["config_hash"] != ref_meta["config_hash"] and not allow_mixed_configs:
    raise PieError(
        f"{path}: config hash {meta['config_hash']} differs from {ref_meta['config_hash']} of "
        f"{ref_path}: the models were trained with different settings (allow_mixed_configs=True accepts "
        "them)",
        parameter="allow_mixed_configs",
    )


def _model_record(path, meta, top1, true_prob=None, el2n=None):
  sparsity = round(float(meta["target_sparsity"]), 6)
  # Exports written before compression methods existed have no `method`: dense at 0, magnitude pruning otherwise.
  method = variants.recorded_method(meta.get("method"), sparsity == 0)
  return ModelRecord(
      name=meta.get("name", os.path.basename(path)),
      path=path,
      sparsity=sparsity,
      measured_sparsity=float(meta["measured_sparsity"]),
      seed=int(meta["seed"]),
      top1=top1,
      method=method,
      bits_per_weight=meta.get("bits_per_weight"),
      compressed_bytes=meta.get("compressed_bytes"),
      dense_twin=meta.get("init_from") or meta.get("source_model"),
      init_from=meta.get("init_from"),
      dense_seed=None if meta.get("dense_seed") is None else int(meta["dense_seed"]),
      true_prob=true_prob,
      el2n=el2n,
      has_logits=bool(meta.get("has_logits")),
  )


def difficulty_parts(pred):
  """The per-example parts of the difficulty scores of one model's predictions (pie.difficulty)."""
  true_prob = difficulty.true_label_prob(pred.top_k_classes, pred.top_k_probs, pred.labels).astype(np.float32)
  el2n = None if pred.logits is None else difficulty.el2n(pred.logits, pred.labels).astype(np.float32)
  return true_prob, el2n


def _checked_populations(records, where):
  """The models by (method, level), each population sorted by seed; a PieError for a study that cannot be analysed."""
  populations = collections.defaultdict(list)
  for record in records:
    populations[(record.method, record.sparsity)].append(record)
  populations = dict(populations)
  if variants.DENSE_KEY not in populations:
    raise PieError(
        f"{where}: no dense population (no model with target_sparsity 0); found levels "
        f"{sorted({s for _, s in populations})}"
    )
  for (method, sparsity), models in sorted(populations.items()):
    if len(models) < 2:
      what = f"level {sparsity:g}" if variants.named_by_level(method) else f"method {method} level {sparsity:g}"
      raise PieError(
          f"{where}: {what} has {len(models)} model ({models[0].path}); a population "
          "needs at least two models for modal labels and t-tests"
      )
    models.sort(key=lambda m: (m.seed, m.name))
  return populations


def _study_config(ref_meta):
  return {k: v for k, v in ref_meta.get("config", {}).items() if k not in ("seed", "sparsity", "method", "mitigation")}


def load_study(study_dir=None, prediction_files=None, allow_mixed_configs=False, log=print, read_workers=2):
  """Loads and checks a study; every inconsistency is a PieError naming the file.

  Args:
    study_dir: directory written by the population launcher (or any directory of prediction files).
    prediction_files: an explicit list of `.tfrecord` prediction files instead.
    allow_mixed_configs: accept models whose config hashes differ (normally an error: a study must compare
      populations trained alike).
    log: progress printer.
    read_workers: prediction files read and parsed at once (threads; parsing runs outside the GIL).
  """
  ready, incomplete = _finished_files(study_dir, prediction_files, log)
  reference = None
  records = []
  labels = None
  start = time.time()
  # Logits give the EL2N difficulty score; read them only when every export has them (they can be large).
  with_logits = all(predictions_lib.read_metadata(path).get("has_logits") for path in ready)
  for i, pred in enumerate(predictions_lib.read_many(ready, workers=read_workers, with_logits=with_logits)):
    path, meta = pred.path, pred.metadata
    if reference is None:
      reference, labels, slice_values = (path, meta), pred.labels, pred.slice_values
    else:
      _check_fields(path, meta, reference)
      if not np.array_equal(pred.labels, labels):
        raise PieError(f"{path}: labels differ from those of {reference[0]} for the same example ids")
      _check_slice_features(path, meta, reference)
      if not np.array_equal(pred.slice_values, slice_values):
        raise PieError(f"{path}: slice feature values differ from those of {reference[0]} for the same example ids")
      _check_config(path, meta, reference, allow_mixed_configs)
    records.append(_model_record(path, meta, pred.top1.astype(np.int32), *difficulty_parts(pred)))
    if (i + 1) % 20 == 0 or i + 1 == len(ready):
      log(f"read {i + 1}/{len(ready)} prediction files ({time.time() - start:.1f}s)")

  populations = _checked_populations(records, study_dir or "the prediction files")
  levels = {s: models for (method, s), models in populations.items() if variants.named_by_level(method)}
  ref_meta = reference[1]
  return Study(
      study_dir=study_dir,
      dataset=ref_meta["dataset"],
      split=ref_meta["split"],
      num_classes=int(ref_meta["num_classes"]),
      class_names=list(ref_meta["class_names"]),
      labels=labels,
      levels=dict(levels),
      config=_study_config(ref_meta),
      config_hash=ref_meta["config_hash"],
      incomplete=incomplete,
      populations=populations,
      train_class_counts=ref_meta.get("train_class_counts"),
      slice_features=list(ref_meta.get("slice_features") or []),
      slice_values=slice_values,
  )


@dataclasses.dataclass
class StudyIndex:
  """A study known from its metadata alone: what `load_study` checks before reading any record.

  For analyses that read the records elsewhere (pie.beam_analysis). Its ModelRecords have no predictions
  (`top1` is None); the fields shared with `Study` mean the same. `paths` lists the finished prediction files in
  the order `load_study` reads them: the first is the reference the others' labels must equal.
  """

  study_dir: Optional[str]
  dataset: str
  split: str
  num_classes: int
  class_names: List[str]
  num_examples: int
  config: dict
  config_hash: str
  incomplete: List[str]
  populations: Dict[Tuple[str, float], List[ModelRecord]]
  paths: List[str]
  train_class_counts: Optional[List[int]] = None
  slice_features: List[dict] = dataclasses.field(default_factory=list)


def scan_study(study_dir=None, prediction_files=None, allow_mixed_configs=False, log=print):
  """Reads and checks the metadata of a study's prediction files, not their records: a `StudyIndex`.

  The same checks as `load_study` except the records' own (schema, ids, labels), which the reader of the records
  must make. Arguments as for `load_study`.
  """
  ready, incomplete = _finished_files(study_dir, prediction_files, log)
  reference = None
  records = []
  for path in ready:
    meta = predictions_lib.read_metadata(path)
    if reference is None:
      reference = (path, meta)
    else:
      _check_fields(path, meta, reference)
      _check_slice_features(path, meta, reference)
      _check_config(path, meta, reference, allow_mixed_configs)
    records.append(_model_record(path, meta, None))
  log(f"read the metadata of {len(ready)} prediction files")
  populations = _checked_populations(records, study_dir or "the prediction files")
  ref_meta = reference[1]
  return StudyIndex(
      study_dir=study_dir,
      dataset=ref_meta["dataset"],
      split=ref_meta["split"],
      num_classes=int(ref_meta["num_classes"]),
      class_names=list(ref_meta["class_names"]),
      num_examples=int(ref_meta["num_examples"]),
      config=_study_config(ref_meta),
      config_hash=ref_meta["config_hash"],
      incomplete=incomplete,
      populations=populations,
      paths=list(ready),
      train_class_counts=ref_meta.get("train_class_counts"),
      slice_features=list(ref_meta.get("slice_features") or []),
  )
