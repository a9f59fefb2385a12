"""Grokfast (Lee et al. 2024) as optax gradient transformations: amplify the slow component of
the gradient before the optimizer sees it.

  EMA: h_1 = g_1, then h <- alpha h + (1 - alpha) g;  g' = g + lamb h
       (paper: alpha 0.98, lamb 2.0). The average starts from the first gradient, as the
       reference `gradfilter_ema` does (its state is None until the first call), so the first
       step already amplifies: g' = (1 + lamb) g. Starting from zero instead would damp the
       filter by alpha^t for the first hundreds of steps.
  MA:  h  = mean of the last `window` gradients; g' = g + lamb h  (paper: window 100, lamb 5.0),
       applied once the window is full (before that, g' = g)

Chain before the optimizer: `optax.chain(grokfast_ema(), optax.adamw(...))`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class EmaState(NamedTuple):
  ema: optax.Updates
  started: jax.Array  # False until the first update: then the average is the gradient itself


def grokfast_ema(alpha: float = 0.98, lamb: float = 2.0) -> optax.GradientTransformation:
  def init(params):
    return EmaState(ema=jax.tree.map(jnp.zeros_like, params), started=jnp.zeros((), bool))

  def update(grads, state, params=None):
    del params
    ema = jax.tree.map(
        lambda h, g: jnp.where(state.started, alpha * h + (1.0 - alpha) * g, g), state.ema, grads)
    return (jax.tree.map(lambda g, h: g + lamb * h, grads, ema),
            EmaState(ema=ema, started=jnp.ones((), bool)))

  return optax.GradientTransformation(init, update)


class MaState(NamedTuple):
  window: optax.Updates  # [window, *shape] ring buffer per leaf
  total: optax.Updates  # the sum of the buffer, kept up to date so a step reads one slot
  count: jax.Array


def grokfast_ma(window: int = 100, lamb: float = 5.0) -> optax.GradientTransformation:
  def init(params):
    return MaState(window=jax.tree.map(lambda p: jnp.zeros((window, *p.shape), p.dtype), params),
                   total=jax.tree.map(jnp.zeros_like, params), count=jnp.zeros((), jnp.int32))

  def update(grads, state, params=None):
    del params
    slot = state.count % window
    # Replace the oldest gradient and update the running sum by the difference: reading the
    # whole window for its mean every step cost 3-4x the training step of the grokking model.
    total = jax.tree.map(lambda t, b, g: t + g - b[slot], state.total, state.window, grads)
    buffer = jax.tree.map(lambda b, g: b.at[slot].set(g), state.window, grads)
    full = state.count + 1 >= window
    out = jax.tree.map(lambda g, t: g + jnp.where(full, (lamb / window) * t, 0.0), grads, total)
    return out, MaState(window=buffer, total=total, count=state.count + 1)

  return optax.GradientTransformation(init, update)
