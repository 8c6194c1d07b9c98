"""Train one model of a population (dense, control or compressed), resumably, then export it.

`train_and_export(config, workdir, job=...)` is the whole life of one model:
  1. build data, model and optimizer under a tf.distribute strategy; the model's method (its registry entry,
     `pie.variants`) wraps it for training and adds its callbacks. With config.init_from_dense (the paired design) a
     compressed model starts from the finished dense model of its seed (its Job's `init_from`, in the study folder
     beside its own): the dense weights are loaded, the method wraps the trained model (`Variant.wrap_trained`) and
     it is fine-tuned for config.finetune_epochs, its pruning window fitted into those steps and its batches
     continuing the dense twin's data stream (fine-tuning epoch e reads epoch config.num_epochs + e);
  2. restore the latest checkpoint in workdir, if any, and train the remaining epochs, checkpointing every
     config.checkpoint_every_epochs epochs and after the last;
  3. let the method finalize the model (strip wrappers, apply masks), check what it promises (structure, target
     sparsity), measure the sparsity reached, save the model (or its TFLite conversion);
  4. export its predictions on the eval split, scored under the same strategy (every worker joins; the chief
     writes), and its metrics (`pie.model_dir`).
Training reads its input per host (`Dataset.train_input_fn` through `strategy.distribute_datasets_from_function`)
and runs under the config's precision (`config.mixed_precision`: None, or "bfloat16" for TPUs).
The launcher passes the model's `variants.Job` (method, level, seed, name); `train.train` trains from the config
alone. A model whose predictions metadata exists is finished: calling again does nothing. Derived models (post-training
quantization) are not trained: see pie/ptq.py.

`export_trained(config, workdir, job=...)` does step 4 alone for a model whose training is finished but whose
predictions are missing (from its saved model, or its final checkpoint restored and finalized as in step 3), with the
same code and files; `restore_checkpoint` is the restoring part, which `pie.saved_exports` also uses for runs trained
outside a study.
"""

import copy
import dataclasses
import functools
import os
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pie import data as data_lib
from pie import devices
from pie import export as export_lib
from pie import io_utils
from pie import model_dir
from pie import models
from pie import predictions as predictions_lib
from pie import pruning
from pie import variants
from pie.errors import PieError

# pie.robustness reads saved models through this name; the helper lives with the other model-folder ones.
load_model = model_dir.load_model


def make_optimizer(config, steps_per_epoch, num_epochs=None):
  """Optimizer and learning-rate schedule from the config (Adam or SGD; constant, piecewise or cosine) over
  `num_epochs` (config.num_epochs by default; the fine-tuning epochs of a model started from its dense twin)."""
  lr = config.learning_rate
  if config.get("lr_scale_by_batch"):
    lr = lr * config.batch_size / 256
  schedule_name = config.get("lr_schedule", "constant")
  warmup = int(config.get("warmup_epochs", 0) * steps_per_epoch)
  total = (num_epochs or config.num_epochs) * steps_per_epoch
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


def _scope(config):
  return config.pruning.get("scope", "all_but_classifier") if "pruning" in config else "all_but_classifier"


def export_from_model_file(config, model_path, out_path, dataset=None, extra_metadata=None, log=print):
  """Exports the predictions of a saved (stripped) model; the sparsity is measured on it."""
  dataset = dataset or data_lib.load_dataset(config.data)
  model = model_dir.load_model(model_path)
  sparsity_report = pruning.measure_sparsity(model, pruning.prunable_layer_names(model, _scope(config)))
  metadata = model_dir.prediction_metadata(config, dataset.info, sparsity_report, extra_metadata)
  metadata, _ = export_lib.export_predictions(
      model,
      dataset,
      out_path,
      metadata,
      **export_lib.export_settings(config),
      log=log,
      slice_features=config.get("slice_features"),
  )
  return metadata


def seed_and_determinism(config, job):
  """The random state and op determinism of a model's process, as its training set them."""
  keras.utils.set_random_seed(job.seed)
  if config.get("deterministic", False):
    tf.config.experimental.enable_op_determinism()


def train_and_export(config, workdir, strategy=None, log=print, reuse_traced=False, job=None, source_dir=None):
  """Trains (or resumes) one model and exports it; returns its metrics (see module docstring).

  job: the model's `variants.Job` (method, level, seed, name) as the launcher resolved it; without it (one model
    trained by `train.train`) it is read from the config (`variants.config_job`). The config must hold the job's
    level and seed (`pie.population.job_config`): it is recorded in the metadata.
  source_dir: the folder of the dense twin a model starts from (`job.init_from`); by default the folder of that
    name beside `workdir`, as the launcher lays a study out. It must be finished.
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
  study_dir = os.path.dirname(os.path.normpath(workdir))
  trained = _dense_twin(job, study_dir, source_dir, log) if job.init_from else None
  _check_requirements(job, study_dir)
  strategy = strategy or tf.distribute.get_strategy()
  start_time = time.time()
  seed_and_determinism(config, job)
  dataset = data_lib.load_dataset(config.data)
  dataset.slice_specs(config.get("slice_features"))  # a slice feature the dataset lacks fails before training
  context = _MitigationContext(config, job, dataset, study_dir, log)
  with devices.precision(config.get("mixed_precision")):
    run = _build_run(config, job, dataset, strategy, reuse_traced, trained, context)
    _fit(run, config, job, dataset, paths, _is_chief(strategy), log, strategy)
    train_seconds = time.time() - start_time
    with strategy.scope():
      stripped = run.variant.finalize(run.student, run.callbacks)
    sparsity_report, structure = _checked(run.variant, stripped, run.scope_layers, job)
    predictions = None
    if not run.variant.exports_tflite:
      # Every worker runs the export: the model scores the eval split under the strategy it trained in, and the
      # outputs are gathered across workers by collectives that all of them must join.
      log(f"{job.name}: exporting predictions on {dataset.info.name}/{dataset.info.eval_split}")
      predictions = export_lib.predict_eval(
          stripped,
          dataset,
          **export_lib.export_settings(config),
          log=log,
          strategy=strategy,
          image_dtype=devices.input_dtype(config.get("mixed_precision")),
      )
  if not _is_chief(strategy):
    return {"name": job.name, "chief": False}
  return _export(
      run.variant,
      stripped,
      sparsity_report,
      structure,
      config,
      job,
      dataset,
      workdir,
      run.total_steps,
      start_time,
      train_seconds,
      log,
      predictions=predictions,
      mitigation_state=run.record or None,
  )


def _dense_twin(job, study_dir, source_dir, log):
  """The finished dense model a model starts from (config.init_from_dense), loaded from its folder."""
  source_dir = source_dir or os.path.join(study_dir, job.init_from)
  if not model_dir.is_finished(source_dir, job.init_from):
    raise PieError(
        f"{job.name} starts from its dense twin {job.init_from} (config.init_from_dense), which is not finished in "
        f"{source_dir}: train it first (train.train with config.sparsity=0 and config.seed={job.dense_seed}, workdir "
        f"{source_dir}), or let train.population train the study, dense models first",
        parameter="init_from_dense",
    )
  log(f"{job.name}: starting from its dense twin {job.init_from} ({os.path.join(source_dir, 'model.h5')})")
  return model_dir.load_model(os.path.join(source_dir, "model.h5"))


def _check_requirements(job, study_dir):
  """Every model a job requires besides its dense twin (a mitigation's teacher or dense population) is finished."""
  for name in job.requires:
    if name != job.init_from and not model_dir.is_finished(os.path.join(study_dir, name), name):
      raise PieError(
          f"{job.name} ({job.method}) needs the finished model {name} in {study_dir}, and it is not finished: train "
          "it first, or let train.population train the study (the models a mitigation needs come first)",
          parameter="mitigation",
      )


# Per-class error of the dense models on the training split, by (model path, file size, mtime): a worker computes it
# once for every class_reweight model of a study.
_DENSE_ERRORS = {}


class _MitigationContext:
  """What a mitigation may ask of the study while its model is prepared (`pie.variants.Mitigation.training`)."""

  def __init__(self, config, job, dataset, study_dir, log):
    self.config, self.job, self.dataset, self.study_dir = config, job, dataset, study_dir
    self.num_classes = dataset.info.num_classes
    self.log = lambda message: log(f"{job.name}: {message}")
    self.dense_names = [
        variants.model_name(variants.DENSE, 0.0, seed) for seed in range(int(config.get("num_seeds", 0) or 0))
    ]

  def model_path(self, name):
    if self.study_dir is None:
      raise PieError(
          f"{self.job.name} ({self.job.method}) needs the study's model {name}, and no study folder was given: "
          "restore it from its folder in the study"
      )
    return os.path.join(self.study_dir, name, "model.h5")

  def load_model(self, name):
    """A finished model of the study (a distillation teacher), loaded from its model.h5."""
    self.log(f"loading {name} from {self.model_path(name)}")
    return model_dir.load_model(self.model_path(name))

  def train_batches(self):
    """The training split as (images, labels) batches, preprocessed as at evaluation (no augmentation)."""
    data_config = copy.deepcopy(self.config.data)
    with data_config.unlocked():
      data_config.eval_split = data_config.train_split
    for batch in data_lib.load_dataset(data_config).eval_batches(self.config.get("eval_batch_size", 256)):
      yield batch["image"], batch["label"].numpy()

  def dense_error(self, names):
    """(mean per-class error on the training split of the named dense models, examples per class)."""
    from pie import mitigation  # pylint: disable=g-import-not-at-top

    errors, count = [], None
    for name in names:
      path = self.model_path(name)
      stat = tf.io.gfile.stat(path)
      key = (path, stat.length, stat.mtime_nsec)
      if key not in _DENSE_ERRORS:
        model = model_dir.load_model(path)
        _DENSE_ERRORS[key] = mitigation.per_class_error(
            lambda images, model=model: model(images, training=False), self.train_batches(), self.num_classes
        )
      error, count = _DENSE_ERRORS[key]
      errors.append(error)
    if not errors:
      raise PieError(f"{self.job.name}: no dense model to take the per-class error from (config.num_seeds)")
    self.log(f"per-class training error of {len(errors)} dense models: {np.round(np.mean(errors, 0), 4).tolist()}")
    return np.mean(errors, axis=0), count


def _checked(variant, stripped, scope_layers, job):
  """(sparsity report, structure) of a finalized model; a PieError when it breaks what its method promises."""
  sparsity_report = variants.measure_sparsity(stripped, scope_layers)
  structure = variant.structure(stripped, scope_layers)  # raises if the method's promise does not hold
  problem = variant.sparsity_problem(sparsity_report["overall"], job.sparsity)
  if problem:
    raise PieError(f"{job.name}: {problem}; check config.pruning (the pruning window must end before training does)")
  return sparsity_report, structure


def export_trained(config, workdir, job=None, log=print):
  """Exports the predictions of a model whose training is finished but whose export is missing; never trains.

  The source is the model folder's saved model (model.h5, which training saved after finalizing the model), else its
  final checkpoint, restored and finalized as training does (`restore_checkpoint`). A method deployed as TFLite (QAT)
  is exported from its final checkpoint when there is one (its sparsity is measured on the Keras weights), else from
  its model.tflite with the sparsity its training recorded in metrics.json. The files are those `train_and_export`
  writes, by the same code (`_export`): metrics.json, `<name>.tfrecord`, then `<name>.json`, atomically; the saved
  model too when it was missing. Their metadata adds `exported_from` (the file the model came from).

  Args:
    config: the model's config (`pie.population.job_config` of the study's config).
    workdir: the model's folder in the study.
    job: the model's `variants.Job` (default: `variants.config_job(config)`).
  Returns:
    the metrics dict (those on file when the model is already finished).
  Raises:
    PieError: a derived model (see pie/ptq.py), or no saved model and no final checkpoint (training unfinished:
      rerun the launcher).
  """
  job = job or variants.config_job(config)
  paths = model_dir.model_paths(workdir, job.name)
  if model_dir.is_finished(workdir, job.name):
    log(f"{job.name}: already finished in {workdir}; nothing to do")
    return io_utils.read_json(paths["metrics"])
  variant = variants.get_variant(job.method)
  if variant.derived:
    raise PieError(f"{job.name}: a derived model is made from its dense model by pie.ptq.derive_ptq, not exported")
  state = model_dir.training_state(workdir, variants.training_epochs(config, job), tflite=variant.exports_tflite)
  if not state.trained:
    raise PieError(
        f"{workdir}: training of {job.name} is unfinished ({state.describe()}); rerun the launcher to finish it",
        parameter="workdir",
    )
  start_time = time.time()
  seed_and_determinism(config, job)
  dataset = data_lib.load_dataset(config.data)
  total_steps = variants.training_epochs(config, job) * dataset.steps_per_epoch(
      config.batch_size, config.get("steps_per_epoch")
  )
  previous = io_utils.read_json(paths["metrics"]) if tf.io.gfile.exists(paths["metrics"]) else {}
  train_seconds = previous.get("train_seconds")
  common = (config, job, dataset, workdir, total_steps, start_time, train_seconds, log)
  if state.saved_model and not variant.exports_tflite:
    log(f"{job.name}: exporting from {state.saved_model}")
    stripped = model_dir.load_model(state.saved_model)
    scope_layers = pruning.prunable_layer_names(stripped, _scope(config))
    report, structure = _checked(variant, stripped, scope_layers, job)
    return _export(variant, stripped, report, structure, *common, save=False, source=state.saved_model)
  if state.final_checkpoint:
    log(f"{job.name}: exporting from {state.describe()}")
    study_dir = os.path.dirname(os.path.normpath(workdir))
    stripped, run = restore_checkpoint(config, job, dataset, state.checkpoint, study_dir=study_dir, log=log)
    report, structure = _checked(variant, stripped, run.scope_layers, job)
    return _export(
        variant,
        stripped,
        report,
        structure,
        *common,
        source=state.checkpoint,
        mitigation_state=run.record or None,
    )
  if "measured_sparsity" not in previous:
    raise PieError(
        f"{workdir}: {job.name} has {state.saved_model} but neither a final checkpoint nor a metrics.json that records "
        "the sparsity measured on its weights; retrain it (delete the folder and rerun the launcher)",
        parameter="workdir",
    )
  log(f"{job.name}: exporting from {state.saved_model}")
  with tf.io.gfile.GFile(state.saved_model, "rb") as f:
    tflite_bytes = f.read()
  report = {"overall": previous["measured_sparsity"], "per_layer": previous.get("per_layer_sparsity", {})}
  return _export(variant, None, report, {}, *common, save=False, source=state.saved_model, tflite_bytes=tflite_bytes)


@dataclasses.dataclass
class _Run:
  """What training one model works on: its registry entry, the model to fit and its state."""

  variant: object
  model: object  # the Keras model fitted: the student itself, or a mitigation's model around it
  student: object  # the method-wrapped model that is finalized and exported
  record: dict  # the mitigation's state, recorded as `mitigation_state`
  optimizer: object
  epoch_var: object
  callbacks: list  # the method's own callbacks (pruning steps, masks)
  scope_layers: list  # the layers the method compresses
  steps_per_epoch: int
  total_steps: int
  num_epochs: int  # config.num_epochs, or config.finetune_epochs for a model started from its dense twin
  data_epoch_offset: int  # the data stream's epoch of training epoch 0 (config.num_epochs when fine-tuning)


def _build_run(config, job, dataset, strategy, reuse_traced, trained=None, context=None):
  """The model of `job`, wrapped by its method and compiled (or a compiled one reset to the same initial values);
  `trained`: the dense twin whose weights it starts from (config.init_from_dense; None when a checkpoint is restored
  over it anyway). A mitigated method trains through its mitigation's setup (`Variant.training`: the model to fit, its
  loss and metrics); `context` (`_MitigationContext`) is what it may ask."""
  variant = variants.get_variant(job.method)
  info = dataset.info
  steps_per_epoch = dataset.steps_per_epoch(config.batch_size, config.get("steps_per_epoch"))
  num_epochs = variants.training_epochs(config, job)
  total_steps = num_epochs * steps_per_epoch
  scope = config.pruning.get("scope", "all_but_classifier")
  with strategy.scope():
    model = models.build_model(config.model, models.input_shape_for(info, config.data), info.num_classes)
    scope_layers = pruning.prunable_layer_names(model, scope)
    # Every method (magnitude pruning included) wraps the model through its registry entry: the fresh model, or the
    # dense twin's weights (the same architecture) over the fine-tuning steps.
    if job.init_from:
      if trained is not None:
        model.set_weights(trained.get_weights())
      model, method_callbacks = variant.wrap_trained(model, config, job, total_steps)
    else:
      model, method_callbacks = variant.wrap(model, config, job, total_steps)
    student, record = model, {}
    setup = variant.training(student, config, job, context)
    if setup is not None:
      model, record = setup.model, setup.record
      method_callbacks = list(method_callbacks) + list(setup.callbacks)
    reuse_key = _reuse_key(config, job, strategy) if reuse_traced else None
    if reuse_key is not None and reuse_key in _TRAINABLES:
      # The model above is built exactly as for a fresh run (same seed, same construction), so copying its values
      # into the model whose train step is already traced starts training from the same state.
      model, optimizer, epoch_var = _reset_trainable(_TRAINABLES[reuse_key], model)
      student = model
    else:
      optimizer = make_optimizer(config, steps_per_epoch, num_epochs)
      # Several steps per call of the train function: a small model's step costs less than the Python round trip.
      model.compile(
          optimizer=optimizer,
          metrics=["accuracy"] if setup is None else setup.metrics,
          steps_per_execution=steps_per_execution(config, steps_per_epoch),
          loss=keras.losses.CategoricalCrossentropy(
              from_logits=True, label_smoothing=config.get("label_smoothing", 0.0)
          )
          if setup is None
          else setup.loss,
      )
      optimizer.build(model.trainable_variables)
      _build_compiled_metrics(model)
      epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
      if reuse_key is not None:
        _TRAINABLES.clear()  # one architecture at a time: a worker's jobs come grouped by level
        _TRAINABLES[reuse_key] = (model, optimizer, epoch_var)
  offset = config.num_epochs if job.init_from else 0
  return _Run(
      variant,
      model,
      student,
      record,
      optimizer,
      epoch_var,
      method_callbacks,
      scope_layers,
      steps_per_epoch,
      total_steps,
      num_epochs,
      offset,
  )


def _fit(run, config, job, dataset, paths, chief, log, strategy):
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
  if initial_epoch >= run.num_epochs:
    return
  # Per-host input: each host reads its own share of the split (its files) and feeds its own replicas, as multi-host
  # TPU slices need; one step of all of them is one global batch of config.batch_size. A model fine-tuned from its
  # dense twin continues the twin's data order: its epochs are numbered after the twin's (run.data_epoch_offset).
  offset = run.data_epoch_offset
  input_fn = dataset.train_input_fn(
      config.batch_size,
      job.seed,
      offset + initial_epoch,
      offset + run.num_epochs,
      run.steps_per_epoch,
      deterministic=config.get("deterministic", False),
      image_dtype=devices.input_dtype(config.get("mixed_precision")),
  )
  train = strategy.distribute_datasets_from_function(input_fn)
  callbacks = [
      _EpochEnd(
          manager,
          run.epoch_var,
          run.num_epochs,
          run.steps_per_epoch,
          lambda msg: log(f"{job.name}: {msg}"),
          every=config.get("checkpoint_every_epochs", 1),
      )
  ]
  callbacks += run.callbacks + [run.variant.summaries(tensorboard_dir)]
  run.model.fit(
      train,
      epochs=run.num_epochs,
      initial_epoch=initial_epoch,
      steps_per_epoch=run.steps_per_epoch,
      callbacks=callbacks,
      verbose=0,
  )


def _export(
    variant,
    stripped,
    sparsity_report,
    structure,
    config,
    job,
    dataset,
    workdir,
    total_steps,
    start_time,
    train_seconds,
    log,
    save=True,
    source=None,
    tflite_bytes=None,
    predictions=None,
    mitigation_state=None,
):
  """Saves the finished model (unless `save` is False: it is on file), exports its predictions and metrics; returns
  the metrics. `source`: the file an export of a trained model comes from (recorded as `exported_from`);
  `tflite_bytes`: the deployed flatbuffer when it is on file (then `stripped` may be None); `predictions`: the
  export arrays of `stripped` when training already scored it under its strategy (not used for a TFLite model,
  whose own predictions are exported); `mitigation_state`: what the model's mitigation recorded while training (a
  distillation teacher, class weights), or None."""
  info = dataset.info
  paths = model_dir.model_paths(workdir, job.name)
  if tflite_bytes is None:
    tflite_bytes = variant.to_tflite(stripped)
  if tflite_bytes is not None:
    # The deployed model is the TFLite conversion (QAT's int8): save it, measure it and export its predictions.
    if save:
      io_utils.write_bytes(paths["tflite"], tflite_bytes)
    from pie import quantization  # pylint: disable=g-import-not-at-top

    compression = model_dir.compression_fields(quantization.model_size_report(tflite_bytes))
  else:
    if save:
      model_dir.save_model(stripped, paths["model"])
    # The size report converts the model to TFLite (about a second for a small CNN, far more for ResNet-50): only
    # studies that compare compression methods by size ask for it.
    compression = (
        model_dir.compression_fields(variant.size_report(stripped))
        if config.get("size_report", False)
        else {"bits_per_weight": None, "compressed_bytes": None}
    )
  if structure:
    compression["structure"] = structure

  train_seconds = None if train_seconds is None else round(train_seconds, 2)
  extra = {
      "steps": int(total_steps),
      "train_seconds": train_seconds,
      "init_from": job.init_from,
      "mitigation_state": mitigation_state,
      **compression,
  }
  if source is not None:
    extra["exported_from"] = source
  metadata = model_dir.prediction_metadata(config, info, sparsity_report, extra, job=job)
  if predictions is not None and tflite_bytes is None:
    arrays = predictions
  else:
    deployed = " of its TFLite model" if tflite_bytes is not None else ""
    log(f"{job.name}: exporting predictions{deployed} on {info.name}/{info.eval_split}")
    arrays = _predict(stripped, tflite_bytes, dataset, config, log)
  metrics = {
      "name": job.name,
      **model_dir.eval_metrics(arrays, info.num_classes),
      "target_sparsity": job.sparsity,
      "measured_sparsity": sparsity_report["overall"],
      "per_layer_sparsity": sparsity_report["per_layer"],
      "steps": int(total_steps),
      "wall_seconds": round(time.time() - start_time, 2),
      "train_seconds": train_seconds,
      "config_hash": metadata["config_hash"],
      "seed": job.seed,
      "method": job.method,
      "init_from": job.init_from,
      "mitigation": metadata["mitigation"],
      "bits_per_weight": compression["bits_per_weight"],
      "compressed_bytes": compression["compressed_bytes"],
  }
  model_dir.write_outputs(paths, arrays, metadata, metrics, dataset.eval_slices(config.get("slice_features")))
  log(
      f"{job.name}: top-1 {metrics['top1']:.4f}, sparsity {sparsity_report['overall']:.4f}, "
      f"{metrics['wall_seconds']:.1f}s"
  )
  return metrics


def _predict(model, tflite_bytes, dataset, config, log):
  """The export arrays of the deployed model: the TFLite flatbuffer when there is one, else the Keras model."""
  predict = (
      functools.partial(export_lib.predict_tflite, tflite_bytes)
      if tflite_bytes is not None
      else functools.partial(export_lib.predict_eval, model)
  )
  return predict(dataset, **export_lib.export_settings(config), log=log)


def predict_deployed(variant, model, dataset, config, log=print):
  """The export arrays of a finalized model as its method deploys it: its TFLite conversion (QAT), else itself."""
  return _predict(model, variant.to_tflite(model), dataset, config, log)


def _restores(model, checkpoint, under_model):
  """Reads `checkpoint` into `model`; True when every variable of the model had its value there.

  `under_model`: the checkpoint keeps the model under the key "model" (pie's training, tf.train.Checkpoint(model=...)),
  not at its root (Keras' save_weights).
  """
  root = tf.train.Checkpoint(model=model) if under_model else tf.train.Checkpoint(root=model)
  status = root.read(checkpoint)
  status.expect_partial()  # the optimizer and the epoch are read separately
  try:
    status.assert_existing_objects_matched()
  except AssertionError:
    return False
  return True


def restore_checkpoint(config, job, dataset, checkpoint, study_dir=None, log=print):
  """The finalized model of a training checkpoint of `job`'s model, and its `_Run` (scope layers, method).

  A checkpoint of pie's training (model, optimizer, epoch) is read into the model built, wrapped and compiled as for
  training, and the method finalizes it as after training (random pruning applies the masks of the optimizer's last
  step). A checkpoint of the model alone, written outside pie by `tf.train.Checkpoint(model=...)` or
  `model.save_weights`, is read into the model wrapped by the method (then finalized) or into the plain model
  (wrappers stripped before saving). Raises PieError when none fits: a checkpoint of another model than the config's.
  `study_dir`: the study folder, for a mitigation that builds its training model from the study's models (a
  distillation teacher, the dense population's class weights); None outside a study. The model is built under the
  config's precision (`config.mixed_precision`), as training built it.
  """
  context = _MitigationContext(config, job, dataset, study_dir, log)
  with devices.precision(config.get("mixed_precision")):
    run = _build_run(config, job, dataset, tf.distribute.get_strategy(), reuse_traced=False, context=context)
    names = model_dir.checkpoint_reader(checkpoint).get_variable_to_shape_map()
    under_model = any(name.startswith("model/") for name in names)
    if _restores(run.model, checkpoint, under_model):
      tf.train.Checkpoint(optimizer=run.optimizer, epoch=run.epoch_var).read(checkpoint).expect_partial()
      return run.variant.finalize(run.student, run.callbacks), run
    info = dataset.info
    for wrapped in (True, False):
      # Uncompiled: a compiled model expects its optimizer in the checkpoint too.
      model = models.build_model(config.model, models.input_shape_for(info, config.data), info.num_classes)
      if wrapped:
        model, plain = run.variant.wrap(model, config, job, run.total_steps)[0], model
        if model is plain:
          continue  # the method does not wrap layers: the plain model is the one to try
      if _restores(model, checkpoint, under_model):
        return (run.variant.finalize(model) if wrapped else model), run
    raise PieError(
        f"{checkpoint}: not a checkpoint of the config's model {config.model.name!r} (method {job.method}): its "
        "variables match neither the model wrapped for training nor the plain model; check config.model",
        parameter="config",
    )


def export_from_checkpoint(config, checkpoint_dir, out_path, dataset=None, log=print):
  """Exports the predictions of the latest checkpoint in `checkpoint_dir` (a model still training, say)."""
  dataset = dataset or data_lib.load_dataset(config.data)
  checkpoint = model_dir.latest_checkpoint(checkpoint_dir)
  if checkpoint is None:
    raise PieError(f"{checkpoint_dir}: no checkpoint there", parameter="checkpoint_dir")
  job = variants.config_job(config)
  if variants.get_variant(job.method).derived:
    raise PieError(f"method {job.method!r} is not trained: it has no checkpoint to export", parameter="config")
  stripped, run = restore_checkpoint(config, job, dataset, checkpoint)
  sparsity_report = variants.measure_sparsity(stripped, run.scope_layers)
  epoch = model_dir.checkpoint_epoch(checkpoint)
  log(f"{checkpoint}: epoch {epoch}, measured sparsity {sparsity_report['overall']:.4f}")
  metadata = model_dir.prediction_metadata(
      config, dataset.info, sparsity_report, {"checkpoint": checkpoint, "epoch": epoch}, job=job
  )
  slices = dataset.eval_slices(config.get("slice_features"))
  arrays = predict_deployed(run.variant, stripped, dataset, config, log)
  return predictions_lib.write_arrays(out_path, arrays, metadata, slices)
