"""The Self-Explore pipeline end to end at the smallest size: every stage, the summary's
counts, a rerun that skips everything, and a run killed during exploration that resumes
without sampling again and ends where the uninterrupted run did."""

import json
import os
import pathlib

import pytest

from llmjax import main

MICRO = ("--config.model.d_model=64", "--config.model.n_layers=2", "--config.model.d_ff=128",
         "--config.task.train_problems=80", "--config.task.test_problems=20",
         "--config.task.max_ops=1", "--config.task.samples=4", "--config.task.explore_k=2",
         "--config.task.explore_pairs=20", "--config.task.explore_chunk=8",
         "--config.task.max_new_tokens=48", "--config.task.temperature=1.0",
         "--config.task.sample_batch=64", "--config.task.progress=False",
         "--config.sft.train.steps=200", "--config.sft.train.batch_size=4",
         "--config.sft.train.eval_every=200", "--config.sft.train.checkpoint_every=200",
         "--config.sft.train.progress=False", "--config.sft.optim.lr=3e-3",
         "--config.train.steps=10", "--config.train.batch_size=2", "--config.train.eval_every=10",
         "--config.train.checkpoint_every=10", "--config.train.progress=False")
STAGES = ("sft", "sample", "rft", "pairs", "explore", "dpo_outcome", "self_explore", "evaluate")


def _run(workdir, capsys):
  assert main.main(["--config", "configs/self_explore.py", "--workdir", str(workdir),
                    *MICRO]) == 0
  return capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.trains
def test_pipeline_runs_skips_and_resumes_exploration(tmp_path, capsys):
  err = _run(tmp_path, capsys)
  assert all(f"stage {s}: running" in err for s in STAGES), err
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["problems"] == 80 and summary["samples"] == 320
  assert summary["explored"] == 20 == sum(summary["pits_by_step"].values())
  step_rows = [json.loads(line) for name in ("step_train.jsonl", "step_eval.jsonl")
               for line in (tmp_path / "explore" / name).read_text().splitlines()]
  assert summary["step_pairs"] == len(step_rows) > 0
  assert all(summary[f"{s}_accuracy"] is not None for s in ("sft", "rft", "dpo_outcome",
                                                             "self_explore"))
  samples = [json.loads(line) for line in
             (tmp_path / "sample" / "samples.jsonl").read_text().splitlines()]
  assert summary["correct_rate"] == sum(sum(r["correct"]) for r in samples) / 320

  # A second run skips every stage.
  err = _run(tmp_path, capsys)
  assert all(f"stage {s}: done, skipped" in err for s in STAGES), err

  # Killed during exploration: the first chunk was written, the second cut mid-line.
  explored = tmp_path / "explore" / "explored.jsonl"
  full = explored.read_text()
  lines = full.splitlines(keepends=True)
  explored.write_text("".join(lines[:8]) + lines[8][:40])
  os.remove(tmp_path / "explore" / "done.json")
  samples_before = (tmp_path / "sample" / "samples.jsonl").read_bytes()
  err = _run(tmp_path, capsys)
  assert "stage sample: done, skipped" in err and "stage explore: resuming" in err, err
  assert (tmp_path / "sample" / "samples.jsonl").read_bytes() == samples_before
  assert explored.read_text() == full  # the same draws as the uninterrupted run
  assert json.loads((tmp_path / "summary.json").read_text())["step_pairs"] == (
      summary["step_pairs"])


def test_a_malformed_gsm8k_row_stops_with_file_and_line(tmp_path, capsys):
  data = pathlib.Path(tmp_path) / "gsm8k"
  data.mkdir()
  (data / "train.jsonl").write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n'
                                    '{"question": "2+2?", "answer": "4"}\n')
  (data / "test.jsonl").write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n')
  code = main.main(["--config", "configs/self_explore.py", "--workdir", str(tmp_path / "w"),
                    "--config.task.kind=gsm8k", f"--config.task.path={data}"])
  assert code == 2
  err = capsys.readouterr().err.strip()
  assert err == (f"error: {data}/train.jsonl:2: malformed row: expected a final '#### N' line "
                 "with a number, got '4'"), err
