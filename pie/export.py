"""Predictions of a trained model on a dataset's eval split, written in the export schema.

`predict_eval` runs a Keras model, `predict_tflite` a TFLite flatbuffer (a QAT model's conversion, a post-training
quantized dense model): both return the same arrays, which `pie.model_dir.write_outputs` writes.
"""

import time

import numpy as np
import tensorflow as tf

from pie import data as data_lib
from pie import predictions as predictions_lib
from pie.errors import PieError


def export_settings(config):
  """The config's export settings as keyword arguments of `predict_eval`, `predict_tflite` and `export_predictions`:
  eval batch size (default 256), top-k (5), and whether the logits are exported (no)."""
  return {
      "batch_size": config.get("eval_batch_size", 256),
      "top_k": config.get("top_k", 5),
      "with_logits": config.get("export_logits", False),
  }


def predict_eval(
    model, dataset, batch_size, top_k=5, with_logits=False, log=print, strategy=None, image_dtype=tf.float32
):
  """Runs `model` (logits out) over the eval split under `strategy`; returns the arrays of the export schema.

  The model runs where it was trained: the eval split is distributed like training data
  (`dataset.eval_input_fn`, each host its share, the last batch padded), every replica scores its batch, and the
  step gathers the outputs of all replicas of all hosts to every host (`strategy.gather`), which drops the padding
  and puts the examples in example_id order. The default strategy is the host itself. Per example the outputs do not
  depend on how the split was cut into batches, so every strategy writes the same file (tested on CPU). The batch is
  rounded up to a multiple of the replicas.
  """
  strategy = strategy or tf.distribute.get_strategy()
  replicas = strategy.num_replicas_in_sync
  global_batch = -(-int(batch_size) // replicas) * replicas
  num_classes = int(model.output_shape[-1])
  k = min(top_k, num_classes)

  def replica_step(batch):
    logits = tf.cast(model(batch["image"], training=False), tf.float32)
    probs, classes = tf.math.top_k(tf.nn.softmax(logits), k=k)
    out = {"example_ids": batch["example_id"], "labels": batch["label"], "top_k_classes": classes, "top_k_probs": probs}
    if with_logits:
      out["logits"] = logits
    return out

  @tf.function
  def step(batch):
    out = strategy.run(replica_step, args=(batch,))
    return {key: strategy.gather(value, axis=0) for key, value in out.items()}

  batches = strategy.distribute_datasets_from_function(dataset.eval_input_fn(global_batch, image_dtype))
  parts = {key: [] for key in ("example_ids", "labels", "top_k_classes", "top_k_probs", "logits")}
  expected = dataset.info.num_eval
  start, done, last_log = time.time(), 0, time.time()
  for batch in batches:
    for key, value in step(batch).items():
      parts[key].append(value.numpy())
    done += int(np.count_nonzero(parts["example_ids"][-1] != data_lib.PADDING_ID))
    if time.time() - last_log > 10:
      last_log = time.time()
      log(f"predicting: {done}/{expected or '?'} examples, {done / (time.time() - start):.0f}/s")
  return _in_id_order(parts)


def _in_id_order(parts):
  """The gathered outputs without padding, sorted by example_id; each id 0..n-1 exactly once."""
  if not parts["example_ids"]:
    return {key: None for key in parts}
  ids = np.concatenate(parts["example_ids"]).astype(np.int64)
  keep = np.flatnonzero(ids != data_lib.PADDING_ID)
  order = keep[np.argsort(ids[keep], kind="stable")]
  if not np.array_equal(ids[order], np.arange(len(order))):
    raise PieError(f"the distributed export scored {len(order)} examples but not each id 0..{len(order) - 1} once")
  dtypes = {"example_ids": np.int64, "labels": np.int64, "top_k_classes": np.int64}
  return {
      key: np.concatenate(value)[order].astype(dtypes.get(key, np.float32), copy=False) if value else None
      for key, value in parts.items()
  }


def export_predictions(
    model,
    dataset,
    path,
    metadata,
    batch_size=256,
    top_k=5,
    with_logits=False,
    log=print,
    strategy=None,
    slice_features=(),
):
  """Predicts the eval split (under `strategy`, by default the host) and writes `path` (.tfrecord) and its metadata
  JSON; returns (metadata, top-1 arrays).

  `slice_features` (config.slice_features) are exported beside the predictions (`Dataset.eval_slices`).
  """
  slices = dataset.eval_slices(slice_features)  # before predicting: a feature the dataset lacks fails at once
  arrays = predict_eval(model, dataset, batch_size, top_k=top_k, with_logits=with_logits, log=log, strategy=strategy)
  metadata = predictions_lib.write_arrays(path, arrays, metadata, slices)
  return metadata, arrays


def predict_tflite(tflite_bytes, dataset, batch_size=256, top_k=5, with_logits=False, log=print):
  """The arrays of `predict_eval` for a TFLite flatbuffer run by `pie.quantization.TFLiteClassifier`."""
  from pie import quantization  # pylint: disable=g-import-not-at-top

  classifier = quantization.TFLiteClassifier(tflite_bytes)
  k = min(top_k, classifier.num_classes)
  out = {"example_ids": [], "labels": [], "top_k_classes": [], "top_k_probs": [], "logits": []}
  start = time.time()
  for batch in dataset.eval_batches(batch_size):
    logits = classifier.predict_logits(batch["image"].numpy(), batch_size=batch_size).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    # Best first; equal probabilities go to the smaller class id, as tf.math.top_k does.
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    out["example_ids"].append(batch["example_id"].numpy())
    out["labels"].append(batch["label"].numpy())
    out["top_k_classes"].append(order.astype(np.int64))
    out["top_k_probs"].append(np.take_along_axis(probs, order, axis=1).astype(np.float32))
    if with_logits:
      out["logits"].append(logits.astype(np.float32))
  log(f"predicted {sum(len(x) for x in out['labels'])} examples with TFLite in {time.time() - start:.1f}s")
  return {key: np.concatenate(v) if v else None for key, v in out.items()}
