"""Prometheus-format judge prompts (Kim et al. 2024, "Prometheus 2"), as BiGGen Bench grades.

Trained judges (Prometheus 2 and its kin) expect the upstream layout: the '###' section
headers in this order, the rubric as "[criteria]" then "Score N: ..." lines, and an output of
feedback followed by "[RESULT] N" (absolute) or "[RESULT] A|B" (relative). The instructions
inside those sections are written in our own words. The reference answer, when given, is
always part of the prompt (upstream's default template drops it without a word).

Parsers: `parse_absolute` / `parse_relative` (llmjax.evals.parsing) read the verdict only
where it ends the output.
"""

from typing import Mapping

from llmjax.evals.parsing import parse_absolute, parse_relative

__all__ = ["ABSOLUTE_SYSTEM", "RELATIVE_SYSTEM", "absolute_prompt", "relative_prompt",
           "format_rubric", "parse_absolute", "parse_relative"]

ABSOLUTE_SYSTEM = ("You are a fair judge assistant who writes clear feedback and gives each "
                   "response a score against an absolute standard.")
RELATIVE_SYSTEM = ("You are a fair judge assistant who compares two responses and decides, "
                   "with clear feedback, which one meets the standard better.")


def format_rubric(rubric: Mapping[str, str], criteria_only: bool = False) -> str:
  """"[criteria]" then "Score 1: ..." to "Score 5: ..." (BiGGen's score_rubric fields)."""
  lines = [f"[{rubric['criteria']}]"]
  if not criteria_only:
    lines += [f"Score {n}: {rubric[f'score{n}_description']}" for n in range(1, 6)]
  return "\n".join(lines)


def absolute_prompt(instruction: str, response: str, rubric: Mapping[str, str],
                    reference: str | None = None) -> str:
  """The user message of an absolute grading: feedback, then "[RESULT] N" with N in 1..5."""
  given = ("an instruction (which may include an input), a response to evaluate, "
           + ("a reference answer that deserves a score of 5, " if reference else "")
           + "and a score rubric for the evaluation criteria")
  parts = [
      "###Task Description:",
      f"You are given {given}.",
      "1. Write detailed feedback that judges the response strictly by the score rubric, not "
      "by general impressions.",
      "2. After the feedback, give a score: an integer from 1 to 5, taken from the rubric.",
      '3. Use exactly this output format: "(feedback on the criteria) [RESULT] (an integer '
      'from 1 to 5)".',
      "4. Write nothing before the feedback and nothing after the score.",
      "",
      "###The instruction to evaluate:", instruction, "",
      "###Response to evaluate:", response, "",
  ]
  if reference:
    parts += ["###Reference Answer (Score 5):", reference, ""]
  parts += ["###Score Rubrics:", format_rubric(rubric), "", "###Feedback: "]
  return "\n".join(parts)


def relative_prompt(instruction: str, response_a: str, response_b: str,
                    rubric: Mapping[str, str], reference: str | None = None) -> str:
  """The user message of a relative grading: feedback, then "[RESULT] A" or "[RESULT] B"."""
  given = ("an instruction (which may include an input), two responses to compare, "
           + ("a reference answer, " if reference else "")
           + "and a score rubric for the evaluation criteria")
  compare = ("Compare Response A, Response B" + (" and the Reference Answer" if reference
                                                   else "")
             + " directly: say what they share and where they differ.")
  parts = [
      "###Task Description:",
      f"You are given {given}.",
      "1. Write detailed feedback on how well each response meets the score rubric.",
      f"2. {compare}",
      '3. Then decide which response is better: "A" or "B".',
      '4. Use exactly this output format: "Feedback: (feedback on the criteria) [RESULT] '
      '(either "A" or "B")".',
      "5. Write nothing before the feedback and nothing after the verdict.",
      "",
      "###Instruction:", instruction, "",
      "###Response A:", response_a, "",
      "###Response B:", response_b, "",
  ]
  if reference:
    parts += ["###Reference Answer:", reference, ""]
  parts += ["###Score Rubric:", format_rubric(rubric, criteria_only=True), "", "###Feedback: "]
  return "\n".join(parts)
