"""The OpenAI API's request and response shapes for /v1/chat/completions, /v1/completions and
/v1/models: request bodies read into generation settings (or one clear error), completions
written back as the API's JSON objects, or as its server-sent chunks for `stream=True`."""

import dataclasses
import time
import uuid
from typing import Any

from llmjax.infer import SamplingParams


class RequestError(ValueError):
  """A request the API rejects (HTTP 400 unless `status` says otherwise): the message and the
  parameter at fault."""

  def __init__(self, message: str, param: str | None = None, status: int = 400,
               kind: str = "invalid_request_error"):
    super().__init__(message)
    self.param, self.status, self.kind = param, status, kind

  def body(self) -> dict[str, Any]:
    return error_body(str(self), self.kind, self.param)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
  """An error as the OpenAI API writes one (its clients read `error.message`)."""
  return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
  """What one API request asks the generator for."""

  sampling: SamplingParams
  stop: tuple[str, ...]
  seed: int | None
  messages: tuple[dict[str, str], ...] | None  # chat
  prompt: str | None  # completions
  stream: bool = False
  include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


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
  stream = body.get("stream") or False
  if not isinstance(stream, bool):
    raise RequestError(f"stream = {stream!r}: expected true or false", "stream")
  options = body.get("stream_options") or {}
  if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
    raise RequestError("stream_options: expected {include_usage: true|false}", "stream_options")
  if options and not stream:
    raise RequestError("stream_options: only allowed with stream = true", "stream_options")
  # max_completion_tokens is the newer name (OpenAI's chat API); it wins over max_tokens
  length_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else (
      "max_tokens")
  sampling = SamplingParams(
      temperature=float(_number(body, "temperature", 1.0, 0.0, 2.0)),
      top_p=float(_number(body, "top_p", 1.0, 1e-9, 1.0)),
      max_new_tokens=_number(body, length_key, min(256, max_tokens_limit), 1,
                             max_tokens_limit, integer=True),
      n=_number(body, "n", 1, 1, 16, integer=True),
      # vLLM's extension of the API (judges such as Prometheus sample with 1.03)
      repetition_penalty=float(_number(body, "repetition_penalty", 1.0, 1e-3, 10.0)))
  return GenerationRequest(sampling, tuple(stop), seed, messages, prompt, stream,
                           bool(options.get("include_usage", False)))


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


def text_pieces(text: str, tokens, decode) -> list[str]:
  """`text` (a completion's final text) in the pieces its tokens add, for streaming: each
  piece is what one more token adds to the decoded prefix, cut where `text` ends (stop
  strings), held back while a prefix is not yet a prefix of `text` (a character split over
  tokens); the pieces concatenate to `text` exactly."""
  pieces, emitted = [], ""
  for k in range(1, len(tokens) + 1):
    prefix = decode(list(tokens[:k]))[:len(text)]
    if len(prefix) > len(emitted) and text.startswith(prefix):
      pieces.append(prefix[len(emitted):])
      emitted = prefix
  if emitted != text:
    pieces.append(text[len(emitted):])
  return pieces


def stream_chunks(chat: bool, model: str, prompt_tokens: int, completions, decode,
                  include_usage: bool) -> list[dict[str, Any]]:
  """The chunks of a streamed answer as the OpenAI API sends them: for chat, each choice's
  role first, then its content pieces, then its finish_reason (chat.completion.chunk); for
  completions, text pieces (text_completion); with `include_usage`, a last chunk with no
  choices and the usage."""
  ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
  created, kind = int(time.time()), "chat.completion.chunk" if chat else "text_completion"

  def chunk(choices, **extra):
    return {"id": ident, "object": kind, "created": created, "model": model,
            "choices": choices, **extra}

  def choice(index, piece=None, role=None, finish=None):
    if not chat:
      return {"index": index, "text": piece or "", "finish_reason": finish, "logprobs": None}
    delta = {"role": role} if role else {}
    if piece is not None:
      delta["content"] = piece
    return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}

  chunks = []
  for index, completion in enumerate(completions):
    if chat:
      chunks.append(chunk([choice(index, "", role="assistant")]))
    for piece in text_pieces(completion.text, completion.tokens, decode):
      chunks.append(chunk([choice(index, piece)]))
    chunks.append(chunk([choice(index, finish=completion.finish_reason)]))
  if include_usage:
    chunks.append(chunk([], usage=_usage(prompt_tokens, completions)))
  return chunks
