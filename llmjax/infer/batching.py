"""What the generator and the scorer share: a decoder's params on a mesh, and requests run in
fixed compiled shapes (a batch size and length buckets)."""

import math

from llmjax.models import Decoder, ModelConfig
from llmjax.parallel import Parallel


class BatchedRunner:
  """Args:
    model_config: the decoder's config.
    params: its parameters, already placed in their shardings.
    parallel: the mesh the params live on (batch rows are split over data/fsdp, heads over
      tensor); default one over all devices.
    batch_size: rows per compiled batch (rounded up to a multiple of the batch axes' size).
    length_bucket: lengths are padded up to a multiple of this (one compile per bucket).
    pad_id: token id written into padding (never attended to).
  """

  def __init__(self, model_config: ModelConfig, params, parallel: Parallel | None = None,
               batch_size: int = 16, length_bucket: int = 64, pad_id: int = 0):
    self.config = model_config
    self.params = params
    self.parallel = parallel or Parallel.from_config({"data": -1})
    multiple = self.parallel.batch_size_multiple
    self.batch_size = -(-batch_size // multiple) * multiple
    self.length_bucket = length_bucket
    self.pad_id = pad_id
    self.model = Decoder(model_config)

  def padded_length(self, length: int) -> int:
    return math.ceil(length / self.length_bucket) * self.length_bucket
