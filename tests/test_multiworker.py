"""Distributed training on one machine: two MultiWorkerMirroredStrategy workers, and a two-replica mirrored run.

Two `python -m train.train --strategy=multi_worker` processes with TF_CONFIG on two free localhost ports train one
pruned digits model together. Worker 0 is the chief: it alone saves the model and writes the predictions; worker 1
gets its own workdir, which must stay empty (its checkpoints and summaries go to temporary folders), and both
processes must exit cleanly. The mirrored run splits the CPU into two logical devices (--cpu_replicas=2).

Two workers also read the ImageNet config's training input from a real TFDS-format imagenet2012 of 4 files (this
module run as a script is the worker): each reads 2 whole files of its own, and every step's global batch, gathered
across both, is config.batch_size.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import predictions as predictions_lib
from tests import tfds_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = ["--config=configs/digits.py", "--config.num_epochs=2", "--config.sparsity=0.5", "--config.seed=1"]
NAME = "sparsity50_seed1"


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _env(**extra):
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", **extra)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _check_predictions(workdir, sparsity):
  pred = predictions_lib.read_predictions(os.path.join(workdir, f"{NAME}.tfrecord"))
  assert len(pred.example_ids) == 500
  assert abs(pred.metadata["measured_sparsity"] - sparsity) < 0.005
  assert (pred.top1 == pred.labels).mean() > 0.5  # trained: far above the 10% of chance
  return pred


def _run_workers(commands, timeout=240):
  """Runs one command per worker of a local cluster (TF_CONFIG on free ports); returns their outputs."""
  ports = _free_ports(len(commands))
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  procs = []
  for index, command in enumerate(commands):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    procs.append(
        subprocess.Popen(
            [sys.executable, "-m", *command],
            cwd=ROOT,
            env=_env(TF_CONFIG=tf_config),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=timeout)[0])
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out[-3000:]
  return outputs


@pytest.mark.slow
def test_two_local_workers(tmp_path):
  workdirs = [tmp_path / "chief", tmp_path / "worker1"]
  _run_workers(
      [
          ["train.train", *CONFIG, "--strategy=multi_worker", "--threads=1", f"--workdir={workdir}"]
          for workdir in workdirs
      ]
  )
  _check_predictions(workdirs[0], 0.5)
  assert os.path.exists(workdirs[0] / "model.h5")
  written = [os.path.join(d, f) for d, _, files in os.walk(workdirs[1]) for f in files]
  assert not written, f"the non-chief worker wrote into its workdir: {written}"


@pytest.mark.slow
def test_mirrored_two_cpu_replicas(tmp_path):
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "train.train",
          *CONFIG,
          "--strategy=mirrored",
          "--cpu_replicas=2",
          f"--workdir={tmp_path}",
      ],
      cwd=ROOT,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=240,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  pred = _check_predictions(str(tmp_path), 0.5)
  assert np.array_equal(pred.example_ids, np.arange(500))


# The input test: the ImageNet config's pipeline on 4 training files, a global batch of 8 over 2 workers.
INPUT_TRAIN, INPUT_SHARDS, INPUT_BATCH, INPUT_EPOCHS = 64, 4, 8, 2


@pytest.mark.slow
def test_two_workers_read_disjoint_files_and_the_configured_global_batch(tmp_path):
  data_dir = tmp_path / "tfds"
  images = tfds_files.jpegs([(40, 32), (32, 48)], seed=2)
  tfds_files.write_dataset(data_dir, "imagenet2012", {"train": INPUT_TRAIN, "validation": 4}, images, INPUT_SHARDS)
  files = tfds_files.example_files(data_dir, "imagenet2012", "train")
  outs = [tmp_path / f"worker{i}.json" for i in range(2)]
  _run_workers([["tests.test_multiworker", str(data_dir), str(out)] for out in outs])
  reports = [json.loads(out.read_text()) for out in outs]

  steps = INPUT_EPOCHS * INPUT_TRAIN // INPUT_BATCH
  read = []
  for report in reports:
    assert report["workers"] == 2 and report["replicas"] == 2
    assert report["global_batches"] == [INPUT_BATCH] * steps  # gathered over both workers, every step
    assert report["local_batches"] == [INPUT_BATCH // 2] * steps  # this worker's one replica
    assert report["image_dtype"] == "bfloat16"  # the config's mixed precision reaches the input
    labels = report["labels"]
    # One epoch is one pass over this worker's files, then the next epoch reads them again in another order.
    half = len(labels) // 2
    assert sorted(labels[:half]) == sorted(labels[half:]) and labels[:half] != labels[half:]
    read.append({files[label] for label in labels})
  assert len(read[0]) == len(read[1]) == INPUT_SHARDS // 2
  assert not read[0] & read[1], f"both workers read {read[0] & read[1]}"
  assert read[0] | read[1] == set(files.values())


def _input_worker(data_dir, out):
  """One worker of the input test: iterates the training input as training distributes it, and reports it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from configs import imagenet_resnet50  # pylint: disable=g-import-not-at-top
  from pie import data as data_lib  # pylint: disable=g-import-not-at-top
  from pie import devices  # pylint: disable=g-import-not-at-top
  from tests.conftest import override  # pylint: disable=g-import-not-at-top

  strategy = devices.make_strategy("multi_worker")
  config = imagenet_resnet50.get_config()
  config.data.data_dir = data_dir
  config = override(config, **{"data.image_size": 16, "data.shuffle_buffer": 16, "batch_size": INPUT_BATCH})
  config.num_epochs = INPUT_EPOCHS
  dataset = data_lib.load_dataset(config.data)
  steps_per_epoch = dataset.steps_per_epoch(config.batch_size)
  input_fn = dataset.train_input_fn(
      config.batch_size,
      0,
      0,
      config.num_epochs,
      steps_per_epoch,
      deterministic=True,
      image_dtype=devices.input_dtype(config.mixed_precision),
  )
  report = {"labels": [], "global_batches": [], "local_batches": [], "replicas": strategy.num_replicas_in_sync}
  report["workers"] = strategy.cluster_resolver.cluster_spec().num_tasks("worker")
  iterator = iter(strategy.distribute_datasets_from_function(input_fn))
  for _ in range(config.num_epochs * steps_per_epoch):
    images, labels = next(iterator)
    classes = strategy.run(lambda y: tf.argmax(y, axis=1, output_type=tf.int32), args=(labels,))
    report["global_batches"].append(int(strategy.gather(classes, axis=0).shape[0]))
    for local in strategy.experimental_local_results(classes):
      report["local_batches"].append(int(local.shape[0]))
      report["labels"] += [int(c) for c in local.numpy()]
    report["image_dtype"] = strategy.experimental_local_results(images)[0].dtype.name
  with open(out, "w") as f:
    json.dump(report, f)


if __name__ == "__main__":
  _input_worker(sys.argv[1], sys.argv[2])
