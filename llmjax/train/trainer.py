"""The Trainer: any Flax module and Objective, compiled on a mesh, run by the one loop.

  trainer = Trainer(model, objective, config.train, config.optim, parallel)
  result = trainer.fit(workdir, batches, eval_batches, seed=config.seed, frozen=reference)

The step is `llmjax.train.step.make_train_step` jitted with explicit shardings: the state
donated and sharded by its params' logical axes; batch keys split along the batch over the data
and fsdp axes (or replicated, as the BatchSpec says); `frozen` params a separate argument, never
donated and never closed over as constants, so they keep the shardings they were placed with
(sharded like the trained params when they come from the same model).
"""

from typing import Any, Callable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from llmjax import checks
from llmjax.errors import UserError
from llmjax.parallel import Parallel
from llmjax.train.loop import LoopResult, check_train_config, run_loop
from llmjax.train.objective import Objective
from llmjax.train.optim import build_optimizer
from llmjax.train.state import TrainState, make_state_initializer
from llmjax.train.step import make_train_step, sum_over_micro_batches


class Trainer:
  """Owns the compiled train/eval steps of one model and objective, and runs the loop.

  Args:
    model: any Flax module; its params come from `model.init(rng, *example_inputs)`.
    objective: the loss and batch layout (llmjax.train.objective).
    train_config: `config.train` (steps, batch_size, seq_len, grad_accum_steps, cadence,
      trainable_params, init_from, ...).
    optim_config: `config.optim`.
    parallel: mesh and rules.
    example_inputs: arguments of `model.init` after the rng (default: one row of seq_len
      token ids, what a Decoder takes).
    flops_per_step: model FLOPs of one step for MFU (None: no MFU).
  """

  def __init__(self, model: nn.Module, objective: Objective, train_config, optim_config,
               parallel: Parallel, example_inputs: Sequence[Any] | None = None,
               flops_per_step: float | None = None):
    self.model, self.objective = model, objective
    self.config, self.parallel, self.flops_per_step = train_config, parallel, flops_per_step
    self._check_batch_shape()
    self.tx, self.schedule = build_optimizer(optim_config, train_config.steps)
    if example_inputs is None:
      example_inputs = (jnp.zeros((1, train_config.seq_len), jnp.int32),)
    self._init_state, self.abstract_state, self.trainable_mask = make_state_initializer(
        lambda rng: model.init(rng, *example_inputs)["params"], self.tx, parallel,
        train_config.get("trainable_params", ""), objective.carry_init)
    spec = objective.batch_spec
    self.batch_shardings = {k: parallel.replicated if k in spec.replicated
                            else parallel.batch_sharding(1) for k in spec.keys}
    state_sharding = jax.tree.map(lambda s: s.sharding, self.abstract_state)
    step = make_train_step(objective, self.tx, self.schedule, train_config.grad_accum_steps,
                           self.trainable_mask)
    self._train_step = jax.jit(step, in_shardings=(state_sharding, self.batch_shardings, None),
                               out_shardings=(state_sharding, parallel.replicated),
                               donate_argnums=0)

    def eval_sums(params, batch, frozen, carry):
      # in the training step's micro-batches: [B, L, V] logits are never held whole
      return sum_over_micro_batches(
          lambda micro, _: objective.loss(params, micro, None, frozen, carry)[1], batch,
          objective.batch_spec, train_config.grad_accum_steps)

    self._eval_step = jax.jit(eval_sums, in_shardings=(state_sharding.params,
                                                       self.batch_shardings, None, None),
                              out_shardings=parallel.replicated)

  def _check_batch_shape(self):
    cfg, multiple = self.config, self.parallel.batch_size_multiple
    check_train_config(cfg)
    checks.positive_ints(cfg, "train", "batch_size", "seq_len", "grad_accum_steps")
    checks.non_negative_ints(cfg, "train", "loss_chunk_len")
    checks.non_negative_floats(cfg, "train", "z_loss")
    accum = cfg.grad_accum_steps
    if cfg.batch_size % accum or (cfg.batch_size // accum) % multiple:
      raise UserError(f"train.batch_size = {cfg.batch_size}: must split into "
                      f"grad_accum_steps={accum} micro-batches each divisible by the "
                      f"data*fsdp mesh size {multiple}")

  # ---- state and steps ----------------------------------------------------------------------

  def init_state(self, seed: int, params: Any = None) -> TrainState:
    """The step-0 state: params from the seed, or the given ones (placed in their shardings)
    with a fresh optimizer state."""
    return self._init_state(seed, params)

  def initial_params(self, spec: str, seed: int) -> Any:
    """Params to start from: `spec` is an llmjax run, RUN/checkpoints/STEP or hf:DIR
    (llmjax.weights.load_initial_params); what it lacks (a wrapper's heads) comes from the
    seed. '' gives the seed's params."""
    from llmjax.weights import load_initial_params
    fresh = self.init_state(seed).params
    if not spec:
      return fresh
    return load_initial_params(spec, self.abstract_state.params, self.parallel, fresh)

  def to_device(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assembles global arrays from this process's share of the batch."""
    return {k: jax.make_array_from_process_local_data(self.batch_shardings[k],
                                                      np.asarray(host_batch[k]))
            for k in self.objective.batch_spec.keys}

  def lower_step(self, batch_shapes: dict[str, jax.ShapeDtypeStruct], frozen: Any = None):
    """The train step lowered for these batch shapes (`.compile()` it ahead of time, e.g. for
    XLA's memory analysis); the compiled step is called as step(state, batch, frozen)."""
    with self.parallel.context():
      return self._train_step.lower(self.abstract_state, batch_shapes, frozen)

  def lower_eval(self, batch_shapes: dict[str, jax.ShapeDtypeStruct], frozen: Any = None):
    """The evaluation pass lowered for these batch shapes (as `lower_step`)."""
    carry = self.abstract_state.carry
    with self.parallel.context():
      return self._eval_step.lower(self.abstract_state.params, batch_shapes, frozen, carry)

  def train_step(self, state: TrainState, batch, frozen: Any = None):
    """One step: (state, metrics). `state` is donated."""
    with self.parallel.context():
      return self._train_step(state, batch, frozen)

  def evaluate(self, params, batches: Sequence[dict[str, jax.Array]],
               frozen: Any = None, carry: Any = None) -> dict[str, float]:
    """The objective's evaluation metrics over `batches` (already on device), from sums
    (`carry`: the objective's, e.g. the train state's at this step)."""
    totals = None
    with self.parallel.context():
      for batch in batches:
        sums = self._eval_step(params, batch, frozen, carry)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return self.objective.summarise_eval(jax.device_get(totals))

  # ---- the loop -----------------------------------------------------------------------------

  def fit(self, workdir: str, train_iter: Iterator[dict[str, np.ndarray]],
          eval_batches: Sequence[dict[str, np.ndarray]] = (), seed: int = 0,
          resume: bool = True, frozen: Any = None, init_from: Any = None,
          overwrite: bool = False,
          eval_hook: Callable[[Any, int], Mapping[str, Any]] | None = None,
          eval_at_start: bool = False) -> dict[str, Any]:
    """Runs (or resumes) training to `train.steps` through `llmjax.train.loop.run_loop`.

    Args:
      workdir: the run directory (metrics, TensorBoard, checkpoints).
      train_iter: host batches; a grain iterator's position is checkpointed with the state.
      eval_batches: host batches evaluated every `eval_every` steps and at the end.
      seed: the params' and the steps' randomness.
      resume: continue from the latest checkpoint in workdir, if any.
      overwrite: with resume=False, move an earlier run in workdir aside instead of refusing.
      frozen: params passed to every loss call unchanged (placed in their shardings).
      init_from: what a fresh run starts from: None/'' (the seed; default
        `train.init_from`), a checkpoint spec (llmjax run, RUN/checkpoints/STEP, hf:DIR) or a
        params tree.
      eval_hook: (params, step) -> more metrics for each evaluation's row (e.g. probes scored
        with a runner on the params being trained); called at every evaluation, with or
        without eval_batches.
      eval_at_start: evaluate a fresh run's starting params too (step 0).
    Returns:
      {'step', 'state', 'resumed_from_step', 'stopped_early', 'train' (last logged row),
      'eval' (last evaluation)}.
    """
    if init_from is None:
      init_from = self.config.get("init_from", "")
    program = _TrainerProgram(self, train_iter, [self.to_device(b) for b in eval_batches],
                              seed, frozen, init_from, eval_hook)
    result: LoopResult = run_loop(program, workdir, self.config, resume, overwrite,
                                  eval_at_start=eval_at_start,
                                  progress_keys=("loss", "tokens_per_s"))
    out = {"step": result.step, "state": result.state,
           "resumed_from_step": result.resumed_from_step,
           "stopped_early": result.stopped_early}
    if result.train is not None:
      out["train"] = result.train
    if result.eval:
      out["eval"] = result.eval[0]
    return out


class _TrainerProgram:
  """A Trainer as the loop's TrainProgram: one batch per step."""

  max_steps_per_call = 1
  replicas = None

  def __init__(self, trainer: Trainer, train_iter, eval_batches, seed, frozen, init_from,
               eval_hook=None):
    self.trainer, self.train_iter, self.eval_batches = trainer, train_iter, eval_batches
    self.seed, self.frozen, self.init_from = seed, frozen, init_from
    self.eval_hook = eval_hook
    self.abstract_state = trainer.abstract_state
    # A grain iterator's position is checkpointed with the state; other iterators restart.
    self.data_iterator = train_iter if hasattr(train_iter, "get_state") else None
    self.flops_per_step = trainer.flops_per_step

  def init_state(self):
    params = None
    if isinstance(self.init_from, str) and self.init_from:
      params = self.trainer.initial_params(self.init_from, self.seed)
    elif not isinstance(self.init_from, str) and self.init_from is not None:
      params = self.init_from
    return self.trainer.init_state(self.seed, params)

  def train(self, state, num_steps):
    assert num_steps == 1
    return self.trainer.train_step(state, self.trainer.to_device(next(self.train_iter)),
                                   self.frozen)

  def evaluate(self, state, step):
    row = {}
    if self.eval_batches:
      row.update(self.trainer.evaluate(state.params, self.eval_batches, self.frozen,
                                       state.carry))
    if self.eval_hook is not None:
      row.update(self.eval_hook(state.params, step))
    return [row] if row else []
