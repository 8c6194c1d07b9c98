"""The TFDS input pipeline in its reference shape, on a real TFDS-format imagenet2012 of small generated JPEGs.

The files are real TFRecord shards (tests/tfds_files.py), so what mock data cannot show is tested here: the shuffle
buffer holds encoded bytes and images are decoded after it, each host reads whole files of its own, the file order
changes per epoch, and a run resumed at an epoch sees the batches an uninterrupted run saw (deterministic=True).
"""

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from configs import imagenet_resnet50 as imagenet_config  # noqa: E402
from pie import data as data_lib  # noqa: E402
from pie.errors import PieError  # noqa: E402
from tests import tfds_files  # noqa: E402
from tests.conftest import override  # noqa: E402

NUM_TRAIN, NUM_SHARDS = 64, 4  # labels 0..63, one per example: a label says which file the example came from


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  images = tfds_files.jpegs([(40, 32), (32, 48), (36, 36)], seed=1)
  tfds_files.write_dataset(path, "imagenet2012", {"train": NUM_TRAIN, "validation": 8}, images, NUM_SHARDS)
  return path


def _dataset(data_dir, **overrides):
  config = imagenet_config.get_config()
  config.data.data_dir = str(data_dir)
  config = override(config, **{"data.image_size": 16, "data.shuffle_buffer": 16, **overrides})
  return data_lib.load_dataset(config.data)


def test_the_shuffle_holds_encoded_bytes_and_decoding_comes_after(data_dir):
  dataset = _dataset(data_dir)
  assert dataset.info.num_train == NUM_TRAIN and dataset.encoded
  records = dataset._train_records(0, 5, tf.distribute.InputContext())  # pylint: disable=protected-access
  assert records.element_spec["image"].dtype == tf.string and records.element_spec["image"].shape == ()
  images, labels = next(iter(dataset.train_batches(8, 0, 0, 1, 2)))
  assert images.shape == (8, 16, 16, 3) and images.dtype == tf.float32 and labels.shape == (8, 1000)


def test_a_resumed_run_sees_the_batches_of_an_uninterrupted_one(data_dir):
  dataset = _dataset(data_dir)

  def batches(start_epoch):
    ds = dataset.train_batches(8, 3, start_epoch, 3, NUM_TRAIN // 8, deterministic=True)
    return list(ds.as_numpy_iterator())

  full, resumed = batches(0), batches(2)
  assert len(full) == 3 * 8 and len(resumed) == 8
  for (x_full, y_full), (x_resumed, y_resumed) in zip(full[16:], resumed):
    np.testing.assert_array_equal(x_full, x_resumed)
    np.testing.assert_array_equal(y_full, y_resumed)
  orders = [[int(c) for _, y in full[e * 8 : (e + 1) * 8] for c in np.argmax(y, axis=1)] for e in range(3)]
  for order in orders:
    assert sorted(order) == list(range(NUM_TRAIN))  # an epoch is one pass over the split
  assert orders[0] != orders[1] != orders[2]  # with its own order


def test_each_host_reads_whole_files_of_its_own(data_dir):
  """Two hosts (input pipelines) of two replicas each: disjoint files, all files between them, per-replica batches."""
  dataset = _dataset(data_dir)
  files = tfds_files.example_files(data_dir, "imagenet2012", "train")
  input_fn = dataset.train_input_fn(8, 0, 0, 2, NUM_TRAIN // 8, deterministic=True)
  seen = []
  for host in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=host, num_replicas_in_sync=4)
    ds = input_fn(context)
    batches = list(ds.as_numpy_iterator())
    assert all(images.shape == (2, 16, 16, 3) for images, _ in batches)  # per replica: 8 / 4
    assert len(batches) == 2 * (NUM_TRAIN // 8) * 2  # two epochs of 8 steps, a batch for each local replica
    labels = [int(c) for _, y in batches for c in np.argmax(y, axis=1)]
    # Each epoch reads this host's files once: half the split.
    assert sorted(labels[: NUM_TRAIN // 2]) == sorted(labels[NUM_TRAIN // 2 :])
    assert len(set(labels)) == NUM_TRAIN // 2
    seen.append({files[label] for label in labels})
  assert len(seen[0]) == len(seen[1]) == NUM_SHARDS // 2
  assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == NUM_SHARDS


def test_more_hosts_than_files_is_an_error(data_dir):
  dataset = _dataset(data_dir)
  context = tf.distribute.InputContext(num_input_pipelines=8, input_pipeline_id=0, num_replicas_in_sync=8)
  with pytest.raises(PieError, match="each host reads whole files"):
    dataset.train_input_fn(8, 0, 0, 1, 2)(context)


def test_pipeline_options(data_dir):
  """Deterministic only when asked; the ImageNet config reads in a private thread pool, one thread per core."""
  dataset = _dataset(data_dir)
  assert dataset.config.private_threadpool
  loose = dataset.train_batches(8, 0, 0, 1, 2, deterministic=False)
  assert loose.options().deterministic is False
  assert loose.options().threading.private_threadpool_size >= 1
  assert dataset.train_batches(8, 0, 0, 1, 2, deterministic=True).options().deterministic is True
  plain = _dataset(data_dir, **{"data.private_threadpool": False}).train_batches(8, 0, 0, 1, 2)
  assert not plain.options().threading.private_threadpool_size


def test_bfloat16_images(data_dir):
  dataset = _dataset(data_dir)
  input_fn = dataset.train_input_fn(8, 0, 0, 1, 2, image_dtype=tf.bfloat16)
  images, labels = next(iter(input_fn(tf.distribute.InputContext())))
  assert images.dtype == tf.bfloat16 and labels.dtype == tf.float32
  reference, _ = next(iter(dataset.train_batches(8, 0, 0, 1, 2)))
  np.testing.assert_array_equal(images.numpy(), tf.cast(reference, tf.bfloat16).numpy())


def test_eval_reads_the_split_in_order(data_dir):
  dataset = _dataset(data_dir)
  ids = np.concatenate([b["example_id"] for b in dataset.eval_batches(3).as_numpy_iterator()])
  labels = np.concatenate([b["label"] for b in dataset.eval_batches(3).as_numpy_iterator()])
  np.testing.assert_array_equal(ids, np.arange(8))
  raw = [int(ex["label"]) for ex in dataset.raw_eval().as_numpy_iterator()]
  np.testing.assert_array_equal(labels, raw)
  assert dataset.num_eval_examples() == 8
