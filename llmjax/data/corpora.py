"""The corpora a language-model config can name in `config.data.corpus`.

  procedural  generated from `data.seed` (llmjax.tasks.corpus); needs nothing on disk
  gsm8k       `data.path`/{train,test}.jsonl: question as prompt, worked answer as text
  jsonl       `data.path` (train) and `data.eval_path`: `data.text_field`, optional
              `data.prompt_field`
  text        `data.path` and `data.eval_path`: documents split by `data.text_unit`

Each is built once into a TFDS array_record corpus under `data.cache_dir` and reused. The cache
name carries a hash of what the corpus is made of: the source files' content and real paths and
the settings that read them (fields, text unit). Editing a file rebuilds it, even in place at
the same size and mtime, and two files whose names differ only in punctuation never share one.
Hashing reads each source once per run (about 1 GB/s on one core).
"""

import hashlib
import json
import os
import pathlib
from typing import Callable, Iterable

from llmjax import checks
from llmjax.data import readers
from llmjax.data.builders import build_corpus
from llmjax.errors import DataError, UserError
from llmjax.tasks.corpus import procedural_documents

CORPORA = ("procedural", "gsm8k", "jsonl", "text")


def default_cache_dir() -> str:
  return os.environ.get("LLMJAX_CACHE", os.path.expanduser("~/.cache/llmjax")) + "/tfds"


def _content_key(paths: Iterable[str], **settings) -> str:
  """A hash of the source files (real path and content) and the settings that read them."""
  digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
  for path in paths:
    readers.check_file(path)
    digest.update(os.path.realpath(path).encode() + b"\0")
    with open(path, "rb") as f:
      digest.update(hashlib.file_digest(f, "sha256").digest())
  return digest.hexdigest()[:24]


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in name)[-80:]


def _text(row: dict, field: str, path: str, line: int, may_be_empty: bool = False) -> str:
  """A row's text field: a string (a number is written out); null, a list or an empty document
  is a DataError naming the file and line, never the string 'None' or a silent empty row."""
  value = row[field]
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    raise DataError(f"{path}:{line}: field {field!r} is {json.dumps(value)[:40]}; expected a "
                    "string")
  text = str(value)
  if not text.strip() and not may_be_empty:
    raise DataError(f"{path}:{line}: field {field!r} is empty; expected the document's text")
  return text


def _not_empty(rows: Callable[[], Iterable[tuple[str, str, str]]], what: str):
  """The split's rows; a source with no document at all is a UserError naming it."""
  def generate():
    empty = True
    for row in rows():
      empty = False
      yield row
    if empty:
      raise DataError(f"{what}: no documents (a corpus split needs at least one)")
  return generate


def make_corpus(data_config) -> dict:
  """Returns {'train': CorpusSplit, 'validation': CorpusSplit} for `data_config.corpus`."""
  kind, cache = data_config.corpus, data_config.cache_dir or default_cache_dir()
  if kind == "procedural":
    n, seed = data_config.num_docs, data_config.seed
    checks.positive_ints(data_config, "data", "num_docs")

    def documents(count, doc_seed):
      return lambda: (("", d, f"procedural document {i + 1}")
                      for i, d in enumerate(procedural_documents(count, doc_seed)))
    splits = {"train": documents(n, seed),
              "validation": documents(max(n // 10, 1), seed + 1_000_003)}
    return build_corpus(f"procedural_n{n}_s{seed}", splits, cache)

  if kind == "gsm8k":
    root = pathlib.Path(data_config.path)
    train, test = str(root / "train.jsonl"), str(root / "test.jsonl")

    def rows(path):
      return _not_empty(lambda: ((r["question"], "\n" + r["answer"], f"{path}:{line}")
                                 for line, r in readers.read_jsonl_numbered(
                                     path, required=("question", "answer"))), path)
    return build_corpus(f"gsm8k_{_content_key((train, test), corpus=kind)}",
                        {"train": rows(train), "validation": rows(test)}, cache)

  if kind in ("jsonl", "text"):
    if not data_config.path or not data_config.eval_path:
      raise UserError(f"data.corpus = {kind!r} needs data.path and data.eval_path")

    def rows(path):
      if kind == "text":
        return _not_empty(lambda: (("", d, f"{path}:{line}") for line, d in
                                   readers.read_text_numbered(path, data_config.text_unit)),
                          path)
      fields = [data_config.text_field] + ([data_config.prompt_field]
                                           if data_config.prompt_field else [])
      return _not_empty(lambda: (
          (_text(r, data_config.prompt_field, path, line, may_be_empty=True)
           if data_config.prompt_field else "",
           _text(r, data_config.text_field, path, line), f"{path}:{line}")
          for line, r in readers.read_jsonl_numbered(path, required=fields)), path)
    key = _content_key((data_config.path, data_config.eval_path), corpus=kind,
                       text_field=data_config.text_field, prompt_field=data_config.prompt_field,
                       text_unit=data_config.text_unit)
    name = f"{kind}_{_safe(os.path.basename(data_config.path))[-40:]}_{key}"
    return build_corpus(name, {"train": rows(data_config.path),
                               "validation": rows(data_config.eval_path)}, cache)

  raise UserError(f"data.corpus = {kind!r}: expected one of {CORPORA}")
