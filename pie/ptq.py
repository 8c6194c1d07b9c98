"""Derived models: post-training quantization of each finished dense model, exported like a trained one.

The "ptq_*" methods of the registry (`pie.variants.PostTrainingQuantization`) train nothing: after the dense model of
a seed is finished, `derive_ptq` loads its `model.h5`, converts it with the entry's mode (`Variant.quantize`, i.e.
`pie.quantization.quantize_model`), saves the flatbuffer as `model.tflite` and exports the predictions of the
quantized model (`pie.export.predict_tflite`) in the usual schema. Full int8 calibrates on `representative_images`:
the first `variants.PTQ_REPRESENTATIVE_EXAMPLES` training examples, preprocessed as at evaluation. A finished
derivation is left as it is, so the launcher's reruns reuse it.
"""

import copy
import os
import time

from pie import data as data_lib
from pie import export as export_lib
from pie import io_utils
from pie import model_dir
from pie import quantization
from pie import variants
from pie.errors import PieError


def representative_images(data_config, num_examples=variants.PTQ_REPRESENTATIVE_EXAMPLES):
  """The first `num_examples` training examples, preprocessed as at evaluation (no augmentation)."""
  cfg = copy.deepcopy(data_config)
  with cfg.unlocked():
    cfg.eval_split = cfg.train_split
  for batch in data_lib.load_dataset(cfg).eval_batches(num_examples):
    return batch["image"].numpy()
  raise PieError(f"training split {data_config.train_split!r} of {data_config.name!r} is empty")


def derive_ptq(config, source_dir, workdir, representative=None, dataset=None, log=print, job=None):
  """Quantizes the finished dense model in `source_dir` and exports the predictions of the quantized model.

  Args:
    config: the derived model's config (config.method a "ptq_*" variant, config.sparsity 0, its seed).
    source_dir: the dense model's folder (its model.h5 and predictions must exist).
    workdir: the derived model's folder: model.tflite, metrics.json and `<name>.tfrecord/.json` are written there.
    representative: float images for full int8 calibration (default: `representative_images(config.data)`).
    job: the model's `variants.Job` when the launcher has it (default: `variants.config_job(config)`).
  Returns the metrics dict. A finished derived model is left as it is.
  """
  job = job or variants.config_job(config)
  variant = variants.get_variant(job.method)
  if not variant.derived:
    raise PieError(f"derive_ptq needs a ptq_* method (config.method), got {job.method!r}")
  paths = model_dir.model_paths(workdir, job.name)
  if model_dir.is_finished(workdir, job.name):
    log(f"{job.name}: already finished in {workdir}; nothing to do")
    return io_utils.read_json(paths["metrics"])
  if not model_dir.is_finished(source_dir, job.source):
    raise PieError(f"{job.name}: its dense model in {source_dir} is not finished")
  start = time.time()
  io_utils.makedirs(workdir)
  model = model_dir.load_model(os.path.join(source_dir, "model.h5"))
  if variant.needs_representative and representative is None:
    representative = representative_images(config.data)
  tflite_bytes = variant.quantize(model, representative)
  io_utils.write_bytes(os.path.join(workdir, "model.tflite"), tflite_bytes)
  dataset = dataset or data_lib.load_dataset(config.data)
  info = dataset.info
  arrays = export_lib.predict_tflite(
      tflite_bytes,
      dataset,
      **export_lib.export_settings(config),
      log=lambda m: log(f"{job.name}: {m}"),
  )
  scope = config.pruning.get("scope", "all_but_classifier")
  sparsity_report = variants.measure_sparsity(model, variants.layers_in_scope(model, scope))
  size = quantization.model_size_report(tflite_bytes)
  extra = {
      "method": job.method,
      "source_model": job.source,
      "ptq_mode": variant.ptq_mode,
      "representative_examples": (int(len(representative)) if variant.needs_representative else 0),
      **model_dir.compression_fields(size),
  }
  metadata = model_dir.prediction_metadata(config, info, sparsity_report, extra, job=job)
  metrics = {
      "name": job.name,
      "method": job.method,
      "source_model": job.source,
      **model_dir.eval_metrics(arrays, info.num_classes),
      "target_sparsity": 0.0,
      "measured_sparsity": sparsity_report["overall"],
      "bits_per_weight": extra["bits_per_weight"],
      "compressed_bytes": extra["compressed_bytes"],
      "wall_seconds": round(time.time() - start, 2),
      "config_hash": metadata["config_hash"],
      "seed": int(job.seed),
  }
  model_dir.write_outputs(paths, arrays, metadata, metrics, dataset.eval_slices(config.get("slice_features")))
  log(
      f"{job.name}: top-1 {metrics['top1']:.4f}, {extra['bits_per_weight']:.2f} bits/weight, "
      f"{extra['compressed_bytes']} bytes gzip, {metrics['wall_seconds']:.1f}s"
  )
  return metrics
