"""Analytic inference FLOPs of the Decoder with a KV cache (a multiply-add counts 2).

A forward pass of `new` tokens appended to `context` cached ones costs
  2 x (matmul weights per layer x layers) x new               Q, K, V, O and MLP projections
  + 4 x layers x heads x head_dim x new x (context + new)     scores QK^T and mixing AV, over
                                                              every key the new tokens see as a
                                                              dense block (a prefill computes
                                                              the whole [new, new] block, as
                                                              the compiled einsum does)
  + 2 x d_model x vocab x (positions whose logits are read)   the unembedding
Embedding lookups, norms, activations and softmax are not counted (elementwise work, a few
percent at most; tests/test_sentence_lm.py checks the total against XLA's cost analysis of the
compiled calls). Generation reads one position's logits per new token.
"""

from llmjax.models.config import ModelConfig


def matmul_weights_per_layer(config: ModelConfig) -> int:
  """Weights of one layer's matrix multiplications (attention projections and MLP)."""
  d, h, kv, k, f = (config.d_model, config.n_heads, config.num_kv_heads, config.head_dim,
                    config.d_ff)
  return d * (h + 2 * kv) * k + h * k * d + d * f * (3 if config.gated else 2)


def forward_flops(config: ModelConfig, new: int, context: int = 0, logits: int = 0,
                  outputs: int | None = None) -> float:
  """FLOPs of `new` tokens through the decoder after `context` cached ones, reading the logits
  of `logits` positions (module docstring). `outputs`: how many of the last positions' final
  hidden states are used (default all `new`); with fewer, the last layer computes keys and
  values for every new token (the cache needs them) but queries, attention, output projection
  and MLP only for those positions, as the Decoder does with `last_positions`."""
  if new <= 0:
    return 0.0
  outputs = new if outputs is None else outputs
  d, h, kv, k = config.d_model, config.n_heads, config.num_kv_heads, config.head_dim
  keys_values = 2.0 * d * 2 * kv * k
  rest = 2.0 * (matmul_weights_per_layer(config) - d * 2 * kv * k)  # Q, O, MLP
  per_query = 4.0 * h * k * (context + new)  # QK^T and AV against every visible key
  full_layers = config.n_layers - 1
  total = full_layers * new * (keys_values + rest + per_query)
  total += new * keys_values + outputs * (rest + per_query)
  return total + 2.0 * d * config.vocab_size * logits


def generation_flops(config: ModelConfig, prompt: int, generated: int) -> float:
  """FLOPs of greedy generation with a KV cache: the prompt's prefill (the last position's
  logits give the first token), then one cached step per further token (the last generated
  token is never fed back)."""
  if generated <= 0:
    return 0.0
  total = forward_flops(config, prompt, 0, 1, outputs=1)
  for i in range(1, generated):
    total += forward_flops(config, 1, prompt + i - 1, 1)
  return total


def mlp_head_flops(in_features: int, hidden: int, out_features: int, positions: int) -> float:
  """FLOPs of an MlpHead (Linear -> GELU -> Linear, or one Linear with hidden 0)."""
  if hidden:
    return 2.0 * positions * (in_features * hidden + hidden * out_features)
  return 2.0 * positions * in_features * out_features


def xla_flops(compiled) -> float:
  """The FLOPs XLA's cost analysis reports for a compiled (jit(...).lower(...).compile())
  computation."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per device program
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0))
