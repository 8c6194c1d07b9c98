"""Names from files pie did not write, checked where they come in, and the two ways they leave safely.

Class names, model names and dataset names come from TFDS metadata, a user's prediction files, study.json or JSON
edited by hand, and end up in places that execute things: HTML pages, CSV files opened in spreadsheets, file names,
terminals and CI logs. The rules, in one place so that every reader applies the same ones:

* `text_problem`: a name is non-empty text without control characters (Unicode category Cc: NUL, tab, line feed,
  carriage return, escape, DEL, the C1 controls), line or paragraph separators (U+2028, U+2029) or unpaired
  surrogates (not Unicode text: they cannot be written as UTF-8). No dataset needs them, and each breaks a place
  names go: NUL ends strings in C libraries and file systems, a line break forges lines in logs and in CSV readers
  that do not quote, an escape sequence drives the terminal that prints a gate's verdict. Everything else is kept
  exactly: quotes, `<`, `&`, `$`, `=`, `/`, `..`, right-to-left marks, any script, any length.
* `component_problem`: a name that becomes a file or folder name (a model's `name`, the models of study.json) must
  also be one component: no `/` or `\\`, not `.` or `..`, at most 255 bytes of UTF-8.
* `resolve_path`: a folder or file a user gives (--out_dir, --workdir, a gs:// prefix) is resolved once, where it
  comes in: `.` and `..` resolved, local paths made absolute.
* `spreadsheet_cell`: text cells of the CSVs meant for spreadsheets (the triage export) that a spreadsheet would
  read as a formula get a leading single quote (OWASP's advice on CSV injection); see its docstring for the rule
  and how to undo it. Tables meant for programs keep exact values.

Pure Python (no TensorFlow), so that every layer can use it.
"""

import os
import re
import unicodedata

from pie.errors import PieError

# Control characters (Cc), the line and paragraph separators and unpaired surrogates (Cs).
REFUSED_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SEPARATORS = ("/", "\\")
MAX_COMPONENT_BYTES = 255  # a file name's limit on ext4, APFS, NTFS (in UTF-16 units there) and GCS object parts
_SHOWN_CHARS = 60

# A cell whose first character (after whitespace and invisible format characters, which spreadsheets may skip) is
# one of these is read as a formula by Excel, LibreOffice or Google Sheets: OWASP's list (=, +, -, @, tab, carriage
# return, line feed) and the full-width forms that some locales' spreadsheets accept as the same operators.
FORMULA_TRIGGERS = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")
QUOTE = "'"


def shown(value, limit=_SHOWN_CHARS):
  """A value for an error message: its repr (control characters escaped, so the message stays one line), cut to
  `limit` characters, since names may be 10,000 characters long."""
  text = repr(value)
  return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(value)} characters)"


def text_problem(value):
  """What makes `value` unfit as a name (see the module docstring), or None."""
  if not isinstance(value, str):
    return f"must be a string, got {type(value).__name__} {shown(value)}"
  if not value:
    return "must not be empty"
  found = REFUSED_CHARACTERS.search(value)
  if found:
    char = found.group()
    kind = "an unpaired surrogate (not Unicode text)" if "\ud800" <= char <= "\udfff" else "a control character"
    return (
        f"holds {kind} {char!r} at position {found.start()} in {shown(value)}: names may not contain control "
        "characters, line breaks or unpaired surrogates"
    )
  return None


def component_problem(value):
  """What makes `value` unfit as one file or folder name (text rules included), or None."""
  problem = text_problem(value)
  if problem:
    return problem
  if any(sep in value for sep in _SEPARATORS):
    return f"{shown(value)} holds a path separator: a name that becomes a folder or file name must be one component"
  if value in (".", ".."):
    return f"{shown(value)} is a relative path component: a name that becomes a folder or file name cannot be one"
  if len(value.encode("utf-8")) > MAX_COMPONENT_BYTES:
    return f"{shown(value)} is longer than a file name may be ({MAX_COMPONENT_BYTES} bytes of UTF-8)"
  return None


def check_text(value, what, parameter=None):
  """`value` if it is fit as a name, else a PieError whose one line starts with `what` (a file and field, or an
  argument)."""
  problem = text_problem(value)
  if problem:
    raise PieError(f"{what} {problem}", parameter=parameter)
  return value


def check_component(value, what, parameter=None):
  """`value` if it is fit as a file or folder name, else a PieError starting with `what`."""
  problem = component_problem(value)
  if problem:
    raise PieError(f"{what} {problem}", parameter=parameter)
  return value


def resolve_path(path, parameter):
  """A folder or file a user gives (out_dir, workdir, cache_dir, ...), resolved once where it comes in.

  A local path becomes absolute with `.` and `..` resolved (lexically, as the shell's `cd` does), so that the path
  written to, the one printed, the one handed to worker processes and the commands --dry_run prints for other
  machines all name the same place from any working directory. A URL (`gs://bucket/a/../b`) keeps its scheme and
  bucket and has its `.`, `..` and empty parts resolved the same way: an object store would take `..` as a literal
  part of an object's name, and a `..` above the bucket is refused. An empty path, or one holding a control
  character (a NUL would end it in the C library below the file system), is a PieError naming `parameter`.
  """
  if isinstance(path, os.PathLike):
    path = os.fspath(path)
  if not isinstance(path, str) or not path:
    raise PieError(f"{parameter} must be a non-empty path, got {shown(path)}", parameter=parameter)
  if REFUSED_CHARACTERS.search(path):
    raise PieError(f"{parameter} {shown(path)} holds a control character: not a path", parameter=parameter)
  if "://" not in path:
    return os.path.abspath(path)
  scheme, rest = path.split("://", 1)
  bucket, _, key = rest.partition("/")
  if not scheme or bucket in ("", ".", ".."):
    raise PieError(f"{parameter} {shown(path)} is a URL without a bucket (gs://BUCKET/...)", parameter=parameter)
  parts = []
  for part in key.split("/"):
    if part == "..":
      if not parts:
        raise PieError(
            f"{parameter} {shown(path)} goes above its bucket {scheme}://{bucket} with '..'", parameter=parameter
        )
      parts.pop()
    elif part not in ("", "."):
      parts.append(part)
  return "/".join([f"{scheme}://{bucket}"] + parts)


def _first_visible(text):
  """The first character that is neither whitespace nor an invisible format character (Cf: bidi marks, zero-width
  space, byte-order mark), or "" when there is none."""
  for char in text:
    if not char.isspace() and unicodedata.category(char) != "Cf":
      return char
  return ""


def needs_quote(text):
  """Whether `spreadsheet_cell` prefixes this text."""
  return bool(text) and (text[0] in FORMULA_TRIGGERS or text[0] == QUOTE or _first_visible(text) in FORMULA_TRIGGERS)


def spreadsheet_cell(value):
  """A cell of a CSV meant for spreadsheets: text that a spreadsheet would evaluate gets a leading single quote.

  Text whose first character, or first character after leading whitespace and invisible format characters, is one
  of FORMULA_TRIGGERS (=, +, -, @, tab, carriage return, line feed and the full-width =, +, -, @) is prefixed with
  `'`, which spreadsheets show as text and do not evaluate; so is text that already starts with `'`, which makes the
  rule reversible: a program recovers the exact value by removing one leading `'` from every text cell that has
  one (`from_spreadsheet_cell`). Numbers, booleans and missing values are returned unchanged: numbers stay numbers.
  """
  if isinstance(value, str) and needs_quote(value):
    return QUOTE + value
  return value


def from_spreadsheet_cell(text):
  """The exact value of a text cell written by `spreadsheet_cell`."""
  return text[1:] if isinstance(text, str) and text.startswith(QUOTE) else text


def spreadsheet_frame(frame):
  """A DataFrame whose text cells went through `spreadsheet_cell` (numeric and boolean columns untouched)."""
  text_columns = [c for c in frame.columns if frame[c].dtype.kind not in "biufcmM"]  # object and str columns
  return frame.assign(**{c: [spreadsheet_cell(v) for v in frame[c].tolist()] for c in text_columns})
