"""The method registry: every population of a study is a registered method, and its entry carries its behaviour.

A study compares populations. The dense population (method "dense", sparsity 0) is the baseline of every other one;
each variant is one compression method, and each (method, level) pair is one population compared against the dense
one with the same analysis. The name in a config (`config.method`, `config.variants`, `config.controls`) is a key of
this registry; the entry (`get_variant(name)`) is what the rest of pie asks, instead of testing names. Variants
(`VARIANTS`):

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
    (`pie.ptq`), level 0. Nothing is trained: each derived model belongs to the dense model of the same seed, and
    full int8 calibrates on the first `PTQ_REPRESENTATIVE_EXAMPLES` training examples.

Controls (`config.controls`, see `CONTROLS`) are populations in which nothing is compressed, trained and analysed like
any other, to measure what seed noise alone does (an A/A comparison with the dense population):

  * "dense_replicate": a second dense population, seeds disjoint from the dense one's (seed + number of seeds).
  * "sham": the magnitude-pruning wrappers, schedule and callbacks at a negligible target (`SHAM_SPARSITY`), with the
    dense seeds: separates what the training machinery does from what sparsity does.

What an entry knows (`Variant`; one subclass per family of methods): its kind ("dense", "control", "pruning",
"training", "derived") and fixed level, its model names, how it wraps a model for training and with which callbacks
(`wrap`), which summaries it writes (`summaries`), the model it exports (`finalize`, and `to_tflite` when the
deployed model is a TFLite conversion), the structure it promises (`structure`), whether its target sparsity is held
to `SPARSITY_TOLERANCE` (`checks_sparsity`, `sparsity_problem`), how its size is measured (`size_report`, sparse
storage or not), whether a compiled model can be reused for the next seed (`reusable`), and for derived methods how
the dense model is converted (`quantize`). Adding a method: docs/compression_methods.md.

Every export records `method`, the measured sparsity, `bits_per_weight` and `compressed_bytes` (gzip level 9 of the
exported TFLite flatbuffer, via `pie.quantization.model_size_report`); the full size report is kept under
`compression`. Keras models (dense, pruned, clustered) are measured as float32 TFLite flatbuffers; pruned ones with
TFLite's sparse storage (`sparse_weights=True`), so that `bits_per_weight` counts what sparse storage saves.

The registry sits low in pie's imports: it imports only pie.errors, and pie.pruning / pie.quantization (below it)
inside the hooks that build or convert models, which load TensorFlow and TF-MOT on first use. `import pie.variants`
loads no TensorFlow, so every module can ask it.
"""

import collections
import dataclasses
import re
from typing import Optional

import numpy as np

from pie.errors import PieError

DENSE = "dense"
MAGNITUDE = "magnitude"
DEFAULT_METHOD = MAGNITUDE  # the method of config.method when a config does not set it
DENSE_REPLICATE = "dense_replicate"
SHAM = "sham"
SHAM_SPARSITY = 0.001  # a negligible target: the pruning machinery runs, almost nothing is removed
PTQ_REPRESENTATIVE_EXAMPLES = 100
DEFAULT_NUM_CLUSTERS = 16
M_BY_N = (2, 4)
# A method that promises its target (`Variant.checks_sparsity`) must measure within 0.5 percentage points of it: in
# training, where a miss is an error, and in the validation of a study (the default of its tolerance).
SPARSITY_TOLERANCE = 0.005
# The key of the dense population among a study's (method, level) populations.
DENSE_KEY = (DENSE, 0.0)
# summary.json's `role` of a population: DENSE for the dense one, else one of these.
CONTROL_ROLE = "control"
COMPRESSED_ROLE = "pruned"


@dataclasses.dataclass(frozen=True)
class Variant:
  """One registered method: the dense baseline, a control or a compression method.

  The hooks of the base class train the plain model and export it as it is; each family of methods is a subclass
  that overrides the hooks and behaviour flags it changes.

  name: the name configs use.
  kind: "dense" (the baseline), "pruning" (trained with a sparsity level; its level-0 model is the dense one),
    "training" (a whole population trained with the method, level 0), "derived" (made from each finished dense
    model without training) or "control" (a population where nothing is compressed: the noise floor).
  prefix: what model names of this method start with; "" for the dense and magnitude models, which are named,
    keyed (`Study.levels`) and tabulated by their level alone (`named_by_level`).
  fixed_level: the only level of the method (2:4 is 0.5 by construction), or None for config.sparsity_levels.
  ptq_mode: the `pie.quantization` mode of a derived post-training-quantization method.
  """

  name: str
  kind: str
  prefix: str
  fixed_level: Optional[float] = None
  ptq_mode: Optional[str] = None

  # Behaviour flags, set per subclass.
  checks_sparsity = False  # the exported model must reach its target within SPARSITY_TOLERANCE
  sparse_storage = False  # its size is measured with TFLite's sparse storage (it holds pruned weights)
  pruning_summaries = False  # it trains under TF-MOT pruning wrappers, whose PruningSummaries go to TensorBoard
  reusable = False  # a compiled model can be reused for the next seed (train_and_export(reuse_traced=True))
  exports_tflite = False  # the deployed model is a TFLite conversion (`to_tflite`), not the Keras model

  @property
  def named_by_level(self):
    """Dense and magnitude models: "sparsity90_seed3", `Study.levels`, and no `method` column in a study of them."""
    return not self.prefix

  @property
  def derived(self):
    return self.kind == "derived"

  def model_name(self, sparsity, seed):
    """File-system name of this method's model at (sparsity, seed); `sparsity` is the model's effective level."""
    if self.named_by_level or self.kind == "pruning":
      return f"{self.prefix}sparsity{round(float(sparsity) * 100, 2):g}_seed{int(seed)}"
    return f"{self.prefix}seed{int(seed)}"

  def wrap(self, model, config, job, total_steps):  # pylint: disable=unused-argument
    """(model to train, extra callbacks) for one model of this method (`job`: its Job, for level and seed)."""
    return model, []

  def summaries(self, log_dir):
    """The TensorBoard callback: TF-MOT's PruningSummaries (loss, accuracy, sparsity) under pruning wrappers."""
    if self.pruning_summaries:
      import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top

      return tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir, write_graph=False)
    import tf_keras as keras  # pylint: disable=g-import-not-at-top

    return keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False)

  def finalize(self, model, callbacks=()):  # pylint: disable=unused-argument
    """The Keras model to export: wrappers stripped, masks applied (the trained model itself by default)."""
    return model

  def structure(self, model, layer_names):  # pylint: disable=unused-argument
    """What the method promises, checked on the exported model's kernels ({} when it promises nothing); raises
    PieError when it does not hold."""
    return {}

  def sparsity_problem(self, measured, target, tolerance=SPARSITY_TOLERANCE):
    """Why a measured sparsity fails the target this method promises, or None (also for methods without one: 2:4
    cannot prune layers with under 4 input channels; quantization and clustering have no sparsity target)."""
    if not self.checks_sparsity or abs(measured - target) <= tolerance:
      return None
    return f"measured sparsity {measured:.4f} is more than {tolerance * 100:g} points from the target {target:g}"

  def to_tflite(self, model):  # pylint: disable=unused-argument
    """The deployed TFLite flatbuffer when the method exports one (`exports_tflite`), else None."""
    return None

  def size_report(self, model):
    """Size report of the exported Keras model as a float32 TFLite flatbuffer (sparse storage for pruned weights)."""
    from pie import quantization  # pylint: disable=g-import-not-at-top

    report = quantization.keras_model_size_report(model, sparse_weights=self.sparse_storage)
    report.pop("layer_sparsity", None)
    return report


class Dense(Variant):
  """The plain model, trained and exported as it is: the dense baseline and its replicate control."""

  reusable = True


class MagnitudePruning(Variant):
  """TF-MOT gradual magnitude pruning with the polynomial schedule of config.pruning (`pie.pruning`); the sham
  control is this at `SHAM_SPARSITY`."""

  checks_sparsity = True
  sparse_storage = True
  pruning_summaries = True
  reusable = True

  def wrap(self, model, config, job, total_steps):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    from pie import pruning  # pylint: disable=g-import-not-at-top

    begin, end, frequency = pruning.schedule_steps(config.pruning, total_steps)
    return pruning.apply_pruning(model, job.sparsity, begin, end, frequency, _scope(config)), [
        tfmot.sparsity.keras.UpdatePruningStep()
    ]

  def finalize(self, model, callbacks=()):
    from pie import pruning  # pylint: disable=g-import-not-at-top

    return pruning.strip_pruning(model)


class MByNPruning(Variant):
  """M:N structured sparsity (`M_BY_N`), masked once at the end of the magnitude window, then fine-tuned."""

  sparse_storage = True
  pruning_summaries = True

  def wrap(self, model, config, job, total_steps):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    from pie import pruning  # pylint: disable=g-import-not-at-top

    _, end, _ = pruning.schedule_steps(config.pruning, total_steps)
    # Fires once, at the end of the magnitude window (see the module docstring); the value 0.5 is not used by the
    # m-by-n mask, which always removes 2 of 4.
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=int(end), end_step=int(end), frequency=1)
    wrapped = _clone_wrapping(
        model,
        layers_in_scope(model, _scope(config)),
        lambda layer: tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=schedule, sparsity_m_by_n=M_BY_N
        ),
    )
    return wrapped, [tfmot.sparsity.keras.UpdatePruningStep()]

  def finalize(self, model, callbacks=()):
    from pie import pruning  # pylint: disable=g-import-not-at-top

    return pruning.strip_pruning(model)

  def structure(self, model, layer_names):
    """The pattern in every block of layers with >= 4 input channels (those with fewer are listed as dense or partly
    dense)."""
    m, n = M_BY_N
    layers = {name: m_by_n_report(kernel, m, n) for name, kernel in kernels(model, layer_names).items()}
    broken = [name for name, r in layers.items() if r["applies"] and r["blocks_violating"]]
    if broken:
      raise PieError(
          f"{m}:{n} pattern broken in layers {broken}: "
          + ", ".join(
              f"{name} {layers[name]['blocks_violating']}/{layers[name]['num_blocks']} blocks" for name in broken
          )
      )
    return {
        "m_by_n": f"{m}:{n}",
        "layers": layers,
        "layers_with_pattern": sorted(k for k, r in layers.items() if r["applies"]),
        "layers_left_dense_or_partly": sorted(k for k, r in layers.items() if not r["applies"]),
    }


class RandomPruning(Variant):
  """Random-order pruning on the magnitude schedule (`make_random_pruning_callback`)."""

  checks_sparsity = True
  sparse_storage = True

  def wrap(self, model, config, job, total_steps):
    from pie import pruning  # pylint: disable=g-import-not-at-top

    begin, end, frequency = pruning.schedule_steps(config.pruning, total_steps)
    return model, [
        make_random_pruning_callback(
            model, layers_in_scope(model, _scope(config)), float(job.sparsity), begin, end, frequency, int(job.seed)
        )
    ]

  def finalize(self, model, callbacks=()):
    """The masks of the last step applied (the callback masks before each batch, so the last update is applied)."""
    for callback in callbacks:
      if hasattr(callback, "apply"):
        callback.apply(int(model.optimizer.iterations.numpy()))
    return model


class QuantizationAwareTraining(Variant):
  """`quantize_model` for training; the deployed model is its int8 TFLite conversion."""

  exports_tflite = True

  def wrap(self, model, config, job, total_steps):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top

    return tfmot.quantization.keras.quantize_model(model), []

  def to_tflite(self, model):
    """The int8 TFLite flatbuffer of the QAT model (the converter uses the trained fake-quant ranges)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return bytes(converter.convert())


class WeightClustering(Variant):
  """`cluster_weights` on the layers pruning would touch, from the start of training; `strip_clustering` after."""

  def wrap(self, model, config, job, total_steps):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top

    num_clusters = int(config.get("clustering", {}).get("num_clusters", DEFAULT_NUM_CLUSTERS))
    if num_clusters < 2:
      raise PieError(f"config.clustering.num_clusters must be >= 2, got {num_clusters}")
    init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
    wrapped = _clone_wrapping(
        model,
        layers_in_scope(model, _scope(config)),
        lambda layer: tfmot.clustering.keras.cluster_weights(
            layer, number_of_clusters=num_clusters, cluster_centroids_init=init
        ),
    )
    return wrapped, []

  def finalize(self, model, callbacks=()):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top

    return tfmot.clustering.keras.strip_clustering(model)

  def structure(self, model, layer_names):
    """At most num_clusters distinct values per clustered kernel (recorded; the counts are the check)."""
    counts = {name: unique_values(kernel) for name, kernel in kernels(model, layer_names).items()}
    return {"unique_values_per_kernel": counts, "max_unique_values": max(counts.values())}


class PostTrainingQuantization(Variant):
  """A TFLite conversion of each finished dense model (`pie.ptq.derive_ptq`); nothing is trained."""

  def wrap(self, model, config, job, total_steps):
    raise PieError(f"method {self.name!r} is not trained: derived variants are made from finished dense models")

  @property
  def needs_representative(self):
    """Full int8 calibrates its activation ranges on representative images (`pie.ptq.representative_images`)."""
    return self.ptq_mode == "full_int8"

  def quantize(self, model, representative=None):
    """The quantized flatbuffer of a dense Keras model (`pie.quantization.quantize_model` in this mode)."""
    from pie import quantization  # pylint: disable=g-import-not-at-top

    return quantization.quantize_model(model, self.ptq_mode, representative)


# ---------------------------------------------------------------------------------------------------------------------
# The registry.

VARIANTS = collections.OrderedDict(
    (v.name, v)
    for v in (
        MagnitudePruning(MAGNITUDE, "pruning", ""),
        MByNPruning("2:4", "pruning", "2of4_", fixed_level=0.5),
        RandomPruning("random", "pruning", "random_"),
        QuantizationAwareTraining("qat", "training", "qat_", fixed_level=0.0),
        WeightClustering("cluster", "training", "cluster_", fixed_level=0.0),
        PostTrainingQuantization("ptq_float16", "derived", "ptq_float16_", fixed_level=0.0, ptq_mode="float16"),
        PostTrainingQuantization(
            "ptq_dynamic_int8", "derived", "ptq_dynamic_int8_", fixed_level=0.0, ptq_mode="dynamic_int8"
        ),
        PostTrainingQuantization("ptq_full_int8", "derived", "ptq_full_int8_", fixed_level=0.0, ptq_mode="full_int8"),
    )
)
CONTROLS = collections.OrderedDict(
    (v.name, v)
    for v in (
        Dense(DENSE_REPLICATE, "control", "dense_replicate_", fixed_level=0.0),
        MagnitudePruning(SHAM, "control", "sham_", fixed_level=SHAM_SPARSITY),
    )
)
# Every registered method, in the order populations are listed: dense first, then the controls, then the compression
# methods.
METHODS = collections.OrderedDict(
    [(DENSE, Dense(DENSE, "dense", "", fixed_level=0.0)), *CONTROLS.items(), *VARIANTS.items()]
)
METHOD_ORDER = tuple(METHODS)


def get_variant(method):
  """The registry entry of a method name (the dense baseline and the controls included)."""
  if method not in METHODS:
    raise PieError(
        f"unknown compression method {method!r} (config.method / config.variants): choose one of " f"{tuple(VARIANTS)}"
    )
  return METHODS[method]


def is_dense(method):
  """True for the dense population, the baseline every other one is compared with."""
  return method == DENSE


def is_control(method):
  """True for the populations in which nothing is compressed (config.controls)."""
  return method in CONTROLS


def is_pruning(method):
  """True for pruning methods, whose populations are levels of sparsity (False for names not registered)."""
  return method in METHODS and METHODS[method].kind == "pruning"


def named_by_level(method):
  """True for dense and magnitude populations: named "sparsity90_seed3", called "level 0.9", kept in `Study.levels`;
  a study of only them writes no `method` column (False for names not registered)."""
  return method in METHODS and METHODS[method].named_by_level


def role(method):
  """summary.json's `role` of a population: DENSE, CONTROL_ROLE or COMPRESSED_ROLE (any other method)."""
  return DENSE if is_dense(method) else CONTROL_ROLE if is_control(method) else COMPRESSED_ROLE


def recorded_method(method, dense_level):
  """The method of an export or summary level: the one it records, else (written before compression methods
  existed) dense for the dense level and magnitude pruning for the others."""
  return method or (DENSE if dense_level else MAGNITUDE)


def sparsity_problem(method, measured, target, tolerance=SPARSITY_TOLERANCE):
  """`Variant.sparsity_problem` of a recorded method; None for a method this registry does not know."""
  return METHODS[method].sparsity_problem(measured, target, tolerance) if method in METHODS else None


def check_sparsity(sparsity, field="config.sparsity"):
  """A target sparsity, checked where a config gives one (the launcher's grid, one model's config): in [0, 1)."""
  if not 0.0 <= float(sparsity) < 1.0:
    raise PieError(f"{field} must lie in [0, 1), got {sparsity}")
  return float(sparsity)


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
    if method not in VARIANTS:
      raise PieError(
          f"unknown compression method {method!r} in config.variants: choose one of {tuple(VARIANTS)} "
          "(the dense population is part of every study)"
      )
  duplicates = sorted({m for m in variants if variants.count(m) > 1})
  if duplicates:
    raise PieError(f"config.variants lists {duplicates} more than once")
  return variants


def study_variants(config):
  """config.variants, defaulting to the single config.method (magnitude): today's magnitude-only study."""
  return check_variants(config.get("variants", None) or (config.get("method", DEFAULT_METHOD),))


def effective_method(method, sparsity):
  """The method a model records: "dense" for sparsity 0 of a pruning method, else the method itself.

  Raises PieError for a sparsity outside [0, 1) and for combinations that are not a model of any study: a training
  variant with a sparsity, a pruning variant at another level than its fixed one.
  """
  check_sparsity(sparsity)
  variant = get_variant(method)
  if variant.kind == "dense":
    if sparsity != 0:
      raise PieError(f"method 'dense' has sparsity 0, got config.sparsity={sparsity}")
    return DENSE
  if variant.kind == "control":
    if abs(sparsity - variant.fixed_level) > 1e-9:
      raise PieError(f"control {method!r} has sparsity {variant.fixed_level}, got config.sparsity={sparsity}")
    return method
  if variant.kind == "pruning":
    if sparsity == 0:
      return DENSE
    if variant.fixed_level is not None and abs(sparsity - variant.fixed_level) > 1e-9:
      raise PieError(
          f"method {method!r} has sparsity {variant.fixed_level} by construction, got config.sparsity=" f"{sparsity}"
      )
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
  return get_variant(effective_method(method, float(sparsity))).model_name(sparsity, seed)


_NAME_SEED = re.compile(r"seed(\d+)")
_NAME_SPARSITY = re.compile(r"sparsity(\d+(?:\.\d+)?)")


def parse_model_name(name):
  """(method, sparsity, seed) that a directory or model name states, or None: the inverse of `model_name`, for runs
  trained outside a study.

  The rule: `seed<N>` gives the seed; `sparsity<P>` the level in percent (`sparsity90` is 0.9, `sparsity0.1` 0.001);
  a registered method's model-name prefix just before them (`2of4_sparsity50_seed1`, `qat_seed3`,
  `dense_replicate_seed7`, after the start of the name or a non-alphanumeric character) names the method, else it is
  magnitude pruning (dense at level 0). A method with a fixed level needs no `sparsity<P>`; the others do. Other text
  around them is ignored: `cnn-sparsity90-seed3-2024` is magnitude pruning at 0.9 with seed 3.
  """
  seed = _NAME_SEED.search(name)
  if seed is None:
    return None
  method = DEFAULT_METHOD
  longest = ""
  for candidate, variant in METHODS.items():
    prefix = variant.prefix
    if len(prefix) > len(longest) and re.search(r"(?:^|[^A-Za-z0-9])" + re.escape(prefix) + r"(?:sparsity|seed)", name):
      method, longest = candidate, prefix
  level = _NAME_SPARSITY.search(name)
  if level is not None:
    sparsity = round(float(level.group(1)) / 100, 8)
  elif METHODS[method].fixed_level is not None and longest:
    sparsity = METHODS[method].fixed_level
  else:
    return None
  return method, sparsity, int(seed.group(1))


# ---------------------------------------------------------------------------------------------------------------------
# The models of a study.


@dataclasses.dataclass(frozen=True)
class Job:
  """One model of a study: trained ("train") or derived from the dense model `source` ("derive").

  The launcher resolves every Job of the grid once (`study_jobs`) and hands each to the worker that trains or derives
  it; a model trained from its config alone gets its Job from `config_job`.
  """

  method: str  # effective method ("dense" for the baseline)
  sparsity: float
  seed: int
  name: str
  kind: str
  source: Optional[str] = None


def _job(method, sparsity, seed):
  """The Job of an effective method at (sparsity, seed)."""
  if get_variant(method).derived:
    return Job(
        method, sparsity, seed, model_name(method, sparsity, seed), "derive", source=model_name(DENSE, 0.0, seed)
    )
  return Job(method, sparsity, seed, model_name(method, sparsity, seed), "train")


def config_job(config):
  """The Job of one model's config (config.method, config.sparsity, config.seed), checked (`effective_method`)."""
  sparsity = float(config.sparsity)
  return _job(effective_method(config.get("method", DEFAULT_METHOD), sparsity), sparsity, int(config.seed))


def study_jobs(config, levels_and_seeds):
  """Every model of a study, dense first, then the controls, then the trained variants, then the derived ones.

  Args:
    config: the study config (reads config.variants / config.method, config.controls).
    levels_and_seeds: the [(sparsity, seed)] grid of the magnitude study, dense level included
      (`pie.population.grid`, which checks it).
  """
  variants = study_variants(config)
  seeds = sorted({seed for _, seed in levels_and_seeds})
  levels = sorted({s for s, _ in levels_and_seeds if s > 0})
  jobs = [_job(DENSE, 0.0, seed) for seed in seeds]
  for control in study_controls(config):
    # The replicate's seeds follow the dense ones (disjoint); the sham reuses them, like every pruned level does.
    control_seeds = [seed + max(seeds) + 1 for seed in seeds] if control == DENSE_REPLICATE else seeds
    jobs += [_job(control, CONTROLS[control].fixed_level, seed) for seed in control_seeds]
  for method in variants:
    variant = VARIANTS[method]
    if variant.derived:
      continue
    method_levels = levels if variant.kind == "pruning" and variant.fixed_level is None else [variant.fixed_level]
    if variant.kind == "pruning" and variant.fixed_level is None and not method_levels:
      if method == DEFAULT_METHOD:
        continue  # config.sparsity_levels = (0.0,): a study of dense models only (a baseline, or an A/A study)
      raise PieError(f"method {method!r} needs a non-zero level in config.sparsity_levels")
    jobs += [_job(method, s, seed) for s in method_levels for seed in seeds]
  for method in variants:
    if VARIANTS[method].derived:
      jobs += [_job(method, 0.0, seed) for seed in seeds]
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
    counts = zeros[:, : full * n].reshape(zeros.shape[0], full, n).sum(axis=-1)
    violating += int((counts < m).sum())
    num_blocks += counts.size
  rest = channels - full * n
  if rest:
    need = max(0, m - (n - rest))
    counts = zeros[:, full * n :].sum(axis=-1)
    violating += int((counts < need).sum())
    num_blocks += counts.size
  return {
      "input_channels": int(channels),
      "applies": channels >= n,
      "num_blocks": int(num_blocks),
      "blocks_violating": violating,
      "sparsity": float(np.mean(kernel == 0)) if kernel.size else 0.0,
  }


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
  mask[order[: int(round(fraction * size))]] = 0.0
  return mask.reshape(shape)


# ---------------------------------------------------------------------------------------------------------------------
# What the hooks share: the layers a method compresses, wrapping them, reading their kernels.


def _scope(config):
  return config.pruning.get("scope", "all_but_classifier")


def layers_in_scope(model, scope):
  """The names of the layers `scope` (config.pruning.scope) selects: the layers a method compresses."""
  from pie import pruning  # pylint: disable=g-import-not-at-top

  names = set(pruning.prunable_layer_names(model, scope))
  if not names:
    raise PieError(f"scope {scope!r} selects no layer of model {model.name!r}")
  return names


def _clone_wrapping(model, names, wrap):
  import tf_keras as keras  # pylint: disable=g-import-not-at-top

  def clone(layer):
    if layer.name in names:
      return wrap(layer)
    return layer.__class__.from_config(layer.get_config())

  return keras.models.clone_model(model, clone_function=clone)


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
