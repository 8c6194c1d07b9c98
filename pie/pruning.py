"""Gradual magnitude pruning with TF-MOT, and the sparsity actually reached.

Each pruned layer gets its own magnitude threshold (no global threshold), following the paper, with TF-MOT's
polynomial schedule s(t) = s_f + (0 - s_f)(1 - p)^3 between begin_step and end_step, masks updated every `frequency`
steps.
"""

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from pie.errors import PieError
from pie.models import CLASSIFIER

# Which layers each scope prunes. The paper prunes every convolution (the first 7x7 and projection shortcuts
# included) and leaves the final classifier and batch norm dense: "all_but_classifier" is that rule for any model.
SCOPES = ("all_but_classifier", "conv", "all")
_PRUNABLE = (keras.layers.Conv2D, keras.layers.Dense)


def prunable_layer_names(model, scope="all_but_classifier"):
  if scope not in SCOPES:
    raise PieError(f"unknown pruning scope {scope!r} (config.pruning.scope): choose one of {SCOPES}")
  names = []
  for layer in model.layers:
    if not isinstance(layer, _PRUNABLE):
      continue
    if scope == "conv" and not isinstance(layer, keras.layers.Conv2D):
      continue
    if scope == "all_but_classifier" and layer.name == CLASSIFIER:
      continue
    names.append(layer.name)
  return names


def schedule_steps(pruning_config, total_steps):
  """(begin_step, end_step, frequency): absolute steps when set, else fractions of training."""
  begin = pruning_config.get("begin_step")
  end = pruning_config.get("end_step")
  if begin is None:
    begin = int(round(pruning_config.get("begin_fraction", 0.0) * total_steps))
  if end is None:
    end = int(round(pruning_config.get("end_fraction", 0.6) * total_steps))
  frequency = int(pruning_config.get("frequency", 10))
  if not 0 <= begin < end <= total_steps:
    raise PieError(
        f"pruning window [{begin}, {end}] must satisfy 0 <= begin < end <= total steps ({total_steps}); "
        "check config.pruning"
    )
  if frequency < 1:
    raise PieError(f"config.pruning.frequency must be >= 1, got {frequency}")
  return begin, end, frequency


def apply_pruning(model, target_sparsity, begin_step, end_step, frequency, scope="all_but_classifier"):
  """A copy of `model` whose in-scope layers are wrapped by `prune_low_magnitude`."""
  if not 0.0 < target_sparsity < 1.0:
    raise PieError(f"target sparsity must be in (0, 1), got {target_sparsity}")
  names = set(prunable_layer_names(model, scope))
  if not names:
    raise PieError(f"pruning scope {scope!r} selects no layer of model {model.name!r}")
  schedule = tfmot.sparsity.keras.PolynomialDecay(
      initial_sparsity=0.0,
      final_sparsity=float(target_sparsity),
      begin_step=int(begin_step),
      end_step=int(end_step),
      power=3,
      frequency=int(frequency),
  )

  def wrap(layer):
    if layer.name in names:
      return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
    return layer.__class__.from_config(layer.get_config())

  return keras.models.clone_model(model, clone_function=wrap)


def strip_pruning(model):
  """Plain Keras layers with the pruning masks applied to their kernels.

  The wrapped model keeps dense kernels and masks side by side (a restored checkpoint can hold unmasked kernels),
  so the masks are multiplied in before TF-MOT's strip_pruning unwraps the layers.
  """
  for layer in model.layers:
    for weight, mask, _ in getattr(layer, "pruning_vars", ()):
      weight.assign(weight * tf.cast(mask, weight.dtype))
  return tfmot.sparsity.keras.strip_pruning(model)


def measure_sparsity(model, layer_names):
  """Fraction of exact zeros in each named layer's kernel and over all of them (weighted by size).

  Measured on the stripped model: checkpoints of the wrapped model hold dense weights and masks separately.
  """
  per_layer, zeros, total = {}, 0, 0
  for name in layer_names:
    kernel = model.get_layer(name).kernel.numpy()
    layer_zeros = int(np.count_nonzero(kernel == 0))
    per_layer[name] = layer_zeros / kernel.size
    zeros += layer_zeros
    total += kernel.size
  return {"overall": zeros / total if total else 0.0, "per_layer": per_layer, "num_weights": total}
