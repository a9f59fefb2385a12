"""A decoder wrapped with extra heads keeps what the engine does with a plain Decoder:
the unembedding, Hugging Face export and import, the sharding rules, the runners, and
initial params from hf:DIR in training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from llmjax.config_base import base_config
from llmjax.infer import Generator, SamplingParams
from llmjax.interop import load_hf, save_hf
from llmjax.models import (Decoder, DecoderWithHeads, ModelConfig, decoder_params,
                           params_layout, unembedding)
from llmjax.parallel import Parallel
from llmjax.train.objective import BatchSpec, Objective
from llmjax.train.trainer import Trainer

CONFIG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                     rope_theta=10_000.0)
HEADS = (("stop", 1, 0), ("latent", 8, 16))


@pytest.fixture(scope="module")
def wrapper():
  model = DecoderWithHeads(CONFIG, HEADS)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, params


def test_wrapper_logits_are_its_decoders(wrapper):
  model, params = wrapper
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 9), 0, 64)
  logits, heads = model.apply({"params": params}, tokens)
  np.testing.assert_array_equal(logits, Decoder(CONFIG).apply(
      {"params": params["decoder"]}, tokens))
  assert heads["stop"].shape == (2, 9, 1) and heads["latent"].shape == (2, 9, 8)
  np.testing.assert_array_equal(unembedding(params, CONFIG),
                                unembedding(params["decoder"], CONFIG))
  # The runners take a wrapper's params as they are.
  generator = Generator(CONFIG, batch_size=2, length_bucket=8)
  sampling = SamplingParams(max_new_tokens=4)
  assert ([c[0].tokens for c in generator.generate_ids(params, [[1, 2, 3]], sampling)]
          == [c[0].tokens for c in generator.generate_ids(params["decoder"], [[1, 2, 3]],
                                                          sampling)])


def test_wrapper_params_follow_the_logical_rules():
  layout = params_layout(DecoderWithHeads(CONFIG, HEADS), Parallel.from_config({"data": -1}),
                         jnp.zeros((1, 4), jnp.int32))
  spec = lambda x: tuple(x.sharding.spec)  # noqa: E731
  assert spec(layout["decoder"]["layer_0"]["attn"]["query"]["kernel"]) == (
      "fsdp", "tensor", None)
  assert spec(layout["head_latent"]["in"]["kernel"]) == ("fsdp", "tensor")
  assert spec(layout["head_latent"]["out"]["kernel"]) == ("tensor", None)


@pytest.mark.slow
def test_wrapper_exports_to_transformers_and_starts_training_from_hf(wrapper, tmp_path):
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  model, params = wrapper
  save_hf(str(tmp_path), CONFIG, params)  # the decoder part
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  tokens = np.random.RandomState(2).randint(0, 64, (2, 7))
  with torch.no_grad():
    theirs = reloaded(torch.tensor(tokens)).logits.numpy()
  ours, _ = model.apply({"params": params}, jnp.asarray(tokens))
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
  _, imported, _ = load_hf(str(tmp_path))

  config = base_config("heads")
  config.train.update(steps=2, batch_size=2, seq_len=8, progress=False)

  def loss_fn(p, batch, rng, frozen):  # an LM loss plus a loss on the stop head
    logits, heads = model.apply({"params": p}, batch["inputs"])
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, batch["targets"][..., None], -1).sum()
    return nll + jnp.sum(heads["stop"] ** 2), {}

  trainer = Trainer(model, Objective(loss_fn, BatchSpec(("inputs", "targets"))), config.train,
                    config.optim, Parallel.from_config(config.mesh),
                    example_inputs=(jnp.zeros((1, 8), jnp.int32),))
  start = trainer.initial_params(f"hf:{tmp_path}", seed=3)
  fresh = trainer.init_state(3).params
  jax.tree.map(np.testing.assert_array_equal, decoder_params(start), imported)
  jax.tree.map(np.testing.assert_array_equal, start["head_stop"], fresh["head_stop"])
  state = trainer.init_state(3, start)
  rows = np.random.RandomState(4).randint(0, 64, (2, 9)).astype(np.int32)
  state, metrics = trainer.train_step(
      state, trainer.to_device({"inputs": rows[:, :-1], "targets": rows[:, 1:]}))
  assert np.isfinite(float(metrics["loss"])) and int(state.step) == 1
