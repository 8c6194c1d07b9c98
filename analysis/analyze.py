r"""Analyses a study: PIEs, class-level Welch t-tests, PIE accuracy, summary and report.

  python -m analysis.analyze --study_dir=studies/digits
  python -m analysis.analyze --predictions=a.tfrecord,b.tfrecord,... --out_dir=results

Outputs go to --out_dir (default <study_dir>/analysis); the README describes every file and column.
"""
import os

from absl import app
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import analysis
from pie import cli
from pie import study as study_lib
from pie import validate
from pie.errors import PieError

_STUDY_DIR = flags.DEFINE_string("study_dir", None, "Study directory written by train/population.py.")
_PREDICTIONS = flags.DEFINE_list("predictions", None, "Explicit prediction files (.tfrecord) instead of a study.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder (default: <study_dir>/analysis).")
_ALPHA = flags.DEFINE_float("alpha", 0.05, "Significance level of the class-level tests.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random sample in pie_accuracy.csv.")
_PIE_IMAGES = flags.DEFINE_bool("pie_images", True, "Read the PIE images from the eval split (pies.tfrecord).")
_REPORT = flags.DEFINE_bool("report", True, "Write report.html.")
_ALLOW_MIXED = flags.DEFINE_bool("allow_mixed_configs", False, "Accept models trained with different configs.")
_VALIDATE = flags.DEFINE_bool("validate", True, "Check the study directory first (every expected model present "
                               "and complete, sparsity within tolerance, one config) and stop on any problem; "
                               "--novalidate analyses whatever finished models there are.")
_NORMALIZATION = flags.DEFINE_enum("normalization", "population", ["population", "per_model"],
                                   "Recall normalization: minus the population's mean top-1 (the paper) or each "
                                   "model's own top-1.")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap_resamples", 200, "Bootstrap resamples of the models for PIE and class "
                                  "stability (0: skip).")
_POWER_EFFECT = flags.DEFINE_float("power_effect", analysis.DEFAULT_POWER_EFFECT, "Normalized recall change that "
                                   "summary.json's models_needed plan is sized to detect (80% power).")


def run(study_dir=None, predictions=None, out_dir=None, alpha=0.05, seed=0, pie_images=True, report=True,
        allow_mixed_configs=False, normalization="population", bootstrap_resamples=200,
        power_effect=analysis.DEFAULT_POWER_EFFECT, validate_first=True, log=print):
  """Loads the study and writes the analysis; returns (out_dir, summary)."""
  if bool(study_dir) == bool(predictions):
    raise PieError("give exactly one of --study_dir or --predictions")
  if out_dir is None:
    if not study_dir:
      raise PieError("--out_dir is required with --predictions")
    out_dir = os.path.join(study_dir, "analysis")
  if study_dir and validate_first:
    # Metadata-level checks here; load_study reads and checks every record, so no file is read twice.
    validate.require_valid(study_dir, allow_mixed_configs=allow_mixed_configs, read_records=False, log=log)
  study = study_lib.load_study(study_dir, predictions, allow_mixed_configs=allow_mixed_configs, log=log)
  summary = analysis.analyze_study(study, out_dir, alpha=alpha, seed=seed, images=pie_images, report=report,
                                   normalization=normalization, bootstrap_resamples=bootstrap_resamples,
                                   power_effect=power_effect, log=log)
  return out_dir, summary


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out_dir, _ = run(_STUDY_DIR.value, _PREDICTIONS.value, _OUT_DIR.value, _ALPHA.value, _SEED.value,
                   _PIE_IMAGES.value, _REPORT.value, _ALLOW_MIXED.value, _NORMALIZATION.value, _BOOTSTRAP.value,
                   _POWER_EFFECT.value, _VALIDATE.value, log=lambda m: print(m, flush=True))
  print(f"analysis written to {out_dir}", flush=True)


if __name__ == "__main__":
  app.run(main)
