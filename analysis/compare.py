r"""Compares one model with its compressed versions on a config's eval split, class by class and example by example.

  python -m analysis.compare --reference=model.h5 --candidates=model_int8.tflite,pruned.h5 \
      --config=configs/digits.py --out_dir=compare
  python -m analysis.compare --reference=model.h5 --candidates=model_int8.tflite --config=configs/digits.py \
      --out_dir=compare --max_excess_drop=0.05 --max_top1_drop=0.02
  python -m analysis.compare --reference=fp16.jsonl --candidates=int4.jsonl,int8.jsonl --format=table \
      --group_by=subject --out_dir=compare
  python -m analysis.compare --reference=results/fp16 --candidates=results/int4 --format=lm_eval \
      --group_by=subject --out_dir=compare

Models are Keras files (.h5, .keras, SavedModel folders), TFLite flatbuffers (.tflite) or prediction files (.tfrecord
with their .json), compared on --config's eval split; or prediction tables (.csv, .jsonl, .parquet) and lm-eval
--log_samples run folders, which carry their own examples (no --config; README: "Predictions from other frameworks").
Writes compare_classes.csv, compare_examples.csv, compare_summary.json and compare.html into --out_dir (README: "One
model against its compressed versions"), and for tables compare_groups.csv and table_examples.csv. Exit status: 0
when every candidate passes the gate (or none is set), 3 when one fails it (one line on stderr names the candidates,
classes and groups), 1 on bad input (nothing written). The work is `pie.comparison.run` or
`pie.prediction_tables.run_compare`; this binary only reads flags.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import cli
from pie import comparison
from pie import prediction_tables

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config whose eval split (config.data) the models are compared on.", lock_config=True
)
_REFERENCE = flags.DEFINE_string(
    "reference",
    None,
    "The uncompressed model: .h5, .keras, SavedModel folder, .tflite or .tfrecord; or a prediction table (.csv, "
    ".jsonl, .parquet; file.parquet#model for one model of a file) or an lm-eval run folder.",
)
_CANDIDATES = flags.DEFINE_list("candidates", None, "Its compressed versions (same kinds of files), comma-separated.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder of the four files.")
_NAMES = flags.DEFINE_list("names", None, "Names of the candidates, in order (default: their file stems).")
_ALPHA = flags.DEFINE_float("alpha", 0.05, "FDR level of significant_fdr; intervals are at level 1 - alpha.")
_BOOTSTRAP = flags.DEFINE_integer(
    "bootstrap_resamples", comparison.DEFAULT_BOOTSTRAP, "Bootstrap draws behind the intervals and the gate."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the bootstrap.")
_MAX_EXCESS_DROP = flags.DEFINE_float(
    "max_excess_drop",
    None,
    "Gate: fail (exit 3) when some class's harm beyond the top-1 change may exceed this fraction (the upper end of "
    "its interval, -ci_low; 0.05 = 5 points of recall).",
)
_MAX_TOP1_DROP = flags.DEFINE_float(
    "max_top1_drop",
    None,
    "Gate: fail (exit 3) when the top-1 drop may exceed this fraction (its interval's upper end).",
)
_IMAGES = flags.DEFINE_bool(
    "images", True, "Show the changed examples' images in compare.html (read from the eval split)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Prediction batch size (default: config.eval_batch_size).")
# Prediction tables and lm-eval samples (pie.prediction_tables): they carry their examples, so no --config.
_FORMAT = flags.DEFINE_enum(
    "format",
    prediction_tables.AUTO,
    list(prediction_tables.FORMATS),
    "What --reference and --candidates are: model (Keras, TFLite, .tfrecord; needs --config), table (.csv, .jsonl, "
    ".parquet), lm_eval (lm-eval --log_samples run folders), or auto (told by each path).",
)
_GROUP_BY = flags.DEFINE_list(
    "group_by",
    [],
    "Tables: group columns compared like classes (compare_groups.csv; a task column always is one); lm_eval: fields "
    "of each sample's doc (e.g. subject), the task always being one.",
)
_LM_EVAL_METRIC = flags.DEFINE_string(
    "lm_eval_metric",
    None,
    "lm_eval: the per-document metric that says right or wrong, where a task has it (default per task: acc, "
    "exact_match, pass@1, ... whichever it has first).",
)
_LM_EVAL_FILTER = flags.DEFINE_string(
    "lm_eval_filter", None, "lm_eval: the filter whose answers are read (default: each task's first)."
)
flags.mark_flags_as_required(["reference", "candidates", "out_dir"])


def _compare():
  """The comparison the flags ask for: of models on --config's eval split, or of prediction tables."""
  kind = prediction_tables.input_format(_FORMAT.value, _REFERENCE.value)
  settings = {
      "names": _NAMES.value,
      "alpha": _ALPHA.value,
      "bootstrap_resamples": _BOOTSTRAP.value,
      "seed": _SEED.value,
      "max_excess_drop": _MAX_EXCESS_DROP.value,
      "max_top1_drop": _MAX_TOP1_DROP.value,
  }
  log = lambda m: print(m, flush=True)  # noqa: E731
  if kind == prediction_tables.MODEL_INPUT:
    if _GROUP_BY.value or _LM_EVAL_METRIC.value or _LM_EVAL_FILTER.value:
      raise pie.PieError("group_by, lm_eval_metric and lm_eval_filter apply to tables and lm-eval runs", "format")
    return comparison.run(
        _REFERENCE.value,
        _CANDIDATES.value,
        _CONFIG.value,
        _OUT_DIR.value,
        images=_IMAGES.value,
        batch_size=_BATCH_SIZE.value,
        log=log,
        **settings,
    )
  if _CONFIG.value is not None:
    raise pie.PieError("prediction tables and lm-eval runs carry their own examples: give no config", "config")
  return prediction_tables.run_compare(
      _REFERENCE.value,
      _CANDIDATES.value,
      _OUT_DIR.value,
      _GROUP_BY.value,
      format=kind,
      lm_eval_metric=_LM_EVAL_METRIC.value,
      lm_eval_filter=_LM_EVAL_FILTER.value,
      log=log,
      **settings,
  )


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  result = _compare()
  for candidate in result.candidates:
    harm, group = candidate["largest_harm"], candidate["largest_group_harm"]
    parts = [
        f"{candidate['name']}: top-1 {100 * candidate['top1_change']:+.2f} points",
        f"{candidate['flips_correct_to_wrong']} lost / {candidate['flips_wrong_to_correct']} gained",
        f"{candidate['num_significant_classes_fdr']} classes significant (FDR)",
    ]
    if harm is not None:
      parts.append(
          f"largest harm: class {harm['class_name']} {100 * harm['excess_change']:+.1f} points "
          f"[{100 * harm['ci_low']:+.1f}, {100 * harm['ci_high']:+.1f}]"
      )
    if group is not None:
      parts.append(
          f"{candidate['num_significant_groups_fdr']} groups significant (FDR), largest group harm: "
          f"{group['group_column']} = {group['group_value']} {100 * group['excess_change']:+.1f} points "
          f"[{100 * group['ci_low']:+.1f}, {100 * group['ci_high']:+.1f}]"
      )
    print(", ".join(parts), flush=True)
  print(f"comparison written to {_OUT_DIR.value}", flush=True)
  if not result.passed:
    print(result.gate_line(), file=sys.stderr, flush=True)
    sys.exit(cli.EXIT_GATE_FAILED)
  print(result.gate_line(), flush=True)


if __name__ == "__main__":
  app.run(main)
