"""A toy objective on the engine, used by tests/test_loop.py: both its config file
(`--config tests/toy_objective.py`) and its experiment module (`tests.toy_objective`).

The objective: next-token cross-entropy plus beta * KL(policy || reference) per target token,
with the reference a frozen copy of the initial params — the shape of DPO's and distillation's
steps (a trained model beside a fixed one), on the tiny pretraining data.
"""

import jax
import jax.numpy as jnp
import numpy as np

from llmjax.data.corpora import make_corpus
from llmjax.data.pipeline import lm_batches
from llmjax.data.tokenizers import load_tokenizer
from llmjax.main import load_config_file
from llmjax.models import Decoder, ModelConfig
from llmjax.parallel import Parallel
from llmjax.train.lm import LM_BATCH
from llmjax.train.objective import Objective
from llmjax.train.trainer import Trainer


def get_config():
  config = load_config_file("configs/pretrain.py:tiny")
  config.experiment = "tests.toy_objective"
  config.model.update(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64, max_len=32)
  config.train.update(steps=8, batch_size=4, seq_len=32, log_every=1, eval_every=1000,
                      checkpoint_every=4, progress=False, trainable_params="layer_1/.*")
  config.beta = 0.5
  # Adds sqrt(|logits| * 0): 0 in the loss, NaN in every gradient (tests the NaN guard).
  config.nan_gradients = False
  return config


def kl_regularised_objective(model: Decoder, beta: float,
                             nan_gradients: bool = False) -> Objective:
  def loss_fn(params, batch, rng, frozen):
    del rng
    args = (batch["inputs"], batch["positions"], batch["segment_ids"])
    logits = model.apply({"params": params}, *args).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits)
    ref_logp = jax.nn.log_softmax(model.apply({"params": frozen}, *args).astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
    kl = jnp.sum(jnp.exp(logp) * (logp - ref_logp), -1)
    mask = batch["loss_mask"].astype(jnp.float32)
    loss = ((nll + beta * kl) * mask).sum()
    if nan_gradients:
      loss = loss + jnp.sum(jnp.sqrt(jnp.abs(logits) * 0.0))
    return loss, {"nll": (nll * mask).sum(), "kl": (kl * mask).sum()}

  return Objective(loss_fn, LM_BATCH)


def run(config, workdir: str) -> dict:
  model = Decoder(ModelConfig.from_dict(config.model.to_dict()))
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  trainer = Trainer(model, kl_regularised_objective(model, config.beta, config.nan_gradients),
                    config.train, config.optim, parallel)
  tokenizer = load_tokenizer(config.data.tokenizer)
  batches = lm_batches(make_corpus(config.data)["train"], tokenizer, config.train.seq_len,
                       config.train.batch_size, seed=config.seed)
  # The reference: the params this run starts from, loaded again on every (re)start.
  reference = trainer.initial_params(config.train.init_from, config.seed)
  result = trainer.fit(workdir, iter(batches), seed=config.seed, resume=config.resume,
                       overwrite=config.overwrite,
                       frozen=reference)
  np.savez(f"{workdir}/reference_at_end.npz",
           **{str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(reference))})
  opt_state = result["state"].opt_state
  return {"steps": result["step"], "stopped_early": result["stopped_early"],
          "optimizer_state_size": sum(x.size for x in jax.tree.leaves(opt_state)
                                      if jnp.issubdtype(x.dtype, jnp.floating))}
