"""Pairwise preference losses: pure functions of per-sequence log-prob sums.

Shape letters: B pairs.

Notation (TRL's where it has one): for a pair (y_w chosen, y_l rejected) of a prompt x,
  log pi(y|x)          the policy's summed log-prob of the completion's tokens
  rho_w, rho_l         log pi(y|x) - log pi_ref(y|x)  (reference_free: log pi(y|x))
  z = rho_w - rho_l    the log-ratio margin;   beta, eps = label_smoothing
Losses (per pair; the objective sums them):
  sigmoid    -(1-eps) log s(beta z) - eps log s(-beta z)                 DPO (Rafailov et al.)
  robust     (-(1-eps) log s(beta z) + eps log s(-beta z)) / (1 - 2 eps)  rDPO (Chowdhury et al.)
  hinge      relu(1 - beta z)                                            SLiC
  ipo        (z - 1/(2 beta))^2, log-probs averaged over tokens           IPO (Azar et al.)
  exo_pair   s(beta z)(log s(beta z) - log(1-eps)) + s(-beta z)(log s(-beta z) - log eps),
             eps = 1e-3 when 0                                           EXO (Ji et al.)
  bco_pair   -log s(beta rho_w - delta) - log s(-(beta rho_l - delta)), delta the running mean
             of the batches' mean reward (the `carry`)                   BCO (Jung et al.)
  sppo_hard  (rho_w - 1/(2 beta))^2 + (rho_l + 1/(2 beta))^2             SPPO, hard labels
  nca_pair   -log s(beta rho_w) - 0.5 log s(-beta rho_w) - 0.5 log s(-beta rho_l)   NCA
  apo_zero   (1 - s(beta rho_w)) + s(beta rho_l)                         APO (D'Oosterlinck et al.)
  apo_down   s(beta rho_w) + (1 - s(beta z))
  simpo      -(1-eps) log s(beta d - gamma) - eps log s(-(beta d - gamma)), d the difference
             of token-averaged policy log-probs, no reference            SimPO (Meng et al.)
  orpo       -avg log pi(y_w) - beta log s(log odds(y_w) - log odds(y_l)), odds p/(1-p) of the
             token-averaged probability p; beta is ORPO's lambda          ORPO (Hong et al.)
Implicit rewards (for metrics): beta rho (simpo, orpo: beta times the averaged log-prob).
"""

import dataclasses

import jax
import jax.numpy as jnp

from llmjax.errors import UserError

LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo", "exo_pair", "bco_pair", "sppo_hard",
              "nca_pair", "apo_zero", "apo_down", "simpo", "orpo")
# Losses defined on token-averaged log-probs rather than sums.
AVERAGED = ("ipo", "simpo", "orpo")
# Losses that never read a reference model.
REFERENCE_FREE = ("simpo", "orpo")


@dataclasses.dataclass(frozen=True)
class PreferenceLoss:
  """A loss of LOSS_TYPES with its settings (TRL's names: beta, label_smoothing, loss_type;
  simpo_gamma as in TRL's CPOConfig)."""

  loss_type: str = "sigmoid"
  beta: float = 0.1
  label_smoothing: float = 0.0
  simpo_gamma: float = 0.5
  reference_free: bool = False

  def __post_init__(self):
    if self.loss_type not in LOSS_TYPES:
      raise UserError(f"dpo.loss_type = {self.loss_type!r}: expected one of {LOSS_TYPES}")
    if not self.beta > 0:
      raise UserError(f"dpo.beta = {self.beta}: expected a positive number")
    if not 0 <= self.label_smoothing < 0.5:
      raise UserError(f"dpo.label_smoothing = {self.label_smoothing}: expected a value in "
                      "[0, 0.5)")

  @property
  def averaged(self) -> bool:
    return self.loss_type in AVERAGED

  @property
  def uses_reference(self) -> bool:
    return not (self.reference_free or self.loss_type in REFERENCE_FREE)

  def __call__(self, chosen_B, rejected_B, ref_chosen_B, ref_rejected_B, delta=0.0):
    """Per-pair losses and implicit rewards.

    Args:
      chosen_B, rejected_B: the policy's log-probs of each completion (sums, or token averages
        for the `averaged` losses).
      ref_chosen_B, ref_rejected_B: the same under the reference (ignored when not used).
      delta: bco_pair's running reward mean (a scalar; no gradient flows into it).
    Returns:
      (losses_B, chosen_rewards_B, rejected_rewards_B).
    """
    beta, eps, kind = self.beta, self.label_smoothing, self.loss_type
    log_s = jax.nn.log_sigmoid
    if self.uses_reference:
      rho_w, rho_l = chosen_B - ref_chosen_B, rejected_B - ref_rejected_B
    else:
      rho_w, rho_l = chosen_B, rejected_B
    z = rho_w - rho_l
    rewards = (beta * rho_w, beta * rho_l)
    if kind == "sigmoid":
      losses = -(1 - eps) * log_s(beta * z) - eps * log_s(-beta * z)
    elif kind == "robust":
      losses = (-(1 - eps) * log_s(beta * z) + eps * log_s(-beta * z)) / (1 - 2 * eps)
    elif kind == "hinge":
      losses = jax.nn.relu(1 - beta * z)
    elif kind == "ipo":
      losses = (z - 1 / (2 * beta)) ** 2
    elif kind == "exo_pair":
      eps = eps or 1e-3
      losses = (jax.nn.sigmoid(beta * z) * (log_s(beta * z) - jnp.log1p(-eps))
                + jax.nn.sigmoid(-beta * z) * (log_s(-beta * z) - jnp.log(eps)))
    elif kind == "bco_pair":
      delta = jax.lax.stop_gradient(delta)
      losses = -log_s(beta * rho_w - delta) - log_s(-(beta * rho_l - delta))
    elif kind == "sppo_hard":
      losses = (rho_w - 0.5 / beta) ** 2 + (rho_l + 0.5 / beta) ** 2
    elif kind == "nca_pair":
      losses = (-log_s(beta * rho_w) - 0.5 * log_s(-beta * rho_w)
                - 0.5 * log_s(-beta * rho_l))
    elif kind == "apo_zero":
      losses = (1 - jax.nn.sigmoid(beta * rho_w)) + jax.nn.sigmoid(beta * rho_l)
    elif kind == "apo_down":
      losses = jax.nn.sigmoid(beta * rho_w) + (1 - jax.nn.sigmoid(beta * z))
    elif kind == "simpo":
      margin = beta * (chosen_B - rejected_B) - self.simpo_gamma
      losses = -(1 - eps) * log_s(margin) - eps * log_s(-margin)
    else:  # orpo: chosen_B / rejected_B are token-averaged log-probs, so below 0
      log_odds = (chosen_B - rejected_B) - (_log1mexp(chosen_B) - _log1mexp(rejected_B))
      losses = -chosen_B - beta * log_s(log_odds)
    return losses, rewards[0], rewards[1]


def _log1mexp(x):
  """log(1 - exp(x)) for x < 0, accurate near 0 and far below it."""
  return jnp.where(x > -0.6931, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def running_mean_update(mean, count, batch_mean):
  """bco_pair's delta: the mean of every batch's mean reward so far (TRL's RunningMoments fed
  one scalar per batch). Returns (new mean, new count)."""
  count = count + 1.0
  return mean + (batch_mean - mean) / count, count
