"""BUILD declares a target for every module of the library and the binaries."""
import glob
import os

from tests.conftest import REPO


def _build_sources():
  """Evaluates BUILD with stand-ins for the Bazel rules and returns every file named in a target's srcs."""
  sources = set()

  def rule(**kwargs):
    sources.update(kwargs.get("srcs", []))

  def bazel_glob(patterns):
    return sorted(os.path.relpath(p, REPO) for pattern in patterns for p in glob.glob(os.path.join(REPO, pattern)))

  namespace = {"load": lambda *args: None, "package": lambda **kwargs: None, "requirement": lambda name: name,
               "glob": bazel_glob, "py_library": rule, "py_binary": rule, "py_test": rule}
  exec(compile(open(os.path.join(REPO, "BUILD")).read(), "BUILD", "exec"), namespace)  # pylint: disable=exec-used
  return sources


def test_every_module_belongs_to_a_target():
  sources = _build_sources()
  modules = sorted(os.path.relpath(p, REPO) for folder in ("pie", "train", "analysis")
                   for p in glob.glob(os.path.join(REPO, folder, "**", "*.py"), recursive=True))
  missing = [m for m in modules if m not in sources]
  assert not missing, f"modules with no Bazel target in BUILD: {missing}"


def test_every_listed_source_exists():
  missing = [s for s in _build_sources() if not os.path.exists(os.path.join(REPO, s))]
  assert not missing, f"BUILD names files that do not exist: {missing}"


def test_every_test_file_is_a_target():
  sources = _build_sources()
  tests = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "tests", "test_*.py")))
  assert set(tests) <= sources
