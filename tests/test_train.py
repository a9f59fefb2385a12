import itertools

import jax
import jax.numpy as jnp
import optax
import numpy as np
import pytest
import flax.linen as nn

from llmjax.config_base import base_config
from llmjax.data.batches import lm_batch
from llmjax.errors import TrainingDivergedError, UserError
from llmjax.models import ModelConfig
from llmjax.parallel import Parallel
from llmjax.train.flops import measured_cpu_matmul_flops, peak_flops_per_device
from llmjax.train.lm import lm_trainer
from llmjax.train.losses import chunked_cross_entropy, cross_entropy
from llmjax.train.objective import BatchSpec, Objective
from llmjax.train.optim import build_optimizer, decay_mask, learning_rate_schedule
from llmjax.train.trainer import Trainer

MODEL = ModelConfig(vocab_size=32, d_model=32, n_layers=1, n_heads=2, d_ff=64, n_kv_heads=1)


def make_trainer(lr=1e-2, **train):
  config = base_config("lm_pretrain")
  config.train.update(steps=40, batch_size=4, seq_len=16, log_every=1000, eval_every=1000,
                      checkpoint_every=1000, progress=False)
  config.train.update(train)
  config.optim.update(lr=lr, warmup_steps=0, schedule="constant")
  return lm_trainer(MODEL, config.train, config.optim, Parallel.from_config(config.mesh))


def fixed_batch(seed=0, batch=4, length=16):
  rng = np.random.default_rng(seed)
  return lm_batch(rng.integers(3, 32, size=(batch, length + 1)).astype(np.int32))


def test_cross_entropy_matches_numpy_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, size=(2, 5))
  mask = np.array([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0]])
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  loss, sums = cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
  np.testing.assert_allclose(loss, (nll * mask).sum() / mask.sum(), rtol=1e-6)
  assert sums["weight_sum"] == mask.sum()
  log_z = np.log(np.exp(logits).sum(-1))
  z_loss, _ = cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask), 1e-2)
  np.testing.assert_allclose(z_loss - loss, 1e-2 * (log_z ** 2 * mask).sum() / mask.sum(),
                             rtol=1e-5)


def test_tiny_model_overfits_one_batch():
  trainer = make_trainer()
  state = trainer.init_state(0)
  batch = trainer.to_device(fixed_batch())
  losses = []
  for _ in range(60):
    state, metrics = trainer.train_step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[0] > 3.0 and losses[-1] < 0.1, losses[::10]
  assert float(metrics["accuracy"]) == 1.0


def test_gradient_accumulation_equals_full_batch():
  batch = fixed_batch(seed=1, batch=8)
  batch["loss_mask"][0, :10] = 0  # unequal token counts per micro-batch must still weigh right
  results = []
  for accum in (1, 4):
    trainer = make_trainer(batch_size=8, grad_accum_steps=accum)
    state = trainer.init_state(0)
    state, metrics = trainer.train_step(state, trainer.to_device(batch))
    results.append((state.params, metrics))
  (params_1, metrics_1), (params_4, metrics_4) = results
  np.testing.assert_allclose(metrics_1["loss"], metrics_4["loss"], rtol=1e-6)
  # Throughput counts the tokens the loss covers (the mask), not batch x length.
  assert float(metrics_1["loss_tokens"]) == float(metrics_4["loss_tokens"]) == (
      batch["loss_mask"].sum()) == 8 * 16 - 10
  np.testing.assert_allclose(metrics_1["grad_norm"], metrics_4["grad_norm"], rtol=1e-5)
  # Adam divides by sqrt(v): float noise in tiny gradients shows up at ~1e-6 of a 1e-2 step.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), params_1, params_4)


def dense_trainer(nan_gradients: bool, **train):
  """A Dense layer fitting ones; with `nan_gradients` the loss gains sqrt(|out| * 0), which is
  0 while its gradient is 0 * inf = NaN: a finite loss whose update poisons every param."""
  config = base_config("x")
  config.train.update(steps=4, batch_size=2, seq_len=4, log_every=1, checkpoint_every=1,
                      progress=False)
  config.train.update(train)
  model = nn.Dense(3)

  def loss_fn(params, batch, rng, frozen):
    out = model.apply({"params": params}, batch["x"])
    loss = jnp.sum((out - 1.0) ** 2)
    return loss + (jnp.sum(jnp.sqrt(jnp.abs(out) * 0.0)) if nan_gradients else 0.0), {}

  return Trainer(model, Objective(loss_fn, BatchSpec(("x",))), config.train, config.optim,
                 Parallel.from_config(config.mesh), example_inputs=(jnp.zeros((1, 5)),))


DENSE_BATCHES = itertools.repeat({"x": np.ones((2, 5), np.float32)})


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path):
  good = dense_trainer(False, steps=40, checkpoint_every=5, log_every=5)
  good.fit(str(tmp_path), DENSE_BATCHES, resume=False)  # steps 5..40 saved
  # Resumed with NaN gradients: the update of step 41 poisons the params, the loss of the
  # steps after it is NaN, and the log at step 45 stops the run before its checkpoint.
  bad = dense_trainer(True, steps=60, checkpoint_every=5, log_every=5)
  with pytest.raises(TrainingDivergedError, match="loss is nan at step 45.*step 40"):
    bad.fit(str(tmp_path), DENSE_BATCHES)
  assert (tmp_path / "checkpoints" / "40").exists()
  assert not (tmp_path / "checkpoints" / "45").exists()


def test_resume_false_never_mixes_a_new_history_into_old_checkpoints(tmp_path):
  # The loop's own guard: experiments that train in subfolders (the coverage sweep) have it too.
  dense_trainer(False, steps=2).fit(str(tmp_path), DENSE_BATCHES)
  with pytest.raises(UserError, match=r"holds checkpoints of an earlier run \(steps \[1, 2\]\)"):
    dense_trainer(False, steps=2).fit(str(tmp_path), DENSE_BATCHES, resume=False)
  dense_trainer(False, steps=1).fit(str(tmp_path), DENSE_BATCHES, resume=False, overwrite=True)
  moved = [p for p in tmp_path.iterdir() if p.name.startswith("replaced-")]
  assert len(moved) == 1 and sorted(p.name for p in (moved[0] / "checkpoints").iterdir()
                                    if p.name.isdigit()) == ["1", "2"]
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]


def test_the_step_is_plain_cross_entropy_gradient_and_adamw():
  # The Objective-built step against the update written out directly: value_and_grad of the
  # masked mean cross-entropy, clipping and AdamW from optax, nothing else.
  import optax
  trainer = make_trainer(lr=1e-2)
  state = trainer.init_state(0)
  batch = fixed_batch(seed=4)
  batch["loss_mask"][1, :5] = 0
  params = jax.tree.map(jnp.copy, state.params)
  model = trainer.model

  def loss(p):
    logits = model.apply({"params": p}, batch["inputs"], batch["positions"],
                         batch["segment_ids"]).astype(jnp.float32)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["targets"][..., None], -1)
    mask = batch["loss_mask"]
    return (nll[..., 0] * mask).sum() / mask.sum()

  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(1e-2, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                               mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))

  @jax.jit  # one program for the reference (op by op it compiles hundreds of small ones)
  def reference_step(params):
    value, grads = jax.value_and_grad(loss)(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return value, grads, optax.apply_updates(params, updates)

  value, grads, expected = reference_step(params)
  state, metrics = trainer.train_step(state, trainer.to_device(batch))
  np.testing.assert_allclose(metrics["loss"], value, rtol=1e-6)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), state.params, expected)


def test_finite_loss_with_non_finite_gradients_never_saves_a_checkpoint(tmp_path):
  with pytest.raises(TrainingDivergedError,
                     match="parameters are not finite at step 1; .*no good checkpoint"):
    dense_trainer(True).fit(str(tmp_path), DENSE_BATCHES)
  assert not any(p.name.isdigit() for p in (tmp_path / "checkpoints").iterdir())


def test_schedules_and_decay_mask():
  config = base_config("x").optim
  config.update(lr=1.0, warmup_steps=10, schedule="cosine", end_lr_fraction=0.1)
  schedule = learning_rate_schedule(config, total_steps=110)
  assert float(schedule(0)) == 0.0 and float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.55, rel=1e-4)
  assert float(schedule(110)) == pytest.approx(0.1, rel=1e-4)
  config.schedule = "linear"
  assert float(learning_rate_schedule(config, 110)(60)) == pytest.approx(0.55, rel=1e-4)
  params = {"kernel": jnp.ones((2, 2)), "scale": jnp.ones(2), "bias": jnp.ones(2)}
  assert decay_mask(params) == {"kernel": True, "scale": False, "bias": False}
  config.update(warmup_ratio=0.1, schedule="constant")  # a tenth of 200 steps: 20
  ratio = learning_rate_schedule(config, 200)
  assert float(ratio(10)) == pytest.approx(0.5) and float(ratio(20)) == pytest.approx(1.0)


def test_rmsprop_steps_as_torchs_rmsprop():
  """optim.name = rmsprop (Self-Explore's DPO optimizer through HF's Trainer) against
  torch.optim.RMSprop on the same gradients: alpha 0.99, eps outside the root, L2 decay."""
  torch = pytest.importorskip("torch")
  config = base_config("x").optim
  config.update(name="rmsprop", lr=0.01, warmup_steps=0, schedule="constant", eps=1e-8,
                weight_decay=0.1, clip_norm=0.0)
  tx, _ = build_optimizer(config, total_steps=10)
  rng = np.random.default_rng(0)
  start = rng.normal(size=(3, 4)).astype(np.float32)
  grads = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(5)]
  params = {"kernel": jnp.asarray(start)}
  state = tx.init(params)
  weight = torch.nn.Parameter(torch.tensor(start))
  reference = torch.optim.RMSprop([weight], lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.1)
  for g in grads:
    updates, state = tx.update({"kernel": jnp.asarray(g)}, state, params)
    params = optax.apply_updates(params, updates)
    weight.grad = torch.tensor(g)
    reference.step()
  np.testing.assert_allclose(params["kernel"], weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_epochs_set_the_steps_from_the_data(capsys):
  from llmjax.train.epochs import steps_from_epochs
  train = base_config("x").train
  assert steps_from_epochs(train, 12.5, "data") is train  # epochs 0: train.steps as given
  train.epochs = 3.0
  resolved = steps_from_epochs(train, 12.5, "100 pairs")
  assert (resolved.steps, train.steps) == (38, 1000)  # ceil(37.5); the config is not changed
  assert "train.epochs = 3 over 100 pairs (12.5 steps per epoch): 38 steps" in (
      capsys.readouterr().err)


@pytest.mark.parametrize("name", ["adamw", "sgd", "adafactor", "rmsprop"])
def test_weight_decay_skips_norms_and_biases(name):
  config = base_config("x").optim
  config.update(name=name, lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.5,
                clip_norm=0.0)
  tx, _ = build_optimizer(config, total_steps=10)
  params = {"kernel": jnp.ones((4, 4)), "scale": jnp.ones(4)}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  assert float(jnp.abs(updates["kernel"]).sum()) > 0  # decayed although the gradient is zero
  np.testing.assert_array_equal(updates["scale"], 0.0)


def test_cpu_peak_is_the_measured_matmul_rate_shared_by_local_devices():
  measured = measured_cpu_matmul_flops()
  assert 1e9 < measured < 1e14, measured  # a 2048^3 f32 matmul takes 0.2 ms to 17 s
  assert peak_flops_per_device() == measured / jax.local_device_count()
  assert peak_flops_per_device(5e12) == 5e12


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_chunked_cross_entropy_matches_full_logits(z_loss):
  # L = 13 is no multiple of the chunk (padding), the mask has holes, gradients for both inputs.
  rng = np.random.default_rng(3)
  hidden = jnp.asarray(rng.normal(size=(2, 13, 8)), jnp.float32)
  unembed = jnp.asarray(rng.normal(size=(8, 11)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 11, size=(2, 13)))
  mask = jnp.asarray(rng.integers(0, 2, size=(2, 13)))

  def full(h, w):
    return cross_entropy(jnp.einsum("bld,dv->blv", h, w), targets, mask, z_loss)

  def chunked(h, w):
    return chunked_cross_entropy(h, w, targets, mask, chunk_len=4, z_loss=z_loss)

  (expected, expected_sums), expected_grads = jax.value_and_grad(full, (0, 1), has_aux=True)(
      hidden, unembed)
  (got, got_sums), got_grads = jax.value_and_grad(chunked, (0, 1), has_aux=True)(hidden,
                                                                                  unembed)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  for key in ("nll_sum", "correct_sum", "weight_sum"):
    np.testing.assert_allclose(got_sums[key], expected_sums[key], rtol=1e-6)
  for a, b in zip(got_grads, expected_grads):
    np.testing.assert_allclose(a, b, atol=1e-6)
  np.testing.assert_allclose(jax.jit(chunked)(hidden, unembed)[0], expected, rtol=1e-6)


def test_chunked_loss_trains_like_full_logits_in_less_memory():
  # Tied embeddings: the unembedding is the transposed table (untied: tests/test_models.py).
  model = ModelConfig(vocab_size=2048, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                      tie_embeddings=True)
  batch = fixed_batch(seed=2, batch=4, length=64)
  batch["targets"] = (batch["targets"] * 61) % 2048  # use the whole vocabulary
  batch["loss_mask"][1, :30] = 0
  results = []
  for chunk in (0, 16):
    config = base_config("lm_pretrain")
    config.train.update(steps=10, batch_size=4, seq_len=64, loss_chunk_len=chunk, z_loss=1e-3)
    trainer = lm_trainer(model, config.train, config.optim, Parallel.from_config(config.mesh))
    abstract_batch = {k: jax.ShapeDtypeStruct((4, 64), jnp.int32) for k in batch}
    # Compiled once: for the memory analysis and the steps.
    step = trainer.lower_step(abstract_batch).compile()
    state = trainer.init_state(0)
    device_batch = trainer.to_device(batch)
    for _ in range(2):
      state, metrics = step(state, device_batch, None)
    evaluated = trainer.evaluate(state.params, [device_batch])
    results.append((state.params, metrics, evaluated, step.memory_analysis().temp_size_in_bytes))
  (full_params, full, full_eval, full_bytes), (params, chunked, chunked_eval, chunked_bytes) = (
      results)
  for key in ("loss", "accuracy", "grad_norm"):
    np.testing.assert_allclose(chunked[key], full[key], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), params, full_params)
  assert chunked_eval == pytest.approx(full_eval, rel=1e-6)
  # Full logits: [4, 64, 2048] f32 = 2 MiB per buffer, several of them; chunks of 16 need 1/4.
  assert chunked_bytes < 0.6 * full_bytes, (chunked_bytes, full_bytes)
