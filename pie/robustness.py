"""Robustness of dense and pruned populations: common corruptions (ImageNet-C style) and ImageNet-A.

Every model of a study is scored on corrupted copies of its eval split, and the populations are compared per
sparsity level, corruption and severity: how much top-1 each population loses (the drop), whether the pruned
models lose significantly more than the dense ones (Welch t-test of the per-model drops, Benjamini-Hochberg over a
level's sets), how many examples change their modal label under the corruption (PIEs of the corrupted set), and an
mCE-style summary per level.

Where the corrupted images come from (`source`):
  * "on_the_fly": the study's eval split as the model sees it (its display images: resized and cropped, uint8,
    not normalized), scaled to [0, 1] and corrupted by `pie.corruptions.corrupt` with per-example seeds, then
    stored as uint8 and normalized exactly as in training. Works for every dataset, the embedded digits included.
  * "tfds": the authors' pre-built sets prepared by TFDS in the user's data_dir (never downloaded):
    `cifar10_corrupted/<name>_<severity>` for CIFAR-10 studies, `imagenet2012_corrupted/<name>_<severity>` for
    ImageNet studies.
With `imagenet_a=True`, ImageNet studies are also scored on TFDS `imagenet_a`: its labels live in the 1000-class
ImageNet label space but cover only 200 classes, so the logits are restricted to those 200 ids before the argmax,
as the dataset's authors score it.

Cost. Each corrupted set is computed (or read) ONCE and reused by every model; each model is loaded once and
predicts every set, so the work grows with models x examples x sets for inference but only with examples x sets
for corruption. Sets are kept in memory while their total stays under `memory_limit_bytes`
(DEFAULT_MEMORY_LIMIT_MB); beyond it, each further set is written as a uint8 `.npy` file under a cache folder and
memory-mapped (a 50,000-image ImageNet set at 224x224x3 is 7.5 GB; clean + 15 x 5 sets are 570 GB: prefer
`source="tfds"` there). The cache is deleted at the end unless kept.

Outputs (written atomically into the analysis folder; pie/outputs.py is their contract, docs/robustness.md describes
every column):
  robustness.csv           one row per pruned level x corruption x severity
  robustness_models.csv    per-model top-1 on every set, plus its clean top-1 (corruption "clean", severity 0)
  robustness_summary.json  per level: mCE, relative mCE, corruptions that hurt the pruned population more
"""

import dataclasses
import io
import os
import tempfile
import time
import uuid
from typing import Dict

import ml_collections
import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from pie import corruptions
from pie import data as data_lib
from pie import io_utils
from pie import names as names_lib
from pie import outputs
from pie import preprocess
from pie import significance
from pie import stats
from pie import study as study_lib
from pie import training
from pie import variants
from pie.errors import PieError

SOURCES = ("on_the_fly", "tfds")
IMAGENET_A = "imagenet_a"
CLEAN = "clean"
MODEL_FILE = "model.h5"
DEFAULT_MEMORY_LIMIT_MB = 2048
# Corruption work is done in chunks of about this many bytes of float32 images, so that memory stays bounded on
# ImageNet while small datasets are corrupted in one vectorized call.
_CORRUPT_CHUNK_BYTES = 64 * 2**20
# A model's predictions through this module must match its exported predictions on the clean set; below this
# agreement a warning is printed (it would mean the display/normalization path differs from training's).
CLEAN_AGREEMENT_WARNING = 0.999

# ImageNet-A's 200 classes as ids of the 1000-class ImageNet label space (sorted WordNet ids, the order of TFDS
# `imagenet2012` labels and of torchvision's ImageFolder). Source: the keys mapped to a class (value != -1) of
# `thousand_k_to_200` in eval.py of hendrycks/natural-adv-examples, the dataset's release. First and last:
# 6 = n01498041 (stingray), 988 = n12267677 (acorn).
IMAGENET_A_CLASS_IDS = (
    6,
    11,
    13,
    15,
    17,
    22,
    23,
    27,
    30,
    37,
    39,
    42,
    47,
    50,
    57,
    70,
    71,
    76,
    79,
    89,
    90,
    94,
    96,
    97,
    99,
    105,
    107,
    108,
    110,
    113,
    124,
    125,
    130,
    132,
    143,
    144,
    150,
    151,
    207,
    234,
    235,
    254,
    277,
    283,
    287,
    291,
    295,
    298,
    301,
    306,
    307,
    308,
    309,
    310,
    311,
    313,
    314,
    315,
    317,
    319,
    323,
    324,
    326,
    327,
    330,
    334,
    335,
    336,
    347,
    361,
    363,
    372,
    378,
    386,
    397,
    400,
    401,
    402,
    404,
    407,
    411,
    416,
    417,
    420,
    425,
    428,
    430,
    437,
    438,
    445,
    456,
    457,
    461,
    462,
    470,
    472,
    483,
    486,
    488,
    492,
    496,
    514,
    516,
    528,
    530,
    539,
    542,
    543,
    549,
    552,
    557,
    561,
    562,
    569,
    572,
    573,
    575,
    579,
    589,
    606,
    607,
    609,
    614,
    626,
    627,
    640,
    641,
    642,
    643,
    658,
    668,
    677,
    682,
    684,
    687,
    701,
    704,
    719,
    736,
    746,
    749,
    752,
    758,
    763,
    765,
    768,
    773,
    774,
    776,
    779,
    780,
    786,
    792,
    797,
    802,
    803,
    804,
    813,
    815,
    820,
    823,
    831,
    833,
    835,
    839,
    845,
    847,
    850,
    859,
    862,
    870,
    879,
    880,
    888,
    890,
    897,
    900,
    907,
    913,
    924,
    932,
    933,
    934,
    937,
    943,
    945,
    947,
    951,
    954,
    956,
    957,
    959,
    971,
    972,
    980,
    981,
    984,
    986,
    987,
    988,
)
IMAGENET_NUM_CLASSES = 1000


def _check_class_ids(ids, count, num_classes):
  ids = np.asarray(ids)
  if ids.ndim != 1 or len(ids) != count or len(np.unique(ids)) != count:
    raise ValueError(f"expected {count} distinct class ids, got {len(np.unique(ids))} distinct of {ids.size}")
  if ids.min() < 0 or ids.max() >= num_classes:
    raise ValueError(f"class ids must lie in [0, {num_classes}), got [{ids.min()}, {ids.max()}]")
  return ids


_check_class_ids(IMAGENET_A_CLASS_IDS, 200, IMAGENET_NUM_CLASSES)

# Pre-built TFDS corruption sets: per study dataset, the TFDS dataset, its eval split, how its images relate to the
# study's display images, and the TFDS names of corruptions that pie.corruptions names differently.
_TFDS_CORRUPTED = {
    "cifar10": {
        "name": "cifar10_corrupted",
        "split": "test",
        "images": "raw",
        "rename": {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"},
    },
    "imagenet2012": {
        "name": "imagenet2012_corrupted",
        "split": "validation",
        "images": "center_crop_224",
        "rename": {},
    },
}
_IMAGENET_A_SPLIT = "test"


# ----------------------------------------------------------------------------------------------------------------
# Pure functions on arrays


def restrict_argmax(logits, class_ids):
  """Top-1 among `class_ids` only, returned as ids of the full label space.

  Args:
    logits: float [n, num_classes].
    class_ids: int [k], distinct ids in [0, num_classes).

  Returns:
    int64 [n]: class_ids[argmax(logits[:, class_ids])]; ties go to the smallest listed id, as np.argmax does.
  """
  logits = np.asarray(logits)
  class_ids = np.asarray(class_ids, np.int64)
  if logits.ndim != 2:
    raise ValueError(f"logits must be [n, num_classes], got shape {logits.shape}")
  _check_class_ids(class_ids, len(class_ids), logits.shape[1])
  return class_ids[np.argmax(logits[:, class_ids], axis=1)]


def display_to_input(preprocess_name, images):
  """Model inputs from display images (uint8 as the model sees them at eval, before normalization).

  For each named preprocessing of pie.preprocess, eval preprocessing = normalization of the display image, so
  `display_to_input(name, display(raw)) == preprocess(raw, training=False)` (tests/test_robustness.py checks it).
  Works on one image or a batch.
  """
  return preprocess.normalize_display(preprocess_name, tf.convert_to_tensor(images))


def to_uint8(images):
  """Float images in [0, 1] to uint8 (rounded), the storage format of every image set here."""
  return np.clip(np.round(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


def _mean_std(values):
  values = np.asarray(values, float)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


# The one Benjamini-Hochberg implementation, importable here as before.
bh_q_values = significance.bh_q_values


@dataclasses.dataclass
class SetResult:
  """One evaluated image set: every model's top-1 labels on it, per sparsity level."""

  corruption: str  # a corruption name, "clean" or "imagenet_a"
  severity: int  # 1..5; 0 for clean and imagenet_a
  labels: np.ndarray  # int64 [n_examples]
  predictions: Dict[float, np.ndarray]  # sparsity -> int [n_models, n_examples], models in the study's order

  def top1(self, sparsity):
    return (self.predictions[sparsity] == self.labels).mean(axis=1)


def robustness_table(results, clean_top1, alpha=0.05):
  """robustness.csv: one row per pruned level x evaluated set (the "clean" set, if present, is skipped).

  Args:
    results: SetResults of the corrupted sets (and imagenet_a), each with predictions for every level.
    clean_top1: sparsity -> float [n_models], each model's top-1 on the clean eval split (same model order).
    alpha: significance level of the per-row Welch test.

  Returns:
    DataFrame with the columns of `outputs.ROBUSTNESS` (the report reads its required ones). Drops are clean
    minus corrupted top-1 (positive: the corruption costs accuracy), relative drops divide the mean drop by the
    population's mean clean top-1; t and p are the Welch test of the per-model drops,
    `pie.significance.welch_test(dense_drops, pruned_drops)` over every set of a level at once: equal to
    scipy.stats.ttest_ind(dense_drops, pruned_drops, equal_var=False) on a regular row, so t < 0 means the pruned
    models drop more, and the kernel's documented values on a degenerate one (drops constant and equal in both
    populations: t = 0, p = 1; constant and different: t = +-inf, exact permutation p; a single model: NaN).
    q-values are Benjamini-Hochberg over the rows of one level; significant_fdr is q <= alpha.
  """
  if not 0 < alpha < 1:
    raise PieError(f"alpha must be in (0, 1), got {alpha}", parameter="alpha")
  if 0.0 not in clean_top1:
    raise PieError("no dense population (sparsity 0) among the clean accuracies")
  dense_clean = np.asarray(clean_top1[0.0], float)
  rows = []
  for sparsity in sorted(s for s in clean_top1 if s > 0):
    pruned_clean = np.asarray(clean_top1[sparsity], float)
    level_rows, sets = [], []
    for result in results:
      if result.corruption == CLEAN:
        continue
      dense_acc, pruned_acc = result.top1(0.0), result.top1(sparsity)
      if len(dense_acc) != len(dense_clean) or len(pruned_acc) != len(pruned_clean):
        raise PieError(f"{result.corruption}/{result.severity}: model counts differ from the clean accuracies")
      sets.append((result, dense_acc, pruned_acc, dense_clean - dense_acc, pruned_clean - pruned_acc))
    if not sets:
      continue
    # The per-model drops of every set, [n_models, n_sets]: one vectorized test per level.
    dense_drops_all = np.stack([entry[3] for entry in sets], axis=1)
    pruned_drops_all = np.stack([entry[4] for entry in sets], axis=1)
    test = significance.welch_test(dense_drops_all, pruned_drops_all)
    significant = test.significant(alpha)
    q_values = significance.bh_q_values(test.p)
    significant_fdr = significance.bh_rejections(q_values, alpha)
    for j, (result, dense_acc, pruned_acc, dense_drops, pruned_drops) in enumerate(sets):
      p_value = float(test.p[j])
      pies = stats.find_pies(result.predictions[0.0], result.predictions[sparsity])
      dense_mean, dense_std = _mean_std(dense_acc)
      pruned_mean, pruned_std = _mean_std(pruned_acc)
      dense_drop, pruned_drop = float(dense_drops.mean()), float(pruned_drops.mean())
      level_rows.append(
          {
              "sparsity": sparsity,
              "corruption": result.corruption,
              "severity": int(result.severity),
              "dense_top1_mean": dense_mean,
              "dense_top1_std": dense_std,
              "pruned_top1_mean": pruned_mean,
              "pruned_top1_std": pruned_std,
              "dense_drop": dense_drop,
              "pruned_drop": pruned_drop,
              "relative_drop_dense": _ratio(dense_drop, dense_clean.mean()),
              "relative_drop_pruned": _ratio(pruned_drop, pruned_clean.mean()),
              "t_statistic": float(test.t[j]),
              "p_value": p_value,
              "significant": bool(significant[j]),
              "num_pies": int(pies.sum()),
              "pie_fraction": float(pies.mean()),
              "num_examples": int(len(result.labels)),
              "dense_clean_top1": float(dense_clean.mean()),
              "pruned_clean_top1": float(pruned_clean.mean()),
              "q_value": float(q_values[j]),
              "significant_fdr": bool(significant_fdr[j]),
          }
      )
    rows.extend(level_rows)
  return pd.DataFrame(rows, columns=list(outputs.ROBUSTNESS.columns()))


def _ratio(numerator, denominator):
  return float(numerator / denominator) if denominator else float("nan")


def corruption_errors(results, clean_top1):
  """mCE-style errors per level, relative to the dense population (Hendrycks & Dietterich's CE, with the dense
  population as the baseline model).

  For population P (mean top-1 over its models) and corruption c over the evaluated severities s:
    CE_c(P)          = sum_s err(P, c, s) / sum_s err(dense, c, s)
    relative CE_c(P) = sum_s [err(P, c, s) - err(P, clean)] / sum_s [err(dense, c, s) - err(dense, clean)]
  and mCE / relative mCE average them over corruptions. The dense population scores 1.0 by construction. A
  corruption whose denominator is not positive (the dense models never err on it, or it does not raise their error
  above the clean error) gives NaN there and is left out of that mean. imagenet_a and clean sets are not part of it.

  Returns:
    sparsity -> {"mce", "relative_mce", "ce": {corruption: CE}, "relative_ce": {corruption: relative CE},
                 "excluded_from_relative_mce": [...], "excluded_from_mce": [...]}.
  """
  corrupted = [r for r in results if r.corruption not in (CLEAN, IMAGENET_A)]
  names = list(dict.fromkeys(r.corruption for r in corrupted))
  clean_err = {s: 1.0 - float(np.mean(acc)) for s, acc in clean_top1.items()}
  summed, excess = {}, {}
  for sparsity in clean_top1:
    for name in names:
      errors = [1.0 - float(r.top1(sparsity).mean()) for r in corrupted if r.corruption == name]
      summed[sparsity, name] = float(np.sum(errors))
      excess[sparsity, name] = float(np.sum(errors) - len(errors) * clean_err[sparsity])
  out = {}
  for sparsity in sorted(clean_top1):
    ce = {n: summed[sparsity, n] / summed[0.0, n] if summed[0.0, n] > 0 else float("nan") for n in names}
    rel = {n: excess[sparsity, n] / excess[0.0, n] if excess[0.0, n] > 0 else float("nan") for n in names}
    ce_ok = [v for v in ce.values() if np.isfinite(v)]
    rel_ok = [v for v in rel.values() if np.isfinite(v)]
    out[sparsity] = {
        "mce": float(np.mean(ce_ok)) if ce_ok else float("nan"),
        "relative_mce": float(np.mean(rel_ok)) if rel_ok else float("nan"),
        "ce": ce,
        "relative_ce": rel,
        "excluded_from_mce": [n for n, v in ce.items() if not np.isfinite(v)],
        "excluded_from_relative_mce": [n for n, v in rel.items() if not np.isfinite(v)],
    }
  return out


def models_table(study, results):
  """robustness_models.csv: per model, its clean top-1 (from its exported predictions) and top-1 on every set."""
  rows = []
  for sparsity in sorted(study.levels):
    for i, record in enumerate(study.levels[sparsity]):
      rows.append(
          {
              "model": record.name,
              "sparsity": sparsity,
              "seed": record.seed,
              "corruption": CLEAN,
              "severity": 0,
              "top1": float(np.mean(record.top1 == study.labels)),
          }
      )
      for result in results:
        if result.corruption == CLEAN:
          continue
        rows.append(
            {
                "model": record.name,
                "sparsity": sparsity,
                "seed": record.seed,
                "corruption": result.corruption,
                "severity": int(result.severity),
                "top1": float(result.top1(sparsity)[i]),
            }
        )
  return pd.DataFrame(rows, columns=list(outputs.ROBUSTNESS_MODELS.columns()))


# ----------------------------------------------------------------------------------------------------------------
# Image sets: what to evaluate, where the images come from, where they are kept


@dataclasses.dataclass(frozen=True)
class SetSpec:
  corruption: str
  severity: int

  @property
  def key(self):
    return f"{self.corruption}_{self.severity}"


def plan_sets(corruption_names, severities, source, imagenet_a=False):
  """The image sets to evaluate, in order: "clean" first when corrupting on the fly, ImageNet-A last."""
  if source not in SOURCES:
    raise PieError(f"source must be one of {', '.join(SOURCES)}, got {source!r}", parameter="source")
  severities = [int(s) for s in severities]
  bad = [s for s in severities if s not in corruptions.SEVERITIES]
  if bad:
    raise PieError(f"severities must lie in 1..5, got {bad}", parameter="severities")
  if len(set(severities)) != len(severities) or len(set(corruption_names)) != len(corruption_names):
    raise PieError("corruption_names and severities must not repeat a value", parameter="severities")
  specs = [SetSpec(CLEAN, 0)] if source == "on_the_fly" and corruption_names else []
  specs += [SetSpec(c, s) for c in corruption_names for s in sorted(severities)]
  if imagenet_a:
    specs.append(SetSpec(IMAGENET_A, 0))
  if not specs:
    raise PieError(
        "nothing to evaluate: give at least one corruption (corruption_names) or imagenet_a=True",
        parameter="corruption_names",
    )
  return specs


def select_corruptions(names, num_channels, include_extra=False):
  """Validated corruption names: all that apply to images of `num_channels` channels when `names` is None."""
  applicable = corruptions.applicable_corruptions(int(num_channels), include_extra=True)
  if names is None:
    return list(corruptions.applicable_corruptions(int(num_channels), include_extra=include_extra))
  names = list(names)
  unknown = [n for n in names if n not in corruptions.ALL_CORRUPTIONS]
  if unknown:
    raise PieError(f"unknown corruption(s) {unknown}: choose from {', '.join(corruptions.ALL_CORRUPTIONS)}")
  inapplicable = [n for n in names if n not in applicable]
  if inapplicable:
    raise PieError(
        f"corruption(s) {inapplicable} do not apply to {num_channels}-channel images: choose from "
        f"{', '.join(applicable)}"
    )
  return names


class ImageStore:
  """uint8 image sets by key: in memory while their total stays under `memory_limit_bytes`, beyond it as `.npy`
  files under `cache_dir`, memory-mapped read-only. Each set is written to a temporary name and renamed."""

  def __init__(self, cache_dir, memory_limit_bytes):
    self.cache_dir = cache_dir
    self.memory_limit_bytes = int(memory_limit_bytes)
    self.memory_bytes = 0
    self.disk_bytes = 0
    self._arrays = {}
    self._pending = {}
    self._files = []  # the files this store wrote (only these are removed by close)
    self._made_dir = False

  def _on_disk(self, nbytes):
    return self.memory_bytes + nbytes > self.memory_limit_bytes

  def _path(self, key):
    return os.path.join(self.cache_dir, f"{key}.npy")

  def allocate(self, key, shape):
    """A writable uint8 array of `shape` for set `key`; call `commit(key)` when it is filled."""
    nbytes = int(np.prod(shape))
    if self._on_disk(nbytes):
      if not os.path.isdir(self.cache_dir):
        os.makedirs(self.cache_dir)
        self._made_dir = True
      tmp = f"{self._path(key)}.tmp-{os.getpid()}"
      array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=tuple(shape))
      self._pending[key] = tmp
    else:
      array = np.empty(shape, np.uint8)
    self._arrays[key] = array
    return array

  def commit(self, key):
    array = self._arrays[key]
    if key in self._pending:
      array.flush()
      del array
      self._arrays.pop(key)
      os.replace(self._pending.pop(key), self._path(key))
      self._files.append(self._path(key))
      self._arrays[key] = np.load(self._path(key), mmap_mode="r")
      self.disk_bytes += self._arrays[key].nbytes
    else:
      self.memory_bytes += array.nbytes

  def put(self, key, array):
    out = self.allocate(key, array.shape)
    out[...] = array
    self.commit(key)

  def get(self, key):
    return self._arrays[key]

  def close(self, remove_files=True):
    """Drops the sets; with remove_files, deletes the files written here (and the folder if made here and empty)."""
    self._arrays.clear()
    leftovers = list(self._pending.values())  # unfinished sets of a failed run
    self._pending.clear()
    for path in leftovers + (self._files if remove_files else []):
      if os.path.exists(path):
        os.remove(path)
    if remove_files:
      self._files = []
    if self._made_dir and os.path.isdir(self.cache_dir) and not os.listdir(self.cache_dir):
      os.rmdir(self.cache_dir)

  @property
  def mode(self):
    if self.disk_bytes and self.memory_bytes:
      return "memory+disk"
    return "disk" if self.disk_bytes else "memory"


def _resize_to(image, image_size):
  """A square center-cropped uint8 image resized to image_size (bicubic, antialiased, as ImageNet eval does)."""
  if not image_size:
    return image
  resized = tf.image.resize(image, [image_size, image_size], method="bicubic", antialias=True)
  return tf.cast(tf.clip_by_value(tf.math.round(resized), 0, 255), tf.uint8)


def _display_batches(dataset, to_display, batch_size):
  """(display uint8 images, labels) numpy batches of a dataset's eval split, in its fixed order."""
  ds = dataset.raw_eval()  # raw images: eval_batches would normalize them
  ds = ds.map(
      lambda ex: (to_display(ex["image"]), ex["label"]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  return ds.batch(batch_size).prefetch(2).as_numpy_iterator()


def _read_set(store, key, batches, num_examples=None):
  """Streams display batches into the store; returns the labels. With a known count, streams into a memmap."""
  labels, chunks, array, done = [], [], None, 0
  for images, batch_labels in batches:
    labels.append(np.asarray(batch_labels, np.int64))
    if num_examples:
      if array is None:
        array = store.allocate(key, (num_examples, *images.shape[1:]))
      if done + len(images) > num_examples:
        raise PieError(f"{key}: more than the {num_examples} examples its split should hold")
      array[done : done + len(images)] = images
    else:
      chunks.append(images)
    done += len(images)
  if not done:
    raise PieError(f"{key}: the split holds no example")
  if num_examples:
    if done != num_examples:
      raise PieError(f"{key}: {done} examples read, {num_examples} expected")
    store.commit(key)
  else:
    store.put(key, np.concatenate(chunks))
  return np.concatenate(labels)


def corrupt_set(display_images, corruption, severity, seed, out):
  """Corrupts uint8 display images into `out` (uint8, same shape), in chunks; example ids are positions.

  `pie.corruptions` seeds every image from (seed, corruption, example id), so the result does not depend on the
  chunking and the severities of one image are nested.
  """
  n = len(display_images)
  per_image = int(np.prod(display_images.shape[1:])) * 4
  chunk = max(1, _CORRUPT_CHUNK_BYTES // per_image)
  for start in range(0, n, chunk):
    stop = min(n, start + chunk)
    images = np.asarray(display_images[start:stop], np.float32) / 255.0
    corrupted = corruptions.corrupt(images, corruption, severity, seed=seed, example_ids=np.arange(start, stop))
    out[start:stop] = to_uint8(corrupted)
  return out


def _data_config(study, data_dir):
  if "data" not in study.config:
    raise PieError(
        f"{study.study_dir}: the models' metadata holds no training config with a 'data' section; "
        "re-export them with train/export.py"
    )
  data_config = ml_collections.ConfigDict(study.config["data"])
  with data_config.unlocked():
    if data_dir:
      data_config.data_dir = data_dir
    data_config.download = False  # read what the user has; never download
  return data_config


def _tfds_set_config(data_config, name, split):
  config = ml_collections.ConfigDict(data_config.to_dict())
  with config.unlocked():
    config.name, config.eval_split, config.train_split = name, split, split
    config.image_key, config.label_key = "image", "label"
  return config


def build_sets(study, specs, store, source="on_the_fly", seed=0, data_dir=None, batch_size=256, log=print):
  """Computes or reads every set of `specs` once into `store` (uint8 display images); returns {set key: labels}.

  Sets are built in order: the on-the-fly corruptions start from the "clean" set, which `plan_sets` puts first.
  """
  data_config = _data_config(study, data_dir)
  image_size = data_config.get("image_size")
  display = preprocess.get_display(data_config.preprocess)
  labels = {}
  start = time.time()
  for spec in specs:
    if spec.corruption == CLEAN:
      dataset = data_lib.load_dataset(data_config)
      batches = _display_batches(dataset, lambda im: display(im, image_size=image_size), batch_size)
      labels[spec.key] = _read_set(store, spec.key, batches, study.num_examples)
      if not np.array_equal(labels[spec.key], study.labels):
        raise PieError(
            f"the eval split {data_config.name}/{data_config.eval_split} read now has other labels "
            "than the study's predictions: it is not the split the models predicted"
        )
    elif spec.corruption == IMAGENET_A:
      if study.num_classes != IMAGENET_NUM_CLASSES:
        raise PieError(
            f"imagenet_a needs a study of 1000-class ImageNet models; this one has "
            f"{study.num_classes} classes ({study.dataset})"
        )
      dataset = data_lib.load_dataset(_tfds_set_config(data_config, IMAGENET_A, _IMAGENET_A_SPLIT))
      batches = _display_batches(dataset, lambda im: display(im, image_size=image_size), batch_size)
      labels[spec.key] = _read_set(store, spec.key, batches, dataset.info.num_eval)
      outside = ~np.isin(labels[spec.key], IMAGENET_A_CLASS_IDS)
      if outside.any():
        raise PieError(
            f"imagenet_a: {int(outside.sum())} labels are not among ImageNet-A's 200 class ids "
            f"(e.g. {sorted(set(labels[spec.key][outside].tolist()))[:5]}): the labels must be in the "
            "1000-class ImageNet label space, as TFDS imagenet_a stores them"
        )
    elif source == "on_the_fly":
      clean = store.get(SetSpec(CLEAN, 0).key)
      out = store.allocate(spec.key, clean.shape)
      corrupt_set(clean, spec.corruption, spec.severity, seed, out)
      store.commit(spec.key)
      labels[spec.key] = labels[SetSpec(CLEAN, 0).key]
    else:
      entry = _TFDS_CORRUPTED.get(data_config.name)
      if entry is None:
        raise PieError(
            f"source 'tfds': no pre-built corrupted version of {data_config.name!r} is known (known: "
            f"{', '.join(sorted(_TFDS_CORRUPTED))}); use source 'on_the_fly'",
            parameter="source",
        )
      tfds_name = f"{entry['name']}/{entry['rename'].get(spec.corruption, spec.corruption)}_{spec.severity}"
      dataset = data_lib.load_dataset(_tfds_set_config(data_config, tfds_name, entry["split"]))
      if entry["images"] == "raw":
        to_display = lambda im: display(im, image_size=image_size)  # noqa: E731
      else:  # already the central crop at 224x224: only the size may differ from the study's
        to_display = lambda im: im if image_size in (None, 224) else _resize_to(im, image_size)  # noqa: E731
      labels[spec.key] = _read_set(
          store, spec.key, _display_batches(dataset, to_display, batch_size), dataset.info.num_eval
      )
    log(
        f"sets done {len(labels)}/{len(specs)} ({spec.key}, {len(labels[spec.key])} examples) "
        f"[{time.time() - start:.1f}s]"
    )
  return labels


# ----------------------------------------------------------------------------------------------------------------
# Models


def model_files(study):
  """The saved model of every model of the study: (sparsity, index, ModelRecord, path), or a PieError."""
  found, missing = [], []
  for sparsity in sorted(study.levels):
    for i, record in enumerate(study.levels[sparsity]):
      path = os.path.join(os.path.dirname(record.path), MODEL_FILE)
      (found if tf.io.gfile.exists(path) else missing).append((sparsity, i, record, path))
  if missing:
    folders = sorted({os.path.dirname(m[3]) for m in missing})
    raise PieError(
        f"{study.study_dir or 'the study'}: {len(missing)} of {len(missing) + len(found)} models have "
        f"no saved {MODEL_FILE} beside their predictions (e.g. in {folders[0]}); robustness needs each "
        "model, as train/population.py saves it in the model's folder"
    )
  return found


def _predict_fn(model, preprocess_name):
  @tf.function(reduce_retracing=True)
  def logits_of(images):
    return tf.cast(model(display_to_input(preprocess_name, images), training=False), tf.float32)

  return logits_of


def predict_top1(logits_of, images, batch_size, class_ids=None):
  """Top-1 labels of uint8 display images (an array or memmap), batch by batch; restricted to class_ids if given."""
  out = []
  for start in range(0, len(images), batch_size):
    logits = logits_of(np.asarray(images[start : start + batch_size])).numpy()
    out.append(restrict_argmax(logits, class_ids) if class_ids is not None else np.argmax(logits, axis=1))
  return np.concatenate(out)


def evaluate_models(study, specs, store, labels, batch_size=256, log=print):
  """Loads each model once and predicts every set; returns SetResults and the clean-path agreement per model."""
  files = model_files(study)
  preprocess_name = study.config["data"]["preprocess"]
  dtype = np.int16 if study.num_classes < 2**15 else np.int32
  predictions = {
      spec.key: {s: np.zeros((len(m), len(labels[spec.key])), dtype) for s, m in study.levels.items()} for spec in specs
  }
  agreement = {}
  start = time.time()
  for done, (sparsity, i, record, path) in enumerate(files, 1):
    model = training.load_model(path)
    if int(model.output_shape[-1]) != study.num_classes:
      raise PieError(f"{path}: the model has {model.output_shape[-1]} outputs, the study {study.num_classes} classes")
    logits_of = _predict_fn(model, preprocess_name)
    last_log = time.time()
    for j, spec in enumerate(specs, 1):
      class_ids = IMAGENET_A_CLASS_IDS if spec.corruption == IMAGENET_A else None
      predictions[spec.key][sparsity][i] = predict_top1(logits_of, store.get(spec.key), batch_size, class_ids)
      if time.time() - last_log > 30:
        last_log = time.time()
        log(f"  {record.name}: sets predicted {j}/{len(specs)} [{time.time() - start:.1f}s]")
    if SetSpec(CLEAN, 0).key in predictions:
      agreement[record.name] = float(np.mean(predictions[SetSpec(CLEAN, 0).key][sparsity][i] == record.top1))
    keras.backend.clear_session()
    log(f"models done {done}/{len(files)} ({record.name}) [{time.time() - start:.1f}s]")
  results = [SetResult(spec.corruption, spec.severity, labels[spec.key], predictions[spec.key]) for spec in specs]
  return results, agreement


# ----------------------------------------------------------------------------------------------------------------
# The whole run


def _csv_text(frame):
  buffer = io.StringIO()
  frame.to_csv(buffer, index=False, float_format="%.6g")
  return buffer.getvalue()


def _nan_to_none(value):
  if isinstance(value, dict):
    return {k: _nan_to_none(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_nan_to_none(v) for v in value]
  if isinstance(value, float) and not np.isfinite(value):
    return None
  return value


def summarize(study, results, table, clean_top1, alpha, settings):
  """robustness_summary.json: per level its mCE, relative mCE, ImageNet-A top-1 and the corruptions that hurt the
  pruned population more than the dense one (a larger pruned drop): significantly, after Benjamini-Hochberg over the
  level's corruption x severity rows (q <= alpha: `corruptions_hurt_more_fdr`, `num_hurt_more_fdr`), and at p < alpha
  uncorrected, the paper's rule (`hurt_more_than_dense`, each row with its `significant_fdr`;
  `corruptions_hurt_more`, `num_hurt_more`)."""
  errors = corruption_errors(results, clean_top1)
  levels = []
  for sparsity in sorted(study.levels):
    entry = {
        "sparsity": sparsity,
        "role": variants.DENSE if sparsity == 0 else "pruned",
        "num_models": len(study.levels[sparsity]),
        "models": [m.name for m in study.levels[sparsity]],
        "clean_top1_mean": float(np.mean(clean_top1[sparsity])),
        **errors[sparsity],
    }
    for result in results:
      if result.corruption == IMAGENET_A:
        entry["imagenet_a_top1_mean"] = float(result.top1(sparsity).mean())
    if sparsity > 0:
      rows = table[table["sparsity"] == sparsity]
      worse = rows[rows["significant"] & (rows["pruned_drop"] > rows["dense_drop"])]
      entry["hurt_more_than_dense"] = [
          {
              "corruption": r.corruption,
              "severity": int(r.severity),
              "dense_drop": r.dense_drop,
              "pruned_drop": r.pruned_drop,
              "p_value": r.p_value,
              "q_value": r.q_value,
              "significant_fdr": bool(r.significant_fdr),
          }
          for r in worse.itertuples(index=False)
      ]
      entry["corruptions_hurt_more"] = sorted(set(worse["corruption"]))
      entry["corruptions_hurt_more_fdr"] = sorted(set(worse[worse["significant_fdr"]]["corruption"]))
      entry["num_hurt_more"] = int(len(worse))
      entry["num_hurt_more_fdr"] = int(worse["significant_fdr"].sum())
    levels.append(entry)
  summary = {
      "study": {
          "dataset": study.dataset,
          "eval_split": study.split,
          "num_classes": study.num_classes,
          "num_examples": study.num_examples,
          "study_dir": study.study_dir,
          "config_hash": study.config_hash,
      },
      "alpha": alpha,
      "sets": [
          {"corruption": r.corruption, "severity": int(r.severity), "num_examples": int(len(r.labels))} for r in results
      ],
      "levels": levels,
      **settings,
  }
  return _nan_to_none(summary)


def write_outputs(out_dir, study, results, table, summary):
  """Writes `outputs.ROBUSTNESS_FILES` into out_dir, each atomically: `table` (robustness_table), the per-model
  table of `results`, and `summary` (summarize). Model names are written exactly: these are tables for programs."""
  io_utils.makedirs(out_dir)
  io_utils.write_text(os.path.join(out_dir, outputs.ROBUSTNESS_CSV), _csv_text(table))
  io_utils.write_text(os.path.join(out_dir, outputs.ROBUSTNESS_MODELS_CSV), _csv_text(models_table(study, results)))
  io_utils.write_json(os.path.join(out_dir, outputs.ROBUSTNESS_SUMMARY_JSON), summary)


def default_cache_dir(out_dir):
  """`<out_dir>/corrupted_cache` for a local out_dir; for a remote one (memmaps need a local file system) a folder
  in the local temporary directory. Only created if a set goes to disk."""
  if "://" in out_dir:
    return os.path.join(tempfile.gettempdir(), f"pie-robustness-{uuid.uuid4().hex[:8]}")
  return os.path.join(out_dir, "corrupted_cache")


@dataclasses.dataclass(frozen=True)
class RobustnessOptions:
  """The settings of a robustness analysis, checked when made (a PieError names the field).

  corruption_names: names from pie.corruptions; None = every applicable one (the 15 benchmark corruptions, plus the
    4 extra ones with include_extra); [] = none (e.g. only ImageNet-A).
  severities: subset of 1..5.
  source: "on_the_fly" (pie.corruptions on the display images) or "tfds" (pre-built sets in data_dir).
  imagenet_a: also score TFDS imagenet_a (ImageNet studies only), restricted to its 200 classes.
  seed: seed of the on-the-fly corruptions (with each example's position).
  alpha: significance level (a row is significant when q <= alpha).
  data_dir: TFDS data_dir to read from (default: the study's config.data.data_dir).
  batch_size: inference batch size (default: the study's eval_batch_size).
  memory_limit_mb: image sets are kept in memory up to this total; further ones are memory-mapped files.
  cache_dir: where those files go (default: default_cache_dir(out_dir)); removed at the end unless keep_cache.
  """

  corruption_names: object = None
  severities: tuple = tuple(corruptions.SEVERITIES)
  source: str = "on_the_fly"
  imagenet_a: bool = False
  include_extra: bool = False
  seed: int = 0
  alpha: float = 0.05
  data_dir: object = None
  batch_size: object = None
  memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
  cache_dir: object = None
  keep_cache: bool = False

  def __post_init__(self):
    if not 0 < self.alpha < 1:
      raise PieError(f"alpha must be in (0, 1), got {self.alpha}", parameter="alpha")
    if isinstance(self.seed, bool) or int(self.seed) != self.seed or self.seed < 0:
      raise PieError(f"seed must be a non-negative integer, got {self.seed}", parameter="seed")
    if self.memory_limit_mb < 0:
      raise PieError(f"memory_limit_mb must be >= 0, got {self.memory_limit_mb}", parameter="memory_limit_mb")
    if self.batch_size is not None and int(self.batch_size) < 1:
      raise PieError(f"batch_size must be positive, got {self.batch_size}", parameter="batch_size")

  @classmethod
  def of(cls, options=None, **fields):
    """`options` (None: the defaults) with the given fields replaced (`run_robustness(study, out, seed=3)`)."""
    unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(cls)})
    if unknown:
      raise TypeError(f"unknown robustness option(s) {', '.join(unknown)}")
    return dataclasses.replace(options or cls(), **fields)


def run(study_dir, out_dir=None, options=None, allow_mixed_configs=False, log=print, **fields):
  """The robustness analysis of a study directory (what `python -m analysis.robustness` runs): loads the study, writes
  `outputs.ROBUSTNESS_FILES` into `out_dir` (default <study_dir>/analysis) and, when the analysis has run there,
  rebuilds its report with the robustness section. Returns (out_dir, summary)."""
  options = RobustnessOptions.of(options, **fields)
  out_dir = (
      names_lib.resolve_path(out_dir, "out_dir")
      if out_dir
      else os.path.join(names_lib.resolve_path(study_dir, "study_dir"), "analysis")
  )
  study = study_lib.load_study(study_dir, allow_mixed_configs=allow_mixed_configs, log=log)
  summary = run_robustness(study, out_dir, options, log=log)
  if tf.io.gfile.exists(os.path.join(out_dir, outputs.SUMMARY_JSON)):
    from pie import report  # pylint: disable=g-import-not-at-top

    log(f"report: {report.write_report(out_dir)}")
  return out_dir, summary


def run_robustness(study, out_dir, options=None, log=print, **fields):
  """Evaluates every model of `study` (a loaded pie.study.Study whose model folders hold model.h5) on the sets the
  `RobustnessOptions` name (or its fields as keywords) and writes `outputs.ROBUSTNESS_FILES` into `out_dir` (local or
  any tf.io.gfile path). Returns the summary dict (also written as robustness_summary.json)."""
  start = time.time()
  options = RobustnessOptions.of(options, **fields)
  out_dir = names_lib.resolve_path(out_dir, "out_dir")
  cache_dir = names_lib.resolve_path(options.cache_dir, "cache_dir") if options.cache_dir else None
  files = model_files(study)  # fail before any expensive work
  batch_size = int(options.batch_size or study.config.get("eval_batch_size", 256))
  data_config = _data_config(study, options.data_dir)
  channels = 3 if data_config.preprocess == "imagenet" else training.load_model(files[0][3]).input_shape[-1]
  names = select_corruptions(options.corruption_names, channels, include_extra=options.include_extra)
  specs = plan_sets(names, options.severities, options.source, imagenet_a=options.imagenet_a)
  log(
      f"robustness: {len(files)} models x {len(specs)} sets ({options.source}; corruptions: "
      f"{', '.join(names) or 'none'}; severities: {', '.join(map(str, sorted(options.severities))) if names else '-'}"
      f"{'; imagenet_a' if options.imagenet_a else ''})"
  )
  store = ImageStore(cache_dir or default_cache_dir(out_dir), int(options.memory_limit_mb * 2**20))
  try:
    labels = build_sets(
        study,
        specs,
        store,
        source=options.source,
        seed=int(options.seed),
        data_dir=options.data_dir,
        batch_size=batch_size,
        log=log,
    )
    results, agreement = evaluate_models(study, specs, store, labels, batch_size=batch_size, log=log)
    cache = {
        "mode": store.mode,
        "memory_bytes": store.memory_bytes,
        "disk_bytes": store.disk_bytes,
        "memory_limit_bytes": store.memory_limit_bytes,
        "cache_dir": store.cache_dir if store.disk_bytes else None,
    }
  finally:
    store.close(remove_files=not options.keep_cache)
  settings = {
      "source": options.source,
      "seed": int(options.seed),
      "severities": sorted(int(s) for s in options.severities),
      "corruptions": names,
      "imagenet_a": bool(options.imagenet_a),
      "imagenet_a_class_ids": "IMAGENET_A_CLASS_IDS of pie.robustness (200 ids)" if options.imagenet_a else None,
      "cache": cache,
      "batch_size": batch_size,
  }
  summary = _summarize_and_write(study, out_dir, results, agreement, settings, options.alpha, start, log)
  log(f"robustness: done in {time.time() - start:.1f}s")
  return summary


def _summarize_and_write(study, out_dir, results, agreement, settings, alpha, start, log):
  """The tables and robustness_summary.json of the evaluated models, written; each level's headline logged."""
  low = {name: a for name, a in agreement.items() if a < CLEAN_AGREEMENT_WARNING}
  for name, a in sorted(low.items()):
    log(
        f"warning: {name}: its predictions on the clean display images agree with its exported predictions on "
        f"only {a:.2%} of the examples; the corrupted sets may not be preprocessed as in training"
    )
  clean_top1 = {s: np.array([np.mean(m.top1 == study.labels) for m in study.levels[s]]) for s in study.levels}
  table = robustness_table(results, clean_top1, alpha=alpha)
  settings = {
      **settings,
      "clean_check": {"min_agreement": min(agreement.values()), "models_below_warning": sorted(low)}
      if agreement
      else None,
      "wall_seconds": round(time.time() - start, 2),
  }
  summary = summarize(study, results, table, clean_top1, alpha, settings)
  write_outputs(out_dir, study, results, table, summary)
  for entry in summary["levels"]:
    if entry["sparsity"] > 0:
      log(level_headline(entry, alpha))
  return summary


def level_headline(entry, alpha):
  """The printed line of a pruned level of robustness_summary.json: its mCE, then the corruptions that hurt it
  significantly more than the dense population (q <= alpha), then the uncorrected ones (p < alpha, the paper's
  rule)."""
  mce, relative = entry["mce"], entry["relative_mce"]
  return (
      f"level {entry['sparsity']:g}: mCE {mce if mce is None else round(mce, 4)}, relative mCE "
      f"{relative if relative is None else round(relative, 4)}; significantly hurt more than dense (q <= {alpha:g} "
      f"after FDR): {', '.join(entry['corruptions_hurt_more_fdr']) or 'none'}; uncorrected (p < {alpha:g}, the "
      f"paper's rule): {', '.join(entry['corruptions_hurt_more']) or 'none'}"
  )
