"""Fashion-MNIST from its original IDX files: the reader, the errors that say what to do, and the real files."""

import gzip
import os

import ml_collections
import numpy as np
import pytest

import pie  # noqa: F401  (sets the TensorFlow environment before anything else)
from pie import data
from pie.errors import PieError


def _idx(array):
  """The IDX encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dimensions, the bytes."""
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  return header + np.ascontiguousarray(array, np.uint8).tobytes()


def _write_fake_files(folder, n_train=12, n_test=7, compress=True):
  rng = np.random.default_rng(0)
  arrays = {}
  for split, n in (("train", n_train), ("test", n_test)):
    images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
    arrays[split] = (images, labels)
    for name, array in zip(data.FASHION_MNIST_FILES[split], (images, labels)):
      path = os.path.join(folder, name)
      with (gzip.open if compress else open)(path, "wb") as f:
        f.write(_idx(array))
  return arrays


def _config(data_dir, **overrides):
  config = ml_collections.ConfigDict(
      {
          "name": "fashion_mnist",
          "data_dir": data_dir,
          "train_split": "train",
          "eval_split": "test",
          "preprocess": "unit_scale",
          "image_size": None,
      }
  )
  config.update(overrides)
  return config


def test_reads_the_four_files_in_their_order(tmp_path):
  arrays = _write_fake_files(str(tmp_path))
  dataset = data.load_dataset(_config(str(tmp_path)))
  assert dataset.info.name == "fashion_mnist" and dataset.info.num_classes == 10
  assert dataset.info.class_names[0] == "T-shirt/top" and dataset.info.class_names[9] == "Ankle boot"
  assert (dataset.info.num_train, dataset.info.num_eval, tuple(dataset.info.image_shape)) == (12, 7, (28, 28, 1))
  images, labels = dataset.eval_arrays()
  np.testing.assert_array_equal(images[..., 0], arrays["test"][0])
  np.testing.assert_array_equal(labels, arrays["test"][1])
  # The eval pipeline keeps the files' order: example_id i is the i-th image of the test file.
  batch = next(iter(dataset.eval_batches(100)))
  np.testing.assert_array_equal(batch["example_id"].numpy(), np.arange(7))
  np.testing.assert_allclose(batch["image"].numpy()[..., 0], arrays["test"][0] / 255.0, rtol=1e-6)


def test_uncompressed_idx_reads_the_same(tmp_path):
  arrays = _write_fake_files(str(tmp_path), compress=False)
  path = os.path.join(str(tmp_path), data.FASHION_MNIST_FILES["train"][0])
  np.testing.assert_array_equal(data.read_idx(path), arrays["train"][0])


def test_a_missing_file_names_it_and_the_install_command(tmp_path):
  _write_fake_files(str(tmp_path))
  os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(PieError) as error:
    data.load_dataset(_config(str(tmp_path)))
  message = str(error.value)
  assert "t10k-labels-idx1-ubyte.gz: missing" in message and "apt-get install dataset-fashion-mnist" in message


@pytest.mark.parametrize("damage", ["truncated", "not_idx", "not_gzip"])
def test_a_damaged_file_is_named(tmp_path, damage):
  _write_fake_files(str(tmp_path))
  path = tmp_path / "train-images-idx3-ubyte.gz"
  raw = gzip.open(path).read()
  if damage == "truncated":
    path.write_bytes(gzip.compress(raw[:-100]))
  elif damage == "not_idx":
    path.write_bytes(gzip.compress(b"PK\x03\x04" + raw[4:]))
  else:
    path.write_bytes(b"this is no gzip file")
  with pytest.raises(PieError, match=str(path)):
    data.load_dataset(_config(str(tmp_path)))


def test_labels_out_of_range_are_refused(tmp_path):
  _write_fake_files(str(tmp_path))
  with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
    f.write(_idx(np.array([3, 11, 2], np.uint8)))
  with pytest.raises(PieError, match="not one Fashion-MNIST split"):
    data.load_dataset(_config(str(tmp_path)))


# The real files: skipped on a developer machine without them, a failure under CI, whose install script puts them there.
_REAL = pytest.mark.skipif(
    not os.path.isdir(data.FASHION_MNIST_DIR) and not os.environ.get("CI"),
    reason=f"needs {data.FASHION_MNIST_DIR} ({data.FASHION_MNIST_INSTALL})",
)


@_REAL
def test_the_real_files():
  dataset = data.load_dataset(_config(None))
  assert (dataset.info.num_train, dataset.info.num_eval) == (60_000, 10_000)
  images, labels = dataset.eval_arrays()
  np.testing.assert_array_equal(np.bincount(labels), np.full(10, 1000))  # balanced test split
  assert images.dtype == np.uint8 and images.shape == (10_000, 28, 28, 1) and 0 < images.mean() < 255


def test_long_tailed_training_set(tmp_path):
  _write_fake_files(str(tmp_path), n_train=400, n_test=20)
  full = data.load_dataset(_config(str(tmp_path)))
  fractions = (1.0, 0.5, 0.25, 0.1, 1.0, 1.0, 1.0, 1.0, 1.0, 0.05)
  tail = data.load_dataset(_config(str(tmp_path), train_class_fraction=fractions))
  before, after = np.array(full.info.train_class_counts), np.array(tail.info.train_class_counts)
  np.testing.assert_array_equal(after, np.maximum(1, np.round(np.array(fractions) * before)).astype(int))
  assert tail.info.num_train == after.sum()
  # Seeded: the same examples every time (every model of a study trains on the same set); another seed, others.
  again = data.load_dataset(_config(str(tmp_path), train_class_fraction=fractions))
  other = data.load_dataset(_config(str(tmp_path), train_class_fraction=fractions, subset_seed=1))
  kept = tail._splits["train"][0]  # pylint: disable=protected-access
  np.testing.assert_array_equal(kept, again._splits["train"][0])  # pylint: disable=protected-access
  assert not np.array_equal(kept, other._splits["train"][0])  # pylint: disable=protected-access
  np.testing.assert_array_equal(tail.eval_arrays()[1], full.eval_arrays()[1])  # the eval split is untouched
  with pytest.raises(PieError, match="train_class_fraction must hold 10 fractions"):
    data.load_dataset(_config(str(tmp_path), train_class_fraction=(0.5, 1.0)))


@pytest.mark.slow
@_REAL
def test_the_config_trains_on_the_real_files(tmp_path):
  # The study's config, cut to 30 training steps: the model learns (the full config reaches about 91%, see the README).
  from configs import fashion_mnist  # pylint: disable=g-import-not-at-top
  from pie import training  # pylint: disable=g-import-not-at-top

  config = fashion_mnist.get_config()
  with config.unlocked():
    config.num_epochs, config.steps_per_epoch, config.controls = 1, 30, ()
  metrics = training.train_and_export(config, str(tmp_path), log=lambda m: None)
  assert metrics["top1"] > 0.6 and len(metrics["per_class_recall"]) == 10


def test_the_long_tail_variant_of_the_config(tmp_path):
  from configs import fashion_mnist  # pylint: disable=g-import-not-at-top

  _write_fake_files(str(tmp_path), n_train=2_000, n_test=20)
  config = fashion_mnist.get_config("long_tail")
  assert config.sparsity_levels == (0.0, 0.9) and config.name == "fashion_mnist_long_tail"
  with config.unlocked():
    config.data.data_dir = str(tmp_path)
  full = np.array(data.load_dataset(_config(str(tmp_path))).info.train_class_counts)
  tail = np.array(data.load_dataset(config.data).info.train_class_counts)
  fractions = np.array(config.data.train_class_fraction)
  np.testing.assert_allclose(fractions, 0.6 ** np.arange(10), atol=5e-5)  # rounded to 4 decimals
  np.testing.assert_array_equal(tail, np.maximum(1, np.round(fractions * full)).astype(int))
  # The balanced study's config has no long-tail fields: its config hash is what it was.
  assert "train_class_fraction" not in fashion_mnist.get_config().data
  with pytest.raises(ValueError, match="knows the variant 'long_tail', not 'longtail'"):
    fashion_mnist.get_config("longtail")
