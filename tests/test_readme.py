"""The README's quick start: two commands, the second exactly what CI runs."""

import os
import re

from tests.conftest import REPO


def _quick_start_commands():
  text = open(os.path.join(REPO, "README.md")).read()
  match = re.search(r"^## Quick start\s*\n+```[a-z]*\n(.*?)```", text, re.S | re.M)
  assert match, "README.md needs a 'Quick start' heading followed by one fenced code block"
  return [line for line in match.group(1).splitlines() if line.strip()]


def test_quick_start_has_two_commands():
  commands = _quick_start_commands()
  assert len(commands) == 2
  assert "train.population" in commands[0] and "--analyze" in commands[0] and "configs/digits.py" in commands[0]
  assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
  ci = open(os.path.join(REPO, ".ci", "run")).read().splitlines()
  assert _quick_start_commands()[1] in ci
