"""Benchmark: the analysis binary end to end on an ImageNet-sized study of prediction files.

50,000 examples, 1,000 classes, 6 sparsity levels x 30 models, top-5, written in the export schema (pie.predictions)
by pie.predictions.write_predictions (the export's own writer), so generating the 180 files takes seconds; they are
cached in --data_dir and reused by later runs (--regenerate rewrites them). Beside them, a copy whose metadata lacks
`file_crc32c` (hard links to the same records) stands for files from other writers, whose records are checked one by
one. Then, each in a fresh process:

  * `python -m analysis.analyze --study_dir=... --novalidate --nopie_images --noreport` with its default 200 bootstrap
    resamples, on the files with and without `file_crc32c`;
  * with --bare_read, a bare read: tf.data reads and parses every file with the schema's full feature spec.

Targets (issue 27): the analysis (bootstrap on) within 10 s and 2 GiB peak RSS on 2 cores, and the files without
`file_crc32c` within 1.5x that. Peak RSS is the child's own (os.wait4); CPU is its user + system time, which a busy
machine inflates less than the wall time. Every run is repeated --repeats times and the medians are compared with the
targets; the script exits with status 1 when one is missed.

--profile runs the analysis once more in a fresh process with a timer around each stage (start-up, read, tables,
difficulty, bootstrap, noise floor splits, the PIE-excess test, the uniform shift, the correlations, writing) and
prints each stage's wall and CPU seconds (CPU of the whole process while the stage ran, reader threads included). A
stage's time excludes the stages nested in it.

The synthetic populations look like ImageNet ones: per-example difficulty, a per-example confusable class that wrong
models tend to agree on, dense top-1 near 76% and a drop growing with sparsity.

Usage: python bench/bench_analysis.py [--data_dir DIR] [--regenerate] [--repeats 3] [--profile] [--bare_read]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import shutil
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


# The analysis in a fresh process with a timer around each stage's functions (module, attribute). A stage's time is
# its own: a stage running inside another (difficulty_parts inside load_study) is taken out of the outer one. Functions
# a later version lacks are skipped, so the breakdown keeps working while the code moves.
PROFILE = r"""
import json, os, sys, time
start_wall = float(sys.argv[1])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import pie
from pie import analysis
STAGES = {
    "read": [("pie.study", "load_study")],
    "difficulty": [("pie.study", "difficulty_parts"), ("pie.analysis", "dense_difficulty"),
                   ("pie.difficulty", "difficulty_rows"), ("pie.difficulty", "deciles"),
                   ("pie.difficulty", "risk_metrics")],
    "bootstrap": [("pie.significance", "bootstrap_stability"), ("pie.significance", "bootstrap_pie_stability"),
                  ("pie.significance", "bootstrap_class_stability")],
    "noise floor splits": [("pie.builder", "FloorPlan.pie_counts"), ("pie.significance", "split_class_tests"),
                           ("pie.significance", "half_splits")],
    "PIE-excess test": [("pie.builder", "FloorPlan.exchange_counts"), ("pie.significance", "exchange_arrangements"),
                        ("pie.significance", "pies_excess_test")],
    "uniform shift": [("pie.builder", "uniform_shift")],
    "correlations": [("pie.significance", "class_correlation_tests")],
    "writing": [("pie.analysis", "csv_text"), ("pie.io_utils", "write_text"), ("pie.io_utils", "write_json")],
}
totals = {name: [0.0, 0.0] for name in ["start-up", "read", "tables", *STAGES]}
stack = [["tables", time.perf_counter(), time.process_time()]]

def enter(stage):
  now, cpu = time.perf_counter(), time.process_time()
  top = stack[-1]
  totals[top[0]][0] += now - top[1]
  totals[top[0]][1] += cpu - top[2]
  stack.append([stage, now, cpu])

def leave():
  now, cpu = time.perf_counter(), time.process_time()
  stage, t0, c0 = stack.pop()
  totals[stage][0] += now - t0
  totals[stage][1] += cpu - c0
  if stack:
    stack[-1][1], stack[-1][2] = now, cpu

def timed(stage, fn):
  def wrapper(*args, **kwargs):
    enter(stage)
    try:
      return fn(*args, **kwargs)
    finally:
      leave()
  return wrapper

import importlib
for stage, targets in STAGES.items():
  for module_name, path in targets:
    owner = importlib.import_module(module_name)
    *parents, attr = path.split(".")
    for parent in parents:
      owner = getattr(owner, parent, None)
    if owner is not None and hasattr(owner, attr):
      setattr(owner, attr, timed(stage, getattr(owner, attr)))
totals["start-up"] = [time.time() - start_wall, time.process_time()]  # CPU since the process started
stack[0][1], stack[0][2] = time.perf_counter(), time.process_time()
study_dir, out_dir = sys.argv[2], sys.argv[3]
analysis.run(study_dir=study_dir, out_dir=out_dir, validate_first=False, images=False, report=False, log=lambda m: None)
leave()
print("PROFILE " + json.dumps(totals), flush=True)
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


def without_crc(data_dir, files):
  """A copy of the study whose metadata lacks `file_crc32c` (files from other writers), its records hard links."""
  copy_dir = data_dir.rstrip("/") + "-without-crc32c"
  for path in files:
    name = os.path.basename(os.path.dirname(path))
    os.makedirs(os.path.join(copy_dir, name), exist_ok=True)
    record = os.path.join(copy_dir, name, name + ".tfrecord")
    if os.path.exists(record) and not os.path.samefile(record, path):
      os.remove(record)
    if not os.path.exists(record):
      try:
        os.link(path, record)
      except OSError:  # another filesystem
        shutil.copyfile(path, record)
    with open(predictions_lib.metadata_path(path)) as f:
      metadata = json.load(f)
    metadata.pop("file_crc32c", None)
    with open(predictions_lib.metadata_path(record), "w") as f:
      json.dump(metadata, f)
  return copy_dir


def run_child(argv):
  """Runs a command; returns (wall seconds, peak RSS in MiB, CPU seconds (user + system) of that process, stdout)."""
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
  return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, text


def profile(data_dir, out_dir):
  """The per-stage breakdown of one analysis in a fresh process: {stage: (wall s, CPU s)}."""
  _, rss, cpu, text = run_child([sys.executable, "-c", PROFILE, repr(time.time()), data_dir, out_dir])
  line = next(line for line in text.splitlines() if line.startswith("PROFILE "))
  return json.loads(line[len("PROFILE ") :]), rss, cpu


def print_profile(stages, rss, cpu):
  wall_total = sum(w for w, _ in stages.values())
  print(f"\nper-stage profile (one fresh process; load average {os.getloadavg()[0]:.2f}):")
  for name, (wall, stage_cpu) in stages.items():
    print(f"  {name:20s} {wall:6.2f} s wall  {stage_cpu:6.2f} s CPU")
  print(f"  {'total':20s} {wall_total:6.2f} s wall  {cpu:6.2f} s CPU (process)  peak RSS {rss:.0f} MiB")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples", type=int, default=50_000)
  parser.add_argument("--classes", type=int, default=1_000)
  parser.add_argument("--seeds", type=int, default=30, help="models per level (6 levels)")
  parser.add_argument("--top_k", type=int, default=5)
  parser.add_argument(
      "--data_dir",
      default=None,
      help="cache of the prediction files (default: a folder in /tmp named after the sizes, reused between runs)",
  )
  parser.add_argument("--regenerate", action="store_true", help="rewrite the cached prediction files")
  parser.add_argument(
      "--study_dir", default=None, help="benchmark a real study's prediction files instead of generated ones"
  )
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--profile", action="store_true", help="also print the per-stage breakdown of one run")
  parser.add_argument("--bare_read", action="store_true", help="also time a bare tf.data read of the files")
  parser.add_argument("--target_seconds", type=float, default=10.0)
  parser.add_argument("--target_gib", type=float, default=2.0)
  parser.add_argument(
      "--target_ratio", type=float, default=1.5, help="files without file_crc32c, against the files with it"
  )
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
    print(f"generated {len(LEVELS) * args.seeds} prediction files in {time.perf_counter() - start:.1f} s ({data_dir})")
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
  scratch = tempfile.mkdtemp(prefix="pie-bench-analysis-")
  out_dir = os.path.join(scratch, "analysis") if args.study_dir else os.path.join(data_dir, "analysis")
  plain_dir = None if args.study_dir else without_crc(data_dir, files)

  def analyze(study_dir, out):
    return [
        sys.executable,
        "-m",
        "analysis.analyze",
        f"--study_dir={study_dir}",
        f"--out_dir={out}",
        "--novalidate",
        "--nopie_images",
        "--noreport",
    ]

  runs = {"analysis": analyze(data_dir, out_dir)}
  if plain_dir:
    runs["analysis, no file_crc32c"] = analyze(plain_dir, os.path.join(scratch, "analysis-without-crc32c"))
  if args.bare_read:
    runs["bare read (tf.data)"] = [sys.executable, "-c", BARE_READ, *files, str(args.top_k)]
  results = {name: [] for name in runs}
  for repeat in range(args.repeats):
    for name, command in runs.items():
      load = os.getloadavg()[0]
      wall, rss, cpu, text = run_child(command)
      results[name].append((wall, rss, cpu))
      print(f"  run {repeat + 1}: {name}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss:.0f} MiB (load {load:.1f})")
      if repeat == 0 and name.startswith("bare"):
        print("    " + text.strip().splitlines()[-1])
  medians = {name: tuple(statistics.median(r[i] for r in rows) for i in range(3)) for name, rows in results.items()}
  print(f"\nmedians of {args.repeats} runs (each a fresh process, start-up included):")
  for name, (wall, rss, cpu) in medians.items():
    print(f"  {name:26s} {wall:6.1f} s wall  {cpu:6.1f} s CPU  {rss:6.0f} MiB")
  with open(os.path.join(out_dir, "summary.json")) as f:
    summary = json.load(f)
  for level in summary["levels"][1:]:
    print(
        f"  level {level['sparsity']:g}: {level['num_pies']} PIEs ({level['pie_fraction']:.2%}), "
        f"{level['num_significant_classes_fdr']} classes significant after FDR ({level['num_significant_classes']} at "
        "p < 0.05 uncorrected)"
    )
  if args.profile:
    print_profile(*profile(data_dir, os.path.join(scratch, "analysis-profile")))

  wall, rss, cpu = medians["analysis"]
  print("\nagainst the targets:")
  print(f"  time   {wall:6.1f} s wall ({cpu:.1f} s CPU) / {args.target_seconds:g} s = {wall / args.target_seconds:.2f}")
  print(f"  memory {rss:6.0f} MiB / {args.target_gib:g} GiB = {rss / (args.target_gib * 1024):.2f}")
  failures = []
  if wall > args.target_seconds:
    failures.append(f"analysis took {wall:.1f} s > {args.target_seconds:g} s")
  if rss > args.target_gib * 1024:
    failures.append(f"analysis peak RSS {rss:.0f} MiB > {args.target_gib:g} GiB")
  if plain_dir:
    plain_wall, _, plain_cpu = medians["analysis, no file_crc32c"]
    print(
        f"  without file_crc32c {plain_wall:.1f} s wall / {wall:.1f} s = {plain_wall / wall:.2f}x "
        f"(CPU {plain_cpu / cpu:.2f}x; target {args.target_ratio:g}x)"
    )
    if plain_wall / wall > args.target_ratio:
      failures.append(f"without file_crc32c the analysis is {plain_wall / wall:.2f}x > {args.target_ratio:g}x")
  for failure in failures:
    print(f"FAILED: {failure}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
