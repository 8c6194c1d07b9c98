r"""Robustness of a study's dense and pruned populations to common corruptions (and ImageNet-A).

  python -m analysis.robustness --study_dir=studies/digits
  python -m analysis.robustness --study_dir=studies/digits --corruptions=gaussian_noise,fog --severities=1,3,5
  python -m analysis.robustness --study_dir=studies/cifar10 --source=tfds --data_dir=/path/to/tfds
  python -m analysis.robustness --study_dir=studies/imagenet --source=tfds --imagenet_a --data_dir=/path/to/tfds

Writes robustness.csv, robustness_models.csv and robustness_summary.json into --out_dir (default
<study_dir>/analysis); docs/robustness.md describes them. The work is `pie.robustness.run`; this binary only reads
flags.
"""

from absl import app
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import cli
from pie import robustness
from pie.errors import PieError

_STUDY_DIR = flags.DEFINE_string("study_dir", None, "Study directory written by train/population.py.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder (default: <study_dir>/analysis).")
_CORRUPTIONS = flags.DEFINE_list(
    "corruptions",
    None,
    "Corruptions to evaluate (default: every benchmark corruption that applies to the images; "
    "an empty value evaluates none, e.g. with --imagenet_a).",
)
_EXTRA = flags.DEFINE_bool(
    "extra_corruptions",
    False,
    "With the default --corruptions, add the 4 extra ones (speckle_noise, gaussian_blur, " "spatter, saturate).",
)
_SEVERITIES = flags.DEFINE_list("severities", ["1", "2", "3", "4", "5"], "Severities to evaluate, in 1..5.")
_SOURCE = flags.DEFINE_enum(
    "source",
    "on_the_fly",
    robustness.SOURCES,
    "on_the_fly: corrupt the eval split with pie.corruptions; tfds: read the pre-built "
    "cifar10_corrupted / imagenet2012_corrupted sets from --data_dir.",
)
_IMAGENET_A = flags.DEFINE_bool("imagenet_a", False, "Also score TFDS imagenet_a, restricted to its 200 classes.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: the study's config.data.data_dir).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the on-the-fly corruptions.")
_ALPHA = flags.DEFINE_float(
    "alpha", 0.05, "Level of the dense vs pruned tests: a row is significant when q <= alpha (Benjamini-Hochberg)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Inference batch size (default: the study's).")
_MEMORY_LIMIT = flags.DEFINE_integer(
    "memory_limit_mb",
    robustness.DEFAULT_MEMORY_LIMIT_MB,
    "Image sets are kept in memory up to this total; further ones are memory-mapped .npy files in --cache_dir.",
)
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Folder of those files (default: <out_dir>/corrupted_cache).")
_KEEP_CACHE = flags.DEFINE_bool("keep_cache", False, "Keep the memory-mapped image sets after the run.")
_ALLOW_MIXED = flags.DEFINE_bool("allow_mixed_configs", False, "Accept models trained with different configs.")
flags.mark_flag_as_required("study_dir")


def _severities(values):
  try:
    return [int(v) for v in values]
  except ValueError:
    raise PieError(f"--severities must be integers in 1..5, got {','.join(values)}") from None


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  corruptions = _CORRUPTIONS.value
  if corruptions is not None:
    corruptions = [c.strip() for c in corruptions if c.strip()]
  options = robustness.RobustnessOptions(
      corruption_names=corruptions,
      severities=tuple(_severities(_SEVERITIES.value)),
      source=_SOURCE.value,
      imagenet_a=_IMAGENET_A.value,
      include_extra=_EXTRA.value,
      seed=_SEED.value,
      alpha=_ALPHA.value,
      data_dir=_DATA_DIR.value,
      batch_size=_BATCH_SIZE.value,
      memory_limit_mb=_MEMORY_LIMIT.value,
      cache_dir=_CACHE_DIR.value,
      keep_cache=_KEEP_CACHE.value,
  )
  out_dir, _ = robustness.run(
      _STUDY_DIR.value,
      _OUT_DIR.value,
      options,
      allow_mixed_configs=_ALLOW_MIXED.value,
      log=lambda m: print(m, flush=True),
  )
  print(f"robustness written to {out_dir}", flush=True)


if __name__ == "__main__":
  app.run(main)
