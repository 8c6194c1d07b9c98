r"""Trains a whole study (sparsity levels x seeds of a config) into one directory, then optionally analyses it.

  python -m train.population --config=configs/digits.py --workdir=studies/digits --analyze

Rerunning completes an interrupted study (finished models are skipped). `--dry_run` prints one training command per
unfinished model instead, for launching on a cluster or on Cloud TPUs (add --strategy=tpu --tpu=NAME; docs/tpu.md),
and writes the study's study.json as the launcher does.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import cli
from pie import devices
from pie import names
from pie import population

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory: one folder per model.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", None, "Parallel worker processes (default: number of cores).")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print one train.train command per unfinished model (and write study.json); train nothing."
)
_ANALYZE = flags.DEFINE_bool("analyze", False, "Run analysis.analyze on the study when training is done.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", devices.STRATEGIES, "tf.distribute strategy of each model.")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or address, forwarded with --strategy=tpu.")
_THREADS = flags.DEFINE_integer("threads", None, "TensorFlow CPU threads per worker (default: cores / workers).")
_WORKER_ID = flags.DEFINE_integer("worker_id", None, "Internal: run as worker process N of the launcher.")
flags.mark_flags_as_required(["config", "workdir"])


def _config_args(argv):
  """The --config flags of this command line (file and overrides), to forward to workers or print."""
  return [a for a in argv[1:] if a == "--config" or a.startswith("--config=") or a.startswith("--config.")]


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config, study_dir = _CONFIG.value, names.resolve_path(_WORKDIR.value, "workdir")
  log = lambda m: print(m, flush=True)  # noqa: E731
  device_args = [f"--strategy={_STRATEGY.value}"] + ([f"--tpu={_TPU.value}"] if _TPU.value else [])
  if _DRY_RUN.value:
    # The grid on record, as the launcher records it: validation and --export_missing know which models to expect.
    population.write_study_file(config, study_dir)
    for command in population.dry_run_commands(config, study_dir, _config_args(sys.argv), device_args):
      print(command)
    return
  if _WORKER_ID.value is not None:
    devices.set_threads(_THREADS.value)
    strategy = devices.make_strategy(_STRATEGY.value, tpu=_TPU.value)
    failed = population.run_worker(config, study_dir, _WORKER_ID.value, strategy=strategy, log=log)
    sys.exit(1 if failed else 0)
  num_workers = _NUM_WORKERS.value or os.cpu_count() or 1
  threads = _THREADS.value or max(1, (os.cpu_count() or 1) // num_workers)
  worker_argv = [
      sys.executable,
      "-m",
      "train.population",
      *_config_args(sys.argv),
      f"--workdir={study_dir}",
      *device_args,
  ]
  unfinished = population.launch(config, study_dir, num_workers, worker_argv, threads=threads, log=log)
  if unfinished:
    sys.exit(1)
  if _ANALYZE.value:
    from pie import analysis  # pylint: disable=g-import-not-at-top

    out_dir, _ = analysis.run(study_dir=study_dir, log=log)
    print(f"\nStudy finished. Report: {os.path.abspath(os.path.join(out_dir, 'report.html'))}", flush=True)


if __name__ == "__main__":
  app.run(main)
