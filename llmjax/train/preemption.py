"""SIGTERM as a request to checkpoint and stop, for every training loop.

Schedulers (SLURM, Kubernetes, TPU maintenance) send SIGTERM before killing a job. While a
`SigtermFlag` is active the signal only sets a flag; the loop checks it after each step (or
chunk of steps), saves a checkpoint and returns, and the process exits 0.
"""

import signal


class SigtermFlag:
  """Context manager: inside it, SIGTERM sets `is_set()` instead of terminating."""

  def __init__(self):
    self._set = False
    self._previous = None

  def is_set(self) -> bool:
    return self._set

  def _handler(self, signum, frame):
    del signum, frame
    self._set = True

  def __enter__(self):
    self._previous = signal.signal(signal.SIGTERM, self._handler)
    return self

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)
    return False
