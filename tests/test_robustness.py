"""Robustness of dense vs pruned populations: the binary end to end on a tiny trained study, the corrupted sets
computed once, the display -> model input path, ImageNet-A's 200-class scoring and the pre-built TFDS sets (mocked).
"""

import json
import types
import os
import shutil

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_datasets as tfds
import tf_keras as keras

from pie import corruptions
from pie import model_dir
from pie import preprocess
from pie import robustness
from pie import significance
from pie import study as study_lib
from pie.errors import PieError
from tests import fake_study
from tests.conftest import run_binary

# The columns the report reads, in this order (written out here, not imported, so a change in the module fails).
REQUIRED_COLUMNS = [
    "sparsity",
    "corruption",
    "severity",
    "dense_top1_mean",
    "dense_top1_std",
    "pruned_top1_mean",
    "pruned_top1_std",
    "dense_drop",
    "pruned_drop",
    "relative_drop_dense",
    "relative_drop_pruned",
    "t_statistic",
    "p_value",
    "significant",
    "num_pies",
    "pie_fraction",
    "q_value",
]
BINARY_CORRUPTIONS = ("gaussian_noise", "contrast", "pixelate")
BINARY_SEVERITIES = (1, 5)


@pytest.fixture(scope="module")
def binary_run(tiny_study, tmp_path_factory):
  """analysis.robustness run once on the shared tiny study (2 levels x 3 seeds)."""
  out_dir = str(tmp_path_factory.mktemp("robustness_out"))
  proc = run_binary(
      "analysis.robustness",
      f"--study_dir={tiny_study['dir']}",
      f"--out_dir={out_dir}",
      f"--corruptions={','.join(BINARY_CORRUPTIONS)}",
      f"--severities={','.join(map(str, BINARY_SEVERITIES))}",
  )
  return {
      "out": out_dir,
      "stdout": proc.stdout,
      "table": pd.read_csv(os.path.join(out_dir, "robustness.csv")),
      "models": pd.read_csv(os.path.join(out_dir, "robustness_models.csv")),
      "summary": json.load(open(os.path.join(out_dir, "robustness_summary.json"))),
  }


@pytest.mark.slow
def test_binary_writes_the_tables_with_the_required_columns(binary_run):
  table = binary_run["table"]
  assert list(table.columns[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
  assert len(table) == len(BINARY_CORRUPTIONS) * len(BINARY_SEVERITIES)  # one pruned level
  assert set(table["sparsity"]) == {0.9}
  assert set(zip(table["corruption"], table["severity"])) == {
      (c, s) for c in BINARY_CORRUPTIONS for s in BINARY_SEVERITIES
  }
  for column in ("dense_top1_mean", "pruned_top1_mean", "pie_fraction", "p_value", "q_value"):
    assert table[column].between(0, 1).all(), column
  assert (table["q_value"] >= table["p_value"] - 1e-9).all()
  models = binary_run["models"]
  assert list(models.columns) == ["model", "sparsity", "seed", "corruption", "severity", "top1"]
  assert len(models) == 6 * (1 + len(BINARY_CORRUPTIONS) * len(BINARY_SEVERITIES))
  total_sets = 1 + len(BINARY_CORRUPTIONS) * len(BINARY_SEVERITIES)
  assert f"sets done {total_sets}/{total_sets}" in binary_run["stdout"]
  assert "models done 6/6" in binary_run["stdout"]
  # The display -> input path reproduces every model's exported clean predictions.
  assert binary_run["summary"]["clean_check"]["min_agreement"] == 1.0


@pytest.mark.slow
def test_accuracy_falls_with_severity_on_average(binary_run):
  table = binary_run["table"]
  by_severity = table.groupby("severity")[["dense_top1_mean", "pruned_top1_mean"]].mean()
  assert (by_severity.loc[5] < by_severity.loc[1]).all()
  assert table.groupby("severity")["dense_drop"].mean().loc[5] > 0


@pytest.mark.slow
def test_statistics_match_scipy_on_the_per_model_accuracies(binary_run):
  table, models = binary_run["table"], binary_run["models"]
  clean = models[models["corruption"] == "clean"].set_index("model")["top1"]
  for row in table.itertuples(index=False):
    drops = {}
    for level in (0.0, row.sparsity):
      rows = models[
          (models["sparsity"] == level)
          & (models["corruption"] == row.corruption)
          & (models["severity"] == row.severity)
      ].set_index("model")
      drops[level] = (clean[rows.index] - rows["top1"]).to_numpy()
      mean = rows["top1"].mean()
      assert mean == pytest.approx(row.dense_top1_mean if level == 0 else row.pruned_top1_mean, abs=1e-5)
    expected = scipy.stats.ttest_ind(drops[0.0], drops[row.sparsity], equal_var=False)
    assert row.t_statistic == pytest.approx(expected.statistic, rel=1e-4)
    assert row.p_value == pytest.approx(expected.pvalue, rel=1e-4)
    assert row.significant == (expected.pvalue < 0.05)
    assert row.dense_drop == pytest.approx(drops[0.0].mean(), abs=1e-5)
    assert row.pruned_drop == pytest.approx(drops[row.sparsity].mean(), abs=1e-5)
    dense_clean = clean[models[(models["sparsity"] == 0) & (models["corruption"] == "clean")]["model"]].mean()
    assert row.relative_drop_dense == pytest.approx(drops[0.0].mean() / dense_clean, rel=1e-4, abs=1e-6)
  level = table[table["sparsity"] == 0.9]
  np.testing.assert_allclose(level["q_value"], scipy.stats.false_discovery_control(level["p_value"]), rtol=1e-4)


@pytest.mark.slow
def test_summary_mce_matches_the_per_model_accuracies(binary_run):
  models, summary = binary_run["models"], binary_run["summary"]
  mean_top1 = models.groupby(["sparsity", "corruption", "severity"])["top1"].mean()
  levels = {entry["sparsity"]: entry for entry in summary["levels"]}
  assert levels[0.0]["mce"] == pytest.approx(1.0) and levels[0.0]["relative_mce"] == pytest.approx(1.0)
  ce, rel = [], []
  for corruption in BINARY_CORRUPTIONS:
    err = {s: sum(1 - mean_top1[s, corruption, v] for v in BINARY_SEVERITIES) for s in (0.0, 0.9)}
    excess = {s: err[s] - len(BINARY_SEVERITIES) * (1 - mean_top1[s, "clean", 0]) for s in (0.0, 0.9)}
    ce.append(err[0.9] / err[0.0])
    if excess[0.0] > 0:
      rel.append(excess[0.9] / excess[0.0])
    assert levels[0.9]["ce"][corruption] == pytest.approx(ce[-1], rel=1e-4)
  assert levels[0.9]["mce"] == pytest.approx(np.mean(ce), rel=1e-4)
  assert levels[0.9]["relative_mce"] == pytest.approx(np.mean(rel), rel=1e-4)
  table = binary_run["table"]
  worse = table[table["significant"] & (table["pruned_drop"] > table["dense_drop"])]
  assert levels[0.9]["corruptions_hurt_more"] == sorted(set(worse["corruption"]))


@pytest.mark.slow
def test_each_corrupted_set_is_computed_once_and_disk_cache_gives_the_same_results(tiny_study, tmp_path, monkeypatch):
  study = study_lib.load_study(tiny_study["dir"], log=lambda m: None)
  calls = []
  real = corruptions.corrupt

  def counting(images, corruption, severity, **kwargs):
    calls.append((corruption, severity, len(images)))
    return real(images, corruption, severity, **kwargs)

  monkeypatch.setattr(corruptions, "corrupt", counting)
  kwargs = dict(corruption_names=["shot_noise", "fog"], severities=[2, 4], seed=3, log=lambda m: None)
  robustness.run_robustness(study, str(tmp_path / "memory"), **kwargs)
  n = study.num_examples
  assert sorted(calls) == sorted((c, s, n) for c in ("shot_noise", "fog") for s in (2, 4))  # 6 models, 4 calls

  calls.clear()
  cache = tmp_path / "cache"
  summary = robustness.run_robustness(
      study, str(tmp_path / "disk"), memory_limit_mb=0, cache_dir=str(cache), keep_cache=True, **kwargs
  )
  assert len(calls) == 4
  assert summary["cache"]["mode"] == "disk"
  assert sorted(os.listdir(cache)) == sorted(
      ["clean_0.npy"] + [f"{c}_{s}.npy" for c in ("shot_noise", "fog") for s in (2, 4)]
  )
  for name in ("robustness.csv", "robustness_models.csv"):
    assert (tmp_path / "memory" / name).read_text() == (tmp_path / "disk" / name).read_text()


def test_image_store_spills_to_disk_and_removes_only_its_own_files(tmp_path):
  cache = tmp_path / "cache"
  cache.mkdir()
  (cache / "notes.txt").write_text("not the store's")
  store = robustness.ImageStore(str(cache), memory_limit_bytes=100)
  small, large = np.ones((2, 5, 5, 1), np.uint8), np.full((2, 8, 8, 1), 7, np.uint8)
  store.put("small", small)  # 50 bytes: in memory
  store.put("large", large)  # 50 + 128 > 100: on disk, memory-mapped read-only
  assert store.mode == "memory+disk" and store.memory_bytes == 50 and store.disk_bytes == 128
  assert isinstance(store.get("large"), np.memmap) and not store.get("large").flags.writeable
  np.testing.assert_array_equal(store.get("large"), large)
  assert sorted(os.listdir(cache)) == ["large.npy", "notes.txt"]
  store.close()
  assert os.listdir(cache) == ["notes.txt"]


def test_chunked_corruption_equals_one_call(monkeypatch):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (7, 8, 8, 1), dtype=np.uint8)
  whole = robustness.corrupt_set(images, "impulse_noise", 3, 5, np.empty_like(images))
  monkeypatch.setattr(robustness, "_CORRUPT_CHUNK_BYTES", 2 * 8 * 8 * 4)  # two images per call
  chunked = robustness.corrupt_set(images, "impulse_noise", 3, 5, np.empty_like(images))
  np.testing.assert_array_equal(whole, chunked)
  expected = robustness.to_uint8(corruptions.corrupt(images.astype(np.float32) / 255, "impulse_noise", 3, seed=5))
  np.testing.assert_array_equal(whole, expected)
  assert not np.array_equal(whole, images)


@pytest.mark.parametrize(
    "name,image_size,shape",
    [
        ("digits", None, (8, 8, 1)),
        ("cifar", None, (32, 32, 3)),
        ("cifar", 16, (32, 32, 3)),
        ("imagenet", 16, (40, 27, 3)),
    ],
)
def test_display_to_input_equals_the_eval_preprocessing(name, image_size, shape):
  raw = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
  expected = preprocess.get(name)(tf.constant(raw), training=False, seed=None, image_size=image_size)
  display = preprocess.get_display(name)(tf.constant(raw), image_size=image_size)
  np.testing.assert_allclose(robustness.display_to_input(name, display.numpy()), expected, rtol=1e-6, atol=1e-6)


def test_imagenet_a_class_ids_are_the_published_200():
  ids = np.asarray(robustness.IMAGENET_A_CLASS_IDS)
  assert len(ids) == 200 and len(np.unique(ids)) == 200
  assert ids.min() >= 0 and ids.max() < 1000
  from tensorflow_datasets.datasets.imagenet2012 import imagenet_common  # pylint: disable=g-import-not-at-top

  with open(imagenet_common.label_names_file()) as f:
    wnids = f.read().split()
  # Three of ImageNet-A's classes (stingray, goldfinch, acorn) and one it lacks (tench, id 0).
  assert {wnids[i] for i in ids} >= {"n01498041", "n01531178", "n12267677"}
  assert "n01440764" not in {wnids[i] for i in ids}


def test_restrict_argmax_on_hand_made_logits():
  logits = np.zeros((3, 1000), np.float32)
  logits[0, 0] = 9.0  # best overall: class 0, not an ImageNet-A class ...
  logits[0, 988] = 5.0  # ... so the restricted top-1 is the best of the 200: acorn
  logits[0, 6] = 4.0
  logits[1, 11] = 3.0  # the best overall is an ImageNet-A class: unchanged
  logits[1, 500] = 1.0
  logits[2, 999] = 7.0  # all 200 tied at 0: the smallest listed id
  restricted = robustness.restrict_argmax(logits, robustness.IMAGENET_A_CLASS_IDS)
  np.testing.assert_array_equal(np.argmax(logits, axis=1), [0, 11, 999])
  np.testing.assert_array_equal(restricted, [988, 11, 6])
  with pytest.raises(ValueError, match="distinct"):
    robustness.restrict_argmax(logits, [1, 1])


def _set_result(name, labels, accuracies):
  """A SetResult whose models have the given top-1 accuracies (multiples of 1 / len(labels)), per level."""
  predictions = {}
  for level, acc in accuracies.items():
    wrong = np.round((1 - np.asarray(acc)) * len(labels)).astype(int)
    predictions[level] = np.stack([np.where(np.arange(len(labels)) < k, (labels + 1) % 5, labels) for k in wrong])
  return robustness.SetResult(name, 1, labels, predictions)


@pytest.fixture(scope="module")
def degenerate_sets():
  """Sets with regular and degenerate per-model drops: 6 dense and 5 pruned models (level 0.9), and a level of a
  single model (0.5); every model has 90% clean top-1, so each set's drops are exact copies where they are equal."""
  rng = np.random.default_rng(0)
  labels = np.arange(100) % 5
  clean = {0.0: np.full(6, 0.9), 0.9: np.full(5, 0.9), 0.5: np.full(1, 0.9)}

  def varied(n, low, high):
    return rng.integers(low, high, size=n) / 100

  sets = {
      "regular_a": {0.0: varied(6, 80, 90), 0.9: varied(5, 70, 88), 0.5: [0.8]},
      "regular_b": {0.0: varied(6, 60, 90), 0.9: varied(5, 60, 90), 0.5: [0.7]},
      "constant_equal": {0.0: np.full(6, 0.85), 0.9: np.full(5, 0.85), 0.5: [0.85]},
      "constant_separated": {0.0: np.full(6, 0.85), 0.9: np.full(5, 0.8), 0.5: [0.8]},
      "dense_constant": {0.0: np.full(6, 0.85), 0.9: varied(5, 70, 88), 0.5: [0.75]},
  }
  results = [_set_result(name, labels, acc) for name, acc in sets.items()]
  return results, clean


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, on the constant sample
def test_robustness_welch_is_scipy_on_regular_rows_and_the_kernel_on_degenerate_ones(degenerate_sets):
  results, clean = degenerate_sets
  table = robustness.robustness_table(results, clean).set_index(["sparsity", "corruption"])
  drops = {level: np.stack([clean[level] - r.top1(level) for r in results], axis=1) for level in clean}
  for level in (0.9, 0.5):
    kernel = significance.welch_test(drops[0.0], drops[level])
    rows = table.loc[level].loc[[r.corruption for r in results]]
    np.testing.assert_array_equal(rows["t_statistic"], kernel.t)
    np.testing.assert_array_equal(rows["p_value"], kernel.p)
    np.testing.assert_array_equal(rows["q_value"], significance.bh_q_values(kernel.p))
  level = table.loc[0.9]
  for name in ("regular_a", "regular_b", "dense_constant"):
    j = [r.corruption for r in results].index(name)
    expected = scipy.stats.ttest_ind(drops[0.0][:, j], drops[0.9][:, j], equal_var=False)
    assert level.loc[name, "t_statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert level.loc[name, "p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert level.loc[name, "significant"] == (expected.pvalue < 0.05)
  # Where scipy returns t = NaN (0/0) or p = 0 (infinite t), the kernel's rules: equal drops are no difference;
  # complete separation gets the exact permutation p-value, 1 / C(6 + 5, 6).
  names = [r.corruption for r in results]
  with np.errstate(all="ignore"):
    raw_equal = scipy.stats.ttest_ind(
        *(drops[lv][:, names.index("constant_equal")] for lv in (0.0, 0.9)), equal_var=False
    )
    raw_separated = scipy.stats.ttest_ind(
        *(drops[lv][:, names.index("constant_separated")] for lv in (0.0, 0.9)), equal_var=False
    )
  assert np.isnan(raw_equal.pvalue) and raw_separated.pvalue == 0
  equal, separated = level.loc["constant_equal"], level.loc["constant_separated"]
  assert equal["t_statistic"] == 0 and equal["p_value"] == 1 and not equal["significant"]
  assert separated["t_statistic"] == -np.inf and separated["p_value"] == pytest.approx(1 / 462, rel=1e-12)
  assert separated["significant"]
  # A population of one model has no variance: no test, no q-value, never significant.
  single = table.loc[0.5]
  assert single["p_value"].isna().all() and single["q_value"].isna().all()
  assert not single["significant"].any() and not single["significant_fdr"].any()


def test_robustness_fdr_is_the_one_benjamini_hochberg_at_q_at_most_alpha(degenerate_sets):
  results, clean = degenerate_sets
  assert robustness.bh_q_values is significance.bh_q_values
  table = robustness.robustness_table(results, clean)
  level = table[table["sparsity"] == 0.9]
  np.testing.assert_array_equal(level["q_value"], significance.bh_q_values(level["p_value"]))
  # At alpha equal to a q-value, that row is a discovery: the step-up rule's boundary is q <= alpha.
  boundary = float(level["q_value"].min())
  at_boundary = robustness.robustness_table(results, clean, alpha=boundary)
  rows = at_boundary[(at_boundary["sparsity"] == 0.9) & (at_boundary["q_value"] == boundary)]
  assert len(rows) and rows["significant_fdr"].all()
  np.testing.assert_array_equal(at_boundary["significant_fdr"], at_boundary["q_value"] <= boundary)


def _save_tiny_model(path, input_shape, num_classes, seed, bias_class=None):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input(shape=input_shape, name="image")
  x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
  x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
  outputs = keras.layers.Dense(num_classes, name="classifier")(x)
  model = keras.Model(inputs, outputs)
  if bias_class is not None:  # make a class outside ImageNet-A's 200 win every unrestricted argmax
    kernel, bias = model.get_layer("classifier").get_weights()
    bias[bias_class] = 100.0
    model.get_layer("classifier").set_weights([kernel, bias])
  model_dir.save_model(model, path)
  return model


def _fake_study(study_dir, data, num_classes, input_shape, bias_class=None, num_examples=12):
  """2 levels x 2 models with saved tiny models; the clean predictions are random (only their top-1 is used)."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, num_classes, num_examples)
  config = {"name": "fake", "data": data, "model": {"name": "tiny"}, "eval_batch_size": 5}
  overrides = {
      "dataset": data["name"],
      "split": data["eval_split"],
      "class_names": [str(c) for c in range(num_classes)],
      "config": config,
  }
  models = {}
  for sparsity in (0.0, 0.5):
    for seed in (0, 1):
      path = fake_study.write_model(
          study_dir, sparsity, seed, rng.integers(0, num_classes, num_examples), labels, num_classes, **overrides
      )
      models[sparsity, seed] = _save_tiny_model(
          os.path.join(os.path.dirname(path), "model.h5"),
          input_shape,
          num_classes,
          seed + int(sparsity * 10),
          bias_class,
      )
  return models


def _imagenet_a_examples(num_examples, labels_within=True):
  def as_dataset(self, *args, **kwargs):
    del self, args, kwargs
    rng = np.random.default_rng(7)
    ids = np.asarray(robustness.IMAGENET_A_CLASS_IDS)
    labels = rng.choice(ids, num_examples) if labels_within else np.arange(num_examples)
    return tf.data.Dataset.from_tensor_slices(
        {
            "image": rng.integers(0, 256, (num_examples, 20, 24, 3), dtype=np.uint8),
            "label": labels.astype(np.int64),
            "file_name": [f"{i}.jpg" for i in range(num_examples)],
        }
    )

  return as_dataset


IMAGENET_DATA = {
    "name": "imagenet2012",
    "train_split": "train",
    "eval_split": "validation",
    "preprocess": "imagenet",
    "image_size": 16,
}


def test_imagenet_a_predictions_stay_within_its_200_classes(tmp_path):
  study_dir = str(tmp_path / "study")
  _fake_study(study_dir, IMAGENET_DATA, 1000, (16, 16, 3), bias_class=0)
  study = study_lib.load_study(study_dir, log=lambda m: None)
  specs = robustness.plan_sets([], [1], "tfds", imagenet_a=True)
  store = robustness.ImageStore(str(tmp_path / "cache"), 2**30)
  with tfds.testing.mock_data(as_dataset_fn=_imagenet_a_examples(10), data_dir=str(tmp_path / "tfds")):
    labels = robustness.build_sets(study, specs, store, log=lambda m: None)
  results, _ = robustness.evaluate_models(study, specs, store, labels, batch_size=4, log=lambda m: None)
  (result,) = results
  assert result.corruption == "imagenet_a" and result.severity == 0
  images = store.get("imagenet_a_0")
  assert images.shape == (10, 16, 16, 3) and images.dtype == np.uint8
  for sparsity, predictions in result.predictions.items():
    assert np.isin(predictions, robustness.IMAGENET_A_CLASS_IDS).all()
    for i, record in enumerate(study.levels[sparsity]):
      model = model_dir.load_model(os.path.join(os.path.dirname(record.path), "model.h5"))
      logits = model(robustness.display_to_input("imagenet", images)).numpy()
      assert (np.argmax(logits, axis=1) == 0).all()  # unrestricted, every prediction would be class 0
      np.testing.assert_array_equal(predictions[i], robustness.restrict_argmax(logits, robustness.IMAGENET_A_CLASS_IDS))

  with tfds.testing.mock_data(as_dataset_fn=_imagenet_a_examples(10), data_dir=str(tmp_path / "tfds")):
    robustness.run_robustness(study, str(tmp_path / "out"), corruption_names=[], imagenet_a=True, log=lambda m: None)
  table = pd.read_csv(tmp_path / "out" / "robustness.csv")
  assert table[["corruption", "severity"]].values.tolist() == [["imagenet_a", 0]]
  clean = np.mean([np.mean(m.top1 == study.labels) for m in study.levels[0.0]])
  dense_acc = result.top1(0.0).mean()
  assert table["dense_drop"].iloc[0] == pytest.approx(clean - dense_acc, abs=1e-5)


def test_imagenet_a_with_labels_outside_its_classes_is_refused(tmp_path):
  study_dir = str(tmp_path / "study")
  _fake_study(study_dir, IMAGENET_DATA, 1000, (16, 16, 3))
  study = study_lib.load_study(study_dir, log=lambda m: None)
  with tfds.testing.mock_data(
      as_dataset_fn=_imagenet_a_examples(10, labels_within=False), data_dir=str(tmp_path / "tfds")
  ):
    with pytest.raises(PieError, match="not among ImageNet-A's 200 class ids"):
      robustness.run_robustness(study, str(tmp_path / "out"), corruption_names=[], imagenet_a=True, log=lambda m: None)


def test_cifar10_corrupted_from_tfds(tmp_path):
  study_dir = str(tmp_path / "study")
  data = {"name": "cifar10", "train_split": "train", "eval_split": "test", "preprocess": "cifar", "image_size": None}
  models = _fake_study(study_dir, data, 10, (32, 32, 3))
  study = study_lib.load_study(study_dir, log=lambda m: None)
  tfds_dir = str(tmp_path / "tfds")
  with tfds.testing.mock_data(num_examples=9, data_dir=tfds_dir):
    summary = robustness.run_robustness(
        study,
        str(tmp_path / "out"),
        corruption_names=["glass_blur", "brightness"],
        severities=[1, 3],
        source="tfds",
        data_dir=tfds_dir,
        log=lambda m: None,
    )
    # glass_blur is TFDS's "frosted_glass_blur": read it directly and score one model by hand.
    direct = tfds.load("cifar10_corrupted/frosted_glass_blur_3", split="test", data_dir=tfds_dir, download=False)
    batch = next(iter(direct.batch(100)))
  inputs = preprocess.cifar(batch["image"], training=False, seed=None, image_size=None)
  expected = float(np.mean(np.argmax(models[0.5, 1](inputs).numpy(), axis=1) == batch["label"].numpy()))
  table = pd.read_csv(tmp_path / "out" / "robustness.csv")
  per_model = pd.read_csv(tmp_path / "out" / "robustness_models.csv")
  assert set(zip(table["corruption"], table["severity"])) == {
      (c, s) for c in ("glass_blur", "brightness") for s in (1, 3)
  }
  assert (table["num_examples"] == 9).all()
  row = per_model[
      (per_model["model"] == "sparsity50_seed1")
      & (per_model["corruption"] == "glass_blur")
      & (per_model["severity"] == 3)
  ]
  assert row["top1"].item() == pytest.approx(expected)
  assert summary["source"] == "tfds" and summary["clean_check"] is None


def test_imagenet2012_corrupted_crops_are_resized_to_the_study_image_size(tmp_path):
  study_dir = str(tmp_path / "study")
  _fake_study(study_dir, IMAGENET_DATA, 1000, (16, 16, 3))
  study = study_lib.load_study(study_dir, log=lambda m: None)
  specs = robustness.plan_sets(["zoom_blur"], [2], "tfds")
  store = robustness.ImageStore(str(tmp_path / "cache"), 2**30)
  tfds_dir = str(tmp_path / "tfds")
  with tfds.testing.mock_data(num_examples=3, data_dir=tfds_dir):
    labels = robustness.build_sets(study, specs, store, source="tfds", data_dir=tfds_dir, log=lambda m: None)
    # Read as pie reads TFDS images, the stored bytes decoded after: the mock stores its random images as JPEG, so
    # a decoded-on-read tfds.load can differ from them by a few levels.
    builder = tfds.builder("imagenet2012_corrupted/zoom_blur_2", data_dir=tfds_dir)
    records = builder.as_dataset(split="validation", decoders={"image": tfds.decode.SkipDecoding()})
    image_feature = builder.info.features["image"]
    raw = next(iter(records.map(lambda ex: {**ex, "image": image_feature.decode_example(ex["image"])}).batch(3)))
  assert [s.key for s in specs] == ["zoom_blur_2"]  # no clean set: the pre-built sets need no clean images
  assert raw["image"].shape[1:] == (224, 224, 3)
  images = store.get("zoom_blur_2")
  expected = tf.cast(
      tf.clip_by_value(tf.round(tf.image.resize(raw["image"], [16, 16], method="bicubic", antialias=True)), 0, 255),
      tf.uint8,
  )
  np.testing.assert_array_equal(images, expected.numpy())
  np.testing.assert_array_equal(labels["zoom_blur_2"], raw["label"].numpy())


@pytest.mark.slow
def test_study_without_saved_models_names_the_folder(tiny_study, tmp_path):
  study_dir = tmp_path / "predictions_only"
  for name in os.listdir(tiny_study["dir"]):
    folder = os.path.join(tiny_study["dir"], name)
    if os.path.isdir(folder) and name.startswith("sparsity"):
      (study_dir / name).mkdir(parents=True)
      for file in os.listdir(folder):
        if file.endswith((".tfrecord", ".json")) and file != "metrics.json":
          shutil.copy(os.path.join(folder, file), study_dir / name / file)
  study = study_lib.load_study(str(study_dir), log=lambda m: None)
  with pytest.raises(PieError, match=r"6 of 6 models have no saved model\.h5") as error:
    robustness.run_robustness(study, str(tmp_path / "out"), corruption_names=["fog"], log=lambda m: None)
  assert str(study_dir) in str(error.value)
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bad_corruption_and_severity_are_refused(tiny_study, tmp_path):
  study = study_lib.load_study(tiny_study["dir"], log=lambda m: None)
  with pytest.raises(PieError, match=r"unknown corruption\(s\) \['fogg'\]") as error:
    robustness.run_robustness(
        study, str(tmp_path / "out"), corruption_names=["gaussian_noise", "fogg"], log=lambda m: None
    )
  assert "gaussian_noise, shot_noise" in str(error.value) and "saturate" in str(error.value)  # valid names listed
  assert not (tmp_path / "out").exists()
  with pytest.raises(PieError, match="do not apply to 1-channel"):
    robustness.select_corruptions(["saturate"], 1)
  with pytest.raises(PieError, match="severities must lie in 1..5"):
    robustness.plan_sets(["fog"], [0, 6], "on_the_fly")
  with pytest.raises(PieError, match="nothing to evaluate"):
    robustness.plan_sets([], [1], "on_the_fly")
  with pytest.raises(PieError, match="source must be one of"):
    robustness.plan_sets(["fog"], [1], "disk")


def test_summary_and_printed_headline_call_significant_only_what_survives_fdr():
  """On sets where 3 corruptions hurt the pruned models at p < alpha and 1 after FDR, the summary's counts and the
  printed line call only the FDR one significant; the uncorrected ones follow, labelled."""
  rng = np.random.default_rng(0)
  labels = np.arange(100) % 5
  clean = {0.0: np.full(8, 0.9), 0.9: np.full(8, 0.9)}
  results = []
  for j, effect in enumerate(np.linspace(0, 0.05, 10)):
    dense = rng.integers(78, 90, size=8) / 100
    pruned = np.clip(np.round(rng.integers(78, 90, size=8) / 100 - effect, 2), 0, 1)
    results.append(_set_result(f"set_{j}", labels, {0.0: dense, 0.9: pruned}))
  table = robustness.robustness_table(results, clean)
  worse = table[table["pruned_drop"] > table["dense_drop"]]
  fdr = sorted(worse.loc[worse["significant_fdr"], "corruption"])
  uncorrected_only = sorted(set(worse.loc[worse["significant"], "corruption"]) - set(fdr))
  assert len(fdr) == 1 and len(uncorrected_only) == 2, "the planted sets should separate the two rules"

  model = types.SimpleNamespace(name="m")
  study = types.SimpleNamespace(
      levels={0.0: [model] * 8, 0.9: [model] * 8},
      dataset="d",
      split="test",
      num_classes=5,
      num_examples=100,
      study_dir="s",
      config_hash="h",
  )
  summary = robustness.summarize(study, results, table, clean, 0.05, {})
  entry = next(level for level in summary["levels"] if level["sparsity"] == 0.9)
  assert entry["num_hurt_more_fdr"] == 1 and entry["corruptions_hurt_more_fdr"] == fdr
  assert entry["num_hurt_more"] == 3 and entry["corruptions_hurt_more"] == sorted(fdr + uncorrected_only)
  assert {row["corruption"] for row in entry["hurt_more_than_dense"] if row["significant_fdr"]} == set(fdr)

  line = robustness.level_headline(entry, 0.05)
  significant, uncorrected = line.split("uncorrected")
  assert "significantly hurt more than dense (q <= 0.05 after FDR): " + fdr[0] + ";" in significant
  assert not any(name in significant for name in uncorrected_only)
  assert all(name in uncorrected for name in uncorrected_only) and "the paper's rule" in uncorrected
