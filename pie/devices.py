"""tf.distribute strategies by name: the same training code on CPU, GPUs, several machines or a TPU."""

import tensorflow as tf

from pie.errors import PieError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


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
