"""The output contract (pie/outputs.py): the producers write what it declares, the docs describe it, and
pies.tfrecord has one writer and one reader."""

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import pie
from pie import analysis
from pie import outputs
from pie import robustness
from pie import variants
from pie.errors import PieError
from tests import fake_study
from tests.conftest import REPO


def _analyse(study_dir, out_dir, controls=False, levels=(0.0, 0.5, 0.9), **options):
  labels, _ = fake_study.write_study(str(study_dir), levels=levels, seeds=4)
  if controls:
    rng = np.random.default_rng(1)
    for seed in range(4, 8):
      top1 = np.where(rng.random(len(labels)) < 0.1, rng.integers(0, 4, len(labels)), labels)
      fake_study.write_model(str(study_dir), 0.0, seed, top1, labels, 4, method=variants.DENSE_REPLICATE)
  study = pie.load_study(str(study_dir), log=lambda message: None)
  analysis.analyze_study(study, str(out_dir), images=False, report=False, log=lambda message: None, **options)
  return out_dir


def _header(path):
  with open(path, encoding="utf-8") as f:
    return tuple(f.readline().rstrip("\n").split(","))


@pytest.mark.parametrize("controls, bootstrap", [(False, True), (True, True), (True, False)])
def test_analysis_writes_the_declared_columns(tmp_path, controls, bootstrap):
  out = _analyse(
      tmp_path / "study",
      tmp_path / "out",
      controls=controls,
      bootstrap_resamples=20 if bootstrap else 0,
      noise_floor_splits=20,
  )
  assert sorted(os.listdir(out)) == sorted(set(outputs.ANALYSIS_FILES) - {outputs.PIES_TFRECORD, outputs.REPORT_HTML})
  for table in outputs.ANALYSIS_TABLES:
    assert _header(out / table.name) == table.columns(bootstrap=bootstrap, method=controls), table.name
  accuracy = pd.read_csv(out / outputs.PIE_ACCURACY_CSV)
  if controls:
    accuracy = accuracy.loc[accuracy[outputs.METHOD_COLUMN] == "magnitude"]
  assert list(zip(accuracy["population"], accuracy["subset"])) == 2 * [
      (population, subset) for population in outputs.POPULATIONS for subset in outputs.SUBSETS
  ]


def test_summary_has_the_declared_keys(tmp_path):
  out = _analyse(tmp_path / "study", tmp_path / "out", controls=True, bootstrap_resamples=0, noise_floor_splits=20)
  summary = json.loads((out / outputs.SUMMARY_JSON).read_text())
  assert set(outputs.SUMMARY_KEYS + outputs.SUMMARY_OPTIONAL) - {"normalization_warning"} <= set(summary)
  assert set(outputs.STUDY_KEYS) <= set(summary["study"])
  assert [level["role"] for level in summary["levels"]] == ["dense", "control", "pruned", "pruned"]
  for level in summary["levels"]:
    assert set(outputs.LEVEL_KEYS + outputs.LEVEL_METHOD_KEYS) <= set(level)
    if level["role"] != "dense":  # a compared population
      assert set(outputs.LEVEL_OPTIONAL + outputs.LEVEL_HARM_KEYS) <= set(level)
    if level["role"] == "pruned":
      assert set(outputs.LEVEL_FLOOR_KEYS) <= set(level)
  assert set(outputs.NOISE_FLOOR_KEYS) <= set(summary["noise_floor"])
  assert set(outputs.HALF_SPLITS_KEYS) <= set(summary["noise_floor"]["half_splits"])


def test_a_paired_study_writes_the_paired_columns_and_keys(tmp_path):
  study_dir, out = tmp_path / "study", tmp_path / "out"
  labels, _ = fake_study.write_study(str(study_dir), levels=(0.0,), seeds=4)
  rng = np.random.default_rng(2)
  for seed in range(4):
    top1 = np.where(rng.random(len(labels)) < 0.3, rng.integers(0, 4, len(labels)), labels)
    twin = variants.model_name(variants.DENSE, 0.0, seed)
    fake_study.write_model(str(study_dir), 0.5, seed, top1, labels, 4, init_from=twin)
  study = pie.load_study(str(study_dir), log=lambda message: None)
  analysis.analyze_study(study, str(out), images=False, report=False, log=lambda message: None, noise_floor_splits=10)
  for table in outputs.ANALYSIS_TABLES:
    assert _header(out / table.name) == table.columns(bootstrap=True, paired=True), table.name
  summary = json.loads((out / outputs.SUMMARY_JSON).read_text())
  assert summary["design"] == outputs.PAIRED_DESIGN
  pruned = summary["levels"][1]
  assert set(outputs.LEVEL_PAIRED_KEYS + outputs.LEVEL_HARM_KEYS) <= set(pruned)
  assert set(outputs.SINGLE_PAIR_KEYS) <= set(pruned["single_pair"])


def test_mitigations_have_the_declared_keys(tmp_path):
  study_dir, out = tmp_path / "study", tmp_path / "out"
  labels, _ = fake_study.write_study(str(study_dir), levels=(0.0, 0.5), seeds=4)
  rng = np.random.default_rng(3)
  for seed in range(4):
    top1 = np.where(rng.random(len(labels)) < 0.2, rng.integers(0, 4, len(labels)), labels)
    fake_study.write_model(str(study_dir), 0.5, seed, top1, labels, 4, method="magnitude+distill")
  study = pie.load_study(str(study_dir), log=lambda message: None)
  analysis.analyze_study(study, str(out), images=False, report=False, log=lambda message: None, noise_floor_splits=10)
  summary = json.loads((out / outputs.SUMMARY_JSON).read_text())
  assert [set(c) for c in summary["mitigations"]] == [set(outputs.MITIGATION_KEYS)]
  assert summary["mitigations"][0]["population"] == "magnitude+distill"


def test_a_study_of_dense_models_only_writes_the_headers(tmp_path):
  # Nothing is compared (the noise floor alone): every table is its header.
  out = _analyse(tmp_path / "study", tmp_path / "out", levels=(0.0,), noise_floor_splits=20)
  for table in outputs.ANALYSIS_TABLES:
    with open(out / table.name, encoding="utf-8") as f:
      assert f.read() == ",".join(table.columns()) + "\n", table.name


def test_robustness_tables_have_the_declared_columns(tmp_path):
  fake_study.write_study(str(tmp_path), levels=(0.0, 0.5), seeds=3)
  study = pie.load_study(str(tmp_path), log=lambda message: None)
  rng = np.random.default_rng(0)
  predictions = {s: rng.integers(0, 4, (3, study.num_examples)) for s in study.levels}
  results = [robustness.SetResult("fog", severity, study.labels, predictions) for severity in (1, 2)]
  clean_top1 = {s: study.top1_accuracy(s) for s in study.levels}
  table = robustness.robustness_table(results, clean_top1)
  assert tuple(table.columns) == outputs.ROBUSTNESS.columns() and len(table) == 2
  assert tuple(robustness.models_table(study, results).columns) == outputs.ROBUSTNESS_MODELS.columns()


def test_every_column_and_feature_is_documented():
  readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  section = readme[readme.index("## Analysis outputs") : readme.index("## Python API")]
  for table in outputs.ANALYSIS_TABLES:
    columns = table.columns(bootstrap=True, method=True, paired=True)
    assert [c for c in columns if f"`{c}`" not in section] == [], table.name
  keys = outputs.LEVEL_PAIRED_KEYS + outputs.LEVEL_HARM_KEYS + outputs.SINGLE_PAIR_KEYS + outputs.MITIGATION_KEYS
  keys += outputs.LEVEL_FLOOR_KEYS + outputs.CORRELATION_KEYS + ("design", "mitigations", "fdr_scope")
  assert [c for c in outputs.CALIBRATION.columns() if f"`{c}`" not in section] == [], outputs.CALIBRATION_CSV
  assert [k for k in keys if f"`{k}`" not in section] == []
  assert [name for name, _ in outputs.PIE_IMAGE_FEATURES if f"`{name}`" not in section] == []
  docs = open(os.path.join(REPO, "docs", "robustness.md"), encoding="utf-8").read()
  docs = docs[docs.index("## Outputs") :]
  for table in (outputs.ROBUSTNESS, outputs.ROBUSTNESS_MODELS):
    assert [c for c in table.columns() if not re.search(rf"\b{c}\b", docs)] == [], table.name


def test_table_kinds_and_the_method_column_rule():
  for table in outputs.ANALYSIS_TABLES + (outputs.ROBUSTNESS, outputs.ROBUSTNESS_MODELS):
    assert outputs.table(table.name) is table
    assert {table.kind(c) for c in table.columns(bootstrap=True, method=True, paired=True)} <= {
        outputs.INT,
        outputs.FLOAT,
        outputs.BOOL,
        outputs.STR,
    }
    assert set(table.bootstrap) <= set(table.optional_names) and set(table.paired) <= set(table.optional_names)
  with pytest.raises(KeyError, match="not a table"):
    outputs.table("summary.json")
  assert not outputs.has_method_column(["dense", "magnitude"])
  assert outputs.has_method_column(["dense", "magnitude", variants.DENSE_REPLICATE])
  assert outputs.has_method_column(["dense", "2:4"])


def _pies_table(rows):
  return pd.DataFrame(
      [
          {
              "sparsity": sparsity,
              "example_id": example_id,
              "label": label,
              "dense_modal": label,
              "pruned_modal": (label + 1) % 10,
              "dense_modal_share": 0.75,
              "pruned_modal_share": 0.5,
          }
          for sparsity, example_id, label in rows
      ]
  )


def _images(ids, shape=(8, 8, 1)):
  rng = np.random.default_rng(0)
  return {i: rng.integers(0, 256, shape, dtype=np.uint8) for i in ids}


def test_pie_images_round_trip(tmp_path):
  path = str(tmp_path / outputs.PIES_TFRECORD)
  table = _pies_table([(0.5, 3, 7), (0.9, 3, 7), (0.9, 11, 2)])
  images = _images([3, 11])
  outputs.write_pie_images(path, table, images)
  records = outputs.read_pie_records(path)
  assert [sorted(r) for r in records] == [sorted(name for name, _ in outputs.PIE_IMAGE_FEATURES)] * 3
  for record, row in zip(records, table.itertuples(index=False)):
    assert record["sparsity"] == pytest.approx(row.sparsity, abs=1e-7)  # float32 in the file
    assert (record["example_id"], record["label"], record["dense_modal"], record["pruned_modal"]) == (
        row.example_id,
        row.label,
        row.dense_modal,
        row.pruned_modal,
    )
    assert record["image"].startswith(b"\x89PNG")
  decoded = pie.read_pie_images(path)
  for record, row in zip(decoded, table.itertuples(index=False)):
    np.testing.assert_array_equal(record["image"], images[row.example_id])
  # One reader, under all the names scripts use.
  assert pie.read_pie_images is analysis.read_pie_images is outputs.read_pie_images


def test_pie_images_are_serialized_deterministically(tmp_path):
  # Protobuf's default order of map entries is random per process; in canonical form the bytes depend only on the
  # content, so a rerun of the same analysis writes the same file.
  path = str(tmp_path / outputs.PIES_TFRECORD)
  outputs.write_pie_images(path, _pies_table([(0.9, 1, 4), (0.9, 2, 5)]), _images([1, 2]))
  for raw in tf.data.TFRecordDataset(path):
    raw = raw.numpy()
    assert raw == tf.train.Example.FromString(raw).SerializeToString(deterministic=True)


def test_damaged_pie_images_are_named(tmp_path):
  path = tmp_path / outputs.PIES_TFRECORD
  outputs.write_pie_images(str(path), _pies_table([(0.9, 1, 4), (0.9, 2, 5)]), _images([1, 2]))
  path.write_bytes(path.read_bytes()[:-30])
  with pytest.raises(PieError, match=f"{path} is truncated or corrupt .*rerun the analysis"):
    outputs.read_pie_records(path)

  other = tmp_path / "other.tfrecord"
  with tf.io.TFRecordWriter(str(other)) as writer:
    feature = {"sparsity": tf.train.Feature(float_list=tf.train.FloatList(value=[0.9]))}
    writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  with pytest.raises(PieError, match=f"{other}: record 0 has no feature 'example_id'"):
    outputs.read_pie_records(other)


def test_the_calibration_binary_writes_the_declared_table(tmp_path):
  from pie import calibration  # pylint: disable=import-outside-toplevel

  fake_study.write_study(str(tmp_path / "study"), levels=(0.0,), seeds=6, num_examples=80)
  table = calibration.run(str(tmp_path / "study"), str(tmp_path / "out"), num_splits=20, log=lambda m: None)
  written = pd.read_csv(tmp_path / "out" / outputs.CALIBRATION_CSV)
  assert list(written.columns) == list(outputs.CALIBRATION.columns()) == list(table.columns)
  assert sorted(written["normalization"]) == ["per_model", "population"]
  assert (written["n_first"] == 3).all() and (written["num_splits"] == 20).all()
