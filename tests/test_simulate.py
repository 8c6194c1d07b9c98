"""Tests of pie.simulate: the planted ground truth is real, and the class test is calibrated on it."""

import numpy as np
import pytest
from scipy import stats

import pie  # noqa: F401  (sets the TensorFlow environment before anything else)
from pie import significance as sig
from pie import simulate
from pie import stats as pie_stats


def _tests(study, **kwargs):
  c = study.num_classes
  dense = sig.normalized_recall(study.dense_predictions, study.labels, c)
  pruned = sig.normalized_recall(study.pruned_predictions, study.labels, c)
  return sig.class_tests(dense, pruned, **kwargs)


def test_shapes_dtypes_and_reproducibility():
  a = simulate.simulate_populations(500, 10, 5, 7, pie_fraction=0.04, impacted_classes=2, class_effect=-0.1, seed=3)
  b = simulate.simulate_populations(500, 10, 5, 7, pie_fraction=0.04, impacted_classes=2, class_effect=-0.1, seed=3)
  c = simulate.simulate_populations(500, 10, 5, 7, pie_fraction=0.04, impacted_classes=2, class_effect=-0.1, seed=4)
  assert a.dense_predictions.shape == (5, 500) and a.pruned_predictions.shape == (7, 500)
  assert np.issubdtype(a.dense_predictions.dtype, np.integer) and a.labels.shape == (500,)
  assert a.dense_predictions.min() >= 0 and a.dense_predictions.max() < 10
  np.testing.assert_array_equal(np.bincount(a.labels), np.full(10, 50))  # balanced
  np.testing.assert_array_equal(a.dense_predictions, b.dense_predictions)
  np.testing.assert_array_equal(a.pruned_predictions, b.pruned_predictions)
  assert not np.array_equal(a.dense_predictions, c.dense_predictions)
  assert (a.confusers != a.labels).all()
  assert a.planted_pies.size == 20 and a.impacted_classes.size == 2


def test_models_differ():
  s = simulate.simulate_populations(2000, 20, 10, 10, seed=0)
  top1 = (s.dense_predictions == s.labels).mean(axis=1)
  assert np.unique(top1).size > 5
  for m in range(1, 10):
    assert (s.dense_predictions[m] != s.dense_predictions[0]).mean() > 0.05


def test_accuracies_follow_the_parameters():
  s = simulate.simulate_populations(4000, 20, 300, 300, base_accuracy=0.7, accuracy_drop=0.05, seed=1)
  dense_top1 = (s.dense_predictions == s.labels).mean()
  pruned_top1 = (s.pruned_predictions == s.labels).mean()
  assert abs(dense_top1 - 0.7) < 0.02  # the easy/hard split is random: its share varies a little
  # The drop itself is exact in expectation; 300 models x 4000 examples pin it to about 0.002.
  assert abs((dense_top1 - pruned_top1) - 0.05) < 0.005
  measured = pie_stats.per_class_recall(s.dense_predictions, s.labels, 20).mean(axis=0)
  np.testing.assert_allclose(measured, s.expected_dense_recall, atol=0.02)


def test_null_holds_by_construction():
  s = simulate.simulate_populations(3000, 30, 8, 8, accuracy_drop=0.03, pie_fraction=0.05, seed=2)
  np.testing.assert_allclose(s.expected_pruned_recall - s.expected_dense_recall, -0.03, atol=1e-9)
  np.testing.assert_allclose(s.expected_normalized_change, 0.0, atol=1e-9)
  assert s.impacted_classes.size == 0


def test_planted_effects_are_exact_in_expectation():
  s = simulate.simulate_populations(
      2000, 20, 8, 8, accuracy_drop=0.02, impacted_classes=[4, 9], class_effect=[-0.1, 0.05], seed=5
  )
  change = s.expected_pruned_recall - s.expected_dense_recall
  np.testing.assert_allclose(change[[4, 9]], [-0.12, 0.03], atol=1e-9)
  np.testing.assert_allclose(np.delete(change, [4, 9]), -0.02, atol=1e-9)
  overall = change.mean()  # balanced classes
  np.testing.assert_allclose(s.expected_normalized_change, change - overall, atol=1e-9)
  np.testing.assert_array_equal(s.impacted_classes, [4, 9])
  np.testing.assert_allclose(s.class_effects, [-0.1, 0.05])


@pytest.mark.parametrize("seed, n_d, n_p", [(0, 3, 3), (1, 8, 5), (2, 30, 30)])
def test_planted_pies_are_exactly_the_modal_rule_pies(seed, n_d, n_p):
  s = simulate.simulate_populations(1500, 15, n_d, n_p, pie_fraction=0.06, accuracy_drop=0.05, seed=seed)
  pies = pie_stats.find_pies(s.dense_predictions, s.pruned_predictions)
  np.testing.assert_array_equal(np.flatnonzero(pies), s.planted_pies)
  # Clear margin: on planted PIEs at least 3/4 of the dense models vote the true label and at
  # least 3/4 of the pruned models vote the confuser.
  planted = s.planted_pies
  dense_share = (s.dense_predictions[:, planted] == s.labels[planted]).mean(axis=0)
  pruned_share = (s.pruned_predictions[:, planted] == s.confusers[planted]).mean(axis=0)
  assert dense_share.min() >= 0.75 and pruned_share.min() >= 0.75
  # Everywhere else the modal label holds a strict majority in both populations.
  _, share_d, tied_d = pie_stats.modal_labels(s.dense_predictions, return_details=True)
  _, share_p, tied_p = pie_stats.modal_labels(s.pruned_predictions, return_details=True)
  assert share_d.min() > 0.5 and share_p.min() > 0.5 and not tied_d.any() and not tied_p.any()


def test_l1_score_ranks_planted_exemplars_first():
  s = simulate.simulate_populations(3000, 30, 12, 9, pie_fraction=0.04, accuracy_drop=0.04, seed=6)
  scores = sig.exemplar_scores(s.dense_predictions, s.pruned_predictions, 30)
  planted = np.zeros(3000, dtype=bool)
  planted[s.planted_pies] = True
  assert scores["l1_distance"][planted].min() >= 1.0 > scores["l1_distance"][~planted].max()
  np.testing.assert_array_equal(np.sort(scores["rank"][planted]), np.arange(1, planted.sum() + 1))
  np.testing.assert_array_equal(scores["is_cie"], planted)


def test_null_calibration_of_the_uncorrected_rule():
  # No disparate effect: the fraction of classes flagged at p < alpha must be alpha, within the
  # binomial 99% interval of the pooled number of tests.
  alpha, flagged, total = 0.05, 0, 0
  for seed in range(8):
    s = simulate.simulate_populations(2400, 80, 20, 20, pie_fraction=0.02, seed=100 + seed)
    assert s.conditioning_mass < 2e-3
    flagged += int(_tests(s, alpha=alpha)["significant"].sum())
    total += 80
  low, high = stats.binom.interval(0.99, total, alpha)
  assert low <= flagged <= high, (flagged, total, low, high)


def test_benjamini_hochberg_controls_the_false_discovery_rate():
  # 20 of 100 classes carry a planted effect (half up, half down, so the other classes' normalized
  # change is exactly 0).  Mean false discovery proportion over the studies must stay <= alpha plus a
  # tolerance of 0.03 (Monte Carlo error of 25 studies).  The uncorrected rule must do worse.
  alpha = 0.05
  fdp_bh, fdp_raw, power = [], [], []
  for seed in range(25):
    s = simulate.simulate_populations(
        3000, 100, 20, 20, impacted_classes=20, class_effect=[-0.08, 0.08] * 10, seed=200 + seed
    )
    null = np.abs(s.expected_normalized_change) < 1e-9
    assert null.sum() == 80
    table = _tests(s, alpha=alpha)
    bh = table["significant_fdr"].to_numpy()
    raw = table["significant"].to_numpy()
    fdp_bh.append((bh & null).sum() / max(bh.sum(), 1))
    fdp_raw.append((raw & null).sum() / max(raw.sum(), 1))
    power.append((bh & ~null).sum() / 20)
  assert np.mean(fdp_bh) <= alpha + 0.03, np.mean(fdp_bh)
  assert np.mean(fdp_raw) > np.mean(fdp_bh)
  assert np.mean(power) > 0.5  # the effects are large enough to be found


def test_planted_classes_are_found():
  s = simulate.simulate_populations(3000, 30, 30, 30, impacted_classes=4, class_effect=-0.15, seed=7)
  table = _tests(s)
  assert table.loc[s.impacted_classes, "significant_fdr"].all()
  assert (table.loc[s.impacted_classes, "normalized_change"] < 0).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_dense=2), "num_dense"),
        (dict(num_examples=5), "num_examples"),
        (dict(easy_accuracy=0.4), "hard_accuracy < 0.5 < easy_accuracy"),
        (dict(impacted_classes=[1, 1]), "repeated"),
        (dict(impacted_classes=[1, 2], class_effect=[0.1, 0.2, 0.3]), "class_effect"),
        (dict(impacted_classes=[12]), "class ids"),
        (dict(impacted_classes=[1], class_effect=0.5), "outside"),
        (dict(base_accuracy=0.95), "base_accuracy"),
        (dict(pie_fraction=1.2), "pie_fraction"),
    ],
)
def test_rejects_bad_or_infeasible_parameters(kwargs, message):
  args = dict(num_examples=400, num_classes=10, num_dense=6, num_pruned=6)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    simulate.simulate_populations(**args)


# ------------------------------------------------------------------------------------------------
# Per-model skill and ceiling classes
# ------------------------------------------------------------------------------------------------


def _top1_and_class_coupling(predictions, labels, num_classes):
  """Per-model top-1 and the mean over classes of corr(class recall, top-1 of the other classes)."""
  correct = predictions == labels
  recall = pie_stats.per_class_recall(predictions, labels, num_classes)
  sizes = np.bincount(labels, minlength=num_classes)
  # Top-1 over the other classes, so that a class's own recall does not correlate with it by construction.
  rest = (correct.sum(axis=1)[:, None] - recall * sizes) / (labels.size - sizes)
  corr = [np.corrcoef(rest[:, c], recall[:, c])[0, 1] for c in range(num_classes)]
  return correct.mean(axis=1), float(np.mean(corr))


def test_skill_spreads_top1_and_couples_it_to_every_class():
  plain = simulate.simulate_populations(4000, 20, 60, 60, seed=8)
  skilled = simulate.simulate_populations(4000, 20, 60, 60, skill_sd=0.3, seed=8)
  top1_plain, coupling_plain = _top1_and_class_coupling(plain.dense_predictions, plain.labels, 20)
  top1_skilled, coupling_skilled = _top1_and_class_coupling(skilled.dense_predictions, skilled.labels, 20)
  # Without skill the spread of top-1 is binomial noise (sd about 0.005) and classes are uncorrelated
  # (each correlation has sd about 0.13 over 60 models, their mean about 0.03).
  assert top1_skilled.std(ddof=1) > 3 * top1_plain.std(ddof=1)
  assert abs(coupling_plain) < 0.15 and coupling_skilled > 0.5, (coupling_plain, coupling_skilled)
  assert np.corrcoef(skilled.dense_skill, top1_skilled)[0, 1] > 0.8
  np.testing.assert_array_equal(plain.dense_skill, np.zeros(60))
  np.testing.assert_array_equal(plain.pruned_skill, np.zeros(60))
  assert skilled.dense_skill.shape == (60,) and skilled.pruned_skill.std() > 0.2


def test_skill_keeps_the_study_structure_and_the_modal_guarantees():
  args = dict(pie_fraction=0.06, impacted_classes=[2], class_effect=-0.1, accuracy_drop=0.04, seed=9)
  plain = simulate.simulate_populations(1500, 15, 8, 7, **args)
  skilled = simulate.simulate_populations(1500, 15, 8, 7, skill_sd=0.5, **args)
  # Skills are drawn after the structure: same labels, types, planted PIEs and exact expectations.
  for field in (
      "labels",
      "confusers",
      "easy",
      "planted_pies",
      "expected_dense_recall",
      "expected_pruned_recall",
      "expected_normalized_change",
  ):
    np.testing.assert_array_equal(getattr(skilled, field), getattr(plain, field), err_msg=field)
  assert not np.array_equal(skilled.dense_predictions, plain.dense_predictions)
  pies = pie_stats.find_pies(skilled.dense_predictions, skilled.pruned_predictions)
  np.testing.assert_array_equal(np.flatnonzero(pies), skilled.planted_pies)
  _, share_d, tied_d = pie_stats.modal_labels(skilled.dense_predictions, return_details=True)
  _, share_p, tied_p = pie_stats.modal_labels(skilled.pruned_predictions, return_details=True)
  assert share_d.min() > 0.5 and share_p.min() > 0.5 and not tied_d.any() and not tied_p.any()
  # Explicit defaults reproduce the default draws.
  again = simulate.simulate_populations(1500, 15, 8, 7, skill_sd=0.0, ceiling_classes=(), **args)
  np.testing.assert_array_equal(again.dense_predictions, plain.dense_predictions)
  np.testing.assert_array_equal(again.pruned_predictions, plain.pruned_predictions)


def test_skill_keeps_every_expected_recall():
  # Exact marginally over the skills: averaged over studies, the measured vote fraction of each
  # example type and the measured class recall equal their exact expectations.  Within one study a
  # population's mean skill moves every class together, so the standard error comes from the spread
  # across studies.  (Drawing thresholds without the sqrt(1 + skill_sd^2) scaling would miss the
  # easy fraction by 0.026, eight standard errors.)
  dev = {"dense easy": [], "dense hard": [], "dense recall": [], "pruned recall": []}
  for seed in range(40):
    s = simulate.simulate_populations(
        800,
        8,
        40,
        40,
        skill_sd=0.5,
        pie_fraction=0.05,
        accuracy_drop=0.05,
        impacted_classes=[1],
        class_effect=-0.1,
        seed=300 + seed,
    )
    share = (s.dense_predictions == s.labels).mean(axis=0)
    hard = ~s.easy & ~np.isin(np.arange(800), s.planted_pies)
    dev["dense easy"].append(share[s.easy].mean() - 0.85)
    dev["dense hard"].append(share[hard].mean() - 0.15)
    dev["dense recall"].append(
        np.mean(pie_stats.per_class_recall(s.dense_predictions, s.labels, 8).mean(axis=0) - s.expected_dense_recall)
    )
    dev["pruned recall"].append(
        np.mean(pie_stats.per_class_recall(s.pruned_predictions, s.labels, 8).mean(axis=0) - s.expected_pruned_recall)
    )
  for name, values in dev.items():
    se = np.std(values, ddof=1) / np.sqrt(len(values))
    assert abs(np.mean(values)) < 4 * se + 1e-4, (name, np.mean(values), se)


def test_ceiling_classes_sit_near_one_and_follow_the_null():
  s = simulate.simulate_populations(
      8000,
      20,
      30,
      30,
      ceiling_classes=[3, 7],
      accuracy_drop=0.01,
      pie_fraction=0.04,
      skill_sd=0.2,
      class_spread=0.0,
      seed=10,
  )
  np.testing.assert_array_equal(s.ceiling_classes, [3, 7])
  np.testing.assert_allclose(s.expected_dense_recall[[3, 7]], 0.995, atol=1e-12)
  np.testing.assert_allclose(s.expected_pruned_recall - s.expected_dense_recall, -0.01, atol=1e-9)
  np.testing.assert_allclose(s.expected_normalized_change, 0.0, atol=1e-9)
  in_ceiling = np.isin(s.labels, [3, 7])
  assert s.easy[in_ceiling].all() and not in_ceiling[s.planted_pies].any()
  assert s.planted_pies.size == round(0.04 * (~in_ceiling).sum())
  # The other classes make up for the ceiling: dense top-1 stays base_accuracy in expectation (the
  # easy/hard draw leaves an sd of about 0.003; without the correction it would be 0.775).
  assert abs(np.mean(s.expected_dense_recall) - 0.75) < 0.012
  recall = pie_stats.per_class_recall(s.dense_predictions, s.labels, 20)
  assert abs(recall[:, [3, 7]].mean() - 0.995) < 0.005
  others = np.setdiff1d(np.arange(20), [3, 7])
  assert recall[:, [3, 7]].std(axis=0).max() < recall[:, others].std(axis=0).min()
  pies = pie_stats.find_pies(s.dense_predictions, s.pruned_predictions)
  np.testing.assert_array_equal(np.flatnonzero(pies), s.planted_pies)


def test_ceiling_classes_drawn_at_random_avoid_impacted_classes():
  s = simulate.simulate_populations(
      2000, 20, 10, 10, impacted_classes=6, class_effect=-0.05, ceiling_classes=5, seed=11
  )
  assert s.ceiling_classes.size == 5 and np.all(np.diff(s.ceiling_classes) > 0)
  assert not np.isin(s.ceiling_classes, s.impacted_classes).any()
  np.testing.assert_allclose(s.expected_dense_recall[s.ceiling_classes], 0.995, atol=1e-12)
  # An impacted ceiling class (ids given) moves by -accuracy_drop + its effect.
  t = simulate.simulate_populations(
      2000, 20, 10, 10, impacted_classes=[4], class_effect=-0.2, ceiling_classes=[4], seed=11
  )
  np.testing.assert_allclose(t.expected_pruned_recall[4] - t.expected_dense_recall[4], -0.22, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(skill_sd=-0.1), "skill_sd"),
        (dict(skill_sd=float("inf")), "skill_sd"),
        (dict(ceiling_accuracy=1.0), "ceiling_accuracy"),
        (dict(ceiling_classes=1, ceiling_accuracy=0.6), "ceiling_accuracy"),  # below the 4/6 strict majority
        (dict(ceiling_classes=[2], accuracy_drop=-0.01), "ceiling_classes: class 2 .*ceiling_accuracy - accuracy_drop"),
        (dict(ceiling_classes=[2], impacted_classes=[2], class_effect=0.03), "ceiling_classes: class 2"),
        (dict(ceiling_classes=10), "at least one class"),
        (dict(ceiling_classes=11), "ceiling_classes must be between 0 and 10"),
        (dict(ceiling_classes=2, impacted_classes=9), "ceiling_classes must be between 0 and 1"),
        (dict(ceiling_classes=[3, 3]), "ceiling_classes has repeated"),
        (dict(ceiling_classes=[10]), "ceiling_classes must be class ids"),
        (dict(ceiling_classes=8), "base_accuracy .* ceiling_classes"),
    ],
)
def test_rejects_bad_or_infeasible_skill_and_ceiling_parameters(kwargs, message):
  args = dict(num_examples=400, num_classes=10, num_dense=6, num_pruned=6)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    simulate.simulate_populations(**args)
