"""BiGGen Bench graded by an LM judge: instances, prompts and reports (benchmark), the
Prometheus grading format (prometheus) and the experiment (experiment). See README.md."""
