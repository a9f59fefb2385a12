"""FLASK graded by an LM judge: instances, skill rubrics, score parsing and aggregation
(benchmark) and the experiment (experiment). See README.md."""
