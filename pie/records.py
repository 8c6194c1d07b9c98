"""TFRecord files of the predictions schema, written and read in bulk.

Writing: `encode_examples` builds the same bytes as `pie.predictions.serialize_example` (feature map in sorted key
order) with numpy, about 6x faster than serializing tf.train.Example protos one by one. It handles the non-negative
ids, labels and classes of the schema only.

Reading: `split_records` cuts a whole file held in memory into its records. tf.data pays a few microseconds per
record, more than parsing costs; a file whose CRC-32C is known (the export records it in the metadata) is checked
in one call, so its per-record checksums need not be.
"""

import struct

import google_crc32c
import numpy as np

# --- Vectorized serialization of the export schema -------------------------------------------------------------
# Building one tf.train.Example per row in Python costs ~15 us a record, more than a small model takes to predict
# it. The records of the schema are simple enough to encode with numpy instead: every record is a concatenation of
# byte "parts" (constant tags, varints, packed floats), so each part is a [n, width] byte matrix with a mask of the
# bytes it really uses, and the masked bytes of the concatenated matrices, read row by row, are the records one
# after another. The bytes are the protobuf wire encoding of the same tf.train.Example that
# `predictions.serialize_example` builds, with the feature map in sorted key order (protobuf leaves map order to
# the writer; Python's own serializer does not even keep it fixed between processes), so readers parse equal values.


def _const_part(n, data):
  row = np.frombuffer(data, np.uint8)
  return np.broadcast_to(row, (n, len(row))), np.ones((n, len(row)), bool)


def _varint_part(values):
  """Canonical (shortest) protobuf varints of non-negative integers [n]."""
  values = np.asarray(values, np.uint64)
  width = max(1, (int(values.max()).bit_length() + 6) // 7) if values.size else 1
  shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
  groups = (values[:, None] >> shifts) & np.uint64(0x7F)
  lengths = np.ones(len(values), np.int64)
  for j in range(1, width):
    lengths += values >= (np.uint64(1) << np.uint64(7 * j))
  mask = np.arange(width)[None, :] < lengths[:, None]
  more = np.arange(width)[None, :] < (lengths[:, None] - 1)
  return (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8), mask


def _concat(parts):
  return np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=1)


def _length(part):
  return part[1].sum(axis=1)


def _delimited(tag, part):
  """Field `tag` (length-delimited wire type) holding `part`: tag byte, varint length, then the bytes."""
  n = part[0].shape[0]
  return _concat([_const_part(n, bytes([tag])), _varint_part(_length(part)), part])


def _feature_entry(key, value_list_part, list_tag):
  """One entry of Features.feature (map<string, Feature>): key, then Feature{list_tag: XList{packed values}}."""
  n = value_list_part[0].shape[0]
  key_bytes = key.encode()
  feature = _delimited(list_tag, _delimited(0x0A, value_list_part))
  entry = _concat([_const_part(n, bytes([0x0A, len(key_bytes)]) + key_bytes), _delimited(0x12, feature)])
  return _delimited(0x0A, entry)


def _int64_values(values):
  values = np.asarray(values)
  if values.size and values.min() < 0:
    raise ValueError("the fast encoder handles non-negative int64 values only (ids, labels, classes)")
  return _concat([_varint_part(values[:, j]) for j in range(values.shape[1])])


def _float_values(values):
  values = np.ascontiguousarray(values, dtype="<f4")
  raw = values.view(np.uint8).reshape(len(values), -1)
  return raw, np.ones(raw.shape, bool)


def encode_examples(example_ids, labels, top_k_classes, top_k_probs, logits=None, slice_values=None):
  """Serialized tf.train.Examples of the export schema for a batch: (buffer bytes, int64 offsets [n + 1]).

  Record i is buffer[offsets[i]:offsets[i + 1]]; parsing it gives the values `predictions.serialize_example` would
  have stored for row i.
  """
  example_ids = np.asarray(example_ids, np.int64).reshape(-1, 1)
  n = len(example_ids)
  labels = np.asarray(labels, np.int64).reshape(n, 1)
  top_k_classes = np.asarray(top_k_classes, np.int64).reshape(n, -1)
  top_k_probs = np.asarray(top_k_probs, np.float32).reshape(n, -1)
  entries = [
      _feature_entry("example_id", _int64_values(example_ids), 0x1A),
      _feature_entry("label", _int64_values(labels), 0x1A),
  ]
  if logits is not None:
    entries.append(_feature_entry("logits", _float_values(np.asarray(logits, np.float32).reshape(n, -1)), 0x12))
  if slice_values is not None:
    entries.append(
        _feature_entry("slice_values", _int64_values(np.asarray(slice_values, np.int64).reshape(n, -1)), 0x1A)
    )
  entries += [
      _feature_entry("top_k_classes", _int64_values(top_k_classes), 0x1A),
      _feature_entry("top_k_probs", _float_values(top_k_probs), 0x12),
  ]
  matrix, mask = _delimited(0x0A, _concat(entries))
  offsets = np.zeros(n + 1, np.int64)
  np.cumsum(mask.sum(axis=1), out=offsets[1:])
  return matrix[mask].tobytes(), offsets


def write_examples(writer, example_ids, labels, top_k_classes, top_k_probs, logits=None, chunk=8192, slice_values=None):
  """Writes the records of `encode_examples` to an open tf.io.TFRecordWriter, `chunk` rows at a time.

  Chunks bound the encoder's byte matrices (rows x widest record), which matters with logits.
  """
  for start in range(0, len(example_ids), chunk):
    stop = start + chunk
    buffer, offsets = encode_examples(
        example_ids[start:stop],
        labels[start:stop],
        top_k_classes[start:stop],
        top_k_probs[start:stop],
        None if logits is None else logits[start:stop],
        None if slice_values is None else slice_values[start:stop],
    )
    view = memoryview(buffer)
    for i in range(len(offsets) - 1):
      writer.write(bytes(view[offsets[i] : offsets[i + 1]]))


def file_crc32c(data):
  """CRC-32C of a whole file's bytes (an int), as recorded in prediction metadata."""
  return int(google_crc32c.value(bytes(data)))


_HEADER = struct.Struct("<Q")


def split_records(data):
  """The records of a TFRecord file's bytes, as a list of bytes; ValueError if the framing does not add up.

  Framing per record: uint64 length, uint32 CRC of the length, the data, uint32 CRC of the data. The CRCs are not
  checked here (see the module docstring).
  """
  records, pos, end = [], 0, len(data)
  unpack, append = _HEADER.unpack_from, records.append
  while pos < end:
    if end - pos < 16:
      raise ValueError(f"{end - pos} stray bytes after record {len(records)}")
    (length,) = unpack(data, pos)
    start = pos + 12
    pos = start + length + 4
    if pos > end:
      raise ValueError(f"record {len(records)} claims {length} bytes, the file ends before")
    append(data[start : pos - 4])
  return records
