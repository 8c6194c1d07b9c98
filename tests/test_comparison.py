"""One model against its compressed versions (pie.comparison, analysis.compare): the statistics against scipy and
against planted flips with a known answer, the gate, every kind of input, and every bad input.

The statistics run on label arrays shaped like the digits eval split (500 examples, 10 classes of 46 to 51); the
models are trained once per module on digits (pie.training.train_and_export, a few seconds).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import pie
from pie import cli
from pie import comparison
from pie import model_dir
from pie import outputs
from pie import quantization
from pie import training
from pie.comparison_inputs import ModelOutputs
from pie.errors import PieError
from tests import fake_study
from tests.conftest import REPO
from tests.conftest import digits_config
from tests.conftest import run_binary

NUM_CLASSES = 10
CLASS_NAMES = [str(c) for c in range(NUM_CLASSES)]


def _digits_labels():
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

  return load_digits().target[-500:].astype(np.int64)


LABELS = _digits_labels()


def _outputs(name, top1):
  return ModelOutputs(name, np.asarray(top1, np.int64), np.full(len(top1), np.nan))


def _planted(rng, lost, gained, reference_accuracy=0.9, labels=LABELS):
  """Reference and candidate top-1 with class-independent outcomes: every example is right for the reference with
  probability `reference_accuracy`, then lost with probability `lost` (of all examples) or gained with `gained`,
  whatever its class. Every class's expected recall change is then gained - lost, the overall change: its true
  excess is 0."""
  n = len(labels)
  ref_right = rng.random(n) < reference_accuracy
  draw = rng.random(n)
  cand_right = np.where(ref_right, draw >= lost / reference_accuracy, draw < gained / (1 - reference_accuracy))
  reference = np.where(ref_right, labels, (labels + 1) % NUM_CLASSES)
  candidate = np.where(cand_right, labels, (labels + 2) % NUM_CLASSES)
  return reference, candidate


def _pair(reference, candidate, seed=0, **kwargs):
  return comparison.compare_pair(
      LABELS, _outputs("reference", reference), _outputs("candidate", candidate), CLASS_NAMES, seed=seed, **kwargs
  )


# ---------------------------------------------------------------------------------------------------------------------
# Statistics on arrays.


def test_mcnemar_p_values_are_binomtest_on_the_discordant_counts():
  reference, candidate = _planted(np.random.default_rng(3), lost=0.12, gained=0.04)
  classes, examples, _ = _pair(reference, candidate)
  for row in classes.itertuples(index=False):
    mine = examples.loc[examples["label"] == row.class_id]
    lost = int((mine["reference_correct"] & ~mine["candidate_correct"]).sum())
    gained = int((~mine["reference_correct"] & mine["candidate_correct"]).sum())
    expected = scipy_stats.binomtest(lost, lost + gained, 0.5).pvalue if lost + gained else 1.0
    assert row.p_value == expected, row.class_id
  assert classes["q_value"].tolist() == pytest.approx(scipy_stats.false_discovery_control(classes["p_value"]))
  # A class with lopsided flips: 9 lost and none gained is p = 2 / 2**9 exactly.
  assert comparison.mcnemar_p_values([9, 0, 3], [0, 0, 3]).tolist() == [2 / 2**9, 1.0, 1.0]


def test_a_candidate_equal_to_the_reference_has_zero_intervals_and_passes_any_gate():
  reference, _ = _planted(np.random.default_rng(0), 0.05, 0.02)
  gate = comparison.Gate(max_excess_drop=0.0, max_top1_drop=0.0)
  classes, examples, summary = _pair(reference, reference, gate=gate)
  assert (classes["ci_low"] == 0).all() and (classes["ci_high"] == 0).all()
  assert (classes["excess_change"] == 0).all() and (classes["p_value"] == 1).all()
  assert not classes["significant_fdr"].any() and examples.empty
  assert summary["gate"]["passed"] and summary["agreement"] == 1.0
  assert summary["intensification_ratio"] is None  # nothing moved relative to top-1


def _coverage(lost, gained, seeds, resamples=1000):
  """Share of (seed, class) intervals of excess_change that contain 0, the true excess of planted flips."""
  covered = total = 0
  for seed in range(seeds):
    reference, candidate = _planted(np.random.default_rng(seed), lost, gained)
    classes, _, _ = _pair(reference, candidate, seed=seed, num_resamples=resamples)
    covered += int(((classes["ci_low"] <= 0) & (classes["ci_high"] >= 0)).sum())
    total += len(classes)
  return covered / total


def test_intervals_cover_a_planted_excess_of_zero_at_about_the_nominal_rate():
  """Flips planted with no class preference, so every class's true excess is 0; 95% intervals over 200 seeds x 10
  classes. Measured (seeds 0-199, 1000 draws): 99.45% at the rates of a 90%-pruned model (6% of examples lost, 2%
  gained), 100% at those of an int8 model (2% lost, none gained): each end carries one pseudo-example on its side
  (comparison.excess_change_bounds), which makes them conservative where nothing is hurt so that they still cover a
  class that is (tests/test_claims.py). The Jeffreys-prior bootstrap before them covered 95.8% and 99.2%, the
  percentile bootstrap of the examples 92.6% and 65.8%: a class without a flip got a zero-width interval."""
  assert 0.975 <= _coverage(0.06, 0.02, seeds=200) <= 1.0
  assert 0.975 <= _coverage(0.02, 0.0, seeds=200) <= 1.0


def test_mcnemar_is_calibrated_when_flips_are_class_independent():
  """A/A-like: two models that lose and gain the same share of examples (8% each way), whatever their class, so no
  class's recall changes in expectation. Measured over 300 seeds x 10 classes: 2.1% of p-values below 0.05 (the exact
  test is conservative with a few flips a class), 1.7% of seeds with an FDR discovery."""
  below = discoveries = 0
  seeds = 300
  for seed in range(seeds):
    reference, candidate = _planted(np.random.default_rng(1000 + seed), 0.08, 0.08)
    classes, _, _ = _pair(reference, candidate, seed=seed, num_resamples=100)
    below += int((classes["p_value"] < 0.05).sum())
    discoveries += bool(classes["significant_fdr"].any())
  assert 0.005 <= below / (seeds * NUM_CLASSES) <= 0.05
  assert discoveries / seeds <= 0.05


def test_a_planted_harm_is_found_and_gated():
  rng = np.random.default_rng(7)
  reference, candidate = _planted(rng, 0.02, 0.01)
  hurt = np.flatnonzero((LABELS == 4) & (reference == LABELS))[:20]  # 20 of class 4's ~45 right answers lost
  candidate = candidate.copy()
  candidate[hurt] = (LABELS[hurt] + 3) % NUM_CLASSES
  gate = comparison.Gate(max_excess_drop=0.05)
  classes, _, summary = _pair(reference, candidate, gate=gate)
  row = classes.loc[4]
  assert row["ci_high"] < 0 and row["significant_fdr"]
  assert summary["largest_harm"]["class_id"] == 4
  assert not summary["gate"]["passed"] and summary["gate"]["failing_classes"][0] == "4"
  assert "4 (" in summary["gate"]["failures"][0]


def test_the_top1_gate_uses_the_upper_end_of_the_drop():
  reference, candidate = _planted(np.random.default_rng(5), 0.06, 0.0)
  _, _, summary = _pair(reference, candidate)
  high = summary["gate"]["top1_drop_ci_high"]
  assert high == -summary["top1_change_ci_low"] and high > -summary["top1_change"] > 0
  passing = _pair(reference, candidate, gate=comparison.Gate(max_top1_drop=high + 1e-9))[2]["gate"]
  failing = _pair(reference, candidate, gate=comparison.Gate(max_top1_drop=-summary["top1_change"]))[2]["gate"]
  assert passing["passed"] and not passing["top1_failed"]
  assert not failing["passed"] and failing["top1_failed"] and failing["failing_classes"] == []


def test_intensification_ratio_counts_classes_moved_away_from_top1():
  # Reference: classes 0-4 at recall 0.8 (below top-1 0.9), 5-9 at 1.0. The candidate loses 4 examples of class 0
  # (below, moved further down: intensified) and 4 of class 9 (above, moved down: not).
  labels = np.repeat(np.arange(NUM_CLASSES), 10)
  reference = labels.copy()
  for c in range(5):
    reference[c * 10 : c * 10 + 2] = (c + 1) % NUM_CLASSES
  candidate = reference.copy()
  candidate[2:6] = 1
  candidate[90:94] = 0
  classes, _, summary = comparison.compare_pair(
      labels, _outputs("r", reference), _outputs("c", candidate), CLASS_NAMES, num_resamples=200
  )
  expected = ((classes["reference_recall"] < 0.9) & (classes["excess_change"] < 0)) | (
      (classes["reference_recall"] > 0.9) & (classes["excess_change"] > 0)
  )
  assert summary["intensification_classes"] == 10
  assert summary["intensified_classes"] == int(expected.sum()) == 1 + 4  # class 0, and 5-8 (above, spared)
  assert summary["intensification_ratio"] == 0.5


@pytest.mark.slow
def test_arrays_are_compared_without_tensorflow():
  code = (
      "import sys, numpy as np, pie\n"
      "labels = np.arange(100) % 4\n"
      "result = pie.compare(labels, [np.roll(labels, 1)], labels=labels, class_names=list('abcd'), log=print)\n"
      "assert result.candidates[0]['num_changed'] == 100\n"
      "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras')]\n"
  )
  subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)


def test_compare_on_arrays_and_scores():
  reference, candidate = _planted(np.random.default_rng(2), 0.05, 0.01)
  scores = np.eye(NUM_CLASSES)[candidate] * 5.0  # logits: softmax gives the top-1 its probability
  result = pie.compare(reference, [candidate, scores], labels=LABELS, class_names=CLASS_NAMES, bootstrap_resamples=200)
  first, second = (result.classes.loc[result.classes["candidate"] == n] for n in ("candidate1", "candidate2"))
  pd.testing.assert_frame_equal(
      first.drop(columns="candidate").reset_index(drop=True), second.drop(columns="candidate").reset_index(drop=True)
  )
  probs = result.examples.loc[result.examples["candidate"] == "candidate2", "candidate_prob"]
  assert probs.to_numpy() == pytest.approx(np.exp(5.0) / (np.exp(5.0) + 9))
  assert result.examples.loc[result.examples["candidate"] == "candidate1", "candidate_prob"].isna().all()
  assert set(result.summary) == set(outputs.COMPARE_SUMMARY_KEYS)
  with pytest.raises(PieError, match="share the names"):
    pie.compare("a/m.h5", ["b/m.tflite", "c/m.tflite"], labels=LABELS, class_names=CLASS_NAMES)
  with pytest.raises(PieError, match="outside 0..9"):
    pie.compare(reference, [candidate + 1], labels=LABELS, class_names=CLASS_NAMES)
  with pytest.raises(PieError, match="give a config"):
    pie.compare(reference, [candidate])


# ---------------------------------------------------------------------------------------------------------------------
# Trained models on digits, through the library and the binary.


def _custom_op_tflite(data):
  """The flatbuffer with every operator replaced by a custom op no interpreter knows."""
  from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=import-outside-toplevel
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=import-outside-toplevel

  model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
  for code in model.operatorCodes:
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "PieNoSuchOp"
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """A dense digits model and its versions: dynamic-int8 TFLite, its own prediction file, one with the classifier's
  row of class 3 zeroed, and broken files."""
  root = tmp_path_factory.mktemp("compare")
  workdir = root / "dense"
  training.train_and_export(digits_config(), str(workdir), log=lambda m: None)
  dense = model_dir.load_model(str(workdir / "model.h5"))
  paths = {
      "dense": str(workdir / "model.h5"),
      "predictions": str(workdir / "sparsity0_seed0.tfrecord"),
      "int8": str(root / "int8.tflite"),
      "broken": str(root / "broken.h5"),
      "seven_classes": str(root / "seven_classes.h5"),
      "custom_op": str(root / "custom_op.tflite"),
      "not_flatbuffer": str(root / "not_flatbuffer.tflite"),
      "junk_keras": str(root / "junk.h5"),
  }
  int8 = quantization.quantize_model(dense, "dynamic_int8")
  (root / "int8.tflite").write_bytes(int8)
  (root / "custom_op.tflite").write_bytes(_custom_op_tflite(int8))
  (root / "not_flatbuffer.tflite").write_bytes(b"PK\x03\x04 a zip file, not a flatbuffer")
  (root / "junk.h5").write_bytes(b"not an HDF5 file")
  kernel, bias = dense.get_layer("classifier").get_weights()
  kernel[:, 3], bias[3] = 0.0, 0.0
  dense.get_layer("classifier").set_weights([kernel, bias])
  model_dir.save_model(dense, paths["broken"])
  model_dir.save_model(pie.build_model(digits_config().model, (8, 8, 1), 7), paths["seven_classes"])
  labels = LABELS
  rng = np.random.default_rng(0)
  paths["fewer_examples"] = fake_study.write_model(str(root / "few"), 0.0, 0, labels[:400], labels[:400], 10)
  wrong = labels.copy()
  wrong[rng.choice(500, 30, replace=False)] += 1
  wrong %= 10
  paths["other_labels"] = fake_study.write_model(str(root / "other"), 0.0, 0, labels, wrong, 10)
  paths["no_metadata"] = str(root / "no_metadata.tfrecord")
  (root / "no_metadata.tfrecord").write_bytes((workdir / "sparsity0_seed0.tfrecord").read_bytes())
  return {"root": root, "paths": paths, "int8_bytes": int8}


def _read_table(out_dir, table):
  text_columns = {name: str for name, kind in table.required if kind == outputs.STR}
  return pd.read_csv(os.path.join(out_dir, table.name), dtype=text_columns)


def _read_outputs(out_dir):
  classes = _read_table(out_dir, outputs.COMPARE_CLASSES)
  examples = _read_table(out_dir, outputs.COMPARE_EXAMPLES)
  with open(os.path.join(out_dir, outputs.COMPARE_SUMMARY_JSON), encoding="utf-8") as f:
    summary = json.load(f)
  return classes, examples, summary


@pytest.mark.slow
def test_the_gate_fails_on_a_broken_candidate_with_exit_status_3(models, tmp_path):
  paths = models["paths"]
  out = tmp_path / "out"
  proc = run_binary(
      "analysis.compare",
      f"--reference={paths['dense']}",
      f"--candidates={paths['int8']},{paths['broken']}",
      "--config=configs/digits.py",
      f"--out_dir={out}",
      "--max_excess_drop=0.05",
      check=False,
  )
  assert proc.returncode == cli.EXIT_GATE_FAILED == 3, proc.stderr[-3000:]
  gate_lines = [line for line in proc.stderr.splitlines() if line.startswith("gate failed")]
  assert len(gate_lines) == 1 and "broken: class harm may exceed 0.05: 3 (" in gate_lines[0], proc.stderr[-2000:]
  assert sorted(os.listdir(out)) == sorted(outputs.COMPARE_FILES)
  classes, examples, summary = _read_outputs(out)
  assert tuple(classes.columns) == outputs.COMPARE_CLASSES.columns()
  assert tuple(examples.columns) == outputs.COMPARE_EXAMPLES.columns()
  broken = classes.loc[classes["candidate"] == "broken"].set_index("class_id")
  assert (
      broken.loc[3, "candidate_recall"] < 0.2 and broken.loc[3, "ci_high"] < -0.5 and broken.loc[3, "significant_fdr"]
  )
  entries = {c["name"]: c for c in summary["candidates"]}
  assert entries["broken"]["gate"]["failing_classes"] == ["3"] and not summary["passed"]
  assert entries["broken"]["largest_harm"]["class_id"] == 3
  # The McNemar p-values of the file are binomtest on the discordant counts of the file's examples.
  changed = examples.loc[examples["candidate"] == "broken"]
  for class_id, row in broken.iterrows():
    mine = changed.loc[changed["label"] == class_id]
    lost = int((mine["reference_correct"] & ~mine["candidate_correct"]).sum())
    gained = int((~mine["reference_correct"] & mine["candidate_correct"]).sum())
    assert row["p_value"] == (scipy_stats.binomtest(lost, lost + gained, 0.5).pvalue if lost + gained else 1.0)
  # The TFLite candidate is measured: int8 weights, smaller than the float32 reference.
  assert entries["int8"]["kind"] == "tflite" and entries["int8"]["size"]["bits_per_weight"] < 16
  assert entries["int8"]["size_ratio"] < 0.5 and summary["reference"]["size"]["bits_per_weight"] == 32.0


@pytest.mark.slow
def test_the_reference_against_itself_passes_with_exit_status_0(models, tmp_path):
  paths = models["paths"]
  proc = run_binary(
      "analysis.compare",
      f"--reference={paths['dense']}",
      f"--candidates={paths['dense']}",
      "--config=configs/digits.py",
      f"--out_dir={tmp_path}",
      "--max_excess_drop=0.05",
      "--max_top1_drop=0",
      "--noimages",
  )
  assert "gate passed" in proc.stdout
  classes, examples, summary = _read_outputs(tmp_path)
  assert not classes["significant_fdr"].any() and examples.empty
  assert (classes["ci_low"] == 0).all() and (classes["ci_high"] == 0).all()
  assert summary["passed"] and summary["candidates"][0]["num_significant_classes_fdr"] == 0


@pytest.mark.slow
def test_tflite_prediction_file_and_objects_in_memory(models, tmp_path):
  paths = models["paths"]
  config = digits_config()
  result = comparison.run(
      paths["dense"],
      [paths["int8"], paths["predictions"]],
      config,
      str(tmp_path),
      names=["int8", "exported"],
      bootstrap_resamples=500,
      log=lambda m: None,
  )
  exported = result.candidates[1]
  # The prediction file is the dense model's own export: the same answers.
  assert exported["kind"] == "predictions" and exported["agreement"] == 1.0 and exported["num_changed"] == 0
  int8 = result.candidates[0]
  assert int8["kind"] == "tflite" and int8["agreement"] >= 0.98
  # The same comparison from objects in memory and a config file: the same tables.
  dense = model_dir.load_model(paths["dense"])
  again = pie.compare(
      dense,
      [models["int8_bytes"], pie.read_predictions(paths["predictions"])],
      os.path.join(REPO, "configs", "digits.py"),
      names=["int8", "exported"],
      bootstrap_resamples=500,
      log=lambda m: None,
  )
  pd.testing.assert_frame_equal(again.classes, result.classes)
  pd.testing.assert_frame_equal(again.examples, result.examples)
  # The files read back to the same numbers, bit for bit.
  classes, examples, _ = _read_outputs(tmp_path)
  pd.testing.assert_frame_equal(classes, result.classes, check_dtype=False)
  pd.testing.assert_frame_equal(examples, result.examples, check_dtype=False)


@pytest.mark.parametrize(
    "key, message",
    [
        ("seven_classes", "outputs 7 classes, the eval split of digits has 10"),
        ("custom_op", "the TFLite interpreter cannot run it (Encountered unresolved custom op: PieNoSuchOp"),
        ("not_flatbuffer", "not a TFLite flatbuffer"),
        ("fewer_examples", "holds example ids 0..399, the eval split of digits has 500 examples"),
        ("other_labels", "its labels differ from the eval split's at 30 example ids"),
        ("junk_keras", "not a readable Keras model"),
        ("no_metadata", "no metadata file"),
        ("missing", "no such file or folder"),
    ],
)
@pytest.mark.slow
def test_bad_candidates_are_named_and_nothing_is_written(models, tmp_path, key, message):
  path = models["paths"].get(key, str(tmp_path / "missing.h5"))
  out = tmp_path / "out"
  with pytest.raises(PieError, match=None) as error:
    comparison.run(models["paths"]["dense"], [path], digits_config(), str(out), log=lambda m: None)
  assert str(error.value).startswith(f"{path}: ") and message in str(error.value), str(error.value)
  assert error.value.parameter == "candidates"
  assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("key", ["seven_classes", "not_flatbuffer", "missing"])
def test_the_binary_prints_one_error_line_and_exits_1(models, tmp_path, key):
  path = models["paths"].get(key, str(tmp_path / "missing.tflite"))
  out = tmp_path / "out"
  proc = run_binary(
      "analysis.compare",
      f"--reference={models['paths']['dense']}",
      f"--candidates={path}",
      "--config=configs/digits.py",
      f"--out_dir={out}",
      check=False,
  )
  assert proc.returncode == cli.EXIT_ERROR == 1, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith(f"error: {path}: ") and "[flag --candidates]" in errors[0]
  assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.slow
def test_colliding_names_need_names(models, tmp_path):
  paths = models["paths"]
  with pytest.raises(PieError, match=r"candidates share the names \['int8'\]") as error:
    comparison.run(paths["dense"], [paths["int8"], paths["int8"]], digits_config(), str(tmp_path / "o"))
  assert error.value.parameter == "names" and not (tmp_path / "o").exists()


def test_the_readme_documents_the_comparison():
  readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  start = readme.index("## One model against its compressed versions")
  section = readme[start : readme.index("\n## ", start + 1)]
  for name in outputs.COMPARE_FILES + outputs.COMPARE_CLASSES.columns() + outputs.COMPARE_EXAMPLES.columns():
    assert f"`{name}`" in section, name
  for key in outputs.COMPARE_CANDIDATE_KEYS + outputs.COMPARE_GATE_KEYS:
    assert f"`{key}`" in section, key
  for flag in (
      "--reference",
      "--candidates",
      "--config",
      "--out_dir",
      "--names",
      "--max_excess_drop",
      "--max_top1_drop",
  ):
    assert flag in section, flag
  assert "exit status 3" in section and "pie.compare(" in section


@pytest.mark.slow
def test_keras_files_and_savedmodel_folders_give_the_same_answers(models, tmp_path):
  dense = model_dir.load_model(models["paths"]["dense"])
  dense.save(str(tmp_path / "dense.keras"))
  dense.save(str(tmp_path / "dense_savedmodel"), save_format="tf")
  result = pie.compare(
      models["paths"]["dense"],
      [str(tmp_path / "dense.keras"), str(tmp_path / "dense_savedmodel")],
      digits_config(),
      bootstrap_resamples=200,
      log=lambda m: None,
  )
  assert [c["name"] for c in result.candidates] == ["dense", "dense_savedmodel"]
  assert [c["kind"] for c in result.candidates] == ["keras", "keras"]
  assert [c["num_changed"] for c in result.candidates] == [0, 0]
