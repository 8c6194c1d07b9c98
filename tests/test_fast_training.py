"""How models are trained fast without changing what they learn.

A population worker reuses one compiled model per level (train_and_export(reuse_traced=True)): the models it trains
that way must be bit-identical to models trained from scratch, dense and pruned. Checkpoints come every
config.checkpoint_every_epochs and after the last epoch; an epoch runs in one train-function call by default.
"""

import os

import numpy as np
import pytest
import tf_keras

from pie import predictions as predictions_lib
from pie import training
from pie import variants
from tests.conftest import digits_config


def _train(root, tag, sparsity, seed, reuse):
  cfg = digits_config(sparsity=sparsity, seed=seed, num_epochs=3)
  workdir = os.path.join(root, tag)
  metrics = training.train_and_export(cfg, workdir, log=lambda m: None, reuse_traced=reuse)
  tf_keras.backend.clear_session()  # as the worker does between models
  name = variants.model_name(variants.DEFAULT_METHOD, sparsity, seed)
  return metrics, predictions_lib.read_predictions(os.path.join(workdir, f"{name}.tfrecord"))


@pytest.mark.slow
@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_reused_model_trains_exactly_like_a_fresh_one(tmp_path, sparsity):
  training.drop_reused()
  _, fresh = _train(str(tmp_path), "fresh", sparsity, 1, reuse=False)
  _train(str(tmp_path), "first", sparsity, 0, reuse=True)  # compiles and keeps the model
  metrics, reused = _train(str(tmp_path), "reused", sparsity, 1, reuse=True)
  training.drop_reused()
  for field in ("top_k_classes", "top_k_probs"):
    np.testing.assert_array_equal(getattr(reused, field), getattr(fresh, field))
  assert metrics["measured_sparsity"] == pytest.approx(sparsity, abs=variants.SPARSITY_TOLERANCE)


@pytest.mark.slow
def test_only_same_level_and_method_share_a_model(tmp_path):
  training.drop_reused()
  _train(str(tmp_path), "a", 0.5, 0, reuse=True)
  kept = dict(training._TRAINABLES)  # pylint: disable=protected-access
  _, other_level = _train(str(tmp_path), "b", 0.9, 0, reuse=True)
  assert len(training._TRAINABLES) == 1 and training._TRAINABLES.keys() != kept.keys()  # pylint: disable=protected-access
  training.drop_reused()
  _, fresh = _train(str(tmp_path), "c", 0.9, 0, reuse=False)
  np.testing.assert_array_equal(other_level.top_k_probs, fresh.top_k_probs)


class _Manager:

  def __init__(self):
    self.saved = []

  def save(self, checkpoint_number):
    self.saved.append(checkpoint_number)


@pytest.mark.parametrize("every,expected", [(1, [1, 2, 3, 4, 5, 6, 7]), (5, [5, 7]), (10, [7])])
def test_checkpoints_every_n_epochs_and_after_the_last(every, expected):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  manager = _Manager()
  callback = training._EpochEnd(
      manager, tf.Variable(0, dtype=tf.int64), 7, 40, lambda m: None, every=every  # pylint: disable=protected-access
  )
  for epoch in range(7):
    callback.on_epoch_begin(epoch)
    callback.on_epoch_end(epoch, {"loss": 1.0})
  assert manager.saved == expected


def test_steps_per_execution_defaults_to_an_epoch():
  assert training.steps_per_execution(digits_config(), 40) == 40
  assert training.steps_per_execution(digits_config(steps_per_execution=8), 40) == 8
  assert training.steps_per_execution(digits_config(steps_per_execution=100), 40) == 40
