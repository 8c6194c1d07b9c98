r"""Checks a study directory before analysing it: every model present, complete, consistent; exit 1 on a problem.

  python -m analysis.validate --study_dir=studies/digits

Prints one line per model (name, status, target and measured sparsity, top-1), then every problem found, each naming
its model or file. The expected models come from the study.json the launcher writes (if present). Rerunning the
launcher redoes missing, unfinished or incomplete models; `analysis.analyze --export_missing` exports the trained ones
(status unexported) without training; see docs/reliability.md.
"""

from absl import app
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import cli
from pie import validate
from pie import variants
from pie.errors import PieError

_STUDY_DIR = flags.DEFINE_string("study_dir", None, "Study directory written by train/population.py.")
_ALLOW_MIXED = flags.DEFINE_bool("allow_mixed_configs", False, "Accept models trained with different configs.")
_TOLERANCE = flags.DEFINE_float(
    "sparsity_tolerance",
    variants.SPARSITY_TOLERANCE,
    "Largest accepted |measured - target| sparsity (0.005 = 0.5 percentage points).",
)
flags.mark_flags_as_required(["study_dir"])


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  report = validate.validate_study(
      _STUDY_DIR.value, sparsity_tolerance=_TOLERANCE.value, allow_mixed_configs=_ALLOW_MIXED.value
  )
  print(report.table(), flush=True)
  if not report.ok:
    raise PieError(f"{_STUDY_DIR.value}: {len(report.problems)} problem(s); see the lines starting with 'problem:'")
  print(f"{_STUDY_DIR.value}: every model is present, complete and consistent", flush=True)


if __name__ == "__main__":
  app.run(main)
