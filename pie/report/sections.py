"""The sections of the report page, each a `Section` built from the loaded analysis folder.

`build_sections` returns the sections in page order, only those the folder has data for (no methods section for a
single-method study, no robustness section without robustness.csv, ...); the page's navigation is made from the
same list, so it links exactly the sections that are there. Sections with figures save them through a
`figures.FigureFolder`.
"""

import dataclasses
import json

import pandas as pd

from pie import outputs
from pie import variants
from pie.report import figures
from pie.report import findings
from pie.report import gallery
from pie.report import load
from pie.report.markup import cell
from pie.report.markup import count
from pie.report.markup import esc
from pie.report.markup import json_for_script
from pie.report.markup import pct
from pie.report.markup import pp


@dataclasses.dataclass(frozen=True)
class Section:
  """One section of the page: its element id, its title in the navigation (None: not listed) and its HTML."""

  id: str
  nav_title: str | None
  html: str


def build_sections(data, figure_folder, top_n, page_size, max_image_bytes):
  """Every section the analysis folder has data for, in page order (arguments as for `page.write_report`)."""
  sections = [
      howto_section(data),
      findings_section(data),
      populations_section(data),
      overview_section(data, figure_folder),
      methods_section(data, figure_folder),
      pairs_section(data),
      mitigations_section(data),
      classes_section(data, figure_folder, top_n),
      subgroups_section(data, figure_folder, top_n),
      gallery_section(data, page_size, max_image_bytes),
      pie_accuracy_section(data, figure_folder),
      harm_sources_section(data, figure_folder),
      robustness_section(data, figure_folder),
  ]
  return [section for section in sections if section is not None]


# ---------------------------------------------------------------------------------------------------------------------
# The introduction: how to read the page, the key findings, the populations.


def howto_section(data):
  triage_note = " with every image" if data.images is not None else ""
  return Section(
      "howto",
      None,
      f"""<section id="howto" class="howto"><h2>How to read this</h2>
<p>Several copies of the same network were trained from different random seeds: a <b>dense</b> population, and
<b>pruned</b> populations with a given fraction of their weights removed (the <i>sparsity</i>). Pruning costs little
overall accuracy, but the cost is not shared equally.</p>
<ul>
<li><b>Hurt classes.</b> For each class, the change in recall is compared with the change in overall accuracy. A class
is <i>hurt</i> when it loses significantly more than the model as a whole (red in the class charts), <i>spared</i> when
it loses significantly less. Significant means after the Benjamini–Hochberg correction for testing every class
(q ≤ {data.alpha:g}); counts at p &lt; {data.alpha:g} without it, the paper's rule, are labelled uncorrected.</li>
<li><b>PIEs</b> (pruning-identified exemplars) are evaluation images on which the pruned population's most common
answer differs from the dense population's, whatever the true label. They are where pruning changes behaviour; many
are unusual, ambiguous or wrongly labelled, so they deserve a human look (the gallery, and the triage export in
<code>triage/</code>{triage_note}).</li>
</ul>
<p>Start with the findings below (click a class name to see its PIEs), then the red bars of the class chart,
then the gallery.</p></section>
""",
  )


def findings_section(data):
  """The key findings, then the terms they use, each explained once (findings.finding_terms)."""
  found, terms = findings.findings_and_terms(data)
  items = "".join(f"<li>{finding}</li>" for finding in found)
  return Section(
      "findings",
      "Findings",
      f'<section id="findings"><h2>Key findings</h2><ul class="findings">{items}</ul>'
      f"<p class='note' id='findings-terms'>{' '.join(terms)}</p></section>\n",
  )


def populations_section(data):
  study = data.study
  config = json.dumps(study["config"], indent=2, sort_keys=True, default=str)
  alpha = float(data.summary["alpha"])
  opening = '<section id="populations"><h2>Populations</h2><div class="populations">'
  return Section(
      "populations",
      "Populations",
      f"""{opening}{_populations_table(data)}</div>
<p class="note">Significance: α = {alpha:g}; class tests normalize recall
{esc(_normalization_text(data.summary))}. Modal ties: evaluation images whose most common prediction is tied between
labels; rule: {esc(data.summary['tie_rule'])}. Control rows are populations in which nothing was pruned: what they
differ by is the noise floor.</p>
<p class="note" id="design">{design_text(data)}</p>
<details><summary>Study configuration (hash {esc(study['config_hash'])})</summary><pre>{esc(config)}</pre></details>
</section>
""",
  )


def design_text(data):
  """What the study's design is, in one or two sentences (summary.json `design`)."""
  if data.design == outputs.PAIRED_DESIGN:
    return (
        "<b>Design: paired.</b> Each compressed model was fine-tuned from the trained dense model of its seed (its "
        "twin), so the dense population and each compressed one are pairs of models. Classes are tested twice: the "
        "Welch test compares the two populations as samples; the paired t-test compares each model with its own "
        "twin, which removes what a pair shares."
    )
  relations = {level.get("seed_relation") for level in data.summary["levels"] if level.get("seed_relation")}
  if relations == {"shared"}:
    return (
        "<b>Design: independent, shared seeds.</b> Each compressed model was trained from scratch, model i of every "
        "level from the seed of dense model i (same initialisation and data order: twins of the dense models); the "
        "populations are compared as independent samples (Welch test per class), and each level's PIEs only against "
        "a control on the same seeds."
    )
  return (
      "<b>Design: independent.</b> Each compressed model was trained from scratch with its own seed; the populations "
      "are compared as independent samples (Welch test per class)."
  )


def _normalization_text(summary):
  if summary.get("normalization") == "population":
    return (
        "by the population's mean top-1 (the paper's rule, which ignores that mean's variance: see the caution "
        "above)"
    )
  return "by each model's own top-1"


def _populations_table(data):
  """One row per level of the per-level view, the controls right after the dense row."""
  has_fdr = data.levels["num_significant_classes_fdr"].notna().any()
  head = ["Level", "Models", "Top-1 (mean ± std)", "Measured sparsity", "PIEs (fraction of eval set)"]
  if has_fdr:
    head.append("Significant classes (FDR)")
  head += [f"Classes at p &lt; {data.alpha:g} (uncorrected, the paper's rule)", "Modal ties (dense / pruned)"]
  rows = []
  for level in data.levels.itertuples(index=False):
    rows.append(
        _population_row(esc(load.level_label(level.sparsity)), level._asdict(), level.role == "pruned", has_fdr)
    )
    if level.role == variants.DENSE:
      rows += [
          _population_row(
              f"{esc(control['method'].replace('_', ' '))} (control)", control, True, has_fdr, " class='control'"
          )
          for control in data.controls
      ]
  return _table("class='data'", head, rows)


def _population_row(header, level, compared, has_fdr, attributes=""):
  """A row of the populations table from a summary level; `compared`: a population compared with the dense one."""
  cells = [
      count(level["num_models"]),
      f"{pct(level['top1_mean'], 2)} ± {100 * level['top1_std']:.2f}",
      pct(level["measured_sparsity_mean"], 1),
  ]
  if compared:
    cells.append(f"{count(level['num_pies'])} ({pct(level['pie_fraction'], 2)})")
    if has_fdr:
      cells.append(count(level.get("num_significant_classes_fdr")))
    cells += [
        count(level["num_significant_classes"]),
        f"{count(level['num_ties_dense'])} / {count(level['num_ties_pruned'])}",
    ]
  else:
    cells += ["–"] * (4 if has_fdr else 3)
  return f"<tr{attributes}><th scope='row'>{header}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


# ---------------------------------------------------------------------------------------------------------------------
# Figures and tables.


def overview_section(data, figure_folder):
  alpha = float(data.summary["alpha"])
  floor = figures.floor_lines(data.noise_floor)
  accuracy_svg = figure_folder.save(figures.plot_accuracy(figures.accuracy_series(data.levels)), "accuracy_vs_sparsity")
  significance_svg = figure_folder.save(
      figures.plot_significance(figures.significance_series(data.levels), alpha, floor),
      "significant_classes_vs_sparsity",
  )
  pies_svg = figure_folder.save(
      figures.plot_pies(figures.pies_series(data.summary["levels"]), floor), "pies_vs_sparsity"
  )
  floor_text = (
      ""
      if floor is None
      else " Dotted lines and the grey band: the noise floor, what two populations of dense models trained with "
      f"different seeds ({floor['sizes'][0]} + {floor['sizes'][1]} models, random splits) differ by when "
      "nothing was pruned."
  )
  return Section(
      "overview",
      "Accuracy",
      (
          "<section id='overview'><h2>Accuracy, PIEs and significant classes</h2>"
          "<p class='note'>Left: mean top-1 of each population, error bars one standard deviation over its models. "
          "Middle: PIEs per level. Right: how many classes' recall changed significantly more or less than overall "
          f"top-1 (two-sided Welch t-test over the models, q ≤ {alpha:g} after {load.fdr_scope_text(data.summary)}); "
          f"the dashed line counts p &lt; {alpha:g} without that correction (uncorrected, the paper's rule)."
          f"{floor_text}</p>"
          f"<div class='figrow'><figure>{accuracy_svg}</figure><figure>{pies_svg}</figure>"
          f"<figure>{significance_svg}</figure></div></section>"
      ),
  )


def methods_section(data, figure_folder):
  """Every compressed population of a study comparing methods, ranked by harm at its size; None otherwise."""
  if data.methods is None:
    return None
  dense = data.methods.loc[data.methods["method"] == variants.DENSE].iloc[0]
  series = figures.methods_series(data.methods, data.method_class_stats)
  svg = figure_folder.save(figures.plot_methods(series, dense), "methods_vs_size")
  head = [
      "Method",
      "Level",
      "Models",
      "Bits / weight",
      "Compressed (KB)",
      "Size vs dense",
      "Top-1",
      "Change (pts)",
      "Significant classes (FDR)",
      "CIEs (fraction)",
      "Harm rank",
      "Most hurt classes (normalized pts)",
  ]
  body = []
  for row in series.itertuples(index=False):
    hurt = ", ".join(f"{esc(name)} ({100 * change:+.1f})" for name, change in row.hurt_classes) or "none significant"
    fdr = "–" if pd.isna(row.num_significant_classes_fdr) else str(int(row.num_significant_classes_fdr))
    cells = [
        esc(row.method),
        esc(f"{100 * row.sparsity:.4g}%"),
        count(row.num_models),
        "–" if pd.isna(row.bits_per_weight) else f"{row.bits_per_weight:.2f}",
        "–" if pd.isna(row.compressed_bytes) else f"{row.compressed_bytes / 1024:.1f}",
        "–" if pd.isna(row.size_ratio) else f"{row.size_ratio:.2f}×",
        pct(row.top1_mean, 2),
        pp(row.top1_change, 2),
        f"{fdr} ({int(row.num_significant_classes)} uncorrected)",
        f"{int(row.num_pies)} ({pct(row.pie_fraction, 2)})",
        str(int(row.harm_rank)),
        hurt,
    ]
    body.append(_row(cells))
  dense_kb = "–" if pd.isna(dense["compressed_bytes"]) else f"{dense['compressed_bytes'] / 1024:.1f} KB"
  table = _table("id='methods-table'", head, body)
  return Section(
      "methods",
      "Methods compared",
      (
          "<section id='methods'><h2>Methods compared</h2><p class='note'>Every compressed population against the "
          f"same dense population (top-1 {pct(dense['top1_mean'], 2)}, {dense_kb} compressed). Compressed size: gzip "
          "of the exported TFLite model (sparse storage for pruned ones), measured per model and averaged. CIEs "
          "(compression-identified exemplars) are the PIEs of each method: examples whose modal prediction differs "
          "from the dense population's. Significant classes: q ≤ α after Benjamini–Hochberg, with the count at "
          "p &lt; α uncorrected (the paper's rule) beside it. Rows run from the smallest model to the largest; the "
          "harm rank orders the methods by CIEs, then significantly changed classes, then top-1 loss (1 = most harm). "
          "Most hurt classes: significantly hurt, most negative change in recall beyond the overall change.</p>"
          f"<figure>{svg}</figure><div class='scroll'>{table}</div></section>"
      ),
  )


def pairs_section(data):
  """What one model against its dense model would have told a reader, next to what the populations tell: per
  compressed population with model pairs (its dense twins in the paired design, the dense models of the same seeds
  otherwise); None when there is none."""
  levels = [level for level in data.compared_levels if level.get("single_pair") and level["single_pair"]["num_pairs"]]
  if not levels:
    return None
  alpha = float(data.summary["alpha"])
  paired = data.design == outputs.PAIRED_DESIGN
  head = [
      "Population",
      "Pairs",
      "One pair: classes flagged (median)",
      "One pair: classes hurt (median)",
      "One pair: largest class drop (median, pts)",
      "Population: classes hurt, Welch (FDR)",
      "Population: classes hurt, paired (FDR)",
      "Population: largest class harm (normalized pts, interval)",
  ]
  body = []
  for level in levels:
    single = level["single_pair"]
    harm = level.get("largest_class_harm") or {}
    harm_text = "–"
    if harm:
      # The paired estimate and interval when the class has them, the Welch ones otherwise.
      key = "paired_" if harm.get("paired_change") is not None else ""
      change = harm["paired_change"] if key else harm["normalized_change"]
      low, high = harm.get(f"{key}ci_low"), harm.get(f"{key}ci_high")
      harm_text = f"class {esc(harm['class_name'])}: {pp(change)} ({pp(low)} to {pp(high)})"
    cells = [
        esc(_population_name(level)),
        count(single["num_pairs"]),
        _median(single["classes_flagged_fdr_median"]),
        _median(single["classes_hurt_fdr_median"]),
        pp(single["largest_class_drop_median"]),
        count(level.get("num_hurt_classes_fdr")),
        count(level.get("num_hurt_classes_paired_fdr")),
        harm_text,
    ]
    body.append(_row(cells))
  table = _table("class='data' id='pairs-table'", head, body)
  return Section(
      "pairs",
      "One pair vs population",
      (
          "<section id='pairs'><h2>One model pair against the population</h2><p class='note'>What a single "
          "comparison would have shown: each compressed model against "
          + (
              "its own dense twin"
              if paired
              else "the dense model of its seed (trained independently: this design has no twins)"
          )
          + ", alone, with an exact "
          f"McNemar test per class (its examples the twin gets right and it gets wrong, and the reverse) and "
          f"Benjamini–Hochberg over the classes at α = {alpha:g}; the medians over the pairs. A single pair "
          "answers “did this class's recall change in this model?”, the populations answer “does this class lose "
          "more than the model as a whole, beyond seed noise?”. The interval of the largest harm is the paired one "
          "when there is one (the class's own interval: picking the worst class leans toward harm).</p>"
          f"<div class='scroll'>{table}</div></section>"
      ),
  )


def mitigations_section(data):
  """Each mitigation side by side with the unmitigated population of its method and level, with its verdict; None
  when the study compares no mitigation (summary.json `mitigations`)."""
  comparisons = data.summary.get("mitigations") or []
  if not comparisons:
    return None
  by_key = {(level["method"], float(level["sparsity"])): level for level in data.compared_levels}
  groups = {}
  for comparison in comparisons:
    groups.setdefault((comparison["method"], float(comparison["sparsity"])), []).append(comparison)
  head = [
      "Population",
      "Models",
      "Top-1",
      "PIEs",
      "PIEs over the noise floor (interval)",
      "Classes hurt (FDR)",
      "Largest class harm (normalized pts, interval)",
      "Verdict",
  ]
  parts = []
  for (method, sparsity), group in groups.items():
    rows = [(by_key.get((method, sparsity)), "unmitigated")] + [
        (by_key.get((c["population"], sparsity)), c["verdict"]) for c in group
    ]
    body = [_mitigation_row(level, verdict) for level, verdict in rows if level is not None]
    sentences = "".join(f"<li>{esc(c['sentence'])}</li>" for c in group)
    table = _table("class='data mitigations'", head, body)
    parts.append(
        f"<h3>{esc(_population_name(by_key.get((method, sparsity)) or {'method': method, 'sparsity': sparsity}))}"
        f"</h3><div class='scroll'>{table}</div>"
        f"<ul class='verdicts'>{sentences}</ul>"
    )
  return Section(
      "mitigations",
      "Mitigations compared",
      (
          "<section id='mitigations'><h2>Mitigations compared</h2><p class='note'>Each mitigation trains the same "
          "compression differently; every population is compared with the same dense population. The verdict compares "
          "a mitigated population with the unmitigated one and rests on intervals, not on point estimates: "
          "<b>helped</b> when the interval of the change in the worst class's normalized recall lies above 0 or the "
          "interval of the change in PIEs lies below 0, and neither lies on the other side; <b>hurt</b> the reverse; "
          "<b>mixed</b> when both happen; <b>no measurable effect</b> when both intervals cover 0. The worst class is "
          "the one compression hurts most in the two populations pooled (so that picking it favours neither); each "
          "interval is at 1 − α/2, so a mitigation that does nothing gets a verdict in about α of studies.</p>"
          + "".join(parts)
          + "</section>"
      ),
  )


def _mitigation_row(level, verdict):
  harm = level.get("largest_class_harm") or {}
  excess = level.get("pies_excess")
  cells = [
      esc(_population_name(level)),
      count(level["num_models"]),
      pct(level["top1_mean"], 2),
      count(level["num_pies"]),
      "–"
      if excess is None
      else f"{excess:+.1f} ("
      + (
          "–"
          if level.get("pies_excess_ci_low") is None
          else f"{level['pies_excess_ci_low']:+.1f} to {level['pies_excess_ci_high']:+.1f}"
      )
      + ")",
      count(level.get("num_hurt_classes_fdr")),
      "–"
      if not harm
      else f"class {esc(harm['class_name'])}: {pp(harm['normalized_change'])} ({pp(harm.get('ci_low'))} to "
      f"{pp(harm.get('ci_high'))})",
      esc(verdict),
  ]
  return _row(cells)


def _population_name(level):
  method = level.get("method") or ""
  name = method.replace("_", " ").replace("+", " + ")
  return f"{name} {100 * float(level['sparsity']):.4g}%" if float(level["sparsity"]) else name


def _median(value):
  return "–" if value is None else f"{value:g}"


def classes_section(data, figure_folder, top_n):
  """The class impact chart and table of every pruned level, the highest sparsity open."""
  num_classes = int(data.study["num_classes"])
  parts = [
      _class_impact_level(data, figure_folder, sparsity, top_n, is_open=i == 0)
      for i, sparsity in enumerate(reversed(data.pruned_sparsities))
  ]
  return Section(
      "classes",
      "Class impact",
      (
          "<section id='classes'><h2>Which classes pruning hurts</h2><p class='note'>Bars: change in the class's "
          "recall "
          "(pruned minus dense, percentage points). Diamonds: the same change minus the change in overall top-1, i.e. "
          "how "
          "much worse (left) or better (right) the class fares than the model as a whole. Coloured bars and bold names "
          f"are significant after {load.fdr_scope_text(data.summary)} (q ≤ {data.alpha:g}); a grey bar with a "
          f"coloured outline is at p &lt; {data.alpha:g} only without that correction (uncorrected, the paper's "
          "rule). "
          + (
              f"With {num_classes} classes only the most affected are drawn; open the table for the rest."
              if num_classes > 2 * top_n
              else ""
          )
          + "</p>"
          + "".join(parts)
          + "</section>"
      ),
  )


def _class_impact_level(data, figure_folder, sparsity, top_n, is_open):
  stats = data.class_stats.loc[data.class_stats["sparsity"] == sparsity]
  key, label = load.level_key(sparsity), esc(load.level_label(sparsity))
  if stats.empty:
    return f"<details><summary>{label} sparsity: no class statistics</summary></details>"
  series = figures.class_impact_series(data.class_stats, sparsity, top_n)
  shown = (
      f"all {len(stats)} classes"
      if len(series) == len(stats)
      else f"{top_n} most hurt and {top_n} most helped of {len(stats)} classes"
  )
  svg = figure_folder.save(
      figures.plot_class_impact(series, f"{load.level_label(sparsity)} sparsity: {shown}", num_total=len(stats)),
      f"class_impact_{key}",
  )
  return _level_details(
      f"impact-{key}",
      is_open,
      f"<b>{label} sparsity</b>: {impact_headline(stats, len(stats), 'classes')}",
      f"<figure>{svg}</figure>",
      f"All {len(stats)} classes (sortable table)",
      _class_table(stats, f"classes-{key}"),
  )


def impact_headline(stats, total, items):
  """ "N of C <items> significantly hurt and M significantly spared after FDR", then the uncorrected counts; `stats`
  has class_stats.csv's (or slice_stats.csv's) normalized_change, significant and significant_fdr."""
  counts = {}
  for column in ("significant_fdr", "significant"):
    counts[column] = (
        int((stats[column] & (stats["normalized_change"] < 0)).sum()),
        int((stats[column] & (stats["normalized_change"] > 0)).sum()),
    )
  hurt, spared = counts["significant_fdr"]
  hurt_uncorrected, spared_uncorrected = counts["significant"]
  return (
      f"{hurt} of {total} {items} significantly hurt and {spared} significantly spared after FDR; uncorrected (the "
      f"paper's rule): {hurt_uncorrected} hurt, {spared_uncorrected} spared"
  )


def _level_details(element_id, is_open, summary, figure, table_summary, table, table_open=False):
  """One level of a per-level section: a <details> with its summary line and figure, and its table folded inside."""
  return (
      f"<details class='level'{' open' if is_open else ''} id='{element_id}'><summary>{summary}</summary>{figure}"
      f"<details class='table'{' open' if table_open else ''}><summary>{table_summary}</summary>{table}</details>"
      "</details>"
  )


# The columns of the class table: (class_stats.csv column, header, format); those the file lacks are left out.
_CLASS_TABLE_COLUMNS = (
    ("class_id", "Id", None),
    ("class_name", "Class", None),
    ("num_examples", "Examples", None),
    ("dense_recall_mean", "Dense recall", "pct"),
    ("pruned_recall_mean", "Pruned recall", "pct"),
    ("recall_change", "Change (pts)", "pp"),
    ("normalized_change", "Normalized (pts)", "pp"),
    ("t_statistic", "t", "f2"),
    ("p_value", "p", "p"),
    ("q_value", "q (FDR)", "p"),
    ("significant_fdr", "Significant (FDR)", "bool"),
    ("significant", "p < α (uncorrected)", "bool"),
    ("ci_low", "CI low (pts)", "pp"),
    ("ci_high", "CI high (pts)", "pp"),
    ("hedges_g", "Hedges g", "f2"),
    ("paired_change", "Paired change (pts)", "pp"),
    ("paired_q_value", "Paired q (FDR)", "p"),
    ("paired_significant_fdr", "Paired significant (FDR)", "bool"),
    ("uniform_shift_change", "Uniform shift predicts (pts)", "pp"),
    ("beyond_uniform_shift", "Beyond the shift (pts)", "pp"),
    ("beyond_uniform_shift_q_value", "Beyond: q (FDR)", "p"),
    ("beyond_uniform_shift_significant_fdr", "Beyond the shift (FDR)", "bool"),
    ("note", "Note", None),
)


def _class_table(stats, table_id):
  """Every class of one level, most hurt first, sortable (report.js) by the raw value in each cell's data-v."""
  columns = [c for c in _CLASS_TABLE_COLUMNS if c[0] in stats]
  return _sortable_table(stats.sort_values("normalized_change", kind="stable"), columns, table_id, "classes")


def _sortable_table(stats, columns, table_id, items, filter_columns=None):
  """A table of `stats` rows (those significant after FDR marked hurt or helped) that report.js sorts by each cell's
  data-v and filters through its search box: on every column, or on `filter_columns` ("0,1,2")."""
  body = []
  for row in stats.itertuples(index=False):
    values = row._asdict()
    cls = ""
    if values["significant_fdr"]:
      cls = " class='hurt'" if values["normalized_change"] < 0 else " class='helped'"
    body.append(f"<tr{cls}>" + "".join(cell(values[c], fmt) for c, _, fmt in columns) + "</tr>")
  head = [esc(title) for _, title, _ in columns]
  filtered = f" data-columns='{filter_columns}'" if filter_columns else ""
  return (
      f"<input type='search' class='table-filter' data-table='{table_id}'{filtered} placeholder='filter {items}…' "
      f"aria-label='filter {items}'>"
      + "<div class='scroll'>"
      + _table(f"class='data sortable' id='{table_id}'", head, body, sortable=True)
      + "</div>"
  )


def _table(attributes, head, rows, sortable=False):
  """<table attributes> with the column headers `head` (HTML; focusable when report.js sorts it) and `rows`."""
  focus = " tabindex='0'" if sortable else ""
  header = "".join(f"<th scope='col'{focus}>{h}</th>" for h in head)
  return f"<table {attributes}><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _row(cells):
  return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def subgroups_section(data, figure_folder, top_n):
  """Slices beyond classes (slice_stats.csv): attribute values, their pairs and class groups, per pruned level, the
  highest open; None for an analysis without slices."""
  stats = data.slice_stats
  if stats is None or stats.empty:
    return None
  sparsities = [s for s in reversed(data.pruned_sparsities) if (stats["sparsity"] == s).any()]
  if not sparsities:
    return None
  settings = data.summary.get("slices") or {}
  described = []
  if settings.get("features"):
    described.append("the slice features " + ", ".join(f"<code>{esc(f)}</code>" for f in settings["features"]))
  if settings.get("class_groups"):
    described.append(f"{len(settings['class_groups'])} class groups")
  minimum = settings.get("min_slice_size")
  parts = [
      _subgroups_level(stats.loc[stats["sparsity"] == sparsity], figure_folder, sparsity, top_n, is_open=i == 0)
      for i, sparsity in enumerate(sparsities)
  ]
  return Section(
      "subgroups",
      "Subgroups",
      (
          "<section id='subgroups'><h2>Subgroups: slices beyond classes</h2><p class='note'>A slice is a subset of "
          "the evaluation set: the examples with one value of a slice feature exported with the predictions, with "
          "one value of each of two features (their intersection), or of a group of classes"
          + (f" (this study: {'; '.join(described)})" if described else "")
          + ". Each slice gets the class test: its accuracy change (bars) minus the change in overall top-1 "
          "(diamonds), Welch's t-test over the models, Benjamini–Hochberg over the slices of a level. "
          + (
              f"Slices with fewer than {int(minimum)} examples are listed but not tested (--min_slice_size). "
              if minimum
              else ""
          )
          + "PIE rate: the share of the slice's examples that are PIEs.</p>"
          + "".join(parts)
          + "</section>"
      ),
  )


def _subgroups_level(stats, figure_folder, sparsity, top_n, is_open):
  key, label = load.level_key(sparsity), esc(load.level_label(sparsity))
  series = figures.slice_impact_series(stats, sparsity, top_n)
  tested = int(stats["p_value"].notna().sum())
  figure = ""
  if len(series):
    svg = figure_folder.save(
        figures.plot_class_impact(
            series,
            f"{load.level_label(sparsity)} sparsity: {len(series)} of {len(stats)} slices",
            num_total=int(stats["normalized_change"].notna().sum()),
            measure="accuracy",
            items="slices",
        ),
        f"slice_impact_{key}",
    )
    figure = f"<figure>{svg}</figure>"
  return _level_details(
      f"subgroups-{key}",
      is_open,
      f"<b>{label} sparsity</b>: {tested} of {len(stats)} slices tested; {impact_headline(stats, tested, 'slices')}",
      figure,
      f"All {len(stats)} slices (sortable table)",
      _slice_table(stats, f"slices-{key}"),
      table_open=is_open,
  )


# The columns of the slice table: (slice_stats.csv column, header, format).
_SLICE_TABLE_COLUMNS = (
    ("slice_kind", "Kind", None),
    ("slice_name", "Slice", None),
    ("slice_value", "Value", None),
    ("num_examples", "Examples", None),
    ("dense_accuracy_mean", "Dense accuracy", "pct"),
    ("pruned_accuracy_mean", "Pruned accuracy", "pct"),
    ("accuracy_change", "Change (pts)", "pp"),
    ("normalized_change", "Normalized (pts)", "pp"),
    ("p_value", "p", "p"),
    ("q_value", "q (FDR)", "p"),
    ("significant_fdr", "Significant (FDR)", "bool"),
    ("significant", "p < α (uncorrected)", "bool"),
    ("ci_low", "CI low (pts)", "pp"),
    ("ci_high", "CI high (pts)", "pp"),
    ("hedges_g", "Hedges g", "f2"),
    ("num_pies", "PIEs", None),
    ("pie_rate", "PIE rate", "pct"),
    ("note", "Note", None),
)


def _slice_table(stats, table_id):
  """Every slice of one level in slice_stats.csv's order, sortable and filterable by kind, name and value."""
  return _sortable_table(stats, _SLICE_TABLE_COLUMNS, table_id, "slices", filter_columns="0,1,2")


def gallery_section(data, page_size, max_image_bytes):
  """The PIE cards, filtered and paged by report.js from the JSON payload embedded here."""
  payload = gallery.gallery_payload(data, page_size=page_size, max_image_bytes=max_image_bytes)
  if data.images is None:
    image_note = (
        "<p class='warn' id='gallery-noimages'>This analysis was run without images (no "
        f"{outputs.PIES_TFRECORD}): the gallery shows labels only.</p>"
    )
  elif payload["omitted_images"]:
    image_note = (
        f"<p class='warn'>{payload['omitted_images']} images were left out to keep this file small; every "
        "image is in triage/images.</p>"
    )
  else:
    image_note = ""
  return Section(
      "gallery",
      "PIE gallery",
      (
          "<section id='gallery'><h2>PIE gallery: the images pruning changes</h2><p class='note'>Each card is one PIE: "
          "the image, its true label, and the most common prediction of the dense and of the pruned population, with "
          "the "
          "share of each population's models that voted for it. Green: equals the true label; red: differs. Many PIEs "
          f"are atypical, ambiguous or mislabelled. Ties between modal labels are broken by the rule "
          f"“{esc(data.summary['tie_rule'])}”.</p>{image_note}"
          "<div class='controls'><label>Level <select id='gal-level'></select></label> "
          "<label>True class <select id='gal-class'></select></label> "
          "<button type='button' id='gal-prev'>‹ Previous</button> <span id='gal-page'></span> "
          "<button type='button' id='gal-next'>Next ›</button> <span id='gal-status' role='status'></span></div>"
          "<div id='gal-grid' class='grid'></div>"
          f"<script type='application/json' id='pie-data'>{json_for_script(payload)}</script></section>"
      ),
  )


def pie_accuracy_section(data, figure_folder):
  """Top-1 on PIEs, a random sample and non-PIEs per level; None when pie_accuracy.csv has no row of the view."""
  series = {s: figures.pie_accuracy_series(data.pie_accuracy, s) for s in data.pruned_sparsities}
  series = {s: v for s, v in series.items() if not v.empty}
  if not series:
    return None
  svg = figure_folder.save(figures.plot_pie_accuracy(series), "pie_accuracy")
  return Section(
      "pie-accuracy",
      "PIE accuracy",
      (
          "<section id='pie-accuracy'><h2>How hard are PIEs?</h2><p class='note'>Top-1 of each population on the PIEs, "
          "on a random sample of the evaluation set of the same size, and on all non-PIEs (mean ± std over models). "
          f"PIEs are hard for both populations, not only for the pruned one.</p><figure>{svg}</figure></section>"
      ),
  )


def _risk_cell(level, score):
  metrics = (level.get("risk") or {}).get(score)
  if not metrics or metrics["auroc"] is None or metrics["auroc"] != metrics["auroc"]:
    return "–"
  return f"{metrics['auroc']:.2f} / {pct(metrics['precision_at_pies'], 0)}"


def _spearman_cell(value):
  """rho with its p-value from reassigning the models, and what a uniform shift alone would give."""
  if not value or value.get("rho") is None:
    return "–"
  text = f"{value['rho']:+.2f} (p = {value['p_value']:.2g})"
  if value.get("uniform_shift_rho") is not None:
    text += f"; shift alone {value['uniform_shift_rho']:+.2f}"
  if value.get("beyond_uniform_shift_rho") is not None:
    text += f"; beyond it {value['beyond_uniform_shift_rho']:+.2f} (p = {value['beyond_uniform_shift_p_value']:.2g})"
  return text


def harm_sources_section(data, figure_folder):
  """Where the harm comes from: PIE rate by difficulty decile, how well dense-only scores predict the PIEs, and how
  class harm follows class difficulty and frequency; None for an analysis without difficulty.csv."""
  if data.difficulty is None or data.difficulty.empty:
    return None
  sparsities = [s for s in data.pruned_sparsities if (data.difficulty["sparsity"] == s).any()]
  svg = figure_folder.save(figures.plot_difficulty(data.difficulty, sparsities), "difficulty_deciles")
  by_sparsity = {float(level["sparsity"]): level for level in data.summary["levels"] if level["role"] == "pruned"}
  rows = []
  for sparsity in sparsities:
    level = by_sparsity.get(sparsity, {})
    cells = [_risk_cell(level, score) for score in ("dense_true_prob", "dense_disagreement", "dense_el2n")]
    cells.append(_risk_cell({"risk": level.get("control_risk")}, "dense_true_prob"))
    cells += [
        _spearman_cell(level.get("class_difficulty_spearman")),
        _spearman_cell(level.get("train_frequency_spearman")),
    ]
    rows.append(
        f"<tr><th scope='row'>{esc(load.level_label(sparsity))}</th>"
        + "".join(f"<td>{c}</td>" for c in cells)
        + "</tr>"
    )
  head = [
      "Level",
      "1 − true-label prob.",
      "Disagreement",
      "EL2N",
      "Control (1 − true-label prob.)",
      "Class recall vs harm",
      "Class frequency vs harm",
  ]
  table = _table("class='data' id='risk-table'", head, rows)
  return Section(
      "harm-sources",
      "Where harm comes from",
      (
          "<section id='harm-sources'><h2>Where the harm comes from</h2><p class='note'>Measured on the dense "
          "population alone, before compressing. Left: the share of PIEs in each tenth of the evaluation set, from "
          "the hardest examples for the dense models (lowest mean probability of the true label) to the easiest. "
          "Table: how well each dense-only score predicts which examples become PIEs (AUROC: 0.5 is chance; and the "
          "share of PIEs among the examples it ranks most at risk, as many as there are PIEs); beside them, the same "
          "for the level's matched control, whose PIEs are seed noise alone (hard examples flip between seeds too, so "
          "a level's AUROC says something only where it exceeds the control's); and the Spearman correlation of each "
          "class's normalized change with its dense recall and its number of training examples (positive: easier or "
          "more frequent classes fare better), its p-value from reassigning the models between the two populations "
          "(each model's luck is shared by all its classes), the correlation a uniform shift of every example's "
          "margin alone would give (it makes hard classes lose more), and the correlation with what is left beyond "
          f"that shift.</p><figure>{svg}</figure>{table}</section>"
      ),
  )


def robustness_section(data, figure_folder):
  """Top-1 under corruptions per level (robustness.csv); None when the folder has no robustness rows."""
  if data.robustness is None or data.robustness.empty:
    return None
  levels = [s for s in data.pruned_sparsities if (data.robustness["sparsity"] == s).any()]
  severity_svg = figure_folder.save(
      figures.plot_robustness_severity({s: figures.robustness_severity_series(data.robustness, s) for s in levels}),
      "robustness_vs_severity",
  )
  parts = []
  for sparsity in levels:
    key, label = load.level_key(sparsity), load.level_label(sparsity)
    svg = figure_folder.save(
        figures.plot_robustness_drop(
            figures.robustness_drop_series(data.robustness, sparsity), f"{label} sparsity: accuracy drop per corruption"
        ),
        f"robustness_drop_{key}",
    )
    rows = data.robustness.loc[data.robustness["sparsity"] == sparsity]
    parts.append(
        _level_details(
            f"robustness-{key}",
            sparsity == levels[-1],
            f"<b>{esc(label)} sparsity</b>: {robustness_headline(rows)}",
            f"<figure>{svg}</figure>",
            "All rows",
            _robustness_table(rows, f"robustness-table-{key}"),
        )
    )
  return Section(
      "robustness",
      "Robustness",
      (
          "<section id='robustness'><h2>Robustness to corrupted images</h2><p class='note'>Top-1 on corrupted "
          "copies of the evaluation set. Left: mean over corruptions per severity; the numbers under the pruned line "
          "count the corruptions where the dense and pruned drops differ significantly (Welch t-test of the "
          f"per-model drops, q ≤ {data.alpha:g} after Benjamini–Hochberg over the corruption × severity pairs of the "
          "level). Per level: the drop from clean accuracy per corruption; * marks corruptions with a significant "
          "difference at some severity.</p>"
          f"<figure>{severity_svg}</figure>{''.join(parts)}</section>"
      ),
  )


def robustness_headline(rows):
  """A level's robustness headline from robustness.csv's rows: pairs that differ after FDR (those where the pruned
  models lose more, and less), then the uncorrected count."""
  fdr = rows["significant_fdr"].to_numpy(dtype=bool)
  worse = rows["pruned_drop"].to_numpy() > rows["dense_drop"].to_numpy()
  return (
      f"{int(fdr.sum())} of {len(rows)} corruption × severity pairs differ significantly after FDR (pruned drops more "
      f"in {int((fdr & worse).sum())}, less in {int((fdr & ~worse).sum())}); uncorrected (the paper's rule): "
      f"{int(rows['significant'].sum())}"
  )


def _robustness_table(rows, table_id):
  head = [
      "Corruption",
      "Severity",
      "Dense top-1",
      "Pruned top-1",
      "Dense drop (pts)",
      "Pruned drop (pts)",
      "Relative drop dense",
      "Relative drop pruned",
      "t",
      "p",
      "q (FDR)",
      "Significant (FDR)",
      "p < α (uncorrected)",
  ]
  body = []
  for r in rows.sort_values(["corruption", "severity"]).itertuples(index=False):
    cells = [
        (r.corruption, esc(r.corruption)),
        (r.severity, r.severity),
        (r.dense_top1_mean, f"{pct(r.dense_top1_mean)} ± {100 * r.dense_top1_std:.1f}"),
        (r.pruned_top1_mean, f"{pct(r.pruned_top1_mean)} ± {100 * r.pruned_top1_std:.1f}"),
        (r.dense_drop, pp(r.dense_drop, 2)),
        (r.pruned_drop, pp(r.pruned_drop, 2)),
        (r.relative_drop_dense, pct(r.relative_drop_dense)),
        (r.relative_drop_pruned, pct(r.relative_drop_pruned)),
        (r.t_statistic, f"{r.t_statistic:.2f}"),
        (r.p_value, f"{r.p_value:.3g}"),
        (r.q_value, f"{r.q_value:.3g}"),
        (int(r.significant_fdr), "yes" if r.significant_fdr else ""),
        (int(r.significant), "yes" if r.significant else ""),
    ]
    cls = ""
    if r.significant_fdr:
      cls = " class='hurt'" if r.pruned_drop > r.dense_drop else " class='helped'"
    body.append(f"<tr{cls}>" + "".join(f"<td data-v='{esc(v)}'>{s}</td>" for v, s in cells) + "</tr>")
  return "<div class='scroll'>" + _table(f"class='data sortable' id='{table_id}'", head, body, sortable=True) + "</div>"
