"""The report page: `write_report` loads the analysis folder, builds its sections and writes one self-contained HTML
file (report.css and report.js, package data, are inlined; figures are inline SVG, images data: URIs)."""

import importlib.resources

import pie
from pie import io_utils
from pie import outputs
from pie.report import figures
from pie.report import load
from pie.report import sections as sections_lib
from pie.report import triage
from pie.report.markup import esc


def write_report(analysis_dir, top_n=25, page_size=60, max_image_bytes=20 * 2**20):
  """Writes report.html, figures/ and triage/ into the analysis folder and returns the path of report.html.

  Args:
    analysis_dir: the analysis output folder (the files of pie/outputs.py; robustness.csv and pies.tfrecord are
      optional).
    top_n: with more than 2 * top_n classes, each class impact chart shows the top_n most hurt and the top_n most
      helped classes; the sortable table below it lists all.
    page_size: PIEs per gallery page.
    max_image_bytes: cap on the embedded gallery images (base64 text), so that the report of a large study stays
      small enough to open and to mail; see gallery.gallery_payload.
  """
  data = load.load_analysis(analysis_dir)
  figure_folder = figures.FigureFolder(data.directory / outputs.FIGURES_DIR)
  triage.write_triage_files(data)
  sections = sections_lib.build_sections(data, figure_folder, top_n, page_size, max_image_bytes)
  report_path = data.directory / outputs.REPORT_HTML
  io_utils.write_text(str(report_path), render_page(data, sections))
  figure_folder.remove_stale()
  return report_path


def render_page(data, sections):
  """The HTML document: the study's header, a navigation built from `sections`, the sections, CSS and JavaScript."""
  study = data.study
  nav = " ".join(f"<a href='#{s.id}'>{s.nav_title}</a>" for s in sections if s.nav_title is not None)
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>Pruning impact: {esc(study['name'])}</title>
<style>
{asset('report.css')}</style></head>
<body>
<header><h1>What pruning costs, class by class and image by image</h1>
<p class="meta"><b>{esc(study['name'])}</b> · dataset <b>{esc(study['dataset'])}</b> (split
{esc(study['eval_split'])}, {int(study['num_examples'])} examples, {int(study['num_classes'])} classes) · model
<b>{esc(study['model'])}</b> · config {esc(study['config_hash'])}</p>
<nav>{nav}</nav></header>
<main>
{''.join(s.html for s in sections)}
</main>
<footer>Written by pie {esc(pie.__version__)} from {', '.join(_inputs_present(data))}.</footer>
<script>
{asset('report.js')}</script>
</body></html>
"""


def asset(name):
  """A file of the package (report.css, report.js, compare.js), to inline: a page must open offline and stay one
  file."""
  return importlib.resources.files("pie.report").joinpath(name).read_text(encoding="utf-8")


def _inputs_present(data):
  names = [outputs.SUMMARY_JSON, outputs.PIES_CSV, outputs.CLASS_STATS_CSV, outputs.PIE_ACCURACY_CSV]
  optional = (outputs.SLICE_STATS_CSV, outputs.PIES_TFRECORD, outputs.ROBUSTNESS_CSV)
  return names + [n for n in optional if (data.directory / n).exists()]
