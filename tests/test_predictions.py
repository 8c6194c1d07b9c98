"""The predictions export: schema round trip and every bad file a clear PieError naming it."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import pie
from pie import predictions as predictions_lib
from pie import records
from pie.errors import PieError
from tests import fake_study


def _write(tmp_path, n=20, num_classes=5, logits=True):
  rng = np.random.default_rng(0)
  logits_array = rng.normal(size=(n, num_classes)).astype(np.float32)
  probs = tf.nn.softmax(logits_array).numpy()
  order = np.argsort(-probs, axis=1)[:, :3]
  top_probs = np.take_along_axis(probs, order, axis=1)
  labels = rng.integers(0, num_classes, n)
  ids = rng.permutation(n)  # written out of order: the reader sorts by example_id
  path = str(tmp_path / "m" / "m.tfrecord")
  meta = fake_study.fake_metadata(0.5, 1, num_classes, n)
  predictions_lib.write_predictions(path, ids, labels, order, top_probs, meta, logits=logits_array if logits else None)
  return path, ids, labels, order, top_probs, logits_array


def test_round_trip(tmp_path):
  path, ids, labels, order, top_probs, logits = _write(tmp_path)
  pred = pie.read_predictions(path, with_logits=True)
  inverse = np.argsort(ids)
  np.testing.assert_array_equal(pred.example_ids, np.arange(20))
  np.testing.assert_array_equal(pred.labels, labels[inverse])
  np.testing.assert_array_equal(pred.top_k_classes, order[inverse])
  np.testing.assert_allclose(pred.top_k_probs, top_probs[inverse], rtol=1e-6)
  np.testing.assert_allclose(pred.logits, logits[inverse], rtol=1e-6)
  np.testing.assert_array_equal(pred.top1, order[inverse, 0])
  assert pred.metadata["num_examples"] == 20 and pred.metadata["top_k"] == 3 and pred.metadata["has_logits"]
  assert pred.metadata["file_bytes"] == os.path.getsize(path)
  assert pred.metadata["file_crc32c"] == records.file_crc32c(open(path, "rb").read())


def test_both_read_paths_agree(tmp_path):
  """The in-memory split (file checksum known) and tf.data (per-record checksums) read the same records."""
  path, *_ = _write(tmp_path)
  data = open(path, "rb").read()
  assert records.split_records(data) == [r.numpy() for r in tf.data.TFRecordDataset(path)]
  fast = pie.read_predictions(path, with_logits=True, batch_size=7)
  meta_path = predictions_lib.metadata_path(path)
  meta = json.load(open(meta_path))
  del meta["file_crc32c"]
  json.dump(meta, open(meta_path, "w"))
  slow = pie.read_predictions(path, with_logits=True, batch_size=7)
  for field in ("example_ids", "labels", "top_k_classes", "top_k_probs", "logits"):
    np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))


def test_vectorized_encoder_matches_the_proto_serializer():
  rng = np.random.default_rng(3)
  n, k = 300, 4
  ids, labels = rng.permutation(n) * 997, rng.integers(0, 2**40, n)  # varints of one to six bytes
  classes, probs = rng.integers(0, 100_000, (n, k)), rng.random((n, k)).astype(np.float32)
  logits = rng.normal(size=(n, 6)).astype(np.float32)
  buffer, offsets = records.encode_examples(ids, labels, classes, probs, logits)
  for i in range(n):
    expected = tf.train.Example.FromString(
        predictions_lib.serialize_example(ids[i], labels[i], classes[i], probs[i], logits[i])
    )
    assert tf.train.Example.FromString(buffer[offsets[i] : offsets[i + 1]]) == expected, i


def test_split_records_refuses_bad_framing():
  with pytest.raises(ValueError, match="stray bytes"):
    records.split_records(b"\x00" * 5)
  with pytest.raises(ValueError, match="claims 255 bytes"):
    records.split_records(b"\xff" + b"\x00" * 15)


def test_records_are_plain_tf_examples(tmp_path):
  path, *_ = _write(tmp_path, logits=False)
  record = next(iter(tf.data.TFRecordDataset(path)))
  example = tf.train.Example.FromString(record.numpy())
  assert set(example.features.feature) == {"example_id", "label", "top_k_classes", "top_k_probs"}


def test_logits_requested_but_absent(tmp_path):
  path, *_ = _write(tmp_path, logits=False)
  with pytest.raises(PieError, match="logits were requested but this export has none"):
    pie.read_predictions(path, with_logits=True)


def test_truncated_file(tmp_path):
  path, *_ = _write(tmp_path)
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])
  with pytest.raises(PieError, match=r"m\.tfrecord.*(truncated|records)"):
    pie.read_predictions(path)


def test_missing_metadata(tmp_path):
  path, *_ = _write(tmp_path)
  os.remove(path[: -len(".tfrecord")] + ".json")
  with pytest.raises(PieError, match="no metadata"):
    pie.read_predictions(path)


def test_bad_metadata_json(tmp_path):
  path, *_ = _write(tmp_path)
  open(path[: -len(".tfrecord")] + ".json", "w").write("{not json")
  with pytest.raises(PieError, match=r"m\.json: not valid JSON"):
    pie.read_predictions(path)


def test_metadata_missing_field(tmp_path):
  path, *_ = _write(tmp_path)
  meta_path = path[: -len(".tfrecord")] + ".json"
  meta = json.load(open(meta_path))
  del meta["num_classes"]
  json.dump(meta, open(meta_path, "w"))
  with pytest.raises(PieError, match=r"missing metadata fields \['num_classes'\]"):
    pie.read_predictions(path)


def test_duplicate_ids(tmp_path):
  path = str(tmp_path / "d.tfrecord")
  ids = np.array([0, 1, 1, 3])
  predictions_lib.write_predictions(
      path, ids, np.zeros(4), np.zeros((4, 1), int), np.ones((4, 1)), fake_study.fake_metadata(0, 0, 2, 4)
  )
  with pytest.raises(PieError, match="example ids are not 0..3"):
    pie.read_predictions(path)


def test_nan_refused_on_write(tmp_path):
  with pytest.raises(PieError, match="NaN"):
    predictions_lib.write_predictions(
        str(tmp_path / "n.tfrecord"), [0], [0], [[0]], [[np.nan]], fake_study.fake_metadata(0, 0, 2, 1)
    )
  assert not os.listdir(tmp_path)  # nothing half-written


def test_nan_in_file(tmp_path):
  path = str(tmp_path / "n.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(predictions_lib.serialize_example(0, 0, [1], [float("nan")]))
  json.dump(dict(fake_study.fake_metadata(0, 0, 2, 1), num_examples=1, top_k=1), open(str(tmp_path / "n.json"), "w"))
  with pytest.raises(PieError, match=r"n\.tfrecord: NaN"):
    pie.read_predictions(path)


def test_wrong_list_length(tmp_path):
  path = str(tmp_path / "w.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(predictions_lib.serialize_example(0, 0, [1, 0], [0.5, 0.4]))
  json.dump(dict(fake_study.fake_metadata(0, 0, 2, 1), num_examples=1, top_k=3), open(str(tmp_path / "w.json"), "w"))
  with pytest.raises(PieError, match=r"w\.tfrecord: records do not match the prediction schema"):
    pie.read_predictions(path)


def test_class_out_of_range(tmp_path):
  path = str(tmp_path / "c.tfrecord")
  predictions_lib.write_predictions(path, [0], [7], [[0]], [[1.0]], fake_study.fake_metadata(0, 0, 2, 1))
  with pytest.raises(PieError, match=r"label outside \[0, 2\)"):
    pie.read_predictions(path)
