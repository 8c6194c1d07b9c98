"""Atomic file output: write to a temporary name beside the target, then rename, so that a reader (or a rerun) never
sees a half-written file. Paths may be local or any tf.io.gfile filesystem (e.g. gs://)."""

import contextlib
import json
import os
import uuid

import tensorflow as tf


def _tmp_name(path):
  return f"{path}.tmp-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path; on success it is renamed to `path`, on error removed."""
  tmp = _tmp_name(path)
  parent = os.path.dirname(path)
  if parent:
    tf.io.gfile.makedirs(parent)
  try:
    yield tmp
    tf.io.gfile.rename(tmp, path, overwrite=True)
  except BaseException:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
    raise


def write_text(path, text):
  with atomic_path(path) as tmp:
    with tf.io.gfile.GFile(tmp, "w") as f:
      f.write(text)


def write_bytes(path, data):
  with atomic_path(path) as tmp:
    with tf.io.gfile.GFile(tmp, "wb") as f:
      f.write(data)


def write_json(path, obj):
  write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
  if hasattr(value, "item"):  # numpy scalars
    return value.item()
  if hasattr(value, "tolist"):
    return value.tolist()
  raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_json(path):
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def makedirs(path):
  tf.io.gfile.makedirs(path)
