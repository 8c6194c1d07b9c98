"""Train one model of a population (dense or pruned), resumably, then export it.

`train_and_export(config, workdir)` is the whole life of one model:
  1. build data, model (wrapped by TF-MOT when config.sparsity > 0) and optimizer under a tf.distribute strategy;
  2. restore the latest checkpoint in workdir, if any, and train the remaining epochs, checkpointing every
     config.checkpoint_every_epochs epochs and after the last;
  3. strip the pruning wrappers, measure the sparsity reached, save the model;
  4. export its predictions on the eval split and its metrics.
A model whose predictions metadata exists is finished: calling again does nothing.
"""
import hashlib
import json
import os
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from pie import data as data_lib
from pie import export as export_lib
from pie import io_utils
from pie import models
from pie import predictions as predictions_lib
from pie import pruning
from pie import stats
from pie import variants
from pie.errors import PieError

# Fields that differ between the models of one study; everything else must match (see config_hash).
PER_MODEL_FIELDS = ("seed", "sparsity", "method")
# Fields that change how a model is trained but not what it learns: left out of config_hash, so a study can be
# resumed with other values.
EXECUTION_FIELDS = ("steps_per_execution", "checkpoint_every_epochs")
SPARSITY_TOLERANCE = 0.005  # measured overall sparsity must be within 0.5 percentage points of the target


def model_name(sparsity, seed, method=variants.DEFAULT_METHOD):
  """File-system name of one model of a study, e.g. "sparsity90_seed3" (dense or magnitude pruning), or with its
  compression method in it for other methods, e.g. "2of4_sparsity50_seed3", "ptq_dynamic_int8_seed3"."""
  return variants.model_name(method, sparsity, seed)


def dense_config(config):
  """The config of the dense model of the same seed (the source of a derived post-training-quantized model)."""
  cfg = config_copy(config)
  with cfg.unlocked():
    cfg.sparsity = 0.0
    if "method" in cfg:
      cfg.method = variants.DEFAULT_METHOD
  return cfg


def config_copy(config):
  import copy  # pylint: disable=g-import-not-at-top
  return copy.deepcopy(config)


def config_to_dict(config):
  return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else dict(config)


def config_hash(config):
  """sha256 (first 16 hex digits) of the config without its per-model and execution fields: equal for all models
  of a study."""
  shared = {k: v for k, v in config_to_dict(config).items() if k not in PER_MODEL_FIELDS + EXECUTION_FIELDS}
  return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


def model_paths(workdir, config):
  name = model_name(config.sparsity, config.seed, config.get("method", variants.DEFAULT_METHOD))
  return {"name": name, "checkpoints": os.path.join(workdir, "checkpoints"),
          "tensorboard": os.path.join(workdir, "tensorboard"), "model": os.path.join(workdir, "model.h5"),
          "metrics": os.path.join(workdir, "metrics.json"),
          "predictions": os.path.join(workdir, f"{name}.tfrecord")}


def is_finished(workdir, config):
  """True when this model's export is complete (metadata present and its TFRecord of the recorded size)."""
  path = model_paths(workdir, config)["predictions"]
  try:
    metadata = predictions_lib.read_metadata(path)
  except PieError:
    return False
  return tf.io.gfile.exists(path) and tf.io.gfile.stat(path).length == metadata.get("file_bytes")


def make_optimizer(config, steps_per_epoch):
  """Optimizer and learning-rate schedule from the config (Adam or SGD; constant, piecewise or cosine)."""
  lr = config.learning_rate
  if config.get("lr_scale_by_batch"):
    lr = lr * config.batch_size / 256
  schedule_name = config.get("lr_schedule", "constant")
  warmup = int(config.get("warmup_epochs", 0) * steps_per_epoch)
  total = config.num_epochs * steps_per_epoch
  if schedule_name == "constant":
    schedule = lr
  elif schedule_name == "piecewise":
    boundaries = [int(e * steps_per_epoch) for e in config.lr_boundaries_epochs]
    values = [lr * config.get("lr_decay_factor", 0.1) ** i for i in range(len(boundaries) + 1)]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
  elif schedule_name == "cosine":
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total - warmup))
  else:
    raise PieError(f"unknown config.lr_schedule {schedule_name!r}: choose constant, piecewise or cosine")
  if warmup:
    # Piecewise boundaries are absolute epochs; a cosine decay starts where the warm-up ends.
    schedule = WarmupSchedule(schedule, lr, warmup, offset=warmup if schedule_name == "cosine" else 0)
  name = config.get("optimizer", "adam")
  if name == "adam":
    return keras.optimizers.Adam(schedule)
  if name == "sgd":
    return keras.optimizers.SGD(schedule, momentum=config.get("momentum", 0.9), nesterov=config.get("nesterov", True))
  raise PieError(f"unknown config.optimizer {name!r}: choose adam or sgd")


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `peak` over `warmup_steps`, then `after` evaluated at (step - offset)."""

  def __init__(self, after, peak, warmup_steps, offset=0):
    super().__init__()
    self.after, self.peak, self.warmup_steps, self.offset = after, peak, warmup_steps, offset

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    after = self.after(step - self.offset) if callable(self.after) else self.after
    return tf.where(step < self.warmup_steps, self.peak * (step + 1) / self.warmup_steps, after)

  def get_config(self):
    return {"peak": self.peak, "warmup_steps": self.warmup_steps, "offset": self.offset}


class _EpochEnd(keras.callbacks.Callback):
  """Checkpoints every `every` epochs and after the last one, and prints one progress line per epoch."""

  def __init__(self, manager, epoch_var, num_epochs, steps_per_epoch, log, every=1):
    super().__init__()
    self.manager, self.epoch_var, self.num_epochs = manager, epoch_var, num_epochs
    self.steps_per_epoch, self.log, self.every = steps_per_epoch, log, max(1, int(every))
    self._start = time.time()

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.time()

  def on_epoch_end(self, epoch, logs=None):
    self.epoch_var.assign(epoch + 1)
    if (epoch + 1) % self.every == 0 or epoch + 1 == self.num_epochs:
      self.manager.save(checkpoint_number=epoch + 1)
    logs = logs or {}
    metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()) if isinstance(v, (float, np.floating)))
    self.log(f"epoch {epoch + 1}/{self.num_epochs} (step {(epoch + 1) * self.steps_per_epoch}/"
             f"{self.num_epochs * self.steps_per_epoch}) {metrics} [{time.time() - self._start:.1f}s]")


def steps_per_execution(config, steps_per_epoch):
  """Train steps per call of the train function: config.steps_per_execution, by default a whole epoch.

  Callbacks see epochs only (checkpoints, logs, pruning summaries), so running an epoch in one call changes no
  result; it removes the per-step Python overhead that dominates small models, as it does on TPUs.
  """
  wanted = config.get("steps_per_execution") or steps_per_epoch
  return max(1, min(int(wanted), steps_per_epoch))


def _build_compiled_metrics(model):
  """Creates the loss and metric variables now, not in the first train step.

  A tf.function that creates variables on its first call is traced a second time; for a small model that second
  trace cost more than a second per model, more than its whole training on digits.
  """
  outputs = model(tf.zeros((1,) + tuple(model.input_shape[1:]), model.inputs[0].dtype), training=False)
  model.compiled_loss.build(outputs)
  model.compiled_metrics.build(outputs, tf.zeros_like(outputs))


# Compiled models kept for reuse (see train_and_export's reuse_traced): {key: (model, optimizer, epoch variable)}.
_TRAINABLES = {}
_REUSABLE_METHODS = (variants.DENSE, "magnitude", variants.DENSE_REPLICATE, variants.SHAM)


def _reuse_key(config, method, strategy):
  """What a compiled model depends on besides its seed, or None when it cannot be reused."""
  if method not in _REUSABLE_METHODS or strategy is not tf.distribute.get_strategy() or tf.distribute.has_strategy():
    return None
  return (config_hash(config), config.get("steps_per_execution"), method, float(config.sparsity))


def _reset_trainable(cached, fresh):
  """The cached (model, optimizer, epoch variable) holding the initial values of `fresh` and a zeroed optimizer."""
  model, optimizer, epoch_var = cached
  model.set_weights(fresh.get_weights())  # weights, pruning masks, thresholds and pruning steps alike
  for variable in optimizer.variables():  # Adam/SGD slots and the iteration count start at zero
    variable.assign(tf.zeros_like(variable))
  epoch_var.assign(0)
  model.reset_metrics()
  return model, optimizer, epoch_var


def drop_reused():
  """Forgets the compiled model kept by train_and_export(reuse_traced=True)."""
  _TRAINABLES.clear()


def _is_chief(strategy):
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not getattr(resolver, "task_type", None):
    return True
  cluster = resolver.cluster_spec().as_dict()
  if "chief" in cluster:
    return resolver.task_type == "chief"
  return resolver.task_type == "worker" and resolver.task_id == 0


def save_model(model, path):
  """Saves a Keras model as HDF5 atomically (via a local temporary file, so `path` may be remote)."""
  with tempfile.TemporaryDirectory() as tmpdir:
    local = os.path.join(tmpdir, "model.h5")
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", UserWarning)  # "HDF5 is legacy": chosen on purpose, fast and self-contained
      model.save(local, save_format="h5", include_optimizer=False)
    with io_utils.atomic_path(path) as tmp:
      tf.io.gfile.copy(local, tmp, overwrite=True)


def load_model(path):
  """Loads a model saved by `save_model` (stripped: plain Keras layers)."""
  if not tf.io.gfile.exists(path):
    raise PieError(f"{path}: no saved model there")
  with tempfile.TemporaryDirectory() as tmpdir:
    local = os.path.join(tmpdir, "model.h5")
    tf.io.gfile.copy(path, local)
    try:
      return keras.models.load_model(local, compile=False)
    except (OSError, ValueError) as e:
      raise PieError(f"{path}: not a readable saved model ({e})") from None


def prediction_metadata(config, info, sparsity_report, extra=None):
  metadata = {
      "dataset": info.name, "split": info.eval_split, "num_classes": info.num_classes,
      "class_names": list(info.class_names), "target_sparsity": float(config.sparsity),
      "measured_sparsity": sparsity_report["overall"], "seed": int(config.seed), "config_hash": config_hash(config),
      "model": config.model.name, "config": config_to_dict(config),
      "name": model_name(config.sparsity, config.seed, config.get("method", variants.DEFAULT_METHOD)),
      "method": variants.config_method(config),
  }
  metadata.update(extra or {})
  return metadata


def export_from_model_file(config, model_path, out_path, dataset=None, extra_metadata=None, log=print):
  """Exports the predictions of a saved (stripped) model; the sparsity is measured on it."""
  dataset = dataset or data_lib.load_dataset(config.data)
  model = load_model(model_path)
  scope = config.pruning.get("scope", "all_but_classifier") if "pruning" in config else "all_but_classifier"
  sparsity_report = pruning.measure_sparsity(model, pruning.prunable_layer_names(model, scope))
  metadata = prediction_metadata(config, dataset.info, sparsity_report, extra_metadata)
  metadata, _ = export_lib.export_predictions(
      model, dataset, out_path, metadata, batch_size=config.get("eval_batch_size", 256),
      top_k=config.get("top_k", 5), with_logits=config.get("export_logits", False), log=log)
  return metadata


def train_and_export(config, workdir, strategy=None, log=print, reuse_traced=False):
  """Trains (or resumes) one model and exports it; returns its metrics (see module docstring).

  reuse_traced: keep the compiled model of this call for the next one of the same architecture, method and level
    (another seed), which then only resets its values instead of tracing its train step again. Tracing costs more
    than training a small model; the predictions are bit-identical either way (tested). Population workers use it.
  """
  paths = model_paths(workdir, config)
  if is_finished(workdir, config):
    log(f"{paths['name']}: already finished in {workdir}; nothing to do")
    return io_utils.read_json(paths["metrics"])
  if not 0.0 <= config.sparsity < 1.0:
    raise PieError(f"config.sparsity must be in [0, 1), got {config.sparsity}")
  strategy = strategy or tf.distribute.get_strategy()
  chief = _is_chief(strategy)
  start_time = time.time()
  keras.utils.set_random_seed(int(config.seed))
  if config.get("deterministic", False):
    tf.config.experimental.enable_op_determinism()

  dataset = data_lib.load_dataset(config.data)
  info = dataset.info
  steps_per_epoch = dataset.steps_per_epoch(config.batch_size, config.get("steps_per_epoch"))
  total_steps = config.num_epochs * steps_per_epoch
  input_shape = models.input_shape_for(info, config.data)
  scope = config.pruning.get("scope", "all_but_classifier")
  method = variants.config_method(config)

  with strategy.scope():
    model = models.build_model(config.model, input_shape, info.num_classes)
    scope_layers = pruning.prunable_layer_names(model, scope)
    # Every method (magnitude pruning included) wraps the model through the variant registry.
    model, method_callbacks = variants.wrap_for_training(model, config, method, total_steps)
    reuse_key = _reuse_key(config, method, strategy) if reuse_traced else None
    if reuse_key is not None and reuse_key in _TRAINABLES:
      # The model above is built exactly as for a fresh run (same seed, same construction), so copying its values
      # into the model whose train step is already traced starts training from the same state.
      model, optimizer, epoch_var = _reset_trainable(_TRAINABLES[reuse_key], model)
    else:
      optimizer = make_optimizer(config, steps_per_epoch)
      # Several steps per call of the train function: a small model's step costs less than the Python round trip.
      model.compile(optimizer=optimizer, metrics=["accuracy"],
                    steps_per_execution=steps_per_execution(config, steps_per_epoch),
                    loss=keras.losses.CategoricalCrossentropy(
                        from_logits=True, label_smoothing=config.get("label_smoothing", 0.0)))
      optimizer.build(model.trainable_variables)
      _build_compiled_metrics(model)
      epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
      if reuse_key is not None:
        _TRAINABLES.clear()  # one architecture at a time: a worker's jobs come grouped by level
        _TRAINABLES[reuse_key] = (model, optimizer, epoch_var)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
  ckpt_dir = paths["checkpoints"] if chief else tempfile.mkdtemp(prefix="pie-worker-ckpt-")
  # Only the chief writes into the workdir: other workers' summaries go to a temporary folder too.
  tensorboard_dir = paths["tensorboard"] if chief else tempfile.mkdtemp(prefix="pie-worker-tb-")
  manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=2)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).expect_partial()
    log(f"{paths['name']}: resumed from {manager.latest_checkpoint} (epoch {int(epoch_var.numpy())})")
  initial_epoch = int(epoch_var.numpy())

  if initial_epoch < config.num_epochs:
    train = dataset.train_batches(config.batch_size, int(config.seed), initial_epoch, config.num_epochs,
                                  steps_per_epoch)
    if isinstance(dataset, data_lib.DigitsDataset):
      options = tf.data.Options()
      options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
      train = train.with_options(options)
    callbacks = [_EpochEnd(manager, epoch_var, config.num_epochs, steps_per_epoch,
                           lambda msg: log(f"{paths['name']}: {msg}"), every=config.get("checkpoint_every_epochs", 1))]
    if method in ("magnitude", "2:4", variants.SHAM):
      callbacks += method_callbacks + [
          tfmot.sparsity.keras.PruningSummaries(log_dir=tensorboard_dir, write_graph=False)]
    else:
      callbacks += method_callbacks + [keras.callbacks.TensorBoard(log_dir=tensorboard_dir, write_graph=False)]
    model.fit(train, epochs=config.num_epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
              callbacks=callbacks, verbose=0)
  train_seconds = time.time() - start_time

  with strategy.scope():
    stripped = variants.finalize(model, method, method_callbacks)
  sparsity_report = variants.measure_sparsity(stripped, scope_layers)
  structure = variants.structure_report(stripped, method, scope_layers)
  if (method in ("magnitude", "random", variants.SHAM) and
      abs(sparsity_report["overall"] - config.sparsity) > SPARSITY_TOLERANCE):
    raise PieError(f"{paths['name']}: measured sparsity {sparsity_report['overall']:.4f} is more than "
                   f"{SPARSITY_TOLERANCE:.1%} away from the target {config.sparsity}; check config.pruning "
                   "(the pruning window must end before training does)")
  if not chief:
    return {"name": paths["name"], "chief": False}
  if method == "qat":
    # The deployed model is the int8 TFLite conversion: save it, measure it and export its predictions.
    tflite_bytes = variants.qat_to_tflite(stripped)
    io_utils.write_bytes(os.path.join(workdir, "model.tflite"), tflite_bytes)
    from pie import quantization  # pylint: disable=g-import-not-at-top
    compression = variants.compression_fields(quantization.model_size_report(tflite_bytes))
  else:
    save_model(stripped, paths["model"])
    # The size report converts the model to TFLite (about a second for a small CNN, far more for ResNet-50): only
    # studies that compare compression methods by size ask for it.
    compression = (variants.compression_fields(variants.compression_of_keras(stripped, method))
                   if config.get("size_report", False) else {"bits_per_weight": None, "compressed_bytes": None})
  if structure:
    compression["structure"] = structure

  log(f"{paths['name']}: exporting predictions on {info.name}/{info.eval_split}")
  metadata = prediction_metadata(config, info, sparsity_report,
                                 {"steps": int(total_steps), "train_seconds": round(train_seconds, 2),
                                  **compression})
  if method == "qat":
    arrays = variants.predict_tflite(tflite_bytes, dataset, config.get("eval_batch_size", 256),
                                     top_k=config.get("top_k", 5), with_logits=config.get("export_logits", False),
                                     log=log)
  else:
    arrays = export_lib.predict_eval(stripped, dataset, config.get("eval_batch_size", 256),
                                     top_k=config.get("top_k", 5), with_logits=config.get("export_logits", False),
                                     log=log)
  metrics = {
      "name": paths["name"], **eval_metrics(arrays, info.num_classes), "target_sparsity": float(config.sparsity), "measured_sparsity": sparsity_report["overall"],
      "per_layer_sparsity": sparsity_report["per_layer"], "steps": int(total_steps),
      "wall_seconds": round(time.time() - start_time, 2), "train_seconds": round(train_seconds, 2),
      "config_hash": metadata["config_hash"], "seed": int(config.seed), "method": method,
      "bits_per_weight": compression["bits_per_weight"], "compressed_bytes": compression["compressed_bytes"],
  }
  write_outputs(paths, arrays, metadata, metrics)
  log(f"{paths['name']}: top-1 {metrics['top1']:.4f}, sparsity {sparsity_report['overall']:.4f}, "
      f"{metrics['wall_seconds']:.1f}s")
  return metrics


def eval_metrics(arrays, num_classes):
  """Top-1 and per-class recall of one model from its exported arrays."""
  top1 = arrays["top_k_classes"][:, :1].T
  return {"top1": float(stats.top1_accuracy(top1, arrays["labels"])[0]),
          "per_class_recall": stats.per_class_recall(top1, arrays["labels"], num_classes)[0].tolist()}


def write_outputs(paths, arrays, metadata, metrics):
  """metrics.json, then the predictions: their metadata JSON, written last, marks the model as finished."""
  io_utils.write_json(paths["metrics"], metrics)
  predictions_lib.write_predictions(paths["predictions"], arrays["example_ids"], arrays["labels"],
                                    arrays["top_k_classes"], arrays["top_k_probs"], metadata, logits=arrays["logits"])


def export_from_checkpoint(config, checkpoint_dir, out_path, dataset=None, log=print):
  """Exports the predictions of the latest checkpoint in `checkpoint_dir` (a model still training, say)."""
  dataset = dataset or data_lib.load_dataset(config.data)
  info = dataset.info
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  if latest is None:
    raise PieError(f"{checkpoint_dir}: no checkpoint there")
  scope = config.pruning.get("scope", "all_but_classifier")
  if variants.config_method(config) not in (variants.DENSE, "magnitude"):
    raise PieError(f"exporting from a checkpoint supports dense and magnitude-pruned models, not method "
                   f"{config.method!r}: let train.train finish and export it")
  model = models.build_model(config.model, models.input_shape_for(info, config.data), info.num_classes)
  if config.sparsity > 0:
    steps_per_epoch = dataset.steps_per_epoch(config.batch_size, config.get("steps_per_epoch"))
    begin, end, frequency = pruning.schedule_steps(config.pruning, config.num_epochs * steps_per_epoch)
    model = pruning.apply_pruning(model, config.sparsity, begin, end, frequency, scope)
  epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
  tf.train.Checkpoint(model=model, epoch=epoch_var).restore(latest).expect_partial()
  stripped = pruning.strip_pruning(model) if config.sparsity > 0 else model
  sparsity_report = pruning.measure_sparsity(stripped, pruning.prunable_layer_names(stripped, scope))
  log(f"{latest}: epoch {int(epoch_var.numpy())}, measured sparsity {sparsity_report['overall']:.4f}")
  metadata = prediction_metadata(config, info, sparsity_report,
                                 {"checkpoint": latest, "epoch": int(epoch_var.numpy())})
  metadata, _ = export_lib.export_predictions(
      stripped, dataset, out_path, metadata, batch_size=config.get("eval_batch_size", 256),
      top_k=config.get("top_k", 5), with_logits=config.get("export_logits", False), log=log)
  return metadata
