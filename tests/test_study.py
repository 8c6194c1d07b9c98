"""Loading a study: the populations, and every inconsistency a PieError naming the file."""

import json
import os

import numpy as np
import pandas as pd
import pytest

import pie
from pie import analysis
from pie import stats as pie_stats
from pie.errors import PieError
from tests import fake_study


def test_levels_and_predictions(tmp_path):
  labels, _ = fake_study.write_study(str(tmp_path), levels=(0.0, 0.5, 0.9), seeds=3)
  study = pie.load_study(str(tmp_path), log=lambda m: None)
  assert sorted(study.levels) == [0.0, 0.5, 0.9]
  assert study.pruned_levels == [0.5, 0.9]
  assert study.predictions(0.5).shape == (3, len(labels))
  np.testing.assert_array_equal(study.labels, labels)
  assert [m.seed for m in study.levels[0.9]] == [0, 1, 2]


def test_explicit_file_list(tmp_path):
  _, paths = fake_study.write_study(str(tmp_path), seeds=2)
  study = pie.load_study(prediction_files=paths, log=lambda m: None)
  assert sum(len(m) for m in study.levels.values()) == 4


def test_no_dense_population(tmp_path):
  fake_study.write_study(str(tmp_path), levels=(0.5, 0.9))
  with pytest.raises(PieError, match="no dense population"):
    pie.load_study(str(tmp_path), log=lambda m: None)


def test_only_dense(tmp_path):
  # A study of dense models only loads; its analysis is the noise floor alone (A/A splits of the dense models).
  fake_study.write_study(str(tmp_path), levels=(0.0,), seeds=3)
  study = pie.load_study(str(tmp_path), log=lambda m: None)
  with pytest.raises(PieError, match="only 3 dense models and no other population"):
    analysis.analyze(study, log=lambda m: None)
  fake_study.write_study(str(tmp_path), levels=(0.0,), seeds=6)
  study = pie.load_study(str(tmp_path), log=lambda m: None)
  tables, summary, pie_ids = analysis.analyze(study, log=lambda m: None)
  assert [level["role"] for level in summary["levels"]] == ["dense"] and pie_ids == {}
  assert summary["noise_floor"]["half_splits"]["sizes"] == [3, 3]
  assert all(frame.empty for frame in tables.values())
  assert list(tables["class_stats.csv"].columns[:3]) == ["sparsity", "class_id", "class_name"]


def test_level_with_one_model(tmp_path):
  fake_study.write_study(str(tmp_path), levels=(0.0,), seeds=2)
  labels = np.arange(60) % 4
  fake_study.write_model(str(tmp_path), 0.9, 0, labels, labels, 4)
  with pytest.raises(PieError, match=r"level 0.9 has 1 model .*sparsity90_seed0\.tfrecord"):
    pie.load_study(str(tmp_path), log=lambda m: None)


def test_num_classes_disagree(tmp_path):
  labels, _ = fake_study.write_study(str(tmp_path), seeds=2)
  path = fake_study.write_model(str(tmp_path), 0.5, 7, labels, labels, 5)
  with pytest.raises(PieError, match=r"sparsity50_seed7\.tfrecord: num_classes is 5"):
    pie.load_study(str(tmp_path), log=lambda m: None)
  assert os.path.exists(path)


def test_labels_disagree(tmp_path):
  labels, _ = fake_study.write_study(str(tmp_path), seeds=2)
  fake_study.write_model(str(tmp_path), 0.5, 7, labels, np.roll(labels, 1), 4)
  with pytest.raises(PieError, match=r"sparsity50_seed7\.tfrecord: labels differ"):
    pie.load_study(str(tmp_path), log=lambda m: None)


def test_example_counts_disagree(tmp_path):
  fake_study.write_study(str(tmp_path), seeds=2)
  labels = np.arange(50) % 4
  fake_study.write_model(str(tmp_path), 0.5, 7, labels, labels, 4)
  with pytest.raises(PieError, match=r"sparsity50_seed7\.tfrecord: num_examples is 50"):
    pie.load_study(str(tmp_path), log=lambda m: None)


def test_mixed_configs_refused_unless_allowed(tmp_path):
  labels, _ = fake_study.write_study(str(tmp_path), seeds=2)
  fake_study.write_model(str(tmp_path), 0.5, 7, labels, labels, 4, config_hash="0123456789abcdef")
  with pytest.raises(PieError, match="config hash 0123456789abcdef differs"):
    pie.load_study(str(tmp_path), log=lambda m: None)
  study = pie.load_study(str(tmp_path), allow_mixed_configs=True, log=lambda m: None)
  assert len(study.levels[0.5]) == 3


def test_unfinished_export_is_skipped_not_analysed(tmp_path):
  labels, paths = fake_study.write_study(str(tmp_path), seeds=3)
  os.remove(paths[-1][: -len(".tfrecord")] + ".json")
  messages = []
  study = pie.load_study(str(tmp_path), log=messages.append)
  assert len(study.levels[0.5]) == 2 and study.incomplete == [paths[-1]]
  assert any("skipping" in m and paths[-1] in m for m in messages)


def test_missing_study_dir(tmp_path):
  with pytest.raises(PieError, match="no such study directory"):
    pie.load_study(str(tmp_path / "nope"))
  with pytest.raises(PieError, match="no prediction files"):
    pie.load_study(str(tmp_path))


def test_analysis_tables_by_hand(tmp_path):
  # 4 examples, 2 classes, 3 dense and 3 pruned models with hand-picked votes.
  labels = np.array([0, 1, 0, 1])
  dense = [[0, 1, 0, 1], [0, 1, 1, 1], [0, 1, 0, 0]]
  pruned = [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1]]
  for seed, top1 in enumerate(dense):
    fake_study.write_model(str(tmp_path), 0.0, seed, top1, labels, 2)
  for seed, top1 in enumerate(pruned):
    fake_study.write_model(str(tmp_path), 0.5, seed, top1, labels, 2)
  study = pie.load_study(str(tmp_path), log=lambda m: None)
  tables, summary, pie_ids = analysis.analyze(study, log=lambda m: None)
  # Dense modal: 0, 1, 0, 1; pruned modal: 1, 1, 1, 0 -> PIEs are examples 0, 2, 3.
  pies = tables["pies.csv"]
  assert list(pies.example_id) == [0, 2, 3]
  assert list(pies.dense_modal) == [0, 0, 1] and list(pies.pruned_modal) == [1, 1, 0]
  np.testing.assert_allclose(pies.dense_modal_share, [1, 2 / 3, 2 / 3])
  np.testing.assert_allclose(pies.pruned_modal_share, [2 / 3, 2 / 3, 2 / 3])
  np.testing.assert_array_equal(pie_ids[0.5], [0, 2, 3])
  level = summary["levels"][1]
  assert level["num_pies"] == 3 and level["pie_fraction"] == 0.75
  dense_acc = np.array([1.0, 0.75, 0.75])
  assert summary["levels"][0]["top1_mean"] == pytest.approx(dense_acc.mean())
  assert summary["levels"][0]["top1_std"] == pytest.approx(dense_acc.std(ddof=1))
  acc = tables["pie_accuracy.csv"].set_index(["population", "subset"])
  # Dense on PIEs (examples 0, 2, 3): model accuracies 1, 2/3, 2/3.
  assert acc.loc[("dense", "pie"), "top1_mean"] == pytest.approx(7 / 9)
  assert acc.loc[("dense", "non_pie"), "num_examples"] == 1
  assert acc.loc[("dense", "random"), "num_examples"] == 3
  json.dumps(summary)  # serializable


def test_csv_floats_read_back_exactly(tmp_path):
  fake_study.write_study(str(tmp_path / "study"), levels=(0.0, 0.5, 0.9), seeds=4, num_examples=90, num_classes=7)
  study = pie.load_study(str(tmp_path / "study"), log=lambda m: None)
  tables, _, _ = analysis.analyze(study, bootstrap_resamples=20, log=lambda m: None)
  for name, frame in tables.items():
    text = analysis.csv_text(frame)
    (tmp_path / name).write_text(text)
    back = pd.read_csv(tmp_path / name, float_precision="round_trip")
    for column in frame.columns:
      if frame[column].dtype.kind == "f":
        # Bit for bit, NaN included: a reader can recompute every statistic from the written values.
        np.testing.assert_array_equal(back[column].to_numpy(float), frame[column].to_numpy(float), err_msg=column)


def test_tie_sensitivity_counts():
  # 4 models per population, two labels tied 2-2 on some examples: the PIE status of those depends on the tie rule.
  labels = np.array([0, 1, 2, 3])
  dense = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [1, 1, 3, 3], [1, 1, 3, 3]])  # example 0: 0/1 tie; 2: 2/3 tie
  pruned = np.array([[0, 1, 2, 0], [0, 1, 2, 0], [0, 1, 3, 0], [0, 1, 3, 0]])  # 2: 2/3 tie; 3: unanimous 0
  details = [pie_stats.modal_labels(p, return_details=True) for p in (dense, pruned)]
  largest = [pie_stats.modal_labels(p, tie_break="largest") for p in (dense, pruned)]
  pies, table, ties = analysis.pie_rows(
      0.5, np.arange(4), labels, *details, [str(c) for c in range(4)], largest_id_modal=largest
  )
  # Smallest-id rule: dense modal (0, 1, 2, 3), pruned (0, 1, 2, 0): PIE on example 3 only.
  # Largest-id rule: dense (1, 1, 3, 3), pruned (0, 1, 3, 0): PIEs on examples 0 and 3.
  np.testing.assert_array_equal(pies, [False, False, False, True])
  assert ties["num_pies_largest_id_rule"] == 2 and ties["num_pies_tie_dependent"] == 1
  assert ties["num_ties_dense"] == 2 and ties["num_ties_pruned"] == 1 and ties["num_pies_with_tie"] == 0


def test_csv_text_is_pandas_text():
  """Tables of numbers alone are joined directly: the same text as pandas writes (floats as repr, NaN empty), for
  negative zero, infinities, big integers, booleans and small integer types; tables with text go through pandas."""
  rng = np.random.default_rng(4)

  def pandas_text(frame):
    frame = frame.assign(
        **{
            name: ["" if v != v else repr(v) for v in frame[name].tolist()]
            for name in frame.columns
            if frame[name].dtype.kind == "f"
        }
    )
    return frame.to_csv(index=False)

  kinds = {
      "f": lambda n: rng.choice([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-300, 0.1, 1 / 3, 1e22, -2.5], n),
      "i": lambda n: rng.integers(-(10**15), 10**15, n),
      "b": lambda n: rng.random(n) < 0.5,
      "u": lambda n: rng.integers(0, 200, n).astype(np.uint8),
      "s": lambda n: rng.choice(["a", "b,c", 'q"x', "", "=1+2"], n),
  }
  for trial in range(60):
    n = int(rng.integers(0, 40))
    columns = rng.choice(list(kinds) if trial % 2 else ["f", "i", "b", "u"], int(rng.integers(1, 6)))
    frame = pd.DataFrame({f"{kind}{j}": kinds[kind](n) for j, kind in enumerate(columns)})
    assert analysis.csv_text(frame) == pandas_text(frame), (trial, list(frame.columns))
