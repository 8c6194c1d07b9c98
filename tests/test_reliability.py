"""Fault injection through the real binaries: SIGKILL mid-training, mid-grid and mid-write, racing launchers.

Each test kills or races real processes and then checks what a user relies on: a rerun resumes and finishes with the
predictions an uninterrupted run gives, only missing models are trained, no model is trained twice, and no reader
ever sees a partial file.
"""

import glob
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import pytest

from pie import analysis
from pie import model_dir
from pie import population
from pie import predictions as predictions_lib
from pie import study as study_lib
from pie import validate
from pie import variants
from pie.errors import PieError
from tests import fake_study
from tests.conftest import REPO, digits_config, run_binary

# One pruned digits model whose pruning window ends inside epoch 2: a kill after epoch 1 lands mid-pruning.
# A checkpoint after every epoch (digits checkpoints every 5 by default): the kill lands after the first one.
TRAIN_FLAGS = (
    "--config=configs/digits.py",
    "--config.num_epochs=3",
    "--config.sparsity=0.5",
    "--config.pruning.end_fraction=0.5",
    "--config.batch_size=16",
    "--config.seed=7",
    "--config.checkpoint_every_epochs=1",
)
# A small study: 2 levels x 2 seeds x 1 epoch.
STUDY_FLAGS = (
    "--config=configs/digits.py",
    "--config.sparsity_levels=(0.0,0.5)",
    "--config.num_seeds=2",
    "--config.num_epochs=1",
    "--config.pruning.end_fraction=0.5",
    "--config.controls=()",
)
# Independent seeds (the default): the 50% level trains on seeds of its own, 2 and 3.
STUDY_MODELS = ("sparsity0_seed0", "sparsity0_seed1", "sparsity50_seed2", "sparsity50_seed3")


def _start(module, *args, out):
  """Starts `python -m module args` in its own process group (so the group can be killed), output to a file."""
  return subprocess.Popen(
      [sys.executable, "-m", module, *args],
      cwd=REPO,
      stdout=open(out, "w"),
      stderr=subprocess.STDOUT,
      start_new_session=True,
  )


def _kill_group(proc):
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()


def _wait_until(condition, timeout, what, proc=None, poll=0.01):
  deadline = time.time() + timeout
  while not condition():
    if proc is not None and proc.poll() is not None:
      raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}")
    if time.time() > deadline:
      raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    time.sleep(poll)


def _pid_gone(pid, timeout=30):
  alive = population._pid_alive  # pylint: disable=protected-access
  _wait_until(lambda: not alive(pid), timeout, f"process {pid} to exit")


def _study_config():
  return digits_config(
      sparsity_levels=(0.0, 0.5), num_seeds=2, num_epochs=1, controls=(), **{"pruning.end_fraction": 0.5}
  )


def _finished(study_dir, config):
  return {
      variants.model_name(variants.DEFAULT_METHOD, s, seed) for s, seed in population.finished_models(config, study_dir)
  }


def _tfrecord(study_dir, name):
  return os.path.join(study_dir, name, f"{name}.tfrecord")


@pytest.mark.slow
def test_killed_training_resumes_to_the_predictions_of_an_uninterrupted_run(tmp_path):
  """SIGKILL after a checkpoint, mid-epoch; the rerun resumes and ends where an uninterrupted run ends, exactly."""
  uninterrupted = _start("train.train", *TRAIN_FLAGS, f"--workdir={tmp_path}/a", out=tmp_path / "a.out")
  killed = _start("train.train", *TRAIN_FLAGS, f"--workdir={tmp_path}/b", out=tmp_path / "b1.out")
  state = tmp_path / "b" / "checkpoints" / "checkpoint"  # written (atomically) after a checkpoint's data
  _wait_until(state.exists, 300, "the first checkpoint", proc=killed)
  time.sleep(random.Random(0).uniform(0.0, 0.15))  # inside epoch 2 (about 80 steps)
  _kill_group(killed)
  assert killed.returncode == -signal.SIGKILL
  assert not (tmp_path / "b" / "sparsity50_seed7.json").exists(), "the run finished before it was killed"
  saved = sorted(int(p.split("ckpt-")[1].split(".")[0]) for p in glob.glob(f"{tmp_path}/b/checkpoints/ckpt-*.index"))
  assert saved and saved[-1] < 3, saved
  # The resume point is the checkpoint the state file names: a kill can land after a checkpoint's files are written
  # and before the state file commits it, and then the one before is the last complete one.
  committed = int(re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text(), re.M).group(1))
  assert committed in saved[-2:], (committed, saved)

  # Resume it, and in parallel train the same model from scratch once more (reproducibility of two clean runs).
  resumed = _start("train.train", *TRAIN_FLAGS, f"--workdir={tmp_path}/b", out=tmp_path / "b2.out")
  again = _start("train.train", *TRAIN_FLAGS, f"--workdir={tmp_path}/c", out=tmp_path / "c.out")
  for proc, out in ((uninterrupted, "a.out"), (resumed, "b2.out"), (again, "c.out")):
    assert proc.wait(timeout=600) == 0, (tmp_path / out).read_text()[-3000:]
  output = (tmp_path / "b2.out").read_text()
  assert f"resumed from {tmp_path}/b/checkpoints/ckpt-{committed} (epoch {committed})" in output, output[-3000:]
  assert f"epoch {committed}/3 " not in output and "epoch 3/3 " in output  # only the remaining epochs ran

  reference = predictions_lib.read_predictions(str(tmp_path / "a" / "sparsity50_seed7.tfrecord"))
  assert reference.metadata["measured_sparsity"] == pytest.approx(0.5, abs=0.005)
  assert np.mean(reference.top1 == reference.labels) > 0.5  # a trained model, not a constant one
  for run in ("b", "c"):
    other = predictions_lib.read_predictions(str(tmp_path / run / "sparsity50_seed7.tfrecord"))
    np.testing.assert_array_equal(other.top_k_classes, reference.top_k_classes, err_msg=run)
    np.testing.assert_array_equal(other.top_k_probs, reference.top_k_probs, err_msg=run)
    assert other.metadata["measured_sparsity"] == reference.metadata["measured_sparsity"]
    assert other.metadata["config_hash"] == reference.metadata["config_hash"]


@pytest.mark.slow
def test_killed_launcher_rerun_trains_only_what_is_missing(tmp_path):
  """SIGKILL the launcher and its worker mid-grid; damage two finished models; each rerun redoes only the rest."""
  study_dir = str(tmp_path / "study")
  config = _study_config()
  launcher = _start(
      "train.population", *STUDY_FLAGS, f"--workdir={study_dir}", "--num_workers=1", out=tmp_path / "run1.out"
  )
  _wait_until(lambda: len(_finished(study_dir, config)) >= 1, 300, "a first finished model", proc=launcher)
  claims = glob.glob(f"{study_dir}/*/{population.CLAIM_FILE}")
  _kill_group(launcher)
  for path in claims:  # the worker of the killed group is gone too: its claims are stale
    try:
      _pid_gone(int(open(path).read().split()[1]))
    except (FileNotFoundError, IndexError):
      pass
  finished = _finished(study_dir, config)
  assert 1 <= len(finished) < 4, (finished, (tmp_path / "run1.out").read_text()[-2000:])
  mtimes = {n: os.stat(_tfrecord(study_dir, n)).st_mtime_ns for n in finished}

  report = validate.validate_study(study_dir)
  assert not report.ok
  statuses = {m.name: m.status for m in report.models}
  assert set(statuses) == set(STUDY_MODELS)  # the expected models come from the launcher's study.json
  for name in STUDY_MODELS:
    assert statuses[name] in (("ok",) if name in finished else ("missing", "incomplete")), statuses

  proc = run_binary("train.population", *STUDY_FLAGS, f"--workdir={study_dir}", "--num_workers=1")
  missing = 4 - len(finished)
  assert f"training {missing} of 4 models" in proc.stdout and f"({len(finished)} already finished)" in proc.stdout
  assert _finished(study_dir, config) == set(STUDY_MODELS)
  for name in STUDY_MODELS:
    trained_now = proc.stdout.count(f"] {name}: top-1")
    assert trained_now == (0 if name in finished else 1), (name, proc.stdout)
  assert {n: os.stat(_tfrecord(study_dir, n)).st_mtime_ns for n in finished} == mtimes

  # Damage two finished models: a TFRecord cut short under its metadata, a metadata file lost.
  truncated, unfinished = "sparsity50_seed3", "sparsity0_seed0"
  before = predictions_lib.read_predictions(_tfrecord(study_dir, truncated))
  data = open(_tfrecord(study_dir, truncated), "rb").read()
  open(_tfrecord(study_dir, truncated), "wb").write(data[: len(data) // 2])
  os.remove(predictions_lib.metadata_path(_tfrecord(study_dir, unfinished)))
  statuses = {m.name: m.status for m in validate.validate_study(study_dir).models}
  assert statuses[truncated] == statuses[unfinished] == "incomplete"
  with pytest.raises(PieError, match=f"{_tfrecord(study_dir, truncated)}: truncated or corrupt"):
    study_lib.load_study(study_dir, log=lambda m: None)  # never analysed
  cli = run_binary("analysis.validate", f"--study_dir={study_dir}", check=False)
  assert cli.returncode == 1 and "Traceback" not in cli.stderr, cli.stderr[-2000:]
  assert "problem(s)" in cli.stderr
  for name, status in ((truncated, "incomplete"), (unfinished, "incomplete"), ("sparsity0_seed1", "ok")):
    assert any(line.split()[:2] == [name, status] for line in cli.stdout.splitlines()), cli.stdout
  assert f"problem: {_tfrecord(study_dir, truncated)}" in cli.stdout
  assert f"problem: {_tfrecord(study_dir, unfinished)}: export unfinished" in cli.stdout

  untouched = {
      n: os.stat(_tfrecord(study_dir, n)).st_mtime_ns for n in STUDY_MODELS if n not in (truncated, unfinished)
  }
  proc = run_binary("train.population", *STUDY_FLAGS, f"--workdir={study_dir}", "--num_workers=1")
  assert "training 2 of 4 models" in proc.stdout, proc.stdout
  assert {n: os.stat(_tfrecord(study_dir, n)).st_mtime_ns for n in untouched} == untouched
  log = open(os.path.join(study_dir, truncated, "train.log")).read()
  assert "resumed from" in log.split("epoch 1/1")[-1]  # re-exported from its last checkpoint, not retrained
  after = predictions_lib.read_predictions(_tfrecord(study_dir, truncated))
  np.testing.assert_array_equal(after.top_k_classes, before.top_k_classes)
  np.testing.assert_array_equal(after.top_k_probs, before.top_k_probs)
  report = validate.validate_study(study_dir)
  assert report.ok, report.table()


@pytest.mark.slow
def test_two_launchers_at_once_train_every_model_exactly_once(tmp_path):
  """Two launchers on one study directory, and a stale claim left by a dead process: each model trained once."""
  study_dir = str(tmp_path / "study")
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  stale = os.path.join(study_dir, "sparsity50_seed3")
  os.makedirs(stale)
  open(os.path.join(stale, population.CLAIM_FILE), "w").write(f"{socket.gethostname()} {dead.pid}")

  launchers = [
      _start(
          "train.population",
          *STUDY_FLAGS,
          f"--workdir={study_dir}",
          "--num_workers=1",
          out=tmp_path / f"launcher{i}.out",
      )
      for i in range(2)
  ]
  codes = [p.wait(timeout=600) for p in launchers]
  outputs = [(tmp_path / f"launcher{i}.out").read_text() for i in range(2)]
  assert codes == [0, 0], [o[-2000:] for o in outputs]
  for name in STUDY_MODELS:
    trained = sum(o.count(f"] {name}: top-1") for o in outputs)
    assert trained == 1, (name, [o[-3000:] for o in outputs])
    log = open(os.path.join(study_dir, name, "train.log")).read()
    assert log.count("epoch 1/1 ") == 1 and log.count(f"{name}: top-1") == 1, log
    assert not os.path.exists(os.path.join(study_dir, name, population.CLAIM_FILE))
  assert not glob.glob(f"{study_dir}/*/*.tmp-*")
  report = validate.validate_study(study_dir)  # every file complete and readable, one config
  assert report.ok and [m.status for m in report.models] == ["ok"] * 4, report.table()
  assert "4 model(s) ok of 4 expected; 0 problem(s)" in report.table()


def _claim_with_a_slow_judgment(directory, barrier, results):
  # Widens the window between reading a claim and acting on it, as a loaded machine would.
  alive = population._pid_alive  # pylint: disable=protected-access

  def slow_alive(pid):
    time.sleep(0.05)
    return alive(pid)

  population._pid_alive = slow_alive  # pylint: disable=protected-access
  barrier.wait()
  results.put(population.claim(directory))
  barrier.wait()  # stay alive until every process has tried: a winner that exits leaves a stale claim itself


@pytest.mark.slow
def test_a_stale_claim_is_taken_over_by_exactly_one_process(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  context = multiprocessing.get_context("fork")
  for trial in range(3):
    directory = str(tmp_path / str(trial))
    os.makedirs(directory)
    open(os.path.join(directory, population.CLAIM_FILE), "w").write(f"{socket.gethostname()} {dead.pid}")
    barrier, results = context.Barrier(6), context.Queue()
    procs = [context.Process(target=_claim_with_a_slow_judgment, args=(directory, barrier, results)) for _ in range(6)]
    for p in procs:
      p.start()
    for p in procs:
      p.join(timeout=60)
    winners = sum(results.get(timeout=10) for _ in procs)
    assert winners == 1, f"trial {trial}: {winners} processes took over the same stale claim"
    owner = open(os.path.join(directory, population.CLAIM_FILE)).read().split()
    assert int(owner[1]) in {p.pid for p in procs}


def test_a_live_claim_is_respected(tmp_path):
  directory = str(tmp_path / "m")
  os.makedirs(directory)
  open(os.path.join(directory, population.CLAIM_FILE), "w").write(f"{socket.gethostname()} {os.getppid()}")
  assert not population.claim(directory)
  open(os.path.join(directory, population.CLAIM_FILE), "w").write("elsewhere.example 12345")
  assert not population.claim(directory)  # another host's process cannot be checked: it is respected


OUTPUTS = ("pies.csv", "class_stats.csv", "exemplar_scores.csv", "pie_accuracy.csv", "summary.json")


def _snapshot(out_dir):
  return {
      name: open(os.path.join(out_dir, name), "rb").read()
      for name in os.listdir(out_dir)
      if os.path.isfile(os.path.join(out_dir, name))
  }


@pytest.mark.slow
def test_killing_the_analysis_never_leaves_a_partial_output(tmp_path):
  """SIGKILL the analysis at random moments while it writes: every output is the old complete file or the new one."""
  study_dir, out_dir = str(tmp_path / "study"), str(tmp_path / "study" / "analysis")
  fake_study.write_study(study_dir, levels=(0.0, 0.5, 0.9), seeds=4, num_examples=6000, num_classes=10)
  quiet = lambda m: None  # noqa: E731
  study = study_lib.load_study(study_dir, log=quiet)
  # The previous outputs: an analysis without bootstrap (so its CSVs differ from the new ones in columns).
  analysis.analyze_study(study, out_dir, images=False, report=False, bootstrap_resamples=0, log=quiet)
  old = _snapshot(out_dir)
  assert set(OUTPUTS) <= set(old)

  args = ("analysis.analyze", f"--study_dir={study_dir}", "--nopie_images", "--noreport", "--bootstrap_resamples=50")
  rng = random.Random(1)
  snapshots = []
  for attempt in range(3):
    before = {n: os.stat(os.path.join(out_dir, n)).st_mtime_ns for n in os.listdir(out_dir)}

    def writing(before=before):
      try:
        now = {n: os.stat(os.path.join(out_dir, n)).st_mtime_ns for n in os.listdir(out_dir)}
      except FileNotFoundError:  # a temporary file renamed between the listing and the stat
        return True
      return now != before

    proc = _start(*args, out=tmp_path / f"analysis{attempt}.out")
    # Kill once it has started writing (a file was created or replaced), after a random delay of up to 50 ms.
    _wait_until(writing, 300, "the analysis to write", proc=proc, poll=0.0005)
    time.sleep(rng.uniform(0, 0.05) if attempt else 0.0)
    _kill_group(proc)
    snapshots.append(_snapshot(out_dir))
  # The same analysis, uninterrupted (in this process: the binary's defaults with the flags above).
  analysis.analyze_study(study, out_dir, images=False, report=False, bootstrap_resamples=50, log=quiet)
  new = _snapshot(out_dir)
  leftovers = [n for n in new if ".tmp-" in n]

  mixed_or_cut = 0
  for snapshot in snapshots:
    outputs = {n: data for n, data in snapshot.items() if ".tmp-" not in n}
    assert set(old) <= set(outputs) <= set(old) | set(new), sorted(outputs)  # nothing lost, nothing half-named
    for name, data in outputs.items():
      assert data in (old.get(name), new[name]), f"{name} is neither the previous nor the new complete file"
    mixed_or_cut += len({outputs[n] == new[n] for n in OUTPUTS}) > 1 or any(".tmp-" in n for n in snapshot)
  assert mixed_or_cut, "no kill landed while the outputs were being written; the test proved nothing"
  # The complete rerun: every CSV parses with the expected rows; a leftover temporary file is not an output.
  tables, _, _ = analysis.analyze(study, bootstrap_resamples=50, log=quiet)
  for name, frame in tables.items():
    assert len(pd.read_csv(os.path.join(out_dir, name))) == len(frame), name
  assert json.load(open(os.path.join(out_dir, "summary.json")))["bootstrap_resamples"] == 50
  # Temporary files left by the killed runs are never taken for outputs or for predictions.
  assert all(n.split(".tmp-")[0] in new for n in leftovers)
  assert sorted(study_lib.find_prediction_files(study_dir)) == sorted(glob.glob(f"{study_dir}/sparsity*/*.tfrecord"))


def test_config_hash_separates_settings_but_not_seeds_or_levels():
  base = digits_config()
  same = model_dir.config_hash(digits_config(seed=5, sparsity=0.9))
  assert model_dir.config_hash(base) == same
  for key, value in (
      ("learning_rate", 2e-3),
      ("num_epochs", 21),
      ("pruning.end_fraction", 0.5),
      ("model.kwargs.hidden", 64),
      ("data.shuffle_buffer", 100),
      ("mixed_precision", "bfloat16"),
  ):
    assert model_dir.config_hash(digits_config(**{key: value})) != same, key


def test_config_hash_of_float32_is_that_of_a_config_before_mixed_precision():
  """config.mixed_precision = None trains as before the field existed: a study begun without it keeps its hash."""
  before = digits_config()
  with before.unlocked():
    del before["mixed_precision"]
  assert model_dir.config_hash(digits_config()) == model_dir.config_hash(before)


def test_validate_flags_every_kind_of_problem(tmp_path):
  labels, paths = fake_study.write_study(str(tmp_path), levels=(0.0, 0.5), seeds=3)
  names = [os.path.basename(p)[: -len(".tfrecord")] for p in paths]
  json.dump(
      {"models": names + ["sparsity50_seed3"], "config_hash": "feedfacecafebeef"},
      open(tmp_path / population.STUDY_FILE, "w"),
  )
  assert [m.status for m in validate.validate_study(str(tmp_path)).models].count("missing") == 1

  fake_study.write_model(str(tmp_path), 0.5, 3, labels, labels, 4, measured_sparsity=0.49)  # 1 point off
  fake_study.write_model(str(tmp_path), 0.5, 2, labels, labels, 4, config_hash="0123456789abcdef")
  fake_study.write_model(str(tmp_path), 0.9, 0, labels, labels, 4)  # not in the grid
  report = validate.validate_study(str(tmp_path))
  status = {m.name: m.status for m in report.models}
  assert status["sparsity50_seed3"] == status["sparsity50_seed2"] == "inconsistent"
  assert status["sparsity90_seed0"] == "unexpected" and status["sparsity0_seed0"] == "ok"
  text = "\n".join(report.problems)
  assert "sparsity50_seed3.tfrecord: measured sparsity 0.4900 is more than 0.5 points from the target 0.5" in text
  assert "sparsity50_seed2.tfrecord: config hash 0123456789abcdef differs from feedfacecafebeef" in text
  assert "sparsity90_seed0.tfrecord: not a model of study.json's grid" in text
  assert "level 0.9" not in text  # an unexpected model is reported once, not also as a population
  allowed = validate.validate_study(str(tmp_path), allow_mixed_configs=True)
  assert {m.name: m.status for m in allowed.models}["sparsity50_seed2"] == "ok"
  with pytest.raises(PieError, match="problem"):
    validate.require_valid(str(tmp_path), log=lambda m: None)

  other = tmp_path / "other"
  fake_study.write_study(str(other), levels=(0.0, 0.5), seeds=2)
  fake_study.write_model(str(other), 0.5, 7, labels, labels, 4, dataset="cifar10")
  shutil.rmtree(other / "sparsity0_seed1")
  report = validate.validate_study(str(other))
  text = "\n".join(report.problems)
  assert "sparsity50_seed7.tfrecord: dataset is 'cifar10'" in text
  assert "level 0 has 1 usable model (sparsity0_seed0)" in text
