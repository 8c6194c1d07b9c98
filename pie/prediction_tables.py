"""Per-example predictions from any framework (PyTorch, JAX, an LLM evaluation), judged by pie's statistics.

The table format (README "Predictions from other frameworks"): a CSV (`.csv`, `.csv.gz`), JSON Lines (`.jsonl`,
`.jsonl.gz`) or Parquet (`.parquet`, through pyarrow) file with one row per example per model:

  example_id   the example's id: any integer or text, unique per model (per task, with a `task` column)
  label        its true class: an integer or a text (answer letters, class names)
  prediction   the model's top-1 class, in the same terms
  correct      optional: right or wrong (true/false, 1/0) when a metric decides rather than label equality; an example
               with `correct` and no label or prediction is scored by correctness alone (generation, code)
  probability  optional (or `confidence`): the probability the model gives its prediction, in [0, 1]
  task         optional: the task the example belongs to; examples are then (task, example_id), and the task is a
               group column
  <group>      any columns named by `group_by` (subject, language, any slice): each becomes a group of examples
  model        optional: the model's name, for one file holding several models (default: the file's stem)
  method, sparsity, level, seed
               optional: the model's population (a method name; `sparsity` a fraction in [0, 1), `level` a name such
               as `int4`, joined to the method as `<method>_<level>`) and its seed; constant per model

The model fields (and `dataset`, `class_names`) may instead come from a sidecar JSON beside the table, named like it
with `.json` (`int4.parquet` -> `int4.json`). Labels and predictions are read as text (`3` and `"3"` are one class),
so every model's are mapped to one class list: `class_names` of a sidecar when given (each value a name of it or an
index into it), else integers 0..max when every value is a non-negative integer (the class id is the integer), else
the values sorted as text. A task is classified (its examples have class ids) when every model gives a label and a
prediction for every one of its examples; its `correct`, when given, must then equal prediction == label. Otherwise its
examples are scored by correctness alone: label -1 in the outputs, in no class, in top-1 and in every group.

lm-evaluation-harness `--log_samples` run folders are read as one model each (pie.lm_eval_samples).

What is checked, each problem one PieError naming the file: a missing column, a duplicate id within a model, models
that score different examples, one example with different labels (or group values) in two models, a group column
missing in one model, values that are not what their column holds.

`read_prediction_table` reads one file or run folder into a checked DataFrame; `load_prediction_tables` aligns
several into a `PredictionTables` (one model's arrays per model, over one example order); `compare_tables` compares a
reference with candidates (pie.comparison: per class, per group, the gate) and `run_analysis` analyses populations
of tables as a study (`PredictionTables.study` builds the `pie.study.Study` the analysis takes).
"""

import dataclasses
import glob
import gzip
import hashlib
import io
import json
import os

import numpy as np
import pandas as pd

from pie import comparison
from pie import comparison_inputs
from pie import lm_eval_samples
from pie import names as names_lib
from pie import outputs
from pie import variants
from pie.errors import PieError

# The columns of the format.
EXAMPLE_ID, LABEL, PREDICTION, CORRECT = "example_id", "label", "prediction", "correct"
PROBABILITY, CONFIDENCE, TASK = "probability", "confidence", "task"
MODEL, METHOD, SPARSITY, LEVEL, SEED = "model", "method", "sparsity", "level", "seed"
MODEL_FIELDS = (MODEL, METHOD, SPARSITY, LEVEL, SEED)
# The columns of a table as read (`read_prediction_table`), in order; the group columns follow.
COLUMNS = MODEL_FIELDS + (TASK, EXAMPLE_ID, LABEL, PREDICTION, CORRECT, PROBABILITY)
RESERVED = frozenset(COLUMNS + (CONFIDENCE,))
SIDECAR_FIELDS = MODEL_FIELDS + ("dataset", "class_names")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")
# Input formats: `auto` tells them by the path (a table's suffix, an lm-eval run folder or samples file); `model`
# is what pie.compare takes (Keras, TFLite, pie's prediction files).
AUTO, MODEL_INPUT, TABLE, LM_EVAL = "auto", "model", "table", "lm_eval"
FORMATS = (AUTO, MODEL_INPUT, TABLE, LM_EVAL)
SELECTOR = "#"  # `all.parquet#int4`: the model int4 of a file holding several
MISSING_VALUE = lm_eval_samples.MISSING_VALUE
# The study of correctness-only examples (PredictionTables.study): they are one class, and a model's answer is that
# class when right and the other when wrong, so that modal answers are modal correctness.
CORRECT_CLASS, WRONG_CLASS = "[correct answer]", "[wrong answer]"
_TRUE = frozenset(("true", "1", "1.0", "yes"))
_FALSE = frozenset(("false", "0", "0.0", "no"))
_SHOWN = 5


# ---------------------------------------------------------------------------------------------------------------------
# Files: local, or any tf.io.gfile filesystem (gs://) when TensorFlow is there to read it.


def _remote(path):
  return "://" in path


def _open_binary(path):
  if _remote(path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return tf.io.gfile.GFile(path, "rb")
  return open(path, "rb")


def _glob(pattern):
  if _remote(pattern):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return sorted(tf.io.gfile.glob(pattern))
  return sorted(glob.glob(pattern))


def _exists(path):
  if _remote(path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return tf.io.gfile.exists(path)
  return os.path.exists(path)


def table_suffix(path):
  """The table suffix `path` ends with, or None."""
  lower = path.lower()
  return next((s for s in sorted(TABLE_SUFFIXES, key=len, reverse=True) if lower.endswith(s)), None)


def split_selection(source):
  """(path, model name or None) of `path#model`."""
  source = os.fspath(source)
  if SELECTOR in source and table_suffix(source.rsplit(SELECTOR, 1)[0]):
    path, model = source.rsplit(SELECTOR, 1)
    return path, model or None
  return source, None


def input_format(format_name, path, parameter="format"):
  """The format of an input: `format_name` unless it is `auto`, which reads it from the path: a table's suffix is a
  table, an lm-eval run folder or samples file (samples_<task>_<date>.jsonl) lm-eval, anything else a model."""
  if format_name not in FORMATS:
    raise PieError(f"format must be one of {', '.join(FORMATS)}, got {format_name!r}", parameter=parameter)
  if format_name != AUTO:
    return format_name
  path, _ = split_selection(path)
  if lm_eval_samples.is_samples_file(path) or lm_eval_samples.is_run_folder(path):
    return LM_EVAL
  return TABLE if table_suffix(path) else MODEL_INPUT


# ---------------------------------------------------------------------------------------------------------------------
# One file or run folder.


def read_prediction_table(
    path, group_by=(), *, format=AUTO, name=None, lm_eval_metric=None, lm_eval_filter=None, log=print
):  # pylint: disable=redefined-builtin
  """One prediction table (or lm-eval run folder), read and checked: a DataFrame with one row per model per example.

  Columns: `COLUMNS` (model, method, sparsity, level, seed, task, example_id, label, prediction, correct,
  probability; ids, labels, predictions, tasks and group values as text, `correct` derived from label equality where
  the file does not give it, `task` "" for a file without tasks), then the group columns named by `group_by` (the
  task is always one; `task` in group_by adds nothing). `attrs` holds the file (`source`), its format (`kind`), and
  the sidecar's `dataset` and `class_names` (None without).

  Args:
    path: a .csv, .csv.gz, .jsonl, .jsonl.gz or .parquet file, an lm-eval run folder or one of its samples files.
    group_by: names of group columns (for lm-eval: fields of each sample's `doc`).
    format: `auto` (from the path), `table` or `lm_eval`.
    name: the model's name, for a file of one model (default: its `model` column or sidecar, else the file's stem;
      an lm-eval run: the folder's name).
    lm_eval_metric, lm_eval_filter: for lm-eval samples, the metric that says right or wrong and the filter whose
      answers are read (pie.lm_eval_samples).
  """
  path = os.fspath(path)
  group_by = check_group_by(group_by)
  kind = input_format(format, path)
  if kind == MODEL_INPUT:
    raise PieError(
        f"{path}: not a prediction table ({', '.join(TABLE_SUFFIXES)}) nor an lm-eval run folder", parameter="format"
    )
  if kind == LM_EVAL:
    frame = _read_lm_eval(path, group_by, name, lm_eval_metric, lm_eval_filter, log)
  else:
    sidecar = _read_sidecar(path)
    frame = _normalized(_read_file(path), path, sidecar, group_by, name)
    frame.attrs.update(dataset=sidecar.get("dataset"), class_names=sidecar.get("class_names"))
  frame.attrs.update(source=path, kind=kind)
  return frame


def check_group_by(group_by):
  """The group column names, checked: text, not a column of the format (the task is already a group)."""
  if isinstance(group_by, str):
    group_by = [g for g in group_by.split(",") if g]
  out = []
  for name in group_by or ():
    names_lib.check_text(name, "group_by:", parameter="group_by")
    if name in RESERVED and name != TASK:
      raise PieError(f"group_by: {name!r} is a column of the table format, not a group column", parameter="group_by")
    if name != TASK and name not in out:
      out.append(name)
  return tuple(out)


def _read_file(path):
  """The raw table of a file (CSV cells as text; JSONL and Parquet values as stored)."""
  if not _exists(path):
    raise PieError(f"{path}: no such file")
  suffix = table_suffix(path)
  try:
    with _open_binary(path) as f:
      data = f.read()
    if suffix.endswith(".gz"):
      data = gzip.decompress(data)
    if suffix.startswith(".csv"):
      return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    if suffix.startswith(".jsonl"):
      return pd.DataFrame.from_records(_json_lines(data, path))
    return _read_parquet(data, path)
  except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
    if isinstance(e, PieError):
      raise
    raise PieError(f"{path}: cannot be read as a {suffix} table ({_first_line(e)})") from None


def _json_lines(data, path):
  records = []
  for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError as e:
      raise PieError(f"{path}: line {number} is not JSON ({e})") from None
    if not isinstance(record, dict):
      raise PieError(f"{path}: line {number} is not a JSON object (one object per example)")
    records.append(record)
  return records


def _read_parquet(data, path):
  try:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise PieError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
  return pq.read_table(io.BytesIO(data)).to_pandas()


def _first_line(error):
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def sidecar_path(path):
  """The sidecar JSON of a table: its path with the table suffix replaced by .json."""
  return path[: len(path) - len(table_suffix(path))] + ".json"


def _read_sidecar(path):
  side = sidecar_path(path)
  if not _exists(side):
    return {}
  try:
    with _open_binary(side) as f:
      spec = json.loads(f.read().decode("utf-8"))
  except (OSError, ValueError, UnicodeDecodeError) as e:
    raise PieError(f"{side}: not readable JSON ({_first_line(e)})") from None
  return _checked_declaration(spec, side)


def _checked_declaration(spec, where):
  """A sidecar's or pie_run.json's fields, checked: only SIDECAR_FIELDS."""
  if not isinstance(spec, dict):
    raise PieError(f'{where}: must hold a JSON object, e.g. {{"method": "gptq", "level": "int4", "seed": 0}}')
  unknown = sorted(set(spec) - set(SIDECAR_FIELDS))
  if unknown:
    raise PieError(f"{where}: unknown fields {unknown} (it may hold {', '.join(SIDECAR_FIELDS)})")
  names = spec.get("class_names")
  if names is not None and (not isinstance(names, list) or not names):
    raise PieError(f"{where}: class_names must be a non-empty list of names")
  return spec


def _text(value):
  """A cell as text (integers without a decimal point, so that 3, 3.0 and "3" are one value), None when missing."""
  if value is None or value is pd.NA:
    return None
  if isinstance(value, (bool, np.bool_)):
    return "true" if value else "false"
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  if isinstance(value, (float, np.floating)):
    if np.isnan(value):
      return None
    return str(int(value)) if float(value).is_integer() else repr(float(value))
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if isinstance(value, str):
    return value
  return json.dumps(value.tolist() if hasattr(value, "tolist") else value, default=str)


def _texts(frame, column):
  return [_text(v) for v in frame[column].tolist()] if column in frame.columns else [None] * len(frame)


def _flag(value):
  """True, False, or None (missing) for a `correct` cell; a ValueError for anything else."""
  text = _text(value)
  if text is None:
    return None
  lowered = text.strip().lower()
  if lowered in _TRUE:
    return True
  if lowered in _FALSE:
    return False
  raise ValueError(text)


def _normalized(frame, path, sidecar, group_by, name):
  """The raw table of a file as read_prediction_table's columns, checked."""
  frame = frame.reset_index(drop=True)  # rows by position (a Parquet file may store any index)
  columns = set(frame.columns)
  if EXAMPLE_ID not in columns:
    raise PieError(f"{path}: no {EXAMPLE_ID} column (its columns: {', '.join(map(str, frame.columns))})")
  if CORRECT not in columns and not {LABEL, PREDICTION} <= columns:
    raise PieError(
        f"{path}: needs {LABEL} and {PREDICTION} columns, or a {CORRECT} column (examples scored by a metric)"
    )
  if PROBABILITY in columns and CONFIDENCE in columns:
    raise PieError(f"{path}: has both {PROBABILITY} and {CONFIDENCE}: give one (they mean the same)")
  for group in group_by:
    if group not in columns:
      raise PieError(
          f"{path}: no group column {group!r} (group_by names it; every model needs it): its columns are "
          f"{', '.join(map(str, frame.columns))}",
          parameter="group_by",
      )
  ids = _texts(frame, EXAMPLE_ID)
  if any(i is None for i in ids):
    raise PieError(f"{path}: the {EXAMPLE_ID} of row {ids.index(None) + 1} is empty: every example needs its id")
  tasks = _texts(frame, TASK)
  labels, predictions = _texts(frame, LABEL), _texts(frame, PREDICTION)
  # Object columns keep None as None (pandas' text columns would turn it into NaN).
  out = pd.DataFrame(
      {
          TASK: _objects(["" if t is None else t for t in tasks]),
          EXAMPLE_ID: _objects(ids),
          LABEL: _objects(labels),
          PREDICTION: _objects(predictions),
          CORRECT: _correct_column(frame, tasks, ids, labels, predictions, path),
          PROBABILITY: _probabilities(frame, path),
      }
  )
  for group in group_by:
    out[group] = _objects([MISSING_VALUE if v is None else v for v in _texts(frame, group)])
  out = _with_model_fields(out, frame, sidecar, path, name)
  _check_unique_ids(out, path)
  return out[list(COLUMNS) + list(group_by)]


def _objects(values):
  return pd.Series(values, dtype=object)


def _correct_column(frame, tasks, ids, labels, predictions, path):
  """`correct` as booleans: the file's where given, else prediction == label; a PieError for a row with neither, or
  whose `correct` contradicts its label and prediction."""
  given = [None] * len(frame)
  if CORRECT in frame.columns:
    for i, value in enumerate(frame[CORRECT].tolist()):
      try:
        given[i] = _flag(value)
      except ValueError:
        raise PieError(
            f"{path}: {CORRECT} of {EXAMPLE_ID} {_key_text(tasks[i], ids[i])} is {value!r}: give true or false (or 1 "
            "or 0)"
        ) from None
  result = []
  for task, example_id, label, prediction, correct in zip(tasks, ids, labels, predictions, given):
    equal = None if label is None or prediction is None else label == prediction
    if correct is None and equal is None:
      raise PieError(
          f"{path}: {EXAMPLE_ID} {_key_text(task, example_id)} has no {CORRECT} value, and no {LABEL} and "
          f"{PREDICTION} to compare"
      )
    if correct is not None and equal is not None and correct != equal:
      raise PieError(
          f"{path}: {EXAMPLE_ID} {_key_text(task, example_id)}: {CORRECT} is {str(correct).lower()} but its "
          f"{PREDICTION} {'equals' if equal else 'differs from'} its {LABEL}; leave {LABEL} or {PREDICTION} empty "
          "where a metric decides (the prediction is a class, compared with the label)"
      )
    result.append(equal if correct is None else correct)
  return np.array(result, bool)


def _probabilities(frame, path):
  column = PROBABILITY if PROBABILITY in frame.columns else CONFIDENCE if CONFIDENCE in frame.columns else None
  if column is None:
    return np.full(len(frame), np.nan)
  values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
  bad = np.flatnonzero(
      (frame[column].notna().to_numpy() & np.isnan(values)) | (values < 0) | (values > 1) | np.isinf(values)
  )
  if bad.size:
    i = int(bad[0])
    raise PieError(
        f"{path}: {column} of {EXAMPLE_ID} {_text(frame[EXAMPLE_ID].iloc[i])} is {frame[column].iloc[i]!r}: give a "
        "probability in [0, 1] (or leave it empty)"
    )
  return values


def _model_field(values, field, where):
  """One model field's value, checked: text for model, method and level; a fraction for sparsity; an int for seed."""
  if values is None:
    return None
  if field == SPARSITY:
    try:
      value = float(values)
    except (TypeError, ValueError):
      value = float("nan")
    if not 0 <= value < 1:
      raise PieError(f"{where}: {SPARSITY} must be a fraction in [0, 1) (0.9 = 90%), got {values!r}")
    return value
  if field == SEED:
    text = _text(values)
    if text is None or not text.lstrip("-").isdigit():
      raise PieError(f"{where}: {SEED} must be an integer, got {values!r}")
    return int(text)
  text = _text(values)
  if field == MODEL:
    names_lib.check_component(text, f"{where}: {MODEL}")
  else:
    names_lib.check_text(text, f"{where}: {field}")
  return text


def _with_model_fields(out, frame, sidecar, path, name):
  """`out` with the model fields: the file's columns (constant per model), else its sidecar's, else defaults."""
  side = sidecar_path(path)
  model_texts = _texts(frame, MODEL) if MODEL in frame.columns else None
  if model_texts is not None and any(m is None for m in model_texts):
    raise PieError(f"{path}: a {MODEL} cell is empty: name the model of every row")
  default = name or sidecar.get(MODEL) or os.path.basename(path)[: -len(table_suffix(path))]
  out[MODEL] = model_texts if model_texts is not None else default
  if model_texts is not None and name is not None:
    raise PieError(f"{path}: holds a {MODEL} column: its models are named there, not by a name given for the file")
  for field in MODEL_FIELDS[1:]:
    out[field] = None
  for model, rows in out.groupby(MODEL, sort=False).groups.items():
    _model_field(model, MODEL, path)
    for field in MODEL_FIELDS[1:]:
      value = sidecar.get(field)
      if field in frame.columns:
        present = {v for v in (_text(x) for x in frame.loc[rows, field].tolist()) if v is not None}
        if len(present) > 1:
          raise PieError(f"{path}: model {model} has several values of {field} ({', '.join(sorted(present))})")
        column_value = present.pop() if present else None
        if column_value is not None and value is not None and _text(value) != column_value:
          raise PieError(f"{path}: {field} of model {model} is {column_value!r} here and {value!r} in {side}")
        value = column_value if column_value is not None else value
      checked = _model_field(value, field, f"{path} (model {model})")
      out.loc[rows, field] = pd.Series([checked] * len(rows), index=rows, dtype=object)
  return out


def _check_unique_ids(out, path):
  keys = out[[MODEL, TASK, EXAMPLE_ID]]
  repeated = keys.duplicated(keep=False).to_numpy()
  if repeated.any():
    first = keys.loc[repeated].iloc[0]
    count = int(((keys == first).all(axis=1)).sum())
    task = f" of task {first[TASK]}" if first[TASK] else ""
    raise PieError(
        f"{path}: {EXAMPLE_ID} {first[EXAMPLE_ID]}{task} appears {count} times for model {first[MODEL]}: each example "
        "once per model"
    )


def _read_lm_eval(path, group_by, name, metric, filter_name, log):
  rows, tasks, (declared_by, declaration) = lm_eval_samples.read_run(path, group_by, metric, filter_name, log=log)
  declaration = _checked_declaration(declaration, declared_by) if declared_by else {}
  columns = [TASK, EXAMPLE_ID, LABEL, PREDICTION, CORRECT, PROBABILITY, *group_by]
  frame = pd.DataFrame({c: _objects([row[c] for row in rows]) for c in columns})
  frame[CORRECT] = frame[CORRECT].astype(bool)
  frame[PROBABILITY] = frame[PROBABILITY].astype(np.float64)
  model = name or declaration.get(MODEL) or lm_eval_samples.run_name(path)
  frame[MODEL] = _model_field(model, MODEL, path)
  for field in MODEL_FIELDS[1:]:
    frame[field] = _model_field(declaration.get(field), field, declared_by or path)
  frame.attrs.update(dataset=declaration.get("dataset") or "lm-eval", class_names=declaration.get("class_names"))
  frame.attrs["tasks"] = tasks
  return frame[list(COLUMNS) + list(group_by)]


# ---------------------------------------------------------------------------------------------------------------------
# Several models, aligned.


@dataclasses.dataclass(frozen=True)
class TableModel:
  """One model of a PredictionTables, over its example order."""

  name: str
  source: str
  kind: str  # TABLE or LM_EVAL
  method: str | None
  sparsity: float | None
  level: str | None
  seed: int | None
  top1: np.ndarray  # int64 [n]: the predicted class id, -1 for an example scored by correctness alone
  correct: np.ndarray  # bool [n]
  probability: np.ndarray  # float64 [n], NaN where unknown

  def outputs(self, name=None):
    """The model as pie.comparison takes it."""
    return comparison_inputs.ModelOutputs(
        name=name or self.name,
        top1=self.top1,
        prob=self.probability,
        source=self.source,
        kind=self.kind,
        correct=self.correct,
    )

  def population(self, dense_method=None):
    """(method, level) of the model's population in a study: `method` and `level` joined by `_` (dense_method, or a
    model with neither and no sparsity, is the dense population)."""
    sparsity = self.sparsity or 0.0
    method = "_".join(p for p in (self.method, self.level) if p) or variants.recorded_method(None, sparsity == 0)
    if dense_method is not None and method == dense_method:
      method = variants.DENSE
    if variants.is_dense(method) and sparsity != 0:
      raise PieError(f"{self.source}: model {self.name} is dense but declares sparsity {sparsity:g}")
    return method, round(float(sparsity), 6)


@dataclasses.dataclass
class PredictionTables:
  """Models read from prediction tables or lm-eval runs, aligned on one order of their examples.

  examples: table_examples.csv (pie.outputs.TABLE_EXAMPLES, then the group columns): example_id is the position in
    that order (tasks, then ids: numerically when every id is an integer), source_id the tables' own id.
  labels: int64 [n], the class id, -1 for an example scored by correctness alone.
  groups: the task (when there are several) and the group_by columns, as pie.comparison.Groups.
  tasks: {task: how it was read}, for lm-eval runs (metric, filter, multiple_choice, file); {} for tables.
  """

  examples: pd.DataFrame
  labels: np.ndarray
  class_names: list
  models: list
  groups: comparison.Groups
  dataset: str
  tasks: dict = dataclasses.field(default_factory=dict)

  @property
  def num_examples(self):
    return len(self.labels)

  def model(self, name):
    for model in self.models:
      if model.name == name:
        return model
    raise PieError(f"no model named {name!r} (models: {', '.join(m.name for m in self.models)})")

  def fingerprint(self):
    """sha256 of the examples (ids, labels and groups): equal for every analysis of the same examples."""
    return hashlib.sha256(self.examples.to_csv(index=False).encode("utf-8")).hexdigest()[:16]

  def study(self, dense_method=None):
    """The models as a pie.study.Study, the input of pie.analysis: populations by (method, level), the group columns
    as slice features, the correctness-only examples as the class CORRECT_CLASS that a wrong model answers with
    WRONG_CLASS."""
    return _study(self, dense_method)


def load_prediction_tables(
    sources, group_by=(), *, names=None, format=AUTO, lm_eval_metric=None, lm_eval_filter=None, log=print
):  # pylint: disable=redefined-builtin
  """Reads prediction tables and lm-eval runs (`path`, or `path#model` for one model of a file) and aligns their
  models: a `PredictionTables`. `names` renames the models in order (one per model read). Other arguments as for
  `read_prediction_table`."""
  per_source = read_sources(
      sources, group_by, format=format, lm_eval_metric=lm_eval_metric, lm_eval_filter=lm_eval_filter, log=log
  )
  parts = [part for source_parts in per_source for part in source_parts]
  if names is not None:
    if len(names) != len(parts):
      raise PieError(f"{len(names)} names for {len(parts)} models: give one name per model", parameter="names")
    parts = [_renamed(part, str(n)) for part, n in zip(parts, names)]
  return align(parts, check_group_by(group_by), log=log)


def read_sources(sources, group_by=(), *, format=AUTO, lm_eval_metric=None, lm_eval_filter=None, log=print):  # pylint: disable=redefined-builtin
  """Per source, the list of its models' tables (read_prediction_table's frames, one model each); each file once."""
  if isinstance(sources, (str, os.PathLike)):
    sources = [sources]
  if not sources:
    raise PieError("give at least one prediction table", parameter="prediction_tables")
  cache, out = {}, []
  for number, source in enumerate(sources, 1):
    path, selected = split_selection(source)
    if path not in cache:
      cache[path] = read_prediction_table(
          path, group_by, format=format, lm_eval_metric=lm_eval_metric, lm_eval_filter=lm_eval_filter, log=log
      )
      log(f"read {number}/{len(sources)}: {path} ({cache[path][MODEL].nunique()} model(s), {len(cache[path])} rows)")
    frame = cache[path]
    models = list(dict.fromkeys(frame[MODEL]))
    if selected is not None and selected not in models:
      raise PieError(f"{path}: no model {selected!r} (its models: {', '.join(models)})")
    parts = []
    for model in [selected] if selected is not None else models:
      part = frame.loc[frame[MODEL] == model].reset_index(drop=True)
      part.attrs = dict(frame.attrs)
      parts.append(part)
    out.append(parts)
  return out


def _renamed(part, name):
  names_lib.check_component(name, "names:", parameter="names")
  renamed = part.assign(**{MODEL: name})
  renamed.attrs = dict(part.attrs)
  return renamed


def _describe(part):
  return f"{part.attrs['source']} (model {part[MODEL].iloc[0]})" if len(part) else part.attrs["source"]


def _canonical_order(keys):
  """The examples' order: by task, then by id (as integers when every id is one)."""
  ids = keys[EXAMPLE_ID]
  numeric = ids.str.fullmatch(r"-?\d{1,18}").all()
  order = keys.assign(_id=ids.astype(np.int64) if numeric else ids).sort_values([TASK, "_id"], kind="stable")
  return order.index.to_numpy()


def _key_text(task, example_id):
  return f"{example_id} of task {task}" if task else str(example_id)


def _check_same_examples(parts):
  reference = parts[0]
  ref_keys = pd.MultiIndex.from_frame(reference[[TASK, EXAMPLE_ID]])
  for part in parts[1:]:
    keys = pd.MultiIndex.from_frame(part[[TASK, EXAMPLE_ID]])
    if len(keys) == len(ref_keys) and keys.isin(ref_keys).all():
      continue
    lacking, extra = ref_keys.difference(keys), keys.difference(ref_keys)
    parts_text = []
    if len(lacking):
      shown = ", ".join(_key_text(*k) for k in lacking[:_SHOWN])
      parts_text.append(f"lacks {len(lacking)} {EXAMPLE_ID}s that {_describe(reference)} has (first: {shown})")
    if len(extra):
      shown = ", ".join(_key_text(*k) for k in extra[:_SHOWN])
      parts_text.append(f"has {len(extra)} that it lacks (first: {shown})")
    raise PieError(f"{_describe(part)}: {' and '.join(parts_text)}: every model must score the same examples")


def _merged_labels(parts):
  """Each example's label (the first model's that gives one); a PieError where two models give different ones."""
  labels = np.array(parts[0][LABEL].tolist(), dtype=object)
  owner = np.where(pd.isna(labels), -1, 0)
  for k, part in enumerate(parts[1:], 1):
    mine = np.array(part[LABEL].tolist(), dtype=object)
    given = ~pd.isna(mine)
    clash = np.flatnonzero(given & (owner >= 0) & (mine != labels))
    if clash.size:
      i = int(clash[0])
      raise PieError(
          f"{_describe(part)}: gives {_key_text(part[TASK].iloc[i], part[EXAMPLE_ID].iloc[i])} the {LABEL} "
          f"{mine[i]!r} where {_describe(parts[owner[i]])} gives {labels[i]!r}: one example, one label"
      )
    fill = given & (owner < 0)
    labels[fill], owner[fill] = mine[fill], k
  return labels


def _check_groups(parts, group_columns):
  reference = parts[0]
  for part in parts[1:]:
    for column in group_columns:
      differ = np.flatnonzero(part[column].to_numpy() != reference[column].to_numpy())
      if differ.size:
        i = int(differ[0])
        raise PieError(
            f"{_describe(part)}: puts {_key_text(part[TASK].iloc[i], part[EXAMPLE_ID].iloc[i])} in {column} "
            f"{part[column].iloc[i]!r} where {_describe(reference)} puts it in {reference[column].iloc[i]!r}",
            parameter="group_by",
        )


def _classified_tasks(parts, labels, log):
  """bool [n]: the examples of tasks that every model classifies (a label and a prediction for each example)."""
  tasks = parts[0][TASK].to_numpy()
  complete = ~pd.isna(labels)
  for part in parts:
    complete &= part[PREDICTION].notna().to_numpy()
  frame = pd.DataFrame({TASK: tasks, "complete": complete})
  per_task = frame.groupby(TASK, sort=True).agg(complete=("complete", "all"), partial=("complete", "any"))
  for task, row in per_task.iterrows():
    if not row["complete"] and row["partial"]:
      what = f"task {task}" if task else "the tables"
      log(f"{what}: not every model gives a {LABEL} and a {PREDICTION} for every example: scored by {CORRECT} alone")
  return per_task.loc[tasks, "complete"].to_numpy(bool)


def _class_names(values, given, where):
  """(class names, {value: class id}) of the classified labels and predictions."""
  values = sorted(set(values))
  if given is not None:
    names = [str(n) for n in given]
    index = {n: i for i, n in enumerate(names)}
    for value in values:
      if value not in index:
        if not (value.isdigit() and int(value) < len(names)):
          raise PieError(f"{where}: {value!r} is neither one of its class_names nor an index into them")
        index[value] = int(value)
    return names, index
  if values and all(v.isdigit() and len(v) < 7 for v in values):
    top = max(int(v) for v in values)
    return [str(i) for i in range(top + 1)], {v: int(v) for v in values}
  return list(values), {v: i for i, v in enumerate(values)}


def _given_class_names(parts):
  found = [(p.attrs["source"], p.attrs.get("class_names")) for p in parts if p.attrs.get("class_names") is not None]
  for source, names in found[1:]:
    if names != found[0][1]:
      raise PieError(f"{source}: its class_names differ from those of {found[0][0]}: one class list for all models")
  return found[0] if found else (None, None)


def align(parts, group_by, log=print):
  """One model's table each (read_sources), checked against each other and turned into a `PredictionTables`."""
  names = [p[MODEL].iloc[0] if len(p) else p.attrs["source"] for p in parts]
  for i, name in enumerate(names):
    if name in names[:i]:
      other = parts[names.index(name)].attrs["source"]
      raise PieError(
          f"{parts[i].attrs['source']}: a second model named {name!r} (also in {other}): give each model its own "
          "name (names, or the model column or sidecar)",
          parameter="names",
      )
  _check_same_examples(parts)
  order = _canonical_order(parts[0][[TASK, EXAMPLE_ID]])
  index = pd.MultiIndex.from_frame(parts[0][[TASK, EXAMPLE_ID]]).take(order)
  parts = [_reordered(p, index) for p in parts]
  labels = _merged_labels(parts)
  multi_task = parts[0][TASK].nunique() > 1
  group_columns = ((TASK,) if multi_task else ()) + tuple(group_by)
  _check_groups(parts, group_columns)
  classified = _classified_tasks(parts, labels, log)
  where, given = _given_class_names(parts)
  values = [v for v in labels[classified]] + [v for p in parts for v in p[PREDICTION].to_numpy()[classified]]
  class_names, class_index = _class_names(values, given, where)
  for i, name in enumerate(class_names):
    names_lib.check_text(name, f"{where or parts[0].attrs['source']}: class name {i}")
  label_ids = np.array([class_index[v] if c else -1 for v, c in zip(labels, classified)], np.int64)
  models = [_table_model(p, classified, class_index) for p in parts]
  examples = _examples_table(parts[0], labels, label_ids, class_names, group_by)
  groups = _groups(parts[0], group_columns)
  datasets = {p.attrs.get("dataset") for p in parts if p.attrs.get("dataset")}
  tasks = {}
  for part in parts:
    tasks.update(part.attrs.get("tasks") or {})
  return PredictionTables(
      examples=examples,
      labels=label_ids,
      class_names=class_names,
      models=models,
      groups=groups,
      dataset=", ".join(sorted(datasets)) or "prediction tables",
      tasks=tasks,
  )


def _reordered(part, index):
  out = part.set_index([TASK, EXAMPLE_ID], drop=False).loc[index].reset_index(drop=True)
  out.attrs = dict(part.attrs)
  return out


def _table_model(part, classified, class_index):
  predictions = part[PREDICTION].to_numpy()
  top1 = np.array([class_index[v] if c else -1 for v, c in zip(predictions, classified)], np.int64)
  first = {k: (None if _missing(v) else v) for k, v in part.iloc[0].items()}
  return TableModel(
      name=str(first[MODEL]),
      source=part.attrs["source"],
      kind=part.attrs["kind"],
      method=first[METHOD],
      sparsity=None if first[SPARSITY] is None else float(first[SPARSITY]),
      level=first[LEVEL],
      seed=None if first[SEED] is None else int(first[SEED]),
      top1=top1,
      correct=part[CORRECT].to_numpy(bool),
      probability=part[PROBABILITY].to_numpy(np.float64),
  )


def _missing(value):
  return value is None or (isinstance(value, float) and np.isnan(value))


def _examples_table(part, labels, label_ids, class_names, group_by):
  label_names = [class_names[i] if i >= 0 else (v if isinstance(v, str) else "") for v, i in zip(labels, label_ids)]
  table = pd.DataFrame(
      {
          "example_id": np.arange(len(part)),
          "source_id": part[EXAMPLE_ID].to_numpy(),
          TASK: part[TASK].to_numpy(),
          "label": label_ids,
          "label_name": label_names,
      },
      columns=list(outputs.TABLE_EXAMPLES.columns()),
  )
  for column in group_by:
    table[column] = part[column].to_numpy()
  return table


def _groups(part, columns):
  codes, values = [], []
  for column in columns:
    found = sorted(set(part[column]), key=lambda v: (v == MISSING_VALUE, v))
    index = {v: i for i, v in enumerate(found)}
    for v in found:
      names_lib.check_text(v, f"{part.attrs['source']}: a value of {column}", parameter="group_by")
    codes.append([index[v] for v in part[column]])
    values.append(tuple(found))
  array = np.array(codes, np.int64).T if codes else np.zeros((len(part), 0), np.int64)
  return comparison.Groups(columns=tuple(columns), codes=array, values=tuple(values))


# ---------------------------------------------------------------------------------------------------------------------
# A study of tables: the populations pie.analysis compares.


def _study(tables, dense_method):
  from pie import study as study_lib  # pylint: disable=import-outside-toplevel  (TensorFlow)

  class_names, labels = list(tables.class_names), tables.labels.copy()
  unclassed = labels < 0
  right = len(class_names)
  if unclassed.any():
    class_names += [CORRECT_CLASS, WRONG_CLASS]
    labels[unclassed] = right
  populations = {}
  for model in tables.models:
    top1 = model.top1.copy()
    top1[unclassed] = np.where(model.correct[unclassed], right, right + 1)
    hit = top1 == labels
    known = np.isfinite(model.probability)
    true_prob = np.where(hit, np.where(known, model.probability, 1.0), 0.0).astype(np.float32)
    method, sparsity = model.population(dense_method)
    record = study_lib.ModelRecord(
        name=model.name,
        path=model.source,
        sparsity=sparsity,
        measured_sparsity=sparsity,
        seed=model.seed if model.seed is not None else -1,
        top1=top1.astype(np.int32),
        method=method,
        true_prob=true_prob,
    )
    populations.setdefault((method, sparsity), []).append(record)
  _check_study_populations(populations, tables, dense_method)
  for models in populations.values():
    models.sort(key=lambda m: (m.seed, m.name))
    for position, record in enumerate(models):
      if record.seed < 0:  # no seed given: the models of a population are numbered by name
        record.seed = position
  levels = {s: models for (method, s), models in populations.items() if variants.named_by_level(method)}
  return study_lib.Study(
      study_dir=None,
      dataset=tables.dataset,
      split="",
      num_classes=len(class_names),
      class_names=class_names,
      labels=labels,
      levels=levels,
      config={"name": tables.dataset, "prediction_tables": sorted({m.source for m in tables.models})},
      config_hash=tables.fingerprint(),
      populations=populations,
      slice_features=[
          {"name": column, "kind": "text", "values": list(values)}
          for column, values in zip(tables.groups.columns, tables.groups.values)
      ],
      slice_values=tables.groups.codes,
  )


def _check_study_populations(populations, tables, dense_method):
  found = ", ".join(sorted({f"{m}" + (f" {s:g}" if s else "") for m, s in populations}))
  if variants.DENSE_KEY not in populations:
    raise PieError(
        f"no dense population among the models' methods ({found}): name the baseline's method with dense_method, "
        f"or give its models the method {variants.DENSE!r}",
        parameter="dense_method",
    )
  for (method, sparsity), models in sorted(populations.items()):
    if len(models) < 2:
      raise PieError(
          f"{models[0].path}: population {method}{f' {sparsity:g}' if sparsity else ''} has one model "
          f"({models[0].name}); a population needs at least two (seeds, or sampling runs) for modal answers and "
          "tests: analysis.compare compares one model with another",
          parameter="prediction_tables",
      )


def expand_patterns(patterns):
  """The sources matched by glob patterns (comma-separated text or a list): tables and lm-eval run folders, sorted
  per pattern; a sidecar matched beside its table is left out. A pattern matching nothing is a PieError."""
  if isinstance(patterns, (str, os.PathLike)):
    patterns = [p for p in os.fspath(patterns).split(",") if p]
  sources = []
  for pattern in patterns:
    matches = _glob(pattern) if any(c in pattern for c in "*?[") else ([pattern] if _exists(pattern) else [])
    if not matches:
      raise PieError(f"{pattern}: matches no file or folder", parameter="prediction_tables")
    tables = {m for m in matches if table_suffix(m)}
    for match in matches:
      if match.endswith(".json") and any(sidecar_path(t) == match for t in tables):
        continue
      if input_format(AUTO, match) == MODEL_INPUT:
        raise PieError(
            f"{match}: neither a prediction table ({', '.join(TABLE_SUFFIXES)}) nor an lm-eval run folder",
            parameter="prediction_tables",
        )
      if match not in sources:
        sources.append(match)
  return sources


def run_analysis(
    patterns, out_dir, group_by=(), *, dense_method=None, lm_eval_metric=None, lm_eval_filter=None, log=print, **options
):
  """The analysis of populations of tables (`python -m analysis.analyze --prediction_tables=...`): every file of
  pie.analysis.analyze_study (no PIE images: the tables carry none) and table_examples.csv, into `out_dir`.

  options: pie.analysis.analyze_study's (`options`, an AnalysisOptions, or its fields as keywords; `report`).
  Returns (out_dir, summary).
  """
  from pie import analysis  # pylint: disable=import-outside-toplevel  (TensorFlow)
  from pie import io_utils  # pylint: disable=import-outside-toplevel

  if not out_dir:
    raise PieError("an output folder (out_dir) is needed with prediction tables", parameter="out_dir")
  out_dir = names_lib.resolve_path(out_dir, "out_dir")
  sources = expand_patterns(patterns)
  log(f"reading {len(sources)} prediction table(s)")
  tables = load_prediction_tables(
      sources, group_by, lm_eval_metric=lm_eval_metric, lm_eval_filter=lm_eval_filter, log=log
  )
  study = tables.study(dense_method)
  log(
      f"{len(tables.models)} models, {tables.num_examples} examples ({int((tables.labels < 0).sum())} scored by "
      f"correctness alone), {len(tables.class_names)} classes, groups: {', '.join(tables.groups.columns) or 'none'}"
  )
  summary = analysis.analyze_study(study, out_dir, images=False, log=log, **options)
  io_utils.write_text(os.path.join(out_dir, outputs.TABLE_EXAMPLES_CSV), analysis.csv_text(tables.examples))
  return out_dir, summary


# ---------------------------------------------------------------------------------------------------------------------
# One model against its compressed versions.


def compare_tables(
    reference,
    candidates,
    group_by=(),
    *,
    names=None,
    format=AUTO,
    lm_eval_metric=None,
    lm_eval_filter=None,
    log=print,
    **settings,
):  # pylint: disable=redefined-builtin
  """A reference table (or lm-eval run) against its compressed versions: a pie.comparison.Comparison with the class
  table (classified examples), the group table (the task and `group_by`), the changed examples and the gate.

  reference, candidates: paths (or `path#model`), each one model. names: the candidates' names (default: their model
  names). settings: pie.compare's alpha, bootstrap_resamples, seed, max_excess_drop, max_top1_drop.
  """
  candidates = [candidates] if isinstance(candidates, (str, os.PathLike)) else list(candidates)
  if not candidates:
    raise PieError("give at least one candidate to compare with the reference", parameter="candidates")
  per_source = read_sources(
      [reference] + candidates,
      group_by,
      format=format,
      lm_eval_metric=lm_eval_metric,
      lm_eval_filter=lm_eval_filter,
      log=log,
  )
  for source, parts in zip([reference] + candidates, per_source):
    if len(parts) != 1:
      models = ", ".join(p[MODEL].iloc[0] for p in parts)
      raise PieError(
          f"{source}: holds {len(parts)} models ({models}): choose one as {source}{SELECTOR}<model>",
          parameter="reference" if source is reference else "candidates",
      )
  parts = [p[0] for p in per_source]
  if names is not None:
    if len(names) != len(candidates):
      raise PieError(f"{len(names)} names for {len(candidates)} candidates: one name per candidate", parameter="names")
    parts = parts[:1] + [_renamed(p, str(n)) for p, n in zip(parts[1:], names)]
  tables = align(parts, check_group_by(group_by), log=log)
  gate = comparison.Gate(settings.pop("max_excess_drop", None), settings.pop("max_top1_drop", None))
  ref, cands = tables.models[0], tables.models[1:]
  log(f"reference {ref.name}: {ref.kind}, {np.mean(ref.correct):.2%} right of {tables.num_examples} examples")
  for model in cands:
    log(f"candidate {model.name}: {model.kind}, {np.mean(model.correct):.2%} right")
  result = comparison.compare_outputs(
      tables.labels,
      ref.outputs(),
      [m.outputs() for m in cands],
      tables.class_names,
      gate=gate,
      dataset_fields={
          "name": tables.dataset,
          "eval_split": ", ".join(t for t in dict.fromkeys(tables.examples[TASK]) if t),
          "num_scored_by_correctness": int((tables.labels < 0).sum()),
          "tasks": tables.tasks,
      },
      groups=tables.groups,
      **settings,
  )
  return dataclasses.replace(result, example_table=tables.examples)


def run_compare(reference, candidates, out_dir, group_by=(), log=print, **options):
  """`compare_tables` then `Comparison.write` into out_dir (no images: tables carry none): what `python -m
  analysis.compare --format=table|lm_eval` runs. Nothing is written unless every table loads and fits."""
  if not out_dir:
    raise PieError("an output folder (out_dir) is needed", parameter="out_dir")
  result = compare_tables(reference, candidates, group_by, log=log, **options)
  result.write(out_dir, images=False, log=log)
  return result
