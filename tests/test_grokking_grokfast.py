"""Grokfast's gradient filters against the reference implementation's arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np

from llmjax.experiments.grokking.grokfast import grokfast_ema, grokfast_ma


def test_grokfast_ema_follows_the_reference_gradfilter_ema():
  # The reference (ironjr/grokfast, gradfilter_ema) starts its average at the first gradient:
  # step 1 with lamb 2 gives g + 2 g = 3 g; afterwards h <- alpha h + (1 - alpha) g.
  tx = grokfast_ema(alpha=0.98, lamb=2.0)
  state = tx.init({"w": jnp.zeros(2)})
  g1, g2 = np.array([1.0, -4.0]), np.array([0.5, 2.0])
  out1, state = tx.update({"w": jnp.asarray(g1)}, state)
  np.testing.assert_allclose(out1["w"], 3.0 * g1, rtol=1e-6)
  out2, state = tx.update({"w": jnp.asarray(g2)}, state)
  h2 = 0.98 * g1 + 0.02 * g2
  np.testing.assert_allclose(out2["w"], g2 + 2.0 * h2, rtol=1e-6)


def test_grokfast_ma_waits_for_a_full_window():
  tx = grokfast_ma(window=3, lamb=1.0)
  state = tx.init({"w": jnp.zeros(())})
  outputs = []
  for g in (1.0, 2.0, 3.0, 4.0):
    out, state = tx.update({"w": jnp.asarray(g)}, state)
    outputs.append(float(out["w"]))
  assert outputs == [1.0, 2.0, 3.0 + 2.0, 4.0 + 3.0]  # mean of (1,2,3), then of (2,3,4)


def test_grokfast_ma_running_sum_matches_the_window_mean_over_many_steps():
  # The running sum must equal the mean of the last `window` gradients long after the ring
  # buffer has wrapped (the reference recomputes the mean from a deque every step).
  tx = grokfast_ma(window=7, lamb=5.0)
  update = jax.jit(tx.update)
  state = tx.init({"w": jnp.zeros(4)})
  grads = np.random.default_rng(5).normal(size=(60, 4)).astype(np.float32)
  for t, g in enumerate(grads):
    out, state = update({"w": jnp.asarray(g)}, state)
    expected = g + (5.0 * grads[t - 6:t + 1].mean(0) if t >= 6 else 0.0)
    np.testing.assert_allclose(out["w"], expected, rtol=1e-5, atol=1e-5)
