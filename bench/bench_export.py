"""Benchmark: exporting predictions against a bare `model.predict` over the same eval pipeline.

A synthetic eval split (--examples images, default 50,000) behind pie.data's Dataset interface, so both paths use
the same tf.data input pipeline (the digits preprocessing at 8x8x1 for the digits-sized CNN; --resnet adds
ResNet-50 at 32x32x3 with 1000 classes on fewer images). Timed, alternately, --repeats times each:

  * bare: `model.predict` over the eval batches' images (logits only, nothing kept beyond the output array);
  * export: pie.export.export_predictions, i.e. the top-k and softmax, gathering ids and labels, serializing every
    record in the export schema and writing the TFRecord and its metadata.

Target: export images/s >= 0.9 x bare images/s (medians). Exits with status 1 when missed. With --check_python
it also times the per-record Python serialization (pie.predictions.serialize_example) that the vectorized
encoder replaces, and checks both give the same parsed records.

Usage: python bench/bench_export.py [--examples 50000] [--repeats 3] [--resnet]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pie  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import ml_collections  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from pie import data as data_lib  # noqa: E402
from pie import export as export_lib  # noqa: E402
from pie import models  # noqa: E402
from pie import predictions as predictions_lib  # noqa: E402
from pie import records  # noqa: E402


class SyntheticEval(data_lib.Dataset):
  """Random uint8 images with random labels as an eval split (no training split)."""

  def __init__(self, num_examples, shape, num_classes, preprocess, image_size=None, seed=0):
    super().__init__(ml_collections.ConfigDict({"preprocess": preprocess, "image_size": image_size}))
    rng = np.random.default_rng(seed)
    self.images = rng.integers(0, 256, (num_examples, *shape), dtype=np.uint8)
    self.labels = rng.integers(0, num_classes, num_examples)
    self.info = data_lib.DatasetInfo(
        name="synthetic",
        num_classes=num_classes,
        class_names=[str(c) for c in range(num_classes)],
        image_shape=shape,
        num_train=None,
        num_eval=num_examples,
        train_split="none",
        eval_split="synthetic",
    )

  def _raw_train(self, seed):
    raise ValueError("the export benchmark's synthetic dataset has an eval split only")

  def _raw_eval(self):
    return tf.data.Dataset.from_tensor_slices({"image": self.images, "label": self.labels})


def _metadata(info):
  return {
      "dataset": info.name,
      "split": info.eval_split,
      "num_classes": info.num_classes,
      "class_names": list(info.class_names),
      "target_sparsity": 0.0,
      "measured_sparsity": 0.0,
      "seed": 0,
      "config_hash": "bench0000000000",
  }


def bench(label, model, dataset, batch_size, repeats, out_dir):
  images_only = dataset.eval_batches(batch_size).map(lambda b: b["image"])
  model.predict(images_only.take(2), verbose=0)  # trace both paths before timing
  path = os.path.join(out_dir, f"{label}.tfrecord")
  export_lib.export_predictions(model, dataset, path, _metadata(dataset.info), batch_size=batch_size, log=lambda m: 0)
  n = dataset.info.num_eval
  bare, export = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    model.predict(images_only, verbose=0)
    bare.append(n / (time.perf_counter() - start))
    start = time.perf_counter()
    export_lib.export_predictions(model, dataset, path, _metadata(dataset.info), batch_size=batch_size, log=lambda m: 0)
    export.append(n / (time.perf_counter() - start))
  bare_rate, export_rate = statistics.median(bare), statistics.median(export)
  read = predictions_lib.read_predictions(path)
  assert np.array_equal(read.example_ids, np.arange(n)) and np.array_equal(read.labels, dataset.labels)
  print(
      f"{label}: {n} images, batch {batch_size}: bare predict {bare_rate:,.0f} img/s, export "
      f"{export_rate:,.0f} img/s, ratio {export_rate / bare_rate:.3f}",
      flush=True,
  )
  return export_rate / bare_rate, path


def check_python_serialization(path):
  """Times the per-record Python serializer on the exported arrays and checks it parses to the same records."""
  read = predictions_lib.read_predictions(path)
  start = time.perf_counter()
  python = [
      predictions_lib.serialize_example(read.example_ids[i], read.labels[i], read.top_k_classes[i], read.top_k_probs[i])
      for i in range(len(read.example_ids))
  ]
  python_s = time.perf_counter() - start
  start = time.perf_counter()
  buffer, offsets = records.encode_examples(read.example_ids, read.labels, read.top_k_classes, read.top_k_probs)
  fast_s = time.perf_counter() - start
  for i in range(0, len(python), max(1, len(python) // 1000)):
    expected = tf.train.Example.FromString(python[i])
    assert tf.train.Example.FromString(buffer[offsets[i] : offsets[i + 1]]) == expected, f"record {i} differs"
  print(
      f"serialization of {len(python)} records: per-record Python {python_s:.2f} s, vectorized {fast_s:.2f} s "
      f"({python_s / fast_s:.1f}x); sampled records parse identically"
  )


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples", type=int, default=50_000)
  parser.add_argument("--batch_size", type=int, default=500, help="the digits config's eval_batch_size")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--resnet", action="store_true", help="also ResNet-50 at 32x32 (1000 classes)")
  parser.add_argument("--resnet_examples", type=int, default=2_000)
  parser.add_argument("--check_python", action="store_true")
  parser.add_argument("--target", type=float, default=0.9)
  args = parser.parse_args(argv)
  print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
  keras.utils.set_random_seed(0)
  failures = []
  with tempfile.TemporaryDirectory() as out_dir:
    cnn = models.small_cnn((8, 8, 1), 10)
    ratio, path = bench(
        "digits_cnn", cnn, SyntheticEval(args.examples, (8, 8, 1), 10, "digits"), args.batch_size, args.repeats, out_dir
    )
    if ratio < args.target:
      failures.append(f"digits CNN export at {ratio:.3f} x bare predict < {args.target}")
    if args.check_python:
      check_python_serialization(path)
    if args.resnet:
      resnet = models.resnet50((32, 32, 3), 1000)
      ratio, _ = bench(
          "resnet50_32px",
          resnet,
          SyntheticEval(args.resnet_examples, (32, 32, 3), 1000, "digits"),
          100,
          args.repeats,
          out_dir,
      )
      if ratio < args.target:
        failures.append(f"ResNet-50 export at {ratio:.3f} x bare predict < {args.target}")
  for failure in failures:
    print(f"FAILED: {failure}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
