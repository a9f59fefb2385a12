"""An OpenAI-compatible server over an llmjax model:

  python -m llmjax.serve --checkpoint hf:DIR|RUN|RUN/checkpoints/STEP [--port 8000]

Serves /v1/models, /v1/chat/completions and /v1/completions (temperature, top_p, max_tokens
or max_completion_tokens, n, stop, seed, stream with stream_options.include_usage, and vLLM's
repetition_penalty) on 127.0.0.1 by default, batching concurrent requests through the engine's
generator (llmjax.serving). A request may leave `model` out or empty: it means the one served.
Errors are the OpenAI API's JSON. Chat prompts go through the tokenizer's chat template, or the
plain "role: content" format for tokenizers that ship none. Bad arguments: one line, exit 2.
"""

import argparse
import os
import socket
import sys

from llmjax.errors import UserError


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m llmjax.serve", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, help="hf:DIR, an llmjax run or RUN/"
                      "checkpoints/STEP")
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--port", type=int, default=8000)
  parser.add_argument("--model-name", default="", help="the model id clients send (default: "
                      "the checkpoint spec)")
  parser.add_argument("--tokenizer", default="", help="override the checkpoint's tokenizer")
  parser.add_argument("--dtype", default="", help="float32 | bfloat16 (HF checkpoints)")
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--length-bucket", type=int, default=64)
  parser.add_argument("--max-wait-ms", type=float, default=5.0)
  parser.add_argument("--max-tokens", type=int, default=1024, help="the largest max_tokens a "
                      "request may ask for")
  args = parser.parse_args(argv)
  try:
    check_arguments(args)  # before the model loads: a typo costs no minutes
    import uvicorn

    from llmjax.parallel import Parallel
    from llmjax.serving.app import ModelServer
    from llmjax.weights import load_model
    parallel = Parallel.from_config({"data": -1})
    loaded = load_model(args.checkpoint, parallel, args.tokenizer, args.dtype)
    if loaded.tokenizer is None:
      raise UserError(f"checkpoint {args.checkpoint} comes with no tokenizer; pass --tokenizer")
    server = ModelServer(loaded, parallel, args.model_name or args.checkpoint, args.batch_size,
                         args.length_bucket, args.max_wait_ms / 1000, args.max_tokens)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"serving {loaded.source} as {server.name!r} on http://{args.host}:{args.port}/v1",
        file=sys.stderr, flush=True)
  uvicorn.run(server.app(), host=args.host, port=args.port, log_level="warning")
  return 0


def check_arguments(args) -> None:
  """Every setting, then whether the address can be listened on; a UserError names the first
  that cannot work."""
  if not 1 <= args.port <= 65535:
    raise UserError(f"--port {args.port}: expected a TCP port, 1 to 65535")
  for flag, value in (("--batch-size", args.batch_size), ("--length-bucket", args.length_bucket),
                      ("--max-tokens", args.max_tokens)):
    if value < 1:
      raise UserError(f"{flag} {value}: expected a positive integer")
  if not args.max_wait_ms >= 0:
    raise UserError(f"--max-wait-ms {args.max_wait_ms}: expected a number >= 0")
  try:
    with socket.create_server((args.host, args.port)):
      pass
  except OSError as e:
    raise UserError(f"--host {args.host} --port {args.port}: cannot listen there "
                    f"({os.strerror(e.errno) if e.errno else e})") from None


if __name__ == "__main__":
  sys.exit(main())
