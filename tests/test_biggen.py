"""BiGGen Bench through the judge layer: the report from a scripted endpoint equals hand-computed
means, relative grading reports the share of A, and a bad instance row names its file and line."""

import json

import pytest

from scripted_endpoint import scripted_server


def test_biggen_report_from_a_scripted_endpoint_equals_hand_computed_means(tmp_path):
  pytest.importorskip("httpx")
  from conftest import run_cli
  rubric = {"criteria": "c", **{f"score{n}_description": f"d{n}" for n in range(1, 6)}}
  rows = [{"id": f"{cap}_{i}", "capability": cap, "task": "t", "instance_idx": i,
           "system_prompt": "s", "input": f"INPUT-{cap}-{i}", "reference_answer": "r",
           "score_rubric": rubric, "response": f"resp {i}"}
          for cap, n in (("planning", 3), ("reasoning", 2), ("safety", 2)) for i in range(n)]
  data = tmp_path / "rows.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in rows))
  # planning: 5, 4, 2 -> 11/3; reasoning: 3 then an unparsable 2.5 forever -> 3 (1 failure);
  # safety: unparsable once then 1, and 2 -> 1.5. Overall = (11/3 + 3 + 1.5) / 3.
  script = {"planning_0": ["Good. [RESULT] 5"], "planning_1": ["[RESULT] 4"],
            "planning_2": ["Score: 2"], "reasoning_0": ["[RESULT] (3)"],
            "reasoning_1": ["Score: 2.5"], "safety_0": ["hmm", "[RESULT] 1"],
            "safety_1": ["[RESULT] 2"]}
  attempts = {}

  def answer(body):
    text = body["messages"][1]["content"]
    row_id = next(r["id"] for r in rows if f"INPUT-{r['capability']}-{r['instance_idx']}\n"
                  in text)
    attempts[row_id] = attempts.get(row_id, 0) + 1
    outputs = script[row_id]
    return outputs[min(attempts[row_id], len(outputs)) - 1]

  box = []
  server, _ = scripted_server(answer, box)
  try:
    result = run_cli(["--config", "configs/biggen.py", "--workdir", str(tmp_path / "w"),
                      f"--config.data={data}", "--config.judge.backend=openai",
                      f"--config.judge.base_url=http://127.0.0.1:{box[0]}/v1",
                      "--config.judge.model=scripted", "--config.judge.max_retries=3",
                      "--config.progress=False"])
  finally:
    server.should_exit = True
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads((tmp_path / "w" / "report.json").read_text())
  caps = report["capabilities"]
  assert caps["planning"]["mean"] == pytest.approx(11 / 3)
  assert (caps["reasoning"]["mean"], caps["reasoning"]["failures"]) == (3.0, 1)
  assert caps["safety"]["mean"] == pytest.approx(1.5)
  assert report["overall"] == pytest.approx((11 / 3 + 3 + 1.5) / 3)
  assert report["parse_failures"] == 1 and report["parsed"] == 6
  assert attempts["reasoning_1"] == 4 and attempts["safety_0"] == 2 and attempts["planning_0"] == 1
  md = (tmp_path / "w" / "report.md").read_text()
  assert "| reasoning | 2 | 1 | 1 | 3.000 |" in md
  assert (tmp_path / "w" / "plots" / "capabilities.png").stat().st_size > 0
  judged = [json.loads(line) for line in (tmp_path / "w" / "judgements.jsonl").read_text()
            .splitlines()]
  assert len(judged) == 7 and all("outputs" in r for r in judged)
  # Another judge in the same workdir would mix two judges' verdicts in one report: refused.
  before = (tmp_path / "w" / "judgements.jsonl").read_bytes()
  another_judge = ["--config", "configs/biggen.py", "--workdir", str(tmp_path / "w"),
                   f"--config.data={data}", "--config.judge.backend=openai",
                   "--config.judge.base_url=http://127.0.0.1:9/v1",
                   "--config.judge.model=another-judge", "--config.progress=False"]
  other = run_cli(another_judge)
  assert other.returncode == 2
  assert other.stderr.strip().splitlines()[-1] == (
      f"error: workdir {tmp_path / 'w'} holds a run with other settings (judge.model = "
      '"scripted" there, "another-judge" now); a resume would mix two histories: use a new '
      "--workdir")
  # Judgements are not moved aside as a training run's checkpoints are: refused all the same.
  overwrite = run_cli([*another_judge, "--config.resume=False", "--config.overwrite=True"])
  assert overwrite.returncode == 2 and "judge.model" in overwrite.stderr
  assert (tmp_path / "w" / "judgements.jsonl").read_bytes() == before


def test_relative_grading_reports_the_share_of_a(tmp_path):
  from conftest import run_cli
  rubric = {"criteria": "c", **{f"score{n}_description": f"d{n}" for n in range(1, 6)}}
  rows = [{"id": f"reasoning_{i}", "capability": "reasoning", "task": "t", "instance_idx": i,
           "system_prompt": "s", "input": f"Q{i}", "reference_answer": "r",
           "score_rubric": rubric, "response": f"answer {i}"} for i in range(4)]
  a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  a.write_text("".join(json.dumps(r) + "\n" for r in rows))
  b.write_text("".join(json.dumps({**r, "response": f"other {i}"}) + "\n"
                       for i, r in enumerate(rows)))
  verdicts = {"Q0\n": "[RESULT] A", "Q1\n": "Feedback: B wins. [RESULT] B",
              "Q2\n": "[RESULT] (A)", "Q3\n": "[RESULT] A"}
  box = []

  def answer(body):
    text = body["messages"][1]["content"]
    assert "###Response A:\nanswer" in text and "###Response B:\nother" in text
    return next(v for q, v in verdicts.items() if f"###Instruction:\n{q}" in text)
  server, _ = scripted_server(answer, box)
  try:
    result = run_cli(["--config", "configs/biggen.py", "--workdir", str(tmp_path / "w"),
                      f"--config.data={a}", f"--config.responses_b={b}",
                      "--config.grading=relative", "--config.judge.backend=openai",
                      f"--config.judge.base_url=http://127.0.0.1:{box[0]}/v1",
                      "--config.progress=False"])
  finally:
    server.should_exit = True
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads((tmp_path / "w" / "report.json").read_text())
  assert report["capabilities"]["reasoning"]["mean"] == 0.75
  assert report["metric"] == "share of A verdicts"


def test_biggen_rows_a_bad_jsonl_line_names_the_file_and_line(tmp_path):
  from llmjax.errors import DataError
  from llmjax.experiments.biggen.benchmark import read_instances
  rubric = {"criteria": "c", **{f"score{n}_description": f"d{n}" for n in range(1, 6)}}
  row = {"id": "a", "capability": "planning", "task": "t", "instance_idx": 0,
         "system_prompt": "s", "input": "i", "reference_answer": "r", "score_rubric": rubric}
  path = tmp_path / "rows.jsonl"
  path.write_text(json.dumps(row) + "\n\n" + '{"id": "b", \n')
  with pytest.raises(DataError, match=rf"{path}:3: malformed row"):
    read_instances(str(path))
  path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "b", "input": 3}) + "\n" +
                  json.dumps({k: v for k, v in row.items() if k != "task"}) + "\n")
  with pytest.raises(DataError, match=rf"{path}:3: missing field 'task'"):
    read_instances(str(path))
