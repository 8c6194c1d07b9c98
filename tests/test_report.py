"""Tests of pie.report: chart data against the CSVs, self-containment, triage export, optional and bad inputs.

The analysis folders are written by the real analysis (tests/report_fixture.py); expectations come from its files.
"""

import base64
import dataclasses
import html
import io
import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from PIL import Image

import pie  # noqa: F401  (sets the TensorFlow environment first)
from pie import outputs
from pie import report
from tests.report_fixture import reported_rows
from tests.report_fixture import write_analysis_fixture


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory):
  """The fixture study with every optional file and column, and its report written once."""
  directory = write_analysis_fixture(tmp_path_factory.mktemp("full") / "analysis")
  report.write_report(directory)
  return directory


@pytest.fixture(scope="module")
def minimal_dir(tmp_path_factory):
  """The fixture study without images, robustness, optional columns or FDR counts, and its report."""
  directory = write_analysis_fixture(
      tmp_path_factory.mktemp("minimal") / "analysis", images=False, robustness=False, optional_columns=False
  )
  report.write_report(directory)
  return directory


@pytest.fixture(scope="module")
def full_data(full_dir):
  return report.load_analysis(full_dir)


def _csv(directory, name):
  """The rows of a table that the report's per-level sections show (not the controls')."""
  return reported_rows(
      pd.read_csv(
          directory / name,
          dtype={"class_name": str, "label_name": str, "dense_modal_name": str, "pruned_modal_name": str},
          keep_default_na=False,
          na_values=[""],
      )
  )


def _first_reported(table):
  """The index of the first row of a table that the report shows."""
  return reported_rows(table).index[0]


def _summary(directory):
  return json.loads((directory / "summary.json").read_text())


def _gallery_json(html_text):
  match = re.search(r"<script type='application/json' id='pie-data'>(.*?)</script>", html_text, re.S)
  assert match, "gallery data block missing"
  return json.loads(match.group(1))


def _png_pixels(png_bytes):
  with Image.open(io.BytesIO(png_bytes)) as image:
    return np.asarray(image)


# --- chart series equal the files they come from ---------------------------------------------------------------------


def test_accuracy_series_and_plot_match_summary(full_dir, full_data):
  # The chart shows the dense and pruned populations; the controls are the noise floor, not a level.
  levels = sorted((l for l in _summary(full_dir)["levels"] if l["role"] != "control"), key=lambda l: l["sparsity"])
  series = report.accuracy_series(full_data.levels)
  np.testing.assert_allclose(series["sparsity"], [l["sparsity"] for l in levels])
  np.testing.assert_allclose(series["top1_mean"], [l["top1_mean"] for l in levels])
  np.testing.assert_allclose(series["top1_std"], [l["top1_std"] for l in levels])

  figure = report.plot_accuracy(series)
  container = figure.axes[0].containers[0]
  line, _, (bars,) = container
  np.testing.assert_allclose(line.get_xdata(), [100 * l["sparsity"] for l in levels])
  np.testing.assert_allclose(line.get_ydata(), [100 * l["top1_mean"] for l in levels])
  half_heights = [(seg[1][1] - seg[0][1]) / 2 for seg in bars.get_segments()]
  np.testing.assert_allclose(half_heights, [100 * l["top1_std"] for l in levels])


def test_significance_series_and_plot_match_summary(full_dir, full_data, minimal_dir):
  pruned = [l for l in _summary(full_dir)["levels"] if l["role"] == "pruned"]
  series = report.significance_series(full_data.levels)
  np.testing.assert_allclose(series["num_significant"], [l["num_significant_classes"] for l in pruned])
  np.testing.assert_allclose(series["num_significant_fdr"], [l["num_significant_classes_fdr"] for l in pruned])
  axes = report.plot_significance(series, 0.05).axes[0]
  lines = axes.get_lines()
  assert len(lines) == 2
  # The significant count (FDR) is the chart's first, solid line and its title; the paper's uncorrected one follows.
  np.testing.assert_allclose(lines[0].get_ydata(), [l["num_significant_classes_fdr"] for l in pruned])
  np.testing.assert_allclose(lines[1].get_ydata(), [l["num_significant_classes"] for l in pruned])
  assert "FDR" in lines[0].get_label() and "uncorrected" in lines[1].get_label() and "FDR" in axes.get_title()

  # An analysis without FDR counts (the minimal folder) gets them from BH over each level's p-values.
  minimal_data = report.load_analysis(minimal_dir)
  minimal = report.significance_series(minimal_data.levels)
  stats = _csv(minimal_dir, "class_stats.csv")
  expected = [
      int((scipy.stats.false_discovery_control(stats.loc[np.isclose(stats["sparsity"], s), "p_value"]) <= 0.05).sum())
      for s in minimal["sparsity"]
  ]
  np.testing.assert_array_equal(minimal["num_significant_fdr"], expected)
  assert minimal_data.fdr_computed == ("class_stats.csv",)
  # A series without FDR counts draws only the uncorrected line, titled as such.
  axes = report.plot_significance(minimal.assign(num_significant_fdr=np.nan), 0.05).axes[0]
  assert len(axes.get_lines()) == 1 and "uncorrected" in axes.get_title()


def test_class_impact_series_shows_every_class_of_a_small_study_sorted_by_effect(full_dir, full_data):
  stats = _csv(full_dir, "class_stats.csv")
  for sparsity in full_data.pruned_sparsities:
    series = report.class_impact_series(full_data.class_stats, sparsity, top_n=25)
    expected = stats.loc[np.isclose(stats["sparsity"], sparsity)].sort_values("normalized_change")
    assert list(series["class_name"]) == list(expected["class_name"])
    np.testing.assert_allclose(series["recall_change"], expected["recall_change"])
    np.testing.assert_allclose(series["normalized_change"], expected["normalized_change"])
    assert list(series["significant"]) == list(expected["significant"])
    assert list(series["significant_fdr"]) == list(expected["significant_fdr"])


def test_class_impact_plot_draws_the_series(full_data):
  sparsity = full_data.pruned_sparsities[-1]
  series = report.class_impact_series(full_data.class_stats, sparsity)
  ax = report.plot_class_impact(series, "t").axes[0]
  bars = ax.patches[: len(series)]
  np.testing.assert_allclose([b.get_width() for b in bars], 100 * series["recall_change"])
  np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 0], 100 * series["normalized_change"])
  assert [t.get_text() for t in ax.get_yticklabels()] == list(series["class_name"])
  grey = np.array(Image.new("RGB", (1, 1), report.COLOR_NEUTRAL).getpixel((0, 0))) / 255
  for sparsity in full_data.pruned_sparsities:
    series = report.class_impact_series(full_data.class_stats, sparsity)
    bars = report.plot_class_impact(series, "t").axes[0].patches[: len(series)]
    # Coloured: significant after FDR; outlined only: at p < alpha without the correction.
    for bar, fdr, uncorrected in zip(bars, series["significant_fdr"], series["significant"]):
      assert np.allclose(bar.get_facecolor()[:3], grey) != bool(fdr)
      assert (bar.get_linewidth() > 0) == bool(uncorrected and not fdr)


def test_class_impact_series_keeps_the_most_impacted_of_many_classes():
  rng = np.random.default_rng(3)
  n = 1000
  change = rng.normal(0, 0.05, n)
  stats = pd.DataFrame(
      {
          "sparsity": 0.9,
          "class_id": np.arange(n),
          "class_name": [f"c{i}" for i in range(n)],
          "recall_change": change - 0.02,
          "normalized_change": change,
          "significant": rng.random(n) < 0.3,
          "p_value": rng.random(n),
      }
  )
  series = report.class_impact_series(stats, 0.9, top_n=25)
  assert len(series) == 50
  assert (np.diff(series["normalized_change"]) >= 0).all()
  hurt, helped = series.iloc[:25], series.iloc[25:]
  rest = stats.loc[~stats["class_id"].isin(series["class_id"])]
  assert hurt["normalized_change"].max() <= rest.loc[rest["normalized_change"] < 0, "normalized_change"].min()
  assert helped["normalized_change"].min() >= rest.loc[rest["normalized_change"] > 0, "normalized_change"].max()
  ax = report.plot_class_impact(series, "t", num_total=n).axes[0]
  assert "950 less affected classes not shown" in [t.get_text() for t in ax.texts]
  with pytest.raises(ValueError, match="top_n"):
    report.class_impact_series(stats, 0.9, top_n=0)
  with pytest.raises(ValueError, match="no row at sparsity 0.5"):
    report.class_impact_series(stats, 0.5)


def test_pie_accuracy_series_and_plot_match_csv(full_dir, full_data):
  table = _csv(full_dir, "pie_accuracy.csv")
  for sparsity in full_data.pruned_sparsities:
    series = report.pie_accuracy_series(full_data.pie_accuracy, sparsity)
    assert len(series) == 6
    for row in series.itertuples(index=False):
      match = table.loc[
          np.isclose(table["sparsity"], sparsity)
          & (table["population"] == row.population)
          & (table["subset"] == row.subset)
      ]
      assert len(match) == 1
      assert row.top1_mean == pytest.approx(match["top1_mean"].item())
      assert row.top1_std == pytest.approx(match["top1_std"].item())
  all_series = {s: report.pie_accuracy_series(full_data.pie_accuracy, s) for s in full_data.pruned_sparsities}
  figure = report.plot_pie_accuracy(all_series)
  for ax, sparsity in zip(figure.axes, full_data.pruned_sparsities):
    heights = [b.get_height() for b in ax.patches]
    series = all_series[sparsity]
    expected = [
        100 * series.loc[(series["population"] == p) & (series["subset"] == s), "top1_mean"].item()
        for p in ("dense", "pruned")
        for s in ("pie", "random", "non_pie")
    ]
    np.testing.assert_allclose(heights, expected)


def test_robustness_series_match_csv(full_dir, full_data):
  table = pd.read_csv(full_dir / "robustness.csv")
  for sparsity in full_data.pruned_sparsities:
    rows = table.loc[np.isclose(table["sparsity"], sparsity)]
    severity = report.robustness_severity_series(full_data.robustness, sparsity)
    for r in severity.itertuples(index=False):
      at = rows.loc[rows["severity"] == r.severity]
      assert r.dense_top1 == pytest.approx(at["dense_top1_mean"].mean())
      assert r.pruned_top1 == pytest.approx(at["pruned_top1_mean"].mean())
      assert r.num_significant == int(at["significant_fdr"].sum())
      assert r.num_significant_uncorrected == int(at["significant"].sum())
      assert r.num_corruptions == at["corruption"].nunique()
    drop = report.robustness_drop_series(full_data.robustness, sparsity)
    assert sorted(drop["corruption"]) == sorted(rows["corruption"].unique())
    for r in drop.itertuples(index=False):
      at = rows.loc[rows["corruption"] == r.corruption]
      assert r.dense_drop == pytest.approx(at["dense_drop"].mean())
      assert r.pruned_drop == pytest.approx(at["pruned_drop"].mean())
      assert r.num_significant == int(at["significant_fdr"].sum())
      assert r.num_significant_uncorrected == int(at["significant"].sum())
    assert (np.diff(drop["extra_drop"]) <= 0).all()
    ax = report.plot_robustness_drop(drop, "t").axes[0]
    np.testing.assert_allclose(
        [b.get_width() for b in ax.patches], 100 * np.concatenate([drop["dense_drop"], drop["pruned_drop"]])
    )


# --- the HTML page ---------------------------------------------------------------------------------------------------


def test_report_is_self_contained(full_dir):
  page = (full_dir / "report.html").read_text(encoding="utf-8")
  assert not re.search(r"""\b(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
  assert not re.search(r"<link\b", page, re.I)
  assert not re.search(r"<script\b[^>]*\bsrc\s*=", page, re.I)
  assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", page, re.I)
  srcs = re.findall(r"""\bsrc\s*=\s*["']([^"']*)""", page)
  assert all(s.startswith("data:") for s in srcs)
  # Every figure is inline, and ids stay unique although matplotlib reuses them across figures.
  figure_names = sorted(p.stem for p in (full_dir / "figures").glob("*.svg"))
  assert sorted(p.stem for p in (full_dir / "figures").glob("*.png")) == figure_names
  assert page.count("<svg") == len(figure_names) >= 7
  ids = re.findall(r'\bid="([^"]+)"', page)
  assert len(ids) == len(set(ids))
  for reference in re.findall(r'href="#([^"]+)"', page):
    assert reference in ids
  for png in (full_dir / "figures").glob("*.png"):
    assert _png_pixels(png.read_bytes()).ndim == 3


def test_report_header_and_tables_show_the_summary(full_dir):
  page = (full_dir / "report.html").read_text(encoding="utf-8")
  summary = _summary(full_dir)
  for value in (
      summary["study"]["name"],
      summary["study"]["dataset"],
      summary["study"]["model"],
      summary["study"]["config_hash"],
  ):
    assert value in page
  # The design is stated (this study's levels share the dense seeds); its single-pair view pairs the models of the
  # same seed.
  assert {level.get("seed_relation") for level in summary["levels"][1:]} == {"shared", None}
  assert summary["design"] == "independent" and "<b>Design: independent, shared seeds.</b>" in page
  pairs = re.search(r"<section id='pairs'>(.*?)</section>", page, re.S).group(1)
  assert "the dense model of its seed (trained independently" in pairs
  for level in summary["levels"]:
    if level["role"] == "pruned":
      single = level["single_pair"]
      assert "num_pairs" not in level and single["num_pairs"] == level["num_models"]
      assert f"<td>{single['num_pairs']}</td><td>{single['classes_flagged_fdr_median']:g}</td>" in pairs
  for level in summary["levels"]:
    assert f"{100 * level['top1_mean']:.2f}%" in page
    if level["role"] == "pruned":
      assert f"{level['num_pies']} ({100 * level['pie_fraction']:.2f}%)" in page
  stats = _csv(full_dir, "class_stats.csv")
  top = max(l["sparsity"] for l in summary["levels"])
  hurt = stats.loc[np.isclose(stats["sparsity"], top) & stats["significant_fdr"] & (stats["normalized_change"] < 0)]
  assert len(hurt) > 0, "fixture should have significantly hurt classes"
  findings = re.search(r"<section id=\"findings\">(.*?)</section>", page, re.S).group(1)
  for name in hurt["class_name"]:
    assert f"<b>{name}</b>" in findings
  # Each level's full class table lists every class.
  for sparsity in (l["sparsity"] for l in summary["levels"] if l["role"] == "pruned"):
    key = report.level_key(sparsity)
    table = re.search(rf"<table class='data sortable' id='classes-{key}'>(.*?)</table>", page, re.S).group(1)
    assert table.count("<tr") == 1 + int(np.isclose(stats["sparsity"], sparsity).sum())


# --- what the page calls significant: q <= alpha (FDR); the uncorrected count labelled as such -----------------------


def _with_class_rows(directory, change):
  """Rewrites class_stats.csv as `change(table)` returns it (the table as written, every method's rows)."""
  path = directory / "class_stats.csv"
  table = pd.read_csv(path, dtype={"class_name": str}, keep_default_na=False, na_values=[""])
  change(table).to_csv(path, index=False)


def _findings_bullet(page, sparsity):
  label = report.level_label(sparsity)
  return re.search(rf"<li><b>{re.escape(label)} sparsity:</b>(.*?)</li>", page, re.S).group(1)


def _hurt_names(bullet):
  """The class names a findings bullet lists as significantly hurt, with the mark each carries."""
  return dict(re.findall(r"<b>([^<]+)</b></a> \(([^)]*)\)", bullet))


def test_headlines_count_the_fdr_columns_not_the_uncorrected_rule(tmp_path):
  directory = write_analysis_fixture(tmp_path / "analysis", images=False)
  top = max(report.load_analysis(directory).pruned_sparsities)
  # One more class of the top level hurt at p < alpha that BH does not keep (p = 0.01, q = 0.2), as on a real study:
  # the uncorrected and FDR counts of hurt classes then differ at that level (the 50% level differs in spared ones).
  planted = {}

  def plant(table):
    at_top = (table["method"] == "magnitude") & np.isclose(table["sparsity"], top)
    i = table.loc[at_top & ~table["significant"]].index[0]
    planted["name"] = table.at[i, "class_name"]
    for column, value in dict(normalized_change=-0.03, p_value=0.01, q_value=0.2, significant=True).items():
      table.at[i, column] = value
    table.at[i, "significant_fdr"] = False
    return table

  _with_class_rows(directory, plant)
  report.write_report(directory)
  page = (directory / "report.html").read_text(encoding="utf-8")
  stats = _csv(directory, "class_stats.csv")
  summary = _summary(directory)
  differ = 0
  for sparsity in report.load_analysis(directory).pruned_sparsities:
    rows = stats.loc[np.isclose(stats["sparsity"], sparsity)]
    counts = {
        column: (
            int((rows[column] & (rows["normalized_change"] < 0)).sum()),
            int((rows[column] & (rows["normalized_change"] > 0)).sum()),
        )
        for column in ("significant_fdr", "significant")
    }
    differ += counts["significant_fdr"] != counts["significant"]
    (hurt, spared), (hurt_raw, spared_raw) = counts["significant_fdr"], counts["significant"]
    key = report.level_key(sparsity)
    headline = re.search(rf"id='impact-{key}'><summary>(.*?)</summary>", page).group(1)
    assert headline.endswith(
        f"{hurt} of {len(rows)} classes significantly hurt and {spared} significantly spared after FDR; "
        f"uncorrected (the paper's rule): {hurt_raw} hurt, {spared_raw} spared"
    )
    # The class table marks the rows significant after FDR.
    table = re.search(rf"id='classes-{key}'>(.*?)</table>", page, re.S).group(1)
    assert table.count("<tr class='hurt'>") == hurt and table.count("<tr class='helped'>") == spared
    # The key findings list exactly the classes hurt after FDR.
    bullet = _findings_bullet(page, sparsity)
    names = rows.loc[rows["significant_fdr"] & (rows["normalized_change"] < 0), "class_name"]
    assert sorted(_hurt_names(bullet)) == sorted(names)
    # The populations table gives the FDR count first, the uncorrected one after it.
    level = next(l for l in summary["levels"] if l["role"] == "pruned" and np.isclose(l["sparsity"], sparsity))
    assert (
        f"<td>{level['num_significant_classes_fdr']}</td><td>{level['num_significant_classes']}</td><td>"
        f"{level['num_ties_dense']} / " in page
    )
  assert differ == 2, "the fixture should separate the two rules at every level"
  assert f"<b>{planted['name']}</b>" not in _findings_bullet(page, top)
  assert f"(at p &lt; α uncorrected, the paper's rule: {hurt_raw} hurt" in _findings_bullet(page, top)

  # Robustness: the headline and the marked rows of each level are the FDR ones (the fixture's 90% level has 9 rows
  # at p < alpha and 8 after FDR).
  robust = pd.read_csv(directory / "robustness.csv")
  differ = 0
  for sparsity in report.load_analysis(directory).pruned_sparsities:
    rows = robust.loc[np.isclose(robust["sparsity"], sparsity)]
    fdr, worse = rows["significant_fdr"], rows["pruned_drop"] > rows["dense_drop"]
    differ += int(fdr.sum() != rows["significant"].sum())
    key = report.level_key(sparsity)
    headline = re.search(rf"id='robustness-{key}'><summary>(.*?)</summary>", page).group(1)
    assert headline.endswith(
        f"{int(fdr.sum())} of {len(rows)} corruption × severity pairs differ significantly after FDR (pruned drops "
        f"more in {int((fdr & worse).sum())}, less in {int((fdr & ~worse).sum())}); uncorrected (the paper's rule): "
        f"{int(rows['significant'].sum())}"
    )
    table = re.search(rf"id='robustness-table-{key}'>(.*?)</table>", page, re.S).group(1)
    assert table.count("<tr class='hurt'>") == int((fdr & worse).sum())
  assert differ == 1


def test_also_in_the_control_is_the_levels_matched_control_after_fdr(tmp_path):
  directory = write_analysis_fixture(tmp_path / "analysis", images=False, robustness=False)
  data = report.load_analysis(directory)
  stats = data.class_stats
  hurt = {
      s: list(
          stats.loc[
              np.isclose(stats["sparsity"], s) & stats["significant_fdr"] & (stats["normalized_change"] < 0)
          ].sort_values("normalized_change")["class_id"]
      )
      for s in data.pruned_sparsities
  }
  low, top = data.pruned_sparsities
  shared = [c for c in hurt[top] if c in hurt[low]]
  assert shared and len(hurt[top]) >= 2, "the fixture should hurt a class at both levels and two at the top one"
  a = shared[0]
  b = next(c for c in hurt[top] if c != a)
  names = dict(zip(stats["class_id"], stats["class_name"]))
  control = data.noise_floor["control"]

  def mark(table):
    # In the replicate: class a differs after FDR (hurt); class b only at p < alpha. A sham control, the reverse.
    rows = table["method"] == control
    for cls, after_fdr in ((a, True), (b, False)):
      row = rows & (table["class_id"] == cls)
      table.loc[row, "normalized_change"] = -0.1
      table.loc[row, "significant"] = True
      table.loc[row, "significant_fdr"] = after_fdr
    sham = table.loc[rows].assign(method="sham", sparsity=0.001)
    sham["significant_fdr"] = sham["class_id"] == b
    return pd.concat([table, sham], ignore_index=True)

  _with_class_rows(directory, mark)
  explanation = "where nothing was pruned, differs from the dense population on that class in the same direction"

  # Without `floor_control` (an analysis written before it): the noise floor's control, after FDR.
  summary = _summary(directory)
  for level in summary["levels"]:
    for key in ("floor_control", "floor_note"):
      level.pop(key, None)
  (directory / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
  report.write_report(directory)
  page = (directory / "report.html").read_text(encoding="utf-8")
  for sparsity in (low, top):
    marks = _hurt_names(_findings_bullet(page, sparsity))
    assert marks[names[a]].endswith("; also in the control")
    if sparsity == top:
      assert "also in the control" not in marks[names[b]]  # p < alpha in the control, not after FDR
  # The term is explained once, under the findings, although two levels use it.
  assert page.count(explanation) == 1 and "the level's control (dense replicate)" in page

  # `floor_control` per level: the sham at the top level, none at the other.
  for level in summary["levels"]:
    if level["role"] == "pruned":
      level["floor_control"] = "sham" if np.isclose(level["sparsity"], top) else None
  (directory / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
  report.write_report(directory)
  page = (directory / "report.html").read_text(encoding="utf-8")
  marks = _hurt_names(_findings_bullet(page, top))
  assert marks[names[b]].endswith("; also in the control") and "also in the control" not in marks[names[a]]
  assert "also in the control" not in _findings_bullet(page, low)
  assert page.count(explanation) == 1 and "the level's control (sham)" in page

  # No level marked: no explanation.
  for level in summary["levels"]:
    level["floor_control"] = None
  (directory / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
  report.write_report(directory)
  page = (directory / "report.html").read_text(encoding="utf-8")
  assert "also in the control" not in page.lower().split('<section id="findings">')[1].split("</section>")[0]


def test_q_values_a_file_lacks_are_the_analysis_benjamini_hochberg_per_level(tmp_path):
  directory = write_analysis_fixture(tmp_path / "analysis", images=False)
  written = pd.read_csv(directory / "robustness.csv")
  written.drop(columns=["q_value", "significant_fdr"]).to_csv(directory / "robustness.csv", index=False)
  data = report.load_analysis(directory)
  assert data.fdr_computed == ("robustness.csv",)
  np.testing.assert_allclose(data.robustness["q_value"], written["q_value"], rtol=1e-5)  # the file has 6 digits
  np.testing.assert_array_equal(data.robustness["significant_fdr"], written["significant_fdr"])


def test_a_level_without_a_matched_control_says_why_once(tmp_path):
  """The fixture's levels share the dense seeds and the study has no sham: the analysis writes no floor for them,
  with a `floor_note`; the findings say so in each bullet and give the note once."""
  directory = write_analysis_fixture(tmp_path / "analysis", images=False, robustness=False)
  report.write_report(directory)
  page = (directory / "report.html").read_text(encoding="utf-8")
  levels = [l for l in _summary(directory)["levels"] if l["role"] == "pruned"]
  notes = {l["floor_note"] for l in levels}
  assert len(notes) == 1 and all(l["floor_control"] is None and l["pies_excess"] is None for l in levels)
  for level in levels:
    bullet = _findings_bullet(page, level["sparsity"])
    assert "not read against a noise floor (no matched control)" in bullet and "over the noise floor" not in bullet
  assert page.count(html.escape(notes.pop())) == 1
  labels = ", ".join(report.level_label(l["sparsity"]) for l in sorted(levels, key=lambda l: -l["sparsity"]))
  assert f"<b>No matched control</b> ({labels}): " in page


def test_floor_control_falls_back_to_the_noise_floor_control():
  floor = {"control": "dense_replicate"}
  assert report.load.floor_control({}, floor) == "dense_replicate"
  assert report.load.floor_control({"floor_control": "sham"}, floor) == "sham"
  assert report.load.floor_control({"floor_control": None}, floor) is None
  assert report.load.floor_control({}, None) is None


def test_controls_are_the_noise_floor_not_a_level(full_dir, full_data):
  summary = _summary(full_dir)
  control = next(l for l in summary["levels"] if l["role"] == "control")
  # The control's rows are in the files (so leaving them out of the levels is tested) but no level of the report.
  raw = pd.read_csv(full_dir / "pies.csv")
  assert (raw["method"] == control["method"]).any() and len(raw) > len(_csv(full_dir, "pies.csv"))
  assert list(full_data.levels["role"]) == ["dense"] + ["pruned"] * (len(full_data.levels) - 1)
  assert [c["method"] for c in full_data.controls] == [control["method"]]
  assert set(full_data.control_class_stats["method"]) == {control["method"]}
  page = (full_dir / "report.html").read_text(encoding="utf-8")
  row = re.search(r"<tr class='control'>(.*?)</tr>", page).group(1)
  assert f"{control['method'].replace('_', ' ')} (control)" in row
  assert f"<td>{control['num_models']}</td><td>{100 * control['top1_mean']:.2f}% ± " in row
  assert f"<td>{control['num_pies']} ({100 * control['pie_fraction']:.2f}%)</td>" in row
  findings = re.search(r"<section id=\"findings\">(.*?)</section>", page, re.S).group(1)
  floor, splits = summary["noise_floor"], summary["noise_floor"]["half_splits"]
  assert (
      f"({floor['control_models']} models) differs from the dense population on {floor['num_pies']} examples"
      in findings
  )
  assert (
      f"random splits of {splits['pool_models']} dense models into {splits['sizes'][0]} + {splits['sizes'][1]} "
      f"give {splits['num_pies_mean']:.1f} PIEs on average" in findings
  )


def test_navigation_links_exactly_the_sections_on_the_page(full_dir, minimal_dir, tmp_path):
  dense_only = write_analysis_fixture(tmp_path / "dense_only", levels=())
  report.write_report(dense_only)
  expected = {
      full_dir: [
          "findings",
          "populations",
          "overview",
          "pairs",
          "classes",
          "subgroups",
          "gallery",
          "pie-accuracy",
          "harm-sources",
          "robustness",
      ],
      minimal_dir: [
          "findings",
          "populations",
          "overview",
          "classes",
          "subgroups",
          "gallery",
          "pie-accuracy",
          "harm-sources",
      ],
      # No pruned level: no PIE accuracy to show, so no section and no link to one.
      dense_only: ["findings", "populations", "overview", "classes", "gallery"],
  }
  for directory, sections in expected.items():
    page = (directory / "report.html").read_text(encoding="utf-8")
    nav = re.findall(r"href='#([^']+)'", re.search(r"<nav>(.*?)</nav>", page).group(1))
    on_page = re.findall(r"<section id=[\"']([^\"']+)[\"']", page)
    assert nav == sections == [s for s in on_page if s != "howto"], directory
    ids = set(re.findall(r"""\bid=["']([^"']+)["']""", page))
    assert set(re.findall(r"""href=["']#([^"']+)["']""", page)) <= ids


def test_names_of_the_former_module_are_kept():
  # pie/report.py became a package; scripts and tests import these names from pie.report.
  names = (
      "SUMMARY_JSON",
      "PIES_CSV",
      "CLASS_STATS_CSV",
      "PIE_ACCURACY_CSV",
      "PIES_TFRECORD",
      "ROBUSTNESS_CSV",
      "REPORT_HTML",
      "FIGURES_DIR",
      "TRIAGE_DIR",
      "PIES_COLUMNS",
      "PIES_OPTIONAL",
      "CLASS_STATS_COLUMNS",
      "CLASS_STATS_OPTIONAL",
      "PIE_ACCURACY_COLUMNS",
      "ROBUSTNESS_COLUMNS",
      "STUDY_KEYS",
      "LEVEL_KEYS",
      "LEVEL_OPTIONAL",
      "SUBSETS",
      "SUBSET_LABELS",
      "POPULATIONS",
      "SPARSITY_TOLERANCE",
      "PNG_SIGNATURE",
      "GALLERY_TILE_PX",
      "COLOR_DENSE",
      "COLOR_PRUNED",
      "COLOR_HURT",
      "COLOR_HELPED",
      "COLOR_NEUTRAL",
      "PieImage",
      "AnalysisData",
      "load_analysis",
      "METHOD_LEVEL_KEYS",
      "read_pie_records",
      "decode_png_size",
      "level_label",
      "level_key",
      "accuracy_series",
      "significance_series",
      "floor_lines",
      "pies_series",
      "class_impact_series",
      "pie_accuracy_series",
      "robustness_severity_series",
      "robustness_drop_series",
      "plot_accuracy",
      "plot_significance",
      "plot_pies",
      "plot_class_impact",
      "plot_pie_accuracy",
      "plot_robustness_severity",
      "plot_robustness_drop",
      "inline_svg",
      "triage_image_name",
      "triage_records",
      "TRIAGE_FIELDS",
      "write_triage",
      "gallery_payload",
      "floor_findings",
      "key_findings",
      "methods_series",
      "plot_methods",
      "write_report",
  )
  assert [name for name in names if not hasattr(report, name)] == []
  assert report.PIES_COLUMNS == outputs.PIES.required_names
  assert report.read_pie_records is outputs.read_pie_records


def test_gallery_data_matches_pies_csv_and_images(full_dir, full_data):
  payload = _gallery_json((full_dir / "report.html").read_text(encoding="utf-8"))
  pies = _csv(full_dir, "pies.csv")
  assert len(payload["pies"]) == len(pies)
  by_key = {(e["level"], e["id"]): e for e in payload["pies"]}
  records = {
      (report.level_key(s), r["example_id"]): r
      for s, r in zip(
          report._canonical_sparsity(
              [r["sparsity"] for r in report.read_pie_records(full_dir / "pies.tfrecord")],
              full_data.pruned_sparsities,
              "t",
          ),
          report.read_pie_records(full_dir / "pies.tfrecord"),
      )
  }
  for row in pies.itertuples(index=False):
    entry = by_key[(report.level_key(row.sparsity), row.example_id)]
    assert (entry["y"], entry["d"], entry["p"]) == (row.label, row.dense_modal, row.pruned_modal)
    assert (entry["yn"], entry["dn"], entry["pn"]) == (row.label_name, row.dense_modal_name, row.pruned_modal_name)
    assert entry["ds"] == pytest.approx(row.dense_modal_share, abs=1e-4)
    assert entry["ps"] == pytest.approx(row.pruned_modal_share, abs=1e-4)
    assert entry["st"] == pytest.approx(row.pie_stability, abs=1e-4)
    assert entry["tie"] == row.modal_tie
    prefix = "data:image/png;base64,"
    assert entry["img"].startswith(prefix)
    shown = _png_pixels(base64.b64decode(entry["img"][len(prefix) :]))
    original = _png_pixels(records[(report.level_key(row.sparsity), row.example_id)]["image"])
    np.testing.assert_array_equal(shown, original)
    assert shown.shape == (8, 8)
  assert [l["count"] for l in payload["levels"]] == [
      int(np.isclose(pies["sparsity"], s).sum()) for s in full_data.pruned_sparsities
  ]


def test_large_images_are_shrunk_then_spread_over_levels_and_classes(full_data):
  big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 300, 3), dtype=np.uint8))
  buffer = io.BytesIO()
  big.save(buffer, format="PNG")
  image = report.PieImage(png=buffer.getvalue(), width=300, height=400, channels=3)
  data = dataclasses.replace(full_data, images={k: image for k in full_data.images})
  n = len(data.images)

  def embedded(payload):
    return [e for e in payload["pies"] if e["img"] is not None]

  def side(entry):
    return max(_png_pixels(base64.b64decode(entry["img"].split(",", 1)[1])).shape[:2])

  roomy = report.gallery_payload(data, max_image_bytes=10**9)
  assert len(embedded(roomy)) == n and {side(e) for e in embedded(roomy)} == {2 * report.GALLERY_TILE_PX}
  big_uri = len(embedded(roomy)[0]["img"])

  # Not enough room at twice the tile size: every image at the tile size.
  tight = report.gallery_payload(data, max_image_bytes=n * big_uri - 1)
  assert len(embedded(tight)) == n and {side(e) for e in embedded(tight)} == {report.GALLERY_TILE_PX}
  small_uri = len(embedded(tight)[0]["img"])

  # Room for one image per (level, class): exactly the first PIE of each group, none omitted silently.
  groups = data.pies.groupby(["sparsity", "label"])
  capped = report.gallery_payload(data, max_image_bytes=groups.ngroups * small_uri)
  chosen = sorted((e["level"], e["id"]) for e in embedded(capped))
  first = sorted((report.level_key(s), int(g.sort_values("example_id")["example_id"].iloc[0])) for (s, _), g in groups)
  assert chosen == first
  assert capped["omitted_images"] == n - groups.ngroups
  with pytest.raises(ValueError, match="max_image_bytes"):
    report.gallery_payload(data, max_image_bytes=-1)


def test_json_for_script_cannot_close_the_script_element():
  obj = {"name": "</script><script>alert(1)</script>", "x": "<!-- & -->"}
  text = report._json_for_script(obj)
  assert "<" not in text and ">" not in text
  assert json.loads(text) == obj


def test_inline_svg_prefixes_ids_and_references():
  svg = (
      '<?xml version="1.0"?>\n<svg width="100pt" height="50pt" viewBox="0 0 100 50">'
      '<defs><path id="g1" d="M0 0"/><clipPath id="c1"><rect/></clipPath></defs>'
      '<use xlink:href="#g1"/><g clip-path="url(#c1)"/></svg>'
  )
  out = report.inline_svg(svg, "fig a")
  assert out.startswith("<svg")
  assert 'id="fig-a-g1"' in out and 'xlink:href="#fig-a-g1"' in out and "url(#fig-a-c1)" in out
  assert 'width="100pt"' not in out and "max-width:133px" in out
  with pytest.raises(ValueError, match="no <svg>"):
    report.inline_svg("<html/>", "x")


# --- triage export ---------------------------------------------------------------------------------------------------


def test_triage_export_matches_pies_and_images(full_dir):
  triage = full_dir / "triage"
  pies = _csv(full_dir, "pies.csv")
  table = pd.read_csv(triage / "pies.csv", dtype={"label_name": str, "dense_modal_name": str, "pruned_modal_name": str})
  records = json.loads((triage / "pies.json").read_text())
  assert list(table.columns) == list(report.TRIAGE_FIELDS)
  assert len(table) == len(records) == len(pies)
  tf_images = report.read_pie_records(full_dir / "pies.tfrecord")
  by_key = {(round(r["sparsity"], 4), r["example_id"]): r["image"] for r in tf_images}
  for row, record, csv_row in zip(pies.itertuples(index=False), records, table.itertuples(index=False)):
    assert record["example_id"] == row.example_id == csv_row.example_id
    assert record["sparsity"] == pytest.approx(row.sparsity)
    for name in (
        "label",
        "dense_modal",
        "pruned_modal",
        "label_name",
        "dense_modal_name",
        "pruned_modal_name",
        "modal_tie",
    ):
      assert record[name] == getattr(row, name) == getattr(csv_row, name)
    for name in ("dense_modal_share", "pruned_modal_share", "pie_stability"):
      assert record[name] == pytest.approx(getattr(row, name)) == pytest.approx(getattr(csv_row, name))
    assert record["image"] == csv_row.image and not os.path.isabs(record["image"])
    written = (triage / record["image"]).read_bytes()
    assert written == by_key[(round(row.sparsity, 4), row.example_id)]
  assert len(list((triage / "images").glob("*.png"))) == len(pies)


def test_triage_removes_images_of_an_earlier_run(full_dir):
  stale = full_dir / "triage" / "images" / "s0p5_ex999999.png"
  stale.write_bytes(b"old")
  report.write_triage(full_dir)
  assert not stale.exists()
  assert len(list((full_dir / "triage" / "images").glob("*.png"))) == len(_csv(full_dir, "pies.csv"))


# --- subgroups ------------------------------------------------------------------------------------------------------


def test_subgroups_section_lists_every_slice_of_slice_stats(full_dir, full_data):
  """One table per pruned level with every row of slice_stats.csv, its figure drawing the slices with examples, and
  the class group of the planted class 3 ("open curves") hurt at 90%."""
  page = (full_dir / "report.html").read_text(encoding="utf-8")
  section = re.search(r"<section id='subgroups'>(.*?)</section>", page, re.S).group(1)
  stats = _csv(full_dir, "slice_stats.csv")
  assert set(stats["slice_kind"]) == {"feature", "intersection", "class_group"}
  for sparsity in full_data.pruned_sparsities:
    key = report.level_key(sparsity)
    rows = stats.loc[np.isclose(stats["sparsity"], sparsity)]
    assert len(rows) == 2 + 2 + 4 + 3  # ink, weight, their pairs, the digits grouping
    table = re.search(rf"<table class='data sortable' id='slices-{key}'>(.*?)</table>", section, re.S).group(1)
    assert table.count("<tr") == 1 + len(rows)
    for row in rows.itertuples(index=False):
      assert f"<td data-v='{html.escape(row.slice_value)}'>{html.escape(row.slice_value)}</td>" in table
    series = report.figures.slice_impact_series(full_data.slice_stats, sparsity)
    assert len(series) == rows["normalized_change"].notna().sum()
    assert (full_dir / "figures" / f"slice_impact_{key}.svg").exists()
  top_sparsity = max(full_data.pruned_sparsities)
  top = stats.loc[np.isclose(stats["sparsity"], top_sparsity)].set_index("slice_value")
  top_table = re.search(rf"id='slices-{report.level_key(top_sparsity)}'>(.*?)</table>", section, re.S).group(1)
  assert next(r for r in top_table.split("<tr")[1:] if ">open curves</td>" in r).startswith(" class='hurt'>")
  assert top.loc["open curves", "significant_fdr"] and top.loc["open curves", "ci_high"] < 0
  assert top.loc["loops", "normalized_change"] < 0 and top.loc["straight strokes", "normalized_change"] > 0
  assert report.figures.slice_label("intersection", "ink & weight", "heavy & top") == "ink = heavy & weight = top"
  assert report.figures.slice_label("class_group", "class_group", "loops") == "loops (class group)"
  summary = _summary(full_dir)
  assert f"fewer than {summary['slices']['min_slice_size']} examples" in section
  assert "<code>ink</code>, <code>weight</code>" in section and "3 class groups" in section


def test_no_subgroups_section_without_slices(tmp_path):
  directory = write_analysis_fixture(tmp_path / "a", images=False, robustness=False)
  (directory / "slice_stats.csv").unlink()
  page = report.write_report(directory).read_text(encoding="utf-8")
  assert "id='subgroups'" not in page and "href='#subgroups'" not in page
  assert report.load_analysis(directory).slice_stats is None
  assert not list((directory / "figures").glob("slice_impact_*"))


def test_a_bad_slice_kind_is_named(scratch_dir):
  path = scratch_dir / "slice_stats.csv"
  table = pd.read_csv(path, dtype=str, keep_default_na=False)
  table.loc[0, "slice_kind"] = "attribute"
  table.to_csv(path, index=False)
  with pytest.raises(ValueError, match="slice_stats.csv column slice_kind: 'attribute' is not one of"):
    report.load_analysis(scratch_dir)


# --- optional inputs -------------------------------------------------------------------------------------------------


def test_missing_optional_files_and_columns(minimal_dir):
  page = (minimal_dir / "report.html").read_text(encoding="utf-8")
  assert "id='gallery-noimages'" in page and "run without images" in page
  assert "<section id='robustness'>" not in page and "href='#robustness'" not in page
  # Its class_stats.csv has no q-values: the report computes them (BH per level) and says so.
  assert "Significant classes (FDR)" in page
  assert "the report computed them from the p-values of class_stats.csv" in page
  payload = _gallery_json(page)
  assert payload["has_images"] is False
  assert all(e["img"] is None and "st" not in e for e in payload["pies"])
  assert len(payload["pies"]) == len(_csv(minimal_dir, "pies.csv"))
  assert not list((minimal_dir / "figures").glob("robustness*"))
  records = json.loads((minimal_dir / "triage" / "pies.json").read_text())
  assert records and all(r["image"] is None and r["pie_stability"] is None for r in records)
  assert not list((minimal_dir / "triage" / "images").iterdir())
  table = pd.read_csv(minimal_dir / "triage" / "pies.csv")
  assert table["image"].isna().all() and table["pie_stability"].isna().all()


def test_rerun_removes_figures_it_no_longer_draws(tmp_path):
  directory = write_analysis_fixture(tmp_path / "a", images=False)
  report.write_report(directory)
  assert list((directory / "figures").glob("robustness_*.svg"))
  unrelated = directory / "figures" / "my_notes.png"
  unrelated.write_bytes(b"kept")
  (directory / "robustness.csv").unlink()
  report.write_report(directory)
  assert not list((directory / "figures").glob("robustness_*"))
  assert unrelated.exists()
  assert (directory / "figures" / "pie_accuracy.svg").exists()


def test_report_with_no_pies(tmp_path):
  directory = write_analysis_fixture(tmp_path / "a", images=False, robustness=False)
  pies = pd.read_csv(directory / "pies.csv")
  pies.iloc[0:0].to_csv(directory / "pies.csv", index=False)
  page = report.write_report(directory).read_text(encoding="utf-8")
  assert _gallery_json(page)["pies"] == []
  assert json.loads((directory / "triage" / "pies.json").read_text()) == []


# --- bad inputs and atomic output ------------------------------------------------------------------------------------


@pytest.fixture()
def scratch_dir(tmp_path):
  return write_analysis_fixture(tmp_path / "analysis", images=False, robustness=False)


def test_missing_required_file_is_named(scratch_dir):
  (scratch_dir / "class_stats.csv").unlink()
  with pytest.raises(ValueError, match="class_stats.csv is missing"):
    report.load_analysis(scratch_dir)
  with pytest.raises(ValueError, match="does not exist"):
    report.load_analysis(scratch_dir / "nope")


def test_missing_column_is_named(scratch_dir):
  pd.read_csv(scratch_dir / "pies.csv").drop(columns=["pruned_modal_share"]).to_csv(
      scratch_dir / "pies.csv", index=False
  )
  with pytest.raises(ValueError, match="pies.csv lacks column.*pruned_modal_share"):
    report.load_analysis(scratch_dir)


def test_sparsity_outside_the_summary_levels_is_rejected(scratch_dir):
  stats = pd.read_csv(scratch_dir / "class_stats.csv")
  stats.loc[_first_reported(stats), "sparsity"] = 0.7
  stats.to_csv(scratch_dir / "class_stats.csv", index=False)
  with pytest.raises(ValueError, match="class_stats.csv: sparsity 0.7 is not one of the levels"):
    report.load_analysis(scratch_dir)


def test_bad_boolean_is_rejected(scratch_dir):
  stats = pd.read_csv(scratch_dir / "class_stats.csv")
  stats["significant"] = stats["significant"].astype(str)
  stats.loc[0, "significant"] = "maybe"
  stats.to_csv(scratch_dir / "class_stats.csv", index=False)
  with pytest.raises(ValueError, match="'maybe' is not a boolean"):
    report.load_analysis(scratch_dir)


def test_noise_floor_without_the_keys_the_report_reads_is_rejected(scratch_dir):
  path = scratch_dir / "summary.json"
  summary = json.loads(path.read_text())
  del summary["noise_floor"]["half_splits"]["num_pies_high"]
  path.write_text(json.dumps(summary))
  with pytest.raises(ValueError, match="summary.json: noise_floor.half_splits lacks num_pies_high: rerun"):
    report.load_analysis(scratch_dir)


def test_tfrecord_disagreeing_with_pies_csv_is_rejected(tmp_path):
  directory = write_analysis_fixture(tmp_path / "a", robustness=False)
  pies = pd.read_csv(directory / "pies.csv")
  first = _first_reported(pies)
  pies.loc[first, "label"] = (pies.loc[first, "label"] + 1) % 10
  pies.to_csv(directory / "pies.csv", index=False)
  with pytest.raises(ValueError, match="has label=.* but pies.csv says"):
    report.load_analysis(directory)


def test_failed_run_leaves_the_previous_report_whole(scratch_dir, monkeypatch):
  first = report.write_report(scratch_dir)
  before = first.read_bytes()

  def broken(*args, **kwargs):
    raise RuntimeError("figure failed")

  monkeypatch.setattr(report.figures, "plot_pie_accuracy", broken)
  with pytest.raises(RuntimeError, match="figure failed"):
    report.write_report(scratch_dir)
  assert first.read_bytes() == before
  leftovers = [p for p in scratch_dir.rglob("*") if ".tmp" in p.name]
  assert not leftovers
