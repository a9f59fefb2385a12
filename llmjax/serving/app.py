"""The Starlette application: /v1/models, /v1/chat/completions and /v1/completions over one
model, its tokenizer and a RequestBatcher; /health reports the requests served and the
generator calls they took. Every error is the OpenAI API's JSON (404 and 405 too). A streamed
answer (`stream=True`) is sent as server-sent chunks once its batch has finished generating
(the generator decodes a batch in one compiled loop), so it streams the format, not earlier
tokens; the chunks concatenate to the non-streamed answer."""

import contextlib
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from llmjax.data.tokenizers import encode_messages
from llmjax.errors import UserError
from llmjax.infer import Generator, generate_text
from llmjax.serving import openai_api
from llmjax.serving.batcher import RequestBatcher


class ModelServer:
  """One loaded model (llmjax.weights.LoadedModel) served under `name`."""

  def __init__(self, loaded, parallel, name: str, batch_size: int = 16,
               length_bucket: int = 64, max_wait_s: float = 0.005, max_tokens: int = 1024):
    self.loaded, self.name, self.max_tokens = loaded, name, max_tokens
    self.tokenizer = loaded.tokenizer
    self.generator = Generator(loaded.config, parallel, batch_size, length_bucket,
                               self.tokenizer.pad_id)
    self.batcher = RequestBatcher(self._generate, batch_size, max_wait_s)
    self.created = int(time.time())

  def _generate(self, prompts, sampling, seeds, stop):
    results, _ = generate_text(self.generator, self.loaded.params, self.tokenizer, prompts,
                               sampling, stop_token_ids=self.tokenizer.stop_ids,
                               stop_strings=stop, prompt_seeds=seeds)
    return results

  def prompt_ids(self, request: openai_api.GenerationRequest) -> list[int]:
    if request.messages is not None:
      return encode_messages(self.tokenizer, list(request.messages))
    return self.tokenizer.encode_prompt(request.prompt)

  async def complete(self, http: Request, chat: bool):
    try:
      body = json.loads(await http.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
      return JSONResponse(openai_api.RequestError("the body is not JSON").body(), 400)
    try:
      request = openai_api.read_request(body, chat, self.max_tokens)
      if body.get("model") not in (None, "", self.name):  # none or '': the one served
        raise openai_api.RequestError(f"model {body.get('model')!r} is not served here; this "
                                      f"server has {self.name!r}", "model", 404,
                                      "model_not_found")
      prompt = self.prompt_ids(request)
      cfg = self.loaded.config
      if cfg.positions == "learned" and len(prompt) + request.sampling.max_new_tokens > (
          cfg.max_len + 1):
        raise openai_api.RequestError(
            f"This model's maximum context length is {cfg.max_len + 1} tokens. However, you "
            f"requested {len(prompt) + request.sampling.max_new_tokens} tokens "
            f"({len(prompt)} in the prompt, {request.sampling.max_new_tokens} in the "
            "completion).", "max_tokens")
    except (openai_api.RequestError, UserError) as e:
      error = e if isinstance(e, openai_api.RequestError) else openai_api.RequestError(str(e))
      return JSONResponse(error.body(), error.status)
    try:
      completions = await self.batcher.submit(prompt, request.sampling, request.seed,
                                              request.stop)
    except Exception as e:  # noqa: BLE001 - the client gets the API's error, not a traceback
      return JSONResponse(openai_api.error_body(f"generation failed: {type(e).__name__}: {e}",
                                                "server_error"), 500)
    if request.stream:
      chunks = openai_api.stream_chunks(chat, self.name, len(prompt), completions,
                                        self.tokenizer.decode, request.include_usage)
      return StreamingResponse(_server_sent_events(chunks), media_type="text/event-stream")
    build = openai_api.chat_completion if chat else openai_api.text_completion
    return JSONResponse(build(self.name, len(prompt), completions))

  def app(self) -> Starlette:
    async def models(_: Request):
      return JSONResponse(openai_api.model_list(self.name, self.created))

    async def health(_: Request):  # not part of the OpenAI API: load and batching counters
      return JSONResponse({"model": self.name, "requests": self.batcher.requests,
                           "generator_calls": self.batcher.batches})

    async def chat(http: Request):
      return await self.complete(http, chat=True)

    async def completions(http: Request):
      return await self.complete(http, chat=False)

    @contextlib.asynccontextmanager
    async def lifespan(_):
      yield
      self.batcher.close()

    async def http_error(_: Request, error: HTTPException):  # 404, 405: the API's JSON too
      kind = {404: "not_found_error", 405: "method_not_allowed"}.get(error.status_code,
                                                                     "invalid_request_error")
      return JSONResponse(openai_api.error_body(f"{error.detail}", kind), error.status_code,
                          headers=getattr(error, "headers", None))

    return Starlette(routes=[Route("/health", health, methods=["GET"]),
                             Route("/v1/models", models, methods=["GET"]),
                             Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/completions", completions, methods=["POST"])],
                     exception_handlers={HTTPException: http_error}, lifespan=lifespan)


async def _server_sent_events(chunks):
  for chunk in chunks:
    yield f"data: {json.dumps(chunk)}\n\n"
  yield "data: [DONE]\n\n"
