"""Seeds vmapped on one trainer train exactly like separate runs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from llmjax.train.multiseed import MultiSeedTrainer


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
