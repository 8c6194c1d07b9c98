"""Bad input through the binaries: a clear message naming the file or flag, exit code 1, no half-written output."""

import os
import shutil

import numpy as np
import pytest

from pie import analysis
from pie.errors import PieError

from tests import fake_study
from tests.conftest import run_binary


def _fails(module, *args, match):
  proc = run_binary(module, *args, check=False)
  assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr[-2000:])
  assert match in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  return proc


@pytest.mark.slow
def test_unknown_dataset(tmp_path):
  _fails(
      "train.train",
      "--config=configs/digits.py",
      "--config.data.name=no_such_dataset",
      f"--workdir={tmp_path}/m",
      match="unknown dataset 'no_such_dataset'",
  )


@pytest.mark.slow
def test_missing_data_dir(tmp_path):
  _fails(
      "train.train",
      "--config=configs/cifar10.py",
      f"--config.data.data_dir={tmp_path}/empty",
      f"--workdir={tmp_path}/m",
      match=f"is not prepared in {tmp_path}/empty",
  )
  assert not os.path.exists(tmp_path / "m" / "model.h5")


@pytest.mark.slow
def test_study_without_dense_population(tmp_path):
  fake_study.write_study(str(tmp_path), levels=(0.5, 0.9))
  _fails("analysis.analyze", f"--study_dir={tmp_path}", match="no usable dense model")
  with pytest.raises(PieError, match="no dense population"):  # the loader's own check, without validation
    analysis.run(study_dir=str(tmp_path), validate_first=False, log=lambda m: None)
  assert not os.path.exists(tmp_path / "analysis")


@pytest.mark.slow
def test_truncated_record_and_nan(tmp_path):
  _, paths = fake_study.write_study(str(tmp_path / "a"), seeds=2)
  data = open(paths[1], "rb").read()
  open(paths[1], "wb").write(data[:-7])
  # Validation sees the size differ from the metadata's; the reader itself finds the damage too.
  _fails(
      "analysis.analyze",
      f"--study_dir={tmp_path}/a",
      match=f"{paths[1]}: {len(data) - 7} bytes, its metadata records {len(data)}",
  )
  with pytest.raises(PieError, match=f"{paths[1]}: truncated or corrupt TFRecord"):
    analysis.run(study_dir=str(tmp_path / "a"), validate_first=False, log=lambda m: None)
  assert not os.path.exists(tmp_path / "a" / "analysis")

  labels = np.arange(60) % 4
  fake_study.write_study(str(tmp_path / "b"), seeds=2)
  bad = fake_study.write_model(str(tmp_path / "b"), 0.5, 5, labels, labels, 4)
  from pie import predictions as predictions_lib  # pylint: disable=g-import-not-at-top

  fake_study.rewrite_records(
      bad, [predictions_lib.serialize_example(i, labels[i], [0, 1, 2], [float("nan"), 0.2, 0.1]) for i in range(60)]
  )
  _fails("analysis.analyze", f"--study_dir={tmp_path}/b", match=f"{bad}: NaN or infinite values in top_k_probs")


@pytest.mark.slow
def test_mismatched_num_classes(tmp_path):
  labels, _ = fake_study.write_study(str(tmp_path), seeds=2)
  bad = fake_study.write_model(str(tmp_path), 0.5, 9, labels, labels, 7)
  _fails("analysis.analyze", f"--study_dir={tmp_path}", match=f"{bad}: num_classes is 7")


@pytest.mark.slow
def test_level_with_a_single_model(tmp_path):
  fake_study.write_study(str(tmp_path), levels=(0.0, 0.5), seeds=2)
  shutil.rmtree(tmp_path / "sparsity50_seed1")
  _fails("analysis.analyze", f"--study_dir={tmp_path}", match="level 0.5 has 1 usable model")


@pytest.mark.slow
def test_a_library_error_names_its_flag(tmp_path):
  fake_study.write_study(str(tmp_path), seeds=2)
  proc = _fails("analysis.analyze", f"--study_dir={tmp_path}", "--alpha=1.5", match="alpha must be in (0, 1), got 1.5")
  assert "[flag --alpha]" in proc.stderr  # the library names its argument, the binary its flag
  proc = _fails(
      "analysis.analyze",
      f"--study_dir={tmp_path}",
      f"--predictions={tmp_path}/x.tfrecord",
      match="give exactly one of a study directory",
  )
  assert "[flag --study_dir]" in proc.stderr
