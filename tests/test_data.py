import json
import re

import grain
import numpy as np
import pytest

from conftest import SHARED_DATA
from llmjax.data import readers
from llmjax.data.builders import build_corpus
from llmjax.data.pipeline import lm_batches, take
from llmjax.data.tokenizers import ByteTokenizer, load_tokenizer, main as tokenizer_cli
from llmjax.errors import DataError, UserError
from llmjax.tasks.corpus import procedural_documents


def rows(texts, prompts=None):
  prompts = prompts or [""] * len(texts)
  return [{"prompt": p.encode(), "text": t.encode()} for p, t in zip(prompts, texts)]


def test_byte_tokenizer_round_trip_and_padding_sides():
  tok = ByteTokenizer()
  text = "héllo, wörld"
  assert tok.decode(tok.encode(text, add_bos=True, add_eos=True)) == text
  ids, mask = tok.batch_encode(["ab", "abcd"], padding_side="left", add_bos=True)
  assert ids.tolist() == [[0, 0, 1, 100, 101], [1, 100, 101, 102, 103]]
  assert mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
  ids, mask = tok.batch_encode(["ab", "abcd"], padding_side="right")
  assert ids.tolist() == [[100, 101, 0, 0], [100, 101, 102, 103]]


def test_sentencepiece_trained_from_the_cli_loads_and_round_trips(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(procedural_documents(300, seed=0)))
  assert tokenizer_cli(["train", "--input", str(corpus), "--model_prefix",
                        str(tmp_path / "spm"), "--vocab_size", "512"]) == 0
  tok = load_tokenizer(f"spm:{tmp_path / 'spm.model'}")
  assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id) == (512, 0, 1, 2)
  text = "the red fox sees 12 plus 30 is 42."
  ids = tok.encode(text)
  assert len(ids) < len(text.encode()) / 2  # it learned merges
  assert tok.decode(ids) == text
  assert tokenizer_cli(["train", "--input", str(tmp_path / "missing.txt"), "--model_prefix",
                        str(tmp_path / "x")]) == 2


def test_jsonl_reader_names_file_and_line(tmp_path):
  path = tmp_path / "data.jsonl"
  path.write_text('{"text": "a"}\n\n{"text": "b"}\n{"text": \n{"other": 1}\n')
  with pytest.raises(DataError, match=rf"{path}:4: malformed row"):
    list(readers.read_jsonl(path, required=("text",)))
  path.write_text('{"text": "a"}\n{"other": 1}\n')
  with pytest.raises(DataError, match=rf"{path}:2: malformed row: missing field 'text'"):
    list(readers.read_jsonl(path, required=("text",)))
  stats = readers.ReadStats()
  assert [r["text"] for r in readers.read_jsonl(path, ("text",), skip_bad=True, stats=stats)
          ] == ["a"]
  assert (stats.rows, stats.skipped) == (1, 1) and ":2:" in stats.first_skipped
  with pytest.raises(UserError, match="file not found"):
    list(readers.read_jsonl(tmp_path / "nope.jsonl"))


def test_text_reader_units(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text("one\ntwo\n\nthree\n")
  assert list(readers.read_text(path, "paragraph")) == ["one\ntwo", "three"]
  assert list(readers.read_text(path, "line")) == ["one", "two", "three"]
  path.write_bytes(b"ok\n\xff\n")
  with pytest.raises(DataError, match=r"t.txt:2: not valid UTF-8"):
    list(readers.read_text(path))


def test_packing_keeps_every_token_and_masks_across_documents():
  texts = ["a" * 5, "b" * 30, "c" * 3, "d" * 12]
  ds = lm_batches(rows(texts), ByteTokenizer(), seq_len=15, global_batch=1, seed=0,
                  train=False)
  batches = take(ds, 100)
  rows_ = [np.concatenate([b["inputs"][0], b["targets"][0, -1:]]) for b in batches]
  tokens = np.concatenate([row[row != ByteTokenizer.pad_id] for row in rows_])
  # Every token of every document (with bos/eos) arrives; "b" * 30 was split, not truncated.
  assert sorted(tokens.tolist()) == sorted(sum(
      (ByteTokenizer().encode(t, add_bos=True, add_eos=True) for t in texts), []))
  for b in batches:
    seg, mask, pos = b["segment_ids"][0], b["loss_mask"][0], b["positions"][0]
    boundary = np.concatenate([seg[1:] != seg[:-1], [False]])
    assert not mask[boundary].any()  # never predict the next document's first token
    assert not mask[seg == 0].any()
    starts = np.flatnonzero(np.concatenate([[True], seg[1:] != seg[:-1]]) & (seg > 0))
    assert (pos[starts] == 0).all()


def test_prompt_masking():
  ds = lm_batches(rows(["answer"], ["question"]), ByteTokenizer(), seq_len=32,
                  global_batch=1, seed=0, train=False, mask_prompt=True)
  batch = take(ds, 1)[0]
  predicted = batch["targets"][0][batch["loss_mask"][0] == 1]
  assert ByteTokenizer().decode(predicted) == "answer"  # eos decodes to nothing


def test_iterator_state_resumes_exactly():
  source = rows(list(procedural_documents(200, seed=1)))
  ds = lm_batches(source, ByteTokenizer(), seq_len=32, global_batch=4, seed=3)
  it = iter(ds)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  resumed = iter(ds)
  resumed.set_state(json.loads(json.dumps(state)))
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_each_process_reads_only_its_own_rows():
  source = rows([f"<{i:04d}>" for i in range(64)])

  def documents_seen(index):
    shard = grain.sharding.ShardOptions(shard_index=index, shard_count=2)
    ds = lm_batches(source, ByteTokenizer(), 32, 4, seed=3, train=False, shard_options=shard)
    text = "".join(ByteTokenizer().decode(b["inputs"].ravel()) for b in take(ds, 1000))
    return {int(m) for m in re.findall(r"<(\d{4})>", text)}

  seen_0, seen_1 = documents_seen(0), documents_seen(1)
  assert seen_0 and seen_1
  assert all(i % 2 == 0 for i in seen_0) and all(i % 2 == 1 for i in seen_1)


def test_corpus_is_built_once_and_reused(tmp_path):
  calls = []

  def split():
    calls.append(1)
    return iter([("", "alpha", "a.txt:1"), ("Q", "beta", "a.txt:3")])

  for _ in range(2):
    sources = build_corpus("reuse_test", {"train": split}, tmp_path)
  assert len(calls) == 1
  train = sources["train"]
  assert sorted((train[i]["text"], train[i]["where"]) for i in range(len(train))) == [
      (b"alpha", b"a.txt:1"), (b"beta", b"a.txt:3")]
  # The longest documents, recorded at build time, come back with the cached corpus too.
  assert train.longest == [(5, "a.txt:3"), (5, "a.txt:1")]


def test_malformed_source_row_fails_the_build_and_leaves_no_corpus(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "fine"}\n{"text": oops}\n')

  def split():
    return (("", r["text"], "") for r in readers.read_jsonl(bad, required=("text",)))

  with pytest.raises(DataError, match="bad.jsonl:2"):
    build_corpus("bad_rows", {"train": split}, tmp_path / "cache")
  assert not list((tmp_path / "cache").glob("local_corpus/bad_rows/*/*.array_record*"))


@pytest.mark.skipif(not (SHARED_DATA / "gsm8k" / "train.jsonl").exists(),
                    reason="../shared/data/gsm8k is not present")
def test_gsm8k_corpus_reads_questions_and_answers(tmp_path):
  import ml_collections
  from llmjax.data.corpora import make_corpus
  config = ml_collections.ConfigDict({"corpus": "gsm8k", "path": str(SHARED_DATA / "gsm8k"),
                                      "cache_dir": str(tmp_path)})
  corpus = make_corpus(config)
  assert (len(corpus["train"]), len(corpus["validation"])) == (7473, 1319)
  row = corpus["validation"][0]
  assert row["prompt"] and b"####" in row["text"]


def test_global_batch_is_the_same_for_any_number_of_processes():
  source = rows(list(procedural_documents(300, seed=2)))

  def batches(index, count):
    shard = grain.sharding.ShardOptions(shard_index=index, shard_count=count)
    return take(lm_batches(source, ByteTokenizer(), 32, 8, seed=5, num_shards=4,
                           shard_options=shard), 3)

  single = batches(0, 1)
  halves = [batches(0, 2), batches(1, 2)]
  for step in range(3):
    assert single[step]["inputs"].shape == (8, 32) and halves[0][step]["inputs"].shape == (4, 32)
    for key in single[step]:
      np.testing.assert_array_equal(
          single[step][key], np.concatenate([halves[0][step][key], halves[1][step][key]]))
  with pytest.raises(UserError, match="data.num_shards = 3: expected a multiple of the 2"):
    lm_batches(source, ByteTokenizer(), 32, 6, seed=0, num_shards=3,
               shard_options=grain.sharding.ShardOptions(shard_index=0, shard_count=2))
