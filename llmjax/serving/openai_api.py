"""The OpenAI API's request and response shapes for /v1/chat/completions, /v1/completions and
/v1/models: request bodies read into generation settings (or one clear error), completions
written back as the API's JSON objects."""

import dataclasses
import time
import uuid
from typing import Any

from llmjax.infer import SamplingParams


class RequestError(ValueError):
  """A request the API rejects (HTTP 400): the message and the parameter at fault."""

  def __init__(self, message: str, param: str | None = None):
    super().__init__(message)
    self.param = param

  def body(self) -> dict[str, Any]:
    return {"error": {"message": str(self), "type": "invalid_request_error",
                      "param": self.param, "code": None}}


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
  """What one API request asks the generator for."""

  sampling: SamplingParams
  stop: tuple[str, ...]
  seed: int | None
  messages: tuple[dict[str, str], ...] | None  # chat
  prompt: str | None  # completions


def _number(body, key, default, low, high, integer=False):
  value = body.get(key, default)
  if value is None:
    value = default
  kind = int if integer else (int, float)
  if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
    raise RequestError(f"{key} = {value!r}: expected {'an integer' if integer else 'a number'} "
                       f"in [{low}, {high}]", key)
  return value


def read_request(body: Any, chat: bool, max_tokens_limit: int) -> GenerationRequest:
  """A request body of /v1/chat/completions (`chat`) or /v1/completions, validated."""
  if not isinstance(body, dict):
    raise RequestError("the request body must be a JSON object")
  messages = prompt = None
  if chat:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
      raise RequestError("messages: expected a non-empty list of {role, content}", "messages")
    for i, m in enumerate(messages):
      if not (isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
              and isinstance(m.get("content"), str)):
        raise RequestError(f"messages[{i}]: expected {{role: system|user|assistant, content: "
                           "string}", "messages")
    messages = tuple({"role": m["role"], "content": m["content"]} for m in messages)
  else:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
      prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
      raise RequestError("prompt: expected a non-empty string", "prompt")
  stop = body.get("stop")
  stop = () if stop is None else (stop,) if isinstance(stop, str) else stop
  if not isinstance(stop, (list, tuple)) or len(stop) > 4 or not all(
      isinstance(s, str) and s for s in stop):
    raise RequestError("stop: expected a string or a list of up to 4 non-empty strings", "stop")
  seed = body.get("seed")
  if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
    raise RequestError(f"seed = {seed!r}: expected an integer", "seed")
  sampling = SamplingParams(
      temperature=float(_number(body, "temperature", 1.0, 0.0, 2.0)),
      top_p=float(_number(body, "top_p", 1.0, 1e-9, 1.0)),
      max_new_tokens=_number(body, "max_tokens", min(256, max_tokens_limit), 1,
                             max_tokens_limit, integer=True),
      n=_number(body, "n", 1, 1, 16, integer=True),
      # vLLM's extension of the API (judges such as Prometheus sample with 1.03)
      repetition_penalty=float(_number(body, "repetition_penalty", 1.0, 1e-3, 10.0)))
  return GenerationRequest(sampling, tuple(stop), seed, messages, prompt)


def _usage(prompt_tokens: int, completions) -> dict[str, int]:
  generated = sum(len(c.tokens) for c in completions)
  return {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
          "total_tokens": prompt_tokens + generated}


def chat_completion(model: str, prompt_tokens: int, completions) -> dict[str, Any]:
  return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
          "created": int(time.time()), "model": model,
          "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                       "finish_reason": c.finish_reason, "logprobs": None}
                      for i, c in enumerate(completions)],
          "usage": _usage(prompt_tokens, completions)}


def text_completion(model: str, prompt_tokens: int, completions) -> dict[str, Any]:
  return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
          "created": int(time.time()), "model": model,
          "choices": [{"index": i, "text": c.text, "finish_reason": c.finish_reason,
                       "logprobs": None} for i, c in enumerate(completions)],
          "usage": _usage(prompt_tokens, completions)}


def model_list(model: str, created: int) -> dict[str, Any]:
  return {"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                      "owned_by": "llmjax"}]}
