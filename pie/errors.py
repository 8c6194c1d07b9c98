"""The one exception type that binaries turn into a clear message and a non-zero exit."""


class PieError(ValueError):
  """Bad input: the message names the file, parameter or value and says what is wrong.

  `parameter` names the library argument the problem is about, when there is one: the library knows no flags, and a
  binary (pie.cli) tells the user which of its flags sets that argument.
  """

  def __init__(self, message, parameter=None):
    super().__init__(message)
    self.parameter = parameter
