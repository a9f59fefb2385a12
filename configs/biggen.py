"""BiGGen Bench graded by an LM judge (experiment `biggen`).

  python -m llmjax.main --config configs/biggen.py --workdir W \\
      --config.judge.backend=openai --config.judge.base_url=http://127.0.0.1:8000/v1
  python -m llmjax.main --config configs/biggen.py --workdir W \\
      --config.judge.backend=local --config.judge.checkpoint=hf:/models/prometheus-7b-v2.0

`data`: BiGGen rows (../shared/data/biggen_bench/sample_responses.json: the 765 instances with
a sample response each; or any file with the same fields). `responses.checkpoint`: generate
the responses with a model under test instead (sampling as upstream: temperature 1.0, top_p
0.9, repetition penalty 1.03, up to 2,048 tokens). Grading: absolute (default; the judge
writes feedback and "[RESULT] N") or relative (`responses_b`: a second response file; "[RESULT]
A|B", the report gives the share of A). The judge: `judge.*` (llmjax.config_base.judge_config).
Writes judgements.jsonl (raw judge outputs), report.json, report.md and plots/capabilities.png.

Runtime and result, measured (host D, 2-core CPU, 2026-12-03): with configs/pretrain.py:tiny as
the judge (benchmarks/biggen_served_vs_local.sh), all 765 instances with one retry took 754 s
through llmjax.serve and 617 s in-process, with identical raw outputs (765 of 765) and equal
reports; nothing parsed (a model that small never writes "[RESULT] N"), which the report
states per capability. A real judge (Prometheus-2 7B on a GPU) has not been run: no figure yet.
"""

import ml_collections

from llmjax.config_base import base_config, judge_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config(experiment="biggen")
  config.data = "../shared/data/biggen_bench/sample_responses.json"
  config.limit = 0  # the first N instances (0: all)
  config.grading = "absolute"  # absolute | relative
  config.responses_b = ""  # relative grading: the B responses (a BiGGen file)
  config.responses = ml_collections.ConfigDict({
      "checkpoint": "",  # a model under test: generate the responses (else the file's)
      "batch_size": 16, "length_bucket": 128, "temperature": 1.0, "top_p": 0.9,
      "max_tokens": 2048, "repetition_penalty": 1.03})
  config.judge = judge_config()
  # the judge's wording: auto (prometheus-eval's templates where the package is installed,
  # else ours) | prometheus-eval | llmjax | a JSON file of templates (see prometheus.py)
  config.judge.templates = "auto"
  # BiGGen's 18 llm_judge instances: auto (not graded by Prometheus-family judges, as
  # upstream) | grade | skip
  config.llm_judge_instances = "auto"
  config.progress = True
  return config
