"""Config files (configs/*.py, a user's own): loaded by path, as the binaries' --config loads them.

A config built on another one loads its sibling by path, so that it works whether or not the repository is on
sys.path:

  from pie import config_files

  def get_config():
    config = config_files.sibling(__file__, "digits")
    config.name = "digits_methods"
    ...
"""

import importlib.util
import os

from pie.errors import PieError


def load_module(path):
  """The module of the config file at `path`; a PieError naming the file when it is missing or fails to load."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise PieError(f"{path}: no such config file", parameter="config")
  spec = importlib.util.spec_from_file_location(f"pie_config_{abs(hash(os.path.abspath(path)))}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-exception-caught  (a user's file: any error is a bad config)
    raise PieError(f"{path}: the config file fails to load ({type(e).__name__}: {e})", parameter="config") from None
  if not hasattr(module, "get_config"):
    raise PieError(f"{path}: a config file must define get_config()", parameter="config")
  return module


def load(path, *args):
  """get_config(*args) of the config file at `path` (`args`: e.g. the variant of configs/fashion_mnist.py)."""
  return load_module(path).get_config(*args)


def sibling(config_file, name, *args):
  """get_config(*args) of `<name>.py` in the folder of `config_file` (a config's `__file__`)."""
  return load(os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py"), *args)
