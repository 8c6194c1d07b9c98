r"""Robustness of a study's dense and pruned populations to common corruptions (and ImageNet-A).

  python -m analysis.robustness --study_dir=studies/digits
  python -m analysis.robustness --study_dir=studies/digits --corruptions=gaussian_noise,fog --severities=1,3,5
  python -m analysis.robustness --study_dir=studies/cifar10 --source=tfds --data_dir=/path/to/tfds
  python -m analysis.robustness --study_dir=studies/imagenet --source=tfds --imagenet_a --data_dir=/path/to/tfds

Writes robustness.csv, robustness_models.csv and robustness_summary.json into --out_dir (default
<study_dir>/analysis); docs/robustness.md describes them.
"""

import os

from absl import app
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import cli
from pie import names
from pie import robustness
from pie import study as study_lib
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


def run(
    study_dir,
    out_dir=None,
    corruptions=None,
    severities=(1, 2, 3, 4, 5),
    allow_mixed_configs=False,
    log=print,
    **kwargs,
):
  """Loads the study and writes the robustness analysis; returns (out_dir, summary)."""
  out_dir = (
      names.resolve_path(out_dir, "out_dir")
      if out_dir
      else os.path.join(names.resolve_path(study_dir, "study_dir"), "analysis")
  )
  study = study_lib.load_study(study_dir, allow_mixed_configs=allow_mixed_configs, log=log)
  summary = robustness.run_robustness(
      study, out_dir, corruption_names=corruptions, severities=severities, log=log, **kwargs
  )
  if os.path.exists(os.path.join(out_dir, "summary.json")):
    # The analysis has run: rebuild its report so that it gains the robustness section.
    from pie import report  # pylint: disable=g-import-not-at-top

    log(f"report: {report.write_report(out_dir)}")
  return out_dir, summary


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  corruptions = _CORRUPTIONS.value
  if corruptions is not None:
    corruptions = [c.strip() for c in corruptions if c.strip()]
  out_dir, _ = run(
      _STUDY_DIR.value,
      _OUT_DIR.value,
      corruptions=corruptions,
      severities=_severities(_SEVERITIES.value),
      allow_mixed_configs=_ALLOW_MIXED.value,
      log=lambda m: print(m, flush=True),
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
  print(f"robustness written to {out_dir}", flush=True)


if __name__ == "__main__":
  app.run(main)
