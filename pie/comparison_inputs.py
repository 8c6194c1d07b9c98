"""What `pie.compare` accepts, turned into one model's top-1 on the eval split.

A reference or candidate is any of:
  * a Keras model: a file (`.h5`, `.hdf5`, `.keras`), a Keras SavedModel folder, or a tf_keras Model in memory;
    predicted on the eval split with `pie.export.predict_eval` (its outputs are logits; probabilities are their
    softmax);
  * a TFLite flatbuffer: a `.tflite` file or its bytes (any of pie's PTQ modes or the user's own, float32 image in and
    logits out), run with `pie.quantization.TFLiteClassifier` through `pie.export.predict_tflite`;
  * a prediction file in pie's schema (`.tfrecord` with its `.json`, `pie.write_predictions`), so that models of any
    framework can be compared; or a `pie.predictions.Predictions` already read;
  * arrays over the eval split's examples in order: int top-1 labels [n], or scores [n, num_classes] (logits, or
    probabilities when every row is a distribution).

Everything is checked against the eval split before any statistic is computed: the number of classes a model outputs,
the input size it expects, the example ids and labels a prediction file holds. Each problem is one PieError naming the
file (or the argument, for objects in memory), so that the binary prints one line and writes nothing.

TensorFlow is imported by the loaders that need it, not by this module: arrays are compared without it.
"""

import dataclasses
import os

import numpy as np

from pie import names as names_lib
from pie.errors import PieError

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
TFLITE_SUFFIX = ".tflite"
PREDICTIONS_SUFFIX = ".tfrecord"
# What the kinds of input are called in compare_summary.json.
KERAS, TFLITE, PREDICTIONS, ARRAY = "keras", "tflite", "predictions", "array"
_ACCEPTED = (
    "a Keras model (.h5, .keras or a SavedModel folder), a TFLite flatbuffer (.tflite) or a prediction file "
    "(.tfrecord with its .json)"
)


@dataclasses.dataclass(frozen=True)
class ModelOutputs:
  """One model's answers on the eval split, in example_id order.

  `prob` is the probability the model gives its top-1 (NaN when unknown, e.g. top-1 arrays). `size` is the model's
  measured storage (`pie.quantization` size-report fields) or None when it is not a model file or object.
  `correct` says which examples the model got right when a metric decides it rather than top-1 against the label
  (prediction tables and lm-eval samples, pie.prediction_tables: their examples without a class have top-1 and
  label -1); None: top-1 equals the label.
  """

  name: str
  top1: np.ndarray  # int64 [n_examples]
  prob: np.ndarray  # float64 [n_examples]
  source: str = "in memory"
  kind: str = ARRAY
  size: dict | None = None
  correct: np.ndarray | None = None  # bool [n_examples]


@dataclasses.dataclass
class EvalSplit:
  """The eval split the models are compared on: its labels and class names, and the dataset to predict it with.

  `labels` come from the dataset (or from the caller, for arrays compared without a config); models predicted
  through the dataset fill them in on the way, so a large split is not read once more just for its labels.
  """

  class_names: list
  labels: np.ndarray | None = None
  dataset: object = None  # a pie.data.Dataset, or None for arrays compared without a config
  batch_size: int = 256
  name: str = "in memory"
  split: str = ""
  _image_shape: tuple | None = None

  @property
  def num_classes(self):
    return len(self.class_names)

  def require_labels(self):
    """The labels, read from the dataset when no model has been predicted through it yet."""
    if self.labels is None:
      labels = [batch["label"].numpy() for batch in self.dataset.eval_batches(self.batch_size)]
      self.labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    return self.labels

  def image_shape(self):
    """(H, W, C) of the preprocessed eval images, None where unknown."""
    if self._image_shape is None:
      spec = self.dataset.eval_batches(self.batch_size).element_spec["image"]
      self._image_shape = tuple(spec.shape[1:])
    return self._image_shape


def load_config(config):
  """A ConfigDict, or the path of a config file whose get_config() returns one (as the binaries' --config)."""
  if config is None or not isinstance(config, (str, os.PathLike)):
    return config
  from pie import config_files  # pylint: disable=import-outside-toplevel

  return config_files.load(config)


def eval_split(config=None, labels=None, class_names=None, batch_size=None):
  """The split to compare on: the config's eval split (pie.data.load_dataset), or labels given with class names."""
  if config is not None:
    if labels is not None or class_names is not None:
      raise PieError("give a config or labels with class_names, not both: the config's eval split has its own labels")
    from pie import data as data_lib  # pylint: disable=import-outside-toplevel

    dataset = data_lib.load_dataset(config.data)
    return EvalSplit(
        class_names=_checked_class_names(
            dataset.info.class_names, f"the class names of {dataset.info.name}:", "config"
        ),
        dataset=dataset,
        batch_size=int(batch_size or config.get("eval_batch_size", 256)),
        name=dataset.info.name,
        split=dataset.info.eval_split,
    )
  if labels is None or class_names is None:
    raise PieError(
        "give a config (its eval split is what the models are compared on), or, to compare arrays, the labels and "
        "class_names of their examples",
        parameter="config",
    )
  labels = np.asarray(labels)
  if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
    raise PieError(f"labels must be a 1-D int array, got {labels.dtype} of shape {labels.shape}", parameter="labels")
  names = _checked_class_names(class_names, "", "class_names")
  if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
    raise PieError(f"labels outside 0..{len(names) - 1} ({len(names)} class_names)", parameter="labels")
  return EvalSplit(class_names=names, labels=labels.astype(np.int64))


def _checked_class_names(class_names, what, parameter):
  """The class names as text, each fit to be shown in compare.html, the CSVs and the gate's line (pie.names)."""
  out = [n if isinstance(n, str) else str(n) for n in class_names]
  for i, name in enumerate(out):
    names_lib.check_text(name, f"{what} class_names[{i}]".strip(), parameter=parameter)
  return out


def default_name(source, index, role):
  """A file's stem (a folder's name), else `reference` or `candidate<index + 1>` for objects in memory."""
  if isinstance(source, (str, os.PathLike)):
    return os.path.splitext(os.path.basename(os.fspath(source).rstrip("/")))[0]
  return "reference" if role == "reference" else f"candidate{index + 1}"


def load(source, name, split, parameter, log=print):
  """`source` (see the module docstring) as ModelOutputs on `split`; a PieError naming it when it does not fit."""
  if isinstance(source, ModelOutputs):
    return _checked_outputs(dataclasses.replace(source, name=name), split, parameter)
  if isinstance(source, np.ndarray):
    return _from_array(source, name, split, parameter)
  if isinstance(source, (str, os.PathLike)):
    return _load_path(os.fspath(source), name, split, parameter, log)
  if isinstance(source, (bytes, bytearray, memoryview)):
    return _from_tflite(bytes(source), name, split, "the TFLite bytes", parameter, log)
  from pie import predictions as predictions_lib  # pylint: disable=import-outside-toplevel

  if isinstance(source, predictions_lib.Predictions):
    return _from_predictions(source, name, split, source.path, parameter)
  if _is_keras_model(source):
    return _from_keras(source, name, split, f"the Keras model {getattr(source, 'name', '')!r}", parameter, log)
  raise PieError(
      f"{name}: cannot compare a {type(source).__name__}: give a path to {_ACCEPTED}, a tf_keras Model, TFLite bytes, "
      "or an array of top-1 labels or scores",
      parameter=parameter,
  )


def _is_keras_model(obj):
  import tf_keras as keras  # pylint: disable=import-outside-toplevel

  return isinstance(obj, keras.Model)


def _load_path(path, name, split, parameter, log):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  if not tf.io.gfile.exists(path):
    raise PieError(f"{path}: no such file or folder", parameter=parameter)
  if path.endswith(PREDICTIONS_SUFFIX):
    from pie import predictions as predictions_lib  # pylint: disable=import-outside-toplevel

    try:
      predictions = predictions_lib.read_predictions(path)
    except PieError as e:  # already names the file; the binary needs the argument to name the flag
      raise PieError(str(e), parameter=parameter) from None
    return _from_predictions(predictions, name, split, path, parameter)
  if path.endswith(TFLITE_SUFFIX):
    try:
      with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    except (tf.errors.OpError, OSError) as e:
      raise PieError(f"{path}: cannot be read ({_first_line(e)})", parameter=parameter) from None
    return _from_tflite(data, name, split, path, parameter, log)
  if path.endswith(KERAS_SUFFIXES) or tf.io.gfile.isdir(path):
    return _from_keras(_load_keras(path, parameter), name, split, path, parameter, log)
  raise PieError(f"{path}: not a kind of model pie compares: give {_ACCEPTED}", parameter=parameter)


def _first_line(error):
  text = str(getattr(error, "message", None) or error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _load_keras(path, parameter):
  """A tf_keras model from a file or a SavedModel folder (remote files copied to a local temporary file first)."""
  import tempfile  # pylint: disable=import-outside-toplevel

  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tf_keras as keras  # pylint: disable=import-outside-toplevel

  if tf.io.gfile.isdir(path) and not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
    raise PieError(
        f"{path}: a folder without saved_model.pb is not a SavedModel: give {_ACCEPTED}", parameter=parameter
    )
  try:
    if tf.io.gfile.isdir(path) or os.path.exists(path):
      model = keras.models.load_model(path, compile=False)
    else:
      with tempfile.TemporaryDirectory() as tmpdir:
        local = os.path.join(tmpdir, os.path.basename(path))
        tf.io.gfile.copy(path, local)
        model = keras.models.load_model(local, compile=False)
  except (OSError, ValueError, TypeError, KeyError, tf.errors.OpError) as e:
    raise PieError(f"{path}: not a readable Keras model ({_first_line(e)})", parameter=parameter) from None
  if not isinstance(model, keras.Model):
    raise PieError(
        f"{path}: a SavedModel but not a Keras model (no keras_metadata.pb); convert it to TFLite or write its "
        "predictions with pie.write_predictions",
        parameter=parameter,
    )
  return model


def _require_dataset(split, what, parameter):
  if split.dataset is None:
    raise PieError(f"{what}: a model is predicted on the config's eval split: give a config", parameter="config")


def _check_num_classes(num_classes, split, what, parameter):
  if num_classes != split.num_classes:
    raise PieError(
        f"{what}: outputs {num_classes} classes, the eval split of {split.name} has {split.num_classes}: the model's "
        "outputs do not match the dataset's classes",
        parameter=parameter,
    )


def _check_input_shape(expected, split, what, parameter):
  """The model's (H, W, C) against the eval images' (None or -1: any size)."""
  actual = split.image_shape()
  for want, got in zip(expected, actual):
    if want is not None and want >= 0 and got is not None and want != got:
      raise PieError(
          f"{what}: expects images of shape {tuple(expected)}, the eval split of {split.name} gives {tuple(actual)} "
          "(config.data's preprocessing and image_size)",
          parameter=parameter,
      )


def _from_keras(model, name, split, what, parameter, log):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from pie import export as export_lib  # pylint: disable=import-outside-toplevel
  from pie import quantization  # pylint: disable=import-outside-toplevel

  _require_dataset(split, what, parameter)
  if len(model.inputs or ()) != 1 or len(model.outputs or ()) != 1 or len(model.output_shape) != 2:
    raise PieError(f"{what}: expected one image input and one [N, num_classes] output", parameter=parameter)
  _check_num_classes(int(model.output_shape[-1]), split, what, parameter)
  _check_input_shape(tuple(model.input_shape[1:]), split, what, parameter)
  try:
    arrays = export_lib.predict_eval(model, split.dataset, split.batch_size, top_k=1, log=log)
  except (ValueError, tf.errors.OpError) as e:
    raise PieError(f"{what}: fails to predict the eval split ({_first_line(e)})", parameter=parameter) from None
  size = None
  try:
    size = _size_fields(quantization.keras_model_size_report(model), "measured")
  except (PieError, ValueError, RuntimeError, tf.errors.OpError) as e:
    log(f"{name}: compressed size not measured (its TFLite conversion fails: {_first_line(e)})")
  return _from_arrays(arrays, name, split, what, KERAS, size)


def _from_tflite(data, name, split, what, parameter, log):
  from pie import export as export_lib  # pylint: disable=import-outside-toplevel
  from pie import quantization  # pylint: disable=import-outside-toplevel

  _require_dataset(split, what, parameter)
  try:
    classifier = quantization.TFLiteClassifier(data)
  except PieError as e:  # not a flatbuffer, or not float32 images in and logits out
    raise PieError(f"{what}: {e}", parameter=parameter) from None
  except (RuntimeError, ValueError) as e:
    raise PieError(
        f"{what}: not a TFLite model the interpreter can load ({_first_line(e)})", parameter=parameter
    ) from None
  _check_num_classes(classifier.num_classes, split, what, parameter)
  _check_input_shape(classifier.input_shape, split, what, parameter)
  try:
    if all(d is not None and d >= 0 for d in split.image_shape()):
      # One image first: ops the interpreter lacks fail when it allocates, before the whole split is read.
      classifier.predict_logits(np.zeros((1,) + tuple(split.image_shape()), np.float32))
    arrays = export_lib.predict_tflite(data, split.dataset, split.batch_size, top_k=1, log=log)
  except PieError as e:
    raise PieError(f"{what}: {e}", parameter=parameter) from None
  except (RuntimeError, ValueError) as e:
    raise PieError(
        f"{what}: the TFLite interpreter cannot run it ({_first_line(e)}); a model with ops outside TFLite's "
        "builtin kernels needs them registered, or its predictions written with pie.write_predictions",
        parameter=parameter,
    ) from None
  size = _size_fields(quantization.model_size_report(data), "measured")
  return _from_arrays(arrays, name, split, what, TFLITE, size)


def _size_fields(report, source):
  """The storage figures compare_summary.json reports for a model (see pie.quantization.model_size_report)."""
  bits = report.get("bits_per_weight")
  return {
      "source": source,
      "format": report.get("format", "tflite"),
      "raw_bytes": int(report["raw_bytes"]),
      "gzip_bytes": int(report["gzip_bytes"]),
      "bits_per_weight": None if bits is None or not np.isfinite(bits) else float(bits),
  }


def _from_arrays(arrays, name, split, what, kind, size):
  """Outputs of a model predicted through the dataset (predict_eval / predict_tflite arrays)."""
  labels = arrays["labels"].astype(np.int64)
  if split.labels is None:
    split.labels = labels
  elif not np.array_equal(split.labels, labels):  # the same dataset read twice: never expected
    raise PieError(f"{what}: the eval split gave other labels than for the models before it; is it deterministic?")
  if arrays["example_ids"].size and not np.array_equal(arrays["example_ids"], np.arange(len(labels))):
    raise PieError(f"{what}: the eval split's example ids are not 0..{len(labels) - 1} in order")
  return ModelOutputs(
      name=name,
      top1=arrays["top_k_classes"][:, 0].astype(np.int64),
      prob=arrays["top_k_probs"][:, 0].astype(np.float64),
      source=what,
      kind=kind,
      size=size,
  )


def _from_predictions(predictions, name, split, what, parameter):
  """A prediction file's top-1, after checking that it holds this split: its classes, example ids and labels."""
  meta = predictions.metadata
  _check_num_classes(int(meta["num_classes"]), split, what, parameter)
  labels = split.require_labels()
  n = len(predictions.example_ids)
  if n != len(labels):
    raise PieError(
        f"{what}: holds example ids 0..{n - 1}, the eval split of {split.name} has {len(labels)} examples: the "
        "file's predictions are not on this split",
        parameter=parameter,
    )
  differ = np.flatnonzero(predictions.labels != labels)
  if differ.size:
    raise PieError(
        f"{what}: its labels differ from the eval split's at {differ.size} example ids (first: "
        f"{differ[:5].tolist()}): the file's predictions are not on this split",
        parameter=parameter,
    )
  size = None
  if meta.get("compressed_bytes") is not None:
    compression = meta.get("compression") or {}
    size = {
        "source": "prediction metadata",
        "format": compression.get("format", "tflite"),
        "raw_bytes": compression.get("raw_bytes"),
        "gzip_bytes": int(meta["compressed_bytes"]),
        "bits_per_weight": meta.get("bits_per_weight"),
    }
  return ModelOutputs(
      name=name,
      top1=predictions.top1.astype(np.int64),
      prob=predictions.top_k_probs[:, 0].astype(np.float64),
      source=what,
      kind=PREDICTIONS,
      size=size,
  )


def _from_array(values, name, split, parameter):
  """Top-1 labels [n] or scores [n, num_classes] (probabilities when every row is a distribution, else logits)."""
  labels = split.require_labels()
  what = f"{name} (an array)"
  if values.ndim == 1:
    if values.size and not np.issubdtype(values.dtype, np.integer):
      raise PieError(f"{what}: a 1-D array must hold int top-1 labels, got {values.dtype}", parameter=parameter)
    top1, prob = values.astype(np.int64), np.full(len(values), np.nan)
  elif values.ndim == 2:
    _check_num_classes(values.shape[1], split, what, parameter)
    scores = values.astype(np.float64)
    if not np.all(np.isfinite(scores)):
      raise PieError(f"{what}: holds NaN or infinite scores", parameter=parameter)
    is_distribution = scores.size and scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)
    if not is_distribution:
      scores = np.exp(scores - scores.max(axis=1, keepdims=True))
      scores /= scores.sum(axis=1, keepdims=True)
    top1 = np.argmax(scores, axis=1).astype(np.int64)
    prob = scores[np.arange(len(scores)), top1]
  else:
    raise PieError(f"{what}: expected top-1 labels [n] or scores [n, num_classes], got shape {values.shape}")
  if len(top1) != len(labels):
    raise PieError(f"{what}: {len(top1)} examples, the eval split has {len(labels)}", parameter=parameter)
  return _checked_outputs(ModelOutputs(name=name, top1=top1, prob=prob), split, parameter)


def _checked_outputs(outputs, split, parameter):
  labels = split.require_labels()
  top1 = np.asarray(outputs.top1)
  if top1.shape != labels.shape:
    raise PieError(
        f"{outputs.name}: {top1.shape[0] if top1.ndim else 0} predictions, the eval split has {len(labels)} examples",
        parameter=parameter,
    )
  if top1.size and (top1.min() < 0 or top1.max() >= split.num_classes):
    raise PieError(
        f"{outputs.name}: predicts class ids outside 0..{split.num_classes - 1}: its outputs do not match the "
        f"dataset's {split.num_classes} classes",
        parameter=parameter,
    )
  return dataclasses.replace(
      outputs, top1=top1.astype(np.int64), prob=np.broadcast_to(np.asarray(outputs.prob, np.float64), top1.shape)
  )
