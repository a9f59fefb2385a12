"""What the generator and the scorer share: the mesh and fixed compiled shapes (a batch size
and length buckets), the loop that sorts requests by length, cuts them into batches and pads
each to its bucket, and one compile cache for every runner of the same model.

Runners hold no params: each call takes them, so a pipeline can generate or score with the
params it has just trained, without rebuilding or recompiling anything. Compiled programs are
cached by (what they compute, model config, mesh and rules, shapes): two runners of the same
model share them.
"""

import math
from typing import Any, Callable, Hashable, Iterator, Sequence

from llmjax.errors import UserError
from llmjax.models import Decoder, ModelConfig, decoder_params
from llmjax.parallel import Parallel
from llmjax.runio import progress_bar

# (kind, model config, parallel, shape key...) -> compiled callable; shared by all runners.
_COMPILED: dict[Hashable, Callable] = {}


class BatchedRunner:
  """Args:
    model_config: the decoder's config.
    parallel: the mesh the params live on (batch rows are split over data/fsdp, heads over
      tensor); default one over all devices.
    batch_size: rows per compiled batch (rounded up to a multiple of the batch axes' size).
    length_bucket: lengths are padded up to a multiple of this (one compile per bucket).
    pad_id: token id written into padding (never attended to).
  """

  def __init__(self, model_config: ModelConfig, parallel: Parallel | None = None,
               batch_size: int = 16, length_bucket: int = 64, pad_id: int = 0):
    if model_config.mask_mode != "causal":
      raise UserError(f"model.mask_mode = {model_config.mask_mode!r}: generation and scoring "
                      "read a causal decoder (a prefix-LM prompt can be decoded through "
                      "Decoder(decode=True) with prefix_mask_BxL)")
    self.config = model_config
    self.parallel = parallel or Parallel.from_config({"data": -1})
    multiple = self.parallel.batch_size_multiple
    self.batch_size = -(-batch_size // multiple) * multiple
    self.length_bucket = length_bucket
    self.pad_id = pad_id
    self.model = Decoder(model_config)

  def padded_length(self, length: int) -> int:
    return math.ceil(length / self.length_bucket) * self.length_bucket

  def compiled(self, kind: str, shape_key: Hashable, build: Callable[[], Callable]) -> Callable:
    """The program `build()` makes, cached across runners of this model config and mesh."""
    key = (kind, self.config, self.parallel, shape_key)
    if key not in _COMPILED:
      _COMPILED[key] = build()
    return _COMPILED[key]

  def batches(self, lengths: Sequence[int], show_progress: bool,
              desc: str) -> Iterator[tuple[list[int], int]]:
    """Items sorted by length (similar lengths share a batch: less padding, fewer buckets), in
    chunks of batch_size: yields (item indices, the chunk's padded length); shows progress."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    bar = progress_bar(len(order), 0, show_progress, desc)
    try:
      for start in range(0, len(order), self.batch_size):
        chunk = order[start:start + self.batch_size]
        yield chunk, self.padded_length(max(lengths[i] for i in chunk))
        bar.update(len(chunk))
    finally:
      bar.close()


def runner_params(params: Any) -> Any:
  """A runner's params: a Decoder's, or the decoder part of a wrapper's."""
  return decoder_params(params)
