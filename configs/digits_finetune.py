r"""The quick-start grid in the paired design: every pruned model starts from the trained dense model of its seed.

The whole study end to end (dense models first, then each pruned model fine-tuned from its dense twin; analysis with
the paired tests; report), a few minutes on 2 cores:

  python -m train.population --config=configs/digits_finetune.py --workdir=studies/digits_finetune --analyze

One pruned model, once its dense twin studies/digits_finetune/sparsity0_seed3 is finished:

  python -m train.train --config=configs/digits_finetune.py --config.sparsity=0.9 --config.seed=3 \
      --workdir=studies/digits_finetune/sparsity90_seed3

As TF-MOT's own guide does, pruning starts from a trained model: the model with seed s at every level is the dense
model with seed s (its model.h5), wrapped by `prune_low_magnitude` and fine-tuned for `finetune_epochs`, the pruning
window fitted into the fine-tuning (the first half of it, then the sparse model recovers). Each pruned model has a
twin in the dense population, so the analysis adds paired per-class tests (each model against its own twin) beside
the unpaired ones, and says what a single model pair would have shown. Controls: a second dense population with
other seeds (the noise floor of PIEs) and the sham, the dense twins fine-tuned through the pruning machinery at a
negligible sparsity (what fine-tuning alone does).
"""

from pie import config_files


def get_config():
  config = config_files.sibling(__file__, "digits")
  config.name = "digits_finetune"
  # The paired design: compressed models (and the sham) start from the finished dense model of their seed.
  config.init_from_dense = True
  config.finetune_epochs = 10  # fine-tuning after the dense model's 20 epochs
  config.pruning.begin_fraction = 0.0  # fractions of the fine-tuning steps
  config.pruning.end_fraction = 0.5
  config.controls = ("dense_replicate", "sham")
  return config
