"""Benchmark: training the paper's full grid on the embedded default with the population launcher.

6 sparsity levels x 30 seeds = 180 small CNNs on digits (configs/digits.py, --config.num_seeds=30), trained by
`python -m train.population --num_workers=2` (each worker trains its models one after another in one process) into
a fresh study directory, then timed against a baseline of one process per model: --baseline_models runs of
`python -m train.train` (dense and pruned, one at a time), whose mean time per model is extrapolated to the grid.

Target: the grid within 10 minutes. Prints models per minute for both ways and exits with status 1 on a miss.

Usage: python bench/bench_population.py [--seeds 30] [--workers 2] [--baseline_models 4] [--keep DIR]

On the real dataset, the Fashion-MNIST study as the README runs it (6 levels x 10 seeds and the dense replicate):

  python bench/bench_population.py --config=configs/fashion_mnist.py --seeds=10 --baseline_models=2 \
      --target_minutes=30
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)


def _run(argv):
  start = time.perf_counter()
  proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(argv)} failed with status {proc.returncode}:\n{proc.stderr[-3000:]}")
  return time.perf_counter() - start, proc.stdout


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=30)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--baseline_models", type=int, default=4, help="train.train runs timed for the baseline")
  parser.add_argument("--target_minutes", type=float, default=10.0)
  parser.add_argument("--keep", default=None, help="write the study here and keep it (default: a temp dir)")
  parser.add_argument("--extra", action="append", default=[], help="extra --config.* overrides for every model")
  parser.add_argument("--config", default="configs/digits.py", help="the study's config")
  args = parser.parse_args(argv)
  python = sys.executable
  config = [f"--config={args.config}", *args.extra]
  work = tempfile.mkdtemp(prefix="pie-bench-population-")
  study_dir = args.keep or os.path.join(work, "study")
  print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
  try:
    per_model = []
    for i in range(args.baseline_models):
      sparsity = LEVELS[(i * 5) % len(LEVELS)] if i else 0.0
      seconds, _ = _run(
          [
              python,
              "-m",
              "train.train",
              *config,
              f"--config.sparsity={sparsity}",
              f"--config.seed={i}",
              f"--workdir={work}/baseline_{i}",
          ]
      )
      per_model.append(seconds)
      print(
          f"  baseline: train.train sparsity {sparsity:g} in {seconds:.1f} s (one process, start-up included)",
          flush=True,
      )
    total_models = len(LEVELS) * args.seeds
    baseline_minutes = statistics.mean(per_model) * total_models / 60

    seconds, out = _run(
        [
            python,
            "-m",
            "train.population",
            *config,
            f"--config.num_seeds={args.seeds}",
            f"--workdir={study_dir}",
            f"--num_workers={args.workers}",
        ]
    )
    minutes = seconds / 60
    finished = sum(os.path.exists(os.path.join(study_dir, d, d + ".json")) for d in os.listdir(study_dir))
    with open(os.path.join(study_dir, "study.json")) as f:
      total_models = len(json.load(f)["models"])  # the grid and the config's controls
    wall = [
        float(line.rsplit(",", 1)[1].strip().rstrip("s"))
        for line in out.splitlines()
        if "] " in line and ": top-1 " in line and line.rstrip().endswith("s")
    ]
    print(
        f"population: {finished}/{total_models} models with {args.workers} workers in {minutes:.2f} min "
        f"= {total_models / minutes:.1f} models/min"
        + (
            f" (median {statistics.median(wall):.2f} s of training and export per model inside a worker)"
            if wall
            else ""
        )
    )
    print(
        f"one process per model (extrapolated from {len(per_model)} runs, mean {statistics.mean(per_model):.1f} "
        f"s): {baseline_minutes:.1f} min sequentially = {total_models / baseline_minutes:.1f} models/min"
    )
    failures = []
    if finished != total_models:
      failures.append(f"only {finished} of {total_models} models finished")
    if minutes > args.target_minutes:
      failures.append(f"the grid took {minutes:.2f} min > {args.target_minutes:g} min")
  finally:
    shutil.rmtree(work, ignore_errors=True)
  for failure in failures:
    print(f"FAILED: {failure}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
