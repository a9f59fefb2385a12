"""Judge backends behind one interface: `complete(requests, sampling) -> texts`, one per
request, in order.

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
from typing import Any, Protocol, Sequence

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


class Backend(Protocol):
  def complete(self, requests: Sequence[ChatRequest], sampling: JudgeSampling,
               show_progress: bool = False) -> list[str]:
    ...


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

  def complete(self, requests, sampling, show_progress=False, params=None):
    """`params`: this call's parameters (e.g. a merged model's), default the loaded ones; the
    compiled generator is reused whatever the values."""
    from llmjax.data.tokenizers import encode_messages
    from llmjax.infer import SamplingParams, generate_text
    tokenizer = self.loaded.tokenizer
    prompts = [encode_messages(tokenizer, list(r.messages)) for r in requests]
    sampling_params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                     repetition_penalty=sampling.repetition_penalty,
                                     max_new_tokens=sampling.max_tokens)
    results, _ = generate_text(self.generator, self.loaded.params if params is None else params,
                               tokenizer, prompts, sampling_params,
                               stop_token_ids=tokenizer.stop_ids, show_progress=show_progress,
                               prompt_seeds=[r.seed for r in requests])
    return [completions[0].text for completions in results]


_RETRY_STATUS = {408, 409, 429}


class OpenAIBackend:
  """Args:
    base_url: e.g. http://127.0.0.1:8000/v1 (the chat completions URL is base_url +
      /chat/completions).
    model: the model name the endpoint serves.
    api_key_env: the environment variable holding the API key ('' for none).
    concurrency: requests in flight at once.
    timeout_s: per request.
    http_retries: retries of a request after a transport error or a retryable status.
    backoff_s: the first retry's wait; it doubles each time.
  """

  def __init__(self, base_url: str, model: str, api_key_env: str = "", concurrency: int = 8,
               timeout_s: float = 120.0, http_retries: int = 5, backoff_s: float = 1.0):
    if not base_url:
      raise UserError("judge.base_url is required for the openai backend (e.g. "
                      "http://127.0.0.1:8000/v1)")
    self.url = base_url.rstrip("/") + "/chat/completions"
    self.model, self.concurrency, self.timeout_s = model, concurrency, timeout_s
    self.http_retries, self.backoff_s = http_retries, backoff_s
    self.headers = {}
    if api_key_env:
      self.headers["Authorization"] = f"Bearer {api_key(api_key_env)}"

  def _body(self, request: ChatRequest, sampling: JudgeSampling) -> dict[str, Any]:
    body = {"model": self.model, "messages": list(request.messages),
            "temperature": sampling.temperature, "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens, "seed": request.seed}
    if sampling.repetition_penalty != 1.0:
      body["repetition_penalty"] = sampling.repetition_penalty
    return body

  async def _one(self, client, semaphore, request, sampling) -> str:
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
              raise UserError(f"{self.url}: a 200 response without choices[0].message."
                              f"content: {response.text[:200]}") from None
          problem = f"HTTP {response.status_code}: {response.text[:200]}"
          if response.status_code not in _RETRY_STATUS and response.status_code < 500:
            raise UserError(f"{self.url}: {problem}")
        if attempt < self.http_retries:
          await asyncio.sleep(self.backoff_s * 2 ** attempt)
      raise UserError(f"{self.url}: no answer after {self.http_retries + 1} tries ({problem})")

  async def _all(self, requests, sampling, bar) -> list[str]:
    import httpx
    semaphore = asyncio.Semaphore(self.concurrency)
    async with httpx.AsyncClient(timeout=self.timeout_s) as client:
      async def one(request):
        text = await self._one(client, semaphore, request, sampling)
        bar.update(1)
        return text
      return list(await asyncio.gather(*(one(r) for r in requests)))

  def complete(self, requests, sampling, show_progress=False):
    bar = progress_bar(len(requests), 0, show_progress, "judge")
    try:
      return asyncio.run(self._all(list(requests), sampling, bar))
    finally:
      bar.close()


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
                         judge_config.http_retries, judge_config.backoff_s)
  raise UserError(f"judge.backend = {judge_config.backend!r}: expected 'local' or 'openai'")
