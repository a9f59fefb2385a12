"""The one training loop: everything around the step, for every experiment that trains.

It owns resume from the latest checkpoint, SIGTERM and `train.stop_after_steps`, the NaN/inf
guard that keeps the last good checkpoint, the log/eval/checkpoint cadence, metrics.jsonl and
TensorBoard, the progress bar, and the data iterator's position saved with the state. What it
drives is a `TrainProgram`: a state, a way to advance it by n steps, and an evaluation.

A program whose step needs a fresh batch each time says `max_steps_per_call = 1`; a full-batch
program (grokking's seeds) runs up to the next log/eval/checkpoint boundary in one compiled call.
"""

import dataclasses
import sys
import time
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from llmjax import checks, rundir, runio
from llmjax.errors import TrainingDivergedError, UserError
from llmjax.train import preemption
from llmjax.train.preemption import SigtermFlag
from llmjax.weights.checkpoint import Checkpointer


class TrainProgram(Protocol):
  """What the loop drives.

  Attributes:
    abstract_state: the state's jax.ShapeDtypeStructs with shardings (restore target).
    max_steps_per_call: steps one `train` call may take (1 when each step reads a new batch).
    data_iterator: a checkpointable (grain) iterator saved with the state, or None.
    replicas: None, or S when every metric has a leading replica axis (S seeds at once): the
      loop then logs one row per replica with a 'seed' field.
    flops_per_step: the model FLOPs of one step (all tokens processed, padding included) for
      MFU, or None to log no MFU.
  """

  abstract_state: Any
  max_steps_per_call: int
  data_iterator: Any
  replicas: int | None
  flops_per_step: float | None

  def init_state(self) -> Any:
    """The state at step 0."""

  def train(self, state: Any, num_steps: int) -> tuple[Any, dict[str, jax.Array]]:
    """Advances `num_steps` steps; returns the state and each metric summed over the steps."""

  def evaluate(self, state: Any, step: int) -> list[dict[str, Any]]:
    """The rows to log as 'eval' at this step (none: an empty list)."""


@dataclasses.dataclass
class LoopResult:
  state: Any
  step: int
  resumed_from_step: int
  stopped_early: bool
  train: dict[str, Any] | None  # the last logged train row (median over replicas)
  eval: list[dict[str, Any]]  # the last evaluation's rows


# Metrics logged as their latest value, not averaged over the steps since the last log.
LATEST_VALUE_METRICS = ("learning_rate",)


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


_all_finite_jit = jax.jit(_all_finite)


def run_loop(program: TrainProgram, workdir: str, train_config, resume: bool = True,
             overwrite: bool = False, eval_at_start: bool = False,
             progress_keys: Sequence[str] = ("loss",),
             on_save: Callable[[int], None] | None = None,
             on_start: Callable[[int], None] | None = None) -> LoopResult:
  """Runs (or resumes) `program` to `train_config.steps`.

  Args:
    program: the state and steps (TrainProgram).
    workdir: metrics.jsonl, tensorboard/ (process 0) and checkpoints/ (all processes) go here.
    train_config: `config.train`: steps, log_every, eval_every, checkpoint_every,
      keep_checkpoints, async_checkpoint, stop_after_steps, peak_flops_per_device, progress.
    resume: continue from the latest checkpoint in workdir/checkpoints, if any.
    overwrite: with resume=False, move an earlier run found in workdir aside (into
      workdir/replaced-<time>/) when training begins; without it such a run is refused, so two
      histories never mix.
    eval_at_start: evaluate before the first step of a fresh run (step 0).
    progress_keys: metrics shown beside the progress bar (latest train or eval value).
    on_save: called with the step after each checkpoint save (e.g. to save side files).
    on_start: called with the step training starts from (0, or the resumed step).
  Returns:
    LoopResult. SIGTERM or `stop_after_steps` saves a checkpoint and returns with
    `stopped_early`; a non-finite loss or non-finite params at a save raise
    TrainingDivergedError and keep the last good checkpoint.
  """
  cfg = train_config
  check_train_config(cfg)
  checkpointer = Checkpointer(f"{workdir}/checkpoints", cfg.keep_checkpoints,
                              cfg.async_checkpoint)
  if not resume and checkpointer.all_steps():
    earlier = checkpointer.all_steps()
    checkpointer.close()
    if not overwrite:
      raise UserError(f"{checkpointer.directory} holds checkpoints of an earlier run (steps "
                      f"{earlier}); config.resume=False would mix two histories: use a new "
                      "--workdir, or add --config.overwrite=True to move the earlier run aside")
    moved = rundir.move_aside(workdir)
    if runio.is_writer():
      print(f"moved the earlier run in {workdir} to {moved}", file=sys.stderr)
    checkpointer = Checkpointer(f"{workdir}/checkpoints", cfg.keep_checkpoints,
                                cfg.async_checkpoint)
  latest = checkpointer.latest_step() if resume else None
  if latest is not None and latest > cfg.steps:
    checkpointer.close()
    raise UserError(f"{checkpointer.directory} holds a checkpoint at step {latest}, past "
                    f"train.steps={cfg.steps}: set train.steps >= {latest} to continue that "
                    "run, or use a new --workdir")
  try:
    if latest is not None:
      state = checkpointer.restore(latest, program.abstract_state, program.data_iterator)
      if runio.is_writer():
        print(f"resuming from step {latest} ({checkpointer.directory})", file=sys.stderr)
    else:
      state = program.init_state()
  except BaseException:
    checkpointer.close()
    raise
  start = int(jax.device_get(state.step))
  if on_start is not None:
    on_start(start)
  rundir.mark_began()  # from here on the run writes its record
  writer = runio.MetricsWriter(workdir, keep_through_step=start)
  # A stage's own stop_after_steps, else the run's (the command line's train.stop_after_steps
  # reaches every stage of a pipeline).
  stop_after = cfg.stop_after_steps or preemption.run_stop_after_steps()
  stop_at = cfg.steps if not stop_after else min(cfg.steps, start + stop_after)
  peak = None
  if program.flops_per_step is not None:
    from llmjax.train.flops import peak_flops_per_device
    peak = peak_flops_per_device(cfg.peak_flops_per_device) * jax.device_count()
  result = LoopResult(state, start, start, False, None, [])
  postfix: dict[str, Any] = {}
  progress = runio.progress_bar(cfg.steps, start, cfg.progress, "train")
  last_good = latest

  def diverged(what: str, step: int) -> TrainingDivergedError:
    kept = (f"the last good checkpoint (step {last_good}) is kept in {checkpointer.directory}"
            if last_good is not None else "no good checkpoint was saved")
    return TrainingDivergedError(f"{what} at step {step}; training stopped, {kept}")

  def evaluate(step: int):
    rows = program.evaluate(state, step)
    for row in rows:
      writer.write(step, "eval", row)
    if rows:
      result.eval = rows
      postfix.update(_median_row(rows))

  failing = False
  with SigtermFlag() as sigterm:
    try:
      if eval_at_start and start == 0:
        evaluate(0)
      step, tick, tick_step = start, time.perf_counter(), start
      window, latest_metrics = None, None  # metrics summed on device since the last log
      while step < stop_at:
        n = _steps_to_boundary(step, stop_at, program.max_steps_per_call, cfg)
        state, metrics = program.train(state, n)
        window = metrics if window is None else jax.tree.map(jnp.add, window, metrics)
        latest_metrics = metrics
        step += n
        progress.update(n)
        stopping_early = sigterm.is_set() or (step == stop_at and stop_at < cfg.steps)
        log_now = step % cfg.log_every == 0 or step == stop_at
        save_now = step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping_early
        if log_now or save_now:
          host = {k: np.asarray(v, np.float64) / (step - tick_step)
                  for k, v in jax.device_get(window).items()}
          for key in LATEST_VALUE_METRICS:
            if key in host:
              host[key] = np.asarray(jax.device_get(latest_metrics[key]), np.float64) / n
          if "loss" in host and not np.all(np.isfinite(host["loss"])):
            raise diverged(f"loss is {_first_bad(host['loss'])}", step)
          if log_now:
            rows = _train_rows(host, program, time.perf_counter() - tick, step - tick_step,
                               peak)
            for row in rows:
              writer.write(step, "train", row)
            result.train = _median_row(rows)
            postfix.update(result.train)
        if step % cfg.eval_every == 0 or step == stop_at:
          evaluate(step)
        if save_now:
          if not bool(_all_finite_jit(state.params)):
            raise diverged("the parameters are not finite", step)
          checkpointer.save(step, state, program.data_iterator)
          last_good = step
          if on_save is not None:
            on_save(step)
        progress.set_postfix({k: _short(postfix[k]) for k in progress_keys if k in postfix})
        if stopping_early:
          result.stopped_early = True
          if sigterm.is_set():
            sigterm.record_stop()
            if runio.is_writer():
              print(f"stopped at step {step} on {sigterm.signal_name}; checkpoint saved in "
                    f"{checkpointer.directory}; rerun the same command to resume",
                    file=sys.stderr)
          break
        if log_now:  # restart the clock after eval and saving, which are not step time
          tick, tick_step, window = time.perf_counter(), step, None
    except BaseException:
      failing = True
      raise
    finally:
      _close_all((progress.close, writer.close, checkpointer.close), failing)
  result.state, result.step = state, step
  if result.stopped_early and preemption.in_stage():
    raise preemption.StoppedEarly(step)
  return result


def check_train_config(cfg) -> None:
  """The loop's settings, checked before anything compiles (one line naming the key)."""
  checks.positive_ints(cfg, "train", "steps", "log_every", "eval_every", "checkpoint_every",
                       "keep_checkpoints")
  if cfg.stop_after_steps is not None:
    checks.positive_ints(cfg, "train", "stop_after_steps")
  if "epochs" in cfg:
    checks.non_negative_floats(cfg, "train", "epochs")
  if cfg.peak_flops_per_device is not None:
    checks.expect(cfg.peak_flops_per_device > 0, "train.peak_flops_per_device",
                  cfg.peak_flops_per_device, "a positive number of FLOP/s")


def _close_all(closers, failing: bool) -> None:
  """Runs every closer; raises the first error unless an error is already on its way (then
  what fails in closing follows from it, and must not replace it)."""
  first = None
  for close in closers:
    try:
      close()
    except Exception as e:  # noqa: BLE001
      first = first or e
  if first is not None and not failing:
    raise first


def _steps_to_boundary(step: int, stop_at: int, max_steps: int, cfg) -> int:
  """Steps until the next log, eval or checkpoint boundary (or the end), at most max_steps."""
  n = min(max_steps, stop_at - step)
  for every in (cfg.log_every, cfg.eval_every, cfg.checkpoint_every):
    n = min(n, every - step % every)
  return n


def _train_rows(host: dict[str, np.ndarray], program: TrainProgram, elapsed: float,
                steps: int, peak: float | None) -> list[dict[str, Any]]:
  """The 'train' rows of one log: window means, tokens/s of the tokens the loss covered, MFU
  of the FLOPs the steps did."""
  rate = {}
  if "loss_tokens" in host:
    rate["tokens_per_s"] = host["loss_tokens"] * steps / max(elapsed, 1e-9)
  rate["step_time_s"] = np.asarray(elapsed / max(steps, 1))
  if peak is not None:
    rate["mfu"] = np.asarray(program.flops_per_step * steps / max(elapsed, 1e-9) / peak)
  values = {**{k: v for k, v in host.items() if k != "loss_tokens"}, **rate}
  if program.replicas is None:
    return [{k: float(v) for k, v in values.items()}]
  return [{"seed": i, **{k: float(np.broadcast_to(v, (program.replicas,))[i])
                         for k, v in values.items()}}
          for i in range(program.replicas)]


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
  keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and k != "seed"]
  return {k: float(np.median([r[k] for r in rows])) for k in keys}


def _first_bad(values) -> float:
  values = np.ravel(values)
  return float(values[~np.isfinite(values)][0])


def _short(value) -> str:
  value = float(value)
  return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"

