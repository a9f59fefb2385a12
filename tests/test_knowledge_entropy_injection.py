"""Knowledge injection: the schedule of paragraphs, their rows, where they land in the batches
(and that the position survives a checkpoint), and the paper's acquisition and forgetting."""

import json
import pathlib

import numpy as np
import pytest

from llmjax.data.tokenizers import load_tokenizer
from llmjax.errors import DataError, UserError
from llmjax.experiments.knowledge_entropy.injection import (InjectingIterator, Injection,
                                                            acquisition_and_forgetting,
                                                            injection_plan, paragraph_rows,
                                                            plan_injection)

REPO = pathlib.Path(__file__).resolve().parents[1]
ROOT = REPO.parent / "shared" / "data" / "fictional_knowledge"
needs_data = pytest.mark.skipif(not ROOT.is_dir(),
                                reason=f"{ROOT} (the fictional knowledge data) is absent")


@needs_data
def test_schedule_shows_paraphrases_in_turn_and_once_items_once():
  plan = plan_injection(str(ROOT), injections=10, paraphrased_items=70, once_per_injection=6)
  paraphrase = json.loads((ROOT / "paraphrase70.json").read_text())
  once = json.loads((ROOT / "once60.json").read_text())
  assert [len(shown) for shown in plan.schedule] == [76] * 10
  assert plan.schedule[0][3] == ("paraphrase70", 3, paraphrase[3]["train_context"])
  assert plan.schedule[4][3] == ("paraphrase70", 3, paraphrase[3]["paraphrases"][3])
  once_shown = [item for shown in plan.schedule for d, item, _ in shown if d == "once60"]
  assert once_shown == list(range(60))
  assert plan.schedule[2][70][2] == once[12]["train_context"]
  assert len(plan.probes) == (70 + 60) * 3 * 5
  probe = plan.probes[0]
  assert (probe.dataset, probe.kind, probe.item) == ("paraphrase70", "mem", 0)
  assert (probe.input, probe.target) == (paraphrase[0]["mem_input"][0],
                                         paraphrase[0]["mem_target"][0])
  with pytest.raises(UserError, match="only 10 versions"):
    plan_injection(str(ROOT), injections=11, paraphrased_items=1, once_per_injection=0)
  with pytest.raises(UserError, match="exceed its 60 items"):
    plan_injection(str(ROOT), injections=10, paraphrased_items=0, once_per_injection=7)


def test_malformed_knowledge_file_names_file_and_item(tmp_path):
  good = {"train_context": "c", "paraphrases": ["p"], **{
      f"{k}_{part}": ["x"] for k in ("mem", "gen", "hard_gen") for part in ("input", "target")}}
  bad = dict(good)
  del bad["hard_gen_target"]
  (tmp_path / "paraphrase70.json").write_text(json.dumps([good, bad]))
  (tmp_path / "once60.json").write_text(json.dumps([good]))
  with pytest.raises(DataError, match=r"paraphrase70.json: item 1: missing field "
                                      r"'hard_gen_target'"):
    plan_injection(str(tmp_path), 1, 2, 0)
  (tmp_path / "paraphrase70.json").write_text("[{")
  with pytest.raises(DataError, match="paraphrase70.json: not valid JSON"):
    plan_injection(str(tmp_path), 1, 1, 0)


def test_paragraph_rows_make_every_token_a_target_once():
  tokens = list(range(3, 3 + 23))
  rows = paragraph_rows(tokens, seq_len=8, pad_id=0)
  assert len(rows) == 3
  targets = [t for row in rows for t, m in zip(row["targets"], row["loss_mask"]) if m]
  assert targets == tokens[1:]
  assert rows[1]["inputs"][0] == tokens[8] and rows[-1]["segment_ids"].tolist() == [1] * 7 + [0]


def _batches(n, rows=4, length=8):
  for step in range(n):
    yield {k: np.full((rows, length), 100 + step, np.int32) for k in
           ("inputs", "targets", "loss_mask", "segment_ids", "positions")}


class _Resumable:
  """A minimal iterator with grain's get_state/set_state, over _batches."""

  def __init__(self):
    self.position, self.items = 0, list(_batches(12))

  def __next__(self):
    self.position += 1
    return self.items[self.position - 1]

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = state["position"]


def test_injected_rows_land_at_their_steps_and_resume():
  tokenizer = load_tokenizer("byte")
  injection = Injection(schedule=[[("paraphrase70", 0, "a" * 20)], [("once60", 0, "b" * 5)]],
                        probes=[])
  plan = injection_plan(injection, tokenizer, seq_len=8, interval=3, rows_per_step=2,
                        local_batch=4)
  assert sorted(plan) == [3, 4, 6]  # 20 bytes + EOS = 3 rows at 2 a step, then 1 row
  it = InjectingIterator(_Resumable(), plan)
  seen = [next(it) for _ in range(4)]
  a = ord("a") + 3
  assert seen[2]["inputs"][0, 0] == a and seen[2]["inputs"][2, 0] == 102  # rows 0-1 injected
  assert seen[3]["inputs"][0, 0] == a and seen[3]["inputs"][1, 0] == 103  # the third row
  assert seen[1]["inputs"][0, 0] == 101
  state = it.get_state()
  fresh = InjectingIterator(_Resumable(), plan)
  fresh.set_state(state)
  assert [next(fresh)["inputs"][0, 0] for _ in range(2)] == [104, ord("b") + 3]
  with pytest.raises(UserError, match="more than the interval of 3"):
    injection_plan(Injection([[("once60", 0, "c" * 200)]], []), tokenizer, 8, 3, 2, 4)


def test_acquisition_and_forgetting_by_the_papers_formulas():
  first = {"probe_once60_mem": -40.0, "probe_once60_gen": -50.0, "accuracy": 0.5}
  last = {"probe_once60_mem": -30.0, "probe_once60_gen": -45.0, "accuracy": 0.4}
  out = acquisition_and_forgetting(first, last)
  assert out["acquisition_once60_mem"] == pytest.approx(0.25)
  assert out["acquisition_once60_gen"] == pytest.approx(0.10)
  assert out["acquisition"] == pytest.approx(0.175)
  assert out["forgetting"] == pytest.approx(0.2)


@pytest.mark.slow
@needs_data
def test_tiny_demo_pipeline_writes_table_and_plots_and_reruns_as_done(tmp_path):
  from conftest import run_cli
  args = ["--config", "configs/knowledge_entropy.py:tiny", "--workdir", str(tmp_path),
          "--config.progress=False", "--config.pretrain.train.progress=False",
          "--config.train.progress=False", "--config.pretrain.train.steps=20",
          "--config.pretrain.train.checkpoint_every=10", "--config.pretrain.train.eval_every=20",
          "--config.demo.early_step=10", "--config.demo.entropy_documents=8",
          "--config.injection.injections=1", "--config.injection.interval=10",
          "--config.injection.paraphrased_items=2", "--config.train.steps=10",
          "--config.train.eval_every=5", "--config.train.eval_batches=1",
          # The smallest batches that still hold a step of injected rows: the stages' wiring
          # is what is checked here, not what a tiny model learns.
          "--config.pretrain.train.batch_size=4", "--config.pretrain.train.seq_len=64",
          "--config.pretrain.train.eval_batches=1", "--config.train.batch_size=4",
          "--config.injection.rows_per_step=4",
          "--config.max_tokens=64", "--config.batch_size=4", "--config.length_bucket=32"]
  result = run_cli(args, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["entropy_steps"] == [10, 20]
  assert set(summary["table"]) == {"early", "late", "resuscitated"}
  for row in summary["table"].values():
    assert np.isfinite([row["knowledge_entropy"], row["acquisition"], row["forgetting"]]).all()
  assert summary["table"]["late"]["knowledge_entropy"] == summary["knowledge_entropy"][-1]
  # The resuscitated run is measured against the pretrained (late) model's K_PT and P_PT.
  def stage(name):
    return json.loads((tmp_path / name / "done.json").read_text())["result"]
  expected = acquisition_and_forgetting(stage("inject_late")["first"],
                                        stage("inject_resuscitated")["last"])
  for key in ("acquisition", "forgetting"):
    assert summary["table"]["resuscitated"][key] == pytest.approx(expected[key])
    assert stage("inject_resuscitated")[key] == pytest.approx(expected[key])
  for plot in ("knowledge_entropy", "retention_early", "retention_late",
               "retention_resuscitated"):
    assert (tmp_path / "plots" / f"{plot}.png").stat().st_size > 0
  evals = [json.loads(line) for line in (tmp_path / "inject_late" / "metrics.jsonl")
           .read_text().splitlines() if '"eval"' in line]
  assert [e["step"] for e in evals] == [0, 5, 10]
  again = run_cli(args, timeout=300)
  assert again.returncode == 0 and again.stderr.count("done, skipped") == 7


def test_prepending_a_paragraph_keeps_the_rows_documents_apart():
  from llmjax.experiments.knowledge_entropy.injection import prepended_row
  row = {"inputs": np.array([10, 11, 12, 20, 21, 22]),
         "targets": np.array([11, 12, 20, 21, 22, 23]),
         "segment_ids": np.array([1, 1, 1, 2, 2, 2]), "positions": np.array([0, 1, 2, 0, 1, 2]),
         "loss_mask": np.array([1, 1, 0, 1, 1, 1])}
  out = prepended_row(row, [5, 6, 7])
  assert out["inputs"].tolist() == [5, 6, 7, 10, 11, 12]
  assert out["targets"].tolist() == [6, 7, 10, 11, 12, 20]
  assert out["segment_ids"].tolist() == [1, 1, 1, 2, 2, 2]
  assert out["positions"].tolist() == [0, 1, 2, 0, 1, 2]
  assert out["loss_mask"].tolist() == [1, 1, 0, 1, 1, 0]
  whole = prepended_row(row, list(range(30, 40)))  # longer than the row: the paragraph only
  assert whole["inputs"].tolist() == list(range(30, 36))
  assert whole["targets"].tolist() == list(range(31, 37)) and whole["loss_mask"].all()
  tokenizer = load_tokenizer("byte")
  plan = injection_plan(Injection([[("once60", 0, "ab"), ("once60", 1, "cd")]], []), tokenizer,
                        seq_len=8, interval=4, rows_per_step=4, local_batch=4,
                        placement="prepend")
  assert plan == {4: [tokenizer.encode("ab", add_eos=True),
                      tokenizer.encode("cd", add_eos=True)]}
  it = InjectingIterator(_Resumable(), plan)
  batch = [next(it) for _ in range(4)][-1]
  assert batch["inputs"][0, :3].tolist() == tokenizer.encode("ab", add_eos=True)
  assert batch["inputs"][0, 3] == 103 and batch["segment_ids"][0, 3] == 103 + 1
  with pytest.raises(UserError, match="placement = 'middle'"):
    injection_plan(Injection([], []), tokenizer, 8, 4, 4, 4, placement="middle")
