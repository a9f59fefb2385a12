"""Which Hugging Face tensor fills which llmjax parameter, and how.

Every HF tensor of a supported family is one `TensorMap`: its name, the llmjax parameter paths it
fills (several for GPT-2's fused q/k/v), and its layout:
  linear  an nn.Linear weight [out, in] (Llama-style);
  conv1d  a GPT-2 Conv1D weight [in, out];
  vector  a bias or norm scale: 1-D on the HF side, reshaped (and split) to ours;
  table   an embedding table, copied as is.
Our kernels keep heads as separate axes ([D, H, K] for queries, [H, K, D] for the output), so a
matrix is flattened to [in, out] with `in_ndim` leading kernel axes as its input.
"""

import dataclasses
import math

import numpy as np

from llmjax.models import ModelConfig

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TensorMap:
  hf_name: str
  paths: tuple[Path, ...]
  layout: str = "vector"  # linear | conv1d | vector | table
  in_ndim: int = 1

  def to_llmjax(self, hf_array: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Splits and reshapes one HF tensor into the parameters at `paths` (of `shapes`)."""
    if self.layout == "table":
      return [hf_array]
    if self.layout == "vector":
      sizes = [math.prod(s) for s in shapes]
      parts = np.split(hf_array.reshape(-1), np.cumsum(sizes)[:-1])
      return [p.reshape(s) for p, s in zip(parts, shapes)]
    matrix = hf_array.T if self.layout == "linear" else hf_array  # [in, out_total]
    sizes = [math.prod(s[self.in_ndim:]) for s in shapes]
    parts = np.split(matrix, np.cumsum(sizes)[:-1], axis=1)
    return [np.ascontiguousarray(p).reshape(s) for p, s in zip(parts, shapes)]

  def to_hf(self, arrays: list[np.ndarray]) -> np.ndarray:
    if self.layout == "table":
      return arrays[0]
    if self.layout == "vector":
      return np.concatenate([a.reshape(-1) for a in arrays])
    flat = [a.reshape(math.prod(a.shape[:self.in_ndim]), -1) for a in arrays]
    matrix = np.concatenate(flat, axis=1)
    return np.ascontiguousarray(matrix.T if self.layout == "linear" else matrix)

  def expected_hf_shape(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    if self.layout == "table":
      return shapes[0]
    if self.layout == "vector":
      return (sum(math.prod(s) for s in shapes),)
    d_in = math.prod(shapes[0][:self.in_ndim])
    d_out = sum(math.prod(s[self.in_ndim:]) for s in shapes)
    return (d_out, d_in) if self.layout == "linear" else (d_in, d_out)


def _llama_like(cfg: ModelConfig, family: str) -> list[TensorMap]:
  maps = [TensorMap("model.embed_tokens.weight", (("embed", "embedding"),), "table")]
  for i in range(cfg.n_layers):
    hf, ours = f"model.layers.{i}.", f"layer_{i}"

    def add(name, path, layout="vector", in_ndim=1):
      maps.append(TensorMap(hf + name, ((ours,) + path,), layout, in_ndim))

    for proj, module in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
      add(f"self_attn.{proj}.weight", ("attn", module, "kernel"), "linear")
      if cfg.qkv_bias:
        add(f"self_attn.{proj}.bias", ("attn", module, "bias"))
    add("self_attn.o_proj.weight", ("attn", "out", "kernel"), "linear", in_ndim=2)
    if cfg.out_bias:
      add("self_attn.o_proj.bias", ("attn", "out", "bias"))
    for proj in ("gate", "up", "down"):
      add(f"mlp.{proj}_proj.weight", ("mlp", proj, "kernel"), "linear")
      if cfg.mlp_bias:
        add(f"mlp.{proj}_proj.bias", ("mlp", proj, "bias"))
    if family == "olmo2":  # post-norm: our attn_norm/mlp_norm sit after attention and MLP
      add("post_attention_layernorm.weight", ("attn_norm", "scale"))
      add("post_feedforward_layernorm.weight", ("mlp_norm", "scale"))
      add("self_attn.q_norm.weight", ("attn", "query_norm", "scale"))
      add("self_attn.k_norm.weight", ("attn", "key_norm", "scale"))
    elif family != "olmo":  # OLMo's LayerNorms have no parameters
      add("input_layernorm.weight", ("attn_norm", "scale"))
      add("post_attention_layernorm.weight", ("mlp_norm", "scale"))
  if family != "olmo":
    maps.append(TensorMap("model.norm.weight", (("final_norm", "scale"),)))
  if not cfg.tie_embeddings:
    maps.append(TensorMap("lm_head.weight", (("unembed", "kernel"),), "linear"))
  return maps


def _gpt2(cfg: ModelConfig) -> list[TensorMap]:
  maps = [TensorMap("transformer.wte.weight", (("embed", "embedding"),), "table"),
          TensorMap("transformer.wpe.weight", (("pos_embed",),), "table")]
  for i in range(cfg.n_layers):
    hf, ours = f"transformer.h.{i}.", f"layer_{i}"
    qkv = tuple((ours, "attn", m) for m in ("query", "key", "value"))
    maps += [
        TensorMap(hf + "ln_1.weight", ((ours, "attn_norm", "scale"),)),
        TensorMap(hf + "ln_1.bias", ((ours, "attn_norm", "bias"),)),
        TensorMap(hf + "attn.c_attn.weight", tuple(p + ("kernel",) for p in qkv), "conv1d"),
        TensorMap(hf + "attn.c_attn.bias", tuple(p + ("bias",) for p in qkv)),
        TensorMap(hf + "attn.c_proj.weight", ((ours, "attn", "out", "kernel"),), "conv1d", 2),
        TensorMap(hf + "attn.c_proj.bias", ((ours, "attn", "out", "bias"),)),
        TensorMap(hf + "ln_2.weight", ((ours, "mlp_norm", "scale"),)),
        TensorMap(hf + "ln_2.bias", ((ours, "mlp_norm", "bias"),)),
        TensorMap(hf + "mlp.c_fc.weight", ((ours, "mlp", "up", "kernel"),), "conv1d"),
        TensorMap(hf + "mlp.c_fc.bias", ((ours, "mlp", "up", "bias"),)),
        TensorMap(hf + "mlp.c_proj.weight", ((ours, "mlp", "down", "kernel"),), "conv1d"),
        TensorMap(hf + "mlp.c_proj.bias", ((ours, "mlp", "down", "bias"),)),
    ]
  maps += [TensorMap("transformer.ln_f.weight", (("final_norm", "scale"),)),
           TensorMap("transformer.ln_f.bias", (("final_norm", "bias"),))]
  return maps


def tensor_maps(cfg: ModelConfig, family: str) -> list[TensorMap]:
  """Every HF tensor of `family` for a decoder configured by `cfg` (unscanned layers)."""
  return _gpt2(cfg) if family == "gpt2" else _llama_like(cfg, family)


def canonical_hf_name(name: str, family: str) -> str:
  """HF names as `tensor_maps` spells them: GPT2Model checkpoints lack the 'transformer.'
  prefix that GPT2LMHeadModel ones carry."""
  if family == "gpt2" and not name.startswith(("transformer.", "lm_head.")):
    return "transformer." + name
  return name


def ignorable(name: str, family: str, cfg: ModelConfig) -> bool:
  """Tensors that carry no parameters (buffers) or duplicate tied ones."""
  if name.endswith("rotary_emb.inv_freq"):
    return True
  if family == "gpt2" and (name.endswith(".attn.bias") or name.endswith(".attn.masked_bias")):
    return True
  return cfg.tie_embeddings and name == "lm_head.weight"
