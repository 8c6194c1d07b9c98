"""TFRecord files of the predictions schema, written and read in bulk.

Writing: `encode_examples` builds the same bytes as `pie.predictions.serialize_example` (feature map in sorted key
order) with numpy, about 6x faster than serializing tf.train.Example protos one by one. It handles the non-negative
ids, labels and classes of the schema only.

Reading: `split_records` cuts a whole file held in memory into its records. tf.data pays a few microseconds per
record, more than parsing costs; a file whose CRC-32C is known (the export records it in the metadata) is checked
in one call, so its per-record checksums need not be.
"""

import functools
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


# --- Vectorized reading of the export schema -------------------------------------------------------------------
# A file's records are found, checked and decoded with numpy over all records at once: per-record Python (slicing
# the records, tf.io.parse_example's per-record work, tf.data's per-record reads) cost more than everything else the
# analysis does with a record. The decoder walks the protobuf fields of every record in lockstep (a cursor per
# record), checking every tag, key and length on the way, so it accepts exactly the layout pie's writers produce (the
# feature map in sorted key order, packed lists) and refuses anything else: `decode_examples` then returns None and
# the caller parses the records with TensorFlow instead.

_LENGTH = np.dtype("<u8")
_MASK_DELTA = 0xA282EAD8
# The first key of the schema's records (sorted key order) with its tag and length bytes before it: where a record's
# data starts, give or take the varint of the record's length, in a file of pie's layout.
_FIRST_KEY = b"\x0a\x0aexample_id"


def _walk_offsets(data):
  """Record starts of a TFRecord file's bytes, found one header at a time (any layout)."""
  starts, pos, end = [], 0, len(data)
  unpack, append = _HEADER.unpack_from, starts.append
  while pos < end:
    if end - pos < 16:
      raise ValueError(f"{end - pos} stray bytes after record {len(starts)}")
    (length,) = unpack(data, pos)
    append(pos)
    pos += length + 16
    if pos > end:
      raise ValueError(f"record {len(starts) - 1} claims {length} bytes, the file ends before")
  return np.array(starts, dtype=np.int64)


def _lengths_at(buf, starts):
  """The uint64 length headers at `starts` (int64; the caller checks them against the file's size)."""
  if not len(starts):
    return np.zeros(0, np.int64)
  return _sliding(buf, "<u8")[starts].astype(np.int64)


def _chained(starts, lengths, size):
  """Whether the records at `starts` tile the file exactly, each header's length leading to the next record."""
  if not len(starts):
    return size == 0
  ends = starts + lengths + 16
  return bool(starts[0] == 0 and ends[-1] == size and np.all(lengths >= 0) and np.array_equal(ends[:-1], starts[1:]))


def record_offsets(data):
  """(starts, lengths) of the records of a TFRecord file's bytes, int64 [n] each: record i's data is
  data[starts[i] + 12 : starts[i] + 12 + lengths[i]]. ValueError if the framing does not add up.

  In a file of pie's layout the records are found at once, from where their first key sits, and the headers are then
  checked to chain from the first byte to the last exactly: the result is what walking the headers one by one finds.
  Any other file (or a key's bytes met inside a value, which breaks the chain) is walked header by header.
  """
  buf = np.frombuffer(data, np.uint8)
  size = len(buf)
  # Candidates: every 'x' (a rare byte in the records) that starts "xample_id" with the key's tag and length before.
  words = _sliding(buf, "<u8")
  key_start = np.flatnonzero(buf == _FIRST_KEY[3]) - 3
  key_start = key_start[(key_start >= 16) & (key_start + 4 < len(words))]
  for offset in (0, 4):  # the key's 12 bytes as two overlapping 8-byte words
    key_start = key_start[
        words[key_start + offset] == np.uint64(int.from_bytes(_FIRST_KEY[offset : offset + 8], "little"))
    ]
  # Before the key: the record's header (12 bytes), the Example's tag, the varint of its length (1 to 3 bytes: records
  # under 2 MiB), then the map entry's tag and length (1 byte: an entry holding one int64 has at most 30 bytes).
  last = key_start - 3  # the last byte of the Example's length varint
  width = 1 + (buf[last - 1] >= 0x80)
  width += (width == 2) & (buf[np.maximum(last - 2, 0)] >= 0x80)
  starts = last - width - 12
  starts = starts[starts >= 0]
  if len(starts):
    lengths = _lengths_at(buf, starts)
    if _chained(starts, lengths, size):
      return starts, lengths
  starts = _walk_offsets(data)
  return starts, _lengths_at(buf, starts)


def _masked(crc):
  """TFRecord's masked CRC-32C of uint32 CRCs (numpy, vectorized)."""
  crc = crc.astype(np.uint64)
  rotated = ((crc >> np.uint64(15)) | (crc << np.uint64(17))) & np.uint64(0xFFFFFFFF)
  return ((rotated + np.uint64(_MASK_DELTA)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _unmasked(masked):
  """The CRC-32Cs whose masked values (`_masked`) are given."""
  rotated = (masked.astype(np.uint64) - np.uint64(_MASK_DELTA)) & np.uint64(0xFFFFFFFF)
  return (((rotated >> np.uint64(17)) | (rotated << np.uint64(15))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


# --- CRC-32C arithmetic for checking many records in one call ----------------------------------------------------
# Without the CRC register's initial and final inversions, CRC-32C is linear over GF(2): with lin(X) the register
# after X from 0, lin(X || Y) = adv_|Y|(lin(X)) xor lin(Y), where adv_m is the linear map of m zero bytes on the
# register, and crc32c(X) = lin(X) xor crc32c(zeros(|X|)). A linear map of the 32-bit register is held as its 32
# column images (the images of 1 << b), and applied to many registers at once through four 256-entry tables.


def _crc_table():
  table = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    table = np.where(table & 1, (table >> np.uint32(1)) ^ np.uint32(0x82F63B78), table >> np.uint32(1))
  return table.astype(np.uint32)


_CRC_TABLE = _crc_table()
_BITS = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)


def _byte_tables(columns):
  """[4, 256] tables of a linear map given by its column images: map(v) = xor of table[k][byte k of v]."""
  bits = (np.arange(256)[:, None] >> np.arange(8)) & 1  # [byte value, bit]
  tables = np.zeros((4, 256), dtype=np.uint32)
  for k in range(4):
    for bit in range(8):
      tables[k] ^= np.where(bits[:, bit] == 1, columns[8 * k + bit], np.uint32(0)).astype(np.uint32)
  return tables


def _apply(tables, values):
  values = values.astype(np.uint32)
  out = tables[0][values & 0xFF]
  for k in range(1, 4):
    out ^= tables[k][(values >> np.uint32(8 * k)) & 0xFF]
  return out


def _zero_bytes_map(count):
  """Column images of adv_count (the register after `count` zero bytes), by squaring the map of one byte."""
  step = (_CRC_TABLE[_BITS & 0xFF] ^ (_BITS >> np.uint32(8))).astype(np.uint32)  # one zero byte
  result = _BITS.copy()  # the identity
  while count:
    if count & 1:
      result = _apply(_byte_tables(step), result)
    step = _apply(_byte_tables(step), step)
    count >>= 1
  return result


@functools.lru_cache(maxsize=16)
def _combination_tables(width, levels):
  """The byte tables of adv_width^(2^k) for k < levels: the shifts of the combination tree of `_records_agree`."""
  shift, tables = _zero_bytes_map(width), []
  for _ in range(levels):
    tables.append(_byte_tables(shift))
    shift = _apply(tables[-1], shift)
  return tables


def _records_agree(padded, claimed, width):
  """Whether lin of every row of `padded` ([n, width] bytes, each a record's data after leading zeros) is the
  corresponding `claimed` value, checked at once: the CRC of all rows together must equal the claims combined as the
  CRC combines its parts (a tree of pairwise combinations, adv_width^(2^k) at level k). One record that does not match
  always fails it (adv is invertible); several could cancel by chance as in any 32-bit checksum."""
  n = len(claimed)
  padded.setflags(write=False)  # google_crc32c reads read-only buffers in place
  together = google_crc32c.value(padded) ^ google_crc32c.value(bytes(n * width))
  levels = max(n - 1, 0).bit_length()
  combined = np.zeros(1 << levels, dtype=np.uint32)
  combined[len(combined) - n :] = claimed  # leading zeros change nothing
  for tables in _combination_tables(width, levels):
    combined = _apply(tables, combined[0::2]) ^ combined[1::2]
  return int(combined[0]) == together


def check_record_crcs(data, starts, lengths, chunk_bytes=16 << 20):
  """Checks every record's two CRC-32Cs (of its length header and of its data), as tf.data does; ValueError naming
  the first record whose bytes do not match. For files whose metadata records no whole-file CRC-32C.

  The data CRCs are checked a chunk of records at a time (`_records_agree`); only a chunk that fails is checked record
  by record, to name the record.
  """
  buf = np.frombuffer(data, np.uint8)
  if not len(starts):
    return
  words = _sliding(buf, "<u4")
  stored_length_crc = words[starts + 8]
  distinct, inverse = np.unique(lengths, return_inverse=True)
  length_crc = np.array([google_crc32c.value(_HEADER.pack(int(v))) for v in distinct], np.uint32)
  bad = _masked(length_crc)[inverse] != stored_length_crc
  if bad.any():
    raise ValueError(f"the CRC-32C of the length of record {int(np.argmax(bad))} does not match its bytes")
  ends = starts + 12 + lengths
  claimed = _unmasked(words[ends])
  zeros_crc = np.array([google_crc32c.value(bytes(int(v))) for v in distinct], np.uint32)
  claimed ^= zeros_crc[inverse]  # lin of each record's data, as its stored CRC claims it
  width = int(lengths.max())
  # Row i: the `width` bytes that end where record i's data ends (a sliding view of the bytes after `width` zeros),
  # then the bytes before the record's data zeroed.
  front = np.zeros(width + len(buf), dtype=np.uint8)
  front[width:] = buf
  windows = np.lib.stride_tricks.as_strided(front, (len(buf) + 1, width), (1, 1), writeable=False)
  per_chunk = max(1, chunk_bytes // max(width, 1))
  for start in range(0, len(starts), per_chunk):
    stop = min(start + per_chunk, len(starts))
    padded = windows[ends[start:stop]]
    for length in distinct[distinct < width]:  # the bytes before each record's data, a few distinct lengths
      padded[lengths[start:stop] == length, : width - length] = 0
    if not _records_agree(padded, claimed[start:stop], width):
      value = google_crc32c.value
      for i in range(start, stop):
        if _masked(np.array([value(data[starts[i] + 12 : ends[i]])])) != buf[ends[i] : ends[i] + 4].view("<u4"):
          raise ValueError(f"the CRC-32C of record {i} does not match its bytes")


class _NotOurLayout(Exception):
  pass


_HIGH_BITS = np.uint64(0x8080808080808080)


def _sliding(buf, dtype):
  """A view of `buf` holding, at index p, the little-endian `dtype` value of bytes p, p + 1, ... (no copy)."""
  dtype = np.dtype(dtype)
  count = max(len(buf) - dtype.itemsize + 1, 0)
  return np.ndarray((count,), dtype, buffer=buf, offset=0, strides=(1,))


class _Cursors:
  """One read position per record in a file's bytes, moved field by field in lockstep. Any byte that is not what pie's
  layout has there raises _NotOurLayout (a read past the file's end raises IndexError).

  Multi-byte reads go through a sliding uint64 view of the bytes (8 bytes at any offset in one gather), so that each
  step is a handful of numpy operations over all records whatever the widths of their varints.
  """

  def __init__(self, buf, pos):
    self.buf, self.pos = buf, pos
    self.words = _sliding(buf, "<u8")

  def tag_and_length(self, tag, limit):
    """A tag byte, then a length varint that must stay inside `limit` (the end of what encloses it): the cursor moves
    to the content, whose ends are returned."""
    if not np.all(self.buf[self.pos] == tag):
      raise _NotOurLayout
    self.pos = self.pos + 1
    length = self.varints(1)[:, 0]
    if np.any(length > np.uint64(len(self.buf))):
      raise _NotOurLayout
    end = self.pos + length.astype(np.int64)
    if np.any(end > limit):
      raise _NotOurLayout
    return end

  def varints(self, count):
    """`count` consecutive varints per record (each under 2**49, at most 7 bytes: pie writes no negative or larger
    value), uint64 [n, count]."""
    first = self.buf[self.pos]
    if count == 1 and not np.any(first & 0x80):  # one byte each: lengths, small values
      self.pos = self.pos + 1
      return first.astype(np.uint64)[:, None]
    # A window of 8 bytes (one varint) or 16 (several) from the cursor; each varint is taken from the low word, then
    # the window shifts down, and is read again once some record has used more than 8 of its bytes.
    low = self.words[self.pos]
    high = self.words[self.pos + 8] if count > 1 else None
    values = np.empty((len(self.pos), count), np.uint64)
    consumed = np.zeros(len(self.pos), np.int64)
    for j in range(count):
      stops = ~low & _HIGH_BITS  # the high bit of each byte that ends a varint
      mask = ((stops & (~stops + np.uint64(1))) << np.uint64(1)) - np.uint64(1)  # up to its lowest stop: one varint
      width = np.bitwise_count(mask) >> 3
      longest = int(width.max())
      if longest > 7 or not np.all(stops):
        raise _NotOurLayout  # a varint of 8 bytes or more
      word = low & mask
      value = word & np.uint64(0x7F)
      for group in range(1, longest):  # 7 bits per byte, gathered down
        value |= (word >> np.uint64(group)) & np.uint64(0x7F << (7 * group))
      values[:, j] = value
      consumed += width
      if j + 1 == count:
        break
      if consumed.max() > 8:  # the next varints may start in the high word: read the window again
        low, high = self.words[self.pos + consumed], self.words[self.pos + consumed + 8]
      else:
        bits = width.astype(np.uint64) << np.uint64(3)
        low = (low >> bits) | (high << (np.uint64(64) - bits))
        high = high >> bits
    self.pos = self.pos + consumed
    return values

  def same_bytes(self, count):
    """The next `count` bytes, the same in every record (a key), as bytes."""
    first = self.buf[self.pos[0] : self.pos[0] + count].tobytes()
    for start in range(0, count, 8):
      chunk = first[start : start + 8]
      mask = np.uint64((1 << (8 * len(chunk))) - 1)
      expected = np.uint64(int.from_bytes(chunk, "little"))
      if not np.all((self.words[self.pos + start] & mask) == expected):
        raise _NotOurLayout
    self.pos = self.pos + count
    return first

  def value_header(self, list_tag, end):
    """The header of a map entry's value: the Feature (tag 0x12), its Int64List or FloatList, its packed values
    (0x0A), each ending at `end`; the cursor moves to the first value."""
    size = end - self.pos
    if size.max() < 0x80 and size.min() >= 6:  # one-byte lengths: the six bytes in one read
      expected = (
          np.uint64(0x12 | list_tag << 16 | 0x0A << 32)
          | ((size - 2).astype(np.uint64) << np.uint64(8))
          | ((size - 4).astype(np.uint64) << np.uint64(24))
          | ((size - 6).astype(np.uint64) << np.uint64(40))
      )
      if not np.all((self.words[self.pos] & np.uint64(0xFFFFFFFFFFFF)) == expected):
        raise _NotOurLayout
      self.pos = self.pos + 6
      return
    for tag in (0x12, list_tag, 0x0A):
      if not np.array_equal(self.tag_and_length(tag, end), end):
        raise _NotOurLayout


# The feature kinds of the schema: (the Feature's list field tag, numpy dtype of its values).
INT64, FLOAT = (0x1A, np.int64), (0x12, np.float32)


def _packed_values(cursor, end, kind, width, chunk=2048):
  """`width` packed values per record, ending exactly at `end` (per record)."""
  if kind == FLOAT:
    if np.any(end - cursor.pos != 4 * width):
      raise _NotOurLayout
    floats = _sliding(cursor.buf, "<f4")
    offsets = 4 * np.arange(width)
    values = np.empty((len(end), width), np.float32)
    for start in range(0, len(end), chunk):  # bounds the index matrix (logits: thousands of values per record)
      values[start : start + chunk] = floats[cursor.pos[start : start + chunk, None] + offsets]
    cursor.pos = end
    return values
  values = np.concatenate([cursor.varints(min(8, width - j)) for j in range(0, width, 8)], axis=1)
  if not np.array_equal(cursor.pos, end):
    raise _NotOurLayout
  return values.view(np.int64)


def _short_entry(cursor, data_end, features):
  """An entry whose lengths are all one byte in every record (every entry but logits), checked in a few 8-byte reads:
  [0x0A, entry length, 0x0A, key length, key, 0x12, feature length, list tag, list length, 0x0A, packed length], each
  length following from the entry's. Returns (key, values or None) or None when some length is longer (then
  `_entry` reads it field by field)."""
  buf, pos = cursor.buf, cursor.pos
  first = int(pos[0])
  if first + 4 > len(buf) or buf[first] != 0x0A or buf[first + 2] != 0x0A or buf[first + 3] >= 0x80:
    return None
  key = buf[first + 4 : first + 4 + int(buf[first + 3])].tobytes()
  name = key.decode("utf-8", "replace")
  entry = buf[pos + 1].astype(np.int64)  # each record's entry length
  if entry.max() >= 0x80:
    return None
  entry_end = pos + 2 + entry
  if np.any(entry_end > data_end):
    raise _NotOurLayout
  # The header's bytes: constants, and the lengths that follow from the entry's (byte offset, value per record).
  template = bytearray([0x0A, 0, 0x0A, len(key)]) + key
  lengths = [(1, entry)]
  if name in features:
    packed = entry - len(key) - 8  # the bytes of the packed values
    if packed.min() < 0:
      raise _NotOurLayout
    tag = len(template)
    template += bytes([0x12, 0, features[name][0][0], 0, 0x0A, 0])
    lengths += [(tag + 1, packed + 4), (tag + 3, packed + 2), (tag + 5, packed)]
  for offset in range(0, len(template), 8):
    chunk = template[offset : offset + 8]
    expected = np.uint64(int.from_bytes(chunk, "little"))
    for at, value in lengths:
      if offset <= at < offset + 8:
        expected = expected | (value.astype(np.uint64) << np.uint64(8 * (at - offset)))
    mask = np.uint64((1 << (8 * len(chunk))) - 1)
    if not np.all((cursor.words[pos + offset] & mask) == expected):
      raise _NotOurLayout
  if name not in features:
    cursor.pos = entry_end
    return key, None
  cursor.pos = pos + len(template)
  kind, width = features[name]
  return key, _packed_values(cursor, entry_end, kind, width)


def _entry(cursor, data_end, features, previous):
  """Reads one map entry of Features.feature: (its key, its values or None for a key not asked for)."""
  short = _short_entry(cursor, data_end, features)
  if short is not None:
    if short[0] <= previous:
      raise _NotOurLayout  # keys out of order or repeated: not pie's writer
    return short
  entry_end = cursor.tag_and_length(0x0A, data_end)  # Features.feature, one map entry
  head = cursor.buf[cursor.pos[0] : cursor.pos[0] + 2]
  if len(head) < 2 or head[0] != 0x0A or head[1] >= 0x80:
    raise _NotOurLayout
  key = cursor.same_bytes(2 + int(head[1]))[2:]  # the key's tag, length and bytes, the same in every record
  if key <= previous:
    raise _NotOurLayout  # keys out of order or repeated: not pie's writer
  name = key.decode("utf-8", "replace")
  if name not in features:
    cursor.pos = entry_end
    return key, None
  kind, width = features[name]
  cursor.value_header(kind[0], entry_end)
  return key, _packed_values(cursor, entry_end, kind, width)


def decode_examples(data, starts, lengths, features):
  """The values of the records of pie's layout, {key: [n, width] array}, or None when the records are laid out
  otherwise (parse them with TensorFlow then).

  `features` maps each key to read to (kind, width), kind INT64 or FLOAT: every record must hold each of them with
  exactly `width` values; keys the records hold beyond them are skipped, as tf.io.parse_example skips them.
  """
  buf = np.frombuffer(data, np.uint8)
  if len(starts) == 0:
    return {key: np.zeros((0, width), kind[1]) for key, (kind, width) in features.items()}
  data_end = starts + 12 + lengths
  cursor = _Cursors(buf, starts + 12)
  out = {}
  try:
    if not np.array_equal(cursor.tag_and_length(0x0A, data_end), data_end):  # Example.features
      raise _NotOurLayout
    previous = b""
    while True:
      done = cursor.pos == data_end
      if done.all():
        break
      if done.any():
        raise _NotOurLayout
      previous, values = _entry(cursor, data_end, features, previous)
      if values is not None:
        out[previous.decode()] = values
  except (_NotOurLayout, IndexError):
    return None
  if set(out) != set(features):
    return None
  return out
