"""The music-plagiarism judge (experiment `music_judge`; llmjax/experiments/music_judge/, whose
README.md gives the method and results).

  python -m llmjax.main --config configs/music_judge.py --workdir W
  python -m llmjax.main --config configs/music_judge.py --workdir W \\
      --config.judge.backend=openai --config.judge.base_url=http://127.0.0.1:8000/v1 \\
      --config.judge.model=NAME [--config.judge.api_key_env=OPENAI_API_KEY]

Builds the benchmark from music21's public-domain corpus (Bach's chorale tunes that he set more
than once: graded variations, natural pairs, negatives; folk titles printed in two books: variant
pairs and negatives; split by tune), runs the melody, rhythm and harmony
modules on every pair, fits the logistic-regression baseline and its one-module-dropped
ablations on the train split, and writes report.md (ROC-AUC, balanced accuracy, the per kind
and level table), report.json and plots/roc.png from the test split. The LM judge stage runs
when `judge.backend` is 'openai' (any OpenAI-compatible endpoint) or 'local' (an llmjax run or
hf:DIR): on every test pair (or a seeded random sample of `lm_judge_limit`), and with
`lm_judge_ablations` three more times, each with one module's evidence withheld (4x the calls).
Unparsed verdicts are counted in the report's `unparsed` column, not scored.

Runtime and result, measured (host D, 2-core CPU, 2026-12-03): the default run takes 148 s with
another job on the same cores (1,348 pairs: 48 chorale tunes, 137 settings, 40 folk titles); on
the test split (826 pairs) ROC-AUC melody 0.975, rhythm 0.892, harmony 0.887, baseline 0.986
(balanced accuracy 0.962; 0.922 without the melody features). Quotations of 2 bars are the
hard case (the baseline detects 48%). The
LM judge has been run only against a scripted endpoint (tests/test_music_judge.py): no LM-judge
figure yet.
"""

import ml_collections

from llmjax.config_base import base_config, judge_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config(experiment="music_judge")
  config.benchmark = ml_collections.ConfigDict({
      "tunes": 48,  # chorale tunes (each set by Bach two or more times); 0: all 73
      "folk_tunes": 40,  # folk titles printed in two books (0: none; at most 191)
      "test_share": 0.4,  # share of tunes in the test split
      "natural_per_tune": 2,  # pairs of two settings of the same tune
      "negatives_per_tune": 2,  # random negatives, and as many hard (same key and metre)
  })
  config.judge = judge_config()
  config.judge.update(backend="none", temperature=0.0, top_p=1.0, repetition_penalty=1.0,
                      max_tokens=768)
  config.lm_judge_limit = 0  # a seeded random sample of this many test pairs (0: all)
  config.lm_judge_ablations = True  # judge again with each module's evidence withheld
  config.progress = True
  return config
