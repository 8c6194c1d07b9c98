"""A population worker reuses one compiled model per level (train_and_export(reuse_traced=True)): the models it
trains that way must be bit-identical to models trained from scratch, dense and pruned."""
import os

import numpy as np
import pytest
import tf_keras

from pie import predictions as predictions_lib
from pie import training
from tests.conftest import digits_config


def _train(root, tag, sparsity, seed, reuse):
  cfg = digits_config(sparsity=sparsity, seed=seed, num_epochs=3)
  workdir = os.path.join(root, tag)
  metrics = training.train_and_export(cfg, workdir, log=lambda m: None, reuse_traced=reuse)
  tf_keras.backend.clear_session()  # as the worker does between models
  name = training.model_name(sparsity, seed)
  return metrics, predictions_lib.read_predictions(os.path.join(workdir, f"{name}.tfrecord"))


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_reused_model_trains_exactly_like_a_fresh_one(tmp_path, sparsity):
  training.drop_reused()
  _, fresh = _train(str(tmp_path), "fresh", sparsity, 1, reuse=False)
  _train(str(tmp_path), "first", sparsity, 0, reuse=True)  # compiles and keeps the model
  metrics, reused = _train(str(tmp_path), "reused", sparsity, 1, reuse=True)
  training.drop_reused()
  for field in ("top_k_classes", "top_k_probs"):
    np.testing.assert_array_equal(getattr(reused, field), getattr(fresh, field))
  assert metrics["measured_sparsity"] == pytest.approx(sparsity, abs=training.SPARSITY_TOLERANCE)


def test_only_same_level_and_method_share_a_model(tmp_path):
  training.drop_reused()
  _train(str(tmp_path), "a", 0.5, 0, reuse=True)
  kept = dict(training._TRAINABLES)  # pylint: disable=protected-access
  _, other_level = _train(str(tmp_path), "b", 0.9, 0, reuse=True)
  assert len(training._TRAINABLES) == 1 and training._TRAINABLES.keys() != kept.keys()  # pylint: disable=protected-access
  training.drop_reused()
  _, fresh = _train(str(tmp_path), "c", 0.9, 0, reuse=False)
  np.testing.assert_array_equal(other_level.top_k_probs, fresh.top_k_probs)
