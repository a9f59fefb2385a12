"""A BERT encoder on the engine's layers: what sentence-transformers checkpoints such as
all-MiniLM-L6-v2 compute.

Shape letters: B batch, L length, D d_model, T token types.

BERT differs from the decoder in three places, all kept here and nowhere else: the input is the
sum of word, absolute position and token-type embeddings, layer-normalised; each block is
post-norm around the residual (x = LN(x + attn(x)), then x = LN(x + mlp(x)), where the
decoder's post-norm variant normalises the branch alone); and attention is bidirectional over
the tokens of the row (padding masked out). Attention, the MLP, the norms and the projections
are the engine's (llmjax.models.layers), with `ModelConfig.norm = 'layernorm'`,
`activation = 'gelu_exact'` and biases everywhere.
"""

import flax.linen as nn
import jax.numpy as jnp

from llmjax.models.config import ModelConfig
from llmjax.models.layers import Attention, Mlp, Norm, _init


class BertLayer(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD, mask_Bx1xLxL):
    cfg = self.config
    h_BxLxD = Attention(cfg, name="attn")(x_BxLxD, None, mask_Bx1xLxL, causal=False)
    x_BxLxD = Norm(cfg, name="attn_norm")(x_BxLxD + h_BxLxD)
    h_BxLxD = Mlp(cfg, name="mlp")(x_BxLxD)
    return Norm(cfg, name="mlp_norm")(x_BxLxD + h_BxLxD)


class BertEncoder(nn.Module):
  """Token ids in, contextual hidden states out.

  Args (of `__call__`):
    tokens_BxL: int token ids.
    valid_BxL: 1 on real tokens, 0 on padding (which no token attends to).
    token_types_BxL: segment ids of sentence pairs (default all 0).
  Returns:
    hidden_BxLxD in the compute dtype.
  """

  config: ModelConfig
  type_vocab_size: int = 2

  @nn.compact
  def __call__(self, tokens_BxL, valid_BxL, token_types_BxL=None):
    cfg = self.config
    B, L = tokens_BxL.shape
    if token_types_BxL is None:
      token_types_BxL = jnp.zeros_like(tokens_BxL)

    def table(name, rows):
      return self.param(name, _init(cfg, ("vocab", "embed")), (rows, cfg.d_model),
                        cfg.weight_dtype)

    x_BxLxD = (table("word_embeddings", cfg.vocab_size)[tokens_BxL]
               + table("position_embeddings", cfg.max_len)[jnp.arange(L)][None]
               + table("token_type_embeddings", self.type_vocab_size)[token_types_BxL])
    x_BxLxD = Norm(cfg, name="embed_norm")(x_BxLxD.astype(cfg.compute_dtype))
    valid_BxL = valid_BxL.astype(bool)
    mask_Bx1xLxL = valid_BxL[:, None, None, :] & jnp.ones((B, 1, L, 1), bool)
    for i in range(cfg.n_layers):
      x_BxLxD = BertLayer(cfg, name=f"layer_{i}")(x_BxLxD, mask_Bx1xLxL)
    return x_BxLxD
