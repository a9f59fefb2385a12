"""Judge backends behind one interface: `complete_each(requests, sampling, on_result)` reports
each request's answer (its text, or a RequestFailure) the moment it arrives, and returns all
of them in order; `complete` is the same for callers that need every answer (it raises on the
first failure).

  LocalBackend   an llmjax run or hf:DIR, batched through the engine's generator on the mesh
  OpenAIBackend  any OpenAI-compatible chat-completions endpoint (vLLM, a hosted API, or
                 `python -m llmjax.serve`), with bounded concurrency, timeouts and retries
                 with exponential backoff on transport errors, 408/409/429 and 5xx

Each request carries its own seed; with llmjax on both sides (the local backend, or the local
model served by llmjax.serve) a request then gets the same text either way.
"""

import asyncio
import dataclasses
import os
import re
from typing import Any, Callable, Protocol, Sequence

from llmjax.errors import UserError
from llmjax.runio import progress_bar


@dataclasses.dataclass(frozen=True)
class JudgeSampling:
  """The judge's sampling (upstream Prometheus defaults)."""

  temperature: float = 1.0
  top_p: float = 0.9
  max_tokens: int = 1024
  repetition_penalty: float = 1.03  # sent to endpoints only when it is not 1 (vLLM's extension)


@dataclasses.dataclass(frozen=True)
class ChatRequest:
  messages: tuple[dict[str, str], ...]
  seed: int


@dataclasses.dataclass(frozen=True)
class RequestFailure:
  """A request the judge did not answer, for good: `cause` is "prompt_too_long" (the endpoint
  or the local model says the prompt exceeds its context) or "request_error" (any other
  non-retryable answer, or retries exhausted); `error` is the endpoint's own words."""

  cause: str
  error: str
  # the endpoint's figures when it states them ("maximum context length is 4096 tokens ...
  # you requested 5000 tokens"): (context, requested)
  context_tokens: tuple[int, int] | None = None


Answer = str | RequestFailure
OnResult = Callable[[int, Answer], None]


class Backend(Protocol):
  def complete_each(self, requests: Sequence[ChatRequest], sampling: JudgeSampling,
                    on_result: OnResult | None = None,
                    show_progress: bool = False) -> list[Answer]:
    ...

  def complete(self, requests: Sequence[ChatRequest], sampling: JudgeSampling,
               show_progress: bool = False) -> list[str]:
    ...

  def count_tokens(self, messages: Sequence[dict[str, str]]) -> int | None:
    """The prompt's length in the judge's tokens, or None where it cannot be counted."""
    ...


def all_answered(answers: Sequence[Answer], what: str) -> list[str]:
  """`answers` as texts, or a UserError naming the first request that failed (for callers
  that cannot go on without every answer)."""
  for answer in answers:
    if isinstance(answer, RequestFailure):
      raise UserError(f"{what}: {answer.error}")
  return list(answers)


class LocalBackend:
  """A judge model loaded into this process (`spec`: hf:DIR, an llmjax run or a step)."""

  def __init__(self, spec: str, parallel, batch_size: int = 16, length_bucket: int = 128,
               dtype: str = "", tokenizer: str = ""):
    from llmjax.infer import Generator
    from llmjax.weights import load_model
    if not spec:
      raise UserError("judge.checkpoint is required for the local backend (hf:DIR or an "
                      "llmjax run)")
    self.loaded = load_model(spec, parallel, tokenizer, dtype)
    if self.loaded.tokenizer is None:
      raise UserError(f"judge checkpoint {spec} comes with no tokenizer; set judge.tokenizer")
    self.generator = Generator(self.loaded.config, parallel, batch_size, length_bucket,
                               self.loaded.tokenizer.pad_id)

  def count_tokens(self, messages) -> int:
    from llmjax.data.tokenizers import encode_messages
    return len(encode_messages(self.loaded.tokenizer, list(messages)))

  def complete_each(self, requests, sampling, on_result=None, show_progress=False,
                    params=None) -> list[Answer]:
    """Generates a batch at a time, reporting each batch's answers as it finishes. A prompt
    the model's positions cannot hold is that request's RequestFailure ("prompt_too_long").

    `params`: this call's parameters (e.g. a merged model's), default the loaded ones; the
    compiled generator is reused whatever the values. Each request's seed fixes its answer,
    whatever it is batched with."""
    from llmjax.data.tokenizers import encode_messages
    from llmjax.infer import SamplingParams, generate_text
    tokenizer, cfg = self.loaded.tokenizer, self.loaded.config
    sampling_params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                     repetition_penalty=sampling.repetition_penalty,
                                     max_new_tokens=sampling.max_tokens)
    answers: list[Answer | None] = [None] * len(requests)
    runnable = []
    for index, request in enumerate(requests):
      prompt = encode_messages(tokenizer, list(request.messages))
      if cfg.positions == "learned" and len(prompt) + sampling.max_tokens - 1 > cfg.max_len:
        answers[index] = RequestFailure(
            "prompt_too_long", f"a prompt of {len(prompt)} tokens + max_tokens "
            f"{sampling.max_tokens} exceeds the judge's {cfg.max_len} positions",
            (cfg.max_len, len(prompt) + sampling.max_tokens - 1))
        if on_result:
          on_result(index, answers[index])
      else:
        runnable.append((index, prompt, request.seed))
    bar = progress_bar(len(runnable), 0, show_progress, "judge")
    try:
      for start in range(0, len(runnable), self.generator.batch_size):
        chunk = runnable[start:start + self.generator.batch_size]
        results, _ = generate_text(self.generator,
                                   self.loaded.params if params is None else params, tokenizer,
                                   [prompt for _, prompt, _ in chunk], sampling_params,
                                   stop_token_ids=tokenizer.stop_ids,
                                   prompt_seeds=[seed for _, _, seed in chunk])
        for (index, _, _), completions in zip(chunk, results, strict=True):
          answers[index] = completions[0].text
          if on_result:
            on_result(index, answers[index])
        bar.update(len(chunk))
    finally:
      bar.close()
    return answers

  def complete(self, requests, sampling, show_progress=False, params=None) -> list[str]:
    return all_answered(self.complete_each(requests, sampling, None, show_progress, params),
                        f"judge {self.loaded.source}")


_RETRY_STATUS = {408, 409, 429}


class OpenAIBackend:
  """Args:
    base_url: e.g. http://127.0.0.1:8000/v1 (the chat completions URL is base_url +
      /chat/completions).
    model: the model name the endpoint serves ('' sends none: a one-model endpoint such as
      vLLM or llmjax.serve answers with the model it serves).
    api_key_env: the environment variable holding the API key ('' for none).
    concurrency: requests in flight at once.
    timeout_s: per request.
    http_retries: retries of a request after a transport error or a retryable status.
    backoff_s: the first retry's wait; it doubles each time.
    tokenizer: the served model's tokenizer spec, to count prompt tokens before sending
      ('' for none).

  A non-retryable answer (4xx other than 408/409/429) or exhausted retries make that request's
  RequestFailure, with the endpoint's message; the other requests go on.
  """

  def __init__(self, base_url: str, model: str, api_key_env: str = "", concurrency: int = 8,
               timeout_s: float = 120.0, http_retries: int = 5, backoff_s: float = 1.0,
               tokenizer: str = ""):
    if not base_url:
      raise UserError("judge.base_url is required for the openai backend (e.g. "
                      "http://127.0.0.1:8000/v1)")
    self.url = base_url.rstrip("/") + "/chat/completions"
    self.model, self.concurrency, self.timeout_s = model, concurrency, timeout_s
    self.http_retries, self.backoff_s = http_retries, backoff_s
    self.headers = {}
    self.tokenizer = None
    if tokenizer:
      from llmjax.data.tokenizers import load_tokenizer
      self.tokenizer = load_tokenizer(tokenizer)
    if api_key_env:
      self.headers["Authorization"] = f"Bearer {api_key(api_key_env)}"

  def _body(self, request: ChatRequest, sampling: JudgeSampling) -> dict[str, Any]:
    body = {"messages": list(request.messages), "temperature": sampling.temperature,
            "top_p": sampling.top_p, "max_tokens": sampling.max_tokens, "seed": request.seed}
    if self.model:  # '' asks a one-model endpoint (vLLM, llmjax.serve) for the model it serves
      body["model"] = self.model
    if sampling.repetition_penalty != 1.0:
      body["repetition_penalty"] = sampling.repetition_penalty
    return body

  async def _one(self, client, semaphore, request, sampling) -> Answer:
    import httpx
    async with semaphore:
      for attempt in range(self.http_retries + 1):
        try:
          response = await client.post(self.url, json=self._body(request, sampling),
                                       headers=self.headers)
        except httpx.TransportError as e:
          problem = f"{type(e).__name__}: {e}"
        else:
          if response.status_code == 200:
            try:
              return response.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
              return RequestFailure("request_error", "a 200 response without choices[0]."
                                    f"message.content: {response.text[:300]}")
          problem = f"HTTP {response.status_code}: {_error_message(response)}"
          if response.status_code not in _RETRY_STATUS and response.status_code < 500:
            return _failure(problem)
        if attempt < self.http_retries:
          await asyncio.sleep(self.backoff_s * 2 ** attempt)
      return RequestFailure("request_error",
                            f"no answer after {self.http_retries + 1} tries ({problem})")

  async def _all(self, requests, sampling, on_result, bar) -> list[Answer]:
    import httpx
    semaphore = asyncio.Semaphore(self.concurrency)
    async with httpx.AsyncClient(timeout=self.timeout_s) as client:
      async def one(index, request):
        answer = await self._one(client, semaphore, request, sampling)
        if on_result:  # in the event loop's thread, before the next answer is handled
          on_result(index, answer)
        bar.update(1)
        return answer
      return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))

  def complete_each(self, requests, sampling, on_result=None, show_progress=False):
    bar = progress_bar(len(requests), 0, show_progress, "judge")
    try:
      return asyncio.run(self._all(list(requests), sampling, on_result, bar))
    finally:
      bar.close()

  def complete(self, requests, sampling, show_progress=False) -> list[str]:
    return all_answered(self.complete_each(requests, sampling, None, show_progress), self.url)

  def count_tokens(self, messages) -> int | None:
    """With `judge.tokenizer` set (the served model's), the prompt's tokens under its chat
    template; else None (an endpoint's count is not known before it answers)."""
    if self.tokenizer is None:
      return None
    from llmjax.data.tokenizers import encode_messages
    return len(encode_messages(self.tokenizer, list(messages)))


def _error_message(response) -> str:
  """The endpoint's error message: OpenAI-style JSON's error.message (vLLM, hosted APIs,
  llmjax.serve), else the body's start."""
  try:
    error = response.json().get("error")
    message = error.get("message") if isinstance(error, dict) else error
    if isinstance(message, str) and message:
      return message
  except (ValueError, AttributeError):
    pass
  return response.text[:300]


# How endpoints say a prompt is longer than the model's context (vLLM, OpenAI, TGI, llmjax).
_CONTEXT_WORDS = re.compile(r"maximum context length|context[_ ]length[_ ]exceeded|"
                            r"exceeds? the model's|too many (?:input )?tokens|prompt is too long",
                            re.IGNORECASE)
_CONTEXT_FIGURES = re.compile(r"maximum context length is (\d+) tokens.*?(?:requested|resulted "
                              r"in) (\d+) tokens", re.IGNORECASE | re.DOTALL)


def _failure(problem: str) -> RequestFailure:
  if not _CONTEXT_WORDS.search(problem):
    return RequestFailure("request_error", problem)
  figures = _CONTEXT_FIGURES.search(problem)
  return RequestFailure("prompt_too_long", problem,
                        (int(figures.group(1)), int(figures.group(2))) if figures else None)


def judge_sampling(judge_config) -> JudgeSampling:
  """The sampling settings of a config's judge section (temperature, top_p, max_tokens,
  repetition_penalty)."""
  return JudgeSampling(temperature=float(judge_config.temperature),
                       top_p=float(judge_config.top_p), max_tokens=int(judge_config.max_tokens),
                       repetition_penalty=float(judge_config.repetition_penalty))


BACKENDS = ("local", "openai")


def api_key(api_key_env: str) -> str:
  """The API key in the environment variable `judge.api_key_env`, or a UserError naming it."""
  key = os.environ.get(api_key_env)
  if not key:
    raise UserError(f"judge.api_key_env = {api_key_env!r}: that environment variable is "
                    "not set")
  return key


def check_judge_config(judge_config, allow_none: bool = False) -> None:
  """Every `judge.*` setting, before a model loads or a request is paid for: one line naming
  the first that cannot work."""
  from urllib.parse import urlparse

  from llmjax import checks
  j = judge_config
  allowed = BACKENDS + (("none",) if allow_none else ())
  checks.expect(j.backend in allowed, "judge.backend", j.backend, f"one of {allowed}")
  if j.backend == "none":
    return
  checks.positive_ints(j, "judge", "batch_size", "length_bucket", "concurrency", "max_tokens")
  checks.non_negative_ints(j, "judge", "http_retries", "max_retries")
  checks.non_negative_floats(j, "judge", "temperature", "backoff_s")
  if "retry_temperature" in j:
    checks.non_negative_floats(j, "judge", "retry_temperature")
  if "max_prompt_tokens" in j:
    checks.non_negative_ints(j, "judge", "max_prompt_tokens")
  checks.expect(j.timeout_s > 0, "judge.timeout_s", j.timeout_s, "a positive number of seconds")
  checks.expect(0 < j.top_p <= 1, "judge.top_p", j.top_p, "a number in (0, 1]")
  if j.backend == "local":
    checks.expect(bool(j.checkpoint), "judge.checkpoint", j.checkpoint,
                  "an llmjax run or hf:DIR for the local backend")
  else:
    url = urlparse(j.base_url)
    checks.expect(url.scheme in ("http", "https") and bool(url.hostname), "judge.base_url",
                  j.base_url, "an http(s) URL of an OpenAI-compatible API, e.g. "
                  "http://127.0.0.1:8000/v1")
    if j.api_key_env:
      api_key(j.api_key_env)
    checks.expect(not j.get("max_prompt_tokens") or bool(j.tokenizer), "judge.max_prompt_tokens",
                  j.get("max_prompt_tokens"), "0 with the openai backend unless judge.tokenizer "
                  "names the served model's tokenizer (to count a prompt's tokens)")


def make_backend(judge_config, parallel=None) -> Backend:
  """The backend `judge_config.backend` names (local | openai)."""
  if judge_config.backend == "local":
    from llmjax.parallel import Parallel
    return LocalBackend(judge_config.checkpoint, parallel or Parallel.from_config({"data": -1}),
                        judge_config.batch_size, judge_config.length_bucket,
                        judge_config.dtype, judge_config.tokenizer)
  if judge_config.backend == "openai":
    return OpenAIBackend(judge_config.base_url, judge_config.model, judge_config.api_key_env,
                         judge_config.concurrency, judge_config.timeout_s,
                         judge_config.http_retries, judge_config.backoff_s,
                         judge_config.tokenizer)
  raise UserError(f"judge.backend = {judge_config.backend!r}: expected 'local' or 'openai'")
