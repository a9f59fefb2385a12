"""An OpenAI-compatible chat endpoint on 127.0.0.1 that answers from a Python function: the
judge tests' stand-in for vLLM or a hosted API."""

import threading
import time


def scripted_server(answer, port_box, fail_first=0):
  """An OpenAI-compatible endpoint on 127.0.0.1 answering `answer(body)`: a text, or
  (status, message) for an OpenAI-style error; the first `fail_first` requests get HTTP 503.
  `seen["bodies"]` holds every request body."""
  import uvicorn
  from starlette.applications import Starlette
  from starlette.responses import JSONResponse
  from starlette.routing import Route
  seen = {"requests": 0, "bodies": []}

  async def chat(request):
    body = await request.json()
    seen["requests"] += 1
    seen["bodies"].append(body)
    if seen["requests"] <= fail_first:
      return JSONResponse({"error": {"message": "busy"}}, 503)
    content = answer(body)
    if isinstance(content, tuple):
      status, message = content
      return JSONResponse({"error": {"message": message, "type": "BadRequestError",
                                     "param": None, "code": status}}, status)
    return JSONResponse({"id": "x", "object": "chat.completion", "created": 0,
                         "model": body.get("model", "served"),
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant",
                                                  "content": content}}]})

  app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
  config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error")
  server = uvicorn.Server(config)
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  while not server.started:
    time.sleep(0.05)
  port_box.append(server.servers[0].sockets[0].getsockname()[1])
  return server, seen
