r"""The embedded default: populations of small CNNs on scikit-learn's handwritten digits. No download, CPU only.

The whole study (6 sparsity levels x 10 seeds = 60 models, export, analysis, report), about 3 minutes on 2 cores:

  python -m train.population --config=configs/digits.py --workdir=studies/digits --analyze

One model:

  python -m train.train --config=configs/digits.py --config.sparsity=0.9 --config.seed=3 \
      --workdir=studies/digits/sparsity90_seed3

The model (conv 8, conv 16, maxpool, dense 32, dense 10) is small enough that 90% sparsity clearly costs accuracy,
as ResNet-50 does on ImageNet in the paper.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.name = "digits"

  config.data = ml_collections.ConfigDict()
  config.data.name = "digits"  # embedded: last 500 images are the test split (see pie/data.py)
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.preprocess = "digits"
  config.data.image_size = ml_collections.config_dict.placeholder(int)  # keep 8x8
  config.data.shuffle_buffer = 2000

  config.model = ml_collections.ConfigDict()
  config.model.name = "small_cnn"
  config.model.kwargs = ml_collections.ConfigDict({"filters": (8, 16), "hidden": 32})

  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.lr_schedule = "constant"
  config.batch_size = 32
  config.num_epochs = 20
  config.steps_per_epoch = ml_collections.config_dict.placeholder(
      int
  )  # derived from the training split: 1297 // 32 = 40
  config.label_smoothing = 0.0
  config.deterministic = True  # TF op determinism: same seed, same predictions on CPU
  config.mixed_precision = ml_collections.config_dict.placeholder(str)  # None: float32; "bfloat16" on TPUs
  # Train steps per call of the train function (None: a whole epoch; see pie.training.steps_per_execution).
  config.steps_per_execution = ml_collections.config_dict.placeholder(int)
  config.checkpoint_every_epochs = 5  # an epoch takes a fraction of a second; a checkpoint write about 60 ms

  config.pruning = ml_collections.ConfigDict()
  config.pruning.scope = "all_but_classifier"  # every conv and hidden dense layer; not the classifier
  config.pruning.begin_step = ml_collections.config_dict.placeholder(int)  # None: taken from the fractions below
  config.pruning.end_step = ml_collections.config_dict.placeholder(int)
  config.pruning.begin_fraction = 0.0
  config.pruning.end_fraction = 0.6  # pruning ends at 60% of training, then the sparse model fine-tunes
  config.pruning.frequency = 10

  # This model's place in the study: overridden per model by the launcher.
  config.sparsity = 0.0
  config.seed = 0
  config.method = "magnitude"  # compression method of this model (see pie/variants.py); dense when sparsity is 0

  # The study grid (read by train/population.py).
  config.sparsity_levels = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
  config.num_seeds = 10
  # Every population trains on its own block of seeds (pie/variants.py), so the dense replicate is the null of every
  # level; "shared" starts model i of every level from dense seed i (its null is then the sham).
  config.seed_design = "independent"
  config.variants = ("magnitude",)  # compression methods of the study, each a population against the dense one
  # Populations in which nothing is compressed, for the noise floor (pie/variants.py CONTROLS): a second dense
  # population with other seeds; add "sham" for one through the pruning machinery at a negligible target.
  config.controls = ("dense_replicate",)
  config.size_report = False  # record each model's compressed size (a TFLite conversion per model)

  config.top_k = 5
  config.export_logits = False
  config.eval_batch_size = 500
  return config
