"""The shape of the code: pie's modules import each other without a cycle, and methods are named only by the registry.

Every import between pie's modules counts, those inside functions too: a lazy import that closes a cycle still ties
the two modules together. Method names ("dense", "2:4", "ptq_full_int8", ...) appear as literals only in the registry
(pie/variants.py); other modules ask the registry about a method's behaviour or use its constants. configs/ and
tests/ name methods freely, as users do.
"""

import ast
import glob
import os
import subprocess
import sys

import pytest

from pie import variants
from tests.conftest import REPO

REGISTRY = "pie/variants.py"
# Modules the registry may import: below it, so that every other module can import the registry.
REGISTRY_IMPORTS = {"pie.errors", "pie.mitigation", "pie.pruning", "pie.quantization"}
# Words of other vocabularies spelled like a method: "random" is also the random-sample subset of pie_accuracy.csv,
# always listed beside the "pie" and "non_pie" subsets.
OTHER_VOCABULARIES = {"random": {"pie", "non_pie"}}


def _module_name(path):
  parts = os.path.relpath(path, REPO)[: -len(".py")].split(os.sep)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _pie_modules():
  """{module name: path} of every module of the pie package (subpackages included)."""
  paths = glob.glob(os.path.join(REPO, "pie", "**", "*.py"), recursive=True)
  return {_module_name(p): p for p in sorted(paths)}


def _resolve(name, modules):
  """The module an imported name lives in: the name itself when it is a module, else its parent package."""
  while name not in modules and "." in name:
    name = name.rsplit(".", 1)[0]
  return name


def _imports(module, path, modules):
  """The pie modules `module` imports, wherever the import statement stands (module level or in a function)."""
  package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
  found = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      found.update(_resolve(a.name, modules) for a in node.names if a.name == "pie" or a.name.startswith("pie."))
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        source = f"{base}.{node.module}" if node.module else base
      else:
        source = node.module or ""
      if source != "pie" and not source.startswith("pie."):
        continue
      found.update(_resolve(f"{source}.{a.name}", modules) for a in node.names)
  found.discard(module)
  return found


def import_graph():
  modules = _pie_modules()
  return {module: _imports(module, path, modules) for module, path in modules.items()}


def find_cycle(graph):
  """One cycle of a directed graph as a list of nodes [a, b, ..., a], or None when it is acyclic."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def method_literals(source, filename="<source>", names=tuple(variants.METHOD_ORDER)):
  """[(line, literal)] of the string literals in `source` that spell a method name, outside docstrings and outside
  the other vocabularies (`OTHER_VOCABULARIES`)."""
  tree = ast.parse(source, filename)
  parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
  found = []
  for node in ast.walk(tree):
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names):
      continue
    parent = parents.get(node)
    if isinstance(parent, ast.Expr):  # a docstring, or a bare string that does nothing
      continue
    siblings = []
    if isinstance(parent, (ast.Tuple, ast.List, ast.Set)):
      siblings = parent.elts
    elif isinstance(parent, ast.Dict) and any(key is node for key in parent.keys):
      siblings = parent.keys
    words = {s.value for s in siblings if isinstance(s, ast.Constant) and isinstance(s.value, str)}
    if words & OTHER_VOCABULARIES.get(node.value, set()):
      continue
    found.append((node.lineno, node.col_offset, node.value))
  return [(line, literal) for line, _, literal in sorted(found)]


def test_the_import_graph_of_pie_has_no_cycle():
  graph = import_graph()
  assert {"pie", "pie.variants", "pie.training", "pie.model_dir", "pie.ptq"} <= set(graph)
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle in pie/: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"b2", "c"}, "b2": set(), "c": {"b"}}) == ["b", "c", "b"]


def test_lazy_imports_are_edges_of_the_graph(tmp_path):
  pkg = tmp_path / "pie"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "low.py").write_text("def f():\n  from pie import high  # lazy\n  return high\n")
  (pkg / "high.py").write_text("from pie.low import f\nfrom . import low\n")
  modules = {"pie": str(pkg / "__init__.py"), "pie.low": str(pkg / "low.py"), "pie.high": str(pkg / "high.py")}
  graph = {m: _imports(m, p, modules) for m, p in modules.items()}
  assert graph == {"pie": set(), "pie.low": {"pie.high"}, "pie.high": {"pie.low"}}
  assert find_cycle(graph) == ["pie.high", "pie.low", "pie.high"]


def test_the_registry_imports_only_modules_below_it():
  graph = import_graph()
  assert graph["pie.variants"] <= REGISTRY_IMPORTS, graph["pie.variants"] - REGISTRY_IMPORTS
  for module in REGISTRY_IMPORTS:  # and those import nothing that imports the registry back
    assert "pie.variants" not in graph[module]


def _build_targets():
  """{target name: srcs} of BUILD, evaluated with stand-ins for the Bazel rules."""
  targets = {}

  def rule(**kwargs):
    targets[kwargs["name"]] = kwargs.get("srcs", [])

  namespace = {
      "load": lambda *args: None,
      "package": lambda **kwargs: None,
      "requirement": lambda name: name,
      "glob": lambda patterns: [],
      "py_library": rule,
      "py_binary": rule,
      "py_test": rule,
  }
  exec(compile(open(os.path.join(REPO, "BUILD")).read(), "BUILD", "exec"), namespace)  # pylint: disable=exec-used
  return targets


def test_the_statistics_import_only_the_statistics():
  """BUILD's pie_stats target (no TensorFlow) depends on nothing else of pie: its modules import only each other."""
  stats_modules = {_module_name(os.path.join(REPO, src)) for src in _build_targets()["pie_stats"]}
  graph = import_graph()
  for module in sorted(stats_modules):
    assert graph[module] <= stats_modules, (module, graph[module] - stats_modules)


@pytest.mark.slow
def test_import_pie_and_the_registry_load_no_tensorflow():
  code = (
      "import sys, pie, pie.variants, pie.stats, pie.significance, pie.simulate\n"
      "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', "
      "'tensorflow_model_optimization'))\n"
      "assert not loaded, loaded\n"
  )
  subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)


def test_no_method_name_outside_the_registry():
  found = []
  for folder in ("pie", "train", "analysis"):
    for path in sorted(glob.glob(os.path.join(REPO, folder, "**", "*.py"), recursive=True)):
      relative = os.path.relpath(path, REPO)
      if relative == REGISTRY:
        continue
      found += [f"{relative}:{line}: {literal!r}" for line, literal in method_literals(open(path).read(), path)]
  assert not found, (
      "method names outside pie/variants.py; ask the registry (e.g. variants.get_variant(m)."
      "checks_sparsity, variants.is_dense(m)) or use its constants:\n" + "\n".join(found)
  )


def test_the_method_name_check_sees_what_it_should():
  source = '''"""A docstring may say "dense"."""
def f(method, level):
  """Or "magnitude" here."""
  if method == "qat" or method in ("2:4", "random"):
    return {"dense_replicate": 1}[method]
  key = ("dense", 0.0)
  subsets = {"pie": 1, "random": 2, "non_pie": 3}
  order = ("pie", "random", "non_pie")
  return f"{method} is not 'sham'", g(method="ptq_full_int8")
'''
  assert method_literals(source) == [
      (4, "qat"),
      (4, "2:4"),
      (4, "random"),
      (5, "dense_replicate"),
      (6, "dense"),
      (9, "ptq_full_int8"),
  ]


@pytest.mark.slow
def test_the_analysis_of_local_files_loads_no_tensorflow(tmp_path):
  """The analysis binary reads pie's prediction files with numpy and writes with the os module: TensorFlow's seconds
  of start-up and hundreds of MiB are paid only for remote paths, records of another layout, images and exports."""
  from tests import fake_study  # pylint: disable=import-outside-toplevel

  fake_study.write_study(str(tmp_path / "study"), levels=(0.0, 0.5), seeds=3, num_examples=60, num_classes=5)
  code = (
      "import sys\n"
      "import analysis.analyze\n"
      "from pie import analysis\n"
      f"analysis.run(study_dir={str(tmp_path / 'study')!r}, images=False, report=False, bootstrap_resamples=5, "
      "log=lambda m: None)\n"
      "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', "
      "'tensorflow_model_optimization'))\n"
      "assert not loaded, loaded\n"
  )
  subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
  assert (tmp_path / "study" / "analysis" / "summary.json").exists()
