"""One history per workdir: a workdir belongs to the experiment that made it, a resume keeps the
settings that define what was trained or judged, and a run that fails before it wrote anything
(by mistake or by a bug) leaves the workdir as it found it. Each case through the command line,
with its exit code, its one `error:` line and what is on disk afterwards."""

import json

import pytest

from conftest import error_line, read_jsonl, run_cli, small_args
from llmjax import main, runio


def pretrain_args(workdir, *overrides):
  """The smallest pretraining run, with a checkpoint every 4 steps and a log row every 2."""
  return small_args(workdir, "--config.train.checkpoint_every=4", "--config.train.log_every=2",
                    *overrides)


def record(workdir) -> dict:
  """What a refused run must leave unchanged."""
  return {p.name: p.read_bytes() for p in sorted(workdir.iterdir())
          if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A finished 4-step pretraining run (checkpoint at step 4)."""
  workdir = tmp_path_factory.mktemp("pretrained")
  result = run_cli(pretrain_args(workdir, "--config.train.steps=4"))
  assert result.returncode == 0, result.stderr
  return workdir


def test_another_experiment_is_refused_and_the_record_is_unchanged(pretrained, tmp_path,
                                                                    capsys):
  before = record(pretrained)
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text('{"prompt": "abc"}\n')
  assert main.main(["--config", "configs/generate.py", "--workdir", str(pretrained),
                    f"--config.checkpoint={pretrained}", f"--config.prompts={prompts}"]) == 2
  assert error_line(capsys) == (
      f"error: workdir {pretrained} belongs to a 'lm_pretrain' run (its config.json); a "
      "'generate' run there would replace that run's record: use another --workdir")
  assert record(pretrained) == before
  assert not (pretrained / "generations.jsonl").exists()


@pytest.mark.parametrize("override, differences", [
    ("--config.seed=1", "seed = 0 there, 1 now"),
    ("--config.data.num_docs=300", "data.num_docs = 4000 there, 300 now"),
    ("--config.data.corpus=text", 'data.corpus = "procedural" there, "text" now'),
    ("--config.model.d_ff=128", "model.d_ff = 64 there, 128 now"),
])
def test_a_resume_that_changes_the_history_is_refused(pretrained, capsys, override,
                                                       differences):
  before = record(pretrained)
  assert main.main(pretrain_args(pretrained, "--config.train.steps=8", override)) == 2
  assert error_line(capsys) == (
      f"error: workdir {pretrained} holds a run with other settings ({differences}); a resume "
      "would mix two histories: use a new --workdir, or add --config.resume=False "
      "--config.overwrite=True to move that run aside")
  assert record(pretrained) == before


@pytest.mark.slow  # trains two or three runs
def test_a_resume_may_train_longer_and_change_how_it_computes(tmp_path):
  first = run_cli(pretrain_args(tmp_path, "--config.train.steps=4"))
  assert first.returncode == 0, first.stderr
  longer = run_cli(pretrain_args(tmp_path, "--config.train.steps=8", "--config.model.remat=full",
                                 "--config.train.eval_every=4"))
  assert longer.returncode == 0, longer.stderr
  assert "resuming from step 4" in longer.stderr
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["steps"] == 8 and summary["resumed_from_step"] == 4
  # A new history in the same workdir: the earlier run is moved aside whole.
  again = run_cli(pretrain_args(tmp_path, "--config.train.steps=2", "--config.seed=3",
                                "--config.resume=False", "--config.overwrite=True"))
  assert again.returncode == 0, again.stderr
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == 3


@pytest.mark.slow  # trains two or three runs
def test_a_fine_tune_resumes_against_the_config_it_was_given(pretrained, tmp_path, capsys):
  """An SFT run from a checkpoint records the loaded model in its config.json (for `generate`
  to read it back); a resume is compared with the config it was given, and its starting point
  is part of its history."""
  rows = [{"prompt": f"{i} + 1 =", "completion": f" {i + 1}"} for i in range(24)]
  data = tmp_path / "rows.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in rows))
  args = ["--config", "configs/sft.py", "--workdir", str(tmp_path / "sft"),
          f"--config.init={pretrained}", f"--config.data.train={data}",
          f"--config.data.eval={data}", "--config.train.batch_size=4",
          "--config.train.seq_len=16", "--config.train.eval_batches=1",
          "--config.train.checkpoint_every=2", "--config.train.progress=False"]
  assert main.main([*args, "--config.train.steps=2"]) == 0
  recorded = json.loads((tmp_path / "sft" / "config.json").read_text())
  assert recorded["model"]["d_model"] == 32 and recorded["as_given"]["model"]["d_model"] == 64
  assert main.main([*args, "--config.train.steps=4"]) == 0
  assert "resuming from step 2" in capsys.readouterr().err
  assert main.main([*args, "--config.train.steps=6", f"--config.init={tmp_path}"]) == 2
  assert f"(init = {json.dumps(str(pretrained))} there, {json.dumps(str(tmp_path))} now)" in (
      error_line(capsys))


def test_a_grokking_task_change_is_refused_before_training(tmp_path, capsys):
  """The earlier run's config.json is written as the command line would; the resume with
  another operation is refused before anything compiles."""
  config, _, _ = main.parse_args(["--config", "configs/grokking.py", "--workdir", "x"])
  runio.write_json(tmp_path / "config.json", config.to_dict())
  before = record(tmp_path)
  op = config.task.op
  assert main.main(["--config", "configs/grokking.py", "--workdir", str(tmp_path),
                    "--config.task.op=x*y"]) == 2
  assert error_line(capsys) == (
      f"error: workdir {tmp_path} holds a run with other settings (task.op = {json.dumps(op)} "
      'there, "x*y" now); a resume would mix two histories: use a new --workdir')
  assert record(tmp_path) == before


def test_a_damaged_config_json_is_one_line(tmp_path, capsys):
  (tmp_path / "config.json").mkdir()
  assert main.main(pretrain_args(tmp_path, "--config.train.steps=1")) == 2
  assert error_line(capsys) == (
      f"error: {tmp_path}/config.json: is a directory; expected the run's config file (move it "
      "away or use another --workdir)")
  (tmp_path / "config.json").rmdir()
  (tmp_path / "config.json").write_text('{"experiment": "lm_pre')
  assert main.main(pretrain_args(tmp_path, "--config.train.steps=1")) == 2
  assert error_line(capsys).startswith(f"error: {tmp_path}/config.json:1: not valid JSON (")
  assert (tmp_path / "config.json").read_text() == '{"experiment": "lm_pre'


def test_a_traceback_before_training_rolls_config_json_back(pretrained, monkeypatch):
  """A bug (not a UserError) in a resume, before its first step: config.json still describes
  the checkpoints it sits beside; the traceback reaches the user unchanged."""
  from llmjax.experiments import lm_pretrain
  before = record(pretrained)

  def broken(*args, **kwargs):
    raise RuntimeError("a bug while building the corpus")
  monkeypatch.setattr(lm_pretrain, "make_corpus", broken)
  with pytest.raises(RuntimeError, match="a bug while building the corpus"):
    main.main(pretrain_args(pretrained, "--config.train.steps=8"))
  assert record(pretrained) == before


def test_a_traceback_after_training_began_is_recorded_as_failed(tmp_path, monkeypatch):
  from llmjax.experiments import lm_pretrain

  def broken(*args, **kwargs):
    raise RuntimeError("a bug in the plot")
  monkeypatch.setattr(lm_pretrain.plotting, "plot_curves", broken)
  with pytest.raises(RuntimeError, match="a bug in the plot"):
    main.main(pretrain_args(tmp_path, "--config.train.steps=2"))
  assert json.loads((tmp_path / "summary.json").read_text()) == {
      "status": "failed", "error": "RuntimeError: a bug in the plot"}
  assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 2


@pytest.mark.slow  # trains two or three runs
def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
  assert run_cli(pretrain_args(tmp_path, "--config.train.steps=4")).returncode == 0
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text(metrics.read_text() + '{"step": 5, "split": "tra')
  result = run_cli(pretrain_args(tmp_path, "--config.train.steps=6"))
  assert result.returncode == 0, result.stderr
  rows = read_jsonl(metrics)
  assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4, 6]
  # A damaged line before the last is not guessed at.
  lines = metrics.read_text().splitlines()
  metrics.write_text("\n".join([lines[0], "{broken", *lines[1:]]) + "\n")
  result = run_cli(pretrain_args(tmp_path, "--config.train.steps=8"))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {metrics}:2: not a JSON line; the metrics history is damaged (move the file "
      "away to start its history again)")


def test_the_runs_stop_after_steps_is_checked_before_any_stage(tmp_path, capsys):
  assert main.main(["--config", "configs/dpo.py:tiny", "--workdir", str(tmp_path),
                    "--config.train.stop_after_steps=0"]) == 2
  assert error_line(capsys) == "error: train.stop_after_steps = 0: expected a positive integer"
  assert [p.name for p in tmp_path.iterdir()] == [".lock"]


# ---- settings checked before any work ---------------------------------------------------------

@pytest.mark.parametrize("config, overrides, message", [
    ("configs/cot_encyclopedia.py", ["clustering.method=kmeans"],
     "clustering.method = 'kmeans': expected one of ('average_silhouette', 'ward_threshold')"),
    ("configs/music_judge.py", ["judge.backend=opeani"],
     "judge.backend = 'opeani': expected one of ('local', 'openai', 'none')"),
    ("configs/music_judge.py", ["judge.backend=openai", "judge.base_url=127.0.0.1:8000/v1"],
     "judge.base_url = '127.0.0.1:8000/v1': expected an http(s) URL of an OpenAI-compatible "
     "API, e.g. http://127.0.0.1:8000/v1"),
    ("configs/biggen.py", ["judge.backend=openai", "judge.base_url=http://h/v1",
                           "judge.concurrency=0"],
     "judge.concurrency = 0: expected a positive integer"),
    ("configs/sentence_lm.py:tiny", ["lens_problem=300"],
     "lens_problem = 300: the test split has 300 problems (-1: no lens)"),
    ("configs/generate.py", ["batch_size=0"], "batch_size = 0: expected a positive integer"),
    ("configs/generate.py", ["length_bucket=0"],
     "length_bucket = 0: expected a positive integer"),
    ("configs/score.py", ["seed=-1"], "seed = -1: expected an integer >= 0"),
    ("configs/generate.py", ["sampling.seed=-1"], "sampling.seed = -1: expected an integer >= 0"),
])
def test_a_bad_setting_is_refused_before_any_work(tmp_path, capsys, config, overrides,
                                                  message):
  workdir = tmp_path / "w"
  assert main.main(["--config", config, "--workdir", str(workdir),
                    *(f"--config.{o}" for o in overrides)]) == 2
  assert error_line(capsys) == f"error: {message}"
  assert [p.name for p in workdir.iterdir()] in ([], [".lock"])  # nothing ran, nothing kept


def test_a_get_config_that_returns_no_config_and_a_lock_that_is_a_directory(tmp_path, capsys):
  for body, got in (("return None", "NoneType"), ("return {'experiment': 'lm_pretrain'}",
                                                  "dict")):
    path = tmp_path / "mine.py"
    path.write_text(f"def get_config():\n  {body}\n")
    assert main.main(["--config", str(path), "--workdir", str(tmp_path / "w")]) == 2
    assert error_line(capsys) == (f"error: config file {path}: get_config() returned {got}; "
                                  "expected an ml_collections.ConfigDict")
  workdir = tmp_path / "locked"
  (workdir / ".lock").mkdir(parents=True)
  assert main.main(pretrain_args(workdir, "--config.train.steps=1")) == 2
  assert error_line(capsys) == (f"error: {workdir}/.lock: is a directory; the run's lock is a "
                                "file there (remove the directory)")


def test_a_tokenizer_larger_than_the_model_is_refused(pretrained, tmp_path, capsys):
  from llmjax.data.tokenizers import main as tokenizer_cli
  from llmjax.tasks.corpus import procedural_documents
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(procedural_documents(200, seed=0)))
  assert tokenizer_cli(["train", "--input", str(corpus), "--model_prefix",
                        str(tmp_path / "spm"), "--vocab_size", "300"]) == 0
  capsys.readouterr()
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text('{"prompt": "abc"}\n')
  spm = f"spm:{tmp_path / 'spm.model'}"
  assert main.main(["--config", "configs/generate.py", "--workdir", str(tmp_path / "g"),
                    f"--config.checkpoint={pretrained}", f"--config.prompts={prompts}",
                    f"--config.tokenizer={spm}"]) == 2
  assert error_line(capsys) == (
      f"error: tokenizer {spm} has 300 ids, more than the vocab_size 264 of {pretrained}: use "
      "the model's own tokenizer or one that fits")
  assert not (tmp_path / "g" / "generations.jsonl").exists()


@pytest.mark.slow  # trains two or three runs
def test_the_newest_checkpoint_is_read_when_a_live_run_deletes_the_latest(tmp_path,
                                                                        monkeypatch):
  """`generate` from a run that is still training (keep_checkpoints=1): the step it chose is
  deleted while it reads; it reads the newest instead of failing."""
  import shutil

  from llmjax.parallel import Parallel
  from llmjax.weights import load_model
  from llmjax.weights.checkpoint import Checkpointer
  assert run_cli(pretrain_args(tmp_path, "--config.train.steps=8",
                               "--config.train.keep_checkpoints=5")).returncode == 0
  real = Checkpointer.restore_params
  calls = []

  def deleted_while_reading(self, step, *args, **kwargs):
    calls.append(step)
    if len(calls) == 1:  # the live run replaced step 8 (here: it is gone, 4 is the newest)
      shutil.rmtree(tmp_path / "checkpoints" / str(step))
      raise FileNotFoundError(f"checkpoints/{step}/state")
    return real(self, step, *args, **kwargs)
  monkeypatch.setattr(Checkpointer, "restore_params", deleted_while_reading)
  loaded = load_model(str(tmp_path), Parallel.from_config({"data": -1}))
  assert calls == [8, 4] and loaded.source.endswith("step 4")


# ---- data ----------------------------------------------------------------------------------

def _corpus(path, eval_path, **data):
  import ml_collections

  from configs.pretrain import get_config
  from llmjax.data.corpora import make_corpus
  config = get_config("tiny").data
  config.update(corpus="jsonl", path=str(path), eval_path=str(eval_path), **data)
  return make_corpus(ml_collections.ConfigDict(config.to_dict()))


def _texts(split) -> list[str]:
  return sorted(split[i]["text"].decode() for i in range(len(split)))


def test_the_corpus_cache_is_keyed_by_content_not_by_path_spelling_or_mtime(tmp_path):
  import os
  a, b, held_out = tmp_path / "my-docs.jsonl", tmp_path / "my_docs.jsonl", tmp_path / "e.jsonl"
  held_out.write_text('{"text": "held out"}\n')
  a.write_text('{"text": "alpha one"}\n')
  b.write_text('{"text": "bravo two"}\n')
  stat = os.stat(a)
  os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
  assert _texts(_corpus(a, held_out)["train"]) == ["alpha one"]
  assert _texts(_corpus(b, held_out)["train"]) == ["bravo two"]
  # Edited in place, keeping size and mtime: rebuilt.
  a.write_text('{"text": "alpha two"}\n')
  os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert _texts(_corpus(a, held_out)["train"]) == ["alpha two"]
  # The field read is part of what the corpus is.
  a.write_text('{"text": "alpha two", "other": "other field"}\n')
  held_out.write_text('{"text": "held out", "other": "held out"}\n')
  assert _texts(_corpus(a, held_out, text_field="other")["train"]) == ["other field"]


@pytest.mark.parametrize("row, message", [
    ('{"text": ""}', "field 'text' is empty; expected the document's text"),
    ('{"text": "  "}', "field 'text' is empty; expected the document's text"),
    ('{"text": null}', "field 'text' is null; expected a string"),
    ('{"text": ["a"]}', "field 'text' is [\"a\"]; expected a string"),
])
def test_empty_and_null_documents_name_their_file_and_line(tmp_path, row, message):
  from llmjax.errors import DataError
  path, held_out = tmp_path / "docs.jsonl", tmp_path / "e.jsonl"
  held_out.write_text('{"text": "held out"}\n')
  path.write_text('{"text": "fine"}\n' + row + "\n")
  with pytest.raises(DataError) as raised:
    _corpus(path, held_out)
  assert str(raised.value) == f"{path}:2: {message}"


def test_two_first_builds_of_one_corpus_take_turns(tmp_path):
  """Two builders of the same new corpus at once (two first runs; here two threads, whose
  separate opens of the lock file exclude each other as two processes' do): both get it."""
  from concurrent.futures import ThreadPoolExecutor
  path, held_out = tmp_path / "docs.jsonl", tmp_path / "e.jsonl"
  path.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n"
                          for i in range(2000)))
  held_out.write_text('{"text": "held out"}\n')
  with ThreadPoolExecutor(2) as pool:
    built = list(pool.map(lambda _: _corpus(path, held_out, cache_dir=str(tmp_path / "cache")),
                          range(2)))
  assert [len(corpus["train"]) for corpus in built] == [2000, 2000]


def test_identical_pairs_are_dropped_and_counted(tmp_path):
  from llmjax.data.examples import read_examples
  from llmjax.data.tokenizers import ByteTokenizer
  from llmjax.errors import DataError
  path = tmp_path / "pairs.jsonl"
  rows = [{"prompt": "p", "chosen": "good", "rejected": "bad"},
          {"prompt": "p", "chosen": "same", "rejected": "same"},
          {"prompt": "p", "chosen": "long answer A", "rejected": "long answer B"}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  pairs = read_examples(str(path), ByteTokenizer(), 64, ("chosen", "rejected"))
  assert (len(pairs), pairs.identical) == (2, 1)
  # Cut to 8 tokens, the third pair's sides become the same ("long an").
  pairs = read_examples(str(path), ByteTokenizer(), 8, ("chosen", "rejected"))
  assert (len(pairs), pairs.identical) == (1, 2)
  path.write_text(json.dumps(rows[1]) + "\n")
  with pytest.raises(DataError) as raised:
    read_examples(str(path), ByteTokenizer(), 64, ("chosen", "rejected"))
  assert str(raised.value) == (f"{path}: all 1 pairs have the same chosen and rejected tokens "
                               "(as written or once cut to 64 tokens): nothing to prefer")


# ---- the other command lines ---------------------------------------------------------------

def test_serve_refuses_a_port_it_cannot_listen_on(tmp_path, capsys):
  import socket

  from llmjax.serve import main as serve
  missing = str(tmp_path / "nothing")
  with socket.create_server(("127.0.0.1", 0)) as taken:
    port = taken.getsockname()[1]
    for args, message in (
        (["--port", "99999"], "error: --port 99999: expected a TCP port, 1 to 65535"),
        (["--batch-size", "0"], "error: --batch-size 0: expected a positive integer"),
        (["--length-bucket", "0"], "error: --length-bucket 0: expected a positive integer"),
        (["--port", str(port)], f"error: --host 127.0.0.1 --port {port}: cannot listen there "
                                "(Address already in use)")):
      assert serve(["--checkpoint", missing, *args]) == 2
      assert error_line(capsys) == message


def test_music_compare_refuses_a_figure_it_cannot_write(tmp_path, capsys):
  from llmjax.experiments.music_judge.compare import main as compare
  blocker = tmp_path / "file"
  blocker.write_text("")
  for figure, message in (
      ("roll.xyz", "--figure roll.xyz: expected a file ending in one of .png, .pdf, .svg, .jpg, "
                   ".jpeg, .webp, .eps, .tif, .tiff ('' for no figure)"),
      (f"{blocker}/roll.png", f"--figure {blocker}/roll.png: lies under {blocker}, which is a "
                              "file")):
    assert compare(["a.mid", "b.mid", "--figure", figure]) == 2
    assert error_line(capsys) == f"error: {message}"
