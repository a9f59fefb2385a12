"""Hugging Face tokenizers (`tokenizer.json`, via the `tokenizers` package) behind the engine's
Tokenizer interface, with the special-token and chat-template rules of the model's files.

Special tokens come from tokenizer_config.json / special_tokens_map.json; stop ids from
generation_config.json's eos_token_id (an int or a list) plus the tokenizer's EOS. Prompts are
encoded as transformers encodes model inputs (`encode_prompt`: the tokenizer's own
post-processor decides BOS, e.g. yes for Llama, no for GPT-2); chat prompts are rendered from the
template and encoded without adding specials, since the template writes them.
"""

import json
import os
from typing import Any, Sequence

from llmjax.data.tokenizers import Tokenizer
from llmjax.errors import UserError
from llmjax.interop.chat_template import render_chat


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise UserError(f"{path}: invalid JSON ({e})") from None


def _token_text(value) -> str | None:
  return value.get("content") if isinstance(value, dict) else value


class HFTokenizer(Tokenizer):
  """A tokenizer.json with its model's special tokens and chat template."""

  def __init__(self, directory: str):
    from tokenizers import Tokenizer as FastTokenizer
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
      raise UserError(f"{directory}: no tokenizer.json")
    self._tok = FastTokenizer.from_file(path)
    # Some tokenizer.json files switch on padding/truncation; batching pads here, and nothing
    # is truncated silently.
    self._tok.no_padding()
    self._tok.no_truncation()
    config = {**_read_json(os.path.join(directory, "special_tokens_map.json")),
              **_read_json(os.path.join(directory, "tokenizer_config.json"))}
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def token_id(key: str) -> int | None:
      text = _token_text(config.get(key))
      return None if text is None else self._tok.token_to_id(text)

    self.bos_token, self.eos_token = _token_text(config.get("bos_token")), _token_text(
        config.get("eos_token"))
    self.bos_id, self.eos_id = token_id("bos_token"), token_id("eos_token")
    pad = token_id("pad_token")
    self.pad_id = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)
    generation = _read_json(os.path.join(directory, "generation_config.json"))
    eos = generation.get("eos_token_id", [])
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    self._stop_ids = sorted(set(eos) | ({self.eos_id} if self.eos_id is not None else set()))
    self.chat_template = self._find_chat_template(directory, config)

  @property
  def stop_ids(self) -> list[int]:
    return self._stop_ids

  @staticmethod
  def _find_chat_template(directory: str, config: dict[str, Any]) -> str | None:
    jinja = os.path.join(directory, "chat_template.jinja")
    if os.path.isfile(jinja):
      with open(jinja) as f:
        return f.read()
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: use 'default'
      named = {t.get("name"): t.get("template") for t in template}
      template = named.get("default")
    return template

  def _encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    if (add_bos and self.bos_id is None) or (add_eos and self.eos_id is None):
      raise UserError(f"this tokenizer defines no {'BOS' if add_bos else 'EOS'} token")
    return super().encode(text, add_bos, add_eos)

  def encode_prompt(self, text: str) -> list[int]:
    """As transformers encodes model inputs: the tokenizer's post-processor adds its specials."""
    return self._tok.encode(text, add_special_tokens=True).ids

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size],
                            skip_special_tokens=True)

  def apply_chat_template(self, messages: list[dict[str, Any]],
                          add_generation_prompt: bool = True) -> str:
    if not self.chat_template:
      raise UserError("this model's tokenizer files carry no chat template (no "
                      "chat_template.jinja and no chat_template in tokenizer_config.json); "
                      "use plain prompts")
    return render_chat(self.chat_template, messages, add_generation_prompt,
                       bos_token=self.bos_token or "", eos_token=self.eos_token or "")

  def encode_chat(self, messages: list[dict[str, Any]],
                  add_generation_prompt: bool = True) -> list[int]:
    """Renders the chat template and encodes it without adding specials (it writes them)."""
    return self._encode(self.apply_chat_template(messages, add_generation_prompt))
