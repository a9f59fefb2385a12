"""Sentence embeddings from a token LM, and a language model that reasons over them.

Shape letters: B batch, L length, D d_model, S sentence slots.

The sentence autoencoder is one Decoder used twice (its weights are shared, as in the paper's
released code):
  encode   a sentence's tokens (or, for a contextual embedding, the question and the steps
           before it) -> the final (normalised) hidden state at the last token, z [B, D];
  decode   z as a one-position prefix (an input vector in place of a token embedding), then
           the sentence's tokens: the logits predict the sentence and its EOS.
The latent model (`LatentModel`) is a Decoder that reads the question's tokens, then one
sentence embedding per step brought into its input space by a Linear-GELU-Linear projection, and
predicts the next step's embedding from each position through another one (plus a one-logit
stop head: "is the next sentence the answer?").
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from llmjax.models.config import ModelConfig
from llmjax.models.heads import MlpHead
from llmjax.models.transformer import Decoder


def last_hidden(hidden_BxLxD, lengths_B):
  """The hidden state at each row's last real token (rows right-padded): [B, D]."""
  index_B = jnp.maximum(lengths_B - 1, 0)
  return jnp.take_along_axis(hidden_BxLxD, index_B[:, None, None], axis=1)[:, 0]


def encode(decoder: Decoder, params, tokens_BxL, lengths_B):
  """Sentence embeddings: the final normalised hidden state at the last of each row's
  `lengths_B` tokens (right-padded rows). [B, L] -> [B, D]."""
  segments_BxL = (jnp.arange(tokens_BxL.shape[1])[None] < lengths_B[:, None]).astype(jnp.int32)
  hidden_BxLxD = decoder.apply({"params": params}, tokens_BxL, segment_ids_BxL=segments_BxL,
                               return_hidden=True)
  return last_hidden(hidden_BxLxD, lengths_B)


def prefix_logits(decoder: Decoder, params, z_BxD, inputs_BxL, segments_BxL=None,
                  deterministic: bool = True, rng=None):
  """Logits of the decoder that reads `z` at position 0 and `inputs_BxL[:, 1:]` after it
  (`inputs_BxL[:, 0]` is ignored): position i predicts the sentence's token i. [B, L, V]."""
  B, L = inputs_BxL.shape
  mask_BxL = jnp.zeros((B, L), jnp.int32).at[:, 0].set(1)
  vectors_BxLxD = jnp.broadcast_to(z_BxD[:, None, :], (B, L, z_BxD.shape[-1]))
  return decoder.apply({"params": params}, inputs_BxL, segment_ids_BxL=segments_BxL,
                       embeddings_BxLxD=vectors_BxLxD, embedding_mask_BxL=mask_BxL,
                       deterministic=deterministic,
                       rngs=None if rng is None else {"dropout": rng})


def _same_rows(x_BxD):
  """[B, B] True where two rows are equal (to float tolerance), from the Gram matrix (no
  [B, B, D] difference tensor)."""
  gram_BxB = x_BxD @ x_BxD.T
  sq_B = jnp.diagonal(gram_BxB)
  distance_BxB = sq_B[:, None] + sq_B[None, :] - 2.0 * gram_BxB
  return distance_BxB <= 1e-6 * (sq_B[:, None] + sq_B[None, :] + 1e-12)


def info_nce_sum(queries_BxD, keys_BxD, mask_B, temperature: float):
  """InfoNCE with in-batch negatives, summed over the valid rows: each query's positive is the
  key of its own row, its negatives the other valid rows' keys; cosine similarity / temperature.
  Two rows whose keys or whose queries are equal (the same sentence twice in a batch) are not
  negatives of each other (the released code counts them as negatives). Returns (loss sum,
  correct-retrieval count)."""
  q_BxD = queries_BxD / (jnp.linalg.norm(queries_BxD, axis=-1, keepdims=True) + 1e-6)
  k_BxD = keys_BxD / (jnp.linalg.norm(keys_BxD, axis=-1, keepdims=True) + 1e-6)
  logits_BxB = (q_BxD @ k_BxD.T) / temperature
  valid_B = mask_B.astype(bool)
  same_BxB = _same_rows(jax.lax.stop_gradient(keys_BxD)) | _same_rows(
      jax.lax.stop_gradient(queries_BxD))
  negative_BxB = valid_B[None, :] & ~same_BxB
  positive_B = jnp.diagonal(logits_BxB)
  masked_BxB = jnp.where(negative_BxB, logits_BxB, -jnp.inf)
  all_BxBp1 = jnp.concatenate([positive_B[:, None], masked_BxB], axis=1)
  loss_B = jax.nn.logsumexp(all_BxBp1, axis=1) - positive_B
  correct_B = positive_B >= jnp.max(masked_BxB, axis=1)
  return (jnp.sum(jnp.where(valid_B, loss_B, 0.0)),
          jnp.sum(jnp.where(valid_B, correct_B, False)))


class LatentModel(nn.Module):
  """The sentence-level reasoner.

  `__call__(tokens_BxL, vectors_BxLxD, vector_mask_BxL, **decoder_kwargs)`: token inputs (the
  question), vector inputs (sentence embeddings, through `in_proj`), or both, the positions
  where `vector_mask` is 1 then taking the vectors; returns (predicted next embeddings
  [B, L, D], stop logits [B, L]). Decoder arguments (positions, segment ids, decode,
  last_positions) pass through, so a KV-cached rollout prefills the question's tokens and then
  feeds one vector per step. Initialise with all three inputs (every projection's params).
  """

  config: ModelConfig
  input_dropout: float = 0.0

  def setup(self):
    cfg = self.config
    self.decoder = Decoder(cfg)  # under 'decoder' (llmjax.models.layout.DECODER_KEY)
    self.in_proj = MlpHead(cfg, cfg.d_model, cfg.d_model)
    self.out_proj = MlpHead(cfg, cfg.d_model, cfg.d_model)
    self.stop_head = MlpHead(cfg, 1, 0)
    self.dropout = nn.Dropout(self.input_dropout)

  def __call__(self, tokens_BxL=None, vectors_BxLxD=None, vector_mask_BxL=None,
               deterministic: bool = True, **decoder_kwargs):
    x_BxLxD = None
    if vectors_BxLxD is not None:
      x_BxLxD = self.dropout(self.in_proj(vectors_BxLxD), deterministic=deterministic)
    both = tokens_BxL is not None and x_BxLxD is not None
    hidden_BxLxD = self.decoder(tokens_BxL, embeddings_BxLxD=x_BxLxD,
                                embedding_mask_BxL=vector_mask_BxL if both else None,
                                return_hidden=True, deterministic=deterministic,
                                **decoder_kwargs)
    return self.out_proj(hidden_BxLxD), self.stop_head(hidden_BxLxD)[..., 0]

  def project_out(self, hidden_BxLxD):
    """The output projection alone (SentenceLens reads intermediate layers through it)."""
    return self.out_proj(hidden_BxLxD)
