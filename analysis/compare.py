r"""Compares one model with its compressed versions on a config's eval split, class by class and example by example.

  python -m analysis.compare --reference=model.h5 --candidates=model_int8.tflite,pruned.h5 \
      --config=configs/digits.py --out_dir=compare
  python -m analysis.compare --reference=model.h5 --candidates=model_int8.tflite --config=configs/digits.py \
      --out_dir=compare --max_excess_drop=0.05 --max_top1_drop=0.02

Models are Keras files (.h5, .keras, SavedModel folders), TFLite flatbuffers (.tflite) or prediction files (.tfrecord
with their .json). Writes compare_classes.csv, compare_examples.csv, compare_summary.json and compare.html into
--out_dir (README: "One model against its compressed versions"). Exit status: 0 when every candidate passes the gate
(or none is set), 3 when one fails it (one line on stderr names the candidates and classes), 1 on bad input (nothing
written). The work is `pie.comparison.run`; this binary only reads flags.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import cli
from pie import comparison

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config whose eval split (config.data) the models are compared on.", lock_config=True
)
_REFERENCE = flags.DEFINE_string(
    "reference", None, "The uncompressed model: .h5, .keras, SavedModel folder, .tflite or .tfrecord."
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
flags.mark_flags_as_required(["reference", "candidates", "config", "out_dir"])


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  result = comparison.run(
      _REFERENCE.value,
      _CANDIDATES.value,
      _CONFIG.value,
      _OUT_DIR.value,
      images=_IMAGES.value,
      names=_NAMES.value,
      alpha=_ALPHA.value,
      bootstrap_resamples=_BOOTSTRAP.value,
      seed=_SEED.value,
      max_excess_drop=_MAX_EXCESS_DROP.value,
      max_top1_drop=_MAX_TOP1_DROP.value,
      batch_size=_BATCH_SIZE.value,
      log=lambda m: print(m, flush=True),
  )
  for candidate in result.candidates:
    harm = candidate["largest_harm"]
    print(
        f"{candidate['name']}: top-1 {100 * candidate['top1_change']:+.2f} points, "
        f"{candidate['flips_correct_to_wrong']} lost / {candidate['flips_wrong_to_correct']} gained, "
        f"{candidate['num_significant_classes_fdr']} classes significant (FDR), largest harm: class "
        f"{harm['class_name']} {100 * harm['excess_change']:+.1f} points [{100 * harm['ci_low']:+.1f}, "
        f"{100 * harm['ci_high']:+.1f}]",
        flush=True,
    )
  print(f"comparison written to {_OUT_DIR.value}", flush=True)
  if not result.passed:
    print(result.gate_line(), file=sys.stderr, flush=True)
    sys.exit(cli.EXIT_GATE_FAILED)
  print(result.gate_line(), flush=True)


if __name__ == "__main__":
  app.run(main)
