"""Post-training quantization of trained classifiers through the TFLite converter, and what it saves.

The compression-identified-exemplar follow-up (arXiv 2010.03058) compares a dense population against populations
compressed by post-training quantization. This module gives the three settings it studied, the predictor that turns
a quantized flatbuffer back into logits for the usual analysis, and size reports to put next to the accuracy costs.

Modes (`QUANTIZATION_MODES`):
  * "float16": every float weight stored as float16; kernels run in float32 (weights are dequantized on load).
  * "dynamic_int8": dynamic-range quantization. Weights stored as int8 (per-channel scales for conv kernels);
    activations stay float32 between ops and are quantized on the fly inside the int8 kernels. The converter leaves
    small weight tensors (under 1024 elements: biases, a first conv on few channels, a small classifier) in float32.
  * "full_int8": weights AND activations int8 (biases int32), activation ranges calibrated on
    `representative_images` (the follow-up used the first 100 training examples). The converter is restricted to
    int8 builtin ops, so a model with an op lacking an int8 kernel fails to convert instead of silently keeping
    that op in float. Input and output tensors stay float32: the graph starts with a quantize op and ends with a
    dequantize op, so the predictor takes the same float images and returns float logits for every mode. The cost
    is two cheap elementwise ops; the logits are the int8 output dequantized, so they take at most 256 distinct
    values per example, which matters for ties in top-1 but not for the modal-label analysis.

Pruned models: pass `sparse_weights=True` to store weights with enough zeros in TFLite's sparse format
(`Optimize.EXPERIMENTAL_SPARSITY`), so the raw flatbuffer shrinks and not just its gzip. XNNPack (TFLite's default
CPU delegate) fails to prepare some sparse convolutions (dynamic-range int8 ones, at least), so `TFLiteClassifier`
runs any flatbuffer holding a sparse tensor with the builtin kernels and no default delegate.

Runtime: `TFLiteClassifier` uses the LiteRT interpreter (`ai_edge_litert`, the interpreter's new home) when that
package is installed, and otherwise `tf.lite.Interpreter`, whose deprecation warning is silenced here: the two run
the same flatbuffers with the same kernels, and the warning tells a study's user nothing they can act on.
"""

import gzip
import warnings

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils

from pie.errors import PieError

QUANTIZATION_MODES = ("float16", "dynamic_int8", "full_int8")
INTERPRETER_BACKENDS = ("auto", "litert", "tflite")
GZIP_LEVEL = 9

# Storage bits of one element of each TFLite tensor type a weight can have.
_TYPE_BITS = {
    "FLOAT64": 64,
    "FLOAT32": 32,
    "FLOAT16": 16,
    "BFLOAT16": 16,
    "INT64": 64,
    "INT32": 32,
    "INT16": 16,
    "INT8": 8,
    "UINT8": 8,
    "INT4": 4,
}
_FLOAT_TYPES = ("FLOAT64", "FLOAT32", "FLOAT16", "BFLOAT16")
_TFLITE_IDENTIFIER = b"TFL3"


def _check_keras_classifier(model):
  """The converter and the predictor both assume one image input [N,H,W,C] and one logits output [N,K]."""
  if not isinstance(model, keras.Model):
    raise PieError(f"expected a tf_keras Model, got {type(model).__name__} (Keras 3 models are not supported)")
  inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
  if not inputs or not outputs:
    raise PieError("the model has no symbolic inputs/outputs: build it as a Functional or Sequential tf_keras model")
  wrapped = [layer.name for layer in model.layers if type(layer).__name__ == "PruneLowMagnitude"]
  if wrapped:
    raise PieError(f"layers {wrapped} still carry pruning wrappers: call tfmot.sparsity.keras.strip_pruning first")
  if len(inputs) != 1 or len(outputs) != 1:
    raise PieError(f"expected one input and one output, got {len(inputs)} inputs and {len(outputs)} outputs")
  if len(inputs[0].shape) != 4:
    raise PieError(f"expected an image input [N, H, W, C], got shape {tuple(inputs[0].shape)}")
  if len(outputs[0].shape) != 2:
    raise PieError(f"expected a logits output [N, num_classes], got shape {tuple(outputs[0].shape)}")


def _check_images(images, expected_hwc, name):
  """float32 [N,H,W,C] array, finite, matching `expected_hwc` where that is known (None/-1 = any size)."""
  images = np.asarray(images, dtype=np.float32)
  if images.ndim != 4:
    raise PieError(f"{name} must be a float array [N, H, W, C], got shape {images.shape}")
  for got, want in zip(images.shape[1:], expected_hwc):
    if want is not None and want >= 0 and got != want:
      raise PieError(f"{name} have shape {images.shape[1:]} per image but the model expects {tuple(expected_hwc)}")
  if not np.all(np.isfinite(images)):
    raise PieError(f"{name} hold NaN or infinite values")
  return images


def _convert(model, optimizations, configure=None):
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = list(optimizations)
  if configure is not None:
    configure(converter)
  with warnings.catch_warnings():
    # Emitted for every full-integer conversion that keeps float inputs, which is what we ask for.
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
    return bytes(converter.convert())


def quantize_model(model, mode, representative_images=None, *, sparse_weights=False):
  """Post-training quantization of a tf_keras classifier into a TFLite flatbuffer.

  Args:
    model: Functional or Sequential tf_keras model mapping float32 images [N,H,W,C] to logits [N, num_classes].
      Strip pruning wrappers first (`tfmot.sparsity.keras.strip_pruning`).
    mode: one of `QUANTIZATION_MODES` (see the module docstring).
    representative_images: float array [N,H,W,C] preprocessed exactly as the model's inputs, used by "full_int8"
      to calibrate activation ranges (one image per calibration step). Required for "full_int8"; the other modes
      need no calibration and ignore it, so a loop over all modes can pass it every time.
    sparse_weights: also apply `Optimize.EXPERIMENTAL_SPARSITY`, which stores sufficiently sparse weight tensors
      (e.g. from magnitude pruning) in a compressed sparse format.

  Returns:
    The flatbuffer as bytes. Input and output tensors are float32 in every mode.

  Raises:
    PieError (a ValueError): unknown mode, missing or malformed representative images, or a model that is not an
      image classifier.
  """
  if mode not in QUANTIZATION_MODES:
    raise PieError(f"unknown quantization mode {mode!r}: choose one of {QUANTIZATION_MODES}")
  _check_keras_classifier(model)
  optimizations = [tf.lite.Optimize.DEFAULT]
  if sparse_weights:
    optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)

  if mode == "float16":

    def configure(converter):
      converter.target_spec.supported_types = [tf.float16]

  elif mode == "dynamic_int8":
    configure = None  # DEFAULT without a representative dataset is dynamic-range quantization.
  else:
    if representative_images is None:
      raise PieError(
          "mode 'full_int8' needs representative_images to calibrate activation ranges "
          "(e.g. the first 100 training images, preprocessed like the model's inputs)"
      )
    images = _check_images(representative_images, tuple(model.inputs[0].shape[1:]), "representative_images")
    if images.shape[0] == 0:
      raise PieError("representative_images is empty: full_int8 needs at least one image to calibrate on")

    def representative_dataset():
      for i in range(images.shape[0]):
        yield [images[i : i + 1]]

    def configure(converter):
      converter.representative_dataset = representative_dataset
      # Only int8 kernels: conversion fails rather than leaving an op in float. inference_input_type and
      # inference_output_type keep their float32 defaults (see the module docstring).
      converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

  return _convert(model, optimizations, configure)


def _read_flatbuffer(tflite_bytes):
  if not isinstance(tflite_bytes, (bytes, bytearray, memoryview)):
    raise PieError(f"expected TFLite flatbuffer bytes, got {type(tflite_bytes).__name__}")
  data = bytes(tflite_bytes)
  if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
    raise PieError("the bytes are not a TFLite flatbuffer (missing the 'TFL3' file identifier)")
  return data


def _has_sparse_tensors(data):
  model = tflite_schema.Model.GetRootAs(data, 0)
  for s in range(model.SubgraphsLength()):
    subgraph = model.Subgraphs(s)
    for t in range(subgraph.TensorsLength()):
      if subgraph.Tensors(t).Sparsity() is not None:
        return True
  return False


def _sparse_index_bytes(sparsity):
  """Bytes of the index arrays (segments and indices of every compressed dimension) of one sparse tensor."""
  total = 0
  for dim in sparsity.dimMetadata or []:
    for vector in (dim.arraySegments, dim.arrayIndices):
      if vector is not None and getattr(vector, "values", None) is not None:
        total += np.asarray(vector.values).nbytes
  return total


def model_size_report(tflite_bytes):
  """Storage figures of a TFLite flatbuffer.

  Weight tensors are the constant tensors (backed by a non-empty buffer) that are floating point or carry
  quantization parameters: kernels and biases, including full-int8's int32 biases. Integer constants without
  quantization (reshape targets, axes) are not weights and are left out. A buffer shared by several tensors is
  counted once.

  Returns:
    dict with
      raw_bytes: size of the flatbuffer;
      gzip_bytes: size after gzip at level 9 (what a zipped checkpoint would cost, so zeros from pruning show up
        even without sparse storage);
      weight_tensors: number of weight tensors; sparse_weight_tensors: how many are stored in sparse format;
      weight_elements: {dtype: logical element count}, e.g. {"int8": 9736, "int32": 66};
      stored_weight_values: {dtype: values actually stored}, smaller than weight_elements for sparse tensors;
      weight_bytes: bytes of weight values; sparse_index_bytes: bytes of sparse tensors' index arrays;
      bits_per_weight: 8 * (weight_bytes + sparse_index_bytes) / total logical weight elements. With dense storage
        this is the mean storage bits over weight elements (32 float32, 16 float16, 8 int8, 32 int32 bias).
  """
  data = _read_flatbuffer(tflite_bytes)
  model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
  weight_elements, stored_values = {}, {}
  weight_bytes = index_bytes = n_tensors = n_sparse = 0
  seen_buffers = set()
  for subgraph in model.subgraphs:
    for tensor in subgraph.tensors:
      if tensor.buffer <= 0 or tensor.buffer in seen_buffers:
        continue
      buffer_data = model.buffers[tensor.buffer].data
      if buffer_data is None or len(buffer_data) == 0:
        continue
      type_name = flatbuffer_utils.type_to_name(tensor.type)
      quantization = tensor.quantization
      quantized = quantization is not None and quantization.scale is not None and len(quantization.scale) > 0
      if type_name not in _TYPE_BITS or not (type_name in _FLOAT_TYPES or quantized):
        continue
      seen_buffers.add(tensor.buffer)
      dtype = type_name.lower()
      n_bytes = len(buffer_data)
      elements = int(np.prod(tensor.shape)) if tensor.shape is not None else 1
      weight_elements[dtype] = weight_elements.get(dtype, 0) + elements
      stored_values[dtype] = stored_values.get(dtype, 0) + n_bytes * 8 // _TYPE_BITS[type_name]
      weight_bytes += n_bytes
      n_tensors += 1
      if tensor.sparsity is not None:
        n_sparse += 1
        index_bytes += _sparse_index_bytes(tensor.sparsity)
  total_elements = sum(weight_elements.values())
  return {
      "raw_bytes": len(data),
      "gzip_bytes": len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)),
      "weight_tensors": n_tensors,
      "sparse_weight_tensors": n_sparse,
      "weight_elements": weight_elements,
      "stored_weight_values": stored_values,
      "weight_bytes": weight_bytes,
      "sparse_index_bytes": index_bytes,
      "bits_per_weight": 8.0 * (weight_bytes + index_bytes) / total_elements if total_elements else float("nan"),
  }


def _is_kernel(variable):
  # Conv/Dense "kernel", DepthwiseConv2D "depthwise_kernel", SeparableConv2D "pointwise_kernel": the weights
  # magnitude pruning acts on. Biases, batch-norm statistics and embeddings are not kernels.
  return variable.name.split("/")[-1].split(":")[0].endswith("kernel")


def keras_model_size_report(model, *, sparse_weights=False):
  """The `model_size_report` figures for the uncompressed float32 model, plus its measured kernel sparsity.

  The float32 baseline is the model converted to TFLite with no optimization, so it is the same container with
  the same op graph as the quantized flatbuffers and the sizes compare like for like (an h5 file would add HDF5
  metadata and differ in layout). With `sparse_weights=True` the baseline stores sparse kernels in sparse format,
  as `quantize_model(..., sparse_weights=True)` does.

  Returns:
    The `model_size_report` dict plus
      format: "tflite_float32" or "tflite_float32_sparse";
      kernel_elements: number of kernel weights (Conv/Dense/depthwise/pointwise kernels, not biases);
      sparsity: fraction of those that are exactly zero (NaN if the model has no kernel);
      layer_sparsity: {variable name: fraction of exact zeros} for each kernel.
  Measure sparsity on the stripped model: a pruning-wrapped model's kernels are not masked until export.
  """
  _check_keras_classifier(model)
  optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse_weights else []
  report = model_size_report(_convert(model, optimizations))
  layer_sparsity = {}
  zeros = total = 0
  for variable in model.weights:
    if not _is_kernel(variable):
      continue
    values = variable.numpy()
    layer_sparsity[variable.name] = float(np.mean(values == 0)) if values.size else float("nan")
    zeros += int(np.count_nonzero(values == 0))
    total += values.size
  report.update(
      format="tflite_float32_sparse" if sparse_weights else "tflite_float32",
      kernel_elements=total,
      sparsity=zeros / total if total else float("nan"),
      layer_sparsity=layer_sparsity,
  )
  return report


def _interpreter_classes(backend):
  """(Interpreter class, OpResolverType enum, backend name) for the requested backend."""
  if backend not in INTERPRETER_BACKENDS:
    raise PieError(f"unknown interpreter backend {backend!r}: choose one of {INTERPRETER_BACKENDS}")
  if backend in ("auto", "litert"):
    try:
      from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top

      return litert.Interpreter, litert.OpResolverType, "litert"
    except ImportError:
      if backend == "litert":
        raise PieError("backend 'litert' needs the ai-edge-litert package (pip install ai-edge-litert)") from None
  return tf.lite.Interpreter, tf.lite.experimental.OpResolverType, "tflite"


class TFLiteClassifier:
  """Runs a TFLite classifier flatbuffer on batches of float32 images and returns float32 logits.

  Not thread-safe: one interpreter, resized in place. Build one per thread.

  Attributes:
    input_shape: (H, W, C) the model expects (-1 where any size is accepted).
    num_classes: width of the logits.
    backend: "litert" or "tflite", the interpreter actually used.
    uses_default_delegates: whether TFLite's default delegates (XNNPack) are applied.
  """

  def __init__(self, tflite_bytes, *, num_threads=None, backend="auto", use_default_delegates=None):
    """Args:
    tflite_bytes: a flatbuffer, e.g. from `quantize_model`, with one float32 image input [N,H,W,C] and one
      float32 output [N, num_classes].
    num_threads: interpreter threads (None: the runtime's default).
    backend: "auto" (LiteRT if installed, else tf.lite), "litert" or "tflite".
    use_default_delegates: None picks automatically: off when the flatbuffer holds a sparse tensor (XNNPack
      fails to prepare sparse convolutions), on otherwise.
    """
    data = _read_flatbuffer(tflite_bytes)
    interpreter_class, resolver_types, self.backend = _interpreter_classes(backend)
    if use_default_delegates is None:
      use_default_delegates = not _has_sparse_tensors(data)
    self.uses_default_delegates = bool(use_default_delegates)
    resolver = resolver_types.AUTO if self.uses_default_delegates else resolver_types.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated")
      self._interpreter = interpreter_class(
          model_content=data, num_threads=num_threads, experimental_op_resolver_type=resolver
      )
    inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
      raise PieError(f"expected a flatbuffer with one input and one output, got {len(inputs)} and {len(outputs)}")
    input_detail, output_detail = inputs[0], outputs[0]
    for role, detail, rank in (("input", input_detail, 4), ("output", output_detail, 2)):
      if detail["dtype"] != np.float32:
        raise PieError(
            f"the flatbuffer's {role} tensor is {np.dtype(detail['dtype']).name}, expected float32 "
            "(quantize_model keeps float32 inputs and outputs in every mode)"
        )
      if len(detail["shape_signature"]) != rank:
        raise PieError(
            f"the flatbuffer's {role} tensor has shape {tuple(detail['shape_signature'])}, " f"expected rank {rank}"
        )
    self.input_shape = tuple(int(d) for d in input_detail["shape_signature"][1:])
    self.num_classes = int(output_detail["shape_signature"][-1])
    self._input_index, self._output_index = input_detail["index"], output_detail["index"]
    self._allocated_shape = None

  def _run(self, batch):
    if batch.shape != self._allocated_shape:
      # Resizing and re-allocating costs a graph re-preparation, so it happens only when the batch shape changes
      # (in practice: for the first batch and for a shorter last batch).
      self._interpreter.resize_tensor_input(self._input_index, list(batch.shape), strict=False)
      self._interpreter.allocate_tensors()
      self._allocated_shape = batch.shape
    self._interpreter.set_tensor(self._input_index, batch)
    self._interpreter.invoke()
    return self._interpreter.get_tensor(self._output_index)

  def predict_logits(self, images, batch_size=256):
    """Logits float32 [N, num_classes] for float32 images [N,H,W,C] (preprocessed as for the Keras model)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise PieError(f"batch_size must be a positive integer, got {batch_size!r}")
    images = _check_images(images, self.input_shape, "images")
    n = images.shape[0]
    logits = np.empty((n, self.num_classes), np.float32)
    for start in range(0, n, int(batch_size)):
      batch = np.ascontiguousarray(images[start : start + batch_size])
      logits[start : start + batch.shape[0]] = self._run(batch)
    return logits

  def predict_labels(self, images, batch_size=256):
    """Top-1 class ids int64 [N] (argmax of the logits; ties go to the smallest id)."""
    return np.argmax(self.predict_logits(images, batch_size=batch_size), axis=1).astype(np.int64)
