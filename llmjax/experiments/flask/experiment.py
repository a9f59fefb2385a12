"""FLASK with an LM judge (experiment `flask`): each instance's 3 skills scored 1-5 against
their rubrics, aggregated per skill, ability, domain and skill x difficulty.

Files in the workdir: judgements.jsonl (every raw judge output; a rerun judges only what is
missing), report.json, report.md and plots/skills_radar.png.
"""

import functools
import os

from llmjax import plotting, runio
from llmjax.errors import UserError
from llmjax.evals.backends import check_judge_config, judge_sampling, make_backend
from llmjax.evals.judging import JudgeItem, JudgeOptions, judge
from llmjax.experiments.flask import benchmark as flask
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
  rubrics = flask.load_rubrics(config.rubrics)
  items = [JudgeItem(row["idx"], flask.judge_messages(row, rubrics),
                     functools.partial(flask.parse_scores, skills=tuple(row["skills"])))
           for row in rows]
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  judgements = judge(items, make_backend(config.judge, parallel), lambda text: None,
                     judge_sampling(config.judge), os.path.join(workdir, "judgements.jsonl"),
                     seed=config.seed, options=JudgeOptions.from_config(config.judge),
                     show_progress=config.progress)
  result = flask.aggregate(rows, judgements)
  runio.write_json(os.path.join(workdir, "report.json"), result)
  if runio.is_writer():
    runio.atomic_write_text(os.path.join(workdir, "report.md"), flask.markdown(result))
  plotting.plot_radar(os.path.join(workdir, "plots", "skills_radar.png"),
                      {config.name or "model": {s: (t["mean"] if t["mean"] is not None else 0.0)
                                                for s, t in result["skills"].items()}},
                      title="FLASK skill scores (1-5)")
  return {"skill_means": {s: t["mean"] for s, t in result["skills"].items()},
          "ability_means": result["abilities"],
          "domain_means": {d: t["mean"] for d, t in result["domains"].items()},
          "instances": result["instances"], "parse_failures": result["parse_failures"],
          "not_applicable": result["not_applicable"], "judge": config.judge.backend}
