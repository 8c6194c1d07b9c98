"""Benchmark: bootstrap_stability on an ImageNet-sized synthetic study.

50,000 examples, 1,000 classes, 30 dense + 30 pruned models, 200 resamples.  The target is 60 s of
wall time on a 2-core machine; the script prints the time and its ratio to the target and exits with
status 1 when the target is missed.  The study comes from ``pie.simulate`` (ImageNet-like numbers:
76.6% dense top-1, a 4-point drop, 5% planted PIEs, 100 classes hurt by 10 extra points), so nearly
every example has at least one dissenting model: a harder case for the PIE part than real ImageNet
predictions, where many examples are unanimous in both populations.

Usage: python bench/bench_bootstrap.py [--resamples 200] [--target 60] [--seed 0]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pie import significance  # noqa: E402
from pie import simulate  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples", type=int, default=50_000)
  parser.add_argument("--classes", type=int, default=1_000)
  parser.add_argument("--models", type=int, default=30, help="models per population")
  parser.add_argument("--resamples", type=int, default=200)
  parser.add_argument("--target", type=float, default=60.0, help="seconds")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  start = time.perf_counter()
  study = simulate.simulate_populations(
      args.examples,
      args.classes,
      args.models,
      args.models,
      base_accuracy=0.766,
      accuracy_drop=0.04,
      impacted_classes=args.classes // 10,
      class_effect=-0.1,
      pie_fraction=0.05,
      seed=args.seed,
  )
  simulated = time.perf_counter() - start
  unanimous = (study.dense_predictions == study.dense_predictions[0]).all(axis=0) & (
      study.pruned_predictions == study.pruned_predictions[0]
  ).all(axis=0)
  print(
      f"simulated {args.examples} examples x {args.classes} classes, {args.models}+{args.models} models "
      f"in {simulated:.1f} s ({unanimous.mean():.1%} of examples unanimous in both populations)"
  )

  start = time.perf_counter()
  result = significance.bootstrap_stability(
      study.dense_predictions,
      study.pruned_predictions,
      study.labels,
      args.classes,
      num_resamples=args.resamples,
      seed=args.seed,
  )
  elapsed = time.perf_counter() - start

  planted = np.zeros(args.examples, dtype=bool)
  planted[study.planted_pies] = True
  print(
      f"bootstrap_stability, {args.resamples} resamples: {elapsed:.1f} s "
      f"({elapsed / args.target:.2f} x the {args.target:.0f} s target)"
  )
  print(
      f"  observed PIEs {int(result.observed_pie.sum())} (planted {planted.sum()}); "
      f"mean stability on planted PIEs {result.pie_stability[planted].mean():.3f}, "
      f"max on the others {result.pie_stability[~planted].max():.3f}"
  )
  print(
      f"  classes significant in the full study {int(result.observed_significant.sum())}; "
      f"mean significance fraction on impacted classes "
      f"{result.class_significance[study.impacted_classes].mean():.3f}"
  )
  if elapsed > args.target:
    print(f"FAILED: {elapsed:.1f} s exceeds the {args.target:.0f} s target", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
