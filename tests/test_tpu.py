"""The TPU code path as far as TensorFlow builds it without a TPU: a TPUStrategy of 8 cores on a fake resolver.

`tf.distribute.TPUStrategy` takes its devices from its resolver's `get_tpu_system_metadata()`; a resolver that
describes one host with 8 TPU cores (a v3-8) gives a strategy whose replicas, input contexts and host-side input
distribution are the real ones. No TPU op can run here (the cores do not exist), so the input is distributed
without fetching it to the devices, and what is checked is what a TPU demands of it: per-replica batches of the
configured global batch with static shapes, bfloat16 images, and an eval split that covers every example once. The
steps that need real hardware (connecting, initializing the TPU system, compiling and running the model) are the
manual check of docs/tpu.md.
"""

import numpy as np
import pytest

import pie  # noqa: F401
import tensorflow as tf  # noqa: E402

from configs import imagenet_resnet50 as imagenet_config  # noqa: E402
from pie import data as data_lib  # noqa: E402
from pie import devices  # noqa: E402
from pie.errors import PieError  # noqa: E402
from tests import tfds_files  # noqa: E402
from tests.conftest import override  # noqa: E402

CORES = 8


class FakeTpuResolver(tf.distribute.cluster_resolver.TPUClusterResolver):
  """A resolver describing one TPU host of 8 cores (a v3-8), without asking any TPU."""

  def __init__(self):
    super().__init__(tpu="grpc://localhost:8470")

  def get_tpu_system_metadata(self):
    host = "/job:localhost/replica:0/task:0"
    devices_ = [tf.config.LogicalDevice(f"{host}/device:TPU:{i}", "TPU") for i in range(CORES)]
    devices_.append(tf.config.LogicalDevice(f"{host}/device:CPU:0", "CPU"))
    return tf.tpu.experimental.TPUSystemMetadata(
        num_cores=CORES, num_hosts=1, num_of_cores_per_host=CORES, topology=None, devices=devices_
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  images = tfds_files.jpegs([(48, 40), (40, 56)], seed=3)
  tfds_files.write_dataset(data_dir, "imagenet2012", {"train": 64, "validation": 37}, images, 4)
  config = imagenet_config.get_config()
  config.data.data_dir = str(data_dir)
  config = override(config, **{"data.image_size": 16, "data.shuffle_buffer": 16})
  return config, data_lib.load_dataset(config.data)


def _host_side(strategy, input_fn):
  options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
  return strategy.distribute_datasets_from_function(input_fn, options=options)


def test_tpu_strategy_on_a_fake_resolver_feeds_every_core(dataset):
  config, data = dataset
  strategy = tf.distribute.TPUStrategy(FakeTpuResolver())
  assert strategy.num_replicas_in_sync == CORES
  batch_size = 32
  input_fn = data.train_input_fn(
      batch_size, 0, 0, 1, 2, image_dtype=devices.input_dtype(config.mixed_precision), deterministic=True
  )
  images, labels = next(iter(_host_side(strategy, input_fn)))
  per_replica = strategy.experimental_local_results(images)
  assert len(per_replica) == CORES
  for replica_images, replica_labels in zip(per_replica, strategy.experimental_local_results(labels)):
    assert replica_images.shape == (batch_size // CORES, 16, 16, 3) and replica_images.dtype == tf.bfloat16
    assert replica_labels.shape == (batch_size // CORES, 1000)
  # Static shapes, which XLA needs: no partial batch can reach a core.
  spec = input_fn(tf.distribute.InputContext(1, 0, CORES)).element_spec
  assert all(s.shape.is_fully_defined() for s in spec)


def test_tpu_eval_input_covers_the_split_once(dataset):
  _, data = dataset
  strategy = tf.distribute.TPUStrategy(FakeTpuResolver())
  ids = []
  for batch in _host_side(strategy, data.eval_input_fn(16)):
    for replica in strategy.experimental_local_results(batch["example_id"]):
      assert replica.shape == (2,) and replica.dtype == tf.int32
      ids += replica.numpy().tolist()
  ids = np.array(ids)
  assert len(ids) == 48  # 37 examples in 3 global batches of 16
  np.testing.assert_array_equal(np.sort(ids[ids != data_lib.PADDING_ID]), np.arange(37))


def test_the_tpu_strategy_needs_a_name():
  with pytest.raises(PieError, match="TPU name or address") as error:
    devices.make_strategy("tpu")
  assert error.value.parameter == "tpu"
