"""Shared fixtures. `import pie` first: it sets TF_USE_LEGACY_KERAS before anything imports TensorFlow."""

import os
import subprocess
import sys

import pie  # noqa: F401
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny study: 2 levels x 3 seeds x 1 epoch on digits (the 90% level reaches its target within the epoch).
TINY_STUDY_FLAGS = (
    "--config=configs/digits.py",
    "--config.sparsity_levels=(0.0,0.9)",
    "--config.num_seeds=3",
    "--config.num_epochs=2",
    "--config.pruning.end_fraction=0.5",
)


def run_binary(module, *args, check=True, timeout=600, env=None):
  """Runs `python -m module args` from the repository root; returns the CompletedProcess (text output)."""
  proc = subprocess.run(
      [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
  )
  if check and proc.returncode != 0:
    raise AssertionError(
        f"{module} {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
        f"stderr:\n{proc.stderr[-4000:]}"
    )
  return proc


@pytest.fixture(scope="module")
def browser():
  """Headless Chromium (tests/browser.py), one per test module; skips (or fails under CI) without it."""
  from tests import browser as browser_lib  # pylint: disable=import-outside-toplevel

  yield from browser_lib.launch()


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
  """A study trained and analysed by the real binaries, shared by the tests that only read it."""
  study_dir = str(tmp_path_factory.mktemp("tiny_study"))
  proc = run_binary("train.population", *TINY_STUDY_FLAGS, f"--workdir={study_dir}", "--num_workers=2", "--analyze")
  return {"dir": study_dir, "stdout": proc.stdout, "stderr": proc.stderr}


def digits_config(**overrides):
  """The digits config with overrides given as dotted names, e.g. digits_config(**{"pruning.end_fraction": 0.5})."""
  sys.path.insert(0, REPO)
  from configs import digits  # pylint: disable=g-import-not-at-top

  return override(digits.get_config(), **overrides)


def override(config, **overrides):
  """Sets dotted-name fields of a ConfigDict in place and returns it."""
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config
