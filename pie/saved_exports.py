"""Exports from saved models: the predictions of models that were trained but never exported.

Two kinds of models:

  * The models of a study (study.json's jobs) whose training is finished, a saved model (model.h5, or model.tflite
    for a method deployed as TFLite) or a checkpoint after the last epoch, but which have no finished prediction
    file (`export_missing`). Each is exported in its own folder with the study's config and its registry Job, by the
    code training exports with (`pie.training.export_trained`; post-training-quantized models are derived again from
    their dense model by `pie.ptq.derive_ptq`), so its files are those training would have written: a laptop can
    analyse a study trained on TPUs without training anything. A model whose training is unfinished (its last
    checkpoint before config.num_epochs) is listed and never exported.
  * Runs trained outside a pie study, one directory per model (`find_runs`, `export_runs`): a Keras SavedModel, a
    Keras file (.h5, .keras) or a TF checkpoint of the config's model. A run's sparsity, seed and method come from a
    `pie_run.json` beside its model, e.g. {"sparsity": 0.9, "seed": 3, "method": "magnitude"} (`method` optional,
    magnitude by default: dense at sparsity 0), or else from its directory's name (`pie.variants.parse_model_name`:
    `..._sparsity90_seed3`; the parent directory's name for a run directory such as `.../sparsity90_seed3/checkpoints`).
    Their predictions go to `<out_dir>/predictions/<name>.tfrecord` and `.json`; the sparsity is measured on the
    weights, and a run whose measured sparsity contradicts its declared level (the registry's check) is reported.

Exports run in `num_workers` spawned processes (TensorFlow starts once per worker) with progress and an ETA. Every file
is written atomically; a study's model folder is claimed while it is exported (pie.population's claims, on local
folders), so neither a launcher nor a second analysis works on it at the same time; a rerun skips what is finished.
Paths may be local or any tf.io.gfile filesystem (gs://).
"""

import concurrent.futures
import dataclasses
import multiprocessing
import os
import time
from typing import Optional

from pie import io_utils
from pie import model_dir
from pie import population
from pie import predictions as predictions_lib
from pie import variants
from pie.errors import PieError

# The state of a study's model (`model_state`).
FINISHED = "finished"  # its predictions are exported
EXPORTABLE = "exportable"  # trained (saved model or final checkpoint; derived: its dense model trained), not exported
UNFINISHED = "unfinished"  # training started and stopped before its last epoch
UNTRAINED = "untrained"  # nothing trained yet
RUNNING = "running"  # claimed by a live process (being trained or exported)

RUN_FILE = "pie_run.json"
RUN_KEYS = ("sparsity", "seed", "method")
RUN_FILE_EXAMPLE = '{"sparsity": 0.9, "seed": 3, "method": "magnitude"}'
PREDICTIONS_DIR = "predictions"  # where export_runs writes, under its out_dir
KERAS_SUFFIXES = (".h5", ".keras")


def _is_local(path):
  """Claims are local files (O_EXCL, flock): a remote study is exported without them."""
  return "://" not in path


# ---------------------------------------------------------------------------------------------------------------------
# The models of a study.


@dataclasses.dataclass(frozen=True)
class ModelState:
  """Where one model of a study stands: `status` (FINISHED, EXPORTABLE, ...) and, for messages, `detail` (where its
  trained model is, or how far its training got)."""

  job: variants.Job
  directory: str
  status: str
  detail: str = ""


def model_state(study_dir, config, job):
  """The `ModelState` of `job`'s model in a study trained with `config` (study.json's)."""
  directory = population.job_dir(study_dir, job)
  if model_dir.is_finished(directory, job.name):
    return ModelState(job, directory, FINISHED)
  owner = population.claim_owner(directory) if _is_local(directory) else None
  if owner:
    return ModelState(job, directory, RUNNING, f"claimed by {owner}")
  if job.kind == "derive":
    # Derived again from its dense model's saved model, which is there once that model is trained and exported.
    source = model_dir.training_state(os.path.join(study_dir, job.source), config.num_epochs)
    if source.trained:
      return ModelState(job, directory, EXPORTABLE, f"derived from {job.source}")
    status = UNFINISHED if source.unfinished else UNTRAINED
    return ModelState(job, directory, status, f"its dense model {job.source}: {source.describe()}")
  tflite = variants.get_variant(job.method).exports_tflite
  state = model_dir.training_state(directory, variants.training_epochs(config, job), tflite=tflite)
  status = EXPORTABLE if state.trained else UNFINISHED if state.unfinished else UNTRAINED
  return ModelState(job, directory, status, state.describe())


def study_states(study_dir):
  """(config, [ModelState] of every job of study.json, in the launcher's order)."""
  config = population.load_study_config(study_dir)
  return config, [model_state(study_dir, config, job) for job in population.jobs(config)]


def state_lookup(study_dir):
  """A function from a model name to its `ModelState` (None for a name outside study.json's grid, or a study.json
  without a config), each computed when asked: validation asks only about models without predictions."""
  try:
    config = population.load_study_config(study_dir)
    jobs = {job.name: job for job in population.jobs(config)}
  except PieError:
    return lambda name: None
  return lambda name: model_state(study_dir, config, jobs[name]) if name in jobs else None


def export_missing(study_dir, num_workers=None, log=print):
  """Exports every trained model of a study that has no finished prediction file; returns the names exported.

  Models whose training is unfinished, or that a live process holds, are listed and left alone. Derived models come
  after the others (they are made from their dense model's saved model, which this may write first).
  Raises PieError when an export fails (after the others are done) or study.json holds no config.
  """
  _, states = study_states(study_dir)
  for status, what in (
      (UNFINISHED, "whose training is unfinished (rerun the launcher to finish them)"),
      (RUNNING, "held by a live process (being trained or exported)"),
  ):
    listed = [s for s in states if s.status == status]
    if listed:
      log(f"not exported: {len(listed)} model(s) {what}: " + "; ".join(f"{s.job.name} ({s.detail})" for s in listed))
  todo = [s for s in states if s.status == EXPORTABLE]
  if not todo:
    log(f"{study_dir}: no trained model is missing its predictions")
    return []
  log(f"exporting {len(todo)} trained model(s) of {study_dir} whose predictions are missing")
  failed = {}
  for derived in (False, True):
    tasks = [
        (s.job.name, _export_study_model, {"study_dir": study_dir, "name": s.job.name})
        for s in todo
        if (s.job.kind == "derive") == derived
    ]
    failed.update(run_tasks(tasks, num_workers, log))
  if failed:
    raise PieError(
        f"{study_dir}: {len(failed)} of {len(todo)} export(s) failed (the others are done; a rerun retries "
        "these):\n  " + "\n  ".join(f"{name}: {error}" for name, error in failed.items())
    )
  return [s.job.name for s in todo]


def _export_study_model(study_dir, name, log=print):
  """Exports one model of a study (a task of `run_tasks`: it runs in a worker process, so it takes names only)."""
  config = population.load_study_config(study_dir)
  job = next(j for j in population.jobs(config) if j.name == name)
  directory = population.job_dir(study_dir, job)
  local = _is_local(directory)
  if local and not population.claim(directory):
    log(f"{name}: held by another process; left to it")
    return
  try:
    if model_dir.is_finished(directory, name):  # finished by another process before our claim
      return
    cfg = population.job_config(config, job)
    if job.kind == "derive":
      from pie import ptq  # pylint: disable=g-import-not-at-top

      ptq.derive_ptq(cfg, os.path.join(study_dir, job.source), directory, log=log, job=job)
    else:
      from pie import training  # pylint: disable=g-import-not-at-top

      training.export_trained(cfg, directory, job=job, log=log)
  finally:
    if local:
      population.release(directory)


# ---------------------------------------------------------------------------------------------------------------------
# Worker processes.


def _print(message):
  print(message, flush=True)


def _call(function, kwargs, log=_print):
  """Runs one task; its error as one line, or None. One bad model must not stop the others: they are reported and
  the caller fails at the end."""
  try:
    function(log=log, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    return str(e) if isinstance(e, PieError) else f"{type(e).__name__}: {e}"
  return None


def _start_worker(threads):
  """A worker's TensorFlow: quiet, and its share of the cores (several workers must not oversubscribe them)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from pie import devices  # pylint: disable=g-import-not-at-top

  tf.get_logger().setLevel("ERROR")
  devices.set_threads(threads)


def run_tasks(tasks, num_workers=None, log=print, what="exported"):
  """Runs tasks, in this process or in worker processes, and logs each one done with the elapsed time and an ETA.

  Args:
    tasks: [(name, function, kwargs)]; the function is module-level (a worker process imports it) and takes `log`.
    num_workers: worker processes (default: one per core), at most one per task; with one, the tasks run here.
  Returns:
    {name: error} of the tasks that failed.
  """
  if not tasks:
    return {}
  workers = max(1, min(int(num_workers or os.cpu_count() or 1), len(tasks)))
  start, failed = time.time(), {}

  def done(count, name, error):
    if error:
      failed[name] = error
    elapsed = time.time() - start
    eta = elapsed / count * (len(tasks) - count)
    outcome = f" FAILED: {error}" if error else ""
    log(
        f"{what} {count}/{len(tasks)}: {name}{outcome}, elapsed {population.format_seconds(elapsed)}, "
        f"ETA {population.format_seconds(eta)}"
    )

  if workers == 1:
    for count, (name, function, kwargs) in enumerate(tasks, 1):
      done(count, name, _call(function, kwargs, log))
    return failed
  threads = max(1, (os.cpu_count() or 1) // workers)
  log(f"{len(tasks)} models on {workers} worker processes ({threads} thread(s) each)")
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(threads,)
  ) as pool:
    futures = {pool.submit(_call, function, kwargs): name for name, function, kwargs in tasks}
    for count, future in enumerate(concurrent.futures.as_completed(futures), 1):
      try:
        error = future.result()
      except concurrent.futures.process.BrokenProcessPool as e:
        error = f"its worker process died ({e})"
      done(count, futures[future], error)
  return failed


# ---------------------------------------------------------------------------------------------------------------------
# Runs trained outside a study.


@dataclasses.dataclass(frozen=True)
class Run:
  """One run trained outside pie: where it is, the model its predictions come from, and its declared Job."""

  path: str  # the matched directory (or Keras file)
  source: str  # the SavedModel directory, Keras file or checkpoint read
  kind: str  # "saved_model", "keras" or "checkpoint"
  job: variants.Job
  declared_by: str  # the pie_run.json, or the name the rule read
  epoch: Optional[int] = None  # the epochs done, for a checkpoint that records them (pie's training)


def declared_job(config, run_dir):
  """(Job, what declared it) of a run directory: its pie_run.json, else its name or its parent's (the name rule)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  spec_path = os.path.join(run_dir, RUN_FILE)
  if tf.io.gfile.exists(spec_path):
    try:
      spec = io_utils.read_json(spec_path)
    except ValueError as e:
      raise PieError(f"{spec_path}: not valid JSON ({e})", parameter="checkpoint_dirs") from None
    if not isinstance(spec, dict) or set(spec) - set(RUN_KEYS) or not {"sparsity", "seed"} <= set(spec):
      raise PieError(
          f"{spec_path}: expected an object with the keys sparsity, seed and (optionally) method, e.g. "
          f"{RUN_FILE_EXAMPLE}; got {spec!r}",
          parameter="checkpoint_dirs",
      )
    method, sparsity, seed = spec.get("method", variants.DEFAULT_METHOD), spec["sparsity"], spec["seed"]
    if not (
        isinstance(sparsity, (int, float))
        and not isinstance(sparsity, bool)
        and isinstance(seed, int)
        and not isinstance(seed, bool)
        and isinstance(method, str)
    ):
      raise PieError(
          f"{spec_path}: sparsity must be a number (a fraction: 0.9), seed an integer and method a string, e.g. "
          f"{RUN_FILE_EXAMPLE}; got {spec!r}",
          parameter="checkpoint_dirs",
      )
    declared_by = spec_path
  else:
    names = [os.path.basename(run_dir), os.path.basename(os.path.dirname(run_dir))]
    parsed = [(name, variants.parse_model_name(name)) for name in names if name]
    found = next(((name, p) for name, p in parsed if p is not None), None)
    if found is None:
      raise PieError(
          f"{run_dir}: no {RUN_FILE} beside the model and its name states no level and seed (e.g. "
          f"'run_sparsity90_seed3'); write {RUN_FILE} there, e.g. {RUN_FILE_EXAMPLE}",
          parameter="checkpoint_dirs",
      )
    (method, sparsity, seed), declared_by = found[1], f"the name {found[0]!r}"
  try:
    variants.effective_method(method, variants.check_sparsity(sparsity, field="sparsity"))
    job = variants.config_job(population.model_config(config, sparsity, seed, method))
  except PieError as e:
    raise PieError(f"{run_dir} (declared by {declared_by}): {e}", parameter="checkpoint_dirs") from None
  return job, declared_by


def _model_source(directory):
  """(kind, path) of the model in a run directory: a SavedModel, one Keras file, else a TF checkpoint."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if tf.io.gfile.exists(os.path.join(directory, "saved_model.pb")):
    return "saved_model", directory
  keras_files = sorted(f for suffix in KERAS_SUFFIXES for f in tf.io.gfile.glob(os.path.join(directory, "*" + suffix)))
  if len(keras_files) > 1:
    raise PieError(
        f"{directory}: several Keras files ({', '.join(os.path.basename(f) for f in keras_files)}): one model per run "
        "directory (or match the file itself)",
        parameter="checkpoint_dirs",
    )
  if keras_files:
    return "keras", keras_files[0]
  nested = tf.io.gfile.glob(os.path.join(directory, "*", "saved_model.pb"))
  if len(nested) == 1:
    return "saved_model", os.path.dirname(nested[0])
  checkpoint = model_dir.latest_checkpoint(directory)
  if checkpoint:
    return "checkpoint", checkpoint
  raise PieError(
      f"{directory}: no model there; a run directory holds a Keras SavedModel (saved_model.pb), one Keras file (.h5, "
      ".keras) or a TF checkpoint (its `checkpoint` file, there or in checkpoints/)",
      parameter="checkpoint_dirs",
  )


def read_run(config, path):
  """The `Run` of a matched path: a run directory, or a Keras file (its directory is then the run's)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if tf.io.gfile.isdir(path):
    run_dir, (kind, source) = path, _model_source(path)
  else:
    run_dir, kind, source = os.path.dirname(path), "keras", path
  job, declared_by = declared_job(config, run_dir)
  epoch = model_dir.checkpoint_epoch(source) if kind == "checkpoint" else None
  return Run(path=path, source=source, kind=kind, job=job, declared_by=declared_by, epoch=epoch)


def find_runs(config, patterns, log=print):
  """The runs matched by glob patterns (tf.io.gfile.glob): directories and Keras files; other files are skipped."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  matched = sorted({p.rstrip("/") for pattern in patterns for p in tf.io.gfile.glob(pattern)})
  paths = [p for p in matched if p.endswith(KERAS_SUFFIXES) or tf.io.gfile.isdir(p)]
  skipped = sorted(set(matched) - set(paths))
  if skipped:
    log(f"skipped {len(skipped)} matched file(s) that are neither run directories nor Keras files: {skipped[:3]}")
  if not paths:
    raise PieError(f"{', '.join(patterns)}: matches no run directory", parameter="checkpoint_dirs")
  runs, by_name = [], {}
  for path in paths:
    run = read_run(config, path)
    if run.job.name in by_name:
      raise PieError(
          f"{by_name[run.job.name].path} and {path} are both the run {run.job.name} (method {run.job.method}, "
          f"sparsity {run.job.sparsity:g}, seed {run.job.seed}); give each run its own seed",
          parameter="checkpoint_dirs",
      )
    by_name[run.job.name] = run
    runs.append(run)
  return runs


def _is_softmax(function):
  return getattr(function, "__name__", None) == "softmax"


def logits_model(model):
  """The model with its outputs taken before a final softmax: the export computes its probabilities from logits
  (pie's models end in logits; scripts often end in a softmax)."""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top

  last = model.layers[-1]
  if isinstance(last, keras.layers.Softmax) or (
      isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
  ):
    return keras.Model(model.inputs, model.layers[-2].output, name=model.name)
  if _is_softmax(getattr(last, "activation", None)):
    last.activation = keras.activations.linear  # this process's copy of the model; its weights are unchanged
  return model


def load_run_model(config, run, dataset):
  """(finalized Keras model, the layers its method compresses) of a run: a checkpoint is restored into the config's
  model (`pie.training.restore_checkpoint`); a saved model is loaded (pruning wrappers, if saved with them,
  stripped)."""
  if run.kind == "checkpoint":
    from pie import training  # pylint: disable=g-import-not-at-top

    model, built = training.restore_checkpoint(config, run.job, dataset, run.source)
    return model, built.scope_layers
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  from pie import pruning  # pylint: disable=g-import-not-at-top

  with tfmot.sparsity.keras.prune_scope():
    model = model_dir.load_model(run.source)
  if any(hasattr(layer, "pruning_vars") for layer in model.layers):
    model = pruning.strip_pruning(model)
  return model, sorted(variants.layers_in_scope(model, config.pruning.get("scope", "all_but_classifier")))


def _export_run(config, run, predictions_dir, log=print):
  """Exports one run into `predictions_dir` (a task of `run_tasks`; `config` is a dict: it crosses processes)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from pie import data as data_lib  # pylint: disable=g-import-not-at-top
  from pie import training  # pylint: disable=g-import-not-at-top

  config = population.job_config(ml_collections.ConfigDict(config), run.job)
  name = run.job.name
  path = os.path.join(predictions_dir, f"{name}.tfrecord")
  if model_dir.is_finished(predictions_dir, name) and predictions_lib.read_metadata(path).get("source") == run.source:
    log(f"{name}: already exported from {run.source}")
    return
  training.seed_and_determinism(config, run.job)
  dataset = data_lib.load_dataset(config.data)
  info = dataset.info
  model, scope_layers = load_run_model(config, run, dataset)
  if int(model.output_shape[-1]) != info.num_classes:
    raise PieError(
        f"{run.source}: the model outputs {model.output_shape[-1]} classes, {info.name} has {info.num_classes}: "
        "not a model of this config's dataset",
        parameter="config",
    )
  variant = variants.get_variant(run.job.method)
  report = variants.measure_sparsity(model, scope_layers)
  compression = (
      model_dir.compression_fields(variant.size_report(model))
      if config.get("size_report", False)
      else {"bits_per_weight": None, "compressed_bytes": None}
  )
  extra = {"source": run.source, "source_format": run.kind, "declared_by": run.declared_by, **compression}
  if run.kind != "checkpoint":
    extra["model"] = model.name  # a saved model is its own, not necessarily the config's
  if run.epoch is not None:
    extra["epoch"] = run.epoch
  metadata = model_dir.prediction_metadata(config, info, report, extra, job=run.job)
  log(f"{name}: exporting {run.source} ({run.kind}), measured sparsity {report['overall']:.4f}")
  slices = dataset.eval_slices(config.get("slice_features"))  # config.slice_features
  arrays = training.predict_deployed(variant, logits_model(model), dataset, config, log)
  predictions_lib.write_arrays(path, arrays, metadata, slices)


def export_runs(config, patterns, out_dir, num_workers=None, strict=True, log=print):
  """Exports the runs matched by `patterns` into `<out_dir>/predictions`; returns the prediction files to analyse.

  A run whose checkpoint records fewer epochs than config.num_epochs is not exported (training unfinished); a run
  whose measured sparsity contradicts its declared level (`variants.sparsity_problem`) is exported. Both are
  reported: as a PieError when `strict` (after the exports, so a rerun finds them done), else as a warning, and the
  analysis goes on without the unfinished runs and with the others as declared.
  """
  patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  runs = find_runs(config, patterns, log)
  log(f"{len(runs)} run(s): " + ", ".join(f"{r.job.name} ({r.kind}, declared by {r.declared_by})" for r in runs))
  unfinished = [r for r in runs if r.epoch is not None and r.epoch < config.num_epochs]
  ready = [r for r in runs if r not in unfinished]
  predictions_dir = os.path.join(out_dir, PREDICTIONS_DIR)
  config_dict = model_dir.config_to_dict(config)
  tasks = [
      (r.job.name, _export_run, {"config": config_dict, "run": r, "predictions_dir": predictions_dir}) for r in ready
  ]
  failed = run_tasks(tasks, num_workers, log)
  if failed:
    raise PieError(
        f"{len(failed)} of {len(tasks)} run(s) could not be exported:\n  "
        + "\n  ".join(f"{name}: {error}" for name, error in failed.items()),
        parameter="checkpoint_dirs",
    )
  problems = [
      f"{r.path}: training unfinished (checkpoint {r.source} at epoch {r.epoch} of config.num_epochs="
      f"{config.num_epochs}); not exported: finish its training (or set config.num_epochs to the epochs it was to run)"
      for r in unfinished
  ]
  files = []
  for run in ready:
    path = os.path.join(predictions_dir, f"{run.job.name}.tfrecord")
    measured = predictions_lib.read_metadata(path)["measured_sparsity"]
    problem = variants.sparsity_problem(run.job.method, measured, run.job.sparsity)
    if problem:
      problems.append(
          f"{run.path}: declared at level {run.job.sparsity:g} by {run.declared_by}, but its {problem}; correct "
          f"the declaration ({RUN_FILE} or the directory's name), or check how the run was pruned"
      )
    files.append(path)
  if problems:
    text = f"{len(problems)} problem(s) with the runs:\n  " + "\n  ".join(problems)
    if strict:
      raise PieError(
          text + "\nvalidate_first=False analyses the runs as declared, without the unfinished ones",
          parameter="validate_first",
      )
    log(f"warning: {text}")
  if not files:
    raise PieError(f"{', '.join(patterns)}: no run is ready to analyse", parameter="checkpoint_dirs")
  return files
