"""SIGTERM and Ctrl-C as requests to checkpoint and stop, for every training loop.

Schedulers (SLURM, Kubernetes, TPU maintenance) send SIGTERM before killing a job; a person
presses Ctrl-C (SIGINT). While a `SigtermFlag` is active either signal only sets a flag; the loop
checks it after each step (or chunk of steps), saves a checkpoint and returns, and the process
exits 0 after SIGTERM and 130 after Ctrl-C (`stopped_by`). A second Ctrl-C interrupts at once.
"""

import contextlib
import signal

_LAST_STOP = {"signal": None}
_STAGES = {"depth": 0}
_RUN = {"stop_after_steps": None}


class StoppedEarly(Exception):
  """A training loop inside a pipeline stage stopped early (SIGTERM, Ctrl-C or
  `train.stop_after_steps`) after saving its checkpoint. The stage is not done: the pipeline
  stops with it, marks nothing done, and the next run resumes the stage at `step`."""

  def __init__(self, step: int):
    super().__init__(f"stopped at step {step}")
    self.step = step
    self.stage: str | None = None  # named by the pipeline that ran the stage


@contextlib.contextmanager
def inside_stage():
  """While active, a loop that stops early raises StoppedEarly instead of returning (a stage
  would otherwise carry on with a half-trained model and be marked done)."""
  _STAGES["depth"] += 1
  try:
    yield
  finally:
    _STAGES["depth"] -= 1


def in_stage() -> bool:
  return _STAGES["depth"] > 0


def stopped_by() -> str | None:
  """'SIGTERM' or 'SIGINT' when the last loop of this process stopped on that signal."""
  return _LAST_STOP["signal"]


def reset() -> None:
  _LAST_STOP["signal"] = None


@contextlib.contextmanager
def run_stops_after(steps: int | None):
  """While active, every training loop without a `stop_after_steps` of its own stops after
  `steps` (the command line's `train.stop_after_steps`): a pipeline's earlier stages, such as
  an SFT stage trained under `sft.train`, stop at it too."""
  _RUN["stop_after_steps"] = steps
  try:
    yield
  finally:
    _RUN["stop_after_steps"] = None


def run_stop_after_steps() -> int | None:
  """The run-wide `train.stop_after_steps` (None: train to the end)."""
  return _RUN["stop_after_steps"]


class SigtermFlag:
  """Context manager: inside it, SIGTERM and the first SIGINT set `is_set()` instead of
  terminating."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}

  def is_set(self) -> bool:
    return self.signal_name is not None

  def _handler(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.signal_name == "SIGINT":
      raise KeyboardInterrupt  # a second Ctrl-C: stop now
    self.signal_name = signal.Signals(signum).name

  def record_stop(self) -> None:
    """Called by the loop when it stops on the signal (for the process's exit code)."""
    _LAST_STOP["signal"] = self.signal_name

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      self._previous[signum] = signal.signal(signum, self._handler)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False
