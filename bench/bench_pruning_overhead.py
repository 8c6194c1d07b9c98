"""Benchmark: steady-state training step time of a pruned model over the same dense model.

For each model (the digits config's small CNN at 8x8, batch 32; ResNet-50 at 32x32, batch 16, 1000 classes) this
builds the dense model and its TF-MOT-wrapped copy (pie.pruning.apply_pruning) in one process, compiles both with
the same optimizer and loss, and trains each with `model.fit` over an in-memory batch, as pie.training does: the
pruned model with the UpdatePruningStep callback that training needs. A callback stamps time.perf_counter at the end
of every batch; the first --warmup steps (tracing, first mask update) are dropped and the median of the rest is
the step time. Dense and pruned runs alternate --rounds times so a change in machine load hits both; the figure is
the median over rounds. Pruning runs inside its window with the config's frequency (digits: every 10 steps, so a
mask update falls in one step in ten; ResNet-50: the paper's every 500 steps, so none in the timed steps).

Target: pruned / dense <= 1.10 for each model. Exits with status 1 when one is missed.

Usage: python bench/bench_pruning_overhead.py [--models digits,resnet50] [--steps 40] [--rounds 3]
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pie  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

from pie import models  # noqa: E402
from pie import pruning  # noqa: E402

SETUPS = {
    # name: (model name, kwargs, input shape, classes, batch, (begin, end, frequency) of the pruning schedule)
    "digits": ("small_cnn", {"filters": (8, 16), "hidden": 32}, (8, 8, 1), 10, 32, (0, 480, 10)),
    "resnet50": (
        "resnet50",
        {"weight_decay": 1e-4, "bn_momentum": 0.9, "bn_epsilon": 1e-5},
        (32, 32, 3),
        1000,
        16,
        (0, 3000, 500),
    ),
}


class _StepTimes(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.stamps = []

  def on_train_batch_end(self, batch, logs=None):
    self.stamps.append(time.perf_counter())


def _compile(model):
  model.compile(
      optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=keras.losses.CategoricalCrossentropy(from_logits=True)
  )
  return model


def _median_step(model, data, steps, warmup, extra_callbacks):
  timer = _StepTimes()
  model.fit(data, epochs=1, steps_per_epoch=steps + warmup, callbacks=[timer, *extra_callbacks], verbose=0)
  return statistics.median(np.diff(timer.stamps[warmup:]))


def measure(name, steps, warmup, rounds, sparsity=0.9):
  model_name, kwargs, shape, classes, batch, (begin, end, frequency) = SETUPS[name]
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(batch, *shape)).astype(np.float32)
  onehot = keras.utils.to_categorical(rng.integers(0, classes, batch), classes)
  data = tf.data.Dataset.from_tensors((images, onehot)).repeat()
  dense = _compile(models.build_model(_Config(model_name, kwargs), shape, classes))
  pruned = _compile(
      pruning.apply_pruning(
          models.build_model(_Config(model_name, kwargs), shape, classes), sparsity, begin, end, frequency
      )
  )
  times = {"dense": [], "pruned": []}
  for _ in range(rounds):
    times["dense"].append(_median_step(dense, data, steps, warmup, []))
    times["pruned"].append(_median_step(pruned, data, steps, warmup, [tfmot.sparsity.keras.UpdatePruningStep()]))
  dense_s, pruned_s = statistics.median(times["dense"]), statistics.median(times["pruned"])
  wrapped = sum(bool(getattr(layer, "pruning_vars", None)) for layer in pruned.layers)
  return dense_s, pruned_s, wrapped, batch, frequency


class _Config(dict):
  """The bit of a model config that models.build_model reads."""

  def __init__(self, name, kwargs):
    super().__init__(name=name, kwargs=kwargs)
    self.name = name


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="digits,resnet50")
  parser.add_argument("--steps", type=int, default=40, help="timed steps per run")
  parser.add_argument("--warmup", type=int, default=5, help="untimed steps per run (tracing)")
  parser.add_argument("--rounds", type=int, default=3, help="alternating dense/pruned runs")
  parser.add_argument("--target", type=float, default=1.10)
  args = parser.parse_args(argv)
  print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
  failures = []
  for name in args.models.split(","):
    dense_s, pruned_s, wrapped, batch, frequency = measure(name, args.steps, args.warmup, args.rounds)
    ratio = pruned_s / dense_s
    print(
        f"{name}: batch {batch}, {wrapped} pruned layers, mask update every {frequency} steps: dense "
        f"{dense_s * 1e3:.2f} ms/step, pruned {pruned_s * 1e3:.2f} ms/step, ratio {ratio:.3f} "
        f"(target <= {args.target:.2f})",
        flush=True,
    )
    if ratio > args.target:
      failures.append(f"{name}: pruned/dense step time {ratio:.3f} > {args.target:.2f}")
  for failure in failures:
    print(f"FAILED: {failure}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
