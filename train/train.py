r"""Trains one model of a population (dense or pruned) and exports its predictions.

  python -m train.train --config=configs/digits.py --config.sparsity=0.9 --config.seed=3 \
      --workdir=studies/digits/sparsity90_seed3

Rerunning the same command resumes from the latest checkpoint, or does nothing if the model is finished.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import cli
from pie import devices
from pie import names
from pie import training

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of this model: checkpoints, model, predictions.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", devices.STRATEGIES, "tf.distribute strategy.")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu ('local' on a TPU VM).")
_CPU_REPLICAS = flags.DEFINE_integer("cpu_replicas", None, "With --strategy=mirrored and no GPU: logical CPUs.")
_THREADS = flags.DEFINE_integer("threads", None, "Cap on TensorFlow's CPU threads (default: all cores).")
flags.mark_flags_as_required(["config", "workdir"])


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  devices.set_threads(_THREADS.value)
  strategy = devices.make_strategy(_STRATEGY.value, tpu=_TPU.value, cpu_replicas=_CPU_REPLICAS.value)
  workdir = names.resolve_path(_WORKDIR.value, "workdir")
  training.train_and_export(_CONFIG.value, workdir, strategy=strategy, log=lambda msg: print(msg, flush=True))


if __name__ == "__main__":
  app.run(main)
