"""TFDS builders for locally produced text, written as array_record and read without TensorFlow.

A corpus is built once into `cache_dir/local_corpus/<name>/` on first use and reused after;
`name` must change whenever the content would (callers put their seed and size, or a hash of
the source files, in it). Building writes into a temporary folder that TFDS renames when
complete, so an interrupted or failed build (e.g. a malformed source row) leaves no corpus
behind; processes building one corpus at once (two first runs, a multi-process run on one host)
take turns under a file lock, and the later ones find it built.
Rows are `{'prompt': str, 'text': str, 'where': str}`; pretraining documents have an empty
prompt, and `where` says where a row came from ('train.jsonl:17'), for error messages.

Building also records the longest documents of each split (`longest.json` beside the data:
their UTF-8 size and origin), so that a pipeline can check, before training, that every
document fits its packing limit without reading the corpus again.
"""

import contextlib
import dataclasses
import fcntl
import heapq
import json
import logging
import os
from typing import Callable, Iterable, Mapping, Sequence

import tensorflow_datasets as tfds

from llmjax import runio

SplitFn = Callable[[], Iterable[tuple[str, str, str]]]  # yields (prompt, text, where) rows
LONGEST_KEPT = 64  # documents per split whose size is recorded at build time


@dataclasses.dataclass(eq=False)
class LocalCorpusConfig(tfds.core.BuilderConfig):
  splits: Mapping[str, SplitFn] = dataclasses.field(default_factory=dict)


class LocalCorpus(tfds.core.GeneratorBasedBuilder):
  """A text corpus whose rows come from Python callables (procedural data, local files)."""

  VERSION = tfds.core.Version("1.1.0")  # 1.1.0: the 'where' feature
  BUILDER_CONFIGS = []  # configs are made per corpus at run time

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.longest: dict[str, list] = {}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"prompt": tfds.features.Text(),
                                             "text": tfds.features.Text(),
                                             "where": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    return {split: self._generate_examples(split) for split in self.builder_config.splits}

  def _generate_examples(self, split):
    longest = []  # a min-heap of (UTF-8 bytes, generation index, where)
    for index, (prompt, text, where) in enumerate(self.builder_config.splits[split]()):
      entry = (len(prompt.encode("utf-8")) + len(text.encode("utf-8")), index, where)
      (heapq.heappush if len(longest) < LONGEST_KEPT else heapq.heappushpop)(longest, entry)
      yield index, {"prompt": prompt, "text": text, "where": where}
    self.longest[split] = [(size, where) for size, _, where in sorted(longest, reverse=True)]


class CorpusSplit:
  """A random-access split (len() and integer indexing give dicts of bytes, in TFDS's stored
  order, not the order of generation) with its longest documents: `longest` lists (UTF-8
  bytes, where), largest first (None: not known)."""

  def __init__(self, source, longest: Sequence[tuple[int, str]] | None):
    self.source = source
    self.longest = None if longest is None else [tuple(entry) for entry in longest]

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index):
    return self.source[index]


def build_corpus(name: str, splits: Mapping[str, SplitFn], cache_dir: os.PathLike):
  """Builds (or reuses) the corpus and returns {split: CorpusSplit}."""
  tfds.disable_progress_bar()
  config = LocalCorpusConfig(name=name, version=LocalCorpus.VERSION, splits=dict(splits))
  with _quiet_tfds():
    with _build_lock(cache_dir, name):  # made inside: it then reads what another process built
      builder = LocalCorpus(config=config, data_dir=os.fspath(cache_dir),
                            file_format="array_record")
      builder.download_and_prepare()
    longest_path = os.path.join(builder.data_dir, "longest.json")
    if builder.longest and runio.is_writer():  # built just now
      runio.atomic_write_text(longest_path, json.dumps(builder.longest))
    longest = builder.longest
    if not longest and os.path.isfile(longest_path):
      with open(longest_path) as f:
        longest = json.load(f)
    return {split: CorpusSplit(builder.as_data_source(split=split), longest.get(split))
            for split in splits}


@contextlib.contextmanager
def _build_lock(cache_dir: os.PathLike, name: str):
  """An exclusive lock on building corpus `name` in `cache_dir` (held while preparing)."""
  os.makedirs(cache_dir, exist_ok=True)
  with open(os.path.join(cache_dir, f".{name}.build-lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_tfds():
  """TFDS logs every run-time builder config as a warning; that is our normal use, not news."""
  absl_logger = logging.getLogger("absl")
  quiet = lambda record: "custom data configuration" not in record.getMessage()  # noqa: E731
  absl_logger.addFilter(quiet)
  try:
    yield
  finally:
    absl_logger.removeFilter(quiet)
