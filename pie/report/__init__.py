"""Turn an analysis folder into one self-contained HTML report, its figures and a triage export.

The analysis writes a folder whose files follow the output contract (pie/outputs.py: summary.json, pies.csv,
class_stats.csv, pie_accuracy.csv, optional pies.tfrecord, slice_stats.csv and robustness.csv). This package reads
only those files and writes, beside them:

- `report.html`: one file that opens offline and can be mailed: figures are inline SVG, PIE images are `data:` URIs,
  CSS and JavaScript (report.css, report.js in this package) are inline, nothing is fetched from the network.
- `figures/*.png` and `figures/*.svg`: every figure of the report, for papers and slides.
- `triage/pies.csv`, `triage/pies.json` and `triage/images/*.png`: one record per PIE per level for human review in a
  labelling tool (the paper found that over half of the PIEs have a wrong or ambiguous label).

Every file is written under a temporary name and renamed into place, so a reader never sees a half-written file.

Modules: `load` (reading and validating the folder), `figures` (what each chart plots, as plain tables, and the
figures drawing them), `triage` (the triage export), `gallery` (the PIE gallery's data), `findings` (the key findings
in plain language), `sections` (the page's sections), `page` (the document and `write_report`). The names below are
their public API, importable from `pie.report` as before the package was split. `compare_page` renders compare.html,
the page of `pie.compare` (one model against its compressed versions), with the same helpers and style.
"""

from pie.outputs import CLASS_STATS_CSV
from pie.outputs import FIGURES_DIR
from pie.outputs import LEVEL_KEYS
from pie.outputs import LEVEL_OPTIONAL
from pie.outputs import PIE_ACCURACY_CSV
from pie.outputs import PIES_CSV
from pie.outputs import PIES_TFRECORD
from pie.outputs import POPULATIONS
from pie.outputs import REPORT_HTML
from pie.outputs import ROBUSTNESS_CSV
from pie.outputs import STUDY_KEYS
from pie.outputs import SUBSETS
from pie.outputs import SUMMARY_JSON
from pie.outputs import TRIAGE_DIR
from pie.outputs import read_pie_records
from pie.outputs import CLASS_STATS as _CLASS_STATS
from pie.outputs import PIE_ACCURACY as _PIE_ACCURACY
from pie.outputs import PIES as _PIES
from pie.outputs import ROBUSTNESS as _ROBUSTNESS
from pie.report import figures
from pie.report import findings
from pie.report import gallery
from pie.report import load
from pie.report import page
from pie.report import sections
from pie.report import triage
from pie.report.figures import COLOR_DENSE
from pie.report.figures import COLOR_HELPED
from pie.report.figures import COLOR_HURT
from pie.report.figures import COLOR_NEUTRAL
from pie.report.figures import COLOR_PRUNED
from pie.report.figures import SUBSET_LABELS
from pie.report.figures import accuracy_series
from pie.report.figures import class_impact_series
from pie.report.figures import floor_lines
from pie.report.figures import inline_svg
from pie.report.figures import methods_series
from pie.report.figures import pie_accuracy_series
from pie.report.figures import pies_series
from pie.report.figures import plot_accuracy
from pie.report.figures import plot_class_impact
from pie.report.figures import plot_methods
from pie.report.figures import plot_pie_accuracy
from pie.report.figures import plot_pies
from pie.report.figures import plot_robustness_drop
from pie.report.figures import plot_robustness_severity
from pie.report.figures import plot_significance
from pie.report.figures import robustness_drop_series
from pie.report.figures import robustness_severity_series
from pie.report.figures import significance_series
from pie.report.findings import floor_findings
from pie.report.findings import key_findings
from pie.report.gallery import GALLERY_TILE_PX
from pie.report.gallery import gallery_payload
from pie.report.load import CLASS_STATS_OPTIONAL
from pie.report.load import METHOD_LEVEL_KEYS
from pie.report.load import PIES_OPTIONAL
from pie.report.load import PNG_SIGNATURE
from pie.report.load import SPARSITY_TOLERANCE
from pie.report.load import AnalysisData
from pie.report.load import PieImage
from pie.report.load import decode_png_size
from pie.report.load import level_key
from pie.report.load import level_label
from pie.report.load import load_analysis
from pie.report.load import _canonical_sparsity  # noqa: F401  (tests map pies.tfrecord's float32 levels with it)
from pie.report.markup import json_for_script as _json_for_script  # noqa: F401
from pie.report.page import write_report
from pie.report.triage import TRIAGE_FIELDS
from pie.report.triage import triage_image_name
from pie.report.triage import triage_records
from pie.report.triage import write_triage

# The required columns of the tables the report reads, under their names from before the output contract.
PIES_COLUMNS = _PIES.required_names
CLASS_STATS_COLUMNS = _CLASS_STATS.required_names
PIE_ACCURACY_COLUMNS = _PIE_ACCURACY.required_names
ROBUSTNESS_COLUMNS = _ROBUSTNESS.required_names

__all__ = [
    "AnalysisData",
    "CLASS_STATS_COLUMNS",
    "CLASS_STATS_CSV",
    "CLASS_STATS_OPTIONAL",
    "COLOR_DENSE",
    "COLOR_HELPED",
    "COLOR_HURT",
    "COLOR_NEUTRAL",
    "COLOR_PRUNED",
    "FIGURES_DIR",
    "GALLERY_TILE_PX",
    "LEVEL_KEYS",
    "LEVEL_OPTIONAL",
    "METHOD_LEVEL_KEYS",
    "PIES_COLUMNS",
    "PIES_CSV",
    "PIES_OPTIONAL",
    "PIES_TFRECORD",
    "PIE_ACCURACY_COLUMNS",
    "PIE_ACCURACY_CSV",
    "PNG_SIGNATURE",
    "POPULATIONS",
    "PieImage",
    "REPORT_HTML",
    "ROBUSTNESS_COLUMNS",
    "ROBUSTNESS_CSV",
    "SPARSITY_TOLERANCE",
    "STUDY_KEYS",
    "SUBSETS",
    "SUBSET_LABELS",
    "SUMMARY_JSON",
    "TRIAGE_DIR",
    "TRIAGE_FIELDS",
    "accuracy_series",
    "class_impact_series",
    "decode_png_size",
    "figures",
    "findings",
    "floor_findings",
    "floor_lines",
    "gallery",
    "gallery_payload",
    "inline_svg",
    "key_findings",
    "level_key",
    "level_label",
    "load",
    "load_analysis",
    "methods_series",
    "page",
    "pie_accuracy_series",
    "pies_series",
    "plot_accuracy",
    "plot_class_impact",
    "plot_methods",
    "plot_pie_accuracy",
    "plot_pies",
    "plot_robustness_drop",
    "plot_robustness_severity",
    "plot_significance",
    "read_pie_records",
    "robustness_drop_series",
    "robustness_severity_series",
    "sections",
    "significance_series",
    "triage",
    "triage_image_name",
    "triage_records",
    "write_report",
    "write_triage",
]
