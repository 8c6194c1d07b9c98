"""Analysing a study whose predictions are missing, on a machine that cannot train.

A tiny study is trained and analysed by the real launcher; then prediction files are deleted (with the saved model,
leaving only the final checkpoint, in one case) and `analysis.analyze --export_missing` must export them from what
training left and give the same analysis, every output file byte for byte. A model whose training is unfinished is
listed, never exported; validation names the remedy for each case. The same study's checkpoints are also analysed
as runs trained outside a study (`--checkpoint_dirs`), and a study on another filesystem than the local one (TF's
ram://, through tf.io.gfile as gs:// is) is exported in place.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pie import analysis
from pie import population
from pie import predictions as predictions_lib
from pie import saved_exports
from pie import training
from pie import validate
from pie import variants
from pie.errors import PieError
from tests.conftest import REPO, digits_config, run_binary

STUDY_FLAGS = (
    "--config=configs/digits.py",
    "--config.sparsity_levels=(0.0,0.9)",
    "--config.num_seeds=3",
    "--config.num_epochs=2",
    "--config.pruning.end_fraction=0.5",
    "--config.controls=()",
)
# Independent seeds (the default): the 90% level trains on seeds 3-5, model i paired with dense model i.
MODELS = [f"sparsity0_seed{seed}" for seed in range(3)] + [f"sparsity90_seed{seed}" for seed in (3, 4, 5)]


def _tfrecord(study_dir, name):
  return os.path.join(study_dir, name, f"{name}.tfrecord")


def _outputs(directory):
  """{relative path: bytes} of every file below `directory`."""
  found = {}
  for root, _, files in os.walk(directory):
    for file in files:
      path = os.path.join(root, file)
      with open(path, "rb") as f:
        found[os.path.relpath(path, directory)] = f.read()
  return found


def _remove(study_dir, name, *files):
  for file in files:
    os.remove(os.path.join(study_dir, name, file))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """The study trained and analysed by the launcher, its analysis outputs and predictions kept for comparison."""
  root = tmp_path_factory.mktemp("export_missing")
  study_dir = str(root / "study")
  run_binary("train.population", *STUDY_FLAGS, f"--workdir={study_dir}", "--num_workers=2", "--analyze")
  reference = _outputs(os.path.join(study_dir, "analysis"))
  assert {"pies.csv", "class_stats.csv", "summary.json", "pies.tfrecord", "report.html"} <= set(reference)
  trained = {name: predictions_lib.read_predictions(_tfrecord(study_dir, name)) for name in MODELS}
  return {"dir": study_dir, "reference": reference, "predictions": trained}


def _check_exported(study, name, source):
  """The re-exported predictions are those training exported, and the metadata says where they came from."""
  again = predictions_lib.read_predictions(_tfrecord(study["dir"], name))
  before = study["predictions"][name]
  np.testing.assert_array_equal(again.top_k_classes, before.top_k_classes)
  np.testing.assert_array_equal(again.top_k_probs, before.top_k_probs)
  for key in ("measured_sparsity", "config_hash", "config", "method", "seed", "target_sparsity", "steps"):
    assert again.metadata[key] == before.metadata[key], key
  assert again.metadata["exported_from"].startswith(os.path.join(study["dir"], name, source))


@pytest.mark.slow
def test_export_missing_from_the_saved_model_gives_the_same_analysis(study):
  name = "sparsity90_seed4"
  _remove(study["dir"], name, f"{name}.tfrecord", f"{name}.json")
  shutil.rmtree(os.path.join(study["dir"], "analysis"))

  refused = run_binary("analysis.analyze", f"--study_dir={study['dir']}", check=False)
  assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
  assert f"{name}: trained (model.h5) but not exported" in refused.stderr
  assert f"--study_dir={study['dir']} --export_missing" in refused.stderr
  assert "[flag --export_missing]" in refused.stderr and "rerun the launcher" not in refused.stderr

  proc = run_binary("analysis.analyze", f"--study_dir={study['dir']}", "--export_missing", "--num_workers=1")
  assert f"exported 1/1: {name}" in proc.stdout and "ETA" in proc.stdout, proc.stdout
  assert _outputs(os.path.join(study["dir"], "analysis")) == study["reference"]
  _check_exported(study, name, "model.h5")


@pytest.mark.slow
def test_export_missing_from_the_final_checkpoint_gives_the_same_analysis(study):
  # sparsity0_seed0 is the first model read: the study's config in summary.json comes from its metadata.
  names = ("sparsity0_seed0", "sparsity90_seed5")
  for name in names:
    _remove(study["dir"], name, f"{name}.tfrecord", f"{name}.json", "model.h5", "metrics.json")
  shutil.rmtree(os.path.join(study["dir"], "analysis"))
  report = validate.validate_study(study["dir"])
  assert {m.name: m.status for m in report.models if m.name in names} == dict.fromkeys(names, validate.UNEXPORTED)
  assert (
      f"sparsity0_seed0: trained (final checkpoint {study['dir']}/sparsity0_seed0/checkpoints/ckpt-2 at epoch 2 of 2)"
      in "\n".join(report.problems)
  )

  proc = run_binary("analysis.analyze", f"--study_dir={study['dir']}", "--export_missing", "--num_workers=2")
  assert "2 models on 2 worker processes" in proc.stdout and "exported 2/2" in proc.stdout, proc.stdout
  assert _outputs(os.path.join(study["dir"], "analysis")) == study["reference"]
  for name in names:
    _check_exported(study, name, "checkpoints/ckpt-2")
    for file in ("model.h5", "metrics.json"):  # the folder holds again what training leaves
      assert os.path.exists(os.path.join(study["dir"], name, file)), (name, file)

  logs = []
  assert saved_exports.export_missing(study["dir"], log=logs.append) == []
  assert logs == [f"{study['dir']}: no trained model is missing its predictions"]


@pytest.mark.slow
def test_unfinished_training_is_listed_not_exported(study, tmp_path):
  study_dir = str(tmp_path / "study")
  shutil.copytree(study["dir"], study_dir, ignore=shutil.ignore_patterns("analysis"))
  name = "sparsity90_seed5"
  shutil.rmtree(os.path.join(study_dir, name))
  # One epoch of the study's two: a checkpoint at epoch 1, then the exported files removed (killed before its end).
  run_binary(
      "train.train",
      *[f for f in STUDY_FLAGS if f.startswith(("--config=", "--config.pruning"))],
      "--config.num_epochs=1",
      "--config.checkpoint_every_epochs=1",
      "--config.sparsity=0.9",
      "--config.seed=5",
      f"--workdir={os.path.join(study_dir, name)}",
  )
  _remove(study_dir, name, f"{name}.tfrecord", f"{name}.json", "model.h5", "metrics.json")

  report = validate.validate_study(study_dir)
  assert {m.name: m.status for m in report.models}[name] == validate.UNFINISHED
  problem = f"{name}: training unfinished (last checkpoint {study_dir}/{name}/checkpoints/ckpt-1 at epoch 1 of 2); "
  assert problem + "rerun the launcher to finish it" in report.problems
  logs = []
  with pytest.raises(PieError, match="training unfinished") as error:
    analysis.run(study_dir=study_dir, export_missing=True, num_workers=1, images=False, report=False, log=logs.append)
  assert error.value.parameter is None and "export_missing" not in str(error.value)
  assert any(line.startswith("not exported: 1 model(s) whose training is unfinished") and name in line for line in logs)
  assert not os.path.exists(_tfrecord(study_dir, name))

  _, summary = analysis.run(
      study_dir=study_dir,
      export_missing=True,
      validate_first=False,
      num_workers=1,
      images=False,
      report=False,
      log=lambda m: None,
  )
  assert [level["num_models"] for level in summary["levels"]] == [3, 2]
  assert not os.path.exists(_tfrecord(study_dir, name))

  # An export that fails is reported with its model once the others are done.
  broken, fine = "sparsity0_seed2", "sparsity90_seed3"
  for model in (broken, fine):
    _remove(study_dir, model, f"{model}.tfrecord", f"{model}.json")
  with open(os.path.join(study_dir, broken, "model.h5"), "wb") as f:
    f.write(b"not an HDF5 file")
  proc = run_binary("analysis.analyze", f"--study_dir={study_dir}", "--export_missing", "--num_workers=1", check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "1 of 2 export(s) failed" in proc.stderr and f"{broken}: {study_dir}/{broken}/model.h5: not a readable" in (
      proc.stderr
  )
  assert os.path.exists(_tfrecord(study_dir, fine)) and not os.path.exists(_tfrecord(study_dir, broken))
  assert not os.path.exists(os.path.join(study_dir, broken, population.CLAIM_FILE))


@pytest.mark.slow
def test_model_states_of_a_study(study, tmp_path):
  config, states = saved_exports.study_states(study["dir"])
  assert [s.job.name for s in states] == MODELS and {s.status for s in states} == {saved_exports.FINISHED}
  job = next(j for j in population.jobs(config) if j.name == "sparsity0_seed1")
  empty = str(tmp_path / "empty")
  os.makedirs(os.path.join(empty, job.name))
  state = saved_exports.model_state(empty, config, job)
  assert (state.status, state.detail) == (saved_exports.UNTRAINED, "no saved model and no checkpoint")
  assert validate._unexported(job.name, _tfrecord(empty, job.name), state).status == validate.MISSING  # pylint: disable=protected-access
  with pytest.raises(PieError, match="study.json: no readable study config") as error:
    saved_exports.export_missing(empty)
  assert error.value.parameter == "study_dir"
  with pytest.raises(PieError, match="export_missing exports the missing models of a study") as error:
    analysis.run(predictions=["a.tfrecord"], out_dir=str(tmp_path), export_missing=True)
  assert error.value.parameter == "export_missing"


@pytest.mark.slow
def test_the_study_checkpoints_analysed_as_runs(study, tmp_path):
  """A study's checkpoint folders, given as runs (the name rule reads the model folder's name), give its predictions."""
  flags = [f for f in STUDY_FLAGS if f.startswith(("--config=", "--config.pruning", "--config.num_epochs"))]
  pattern = f"--checkpoint_dirs={study['dir']}/sparsity*/checkpoints"
  out = tmp_path / "out"
  proc = run_binary(
      "analysis.analyze", pattern, *flags, f"--out_dir={out}", "--num_workers=1", "--nopie_images", "--noreport"
  )
  assert "declared by the name 'sparsity90_seed4'" in proc.stdout
  for name in MODELS:
    exported = predictions_lib.read_predictions(str(out / "predictions" / f"{name}.tfrecord"))
    np.testing.assert_array_equal(exported.top_k_probs, study["predictions"][name].top_k_probs)
    assert exported.metadata["measured_sparsity"] == study["predictions"][name].metadata["measured_sparsity"]
    assert exported.metadata["source_format"] == "checkpoint" and exported.metadata["epoch"] == 2
  summary = json.loads((out / "summary.json").read_text())
  reference = json.loads(study["reference"]["summary.json"])
  assert [level["num_pies"] for level in summary["levels"]] == [level["num_pies"] for level in reference["levels"]]

  # With the config's 20 epochs, checkpoints at epoch 2 are unfinished runs: listed, not exported.
  patterns, other = [f"{study['dir']}/sparsity*/checkpoints"], str(tmp_path / "other")
  with pytest.raises(PieError, match="6 problem\\(s\\) with the runs") as error:
    saved_exports.export_runs(digits_config(), patterns, other, log=lambda m: None)
  assert error.value.parameter == "validate_first"
  assert f"{study['dir']}/sparsity0_seed0/checkpoints: training unfinished" in str(error.value)
  assert "at epoch 2 of config.num_epochs=20); not exported" in str(error.value)
  logs = []  # not strict (--novalidate): a warning, and no run left to analyse
  with pytest.raises(PieError, match="no run is ready to analyse"):
    saved_exports.export_runs(digits_config(), patterns, other, strict=False, log=logs.append)
  assert logs[-1].startswith("warning: 6 problem(s) with the runs")
  assert not os.path.exists(tmp_path / "other" / "predictions")


_RAM_STUDY = """
import json, os, sys
import pie
import tensorflow as tf
from pie import analysis

local, remote = sys.argv[1], "ram://study"
for root, _, files in os.walk(local):
  if "analysis" in root.split(os.sep):
    continue
  for file in files:
    tf.io.gfile.copy(os.path.join(root, file), remote + root[len(local):] + "/" + file)
for file in ("sparsity90_seed3.tfrecord", "sparsity90_seed3.json", "model.h5"):
  tf.io.gfile.remove(remote + "/sparsity90_seed3/" + file)
analysis.run(study_dir=remote, export_missing=True, num_workers=1, report=False, log=lambda m: None)
print(json.dumps({name: tf.io.gfile.GFile(remote + "/analysis/" + name, "rb").read().hex()
                  for name in tf.io.gfile.listdir(remote + "/analysis")}))
"""


@pytest.mark.slow
def test_a_study_on_another_filesystem_is_exported_in_place(study):
  """Through tf.io.gfile only: TF's in-memory filesystem stands in for gs:// (it lives in one process)."""
  proc = subprocess.run(
      [sys.executable, "-c", _RAM_STUDY, study["dir"]], cwd=REPO, capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  written = {name: bytes.fromhex(data) for name, data in json.loads(proc.stdout.splitlines()[-1]).items()}
  for name in ("pies.csv", "class_stats.csv", "exemplar_scores.csv", "pie_accuracy.csv", "pies.tfrecord"):
    assert written[name] == study["reference"][name], name
  summary, reference = json.loads(written["summary.json"]), json.loads(study["reference"]["summary.json"])
  assert summary["study"].pop("study_dir") == "ram://study"
  reference["study"].pop("study_dir")
  assert summary == reference


@pytest.mark.slow
def test_train_export_from_a_checkpoint(study, tmp_path):
  out = str(tmp_path / "sparsity90_seed3.tfrecord")
  checkpoints = os.path.join(study["dir"], "sparsity90_seed3", "checkpoints")
  run_binary(
      "train.export",
      *STUDY_FLAGS,
      "--config.sparsity=0.9",
      "--config.seed=3",
      f"--checkpoint_dir={checkpoints}",
      f"--out={out}",
  )
  exported, trained = predictions_lib.read_predictions(out), study["predictions"]["sparsity90_seed3"]
  np.testing.assert_array_equal(exported.top_k_probs, trained.top_k_probs)
  assert exported.metadata["epoch"] == 2 and exported.metadata["checkpoint"] == os.path.join(checkpoints, "ckpt-2")
  for key in ("measured_sparsity", "config_hash", "method", "name"):
    assert exported.metadata[key] == trained.metadata[key], key


@pytest.mark.slow
def test_a_qat_model_is_exported_from_its_checkpoint_or_its_tflite(tmp_path):
  """A method deployed as TFLite: from the final checkpoint (converted again), else from model.tflite."""
  workdir = str(tmp_path / "qat_seed0")
  flags = ("--config.method=qat", "--config.sparsity=0.0", "--config.seed=0", "--config.num_epochs=1")
  run_binary("train.train", "--config=configs/digits.py", *flags, f"--workdir={workdir}")
  config = digits_config(method="qat", sparsity=0.0, seed=0, num_epochs=1)
  job = variants.config_job(config)
  path = _tfrecord(os.path.dirname(workdir), job.name)
  trained = predictions_lib.read_predictions(path)
  for source in ("checkpoints/ckpt-1", "model.tflite"):
    _remove(os.path.dirname(workdir), job.name, f"{job.name}.tfrecord", f"{job.name}.json")
    if source == "model.tflite":
      shutil.rmtree(os.path.join(workdir, "checkpoints"))
    training.export_trained(config, workdir, job=job, log=lambda m: None)
    again = predictions_lib.read_predictions(path)
    np.testing.assert_array_equal(again.top_k_probs, trained.top_k_probs, err_msg=source)
    assert again.metadata["measured_sparsity"] == trained.metadata["measured_sparsity"]
    assert again.metadata["compressed_bytes"] == trained.metadata["compressed_bytes"]
    assert again.metadata["exported_from"] == os.path.join(workdir, source)
  os.remove(os.path.join(workdir, "metrics.json"))
  _remove(os.path.dirname(workdir), job.name, f"{job.name}.tfrecord", f"{job.name}.json")
  with pytest.raises(PieError, match="neither a final checkpoint nor a metrics.json"):
    training.export_trained(config, workdir, job=job, log=lambda m: None)
