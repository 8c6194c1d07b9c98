"""The paired design through the real binaries: dense models first, each compressed model fine-tuned from its dense
twin (recorded as `init_from`), the paired analysis, the dry run's order, and resuming after a kill."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import model_dir
from pie import models
from pie import population
from pie import predictions as predictions_lib
from pie import significance
from pie import variants
from pie.errors import PieError
from tests.conftest import REPO, digits_config, override, run_binary

# A tiny paired study: dense models of 2 epochs, then magnitude 90% and 2:4 models fine-tuned from them for 3 epochs
# (checkpointed after each, so that a kill can land between checkpoints), and a dense replicate.
FLAGS = (
    "--config=configs/digits_finetune.py",
    "--config.sparsity_levels=(0.0,0.9)",
    "--config.num_seeds=3",
    "--config.num_epochs=2",
    "--config.finetune_epochs=3",
    "--config.checkpoint_every_epochs=1",
    "--config.variants=('magnitude','2:4')",
    "--config.controls=('dense_replicate',)",
)
# One model left to train needs one worker, with the threads each of the reference's two had (cores / workers): the
# number of TensorFlow threads changes the floats.
ONE_WORKER_LIKE_TWO = ("--num_workers=1", f"--threads={max(1, (os.cpu_count() or 1) // 2)}")
DENSE = [f"sparsity0_seed{s}" for s in range(3)]
# Independent seeds: every population fine-tunes with seeds of its own; model i starts from dense model i.
FINE_TUNED = [f"sparsity90_seed{s}" for s in (6, 7, 8)] + [f"2of4_sparsity50_seed{s}" for s in (9, 10, 11)]
REPLICATES = [f"dense_replicate_seed{s}" for s in (3, 4, 5)]


def _finetune_config(**overrides):
  sys.path.insert(0, REPO)
  from configs import digits_finetune  # pylint: disable=g-import-not-at-top

  return override(digits_finetune.get_config(), **overrides)


def _metadata(study_dir, name):
  return json.load(open(os.path.join(study_dir, name, f"{name}.json")))


def _predictions(study_dir, name):
  return predictions_lib.read_predictions(os.path.join(study_dir, name, f"{name}.tfrecord"))


@pytest.fixture(scope="module")
def paired_study(tmp_path_factory):
  study_dir = str(tmp_path_factory.mktemp("paired_study"))
  proc = run_binary("train.population", *FLAGS, f"--workdir={study_dir}", "--num_workers=2", "--analyze")
  return {"dir": study_dir, "stdout": proc.stdout}


@pytest.mark.slow
def test_compressed_models_start_from_their_finished_dense_twins(paired_study):
  study_dir = paired_study["dir"]
  assert "models done 12/12" in paired_study["stdout"] and "FAILED" not in paired_study["stdout"]
  for name in DENSE + REPLICATES:
    assert _metadata(study_dir, name)["init_from"] is None, name
  for name in FINE_TUNED:
    metadata = _metadata(study_dir, name)
    twin = f"sparsity0_seed{metadata['seed'] % 3}"
    assert metadata["init_from"] == twin and metadata["config"]["init_from_dense"] is True
    assert metadata["steps"] == 3 * 40  # the fine-tuning steps: 3 epochs of 40 batches
    log = open(os.path.join(study_dir, name, "train.log")).read()
    assert f"{name}: starting from its dense twin {twin} ({study_dir}/{twin}/model.h5)" in log
    assert "epoch 3/3" in log and "epoch 4/" not in log
    # Dense first: the twin's export was complete before the fine-tuned model wrote its checkpoints.
    checkpoints = glob.glob(os.path.join(study_dir, name, "checkpoints", "ckpt-*.index"))
    first = min(os.stat(path).st_mtime for path in checkpoints)
    assert os.stat(os.path.join(study_dir, twin, f"{twin}.json")).st_mtime <= first
  assert abs(_metadata(study_dir, "sparsity90_seed6")["measured_sparsity"] - 0.9) <= 0.005
  # One study, one config hash: the design is part of it.
  assert len({_metadata(study_dir, n)["config_hash"] for n in DENSE + FINE_TUNED + REPLICATES}) == 1


@pytest.mark.slow
def test_the_analysis_of_a_paired_study(paired_study):
  out = os.path.join(paired_study["dir"], "analysis")
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["design"] == "paired"
  levels = {(level["method"], level["sparsity"]): level for level in summary["levels"]}
  for key in (("magnitude", 0.9), ("2:4", 0.5)):
    level = levels[key]
    assert level["num_pairs"] == 3 and level["single_pair"]["num_pairs"] == 3
    assert [p["dense_model"] for p in level["single_pair"]["pairs"]] == DENSE
    assert level["paired_models_needed"]["current_models"] == [3, 3]
  assert levels[("dense_replicate", 0.0)]["num_pairs"] == 0  # trained from scratch: no twin
  classes = pd.read_csv(os.path.join(out, "class_stats.csv"), keep_default_na=False, na_values=[""])
  assert set(significance.PAIRED_COLUMNS) <= set(classes.columns) and classes.columns[-1] == "method"
  magnitude = classes.loc[classes["method"] == "magnitude"]
  assert (magnitude["num_pairs"] == 3).all()
  assert (classes.loc[classes["method"] == "dense_replicate", "paired_note"] == significance.NOTE_NO_PAIRS).all()
  assert levels[("magnitude", 0.9)]["num_significant_classes_paired_fdr"] == int(
      magnitude["paired_significant_fdr"].sum()
  )
  report = open(os.path.join(out, "report.html")).read()
  assert "Design: paired." in report and "id='pairs-table'" in report


@pytest.mark.slow
def test_dry_run_prints_the_dense_commands_first_and_marks_the_dependency(tmp_path):
  proc = run_binary("train.population", *FLAGS, f"--workdir={tmp_path}", "--dry_run")
  lines = proc.stdout.strip().splitlines()
  comments = [i for i, line in enumerate(lines) if line.startswith("#")]
  assert len(comments) == 1 and "need dense models above (their dense twins" in lines[comments[0]]
  before, after = lines[: comments[0]], lines[comments[0] + 1 :]
  assert len(before) == 6 and len(after) == 6  # 3 dense + 3 replicates; 3 magnitude + 3 2:4
  assert all("--config.sparsity=0.0" in line for line in before)
  assert all("--config.sparsity=0.9" in line or "--config.method=2:4" in line for line in after)


@pytest.mark.slow
def test_a_killed_launcher_resumes_to_the_same_predictions(paired_study, tmp_path):
  """SIGKILL the launcher while a fine-tuned model trains (after its first checkpoint); the rerun finishes it, with
  the predictions of the uninterrupted study. The other models are the uninterrupted study's, copied: what is resumed
  is one model's fine-tuning from its twin (tests/test_reliability.py kills models trained from scratch)."""
  study_dir = str(tmp_path / "study")
  resumed_name = "sparsity90_seed6"
  for name in DENSE + FINE_TUNED + REPLICATES:
    if name != resumed_name:
      shutil.copytree(os.path.join(paired_study["dir"], name), os.path.join(study_dir, name))
  launcher = subprocess.Popen(
      [sys.executable, "-m", "train.population", *FLAGS, f"--workdir={study_dir}", *ONE_WORKER_LIKE_TWO],
      cwd=REPO,
      stdout=open(tmp_path / "run1.out", "w"),
      stderr=subprocess.STDOUT,
      start_new_session=True,
  )
  checkpoint = os.path.join(study_dir, resumed_name, "checkpoints", "checkpoint")
  deadline = time.time() + 600
  while not os.path.exists(checkpoint):
    assert launcher.poll() is None, (tmp_path / "run1.out").read_text()[-3000:]
    assert time.time() < deadline, "timed out waiting for the first fine-tuning checkpoint"
    time.sleep(0.01)
  os.killpg(launcher.pid, signal.SIGKILL)
  launcher.wait()
  assert not model_dir.is_finished(os.path.join(study_dir, resumed_name), resumed_name)
  for path in glob.glob(f"{study_dir}/*/{population.CLAIM_FILE}"):  # the killed worker's claims are stale
    pid = int(open(path).read().split()[1])
    while population._pid_alive(pid):  # pylint: disable=protected-access
      time.sleep(0.05)
  proc = run_binary("train.population", *FLAGS, f"--workdir={study_dir}", *ONE_WORKER_LIKE_TWO)
  assert "FAILED" not in proc.stdout
  assert "training 1 of 12 models" in proc.stdout and "(11 already finished)" in proc.stdout
  log = open(os.path.join(study_dir, resumed_name, "train.log")).read()
  assert "resumed from" in log
  reference, resumed = _predictions(paired_study["dir"], resumed_name), _predictions(study_dir, resumed_name)
  np.testing.assert_array_equal(resumed.top_k_classes, reference.top_k_classes)
  np.testing.assert_array_equal(resumed.top_k_probs, reference.top_k_probs)
  assert resumed.metadata["init_from"] == "sparsity0_seed0"


@pytest.mark.slow
def test_train_one_model_refuses_an_unfinished_twin(tmp_path):
  proc = run_binary(
      "train.train",
      "--config=configs/digits_finetune.py",
      "--config.sparsity=0.9",
      "--config.seed=1",
      f"--workdir={tmp_path}/sparsity90_seed1",
      check=False,
  )
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert "sparsity90_seed1 starts from its dense twin sparsity0_seed1 (config.init_from_dense), which is not " in (
      proc.stderr
  )
  assert f"finished in {tmp_path}/sparsity0_seed1: train it first" in proc.stderr


def test_jobs_of_the_paired_design():
  config = _finetune_config(sparsity_levels=(0.0, 0.5), num_seeds=2, controls=("dense_replicate", "sham"))
  with config.unlocked():
    config.variants = ("magnitude", "qat", "ptq_float16")
  jobs = {job.name: job for job in population.jobs(config)}
  assert jobs["sparsity0_seed1"].requires == () and jobs["sparsity0_seed1"].init_from is None
  assert jobs["dense_replicate_seed3"].requires == ()  # the replicate is the independent noise floor
  for name, twin in (  # blocks of seeds: replicate 2-3, sham 4-5, magnitude 6-7, qat 8-9; model i starts from dense i
      ("sham_seed5", "sparsity0_seed1"),
      ("sparsity50_seed6", "sparsity0_seed0"),
      ("qat_seed9", "sparsity0_seed1"),
  ):
    assert jobs[name].init_from == twin and jobs[name].requires == (twin,), name
  assert jobs["ptq_float16_seed1"].init_from is None and jobs["ptq_float16_seed1"].requires == ("sparsity0_seed1",)
  for job in jobs.values():  # one model's config alone gives the launcher's job
    assert variants.config_job(population.job_config(config, job)) == job
  with pytest.raises(PieError, match="config.finetune_epochs must be a positive number"):
    population.jobs(_finetune_config(finetune_epochs=0))


def test_the_design_is_part_of_the_config_hash():
  paired = _finetune_config()
  assert model_dir.config_hash(paired) != model_dir.config_hash(_finetune_config(init_from_dense=False))
  assert model_dir.config_hash(paired) != model_dir.config_hash(_finetune_config(finetune_epochs=11))
  # The seed, level and method still are not: one hash per study.
  assert model_dir.config_hash(paired) == model_dir.config_hash(_finetune_config(seed=4, sparsity=0.9))
  # A config without the fields (every study before the paired design) keeps its hash.
  assert "init_from_dense" not in digits_config()


@pytest.mark.parametrize("method, sparsity", [("magnitude", 0.9), ("2:4", 0.5), ("random", 0.9), ("sham", 0.001)])
def test_the_wrapped_trained_model_computes_what_its_twin_computes(method, sparsity):
  import tf_keras as keras  # pylint: disable=g-import-not-at-top

  config = _finetune_config(num_epochs=2, steps_per_epoch=10)
  keras.utils.set_random_seed(0)
  trained = models.build_model(config.model, (8, 8, 1), 10)
  images = np.random.default_rng(0).random((50, 8, 8, 1)).astype(np.float32)
  expected = trained(images).numpy()
  job = variants.config_job(population.model_config(config, sparsity, 0, method))
  wrapped, _ = variants.get_variant(method).wrap_trained(trained, config, job, 20)
  # Every weight kept, the classifier (re-created by the wrapping, outside the pruning scope) included.
  np.testing.assert_array_equal(wrapped(images).numpy(), expected)
  with pytest.raises(PieError, match="does not start from a dense model"):
    variants.get_variant("dense").wrap_trained(trained, config, job, 20)
