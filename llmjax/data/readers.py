"""Readers for local text and JSONL files that fail loudly, naming the file and line.

A malformed row is never skipped silently: it raises DataError, or, when the caller passes
`skip_bad=True`, is counted in the returned `ReadStats` so the run can report it.
"""

import dataclasses
import json
import os
from typing import Iterator, Sequence

from llmjax.errors import DataError, UserError
from llmjax.tasks import math_answers


@dataclasses.dataclass
class ReadStats:
  rows: int = 0
  skipped: int = 0
  first_skipped: str = ""  # "file:line: why" of the first skipped row


def check_file(path: os.PathLike) -> None:
  """A readable data file, or a UserError saying what is there instead."""
  if os.path.isdir(path):
    raise UserError(f"{path}: is a directory; expected a file")
  if not os.path.isfile(path):
    raise UserError(f"{path}: file not found")


def read_json_object(path: os.PathLike) -> dict:
  """A JSON file holding one object (a config), or a UserError naming the file."""
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: invalid JSON ({e})") from None
  if not isinstance(value, dict):
    raise UserError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


def read_jsonl(path: os.PathLike, required: Sequence[str] = (), skip_bad: bool = False,
               stats: ReadStats | None = None) -> Iterator[dict]:
  """Yields one dict per non-blank line; each must be UTF-8 and a JSON object with the
  `required` keys."""
  for _, row in read_jsonl_numbered(path, required, skip_bad, stats):
    yield row


def read_jsonl_numbered(path: os.PathLike, required: Sequence[str] = (),
                        skip_bad: bool = False,
                        stats: ReadStats | None = None) -> Iterator[tuple[int, dict]]:
  """`read_jsonl` with each row's line number (from 1)."""
  check_file(path)
  stats = stats if stats is not None else ReadStats()
  with open(path, "rb") as f:
    for line_number, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
        if not line.strip():
          continue
        row = json.loads(line)
        if not isinstance(row, dict):
          raise ValueError(f"expected a JSON object, got {type(row).__name__}")
        missing = [k for k in required if k not in row]
        if missing:
          raise ValueError(f"missing field {missing[0]!r}; expected fields {list(required)}")
      except UnicodeDecodeError as e:
        _bad_row(f"{path}:{line_number}: not valid UTF-8 ({e.reason} at byte {e.start})",
                 skip_bad, stats)
        continue
      except ValueError as e:  # json.JSONDecodeError is a ValueError
        _bad_row(f"{path}:{line_number}: malformed row: {str(e).splitlines()[0]}", skip_bad,
                 stats)
        continue
      stats.rows += 1
      yield line_number, row


def _bad_row(why: str, skip_bad: bool, stats: ReadStats) -> None:
  """Raises DataError(why), or counts the row as skipped when the caller allows skipping."""
  if not skip_bad:
    raise DataError(why) from None
  stats.skipped += 1
  stats.first_skipped = stats.first_skipped or why


def read_text(path: os.PathLike, unit: str = "paragraph") -> Iterator[str]:
  """Yields documents from a UTF-8 text file: one per 'line', per blank-line 'paragraph', or the
  whole 'file'. Empty documents are not yielded (they hold no tokens)."""
  for _, document in read_text_numbered(path, unit):
    yield document


def read_text_numbered(path: os.PathLike, unit: str = "paragraph") -> Iterator[tuple[int, str]]:
  """`read_text` with the line number (from 1) each document starts on."""
  check_file(path)
  if unit not in ("line", "paragraph", "file"):
    raise UserError(f"text unit {unit!r}: expected 'line', 'paragraph' or 'file'")
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    line = _line_of_offset(path, e.start)
    raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from None
  if unit == "file":
    chunks = [text]
  elif unit == "line":
    chunks = text.split("\n")
  else:
    chunks = text.split("\n\n")
  line = 1
  for chunk in chunks:
    if chunk.strip():
      leading = len(chunk) - len(chunk.lstrip("\n"))
      yield line + leading, chunk.strip("\n")
    line += chunk.count("\n") + (1 if unit == "line" else 2)


def _line_of_offset(path: os.PathLike, offset: int) -> int:
  with open(path, "rb") as f:
    return f.read(offset).count(b"\n") + 1


def read_gsm8k(path: os.PathLike) -> list[dict]:
  """A GSM8K-format JSONL file -> [{"question", "rationale", "gold", "where"}], the rationale
  rewritten to end in 'The answer is N'. A malformed row raises DataError naming file and line
  (the CLI prints it as one line and exits 2)."""
  problems = []
  for line, row in read_jsonl_numbered(path, required=("question", "answer")):
    if not isinstance(row["question"], str) or not isinstance(row["answer"], str):
      raise DataError(f"{path}:{line}: malformed row: 'question' and 'answer' must be strings")
    try:
      rationale, gold = math_answers.gsm8k_rationale(row["answer"])
    except ValueError as e:
      raise DataError(f"{path}:{line}: malformed row: {e}") from None
    problems.append({"question": row["question"], "rationale": rationale, "gold": gold,
                     "where": f"{path}:{line}"})
  if not problems:
    raise DataError(f"{path}: no problems; expected JSONL rows with 'question' and 'answer'")
  return problems
