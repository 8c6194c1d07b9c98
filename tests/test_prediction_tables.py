"""Predictions from any framework (pie.prediction_tables, pie.lm_eval_samples): the table format in CSV, JSONL and
Parquet, lm-evaluation-harness --log_samples run folders as lm-eval lays them out, every refused table, the group
statistics against scipy and on planted and real A/A flips, correctness-only tasks, and populations of tables through
the analysis. Every input file is written by the tests.
"""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import pie
from pie import comparison
from pie import lm_eval_samples
from pie import outputs
from pie import prediction_tables as pt
from pie import stats
from pie.comparison_inputs import ModelOutputs
from pie.errors import PieError
from tests.conftest import REPO
from tests.conftest import run_binary

REAL = os.path.join(os.path.dirname(__file__), "data", "digits_dense40_top1.npz")
LETTERS = np.array(list("ABCD"))
QUIET = {"log": lambda m: None}


def write_table(frame, path, sidecar=None):
  """Writes a table in the format its suffix names (and its sidecar JSON); returns the path as text."""
  path = str(path)
  if path.endswith(".parquet"):
    frame.to_parquet(path)
  elif path.endswith(".csv"):
    frame.to_csv(path, index=False)
  elif path.endswith(".jsonl.gz"):
    with gzip.open(path, "wt", encoding="utf-8") as f:
      f.write(frame.to_json(orient="records", lines=True))
  else:
    frame.to_json(path, orient="records", lines=True)
  if sidecar is not None:
    with open(pt.sidecar_path(path), "w", encoding="utf-8") as f:
      json.dump(sidecar, f)
  return path


def letters_model(labels, right, subject):
  """A multiple-choice model's table: the label where `right`, the next letter where not."""
  index = np.searchsorted(LETTERS, labels)
  prediction = np.where(right, labels, LETTERS[(index + 1) % 4])
  return pd.DataFrame(
      {"example_id": np.arange(len(labels)), "label": labels, "prediction": prediction, "subject": subject}
  )


@pytest.fixture(scope="module")
def mc():
  """A reference and two candidates on 400 lettered examples in 4 subjects; `int4` loses 40% of `hurt`'s right
  answers."""
  rng = np.random.default_rng(0)
  n = 400
  labels = LETTERS[rng.integers(0, 4, n)]
  subject = np.array(["algebra", "hurt", "history", "law"])[rng.integers(0, 4, n)]
  ref_right = rng.random(n) < 0.8
  int4 = ref_right & ~((subject == "hurt") & (rng.random(n) < 0.4)) | (~ref_right & (rng.random(n) < 0.1))
  int8 = np.where(rng.random(n) < 0.05, ~ref_right, ref_right)
  return {
      "labels": labels,
      "subject": subject,
      "right": {"fp16": ref_right, "int4": int4, "int8": int8},
      "frames": {
          name: letters_model(labels, right, subject)
          for name, right in {"fp16": ref_right, "int4": int4, "int8": int8}.items()
      },
  }


# ---------------------------------------------------------------------------------------------------------------------
# The format.


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".jsonl.gz", ".parquet"])
def test_every_format_reads_to_the_same_table(mc, tmp_path, suffix):
  frame = mc["frames"]["int4"].assign(probability=np.linspace(0, 1, 400), method="gptq", level="int4", seed=3)
  table = pt.read_prediction_table(write_table(frame, tmp_path / f"int4{suffix}"), ["subject"])
  assert list(table.columns) == list(pt.COLUMNS) + ["subject"]
  assert table[pt.EXAMPLE_ID].tolist() == [str(i) for i in range(400)]
  assert table[pt.LABEL].tolist() == mc["labels"].tolist()
  assert table[pt.CORRECT].to_numpy(bool).tolist() == mc["right"]["int4"].tolist()
  assert table[pt.PROBABILITY].to_numpy() == pytest.approx(np.linspace(0, 1, 400))
  assert set(table[pt.MODEL]) == {"int4"} and set(table[pt.METHOD]) == {"gptq"} and set(table[pt.LEVEL]) == {"int4"}
  assert set(table[pt.SEED]) == {3} and table[pt.TASK].eq("").all()
  assert table.attrs["kind"] == pt.TABLE


def test_labels_are_mapped_alike_across_formats_and_models(mc, tmp_path):
  """Integer labels in Parquet and their text in CSV are one class list; string labels are sorted classes."""
  ints = pd.DataFrame({"example_id": np.arange(6), "label": [0, 1, 2, 2, 1, 0], "prediction": [0, 1, 2, 0, 1, 1]})
  text = ints.astype(str)
  tables = pt.load_prediction_tables(
      [write_table(ints, tmp_path / "a.parquet"), write_table(text, tmp_path / "b.csv")], **QUIET
  )
  assert tables.class_names == ["0", "1", "2"] and tables.labels.tolist() == [0, 1, 2, 2, 1, 0]
  assert tables.models[0].top1.tolist() == tables.models[1].top1.tolist() == [0, 1, 2, 0, 1, 1]
  letters = pt.load_prediction_tables(
      [write_table(mc["frames"][m], tmp_path / f"{m}.jsonl") for m in ("fp16", "int4")], **QUIET
  )
  assert letters.class_names == list("ABCD")
  assert letters.labels.tolist() == np.searchsorted(LETTERS, mc["labels"]).tolist()
  named = pt.load_prediction_tables(
      [write_table(ints, tmp_path / "c.csv", {"class_names": ["cat", "dog", "emu"]})], **QUIET
  )
  assert named.class_names == ["cat", "dog", "emu"] and named.labels.tolist() == [0, 1, 2, 2, 1, 0]


def test_one_file_with_a_model_column_and_a_sidecar(mc, tmp_path):
  frames = [mc["frames"][m].assign(model=m, seed=0) for m in ("fp16", "int4", "int8")]
  path = write_table(pd.concat(frames), tmp_path / "all.parquet", {"method": "awq", "dataset": "mmlu-like"})
  table = pt.read_prediction_table(path)
  assert list(dict.fromkeys(table[pt.MODEL])) == ["fp16", "int4", "int8"] and set(table[pt.METHOD]) == {"awq"}
  tables = pt.load_prediction_tables([path], **QUIET)
  assert [m.name for m in tables.models] == ["fp16", "int4", "int8"] and tables.dataset == "mmlu-like"
  result = pt.compare_tables(f"{path}#fp16", [f"{path}#int4"], bootstrap_resamples=200, **QUIET)
  assert result.candidates[0]["name"] == "int4"
  with pytest.raises(PieError, match=r"holds 3 models \(fp16, int4, int8\): choose one as .*all.parquet#<model>"):
    pt.compare_tables(path, [f"{path}#int4"], **QUIET)
  with pytest.raises(PieError, match="no model 'int2'"):
    pt.compare_tables(f"{path}#fp16", [f"{path}#int2"], **QUIET)


def _bad(tmp_path, frame, name="bad.csv", sidecar=None):
  return write_table(frame, tmp_path / name, sidecar)


BAD_TABLES = {
    "duplicate ids": (
        lambda f: f.assign(example_id=np.minimum(f["example_id"], 398)),
        r"example_id 398 appears 2 times for model bad: each example once per model",
    ),
    "no example_id": (lambda f: f.drop(columns="example_id"), r"no example_id column \(its columns: label, "),
    "no prediction, no correct": (lambda f: f.drop(columns="prediction"), "needs label and prediction columns"),
    "correct contradicts": (
        lambda f: f.assign(correct=True),
        r"example_id \d+: correct is true but its prediction differs from its label; leave label or prediction empty",
    ),
    "correct not a flag": (lambda f: f.assign(correct="maybe"), r"correct of example_id 0 is 'maybe': give true"),
    "probability out of range": (lambda f: f.assign(probability=1.5), r"probability of example_id 0 is .*\[0, 1\]"),
    "two probabilities": (lambda f: f.assign(probability=0.5, confidence=0.5), "both probability and confidence"),
    "empty id": (lambda f: f.assign(example_id=[None] + list(range(1, 400))), "example_id of row 1 is empty"),
    "method varies": (lambda f: f.assign(method=["a", "b"] * 200), r"model bad has several values of method \(a, b\)"),
    "sparsity out of range": (lambda f: f.assign(sparsity=1.5), r"sparsity must be a fraction in \[0, 1\)"),
    "no group column": (lambda f: f.drop(columns="subject"), r"no group column 'subject' \(group_by names it"),
}


@pytest.mark.parametrize("key", sorted(BAD_TABLES))
def test_a_bad_table_is_refused_in_one_line_naming_the_file(mc, tmp_path, key):
  change, message = BAD_TABLES[key]
  path = _bad(tmp_path, change(mc["frames"]["int4"].copy()))
  with pytest.raises(PieError, match=message) as error:
    pt.load_prediction_tables([path], ["subject"], **QUIET)
  text = str(error.value)
  assert text.startswith(path) and "\n" not in text


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda f: f.iloc[:-3],
            r"int4.csv \(model int4\): lacks 3 example_ids that .*fp16.csv \(model fp16\) has \(first: 397, 398, 399\)",
        ),
        (
            lambda f: f.assign(example_id=f["example_id"] + 1),
            r"lacks 1 example_ids that .* has \(first: 0\) and has 1 that it lacks \(first: 400\)",
        ),
        (
            lambda f: f.assign(label=np.where(f["example_id"] == 5, "Z", f["label"]), prediction="Z"),
            r"int4.csv \(model int4\): gives 5 the label 'Z' where .*fp16.csv \(model fp16\) gives '\w'",
        ),
        (
            lambda f: f.drop(columns="subject"),
            r"int4.csv: no group column 'subject' \(group_by names it; every model needs it\)",
        ),
        (
            lambda f: f.assign(subject=np.where(f["example_id"] == 7, "other", f["subject"])),
            r"int4.csv \(model int4\): puts 7 in subject 'other' where .*fp16.csv \(model fp16\) puts it in",
        ),
        (lambda f: f.assign(model="fp16"), r"a second model named 'fp16' \(also in .*fp16.csv\)"),
    ],
    ids=["fewer ids", "other ids", "other label", "group missing in one model", "other group value", "same name"],
)
def test_models_that_do_not_fit_together_are_refused(mc, tmp_path, change, message):
  reference = write_table(mc["frames"]["fp16"], tmp_path / "fp16.csv")
  candidate = write_table(change(mc["frames"]["int4"].copy()), tmp_path / "int4.csv")
  with pytest.raises(PieError, match=message) as error:
    pt.compare_tables(reference, [candidate], ["subject"], **QUIET)
  assert "\n" not in str(error.value)


def test_other_refusals(mc, tmp_path):
  path = write_table(mc["frames"]["fp16"], tmp_path / "fp16.csv")
  for sidecar, message in [
      ({"methd": "x"}, r"fp16.json: unknown fields \['methd'\]"),
      ({"method": "x"}, None),
      ({"class_names": ["A", "B"]}, r"'C' is neither one of its class_names nor an index into them"),
  ]:
    with open(pt.sidecar_path(path), "w", encoding="utf-8") as f:
      json.dump(sidecar, f)
    if message is None:
      pt.load_prediction_tables([path], **QUIET)
    else:
      with pytest.raises(PieError, match=message):
        pt.load_prediction_tables([path], **QUIET)
  os.remove(pt.sidecar_path(path))
  with pytest.raises(PieError, match="no such file"):
    pt.read_prediction_table(str(tmp_path / "missing.csv"))
  (tmp_path / "broken.parquet").write_bytes(b"not parquet")
  with pytest.raises(PieError, match=r"broken.parquet: cannot be read as a .parquet table"):
    pt.read_prediction_table(str(tmp_path / "broken.parquet"))
  (tmp_path / "broken.jsonl").write_text('{"example_id": 1}\nnot json\n')
  with pytest.raises(PieError, match="broken.jsonl: line 2 is not JSON"):
    pt.read_prediction_table(str(tmp_path / "broken.jsonl"))
  with pytest.raises(PieError, match="group_by: 'label' is a column of the table format"):
    pt.read_prediction_table(path, ["label"])
  hostile = mc["frames"]["fp16"].assign(subject="a\nb")
  with pytest.raises(PieError, match="a value of subject holds a control character"):
    pt.load_prediction_tables([write_table(hostile, tmp_path / "h.csv")], ["subject"], **QUIET)
  with pytest.raises(PieError, match="matches no file or folder"):
    pt.expand_patterns(str(tmp_path / "nothing*.csv"))


# ---------------------------------------------------------------------------------------------------------------------
# Comparisons.


def test_a_classified_comparison_equals_pie_compare_on_the_arrays(mc, tmp_path):
  paths = {m: write_table(mc["frames"][m], tmp_path / f"{m}.parquet") for m in ("fp16", "int4", "int8")}
  tables = pt.compare_tables(paths["fp16"], [paths["int4"], paths["int8"]], bootstrap_resamples=300, **QUIET)
  labels = np.searchsorted(LETTERS, mc["labels"])
  top1 = {m: np.searchsorted(LETTERS, mc["frames"][m]["prediction"]) for m in paths}
  arrays = pie.compare(
      top1["fp16"],
      [top1["int4"], top1["int8"]],
      labels=labels,
      class_names=list("ABCD"),
      names=["int4", "int8"],
      bootstrap_resamples=300,
      **QUIET,
  )
  pd.testing.assert_frame_equal(tables.classes, arrays.classes)
  pd.testing.assert_frame_equal(tables.examples, arrays.examples)
  for mine, theirs in zip(tables.candidates, arrays.candidates):
    assert {k: v for k, v in mine.items() if k not in ("source", "kind")} == {
        k: v for k, v in theirs.items() if k not in ("source", "kind")
    }


def _check_group_rows(rows, reference_right, candidate_right, codes, values, alpha=0.05):
  """The group table against a computation from the arrays: counts, rates, excess, McNemar (binomtest), BH."""
  top1_change = candidate_right.mean() - reference_right.mean()
  for value_index, value in enumerate(values):
    row = rows.loc[rows["group_value"] == value].iloc[0]
    mask = codes == value_index
    lost = int((mask & reference_right & ~candidate_right).sum())
    gained = int((mask & ~reference_right & candidate_right).sum())
    assert (row.num_examples, row.flips_correct_to_wrong, row.flips_wrong_to_correct) == (mask.sum(), lost, gained)
    assert row.reference_accuracy == pytest.approx(reference_right[mask].mean())
    assert row.accuracy_change == pytest.approx(candidate_right[mask].mean() - reference_right[mask].mean())
    assert row.excess_change == pytest.approx(row.accuracy_change - top1_change)
    expected = scipy_stats.binomtest(lost, lost + gained, 0.5).pvalue if lost + gained else 1.0
    assert row.p_value == pytest.approx(expected, rel=1e-12)
    assert row.ci_low <= row.excess_change <= row.ci_high
  q = scipy_stats.false_discovery_control(rows["p_value"].to_numpy(float))
  assert rows["q_value"].to_numpy(float) == pytest.approx(np.minimum(q, 1))
  assert rows["significant_fdr"].tolist() == (rows["q_value"] <= alpha).tolist()


def test_groups_are_tested_on_right_answers_and_the_gate_sees_them(mc, tmp_path):
  paths = {m: write_table(mc["frames"][m], tmp_path / f"{m}.csv") for m in ("fp16", "int4", "int8")}
  result = pt.compare_tables(
      paths["fp16"],
      [paths["int4"], paths["int8"]],
      ["subject"],
      bootstrap_resamples=1000,
      max_excess_drop=0.1,
      **QUIET,
  )
  assert tuple(result.groups.columns) == outputs.COMPARE_GROUPS.columns()
  values = sorted(set(mc["subject"]))
  codes = np.searchsorted(values, mc["subject"])
  for name in ("int4", "int8"):
    rows = result.groups.loc[result.groups["candidate"] == name]
    _check_group_rows(rows, mc["right"]["fp16"], mc["right"][name], codes, values)
  int4, int8 = result.candidates
  assert int4["largest_group_harm"]["group_value"] == "hurt" and ["subject", "hurt"] in int4["significant_groups_fdr"]
  assert ["subject", "hurt"] in int4["gate"]["failing_groups"] and not int4["gate"]["passed"]
  assert any(f.startswith("group harm may exceed 0.1: subject = hurt (") for f in int4["gate"]["failures"])
  assert int8["significant_groups_fdr"] == [] and result.summary["settings"]["group_by"] == ["subject"]
  assert "subject = hurt" in result.gate_line()
  out = result.write(str(tmp_path / "out"), images=False, **QUIET)
  assert sorted(os.listdir(out)) == sorted(
      outputs.COMPARE_FILES + (outputs.COMPARE_GROUPS_CSV, outputs.TABLE_EXAMPLES_CSV)
  )
  written = pd.read_csv(os.path.join(out, outputs.COMPARE_GROUPS_CSV), dtype={"group_value": str})
  assert written["p_value"].to_numpy() == pytest.approx(result.groups["p_value"].to_numpy(float), rel=1e-15)
  page = open(os.path.join(out, outputs.COMPARE_HTML), encoding="utf-8").read()
  assert "id='groups'" in page and "subject = hurt" in page


def test_a_comparison_of_models_has_no_group_keys_filled(tmp_path):
  labels = np.arange(200) % 4
  result = pie.compare(labels, [np.roll(labels, 3)], labels=labels, class_names=list("abcd"), **QUIET)
  entry = result.candidates[0]
  assert entry["num_significant_groups_fdr"] is None and entry["significant_groups_fdr"] == []
  assert entry["largest_group_harm"] is None and entry["gate"]["failing_groups"] == []
  assert result.groups is None and result.summary["settings"]["group_by"] == []
  assert set(entry) == set(outputs.COMPARE_CANDIDATE_KEYS) and set(entry["gate"]) == set(outputs.COMPARE_GATE_KEYS)


def correctness_frame(right, task="gen", **columns):
  n = len(right)
  return pd.DataFrame({"task": task, "example_id": np.arange(n), "correct": right, **columns})


def test_correctness_only_tasks_list_flips_in_both_directions(tmp_path):
  rng = np.random.default_rng(4)
  n = 300
  language = np.array(["de", "fr", "th"])[rng.integers(0, 3, n)]
  ref = rng.random(n) < 0.6
  cand = np.where(language == "th", ref & (rng.random(n) < 0.5), ref) | (~ref & (rng.random(n) < 0.05))
  reference = write_table(correctness_frame(ref, language=language), tmp_path / "ref.jsonl")
  candidate = write_table(correctness_frame(cand, language=language), tmp_path / "cand.jsonl")
  result = pt.compare_tables(reference, [candidate], ["language"], bootstrap_resamples=500, **QUIET)
  assert result.classes.empty and result.summary["dataset"]["num_classes"] == 0
  entry = result.candidates[0]
  assert entry["largest_harm"] is None and entry["num_significant_classes_fdr"] == 0
  lost, gained = np.flatnonzero(ref & ~cand), np.flatnonzero(~ref & cand)
  assert (entry["flips_correct_to_wrong"], entry["flips_wrong_to_correct"]) == (len(lost), len(gained))
  assert entry["flips_wrong_to_wrong"] == 0 and entry["reference_top1"] == pytest.approx(ref.mean())
  examples = result.examples
  assert sorted(examples.loc[examples["reference_correct"], "example_id"]) == lost.tolist()
  assert sorted(examples.loc[~examples["reference_correct"], "example_id"]) == gained.tolist()
  assert (examples["label"] == -1).all() and (examples["candidate_correct"] != examples["reference_correct"]).all()
  values = ["de", "fr", "th"]
  _check_group_rows(result.groups, ref, cand, np.searchsorted(values, language), values)
  assert entry["largest_group_harm"]["group_value"] == "th"
  assert result.example_table["label_name"].eq("").all()
  from pie.report import compare_page  # pylint: disable=import-outside-toplevel

  gallery = compare_page.gallery_payload(result)  # the cards say right and wrong for examples without a class
  assert gallery["class_names"][-3:] == list(compare_page.UNCLASSED_NAMES)
  first = gallery["flips"][0]
  assert (
      gallery["class_names"][first["r"]] == ("right" if first["rc"] else "wrong")
      and first["h"] == f"gen #{first['id']}"
  )


def test_mixed_tasks_keep_classes_for_the_classified_ones(mc, tmp_path):
  """Classified and correctness-only examples together: classes from the first, top-1 and groups from both, and the
  top-1 interval from a bootstrap that draws both."""
  rng = np.random.default_rng(1)
  frames = {}
  for name in ("fp16", "int4"):
    generated = rng.random(200) < (0.7 if name == "fp16" else 0.4)
    frames[name] = pd.concat(
        [mc["frames"][name].assign(task="mmlu"), correctness_frame(generated, subject="none")], ignore_index=True
    )
  paths = [write_table(frames[m], tmp_path / f"{m}.parquet") for m in ("fp16", "int4")]
  tables = pt.load_prediction_tables(paths, ["subject"], **QUIET)
  assert tables.groups.columns == ("task", "subject") and (tables.labels < 0).sum() == 200
  result = pt.compare_tables(paths[0], paths[1:], ["subject"], bootstrap_resamples=1000, **QUIET)
  entry = result.candidates[0]
  ref_right, cand_right = tables.models[0].correct, tables.models[1].correct
  assert entry["top1_change"] == pytest.approx(cand_right.mean() - ref_right.mean())
  assert entry["top1_change_ci_low"] < entry["top1_change"] < entry["top1_change_ci_high"]
  assert result.classes["num_examples"].sum() == 400
  gen = result.groups.loc[(result.groups["group_column"] == "task") & (result.groups["group_value"] == "gen")].iloc[0]
  assert gen.excess_change < 0 and gen.significant_fdr


def _group_calibration(rng, pairs):
  """(share of group p-values below 0.05, share of seeds with an FDR discovery, share of 95% intervals of the excess
  that cover 0) over (labels, reference, candidate) triples, each with its examples grouped at random in 5 groups."""
  p_values, covered, discoveries = [], [], 0
  for labels, reference, candidate in pairs:
    n = len(labels)
    codes = rng.integers(0, 5, n)
    rows = comparison.group_rows(
        comparison.Groups(("g",), codes[:, None], (tuple("abcde"),)), labels, reference, candidate, 0.05, 400, 0
    )
    p_values += rows["p_value"].tolist()
    covered += ((rows["ci_low"] <= 0) & (rows["ci_high"] >= 0)).tolist()
    discoveries += bool(rows["significant_fdr"].any())
  return np.mean(np.array(p_values) < 0.05), discoveries / len(pairs), np.mean(covered)


def _planted_correctness(rng, lost, gained, n=500, accuracy=0.85):
  """Right and wrong of two models whose flips (`lost`, `gained`: shares of all examples) fall whatever the group."""
  for _ in range(300):
    ref = rng.random(n) < accuracy
    cand = np.where(ref, rng.random(n) >= lost / accuracy, rng.random(n) < gained / (1 - accuracy))
    yield (
        np.zeros(n, np.int64),
        ModelOutputs("r", np.zeros(n, np.int64), np.full(n, np.nan), correct=ref),
        ModelOutputs("c", np.zeros(n, np.int64), np.full(n, np.nan), correct=cand),
    )


def test_group_tests_are_calibrated_on_planted_flips_and_on_real_models():
  """Where nothing differs between groups: flips planted whatever the group (300 seeds of 500 examples in 5 random
  groups), and pairs of real dense digits models of different seeds (200 pairs) with the examples grouped at random.
  Measured (docs/statistics.md): planted, 6% lost and 6% gained: 2.1% of p < 0.05, 0.7% of seeds with an FDR
  discovery, 97.6% of intervals cover 0; 10% lost and 2% gained (the excess is still 0; a group's own change is -8
  points, so intervals of the change instead of the excess cover 0 for 28%): 97.5% cover 0; real pairs: 2.4% of
  p < 0.05, 1.0% of pairs with a discovery, 99.0% cover 0. The interval is two one-sided bounds, each with a
  pseudo-example on its side (comparison.excess_change_bounds): at least 95% two-sided, conservative by design."""
  rng = np.random.default_rng(0)
  p_rate, fdr_rate, coverage = _group_calibration(rng, list(_planted_correctness(rng, 0.06, 0.06)))
  assert p_rate <= 0.05 and fdr_rate <= 0.05 and 0.95 <= coverage <= 0.995
  _, _, coverage = _group_calibration(rng, list(_planted_correctness(rng, 0.10, 0.02)))
  assert 0.95 <= coverage <= 0.995
  data = np.load(REAL)
  top1, labels = data["top1"].astype(np.int64), data["labels"].astype(np.int64)
  pairs = [(i, j) for i in range(40) for j in range(i + 1, 40)]
  chosen = [pairs[k] for k in rng.choice(len(pairs), 200, replace=False)]
  nan = np.full(500, np.nan)
  real = [(labels, ModelOutputs("r", top1[i], nan), ModelOutputs("c", top1[j], nan)) for i, j in chosen]
  p_rate, fdr_rate, coverage = _group_calibration(rng, real)
  assert p_rate <= 0.05 and fdr_rate <= 0.05 and 0.95 <= coverage <= 0.995


# ---------------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness samples, as lm-eval writes them.

STAMP = "2025-03-04T05-06-07.123456"


def _mc_record(doc_id, subject, gold, loglikelihoods, strings=True):
  """A multiple-choice sample: one [loglikelihood, is_greedy] per choice, as texts (lm-eval's sanitize_list) or as
  numbers (older versions); the metric values are numbers."""
  pairs = [[str(v), "False"] if strings else [float(v), False] for v in loglikelihoods]
  predicted = int(np.argmax(loglikelihoods))
  return {
      "doc_id": doc_id,
      "doc": {"question": f"q{doc_id}", "subject": subject, "choices": ["w", "x", "y", "z"], "answer": gold},
      "target": str(gold) if strings else gold,
      "arguments": {f"gen_args_{i}": {"arg_0": f"q{doc_id}\nAnswer:", "arg_1": f" {c}"} for i, c in enumerate("ABCD")},
      "resps": [[pair] for pair in pairs],
      "filtered_resps": pairs,
      "filter": "none",
      "metrics": ["acc", "acc_norm"],
      "doc_hash": f"d{doc_id}",
      "prompt_hash": f"p{doc_id}",
      "target_hash": f"t{gold}",
      "acc": 1.0 if predicted == gold else 0.0,
      "acc_norm": 1.0 if predicted == gold else 0.0,
  }


def write_lm_eval_run(output_path, right, seed=0, extra=True):
  """<output_path>/org__model/samples_<task>_<date>.jsonl as lm-eval writes them: two MMLU subtasks (multiple choice,
  responses as texts in one, numbers in the other), gsm8k with two filters (exact_match), and, with `extra`, IFEval
  (a boolean metric and a list), wikitext (perplexities as [value, count]) and humaneval (pass@1)."""
  folder = os.path.join(output_path, "org__model")
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  files = {}
  for t, subject in enumerate(("anatomy", "astronomy")):
    lines = []
    for doc_id in range(50):
      gold = (doc_id * 3 + t) % 4
      values = rng.normal(-6, 0.5, 4)
      choice = gold if right[("mmlu", subject)][doc_id] else (gold + 1) % 4
      values[choice] = -1.0
      lines.append(_mc_record(doc_id, subject, gold, values, strings=t == 0))
    files[f"mmlu_{subject}"] = lines
  gsm = []
  for flt, offset in (("strict-match", 0), ("flexible-extract", 1)):
    for doc_id in range(40):
      ok = bool(right[("gsm8k",)][doc_id]) if offset == 0 else True
      gsm.append(
          {
              "doc_id": doc_id,
              "doc": {"question": f"sum {doc_id}", "answer": f"#### {doc_id}"},
              "target": f"#### {doc_id}",
              "arguments": {"gen_args_0": {"arg_0": f"Question: sum {doc_id}", "arg_1": {"until": ["Question:"]}}},
              "resps": [[f"The answer is {doc_id if ok else -1}"]],
              "filtered_resps": [str(doc_id) if ok else "-1"],
              "filter": flt,
              "metrics": ["exact_match"],
              "doc_hash": "d",
              "prompt_hash": "p",
              "target_hash": "t",
              "exact_match": 1.0 if ok else 0.0,
          }
      )
  files["gsm8k"] = gsm
  if extra:
    files["ifeval"] = [
        {
            "doc_id": i,
            "doc": {"key": i},
            "target": "0",
            "arguments": {},
            "resps": [["x"]],
            "filtered_resps": ["x"],
            "filter": "none",
            "metrics": ["prompt_level_strict_acc", "inst_level_strict_acc"],
            "prompt_level_strict_acc": bool(right[("ifeval",)][i]),
            "inst_level_strict_acc": [True, False],
        }
        for i in range(20)
    ]
    files["wikitext"] = [
        {
            "doc_id": i,
            "doc": {"page": "p"},
            "target": "",
            "arguments": {},
            "resps": [[["-80.5"]]],
            "filtered_resps": [["-80.5"]],
            "filter": "none",
            "metrics": ["word_perplexity", "bits_per_byte"],
            "word_perplexity": [-80.5, 17],
            "bits_per_byte": [-80.5, 70],
        }
        for i in range(5)
    ]
    files["humaneval"] = [
        {
            "doc_id": i,
            "doc": {"task_id": f"HumanEval/{i}"},
            "target": "check(f)",
            "arguments": {},
            "resps": [["def f(): ..."]],
            "filtered_resps": [["def f(): ..."]],
            "filter": "create_test",
            "metrics": ["pass@1"],
            "pass@1": 0.4,
        }
        for i in range(5)
    ]
  for task, lines in files.items():
    with open(os.path.join(folder, f"samples_{task}_{STAMP}.jsonl"), "w", encoding="utf-8") as f:
      f.write("".join(json.dumps(line) + "\n" for line in lines))
  with open(os.path.join(folder, f"results_{STAMP}.json"), "w", encoding="utf-8") as f:
    json.dump({"results": {}, "config": {"model": "hf"}}, f)
  return output_path


def lm_eval_right(seed, lost=0.0):
  rng = np.random.default_rng(seed)
  right = {
      ("mmlu", "anatomy"): rng.random(50) < 0.8,
      ("mmlu", "astronomy"): rng.random(50) < 0.8,
      ("gsm8k",): rng.random(40) < 0.6,
      ("ifeval",): rng.random(20) < 0.7,
  }
  if lost:
    right[("mmlu", "anatomy")] &= rng.random(50) >= lost
    right[("gsm8k",)] &= rng.random(40) >= lost
  return right


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("lm_eval")
  reference = lm_eval_right(0)
  runs = {
      "bf16": reference,
      "int4": {k: v & (np.random.default_rng(9).random(len(v)) >= 0.35) for k, v in reference.items()},
  }
  runs["int8"] = dict(reference)
  paths = {name: write_lm_eval_run(str(root / name), right) for name, right in runs.items()}
  return {"root": root, "right": runs, "paths": paths}


def test_an_lm_eval_run_reads_as_one_model(lm_runs):
  logged = []
  table = pt.read_prediction_table(lm_runs["paths"]["bf16"], ["subject"], log=logged.append)
  tasks = table.attrs["tasks"]
  assert sorted(tasks) == ["gsm8k", "ifeval", "mmlu_anatomy", "mmlu_astronomy"]
  assert tasks["mmlu_anatomy"]["multiple_choice"] and tasks["mmlu_astronomy"]["multiple_choice"]
  assert tasks["gsm8k"] == {
      **tasks["gsm8k"],
      "metric": "exact_match",
      "filter": "strict-match",
      "multiple_choice": False,
  }
  assert tasks["ifeval"]["metric"] == "prompt_level_strict_acc"
  assert any("task wikitext left out" in line and "word_perplexity" in line for line in logged)
  assert any("task humaneval left out" in line for line in logged)
  assert set(table[pt.MODEL]) == {"bf16"} and table.attrs["kind"] == pt.LM_EVAL
  right = lm_runs["right"]["bf16"]
  anatomy = table.loc[table[pt.TASK] == "mmlu_anatomy"].sort_values(pt.EXAMPLE_ID, key=lambda s: s.astype(int))
  assert anatomy[pt.CORRECT].tolist() == right[("mmlu", "anatomy")].tolist()
  assert anatomy[pt.LABEL].tolist() == [str((i * 3) % 4) for i in range(50)]
  assert (anatomy[pt.PREDICTION] == anatomy[pt.LABEL]).tolist() == right[("mmlu", "anatomy")].tolist()
  assert ((anatomy[pt.PROBABILITY] > 0.9) & (anatomy[pt.PROBABILITY] <= 1)).all()
  assert set(anatomy["subject"]) == {"anatomy"}
  gsm = table.loc[table[pt.TASK] == "gsm8k"]
  assert gsm[pt.PREDICTION].isna().all() and gsm["subject"].eq(pt.MISSING_VALUE).all() and len(gsm) == 40
  flexible = pt.read_prediction_table(lm_runs["paths"]["bf16"], lm_eval_filter="flexible-extract", **QUIET)
  assert flexible.loc[flexible[pt.TASK] == "gsm8k", pt.CORRECT].all()


def test_lm_eval_runs_compare_per_task_and_subject(lm_runs, tmp_path):
  paths = lm_runs["paths"]
  result = pt.compare_tables(
      paths["bf16"], [paths["int4"], paths["int8"]], ["subject"], bootstrap_resamples=500, **QUIET
  )
  assert result.summary["dataset"]["num_scored_by_correctness"] == 60  # gsm8k and ifeval
  assert result.summary["dataset"]["num_classes"] == 4
  int4 = result.groups.loc[(result.groups["candidate"] == "int4") & (result.groups["group_column"] == "task")]
  right = lm_runs["right"]
  for task, key in (("gsm8k", ("gsm8k",)), ("mmlu_anatomy", ("mmlu", "anatomy")), ("ifeval", ("ifeval",))):
    row = int4.loc[int4["group_value"] == task].iloc[0]
    ref, cand = right["bf16"][key], right["int4"][key]
    assert (row.flips_correct_to_wrong, row.flips_wrong_to_correct) == (int((ref & ~cand).sum()), 0)
    lost = int((ref & ~cand).sum())
    assert row.p_value == pytest.approx(scipy_stats.binomtest(lost, lost, 0.5).pvalue if lost else 1.0)
  int8 = result.candidates[1]
  assert int8["num_changed"] == 0 and int8["top1_change_ci_low"] == int8["top1_change_ci_high"] == 0.0
  subjects = result.groups.loc[result.groups["group_column"] == "subject", "group_value"]
  assert set(subjects) == {"anatomy", "astronomy", pt.MISSING_VALUE}


def test_lm_eval_declarations_and_refusals(lm_runs, tmp_path):
  run = write_lm_eval_run(str(tmp_path / "run"), lm_eval_right(3), extra=False)
  with open(os.path.join(run, "pie_run.json"), "w", encoding="utf-8") as f:
    json.dump({"method": "gptq", "level": "int4", "seed": 2}, f)
  table = pt.read_prediction_table(run, **QUIET)
  assert (table[pt.METHOD].iloc[0], table[pt.LEVEL].iloc[0], table[pt.SEED].iloc[0]) == ("gptq", "int4", 2)
  samples = os.path.join(run, "org__model", f"samples_gsm8k_{STAMP}.jsonl")
  assert pt.input_format(pt.AUTO, samples) == pt.LM_EVAL and pt.input_format(pt.AUTO, run) == pt.LM_EVAL
  assert set(pt.read_prediction_table(samples, **QUIET)[pt.TASK]) == {"gsm8k"}
  older = os.path.join(run, "org__model", "samples_gsm8k_2024-01-01T00-00-00.000001.jsonl")
  with open(older, "w", encoding="utf-8") as f:
    f.write("not read\n")
  logged = []
  lm_eval_samples.find_samples(run, log=logged.append)
  assert any("samples_gsm8k_2024-01-01T00-00-00.000001.jsonl is older than" in line for line in logged)
  with pytest.raises(PieError, match=r"no task has the filter 'strict' \(filters read: none, strict-match\)"):
    pt.read_prediction_table(run, lm_eval_filter="strict", **QUIET)
  with pytest.raises(PieError, match="no task has the metric 'acc_nrom'"):
    pt.read_prediction_table(run, lm_eval_metric="acc_nrom", **QUIET)
  with pytest.raises(PieError, match="no document of any task has the field 'language'"):
    pt.read_prediction_table(run, ["language"], **QUIET)
  os.makedirs(tmp_path / "empty")
  with pytest.raises(PieError, match="no lm-eval samples files"):
    lm_eval_samples.find_samples(str(tmp_path / "empty"))
  fractional = os.path.join(lm_runs["paths"]["bf16"])
  with pytest.raises(PieError, match=r"metric 'pass@1' of doc_id 0 is 0.4, not right or wrong"):
    pt.read_prediction_table(fractional, lm_eval_metric="pass@1", **QUIET)
  with open(samples, "a", encoding="utf-8") as f:
    f.write(json.dumps({"doc_id": 0, "filter": "strict-match", "exact_match": 1.0}) + "\n")
  with pytest.raises(PieError, match="doc_id 0 appears 2 times for one filter"):
    pt.read_prediction_table(run, **QUIET)


def test_multiple_choice_is_read_from_texts_and_numbers():
  record = _mc_record(0, "s", 2, [-3.0, -2.5, -1.0, -4.0])
  label, predicted, probability = lm_eval_samples.multiple_choice(record)
  shares = np.exp([-3.0, -2.5, -1.0, -4.0])
  assert (label, predicted) == (2, 2) and probability == pytest.approx(shares[2] / shares.sum())
  numbers = _mc_record(0, "s", 1, [-3.0, -2.5, -1.0, -4.0], strings=False)
  assert lm_eval_samples.multiple_choice(numbers)[:2] == (1, 2)
  by_text = dict(record, target=" y")  # the text of a choice, matched against the continuations " A" ... " D"
  assert lm_eval_samples.multiple_choice(by_text) is None
  assert lm_eval_samples.multiple_choice(dict(record, target=" C"))[:2] == (2, 2)
  assert lm_eval_samples.multiple_choice(dict(record, filtered_resps=["4"])) is None
  assert lm_eval_samples.multiple_choice(dict(record, target="[0, 1]")) is None


# ---------------------------------------------------------------------------------------------------------------------
# Populations: the analysis of tables.


def _population_tables(tmp_path, top1, labels, right_only=False, suffix=".parquet"):
  """20 + 20 real dense digits models as tables: method fp16 (the first 20) and replica."""
  paths = []
  for i in range(len(top1)):
    method = "fp16" if i < len(top1) // 2 else "replica"
    frame = pd.DataFrame({"example_id": np.arange(len(labels)), "block": (np.arange(len(labels)) // 100).astype(str)})
    if right_only:
      frame["correct"] = top1[i] == labels
    else:
      frame["label"], frame["prediction"] = labels, top1[i]
    paths.append(write_table(frame.assign(method=method, seed=i), tmp_path / f"m{i:02d}{suffix}"))
  return paths


def test_a_study_of_tables_is_the_study_of_its_arrays(tmp_path):
  from pie import analysis  # pylint: disable=import-outside-toplevel

  data = np.load(REAL)
  top1, labels = data["top1"][:16].astype(np.int64), data["labels"].astype(np.int64)
  paths = _population_tables(tmp_path, top1, labels)
  tables = pt.load_prediction_tables(pt.expand_patterns(str(tmp_path / "m*.parquet")), ["block"], **QUIET)
  study = tables.study(dense_method="fp16")
  assert len(paths) == 16 and sorted(study.populations) == [("dense", 0.0), ("replica", 0.0)]
  dense, replica = study.predictions(("dense", 0.0)), study.predictions(("replica", 0.0))
  np.testing.assert_array_equal(dense, top1[:8])
  assert stats.find_pies(dense, replica).tolist() == stats.find_pies(top1[:8], top1[8:]).tolist()
  tables_out, summary, _ = analysis.analyze(study, bootstrap_resamples=0, noise_floor_splits=0, **QUIET)
  expected = stats.class_ttest(top1[:8], top1[8:], labels, 10, alpha=0.05)
  classes = tables_out[outputs.CLASS_STATS_CSV]
  np.testing.assert_allclose(classes["p_value"].to_numpy(float), expected["p_value"].to_numpy(float), equal_nan=True)
  assert summary["slices"]["features"] == ["block"]


def test_correctness_only_populations_find_examples_whose_modal_correctness_flips(tmp_path):
  from pie import analysis  # pylint: disable=import-outside-toplevel
  from pie import significance  # pylint: disable=import-outside-toplevel

  data = np.load(REAL)
  top1, labels = data["top1"][:16].astype(np.int64), data["labels"].astype(np.int64)
  _population_tables(tmp_path, top1, labels, right_only=True, suffix=".csv")
  tables = pt.load_prediction_tables(pt.expand_patterns(str(tmp_path / "m*.csv")), ["block"], **QUIET)
  study = tables.study(dense_method="fp16")
  assert study.class_names == [pt.CORRECT_CLASS, pt.WRONG_CLASS] and (study.labels == 0).all()
  right = top1 == labels
  # The modal answer is "right" when at least half the models are right (ties go to the first class, right).
  modal_dense, modal_replica = right[:8].sum(0) >= 4, right[8:].sum(0) >= 4
  result, summary, _ = analysis.analyze(study, bootstrap_resamples=0, noise_floor_splits=0, **QUIET)
  pies = result[outputs.PIES_CSV]
  assert sorted(pies["example_id"]) == np.flatnonzero(modal_dense != modal_replica).tolist()
  slices = result[outputs.SLICE_STATS_CSV].set_index("slice_value")
  membership = (np.arange(500) // 100)[:, None] == np.arange(5)[None, :]
  expected = significance.subset_tests(
      significance.subset_hits(right[:8].astype(np.int64), np.ones(500, np.int64), membership),
      significance.subset_hits(right[8:].astype(np.int64), np.ones(500, np.int64), membership),
      membership.sum(0),
      right[:8].mean(1),
      right[8:].mean(1),
  )
  np.testing.assert_allclose(slices.loc[[str(b) for b in range(5)], "p_value"].to_numpy(float), expected["p_value"])
  assert summary["levels"][1]["num_pies"] == int((modal_dense != modal_replica).sum())


def test_lm_eval_runs_declared_by_pie_run_json_make_populations(tmp_path):
  """Sampling runs of two models (seeds in pie_run.json) are populations; their examples' modal correctness decides
  the PIEs of the correctness-only tasks."""
  from pie import analysis  # pylint: disable=import-outside-toplevel

  runs = []
  for method, lost in (("bf16", 0.0), ("int4", 0.5)):
    for seed in range(3):
      run = write_lm_eval_run(str(tmp_path / f"{method}_{seed}"), lm_eval_right(seed, lost), seed=seed, extra=False)
      with open(os.path.join(run, "pie_run.json"), "w", encoding="utf-8") as f:
        json.dump({"method": method, "seed": seed}, f)
      runs.append(run)
  sources = pt.expand_patterns(str(tmp_path / "*"))
  assert sources == sorted(runs)
  tables = pt.load_prediction_tables(sources, ["subject"], **QUIET)
  study = tables.study(dense_method="bf16")
  assert sorted(study.populations) == [("dense", 0.0), ("int4", 0.0)]
  assert [m.seed for m in study.populations[("int4", 0.0)]] == [0, 1, 2]
  gsm = (tables.examples["task"] == "gsm8k").to_numpy()
  right = np.stack([m.correct for m in tables.models])
  modal = right[:3].sum(0) >= 2, right[3:].sum(0) >= 2
  result, _, _ = analysis.analyze(study, bootstrap_resamples=0, noise_floor_splits=0, **QUIET)
  pies = set(result[outputs.PIES_CSV]["example_id"])
  assert {i for i in np.flatnonzero(gsm)} & pies == set(np.flatnonzero(gsm & (modal[0] != modal[1])))


def test_a_population_of_one_model_and_a_missing_dense_one_are_refused(tmp_path):
  data = np.load(REAL)
  top1, labels = data["top1"][:3].astype(np.int64), data["labels"].astype(np.int64)
  _population_tables(tmp_path, top1, labels)
  tables = pt.load_prediction_tables(pt.expand_patterns(str(tmp_path / "m*.parquet")), **QUIET)
  with pytest.raises(PieError, match=r"no dense population among the models' methods \(fp16, replica\)") as error:
    tables.study()
  assert error.value.parameter == "dense_method"
  with pytest.raises(PieError, match=r"m00.parquet: population dense has one model \(m00\); a population needs"):
    tables.study(dense_method="fp16")


# ---------------------------------------------------------------------------------------------------------------------
# The binaries and the README.


@pytest.mark.slow
def test_the_compare_binary_on_tables_and_lm_eval_runs(mc, lm_runs, tmp_path):
  paths = {m: write_table(mc["frames"][m], tmp_path / f"{m}.jsonl") for m in ("fp16", "int4", "int8")}
  out = tmp_path / "out"
  proc = run_binary(
      "analysis.compare",
      f"--reference={paths['fp16']}",
      f"--candidates={paths['int4']},{paths['int8']}",
      "--format=table",
      "--group_by=subject",
      f"--out_dir={out}",
      "--max_excess_drop=0.15",
      check=False,
  )
  assert proc.returncode == 3, proc.stderr[-2000:]
  gate = [line for line in proc.stderr.splitlines() if line.startswith("gate failed")]
  assert len(gate) == 1 and "int4: " in gate[0] and "subject = hurt (" in gate[0]
  assert outputs.COMPARE_GROUPS_CSV in os.listdir(out)
  bad = write_table(mc["frames"]["int4"].iloc[:-1], tmp_path / "short.jsonl")
  proc = run_binary(
      "analysis.compare",
      f"--reference={paths['fp16']}",
      f"--candidates={bad}",
      f"--out_dir={tmp_path / 'o'}",
      check=False,
  )
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode == 1 and len(errors) == 1 and "lacks 1 example_ids" in errors[0]
  assert not (tmp_path / "o").exists()
  lm_out = tmp_path / "lm"
  proc = run_binary(
      "analysis.compare",
      f"--reference={lm_runs['paths']['bf16']}",
      f"--candidates={lm_runs['paths']['int4']}",
      "--format=lm_eval",
      "--group_by=subject",
      f"--out_dir={lm_out}",
  )
  assert "groups significant (FDR), largest group harm: task = " in proc.stdout
  summary = json.loads((lm_out / outputs.COMPARE_SUMMARY_JSON).read_text(encoding="utf-8"))
  assert summary["settings"]["group_by"] == ["task", "subject"] and summary["candidates"][0]["name"] == "int4"


@pytest.mark.slow
def test_the_analyze_binary_on_a_population_of_tables(tmp_path):
  data = np.load(REAL)
  top1, labels = data["top1"][:8].astype(np.int64), data["labels"].astype(np.int64)
  _population_tables(tmp_path, top1, labels)
  out = tmp_path / "analysis"
  proc = run_binary(
      "analysis.analyze",
      f"--prediction_tables={tmp_path / 'm*.parquet'}",
      "--dense_method=fp16",
      "--group_by=block",
      f"--out_dir={out}",
      "--bootstrap_resamples=20",
      "--noise_floor_splits=20",
  )
  assert "analysis written to" in proc.stdout
  assert {outputs.SLICE_STATS_CSV, outputs.TABLE_EXAMPLES_CSV, outputs.REPORT_HTML} <= set(os.listdir(out))
  examples = pd.read_csv(out / outputs.TABLE_EXAMPLES_CSV)
  assert list(examples.columns) == list(outputs.TABLE_EXAMPLES.columns()) + ["block"]
  proc = run_binary(
      "analysis.analyze", f"--prediction_tables={tmp_path / 'm*.parquet'}", f"--out_dir={out}", check=False
  )
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode == 1 and errors == [
      "error: no dense population among the models' methods (fp16, replica): name the baseline's method with "
      "dense_method, or give its models the method 'dense' [flag --dense_method]"
  ]


@pytest.mark.slow
def test_tables_are_read_and_compared_without_tensorflow(mc, tmp_path):
  paths = [write_table(mc["frames"][m], tmp_path / f"{m}.parquet") for m in ("fp16", "int4")]
  code = (
      "import sys, pie\n"
      f"result = pie.compare_tables({paths[0]!r}, [{paths[1]!r}], ['subject'], bootstrap_resamples=200, log=print)\n"
      "assert result.candidates[0]['num_significant_groups_fdr'] >= 1\n"
      "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras')]\n"
  )
  subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)


@pytest.mark.slow
def test_compare_html_of_tables_in_a_browser(browser, tmp_path):
  """The groups view follows its candidate select, and a correctness-only card says right and wrong under the
  tables' own id."""
  from tests import browser as browser_lib  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(5)
  language = np.array(["de", "th"])[rng.integers(0, 2, 200)]
  ref = rng.random(200) < 0.7
  paths = [
      write_table(correctness_frame(right, language=language), tmp_path / f"{name}.csv")
      for name, right in (("ref", ref), ("a", ref & (rng.random(200) < 0.8)), ("b", ref | (rng.random(200) < 0.2)))
  ]
  result = pt.compare_tables(paths[0], paths[1:], ["language"], bootstrap_resamples=200, **QUIET)
  out = result.write(str(tmp_path / "out"), images=False, **QUIET)
  url = (tmp_path / "out" / outputs.COMPARE_HTML).resolve().as_uri()
  assert os.path.isdir(out)
  context, tab = browser_lib.open_page(browser, url, viewport={"width": 1280, "height": 900})
  try:
    tab.wait_for_selector("#flip-grid .card")
    assert tab.problems == [] and tab.requests == [url]
    assert tab.locator("#classes").count() == 0
    blocks = "#groups .cand-block"
    assert tab.eval_on_selector_all(blocks, "bs => bs.map(b => b.hidden)") == [False, True]
    tab.select_option("#grp-candidate", "1")
    assert tab.eval_on_selector_all(blocks, "bs => bs.map(b => b.hidden)") == [True, False]
    card = tab.locator("#flip-grid .card").first
    example = int(card.get_attribute("data-example-id"))
    row = result.examples.loc[(result.examples["candidate"] == "a") & (result.examples["example_id"] == example)]
    assert card.locator(".head").inner_text().startswith(f"gen #{example}")
    assert card.locator(".lab-reference").inner_text() == ("right" if row["reference_correct"].iloc[0] else "wrong")
    assert card.locator(".lab-true").inner_text() == "(scored by correctness)"
  finally:
    context.close()


def test_the_readme_documents_predictions_from_other_frameworks():
  readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  start = readme.index("## Predictions from other frameworks")
  section = readme[start : readme.index("\n## ", start + 1)]
  for name in pt.COLUMNS + (pt.CONFIDENCE,) + outputs.COMPARE_GROUPS.columns() + outputs.TABLE_EXAMPLES.columns():
    assert f"`{name}`" in section, name
  for flag in (
      "--format",
      "--group_by",
      "--prediction_tables",
      "--dense_method",
      "--lm_eval_metric",
      "--lm_eval_filter",
  ):
    assert flag in section, flag
  for text in ("--log_samples", "pie.read_prediction_table(", "import torch", outputs.COMPARE_GROUPS_CSV, "pyarrow"):
    assert text in section, text
