"""Symmetry violation: how far a model's answers are from respecting its task's symmetries.

Shape letters: N rows of the task table, A answer values, M sampled instances.

Each identity of a task says that two computation paths must give the same answer; the
violation of one instance is the symmetric KL divergence SKL(p, q) = KL(p||q) + KL(q||p) between
the answer distributions the model gives along the two paths. Kinds of identity
(`Task.symmetry[name] = (kind, *arrays)`):

  pair       (left_rows, right_rows)        P(.|left) against P(.|right), e.g. commutativity
                                            P(.|x, y) vs P(.|y, x)
  compose    (row_of, x, y, z)              sum_a P(a|x,y) P(.|a,z) against sum_b P(b|y,z) P(.|x,b):
                                            associativity, the model composed with itself
  half       (row_of, x, y, z, rows)        sum_a P(a|x,y) P(.|a,z) against P(.|rows)
  triangle   (ab_rows, bc_rows, ac_rows)    the convolution P(d_ab) * P(d_bc) against P(d_ac)
  transitive (ab, bc, ac, true, false)      Bradley-Terry: sigma(l_ab + l_bc) against sigma(l_ac),
                                            l = log-odds of 'true'

All functions are pure jnp, so the same measure is the diagnostic (mean and max over instances)
and, summed into the loss, the "symmetry prompting" regulariser.
"""

import jax
import jax.numpy as jnp
import numpy as np

_EPS = 1e-6  # floor on probabilities, so SKL stays finite where a path gives an answer zero mass


def symmetric_kl(p_MxA, q_MxA):
  """SKL between rows of two probability tables."""
  p = (p_MxA + _EPS) / (1.0 + _EPS * p_MxA.shape[-1])
  q = (q_MxA + _EPS) / (1.0 + _EPS * q_MxA.shape[-1])
  return jnp.sum((p - q) * (jnp.log(p) - jnp.log(q)), axis=-1)


def answer_distribution(logits_NxV, answer_tokens):
  """Softmax restricted to the task's answer tokens: P(answer | input), [N, A]."""
  return jax.nn.softmax(logits_NxV[:, answer_tokens].astype(jnp.float32), axis=-1)


def _compose(probs_NxA, row_of, x, y, z):
  """sum_a P(a | x, y) P(. | a, z): the model applied to its own answer, [M, A]."""
  first_MxA = probs_NxA[row_of[x, y]]
  second_AxMxA = probs_NxA[row_of[:, z]]  # answer value a is also operand token a
  return jnp.einsum("ma,amr->mr", first_MxA, second_AxMxA)


def _convolve(p_MxA, q_MxA):
  """Distribution of the sum of two independent distances, truncated to A values."""
  A = p_MxA.shape[-1]
  full = jax.vmap(lambda p, q: jnp.convolve(p, q, mode="full"))(p_MxA, q_MxA)  # [M, 2A-1]
  return full[:, :A]


def instance_violations(logits_NxV, task) -> dict[str, jax.Array]:
  """{identity name: per-instance SKL [M]} for every identity of `task`."""
  answers = jnp.asarray(task.answer_tokens)
  probs_NxA = answer_distribution(logits_NxV, answers)
  out = {}
  for name, (kind, *arrays) in task.symmetry.items():
    arrays = [jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in arrays]
    if kind == "pair":
      left, right = arrays
      out[name] = symmetric_kl(probs_NxA[left], probs_NxA[right])
    elif kind == "compose":
      row_of, x, y, z = arrays
      left = _compose(probs_NxA, row_of, x, y, z)
      right = jnp.einsum("mb,mbr->mr", probs_NxA[row_of[y, z]], probs_NxA[row_of[x]])
      out[name] = symmetric_kl(left, right)
    elif kind == "half":
      row_of, x, y, z, rows = arrays
      out[name] = symmetric_kl(_compose(probs_NxA, row_of, x, y, z), probs_NxA[rows])
    elif kind == "triangle":
      ab, bc, ac = arrays
      out[name] = symmetric_kl(_convolve(probs_NxA[ab], probs_NxA[bc]), probs_NxA[ac])
    elif kind == "transitive":
      ab, bc, ac, true_token, false_token = arrays
      log_odds_N = (logits_NxV[:, true_token] - logits_NxV[:, false_token]).astype(jnp.float32)
      bernoulli = lambda z: jnp.stack([jax.nn.sigmoid(z), jax.nn.sigmoid(-z)], -1)  # noqa: E731
      out[name] = symmetric_kl(bernoulli(log_odds_N[ab] + log_odds_N[bc]),
                               bernoulli(log_odds_N[ac]))
    else:
      raise ValueError(f"unknown identity kind {kind!r}")
  return out


def violation_summary(logits_NxV, task) -> dict[str, jax.Array]:
  """Mean and max violation per identity, and 'violation' = the mean over identities' means."""
  per_instance = instance_violations(logits_NxV, task)
  summary = {}
  for name, values in per_instance.items():
    summary[f"violation_{name}"] = values.mean()
    summary[f"violation_{name}_max"] = values.max()
  summary["violation"] = _mean_over_identities(per_instance)
  return summary


def violation_loss(logits_NxV, task):
  """The symmetry-prompting regulariser: mean violation over identities (differentiable)."""
  return _mean_over_identities(instance_violations(logits_NxV, task))


def _mean_over_identities(per_instance: dict[str, jax.Array]) -> jax.Array:
  return jnp.mean(jnp.stack([v.mean() for v in per_instance.values()]))
