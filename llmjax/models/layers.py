"""Building blocks of the decoder: norms, rotary positions, attention, MLP.

Shape letters: B batch, L query length, M key length, D d_model, H query heads, G query heads per
kv head, V kv heads, K head dim, F d_ff.

Every parameter carries logical axis names (embed, vocab, heads, kv_heads, head_dim, mlp); the
mesh rules in the config decide where each lands. Probes read intermediates through `sow`, which
is a no-op unless the caller makes the 'intermediates' collection mutable.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from llmjax.models.config import ModelConfig

_NEG_INF = -1e30  # finite, so fully masked rows (padding queries) softmax to uniform, not NaN


def _init(config: ModelConfig, axes: tuple[str, ...], std: float | None = None):
  return nn.with_logical_partitioning(
      nn.initializers.normal(stddev=std or config.init_std), axes)


def _zeros(axes: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


class Norm(nn.Module):
  """RMSNorm, LayerNorm (with or without its affine parameters) or identity, computed in f32."""

  config: ModelConfig

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
    if kind in ("rmsnorm", "layernorm"):
      ones = nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",))
      y = y * self.param("scale", ones, (x.shape[-1],), self.config.weight_dtype)
    if kind == "layernorm":
      y = y + self.param("bias", _zeros(("embed",)), (x.shape[-1],), self.config.weight_dtype)
    return y.astype(self.config.compute_dtype)


def apply_rope(x_BxLxHxK, positions_BxL, theta: float):
  """Rotary embedding in the rotate-half layout used by Llama-family checkpoints."""
  half = x_BxLxHxK.shape[-1] // 2
  inv_freq_K2 = 1.0 / theta ** (jnp.arange(half, dtype=jnp.float32) / half)
  angles_BxLxK2 = positions_BxL[..., None].astype(jnp.float32) * inv_freq_K2
  sin_BxLx1xK2 = jnp.sin(angles_BxLxK2)[:, :, None, :]
  cos_BxLx1xK2 = jnp.cos(angles_BxLxK2)[:, :, None, :]
  x = x_BxLxHxK.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:]
  rotated = jnp.concatenate([x1 * cos_BxLx1xK2 - x2 * sin_BxLx1xK2,
                             x2 * cos_BxLx1xK2 + x1 * sin_BxLx1xK2], axis=-1)
  return rotated.astype(x_BxLxHxK.dtype)


def attention_mask(segment_ids_BxL, positions_BxL, sliding_window: int | None = None):
  """Boolean [B, 1, L, L] mask: causal by position, within one segment, never onto padding.

  Segment id 0 marks padding; packed sequences number their documents 1, 2, ... Causality is
  decided by position order within a row, so left-padded and packed rows are both right.
  """
  q_seg_BxLx1, k_seg_Bx1xM = segment_ids_BxL[:, :, None], segment_ids_BxL[:, None, :]
  idx = jnp.arange(segment_ids_BxL.shape[1])
  causal_LxM = idx[:, None] >= idx[None, :]
  mask_BxLxM = (q_seg_BxLx1 == k_seg_Bx1xM) & (k_seg_Bx1xM != 0) & causal_LxM
  if sliding_window is not None:
    distance_BxLxM = positions_BxL[:, :, None] - positions_BxL[:, None, :]
    mask_BxLxM &= distance_BxLxM < sliding_window
  return mask_BxLxM[:, None]


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
  def __call__(self, x_BxMxD, positions_BxM, mask_Bx1xLxM, deterministic: bool = True,
               folded_input=None):
    """Queries are the last L of the M positions (L = M unless the mask has fewer rows): a
    model read out only at its last positions skips the other queries in its last layer.

    `folded_input` = (token table [T, D], position table [P, D] or None, tokens [B, M],
    positions [B, M]) says that x is exactly table[tokens] + position_table[positions]. The
    projections are then applied to the tables and gathered, T + P rows instead of B * M: the
    same linear map, regrouped (Decoder passes it only when nothing lies between the embedding
    and the first projections).
    """
    cfg = self.config
    D, H, V, K = cfg.d_model, cfg.n_heads, cfg.num_kv_heads, cfg.head_dim
    L = mask_Bx1xLxM.shape[2]

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
    if cfg.positions == "rope":
      q_BxLxHxK = apply_rope(q_BxLxHxK, positions_BxM[:, -L:], cfg.rope_theta)
      k_BxMxVxK = apply_rope(k_BxMxVxK, positions_BxM, cfg.rope_theta)
    q_BxLxHxK = nn.with_logical_constraint(q_BxLxHxK, ("batch", "length", "heads", "head_dim"))

    if cfg.attention_impl == "dot_product":
      out_BxLxHxK = jax.nn.dot_product_attention(
          q_BxLxHxK, k_BxMxVxK, v_BxMxVxK, mask=mask_Bx1xLxM, scale=K ** -0.5)
    else:
      out_BxLxHxK = self._einsum_attention(q_BxLxHxK, k_BxMxVxK, v_BxMxVxK, mask_Bx1xLxM,
                                           deterministic)
    return Projection(cfg, (H, K, D), ("heads", "head_dim", "embed"), 2, cfg.out_bias,
                      name="out")(out_BxLxHxK)

  def _einsum_attention(self, q_BxLxHxK, k_BxMxVxK, v_BxMxVxK, mask_Bx1xLxM, deterministic):
    cfg = self.config
    (B, L, H, K), V = q_BxLxHxK.shape, k_BxMxVxK.shape[2]
    # Heads-major operands ([B, V, G, L, K]): XLA:CPU runs these batched matmuls 2x faster
    # than the same einsums over sequence-major operands (measured, L = 256).
    q_BxVxGxLxK = (q_BxLxHxK.reshape(B, L, V, H // V, K) * (K ** -0.5)).transpose(0, 2, 3, 1, 4)
    k_BxVxMxK = k_BxMxVxK.transpose(0, 2, 1, 3)
    v_BxVxMxK = v_BxMxVxK.transpose(0, 2, 1, 3)
    logits_BxVxGxLxM = jnp.einsum("bvglk,bvmk->bvglm", q_BxVxGxLxK, k_BxVxMxK,
                                  preferred_element_type=jnp.float32)
    logits_BxVxGxLxM = jnp.where(mask_Bx1xLxM[:, :, None], logits_BxVxGxLxM, _NEG_INF)
    probs_BxVxGxLxM = jax.nn.softmax(logits_BxVxGxLxM, axis=-1)
    self.sow("intermediates", "attn_probs", probs_BxVxGxLxM.reshape(B, H, L, -1))
    probs_BxVxGxLxM = nn.Dropout(cfg.dropout)(probs_BxVxGxLxM, deterministic=deterministic)
    out_BxVxGxLxK = jnp.einsum("bvglm,bvmk->bvglk", probs_BxVxGxLxM.astype(cfg.compute_dtype),
                               v_BxVxMxK)
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
    self.sow("intermediates", "ffn_hidden", h_BxLxF)
    h_BxLxF = nn.Dropout(cfg.dropout)(h_BxLxF, deterministic=deterministic)
    return dense("down", cfg.d_ff, cfg.d_model, ("mlp", "embed"))(h_BxLxF)
