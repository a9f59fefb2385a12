"""The workdir as a run record that is never lost or mixed.

- `prepare(workdir)`: a workdir that is a file, lies under one, or cannot be written is one
  clear error, before anything runs.
- `WorkdirLock`: one run per workdir. Process 0 holds an exclusive `flock` on WORKDIR/.lock for
  the run's lifetime (the other processes of a multi-process run work inside it); a second run
  is refused with the holder's pid, host and start time. The kernel drops the lock when its
  process dies, so a lock file left by a killed run never blocks.
- `began()` / `mark_began()`: whether this run has written to the record (metrics, checkpoints):
  a run rejected before that leaves the workdir as it found it; a run that fails after keeps
  its config.json, which describes its checkpoints.
- `earlier_checkpoints` / `move_aside`: `config.resume=False` on a workdir that holds another
  run's checkpoints is refused, or with `config.overwrite=True` that run is moved whole (its
  config.json too) into WORKDIR/replaced-<time>/ when the new run begins training, so two
  histories never mix and a rejected run moves nothing.
"""

import errno
import fcntl
import os
import socket
import time

from llmjax import distributed, runio
from llmjax.errors import UserError

LOCK = ".lock"
_STATE = {"began": False, "previous_config": None, "given_config": None}


def prepare(workdir: str) -> None:
  """Creates `workdir` (process 0), or raises UserError naming what is in the way."""
  path = os.path.abspath(workdir)
  if os.path.isfile(path):
    raise UserError(f"workdir {workdir}: is a file; expected a directory")
  parent = path
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if parent and not os.path.isdir(parent):
    raise UserError(f"workdir {workdir}: lies under {parent}, which is a file")
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write-test-{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise UserError(f"workdir {workdir}: cannot write there ({e.strerror})") from None


class WorkdirLock:
  """Context manager: the run's exclusive hold on its workdir (process 0 only)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK)
    self._file = None

  def __enter__(self):
    holder = self._take() if runio.is_writer() else None
    # Every process of a multi-process run learns process 0's answer, so all of them stop.
    refused = distributed.broadcast_flag(holder is not None)
    if refused:
      raise UserError(f"workdir {os.path.dirname(self.path)} is in use by another run "
                      f"({holder or 'see process 0'}); wait for it to finish or use another "
                      "--workdir")
    return self

  def _take(self) -> str | None:
    """Takes the lock; returns None, or who holds it."""
    if os.path.isdir(self.path):
      raise UserError(f"{self.path}: is a directory; the run's lock is a file there (remove "
                      "the directory)")
    self._file = open(self.path, "a+")
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      self._file.seek(0)
      holder = self._file.read().strip() or "another process"
      self._file.close()
      self._file = None
      return holder
    try:  # who holds it, for the refusal of a second run; the flock is the lock itself
      self._file.seek(0)
      self._file.truncate()
      self._file.write(f"pid {os.getpid()} on {socket.gethostname()}, started "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
      self._file.flush()
    except OSError:  # a full disk: the run's first real write reports it in one line
      pass
    return None

  def __exit__(self, *exc):
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      try:
        self._file.close()
      except OSError:  # the holder line could not be flushed to a full disk; nothing is lost
        pass
      self._file = None
    return False


def mark_began() -> None:
  """Called by whatever first writes to the run record (the train loop's metrics writer)."""
  _STATE["began"] = True


def began() -> bool:
  return _STATE["began"]


def reset() -> None:
  """Forget an earlier run of this process (main calls it at the start of every run)."""
  _STATE["began"] = False
  _STATE["previous_config"] = None
  _STATE["given_config"] = None


def remember_previous_config(workdir: str, text: str | None) -> None:
  """The config.json this run replaced in `workdir`: it goes with the earlier run when that is
  moved aside."""
  _STATE["previous_config"] = (os.path.abspath(workdir), text)


def remember_given_config(workdir: str, settings: dict) -> None:
  """The config this run was given (main writes it as config.json first)."""
  _STATE["given_config"] = (os.path.abspath(workdir), settings)


def given_config(workdir: str) -> dict | None:
  """The config this run was given, when `workdir` is the run's own (else None): an
  experiment that rewrites config.json with what it resolved (a model loaded from `init`)
  keeps it there as `as_given`, which is what a later run is compared with."""
  remembered = _STATE["given_config"]
  if remembered and remembered[0] == os.path.abspath(workdir):
    return remembered[1]
  return None


def earlier_checkpoints(workdir: str) -> list[int]:
  """The checkpoint steps an earlier run left in WORKDIR/checkpoints."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def move_aside(workdir: str) -> str:
  """Moves everything of an earlier run in `workdir` (all but the lock, earlier replaced-*
  folders and this run's config.json, whose predecessor goes along) into
  WORKDIR/replaced-<time>/; returns that folder. Process 0 moves; every process waits for it."""
  stamp = time.strftime("replaced-%Y%m%d-%H%M%S")
  target, n = os.path.join(workdir, stamp), 1
  while os.path.exists(target):
    n += 1
    target = os.path.join(workdir, f"{stamp}-{n}")
  if runio.is_writer():
    os.makedirs(target)
    for name in os.listdir(workdir):
      if name in (LOCK, "config.json") or name.startswith("replaced-"):
        continue
      os.rename(os.path.join(workdir, name), os.path.join(target, name))
    remembered = _STATE["previous_config"]
    if remembered and remembered[0] == os.path.abspath(workdir) and remembered[1] is not None:
      runio.atomic_write_text(os.path.join(target, "config.json"), remembered[1])
  distributed.barrier("llmjax_move_aside")
  return target
