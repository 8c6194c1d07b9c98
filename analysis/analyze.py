r"""Analyses a study: PIEs, class-level Welch t-tests, PIE accuracy, summary and report.

  python -m analysis.analyze --study_dir=studies/digits
  python -m analysis.analyze --predictions=a.tfrecord,b.tfrecord,... --out_dir=results

Outputs go to --out_dir (default <study_dir>/analysis); the README describes every file and column.
"""
from absl import app
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from analysis import study_flags
from pie import analysis
from pie import cli
from pie import significance
from pie import study as study_lib
from pie import validate

flags.adopt_module_key_flags(study_flags)  # listed by --help like this binary's own flags
_PIE_IMAGES = flags.DEFINE_bool("pie_images", True, "Read the PIE images from the eval split (pies.tfrecord).")
_REPORT = flags.DEFINE_bool("report", True, "Write report.html.")

def run(study_dir=None, predictions=None, out_dir=None, alpha=0.05, seed=0, pie_images=True, report=True,
        allow_mixed_configs=False, normalization=significance.DEFAULT_NORMALIZATION, bootstrap_resamples=200,
        power_effect=analysis.DEFAULT_POWER_EFFECT, validate_first=True,
        noise_floor_splits=analysis.DEFAULT_NOISE_FLOOR_SPLITS, log=print):
  """Loads the study and writes the analysis; returns (out_dir, summary)."""
  out_dir = study_flags.output_dir(study_dir, predictions, out_dir)
  if study_dir and validate_first:
    # Metadata-level checks here; load_study reads and checks every record, so no file is read twice.
    validate.require_valid(study_dir, allow_mixed_configs=allow_mixed_configs, read_records=False, log=log)
  study = study_lib.load_study(study_dir, predictions, allow_mixed_configs=allow_mixed_configs, log=log)
  summary = analysis.analyze_study(study, out_dir, alpha=alpha, seed=seed, images=pie_images, report=report,
                                   normalization=normalization, bootstrap_resamples=bootstrap_resamples,
                                   power_effect=power_effect, noise_floor_splits=noise_floor_splits, log=log)
  return out_dir, summary


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = study_flags
  out_dir, _ = run(f.STUDY_DIR.value, f.PREDICTIONS.value, f.OUT_DIR.value, f.ALPHA.value, f.SEED.value,
                   _PIE_IMAGES.value, _REPORT.value, f.ALLOW_MIXED.value, f.NORMALIZATION.value, f.BOOTSTRAP.value,
                   f.POWER_EFFECT.value, f.VALIDATE.value, noise_floor_splits=f.NOISE_FLOOR_SPLITS.value,
                   log=lambda m: print(m, flush=True))
  print(f"analysis written to {out_dir}", flush=True)


if __name__ == "__main__":
  app.run(main)
