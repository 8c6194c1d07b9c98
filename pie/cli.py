"""What every binary shares: quiet logs and bad input turned into one clear line and exit code 1."""
import functools
import sys

from absl import logging

from pie.errors import PieError


def quiet_logs():
  """Keeps the console for progress lines: TensorFlow's and absl's info chatter is hidden."""
  logging.set_verbosity(logging.WARNING)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel("ERROR")


def main_with_errors(main):
  """Wraps an absl main: a PieError prints `error: <message>` to stderr and exits with status 1."""

  @functools.wraps(main)
  def wrapped(argv):
    quiet_logs()
    try:
      return main(argv)
    except PieError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(1)

  return wrapped
