"""config.mixed_precision = "bfloat16": Keras' mixed_bfloat16 policy, float32 logits and pruning masks, on CPU.

bfloat16 runs on CPU, so the TPU setting is trained here for real: a pruned digits model under bfloat16 reaches the
same measured sparsity, layer by layer, as the same model in float32 (TF-MOT keeps its masks and thresholds in the
variables' float32), its logits are float32, and the policy is restored for whatever the process builds next.
"""

import os

import numpy as np
import pytest

import pie  # noqa: F401
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

from pie import devices  # noqa: E402
from pie import model_dir  # noqa: E402
from pie import models  # noqa: E402
from pie import predictions as predictions_lib  # noqa: E402
from pie import pruning  # noqa: E402
from pie import training  # noqa: E402
from pie.errors import PieError  # noqa: E402
from tests.conftest import digits_config  # noqa: E402

PruneLowMagnitude = tfmot.sparsity.keras.prune_low_magnitude(keras.layers.Dense(1)).__class__


def _train(tmp_path, monkeypatch, precision):
  wrapped = []
  original = pruning.apply_pruning

  def recording(*args, **kwargs):
    model = original(*args, **kwargs)
    wrapped.append(model)
    return model

  monkeypatch.setattr(pruning, "apply_pruning", recording)
  config = digits_config(num_epochs=4, sparsity=0.7, seed=5, mixed_precision=precision, **{"pruning.end_fraction": 0.5})
  workdir = tmp_path / str(precision)
  metrics = training.train_and_export(config, str(workdir), log=lambda msg: None)
  (model,) = wrapped
  name = "sparsity70_seed5"
  return metrics, model, predictions_lib.read_predictions(str(workdir / f"{name}.tfrecord")), workdir, config


@pytest.mark.slow
def test_bfloat16_pruning_reaches_the_float32_sparsity(tmp_path, monkeypatch):
  metrics32, model32, preds32, _, _ = _train(tmp_path, monkeypatch, None)
  metrics16, model16, preds16, workdir, config16 = _train(tmp_path, monkeypatch, "bfloat16")
  assert keras.mixed_precision.global_policy().name == "float32"  # restored after training

  # Same masks size for size: every pruned layer at exactly the float32 model's sparsity.
  assert metrics16["per_layer_sparsity"] == metrics32["per_layer_sparsity"]
  assert metrics16["measured_sparsity"] == metrics32["measured_sparsity"]
  assert abs(metrics16["measured_sparsity"] - 0.7) < 0.005

  # The model trained in bfloat16: compute bfloat16, variables, masks and thresholds float32, logits float32.
  for layer in model16.layers:
    if isinstance(layer, PruneLowMagnitude):
      assert layer.layer.compute_dtype == "bfloat16"
      for weight, mask, threshold in layer.pruning_vars:
        assert (weight.dtype, mask.dtype, threshold.dtype) == (tf.float32,) * 3
  assert model16.get_layer("classifier").compute_dtype == "float32"
  assert model16.output.dtype == tf.float32
  assert all(layer.compute_dtype == "float32" for layer in model32.layers)

  # The saved model keeps its policy; the export is float32 probabilities of a trained model.
  saved = model_dir.load_model(str(workdir / "model.h5"))
  assert saved.get_layer("conv1").compute_dtype == "bfloat16"
  assert saved.get_layer("classifier").compute_dtype == "float32"
  assert preds16.top_k_probs.dtype == np.float32
  assert np.mean(preds16.top1 == preds16.labels) > 0.5
  assert abs(np.mean(preds16.top1 == preds16.labels) - np.mean(preds32.top1 == preds32.labels)) < 0.1

  # Exported again from its final checkpoint (analysis --export_missing): the model is rebuilt in bfloat16, as it
  # trained, so the file holds the same predictions as the export under the training strategy.
  name = "sparsity70_seed5"
  for file in (f"{name}.tfrecord", f"{name}.json", "model.h5"):
    (workdir / file).unlink()
  again = training.export_trained(config16, str(workdir), log=lambda msg: None)
  assert keras.mixed_precision.global_policy().name == "float32"
  exported = predictions_lib.read_predictions(str(workdir / f"{name}.tfrecord"))
  assert os.path.dirname(exported.metadata["exported_from"]) == str(workdir / "checkpoints")
  np.testing.assert_array_equal(exported.top_k_classes, preds16.top_k_classes)
  np.testing.assert_array_equal(exported.top_k_probs, preds16.top_k_probs)
  assert again["measured_sparsity"] == metrics16["measured_sparsity"]


def test_precision_context_and_input_dtype():
  with devices.precision("bfloat16"):
    model = models.small_cnn((8, 8, 1), 10)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
  assert keras.mixed_precision.global_policy().name == "float32"
  assert model.get_layer("conv1").compute_dtype == "bfloat16" and model.get_layer("conv1").kernel.dtype == tf.float32
  assert model.output.dtype == tf.float32
  assert devices.input_dtype("bfloat16") == tf.bfloat16 and devices.input_dtype(None) == tf.float32
  with pytest.raises(PieError, match="mixed_precision"):
    devices.input_dtype("float8")
  with pytest.raises(PieError, match="mixed_precision"):
    with devices.precision("fp16"):
      pass
  assert keras.mixed_precision.global_policy().name == "float32"
