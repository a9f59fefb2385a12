"""The run contract's files: config.json, metrics.jsonl, summary.json, tensorboard/, plots/.

Only process 0 writes them (checkpoints are written collectively elsewhere). Whole files are
written to a temporary name and renamed, so a crash never leaves one half-written.
"""

import contextlib
import json
import math
import os
import pathlib
import sys
from typing import Any, Mapping

import jax
import numpy as np
import tqdm

from llmjax.errors import UserError


def is_writer() -> bool:
  return jax.process_index() == 0


@contextlib.contextmanager
def atomic_output(path: os.PathLike):
  """Yields a temporary path beside `path` (same suffix) and renames it onto `path` when the
  block succeeds, so readers never see a half-written file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def atomic_write_text(path: os.PathLike, text: str) -> None:
  with atomic_output(path) as tmp:
    tmp.write_text(text)


def atomic_save_npy(path: os.PathLike, array) -> None:
  """np.save, with the atomicity of `atomic_output` (np.save would append '.npy' to the
  temporary name, so it writes through an open file)."""
  with atomic_output(path) as tmp, open(tmp, "wb") as f:
    np.save(f, array)


_MUTED = {"stderr_fd": None}


def mute_stderr() -> None:
  """Sends whatever the process writes to stderr from now on (background threads' and C++
  libraries' tracebacks after a failed write) to /dev/null; `unmute_stderr` brings it back for
  the one error line. Idempotent."""
  if _MUTED["stderr_fd"] is not None:
    return
  sys.stderr.flush()
  _MUTED["stderr_fd"] = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)


def unmute_stderr() -> None:
  if _MUTED["stderr_fd"] is None:
    return
  sys.stderr.flush()
  os.dup2(_MUTED["stderr_fd"], 2)
  os.close(_MUTED["stderr_fd"])
  _MUTED["stderr_fd"] = None


def progress_bar(total: int, initial: int, enabled: bool, desc: str) -> tqdm.tqdm:
  """Progress (step, ETA, postfix metrics) on stderr, from process 0 only."""
  return tqdm.tqdm(total=total, initial=initial, file=sys.stderr, dynamic_ncols=True,
                   disable=not (is_writer() and enabled), desc=desc)


def jsonable(value: Any) -> Any:
  if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf; keep it visible rather than invalid
  if isinstance(value, Mapping):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  return value


def write_json(path: os.PathLike, payload: Mapping[str, Any]) -> None:
  """Writes `payload` as indented JSON, atomically, on process 0 only."""
  if is_writer():
    atomic_write_text(path, json.dumps(jsonable(payload), indent=2, sort_keys=True) + "\n")


def summary_writer_class():
  """tensorboardX's SummaryWriter, imported when first needed. tensorboardX imports torch, when
  it is installed, only to accept torch tensors as well as arrays (2.3 s of a run's start-up on a
  2-core host); llmjax logs plain floats, so torch is hidden from that one import unless
  something imported it already."""
  hide_torch = "torch" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX handles
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hide_torch:
      del sys.modules["torch"]
  return SummaryWriter


class MetricsWriter:
  """Appends one JSON object per event to metrics.jsonl and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: os.PathLike, keep_through_step: int = 0):
    """Opens workdir/metrics.jsonl, first dropping rows after `keep_through_step`: a run resumed
    from a checkpoint at step k re-logs what came after k, so the file never holds two
    histories."""
    self.enabled = is_writer()
    self._file = self._tb = None
    if self.enabled:
      workdir = pathlib.Path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      kept = [r for r in read_metrics(workdir) if r["step"] <= keep_through_step]
      atomic_write_text(workdir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
      self._file = open(workdir / "metrics.jsonl", "a", buffering=1)
      self._tb = summary_writer_class()(str(workdir / "tensorboard"))

  def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, **jsonable(dict(metrics))}
    self._file.write(json.dumps(row) + "\n")
    for name, value in row.items():
      if name not in ("step", "split") and isinstance(value, (int, float)):
        self._tb.add_scalar(f"{split}/{name}", value, int(step))

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      try:
        self._tb.close()
      except OSError:  # a full disk: the run's own error says so; TensorBoard is a mirror
        pass


def read_complete_jsonl(path: os.PathLike) -> list[dict[str, Any]]:
  """The rows of a JSONL file that a run appends to as it goes: a last line cut short by a
  crash or kill is dropped, and the file rewritten without it (process 0), so the run redoes
  that row. A missing file has no rows."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break
  if is_writer():
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
  return rows


def read_metrics(workdir: os.PathLike, split: str | None = None) -> list[dict[str, Any]]:
  """Reads metrics.jsonl back, optionally keeping one split. A last line cut short (what a
  crash or a full disk leaves) is dropped: the resumed run logs that step again. A damaged line
  before the last is a UserError naming it."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  lines = [(number, line) for number, line in enumerate(path.read_text().splitlines(), 1)
           if line.strip()]
  rows = []
  for i, (number, line) in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if i == len(lines) - 1:
        break  # torn by the end of the earlier run
      raise UserError(f"{path}:{number}: not a JSON line; the metrics history is damaged "
                      "(move the file away to start its history again)") from None
  return [r for r in rows if split is None or r["split"] == split]
