"""Predictions of a trained model on a dataset's eval split, written in the export schema.

`predict_eval` runs a Keras model, `predict_tflite` a TFLite flatbuffer (a QAT model's conversion, a post-training
quantized dense model): both return the same arrays, which `pie.model_dir.write_outputs` writes.
"""

import time

import numpy as np
import tensorflow as tf

from pie import predictions as predictions_lib


def predict_eval(model, dataset, batch_size, top_k=5, with_logits=False, log=print):
  """Runs `model` (logits out) over the eval split; returns the arrays of the export schema."""
  num_classes = int(model.output_shape[-1])
  k = min(top_k, num_classes)

  @tf.function(reduce_retracing=True)
  def step(images):
    logits = tf.cast(model(images, training=False), tf.float32)
    probs, classes = tf.math.top_k(tf.nn.softmax(logits), k=k)
    return logits, classes, probs

  out = {"example_ids": [], "labels": [], "top_k_classes": [], "top_k_probs": [], "logits": []}
  expected = dataset.info.num_eval
  start, done, last_log = time.time(), 0, time.time()
  for batch in dataset.eval_batches(batch_size):
    logits, classes, probs = step(batch["image"])
    out["example_ids"].append(batch["example_id"].numpy())
    out["labels"].append(batch["label"].numpy())
    out["top_k_classes"].append(classes.numpy().astype(np.int64))
    out["top_k_probs"].append(probs.numpy())
    if with_logits:
      out["logits"].append(logits.numpy())
    done += len(batch["label"])
    if time.time() - last_log > 10:
      last_log = time.time()
      log(f"predicting: {done}/{expected or '?'} examples, {done / (time.time() - start):.0f}/s")
  arrays = {key: np.concatenate(v) if v else None for key, v in out.items()}
  return arrays


def export_predictions(
    model, dataset, path, metadata, batch_size=256, top_k=5, with_logits=False, log=print, slice_features=()
):
  """Predicts the eval split and writes `path` (.tfrecord) and its metadata JSON; returns (metadata, top-1 arrays).

  `slice_features` (config.slice_features) are exported beside the predictions (`Dataset.eval_slices`).
  """
  slices = dataset.eval_slices(slice_features)  # before predicting: a feature the dataset lacks fails at once
  arrays = predict_eval(model, dataset, batch_size, top_k=top_k, with_logits=with_logits, log=log)
  metadata = predictions_lib.write_predictions(
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
