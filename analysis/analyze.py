r"""Analyses a study: PIEs, class-level Welch t-tests, the noise floor, PIE accuracy, summary and report.

  python -m analysis.analyze --study_dir=studies/digits
  python -m analysis.analyze --study_dir=studies/digits --export_missing
  python -m analysis.analyze --predictions=a.tfrecord,b.tfrecord,... --out_dir=results
  python -m analysis.analyze --checkpoint_dirs='runs/*' --config=configs/digits.py --out_dir=results
  python -m analysis.analyze --prediction_tables='runs/*.parquet' --dense_method=fp16 --group_by=subject \
      --out_dir=results

Outputs go to --out_dir (default <study_dir>/analysis); the README describes every file and column. --export_missing
first exports the study's trained models that have no predictions (from model.h5, model.tflite or the final
checkpoint), without training; --checkpoint_dirs exports runs trained outside a study (one directory per model, with
a pie_run.json or a name like run_sparsity90_seed3) into <out_dir>/predictions and analyses them ("Analysing
checkpoints" in the README). --prediction_tables analyses populations of prediction tables (.csv, .jsonl, .parquet)
or lm-eval --log_samples run folders ("Predictions from other frameworks"). The work is `pie.analysis.run` (tables:
`pie.prediction_tables.run_analysis`); this binary only reads flags.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from analysis import study_flags
from pie import analysis
from pie import cli
from pie import prediction_tables

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


# Populations of prediction tables or lm-eval runs (pie.prediction_tables), instead of a study.
_PREDICTION_TABLES = flags.DEFINE_list(
    "prediction_tables",
    None,
    "Glob patterns of prediction tables (.csv, .jsonl, .parquet: one row per model and example) or lm-eval "
    "--log_samples run folders, one model each; populations by their method/level columns (or sidecar JSON), "
    "analysed like a study into --out_dir.",
)
_GROUP_BY = flags.DEFINE_list(
    "group_by",
    [],
    "With --prediction_tables: group columns (lm-eval: fields of each sample's doc) analysed as slices "
    "(slice_stats.csv); a task column always is one.",
)
_DENSE_METHOD = flags.DEFINE_string(
    "dense_method",
    None,
    "With --prediction_tables: the method of the baseline population (e.g. fp16), analysed as the dense one "
    "(default: models whose method is dense, or that declare none).",
)
_LM_EVAL_METRIC = flags.DEFINE_string(
    "lm_eval_metric", None, "lm-eval runs: the per-document right-or-wrong metric, where a task has it."
)
_LM_EVAL_FILTER = flags.DEFINE_string(
    "lm_eval_filter", None, "lm-eval runs: the filter whose answers are read (default: each task's first)."
)


def _analyze_tables(log):
  options = study_flags.arguments()
  study_dir, predictions = options.pop("study_dir"), options.pop("predictions")
  if study_dir or predictions or _CHECKPOINT_DIRS.value or _EXPORT_MISSING.value:
    raise pie.PieError(
        "give prediction tables (prediction_tables), a study (study_dir), prediction files (predictions) or runs "
        "(checkpoint_dirs), not several",
        "prediction_tables",
    )
  if _CONFIG.value is not None:
    raise pie.PieError("prediction tables carry their own examples: give no config", "config")
  for unused in ("allow_mixed_configs", "validate_first"):
    options.pop(unused)
  return prediction_tables.run_analysis(
      _PREDICTION_TABLES.value,
      options.pop("out_dir"),
      _GROUP_BY.value,
      dense_method=_DENSE_METHOD.value,
      lm_eval_metric=_LM_EVAL_METRIC.value,
      lm_eval_filter=_LM_EVAL_FILTER.value,
      report=_REPORT.value,
      log=log,
      **options,
  )


@cli.main_with_errors(flag_names={**study_flags.FLAG_NAMES, "images": "--nopie_images"})
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _PREDICTION_TABLES.value:
    out_dir, _ = _analyze_tables(lambda m: print(m, flush=True))
    print(f"analysis written to {out_dir}", flush=True)
    return
  if _GROUP_BY.value or _DENSE_METHOD.value:
    raise pie.PieError("group_by and dense_method apply to prediction tables (prediction_tables)", "group_by")
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
