import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from conftest import slow_after_first
from llmjax.errors import UserError
from llmjax.models import (Decoder, ModelConfig, apply_with_probes, token_embeddings,
                           unembedding)
from llmjax.models.layers import (apply_rope, attention_mask, plain_causal_mask, probe_collection,
                                  rope_sin_cos)

FAMILIES = {
    "llama": dict(activation="swiglu", norm="rmsnorm", positions="rope", n_kv_heads=2),
    "gpt2": dict(activation="gelu", norm="layernorm", positions="learned", qkv_bias=True,
                 out_bias=True, mlp_bias=True, tie_embeddings=True),
    "olmo": dict(activation="swiglu", norm="layernorm_nonparam", positions="rope"),
    "grokking": dict(activation="relu", norm="none", positions="learned", n_layers=1),
    "mistral": dict(n_kv_heads=1, sliding_window=4),
}


def compiled_grad(loss):
  """jax.grad of loss(model, params) in params, jitted: at the suite's XLA optimization level one
  compile is faster than running the backward pass op by op (12 -> 5 s for the chunked-attention
  test, 18 -> 9 s for the fused-attention one)."""
  return jax.jit(jax.grad(loss, 1), static_argnums=0)


def make(**overrides):
  values = dict(vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=16)
  values.update(overrides)
  config = ModelConfig(**values)
  model = Decoder(config)
  tokens = jnp.zeros((2, 12), jnp.int32)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), tokens)["params"])
  return config, model, params


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_causal_and_parameter_count(family):
  config, model, params = make(**FAMILIES[family])
  assert sum(p.size for p in jax.tree.leaves(params)) == config.num_params()
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, 50)
  changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % 50)
  a = model.apply({"params": params}, tokens)
  b = model.apply({"params": params}, changed)
  np.testing.assert_array_equal(a[:, :7], b[:, :7])  # bit-identical before the change
  assert not np.allclose(a[:, 7:], b[:, 7:])


def test_gqa_equals_mha_with_repeated_kv_heads():
  gqa_config, gqa, gqa_params = make(n_kv_heads=2)
  mha_config, mha, mha_params = make(n_kv_heads=4)
  repeated = jax.tree.map(lambda x: x, gqa_params)
  for i in range(gqa_config.n_layers):
    attn = dict(repeated[f"layer_{i}"]["attn"])
    for name in ("key", "value"):
      attn[name] = {"kernel": jnp.repeat(attn[name]["kernel"], 2, axis=1)}  # [D, V, K] -> [D, H, K]
    repeated[f"layer_{i}"] = {**repeated[f"layer_{i}"], "attn": attn}
  assert jax.tree.structure(repeated) == jax.tree.structure(mha_params)
  tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 12), 0, 50)
  np.testing.assert_allclose(gqa.apply({"params": gqa_params}, tokens),
                             mha.apply({"params": repeated}, tokens), atol=1e-5)


def test_packed_segments_equal_separate_documents():
  config, model, params = make(n_kv_heads=2)
  doc_a = jax.random.randint(jax.random.PRNGKey(3), (1, 5), 0, 50)
  doc_b = jax.random.randint(jax.random.PRNGKey(4), (1, 7), 0, 50)
  packed = jnp.concatenate([doc_a, doc_b], axis=1)
  segments = jnp.array([[1] * 5 + [2] * 7])
  positions = jnp.array([list(range(5)) + list(range(7))])
  out = model.apply({"params": params}, packed, positions, segments)
  np.testing.assert_allclose(out[:, :5], model.apply({"params": params}, doc_a), atol=1e-5)
  np.testing.assert_allclose(out[:, 5:], model.apply({"params": params}, doc_b), atol=1e-5)


def test_left_padding_matches_unpadded():
  config, model, params = make(**FAMILIES["llama"])
  tokens = jax.random.randint(jax.random.PRNGKey(5), (1, 6), 0, 50)
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), tokens], axis=1)
  mask = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  out = model.apply({"params": params}, padded, positions, mask)
  np.testing.assert_allclose(out[:, 3:], model.apply({"params": params}, tokens), atol=1e-5)


def test_sliding_window_limits_attention_span():
  config, model, params = make(**FAMILIES["mistral"])
  tokens = jax.random.randint(jax.random.PRNGKey(6), (1, 12), 0, 50)
  changed = tokens.at[:, 0].set((tokens[:, 0] + 1) % 50)
  a, b = (model.apply({"params": params}, t) for t in (tokens, changed))
  # Two layers of window 4 see at most 6 tokens back: position 7 onwards ignore token 0.
  np.testing.assert_array_equal(a[:, 7:], b[:, 7:])
  assert not np.allclose(a[:, :4], b[:, :4])


def test_probes_do_not_change_logits_and_have_layer_shapes():
  config, model, params = make(n_kv_heads=2)
  tokens = jax.random.randint(jax.random.PRNGKey(7), (2, 12), 0, 50)
  plain = model.apply({"params": params}, tokens)
  logits, probes = apply_with_probes(model, params, tokens)
  np.testing.assert_array_equal(plain, logits)
  assert probes["residual"].shape == (2, 2, 12, 32)
  assert probes["ffn_hidden"].shape == (2, 2, 12, 64)
  assert probes["attn_probs"].shape == (2, 2, 4, 12, 12)
  np.testing.assert_allclose(probes["attn_probs"].sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.triu(probes["attn_probs"][0, 0, 0], k=1), 0.0)


def test_rope_depends_only_on_relative_position():
  q = jax.random.normal(jax.random.PRNGKey(8), (1, 1, 1, 16))
  k = jax.random.normal(jax.random.PRNGKey(9), (1, 1, 1, 16))
  def score(pq, pk):
    def rotate(x, position):
      return apply_rope(x, rope_sin_cos(jnp.array([[position]]), 16, 16, 1e4))
    return (rotate(q, pq) * rotate(k, pk)).sum()
  np.testing.assert_allclose(score(5, 2), score(13, 10), rtol=1e-5)
  assert not np.isclose(score(5, 2), score(5, 3))


def test_rope_tables_equal_the_formula_and_reject_positions_outside():
  positions = jnp.array([[0, 3, 17, 63], [62, 1, 5, 8]])
  for scaling in (None, (8.0, 1.0, 4.0, 16)):
    sin, cos = rope_sin_cos(positions, 64, 16, 500.0, scaling)
    inv_freq = 1.0 / 500.0 ** (np.arange(8) / 8)
    if scaling:  # Llama 3: wavelengths above 16 tokens slowed 8x, below 4 kept, blended between
      wavelen = 2 * np.pi / inv_freq
      smooth = (16 / wavelen - 1.0) / 3.0
      inv_freq = np.where(wavelen > 16, inv_freq / 8,
                          np.where(wavelen < 4, inv_freq,
                                   (1 - smooth) * inv_freq / 8 + smooth * inv_freq))
    angles = np.asarray(positions)[..., None] * inv_freq
    np.testing.assert_allclose(sin, np.sin(angles), atol=1e-5)  # f32 angles
    np.testing.assert_allclose(cos, np.cos(angles), atol=1e-5)
  sin, cos = rope_sin_cos(jnp.array([[-1, 0, 64]]), 64, 16, 1e4)
  assert np.isnan(sin[0, [0, 2]]).all() and np.isnan(cos[0, [0, 2]]).all()
  assert np.isfinite(sin[0, 1]).all()


@pytest.mark.parametrize("family", slow_after_first("llama", "gpt2", "mistral"))
def test_query_chunks_compute_what_one_chunk_does(family):
  # Chunks of 5 over 12 positions (5, 5, 2) skip the keys after each chunk: packing, padding,
  # GQA, a sliding window and a last-positions readout must all come out the same, gradients too.
  _, whole, params = make(**FAMILIES[family], attention_chunk=0)
  _, chunked, _ = make(**FAMILIES[family], attention_chunk=5)
  tokens = jax.random.randint(jax.random.PRNGKey(13), (2, 12), 0, 50)
  segments = jnp.array([[0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2], [1] * 12])
  positions = jnp.array([[0, 0, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4], list(range(12))])
  real = np.asarray(segments > 0)  # padded query rows attend to nothing; not used

  def loss(model, p):
    logits = model.apply({"params": p}, tokens, positions, segments)
    return jnp.sum(jnp.where(real[..., None], logits, 0.0) ** 2)

  expected = whole.apply({"params": params}, tokens, positions, segments)
  got = chunked.apply({"params": params}, tokens, positions, segments)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(expected)[real], atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               compiled_grad(loss)(chunked, params), compiled_grad(loss)(whole, params))
  np.testing.assert_allclose(chunked.apply({"params": params}, tokens, last_positions=3),
                             whole.apply({"params": params}, tokens)[:, -3:], atol=1e-5)
  probes = [apply_with_probes(m, params, tokens, probes=["attn_probs"])[1]["attn_probs"]
            for m in (chunked, whole)]
  np.testing.assert_allclose(probes[0], probes[1], atol=1e-6)


def test_bf16_compute_keeps_f32_params():
  config, model, params = make(dtype="bfloat16")
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert model.apply({"params": params}, jnp.zeros((1, 4), jnp.int32)).dtype == jnp.bfloat16


@pytest.mark.parametrize("bad, message", [
    (dict(activation="tanh"), "model.activation = 'tanh'"),
    (dict(n_kv_heads=3), "model.n_kv_heads = 3: expected a divisor of n_heads=4"),
    (dict(norm="batchnorm"), "model.norm"),
])
def test_bad_model_config_names_the_field(bad, message):
  with pytest.raises(UserError, match=message.replace("(", r"\(")):
    make(**bad)


def test_from_dict_rejects_unknown_field():
  with pytest.raises(UserError, match="model.dmodel: not a model field"):
    ModelConfig.from_dict(dict(vocab_size=8, d_model=8, n_layers=1, n_heads=1, d_ff=8, dmodel=3))


@pytest.mark.parametrize("family", ["llama", "grokking"])
def test_last_positions_readout_equals_full_forward(family):
  config, model, params = make(**FAMILIES[family])
  tokens = jax.random.randint(jax.random.PRNGKey(10), (3, 12), 0, 50)
  full = model.apply({"params": params}, tokens)
  last = model.apply({"params": params}, tokens, last_positions=2)
  assert last.shape == (3, 2, 50)
  np.testing.assert_allclose(last, full[:, -2:], atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # untied and tied embeddings
def test_hidden_states_times_the_unembedding_are_the_logits(family):
  config, model, params = make(**FAMILIES[family])
  tokens = jax.random.randint(jax.random.PRNGKey(15), (2, 12), 0, 50)
  hidden = model.apply({"params": params}, tokens, return_hidden=True)
  assert hidden.shape == (2, 12, config.d_model)
  np.testing.assert_allclose(hidden @ unembedding(params, config),
                             model.apply({"params": params}, tokens), atol=1e-5)


def test_llama_1b_preset_has_the_published_parameter_count():
  from llmjax.main import load_config_file
  config = load_config_file("configs/pretrain.py:llama_1b")
  model = ModelConfig.from_dict(config.model.to_dict())
  assert model.num_params() == 1_235_814_400  # Llama 3.2 1B


@pytest.mark.parametrize("family", slow_after_first("llama", "gpt2", "mistral"))
def test_dot_product_attention_matches_einsum(family):
  # Two batches: one with padding and packing (the masked path) and one document per row (the
  # kernel's built-in causal mask, with mistral's sliding window); values and gradients.
  _, einsum_model, params = make(**FAMILIES[family])
  _, fused_model, _ = make(**FAMILIES[family], attention_impl="dot_product")
  tokens = jax.random.randint(jax.random.PRNGKey(11), (2, 12), 0, 50)
  packed = (jnp.array([[0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2], [1] * 12]),
            jnp.array([[0, 0, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4], list(range(12))]))
  plain = (jnp.ones((2, 12), jnp.int32), jnp.tile(jnp.arange(12), (2, 1)))

  # One compile per model for both batches: twice as fast as running the ops eagerly.
  @functools.partial(jax.jit, static_argnums=0)
  def loss_logits_and_grads(model, p, segments, positions):
    def loss(p):  # padded query rows attend to nothing; their outputs are not used
      logits = model.apply({"params": p}, tokens, positions, segments)
      return jnp.sum(jnp.where((segments > 0)[..., None], logits, 0.0) ** 2), logits
    return jax.value_and_grad(loss, has_aux=True)(p)

  for segments, positions in (packed, plain):
    (expected_loss, expected), expected_grads = loss_logits_and_grads(einsum_model, params,
                                                                      segments, positions)
    (got_loss, got), got_grads = loss_logits_and_grads(fused_model, params, segments, positions)
    real = segments > 0
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(expected)[real], atol=2e-5)
    np.testing.assert_allclose(got_loss, expected_loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), got_grads,
                 expected_grads)
  last = fused_model.apply({"params": params}, tokens, *plain[::-1], last_positions=3)
  np.testing.assert_allclose(last, einsum_model.apply({"params": params}, tokens)[:, -3:],
                             atol=2e-5)


def test_dot_product_attention_in_bf16_matches_einsum():
  # bf16 is where a GPU takes cuDNN flash attention (XLA's implementation on CPU): this is the
  # check to run on a GPU. A packed batch (masked path) and a plain one (causal fast path).
  _, einsum_model, params = make(n_kv_heads=2, dtype="bfloat16", d_head=16)
  _, fused_model, _ = make(n_kv_heads=2, dtype="bfloat16", d_head=16,
                           attention_impl="dot_product")
  tokens = jax.random.randint(jax.random.PRNGKey(14), (2, 12), 0, 50)
  for segments in (jnp.array([[1] * 5 + [2] * 7, [1] * 12]), jnp.ones((2, 12), jnp.int32)):
    positions = jnp.where(segments == 2, jnp.arange(12) - 5, jnp.arange(12))
    expected, got = (np.asarray(m.apply({"params": params}, tokens, positions, segments),
                                np.float32) for m in (einsum_model, fused_model))
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 2e-2


@pytest.mark.parametrize("window", [None, 2, 4])
def test_plain_causal_mask_is_the_mask_of_one_document_per_row(window):
  # dot_product attention swaps the mask for the kernel's causal one exactly when they agree.
  segments, positions = jnp.ones((2, 9), jnp.int32), jnp.tile(jnp.arange(9), (2, 1))
  mask = attention_mask(segments, positions, window)
  np.testing.assert_array_equal(mask, np.broadcast_to(plain_causal_mask(9, window), mask.shape))
  for other in (segments.at[0, 7:].set(2), segments.at[1, :2].set(0)):  # packed, padded
    assert not np.array_equal(attention_mask(other, positions, window),
                              np.broadcast_to(plain_causal_mask(9, window), mask.shape))


def _stack_layers(params, n_layers):
  """Unrolled per-layer parameters -> the scanned layout params['layers']['block']."""
  layers = [params[f"layer_{i}"] for i in range(n_layers)]
  rest = {k: v for k, v in params.items() if not k.startswith("layer_")}
  return {**rest, "layers": {"block": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}}


@pytest.mark.parametrize("remat", slow_after_first("full", "none", "dots_saveable"))
def test_scanned_and_rematerialised_layers_compute_the_same(remat):
  config, model, params = make(n_kv_heads=2, n_layers=3)
  _, scanned, scanned_params = make(n_kv_heads=2, n_layers=3, scan_layers=True, remat=remat)
  stacked = _stack_layers(params, 3)
  assert jax.tree.structure(stacked) == jax.tree.structure(scanned_params)
  tokens = jax.random.randint(jax.random.PRNGKey(12), (2, 12), 0, 50)

  def loss(model, p):
    return jnp.mean(model.apply({"params": p}, tokens) ** 2)

  np.testing.assert_allclose(loss(scanned, stacked), loss(model, params), rtol=1e-5)
  grads, scanned_grads = jax.grad(loss, 1)(model, params), jax.grad(loss, 1)(scanned, stacked)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               _stack_layers(grads, 3), scanned_grads)
  last = scanned.apply({"params": stacked}, tokens, last_positions=1)
  np.testing.assert_allclose(last[:, 0], model.apply({"params": params}, tokens)[:, -1],
                             atol=1e-5)
  _, probes = apply_with_probes(scanned, stacked, tokens)
  assert probes["residual"].shape == (3, 2, 12, 32)
  assert probes["attn_probs"].shape == (3, 2, 4, 12, 12)


def test_folded_first_layer_projections_equal_the_plain_ones():
  # norm='none' without dropout folds layer 0's projections into the embedding tables; a
  # dropout rate (inactive when deterministic) keeps the plain path, with the same parameters.
  _, folded, params = make(**FAMILIES["grokking"])
  _, plain, _ = make(**FAMILIES["grokking"], dropout=0.1)
  tokens = jax.random.randint(jax.random.PRNGKey(13), (4, 12), 0, 50)
  for last in (None, 1):
    np.testing.assert_allclose(folded.apply({"params": params}, tokens, last_positions=last),
                               plain.apply({"params": params}, tokens, last_positions=last),
                               atol=1e-5)
  grad = lambda m: compiled_grad(lambda m, p: jnp.mean(m.apply({"params": p}, tokens) ** 2))(  # noqa
      m, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grad(folded),
               grad(plain))


# ---- input embeddings, mask modes, probes by name ----------------------------------------------

@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_token_embeddings_fed_as_input_embeddings_give_the_token_logits(family):
  config, model, params = make(**FAMILIES[family])
  tokens = jax.random.randint(jax.random.PRNGKey(20), (2, 12), 0, 50)
  expected = model.apply({"params": params}, tokens)
  vectors = token_embeddings(params, config, tokens)
  np.testing.assert_array_equal(model.apply({"params": params}, embeddings_BxLxD=vectors),
                                expected)
  # Tokens with some positions replaced: exactly the logits of the fully given vectors.
  other = jax.random.normal(jax.random.PRNGKey(21), vectors.shape)
  replace = jnp.zeros((2, 12), bool).at[:, 3].set(True).at[1, 8].set(True)
  mixed = model.apply({"params": params}, tokens, embeddings_BxLxD=other,
                      embedding_mask_BxL=replace)
  whole = model.apply({"params": params},
                      embeddings_BxLxD=jnp.where(replace[..., None], other, vectors))
  np.testing.assert_array_equal(mixed, whole)
  np.testing.assert_array_equal(mixed[:, :3], expected[:, :3])  # causal: before the change
  assert not np.allclose(mixed[:, 3:], expected[:, 3:])


def _changes_at(model, params, tokens, changed_position, **kwargs):
  """Per position, whether the output moves when the token at `changed_position` changes."""
  changed = tokens.at[:, changed_position].set((tokens[:, changed_position] + 1) % 50)
  a = model.apply({"params": params}, tokens, **kwargs)
  b = model.apply({"params": params}, changed, **kwargs)
  return np.abs(np.asarray(a - b)).max(axis=(0, 2)) > 1e-6


@pytest.mark.parametrize("impl", ["einsum", "dot_product"])
def test_bidirectional_and_prefix_lm_masks(impl):
  _, model, params = make(**FAMILIES["llama"], attention_impl=impl, attention_chunk=4)
  tokens = jax.random.randint(jax.random.PRNGKey(22), (2, 12), 0, 50)
  causal = _changes_at(model, params, tokens, 5)
  assert not causal[:5].any() and causal[5:].all()
  encoder = _changes_at(model, params, tokens, 5, mask_mode="bidirectional")
  assert encoder.all()  # every position sees a later token
  prefix = jnp.broadcast_to(jnp.arange(12) < 6, (2, 12))  # the first 6 tokens
  inside = _changes_at(model, params, tokens, 4, mask_mode="prefix_lm", prefix_mask_BxL=prefix)
  assert inside.all()  # a change inside the prefix reaches the earlier prefix tokens too
  outside = _changes_at(model, params, tokens, 8, mask_mode="prefix_lm", prefix_mask_BxL=prefix)
  assert not outside[:8].any() and outside[8:].all()  # after the prefix: causal
  # The einsum path's causal query chunks are off for non-causal masks: same as one chunk.
  _, whole, _ = make(**FAMILIES["llama"], attention_chunk=0)
  np.testing.assert_allclose(
      model.apply({"params": params}, tokens, mask_mode="prefix_lm", prefix_mask_BxL=prefix),
      whole.apply({"params": params}, tokens, mask_mode="prefix_lm", prefix_mask_BxL=prefix),
      atol=1e-5)


def test_prefix_lm_respects_segments_and_the_config_mode():
  _, model, params = make(**FAMILIES["llama"], mask_mode="bidirectional")
  tokens = jax.random.randint(jax.random.PRNGKey(23), (1, 12), 0, 50)
  segments = jnp.array([[1] * 6 + [2] * 6])
  positions = jnp.array([list(range(6)) * 2])
  moved = _changes_at(model, params, tokens, 8, positions_BxL=positions,
                      segment_ids_BxL=segments)
  assert not moved[:6].any() and moved[6:].all()  # the encoder sees its own document only
  with pytest.raises(ValueError, match="prefix_mask_BxL"):
    model.apply({"params": params}, tokens, mask_mode="prefix_lm")


@pytest.mark.parametrize("scan", slow_after_first(False, True))
def test_probes_by_name_on_both_attention_paths(scan):
  results = {}
  for impl in ("einsum", "dot_product"):
    config, model, params = make(n_kv_heads=2, attention_impl=impl, scan_layers=scan)
    tokens = jax.random.randint(jax.random.PRNGKey(24), (2, 12), 0, 50)
    logits, probes = apply_with_probes(model, params, tokens)
    np.testing.assert_array_equal(logits, model.apply({"params": params}, tokens))
    assert probes["attn_probs"].shape == (2, 2, 4, 12, 12)
    np.testing.assert_allclose(probes["attn_probs"].sum(-1), 1.0, atol=1e-5)
    results[impl] = probes
    _, only_ffn = apply_with_probes(model, params, tokens, probes=["ffn_hidden"])
    assert set(only_ffn) == {"ffn_hidden"}
    np.testing.assert_array_equal(only_ffn["ffn_hidden"], probes["ffn_hidden"])
  for name in ("residual", "ffn_hidden", "attn_probs"):
    np.testing.assert_allclose(results["einsum"][name], results["dot_product"][name], atol=1e-5)


def test_an_ffn_probe_computes_no_attention_probabilities():
  # On the fused path the probabilities exist only for the attn_probs probe: count softmaxes.
  _, model, params = make(n_kv_heads=2, attention_impl="dot_product")
  tokens = jnp.zeros((2, 12), jnp.int32)

  def exps(*collections):
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, tokens,
                                                 mutable=list(collections)))(params)
    return str(jaxpr).count(" exp ")

  assert exps(probe_collection("ffn_hidden")) == exps()
  assert exps(probe_collection("attn_probs")) > exps()
