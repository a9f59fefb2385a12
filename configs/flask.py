"""FLASK graded by an LM judge (experiment `flask`).

  python -m llmjax.main --config configs/flask.py --workdir W --config.data=FLASK.jsonl \\
      [--config.responses=RESPONSES.jsonl] [--config.rubrics=FLASK/.../skillset_description.json]
      --config.judge.backend=openai --config.judge.base_url=http://127.0.0.1:8000/v1

`data`: FLASK's released format (one JSON object per line: idx, instruction, answer, skill
[3 names], domain [1-2], difficulty, and `response` unless `responses` (idx, response) gives
them). FLASK's data has no license and does not ship with llmjax. `rubrics`: '' for ours (our own
wording of the 12 skills) or a FLASK checkout's skillset_description.json. The judge samples at
temperature 0 as FLASK's authors meant to (their script's setting never reached the API).
Writes judgements.jsonl, report.json, report.md and plots/skills_radar.png.

Runtime and result: one judge call per instance (plus retries of unparsed ones), so the cost is
the judge's; measured only on fixtures written for the tests (tests/test_flask.py), where the
tables equal hand-computed ones. No real FLASK run has been made here (its data does not ship).
"""

import ml_collections

from llmjax.config_base import base_config, judge_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config(experiment="flask")
  config.data = ""
  config.responses = ""
  config.rubrics = ""
  # a clone of github.com/kaistAI/FLASK: the judge is shown FLASK's own reviewer prompt and
  # skill rubrics, read from it (llmjax/experiments/flask/checkout.py); '' for our wording
  config.flask_checkout = ""
  config.limit = 0
  config.name = ""  # the evaluated model's label in plots
  config.judge = judge_config()
  config.judge.update(temperature=0.0, top_p=1.0, repetition_penalty=1.0)
  config.progress = True
  return config
