r"""Fashion-MNIST, read offline from its original IDX files: populations of small CNNs on 60,000 training and 10,000
test images of clothing (10 classes that differ in difficulty: shirt vs T-shirt vs pullover).

Install the files once (Debian puts them in /usr/share/datasets/fashion-mnist; config.data.data_dir may name any folder
holding the four IDX files):

  apt-get install dataset-fashion-mnist

The whole study (6 sparsity levels x 10 seeds, plus 10 dense replicates for the noise floor = 70 models, export,
analysis, report), 26 minutes on a 2-core CPU machine (measured: 25 min 51 s of training and export with 2 workers,
13 s of analysis; dense top-1 90.9%):

  python -m train.population --config=configs/fashion_mnist.py --workdir=studies/fashion_mnist --analyze

A long-tailed variant (`:long_tail`): the training split keeps 0.6^k of class k's images (T-shirt/top all 6,000,
ankle boot 61), the test split stays balanced; levels 0 and 90% x 10 seeds plus the 10 replicates (30 models), to relate
each class's harm to how often training saw it (summary.json's train_frequency_spearman):

  python -m train.population --config=configs/fashion_mnist.py:long_tail --workdir=studies/fashion_mnist_long_tail \
      --analyze

One model:

  python -m train.train --config=configs/fashion_mnist.py --config.sparsity=0.9 --config.seed=3 \
      --workdir=studies/fashion_mnist/sparsity90_seed3
"""

import ml_collections


def get_config(variant=None):
  """The balanced study, or with variant "long_tail" the long-tailed one (see the module docstring)."""
  if variant not in (None, "", "long_tail"):
    raise ValueError(f"configs/fashion_mnist.py knows the variant 'long_tail', not {variant!r}")
  config = ml_collections.ConfigDict()
  config.name = "fashion_mnist"

  config.data = ml_collections.ConfigDict()
  config.data.name = "fashion_mnist"  # the IDX files, in file order (pie/data.py FashionMnistDataset)
  config.data.data_dir = ml_collections.config_dict.placeholder(str)  # None: /usr/share/datasets/fashion-mnist
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.preprocess = "unit_scale"
  config.data.image_size = ml_collections.config_dict.placeholder(int)  # keep 28x28
  config.data.shuffle_buffer = 60_000  # the whole training split: a full shuffle every epoch

  config.model = ml_collections.ConfigDict()
  config.model.name = "small_cnn"
  config.model.kwargs = ml_collections.ConfigDict({"filters": (16, 32), "hidden": 128, "pool_each": True})

  config.optimizer = "adam"
  config.learning_rate = 3e-3
  config.lr_schedule = "cosine"  # decays to 0 over the 4 epochs: +0.6 points of top-1 over a constant rate
  config.batch_size = 128
  config.num_epochs = 4
  config.steps_per_epoch = ml_collections.config_dict.placeholder(int)  # 60,000 // 128 = 468
  config.label_smoothing = 0.0
  config.deterministic = True
  config.mixed_precision = ml_collections.config_dict.placeholder(str)  # None: float32; "bfloat16" on TPUs
  config.steps_per_execution = ml_collections.config_dict.placeholder(int)
  config.checkpoint_every_epochs = 1

  config.pruning = ml_collections.ConfigDict()
  config.pruning.scope = "all_but_classifier"
  config.pruning.begin_step = ml_collections.config_dict.placeholder(int)
  config.pruning.end_step = ml_collections.config_dict.placeholder(int)
  config.pruning.begin_fraction = 0.0
  config.pruning.end_fraction = 0.6
  config.pruning.frequency = 50

  config.sparsity = 0.0
  config.seed = 0
  config.method = "magnitude"

  config.sparsity_levels = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
  config.num_seeds = 10
  # Every population trains on its own block of seeds (pie/variants.py), so the dense replicate is the null of every
  # level; "shared" starts model i of every level from dense seed i (its null is then the sham).
  config.seed_design = "independent"
  config.variants = ("magnitude",)
  config.controls = ("dense_replicate",)
  config.size_report = False

  # Groups of classes analysed like classes (slice_stats.csv): a grouping shipped with pie (pie/class_groups/), a JSON
  # file, or a mapping {group: [class ids or names]}.
  config.class_groups = "fashion_mnist"

  config.top_k = 5
  config.export_logits = False
  config.eval_batch_size = 1000

  if variant == "long_tail":
    config.name = "fashion_mnist_long_tail"
    # Fractions in class-id order, unrelated to difficulty: the rare classes include an easy one (bag) and a hard
    # one (shirt), so frequency and difficulty are not confounded by design.
    config.data.train_class_fraction = tuple(round(0.6**k, 4) for k in range(10))
    config.data.subset_seed = 0  # which images each class keeps: the same for every model
    config.sparsity_levels = (0.0, 0.9)
  return config
