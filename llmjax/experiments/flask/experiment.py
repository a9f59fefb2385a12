"""FLASK with an LM judge (experiment `flask`): each instance's 3 skills scored 1-5 against
their rubrics, aggregated per skill, ability, domain and skill x difficulty.

The judge is shown our wording of the prompt and rubrics, or FLASK's own from a checkout
(`flask_checkout`; llmjax/experiments/flask/checkout.py); report.json names which.

Files in the workdir: judgements.jsonl (every raw judge output; a rerun asks only for what is
missing or failed), report.json, report.md and plots/skills_radar.png.
"""

import functools
import os

from llmjax import plotting, runio
from llmjax.errors import UserError
from llmjax.evals.backends import check_judge_config, judge_sampling, make_backend
from llmjax.evals.judging import JudgeItem, JudgeOptions, judge, shorten_text
from llmjax.experiments.flask import benchmark as flask
from llmjax.experiments.flask.checkout import FlaskCheckout
from llmjax.parallel import Parallel


def run(config, workdir: str) -> dict:
  check_judge_config(config.judge)
  if not config.data:
    raise UserError("config.data is required: a FLASK-format JSONL (idx, instruction, answer, "
                    "skill, domain, difficulty, and response unless config.responses gives "
                    "them); FLASK's own data has no license and does not ship with llmjax")
  rows = flask.read_instances(config.data, config.responses)
  if config.limit:
    rows = rows[:config.limit]
  if config.flask_checkout:
    checkout = FlaskCheckout(config.flask_checkout)
    build, prompt_source = checkout.judge_messages, checkout.source
  else:
    rubrics = flask.load_rubrics(config.rubrics)
    build = functools.partial(flask.judge_messages, rubrics=rubrics)
    prompt_source = "llmjax's own wording" + (f", rubrics from {config.rubrics}"
                                               if config.rubrics else "")
  items = [_judge_item(row, build) for row in rows]
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  options = JudgeOptions.from_config(config.judge)
  sampling = judge_sampling(config.judge)
  judgements = judge(items, make_backend(config.judge, parallel), lambda text: None,
                     sampling, os.path.join(workdir, "judgements.jsonl"),
                     seed=config.seed, options=options, show_progress=config.progress)
  result = flask.aggregate(rows, judgements)
  result.update(judge_prompt=prompt_source, parse_retries=options.describe_retries(sampling))
  runio.write_json(os.path.join(workdir, "report.json"), result)
  if runio.is_writer():
    runio.atomic_write_text(os.path.join(workdir, "report.md"), flask.markdown(result))
  # a skill no instance scored is left off the radar (drawing it at 0 would read as a score)
  plotting.plot_radar(os.path.join(workdir, "plots", "skills_radar.png"),
                      {config.name or "model": {s: t["mean"] for s, t in result["skills"].items()
                                                if t["mean"] is not None}},
                      title="FLASK skill scores (1-5)")
  return {"skill_means": {s: t["mean"] for s, t in result["skills"].items()},
          "ability_means": result["abilities"],
          "domain_means": {d: t["mean"] for d, t in result["domains"].items()},
          "instances": result["instances"], "parse_failures": result["parse_failures"],
          "request_failures": result["request_failures"],
          "skills_unread": result["skills_unread"],
          "not_applicable": result["not_applicable"], "judge": config.judge.backend}


def _judge_item(row, build) -> JudgeItem:
  """One instance's judgement: its skills parsed from the output; its response may be cut to
  fit the judge's context (judge.truncate_response)."""
  def messages(fraction: float = 1.0):
    return build({**row, "response": shorten_text(row["response"], fraction)})
  return JudgeItem(row["idx"], messages(),
                   functools.partial(flask.parse_scores, skills=tuple(row["skills"])),
                   shorten=messages)
