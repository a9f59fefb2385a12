"""Resumable multi-stage experiments: SFT -> sample -> filter -> DPO as a list of stages.

Each stage runs in its own subdirectory of the workdir (WORKDIR/<stage name>/) and, when it
finishes, marks itself done with a small manifest, `done.json`: its config, the hash of that
config, the hashes of the files it declares as outputs, the manifest hash of the stage before
it, and the result it returned. A rerun of the pipeline

  - skips a stage whose manifest matches (same config, same upstream, outputs unchanged);
  - reruns a stage whose config changed, whose outputs were changed or removed, or whose
    upstream stage reran, and then every stage after it;
  - resumes a stage that crashed: it was started with the same config and upstream
    (`started.json`) and never finished, so its directory (e.g. a training run's checkpoints)
    is kept and the stage continues from there; a stage started under another config, or one
    that finished and must run again, starts from an empty directory.

A training loop that stops early inside a stage (SIGTERM, Ctrl-C, `train.stop_after_steps`)
stops the pipeline: the stage writes no `done.json`, `preemption.StoppedEarly` reaches the
command line (summary status "stopped", with the stage and step), and the next run resumes it.

A crash in stage 3 therefore never reruns stages 1-2. Values pass between stages in memory
(`ctx.keep`, e.g. freshly trained params) within one process, and through the stage's files
across processes (`ctx.artifact(stage, key, load)` calls `load(directory)` when the value is not
in memory). Only process 0 writes manifests; every process runs every stage.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from llmjax import distributed, runio
from llmjax.errors import UserError
from llmjax.train import preemption

DONE, STARTED = "done.json", "started.json"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One step of a pipeline.

  Attributes:
    name: the stage's subdirectory (letters, digits, '_' and '-').
    run: ctx -> a JSON-able result dict (or None); writes its files under `ctx.directory`.
    config: the JSON-able settings the stage depends on (a change reruns it).
    outputs: files or directories (relative to the stage directory) whose content the manifest
      records; a changed or missing one reruns the stage.
  """

  name: str
  run: Callable[["StageContext"], dict | None]
  config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  outputs: tuple[str, ...] = ()


class StageContext:
  """What a running stage sees: its directory, earlier results, and in-memory values."""

  def __init__(self, pipeline: "Pipeline", stage: Stage):
    self._pipeline, self.stage = pipeline, stage
    self.workdir = pipeline.workdir
    self.directory = pipeline.stage_directory(stage.name)
    self.results: dict[str, Any] = dict(pipeline.results)
    self.resumed = False  # True when a crashed run of this stage left its directory

  def path(self, *parts: str) -> str:
    """A path inside the stage's directory."""
    return os.path.join(self.directory, *parts)

  def keep(self, key: str, value: Any) -> None:
    """Holds `value` in memory for later stages of this process."""
    self._pipeline.memory.setdefault(self.stage.name, {})[key] = value

  def artifact(self, stage: str, key: str, load: Callable[[str], Any]) -> Any:
    """The value an earlier stage kept under `key`, or `load(that stage's directory)` when it
    ran in another process."""
    kept = self._pipeline.memory.get(stage, {})
    if key in kept:
      return kept[key]
    return load(self._pipeline.stage_directory(stage))


class Pipeline:
  """Runs `stages` in order under `workdir`, skipping what is done (module docstring)."""

  def __init__(self, workdir: str, stages: Sequence[Stage]):
    names = [s.name for s in stages]
    for name in names:
      if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise UserError(f"pipeline stage name {name!r}: expected letters, digits, '_' or '-'")
    if len(set(names)) != len(names):
      raise UserError(f"pipeline stage names repeat: {names}")
    self.workdir, self.stages = workdir, list(stages)
    self.memory: dict[str, dict[str, Any]] = {}
    self.results: dict[str, Any] = {}
    self.ran: list[str] = []  # stages run (not skipped) by the last `run`

  def stage_directory(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def run(self) -> dict[str, Any]:
    """Runs every stage that is not done; returns {stage name: its result}."""
    upstream, rerun_rest = "", False
    self.ran = []
    for stage in self.stages:
      directory = self.stage_directory(stage.name)
      identity = {"config_hash": _hash_json(_without_run_control(stage.config)),
                  "upstream": upstream}
      done = None if rerun_rest else _read(os.path.join(directory, DONE))
      if done is not None and _matches(done, identity) and (
          done.get("outputs") == _output_hashes(directory, stage.outputs)):
        self.results[stage.name] = done.get("result")
        upstream = _hash_json(done)
        _say(f"stage {stage.name}: done, skipped")
        continue
      rerun_rest = True
      started = _read(os.path.join(directory, STARTED))
      finished_before = os.path.exists(os.path.join(directory, DONE))
      resumed = started is not None and _matches(started, identity) and not finished_before
      if runio.is_writer():
        if not resumed and os.path.isdir(directory):
          shutil.rmtree(directory)
        os.makedirs(directory, exist_ok=True)
        runio.write_json(os.path.join(directory, STARTED), identity)
      distributed.barrier(f"llmjax_stage_{stage.name}")
      _say(f"stage {stage.name}: {'resuming' if resumed else 'running'}")
      ctx = StageContext(self, stage)
      ctx.resumed = resumed
      try:
        with preemption.inside_stage():
          result = stage.run(ctx)
      except preemption.StoppedEarly as e:  # its checkpoint is saved; it is not done
        e.stage = stage.name
        _say(f"stage {stage.name}: stopped at step {e.step}, not done; rerun the same command "
             "to resume it")
        raise
      try:
        json.dumps(runio.jsonable(result))
      except (TypeError, ValueError) as e:
        raise UserError(f"pipeline stage {stage.name} returned a result that is not JSON "
                        f"({e}); return numbers, strings, lists and dicts") from None
      manifest = {"stage": stage.name, "config": dict(stage.config), **identity,
                  "outputs": _output_hashes(directory, stage.outputs), "result": result,
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
      missing = [o for o, h in manifest["outputs"].items() if h is None]
      if missing:
        raise UserError(f"pipeline stage {stage.name} did not write its declared output "
                        f"{missing[0]!r} in {directory}")
      runio.write_json(os.path.join(directory, DONE), manifest)
      self.results[stage.name] = result
      self.ran.append(stage.name)
      upstream = _hash_json(_read_back(manifest))
    return dict(self.results)


# Settings that say how far or how visibly this invocation runs, not what a stage computes: a
# stage stopped by `train.stop_after_steps` resumes when it is rerun without it.
RUN_CONTROL_KEYS = frozenset({"stop_after_steps", "progress"})


def _without_run_control(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {k: _without_run_control(v) for k, v in value.items() if k not in RUN_CONTROL_KEYS}
  return value


def _say(message: str) -> None:
  if runio.is_writer():
    print(message, file=sys.stderr)


def _hash_json(value: Any) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _read_back(manifest: dict) -> dict:
  """The manifest as it reads back from its JSON file (what the next run hashes)."""
  return json.loads(json.dumps(runio.jsonable(manifest), sort_keys=True))


def _read(path: str) -> dict | None:
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError):
    return None  # a damaged marker: the stage is not done


def _matches(marker: dict, identity: dict) -> bool:
  return all(marker.get(k) == v for k, v in identity.items())


def _output_hashes(directory: str, outputs: Sequence[str]) -> dict[str, str | None]:
  """sha256 of each declared output file; for a directory, of its files' relative paths and
  sizes (cheap for checkpoints); None for a missing output."""
  hashes = {}
  for output in outputs:
    path = os.path.join(directory, output)
    if os.path.isfile(path):
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
      hashes[output] = digest.hexdigest()
    elif os.path.isdir(path):
      listing = sorted((os.path.relpath(os.path.join(root, name), path),
                        os.path.getsize(os.path.join(root, name)))
                       for root, _, names in os.walk(path) for name in names)
      hashes[output] = _hash_json(listing)
    else:
      hashes[output] = None
  return hashes
