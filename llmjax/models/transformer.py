"""The decoder-only transformer every llmjax experiment trains, probes or decodes.

Shape letters: B batch, L length, D d_model, V vocab, N layers.

Probes read three intermediates without changing the forward math, by calling `apply` with
`mutable=["intermediates"]` and passing the result to `collect_probes`:
  residual   [N, B, L, D]  the residual stream after each layer
  ffn_hidden [N, B, L, F]  the FFN coefficients (the input of each down projection)
  attn_probs [N, B, H, L, L] attention probabilities
When 'intermediates' is not mutable, `sow` does nothing and they cost nothing.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from llmjax.models.config import ModelConfig
from llmjax.models.layers import (Attention, Mlp, Norm, Projection, attention_mask,
                                  cached_attention_mask, rope_sin_cos)


class Block(nn.Module):
  """Residual block. Pre-norm: x + attn(norm(x)), then x + mlp(norm(x)); post-norm (OLMo-2):
  x + norm(attn(x)), then x + norm(mlp(x))."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxMxD, rope_BxM, mask_Bx1xLxC, deterministic: bool = True,
               folded_input=None, cache_index=None):
    """Returns the residual stream at the last L positions (L = M unless the mask has fewer
    query rows). `rope_BxM`, `folded_input`, `cache_index`: see Attention."""
    cfg = self.config
    L = mask_Bx1xLxC.shape[2]
    pre = cfg.norm_position == "pre"
    attn_norm, mlp_norm = Norm(cfg, name="attn_norm"), Norm(cfg, name="mlp_norm")
    h_BxLxD = Attention(cfg, name="attn")(attn_norm(x_BxMxD) if pre else x_BxMxD, rope_BxM,
                                          mask_Bx1xLxC, deterministic, folded_input, cache_index)
    h_BxLxD = h_BxLxD if pre else attn_norm(h_BxLxD)
    x_BxLxD = x_BxMxD[:, -L:] + nn.Dropout(cfg.dropout)(h_BxLxD, deterministic=deterministic)
    h_BxLxD = Mlp(cfg, name="mlp")(mlp_norm(x_BxLxD) if pre else x_BxLxD, deterministic)
    h_BxLxD = h_BxLxD if pre else mlp_norm(h_BxLxD)
    x_BxLxD = x_BxLxD + nn.Dropout(cfg.dropout)(h_BxLxD, deterministic=deterministic)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "activation_embed"))
    self.sow("intermediates", "residual", x_BxLxD)
    return x_BxLxD


_REMAT_POLICIES = {"full": jax.checkpoint_policies.nothing_saveable,
                   "dots_saveable": jax.checkpoint_policies.dots_saveable}


def _block_class(config: ModelConfig):
  if config.remat == "none":
    return Block
  # static_argnums counts the module itself as argument 0: `deterministic` is argument 4.
  return nn.remat(Block, policy=_REMAT_POLICIES[config.remat], static_argnums=(4,))


class _ScanStep(nn.Module):
  """One layer as a scan step: the residual stream is the carry."""

  config: ModelConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x_BxLxD, rope_BxL, mask_Bx1xLxC, cache_index):
    block = _block_class(self.config)(self.config, name="block")
    return block(x_BxLxD, rope_BxL, mask_Bx1xLxC, self.deterministic, None,
                 cache_index), None


class Decoder(nn.Module):
  """Token ids in, next-token logits out.

  Args (of `__call__`):
    tokens_BxL: int token ids.
    positions_BxL: position of each token within its document, so below the row's number of
      slots (L, or the cache length when decoding; with rope, a position outside gives NaN);
      default 0..L-1 per row.
    segment_ids_BxL: document number of each token, 0 for padding; default all ones.
    deterministic: False enables dropout (needs a 'dropout' rng).
    last_positions: if given, compute logits only for the last n positions; the last layer then
      runs its queries and MLP on those positions alone (the readout of algorithmic tasks).
    decode: use and update the KV cache in the 'cache' collection (make it mutable): the L
      tokens fill the next L cache slots (a whole prompt, or one token per decode step) and
      attend to everything cached before them. `init(..., decode=True)` with tokens of shape
      [B, C] creates a cache of C slots (see llmjax.infer.cache).
    return_hidden: return the final (normalised) hidden states instead of logits; the logits
      are then `hidden @ unembedding(params, config)` (for losses that compute them in chunks).
  Returns:
    logits_BxLxV (or _BxnxV; hidden_BxLxD with return_hidden) in the compute dtype.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxL, positions_BxL=None, segment_ids_BxL=None,
               deterministic: bool = True, last_positions: int | None = None,
               decode: bool = False, return_hidden: bool = False):
    cfg = self.config
    B, L = tokens_BxL.shape
    if positions_BxL is None:
      positions_BxL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    if segment_ids_BxL is None:
      segment_ids_BxL = jnp.ones((B, L), jnp.int32)
    if decode:
      mask_Bx1xLxL, cache_index = self._cached_mask(segment_ids_BxL, positions_BxL)
    else:
      mask_Bx1xLxL = attention_mask(segment_ids_BxL, positions_BxL, cfg.sliding_window)
      cache_index = None
    # A row's positions count its tokens, so they lie below its number of slots (the mask's
    # last axis: L, or the cache length when decoding).
    rope_BxL = (rope_sin_cos(positions_BxL, mask_Bx1xLxL.shape[-1], cfg.head_dim,
                             cfg.rope_theta, cfg.rope_llama3_scaling)
                if cfg.positions == "rope" else None)

    embed = nn.Embed(cfg.vocab_size, cfg.d_model, name="embed", dtype=cfg.compute_dtype,
                     param_dtype=cfg.weight_dtype,
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(stddev=cfg.init_std), ("vocab", "embed")))
    # Gather from the table with its 'embed' axis whole (FSDP gathers every weight before use
    # anyway): from an fsdp-split table XLA's partitioner cannot produce the batch-split rows
    # and falls back to replicating the gather ("involuntary full rematerialization").
    table_VxD = nn.with_logical_constraint(embed.embedding, ("vocab", None))
    x_BxLxD = jnp.take(table_VxD, tokens_BxL, axis=0).astype(cfg.compute_dtype)
    table_PxD = None
    if cfg.positions == "learned":
      table_init = nn.with_logical_partitioning(nn.initializers.normal(stddev=cfg.init_std),
                                                (None, "embed"))
      table_PxD = self.param("pos_embed", table_init, (cfg.max_len, cfg.d_model),
                             cfg.weight_dtype)
      x_BxLxD = x_BxLxD + table_PxD[positions_BxL].astype(cfg.compute_dtype)
    x_BxLxD = nn.Dropout(cfg.dropout)(x_BxLxD, deterministic=deterministic)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "activation_embed"))

    if cfg.scan_layers:
      layers = nn.scan(_ScanStep, variable_axes={"params": 0, "intermediates": 0, "cache": 0},
                       split_rngs={"params": True, "dropout": True},
                       in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                       length=cfg.n_layers, metadata_params={nn.PARTITION_NAME: "layers"})
      x_BxLxD, _ = layers(cfg, deterministic, name="layers")(x_BxLxD, rope_BxL, mask_Bx1xLxL,
                                                             cache_index)
      if last_positions:  # every scanned layer has the same shape, so slice afterwards
        x_BxLxD = x_BxLxD[:, -last_positions:]
    else:
      block_class = _block_class(cfg)
      # With nothing between the embedding sum and the first projections (no norm, no
      # dropout, no bias), layer 0 projects the embedding tables and gathers: for small
      # vocabularies (algorithmic tasks) that removes most of the first layer's QKV work.
      foldable = (cfg.norm == "none" or cfg.norm_position == "post") and (
          cfg.dropout == 0.0 and not cfg.qkv_bias)
      folded_input = (embed.embedding, table_PxD, tokens_BxL, positions_BxL) if foldable else None
      for i in range(cfg.n_layers):
        last_layer = i == cfg.n_layers - 1
        layer_mask = (mask_Bx1xLxL[:, :, -last_positions:] if last_layer and last_positions
                      else mask_Bx1xLxL)
        x_BxLxD = block_class(cfg, name=f"layer_{i}")(x_BxLxD, rope_BxL, layer_mask,
                                                      deterministic,
                                                      folded_input if i == 0 else None,
                                                      cache_index)
    x_BxLxD = Norm(cfg, name="final_norm")(x_BxLxD)
    if return_hidden:
      return nn.with_logical_constraint(x_BxLxD, ("batch", "length", "activation_embed"))

    if cfg.tie_embeddings:  # as a 2-D matmul, for the reason given in layers.Projection
      B, N, D = x_BxLxD.shape
      table_VxD = embed.embedding.astype(cfg.compute_dtype)
      logits_BxLxV = (x_BxLxD.reshape(B * N, D) @ table_VxD.T).reshape(B, N, cfg.vocab_size)
    else:
      logits_BxLxV = Projection(cfg, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), 1,
                                False, name="unembed")(x_BxLxD)
    return nn.with_logical_constraint(logits_BxLxV, ("batch", "length", "vocab"))

  def _cached_mask(self, segment_ids_BxL, positions_BxL):
    """Appends the new tokens' segment ids and positions to the cache; returns their mask over
    all cache slots and the first slot they occupy."""
    index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    segments = self.variable("cache", "segment_ids", jnp.zeros, segment_ids_BxL.shape, jnp.int32)
    positions = self.variable("cache", "positions", jnp.zeros, positions_BxL.shape, jnp.int32)
    start = index.value
    if not self.is_initializing():
      segments.value = jax.lax.dynamic_update_slice(segments.value, segment_ids_BxL, (0, start))
      positions.value = jax.lax.dynamic_update_slice(positions.value, positions_BxL, (0, start))
      index.value = start + segment_ids_BxL.shape[1]
    mask = cached_attention_mask(segment_ids_BxL, positions_BxL, segments.value, positions.value,
                                 start, self.config.sliding_window)
    return mask, start


def unembedding(params, config: ModelConfig) -> jax.Array:
  """The [D, V] matrix, in the compute dtype, that maps the Decoder's final hidden states to its
  logits: the unembedding kernel, or the transposed embedding table when they are tied."""
  table_DxV = (params["embed"]["embedding"].T if config.tie_embeddings
               else params["unembed"]["kernel"])
  return table_DxV.astype(config.compute_dtype)


def collect_probes(intermediates: dict[str, Any], n_layers: int) -> dict[str, jnp.ndarray]:
  """Stacks the sown per-layer intermediates into arrays with a leading layer axis N.

  Args:
    intermediates: the 'intermediates' collection returned by `apply(..., mutable=[...])`.
    n_layers: number of decoder layers.
  Returns:
    {'residual': [N,B,L,D], 'ffn_hidden': [N,B,L,F], 'attn_probs': [N,B,H,L,L]}.
  """
  probes = {}
  for name, where in (("residual", ()), ("ffn_hidden", ("mlp",)), ("attn_probs", ("attn",))):
    if "layers" in intermediates:  # scanned: already stacked along the layer axis
      nodes = [intermediates["layers"]["block"]]
    else:
      nodes = [intermediates[f"layer_{i}"] for i in range(n_layers)]
    for key in where:
      nodes = [node[key] for node in nodes]
    stacked = [node[name][0] for node in nodes]
    probes[name] = stacked[0] if len(stacked) == 1 and "layers" in intermediates else (
        jnp.stack(stacked))
  return probes
