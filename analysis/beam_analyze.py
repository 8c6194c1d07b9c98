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
from pie import analysis
from pie import cli
from pie import validate

flags.adopt_module_key_flags(study_flags)  # listed by --help like this binary's own flags
_BLOCK_SIZE = flags.DEFINE_integer("block_size", 20_000, "Examples per block: a worker holds every model's "
                                   "predictions of one block at once. Changes how the work is cut, not the outputs.")
_SHARD_ROWS = flags.DEFINE_integer("shard_rows", 200_000, "Rows per intermediate shard of exemplar_scores.csv.")


def run(study_dir=None, predictions=None, out_dir=None, alpha=0.05, seed=0, allow_mixed_configs=False,
        normalization="per_model", bootstrap_resamples=200, power_effect=analysis.DEFAULT_POWER_EFFECT,
        validate_first=True, pipeline_args=(), block_size=20_000, shard_rows=200_000,
        noise_floor_splits=analysis.DEFAULT_NOISE_FLOOR_SPLITS, log=print):
  """Checks the study and runs the Beam analysis; returns (out_dir, summary)."""
  out_dir = study_flags.output_dir(study_dir, predictions, out_dir)
  from pie import beam_analysis  # pylint: disable=g-import-not-at-top
  beam_analysis.import_beam()  # a missing extra is reported before any work
  if study_dir and validate_first:
    validate.require_valid(study_dir, allow_mixed_configs=allow_mixed_configs, read_records=False, log=log)
  summary = beam_analysis.analyze_study(
      study_dir, out_dir, prediction_files=predictions, alpha=alpha, seed=seed, normalization=normalization,
      bootstrap_resamples=bootstrap_resamples, power_effect=power_effect, allow_mixed_configs=allow_mixed_configs,
      pipeline_args=pipeline_args, block_size=block_size, shard_rows=shard_rows,
      noise_floor_splits=noise_floor_splits, log=log)
  return out_dir, summary


def parse_flags(argv):
  """This binary's flags; every other argument is left in argv for Beam."""
  try:
    return flags.FLAGS(argv, known_only=True)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


@cli.main_with_errors
def main(argv):
  f = study_flags
  out_dir, _ = run(f.STUDY_DIR.value, f.PREDICTIONS.value, f.OUT_DIR.value, f.ALPHA.value, f.SEED.value,
                   f.ALLOW_MIXED.value, f.NORMALIZATION.value, f.BOOTSTRAP.value, f.POWER_EFFECT.value, f.VALIDATE.value,
                   pipeline_args=argv[1:], block_size=_BLOCK_SIZE.value, shard_rows=_SHARD_ROWS.value,
                   noise_floor_splits=f.NOISE_FLOOR_SPLITS.value, log=lambda m: print(m, flush=True))
  print(f"analysis written to {out_dir}", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
