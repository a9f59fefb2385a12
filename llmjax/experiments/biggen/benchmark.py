"""BiGGen Bench (Kim et al. 2024): instances, the messages a model under test gets, the judge's
messages, and the report.

Instances: 765 rows over 9 capabilities and 77 tasks, each with its own rubric and reference
answer (fields id, capability, task, instance_idx, system_prompt, input, reference_answer,
score_rubric{criteria, score1_description..score5_description}, and `response` in files of
model outputs), read from a JSON object keyed by id, a JSON list or JSONL.

Report (as upstream's make_report): per capability the mean score over its parsed judgements;
overall = the unweighted mean of the capability means. Unlike upstream (whose report crashes on
an unparsed score), failures are counted per capability and never scored; a capability with no
parsed judgement has no mean and is left out of the overall, and the report says so.
"""

import json
import math
import os
from typing import Any, Sequence

from llmjax.data.readers import check_file, read_jsonl_numbered
from llmjax.errors import DataError
from llmjax.evals.judging import (FAILURE_CAUSES, JudgeItem, failure_counts, in_known_order,
                                  shorten_text)
from llmjax.experiments.biggen import prometheus

CAPABILITIES = ("grounding", "instruction_following", "planning", "reasoning", "refinement",
                "safety", "theory_of_mind", "tool_usage", "multilingual")
FIELDS = ("id", "capability", "task", "system_prompt", "input", "reference_answer",
          "score_rubric")
RUBRIC_FIELDS = ("criteria",) + tuple(f"score{n}_description" for n in range(1, 6))


def read_instances(path: str, need_response: bool = False) -> list[dict[str, Any]]:
  """The rows of a BiGGen file, checked: a bad one stops with its file and position."""
  check_file(path)
  try:
    with open(path, encoding="utf-8") as f:
      if path.endswith(".jsonl"):
        numbered = list(read_jsonl_numbered(path))
        rows = [row for _, row in numbered]
        where = [f"{path}:{line_number}" for line_number, _ in numbered]
      else:
        data = json.load(f)
        rows = list(data.values()) if isinstance(data, dict) else data
        keys = list(data) if isinstance(data, dict) else range(len(rows))
        where = [f"{path}: row {k!r}" for k in keys]
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
  except UnicodeDecodeError:
    raise DataError(f"{path}: not valid UTF-8") from None
  if not isinstance(rows, list) or not rows:
    raise DataError(f"{path}: expected BiGGen rows (a JSON object keyed by id, a list or JSONL)")
  fields = FIELDS + (("response",) if need_response else ())
  for row, at in zip(rows, where):
    missing = [k for k in fields if not isinstance(row, dict) or k not in row]
    if missing:
      raise DataError(f"{at}: missing field {missing[0]!r}")
    if need_response and not isinstance(row["response"], str):
      raise DataError(f"{at}: response must be a string")
    rubric = row["score_rubric"]
    bad = [k for k in RUBRIC_FIELDS if not isinstance(rubric, dict) or
           not isinstance(rubric.get(k), str)]
    if bad:
      raise DataError(f"{at}: score_rubric.{bad[0]} must be a string")
  ids = [row["id"] for row in rows]
  if len(set(ids)) != len(ids):
    duplicate = next(i for i in ids if ids.count(i) > 1)
    raise DataError(f"{path}: id {duplicate!r} appears more than once")
  return rows


def model_messages(row: dict[str, Any], system_role: bool) -> list[dict[str, str]]:
  """What the model under test gets: [system, user] when its chat template takes a system
  role, else one user turn of system_prompt + blank line + input."""
  if system_role:
    return [{"role": "system", "content": row["system_prompt"]},
            {"role": "user", "content": row["input"]}]
  return [{"role": "user", "content": f"{row['system_prompt']}\n\n{row['input']}"}]


def judge_messages(row: dict[str, Any], response: str,
                   prompts: prometheus.JudgePrompts | None = None) -> tuple[dict[str, str], ...]:
  """Absolute grading with the reference answer; the judge never sees the system prompt."""
  return (prompts or prometheus.JudgePrompts()).absolute_messages(
      row["input"], response, row["score_rubric"], row["reference_answer"])


def relative_judge_messages(row: dict[str, Any], response_a: str, response_b: str,
                            prompts: prometheus.JudgePrompts | None = None
                            ) -> tuple[dict[str, str], ...]:
  return (prompts or prometheus.JudgePrompts()).relative_messages(
      row["input"], response_a, response_b, row["score_rubric"], row["reference_answer"])


def judge_item(row: dict[str, Any], prompts: prometheus.JudgePrompts, response: str,
               response_b: str | None = None) -> JudgeItem:
  """The judging loop's item for one instance (relative when `response_b` is given), whose
  response(s) can be cut to fit the judge's context (judge.truncate_response)."""
  def messages(fraction: float = 1.0):
    if response_b is None:
      return judge_messages(row, shorten_text(response, fraction), prompts)
    return relative_judge_messages(row, shorten_text(response, fraction),
                                   shorten_text(response_b, fraction), prompts)
  return JudgeItem(row["id"], messages(), shorten=messages)


def is_llm_judge_instance(row: dict[str, Any]) -> bool:
  """BiGGen's instances that ask the model under test to act as a judge itself (18 of 765),
  which upstream does not grade with Prometheus-family judges."""
  return "llm_judge" in row["task"]


def report(rows: Sequence[dict[str, Any]], judgements: dict[str, dict[str, Any]],
           relative: bool = False) -> dict[str, Any]:
  """Per capability: instances, parsed, failures (by cause: unparsed, request_error,
  prompt_too_long), missing, and the mean score (absolute) or the share of A verdicts
  (relative); overall = the mean of the capability means."""
  by_capability: dict[str, list] = {}
  for row in rows:
    by_capability.setdefault(row["capability"], []).append(judgements.get(row["id"]))
  table = {}
  for capability in in_known_order(by_capability, CAPABILITIES):
    records = by_capability[capability]
    verdicts = [r["verdict"] for r in records if r is not None and not r["failed"]]
    values = [float(v == "A") for v in verdicts] if relative else [float(v) for v in verdicts]
    causes = failure_counts(records)
    table[capability] = {"instances": len(records), "parsed": len(values),
                         "failures": sum(causes.values()), **causes,
                         "missing": sum(1 for r in records if r is None),
                         "truncated": sum(1 for r in records if r is not None and
                                          "truncated" in r),
                         "mean": sum(values) / len(values) if values else None}
  means = [t["mean"] for t in table.values() if t["mean"] is not None]
  return {"metric": "share of A verdicts" if relative else "mean score (1-5)",
          "capabilities": table, "overall": sum(means) / len(means) if means else None,
          "capabilities_without_a_parsed_judgement": [c for c, t in table.items()
                                                      if t["mean"] is None],
          "instances": len(rows), "parsed": sum(t["parsed"] for t in table.values()),
          "parse_failures": sum(t["unparsed"] for t in table.values()),
          "request_failures": sum(t["request_error"] + t["prompt_too_long"]
                                  for t in table.values()),
          "failures_by_cause": {cause: sum(t[cause] for t in table.values())
                                for cause in FAILURE_CAUSES},
          "truncated_responses": sum(t["truncated"] for t in table.values())}


def markdown(result: dict[str, Any]) -> str:
  """The report as a Markdown table."""
  def fmt(x):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
  lines = [f"| capability | instances | parsed | parse failures | request failures | "
           f"{result['metric']} |", "| --- | --- | --- | --- | --- | --- |"]
  for capability, t in result["capabilities"].items():
    lines.append(f"| {capability} | {t['instances']} | {t['parsed']} | {t['unparsed']} | "
                 f"{t['request_error'] + t['prompt_too_long']} | {fmt(t['mean'])} |")
  lines.append(f"| **overall** (mean of capability means) | {result['instances']} | "
               f"{result['parsed']} | {result['parse_failures']} | "
               f"{result['request_failures']} | {fmt(result['overall'])} |")
  notes = []
  if result["capabilities_without_a_parsed_judgement"]:
    notes.append("No judgement parsed for: "
                 + ", ".join(result["capabilities_without_a_parsed_judgement"])
                 + " (left out of the overall).")
  if result["request_failures"]:
    notes.append(f"Request failures: {result['failures_by_cause']['request_error']} refused or "
                 f"unanswered, {result['failures_by_cause']['prompt_too_long']} prompts longer "
                 "than the judge's context (judgements.jsonl holds each error; a rerun asks "
                 "again for these).")
  for key, label in (("judge_prompts", "Judge prompts"), ("parse_retries", "Parse retries"),
                     ("skipped_llm_judge_instances", "llm_judge instances not graded")):
    if result.get(key):
      notes.append(f"{label}: {result[key]}.")
  if result.get("truncated_responses"):
    notes.append(f"Responses cut to fit the judge's context: {result['truncated_responses']}.")
  return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_report(workdir: str, result: dict[str, Any]) -> None:
  from llmjax import plotting, runio
  runio.write_json(os.path.join(workdir, "report.json"), result)
  if runio.is_writer():
    runio.atomic_write_text(os.path.join(workdir, "report.md"), markdown(result))
  plotting.plot_bars(os.path.join(workdir, "plots", "capabilities.png"),
                     {c: (t["mean"] if t["mean"] is not None else float("nan"))
                      for c, t in result["capabilities"].items()},
                     ylabel=result["metric"], title="BiGGen Bench by capability",
                     ylim=(0, 5) if result["metric"].startswith("mean") else (0, 1))
