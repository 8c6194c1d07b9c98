"""One model's folder: its files, when it is finished, how far its training got, its saved model, and what its export
records.

A study holds one folder per model, `<study_dir>/<name>/`: `model.h5` (or `model.tflite` for a model deployed as
TFLite), `metrics.json`, `checkpoints/`, `tensorboard/`, `train.log`, and the predictions `<name>.tfrecord` with
their metadata `<name>.json`, written last: a model is finished when that metadata exists and its TFRecord has the
recorded size. Training is finished when the saved model is there or the last checkpoint records the last epoch
(`training_state`): such a model can be exported without training (`pie.training.export_trained`). The name comes from
the method registry (`pie.variants.model_name`, or a Job's `name`).

Training (pie.training), post-training quantization (pie.ptq) and the launcher (pie.population) share these helpers,
so that what a folder holds, and how a finished one is recognised, is decided in one place.
"""

import copy
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import warnings
from typing import Optional

from pie import io_utils
from pie import predictions as predictions_lib
from pie import stats
from pie import variants
from pie.errors import PieError

# Fields that differ between the models of one study; everything else must match (see config_hash).
PER_MODEL_FIELDS = ("seed", "sparsity", "method", "mitigation")
# Fields that change how a model is trained but not what it learns: left out of config_hash, so a study can be
# resumed with other values.
EXECUTION_FIELDS = ("steps_per_execution", "checkpoint_every_epochs")
# Fields added after studies were trained, at the value that trains as before they existed: left out of config_hash
# at that value, so that a study begun before them resumes with the same hash (float32 models are unchanged).
ADDED_FIELDS_AT_OLD_BEHAVIOUR = {"mixed_precision": None, "seed_design": "shared"}


def config_to_dict(config):
  return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else dict(config)


def config_hash(config):
  """sha256 (first 16 hex digits) of the config without its per-model and execution fields: equal for all models
  of a study."""
  shared = {
      k: v
      for k, v in config_to_dict(config).items()
      if k not in PER_MODEL_FIELDS + EXECUTION_FIELDS
      and not (k in ADDED_FIELDS_AT_OLD_BEHAVIOUR and v == ADDED_FIELDS_AT_OLD_BEHAVIOUR[k])
  }
  return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


def dense_config(config):
  """The config of the dense model of the same seed (the source of a derived post-training-quantized model)."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.sparsity = 0.0
    if "method" in cfg:
      cfg.method = variants.DEFAULT_METHOD
  return cfg


def model_paths(workdir, name):
  """The files of the model `name` (its Job's name) in its folder `workdir`."""
  return {
      "name": name,
      "checkpoints": os.path.join(workdir, "checkpoints"),
      "tensorboard": os.path.join(workdir, "tensorboard"),
      "model": os.path.join(workdir, "model.h5"),
      "tflite": os.path.join(workdir, "model.tflite"),
      "metrics": os.path.join(workdir, "metrics.json"),
      "predictions": os.path.join(workdir, f"{name}.tfrecord"),
  }


def is_finished(workdir, name):
  """True when the export of model `name` in `workdir` is complete (metadata present, TFRecord of the recorded
  size)."""
  path = model_paths(workdir, name)["predictions"]
  try:
    metadata = predictions_lib.read_metadata(path)
  except PieError:
    return False
  return io_utils.exists(path) and io_utils.file_size(path) == metadata.get("file_bytes")


# The variable of training checkpoints that records the epochs done (pie.training's tf.train.Checkpoint(epoch=...)).
CHECKPOINT_EPOCH_KEY = "epoch/.ATTRIBUTES/VARIABLE_VALUE"


def latest_checkpoint(path):
  """The latest TF checkpoint under `path` (a checkpoint directory, a model folder with `checkpoints/`, or a checkpoint
  prefix such as .../ckpt-20), or None."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  for directory in (path, os.path.join(path, "checkpoints")):
    latest = tf.train.latest_checkpoint(directory)
    if latest:
      return latest
  return path if tf.io.gfile.exists(f"{path}.index") else None


def checkpoint_reader(checkpoint):
  """A reader of the variables of the checkpoint at prefix `checkpoint`.

  Opened by its prefix: tf.train.load_variable and list_variables first ask whether the path is a directory, which a
  filesystem that lists keys by prefix (TF's ram://) answers yes for `.../ckpt-2` beside `.../ckpt-2.index`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  try:
    return tf.compat.v1.train.NewCheckpointReader(checkpoint)
  except (tf.errors.OpError, ValueError) as e:
    raise PieError(f"{checkpoint}: not a readable TF checkpoint ({e})") from None


def checkpoint_epoch(checkpoint):
  """The epochs done when `checkpoint` was written, as pie's training records them; None when it records none."""
  reader = checkpoint_reader(checkpoint)
  return int(reader.get_tensor(CHECKPOINT_EPOCH_KEY)) if reader.has_tensor(CHECKPOINT_EPOCH_KEY) else None


@dataclasses.dataclass(frozen=True)
class TrainingState:
  """What a model folder holds besides its predictions: the saved model and the last checkpoint.

  Training saves the model (model.h5, or model.tflite for a method deployed as TFLite) once its last epoch is done,
  and checkpoints after the last epoch: either one means training is finished and the predictions can be exported
  without training again. A checkpoint before `num_epochs` (and no saved model) means training is unfinished.
  """

  saved_model: Optional[str]  # model.h5 or model.tflite, when present
  checkpoint: Optional[str]  # the latest checkpoint, when present
  epoch: Optional[int]  # the epochs done at that checkpoint
  num_epochs: int

  @property
  def final_checkpoint(self):
    return self.checkpoint is not None and self.epoch is not None and self.epoch >= self.num_epochs

  @property
  def trained(self):
    """Training is finished: a saved model or a checkpoint after the last epoch."""
    return self.saved_model is not None or self.final_checkpoint

  @property
  def unfinished(self):
    """Training started (a checkpoint) but did not reach its last epoch."""
    return not self.trained and self.checkpoint is not None

  def describe(self):
    """Where the trained model is, or how far training got, for messages."""
    if self.saved_model is not None:
      return os.path.basename(self.saved_model)
    if self.checkpoint is None:
      return "no saved model and no checkpoint"
    epoch = "an unknown epoch" if self.epoch is None else f"epoch {self.epoch}"
    kind = "final checkpoint" if self.final_checkpoint else "last checkpoint"
    return f"{kind} {self.checkpoint} at {epoch} of {self.num_epochs}"


def training_state(workdir, num_epochs, tflite=False):
  """The `TrainingState` of the model folder `workdir` (`tflite`: the method saves model.tflite, not model.h5)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  paths = model_paths(workdir, "")
  saved = paths["tflite" if tflite else "model"]
  checkpoint = tf.train.latest_checkpoint(paths["checkpoints"])
  return TrainingState(
      saved_model=saved if tf.io.gfile.exists(saved) else None,
      checkpoint=checkpoint,
      epoch=None if checkpoint is None else checkpoint_epoch(checkpoint),
      num_epochs=int(num_epochs),
  )


def save_model(model, path):
  """Saves a Keras model as HDF5 atomically (via a local temporary file, so `path` may be remote)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmpdir:
    local = os.path.join(tmpdir, "model.h5")
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", UserWarning)  # "HDF5 is legacy": chosen on purpose, fast and self-contained
      model.save(local, save_format="h5", include_optimizer=False)
    with io_utils.atomic_path(path) as tmp:
      tf.io.gfile.copy(local, tmp, overwrite=True)


def load_model(path):
  """Loads a Keras model: an HDF5 or .keras file (copied to a local temporary file first, so `path` may be remote),
  or a Keras SavedModel directory; as saved (a model saved by `save_model` is stripped: plain Keras layers)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  import tf_keras as keras  # pylint: disable=g-import-not-at-top

  if not tf.io.gfile.exists(path):
    raise PieError(f"{path}: no saved model there")
  try:
    if tf.io.gfile.isdir(path):
      return keras.models.load_model(path, compile=False)
    with tempfile.TemporaryDirectory() as tmpdir:
      local = os.path.join(tmpdir, os.path.basename(path))
      tf.io.gfile.copy(path, local)
      return keras.models.load_model(local, compile=False)
  except (OSError, ValueError, TypeError) as e:
    raise PieError(f"{path}: not a readable saved model ({e})") from None


def prediction_metadata(config, info, sparsity_report, extra=None, job=None):
  """The metadata of a model's predictions (the README's schema); `job` is the model's Job, taken from the config
  (`variants.config_job`) when not given."""
  job = job or variants.config_job(config)
  variant = variants.get_variant(job.method)
  metadata = {
      "dataset": info.name,
      "split": info.eval_split,
      "num_classes": info.num_classes,
      "class_names": list(info.class_names),
      "target_sparsity": float(job.sparsity),
      "measured_sparsity": sparsity_report["overall"],
      "seed": int(job.seed),
      # The dense model this one is paired with (its twin, teacher, single-pair partner): pie.variants.dense_seed.
      "dense_seed": None if job.dense_seed is None else int(job.dense_seed),
      "config_hash": config_hash(config),
      "model": config.model.name,
      "config": config_to_dict(config),
      "name": job.name,
      "method": job.method,
      # The mitigation the model trained with (pie.variants.MITIGATIONS) and its resolved parameters; None without.
      "mitigation": variant.mitigation.name if variant.mitigation is not None else None,
      "mitigation_params": variant.mitigation_params(config),
  }
  if getattr(info, "train_class_counts", None) is not None:
    metadata["train_class_counts"] = [int(c) for c in info.train_class_counts]
  metadata.update(extra or {})
  return metadata


def compression_fields(report):
  """The metadata fields every export records from a size report (`pie.quantization.model_size_report`)."""
  bits = report.get("bits_per_weight")
  return {
      "bits_per_weight": None if bits is None or not math.isfinite(bits) else float(bits),
      "compressed_bytes": int(report["gzip_bytes"]),
      "compression": report,
  }


def eval_metrics(arrays, num_classes):
  """Top-1 and per-class recall of one model from its exported arrays."""
  top1 = arrays["top_k_classes"][:, :1].T
  return {
      "top1": float(stats.top1_accuracy(top1, arrays["labels"])[0]),
      "per_class_recall": stats.per_class_recall(top1, arrays["labels"], num_classes)[0].tolist(),
  }


def write_outputs(paths, arrays, metadata, metrics, slices=([], None)):
  """metrics.json, then the predictions: their metadata JSON, written last, marks the model as finished.

  `slices` is `Dataset.eval_slices(config.slice_features)`: the slice features exported beside the predictions.
  """
  io_utils.write_json(paths["metrics"], metrics)
  predictions_lib.write_arrays(paths["predictions"], arrays, metadata, slices)
