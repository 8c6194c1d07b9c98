"""Small HTML helpers of the report and compare.html: escaping, numbers as the pages show them ("–" where there is
none), and sortable table cells."""

import html
import json
import math


def esc(value):
  """Text as HTML, quotes included (safe inside attribute values)."""
  return html.escape(str(value), quote=True)


def _missing(value):
  return value is None or (isinstance(value, float) and math.isnan(value))


def pct(fraction, digits=1):
  """A fraction as a percentage: 0.1234 -> '12.3%'."""
  return "–" if _missing(fraction) else f"{100 * fraction:.{digits}f}%"


def pp(fraction, digits=1):
  """A change in fractions as signed percentage points: -0.052 -> '-5.2'."""
  return "–" if _missing(fraction) else f"{100 * fraction:+.{digits}f}"


def count(value):
  return "–" if _missing(value) else str(int(value))


def json_for_script(obj):
  """JSON safe inside <script type="application/json">: no '</' or '<!--' can end or comment the element."""
  text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
  return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def cell(value, fmt=None):
  """A cell of a sortable table (report.js sorts on data-v, the raw value; "–" shows a missing one).

  fmt: "pct" (a fraction as a percentage), "pp" (a change as signed points, 2 decimals), "f2", "p" (a p-value),
  "bool" ("yes" or empty), or None (the value as text).
  """
  if value is None or (not isinstance(value, str) and value != value):  # None or NaN
    return "<td data-v=''>–</td>"
  if fmt == "bool":
    return f"<td data-v='{int(value)}'>{'yes' if value else ''}</td>"
  if fmt == "pct":
    shown = pct(value)
  elif fmt == "pp":
    shown = pp(value, 2)
  elif fmt == "f2":
    shown = f"{value:.2f}"
  elif fmt == "p":
    shown = f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
  else:
    shown = str(value)
  sort_value = value if isinstance(value, str) else f"{float(value):.10g}"
  return f"<td data-v='{esc(sort_value)}'>{esc(shown)}</td>"
