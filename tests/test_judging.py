"""The judging loop: failed parses retried alone, a rerun judges only what is missing, raw
outputs kept; the BiGGen report from a scripted endpoint equals hand-computed means."""

import json

import pytest

from llmjax.evals.backends import JudgeSampling, OpenAIBackend
from llmjax.evals.judging import JudgeItem, judge, read_judgements
from llmjax.evals.parsing import parse_absolute
from scripted_endpoint import scripted_server


class ScriptedBackend:
  """Answers from a script: id -> outputs for successive attempts (the last one repeats)."""

  def __init__(self, script):
    self.script, self.calls = script, []

  def complete(self, requests, sampling, show_progress=False):
    self.calls.append([r.messages[0]["content"] for r in requests])
    out = []
    for r in requests:
      item = r.messages[0]["content"]
      attempt = sum(item in call for call in self.calls) - 1
      answers = self.script[item]
      out.append(answers[min(attempt, len(answers) - 1)])
    return out


def _items(ids):
  return [JudgeItem(i, ({"role": "user", "content": i},)) for i in ids]


def test_only_failed_items_are_retried_and_exhausted_ones_are_failures(tmp_path):
  backend = ScriptedBackend({"a": ["[RESULT] 4"], "b": ["no verdict", "[RESULT] 2"],
                             "c": ["nothing", "still nothing", "[RESULT] 9"]})
  records = judge(_items("abc"), backend, parse_absolute, JudgeSampling(),
                  str(tmp_path / "j.jsonl"), max_retries=2)
  assert backend.calls == [["a", "b", "c"], ["b", "c"], ["c"]]
  assert (records["a"]["verdict"], records["b"]["verdict"], records["c"]["verdict"]) == (
      4, 2, None)
  assert records["b"]["outputs"] == ["no verdict", "[RESULT] 2"] and records["b"]["attempts"] == 2
  assert records["c"]["failed"] and records["c"]["outputs"] == ["nothing", "still nothing",
                                                                "[RESULT] 9"]
  assert read_judgements(str(tmp_path / "j.jsonl")) == records


def test_a_rerun_judges_only_what_is_missing(tmp_path):
  path = tmp_path / "j.jsonl"
  first = ScriptedBackend({i: [f"[RESULT] {n}"] for n, i in enumerate("abcd", 1)})
  judge(_items("abcd"), first, parse_absolute, JudgeSampling(), str(path))
  lines = path.read_text().splitlines()
  path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])  # c cut short by a crash, d lost
  second = ScriptedBackend({i: [f"[RESULT] {n}"] for n, i in enumerate("abcd", 1)})
  records = judge(_items("abcd"), second, parse_absolute, JudgeSampling(), str(path))
  assert second.calls == [["c", "d"]]
  assert {i: r["verdict"] for i, r in records.items()} == {"a": 1, "b": 2, "c": 3, "d": 4}
  assert len(path.read_text().splitlines()) == 4
  third = ScriptedBackend({})
  judge(_items("abcd"), third, parse_absolute, JudgeSampling(), str(path))
  assert third.calls == []


def test_openai_backend_retries_busy_endpoints_with_backoff():
  pytest.importorskip("httpx")
  box = []
  server, seen = scripted_server(lambda body: f"echo {body['seed']}", box, fail_first=2)
  try:
    backend = OpenAIBackend(f"http://127.0.0.1:{box[0]}/v1", "m", concurrency=1,
                            http_retries=3, backoff_s=0.01)
    from llmjax.evals.backends import ChatRequest
    texts = backend.complete([ChatRequest(({"role": "user", "content": "q"},), 5)],
                             JudgeSampling())
    assert texts == ["echo 5"] and seen["requests"] == 3
  finally:
    server.should_exit = True


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


class _TemplateTokenizer:
  """A tokenizer whose chat template renders "[role]content" and may refuse system turns."""

  def __init__(self, system_ok: bool):
    self.chat_template, self.system_ok = "a template", system_ok

  def apply_chat_template(self, messages, add_generation_prompt=True):
    from llmjax.errors import UserError
    if not self.system_ok and any(m["role"] == "system" for m in messages):
      raise UserError("chat template: Conversation roles must alternate user/assistant")
    return "".join(f"[{m['role']}]{m['content']}" for m in messages)

  def encode_chat(self, messages, add_generation_prompt=True):
    return list(self.apply_chat_template(messages).encode())


def test_a_system_turn_the_template_refuses_is_folded_into_the_user_turn():
  from llmjax.data.tokenizers import encode_messages, supports_system_role
  messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
  mistral_like, llama_like = _TemplateTokenizer(False), _TemplateTokenizer(True)
  assert not supports_system_role(mistral_like) and supports_system_role(llama_like)
  assert bytes(encode_messages(mistral_like, messages)).decode() == "[user]S\n\nU"
  assert bytes(encode_messages(llama_like, messages)).decode() == "[system]S[user]U"


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
  from llmjax.evals.biggen import read_instances
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


def test_report_order_puts_known_names_first_in_their_order():
  from llmjax.evals.judging import in_known_order
  assert in_known_order({"zeta": 1, "safety": 2, "alpha": 3, "grounding": 4},
                        ("grounding", "planning", "safety")) == [
                            "grounding", "safety", "alpha", "zeta"]
