"""Flags shared by the two analysis binaries (analysis.analyze in memory, analysis.beam_analyze with Beam), so both
take a study and the statistics' settings alike."""

from absl import flags

from pie import analysis
from pie import slices

STUDY_DIR = flags.DEFINE_string("study_dir", None, "Study directory written by train/population.py.")
PREDICTIONS = flags.DEFINE_list("predictions", None, "Explicit prediction files (.tfrecord) instead of a study.")
OUT_DIR = flags.DEFINE_string(
    "out_dir",
    None,
    "Output folder (default: <study_dir>/analysis); with a distributed Beam "
    "runner, storage the workers can write to (e.g. gs://).",
)
ALPHA = flags.DEFINE_float("alpha", 0.05, "Significance level of the class-level tests.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the random sample in pie_accuracy.csv and of the bootstrap.")
ALLOW_MIXED = flags.DEFINE_bool("allow_mixed_configs", False, "Accept models trained with different configs.")
VALIDATE = flags.DEFINE_bool(
    "validate",
    True,
    "Check the study directory's metadata first (every expected model "
    "present and finished, sparsity within tolerance, one config) and stop on any problem; "
    "--novalidate analyses whatever finished models there are.",
)
NORMALIZATION = flags.DEFINE_enum(
    "normalization",
    "per_model",
    ["per_model", "population"],
    "Recall normalization: minus each model's own top-1 (default: same estimate as the "
    "paper's rule, right standard error) or minus the population's mean top-1 (the "
    "paper's rule, which ignores the variance of that mean).",
)
BOOTSTRAP = flags.DEFINE_integer(
    "bootstrap_resamples", 200, "Bootstrap resamples of the models for PIE and class " "stability (0: skip)."
)
NOISE_FLOOR_SPLITS = flags.DEFINE_integer(
    "noise_floor_splits",
    analysis.DEFAULT_NOISE_FLOOR_SPLITS,
    "Random A/A splits of the pooled dense models that measure the noise floor " "(0: skip).",
)
POWER_EFFECT = flags.DEFINE_float(
    "power_effect",
    analysis.DEFAULT_POWER_EFFECT,
    "Normalized recall change that " "summary.json's models_needed plan is sized to detect (80% power).",
)

CLASS_GROUPS = flags.DEFINE_string(
    "class_groups",
    None,
    "Class groups analysed as slices (slice_stats.csv): a grouping shipped with pie "
    f"({', '.join(slices.SHIPPED_GROUPINGS)}) or a JSON file mapping group names to class ids or names "
    "(default: the study config's class_groups).",
)
MIN_SLICE_SIZE = flags.DEFINE_integer(
    "min_slice_size",
    slices.DEFAULT_MIN_SLICE_SIZE,
    "Slices (attribute values, their pairs, class groups) with fewer examples are reported in slice_stats.csv but "
    "not tested.",
)

FDR_SCOPE = flags.DEFINE_enum(
    "fdr_scope",
    "level",
    ["level", "study"],
    "Benjamini-Hochberg over each compared population's classes (level) or over every class test of every level and "
    "method together (study); recorded in summary.json.",
)

EXCESS_PERMUTATIONS = flags.DEFINE_integer(
    "excess_permutations",
    analysis.DEFAULT_EXCESS_PERMUTATIONS,
    "Arrangements the PIE-excess test and the correlation tests draw when they cannot enumerate every one "
    "(0: no PIE-excess test).",
)

# Library arguments whose flag has another name (pie.cli prints the flag with errors about them).
FLAG_NAMES = {"validate_first": "validate"}


def options():
  """The statistics' flags as one `pie.analysis.AnalysisOptions`, checked once (a bad value names its flag)."""
  return analysis.AnalysisOptions(
      alpha=ALPHA.value,
      seed=SEED.value,
      normalization=NORMALIZATION.value,
      bootstrap_resamples=BOOTSTRAP.value,
      power_effect=POWER_EFFECT.value,
      noise_floor_splits=NOISE_FLOOR_SPLITS.value,
      class_groups=CLASS_GROUPS.value,
      min_slice_size=MIN_SLICE_SIZE.value,
      fdr_scope=FDR_SCOPE.value,
      excess_permutations=EXCESS_PERMUTATIONS.value,
  )


def arguments():
  """The shared flags as keyword arguments of pie.analysis.run / pie.beam_analysis.run."""
  return {
      "study_dir": STUDY_DIR.value,
      "predictions": PREDICTIONS.value,
      "out_dir": OUT_DIR.value,
      "allow_mixed_configs": ALLOW_MIXED.value,
      "validate_first": VALIDATE.value,
      "options": options(),
  }
