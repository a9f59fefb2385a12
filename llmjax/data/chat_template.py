"""Chat templates: the Jinja templates model repositories ship, rendered the way transformers
renders them (sandboxed, trim_blocks + lstrip_blocks, `raise_exception` and `tojson`)."""

import functools
import json
from typing import Any

from llmjax.errors import UserError


@functools.lru_cache(maxsize=8)
def _compile(template: str):
  from jinja2 import TemplateError
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  def raise_exception(message):
    raise UserError(f"chat template: {message}")

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=["jinja2.ext.loopcontrols"])
  env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False,
                                                                 indent=indent)
  env.globals["raise_exception"] = raise_exception
  try:
    return env.from_string(template)
  except TemplateError as e:
    raise UserError(f"chat template does not parse: {e}") from None


def render_chat(template: str, messages: list[dict[str, Any]], add_generation_prompt: bool,
                **special_tokens: str) -> str:
  """Renders `messages` ([{'role': ..., 'content': ...}, ...]) with a chat template."""
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
      raise UserError(f"chat message {i}: expected an object with 'role' and 'content'")
  return _compile(template).render(messages=messages,
                                   add_generation_prompt=add_generation_prompt, **special_tokens)
