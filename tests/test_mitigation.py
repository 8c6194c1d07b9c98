"""Mitigations: their losses against hand computations, the class-weight rule, the registry's mitigated populations,
a distilled student against its teacher, resuming a mitigated model after a kill, and the verdict's calibration."""

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import special

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import mitigation
from pie import population
from pie import predictions as predictions_lib
from pie import significance as sig
from pie import stats as pie_stats
from pie import training
from pie import variants
from pie.errors import PieError
from tests.conftest import REPO, override, run_binary
from tests.test_calibration_real import FIXTURE

NUM_CLASSES = 10


def _mitigation_config(**overrides):
  sys.path.insert(0, REPO)
  from configs import digits_mitigation  # pylint: disable=g-import-not-at-top

  return override(digits_mitigation.get_config(), **overrides)


# ---------------------------------------------------------------------------------------------------------------------
# Losses and the class-weight rule, by hand.


def _batch(seed=0, size=6, classes=4):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, size)
  labels[:3] = [0, 1, 0]  # class 0 twice, class 1 once, in every batch
  return np.eye(classes, dtype=np.float32)[labels], rng.normal(size=(size, classes)), rng.normal(size=(size, classes))


def test_distillation_loss_equals_a_hand_computation():
  onehot, student, teacher = _batch()
  weight, temperature = 0.3, 2.5
  log_student = student - special.logsumexp(student, axis=1, keepdims=True)
  hard = -(onehot * log_student).sum(axis=1)
  p_teacher = special.softmax(teacher / temperature, axis=1)
  log_soft_student = student / temperature - special.logsumexp(student / temperature, axis=1, keepdims=True)
  kl = (p_teacher * (np.log(p_teacher) - log_soft_student)).sum(axis=1)
  expected = np.mean((1 - weight) * hard + weight * temperature**2 * kl)
  loss = mitigation.DistillationLoss(4, weight, temperature)
  outputs = np.concatenate([student, teacher], axis=1).astype(np.float32)
  assert float(loss(onehot, outputs)) == pytest.approx(expected, rel=1e-5)
  # w = 0 is the plain cross-entropy; a student equal to its teacher has no distillation term.
  assert float(mitigation.DistillationLoss(4, 0.0, temperature)(onehot, outputs)) == pytest.approx(
      hard.mean(), rel=1e-5
  )
  same = np.concatenate([teacher, teacher], axis=1).astype(np.float32)
  assert float(mitigation.DistillationLoss(4, 1.0, temperature)(onehot, same)) == pytest.approx(0.0, abs=1e-6)


def test_equalized_loss_equals_a_hand_computation():
  onehot, logits, _ = _batch(seed=1)
  penalty = 0.7
  ce = -(onehot * (logits - special.logsumexp(logits, axis=1, keepdims=True))).sum(axis=1)
  labels = onehot.argmax(axis=1)
  spread = sum(
      np.mean(labels == c) * (ce[labels == c].mean() - ce.mean()) ** 2 for c in np.unique(labels)
  )  # sum over the batch's classes of p_c (L_c - L)^2
  loss = mitigation.EqualizedLoss(penalty)(onehot, logits.astype(np.float32))
  assert float(loss) == pytest.approx(ce.mean() + penalty * spread, rel=1e-5)


def test_class_weighted_loss_weighs_each_example_by_its_class():
  onehot, logits, _ = _batch(seed=2)
  weights = np.array([0.5, 2.0, 1.0, 1.5])
  ce = -(onehot * (logits - special.logsumexp(logits, axis=1, keepdims=True))).sum(axis=1)
  loss = mitigation.ClassWeightedLoss(weights)(onehot, logits.astype(np.float32))
  assert float(loss) == pytest.approx(np.mean(weights[onehot.argmax(axis=1)] * ce), rel=1e-5)


def test_class_weights_follow_the_documented_rule():
  error = np.array([0.0, 0.02, 0.10, 0.0, np.nan])
  count = np.array([100, 50, 25, 25, 0])
  weights = mitigation.class_weights(error, count, smoothing=0.02, power=2.0)
  raw = (np.array([0.0, 0.02, 0.10, 0.0]) + 0.02) ** 2
  expected = raw / np.sum(count[:4] / count.sum() * raw)
  np.testing.assert_allclose(weights[:4], expected)
  assert weights[4] == 0  # no training example: never used
  assert np.sum(count / count.sum() * weights) == pytest.approx(1.0)  # mean weight over the training examples
  assert weights[2] > weights[1] > weights[0] == weights[3]  # harder classes weigh more
  with pytest.raises(PieError, match="smoothing and power must be > 0"):
    mitigation.class_weights(error, count, smoothing=0.0)


def test_per_class_error_counts_mistakes_per_class():
  labels = np.array([0, 0, 1, 1, 1, 2])
  logits = np.eye(3)[[0, 1, 1, 1, 0, 2]]
  error, count = mitigation.per_class_error(lambda x: x, [(logits[:3], labels[:3]), (logits[3:], labels[3:])], 4)
  np.testing.assert_allclose(error[:3], [0.5, 1 / 3, 0.0])
  assert np.isnan(error[3]) and list(count) == [2, 3, 1, 0]


# ---------------------------------------------------------------------------------------------------------------------
# The registry.


def test_mitigated_populations_in_the_registry():
  assert variants.model_name("magnitude+distill", 0.9, 3) == "distill_sparsity90_seed3"
  assert variants.model_name("2:4+class_reweight", 0.5, 3) == "reweight_2of4_sparsity50_seed3"
  assert variants.model_name("qat+equalized_loss", 0.0, 1) == "eqloss_qat_seed1"
  assert variants.model_name("magnitude+distill", 0.0, 1) == "sparsity0_seed1"  # level 0 is the dense model
  entry = variants.get_variant("magnitude+distill")
  assert entry.mitigation is variants.MITIGATIONS["distill"] and entry.base is variants.VARIANTS["magnitude"]
  assert entry.checks_sparsity and entry.sparse_storage and entry.fine_tunes_from_dense and not entry.reusable
  assert variants.is_pruning("random+distill") and not variants.named_by_level("magnitude+distill")
  assert variants.base_method("magnitude+distill") == "magnitude" and variants.mitigation_of("magnitude") is None
  assert variants.role("magnitude+equalized_loss") == variants.COMPRESSED_ROLE
  order = sorted(
      ["random", "magnitude+equalized_loss", "magnitude", "magnitude+distill", "dense"], key=variants.method_rank
  )
  assert order == ["dense", "magnitude", "magnitude+distill", "magnitude+equalized_loss", "random"]
  with pytest.raises(PieError, match="unknown mitigation 'dropout'"):
    variants.check_variants(["magnitude+dropout"])
  with pytest.raises(PieError, match="is not trained, so it cannot train with a mitigation"):
    variants.check_variants(["ptq_float16+distill"])
  with pytest.raises(PieError, match="a study lists its mitigated populations in config.variants"):
    population.jobs(_mitigation_config(mitigation="distill"))


def test_mitigation_parameters_are_checked_recorded_and_hashed():
  from pie import model_dir  # pylint: disable=g-import-not-at-top

  config = _mitigation_config()
  assert variants.get_variant("magnitude+distill").mitigation_params(config) == {
      "weight": 0.5,
      "temperature": 4.0,
      "teacher": None,
  }
  assert variants.get_variant("magnitude+equalized_loss").mitigation_params(config) == {"penalty": 1.0}
  for key, value, message in (
      ("mitigation_params.weight", 1.5, "weight must lie in"),
      ("mitigation_params.weights_update", "sometimes", "weights_update must be one of"),
      ("mitigation_params.penalty", -1.0, "penalty must be >= 0"),
  ):
    with pytest.raises(PieError, match=message):
      population.jobs(_mitigation_config(**{key: value}))
  bad = _mitigation_config()
  with bad.unlocked():
    bad.mitigation_params.lambda_ = 1.0
  with pytest.raises(PieError, match=r"unknown config.mitigation_params \['lambda_'\]"):
    population.jobs(bad)
  # The parameters are in the config hash; which mitigation a model uses is per model, like its method.
  base = model_dir.config_hash(config)
  assert model_dir.config_hash(_mitigation_config(**{"mitigation_params.weight": 0.9})) != base
  assert model_dir.config_hash(_mitigation_config(mitigation="distill", seed=3)) == base


def _jobs_by_pairing(config):
  """A study's jobs by (method, level, seed of the dense model each is paired with)."""
  return {(job.method, job.sparsity, job.dense_seed): job for job in population.jobs(config)}


def test_jobs_of_a_mitigation_study_require_what_their_mitigation_needs():
  config = _mitigation_config(num_seeds=2)
  jobs = _jobs_by_pairing(config)
  distill = jobs[("magnitude+distill", 0.9, 1)]
  assert distill.requires == ("sparsity0_seed1",)  # the teacher: the dense model it is paired with
  assert distill.init_from is None and distill.seed not in (0, 1)  # trained from scratch on seeds of its own
  assert jobs[("magnitude+class_reweight", 0.9, 0)].requires == ("sparsity0_seed0", "sparsity0_seed1")  # every dense
  assert jobs[("magnitude+equalized_loss", 0.9, 0)].requires == () and jobs[("magnitude", 0.9, 0)].requires == ()
  for job in jobs.values():  # one model's config alone gives the launcher's job
    assert variants.config_job(population.job_config(config, job)) == job
  one = population.model_config(config, 0.9, distill.seed)
  with one.unlocked():
    one.mitigation = "distill"
  assert variants.config_job(one) == distill
  named = _mitigation_config(num_seeds=2, **{"mitigation_params.teacher": "sparsity0_seed0"})
  assert _jobs_by_pairing(named)[("magnitude+distill", 0.9, 1)].requires == ("sparsity0_seed0",)
  paired = _mitigation_config(num_seeds=2, init_from_dense=True, finetune_epochs=5)
  job = _jobs_by_pairing(paired)[("magnitude+distill", 0.9, 1)]
  assert job.init_from == "sparsity0_seed1" and job.requires == ("sparsity0_seed1",)
  shared = _jobs_by_pairing(_mitigation_config(num_seeds=2, seed_design="shared"))
  assert shared[("magnitude+distill", 0.9, 1)].name == "distill_sparsity90_seed1"  # the dense seeds themselves


# ---------------------------------------------------------------------------------------------------------------------
# Training with a mitigation.


@pytest.mark.slow
def test_a_student_distilled_with_weight_1_matches_its_teacher(tmp_path):
  """A magnitude-pruned student trained on the teacher's outputs alone (w = 1, T = 1) predicts what the teacher
  predicts more often, and is closer to its output distribution, than the same student trained on the labels."""
  config = _mitigation_config(num_seeds=1, export_logits=True, **{"mitigation_params.weight": 1.0})
  with config.unlocked():
    config.mitigation_params.temperature = 1.0
    config.mitigation_params.teacher = "sparsity0_seed0"

  def train(method, sparsity, seed):
    job = variants.config_job(population.model_config(config, sparsity, seed, method))
    training.train_and_export(
        population.job_config(config, job), str(tmp_path / job.name), job=job, log=lambda message: None
    )
    return predictions_lib.read_predictions(str(tmp_path / job.name / f"{job.name}.tfrecord"), with_logits=True), job

  teacher, _ = train("dense", 0.0, 0)
  distilled, job = train("magnitude+distill", 0.5, 1)
  plain, _ = train("magnitude", 0.5, 1)
  metadata = json.load(open(tmp_path / job.name / f"{job.name}.json"))
  assert metadata["mitigation"] == "distill" and metadata["mitigation_state"] == {"teacher": "sparsity0_seed0"}
  assert metadata["mitigation_params"] == {"weight": 1.0, "temperature": 1.0, "teacher": "sparsity0_seed0"}
  assert abs(metadata["measured_sparsity"] - 0.5) <= 0.005  # the masks still updated under the outer model

  def kl_to_teacher(student):
    p = special.softmax(teacher.logits, axis=1)
    return np.mean(
        np.sum(p * (special.log_softmax(teacher.logits, axis=1) - special.log_softmax(student.logits, 1)), 1)
    )

  # Measured: 96.2% agreement (plain 93.6%).
  assert np.mean(distilled.top1 == teacher.top1) >= 0.94
  assert np.mean(distilled.top1 == teacher.top1) > np.mean(plain.top1 == teacher.top1)
  assert kl_to_teacher(distilled) < kl_to_teacher(plain)
  # The pruning steps ran to the end of training in the student nested in the distillation model.
  checkpoint = tf_checkpoint(tmp_path / job.name / "checkpoints")
  steps = [
      checkpoint.get_tensor(k)
      for k in checkpoint.get_variable_to_shape_map()
      if k.endswith("pruning_step/.ATTRIBUTES/VARIABLE_VALUE")
  ]
  assert steps and all(int(s) == metadata["steps"] for s in steps), steps


def tf_checkpoint(directory):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return tf.train.load_checkpoint(tf.train.latest_checkpoint(str(directory)))


TRAIN_FLAGS = (
    "--config=configs/digits_mitigation.py",
    "--config.num_seeds=2",
    "--config.num_epochs=3",
    "--config.pruning.end_fraction=0.5",
    "--config.batch_size=16",
    "--config.checkpoint_every_epochs=1",
    "--config.mitigation_params.weights_update=per_epoch",
)


def _start(args, out):
  return subprocess.Popen(
      [sys.executable, "-m", "train.train", *TRAIN_FLAGS, *args],
      cwd=REPO,
      stdout=open(out, "w"),
      stderr=subprocess.STDOUT,
      start_new_session=True,
  )


@pytest.fixture(scope="module")
def dense_population(tmp_path_factory):
  """The two dense models the mitigated models need (teacher, class weights), trained once for the module."""
  folder = tmp_path_factory.mktemp("dense_population")
  for seed in (0, 1):
    run_binary(
        "train.train",
        *TRAIN_FLAGS,
        "--config.sparsity=0.0",
        f"--config.seed={seed}",
        f"--workdir={folder}/sparsity0_seed{seed}",
    )
  return folder


@pytest.mark.slow
@pytest.mark.parametrize("mitigation_name", ["distill", "class_reweight"])
def test_a_mitigated_model_resumes_after_a_kill_with_identical_predictions(mitigation_name, dense_population, tmp_path):
  """SIGKILL a mitigated model after a checkpoint; resumed, it ends with the predictions of an uninterrupted run (the
  teacher restored, the per-epoch class weights recomputed from the restored model)."""
  model = ("--config.sparsity=0.9", "--config.seed=0", f"--config.mitigation={mitigation_name}")
  name = variants.model_name(f"magnitude+{mitigation_name}", 0.9, 0)
  for study in ("a", "b"):  # each run its own copy of the finished dense models
    shutil.copytree(dense_population, tmp_path / study)
  uninterrupted = _start((*model, f"--workdir={tmp_path}/a/{name}"), tmp_path / "a.out")
  killed = _start((*model, f"--workdir={tmp_path}/b/{name}"), tmp_path / "b1.out")
  state = tmp_path / "b" / name / "checkpoints" / "checkpoint"
  deadline = time.time() + 300
  while not state.exists():
    assert killed.poll() is None, (tmp_path / "b1.out").read_text()[-3000:]
    assert time.time() < deadline
    time.sleep(0.01)
  time.sleep(random.Random(0).uniform(0.0, 0.1))
  os.killpg(killed.pid, signal.SIGKILL)
  killed.wait()
  assert not (tmp_path / "b" / name / f"{name}.json").exists(), "the run finished before it was killed"
  resumed = _start((*model, f"--workdir={tmp_path}/b/{name}"), tmp_path / "b2.out")
  for proc, out in ((uninterrupted, "a.out"), (resumed, "b2.out")):
    assert proc.wait(timeout=600) == 0, (tmp_path / out).read_text()[-3000:]
  assert "resumed from" in (tmp_path / "b2.out").read_text()
  reference = predictions_lib.read_predictions(str(tmp_path / "a" / name / f"{name}.tfrecord"))
  other = predictions_lib.read_predictions(str(tmp_path / "b" / name / f"{name}.tfrecord"))
  np.testing.assert_array_equal(other.top_k_classes, reference.top_k_classes)
  np.testing.assert_array_equal(other.top_k_probs, reference.top_k_probs)
  assert other.metadata["mitigation"] == mitigation_name
  assert other.metadata["mitigation_state"] == reference.metadata["mitigation_state"]
  if mitigation_name == "class_reweight":
    log = (tmp_path / "b2.out").read_text() + (tmp_path / "b1.out").read_text()
    assert "class weights" in log  # recomputed at the start of the later epochs
  shutil.rmtree(tmp_path / "a")


@pytest.mark.slow
def test_a_mitigation_study_through_the_launcher(tmp_path):
  study_dir = str(tmp_path / "study")
  proc = run_binary(
      "train.population",
      "--config=configs/digits_mitigation.py",
      "--config.num_seeds=3",
      "--config.num_epochs=2",
      "--config.steps_per_epoch=10",
      "--config.pruning.end_fraction=0.5",
      f"--workdir={study_dir}",
      "--num_workers=2",
      "--analyze",
  )
  assert "models done 18/18" in proc.stdout and "FAILED" not in proc.stdout
  for prefix, name in (("distill_", "distill"), ("reweight_", "class_reweight"), ("eqloss_", "equalized_loss")):
    paths = sorted(glob.glob(os.path.join(study_dir, f"{prefix}sparsity90_seed*", f"{prefix}sparsity90_seed*.json")))
    assert len(paths) == 3
    metadata = json.load(open(paths[-1]))
    assert metadata["method"] == f"magnitude+{name}" and metadata["mitigation"] == name
    assert metadata["seed"] >= 9 and metadata["dense_seed"] in (0, 1, 2)  # a block of seeds of its own
  summary = json.load(open(os.path.join(study_dir, "analysis", "summary.json")))
  assert [c["population"] for c in summary["mitigations"]] == [
      "magnitude+distill",
      "magnitude+class_reweight",
      "magnitude+equalized_loss",
  ]
  for comparison in summary["mitigations"]:
    assert comparison["verdict"] in sig.VERDICTS and comparison["sentence"].startswith(comparison["mitigation"])
    assert comparison["pies_change_ci_low"] is not None
  report = open(os.path.join(study_dir, "analysis", "report.html")).read()
  assert "<h2>Mitigations compared</h2>" in report and "magnitude + distill 90%" in report


# ---------------------------------------------------------------------------------------------------------------------
# The verdict.


def test_mitigation_verdict_rule():
  assert sig.mitigation_verdict((0.01, 0.2), (-5, 3)) == sig.HELPED
  assert sig.mitigation_verdict((-0.1, 0.2), (-9, -1)) == sig.HELPED
  assert sig.mitigation_verdict((-0.2, -0.01), (-5, 3)) == sig.HURT
  assert sig.mitigation_verdict((-0.1, 0.1), (1, 9)) == sig.HURT
  assert sig.mitigation_verdict((0.01, 0.2), (1, 9)) == sig.MIXED
  assert sig.mitigation_verdict((-0.1, 0.1), (None, None)) == sig.NO_EFFECT
  assert sig.mitigation_verdict(None, (-3, 3)) == sig.NO_EFFECT


def _three_groups(rng, top1):
  order = rng.permutation(len(top1))
  return top1[order[:10]], top1[order[10:20]], top1[order[20:30]]


def _effect(dense, unmitigated, mitigated, labels, seed):
  rows_d, rows_p = sig.bootstrap_resamples(10, 10, 100, seed=seed)
  counts = [
      sig.bootstrap_pie_stability(dense, p, NUM_CLASSES, rows_d, rows_p, return_counts=True)[2]
      for p in (unmitigated, mitigated)
  ]
  return sig.mitigation_effect(
      *(sig.class_hits(p, labels, NUM_CLASSES) for p in (dense, unmitigated, mitigated)),
      np.bincount(labels, minlength=NUM_CLASSES),
      int(pie_stats.find_pies(dense, unmitigated).sum()),
      int(pie_stats.find_pies(dense, mitigated).sum()),
      *counts,
  )


def test_a_mitigation_that_changes_nothing_rarely_gets_a_verdict_on_real_models():
  """Three disjoint groups of 10 real dense digits models: dense, "unmitigated" and "mitigated", all alike."""
  data = np.load(FIXTURE)
  top1, labels = data["top1"].astype(np.int64), data["labels"].astype(np.int64)
  rng = np.random.default_rng(0)
  draws = 100
  verdicts = [_effect(*_three_groups(rng, top1), labels, seed)["verdict"] for seed in range(draws)]
  # Measured: 4.7% of 150 draws (7) with a verdict (5 "hurt", 2 "helped"); each interval at 97.5%.
  assert verdicts.count(sig.NO_EFFECT) >= 0.9 * draws, verdicts


def test_a_planted_harm_and_its_repair_get_their_verdicts():
  """Real models with a planted harm: the compressed populations lose 40% of their right answers on the digit 8. A
  mitigated population without that loss is "helped"; one with it, against an unmitigated one without, "hurt"."""
  data = np.load(FIXTURE)
  top1, labels = data["top1"].astype(np.int64), data["labels"].astype(np.int64)
  rng = np.random.default_rng(1)

  def harmed(predictions):
    out = predictions.copy()
    hit = (out == labels) & (labels == 8) & (rng.random(out.shape) < 0.4)
    out[hit] = 3
    return out

  helped = hurt = 0
  for seed in range(10):
    dense, first, second = _three_groups(rng, top1)
    helped += _effect(dense, harmed(first), second, labels, seed)["verdict"] == sig.HELPED
    hurt += _effect(dense, first, harmed(second), labels, seed)["verdict"] == sig.HURT
  assert helped >= 9 and hurt >= 9, (helped, hurt)
