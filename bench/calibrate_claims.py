"""Calibration of the claims statistics (docs/statistics.md): the numbers of its tables, measured.

Each part draws studies where the truth is known (pie.simulate) or splits real dense models where nothing differs
(an A/A comparison: the predictions of a dense-only study, ``--real=FILE.npz`` with ``top1`` [n_models, n_examples]
and ``labels``), runs one kernel of pie.significance or pie.comparison on each, and prints the rates a reader of the
docs needs: how often a null is rejected, how often an interval covers the truth, how often a planted effect is
found.

  python bench/calibrate_claims.py excess --studies=400          # PIE excess: permutation test and its interval
  python bench/calibrate_claims.py excess_real --real=FILE.npz   # the same on A/A splits of real dense models
  python bench/calibrate_claims.py gate --studies=2000           # the compare gate's harm bound, planted harm
  python bench/calibrate_claims.py shift --studies=300           # harm beyond a uniform shift, simulated
  python bench/calibrate_claims.py shift_real --real=FILE.npz    # the same on real A/A splits
  python bench/calibrate_claims.py spearman --studies=300        # correlations with difficulty

Results are printed and, with ``--out``, written as JSON. Timing is not the point; a run takes minutes.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pie import significance as sig  # noqa: E402
from pie import simulate as sim  # noqa: E402

# A study of 2,000 examples in 10 classes with a 90%-accurate dense population, in which
# two dense models of independent seeds disagree on about 7% of the examples.
EXCESS_MODEL = sim.MarginModel(num_examples=2000, num_classes=10, base_accuracy=0.9, class_spread=0.6, margin_sd=2.5)
EXCESS_SIZES = ((10, 10, 10), (10, 10, 5), (5, 5, 5))  # dense / control / level
SEED_CORRELATION = 0.6  # shared seeds: a twin's latent noise correlates with its dense model's by this much


def _binomial_modal_flip(p_right, n_models, dense_modal_right):
  """P(a fresh population's modal label differs from the dense one's) per example, for independent models voting
  true label (probability p_right) or the example's one confuser; a tie goes to the smaller label id."""
  k = np.arange(n_models + 1)
  pmf = stats.binom.pmf(k[None, :], n_models, p_right[:, None])
  p_more = pmf[:, k > n_models / 2].sum(axis=1)
  p_tie = pmf[:, k == n_models / 2].sum(axis=1) if n_models % 2 == 0 else np.zeros(len(p_right))
  return p_more, p_tie


def true_conditional_excess(study, level_shifts, n_level, skill_sd=0.0):
  """E[PIEs of a fresh level | dense] - E[PIEs of a fresh control of the level's size | dense], exactly (independent
  seeds, no skill: the models of a population are then independent given the margins)."""
  assert skill_sd == 0.0
  labels, confusers = study.labels.astype(np.int64), study.confusers.astype(np.int64)
  dense_modal = sig.SortedVotes(study.dense_predictions, study.num_classes).modal()
  dense_right = dense_modal == labels
  true_smaller = labels < confusers

  def expected_pies(shifts):
    p_more, p_tie = _binomial_modal_flip(stats.norm.cdf(study.margins + shifts), n_level, dense_right)
    p_true_modal = p_more + np.where(true_smaller, p_tie, 0.0)
    return float(np.sum(np.where(dense_right, 1.0 - p_true_modal, p_true_modal)))

  return expected_pies(level_shifts) - expected_pies(np.zeros_like(level_shifts))


def _planted_shifts(num_examples, num_planted, effect, seed):
  shifts = np.zeros(num_examples)
  rng = np.random.default_rng(1_000_000 + seed)
  shifts[rng.choice(num_examples, num_planted, replace=False)] = effect
  return shifts


def _old_bootstrap(dense, level, control, num_classes, seed, alpha):
  """The previous rule: excess over the A/A floor of dense + control, bootstrap interval against the control."""
  pool = np.concatenate([dense, control])
  first, second = sig.half_splits(len(pool), len(dense), len(level), 200, seed)
  floor = sig.split_pie_counts(pool, first, second, num_classes).mean()
  dense_rows, level_rows = sig.bootstrap_resamples(len(dense), len(level), 200, seed)
  _, control_rows = sig.bootstrap_resamples(len(dense), len(control), 200, seed)
  _, observed, level_counts = sig.bootstrap_pie_stability(dense, level, num_classes, dense_rows, level_rows, True)
  _, _, control_counts = sig.bootstrap_pie_stability(dense, control, num_classes, dense_rows, control_rows, True)
  return sig.pies_against_floor(int(observed.sum()), floor, level_counts, control_counts, alpha)


def excess_study(sizes, shared, num_planted, effect, seed, old_rule=False, alpha=0.05):
  """One simulated study through exchange_arrangements / exchange_pie_counts / pies_excess_test."""
  n_dense, n_control, n_level = sizes
  rho = SEED_CORRELATION if shared else 0.0
  shifts = _planted_shifts(EXCESS_MODEL.num_examples, num_planted, effect, seed) if num_planted else None
  study = sim.simulate_margins(
      EXCESS_MODEL,
      n_dense,
      {
          "control": sim.MarginPopulation(n_control, seed_correlation=rho),
          "level": sim.MarginPopulation(n_level, example_shifts=shifts, seed_correlation=rho),
      },
      seed=seed,
  )
  level, control = study.predictions["level"], study.predictions["control"]
  strata = np.concatenate([study.twins["level"], study.twins["control"]]) if shared else None
  plan = sig.exchange_arrangements(n_level, n_control, strata=strata, seed=seed)
  counts = sig.exchange_pie_counts(study.dense_predictions, np.concatenate([level, control]), plan.rows, 10)
  result = sig.pies_excess_test(counts, plan, alpha)
  row = {"p": result.p_value, "excess": result.excess, "ci_low": result.ci_low, "ci_high": result.ci_high}
  if shifts is None:
    row["truth"] = 0.0  # the level is its control: exchangeable given the dense population, whatever the design
  elif not shared:
    row["truth"] = true_conditional_excess(study, shifts, n_level)
  if old_rule:
    old = _old_bootstrap(study.dense_predictions, level, control, 10, seed, alpha)
    row.update(old_excess=old["excess"], old_distinguishable=bool(old["distinguishable"]))
  return row


def _rate(flags):
  flags = np.asarray(flags, bool)
  ci = stats.binomtest(int(flags.sum()), flags.size).proportion_ci(0.95)
  return {"rate": float(flags.mean()), "ci95": [float(ci.low), float(ci.high)], "n": int(flags.size)}


def summarize_excess(rows, alpha, truth_key="truth"):
  p = np.array([r["p"] for r in rows])
  excess = np.array([r["excess"] for r in rows])
  low, high = np.array([r["ci_low"] for r in rows]), np.array([r["ci_high"] for r in rows])
  out = {
      "p<=alpha": _rate(p <= alpha),
      "p<=alpha/2": _rate(p <= alpha / 2),
      "excess_mean": float(excess.mean()),
      "excess_sd": float(excess.std(ddof=1)),
      "ci_width_mean": float((high - low).mean()),
  }
  truth = np.array([r.get(truth_key, np.nan) for r in rows])
  if np.isfinite(truth).all():
    out["truth_mean"] = float(truth.mean())
    out["ci_covers_truth"] = _rate((low <= truth) & (truth <= high))
    out["ci_below_truth"] = _rate(high < truth)
  if "old_distinguishable" in rows[0]:
    out["old_distinguishable"] = _rate([r["old_distinguishable"] for r in rows])
    out["old_excess_sd"] = float(np.std([r["old_excess"] for r in rows], ddof=1))
  return out


def run_excess(args):
  results = {}
  for sizes in EXCESS_SIZES:
    for shared in (False, True):
      key = f"{'/'.join(map(str, sizes))} {'shared' if shared else 'independent'}"
      start = time.process_time()
      null = [excess_study(sizes, shared, 0, 0.0, s, args.old_rule, args.alpha) for s in range(args.studies)]
      results[key] = {"null": summarize_excess(null, args.alpha)}
      sd = results[key]["null"]["excess_sd"]
      # Planted: examples pushed across the line in the level only, as many as give a true excess near 2 null sd.
      planted = [
          excess_study(sizes, shared, args.planted, -4.0, s, args.old_rule, args.alpha)
          for s in range(args.studies, args.studies + args.power_studies)
      ]
      results[key]["planted"] = summarize_excess(planted, args.alpha)
      results[key]["planted"]["excess_in_null_sd"] = results[key]["planted"]["excess_mean"] / sd
      results[key]["cpu_seconds"] = time.process_time() - start
      print(key, json.dumps(results[key]), flush=True)
  return results


# The compare gate: planted harm on one model pair, classes of 50 examples.
GATE_CASES = {
    "one class loses 5%, the others 0.5%": lambda rng: _loss_case(rng, 0.05, 0.005),
    "one class loses 4-6%, the others 0.5%": lambda rng: _loss_case(rng, rng.uniform(0.04, 0.06), 0.005),
    "one class loses 5%, the others nothing": lambda rng: _loss_case(rng, 0.05, 0.0),
    "mixed: losses 0-3% and gains 0-2% per class": lambda rng: (rng.uniform(0, 0.03, 10), rng.uniform(0, 0.02, 10)),
    "no class preference: 6% lost, 2% gained": lambda rng: (np.full(10, 0.06), np.full(10, 0.02)),
}


def _loss_case(rng, hurt_loss, other_loss):
  lost = np.full(10, other_loss)
  lost[rng.integers(10)] = hurt_loss
  return lost, np.zeros(10)


def gate_study(case, seed, rule, class_size=50, alpha=0.05, resamples=2000):
  """One pair on 10 classes of `class_size`: each example lost or gained with its class's planted probabilities.
  Returns the true excess and top-1 change, and the bounds of `rule` ("new": excess_change_bounds; "old": the
  Jeffreys-prior bootstrap it replaced)."""
  from pie import comparison  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  loss_rate, gain_rate = GATE_CASES[case](rng)
  sizes = np.full(10, class_size)
  draw = [rng.multinomial(class_size, [lo, ga, 1 - lo - ga]) for lo, ga in zip(loss_rate, gain_rate)]
  lost, gained = np.array([d[0] for d in draw]), np.array([d[1] for d in draw])
  change = gain_rate - loss_rate
  top1 = float(np.average(change, weights=sizes))
  if rule == "new":
    bounds = comparison.excess_change_bounds(sizes, lost, gained, 1 - alpha, resamples, seed)
    low, high, top1_low = bounds.ci_low, bounds.ci_high, bounds.top1_change_low
  else:
    class_change, overall = comparison.bootstrap_changes(sizes, lost, gained, resamples, seed)
    low, high = np.quantile(class_change - overall[:, None], [alpha / 2, 1 - alpha / 2], axis=0)
    top1_low = np.quantile(overall, alpha / 2)
  return {"truth": change - top1, "low": low, "high": high, "top1": top1, "top1_low": top1_low, "loss": loss_rate}


def run_gate(args):
  results = {}
  for case in GATE_CASES:
    for rule in ("old", "new"):
      rows = [gate_study(case, s, rule, alpha=args.alpha) for s in range(args.studies)]
      truth = np.stack([r["truth"] for r in rows])
      low, high = np.stack([r["low"] for r in rows]), np.stack([r["high"] for r in rows])
      hurt = np.stack([r["loss"] for r in rows]) >= 0.04
      entry = {
          "harm_bound_covers_all_classes": _rate((low <= truth).ravel()),
          "interval_covers_all_classes": _rate(((low <= truth) & (truth <= high)).ravel()),
          "wholly_benign_all_classes": _rate((low > truth).ravel()),
          "top1_drop_bound_covers": _rate([r["top1_low"] <= r["top1"] for r in rows]),
          "mean_harm_bound_width": float(np.mean(truth - low)),
      }
      if hurt.any():
        entry["harm_bound_covers_hurt_class"] = _rate(low[hurt] <= truth[hurt])
        entry["interval_covers_hurt_class"] = _rate((low[hurt] <= truth[hurt]) & (truth[hurt] <= high[hurt]))
      results[f"{case} [{rule}]"] = entry
      print(f"{case} [{rule}]", json.dumps(entry), flush=True)
  return results


def _real_pool(path):
  data = np.load(path)
  return data["top1"].astype(np.int64), data["labels"].astype(np.int64)


def _real_groups(rng, pool_size, sizes):
  order = rng.permutation(pool_size)
  cuts = np.cumsum((0,) + tuple(sizes))
  return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def run_excess_real(args):
  """Disjoint dense / control / level groups of real dense models: the level is in truth one more dense population."""
  top1, labels = _real_pool(args.real)
  num_classes = int(labels.max()) + 1
  results = {}
  for sizes in EXCESS_SIZES:
    rows = []
    for draw in range(args.studies):
      dense, control, level = (top1[g] for g in _real_groups(np.random.default_rng(draw), len(top1), sizes))
      plan = sig.exchange_arrangements(sizes[2], sizes[1], seed=draw)
      counts = sig.exchange_pie_counts(dense, np.concatenate([level, control]), plan.rows, num_classes)
      result = sig.pies_excess_test(counts, plan, args.alpha)
      rows.append(
          {
              "p": result.p_value,
              "excess": result.excess,
              "ci_low": result.ci_low,
              "ci_high": result.ci_high,
              "truth": 0.0,
          }
      )
      if args.old_rule:
        old = _old_bootstrap(dense, level, control, num_classes, draw, args.alpha)
        rows[-1].update(old_excess=old["excess"], old_distinguishable=bool(old["distinguishable"]))
    key = "/".join(map(str, sizes))
    results[key] = summarize_excess(rows, args.alpha)
    print(key, json.dumps(results[key]), flush=True)
  return results


# Harm beyond a uniform shift and the correlations: Fashion-MNIST-like classes (10 of 1,000 examples, dense top-1
# 0.9, classes from about 0.75 to 0.99), models that differ in skill.
SHIFT_MODEL = sim.MarginModel(
    num_examples=10_000, num_classes=10, base_accuracy=0.9, class_spread=0.6, margin_sd=1.5, skill_sd=0.1
)
SHIFT_SCENARIOS = {
    "uniform shift, top-1 -2.3 points, 10 + 10": (SHIFT_MODEL, 10, 10, -0.3, None),
    "uniform shift, top-1 -4.6 points, 10 + 5": (SHIFT_MODEL, 10, 5, -0.6, None),
    "uniform shift, 5 + 5, classes of 200": (
        sim.MarginModel(
            num_examples=2000, num_classes=10, base_accuracy=0.9, class_spread=0.6, margin_sd=1.5, skill_sd=0.1
        ),
        5,
        5,
        -0.3,
        None,
    ),
    "uniform shift, 100 classes of 100, 10 + 10": (
        sim.MarginModel(
            num_examples=10_000, num_classes=100, base_accuracy=0.8, class_spread=0.6, margin_sd=1.5, skill_sd=0.1
        ),
        10,
        10,
        -0.3,
        None,
    ),
    "uniform shift, skill sd 0.3, 10 + 10": (
        sim.MarginModel(
            num_examples=10_000, num_classes=10, base_accuracy=0.9, class_spread=0.6, margin_sd=1.5, skill_sd=0.3
        ),
        10,
        10,
        -0.3,
        None,
    ),
    "no shift (A/A), 10 + 10": (SHIFT_MODEL, 10, 10, 0.0, None),
    "misspecified: 10% hard examples, uniform shift, 10 + 10": (
        sim.MarginModel(
            num_examples=10_000,
            num_classes=10,
            base_accuracy=0.9,
            class_spread=0.6,
            margin_sd=1.0,
            skill_sd=0.1,
            hard_share=0.1,
        ),
        10,
        10,
        -0.3,
        None,
    ),
    "planted: 5 of 100 classes -0.4 probit beyond a uniform shift, 10 + 10": (
        sim.MarginModel(
            num_examples=10_000, num_classes=100, base_accuracy=0.8, class_spread=0.6, margin_sd=1.5, skill_sd=0.1
        ),
        10,
        10,
        -0.3,
        (5, -0.4),
    ),
    "planted: 2 of 10 classes -0.4 probit beyond a uniform shift, 10 + 10": (SHIFT_MODEL, 10, 10, -0.3, (2, -0.4)),
}


def shift_study(scenario, seed, alpha=0.05, permutations=0):
  model, n_dense, n_level, shift, planted = SHIFT_SCENARIOS[scenario]
  class_shifts = None
  if planted:
    class_shifts = np.zeros(model.num_classes)
    class_shifts[np.random.default_rng(2_000_000 + seed).choice(model.num_classes, planted[0], replace=False)] = (
        planted[1]
    )
  study = sim.simulate_margins(
      model, n_dense, {"level": sim.MarginPopulation(n_level, shift=shift, class_shifts=class_shifts)}, seed=seed
  )
  labels, num_classes = study.labels, study.num_classes
  histograms = sig.dense_count_histograms(study.dense_predictions, labels, num_classes)
  dense_hits = sig.class_hits(study.dense_predictions, labels, num_classes)
  level_hits = sig.class_hits(study.predictions["level"], labels, num_classes)
  sizes = np.bincount(labels, minlength=num_classes)
  result = sig.uniform_shift_tests(histograms, dense_hits, level_hits, sizes, alpha)
  truth = study.expected_recall["level"] - study.uniform_shift_recall["level"]
  row = {"result": result, "truth": truth, "planted": class_shifts is not None and class_shifts != 0}
  if permutations:
    first, second = sig.half_splits(n_dense + n_level, n_dense, n_level, permutations, seed)
    row["correlation"] = sig.class_correlation_test(dense_hits, level_hits, sizes, first, second, histograms=histograms)
    row["true_shift_rho"] = float(
        stats.spearmanr(
            study.dense_expected_recall, study.uniform_shift_recall["level"] - study.dense_expected_recall
        ).statistic
    )
  return row


def summarize_shift(rows, alpha):
  p = np.concatenate([r["result"].p_value for r in rows])
  planted = np.concatenate([np.broadcast_to(r["planted"], r["result"].p_value.shape) for r in rows])
  flagged = np.concatenate([r["result"].significant_fdr for r in rows])
  tested = np.isfinite(p)
  out = {
      "null_classes_p<alpha": _rate(p[tested & ~planted] < alpha),
      "studies_with_fdr_discovery_among_null": _rate(
          [(r["result"].significant_fdr & ~r["planted"]).any() for r in rows]
      ),
      "mean_false_discovery_proportion": float(
          np.mean(
              [
                  (r["result"].significant_fdr & ~r["planted"]).sum() / max(1, r["result"].significant_fdr.sum())
                  for r in rows
              ]
          )
      ),
      "mean_abs_error_of_uniform_shift_change": float(
          np.mean(np.abs(np.concatenate([r["result"].beyond_uniform_shift - r["truth"] for r in rows])))
      ),
  }
  if planted.any():
    out["planted_classes_found_fdr"] = _rate(flagged[planted])
    # The shift is fitted to the level's top-1, which the planted classes pull down: the other classes then lose
    # less than that shift predicts, truly (their true beyond is positive). A discovery is wrong when its sign is.
    beyond = np.concatenate([r["result"].beyond_uniform_shift for r in rows])
    truth = np.concatenate([r["truth"] for r in rows])
    out["discoveries_with_the_wrong_sign"] = _rate(np.sign(beyond[flagged]) != np.sign(truth[flagged]))
    out["unplanted_true_beyond_mean"] = float(truth[~planted].mean())
  return out


def run_shift(args):
  results = {}
  for scenario in SHIFT_SCENARIOS:
    start = time.process_time()
    rows = [shift_study(scenario, s, args.alpha) for s in range(args.studies)]
    results[scenario] = summarize_shift(rows, args.alpha)
    results[scenario]["cpu_seconds"] = time.process_time() - start
    print(scenario, json.dumps(results[scenario]), flush=True)
  return results


def run_shift_real(args):
  """Real A/A: disjoint dense and level groups of real dense models (a uniform shift of 0 is the truth)."""
  top1, labels = _real_pool(args.real)
  num_classes = int(labels.max()) + 1
  sizes = np.bincount(labels, minlength=num_classes)
  results = {}
  for n_dense, n_level in ((10, 10), (10, 5), (5, 5), (20, 20)):
    p, discovery, rho_p, rho_p_classes, beyond_rho_p = [], [], [], [], []
    for draw in range(args.studies):
      dense_rows, level_rows = _real_groups(np.random.default_rng(draw), len(top1), (n_dense, n_level))
      dense, level = top1[dense_rows], top1[level_rows]
      histograms = sig.dense_count_histograms(dense, labels, num_classes)
      dense_hits, level_hits = sig.class_hits(dense, labels, num_classes), sig.class_hits(level, labels, num_classes)
      result = sig.uniform_shift_tests(histograms, dense_hits, level_hits, sizes, args.alpha)
      p.append(result.p_value)
      discovery.append(result.significant_fdr.any())
      first, second = sig.half_splits(n_dense + n_level, n_dense, n_level, 499, draw)
      corr = sig.class_correlation_test(dense_hits, level_hits, sizes, first, second, histograms=histograms)
      rho_p.append(corr.p_value)
      rho_p_classes.append(corr.p_value_independent_classes)
      beyond_rho_p.append(corr.beyond_uniform_shift_p_value)
    p = np.concatenate(p)
    key = f"{n_dense} + {n_level}"
    results[key] = {
        "beyond_p<alpha": _rate(p[np.isfinite(p)] < args.alpha),
        "draws_with_fdr_discovery": _rate(discovery),
        "difficulty_rho_permutation_p<alpha": _rate(np.array(rho_p) < args.alpha),
        "difficulty_rho_scipy_p<alpha": _rate(np.array(rho_p_classes) < args.alpha),
        "beyond_rho_p<alpha": _rate(np.array(beyond_rho_p)[np.isfinite(beyond_rho_p)] < args.alpha),
    }
    print(key, json.dumps(results[key]), flush=True)
  return results


CORRELATION_SCENARIOS = (
    "no shift (A/A), 10 + 10",
    "uniform shift, top-1 -2.3 points, 10 + 10",
    "uniform shift, skill sd 0.3, 10 + 10",
    "uniform shift, 100 classes of 100, 10 + 10",
)
AA_SKILL = {
    "A/A, skill sd 0.3, 10 + 10": (
        sim.MarginModel(
            num_examples=10_000, num_classes=10, base_accuracy=0.9, class_spread=0.6, margin_sd=1.5, skill_sd=0.3
        ),
        10,
        10,
        0.0,
        None,
    )
}
SHIFT_SCENARIOS.update(AA_SKILL)


def run_spearman(args):
  results = {}
  for scenario in CORRELATION_SCENARIOS + tuple(AA_SKILL):
    rows = [shift_study(scenario, s, args.alpha, permutations=499) for s in range(args.studies)]
    corr = [r["correlation"] for r in rows]
    results[scenario] = {
        "rho_mean": float(np.mean([c.rho for c in corr])),
        "uniform_shift_rho_mean": float(np.nanmean([c.uniform_shift_rho for c in corr])),
        "true_uniform_shift_rho_mean": float(np.nanmean([r["true_shift_rho"] for r in rows])),
        "permutation_p<alpha": _rate([c.p_value < args.alpha for c in corr]),
        "scipy_p<alpha": _rate([c.p_value_independent_classes < args.alpha for c in corr]),
        "beyond_rho_mean": float(np.nanmean([c.beyond_uniform_shift_rho for c in corr])),
        "beyond_rho_p<alpha": _rate(
            [c.beyond_uniform_shift_p_value < args.alpha for c in corr if np.isfinite(c.beyond_uniform_shift_p_value)]
        ),
    }
    print(scenario, json.dumps(results[scenario]), flush=True)
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("part", choices=["excess", "excess_real", "gate", "shift", "shift_real", "spearman"])
  parser.add_argument("--studies", type=int, default=400)
  parser.add_argument("--power_studies", type=int, default=200)
  parser.add_argument("--planted", type=int, default=28, help="examples planted as PIEs in the level (excess)")
  parser.add_argument("--old_rule", action="store_true", help="also run the previous bootstrap rule (slow)")
  parser.add_argument("--alpha", type=float, default=0.05)
  parser.add_argument("--real", default=None, help="npz of a dense-only study: top1 [n_models, n_examples], labels")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  runs = {
      "excess": run_excess,
      "excess_real": run_excess_real,
      "gate": run_gate,
      "shift": run_shift,
      "shift_real": run_shift_real,
      "spearman": run_spearman,
  }
  results = runs[args.part](args)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
