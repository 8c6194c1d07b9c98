"""The one exception type that binaries turn into a clear message and a non-zero exit."""


class PieError(ValueError):
  """Bad input: the message names the file, flag or value and says what is wrong."""
