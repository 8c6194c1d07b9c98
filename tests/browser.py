"""Headless Chromium for the pages' browser tests: Debian's /usr/bin/chromium driven by the playwright package (its
own browser download is never used).

`require_chromium()` at the top of a browser test module skips it on a developer machine without either, and fails it
under CI (CI=true), where .ci/install_debian_packages.sh must have installed Chromium. The `browser` fixture
(tests/conftest.py) is one Chromium per module; `open_page` a fresh page that records what a page must never do.
"""

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing_reason():
  """Why the browser tests cannot run here, or None."""
  if not os.path.exists(CHROMIUM):
    return f"{CHROMIUM} is missing (run .ci/install_debian_packages.sh as root)"
  try:
    import playwright.sync_api  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return "the playwright Python package is missing (pip install playwright; never `playwright install`)"
  return None


def require_chromium():
  """Skips the calling test module without a browser (fails it under CI)."""
  missing = missing_reason()
  if missing:
    if os.environ.get("CI"):
      pytest.fail(f"browser test cannot run under CI: {missing}", pytrace=False)
    pytest.skip(f"browser test skipped: {missing}", allow_module_level=True)


def launch():
  """Yields a headless Chromium (the `browser` fixture's body)."""
  require_chromium()
  from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel

  with sync_playwright() as playwright:
    instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield instance
    instance.close()


def open_page(browser, url, viewport=None):
  """(context, tab) on `url` with every network request aborted; the tab records `problems` (dialogs, page errors,
  console errors and warnings) and `requests` (every URL asked for, the page's own included)."""
  context = browser.new_context(viewport=viewport) if viewport else browser.new_context()
  context.route("http*://**", lambda route: route.abort())
  tab = context.new_page()
  tab.problems, tab.requests = [], []
  tab.on("dialog", lambda d: (tab.problems.append(f"dialog: {d.message}"), d.dismiss()))
  tab.on("pageerror", lambda e: tab.problems.append(f"page error: {e}"))
  tab.on("console", lambda m: tab.problems.append(f"console: {m.text}") if m.type in ("error", "warning") else None)
  tab.on("request", lambda r: tab.requests.append(r.url))
  tab.goto(url)
  return context, tab
