"""`python -m llmjax.serve` on 127.0.0.1: OpenAI's own client library reads its responses, and
concurrent requests, batched together, get what each gets alone."""

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
def test_responses_validate_against_the_openai_client_types(served):
  from openai.types import Completion, Model
  from openai.types.chat import ChatCompletion
  base, name, _ = served
  client = openai.OpenAI(base_url=base, api_key="unused")
  assert [m.id for m in client.models.list()] == ["tiny"]
  chat = client.chat.completions.create(
      model=name, messages=[{"role": "system", "content": "Count."},
                            {"role": "user", "content": "count: 4 5 6"}],
      max_tokens=12, temperature=0.7, top_p=0.9, n=2, seed=3)
  assert isinstance(chat, ChatCompletion) and len(chat.choices) == 2
  assert chat.usage.completion_tokens == sum(
      len(c.message.content.encode()) + (c.finish_reason == "stop") for c in chat.choices)
  completion = client.completions.create(model=name, prompt="17 plus 25 is", max_tokens=8,
                                         temperature=0, stop=["."])
  assert isinstance(completion, Completion) and "." not in completion.choices[0].text
  # httpx's own timeout is 5 s: a first request compiles, and on a loaded 2-core host that
  # takes longer.
  for raw, kind in ((httpx.get(f"{base}/models", timeout=120).json()["data"][0], Model),):
    kind.model_validate(raw)
  raw = httpx.post(f"{base}/chat/completions", json={
      "model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
      timeout=120).json()
  ChatCompletion.model_validate(raw)
  assert raw["object"] == "chat.completion" and raw["choices"][0]["message"]["role"] == (
      "assistant")


@pytest.mark.slow
def test_bad_requests_get_an_openai_style_400(served):
  base, name, _ = served
  for body, param in (({"model": name, "messages": []}, "messages"),
                      ({"model": name, "messages": [{"role": "user", "content": "x"}],
                        "temperature": 3}, "temperature"),
                      ({"model": "other", "messages": [{"role": "user", "content": "x"}]},
                       "model"),
                      ({"model": name, "messages": [{"role": "user", "content": "x"}],
                        "max_tokens": 0}, "max_tokens")):
    response = httpx.post(f"{base}/chat/completions", json=body, timeout=120)
    assert response.status_code == 400, body
    assert response.json()["error"]["param"] == param


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
