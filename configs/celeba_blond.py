r"""CelebA blond-hair classifiers (ResNet-18), with the harm measured on gender x age subgroups.

The setting of Hooker et al. 2020 (Characterising Bias in Compressed Models, arXiv 2010.03058): a binary classifier
of the `Blond_Hair` attribute, pruned at increasing sparsity, and its errors broken down by the `Male` and `Young`
attributes, each alone and crossed. Every model exports those two attributes beside its predictions
(config.slice_features); the analysis writes slice_stats.csv (one row per attribute value and per gender x age cell,
with the class test on the slice's accuracy and its PIE rate) and the report's "Subgroups" section.

CelebA is a download you make: TFDS's `celeb_a` builder reads five files (img_align_celeba.zip,
list_eval_partition.txt, list_attr_celeba.txt, list_landmarks_align_celeba.txt, identity_CelebA.txt; 1.4 GB) that the
dataset's authors host on Google Drive, which often refuses automated downloads. Prepare it once where TFDS can read
it (pie never downloads unless --config.data.download=True):

  tfds build celeb_a --data_dir=/path/to/tfds

and, when the Drive download fails, fetch the five files from the CelebA page
(https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, "Align&Cropped Images", "Anno" and "Eval") yourself, put them under
those names in one folder and let TFDS build from it (it checks them against its recorded checksums):

  tfds build celeb_a --data_dir=/path/to/tfds --manual_dir=/path/to/celeba_files

Then the whole study (7 levels x 10 seeds + 10 dense replicates; hours per model on one GPU):

  python -m train.population --config=configs/celeba_blond.py --config.data.data_dir=/path/to/tfds \
      --workdir=studies/celeba_blond --num_workers=1 --analyze

One model:

  python -m train.train --config=configs/celeba_blond.py --config.data.data_dir=/path/to/tfds \
      --config.sparsity=0.9 --config.seed=3 --workdir=studies/celeba_blond/sparsity90_seed3

tests/test_slices.py runs this config on `tfds.testing.mock_data` (random faces and attributes): a tiny population
trained, exported with its slice features, analysed and reported.
"""

import ml_collections

_TRAIN_EXAMPLES = 162_770  # CelebA's official training partition


def get_config():
  config = ml_collections.ConfigDict()
  config.name = "celeba_blond"

  config.data = ml_collections.ConfigDict()
  config.data.name = "celeb_a"
  config.data.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir
  config.data.download = False
  config.data.train_split = "train"
  config.data.eval_split = "test"  # 19,962 faces
  # The label is an attribute (a bool feature): class 1 = blond. Paths with "/" index nested TFDS features.
  config.data.label_feature = "attributes/Blond_Hair"
  config.data.class_names = ("not blond", "blond")
  config.data.preprocess = "celeba"  # central 178x178 square of the aligned 218x178 faces, resized; flips
  config.data.image_size = 128
  config.data.shuffle_buffer = 20_000

  # Exported beside every model's predictions: the subgroups of the analysis (gender, age, and gender x age).
  config.slice_features = ("attributes/Male", "attributes/Young")

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet18"
  config.model.kwargs = ml_collections.ConfigDict({"width": 64, "weight_decay": 1e-4})

  config.optimizer = "sgd"
  config.momentum = 0.9
  config.nesterov = True
  config.learning_rate = 0.1
  config.lr_scale_by_batch = True  # 0.1 x 256 / 256
  config.lr_schedule = "piecewise"
  config.lr_boundaries_epochs = (6, 8)
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 1
  config.batch_size = 256
  config.num_epochs = 10
  config.steps_per_epoch = _TRAIN_EXAMPLES // 256  # 635
  config.label_smoothing = 0.0
  config.deterministic = False
  config.steps_per_execution = ml_collections.config_dict.placeholder(int)
  config.checkpoint_every_epochs = 1

  config.pruning = ml_collections.ConfigDict()
  config.pruning.scope = "all_but_classifier"  # every conv, stem and projections included
  config.pruning.begin_step = ml_collections.config_dict.placeholder(int)
  config.pruning.end_step = ml_collections.config_dict.placeholder(int)
  config.pruning.begin_fraction = 0.1
  config.pruning.end_fraction = 0.6
  config.pruning.frequency = 100

  config.sparsity = 0.0
  config.seed = 0
  config.method = "magnitude"
  # The levels of the CelebA study of Hooker et al. 2020.
  config.sparsity_levels = (0.0, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)
  config.num_seeds = 10
  # Every population trains on its own block of seeds (pie/variants.py), so the dense replicate is the null of every
  # level; "shared" starts model i of every level from dense seed i (its null is then the sham).
  config.seed_design = "independent"
  config.variants = ("magnitude",)
  config.controls = ("dense_replicate",)
  config.size_report = False

  config.top_k = 2  # two classes
  config.export_logits = False
  config.eval_batch_size = 500
  return config
