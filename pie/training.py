"""Train one model of a population (dense, control or compressed), resumably, then export it.

`train_and_export(config, workdir, job=...)` is the whole life of one model:
  1. build data, model and optimizer under a tf.distribute strategy; the model's method (its registry entry,
     `pie.variants`) wraps it for training and adds its callbacks;
  2. restore the latest checkpoint in workdir, if any, and train the remaining epochs, checkpointing every
     config.checkpoint_every_epochs epochs and after the last;
  3. let the method finalize the model (strip wrappers, apply masks), check what it promises (structure, target
     sparsity), measure the sparsity reached, save the model (or its TFLite conversion);
  4. export its predictions on the eval split and its metrics (`pie.model_dir`).
The launcher passes the model's `variants.Job` (method, level, seed, name); `train.train` trains from the config
alone. A model whose predictions metadata exists is finished: calling again does nothing. Derived models (post-training
quantization) are not trained: see pie/ptq.py.
"""

import dataclasses
import functools
import os
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pie import data as data_lib
from pie import export as export_lib
from pie import io_utils
from pie import model_dir
from pie import models
from pie import pruning
from pie import variants
from pie.errors import PieError

# pie.robustness reads saved models through this name; the helper lives with the other model-folder ones.
load_model = model_dir.load_model


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
    self.log(
        f"epoch {epoch + 1}/{self.num_epochs} (step {(epoch + 1) * self.steps_per_epoch}/"
        f"{self.num_epochs * self.steps_per_epoch}) {metrics} [{time.time() - self._start:.1f}s]"
    )


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


def _reuse_key(config, job, strategy):
  """What a compiled model depends on besides its seed, or None when it cannot be reused (`Variant.reusable`)."""
  if (
      not variants.get_variant(job.method).reusable
      or strategy is not tf.distribute.get_strategy()
      or tf.distribute.has_strategy()
  ):
    return None
  return (model_dir.config_hash(config), config.get("steps_per_execution"), job.method, float(job.sparsity))


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


def export_from_model_file(config, model_path, out_path, dataset=None, extra_metadata=None, log=print):
  """Exports the predictions of a saved (stripped) model; the sparsity is measured on it."""
  dataset = dataset or data_lib.load_dataset(config.data)
  model = model_dir.load_model(model_path)
  scope = config.pruning.get("scope", "all_but_classifier") if "pruning" in config else "all_but_classifier"
  sparsity_report = pruning.measure_sparsity(model, pruning.prunable_layer_names(model, scope))
  metadata = model_dir.prediction_metadata(config, dataset.info, sparsity_report, extra_metadata)
  metadata, _ = export_lib.export_predictions(
      model,
      dataset,
      out_path,
      metadata,
      batch_size=config.get("eval_batch_size", 256),
      top_k=config.get("top_k", 5),
      with_logits=config.get("export_logits", False),
      log=log,
      slice_features=config.get("slice_features"),
  )
  return metadata


def train_and_export(config, workdir, strategy=None, log=print, reuse_traced=False, job=None):
  """Trains (or resumes) one model and exports it; returns its metrics (see module docstring).

  job: the model's `variants.Job` (method, level, seed, name) as the launcher resolved it; without it (one model
    trained by `train.train`) it is read from the config (`variants.config_job`). The config must hold the job's
    level and seed (`pie.population.job_config`): it is recorded in the metadata.
  reuse_traced: keep the compiled model of this call for the next one of the same architecture, method and level
    (another seed), which then only resets its values instead of tracing its train step again. Tracing costs more
    than training a small model; the predictions are bit-identical either way (tested). Population workers use it.
  """
  if job is None:
    job = variants.config_job(config)
  elif (job.sparsity, job.seed) != (float(config.sparsity), int(config.seed)):
    raise PieError(
        f"{job.name}: the job's level {job.sparsity} and seed {job.seed} differ from the config's "
        f"(config.sparsity={config.sparsity}, config.seed={config.seed}); build the config with "
        "pie.population.job_config"
    )
  paths = model_dir.model_paths(workdir, job.name)
  if model_dir.is_finished(workdir, job.name):
    log(f"{job.name}: already finished in {workdir}; nothing to do")
    return io_utils.read_json(paths["metrics"])
  strategy = strategy or tf.distribute.get_strategy()
  start_time = time.time()
  keras.utils.set_random_seed(job.seed)
  if config.get("deterministic", False):
    tf.config.experimental.enable_op_determinism()
  dataset = data_lib.load_dataset(config.data)
  dataset.slice_specs(config.get("slice_features"))  # a slice feature the dataset lacks fails before training
  run = _build_run(config, job, dataset, strategy, reuse_traced)
  _fit(run, config, job, dataset, paths, _is_chief(strategy), log)
  train_seconds = time.time() - start_time
  with strategy.scope():
    stripped = run.variant.finalize(run.model, run.callbacks)
  sparsity_report = variants.measure_sparsity(stripped, run.scope_layers)
  structure = run.variant.structure(stripped, run.scope_layers)  # raises if the method's promise does not hold
  problem = run.variant.sparsity_problem(sparsity_report["overall"], job.sparsity)
  if problem:
    raise PieError(f"{job.name}: {problem}; check config.pruning (the pruning window must end before training does)")
  if not _is_chief(strategy):
    return {"name": job.name, "chief": False}
  return _export(
      run, stripped, sparsity_report, structure, config, job, dataset, workdir, paths, start_time, train_seconds, log
  )


@dataclasses.dataclass
class _Run:
  """What training one model works on: its registry entry, the model to fit and its state."""

  variant: object
  model: object
  optimizer: object
  epoch_var: object
  callbacks: list  # the method's own callbacks (pruning steps, masks)
  scope_layers: list  # the layers the method compresses
  steps_per_epoch: int
  total_steps: int


def _build_run(config, job, dataset, strategy, reuse_traced):
  """The model of `job`, wrapped by its method and compiled (or a compiled one reset to the same initial values)."""
  variant = variants.get_variant(job.method)
  info = dataset.info
  steps_per_epoch = dataset.steps_per_epoch(config.batch_size, config.get("steps_per_epoch"))
  total_steps = config.num_epochs * steps_per_epoch
  scope = config.pruning.get("scope", "all_but_classifier")
  with strategy.scope():
    model = models.build_model(config.model, models.input_shape_for(info, config.data), info.num_classes)
    scope_layers = pruning.prunable_layer_names(model, scope)
    # Every method (magnitude pruning included) wraps the model through its registry entry.
    model, method_callbacks = variant.wrap(model, config, job, total_steps)
    reuse_key = _reuse_key(config, job, strategy) if reuse_traced else None
    if reuse_key is not None and reuse_key in _TRAINABLES:
      # The model above is built exactly as for a fresh run (same seed, same construction), so copying its values
      # into the model whose train step is already traced starts training from the same state.
      model, optimizer, epoch_var = _reset_trainable(_TRAINABLES[reuse_key], model)
    else:
      optimizer = make_optimizer(config, steps_per_epoch)
      # Several steps per call of the train function: a small model's step costs less than the Python round trip.
      model.compile(
          optimizer=optimizer,
          metrics=["accuracy"],
          steps_per_execution=steps_per_execution(config, steps_per_epoch),
          loss=keras.losses.CategoricalCrossentropy(
              from_logits=True, label_smoothing=config.get("label_smoothing", 0.0)
          ),
      )
      optimizer.build(model.trainable_variables)
      _build_compiled_metrics(model)
      epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
      if reuse_key is not None:
        _TRAINABLES.clear()  # one architecture at a time: a worker's jobs come grouped by level
        _TRAINABLES[reuse_key] = (model, optimizer, epoch_var)
  return _Run(variant, model, optimizer, epoch_var, method_callbacks, scope_layers, steps_per_epoch, total_steps)


def _fit(run, config, job, dataset, paths, chief, log):
  """Restores the latest checkpoint, if any, and trains the remaining epochs, checkpointing as it goes."""
  checkpoint = tf.train.Checkpoint(model=run.model, optimizer=run.optimizer, epoch=run.epoch_var)
  ckpt_dir = paths["checkpoints"] if chief else tempfile.mkdtemp(prefix="pie-worker-ckpt-")
  # Only the chief writes into the workdir: other workers' summaries go to a temporary folder too.
  tensorboard_dir = paths["tensorboard"] if chief else tempfile.mkdtemp(prefix="pie-worker-tb-")
  manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=2)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).expect_partial()
    log(f"{job.name}: resumed from {manager.latest_checkpoint} (epoch {int(run.epoch_var.numpy())})")
  initial_epoch = int(run.epoch_var.numpy())
  if initial_epoch >= config.num_epochs:
    return
  train = dataset.train_batches(config.batch_size, job.seed, initial_epoch, config.num_epochs, run.steps_per_epoch)
  if isinstance(dataset, data_lib.ArrayDataset):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = train.with_options(options)
  callbacks = [
      _EpochEnd(
          manager,
          run.epoch_var,
          config.num_epochs,
          run.steps_per_epoch,
          lambda msg: log(f"{job.name}: {msg}"),
          every=config.get("checkpoint_every_epochs", 1),
      )
  ]
  callbacks += run.callbacks + [run.variant.summaries(tensorboard_dir)]
  run.model.fit(
      train,
      epochs=config.num_epochs,
      initial_epoch=initial_epoch,
      steps_per_epoch=run.steps_per_epoch,
      callbacks=callbacks,
      verbose=0,
  )


def _export(
    run, stripped, sparsity_report, structure, config, job, dataset, workdir, paths, start_time, train_seconds, log
):
  """Saves the finished model, exports its predictions and metrics; returns the metrics."""
  info = dataset.info
  tflite_bytes = run.variant.to_tflite(stripped)
  if tflite_bytes is not None:
    # The deployed model is the TFLite conversion (QAT's int8): save it, measure it and export its predictions.
    io_utils.write_bytes(os.path.join(workdir, "model.tflite"), tflite_bytes)
    from pie import quantization  # pylint: disable=g-import-not-at-top

    compression = model_dir.compression_fields(quantization.model_size_report(tflite_bytes))
  else:
    model_dir.save_model(stripped, paths["model"])
    # The size report converts the model to TFLite (about a second for a small CNN, far more for ResNet-50): only
    # studies that compare compression methods by size ask for it.
    compression = (
        model_dir.compression_fields(run.variant.size_report(stripped))
        if config.get("size_report", False)
        else {"bits_per_weight": None, "compressed_bytes": None}
    )
  if structure:
    compression["structure"] = structure

  log(f"{job.name}: exporting predictions on {info.name}/{info.eval_split}")
  metadata = model_dir.prediction_metadata(
      config,
      info,
      sparsity_report,
      {"steps": int(run.total_steps), "train_seconds": round(train_seconds, 2), **compression},
      job=job,
  )
  predict = (
      functools.partial(export_lib.predict_tflite, tflite_bytes)
      if tflite_bytes is not None
      else functools.partial(export_lib.predict_eval, stripped)
  )
  arrays = predict(
      dataset,
      config.get("eval_batch_size", 256),
      top_k=config.get("top_k", 5),
      with_logits=config.get("export_logits", False),
      log=log,
  )
  metrics = {
      "name": job.name,
      **model_dir.eval_metrics(arrays, info.num_classes),
      "target_sparsity": job.sparsity,
      "measured_sparsity": sparsity_report["overall"],
      "per_layer_sparsity": sparsity_report["per_layer"],
      "steps": int(run.total_steps),
      "wall_seconds": round(time.time() - start_time, 2),
      "train_seconds": round(train_seconds, 2),
      "config_hash": metadata["config_hash"],
      "seed": job.seed,
      "method": job.method,
      "bits_per_weight": compression["bits_per_weight"],
      "compressed_bytes": compression["compressed_bytes"],
  }
  model_dir.write_outputs(paths, arrays, metadata, metrics, dataset.eval_slices(config.get("slice_features")))
  log(
      f"{job.name}: top-1 {metrics['top1']:.4f}, sparsity {sparsity_report['overall']:.4f}, "
      f"{metrics['wall_seconds']:.1f}s"
  )
  return metrics


def export_from_checkpoint(config, checkpoint_dir, out_path, dataset=None, log=print):
  """Exports the predictions of the latest checkpoint in `checkpoint_dir` (a model still training, say)."""
  dataset = dataset or data_lib.load_dataset(config.data)
  info = dataset.info
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  if latest is None:
    raise PieError(f"{checkpoint_dir}: no checkpoint there")
  scope = config.pruning.get("scope", "all_but_classifier")
  # The checkpoint is restored into the model rebuilt with the magnitude wrappers (none at level 0): dense and
  # magnitude models, those named by their level alone.
  if not variants.get_variant(variants.config_method(config)).named_by_level:
    raise PieError(
        f"exporting from a checkpoint supports dense and magnitude-pruned models, not method "
        f"{config.method!r}: let train.train finish and export it"
    )
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
  metadata = model_dir.prediction_metadata(
      config, info, sparsity_report, {"checkpoint": latest, "epoch": int(epoch_var.numpy())}
  )
  metadata, _ = export_lib.export_predictions(
      stripped,
      dataset,
      out_path,
      metadata,
      batch_size=config.get("eval_batch_size", 256),
      top_k=config.get("top_k", 5),
      with_logits=config.get("export_logits", False),
      log=log,
      slice_features=config.get("slice_features"),
  )
  return metadata
