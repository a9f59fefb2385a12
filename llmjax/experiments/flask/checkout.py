"""The judge's prompt from a FLASK checkout (`config.flask_checkout`): FLASK's own reviewer
prompt and skill rubrics, read at run time from the user's clone of the FLASK repository
(FLASK has no licence: nothing of it ships with llmjax).

Files read, as FLASK's gpt_review script reads them:
  metadata_annotation/skillset/src/skillset_description.json   the skills' rubrics
  gpt_review/src/reviewer.jsonl, gpt_review/src/prompt.jsonl    the reviewer FLASK uses (its
      second entry) and its prompt: system_prompt, prompt_template, defaults

The prompt template is filled as FLASK fills it: the question, the response, the sample
(reference) answer, the number of skills, and the skills block (for each of the instance's
skills its name and criteria, then "Score 1: ..." to "Score 5: ..."). FLASK writes 3 for the
number of skills whatever the instance has; here it is the instance's count (3 in FLASK's data).
"""

import os
from typing import Any, Mapping

from llmjax.data.readers import read_jsonl
from llmjax.errors import DataError
from llmjax.experiments.flask.benchmark import read_skillset

SKILLSET = os.path.join("metadata_annotation", "skillset", "src", "skillset_description.json")
PROMPTS = os.path.join("gpt_review", "src", "prompt.jsonl")
REVIEWERS = os.path.join("gpt_review", "src", "reviewer.jsonl")
REVIEWER_INDEX = 1  # the reviewer entry FLASK's gpt_review script uses


class FlaskCheckout:
  """FLASK's prompt and rubrics from a checkout at `root`."""

  def __init__(self, root: str):
    if not os.path.isdir(root):
      raise DataError(f"config.flask_checkout = {root!r}: not a directory (a clone of "
                      "github.com/kaistAI/FLASK)")
    self.root = root
    skillset = read_skillset(os.path.join(root, SKILLSET))
    self.names = {key: name for key, name, _, _ in skillset}
    self.rubrics = {key: (criteria, levels) for key, _, criteria, levels in skillset}
    reviewers = list(read_jsonl(os.path.join(root, REVIEWERS)))
    if len(reviewers) <= REVIEWER_INDEX or "prompt_id" not in reviewers[REVIEWER_INDEX]:
      raise DataError(f"{os.path.join(root, REVIEWERS)}: expected a reviewer entry "
                      f"{REVIEWER_INDEX} with a prompt_id")
    prompt_id = reviewers[REVIEWER_INDEX]["prompt_id"]
    prompts = [p for p in read_jsonl(os.path.join(root, PROMPTS))
               if p.get("prompt_id") == prompt_id]
    if not prompts:
      raise DataError(f"{os.path.join(root, PROMPTS)}: no prompt with prompt_id {prompt_id!r}")
    prompt = prompts[0]
    for key in ("system_prompt", "prompt_template"):
      if not isinstance(prompt.get(key), str):
        raise DataError(f"{os.path.join(root, PROMPTS)}: prompt {prompt_id!r} has no {key}")
    self.system, self.template = prompt["system_prompt"], prompt["prompt_template"]
    self.defaults = dict(prompt.get("defaults") or {})
    self.source = f"FLASK's own prompt and rubrics from {root} (prompt_id {prompt_id})"

  def skills_block(self, skills) -> str:
    block = ""
    for skill in skills:
      criteria, levels = self.rubrics[skill]
      block += f"\n{self.names[skill]}: {criteria}"
      block += "".join(f"\nScore {n}: {level}" for n, level in enumerate(levels, 1)) + "\n\n"
    return block

  def judge_messages(self, row: Mapping[str, Any]) -> tuple[dict[str, str], ...]:
    try:
      user = self.template.format(question=row["instruction"], response=row["response"],
                                  skills=self.skills_block(row["skills"]),
                                  num=len(row["skills"]), sample_answer=row["answer"],
                                  **self.defaults)
    except (KeyError, IndexError, ValueError) as e:
      raise DataError(f"{os.path.join(self.root, PROMPTS)}: the prompt template cannot be "
                      f"filled ({type(e).__name__}: {e})") from None
    return ({"role": "system", "content": self.system}, {"role": "user", "content": user})

