"""The judging loop: failed parses retried alone, a rerun judges only what is missing, raw
outputs kept; the OpenAI backend's retries; system turns a chat template refuses."""

import json

import pytest

from llmjax.evals.backends import JudgeSampling, OpenAIBackend, RequestFailure
from llmjax.evals.judging import (JudgeItem, JudgeOptions, failure_counts, judge,
                                  read_judgements)
from llmjax.evals.parsing import parse_absolute
from scripted_endpoint import scripted_server


class ScriptedBackend:
  """Answers from a script: id -> answers for successive attempts (the last one repeats); an
  answer may be a RequestFailure. Counts a prompt's tokens as its characters."""

  def __init__(self, script, on_answer=None):
    self.script, self.calls, self.samplings, self.on_answer = script, [], [], on_answer
    self.seen: dict[str, int] = {}

  def complete_each(self, requests, sampling, on_result=None, show_progress=False):
    self.calls.append([_item_of(r.messages) for r in requests])
    self.samplings.append(sampling)
    out = []
    for index, r in enumerate(requests):
      item = _item_of(r.messages)
      attempt = self.seen[item] = self.seen.get(item, -1) + 1
      answers = self.script[item]
      answer = answers[min(attempt, len(answers) - 1)]
      answer = answer(r.messages) if callable(answer) else answer
      out.append(answer)
      if on_result:
        on_result(index, answer)
      if self.on_answer:
        self.on_answer(item)
    return out

  def count_tokens(self, messages):
    return sum(len(m["content"]) for m in messages)


def _item_of(messages) -> str:
  return messages[0]["content"].split("|")[0]


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
  assert (records["c"]["failure"], records["c"]["error"]) == (
      "unparsed", "no verdict could be read from 3 outputs")
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


def test_each_answer_is_on_disk_before_the_next_arrives(tmp_path):
  path = tmp_path / "j.jsonl"
  on_disk_when_answered = {}

  def look(item):
    on_disk_when_answered[item] = sorted(json.loads(line)["id"] for line in open(path))

  backend = ScriptedBackend({"a": ["[RESULT] 1"], "b": ["[RESULT] 2"], "c": ["[RESULT] 3"]},
                            on_answer=look)
  judge(_items("abc"), backend, parse_absolute, JudgeSampling(), str(path))
  assert on_disk_when_answered == {"a": ["a"], "b": ["a", "b"], "c": ["a", "b", "c"]}


def test_a_failed_request_is_recorded_and_a_rerun_asks_only_for_it(tmp_path):
  path = str(tmp_path / "j.jsonl")
  refused = RequestFailure("request_error", "HTTP 400: bad request for item b")
  backend = ScriptedBackend({"a": ["[RESULT] 1"], "b": [refused, "[RESULT] 2"],
                             "c": ["[RESULT] 3"]})
  records = judge(_items("abc"), backend, parse_absolute, JudgeSampling(), path)
  assert backend.calls == [["a", "b", "c"]]  # a request error is not a parse retry
  assert records["b"] == {"id": "b", "verdict": None, "output": "", "outputs": [],
                          "attempts": 1, "failed": True, "failure": "request_error",
                          "error": "HTTP 400: bad request for item b"}
  assert failure_counts(list(records.values())) == {"unparsed": 0, "request_error": 1,
                                                    "prompt_too_long": 0}
  records = judge(_items("abc"), backend, parse_absolute, JudgeSampling(), path)
  assert backend.calls[1:] == [["b"]]
  assert records["b"]["verdict"] == 2 and records["b"]["attempts"] == 2  # a new seed
  assert [r["id"] for r in map(json.loads, open(path))] == ["a", "b", "c", "b"]


def test_parse_retries_at_temperature_0_sample_at_the_retry_temperature(tmp_path):
  greedy = JudgeSampling(temperature=0.0)
  backend = ScriptedBackend({"a": ["nothing", "[RESULT] 3"]})
  records = judge(_items("a"), backend, parse_absolute, greedy, str(tmp_path / "1.jsonl"),
                  options=JudgeOptions(max_retries=3, retry_temperature=0.7))
  assert [s.temperature for s in backend.samplings] == [0.0, 0.7]
  assert records["a"]["verdict"] == 3
  assert JudgeOptions(retry_temperature=0.7).describe_retries(greedy) == (
      "up to 10 at temperature 0.7")
  # retry_temperature 0: the same output would come back, so no retry is made
  backend = ScriptedBackend({"a": ["nothing", "[RESULT] 3"]})
  records = judge(_items("a"), backend, parse_absolute, greedy, str(tmp_path / "2.jsonl"),
                  options=JudgeOptions(max_retries=3, retry_temperature=0.0))
  assert backend.calls == [["a"]] and records["a"]["failure"] == "unparsed"
  assert JudgeOptions(retry_temperature=0).describe_retries(greedy).startswith("none: ")
  # at a positive temperature, retries keep the judge's sampling
  backend = ScriptedBackend({"a": ["nothing", "[RESULT] 3"]})
  judge(_items("a"), backend, parse_absolute, JudgeSampling(temperature=0.5),
        str(tmp_path / "3.jsonl"), options=JudgeOptions(retry_temperature=0.7))
  assert [s.temperature for s in backend.samplings] == [0.5, 0.5]


def _shortenable(item_id: str, response: str) -> JudgeItem:
  def shorten(fraction):
    kept = response[:int(len(response) * fraction)]
    return ({"role": "user", "content": f"{item_id}|{kept}[cut]"},)
  return JudgeItem(item_id, ({"role": "user", "content": f"{item_id}|{response}"},),
                   shorten=shorten)


def test_a_prompt_over_max_prompt_tokens_is_recorded_or_its_response_cut(tmp_path):
  long, short = _shortenable("a", "x" * 100), _shortenable("b", "y" * 10)
  sent = []
  script = {i: [lambda messages: sent.append(messages[0]["content"]) or "[RESULT] 4"]
            for i in "ab"}
  records = judge([long, short], ScriptedBackend(script), parse_absolute, JudgeSampling(),
                  str(tmp_path / "1.jsonl"), options=JudgeOptions(max_prompt_tokens=40))
  assert records["a"]["failure"] == "prompt_too_long" and records["a"]["error"] == (
      "the prompt has 102 tokens; judge.max_prompt_tokens is 40")
  assert records["b"]["verdict"] == 4 and sent == ["b|" + "y" * 10]
  sent.clear()
  records = judge([long, short], ScriptedBackend(script), parse_absolute, JudgeSampling(),
                  str(tmp_path / "2.jsonl"),
                  options=JudgeOptions(max_prompt_tokens=40, truncate_response=True))
  assert sent[0] == "a|" + "x" * 33 + "[cut]"  # the longest cut that fits: 40 characters
  assert records["a"]["verdict"] == 4 and 0.33 <= records["a"]["truncated"]["kept_fraction"] <= 0.34
  assert "truncated" not in records["b"]


def test_an_endpoint_that_finds_the_prompt_too_long_gets_a_shorter_response(tmp_path):
  from llmjax.evals.backends import _failure
  vllm = _failure("HTTP 400: This model's maximum context length is 100 tokens. However, you "
                  "requested 150 tokens (140 in the messages, 10 in the completion).")
  assert (vllm.cause, vllm.context_tokens) == ("prompt_too_long", (100, 150))
  assert _failure("HTTP 404: no such model").cause == "request_error"

  def answer(messages):
    return vllm if len(messages[0]["content"]) > 60 else "[RESULT] 5"

  item = _shortenable("a", "z" * 100)
  records = judge([item], ScriptedBackend({"a": [answer]}), parse_absolute, JudgeSampling(),
                  str(tmp_path / "1.jsonl"), options=JudgeOptions(truncate_response=True))
  assert records["a"]["verdict"] == 5 and records["a"]["truncated"]["cuts"] == 2
  records = judge([item], ScriptedBackend({"a": [answer]}), parse_absolute, JudgeSampling(),
                  str(tmp_path / "2.jsonl"))
  assert records["a"]["failure"] == "prompt_too_long" and "maximum context length is 100" in (
      records["a"]["error"])


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


def test_openai_backend_records_a_refused_request_and_answers_the_rest():
  pytest.importorskip("httpx")
  from llmjax.evals.backends import ChatRequest
  box = []

  def answer(body):
    text = body["messages"][0]["content"]
    return (400, f"cannot take {text}") if text == "q2" else f"answer to {text}"

  server, seen = scripted_server(answer, box)
  try:
    backend = OpenAIBackend(f"http://127.0.0.1:{box[0]}/v1", "m", http_retries=3,
                            backoff_s=0.01)
    arrived = []
    answers = backend.complete_each(
        [ChatRequest(({"role": "user", "content": f"q{i}"},), i) for i in range(4)],
        JudgeSampling(), lambda index, a: arrived.append(index))
    assert answers[:2] + answers[3:] == ["answer to q0", "answer to q1", "answer to q3"]
    assert answers[2] == RequestFailure("request_error", "HTTP 400: cannot take q2")
    assert sorted(arrived) == [0, 1, 2, 3] and seen["requests"] == 4  # a 400 is not retried
    with pytest.raises(Exception, match="HTTP 400: cannot take q2"):
      backend.complete([ChatRequest(({"role": "user", "content": "q2"},), 0)], JudgeSampling())
  finally:
    server.should_exit = True


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


def test_report_order_puts_known_names_first_in_their_order():
  from llmjax.evals.judging import in_known_order
  assert in_known_order({"zeta": 1, "safety": 2, "alpha": 3, "grounding": 4},
                        ("grounding", "planning", "safety")) == [
                            "grounding", "safety", "alpha", "zeta"]


def test_the_local_backend_reports_a_prompt_its_positions_cannot_hold():
  from types import SimpleNamespace

  from llmjax.data.tokenizers import ByteTokenizer
  from llmjax.evals.backends import ChatRequest, LocalBackend
  backend = LocalBackend.__new__(LocalBackend)  # no model: no prompt here reaches it
  backend.loaded = SimpleNamespace(tokenizer=ByteTokenizer(), source="tiny",
                                   config=SimpleNamespace(positions="learned", max_len=32))
  backend.generator = SimpleNamespace(batch_size=4)
  arrived = []
  answers = backend.complete_each(
      [ChatRequest(({"role": "user", "content": "x" * 40},), 0)],
      JudgeSampling(max_tokens=8), lambda index, answer: arrived.append(index))
  assert answers[0].cause == "prompt_too_long" and arrived == [0]
  assert answers[0].error.endswith("+ max_tokens 8 exceeds the judge's 32 positions")
  assert backend.count_tokens(({"role": "user", "content": "x" * 40},)) >= 40
