"""Checking a study directory before trusting it: every model present, complete and consistent with the others.

`validate_study(study_dir)` reads every prediction file of a study and returns a `ValidationReport`: one row per
model (status, target and measured sparsity, top-1) and every problem found, each naming the model or file:
  - a model the launcher's study.json expects is missing, still being trained, or its export is incomplete (a
    TFRecord without its metadata, or of another size than the metadata records); each with its remedy, from what its
    folder holds (`pie.saved_exports.model_state`): a model trained but not exported (a saved model or a final
    checkpoint) is exported without training by the analysis with --export_missing; one whose training is
    unfinished, or never started, needs the launcher;
  - a prediction file is unreadable or breaks the schema (truncated, corrupt, bad ids, bad metadata);
  - models disagree on the dataset, split, classes, example count or labels;
  - a model whose method promises its sparsity (`pie.variants`, `checks_sparsity`) measures more than the tolerance
    (0.5 percentage points) from its target;
  - models were trained with different configs (config hashes differ, or differ from study.json's), unless allowed;
  - a population is missing or has fewer than two models (the analysis needs a dense and a pruned population).
Nothing is written or repaired: rerunning the launcher redoes unfinished models (`analysis.analyze --export_missing`
exports the trained ones), and `report.ok` says whether the analysis can go ahead.
"""

import dataclasses
import os
from typing import List, Optional

import numpy as np

from pie import io_utils
from pie import names as names_lib
from pie import population
from pie import predictions as predictions_lib
from pie import saved_exports
from pie import study as study_lib
from pie import variants
from pie.errors import PieError

# Fields that every model of a study must share (the analysis joins models by example id on one eval split).
SHARED_FIELDS = ("dataset", "split", "num_classes", "num_examples", "class_names")

OK = "ok"
MISSING = "missing"  # expected by study.json, nothing trained
UNEXPORTED = "unexported"  # expected by study.json, trained (saved model or final checkpoint), not exported
UNFINISHED = "unfinished"  # expected by study.json, its training stopped before its last epoch
RUNNING = "running"  # not exported yet, claimed by a live process
INCOMPLETE = "incomplete"  # export started but not finished (no metadata, or the TFRecord's size is wrong)
CORRUPT = "corrupt"  # finished but unreadable or outside the schema
INCONSISTENT = "inconsistent"  # readable, but disagrees with the study (dataset, labels, sparsity, config)
UNEXPECTED = "unexpected"  # readable, but not a model of study.json's grid

RELAUNCH_REMEDY = "rerun the launcher"


def export_remedy(path):
  """The remedy for a model trained but not exported (`path`: its prediction file): the analysis exports it, without
  training, from its saved model or final checkpoint."""
  study_dir = os.path.dirname(os.path.dirname(path))
  return f"export it without training: python -m analysis.analyze --study_dir={study_dir} --export_missing"


@dataclasses.dataclass
class ModelCheck:
  """The verdict on one model of a study."""

  name: str
  path: str  # its .tfrecord (which may not exist)
  status: str
  target_sparsity: Optional[float] = None
  measured_sparsity: Optional[float] = None
  top1: Optional[float] = None
  config_hash: Optional[str] = None
  method: Optional[str] = None  # compression method (dense for the dense population)
  problems: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ValidationReport:
  """The result of `validate_study`. `problems` holds every problem, each a sentence naming its model or file."""

  study_dir: str
  expected: Optional[List[str]]  # model names from study.json; None without one
  models: List[ModelCheck]
  problems: List[str]

  @property
  def ok(self):
    return not self.problems

  def table(self):
    """One line per model: name, status, target / measured sparsity, top-1; then the problems."""

    def num(value, width, digits):
      return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"

    width = max([len("model")] + [len(m.name) for m in self.models])
    lines = [f"{'model':<{width}}  {'status':<12}  {'target':>6}  {'measured':>8}  {'top-1':>6}"]
    for m in self.models:
      lines.append(
          f"{m.name:<{width}}  {m.status:<12}  {num(m.target_sparsity, 6, 3)}  "
          f"{num(m.measured_sparsity, 8, 4)}  {num(m.top1, 6, 4)}"
      )
    n_ok = sum(m.status == OK for m in self.models)
    expected = f" of {len(self.expected)} expected" if self.expected is not None else ""
    lines.append(f"{n_ok} model(s) ok{expected}; {len(self.problems)} problem(s)")
    lines += [f"problem: {p}" for p in self.problems]
    return "\n".join(lines)


def _model_name_of(path):
  return os.path.basename(path)[: -len(".tfrecord")]


def _read_study_file(study_dir, problems):
  path = os.path.join(study_dir, population.STUDY_FILE)
  if not io_utils.exists(path):
    return None, None
  try:
    study = io_utils.read_json(path)
    models = list(study["models"])
    config_hash = study.get("config_hash")
  except (ValueError, KeyError, TypeError) as e:
    problems.append(f"{path}: unreadable study file ({type(e).__name__}: {e}); the expected models are unknown")
    return None, None
  for i, name in enumerate(models):
    # Each name becomes <study_dir>/<name>/<name>.tfrecord: one folder name, never a path out of the study.
    problem = names_lib.component_problem(name)
    if problem:
      problems.append(f"{path}: models[{i}] {problem}; the expected models are unknown (was the file edited?)")
      return None, None
  return models, config_hash


def _unexported(name, path, state):
  """The ModelCheck of a model with no file of its export: being trained, trained, half-trained, or not trained."""
  if state is not None and state.status == saved_exports.RUNNING:
    return ModelCheck(name, path, RUNNING, problems=[f"{name}: being trained ({state.detail})"])
  if state is None:  # not in study.json's grid, or no config there to tell
    owner = population.claim_owner(os.path.dirname(path))
    if owner:
      return ModelCheck(name, path, RUNNING, problems=[f"{name}: being trained (claimed by {owner})"])
  if state is not None and state.status == saved_exports.EXPORTABLE:
    problem = f"{name}: trained ({state.detail}) but not exported (no {path}); {export_remedy(path)}"
    return ModelCheck(name, path, UNEXPORTED, problems=[problem])
  if state is not None and state.status == saved_exports.UNFINISHED:
    problem = f"{name}: training unfinished ({state.detail}); {RELAUNCH_REMEDY} to finish it"
    return ModelCheck(name, path, UNFINISHED, problems=[problem])
  return ModelCheck(name, path, MISSING, problems=[f"{name}: not trained (no {path}); {RELAUNCH_REMEDY}"])


def _redo_remedy(path, state):
  """How to redo an unfinished export: the launcher; or, when the model is trained, the analysis's export too."""
  if state is not None and state.status == saved_exports.EXPORTABLE:
    return f"{RELAUNCH_REMEDY} to redo it, or {export_remedy(path)}"
  return f"{RELAUNCH_REMEDY} to redo it"


def _check_model(name, path, read_records=True, state_of=lambda name: None):
  """Checks one model's export; returns its ModelCheck and, when its records were read, its Predictions.

  `state_of(name)` is the model's `saved_exports.ModelState` (or None), asked only for a model without a finished
  export, to name the remedy.
  """
  check = ModelCheck(name=name, path=path, status=OK)
  has_record = io_utils.exists(path)
  has_metadata = io_utils.exists(predictions_lib.metadata_path(path))
  if not has_record and not has_metadata:
    return _unexported(name, path, state_of(name)), None
  if not has_metadata:
    check.status = INCOMPLETE
    check.problems.append(
        f"{path}: export unfinished (no metadata {predictions_lib.metadata_path(path)}); "
        f"{_redo_remedy(path, state_of(name))}"
    )
    return check, None
  try:
    metadata = predictions_lib.read_metadata(path)
  except PieError as e:
    check.status = CORRUPT
    check.problems.append(str(e))
    return check, None
  check.target_sparsity = float(metadata["target_sparsity"])
  check.measured_sparsity = float(metadata["measured_sparsity"])
  check.config_hash = metadata["config_hash"]
  check.method = variants.recorded_method(metadata.get("method"), check.target_sparsity == 0)
  if not has_record:
    check.status = INCOMPLETE
    check.problems.append(f"{path}: missing, but its metadata exists; {_redo_remedy(path, state_of(name))}")
    return check, None
  size = io_utils.file_size(path)
  if "file_bytes" in metadata and size != metadata["file_bytes"]:
    check.status = INCOMPLETE
    check.problems.append(
        f"{path}: {size} bytes, its metadata records {metadata['file_bytes']} (truncated or "
        f"overwritten); {_redo_remedy(path, state_of(name))}"
    )
    return check, None
  if metadata.get("name", name) != name:
    check.status = INCONSISTENT
    check.problems.append(
        f"{path}: its metadata names the model {names_lib.shown(metadata['name'])}: a file copied or renamed?"
    )
  if not read_records:
    return check, None
  try:
    pred = predictions_lib.read_predictions(path)
  except PieError as e:
    check.status = CORRUPT
    check.problems.append(str(e))
    return check, None
  check.top1 = float(np.mean(pred.top1 == pred.labels)) if len(pred.labels) else None
  return check, pred


def validate_study(
    study_dir, sparsity_tolerance=variants.SPARSITY_TOLERANCE, allow_mixed_configs=False, read_records=True
):
  """Checks every model of a study directory; returns a ValidationReport (see the module docstring).

  Args:
    study_dir: a directory written by the population launcher (or any directory of prediction files).
    sparsity_tolerance: largest accepted |measured - target| sparsity, as a fraction (0.005 = 0.5 points).
    allow_mixed_configs: accept models whose config hashes differ.
    read_records: also read every record (schema, ids, labels, NaN). The analysis passes False: it reads and
      checks the records itself while loading, so the files are read once; presence, completeness, sparsity and
      config hashes are still checked here from the metadata.
  Raises:
    PieError: if `study_dir` is not a directory or the tolerance is negative.
  """
  if sparsity_tolerance < 0:
    raise PieError(f"sparsity tolerance must be >= 0, got {sparsity_tolerance}", parameter="sparsity_tolerance")
  problems = []
  expected, study_hash = _read_study_file(study_dir, problems)
  names, found = _model_names(study_dir, expected)
  if not names:
    problems.append(f"{study_dir}: no prediction files and no {population.STUDY_FILE}: not a study directory")

  checks, readable = [], {}
  state_of = saved_exports.state_lookup(study_dir) if expected is not None else (lambda name: None)
  for name in names:
    path = found.get(name, os.path.join(study_dir, name, f"{name}.tfrecord"))
    check, pred = _check_model(name, path, read_records, state_of)
    if expected is not None and name not in expected and check.status == OK:
      check.status = UNEXPECTED
      check.problems.append(
          f"{path}: not a model of {population.STUDY_FILE}'s grid (left from another study?); "
          "the analysis would include it"
      )
    if pred is not None:
      readable[name] = pred
    checks.append(check)
  by_name = {c.name: c for c in checks}
  for name, status, problem in (
      _agreement_problems(readable)
      + _sparsity_problems(checks, sparsity_tolerance)
      + ([] if allow_mixed_configs else _config_problems(checks, study_hash))
  ):
    check = by_name[name]
    if check.status == OK:
      check.status = status
    check.problems.append(problem)

  for check in checks:
    problems.extend(check.problems)
  problems.extend(_population_problems(study_dir, [c for c in checks if c.status == OK]))
  return ValidationReport(study_dir=study_dir, expected=expected, models=checks, problems=problems)


def _model_names(study_dir, expected):
  """The models to check, study.json's first, and {name: prediction file} of those with any file."""
  found = {_model_name_of(p): p for p in study_lib.find_prediction_files(study_dir)}
  # Exports still being written (or abandoned): `<name>/<name>.json` without its TFRecord.
  for meta in io_utils.glob(os.path.join(study_dir, "*", "*.json")):
    name = os.path.basename(meta)[: -len(".json")]
    if name == os.path.basename(os.path.dirname(meta)) and name not in found:
      found[name] = meta[: -len(".json")] + ".tfrecord"
  names = list(expected) if expected is not None else []
  names += sorted(n for n in found if n not in set(names))
  return names, found


def _agreement_problems(readable):
  """(name, status, problem) of models that disagree with the first readable one: dataset, split, labels."""
  out = []
  reference = next(iter(readable.items()), None)
  if reference is None:
    return out
  _, ref = reference
  for name, pred in list(readable.items())[1:]:
    for field in SHARED_FIELDS:
      if pred.metadata[field] != ref.metadata[field]:
        out.append(
            (
                name,
                INCONSISTENT,
                f"{pred.path}: {field} is {pred.metadata[field]!r}, {ref.path} has " f"{ref.metadata[field]!r}",
            )
        )
        break
    else:
      if not np.array_equal(pred.labels, ref.labels):
        out.append(
            (name, INCONSISTENT, f"{pred.path}: labels differ from those of {ref.path} for the same example " "ids")
        )
  return out


def _sparsity_problems(checks, tolerance):
  """Models of a method that promises an exact sparsity (`Variant.checks_sparsity`), off target as in training."""
  out = []
  for check in checks:
    problem = (
        variants.sparsity_problem(check.method, check.measured_sparsity, check.target_sparsity, tolerance)
        if check.measured_sparsity is not None
        else None
    )
    if problem:
      out.append((check.name, INCONSISTENT, f"{check.path}: {problem}"))
  return out


def _config_problems(checks, study_hash):
  """Models trained with another config than study.json's (or, without it, than the first model's)."""
  hashed = [c for c in checks if c.config_hash is not None]
  if study_hash is not None:
    reference, where = study_hash, f"{study_hash} in {population.STUDY_FILE}"
  elif len({c.config_hash for c in hashed}) > 1:
    reference, where = hashed[0].config_hash, f"{hashed[0].config_hash} of {hashed[0].path}"
  else:
    return []
  return [
      (
          c.name,
          INCONSISTENT,
          f"{c.path}: config hash {c.config_hash} differs from {where} (trained with other "
          "settings; allow_mixed_configs=True accepts them)",
      )
      for c in hashed
      if c.config_hash != reference
  ]


def _population_problems(study_dir, good):
  """The analysis needs a dense population, and every population at least two usable models (a study of dense models
  only is analysed for its noise floor)."""
  populations = {}
  for check in good:
    populations.setdefault((check.method, round(check.target_sparsity, 6)), []).append(check.name)
  problems = []
  if good and not any(variants.is_dense(method) for method, _ in populations):
    problems.append(f"{study_dir}: no usable dense model (target sparsity 0)")
  for (method, sparsity), names in sorted(populations.items()):
    if len(names) < 2:
      what = f"level {sparsity:g}" if variants.named_by_level(method) else f"{method} at level {sparsity:g}"
      problems.append(
          f"{study_dir}: {what} has {len(names)} usable model ({names[0]}); a population needs at " "least two"
      )
  return problems


def require_valid(
    study_dir, allow_mixed_configs=False, sparsity_tolerance=variants.SPARSITY_TOLERANCE, read_records=True, log=print
):
  """Validates a study and raises a PieError listing every problem; returns the report when there is none."""
  report = validate_study(
      study_dir,
      sparsity_tolerance=sparsity_tolerance,
      allow_mixed_configs=allow_mixed_configs,
      read_records=read_records,
  )
  if not report.ok:
    listed = "\n  ".join(report.problems)
    # A study whose only problems are trained models without predictions is one flag away from its analysis.
    exportable = all(m.status in (OK, UNEXPORTED) for m in report.models) and any(
        m.status == UNEXPORTED for m in report.models
    )
    raise PieError(
        f"{study_dir}: {len(report.problems)} problem(s) found by validation:\n  {listed}",
        parameter="export_missing" if exportable else None,
    )
  log(f"validated {len(report.models)} models of {study_dir}")
  return report
