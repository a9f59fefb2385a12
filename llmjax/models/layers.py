"""Building blocks of the decoder: norms, rotary positions, attention, MLP.

Shape letters: B batch, L query length, M key length, D d_model, H query heads, G query heads per
kv head, V kv heads, K head dim, F d_ff.

Every parameter carries logical axis names (embed, vocab, heads, kv_heads, head_dim, mlp); the
mesh rules in the config decide where each lands. Probes read intermediates through `sow` into
one collection per probe (`probe_collection`), a no-op unless the caller makes it mutable: asking
for FFN coefficients never computes attention probabilities.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from llmjax.models.config import ModelConfig

_NEG_INF = -1e30  # finite, so fully masked rows (padding queries) softmax to uniform, not NaN

# What a probe reads, per layer: the residual stream after the block, the FFN coefficients (the
# input of the down projection) and the attention probabilities.
PROBES = ("residual", "ffn_hidden", "attn_probs")


def probe_collection(name: str) -> str:
  """The Flax collection a probe is sown into (make it mutable to read the probe)."""
  return f"probe_{name}"


def _init(config: ModelConfig, axes: tuple[str, ...], std: float | None = None):
  return nn.with_logical_partitioning(
      nn.initializers.normal(stddev=std or config.init_std), axes)


def _zeros(axes: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


class Norm(nn.Module):
  """RMSNorm, LayerNorm (with or without its affine parameters) or identity, computed in f32.

  `features_axis` is the logical name of the normalised axis (None for q/k norms over all heads,
  whose width is n_heads * head_dim).
  """

  config: ModelConfig
  features_axis: str | None = "embed"

  @nn.compact
  def __call__(self, x_BxLxD):
    kind, eps = self.config.norm, self.config.norm_eps
    if kind == "none":
      return x_BxLxD
    x = x_BxLxD.astype(jnp.float32)
    if kind == "rmsnorm":
      y = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
    else:
      centred = x - jnp.mean(x, axis=-1, keepdims=True)
      y = centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)
    axes = (self.features_axis,)
    if kind in ("rmsnorm", "layernorm"):
      ones = nn.with_logical_partitioning(nn.initializers.ones_init(), axes)
      y = y * self.param("scale", ones, (x.shape[-1],), self.config.weight_dtype)
    if kind == "layernorm":
      y = y + self.param("bias", _zeros(axes), (x.shape[-1],), self.config.weight_dtype)
    return y.astype(self.config.compute_dtype)


def rope_frequencies(head_dim: int, theta: float, llama3_scaling=None) -> np.ndarray:
  """Inverse frequencies [K/2] (numpy f32) of rotary embeddings, optionally with Llama 3's
  scaling: long wavelengths slowed by `factor`, short ones kept, a smooth blend in between."""
  half = head_dim // 2
  inv_freq_K2 = (1.0 / theta ** (np.arange(half, dtype=np.float32) / half)).astype(np.float32)
  if llama3_scaling is None:
    return inv_freq_K2
  factor, low_freq_factor, high_freq_factor, original_len = llama3_scaling
  wavelen_K2 = 2 * math.pi / inv_freq_K2
  low_freq_wavelen = original_len / low_freq_factor
  high_freq_wavelen = original_len / high_freq_factor
  scaled_K2 = np.where(wavelen_K2 > low_freq_wavelen, inv_freq_K2 / factor, inv_freq_K2)
  smooth_K2 = (original_len / wavelen_K2 - low_freq_factor) / (high_freq_factor - low_freq_factor)
  blended_K2 = (1 - smooth_K2) * scaled_K2 / factor + smooth_K2 * scaled_K2
  medium_K2 = (wavelen_K2 >= high_freq_wavelen) & (wavelen_K2 <= low_freq_wavelen)
  return np.where(medium_K2, blended_K2, scaled_K2).astype(np.float32)


def rope_sin_cos(positions_BxL, num_positions: int, head_dim: int, theta: float,
                 llama3_scaling=None):
  """(sin, cos) of the rotary angles of each position, each [B, L, K/2] f32.

  Looked up in tables of positions 0..num_positions-1 that are constants of the compiled
  program. Computed in the program instead, XLA:CPU fuses the sine and cosine into each of their
  consumers (q and k, forward and backward, of every layer) and evaluates them again for every
  head there: 2.7 ms instead of 0.2 ms to rotate one layer's queries (measured, [16, 256, 4, 64]).
  A position outside [0, num_positions) gets NaN: a broken contract shows up in the loss instead
  of silently rotating by a wrong angle.
  """
  inv_freq_K2 = rope_frequencies(head_dim, theta, llama3_scaling)
  angles_PxK2 = np.arange(num_positions, dtype=np.float32)[:, None] * inv_freq_K2
  # jnp.take counts negative indices from the end: send them past it, to the NaN fill, too.
  rows_BxL = jnp.where(positions_BxL < 0, num_positions, positions_BxL)
  return tuple(jnp.take(jnp.asarray(table_PxK2), rows_BxL, axis=0, mode="fill",
                        fill_value=jnp.nan)
               for table_PxK2 in (np.sin(angles_PxK2), np.cos(angles_PxK2)))


def apply_rope(x_BxLxHxK, sin_cos):
  """Rotary embedding in the rotate-half layout used by Llama-family checkpoints.

  Args:
    x_BxLxHxK: queries or keys.
    sin_cos: (sin, cos) of the L positions, each [B, L, K/2] (`rope_sin_cos`).
  """
  half = x_BxLxHxK.shape[-1] // 2
  sin_BxLx1xK2, cos_BxLx1xK2 = (t[:, :, None, :] for t in sin_cos)
  x = x_BxLxHxK.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:]
  rotated = jnp.concatenate([x1 * cos_BxLx1xK2 - x2 * sin_BxLx1xK2,
                             x2 * cos_BxLx1xK2 + x1 * sin_BxLx1xK2], axis=-1)
  return rotated.astype(x_BxLxHxK.dtype)


def attention_mask(segment_ids_BxL, positions_BxL, sliding_window: int | None = None,
                   prefix_BxL=None):
  """Boolean [B, 1, L, L] mask: causal by position, within one segment, never onto padding.

  Segment id 0 marks padding; packed sequences number their documents 1, 2, ... Causality is
  decided by position order within a row, so left-padded and packed rows are both right.
  `prefix_BxL` (bool) marks tokens of a bidirectional prefix: they also see the later prefix
  tokens of their segment (prefix-LM; all true: a bidirectional encoder).
  """
  return cached_attention_mask(segment_ids_BxL, positions_BxL, segment_ids_BxL, positions_BxL,
                               0, sliding_window, prefix_BxL)


def cached_attention_mask(q_segment_ids_BxL, q_positions_BxL, k_segment_ids_BxM,
                          k_positions_BxM, q_offset, sliding_window: int | None = None,
                          q_prefix_BxL=None):
  """Boolean [B, 1, L, M] mask of L queries occupying slots q_offset.. q_offset+L-1 of a row of
  M key slots (a KV cache; q_offset = 0 and M = L without one): a query sees the keys of its own
  segment in slots up to its own, never empty or padding slots (segment 0), and with a sliding
  window only keys fewer than `sliding_window` positions away.

  With `q_prefix_BxL`, a query in the bidirectional prefix also sees the prefix keys written in
  the same call (slots q_offset..): keys of earlier calls are before it and visible anyway, and
  keys of later calls cannot be seen by a query whose output is already computed, so a KV cache
  needs no record of which of its slots were prefix.
  """
  B, L = q_segment_ids_BxL.shape
  M = k_segment_ids_BxM.shape[1]
  q_slot_L = q_offset + jnp.arange(L)
  k_slot_M = jnp.arange(M)
  visible_BxLxM = (q_slot_L[:, None] >= k_slot_M[None, :])[None]
  if q_prefix_BxL is not None:
    q_prefix_BxL = q_prefix_BxL.astype(bool)
    k_prefix_BxM = jax.lax.dynamic_update_slice(jnp.zeros((B, M), bool), q_prefix_BxL,
                                                (0, q_offset))
    visible_BxLxM = visible_BxLxM | (q_prefix_BxL[:, :, None] & k_prefix_BxM[:, None, :])
  q_seg_BxLx1, k_seg_Bx1xM = q_segment_ids_BxL[:, :, None], k_segment_ids_BxM[:, None, :]
  mask_BxLxM = (q_seg_BxLx1 == k_seg_Bx1xM) & (k_seg_Bx1xM != 0) & visible_BxLxM
  if sliding_window is not None:
    distance_BxLxM = q_positions_BxL[:, :, None] - k_positions_BxM[:, None, :]
    mask_BxLxM &= distance_BxLxM < sliding_window
    if q_prefix_BxL is not None:  # prefix keys after the query: the window is symmetric
      mask_BxLxM &= -distance_BxLxM < sliding_window
  return mask_BxLxM[:, None]


def plain_causal_mask(length: int, sliding_window: int | None = None):
  """[L, L] mask of one document filling the row: `attention_mask` of segment ids all 1 and
  positions 0..L-1, i.e. what a kernel's built-in causal (and local-window) mask computes. Built
  from iotas, so a long sequence puts no L x L constant into the program."""
  query_Lx1 = jax.lax.broadcasted_iota(jnp.int32, (length, 1), 0)
  key_1xL = jax.lax.broadcasted_iota(jnp.int32, (1, length), 1)
  mask_LxL = query_Lx1 >= key_1xL
  if sliding_window is not None:  # fewer than `sliding_window` positions back
    mask_LxL &= query_Lx1 - key_1xL < sliding_window
  return mask_LxL


class Projection(nn.Module):
  """y = x . kernel + bias, contracting the trailing `contract_ndim` axes of x with the leading
  axes of a kernel whose every axis has a logical name (e.g. [D, H, K] -> ('embed', 'heads',
  'head_dim')).

  Computed as one 2-D matmul over flattened axes: XLA:CPU runs the backward pass of a 3-D
  einsum such as 'bli,io->blo' about 2x slower than the same product on [B*L, I] (measured).
  (flax's DenseGeneral initialises a flat kernel and reshapes it, which loses per-axis logical
  partitioning.)
  """

  config: ModelConfig
  kernel_shape: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  contract_ndim: int
  use_bias: bool

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    kernel = self.param("kernel", _init(cfg, self.kernel_axes), self.kernel_shape,
                        cfg.weight_dtype)
    n = self.contract_ndim
    batch_shape, in_shape = x.shape[:-n], x.shape[-n:]
    out_shape = self.kernel_shape[n:]
    y = (x.astype(cfg.compute_dtype).reshape(-1, math.prod(in_shape))
         @ kernel.astype(cfg.compute_dtype).reshape(math.prod(in_shape), math.prod(out_shape)))
    y = y.reshape(*batch_shape, *out_shape)
    if self.use_bias:
      bias = self.param("bias", _zeros(self.kernel_axes[n:]), out_shape, cfg.weight_dtype)
      y = y + bias.astype(cfg.compute_dtype)
    return y


class Attention(nn.Module):
  """Grouped-query self-attention (multi-head when n_kv_heads == n_heads)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxMxD, rope_BxM, mask_Bx1xLxC, deterministic: bool = True,
               folded_input=None, cache_index=None, causal: bool = True):
    """`rope_BxM`: the (sin, cos) pair of the M positions (`rope_sin_cos`); None without rotary
    positions. `causal`: the mask is causal by slot (no bidirectional prefix), which lets
    attention skip the key blocks after each query chunk.

    Queries are the last L of the M positions (L = M unless the mask has fewer rows): a
    model read out only at its last positions skips the other queries in its last layer.

    With `cache_index` (decoding), the keys and values of the M new positions are written into
    the 'cache' collection at slots cache_index.. and the queries attend over all C cache slots
    (the mask is [B, 1, L, C]); at initialisation the cache takes the input's shape [B, C, ...].

    `folded_input` = (token table [T, D], position table [P, D] or None, tokens [B, M],
    positions [B, M]) says that x is exactly table[tokens] + position_table[positions]. The
    projections are then applied to the tables and gathered, T + P rows instead of B * M: the
    same linear map, regrouped (Decoder passes it only when nothing lies between the embedding
    and the first projections).
    """
    cfg = self.config
    D, H, V, K = cfg.d_model, cfg.n_heads, cfg.num_kv_heads, cfg.head_dim
    B, M = x_BxMxD.shape[:2]
    L = mask_Bx1xLxC.shape[2]

    def project(name, heads, head_axis, x_BxNxD, last=None):
      dense = Projection(cfg, (D, heads, K), ("embed", head_axis, "head_dim"), 1,
                         cfg.qkv_bias, name=name)
      if folded_input is None:
        return dense(x_BxNxD)
      table_TxD, position_table_PxD, tokens_BxM, positions_BxM = folded_input
      rows = slice(-last, None) if last else slice(None)
      out = dense(table_TxD[None])[0][tokens_BxM[:, rows]]
      if position_table_PxD is not None:
        out = out + dense(position_table_PxD[None])[0][positions_BxM[:, rows]]
      return out

    q_BxLxHxK = project("query", H, "heads", x_BxMxD[:, -L:], last=L)
    k_BxMxVxK = project("key", V, "kv_heads", x_BxMxD)
    v_BxMxVxK = project("value", V, "kv_heads", x_BxMxD)
    if cfg.qk_norm:  # over all heads at once, as OLMo-2 does
      q_BxLxHxK = Norm(cfg, None, name="query_norm")(q_BxLxHxK.reshape(B, L, H * K)).reshape(
          B, L, H, K)
      k_BxMxVxK = Norm(cfg, None, name="key_norm")(k_BxMxVxK.reshape(B, M, V * K)).reshape(
          B, M, V, K)
    if cfg.clip_qkv is not None:
      q_BxLxHxK, k_BxMxVxK, v_BxMxVxK = (jnp.clip(t, -cfg.clip_qkv, cfg.clip_qkv)
                                         for t in (q_BxLxHxK, k_BxMxVxK, v_BxMxVxK))
    if rope_BxM is not None:
      q_BxLxHxK = apply_rope(q_BxLxHxK, tuple(t[:, -L:] for t in rope_BxM))
      k_BxMxVxK = apply_rope(k_BxMxVxK, rope_BxM)
    q_BxLxHxK = nn.with_logical_constraint(q_BxLxHxK, ("batch", "length", "heads", "head_dim"))

    if cache_index is not None:
      k_BxVxCxK, v_BxVxCxK = self._update_cache(k_BxMxVxK, v_BxMxVxK, cache_index)
      block = cfg.prefill_chunk
      if block and L > block and not self.is_mutable_collection(probe_collection("attn_probs")):
        out_BxLxHxK = _blocked_attention(q_BxLxHxK, k_BxVxCxK, v_BxVxCxK, mask_Bx1xLxC, block,
                                         cfg.compute_dtype)
      else:
        out_BxLxHxK = self._einsum_attention(q_BxLxHxK, k_BxVxCxK, v_BxVxCxK, mask_Bx1xLxC,
                                             deterministic, query_chunk=None)
    elif cfg.attention_impl == "dot_product":
      out_BxLxHxK = self._fused_attention(q_BxLxHxK, k_BxMxVxK, v_BxMxVxK, mask_Bx1xLxC, causal)
    else:
      out_BxLxHxK = self._einsum_attention(
          q_BxLxHxK, k_BxMxVxK.transpose(0, 2, 1, 3), v_BxMxVxK.transpose(0, 2, 1, 3),
          mask_Bx1xLxC, deterministic, (cfg.attention_chunk or None) if causal else None)
    return Projection(cfg, (H, K, D), ("heads", "head_dim", "embed"), 2, cfg.out_bias,
                      name="out")(out_BxLxHxK)

  def _update_cache(self, k_BxMxVxK, v_BxMxVxK, cache_index):
    """Writes the new keys/values at slots cache_index.. and returns the whole cache, stored
    heads-major ([B, V, C, K]): the layout attention reads, so a decode step never transposes
    (copies) the whole cache, only the new entries (measured: 11.2 -> 6.3 ms per step)."""
    k_BxVxMxK, v_BxVxMxK = k_BxMxVxK.transpose(0, 2, 1, 3), v_BxMxVxK.transpose(0, 2, 1, 3)
    # At init the input has the cache's full shape, so the variables are created with it.
    cached_k = self.variable("cache", "cached_key", jnp.zeros, k_BxVxMxK.shape, k_BxVxMxK.dtype)
    cached_v = self.variable("cache", "cached_value", jnp.zeros, v_BxVxMxK.shape,
                             v_BxVxMxK.dtype)
    if self.is_initializing():
      return k_BxVxMxK, v_BxVxMxK
    start = (0, 0, cache_index, 0)
    cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BxVxMxK, start)
    cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BxVxMxK, start)
    names = ("batch", "kv_heads", "length", "head_dim")
    return (nn.with_logical_constraint(cached_k.value, names),
            nn.with_logical_constraint(cached_v.value, names))

  def _fused_attention(self, q_BxLxHxK, k_BxMxVxK, v_BxMxVxK, mask_Bx1xLxM, causal: bool):
    """`jax.nn.dot_product_attention`: cuDNN flash attention on GPUs in bf16/fp16 (the dtypes
    it supports), XLA's implementation elsewhere (jax picks XLA unless told otherwise).

    A batch whose mask is exactly the causal one (one document per row, no padding: the usual
    pretraining batch) runs with the kernel's own causal mask, so cuDNN skips the masked blocks
    and reads no mask; any other batch passes the mask, which cuDNN applies as an additive
    [B, 1, L, M] bias (right, but slower). `lax.cond` decides per batch; both are compiled.

    The kernel returns no probabilities; the `attn_probs` probe computes them beside it, only
    when asked for.
    """
    cfg = self.config
    (L, M), K = mask_Bx1xLxM.shape[2:], q_BxLxHxK.shape[-1]
    if self.is_mutable_collection(probe_collection("attn_probs")):
      B, H, V = q_BxLxHxK.shape[0], q_BxLxHxK.shape[2], k_BxMxVxK.shape[2]
      q_BxVxGxLxK = (q_BxLxHxK.reshape(B, L, V, H // V, K) * (K ** -0.5)).transpose(0, 2, 3, 1, 4)
      logits_BxVxGxLxM = jnp.einsum("bvglk,bmvk->bvglm", q_BxVxGxLxK, k_BxMxVxK,
                                    preferred_element_type=jnp.float32)
      logits_BxVxGxLxM = jnp.where(mask_Bx1xLxM[:, :, None], logits_BxVxGxLxM, _NEG_INF)
      self.sow(probe_collection("attn_probs"), "attn_probs",
               jax.nn.softmax(logits_BxVxGxLxM, axis=-1).reshape(B, H, L, M))
    implementation = ("cudnn" if jax.default_backend() == "gpu"
                      and cfg.compute_dtype in (jnp.bfloat16, jnp.float16) else "xla")
    attend = functools.partial(jax.nn.dot_product_attention, q_BxLxHxK, k_BxMxVxK, v_BxMxVxK,
                               scale=K ** -0.5, implementation=implementation)
    masked = lambda: attend(mask=mask_Bx1xLxM)  # noqa: E731
    if L != M or not causal:  # not the kernel's causal layout
      return masked()
    window = cfg.sliding_window
    causal = lambda: attend(is_causal=True, local_window_size=(  # noqa: E731
        None if window is None else (window - 1, 0)))
    return jax.lax.cond(jnp.all(mask_Bx1xLxM == plain_causal_mask(L, window)), causal, masked)

  def _einsum_attention(self, q_BxLxHxK, k_BxVxMxK, v_BxVxMxK, mask_Bx1xLxM, deterministic,
                        query_chunk: int | None):
    """Softmax attention of the L queries, the last L of the M key slots.

    With `query_chunk`, queries go in chunks of that many rows and each chunk reads only the
    keys up to its last query's slot: the mask is causal by slot (`attention_mask`), so the
    skipped keys would get probability 0. With 2 chunks of 128 at L = 256 that is 3/4 of the
    matmul work, on [.., 128, M] tensors that stay in cache (measured, 2 CPU cores: attention
    forward + backward 61 -> 40 ms per layer, the train step of benchmarks/train_throughput.py
    ~10% faster). Fully masked (padding) query rows average the values of their chunk's keys
    instead of all keys: a don't-care output either way.
    """
    cfg = self.config
    (B, L, H, K), (V, M) = q_BxLxHxK.shape, k_BxVxMxK.shape[1:3]
    # Heads-major operands ([B, V, G, L, K]): XLA:CPU runs these batched matmuls 2x faster
    # than the same einsums over sequence-major operands (measured, L = 256).
    q_BxVxGxLxK = (q_BxLxHxK.reshape(B, L, V, H // V, K) * (K ** -0.5)).transpose(0, 2, 3, 1, 4)
    # Past 8 chunks the saving is small ((n+1)/2n of the work) and the graph keeps growing.
    chunk = max(query_chunk or L, -(-L // 8))
    outs, probs = [], []
    for start in range(0, L, chunk):
      stop = min(start + chunk, L)
      keys = M - L + stop  # slot of the chunk's last query, plus one
      logits_BxVxGxCxN = jnp.einsum("bvglk,bvmk->bvglm", q_BxVxGxLxK[:, :, :, start:stop],
                                    k_BxVxMxK[:, :, :keys], preferred_element_type=jnp.float32)
      logits_BxVxGxCxN = jnp.where(mask_Bx1xLxM[:, :, None, start:stop, :keys],
                                   logits_BxVxGxCxN, _NEG_INF)
      probs_BxVxGxCxN = jax.nn.softmax(logits_BxVxGxCxN, axis=-1)
      probs.append(probs_BxVxGxCxN)
      probs_BxVxGxCxN = nn.Dropout(cfg.dropout)(probs_BxVxGxCxN, deterministic=deterministic)
      outs.append(jnp.einsum("bvglm,bvmk->bvglk", probs_BxVxGxCxN.astype(cfg.compute_dtype),
                             v_BxVxMxK[:, :, :keys]))
    if self.is_mutable_collection(probe_collection("attn_probs")):  # the whole [B, H, L, M]
      padded = [jnp.pad(p, [(0, 0)] * 4 + [(0, M - p.shape[-1])]) for p in probs]
      self.sow(probe_collection("attn_probs"), "attn_probs",
               jnp.concatenate(padded, axis=3).reshape(B, H, L, M))
    out_BxVxGxLxK = jnp.concatenate(outs, axis=3) if len(outs) > 1 else outs[0]
    return out_BxVxGxLxK.transpose(0, 3, 1, 2, 4).reshape(B, L, H, K)


def _blocked_attention(q_BxLxHxK, k_BxVxMxK, v_BxVxMxK, mask_Bx1xLxM, block: int,
                       compute_dtype):
  """Softmax attention of L queries over M cached keys, `block` queries at a time (lax.map:
  one block's [B, H, block, M] logits live at once, and the program does not grow with L).
  Each query row's softmax is its own, so the result is the unblocked one. No dropout (only a
  prefill, which is deterministic, comes here)."""
  (B, L, H, K), (V, M) = q_BxLxHxK.shape, k_BxVxMxK.shape[1:3]
  n = -(-L // block)
  pad = n * block - L
  q_BxVxGxLxK = (q_BxLxHxK.reshape(B, L, V, H // V, K) * (K ** -0.5)).transpose(0, 2, 3, 1, 4)
  q_BxVxGxLxK = jnp.pad(q_BxVxGxLxK, [(0, 0)] * 3 + [(0, pad), (0, 0)])
  mask_Bx1xLxM = jnp.pad(mask_Bx1xLxM, [(0, 0), (0, 0), (0, pad), (0, 0)])
  q_nxBxVxGxQxK = q_BxVxGxLxK.reshape(B, V, H // V, n, block, K).transpose(3, 0, 1, 2, 4, 5)
  mask_nxBx1xQxM = mask_Bx1xLxM.reshape(B, 1, n, block, M).transpose(2, 0, 1, 3, 4)

  def attend(blocks):
    q_BxVxGxQxK, mask_Bx1xQxM = blocks
    logits_BxVxGxQxM = jnp.einsum("bvglk,bvmk->bvglm", q_BxVxGxQxK, k_BxVxMxK,
                                  preferred_element_type=jnp.float32)
    logits_BxVxGxQxM = jnp.where(mask_Bx1xQxM[:, :, None], logits_BxVxGxQxM, _NEG_INF)
    probs_BxVxGxQxM = jax.nn.softmax(logits_BxVxGxQxM, axis=-1)
    return jnp.einsum("bvglm,bvmk->bvglk", probs_BxVxGxQxM.astype(compute_dtype), v_BxVxMxK)

  out_nxBxVxGxQxK = jax.lax.map(attend, (q_nxBxVxGxQxK, mask_nxBx1xQxM))
  out_BxVxGxLxK = out_nxBxVxGxQxK.transpose(1, 2, 3, 0, 4, 5).reshape(
      B, V, H // V, n * block, K)[:, :, :, :L]
  return out_BxVxGxLxK.transpose(0, 3, 1, 2, 4).reshape(B, L, H, K)


_ACTIVATION_FNS = {
    "swiglu": jax.nn.silu, "silu": jax.nn.silu, "relu": jax.nn.relu,
    "geglu": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
}


class Mlp(nn.Module):
  """Position-wise feed-forward: gated (SwiGLU/GeGLU) or plain (ReLU/GELU)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD, deterministic: bool = True):
    cfg = self.config

    def dense(name, in_features, out_features, axes):
      return Projection(cfg, (in_features, out_features), axes, 1, cfg.mlp_bias, name=name)

    act = _ACTIVATION_FNS[cfg.activation]
    if cfg.gated:  # Llama convention: down(act(gate(x)) * up(x))
      h_BxLxF = (act(dense("gate", cfg.d_model, cfg.d_ff, ("embed", "mlp"))(x_BxLxD))
                 * dense("up", cfg.d_model, cfg.d_ff, ("embed", "mlp"))(x_BxLxD))
    else:
      h_BxLxF = act(dense("up", cfg.d_model, cfg.d_ff, ("embed", "mlp"))(x_BxLxD))
    h_BxLxF = nn.with_logical_constraint(h_BxLxF, ("batch", "length", "mlp"))
    # The FFN "memory coefficients" of knowledge-entropy probes: the input of the down projection.
    self.sow(probe_collection("ffn_hidden"), "ffn_hidden", h_BxLxF)
    h_BxLxF = nn.Dropout(cfg.dropout)(h_BxLxF, deterministic=deterministic)
    return dense("down", cfg.d_ff, cfg.d_model, ("mlp", "embed"))(h_BxLxF)
