import jax
import jax.numpy as jnp
import numpy as np
import optax

from llmjax.train.grokfast import grokfast_ema, grokfast_ma
from llmjax.train.multiseed import MultiSeedTrainer


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


def _problem():
  """Linear regression with a per-seed subset of rows: small enough to check exactly."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(40, 3)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(40,)), jnp.float32)
  rows = jnp.asarray(np.stack([np.sort(np.random.default_rng(s).permutation(40)[:20])
                               for s in range(3)]))

  def loss_fn(params, batch, rng, frozen):
    pred = batch["x"][batch["rows"]] @ params["w"]
    loss = jnp.mean((pred - batch["y"][batch["rows"]]) ** 2)
    return loss, {"mse": loss}

  def eval_fn(params, batch):
    return {"loss": jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)}

  init = lambda rng: {"w": jax.random.normal(rng, (3,))}  # noqa: E731
  return init, loss_fn, eval_fn, {"x": x, "y": y, "rows": rows}


def test_seeds_vmapped_train_exactly_like_separate_runs():
  init, loss_fn, eval_fn, batch = _problem()
  tx = optax.adamw(0.05)
  trainer = MultiSeedTrainer(init, tx, loss_fn, eval_fn, seed_keys=("rows",))
  state = trainer.init([0, 1, 2])
  state, first = trainer.train(state, batch, 7)
  state, second = trainer.train(state, batch, 5)  # chunks continue the same run
  assert int(state.step) == 12 and second["loss"].shape == (3,)
  for seed in range(3):
    params_rng, _ = jax.random.split(jax.random.PRNGKey(seed))
    params = init(params_rng)
    opt_state = tx.init(params)
    losses = []
    for _ in range(12):
      one_seed = {**batch, "rows": batch["rows"][seed]}
      loss, grads = jax.value_and_grad(lambda p: loss_fn(p, one_seed, None, None)[0])(params)
      losses.append(float(loss))
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(state.params["w"][seed], params["w"], rtol=1e-5, atol=1e-6)
    # Each call returns its steps' metrics summed: the loop averages them per log.
    np.testing.assert_allclose(first["loss"][seed], sum(losses[:7]), rtol=1e-5)
    np.testing.assert_allclose(second["mse"][seed], sum(losses[7:]), rtol=1e-5)
  losses = trainer.evaluate(state, batch)["loss"]
  assert losses.shape == (3,) and float(losses.max()) < 1.5
