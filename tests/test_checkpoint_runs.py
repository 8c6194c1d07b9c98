"""Runs trained outside a pie study, analysed with one command (`analysis.analyze --checkpoint_dirs`).

The runs come from a plain tf_keras + TF-MOT script written here (prune_low_magnitude, UpdatePruningStep,
strip_pruning, model.save; nothing of pie), saved as a SavedModel, an HDF5 file or a .keras file, each declared by a
pie_run.json or by its directory's name. pie exports their predictions into <out_dir>/predictions, measures their
sparsity on the weights, reports a run whose weights contradict its declared level, and analyses them.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pie import analysis
from pie import predictions as predictions_lib
from pie import saved_exports
from pie.errors import PieError
from tests.conftest import REPO, digits_config, run_binary

# (sparsity, seed, declared by, saved as): every format and both declarations at both levels.
RUNS = (
    (0.0, 0, "name", "saved_model"),
    (0.0, 1, "json", "h5"),
    (0.0, 2, "name", "keras"),
    (0.9, 0, "json", "saved_model"),
    (0.9, 1, "name", "h5"),
    (0.9, 2, "json", "keras"),
)

TRAIN_SCRIPT = '''
"""Digit classifiers trained with plain tf_keras and TF-MOT, some pruned to 90%; one folder per run."""
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from sklearn.datasets import load_digits

out, runs = sys.argv[1], json.loads(sys.argv[2])
digits = load_digits()
images = (np.round(digits.images * (255.0 / 16.0)) / 255.0).astype("float32")[..., None]
x, y = images[:-500], digits.target[:-500]  # the last 500 images are the test split
for index, (sparsity, seed, declared, saved) in enumerate(runs):
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.layers.Input((8, 8, 1)),
      keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
      keras.layers.Flatten(),
      keras.layers.Dense(32, activation="relu"),
      keras.layers.Dense(10, activation="softmax"),
  ])
  epochs, batch = 4, 32
  callbacks = []
  if sparsity > 0:
    end = epochs * (len(x) // batch) // 2
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end, frequency=10)
    model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
  model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
  model.fit(x, y, batch_size=batch, epochs=epochs, callbacks=callbacks, verbose=0)
  if sparsity > 0:
    model = tfmot.sparsity.keras.strip_pruning(model)
  if declared == "json":
    folder = os.path.join(out, f"run_{'abcdef'[index]}")
    os.makedirs(folder)
    with open(os.path.join(folder, "pie_run.json"), "w") as f:
      json.dump({"sparsity": sparsity, "seed": seed, "method": "magnitude"}, f)
  else:
    folder = os.path.join(out, f"digits_sparsity{round(sparsity * 100)}_seed{seed}")
    os.makedirs(folder)
  model.save({"saved_model": os.path.join(folder, "saved"), "h5": os.path.join(folder, "model.h5"),
              "keras": os.path.join(folder, "model.keras")}[saved])
'''


def _name(sparsity, seed):
  return f"sparsity{round(sparsity * 100)}_seed{seed}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfmot_runs")
  script = root / "train_runs.py"
  script.write_text(TRAIN_SCRIPT)
  proc = subprocess.run(
      [sys.executable, str(script), str(root / "runs"), json.dumps(RUNS)],
      cwd=str(root),
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return str(root / "runs")


@pytest.fixture(scope="module")
def analysed(runs, tmp_path_factory):
  """The one command: export every run into <out>/predictions, then analyse them."""
  out = str(tmp_path_factory.mktemp("tfmot_analysis") / "out")
  proc = run_binary(
      "analysis.analyze",
      f"--checkpoint_dirs={runs}/*",
      "--config=configs/digits.py",
      f"--out_dir={out}",
      "--num_workers=2",
  )
  return {"out": out, "stdout": proc.stdout}


@pytest.mark.slow
def test_a_folder_of_tfmot_runs_is_analysed_with_one_command(runs, analysed):
  out = analysed["out"]
  assert "exported 6/6" in analysed["stdout"] and "ETA" in analysed["stdout"], analysed["stdout"]
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert [(level["method"], level["sparsity"], level["num_models"]) for level in summary["levels"]] == [
      ("dense", 0.0, 3),
      ("magnitude", 0.9, 3),
  ]
  dense, pruned = summary["levels"]
  assert dense["measured_sparsity_mean"] == 0.0 and abs(pruned["measured_sparsity_mean"] - 0.9) <= 0.005
  assert dense["top1_mean"] > 0.8 and pruned["num_pies"] > 0
  for file in ("pies.csv", "class_stats.csv", "report.html", "pies.tfrecord"):
    assert os.path.exists(os.path.join(out, file)), file
  assert sorted(os.listdir(os.path.join(out, "predictions"))) == sorted(
      f"{_name(s, seed)}.{ext}" for s, seed, _, _ in RUNS for ext in ("json", "tfrecord")
  )
  for index, (sparsity, seed, declared, saved) in enumerate(RUNS):
    metadata = predictions_lib.read_metadata(os.path.join(out, "predictions", f"{_name(sparsity, seed)}.tfrecord"))
    folder = os.path.join(runs, f"run_{'abcdef'[index]}" if declared == "json" else f"digits_{_name(sparsity, seed)}")
    source = {"saved_model": "saved", "h5": "model.h5", "keras": "model.keras"}[saved]
    assert metadata["source"] == os.path.join(folder, source)
    assert metadata["source_format"] == ("saved_model" if saved == "saved_model" else "keras")
    declared_by = (
        os.path.join(folder, "pie_run.json") if declared == "json" else f"the name 'digits_{_name(sparsity, seed)}'"
    )
    assert metadata["declared_by"] == declared_by
    assert (metadata["target_sparsity"], metadata["seed"]) == (sparsity, seed)
    assert metadata["method"] == ("magnitude" if sparsity else "dense")


@pytest.mark.slow
def test_the_exported_predictions_are_the_models_own(runs, analysed):
  """The script's model ends in a softmax: pie reads its logits before it, and the probabilities are the model's."""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  digits = load_digits()
  x = (np.round(digits.images * (255.0 / 16.0)) / 255.0).astype("float32")[..., None][-500:]
  model = keras.models.load_model(os.path.join(runs, "run_f", "model.keras"), compile=False)
  probs = model.predict(x, verbose=0)
  exported = predictions_lib.read_predictions(os.path.join(analysed["out"], "predictions", "sparsity90_seed2.tfrecord"))
  np.testing.assert_array_equal(exported.top1, probs.argmax(axis=1))
  np.testing.assert_allclose(exported.top_k_probs, -np.sort(-probs, axis=1)[:, :5], atol=1e-6)
  np.testing.assert_array_equal(exported.labels, digits.target[-500:])


@pytest.mark.slow
def test_a_rerun_exports_nothing_again_and_a_contradicted_level_is_reported(runs, analysed, tmp_path):
  bad = tmp_path / "bad" / "mislabelled"
  bad.mkdir(parents=True)
  shutil.copy(os.path.join(runs, "digits_sparsity90_seed1", "model.h5"), bad / "model.h5")
  (bad / "pie_run.json").write_text(json.dumps({"sparsity": 0.5, "seed": 7}))
  patterns = f"--checkpoint_dirs={runs}/*,{tmp_path}/bad/*"
  proc = run_binary(
      "analysis.analyze",
      patterns,
      "--config=configs/digits.py",
      f"--out_dir={analysed['out']}",
      "--num_workers=1",
      check=False,
  )
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert proc.stdout.count("already exported from") == 6 and re.search(r"exported \d/7: sparsity50_seed7", proc.stdout)
  assert (
      f"{bad}: declared at level 0.5 by {bad}/pie_run.json, but its measured sparsity 0.9000 is more than 0.5 points "
      "from the target 0.5" in proc.stderr
  )
  assert "[flag --validate]" in proc.stderr


_RAM_RUNS = """
import json, os, sys
import pie
import tensorflow as tf
from configs import digits
from pie import saved_exports

local = sys.argv[1]
for name in os.listdir(local):
  for file in os.listdir(os.path.join(local, name)):
    if file in ("model.h5", "pie_run.json"):
      tf.io.gfile.copy(os.path.join(local, name, file), f"ram://runs/{name}/{file}")
files = saved_exports.export_runs(digits.get_config(), "ram://runs/*/model.h5", "ram://out", num_workers=1, log=print)
print(json.dumps({f: tf.io.gfile.GFile(f, "rb").read().hex() for f in files}))
"""


@pytest.mark.slow
def test_runs_on_another_filesystem(runs, analysed):
  """Through tf.io.gfile only: TF's in-memory filesystem stands in for gs:// (the pattern matches the Keras files:
  that filesystem lists files, not folders)."""
  proc = subprocess.run([sys.executable, "-c", _RAM_RUNS, runs], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  files = json.loads(proc.stdout.splitlines()[-1])
  assert sorted(files) == [
      "ram://out/predictions/sparsity0_seed1.tfrecord",
      "ram://out/predictions/sparsity90_seed1.tfrecord",
  ]
  for path, data in files.items():
    local = os.path.join(analysed["out"], "predictions", os.path.basename(path))
    assert bytes.fromhex(data) == open(local, "rb").read(), path


# ---------------------------------------------------------------------------------------------------------------------
# Declarations, folders and arguments (no training).


def _run_dir(root, name, files=("model.h5",), spec=None):
  folder = os.path.join(root, name)
  os.makedirs(folder)
  for file in files:
    open(os.path.join(folder, file), "w").close()
  if spec is not None:
    with open(os.path.join(folder, saved_exports.RUN_FILE), "w") as f:
      f.write(spec if isinstance(spec, str) else json.dumps(spec))
  return folder


def test_declarations(tmp_path):
  config = digits_config()
  job, by = saved_exports.declared_job(
      config, _run_dir(tmp_path, "a", spec={"sparsity": 0.5, "seed": 1, "method": "2:4"})
  )
  assert (job.name, job.method, by) == ("2of4_sparsity50_seed1", "2:4", str(tmp_path / "a" / "pie_run.json"))
  job, by = saved_exports.declared_job(config, str(tmp_path / "exp_sparsity70_seed4" / "checkpoints"))
  assert (job.name, job.method, by) == ("sparsity70_seed4", "magnitude", "the name 'exp_sparsity70_seed4'")
  job, _ = saved_exports.declared_job(config, _run_dir(tmp_path, "b", spec={"sparsity": 0, "seed": 2}))
  assert (job.name, job.method) == ("sparsity0_seed2", "dense")
  for name, spec, message in (
      ("c", {"sparsity": 0.9, "sed": 1}, "expected an object with the keys sparsity, seed"),
      ("d", {"sparsity": "0.9", "seed": 1}, "sparsity must be a number"),
      ("e", {"sparsity": 90, "seed": 1}, "sparsity must lie in \\[0, 1\\)"),
      ("f", {"sparsity": 0.5, "seed": 1, "method": "qat"}, "method 'qat' trains unpruned models"),
      ("g", {"sparsity": 0.5, "seed": 1, "method": "prune"}, "unknown compression method 'prune'"),
      ("h", "{not json", "not valid JSON"),
  ):
    with pytest.raises(PieError, match=message) as error:
      saved_exports.declared_job(config, _run_dir(tmp_path, name, spec=spec))
    assert str(tmp_path / name) in str(error.value) and error.value.parameter == "checkpoint_dirs"
  with pytest.raises(PieError, match="no pie_run.json beside the model and its name states no level and seed") as error:
    saved_exports.declared_job(config, _run_dir(tmp_path, "run_x"))
  assert '{"sparsity": 0.9, "seed": 3, "method": "magnitude"}' in str(error.value)


def test_run_folders(tmp_path):
  config = digits_config()
  _run_dir(tmp_path, "one_sparsity90_seed1")
  _run_dir(tmp_path, "two_sparsity90_seed1", files=("weights.keras",))
  with pytest.raises(PieError, match="two_sparsity90_seed1 are both the run sparsity90_seed1"):
    saved_exports.find_runs(config, str(tmp_path / "*"))
  with pytest.raises(PieError, match="matches no run directory") as error:
    saved_exports.find_runs(config, str(tmp_path / "nothing*"))
  assert error.value.parameter == "checkpoint_dirs"
  with pytest.raises(PieError, match="no model there; a run directory holds a Keras SavedModel"):
    saved_exports.read_run(config, _run_dir(tmp_path, "empty_sparsity0_seed0", files=()))
  with pytest.raises(PieError, match="several Keras files"):
    saved_exports.read_run(config, _run_dir(tmp_path, "both_sparsity0_seed0", files=("a.h5", "b.keras")))
  run = saved_exports.read_run(config, str(tmp_path / "one_sparsity90_seed1" / "model.h5"))
  assert (run.kind, run.source, run.job.name) == (
      "keras",
      str(tmp_path / "one_sparsity90_seed1" / "model.h5"),
      "sparsity90_seed1",
  )
  (tmp_path / "notes.txt").write_text("not a run")
  logs = []
  assert [r.job.name for r in saved_exports.find_runs(config, str(tmp_path / "one*"), log=logs.append)] == [
      "sparsity90_seed1"
  ]


def test_run_arguments(tmp_path):
  for kwargs, parameter in (
      ({"checkpoint_dirs": ["x/*"], "study_dir": str(tmp_path), "config": digits_config()}, "checkpoint_dirs"),
      ({"checkpoint_dirs": ["x/*"], "out_dir": str(tmp_path)}, "config"),
      ({"checkpoint_dirs": ["x/*"], "config": digits_config()}, "out_dir"),
      ({"study_dir": str(tmp_path), "config": digits_config()}, "config"),
  ):
    with pytest.raises(PieError) as error:
      analysis.run(**kwargs)
    assert error.value.parameter == parameter, kwargs


def test_logits_before_a_final_softmax():
  import tf_keras as keras  # pylint: disable=g-import-not-at-top

  x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
  inputs = keras.Input((4,))
  logits = keras.layers.Dense(3, name="out")(inputs)
  plain = keras.Model(inputs, logits)
  expected = plain.predict(x, verbose=0)
  with_layer = keras.Model(inputs, keras.layers.Softmax()(logits))
  with_activation = keras.Model(inputs, keras.layers.Activation("softmax")(logits))
  np.testing.assert_allclose(
      with_layer.predict(x, verbose=0), np.exp(expected) / np.exp(expected).sum(1, keepdims=True), rtol=1e-5
  )
  for model in (plain, with_layer, with_activation):
    np.testing.assert_allclose(saved_exports.logits_model(model).predict(x, verbose=0), expected, rtol=1e-6)
  dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
  dense.layers[-1].set_weights(plain.get_layer("out").get_weights())
  np.testing.assert_allclose(saved_exports.logits_model(dense).predict(x, verbose=0), expected, rtol=1e-6)
