"""Prediction files in the export schema without training, for tests of readers and analysis."""

import json
import os

import numpy as np

from pie import predictions as predictions_lib
from pie import records
from pie import variants


def fake_metadata(sparsity, seed, num_classes, num_examples, **overrides):
  metadata = {
      "dataset": "digits",
      "split": "test",
      "num_classes": num_classes,
      "class_names": [str(c) for c in range(num_classes)],
      "target_sparsity": float(sparsity),
      "measured_sparsity": float(sparsity),
      "seed": int(seed),
      "config_hash": "feedfacecafebeef",
      "model": "small_cnn",
      "name": variants.model_name(variants.DEFAULT_METHOD, sparsity, seed),
      "config": {
          "name": "fake",
          "data": {
              "name": "digits",
              "train_split": "train",
              "eval_split": "test",
              "preprocess": "digits",
              "image_size": None,
          },
          "model": {"name": "small_cnn"},
      },
  }
  metadata.update(overrides)
  return metadata


def write_model(
    study_dir, sparsity, seed, top1, labels, num_classes, k=3, method=None, slices=None, **metadata_overrides
):
  """Writes <study_dir>/<name>/<name>.tfrecord (+ .json) whose top-1 is `top1`; returns the tfrecord path.

  `slices`, when given, is (slice_features metadata list, int codes [n, features]), exported beside the predictions.

  `method` (a compression method or control of pie/variants.py) is recorded in the metadata and names the model as
  the launcher would; without it the export is dense or magnitude-pruned, as before methods existed.
  """
  top1 = np.asarray(top1, np.int64)
  n = len(top1)
  # Top-k: the given top-1 first, then the next classes in cyclic order; probabilities decreasing.
  classes = (top1[:, None] + np.arange(k)[None, :]) % num_classes
  probs = np.tile(np.linspace(0.6, 0.1, k, dtype=np.float32), (n, 1))
  if method is None:
    name = variants.model_name(variants.DEFAULT_METHOD, sparsity, seed)
  else:
    name = variants.model_name(method, sparsity, seed)
    metadata_overrides = {"method": method, "name": name, **metadata_overrides}
  path = os.path.join(study_dir, name, f"{name}.tfrecord")
  slice_features, slice_values = slices or ([], None)
  predictions_lib.write_predictions(
      path,
      np.arange(n),
      labels,
      classes,
      probs,
      fake_metadata(sparsity, seed, num_classes, n, **metadata_overrides),
      slice_features=slice_features,
      slice_values=slice_values,
  )
  return path


def rewrite_records(path, serialized):
  """Replaces a prediction file's records with `serialized` (bytes each) and updates its metadata's size and
  checksum to match, so only the records themselves can be wrong."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with tf.io.TFRecordWriter(path) as writer:
    for record in serialized:
      writer.write(record)
  data = open(path, "rb").read()
  meta_path = predictions_lib.metadata_path(path)
  meta = json.load(open(meta_path))
  meta.update(file_bytes=len(data), file_crc32c=records.file_crc32c(data))
  json.dump(meta, open(meta_path, "w"))


def write_study(
    study_dir, levels=(0.0, 0.5), seeds=3, num_examples=60, num_classes=4, flip=0.1, seed=0, slices=None, **metadata
):
  """A study whose models are noisy copies of the labels (more noise at higher sparsity); `slices` as for
  `write_model`, `metadata` overrides in every file."""
  rng = np.random.default_rng(seed)
  labels = np.arange(num_examples) % num_classes
  paths = []
  for sparsity in levels:
    for s in range(seeds):
      noise = rng.random(num_examples) < flip * (1 + 3 * sparsity)
      top1 = np.where(noise, rng.integers(0, num_classes, num_examples), labels)
      paths.append(write_model(study_dir, sparsity, s, top1, labels, num_classes, slices=slices, **metadata))
  return labels, paths
