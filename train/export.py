r"""Exports the predictions of a saved model or a checkpoint of a study, in the predictions schema.

  python -m train.export --config=configs/digits.py --config.sparsity=0.9 --config.seed=3 \
      --model=studies/digits/sparsity90_seed3/model.h5 --out=elsewhere/sparsity90_seed3.tfrecord

  python -m train.export --config=configs/digits.py --config.sparsity=0.9 --config.seed=3 \
      --checkpoint_dir=studies/digits/sparsity90_seed3/checkpoints --out=partial/sparsity90_seed3.tfrecord

Use it to export with other settings (e.g. --config.export_logits=True, --config.top_k=10) or another eval split
(--config.data.eval_split=...). The config must be the one the model was trained with.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie import cli
from pie import names
from pie import training
from pie.errors import PieError

_CONFIG = config_flags.DEFINE_config_file("config", None, "The config the model was trained with.", lock_config=True)
_MODEL = flags.DEFINE_string("model", None, "A saved model (model.h5 in a model's workdir).")
_CHECKPOINT_DIR = flags.DEFINE_string("checkpoint_dir", None, "A checkpoint directory (its latest checkpoint).")
_OUT = flags.DEFINE_string("out", None, "Output prediction file, <name>.tfrecord (<name>.json is written beside).")
flags.mark_flags_as_required(["config", "out"])


@cli.main_with_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if bool(_MODEL.value) == bool(_CHECKPOINT_DIR.value):
    raise PieError("give exactly one of --model or --checkpoint_dir")
  log = lambda m: print(m, flush=True)  # noqa: E731
  out = names.resolve_path(_OUT.value, "out")
  if _MODEL.value:
    metadata = training.export_from_model_file(_CONFIG.value, _MODEL.value, out, log=log)
  else:
    metadata = training.export_from_checkpoint(_CONFIG.value, _CHECKPOINT_DIR.value, out, log=log)
  print(f"wrote {metadata['num_examples']} predictions to {out}", flush=True)


if __name__ == "__main__":
  app.run(main)
