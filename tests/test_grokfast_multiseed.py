import jax
import jax.numpy as jnp
import numpy as np
import optax

from llmjax.train.grokfast import grokfast_ema, grokfast_ma
from llmjax.train.multiseed import MultiSeedTrainer


def test_grokfast_ema_amplifies_the_running_average():
  tx = grokfast_ema(alpha=0.5, lamb=2.0)
  state = tx.init({"w": jnp.zeros(2)})
  out1, state = tx.update({"w": jnp.array([1.0, 0.0])}, state)
  np.testing.assert_allclose(out1["w"], [1.0 + 2.0 * 0.5, 0.0])
  out2, state = tx.update({"w": jnp.array([0.0, 2.0])}, state)
  ema = np.array([0.25, 1.0])
  np.testing.assert_allclose(out2["w"], np.array([0.0, 2.0]) + 2.0 * ema)


def test_grokfast_ma_waits_for_a_full_window():
  tx = grokfast_ma(window=3, lamb=1.0)
  state = tx.init({"w": jnp.zeros(())})
  outputs = []
  for g in (1.0, 2.0, 3.0, 4.0):
    out, state = tx.update({"w": jnp.asarray(g)}, state)
    outputs.append(float(out["w"]))
  assert outputs == [1.0, 2.0, 3.0 + 2.0, 4.0 + 3.0]  # mean of (1,2,3), then of (2,3,4)


def _problem():
  """Linear regression with a per-seed subset of rows: small enough to check exactly."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(40, 3)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(40,)), jnp.float32)
  rows = jnp.asarray(np.stack([np.sort(np.random.default_rng(s).permutation(40)[:20])
                               for s in range(3)]))

  def loss_fn(params, shared, per_seed, rng):
    pred = shared["x"][per_seed["rows"]] @ params["w"]
    loss = jnp.mean((pred - shared["y"][per_seed["rows"]]) ** 2)
    return loss, {"loss": loss}

  def eval_fn(params, shared, per_seed):
    return {"loss": jnp.mean((shared["x"] @ params["w"] - shared["y"]) ** 2)}

  init = lambda rng: {"w": jax.random.normal(rng, (3,))}  # noqa: E731
  return init, loss_fn, eval_fn, {"x": x, "y": y}, {"rows": rows}


def test_seeds_vmapped_train_exactly_like_separate_runs():
  init, loss_fn, eval_fn, shared, per_seed = _problem()
  tx = optax.adamw(0.05)
  trainer = MultiSeedTrainer(init, tx, loss_fn, eval_fn)
  state = trainer.init([0, 1, 2])
  state, aux = trainer.train(state, shared, per_seed, 7)
  state, aux = trainer.train(state, shared, per_seed, 5)  # chunks continue the same run
  assert int(state.step) == 12 and aux["loss"].shape == (3,)
  for seed in range(3):
    params_rng, _ = jax.random.split(jax.random.PRNGKey(seed))
    params = init(params_rng)
    opt_state = tx.init(params)
    for _ in range(12):
      grads = jax.grad(lambda p: loss_fn(p, shared, {"rows": per_seed["rows"][seed]}, None)[0])(
          params)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(state.params["w"][seed], params["w"], rtol=1e-5, atol=1e-6)
  losses = trainer.evaluate(state, shared, per_seed)["loss"]
  assert losses.shape == (3,) and float(losses.max()) < 1.5
