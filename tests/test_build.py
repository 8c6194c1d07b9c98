"""BUILD declares a target for every module of the library and the binaries, and every file the library ships."""

import glob
import os
import runpy

import setuptools

from tests.conftest import REPO


def _build_sources(attribute="srcs"):
  """Evaluates BUILD with stand-ins for the Bazel rules and returns every file named in a target's srcs (or data)."""
  sources = set()

  def rule(**kwargs):
    sources.update(kwargs.get(attribute, []))

  def bazel_glob(patterns):
    return sorted(os.path.relpath(p, REPO) for pattern in patterns for p in glob.glob(os.path.join(REPO, pattern)))

  namespace = {
      "load": lambda *args: None,
      "package": lambda **kwargs: None,
      "requirement": lambda name: name,
      "glob": bazel_glob,
      "py_library": rule,
      "py_binary": rule,
      "py_test": rule,
  }
  exec(compile(open(os.path.join(REPO, "BUILD")).read(), "BUILD", "exec"), namespace)  # pylint: disable=exec-used
  return sources


def test_every_module_belongs_to_a_target():
  sources = _build_sources()
  modules = sorted(
      os.path.relpath(p, REPO)
      for folder in ("pie", "train", "analysis")
      for p in glob.glob(os.path.join(REPO, folder, "**", "*.py"), recursive=True)
  )
  missing = [m for m in modules if m not in sources]
  assert not missing, f"modules with no Bazel target in BUILD: {missing}"


def test_every_listed_source_exists():
  missing = [s for s in _build_sources() if not os.path.exists(os.path.join(REPO, s))]
  assert not missing, f"BUILD names files that do not exist: {missing}"


def test_every_test_file_is_a_target():
  sources = _build_sources()
  tests = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "tests", "test_*.py")))
  assert set(tests) <= sources


def test_library_data_files_are_shipped(monkeypatch):
  # The report inlines its CSS and JavaScript from package files: a build or a wheel without them breaks the report.
  files = sorted(
      os.path.relpath(p, REPO)
      for p in glob.glob(os.path.join(REPO, "pie", "**", "*"), recursive=True)
      if os.path.isfile(p) and not p.endswith((".py", ".pyc"))
  )
  assert "pie/report/report.css" in files and "pie/report/report.js" in files
  assert sorted(set(files) - _build_sources("data")) == []
  setup_arguments = {}
  monkeypatch.setattr(setuptools, "setup", setup_arguments.update)
  monkeypatch.chdir(REPO)
  runpy.run_path(os.path.join(REPO, "setup.py"))
  packaged = {
      os.path.join(*package.split("."), name)
      for package, names in setup_arguments["package_data"].items()
      for name in names
  }
  assert sorted(set(files) - packaged) == []
