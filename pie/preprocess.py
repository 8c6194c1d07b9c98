"""Named preprocessings from raw uint8 images to model inputs, one per dataset family.

Each takes (image, training, seed, image_size): `seed` is a stateless seed (shape [2]) so that augmentation is
reproducible per example and epoch. The matching display function returns the uint8 image as the model sees it at
eval time (resized and cropped, not normalized), for reports.
"""

import tensorflow as tf

from pie.errors import PieError

_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
_CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
# ImageNet eval: resize the shorter side to image_size / 0.875 (256 for 224), then take the central crop.
_CENTRAL_FRACTION = 0.875


def _normalize(image, mean, std):
  return (tf.cast(image, tf.float32) - mean) / std


def digits(image, training, seed, image_size):
  """Digits and Fashion-MNIST: scale to [0, 1]; no augmentation (small, centred images)."""
  del training, seed, image_size
  return tf.cast(image, tf.float32) / 255.0


def digits_display(image, image_size):
  del image_size
  return image


def _maybe_resize(image, image_size):
  if image_size:
    image = tf.cast(tf.clip_by_value(tf.math.round(tf.image.resize(image, [image_size, image_size])), 0, 255), tf.uint8)
  return image


def cifar(image, training, seed, image_size):
  """CIFAR: pad 4 + random crop + horizontal flip for training; per-channel standardization."""
  image = _maybe_resize(image, image_size)
  if training:
    size = tf.shape(image)[:2]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.image.resize_with_crop_or_pad(image, size[0] + 8, size[1] + 8)
    image = tf.image.stateless_random_crop(padded, tf.concat([size, tf.shape(image)[2:]], 0), crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return _normalize(image, _CIFAR_MEAN, _CIFAR_STD)


def cifar_display(image, image_size):
  return _maybe_resize(image, image_size)


def _resize_shorter_side(image, size):
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
  new = tf.cast(tf.math.round(shape * scale), tf.int32)
  return tf.image.resize(image, new, method="bicubic", antialias=True)


def _imagenet_eval_uint8(image, image_size):
  image = _resize_shorter_side(image, tf.cast(tf.math.round(image_size / _CENTRAL_FRACTION), tf.int32))
  shape = tf.shape(image)
  top = (shape[0] - image_size) // 2
  left = (shape[1] - image_size) // 2
  image = tf.image.crop_to_bounding_box(image, top, left, image_size, image_size)
  return tf.cast(tf.clip_by_value(tf.math.round(image), 0, 255), tf.uint8)


def imagenet(image, training, seed, image_size):
  """ImageNet: Inception-style random crop + flip for training; resize + central crop for eval."""
  if image.shape.rank == 2 or (image.shape[-1] == 1):
    image = tf.image.grayscale_to_rgb(image if image.shape.rank == 3 else image[..., None])
  if training:
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=crop_seed,
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, size)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  else:
    image = _imagenet_eval_uint8(image, image_size)
  return _normalize(image, _IMAGENET_MEAN, _IMAGENET_STD)


def imagenet_display(image, image_size):
  return _imagenet_eval_uint8(image, image_size)


def _celeba_eval_uint8(image, image_size):
  """CelebA's aligned faces (218x178): the central square (178x178 for the aligned set), resized to image_size."""
  shape = tf.shape(image)
  side = tf.minimum(shape[0], shape[1])
  image = tf.image.crop_to_bounding_box(image, (shape[0] - side) // 2, (shape[1] - side) // 2, side, side)
  if image_size:
    image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
  return tf.cast(tf.clip_by_value(tf.math.round(image), 0, 255), tf.uint8)


def celeba(image, training, seed, image_size):
  """CelebA faces: the central square resized to image_size; a horizontal flip for training (faces are symmetric
  enough, hair and age are not changed by it); ImageNet's standardization."""
  image = _celeba_eval_uint8(image, image_size)
  if training:
    image = tf.image.stateless_random_flip_left_right(image, seed)
  return _normalize(image, _IMAGENET_MEAN, _IMAGENET_STD)


def celeba_display(image, image_size):
  return _celeba_eval_uint8(image, image_size)


def normalize_display(name, images):
  """Model inputs from display images (the uint8 eval images that `get_display(name)` returns).

  Eval preprocessing = display (resize/crop) then this normalization, so corrupted or otherwise edited display
  images can be fed to a model exactly as clean ones are.
  """
  if name in ("digits", "unit_scale"):
    return tf.cast(images, tf.float32) / 255.0
  if name == "cifar":
    return _normalize(images, _CIFAR_MEAN, _CIFAR_STD)
  if name in ("imagenet", "celeba"):
    return _normalize(images, _IMAGENET_MEAN, _IMAGENET_STD)
  _lookup(name)  # raises the clear error for an unknown name
  raise PieError(f"preprocessing {name!r} has no display normalization")


# "unit_scale" is the digits preprocessing under a name that says what it does, for other small grayscale datasets.
_PREPROCESS = {
    "digits": (digits, digits_display),
    "unit_scale": (digits, digits_display),
    "cifar": (cifar, cifar_display),
    "imagenet": (imagenet, imagenet_display),
    "celeba": (celeba, celeba_display),
}


def _lookup(name):
  if name not in _PREPROCESS:
    raise PieError(f"unknown preprocessing {name!r} (config.data.preprocess): choose one of {sorted(_PREPROCESS)}")
  return _PREPROCESS[name]


# Preprocessings without training-time randomness that work on a batch as on one image: the training pipeline maps
# them once per batch instead of once per example (the per-example map cost more CPU than the small model's steps).
_BATCHABLE = frozenset({"digits", "unit_scale"})


def get(name):
  return _lookup(name)[0]


def is_batchable(name):
  """True when `get(name)` has no augmentation and maps a batch of images as it maps each image."""
  _lookup(name)
  return name in _BATCHABLE


def get_display(name):
  return _lookup(name)[1]
