"""Dataset features named by path: the label feature and the slice features exported beside the predictions.

A path indexes nested TFDS features with "/": CelebA's `attributes/Male` is the feature `Male` of the feature dict
`attributes`. A slice feature is a scalar feature of every eval example (a bool, a class label, an integer or a
text), exported as one small integer code per example: the index of its value in the feature's `values` (the
metadata's `slice_features`), so that every slice feature of every dataset is stored alike and the analysis never
needs the dataset. Bool features have the values ("false", "true"), class labels their names; integer and text
features the distinct values of the eval split, sorted.

TensorFlow Datasets is imported by the functions that need it, never at import time.
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np

from pie.errors import PieError

KINDS = ("bool", "class_label", "int", "str")
BOOL_VALUES = ("false", "true")


@dataclasses.dataclass(frozen=True)
class SliceFeature:
  """A scalar feature of a dataset, named by its path: its kind and, when the dataset declares them, its values."""

  name: str
  kind: str  # one of KINDS
  values: Optional[Sequence[str]] = None  # bool and class_label: known in advance; int and str: from the eval split


def check_paths(paths, parameter="slice_features"):
  """Slice feature paths from a config, as a tuple of distinct non-empty strings (one error line otherwise)."""
  if paths is None:
    return ()
  if isinstance(paths, str):
    paths = (paths,)
  paths = tuple(paths)
  bad = [p for p in paths if not isinstance(p, str) or not p.strip("/")]
  if bad:
    raise PieError(
        f"config.{parameter} must hold feature paths like 'attributes/Male', got {bad[0]!r}", parameter=parameter
    )
  if len(set(paths)) != len(paths):
    raise PieError(f"config.{parameter} names a feature twice: {list(paths)}", parameter=parameter)
  return paths


def _split(path):
  return [part for part in path.split("/") if part]


def resolve(features, path, dataset_name, parameter="slice_features"):
  """The TFDS feature at `path` in a (nested) FeaturesDict; a PieError that lists the names there otherwise."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  node, walked = features, []
  for part in _split(path):
    if not isinstance(node, tfds.features.FeaturesDict) or part not in node.keys():
      where = f"in {'/'.join(walked)!r}" if walked else "at the top"
      names = sorted(node.keys()) if isinstance(node, tfds.features.FeaturesDict) else []
      raise PieError(
          f"dataset {dataset_name!r} has no feature {path!r} (config.{parameter}): {where} it has "
          f"{', '.join(names) if names else 'no nested features'}",
          parameter=parameter,
      )
    node = node[part]
    walked.append(part)
  return node


def describe(feature, path, dataset_name, parameter="slice_features"):
  """A `SliceFeature` for a scalar TFDS feature; a PieError for anything else (images, nested dicts, sequences)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if isinstance(feature, tfds.features.ClassLabel):
    return SliceFeature(path, "class_label", tuple(feature.names))
  shape = tuple(getattr(feature, "shape", (None,)) or ())
  dtype = getattr(feature, "np_dtype", None)
  if isinstance(feature, tfds.features.Text) and not shape:
    return SliceFeature(path, "str")
  if isinstance(feature, tfds.features.Tensor) and not shape and dtype is not None:
    if dtype == np.bool_:
      return SliceFeature(path, "bool", BOOL_VALUES)
    if np.issubdtype(dtype, np.integer):
      return SliceFeature(path, "int")
  raise PieError(
      f"dataset {dataset_name!r}: feature {path!r} (config.{parameter}) is {type(feature).__name__} of shape "
      f"{shape}, not one value per example (a bool, a class label, an integer or a text)",
      parameter=parameter,
  )


def value_at(example, path):
  """The value at `path` in a nested example dict (as tf.data yields TFDS examples)."""
  for part in _split(path):
    example = example[part]
  return example


def encode(specs, columns, parameter="slice_features"):
  """Codes of the eval examples' values: (metadata list of {"name", "kind", "values"}, int64 codes [n, features]).

  `columns[j]` holds feature j's raw values of every example, in example order (bools, class ids, integers or bytes).
  Integer and text values are coded by their rank among the distinct values of the split; a class id outside the
  feature's names is a PieError.
  """
  metadata, codes = [], []
  for spec, values in zip(specs, columns):
    values = np.asarray(values)
    if spec.kind == "bool":
      names, code = list(BOOL_VALUES), values.astype(np.int64)
    elif spec.kind == "class_label":
      names, code = list(spec.values), values.astype(np.int64)
      if code.size and (code.min() < 0 or code.max() >= len(names)):
        raise PieError(f"feature {spec.name!r} holds class ids outside its {len(names)} names", parameter=parameter)
    elif spec.kind == "int":
      distinct, code = np.unique(values.astype(np.int64), return_inverse=True)
      names = [str(int(v)) for v in distinct]
    else:
      text = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.tolist()])
      distinct, code = np.unique(text, return_inverse=True) if text.size else (np.zeros(0, str), np.zeros(0, int))
      names = [str(v) for v in distinct]
    metadata.append({"name": spec.name, "kind": spec.kind, "values": names})
    codes.append(np.asarray(code, np.int64).reshape(-1))
  n = len(codes[0]) if codes else 0
  return metadata, (np.stack(codes, axis=1) if codes else np.zeros((n, 0), np.int64))


def label_names(spec, class_names, dataset_name):
  """The class names of a label feature: `class_names` (config.data.class_names) when given, else the feature's own
  (a bool feature `Blond_Hair` gives ("not Blond_Hair", "Blond_Hair"))."""
  leaf = _split(spec.name)[-1]
  own = {"bool": (f"not {leaf}", leaf), "class_label": tuple(spec.values or ())}.get(spec.kind)
  if class_names:
    class_names = tuple(str(c) for c in class_names)
    if own is not None and len(class_names) != len(own):
      raise PieError(
          f"dataset {dataset_name!r}: config.data.class_names has {len(class_names)} names, the label feature "
          f"{spec.name!r} has {len(own)} classes",
          parameter="class_names",
      )
    return class_names
  if own is None:
    raise PieError(
        f"dataset {dataset_name!r}: the label feature {spec.name!r} is {spec.kind}, whose classes are unknown: set "
        "config.data.class_names (one name per class id)",
        parameter="class_names",
    )
  return own
