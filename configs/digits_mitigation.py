r"""Mitigations of pruning's harm compared on the embedded digits: each a population against the same dense one.

The whole study end to end (dense models first: the distillation teachers and the class weights come from them),
analysis and report with its "Mitigations compared" section, a few minutes on 2 cores:

  python -m train.population --config=configs/digits_mitigation.py --workdir=studies/digits_mitigation --analyze

One distilled model, once its teacher studies/digits_mitigation/sparsity0_seed3 is finished:

  python -m train.train --config=configs/digits_mitigation.py --config.sparsity=0.9 --config.seed=3 \
      --config.mitigation=distill --workdir=studies/digits_mitigation/distill_sparsity90_seed3

Populations, 10 seeds each, trained from scratch as in the quick start: dense, its replicate (the noise floor), and
magnitude pruning at 90% (where the quick start measures harm beyond seed noise) four ways: as it is, distilled from
the dense model of the same seed (`distill`), with per-class loss weights from the dense population's per-class
training error (`class_reweight`), and with the per-class loss-equalizing penalty (`equalized_loss`). The report says
for each whether it helped, hurt or made no measurable difference, judged by intervals.
"""

import ml_collections

from pie import config_files


def get_config():
  config = config_files.sibling(__file__, "digits")
  config.name = "digits_mitigation"
  config.sparsity_levels = (0.0, 0.9)
  config.variants = ("magnitude", "magnitude+distill", "magnitude+class_reweight", "magnitude+equalized_loss")
  # The mitigation of one model (train.train --config.mitigation=distill); the launcher sets it per model.
  config.mitigation = ml_collections.config_dict.placeholder(str)
  config.mitigation_params = ml_collections.ConfigDict()
  # distill: (1 - weight) * CE + weight * T^2 * KL(teacher || student); the teacher is the dense twin unless named.
  config.mitigation_params.weight = 0.5
  config.mitigation_params.temperature = 4.0
  config.mitigation_params.teacher = ml_collections.config_dict.placeholder(str)
  # class_reweight: w_c proportional to (training error of the dense population on class c + smoothing) ** power,
  # mean weight 1 over the training examples; "fixed", or "per_epoch" (recomputed from the model being trained).
  config.mitigation_params.weights_update = "fixed"
  config.mitigation_params.smoothing = 0.02
  config.mitigation_params.power = 1.0
  # equalized_loss: CE + penalty * sum_c p_c (L_c - L)^2 over each batch's classes.
  config.mitigation_params.penalty = 1.0
  return config
