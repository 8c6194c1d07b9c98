"""What every binary shares: quiet logs, bad input turned into one clear line and exit code 1, and the exit statuses.

The library (pie/) knows no flags: its errors name the argument they are about (`PieError.parameter`). A binary
wraps its main with `main_with_errors`, which prints the error and the flag that sets that argument (a flag of the
same name, or one given in `flag_names`).
"""

import functools
import logging as std_logging
import sys

from absl import flags
from absl import logging

from pie.errors import PieError

# Exit statuses of the binaries: bad input (a PieError) is 1; a gate that fails on good input (analysis.compare's
# --max_excess_drop / --max_top1_drop) is 3, so that a CI pipeline can tell a model refused from a broken run.
EXIT_ERROR = 1
EXIT_GATE_FAILED = 3


def quiet_logs():
  """Keeps the console for progress lines: TensorFlow's and absl's info chatter is hidden."""
  logging.set_verbosity(logging.WARNING)
  # TensorFlow's Python logger (tf.get_logger() is this logger), set without loading TensorFlow: binaries that do not
  # need it (the analysis of local files) start in a fraction of the time.
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)


def flag_for(parameter, flag_names=None):
  """The command-line spelling of the flag that sets a library argument, or None when the binary has none."""
  if parameter is None:
    return None
  name = (flag_names or {}).get(parameter, parameter)
  if name.startswith("--"):
    return name
  return f"--{name}" if name in flags.FLAGS else None


def error_line(error, flag_names=None):
  """`error: <message>`, with the flag that sets the argument the error is about."""
  flag = flag_for(getattr(error, "parameter", None), flag_names)
  return f"error: {error}" + (f" [flag {flag}]" if flag else "")


def main_with_errors(main=None, flag_names=None):
  """Wraps an absl main: a PieError prints `error_line` to stderr and exits with status EXIT_ERROR (1).

  Use as `@main_with_errors` or `@main_with_errors(flag_names={"images": "--nopie_images"})`.
  """
  if main is None:
    return functools.partial(main_with_errors, flag_names=flag_names)

  @functools.wraps(main)
  def wrapped(argv):
    quiet_logs()
    try:
      return main(argv)
    except PieError as e:
      print(error_line(e, flag_names), file=sys.stderr, flush=True)
      sys.exit(EXIT_ERROR)

  return wrapped
