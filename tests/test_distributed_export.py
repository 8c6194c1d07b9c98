"""The export runs under the training strategy and writes the file the host export wrote, byte for byte.

`pie.export.predict_eval` distributes the eval split like training data (per-host input, padded last batch) and
gathers every replica's outputs to the host. The reference here is the export as it ran before (one host loop over
`Dataset.eval_batches`, the last batch short): on the default strategy and on a mirrored strategy of two logical
CPUs (a subprocess, since logical devices must be set before TensorFlow starts) the files must be identical, with
and without logits, on the embedded digits (in memory) and on mocked CIFAR-10 (TFDS, encoded images).
"""

import json
import os
import subprocess
import sys

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
import tf_keras as keras  # noqa: E402

from pie import data as data_lib  # noqa: E402
from pie import devices  # noqa: E402
from pie import export as export_lib  # noqa: E402
from pie import models  # noqa: E402
from pie import predictions as predictions_lib  # noqa: E402
from pie.errors import PieError  # noqa: E402
from tests.conftest import REPO  # noqa: E402

CIFAR_EXAMPLES = 23  # eval batches of 6 over 2 replicas: three full, then 5 examples and one blank


def host_export_arrays(model, dataset, batch_size, top_k, with_logits):
  """The export before it ran under a strategy: one host loop over eval_batches, the last batch short."""
  k = min(top_k, int(model.output_shape[-1]))

  @tf.function(reduce_retracing=True)
  def step(images):
    logits = tf.cast(model(images, training=False), tf.float32)
    probs, classes = tf.math.top_k(tf.nn.softmax(logits), k=k)
    return logits, classes, probs

  out = {"example_ids": [], "labels": [], "top_k_classes": [], "top_k_probs": [], "logits": []}
  for batch in dataset.eval_batches(batch_size):
    logits, classes, probs = step(batch["image"])
    out["example_ids"].append(batch["example_id"].numpy())
    out["labels"].append(batch["label"].numpy())
    out["top_k_classes"].append(classes.numpy().astype(np.int64))
    out["top_k_probs"].append(probs.numpy())
    if with_logits:
      out["logits"].append(logits.numpy())
  return {key: np.concatenate(v) if v else None for key, v in out.items()}


def _metadata(info):
  return {
      "dataset": info.name,
      "split": info.eval_split,
      "num_classes": info.num_classes,
      "class_names": list(info.class_names),
      "target_sparsity": 0.0,
      "measured_sparsity": 0.0,
      "seed": 0,
      "config_hash": "0123456789abcdef",
  }


def write(path, arrays, info):
  predictions_lib.write_predictions(
      path,
      arrays["example_ids"],
      arrays["labels"],
      arrays["top_k_classes"],
      arrays["top_k_probs"],
      _metadata(info),
      logits=arrays["logits"],
  )
  with open(path, "rb") as f:
    return f.read()


def _digits():
  config = ml_collections.ConfigDict(
      {"name": "digits", "train_split": "train", "eval_split": "test", "preprocess": "digits", "image_size": None}
  )
  return data_lib.load_dataset(config)


def _cifar(data_dir):
  config = ml_collections.ConfigDict(
      {
          "name": "cifar10",
          "data_dir": str(data_dir),
          "train_split": "train",
          "eval_split": "test",
          "preprocess": "cifar",
          "image_size": None,
      }
  )
  return data_lib.load_dataset(config)


def _model(name, dataset):
  keras.utils.set_random_seed(3)
  shape = models.input_shape_for(dataset.info, dataset.config)
  if name == "small_cnn":
    return models.small_cnn(shape, dataset.info.num_classes)
  return models.cifar_resnet(shape, dataset.info.num_classes, depth=8)


def compare_exports(out_dir, strategy, cases):
  """Writes the host-loop export and the strategy's export of each case; returns {case: [equal, equal logits]}."""
  results = {}
  for name, dataset, model_name, batch_size in cases:
    with strategy.scope():
      model = _model(model_name, dataset)
    equal = []
    for with_logits in (False, True):
      reference = host_export_arrays(model, dataset, batch_size, 5, with_logits)
      ours = export_lib.predict_eval(model, dataset, batch_size, with_logits=with_logits, strategy=strategy)
      a = write(os.path.join(out_dir, f"{name}_{with_logits}_host.tfrecord"), reference, dataset.info)
      b = write(os.path.join(out_dir, f"{name}_{with_logits}_strategy.tfrecord"), ours, dataset.info)
      equal.append(a == b and len(reference["example_ids"]) == len(ours["example_ids"]))
    results[name] = equal
  return results


def test_default_strategy_export_is_the_host_export(tmp_path):
  dataset = _digits()
  # 500 examples in batches of 96: five full batches and a short one of 20 (here padded to 96).
  results = compare_exports(str(tmp_path), tf.distribute.get_strategy(), [("digits", dataset, "small_cnn", 96)])
  assert results == {"digits": [True, True]}
  with tfds.testing.mock_data(num_examples=CIFAR_EXAMPLES):
    cifar = _cifar(tmp_path / "tfds")
    results = compare_exports(str(tmp_path), tf.distribute.get_strategy(), [("cifar", cifar, "cifar_resnet", 6)])
  assert results == {"cifar": [True, True]}
  read = predictions_lib.read_predictions(str(tmp_path / "cifar_True_strategy.tfrecord"), with_logits=True)
  np.testing.assert_array_equal(read.example_ids, np.arange(CIFAR_EXAMPLES))
  assert read.logits.shape == (CIFAR_EXAMPLES, 10)


@pytest.mark.slow
def test_mirrored_two_replica_export_is_the_host_export(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "tests.test_distributed_export", str(tmp_path)],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["replicas"] == 2
  assert report["results"] == {"digits": [True, True], "cifar": [True, True]}


@pytest.mark.parametrize("num_examples", [1, 11, 12, 13, 24])
def test_eval_input_covers_every_example_once_across_hosts(num_examples):
  """Two hosts of two replicas each (global batch 12): each host takes half of every global batch, both run the
  same number of full batches, and the real ids of both are 0..n-1 exactly once."""
  images = np.arange(num_examples * 4, dtype=np.uint8).reshape(num_examples, 2, 2, 1)
  dataset = _InMemory(images)
  input_fn = dataset.eval_input_fn(12)
  hosts = []
  for host in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=host, num_replicas_in_sync=4)
    batches = list(input_fn(context).as_numpy_iterator())
    assert all(len(b["example_id"]) == 3 for b in batches)
    hosts.append(batches)
  steps = -(-num_examples // 12)
  assert [len(h) for h in hosts] == [2 * steps, 2 * steps]
  ids = np.concatenate([b["example_id"] for h in hosts for b in h])
  real = ids[ids != data_lib.PADDING_ID]
  np.testing.assert_array_equal(np.sort(real), np.arange(num_examples))
  assert len(ids) == steps * 12
  for h in hosts:
    for b in h:
      blank = b["example_id"] == data_lib.PADDING_ID
      assert not b["image"][blank].any()
      np.testing.assert_array_equal(b["label"][~blank], b["example_id"][~blank] % 7)
  # Host h holds the h-th half of each global batch (0..5 and 12..17 for host 0), then its blanks.
  for host, batches in enumerate(hosts):
    own = [i for k in range(steps) for i in range(12 * k + 6 * host, 12 * k + 6 * host + 6) if i < num_examples]
    expected = own + [data_lib.PADDING_ID] * (steps * 6 - len(own))
    np.testing.assert_array_equal(np.concatenate([b["example_id"] for b in batches]), expected)


def test_uneven_batch_is_an_error():
  dataset = _InMemory(np.zeros((5, 2, 2, 1), np.uint8))
  context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=4)
  with pytest.raises(PieError, match="does not split over 4 replicas"):
    dataset.eval_input_fn(6)(context)


class _InMemory(data_lib.Dataset):
  """A tiny in-memory eval split: labels are example positions mod 7."""

  def __init__(self, images):
    super().__init__(ml_collections.ConfigDict({"preprocess": "digits", "image_size": None}))
    self.images = images
    self.info = data_lib.DatasetInfo(
        name="tiny",
        num_classes=7,
        class_names=[str(c) for c in range(7)],
        image_shape=images.shape[1:],
        num_train=None,
        num_eval=len(images),
        train_split="none",
        eval_split="tiny",
    )

  def _raw_train(self, seed):
    raise ValueError("eval only")

  def _raw_eval(self):
    labels = np.arange(len(self.images), dtype=np.int64) % 7
    return tf.data.Dataset.from_tensor_slices({"image": self.images, "label": labels})


def _main(out_dir):
  """Subprocess: the comparison under a mirrored strategy of two logical CPUs."""
  strategy = devices.make_strategy("mirrored", cpu_replicas=2)
  with tfds.testing.mock_data(num_examples=CIFAR_EXAMPLES):
    cases = [
        ("digits", _digits(), "small_cnn", 96),
        ("cifar", _cifar(os.path.join(out_dir, "tfds")), "cifar_resnet", 6),
    ]
    results = compare_exports(out_dir, strategy, cases)
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump({"replicas": strategy.num_replicas_in_sync, "results": results}, f)


if __name__ == "__main__":
  _main(sys.argv[1])
