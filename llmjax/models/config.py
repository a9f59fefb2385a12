"""The decoder's hyper-parameters as a frozen, validated dataclass.

The same fields express Llama, Qwen2, Mistral, OLMo and GPT-2 style models and the tiny
"1 layer, no LayerNorm, ReLU" transformers of the grokking literature:

| family   | activation | norm                 | positions | biases            | tied |
| -------- | ---------- | -------------------- | --------- | ----------------- | ---- |
| Llama    | swiglu     | rmsnorm              | rope      | none              | no   |
| Qwen2    | swiglu     | rmsnorm              | rope      | qkv_bias          | opt. |
| Mistral  | swiglu     | rmsnorm              | rope      | none, sliding_window | no |
| OLMo     | swiglu     | layernorm_nonparam   | rope      | none              | opt. |
| GPT-2    | gelu       | layernorm            | learned   | qkv, out, mlp     | yes  |
| grokking | relu       | none                 | learned   | none              | no   |
"""

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from llmjax.errors import UserError

ACTIVATIONS = ("swiglu", "geglu", "gelu", "gelu_exact", "relu", "silu")
NORMS = ("rmsnorm", "layernorm", "layernorm_nonparam", "none")
POSITIONS = ("rope", "learned", "none")
NORM_POSITIONS = ("pre", "post")
ATTENTION_IMPLS = ("einsum", "dot_product")
REMAT = ("none", "full", "dots_saveable")
MASK_MODES = ("causal", "bidirectional", "prefix_lm")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of `llmjax.models.transformer.Decoder`."""

  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  d_ff: int
  n_kv_heads: int | None = None  # None: as many as n_heads (multi-head attention)
  d_head: int | None = None  # None: d_model // n_heads
  activation: str = "swiglu"
  norm: str = "rmsnorm"
  norm_eps: float = 1e-6
  positions: str = "rope"
  rope_theta: float = 10_000.0
  max_len: int = 2048  # size of the learned position table; unused by rope
  tie_embeddings: bool = False
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  sliding_window: int | None = None  # Mistral-style local attention span, in tokens
  # Llama 3 rope frequency scaling: (factor, low_freq_factor, high_freq_factor,
  # original_max_position_embeddings), as in Llama 3.1/3.2 checkpoints; None: plain rope.
  rope_llama3_scaling: tuple[float, float, float, int] | None = None
  clip_qkv: float | None = None  # OLMo: clamp q, k, v to [-clip_qkv, clip_qkv]
  # pre: x + f(norm(x)) (GPT-2, Llama); post: x + norm(f(x)) (OLMo-2, which also sets qk_norm).
  norm_position: str = "pre"
  qk_norm: bool = False  # RMS-normalise q and k over all heads before rope (OLMo-2)
  dropout: float = 0.0
  init_std: float = 0.02
  # einsum: explicit einsum + softmax (exposes attention probabilities to probes);
  # dot_product: jax.nn.dot_product_attention, cuDNN flash attention on GPUs in bf16/fp16 and
  # XLA's implementation elsewhere (no dropout on attention probabilities, no attn_probs probe).
  attention_impl: str = "einsum"
  # causal: a decoder; bidirectional: an encoder (every token sees its whole segment);
  # prefix_lm: bidirectional over a marked prefix, causal after it. A call can override it.
  mask_mode: str = "causal"
  # einsum attention without a KV cache: queries in chunks of this many positions (at most 8
  # chunks: longer sequences get longer chunks), each reading only the keys up to its last
  # position (causal block skipping); 0: one chunk.
  attention_chunk: int = 128
  # einsum attention with a KV cache (a prompt's prefill): queries longer than this go in blocks
  # of this many positions, one block at a time, so the [B, H, L, cache] logits of a long
  # prompt are never held whole (memory B*H*block*cache); 0: all at once.
  prefill_chunk: int = 512
  # Rematerialisation per layer: none (keep activations), full (recompute the layer in the
  # backward pass), dots_saveable (keep matmul outputs, recompute the rest).
  remat: str = "none"
  # One scanned layer instead of n_layers unrolled copies: compile time independent of depth.
  # Parameters then carry a leading 'layers' axis under params['layers'].
  scan_layers: bool = False
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.rope_llama3_scaling is not None:  # JSON and ConfigDicts hand it over as a list
      object.__setattr__(self, "rope_llama3_scaling", tuple(self.rope_llama3_scaling))
    def check(ok, what, expected):
      if not ok:
        raise UserError(f"model.{what} = {getattr(self, what)!r}: expected {expected}")

    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff"):
      check(isinstance(getattr(self, name), int) and getattr(self, name) > 0, name,
            "a positive integer")
    check(self.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}")
    check(self.norm in NORMS, "norm", f"one of {NORMS}")
    check(self.norm_position in NORM_POSITIONS, "norm_position", f"one of {NORM_POSITIONS}")
    check(self.rope_llama3_scaling is None or len(self.rope_llama3_scaling) == 4,
          "rope_llama3_scaling", "None or (factor, low_freq_factor, high_freq_factor, "
          "original_max_position_embeddings)")
    check(self.clip_qkv is None or self.clip_qkv > 0, "clip_qkv", "None or a positive number")
    check(self.positions in POSITIONS, "positions", f"one of {POSITIONS}")
    check(self.dtype in DTYPES, "dtype", f"one of {tuple(DTYPES)}")
    check(self.attention_impl in ATTENTION_IMPLS, "attention_impl", f"one of {ATTENTION_IMPLS}")
    check(self.attention_chunk >= 0, "attention_chunk", "0 (one chunk) or a positive integer")
    check(self.prefill_chunk >= 0, "prefill_chunk", "0 (all at once) or a positive integer")
    check(self.remat in REMAT, "remat", f"one of {REMAT}")
    check(self.mask_mode in MASK_MODES, "mask_mode", f"one of {MASK_MODES}")
    check(self.param_dtype in DTYPES, "param_dtype", f"one of {tuple(DTYPES)}")
    check(self.num_kv_heads > 0 and self.n_heads % self.num_kv_heads == 0, "n_kv_heads",
          f"a divisor of n_heads={self.n_heads}")
    check(self.d_head is not None or self.d_model % self.n_heads == 0, "d_head",
          f"set explicitly when d_model={self.d_model} is not a multiple of n_heads")
    check(0.0 <= self.dropout < 1.0, "dropout", "a rate in [0, 1)")
    check(self.positions != "rope" or self.head_dim % 2 == 0, "d_head", "even for rope")

  @property
  def num_kv_heads(self) -> int:
    return self.n_kv_heads or self.n_heads

  @property
  def head_dim(self) -> int:
    return self.d_head or self.d_model // self.n_heads

  @property
  def gated(self) -> bool:
    return self.activation in ("swiglu", "geglu")

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return DTYPES[self.param_dtype]

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
    """Builds from a ConfigDict or dict, naming any key that is not a model field."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(values)
    unknown = sorted(set(values) - fields)
    if unknown:
      raise UserError(f"model.{unknown[0]}: not a model field; expected one of {sorted(fields)}")
    return cls(**values)

  def num_params(self, include_embeddings: bool = True) -> int:
    """Exact parameter count of the decoder this config builds."""
    d, f, h, kv, k = self.d_model, self.d_ff, self.n_heads, self.num_kv_heads, self.head_dim
    attn = d * (h + 2 * kv) * k + h * k * d
    attn += (h + 2 * kv) * k * self.qkv_bias + d * self.out_bias
    mlp = d * f * (3 if self.gated else 2) + (f * (2 if self.gated else 1) + d) * self.mlp_bias
    norm_size = {"rmsnorm": d, "layernorm": 2 * d, "layernorm_nonparam": 0, "none": 0}[self.norm]
    attn += (h + kv) * k * self.qk_norm
    per_layer = attn + mlp + 2 * norm_size
    total = self.n_layers * per_layer + norm_size
    if include_embeddings:
      total += self.vocab_size * d * (1 if self.tie_embeddings else 2)
      total += self.max_len * d if self.positions == "learned" else 0
    return total

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token: 6 per matmul parameter plus causal attention (PaLM appendix B)."""
    # The embedding lookup is no matmul, the unembedding is one (tied or not).
    matmul_params = self.num_params(include_embeddings=False) + self.vocab_size * self.d_model
    attention = 12 * self.n_layers * self.n_heads * self.head_dim * seq_len  # QK^T, AV; fwd+bwd
    return 6.0 * matmul_params + attention
