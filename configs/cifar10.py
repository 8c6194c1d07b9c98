r"""CIFAR-10 with a CIFAR ResNet (ResNet-20 by default; `--config.model.kwargs.width=4` for a wide ResNet).

Needs CIFAR-10 prepared by TFDS in `data_dir` (nothing is downloaded unless `--config.data.download=True`):

  python -m train.population --config=configs/cifar10.py --config.data.data_dir=/path/to/tfds \
      --workdir=studies/cifar10 --num_workers=1 --analyze

The paper trained 30 models per level; 10 seeds are the default here (raise with --config.num_seeds=30).
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.name = "cifar10"

  config.data = ml_collections.ConfigDict()
  config.data.name = "cifar10"
  config.data.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir
  config.data.download = False
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.preprocess = "cifar"
  config.data.image_size = ml_collections.config_dict.placeholder(int)  # 32x32
  config.data.shuffle_buffer = 50_000

  config.model = ml_collections.ConfigDict()
  config.model.name = "cifar_resnet"
  config.model.kwargs = ml_collections.ConfigDict({"depth": 20, "width": 1, "weight_decay": 5e-4})

  config.optimizer = "sgd"
  config.momentum = 0.9
  config.nesterov = True
  config.learning_rate = 0.1
  config.lr_scale_by_batch = True  # 0.1 x batch / 256
  config.lr_schedule = "piecewise"
  config.lr_boundaries_epochs = (91, 136)
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 1
  config.batch_size = 128
  config.num_epochs = 182
  config.steps_per_epoch = ml_collections.config_dict.placeholder(int)
  config.label_smoothing = 0.0
  config.deterministic = False
  config.mixed_precision = ml_collections.config_dict.placeholder(str)  # None: float32; "bfloat16" on TPUs
  # Train steps per call of the train function (None: a whole epoch; see pie.training.steps_per_execution).
  config.steps_per_execution = ml_collections.config_dict.placeholder(int)
  config.checkpoint_every_epochs = 1

  config.pruning = ml_collections.ConfigDict()
  config.pruning.scope = "all_but_classifier"
  config.pruning.begin_step = ml_collections.config_dict.placeholder(int)
  config.pruning.end_step = ml_collections.config_dict.placeholder(int)
  config.pruning.begin_fraction = 0.1
  config.pruning.end_fraction = 0.5
  config.pruning.frequency = 100

  config.sparsity = 0.0
  config.seed = 0
  config.method = "magnitude"  # compression method of this model (see pie/variants.py); dense when sparsity is 0
  config.sparsity_levels = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
  config.num_seeds = 10
  # Every population trains on its own block of seeds (pie/variants.py), so the dense replicate is the null of every
  # level; "shared" starts model i of every level from dense seed i (its null is then the sham).
  config.seed_design = "independent"
  config.variants = ("magnitude",)  # compression methods of the study, each a population against the dense one
  # Populations for the noise floor (pie/variants.py CONTROLS); none by default at this cost. ("dense_replicate",)
  # trains num_seeds more dense models with other seeds, so that PIEs and hurt classes can be told from seed noise.
  config.controls = ()
  config.size_report = False  # record each model's compressed size (a TFLite conversion per model)

  config.top_k = 5
  config.export_logits = False
  config.eval_batch_size = 1000
  return config
