"""Optimizers and learning-rate schedules from `config.optim`.

`optim` keys: name (adamw | sgd | adafactor | rmsprop), lr, schedule (constant | linear |
cosine), warmup_steps (or warmup_ratio: that share of the run's steps), end_lr_fraction, b1,
b2, eps, weight_decay, momentum (sgd), clip_norm (global-norm clipping; 0 disables),
decay_norms_and_biases (default False: parameters with fewer than two dimensions, i.e. norm
scales and biases, get no weight decay).

rmsprop is PyTorch's RMSprop as Hugging Face's Trainer runs it (`optim: rmsprop`, what
Self-Explore's DPO recipe uses): squared-gradient average with decay 0.99 starting from 0,
`eps` added outside the square root, no momentum; weight decay added to the gradient, as
torch does.
"""

import math

import jax
import optax

from llmjax import checks
from llmjax.errors import UserError

OPTIMIZERS = ("adamw", "sgd", "adafactor", "rmsprop")
SCHEDULES = ("constant", "linear", "cosine")


def learning_rate_schedule(optim_config, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `lr`, then constant, linear or cosine decay to lr * end fraction."""
  lr, warmup = float(optim_config.lr), int(optim_config.warmup_steps)
  if optim_config.get("warmup_ratio", 0.0):
    warmup = int(math.ceil(float(optim_config.warmup_ratio) * total_steps))
  end_lr = lr * float(optim_config.end_lr_fraction)
  decay_steps = max(total_steps - warmup, 1)
  kind = optim_config.schedule
  if kind == "constant":
    after = optax.constant_schedule(lr)
  elif kind == "linear":
    after = optax.linear_schedule(lr, end_lr, decay_steps)
  elif kind == "cosine":
    after = optax.cosine_decay_schedule(lr, decay_steps, alpha=end_lr / lr if lr else 0.0)
  else:
    raise UserError(f"optim.schedule = {kind!r}: expected one of {SCHEDULES}")
  if warmup <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def decay_mask(params):
  """True for parameters that take weight decay: matrices and embeddings, not norms or biases."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def check_optim_config(optim_config) -> None:
  """`optim.*` checked before anything compiles: a negative or non-finite learning rate would
  train by gradient ascent or poison the params."""
  checks.non_negative_floats(optim_config, "optim", "lr", "weight_decay", "end_lr_fraction",
                             "clip_norm", "eps")
  checks.non_negative_ints(optim_config, "optim", "warmup_steps")
  if "warmup_ratio" in optim_config:
    checks.in_range(optim_config, "optim", "warmup_ratio", 0.0, 1.0)
  for key in ("b1", "b2", "momentum"):
    checks.in_range(optim_config, "optim", key, 0.0, 1.0)


def build_optimizer(optim_config, total_steps: int):
  """Returns (optax transformation, schedule)."""
  check_optim_config(optim_config)
  schedule = learning_rate_schedule(optim_config, total_steps)
  name = optim_config.name
  mask = None if optim_config.decay_norms_and_biases else decay_mask
  if name == "adamw":
    core = optax.adamw(schedule, b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps,
                       weight_decay=optim_config.weight_decay, mask=mask)
  elif name == "sgd":
    core = optax.chain(
        optax.add_decayed_weights(optim_config.weight_decay, mask=mask),
        optax.sgd(schedule, momentum=optim_config.momentum or None))
  elif name == "adafactor":
    core = optax.adafactor(schedule, weight_decay_rate=optim_config.weight_decay or None,
                           weight_decay_mask=mask)
  elif name == "rmsprop":
    core = optax.chain(
        optax.add_decayed_weights(optim_config.weight_decay, mask=mask),
        optax.rmsprop(schedule, decay=0.99, eps=optim_config.eps, eps_in_sqrt=False))
  else:
    raise UserError(f"optim.name = {name!r}: expected one of {OPTIMIZERS}")
  parts = []
  if optim_config.clip_norm:
    parts.append(optax.clip_by_global_norm(optim_config.clip_norm))
  parts.append(core)
  return optax.chain(*parts), schedule
