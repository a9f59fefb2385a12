"""The judging loop: every judgement kept the moment it arrives, failures recorded, never lost.

Each item (an id and its chat messages) is sent to the judge. Every answer is appended to a
JSONL file, and flushed, as soon as it arrives, whatever else is still in flight:
  {"id", "verdict", "output", "outputs" (every answer's raw text), "attempts" (requests sent,
   over every run), "failed"}, and on a failure also "failure" and "error".

- An output whose verdict does not parse is asked again, only that item, up to `max_retries`
  more times (10, as upstream), each attempt with its own seed. At temperature 0 the same
  prompt would give the same output, so those retries sample at `retry_temperature` (1.0, as
  upstream's judges sample), or are not made when it is 0. What never parses is recorded as
  failure "unparsed".
- A request the endpoint refuses for good (a non-retryable 4xx, or retries exhausted on
  5xx/timeouts) is recorded as failure "request_error" with the endpoint's message, and the
  run goes on.
- A prompt longer than the judge's context (the endpoint or the local model says so, or it
  exceeds `max_prompt_tokens` by the judge's tokenizer) is recorded as failure
  "prompt_too_long"; with `truncate_response`, the response under evaluation is cut from its
  end with a marker (JudgeItem.shorten) until it fits, and the record says what was kept.

A rerun in the same workdir asks again only for the items the file does not hold or holds as
failed, whatever the cause (an unparsed output too: its next attempts continue the seed
sequence, so they are new samples); judged items are never asked again.
"""

import dataclasses
import hashlib
import json
import os
import sys
from typing import Any, Callable, Sequence

from llmjax import rundir, runio
from llmjax.evals.backends import Backend, ChatRequest, JudgeSampling, RequestFailure

FAILURE_CAUSES = ("unparsed", "request_error", "prompt_too_long")

# How often a response is cut again after the endpoint still finds the prompt too long.
_MAX_CUTS = 4


@dataclasses.dataclass(frozen=True)
class JudgeItem:
  """One judgement to make.

  parse: overrides the loop's parser for this item (e.g. FLASK's, which needs the instance's
    skills).
  shorten: the item's messages with the response(s) under evaluation kept to a fraction
    (0 to 1] of their characters, cut from the end with a marker; None where nothing may be
    cut.
  """

  id: str
  messages: tuple[dict[str, str], ...]
  parse: Callable[[str], Any] | None = None
  shorten: Callable[[float], tuple[dict[str, str], ...]] | None = None


@dataclasses.dataclass(frozen=True)
class JudgeOptions:
  """How the loop asks (see the module docstring)."""

  max_retries: int = 10
  retry_temperature: float = 1.0
  max_prompt_tokens: int = 0  # 0: no limit of our own (the endpoint's still applies)
  truncate_response: bool = False

  @classmethod
  def from_config(cls, judge_config) -> "JudgeOptions":
    return cls(max_retries=int(judge_config.max_retries),
               retry_temperature=float(judge_config.get("retry_temperature", 1.0)),
               max_prompt_tokens=int(judge_config.get("max_prompt_tokens", 0)),
               truncate_response=bool(judge_config.get("truncate_response", False)))

  def retry_sampling(self, sampling: JudgeSampling) -> JudgeSampling | None:
    """The sampling of a parse retry: the first attempt's, except that at temperature 0 it is
    `retry_temperature` (None: no retry, as the same output would come back)."""
    if sampling.temperature > 0:
      return sampling
    if self.retry_temperature > 0:
      return dataclasses.replace(sampling, temperature=self.retry_temperature)
    return None

  def describe_retries(self, sampling: JudgeSampling) -> str:
    """What a report says about its parse retries."""
    if self.max_retries == 0:
      return "none (judge.max_retries = 0)"
    retry = self.retry_sampling(sampling)
    if retry is None:
      return "none: temperature 0 would repeat the output (judge.retry_temperature = 0)"
    return f"up to {self.max_retries} at temperature {retry.temperature:g}"


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
  """The judgements a file holds, by id: an id's last line wins (a rerun's answer after a
  failure); a last line cut short by a crash is dropped."""
  return {record["id"]: record for record in runio.read_complete_jsonl(path)}


def shorten_text(text: str, fraction: float) -> str:
  """`text` kept to `fraction` of its characters, cut from the end with a marker saying so
  (the text itself when nothing is cut)."""
  kept = int(len(text) * fraction)
  if kept >= len(text):
    return text
  return f"{text[:kept]}\n[... cut here to fit the judge's context: {kept} of {len(text)} " \
         "characters shown]"


def failure_counts(records: Sequence[dict[str, Any] | None]) -> dict[str, int]:
  """Failed judgements by cause (FAILURE_CAUSES), for a report's table."""
  counts = dict.fromkeys(FAILURE_CAUSES, 0)
  for record in records:
    if record is not None and record["failed"]:
      counts[record.get("failure", "unparsed")] += 1
  return counts


@dataclasses.dataclass
class _Progress:
  """One item's state in this run."""

  item: JudgeItem
  messages: tuple[dict[str, str], ...]
  outputs: list[str]
  attempts: int  # requests sent for this item, over every run: the next seed's index
  asked: int = 0  # parse attempts in this run
  kept_fraction: float = 1.0
  cuts: int = 0


def judge(items: Sequence[JudgeItem], backend: Backend, parse: Callable[[str], Any],
          sampling: JudgeSampling, path: str, seed: int = 0, max_retries: int | None = None,
          show_progress: bool = False,
          options: JudgeOptions | None = None) -> dict[str, dict[str, Any]]:
  """Judges every item `path` does not hold, or holds as failed; returns all judgements by id.

  Args:
    parse: output text -> verdict, or None when it does not parse.
    path: the JSONL of judgements (read, then appended to).
    max_retries: overrides `options.max_retries`.
  """
  options = options or JudgeOptions()
  if max_retries is not None:
    options = dataclasses.replace(options, max_retries=max_retries)
  retry_sampling = options.retry_sampling(sampling)
  records = read_judgements(path)
  states = {}
  for item in items:
    before = records.get(item.id)
    if before is None or before["failed"]:
      states[item.id] = _Progress(item, item.messages, list(before["outputs"]) if before else [],
                                  before["attempts"] if before else 0)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "a") if runio.is_writer() else open(os.devnull, "w") as out:
    def write(state: _Progress, verdict=None, failure: str | None = None, error: str = ""):
      rundir.mark_began()  # the workdir now holds this run's judgements: its config.json stays
      record = {"id": state.item.id, "verdict": verdict,
                "output": state.outputs[-1] if state.outputs else "",
                "outputs": state.outputs, "attempts": state.attempts, "failed": bool(failure)}
      if failure:
        record.update(failure=failure, error=error)
      if state.kept_fraction < 1:
        record["truncated"] = {"kept_fraction": round(state.kept_fraction, 4), "cuts": state.cuts}
      records[state.item.id] = record
      out.write(json.dumps(record) + "\n")
      out.flush()  # kept the moment it arrives: a crash loses nothing already answered

    def answered(state: _Progress, answer) -> _Progress | None:
      """Records `answer`; returns the state again when the item is to be asked again."""
      state.attempts += 1
      if isinstance(answer, RequestFailure):
        if (answer.cause == "prompt_too_long" and options.truncate_response
            and state.item.shorten is not None and state.cuts < _MAX_CUTS):
          state.kept_fraction *= _shrink_factor(answer)
          state.cuts += 1
          state.messages = state.item.shorten(state.kept_fraction)
          return state
        write(state, failure=answer.cause, error=answer.error)
        return None
      state.outputs.append(answer)
      state.asked += 1
      verdict = (state.item.parse or parse)(answer)
      if verdict is not None:
        write(state, verdict)
        return None
      if state.asked > options.max_retries or retry_sampling is None:
        write(state, failure="unparsed",
              error=f"no verdict could be read from {len(state.outputs)} outputs")
        return None
      return state

    pending = [state for state in states.values() if _fits(state, backend, options, write)]
    while pending:
      again = []
      # First asks use the judge's sampling; an item with an unparsed output is a retry.
      groups = {retry: [s for s in pending if bool(s.outputs) == retry] for retry in (0, 1)}
      for retry, group in groups.items():
        if not group:
          continue

        def on_result(index, answer, group=group):
          state = answered(group[index], answer)
          if state is not None:
            again.append(state)

        backend.complete_each(
            [ChatRequest(s.messages, request_seed(seed, s.item.id, s.attempts)) for s in group],
            (retry_sampling or sampling) if retry else sampling, on_result, show_progress)
      pending = [state for state in again if _fits(state, backend, options, write)]
  _say_what_failed([records[i] for i in states], path)
  return records


def _say_what_failed(records: Sequence[dict[str, Any]], path: str) -> None:
  """One stderr line when items asked in this run failed: how many, by cause, the first
  error; the run goes on and a rerun asks again."""
  failed = [r for r in records if r["failed"]]
  if not failed or not runio.is_writer():
    return
  causes = ", ".join(f"{n} {cause}" for cause, n in failure_counts(failed).items() if n)
  print(f"judge: {len(failed)} of {len(records)} items asked failed ({causes}; first: "
        f"{failed[0]['error']}); kept in {path} as failed, and a rerun asks again for them",
        file=sys.stderr, flush=True)


def _fits(state: _Progress, backend: Backend, options: JudgeOptions, write) -> bool:
  """Whether the item's prompt is within `max_prompt_tokens` (cutting its response to fit
  where that is allowed); an item that cannot fit is recorded as failed."""
  if not options.max_prompt_tokens:
    return True
  count = backend.count_tokens(state.messages)
  if count is None or count <= options.max_prompt_tokens:
    return True
  if options.truncate_response and state.item.shorten is not None:
    low, high = 0.0, state.kept_fraction  # largest kept fraction that fits, by bisection
    if backend.count_tokens(state.item.shorten(low)) <= options.max_prompt_tokens:
      for _ in range(14):
        middle = (low + high) / 2
        if backend.count_tokens(state.item.shorten(middle)) <= options.max_prompt_tokens:
          low = middle
        else:
          high = middle
      state.kept_fraction, state.cuts = low, state.cuts + 1
      state.messages = state.item.shorten(low)
      return True
  write(state, failure="prompt_too_long",
        error=f"the prompt has {count} tokens; judge.max_prompt_tokens is "
              f"{options.max_prompt_tokens}")
  return False


def _shrink_factor(failure: RequestFailure) -> float:
  """How much of the response to keep after the endpoint found the prompt too long: from its
  figures when it gives them (the excess, and a tenth more), else half."""
  if failure.context_tokens:
    context, requested = failure.context_tokens
    if requested > context > 0:
      return max(0.05, min(0.9, 1 - 1.1 * (requested - context) / requested))
  return 0.5
