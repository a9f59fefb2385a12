"""The decoder-only transformer every llmjax experiment trains, probes or decodes.

Shape letters: B batch, L length, D d_model, V vocab, N layers.

Inputs are token ids, input embeddings, or token ids with some positions replaced by given
vectors (one sentence embedding per step, say). Attention is causal, bidirectional (an encoder)
or prefix-LM (bidirectional over a marked prefix, causal after it): `mask_mode`.

Probes read intermediates without changing the forward math: `apply_with_probes` (or `apply`
with the probes' collections mutable, then `collect_probes`) returns, by name,
  residual   [N, B, L, D]     the residual stream after each layer
  ffn_hidden [N, B, L, F]     the FFN coefficients (the input of each down projection)
  attn_probs [N, B, H, L, L]  attention probabilities
Each probe has its own collection: one that is not asked for is never computed.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from llmjax.models.config import MASK_MODES, ModelConfig
from llmjax.models.layers import (PROBES, Attention, Mlp, Norm, Projection, attention_mask,
                                  cached_attention_mask, probe_collection, rope_sin_cos)
from llmjax.models.layout import decoder_params, params_layout


class Block(nn.Module):
  """Residual block. Pre-norm: x + attn(norm(x)), then x + mlp(norm(x)); post-norm (OLMo-2):
  x + norm(attn(x)), then x + norm(mlp(x))."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxMxD, rope_BxM, mask_Bx1xLxC, deterministic: bool = True,
               folded_input=None, cache_index=None, causal: bool = True):
    """Returns the residual stream at the last L positions (L = M unless the mask has fewer
    query rows). `rope_BxM`, `folded_input`, `cache_index`, `causal`: see Attention."""
    cfg = self.config
    L = mask_Bx1xLxC.shape[2]
    pre = cfg.norm_position == "pre"
    attn_norm, mlp_norm = Norm(cfg, name="attn_norm"), Norm(cfg, name="mlp_norm")
    h_BxLxD = Attention(cfg, name="attn")(attn_norm(x_BxMxD) if pre else x_BxMxD, rope_BxM,
                                          mask_Bx1xLxC, deterministic, folded_input, cache_index,
                                          causal)
    h_BxLxD = h_BxLxD if pre else attn_norm(h_BxLxD)
    x_BxLxD = x_BxMxD[:, -L:] + nn.Dropout(cfg.dropout)(h_BxLxD, deterministic=deterministic)
    h_BxLxD = Mlp(cfg, name="mlp")(mlp_norm(x_BxLxD) if pre else x_BxLxD, deterministic)
    h_BxLxD = h_BxLxD if pre else mlp_norm(h_BxLxD)
    x_BxLxD = x_BxLxD + nn.Dropout(cfg.dropout)(h_BxLxD, deterministic=deterministic)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "activation_embed"))
    self.sow(probe_collection("residual"), "residual", x_BxLxD)
    return x_BxLxD


_REMAT_POLICIES = {"full": jax.checkpoint_policies.nothing_saveable,
                   "dots_saveable": jax.checkpoint_policies.dots_saveable}


def _block_class(config: ModelConfig):
  if config.remat == "none":
    return Block
  # static_argnums counts the module itself as argument 0: `deterministic` is argument 4,
  # `causal` argument 7.
  return nn.remat(Block, policy=_REMAT_POLICIES[config.remat], static_argnums=(4, 7))


class _ScanStep(nn.Module):
  """One layer as a scan step: the residual stream is the carry."""

  config: ModelConfig
  deterministic: bool
  causal: bool

  @nn.compact
  def __call__(self, x_BxLxD, rope_BxL, mask_Bx1xLxC, cache_index):
    block = _block_class(self.config)(self.config, name="block")
    return block(x_BxLxD, rope_BxL, mask_Bx1xLxC, self.deterministic, None,
                 cache_index, self.causal), None


class Decoder(nn.Module):
  """Token ids (or input embeddings) in, next-token logits out.

  Args (of `__call__`):
    tokens_BxL: int token ids; None when `embeddings_BxLxD` gives every input.
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
    embeddings_BxLxD: input vectors in place of the token embeddings (learned positions, if
      any, are still added). With `tokens_BxL` too, only where `embedding_mask_BxL` is 1.
    embedding_mask_BxL: with both inputs, 1 where the given vector replaces the token's.
    mask_mode: 'causal', 'bidirectional' or 'prefix_lm' (default `config.mask_mode`).
    prefix_mask_BxL: for 'prefix_lm', 1 on the tokens of each row's bidirectional prefix.
  Returns:
    logits_BxLxV (or _BxnxV; hidden_BxLxD with return_hidden) in the compute dtype.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxL=None, positions_BxL=None, segment_ids_BxL=None,
               deterministic: bool = True, last_positions: int | None = None,
               decode: bool = False, return_hidden: bool = False, embeddings_BxLxD=None,
               embedding_mask_BxL=None, mask_mode: str | None = None, prefix_mask_BxL=None):
    cfg = self.config
    if tokens_BxL is None and embeddings_BxLxD is None:
      raise ValueError("Decoder needs tokens_BxL, embeddings_BxLxD or both")
    if tokens_BxL is not None and embeddings_BxLxD is not None and embedding_mask_BxL is None:
      raise ValueError("with both tokens_BxL and embeddings_BxLxD, embedding_mask_BxL says "
                       "which positions take the given vectors")
    B, L = (tokens_BxL if tokens_BxL is not None else embeddings_BxLxD).shape[:2]
    if positions_BxL is None:
      positions_BxL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    if segment_ids_BxL is None:
      segment_ids_BxL = jnp.ones((B, L), jnp.int32)
    prefix_BxL = self._bidirectional_prefix(mask_mode or cfg.mask_mode, prefix_mask_BxL, decode,
                                            (B, L))
    if decode:
      mask_Bx1xLxL, cache_index = self._cached_mask(segment_ids_BxL, positions_BxL, prefix_BxL)
    else:
      mask_Bx1xLxL = attention_mask(segment_ids_BxL, positions_BxL, cfg.sliding_window,
                                    prefix_BxL)
      cache_index = None
    causal = prefix_BxL is None
    # A row's positions count its tokens, so they lie below its number of slots (the mask's
    # last axis: L, or the cache length when decoding).
    rope_BxL = (rope_sin_cos(positions_BxL, mask_Bx1xLxL.shape[-1], cfg.head_dim,
                             cfg.rope_theta, cfg.rope_llama3_scaling)
                if cfg.positions == "rope" else None)

    embed = nn.Embed(cfg.vocab_size, cfg.d_model, name="embed", dtype=cfg.compute_dtype,
                     param_dtype=cfg.weight_dtype,
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(stddev=cfg.init_std), ("vocab", "embed")))
    if tokens_BxL is not None:
      # Gather from the table with its 'embed' axis whole (FSDP gathers every weight before
      # use anyway): from an fsdp-split table XLA's partitioner cannot produce the batch-split
      # rows and falls back to replicating the gather ("involuntary full rematerialization").
      table_VxD = nn.with_logical_constraint(embed.embedding, ("vocab", None))
      x_BxLxD = jnp.take(table_VxD, tokens_BxL, axis=0).astype(cfg.compute_dtype)
      if embeddings_BxLxD is not None:
        x_BxLxD = jnp.where(embedding_mask_BxL[..., None].astype(bool),
                            embeddings_BxLxD.astype(cfg.compute_dtype), x_BxLxD)
    else:
      x_BxLxD = embeddings_BxLxD.astype(cfg.compute_dtype)
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
      layers = nn.scan(_ScanStep, variable_axes=dict.fromkeys(_LAYER_COLLECTIONS, 0),
                       split_rngs={"params": True, "dropout": True},
                       in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                       length=cfg.n_layers, metadata_params={nn.PARTITION_NAME: "layers"})
      x_BxLxD, _ = layers(cfg, deterministic, causal, name="layers")(x_BxLxD, rope_BxL,
                                                                     mask_Bx1xLxL, cache_index)
      if last_positions:  # every scanned layer has the same shape, so slice afterwards
        x_BxLxD = x_BxLxD[:, -last_positions:]
    else:
      block_class = _block_class(cfg)
      # With nothing between the embedding sum and the first projections (no norm, no
      # dropout, no bias, no given vectors), layer 0 projects the embedding tables and
      # gathers: for small vocabularies (algorithmic tasks) that removes most of the first
      # layer's QKV work.
      foldable = (cfg.norm == "none" or cfg.norm_position == "post") and (
          cfg.dropout == 0.0 and not cfg.qkv_bias and embeddings_BxLxD is None)
      folded_input = (embed.embedding, table_PxD, tokens_BxL, positions_BxL) if foldable else None
      for i in range(cfg.n_layers):
        last_layer = i == cfg.n_layers - 1
        layer_mask = (mask_Bx1xLxL[:, :, -last_positions:] if last_layer and last_positions
                      else mask_Bx1xLxL)
        x_BxLxD = block_class(cfg, name=f"layer_{i}")(x_BxLxD, rope_BxL, layer_mask,
                                                      deterministic,
                                                      folded_input if i == 0 else None,
                                                      cache_index, causal)
    x_BxLxD = Norm(cfg, name="final_norm")(x_BxLxD)
    unembed = None if cfg.tie_embeddings else Projection(
        cfg, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), 1, False, name="unembed")
    if return_hidden:
      if unembed is not None and self.is_initializing():
        unembed(x_BxLxD[:, :1])  # the same params whatever an initialisation returns
      return nn.with_logical_constraint(x_BxLxD, ("batch", "length", "activation_embed"))

    if unembed is None:
      logits_BxLxV = hidden_to_logits(x_BxLxD, embed.embedding.astype(cfg.compute_dtype).T)
    else:
      logits_BxLxV = unembed(x_BxLxD)
    return nn.with_logical_constraint(logits_BxLxV, ("batch", "length", "vocab"))

  @staticmethod
  def _bidirectional_prefix(mode: str, prefix_mask_BxL, decode: bool, shape):
    """The [B, L] bool marks of bidirectional tokens, or None for a causal mask."""
    if mode not in MASK_MODES:
      raise ValueError(f"mask_mode = {mode!r}: expected one of {MASK_MODES}")
    if mode == "causal":
      if prefix_mask_BxL is not None:
        raise ValueError("prefix_mask_BxL needs mask_mode='prefix_lm'")
      return None
    if mode == "bidirectional":
      if decode:
        raise ValueError("a bidirectional model has no KV-cache decoding")
      return jnp.ones(shape, bool)
    if prefix_mask_BxL is None:
      raise ValueError("mask_mode='prefix_lm' needs prefix_mask_BxL")
    return prefix_mask_BxL.astype(bool)

  def _cached_mask(self, segment_ids_BxL, positions_BxL, prefix_BxL):
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
                                 start, self.config.sliding_window, prefix_BxL)
    return mask, start


# Collections with one entry per layer: stacked along the layer axis when layers are scanned.
_LAYER_COLLECTIONS = ("params", "cache", *(probe_collection(p) for p in PROBES))


def hidden_to_logits(hidden_BxLxD, table_DxV):
  """Logits from final hidden states, as one 2-D matmul (the reason is in layers.Projection)."""
  B, L, D = hidden_BxLxD.shape
  return (hidden_BxLxD.reshape(B * L, D) @ table_DxV).reshape(B, L, table_DxV.shape[1])


def unembedding(params, config: ModelConfig) -> jax.Array:
  """The [D, V] matrix, in the compute dtype, that maps the Decoder's final hidden states to its
  logits: the unembedding kernel, or the transposed embedding table when they are tied. Takes a
  Decoder's params or a wrapper's (llmjax.models.layout.decoder_params)."""
  params = decoder_params(params)
  table_DxV = (params["embed"]["embedding"].T if config.tie_embeddings
               else params["unembed"]["kernel"])
  return table_DxV.astype(config.compute_dtype)


def token_embeddings(params, config: ModelConfig, tokens_BxL) -> jax.Array:
  """The [B, L, D] input vectors the Decoder makes of `tokens_BxL` (before positions): what
  `embeddings_BxLxD` replaces."""
  table_VxD = decoder_params(params)["embed"]["embedding"]
  return jnp.take(table_VxD, tokens_BxL, axis=0).astype(config.compute_dtype)


def decoder_layout(config: ModelConfig, parallel) -> Any:
  """Abstract params (shape, dtype, sharding on `parallel`'s mesh) of the Decoder `config`
  builds: the target of an initialisation, a restore or an import."""
  return params_layout(Decoder(config), parallel, jnp.zeros((1, 1), jnp.int32))


def collect_probes(variables: dict[str, Any], n_layers: int,
                   names: Sequence[str] | None = None) -> dict[str, jnp.ndarray]:
  """Stacks sown per-layer probes into arrays with a leading layer axis N.

  Args:
    variables: the mutable collections returned by `apply(..., mutable=[...])`.
    n_layers: number of decoder layers.
    names: the probes to collect (default: every probe whose collection is present).
  Returns:
    {'residual': [N,B,L,D], 'ffn_hidden': [N,B,L,F], 'attn_probs': [N,B,H,L,L]}, as asked.
  """
  names = [n for n in PROBES if probe_collection(n) in variables] if names is None else names
  probes = {}
  for name in names:
    if name not in PROBES:
      raise ValueError(f"unknown probe {name!r}; expected one of {PROBES}")
    tree = variables[probe_collection(name)]
    if "decoder" in tree and "layers" not in tree and "layer_0" not in tree:
      tree = tree["decoder"]  # sown inside a wrapper module
    where = {"residual": (), "ffn_hidden": ("mlp",), "attn_probs": ("attn",)}[name]
    scanned = "layers" in tree
    nodes = [tree["layers"]["block"]] if scanned else [tree[f"layer_{i}"]
                                                       for i in range(n_layers)]
    for key in where:
      nodes = [node[key] for node in nodes]
    stacked = [node[name][0] for node in nodes]
    probes[name] = stacked[0] if scanned else jnp.stack(stacked)
  return probes


def apply_with_probes(model: nn.Module, params, *args, probes: Sequence[str] = PROBES,
                      **kwargs) -> tuple[Any, dict[str, jnp.ndarray]]:
  """`model.apply({'params': params}, *args, **kwargs)` that also returns the named probes
  (see `collect_probes`); `model` is a Decoder or a wrapper with one under 'decoder'."""
  out, variables = model.apply({"params": params}, *args,
                               mutable=[probe_collection(p) for p in probes], **kwargs)
  return out, collect_probes(variables, model.config.n_layers, probes)
