r"""Analyses a study: PIEs, class-level Welch t-tests, the noise floor, PIE accuracy, summary and report.

  python -m analysis.analyze --study_dir=studies/digits
  python -m analysis.analyze --study_dir=studies/digits --export_missing
  python -m analysis.analyze --predictions=a.tfrecord,b.tfrecord,... --out_dir=results
  python -m analysis.analyze --checkpoint_dirs='runs/*' --config=configs/digits.py --out_dir=results

Outputs go to --out_dir (default <study_dir>/analysis); the README describes every file and column. --export_missing
first exports the study's trained models that have no predictions (from model.h5, model.tflite or the final
checkpoint), without training; --checkpoint_dirs exports runs trained outside a study (one directory per model, with
a pie_run.json or a name like run_sparsity90_seed3) into <out_dir>/predictions and analyses them ("Analysing
checkpoints" in the README). The work is `pie.analysis.run`; this binary only reads flags.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from analysis import study_flags
from pie import analysis
from pie import cli

flags.adopt_module_key_flags(study_flags)  # listed by --help like this binary's own flags
_PIE_IMAGES = flags.DEFINE_bool("pie_images", True, "Read the PIE images from the eval split (pies.tfrecord).")
_REPORT = flags.DEFINE_bool("report", True, "Write report.html.")
_EXPORT_MISSING = flags.DEFINE_bool(
    "export_missing",
    False,
    "With --study_dir: first export every trained model of the study (model.h5, model.tflite or a final "
    "checkpoint) that has no finished prediction file, without training; models whose training is unfinished are "
    "listed, not exported.",
)
_CHECKPOINT_DIRS = flags.DEFINE_list(
    "checkpoint_dirs",
    None,
    "Glob patterns of runs trained outside a pie study, one directory per model (a SavedModel, a Keras file or a TF "
    "checkpoint of --config's model; its level and seed from a pie_run.json beside it or its name, e.g. "
    "run_sparsity90_seed3): exported into <out_dir>/predictions, then analysed.",
)
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "With --checkpoint_dirs: the config the runs were trained with (data, model).", lock_config=True
)
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", None, "Processes that export models (--export_missing, --checkpoint_dirs); default: one per core."
)


@cli.main_with_errors(flag_names={**study_flags.FLAG_NAMES, "images": "--nopie_images"})
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out_dir, _ = analysis.run(
      images=_PIE_IMAGES.value,
      report=_REPORT.value,
      export_missing=_EXPORT_MISSING.value,
      checkpoint_dirs=_CHECKPOINT_DIRS.value,
      config=_CONFIG.value,
      num_workers=_NUM_WORKERS.value,
      log=lambda m: print(m, flush=True),
      **study_flags.arguments(),
  )
  print(f"analysis written to {out_dir}", flush=True)


if __name__ == "__main__":
  app.run(main)
