"""compare.html in a real headless browser: it loads offline without errors, and the class view and the gallery of
changed examples (filters by candidate, class and direction; pages) show what compare_examples.csv holds.

The comparison is of arrays planted on the digits eval split (no training), written with the split's images. Drives
Debian's /usr/bin/chromium with playwright (tests/browser.py: skipped without it, failed under CI).
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pie  # noqa: F401
from pie import outputs
from tests import browser as browser_lib
from tests.conftest import digits_config

browser_lib.require_chromium()

PAGE_SIZE = 10
DIRECTIONS = ("correct_to_wrong", "wrong_to_correct", "wrong_to_wrong")


def _direction(row):
  if row["reference_correct"]:
    return DIRECTIONS[0]
  return DIRECTIONS[1] if row["candidate_correct"] else DIRECTIONS[2]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  """A reference right on 90% of the digits eval split and two candidates: `int8` with a few random flips, `pruned`
  with more, and class 8 losing most of its examples."""
  config = digits_config()
  labels = np.concatenate([b["label"].numpy() for b in pie.load_dataset(config.data).eval_batches(500)])
  rng = np.random.default_rng(0)
  n, k = len(labels), 10
  reference = np.where(rng.random(n) < 0.9, labels, (labels + 1) % k)
  int8 = np.where(rng.random(n) < 0.03, rng.integers(0, k, n), reference)
  pruned = np.where(rng.random(n) < 0.1, rng.integers(0, k, n), reference)
  pruned = np.where((labels == 8) & (rng.random(n) < 0.7), 3, pruned)
  probs = lambda top1: np.eye(k)[top1] * 4.0  # noqa: E731  (logits: the top-1 gets probability e^4 / (e^4 + 9))
  result = pie.compare(
      probs(reference),
      [probs(int8), probs(pruned)],
      config,
      names=["int8", "pruned"],
      max_excess_drop=0.05,
      bootstrap_resamples=500,
      log=lambda m: None,
  )
  out = tmp_path_factory.mktemp("compare_browser")
  result.write(str(out), page_size=PAGE_SIZE, log=lambda m: None)
  examples = pd.read_csv(out / outputs.COMPARE_EXAMPLES_CSV, dtype={"candidate": str})
  examples["direction"] = examples.apply(_direction, axis=1)
  return {"dir": out, "url": (out / outputs.COMPARE_HTML).resolve().as_uri(), "examples": examples, "result": result}


@pytest.fixture()
def page(browser, written):
  """A fresh page on compare.html, recording its problems (dialogs, errors, warnings) and every request."""
  context, tab = browser_lib.open_page(browser, written["url"], viewport={"width": 1280, "height": 900})
  tab.wait_for_selector("#flip-grid .card")
  yield tab
  context.close()


def _cards(tab):
  return tab.eval_on_selector_all(
      "#flip-grid .card",
      "cs => cs.map(c => [Number(c.dataset.candidate), Number(c.dataset.exampleId), Number(c.dataset.label), "
      "c.dataset.direction])",
  )


def _of(written, candidate):
  examples = written["examples"]
  return examples.loc[examples["candidate"] == candidate]


@pytest.mark.slow
def test_loads_offline_without_errors(page, written):
  assert page.problems == []
  assert page.requests == [written["url"]]
  assert page.title().startswith("Compression compared")
  assert "Gate failed" in page.inner_text("#verdict") and "pruned" in page.inner_text("#verdict")


@pytest.mark.slow
def test_gallery_starts_on_the_first_candidate_with_its_images(page, written):
  expected = _of(written, "int8")
  cards = _cards(page)
  assert len(cards) == min(PAGE_SIZE, len(expected)) > 0
  assert {c[0] for c in cards} == {0}
  assert {c[1] for c in cards} <= set(expected["example_id"])
  assert page.inner_text("#flip-status") == f"Showing 1–{len(cards)} of {len(expected)} changed examples"
  loaded = page.eval_on_selector_all("#flip-grid img", "is => is.map(i => i.complete && i.naturalWidth)")
  assert loaded == [8] * len(cards)


@pytest.mark.slow
def test_candidate_filter(page, written):
  page.select_option("#flip-candidate", "1")
  expected = _of(written, "pruned")
  cards = _cards(page)
  assert {c[0] for c in cards} == {1} and len(cards) == min(PAGE_SIZE, len(expected))
  assert page.inner_text("#flip-status").endswith(f"of {len(expected)} changed examples")
  page.select_option("#flip-candidate", "all")
  assert page.inner_text("#flip-status").endswith(f"of {len(written['examples'])} changed examples")


@pytest.mark.slow
def test_class_filter(page, written):
  page.select_option("#flip-candidate", "1")
  expected = _of(written, "pruned")
  assert int(expected["label"].value_counts().index[0]) == 8  # the planted harm
  page.select_option("#flip-class", "8")
  cards = _cards(page)
  mine = expected.loc[expected["label"] == 8]
  assert {c[2] for c in cards} == {8} and len(cards) == min(PAGE_SIZE, len(mine))
  assert page.inner_text("#flip-status").endswith(f"of {len(mine)} changed examples")


@pytest.mark.slow
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_direction_filter(page, written, direction):
  page.select_option("#flip-candidate", "1")
  page.select_option("#flip-direction", direction)
  expected = _of(written, "pruned")
  expected = expected.loc[expected["direction"] == direction]
  cards = _cards(page)
  assert {c[3] for c in cards} <= {direction} and len(cards) == min(PAGE_SIZE, len(expected))
  assert {c[1] for c in cards} <= set(expected["example_id"])
  status = page.inner_text("#flip-status")
  assert status.endswith(f"of {len(expected)} changed examples") if len(expected) else status.startswith("No changed")


@pytest.mark.slow
def test_a_card_shows_the_true_label_and_both_predictions(page, written):
  row = _of(written, "int8").sort_values(["label", "example_id"]).iloc[0]
  card = page.locator(f".card[data-candidate='0'][data-example-id='{int(row['example_id'])}']")
  assert card.count() == 1
  percent = f"{int(np.floor(100 * row['reference_prob'] + 0.5))}%"
  assert card.locator(".lab-true").inner_text() == str(int(row["label"]))
  assert card.locator(".lab-reference").inner_text() == f"{int(row['reference_pred'])} · {percent}"
  assert card.locator(".lab-candidate").inner_text().startswith(f"{int(row['candidate_pred'])} · ")
  assert ("right" if row["candidate_correct"] else "wrong") in card.locator(".lab-candidate").get_attribute("class")


@pytest.mark.slow
def test_paging_walks_through_every_changed_example_once(page, written):
  page.select_option("#flip-candidate", "1")
  expected = _of(written, "pruned")
  pages = -(-len(expected) // PAGE_SIZE)
  assert pages >= 2
  seen = []
  for number in range(1, pages + 1):
    assert page.inner_text("#flip-page") == f"Page {number} of {pages}"
    seen += [c[1] for c in _cards(page)]
    if number < pages:
      page.click("#flip-next")
  assert page.is_disabled("#flip-next")
  assert sorted(seen) == sorted(expected["example_id"])


@pytest.mark.slow
def test_class_view_follows_its_candidate_select(page, written):
  blocks = "#classes .cand-block"
  assert page.eval_on_selector_all(blocks, "bs => bs.map(b => b.hidden)") == [False, True]
  page.select_option("#cls-candidate", "1")
  assert page.eval_on_selector_all(blocks, "bs => bs.map(b => b.hidden)") == [True, False]
  rows = page.eval_on_selector_all("#classes-1 tbody tr", "rs => rs.map(r => r.cells[1].textContent)")
  assert len(rows) == 10 and rows[0] == "8"  # most harmed first
  assert page.locator("#classes-1 tbody tr").first.get_attribute("class") == "hurt"


@pytest.mark.slow
def test_screenshot_is_written(page, written, tmp_path):
  folder = os.environ.get("PIE_TEST_ARTIFACTS")
  artifacts = Path(folder) if folder else tmp_path
  artifacts.mkdir(parents=True, exist_ok=True)
  shot = artifacts / "compare_full.png"
  page.screenshot(path=str(shot), full_page=True)
  assert shot.stat().st_size > 20_000 and page.problems == []
  if folder:
    shutil.copy(written["dir"] / outputs.COMPARE_HTML, artifacts / "compare.html")
