"""TFDS builders for locally produced text, written as array_record and read without TensorFlow.

A corpus is built once into `cache_dir/local_corpus/<name>/` on first use and reused after;
`name` must change whenever the content would (callers put their seed, size or the source
file's size and mtime in it). Building writes into a temporary folder that TFDS renames when
complete, so an interrupted or failed build (e.g. a malformed source row) leaves no corpus behind.
Rows are `{'prompt': str, 'text': str}`; pretraining documents have an empty prompt.
"""

import contextlib
import dataclasses
import logging
import os
from typing import Callable, Iterable, Mapping

import tensorflow_datasets as tfds

SplitFn = Callable[[], Iterable[tuple[str, str]]]  # yields (prompt, text) rows


@dataclasses.dataclass(eq=False)
class LocalCorpusConfig(tfds.core.BuilderConfig):
  splits: Mapping[str, SplitFn] = dataclasses.field(default_factory=dict)


class LocalCorpus(tfds.core.GeneratorBasedBuilder):
  """A text corpus whose rows come from Python callables (procedural data, local files)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = []  # configs are made per corpus at run time

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"prompt": tfds.features.Text(),
                                             "text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    return {split: self._generate_examples(split) for split in self.builder_config.splits}

  def _generate_examples(self, split):
    for index, (prompt, text) in enumerate(self.builder_config.splits[split]()):
      yield index, {"prompt": prompt, "text": text}


def build_corpus(name: str, splits: Mapping[str, SplitFn], cache_dir: os.PathLike):
  """Builds (or reuses) the corpus and returns {split: random-access data source}.

  Each source supports `len()` and integer indexing, giving dicts of bytes.
  """
  tfds.disable_progress_bar()
  config = LocalCorpusConfig(name=name, version=LocalCorpus.VERSION, splits=dict(splits))
  with _quiet_tfds():
    builder = LocalCorpus(config=config, data_dir=os.fspath(cache_dir),
                          file_format="array_record")
    builder.download_and_prepare()
    return {split: builder.as_data_source(split=split) for split in splits}


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
