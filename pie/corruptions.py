"""ImageNet-C image corruptions for images of any size, in numpy and scipy.

Hendrycks & Dietterich (2019, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations") define 15 corruptions, each at 5 severities, plus 4 extra ones held out for validation.
The paper compares the robustness of pruned and dense models on them. This module applies them on the fly to
float images in [0, 1] of any size: the project's embedded 8x8 single-channel digits, CIFAR 32x32x3 and
ImageNet 224x224x3.

Why not the ``imagecorruptions`` package: under NumPy 2 and scikit-image 0.26 its ``gaussian_blur``,
``glass_blur`` (scikit-image's ``gaussian`` lost ``multichannel``) and ``fog`` (uses the removed
``np.float_``) fail; it refuses images under 32x32; its ImageNet parameters are in pixels of a 224x224 image,
so on a 32x32 image the blurs wipe the image out at severity 1; and its frost, spatter and saturate are not
monotonic in severity on small images (frost picks a different photograph for each severity, saturate
desaturates at severities 1-2 and saturates at 3-5). So the corruptions are written again here from their
description, with these design choices:

* **Size scaling.** A size-dependent length ``L`` given in pixels of a 224x224 image (blur radii, pixel
  displacements, snow flake and spatter drop size, frost grain size, elastic amplitude and smoothness,
  glass-blur shifts, motion-blur length) becomes ``L * (side / 224) ** gamma`` on an image of side
  ``side = sqrt(H * W)``. ``gamma = 1`` would be proportional scaling, which makes every blur vanish on an
  8x8 image (a 224-pixel radius of 3 becomes 0.1 pixel); the pixel is the smallest unit an image can show,
  so each corruption uses ``gamma < 1`` (see ``_GAMMA``), chosen so that severity 1 stays mild and severity 5
  is strong on 8x8 as on 224x224 (on 224x224 the lengths are ImageNet-C's). Zoom blur scales the zoom
  excess ``z - 1`` the same way. Fog and the frost texture are synthesized in frequencies relative to the
  image, so they scale with it. Pixelation and JPEG quality act on the pixel grid itself: they follow
  the authors' CIFAR-10-C settings at side 32 and ImageNet-C's at side >= 224, interpolated in log(side)
  in between; pixelation keeps CIFAR-10-C's below 32 (with block counts kept strictly decreasing), and
  JPEG moves to lower qualities towards side 8, where the whole image is a single JPEG block.
* **Monotonic by design.** Every corruption moves the image further from the clean one as severity grows:
  each parameter is monotonic in severity (ImageNet-C's parameter tables are not, e.g. glass blur's
  iteration count or elastic transform's three regimes), and an image gets the same random draw (noise,
  pattern, direction) at every severity, only scaled up. So severities are nested: for gaussian,
  speckle and impulse noise, frost, spatter, brightness, contrast and saturate the distance to the clean
  image grows pixel by pixel; for the others it grows per image for all but rare draws, and on average.
  With independent draws per severity, monotonicity holds only on average over many images: over 30
  seeds on a 4-image batch, fog, frost, impulse noise and motion blur broke it for 1 to 14 seeds. Saturate only
  increases saturation. Frost uses a procedural ice texture (fractal noise, deterministic for a seed) instead of
  photographs. Spatter is one family (opaque drops
  whose coverage and opacity grow) instead of ImageNet-C's switch from water to mud between severities 3
  and 4.
* **Vectorized and fast.** Filters run on the whole batch at once; glass blur shuffles pixels locally by
  sorting jittered coordinates (a permutation, like ImageNet-C's sequential swaps, but vectorized).
* **Deterministic, per image.** Image ``i`` of a batch draws its randomness from
  ``np.random.default_rng([seed, crc32(corruption), example_ids[i]])``, so corrupting a batch equals
  corrupting its images one by one with the same ids, whatever the batch composition. The severity is
  left out of the seed on purpose: it gives the nested severities above.

Saturate needs colour: it raises ``ValueError`` on single-channel images (see
``applicable_corruptions``).
"""

from __future__ import annotations

import io
import zlib
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage, signal, special

__all__ = [
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "ALL_CORRUPTIONS",
    "SEVERITIES",
    "MIN_SIDE",
    "applicable_corruptions",
    "corrupt",
]

CORRUPTIONS = (
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
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES = (1, 2, 3, 4, 5)
_COLOUR_ONLY = frozenset({"saturate"})

# Smallest height or width accepted: below it, 5 distinct severities cannot be drawn on the pixel grid.
MIN_SIDE = 4
_REFERENCE_SIDE = 224.0
_SMALL_SIDE = 32.0
_TINY_SIDE = 8.0

# Exponent of the size scaling of each corruption's lengths (see the module docstring).
_GAMMA = {
    "defocus_blur": 0.75,
    "gaussian_blur": 0.75,
    "motion_blur": 0.75,
    "glass_blur": 0.45,
    "zoom_blur": 0.75,
    "snow": 0.75,
    "frost": 0.75,
    "elastic_transform": 0.4,
    "spatter": 0.75,
}

# Per-severity parameters. Lengths are in pixels of a 224x224 image.
_GAUSSIAN_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
_SHOT_NOISE_PHOTONS = (60.0, 25.0, 12.0, 5.0, 3.0)
_IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
_SPECKLE_STD = (0.15, 0.2, 0.35, 0.45, 0.6)
_DEFOCUS_RADIUS = (3.0, 4.0, 6.0, 8.0, 10.0)
_GAUSSIAN_BLUR_SIGMA = (1.0, 2.0, 3.0, 4.0, 6.0)
_GLASS_SIGMA = (0.7, 0.9, 1.0, 1.1, 1.5)
_GLASS_SHIFT = (1.0, 1.5, 2.0, 3.0, 4.0)
_GLASS_ITERATIONS = 2
_MOTION_LENGTH = (10.0, 15.0, 15.0, 15.0, 20.0)
_MOTION_SIGMA = (3.0, 5.0, 8.0, 12.0, 15.0)
_ZOOM_MAX = (1.10, 1.15, 1.20, 1.25, 1.30)
_ZOOM_STEPS = 10
# Snow: fraction of pixels covered by flakes, flake size, fall streak length, weight of the whitened image.
_SNOW_COVER = (0.015, 0.03, 0.05, 0.07, 0.09)
_SNOW_FLAKE = (1.0, 1.2, 1.5, 1.8, 2.0)
_SNOW_STREAK = (6.0, 8.0, 10.0, 12.0, 14.0)
_SNOW_WHITEN = (0.1, 0.2, 0.25, 0.3, 0.35)
# Frost: screen-blend strength of the ice texture, and the texture's smallest feature.
_FROST_STRENGTH = (0.45, 0.6, 0.75, 0.88, 1.0)
_FROST_FEATURE = 1.5
_FROST_MEAN = 0.2
# Fog: weight of the fog layer and the plasma fractal's decay (smaller decay: rougher fog). ImageNet-C
# computes (x + c * fog) * m / (m + c) with m the image's maximum and c = 1.5, 2, 2.5, 2.5, 3, i.e. a
# fog weight c / (m + c) of 0.6 to 0.75 for m = 1; these weights start milder and step evenly.
_FOG_WEIGHT = (0.3, 0.42, 0.54, 0.66, 0.78)
_FOG_DECAY = (2.0, 2.0, 1.7, 1.5, 1.4)
_BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)
_CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
# Elastic: RMS displacement (pixels of a 224 image) and the displacement field's correlation length.
_ELASTIC_AMPLITUDE = (0.7, 1.1, 1.6, 2.2, 3.0)
_ELASTIC_SMOOTHNESS = 6.0
# Pixelate: fraction of the side kept, CIFAR-10-C (side <= 32) and ImageNet-C (side >= 224).
_PIXELATE_SMALL = (0.95, 0.9, 0.85, 0.75, 0.65)
_PIXELATE_LARGE = (0.6, 0.5, 0.4, 0.3, 0.25)
# JPEG quality at side <= 8 (an 8x8 image is a single JPEG block, so CIFAR-10-C's qualities barely
# touch it), CIFAR-10-C (side 32) and ImageNet-C (side >= 224).
_JPEG_TINY = (70.0, 50.0, 35.0, 20.0, 10.0)
_JPEG_SMALL = (80.0, 65.0, 58.0, 50.0, 40.0)
_JPEG_LARGE = (25.0, 18.0, 15.0, 10.0, 7.0)
# Spatter: fraction of the image covered by drops, drop opacity, drop size.
_SPATTER_COVER = (0.06, 0.1, 0.15, 0.2, 0.26)
_SPATTER_OPACITY = (0.45, 0.55, 0.65, 0.75, 0.85)
_SPATTER_SIZE = 6.0
_MUD_RGB = (0.40, 0.27, 0.13)
_MUD_GRAY = 0.30
# Saturate: S' = S * gain + offset in HSV.
_SATURATE_GAIN = (1.5, 2.0, 3.0, 5.0, 10.0)
_SATURATE_OFFSET = (0.0, 0.02, 0.05, 0.1, 0.2)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------
# Public API


def applicable_corruptions(num_channels: int, include_extra: bool = True) -> tuple[str, ...]:
  """Names of the corruptions that make sense for images with ``num_channels`` channels (1 or 3).

  Saturate changes colour saturation and is undefined on single-channel images.
  """
  if isinstance(num_channels, bool) or not isinstance(num_channels, (int, np.integer)):
    raise ValueError(f"num_channels must be the integer 1 or 3, got {num_channels!r}")
  if num_channels not in (1, 3):
    raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels}")
  names = ALL_CORRUPTIONS if include_extra else CORRUPTIONS
  if num_channels == 1:
    names = tuple(n for n in names if n not in _COLOUR_ONLY)
  return names


def corrupt(
    images: np.ndarray,
    corruption: str,
    severity: int,
    seed: int = 0,
    example_ids: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
  """Apply one ImageNet-C corruption at one severity.

  Args:
    images: float array [N, H, W, C] or a single image [H, W, C], C in {1, 3}, values in [0, 1],
      H and W at least ``MIN_SIDE``.
    corruption: a name from ``ALL_CORRUPTIONS``.
    severity: integer 1 (mildest) to 5 (strongest).
    seed: non-negative integer; with ``example_ids`` it fixes all randomness.
    example_ids: non-negative integer id of each image, used to seed its randomness (default
      ``arange(N)``). Give an image the same id to get the same corruption in any batch.

  Returns:
    float32 array of the input's shape, values in [0, 1].

  Raises:
    ValueError: on an unknown corruption, a severity outside 1..5, a bad seed or ids, images of the
      wrong shape, dtype or range, or saturate on single-channel images.
  """
  if not isinstance(corruption, str) or corruption not in _CORRUPTION_FUNCTIONS:
    raise ValueError(f"unknown corruption {corruption!r}; expected one of: {', '.join(ALL_CORRUPTIONS)}")
  if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
    raise ValueError(f"severity must be an integer from 1 to 5, got {severity!r}")
  severity = int(severity)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  batch, single = _validate_images(images)
  n, h, w, c = batch.shape
  if corruption in _COLOUR_ONLY and c != 3:
    raise ValueError(f"{corruption} changes colour saturation and needs 3-channel images, got {c} channel")
  ids = _validate_ids(example_ids, n)
  if n == 0:
    out = batch.copy()
  else:
    # The severity is deliberately not part of the seed (see the module docstring).
    key = zlib.crc32(corruption.encode("ascii"))
    rngs = [np.random.default_rng([int(seed), key, int(i)]) for i in ids]
    fn = _CORRUPTION_FUNCTIONS[corruption]
    out = fn(batch, severity - 1, rngs)
    out = np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0).astype(np.float32, copy=False)
  return out[0] if single else out


# ----------------------------------------------------------------------------------------------------------
# Validation


def _validate_images(images) -> tuple[np.ndarray, bool]:
  arr = np.asarray(images)
  if not np.issubdtype(arr.dtype, np.floating):
    raise ValueError(
        f"images must be a float array with values in [0, 1], got dtype {arr.dtype} "
        "(convert uint8 images with images.astype(np.float32) / 255)"
    )
  if arr.ndim not in (3, 4):
    raise ValueError(f"images must have shape [N, H, W, C] or [H, W, C], got shape {arr.shape}")
  single = arr.ndim == 3
  batch = arr[None] if single else arr
  _, h, w, c = batch.shape
  if c not in (1, 3):
    raise ValueError(f"images must have 1 or 3 channels in the last axis, got shape {arr.shape}")
  if h < MIN_SIDE or w < MIN_SIDE:
    raise ValueError(f"images must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {h}x{w}")
  if batch.size:
    if not np.all(np.isfinite(batch)):
      raise ValueError("images contain NaN or infinite values")
    lo, hi = float(batch.min()), float(batch.max())
    if lo < 0.0 or hi > 1.0:
      raise ValueError(f"image values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
  return batch.astype(np.float32, copy=False), single


def _validate_ids(example_ids, n: int) -> np.ndarray:
  if example_ids is None:
    return np.arange(n)
  ids = np.asarray(example_ids)
  if ids.ndim != 1 or ids.shape[0] != n:
    raise ValueError(f"example_ids must be a 1-D sequence of {n} ids (one per image), got shape {ids.shape}")
  if n and not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"example_ids must be integers, got dtype {ids.dtype}")
  if n and ids.min() < 0:
    raise ValueError("example_ids must be non-negative")
  return ids.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# Helpers


def _side(x: np.ndarray) -> float:
  return float(np.sqrt(x.shape[1] * x.shape[2]))


def _length(value_at_224: float, side: float, corruption: str) -> float:
  """A length given in pixels of a 224x224 image, on an image of the given side (module docstring)."""
  return float(value_at_224) * (side / _REFERENCE_SIDE) ** _GAMMA[corruption]


def _by_side(small: Sequence[float], large: Sequence[float], side: float) -> np.ndarray:
  """Parameters set for side <= 32 and side >= 224, interpolated in log(side) in between."""
  t = np.clip(np.log(side / _SMALL_SIDE) / np.log(_REFERENCE_SIDE / _SMALL_SIDE), 0.0, 1.0)
  return (1.0 - t) * np.asarray(small, float) + t * np.asarray(large, float)


def _per_image(rngs, draw: Callable[[np.random.Generator], np.ndarray]) -> np.ndarray:
  return np.stack([draw(rng) for rng in rngs])


def _gray(x: np.ndarray) -> np.ndarray:
  """Luminance [N, H, W, 1]."""
  if x.shape[-1] == 1:
    return x
  return (x @ _LUMA)[..., None]


def _rgb_to_hsv(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  v = x.max(axis=-1)
  chroma = v - x.min(axis=-1)
  s = np.where(v > 0, chroma / np.where(v > 0, v, 1), 0.0)
  safe = np.where(chroma > 0, chroma, 1)
  h = np.where(v == r, ((g - b) / safe) % 6.0, np.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
  h = np.where(chroma > 0, h / 6.0, 0.0)
  return h, s, v


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
  h6 = (h % 1.0) * 6.0
  sector = np.floor(h6).astype(np.int64) % 6
  f = h6 - np.floor(h6)
  p = v * (1 - s)
  q = v * (1 - s * f)
  t = v * (1 - s * (1 - f))
  r = np.choose(sector, [v, q, p, p, t, v])
  g = np.choose(sector, [t, v, v, q, p, p])
  b = np.choose(sector, [p, p, t, v, v, q])
  return np.stack([r, g, b], axis=-1)


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Convolve each channel of each image with one odd-sized 2-D kernel, edges mirrored."""
  kh, kw = kernel.shape
  if kh * kw <= 81:
    return ndimage.convolve(x, kernel[None, :, :, None].astype(x.dtype), mode="reflect")
  ph, pw = kh // 2, kw // 2
  padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode="symmetric")
  out = signal.fftconvolve(padded, kernel[None, :, :, None], mode="valid", axes=(1, 2))
  return out.astype(np.float32, copy=False)


def _splat_kernel(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """Odd-sized kernel from weighted sub-pixel points (y, x), each spread bilinearly over 4 pixels.

  This makes kernels continuous in their size parameter, down to a delta at size zero.
  """
  radius = int(np.ceil(np.abs(points).max())) + 1 if points.size else 1
  size = 2 * radius + 1
  kernel = np.zeros((size, size))
  coords = points + radius
  base = np.floor(coords).astype(np.int64)
  frac = coords - base
  for dy in (0, 1):
    for dx in (0, 1):
      wy = frac[:, 0] if dy else 1 - frac[:, 0]
      wx = frac[:, 1] if dx else 1 - frac[:, 1]
      np.add.at(kernel, (base[:, 0] + dy, base[:, 1] + dx), weights * wy * wx)
  return kernel / kernel.sum()


def _disk_kernel(radius: float) -> np.ndarray:
  n = max(16, int(np.ceil(16 * radius)))
  grid = (np.arange(n) + 0.5) / n * 2 * radius - radius
  yy, xx = np.meshgrid(grid, grid, indexing="ij")
  inside = yy**2 + xx**2 <= radius**2
  points = np.stack([yy[inside], xx[inside]], axis=1)
  return _splat_kernel(points, np.ones(len(points)))


def _motion_kernel(length: float, sigma: float, angle_deg: float) -> np.ndarray:
  """One-sided line kernel with half-Gaussian weights: the image is smeared in one direction."""
  t = np.linspace(0.0, length, max(8, int(np.ceil(8 * length)) + 1))
  weights = np.exp(-(t**2) / (2 * sigma**2))
  angle = np.deg2rad(angle_deg)
  points = np.stack([-t * np.sin(angle), t * np.cos(angle)], axis=1)
  return _splat_kernel(points, weights)


def _gaussian_kernel_1d(sigma: float) -> np.ndarray:
  """Gaussian of standard deviation ``sigma`` pixels, spread linearly onto the pixel grid.

  Unlike a sampled Gaussian, which is a delta for any sigma below about 0.4, this kernel widens
  continuously from a delta at sigma 0, so sub-pixel blurs on tiny images still act.
  """
  reach = 3.0 * sigma
  t = np.linspace(-reach, reach, max(65, int(np.ceil(16 * 2 * reach)) | 1))
  weights = np.exp(-0.5 * (t / max(sigma, 1e-12)) ** 2)
  radius = int(np.ceil(reach)) + 1
  coords = t + radius
  base = np.floor(coords).astype(np.int64)
  frac = coords - base
  kernel = np.zeros(2 * radius + 2)
  np.add.at(kernel, base, weights * (1 - frac))
  np.add.at(kernel, base + 1, weights * frac)
  kernel = kernel[: 2 * radius + 1]
  return kernel / kernel.sum()


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
  kernel = _gaussian_kernel_1d(sigma).astype(x.dtype)
  out = ndimage.convolve1d(x, kernel, axis=1, mode="reflect")
  return ndimage.convolve1d(out, kernel, axis=2, mode="reflect")


def _fractal_noise(rngs, shape: tuple[int, int], amplitude_exponent: float, feature: float = 0.0) -> np.ndarray:
  """Per-image fractal noise [N, H, W] with values in (0, 1).

  Spectral synthesis: white noise whose Fourier amplitude falls as f ** -amplitude_exponent (a plasma
  fractal of decay d has exponent log2(d)), optionally low-passed so that no feature is finer than
  ``feature`` pixels. Frequencies are relative to the image, so the pattern scales with it.
  """
  h, w = shape
  white = _per_image(rngs, lambda rng: rng.standard_normal((h, w)))
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.rfftfreq(w)[None, :]
  f = np.sqrt(fy**2 + fx**2)
  f[0, 0] = np.inf
  amplitude = f**-amplitude_exponent
  if feature > 0:
    amplitude = amplitude * np.exp(-0.5 * (f * feature * 2 * np.pi) ** 2)
  field = np.fft.irfft2(np.fft.rfft2(white, axes=(1, 2)) * amplitude, s=(h, w), axes=(1, 2))
  field -= field.mean(axis=(1, 2), keepdims=True)
  field /= np.maximum(field.std(axis=(1, 2), keepdims=True), 1e-12)
  # The Gaussian CDF of the standardized field: uniform-like values in (0, 1) whose statistics do not
  # depend on the draw's extremes (as a min-max normalization would), so every draw is equally strong.
  return special.ndtr(field)


def _smooth_field(rngs, shape: tuple[int, int], sigma: float, count: int = 1) -> np.ndarray:
  """Per-image smooth Gaussian random fields [N, count, H, W], each standardized to unit RMS."""
  h, w = shape
  white = _per_image(rngs, lambda rng: rng.standard_normal((count, h, w)))
  field = ndimage.gaussian_filter(white, sigma=(0, 0, sigma, sigma), mode="wrap")
  field -= field.mean(axis=(2, 3), keepdims=True)
  rms = np.sqrt((field**2).mean(axis=(2, 3), keepdims=True))
  return field / np.maximum(rms, 1e-12)


# ----------------------------------------------------------------------------------------------------------
# Noise


def _gaussian_noise(x, k, rngs):
  std = _GAUSSIAN_NOISE_STD[k]
  return x + _per_image(rngs, lambda rng: rng.normal(0.0, std, x.shape[1:])).astype(np.float32)


def _shot_noise(x, k, rngs):
  lam = _SHOT_NOISE_PHOTONS[k]
  counts = np.stack([rng.poisson(img * lam) for rng, img in zip(rngs, x)])
  return (counts / lam).astype(np.float32)


def _impulse_noise(x, k, rngs):
  # Exactly round(amount * size) values per image are hit (a per-value coin flip would make the count
  # vary by a binomial spread on small images), the first ones of a random order, so that the values hit
  # at one severity are also hit, with the same salt or pepper, at every higher severity.
  size = x[0].size
  hits = int(round(_IMPULSE_AMOUNT[k] * size))
  order = _per_image(rngs, lambda rng: rng.permutation(size))
  salt = _per_image(rngs, lambda rng: rng.random(size) < 0.5)
  rows = np.arange(len(x))[:, None]
  chosen = order[:, :hits]
  out = x.reshape(len(x), size).copy()
  out[rows, chosen] = salt[rows, chosen].astype(np.float32)
  return out.reshape(x.shape)


def _speckle_noise(x, k, rngs):
  std = _SPECKLE_STD[k]
  return x + x * _per_image(rngs, lambda rng: rng.normal(0.0, std, x.shape[1:])).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Blur


def _defocus_blur(x, k, rngs):
  radius = _length(_DEFOCUS_RADIUS[k], _side(x), "defocus_blur")
  return _convolve(x, _disk_kernel(radius))


def _gaussian_blur_corruption(x, k, rngs):
  return _gaussian_blur(x, _length(_GAUSSIAN_BLUR_SIGMA[k], _side(x), "gaussian_blur"))


def _glass_blur(x, k, rngs):
  side = _side(x)
  sigma = _length(_GLASS_SIGMA[k], side, "glass_blur")
  shift = _length(_GLASS_SHIFT[k], side, "glass_blur")
  n, h, w, _ = x.shape
  out = _gaussian_blur(x, sigma)
  rows = np.arange(h, dtype=np.float64)[None, :, None]
  cols = np.arange(w, dtype=np.float64)[None, None, :]
  # Jitter of the sort keys with standard deviation shift / sqrt(3) moves pixels about as far as
  # ImageNet-C's swaps with a neighbour drawn uniformly within +-shift.
  jitter = shift / np.sqrt(3.0)
  noise = _per_image(rngs, lambda rng: rng.standard_normal((_GLASS_ITERATIONS, 2, h, w)))
  for it in range(_GLASS_ITERATIONS):
    order = np.argsort(cols + jitter * noise[:, it, 0], axis=2, kind="stable")
    out = np.take_along_axis(out, order[..., None], axis=2)
    order = np.argsort(rows + jitter * noise[:, it, 1], axis=1, kind="stable")
    out = np.take_along_axis(out, order[..., None], axis=1)
  return _gaussian_blur(out, sigma)


def _motion_blur(x, k, rngs):
  side = _side(x)
  length = _length(_MOTION_LENGTH[k], side, "motion_blur")
  sigma = _length(_MOTION_SIGMA[k], side, "motion_blur")
  out = np.empty_like(x)
  for i, rng in enumerate(rngs):
    kernel = _motion_kernel(length, sigma, rng.uniform(-45.0, 45.0))
    out[i] = _convolve(x[i : i + 1], kernel)[0]
  return out


def _zoom_blur(x, k, rngs):
  side = _side(x)
  excess = (_ZOOM_MAX[k] - 1.0) * (side / _REFERENCE_SIDE) ** (_GAMMA["zoom_blur"] - 1.0)
  _, h, w, _ = x.shape
  zooms = 1.0 + excess * np.arange(1, _ZOOM_STEPS + 1) / _ZOOM_STEPS
  # Averaging the image with its zooms is linear and separable: one [H, H] and one [W, W] matrix.
  rows = (np.eye(h) + sum(_zoom_matrix(h, z) for z in zooms)) / (len(zooms) + 1)
  cols = (np.eye(w) + sum(_zoom_matrix(w, z) for z in zooms)) / (len(zooms) + 1)
  return np.einsum("ah,nhwc,bw->nabc", rows.astype(np.float32), x, cols.astype(np.float32), optimize=True)


def _zoom_matrix(n: int, zoom: float) -> np.ndarray:
  """[n, n] linear-interpolation matrix magnifying a 1-D signal by ``zoom`` about its centre."""
  centre = (n - 1) / 2
  source = centre + (np.arange(n) - centre) / zoom
  base = np.clip(np.floor(source).astype(np.int64), 0, n - 1)
  frac = source - base
  matrix = np.zeros((n, n))
  np.add.at(matrix, (np.arange(n), base), 1 - frac)
  np.add.at(matrix, (np.arange(n), np.minimum(base + 1, n - 1)), frac)
  return matrix


# ----------------------------------------------------------------------------------------------------------
# Weather


def _snow(x, k, rngs):
  side = _side(x)
  n, h, w, c = x.shape
  flake = _length(_SNOW_FLAKE[k], side, "snow")
  streak = _length(_SNOW_STREAK[k], side, "snow")
  # Two flake layers (near and far), each a thresholded smooth random field covering _SNOW_COVER.
  field = _smooth_field(rngs, (h, w), sigma=flake / 2, count=2)
  threshold = np.quantile(field, 1.0 - _SNOW_COVER[k], axis=(2, 3), keepdims=True)
  spread = np.maximum(field.max(axis=(2, 3), keepdims=True) - threshold, 1e-6)
  flakes = np.clip((field - threshold) / spread * 2.0, 0.0, 1.0).astype(np.float32)
  angles = _per_image(rngs, lambda rng: rng.uniform(-135.0, -45.0, size=2))
  layer = np.zeros((n, h, w, 1), np.float32)
  for i in range(n):
    for j in range(2):
      kernel = _motion_kernel(streak, streak / 2, angles[i, j])
      # A streak keeps the flake's peak brightness: normalize by the kernel's peak, not its sum.
      kernel = kernel / kernel.max()
      layer[i, :, :, 0] += _convolve(flakes[i, j][None, :, :, None], kernel)[0, :, :, 0]
  layer = np.clip(layer, 0.0, 1.0)
  whiten = _SNOW_WHITEN[k]
  base = (1 - whiten) * x + whiten * np.maximum(x, _gray(x) * 1.5 + 0.5)
  return base + layer * (1.0 - base)


def _frost_texture(rngs, shape: tuple[int, int], feature: float) -> np.ndarray:
  """Procedural ice texture [N, H, W] in [0, 1], replacing ImageNet-C's frost photographs.

  A smooth fractal field decides where ice forms (patches with soft edges, about a quarter of the image
  bare); inside, a rough fractal grain gives bright crystals, and thin veins (the neighbourhood of a
  level set of a third fractal field, which branches like frost ferns) cross the ice. Every draw has
  the same statistics, so the strength of the corruption depends on the severity only.
  """
  patches = _fractal_noise(rngs, shape, amplitude_exponent=1.8)
  grain = _fractal_noise(rngs, shape, amplitude_exponent=0.9, feature=feature)
  crystals = _fractal_noise(rngs, shape, amplitude_exponent=1.3, feature=feature)
  veins = np.exp(-(((crystals - 0.5) / 0.06) ** 2))
  cover = np.clip((patches - 0.25) / 0.6, 0.0, 1.0)
  texture = cover * (0.25 + 0.75 * grain**3 + 0.4 * veins)
  # On tiny images a draw has few degrees of freedom; rescaling every draw to the same mean keeps the
  # amount of ice, and so the strength of the corruption, from varying with the draw.
  texture *= _FROST_MEAN / np.maximum(texture.mean(axis=(1, 2), keepdims=True), 1e-6)
  return np.clip(texture, 0.0, 1.0)


def _frost(x, k, rngs):
  _, h, w, c = x.shape
  texture = _frost_texture(rngs, (h, w), _length(_FROST_FEATURE, _side(x), "frost")).astype(np.float32)
  texture = texture[..., None]
  if c == 3:
    texture = texture * np.array([0.88, 0.95, 1.0], np.float32)
  # Screen blend: frost only brightens, and more so where the image is dark.
  return 1.0 - (1.0 - x) * (1.0 - _FROST_STRENGTH[k] * texture)


def _fog(x, k, rngs):
  _, h, w, _ = x.shape
  weight = _FOG_WEIGHT[k]
  # Diamond-square plasma whose random offsets shrink by ``decay`` each time the scale halves has a
  # Fourier amplitude falling as f ** -(1 + log2(decay)).
  fog = _fractal_noise(rngs, (h, w), amplitude_exponent=1.0 + np.log2(_FOG_DECAY[k]))[..., None]
  peak = x.max(axis=(1, 2, 3), keepdims=True)
  return (1.0 - weight) * x + weight * peak * fog.astype(np.float32)


def _spatter(x, k, rngs):
  _, h, w, c = x.shape
  size = _length(_SPATTER_SIZE, _side(x), "spatter")
  field = _smooth_field(rngs, (h, w), sigma=size / 2)[:, 0]
  threshold = np.quantile(field, 1.0 - _SPATTER_COVER[k], axis=(1, 2), keepdims=True)
  # Soft drop edges, about a pixel wide.
  grad = np.sqrt(sum(g**2 for g in np.gradient(field, axis=(1, 2))))
  edge = np.maximum(np.median(grad, axis=(1, 2), keepdims=True), 1e-6)
  mask = np.clip(0.5 + (field - threshold) / edge, 0.0, 1.0)[..., None].astype(np.float32)
  colour = np.array(_MUD_RGB if c == 3 else (_MUD_GRAY,), np.float32)
  alpha = _SPATTER_OPACITY[k] * mask
  return (1 - alpha) * x + alpha * colour


# ----------------------------------------------------------------------------------------------------------
# Digital


def _brightness(x, k, rngs):
  shift = _BRIGHTNESS_SHIFT[k]
  if x.shape[-1] == 1:
    return x + shift
  h, s, v = _rgb_to_hsv(x)
  return _hsv_to_rgb(h, s, np.clip(v + shift, 0.0, 1.0))


def _contrast(x, k, rngs):
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  return (x - mean) * _CONTRAST_FACTOR[k] + mean


def _saturate(x, k, rngs):
  h, s, v = _rgb_to_hsv(x)
  return _hsv_to_rgb(h, np.clip(s * _SATURATE_GAIN[k] + _SATURATE_OFFSET[k], 0.0, 1.0), v)


def _elastic_transform(x, k, rngs):
  side = _side(x)
  n, h, w, c = x.shape
  amplitude = _length(_ELASTIC_AMPLITUDE[k], side, "elastic_transform")
  smoothness = max(_length(_ELASTIC_SMOOTHNESS, side, "elastic_transform"), 1.0)
  displacement = amplitude * _smooth_field(rngs, (h, w), sigma=smoothness, count=2)
  source_y = np.arange(h)[None, :, None] + displacement[:, 0]
  source_x = np.arange(w)[None, None, :] + displacement[:, 1]
  return _bilinear_sample(x, source_y, source_x)


def _mirror_index(index: np.ndarray, n: int) -> np.ndarray:
  """Integer pixel indices folded into [0, n) by mirroring at the edges (d c b a | a b c d)."""
  folded = np.mod(index, 2 * n)
  return np.where(folded >= n, 2 * n - 1 - folded, folded)


def _bilinear_sample(x: np.ndarray, source_y: np.ndarray, source_x: np.ndarray) -> np.ndarray:
  """Sample each image [N, H, W, C] at per-image sub-pixel positions [N, H, W], edges mirrored."""
  n, h, w, _ = x.shape
  y0 = np.floor(source_y).astype(np.int64)
  x0 = np.floor(source_x).astype(np.int64)
  fy = (source_y - y0)[..., None].astype(np.float32)
  fx = (source_x - x0)[..., None].astype(np.float32)
  batch = np.arange(n)[:, None, None]
  ya, yb = _mirror_index(y0, h), _mirror_index(y0 + 1, h)
  xa, xb = _mirror_index(x0, w), _mirror_index(x0 + 1, w)
  top = x[batch, ya, xa] * (1 - fx) + x[batch, ya, xb] * fx
  bottom = x[batch, yb, xa] * (1 - fx) + x[batch, yb, xb] * fx
  return top * (1 - fy) + bottom * fy


def _pixelate_cells(side_px: int, fractions: np.ndarray) -> list[int]:
  """Block counts per severity: strictly decreasing, at least 1, below the pixel count."""
  cells = []
  for f in fractions:
    m = int(round(f * side_px))
    m = min(m, side_px - 1, cells[-1] - 1 if cells else side_px - 1)
    cells.append(max(m, 1))
  return cells


def _area_resample_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] matrix averaging input pixels over n_out equal cells, by overlap area."""
  edges = np.linspace(0.0, n_in, n_out + 1)
  lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
  hi = np.minimum(edges[1:, None], np.arange(n_in)[None, :] + 1)
  overlap = np.clip(hi - lo, 0.0, None)
  return overlap / overlap.sum(axis=1, keepdims=True)


def _pixelate(x, k, rngs):
  _, h, w, _ = x.shape
  fractions = _by_side(_PIXELATE_SMALL, _PIXELATE_LARGE, _side(x))
  mats = []
  for n_px in (h, w):
    cells = _pixelate_cells(n_px, fractions)[k]
    down = _area_resample_matrix(n_px, cells)
    # Upsampling by area too: a pixel inside a cell takes its value, a pixel straddling two cells the
    # area-weighted mix. Unlike nearest-neighbour upsampling (ImageNet-C's), this keeps the distance
    # to the clean image monotonic in the block size when the cells do not align with the pixels.
    up = (down * (n_px / cells)).T
    mats.append((up @ down).astype(np.float32))
  return np.einsum("ah,nhwc,bw->nabc", mats[0], x, mats[1], optimize=True)


def _jpeg_compression(x, k, rngs):
  side = _side(x)
  if side < _SMALL_SIDE:
    t = np.clip(np.log(side / _TINY_SIDE) / np.log(_SMALL_SIDE / _TINY_SIDE), 0.0, 1.0)
    qualities = (1 - t) * np.asarray(_JPEG_TINY) + t * np.asarray(_JPEG_SMALL)
  else:
    qualities = _by_side(_JPEG_SMALL, _JPEG_LARGE, side)
  quality = int(round(qualities[k]))
  mode = "L" if x.shape[-1] == 1 else "RGB"
  pixels = np.round(x * 255.0).astype(np.uint8)
  out = np.empty_like(x)
  for i, img in enumerate(pixels):
    buffer = io.BytesIO()
    Image.fromarray(img[..., 0] if mode == "L" else img, mode=mode).save(buffer, "JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer).convert(mode), dtype=np.float32) / 255.0
    out[i] = decoded.reshape(x.shape[1:])
  return out


_CORRUPTION_FUNCTIONS: dict[str, Callable[[np.ndarray, int, list], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur_corruption,
    "spatter": _spatter,
    "saturate": _saturate,
}
