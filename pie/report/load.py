"""Reading and validating an analysis folder for the report: `load_analysis` returns an `AnalysisData`.

Only the files of the output contract (pie/outputs.py) are read; every problem is a PieError (a ValueError) that
names the file and what is wrong with it, before anything is written.
"""

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pie import outputs
from pie import significance
from pie import variants
from pie.errors import PieError

# The optional columns the report shows when a file has them (it does not read the others, e.g. class_stats.csv's
# df or the replicability aliases).
PIES_OPTIONAL = ("pie_stability",)
CLASS_STATS_OPTIONAL = (
    "q_value",
    "significant_fdr",
    "ci_low",
    "ci_high",
    "hedges_g",
    "note",
    "paired_change",
    "paired_q_value",
    "paired_significant_fdr",
    "paired_ci_low",
    "paired_ci_high",
    "num_pairs",
    "uniform_shift_change",
    "beyond_uniform_shift",
    "beyond_uniform_shift_q_value",
    "beyond_uniform_shift_significant_fdr",
)

# Two sparsities closer than this are the same level: pies.tfrecord stores float32, the CSVs and JSON float64.
SPARSITY_TOLERANCE = 1e-5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The columns of `AnalysisData.methods`: one row per population of summary.json.
METHOD_LEVEL_KEYS = (
    "method",
    "sparsity",
    "num_models",
    "top1_mean",
    "top1_std",
    "measured_sparsity_mean",
    "num_pies",
    "pie_fraction",
    "num_significant_classes",
    "num_significant_classes_fdr",
    "bits_per_weight",
    "compressed_bytes",
)


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
  # Every compressed population of summary.json (role "pruned", every method), as written: the per-pair view and the
  # mitigations compared read their keys.
  compared_levels: tuple = ()
  difficulty: pd.DataFrame | None = None  # difficulty.csv of the per-level view (None in an older analysis)
  slice_stats: pd.DataFrame | None = None  # slice_stats.csv of the per-level view (None in an older analysis)
  # The tables whose q-values the report computed (Benjamini-Hochberg per level, `with_fdr`) because the analysis that
  # wrote them predates q-values: the page says so.
  fdr_computed: tuple = ()

  @property
  def alpha(self):
    return float(self.summary["alpha"])

  @property
  def design(self):
    """summary.json `design` ("independent" for analyses written before designs were recorded)."""
    return self.summary.get("design") or outputs.INDEPENDENT_DESIGN

  @property
  def study(self):
    return self.summary["study"]

  @property
  def pruned_sparsities(self):
    """Sparsities of the pruned levels, ascending."""
    return [float(s) for s in self.levels.loc[self.levels["role"] == "pruned", "sparsity"]]


def level_label(sparsity):
  """'dense' for 0, else the sparsity as a percentage: 0.5 -> '50%', 0.125 -> '12.5%'."""
  return variants.DENSE if sparsity == 0 else f"{100 * sparsity:.4g}%"


def level_key(sparsity):
  """A short stable text key for a level, used in file names and the gallery's filter: 0.5 -> 's0p5'."""
  return "s" + f"{sparsity:g}".replace(".", "p").replace("-", "m")


def floor_control(summary_level, noise_floor):
  """The method name of the control whose relation to the dense population is this level's own, or None.

  summary.json names it per level (`floor_control`; null: the study has no matched control for the level). An analysis
  written before that key compared every level with one control, `noise_floor.control`, which is read instead.
  """
  if "floor_control" in summary_level:
    return summary_level["floor_control"]
  return (noise_floor or {}).get("control")


def fdr_scope_text(summary):
  """Over which tests Benjamini-Hochberg ran (summary.json `fdr_scope`; per level before the key existed)."""
  if summary.get("fdr_scope") == "study":
    return "Benjamini–Hochberg over every class test of every level and method of the study"
  return "Benjamini–Hochberg over the classes of each level"


def with_fdr(table, alpha, groups):
  """`table` with `q_value` and `significant_fdr` (q <= alpha): as the analysis wrote them, or, for a file written
  before it did, Benjamini-Hochberg over the p-values of each group of rows (a level: the analysis's own rule).
  Returns (table, whether they were computed here)."""
  if "significant_fdr" in table and "q_value" in table:
    return table, False
  table = table.copy()
  q_values = pd.Series(np.nan, index=table.index)
  for _, rows in table.groupby(list(groups), sort=False):
    q_values[rows.index] = significance.bh_q_values(rows["p_value"].to_numpy(dtype=float))
  table["q_value"] = q_values.astype(float)
  table["significant_fdr"] = significance.bh_rejections(table["q_value"].to_numpy(), alpha)
  return table, True


def load_analysis(analysis_dir):
  """Reads and validates the analysis folder; raises PieError (a ValueError) naming the file and what is wrong."""
  directory = Path(analysis_dir)
  if not directory.is_dir():
    raise PieError(f"analysis folder {directory} does not exist or is not a folder")
  full_summary = _read_summary(directory / outputs.SUMMARY_JSON)
  controls = tuple(level for level in full_summary["levels"] if level["role"] == "control")
  summary, methods = _methods_view(
      dict(full_summary, levels=[level for level in full_summary["levels"] if level["role"] != "control"])
  )
  levels = _levels_frame(summary)
  known = levels["sparsity"].to_numpy(dtype=float)
  pruned = levels.loc[levels["role"] == "pruned", "sparsity"].to_numpy(dtype=float)
  num_classes = int(summary["study"]["num_classes"])

  pies = _only_view(_read_table(directory, outputs.PIES, PIES_OPTIONAL), methods)
  pies["sparsity"] = _canonical_sparsity(pies["sparsity"], pruned, outputs.PIES_CSV)
  for column in ("label", "dense_modal", "pruned_modal"):
    _check_class_ids(pies[column], num_classes, f"{outputs.PIES_CSV} column {column}")
  duplicated = pies.duplicated(["sparsity", "example_id"])
  if duplicated.any():
    row = pies.loc[duplicated].iloc[0]
    raise PieError(
        f"{outputs.PIES_CSV}: example {int(row['example_id'])} is listed twice at sparsity " f"{row['sparsity']:g}"
    )

  alpha = float(summary["alpha"])
  class_stats = _read_table(directory, outputs.CLASS_STATS, CLASS_STATS_OPTIONAL)
  has_method = outputs.METHOD_COLUMN in class_stats
  class_stats, class_fdr_computed = with_fdr(
      class_stats, alpha, (outputs.METHOD_COLUMN, "sparsity") if has_method else ("sparsity",)
  )
  method_class_stats = class_stats if methods is not None and outputs.METHOD_COLUMN in class_stats else None
  control_class_stats = None
  if outputs.METHOD_COLUMN in class_stats:
    control_class_stats = class_stats.loc[class_stats[outputs.METHOD_COLUMN].isin(tuple(variants.CONTROLS))]
    control_class_stats = control_class_stats.reset_index(drop=True)
  class_stats = _only_view(class_stats, methods)
  class_stats["sparsity"] = _canonical_sparsity(class_stats["sparsity"], pruned, outputs.CLASS_STATS_CSV)
  _check_class_ids(class_stats["class_id"], num_classes, f"{outputs.CLASS_STATS_CSV} column class_id")
  _count_fdr_classes(levels, class_stats)

  pie_accuracy = _only_view(_read_table(directory, outputs.PIE_ACCURACY), methods)
  pie_accuracy["sparsity"] = _canonical_sparsity(pie_accuracy["sparsity"], pruned, outputs.PIE_ACCURACY_CSV)
  _check_values(pie_accuracy["population"], outputs.POPULATIONS, f"{outputs.PIE_ACCURACY_CSV} column population")
  _check_values(pie_accuracy["subset"], outputs.SUBSETS, f"{outputs.PIE_ACCURACY_CSV} column subset")

  difficulty = None
  if (directory / outputs.DIFFICULTY_CSV).exists():
    difficulty = _only_view(_read_table(directory, outputs.DIFFICULTY), methods)
    difficulty["sparsity"] = _canonical_sparsity(difficulty["sparsity"], pruned, outputs.DIFFICULTY_CSV)

  slice_stats = None
  if (directory / outputs.SLICE_STATS_CSV).exists():
    # A tested slice has no note, and a text feature may have the empty text as a value.
    slice_stats = _read_table(directory, outputs.SLICE_STATS, may_be_empty=("slice_name", "slice_value", "note"))
    _check_values(slice_stats["slice_kind"], outputs.SLICE_KINDS, f"{outputs.SLICE_STATS_CSV} column slice_kind")
    slice_stats = _only_view(slice_stats, methods)
    slice_stats["sparsity"] = _canonical_sparsity(slice_stats["sparsity"], pruned, outputs.SLICE_STATS_CSV)

  robustness, robustness_fdr_computed = None, False
  if (directory / outputs.ROBUSTNESS_CSV).exists():
    robustness = _read_table(directory, outputs.ROBUSTNESS, with_method=False)
    robustness["sparsity"] = _canonical_sparsity(robustness["sparsity"], pruned, outputs.ROBUSTNESS_CSV)
    robustness, robustness_fdr_computed = with_fdr(robustness, alpha, ("sparsity",))

  images = None
  if (directory / outputs.PIES_TFRECORD).exists():
    images = _match_images(outputs.read_pie_records(directory / outputs.PIES_TFRECORD), pies, known)
  return AnalysisData(
      directory=directory,
      summary=summary,
      levels=levels,
      pies=pies,
      class_stats=class_stats,
      pie_accuracy=pie_accuracy,
      robustness=robustness,
      images=images,
      methods=methods,
      method_class_stats=method_class_stats,
      controls=controls,
      noise_floor=full_summary.get("noise_floor"),
      control_class_stats=control_class_stats,
      compared_levels=tuple(level for level in full_summary["levels"] if level["role"] == variants.COMPRESSED_ROLE),
      difficulty=difficulty,
      slice_stats=slice_stats,
      fdr_computed=tuple(
          name
          for name, computed in (
              (outputs.CLASS_STATS_CSV, class_fdr_computed),
              (outputs.ROBUSTNESS_CSV, robustness_fdr_computed),
          )
          if computed
      ),
  )


def _count_fdr_classes(levels, class_stats):
  """Fills `num_significant_classes_fdr` of the levels whose summary entry lacks it (an older analysis) from the
  class table's `significant_fdr`, so that every level has the count the report calls significant."""
  for i in levels.index[(levels["role"] == "pruned") & levels["num_significant_classes_fdr"].isna()]:
    rows = class_stats.loc[class_stats["sparsity"] == levels.at[i, "sparsity"], "significant_fdr"]
    levels.at[i, "num_significant_classes_fdr"] = float(rows.sum())


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
  rows = [
      {k: (m if k == "method" else level.get(k)) for k in METHOD_LEVEL_KEYS}
      for level, m in zip(summary["levels"], methods)
  ]
  frame = pd.DataFrame(rows)
  for column in METHOD_LEVEL_KEYS[1:]:
    frame[column] = pd.to_numeric(frame[column], errors="raise").astype(float)
  return dict(summary, levels=view), frame


def _only_view(table, methods):
  """The rows of a table that belong to the per-level view (see `_methods_view`), without the method column.

  Rows of control populations are never in it: the report shows them as the noise floor.
  """
  column = outputs.METHOD_COLUMN
  if column not in table:
    return table
  table = table.loc[~table[column].isin(tuple(variants.CONTROLS))].reset_index(drop=True)
  if methods is None:
    return table.drop(columns=column)
  primary = variants.primary_method(methods["method"])
  return table.loc[table[column] == primary].drop(columns=column).reset_index(drop=True)


def _read_summary(path):
  name = outputs.SUMMARY_JSON
  if not path.exists():
    raise PieError(f"{path} is missing: is this the output folder of the analysis?")
  try:
    summary = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise PieError(f"{path} is not valid JSON: {e}") from e
  for key in outputs.SUMMARY_KEYS:
    if key not in summary:
      raise PieError(f"{name} has no key {key!r}")
  missing = [k for k in outputs.STUDY_KEYS if k not in summary["study"]]
  if missing:
    raise PieError(f"{name}: study lacks {', '.join(missing)}")
  study = summary["study"]
  if len(study["class_names"]) != int(study["num_classes"]):
    raise PieError(f"{name}: {len(study['class_names'])} class_names for num_classes={study['num_classes']}")
  if not isinstance(summary["levels"], list) or not summary["levels"]:
    raise PieError(f"{name}: levels must be a non-empty list")
  if summary.get("design", outputs.INDEPENDENT_DESIGN) not in outputs.DESIGNS:
    raise PieError(f"{name}: design {summary['design']!r} is not one of {', '.join(outputs.DESIGNS)}")
  for i, level in enumerate(summary["levels"]):
    missing = [k for k in outputs.LEVEL_KEYS if k not in level]
    if missing:
      raise PieError(f"{name}: levels[{i}] lacks {', '.join(missing)}")
    if level["role"] not in outputs.ROLES:
      raise PieError(f"{name}: levels[{i}] has role {level['role']!r}, expected one of {', '.join(outputs.ROLES)}")
  _check_noise_floor(summary.get("noise_floor"), name)
  return summary


def _check_noise_floor(floor, name):
  """The noise floor is optional (earlier analyses have none), but when present the report relies on its keys."""
  if floor is None:
    return
  missing = [k for k in outputs.NOISE_FLOOR_KEYS if k not in floor]
  if missing:
    raise PieError(f"{name}: noise_floor lacks {', '.join(missing)}: rerun the analysis")
  if floor["half_splits"] is not None:
    missing = [k for k in outputs.HALF_SPLITS_KEYS if k not in floor["half_splits"]]
    if missing:
      raise PieError(f"{name}: noise_floor.half_splits lacks {', '.join(missing)}: rerun the analysis")


def _levels_frame(summary):
  columns = outputs.LEVEL_KEYS + outputs.LEVEL_OPTIONAL
  levels = pd.DataFrame([{k: level.get(k) for k in columns} for level in summary["levels"]])
  for column in columns:
    if column != "role":
      levels[column] = pd.to_numeric(levels[column], errors="raise").astype(float)
  levels = levels.sort_values("sparsity", kind="stable").reset_index(drop=True)
  num_dense = int((levels["role"] == variants.DENSE).sum())
  if num_dense != 1:
    raise PieError(f"{outputs.SUMMARY_JSON}: expected exactly one level with role 'dense', found {num_dense}")
  if levels["sparsity"].diff().abs().lt(SPARSITY_TOLERANCE).any():
    raise PieError(f"{outputs.SUMMARY_JSON}: two levels share the same sparsity")
  return levels


def _read_table(directory, table, optional=(), with_method=True, may_be_empty=()):
  """A table of the contract: its required columns, the given optional ones and (with_method) the method column
  when the file has them, each parsed as its kind. Required text columns must not be empty, except `may_be_empty`
  (read as "")."""
  path = directory / table.name
  if not path.exists():
    raise PieError(f"{path} is missing: is this the output folder of the analysis?")
  wanted = table.required_names + tuple(optional) + ((outputs.METHOD_COLUMN,) if with_method else ())
  str_columns = [c for c in wanted if table.kind(c) == outputs.STR]
  # Names are kept as text ("1", "NA" and "None" are valid class names); only an empty field is missing.
  frame = pd.read_csv(path, dtype={c: str for c in str_columns}, keep_default_na=False, na_values=[""])
  missing = [c for c in table.required_names if c not in frame.columns]
  if missing:
    raise PieError(f"{path.name} lacks column(s) {', '.join(missing)}")
  frame = frame[[c for c in wanted if c in frame.columns]].copy()
  for column in frame.columns:
    kind = table.kind(column)
    if kind == outputs.INT:
      values = pd.to_numeric(frame[column], errors="coerce")
      if values.isna().any() or (values != np.round(values)).any():
        raise PieError(f"{path.name}: column {column} must hold integers")
      frame[column] = values.astype(np.int64)
    elif kind == outputs.FLOAT:
      values = pd.to_numeric(frame[column], errors="coerce")
      if (values.isna() & frame[column].notna()).any():
        raise PieError(f"{path.name}: column {column} must hold numbers")
      frame[column] = values.astype(float)
    elif kind == outputs.BOOL:
      frame[column] = _as_bool(frame[column], f"{path.name} column {column}")
    elif column in may_be_empty:
      frame[column] = frame[column].fillna("")
    elif column in table.required_names and frame[column].isna().any():
      raise PieError(f"{path.name}: column {column} has empty values")
  return frame


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
    raise PieError(f"{source} has rows but {outputs.SUMMARY_JSON} lists no pruned level")
  nearest = np.abs(values[:, None] - known[None, :]).argmin(axis=1)
  stray = np.abs(values - known[nearest]) > SPARSITY_TOLERANCE
  if stray.any():
    raise PieError(
        f"{source}: sparsity {values[stray][0]:g} is not one of the levels in {outputs.SUMMARY_JSON} "
        f"({', '.join(f'{k:g}' for k in known)})"
    )
  return known[nearest]


def _check_class_ids(values, num_classes, what):
  bad = (values < 0) | (values >= num_classes)
  if bad.any():
    raise PieError(f"{what}: class id {int(values[bad].iloc[0])} is outside 0..{num_classes - 1}")


def _check_values(values, allowed, what):
  bad = ~values.isin(allowed)
  if bad.any():
    raise PieError(f"{what}: {values[bad].iloc[0]!r} is not one of {', '.join(allowed)}")


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
  by_key = {
      (float(s), int(e)): row for s, e, row in zip(pies["sparsity"], pies["example_id"], pies.itertuples(index=False))
  }
  sparsities = _canonical_sparsity([r["sparsity"] for r in records], known, outputs.PIES_TFRECORD)
  images = {}
  for sparsity, record in zip(sparsities, records):
    key = (float(sparsity), record["example_id"])
    what = f"{outputs.PIES_TFRECORD}: example {record['example_id']} at sparsity {sparsity:g}"
    row = by_key.get(key)
    if row is None:
      raise PieError(f"{what} is not in {outputs.PIES_CSV}: the two files come from different runs")
    for name in ("label", "dense_modal", "pruned_modal"):
      if record[name] != getattr(row, name):
        raise PieError(f"{what} has {name}={record[name]} but {outputs.PIES_CSV} says {getattr(row, name)}")
    if key in images:
      raise PieError(f"{what} appears twice")
    width, height, channels = decode_png_size(record["image"], what)
    images[key] = PieImage(png=record["image"], width=width, height=height, channels=channels)
  return images
