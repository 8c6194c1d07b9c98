"""Beyond classes: what compression costs on slices of the eval split, and Fairlearn's view of the same numbers.

A slice is a subset of the eval examples:
  feature       the examples with one value of a slice feature (config.slice_features, exported beside the
                predictions: CelebA's `attributes/Male` = "true")
  intersection  the examples with one value of each of two slice features (`attributes/Male & attributes/Young` =
                "true & false"), for every pair of slice features
  class_group   the examples of a group of classes (config.class_groups: "dogs", "footwear", ...)

Each slice gets the class test of class_stats.csv (`pie.significance.subset_tests`: per-model accuracy on the slice
minus the model's top-1, Welch, Benjamini-Hochberg over every tested slice of a compared population, the interval and
Hedges' g) and its PIE rate. Everything comes from per-model per-slice hit counts and per-slice PIE counts, which add
up over blocks of examples, so `pie.beam_analysis` writes the same slice_stats.csv as `pie.analysis`.

Class groups come from a mapping {group name: [class ids or names]}, a JSON file holding one (or {"groups": {...}}),
or the name of a grouping shipped with pie (`SHIPPED_GROUPINGS`, in pie/class_groups/). `metric_frame` returns a
`fairlearn.metrics.MetricFrame` of each model's accuracy by slice (Fairlearn is an optional extra).
"""

import dataclasses
import functools
import itertools
import json
import os
import numpy as np
import pandas as pd

from pie import outputs
from pie import significance
from pie.errors import PieError

FEATURE, INTERSECTION, CLASS_GROUP = outputs.SLICE_KINDS
KINDS = outputs.SLICE_KINDS
# The slice_name of every class group's row (its slice_value is the group's name).
CLASS_GROUP_NAME = "class_group"
# Joins the two features of an intersection in slice_name, and their values in slice_value.
SEPARATOR = " & "
# Slices with fewer examples are reported but not tested (TFMA calls it the minimum slice size).
DEFAULT_MIN_SLICE_SIZE = 30
FAIRLEARN_HINT = "pip install -e '.[fairlearn]'"
# Groupings shipped with pie (pie/class_groups/<name>.json): how each was built is in its "description".
SHIPPED_GROUPINGS = ("imagenet2012_wordnet", "fashion_mnist", "digits")
_GROUPINGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "class_groups")


def shipped_grouping_path(name):
  return os.path.join(_GROUPINGS_DIR, f"{name}.json")


def _read_grouping_file(path, parameter):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gs:// paths)

  if not tf.io.gfile.exists(path):
    raise PieError(
        f"class groups {path!r}: no such file, and not a grouping shipped with pie ({', '.join(SHIPPED_GROUPINGS)})",
        parameter=parameter,
    )
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  except ValueError as e:
    raise PieError(f"class groups {path}: not valid JSON ({e})", parameter=parameter) from None


def load_class_groups(spec, class_names, parameter="class_groups"):
  """{group name: tuple of class ids} from config.class_groups; None when `spec` is empty.

  `spec` is a mapping {name: [class ids or class names]}, the path of a JSON file holding one (or {"groups": ...}),
  or a shipped grouping's name. A class id outside the study's classes or an unknown class name is one error line
  naming the group; groups may overlap (each is its own slice).
  """
  if spec is None or (isinstance(spec, (str, dict)) and not spec):
    return None
  where = spec if isinstance(spec, str) else "config.class_groups"
  if isinstance(spec, str):
    path = shipped_grouping_path(spec) if spec in SHIPPED_GROUPINGS else spec
    spec = _read_grouping_file(path, parameter)
  if not hasattr(spec, "items"):
    raise PieError(f"class groups {where}: a mapping from group name to classes, got {spec!r}", parameter=parameter)
  spec = dict(spec)
  if isinstance(spec.get("groups"), dict):
    expected = spec.get("num_classes")
    if expected is not None and expected != len(class_names):
      raise PieError(
          f"class groups {where}: made for {expected} classes ({spec.get('dataset', 'another dataset')}), the study "
          f"has {len(class_names)}",
          parameter=parameter,
      )
    spec = dict(spec["groups"])
  index = {name: i for i, name in enumerate(class_names)}
  groups = {}
  for name, members in spec.items():
    if isinstance(members, (str, int)) or not hasattr(members, "__iter__"):
      members = [members]
    ids = []
    for member in members:
      if isinstance(member, (int, np.integer)) and not isinstance(member, bool):
        if not 0 <= member < len(class_names):
          raise PieError(
              f"class groups {where}: group {name!r} names class {member}, outside 0..{len(class_names) - 1}",
              parameter=parameter,
          )
        ids.append(int(member))
      elif isinstance(member, str) and member in index:
        ids.append(index[member])
      else:
        raise PieError(
            f"class groups {where}: group {name!r} names {member!r}, not a class of the study (a class id or one "
            f"of its names: {', '.join(map(repr, class_names[:5]))}, ...)",
            parameter=parameter,
        )
    if not ids:
      raise PieError(f"class groups {where}: group {name!r} has no class", parameter=parameter)
    groups[str(name)] = tuple(sorted(set(ids)))
  return groups


@dataclasses.dataclass(frozen=True)
class Slice:
  """One slice: its row keys in slice_stats.csv and how its examples are found."""

  kind: str
  name: str
  value: str
  features: tuple = ()  # indices into the slice features (one for a feature slice, two for an intersection)
  codes: tuple = ()  # the value code of each of those features
  classes: tuple = ()  # the class ids of a class group


class SlicePlan:
  """Every slice of a study, in slice_stats.csv order: each feature's values, each pair's combinations, the groups.

  `slice_features` is the metadata's list ({"name", "kind", "values"}), `class_groups` the result of
  `load_class_groups` (or None). Feature values are those the export recorded, so a value without an example is a
  slice of size 0 (noted, not tested).
  """

  def __init__(self, slice_features, class_groups, num_classes):
    self.slice_features = list(slice_features or [])
    self.class_groups = dict(class_groups or {})
    self.num_classes = int(num_classes)
    slices = []
    for j, feature in enumerate(self.slice_features):
      slices += [Slice(FEATURE, feature["name"], value, (j,), (c,)) for c, value in enumerate(feature["values"])]
    for (j, first), (k, second) in itertools.combinations(enumerate(self.slice_features), 2):
      name = first["name"] + SEPARATOR + second["name"]
      for (c, v), (d, w) in itertools.product(enumerate(first["values"]), enumerate(second["values"])):
        slices.append(Slice(INTERSECTION, name, v + SEPARATOR + w, (j, k), (c, d)))
    for name, classes in self.class_groups.items():
      slices.append(Slice(CLASS_GROUP, CLASS_GROUP_NAME, name, classes=tuple(classes)))
    self.slices = slices

  def __len__(self):
    return len(self.slices)

  def membership(self, labels, slice_values):
    """bool [n_examples, n_slices]: which examples each slice holds (`slice_values`: int codes [n, features])."""
    labels = np.asarray(labels)
    slice_values = np.asarray(slice_values if slice_values is not None else np.zeros((len(labels), 0)), np.int64)
    out = np.ones((len(labels), len(self.slices)), bool)
    for s, item in enumerate(self.slices):
      for j, code in zip(item.features, item.codes):
        out[:, s] &= slice_values[:, j] == code
      if item.kind == CLASS_GROUP:
        in_group = np.zeros(self.num_classes, bool)
        in_group[list(item.classes)] = True
        out[:, s] &= in_group[labels]
    return out

  @staticmethod
  def pie_counts(pies, membership):
    """PIEs per slice, int64 [n_slices], from a level's PIE mask [n_examples] (they add up over blocks)."""
    return np.asarray(pies, np.int64) @ np.asarray(membership, np.int64)

  def hits(self, predictions, labels, slice_values):
    """Correct predictions per model and slice, int64 [n_models, n_slices] (`significance.subset_hits`)."""
    return significance.subset_hits(predictions, labels, self.membership(labels, slice_values))

  def keys(self):
    """The slice_kind, slice_name and slice_value columns."""
    return {
        "slice_kind": [s.kind for s in self.slices],
        "slice_name": [s.name for s in self.slices],
        "slice_value": [s.value for s in self.slices],
    }

  def summary(self, min_slice_size):
    """summary.json's `slices` (None when the study has no slice)."""
    if not self.slices:
      return None
    return {
        "features": [f["name"] for f in self.slice_features],
        "class_groups": {name: list(ids) for name, ids in self.class_groups.items()} or None,
        "num_slices": len(self.slices),
        "min_slice_size": int(min_slice_size),
    }


def check_min_slice_size(min_slice_size):
  if isinstance(min_slice_size, bool) or not isinstance(min_slice_size, (int, np.integer)) or min_slice_size < 1:
    raise PieError(f"min_slice_size must be an integer >= 1, got {min_slice_size!r}", parameter="min_slice_size")
  return int(min_slice_size)


def study_plan(study, class_groups=None):
  """The `SlicePlan` of a `pie.study.Study` or `StudyIndex`: its exported slice features and the class groups given
  (None: the study config's `class_groups`)."""
  spec = study.config.get("class_groups") if class_groups is None else class_groups
  groups = load_class_groups(spec, study.class_names)
  return SlicePlan(study.slice_features, groups, study.num_classes)


def slice_rows(
    plan,
    sparsity,
    dense_hits,
    pruned_hits,
    sizes,
    dense_top1,
    pruned_top1,
    slice_pies,
    alpha,
    normalization,
    min_slice_size,
):
  """slice_stats.csv rows of one compared population, from sums over examples (hits and PIEs per slice)."""
  tests = significance.subset_tests(
      dense_hits,
      pruned_hits,
      sizes,
      dense_top1,
      pruned_top1,
      alpha=alpha,
      normalization=normalization,
      min_size=min_slice_size,
  )
  sizes = np.asarray(sizes)
  slice_pies = np.asarray(slice_pies, np.int64)
  table = pd.DataFrame({"sparsity": sparsity, **plan.keys()})
  for column in outputs.SLICE_STATS.required_names[4:]:
    if column == "num_pies":
      table[column] = slice_pies
    elif column == "pie_rate":
      table[column] = np.where(sizes > 0, slice_pies / np.maximum(sizes, 1), np.nan)
    else:
      table[column] = tests[column].to_numpy()
  return table


def level_counts(table):
  """A compared population's slice counts for summary.json."""
  return {
      "num_slices_tested": int(table["p_value"].notna().sum()),
      "num_significant_slices": int(table["significant"].sum()),
      "num_significant_slices_fdr": int(table["significant_fdr"].sum()),
  }


def _import_fairlearn():
  try:
    from fairlearn import metrics  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise PieError(f"metric_frame needs Fairlearn, which is not installed ({e}): {FAIRLEARN_HINT}") from None
  return metrics


def _accuracy_of(column, y_true, y_pred):
  return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)[:, column]))


def metric_frame(study, level, feature, class_groups=None):
  """A `fairlearn.metrics.MetricFrame` of each model's accuracy (one metric per model) by slice.

  `level` picks a population as `study.predictions` does (a sparsity, or a (method, level) pair); `feature` is a
  slice feature name, a pair of them (their intersection), or `CLASS_GROUP_NAME` for the class groups (given, or
  the study config's), which must not overlap: the rows are then the examples of some group. `by_group` has one
  column per model; its mean over the models is slice_stats.csv's dense or pruned accuracy mean of the slice.
  """
  fairlearn_metrics = _import_fairlearn()
  names = [feature] if isinstance(feature, str) else list(feature)
  if not 1 <= len(names) <= 2:
    raise PieError(f"feature: one slice feature or a pair of them, got {feature!r}", parameter="feature")
  models = study.models(level)
  predictions = study.predictions(level)
  labels = np.asarray(study.labels)
  rows = np.arange(len(labels))
  sensitive = {}
  known = [f["name"] for f in study.slice_features]
  for name in names:
    if name == CLASS_GROUP_NAME:
      groups = load_class_groups(
          study.config.get("class_groups") if class_groups is None else class_groups, study.class_names
      )
      if not groups:
        raise PieError("the study has no class groups: give class_groups", parameter="class_groups")
      group_of = np.full(study.num_classes, None, dtype=object)
      for group, ids in groups.items():
        if any(group_of[i] is not None for i in ids):
          raise PieError(
              f"class groups overlap (group {group!r}): a MetricFrame needs one group per example",
              parameter="class_groups",
          )
        group_of[list(ids)] = group
      sensitive[name] = group_of[labels]
    elif name in known:
      j = known.index(name)
      sensitive[name] = np.asarray(study.slice_features[j]["values"], dtype=object)[study.slice_values[:, j]]
    else:
      raise PieError(
          f"feature {name!r} is not a slice feature of the study ({', '.join(known) or 'it exports none'}) nor "
          f"{CLASS_GROUP_NAME!r}",
          parameter="feature",
      )
  if CLASS_GROUP_NAME in names:
    rows = np.flatnonzero(sensitive[CLASS_GROUP_NAME] != None)  # noqa: E711  (an object array: elementwise)
  model_names = [m.name for m in models]
  return fairlearn_metrics.MetricFrame(
      metrics={name: functools.partial(_accuracy_of, i) for i, name in enumerate(model_names)},
      y_true=labels[rows],
      y_pred=predictions.T[rows],
      sensitive_features=pd.DataFrame({name: values[rows] for name, values in sensitive.items()}),
  )
