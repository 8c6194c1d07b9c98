"""Slices of the eval split (pie.slices): the statistics, the plan, class groups (on the real label sets of digits and
Fashion-MNIST), the export schema's slice features, a CelebA study on TFDS mock data, Fairlearn's MetricFrame, and
every bad input. Studies are fake prediction files (tests/fake_study.py) except the CelebA one, trained in seconds."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import pie  # sets TF_USE_LEGACY_KERAS before TensorFlow is imported
import ml_collections
import tensorflow_datasets as tfds
import tf_keras

from configs import celeba_blond
from configs import fashion_mnist as fashion_mnist_config
from pie import analysis
from pie import data as data_lib
from pie import models as models_lib
from pie import population
from pie import predictions as predictions_lib
from pie import significance
from pie import simulate
from pie import slices
from pie import stats
from pie import training
from pie import variants
from pie import wordnet
from pie.errors import PieError
from tests import fake_study
from tests.conftest import REPO
from tests.conftest import digits_config
from tests.conftest import override
from tests.conftest import run_binary

FEATURES = [
    {"name": "attributes/Male", "kind": "bool", "values": ["false", "true"]},
    {"name": "attributes/Young", "kind": "bool", "values": ["false", "true"]},
]
STATISTICS = ("normalized_change", "t_statistic", "p_value", "q_value", "ci_low", "ci_high", "hedges_g", "df")


def _quiet(unused_message):
  pass


def _slice_study(study_dir, num_examples=240, groups=None, seed=0, **options):
  """A fake study (4 classes, levels 0 / 0.5 / 0.9, 4 seeds) exporting two random binary attributes."""
  rng = np.random.default_rng(seed)
  codes = rng.integers(0, 2, (num_examples, 2))
  config = {"name": "fake", "data": {"name": "digits"}, "class_groups": groups}
  fake_study.write_study(
      study_dir, levels=(0.0, 0.5, 0.9), seeds=4, num_examples=num_examples, slices=(FEATURES, codes), config=config
  )
  study = pie.load_study(study_dir, log=_quiet)
  out = os.path.join(study_dir, "analysis")
  analysis.analyze_study(
      study, out, images=False, report=False, log=_quiet, bootstrap_resamples=0, noise_floor_splits=0, **options
  )
  table = pd.read_csv(os.path.join(out, "slice_stats.csv"), keep_default_na=False, na_values=[""])
  return study, table, codes


# --- The statistics -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalization", ["per_model", "population"])
def test_with_the_classes_as_slices_the_statistics_are_the_class_tests(normalization):
  sim = simulate.simulate_populations(
      480, 12, 6, 7, impacted_classes=3, class_effect=-0.1, skill_sd=0.1, ceiling_classes=2, seed=4
  )
  labels, num_classes = sim.labels, 12
  membership = labels[:, None] == np.arange(num_classes)[None, :]
  dense_hits = significance.subset_hits(sim.dense_predictions, labels, membership)
  pruned_hits = significance.subset_hits(sim.pruned_predictions, labels, membership)
  np.testing.assert_array_equal(dense_hits, significance.class_hits(sim.dense_predictions, labels, num_classes))
  slices_table = significance.subset_tests(
      dense_hits,
      pruned_hits,
      membership.sum(axis=0),
      (sim.dense_predictions == labels).mean(axis=1),
      (sim.pruned_predictions == labels).mean(axis=1),
      normalization=normalization,
  )
  classes = stats.class_ttest(
      sim.dense_predictions, sim.pruned_predictions, labels, num_classes, normalization=normalization
  )
  for column in STATISTICS:
    np.testing.assert_allclose(slices_table[column], classes[column], rtol=1e-12, atol=1e-15, err_msg=column)
  np.testing.assert_array_equal(slices_table["significant"], classes["significant"])
  np.testing.assert_array_equal(slices_table["significant_fdr"], classes["significant_fdr"])
  np.testing.assert_allclose(slices_table["dense_accuracy_mean"], classes["dense_recall_mean"], rtol=1e-14)
  assert (slices_table["note"] == classes["note"]).all()


def test_the_test_is_welch_on_per_model_normalized_accuracy():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 3, 300)
  dense = np.where(rng.random((5, 300)) < 0.8, labels, (labels + 1) % 3)
  pruned = np.where(rng.random((6, 300)) < 0.7, labels, (labels + 2) % 3)
  membership = np.stack([labels == 0, rng.random(300) < 0.4, np.ones(300, bool)], axis=1)
  table = significance.subset_tests(
      significance.subset_hits(dense, labels, membership),
      significance.subset_hits(pruned, labels, membership),
      membership.sum(axis=0),
      (dense == labels).mean(axis=1),
      (pruned == labels).mean(axis=1),
  )
  for s in range(2):
    rows = membership[:, s]
    x = (dense[:, rows] == labels[rows]).mean(axis=1) - (dense == labels).mean(axis=1)
    y = (pruned[:, rows] == labels[rows]).mean(axis=1) - (pruned == labels).mean(axis=1)
    expected = scipy_stats.ttest_ind(x, y, equal_var=False)
    assert table["t_statistic"][s] == pytest.approx(expected.statistic, rel=1e-10)
    assert table["p_value"][s] == pytest.approx(expected.pvalue, rel=1e-10)
    assert table["normalized_change"][s] == pytest.approx(y.mean() - x.mean(), abs=1e-15)
  # The whole split moves exactly with top-1: every normalized value is 0, the class test's constant-and-equal case.
  assert table["note"][2] == significance.NOTE_CONSTANT_EQUAL and table["p_value"][2] == 1.0
  assert table["t_statistic"][2] == 0 and not table["significant"][2] and np.isnan(table["ci_low"][2])


def test_small_and_empty_slices_are_noted_and_left_out_of_the_fdr_family():
  rng = np.random.default_rng(5)
  dense_hits = rng.integers(10, 40, (4, 5))
  pruned_hits = rng.integers(5, 40, (4, 5))
  sizes = np.array([60, 60, 12, 0, 80])
  dense_hits[:, 3] = pruned_hits[:, 3] = 0
  dense_hits[:, 2] = np.minimum(dense_hits[:, 2], 12)
  pruned_hits[:, 2] = np.minimum(pruned_hits[:, 2], 12)
  top1 = np.full(4, 0.6)
  table = significance.subset_tests(dense_hits, pruned_hits, sizes, top1, top1 - 0.05, min_size=30)
  assert table["note"][2] == significance.NOTE_SMALL_SUBSET.format(min_size=30)
  assert table["note"][3] == significance.NOTE_EMPTY_SUBSET
  for s in (2, 3):
    assert np.isnan(table["p_value"][s]) and np.isnan(table["q_value"][s]) and not table["significant"][s]
  assert not np.isnan(table["normalized_change"][2]) and np.isnan(table["normalized_change"][3])
  tested = [0, 1, 4]
  np.testing.assert_allclose(table["q_value"][tested], significance.bh_q_values(table["p_value"][tested]))
  with pytest.raises(ValueError, match="min_size"):
    significance.subset_tests(dense_hits, pruned_hits, sizes, top1, top1, min_size=0)
  with pytest.raises(ValueError, match="membership"):
    significance.subset_hits(np.zeros((2, 3), int), np.zeros(3, int), np.zeros((4, 1), bool))


def test_the_subset_test_is_calibrated_on_real_aa_splits():
  """40 dense digits models where nothing differs, split 20 + 20 at random: slices by class group, by a random
  attribute of the examples and by their intersection come out at p < 0.05 about 5% of the time."""
  data = np.load(os.path.join(REPO, "tests", "data", "digits_dense40_top1.npz"))
  top1, labels = data["top1"], data["labels"]
  groups = slices.load_class_groups("digits", [str(d) for d in range(10)])
  attribute = np.random.default_rng(0).integers(0, 2, len(labels))
  plan = slices.SlicePlan([{"name": "a", "kind": "bool", "values": ["false", "true"]}], groups, 10)
  membership = plan.membership(labels, attribute[:, None])
  hits = significance.subset_hits(top1, labels, membership)
  accuracy = (top1 == labels).mean(axis=1)
  rng = np.random.default_rng(1)
  significant = tested = 0
  for _ in range(300):
    order = rng.permutation(40)
    first, second = order[:20], order[20:]
    table = significance.subset_tests(
        hits[first], hits[second], membership.sum(axis=0), accuracy[first], accuracy[second], min_size=1
    )
    tested += int(table["p_value"].notna().sum())
    significant += int(table["significant"].sum())
  rate = significant / tested
  # The splits reuse the same 40 models (not independent): a wide band around alpha, that a test computed with
  # the population's mean top-1 or with z instead of t on these ceiling-heavy slices would leave.
  assert tested == 300 * len(plan) and 0.025 <= rate <= 0.075, rate


# --- The plan and class groups --------------------------------------------------------------------------------------


def test_the_plan_enumerates_values_pairs_and_groups():
  plan = slices.SlicePlan(FEATURES, {"low": (0, 1), "ends": (0, 3)}, num_classes=4)
  keys = pd.DataFrame(plan.keys())
  assert list(keys["slice_kind"]) == ["feature"] * 4 + ["intersection"] * 4 + ["class_group"] * 2
  assert list(keys["slice_value"][4:8]) == ["false & false", "false & true", "true & false", "true & true"]
  assert keys["slice_name"][4] == "attributes/Male & attributes/Young"
  labels = np.array([0, 1, 2, 3, 0, 3])
  codes = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [1, 1], [0, 0]])
  membership = plan.membership(labels, codes)
  np.testing.assert_array_equal(membership[:, 1], codes[:, 0] == 1)
  np.testing.assert_array_equal(membership[:, 7], (codes[:, 0] == 1) & (codes[:, 1] == 1))
  np.testing.assert_array_equal(membership[:, 9], np.isin(labels, [0, 3]))
  assert plan.summary(30) == {
      "features": ["attributes/Male", "attributes/Young"],
      "class_groups": {"low": [0, 1], "ends": [0, 3]},
      "num_slices": 10,
      "min_slice_size": 30,
  }
  assert slices.SlicePlan([], None, 4).summary(30) is None


def test_class_groups_from_ids_names_files_and_shipped_groupings(tmp_path):
  names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
  shipped = slices.load_class_groups("fashion_mnist", names)
  assert shipped == {"tops": (0, 2, 4, 6), "footwear": (5, 7, 9), "bags": (8,), "trousers": (1,), "dresses": (3,)}
  by_name = {"tops": ["T-shirt/top", "Pullover", "Coat", "Shirt"], "footwear": ["Sandal", "Sneaker", "Ankle boot"]}
  assert slices.load_class_groups(by_name, names) == {k: shipped[k] for k in by_name}
  path = tmp_path / "groups.json"
  path.write_text(json.dumps({"groups": {"mixed": [1, "Bag"]}, "num_classes": 10}))
  assert slices.load_class_groups(str(path), names) == {"mixed": (1, 8)}
  assert slices.load_class_groups(None, names) is None and slices.load_class_groups("", names) is None
  assert list(slices.load_class_groups("digits", [str(d) for d in range(10)])) == [
      "loops",
      "straight strokes",
      "open curves",
  ]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"dogs": [3, 12]}, r"group 'dogs' names class 12, outside 0..9"),
        ({"tops": ["T-shirt", 1]}, r"group 'tops' names 'T-shirt', not a class of the study"),
        ({"empty": []}, r"group 'empty' has no class"),
        ("imagenet2012_wordnet", r"made for 1000 classes \(imagenet2012\), the study has 10"),
        ("no/such/file.json", r"'no/such/file.json': no such file, and not a grouping shipped with pie"),
        (["a", "b"], r"a mapping from group name to classes"),
    ],
)
def test_bad_class_groups_are_one_clear_error(spec, message):
  with pytest.raises(PieError, match=message) as error:
    slices.load_class_groups(spec, [str(d) for d in range(10)])
  assert error.value.parameter == "class_groups"


def test_a_grouping_file_that_is_not_json(tmp_path):
  path = tmp_path / "bad.json"
  path.write_text("{not json")
  with pytest.raises(PieError, match=f"class groups {path}: not valid JSON"):
    slices.load_class_groups(str(path), ["a", "b"])


def test_the_shipped_imagenet_grouping_is_rebuilt_from_wordnet():
  """pie/class_groups/imagenet2012_wordnet.json is what pie.wordnet derives from WordNet 3.0 (Debian's wordnet-base)
  and TFDS's imagenet2012 synsets, and its animal groups are the known id ranges of the standard label order."""
  with open(slices.shipped_grouping_path("imagenet2012_wordnet")) as f:
    text = f.read()
  synsets = wordnet.tfds_imagenet_synsets()
  assert len(synsets) == 1000 and synsets[0] == "n01440764" and synsets[151] == "n02085620"  # tench; Chihuahua
  rebuilt = wordnet.imagenet_grouping(synsets)
  assert wordnet.grouping_json(rebuilt) == text
  groups = json.loads(text)["groups"]
  assert groups["dogs"] == list(range(151, 269))
  assert groups["birds"] == list(range(7, 25)) + list(range(80, 101)) + list(range(127, 147))
  assert (
      groups["fish"][:7] == [0, 1, 2, 3, 4, 5, 6] and 389 in groups["fish"]
  )  # tench ... great white shark; barracouta
  members = sorted(i for ids in groups.values() for i in ids)
  assert members == list(range(1000)), "every class in exactly one group"
  assert {"dogs", "vehicles", "musical instruments", wordnet.OTHER} <= set(groups)
  assert 466 in groups["vehicles"] and 654 in groups["vehicles"]  # bullet train, minibus (WordNet's "conveyance")


# --- The export schema ----------------------------------------------------------------------------------------------


def test_slice_features_round_trip_and_version_1_files_still_read(tmp_path):
  labels = np.arange(20) % 4
  codes = np.stack([np.arange(20) % 2, np.arange(20) // 10], axis=1)
  path = fake_study.write_model(str(tmp_path), 0.0, 0, labels, labels, 4, slices=(FEATURES, codes))
  pred = pie.read_predictions(path)
  np.testing.assert_array_equal(pred.slice_values, codes)
  assert pred.slice_features == FEATURES and pred.metadata["schema_version"] == predictions_lib.SCHEMA_VERSION == 2

  # A version-1 export: records without slice_values and metadata without slice_features (what pie wrote before).
  old = fake_study.write_model(str(tmp_path), 0.0, 1, labels, labels, 4)
  meta_path = predictions_lib.metadata_path(old)
  meta = json.load(open(meta_path))
  del meta["slice_features"]
  meta["schema_version"] = 1
  json.dump(meta, open(meta_path, "w"))
  pred = pie.read_predictions(old)
  assert pred.slice_features == [] and pred.slice_values.shape == (20, 0)
  np.testing.assert_array_equal(pred.labels, labels)

  meta["schema_version"] = 3
  json.dump(meta, open(meta_path, "w"))
  with pytest.raises(PieError, match="schema_version 3 is not one this reader knows .*update pie"):
    pie.read_predictions(old)


def test_a_study_of_version_1_files_is_analysed_with_class_groups(tmp_path):
  fake_study.write_study(str(tmp_path), levels=(0.0, 0.5), seeds=3, num_examples=80)
  for meta_path in tmp_path.glob("*/*.json"):
    meta = json.load(open(meta_path))
    del meta["slice_features"]
    meta["schema_version"] = 1
    json.dump(meta, open(meta_path, "w"))
  study = pie.load_study(str(tmp_path), log=_quiet)
  assert study.slice_features == [] and study.slice_values.shape == (80, 0)
  out = str(tmp_path / "out")
  summary = analysis.analyze_study(
      study, out, images=False, report=False, log=_quiet, class_groups={"even": [0, 2], "odd": [1, 3]}, min_slice_size=5
  )
  table = pd.read_csv(os.path.join(out, "slice_stats.csv"))
  assert list(table["slice_value"]) == ["even", "odd"] and (table["num_examples"] == 40).all()
  assert summary["slices"]["class_groups"] == {"even": [0, 2], "odd": [1, 3]}


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"slice_features": "Male"}, "slice_features must be a list"),
        ({"slice_features": [{"name": "a", "kind": "bool"}]}, "slice_features entries must be"),
        ({"slice_features": [FEATURES[0], FEATURES[0]]}, "names a feature twice"),
    ],
)
def test_bad_slice_metadata_is_refused(tmp_path, metadata, message):
  labels = np.arange(10) % 2
  path = fake_study.write_model(str(tmp_path), 0.0, 0, labels, labels, 2)
  meta_path = predictions_lib.metadata_path(path)
  json.dump({**json.load(open(meta_path)), **metadata}, open(meta_path, "w"))
  with pytest.raises(PieError, match=message):
    pie.read_predictions(path)


def test_slice_codes_out_of_range_are_refused(tmp_path):
  labels = np.arange(10) % 2
  codes = np.zeros((10, 2), np.int64)
  codes[4, 1] = 2
  path = fake_study.write_model(str(tmp_path), 0.0, 0, labels, labels, 2, slices=(FEATURES, codes))
  with pytest.raises(PieError, match=r"slice_values of 'attributes/Young' outside \[0, 2\)"):
    pie.read_predictions(path)


def test_files_whose_slices_differ_are_refused(tmp_path):
  labels = np.arange(30) % 3
  codes = np.zeros((30, 2), np.int64)
  for seed in range(2):
    fake_study.write_model(str(tmp_path), 0.0, seed, labels, labels, 3, slices=(FEATURES, codes))
  fake_study.write_model(str(tmp_path), 0.5, 0, labels, labels, 3, slices=(FEATURES, codes))
  other_codes = codes.copy()
  other_codes[7, 0] = 1
  other = fake_study.write_model(str(tmp_path), 0.5, 1, labels, labels, 3, slices=(FEATURES, other_codes))
  with pytest.raises(PieError, match=f"{other}: slice feature values differ from those of"):
    pie.load_study(str(tmp_path), log=_quiet)
  fake_study.write_model(str(tmp_path), 0.5, 1, labels, labels, 3, slices=(FEATURES[:1], codes[:, :1]))
  with pytest.raises(PieError, match="its slice features differ from those of"):
    pie.load_study(str(tmp_path), log=_quiet)


# --- The analysis ---------------------------------------------------------------------------------------------------


def test_slice_stats_of_a_study_with_attributes_and_groups(tmp_path):
  study, table, codes = _slice_study(str(tmp_path), groups={"low": [0, 1], "ends": [0, 3]}, min_slice_size=40)
  assert len(table) == 2 * 10 and list(table.columns) == list(slices.outputs.SLICE_STATS.columns())
  level = table.loc[table["sparsity"] == 0.9].reset_index(drop=True)
  # Sizes and means recomputed from the predictions.
  pruned = study.predictions(0.9)
  for row in level.itertuples():
    if row.slice_kind == "feature":
      j = [f["name"] for f in FEATURES].index(row.slice_name)
      rows = codes[:, j] == FEATURES[j]["values"].index(row.slice_value)
    elif row.slice_kind == "intersection":
      values = [FEATURES[j]["values"].index(v) for j, v in enumerate(row.slice_value.split(" & "))]
      rows = (codes[:, 0] == values[0]) & (codes[:, 1] == values[1])
    else:
      rows = np.isin(study.labels, {"low": [0, 1], "ends": [0, 3]}[row.slice_value])
    assert row.num_examples == rows.sum()
    assert row.pruned_accuracy_mean == pytest.approx((pruned[:, rows] == study.labels[rows]).mean())
    if row.num_examples < 40:
      assert row.note.startswith("fewer than 40 examples") and np.isnan(row.p_value)
  summary = json.load(open(tmp_path / "analysis" / "summary.json"))
  entry = summary["levels"][2]
  assert entry["num_slices_tested"] == level["p_value"].notna().sum()
  assert entry["num_significant_slices_fdr"] == level["significant_fdr"].sum()
  assert set(slices.outputs.SLICES_KEYS) == set(summary["slices"])


def test_the_class_groups_of_the_config_are_used_unless_the_analysis_names_others(tmp_path):
  _, table, _ = _slice_study(str(tmp_path / "a"), groups={"first": [0]})
  assert "first" in set(table["slice_value"])
  _, table, _ = _slice_study(str(tmp_path / "b"), groups={"first": [0]}, class_groups={"second": [1]})
  assert "second" in set(table["slice_value"]) and "first" not in set(table["slice_value"])


@pytest.mark.slow
def test_bad_analysis_options_are_one_error_line(tmp_path):
  fake_study.write_study(str(tmp_path / "study"), seeds=2)
  study = pie.load_study(str(tmp_path / "study"), log=_quiet)
  with pytest.raises(PieError, match="min_slice_size must be an integer >= 1"):
    analysis.analyze(study, min_slice_size=0, log=_quiet)
  groups = tmp_path / "groups.json"
  groups.write_text(json.dumps({"cats": [0, 42]}))
  proc = run_binary(
      "analysis.analyze",
      f"--study_dir={tmp_path / 'study'}",
      f"--class_groups={groups}",
      "--novalidate",
      "--nopie_images",
      check=False,
  )
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert lines[-1] == (
      f"error: class groups {groups}: group 'cats' names class 42, outside 0..3 [flag --class_groups]"
  ), proc.stderr[-2000:]


# --- Fairlearn ------------------------------------------------------------------------------------------------------


def test_metric_frame_by_group_equals_the_slice_stats_means(tmp_path):
  study, table, _ = _slice_study(str(tmp_path), groups={"low": [0, 1], "high": [2, 3]}, min_slice_size=1)
  for sparsity, column in ((0.0, "dense_accuracy_mean"), (0.9, "pruned_accuracy_mean"), (0.5, "pruned_accuracy_mean")):
    rows = table.loc[table["sparsity"] == (0.9 if sparsity == 0.0 else sparsity)]
    for feature, kind in (
        ("attributes/Male", "feature"),
        ("attributes/Young", "feature"),
        (("attributes/Male", "attributes/Young"), "intersection"),
        (slices.CLASS_GROUP_NAME, "class_group"),
    ):
      frame = slices.metric_frame(study, sparsity, feature)
      assert list(frame.by_group.columns) == [m.name for m in study.models(sparsity)]
      means = frame.by_group.mean(axis=1)
      name = feature if isinstance(feature, str) else " & ".join(feature)
      expected = rows.loc[(rows["slice_kind"] == kind) & (rows["slice_name"] == name)].set_index("slice_value")[column]
      assert len(means) == len(expected) > 1
      keys = [" & ".join(k) if isinstance(k, tuple) else k for k in means.index]
      np.testing.assert_allclose(means.to_numpy(), expected.loc[keys].to_numpy(), rtol=1e-12)
      if kind != "class_group":  # every example has a feature value: overall is each model's top-1
        np.testing.assert_allclose(frame.overall.to_numpy(), study.top1_accuracy(sparsity), rtol=1e-12)


def test_metric_frame_bad_input(tmp_path):
  study, _, _ = _slice_study(str(tmp_path), groups={"low": [0, 1], "ends": [0, 3]})
  with pytest.raises(PieError, match="'attributes/Old' is not a slice feature of the study"):
    slices.metric_frame(study, 0.5, "attributes/Old")
  with pytest.raises(PieError, match="class groups overlap"):
    slices.metric_frame(study, 0.5, slices.CLASS_GROUP_NAME)
  with pytest.raises(PieError, match="one slice feature or a pair"):
    slices.metric_frame(study, 0.5, ("a", "b", "c"))


# --- Class groups on real label sets --------------------------------------------------------------------------------


def _noisy_population(study_dir, sparsity, seeds, labels, flip, num_classes, rng, extra=None, **metadata):
  """Models whose top-1 is the label except on a random `flip` share of the examples (plus `extra`: {class: share})."""
  for seed in range(seeds):
    share = np.full(len(labels), flip)
    for c, more in (extra or {}).items():
      share[labels == c] += more
    wrong = rng.random(len(labels)) < share
    top1 = np.where(wrong, (labels + rng.integers(1, num_classes, len(labels))) % num_classes, labels)
    fake_study.write_model(study_dir, sparsity, seed, top1, labels, num_classes, **metadata)


@pytest.mark.slow
def test_digits_class_groups_through_the_analysis_binary(tmp_path):
  """--class_groups=digits and --min_slice_size on the digits eval labels: pruning hurts 8 and 9, so "loops" (0, 6, 8,
  9) loses more than top-1; groups smaller than the minimum are reported with a note, and the report shows them."""
  labels = data_lib.load_dataset(digits_config().data).eval_arrays()[1].astype(np.int64)
  rng = np.random.default_rng(0)
  study_dir = str(tmp_path / "study")
  _noisy_population(study_dir, 0.0, 5, labels, 0.05, 10, rng)
  _noisy_population(study_dir, 0.9, 5, labels, 0.06, 10, rng, extra={8: 0.25, 9: 0.25})
  run_binary(
      "analysis.analyze",
      f"--study_dir={study_dir}",
      "--class_groups=digits",
      "--min_slice_size=160",
      "--novalidate",
      "--nopie_images",
      "--noise_floor_splits=0",
  )
  out = tmp_path / "study" / "analysis"
  table = pd.read_csv(out / "slice_stats.csv", keep_default_na=False, na_values=[""]).set_index("slice_value")
  groups = {"loops": [0, 6, 8, 9], "straight strokes": [1, 4, 7], "open curves": [2, 3, 5]}
  assert list(table.index) == list(groups) and set(table["slice_kind"]) == {"class_group"}
  for name, classes in groups.items():
    assert table.loc[name, "num_examples"] == np.isin(labels, classes).sum()
  assert table.loc["loops", "num_examples"] >= 160 > table.loc["open curves", "num_examples"]
  loops = table.loc["loops"]
  assert loops["significant_fdr"] and loops["normalized_change"] < -0.05 and loops["ci_high"] < 0
  for name in ("straight strokes", "open curves"):
    assert table.loc[name, "note"].startswith("fewer than 160 examples") and np.isnan(table.loc[name, "p_value"])
  summary = json.loads((out / "summary.json").read_text())
  assert summary["slices"]["min_slice_size"] == 160 and summary["slices"]["class_groups"]["loops"] == groups["loops"]
  assert summary["levels"][1]["num_slices_tested"] == 1 and summary["levels"][1]["num_significant_slices_fdr"] == 1
  page = (out / "report.html").read_text(encoding="utf-8")
  assert "<section id='subgroups'>" in page and "href='#subgroups'" in page


def test_fashion_mnist_shipped_grouping_on_its_test_labels(tmp_path):
  """The study config's class_groups "fashion_mnist" (configs/fashion_mnist.py) on the 10,000 real test labels:
  pruning that hurts sandals, sneakers and ankle boots makes "footwear" the one group significantly hurt."""
  if not os.path.exists(os.path.join(data_lib.FASHION_MNIST_DIR, data_lib.FASHION_MNIST_FILES["test"][1])):
    pytest.skip(f"Fashion-MNIST is not in {data_lib.FASHION_MNIST_DIR} (.ci/install_debian_packages.sh installs it)")
  config = fashion_mnist_config.get_config()
  assert config.class_groups == "fashion_mnist"
  labels = data_lib.load_dataset(config.data).eval_arrays()[1].astype(np.int64)
  names = list(data_lib.FASHION_MNIST_CLASSES)
  metadata = dict(
      dataset="fashion_mnist",
      class_names=names,
      config={"name": "fashion_mnist", "data": {"name": "fashion_mnist"}, "class_groups": config.class_groups},
  )
  rng = np.random.default_rng(1)
  study_dir = str(tmp_path / "study")
  _noisy_population(study_dir, 0.0, 4, labels, 0.1, 10, rng, **metadata)
  _noisy_population(study_dir, 0.9, 4, labels, 0.11, 10, rng, extra={5: 0.08, 7: 0.08, 9: 0.08}, **metadata)
  study = pie.load_study(study_dir, log=_quiet)
  summary = analysis.analyze_study(
      study, str(tmp_path / "out"), images=False, report=False, log=_quiet, bootstrap_resamples=0
  )
  table = pd.read_csv(tmp_path / "out" / "slice_stats.csv", keep_default_na=False, na_values=[""])
  table = table.set_index("slice_value")
  assert list(table.index) == ["tops", "footwear", "bags", "trousers", "dresses"]
  assert list(table["num_examples"]) == [4000, 3000, 1000, 1000, 1000]
  hurt = table.loc[table["significant_fdr"] & (table["normalized_change"] < 0)]
  assert list(hurt.index) == ["footwear"]
  assert table.loc["footwear", "accuracy_change"] == pytest.approx(-0.09, abs=0.01)
  assert summary["levels"][1]["num_significant_slices_fdr"] >= 1


def test_the_beam_analysis_writes_the_same_slice_stats(tmp_path):
  """Slice features, their intersection and a shipped grouping named at analysis time (not in the config), with a
  minimum size that leaves some slices untested: the Beam pipeline's slice_stats.csv and summary.json are the
  in-memory analysis's, byte for byte, although its blocks cut every slice."""
  pytest.importorskip("apache_beam")
  from pie import beam_analysis  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(2)
  codes = rng.integers(0, 2, (200, 2))
  study_dir = str(tmp_path / "study")
  fake_study.write_study(
      study_dir, levels=(0.0, 0.9), seeds=4, num_examples=200, num_classes=10, slices=(FEATURES, codes)
  )
  options = dict(class_groups="digits", min_slice_size=65, bootstrap_resamples=0, noise_floor_splits=0)
  study = pie.load_study(study_dir, log=_quiet)
  analysis.analyze_study(study, str(tmp_path / "memory"), images=False, report=False, log=_quiet, **options)
  beam_analysis.analyze_study(
      study_dir,
      str(tmp_path / "beam"),
      pipeline_args=("--runner=FnApiRunner",),
      block_size=17,
      shard_rows=23,
      log=_quiet,
      **options,
  )
  for name in ("slice_stats.csv", "summary.json"):
    assert (tmp_path / "beam" / name).read_text() == (tmp_path / "memory" / name).read_text(), name
  table = pd.read_csv(tmp_path / "beam" / "slice_stats.csv", keep_default_na=False, na_values=[""])
  assert list(table["slice_kind"]) == ["feature"] * 4 + ["intersection"] * 4 + ["class_group"] * 3
  small = table["num_examples"] < 65
  assert small.any() and table.loc[small, "p_value"].isna().all() and table.loc[~small, "p_value"].notna().all()


# --- Bad input ------------------------------------------------------------------------------------------------------


def test_an_empty_slice_is_a_note_not_a_crash(tmp_path):
  """A value the export records but no example has (an int feature's value of another split) is a row of size 0."""
  features = [{"name": "age", "kind": "int", "values": ["20", "40", "60"]}]
  codes = (np.arange(90) % 2 * 2)[:, None]  # 20 or 60, never 40
  fake_study.write_study(str(tmp_path / "study"), num_examples=90, slices=(features, codes))
  study = pie.load_study(str(tmp_path / "study"), log=_quiet)
  analysis.analyze_study(study, str(tmp_path / "out"), images=False, report=True, log=_quiet, min_slice_size=200)
  table = pd.read_csv(
      tmp_path / "out" / "slice_stats.csv", keep_default_na=False, na_values=[""], dtype={"slice_value": str}
  )
  assert list(table["slice_value"]) == ["20", "40", "60"]
  empty = table.loc[table["slice_value"] == "40"].iloc[0]
  assert empty["num_examples"] == 0 and empty["note"] == significance.NOTE_EMPTY_SUBSET
  assert np.isnan(empty["dense_accuracy_mean"]) and np.isnan(empty["pie_rate"]) and not empty["significant"]
  # Every slice is below the minimum: nothing tested, nothing significant, still a report.
  assert table["p_value"].isna().all() and not table["significant_fdr"].any()
  page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
  assert "0 of 3 slices tested" in page


@pytest.mark.slow
def test_a_slice_feature_the_dataset_lacks_fails_before_training(tmp_path):
  config = digits_config(slice_features=("attributes/Male",))
  with pytest.raises(PieError, match=r"dataset 'digits' has no feature 'attributes/Male' \(config.slice_features\)"):
    training.train_and_export(config, str(tmp_path / "model"), log=_quiet)
  assert not (tmp_path / "model" / "model.h5").exists() and not (tmp_path / "model" / "checkpoints").exists()
  with pytest.raises(PieError, match="config.slice_features must hold feature paths"):
    data_lib.load_dataset(config.data).slice_specs(["", "a"])
  with pytest.raises(PieError, match="names a feature twice"):
    data_lib.load_dataset(config.data).slice_specs(["a", "a"])


# --- CelebA on TFDS mock data ---------------------------------------------------------------------------------------

_CELEBA_EXAMPLES = 24


def _celeba_config(data_dir, **overrides):
  """configs/celeba_blond.py shrunk to seconds: 16x16 faces, one step a model, 2 x 2 models, and a small CNN in the
  ResNet-18's place (tracing a pruned ResNet-18's train step alone takes 20 s here; test_celeba_model builds it)."""
  config = celeba_blond.get_config()
  config.data.data_dir = str(data_dir)
  config.model = ml_collections.ConfigDict({"name": "small_cnn", "kwargs": {"filters": (4, 8), "hidden": 8}})
  tiny = {
      "data.image_size": 16,
      "data.shuffle_buffer": 8,
      "batch_size": 4,
      "steps_per_epoch": 1,
      "num_epochs": 1,
      "warmup_epochs": 0,
      "eval_batch_size": 16,
      "sparsity_levels": (0.0, 0.5),
      "num_seeds": 2,
      "controls": (),
      "pruning.begin_step": 0,
      "pruning.end_step": 1,
      "pruning.frequency": 1,
  }
  return override(config, **{**tiny, **overrides})


def _mock_celeba_columns(data_dir):
  """The mocked test split's Blond_Hair, Male and Young, read without pie (what the export must agree with)."""
  ds = tfds.load("celeb_a", split="test", data_dir=str(data_dir), shuffle_files=False)
  rows = [
      (ex["attributes"]["Blond_Hair"], ex["attributes"]["Male"], ex["attributes"]["Young"])
      for ex in ds.as_numpy_iterator()
  ]
  return np.array(rows, np.int64).T


@pytest.mark.slow
def test_a_celeba_study_on_mock_data(tmp_path):
  """The CelebA config end to end on random faces: Blond_Hair as the label, Male and Young exported beside every
  model's predictions, slice_stats.csv with each attribute value and the four gender x age cells, the report's
  Subgroups section, and Fairlearn's view of the same accuracies."""
  config = _celeba_config(tmp_path / "tfds")
  study_dir = tmp_path / "study"
  with tfds.testing.mock_data(num_examples=_CELEBA_EXAMPLES):
    failed = population.run_worker(config, str(study_dir), log=_quiet)
    blond, male, young = _mock_celeba_columns(tmp_path / "tfds")
  assert failed == [] and not (tmp_path / "tfds").exists()
  study = pie.load_study(str(study_dir), log=_quiet)
  assert study.class_names == ["not blond", "blond"] and study.num_examples == _CELEBA_EXAMPLES
  np.testing.assert_array_equal(study.labels, blond)
  assert study.slice_features == [
      {"name": "attributes/Male", "kind": "bool", "values": ["false", "true"]},
      {"name": "attributes/Young", "kind": "bool", "values": ["false", "true"]},
  ]
  np.testing.assert_array_equal(study.slice_values, np.stack([male, young], axis=1))

  out = study_dir / "analysis"
  analysis.analyze_study(study, str(out), images=False, log=_quiet, min_slice_size=5, bootstrap_resamples=0)
  table = pd.read_csv(out / "slice_stats.csv", keep_default_na=False, na_values=[""])
  assert list(table["slice_kind"]) == ["feature"] * 4 + ["intersection"] * 4
  assert list(table["slice_value"][4:]) == ["false & false", "false & true", "true & false", "true & true"]
  cells = [((male == m) & (young == y)).sum() for m in (0, 1) for y in (0, 1)]
  assert (
      list(table["num_examples"])
      == [(male == 0).sum(), (male == 1).sum(), (young == 0).sum(), (young == 1).sum()] + cells
  )
  for row in table.itertuples():
    assert (row.num_examples < 5) == str(row.note).startswith("fewer than 5 examples")
  page = (out / "report.html").read_text(encoding="utf-8")
  assert "<section id='subgroups'>" in page and "<code>attributes/Male</code>" in page
  frame = slices.metric_frame(study, 0.5, ("attributes/Male", "attributes/Young"))
  means = frame.by_group.mean(axis=1).to_numpy()
  present = table["num_examples"][4:].to_numpy() > 0
  np.testing.assert_allclose(means, table["pruned_accuracy_mean"][4:].to_numpy()[present], rtol=1e-12)


def test_celeba_model_is_resnet18():
  """The config's model: ResNet-18 (stem, 4 stages of 2 basic blocks, 3 projection shortcuts), 11,689,512 trainable
  parameters with ImageNet's 1000 classes as published, every convolution in the pruning scope."""
  config = celeba_blond.get_config()
  assert config.model.name == "resnet18" and config.data.label_feature == "attributes/Blond_Hair"
  model = models_lib.build_model(config.model, (32, 32, 3), 1000)
  assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 11_689_512
  convs = [layer.name for layer in model.layers if isinstance(layer, tf_keras.layers.Conv2D)]
  assert len(convs) == 1 + 16 + 3 and {"stem_conv", "stage2_block1_proj", "stage4_block2_conv2"} <= set(convs)
  assert set(convs) == set(variants.layers_in_scope(model, config.pruning.scope))
  assert models_lib.build_model(config.model, (128, 128, 3), 2).output_shape == (None, 2)


def test_celeba_bad_features_are_one_error_line(tmp_path):
  with tfds.testing.mock_data(num_examples=4):
    dataset = data_lib.load_dataset(_celeba_config(tmp_path / "tfds").data)
    with pytest.raises(
        PieError,
        match=r"dataset 'celeb_a' has no feature 'attributes/Old' \(config.slice_features\): in 'attributes' it has "
        r"5_o_Clock_Shadow, ",
    ):
      dataset.slice_specs(["attributes/Male", "attributes/Old"])
    with pytest.raises(
        PieError, match=r"feature 'image' \(config.slice_features\) is Image of shape \(218, 178, 3\), not one value"
    ):
      dataset.slice_specs(["image"])
    with pytest.raises(PieError, match=r"has no feature 'attributes/Blond' \(config.label_feature\)"):
      data_lib.load_dataset(_celeba_config(tmp_path / "tfds", **{"data.label_feature": "attributes/Blond"}).data)
