"""A small but realistic analysis folder, written without training anything, for the report's tests.

The folder follows the analysis output contract exactly (summary.json, pies.csv, class_stats.csv, pie_accuracy.csv,
pies.tfrecord, robustness.csv). Its numbers are not made up one by one: populations of "models" are simulated as
per-example predictions on 400 real 8x8 digits from sklearn's load_digits, and every file is derived from those
predictions with the paper's rules (modal labels with ties broken toward the largest class id, PIEs where the dense and
pruned modal labels differ, Welch t-tests of recall normalized by the population's top-1). So the tables agree with
each other the way a real analysis's do, and tests can compare the report against them.

The simulation: each example has a difficulty, each class a vulnerability to pruning and a digit it is confused with.
A model predicts the true label with a probability that falls with difficulty, with sparsity and (for pruned models)
with the class's vulnerability; otherwise it usually predicts the confusable digit.
"""
import io
import json
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import stats  # noqa: E402

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CONFUSED_WITH = np.array([6, 7, 8, 5, 9, 3, 5, 1, 1, 7])
VULNERABILITY = np.array([0.0, 0.05, 0.02, 0.12, 0.0, 0.03, 0.0, 0.02, 0.25, 0.15])
LEVELS = (0.0, 0.5, 0.9)
NUM_MODELS = 8
NUM_EXAMPLES = 400
ALPHA = 0.05
CORRUPTIONS = ("contrast", "gaussian_noise", "motion_blur", "pixelate")
SEVERITIES = (1, 2, 3, 4, 5)


def _correct_probability(difficulty, labels, sparsity, pruned):
  base = 0.995 - difficulty * (0.55 + 0.5 * sparsity)
  if pruned:
    base = base - VULNERABILITY[labels] * (sparsity / 0.9) ** 2
  return np.clip(base, 0.02, 1.0)


def _simulate_population(rng, difficulty, labels, sparsity, pruned, num_models):
  """Top-1 predictions, shape (models, examples)."""
  p_correct = _correct_probability(difficulty, labels, sparsity, pruned)
  predictions = np.empty((num_models, len(labels)), dtype=np.int64)
  for m in range(num_models):
    correct = rng.random(len(labels)) < p_correct
    confused = rng.random(len(labels)) < 0.75
    other = (labels + rng.integers(1, 10, size=len(labels))) % 10
    wrong = np.where(confused, CONFUSED_WITH[labels], other)
    predictions[m] = np.where(correct, labels, wrong)
  return predictions


def modal_labels(predictions, num_classes):
  """Modal label per example (ties toward the largest class id), its vote share, and whether it was a tie."""
  counts = np.stack([(predictions == c).sum(axis=0) for c in range(num_classes)], axis=1)
  top = counts.max(axis=1)
  is_top = counts == top[:, None]
  modal = num_classes - 1 - np.argmax(is_top[:, ::-1], axis=1)
  return modal, top / predictions.shape[0], is_top.sum(axis=1) > 1


def _recalls(predictions, labels, num_classes):
  correct = predictions == labels[None, :]
  return np.stack([correct[:, labels == c].mean(axis=1) for c in range(num_classes)], axis=1)


def _png(image_uint8):
  buffer = io.BytesIO()
  Image.fromarray(image_uint8[:, :, 0] if image_uint8.shape[2] == 1 else image_uint8).save(buffer, format="PNG")
  return buffer.getvalue()


def _write_tfrecord(path, rows, images):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  def floats(v):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[v]))

  def ints(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

  with tf.io.TFRecordWriter(str(path)) as writer:
    for row in rows:
      feature = {"sparsity": floats(row["sparsity"]), "example_id": ints(row["example_id"]),
                 "label": ints(row["label"]), "dense_modal": ints(row["dense_modal"]),
                 "pruned_modal": ints(row["pruned_modal"]), "dense_modal_share": floats(row["dense_modal_share"]),
                 "pruned_modal_share": floats(row["pruned_modal_share"]),
                 "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(images[row["example_id"]])]))}
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _welch_ci(a, b, alpha):
  """Confidence interval of mean(b) - mean(a) with Welch's degrees of freedom."""
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = np.sqrt(va + vb)
  if se == 0:
    return np.nan, np.nan
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  half = stats.t.ppf(1 - alpha / 2, df) * se
  diff = b.mean() - a.mean()
  return diff - half, diff + half


def _hedges_g(a, b):
  na, nb = len(a), len(b)
  pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
  if pooled == 0:
    return np.nan
  return (b.mean() - a.mean()) / pooled * (1 - 3 / (4 * (na + nb) - 9))


def write_analysis_fixture(directory, images=True, robustness=True, optional_columns=True, seed=0):
  """Writes the analysis folder into `directory` (created if needed) and returns it as a Path.

  Args:
    images: write pies.tfrecord (the analysis can run without images).
    robustness: write robustness.csv (an optional feature of the analysis).
    optional_columns: include the optional columns (pie_stability; q_value, significant_fdr, ci_low, ci_high,
      hedges_g, note) and summary's num_significant_classes_fdr.
  """
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  digits = load_digits()
  chosen = np.sort(rng.choice(len(digits.target), size=NUM_EXAMPLES, replace=False))
  labels = digits.target[chosen].astype(np.int64)
  pixels = np.round(digits.images[chosen] * (255.0 / 16.0)).astype(np.uint8)[..., None]
  difficulty = rng.beta(0.6, 4.0, size=NUM_EXAMPLES)
  num_classes = len(CLASS_NAMES)

  predictions = {s: _simulate_population(rng, difficulty, labels, s, s > 0, NUM_MODELS) for s in LEVELS}
  top1 = {s: (predictions[s] == labels[None, :]).mean(axis=1) for s in LEVELS}
  modal = {s: modal_labels(predictions[s], num_classes) for s in LEVELS}
  recalls = {s: _recalls(predictions[s], labels, num_classes) for s in LEVELS}
  dense = LEVELS[0]

  pie_rows, class_rows, accuracy_rows, level_rows = [], [], [], []
  for sparsity in LEVELS:
    level = {"sparsity": sparsity, "role": "dense" if sparsity == 0 else "pruned", "num_models": NUM_MODELS,
             "top1_mean": float(top1[sparsity].mean()), "top1_std": float(top1[sparsity].std(ddof=1)),
             "measured_sparsity_mean": float(sparsity + rng.uniform(0, 0.002)) if sparsity else 0.0,
             "num_pies": None, "pie_fraction": None, "num_significant_classes": None, "num_ties_dense": None,
             "num_ties_pruned": None}
    if optional_columns:
      level["num_significant_classes_fdr"] = None
    level_rows.append(level)
    if sparsity == 0:
      continue
    d_modal, d_share, d_tie = modal[dense]
    p_modal, p_share, p_tie = modal[sparsity]
    is_pie = d_modal != p_modal
    # Stability: the share of bootstrap resamples of both populations' models in which the example is still a PIE.
    boot = np.zeros(NUM_EXAMPLES)
    for _ in range(40):
      bd = modal_labels(predictions[dense][rng.integers(0, NUM_MODELS, NUM_MODELS)], num_classes)[0]
      bp = modal_labels(predictions[sparsity][rng.integers(0, NUM_MODELS, NUM_MODELS)], num_classes)[0]
      boot += bd != bp
    boot /= 40
    for i in np.flatnonzero(is_pie):
      row = {"sparsity": sparsity, "example_id": int(i), "label": int(labels[i]), "dense_modal": int(d_modal[i]),
             "pruned_modal": int(p_modal[i]), "dense_modal_share": float(d_share[i]),
             "pruned_modal_share": float(p_share[i]), "modal_tie": bool(d_tie[i] or p_tie[i]),
             "label_name": CLASS_NAMES[labels[i]], "dense_modal_name": CLASS_NAMES[d_modal[i]],
             "pruned_modal_name": CLASS_NAMES[p_modal[i]]}
      if optional_columns:
        row["pie_stability"] = float(boot[i])
      pie_rows.append(row)

    overall_change = top1[sparsity].mean() - top1[dense].mean()
    p_values = []
    for c in range(num_classes):
      a = recalls[dense][:, c] - top1[dense].mean()
      b = recalls[sparsity][:, c] - top1[sparsity].mean()
      t, p = stats.ttest_ind(a, b, equal_var=False)
      change = recalls[sparsity][:, c].mean() - recalls[dense][:, c].mean()
      row = {"sparsity": sparsity, "class_id": c, "class_name": CLASS_NAMES[c],
             "num_examples": int((labels == c).sum()), "dense_recall_mean": float(recalls[dense][:, c].mean()),
             "pruned_recall_mean": float(recalls[sparsity][:, c].mean()), "recall_change": float(change),
             "normalized_change": float(change - overall_change), "t_statistic": float(t), "p_value": float(p),
             "significant": bool(p < ALPHA)}
      if optional_columns:
        low, high = _welch_ci(a, b, ALPHA)
        row.update(ci_low=float(low), ci_high=float(high), hedges_g=float(_hedges_g(a, b)),
                   note="" if np.isfinite(p) else "no variance in either population")
      p_values.append(p)
      class_rows.append(row)
    p_values = np.nan_to_num(np.array(p_values), nan=1.0)
    q_values = stats.false_discovery_control(p_values)
    if optional_columns:
      for row, q in zip(class_rows[-num_classes:], q_values):
        row.update(q_value=float(q), significant_fdr=bool(q < ALPHA))
      level["num_significant_classes_fdr"] = int((q_values < ALPHA).sum())
    level.update(num_pies=int(is_pie.sum()), pie_fraction=float(is_pie.mean()),
                 num_significant_classes=int((p_values < ALPHA).sum()), num_ties_dense=int(d_tie.sum()),
                 num_ties_pruned=int(p_tie.sum()))

    pies = np.flatnonzero(is_pie)
    random = rng.choice(NUM_EXAMPLES, size=len(pies), replace=False)
    non_pies = np.flatnonzero(~is_pie)
    for population, preds in (("dense", predictions[dense]), ("pruned", predictions[sparsity])):
      for subset, idx in (("pie", pies), ("random", random), ("non_pie", non_pies)):
        acc = (preds[:, idx] == labels[None, idx]).mean(axis=1)
        accuracy_rows.append({"sparsity": sparsity, "population": population, "subset": subset,
                              "num_examples": len(idx), "top1_mean": float(acc.mean()),
                              "top1_std": float(acc.std(ddof=1))})

  summary = {
      "study": {"name": "digits-cnn-fixture", "dataset": "sklearn_digits", "eval_split": "test",
                "num_classes": num_classes, "class_names": CLASS_NAMES, "num_examples": NUM_EXAMPLES,
                "model": "small_cnn", "config": {"seed": seed, "models_per_level": NUM_MODELS,
                                                 "sparsities": list(LEVELS[1:]), "optimizer": {"name": "adam",
                                                                                               "lr": 0.001}},
                "config_hash": "f1x7ure0"},
      "alpha": ALPHA, "tie_rule": "largest class id", "levels": level_rows}
  (directory / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
  pie_columns = ["sparsity", "example_id", "label", "dense_modal", "pruned_modal", "dense_modal_share",
                 "pruned_modal_share", "modal_tie", "label_name", "dense_modal_name", "pruned_modal_name"]
  if optional_columns:
    pie_columns.append("pie_stability")
  pd.DataFrame(pie_rows, columns=pie_columns).to_csv(directory / "pies.csv", index=False)
  class_columns = ["sparsity", "class_id", "class_name", "num_examples", "dense_recall_mean", "pruned_recall_mean",
                   "recall_change", "normalized_change", "t_statistic", "p_value", "significant"]
  if optional_columns:
    class_columns += ["q_value", "significant_fdr", "ci_low", "ci_high", "hedges_g", "note"]
  pd.DataFrame(class_rows, columns=class_columns).to_csv(directory / "class_stats.csv", index=False)
  pd.DataFrame(accuracy_rows).to_csv(directory / "pie_accuracy.csv", index=False)
  if images:
    _write_tfrecord(directory / "pies.tfrecord", pie_rows, pixels)
  if robustness:
    _robustness_frame(rng, top1).to_csv(directory / "robustness.csv", index=False)
  return directory


def _robustness_frame(rng, top1):
  """Per-model top-1 under corruptions: the drop grows with severity, more for pruned models; then Welch tests."""
  base_drop = {"contrast": 0.03, "gaussian_noise": 0.05, "motion_blur": 0.04, "pixelate": 0.015}
  dense_acc = {}
  for corruption in CORRUPTIONS:
    for severity in SEVERITIES:
      dense_acc[corruption, severity] = np.clip(
          top1[0.0] - base_drop[corruption] * severity + rng.normal(0, 0.01, NUM_MODELS), 0, 1)
  rows = []
  for sparsity in LEVELS[1:]:
    clean_d, clean_p = top1[0.0].mean(), top1[sparsity].mean()
    for corruption in CORRUPTIONS:
      for severity in SEVERITIES:
        extra = 1 + sparsity * (0.8 if corruption != "pixelate" else 0.05)
        pruned_acc = np.clip(top1[sparsity] - base_drop[corruption] * severity * extra
                             + rng.normal(0, 0.01, NUM_MODELS), 0, 1)
        d = dense_acc[corruption, severity]
        t, p = stats.ttest_ind(d - clean_d, pruned_acc - clean_p, equal_var=False)
        rows.append({"sparsity": sparsity, "corruption": corruption, "severity": severity,
                     "dense_top1_mean": d.mean(), "dense_top1_std": d.std(ddof=1),
                     "pruned_top1_mean": pruned_acc.mean(), "pruned_top1_std": pruned_acc.std(ddof=1),
                     "dense_drop": clean_d - d.mean(), "pruned_drop": clean_p - pruned_acc.mean(),
                     "relative_drop_dense": (clean_d - d.mean()) / clean_d,
                     "relative_drop_pruned": (clean_p - pruned_acc.mean()) / clean_p,
                     "t_statistic": t, "p_value": p, "significant": bool(p < ALPHA)})
  return pd.DataFrame(rows)
