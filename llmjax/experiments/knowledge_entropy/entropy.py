"""Knowledge entropy (Kim et al. 2025, "Knowledge Entropy Decay during Language Model
Pretraining Hinders New Knowledge Acquisition"): how evenly a model draws on its FFN memories.

Shape letters: N layers, B rows, L length, F FFN width.

Each FFN is read as a key-value memory, FFN(x) = f(x K^T) V, whose memory coefficients are the
input of the down projection (`ffn_hidden`; for SwiGLU act(gate(x)) * up(x)). Per layer l:

  C^l = the mean of |coefficients| over the corpus's tokens      [F]
  p^l = C^l / sum_f C^l
  H^l = -sum_f p^l_f ln p^l_f                                    (at most ln F)
  knowledge entropy H = sum_l H^l                                (at most N ln F)

Padding: by default only real tokens count. The authors' code averages over every position of
its padded batches, pad tokens included; `include_padding=True` reproduces that (a pad
position's coefficients are whatever the model computes for the pad token there).

The pass (`KnowledgeEntropyProbe`) runs the decoder with only the `ffn_hidden` probe returned:
the logits are never an output, so XLA drops the final norm and unembedding; per batch it adds
the absolute coefficients into per-layer sums that stay on device until the end. Rows split
over the mesh's data-parallel axes (data, fsdp) and, with several processes, each process feeds
its share of every global batch.

Resuscitation (Section 5 of the paper): per layer, the memories whose mean coefficient is at or
below the p-quantile get their up-projection scaled by u_f = mean(C^l) / C^l_f x q, so that
rarely used memories are drawn on again when training continues (`resuscitate`).
"""

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from llmjax.errors import UserError
from llmjax.infer.batching import BatchedRunner, runner_params
from llmjax.models import apply_with_probes, decoder_params, with_decoder_params


@dataclasses.dataclass
class CoefficientStats:
  """Absolute memory coefficients summed over a corpus: sums_NxF over `positions` positions."""

  sums_NxF: np.ndarray
  positions: int

  @property
  def mean_coefficients_NxF(self) -> np.ndarray:
    """C^l: the per-position mean of |coefficients|, per layer."""
    return self.sums_NxF / max(self.positions, 1)

  @property
  def distributions_NxF(self) -> np.ndarray:
    """p^l = C^l / sum C^l."""
    return coefficient_distributions(self.mean_coefficients_NxF)

  @property
  def layer_entropy_N(self) -> np.ndarray:
    return layer_entropy(self.mean_coefficients_NxF)

  @property
  def knowledge_entropy(self) -> float:
    return float(self.layer_entropy_N.sum())


def coefficient_distributions(mean_coefficients_NxF: np.ndarray) -> np.ndarray:
  """p^l = C^l / sum_f C^l, per layer (float64)."""
  c = np.asarray(mean_coefficients_NxF, np.float64)
  totals = c.sum(-1, keepdims=True)
  if np.any(totals <= 0):
    raise UserError("knowledge entropy: a layer's memory coefficients are all zero (an empty "
                    "corpus, or every position masked)")
  return c / totals


def layer_entropy(mean_coefficients_NxF: np.ndarray) -> np.ndarray:
  """H^l = -sum p^l ln p^l per layer [N] (natural log; 0 ln 0 = 0)."""
  p = coefficient_distributions(mean_coefficients_NxF)
  return -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)


def max_knowledge_entropy(n_layers: int, d_ff: int) -> float:
  """N ln F: every memory drawn on equally (16 ln 8192 = 144.2 for OLMo-1B)."""
  return n_layers * float(np.log(d_ff))


class KnowledgeEntropyProbe(BatchedRunner):
  """Sums a decoder's absolute FFN coefficients over documents (token id lists), with the
  params each call is given (see BatchedRunner for the constructor's arguments)."""

  def _accumulate(self, length: int):
    model = self.model

    def step(params, sums_NxF, tokens_BxL, segments_BxL, weight_BxL):
      _, probes = apply_with_probes(model, params, tokens_BxL, None, segments_BxL,
                                    probes=("ffn_hidden",))
      h_NxBxLxF = probes["ffn_hidden"].astype(jnp.float32)
      sums_NxF = sums_NxF + jnp.einsum("nblf,bl->nf", jnp.abs(h_NxBxLxF), weight_BxL)
      return sums_NxF

    def build():
      batch, replicated = self.parallel.batch_sharding(2), self.parallel.replicated
      jitted = jax.jit(step, in_shardings=(None, replicated, batch, batch, batch),
                       out_shardings=replicated, donate_argnums=(1,))

      def call(*args):
        with self.parallel.context():
          return jitted(*args)
      call.jitted = jitted  # for inspecting the compiled program
      return call

    return self.compiled("ffn_coefficients", (self.batch_size, length), build)

  def coefficient_stats(self, params, documents: Sequence[Sequence[int]],
                        include_padding: bool = False,
                        show_progress: bool = False) -> CoefficientStats:
    """Absolute FFN coefficients summed over `documents`.

    Args:
      params: the decoder's params (or a wrapper's) on this runner's mesh.
      documents: token id lists, the same list in the same order on every process; a document
        longer than the model's learned positions is an error (cut it first).
      include_padding: count pad positions too, as the authors' code does.
    Returns:
      CoefficientStats with sums_NxF and the number of positions they cover.
    """
    if not documents:
      raise UserError("knowledge entropy: the corpus has no documents")
    for i, doc in enumerate(documents):
      if len(doc) == 0:
        raise UserError(f"knowledge entropy: document {i + 1} has no tokens")
      if self.config.positions == "learned" and len(doc) > self.config.max_len:
        raise UserError(f"knowledge entropy: document {i + 1} has {len(doc)} tokens, more than "
                        f"the model's {self.config.max_len} learned positions")
    params = runner_params(params)
    cfg = self.config
    replicated = self.parallel.replicated
    sums = jax.device_put(jnp.zeros((cfg.n_layers, cfg.d_ff), jnp.float32), replicated)
    positions = 0  # counted here: every process builds the whole global batch
    B = self.batch_size
    process, processes = jax.process_index(), jax.process_count()
    if B % processes:
      raise UserError(f"knowledge entropy: batch size {B} does not split over {processes} "
                      "processes")
    share = B // processes
    batch_sharding = self.parallel.batch_sharding(2)
    for chunk, L in self.batches([len(d) for d in documents], show_progress, "entropy"):
      tokens = np.full((B, L), self.pad_id, np.int32)
      segments = np.zeros((B, L), np.int32)
      for b, i in enumerate(chunk):
        tokens[b, :len(documents[i])] = documents[i]
        segments[b, :len(documents[i])] = 1
      weight = (segments > 0).astype(np.float32)
      if include_padding:  # every position of a filled row (an unfilled one is no document)
        weight[:len(chunk)] = 1.0
      mine = slice(process * share, (process + 1) * share)
      arrays = (jax.make_array_from_process_local_data(batch_sharding, x[mine], x.shape)
                for x in (tokens, segments, weight))
      sums = self._accumulate(L)(params, sums, *arrays)
      positions += int(weight.sum())
    return CoefficientStats(np.asarray(jax.device_get(sums), np.float64), positions)


def resuscitate(params: Any, mean_coefficients_NxF: np.ndarray, quantile: float = 0.5,
                multiplier: float = 1.0) -> tuple[Any, np.ndarray]:
  """Resuscitation: per layer, scale the up projection of the memories whose mean coefficient
  is at or below the `quantile` of that layer's coefficients by u_f = mean(C^l) / C^l_f x
  `multiplier`; every other parameter is returned unchanged (the same arrays).

  For a SwiGLU FFN the `up` kernel (the linear factor of act(gate(x)) * up(x)) is scaled, so a
  coefficient grows by exactly u_f; for a plain FFN, act(up(x)), the `up` kernel.

  Args:
    params: a Decoder's params (or a wrapper's), layers unrolled ('layer_i') or scanned.
    mean_coefficients_NxF: C^l per layer (CoefficientStats.mean_coefficients_NxF).
    quantile: p in (0, 1]; multiplier: q > 0.
  Returns:
    (params with the scaled up projections, the per-layer count of scaled memories [N]).
  """
  if not 0.0 < quantile <= 1.0:
    raise UserError(f"resuscitation quantile = {quantile}: expected a value in (0, 1]")
  if multiplier <= 0:
    raise UserError(f"resuscitation multiplier = {multiplier}: expected a positive number")
  c_NxF = np.asarray(mean_coefficients_NxF, np.float64)
  if np.any(c_NxF <= 0):
    raise UserError("resuscitation: a memory coefficient is zero; u = mean(C) / C is undefined")
  threshold_N = np.quantile(c_NxF, quantile, axis=-1, keepdims=True)
  selected_NxF = c_NxF <= threshold_N
  scale_NxF = np.where(selected_NxF, c_NxF.mean(-1, keepdims=True) / c_NxF * multiplier, 1.0)

  decoder = decoder_params(params)
  if "layers" in decoder:  # scanned: kernels carry a leading layer axis
    kernel_NxDxF = decoder["layers"]["block"]["mlp"]["up"]["kernel"]
    _check_shape(kernel_NxDxF.shape[::2], c_NxF.shape)
    scaled = kernel_NxDxF * jnp.asarray(scale_NxF[:, None, :], kernel_NxDxF.dtype)
    new_layers = _replace(decoder["layers"], ("block", "mlp", "up", "kernel"), scaled)
    new_decoder = {**decoder, "layers": new_layers}
  else:
    new_decoder = dict(decoder)
    for n in range(c_NxF.shape[0]):
      name = f"layer_{n}"
      if name not in decoder:
        raise UserError(f"resuscitation: the params have no {name} for coefficient row {n}")
      kernel_DxF = decoder[name]["mlp"]["up"]["kernel"]
      _check_shape((kernel_DxF.shape[1],), c_NxF.shape[1:])
      new_decoder[name] = _replace(decoder[name], ("mlp", "up", "kernel"),
                                   kernel_DxF * jnp.asarray(scale_NxF[n], kernel_DxF.dtype))
  return with_decoder_params(params, new_decoder), selected_NxF.sum(-1)


def _check_shape(got, expected) -> None:
  if tuple(got) != tuple(expected):
    raise UserError(f"resuscitation: coefficients of shape {tuple(expected)} do not match the "
                    f"up projection's (layers, d_ff) = {tuple(got)}")


def _replace(tree: dict, path: tuple[str, ...], value) -> dict:
  """A copy of nested dict `tree` with `path` set to `value` (siblings shared, not copied)."""
  head, *rest = path
  return {**tree, head: value if not rest else _replace(tree[head], tuple(rest), value)}
