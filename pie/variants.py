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
  * "sham": the magnitude-pruning wrappers, schedule and callbacks at a negligible target (`SHAM_SPARSITY`):
    separates what the training machinery does from what sparsity does. In the paired design its models are the
    dense twins fine-tuned for the same epochs, nothing (in effect) pruned: what fine-tuning alone does.

Seeds (`config.seed_design`, `SEED_DESIGNS`): "independent" (the default, the paper's design) gives every trained
population its own disjoint block of seeds, so that the dense replicate is the null of every level; "shared" starts
model i of every level from dense seed i (same initialisation and data order: twins), and its null is a control with
the same shared seeds, the sham. Either way model i of a population is paired with dense model i (`Job.dense_seed`:
its twin in the paired design, its distillation teacher, its partner in the single-pair view).

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
# config.seed_design: every trained population on its own block of seeds, or every level on the dense seeds.
INDEPENDENT_SEEDS = "independent"
SHARED_SEEDS = "shared"
SEED_DESIGNS = (INDEPENDENT_SEEDS, SHARED_SEEDS)
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
  # With config.init_from_dense, its models start from the finished dense model of their seed and are fine-tuned
  # (`wrap_trained`); the dense population, the replicate and derived methods are never fine-tuned.
  fine_tunes_from_dense = False

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

  def wrap_trained(self, model, config, job, total_steps):
    """(model to fine-tune, extra callbacks) for a model that starts from its trained dense twin.

    `model` holds the dense twin's weights. The method's own wrapper (`wrap`) is applied to it over the fine-tuning
    steps (`total_steps`), as TF-MOT's guide prunes a pretrained model; layers the wrapper re-creates instead of
    wrapping (the classifier outside the pruning scope, say) get the trained values back, so that the model to
    fine-tune computes what the dense twin computes until its method changes it.
    """
    if not self.fine_tunes_from_dense:
      raise PieError(
          f"method {self.name!r} does not start from a dense model: only compressed methods that train are "
          "fine-tuned from their dense twin (config.init_from_dense)",
          parameter="init_from_dense",
      )
    wrapped, callbacks = self.wrap(model, config, job, total_steps)
    _restore_recreated_layers(wrapped, model)
    return wrapped, callbacks

  @property
  def mitigation(self):
    """The `Mitigation` this population trains with (`MITIGATIONS`), or None."""
    return None

  def mitigation_params(self, config):  # pylint: disable=unused-argument
    """The resolved parameters of its mitigation (recorded as `mitigation_params`), or None without one."""
    return None

  def training(self, student, config, job, context):  # pylint: disable=unused-argument
    """How the wrapped model trains: a `TrainingSetup` (the model to fit, its loss, metrics, callbacks), or None for
    the plain cross-entropy on the model itself. Mitigated populations return their mitigation's."""
    return None

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

  fine_tunes_from_dense = True
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
  """M:N structured sparsity (`M_BY_N`), masked once at the end of the magnitude window, then fine-tuned; a model that
  starts from its trained dense twin is masked at the window's start (its weights are trained already)."""

  fine_tunes_from_dense = True
  sparse_storage = True
  pruning_summaries = True

  def wrap(self, model, config, job, total_steps):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    from pie import pruning  # pylint: disable=g-import-not-at-top

    begin, end, _ = pruning.schedule_steps(config.pruning, total_steps)
    # Fires once: at the end of the magnitude window when training from scratch (see the module docstring), at its
    # start when the weights come trained from the dense twin. The value 0.5 is not used by the m-by-n mask, which
    # always removes 2 of 4.
    step = int(begin if job.init_from else end)
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=step, end_step=step, frequency=1)
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

  fine_tunes_from_dense = True
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
    """The final masks applied (the callback masks before each batch, so the last update would be left unmasked);
    training always runs past the end of the pruning window, where the mask is the final one."""
    for callback in callbacks:
      if hasattr(callback, "finish"):
        callback.finish()
    return model


class QuantizationAwareTraining(Variant):
  """`quantize_model` for training; the deployed model is its int8 TFLite conversion."""

  fine_tunes_from_dense = True
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

  fine_tunes_from_dense = True

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
# Mitigations: training a compression method so that it does less harm.


@dataclasses.dataclass
class TrainingSetup:
  """How a mitigated model trains (`Variant.training`): the Keras model to fit (the student itself, or an outer model
  around it), its loss and metrics, extra callbacks, and what to record in the export's metadata
  (`mitigation_state`)."""

  model: object
  loss: object
  metrics: list
  callbacks: list
  record: dict


@dataclasses.dataclass(frozen=True)
class Mitigation:
  """A way to train a compression method so that it does less harm: one entry of `MITIGATIONS`.

  A mitigation applies to any compressed method that trains (`config.variants` entry "<method>+<mitigation>", or
  `config.mitigation` for one model), from scratch or from the dense twin; it changes the loss, never the
  compression, which stays the method's own entry. Its parameters are `config.mitigation_params` entries (the
  `parameters` keys, with their defaults); they are recorded in every export (`mitigation_params`) and, being part of
  the config, in the config hash.

  name: the name configs use. prefix: what its model names start with, before the method's own prefix.
  """

  name: str
  prefix: str
  parameters = ()  # ((key of config.mitigation_params, default), ...)

  def params(self, config):
    """Its parameters: config.mitigation_params over the defaults, checked (`check_params`)."""
    given = dict(config.get("mitigation_params", None) or {})
    unknown = sorted(set(given) - set(MITIGATION_PARAMETERS))
    if unknown:
      raise PieError(
          f"unknown config.mitigation_params {unknown}: the mitigations take {sorted(MITIGATION_PARAMETERS)}",
          parameter="mitigation_params",
      )
    params = {key: given.get(key, default) for key, default in self.parameters}
    self.check_params(params)
    return params

  def check_params(self, params):
    """Raises PieError for parameters it cannot train with."""

  def requires(self, params, dense_seed, dense_names):  # pylint: disable=unused-argument
    """The finished models its model needs (besides a dense twin it starts from), given the seed of the dense model
    it is paired with (`Job.dense_seed`) and the dense population's names: none by default."""
    return ()

  def training(self, student, config, params, job, context):
    """The `TrainingSetup` of `student` (the method-wrapped model) under this mitigation. `context` is what training
    offers: `load_model(name)`, `train_batches()` (the training split as at evaluation), `num_classes`, `log`."""
    raise NotImplementedError


def _label_smoothing(config):
  return float(config.get("label_smoothing", 0.0))


class Distillation(Mitigation):
  """Knowledge distillation from a dense teacher: (1 - weight) * CE + weight * T^2 * KL(teacher || student) at
  temperature T (`pie.mitigation.DistillationLoss`). The teacher is the dense model the student is paired with
  (`Job.dense_seed`: the paired design's twin), or the dense model named by `teacher`."""

  parameters = (("weight", 0.5), ("temperature", 4.0), ("teacher", None))

  def check_params(self, params):
    if not 0.0 <= float(params["weight"]) <= 1.0:
      raise PieError(
          f"config.mitigation_params.weight must lie in [0, 1], got {params['weight']}", parameter="mitigation_params"
      )
    if not float(params["temperature"]) > 0.0:
      raise PieError(
          f"config.mitigation_params.temperature must be > 0, got {params['temperature']}",
          parameter="mitigation_params",
      )
    if params["teacher"] is not None and not isinstance(params["teacher"], str):
      raise PieError(
          f"config.mitigation_params.teacher must be a dense model's name (e.g. 'sparsity0_seed0') or None (the dense "
          f"twin of each model), got {params['teacher']!r}",
          parameter="mitigation_params",
      )

  def teacher(self, params, dense_seed):
    return params["teacher"] or model_name(DENSE, 0.0, dense_seed)

  def requires(self, params, dense_seed, dense_names):
    return (self.teacher(params, dense_seed),)

  def training(self, student, config, params, job, context):
    from pie import mitigation  # pylint: disable=g-import-not-at-top

    teacher = self.teacher(params, job.dense_seed)
    num_classes = context.num_classes
    return TrainingSetup(
        model=mitigation.with_teacher(student, context.load_model(teacher)),
        loss=mitigation.DistillationLoss(
            num_classes, params["weight"], params["temperature"], label_smoothing=_label_smoothing(config)
        ),
        metrics=[mitigation.student_accuracy(num_classes)],
        callbacks=[],
        record={"teacher": teacher},
    )


class ClassReweighting(Mitigation):
  """Per-class loss weights, harder classes weighing more (`pie.mitigation.class_weights`): from the dense
  population's per-class error on the training split; `weights_update` "fixed" keeps them, "per_epoch" recomputes
  them at the start of every later epoch from the model being trained. Normalized so that the mean weight over the
  training examples is 1."""

  parameters = (("weights_update", "fixed"), ("smoothing", 0.02), ("power", 1.0))
  UPDATES = ("fixed", "per_epoch")

  def check_params(self, params):
    if params["weights_update"] not in self.UPDATES:
      raise PieError(
          f"config.mitigation_params.weights_update must be one of {self.UPDATES}, got {params['weights_update']!r}",
          parameter="mitigation_params",
      )
    if not (float(params["smoothing"]) > 0 and float(params["power"]) > 0):
      raise PieError(
          f"config.mitigation_params.smoothing and .power must be > 0, got {params['smoothing']} and "
          f"{params['power']}",
          parameter="mitigation_params",
      )

  def requires(self, params, dense_seed, dense_names):
    return tuple(dense_names)

  def training(self, student, config, params, job, context):
    from pie import mitigation  # pylint: disable=g-import-not-at-top

    error, count = context.dense_error(context.dense_names)
    weights = mitigation.class_weights(error, count, float(params["smoothing"]), float(params["power"]))
    loss = mitigation.ClassWeightedLoss(weights, label_smoothing=_label_smoothing(config))
    callbacks = []
    if params["weights_update"] == "per_epoch":
      callbacks.append(
          mitigation.ClassWeightUpdate(
              loss,
              student,
              context.train_batches,
              count,
              float(params["smoothing"]),
              float(params["power"]),
              log=context.log,
          )
      )
    return TrainingSetup(
        model=student,
        loss=loss,
        metrics=["accuracy"],
        callbacks=callbacks,
        record={"class_weights": [float(w) for w in weights], "dense_error": [float(e) for e in error]},
    )


class EqualizedLoss(Mitigation):
  """Cross-entropy plus penalty * sum_c p_c (L_c - L)^2 over each batch's classes (`pie.mitigation.EqualizedLoss`),
  after Tran et al. (NeurIPS 2022)."""

  parameters = (("penalty", 1.0),)

  def check_params(self, params):
    if not float(params["penalty"]) >= 0.0:
      raise PieError(
          f"config.mitigation_params.penalty must be >= 0, got {params['penalty']}", parameter="mitigation_params"
      )

  def training(self, student, config, params, job, context):
    from pie import mitigation  # pylint: disable=g-import-not-at-top

    return TrainingSetup(
        model=student,
        loss=mitigation.EqualizedLoss(params["penalty"], label_smoothing=_label_smoothing(config)),
        metrics=["accuracy"],
        callbacks=[],
        record={},
    )


MITIGATIONS = collections.OrderedDict(
    (m.name, m)
    for m in (
        Distillation("distill", "distill_"),
        ClassReweighting("class_reweight", "reweight_"),
        EqualizedLoss("equalized_loss", "eqloss_"),
    )
)
# Every key config.mitigation_params may hold (each mitigation reads its own).
MITIGATION_PARAMETERS = {key for m in MITIGATIONS.values() for key, _ in m.parameters}
# "magnitude+distill": a compression method and the mitigation it trains with (config.variants).
MITIGATION_SEPARATOR = "+"


@dataclasses.dataclass(frozen=True)
class MitigatedVariant(Variant):
  """A compression method trained with a mitigation ("magnitude+distill"): the method's entry does the compression
  (wrapping, finalizing, structure, sparsity, size), the mitigation's the loss (`training`). Named by the mitigation's
  prefix before the method's ("distill_sparsity90_seed3"), compared with the dense population like any population,
  and side by side with the unmitigated one in the report's "Mitigations compared"."""

  base: Optional[Variant] = None
  mitigation_entry: Optional[Mitigation] = None

  # A mitigation's training model and loss are built per model (a teacher, class weights): never reused.
  reusable = False

  checks_sparsity = property(lambda self: self.base.checks_sparsity)
  sparse_storage = property(lambda self: self.base.sparse_storage)
  pruning_summaries = property(lambda self: self.base.pruning_summaries)
  exports_tflite = property(lambda self: self.base.exports_tflite)
  fine_tunes_from_dense = property(lambda self: self.base.fine_tunes_from_dense)

  @property
  def mitigation(self):
    return self.mitigation_entry

  def mitigation_params(self, config):
    return self.mitigation_entry.params(config)

  def wrap(self, model, config, job, total_steps):
    return self.base.wrap(model, config, job, total_steps)

  def wrap_trained(self, model, config, job, total_steps):
    return self.base.wrap_trained(model, config, job, total_steps)

  def training(self, student, config, job, context):
    return self.mitigation_entry.training(student, config, self.mitigation_params(config), job, context)

  def summaries(self, log_dir):
    return self.base.summaries(log_dir)

  def finalize(self, model, callbacks=()):
    return self.base.finalize(model, callbacks)

  def structure(self, model, layer_names):
    return self.base.structure(model, layer_names)

  def to_tflite(self, model):
    return self.base.to_tflite(model)

  def size_report(self, model):
    return self.base.size_report(model)


def mitigated_name(method, mitigation):
  """The population name of a method trained with a mitigation: "magnitude+distill" (None: the method itself)."""
  return method if not mitigation else f"{method}{MITIGATION_SEPARATOR}{mitigation}"


_MITIGATED = {}


def _mitigated(method):
  """The MitigatedVariant of "<method>+<mitigation>", or a PieError saying what is wrong with the name."""
  base_name, _, mitigation_name = method.partition(MITIGATION_SEPARATOR)
  if base_name not in VARIANTS:
    raise PieError(
        f"unknown compression method {base_name!r} in {method!r}: a mitigation applies to one of "
        f"{tuple(m for m, v in VARIANTS.items() if not v.derived)}"
    )
  if mitigation_name not in MITIGATIONS:
    raise PieError(
        f"unknown mitigation {mitigation_name!r} in {method!r} (config.mitigation / config.variants): choose one of "
        f"{tuple(MITIGATIONS)}",
        parameter="mitigation",
    )
  base = VARIANTS[base_name]
  if base.kind not in ("pruning", "training"):
    raise PieError(f"{method!r}: method {base_name!r} is not trained, so it cannot train with a mitigation")
  if method not in _MITIGATED:
    entry = MITIGATIONS[mitigation_name]
    _MITIGATED[method] = MitigatedVariant(
        method, base.kind, entry.prefix + base.prefix, base.fixed_level, base=base, mitigation_entry=entry
    )
  return _MITIGATED[method]


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
  """The registry entry of a method name (the dense baseline and the controls included), or of a method trained with
  a mitigation ("magnitude+distill", a `MitigatedVariant`)."""
  if method in METHODS:
    return METHODS[method]
  if isinstance(method, str) and MITIGATION_SEPARATOR in method:
    return _mitigated(method)
  raise PieError(
      f"unknown compression method {method!r} (config.method / config.variants): choose one of " f"{tuple(VARIANTS)}"
  )


def _lookup(method):
  """The entry of a method name, or None for a name this registry does not know (a recorded method, say)."""
  try:
    return get_variant(method)
  except PieError:
    return None


def is_dense(method):
  """True for the dense population, the baseline every other one is compared with."""
  return method == DENSE


def is_control(method):
  """True for the populations in which nothing is compressed (config.controls)."""
  return method in CONTROLS


def is_pruning(method):
  """True for pruning methods, whose populations are levels of sparsity (False for names not registered)."""
  variant = _lookup(method)
  return variant is not None and variant.kind == "pruning"


def named_by_level(method):
  """True for dense and magnitude populations: named "sparsity90_seed3", called "level 0.9", kept in `Study.levels`;
  a study of only them writes no `method` column (False for names not registered)."""
  variant = _lookup(method)
  return variant is not None and variant.named_by_level


def role(method):
  """summary.json's `role` of a population: DENSE, CONTROL_ROLE or COMPRESSED_ROLE (any other method)."""
  return DENSE if is_dense(method) else CONTROL_ROLE if is_control(method) else COMPRESSED_ROLE


def recorded_method(method, dense_level):
  """The method of an export or summary level: the one it records, else (written before compression methods
  existed) dense for the dense level and magnitude pruning for the others."""
  return method or (DENSE if dense_level else MAGNITUDE)


def sparsity_problem(method, measured, target, tolerance=SPARSITY_TOLERANCE):
  """`Variant.sparsity_problem` of a recorded method; None for a method this registry does not know."""
  variant = _lookup(method)
  return variant.sparsity_problem(measured, target, tolerance) if variant is not None else None


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
  """Sort key of a method: dense first, then the registry order, each method's mitigated populations right after it
  (in the order of `MITIGATIONS`), unknown methods last by name."""
  if method in METHOD_ORDER:
    return (METHOD_ORDER.index(method), 0, "")
  variant = _lookup(method)
  if isinstance(variant, MitigatedVariant):
    return (METHOD_ORDER.index(variant.base.name), 1 + tuple(MITIGATIONS).index(variant.mitigation.name), "")
  return (len(METHOD_ORDER), 0, method)


def base_method(method):
  """The compression method of a population: "magnitude" for "magnitude+distill", the method itself otherwise."""
  variant = _lookup(method)
  return variant.base.name if isinstance(variant, MitigatedVariant) else method


def mitigation_of(method):
  """The mitigation name of a population ("distill" for "magnitude+distill"), or None."""
  variant = _lookup(method)
  return variant.mitigation.name if variant is not None and variant.mitigation is not None else None


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
    if MITIGATION_SEPARATOR in str(method):
      _mitigated(method)  # raises for an unknown method or mitigation, or one that does not train
    elif method not in VARIANTS:
      raise PieError(
          f"unknown compression method {method!r} in config.variants: choose one of {tuple(VARIANTS)}, each "
          f"optionally with a mitigation ('magnitude+distill'; mitigations {tuple(MITIGATIONS)}) (the dense "
          "population is part of every study)"
      )
  duplicates = sorted({m for m in variants if variants.count(m) > 1})
  if duplicates:
    raise PieError(f"config.variants lists {duplicates} more than once")
  return variants


def study_variants(config):
  """config.variants, defaulting to the single config.method (magnitude): today's magnitude-only study."""
  if config.get("mitigation", None):
    raise PieError(
        f"config.mitigation ({config.mitigation!r}) is the mitigation of one model (train.train); a study lists its "
        f"mitigated populations in config.variants, e.g. ('magnitude', 'magnitude+{config.mitigation}')",
        parameter="mitigation",
    )
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


def config_effective_method(config):
  """The effective method of one model's config (see `effective_method`)."""
  return effective_method(config_method(config), float(config.sparsity))


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

  source: the dense model that a derived model is made from, or that a trained model starts from
    (config.init_from_dense: its dense twin); None for a model trained from scratch.
  requires: the models that must be finished before this one can start (the launcher defers it until they are).
  dense_seed: the seed of the dense model this one is paired with (its twin, teacher or single-pair partner): its own
    seed in the shared design, seed mod num_seeds in the independent one (`dense_seed`).
  """

  method: str  # effective method ("dense" for the baseline)
  sparsity: float
  seed: int
  name: str
  kind: str
  source: Optional[str] = None
  requires: tuple = ()
  dense_seed: Optional[int] = None

  @property
  def init_from(self):
    """The dense twin a trained model starts from (recorded as `init_from` in its metadata), or None."""
    return self.source if self.kind == "train" else None


def init_from_dense(config):
  """config.init_from_dense, checked: whether the study's compressed models start from their trained dense twins
  (the paired design); then config.finetune_epochs must be a positive number of epochs."""
  value = config.get("init_from_dense", False)
  if not isinstance(value, (bool, np.bool_)):
    raise PieError(f"config.init_from_dense must be True or False, got {value!r}", parameter="init_from_dense")
  if value:
    finetune_epochs(config)
  return bool(value)


def finetune_epochs(config):
  """config.finetune_epochs: the epochs a model started from its dense twin is fine-tuned for (a positive int)."""
  epochs = config.get("finetune_epochs", None)
  if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
    raise PieError(
        f"config.finetune_epochs must be a positive number of epochs when config.init_from_dense is set, got "
        f"{epochs!r}",
        parameter="finetune_epochs",
    )
  return int(epochs)


def training_epochs(config, job):
  """The epochs a job's model trains: config.finetune_epochs when it starts from its dense twin (`job.init_from`),
  else config.num_epochs."""
  return finetune_epochs(config) if job.init_from else config.num_epochs


def seed_design(config):
  """config.seed_design, checked: `INDEPENDENT_SEEDS` (the default) or `SHARED_SEEDS`."""
  design = config.get("seed_design", None) or INDEPENDENT_SEEDS
  if design not in SEED_DESIGNS:
    raise PieError(f"config.seed_design must be one of {SEED_DESIGNS}, got {design!r}", parameter="seed_design")
  return design


def dense_seed(config, seed):
  """The seed of the dense model that the model of `seed` is paired with: the same seed in the shared design (and for
  a model without a study grid), seed mod config.num_seeds in the independent one (model i of every block)."""
  num_seeds = int(config.get("num_seeds", 0) or 0)
  if seed_design(config) == SHARED_SEEDS or num_seeds < 1:
    return int(seed)
  return int(seed) % num_seeds


def population_seeds(config, block, seeds):
  """The seeds of the `block`-th trained population of a study (the dense one is block 0): the dense seeds in the
  shared design, `block * len(seeds) + seed` in the independent one (disjoint blocks)."""
  if seed_design(config) == SHARED_SEEDS:
    return list(seeds)
  return [block * len(seeds) + seed for seed in seeds]


def _job(method, sparsity, seed, config=None, dense_seeds=(), paired_seed=None):
  """The Job of an effective method at (sparsity, seed), paired with the dense model of `paired_seed` (default: the
  same seed). With a config: its models start from their dense twins when config.init_from_dense (every method that
  can), and a mitigation requires what it needs (a teacher, the dense population of `dense_seeds`)."""
  paired_seed = int(seed) if paired_seed is None else int(paired_seed)
  dense = model_name(DENSE, 0.0, paired_seed)
  name = model_name(method, sparsity, seed)
  variant = get_variant(method)
  if variant.derived:
    return Job(method, sparsity, seed, name, "derive", source=dense, requires=(dense,), dense_seed=paired_seed)
  source = dense if config is not None and init_from_dense(config) and variant.fine_tunes_from_dense else None
  requires = (source,) if source else ()
  if variant.mitigation is not None:
    dense_names = [model_name(DENSE, 0.0, s) for s in dense_seeds]
    extra = variant.mitigation.requires(variant.mitigation_params(config), paired_seed, dense_names)
    requires += tuple(n for n in extra if n not in requires)
  return Job(method, sparsity, seed, name, "train", source=source, requires=requires, dense_seed=paired_seed)


def config_method(config):
  """The method of one model's config as given: config.method, with config.mitigation when set
  ("magnitude" and "distill" give "magnitude+distill"; config.method may also name the pair itself)."""
  method = config.get("method", DEFAULT_METHOD)
  mitigation = config.get("mitigation", None)
  if not mitigation:
    return method
  if MITIGATION_SEPARATOR in method:
    if mitigation_of(method) != mitigation:
      raise PieError(
          f"config.method {method!r} and config.mitigation {mitigation!r} disagree: give the mitigation once",
          parameter="mitigation",
      )
    return method
  return mitigated_name(method, mitigation)


def config_job(config):
  """The Job of one model's config (config.method, config.mitigation, config.sparsity, config.seed), checked
  (`effective_method`); a mitigation that needs the dense population takes the config's num_seeds dense models."""
  sparsity = float(config.sparsity)
  method = effective_method(config_method(config), sparsity)
  seed = int(config.seed)
  paired = seed if method == DENSE else dense_seed(config, seed)
  return _job(method, sparsity, seed, config, range(int(config.get("num_seeds", 0) or 0)), paired)


def study_jobs(config, levels_and_seeds):
  """Every model of a study, dense first, then the controls, then the trained variants, then the derived ones.

  Seeds (`seed_design`): in the independent design every trained population takes the next block of seeds (dense
  0..n-1, then n..2n-1 for the first control, and so on in this order); in the shared design every population but
  the dense replicate (seeds n..2n-1) reuses the dense seeds. Model i of every population is paired with dense model
  i (`Job.dense_seed`). With config.init_from_dense, every model of a method that can
  (`Variant.fine_tunes_from_dense`: the compressed methods that train, and the sham control) starts from the dense
  model it is paired with: its Job requires it.

  Args:
    config: the study config (reads config.variants / config.method, config.controls, config.init_from_dense).
    levels_and_seeds: the [(sparsity, seed)] grid of the magnitude study, dense level included
      (`pie.population.grid`, which checks it).
  """
  variants = study_variants(config)
  init_from_dense(config)  # checked once, before any job
  shared = seed_design(config) == SHARED_SEEDS
  seeds = sorted({seed for _, seed in levels_and_seeds})
  levels = sorted({s for s, _ in levels_and_seeds if s > 0})
  jobs = [_job(DENSE, 0.0, seed) for seed in seeds]
  blocks = iter(range(1, 1_000_000))  # the next trained population's block of seeds (the dense one is block 0)

  def population(method, level):
    block = next(blocks)
    if method == DENSE_REPLICATE and shared:
      block_seeds = [seed + max(seeds) + 1 for seed in seeds]  # the replicate keeps its own seeds in both designs
    else:
      block_seeds = population_seeds(config, block, seeds)
    return [_job(method, level, s, config, seeds, paired_seed=d) for s, d in zip(block_seeds, seeds)]

  for control in study_controls(config):
    jobs += population(control, CONTROLS[control].fixed_level)
  for method in variants:
    variant = get_variant(method)
    if variant.derived:
      continue
    method_levels = levels if variant.kind == "pruning" and variant.fixed_level is None else [variant.fixed_level]
    if variant.kind == "pruning" and variant.fixed_level is None and not method_levels:
      if method == DEFAULT_METHOD:
        continue  # config.sparsity_levels = (0.0,): a study of dense models only (a baseline, or an A/A study)
      raise PieError(f"method {method!r} needs a non-zero level in config.sparsity_levels")
    for level in method_levels:
      jobs += population(method, level)
  for method in variants:
    if get_variant(method).derived:
      jobs += [_job(method, 0.0, seed) for seed in seeds]  # derived from each dense model: its seed
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


def _restore_recreated_layers(wrapped, trained):
  """Gives the layers of `wrapped` that a wrapping re-created (not wrapped, not the same object) the values of the
  same-named layer of `trained`; wrapped layers keep what their wrapper made of the trained layer."""
  for layer in wrapped.layers:
    if inner_layer(layer) is not layer or not layer.weights:
      continue
    try:
      source = trained.get_layer(layer.name)
    except ValueError:
      continue
    if source is not layer:
      layer.set_weights(source.get_weights())


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

    def finish(self):
      """The final masks (those of any step from the end of the pruning window on)."""
      self.apply(int(end_step))

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
