"""Distributed training on one machine: two MultiWorkerMirroredStrategy workers, and a two-replica mirrored run.

Two `python -m train.train --strategy=multi_worker` processes with TF_CONFIG on two free localhost ports train one
pruned digits model together. Worker 0 is the chief: it alone saves the model and writes the predictions; worker 1
gets its own workdir, which must stay empty (its checkpoints and summaries go to temporary folders), and both
processes must exit cleanly. The mirrored run splits the CPU into two logical devices (--cpu_replicas=2).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import predictions as predictions_lib

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


def test_two_local_workers(tmp_path):
  ports = _free_ports(2)
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  workdirs = [tmp_path / "chief", tmp_path / "worker1"]
  procs = []
  for index, workdir in enumerate(workdirs):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "train.train",
                *CONFIG,
                "--strategy=multi_worker",
                "--threads=1",
                f"--workdir={workdir}",
            ],
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
      outputs.append(proc.communicate(timeout=240)[0])
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out[-3000:]
  _check_predictions(workdirs[0], 0.5)
  assert os.path.exists(workdirs[0] / "model.h5")
  written = [os.path.join(d, f) for d, _, files in os.walk(workdirs[1]) for f in files]
  assert not written, f"the non-chief worker wrote into its workdir: {written}"


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
