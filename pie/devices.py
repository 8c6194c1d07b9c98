"""tf.distribute strategies by name, and the numeric precision models train in: the same code on CPU, GPUs,
several machines or a TPU."""

import contextlib

import tensorflow as tf
import tf_keras as keras

from pie.errors import PieError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# config.mixed_precision: None (float32 throughout) or "bfloat16", the TPU's native format, to Keras' policy name.
PRECISIONS = {None: "float32", "bfloat16": "mixed_bfloat16"}


def _policy_name(mixed_precision):
  if mixed_precision not in PRECISIONS:
    raise PieError(
        f"unknown config.mixed_precision {mixed_precision!r}: choose None (float32) or 'bfloat16'",
        parameter="mixed_precision",
    )
  return PRECISIONS[mixed_precision]


@contextlib.contextmanager
def precision(mixed_precision):
  """Keras' global dtype policy for config.mixed_precision while a model is built, trained and exported.

  Under "bfloat16" layers compute in bfloat16 and keep float32 variables (so pruning masks and thresholds stay
  float32); every model's classifier computes in float32, so logits and the loss are float32. Layers take their
  policy when they are built, so the previous policy is restored after: a worker that trains the next model with
  another config starts from it.
  """
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(_policy_name(mixed_precision))
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def input_dtype(mixed_precision):
  """The dtype input pipelines cast images to: bfloat16 under mixed precision (the first layer computes in it
  anyway, so nothing is lost, and host memory and infeed are halved), else float32."""
  return tf.bfloat16 if _policy_name(mixed_precision) == "mixed_bfloat16" else tf.float32


def make_strategy(name="default", tpu=None, cpu_replicas=None):
  """A tf.distribute strategy.

  Args:
    name: "default" (CPU or one GPU), "mirrored" (all local GPUs), "multi_worker" (workers from TF_CONFIG) or
      "tpu" (Cloud TPU named by `tpu`).
    tpu: TPU name or grpc address, for name="tpu" ("local" on a TPU VM).
    cpu_replicas: with "mirrored" and no GPU, split the CPU into this many logical devices (for tests and for
      checking a multi-replica run on a laptop).
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    if cpu_replicas and not tf.config.list_physical_devices("GPU"):
      cpu = tf.config.list_physical_devices("CPU")[0]
      tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
      return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    if not tpu:
      raise PieError("the tpu strategy needs a TPU name or address (tpu; 'local' on a TPU VM)", parameter="tpu")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise PieError(f"unknown strategy {name!r}: choose one of {STRATEGIES}", parameter="strategy")


def set_threads(threads):
  """Caps TF's CPU threads (before any op runs): parallel workers on one machine should not oversubscribe it."""
  if threads:
    tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
