"""Configs load through ml_collections' config_flags and say how they are run."""

import importlib.util
import os

import ml_collections
import pytest

from tests.conftest import REPO

CONFIGS = sorted(f for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".py") and f != "__init__.py")


def _load(name):
  spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(REPO, "configs", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_expected_configs_exist():
  assert {"digits.py", "cifar10.py", "imagenet_resnet50.py"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_complete_and_documented(name):
  module = _load(name)
  config = module.get_config()
  assert isinstance(config, ml_collections.ConfigDict)
  assert "python -m train." in module.__doc__  # the docstring shows the command that runs it
  for field in (
      "data",
      "model",
      "pruning",
      "batch_size",
      "num_epochs",
      "sparsity",
      "seed",
      "sparsity_levels",
      "num_seeds",
      "top_k",
  ):
    assert field in config, f"{name} lacks {field}"
  assert 0.0 in config.sparsity_levels
  assert config.pruning.scope == "all_but_classifier"  # the paper's rule by default


def test_digits_follows_the_paper_grid():
  config = _load("digits.py").get_config()
  assert tuple(config.sparsity_levels) == (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
  assert config.num_seeds >= 10
  assert config.data.name == "digits"


def test_imagenet_has_the_paper_hyperparameters():
  config = _load("imagenet_resnet50.py").get_config()
  assert config.batch_size == 4096 and config.model.name == "resnet50"
  assert (config.pruning.begin_step, config.pruning.end_step, config.pruning.frequency) == (5000, 8000, 500)
  assert config.num_epochs * config.steps_per_epoch >= 32_000
  assert config.label_smoothing == 0.1 and config.nesterov and config.warmup_epochs == 5
  assert tuple(config.lr_boundaries_epochs) == (30, 60, 80)
  assert "--tpu=" in _load("imagenet_resnet50.py").__doc__
  assert config.num_seeds == 30
