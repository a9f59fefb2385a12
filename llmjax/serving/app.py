"""The Starlette application: /v1/models, /v1/chat/completions and /v1/completions over one
model, its tokenizer and a RequestBatcher; /health reports the requests served and the
generator calls they took."""

import contextlib
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
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

  async def complete(self, http: Request, chat: bool) -> JSONResponse:
    try:
      body = json.loads(await http.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
      return JSONResponse(openai_api.RequestError("the body is not JSON").body(), 400)
    try:
      request = openai_api.read_request(body, chat, self.max_tokens)
      if body.get("model") not in (None, self.name):
        raise openai_api.RequestError(f"model {body.get('model')!r} is not served here; this "
                                      f"server has {self.name!r}", "model")
      prompt = self.prompt_ids(request)
      cfg = self.loaded.config
      if cfg.positions == "learned" and len(prompt) + request.sampling.max_new_tokens > (
          cfg.max_len + 1):
        raise openai_api.RequestError(
            f"{len(prompt)} prompt tokens + max_tokens {request.sampling.max_new_tokens} exceed "
            f"the model's {cfg.max_len} positions", "max_tokens")
    except (openai_api.RequestError, UserError) as e:
      error = e if isinstance(e, openai_api.RequestError) else openai_api.RequestError(str(e))
      return JSONResponse(error.body(), 400)
    completions = await self.batcher.submit(prompt, request.sampling, request.seed,
                                            request.stop)
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

    return Starlette(routes=[Route("/health", health, methods=["GET"]),
                             Route("/v1/models", models, methods=["GET"]),
                             Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/completions", completions, methods=["POST"])],
                     lifespan=lifespan)
