"""Preference losses against their formulas, computed independently in NumPy."""

import jax
import numpy as np
import pytest

from llmjax.errors import UserError
from llmjax.train.preference import (LOSS_TYPES, PreferenceLoss, running_mean_update)

RNG = np.random.default_rng(0)
# Policy / reference log-probs of 6 pairs; averaged losses get values in (-3, 0).
CHOSEN, REJECTED = -RNG.uniform(0.1, 3, 6), -RNG.uniform(0.1, 3, 6)
REF_CHOSEN, REF_REJECTED = -RNG.uniform(0.1, 3, 6), -RNG.uniform(0.1, 3, 6)
BETA, EPS, GAMMA, DELTA = 0.7, 0.1, 0.3, 0.25


def log_sigmoid(x):
  return -np.log1p(np.exp(-x))


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def expected(kind):
  """Each loss written out from its paper's / TRL's formula."""
  w = CHOSEN - REF_CHOSEN
  l = REJECTED - REF_REJECTED
  z = w - l
  b, e = BETA, EPS
  return {
      "sigmoid": -(1 - e) * log_sigmoid(b * z) - e * log_sigmoid(-b * z),
      "robust": (-(1 - e) * log_sigmoid(b * z) + e * log_sigmoid(-b * z)) / (1 - 2 * e),
      "hinge": np.maximum(0, 1 - b * z),
      "ipo": (z - 1 / (2 * b)) ** 2,
      "exo_pair": sigmoid(b * z) * (log_sigmoid(b * z) - np.log(1 - e))
      + sigmoid(-b * z) * (log_sigmoid(-b * z) - np.log(e)),
      "bco_pair": -log_sigmoid(b * w - DELTA) - log_sigmoid(-(b * l - DELTA)),
      "sppo_hard": (w - 0.5 / b) ** 2 + (l + 0.5 / b) ** 2,
      "nca_pair": -log_sigmoid(b * w) - 0.5 * log_sigmoid(-b * w) - 0.5 * log_sigmoid(-b * l),
      "apo_zero": 1 - sigmoid(b * w) + sigmoid(b * l),
      "apo_down": sigmoid(b * w) + 1 - sigmoid(b * z),
      # No reference: the (averaged) policy log-probs themselves.
      "simpo": -(1 - e) * log_sigmoid(b * (CHOSEN - REJECTED) - GAMMA)
      - e * log_sigmoid(-(b * (CHOSEN - REJECTED) - GAMMA)),
      "orpo": -CHOSEN - b * log_sigmoid(
          np.log(np.exp(CHOSEN) / (1 - np.exp(CHOSEN)))
          - np.log(np.exp(REJECTED) / (1 - np.exp(REJECTED)))),
  }[kind]


@pytest.mark.parametrize("kind", LOSS_TYPES)
def test_each_loss_equals_its_formula(kind):
  loss = PreferenceLoss(kind, beta=BETA, label_smoothing=EPS, simpo_gamma=GAMMA)
  losses, chosen_rewards, rejected_rewards = jax.jit(loss)(CHOSEN, REJECTED, REF_CHOSEN,
                                                           REF_REJECTED, DELTA)
  np.testing.assert_allclose(losses, expected(kind), rtol=2e-5, atol=1e-6)
  if kind in ("simpo", "orpo"):
    np.testing.assert_allclose(chosen_rewards, BETA * CHOSEN, rtol=1e-6)
  else:
    np.testing.assert_allclose(chosen_rewards, BETA * (CHOSEN - REF_CHOSEN), rtol=1e-6)
    np.testing.assert_allclose(rejected_rewards, BETA * (REJECTED - REF_REJECTED), rtol=1e-6)


def test_reference_free_reads_no_reference_and_exo_defaults_its_epsilon():
  free = PreferenceLoss("sigmoid", beta=BETA, reference_free=True)
  losses, _, _ = free(CHOSEN, REJECTED, REF_CHOSEN + 100.0, REF_REJECTED - 7.0)
  np.testing.assert_allclose(losses, -log_sigmoid(BETA * (CHOSEN - REJECTED)), rtol=1e-5)
  exo_zero = PreferenceLoss("exo_pair", beta=BETA)(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED)
  z = BETA * ((CHOSEN - REF_CHOSEN) - (REJECTED - REF_REJECTED))
  np.testing.assert_allclose(
      exo_zero[0], sigmoid(z) * (log_sigmoid(z) - np.log(1 - 1e-3))
      + sigmoid(-z) * (log_sigmoid(-z) - np.log(1e-3)), rtol=2e-5)


def test_dpo_gradient_pushes_the_margin_up():
  grad = jax.grad(lambda c: PreferenceLoss("sigmoid", beta=0.5)(c, REJECTED, REF_CHOSEN,
                                                                REF_REJECTED)[0].sum())(CHOSEN)
  # d/dc -log s(beta z) = -beta s(-beta z) < 0: raising the chosen log-prob lowers the loss.
  z = (CHOSEN - REF_CHOSEN) - (REJECTED - REF_REJECTED)
  np.testing.assert_allclose(grad, -0.5 * sigmoid(-0.5 * z), rtol=1e-5)


def test_bco_running_mean_is_the_mean_of_batch_means():
  mean, count = 0.0, 0.0
  for batch_mean in (1.0, 3.0, -1.0):
    mean, count = running_mean_update(mean, count, batch_mean)
  assert count == 3 and mean == pytest.approx(1.0)


@pytest.mark.parametrize("settings, message", [
    ({"loss_type": "kto"}, "dpo.loss_type = 'kto': expected one of"),
    ({"beta": 0.0}, "dpo.beta = 0.0: expected a positive number"),
    ({"label_smoothing": 0.5}, "dpo.label_smoothing = 0.5: expected a value in"),
])
def test_bad_settings_are_user_errors(settings, message):
  with pytest.raises(UserError, match=message):
    PreferenceLoss(**settings)
