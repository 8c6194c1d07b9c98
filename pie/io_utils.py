"""Atomic file output: write to a temporary name beside the target, then rename, so that a reader (or a rerun) never
sees a half-written file. Paths may be local or any tf.io.gfile filesystem (e.g. gs://).

The file operations here (`exists`, `isdir`, `glob`, `open_file`, `file_size`, `remove`, `makedirs`) go through
tf.io.gfile for paths with a scheme (gs://, ram://...) and through the os module for local paths, so that the analysis
of local files never loads TensorFlow (seconds of start-up and hundreds of MiB).
"""

import contextlib
import glob as glob_lib
import json
import os
import uuid


def is_remote(path):
  """A path of a tf.io.gfile filesystem other than the local one (it has a scheme: gs://, ram://, ...)."""
  return "://" in os.fspath(path)


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only for remote paths)

  return tf.io.gfile


def exists(path):
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path):
  return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def glob(pattern):
  """Paths matching a pattern (hidden names too, as tf.io.gfile.glob matches them)."""
  return _gfile().glob(pattern) if is_remote(pattern) else glob_lib.glob(pattern, include_hidden=True)


def file_size(path):
  return _gfile().stat(path).length if is_remote(path) else os.path.getsize(path)


def remove(path):
  if is_remote(path):
    _gfile().remove(path)
  else:
    os.remove(path)


def open_file(path, mode="r"):
  """A file object, text (UTF-8) or binary ("b" in `mode`), like tf.io.gfile.GFile."""
  if is_remote(path):
    return _gfile().GFile(path, mode)
  return open(path, mode) if "b" in mode else open(path, mode, encoding="utf-8")


def _rename(source, target):
  if is_remote(target):
    _gfile().rename(source, target, overwrite=True)
  else:
    os.replace(source, target)


def _tmp_name(path):
  return f"{path}.tmp-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path; on success it is renamed to `path`, on error removed."""
  tmp = _tmp_name(path)
  parent = os.path.dirname(path)
  if parent:
    makedirs(parent)
  try:
    yield tmp
    _rename(tmp, path)
  except BaseException:
    if exists(tmp):
      remove(tmp)
    raise


def write_text(path, text):
  with atomic_path(path) as tmp:
    with open_file(tmp, "w") as f:
      f.write(text)


def write_bytes(path, data):
  with atomic_path(path) as tmp:
    with open_file(tmp, "wb") as f:
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
  with open_file(path) as f:
    return json.load(f)


def makedirs(path):
  if is_remote(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)
