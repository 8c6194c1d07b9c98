"""pie: measure what model compression costs, class by class and image by image.

`import pie` gives the whole toolkit. The statistics (`modal_labels`, `find_pies`, `class_ttest`, ...) work on plain
numpy arrays and import no TensorFlow; the rest (data, models, training, export, analysis, report) loads TensorFlow
on first use.
"""

import importlib
import os

# TF-MOT only accepts Keras 2 models: TensorFlow must bind `tf.keras` to tf_keras, and it reads this variable once,
# when it is first imported. Set it here, before any pie module can import TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pie.errors import PieError  # noqa: E402
from pie.stats import class_ttest, find_pies, modal_labels, per_class_recall, top1_accuracy  # noqa: E402

__version__ = "0.1.0"

# Attributes served lazily, so that `import pie` stays fast and TensorFlow-free until one is used.
_LAZY = {
    "load_study": "pie.study",
    "Study": "pie.study",
    "read_predictions": "pie.predictions",
    "write_predictions": "pie.predictions",
    "analyze_study": "pie.analysis",
    "read_pie_images": "pie.outputs",
    "load_dataset": "pie.data",
    "build_model": "pie.models",
    "train_and_export": "pie.training",
    "normalized_recall": "pie.significance",
    "class_tests": "pie.significance",
    "models_needed": "pie.significance",
    "bootstrap_stability": "pie.significance",
    "exemplar_scores": "pie.significance",
    "simulate_populations": "pie.simulate",
    "write_report": "pie.report",
    "write_triage": "pie.report",
    "corrupt": "pie.corruptions",
    "run_robustness": "pie.robustness",
    "validate_study": "pie.validate",
    "quantize_model": "pie.quantization",
    "TFLiteClassifier": "pie.quantization",
    "compare": "pie.comparison",
    "Comparison": "pie.comparison",
    "read_prediction_table": "pie.prediction_tables",
    "load_prediction_tables": "pie.prediction_tables",
    "compare_tables": "pie.prediction_tables",
    "PredictionTables": "pie.prediction_tables",
}
_SUBMODULES = (
    "analysis",
    "builder",
    "calibration",
    "comparison",
    "data",
    "devices",
    "errors",
    "export",
    "model_dir",
    "models",
    "outputs",
    "predictions",
    "prediction_tables",
    "lm_eval_samples",
    "pruning",
    "ptq",
    "report",
    "stats",
    "study",
    "training",
    "significance",
    "simulate",
    "slices",
    "features",
    "wordnet",
    "corruptions",
    "quantization",
    "robustness",
    "saved_exports",
    "validate",
    "variants",
)


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  if name in _SUBMODULES:
    return importlib.import_module(f"pie.{name}")
  raise AttributeError(f"module 'pie' has no attribute {name!r}")


__all__ = ["PieError", "class_ttest", "find_pies", "modal_labels", "per_class_recall", "top1_accuracy"] + list(_LAZY)
