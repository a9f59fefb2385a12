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
  triangle   (ab_rows, bc_rows, ac_rows)    the convolution P(d_ab) * P(d_bc), truncated to
                                            the answer range and renormalised, against P(d_ac)
  transitive (ab, bc, ac, true, false)      Bradley-Terry: sigma(l_ab + l_bc) against sigma(l_ac),
                                            l = log-odds of 'true'

Invariances and compositions. A `pair` identity is an *invariance* of the task: a transformation
of the input that leaves the answer unchanged (x+y = y+x, d(u, v) = d(v, u), a < b iff b > a), so
it compares the model's answers on two inputs and can hold while those answers are still wrong
(both orders giving the same wrong sum). For (x+y)^2 and (x+y)^3 the identity named
associativity, f(x+y, z) = f(x, y+z), is of this kind too. The other kinds *compose* the
model's answers (associativity of x+y feeds one answer into the next step; the triangle and
transitivity combine two answers): a model whose wrong answers happen to compose consistently
would satisfy them, but in our grokking runs their worst instance waited for the last wrong
test answer. `violation_summary` reports both groups.

All functions are pure jnp, so the same measure is the diagnostic (mean and max over instances)
and, summed into the loss, the "symmetry prompting" regulariser. The regulariser can be held to
a set of inputs (`row_mask_N`): an instance then counts only when every input it reads is in
the set (`instance_rows` lists them), so with the training inputs as the set no test input's
answer enters the loss, not even as the swap partner of a training input.
"""

import jax
import jax.numpy as jnp
import numpy as np

_EPS = 1e-6  # floor on probabilities, so SKL stays finite where a path gives an answer zero mass


INVARIANCE_KINDS = ("pair",)


def invariance_names(task) -> list[str]:
  """The task's invariance identities (module docstring), in table order."""
  return [name for name, (kind, *_) in task.symmetry.items() if kind in INVARIANCE_KINDS]


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
  """Distribution of the sum of two independent distances, truncated to the A representable
  values and renormalised (the mass of sums >= A would otherwise leave it short of 1)."""
  A = p_MxA.shape[-1]
  full = jax.vmap(lambda p, q: jnp.convolve(p, q, mode="full"))(p_MxA, q_MxA)  # [M, 2A-1]
  kept = full[:, :A]
  return kept / jnp.maximum(kept.sum(-1, keepdims=True), 1e-30)


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


def instance_rows(task) -> dict[str, np.ndarray]:
  """{identity name: [M, R] the table rows each instance reads} (R depends on the kind: 2 for a
  pair, 3 for a triangle or a transitive chain, 2 + 2A for a composition, which sums over every
  answer value; -1 marks a slot that is not a valid input)."""
  out = {}
  for name, (kind, *arrays) in task.symmetry.items():
    if kind == "pair":
      out[name] = np.stack(arrays, axis=1)
    elif kind in ("triangle", "transitive"):
      out[name] = np.stack(arrays[:3], axis=1)
    elif kind == "compose":
      row_of, x, y, z = arrays
      out[name] = np.concatenate([row_of[x, y][:, None], row_of[y, z][:, None],
                                  row_of[:, z].T, row_of[x]], axis=1)
    elif kind == "half":
      row_of, x, y, z, rows = arrays
      out[name] = np.concatenate([row_of[x, y][:, None], rows[:, None], row_of[:, z].T], axis=1)
    else:
      raise ValueError(f"unknown identity kind {kind!r}")
  return out


def instance_masks(task, row_mask_N) -> dict[str, jax.Array]:
  """{identity name: [M] 1.0 where every row the instance reads has row_mask_N = 1}."""
  mask = jnp.concatenate([jnp.asarray(row_mask_N, jnp.float32), jnp.zeros((1,), jnp.float32)])
  out = {}
  for name, rows_MxR in instance_rows(task).items():
    rows = np.where(rows_MxR >= 0, rows_MxR, len(task.targets_N))  # -1 -> the appended 0
    out[name] = jnp.min(mask[rows], axis=1)
  return out


def violation_summary(logits_NxV, task, row_mask_N=None) -> dict[str, jax.Array]:
  """The diagnostic's statistics, from one pass over the instances:

    violation_<name>, violation_<name>_max   mean and max over one identity's instances
    violation, violation_max                 every identity: the mean of the identities'
                                             means; the largest instance violation of any
    violation_invariance, violation_invariance_max   the same over the invariances only
                                             (the `pair` identities, module docstring)
  With `row_mask_N` (e.g. the training inputs), also `violation_train`, `violation_max_train`
  and `violation_invariance_train`, `violation_invariance_max_train`: the same statistics
  counting only the instances all of whose rows are masked in."""
  per_instance = instance_violations(logits_NxV, task)
  summary = {}
  for name, values in per_instance.items():
    summary[f"violation_{name}"] = values.mean()
    summary[f"violation_{name}_max"] = values.max()
  summary["violation"] = _mean_over_identities(per_instance)
  summary["violation_max"] = jnp.max(jnp.stack([v.max() for v in per_instance.values()]))
  invariances = {n: per_instance[n] for n in invariance_names(task)}
  if invariances:
    summary["violation_invariance"] = _mean_over_identities(invariances)
    summary["violation_invariance_max"] = jnp.max(
        jnp.stack([v.max() for v in invariances.values()]))
  if row_mask_N is not None:
    masks = instance_masks(task, row_mask_N)
    for group, values in (("", per_instance), ("_invariance", invariances)):
      if values:
        summary[f"violation{group}_train"] = _mean_over_identities(values, masks)
        summary[f"violation{group}_max_train"] = jnp.max(jnp.stack(
            [jnp.max(jnp.where(masks[n] > 0, v, 0.0)) for n, v in values.items()]))
  return summary


def violation_loss(logits_NxV, task, row_mask_N=None):
  """The symmetry-prompting regulariser: mean violation over identities (differentiable).

  With `row_mask_N` (1 for the inputs the loss may read, e.g. the training inputs), each
  identity averages only its instances whose rows are all masked in, and identities left with
  no instance drop out of the mean; nothing outside the mask affects the value or its gradient.
  """
  per_instance = instance_violations(logits_NxV, task)
  masks = None if row_mask_N is None else instance_masks(task, row_mask_N)
  return _mean_over_identities(per_instance, masks)


def _mean_over_identities(per_instance: dict[str, jax.Array], masks=None) -> jax.Array:
  if masks is None:
    return jnp.mean(jnp.stack([v.mean() for v in per_instance.values()]))
  means, present = [], []
  for name, values in per_instance.items():
    count = masks[name].sum()
    # where(), not a product: a masked-out instance may hold inf/nan from unread logits.
    means.append(jnp.where(masks[name] > 0, values, 0.0).sum() / jnp.maximum(count, 1.0))
    present.append((count > 0).astype(jnp.float32))
  present = jnp.stack(present)
  return (jnp.stack(means) * present).sum() / jnp.maximum(present.sum(), 1.0)
