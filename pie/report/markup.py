"""Small HTML helpers of the report: escaping, and numbers as the page shows them ("–" where there is none)."""

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
