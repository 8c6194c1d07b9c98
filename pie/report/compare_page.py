"""compare.html: one self-contained page of a comparison of one model with its compressed versions (pie.comparison).

Like report.html it opens offline and can be mailed: the style (report.css) and the scripts (report.js for the sortable
tables, compare.js for the class view and the gallery) are inline, the charts are inline SVG, the images data: URIs,
and a Content-Security-Policy forbids fetching anything. Sections: how to read it, the summary with the gate's
verdict, the classes (excess change per class with its interval, one chart and one sortable table per candidate,
chosen with a select), and the gallery of the examples whose top-1 changed (image, true label, both predictions),
filtered by candidate, true class and direction, and paged.
"""

import io

import numpy as np

import pie
from pie.report import figures
from pie.report import gallery
from pie.report import load
from pie.report import page
from pie.report.markup import cell
from pie.report.markup import esc
from pie.report.markup import json_for_script
from pie.report.markup import pct
from pie.report.markup import pp

# Directions of a changed top-1, as the gallery filters them (derived from compare_examples.csv's two correctness
# columns), with their labels.
LOST, GAINED, OTHER = "correct_to_wrong", "wrong_to_correct", "wrong_to_wrong"
DIRECTION_LABELS = {LOST: "correct → wrong", GAINED: "wrong → correct", OTHER: "wrong → other wrong"}
# The gallery's names for the label and the answers of an example scored by correctness alone (no class).
UNCLASSED_NAMES = ("(scored by correctness)", "right", "wrong")
_CLASS_COLUMNS = (
    ("class_id", "Id", None),
    ("class_name", "Class", None),
    ("num_examples", "Examples", None),
    ("reference_recall", "Reference recall", "pct"),
    ("candidate_recall", "Candidate recall", "pct"),
    ("recall_change", "Change (pts)", "pp"),
    ("excess_change", "Excess (pts)", "pp"),
    ("ci_low", "CI low (pts)", "pp"),
    ("ci_high", "CI high (pts)", "pp"),
    ("p_value", "p (McNemar)", "p"),
    ("q_value", "q (FDR)", "p"),
    ("significant_fdr", "Significant (FDR)", "bool"),
)


def render(result, images=None, page_size=60, max_image_bytes=20 * 2**20, top_n=25):
  """The page's HTML for a `pie.comparison.Comparison` (its classes, examples, summary and candidates).

  images: {example_id: uint8 [H, W, C]} of the changed examples (None: the gallery shows labels only).
  page_size: gallery cards per page. max_image_bytes: budget of the embedded images (see gallery.embed_images).
  top_n: with more than 2 * top_n classes, a chart shows the top_n most harmed and the top_n most helped.
  """
  summary = result.summary
  dataset, reference = summary["dataset"], summary["reference"]
  sections = [
      _howto(summary, "images" if result.example_table is None else "examples"),
      _summary_section(summary),
      _classes_section(result, top_n) if dataset["num_classes"] else None,
      _groups_section(result, top_n) if result.groups is not None and len(result.groups) else None,
      _gallery_section(result, images, page_size, max_image_bytes),
  ]
  sections = [section for section in sections if section is not None]
  nav = " ".join(f"<a href='#{sid}'>{title}</a>" for sid, title, _ in sections if title)
  title = f"{reference['name']} against {', '.join(c['name'] for c in result.candidates)}"
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>Compression compared: {esc(title)}</title>
<style>
{page.asset('report.css')}</style></head>
<body>
<header><h1>What compression changes, class by class and image by image</h1>
<p class="meta">reference <b>{esc(reference['name'])}</b> ({esc(reference['kind'])}, {esc(reference['source'])}) ·
dataset <b>{esc(dataset['name'])}</b> (split {esc(dataset['eval_split'])}, {int(dataset['num_examples'])} examples,
{int(dataset['num_classes'])} classes)</p>
<nav>{nav}</nav></header>
<main>
{''.join(html for _, _, html in sections)}
</main>
<footer>Written by pie {esc(pie.__version__)}: compare_classes.csv, compare_examples.csv and compare_summary.json hold
every number of this page.</footer>
<script>
{page.asset('report.js')}</script>
<script>
{page.asset('compare.js')}</script>
</body></html>
"""


def _howto(summary, items="images"):
  settings = summary["settings"]
  level = pct(settings["confidence_level"], 0)
  return (
      "howto",
      None,
      f"""<section id="howto" class="howto"><h2>How to read this</h2>
<p>The reference model and each candidate (a compressed version of it) predicted the same
{int(summary['dataset']['num_examples'])} evaluation {items}, so every {items[:-1]} says whether the compression
changed the answer: <b>correct → wrong</b> (lost), <b>wrong → correct</b> (gained), or one wrong answer for another.</p>
<ul>
<li><b>Excess change</b> of a class: the change in its recall minus the change in overall top-1, i.e. how much more
(negative) or less the class lost than the model as a whole. Its {level} interval comes from a Bayesian bootstrap of
the examples; a class whose interval lies left of 0 loses more than the model does.</li>
<li><b>Significant (FDR)</b>: the exact McNemar test says the class's own recall changed (lost against gained
examples), after Benjamini-Hochberg correction over the classes at q ≤ {settings['alpha']:g}.</li>
<li><b>Gate</b>: a candidate fails when the upper end of some class's harm (minus the interval's low end) exceeds
max_excess_drop, or the upper end of its top-1 drop exceeds max_top1_drop.</li>
{_groups_howto(summary)}</ul></section>
""",
  )


def _groups_howto(summary):
  groups = summary["settings"].get("group_by") or []
  if not groups:
    return ""
  return (
      f"<li><b>Groups</b> ({esc(', '.join(groups))}): each value of a group column is compared like a class, on the "
      "share of its examples each model gets right (a metric's verdict where the tables give one); the gate's "
      "max_excess_drop applies to them too. Examples without a class (scored by correctness alone) count in top-1 "
      "and in the groups, in no class.</li>\n"
  )


def _size_text(size, ratio=None):
  """gzip size, bits per weight and the ratio to the reference's size, as one cell's text."""
  if not size or size.get("gzip_bytes") is None:
    return "–"
  bits = size.get("bits_per_weight")
  parts = [f"{size['gzip_bytes'] / 1024:.1f} KB", "–" if bits is None else f"{bits:.2f} bits/weight"]
  if ratio is not None:
    parts.append(f"{ratio:.2f}× the reference")
  return " · ".join(parts)


def _harm_text(harm):
  if harm is None:
    return "–"
  return f"{esc(harm['class_name'])}: {pp(harm['excess_change'])} pts " f"[{pp(harm['ci_low'])}, {pp(harm['ci_high'])}]"


def _group_cells(candidate):
  significant = ", ".join(f"{column} = {value}" for column, value in candidate["significant_groups_fdr"])
  harm = candidate["largest_group_harm"]
  harm_text = "–"
  if harm is not None:
    harm_text = (
        f"{esc(harm['group_column'])} = {esc(harm['group_value'])}: {pp(harm['excess_change'])} pts "
        f"[{pp(harm['ci_low'])}, {pp(harm['ci_high'])}]"
    )
  count = candidate["num_significant_groups_fdr"]
  return f"<td>{count}{': ' + esc(significant) if significant else ''}</td><td>{harm_text}</td>"


def _gate_text(gate):
  if gate["max_excess_drop"] is None and gate["max_top1_drop"] is None:
    return "<td data-v=''>no gate</td>"
  if gate["passed"]:
    return "<td data-v='1' class='gate-pass'>passed</td>"
  return f"<td data-v='0' class='gate-fail'>failed: {esc('; '.join(gate['failures']))}</td>"


def _summary_section(summary):
  reference = summary["reference"]
  head = (
      "Model",
      "Kind",
      "Size (gzip)",
      "Top-1",
      "Top-1 change (pts) [interval]",
      "Agreement",
      "Changed: lost / gained / other",
      "Significant classes (FDR)",
      "Largest harm: excess (pts) [interval]",
      "Intensification ratio",
      "Gate",
  )
  with_groups = bool(summary["settings"].get("group_by"))
  if with_groups:
    head = head[:-1] + ("Significant groups (FDR)", "Largest group harm: excess (pts) [interval]", "Gate")
  rows = [
      f"<tr><td><b>{esc(reference['name'])}</b> (reference)</td><td>{esc(reference['kind'])}</td>"
      f"<td>{_size_text(reference['size'])}</td><td>{pct(reference['top1'], 2)}</td>"
      + "<td>–</td>" * (len(head) - 4)
      + "</tr>"
  ]
  for c in summary["candidates"]:
    significant = ", ".join(c["significant_classes_fdr"])
    intensification = "–" if c["intensification_ratio"] is None else f"{c['intensification_ratio']:.2f}"
    rows.append(
        f"<tr data-candidate='{esc(c['name'])}'><td><b>{esc(c['name'])}</b></td><td>{esc(c['kind'])}</td>"
        f"<td>{_size_text(c['size'], c['size_ratio'])}</td><td>{pct(c['candidate_top1'], 2)}</td>"
        f"<td>{pp(c['top1_change'])} [{pp(c['top1_change_ci_low'])}, {pp(c['top1_change_ci_high'])}]</td>"
        f"<td>{pct(c['agreement'], 1)}</td><td>{c['num_changed']}: {c['flips_correct_to_wrong']} / "
        f"{c['flips_wrong_to_correct']} / {c['flips_wrong_to_wrong']}</td>"
        f"<td>{c['num_significant_classes_fdr']}{': ' + esc(significant) if significant else ''}</td>"
        f"<td>{_harm_text(c['largest_harm'])}</td><td>{intensification}</td>"
        + (_group_cells(c) if with_groups else "")
        + f"{_gate_text(c['gate'])}</tr>"
    )
  header = "".join(f"<th scope='col'>{esc(h)}</th>" for h in head)
  return (
      "summary",
      "Summary",
      f"<section id='summary'><h2>Summary</h2>{_verdict(summary)}<div class='populations'>"
      f"<table class='data wrap' id='summary-table'><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody>"
      "</table></div><p class='note'>Size: the model's flatbuffer (TFLite; a Keras model converted without "
      "optimization) compressed with gzip at level 9, and the mean storage bits per weight, as measured by "
      "pie.quantization (read from the prediction file's metadata when that is what was compared). Changed: "
      "examples whose top-1 differs, correct → wrong (lost), wrong → correct (gained), one wrong answer for another. "
      "Intensification ratio (Good et al., NeurIPS 2022): among the classes whose reference recall differs from "
      "top-1, the share that compression moves further from it (about 0.5 when it moves classes at random).</p>"
      "</section>",
  )


def _verdict(summary):
  settings = summary["settings"]
  bounds = [f"{k} = {settings[k]:g}" for k in ("max_excess_drop", "max_top1_drop") if settings[k] is not None]
  if not bounds:
    return "<p class='note' id='verdict'>No gate was set (max_excess_drop, max_top1_drop).</p>"
  if summary["passed"]:
    return f"<p class='verdict-pass' id='verdict'>Gate passed ({esc(', '.join(bounds))}) by every candidate.</p>"
  failed = [c["name"] for c in summary["candidates"] if not c["gate"]["passed"]]
  return (
      f"<p class='warn' id='verdict'>Gate failed ({esc(', '.join(bounds))}) by {esc(', '.join(failed))}: see the "
      "Gate column.</p>"
  )


def excess_series(classes, candidate, top_n=25):
  """The classes a candidate's chart shows, most harmed first: all of them, or the top_n most harmed and the top_n
  most helped when there are more than 2 * top_n (classes without examples are left out)."""
  rows = classes.loc[(classes["candidate"] == candidate) & (classes["num_examples"] > 0)]
  rows = rows.sort_values(["excess_change", "class_id"], kind="stable")
  if len(rows) > 2 * top_n:
    rows = rows.iloc[np.r_[0:top_n, len(rows) - top_n : len(rows)]]
  return rows.reset_index(drop=True)


def plot_excess(series, title, max_excess_drop=None, num_total=None, unit="class"):
  """Per class (or group value, `unit`="group"; its rows named in class_name): excess change (points) with its
  interval; significant ones (FDR) coloured by the sign of their recall (accuracy) change; the gate's bound on harm as
  a dashed line."""
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel

  rate = "recall" if unit == "class" else "accuracy"
  n = len(series)
  figure = figures.new_figure(7.0, 1.4 + 0.26 * max(n, 1))
  ax = figure.add_subplot()
  y = np.arange(n)
  excess = 100 * series["excess_change"].to_numpy(dtype=float)
  low = 100 * series["ci_low"].to_numpy(dtype=float)
  high = 100 * series["ci_high"].to_numpy(dtype=float)
  significant = series["significant_fdr"].to_numpy(dtype=bool)
  change = series["recall_change"].to_numpy(dtype=float)
  colors = np.where(~significant, "#555555", np.where(change < 0, figures.COLOR_HURT, figures.COLOR_HELPED))
  ax.hlines(y, low, high, colors=np.where(significant, colors, figures.COLOR_NEUTRAL), linewidth=3)
  ax.scatter(excess, y, color=colors, marker="D", s=24, zorder=3)
  ax.axvline(0, color="#555555", linewidth=0.8)
  handles = [
      Line2D([], [], marker="D", linestyle="none", color=figures.COLOR_HURT, label=f"significant (FDR), {rate} fell"),
      Line2D([], [], marker="D", linestyle="none", color=figures.COLOR_HELPED, label=f"significant (FDR), {rate} rose"),
      Line2D([], [], marker="D", linestyle="none", color="#555555", label="not significant"),
      Line2D([], [], color=figures.COLOR_NEUTRAL, linewidth=3, label="interval of the excess change"),
  ]
  if max_excess_drop is not None:
    ax.axvline(-100 * max_excess_drop, color=figures.COLOR_HURT, linewidth=1.0, linestyle="--")
    handles.append(
        Line2D([], [], color=figures.COLOR_HURT, linestyle="--", label=f"gate: harm bound {100 * max_excess_drop:g}")
    )
  ax.set_yticks(y)
  ax.set_yticklabels([figures.plain_text(name) for name in series["class_name"]], fontsize=8)
  for label, sig in zip(ax.get_yticklabels(), significant):
    if sig:
      label.set_fontweight("bold")
  if num_total is not None and num_total > n:
    ax.annotate(
        f"{num_total - n} less affected {unit}s not shown",
        (1.0, n / 2 - 0.5),
        xycoords=("axes fraction", "data"),
        ha="right",
        fontsize=8,
        color="#555555",
    )
  ax.set_ylim(n - 0.5, -0.5)
  ax.set_xlabel(f"excess change: {unit} {rate} change minus top-1 change (percentage points)")
  ax.set_title(title, fontsize=11)
  ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
  ax.set_axisbelow(True)
  ax.spines["top"].set_visible(False)
  ax.spines["right"].set_visible(False)
  figure.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, fontsize=8)
  return figure


def _classes_section(result, top_n):
  settings = result.summary["settings"]
  options, blocks = [], []
  for index, candidate in enumerate(result.candidates):
    name = candidate["name"]
    rows = result.classes.loc[result.classes["candidate"] == name]
    series = excess_series(result.classes, name, top_n)
    title = (
        f"{figures.plain_text(name)}: top-1 {100 * candidate['reference_top1']:.1f}% → "
        f"{100 * candidate['candidate_top1']:.1f}% ({100 * candidate['top1_change']:+.1f} points)"
    )
    figure = plot_excess(series, title, settings["max_excess_drop"], num_total=int((rows["num_examples"] > 0).sum()))
    svg = figures.inline_svg(figures.encode(figure, "svg").decode("utf-8"), prefix=f"excess-{index}")
    options.append(f"<option value='{index}'>{esc(name)}</option>")
    blocks.append(
        f"<div class='cand-block' data-candidate='{index}'{'' if index == 0 else ' hidden'}><figure>{svg}</figure>"
        f"<details class='table' open><summary>All {len(rows)} classes of {esc(name)} (sortable table)</summary>"
        f"{_class_table(rows, f'classes-{index}')}</details></div>"
    )
  return (
      "classes",
      "Classes",
      "<section id='classes'><h2>Which classes the compression hurts</h2><p class='note'>Diamonds: the excess change "
      "of each class (its recall change minus the change in top-1), most harmed on top; bars: its interval. Coloured "
      "and bold: the class's own recall changed significantly (McNemar, FDR).</p>"
      "<div class='controls'><label>Candidate <select id='cls-candidate'>"
      f"{''.join(options)}</select></label></div>{''.join(blocks)}</section>",
  )


_GROUP_COLUMNS = (
    ("group_column", "Column", None),
    ("group_value", "Value", None),
    ("num_examples", "Examples", None),
    ("reference_accuracy", "Reference accuracy", "pct"),
    ("candidate_accuracy", "Candidate accuracy", "pct"),
    ("accuracy_change", "Change (pts)", "pp"),
    ("excess_change", "Excess (pts)", "pp"),
    ("ci_low", "CI low (pts)", "pp"),
    ("ci_high", "CI high (pts)", "pp"),
    ("flips_correct_to_wrong", "Lost", None),
    ("flips_wrong_to_correct", "Gained", None),
    ("p_value", "p (McNemar)", "p"),
    ("q_value", "q (FDR)", "p"),
    ("significant_fdr", "Significant (FDR)", "bool"),
)


def _groups_section(result, top_n):
  """compare_groups.csv per candidate: the chart of the classes, with group values, and a sortable table."""
  settings = result.summary["settings"]
  groups = result.groups.assign(
      class_name=[f"{c} = {v}" for c, v in zip(result.groups["group_column"], result.groups["group_value"])],
      recall_change=result.groups["accuracy_change"],
      class_id=np.arange(len(result.groups)),
  )
  options, blocks = [], []
  for index, candidate in enumerate(result.candidates):
    name = candidate["name"]
    rows = groups.loc[groups["candidate"] == name]
    series = excess_series(groups, name, top_n)
    figure = plot_excess(
        series,
        f"{figures.plain_text(name)}: groups ({100 * candidate['top1_change']:+.1f} points overall)",
        settings["max_excess_drop"],
        num_total=int((rows["num_examples"] > 0).sum()),
        unit="group",
    )
    svg = figures.inline_svg(figures.encode(figure, "svg").decode("utf-8"), prefix=f"groups-{index}")
    options.append(f"<option value='{index}'>{esc(name)}</option>")
    blocks.append(
        f"<div class='cand-block' data-candidate='{index}'{'' if index == 0 else ' hidden'}><figure>{svg}</figure>"
        f"<details class='table' open><summary>All {len(rows)} group values of {esc(name)} (sortable table)"
        f"</summary>{_rows_table(rows, f'groups-{index}', _GROUP_COLUMNS, 'group values')}</details></div>"
    )
  return (
      "groups",
      "Groups",
      "<section id='groups'><h2>Which groups the compression hurts</h2><p class='note'>Each value of a group column "
      f"({esc(', '.join(settings['group_by']))}) compared like a class: diamonds, its excess change (its accuracy "
      "change minus the change in top-1), most harmed on top; bars, its interval. Coloured and bold: its accuracy "
      "changed significantly (McNemar, FDR over the values of its column).</p>"
      "<div class='controls'><label>Candidate <select id='grp-candidate'>"
      f"{''.join(options)}</select></label></div>{''.join(blocks)}</section>",
  )


def _class_table(rows, table_id):
  return _rows_table(rows, table_id, _CLASS_COLUMNS, "classes")


def _rows_table(rows, table_id, columns, what):
  body = []
  change = "recall_change" if "recall_change" in rows else "accuracy_change"
  order = ["excess_change", "class_id"] if "class_id" in rows else ["excess_change", "group_column", "group_value"]
  for row in rows.sort_values(order, kind="stable").itertuples(index=False):
    values = row._asdict()
    cls = ""
    if values["significant_fdr"]:
      cls = " class='hurt'" if values[change] < 0 else " class='helped'"
    body.append(f"<tr{cls}>" + "".join(cell(values[c], fmt) for c, _, fmt in columns) + "</tr>")
  head = "".join(f"<th scope='col' tabindex='0'>{esc(title)}</th>" for _, title, _ in columns)
  return (
      f"<input type='search' class='table-filter' data-table='{table_id}' placeholder='filter {what}…' "
      f"aria-label='filter {what}'><div class='scroll'><table class='data sortable' id='{table_id}'><thead><tr>"
      f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
  )


def direction(reference_correct, candidate_correct):
  """The gallery's direction of a changed example: LOST, GAINED or OTHER."""
  if reference_correct:
    return LOST
  return GAINED if candidate_correct else OTHER


def gallery_payload(result, images=None, page_size=60, max_image_bytes=20 * 2**20):
  """The gallery's data as compare.js reads it: one entry per changed example per candidate (short keys), and the
  images once per example, embedded within the budget (gallery.embed_images: the first example of every class
  before the second of any)."""
  names = [c["name"] for c in result.candidates]
  index = {name: i for i, name in enumerate(names)}
  examples = result.examples.sort_values(["candidate", "label", "example_id"], kind="stable")
  examples = examples.iloc[np.argsort([index[c] for c in examples["candidate"]], kind="stable")]
  class_names = list(result.summary["dataset"]["class_names"])
  # Examples scored by correctness alone (prediction tables) have no class: label and answers -1, shown under one
  # more name; their right and wrong come from the correctness columns, as every example's do.
  unclassed = len(class_names)

  def answer(prediction, right):
    return int(prediction) if prediction >= 0 else unclassed + (1 if right else 2)

  flips = []
  for row in examples.itertuples(index=False):
    flips.append(
        {
            "c": index[row.candidate],
            "id": int(row.example_id),
            "y": int(row.label) if row.label >= 0 else unclassed,
            "r": answer(row.reference_pred, row.reference_correct),
            "rp": None if np.isnan(row.reference_prob) else round(float(row.reference_prob), 4),
            "k": answer(row.candidate_pred, row.candidate_correct),
            "kp": None if np.isnan(row.candidate_prob) else round(float(row.candidate_prob), 4),
            "rc": bool(row.reference_correct),
            "kc": bool(row.candidate_correct),
            "d": direction(bool(row.reference_correct), bool(row.candidate_correct)),
        }
    )
  _add_source_ids(flips, result.example_table)
  pictures, omitted = _pictures(examples, images, max_image_bytes)
  return {
      "page_size": int(page_size),
      "tile_px": gallery.GALLERY_TILE_PX,
      "has_images": images is not None,
      "omitted_images": omitted,
      "class_names": class_names + (list(UNCLASSED_NAMES) if (examples["label"] < 0).any() else []),
      "candidates": names,
      "directions": [[key, label] for key, label in DIRECTION_LABELS.items()],
      "flips": flips,
      "images": pictures,
  }


def _add_source_ids(flips, example_table):
  """Each card's heading for examples from prediction tables: the tables' own id (and task), not the position."""
  if example_table is None:
    return
  ids = example_table["source_id"].tolist()
  tasks = example_table["task"].tolist()
  for flip in flips:
    task, source_id = tasks[flip["id"]], ids[flip["id"]]
    flip["h"] = f"{task} #{source_id}" if task else f"#{source_id}"


def _pictures(examples, images, max_image_bytes):
  """{example_id: {img, w, h}} of the changed examples' images within the budget, and how many were left out."""
  if not images:
    return {}, 0
  first = examples.drop_duplicates("example_id")
  first = first.loc[first["example_id"].isin(list(images))]
  ids = first["example_id"].astype(int).tolist()
  rank = first.groupby("label", sort=False).cumcount().to_numpy()
  entries = [{} for _ in ids]
  found = {i: _png_image(images[example_id]) for i, example_id in enumerate(ids)}
  omitted = gallery.embed_images(entries, found, rank, max_image_bytes)
  pictures = {str(example_id): entry for example_id, entry in zip(ids, entries) if entry}
  return pictures, omitted


def _png_image(array):
  """A uint8 [H, W, C] image as the report's PieImage (PNG bytes and size)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel

  array = np.asarray(array, np.uint8)
  channels = array.shape[2] if array.ndim == 3 else 1
  pixels = array[:, :, 0] if channels == 1 and array.ndim == 3 else array
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
  return load.PieImage(png=buffer.getvalue(), width=array.shape[1], height=array.shape[0], channels=channels)


def _gallery_section(result, images, page_size, max_image_bytes):
  payload = gallery_payload(result, images, page_size, max_image_bytes)
  if images is None:
    note = "<p class='warn' id='flip-noimages'>No images (compared without the eval split's images): labels only.</p>"
  elif payload["omitted_images"]:
    note = f"<p class='warn'>{payload['omitted_images']} images were left out to keep this file small.</p>"
  else:
    note = ""
  return (
      "gallery",
      "Changed examples",
      "<section id='gallery'><h2>The examples whose answer changed</h2><p class='note'>Each card is one example "
      "whose top-1 differs between the reference and the candidate: the image, its true label, and both predictions "
      "with the probability each model gives its answer. Green: equals the true label; red: differs.</p>"
      f"{note}<div class='controls'><label>Candidate <select id='flip-candidate'></select></label> "
      "<label>True class <select id='flip-class'></select></label> "
      "<label>Direction <select id='flip-direction'></select></label> "
      "<button type='button' id='flip-prev'>‹ Previous</button> <span id='flip-page'></span> "
      "<button type='button' id='flip-next'>Next ›</button> <span id='flip-status' role='status'></span></div>"
      "<div id='flip-grid' class='grid'></div>"
      f"<script type='application/json' id='flip-data'>{json_for_script(payload)}</script></section>",
  )
