"""Prometheus-format judge prompts (Kim et al. 2024, "Prometheus 2"), as BiGGen Bench grades.

Prometheus 2 was trained on prometheus-eval's exact templates and system prompts, so those are
what it should be shown. `load_prompts(judge.templates)` chooses the wording:

  auto             prometheus-eval's own, read from the installed package at run time (the
                   `prometheus` extra), else ours
  prometheus-eval  the package's; an error when it is not installed
  llmjax           ours
  PATH             a JSON file of template strings (TEMPLATE_KEYS; str.format fields
                   {instruction}, {response}, {response_A}, {response_B}, {reference_answer},
                   {rubric}, and the rubric's {criteria}, {score1_description}..)

Nothing of prometheus-eval's text is copied here: the package is read where it is installed.
Our own wording keeps the upstream layout a trained judge expects (the '###' section headers in
this order, the rubric as "[criteria]" then "Score N: ..." lines, an output of feedback then
"[RESULT] N" or "[RESULT] A|B") with instructions in our words. The reference answer, when
given, is always part of the prompt (upstream's default template drops it without a word). The
report names the wording used (`JudgePrompts.source`).

Parsers: `parse_absolute` / `parse_relative` (llmjax.evals.parsing) read the verdict only
where it ends the output.
"""

import importlib.util
import os
from typing import Mapping

from llmjax.errors import UserError
from llmjax.evals.parsing import parse_absolute, parse_relative

__all__ = ["ABSOLUTE_SYSTEM", "RELATIVE_SYSTEM", "absolute_prompt", "relative_prompt",
           "format_rubric", "parse_absolute", "parse_relative", "JudgePrompts", "load_prompts",
           "TEMPLATE_KEYS"]

Messages = tuple[dict[str, str], ...]

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


class JudgePrompts:
  """The judge's messages for absolute and relative grading, and where their wording comes
  from (`source`, for the report). This class is our own wording; TemplatePrompts fills
  template strings (prometheus-eval's or a user's)."""

  source = "llmjax's own wording (prometheus-eval is not installed)"

  def absolute_messages(self, instruction: str, response: str, rubric: Mapping[str, str],
                        reference: str | None) -> Messages:
    return ({"role": "system", "content": ABSOLUTE_SYSTEM},
            {"role": "user", "content": absolute_prompt(instruction, response, rubric,
                                                        reference)})

  def relative_messages(self, instruction: str, response_a: str, response_b: str,
                        rubric: Mapping[str, str], reference: str | None) -> Messages:
    return ({"role": "system", "content": RELATIVE_SYSTEM},
            {"role": "user", "content": relative_prompt(instruction, response_a, response_b,
                                                        rubric, reference)})


# The strings a template set holds, as prometheus-eval names them in its prompts module.
TEMPLATE_KEYS = {"absolute_system": "ABS_SYSTEM_PROMPT", "relative_system": "REL_SYSTEM_PROMPT",
                 "absolute": "ABSOLUTE_PROMPT", "absolute_without_reference":
                 "ABSOLUTE_PROMPT_WO_REF", "relative": "RELATIVE_PROMPT",
                 "relative_without_reference": "RELATIVE_PROMPT_WO_REF",
                 "rubric": "SCORE_RUBRIC_TEMPLATE"}


class TemplatePrompts(JudgePrompts):
  """Messages filled into template strings (keys: TEMPLATE_KEYS), as prometheus-eval's judge
  builds them: [system prompt, user turn of the filled template]; relative grading shows the
  rubric's first line (its criteria)."""

  def __init__(self, templates: Mapping[str, str], source: str):
    self.templates, self.source = dict(templates), source

  def _rubric(self, rubric: Mapping[str, str], criteria_only: bool) -> str:
    text = self.templates["rubric"].format(**rubric)
    return text.split("\n")[0] if criteria_only else text

  def absolute_messages(self, instruction, response, rubric, reference):
    template = self.templates["absolute" if reference else "absolute_without_reference"]
    content = template.format(instruction=instruction, response=response,
                              rubric=self._rubric(rubric, False), reference_answer=reference)
    return ({"role": "system", "content": self.templates["absolute_system"]},
            {"role": "user", "content": content})

  def relative_messages(self, instruction, response_a, response_b, rubric, reference):
    template = self.templates["relative" if reference else "relative_without_reference"]
    content = template.format(instruction=instruction, response_A=response_a,
                              response_B=response_b, rubric=self._rubric(rubric, True),
                              reference_answer=reference)
    return ({"role": "system", "content": self.templates["relative_system"]},
            {"role": "user", "content": content})


TEMPLATE_SOURCES = ("auto", "prometheus-eval", "llmjax")


def load_prompts(spec: str = "auto") -> JudgePrompts:
  """The judge's wording: see the module docstring for `spec`."""
  if spec == "llmjax":
    own = JudgePrompts()
    own.source = "llmjax's own wording (judge.templates = 'llmjax')"
    return own
  if spec in ("auto", "prometheus-eval"):
    found = _prometheus_eval_templates()
    if found is not None:
      return found
    if spec == "prometheus-eval":
      raise UserError("judge.templates = 'prometheus-eval': the package is not installed "
                      "(pip install prometheus-eval, or the llmjax[prometheus] extra)")
    return JudgePrompts()
  return _file_templates(spec)


def _prometheus_eval_templates() -> TemplatePrompts | None:
  """prometheus-eval's templates, read from its installed prompts module without importing
  the package (whose __init__ pulls in its LLM clients), or None when it is not installed."""
  from importlib import metadata
  try:
    spec = importlib.util.find_spec("prometheus_eval")
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(list(spec.submodule_search_locations)[0], "prompts.py")
  module_spec = importlib.util.spec_from_file_location("_llmjax_prometheus_eval_prompts", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    version = metadata.version("prometheus-eval")
  except metadata.PackageNotFoundError:
    version = "?"
  missing = [name for name in TEMPLATE_KEYS.values() if not isinstance(
      getattr(module, name, None), str)]
  if missing:
    raise UserError(f"{path}: prometheus-eval {version} has no {missing[0]}; set "
                    "judge.templates to 'llmjax' or a template file")
  return TemplatePrompts({key: getattr(module, name) for key, name in TEMPLATE_KEYS.items()},
                         f"prometheus-eval {version}")


def _file_templates(path: str) -> TemplatePrompts:
  from llmjax.data.readers import check_file, read_json_object
  check_file(path)
  templates = read_json_object(path)
  for key in TEMPLATE_KEYS:
    if not isinstance(templates.get(key), str):
      raise UserError(f"judge.templates = {path!r}: {key!r} must be a string (keys: "
                      f"{', '.join(TEMPLATE_KEYS)})")
  fields = dict.fromkeys(("instruction", "response", "response_A", "response_B",
                          "reference_answer", "rubric", *RUBRIC_FIELDS), "")
  for key in TEMPLATE_KEYS:
    try:
      templates[key].format(**fields)
    except (KeyError, IndexError, ValueError) as e:
      raise UserError(f"judge.templates = {path!r}: {key!r} cannot be filled ({type(e).__name__}"
                      f": {e}); its fields are {{{'}, {'.join(fields)}}}") from None
  return TemplatePrompts(templates, f"templates from {path}")


RUBRIC_FIELDS = ("criteria",) + tuple(f"score{n}_description" for n in range(1, 6))
