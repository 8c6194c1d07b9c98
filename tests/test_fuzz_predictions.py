"""Property-based tests of the prediction reader and the study loader against damaged files.

The property, for every damage hypothesis generates: reading either raises a PieError whose message names the file,
or returns exactly the arrays that were written. Never a TensorFlow or Python traceback, never a wrong number.
"""

import contextlib
import json
import os
import tempfile

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pie import predictions as predictions_lib
from pie import records
from pie import study as study_lib
from pie.errors import PieError
from tests import fake_study

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextlib.contextmanager
def _tmpdir():
  # A fresh directory per hypothesis example (pytest's tmp_path is shared by all examples of one test).
  with tempfile.TemporaryDirectory(prefix="pie-fuzz-") as d:
    yield d


@st.composite
def exports(draw):
  """The arrays of one valid export: a few examples, a few classes, top-k probabilities from a softmax."""
  n = draw(st.integers(1, 12))
  num_classes = draw(st.integers(2, 6))
  k = draw(st.integers(1, min(3, num_classes)))
  seed = draw(st.integers(0, 2**16))
  with_logits = draw(st.booleans())
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(n, num_classes)).astype(np.float32)
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  classes = np.argsort(-probs, axis=1, kind="stable")[:, :k]
  return {
      "ids": rng.permutation(n),
      "labels": rng.integers(0, num_classes, n),
      "classes": classes,
      "probs": np.take_along_axis(probs, classes, axis=1).astype(np.float32),
      "logits": logits if with_logits else None,
      "num_classes": num_classes,
  }


def _write(directory, export, name="m", **metadata_overrides):
  path = os.path.join(directory, name, f"{name}.tfrecord")
  meta = fake_study.fake_metadata(0.5, 1, export["num_classes"], len(export["ids"]), **metadata_overrides)
  predictions_lib.write_predictions(
      path, export["ids"], export["labels"], export["classes"], export["probs"], meta, logits=export["logits"]
  )
  return path


def _without_file_checksum(path):
  """Drops file_crc32c from the metadata, as a writer that does not record it would: the reader then checks the
  per-record CRCs (tf.data) instead of the whole file's."""
  meta_path = predictions_lib.metadata_path(path)
  meta = json.load(open(meta_path))
  del meta["file_crc32c"]
  json.dump(meta, open(meta_path, "w"))


def _names_file(message, path):
  return path in message or predictions_lib.metadata_path(path) in message


def _read_or_error(path, export):
  """'error' (a PieError naming the file) or 'read' (and then the arrays equal what was written)."""
  with_logits = export["logits"] is not None
  try:
    pred = predictions_lib.read_predictions(path, with_logits=with_logits)
  except PieError as e:
    assert _names_file(str(e), path), str(e)
    return "error"
  order = np.argsort(export["ids"])
  np.testing.assert_array_equal(pred.example_ids, np.arange(len(order)))
  np.testing.assert_array_equal(pred.labels, export["labels"][order])
  np.testing.assert_array_equal(pred.top_k_classes, export["classes"][order])
  np.testing.assert_array_equal(pred.top_k_probs, export["probs"][order])
  if with_logits:
    np.testing.assert_array_equal(pred.logits, export["logits"][order])
  return "read"


@FUZZ
@given(exports(), st.data())
def test_truncation_at_any_byte_is_an_error_naming_the_file(export, data):
  with _tmpdir() as d:
    path = _write(d, export)
    if data.draw(st.booleans(), label="per-record checksums only"):
      _without_file_checksum(path)
    raw = open(path, "rb").read()
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    with open(path, "wb") as f:
      f.write(raw[:cut])
    assert _read_or_error(path, export) == "error"


@FUZZ
@given(exports(), st.data())
def test_flipped_byte_in_the_records_is_an_error(export, data):
  with _tmpdir() as d:
    path = _write(d, export)
    if data.draw(st.booleans(), label="per-record checksums only"):
      _without_file_checksum(path)
    raw = bytearray(open(path, "rb").read())
    position = data.draw(st.integers(0, len(raw) - 1), label="position")
    raw[position] ^= data.draw(st.integers(1, 255), label="xor")
    with open(path, "wb") as f:
      f.write(bytes(raw))
    # The metadata holds the whole file's CRC-32C, and every record carries CRCs of its length and its payload: one
    # changed byte cannot read back silently either way.
    assert _read_or_error(path, export) == "error"


@FUZZ
@given(exports(), st.data())
def test_damaged_metadata_json_is_an_error_or_harmless(export, data):
  with _tmpdir() as d:
    path = _write(d, export)
    meta_path = predictions_lib.metadata_path(path)
    raw = bytearray(open(meta_path, "rb").read())
    if data.draw(st.booleans(), label="truncate"):
      raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    else:
      raw[data.draw(st.integers(0, len(raw) - 1), label="position")] ^= data.draw(st.integers(1, 255), label="xor")
    with open(meta_path, "wb") as f:
      f.write(bytes(raw))
    _read_or_error(path, export)


_WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.just(10**12),
    st.floats(-2, 2),
    st.just(float("nan")),
    st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=3),
    st.just({}),
)
_FIELDS = predictions_lib.REQUIRED_METADATA + ("file_bytes", "file_crc32c", "has_logits", "schema_version", "name")


@FUZZ
@given(exports(), st.sampled_from(_FIELDS), st.one_of(st.just("<deleted>"), _WRONG_VALUES))
def test_missing_or_mistyped_metadata_field_is_an_error_or_harmless(export, field, value):
  with _tmpdir() as d:
    path = _write(d, export)
    meta_path = predictions_lib.metadata_path(path)
    meta = json.load(open(meta_path))
    if value == "<deleted>":
      meta.pop(field, None)
    else:
      meta[field] = value
    with open(meta_path, "w") as f:
      json.dump(meta, f)
    outcome = _read_or_error(path, export)
    if field in predictions_lib.REQUIRED_METADATA and value == "<deleted>":
      assert outcome == "error"


def test_metadata_that_is_not_an_object(tmp_path):
  export = {
      "ids": np.arange(3),
      "labels": np.zeros(3, int),
      "classes": np.zeros((3, 1), int),
      "probs": np.ones((3, 1), np.float32),
      "logits": None,
      "num_classes": 2,
  }
  path = _write(str(tmp_path), export)
  for text in ("[1, 2]", "5", '"metadata"', "null"):
    open(predictions_lib.metadata_path(path), "w").write(text)
    with pytest.raises(PieError, match="m.json: not a metadata object"):
      predictions_lib.read_predictions(path)


def _feature(kind, values):
  if kind == "int":
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
  if kind == "float":
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in values]))


_KINDS = {"example_id": "int", "label": "int", "top_k_classes": "int", "top_k_probs": "float", "logits": "float"}
_MUTATIONS = (
    "drop_feature",
    "retype_feature",
    "longer_list",
    "shorter_list",
    "duplicate_id",
    "missing_record",
    "id_out_of_range",
    "label_out_of_range",
    "class_out_of_range",
    "negative_prob",
    "nan_prob",
    "not_an_example",
    "extra_feature",
)


@FUZZ
@given(exports(), st.sampled_from(_MUTATIONS), st.data())
def test_bad_records_are_an_error_naming_the_file(export, mutation, data):
  """Records written by hand with one defect, and metadata that matches the file (so only the records are wrong)."""
  n = len(export["ids"])
  assume(n >= 2 or mutation not in ("duplicate_id", "missing_record"))
  features = []
  for i in range(n):
    row = {
        "example_id": [export["ids"][i]],
        "label": [export["labels"][i]],
        "top_k_classes": list(export["classes"][i]),
        "top_k_probs": list(export["probs"][i]),
    }
    if export["logits"] is not None:
      row["logits"] = list(export["logits"][i])
    features.append(row)
  victim = data.draw(st.integers(0, n - 1), label="record")
  key = data.draw(st.sampled_from(sorted(features[victim])), label="feature")
  row = features[victim]
  kinds = {k: _KINDS[k] for k in row}
  if mutation == "drop_feature":
    del row[key]
  elif mutation == "retype_feature":
    kinds[key] = data.draw(st.sampled_from(sorted({"int", "float", "bytes"} - {_KINDS[key]})), label="kind")
  elif mutation == "longer_list":
    row[key] = row[key] + [0]
  elif mutation == "shorter_list":
    row[key] = row[key][:-1]
  elif mutation == "duplicate_id":
    row["example_id"] = [export["ids"][(victim + 1) % n]]
  elif mutation == "missing_record":
    features.pop(victim)
  elif mutation == "id_out_of_range":
    row["example_id"] = [data.draw(st.sampled_from([-1, n, n + 7, 2**40]), label="id")]
  elif mutation == "label_out_of_range":
    row["label"] = [data.draw(st.sampled_from([-1, export["num_classes"]]), label="label")]
  elif mutation == "class_out_of_range":
    row["top_k_classes"] = [export["num_classes"]] + row["top_k_classes"][1:]
  elif mutation == "negative_prob":
    row["top_k_probs"] = [-0.25] + row["top_k_probs"][1:]
  elif mutation == "nan_prob":
    row["top_k_probs"] = [float(data.draw(st.sampled_from(["nan", "inf", "-inf"])))] + row["top_k_probs"][1:]
  with _tmpdir() as d:
    path = os.path.join(d, "m.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
      for i, row in enumerate(features):
        if mutation == "not_an_example" and i == victim:
          writer.write(b"\x08\x96\x01 not a tf.train.Example")
          continue
        feature = {k: _feature(kinds.get(k, "int"), v) for k, v in row.items()}
        if mutation == "extra_feature" and i == victim:
          feature["comment"] = _feature("bytes", ["written by another tool"])
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    meta = dict(
        fake_study.fake_metadata(0.5, 1, export["num_classes"], n),
        num_examples=n,
        top_k=int(export["classes"].shape[1]),
        has_logits=export["logits"] is not None,
        file_bytes=os.path.getsize(path),
    )
    if data.draw(st.booleans(), label="whole-file checksum"):  # both read paths: in-memory split and tf.data
      meta["file_crc32c"] = records.file_crc32c(open(path, "rb").read())
    json.dump(meta, open(predictions_lib.metadata_path(path), "w"))
    predictions_lib.read_metadata(path)  # the metadata is sound: whatever fails below fails on the records
    outcome = _read_or_error(path, export)
    # An unknown feature is harmless (ignored); every other defect must be caught.
    assert outcome == ("read" if mutation == "extra_feature" else "error")


_STUDY_DEFECTS = ("dataset", "split", "num_classes", "num_examples", "labels", "config_hash", "duplicate_ids")


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_STUDY_DEFECTS), st.sampled_from([0.0, 0.5]), st.integers(0, 5))
def test_a_study_mixing_incompatible_files_is_an_error_naming_the_odd_file(defect, level, odd_seed):
  """Four good models and one odd one (at either level, sorted anywhere): load_study names the odd file."""
  num_classes, n = 4, 30
  labels = np.arange(n) % num_classes
  with _tmpdir() as d:
    for sparsity in (0.0, 0.5):
      for seed in (1, 3):
        fake_study.write_model(d, sparsity, seed, labels, labels, num_classes)
    odd_labels, odd_top1, overrides, odd_classes = labels, labels, {}, num_classes
    if defect in ("dataset", "split"):
      overrides[defect] = "cifar10" if defect == "dataset" else "validation"
    elif defect == "config_hash":
      overrides[defect] = "0123456789abcdef"
    elif defect == "num_classes":
      odd_classes = 5
    elif defect == "num_examples":
      odd_labels = odd_top1 = labels[:-1]
    elif defect == "labels":
      odd_labels = np.roll(labels, 1)
    odd = fake_study.write_model(d, level, odd_seed * 2, odd_top1, odd_labels, odd_classes, **overrides)
    if defect == "duplicate_ids":
      pred = predictions_lib.read_predictions(odd)
      ids = pred.example_ids.copy()
      ids[-1] = ids[0]
      predictions_lib.write_predictions(odd, ids, pred.labels, pred.top_k_classes, pred.top_k_probs, pred.metadata)
    with pytest.raises(PieError) as error:
      study_lib.load_study(d, log=lambda m: None)
    assert odd in str(error.value), str(error.value)
