"""The report in a real headless browser: it loads offline without errors, and the PIE gallery's filters and pages work.

Drives Debian's /usr/bin/chromium with the playwright package (tests/browser.py: skipped on a developer machine without
either, failed under CI, where .ci/install_debian_packages.sh must have installed Chromium). Screenshots go to
$PIE_TEST_ARTIFACTS (default: a pytest temporary folder).
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pie  # noqa: F401  (sets the TensorFlow environment first)
from pie import report
from tests import browser as browser_lib
from tests.report_fixture import reported_rows
from tests.report_fixture import write_analysis_fixture

browser_lib.require_chromium()

PAGE_SIZE = 10  # small, so that the fixture's levels span several gallery pages


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
  folder = os.environ.get("PIE_TEST_ARTIFACTS")
  path = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
  path.mkdir(parents=True, exist_ok=True)
  return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  directory = write_analysis_fixture(tmp_path_factory.mktemp("browser") / "analysis")
  path = report.write_report(directory, page_size=PAGE_SIZE)
  # The gallery shows the PIEs of the report's per-level view, not the control's.
  pies = reported_rows(
      pd.read_csv(directory / "pies.csv", dtype={"label_name": str, "dense_modal_name": str, "pruned_modal_name": str})
  )
  levels = sorted(pies["sparsity"].unique())
  return {"dir": directory, "url": path.resolve().as_uri(), "pies": pies, "levels": levels}


@pytest.fixture()
def page(browser, study):
  """A fresh page on the report, recording its problems (dialogs, errors, warnings) and every request."""
  # Anything that tries the network is blocked and recorded; the report must not try.
  context, tab = browser_lib.open_page(browser, study["url"], viewport={"width": 1280, "height": 900})
  tab.wait_for_selector("#gal-grid .card")
  yield tab
  context.close()


def _cards(tab):
  return tab.eval_on_selector_all(
      "#gal-grid .card", "cs => cs.map(c => [c.dataset.level, Number(c.dataset.exampleId), Number(c.dataset.label)])"
  )


def _pct(share):
  """A share as the gallery shows it: whole percent, halves rounded up (JavaScript's Math.round)."""
  return f"{int(np.floor(100 * share + 0.5))}%"


def _at_level(study, sparsity):
  return study["pies"].loc[np.isclose(study["pies"]["sparsity"], sparsity)]


@pytest.mark.slow
def test_loads_offline_without_errors(page, study):
  assert page.problems == []
  assert page.requests == [study["url"]]
  assert page.title().startswith("Pruning impact")


@pytest.mark.slow
def test_gallery_starts_on_the_highest_level(page, study):
  top = study["levels"][-1]
  expected = _at_level(study, top)
  cards = _cards(page)
  assert len(cards) == min(PAGE_SIZE, len(expected))
  assert {c[0] for c in cards} == {report.level_key(top)}
  assert page.inner_text("#gal-status") == f"Showing 1–{len(cards)} of {len(expected)} PIEs"
  loaded = page.eval_on_selector_all("#gal-grid img", "is => is.map(i => i.complete && i.naturalWidth)")
  assert loaded == [8] * len(cards)
  rendering = page.eval_on_selector("#gal-grid img", "i => getComputedStyle(i).imageRendering")
  assert rendering == "pixelated"


@pytest.mark.slow
def test_known_example_shows_its_three_labels_and_shares(page, study):
  top = study["levels"][-1]
  row = _at_level(study, top).iloc[-1]
  page.select_option("#gal-class", str(int(row["label"])))
  card = page.locator(f".card[data-level='{report.level_key(top)}'][data-example-id='{int(row['example_id'])}']")
  assert card.count() == 1
  assert card.locator(".lab-true").inner_text() == row["label_name"]
  assert card.locator(".lab-dense").inner_text() == (f"{row['dense_modal_name']} · {_pct(row['dense_modal_share'])}")
  assert card.locator(".lab-pruned").inner_text() == (f"{row['pruned_modal_name']} · {_pct(row['pruned_modal_share'])}")
  dense_ok = row["dense_modal"] == row["label"]
  assert ("right" if dense_ok else "wrong") in card.locator(".lab-dense").get_attribute("class")
  assert "wrong" in card.locator(".lab-pruned").get_attribute("class") or row["pruned_modal"] == row["label"]


@pytest.mark.slow
def test_level_filter_changes_what_is_shown(page, study):
  low = study["levels"][0]
  expected = _at_level(study, low)
  page.select_option("#gal-level", report.level_key(low))
  cards = _cards(page)
  assert {c[0] for c in cards} == {report.level_key(low)}
  assert len(cards) == min(PAGE_SIZE, len(expected))
  assert {c[1] for c in cards} <= set(expected["example_id"])
  page.select_option("#gal-level", "all")
  assert page.inner_text("#gal-status").endswith(f"of {len(study['pies'])} PIEs")


@pytest.mark.slow
def test_class_filter_shows_only_that_class(page, study):
  top = study["levels"][-1]
  at_top = _at_level(study, top)
  label = int(at_top["label"].value_counts().index[0])
  page.select_option("#gal-class", str(label))
  cards = _cards(page)
  expected = at_top.loc[at_top["label"] == label]
  assert len(cards) == min(PAGE_SIZE, len(expected)) > 0
  assert {c[2] for c in cards} == {label}
  assert page.inner_text("#gal-status").endswith(f"of {len(expected)} PIEs")


@pytest.mark.slow
def test_class_link_in_findings_opens_its_pies(page, study):
  link = page.locator("#findings a.to-gallery").first
  level, label = link.get_attribute("data-level"), int(link.get_attribute("data-class"))
  link.click()
  sparsity = next(s for s in study["levels"] if report.level_key(s) == level)
  expected = _at_level(study, sparsity)
  expected = expected.loc[expected["label"] == label]
  assert page.input_value("#gal-level") == level
  assert page.input_value("#gal-class") == str(label)
  cards = _cards(page)
  assert len(cards) == min(PAGE_SIZE, len(expected))
  assert {(c[0], c[2]) for c in cards} <= {(level, label)}
  assert page.evaluate("window.location.hash") == "#gallery"


@pytest.mark.slow
def test_paging_walks_through_every_pie_once(page, study):
  top = study["levels"][-1]
  expected = _at_level(study, top)
  pages = -(-len(expected) // PAGE_SIZE)
  assert pages >= 2, "fixture should need several pages"
  seen = []
  for number in range(1, pages + 1):
    assert page.inner_text("#gal-page") == f"Page {number} of {pages}"
    seen += [c[1] for c in _cards(page)]
    if number < pages:
      page.click("#gal-next")
  assert page.is_disabled("#gal-next")
  assert sorted(seen) == sorted(expected["example_id"])
  page.click("#gal-prev")
  assert page.inner_text("#gal-page") == f"Page {pages - 1} of {pages}"


@pytest.mark.slow
def test_class_table_sorts_on_click(page, study):
  key = report.level_key(study["levels"][-1])
  page.click(f"#impact-{key} details.table > summary")
  header = page.locator(f"#classes-{key} thead th", has_text="Class")
  header.click()
  names = page.eval_on_selector_all(f"#classes-{key} tbody tr", "rs => rs.map(r => r.cells[1].textContent)")
  assert names == sorted(names)
  header.click()
  names = page.eval_on_selector_all(f"#classes-{key} tbody tr", "rs => rs.map(r => r.cells[1].textContent)")
  assert names == sorted(names, reverse=True)


@pytest.mark.slow
def test_screenshot_is_written(page, study, artifacts):
  full = artifacts / "report_full.png"
  gallery = artifacts / "report_gallery.png"
  page.screenshot(path=str(full), full_page=True)
  page.locator("#gallery").screenshot(path=str(gallery))
  for shot in (full, gallery):
    assert shot.stat().st_size > 20_000
  assert page.problems == []
  if os.environ.get("PIE_TEST_ARTIFACTS"):
    shutil.copy(study["dir"] / "report.html", artifacts / "report.html")


@pytest.mark.slow
def test_harm_sources_section_matches_the_summary(page, study):
  """The "Where the harm comes from" section: linked from the navigation, its figure drawn, and per level the risk
  AUROC of the dense-only score that the summary holds."""
  assert page.locator("nav a[href='#harm-sources']").count() == 1
  assert page.locator("#harm-sources figure svg").count() == 1
  summary = json.loads((study["dir"] / "summary.json").read_text())
  pruned = [level for level in summary["levels"] if level["role"] == "pruned" and level.get("risk")]
  rows = page.eval_on_selector_all(
      "#risk-table tbody tr", "rs => rs.map(r => [r.cells[0].textContent, " "r.cells[1].textContent])"
  )
  shown = dict(rows)
  for level in pruned:
    auroc = level["risk"]["dense_true_prob"]["auroc"]
    assert shown[report.level_label(level["sparsity"])].startswith(f"{auroc:.2f}")


@pytest.mark.slow
def test_subgroups_section_sorts_and_filters(page, study):
  """The "Subgroups" section: linked from the navigation, open at the highest level with its figure, its table of
  every slice of slice_stats.csv sorted by a click on a header and filtered by a slice's name or value."""
  link = page.locator("nav a[href='#subgroups']")
  assert link.count() == 1
  link.click()
  assert page.evaluate("window.location.hash") == "#subgroups"
  top = study["levels"][-1]
  key = report.level_key(top)
  stats = reported_rows(pd.read_csv(study["dir"] / "slice_stats.csv", keep_default_na=False, na_values=[""]))
  rows = stats.loc[np.isclose(stats["sparsity"], top)]
  assert page.locator(f"#subgroups-{key} > figure svg").is_visible()
  table = f"#slices-{key}"
  assert page.locator(f"{table} tbody tr").count() == len(rows) > 0
  page.locator(f"{table} thead th", has_text="Examples").click()
  sizes = page.eval_on_selector_all(f"{table} tbody tr", "rs => rs.map(r => Number(r.cells[3].dataset.v))")
  assert sizes == sorted(rows["num_examples"])
  search = page.locator(f"input[data-table='slices-{key}']")

  def shown():
    return page.eval_on_selector_all(
        f"{table} tbody tr:not([hidden])", "rs => rs.map(r => [r.cells[1].textContent, r.cells[2].textContent])"
    )

  search.fill("loops")
  assert shown() == [["class_group", "loops"]]
  search.fill("ink")  # the feature's two values and its four intersections with `width`
  assert sorted(shown()) == sorted(
      map(list, rows.loc[rows["slice_name"].str.contains("ink"), ["slice_name", "slice_value"]].to_numpy())
  )
  assert len(shown()) == 6
  search.fill("")
  assert len(shown()) == len(rows)
  assert page.problems == []
