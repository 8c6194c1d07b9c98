"""The Beam analysis writes exactly the files of the in-memory analysis: same bytes, for every table and summary.json.

Each case runs both on one study, the Beam pipeline in-process with small blocks and shards so that every study is
cut into several of each (ranks, random subsets and tie counts cross block boundaries). The pipeline runs on
FnApiRunner, the engine DirectRunner uses for batch pipelines: DirectRunner itself first tries to download the Prism
runner from GitHub, which a test must not depend on. The binary is run once with its default runner choice replaced
the same way, through the pass-through of Beam options.
"""

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

from pie import analysis
from pie import beam_analysis
from pie import predictions as predictions_lib
from pie import study as study_lib
from pie import variants
from pie.errors import PieError
from tests import fake_study
from tests.conftest import run_binary

OUTPUTS = (
    "pies.csv",
    "class_stats.csv",
    "exemplar_scores.csv",
    "pie_accuracy.csv",
    "difficulty.csv",
    "slice_stats.csv",
    "summary.json",
)
RUNNER = ("--runner=FnApiRunner",)


def _quiet(unused_message):
  pass


def _in_memory(study_dir, out_dir, **options):
  study = study_lib.load_study(study_dir, log=_quiet)
  analysis.analyze_study(study, out_dir, images=False, report=False, log=_quiet, **options)


def _beam(study_dir, out_dir, block_size=7, shard_rows=11, **options):
  return beam_analysis.analyze_study(
      study_dir, out_dir, pipeline_args=RUNNER, block_size=block_size, shard_rows=shard_rows, log=_quiet, **options
  )


def _assert_same_files(expected_dir, actual_dir):
  # Byte for byte, summary.json included: both analyses are given the same study_dir string, so not even the path
  # recorded in the summary differs.
  for name in OUTPUTS:
    with open(os.path.join(expected_dir, name)) as f:
      expected = f.read()
    with open(os.path.join(actual_dir, name)) as f:
      actual = f.read()
    assert actual == expected, name


def _write_population(
    study_dir, method, sparsity, seeds, labels, num_classes, flip, rng, twin_field=None, logits=False
):
  """Noisy copies of the labels, one prediction file per seed (a count, or the seeds), for any compression method;
  `twin_field` ("init_from", "source_model") records the dense model of the same seed as its twin; with `logits`,
  random logits too (the EL2N difficulty score reads them)."""
  for seed in (range(seeds) if isinstance(seeds, int) else seeds):
    twin = {twin_field: variants.model_name("dense", 0.0, seed)} if twin_field else {}
    noise = rng.random(len(labels)) < flip
    top1 = np.where(noise, rng.integers(0, num_classes, len(labels)), labels)
    name = variants.model_name(method, sparsity, seed)
    classes = (top1[:, None] + np.arange(3)[None, :]) % num_classes
    probs = np.tile(np.linspace(0.6, 0.1, 3, dtype=np.float32), (len(labels), 1))
    metadata = fake_study.fake_metadata(
        sparsity, seed, num_classes, len(labels), method=method, name=name, bits_per_weight=32.0 - seed, **twin
    )
    predictions_lib.write_predictions(
        os.path.join(study_dir, name, f"{name}.tfrecord"),
        np.arange(len(labels)),
        labels,
        classes,
        probs,
        metadata,
        logits=rng.normal(size=(len(labels), num_classes)).astype(np.float32) if logits else None,
    )


@pytest.mark.slow
def test_matches_the_in_memory_analysis_on_the_digits_study(tiny_study, tmp_path):
  _in_memory(tiny_study["dir"], str(tmp_path / "memory"))
  summary = _beam(tiny_study["dir"], str(tmp_path / "beam"), block_size=128, shard_rows=150)
  _assert_same_files(tmp_path / "memory", tmp_path / "beam")
  assert summary["bootstrap_resamples"] == 200 and "num_pies_stable_90" in summary["levels"][1]
  assert sorted(os.listdir(tmp_path / "beam")) == sorted(OUTPUTS)  # the work folder is gone


@pytest.mark.parametrize(
    "case",
    [
        "levels",
        "ties",
        "methods",
        "absent_class",
        "controls",
        "dense_only",
        "logits",
        "paired",
        "mitigations",
        "slices",
    ],
)
def test_matches_the_in_memory_analysis_on_fake_studies(case, tmp_path):
  study_dir = str(tmp_path / "study")
  rng = np.random.default_rng(7)
  if case == "levels":  # three pruned levels, the paper's normalization, another seed
    fake_study.write_study(
        study_dir, levels=(0.0, 0.5, 0.7, 0.9), seeds=4, num_examples=150, num_classes=5, flip=0.2, seed=3
    )
    options = dict(normalization="population", bootstrap_resamples=20, seed=5)
  elif case == "ties":  # two models per population: many tied modal labels
    fake_study.write_study(study_dir, levels=(0.0, 0.3), seeds=2, num_examples=80, num_classes=3, flip=0.5, seed=1)
    options = dict(bootstrap_resamples=10, alpha=0.2)
  elif case == "methods":  # populations of other methods: every table gains a `method` column
    labels = np.arange(90) % 4
    for method, sparsity, flip in (
        ("dense", 0.0, 0.1),
        ("magnitude", 0.5, 0.3),
        ("random", 0.5, 0.4),
        ("ptq_dynamic_int8", 0.0, 0.05),
    ):
      _write_population(study_dir, method, sparsity, 3, labels, 4, flip, rng)
    options = dict(bootstrap_resamples=15, power_effect=0.1)
  elif case == "controls":  # a replicate and a sham; levels of two sizes: the floor splits the pool two ways
    labels = np.arange(120) % 4
    for method, sparsity, seeds, flip in (
        ("dense", 0.0, 4, 0.2),
        ("dense_replicate", 0.0, range(4, 8), 0.2),
        ("sham", 0.001, 4, 0.2),
        ("magnitude", 0.5, 4, 0.3),
        ("magnitude", 0.9, 3, 0.5),
    ):
      _write_population(study_dir, method, sparsity, seeds, labels, 4, flip, rng)
    options = dict(bootstrap_resamples=10, noise_floor_splits=30, seed=2)
  elif case == "paired":  # fine-tuned from dense twins (one twin missing), derived, a replicate: paired columns
    labels = np.arange(110) % 5
    for method, sparsity, seeds, flip, twin_field in (
        ("dense", 0.0, 4, 0.2, None),
        ("dense_replicate", 0.0, range(4, 8), 0.2, None),
        ("magnitude", 0.5, 4, 0.3, "init_from"),
        ("magnitude", 0.9, range(1, 5), 0.5, "init_from"),  # seed 4 has no dense twin in the study
        ("ptq_dynamic_int8", 0.0, 4, 0.25, "source_model"),
    ):
      _write_population(study_dir, method, sparsity, seeds, labels, 5, flip, rng, twin_field)
    options = dict(bootstrap_resamples=10, noise_floor_splits=20, seed=1)
  elif case == "mitigations":  # mitigated populations beside the unmitigated one: summary.json `mitigations`
    labels = np.arange(100) % 4
    for method, sparsity, flip in (
        ("dense", 0.0, 0.1),
        ("magnitude", 0.9, 0.4),
        ("magnitude+distill", 0.9, 0.2),
        ("magnitude+equalized_loss", 0.9, 0.4),
    ):
      _write_population(study_dir, method, sparsity, 4, labels, 4, flip, rng)
    options = dict(bootstrap_resamples=15, noise_floor_splits=10)
  elif case == "logits":  # every export has logits: exemplar_scores.csv gains the EL2N score
    labels = np.arange(90) % 6
    for method, sparsity, flip in (("dense", 0.0, 0.2), ("magnitude", 0.9, 0.5)):
      _write_population(study_dir, method, sparsity, 4, labels, 6, flip, rng, logits=True)
    options = dict(bootstrap_resamples=5)
  elif case == "slices":  # two slice features (one value without examples), their pairs, overlapping class groups
    rng_slices = np.random.default_rng(11)
    codes = np.stack([rng_slices.integers(0, 2, 130), rng_slices.integers(0, 2, 130) * 2], axis=1)
    features = [
        {"name": "attributes/Male", "kind": "bool", "values": ["false", "true"]},
        {"name": "age", "kind": "int", "values": ["20", "40", "60"]},
    ]
    fake_study.write_study(
        study_dir,
        levels=(0.0, 0.5, 0.9),
        seeds=4,
        num_examples=130,
        num_classes=5,
        flip=0.2,
        slices=(features, codes),
        config={"name": "fake", "class_groups": {"low": [0, 1], "high": [3, 4], "ends": [0, 4]}},
    )
    options = dict(bootstrap_resamples=5, min_slice_size=20)
  elif case == "dense_only":  # nothing compared: the tables are headers, the summary holds the floor
    labels = np.arange(50) % 5
    _write_population(study_dir, "dense", 0.0, 6, labels, 5, 0.3, rng)
    options = dict(noise_floor_splits=25)
  else:  # class 5 has no example (NaN recall, a note in class_stats.csv); no bootstrap
    labels = np.arange(70) % 5
    for method, sparsity, flip in (("dense", 0.0, 0.3), ("magnitude", 0.8, 0.6)):
      _write_population(study_dir, method, sparsity, 3, labels, 6, flip, rng)
    options = dict(bootstrap_resamples=0)
  _in_memory(study_dir, str(tmp_path / "memory"), **options)
  _beam(study_dir, str(tmp_path / "beam"), **options)
  _assert_same_files(tmp_path / "memory", tmp_path / "beam")
  if case == "methods":
    assert "method" in open(tmp_path / "beam" / "exemplar_scores.csv").readline()
  summary = json.load(open(tmp_path / "beam" / "summary.json"))
  if case == "controls":
    assert summary["noise_floor"]["control"] == "dense_replicate"
    assert summary["noise_floor"]["half_splits"]["sizes"] == [4, 4]
    assert [lv.get("pies_excess") is not None for lv in summary["levels"]] == [False, False, False, True, True]
  if case == "logits":
    scores = pd.read_csv(tmp_path / "beam" / "exemplar_scores.csv")
    assert scores["dense_el2n"].notna().all() and (scores["dense_el2n"] > 0).all()
  if case == "levels":
    assert "normalization_warning" in summary
  assert summary["design"] == ("paired" if case == "paired" else "independent")
  assert len(summary["mitigations"]) == (2 if case == "mitigations" else 0)
  if case == "paired":
    assert [level.get("num_pairs") for level in summary["levels"]] == [None, 0, 4, 3, 4]
    assert "paired_p_value" in open(tmp_path / "beam" / "class_stats.csv").readline()
  else:  # every compressed model against the dense model of its seed, in the single-pair view only
    assert "paired_p_value" not in open(tmp_path / "beam" / "class_stats.csv").readline()
    for level in summary["levels"][1:]:
      assert "num_pairs" not in level
      assert level["single_pair"]["test"].startswith("one model against the dense model of its seed")
  if case == "slices":
    slices = pd.read_csv(tmp_path / "beam" / "slice_stats.csv", keep_default_na=False)
    # 2 levels x (2 + 3 feature values, 2 x 3 pairs, 3 groups); "40" has no example, small pairs are not tested.
    assert len(slices) == 2 * (5 + 6 + 3)
    assert summary["slices"]["features"] == ["attributes/Male", "age"] and summary["slices"]["num_slices"] == 14
    assert (slices.loc[slices["slice_value"] == "40", "num_examples"] == 0).all()


@pytest.mark.slow
def test_the_binary_matches_the_analysis_binary(tiny_study, tmp_path):
  # The tiny study was analysed by analysis.analyze (train.population --analyze) with the default options.
  out_dir = str(tmp_path / "beam")
  proc = run_binary(
      "analysis.beam_analyze",
      f"--study_dir={tiny_study['dir']}",
      f"--out_dir={out_dir}",
      "--block_size=200",
      *RUNNER,
      "--direct_num_workers=2",
  )
  for line in (
      "validated 9 models",
      "beam: 9 prediction files, 2 compared populations, 3 block(s)",
      "beam: pipeline finished",
      "level 0.9: 3 models",
      "noise floor: dense_replicate against dense",
      f"analysis written to {out_dir}",
  ):
    assert line in proc.stdout
  assert proc.stdout.count("read ") >= 9  # a line per prediction file read by the workers
  _assert_same_files(os.path.join(tiny_study["dir"], "analysis"), out_dir)


def test_a_bad_prediction_file_is_reported_like_the_in_memory_analysis(tmp_path):
  study_dir = str(tmp_path / "study")
  _, paths = fake_study.write_study(study_dir, seeds=2)
  bad = paths[3]
  fake_study.rewrite_records(bad, [])  # no records: the count check of read_predictions fails
  with pytest.raises(PieError) as in_memory:
    study_lib.load_study(study_dir, log=_quiet)
  with pytest.raises(PieError) as beam:
    _beam(study_dir, str(tmp_path / "out"))
  assert str(beam.value) == str(in_memory.value) and bad in str(beam.value)
  assert not os.path.exists(tmp_path / "out" / "pies.csv")
  assert os.listdir(tmp_path / "out") == []  # the work folder is removed on failure too


def test_labels_that_differ_between_files_are_refused(tmp_path):
  study_dir = str(tmp_path / "study")
  labels = np.arange(40) % 4
  fake_study.write_study(study_dir, seeds=2, num_examples=40)
  other = fake_study.write_model(study_dir, 0.5, 7, labels, (labels + 1) % 4, 4)
  with pytest.raises(PieError, match=f"{other}: labels differ from those of .* for the same example ids"):
    _beam(study_dir, str(tmp_path / "out"))


def test_bad_arguments(tmp_path, monkeypatch):
  with pytest.raises(PieError, match="no such study directory"):
    beam_analysis.analyze_study(str(tmp_path / "missing"), str(tmp_path / "out"), pipeline_args=RUNNER)
  with pytest.raises(PieError, match="--alfa: neither a flag of the analysis nor an Apache Beam pipeline option"):
    beam_analysis.pipeline_options(["--alfa=0.1"])
  with pytest.raises(PieError, match="unexpected argument 'stray'"):
    beam_analysis.pipeline_options(["stray"])
  assert beam_analysis.pipeline_options([]).get_all_options()["runner"] == "DirectRunner"
  assert beam_analysis.pipeline_options(["--project", "p"]).get_all_options()["project"] == "p"
  monkeypatch.setitem(sys.modules, "apache_beam", None)  # as if the extra were not installed
  with pytest.raises(PieError, match=r"needs apache_beam, which is not installed .*: pip install -e '\.\[beam\]'"):
    beam_analysis.analyze_study(str(tmp_path), str(tmp_path / "out"))
