"""The analysis builder on studies made in memory: each level read against the control with its own relation to the
dense models, the study-wide FDR scope, the options checked once."""

import math

import numpy as np
import pytest

import pie  # noqa: F401  (sets the TensorFlow environment before anything else)
from pie import analysis
from pie import builder
from pie import significance
from pie import study as study_lib
from pie import variants
from pie.errors import PieError

NUM_CLASSES, NUM_EXAMPLES, NUM_SEEDS = 5, 300, 6
QUIET = {"log": lambda message: None}


def _model(method, sparsity, seed, top1, labels, dense_seed=None, dense_twin=None, init_from=None):
  name = variants.model_name(method, sparsity, seed)
  return study_lib.ModelRecord(
      name=name,
      path=f"/nonexistent/{name}.tfrecord",
      sparsity=sparsity,
      measured_sparsity=sparsity,
      seed=seed,
      top1=top1.astype(np.int32),
      method=method,
      dense_twin=dense_twin,
      init_from=init_from,
      dense_seed=dense_seed,
      true_prob=np.where(top1 == labels, 0.8, 0.1).astype(np.float32),
  )


def _noisy(rng, labels, error):
  wrong = rng.random(len(labels)) < error
  return np.where(wrong, (labels + rng.integers(1, NUM_CLASSES, len(labels))) % NUM_CLASSES, labels)


def _study(populations, labels):
  return study_lib.Study(
      study_dir=None,
      dataset="digits",
      split="test",
      num_classes=NUM_CLASSES,
      class_names=[str(c) for c in range(NUM_CLASSES)],
      labels=labels,
      levels={},
      config={"name": "in memory", "model": {"name": "none"}},
      config_hash="0" * 16,
      populations=populations,
  )


def _designs_study(seed=0):
  """Dense seeds 0-5; a replicate on 6-11 and a magnitude level on 12-17 (independent); a sham and a random-pruning
  level on the dense seeds (shared); a PTQ population derived from the dense models."""
  rng = np.random.default_rng(seed)
  labels = np.arange(NUM_EXAMPLES) % NUM_CLASSES
  seeds = range(NUM_SEEDS)
  populations = {variants.DENSE_KEY: [_model("dense", 0.0, s, _noisy(rng, labels, 0.2), labels) for s in seeds]}

  def population(method, level, block, error, **fields):
    return [
        _model(method, level, block * NUM_SEEDS + s, _noisy(rng, labels, error), labels, dense_seed=s, **fields)
        for s in seeds
    ]

  populations[("dense_replicate", 0.0)] = population("dense_replicate", 0.0, 1, 0.2)
  populations[("magnitude", 0.5)] = population("magnitude", 0.5, 2, 0.3)
  populations[("sham", variants.SHAM_SPARSITY)] = population("sham", variants.SHAM_SPARSITY, 0, 0.2)
  populations[("random", 0.5)] = population("random", 0.5, 0, 0.3)
  populations[("ptq_float16", 0.0)] = [
      _model("ptq_float16", 0.0, s, _noisy(rng, labels, 0.21), labels, dense_twin=f"sparsity0_seed{s}") for s in seeds
  ]
  return _study(populations, labels)


def test_each_level_is_read_against_the_control_that_stands_to_the_dense_models_as_it_does():
  _, summary, _ = analysis.analyze(_designs_study(), noise_floor_splits=20, bootstrap_resamples=0, **QUIET)
  levels = {(level["method"], level["sparsity"]): level for level in summary["levels"]}
  magnitude, random_level, ptq = levels[("magnitude", 0.5)], levels[("random", 0.5)], levels[("ptq_float16", 0.0)]
  assert (magnitude["seed_relation"], magnitude["floor_control"]) == ("independent", "dense_replicate")
  assert (random_level["seed_relation"], random_level["floor_control"]) == ("shared", "sham")
  assert (ptq["seed_relation"], ptq["floor_control"]) == ("derived", None)
  for level in (magnitude, random_level):
    assert level["floor_note"] is None and 0 < level["pies_excess_p_value"] <= 1
    assert level["distinguishable_from_noise"] == (level["pies_excess_p_value"] <= summary["alpha"])
    assert level["noise_floor_pies_mean"] == pytest.approx(level["num_pies"] - level["pies_excess"])
    # The control's AUROC beside the level's: what seed noise alone gives.
    control = next(lv for lv in summary["levels"] if lv["method"] == level["floor_control"])
    assert level["control_risk"] == control["risk"]
  # Every arrangement, since they are few: twins exchange only with twins (2^6 for the shared level and the sham), any
  # model with any (C(12, 6) for the independent level and the replicate).
  assert random_level["pies_excess_permutations"] == 2**NUM_SEEDS
  assert magnitude["pies_excess_permutations"] == math.comb(2 * NUM_SEEDS, NUM_SEEDS)
  # A derived population has no seed noise to set against: null, with the reason.
  assert ptq["pies_excess"] is None and ptq["distinguishable_from_noise"] is None
  assert "without training" in ptq["floor_note"]


def test_a_level_on_the_dense_seeds_without_a_sham_gets_no_number_from_the_wrong_reference():
  study = _designs_study()
  del study.populations[("sham", variants.SHAM_SPARSITY)]
  _, summary, _ = analysis.analyze(study, noise_floor_splits=20, bootstrap_resamples=0, **QUIET)
  level = next(lv for lv in summary["levels"] if lv["method"] == "random")
  assert level["floor_control"] is None and level["seed_relation"] == "shared"
  assert level["pies_excess"] is None and level["pies_excess_p_value"] is None
  assert level["distinguishable_from_noise"] is None
  assert "config.controls = ('sham',)" in level["floor_note"]


def test_study_wide_fdr_is_one_benjamini_hochberg_over_every_class_test():
  study = _designs_study(seed=3)
  level_tables, level_summary, _ = analysis.analyze(study, bootstrap_resamples=0, noise_floor_splits=0, **QUIET)
  study_tables, study_summary, _ = analysis.analyze(
      study, bootstrap_resamples=0, noise_floor_splits=0, fdr_scope="study", **QUIET
  )
  assert (level_summary["fdr_scope"], study_summary["fdr_scope"]) == ("level", "study")
  by_level = level_tables["class_stats.csv"]
  by_study = study_tables["class_stats.csv"]
  np.testing.assert_array_equal(by_level["p_value"], by_study["p_value"])
  np.testing.assert_allclose(by_study["q_value"], significance.bh_q_values(by_study["p_value"].to_numpy()))
  for _, rows in by_level.groupby(["method", "sparsity"]):
    np.testing.assert_allclose(rows["q_value"], significance.bh_q_values(rows["p_value"].to_numpy()))
  np.testing.assert_allclose(
      by_study["beyond_uniform_shift_q_value"],
      significance.bh_q_values(by_study["beyond_uniform_shift_p_value"].to_numpy()),
  )
  # The summary's counts are those of the study-wide columns.
  for level in study_summary["levels"][1:]:
    rows = by_study.loc[(by_study["method"] == level["method"]) & (by_study["sparsity"] == level["sparsity"])]
    assert level["num_significant_classes_fdr"] == int(rows["significant_fdr"].sum())
    assert level["num_classes_beyond_uniform_shift_fdr"] == int(rows["beyond_uniform_shift_significant_fdr"].sum())


def test_options_are_checked_once_and_keywords_still_work():
  options = builder.AnalysisOptions.of(alpha=0.01, fdr_scope="study")
  assert options.alpha == 0.01 and options.fdr_scope == "study" and options.seed == 0
  assert builder.AnalysisOptions.of(options, seed=3).seed == 3
  for fields, parameter in (
      ({"alpha": 1.5}, "alpha"),
      ({"fdr_scope": "experiment"}, "fdr_scope"),
      ({"excess_permutations": -1}, "excess_permutations"),
      ({"min_slice_size": 0}, "min_slice_size"),
  ):
    with pytest.raises(PieError) as error:
      builder.AnalysisOptions(**fields)
    assert error.value.parameter == parameter
  with pytest.raises(TypeError, match="unknown analysis option"):
    builder.AnalysisOptions.of(alpah=0.01)
  with pytest.raises(PieError, match="fdr_scope must be one of"):
    analysis.analyze(_designs_study(), fdr_scope="everything", **QUIET)
