"""Resumable multi-stage pipelines: skipping, rerunning after a change, resuming after a kill,
values passed in memory or through files."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO
from llmjax.errors import UserError
from llmjax.pipeline import Pipeline, Stage


def counting_stages(log: list, configs=({}, {}, {})):
  """Three stages that append their name to `log`; each writes out.txt from the one before."""
  def make(name, previous):
    def run(ctx):
      log.append(name)
      before = "" if previous is None else pathlib.Path(
          ctx.workdir, previous, "out.txt").read_text()
      pathlib.Path(ctx.path("out.txt")).write_text(before + name)
      ctx.keep("text", before + name)
      return {"length": len(before) + len(name)}
    return run
  names = ["first", "second", "third"]
  return [Stage(n, make(n, names[i - 1] if i else None), config, outputs=("out.txt",))
          for i, (n, config) in enumerate(zip(names, configs))]


def test_done_stages_are_skipped_and_a_change_reruns_the_rest(tmp_path):
  log = []
  results = Pipeline(str(tmp_path), counting_stages(log)).run()
  assert log == ["first", "second", "third"]
  assert results["third"] == {"length": len("firstsecondthird")}
  assert Pipeline(str(tmp_path), counting_stages(log)).run() == results
  assert log == ["first", "second", "third"]  # nothing reran
  changed = Pipeline(str(tmp_path), counting_stages(log, ({}, {"lr": 2}, {})))
  changed.run()
  assert log[3:] == ["second", "third"] and changed.ran == ["second", "third"]
  (tmp_path / "third" / "out.txt").write_text("edited by hand")
  Pipeline(str(tmp_path), counting_stages(log, ({}, {"lr": 2}, {}))).run()
  assert log[5:] == ["third"]  # a changed output reruns its stage only
  manifest = json.loads((tmp_path / "second" / "done.json").read_text())
  assert manifest["config"] == {"lr": 2} and set(manifest["outputs"]) == {"out.txt"}


def test_a_stage_that_writes_no_declared_output_is_not_done(tmp_path):
  stage = Stage("lazy", lambda ctx: None, outputs=("missing.jsonl",))
  with pytest.raises(UserError, match="lazy did not write its declared output 'missing.jsonl'"):
    Pipeline(str(tmp_path), [stage]).run()
  assert not (tmp_path / "lazy" / "done.json").exists()
  with pytest.raises(UserError, match="stage names repeat"):
    Pipeline(str(tmp_path), [stage, stage])


KILLED_IN_STAGE_3 = """
import os, pathlib, signal, sys
from llmjax.pipeline import Pipeline, Stage
workdir = sys.argv[1]
calls = pathlib.Path(workdir, "calls.log")

def log(name):
  with open(calls, "a") as f:
    f.write(name + "\\n")

def sample(ctx):
  log("sample")
  pathlib.Path(ctx.path("samples.txt")).write_text("1 2 3")
  ctx.keep("numbers", [1, 2, 3])

def train(ctx):
  log("train")
  numbers = ctx.artifact("sample", "numbers", lambda d: [
      int(x) for x in pathlib.Path(d, "samples.txt").read_text().split()])
  pathlib.Path(ctx.path("model.txt")).write_text(str(sum(numbers)))
  ctx.keep("total", sum(numbers))

def evaluate(ctx):
  log("evaluate" + (" resumed" if ctx.resumed else ""))
  marker = pathlib.Path(ctx.path("partial"))
  if not marker.exists():  # the first attempt writes half its work, then dies
    marker.write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
  total = ctx.artifact("train", "total", lambda d: "loaded " + pathlib.Path(
      d, "model.txt").read_text())
  pathlib.Path(ctx.path("report.txt")).write_text(str(total))
  return {"total": total}

Pipeline(workdir, [Stage("sample", sample, {"n": 3}, ("samples.txt",)),
                   Stage("train", train, {"steps": 1}, ("model.txt",)),
                   Stage("evaluate", evaluate, {}, ("report.txt",))]).run()
"""


def test_a_pipeline_killed_in_stage_3_reruns_only_stage_3(tmp_path):
  run = lambda: subprocess.run([sys.executable, "-c", KILLED_IN_STAGE_3, str(tmp_path)],  # noqa
                               cwd=REPO, capture_output=True, text=True, timeout=120)
  first = run()
  assert first.returncode == -9, first.stderr
  second = run()
  assert second.returncode == 0, second.stderr
  assert (tmp_path / "calls.log").read_text().split("\n")[:-1] == [
      "sample", "train", "evaluate", "evaluate resumed"]
  assert "stage sample: done, skipped" in second.stderr
  # In the new process the trained value comes through the train stage's files.
  assert (tmp_path / "evaluate" / "report.txt").read_text() == "loaded 6"
  assert json.loads((tmp_path / "evaluate" / "done.json").read_text())["result"] == {
      "total": "loaded 6"}
  assert os.path.exists(tmp_path / "evaluate" / "partial")  # the resumed stage kept its dir
