r"""Checks the class test on the study's own models where nothing differs (an A/A comparison), per normalization.

  python -m analysis.calibrate --study_dir=studies/digits

The dense population and its replicate (config.controls = ("dense_replicate",)), or the dense models alone, are split
at random into two populations many times; every class is tested in every split. A calibrated test flags about alpha
of the tests at p < alpha, and Benjamini-Hochberg finds a class in at most alpha of the splits. Prints one row per
normalization and writes them to <out_dir>/calibration.csv.
"""

import os

from absl import app
from absl import flags
import numpy as np

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import analysis
from pie import builder
from pie import cli
from pie import io_utils
from pie import significance
from pie import study as study_lib

_STUDY_DIR = flags.DEFINE_string("study_dir", None, "Study directory written by train/population.py.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder (default: <study_dir>/analysis).")
_SPLITS = flags.DEFINE_integer("splits", 200, "Random A/A splits.")
_ALPHA = flags.DEFINE_float("alpha", 0.05, "Significance level of the class tests.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the splits.")
flags.mark_flags_as_required(["study_dir"])


def run(study_dir, out_dir=None, num_splits=200, alpha=0.05, seed=0, log=print):
  """The A/A calibration table of a study's dense models (see the module docstring); writes calibration.csv."""
  study = study_lib.load_study(study_dir, log=log)
  plan = builder.FloorPlan(study.populations, [], 0, seed)
  pool = np.stack([m.top1 for k in plan.pool_keys for m in study.populations[k]])
  sizes = plan.reference
  if min(sizes) < 2:
    raise pie.PieError(f"{study_dir}: {plan.pool_size} dense models cannot be split into two populations of 2 or more")
  table = significance.aa_calibration(
      significance.class_hits(pool, study.labels, study.num_classes),
      np.bincount(study.labels, minlength=study.num_classes),
      *sizes,
      num_splits=num_splits,
      alpha=alpha,
      seed=seed,
  )
  out_dir = analysis.output_dir(study_dir, None, out_dir)
  io_utils.write_text(os.path.join(out_dir, "calibration.csv"), analysis.csv_text(table))
  log(
      f"A/A calibration: {plan.pool_size} dense models ({' + '.join(k[0] for k in plan.pool_keys)}) split "
      f"{num_splits} times into {sizes[0]} + {sizes[1]}, {study.num_classes} classes, alpha {alpha:g}"
  )
  for row in table.itertuples(index=False):
    log(
        f"  {row.normalization:>10}: {row.rate_significant:.2%} of class tests at p < alpha (95% interval "
        f"{row.rate_ci_low:.2%} to {row.rate_ci_high:.2%}); {row.splits_with_fdr_discovery:.1%} of splits with an FDR "
        f"discovery (interval {row.fdr_splits_ci_low:.1%} to {row.fdr_splits_ci_high:.1%})"
    )
  return table


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  run(_STUDY_DIR.value, _OUT_DIR.value, _SPLITS.value, _ALPHA.value, _SEED.value, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
  app.run(main)
