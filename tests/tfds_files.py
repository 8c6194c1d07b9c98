"""Real TFDS-format image datasets of generated JPEGs, for the input-pipeline tests and the memory benchmark.

`tfds.testing.mock_data` serves random examples from no files at all: there is nothing to shard by file between
hosts, and its images (5 to 49 pixels for imagenet2012) are nothing like ImageNet's. `write_dataset` writes real
TFRecord shards under a registered dataset's own name, version and features (imagenet2012: its 1000 WordNet class
names) with `tfds.dataset_builders.store_as_tfds_dataset`; the registered builder then reads them from that data_dir
exactly as it reads the prepared real dataset (`tfds.builder("imagenet2012", data_dir=...)` gives their split sizes
and files).
"""

import io

import numpy as np
from PIL import Image

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow_datasets as tfds  # noqa: E402

# Common ImageNet image sizes (width, height): most training images are 500 pixels on their longer side.
IMAGENET_SIZES = ((500, 375), (500, 333), (375, 500), (500, 500), (333, 500), (400, 300))


def jpegs(sizes, seed=0, noise=16.0, quality=90):
  """JPEG bytes of one smooth random image per (width, height): colour blocks of 8x8 pixels, bicubic, plus Gaussian
  pixel noise of std `noise`, which sets how well they compress. At 500x375, noise 16 and quality 90 they average
  about 108 KB, ImageNet's mean (ILSVRC2012_img_train.tar holds 138 GB for 1,281,167 images)."""
  rng = np.random.default_rng(seed)
  out = []
  for width, height in sizes:
    blocks = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(blocks).resize((width, height), Image.BICUBIC), np.float32)
    image += rng.normal(0.0, noise, image.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    out.append(buffer.getvalue())
  return out


def write_dataset(data_dir, name, splits, images, num_shards, label=None):
  """Writes `name` (a registered TFDS image dataset) into `data_dir`; returns the TFDS builder that reads it.

  splits: {split: number of examples}; images: encoded images, cycled through; num_shards: files per split (each
  split needs at least that many examples); label(split, index) -> class id, by default index mod the number of
  classes (unique ids while a split has fewer examples than classes). Other text features (imagenet2012's file_name)
  get "<split>_<index>".
  """
  features = tfds.builder(name, data_dir=str(data_dir)).info.features
  num_classes = features["label"].num_classes
  label = label or (lambda split, index: index % num_classes)
  text = [key for key, feature in features.items() if isinstance(feature, tfds.features.Text)]

  def examples(split, count):
    for index in range(count):
      example = {"image": images[index % len(images)], "label": int(label(split, index))}
      example.update({key: f"{split}_{index}" for key in text})
      yield index, example

  tfds.dataset_builders.store_as_tfds_dataset(
      name=name,
      version=str(tfds.builder_cls(name).VERSION),
      features=features,
      split_datasets={split: examples(split, count) for split, count in splits.items()},
      data_dir=str(data_dir),
      download_config=tfds.download.DownloadConfig(num_shards=num_shards),
  )
  return tfds.builder(name, data_dir=str(data_dir))


def example_files(data_dir, name, split):
  """{label: file name} of a split written with unique labels: which file each example lives in."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  ds = builder.as_dataset(
      split=split,
      read_config=tfds.ReadConfig(add_tfds_id=True),
      decoders={"image": tfds.decode.SkipDecoding()},
  )
  files = {}
  for example in ds.as_numpy_iterator():
    files[int(example["label"])] = example["tfds_id"].decode().split("__")[0]
  return files
