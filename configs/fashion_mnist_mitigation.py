r"""The mitigations of configs/digits_mitigation.py on Fashion-MNIST: each a population against the same dense one.

The whole study end to end (dense models first: the distillation teachers and the class weights come from them),
analysis and report with its "Mitigations compared" section (60 models; measured: 23 min of training with 2
workers on a 2-core CPU machine, 10 s of analysis):

  python -m train.population --config=configs/fashion_mnist_mitigation.py \
      --workdir=studies/fashion_mnist_mitigation --analyze

The models, data and training are configs/fashion_mnist.py's; the levels (dense and 90%), the variants (magnitude
as it is, `+distill`, `+class_reweight`, `+equalized_loss`) and the mitigation parameters are
configs/digits_mitigation.py's, so the two studies differ only in the dataset and its model.
"""

from pie import config_files


def get_config():
  config = config_files.sibling(__file__, "fashion_mnist")
  mitigation_study = config_files.sibling(__file__, "digits_mitigation")
  config.name = "fashion_mnist_mitigation"
  for field in ("sparsity_levels", "variants", "mitigation", "mitigation_params"):
    config[field] = mitigation_study[field]
  return config
