import numpy as np
import pytest

from llmjax.experiments.grokking import geometry, stages


def test_effective_dimension_counts_components_above_one_percent():
  rng = np.random.default_rng(0)
  basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
  scales = np.array([10.0, 5.0, 3.0, 0.05])  # the last one holds < 1% of the variance
  coords = rng.normal(size=(200, 4)) * scales
  emb = coords @ basis[:4]
  assert int(geometry.effective_dimension(emb)) == 3
  assert np.isclose(float(geometry.explained_variance(emb).sum()), 1.0)


def test_fourier_finds_the_planted_frequencies():
  p, rng = 31, np.random.default_rng(1)
  x = np.arange(p)[:, None]
  emb = np.concatenate([np.cos(2 * np.pi * 4 * x / p), np.sin(2 * np.pi * 4 * x / p),
                        np.cos(2 * np.pi * 11 * x / p)], axis=1) @ rng.normal(size=(3, 8))
  emb += 0.01 * rng.normal(size=emb.shape)
  power = geometry.fourier_power(emb)
  assert geometry.key_frequencies(power) == [4, 11]
  assert np.isclose(power[1:].sum(), 1.0)


def test_restricted_and_excluded_loss_of_a_fourier_model():
  p, k = 13, 3
  x, y, c = np.meshgrid(np.arange(p), np.arange(p), np.arange(p), indexing="ij")
  logits = 8.0 * np.cos(2 * np.pi * k * (x + y - c) / p)  # peaks at c = x + y
  targets = (np.arange(p)[:, None] + np.arange(p)[None, :]) % p
  restricted, excluded = geometry.restricted_and_excluded_loss(logits, targets, [k])
  full_loss = -np.mean(np.take_along_axis(
      logits - np.log(np.exp(logits).sum(-1, keepdims=True)), targets[..., None], -1))
  assert restricted == pytest.approx(full_loss, rel=1e-5)  # all of the signal is at frequency k
  assert excluded == pytest.approx(np.log(p), rel=1e-5)  # nothing left: uniform


def test_stage_detection_rules():
  steps = np.arange(0, 1100, 100)
  train = [0.1, 0.5, 0.995, 1, 1, 1, 1, 1, 1, 1, 1]
  test = [0.0, 0.0, 0.1, 0.1, 0.3, 0.7, 0.995, 1, 1, 1, 1]
  violation = [0.001, 0.5, 0.9, 0.7, 0.3, 0.08, 0.01, 0.01, 0.01, 0.01, 0.01]
  dims = [30, 30, 28, 25, 20, 12, 8, 5, 4, 4, 4]
  found = stages.detect_stages(steps, train, test, violation, dims, threshold=0.1)
  # Violation is low at step 0 too, but only the crossing after memorization counts; the
  # dimension is within 10% of its final 4 from step 800 and has fallen from its peak of 28.
  assert found == {"step_memorized": 200, "step_symmetry": 500, "step_generalized": 600,
                   "step_organized": 800, "ordered": True}


def test_a_run_that_never_memorized_reaches_no_stage():
  steps = np.arange(0, 1100, 100)
  never = stages.detect_stages(steps, [0.5] * 11, [0.0] * 11, [1.0] * 11, [5] * 11, 0.1)
  assert never == {"step_memorized": None, "step_symmetry": None, "step_generalized": None,
                   "step_organized": None, "ordered": False}


def test_organized_needs_the_dimension_to_fall_and_comes_after_generalization():
  steps = np.arange(0, 1100, 100)
  train = [0.1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
  test = [0.0, 0.1, 0.2, 0.3, 0.995, 1, 1, 1, 1, 1, 1]
  violation = [0.0, 1.0, 0.5, 0.05, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]
  flat = stages.detect_stages(steps, train, test, violation, [20] * 11, 0.1)
  assert flat["step_generalized"] == 400 and flat["step_organized"] is None
  assert flat["ordered"] is False
  # A fall of 20% (25 -> 20) is below the default 25%; a fall of 40% counts.
  small = stages.detect_stages(steps, train, test, violation, [25] * 3 + [20] * 8, 0.1)
  assert small["step_organized"] is None
  assert stages.detect_stages(steps, train, test, violation, [25] * 3 + [20] * 8, 0.1,
                              min_drop=0.2)["step_organized"] == 400
  # The dimension settles at step 200, before generalization: organized waits for step 400.
  early = stages.detect_stages(steps, train, test, violation, [25] * 2 + [15] * 9, 0.1)
  assert early["step_symmetry"] == 300 and early["step_organized"] == 400
  assert early["ordered"] is True
  # A crossing after generalization is reported as it is, and the stages are then unordered.
  late = stages.detect_stages(steps, train, test, [0.0, 1.0, 0.9, 0.8, 0.7, 0.05] + [0.01] * 5,
                              [25] * 2 + [15] * 9, 0.1)
  assert late["step_symmetry"] == 500 and late["step_generalized"] == 400
  assert late["step_organized"] == 500 and late["ordered"] is False
  # A dimension still falling at the end is not organized: the last evaluation is trivially
  # within 10% of the final value, and one or two evaluations are no plateau.
  falling = stages.detect_stages(steps, train, test, violation,
                                 [30, 30, 28, 26, 24, 22, 20, 18, 16, 14, 12], 0.1)
  assert falling["step_generalized"] == 400 and falling["step_organized"] is None
  settling = stages.detect_stages(steps, train, test, violation,
                                  [30, 30, 28, 26, 24, 22, 20, 18, 12, 12, 12], 0.1)
  assert settling["step_organized"] == 800


def test_frequency_plane_puts_the_numbers_on_a_circle_in_order():
  p, k, rng = 23, 5, np.random.default_rng(4)
  x = np.arange(p)[:, None]
  waves = np.concatenate([np.cos(2 * np.pi * k * x / p), np.sin(2 * np.pi * k * x / p),
                          np.cos(2 * np.pi * 2 * x / p)], axis=1)
  emb = waves @ rng.normal(size=(3, 16)) + 0.3  # a constant offset, removed by centring
  xy = geometry.frequency_plane(emb, k)
  radius = np.hypot(xy[:, 0], xy[:, 1])
  assert radius.std() / radius.mean() < 0.2  # a circle (an ellipse at most, from the mixing)
  # Number x sits at angle ±2 pi k x / p (up to a rotation): successive steps of k mod p are
  # adjacent on the circle.
  angle = np.unwrap(np.angle(xy[:, 0] + 1j * xy[:, 1])[(np.arange(p) * pow(k, -1, p)) % p])
  steps = np.diff(angle)
  assert np.all(np.sign(steps) == np.sign(steps[0]))
  np.testing.assert_allclose(abs(angle[-1] - angle[0]), 2 * np.pi * (p - 1) / p, rtol=0.05)
