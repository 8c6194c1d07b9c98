"""The predictions export: the contract between training and analysis.

One file per model, `<name>.tfrecord`, with `<name>.json` beside it (the model's metadata). The JSON is written
last, after the TFRecord is complete and renamed into place, so a TFRecord without its JSON is an unfinished export.

Each record is a `tf.train.Example` for one eval example:
  example_id     int64         position of the example in the eval split (the join key across models)
  label          int64         true label
  top_k_classes  int64 list    the k most probable classes, best first (k = 5 by default)
  top_k_probs    float list    their softmax probabilities, same order
  logits         float list    optional, num_classes values
  slice_values   int64 list    optional (schema version 2): one code per slice feature of the metadata's
                               `slice_features`, the index of the example's value in that feature's `values`

Schema versions: 1 had no slice features; 2 adds `slice_values` and the metadata's `slice_features`. Files of version 1
read as version 2 files without slice features.
"""

import collections
import concurrent.futures
import dataclasses
from typing import Optional

import numpy as np

from pie import io_utils
from pie import names
from pie import records
from pie.errors import PieError

SCHEMA_VERSION = 2
REQUIRED_METADATA = (
    "dataset",
    "split",
    "num_classes",
    "class_names",
    "target_sparsity",
    "measured_sparsity",
    "seed",
    "config_hash",
    "num_examples",
    "top_k",
)


def _tf():
  """TensorFlow, for writing and for records of another layout; reading pie's own files does not load it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return tf


def _int64(values):
  tf = _tf()
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _float(values):
  tf = _tf()
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def serialize_example(example_id, label, top_k_classes, top_k_probs, logits=None, slice_values=None):
  tf = _tf()
  features = {
      "example_id": _int64([int(example_id)]),
      "label": _int64([int(label)]),
      "top_k_classes": _int64(top_k_classes),
      "top_k_probs": _float(top_k_probs),
  }
  if logits is not None:
    features["logits"] = _float(logits)
  if slice_values is not None:
    features["slice_values"] = _int64([int(v) for v in slice_values])
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def metadata_path(tfrecord_path):
  if not tfrecord_path.endswith(".tfrecord"):
    raise PieError(f"{tfrecord_path}: prediction files must end in .tfrecord")
  return tfrecord_path[: -len(".tfrecord")] + ".json"


def write_predictions(
    path, example_ids, labels, top_k_classes, top_k_probs, metadata, logits=None, slice_values=None, slice_features=None
):
  """Writes `<name>.tfrecord` then `<name>.json`, each atomically. Arrays are [n] or [n, k] / [n, num_classes].

  `slice_features` (the metadata's list of {"name", "kind", "values"}) and `slice_values` (int codes [n, features])
  come together: the eval examples' values of the dataset features named by config.slice_features (pie.features).
  """
  example_ids = np.asarray(example_ids, np.int64)
  slice_features = list(slice_features or [])
  if slice_features:
    slice_values = np.asarray(slice_values, np.int64).reshape(len(example_ids), len(slice_features))
  else:
    slice_values = None
  top_k_probs = np.asarray(top_k_probs, np.float32)
  if not np.all(np.isfinite(top_k_probs)) or (logits is not None and not np.all(np.isfinite(logits))):
    raise PieError(f"{path}: the model produced NaN or infinite outputs; refusing to export them")
  with io_utils.atomic_path(path) as tmp:
    with _tf().io.TFRecordWriter(tmp) as writer:
      records.write_examples(writer, example_ids, labels, top_k_classes, top_k_probs, logits, slice_values=slice_values)
    with io_utils.open_file(tmp, "rb") as f:
      data = f.read()
  metadata = dict(
      metadata,
      num_examples=int(len(example_ids)),
      top_k=int(np.shape(top_k_classes)[1]),
      has_logits=logits is not None,
      slice_features=slice_features,
      schema_version=SCHEMA_VERSION,
      file_bytes=len(data),
      file_crc32c=records.file_crc32c(data),
  )
  io_utils.write_json(metadata_path(path), metadata)
  return metadata


def write_arrays(path, arrays, metadata, slices=((), None)):
  """`write_predictions` of the arrays dict the predictors return (example_ids, labels, top_k_classes, top_k_probs,
  logits or None); `slices` is `Dataset.eval_slices(config.slice_features)`, (features, values)."""
  return write_predictions(
      path,
      arrays["example_ids"],
      arrays["labels"],
      arrays["top_k_classes"],
      arrays["top_k_probs"],
      metadata,
      logits=arrays["logits"],
      slice_features=slices[0],
      slice_values=slices[1],
  )


@dataclasses.dataclass
class Predictions:
  """One model's predictions, sorted by example_id."""

  path: str
  metadata: dict
  example_ids: np.ndarray  # int64 [n]
  labels: np.ndarray  # int64 [n]
  top_k_classes: np.ndarray  # int64 [n, k]
  top_k_probs: np.ndarray  # float32 [n, k]
  logits: Optional[np.ndarray] = None  # float32 [n, num_classes]
  slice_values: Optional[np.ndarray] = None  # int64 [n, len(slice_features)]; [n, 0] without slice features

  @property
  def top1(self):
    return self.top_k_classes[:, 0]

  @property
  def slice_features(self):
    """The metadata's slice features ({"name", "kind", "values"} each); [] for files without (schema version 1)."""
    return list(self.metadata.get("slice_features") or [])


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _metadata_problem(metadata):
  """What is wrong with the fields of a metadata dict, or None.

  The reader builds its parsing spec and its checks from these fields, so a damaged value must be refused here:
  otherwise it surfaces later as a TensorFlow or Python error that names no file (e.g. a top_k of "5"). The names
  pie copies into its pages, CSVs and logs (dataset, split, class names, the model's name and architecture, its
  method, the config's name) follow pie.names' rules, and the model's `name`, a folder name in a study, is one path
  component.
  """
  for key in ("dataset", "split", "config_hash"):
    problem = names.text_problem(metadata[key])
    if problem:
      return f"{key} {problem}"
  for key, low in (("num_classes", 1), ("num_examples", 0), ("top_k", 1)):
    if not _is_int(metadata[key]) or metadata[key] < low:
      return f"{key} must be an integer >= {low}, got {names.shown(metadata[key])}"
  class_names = metadata["class_names"]
  if not isinstance(class_names, list) or len(class_names) != metadata["num_classes"]:
    return f"class_names must be a list of num_classes ({metadata['num_classes']}) strings"
  for i, name in enumerate(class_names):
    problem = names.text_problem(name)
    if problem:
      return f"class_names[{i}] {problem}"
  for key in ("target_sparsity", "measured_sparsity"):
    if not _is_number(metadata[key]) or not 0.0 <= metadata[key] <= 1.0:
      return f"{key} must be a number in [0, 1], got {names.shown(metadata[key])}"
  if not _is_int(metadata["seed"]):
    return f"seed must be an integer, got {names.shown(metadata['seed'])}"
  if "file_bytes" in metadata and (not _is_int(metadata["file_bytes"]) or metadata["file_bytes"] < 0):
    return f"file_bytes must be an integer >= 0, got {names.shown(metadata['file_bytes'])}"
  if "file_crc32c" in metadata and (not _is_int(metadata["file_crc32c"]) or not 0 <= metadata["file_crc32c"] < 2**32):
    return f"file_crc32c must be an integer in [0, 2**32), got {names.shown(metadata['file_crc32c'])}"
  if "has_logits" in metadata and not isinstance(metadata["has_logits"], bool):
    return f"has_logits must be true or false, got {names.shown(metadata['has_logits'])}"
  version = metadata.get("schema_version", 1)
  if not _is_int(version) or not 1 <= version <= SCHEMA_VERSION:
    return (
        f"schema_version {names.shown(version)} is not one this reader knows (1 to {SCHEMA_VERSION}): update pie to "
        "read it"
    )
  return _name_problem(metadata) or _slice_features_problem(metadata.get("slice_features"))


def _name_problem(metadata):
  """The optional name fields: the model's architecture, method and name, and the names in its config."""
  for key in ("model", "method"):
    if metadata.get(key) is not None:
      problem = names.text_problem(metadata[key])
      if problem:
        return f"{key} {problem}"
  if "name" in metadata:
    problem = names.component_problem(metadata["name"])
    if problem:
      return f"name (the model's folder and file name) {problem}"
  config = metadata.get("config")
  if config is None:
    return None
  if not isinstance(config, dict):
    return f"config must be an object (the training config), got {type(config).__name__}"
  if config.get("name") is not None and names.text_problem(config["name"]):
    return f"config.name {names.text_problem(config['name'])}"
  model = config.get("model")
  if model is None:
    return None
  if not isinstance(model, dict):
    return f"config.model must be an object, got {type(model).__name__}"
  if model.get("name") is not None and names.text_problem(model["name"]):
    return f"config.model.name {names.text_problem(model['name'])}"
  return None


def _slice_features_problem(features):
  """What is wrong with the metadata's slice_features (None: absent, as in version 1), or None."""
  if features is None:
    return None
  if not isinstance(features, list):
    return f"slice_features must be a list, got {names.shown(features)}"
  seen = []
  for feature in features:
    if (
        not isinstance(feature, dict)
        or not isinstance(feature.get("name"), str)
        or not feature["name"]
        or not isinstance(feature.get("values"), list)
        or not all(isinstance(v, str) for v in feature["values"])
    ):
      shape = "{'name': str, 'kind': str, 'values': [str, ...]}"
      return f"slice_features entries must be {shape}, got {names.shown(feature)}"
    seen.append(feature["name"])
  if len(set(seen)) != len(seen):
    return f"slice_features names a feature twice: {seen}"
  return None


def read_metadata(path):
  """The JSON beside a prediction file, checked for the required fields and their types."""
  meta_path = metadata_path(path)
  if not io_utils.exists(meta_path):
    raise PieError(f"{path}: no metadata file {meta_path} beside it (an unfinished export?)")
  try:
    metadata = io_utils.read_json(meta_path)
  except ValueError as e:
    raise PieError(f"{meta_path}: not valid JSON ({e})") from None
  if not isinstance(metadata, dict):
    raise PieError(f"{meta_path}: not a metadata object (a JSON {type(metadata).__name__})")
  missing = [k for k in REQUIRED_METADATA if k not in metadata]
  if missing:
    raise PieError(f"{meta_path}: missing metadata fields {missing}")
  problem = _metadata_problem(metadata)
  if problem:
    raise PieError(f"{meta_path}: {problem}")
  return metadata


def read_predictions(path, with_logits=False, batch_size=4096):
  """Reads and checks one prediction file; every problem is a PieError naming the file."""
  metadata = read_metadata(path)
  if not io_utils.exists(path):
    raise PieError(f"{path}: prediction file missing (its metadata {metadata_path(path)} exists)")
  size = io_utils.file_size(path)
  if "file_bytes" in metadata and size != metadata["file_bytes"]:
    # Checked before parsing: a file cut at a record boundary, or with records appended, parses cleanly.
    raise PieError(
        f"{path}: truncated or corrupt TFRecord ({size} bytes, its metadata records "
        f"{metadata['file_bytes']}; rerun the launcher or the export to redo this model)"
    )
  k = int(metadata["top_k"])
  num_classes = int(metadata["num_classes"])
  features = {"example_id": (records.INT64, 1), "label": (records.INT64, 1), "top_k_classes": (records.INT64, k)}
  features["top_k_probs"] = (records.FLOAT, k)
  if with_logits:
    if not metadata.get("has_logits"):
      raise PieError(f"{path}: logits were requested but this export has none (config.export_logits)")
    features["logits"] = (records.FLOAT, num_classes)
  num_slice_features = len(metadata.get("slice_features") or [])
  if num_slice_features:
    features["slice_values"] = (records.INT64, num_slice_features)
  data, starts, lengths = _checked_records(path, metadata)
  arrays = records.decode_examples(data, starts, lengths, features)
  if arrays is None:  # records laid out otherwise than pie writes them: TensorFlow parses them
    arrays = _parse_with_tensorflow(path, data, starts, lengths, features, batch_size)
  for key in ("example_id", "label"):
    arrays[key] = arrays[key][:, 0]
  return _checked(path, metadata, arrays)


def _checked_records(path, metadata):
  """(the file's bytes, record starts, record lengths), every byte checked: against the whole file's CRC-32C when the
  metadata records it, else against each record's own two CRCs (as tf.data checks them)."""
  with io_utils.open_file(path, "rb") as f:
    data = f.read()
  if "file_crc32c" in metadata and records.file_crc32c(data) != metadata["file_crc32c"]:
    raise PieError(
        f"{path}: truncated or corrupt TFRecord (its CRC-32C differs from the one in "
        f"{metadata_path(path)}; rerun the launcher or the export to redo this model)"
    )
  try:
    starts, lengths = records.record_offsets(data)
    if "file_crc32c" not in metadata:
      records.check_record_crcs(data, starts, lengths)
  except ValueError as e:
    raise PieError(f"{path}: truncated or corrupt TFRecord ({e})") from None
  return data, starts, lengths


def _parse_with_tensorflow(path, data, starts, lengths, features, batch_size):
  """tf.io.parse_example of the records, `batch_size` at a time: for records pie's decoder does not know the layout
  of (another writer's field order or encoding); the same arrays, or the schema's error."""
  tf = _tf()
  spec = {
      key: tf.io.FixedLenFeature([width], tf.int64 if kind == records.INT64 else tf.float32)
      for key, (kind, width) in features.items()
  }
  parts = {key: [] for key in spec}
  serialized = [data[s + 12 : s + 12 + n] for s, n in zip(starts.tolist(), lengths.tolist())]
  try:
    for start in range(0, len(serialized), batch_size):
      for key, value in tf.io.parse_example(tf.constant(serialized[start : start + batch_size]), spec).items():
        parts[key].append(value.numpy())
  except tf.errors.InvalidArgumentError as e:
    raise PieError(f"{path}: records do not match the prediction schema ({e.message.splitlines()[0]})") from None
  except UnicodeDecodeError:
    # TensorFlow quotes the unparsable bytes in its error message and then fails to decode that message.
    raise PieError(f"{path}: records do not match the prediction schema (not tf.train.Example records)") from None
  return {
      key: (np.concatenate(v) if v else np.zeros((0,) + tuple(spec[key].shape), spec[key].dtype.as_numpy_dtype))
      for key, v in parts.items()
  }


def read_many(paths, workers=2, **kwargs):
  """Yields `read_predictions(path, **kwargs)` for each path, in order, reading `workers` files at a time.

  TensorFlow parses outside the GIL, so two threads use two cores. At most `workers` + 1 files are in memory at
  once, however slowly the caller consumes them. A bad file raises its PieError when its turn comes.
  """
  paths = list(paths)
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    pending = collections.deque()
    for path in paths:
      pending.append(pool.submit(read_predictions, path, **kwargs))
      if len(pending) > workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def _checked(path, metadata, arrays):
  ids = arrays["example_id"]
  n = int(metadata["num_examples"])
  if len(ids) != n:
    raise PieError(f"{path}: holds {len(ids)} records, its metadata says {n} (truncated or overwritten?)")
  if n > 1 and not np.all(ids[1:] > ids[:-1]):  # exports are written in id order; others are sorted here
    order = np.argsort(ids, kind="stable")
    arrays = {key: value[order] for key, value in arrays.items()}
    ids = arrays["example_id"]
  if n and (ids[0] != 0 or ids[-1] != n - 1 or np.any(np.diff(ids) != 1)):
    dupes = int(n - len(np.unique(ids)))
    raise PieError(f"{path}: example ids are not 0..{n - 1} exactly once each ({dupes} duplicates)")
  num_classes = int(metadata["num_classes"])
  for key in ("label", "top_k_classes"):
    if arrays[key].size and (arrays[key].min() < 0 or arrays[key].max() >= num_classes):
      raise PieError(f"{path}: {key} outside [0, {num_classes})")
  for key in ("top_k_probs", "logits"):
    if key in arrays and not np.all(np.isfinite(arrays[key])):
      raise PieError(f"{path}: NaN or infinite values in {key}")
  probs = arrays["top_k_probs"]
  if probs.size and (probs.min() < 0 or probs.max() > 1 + 1e-6):
    raise PieError(f"{path}: top_k_probs outside [0, 1] (not softmax probabilities)")
  slice_features = metadata.get("slice_features") or []
  slice_values = arrays.get("slice_values", np.zeros((n, 0), np.int64))
  for j, feature in enumerate(slice_features):
    codes = slice_values[:, j]
    if codes.size and (codes.min() < 0 or codes.max() >= len(feature["values"])):
      raise PieError(
          f"{path}: slice_values of {feature['name']!r} outside [0, {len(feature['values'])}) (its number of values)"
      )
  return Predictions(
      path=path,
      metadata=metadata,
      example_ids=ids,
      labels=arrays["label"],
      top_k_classes=arrays["top_k_classes"],
      top_k_probs=arrays["top_k_probs"],
      logits=arrays.get("logits"),
      slice_values=slice_values,
  )
