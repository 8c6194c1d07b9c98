"""Benchmark: the analysis binary end to end on an ImageNet-sized study of prediction files.

50,000 examples, 1,000 classes, 6 sparsity levels x 30 models, top-5, written in the export schema (pie.predictions)
by pie.predictions.write_predictions (the export's own writer), so generating the 180 files takes seconds; they are
cached in --data_dir and reused by later runs (--regenerate rewrites them). Then, each in a fresh process:

  * a bare read: tf.data reads and parses every file with the schema's full feature spec (the floor for any reader);
  * `python -m analysis.analyze --study_dir=... --nopie_images --noreport` with its default 200 bootstrap resamples;
  * the same with --bootstrap_resamples=0.

Targets: the analysis (bootstrap on) within 60 s and 4 GiB peak RSS, and within 3x the bare read. Peak RSS is the
child's own (os.wait4). Every run is repeated --repeats times and the medians are compared with the targets; the
script exits with status 1 when one is missed.

The synthetic populations look like ImageNet ones: per-example difficulty, a per-example confusable class that wrong
models tend to agree on, dense top-1 near 76% and a drop growing with sparsity.

Usage: python bench/bench_analysis.py [--data_dir DIR] [--regenerate] [--repeats 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pie  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import predictions as predictions_lib  # noqa: E402
from pie import variants  # noqa: E402

LEVELS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
ACCURACY = {0.0: 0.766, 0.1: 0.766, 0.3: 0.764, 0.5: 0.758, 0.7: 0.750, 0.9: 0.725}

BARE_READ = r"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
files, k = sys.argv[1:-1], int(sys.argv[-1])
spec = {"example_id": tf.io.FixedLenFeature([], tf.int64), "label": tf.io.FixedLenFeature([], tf.int64),
        "top_k_classes": tf.io.FixedLenFeature([k], tf.int64), "top_k_probs": tf.io.FixedLenFeature([k], tf.float32)}
start = time.perf_counter()
n = 0
for path in files:
  ds = tf.data.TFRecordDataset(path).batch(4096).map(lambda x: tf.io.parse_example(x, spec))
  for batch in ds.as_numpy_iterator():
    n += len(batch["example_id"])
print(f"parsed {n} records in {time.perf_counter() - start:.2f} s (in-process)", flush=True)
"""


def generate(data_dir, num_examples, num_classes, num_seeds, top_k, seed=0):
  """Writes the study: <data_dir>/<name>/<name>.tfrecord + .json per model, like the population launcher."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num_examples)
  # Easy examples are right in nearly every model, hard ones rarely; wrong models favour one confusable class.
  difficulty = rng.beta(0.6, 0.4, num_examples)
  confuser = (labels + rng.integers(1, num_classes, num_examples)) % num_classes
  probs = np.tile(np.linspace(0.6, 0.05, top_k, dtype=np.float32), (num_examples, 1))
  class_names = [f"class_{c}" for c in range(num_classes)]
  config = {
      "name": "bench_imagenet_like",
      "data": {"name": "synthetic", "eval_split": "validation"},
      "model": {"name": "resnet50"},
  }
  for sparsity in LEVELS:
    # Shift the per-example success probability so the level's mean top-1 is its target accuracy.
    logit = np.log((1 - difficulty + 1e-3) / (difficulty + 1e-3))
    lo, hi = -10.0, 10.0
    for _ in range(40):
      mid = (lo + hi) / 2
      if (1 / (1 + np.exp(-(logit + mid)))).mean() < ACCURACY[sparsity]:
        lo = mid
      else:
        hi = mid
    p_right = 1 / (1 + np.exp(-(logit + lo)))
    for s in range(num_seeds):
      u = rng.random(num_examples)
      wrong = np.where(rng.random(num_examples) < 0.6, confuser, rng.integers(0, num_classes, num_examples))
      top1 = np.where(u < p_right, labels, wrong)
      classes = (top1[:, None] + np.arange(top_k)[None, :] * 7) % num_classes
      name = variants.model_name(variants.DEFAULT_METHOD, sparsity, s)
      path = os.path.join(data_dir, name, f"{name}.tfrecord")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      metadata = {
          "dataset": "synthetic",
          "split": "validation",
          "num_classes": num_classes,
          "class_names": class_names,
          "target_sparsity": float(sparsity),
          "measured_sparsity": float(sparsity),
          "seed": s,
          "config_hash": "bench0000000000",
          "model": "resnet50",
          "name": name,
          "config": dict(config, seed=s, sparsity=float(sparsity)),
      }
      predictions_lib.write_predictions(path, np.arange(num_examples), labels, classes, probs, metadata)


def run_child(argv):
  """Runs a command; returns (wall seconds, peak RSS in MiB of that process, stdout)."""
  start = time.perf_counter()
  with tempfile.TemporaryFile("w+") as out:
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read()
  if proc.returncode:
    raise RuntimeError(f"{' '.join(argv)} failed with status {proc.returncode}:\n{text[-3000:]}")
  return wall, usage.ru_maxrss / 1024, text


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples", type=int, default=50_000)
  parser.add_argument("--classes", type=int, default=1_000)
  parser.add_argument("--seeds", type=int, default=30, help="models per level (6 levels)")
  parser.add_argument("--top_k", type=int, default=5)
  parser.add_argument(
      "--data_dir",
      default=None,
      help="cache of the prediction files (default: a folder in /tmp " "named after the sizes, reused between runs)",
  )
  parser.add_argument("--regenerate", action="store_true", help="rewrite the cached prediction files")
  parser.add_argument(
      "--study_dir", default=None, help="benchmark a real study's prediction files instead of generated ones"
  )
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--target_seconds", type=float, default=60.0)
  parser.add_argument("--target_gib", type=float, default=4.0)
  parser.add_argument("--target_ratio", type=float, default=3.0)
  args = parser.parse_args(argv)

  data_dir = args.data_dir or os.path.join(
      tempfile.gettempdir(), f"pie-bench-analysis-{args.examples}x{args.classes}-{args.seeds}-k{args.top_k}"
  )
  # Named after the writer's version: files from an older writer (no file_crc32c in the metadata) are regenerated.
  marker = os.path.join(data_dir, f"GENERATED-schema{predictions_lib.SCHEMA_VERSION}-crc32c")
  if args.study_dir:
    data_dir = args.study_dir
    print(f"the prediction files of {data_dir}")
  elif args.regenerate or not os.path.exists(marker):
    start = time.perf_counter()
    generate(data_dir, args.examples, args.classes, args.seeds, args.top_k)
    with open(marker, "w") as f:
      f.write("ok\n")
    print(
        f"generated {len(LEVELS) * args.seeds} prediction files in {time.perf_counter() - start:.1f} s " f"({data_dir})"
    )
  else:
    print(f"reusing the prediction files in {data_dir} (--regenerate to rewrite them)")
  files = sorted(
      os.path.join(data_dir, d, d + ".tfrecord")
      for d in os.listdir(data_dir)
      if os.path.isdir(os.path.join(data_dir, d)) and d != "analysis"
  )
  size = sum(os.path.getsize(f) for f in files) / 2**20
  print(f"{len(files)} files, {size:.0f} MiB; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

  # A real study's own analysis folder is left alone: the benchmark writes without images and report.
  out_dir = (
      os.path.join(tempfile.mkdtemp(prefix="pie-bench-analysis-"), "analysis")
      if args.study_dir
      else (os.path.join(data_dir, "analysis"))
  )
  analyze = [
      sys.executable,
      "-m",
      "analysis.analyze",
      f"--study_dir={data_dir}",
      f"--out_dir={out_dir}",
      "--nopie_images",
      "--noreport",
  ]
  runs = {
      "bare read (tf.data)": [sys.executable, "-c", BARE_READ, *files, str(args.top_k)],
      "analysis, bootstrap 200": analyze,
      "analysis, bootstrap 0": analyze + ["--bootstrap_resamples=0"],
  }
  results = {name: [] for name in runs}
  for repeat in range(args.repeats):
    for name, command in runs.items():
      wall, rss, text = run_child(command)
      results[name].append((wall, rss))
      print(f"  run {repeat + 1}: {name}: {wall:.1f} s, peak RSS {rss:.0f} MiB")
      if repeat == 0 and name.startswith("bare"):
        print("    " + text.strip().splitlines()[-1])
  medians = {
      name: (statistics.median(w for w, _ in r), statistics.median(m for _, m in r)) for name, r in results.items()
  }
  bare, _ = medians["bare read (tf.data)"]
  print(f"\nmedians of {args.repeats} runs (each a fresh process, start-up included):")
  for name, (wall, rss) in medians.items():
    print(f"  {name:26s} {wall:6.1f} s  {rss:6.0f} MiB  {wall / bare:4.2f}x the bare read")
  with open(os.path.join(out_dir, "summary.json")) as f:
    summary = json.load(f)
  for level in summary["levels"][1:]:
    print(
        f"  level {level['sparsity']:g}: {level['num_pies']} PIEs ({level['pie_fraction']:.2%}), "
        f"{level['num_significant_classes']} significant classes"
    )

  wall, rss = medians["analysis, bootstrap 200"]
  failures = []
  if wall > args.target_seconds:
    failures.append(f"analysis took {wall:.1f} s > {args.target_seconds:g} s")
  if rss > args.target_gib * 1024:
    failures.append(f"analysis peak RSS {rss:.0f} MiB > {args.target_gib:g} GiB")
  if wall / bare > args.target_ratio:
    failures.append(f"analysis is {wall / bare:.2f}x the bare read > {args.target_ratio:g}x")
  for failure in failures:
    print(f"FAILED: {failure}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
