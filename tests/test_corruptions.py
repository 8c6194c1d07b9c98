"""Tests for pie.corruptions: contracts, determinism, batch consistency and severity ordering."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import time

import numpy as np
import pytest
from scipy import ndimage
from sklearn.datasets import load_digits

from pie import corruptions as C

STOCHASTIC = {
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
    "spatter",
}
DETERMINISTIC = set(C.ALL_CORRUPTIONS) - STOCHASTIC


def _digits(n=12):
  """Realistic 8x8 single-channel images: the first handwritten digits, scaled to [0, 1]."""
  return (load_digits().images[:n, :, :, None] / 16.0).astype(np.float32)


def _smooth_rgb(n=4, size=32):
  """Smooth synthetic colour images: coloured Gaussian blobs on a dark background."""
  rng = np.random.default_rng(7)
  yy, xx = np.mgrid[0:size, 0:size] / size
  images = []
  for _ in range(n):
    img = np.full((size, size, 3), 0.1) + 0.1 * rng.random(3)
    for _ in range(6):
      cy, cx, radius = rng.random(), rng.random(), 0.08 + 0.15 * rng.random()
      blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
      img = img + 0.8 * rng.random(3) * blob[..., None]
    images.append(img)
  return np.clip(np.array(images), 0.0, 1.0).astype(np.float32)


DIGITS = _digits()
SMOOTH = _smooth_rgb()
DATASETS = {"digits8x8x1": DIGITS, "smooth32x32x3": SMOOTH}
CASES = [(name, data) for data in DATASETS for name in C.applicable_corruptions(DATASETS[data].shape[-1])]


def _rmse(a, b):
  return float(np.sqrt(((a.astype(np.float64) - b) ** 2).mean(axis=(1, 2, 3))).mean())


def _mean_correlation(a, b):
  a = a.reshape(len(a), -1).astype(np.float64)
  b = b.reshape(len(b), -1).astype(np.float64)
  a = a - a.mean(axis=1, keepdims=True)
  b = b - b.mean(axis=1, keepdims=True)
  return float(np.mean((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))))


# ---------------------------------------------------------------------------------------------------------
# Names


def test_corruption_names_follow_imagenet_c():
  assert C.CORRUPTIONS == (
      "gaussian_noise",
      "shot_noise",
      "impulse_noise",
      "defocus_blur",
      "glass_blur",
      "motion_blur",
      "zoom_blur",
      "snow",
      "frost",
      "fog",
      "brightness",
      "contrast",
      "elastic_transform",
      "pixelate",
      "jpeg_compression",
  )
  assert C.EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
  assert C.ALL_CORRUPTIONS == C.CORRUPTIONS + C.EXTRA_CORRUPTIONS


def test_applicable_corruptions():
  assert C.applicable_corruptions(3) == C.ALL_CORRUPTIONS
  assert C.applicable_corruptions(1) == tuple(n for n in C.ALL_CORRUPTIONS if n != "saturate")
  assert C.applicable_corruptions(3, include_extra=False) == C.CORRUPTIONS
  assert C.applicable_corruptions(1, include_extra=False) == C.CORRUPTIONS
  for bad in (0, 2, 4, 3.0, "3", True):
    with pytest.raises(ValueError, match="num_channels"):
      C.applicable_corruptions(bad)


# ---------------------------------------------------------------------------------------------------------
# Output contract


@pytest.mark.parametrize("name,data", CASES)
def test_shape_dtype_and_range_kept(name, data):
  images = DATASETS[data]
  for severity in C.SEVERITIES:
    out = C.corrupt(images, name, severity, seed=3)
    assert out.shape == images.shape
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert out.min() >= 0.0 and out.max() <= 1.0
  single = C.corrupt(images[0], name, 3, seed=3)
  assert single.shape == images[0].shape and single.dtype == np.float32
  np.testing.assert_array_equal(single, C.corrupt(images[:1], name, 3, seed=3)[0])


@pytest.mark.parametrize("name", C.ALL_CORRUPTIONS)
def test_imagenet_size_and_non_square_images(name):
  rng = np.random.default_rng(0)
  big = np.clip(ndimage.gaussian_filter(rng.random((1, 224, 224, 3)), (0, 6, 6, 0)) * 4 - 1.5, 0, 1)
  big = big.astype(np.float32)
  out = C.corrupt(big, name, 5)
  assert out.shape == big.shape and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0
  assert _rmse(big, out) > 0.005, "severity 5 must visibly change a 224x224 image"
  odd = rng.random((2, 13, 9, 3)).astype(np.float32)
  out = C.corrupt(odd, name, 2)
  assert out.shape == odd.shape and 0.0 <= out.min() and out.max() <= 1.0


def test_float64_input_and_empty_batch():
  out = C.corrupt(DIGITS.astype(np.float64), "gaussian_noise", 2)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, C.corrupt(DIGITS, "gaussian_noise", 2))
  empty = np.zeros((0, 8, 8, 1), np.float32)
  assert C.corrupt(empty, "fog", 1).shape == (0, 8, 8, 1)


# ---------------------------------------------------------------------------------------------------------
# Randomness


@pytest.mark.parametrize("name,data", CASES)
def test_deterministic_for_a_seed(name, data):
  images = DATASETS[data]
  first = C.corrupt(images, name, 3, seed=11)
  np.testing.assert_array_equal(first, C.corrupt(images, name, 3, seed=11))
  other = C.corrupt(images, name, 3, seed=12)
  if name in STOCHASTIC:
    assert not np.array_equal(first, other), f"{name} ignores its seed"
  else:
    np.testing.assert_array_equal(first, other)


@pytest.mark.parametrize("name,data", CASES)
def test_batch_equals_one_by_one(name, data):
  images = DATASETS[data][:4]
  ids = np.array([7, 0, 123456, 42])
  batch = C.corrupt(images, name, 4, seed=5, example_ids=ids)
  for i in range(len(images)):
    alone = C.corrupt(images[i], name, 4, seed=5, example_ids=[ids[i]])
    np.testing.assert_allclose(batch[i], alone, atol=1e-6)
  order = np.array([2, 0, 3, 1])
  shuffled = C.corrupt(images[order], name, 4, seed=5, example_ids=ids[order])
  np.testing.assert_allclose(shuffled, batch[order], atol=1e-6)


def test_default_ids_are_positions():
  a = C.corrupt(DIGITS[:3], "fog", 2, seed=1)
  b = C.corrupt(DIGITS[:3], "fog", 2, seed=1, example_ids=[0, 1, 2])
  np.testing.assert_array_equal(a, b)
  c = C.corrupt(DIGITS[:3], "fog", 2, seed=1, example_ids=[3, 4, 5])
  assert not np.array_equal(a, c)


# ---------------------------------------------------------------------------------------------------------
# Severity


@pytest.mark.parametrize("name,data", CASES)
def test_distance_increases_strictly_with_severity(name, data):
  images = DATASETS[data]
  distances = [_rmse(images, C.corrupt(images, name, s, seed=0)) for s in C.SEVERITIES]
  steps = np.diff(distances)
  assert np.all(steps > 0.01 * distances[0]), f"{name} on {data}: RMSE by severity {distances}"


@pytest.mark.parametrize("name,data", CASES)
def test_mildest_severity_is_not_a_wipe_out(name, data):
  images = DATASETS[data]
  out = C.corrupt(images, name, 1, seed=0)
  assert _mean_correlation(images, out) > 0.8, f"{name} at severity 1 destroys {data}"
  assert _rmse(images, out) > 0.001, f"{name} at severity 1 leaves {data} unchanged"


@pytest.mark.parametrize("name", C.applicable_corruptions(1))
def test_strongest_severity_is_strong_on_8x8(name):
  """Sizes scaled proportionally from 224 pixels would vanish on 8x8 images; ours must not."""
  out = C.corrupt(DIGITS, name, 5, seed=0)
  assert _rmse(DIGITS, out) > 0.1, f"{name} at severity 5 barely changes 8x8 digits"


def test_glass_blur_is_fast_on_digits():
  images = np.repeat(DIGITS, 42, axis=0)[:500]
  start = time.perf_counter()
  C.corrupt(images, "glass_blur", 5)
  assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, "3", True, None])
def test_bad_severity(severity):
  with pytest.raises(ValueError, match="severity must be an integer from 1 to 5"):
    C.corrupt(DIGITS, "fog", severity)


@pytest.mark.parametrize("name", ["Fog", "frosting", "", None, 3])
def test_bad_corruption_name(name):
  with pytest.raises(ValueError, match="unknown corruption"):
    C.corrupt(DIGITS, name, 1)


@pytest.mark.parametrize(
    "images,message",
    [
        (np.zeros((8, 8), np.float32), "shape"),
        (np.zeros((1, 1, 8, 8, 1), np.float32), "shape"),
        (np.zeros((2, 8, 8, 2), np.float32), "channels"),
        (np.zeros((2, 8, 8, 4), np.float32), "channels"),
        (np.zeros((2, 3, 8, 1), np.float32), "at least"),
        (np.zeros((2, 8, 8, 1), np.uint8), "float"),
        (np.full((2, 8, 8, 1), 1.5, np.float32), r"\[0, 1\]"),
        (np.full((2, 8, 8, 1), -0.1, np.float32), r"\[0, 1\]"),
        (np.full((2, 8, 8, 1), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images(images, message):
  with pytest.raises(ValueError, match=message):
    C.corrupt(images, "gaussian_noise", 1)


def test_saturate_needs_colour():
  with pytest.raises(ValueError, match="3-channel"):
    C.corrupt(DIGITS, "saturate", 1)


@pytest.mark.parametrize(
    "ids,message",
    [
        ([0, 1], "one per image"),
        ([[0, 1, 2]], "one per image"),
        ([0, -1, 2], "non-negative"),
        ([0.0, 1.0, 2.0], "integers"),
    ],
)
def test_bad_example_ids(ids, message):
  with pytest.raises(ValueError, match=message):
    C.corrupt(DIGITS[:3], "fog", 1, example_ids=ids)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_bad_seed(seed):
  with pytest.raises(ValueError, match="seed"):
    C.corrupt(DIGITS, "fog", 1, seed=seed)
