"""The output contract (pie/outputs.py): pies.tfrecord's one writer and reader."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import pie
from pie import analysis
from pie import outputs
from pie.errors import PieError


def _pies_table(rows):
  return pd.DataFrame([{"sparsity": sparsity, "example_id": example_id, "label": label, "dense_modal": label,
                        "pruned_modal": (label + 1) % 10, "dense_modal_share": 0.75, "pruned_modal_share": 0.5}
                       for sparsity, example_id, label in rows])


def _images(ids, shape=(8, 8, 1)):
  rng = np.random.default_rng(0)
  return {i: rng.integers(0, 256, shape, dtype=np.uint8) for i in ids}


def test_pie_images_round_trip(tmp_path):
  path = str(tmp_path / outputs.PIES_TFRECORD)
  table = _pies_table([(0.5, 3, 7), (0.9, 3, 7), (0.9, 11, 2)])
  images = _images([3, 11])
  outputs.write_pie_images(path, table, images)
  records = outputs.read_pie_records(path)
  assert [sorted(r) for r in records] == [sorted(name for name, _ in outputs.PIE_IMAGE_FEATURES)] * 3
  for record, row in zip(records, table.itertuples(index=False)):
    assert record["sparsity"] == pytest.approx(row.sparsity, abs=1e-7)  # float32 in the file
    assert (record["example_id"], record["label"], record["dense_modal"], record["pruned_modal"]) == (
        row.example_id, row.label, row.dense_modal, row.pruned_modal)
    assert record["image"].startswith(b"\x89PNG")
  decoded = pie.read_pie_images(path)
  for record, row in zip(decoded, table.itertuples(index=False)):
    np.testing.assert_array_equal(record["image"], images[row.example_id])
  # One reader, under all the names scripts use.
  assert pie.read_pie_images is analysis.read_pie_images is outputs.read_pie_images


def test_pie_images_are_serialized_deterministically(tmp_path):
  # Protobuf's default order of map entries is random per process; in canonical form the bytes depend only on the
  # content, so a rerun of the same analysis writes the same file.
  path = str(tmp_path / outputs.PIES_TFRECORD)
  outputs.write_pie_images(path, _pies_table([(0.9, 1, 4), (0.9, 2, 5)]), _images([1, 2]))
  for raw in tf.data.TFRecordDataset(path):
    raw = raw.numpy()
    assert raw == tf.train.Example.FromString(raw).SerializeToString(deterministic=True)


def test_damaged_pie_images_are_named(tmp_path):
  path = tmp_path / outputs.PIES_TFRECORD
  outputs.write_pie_images(str(path), _pies_table([(0.9, 1, 4), (0.9, 2, 5)]), _images([1, 2]))
  path.write_bytes(path.read_bytes()[:-30])
  with pytest.raises(PieError, match=f"{path} is truncated or corrupt .*rerun the analysis"):
    outputs.read_pie_records(path)

  other = tmp_path / "other.tfrecord"
  with tf.io.TFRecordWriter(str(other)) as writer:
    feature = {"sparsity": tf.train.Feature(float_list=tf.train.FloatList(value=[0.9]))}
    writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  with pytest.raises(PieError, match=f"{other}: record 0 has no feature 'example_id'"):
    outputs.read_pie_records(other)
