r"""Checks the class test on the study's own models where nothing differs (an A/A comparison), per normalization.

  python -m analysis.calibrate --study_dir=studies/digits

The dense population and its replicate (config.controls = ("dense_replicate",)), or the dense models alone, are split
at random into two populations many times; every class is tested in every split. A calibrated test flags about alpha
of the tests at p < alpha, and Benjamini-Hochberg finds a class in at most alpha of the splits. Prints one row per
normalization and writes them to <out_dir>/calibration.csv. The work is `pie.calibration.run`; this binary only reads
flags.
"""

from absl import app
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import calibration
from pie import cli

_STUDY_DIR = flags.DEFINE_string("study_dir", None, "Study directory written by train/population.py.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder (default: <study_dir>/analysis).")
_SPLITS = flags.DEFINE_integer("splits", 200, "Random A/A splits.")
_ALPHA = flags.DEFINE_float("alpha", 0.05, "Significance level of the class tests.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the splits.")
flags.mark_flags_as_required(["study_dir"])


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  calibration.run(
      _STUDY_DIR.value, _OUT_DIR.value, _SPLITS.value, _ALPHA.value, _SEED.value, log=lambda m: print(m, flush=True)
  )


if __name__ == "__main__":
  app.run(main)
