"""Tokenizers behind one interface: byte-level (the default for synthetic data), sentencepiece,
and Hugging Face `tokenizer.json` files (via the `tokenizers` package) with the special-token and
chat-template rules of the model's files.

Every tokenizer has `vocab_size`, `pad_id`, `bos_id`, `eos_id`, `encode`, `decode` and
`batch_encode` (padding on the side the caller names: right for training, left for decoding).

Train a sentencepiece model on local text from the command line:
  python -m llmjax.data.tokenizers train --input corpus.txt --model_prefix spm --vocab_size 4000
"""

import argparse
import os
import pathlib
import sys
from typing import Any, Sequence

import numpy as np

from llmjax.data.chat_template import render_chat
from llmjax.data.readers import read_json_object
from llmjax.errors import UserError


class Tokenizer:
  """The common interface. Subclasses implement `vocab_size`, ids and `_encode`/`decode`."""

  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def _encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def decode(self, ids: Sequence[int]) -> str:
    raise NotImplementedError

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    return [self.bos_id] * add_bos + self._encode(text) + [self.eos_id] * add_eos

  def encode_prompt(self, text: str) -> list[int]:
    """A generation prompt as the model saw documents in training: BOS, then the text."""
    return self.encode(text, add_bos=True)

  @property
  def stop_ids(self) -> list[int]:
    """Token ids that end a generation."""
    return [self.eos_id]

  def encode_chat(self, messages, add_generation_prompt: bool = True) -> list[int]:
    raise UserError("chat prompts need a tokenizer with a chat template (a Hugging Face "
                    "tokenizer directory); this one has none")

  def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
    raise UserError("chat prompts need a tokenizer with a chat template (a Hugging Face "
                    "tokenizer directory); this one has none")

  def encode_text(self, text: str) -> list[int]:
    """Text that already holds its special tokens (a rendered chat template), encoded as is."""
    return self._encode(text)

  def batch_encode(self, texts: Sequence[str], max_len: int | None = None,
                   padding_side: str = "right", add_bos: bool = False,
                   add_eos: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Encodes and pads a batch.

    Args:
      texts: B strings.
      max_len: pad (and truncate, keeping the end for left padding and the start for right
        padding) to this length; default the longest row.
      padding_side: 'right' or 'left'.
    Returns:
      (ids_BxL int32, mask_BxL int32 with 1 on real tokens).
    """
    if padding_side not in ("left", "right"):
      raise UserError(f"padding_side = {padding_side!r}: expected 'left' or 'right'")
    rows = [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]
    length = max_len or max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), length), self.pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
      row = row[-length:] if padding_side == "left" else row[:length]
      span = slice(length - len(row), length) if padding_side == "left" else slice(0, len(row))
      ids[i, span], mask[i, span] = row, 1
    return ids, mask


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes shifted past three specials: pad 0, bos 1, eos 2, byte b -> b + 3."""

  vocab_size, pad_id, bos_id, eos_id = 259, 0, 1, 2
  _OFFSET = 3

  def _encode(self, text: str) -> list[int]:
    return [b + self._OFFSET for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    # Specials and ids past the vocabulary (a model's padded embedding rows) decode to nothing.
    data = bytes(int(i) - self._OFFSET for i in ids if self._OFFSET <= int(i) < self.vocab_size)
    return data.decode("utf-8", errors="replace")


class SentencePieceTokenizer(Tokenizer):
  """A trained sentencepiece `.model`; pad falls back to eos when the model defines none."""

  def __init__(self, model_path: os.PathLike):
    import sentencepiece as spm
    if not os.path.isfile(model_path):
      raise UserError(f"sentencepiece model {model_path}: file not found")
    try:
      self._sp = spm.SentencePieceProcessor(model_file=os.fspath(model_path))
    except (RuntimeError, OSError) as e:
      raise UserError(f"sentencepiece model {model_path}: cannot be parsed "
                      f"({str(e).splitlines()[0]})") from None
    self.vocab_size = self._sp.get_piece_size()
    self.bos_id, self.eos_id = self._sp.bos_id(), self._sp.eos_id()
    self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eos_id

  def _encode(self, text: str) -> list[int]:
    return list(self._sp.encode(text))

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size])


def _read_json(path: str) -> dict[str, Any]:
  """The file's object, or {} when the (optional) file is absent."""
  return read_json_object(path) if os.path.isfile(path) else {}


def _token_text(value) -> str | None:
  return value.get("content") if isinstance(value, dict) else value


class HFTokenizer(Tokenizer):
  """A tokenizer.json with its model's special tokens and chat template.

  Special tokens come from tokenizer_config.json / special_tokens_map.json; stop ids from
  generation_config.json's eos_token_id (an int or a list) plus the tokenizer's EOS. Prompts are
  encoded as transformers encodes model inputs (`encode_prompt`: the tokenizer's own
  post-processor decides BOS, e.g. yes for Llama, no for GPT-2); chat prompts are rendered from
  the template and encoded without adding specials, since the template writes them.
  """

  def __init__(self, directory: str):
    from tokenizers import Tokenizer as FastTokenizer
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
      raise UserError(f"{directory}: no tokenizer.json")
    try:
      self._tok = FastTokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 - the Rust library raises plain Exceptions
      raise UserError(f"{path}: not a readable tokenizer.json "
                      f"({str(e).splitlines()[0]})") from None
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


def load_tokenizer(spec: str) -> Tokenizer:
  """'byte'; 'spm:PATH' or a path ending in .model for sentencepiece; 'hf:DIR' or a directory
  with tokenizer.json for a Hugging Face tokenizer (a directory with only a sentencepiece
  tokenizer.model loads that)."""
  if spec == "byte":
    return ByteTokenizer()
  if spec.startswith("hf:") or os.path.isdir(spec):
    directory = spec[len("hf:"):] if spec.startswith("hf:") else spec
    if os.path.isfile(os.path.join(directory, "tokenizer.json")):
      return HFTokenizer(directory)
    if os.path.isfile(os.path.join(directory, "tokenizer.model")):
      return SentencePieceTokenizer(os.path.join(directory, "tokenizer.model"))
    raise UserError(f"tokenizer = {spec!r}: the directory has no tokenizer.json or "
                    "tokenizer.model")
  path = spec[len("spm:"):] if spec.startswith("spm:") else spec
  if path.endswith(".model"):
    return SentencePieceTokenizer(path)
  raise UserError(f"tokenizer = {spec!r}: expected 'byte', 'spm:PATH.model' or 'hf:DIR'")


def train_sentencepiece(inputs: Sequence[os.PathLike], model_prefix: os.PathLike,
                        vocab_size: int, model_type: str = "bpe") -> pathlib.Path:
  """Trains a sentencepiece model on local text files; returns the `.model` path.

  Ids: pad 0, bos 1, eos 2, unk 3, so it slots into the same conventions as ByteTokenizer.
  """
  import sentencepiece as spm
  missing = [p for p in inputs if not os.path.isfile(p)]
  if missing:
    raise UserError(f"sentencepiece training input {missing[0]}: file not found")
  spm.SentencePieceTrainer.train(
      input=",".join(map(os.fspath, inputs)), model_prefix=os.fspath(model_prefix),
      vocab_size=vocab_size, model_type=model_type, pad_id=0, bos_id=1, eos_id=2, unk_id=3,
      byte_fallback=True, character_coverage=1.0, minloglevel=2)
  return pathlib.Path(f"{model_prefix}.model")


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m llmjax.data.tokenizers")
  sub = parser.add_subparsers(dest="command", required=True)
  train = sub.add_parser("train", help="train a sentencepiece model on local text files")
  train.add_argument("--input", nargs="+", required=True)
  train.add_argument("--model_prefix", required=True)
  train.add_argument("--vocab_size", type=int, default=4000)
  train.add_argument("--model_type", default="bpe", choices=("bpe", "unigram", "char", "word"))
  args = parser.parse_args(argv)
  try:
    path = train_sentencepiece(args.input, args.model_prefix, args.vocab_size, args.model_type)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except RuntimeError as e:  # sentencepiece's own complaints (e.g. vocab too large for corpus)
    print(f"error: sentencepiece training failed: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2
  print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())


def has_chat_template(tokenizer: Tokenizer) -> bool:
  return bool(getattr(tokenizer, "chat_template", None))


def render_plain_chat(messages: list[dict[str, Any]]) -> str:
  """The chat format for tokenizers that ship no template (byte, sentencepiece: llmjax's own
  small models): "role: content" per message, a blank line between, then "assistant: "."""
  return "".join(f"{m['role']}: {m['content']}\n\n" for m in messages) + "assistant: "


def encode_messages(tokenizer: Tokenizer, messages: list[dict[str, Any]]) -> list[int]:
  """Chat messages as generation-prompt tokens: through the tokenizer's chat template, or
  BOS + `render_plain_chat` when it has none. A leading system message that the template
  cannot take (Mistral's, Gemma's) is folded into the first user turn, system + blank line +
  user, as fastchat's templates do for judges such as Prometheus 2."""
  if not has_chat_template(tokenizer):
    return tokenizer.encode_prompt(render_plain_chat(messages))
  if (len(messages) > 1 and messages[0]["role"] == "system" and messages[1]["role"] == "user"
      and not supports_system_role(tokenizer)):
    folded = {"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
    messages = [folded, *messages[2:]]
  return tokenizer.encode_chat(messages)


def supports_system_role(tokenizer: Tokenizer) -> bool:
  """Whether the chat template renders a system message (some, e.g. Mistral's and Gemma's,
  raise on one); the plain format always does."""
  if not has_chat_template(tokenizer):
    return True
  cached = getattr(tokenizer, "_system_role", None)
  if cached is None:
    probe = [{"role": "system", "content": "SYSTEM-PROBE"}, {"role": "user", "content": "U"}]
    try:
      cached = "SYSTEM-PROBE" in tokenizer.apply_chat_template(probe)
    except UserError:
      cached = False
    tokenizer._system_role = cached
  return cached
