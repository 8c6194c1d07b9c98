"""Post-training quantization: each mode converts, runs, agrees with the Keras model and stores what it claims."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pie  # noqa: E402,F401  (sets the environment before TensorFlow is imported)

import importlib.util  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tf_keras as keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from pie import quantization as q  # noqa: E402

N_TRAIN = 1297
AGREEMENT = {"float16": 0.95, "dynamic_int8": 0.95, "full_int8": 0.90}
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None


def _cnn():
  inputs = keras.Input((8, 8, 1))
  x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
  x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
  x = keras.layers.MaxPooling2D()(x)
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(32, activation="relu")(x)
  return keras.Model(inputs, keras.layers.Dense(10)(x))


def _compile(model):
  model.compile(
      keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
  )


@pytest.fixture(scope="module")
def digits():
  data = load_digits()
  images = (data.images / 16.0).astype(np.float32)[..., None]
  return images[:N_TRAIN], data.target[:N_TRAIN], images[N_TRAIN:], data.target[N_TRAIN:]


@pytest.fixture(scope="module")
def trained(digits):
  x_train, y_train, x_test, y_test = digits
  keras.utils.set_random_seed(0)
  model = _cnn()
  _compile(model)
  model.fit(x_train, y_train, epochs=6, batch_size=64, verbose=0)
  assert model.evaluate(x_test, y_test, verbose=0)[1] > 0.85, "the reference model did not learn the digits"
  return model


@pytest.fixture(scope="module")
def converted(trained, digits):
  x_train = digits[0]
  return {mode: q.quantize_model(trained, mode, representative_images=x_train[:100]) for mode in q.QUANTIZATION_MODES}


@pytest.fixture(scope="module")
def keras_report(trained):
  return q.keras_model_size_report(trained)


def _kernel_and_bias_counts(model):
  kernels = sum(int(np.prod(w.shape)) for w in model.weights if "kernel" in w.name)
  return kernels, model.count_params() - kernels


@pytest.mark.slow
@pytest.mark.parametrize("mode", q.QUANTIZATION_MODES)
def test_quantized_predictor_agrees_with_keras(mode, trained, converted, digits):
  x_test = digits[2]
  reference = trained.predict(x_test, verbose=0)
  classifier = q.TFLiteClassifier(converted[mode])
  logits = classifier.predict_logits(x_test, batch_size=128)  # 500 images: 3 full batches and a short one
  assert logits.shape == (len(x_test), 10) and logits.dtype == np.float32
  assert np.all(np.isfinite(logits))
  agreement = np.mean(logits.argmax(1) == reference.argmax(1))
  assert agreement >= AGREEMENT[mode], f"{mode}: top-1 agreement {agreement:.3f}"
  # Quantization perturbs the logits a little, not wholesale.
  assert np.max(np.abs(logits - reference)) < 0.25 * np.max(np.abs(reference))
  np.testing.assert_array_equal(classifier.predict_labels(x_test), logits.argmax(1))


@pytest.mark.slow
def test_float16_is_close_and_batching_does_not_change_logits(trained, converted, digits):
  x_test = digits[2][:200]
  classifier = q.TFLiteClassifier(converted["float16"])
  whole = classifier.predict_logits(x_test, batch_size=200)
  np.testing.assert_allclose(whole, trained.predict(x_test, verbose=0), atol=0.05)
  np.testing.assert_allclose(classifier.predict_logits(x_test, batch_size=7), whole, atol=1e-5)
  np.testing.assert_allclose(classifier.predict_logits(x_test[:1], batch_size=64), whole[:1], atol=1e-5)
  assert classifier.predict_logits(x_test[:0]).shape == (0, 10)


@pytest.mark.slow
def test_size_reports_match_the_model_weights(trained, converted, keras_report):
  kernels, biases = _kernel_and_bias_counts(trained)
  assert keras_report["format"] == "tflite_float32"
  assert keras_report["weight_elements"] == {"float32": kernels + biases}
  assert keras_report["bits_per_weight"] == pytest.approx(32.0)
  assert keras_report["kernel_elements"] == kernels
  assert keras_report["sparsity"] == 0.0  # dense training leaves no exact zeros

  f16 = q.model_size_report(converted["float16"])
  assert f16["weight_elements"] == {"float16": kernels + biases}
  assert f16["bits_per_weight"] == pytest.approx(16.0)

  full = q.model_size_report(converted["full_int8"])
  assert full["weight_elements"] == {"int8": kernels, "int32": biases}  # int32 biases, int8 kernels
  assert full["bits_per_weight"] == pytest.approx((8 * kernels + 32 * biases) / (kernels + biases))

  dynamic = q.model_size_report(converted["dynamic_int8"])
  assert dynamic["weight_elements"].get("int8", 0) >= kernels // 2  # the large kernels; tiny ones stay float32
  assert sum(dynamic["weight_elements"].values()) == kernels + biases
  assert dynamic["bits_per_weight"] < 16

  for report in (f16, dynamic, full):
    assert report["sparse_weight_tensors"] == 0 and report["sparse_index_bytes"] == 0
    assert report["stored_weight_values"] == report["weight_elements"]
    assert report["gzip_bytes"] < keras_report["gzip_bytes"]
    assert report["raw_bytes"] < keras_report["raw_bytes"]
  assert full["weight_bytes"] < f16["weight_bytes"] < keras_report["weight_bytes"]


@pytest.mark.slow
def test_full_int8_requires_representative_images(trained):
  with pytest.raises(ValueError, match="representative_images"):
    q.quantize_model(trained, "full_int8")
  with pytest.raises(ValueError, match="expects"):
    q.quantize_model(trained, "full_int8", representative_images=np.zeros((4, 6, 6, 1), np.float32))
  with pytest.raises(ValueError, match="empty"):
    q.quantize_model(trained, "full_int8", representative_images=np.zeros((0, 8, 8, 1), np.float32))
  with pytest.raises(ValueError, match="NaN"):
    q.quantize_model(trained, "full_int8", representative_images=np.full((2, 8, 8, 1), np.nan, np.float32))


@pytest.mark.slow
def test_bad_inputs_raise_clear_errors(trained, converted):
  with pytest.raises(ValueError, match="unknown quantization mode 'int4'"):
    q.quantize_model(trained, "int4")
  with pytest.raises(ValueError, match="tf_keras Model"):
    q.quantize_model(object(), "float16")
  with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
    q.model_size_report(b"definitely not a model")
  with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
    q.TFLiteClassifier(b"")
  with pytest.raises(ValueError, match="unknown interpreter backend"):
    q.TFLiteClassifier(converted["float16"], backend="gpu")
  classifier = q.TFLiteClassifier(converted["float16"])
  with pytest.raises(ValueError, match="expects"):
    classifier.predict_logits(np.zeros((3, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    classifier.predict_logits(np.zeros((8, 8, 1), np.float32))
  with pytest.raises(ValueError, match="batch_size"):
    classifier.predict_logits(np.zeros((3, 8, 8, 1), np.float32), batch_size=0)


@pytest.mark.parametrize(
    "backend",
    ["tflite", pytest.param("litert", marks=pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert not installed"))],
)
@pytest.mark.slow
def test_backends_run_the_same_flatbuffer(backend, converted, digits):
  x_test = digits[2][:64]
  classifier = q.TFLiteClassifier(converted["full_int8"], backend=backend)
  assert classifier.backend == backend
  reference = q.TFLiteClassifier(converted["full_int8"], backend="tflite").predict_logits(x_test)
  np.testing.assert_allclose(classifier.predict_logits(x_test), reference, atol=1e-5)


@pytest.mark.slow
def test_pruned_model_converts_sparse_and_runs(trained, digits):
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top

  x_train, y_train, x_test, _ = digits
  keras.utils.set_random_seed(1)
  model = _cnn()
  model.set_weights(trained.get_weights())
  schedule = tfmot.sparsity.keras.ConstantSparsity(0.8, begin_step=0, frequency=10)
  pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
  _compile(pruned)
  pruned.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  with pytest.raises(ValueError, match="strip_pruning"):
    q.quantize_model(pruned, "float16")
  stripped = tfmot.sparsity.keras.strip_pruning(pruned)
  reference = stripped.predict(x_test, verbose=0)

  dense_report = q.keras_model_size_report(stripped)
  assert dense_report["sparsity"] == pytest.approx(0.8, abs=0.02)
  assert all(s == pytest.approx(0.8, abs=0.02) for s in dense_report["layer_sparsity"].values())
  sparse_report = q.keras_model_size_report(stripped, sparse_weights=True)
  assert sparse_report["format"] == "tflite_float32_sparse" and sparse_report["sparse_weight_tensors"] > 0
  assert sparse_report["raw_bytes"] < dense_report["raw_bytes"]

  for mode in q.QUANTIZATION_MODES:
    flatbuffer = q.quantize_model(stripped, mode, x_train[:100], sparse_weights=True)
    report = q.model_size_report(flatbuffer)
    assert report["sparse_weight_tensors"] > 0 and report["sparse_index_bytes"] > 0, mode
    assert sum(report["stored_weight_values"].values()) < 0.5 * sum(report["weight_elements"].values()), mode
    assert report["gzip_bytes"] < dense_report["gzip_bytes"], mode
    classifier = q.TFLiteClassifier(flatbuffer)
    assert not classifier.uses_default_delegates  # XNNPack cannot prepare the sparse dynamic-range conv
    logits = classifier.predict_logits(x_test, batch_size=200)
    assert logits.shape == (len(x_test), 10) and np.all(np.isfinite(logits))
    agreement = np.mean(logits.argmax(1) == reference.argmax(1))
    assert agreement >= AGREEMENT[mode], f"pruned {mode}: top-1 agreement {agreement:.3f}"
