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


# --- The numpy reader: the same arrays as TensorFlow's parser, every damaged record caught ------------------------


def _tensorflow_arrays(path, with_logits=False):
  """What tf.io.parse_example makes of a file's records (the reader's fallback), sorted by example id."""
  meta = predictions_lib.read_metadata(path)
  data, starts, lengths = predictions_lib._checked_records(path, meta)
  features = {
      "example_id": (records.INT64, 1),
      "label": (records.INT64, 1),
      "top_k_classes": (records.INT64, meta["top_k"]),
      "top_k_probs": (records.FLOAT, meta["top_k"]),
  }
  if with_logits:
    features["logits"] = (records.FLOAT, meta["num_classes"])
  if meta.get("slice_features"):
    features["slice_values"] = (records.INT64, len(meta["slice_features"]))
  arrays = predictions_lib._parse_with_tensorflow(path, data, starts, lengths, features, batch_size=7)
  order = np.argsort(arrays["example_id"][:, 0])
  return {key: value[order] for key, value in arrays.items()}


@pytest.mark.parametrize("logits", [False, True])
def test_numpy_decoder_matches_tensorflow(tmp_path, logits):
  """Varints of one to five bytes (ids, labels, classes), 1,000 classes with logits (entries longer than 127 bytes),
  slice features: the decoder reads what TensorFlow parses, and reads it itself (no fallback)."""
  rng = np.random.default_rng(5)
  n, k, num_classes = 300, 5, 1000
  ids = rng.permutation(n) * 4001  # up to 1.2 million: three-byte varints
  labels = rng.integers(0, num_classes, n)
  classes = rng.integers(0, num_classes, (n, k))
  probs = rng.random((n, k)).astype(np.float32)
  path = str(tmp_path / "m.tfrecord")
  meta = dict(fake_study.fake_metadata(0.5, 1, num_classes, n), num_examples=n)
  slice_features = [
      {"name": "a", "kind": "int", "values": ["x", "y", "z"]},
      {"name": "b", "kind": "int", "values": ["u", "v"]},
  ]
  with tf.io.TFRecordWriter(path) as writer:
    records.write_examples(
        writer,
        ids,
        labels,
        classes,
        probs,
        rng.normal(size=(n, num_classes)).astype(np.float32) if logits else None,
        slice_values=rng.integers(0, 2, (n, 2)),
    )
  data = open(path, "rb").read()
  meta.update(top_k=k, has_logits=logits, slice_features=slice_features, schema_version=2, file_bytes=len(data))
  json.dump(meta, open(str(tmp_path / "m.json"), "w"))
  starts, lengths = records.record_offsets(data)
  wanted = {
      "example_id": (records.INT64, 1),
      "label": (records.INT64, 1),
      "top_k_classes": (records.INT64, k),
      "top_k_probs": (records.FLOAT, k),
      "slice_values": (records.INT64, 2),
  }
  if logits:
    wanted["logits"] = (records.FLOAT, num_classes)
  decoded = records.decode_examples(data, starts, lengths, wanted)
  assert decoded is not None  # pie's own layout is decoded by numpy
  expected = _tensorflow_arrays(path, with_logits=logits)
  order = np.argsort(decoded["example_id"][:, 0])
  for key, value in expected.items():
    assert decoded[key].dtype == value.dtype and decoded[key].shape == value.shape, key
    np.testing.assert_array_equal(decoded[key][order], value, err_msg=key)


def _entry(name, setter):
  """The bytes of one entry of Features.feature (tag, length, key and value), as the proto serializer writes it."""
  example = tf.train.Example()
  setter(example.features.feature[name])
  data = example.SerializeToString()
  return data[2:] if data[1] < 0x80 else data[3:]  # after the Example's own tag and length


def _varint(value):
  out = bytearray()
  while True:
    out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
    value >>= 7
    if not value:
      return bytes(out)


def test_records_of_another_layout_are_parsed_by_tensorflow(tmp_path):
  """Keys in another order than pie's writer's, and an extra feature: the decoder declines, TensorFlow parses, and
  the arrays are the ones written."""
  path = str(tmp_path / "o.tfrecord")
  rng = np.random.default_rng(2)
  n = 40
  labels, classes = rng.integers(0, 4, n), rng.integers(0, 4, (n, 2))
  probs = rng.random((n, 2)).astype(np.float32)
  serialized = []
  for i in range(n):
    entries = [
        _entry("top_k_probs", lambda f, i=i: f.float_list.value.extend(probs[i].tolist())),
        _entry("zz_extra", lambda f: f.bytes_list.value.append(b"ignored")),
        _entry("label", lambda f, i=i: f.int64_list.value.append(int(labels[i]))),
        _entry("top_k_classes", lambda f, i=i: f.int64_list.value.extend(classes[i].tolist())),
        _entry("example_id", lambda f, i=i: f.int64_list.value.append(i)),
    ]
    features = b"".join(entries)
    serialized.append(b"\x0a" + _varint(len(features)) + features)
  with tf.io.TFRecordWriter(path) as writer:
    for record in serialized:
      writer.write(record)
  assert tf.train.Example.FromString(serialized[3]).features.feature["label"].int64_list.value[0] == labels[3]
  data = open(path, "rb").read()
  starts, lengths = records.record_offsets(data)
  assert records.decode_examples(data, starts, lengths, {"label": (records.INT64, 1)}) is None
  json.dump(dict(fake_study.fake_metadata(0, 0, 4, n), num_examples=n, top_k=2), open(str(tmp_path / "o.json"), "w"))
  pred = pie.read_predictions(path)
  np.testing.assert_array_equal(pred.labels, labels)
  np.testing.assert_array_equal(pred.top_k_classes, classes)
  np.testing.assert_array_equal(pred.top_k_probs, probs)


def test_record_offsets_find_what_walking_the_headers_finds(tmp_path):
  path, *_ = _write(tmp_path, n=500, logits=False)
  data = open(path, "rb").read()
  starts, lengths = records.record_offsets(data)
  walked = records._walk_offsets(data)
  np.testing.assert_array_equal(starts, walked)
  assert [data[s + 12 : s + 12 + n] for s, n in zip(starts, lengths)] == records.split_records(data)
  # The first key's bytes inside a value break the chain of candidates: the headers are then walked.
  trap = records._FIRST_KEY + b"\x00" * 4
  with_trap = bytearray(data)
  first = int(starts[1]) + 12 + int(lengths[1]) - 4 * 3 - len(trap)  # inside the last record's probabilities... of #1
  with_trap[first : first + len(trap)] = trap
  starts2, _ = records.record_offsets(bytes(with_trap))
  np.testing.assert_array_equal(starts2, walked)
  with pytest.raises(ValueError, match="stray bytes"):
    records.record_offsets(data + b"\x00" * 5)


def test_every_damaged_record_is_caught_without_the_file_checksum(tmp_path):
  """Files without file_crc32c: a flipped bit in any record's length, data or CRC is refused, naming the record."""
  path, *_ = _write(tmp_path, n=200, logits=True)
  meta_path = predictions_lib.metadata_path(path)
  meta = json.load(open(meta_path))
  del meta["file_crc32c"]
  json.dump(meta, open(meta_path, "w"))
  data = open(path, "rb").read()
  starts, lengths = records.record_offsets(data)
  records.check_record_crcs(data, starts, lengths)  # intact: no error
  for record in (0, 77, 199):
    # The length's CRC, the data's first and middle byte, the data's CRC; a length itself breaks the framing.
    for offset in (9, 12, 12 + int(lengths[record]) // 2, 12 + int(lengths[record]) + 2, 3):
      damaged = bytearray(data)
      damaged[int(starts[record]) + offset] ^= 0x04
      with pytest.raises(ValueError, match=f"record {record} " if offset != 3 else "record"):
        records.check_record_crcs(bytes(damaged), *records.record_offsets(bytes(damaged)))
  damaged = bytearray(data)
  damaged[int(starts[120]) + 20] ^= 0x01
  open(path, "wb").write(bytes(damaged))
  with pytest.raises(PieError, match=r"m\.tfrecord: truncated or corrupt TFRecord"):
    pie.read_predictions(path, with_logits=True)
