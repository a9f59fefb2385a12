"""`python -m llmjax.serve` on 127.0.0.1 through OpenAI's own client library: chat,
completions, models, streaming, n > 1, stop strings, seeds and the bad requests; concurrent
requests, batched together, get what each gets alone; BiGGen judged through it."""

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import REPO, SHARED_DATA, run_cli, tiny_args, xla_flags

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """(base URL, model name, the run) of a tiny llmjax model served in a subprocess."""
  run = tmp_path_factory.mktemp("run")
  result = run_cli(tiny_args(run, "--config.train.steps=30", "--config.train.log_every=10",
                             "--config.train.eval_every=30"))
  assert result.returncode == 0, result.stderr[-2000:]
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))
  process = subprocess.Popen([sys.executable, "-m", "llmjax.serve", "--checkpoint", str(run),
                              "--port", str(port), "--model-name", "tiny",
                              "--max-wait-ms", "50", "--length-bucket", "256"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  base = f"http://127.0.0.1:{port}/v1"
  deadline = time.time() + 120
  while True:
    try:
      if httpx.get(f"{base}/models", timeout=1).status_code == 200:
        break
    except httpx.HTTPError:
      pass
    if process.poll() is not None or time.time() > deadline:
      process.kill()
      raise AssertionError(f"the server did not start: {process.stderr.read()[-2000:]}")
    time.sleep(0.5)
  yield base, "tiny", run
  process.terminate()
  process.wait(timeout=30)


@pytest.mark.slow
def test_the_openai_client_chats_completes_and_lists_models(served):
  base, name, _ = served
  client = openai.OpenAI(base_url=base, api_key="unused", timeout=120)
  assert [(m.id, m.owned_by) for m in client.models.list()] == [("tiny", "llmjax")]
  ask = {"messages": [{"role": "system", "content": "Count."},
                      {"role": "user", "content": "count: 4 5 6"}],
         "max_tokens": 12, "temperature": 0.7, "top_p": 0.9}
  chat = client.chat.completions.create(model=name, n=2, seed=3, **ask)
  assert chat.model == "tiny" and [c.index for c in chat.choices] == [0, 1]
  assert all(c.message.role == "assistant" and c.finish_reason in ("stop", "length")
             for c in chat.choices)
  assert chat.usage.completion_tokens == sum(
      len(c.message.content.encode()) + (c.finish_reason == "stop") for c in chat.choices)
  assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
  # a seed fixes the answer; another seed, or another sample of n, gives another
  again = client.chat.completions.create(model=name, n=2, seed=3, **ask)
  assert [c.message.content for c in again.choices] == [c.message.content for c in chat.choices]
  other = client.chat.completions.create(model=name, n=1, seed=4, **ask)
  texts = {c.message.content for c in chat.choices} | {other.choices[0].message.content}
  assert len(texts) > 1
  # the model may be left out or empty: the one served
  assert client.chat.completions.create(model="", seed=3, n=1, **ask).model == "tiny"
  raw = httpx.post(f"{base}/chat/completions", json={
      "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}, timeout=120)
  assert raw.status_code == 200 and raw.json()["choices"][0]["message"]["role"] == "assistant"
  # max_completion_tokens is honoured (and wins over max_tokens)
  short = client.chat.completions.create(model=name, messages=ask["messages"], temperature=1.0,
                                         seed=1, max_tokens=50, max_completion_tokens=3)
  assert short.usage.completion_tokens <= 3 and (
      short.usage.completion_tokens == 3 or short.choices[0].finish_reason == "stop")
  completion = client.completions.create(model=name, prompt="17 plus 25 is", max_tokens=8,
                                         temperature=0, stop=["."])
  full = client.completions.create(model=name, prompt="17 plus 25 is", max_tokens=8,
                                   temperature=0)
  assert "." not in completion.choices[0].text
  assert full.choices[0].text.startswith(completion.choices[0].text)
  if "." in full.choices[0].text:  # the stop string cut it there
    assert completion.choices[0].text == full.choices[0].text.split(".")[0]
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_a_streamed_answer_concatenates_to_the_answer(served):
  base, name, _ = served
  client = openai.OpenAI(base_url=base, api_key="unused", timeout=120)
  ask = {"model": name, "messages": [{"role": "user", "content": "count: 7 8 9"}],
         "max_tokens": 16, "temperature": 0}
  whole = client.chat.completions.create(**ask).choices[0]
  chunks = list(client.chat.completions.create(stream=True, **ask))
  assert all(c.object == "chat.completion.chunk" and c.model == "tiny" for c in chunks)
  assert chunks[0].choices[0].delta.role == "assistant"
  assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.message.content
  assert [c.choices[0].finish_reason for c in chunks][-1] == whole.finish_reason
  assert len(chunks) > 3  # piece by piece, not one chunk
  # n > 1 and the usage chunk, sampled with a seed
  sampled = {**ask, "temperature": 1.0, "seed": 11, "n": 2}
  answers = [c.message.content for c in client.chat.completions.create(**sampled).choices]
  streamed = list(client.chat.completions.create(
      stream=True, stream_options={"include_usage": True}, **sampled))
  texts = ["", ""]
  for chunk in streamed[:-1]:
    for choice in chunk.choices:
      texts[choice.index] += choice.delta.content or ""
  assert texts == answers and streamed[-1].choices == [] and streamed[-1].usage.total_tokens > 0
  # completions stream text pieces
  text = client.completions.create(model=name, prompt="count: 1 2", max_tokens=10,
                                   temperature=0).choices[0].text
  pieces = list(client.completions.create(model=name, prompt="count: 1 2", max_tokens=10,
                                          temperature=0, stream=True))
  assert "".join(p.choices[0].text for p in pieces) == text


@pytest.mark.slow
def test_bad_requests_get_the_apis_errors(served):
  base, name, _ = served
  client = openai.OpenAI(base_url=base, api_key="unused", timeout=120, max_retries=0)
  user = [{"role": "user", "content": "x"}]
  for kwargs, param in (({"messages": []}, "messages"),
                        ({"messages": user, "temperature": 3}, "temperature"),
                        ({"messages": user, "max_tokens": 0}, "max_tokens"),
                        ({"messages": user, "max_completion_tokens": 100000},
                         "max_completion_tokens"),
                        ({"messages": user, "stop": ["a"] * 5}, "stop")):
    with pytest.raises(openai.BadRequestError) as raised:
      client.chat.completions.create(model=name, **kwargs)
    assert raised.value.body["param"] == param, kwargs
    assert raised.value.body["type"] == "invalid_request_error"
  with pytest.raises(openai.NotFoundError, match="model 'other' is not served here; this "
                     "server has 'tiny'"):
    client.chat.completions.create(model="other", messages=user)
  for response, status in ((httpx.get(f"{base}/nothing", timeout=120), 404),
                           (httpx.get(f"{base}/chat/completions", timeout=120), 405),
                           (httpx.post(f"{base}/chat/completions", content=b"{", timeout=120),
                            400)):
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_get_what_they_get_alone(served):
  base, name, _ = served

  def ask(i):
    return httpx.post(f"{base}/completions", timeout=120, json={
        "model": name, "prompt": f"count: {i} {i + 1}", "max_tokens": 10, "temperature": 1.0,
        "seed": 100 + i}).json()["choices"][0]["text"]

  alone = [ask(i) for i in range(6)]
  before = httpx.get(f"{base.removesuffix('/v1')}/health", timeout=120).json()
  with ThreadPoolExecutor(6) as pool:
    together = list(pool.map(ask, range(6)))
  after = httpx.get(f"{base.removesuffix('/v1')}/health", timeout=120).json()
  assert together == alone
  assert after["requests"] - before["requests"] == 6
  assert after["generator_calls"] - before["generator_calls"] < 6  # some shared a call
  assert len(set(alone)) > 1


def test_serve_rejects_a_missing_checkpoint_in_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "llmjax.serve", "--checkpoint",
                           str(tmp_path / "nothing")], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: checkpoint ")


# configs/biggen.py's default data: BiGGen Bench's sample responses in ../shared/data.
needs_biggen_sample = pytest.mark.skipif(
    not (SHARED_DATA / "biggen_bench" / "sample_responses.json").exists(),
    reason="../shared/data/biggen_bench/sample_responses.json is absent (not shipped with llmjax)")


@pytest.mark.slow
@pytest.mark.trains
@needs_biggen_sample
def test_biggen_through_the_server_equals_the_local_judge(served, tmp_path):
  """The done-when run at a small size: a tiny llmjax judge grades BiGGen's sample responses
  through the OpenAI-compatible server and in-process; same seed, same outputs. (Its outputs
  rarely parse; the report says how many did not.)"""
  base, name, run = served
  common = ["--config", "configs/biggen.py", "--config.limit=3", "--config.progress=False",
            "--config.judge.max_tokens=12", "--config.judge.max_retries=1",
            "--config.judge.length_bucket=256", "--config.seed=5"]
  remote = run_cli([*common, "--workdir", str(tmp_path / "openai"),
                    "--config.judge.backend=openai", f"--config.judge.base_url={base}",
                    f"--config.judge.model={name}", "--config.judge.concurrency=4"])
  assert remote.returncode == 0, remote.stderr[-2000:]
  local = run_cli([*common, "--workdir", str(tmp_path / "local"),
                   "--config.judge.backend=local", f"--config.judge.checkpoint={run}"])
  assert local.returncode == 0, local.stderr[-2000:]

  def judged(directory):
    return {r["id"]: r["outputs"] for r in map(json.loads, (directory / "judgements.jsonl")
                                               .read_text().splitlines())}
  assert judged(tmp_path / "openai") == judged(tmp_path / "local")
  report = json.loads((tmp_path / "openai" / "report.json").read_text())
  assert report["instances"] == 3 and report["parsed"] + report["parse_failures"] == 3
  assert (report == json.loads((tmp_path / "local" / "report.json").read_text()))


@pytest.mark.slow
@needs_biggen_sample
def test_biggen_generates_responses_with_a_model_under_test_once(served, tmp_path):
  from scripted_endpoint import scripted_server
  _, _, run = served
  box = []
  seen_responses = []

  def answer(body):
    text = body["messages"][1]["content"]
    seen_responses.append(text.split("###Response to evaluate:\n")[1].split("\n\n###")[0])
    return "[RESULT] 3"
  server, seen = scripted_server(answer, box)
  args = ["--config", "configs/biggen.py", "--workdir", str(tmp_path / "w"),
          "--config.limit=2", "--config.progress=False", f"--config.responses.checkpoint={run}",
          "--config.responses.max_tokens=8", "--config.responses.length_bucket=256",
          "--config.judge.backend=openai", f"--config.judge.base_url=http://127.0.0.1:{box[0]}/v1"]
  try:
    first = run_cli(args)
    assert first.returncode == 0, first.stderr[-2000:]
    responses = (tmp_path / "w" / "responses.jsonl").read_text()
    again = run_cli(args)
    assert again.returncode == 0, again.stderr[-2000:]
  finally:
    server.should_exit = True
  rows = [json.loads(line) for line in responses.splitlines()]
  assert [r["id"] for r in rows] == ["planning_travel_plan_0", "planning_travel_plan_1"]
  assert sorted(seen_responses) == sorted(r["response"] for r in rows)
  assert seen["requests"] == 2  # the rerun judged nothing and generated nothing
  assert (tmp_path / "w" / "responses.jsonl").read_text() == responses


@pytest.mark.slow
@pytest.mark.trains
def test_biggen_against_the_server_with_the_documented_settings(served, tmp_path):
  """configs/biggen.py's documented command against llmjax.serve: no judge.model."""
  base, _, _ = served
  rubric = {"criteria": "c", **{f"score{n}_description": f"d{n}" for n in range(1, 6)}}
  data = tmp_path / "rows.jsonl"
  data.write_text("".join(json.dumps({
      "id": f"planning_{i}", "capability": "planning", "task": "t", "instance_idx": i,
      "system_prompt": "s", "input": f"count: {i}", "reference_answer": "r",
      "score_rubric": rubric, "response": f"{i} {i + 1}"}) + "\n" for i in range(2)))
  result = run_cli(["--config", "configs/biggen.py", "--workdir", str(tmp_path / "w"),
                    f"--config.data={data}", "--config.judge.backend=openai",
                    f"--config.judge.base_url={base}", "--config.judge.max_tokens=8",
                    "--config.judge.max_retries=0", "--config.progress=False"])
  assert result.returncode == 0, result.stderr[-2000:]
  records = [json.loads(line) for line in open(tmp_path / "w" / "judgements.jsonl")]
  # a tiny model writes no verdict: each record is a parse failure, none a request error
  assert len(records) == 2 and {r.get("failure") for r in records} <= {None, "unparsed"}
  assert all(r["outputs"] for r in records)
