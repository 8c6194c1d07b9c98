"""A study: the prediction files of dense and pruned populations, loaded and cross-checked.

Layout written by train/population.py: one folder per model, `<study_dir>/<name>/<name>.tfrecord` with
`<name>.json` beside it. Any list of prediction files can be loaded too.

Only what the analysis needs is kept in memory: per model, its top-1 labels (int32 [n_examples]). Files are read
a few at a time (pie.predictions.read_many), so memory grows with models x examples, not with the size of the records.
"""
import collections
import dataclasses
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from pie import predictions as predictions_lib
from pie.errors import PieError

_CHECKED_FIELDS = ("dataset", "split", "num_classes", "num_examples")


@dataclasses.dataclass
class ModelRecord:
  name: str
  path: str
  sparsity: float          # the level it belongs to (target sparsity)
  measured_sparsity: float
  seed: int
  top1: np.ndarray         # int32 [n_examples]
  method: str = "magnitude"               # compression method ("dense" for the baseline); see pie/variants.py
  bits_per_weight: Optional[float] = None  # measured storage of the exported model, when the export records it
  compressed_bytes: Optional[int] = None


@dataclasses.dataclass
class Study:
  """Loaded populations. `levels` maps target sparsity (0.0 = dense) to its models, sorted by seed."""
  study_dir: Optional[str]
  dataset: str
  split: str
  num_classes: int
  class_names: List[str]
  labels: np.ndarray                      # int64 [n_examples], indexed by example_id
  levels: Dict[float, List[ModelRecord]]
  config: dict                            # the first model's config, minus its per-model fields
  config_hash: str
  incomplete: List[str] = dataclasses.field(default_factory=list)  # exports skipped as unfinished
  # Every population by (method, level): ("dense", 0.0), ("magnitude", 0.9), ("2:4", 0.5), ("ptq_full_int8", 0.0)...
  # `levels` is the dense and magnitude part of it, keyed by sparsity as before.
  populations: Dict[Tuple[str, float], List[ModelRecord]] = dataclasses.field(default_factory=dict)

  @property
  def num_examples(self):
    return len(self.labels)

  @property
  def pruned_levels(self):
    return sorted(s for s in self.levels if s > 0)

  @property
  def compressed_populations(self):
    """(method, level) of every population but the dense one, in registry order then by level."""
    from pie import variants  # pylint: disable=g-import-not-at-top
    return sorted((k for k in self.populations if k[0] != variants.DENSE),
                  key=lambda k: (variants.method_rank(k[0]), k[1]))

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
  if not tf.io.gfile.isdir(study_dir):
    raise PieError(f"--study_dir {study_dir}: no such directory")
  in_model_dirs = [f for f in tf.io.gfile.glob(os.path.join(study_dir, "*", "*.tfrecord"))
                   if os.path.basename(f)[:-len(".tfrecord")] == os.path.basename(os.path.dirname(f))]
  files = sorted(set(in_model_dirs + tf.io.gfile.glob(os.path.join(study_dir, "*.tfrecord"))))
  return [f for f in files if ".tmp-" not in os.path.basename(f)]


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
  if prediction_files is None:
    if study_dir is None:
      raise PieError("give a study directory or a list of prediction files")
    prediction_files = find_prediction_files(study_dir)
  if not prediction_files:
    raise PieError(f"{study_dir}: no prediction files (*.tfrecord) found")

  incomplete, ready = [], []
  for path in prediction_files:
    if tf.io.gfile.exists(predictions_lib.metadata_path(path)):
      ready.append(path)
    else:
      incomplete.append(path)
  for path in incomplete:
    log(f"warning: skipping {path}: no metadata beside it, the export did not finish")
  if not ready:
    raise PieError(f"{study_dir or 'the prediction files'}: no finished prediction file (every one lacks its .json)")

  reference = None
  levels = collections.defaultdict(list)
  labels = None
  start = time.time()
  for i, pred in enumerate(predictions_lib.read_many(ready, workers=read_workers)):
    path, meta = pred.path, pred.metadata
    if reference is None:
      reference, labels = (path, meta), pred.labels
    else:
      ref_path, ref_meta = reference
      for field in _CHECKED_FIELDS:
        if meta[field] != ref_meta[field]:
          raise PieError(f"{path}: {field} is {meta[field]!r} but {ref_path} has {ref_meta[field]!r}; "
                         "a study must predict one eval split of one dataset")
      if not np.array_equal(pred.labels, labels):
        raise PieError(f"{path}: labels differ from those of {ref_path} for the same example ids")
      if meta["config_hash"] != ref_meta["config_hash"] and not allow_mixed_configs:
        raise PieError(f"{path}: config hash {meta['config_hash']} differs from {ref_meta['config_hash']} of "
                       f"{ref_path}: the models were trained with different settings (allow with "
                       "--allow_mixed_configs)")
    sparsity = round(float(meta["target_sparsity"]), 6)
    # Exports written before compression methods existed have no `method`: dense at 0, magnitude pruning otherwise.
    method = meta.get("method") or ("dense" if sparsity == 0 else "magnitude")
    levels[(method, sparsity)].append(ModelRecord(
        name=meta.get("name", os.path.basename(path)), path=path, sparsity=sparsity,
        measured_sparsity=float(meta["measured_sparsity"]), seed=int(meta["seed"]),
        top1=pred.top1.astype(np.int32), method=method, bits_per_weight=meta.get("bits_per_weight"),
        compressed_bytes=meta.get("compressed_bytes")))
    if (i + 1) % 20 == 0 or i + 1 == len(ready):
      log(f"read {i + 1}/{len(ready)} prediction files ({time.time() - start:.1f}s)")

  where = study_dir or "the prediction files"
  populations = dict(levels)
  if ("dense", 0.0) not in populations:
    raise PieError(f"{where}: no dense population (no model with target_sparsity 0); found levels "
                   f"{sorted({s for _, s in populations})}")
  for (method, sparsity), models in sorted(populations.items()):
    if len(models) < 2:
      what = f"level {sparsity:g}" if method in ("dense", "magnitude") else f"method {method} level {sparsity:g}"
      raise PieError(f"{where}: {what} has {len(models)} model ({models[0].path}); a population "
                     "needs at least two models for modal labels and t-tests")
    models.sort(key=lambda m: (m.seed, m.name))
  levels = {s: models for (method, s), models in populations.items() if method in ("dense", "magnitude")}
  if len(populations) < 2:
    raise PieError(f"{where}: only the dense population was found; a study needs at least one pruned level")
  ref_meta = reference[1]
  config = {k: v for k, v in ref_meta.get("config", {}).items() if k not in ("seed", "sparsity", "method")}
  return Study(study_dir=study_dir, dataset=ref_meta["dataset"], split=ref_meta["split"],
               num_classes=int(ref_meta["num_classes"]), class_names=list(ref_meta["class_names"]),
               labels=labels, levels=dict(levels), config=config, config_hash=ref_meta["config_hash"],
               incomplete=incomplete, populations=populations)
