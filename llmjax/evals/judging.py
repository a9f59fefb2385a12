"""The judging loop: every judgement parsed, failures retried alone, raw outputs kept.

Each item (an id and its chat messages) is sent to the judge; an output whose verdict does not
parse is sent again, only those items, up to `max_retries` more times (10, as upstream), each
attempt with its own seed; what never parses is recorded as a failure, never scored. Every
finished item is appended to a JSONL file as it completes ({"id", "verdict", "output",
"outputs" (every attempt's raw text), "attempts", "failed"}), so a report can be recomputed
without re-judging and a rerun judges only the items the file does not hold.
"""

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Sequence

from llmjax import rundir, runio
from llmjax.evals.backends import Backend, ChatRequest, JudgeSampling


@dataclasses.dataclass(frozen=True)
class JudgeItem:
  """One judgement to make; `parse` overrides the loop's parser for this item (e.g. FLASK's,
  which needs the instance's skills)."""

  id: str
  messages: tuple[dict[str, str], ...]
  parse: Callable[[str], Any] | None = None


def in_known_order(names, known: Sequence[str]) -> list:
  """`names` for a report: those in `known` in its order (a benchmark's canonical order of
  capabilities or levels), then any others sorted."""
  names = list(names)
  return ([n for n in known if n in names] +
          sorted(n for n in set(names) if n not in known))


def request_seed(seed: int, item_id: str, attempt: int) -> int:
  """The seed of one attempt at one item: fixed by (seed, id, attempt), whatever else is
  judged alongside."""
  digest = hashlib.sha256(f"{seed}\x00{item_id}\x00{attempt}".encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def read_judgements(path: str) -> dict[str, dict[str, Any]]:
  """The judgements a file holds, by id (a last line cut short by a crash is dropped)."""
  return {record["id"]: record for record in runio.read_complete_jsonl(path)}


def judge(items: Sequence[JudgeItem], backend: Backend, parse: Callable[[str], Any],
          sampling: JudgeSampling, path: str, seed: int = 0, max_retries: int = 10,
          show_progress: bool = False) -> dict[str, dict[str, Any]]:
  """Judges every item `path` does not hold yet; returns all judgements by id.

  Args:
    parse: output text -> verdict, or None when it does not parse.
    path: the JSONL of judgements (read, then appended to).
  """
  records = read_judgements(path)
  pending = [item for item in items if item.id not in records]
  outputs: dict[str, list[str]] = {item.id: [] for item in pending}
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "a") if runio.is_writer() else open(os.devnull, "w") as out:
    def write(record):
      rundir.mark_began()  # the workdir now holds this run's judgements: its config.json stays
      records[record["id"]] = record
      out.write(json.dumps(record) + "\n")

    for attempt in range(max_retries + 1):
      if not pending:
        break
      texts = backend.complete([ChatRequest(item.messages, request_seed(seed, item.id, attempt))
                                for item in pending], sampling, show_progress)
      failed = []
      for item, text in zip(pending, texts, strict=True):
        outputs[item.id].append(text)
        verdict = (item.parse or parse)(text)
        if verdict is None:
          failed.append(item)
          continue
        write({"id": item.id, "verdict": verdict, "output": text,
               "outputs": outputs[item.id], "attempts": attempt + 1, "failed": False})
      out.flush()
      pending = failed
    for item in pending:
      write({"id": item.id, "verdict": None, "output": outputs[item.id][-1],
             "outputs": outputs[item.id], "attempts": len(outputs[item.id]), "failed": True})
  return records
