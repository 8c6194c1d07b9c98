"""Turn an analysis folder into one self-contained HTML report, its figures and a triage export.

The analysis binary writes a folder whose files are a fixed contract (summary.json, pies.csv, class_stats.csv,
pie_accuracy.csv, optional pies.tfrecord and robustness.csv). This module reads only those files and writes, beside
them:

- `report.html`: one file that opens offline and can be mailed: figures are inline SVG, PIE images are `data:` URIs,
  CSS and JavaScript are inline, nothing is fetched from the network.
- `figures/*.png` and `figures/*.svg`: every figure of the report, for papers and slides.
- `triage/pies.csv`, `triage/pies.json` and `triage/images/*.png`: one record per PIE per level for human review in a
  labelling tool (the paper found that over half of the PIEs have a wrong or ambiguous label).

Every file is written under a temporary name and renamed into place, so a reader never sees a half-written file.

The numbers each chart plots come from small pure functions (`accuracy_series`, `class_impact_series`, ...) that take
the tables read from the folder and return DataFrames; the plotting functions only draw what those return, so tests can
check the charts against the CSVs.
"""
import base64
import dataclasses
import html
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pie import io_utils
from pie import variants
from pie.errors import PieError

SUMMARY_JSON = "summary.json"
PIES_CSV = "pies.csv"
CLASS_STATS_CSV = "class_stats.csv"
PIE_ACCURACY_CSV = "pie_accuracy.csv"
PIES_TFRECORD = "pies.tfrecord"
ROBUSTNESS_CSV = "robustness.csv"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"
TRIAGE_DIR = "triage"

PIES_COLUMNS = ("sparsity", "example_id", "label", "dense_modal", "pruned_modal", "dense_modal_share",
                "pruned_modal_share", "modal_tie", "label_name", "dense_modal_name", "pruned_modal_name")
PIES_OPTIONAL = ("pie_stability",)
CLASS_STATS_COLUMNS = ("sparsity", "class_id", "class_name", "num_examples", "dense_recall_mean",
                       "pruned_recall_mean", "recall_change", "normalized_change", "t_statistic", "p_value",
                       "significant")
CLASS_STATS_OPTIONAL = ("q_value", "significant_fdr", "ci_low", "ci_high", "hedges_g", "note")
PIE_ACCURACY_COLUMNS = ("sparsity", "population", "subset", "num_examples", "top1_mean", "top1_std")
ROBUSTNESS_COLUMNS = ("sparsity", "corruption", "severity", "dense_top1_mean", "dense_top1_std", "pruned_top1_mean",
                      "pruned_top1_std", "dense_drop", "pruned_drop", "relative_drop_dense", "relative_drop_pruned",
                      "t_statistic", "p_value", "significant")
STUDY_KEYS = ("name", "dataset", "eval_split", "num_classes", "class_names", "num_examples", "model", "config",
              "config_hash")
LEVEL_KEYS = ("sparsity", "role", "num_models", "top1_mean", "top1_std", "measured_sparsity_mean", "num_pies",
              "pie_fraction", "num_significant_classes", "num_ties_dense", "num_ties_pruned")
LEVEL_OPTIONAL = ("num_significant_classes_fdr",)
SUBSETS = ("pie", "random", "non_pie")
SUBSET_LABELS = {"pie": "PIEs", "random": "random sample", "non_pie": "non-PIEs"}
POPULATIONS = (variants.DENSE, "pruned")

# Two sparsities closer than this are the same level: pies.tfrecord stores float32, the CSVs and JSON float64.
SPARSITY_TOLERANCE = 1e-5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Gallery tiles are this many CSS pixels wide; larger images are shrunk to it before embedding (the full-size image
# is in triage/images), smaller ones are upscaled by the browser with nearest-neighbour sampling.
GALLERY_TILE_PX = 112

# Names of the figures this module writes into figures/ (stale ones are removed on a rerun).
_FIGURE_PREFIXES = ("accuracy_vs_sparsity", "pies_vs_sparsity", "significant_classes_vs_sparsity", "class_impact_", "pie_accuracy",
                    "robustness_", "methods_vs_size")

COLOR_DENSE = "#4a6fa5"
COLOR_PRUNED = "#d9822b"
COLOR_HURT = "#c0392b"
COLOR_HELPED = "#2e86c1"
COLOR_NEUTRAL = "#c8c8c8"


@dataclasses.dataclass(frozen=True)
class PieImage:
  """One PIE image from pies.tfrecord: the PNG bytes as written by the analysis, and its size."""
  png: bytes
  width: int
  height: int
  channels: int


@dataclasses.dataclass(frozen=True)
class AnalysisData:
  """Everything the report reads from an analysis folder, validated.

  `levels` has one row per population level sorted by sparsity (the dense row first). Every `sparsity` column of the
  tables holds the exact float of its level in summary.json, so levels can be compared with ==. `images` maps
  (sparsity, example_id) to the PIE's image, and is None when the folder has no pies.tfrecord.
  """
  directory: Path
  summary: dict
  levels: pd.DataFrame
  pies: pd.DataFrame
  class_stats: pd.DataFrame
  pie_accuracy: pd.DataFrame
  robustness: pd.DataFrame | None
  images: dict | None
  # Studies comparing compression methods (see pie/variants.py): one row per population of summary.json (every
  # method), and class_stats.csv with its `method` column. The per-level sections above show dense against the
  # primary pruning method only; these feed the "Methods compared" section. None for single-method studies.
  methods: pd.DataFrame | None = None
  method_class_stats: pd.DataFrame | None = None
  # The control populations of summary.json (role "control": a dense replicate, a sham), compared with the dense one
  # like any population, and the noise floor those A/A comparisons measure (summary.json `noise_floor`, or None).
  controls: tuple = ()
  noise_floor: dict | None = None
  control_class_stats: pd.DataFrame | None = None  # class_stats.csv's rows of the control populations

  @property
  def study(self):
    return self.summary["study"]

  @property
  def pruned_sparsities(self):
    """Sparsities of the pruned levels, ascending."""
    return [float(s) for s in self.levels.loc[self.levels["role"] == "pruned", "sparsity"]]


# ---------------------------------------------------------------------------------------------------------------------
# Reading and validating the analysis folder.


def load_analysis(analysis_dir):
  """Reads and validates the analysis folder; raises PieError (a ValueError) naming the file and what is wrong."""
  directory = Path(analysis_dir)
  if not directory.is_dir():
    raise PieError(f"analysis folder {directory} does not exist or is not a folder")
  full_summary = _read_summary(directory / SUMMARY_JSON)
  controls = tuple(level for level in full_summary["levels"] if level["role"] == "control")
  summary, methods = _methods_view(dict(full_summary, levels=[level for level in full_summary["levels"]
                                                              if level["role"] != "control"]))
  levels = _levels_frame(summary)
  known = levels["sparsity"].to_numpy(dtype=float)
  pruned = levels.loc[levels["role"] == "pruned", "sparsity"].to_numpy(dtype=float)
  num_classes = int(summary["study"]["num_classes"])

  pies = _read_csv(directory / PIES_CSV, PIES_COLUMNS, PIES_OPTIONAL + ("method",),
                   int_columns=("example_id", "label", "dense_modal", "pruned_modal"),
                   float_columns=("sparsity", "dense_modal_share", "pruned_modal_share", "pie_stability"),
                   bool_columns=("modal_tie",), str_columns=("label_name", "dense_modal_name", "pruned_modal_name"))
  pies = _only_view(pies, methods)
  pies["sparsity"] = _canonical_sparsity(pies["sparsity"], pruned, PIES_CSV)
  for column in ("label", "dense_modal", "pruned_modal"):
    _check_class_ids(pies[column], num_classes, f"{PIES_CSV} column {column}")
  duplicated = pies.duplicated(["sparsity", "example_id"])
  if duplicated.any():
    row = pies.loc[duplicated].iloc[0]
    raise PieError(f"{PIES_CSV}: example {int(row['example_id'])} is listed twice at sparsity {row['sparsity']:g}")

  class_stats = _read_csv(directory / CLASS_STATS_CSV, CLASS_STATS_COLUMNS, CLASS_STATS_OPTIONAL + ("method",),
                          int_columns=("class_id", "num_examples"),
                          float_columns=("sparsity", "dense_recall_mean", "pruned_recall_mean", "recall_change",
                                         "normalized_change", "t_statistic", "p_value", "q_value", "ci_low",
                                         "ci_high", "hedges_g"),
                          bool_columns=("significant", "significant_fdr"), str_columns=("class_name", "note"))
  method_class_stats = class_stats if methods is not None and "method" in class_stats else None
  control_class_stats = (class_stats.loc[class_stats["method"].isin(tuple(variants.CONTROLS))].reset_index(drop=True)
                         if "method" in class_stats else None)
  class_stats = _only_view(class_stats, methods)
  class_stats["sparsity"] = _canonical_sparsity(class_stats["sparsity"], pruned, CLASS_STATS_CSV)
  _check_class_ids(class_stats["class_id"], num_classes, f"{CLASS_STATS_CSV} column class_id")

  pie_accuracy = _read_csv(directory / PIE_ACCURACY_CSV, PIE_ACCURACY_COLUMNS, ("method",),
                           int_columns=("num_examples",), float_columns=("sparsity", "top1_mean", "top1_std"),
                           str_columns=("population", "subset"))
  pie_accuracy = _only_view(pie_accuracy, methods)
  pie_accuracy["sparsity"] = _canonical_sparsity(pie_accuracy["sparsity"], pruned, PIE_ACCURACY_CSV)
  _check_values(pie_accuracy["population"], POPULATIONS, f"{PIE_ACCURACY_CSV} column population")
  _check_values(pie_accuracy["subset"], SUBSETS, f"{PIE_ACCURACY_CSV} column subset")

  robustness = None
  if (directory / ROBUSTNESS_CSV).exists():
    robustness = _read_csv(directory / ROBUSTNESS_CSV, ROBUSTNESS_COLUMNS, (), int_columns=("severity",),
                           float_columns=tuple(c for c in ROBUSTNESS_COLUMNS
                                               if c not in ("corruption", "severity", "significant")),
                           bool_columns=("significant",), str_columns=("corruption",))
    robustness["sparsity"] = _canonical_sparsity(robustness["sparsity"], pruned, ROBUSTNESS_CSV)

  images = None
  if (directory / PIES_TFRECORD).exists():
    images = _match_images(read_pie_records(directory / PIES_TFRECORD), pies, known)
  return AnalysisData(directory=directory, summary=summary, levels=levels, pies=pies, class_stats=class_stats,
                      pie_accuracy=pie_accuracy, robustness=robustness, images=images, methods=methods,
                      method_class_stats=method_class_stats, controls=controls,
                      noise_floor=full_summary.get("noise_floor"), control_class_stats=control_class_stats)


METHOD_LEVEL_KEYS = ("method", "sparsity", "num_models", "top1_mean", "top1_std", "measured_sparsity_mean",
                     "num_pies", "pie_fraction", "num_significant_classes", "num_significant_classes_fdr",
                     "bits_per_weight", "compressed_bytes")


def _level_method(level):
  return variants.recorded_method(level.get("method"), level["role"] == variants.DENSE)


def _methods_view(summary):
  """(summary restricted to the per-level view, frame of every population) for a study comparing methods.

  A study with only dense and magnitude populations is returned as it is, with None. Otherwise the per-level
  sections see the dense level and the levels of the primary pruning method (`variants.primary_method`), and the
  frame lists every population for the methods section.
  """
  methods = [_level_method(level) for level in summary["levels"]]
  if all(variants.named_by_level(m) for m in methods):
    return summary, None
  primary = variants.primary_method(methods)
  view = [level for level, m in zip(summary["levels"], methods) if variants.is_dense(m) or m == primary]
  rows = [{k: (m if k == "method" else level.get(k)) for k in METHOD_LEVEL_KEYS}
          for level, m in zip(summary["levels"], methods)]
  frame = pd.DataFrame(rows)
  for column in METHOD_LEVEL_KEYS[1:]:
    frame[column] = pd.to_numeric(frame[column], errors="raise").astype(float)
  return dict(summary, levels=view), frame


def _only_view(table, methods):
  """The rows of a table that belong to the per-level view (see `_methods_view`), without the method column.

  Rows of control populations are never in it: the report shows them as the noise floor.
  """
  if "method" not in table:
    return table
  table = table.loc[~table["method"].isin(tuple(variants.CONTROLS))].reset_index(drop=True)
  if methods is None:
    return table.drop(columns="method")
  primary = variants.primary_method(methods["method"])
  return table.loc[table["method"] == primary].drop(columns="method").reset_index(drop=True)


def _read_summary(path):
  if not path.exists():
    raise PieError(f"{path} is missing: is this the output folder of the analysis?")
  try:
    summary = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise PieError(f"{path} is not valid JSON: {e}") from e
  for key in ("study", "alpha", "tie_rule", "levels"):
    if key not in summary:
      raise PieError(f"{SUMMARY_JSON} has no key {key!r}")
  missing = [k for k in STUDY_KEYS if k not in summary["study"]]
  if missing:
    raise PieError(f"{SUMMARY_JSON}: study lacks {', '.join(missing)}")
  study = summary["study"]
  if len(study["class_names"]) != int(study["num_classes"]):
    raise PieError(f"{SUMMARY_JSON}: {len(study['class_names'])} class_names for num_classes="
                   f"{study['num_classes']}")
  if not isinstance(summary["levels"], list) or not summary["levels"]:
    raise PieError(f"{SUMMARY_JSON}: levels must be a non-empty list")
  for i, level in enumerate(summary["levels"]):
    missing = [k for k in LEVEL_KEYS if k not in level]
    if missing:
      raise PieError(f"{SUMMARY_JSON}: levels[{i}] lacks {', '.join(missing)}")
    if level["role"] not in POPULATIONS + ("control",):
      raise PieError(f"{SUMMARY_JSON}: levels[{i}] has role {level['role']!r}, expected 'dense', 'pruned' or "
                     "'control'")
  return summary


def _levels_frame(summary):
  rows = []
  for level in summary["levels"]:
    row = {k: level[k] for k in LEVEL_KEYS}
    row["num_significant_classes_fdr"] = level.get("num_significant_classes_fdr")
    rows.append(row)
  levels = pd.DataFrame(rows)
  for column in LEVEL_KEYS + LEVEL_OPTIONAL:
    if column != "role":
      levels[column] = pd.to_numeric(levels[column], errors="raise").astype(float)
  levels = levels.sort_values("sparsity", kind="stable").reset_index(drop=True)
  num_dense = int((levels["role"] == variants.DENSE).sum())
  if num_dense != 1:
    raise PieError(f"{SUMMARY_JSON}: expected exactly one level with role 'dense', found {num_dense}")
  if levels["sparsity"].diff().abs().lt(SPARSITY_TOLERANCE).any():
    raise PieError(f"{SUMMARY_JSON}: two levels share the same sparsity")
  return levels


def _read_csv(path, required, optional, int_columns=(), float_columns=(), bool_columns=(), str_columns=()):
  if not path.exists():
    raise PieError(f"{path} is missing: is this the output folder of the analysis?")
  # Names are kept as text ("1", "NA" and "None" are valid class names); only an empty field is missing.
  table = pd.read_csv(path, dtype={c: str for c in str_columns}, keep_default_na=False, na_values=[""])
  missing = [c for c in required if c not in table.columns]
  if missing:
    raise PieError(f"{path.name} lacks column(s) {', '.join(missing)}")
  table = table[[c for c in required + tuple(optional) if c in table.columns]].copy()
  for column in int_columns:
    if column in table:
      values = pd.to_numeric(table[column], errors="coerce")
      if values.isna().any() or (values != np.round(values)).any():
        raise PieError(f"{path.name}: column {column} must hold integers")
      table[column] = values.astype(np.int64)
  for column in float_columns:
    if column in table:
      values = pd.to_numeric(table[column], errors="coerce")
      if (values.isna() & table[column].notna()).any():
        raise PieError(f"{path.name}: column {column} must hold numbers")
      table[column] = values.astype(float)
  for column in bool_columns:
    if column in table:
      table[column] = _as_bool(table[column], f"{path.name} column {column}")
  for column in str_columns:
    if column in table and column in required and table[column].isna().any():
      raise PieError(f"{path.name}: column {column} has empty values")
  return table


def _as_bool(values, what):
  """CSV writers spell booleans True/False, true/false or 1/0; anything else is an error, not a silent False."""
  mapping = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
  out = []
  for value in values:
    if isinstance(value, (bool, np.bool_)):
      out.append(bool(value))
      continue
    key = str(value).strip().lower()
    if key not in mapping:
      raise PieError(f"{what}: {value!r} is not a boolean")
    out.append(mapping[key])
  return pd.Series(out, index=values.index, dtype=bool)


def _canonical_sparsity(values, known, source):
  """Maps each sparsity to the exact value of the level it belongs to, or raises naming the stray value."""
  values = np.asarray(values, dtype=float)
  known = np.asarray(known, dtype=float)
  if values.size == 0:
    return values
  if known.size == 0:
    raise PieError(f"{source} has rows but {SUMMARY_JSON} lists no pruned level")
  nearest = np.abs(values[:, None] - known[None, :]).argmin(axis=1)
  stray = np.abs(values - known[nearest]) > SPARSITY_TOLERANCE
  if stray.any():
    raise PieError(f"{source}: sparsity {values[stray][0]:g} is not one of the levels in {SUMMARY_JSON} "
                   f"({', '.join(f'{k:g}' for k in known)})")
  return known[nearest]


def _check_class_ids(values, num_classes, what):
  bad = (values < 0) | (values >= num_classes)
  if bad.any():
    raise PieError(f"{what}: class id {int(values[bad].iloc[0])} is outside 0..{num_classes - 1}")


def _check_values(values, allowed, what):
  bad = ~values.isin(allowed)
  if bad.any():
    raise PieError(f"{what}: {values[bad].iloc[0]!r} is not one of {', '.join(allowed)}")


def read_pie_records(path):
  """Reads pies.tfrecord: one dict per tf.train.Example with the contract's features, the image as PNG bytes."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  def one(feature, name, kind, index):
    if name not in feature:
      raise PieError(f"{PIES_TFRECORD}: record {index} has no feature {name!r}")
    values = getattr(feature[name], kind).value
    if len(values) != 1:
      raise PieError(f"{PIES_TFRECORD}: record {index} feature {name!r} has {len(values)} values, expected 1")
    return values[0]

  records = []
  try:
    for index, raw in enumerate(tf.data.TFRecordDataset(str(path))):
      feature = tf.train.Example.FromString(raw.numpy()).features.feature
      record = {"sparsity": float(one(feature, "sparsity", "float_list", index)),
                "image": bytes(one(feature, "image", "bytes_list", index))}
      for name in ("example_id", "label", "dense_modal", "pruned_modal"):
        record[name] = int(one(feature, name, "int64_list", index))
      for name in ("dense_modal_share", "pruned_modal_share"):
        record[name] = float(one(feature, name, "float_list", index))
      records.append(record)
  except tf.errors.DataLossError as e:
    raise PieError(f"{path} is truncated or corrupt: {e.message}") from e
  return records


def decode_png_size(png, what):
  """Returns (width, height, channels) of PNG bytes; raises PieError if they are not a PNG image."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  if not png.startswith(PNG_SIGNATURE):
    raise PieError(f"{what}: image is not PNG-encoded")
  try:
    with Image.open(io.BytesIO(png)) as image:
      image.load()
      return image.width, image.height, len(image.getbands())
  except OSError as e:
    raise PieError(f"{what}: cannot decode PNG: {e}") from e


def _match_images(records, pies, known):
  """Keys the images by (level, example id) and checks that each record agrees with its row in pies.csv."""
  by_key = {(float(s), int(e)): row for s, e, row in zip(pies["sparsity"], pies["example_id"],
                                                          pies.itertuples(index=False))}
  sparsities = _canonical_sparsity([r["sparsity"] for r in records], known, PIES_TFRECORD)
  images = {}
  for sparsity, record in zip(sparsities, records):
    key = (float(sparsity), record["example_id"])
    what = f"{PIES_TFRECORD}: example {record['example_id']} at sparsity {sparsity:g}"
    row = by_key.get(key)
    if row is None:
      raise PieError(f"{what} is not in {PIES_CSV}: the two files come from different runs")
    for name in ("label", "dense_modal", "pruned_modal"):
      if record[name] != getattr(row, name):
        raise PieError(f"{what} has {name}={record[name]} but {PIES_CSV} says {getattr(row, name)}")
    if key in images:
      raise PieError(f"{what} appears twice")
    width, height, channels = decode_png_size(record["image"], what)
    images[key] = PieImage(png=record["image"], width=width, height=height, channels=channels)
  return images


# ---------------------------------------------------------------------------------------------------------------------
# Chart series: what each figure plots, as plain tables.


def level_label(sparsity):
  """'dense' for 0, else the sparsity as a percentage: 0.5 -> '50%', 0.125 -> '12.5%'."""
  return variants.DENSE if sparsity == 0 else f"{100 * sparsity:.4g}%"


def level_key(sparsity):
  """A short stable text key for a level, used in file names and the gallery's filter: 0.5 -> 's0p5'."""
  return "s" + f"{sparsity:g}".replace(".", "p").replace("-", "m")


def accuracy_series(levels):
  """Top-1 mean and std (fractions) of every population, by sparsity: the accuracy-vs-sparsity chart."""
  return levels[["sparsity", "role", "num_models", "top1_mean", "top1_std"]].sort_values("sparsity").reset_index(
      drop=True)


def significance_series(levels):
  """Number of significantly changed classes per pruned level, uncorrected and FDR (NaN where not reported)."""
  pruned = levels.loc[levels["role"] == "pruned"]
  return pd.DataFrame({"sparsity": pruned["sparsity"].to_numpy(),
                       "num_significant": pruned["num_significant_classes"].to_numpy(dtype=float),
                       "num_significant_fdr": pruned["num_significant_classes_fdr"].to_numpy(dtype=float)})


def floor_lines(noise_floor):
  """The noise floor's reference values for the charts: A/A mean PIEs, their upper quantile, mean significant classes
  (uncorrected and FDR), from summary.json's `noise_floor.half_splits`; None without A/A splits."""
  splits = (noise_floor or {}).get("half_splits")
  if not splits:
    return None
  return {"num_pies_mean": splits["num_pies_mean"], "num_pies_high": splits["num_pies_high"],
          "num_significant_mean": splits["num_significant_classes_mean"],
          "num_significant_fdr_mean": splits["num_significant_classes_fdr_mean"],
          "sizes": tuple(splits["sizes"])}


def pies_series(summary_levels):
  """PIEs per pruned level with their excess over the noise floor (NaN where the study has no comparable floor)."""
  rows = [{"sparsity": float(level["sparsity"]), "num_pies": float(level["num_pies"]),
           "pies_excess": _float_or_nan(level.get("pies_excess")),
           "floor_mean": _float_or_nan(level.get("noise_floor_pies_mean")),
           "distinguishable": level.get("distinguishable_from_noise")}
          for level in summary_levels if level["role"] == "pruned"]
  return pd.DataFrame(rows, columns=["sparsity", "num_pies", "pies_excess", "floor_mean", "distinguishable"])


def _float_or_nan(value):
  return float("nan") if value is None else float(value)


def class_impact_series(class_stats, sparsity, top_n=25):
  """The classes the impact chart of one level shows, most hurt first.

  Classes are ranked by normalized change (change in recall minus the change in overall top-1: the quantity the
  t-test is about). With at most 2 * top_n classes, all are shown; otherwise the top_n with the most negative and the
  top_n with the most positive normalized change, so that the chart stays readable for 1000 classes (the full table
  is in the report).
  """
  if top_n < 1:
    raise ValueError(f"top_n must be at least 1, got {top_n}")
  rows = class_stats.loc[class_stats["sparsity"] == sparsity]
  if rows.empty:
    raise ValueError(f"{CLASS_STATS_CSV} has no row at sparsity {sparsity:g}")
  rows = rows.sort_values(["normalized_change", "class_id"], kind="stable")
  if len(rows) > 2 * top_n:
    hurt = rows.loc[rows["normalized_change"] < 0].head(top_n)
    helped = rows.loc[rows["normalized_change"] > 0].tail(top_n)
    rows = pd.concat([hurt, helped])
  columns = ["class_id", "class_name", "recall_change", "normalized_change", "significant", "p_value"]
  if "significant_fdr" in rows:
    columns.append("significant_fdr")
  return rows[columns].reset_index(drop=True)


def pie_accuracy_series(pie_accuracy, sparsity):
  """Top-1 of both populations on PIEs, a random sample and non-PIEs at one level, in that subset order."""
  rows = pie_accuracy.loc[pie_accuracy["sparsity"] == sparsity]
  out = []
  for subset in SUBSETS:
    for population in POPULATIONS:
      match = rows.loc[(rows["subset"] == subset) & (rows["population"] == population)]
      if len(match) > 1:
        raise PieError(f"{PIE_ACCURACY_CSV}: {len(match)} rows for {population}/{subset} at sparsity {sparsity:g}")
      if len(match) == 1:
        row = match.iloc[0]
        out.append({"subset": subset, "population": population, "num_examples": int(row["num_examples"]),
                    "top1_mean": float(row["top1_mean"]), "top1_std": float(row["top1_std"])})
  return pd.DataFrame(out, columns=["subset", "population", "num_examples", "top1_mean", "top1_std"])


def robustness_severity_series(robustness, sparsity):
  """Mean top-1 over corruptions for each severity, both populations, and how many corruptions differ significantly."""
  rows = robustness.loc[robustness["sparsity"] == sparsity]
  grouped = rows.groupby("severity", sort=True)
  return pd.DataFrame({"severity": list(grouped.groups),
                       "dense_top1": grouped["dense_top1_mean"].mean().to_numpy(),
                       "pruned_top1": grouped["pruned_top1_mean"].mean().to_numpy(),
                       "num_significant": grouped["significant"].sum().to_numpy().astype(int),
                       "num_corruptions": grouped["corruption"].nunique().to_numpy().astype(int)})


def robustness_drop_series(robustness, sparsity):
  """Mean accuracy drop over severities for each corruption, both populations, largest extra pruned drop first."""
  rows = robustness.loc[robustness["sparsity"] == sparsity]
  grouped = rows.groupby("corruption", sort=True)
  out = pd.DataFrame({"corruption": list(grouped.groups),
                      "dense_drop": grouped["dense_drop"].mean().to_numpy(),
                      "pruned_drop": grouped["pruned_drop"].mean().to_numpy(),
                      "num_significant": grouped["significant"].sum().to_numpy().astype(int),
                      "num_severities": grouped["severity"].nunique().to_numpy().astype(int)})
  out["extra_drop"] = out["pruned_drop"] - out["dense_drop"]
  return out.sort_values(["extra_drop", "corruption"], ascending=[False, True], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------------
# Figures (matplotlib, object API on the Agg canvas: no pyplot global state).


def _new_figure(width, height):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  figure = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(figure)
  return figure


def _style_axes(ax):
  ax.spines["top"].set_visible(False)
  ax.spines["right"].set_visible(False)
  ax.grid(True, axis="y", color="#e6e6e6", linewidth=0.8)
  ax.set_axisbelow(True)


def plot_accuracy(series):
  """Top-1 (%) vs sparsity (%) with one-std error bars over each population's models."""
  figure = _new_figure(5.2, 3.4)
  ax = figure.add_subplot()
  x = 100 * series["sparsity"].to_numpy()
  ax.errorbar(x, 100 * series["top1_mean"].to_numpy(), yerr=100 * series["top1_std"].to_numpy(), color=COLOR_DENSE,
              marker="o", capsize=4, linewidth=1.5, label="mean ± std over models")
  for xi, yi in zip(x, 100 * series["top1_mean"].to_numpy()):
    ax.annotate(f"{yi:.1f}", (xi, yi), textcoords="offset points", xytext=(6, 6), fontsize=8, color="#333333")
  ax.set_xlabel("sparsity (% of weights removed)")
  ax.set_ylabel("top-1 accuracy (%)")
  ax.set_title("Overall accuracy vs sparsity", fontsize=11)
  ax.set_xticks(x)
  ax.set_xticklabels([f"{v:.4g}" for v in x])
  _style_axes(ax)
  return figure


def plot_significance(series, alpha, floor=None):
  """Number of classes whose normalized recall changed significantly, vs sparsity; with the A/A noise floor."""
  figure = _new_figure(5.2, 3.4)
  ax = figure.add_subplot()
  x = 100 * series["sparsity"].to_numpy()
  ax.plot(x, series["num_significant"].to_numpy(), marker="o", color=COLOR_HURT,
          label=f"p < {alpha:g} (uncorrected)")
  if series["num_significant_fdr"].notna().any():
    ax.plot(x, series["num_significant_fdr"].to_numpy(), marker="s", linestyle="--", color="#555555",
            label=f"q ≤ {alpha:g} (FDR-corrected)")
  if floor is not None:
    ax.axhline(floor["num_significant_mean"], color=COLOR_HURT, linestyle=":", linewidth=1.2,
               label="noise floor (A/A mean, uncorrected)")
    ax.axhline(floor["num_significant_fdr_mean"], color="#555555", linestyle=":", linewidth=1.2,
               label="noise floor (A/A mean, FDR)")
  ax.set_xlabel("sparsity (% of weights removed)")
  ax.set_ylabel("classes")
  ax.set_title("Classes significantly changed by pruning", fontsize=11)
  ax.set_xticks(x)
  ax.set_xticklabels([f"{v:.4g}" for v in x])
  ax.set_ylim(bottom=0)
  ax.yaxis.get_major_locator().set_params(integer=True)
  ax.legend(frameon=False, fontsize=8)
  _style_axes(ax)
  return figure


def plot_pies(series, floor=None):
  """PIEs vs sparsity, with the noise floor: the A/A mean and its upper quantile as a band."""
  figure = _new_figure(5.2, 3.4)
  ax = figure.add_subplot()
  x = 100 * series["sparsity"].to_numpy()
  ax.plot(x, series["num_pies"].to_numpy(), marker="o", color=COLOR_PRUNED, label="PIEs (pruned vs dense)")
  if floor is not None:
    ax.axhspan(0, floor["num_pies_high"], color=COLOR_NEUTRAL, alpha=0.35, linewidth=0,
               label="noise floor (A/A, up to its upper quantile)")
    ax.axhline(floor["num_pies_mean"], color="#555555", linestyle=":", linewidth=1.2, label="noise floor (A/A mean)")
  ax.set_xlabel("sparsity (% of weights removed)")
  ax.set_ylabel("PIEs")
  ax.set_title("PIEs vs sparsity", fontsize=11)
  if len(x):
    ax.set_xticks(x)
    ax.set_xticklabels([f"{v:.4g}" for v in x])
  ax.set_ylim(bottom=0)
  ax.yaxis.get_major_locator().set_params(integer=True)
  ax.legend(frameon=False, fontsize=8)
  _style_axes(ax)
  return figure


def plot_class_impact(series, title, num_total=None):
  """Per class: change in recall as bars, normalized change as markers, significant classes coloured.

  `num_total` is the number of classes at the level; when the series shows fewer, a line marks the gap.
  """
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel
  n = len(series)
  figure = _new_figure(7.0, 1.3 + 0.26 * n)
  ax = figure.add_subplot()
  y = np.arange(n)
  significant = series["significant"].to_numpy(dtype=bool)
  normalized = 100 * series["normalized_change"].to_numpy()
  colors = np.where(~significant, COLOR_NEUTRAL, np.where(normalized < 0, COLOR_HURT, COLOR_HELPED))
  fdr = series["significant_fdr"].to_numpy(dtype=bool) if "significant_fdr" in series else np.zeros(n, dtype=bool)
  ax.barh(y, 100 * series["recall_change"].to_numpy(), color=colors, height=0.7,
          edgecolor=np.where(fdr, "#111111", "none"), linewidth=np.where(fdr, 1.2, 0.0))
  ax.scatter(normalized, y, marker="D", s=22, color="#111111", zorder=3)
  ax.axvline(0, color="#555555", linewidth=0.8)
  # normalized = recall change - overall top-1 change, so their difference is the overall change (the same for all).
  overall = float(np.mean(100 * series["recall_change"].to_numpy() - normalized)) if n else 0.0
  ax.axvline(overall, color="#555555", linewidth=1.0, linestyle="--")
  ax.set_yticks(y)
  ax.set_yticklabels(series["class_name"].astype(str).tolist(), fontsize=8)
  for label, sig in zip(ax.get_yticklabels(), significant):
    if sig:
      label.set_fontweight("bold")
  hidden = num_total - n if num_total is not None else 0
  if hidden > 0:
    # The chart shows the two ends of the ranking: mark where the classes left out would be.
    split = int((normalized < 0).sum())
    ax.axhline(split - 0.5, color="#888888", linewidth=0.8, linestyle=":")
    ax.annotate(f"{hidden} less affected classes not shown", (1.0, split - 0.5), xycoords=("axes fraction", "data"),
                xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom", fontsize=8, color="#555555")
  ax.set_ylim(n - 0.5, -0.5)  # most hurt on top, no blank margin
  ax.set_xlabel("change vs dense (percentage points)")
  ax.set_title(title, fontsize=11)
  ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
  ax.set_axisbelow(True)
  ax.spines["top"].set_visible(False)
  ax.spines["right"].set_visible(False)
  handles = [Patch(color=COLOR_HURT, label="recall change, significantly hurt"),
             Patch(color=COLOR_HELPED, label="recall change, significantly helped"),
             Patch(color=COLOR_NEUTRAL, label="recall change, not significant"),
             Line2D([], [], marker="D", linestyle="none", color="#111111",
                    label="normalized change (vs overall top-1)"),
             Line2D([], [], linestyle="--", color="#555555", label=f"change in overall top-1 ({overall:+.1f})")]
  if fdr.any() or "significant_fdr" in series:
    handles.append(Patch(facecolor="white", edgecolor="#111111", label="outlined: significant after FDR"))
  figure.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, fontsize=8)
  return figure


def plot_pie_accuracy(series_by_level):
  """Top-1 of each population on PIEs, a random sample and non-PIEs, one panel per level."""
  levels = list(series_by_level)
  figure = _new_figure(max(4.0, 3.4 * len(levels)), 3.4)
  axes = figure.subplots(1, len(levels), sharey=True, squeeze=False)[0]
  width = 0.38
  for ax, sparsity in zip(axes, levels):
    series = series_by_level[sparsity]
    x = np.arange(len(SUBSETS))
    for offset, population, color in zip((-width / 2, width / 2), POPULATIONS, (COLOR_DENSE, COLOR_PRUNED)):
      rows = series.loc[series["population"] == population].set_index("subset").reindex(list(SUBSETS))
      ax.bar(x + offset, 100 * rows["top1_mean"].to_numpy(), width, yerr=100 * rows["top1_std"].to_numpy(),
             color=color, capsize=3, label=f"{population} population")
    ax.set_xticks(x)
    ax.set_xticklabels([SUBSET_LABELS[s] for s in SUBSETS], fontsize=8)
    ax.set_title(f"{level_label(sparsity)} sparsity", fontsize=10)
    ax.set_ylim(0, 105)
    _style_axes(ax)
  axes[0].set_ylabel("top-1 accuracy (%)")
  handles, labels = axes[0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False, fontsize=8)
  return figure


def plot_robustness_severity(series_by_level):
  """Mean top-1 over corruptions vs severity for both populations, one panel per level."""
  levels = list(series_by_level)
  figure = _new_figure(max(4.0, 3.4 * len(levels)), 3.4)
  axes = figure.subplots(1, len(levels), sharey=True, squeeze=False)[0]
  for ax, sparsity in zip(axes, levels):
    series = series_by_level[sparsity]
    ax.plot(series["severity"], 100 * series["dense_top1"], marker="o", color=COLOR_DENSE, label=variants.DENSE)
    ax.plot(series["severity"], 100 * series["pruned_top1"], marker="s", color=COLOR_PRUNED,
            label=f"pruned {level_label(sparsity)}")
    for severity, value, k, total in zip(series["severity"], 100 * series["pruned_top1"], series["num_significant"],
                                         series["num_corruptions"]):
      ax.annotate(f"{k}/{total}", (severity, value), textcoords="offset points", xytext=(0, -13), ha="center",
                  fontsize=7, color=COLOR_HURT if k else "#777777")
    ax.set_xticks(series["severity"].tolist())
    ax.margins(x=0.08, y=0.15)
    ax.set_xlabel("corruption severity")
    ax.set_title(f"{level_label(sparsity)} sparsity", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    _style_axes(ax)
  axes[0].set_ylabel("top-1, mean over corruptions (%)")
  return figure


def plot_robustness_drop(series, title):
  """Mean accuracy drop per corruption for both populations; corruptions with a significant difference starred."""
  n = len(series)
  figure = _new_figure(6.4, 1.4 + 0.42 * n)
  ax = figure.add_subplot()
  y = np.arange(n)
  ax.barh(y - 0.2, 100 * series["dense_drop"].to_numpy(), 0.4, color=COLOR_DENSE, label=variants.DENSE)
  ax.barh(y + 0.2, 100 * series["pruned_drop"].to_numpy(), 0.4, color=COLOR_PRUNED, label="pruned")
  for yi, drop, k, total in zip(y, 100 * np.maximum(series["dense_drop"], series["pruned_drop"]).to_numpy(),
                                series["num_significant"], series["num_severities"]):
    ax.annotate(f"{k}/{total} severities significant", (max(drop, 0), yi), textcoords="offset points",
                xytext=(4, 0), va="center", fontsize=7, color=COLOR_HURT if k else "#777777")
  ax.margins(x=0.25)
  names = [f"{c} *" if k else str(c) for c, k in zip(series["corruption"], series["num_significant"])]
  ax.set_yticks(y)
  ax.set_yticklabels(names, fontsize=8)
  for label, k in zip(ax.get_yticklabels(), series["num_significant"]):
    if k:
      label.set_fontweight("bold")
  ax.invert_yaxis()
  ax.set_xlabel("top-1 drop from clean, mean over severities (percentage points)")
  ax.set_title(title, fontsize=11)
  ax.legend(frameon=False, fontsize=8, loc="lower right")
  ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
  ax.set_axisbelow(True)
  ax.spines["top"].set_visible(False)
  ax.spines["right"].set_visible(False)
  return figure


def _save_figure(figure, figures_dir, name):
  """Writes figures/<name>.png and .svg and returns the SVG for inlining (ids prefixed to stay unique in the page)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  outputs = {}
  with matplotlib.rc_context({"svg.hashsalt": "pie-report", "svg.fonttype": "path"}):
    for fmt, metadata in (("svg", {"Date": None}), ("png", {"Software": None})):
      buffer = io.BytesIO()
      figure.savefig(buffer, format=fmt, dpi=150, metadata=metadata)
      outputs[fmt] = buffer.getvalue()
  io_utils.write_bytes(str(figures_dir / f"{name}.svg"), outputs["svg"])
  io_utils.write_bytes(str(figures_dir / f"{name}.png"), outputs["png"])
  return inline_svg(outputs["svg"].decode("utf-8"), prefix=name)


def inline_svg(svg, prefix):
  """Makes a standalone SVG document fit to inline in HTML.

  Drops the XML prologue, lets the figure scale with the page, and prefixes every id (and reference to it) with
  `prefix`: matplotlib reuses ids such as glyph names across figures, and duplicate ids in one page make a figure
  inside a collapsed section draw another figure's definitions.
  """
  start = svg.find("<svg")
  if start < 0:
    raise ValueError("not an SVG document: no <svg> element")
  svg = svg[start:]
  safe = re.sub(r"[^A-Za-z0-9_-]", "-", prefix)
  svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{safe}-{m.group(1)}"', svg)
  svg = re.sub(r'((?:xlink:)?href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{safe}-{m.group(2)}"', svg)
  svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{safe}-{m.group(1)})", svg)
  root_end = svg.find(">")
  root = svg[:root_end]
  width = re.search(r'\bwidth="([\d.]+)pt"', root)
  root = re.sub(r'\s(width|height)="[^"]*"', "", root)
  max_width = f"max-width:{float(width.group(1)) * 4 / 3:.0f}px;" if width else ""
  root += f' class="figure" role="img" style="{max_width}"'
  return root + svg[root_end:]


# ---------------------------------------------------------------------------------------------------------------------
# Triage export.


def triage_image_name(sparsity, example_id):
  """File name of a PIE's image in triage/images: one per (level, example)."""
  return f"{level_key(sparsity)}_ex{int(example_id)}.png"


def triage_records(data):
  """One record per PIE per level for a labelling tool, in pies.csv order; pie_stability None where unknown."""
  records = []
  has_stability = "pie_stability" in data.pies
  for row in data.pies.itertuples(index=False):
    key = (float(row.sparsity), int(row.example_id))
    has_image = data.images is not None and key in data.images
    stability = float(row.pie_stability) if has_stability and not pd.isna(row.pie_stability) else None
    records.append({
        "example_id": int(row.example_id),
        "sparsity": float(row.sparsity),
        "image": f"images/{triage_image_name(*key)}" if has_image else None,
        "label": int(row.label),
        "label_name": str(row.label_name),
        "dense_modal": int(row.dense_modal),
        "dense_modal_name": str(row.dense_modal_name),
        "pruned_modal": int(row.pruned_modal),
        "pruned_modal_name": str(row.pruned_modal_name),
        "dense_modal_share": float(row.dense_modal_share),
        "pruned_modal_share": float(row.pruned_modal_share),
        "modal_tie": bool(row.modal_tie),
        "pie_stability": stability,
    })
  return records


TRIAGE_FIELDS = ("example_id", "sparsity", "image", "label", "label_name", "dense_modal", "dense_modal_name",
                 "pruned_modal", "pruned_modal_name", "dense_modal_share", "pruned_modal_share", "modal_tie",
                 "pie_stability")


def write_triage(analysis_dir):
  """Writes triage/pies.csv, triage/pies.json and triage/images/*.png for human review; returns the triage folder.

  Image paths in the records are relative to the triage folder, so the folder can be moved or zipped as a whole.
  Without pies.tfrecord the records have no image (empty in the CSV, null in the JSON).
  """
  return _write_triage(load_analysis(analysis_dir))


def _write_triage(data):
  triage_dir = data.directory / TRIAGE_DIR
  images_dir = triage_dir / "images"
  images_dir.mkdir(parents=True, exist_ok=True)
  records = triage_records(data)
  wanted = set()
  for record in records:
    if record["image"] is not None:
      name = Path(record["image"]).name
      wanted.add(name)
      io_utils.write_bytes(str(images_dir / name), data.images[(record["sparsity"], record["example_id"])].png)
  # Images of PIEs from an earlier run of the analysis in this folder would be mistaken for current ones.
  for stale in images_dir.glob("s*_ex*.png"):
    if stale.name not in wanted:
      stale.unlink()
  table = pd.DataFrame(records, columns=list(TRIAGE_FIELDS))
  io_utils.write_text(str(triage_dir / "pies.csv"), table.to_csv(index=False))
  io_utils.write_text(str(triage_dir / "pies.json"), json.dumps(records, indent=1) + "\n")
  return triage_dir


# ---------------------------------------------------------------------------------------------------------------------
# The HTML report.


def _esc(value):
  return html.escape(str(value), quote=True)


def _pct(fraction, digits=1):
  if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)):
    return "–"
  return f"{100 * fraction:.{digits}f}%"


def _pp(fraction, digits=1):
  """A change in fractions as signed percentage points."""
  if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)):
    return "–"
  return f"{100 * fraction:+.{digits}f}"


def _count(value):
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "–"
  return str(int(value))


def _json_for_script(obj):
  """JSON safe inside <script type="application/json">: no '</' or '<!--' can end or comment the element."""
  text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
  return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _gallery_image(image, max_side):
  """A data: URI for a gallery tile: the original PNG when small, else a PNG shrunk to max_side pixels."""
  png = image.png
  if max(image.width, image.height) > max_side:
    from PIL import Image  # pylint: disable=import-outside-toplevel
    with Image.open(io.BytesIO(png)) as original:
      thumb = original.convert("RGB" if image.channels >= 3 else "L")
      thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
      buffer = io.BytesIO()
      thumb.save(buffer, format="PNG", optimize=True)
      png = buffer.getvalue()
  return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def gallery_payload(data, page_size=60, max_image_bytes=20 * 2**20):
  """The gallery's data as embedded in the page: levels, classes and one entry per PIE per level.

  Images are embedded as PNG data: URIs, shrunk to twice the tile size when larger. If they would exceed
  `max_image_bytes` of page text (default 20 MiB, so the report can still be mailed), they are shrunk to the tile size,
  and if that is still too much, only an even spread is embedded: the first PIE of every class at every level, then
  the second, and so on. The others show "image not embedded"; the triage folder has every image at full size.
  """
  if page_size < 1:
    raise ValueError(f"page_size must be at least 1, got {page_size}")
  if max_image_bytes < 0:
    raise ValueError(f"max_image_bytes must be non-negative, got {max_image_bytes}")
  has_stability = "pie_stability" in data.pies
  pies = data.pies.sort_values(["sparsity", "label", "example_id"], kind="stable").reset_index(drop=True)
  entries, pending = [], []
  for index, row in enumerate(pies.itertuples(index=False)):
    key = (float(row.sparsity), int(row.example_id))
    entry = {"level": level_key(key[0]), "id": key[1], "y": int(row.label), "yn": str(row.label_name),
             "d": int(row.dense_modal), "dn": str(row.dense_modal_name), "p": int(row.pruned_modal),
             "pn": str(row.pruned_modal_name), "ds": round(float(row.dense_modal_share), 4),
             "ps": round(float(row.pruned_modal_share), 4), "tie": bool(row.modal_tie), "img": None}
    if has_stability and not pd.isna(row.pie_stability):
      entry["st"] = round(float(row.pie_stability), 4)
    image = data.images.get(key) if data.images is not None else None
    if image is not None:
      pending.append((index, image))
    entries.append(entry)

  uris = {i: _gallery_image(image, 2 * GALLERY_TILE_PX) for i, image in pending}
  if sum(map(len, uris.values())) > max_image_bytes:
    uris = {i: _gallery_image(image, GALLERY_TILE_PX) for i, image in pending}
  # Spread the budget: rank r of every (level, class) before rank r + 1 of any.
  rank = pies.groupby(["sparsity", "label"], sort=False).cumcount().to_numpy()
  order = sorted(uris, key=lambda i: (rank[i], i))
  used = omitted = 0
  images = dict(pending)
  for i in order:
    if used + len(uris[i]) <= max_image_bytes:
      entries[i].update(img=uris[i], w=images[i].width, h=images[i].height)
      used += len(uris[i])
    else:
      omitted += 1
  levels = [{"key": level_key(s), "label": level_label(s),
             "count": int((data.pies["sparsity"] == s).sum())} for s in data.pruned_sparsities]
  return {"page_size": int(page_size), "tile_px": GALLERY_TILE_PX, "has_images": data.images is not None,
          "omitted_images": omitted, "class_names": [str(c) for c in data.study["class_names"]],
          "levels": levels, "pies": entries}


def _populations_table(data):
  levels = data.levels
  has_fdr = levels["num_significant_classes_fdr"].notna().any()
  head = ["Level", "Models", "Top-1 (mean ± std)", "Measured sparsity", "PIEs (fraction of eval set)",
          f"Significant classes (p &lt; {data.summary['alpha']:g})"]
  if has_fdr:
    head.append("Significant classes (FDR)")
  head.append("Modal ties (dense / pruned)")
  rows = []
  for level in levels.itertuples(index=False):
    pruned = level.role == "pruned"
    cells = [f"<th scope='row'>{_esc(level_label(level.sparsity))}</th>", _count(level.num_models),
             f"{_pct(level.top1_mean, 2)} ± {100 * level.top1_std:.2f}", _pct(level.measured_sparsity_mean, 1),
             f"{_count(level.num_pies)} ({_pct(level.pie_fraction, 2)})" if pruned else "–",
             _count(level.num_significant_classes) if pruned else "–"]
    if has_fdr:
      cells.append(_count(level.num_significant_classes_fdr) if pruned else "–")
    cells.append(f"{_count(level.num_ties_dense)} / {_count(level.num_ties_pruned)}" if pruned else "–")
    rows.append("<tr>" + "".join(c if c.startswith("<th") else f"<td>{c}</td>" for c in cells) + "</tr>")
    if level.role == variants.DENSE:
      for control in data.controls:
        cells = [f"<th scope='row'>{_esc(control['method'].replace('_', ' '))} (control)</th>",
                 _count(control["num_models"]),
                 f"{_pct(control['top1_mean'], 2)} ± {100 * control['top1_std']:.2f}",
                 _pct(control["measured_sparsity_mean"], 1),
                 f"{_count(control['num_pies'])} ({_pct(control['pie_fraction'], 2)})",
                 _count(control["num_significant_classes"])]
        if has_fdr:
          cells.append(_count(control.get("num_significant_classes_fdr")))
        cells.append(f"{_count(control['num_ties_dense'])} / {_count(control['num_ties_pruned'])}")
        rows.append("<tr class='control'>" + "".join(c if c.startswith("<th") else f"<td>{c}</td>" for c in cells)
                    + "</tr>")
  return ("<table class='data'><thead><tr>" + "".join(f"<th scope='col'>{h}</th>" for h in head) +
          "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def floor_findings(data):
  """What the noise floor says, in plain language: the control against the dense population and the A/A splits."""
  floor = data.noise_floor or {}
  findings = []
  if data.summary.get("normalization_warning"):
    findings.append(f"<b>Caution:</b> {_esc(data.summary['normalization_warning'])}.")
  control_names = {variants.DENSE_REPLICATE: "a second dense population trained with other seeds",
                   variants.SHAM: "a population trained through the pruning machinery at a negligible sparsity"}
  parts = []
  if floor.get("control"):
    parts.append(f"{control_names.get(floor['control'], _esc(floor['control']))} ({_count(floor['control_models'])} "
                 f"models) differs from the dense population on {_count(floor['num_pies'])} examples (its “PIEs”, "
                 f"{_pct(floor['pie_fraction'], 2)}) and in {_count(floor['num_significant_classes'])} classes "
                 f"(p &lt; α; {_count(floor['num_significant_classes_fdr'])} after FDR)")
  splits = floor.get("half_splits")
  if splits:
    parts.append(f"random splits of {splits['pool_models']} dense models into {splits['sizes'][0]} + "
                 f"{splits['sizes'][1]} give {splits['num_pies_mean']:.1f} PIEs on average (up to "
                 f"{splits['num_pies_high']:g}) and {splits['num_significant_classes_mean']:.2f} significant classes "
                 f"({splits['num_significant_classes_fdr_mean']:.2f} after FDR; "
                 f"{_pct(splits['splits_with_fdr_discovery'], 1)} of splits have an FDR discovery)")
  if parts:
    findings.append("<b>Noise floor</b> (nothing pruned, only seeds differ): " + "; ".join(parts) + ".")
  return findings


def _hurt_in_control(data):
  """Class ids that a control population differs on significantly in the "hurt" direction (p < alpha)."""
  stats = data.control_class_stats
  if stats is None or stats.empty:
    return set()
  return set(stats.loc[stats["significant"] & (stats["normalized_change"] < 0), "class_id"].astype(int))


def _level_floor_text(summary_level):
  distinguishable = summary_level.get("distinguishable_from_noise")
  if distinguishable is None:
    return ""
  test = f"permutation test of the PIE count against seed noise: p = {summary_level['pies_noise_p_value']:.3g}"
  excess = ""
  if summary_level.get("pies_excess") is not None:
    excess = f"{summary_level['pies_excess']:+.1f} PIEs over the noise floor"
    if summary_level.get("pies_excess_ci_low") is not None:
      excess += (f" (interval {summary_level['pies_excess_ci_low']:+.1f} to "
                 f"{summary_level['pies_excess_ci_high']:+.1f})")
    excess += "; "
  if distinguishable:
    return f"{excess}more PIEs than seed noise gives ({test}). "
  return f"<b>Within the noise floor:</b> {excess}these PIEs may be seed noise ({test}). "


def key_findings(data, max_names=5):
  """Plain-language findings: the noise floor, then per pruned level its accuracy cost, PIE share and the classes hurt
  most."""
  dense = data.levels.loc[data.levels["role"] == variants.DENSE].iloc[0]
  findings = floor_findings(data)
  by_sparsity = {float(level["sparsity"]): level for level in data.summary["levels"] if level["role"] == "pruned"}
  for sparsity in reversed(data.pruned_sparsities):
    level = data.levels.loc[data.levels["sparsity"] == sparsity].iloc[0]
    stats = data.class_stats.loc[data.class_stats["sparsity"] == sparsity]
    hurt = stats.loc[stats["significant"] & (stats["normalized_change"] < 0)].sort_values("normalized_change")
    helped = stats.loc[stats["significant"] & (stats["normalized_change"] > 0)]
    text = (f"<b>{_esc(level_label(sparsity))} sparsity:</b> top-1 {_pct(dense.top1_mean)} → "
            f"{_pct(level.top1_mean)} ({_pp(level.top1_mean - dense.top1_mean)} points). ")
    if not pd.isna(level.num_pies):
      text += f"{_count(level.num_pies)} PIEs ({_pct(level.pie_fraction, 2)} of the evaluation set). "
    text += _level_floor_text(by_sparsity.get(sparsity, {}))
    if hurt.empty:
      text += "No class is significantly hurt beyond the overall change"
    else:
      in_control = _hurt_in_control(data)
      names = ", ".join(f"<a href='#gallery' class='to-gallery' data-level='{level_key(sparsity)}' "
                        f"data-class='{int(r.class_id)}' title='show its PIEs'><b>{_esc(r.class_name)}</b></a> "
                        f"({_pp(r.recall_change)}{'; also in the control' if r.class_id in in_control else ''})"
                        for r in hurt.head(max_names).itertuples(index=False))
      more = f" and {len(hurt) - max_names} more" if len(hurt) > max_names else ""
      text += (f"{len(hurt)} class{'es' if len(hurt) != 1 else ''} significantly hurt more than overall "
               f"(recall change in points): {names}{more}")
      if any(int(r.class_id) in in_control for r in hurt.itertuples(index=False)):
        text += (" (“also in the control”: the control, where nothing was pruned, differs from the dense population "
                 "on that class in the same direction, so the dense population itself may be what is unusual)")
    # "Better than overall" is relative: a class whose own recall did not move while top-1 fell is spared, not improved.
    text += (f"; {len(helped)} fared significantly better than overall (relatively spared: their own recall changed "
             "less than top-1, or not at all)." if len(helped) else ".")
    findings.append(text)
  return findings


def _class_table(stats, table_id):
  columns = [("class_id", "Id", None), ("class_name", "Class", None), ("num_examples", "Examples", None),
             ("dense_recall_mean", "Dense recall", "pct"), ("pruned_recall_mean", "Pruned recall", "pct"),
             ("recall_change", "Change (pts)", "pp"), ("normalized_change", "Normalized (pts)", "pp"),
             ("t_statistic", "t", "f2"), ("p_value", "p", "p"), ("q_value", "q (FDR)", "p"),
             ("significant", "Significant", "bool"), ("significant_fdr", "Significant (FDR)", "bool"),
             ("ci_low", "CI low (pts)", "pp"), ("ci_high", "CI high (pts)", "pp"), ("hedges_g", "Hedges g", "f2"),
             ("note", "Note", None)]
  columns = [c for c in columns if c[0] in stats]

  def cell(value, fmt):
    if value is None or (not isinstance(value, str) and pd.isna(value)):
      return "<td data-v=''>–</td>"
    if fmt == "pct":
      shown = _pct(value)
    elif fmt == "pp":
      shown = _pp(value, 2)
    elif fmt == "f2":
      shown = f"{value:.2f}"
    elif fmt == "p":
      shown = f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
    elif fmt == "bool":
      return f"<td data-v='{int(value)}'>{'yes' if value else ''}</td>"
    else:
      shown = str(value)
    sort_value = value if isinstance(value, str) else f"{float(value):.10g}"
    return f"<td data-v='{_esc(sort_value)}'>{_esc(shown)}</td>"

  body = []
  for row in stats.sort_values("normalized_change", kind="stable").itertuples(index=False):
    values = row._asdict()
    cls = ""
    if values["significant"]:
      cls = " class='hurt'" if values["normalized_change"] < 0 else " class='helped'"
    body.append(f"<tr{cls}>" + "".join(cell(values[c], fmt) for c, _, fmt in columns) + "</tr>")
  head = "".join(f"<th scope='col' tabindex='0'>{_esc(title)}</th>" for _, title, _ in columns)
  return (f"<input type='search' class='table-filter' data-table='{table_id}' placeholder='filter classes…' "
          f"aria-label='filter classes'>"
          f"<div class='scroll'><table class='data sortable' id='{table_id}'><thead><tr>{head}</tr></thead>"
          f"<tbody>{''.join(body)}</tbody></table></div>")


def _robustness_table(rows, table_id):
  head = ["Corruption", "Severity", "Dense top-1", "Pruned top-1", "Dense drop (pts)", "Pruned drop (pts)",
          "Relative drop dense", "Relative drop pruned", "t", "p", "Significant"]
  body = []
  for r in rows.sort_values(["corruption", "severity"]).itertuples(index=False):
    cells = [(r.corruption, _esc(r.corruption)), (r.severity, r.severity),
             (r.dense_top1_mean, f"{_pct(r.dense_top1_mean)} ± {100 * r.dense_top1_std:.1f}"),
             (r.pruned_top1_mean, f"{_pct(r.pruned_top1_mean)} ± {100 * r.pruned_top1_std:.1f}"),
             (r.dense_drop, _pp(r.dense_drop, 2)), (r.pruned_drop, _pp(r.pruned_drop, 2)),
             (r.relative_drop_dense, _pct(r.relative_drop_dense)),
             (r.relative_drop_pruned, _pct(r.relative_drop_pruned)),
             (r.t_statistic, f"{r.t_statistic:.2f}"), (r.p_value, f"{r.p_value:.3g}"),
             (int(r.significant), "yes" if r.significant else "")]
    cls = " class='hurt'" if r.significant else ""
    body.append(f"<tr{cls}>" + "".join(f"<td data-v='{_esc(v)}'>{s}</td>" for v, s in cells) + "</tr>")
  return (f"<div class='scroll'><table class='data sortable' id='{table_id}'><thead><tr>" +
          "".join(f"<th scope='col' tabindex='0'>{h}</th>" for h in head) + f"</tr></thead><tbody>{''.join(body)}"
          "</tbody></table></div>")


def methods_series(methods, method_class_stats, max_classes=3):
  """One row per compressed population, smallest compressed model first, with what it costs (the methods section).

  Columns: method, sparsity, num_models, bits_per_weight, compressed_bytes, size_ratio (compressed size over the
  dense model's), top1_mean, top1_std, top1_change (vs dense), num_significant_classes, num_significant_classes_fdr,
  num_pies (the CIEs), pie_fraction, harm_rank (1 = most harm: most CIEs, then most significant classes, then the
  largest top-1 loss) and hurt_classes: up to `max_classes` (name, normalized change) of the classes it hurts
  significantly, most hurt first.
  """
  dense = methods.loc[methods["method"] == variants.DENSE]
  if len(dense) != 1:
    raise PieError(f"{SUMMARY_JSON}: expected one dense population, found {len(dense)}")
  dense = dense.iloc[0]
  rows = methods.loc[methods["method"] != variants.DENSE].copy()
  rows["size_ratio"] = rows["compressed_bytes"] / dense["compressed_bytes"]
  rows["top1_change"] = rows["top1_mean"] - dense["top1_mean"]
  order = rows.sort_values(["num_pies", "num_significant_classes", "top1_change"], ascending=[False, False, True],
                           kind="stable")
  rows["harm_rank"] = pd.Series(np.arange(1, len(order) + 1), index=order.index)
  hurt = []
  for row in rows.itertuples(index=False):
    classes = pd.DataFrame()
    if method_class_stats is not None:
      classes = method_class_stats.loc[(method_class_stats["method"] == row.method)
                                       & ((method_class_stats["sparsity"] - row.sparsity).abs() < SPARSITY_TOLERANCE)
                                       & method_class_stats["significant"]
                                       & (method_class_stats["normalized_change"] < 0)]
    classes = classes.sort_values("normalized_change", kind="stable").head(max_classes)
    hurt.append([(str(n), float(c)) for n, c in zip(classes["class_name"], classes["normalized_change"])])
  rows["hurt_classes"] = hurt
  return rows.sort_values(["compressed_bytes", "method"], kind="stable").reset_index(drop=True)


def _method_label(method, sparsity):
  return f"{method} {100 * sparsity:.4g}%" if variants.is_pruning(method) else method


def plot_methods(series, dense):
  """Top-1, significant classes and CIEs of each population against its compressed size (log scale).

  One colour and marker per method (legend below the panels); pruning levels are written beside their points.
  """
  import matplotlib.ticker as ticker  # pylint: disable=import-outside-toplevel
  figure = _new_figure(11.0, 4.0)
  axes = figure.subplots(1, 3)
  methods = list(dict.fromkeys(series["method"]))
  markers = "o^vDP*Xh<>"
  palette = ("#d9822b", "#8e44ad", "#27ae60", "#c0392b", "#16a085", "#7f8c8d", "#2c3e50", "#b7950b")
  panels = (("top1_mean", "top-1 (%)", 100.0, dense["top1_mean"]),
            ("num_significant_classes", "significantly changed classes", 1.0, 0.0),
            ("num_pies", "CIEs (examples)", 1.0, 0.0))
  positive = bool((series["compressed_bytes"] > 0).all()) and np.isfinite(dense["compressed_bytes"])
  for ax, (column, label, scale, dense_value) in zip(axes, panels):
    for i, method in enumerate(methods):
      rows = series.loc[series["method"] == method]
      kb = rows["compressed_bytes"].to_numpy(dtype=float) / 1024
      values = scale * rows[column].to_numpy(dtype=float)
      ax.scatter(kb, values, color=palette[i % len(palette)], marker=markers[i % len(markers)], zorder=3,
                 label=method, alpha=0.85)
      if variants.is_pruning(method):
        for x, y, level in zip(kb, values, rows["sparsity"]):
          ax.annotate(f"{100 * level:.4g}%", (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
    if np.isfinite(dense["compressed_bytes"]):
      ax.scatter([dense["compressed_bytes"] / 1024], [scale * dense_value], color=COLOR_DENSE, marker="s", zorder=3,
                 label=variants.DENSE)
    if positive:
      ax.set_xscale("log")
      ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
      ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
      ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("compressed size (KB, gzip)")
    ax.set_ylabel(label)
    if column != "top1_mean":
      ax.set_ylim(bottom=0)
      ax.yaxis.get_major_locator().set_params(integer=True)
    _style_axes(ax)
  handles, labels = axes[0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 8), frameon=False, fontsize=8)
  figure.suptitle("What each compression method costs, against the size it reaches", fontsize=11)
  return figure


def _methods_section(data, save):
  dense = data.methods.loc[data.methods["method"] == variants.DENSE].iloc[0]
  series = methods_series(data.methods, data.method_class_stats)
  svg = save(plot_methods(series, dense), "methods_vs_size")
  head = ["Method", "Level", "Models", "Bits / weight", "Compressed (KB)", "Size vs dense", "Top-1", "Change (pts)",
          "Significant classes (FDR)", "CIEs (fraction)", "Harm rank", "Most hurt classes (normalized pts)"]
  body = []
  for row in series.itertuples(index=False):
    hurt = ", ".join(f"{_esc(name)} ({100 * change:+.1f})" for name, change in row.hurt_classes) or "none significant"
    fdr = "" if pd.isna(row.num_significant_classes_fdr) else f" ({int(row.num_significant_classes_fdr)})"
    cells = [_esc(row.method), _esc(f"{100 * row.sparsity:.4g}%"), _count(row.num_models),
             "–" if pd.isna(row.bits_per_weight) else f"{row.bits_per_weight:.2f}",
             "–" if pd.isna(row.compressed_bytes) else f"{row.compressed_bytes / 1024:.1f}",
             "–" if pd.isna(row.size_ratio) else f"{row.size_ratio:.2f}×",
             _pct(row.top1_mean, 2), _pp(row.top1_change, 2), f"{int(row.num_significant_classes)}{fdr}",
             f"{int(row.num_pies)} ({_pct(row.pie_fraction, 2)})", str(int(row.harm_rank)), hurt]
    body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
  dense_kb = "–" if pd.isna(dense["compressed_bytes"]) else f"{dense['compressed_bytes'] / 1024:.1f} KB"
  table = ("<table id='methods-table'><thead><tr>" + "".join(f"<th scope='col'>{h}</th>" for h in head)
           + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")
  return ("<section id='methods'><h2>Methods compared</h2><p class='note'>Every compressed population against the "
          f"same dense population (top-1 {_pct(dense['top1_mean'], 2)}, {dense_kb} compressed). Compressed size: gzip "
          "of the exported TFLite model (sparse storage for pruned ones), measured per model and averaged. CIEs "
          "(compression-identified exemplars) are the PIEs of each method: examples whose modal prediction differs "
          "from the dense population's. Rows run from the smallest model to the largest; the harm rank orders the "
          "methods by CIEs, then significantly changed classes, then top-1 loss (1 = most harm). Most hurt classes: "
          "significantly hurt, most negative change in recall beyond the overall change.</p>"
          f"<figure>{svg}</figure><div class='scroll'>{table}</div></section>")


def write_report(analysis_dir, top_n=25, page_size=60, max_image_bytes=20 * 2**20):
  """Writes report.html, figures/ and triage/ into the analysis folder and returns the path of report.html.

  Args:
    analysis_dir: the analysis output folder (see the module docstring for the files it must hold).
    top_n: with more than 2 * top_n classes, each class impact chart shows the top_n most hurt and the top_n most
      helped classes; the sortable table below it lists all.
    page_size: PIEs per gallery page.
    max_image_bytes: cap on the embedded gallery images (base64 text), so that the report of a large study stays
      small enough to open and to mail; see gallery_payload.
  """
  data = load_analysis(analysis_dir)
  figures_dir = data.directory / FIGURES_DIR
  figures_dir.mkdir(parents=True, exist_ok=True)
  written = set()

  def save(figure, name):
    written.add(name)
    return _save_figure(figure, figures_dir, name)

  _write_triage(data)
  study = data.study
  alpha = float(data.summary["alpha"])
  sections = []

  # Overview figures.
  floor = floor_lines(data.noise_floor)
  accuracy_svg = save(plot_accuracy(accuracy_series(data.levels)), "accuracy_vs_sparsity")
  significance_svg = save(plot_significance(significance_series(data.levels), alpha, floor),
                          "significant_classes_vs_sparsity")
  pies_svg = save(plot_pies(pies_series(data.summary["levels"]), floor), "pies_vs_sparsity")
  floor_text = ("" if floor is None else
                " Dotted lines and the grey band: the noise floor, what two populations of dense models trained with "
                f"different seeds ({floor['sizes'][0]} + {floor['sizes'][1]} models, random splits) differ by when "
                "nothing was pruned.")
  sections.append(
      "<section id='overview'><h2>Accuracy, PIEs and significant classes</h2>"
      "<p class='note'>Left: mean top-1 of each population, error bars one standard deviation over its models. "
      "Middle: PIEs per level. Right: how many classes' recall changed significantly more or less than overall top-1 "
      f"(two-sided Welch t-test over the models, α = {alpha:g}); the FDR line corrects for testing every class "
      f"(Benjamini–Hochberg).{floor_text}</p>"
      f"<div class='figrow'><figure>{accuracy_svg}</figure><figure>{pies_svg}</figure>"
      f"<figure>{significance_svg}</figure></div></section>")

  if data.methods is not None:
    sections.append(_methods_section(data, save))

  # Class impact per level, highest sparsity open.
  parts = []
  num_classes = int(study["num_classes"])
  for i, sparsity in enumerate(reversed(data.pruned_sparsities)):
    stats = data.class_stats.loc[data.class_stats["sparsity"] == sparsity]
    key = level_key(sparsity)
    if stats.empty:
      parts.append(f"<details><summary>{_esc(level_label(sparsity))} sparsity: no class statistics</summary>"
                   "</details>")
      continue
    series = class_impact_series(data.class_stats, sparsity, top_n)
    shown = (f"all {len(stats)} classes" if len(series) == len(stats) else
             f"{top_n} most hurt and {top_n} most helped of {len(stats)} classes")
    title = f"{level_label(sparsity)} sparsity: {shown}"
    svg = save(plot_class_impact(series, title, num_total=len(stats)), f"class_impact_{key}")
    hurt = int((stats["significant"] & (stats["normalized_change"] < 0)).sum())
    helped = int((stats["significant"] & (stats["normalized_change"] > 0)).sum())
    open_attr = " open" if i == 0 else ""
    parts.append(
        f"<details class='level'{open_attr} id='impact-{key}'><summary><b>{_esc(level_label(sparsity))} "
        f"sparsity</b>: {hurt} of {len(stats)} classes significantly hurt, {helped} significantly helped"
        f"</summary><figure>{svg}</figure><details class='table'><summary>All {len(stats)} classes (sortable "
        f"table)</summary>{_class_table(stats, f'classes-{key}')}</details></details>")
  sections.append(
      "<section id='classes'><h2>Which classes pruning hurts</h2><p class='note'>Bars: change in the class's recall "
      "(pruned minus dense, percentage points). Diamonds: the same change minus the change in overall top-1, i.e. how "
      "much worse (left) or better (right) the class fares than the model as a whole. Coloured bars and bold names "
      "are statistically significant. "
      + (f"With {num_classes} classes only the most affected are drawn; open the table for the rest." if
         num_classes > 2 * top_n else "") + "</p>" + "".join(parts) + "</section>")

  # Gallery.
  payload = gallery_payload(data, page_size=page_size, max_image_bytes=max_image_bytes)
  if data.images is None:
    image_note = ("<p class='warn' id='gallery-noimages'>This analysis was run without images (no "
                  f"{PIES_TFRECORD}): the gallery shows labels only.</p>")
  elif payload["omitted_images"]:
    image_note = (f"<p class='warn'>{payload['omitted_images']} images were left out to keep this file small; every "
                  "image is in triage/images.</p>")
  else:
    image_note = ""
  sections.append(
      "<section id='gallery'><h2>PIE gallery: the images pruning changes</h2><p class='note'>Each card is one PIE: "
      "the image, its true label, and the most common prediction of the dense and of the pruned population, with the "
      "share of each population's models that voted for it. Green: equals the true label; red: differs. Many PIEs "
      f"are atypical, ambiguous or mislabelled. Ties between modal labels are broken by the rule "
      f"“{_esc(data.summary['tie_rule'])}”.</p>{image_note}"
      "<div class='controls'><label>Level <select id='gal-level'></select></label> "
      "<label>True class <select id='gal-class'></select></label> "
      "<button type='button' id='gal-prev'>‹ Previous</button> <span id='gal-page'></span> "
      "<button type='button' id='gal-next'>Next ›</button> <span id='gal-status' role='status'></span></div>"
      "<div id='gal-grid' class='grid'></div>"
      f"<script type='application/json' id='pie-data'>{_json_for_script(payload)}</script></section>")

  # PIE vs random vs non-PIE accuracy.
  pie_series = {s: pie_accuracy_series(data.pie_accuracy, s) for s in data.pruned_sparsities}
  pie_series = {s: v for s, v in pie_series.items() if not v.empty}
  if pie_series:
    svg = save(plot_pie_accuracy(pie_series), "pie_accuracy")
    sections.append(
        "<section id='pie-accuracy'><h2>How hard are PIEs?</h2><p class='note'>Top-1 of each population on the PIEs, "
        "on a random sample of the evaluation set of the same size, and on all non-PIEs (mean ± std over models). "
        f"PIEs are hard for both populations, not only for the pruned one.</p><figure>{svg}</figure></section>")

  # Robustness.
  if data.robustness is not None and not data.robustness.empty:
    levels = [s for s in data.pruned_sparsities if (data.robustness["sparsity"] == s).any()]
    severity_svg = save(
        plot_robustness_severity({s: robustness_severity_series(data.robustness, s) for s in levels}),
        "robustness_vs_severity")
    parts = []
    for sparsity in levels:
      key = level_key(sparsity)
      open_attr = " open" if sparsity == levels[-1] else ""
      svg = save(plot_robustness_drop(robustness_drop_series(data.robustness, sparsity),
                                      f"{level_label(sparsity)} sparsity: accuracy drop per corruption"),
                 f"robustness_drop_{key}")
      rows = data.robustness.loc[data.robustness["sparsity"] == sparsity]
      parts.append(f"<details class='level'{open_attr} id='robustness-{key}'><summary><b>{_esc(level_label(sparsity))} "
                   f"sparsity</b>: {int(rows['significant'].sum())} of {len(rows)} corruption × severity pairs differ "
                   f"significantly</summary><figure>{svg}</figure><details class='table'><summary>All rows</summary>"
                   f"{_robustness_table(rows, f'robustness-table-{key}')}</details></details>")
    sections.append(
        "<section id='robustness'><h2>Robustness to corrupted images</h2><p class='note'>Top-1 on corrupted "
        "copies of the evaluation set. Left: mean over corruptions per severity; the numbers under the pruned line "
        "count the corruptions where dense and pruned differ significantly. Per level: the drop from clean accuracy "
        f"per corruption; * marks corruptions with a significant difference at some severity.</p>"
        f"<figure>{severity_svg}</figure>{''.join(parts)}</section>")

  document = _page(data, sections)
  report_path = data.directory / REPORT_HTML
  io_utils.write_text(str(report_path), document)
  # Figures of an earlier run that this one did not draw (a level or robustness.csv gone) would mislead.
  for path in figures_dir.iterdir():
    if path.suffix in (".png", ".svg") and path.stem.startswith(_FIGURE_PREFIXES) and path.stem not in written:
      path.unlink()
  return report_path


def _page(data, sections):
  study = data.study
  findings = "".join(f"<li>{f}</li>" for f in key_findings(data))
  config = json.dumps(study["config"], indent=2, sort_keys=True, default=str)
  nav = [("findings", "Findings"), ("populations", "Populations"), ("overview", "Accuracy"),
         ("classes", "Class impact"), ("gallery", "PIE gallery"), ("pie-accuracy", "PIE accuracy")]
  if data.methods is not None:
    nav.insert(3, ("methods", "Methods compared"))
  if data.robustness is not None and not data.robustness.empty:
    nav.append(("robustness", "Robustness"))
  has_triage_images = data.images is not None
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>Pruning impact: {_esc(study['name'])}</title>
<style>{_CSS}</style></head>
<body>
<header><h1>What pruning costs, class by class and image by image</h1>
<p class="meta"><b>{_esc(study['name'])}</b> · dataset <b>{_esc(study['dataset'])}</b> (split
{_esc(study['eval_split'])}, {int(study['num_examples'])} examples, {int(study['num_classes'])} classes) · model
<b>{_esc(study['model'])}</b> · config {_esc(study['config_hash'])}</p>
<nav>{' '.join(f"<a href='#{a}'>{t}</a>" for a, t in nav)}</nav></header>
<main>
<section id="howto" class="howto"><h2>How to read this</h2>
<p>Several copies of the same network were trained from different random seeds: a <b>dense</b> population, and
<b>pruned</b> populations with a given fraction of their weights removed (the <i>sparsity</i>). Pruning costs little
overall accuracy, but the cost is not shared equally.</p>
<ul>
<li><b>Hurt classes.</b> For each class, the change in recall is compared with the change in overall accuracy. A class
is <i>hurt</i> when it loses significantly more than the model as a whole (red in the class charts).</li>
<li><b>PIEs</b> (pruning-identified exemplars) are evaluation images on which the pruned population's most common
answer differs from the dense population's, whatever the true label. They are where pruning changes behaviour; many
are unusual, ambiguous or wrongly labelled, so they deserve a human look (the gallery, and the triage export in
<code>triage/</code>{' with every image' if has_triage_images else ''}).</li>
</ul>
<p>Start with the findings below (click a class name to see its PIEs), then the red bars of the class chart,
then the gallery.</p></section>
<section id="findings"><h2>Key findings</h2><ul class="findings">{findings}</ul></section>
<section id="populations"><h2>Populations</h2><div class="populations">{_populations_table(data)}</div>
<p class="note">Significance: α = {float(data.summary['alpha']):g}; class tests normalize recall
{_esc(_normalization_text(data.summary))}. Modal ties: evaluation images whose most common prediction is tied between
labels; rule: {_esc(data.summary['tie_rule'])}. Control rows are populations in which nothing was pruned: what they
differ by is the noise floor.</p>
<details><summary>Study configuration (hash {_esc(study['config_hash'])})</summary><pre>{_esc(config)}</pre></details>
</section>
{''.join(sections)}
</main>
<footer>Written by pie {_esc(_version())} from {', '.join(_inputs_present(data))}.</footer>
<script>{_JS}</script>
</body></html>
"""


def _normalization_text(summary):
  if summary.get("normalization") == "population":
    return ("by the population's mean top-1 (the paper's rule, which ignores that mean's variance: see the caution "
            "above)")
  return "by each model's own top-1"


def _version():
  try:
    import pie  # pylint: disable=import-outside-toplevel
    return getattr(pie, "__version__", "unknown")
  except ImportError:
    return "unknown"


def _inputs_present(data):
  names = [SUMMARY_JSON, PIES_CSV, CLASS_STATS_CSV, PIE_ACCURACY_CSV]
  names += [n for n in (PIES_TFRECORD, ROBUSTNESS_CSV) if (data.directory / n).exists()]
  return names


_CSS = """
:root { --ink:#1d1d1f; --muted:#5f6368; --line:#dadce0; --hurt:#c0392b; --helped:#2e86c1; --ok:#1e8449;
  --bg:#ffffff; --panel:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--ink); background: var(--bg); }
header { padding: 18px 28px 10px; border-bottom: 1px solid var(--line); background: var(--panel); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.meta { margin: 0 0 8px; color: var(--muted); }
nav a { margin-right: 14px; color: #1a5fb4; text-decoration: none; font-size: 14px; }
nav a:hover { text-decoration: underline; }
main { padding: 0 28px 40px; max-width: 1280px; }
.howto { background: #fffbea; border: 1px solid #f0e2a8; border-radius: 8px; padding: 4px 18px 8px;
  margin-top: 18px; }
.howto h2 { border: 0; margin-top: 10px; }
.findings li { margin-bottom: 6px; }
.findings a { color: var(--hurt); text-decoration: underline dotted; }
.note { color: var(--muted); font-size: 14px; max-width: 980px; }
.warn { background: #fdecea; border-left: 4px solid var(--hurt); padding: 6px 10px; }
table.data { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
table.data th, table.data td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: right;
  white-space: nowrap; }
table.data th:first-child, table.data td:nth-child(2) { text-align: left; }
table.data thead th { background: var(--panel); position: sticky; top: 0; white-space: normal;
  vertical-align: bottom; }
.populations { overflow-x: auto; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th[aria-sort=ascending]::after { content: " ▲"; }
table.sortable thead th[aria-sort=descending]::after { content: " ▼"; }
tr.hurt td { background: #fbeaea; }
tr.helped td { background: #eaf2fb; }
.scroll { max-height: 480px; overflow: auto; border: 1px solid var(--line); }
.table-filter { margin: 6px 0; padding: 4px 8px; width: 240px; }
figure { margin: 8px 0; }
svg.figure { width: 100%; height: auto; }
.figrow { display: flex; flex-wrap: wrap; gap: 12px; }
.figrow figure { flex: 1 1 420px; }
details.level { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; margin: 10px 0; }
details > summary { cursor: pointer; }
details.table { margin: 6px 0; }
pre { background: var(--panel); padding: 10px; overflow: auto; font-size: 12px; }
.controls { display: flex; flex-wrap: wrap; align-items: center; gap: 10px; margin: 10px 0;
  position: sticky; top: 0; background: var(--bg); padding: 6px 0; z-index: 2; }
.controls select, .controls button { font: inherit; padding: 3px 8px; }
#gal-status { color: var(--muted); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px; font-size: 12px; background: #fff; }
.card .pic { display: flex; justify-content: center; align-items: center; height: 120px; background: #eceff3; }
.card img { width: 112px; height: 112px; object-fit: contain; }
.card img.px { image-rendering: pixelated; }
.card .noimg { color: #bbb; font-size: 12px; }
.card .head { color: var(--muted); display: flex; justify-content: space-between; margin: 4px 0 2px; }
.card .row { display: flex; justify-content: space-between; gap: 4px; }
.card .row .k { color: var(--muted); }
.card .row .v { font-weight: 600; text-align: right; overflow-wrap: anywhere; }
.card .right { color: var(--ok); }
.card .wrong { color: var(--hurt); }
.card .tie { color: #8e44ad; font-weight: 600; }
footer { color: var(--muted); font-size: 12px; padding: 12px 28px; border-top: 1px solid var(--line); }
"""

_JS = r"""
(function () {
  "use strict";
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function pct(x) { return (x === null || x === undefined) ? "–" : Math.round(100 * x) + "%"; }

  // Sortable tables: click a header to sort by that column (numbers numerically), again to reverse.
  document.querySelectorAll("table.sortable").forEach(function (table) {
    const heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, col) {
      function sort() {
        const asc = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {
          const x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
          const fx = Number(x), fy = Number(y);
          let c;
          if (x === "" || y === "") c = (x === "") - (y === "");
          else if (!isNaN(fx) && !isNaN(fy)) c = fx - fy;
          else c = x.localeCompare(y);
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
      });
    });
  });
  document.querySelectorAll("input.table-filter").forEach(function (input) {
    input.addEventListener("input", function () {
      const q = input.value.trim().toLowerCase();
      const table = document.getElementById(input.dataset.table);
      Array.from(table.tBodies[0].rows).forEach(function (r) {
        r.hidden = q !== "" && r.cells[1].textContent.toLowerCase().indexOf(q) < 0 &&
                   r.cells[0].textContent !== q;
      });
    });
  });

  // PIE gallery.
  const dataEl = document.getElementById("pie-data");
  if (!dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const levelSel = document.getElementById("gal-level");
  const classSel = document.getElementById("gal-class");
  const grid = document.getElementById("gal-grid");
  const status = document.getElementById("gal-status");
  const pageInfo = document.getElementById("gal-page");
  const prev = document.getElementById("gal-prev");
  const next = document.getElementById("gal-next");
  const levelLabel = {};
  let page = 0;

  function option(value, text) { const o = el("option", null, text); o.value = value; return o; }
  levelSel.appendChild(option("all", "All levels (" + data.pies.length + ")"));
  data.levels.forEach(function (l) {
    levelLabel[l.key] = l.label;
    levelSel.appendChild(option(l.key, l.label + " sparsity (" + l.count + ")"));
  });
  if (data.levels.length) levelSel.value = data.levels[data.levels.length - 1].key;

  function inLevel() {
    const lv = levelSel.value;
    return data.pies.filter(function (p) { return lv === "all" || p.level === lv; });
  }
  function fillClasses(keep) {
    const counts = {};
    inLevel().forEach(function (p) { counts[p.y] = (counts[p.y] || 0) + 1; });
    classSel.textContent = "";
    let total = 0;
    Object.keys(counts).forEach(function (k) { total += counts[k]; });
    classSel.appendChild(option("all", "All classes (" + total + ")"));
    Object.keys(counts).map(Number).sort(function (a, b) { return counts[b] - counts[a] || a - b; })
      .forEach(function (y) {
        classSel.appendChild(option(String(y), data.class_names[y] + " (" + counts[y] + ")"));
      });
    if (keep !== "all" && !(keep in counts)) {
      classSel.appendChild(option(keep, data.class_names[Number(keep)] + " (0)"));
    }
    classSel.value = keep;
  }
  function selected() {
    const cl = classSel.value;
    return inLevel().filter(function (p) { return cl === "all" || String(p.y) === cl; });
  }
  function labelRow(name, cls, value, share, correct) {
    const row = el("div", "row");
    row.appendChild(el("span", "k", name));
    const v = el("span", "v " + cls + (correct === undefined ? "" : (correct ? " right" : " wrong")),
                 value + (share === undefined ? "" : " · " + pct(share)));
    row.appendChild(v);
    return row;
  }
  function card(p) {
    const c = el("div", "card");
    c.dataset.exampleId = p.id;
    c.dataset.level = p.level;
    c.dataset.label = p.y;
    const pic = el("div", "pic");
    if (p.img) {
      const img = el("img", Math.max(p.w, p.h) < data.tile_px ? "px" : "");
      img.src = p.img;
      img.alt = "example " + p.id + ", true label " + p.yn;
      pic.appendChild(img);
    } else {
      pic.appendChild(el("span", "noimg", data.has_images ? "image not embedded" : "no image"));
    }
    c.appendChild(pic);
    const head = el("div", "head");
    head.appendChild(el("span", null, "#" + p.id));
    head.appendChild(el("span", null, levelLabel[p.level]));
    c.appendChild(head);
    c.appendChild(labelRow("true", "lab-true", p.yn));
    c.appendChild(labelRow("dense", "lab-dense", p.dn, p.ds, p.d === p.y));
    c.appendChild(labelRow("pruned", "lab-pruned", p.pn, p.ps, p.p === p.y));
    if (p.tie || p.st !== undefined) {
      const extra = el("div", "row");
      extra.appendChild(el("span", "tie", p.tie ? "modal tie" : ""));
      if (p.st !== undefined) extra.appendChild(el("span", "k", "stability " + pct(p.st)));
      c.appendChild(extra);
    }
    return c;
  }
  function render() {
    const items = selected();
    const pages = Math.max(1, Math.ceil(items.length / data.page_size));
    page = Math.min(Math.max(page, 0), pages - 1);
    const start = page * data.page_size;
    const shown = items.slice(start, start + data.page_size);
    grid.textContent = "";
    const frag = document.createDocumentFragment();
    shown.forEach(function (p) { frag.appendChild(card(p)); });
    grid.appendChild(frag);
    pageInfo.textContent = "Page " + (page + 1) + " of " + pages;
    status.textContent = items.length ? ("Showing " + (start + 1) + "–" + (start + shown.length) + " of " +
                                         items.length + " PIEs") : "No PIEs match these filters";
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  levelSel.addEventListener("change", function () { page = 0; fillClasses(classSel.value || "all"); render(); });
  // Class names in the findings open the gallery on that class's PIEs.
  document.querySelectorAll("a.to-gallery").forEach(function (a) {
    a.addEventListener("click", function () {
      levelSel.value = a.dataset.level;
      fillClasses(a.dataset.class);
      page = 0;
      render();
    });
  });
  classSel.addEventListener("change", function () { page = 0; render(); });
  prev.addEventListener("click", function () { page -= 1; render(); });
  next.addEventListener("click", function () { page += 1; render(); });
  fillClasses("all");
  render();
})();
"""
