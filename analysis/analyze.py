r"""Analyses a study: PIEs, class-level Welch t-tests, the noise floor, PIE accuracy, summary and report.

  python -m analysis.analyze --study_dir=studies/digits
  python -m analysis.analyze --predictions=a.tfrecord,b.tfrecord,... --out_dir=results

Outputs go to --out_dir (default <study_dir>/analysis); the README describes every file and column. The work is
`pie.analysis.run`; this binary only reads flags.
"""

from absl import app
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from analysis import study_flags
from pie import analysis
from pie import cli

flags.adopt_module_key_flags(study_flags)  # listed by --help like this binary's own flags
_PIE_IMAGES = flags.DEFINE_bool("pie_images", True, "Read the PIE images from the eval split (pies.tfrecord).")
_REPORT = flags.DEFINE_bool("report", True, "Write report.html.")


@cli.main_with_errors(flag_names={**study_flags.FLAG_NAMES, "images": "--nopie_images"})
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out_dir, _ = analysis.run(
      images=_PIE_IMAGES.value, report=_REPORT.value, log=lambda m: print(m, flush=True), **study_flags.arguments()
  )
  print(f"analysis written to {out_dir}", flush=True)


if __name__ == "__main__":
  app.run(main)
