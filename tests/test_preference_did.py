"""The DID analysis against definitions computed by hand and by brute force."""

import numpy as np
import pytest

from llmjax.experiments.preference import did


def _random_policy(rng, n, scale=1.0):
  return did.normalize(scale * rng.normal(size=n))


def test_did_is_the_normalised_likelihood_ratio():
  p = np.array([0.5, 0.3, 0.2])
  ref = np.array([0.25, 0.25, 0.5])
  ratio = p / ref
  np.testing.assert_allclose(np.exp(did.log_did(np.log(p), np.log(ref))), ratio / ratio.sum())
  q = ratio / ratio.sum()
  assert did.did_entropy(np.log(p), np.log(ref)) == pytest.approx(-(q * np.log(q)).sum())
  # pi = pi_ref: the DID is uniform, of entropy log N.
  assert did.did_entropy(np.log(ref), np.log(ref)) == pytest.approx(np.log(3))


def test_js_divergence_values():
  p, q = np.log([1.0, 0.0 + 1e-300]), np.log([1e-300, 1.0])
  assert did.js_divergence(p, q) == pytest.approx(np.log(2))
  r = np.log([0.2, 0.8])
  assert did.js_divergence(r, r) == pytest.approx(0.0, abs=1e-12)
  a, b = np.array([0.1, 0.9]), np.array([0.6, 0.4])
  m = (a + b) / 2
  expected = 0.5 * (a * np.log(a / m)).sum() + 0.5 * (b * np.log(b / m)).sum()
  assert did.js_divergence(np.log(a), np.log(b)) == pytest.approx(expected)


def test_matched_rejected_policy_makes_the_dpo_optimum_the_target():
  """With pi_l = pi_ref^(1+beta) pi*^-beta / Z, the Bradley-Terry reward log(pi_ref/pi_l) is
  beta log(pi*/pi_ref) + const, so pi_ref exp(reward / beta) / Z' is pi*."""
  rng = np.random.default_rng(0)
  ref, target = _random_policy(rng, 30), _random_policy(rng, 30)
  beta = 0.7
  rejected = did.matched_rejected_policy(ref, target, beta)
  reward = ref - rejected
  np.testing.assert_allclose(did.normalize(ref + reward / beta), target, atol=1e-12)
  # ... and q_{ref/l} is q_{*/ref}^beta normalised.
  np.testing.assert_allclose(did.log_did(ref, rejected),
                             did.normalize(beta * did.log_did(target, ref)), atol=1e-12)


def test_margin_ordering_holds_for_rightly_labelled_pairs_only():
  rng = np.random.default_rng(1)
  ref, target = _random_policy(rng, 40), _random_policy(rng, 40)
  rejected = did.matched_rejected_policy(ref, target, 0.5)
  chosen_P, rejected_P = did.bradley_terry_pairs(rng, ref, rejected, 4000)
  result = did.margin_ordering(target, ref, rejected, chosen_P, rejected_P)
  reward = (ref - rejected)
  right = reward[chosen_P] >= reward[rejected_P]
  assert result["share_of_pairs"] == pytest.approx(right.mean())
  assert 0.5 < result["share_of_pairs"] < 1.0  # Bradley-Terry labels are noisy
  assert result["means_ordered"]
  # Labels from pi_l = pi_ref carry no information: the reference margin equals the rejected
  # one on every pair, and the target's is not ordered above it.
  flat = did.margin_ordering(target, ref, ref, *did.bradley_terry_pairs(rng, ref, ref, 4000))
  assert flat["mean_reference_margin"] == pytest.approx(flat["mean_rejected_margin"])
  assert abs(flat["mean_target_margin"]) < 0.2


def test_bradley_terry_labels_follow_the_reward():
  rng = np.random.default_rng(2)
  ref = np.log(np.full(2, 0.5))
  rejected = np.log([0.2, 0.8])  # reward log(ref/l): y0 beats y1 by log 4
  chosen_P, rejected_P = did.bradley_terry_pairs(rng, ref, rejected, 200_000)
  mixed = chosen_P != rejected_P
  assert (chosen_P[mixed] == 0).mean() == pytest.approx(0.8, abs=0.005)  # s(log 4) = 0.8


def test_monte_carlo_did_entropy_converges_to_the_exact_value():
  rng = np.random.default_rng(3)
  N = 60
  ref, pi = _random_policy(rng, N, 0.8), _random_policy(rng, N, 1.5)
  exact = did.did_entropy(pi, ref)
  errors = []
  for K in (100, 1_000, 10_000, 100_000):
    y = rng.choice(N, size=K, p=np.exp(ref))
    estimate = did.did_entropy_mc(pi[y], ref[y])
    errors.append(abs(estimate.entropy - exact))
    assert errors[-1] < 4 * estimate.entropy_se + 1e-9, (K, estimate, exact)
  assert errors[-1] < 0.02 and errors[-1] < errors[0]
  # The weight entropy tends to log K - KL(pi || pi_ref), not to H(q).
  gap = estimate.weight_entropy - np.log(K)
  assert gap == pytest.approx(-did.kl(pi, ref), abs=0.02)
  assert 0 < estimate.weight_entropy_normalized < 1
  assert 1 < estimate.effective_samples < K


def test_monte_carlo_estimate_of_an_identical_policy_is_flat():
  rng = np.random.default_rng(4)
  ref = _random_policy(rng, 20)
  y = rng.choice(20, size=5000, p=np.exp(ref))
  estimate = did.did_entropy_mc(ref[y], ref[y])
  assert estimate.weight_entropy_normalized == pytest.approx(1.0)
  assert estimate.effective_samples == pytest.approx(5000)
  assert estimate.entropy == pytest.approx(np.log(20), abs=0.05)


def test_monte_carlo_refuses_bad_shapes():
  with pytest.raises(ValueError, match="two \\[K\\] arrays"):
    did.did_entropy_mc(np.zeros(3), np.zeros(4))


@pytest.mark.slow
def test_did_synthetic_cli_writes_the_three_claims(tmp_path):
  """A small run of configs/did_synthetic.py: 12 outputs, a few steps of each stage. The
  tabular DPO with the matched pi_l reaches the target; the others are checked for shape."""
  import json
  from conftest import run_cli
  run = tmp_path / "did"
  result = run_cli(["--config", "configs/did_synthetic.py", "--workdir", str(run),
                    "--config.space.tokens=3", "--config.space.max_length=2",
                    "--config.tabular.steps=300", "--config.decoder.sft_examples=256",
                    "--config.decoder.sft_eval_examples=64", "--config.decoder.train_pairs=64",
                    "--config.decoder.eval_pairs=16", "--config.sft.train.steps=10",
                    "--config.sft.train.eval_every=10", "--config.sft.train.checkpoint_every=10",
                    "--config.sft.train.progress=False", "--config.sft.train.batch_size=8",
                    "--config.sft.train.seq_len=32", "--config.train.steps=4",
                    "--config.train.batch_size=8", "--config.train.checkpoint_every=2",
                    "--config.train.eval_every=4", "--config.train.eval_batches=1",
                    "--config.train.progress=False", "--config.model.d_model=32",
                    "--config.model.d_ff=64"])
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((run / "summary.json").read_text())
  assert summary["outputs"] == 12
  assert summary["js_final_matched"] < 1e-4 < summary["js_final_mismatched_uniform"]
  assert summary["margin_ordering_holds"] is True
  assert -1 <= summary["displacement_vs_entropy_corr"] <= 1
  assert len(summary["sweep"]) == 10
  for name in ("js_tabular.png", "js_decoder.png", "margins.png", "displacement.png"):
    assert (run / name).stat().st_size > 1000


def test_tabular_expected_loss_is_the_mean_over_sampled_labelled_pairs():
  import jax.numpy as jnp
  from llmjax.experiments.preference.tabular_policy import chosen_distribution, expected_loss
  from llmjax.train.preference import PreferenceLoss
  rng = np.random.default_rng(5)
  N = 8
  ref, rejected, theta = _random_policy(rng, N), _random_policy(rng, N), rng.normal(size=N)
  lengths = rng.integers(2, 5, size=N).astype(np.float64)
  # The chosen outputs are distributed as pi_ref, whatever pi_l is.
  np.testing.assert_allclose(chosen_distribution(jnp.asarray(ref), jnp.asarray(rejected)),
                             np.exp(ref), atol=1e-6)
  chosen_P, rejected_P = did.bradley_terry_pairs(rng, ref, rejected, 400_000)
  logp = theta - np.log(np.exp(theta).sum())
  for loss in (PreferenceLoss("sigmoid", 0.5), PreferenceLoss("ipo", 0.5)):
    scale = 1.0 / lengths if loss.averaged else np.ones(N)
    x, x_ref = logp * scale, ref * scale
    z = (x[chosen_P] - x_ref[chosen_P]) - (x[rejected_P] - x_ref[rejected_P])
    per_pair = (np.logaddexp(0.0, -0.5 * z) if loss.loss_type == "sigmoid"
                else (z - 1 / (2 * 0.5)) ** 2)
    exact = float(expected_loss(jnp.asarray(theta), jnp.asarray(ref), jnp.asarray(rejected),
                                loss, jnp.asarray(lengths)))
    assert exact == pytest.approx(per_pair.mean(), rel=0.01)


def test_tabular_dpo_with_the_matched_rejected_policy_reaches_the_target():
  from llmjax.experiments.preference.tabular_policy import train_tabular
  from llmjax.train.preference import PreferenceLoss
  rng = np.random.default_rng(6)
  ref, target = _random_policy(rng, 10), _random_policy(rng, 10)
  rejected = np.stack([did.matched_rejected_policy(ref, target, 0.5), ref])
  runs = train_tabular(np.stack([ref, ref]), rejected, np.stack([target, target]),
                       PreferenceLoss("sigmoid", 0.5), np.full(10, 3.0), 400, 0.05, 100)
  assert runs.js[0, 0] == pytest.approx(did.js_divergence(ref, target), rel=1e-4)
  assert runs.js[0, -1] < 1e-6  # matched: pi*
  assert runs.js[1, -1] == pytest.approx(runs.js[1, 0], rel=1e-4)  # pi_l = pi_ref: no move
  assert runs.chosen_drift[0, -1] == pytest.approx(-did.kl(ref, target), abs=1e-3)
