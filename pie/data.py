"""Datasets: the embedded handwritten digits, Fashion-MNIST from its original files, and any TFDS image-classification
dataset, behind one interface.

Every dataset serves raw uint8 images and integer labels; a named preprocessing turns them into model inputs.
Evaluation examples are read in a fixed order and numbered by their position: that `example_id` is the key that
joins the predictions of all models of a study.

Training and export read through input functions for `strategy.distribute_datasets_from_function`: each host (input
pipeline) reads its own share of a split and yields per-replica batches. A TFDS dataset is read as its TPU reference
pipelines read it: the file names are shuffled and sharded by host, the encoded records are shuffled, and images are
decoded and augmented after the shuffle, so that the shuffle buffer holds compressed bytes, not pixels.
"""

import abc
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from pie import features as features_lib
from pie import preprocess
from pie.errors import PieError

EMBEDDED_DATASET = "digits"
# The last 500 of sklearn's 1797 digit images are the test split: a fixed, documented split that needs no random
# state. The file is ordered by writer, so the test images come from writers the training set never saw.
DIGITS_NUM_TEST = 500
# example_id of the padding that fills the last eval batch of a distributed export (dropped on the host).
PADDING_ID = -1


FASHION_MNIST = "fashion_mnist"
# Where Debian's package dataset-fashion-mnist puts the four original IDX files (the files TFDS's fashion_mnist
# builder downloads), used when config.data.data_dir is not set.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "apt-get install dataset-fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The class names of the dataset's authors (and of TFDS's fashion_mnist), in label order.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _per_replica_batch(input_context, batch_size):
  """The per-replica batch of a global `batch_size`, which must split evenly over the replicas."""
  replicas = input_context.num_replicas_in_sync
  if batch_size % replicas:
    raise PieError(
        f"batch size {batch_size} does not split over {replicas} replicas: use a multiple of {replicas}",
        parameter="batch_size",
    )
  return batch_size // replicas


def _host_batch(input_context, batch_size):
  """Examples per step that this host's pipeline feeds to its own replicas."""
  local_replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
  return _per_replica_batch(input_context, batch_size) * local_replicas


def _options(deterministic, private_threadpool):
  """tf.data options of a training or eval pipeline.

  Parallel stages are autotuned. Without `deterministic` they may hand elements out as they finish (sloppy order,
  faster on a busy host). A private thread pool, one thread per core with single-threaded ops, keeps the input
  pipeline from queueing behind the runtime's own ops, as on TPU hosts.
  """
  options = tf.data.Options()
  options.deterministic = bool(deterministic)
  options.autotune.enabled = True
  if private_threadpool:
    options.threading.private_threadpool_size = os.cpu_count() or 1
    options.threading.max_intra_op_parallelism = 1
  return options


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  num_classes: int
  class_names: Sequence[str]
  image_shape: Sequence[int]  # of the raw uint8 images; None entries for variable sizes
  num_train: Optional[int]  # None when the split size is unknown (e.g. mocked TFDS data)
  num_eval: Optional[int]
  train_split: str
  eval_split: str
  train_class_counts: Optional[Sequence[int]] = None  # training examples per class, when known (in-memory datasets)


class Dataset(abc.ABC):
  """Train and eval pipelines of one dataset; subclasses provide the raw examples."""

  info: DatasetInfo

  def __init__(self, data_config):
    self.config = data_config

  @abc.abstractmethod
  def _raw_train(self, seed):
    """Training split as tf.data of {"image": uint8 [H,W,C], "label": int64}."""

  @abc.abstractmethod
  def _raw_eval(self):
    """Eval split in its fixed order, as tf.data of {"image": uint8 [H,W,C], "label": int64}."""

  def steps_per_epoch(self, batch_size, override=None):
    if override:
      return int(override)
    if not self.info.num_train:
      raise PieError(
          f"dataset {self.info.name!r}: the size of split {self.info.train_split!r} is unknown; "
          "set config.steps_per_epoch"
      )
    steps = self.info.num_train // batch_size
    if steps < 1:
      raise PieError(
          f"dataset {self.info.name!r}: batch size {batch_size} is larger than the "
          f"{self.info.num_train} training examples"
      )
    return steps

  # Hooks of the input pipelines. A dataset that stores its images encoded (TFDS) serves encoded records from
  # `_train_records` and `_eval_records` and decodes them in `_decode`, after the shuffle; in-memory datasets serve
  # their raw examples and need no decoding.
  encoded = False

  def _train_records(self, seed, epoch_seed, input_context):
    """This host's share of the training split for one epoch, unshuffled: every n-th example of n hosts.

    `epoch_seed` seeds what the source itself shuffles (TFDS: the order of the files).
    """
    del epoch_seed
    records = self._raw_train(seed)
    if input_context.num_input_pipelines > 1:
      records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return records

  def _eval_records(self):
    """The eval split's records in their fixed order (position = example_id), encoded when `encoded`."""
    return self._raw_eval()

  def _decode(self, record):
    """{"image": uint8 [H,W,C], "label": int64} of a record of `_train_records` / `_eval_records`."""
    return record

  def train_batches(self, batch_size, seed, start_epoch, num_epochs, steps_per_epoch, deterministic=True):
    """Batches of (image, one-hot label) for epochs [start_epoch, num_epochs), read by one host."""
    input_fn = self.train_input_fn(batch_size, seed, start_epoch, num_epochs, steps_per_epoch, deterministic)
    return input_fn(tf.distribute.InputContext())

  def train_input_fn(
      self, batch_size, seed, start_epoch, num_epochs, steps_per_epoch, deterministic=True, image_dtype=tf.float32
  ):
    """For `strategy.distribute_datasets_from_function`: this host's per-replica batches of (image, one-hot label).

    A step of all hosts is one global batch of `batch_size`. Each host reads its own share of the split (its files
    for TFDS: `_train_records`). Epoch e is shuffled with a seed derived from (seed, e) and its augmentations use
    stateless per-example seeds, so a run resumed at epoch e sees exactly the batches an uninterrupted run would have
    seen (with `deterministic`: otherwise parallel stages may reorder elements). Images are cast to `image_dtype`
    (bfloat16 under mixed precision: half the host memory and infeed of float32).
    """
    if start_epoch >= num_epochs:
      raise PieError(f"no epoch left to train: start epoch {start_epoch}, {num_epochs} epochs")
    fn = preprocess.get(self.config.preprocess)
    num_classes = self.info.num_classes
    image_size = self.config.get("image_size")
    buffer = self.config.get("shuffle_buffer", 10_000)
    batchable = preprocess.is_batchable(self.config.preprocess)
    options = _options(deterministic, self.config.get("private_threadpool", False))

    def prep_batch(ex):
      image = tf.cast(fn(ex["image"], training=True, seed=None, image_size=image_size), image_dtype)
      return image, tf.one_hot(ex["label"], num_classes)

    def input_fn(input_context):
      per_replica = _per_replica_batch(input_context, batch_size)
      examples = steps_per_epoch * _host_batch(input_context, batch_size)
      hosts, host = input_context.num_input_pipelines, input_context.input_pipeline_id

      def prep(epoch_seed, indexed):
        index, record = indexed
        ex = self._decode(record)
        # Augmentation seeds differ between hosts: the host's position in the epoch, interleaved with the others'.
        example_seed = tf.stack([epoch_seed, index * hosts + host])
        image = tf.cast(fn(ex["image"], training=True, seed=example_seed, image_size=image_size), image_dtype)
        return image, tf.one_hot(ex["label"], num_classes)

      def one_epoch(epoch):
        epoch_seed = int(seed) * 100_003 + epoch  # a Python int: tf.data needs static shuffle seeds
        records = self._train_records(seed, epoch_seed, input_context)
        # Repeated so that every epoch has its steps_per_epoch full batches even when the split is smaller than that
        # (a steps_per_epoch override, an unknown split size): a short epoch would let fit() read the next epoch's
        # batches and then run out, silently training fewer steps than recorded. On a large enough split the first
        # pass alone is read, so the batches are unchanged; an empty split still ends (tf.data stops repeating it).
        ds = records.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False).repeat().take(examples)
        if batchable:
          if self.encoded:
            ds = ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)
          return ds.batch(per_replica, drop_remainder=True)
        # Augmentation: every example carries its epoch's seed and its index, for its stateless random ops.
        return tf.data.Dataset.zip(
            (tf.data.Dataset.from_tensors(tf.constant(epoch_seed, tf.int64)).repeat(), ds.enumerate())
        )

      epochs = [one_epoch(e) for e in range(start_epoch, num_epochs)]
      ds = epochs[0]
      for more in epochs[1:]:
        ds = ds.concatenate(more)
      # One map over all epochs: a map per epoch was traced once per epoch.
      if batchable:
        ds = ds.map(prep_batch, num_parallel_calls=tf.data.AUTOTUNE)
      else:
        ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE).batch(per_replica, drop_remainder=True)
      return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    return input_fn

  def num_eval_examples(self):
    """Size of the eval split: from the dataset's info, else from its pipeline (counted when it does not know)."""
    if self.info.num_eval is not None:
      return int(self.info.num_eval)
    records = self._eval_records()
    count = int(records.cardinality())
    if count == tf.data.INFINITE_CARDINALITY:
      raise PieError(f"dataset {self.info.name!r}: the eval split {self.info.eval_split!r} never ends")
    if count == tf.data.UNKNOWN_CARDINALITY:
      count = int(records.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
    return count

  def _prep_eval(self, image_dtype):
    fn = preprocess.get(self.config.preprocess)
    image_size = self.config.get("image_size")

    def prep(index, record):
      ex = self._decode(record)
      return {
          "example_id": index,
          "image": tf.cast(fn(ex["image"], training=False, seed=None, image_size=image_size), image_dtype),
          "label": tf.cast(ex["label"], tf.int64),
      }

    return prep

  def eval_batches(self, batch_size):
    """Batches of {"example_id", "image", "label"} in the split's fixed order, read by this host alone."""
    ds = self._eval_records().enumerate()
    ds = ds.map(self._prep_eval(tf.float32), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

  def eval_input_fn(self, batch_size, image_dtype=tf.float32):
    """For `strategy.distribute_datasets_from_function`: the eval split in per-replica batches, every example once.

    Each step's global batch holds the next `batch_size` examples of the split; host h of n takes the h-th n-th of
    it (it reads the split's records and decodes only those). The last global batch is filled up with blank images
    whose example_id is PADDING_ID, so that every replica of every host runs the same number of full batches (TPUs
    need static shapes; collectives need every worker in every step). Ids and labels are int32, which TPUs carry
    natively.
    """
    num_examples = self.num_eval_examples()
    steps = -(-num_examples // batch_size)
    prep = self._prep_eval(image_dtype)

    def to_device_types(ex):
      return {**ex, "example_id": tf.cast(ex["example_id"], tf.int32), "label": tf.cast(ex["label"], tf.int32)}

    def blank(ex):
      return {
          "example_id": tf.constant(PADDING_ID, tf.int32),
          "image": tf.zeros_like(ex["image"]),
          "label": tf.constant(0, tf.int32),
      }

    def input_fn(input_context):
      per_replica = _per_replica_batch(input_context, batch_size)
      host_batch = _host_batch(input_context, batch_size)
      host = input_context.input_pipeline_id
      records = self._eval_records().enumerate()
      if input_context.num_input_pipelines > 1:
        records = records.filter(lambda index, _: (index % batch_size) // host_batch == host)
      ds = records.map(lambda *r: to_device_types(prep(*r)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      last = num_examples % batch_size or batch_size
      own = (steps - 1) * host_batch + min(max(last - host * host_batch, 0), host_batch) if steps else 0
      padding = steps * host_batch - own
      if padding:
        # The blank has the shape of a real eval image: the split's first example, preprocessed, then zeroed.
        first = self._eval_records().take(1).enumerate().map(lambda *r: blank(prep(*r)))
        ds = ds.concatenate(first.repeat(padding))
      ds = ds.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
      return ds.with_options(_options(True, self.config.get("private_threadpool", False)))

    return input_fn

  def raw_eval(self):
    """The eval split's raw examples {"image": uint8, "label": int64} in their fixed order (position = example_id)."""
    return self._eval_records().map(self._decode) if self.encoded else self._eval_records()

  def slice_specs(self, paths):
    """The `features.SliceFeature` of each path of config.slice_features; a PieError for a feature the dataset lacks.

    Datasets held as arrays have an image and a label per example and nothing else.
    """
    paths = features_lib.check_paths(paths)
    if paths:
      raise PieError(
          f"dataset {self.info.name!r} has no feature {paths[0]!r} (config.slice_features): its examples have an "
          "image and a label only; slice features need a TFDS dataset that has them (e.g. celeb_a's attributes)",
          parameter="slice_features",
      )
    return []

  def _slice_columns(self, specs):
    """Raw values of each slice feature over the eval split, in example order (a list of numpy arrays)."""
    del specs
    return []

  def eval_slices(self, paths):
    """The eval examples' slice feature codes, exported beside the predictions: (metadata list, int64 [n, features]).

    Read in a pass of its own (the values belong to the eval split, not to a model), without decoding images.
    """
    specs = self.slice_specs(paths)
    if not specs:
      return [], None
    return features_lib.encode(specs, self._slice_columns(specs))

  def eval_display_images(self, example_ids):
    """uint8 images as a model sees them at eval (resized and cropped, not normalized), keyed by example_id."""
    wanted = np.unique(np.asarray(example_ids, np.int64))
    image_size = self.config.get("image_size")
    display = preprocess.get_display(self.config.preprocess)
    found = {}
    if not len(wanted):
      return found
    ds = self.raw_eval().enumerate()
    ds = ds.filter(lambda i, ex: tf.reduce_any(tf.equal(i, wanted)))
    ds = ds.map(lambda i, ex: (i, display(ex["image"], image_size=image_size)))
    for index, image in ds.as_numpy_iterator():
      found[int(index)] = image
      if len(found) == len(wanted):
        break
    return found


def long_tail(images, labels, fractions, num_classes, seed, name):
  """The training split with only a fraction of each class's examples kept (config.data.train_class_fraction).

  Which examples a class keeps is drawn once from `seed` (config.data.subset_seed, 0 by default), the same for every
  model of a study, and the kept examples stay in their order: a long-tailed training set whose classes differ in
  frequency, to relate each class's harm to how often it was seen.
  """
  fractions = np.asarray(fractions, dtype=np.float64)
  if fractions.shape != (num_classes,) or not np.all((fractions > 0) & (fractions <= 1)):
    raise PieError(
        f"config.data.train_class_fraction must hold {num_classes} fractions in (0, 1] (one per class of {name!r}), "
        f"got {tuple(fractions.tolist())}",
        parameter="train_class_fraction",
    )
  rng = np.random.default_rng(seed)
  keep = np.zeros(len(labels), dtype=bool)
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    count = max(1, int(round(fractions[c] * len(members)))) if len(members) else 0
    keep[rng.permutation(members)[:count]] = True
  return images[keep], labels[keep]


class ArrayDataset(Dataset):
  """A dataset held in memory as numpy arrays per split ({split: (uint8 images [N, H, W, C], int64 labels [N])})."""

  def __init__(self, data_config, name, splits, class_names):
    super().__init__(data_config)
    for split in (data_config.train_split, data_config.eval_split):
      if split not in splits:
        raise PieError(
            f"dataset {name!r} has splits {sorted(splits)}, not {split!r} (config.data.train_split / eval_split)"
        )
    fractions = data_config.get("train_class_fraction")
    if fractions:
      splits = dict(splits)
      splits[data_config.train_split] = long_tail(
          *splits[data_config.train_split], fractions, len(class_names), data_config.get("subset_seed", 0), name
      )
    self._splits = splits
    images = splits[data_config.eval_split][0]
    self.info = DatasetInfo(
        name=name,
        num_classes=len(class_names),
        class_names=list(class_names),
        image_shape=images.shape[1:],
        num_train=len(splits[data_config.train_split][1]),
        num_eval=len(splits[data_config.eval_split][1]),
        train_split=data_config.train_split,
        eval_split=data_config.eval_split,
        train_class_counts=tuple(
            int(c) for c in np.bincount(splits[data_config.train_split][1], minlength=len(class_names))
        ),
    )

  def _from_split(self, split):
    images, labels = self._splits[split]
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

  def _raw_train(self, seed):
    return self._from_split(self.config.train_split)

  def _raw_eval(self):
    return self._from_split(self.config.eval_split)

  def eval_arrays(self):
    """The raw eval split as numpy (images uint8, labels int64): cheap here, so analysis can skip tf.data."""
    return self._splits[self.config.eval_split]


class DigitsDataset(ArrayDataset):
  """scikit-learn's bundled UCI handwritten digits: 1797 8x8 images, 10 classes, no download."""

  def __init__(self, data_config):
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

    digits = load_digits()
    # Pixel values are 0..16; stored as uint8 0..255 like every other dataset's raw images.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    n_train = len(labels) - DIGITS_NUM_TEST
    super().__init__(
        data_config,
        EMBEDDED_DATASET,
        {"train": (images[:n_train], labels[:n_train]), "test": (images[n_train:], labels[n_train:])},
        [str(d) for d in range(10)],
    )


def read_idx(path):
  """An IDX file (gzip-compressed or not) as a numpy array: the format of MNIST and Fashion-MNIST.

  The header is a magic number (two zero bytes, a type code, the number of dimensions) and one big-endian uint32 per
  dimension; only unsigned bytes (type 0x08) are read, the one type these datasets use.
  """
  import gzip  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top

  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip's magic, whatever the file's name says
      data = gzip.decompress(data)
  except (OSError, EOFError, zlib.error, tf.errors.OpError) as e:
    raise PieError(f"{path}: not a readable IDX file ({e})") from None
  if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
    raise PieError(f"{path}: not an IDX file of unsigned bytes (header {data[:4].hex()})")
  ndim = data[3]
  header = 4 + 4 * ndim
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  if len(data) != header + int(np.prod(shape)):
    raise PieError(f"{path}: {len(data) - header} bytes of data for shape {shape}: the file is truncated or damaged")
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


class FashionMnistDataset(ArrayDataset):
  """Fashion-MNIST (Zalando, 2017) from its four original IDX files: 60,000 training and 10,000 test images of
  28x28 grayscale clothing, 10 classes. Examples keep the files' order (TFDS's prepared fashion_mnist shuffles it)."""

  def __init__(self, data_config):
    import os  # pylint: disable=g-import-not-at-top

    folder = data_config.get("data_dir") or FASHION_MNIST_DIR
    splits = {}
    for split, (image_file, label_file) in FASHION_MNIST_FILES.items():
      paths = [os.path.join(folder, image_file), os.path.join(folder, label_file)]
      for path in paths:
        if not tf.io.gfile.exists(path):
          raise PieError(
              f"{path}: missing, a file of Fashion-MNIST. Install Debian's package ({FASHION_MNIST_INSTALL}"
              f", which puts the four files in {FASHION_MNIST_DIR}) or set config.data.data_dir to a folder "
              f"holding {', '.join(f for pair in FASHION_MNIST_FILES.values() for f in pair)}"
          )
      images, labels = read_idx(paths[0]), read_idx(paths[1])
      if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or labels.max(initial=0) > 9:
        raise PieError(
            f"{paths[0]}, {paths[1]}: {images.shape} images and {labels.shape} labels are not one "
            "Fashion-MNIST split (28x28 images, one label 0-9 each)"
        )
      splits[split] = (images[..., None], labels.astype(np.int64))
    super().__init__(data_config, FASHION_MNIST, splits, FASHION_MNIST_CLASSES)


class TfdsDataset(Dataset):
  """Any TFDS image-classification dataset, read from a user-given data_dir; never downloads unless asked."""

  def __init__(self, data_config):
    super().__init__(data_config)
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    self._tfds = tfds
    name = data_config.name
    try:
      self._builder = tfds.builder(name, data_dir=data_config.get("data_dir"))
    except tfds.core.registered.DatasetNotFoundError as e:
      raise PieError(
          f"unknown dataset {name!r}: neither the embedded {EMBEDDED_DATASET!r} nor a TFDS dataset "
          f"({str(e).splitlines()[0]})"
      ) from None
    info = self._builder.info
    features = info.features
    image_key, label_key = data_config.get("image_key", "image"), data_config.get("label_key", "label")
    # config.data.label_feature: any scalar feature by path (e.g. CelebA's attributes/Blond_Hair), label_key's stead.
    self._label_path = data_config.get("label_feature") or label_key
    if image_key not in features or (not data_config.get("label_feature") and label_key not in features):
      raise PieError(
          f"dataset {name!r} has features {sorted(features.keys())}: no {image_key!r}/{label_key!r} "
          "image classification pair (set config.data.image_key / label_key, or label_feature)"
      )
    label_spec = features_lib.describe(
        features_lib.resolve(features, self._label_path, name, "label_feature"), self._label_path, name, "label_feature"
    )
    class_names = features_lib.label_names(label_spec, data_config.get("class_names"), name)
    splits = info.splits

    def split_size(split):
      try:
        return splits[split].num_examples
      except (KeyError, ValueError):
        return None

    self.info = DatasetInfo(
        name=name,
        num_classes=len(class_names),
        class_names=list(class_names),
        image_shape=tuple(features[image_key].shape),
        num_train=split_size(data_config.train_split),
        num_eval=split_size(data_config.eval_split),
        train_split=data_config.train_split,
        eval_split=data_config.eval_split,
    )
    self._image_feature = features[image_key]
    if data_config.get("download", False):
      self._builder.download_and_prepare()
    # Fail now, with the data_dir in the message, rather than deep inside training: building the dataset checks that
    # the data is prepared without reading it.
    self._eval_records()

  encoded = True  # images are read as their stored JPEG/PNG bytes and decoded after the shuffle

  def _read(self, split, shuffle_files, read_config, whole_examples=False):
    """The split's records with the image left encoded: {"image": string, "label": int64}; with `whole_examples`,
    TFDS's examples with every feature (the slice features' source), the image still encoded."""
    cfg = self.config
    image_key = cfg.get("image_key", "image")
    try:
      ds = self._builder.as_dataset(
          split=split,
          shuffle_files=shuffle_files,
          read_config=read_config,
          decoders={image_key: self._tfds.decode.SkipDecoding()},
      )
    except (AssertionError, FileNotFoundError, self._tfds.core.registered.DatasetNotFoundError) as e:
      where = cfg.get("data_dir") or "the default TFDS data_dir (~/tensorflow_datasets)"
      raise PieError(
          f"dataset {cfg.name!r} split {split!r} is not prepared in {where}: prepare it there (or set "
          f"config.data.data_dir to where it is; config.data.download=True lets TFDS download it). "
          f"TFDS said: {str(e).splitlines()[0]}"
      ) from None
    except ValueError as e:
      if read_config.input_context is None:
        raise
      raise PieError(
          f"dataset {cfg.name!r} split {split!r} cannot be shared by file between "
          f"{read_config.input_context.num_input_pipelines} hosts: each host reads whole files, and the split has "
          f"fewer. TFDS said: {str(e).splitlines()[0]}"
      ) from None
    if whole_examples:
      return ds
    label_path = self._label_path
    return ds.map(
        lambda ex: {"image": ex[image_key], "label": tf.cast(features_lib.value_at(ex, label_path), tf.int64)}
    )

  def slice_specs(self, paths):
    features = self._builder.info.features
    return [
        features_lib.describe(features_lib.resolve(features, path, self.info.name), path, self.info.name)
        for path in features_lib.check_paths(paths)
    ]

  def _slice_columns(self, specs):
    read_config = self._tfds.ReadConfig(interleave_cycle_length=1)
    ds = self._read(self.config.eval_split, shuffle_files=False, read_config=read_config, whole_examples=True)
    ds = ds.map(lambda ex: tuple(features_lib.value_at(ex, spec.name) for spec in specs)).batch(4096)
    parts = [[] for _ in specs]
    for batch in ds.as_numpy_iterator():
      for j, values in enumerate(batch):
        parts[j].append(values)
    return [np.concatenate(p) if p else np.zeros(0) for p in parts]

  def _train_records(self, seed, epoch_seed, input_context):
    """This host's files of the training split, in an order shuffled per epoch, read 16 files at a time.

    TFDS shards the files by host (`input_context`) before shuffling them with `epoch_seed`; records are interleaved
    one at a time from 16 open files, so consecutive records come from different files before any buffer shuffles
    them. Each open file has a read buffer of config.data.read_buffer_mib (TFDS's default: 8 MiB); the reader keeps
    about 30 of them allocated, over half a GiB at 8 MiB.
    """
    del seed
    hosts = input_context.num_input_pipelines
    buffer_mib = self.config.get("read_buffer_mib")
    read_config = self._tfds.ReadConfig(
        shuffle_seed=epoch_seed,
        interleave_block_length=1,
        input_context=input_context if hosts > 1 else None,
        override_buffer_size=int(buffer_mib * 2**20) if buffer_mib else None,
    )
    return self._read(self.config.train_split, shuffle_files=True, read_config=read_config)

  def _eval_records(self):
    return self._read(
        self.config.eval_split, shuffle_files=False, read_config=self._tfds.ReadConfig(interleave_cycle_length=1)
    )

  def _decode(self, record):
    if record["image"].dtype != tf.string:
      return record  # already decoded: tfds.testing.mock_data's generated examples ignore the decoders argument
    return {"image": self._image_feature.decode_example(record["image"]), "label": record["label"]}

  def _raw_train(self, seed):
    return self._train_records(seed, seed, tf.distribute.InputContext()).map(self._decode)

  def _raw_eval(self):
    return self._eval_records().map(self._decode)


# Datasets read by pie itself (no TFDS builder): name -> class.
ARRAY_DATASETS = {EMBEDDED_DATASET: DigitsDataset, FASHION_MNIST: FashionMnistDataset}


def load_dataset(data_config):
  """The dataset named by `data_config.name`: "digits" (embedded), "fashion_mnist" (from its IDX files, see
  `FashionMnistDataset`; config.data.source = "tfds" reads a TFDS-prepared copy instead) or any TFDS name."""
  if data_config.name in ARRAY_DATASETS and data_config.get("source", "files") != "tfds":
    return ARRAY_DATASETS[data_config.name](data_config)
  return TfdsDataset(data_config)
