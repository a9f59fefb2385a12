"""grain pipelines that turn a corpus into packed language-model batches.

  source rows {'prompt', 'text'}
    -> G data shards; this process runs its own    every process reads only its own rows
       (ShardByJaxProcess picks them)
    -> per shard: shuffle(seed), repeat            reshuffled every epoch
       tokenize: bos + prompt + text + eos         prompt tokens get loss weight 0 if asked
       split into chunks of at most L + 1 tokens   long documents are split, never truncated
       first-fit packing into rows of L + 1        several documents per row, with segment ids
       batch(B / G)
    -> the process's shards side by side, shifted into model inputs/targets

The global batch is the G shard batches in shard order, whatever the number of processes P
(G must be a multiple of P): a run on 1 process and one on G processes see the same batches, so
their losses agree. G defaults to the number of processes.

The iterator is a grain DatasetIterator: its position is saved in every checkpoint, so a
resumed run sees exactly the batches the interrupted one would have.
"""

from typing import Any, Callable, Sequence

import grain
import numpy as np

from llmjax.data.batches import packed_lm_batch
from llmjax.data.tokenizers import Tokenizer
from llmjax.errors import DataError, UserError

# How grain reads ahead. Its defaults (16 threads, 500 elements) suit slow remote storage; our
# sources are in memory or on local disk, where 16 threads fight the training loop for the GIL
# and each element costs a scan of the 500-element buffer (grain measures its depth on every
# `next`). One thread keeps tokenization off the loop's path. Measured on a 2-core CPU host
# (the dpo tiny preset's SFT, one example per element): 4,100 -> 12,100-13,500 tokens/s;
# configs/pretrain.py:tiny 29,000 -> 34,500 tokens/s, with the same batches.
EXAMPLE_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=128)
# Elements that are whole batches: a few ahead are plenty (500 would hold 500 batches).
BATCH_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class _Tokenize(grain.transforms.Map):
  def __init__(self, tokenizer: Tokenizer, mask_prompt: bool):
    self._tokenizer, self._mask_prompt = tokenizer, mask_prompt

  def map(self, row):
    prompt = self._tokenizer.encode(_text(row["prompt"]), add_bos=True) if row["prompt"] else [
        self._tokenizer.bos_id]
    text = self._tokenizer.encode(_text(row["text"]), add_eos=True)
    tokens = np.asarray(prompt + text, np.int32)
    weights = np.ones_like(tokens)
    if self._mask_prompt:
      weights[:len(prompt)] = 0
    return {"tokens": tokens, "loss_mask": weights, "where": _text(row.get("where", b""))}


class _Tokenized(grain.transforms.Map):
  """Rows that are already {'tokens', 'loss_mask'} (and optionally 'where')."""

  def map(self, row):
    return {"tokens": np.asarray(row["tokens"], np.int32),
            "loss_mask": np.asarray(row["loss_mask"], np.int32), "where": row.get("where", "")}


# Tokens a document may have beyond its UTF-8 bytes: BOS and EOS, and a piece a tokenizer adds
# on its own (sentencepiece's leading '▁'). Every tokenizer here spends at least a byte a token.
_TOKENS_BEYOND_BYTES = 8


def _row_tokens(tokenizer: Tokenizer, row) -> int:
  prompt = len(tokenizer.encode(_text(row["prompt"]), add_bos=True)) if row["prompt"] else 1
  return prompt + len(tokenizer.encode(_text(row["text"]), add_eos=True))


def check_document_lengths(source: Sequence[dict], tokenizer: Tokenizer, chunk_len: int,
                           max_chunks: int) -> None:
  """Every document fits in `max_chunks` chunks of `chunk_len` tokens, or a DataError names
  the first that does not (file and line when the corpus records them), before training.

  A corpus that recorded its longest document at build time (`CorpusSplit.longest`) settles
  the usual case without reading a row: a document cannot have more tokens than UTF-8 bytes
  (plus a few). Otherwise the rows long enough in bytes are tokenized.
  """
  limit = chunk_len * max_chunks
  longest = getattr(source, "longest", None)
  if longest is not None and (not longest or longest[0][0] + _TOKENS_BEYOND_BYTES <= limit):
    return
  for index in range(len(source)):
    row = source[index]
    size = len(_text(row["prompt"]).encode("utf-8")) + len(_text(row["text"]).encode("utf-8"))
    if size + _TOKENS_BEYOND_BYTES <= limit:
      continue
    tokens = _row_tokens(tokenizer, row)
    if tokens > limit:
      where = _text(row["where"]) if row.get("where") else f"row {index + 1}"
      raise DataError(f"{where}: a document of {tokens} tokens needs more than "
                      f"data.max_chunks_per_document={max_chunks} chunks of {chunk_len}; "
                      "raise that limit")


class _Chunk(grain.experimental.FlatMapTransform):
  """Splits a tokenized document into pieces of at most `size` tokens, in order."""

  def __init__(self, size: int, max_fan_out: int):
    self.size, self.max_fan_out = size, max_fan_out

  def flat_map(self, doc):
    # The length check before training (check_document_lengths) bounds tokens by bytes; a
    # tokenizer whose normalisation expands text past that bound is caught here.
    n = len(doc["tokens"])
    if n > self.size * self.max_fan_out:
      where = f"{doc['where']}: " if doc.get("where") else ""
      raise DataError(f"{where}a document of {n} tokens needs more than "
                      f"data.max_chunks_per_document={self.max_fan_out} chunks of {self.size}; "
                      "raise that limit")
    return [{k: doc[k][i:i + self.size] for k in ("tokens", "loss_mask")}
            for i in range(0, n, self.size)]


def lm_batches(source: Sequence[dict], tokenizer: Tokenizer | None, seq_len: int,
               global_batch: int, seed: int, train: bool = True, mask_prompt: bool = False,
               max_chunks_per_document: int = 256, packing_bins: int | None = None,
               num_shards: int | None = None,
               shard_options: grain.sharding.ShardOptions | None = None) -> grain.IterDataset:
  """Packed LM batches from a random-access source of {'prompt', 'text'} rows, or of
  tokenized {'tokens', 'loss_mask'} rows when `tokenizer` is None (e.g. SFT examples, whose
  loss mask already says which tokens are targets).

  Args:
    source: e.g. a TFDS data source from `build_corpus`.
    seq_len: L, the model's context; rows hold L + 1 tokens before shifting.
    global_batch: B over all processes; each process yields B / P rows.
    train: shuffle and repeat forever; otherwise one ordered pass (for evaluation).
    num_shards: G data shards (default: the number of processes P); a multiple of P.
    shard_options: which process this is (default: ShardByJaxProcess).
  Returns:
    A grain IterDataset of dicts of [B / P, L] int32 arrays.
  """
  process = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
  num_shards = num_shards or process.shard_count
  if num_shards % process.shard_count:
    raise UserError(f"data.num_shards = {num_shards}: expected a multiple of the "
                    f"{process.shard_count} processes")
  if global_batch % num_shards:
    raise UserError(f"batch size {global_batch} does not split over {num_shards} data shards")
  if len(source) < num_shards:
    raise UserError(f"the corpus has {len(source)} rows, fewer than {num_shards} data shards")
  if tokenizer is not None:
    check_document_lengths(source, tokenizer, seq_len + 1, max_chunks_per_document)
  per_process = num_shards // process.shard_count
  first = process.shard_index * per_process
  shards = [_shard_batches(source, shard, num_shards, tokenizer, seq_len,
                           global_batch // num_shards, seed, train, mask_prompt,
                           max_chunks_per_document, packing_bins)
            for shard in range(first, first + per_process)]
  zipped = grain.experimental.ZipIterDataset(shards)
  return zipped.map(lambda parts: packed_lm_batch(
      {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}))


def _shard_batches(source, shard, num_shards, tokenizer, seq_len, batch, seed, train,
                   mask_prompt, max_chunks_per_document, packing_bins) -> grain.IterDataset:
  """Packed [batch, L + 1] rows from every num_shards-th row of the source."""
  ds = grain.MapDataset.source(source)[shard::num_shards]
  if train:
    ds = ds.shuffle(seed=seed).repeat(None)
  tokenize = _Tokenize(tokenizer, mask_prompt) if tokenizer is not None else _Tokenized()
  ds = ds.map(tokenize).to_iter_dataset(read_options=EXAMPLE_READ_OPTIONS)
  ds = grain.experimental.FlatMapIterDataset(ds, _Chunk(seq_len + 1, max_chunks_per_document))
  ds = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct={"tokens": seq_len + 1, "loss_mask": seq_len + 1},
      num_packing_bins=packing_bins or max(2 * batch, 16), seed=seed, shuffle_bins=train)
  return ds.batch(batch, drop_remainder=True)


def take(dataset: grain.IterDataset, n: int) -> list[dict[str, np.ndarray]]:
  """The first n batches (fewer if the dataset ends first), e.g. a fixed evaluation set."""
  batches = []
  if n <= 0:
    return batches
  for batch in dataset:
    batches.append(batch)
    if len(batches) == n:
      break
  return batches


def row_batches(rows: np.ndarray, global_batch: int, seed: int,
                to_batch: Callable[[np.ndarray], dict[str, np.ndarray]],
                shard_options: grain.sharding.ShardOptions | None = None) -> grain.IterDataset:
  """Shuffled epochs of fixed-length rows (e.g. synthetic task examples), forever.

  The global batch is the same on any number of processes; each process gets its contiguous
  share of it. The iterator is checkpointable (resumes mid-epoch).

  Args:
    rows: [R, ...] examples.
    global_batch: B over all processes (a multiple of the process count).
    to_batch: [B / P, ...] rows -> the model batch dict.
  """
  process = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
  if global_batch % process.shard_count:
    raise UserError(f"batch size {global_batch} does not split over {process.shard_count} "
                    "processes")
  share = global_batch // process.shard_count
  first = process.shard_index * share
  ds = grain.MapDataset.source(rows).shuffle(seed=seed).repeat(None)
  ds = ds.batch(global_batch, drop_remainder=True)
  return ds.map(lambda batch: to_batch(np.asarray(batch)[first:first + share])).to_iter_dataset(
      read_options=BATCH_READ_OPTIONS)
