"""The class test checked on a study's own models where nothing differs (an A/A comparison), per normalization.

The dense population and its replicate (config.controls = ("dense_replicate",)), or the dense models alone, are split
at random into two populations many times; every class is tested in every split
(`significance.aa_calibration`). A calibrated test flags about alpha of the tests at p < alpha, and Benjamini-Hochberg
finds a class in at most alpha of the splits. `run` is what `python -m analysis.calibrate` calls; it writes
calibration.csv (`outputs.CALIBRATION`).
"""

import os

import numpy as np

from pie import analysis
from pie import builder
from pie import io_utils
from pie import outputs
from pie import significance
from pie import study as study_lib
from pie.errors import PieError


def run(study_dir, out_dir=None, num_splits=200, alpha=0.05, seed=0, log=print):
  """The A/A calibration table of a study's dense models, written to <out_dir>/calibration.csv (default out_dir:
  <study_dir>/analysis) and returned as a DataFrame, one row per normalization."""
  study = study_lib.load_study(study_dir, log=log)
  plan = builder.FloorPlan(study.populations, [], 0, seed)
  pool = np.stack([m.top1 for k in plan.pool_keys for m in study.populations[k]])
  sizes = plan.reference
  if min(sizes) < 2:
    raise PieError(f"{study_dir}: {plan.pool_size} dense models cannot be split into two populations of 2 or more")
  table = significance.aa_calibration(
      significance.class_hits(pool, study.labels, study.num_classes),
      np.bincount(study.labels, minlength=study.num_classes),
      *sizes,
      num_splits=num_splits,
      alpha=alpha,
      seed=seed,
  )
  out_dir = analysis.output_dir(study_dir, None, out_dir)
  io_utils.write_text(os.path.join(out_dir, outputs.CALIBRATION_CSV), analysis.csv_text(table))
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
