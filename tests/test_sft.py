"""Supervised fine-tuning through the CLI: the loss on completions only, packed examples that
never attend to each other, and a run that generate can read back."""

import json

import numpy as np
import pytest

from conftest import read_jsonl, run_cli
from llmjax.data.pipeline import lm_batches, take
from llmjax.experiments.sft import example_rows
from llmjax.data.examples import read_examples
from llmjax.data.tokenizers import ByteTokenizer

SMALL = ("--config.model.d_model=32", "--config.model.n_layers=2", "--config.model.n_heads=2",
         "--config.model.n_kv_heads=1", "--config.model.d_ff=64", "--config.train.seq_len=32",
         "--config.train.batch_size=8", "--config.train.progress=False")


def write_examples(path, n, seed):
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for _ in range(n):
      word = "".join(rng.choice(list("abcdef"), 3))
      f.write(json.dumps({"prompt": f"reverse {word}:", "completion": word[::-1]}) + "\n")


def test_examples_pack_with_the_loss_on_completions_only(tmp_path):
  write_examples(tmp_path / "a.jsonl", 6, 0)
  examples = read_examples(str(tmp_path / "a.jsonl"), ByteTokenizer(), 49, ("completion",))
  rows = example_rows(examples, loss_on_prompt=False)  # 17 tokens each: 2 to a row of 49
  batch = take(lm_batches(rows, None, 48, 2, seed=0, train=False), 1)[0]
  # Each row holds several examples (segments); a target counts only inside a completion.
  assert batch["segment_ids"].max() >= 2
  tok = ByteTokenizer()
  counted = tok.decode(batch["targets"][0][batch["loss_mask"][0] == 1])
  first = examples.completions[0][0]
  assert counted.startswith(tok.decode(first))
  assert "reverse" not in counted


@pytest.mark.slow
def test_sft_cli_trains_and_its_run_generates(tmp_path):
  write_examples(tmp_path / "train.jsonl", 200, 1)
  write_examples(tmp_path / "dev.jsonl", 40, 2)
  result = run_cli(["--config", "configs/sft.py", "--workdir", str(tmp_path / "sft"), *SMALL,
                    f"--config.data.train={tmp_path / 'train.jsonl'}",
                    f"--config.data.eval={tmp_path / 'dev.jsonl'}",
                    "--config.data.tokenizer=byte", "--config.train.steps=60",
                    "--config.optim.lr=3e-3", "--config.train.eval_every=30",
                    "--config.train.checkpoint_every=60"])
  assert result.returncode == 0, result.stderr[-2000:]
  evals = [r for r in read_jsonl(tmp_path / "sft" / "metrics.jsonl") if r["split"] == "eval"]
  assert evals[-1]["loss"] < evals[0]["loss"]
  summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
  assert summary["train_examples"] == 200 and summary["truncated_examples"] == 0
  (tmp_path / "prompts.jsonl").write_text('{"prompt": "reverse abc:"}\n')
  generated = run_cli(["--config", "configs/generate.py", "--workdir", str(tmp_path / "gen"),
                       f"--config.checkpoint={tmp_path / 'sft'}",
                       f"--config.prompts={tmp_path / 'prompts.jsonl'}",
                       "--config.sampling.max_new_tokens=4"])
  assert generated.returncode == 0, generated.stderr[-2000:]
  assert read_jsonl(tmp_path / "gen" / "generations.jsonl")[0]["tokens"]
