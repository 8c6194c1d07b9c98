"""The CIFAR-10 and ImageNet configs, end to end on TFDS data faked by `tfds.testing.mock_data`.

Nothing is read from or written to a TFDS data_dir and nothing is downloaded: the mock serves random examples of
the registered datasets' real feature specs (CIFAR-10: 32x32x3, 10 classes; ImageNet: random sizes from 5 to 49
pixels, 1000 classes with their WordNet ids). Mocked split sizes are unknown, so each config sets steps_per_epoch.
"""

import os

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

from configs import cifar10 as cifar10_config  # noqa: E402
from configs import imagenet_resnet50 as imagenet_config  # noqa: E402
from pie import data as data_lib  # noqa: E402
from pie import model_dir  # noqa: E402
from pie import preprocess  # noqa: E402
from pie import pruning  # noqa: E402
from pie import training  # noqa: E402
from pie import variants  # noqa: E402
from pie.errors import PieError  # noqa: E402
from tests.conftest import override  # noqa: E402

# TF-MOT's wrapper class, reached through the public API (its module path is private).
PruneLowMagnitude = tfmot.sparsity.keras.prune_low_magnitude(keras.layers.Dense(1)).__class__


def _config(module, data_dir, **overrides):
  """The config of `module` reading from `data_dir`, with overrides given as dotted names."""
  config = module.get_config()
  config.data.data_dir = str(data_dir)
  return override(config, **overrides)


def _mock_labels(name, split, data_dir, num_examples):
  """Labels of a mocked split in TFDS's own order, read without pie: what the export must agree with."""
  with tfds.testing.mock_data(num_examples=num_examples):
    ds = tfds.load(name, split=split, data_dir=str(data_dir), shuffle_files=False)
    return np.array([int(ex["label"]) for ex in ds.as_numpy_iterator()], np.int64)


def _check_export(workdir, config, num_examples, num_classes, expected_labels):
  """Reads the exported predictions back and checks them against the eval split; returns them."""
  path = model_dir.model_paths(str(workdir), variants.config_job(config).name)["predictions"]
  preds = pie.read_predictions(path)
  meta = preds.metadata
  assert meta["dataset"] == config.data.name and meta["split"] == config.data.eval_split
  assert meta["num_examples"] == num_examples and meta["num_classes"] == num_classes
  assert len(meta["class_names"]) == num_classes
  np.testing.assert_array_equal(preds.example_ids, np.arange(num_examples))
  np.testing.assert_array_equal(preds.labels, expected_labels)
  assert preds.top_k_classes.shape == (num_examples, config.top_k)
  assert preds.top_k_classes.min() >= 0 and preds.top_k_classes.max() < num_classes
  assert np.all(np.diff(preds.top_k_probs, axis=1) <= 0), "top-k probabilities must be sorted, best first"
  assert np.all(preds.top_k_probs.sum(axis=1) <= 1 + 1e-5)
  # Each example's top-k classes are distinct.
  assert all(len(set(row)) == config.top_k for row in preds.top_k_classes.tolist())
  assert abs(meta["measured_sparsity"] - config.sparsity) <= variants.SPARSITY_TOLERANCE
  return preds


def _conv_names(model):
  return {layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}


@pytest.mark.slow
def test_cifar10_config_trains_prunes_and_exports(tmp_path):
  num_examples = 11  # eval batches of 4: two full ones and a short one
  config = _config(
      cifar10_config,
      tmp_path / "tfds",
      **{
          "batch_size": 4,
          "steps_per_epoch": 2,
          "num_epochs": 2,
          "eval_batch_size": 4,
          "data.shuffle_buffer": 16,
          "sparsity": 0.5,
          "pruning.begin_step": 0,
          "pruning.end_step": 2,
          "pruning.frequency": 1,
      },
  )
  workdir = tmp_path / "model"
  with tfds.testing.mock_data(num_examples=num_examples):
    metrics = training.train_and_export(config, str(workdir), log=lambda msg: None)
  assert not (tmp_path / "tfds").exists(), "mocked data must not touch the data_dir"

  preds = _check_export(
      workdir, config, num_examples, 10, _mock_labels("cifar10", "test", tmp_path / "tfds", num_examples)
  )
  assert preds.metadata["model"] == "cifar_resnet" and metrics["steps"] == 4

  # The saved model is the stripped ResNet-20 at the native 32x32; every conv (stem and 1x1 projection shortcuts
  # included) is pruned to the target with its own threshold, and the classifier stays dense.
  model = model_dir.load_model(str(workdir / "model.h5"))
  assert model.input_shape == (None, 32, 32, 3)
  convs = _conv_names(model)
  assert len(convs) == 21 and {"stem_conv", "stage2_block1_proj", "stage3_block1_proj"} <= convs
  assert set(metrics["per_layer_sparsity"]) == convs
  for name in convs:
    assert abs(metrics["per_layer_sparsity"][name] - 0.5) < 0.01, name
  assert np.count_nonzero(model.get_layer("classifier").kernel.numpy() == 0) == 0
  assert abs(pruning.measure_sparsity(model, sorted(convs))["overall"] - 0.5) <= variants.SPARSITY_TOLERANCE


@pytest.mark.slow
def test_imagenet_resnet50_config_prunes_every_conv_and_exports(tmp_path, monkeypatch):
  num_examples = 5
  config = _config(
      imagenet_config,
      tmp_path / "tfds",
      **{
          "data.image_size": 32,
          "data.shuffle_buffer": 8,
          "batch_size": 2,
          "steps_per_epoch": 1,
          "num_epochs": 1,
          "warmup_epochs": 0,
          "eval_batch_size": 8,
          "sparsity": 0.5,
          "pruning.begin_step": 0,
          "pruning.end_step": 1,
          "pruning.frequency": 1,
      },
  )
  wrapped = []

  def recording_apply_pruning(*args, **kwargs):
    model = original_apply_pruning(*args, **kwargs)
    wrapped.append(model)
    return model

  original_apply_pruning = pruning.apply_pruning
  monkeypatch.setattr(pruning, "apply_pruning", recording_apply_pruning)
  workdir = tmp_path / "model"
  with tfds.testing.mock_data(num_examples=num_examples):
    metrics = training.train_and_export(config, str(workdir), log=lambda msg: None)

  # The model that was trained: all 53 convolutions of ResNet-50 wrapped, the classifier not.
  (model,) = wrapped
  pruned = {layer.layer.name: layer.layer for layer in model.layers if isinstance(layer, PruneLowMagnitude)}
  assert not _conv_names(model), "a convolution escaped pruning"
  assert all(isinstance(layer, keras.layers.Conv2D) for layer in pruned.values())
  assert len(pruned) == 1 + 16 * 3 + 4
  assert pruned["stem_conv"].kernel_size == (7, 7)
  assert {f"stage{s}_block1_proj" for s in range(1, 5)} <= set(pruned)
  assert isinstance(model.get_layer("classifier"), keras.layers.Dense)
  # The config's TPU precision, trained here on CPU: bfloat16 convolutions, a float32 classifier.
  assert config.mixed_precision == "bfloat16" and pruned["stem_conv"].compute_dtype == "bfloat16"
  assert model.get_layer("classifier").compute_dtype == "float32" and model.output.dtype == tf.float32
  # ResNet-50's published size: 25,557,032 parameters (conv kernels without biases, BN scales and offsets, the
  # 1000-way classifier); the pruning masks and thresholds beside them are not trainable.
  assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 25_557_032
  assert int(model.optimizer.iterations.numpy()) == 1 and metrics["steps"] == 1

  preds = _check_export(
      workdir, config, num_examples, 1000, _mock_labels("imagenet2012", "validation", tmp_path / "tfds", num_examples)
  )
  names = tfds.builder("imagenet2012", data_dir=str(tmp_path / "tfds")).info.features["label"].names
  assert preds.metadata["class_names"] == list(names)
  assert preds.metadata["class_names"][0] == "n01440764" and len(set(names)) == 1000
  assert set(metrics["per_layer_sparsity"]) == set(pruned)
  assert all(abs(s - 0.5) < 0.01 for s in metrics["per_layer_sparsity"].values())


@pytest.mark.parametrize("module", [cifar10_config, imagenet_config], ids=["cifar10", "imagenet2012"])
def test_eval_order_is_deterministic(module, tmp_path):
  """Two reads of the eval split, in batches of different sizes, give the same id -> (label, image) mapping."""
  num_examples = 23
  config = _config(module, tmp_path / "tfds", **{"data.image_size": 16})

  def read(batch_size):
    ids, labels, images = [], [], []
    for batch in dataset.eval_batches(batch_size).as_numpy_iterator():
      ids.append(batch["example_id"])
      labels.append(batch["label"])
      images.append(batch["image"])
    return np.concatenate(ids), np.concatenate(labels), np.concatenate(images)

  with tfds.testing.mock_data(num_examples=num_examples):
    dataset = data_lib.load_dataset(config.data)
    ids_a, labels_a, images_a = read(5)
    ids_b, labels_b, images_b = read(16)
  np.testing.assert_array_equal(ids_a, np.arange(num_examples))
  np.testing.assert_array_equal(ids_b, np.arange(num_examples))
  np.testing.assert_array_equal(labels_a, labels_b)
  np.testing.assert_array_equal(images_a, images_b)
  assert images_a.shape == (num_examples, 16, 16, 3)
  np.testing.assert_array_equal(
      labels_a, _mock_labels(config.data.name, config.data.eval_split, tmp_path / "tfds", num_examples)
  )


def test_train_epochs_are_full_and_resumable(tmp_path):
  """Each epoch has steps_per_epoch full batches, even from a split smaller than that (5 examples, 4 x 2 wanted),
  and a run resumed at epoch 1 sees exactly the batches of an uninterrupted run (deterministic, as on CPU with
  config.deterministic=True: otherwise parallel stages may hand elements out in another order)."""
  config = _config(imagenet_config, tmp_path / "tfds", **{"data.image_size": 16})

  def batches(seed, start_epoch):
    ds = dataset.train_batches(2, seed, start_epoch, 3, 4, deterministic=True)
    return [(x, y) for x, y in ds.as_numpy_iterator()]

  with tfds.testing.mock_data(num_examples=5):
    dataset = data_lib.load_dataset(config.data)
    full = batches(seed=4, start_epoch=0)
    resumed = batches(seed=4, start_epoch=1)
  assert len(full) == 3 * 4 and len(resumed) == 2 * 4
  for images, labels in full:
    assert images.shape == (2, 16, 16, 3) and labels.shape == (2, 1000)
    np.testing.assert_array_equal(labels.sum(axis=1), 1)
  for (x_full, y_full), (x_resumed, y_resumed) in zip(full[4:], resumed):
    np.testing.assert_array_equal(x_full, x_resumed)
    np.testing.assert_array_equal(y_full, y_resumed)
  # Epochs differ: each is augmented with seeds of its own.
  assert not np.array_equal(full[0][0], full[4][0])


def _random_image(rng, height, width, channels=3):
  return tf.constant(rng.integers(0, 256, (height, width, channels), dtype=np.uint8))


@pytest.mark.parametrize("shape", [(5, 5), (5, 49), (49, 6), (17, 31), (49, 49), (224, 160)])
def test_imagenet_preprocessing_output_shape(shape):
  rng = np.random.default_rng(sum(shape))
  image = _random_image(rng, *shape)
  for image_size in (16, 32):
    evaluated = preprocess.imagenet(image, training=False, seed=None, image_size=image_size)
    trained = preprocess.imagenet(image, training=True, seed=tf.constant([3, 4], tf.int64), image_size=image_size)
    display = preprocess.imagenet_display(image, image_size=image_size)
    for out in (evaluated, trained):
      assert out.shape == (image_size, image_size, 3) and out.dtype == tf.float32
      assert np.all(np.isfinite(out.numpy()))
    assert display.shape == (image_size, image_size, 3) and display.dtype == tf.uint8


def test_imagenet_eval_is_a_central_crop():
  """A uniform image stays uniform, and an image already at the eval size keeps its centre."""
  flat = tf.fill([20, 37, 3], tf.constant(77, tf.uint8))
  np.testing.assert_array_equal(preprocess.imagenet_display(flat, image_size=16).numpy(), 77)
  # 37 px is already the resize target for 32 (32 / 0.875 = 36.6 -> 37): only the central 32x32 crop remains, and
  # the marker in the middle of the image must stay in the middle of the crop (within the half pixel of an odd margin).
  image = np.zeros([37, 37, 3], np.uint8)
  image[16:21, 16:21] = 255
  crop = preprocess.imagenet_display(tf.constant(image), image_size=32).numpy()
  rows, cols = np.nonzero(crop[..., 0] > 128)
  assert abs(rows.mean() - 15.5) <= 0.5 and abs(cols.mean() - 15.5) <= 0.5


def test_imagenet_training_crop_depends_only_on_the_seed():
  image = _random_image(np.random.default_rng(0), 40, 48)

  def crop(seed):
    return preprocess.imagenet(image, training=True, seed=tf.constant(seed, tf.int64), image_size=24).numpy()

  np.testing.assert_array_equal(crop([7, 11]), crop([7, 11]))
  others = [crop(seed) for seed in ([7, 12], [8, 11], [0, 0])]
  for other in others:
    assert not np.array_equal(crop([7, 11]), other)


def _unnormalize_cifar(image):
  mean = np.array(preprocess._CIFAR_MEAN, np.float32)  # pylint: disable=protected-access
  std = np.array(preprocess._CIFAR_STD, np.float32)  # pylint: disable=protected-access
  return np.round(image * std + mean).astype(np.int64)


@pytest.mark.parametrize("image_size", [None, 16])
def test_cifar_training_augmentation_is_a_shifted_flipped_copy(image_size):
  """Pad-4 random crop + flip: same shape, and the content is the (resized) original moved by at most 4 pixels."""
  image = _random_image(np.random.default_rng(1), 32, 32)
  source = preprocess.cifar_display(image, image_size).numpy().astype(np.int64)
  size = source.shape[0]
  padded = np.zeros((size + 8, size + 8, 3), np.int64)
  padded[4:-4, 4:-4] = source
  outputs = []
  for seed in ([1, 2], [1, 2], [5, 9], [6, 0], [2, 2]):
    out = preprocess.cifar(image, training=True, seed=tf.constant(seed, tf.int64), image_size=image_size).numpy()
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    pixels = _unnormalize_cifar(out)
    windows = [padded[dy : dy + size, dx : dx + size] for dy in range(9) for dx in range(9)]
    assert any(np.array_equal(pixels, w) or np.array_equal(pixels, w[:, ::-1]) for w in windows)
    outputs.append(pixels)
  np.testing.assert_array_equal(outputs[0], outputs[1])
  assert not any(np.array_equal(outputs[0], other) for other in outputs[2:])
  # Eval is the standardized image, untouched.
  evaluated = preprocess.cifar(image, training=False, seed=None, image_size=image_size).numpy()
  np.testing.assert_array_equal(_unnormalize_cifar(evaluated), source)


def test_unknown_dataset_name():
  config = _config(cifar10_config, "/nonexistent", **{"data.name": "cifar10_typo"})
  with pytest.raises(PieError, match="'cifar10_typo'"):
    data_lib.load_dataset(config.data)


@pytest.mark.parametrize("module", [cifar10_config, imagenet_config], ids=["cifar10", "imagenet2012"])
def test_dataset_not_prepared(module, tmp_path):
  """Without the mock, an empty data_dir is an error naming it and saying how to fix it, as soon as the dataset is
  opened (before a model is built), and nothing is downloaded into it."""
  data_dir = tmp_path / "empty_tfds"
  data_dir.mkdir()
  config = _config(module, data_dir)
  with pytest.raises(PieError) as error:
    data_lib.load_dataset(config.data)
  message = str(error.value)
  assert str(data_dir) in message and repr(config.data.name) in message
  assert "prepare it there" in message and "download=True" in message
  assert not os.listdir(data_dir)
