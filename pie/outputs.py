"""The output contract: the files of an analysis folder, their columns and keys, pies.tfrecord, and the files of a
comparison of one model with its compressed versions (pie.comparison).

The analyses write these files (`pie.analysis`, `pie.beam_analysis`, `pie.robustness`) and the report reads them
(`pie.report`); both sides, and the tests, take the names from here so that a column cannot drift between them.
README.md ("Analysis outputs") says what each column means.

A table's columns come in three groups, in file order:
  * `required`: in every file; a reader may rely on them (the report refuses a file without one).
  * `optional`: written by today's analysis but absent from files of earlier versions or other writers; those
    named in `bootstrap` only when the analysis ran the bootstrap, those named in `paired` only when the study's
    design is paired (its compressed models start from their dense twins: summary.json `design`).
  * `method`: last, in every table of a study with populations other than dense and magnitude pruning (controls,
    other compression methods); it names the population, and `sparsity` is then the population's level.

Importing this module costs no TensorFlow: the pies.tfrecord writer and reader load it when called.
"""

import dataclasses

from pie import significance
from pie import variants
from pie.errors import PieError

# Files of an analysis folder.
PIES_CSV = "pies.csv"
CLASS_STATS_CSV = "class_stats.csv"
EXEMPLAR_SCORES_CSV = "exemplar_scores.csv"
PIE_ACCURACY_CSV = "pie_accuracy.csv"
DIFFICULTY_CSV = "difficulty.csv"
SLICE_STATS_CSV = "slice_stats.csv"
SUMMARY_JSON = "summary.json"
PIES_TFRECORD = "pies.tfrecord"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"
TRIAGE_DIR = "triage"
# Written by the robustness analysis (`python -m analysis.robustness`), into the same folder or its own.
ROBUSTNESS_CSV = "robustness.csv"
ROBUSTNESS_MODELS_CSV = "robustness_models.csv"
ROBUSTNESS_SUMMARY_JSON = "robustness_summary.json"

# The files `pie.analysis.analyze_study` writes, and those of the robustness analysis.
ANALYSIS_FILES = (
    PIES_CSV,
    CLASS_STATS_CSV,
    EXEMPLAR_SCORES_CSV,
    PIE_ACCURACY_CSV,
    DIFFICULTY_CSV,
    SLICE_STATS_CSV,
    SUMMARY_JSON,
    PIES_TFRECORD,
    REPORT_HTML,
)
ROBUSTNESS_FILES = (ROBUSTNESS_CSV, ROBUSTNESS_MODELS_CSV, ROBUSTNESS_SUMMARY_JSON)
# The A/A calibration of the class test on a study's dense models (pie.calibration, `python -m analysis.calibrate`).
CALIBRATION_CSV = "calibration.csv"
# Written by `python -m analysis.compare` / `pie.compare(...).write` (pie.comparison), into a folder of their own.
COMPARE_CLASSES_CSV = "compare_classes.csv"
COMPARE_EXAMPLES_CSV = "compare_examples.csv"
COMPARE_SUMMARY_JSON = "compare_summary.json"
COMPARE_HTML = "compare.html"
COMPARE_FILES = (COMPARE_CLASSES_CSV, COMPARE_EXAMPLES_CSV, COMPARE_SUMMARY_JSON, COMPARE_HTML)
# Written besides those when the models come from prediction tables or lm-eval samples (pie.prediction_tables):
# compare_groups.csv (the task and group columns; by compare), and table_examples.csv (what each example_id is in the
# tables; by compare and by the analysis of tables).
COMPARE_GROUPS_CSV = "compare_groups.csv"
TABLE_EXAMPLES_CSV = "table_examples.csv"

# Kinds of values a column holds, as readers parse them.
INT, FLOAT, BOOL, STR, BYTES = "int", "float", "bool", "str", "bytes"

METHOD_COLUMN = "method"


# Populations other than these give every table the method column.
def has_method_column(methods):
  """Whether the tables of a study whose populations have these methods end with the `method` column: whenever a
  population is not named by its level alone (anything but dense and magnitude pruning, see pie.variants)."""
  return any(not variants.named_by_level(method) for method in methods)


@dataclasses.dataclass(frozen=True)
class Table:
  """One CSV of the analysis: its name and its columns as (name, kind) pairs, in file order (see the module doc)."""

  name: str
  required: tuple
  optional: tuple = ()
  bootstrap: tuple = ()  # the names of the optional columns written only with the bootstrap
  paired: tuple = ()  # the names of the optional columns written only in the paired design

  @staticmethod
  def names(columns):
    return tuple(name for name, _ in columns)

  @property
  def required_names(self):
    return self.names(self.required)

  @property
  def optional_names(self):
    return self.names(self.optional)

  def columns(self, bootstrap=False, method=False, paired=False):
    """The header today's analysis writes: without the bootstrap columns unless it ran the bootstrap, without the
    paired columns unless the design is paired."""
    optional = tuple(
        name
        for name in self.optional_names
        if (bootstrap or name not in self.bootstrap) and (paired or name not in self.paired)
    )
    return self.required_names + optional + ((METHOD_COLUMN,) if method else ())

  def kind(self, column):
    """The kind of a column (INT, FLOAT, BOOL or STR); the method column is text."""
    if column == METHOD_COLUMN:
      return STR
    for name, kind in self.required + self.optional:
      if name == column:
        return kind
    raise KeyError(f"{self.name} has no column {column!r}")


PIES = Table(
    PIES_CSV,
    required=(
        ("sparsity", FLOAT),
        ("example_id", INT),
        ("label", INT),
        ("dense_modal", INT),
        ("pruned_modal", INT),
        ("dense_modal_share", FLOAT),
        ("pruned_modal_share", FLOAT),
        ("modal_tie", BOOL),
        ("label_name", STR),
        ("dense_modal_name", STR),
        ("pruned_modal_name", STR),
    ),
    # pie_replicability is pie_stability under a name that says what it is (kept under both names).
    optional=(("pie_stability", FLOAT), ("pie_replicability", FLOAT)),
    bootstrap=("pie_stability", "pie_replicability"),
)

CLASS_STATS = Table(
    CLASS_STATS_CSV,
    required=(
        ("sparsity", FLOAT),
        ("class_id", INT),
        ("class_name", STR),
        ("num_examples", INT),
        ("dense_recall_mean", FLOAT),
        ("pruned_recall_mean", FLOAT),
        ("recall_change", FLOAT),
        ("normalized_change", FLOAT),
        ("t_statistic", FLOAT),
        ("p_value", FLOAT),
        ("significant", BOOL),
    ),
    optional=(
        ("q_value", FLOAT),
        ("significant_fdr", BOOL),
        ("ci_low", FLOAT),
        ("ci_high", FLOAT),
        ("hedges_g", FLOAT),
        ("df", FLOAT),
        ("note", STR),
        ("significant_stability", FLOAT),
        ("significance_replicability", FLOAT),
        # The paired design: each compressed model against its own dense twin (pie.significance.PAIRED_COLUMNS).
        ("paired_change", FLOAT),
        ("paired_t_statistic", FLOAT),
        ("paired_p_value", FLOAT),
        ("paired_significant", BOOL),
        ("paired_q_value", FLOAT),
        ("paired_significant_fdr", BOOL),
        ("paired_ci_low", FLOAT),
        ("paired_ci_high", FLOAT),
        ("num_pairs", INT),
        ("paired_note", STR),
        # Harm beyond a uniform shift of every example's margin (pie.significance.uniform_shift_tests).
        ("uniform_shift_change", FLOAT),
        ("beyond_uniform_shift", FLOAT),
        ("beyond_uniform_shift_p_value", FLOAT),
        ("beyond_uniform_shift_q_value", FLOAT),
        ("beyond_uniform_shift_significant_fdr", BOOL),
    ),
    bootstrap=("significant_stability", "significance_replicability"),
    paired=significance.PAIRED_COLUMNS,
)

EXEMPLAR_SCORES = Table(
    EXEMPLAR_SCORES_CSV,
    required=(
        ("sparsity", FLOAT),
        ("example_id", INT),
        ("label", INT),
        ("dense_modal", INT),
        ("pruned_modal", INT),
        ("is_pie", BOOL),
        ("l1_distance", FLOAT),
        ("rank", INT),
    ),
    # The example's difficulty from the dense population alone (pie.difficulty); dense_el2n is empty without logits.
    optional=(("dense_true_prob", FLOAT), ("dense_disagreement", FLOAT), ("dense_el2n", FLOAT)),
)

PIE_ACCURACY = Table(
    PIE_ACCURACY_CSV,
    required=(
        ("sparsity", FLOAT),
        ("population", STR),
        ("subset", STR),
        ("num_examples", INT),
        ("top1_mean", FLOAT),
        ("top1_std", FLOAT),
    ),
)

DIFFICULTY = Table(
    DIFFICULTY_CSV,
    required=(
        ("sparsity", FLOAT),
        ("decile", INT),
        ("num_examples", INT),
        ("dense_true_prob_low", FLOAT),
        ("dense_true_prob_high", FLOAT),
        ("pie_rate", FLOAT),
        ("dense_top1_mean", FLOAT),
        ("pruned_top1_mean", FLOAT),
    ),
)

# slice_stats.csv's slice_kind: a value of a slice feature, a pair of values of two, a group of classes (pie.slices).
SLICE_KINDS = ("feature", "intersection", "class_group")
# One row per slice per compared population (pie.slices): a value of a slice feature, an intersection of two, a group
# of classes. The statistics of class_stats.csv on the slice's accuracy, and its PIEs. Header only without slices.
SLICE_STATS = Table(
    SLICE_STATS_CSV,
    required=(
        ("sparsity", FLOAT),
        ("slice_kind", STR),
        ("slice_name", STR),
        ("slice_value", STR),
        ("num_examples", INT),
        ("dense_accuracy_mean", FLOAT),
        ("pruned_accuracy_mean", FLOAT),
        ("accuracy_change", FLOAT),
        ("normalized_change", FLOAT),
        ("t_statistic", FLOAT),
        ("p_value", FLOAT),
        ("significant", BOOL),
        ("q_value", FLOAT),
        ("significant_fdr", BOOL),
        ("ci_low", FLOAT),
        ("ci_high", FLOAT),
        ("hedges_g", FLOAT),
        ("df", FLOAT),
        ("note", STR),
        ("num_pies", INT),
        ("pie_rate", FLOAT),
    ),
)

# The values of pie_accuracy.csv's `subset` and `population` columns, in row order (populations outer).
SUBSETS = ("pie", "random", "non_pie")
POPULATIONS = (variants.DENSE, "pruned")

ROBUSTNESS = Table(
    ROBUSTNESS_CSV,
    required=(
        ("sparsity", FLOAT),
        ("corruption", STR),
        ("severity", INT),
        ("dense_top1_mean", FLOAT),
        ("dense_top1_std", FLOAT),
        ("pruned_top1_mean", FLOAT),
        ("pruned_top1_std", FLOAT),
        ("dense_drop", FLOAT),
        ("pruned_drop", FLOAT),
        ("relative_drop_dense", FLOAT),
        ("relative_drop_pruned", FLOAT),
        ("t_statistic", FLOAT),
        ("p_value", FLOAT),
        ("significant", BOOL),
    ),
    optional=(
        ("num_pies", INT),
        ("pie_fraction", FLOAT),
        ("q_value", FLOAT),
        ("num_examples", INT),
        ("dense_clean_top1", FLOAT),
        ("pruned_clean_top1", FLOAT),
        ("significant_fdr", BOOL),
    ),
)

ROBUSTNESS_MODELS = Table(
    ROBUSTNESS_MODELS_CSV,
    required=(
        ("model", STR),
        ("sparsity", FLOAT),
        ("seed", INT),
        ("corruption", STR),
        ("severity", INT),
        ("top1", FLOAT),
    ),
)

# One row per normalization (pie.significance.aa_calibration): the share of class tests at p < alpha over random A/A
# splits of the dense models, with its binomial interval, and the share of splits with a BH discovery, with its own.
CALIBRATION = Table(
    CALIBRATION_CSV,
    required=(
        ("normalization", STR),
        ("pool_models", INT),
        ("n_first", INT),
        ("n_second", INT),
        ("num_splits", INT),
        ("alpha", FLOAT),
        ("num_tests", INT),
        ("rate_significant", FLOAT),
        ("rate_ci_low", FLOAT),
        ("rate_ci_high", FLOAT),
        ("splits_with_fdr_discovery", FLOAT),
        ("fdr_splits_ci_low", FLOAT),
        ("fdr_splits_ci_high", FLOAT),
        ("rate_consistent_with_alpha", BOOL),
        ("fdr_splits_at_most_alpha", BOOL),
    ),
)

# The tables of `pie.analysis`, in the order it computes them.
ANALYSIS_TABLES = (PIES, CLASS_STATS, EXEMPLAR_SCORES, PIE_ACCURACY, DIFFICULTY, SLICE_STATS)

# One model against its compressed versions (pie.comparison): one row per candidate per class, and one per candidate
# per example whose top-1 changed. Probabilities are those each model gives its own top-1 (empty when unknown).
COMPARE_CLASSES = Table(
    COMPARE_CLASSES_CSV,
    required=(
        ("candidate", STR),
        ("class_id", INT),
        ("class_name", STR),
        ("num_examples", INT),
        ("reference_recall", FLOAT),
        ("candidate_recall", FLOAT),
        ("recall_change", FLOAT),
        ("excess_change", FLOAT),
        ("ci_low", FLOAT),
        ("ci_high", FLOAT),
        ("p_value", FLOAT),
        ("q_value", FLOAT),
        ("significant_fdr", BOOL),
    ),
)
COMPARE_EXAMPLES = Table(
    COMPARE_EXAMPLES_CSV,
    required=(
        ("candidate", STR),
        ("example_id", INT),
        ("label", INT),
        ("reference_pred", INT),
        ("candidate_pred", INT),
        ("reference_prob", FLOAT),
        ("candidate_prob", FLOAT),
        ("reference_correct", BOOL),
        ("candidate_correct", BOOL),
    ),
)
COMPARE_GROUPS = Table(
    COMPARE_GROUPS_CSV,
    required=(
        ("candidate", STR),
        ("group_column", STR),
        ("group_value", STR),
        ("num_examples", INT),
        ("reference_accuracy", FLOAT),
        ("candidate_accuracy", FLOAT),
        ("accuracy_change", FLOAT),
        ("excess_change", FLOAT),
        ("ci_low", FLOAT),
        ("ci_high", FLOAT),
        ("flips_correct_to_wrong", INT),
        ("flips_wrong_to_correct", INT),
        ("p_value", FLOAT),
        ("q_value", FLOAT),
        ("significant_fdr", BOOL),
    ),
)
# table_examples.csv: one row per example in example_id order; after these columns, one per group column (named as
# in the tables, `task` excepted: it is a column here). `label` is -1 and `label_name` the label's text (or empty)
# for an example scored by its `correct` alone.
TABLE_EXAMPLES = Table(
    TABLE_EXAMPLES_CSV,
    required=(
        ("example_id", INT),
        ("source_id", STR),
        ("task", STR),
        ("label", INT),
        ("label_name", STR),
    ),
)
COMPARE_TABLES = (COMPARE_CLASSES, COMPARE_EXAMPLES, COMPARE_GROUPS, TABLE_EXAMPLES)
# compare_summary.json: the reference, the eval split, the settings (gate bounds included), one entry per candidate,
# and `passed` (every candidate passes the gate; true without a gate).
COMPARE_SUMMARY_KEYS = ("reference", "dataset", "settings", "candidates", "passed")
COMPARE_REFERENCE_KEYS = ("name", "source", "kind", "top1", "size")
COMPARE_DATASET_KEYS = ("name", "eval_split", "num_examples", "num_classes", "class_names")
COMPARE_SETTINGS_KEYS = (
    "alpha",
    "confidence_level",
    "bootstrap_resamples",
    "seed",
    "interval",
    "max_excess_drop",
    "max_top1_drop",
    "group_by",
)
COMPARE_CANDIDATE_KEYS = (
    "name",
    "source",
    "kind",
    "reference_top1",
    "candidate_top1",
    "top1_change",
    "top1_change_ci_low",
    "top1_change_ci_high",
    "agreement",
    "num_changed",
    "flips_correct_to_wrong",
    "flips_wrong_to_correct",
    "flips_wrong_to_wrong",
    "num_significant_classes_fdr",
    "significant_classes_fdr",
    "largest_harm",
    "intensification_ratio",
    "intensified_classes",
    "intensification_classes",
    "size",
    "size_ratio",
    "gate",
    "num_significant_groups_fdr",
    "significant_groups_fdr",
    "largest_group_harm",
)
# A candidate's `largest_harm` (None without examples), its `size` and the reference's (None when not a model: the
# measured storage of pie.quantization's size reports, or what its prediction file's metadata records), its `gate`.
COMPARE_HARM_KEYS = ("class_id", "class_name", "excess_change", "ci_low", "ci_high")
COMPARE_GROUP_HARM_KEYS = ("group_column", "group_value", "excess_change", "ci_low", "ci_high")
COMPARE_SIZE_KEYS = ("source", "format", "raw_bytes", "gzip_bytes", "bits_per_weight")
COMPARE_GATE_KEYS = (
    "max_excess_drop",
    "max_top1_drop",
    "top1_drop_ci_high",
    "passed",
    "failing_classes",
    "top1_failed",
    "failures",
    "failing_groups",
)


def table(name):
  """The Table of a CSV file name of the analysis, the robustness analysis, the calibration or the comparison."""
  for candidate in ANALYSIS_TABLES + (ROBUSTNESS, ROBUSTNESS_MODELS, CALIBRATION) + COMPARE_TABLES:
    if candidate.name == name:
      return candidate
  raise KeyError(f"{name!r} is not a table of the analysis output contract")


# triage/ (written with the report): the PIEs of the report's per-level view for a labelling tool, in pies.csv order,
# as a CSV and a JSON list of records with these fields; `image` is the path of the PIE's PNG relative to triage/
# (empty without pies.tfrecord), `pie_stability` empty (null) without the bootstrap.
TRIAGE_CSV = "pies.csv"
TRIAGE_JSON = "pies.json"
TRIAGE_IMAGES_DIR = "images"
TRIAGE_FIELDS = (
    "example_id",
    "sparsity",
    "image",
    "label",
    "label_name",
    "dense_modal",
    "dense_modal_name",
    "pruned_modal",
    "pruned_modal_name",
    "dense_modal_share",
    "pruned_modal_share",
    "modal_tie",
    "pie_stability",
)

# summary.json: the keys a reader may rely on, and those it uses when present (files of earlier versions lack them).
SUMMARY_KEYS = ("study", "alpha", "tie_rule", "levels")
SUMMARY_OPTIONAL = (
    "normalization",
    "normalization_warning",
    "noise_floor",
    "design",
    "mitigations",
    "slices",
    "fdr_scope",
)
# summary.json `fdr_scope`: Benjamini-Hochberg over each compared population's classes, or over the whole study.
FDR_SCOPES = ("level", "study")
# summary.json `design`: how the compressed models relate to the dense ones.
INDEPENDENT_DESIGN = "independent"  # trained from scratch with their own seeds: populations compared as samples
PAIRED_DESIGN = "paired"  # each started from the finished dense model of its seed (config.init_from_dense)
DESIGNS = (INDEPENDENT_DESIGN, PAIRED_DESIGN)
# summary.json `slices` (None without slices): the slice features, the class groups, how many slices, the minimum size.
SLICES_KEYS = ("features", "class_groups", "num_slices", "min_slice_size")
STUDY_KEYS = (
    "name",
    "dataset",
    "eval_split",
    "num_classes",
    "class_names",
    "num_examples",
    "model",
    "config",
    "config_hash",
)
# One entry of `levels` per population; its role is one of ROLES (exactly one level is dense).
LEVEL_KEYS = (
    "sparsity",
    "role",
    "num_models",
    "top1_mean",
    "top1_std",
    "measured_sparsity_mean",
    "num_pies",
    "pie_fraction",
    "num_significant_classes",
    "num_ties_dense",
    "num_ties_pruned",
)
LEVEL_OPTIONAL = ("num_significant_classes_fdr",)
# A compared population's hurt classes: those significant after FDR with a negative normalized change, and the class
# that fell most (`pie.builder.largest_class_harm`: class_id, class_name, normalized_change, ci_low, ci_high, ...).
LEVEL_HARM_KEYS = (
    "num_hurt_classes_fdr",
    "largest_class_harm",
    "num_classes_beyond_uniform_shift_fdr",
    "num_hurt_classes_beyond_uniform_shift_fdr",
)
# A level's population and its measured size (studies comparing compression methods).
LEVEL_METHOD_KEYS = ("method", "bits_per_weight", "compressed_bytes")
# A compressed level against the noise floor: read against its matched control (`floor_control`, the control whose
# models stand to the dense ones as the level's do, `seed_relation`; null with a `floor_note` when there is none).
LEVEL_FLOOR_KEYS = (
    "distinguishable_from_noise",
    "noise_floor_pies_mean",
    "pies_excess",
    "pies_excess_ci_low",
    "pies_excess_ci_high",
    "pies_excess_p_value",
    "pies_excess_permutations",
    "seed_relation",
    "floor_control",
    "floor_note",
    "control_risk",
)
# summary.json levels' `seed_relation` (pie.builder.seed_relation).
SEED_RELATIONS = ("independent", "shared", "paired", "derived", "mixed")
# A compared population of the paired design: its pairs, its classes under the paired test, the models (pairs) the
# paired test needs, and what one model pair alone says (`single_pair`, with SINGLE_PAIR_KEYS).
LEVEL_PAIRED_KEYS = (
    "num_pairs",
    "num_significant_classes_paired",
    "num_significant_classes_paired_fdr",
    "num_hurt_classes_paired_fdr",
    "paired_models_needed",
    "single_pair",
)
SINGLE_PAIR_KEYS = (
    "num_pairs",
    "test",
    "classes_flagged_fdr_median",
    "classes_hurt_fdr_median",
    "largest_class_drop_median",
    "largest_normalized_drop_median",
    "pairs",
)
# summary.json `mitigations`: one entry per mitigated population against the unmitigated one of its method and level
# (pie.builder.mitigation_comparisons; the rule in docs/statistics.md, "Mitigations compared").
MITIGATION_KEYS = (
    "population",
    "method",
    "mitigation",
    "sparsity",
    "num_models",
    "unmitigated_models",
    "worst_class_id",
    "worst_class_name",
    "harm_change",
    "harm_change_ci_low",
    "harm_change_ci_high",
    "pies_change",
    "pies_change_ci_low",
    "pies_change_ci_high",
    "top1_change",
    "top1_change_ci_low",
    "top1_change_ci_high",
    "verdict",
    "interval_level",
    "sentence",
)
# A compared level: where its harm comes from (pie.difficulty), from the dense population alone.
LEVEL_DIFFICULTY_KEYS = ("risk", "class_difficulty_spearman", "train_frequency_spearman")
# The fields of `class_difficulty_spearman` and `train_frequency_spearman` (pie.significance.class_correlation_test):
# p_value from reassigning the models (their luck is shared by every class), scipy's beside it, and what a uniform
# shift of every example's margin would give.
CORRELATION_KEYS = (
    "rho",
    "p_value",
    "p_value_independent_classes",
    "uniform_shift_rho",
    "beyond_uniform_shift_rho",
    "beyond_uniform_shift_p_value",
    "num_classes",
    "num_permutations",
)
# A compared level's slices (pie.slices): tested (big enough, not unchanged), at p < alpha, after BH.
LEVEL_SLICE_KEYS = ("num_slices_tested", "num_significant_slices", "num_significant_slices_fdr")
ROLES = (variants.DENSE, variants.COMPRESSED_ROLE, variants.CONTROL_ROLE)
# summary.json `noise_floor` (None when the floor was not measured) and its `half_splits` (None without A/A splits).
NOISE_FLOOR_KEYS = (
    "control",
    "control_models",
    "num_pies",
    "pie_fraction",
    "num_significant_classes",
    "num_significant_classes_fdr",
    "half_splits",
)
HALF_SPLITS_KEYS = (
    "pool_models",
    "sizes",
    "num_pies_mean",
    "num_pies_high",
    "num_significant_classes_mean",
    "num_significant_classes_fdr_mean",
    "splits_with_fdr_discovery",
)

# pies.tfrecord: one tf.train.Example per PIE of the report's per-level view (dense against the primary pruning
# method, `pie.variants.primary_method`), with these features of one value each; `image` is the PNG of the image as
# the model sees it at eval, before normalization. Float features are float32 in the file.
PIE_IMAGE_FEATURES = (
    ("sparsity", FLOAT),
    ("example_id", INT),
    ("label", INT),
    ("dense_modal", INT),
    ("pruned_modal", INT),
    ("dense_modal_share", FLOAT),
    ("pruned_modal_share", FLOAT),
    ("image", BYTES),
)
_FEATURE_LISTS = {INT: "int64_list", FLOAT: "float_list", BYTES: "bytes_list"}


def write_pie_images(path, pies_table, images):
  """Writes pies.tfrecord: one record per row of `pies_table` (pies.csv columns), its image from `images`.

  `images` maps example_id to a uint8 [height, width, channels] image. Records are serialized deterministically
  (features in name order): protobuf's default order of map entries changes from one process to the next, and the
  same analysis must write the same bytes.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from pie import io_utils  # pylint: disable=import-outside-toplevel

  def feature(kind, value):
    if kind == INT:
      return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    if kind == FLOAT:
      return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  with io_utils.atomic_path(path) as tmp:
    with tf.io.TFRecordWriter(tmp) as writer:
      for row in pies_table.itertuples(index=False):
        png = tf.io.encode_png(tf.convert_to_tensor(images[row.example_id], tf.uint8)).numpy()
        features = {
            name: feature(kind, png if name == "image" else getattr(row, name)) for name, kind in PIE_IMAGE_FEATURES
        }
        example = tf.train.Example(features=tf.train.Features(feature=features))
        writer.write(example.SerializeToString(deterministic=True))


def read_pie_records(path):
  """Reads pies.tfrecord: one dict per record with the features of PIE_IMAGE_FEATURES, the image as PNG bytes.

  Ints and floats are Python numbers. A damaged file or a record without a feature is a PieError naming the file.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from google.protobuf import message  # pylint: disable=import-outside-toplevel

  python_type = {INT: int, FLOAT: float, BYTES: bytes}
  records = []
  try:
    for index, raw in enumerate(tf.data.TFRecordDataset(str(path))):
      feature = tf.train.Example.FromString(raw.numpy()).features.feature
      record = {}
      for name, kind in PIE_IMAGE_FEATURES:
        if name not in feature:
          raise PieError(
              f"{path}: record {index} has no feature {name!r}: the file was not written by the analysis; "
              "rerun it to rewrite the file"
          )
        values = getattr(feature[name], _FEATURE_LISTS[kind]).value
        if len(values) != 1:
          raise PieError(
              f"{path}: record {index} feature {name!r} has {len(values)} values, expected 1: the file was "
              "not written by the analysis; rerun it to rewrite the file"
          )
        record[name] = python_type[kind](values[0])
      records.append(record)
  except (tf.errors.DataLossError, message.DecodeError) as e:
    detail = str(getattr(e, "message", e)).split("\n")[0]
    raise PieError(f"{path} is truncated or corrupt ({detail}): rerun the analysis to rewrite it") from None
  return records


def read_pie_images(path):
  """Reads pies.tfrecord back as a list of dicts, each image decoded to a uint8 [height, width, channels] array."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  records = read_pie_records(path)
  for index, record in enumerate(records):
    try:
      record["image"] = tf.io.decode_png(record["image"]).numpy()
    except tf.errors.InvalidArgumentError:
      raise PieError(
          f"{path}: the image of record {index} is not a PNG: rerun the analysis to rewrite the " "file"
      ) from None
  return records
