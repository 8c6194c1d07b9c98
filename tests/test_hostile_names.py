"""Hostile names: class, model and dataset names that are code, formulas or paths stay inert everywhere.

Names reach pie from files it did not write (TFDS metadata, a user's prediction files, JSON edited by hand) and leave
it in places that execute things: HTML pages, CSVs opened in spreadsheets, file names, terminals. The property, for
names hypothesis draws (HTML and script fragments, `</script>`, quotes, formula prefixes, path separators and `..`,
control characters, right-to-left marks, 10,000-character names, non-Latin scripts, arbitrary text):

* either the prediction reader refuses the metadata (pie.names' rules: no control characters, line breaks or unpaired
  surrogates, no empty name, a model `name` that is one path component; and the schema's types and lengths) with one
  line naming the file and the field, and nothing is written;
* or the analysis, the report, the triage export, compare.html (pie.compare on the prediction files) and the
  robustness outputs keep them inert: both pages load in headless Chromium with no dialog, no page error and no
  network request, and show each name as its exact text; every text cell of the spreadsheet CSV (triage/pies.csv)
  is neutralized and reads back exactly; summary.json, class_stats.csv, pies.csv, compare_classes.csv and the
  robustness tables hold the names exactly; no file is written outside the output folders.

Robustness needs a saved model in every model folder, which prediction files alone do not give: its outputs are
written by pie.robustness's own functions (robustness_table, summarize, write_outputs) from simulated per-model
predictions on image sets whose names are hostile too, and the report is rebuilt with its robustness section, as
`python -m analysis.robustness` does.

The oracles below (which names are fit, which cells a spreadsheet would evaluate) are written from Unicode
categories and OWASP's list, not from pie.names, so that a wrong rule there fails here.
"""

import dataclasses
import json
import os
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import pie
from pie import analysis
from pie import names
from pie import outputs
from pie import predictions as predictions_lib
from pie import robustness
from pie import validate
from pie.errors import PieError
from tests import browser as browser_lib
from tests import fake_study

NUM_CLASSES, NUM_EXAMPLES = 3, 36
ISSUE_NAMES = (
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(2)</script>",
    '=HYPERLINK("http://example.invalid","x")',
)
FIT_FRAGMENTS = ISSUE_NAMES + (
    "<svg/onload=alert(3)>",
    "<!--",
    "-->",
    "]]>",
    "<style>*{display:none}</style>",
    "javascript:alert(4)",
    '"',
    "'",
    "`",
    "&amp;",
    "&lt;",
    "${alert(5)}",
    "{{7*7}}",
    "'; DROP TABLE x; --",
    "+1",
    "-1",
    "@SUM(A1:A2)",
    "=1+1",
    " =1",
    "'=1",
    "\uff1d1",
    "=cmd|' /C calc'!A0",
    "%s%n",
    "../",
    "..",
    ".",
    "/",
    "\\",
    "..\\..\\x",
    "/etc/passwd",
    "C:\\x",
    "~",
    "$\\frac{a$",
    "$x^2$",
    "\\$",
    "_hidden",
    "\u202e",
    "\u200f",
    "\u200b",
    "\ufeff",
    "e\u0301",
    "ネコ",
    "кошка",
    "قطة",
    "חתול",
    "猫",
    "🐈",
    "ऋषि",
    "\U0001d49c",
    "NaN",
    "None",
    "null",
    "True",
    "1.0",
)
UNFIT_FRAGMENTS = ("", "\x00", "\t", "\n", "\r", "\r\n", "\x1b[31m", "\x7f", "\x85", "\u2028", "\u2029", "\ud800")
REFUSED_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")
# What a spreadsheet evaluates when a cell starts with it (OWASP, CSV injection; and the full-width forms).
TRIGGERS = set("=+-@\t\r\n") | {"\uff1d", "\uff0b", "\uff0d", "\uff20"}
REGISTERED = {"clean", "imagenet_a", "gaussian_noise"}  # set names robustness_table treats specially or uses below


def fit(value):
  """The oracle of a name pie keeps: non-empty text without control characters, line breaks or surrogates."""
  return (
      isinstance(value, str) and value != "" and all(unicodedata.category(c) not in REFUSED_CATEGORIES for c in value)
  )


def fit_component(value):
  """The oracle of a name that may become a file or folder name."""
  return (
      fit(value)
      and "/" not in value
      and "\\" not in value
      and value not in (".", "..")
      and len(value.encode("utf-8")) <= 255
  )


def neutralized(cell):
  """The oracle of a spreadsheet cell that no spreadsheet evaluates: empty, quoted, or its first character that is
  not whitespace or an invisible format character is no formula trigger."""
  if cell == "" or cell.startswith("'"):
    return True
  if cell[0] in TRIGGERS:
    return False
  visible = [c for c in cell if not c.isspace() and unicodedata.category(c) != "Cf"]
  return not visible or visible[0] not in TRIGGERS


_FIT_CHARS = st.characters(exclude_categories=REFUSED_CATEGORIES)
_fit_text = st.one_of(
    st.sampled_from(FIT_FRAGMENTS),
    st.lists(
        st.one_of(st.sampled_from(FIT_FRAGMENTS), st.text(_FIT_CHARS, min_size=1, max_size=3)), min_size=1, max_size=4
    ).map("".join),
    st.sampled_from(FIT_FRAGMENTS).map(lambda f: (f + "A" * 10_000)[:10_000]),  # 10,000 characters
    st.text(_FIT_CHARS, min_size=1, max_size=12),
)
FIT_TEXT = _fit_text.filter(fit)


def _longest_file_name(fragment):
  """`fragment` padded to the longest file name there is: 255 bytes of UTF-8 (a character never cut in two)."""
  return (fragment + "A" * 255).encode("utf-8")[:255].decode("utf-8", errors="ignore")


# A model's name is a file name: its longest is 255 bytes, not 10,000 characters.
FIT_COMPONENT = st.one_of(_fit_text, st.sampled_from(FIT_FRAGMENTS).map(_longest_file_name)).filter(fit_component)
# Text pie refuses: a fit name spoiled by a refused character, or a refused fragment alone.
UNFIT_TEXT = st.one_of(
    st.sampled_from(UNFIT_FRAGMENTS),
    st.tuples(FIT_TEXT, st.sampled_from(UNFIT_FRAGMENTS[1:]), FIT_TEXT).map("".join),
)
WRONG_TYPES = st.sampled_from([3, 1.5, True, ["a"], {"a": 1}])
UNFIT_COMPONENT = st.one_of(
    UNFIT_TEXT,
    st.sampled_from(["..", ".", "../x", "a/b", "a\\b", "/etc/passwd", "..\\..\\x", "x" * 256, "é" * 128]),
    FIT_TEXT.map(lambda t: t + "/..").filter(lambda t: not fit_component(t)),
)
# The metadata fields a spoiled example breaks (one at a time), and the candidate names compare.html shows.
SPOILS = ("class_name", "class_names_length", "dataset", "model", "config_name", "config_model_name", "name")


@dataclasses.dataclass
class Names:
  """The names of one example and, when `spoil` is set, the one field that breaks the rules (with its value)."""

  class_names: list
  dataset: str
  model: str
  config_name: str
  name: str
  candidates: list
  corruption: str
  spoil: str | None = None
  bad_value: object = None


@st.composite
def hostile_names(draw):
  values = Names(
      class_names=draw(st.lists(FIT_TEXT, min_size=NUM_CLASSES, max_size=NUM_CLASSES), label="class names"),
      dataset=draw(FIT_TEXT, label="dataset"),
      model=draw(FIT_TEXT, label="model"),
      config_name=draw(FIT_TEXT, label="config name"),
      name=draw(FIT_COMPONENT, label="model name"),
      candidates=draw(st.lists(FIT_TEXT, min_size=2, max_size=2, unique=True), label="candidate names"),
      corruption=draw(FIT_TEXT.filter(lambda t: t not in REGISTERED), label="set name"),
  )
  # Half of the examples spoil nothing, so that most reach the pages; the reader's refusals have their own test.
  spoil = draw(st.sampled_from((None,) * (len(SPOILS) + 1) + SPOILS + ("candidate",)), label="spoiled field")
  if spoil == "class_names_length":
    values.bad_value = draw(st.integers(0, NUM_CLASSES + 2).filter(lambda n: n != NUM_CLASSES), label="length")
  elif spoil == "name":
    values.bad_value = draw(st.one_of(UNFIT_COMPONENT, WRONG_TYPES), label="bad model name")
  elif spoil == "candidate":
    values.bad_value = draw(UNFIT_TEXT, label="bad candidate name")
  elif spoil is not None:
    values.bad_value = draw(st.one_of(UNFIT_TEXT, WRONG_TYPES), label="bad value")
  values.spoil = spoil
  return values


def _metadata_overrides(values):
  """The metadata of every model of the example's study, with its spoiled field."""
  config = fake_study.fake_metadata(0.0, 0, NUM_CLASSES, NUM_EXAMPLES)["config"]
  config = dict(config, name=values.config_name, model={"name": values.model})
  overrides = {
      "class_names": list(values.class_names),
      "dataset": values.dataset,
      "model": values.model,
      "name": values.name,
      "config": config,
  }
  bad = values.bad_value
  if values.spoil == "class_name":
    overrides["class_names"][1] = bad
  elif values.spoil == "class_names_length":
    overrides["class_names"] = (list(values.class_names) * 2)[:bad]
  elif values.spoil in ("dataset", "model", "name"):
    overrides[values.spoil] = bad
  elif values.spoil == "config_name":
    config["name"] = bad
  elif values.spoil == "config_model_name":
    config["model"] = {"name": bad}
  return overrides


# The field each spoil breaks, as the reader's message names it.
_FIELD_IN_MESSAGE = {
    "class_name": "class_names[1]",
    "class_names_length": "class_names",
    "dataset": "dataset",
    "model": "model",
    "config_name": "config.name",
    "config_model_name": "config.model.name",
    "name": "name",
    "candidate": "names[",
}


def _write_study(study_dir, overrides, seed=0):
  """Dense and 50%-pruned populations of two models each (more noise when pruned), every export with `overrides`."""
  rng = np.random.default_rng(seed)
  labels = np.arange(NUM_EXAMPLES) % NUM_CLASSES
  paths = []
  for sparsity in (0.0, 0.5):
    for model_seed in range(2):
      noise = rng.random(NUM_EXAMPLES) < (0.15 if sparsity == 0 else 0.5)
      top1 = np.where(noise, rng.integers(0, NUM_CLASSES, NUM_EXAMPLES), labels)
      paths.append(fake_study.write_model(str(study_dir), sparsity, model_seed, top1, labels, NUM_CLASSES, **overrides))
  return labels, paths


def _files(root):
  return {p for p in root.rglob("*") if p.is_file()}


def _quiet(_):
  pass


def _one_line_naming(error, field, paths):
  message = str(error)
  assert "\n" not in message and "\r" not in message, message
  assert field in message, message
  assert any(predictions_lib.metadata_path(p) in message for p in paths) or field == "names[", message


def _read_text_csv(path):
  """A CSV as text, exactly: no value is turned into NaN ("NA", "None" and "null" are names)."""
  return pd.read_csv(path, dtype=str, keep_default_na=False)


def _robustness_outputs(out_dir, prediction_files, set_name, seed=0):
  """robustness.csv, robustness_models.csv and robustness_summary.json from simulated predictions on two image sets
  (the hostile `set_name` and a registered corruption) at two severities, written by pie.robustness."""
  study = pie.load_study(prediction_files=prediction_files, log=_quiet)
  rng = np.random.default_rng(seed)
  results = []
  for corruption in (set_name, "gaussian_noise"):
    for severity in (1, 3):
      predictions = {}
      for sparsity, models in study.levels.items():
        top1 = np.stack([m.top1 for m in models]).astype(np.int64)
        noise = rng.random(top1.shape) < 0.1 * severity * (1 + sparsity)
        predictions[sparsity] = np.where(noise, rng.integers(0, NUM_CLASSES, top1.shape), top1)
      results.append(robustness.SetResult(corruption, severity, study.labels, predictions))
  clean_top1 = {s: np.array([np.mean(m.top1 == study.labels) for m in ms]) for s, ms in study.levels.items()}
  table = robustness.robustness_table(results, clean_top1)
  summary = robustness.summarize(study, results, table, clean_top1, 0.05, {"source": "simulated"})
  robustness.write_outputs(out_dir, study, results, table, summary)


def _check_analysis_files(out, values):
  summary = json.loads((out / outputs.SUMMARY_JSON).read_text(encoding="utf-8"))
  study = summary["study"]
  assert study["class_names"] == values.class_names
  assert (study["dataset"], study["model"], study["name"]) == (values.dataset, values.model, values.config_name)
  assert all(set(level["models"]) == {values.name} for level in summary["levels"])
  stats = _read_text_csv(out / outputs.CLASS_STATS_CSV)
  assert [values.class_names[int(i)] for i in stats["class_id"]] == stats["class_name"].tolist()
  pies = _read_text_csv(out / outputs.PIES_CSV)
  for column, ids in (
      ("label_name", "label"),
      ("dense_modal_name", "dense_modal"),
      ("pruned_modal_name", "pruned_modal"),
  ):
    assert pies[column].tolist() == [values.class_names[int(i)] for i in pies[ids]]
  # The triage export: the JSON exact, the CSV neutralized, its numbers numbers, and one quote away from exact.
  records = json.loads((out / outputs.TRIAGE_DIR / outputs.TRIAGE_JSON).read_text(encoding="utf-8"))
  table = _read_text_csv(out / outputs.TRIAGE_DIR / outputs.TRIAGE_CSV)
  assert len(records) == len(table) == len(pies) > 0
  for record, (_, row) in zip(records, table.iterrows()):
    for field in ("label_name", "dense_modal_name", "pruned_modal_name"):
      assert record[field] == values.class_names[record[field.replace("_name", "")]]
      assert neutralized(row[field]), row[field]
      assert (row[field][1:] if row[field].startswith("'") else row[field]) == record[field]
    assert int(row["example_id"]) == record["example_id"] and float(row["sparsity"]) == record["sparsity"]
    assert float(row["dense_modal_share"]) == record["dense_modal_share"]
    assert (out / outputs.TRIAGE_DIR / row["image"]).resolve().parent == (out / outputs.TRIAGE_DIR / "images").resolve()
  models = _read_text_csv(out / outputs.ROBUSTNESS_MODELS_CSV)
  assert set(models["model"]) == {values.name}
  assert set(_read_text_csv(out / outputs.ROBUSTNESS_CSV)["corruption"]) == {values.corruption, "gaussian_noise"}


def _check_compare_files(directory, values):
  classes = _read_text_csv(directory / outputs.COMPARE_CLASSES_CSV)
  assert [values.class_names[int(i)] for i in classes["class_id"]] == classes["class_name"].tolist()
  assert list(dict.fromkeys(classes["candidate"])) == values.candidates
  summary = json.loads((directory / outputs.COMPARE_SUMMARY_JSON).read_text(encoding="utf-8"))
  assert summary["dataset"]["class_names"] == values.class_names
  assert [c["name"] for c in summary["candidates"]] == values.candidates


def _open(browser, path):
  return browser_lib.open_page(browser, path.resolve().as_uri())


def _texts(tab, selector, script="e => e.textContent"):
  return tab.eval_on_selector_all(selector, f"es => es.map({script})")


def _check_report_page(browser, out, values):
  context, tab = _open(browser, out / outputs.REPORT_HTML)
  try:
    tab.wait_for_selector("#gal-grid .card")
    assert _texts(tab, "header .meta b") == [values.config_name, values.dataset, values.model]
    options = tab.eval_on_selector_all("#gal-class option", "os => os.map(o => [o.value, o.textContent])")
    shown = [(int(value), text) for value, text in options if value != "all"]
    assert shown and all(text.startswith(values.class_names[y] + " (") for y, text in shown), shown
    for table in tab.eval_on_selector_all("table[id^='classes-']", "ts => ts.map(t => t.id)"):
      assert sorted(_texts(tab, f"#{table} tbody tr", "r => r.cells[1].textContent")) == sorted(values.class_names)
    labels = _texts(tab, "#gal-grid .card .lab-true")
    assert labels and set(labels) <= set(values.class_names)
    corruptions = _texts(tab, "#robustness table.sortable tbody tr", "r => r.cells[0].textContent")
    assert set(corruptions) == {values.corruption, "gaussian_noise"}
    tab.select_option("#gal-level", "all")  # every card rendered once
    assert tab.problems == [] and tab.requests == [(out / outputs.REPORT_HTML).resolve().as_uri()]
  finally:
    context.close()


def _check_compare_page(browser, directory, values):
  context, tab = _open(browser, directory / outputs.COMPARE_HTML)
  try:
    tab.wait_for_selector("#flip-grid .card")
    assert _texts(tab, "#summary-table tr[data-candidate] td:first-child b") == values.candidates
    assert _texts(tab, "#cls-candidate option") == values.candidates
    for table in tab.eval_on_selector_all("table[id^='classes-']", "ts => ts.map(t => t.id)"):
      assert sorted(_texts(tab, f"#{table} tbody tr", "r => r.cells[1].textContent")) == sorted(values.class_names)
    options = tab.eval_on_selector_all("#flip-class option", "os => os.map(o => [o.value, o.textContent])")
    shown = [(int(value), text) for value, text in options if value != "all"]
    assert shown and all(text.startswith(values.class_names[y] + " (") for y, text in shown), shown
    assert tab.problems == [] and tab.requests == [(directory / outputs.COMPARE_HTML).resolve().as_uri()]
  finally:
    context.close()


@pytest.mark.slow
def test_the_detector_sees_an_injection(browser, tmp_path):
  """The harness would catch an unescaped name: the same CSP as the pages, a name written raw, a dialog recorded."""
  page = tmp_path / "raw.html"
  csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
  page.write_text(f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\"><p>{ISSUE_NAMES[0]}</p>")
  context, tab = _open(browser, page)
  tab.wait_for_timeout(300)
  context.close()
  assert any(p.startswith("dialog: 1") for p in tab.problems), tab.problems


HOSTILE = settings(
    max_examples=int(os.environ.get("PIE_HOSTILE_EXAMPLES", "10")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@HOSTILE
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # drawn as a box: a chart, not a name, is at stake
@given(values=hostile_names())
@example(
    values=Names(
        class_names=list(ISSUE_NAMES),
        dataset="</title><script>alert(6)</script>",
        model='=HYPERLINK("http://example.invalid","m")',
        config_name="<!-- $\\frac{a$ ../../etc",
        name="sparsity0_seed0 \u202eevil",
        candidates=["-2+3", "@cmd"],
        corruption="<b onmouseover=alert(7)>fog</b>",
    )
)
@pytest.mark.slow
def test_hostile_names_stay_inert_everywhere(browser, values):
  event(f"spoiled: {values.spoil}")
  with tempfile.TemporaryDirectory(prefix="pie-hostile-") as tmp:
    tmp = Path(tmp).resolve()
    # Three levels deep, so that a `..` or two in a name that became a path would land inside the watched tree.
    root = tmp / "a" / "b" / "c"
    study_dir, out, compared = root / "study", root / "out", root / "compare"
    labels, paths = _write_study(study_dir, _metadata_overrides(values))
    before = _files(tmp)
    metadata_ok = values.spoil in (None, "candidate")
    # Output folders given relative to the working directory and with `..` in them: resolved once, where they come in.
    out_arg = os.path.relpath(study_dir / ".." / "out")
    compared_arg = os.path.relpath(root / "x" / ".." / "compare")
    candidates = list(values.candidates)
    if values.spoil == "candidate":
      candidates[1] = values.bad_value
    images = {int(i): np.full((8, 8, 1), 40 * (i % 6), np.uint8) for i in range(NUM_EXAMPLES)}

    def analyse():
      return analysis.run(
          predictions=paths, out_dir=out_arg, bootstrap_resamples=10, noise_floor_splits=10, seed=0, log=_quiet
      )

    def compare():
      result = pie.compare(
          paths[0],
          paths[2:],
          labels=labels,
          class_names=values.class_names,
          names=candidates,
          bootstrap_resamples=100,
          log=_quiet,
      )
      return result.write(compared_arg, images=images, page_size=12, log=_quiet)

    if not metadata_ok:
      with pytest.raises(PieError) as error:
        analyse()
      _one_line_naming(error.value, _FIELD_IN_MESSAGE[values.spoil], paths)
    if values.spoil is not None:
      with pytest.raises(PieError) as error:
        compare()
      _one_line_naming(error.value, _FIELD_IN_MESSAGE[values.spoil], paths)
      assert not compared.exists()
    else:
      assert compare() == str(compared.resolve())
      _check_compare_files(compared, values)
      _check_compare_page(browser, compared, values)
    if metadata_ok:
      written, _ = analyse()
      assert written == str(out.resolve())
      _robustness_outputs(str(out), paths, values.corruption)
      pie.write_report(str(out))  # as analysis.robustness does when the analysis has run in its folder
      _check_analysis_files(out, values)
      _check_report_page(browser, out, values)
    else:
      assert not out.exists()
    new = _files(tmp) - before
    outside = [p for p in new if not (p.is_relative_to(out.resolve()) or p.is_relative_to(compared.resolve()))]
    assert outside == []


# --- the rules, one by one ------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(FIT_TEXT, UNFIT_TEXT, st.text()))
def test_spreadsheet_cells_are_neutralized_and_reversible(text):
  cell = names.spreadsheet_cell(text)
  assert neutralized(cell)
  assert names.from_spreadsheet_cell(cell) == text
  assert cell == text or cell == "'" + text


def test_spreadsheet_cells_keep_numbers_and_plain_text():
  frame = pd.DataFrame(
      {"n": [-1, 2], "x": [-0.5, float("nan")], "b": [True, False], "t": ["-1", "plain"], "e": [None, "=1"]}
  )
  out = names.spreadsheet_frame(frame)
  assert out["n"].tolist() == [-1, 2] and out["x"].iloc[0] == -0.5 and out["b"].tolist() == [True, False]
  assert out["t"].tolist() == ["'-1", "plain"]
  assert out["e"].iloc[1] == "'=1" and pd.isna(out["e"].iloc[0])
  assert names.spreadsheet_cell("a=1") == "a=1" and names.spreadsheet_cell(" \u200f=1") == "' \u200f=1"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.one_of(FIT_TEXT, UNFIT_TEXT, UNFIT_COMPONENT, WRONG_TYPES, st.text()))
def test_the_rules_match_the_oracles(value):
  assert (names.text_problem(value) is None) == fit(value)
  assert (names.component_problem(value) is None) == fit_component(value)
  for problem in (names.text_problem(value), names.component_problem(value)):
    assert problem is None or ("\n" not in problem and len(problem) < 400)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SPOILS), st.data())
def test_the_reader_refuses_metadata_outside_the_schema_with_one_line(field, data):
  """Every spoiled field of one file: read_predictions raises one line that names the file and the field."""
  values = data.draw(hostile_names().filter(lambda v: v.spoil is None), label="names")
  if field == "class_names_length":
    values.bad_value = data.draw(st.integers(0, 6).filter(lambda n: n != NUM_CLASSES), label="length")
  elif field == "name":
    values.bad_value = data.draw(st.one_of(UNFIT_COMPONENT, WRONG_TYPES), label="value")
  else:
    values.bad_value = data.draw(st.one_of(UNFIT_TEXT, WRONG_TYPES), label="value")
  values.spoil = field
  with tempfile.TemporaryDirectory(prefix="pie-hostile-") as tmp:
    path = fake_study.write_model(
        tmp, 0.0, 0, np.zeros(4, int), np.zeros(4, int), NUM_CLASSES, **_metadata_overrides(values)
    )
    with pytest.raises(PieError) as error:
      predictions_lib.read_predictions(path)
    _one_line_naming(error.value, _FIELD_IN_MESSAGE[field], [path])


def test_a_study_file_naming_a_model_outside_the_study_is_refused(tmp_path):
  """study.json's model names become folders: one with `..` or a separator is a problem naming the file."""
  fake_study.write_study(str(tmp_path), levels=(0.0, 0.5), seeds=2)
  for bad in ("../../etc", "a/b", "..", "x\x00"):
    (tmp_path / "study.json").write_text(json.dumps({"models": ["sparsity0_seed0", bad], "config_hash": None}))
    report = validate.validate_study(str(tmp_path))
    problems = [p for p in report.problems if "study.json" in p]
    assert len(problems) == 1 and "models[1]" in problems[0] and "\n" not in problems[0], report.problems
    assert report.expected is None
    with pytest.raises(PieError, match="study.json: models\\[1\\]"):
      validate.require_valid(str(tmp_path), log=_quiet)


def test_compare_refuses_tfds_style_class_names_with_control_characters():
  with pytest.raises(PieError, match=r"class_names\[1\] holds a control character") as error:
    pie.compare(np.array([0, 1]), [np.array([0, 0])], labels=np.array([0, 1]), class_names=["a", "b\x1b[2J"])
  assert error.value.parameter == "class_names"


@pytest.mark.parametrize(
    "given, expected",
    [
        ("gs://bucket/a/../b/./c/", "gs://bucket/b/c"),
        ("gs://bucket", "gs://bucket"),
        ("gs://bucket//x//y", "gs://bucket/x/y"),
    ],
)
def test_urls_are_resolved_once(given, expected):
  assert names.resolve_path(given, "out_dir") == expected


def test_local_paths_are_resolved_once(tmp_path):
  relative = os.path.relpath(tmp_path / "a" / ".." / "b")
  assert names.resolve_path(relative, "out_dir") == str(tmp_path / "b")
  assert names.resolve_path(tmp_path / "." / "c", "out_dir") == str(tmp_path / "c")


@pytest.mark.parametrize("bad", ["", "gs://bucket/../other", "gs://../x", "gs:///x", "out\x00dir", "a\nb", None, 3])
def test_bad_paths_are_refused_naming_the_argument(bad):
  with pytest.raises(PieError) as error:
    names.resolve_path(bad, "out_dir")
  assert error.value.parameter == "out_dir" and str(error.value).startswith("out_dir ") and "\n" not in str(error.value)


def test_dry_run_commands_name_the_study_from_anywhere(tmp_path):
  """The commands --dry_run prints run on other machines, from other folders: the study folder in them is absolute."""
  from pie import population  # pylint: disable=import-outside-toplevel
  from tests.conftest import digits_config  # pylint: disable=import-outside-toplevel

  config = digits_config(**{"sparsity_levels": (0.0,), "num_seeds": 2, "controls": ()})
  relative = os.path.relpath(tmp_path / "x" / ".." / "study")
  commands = population.dry_run_commands(config, relative, ["--config=configs/digits.py"])
  assert commands and all(f"--workdir={tmp_path / 'study'}/" in c for c in commands), commands


def test_figure_labels_are_drawn_literally():
  """Mathtext would raise on `$\\frac{$`; a 10,000-character name is cut; control characters are replaced."""
  from pie.report import figures  # pylint: disable=import-outside-toplevel

  assert figures.plain_text("$\\frac{a$") == "\\$\\frac{a\\$"
  assert len(figures.plain_text("A" * 10_000)) == figures.MAX_LABEL_CHARS
  assert figures.plain_text("a\x00b") == "a\ufffdb"
  assert figures.plain_text("_x", legend=True) == "\u200b_x"
  series = pd.DataFrame(
      {
          "class_name": ["$\\frac{a$", "A" * 10_000, "\u202eabc"],
          "recall_change": [-0.1, 0.0, 0.1],
          "normalized_change": [-0.05, 0.0, 0.05],
          "significant": [True, False, False],
      }
  )
  svg = figures.encode(figures.plot_class_impact(series, "$x^2$ title"), "svg").decode("utf-8")
  assert svg.count("<svg") == 1
