"""The judging loop: failed parses retried alone, a rerun judges only what is missing, raw
outputs kept; the OpenAI backend's retries; system turns a chat template refuses."""


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
