"""lm-evaluation-harness `--log_samples` output, read as one model's per-example results (pie.prediction_tables).

`lm_eval --model hf --model_args pretrained=M --tasks mmlu,gsm8k --output_path results/fp16 --log_samples` writes
`results/fp16/<M sanitized>/samples_<task>_<date>.jsonl`, one file per task (`<date>` is an ISO time with `-` for `:`),
beside `results_<date>.json`. Each line is one JSON object: `doc_id`, `doc` (the dataset row), `target` (text),
`arguments`, `resps` and `filtered_resps` (nested lists: per request its responses, and the response the task's
filter kept; texts in the files lm-eval writes, numbers in older ones), `filter`, `metrics` (the names of the metric
keys), `doc_hash`, `prompt_hash`, `target_hash`, and one key per metric (`acc`, `exact_match`, `pass@1`: numbers or
booleans; `word_perplexity`: a `[value, count]` list; IFEval's instruction-level accuracies: a list).

How a run folder becomes examples (`read_run`):
  * the folder holding the samples files, or a folder with exactly one subfolder holding them (the --output_path of
    one model); of several files of one task, the newest (by the date in its name) is read;
  * an example is (task, doc_id); a task evaluated with several filters (gsm8k's `strict-match` and
    `flexible-extract`) writes one line per filter: the filter named by `lm_eval_filter` where the task has it,
    else the first the file holds (lm-eval writes them in the order of the task's filter list);
  * correct: the task's metric, which must be right or wrong per document (0 or 1, or a boolean): `lm_eval_metric`
    where the task has it, else the first of `PREFERRED_METRICS` it has, else the first 0/1 metric in its `metrics`
    list. A task without one (perplexity tasks: `[value, count]` pairs; a pass@1 over several samples) is left out,
    and said so;
  * label and prediction, where the task is multiple choice: the `filtered_resps` are one `[loglikelihood,
    is_greedy]` pair per choice and `target` is the index of the right choice (or the text of one): the label is that
    index, the prediction the choice of highest loglikelihood and its probability the softmax of the
    loglikelihoods; a task whose metric disagrees with that choice (acc_norm normalizes by length) is scored by its
    metric alone. Other tasks (generation, code) keep `target` as their label and have no class prediction:
    correctness only;
  * groups: the task, and the fields of `doc` named by `group_by` (`subject` for MMLU; `a/b` reads `doc["a"]["b"]`);
    a document without the field gets the value `(none)`.

The model's `method`, `sparsity` or `level` and `seed` come from a `pie_run.json` in the run folder (or in the folder
given, when that is the --output_path above it), e.g. {"method": "gptq", "level": "int4", "seed": 0}.

Pure Python and numpy: no TensorFlow.
"""

import collections
import json
import os
import re

import numpy as np

from pie.errors import PieError

SAMPLES_PREFIX = "samples_"
SAMPLES_SUFFIX = ".jsonl"
_SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+?)(?:_(?P<date>\d{4}-\d{2}-\d{2}T[0-9.\-]+))?\.jsonl$")
# The keys lm-eval writes for every document; any other key of a line is a metric.
RECORD_KEYS = frozenset(
    ("doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics")
    + ("doc_hash", "prompt_hash", "target_hash")
)
# Per-document right-or-wrong metrics, in the order they are preferred when a task has several.
PREFERRED_METRICS = ("acc", "exact_match", "pass@1", "prompt_level_strict_acc", "acc_norm", "em")
RUN_FILE = "pie_run.json"
MISSING_VALUE = "(none)"


def is_samples_file(path):
  """Whether `path` is a samples file lm-eval wrote (samples_<task>_<date>.jsonl)."""
  return os.path.isfile(path) and bool(_SAMPLES_NAME.match(os.path.basename(path)))


def is_run_folder(path):
  """Whether `path` holds samples files, or has a subfolder that does (the --output_path of a run)."""
  if not os.path.isdir(path):
    return False
  return bool(_samples_in(path)) or any(
      os.path.isdir(os.path.join(path, d)) and _samples_in(os.path.join(path, d)) for d in os.listdir(path)
  )


def run_name(path):
  """The model name of a run: the name of the folder given (of a samples file: of its folder)."""
  path = path.rstrip("/")
  return os.path.basename(os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path)


def find_samples(path, log=print):
  """(the run folder, {task: its newest samples file}) of `path`: a run folder, the --output_path of one run, or one
  samples file (that task alone)."""
  if is_samples_file(path):
    return os.path.dirname(path), {_SAMPLES_NAME.match(os.path.basename(path)).group("task"): path}
  if not os.path.isdir(path):
    raise PieError(f"{path}: no such folder (an lm-eval run folder holds samples_<task>_<date>.jsonl files)")
  files = _samples_in(path)
  run_dir = path
  if not files:
    inner = [os.path.join(path, d) for d in sorted(os.listdir(path)) if os.path.isdir(os.path.join(path, d))]
    with_samples = [d for d in inner if _samples_in(d)]
    if len(with_samples) != 1:
      found = f"{len(with_samples)} of its subfolders hold some" if with_samples else "nor do its subfolders"
      raise PieError(
          f"{path}: no lm-eval samples files (samples_<task>_<date>.jsonl) here, {found}: give one run's folder "
          "(lm_eval --log_samples writes <output_path>/<model>/samples_*.jsonl)"
      )
    run_dir = with_samples[0]
    files = _samples_in(run_dir)
  newest = {}
  for name in sorted(files):
    match = _SAMPLES_NAME.match(name)
    task, date = match.group("task"), match.group("date") or ""
    if task in newest and newest[task][0] >= date:
      log(f"{run_dir}: {name} is older than {newest[task][1]}: not read")
      continue
    if task in newest:
      log(f"{run_dir}: {newest[task][1]} is older than {name}: not read")
    newest[task] = (date, name)
  return run_dir, {task: os.path.join(run_dir, name) for task, (_, name) in sorted(newest.items())}


def _samples_in(folder):
  return [n for n in os.listdir(folder) if _SAMPLES_NAME.match(n) and os.path.isfile(os.path.join(folder, n))]


def read_records(path):
  """The JSON objects of a samples file, one per line (blank lines skipped); a PieError names the bad line."""
  records = []
  try:
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except ValueError as e:
          raise PieError(f"{path}: line {number} is not JSON ({e})") from None
        if not isinstance(record, dict) or "doc_id" not in record:
          raise PieError(f"{path}: line {number} is not an lm-eval sample (a JSON object with doc_id)")
        records.append(record)
  except (OSError, UnicodeDecodeError) as e:
    raise PieError(f"{path}: cannot be read ({e})") from None
  if not records:
    raise PieError(f"{path}: no samples in the file")
  return records


def run_declaration(path, run_dir):
  """The pie_run.json of the run (in its folder, else in the folder given), {} without one."""
  for folder in dict.fromkeys((run_dir, path)):
    spec_path = os.path.join(folder, RUN_FILE)
    if os.path.isfile(spec_path):
      try:
        with open(spec_path, encoding="utf-8") as f:
          spec = json.load(f)
      except (OSError, ValueError) as e:
        raise PieError(f"{spec_path}: not readable JSON ({e})") from None
      if not isinstance(spec, dict):
        raise PieError(f'{spec_path}: must hold a JSON object such as {{"method": "gptq", "level": "int4"}}')
      return spec_path, spec
  return None, {}


def read_run(path, group_by=(), lm_eval_metric=None, lm_eval_filter=None, log=print):
  """The examples of one lm-eval run: (rows, tasks, declaration).

  rows: one dict per example, keys task, example_id (the doc_id as text), label, prediction (None where the task is
    not multiple choice), correct (bool), probability (NaN where unknown) and one key per name of `group_by`.
  tasks: {task: {"metric", "filter", "multiple_choice", "file"}} for the tasks read; skipped tasks are logged.
  declaration: (path of pie_run.json or None, its content).
  """
  run_dir, files = find_samples(path, log=log)
  rows, tasks = [], {}
  for task, file in files.items():
    records = _filtered(read_records(file), file, lm_eval_filter)
    metric = correctness_metric(records, file, lm_eval_metric)
    if metric is None:
      names = ", ".join(_metric_names(records[0])) or "none"
      log(f"{file}: task {task} left out: no metric says right or wrong per document (its metrics: {names})")
      continue
    task_rows, multiple_choice = _task_rows(task, records, metric, group_by, file)
    if multiple_choice is False:
      log(f"{file}: task {task}: {metric} disagrees with the most likely choice: scored by {metric} alone")
    rows += task_rows
    tasks[task] = {
        "metric": metric,
        "filter": records[0].get("filter"),
        "multiple_choice": bool(multiple_choice),
        "file": file,
    }
  if not rows:
    raise PieError(f"{path}: no task with a per-document right-or-wrong metric (acc, exact_match, pass@1, ...)")
  if lm_eval_metric and not any(t["metric"] == lm_eval_metric for t in tasks.values()):
    raise PieError(f"{path}: no task has the metric {lm_eval_metric!r}", parameter="lm_eval_metric")
  if lm_eval_filter and not any(t["filter"] == lm_eval_filter for t in tasks.values()):
    found = sorted({str(t["filter"]) for t in tasks.values()})
    raise PieError(
        f"{path}: no task has the filter {lm_eval_filter!r} (filters read: {', '.join(found)})",
        parameter="lm_eval_filter",
    )
  _check_group_fields(rows, group_by, path)
  return rows, tasks, run_declaration(path, run_dir)


def _filtered(records, file, wanted):
  """The records of one filter: `wanted` where the task has it, else the first the file holds; each doc_id once."""
  filters = list(dict.fromkeys(r.get("filter") for r in records))
  chosen = wanted if wanted in filters else filters[0]
  kept = [r for r in records if r.get("filter") == chosen]
  counts = collections.Counter(_doc_id(r, file) for r in kept)
  repeated = [doc_id for doc_id, count in counts.items() if count > 1]
  if repeated:
    raise PieError(f"{file}: doc_id {repeated[0]} appears {counts[repeated[0]]} times for one filter: each once")
  return kept


def _doc_id(record, file):
  doc_id = record["doc_id"]
  if isinstance(doc_id, bool) or not isinstance(doc_id, (int, str)):
    raise PieError(f"{file}: doc_id {doc_id!r} is not an integer or a text")
  return str(doc_id)


def _metric_names(record):
  listed = record.get("metrics")
  if isinstance(listed, list):
    return [m for m in listed if isinstance(m, str) and m in record]
  return [k for k in record if k not in RECORD_KEYS]


def _right_or_wrong(value):
  """True or False for a 0/1 or boolean metric value, None for anything else (fractions, lists, texts)."""
  if isinstance(value, bool):
    return value
  if isinstance(value, (int, float)) and value in (0, 1):
    return bool(value)
  return None


def correctness_metric(records, file, wanted=None):
  """The metric that says whether each document is right: `wanted` where the task has it, else the first of
  PREFERRED_METRICS (then of the task's own list) that is 0 or 1 for every document; None when none is."""
  names = _metric_names(records[0])
  if wanted is not None and wanted in names:
    for record in records:
      if _right_or_wrong(record.get(wanted)) is None:
        raise PieError(
            f"{file}: metric {wanted!r} of doc_id {record['doc_id']} is {record.get(wanted)!r}, not right or wrong "
            "(0, 1 or a boolean): name another metric",
            parameter="lm_eval_metric",
        )
    return wanted
  ordered = [m for m in PREFERRED_METRICS if m in names] + [m for m in names if m not in PREFERRED_METRICS]
  for name in ordered:
    if all(_right_or_wrong(record.get(name)) is not None for record in records):
      return name
  return None


def _task_rows(task, records, metric, group_by, file):
  """The rows of one task, and whether it is multiple choice (None: not; False: its metric disagrees with the most
  likely choice, so it is scored by the metric alone)."""
  rows, choices = [], []
  for record in records:
    correct = _right_or_wrong(record.get(metric))
    if correct is None:
      raise PieError(f"{file}: doc_id {record['doc_id']} has no 0/1 value of {metric} (got {record.get(metric)!r})")
    rows.append(
        {
            "task": task,
            "example_id": _doc_id(record, file),
            "label": _text(record.get("target")),
            "prediction": None,
            "correct": correct,
            "probability": np.nan,
            **{name: _doc_field(record.get("doc"), name) for name in group_by},
        }
    )
    choices.append(multiple_choice(record))
  if any(c is None for c in choices):
    return rows, None
  if any((c[0] == c[1]) != row["correct"] for c, row in zip(choices, rows)):
    return rows, False
  for (label, prediction, probability), row in zip(choices, rows):
    row.update(label=str(label), prediction=str(prediction), probability=probability)
  return rows, True


def _text(value):
  if value is None:
    return None
  return value if isinstance(value, str) else json.dumps(value)


def _number(value):
  if isinstance(value, bool):
    return None
  if isinstance(value, (int, float)):
    return float(value)
  if isinstance(value, str):
    try:
      return float(value)
    except ValueError:
      return None
  return None


def multiple_choice(record):
  """(label index, predicted index, its probability) of a multiple-choice document, None for other documents.

  Multiple choice: `filtered_resps` holds one [loglikelihood, is_greedy] pair per choice (two or more; numbers or
  their texts) and `target` is the index of the right choice, or the text of one (matched against the
  continuations in `arguments`). Ties go to the first choice of highest loglikelihood, as numpy's argmax.
  """
  responses = record.get("filtered_resps")
  if not isinstance(responses, list) or len(responses) < 2:
    return None
  loglikelihoods = []
  for response in responses:
    if not isinstance(response, (list, tuple)) or len(response) != 2:
      return None
    value = _number(response[0])
    if value is None or not np.isfinite(value):
      return None
    loglikelihoods.append(value)
  label = _choice_index(record.get("target"), len(responses), record.get("arguments"))
  if label is None:
    return None
  values = np.asarray(loglikelihoods)
  predicted = int(np.argmax(values))
  shares = np.exp(values - values.max())
  return label, predicted, float(shares[predicted] / shares.sum())


def _choice_index(target, num_choices, arguments):
  if isinstance(target, int) and not isinstance(target, bool):
    return target if 0 <= target < num_choices else None
  if not isinstance(target, str):
    return None
  if target.strip().isdigit():
    index = int(target.strip())
    return index if index < num_choices else None
  continuations = [_continuation(a) for a in _argument_list(arguments)]
  matches = [i for i, c in enumerate(continuations) if c is not None and c.strip() == target.strip()]
  return matches[0] if len(matches) == 1 and len(continuations) == num_choices else None


def _argument_list(arguments):
  """Each request's arguments: lm-eval writes {"gen_args_0": {"arg_0": context, "arg_1": continuation}, ...}; older
  files a list of [context, continuation] lists."""
  if isinstance(arguments, dict):
    return [arguments[k] for k in sorted(arguments, key=_request_number)]
  return arguments if isinstance(arguments, list) else []


def _request_number(key):
  """gen_args_10 after gen_args_9."""
  tail = str(key).rsplit("_", 1)[-1]
  return (0, int(tail)) if tail.isdigit() else (1, 0)


def _continuation(request):
  if isinstance(request, dict):
    value = request.get("arg_1")
  elif isinstance(request, (list, tuple)) and len(request) > 1:
    value = request[1]
  else:
    return None
  return value if isinstance(value, str) else None


def _doc_field(doc, name):
  """The text of doc[name] (`a/b`: doc["a"]["b"]), MISSING_VALUE when the document lacks it."""
  value = doc
  for part in name.split("/"):
    if not isinstance(value, dict) or part not in value:
      return MISSING_VALUE
    value = value[part]
  if value is None:
    return MISSING_VALUE
  return value if isinstance(value, str) else json.dumps(value)


def _check_group_fields(rows, group_by, path):
  for name in group_by:
    if all(row[name] == MISSING_VALUE for row in rows):
      raise PieError(
          f"{path}: no document of any task has the field {name!r} (group_by names fields of each sample's doc)",
          parameter="group_by",
      )
