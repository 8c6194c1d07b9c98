r"""Analyses a study with Apache Beam, for prediction sets larger than one machine's memory.

  python -m analysis.beam_analyze --study_dir=studies/digits --out_dir=/tmp/beam_analysis
  python -m analysis.beam_analyze --study_dir=studies/digits --out_dir=/tmp/beam_analysis \
      --runner=DirectRunner --direct_num_workers=2
  python -m analysis.beam_analyze --study_dir=gs://bucket/study --out_dir=gs://bucket/study/analysis \
      --runner=DataflowRunner --project=PROJECT --region=REGION --temp_location=gs://bucket/tmp \
      --setup_file=./setup.py

Writes the same pies.csv, class_stats.csv, exemplar_scores.csv, pie_accuracy.csv and summary.json as
analysis.analyze (not the PIE images nor the report; see pie/beam_analysis.py). Every argument that is not a flag
below is a Beam pipeline option (the runner and its settings); DirectRunner by default. Needs the `beam` extra:
pip install -e '.[beam]'.
"""

import sys

from absl import app
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from analysis import study_flags
from pie import cli

flags.adopt_module_key_flags(study_flags)  # listed by --help like this binary's own flags
_BLOCK_SIZE = flags.DEFINE_integer(
    "block_size",
    20_000,
    "Examples per block: a worker holds every model's "
    "predictions of one block at once. Changes how the work is cut, not the outputs.",
)
_SHARD_ROWS = flags.DEFINE_integer("shard_rows", 200_000, "Rows per intermediate shard of exemplar_scores.csv.")


def parse_flags(argv):
  """This binary's flags; every other argument is left in argv for Beam."""
  try:
    return flags.FLAGS(argv, known_only=True)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


@cli.main_with_errors(flag_names=study_flags.FLAG_NAMES)
def main(argv):
  from pie import beam_analysis  # pylint: disable=g-import-not-at-top

  out_dir, _ = beam_analysis.run(
      pipeline_args=argv[1:],
      block_size=_BLOCK_SIZE.value,
      shard_rows=_SHARD_ROWS.value,
      log=lambda m: print(m, flush=True),
      **study_flags.arguments(),
  )
  print(f"analysis written to {out_dir}", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
