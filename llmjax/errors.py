"""Errors that carry a user mistake to the command line as one clear line.

`main` turns a `UserError` into `error: <message>` on stderr and exit code 2, with no traceback.
Everything else is a bug in llmjax and keeps its traceback.
"""


class UserError(Exception):
  """A mistake the user can fix: a bad config key or value, a missing file, a malformed row."""


class DataError(UserError):
  """A data file that cannot be read as promised; the message names the file and line."""


class CheckpointMismatchError(UserError):
  """A checkpoint whose parameters do not fit the configured model."""


class TrainingDivergedError(UserError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


class StorageError(UserError):
  """A write to disk failed (full, read-only, no permission): the message names the path and
  what survived; the command line then exits without the libraries' exit handlers, which would
  only fail on the same disk again."""
