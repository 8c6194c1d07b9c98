r"""ImageNet with ResNet-50, the paper's setting (batch 4096, 32,000 steps, pruning steps 5000-8000 every 500).

ImageNet must be prepared by TFDS in a bucket or folder you own (`imagenet2012` needs a manual download).

One model on a Cloud TPU (v3-32 or larger for batch 4096); rerunning the same command resumes after preemption:

  python -m train.train --config=configs/imagenet_resnet50.py \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets \
      --config.sparsity=0.9 --config.seed=3 \
      --workdir=gs://BUCKET/studies/imagenet/sparsity90_seed3 \
      --strategy=tpu --tpu=TPU_NAME

The whole grid (6 levels x 30 seeds): print one command per model and launch them on your TPUs, e.g.

  python -m train.population --config=configs/imagenet_resnet50.py \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets --workdir=gs://BUCKET/studies/imagenet \
      --dry_run --strategy=tpu --tpu='{tpu}'

then analyse:

  python -m analysis.analyze --study_dir=gs://BUCKET/studies/imagenet
"""

import ml_collections

_TRAIN_EXAMPLES = 1_281_167


def get_config():
  config = ml_collections.ConfigDict()
  config.name = "imagenet_resnet50"

  config.data = ml_collections.ConfigDict()
  config.data.name = "imagenet2012"
  config.data.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir
  config.data.download = False
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.preprocess = "imagenet"
  config.data.image_size = 224
  # Per host: the encoded records (JPEG bytes, about 110 KB each) shuffled after the host's files are shuffled and
  # interleaved, decoded after the shuffle; 4096 records hold about 450 MB (docs/tpu.md: host memory).
  config.data.shuffle_buffer = 4096
  config.data.read_buffer_mib = 2  # per open training file (16 at a time); TFDS's 8 MiB default costs ~0.6 GB
  config.data.private_threadpool = True  # tf.data in a thread pool of its own, one thread per host core

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet50"
  config.model.kwargs = ml_collections.ConfigDict({"weight_decay": 1e-4, "bn_momentum": 0.9, "bn_epsilon": 1e-5})

  config.batch_size = 4096
  config.steps_per_epoch = _TRAIN_EXAMPLES // 4096  # 312
  config.num_epochs = 103  # 32,136 steps, the paper's 32,000 rounded up to whole epochs
  config.optimizer = "sgd"
  config.momentum = 0.9
  config.nesterov = True
  config.learning_rate = 0.1
  config.lr_scale_by_batch = True  # 0.1 x 4096 / 256 = 1.6
  config.lr_schedule = "piecewise"
  config.lr_boundaries_epochs = (30, 60, 80)
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 5
  config.label_smoothing = 0.1
  config.deterministic = False
  # bfloat16 compute with float32 variables (TPU's native format; runs, slowly, on CPU too); None for float32.
  config.mixed_precision = "bfloat16"
  # Train steps per call of the train function (None: a whole epoch; see pie.training.steps_per_execution).
  config.steps_per_execution = ml_collections.config_dict.placeholder(int)
  config.checkpoint_every_epochs = 1

  config.pruning = ml_collections.ConfigDict()
  config.pruning.scope = "all_but_classifier"  # every conv incl. the 7x7 stem and projections; not the classifier
  config.pruning.begin_step = 5000
  config.pruning.end_step = 8000
  config.pruning.frequency = 500

  config.sparsity = 0.0
  config.seed = 0
  config.method = "magnitude"  # compression method of this model (see pie/variants.py); dense when sparsity is 0
  config.sparsity_levels = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
  config.num_seeds = 30
  # Every population trains on its own block of seeds (pie/variants.py), so the dense replicate is the null of every
  # level; "shared" starts model i of every level from dense seed i (its null is then the sham).
  config.seed_design = "independent"
  config.variants = ("magnitude",)  # compression methods of the study, each a population against the dense one
  # Populations for the noise floor (pie/variants.py CONTROLS); none by default at this cost. ("dense_replicate",)
  # trains num_seeds more dense models with other seeds, so that PIEs and hurt classes can be told from seed noise.
  config.controls = ()
  config.size_report = False  # record each model's compressed size (a TFLite conversion per model)

  # Groups of classes analysed like classes (slice_stats.csv): a grouping shipped with pie (pie/class_groups/), a JSON
  # file, or a mapping {group: [class ids or names]}.
  config.class_groups = "imagenet2012_wordnet"

  config.top_k = 5
  config.export_logits = False
  config.eval_batch_size = 1000
  return config
