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
  assert "| reasoning | 2 | 1 | 1 | 0 | 3.000 |" in md
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


def _rows(n, capability="planning", task="t"):
  rubric = {"criteria": "c", **{f"score{k}_description": f"d{k}" for k in range(1, 6)}}
  return [{"id": f"{capability}_{i}", "capability": capability, "task": task, "instance_idx": i,
           "system_prompt": "s", "input": f"INPUT-{i}", "reference_answer": "r",
           "score_rubric": rubric, "response": f"resp {i}"} for i in range(n)]


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_a_refused_request_keeps_the_other_judgements_and_a_rerun_asks_only_for_it(tmp_path):
  """The issue's done-when: a 400 for one of six instances; then a healthy rerun."""
  pytest.importorskip("httpx")
  from conftest import run_cli
  data = _write(tmp_path / "rows.jsonl", _rows(6))
  healthy = {"now": False}

  def answer(body):
    if "INPUT-3\n" in body["messages"][1]["content"] and not healthy["now"]:
      return (400, "This model's maximum context length is 4096 tokens. However, you "
                   "requested 5000 tokens (3976 in the messages, 1024 in the completion).")
    return "Fine. [RESULT] 4"

  box = []
  server, seen = scripted_server(answer, box)
  workdir = tmp_path / "w"
  args = ["--config", "configs/biggen.py", "--workdir", str(workdir), f"--config.data={data}",
          "--config.judge.backend=openai",  # no judge.model: the endpoint's own
          f"--config.judge.base_url=http://127.0.0.1:{box[0]}/v1", "--config.progress=False"]
  try:
    first = run_cli(args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert seen["requests"] == 6 and "model" not in seen["bodies"][0]
    judged = [json.loads(line) for line in open(workdir / "judgements.jsonl")]
    assert sorted(r["id"] for r in judged if not r["failed"]) == [
        f"planning_{i}" for i in (0, 1, 2, 4, 5)]
    failed = next(r for r in judged if r["failed"])
    assert (failed["id"], failed["failure"]) == ("planning_3", "prompt_too_long")
    assert failed["error"].startswith("HTTP 400: This model's maximum context length is 4096")
    assert "judge: 1 of 6 items asked failed (1 prompt_too_long; first: HTTP 400" in (
        first.stderr)
    report = json.loads((workdir / "report.json").read_text())
    assert (report["parsed"], report["request_failures"]) == (5, 1)
    assert report["capabilities"]["planning"]["prompt_too_long"] == 1
    healthy["now"] = True
    second = run_cli(args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert seen["requests"] == 7  # exactly one more: the failed one
  finally:
    server.should_exit = True
  report = json.loads((workdir / "report.json").read_text())
  assert (report["parsed"], report["request_failures"], report["overall"]) == (6, 0, 4.0)


def test_llm_judge_instances_are_not_graded_by_a_prometheus_judge(tmp_path):
  pytest.importorskip("httpx")
  from conftest import run_cli
  rows = _rows(2) + _rows(3, "refinement", "llm_judge_absolute")
  data = _write(tmp_path / "rows.jsonl", rows)
  box = []
  server, seen = scripted_server(lambda body: "[RESULT] 3", box)
  base = ["--config", "configs/biggen.py", f"--config.data={data}", "--config.progress=False",
          "--config.judge.backend=openai", f"--config.judge.base_url=http://127.0.0.1:{box[0]}/v1"]
  try:
    result = run_cli([*base, "--workdir", str(tmp_path / "p"),
                      "--config.judge.model=prometheus-eval/prometheus-7b-v2.0"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert seen["requests"] == 2
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["instances"] == 2 and report["skipped_llm_judge_instances"].startswith(
        "3 (prometheus-eval/prometheus-7b-v2.0 is a Prometheus judge")
    result = run_cli([*base, "--workdir", str(tmp_path / "g"), "--config.judge.model=gpt-x"])
    assert result.returncode == 0 and seen["requests"] == 7  # any other judge grades all 5
  finally:
    server.should_exit = True


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


class _RecordingJudge:
  """prometheus-eval's mock-model interface: records what its judge would be sent."""

  def __init__(self, verdict):
    self.verdict, self.sent = verdict, []

  def validate_mockllm(self):
    return True

  def completions(self, prompts, use_tqdm=False, **params):
    self.sent.extend(prompts)
    return [f"Feedback. [RESULT] {self.verdict}"] * len(prompts)


def test_the_judge_is_shown_exactly_what_prometheus_eval_builds(monkeypatch):
  import importlib.util
  if importlib.util.find_spec("prometheus_eval") is None:
    pytest.skip("prometheus-eval is not installed (the test extra installs it)")
  monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
  from prometheus_eval import PrometheusEval
  from prometheus_eval.prompts import ABSOLUTE_PROMPT, RELATIVE_PROMPT, SCORE_RUBRIC_TEMPLATE

  from llmjax.experiments.biggen import benchmark, prometheus
  prompts = prometheus.load_prompts("auto")
  assert prompts.source.startswith("prometheus-eval ")
  row = {**_rows(1)[0], "input": "Plan a {three}-day trip.\nBudget: 100",
         "reference_answer": "Day 1: ...\nDay 2: ..."}
  rubric = SCORE_RUBRIC_TEMPLATE.format(**row["score_rubric"])
  absolute = _RecordingJudge(4)
  PrometheusEval(absolute, absolute_grade_template=ABSOLUTE_PROMPT).absolute_grade(
      instructions=[row["input"]], responses=["Go to {Rome}."], rubric=[rubric],
      reference_answers=[row["reference_answer"]])
  assert absolute.sent == [list(benchmark.judge_messages(row, "Go to {Rome}.", prompts))]
  relative = _RecordingJudge("A")
  PrometheusEval(relative, relative_grade_template=RELATIVE_PROMPT).relative_grade(
      instructions=[row["input"]], responses_A=["Rome."], responses_B=["Paris."],
      rubric=[rubric.split("\n")[0]], reference_answers=[row["reference_answer"]])
  assert relative.sent == [list(benchmark.relative_judge_messages(row, "Rome.", "Paris.",
                                                                  prompts))]


def test_without_prometheus_eval_our_wording_is_used_and_labelled(tmp_path, monkeypatch):
  pytest.importorskip("httpx")
  from conftest import run_cli
  from llmjax.experiments.biggen import prometheus
  monkeypatch.setattr(prometheus, "_prometheus_eval_templates", lambda: None)
  data = _write(tmp_path / "rows.jsonl", _rows(2))
  box = []
  server, seen = scripted_server(lambda body: "[RESULT] 2", box)
  args = ["--config", "configs/biggen.py", "--workdir", str(tmp_path / "w"),
          f"--config.data={data}", "--config.judge.backend=openai", "--config.progress=False",
          f"--config.judge.base_url=http://127.0.0.1:{box[0]}/v1"]
  try:
    assert run_cli(args).returncode == 0
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["judge_prompts"] == "llmjax's own wording (prometheus-eval is not installed)"
    assert seen["bodies"][0]["messages"][0]["content"] == prometheus.ABSOLUTE_SYSTEM
    # The same settings after prometheus-eval is installed would show the judge other words:
    # refused, so that one judgements file holds one wording.
    monkeypatch.setattr(prometheus, "_prometheus_eval_templates", lambda: prometheus
                        .TemplatePrompts({}, "prometheus-eval 9.9"))
    again = run_cli([*args, "--config.limit=1"])
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'w' / 'judgements.jsonl'} was judged with llmjax's own wording "
        "(prometheus-eval is not installed); the judge would now be shown prometheus-eval 9.9:"
        " a rerun would mix two wordings (use a new --workdir, or set judge.templates to the "
        "earlier wording)")
  finally:
    server.should_exit = True


def test_a_template_file_gives_the_judge_its_words(tmp_path, capsys):
  from llmjax.errors import UserError
  from llmjax.experiments.biggen import benchmark, prometheus
  templates = {key: f"<{key}>" for key in prometheus.TEMPLATE_KEYS}
  templates["absolute"] = "Grade {response} for {instruction} against {rubric} ({reference_answer})"
  templates["rubric"] = "[{criteria}] 1={score1_description} 5={score5_description}"
  path = tmp_path / "t.json"
  path.write_text(json.dumps(templates))
  prompts = prometheus.load_prompts(str(path))
  assert prompts.source == f"templates from {path}"
  assert benchmark.judge_messages(_rows(1)[0], "R", prompts) == (
      {"role": "system", "content": "<absolute_system>"},
      {"role": "user", "content": "Grade R for INPUT-0 against [c] 1=d1 5=d5 (r)"})
  path.write_text(json.dumps({**templates, "relative": "{response_C}"}))
  with pytest.raises(UserError, match=r"'relative' cannot be filled \(KeyError: 'response_C'\)"):
    prometheus.load_prompts(str(path))
  path.write_text(json.dumps({k: v for k, v in templates.items() if k != "rubric"}))
  with pytest.raises(UserError, match="'rubric' must be a string"):
    prometheus.load_prompts(str(path))
