r"""Compression methods compared on the embedded digits: magnitude pruning, 2:4 sparsity and three PTQ modes.

The whole study end to end (train, derive the post-training-quantized models, analyse, report), a few minutes on
2 cores:

  python -m train.population --config=configs/digits_methods.py --workdir=studies/digits_methods --analyze

Populations, 10 seeds each: dense; magnitude pruning at 50% and 90%; 2:4 structured sparsity (50% by construction,
measured lower because the first conv has one input channel and stays dense); and float16, dynamic-range int8 and
full int8 post-training quantization of each dense model (calibrated on the first 100 training images). The report's
"Methods compared" section puts their top-1, significant classes and compression-identified exemplars against the
compressed size each reaches. Add "random" (a random-pruning control at the magnitude levels), "qat" or "cluster"
to `variants` to compare those too (see docs/compression_methods.md).
"""

from pie import config_files


def get_config():
  config = config_files.sibling(__file__, "digits")
  config.name = "digits_methods"
  config.sparsity_levels = (0.0, 0.5, 0.9)
  config.num_seeds = 10
  # The method of one model (train.train --config.method=...); the launcher sets it per model from `variants`.
  config.method = "magnitude"
  config.variants = ("magnitude", "2:4", "ptq_float16", "ptq_dynamic_int8", "ptq_full_int8")
  config.size_report = True  # the methods are compared at their measured compressed size
  config.clustering = {"num_clusters": 16}  # used when "cluster" is among the variants
  return config
