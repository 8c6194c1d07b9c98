"""Compression methods as study variants: the registry, each variant's real compression, and a study end to end."""

import gzip
import json
import os

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import pytest

from pie import analysis
from pie import model_dir
from pie import population
from pie import predictions as predictions_lib
from pie import ptq
from pie import quantization
from pie import study as study_lib
from pie import training
from pie import variants
from pie.errors import PieError
from tests import fake_study
from tests.conftest import digits_config, run_binary

SEEDS = (0, 1)
# Tiny but real: 2 epochs of 10 steps, the pruning window ends at step 10; sizes recorded, as studies of methods do.
TINY = {"num_epochs": 2, "steps_per_epoch": 10, "pruning.end_fraction": 0.5, "size_report": True}


# ---------------------------------------------------------------------------------------------------------------------
# The registry and the numpy checks.


def test_model_names_keep_magnitude_names_and_name_the_others():
  assert variants.model_name("magnitude", 0.9, 3) == "sparsity90_seed3"
  assert variants.model_name("2:4", 0.0, 3) == "sparsity0_seed3"  # level 0 of a pruning method is the dense model
  assert variants.model_name("2:4", 0.5, 3) == "2of4_sparsity50_seed3"
  assert variants.model_name("random", 0.9, 3) == "random_sparsity90_seed3"
  assert variants.model_name("ptq_full_int8", 0.0, 3) == "ptq_full_int8_seed3"
  assert variants.model_name("qat", 0.0, 1) == "qat_seed1" and variants.model_name("cluster", 0.0, 1) == "cluster_seed1"


def test_bad_methods_are_refused():
  with pytest.raises(PieError, match="unknown compression method"):
    variants.check_variants(["magnitude", "8:16"])
  with pytest.raises(PieError, match="more than once"):
    variants.check_variants(["2:4", "2:4"])
  with pytest.raises(PieError, match="list of method names"):
    variants.check_variants("magnitude")
  with pytest.raises(PieError, match="sparsity 0.5 by construction"):
    variants.effective_method("2:4", 0.9)
  with pytest.raises(PieError, match="must be 0"):
    variants.effective_method("qat", 0.5)


def test_registry_entries_carry_their_behaviour():
  def having(flag):
    return {name for name in variants.METHOD_ORDER if getattr(variants.get_variant(name), flag)}

  assert variants.METHOD_ORDER == (
      "dense",
      "dense_replicate",
      "sham",
      "magnitude",
      "2:4",
      "random",
      "qat",
      "cluster",
      "ptq_float16",
      "ptq_dynamic_int8",
      "ptq_full_int8",
  )
  assert having("checks_sparsity") == {"magnitude", "random", "sham"}
  assert having("sparse_storage") == {"magnitude", "2:4", "random", "sham"}
  assert having("pruning_summaries") == {"magnitude", "2:4", "sham"}
  assert having("reusable") == {"dense", "magnitude", "dense_replicate", "sham"}
  assert having("exports_tflite") == {"qat"}
  assert having("derived") == {"ptq_float16", "ptq_dynamic_int8", "ptq_full_int8"}
  assert having("named_by_level") == {"dense", "magnitude"}
  assert {m for m in variants.METHOD_ORDER if variants.is_pruning(m)} == {"magnitude", "2:4", "random"}
  assert [variants.role(m) for m in ("dense", "sham", "qat", "not_registered")] == [
      "dense",
      "control",
      "pruned",
      "pruned",
  ]
  assert not variants.is_pruning("not_registered") and not variants.named_by_level("not_registered")
  assert variants.recorded_method(None, True) == "dense" and variants.recorded_method(None, False) == "magnitude"
  assert variants.recorded_method("2:4", False) == "2:4"
  # One sparsity check for training and validation, with one tolerance.
  assert variants.sparsity_problem("magnitude", 0.9049, 0.9) is None
  assert variants.sparsity_problem("random", 0.49, 0.5) == (
      "measured sparsity 0.4900 is more than 0.5 points from the target 0.5"
  )
  assert variants.sparsity_problem("2:4", 0.4962, 0.5) is None  # 2:4 promises its pattern, not its level
  assert variants.sparsity_problem("not_registered", 0.0, 0.9) is None
  with pytest.raises(PieError, match=r"config.sparsity must lie in \[0, 1\), got 1.5"):
    variants.effective_method("magnitude", 1.5)
  with pytest.raises(PieError, match=r"config.sparsity_levels must lie in \[0, 1\)"):
    population.grid(digits_config(sparsity_levels=(0.0, 1.0)))
  with pytest.raises(PieError, match="part of every study"):
    variants.check_variants(["dense"])


@pytest.mark.slow
def test_a_config_alone_gives_the_job_the_launcher_would():
  config = digits_config(**{"sparsity_levels": (0.0, 0.9), "num_seeds": 2, "controls": ("dense_replicate", "sham")})
  with config.unlocked():
    config.variants = tuple(variants.VARIANTS)
  for job in population.jobs(config):
    assert variants.config_job(population.job_config(config, job)) == job, job
  cfg = population.job_config(config, population.jobs(config)[-1])
  other = variants.config_job(population.job_config(config, population.jobs(config)[0]))
  with pytest.raises(PieError, match="differ from the config's"):
    training.train_and_export(cfg, "/nonexistent", job=other, log=lambda m: None)


def test_shared_seed_design_is_the_grid_of_levels_times_seeds():
  config = digits_config(controls=(), seed_design="shared")
  jobs = population.jobs(config)
  assert [(j.sparsity, j.seed) for j in jobs] == population.grid(config)
  assert [j.name for j in jobs] == [variants.model_name("magnitude", s, seed) for s, seed in population.grid(config)]
  assert {j.method for j in jobs} == {"dense", "magnitude"}
  assert [j.dense_seed for j in jobs] == [seed for _, seed in population.grid(config)]


def test_independent_seed_design_gives_every_trained_population_its_own_block_of_seeds():
  config = digits_config(
      **{"sparsity_levels": (0.0, 0.5, 0.9), "num_seeds": 3, "controls": ("dense_replicate", "sham")}
  )
  with config.unlocked():
    config.variants = ("magnitude", "random", "ptq_dynamic_int8")
  assert variants.seed_design(config) == "independent"  # the default of the shipped configs
  jobs = population.jobs(config)
  by_population = {}
  for job in jobs:
    by_population.setdefault((job.method, job.sparsity), []).append(job)
  trained = {key: [j.seed for j in js] for key, js in by_population.items() if js[0].kind == "train"}
  assert trained[("dense", 0.0)] == [0, 1, 2]
  assert trained[("dense_replicate", 0.0)] == [3, 4, 5]  # the replicate's seeds as in the shared design
  assert trained[("sham", variants.SHAM_SPARSITY)] == [6, 7, 8]
  assert trained[("magnitude", 0.5)] == [9, 10, 11] and trained[("magnitude", 0.9)] == [12, 13, 14]
  assert trained[("random", 0.5)] == [15, 16, 17] and trained[("random", 0.9)] == [18, 19, 20]
  seeds = [seed for block in trained.values() for seed in block]
  assert len(seeds) == len(set(seeds))  # disjoint blocks
  # Model i of every population is paired with dense model i; a derived model is made from the dense model itself.
  assert all([j.dense_seed for j in js] == [0, 1, 2] for js in by_population.values())
  assert [j.source for j in by_population[("ptq_dynamic_int8", 0.0)]] == [
      "sparsity0_seed0",
      "sparsity0_seed1",
      "sparsity0_seed2",
  ]
  assert by_population[("magnitude", 0.9)][2].name == "sparsity90_seed14"
  with pytest.raises(PieError, match="config.seed_design must be one of"):
    population.jobs(digits_config(seed_design="paired"))


def test_study_jobs_with_controls():
  config = digits_config(
      **{"sparsity_levels": (0.0, 0.9), "num_seeds": 3, "controls": ("dense_replicate", "sham")}, seed_design="shared"
  )
  jobs = population.jobs(config)
  assert [j.name for j in jobs] == [
      "sparsity0_seed0",
      "sparsity0_seed1",
      "sparsity0_seed2",
      "dense_replicate_seed3",
      "dense_replicate_seed4",
      "dense_replicate_seed5",  # seeds disjoint from the dense ones
      "sham_seed0",
      "sham_seed1",
      "sham_seed2",  # the dense seeds, like every pruned level in the shared design
      "sparsity90_seed0",
      "sparsity90_seed1",
      "sparsity90_seed2",
  ]
  assert [(j.method, j.sparsity) for j in jobs if j.name.startswith("sham")] == [("sham", variants.SHAM_SPARSITY)] * 3
  commands = population.dry_run_commands(config, "/nonexistent", ["--config=configs/digits.py"])
  assert sum("--config.method=dense_replicate --config.sparsity=0.0" in c for c in commands) == 3
  assert sum("--config.method=sham --config.sparsity=0.001" in c for c in commands) == 3
  # A study on another filesystem (ram:// here, gs:// on Cloud TPUs): its finished models are left out too.
  fake_study.write_model("ram://dry_run_study", 0.9, 1, np.zeros(4, np.int64), np.zeros(4, np.int64), 10)
  remaining = population.dry_run_commands(config, "ram://dry_run_study", ["--config=configs/digits.py"])
  assert len(remaining) == len(commands) - 1
  assert not any("--workdir=ram://dry_run_study/sparsity90_seed1 " in c + " " for c in remaining)
  assert any("--workdir=ram://dry_run_study/sparsity90_seed0" in c for c in remaining)
  with pytest.raises(PieError, match="unknown control 'replicate'"):
    population.jobs(digits_config(controls=("replicate",)))
  with pytest.raises(PieError, match="is a control"):
    population.jobs(digits_config(variants=("magnitude", "sham")))


def test_a_study_of_dense_models_only():
  config = digits_config(**{"sparsity_levels": (0.0,), "num_seeds": 3, "controls": ()})
  assert [j.name for j in population.jobs(config)] == ["sparsity0_seed0", "sparsity0_seed1", "sparsity0_seed2"]


def test_study_jobs_with_variants():
  config = digits_config(**{"sparsity_levels": (0.0, 0.9), "num_seeds": 2, "controls": ()}, seed_design="shared")
  with config.unlocked():
    config.variants = ("random", "2:4", "ptq_dynamic_int8")
  jobs = population.jobs(config)
  assert [j.name for j in jobs] == [
      "sparsity0_seed0",
      "sparsity0_seed1",
      "random_sparsity90_seed0",
      "random_sparsity90_seed1",
      "2of4_sparsity50_seed0",
      "2of4_sparsity50_seed1",
      "ptq_dynamic_int8_seed0",
      "ptq_dynamic_int8_seed1",
  ]
  derived = [j for j in jobs if j.kind == "derive"]
  assert [j.source for j in derived] == ["sparsity0_seed0", "sparsity0_seed1"]
  commands = population.dry_run_commands(config, "/nonexistent", ["--config=configs/digits_methods.py"])
  assert sum("--config.method=random" in c for c in commands) == 2
  assert sum("--config.method=2:4 --config.sparsity=0.5" in c for c in commands) == 2
  assert commands[-1].startswith("python -m train.population")  # derives the PTQ models once dense ones exist


def test_m_by_n_report_finds_a_broken_block():
  kernel = np.arange(1, 3 * 3 * 8 * 4 + 1, dtype=np.float32).reshape(3, 3, 8, 4)
  kernel[:, :, 0:2, :] = 0  # first block of every (kh, kw, out): 2 zeros of 4
  kernel[:, :, 4:6, :] = 0
  good = variants.m_by_n_report(kernel)
  assert good == {
      "input_channels": 8,
      "applies": True,
      "num_blocks": 3 * 3 * 4 * 2,
      "blocks_violating": 0,
      "sparsity": 0.5,
  }
  kernel[1, 2, 4, 3] = 7.0  # one block now has a single zero
  assert variants.m_by_n_report(kernel)["blocks_violating"] == 1
  # Dense kernels [in, out] group along axis 0; one input channel cannot hold a 2:4 block.
  dense = np.ones((6, 5), np.float32)
  dense[[0, 1, 4], :] = 0  # full block 0..3 has 2 zeros; the partial block 4..5 (2 padding) needs none
  assert variants.m_by_n_report(dense)["blocks_violating"] == 0
  assert not variants.m_by_n_report(np.ones((3, 3, 1, 8)))["applies"]


def test_random_masks_follow_the_magnitude_schedule_and_nest():
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top

  schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=40, power=3, frequency=10)
  for step in (0, 5, 10, 19, 20, 39, 40, 41, 100):
    should_prune, sparsity = schedule(step)
    if bool(should_prune):
      assert variants.polynomial_sparsity(step, 0.9, 0, 40, 10) == pytest.approx(float(sparsity), abs=1e-6)
  assert variants.polynomial_sparsity(15, 0.9, 0, 40, 10) == variants.polynomial_sparsity(10, 0.9, 0, 40, 10)
  order = variants.random_order(1000, seed=3, layer_index=1)
  np.testing.assert_array_equal(order, variants.random_order(1000, seed=3, layer_index=1))
  assert not np.array_equal(order, variants.random_order(1000, seed=4, layer_index=1))
  low, high = variants.random_mask((10, 100), 0.3, order), variants.random_mask((10, 100), 0.9, order)
  assert (low == 0).mean() == pytest.approx(0.3) and (high == 0).mean() == pytest.approx(0.9)
  assert np.all(high[low == 0] == 0)  # nested: what was removed stays removed


# ---------------------------------------------------------------------------------------------------------------------
# Each variant trained (or derived) for real on digits, in this process.


def _train(root, method, sparsity, seed):
  config = digits_config(**TINY)
  with config.unlocked():
    config.method, config.sparsity, config.seed = method, sparsity, seed
  workdir = os.path.join(root, variants.model_name(method, sparsity, seed))
  training.train_and_export(config, workdir, log=lambda m: None)
  return config, workdir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Dense, random (90%), QAT and cluster populations of 2 models, and the three PTQ modes derived from the dense."""
  root = str(tmp_path_factory.mktemp("variants"))
  out = {}
  for method, sparsity in (("dense", 0.0), ("random", 0.9), ("qat", 0.0), ("cluster", 0.0)):
    for seed in SEEDS:
      out[(method, seed)] = _train(root, method, sparsity, seed)
  representative = ptq.representative_images(digits_config().data)
  for mode in ("ptq_float16", "ptq_dynamic_int8", "ptq_full_int8"):
    for seed in SEEDS:
      config = population.model_config(digits_config(**TINY), 0.0, seed, mode)
      workdir = os.path.join(root, variants.model_name(mode, 0.0, seed))
      ptq.derive_ptq(config, out[("dense", seed)][1], workdir, representative=representative, log=lambda m: None)
      out[(mode, seed)] = (config, workdir)
  return {"root": root, "models": out}


def _metadata(workdir):
  name = os.path.basename(workdir)
  return predictions_lib.read_predictions(os.path.join(workdir, f"{name}.tfrecord"))


@pytest.mark.slow
def test_every_variant_exports_the_schema_with_its_method(trained):
  for (method, seed), (_, workdir) in trained["models"].items():
    pred = _metadata(workdir)
    meta = pred.metadata
    assert meta["method"] == method and meta["seed"] == seed
    assert meta["num_examples"] == 500 and pred.top_k_classes.shape == (500, 5)
    assert meta["compressed_bytes"] > 0 and meta["bits_per_weight"] > 0
    # All variants of the study share the config hash (method, sparsity and seed are per-model fields).
    assert meta["config_hash"] == _metadata(trained["models"][("dense", 0)][1]).metadata["config_hash"]


@pytest.mark.slow
def test_random_pruning_zeros_are_real_and_random(trained):
  config, workdir = trained["models"][("random", 0)]
  model = model_dir.load_model(os.path.join(workdir, "model.h5"))
  meta = _metadata(workdir).metadata
  for name in ("conv1", "conv2", "hidden"):
    kernel = model.get_layer(name).kernel.numpy()
    assert (kernel == 0).mean() == pytest.approx(0.9, abs=0.01)  # same per-layer fraction as magnitude
    # The mask is the seeded random order, not the magnitudes.
    layer_index = ("conv1", "conv2", "hidden").index(name)
    expected = variants.random_mask(kernel.shape, 0.9, variants.random_order(kernel.size, 0, layer_index))
    np.testing.assert_array_equal(kernel == 0, expected == 0)
  assert abs(meta["measured_sparsity"] - 0.9) <= 0.005
  dense_bytes = _metadata(trained["models"][("dense", 0)][1]).metadata["compressed_bytes"]
  assert meta["compressed_bytes"] < 0.5 * dense_bytes


@pytest.mark.slow
def test_cluster_kernels_hold_at_most_16_values(trained):
  _, workdir = trained["models"][("cluster", 0)]
  model = model_dir.load_model(os.path.join(workdir, "model.h5"))
  for name in ("conv1", "conv2", "hidden"):
    assert variants.unique_values(model.get_layer(name).kernel.numpy()) <= 16
  assert variants.unique_values(model.get_layer("classifier").kernel.numpy()) > 16  # the classifier is left alone
  assert _metadata(workdir).metadata["structure"]["max_unique_values"] <= 16


def _tensor_types(tflite_bytes):
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top

  model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_bytes))
  return [flatbuffer_utils.type_to_name(t.type) for g in model.subgraphs for t in g.tensors]


@pytest.mark.parametrize(
    "method,int8_weights", [("qat", True), ("ptq_full_int8", True), ("ptq_dynamic_int8", True), ("ptq_float16", False)]
)
@pytest.mark.slow
def test_quantized_variants_hold_what_they_claim(trained, method, int8_weights):
  _, workdir = trained["models"][(method, 0)]
  with open(os.path.join(workdir, "model.tflite"), "rb") as f:
    tflite_bytes = f.read()
  types = _tensor_types(tflite_bytes)
  assert ("INT8" in types) == int8_weights
  if method == "ptq_float16":
    assert "FLOAT16" in types
  meta = _metadata(workdir).metadata
  report = quantization.model_size_report(tflite_bytes)
  assert meta["bits_per_weight"] == pytest.approx(report["bits_per_weight"])
  assert meta["compressed_bytes"] == len(gzip.compress(tflite_bytes, compresslevel=9, mtime=0))
  assert meta["bits_per_weight"] < (17 if method == "ptq_float16" else 12)


@pytest.mark.slow
def test_ptq_predictions_come_from_the_quantized_model(trained):
  _, dense_dir = trained["models"][("dense", 0)]
  _, ptq_dir = trained["models"][("ptq_float16", 0)]
  dense, ptq = _metadata(dense_dir), _metadata(ptq_dir)
  assert ptq.metadata["source_model"] == "sparsity0_seed0"
  # float16 weights barely move the logits: the same labels almost everywhere, and probabilities not bit-equal.
  assert (dense.top1 == ptq.top1).mean() > 0.97
  assert not np.array_equal(dense.top_k_probs, ptq.top_k_probs)


@pytest.mark.slow
def test_rerunning_a_derivation_reuses_it(trained):
  config, workdir = trained["models"][("ptq_dynamic_int8", 1)]
  path = os.path.join(workdir, f"{os.path.basename(workdir)}.tfrecord")
  before = os.path.getmtime(path)
  ptq.derive_ptq(config, trained["models"][("dense", 1)][1], workdir, log=lambda m: None)
  assert os.path.getmtime(path) == before


@pytest.mark.slow
def test_the_analysis_runs_on_every_variant(trained):
  study = study_lib.load_study(trained["root"], log=lambda m: None)
  expected = {
      ("dense", 0.0),
      ("random", 0.9),
      ("qat", 0.0),
      ("cluster", 0.0),
      ("ptq_float16", 0.0),
      ("ptq_dynamic_int8", 0.0),
      ("ptq_full_int8", 0.0),
  }
  assert set(study.populations) == expected
  assert sorted(study.levels) == [0.0]  # the magnitude view: dense only here
  tables, summary, _ = analysis.analyze(study, bootstrap_resamples=0, log=lambda m: None)
  methods = [level["method"] for level in summary["levels"]]
  assert methods == ["dense", "random", "qat", "cluster", "ptq_float16", "ptq_dynamic_int8", "ptq_full_int8"]
  for level in summary["levels"]:
    assert level["bits_per_weight"] > 0 and level["compressed_bytes"] > 0
  for name, frame in tables.items():
    assert frame.columns[-1] == "method", name
    if name == "slice_stats.csv":  # no slice features, no class groups: the header only
      assert frame.empty, name
      continue
    assert set(frame["method"]) == {m for m in methods if m != "dense"}, name
  classes = tables["class_stats.csv"]
  for level in summary["levels"][1:]:
    rows = classes.loc[classes["method"] == level["method"]]
    assert len(rows) == 10 and level["num_significant_classes"] == int(rows["significant"].sum())


# ---------------------------------------------------------------------------------------------------------------------
# Two variants through the real binaries.


@pytest.mark.slow
def test_study_with_variants_end_to_end(tmp_path):
  study_dir = str(tmp_path / "study")
  flags = [
      "--config=configs/digits_methods.py",
      "--config.sparsity_levels=(0.0,0.5)",
      "--config.num_seeds=2",
      "--config.num_epochs=2",
      "--config.steps_per_epoch=10",
      "--config.pruning.end_fraction=0.5",
      "--config.variants=('2:4','ptq_dynamic_int8')",
      "--config.controls=('sham',)",
  ]
  proc = run_binary("train.population", *flags, f"--workdir={study_dir}", "--num_workers=2", "--analyze")
  assert "models done 8/8" in proc.stdout
  names = sorted(d for d in os.listdir(study_dir) if os.path.isdir(os.path.join(study_dir, d)) and d != "analysis")
  assert names == [  # independent seeds: a block of its own for every trained population; PTQ is derived
      "2of4_sparsity50_seed4",
      "2of4_sparsity50_seed5",
      "ptq_dynamic_int8_seed0",
      "ptq_dynamic_int8_seed1",
      "sham_seed2",
      "sham_seed3",
      "sparsity0_seed0",
      "sparsity0_seed1",
  ]
  # The sham control: trained through the pruning wrappers and schedule, at a negligible target, measured.
  sham = json.load(open(os.path.join(study_dir, "sham_seed2", "sham_seed2.json")))
  assert sham["method"] == "sham" and sham["target_sparsity"] == variants.SHAM_SPARSITY
  assert abs(sham["measured_sparsity"] - variants.SHAM_SPARSITY) < 0.005
  # 2:4: the pattern holds in every block of the layers with >= 4 input channels; conv1 (1 channel) stays dense.
  model = model_dir.load_model(os.path.join(study_dir, "2of4_sparsity50_seed4", "model.h5"))
  for name in ("conv2", "hidden"):
    report = variants.m_by_n_report(model.get_layer(name).kernel.numpy())
    assert report["applies"] and report["blocks_violating"] == 0 and report["sparsity"] == pytest.approx(0.5)
  assert variants.m_by_n_report(model.get_layer("conv1").kernel.numpy())["sparsity"] == 0.0
  meta = json.load(open(os.path.join(study_dir, "2of4_sparsity50_seed4", "2of4_sparsity50_seed4.json")))
  assert meta["method"] == "2:4" and meta["structure"]["layers_left_dense_or_partly"] == ["conv1"]
  assert 0.45 < meta["measured_sparsity"] < 0.5  # below 0.5 because conv1 is dense: measured, not assumed

  out = os.path.join(study_dir, "analysis")
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert [(lv["method"], lv["sparsity"]) for lv in summary["levels"]] == [
      ("dense", 0.0),
      ("sham", variants.SHAM_SPARSITY),
      ("2:4", 0.5),
      ("ptq_dynamic_int8", 0.0),
  ]
  # Without a replicate, the sham is the floor's direct control and the A/A splits halve the dense models.
  assert summary["noise_floor"]["control"] == "sham" and summary["noise_floor"]["half_splits"] is None
  pies = pd.read_csv(os.path.join(out, "pies.csv"))
  assert list(pies.columns[:2]) == ["sparsity", "example_id"] and pies.columns[-1] == "method"
  # The report's per-level sections show dense vs 2:4 (the primary pruning method); its images are those PIEs.
  assert len(analysis.read_pie_images(os.path.join(out, "pies.tfrecord"))) == int((pies["method"] == "2:4").sum())
  html = open(os.path.join(out, "report.html"), encoding="utf-8").read()
  assert "<section id='methods'>" in html and "ptq_dynamic_int8" in html and "sham (control)" in html
  assert os.path.exists(os.path.join(out, "figures", "methods_vs_size.svg"))
  # A rerun finds everything finished and derives nothing again.
  proc = run_binary("train.population", *flags, f"--workdir={study_dir}", "--num_workers=2")
  assert "all 8 models" in proc.stdout and "are finished" in proc.stdout

  # Predictions lost on a machine that cannot train: --export_missing exports 2:4 from its model.h5, the sham and a
  # dense model from their final checkpoints, then derives the PTQ model again from that dense model; the analysis
  # is the same, file for file.
  before = {}
  for root, _, files in os.walk(out):
    for file in files:
      before[os.path.relpath(os.path.join(root, file), out)] = open(os.path.join(root, file), "rb").read()
  for name, files in (
      ("2of4_sparsity50_seed5", ()),
      ("sham_seed2", ("model.h5",)),
      ("sparsity0_seed1", ("model.h5", "metrics.json")),
      ("ptq_dynamic_int8_seed1", ("model.tflite",)),
  ):
    for file in (f"{name}.tfrecord", f"{name}.json") + files:
      os.remove(os.path.join(study_dir, name, file))
  proc = run_binary("analysis.analyze", f"--study_dir={study_dir}", "--export_missing", "--num_workers=1")
  assert "exported 3/3: " in proc.stdout and "exported 1/1: ptq_dynamic_int8_seed1" in proc.stdout, proc.stdout
  after = {}
  for root, _, files in os.walk(out):
    for file in files:
      after[os.path.relpath(os.path.join(root, file), out)] = open(os.path.join(root, file), "rb").read()
  assert sorted(after) == sorted(before)
  assert [name for name in before if after[name] != before[name]] == []


def test_the_name_rule_reads_what_model_name_writes():
  for method, sparsity, seed in (
      ("magnitude", 0.9, 3),
      ("dense", 0.0, 0),
      ("2:4", 0.5, 1),
      ("random", 0.7, 2),
      ("qat", 0.0, 4),
      ("cluster", 0.0, 5),
      ("ptq_full_int8", 0.0, 6),
      ("dense_replicate", 0.0, 11),
      ("sham", variants.SHAM_SPARSITY, 1),
  ):
    name = variants.model_name(method, sparsity, seed)
    parsed = variants.parse_model_name(name)
    # Dense models are named like magnitude ones: the rule reads them as magnitude at level 0, which is dense.
    assert parsed == (variants.MAGNITUDE if method == "dense" else method, sparsity, seed), name
    assert variants.effective_method(parsed[0], parsed[1]) == method
  assert variants.parse_model_name("cnn-sparsity90-seed3-2024") == ("magnitude", 0.9, 3)
  assert variants.parse_model_name("exp1_random_sparsity50_seed0") == ("random", 0.5, 0)
  assert variants.parse_model_name("myrandom_sparsity50_seed0") == ("magnitude", 0.5, 0)  # not at a word start
  for name in ("run3", "sparsity90", "seed3", "random_seed3"):  # no seed; no level for a method that needs one
    assert variants.parse_model_name(name) is None, name
