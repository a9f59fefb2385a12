"""SentenceLens: read a latent sentence-level model's intermediate "thoughts" as text.

At each latent step, each layer's output at the predicting position is mapped through the
model's output projection (latent -> the decoder's one-vector prefix) and greedily decoded by
the frozen decoder. The last layer's reading goes through the final norm, as the model's own
prediction does; earlier layers are read raw, as the paper's lens reads them.
"""

import jax.numpy as jnp
import numpy as np

from llmjax.experiments.sentence_lm.model import LatentModel
from llmjax.models.transformer import apply_with_probes


def layer_thoughts(runner, latent_params, teacher_params, problem, embeddings,
                   max_tokens: int = 50) -> list[list[str]]:
  """Per latent step t (predicting sentence t + 1 from the question and the fed-back
  embeddings before it), the decoded thought of each layer: [steps][layers] strings.

  Args:
    runner: the experiment's LatentRunner (its latent model, decoder and tokenizer).
    problem: the Tokenized problem; `embeddings`: [k, D] the rollout's predicted embeddings
      (the first k - 1 are fed back, as in the continuous rollout).
  """
  model: LatentModel = runner.latent
  k, D = embeddings.shape
  n_q = len(problem.question)
  L = n_q + k - 1
  tokens = np.zeros((1, L), np.int32)
  tokens[0, :n_q] = problem.question
  vectors = np.zeros((1, L, D), np.float32)
  vectors[0, n_q:] = embeddings[:k - 1]
  mask = np.zeros((1, L), np.int32)
  mask[0, n_q:] = 1
  (pred_1xLxD, _), probes = apply_with_probes(model, latent_params, tokens, vectors, mask,
                                              probes=("residual",))
  at = np.arange(n_q - 1, n_q - 1 + k)
  residual_NxkxD = probes["residual"][:-1, 0, at]
  raw_NxkxD = model.apply({"params": latent_params}, residual_NxkxD,
                          method=LatentModel.project_out)
  readings_NxkxD = jnp.concatenate([raw_NxkxD, pred_1xLxD[:, at]], axis=0)
  N = readings_NxkxD.shape[0]
  tokens_out, lengths = runner.prefix(teacher_params, readings_NxkxD.reshape(N * k, D),
                                      max_tokens)
  tokens_out, lengths = np.asarray(tokens_out), np.asarray(lengths)
  texts = [runner.tokenizer.decode(tokens_out[i, :lengths[i]].tolist()).strip()
           for i in range(N * k)]
  return [[texts[layer * k + t] for layer in range(N)] for t in range(k)]
