"""A tiny study through the real binaries: train the populations, export, analyse, report; rerun; dry run."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from pie import analysis
from tests.conftest import TINY_STUDY_FLAGS, run_binary

PIES_COLUMNS = [
    "sparsity",
    "example_id",
    "label",
    "dense_modal",
    "pruned_modal",
    "dense_modal_share",
    "pruned_modal_share",
]
CLASS_COLUMNS = [
    "sparsity",
    "class_id",
    "class_name",
    "dense_recall_mean",
    "pruned_recall_mean",
    "recall_change",
    "normalized_change",
    "t_statistic",
    "p_value",
    "significant",
]


def _analysis_dir(tiny_study):
  return os.path.join(tiny_study["dir"], "analysis")


@pytest.mark.slow
def test_study_runs_and_prints_the_report_path(tiny_study):
  assert "models done 9/9" in tiny_study["stdout"]  # 3 dense, 3 dense replicates (the default control), 3 pruned
  report = os.path.join(_analysis_dir(tiny_study), "report.html")
  assert f"Report: {report}" in tiny_study["stdout"]
  assert os.path.getsize(report) > 1000


@pytest.mark.slow
def test_every_model_has_its_files(tiny_study):
  names = sorted(d for d in os.listdir(tiny_study["dir"]) if d.startswith(("sparsity", "dense_replicate")))
  # Independent seeds (the default): dense 0-2, the replicate 3-5, the 90% level 6-8, each paired with dense model i.
  assert names == (
      [f"dense_replicate_seed{k}" for k in (3, 4, 5)]
      + [f"sparsity0_seed{k}" for k in range(3)]
      + [f"sparsity90_seed{k}" for k in (6, 7, 8)]
  )
  for name in names:
    folder = os.path.join(tiny_study["dir"], name)
    for file in (f"{name}.tfrecord", f"{name}.json", "model.h5", "metrics.json", "train.log"):
      assert os.path.exists(os.path.join(folder, file)), (name, file)
    assert os.listdir(os.path.join(folder, "checkpoints"))
    assert os.listdir(os.path.join(folder, "tensorboard"))
    assert not os.path.exists(os.path.join(folder, ".claim"))
    log = open(os.path.join(folder, "train.log")).read()
    assert "epoch 2/2" in log  # epochs and steps are shown
    metadata = json.load(open(os.path.join(folder, f"{name}.json")))
    assert metadata["dataset"] == "digits" and metadata["split"] == "test" and metadata["num_classes"] == 10
    assert metadata["class_names"] == [str(d) for d in range(10)]
    assert metadata["num_examples"] == 500 and metadata["top_k"] == 5
    target = metadata["target_sparsity"]
    assert abs(metadata["measured_sparsity"] - target) <= 0.005
    assert metadata["method"] == (
        "dense_replicate" if name.startswith("dense_replicate") else "dense" if target == 0 else "magnitude"
    )
    assert metadata["dense_seed"] == metadata["seed"] % 3  # model i of every population is paired with dense model i


@pytest.mark.slow
def test_summary(tiny_study):
  summary = json.load(open(os.path.join(_analysis_dir(tiny_study), "summary.json")))
  dense, replicate, pruned = summary["levels"]
  assert (dense["sparsity"], replicate["sparsity"], pruned["sparsity"]) == (0.0, 0.0, 0.9)
  assert (dense["role"], replicate["role"], pruned["role"]) == ("dense", "control", "pruned")
  assert replicate["method"] == "dense_replicate" and replicate["models"] == [
      f"dense_replicate_seed{k}" for k in (3, 4, 5)
  ]
  assert dense["num_models"] == pruned["num_models"] == replicate["num_models"] == 3
  assert abs(pruned["measured_sparsity_mean"] - 0.9) <= 0.005
  pies = pd.read_csv(os.path.join(_analysis_dir(tiny_study), "pies.csv"))
  assert pruned["num_pies"] == (pies.method == "magnitude").sum() and pruned["pie_fraction"] == pruned["num_pies"] / 500
  assert replicate["num_pies"] == (pies.method == "dense_replicate").sum()
  classes = pd.read_csv(os.path.join(_analysis_dir(tiny_study), "class_stats.csv"))
  assert pruned["num_significant_classes"] == int(classes.loc[classes.method == "magnitude", "significant"].sum())
  assert summary["study"]["num_examples"] == 500 and summary["tie_rule"]
  assert summary["normalization"] == "per_model" and "normalization_warning" not in summary
  # The noise floor: the replicate against the dense models, and A/A splits of the 6 pooled dense models into 3 + 3.
  floor = summary["noise_floor"]
  assert floor["control"] == "dense_replicate" and floor["num_pies"] == replicate["num_pies"]
  assert floor["half_splits"]["pool_models"] == 6 and floor["half_splits"]["sizes"] == [3, 3]
  assert floor["half_splits"]["num_splits"] == 200
  assert pruned["distinguishable_from_noise"] in (True, False)
  assert pruned["pies_excess_ci_low"] <= pruned["num_pies"] - floor["half_splits"]["num_pies_mean"]
  # Independent seeds: the level is read against the independently seeded replicate, its matched control.
  assert (pruned["seed_relation"], pruned["floor_control"], pruned["floor_note"]) == (
      "independent",
      "dense_replicate",
      None,
  )
  assert pruned["control_risk"] == replicate["risk"] and summary["fdr_scope"] == "level"
  for key in ("num_pies_largest_id_rule", "num_pies_tie_dependent"):
    assert isinstance(pruned[key], int)
  # Where the harm comes from, from the dense population alone.
  assert set(pruned["risk"]) == {"dense_true_prob", "dense_disagreement"}  # no logits exported: no EL2N
  assert 0.5 < pruned["risk"]["dense_true_prob"]["auroc"] <= 1.0  # hard examples are more often PIEs
  assert pruned["train_frequency_spearman"]["num_classes"] == 10  # the exports record the training class counts
  deciles = pd.read_csv(os.path.join(_analysis_dir(tiny_study), "difficulty.csv"))
  at_90 = deciles.loc[deciles.method == "magnitude"]
  assert at_90["decile"].tolist() == list(range(1, 11)) and at_90["num_examples"].sum() == 500
  assert at_90["pie_rate"].iloc[0] >= at_90["pie_rate"].iloc[-1]


@pytest.mark.slow
def test_output_columns_and_pie_images(tiny_study):
  out = _analysis_dir(tiny_study)
  pies = pd.read_csv(os.path.join(out, "pies.csv"))
  assert list(pies.columns[: len(PIES_COLUMNS)]) == PIES_COLUMNS
  assert (pies.dense_modal != pies.pruned_modal).all()
  classes = pd.read_csv(os.path.join(out, "class_stats.csv"))
  assert set(CLASS_COLUMNS) <= set(classes.columns) and len(classes) == 20  # the replicate's classes, the level's
  assert list(classes.method.unique()) == ["dense_replicate", "magnitude"]
  accuracy = pd.read_csv(os.path.join(out, "pie_accuracy.csv"))
  assert list(accuracy.columns) == [
      "sparsity",
      "population",
      "subset",
      "num_examples",
      "top1_mean",
      "top1_std",
      "method",
  ]
  assert set(accuracy.subset) == {"pie", "random", "non_pie"} and set(accuracy.population) == {"dense", "pruned"}
  images = analysis.read_pie_images(os.path.join(out, "pies.tfrecord"))
  pies = pies.loc[pies.method == "magnitude"]  # the images are the pruned level's PIEs
  assert len(images) == len(pies)
  if images:
    first = images[0]
    assert first["image"].shape == (8, 8, 1) and first["image"].dtype == np.uint8
    row = pies[pies.example_id == first["example_id"]].iloc[0]
    assert (first["label"], first["dense_modal"], first["pruned_modal"]) == (
        row.label,
        row.dense_modal,
        row.pruned_modal,
    )


@pytest.mark.slow
def test_rerun_skips_finished_models(tiny_study):
  folder = os.path.join(tiny_study["dir"], "sparsity90_seed7")
  before = os.path.getmtime(os.path.join(folder, "sparsity90_seed7.tfrecord"))
  proc = run_binary("train.population", *TINY_STUDY_FLAGS, f"--workdir={tiny_study['dir']}", "--num_workers=2")
  assert "all 9 models" in proc.stdout and "are finished" in proc.stdout
  assert os.path.getmtime(os.path.join(folder, "sparsity90_seed7.tfrecord")) == before


@pytest.mark.slow
def test_dry_run_prints_one_command_per_model(tmp_path):
  proc = run_binary(
      "train.population", *TINY_STUDY_FLAGS, f"--workdir={tmp_path}", "--dry_run", "--strategy=tpu", "--tpu=my-tpu"
  )
  commands = proc.stdout.strip().splitlines()
  assert len(commands) == 9
  assert all(c.startswith("python -m train.train --config=configs/digits.py") for c in commands)
  replicates = [c for c in commands if "--config.method=dense_replicate" in c]
  assert len(replicates) == 3 and "--config.sparsity=0.0 --config.seed=5" in replicates[-1]
  assert all("--config.num_epochs=2" in c and "--strategy=tpu --tpu=my-tpu" in c for c in commands)
  assert "--config.sparsity=0.9 --config.seed=8" in commands[-1]  # the 90% level's own seeds: 6-8
  assert f"--workdir={tmp_path}/sparsity90_seed8" in commands[-1]
  # The grid is on record for validation and --export_missing, as after a launch.
  study = json.load(open(tmp_path / "study.json"))
  assert len(study["models"]) == 9 and f"--workdir={tmp_path}/{study['models'][-1]}" in commands[-1]


@pytest.mark.slow
def test_analysis_of_an_explicit_file_list(tiny_study, tmp_path):
  files = [
      os.path.join(tiny_study["dir"], n, f"{n}.tfrecord")
      for n in ("sparsity0_seed0", "sparsity0_seed1", "sparsity90_seed6", "sparsity90_seed7")
  ]
  run_binary(
      "analysis.analyze", f"--predictions={','.join(files)}", f"--out_dir={tmp_path}", "--nopie_images", "--noreport"
  )
  summary = json.load(open(tmp_path / "summary.json"))
  assert [level["num_models"] for level in summary["levels"]] == [2, 2]
  assert not os.path.exists(tmp_path / "pies.tfrecord")
