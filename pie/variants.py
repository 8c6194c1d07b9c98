"""Compression methods as variants of a study: the registry, how each one wraps training, and how PTQ is derived.

A study compares populations. The dense population (method "dense", sparsity 0) is the baseline of every other one;
each variant is one compression method, and each (method, level) pair is one population compared against the dense
one with the same analysis. Variants (`VARIANTS`):

  * "magnitude": TF-MOT gradual magnitude pruning (`pie.pruning`), one level per `config.sparsity_levels` entry.
  * "2:4": structured 2:4 sparsity (`prune_low_magnitude(..., sparsity_m_by_n=(2, 4))`), level 0.5. TF-MOT zeroes
    the 2 smallest of every 4 consecutive weights along the input-channel axis and, once a weight is zero, the next
    mask update keeps it (the zeros are the smallest), so the mask is in effect computed once. Computing it at step 0
    would prune the random initialisation, so it is computed once at the step where magnitude pruning reaches its
    target (the end of the pruning window) from the trained weights, and the sparse model fine-tunes afterwards
    (train dense, prune 2:4, fine-tune). A layer with fewer than 4 input channels (the first conv on 1 or 3
    channels) is padded to a block of 4 by TF-MOT, and the padding counts among the zeros: such a layer stays dense
    or partly dense. The sparsity reached is measured and recorded, not assumed, and the pattern is checked per
    block (`m_by_n_report`).
  * "random": a control for magnitude pruning at the same sparsity. It follows the magnitude schedule step for step
    (same polynomial fraction per layer, same update frequency, same end point); only the choice of which weights to
    remove differs: a fixed random order per layer, drawn from the model's seed and the layer's index, instead of
    the magnitudes. The masks are nested (a weight removed stays removed). If random and magnitude populations hurt
    the same classes, what matters is capacity, not which weights are kept.
  * "qat": quantization-aware training (`tfmot.quantization.keras.quantize_model`), level 0; the exported model is
    the int8 TFLite conversion, whose predictions are the ones analysed.
  * "cluster": weight clustering (`tfmot.clustering.keras.cluster_weights`, `config.clustering.num_clusters`,
    default 16, on the same layers pruning would touch), trained from the start like the others, then
    `strip_clustering`; level 0.
  * "ptq_float16", "ptq_dynamic_int8", "ptq_full_int8": post-training quantization of each finished DENSE model
    (`pie.quantization`), level 0. Nothing is trained: each derived model belongs to the dense model of the same
    seed, and full int8 calibrates on the first `PTQ_REPRESENTATIVE_EXAMPLES` training examples.

Controls (`config.controls`, see `CONTROLS`) are populations in which nothing is compressed, trained and analysed like
any other, to measure what seed noise alone does (an A/A comparison with the dense population):

  * "dense_replicate": a second dense population, seeds disjoint from the dense one's (seed + number of seeds).
  * "sham": the magnitude-pruning wrappers, schedule and callbacks at a negligible target (`SHAM_SPARSITY`), with the
    dense seeds: separates what the training machinery does from what sparsity does.

Every export records `method`, the measured sparsity, `bits_per_weight` and `compressed_bytes` (gzip level 9 of the
exported TFLite flatbuffer, via `pie.quantization.model_size_report`); the full size report is kept under
`compression`. Keras models (dense, pruned, clustered) are measured as float32 TFLite flatbuffers; pruned ones with
TFLite's sparse storage (`sparse_weights=True`), so that `bits_per_weight` counts what sparse storage saves.

The registry and the numpy checks import no TensorFlow; the training and derivation helpers load it on first use.
"""
import collections
import dataclasses
import math
import os
import time
from typing import Optional

import numpy as np

from pie.errors import PieError

DENSE = "dense"
DEFAULT_METHOD = "magnitude"
DENSE_REPLICATE = "dense_replicate"
SHAM = "sham"
SHAM_SPARSITY = 0.001  # a negligible target: the pruning machinery runs, almost nothing is removed
PTQ_REPRESENTATIVE_EXAMPLES = 100
DEFAULT_NUM_CLUSTERS = 16
M_BY_N = (2, 4)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One compression method.

  kind: "pruning" (trained with a sparsity level; its level-0 model is the dense one), "training" (a whole population
    trained with the method, level 0), "derived" (made from each finished dense model without training) or
    "control" (a population where nothing is compressed: the noise floor, see `CONTROLS`).
  prefix: what model names of this variant start with ("" for magnitude, whose names are today's).
  fixed_level: the only level of the variant (2:4 is 0.5 by construction), or None for config.sparsity_levels.
  ptq_mode: the `pie.quantization` mode of a derived post-training-quantization variant.
  """
  name: str
  kind: str
  prefix: str
  fixed_level: Optional[float] = None
  ptq_mode: Optional[str] = None


VARIANTS = collections.OrderedDict((v.name, v) for v in (
    Variant("magnitude", "pruning", ""),
    Variant("2:4", "pruning", "2of4_", fixed_level=0.5),
    Variant("random", "pruning", "random_"),
    Variant("qat", "training", "qat_", fixed_level=0.0),
    Variant("cluster", "training", "cluster_", fixed_level=0.0),
    Variant("ptq_float16", "derived", "ptq_float16_", fixed_level=0.0, ptq_mode="float16"),
    Variant("ptq_dynamic_int8", "derived", "ptq_dynamic_int8_", fixed_level=0.0, ptq_mode="dynamic_int8"),
    Variant("ptq_full_int8", "derived", "ptq_full_int8_", fixed_level=0.0, ptq_mode="full_int8"),
))
CONTROLS = collections.OrderedDict((v.name, v) for v in (
    Variant(DENSE_REPLICATE, "control", "dense_replicate_", fixed_level=0.0),
    Variant(SHAM, "control", "sham_", fixed_level=SHAM_SPARSITY),
))
# The order populations are listed in: dense first, then the controls, then the compression methods.
METHOD_ORDER = (DENSE,) + tuple(CONTROLS) + tuple(VARIANTS)


def get_variant(method):
  if method in CONTROLS:
    return CONTROLS[method]
  if method not in VARIANTS:
    raise PieError(f"unknown compression method {method!r} (config.method / config.variants): choose one of "
                   f"{tuple(VARIANTS)}")
  return VARIANTS[method]


def is_control(method):
  """True for the populations in which nothing is compressed (config.controls)."""
  return method in CONTROLS


def check_controls(controls):
  """config.controls as a tuple, checked: known names, no duplicates (empty: no control)."""
  if isinstance(controls, str):
    raise PieError(f"config.controls must be a list of control names, got the string {controls!r}")
  controls = tuple(controls or ())
  for name in controls:
    if name not in CONTROLS:
      raise PieError(f"unknown control {name!r} in config.controls: choose among {tuple(CONTROLS)}")
  duplicates = sorted({c for c in controls if controls.count(c) > 1})
  if duplicates:
    raise PieError(f"config.controls lists {duplicates} more than once")
  return controls


def study_controls(config):
  return check_controls(config.get("controls", ()))


def method_rank(method):
  """Sort key of a method: dense first, then the registry order, unknown methods last by name."""
  return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def check_variants(variants):
  """The study's variants as a tuple, checked: known names, no duplicates, at least one."""
  if isinstance(variants, str):
    raise PieError(f"config.variants must be a list of method names, got the string {variants!r}")
  variants = tuple(variants)
  if not variants:
    raise PieError("config.variants is empty: give at least one compression method, e.g. ('magnitude',)")
  for method in variants:
    if method in CONTROLS:
      raise PieError(f"{method!r} is a control, not a compression method: list it in config.controls")
    get_variant(method)
  duplicates = sorted({m for m in variants if variants.count(m) > 1})
  if duplicates:
    raise PieError(f"config.variants lists {duplicates} more than once")
  return variants


def study_variants(config):
  """config.variants, defaulting to the single config.method (magnitude): today's magnitude-only study."""
  return check_variants(config.get("variants", None) or (config.get("method", DEFAULT_METHOD),))


def effective_method(method, sparsity):
  """The method a model records: "dense" for sparsity 0 of a pruning method, else the method itself.

  Raises PieError for combinations that are not a model of any study: a training variant with a sparsity, a pruning
  variant at another level than its fixed one.
  """
  if method == DENSE:
    if sparsity != 0:
      raise PieError(f"method 'dense' has sparsity 0, got config.sparsity={sparsity}")
    return DENSE
  variant = get_variant(method)
  if variant.kind == "control":
    if abs(sparsity - variant.fixed_level) > 1e-9:
      raise PieError(f"control {method!r} has sparsity {variant.fixed_level}, got config.sparsity={sparsity}")
    return method
  if variant.kind == "pruning":
    if sparsity == 0:
      return DENSE
    if variant.fixed_level is not None and abs(sparsity - variant.fixed_level) > 1e-9:
      raise PieError(f"method {method!r} has sparsity {variant.fixed_level} by construction, got config.sparsity="
                     f"{sparsity}")
    return method
  if sparsity != 0:
    raise PieError(f"method {method!r} trains unpruned models: config.sparsity must be 0, got {sparsity}")
  return method


def config_method(config):
  """The effective method of one model's config (see `effective_method`)."""
  return effective_method(config.get("method", DEFAULT_METHOD), float(config.sparsity))


def model_name(method, sparsity, seed):
  """File-system name of one model: "sparsity90_seed3" (dense and magnitude, as always), "2of4_sparsity50_seed3",
  "random_sparsity90_seed3", "qat_seed3", "cluster_seed3", "ptq_dynamic_int8_seed3"."""
  base = f"sparsity{round(float(sparsity) * 100, 2):g}_seed{int(seed)}"
  method = effective_method(method, float(sparsity))
  if method in (DENSE, "magnitude"):
    return base
  variant = get_variant(method)
  if variant.kind == "pruning":
    return variant.prefix + base
  return f"{variant.prefix}seed{int(seed)}"


@dataclasses.dataclass(frozen=True)
class Job:
  """One model of a study: trained ("train") or derived from the dense model `source` ("derive")."""
  method: str     # effective method ("dense" for the baseline)
  sparsity: float
  seed: int
  name: str
  kind: str
  source: Optional[str] = None


def study_jobs(config, levels_and_seeds):
  """Every model of a study, dense first, then the trained variants, then the derived ones.

  Args:
    config: the study config (reads config.variants / config.method).
    levels_and_seeds: the [(sparsity, seed)] grid of the magnitude study, dense level included
      (`pie.population.grid`, which checks it).
  """
  variants = study_variants(config)
  seeds = sorted({seed for _, seed in levels_and_seeds})
  levels = sorted({s for s, _ in levels_and_seeds if s > 0})
  jobs = [Job(DENSE, 0.0, seed, model_name(DENSE, 0.0, seed), "train") for seed in seeds]
  for control in study_controls(config):
    # The replicate's seeds follow the dense ones (disjoint); the sham reuses them, like every pruned level does.
    control_seeds = [seed + max(seeds) + 1 for seed in seeds] if control == DENSE_REPLICATE else seeds
    level = CONTROLS[control].fixed_level
    jobs += [Job(control, level, seed, model_name(control, level, seed), "train") for seed in control_seeds]
  for method in variants:
    variant = VARIANTS[method]
    if variant.kind == "derived":
      continue
    method_levels = levels if variant.kind == "pruning" and variant.fixed_level is None else [variant.fixed_level]
    if variant.kind == "pruning" and variant.fixed_level is None and not method_levels:
      if method == DEFAULT_METHOD:
        continue  # config.sparsity_levels = (0.0,): a study of dense models only (a baseline, or an A/A study)
      raise PieError(f"method {method!r} needs a non-zero level in config.sparsity_levels")
    jobs += [Job(method, s, seed, model_name(method, s, seed), "train") for s in method_levels for seed in seeds]
  for method in variants:
    if VARIANTS[method].kind == "derived":
      jobs += [Job(method, 0.0, seed, model_name(method, 0.0, seed), "derive", source=model_name(DENSE, 0.0, seed))
               for seed in seeds]
  names = [j.name for j in jobs]
  if len(set(names)) != len(names):
    raise PieError(f"two models of the study share a name: {sorted(n for n in names if names.count(n) > 1)}")
  return jobs


def primary_method(methods):
  """The method the per-level sections of the report show next to dense: magnitude when present, else the first
  pruning variant present (registry order), else None (only non-pruning methods: they share level 0 with dense)."""
  methods = set(methods)
  for name, variant in VARIANTS.items():
    if variant.kind == "pruning" and name in methods:
      return name
  return None


# ---------------------------------------------------------------------------------------------------------------------
# Pure checks of what a compressed kernel holds (numpy only).


def input_channel_axis(kernel_shape):
  """Axis of a kernel's input channels: 2 for a Conv2D kernel [kh, kw, in, out], 0 for a Dense kernel [in, out]."""
  if len(kernel_shape) == 4:
    return 2
  if len(kernel_shape) == 2:
    return 0
  raise PieError(f"expected a Conv2D [kh, kw, in, out] or Dense [in, out] kernel, got shape {tuple(kernel_shape)}")


def m_by_n_report(kernel, m=2, n=4):
  """Checks the m:n pattern of a kernel: at least m zeros in every block of n consecutive input channels.

  Blocks run along the input-channel axis for every other index (spatial position, output channel). A trailing
  partial block (input channels not a multiple of n) is checked for at least max(0, m - (n - size)) zeros, the
  padding counting as zeros as TF-MOT counts it.

  Returns:
    dict: input_channels; applies (input_channels >= n); num_blocks; blocks_violating (blocks with too few zeros);
    sparsity (fraction of exact zeros in the kernel).
  """
  kernel = np.asarray(kernel)
  if not 0 < m < n:
    raise PieError(f"an m:n pattern needs 0 < m < n, got {m}:{n}")
  axis = input_channel_axis(kernel.shape)
  channels = kernel.shape[axis]
  zeros = np.moveaxis(kernel == 0, axis, -1)  # [..., in]
  zeros = zeros.reshape(-1, channels)
  full = channels // n
  violating = 0
  num_blocks = 0
  if full:
    counts = zeros[:, :full * n].reshape(zeros.shape[0], full, n).sum(axis=-1)
    violating += int((counts < m).sum())
    num_blocks += counts.size
  rest = channels - full * n
  if rest:
    need = max(0, m - (n - rest))
    counts = zeros[:, full * n:].sum(axis=-1)
    violating += int((counts < need).sum())
    num_blocks += counts.size
  return {"input_channels": int(channels), "applies": channels >= n, "num_blocks": int(num_blocks),
          "blocks_violating": violating, "sparsity": float(np.mean(kernel == 0)) if kernel.size else 0.0}


def unique_values(kernel):
  """Number of distinct values in a kernel (a clustered kernel holds at most its number of clusters)."""
  return int(np.unique(np.asarray(kernel)).size)


def polynomial_sparsity(step, final_sparsity, begin_step, end_step, frequency):
  """The sparsity TF-MOT's PolynomialDecay(power=3, initial 0) has set at `step`: masks change only on update steps
  (begin + k * frequency, within [begin, end]) and hold in between, reaching `final_sparsity` at end_step."""
  if step < begin_step:
    return 0.0
  if step >= end_step:
    return float(final_sparsity)
  last_update = begin_step + ((step - begin_step) // frequency) * frequency
  progress = (last_update - begin_step) / (end_step - begin_step)
  return float(final_sparsity * (1.0 - (1.0 - progress) ** 3))


def random_order(size, seed, layer_index):
  """The fixed random removal order of one layer's weights (a permutation of range(size)), from the model's seed
  and the layer's position: the same for every step, so masks are nested."""
  return np.random.default_rng([int(seed), int(layer_index)]).permutation(int(size))


def random_mask(shape, fraction, order):
  """float32 mask of `shape` with the first round(fraction * size) weights of `order` set to 0."""
  size = int(np.prod(shape))
  if not 0.0 <= fraction < 1.0:
    raise PieError(f"a pruning fraction must be in [0, 1), got {fraction}")
  mask = np.ones(size, np.float32)
  mask[order[:int(round(fraction * size))]] = 0.0
  return mask.reshape(shape)


# ---------------------------------------------------------------------------------------------------------------------
# Training: wrapping a model for its method, and the model to export.


def _clone_wrapping(model, names, wrap):
  import tf_keras as keras  # pylint: disable=g-import-not-at-top

  def clone(layer):
    if layer.name in names:
      return wrap(layer)
    return layer.__class__.from_config(layer.get_config())

  return keras.models.clone_model(model, clone_function=clone)


def _scope_names(model, scope):
  from pie import pruning  # pylint: disable=g-import-not-at-top
  names = set(pruning.prunable_layer_names(model, scope))
  if not names:
    raise PieError(f"scope {scope!r} selects no layer of model {model.name!r}")
  return names


def make_random_pruning_callback(model, layer_names, final_sparsity, begin_step, end_step, frequency, seed):
  """A Keras callback that keeps each named layer's kernel masked by its random mask for the current step.

  The mask is applied before every training batch (so the forward pass sees the pruned kernel, as TF-MOT's wrapper
  does) and at the end of training; the current step is the optimizer's iteration count, so a resumed run applies
  exactly the masks an uninterrupted one would.
  """
  import tf_keras as keras  # pylint: disable=g-import-not-at-top

  layers = [layer for layer in model.layers if layer.name in layer_names]
  orders = {layer.name: random_order(layer.kernel.shape.num_elements(), seed, i) for i, layer in enumerate(layers)}

  class RandomPruning(keras.callbacks.Callback):
    """Random-order pruning on the magnitude schedule (see the module docstring)."""

    def __init__(self):
      super().__init__()
      self._applied = None

    def apply(self, step):
      fraction = polynomial_sparsity(step, final_sparsity, begin_step, end_step, frequency)
      for layer in layers:
        kernel = layer.kernel
        mask = random_mask(tuple(kernel.shape), fraction, orders[layer.name])
        kernel.assign(kernel * mask)
      self._applied = fraction

    def on_train_batch_begin(self, batch, logs=None):
      self.apply(int(self.model.optimizer.iterations.numpy()))

    def on_train_end(self, logs=None):
      self.apply(int(self.model.optimizer.iterations.numpy()))

  return RandomPruning()


def wrap_for_training(model, config, method, total_steps):
  """(model to train, extra callbacks) for one model of `method` (an effective method, see `config_method`)."""
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  from pie import pruning  # pylint: disable=g-import-not-at-top
  scope = config.pruning.get("scope", "all_but_classifier")
  if method in (DENSE, DENSE_REPLICATE):
    return model, []
  if method in ("magnitude", SHAM):
    begin, end, frequency = pruning.schedule_steps(config.pruning, total_steps)
    return pruning.apply_pruning(model, config.sparsity, begin, end, frequency, scope), [
        tfmot.sparsity.keras.UpdatePruningStep()]
  if method == "2:4":
    _, end, _ = pruning.schedule_steps(config.pruning, total_steps)
    # Fires once, at the end of the magnitude window (see the module docstring); the value 0.5 is not used by the
    # m-by-n mask, which always removes 2 of 4.
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=int(end), end_step=int(end), frequency=1)
    wrapped = _clone_wrapping(model, _scope_names(model, scope), lambda layer: tfmot.sparsity.keras.prune_low_magnitude(
        layer, pruning_schedule=schedule, sparsity_m_by_n=M_BY_N))
    return wrapped, [tfmot.sparsity.keras.UpdatePruningStep()]
  if method == "random":
    begin, end, frequency = pruning.schedule_steps(config.pruning, total_steps)
    return model, [make_random_pruning_callback(model, _scope_names(model, scope), float(config.sparsity), begin,
                                                end, frequency, int(config.seed))]
  if method == "qat":
    return tfmot.quantization.keras.quantize_model(model), []
  if method == "cluster":
    num_clusters = int(config.get("clustering", {}).get("num_clusters", DEFAULT_NUM_CLUSTERS))
    if num_clusters < 2:
      raise PieError(f"config.clustering.num_clusters must be >= 2, got {num_clusters}")
    init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
    wrapped = _clone_wrapping(model, _scope_names(model, scope), lambda layer: tfmot.clustering.keras.cluster_weights(
        layer, number_of_clusters=num_clusters, cluster_centroids_init=init))
    return wrapped, []
  raise PieError(f"method {method!r} is not trained: derived variants are made from finished dense models")


def finalize(model, method, callbacks=()):
  """The model to export: pruning or clustering wrappers stripped (masks applied); a QAT model as it is."""
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  from pie import pruning  # pylint: disable=g-import-not-at-top
  if method in ("magnitude", "2:4", SHAM):
    return pruning.strip_pruning(model)
  if method == "random":
    for callback in callbacks:
      if hasattr(callback, "apply"):
        callback.apply(int(model.optimizer.iterations.numpy()))
    return model
  if method == "cluster":
    return tfmot.clustering.keras.strip_clustering(model)
  return model


def inner_layer(layer):
  """The Keras layer inside a QAT/pruning/clustering wrapper (the layer itself when unwrapped)."""
  return getattr(layer, "layer", layer)


def kernels(model, layer_names):
  """{layer name: kernel as numpy} of the named layers, looking through wrappers (QAT names them "quant_<name>")."""
  out = {}
  for layer in model.layers:
    inner = inner_layer(layer)
    if inner.name not in layer_names:
      continue
    # A QAT wrapper replaces the inner layer's `kernel` attribute by its fake-quantized tensor: read the variable.
    found = [v for v in layer.weights if v.name.split("/")[-1].split(":")[0] == "kernel"]
    if found:
      out[inner.name] = found[0].numpy()
  missing = sorted(set(layer_names) - set(out))
  if missing:
    raise PieError(f"model {model.name!r} has no kernel for layers {missing}")
  return out


def measure_sparsity(model, layer_names):
  """Like `pie.pruning.measure_sparsity`, but also through QAT wrappers."""
  per_layer, zeros, total = {}, 0, 0
  for name, kernel in kernels(model, layer_names).items():
    per_layer[name] = float(np.mean(kernel == 0))
    zeros += int(np.count_nonzero(kernel == 0))
    total += kernel.size
  return {"overall": zeros / total if total else 0.0, "per_layer": per_layer, "num_weights": total}


def structure_report(model, method, layer_names):
  """What the method promises, checked on the exported model's kernels; raises PieError if it does not hold.

  2:4: the pattern in every block of layers with >= 4 input channels (layers with fewer are listed as dense or
  partly dense). cluster: at most num_clusters distinct values per clustered kernel.
  """
  if method == "2:4":
    m, n = M_BY_N
    layers = {name: m_by_n_report(kernel, m, n) for name, kernel in kernels(model, layer_names).items()}
    broken = [name for name, r in layers.items() if r["applies"] and r["blocks_violating"]]
    if broken:
      raise PieError(f"2:4 pattern broken in layers {broken}: " + ", ".join(
          f"{name} {layers[name]['blocks_violating']}/{layers[name]['num_blocks']} blocks" for name in broken))
    return {"m_by_n": f"{m}:{n}", "layers": layers,
            "layers_with_pattern": sorted(k for k, r in layers.items() if r["applies"]),
            "layers_left_dense_or_partly": sorted(k for k, r in layers.items() if not r["applies"])}
  if method == "cluster":
    counts = {name: unique_values(kernel) for name, kernel in kernels(model, layer_names).items()}
    return {"unique_values_per_kernel": counts, "max_unique_values": max(counts.values())}
  return {}


def compression_of_keras(model, method):
  """Size report of a Keras model exported as a float32 TFLite flatbuffer (sparse storage for pruning methods)."""
  from pie import quantization  # pylint: disable=g-import-not-at-top
  sparse = method in ("magnitude", "2:4", "random", SHAM)
  report = quantization.keras_model_size_report(model, sparse_weights=sparse)
  report.pop("layer_sparsity", None)
  return report


def compression_fields(report):
  """The metadata fields every export records from a size report."""
  bits = report.get("bits_per_weight")
  return {"bits_per_weight": None if bits is None or not math.isfinite(bits) else float(bits),
          "compressed_bytes": int(report["gzip_bytes"]), "compression": report}


def qat_to_tflite(model):
  """The int8 TFLite flatbuffer of a QAT model (the converter uses the trained fake-quant ranges)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  return bytes(converter.convert())


def predict_tflite(tflite_bytes, dataset, batch_size=256, top_k=5, with_logits=False, log=print):
  """The export arrays of `pie.export.predict_eval` for a TFLite flatbuffer run by `TFLiteClassifier`."""
  from pie import quantization  # pylint: disable=g-import-not-at-top
  classifier = quantization.TFLiteClassifier(tflite_bytes)
  k = min(top_k, classifier.num_classes)
  out = {"example_ids": [], "labels": [], "top_k_classes": [], "top_k_probs": [], "logits": []}
  start = time.time()
  for batch in dataset.eval_batches(batch_size):
    logits = classifier.predict_logits(batch["image"].numpy(), batch_size=batch_size).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    # Best first; equal probabilities go to the smaller class id, as tf.math.top_k does.
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    out["example_ids"].append(batch["example_id"].numpy())
    out["labels"].append(batch["label"].numpy())
    out["top_k_classes"].append(order.astype(np.int64))
    out["top_k_probs"].append(np.take_along_axis(probs, order, axis=1).astype(np.float32))
    if with_logits:
      out["logits"].append(logits.astype(np.float32))
  log(f"predicted {sum(len(x) for x in out['labels'])} examples with TFLite in {time.time() - start:.1f}s")
  return {key: np.concatenate(v) if v else None for key, v in out.items()}


def representative_images(data_config, num_examples=PTQ_REPRESENTATIVE_EXAMPLES):
  """The first `num_examples` training examples, preprocessed as at evaluation (no augmentation)."""
  import copy  # pylint: disable=g-import-not-at-top
  from pie import data as data_lib  # pylint: disable=g-import-not-at-top
  cfg = copy.deepcopy(data_config)
  with cfg.unlocked():
    cfg.eval_split = cfg.train_split
  for batch in data_lib.load_dataset(cfg).eval_batches(num_examples):
    return batch["image"].numpy()
  raise PieError(f"training split {data_config.train_split!r} of {data_config.name!r} is empty")


# ---------------------------------------------------------------------------------------------------------------------
# Derived variants: post-training quantization of a finished dense model.


def derive_ptq(config, source_dir, workdir, representative=None, dataset=None, log=print):
  """Quantizes the finished dense model in `source_dir` and exports the predictions of the quantized model.

  Args:
    config: the derived model's config (config.method a "ptq_*" variant, config.sparsity 0, its seed).
    source_dir: the dense model's folder (its model.h5 and predictions must exist).
    workdir: the derived model's folder: model.tflite, metrics.json and `<name>.tfrecord/.json` are written there.
    representative: float images for full int8 calibration (default: `representative_images(config.data)`).
  Returns the metrics dict. A finished derived model is left as it is.
  """
  from pie import data as data_lib  # pylint: disable=g-import-not-at-top
  from pie import io_utils  # pylint: disable=g-import-not-at-top
  from pie import quantization  # pylint: disable=g-import-not-at-top
  from pie import training  # pylint: disable=g-import-not-at-top
  variant = get_variant(config.method)
  if variant.kind != "derived":
    raise PieError(f"derive_ptq needs a ptq_* method, got {config.method!r}")
  paths = training.model_paths(workdir, config)
  if training.is_finished(workdir, config):
    log(f"{paths['name']}: already finished in {workdir}; nothing to do")
    return io_utils.read_json(paths["metrics"])
  source_config = training.dense_config(config)
  if not training.is_finished(source_dir, source_config):
    raise PieError(f"{paths['name']}: its dense model in {source_dir} is not finished")
  start = time.time()
  io_utils.makedirs(workdir)
  model = training.load_model(os.path.join(source_dir, "model.h5"))
  if variant.ptq_mode == "full_int8" and representative is None:
    representative = representative_images(config.data)
  tflite_bytes = quantization.quantize_model(model, variant.ptq_mode, representative)
  io_utils.write_bytes(os.path.join(workdir, "model.tflite"), tflite_bytes)
  dataset = dataset or data_lib.load_dataset(config.data)
  info = dataset.info
  arrays = predict_tflite(tflite_bytes, dataset, config.get("eval_batch_size", 256), top_k=config.get("top_k", 5),
                          with_logits=config.get("export_logits", False), log=lambda m: log(f"{paths['name']}: {m}"))
  scope = config.pruning.get("scope", "all_but_classifier")
  sparsity_report = measure_sparsity(model, _scope_names(model, scope))
  size = quantization.model_size_report(tflite_bytes)
  source_name = model_name(DENSE, 0.0, config.seed)
  extra = {"method": config.method, "source_model": source_name, "ptq_mode": variant.ptq_mode,
           "representative_examples": (int(len(representative)) if variant.ptq_mode == "full_int8" else 0),
           **compression_fields(size)}
  metadata = training.prediction_metadata(config, info, sparsity_report, extra)
  metrics = {"name": paths["name"], "method": config.method, "source_model": source_name,
             **training.eval_metrics(arrays, info.num_classes), "target_sparsity": 0.0, "measured_sparsity": sparsity_report["overall"],
             "bits_per_weight": extra["bits_per_weight"], "compressed_bytes": extra["compressed_bytes"],
             "wall_seconds": round(time.time() - start, 2), "config_hash": metadata["config_hash"],
             "seed": int(config.seed)}
  training.write_outputs(paths, arrays, metadata, metrics)
  log(f"{paths['name']}: top-1 {metrics['top1']:.4f}, {extra['bits_per_weight']:.2f} bits/weight, "
      f"{extra['compressed_bytes']} bytes gzip, {metrics['wall_seconds']:.1f}s")
  return metrics
