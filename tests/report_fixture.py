"""Analysis folders for the report's tests, written by the real analysis from simulated prediction files.

Nothing is trained and nothing in the folder is computed here: `pie.simulate.simulate_populations` draws the
populations' top-1 predictions with planted effects, tests/fake_study.py writes them as prediction files in the
export schema, and `pie.analysis.analyze_study` writes every file of the folder (pies.tfrecord included), so the tables
agree with each other exactly as a real analysis's do; robustness.csv is `pie.robustness.robustness_table` of
simulated predictions on corrupted copies of the eval set. Tests compare the report with these files.

The study: the 500 examples of the digits eval split (so that pies.tfrecord holds real 8x8 images), 10 classes; a
dense population, a dense replicate (the control of the noise floor) and magnitude-pruned populations at 50% and 90%
sparsity, 8 models each. Classes 3 and 8 lose more recall than the rest when pruned (planted, more at 90%), and 6% of
the examples are planted PIEs. The simulated examples of each class are put at eval images of that digit, so the
gallery shows digits under their labels, except for the few the class sizes leave over (the simulation's classes have
50 examples each, the split's 46 to 51).

Subgroups (slice_stats.csv): every file exports two slice features measured on the eval images themselves, `ink`
(heavy or light: total intensity above or below the split's median) and `weight` (top or bottom: the half of the
image with more ink), and the study config names the shipped `digits` class grouping (loops 0, 6, 8, 9; straight
strokes 1, 4, 7; open curves 2, 3, 5): the planted class 3 makes "open curves" lose more than the rest (class 8 is
diluted among the four loops).

The analysis runs once per test process; each call copies its folder.
"""

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import ml_collections

import pie
from pie import analysis
from pie import data as data_lib
from pie import outputs
from pie import robustness
from pie import simulate
from pie import variants
from tests import fake_study

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NUM_EXAMPLES = 500  # the digits eval split
NUM_MODELS = 8
LEVELS = (0.5, 0.9)
SEED = 0
# The method of the report's per-level view (`variants.primary_method` of this study).
REPORTED_METHOD = "magnitude"
IMPACTED_CLASSES = (3, 8)
# Per level: the drop of every class's expected recall, and the extra drop of the impacted classes.
ACCURACY_DROP = {0.5: 0.01, 0.9: 0.04}
CLASS_EFFECT = {0.5: -0.05, 0.9: -0.15}
# Corrupted sets: the dense population's expected top-1 falls by this much per severity step; the pruned one's falls
# more, in proportion to the sparsity, except under pixelate.
CORRUPTION_STEP = {"contrast": 0.02, "gaussian_noise": 0.03, "motion_blur": 0.025, "pixelate": 0.015}
SEVERITIES = (1, 2, 3, 4, 5)

_SIMULATION = dict(
    num_examples=NUM_EXAMPLES,
    num_classes=len(CLASS_NAMES),
    base_accuracy=0.85,
    easy_accuracy=0.92,
    hard_accuracy=0.15,
    seed=SEED,
)
SLICE_FEATURES = [
    {"name": "ink", "kind": "str", "values": ["heavy", "light"]},
    {"name": "weight", "kind": "str", "values": ["bottom", "top"]},
]
CLASS_GROUPS = "digits"
_CONFIG = {
    "name": "simulated-digits",
    "class_groups": CLASS_GROUPS,
    "model": {"name": "small_cnn"},
    "data": {
        "name": "digits",
        "train_split": "train",
        "eval_split": "test",
        "preprocess": "digits",
        "image_size": None,
    },
}
_CACHE = {}


def write_analysis_fixture(directory, images=True, robustness=True, optional_columns=True, levels=LEVELS):
  """Writes the analysis folder into `directory` (created if needed) and returns it as a Path.

  Args:
    images: keep pies.tfrecord (without it, the folder is what the analysis writes with --nopie_images).
    robustness: add robustness.csv (written by the robustness analysis).
    optional_columns: keep the controls and every optional column and key; without, the folder holds only what
      the output contract requires (pie/outputs.py: required columns and summary keys, no method column), as an
      earlier version of the analysis wrote it.
    levels: the pruned levels of the study, a subset of LEVELS; () for a study of dense models only.
  """
  source = _analysis(tuple(levels))
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  for path in source.iterdir():
    if path.name == outputs.PIES_TFRECORD and not images:
      continue
    if path.name == outputs.ROBUSTNESS_CSV and not robustness:
      continue
    shutil.copy(path, directory / path.name)
  if not optional_columns:
    _reduce_to_required(directory)
  return directory


def reported_rows(table):
  """The rows of an analysis table that the report's per-level sections show (those of the reported method)."""
  if outputs.METHOD_COLUMN not in table:
    return table
  return table.loc[table[outputs.METHOD_COLUMN] == REPORTED_METHOD]


def _analysis(levels):
  """The folder of the analysis (with images and robustness.csv) of the study with these pruned levels, made once."""
  if levels not in _CACHE:
    root = Path(tempfile.mkdtemp(prefix="pie-report-fixture-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    order = _write_study(root / "study", levels)
    study = pie.load_study(str(root / "study"), log=lambda message: None)
    out = root / "analysis"
    analysis.analyze_study(study, str(out), report=False, log=lambda message: None)
    if levels:
      clean_top1 = {s: study.top1_accuracy(s) for s in (0.0,) + levels}
      table = robustness.robustness_table(_corrupted_sets(study.labels, order, levels), clean_top1)
      text = robustness._csv_text(table)  # pylint: disable=protected-access  (how run_robustness writes it)
      (out / outputs.ROBUSTNESS_CSV).write_text(text, encoding="utf-8")
    _CACHE[levels] = out
  return _CACHE[levels]


def _write_study(study_dir, levels):
  """Writes the prediction files of the dense and replicate populations and of each pruned level; returns the order
  of the simulated examples in the study (`_example_order`)."""
  dense = order = None
  slices = (SLICE_FEATURES, slice_codes())
  for sparsity in levels or (None,):
    # One call per level with the same seed and settings but the level's effects: the labels, the planted PIEs and
    # the dense predictions depend only on the shared settings, so every level is compared with the same dense models.
    kwargs = (
        {}
        if sparsity is None
        else dict(
            accuracy_drop=ACCURACY_DROP[sparsity],
            impacted_classes=IMPACTED_CLASSES,
            class_effect=CLASS_EFFECT[sparsity],
        )
    )
    sim = simulate.simulate_populations(
        num_dense=2 * NUM_MODELS, num_pruned=NUM_MODELS, pie_fraction=0.06, **_SIMULATION, **kwargs
    )
    if dense is None:
      order = _example_order(sim.labels)
      dense, labels = sim.dense_predictions[:, order], sim.labels[order]
    elif not np.array_equal(sim.dense_predictions[:, order], dense):
      raise AssertionError(
          "simulate_populations drew other dense models for another level's effects: the report "
          "fixture needs one dense population for every level"
      )
    if sparsity is not None:
      for seed, top1 in enumerate(sim.pruned_predictions[:, order]):
        _write_model(study_dir, sparsity, seed, top1, labels, slices)
  # The first half of the simulated dense models is the dense population, the second its replicate (other seeds).
  for seed, top1 in enumerate(dense):
    method = None if seed < NUM_MODELS else variants.DENSE_REPLICATE
    _write_model(study_dir, 0.0, seed, top1, labels, slices, method=method)
  return order


def slice_codes():
  """The eval images' `ink` and `weight` codes (SLICE_FEATURES' value indices), int64 [500, 2]."""
  images = _digits_eval()[0].reshape(NUM_EXAMPLES, 8, 8).astype(np.float64)
  ink = images.sum(axis=(1, 2))
  top = images[:, :4].sum(axis=(1, 2)) > images[:, 4:].sum(axis=(1, 2))
  return np.stack([ink <= np.median(ink), top], axis=1).astype(np.int64)


def _digits_eval():
  return data_lib.load_dataset(ml_collections.ConfigDict(_CONFIG["data"])).eval_arrays()


def _example_order(simulated_labels):
  """`order` such that example i of the study is simulated example order[i], of the class of eval image i where the
  class sizes allow. Reordering examples changes no statistic: each example's predictions travel with it."""
  digits = _digits_eval()[1]
  order = np.empty(NUM_EXAMPLES, np.int64)
  unmatched_images, unmatched_examples = [], []
  for label in range(len(CLASS_NAMES)):
    images, examples = np.flatnonzero(digits == label), np.flatnonzero(simulated_labels == label)
    matched = min(len(images), len(examples))
    order[images[:matched]] = examples[:matched]
    unmatched_images += list(images[matched:])
    unmatched_examples += list(examples[matched:])
  order[unmatched_images] = unmatched_examples
  return order


def _write_model(study_dir, sparsity, seed, top1, labels, slices, method=None):
  fake_study.write_model(
      str(study_dir),
      sparsity,
      seed,
      top1,
      labels.astype(np.int64),
      len(CLASS_NAMES),
      method=method,
      slices=slices,
      class_names=CLASS_NAMES,
      config=_CONFIG,
  )


def _corrupted_sets(labels, order, levels):
  """Every model's predictions on each corrupted set, simulated with the study's labels (same seed, same order)."""
  results = []
  for corruption, step in CORRUPTION_STEP.items():
    extra = 0.0 if corruption == "pixelate" else step / 3
    for severity in SEVERITIES:
      accuracy = _SIMULATION["base_accuracy"] - step * severity
      predictions = {}
      for sparsity in levels:
        sim = simulate.simulate_populations(
            num_dense=NUM_MODELS,
            num_pruned=NUM_MODELS,
            accuracy_drop=ACCURACY_DROP[sparsity] + extra * severity * sparsity,
            **dict(_SIMULATION, base_accuracy=accuracy)
        )
        if not np.array_equal(sim.labels[order], labels):
          raise AssertionError("simulate_populations drew other labels for the same seed")
        predictions.setdefault(0.0, sim.dense_predictions[:, order])
        predictions[sparsity] = sim.pruned_predictions[:, order]
      results.append(robustness.SetResult(corruption, severity, labels, predictions))
  return results


def _reduce_to_required(directory):
  """Keeps only what the output contract requires: the reported rows' required columns, the required summary keys."""
  for table in (outputs.PIES, outputs.CLASS_STATS, outputs.PIE_ACCURACY):
    path = directory / table.name
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    reported_rows(frame)[list(table.required_names)].to_csv(path, index=False)
  path = directory / outputs.SUMMARY_JSON
  summary = json.loads(path.read_text(encoding="utf-8"))
  levels = [
      {key: level[key] for key in outputs.LEVEL_KEYS} for level in summary["levels"] if level["role"] != "control"
  ]
  study = {key: summary["study"][key] for key in outputs.STUDY_KEYS}
  summary = {key: summary[key] for key in outputs.SUMMARY_KEYS}
  path.write_text(json.dumps(dict(summary, study=study, levels=levels), indent=2), encoding="utf-8")
