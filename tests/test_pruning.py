"""TF-MOT pruning: which layers, the schedule, and the sparsity actually reached."""

import ml_collections
import numpy as np
import pytest

from pie import model_dir
from pie import models
from pie import pruning
from pie import training
from pie.errors import PieError
from tests.conftest import digits_config


def _small_cnn():
  return models.small_cnn((8, 8, 1), 10)


def test_scopes():
  model = _small_cnn()
  assert pruning.prunable_layer_names(model) == ["conv1", "conv2", "hidden"]
  assert pruning.prunable_layer_names(model, "conv") == ["conv1", "conv2"]
  assert pruning.prunable_layer_names(model, "all") == ["conv1", "conv2", "hidden", "classifier"]
  with pytest.raises(PieError, match="unknown pruning scope"):
    pruning.prunable_layer_names(model, "bn")


def test_resnet_scope_covers_stem_and_projections_not_classifier():
  model = models.cifar_resnet((32, 32, 3), 10, depth=8)
  names = pruning.prunable_layer_names(model)
  assert "stem_conv" in names and "stage2_block1_proj" in names and "classifier" not in names
  assert len(names) == sum(1 for layer in model.layers if layer.__class__.__name__ == "Conv2D")


def test_schedule_steps():
  cfg = ml_collections.ConfigDict({"begin_fraction": 0.0, "end_fraction": 0.6, "frequency": 10})
  assert pruning.schedule_steps(cfg, 800) == (0, 480, 10)
  cfg = ml_collections.ConfigDict({"begin_step": 5000, "end_step": 8000, "frequency": 500})
  assert pruning.schedule_steps(cfg, 32000) == (5000, 8000, 500)
  with pytest.raises(PieError, match="pruning window"):
    pruning.schedule_steps(ml_collections.ConfigDict({"begin_step": 10, "end_step": 900}), 800)


def test_wrapping_only_in_scope():
  wrapped = pruning.apply_pruning(_small_cnn(), 0.5, 0, 10, 1)
  kinds = {layer.name: type(layer).__name__ for layer in wrapped.layers}
  assert [n for n, k in kinds.items() if k == "PruneLowMagnitude"] == [
      "prune_low_magnitude_conv1",
      "prune_low_magnitude_conv2",
      "prune_low_magnitude_hidden",
  ]
  assert kinds["classifier"] == "Dense"


@pytest.mark.slow
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_training_reaches_target_sparsity_per_layer(tmp_path, sparsity):
  config = digits_config(**{"num_epochs": 2, "sparsity": sparsity, "seed": 0, "pruning.end_fraction": 0.5})
  metrics = training.train_and_export(config, str(tmp_path), log=lambda m: None)
  assert abs(metrics["measured_sparsity"] - sparsity) <= 0.005
  assert set(metrics["per_layer_sparsity"]) == {"conv1", "conv2", "hidden"}
  for name, value in metrics["per_layer_sparsity"].items():
    assert abs(value - sparsity) <= 0.02, (name, value)  # each layer by its own threshold (rounding on small layers)
  model = model_dir.load_model(str(tmp_path / "model.h5"))
  assert not any(type(layer).__name__ == "PruneLowMagnitude" for layer in model.layers)
  assert np.count_nonzero(model.get_layer("classifier").kernel.numpy() == 0) == 0  # classifier left dense
  report = pruning.measure_sparsity(model, ["conv1", "conv2", "hidden"])
  assert report["overall"] == pytest.approx(metrics["measured_sparsity"])


@pytest.mark.slow
def test_pruning_window_past_training_is_refused(tmp_path):
  config = digits_config(**{"num_epochs": 1, "sparsity": 0.5, "pruning.end_step": 10_000})
  with pytest.raises(PieError, match="pruning window"):
    training.train_and_export(config, str(tmp_path), log=lambda m: None)
