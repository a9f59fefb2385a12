"""A tabular policy (one logit per output of a finite space) trained on the expected
preference loss of Bradley-Terry-labelled pairs: the population optimum of an objective,
without sampling noise or a network's inductive bias.

Shape letters: R runs trained side by side, N outputs.

Pairs (a, b) are drawn with a ~ pi_ref, b ~ pi_l and kept in that order with probability
s(reward(a) - reward(b)), else swapped (did.bradley_terry_pairs). The expected
loss sums, over every ordered (a, b),
    pi_ref(a) pi_l(b) [s(dr) loss(chosen a, rejected b) + s(-dr) loss(chosen b, rejected a)],
with `loss` a llmjax.train.preference.PreferenceLoss on log-probs that are sums over each
output's tokens (divided by its `length_N` tokens for the `averaged` losses).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from llmjax.train.preference import PreferenceLoss


@dataclasses.dataclass
class TabularRuns:
  """History of R runs: `steps` [S], JS to each run's target [R, S], chosen drift [R, S]
  (expected log pi(y_w) - log pi_ref(y_w) over the pairs' chosen outputs), policy entropy
  [R, S] in nats, and the final log-probs [R, N]."""

  steps: np.ndarray
  js: np.ndarray
  chosen_drift: np.ndarray
  entropy: np.ndarray
  final_logp: np.ndarray


def _js(logp, logq):
  logm = jnp.logaddexp(logp, logq) - jnp.log(2.0)
  js = 0.5 * jnp.sum(jnp.exp(logp) * (logp - logm)) + 0.5 * jnp.sum(jnp.exp(logq) * (logq - logm))
  return jnp.maximum(js, 0.0)  # float32 rounding can leave it a hair below 0


def _labelled_pairs(logp_ref_N, logp_rejected_N):
  """(keep_NxN, weight_NxN): the chance that pair (a ~ pi_ref, b ~ pi_l) keeps a as chosen,
  and the chance of drawing it, pi_ref(a) pi_l(b)."""
  reward = logp_ref_N - logp_rejected_N  # log q_{pi_ref/pi_l} up to a constant
  keep_NxN = jax.nn.sigmoid(reward[:, None] - reward[None, :])
  return keep_NxN, jnp.exp(logp_ref_N)[:, None] * jnp.exp(logp_rejected_N)[None, :]


def expected_loss(theta_N, logp_ref_N, logp_rejected_N, loss: PreferenceLoss, length_N):
  """The expected preference loss of a tabular policy with logits theta_N."""
  logp = jax.nn.log_softmax(theta_N)
  scale = 1.0 / length_N if loss.averaged else 1.0
  x, x_ref = logp * scale, logp_ref_N * scale
  keep_NxN, weight_NxN = _labelled_pairs(logp_ref_N, logp_rejected_N)
  kept, _, _ = loss(x[:, None], x[None, :], x_ref[:, None], x_ref[None, :])
  swapped, _, _ = loss(x[None, :], x[:, None], x_ref[None, :], x_ref[:, None])
  return jnp.sum(weight_NxN * (keep_NxN * kept + (1 - keep_NxN) * swapped))


def chosen_distribution(logp_ref_N, logp_rejected_N):
  """[N] probability that an output is the chosen one of a pair (it equals pi_ref)."""
  keep, weight = _labelled_pairs(logp_ref_N, logp_rejected_N)
  return (weight * keep).sum(1) + (weight * (1 - keep)).sum(0)


def train_tabular(logp_ref_RxN, logp_rejected_RxN, logp_target_RxN, loss: PreferenceLoss,
                  length_N, steps: int, lr: float, log_every: int) -> TabularRuns:
  """Adam on the expected loss from theta = log pi_ref, R runs at once (vmapped)."""
  optimizer = optax.adam(lr)
  refs, rejected, targets = (jnp.asarray(a, jnp.float32) for a in
                             (logp_ref_RxN, logp_rejected_RxN, logp_target_RxN))
  length_N = jnp.asarray(length_N, jnp.float32)
  chosen_RxN = jax.vmap(chosen_distribution)(refs, rejected)

  def readings(theta, ref, target, chosen):
    logp = jax.nn.log_softmax(theta)
    return (_js(logp, target), jnp.sum(chosen * (logp - ref)),
            -jnp.sum(jnp.exp(logp) * logp))

  def one_step(theta, opt_state, ref, rej):
    grads = jax.grad(expected_loss)(theta, ref, rej, loss, length_N)
    updates, opt_state = optimizer.update(grads, opt_state, theta)
    return optax.apply_updates(theta, updates), opt_state

  @jax.jit
  def segment(thetas, opt_states):
    def body(carry, _):
      thetas, opt_states = carry
      return jax.vmap(one_step)(thetas, opt_states, refs, rejected), None
    (thetas, opt_states), _ = jax.lax.scan(body, (thetas, opt_states), None, log_every)
    return thetas, opt_states, jax.vmap(readings)(thetas, refs, targets, chosen_RxN)

  thetas = refs
  opt_states = jax.vmap(optimizer.init)(thetas)
  history = [jax.vmap(readings)(thetas, refs, targets, chosen_RxN)]
  for _ in range(steps // log_every):
    thetas, opt_states, reading = segment(thetas, opt_states)
    history.append(reading)
  js, drift, ent = (np.stack([np.asarray(h[i]) for h in history], axis=1) for i in range(3))
  return TabularRuns(steps=np.arange(len(history)) * log_every, js=js, chosen_drift=drift,
                     entropy=ent, final_logp=np.asarray(jax.nn.log_softmax(thetas, axis=-1)))
