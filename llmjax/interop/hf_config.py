"""Hugging Face `config.json` <-> ModelConfig for the supported decoder families.

Families (HF `model_type`): llama, mistral, qwen2, olmo, olmo2, gpt2. Anything whose math the
engine does not implement (other rope scalings, Qwen2's per-layer sliding windows, GPT-2's
layer-index attention scaling) is refused with a UserError naming the setting, never silently
approximated.
"""

from typing import Any

from llmjax.errors import UserError
from llmjax.models import ModelConfig

FAMILIES = ("llama", "mistral", "qwen2", "olmo", "olmo2", "gpt2")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "olmo": "OlmoForCausalLM",
                 "olmo2": "Olmo2ForCausalLM", "gpt2": "GPT2LMHeadModel"}
_GATED_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu",
                      "gelu_new": "geglu"}
_GPT2_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact",
                     "relu": "relu"}
_OLMO_LAYER_NORM_EPS = 1e-5  # OLMo's non-parametric LayerNorm hard-codes it


def family_of(hf: dict[str, Any]) -> str:
  family = hf.get("model_type")
  if family not in FAMILIES:
    raise UserError(f"unsupported architecture model_type={family!r} "
                    f"({', '.join(hf.get('architectures') or [])}); expected one of {FAMILIES}")
  return family


_ROPE_TYPES = ("default", "llama3")


def _rope_entries(value, where: str):
  """Every dict that declares a rope type, wherever it sits under rope_scaling /
  rope_parameters (per-layer-type entries included), with where it was found."""
  if isinstance(value, dict):
    if "rope_type" in value or "type" in value:
      yield where, value
    for key, inner in value.items():
      if isinstance(inner, dict):
        yield from _rope_entries(inner, f"{where}.{key}")


def _rope(hf: dict[str, Any]) -> tuple[float, tuple | None]:
  """(theta, llama3 scaling or None) from either the v5 `rope_parameters` or the older
  `rope_theta` + `rope_scaling` keys. Every rope type declared anywhere in them must be one
  llmjax implements, and they must agree: a yarn entry beside a default one is refused, never
  read as plain rope."""
  params = dict(hf.get("rope_parameters") or {})
  entries = [*_rope_entries(params, "rope_parameters"),
             *_rope_entries(hf.get("rope_scaling") or {}, "rope_scaling")]
  for where, entry in entries:
    kind = entry.get("rope_type") or entry.get("type")
    if kind not in _ROPE_TYPES:
      raise UserError(f"config.json {where}: rope type {kind!r} is not supported; supported: "
                      f"{', '.join(_ROPE_TYPES)}")
  scaled = [entry for _, entry in entries
            if (entry.get("rope_type") or entry.get("type")) == "llama3"]
  theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
  if not scaled:
    return float(theta), None
  source = scaled[0]
  return float(theta), (float(source["factor"]), float(source["low_freq_factor"]),
                        float(source["high_freq_factor"]),
                        int(source["original_max_position_embeddings"]))


def model_config_from_hf(hf: dict[str, Any], dtype: str | None = None) -> ModelConfig:
  """The ModelConfig whose decoder computes what the HF model computes.

  Args:
    hf: the parsed config.json.
    dtype: compute and parameter dtype; default the checkpoint's (`dtype`/`torch_dtype`) when it
      is bfloat16 or float16, else float32.
  A key the family needs that is missing or not a number is a UserError naming it.
  """
  family = family_of(hf)
  try:
    return _model_config(hf, family, dtype)
  except KeyError as e:
    raise UserError(f"config.json has no {e.args[0]!r}, which a {family} model needs") \
        from None
  except (TypeError, ValueError) as e:
    raise UserError(f"config.json: a {family} setting has the wrong type ({e})") from None


def _model_config(hf: dict[str, Any], family: str, dtype: str | None) -> ModelConfig:
  saved = hf.get("dtype") or hf.get("torch_dtype") or "float32"
  dtype = dtype or (saved if saved in ("bfloat16", "float16") else "float32")
  common = dict(dtype=dtype, param_dtype=dtype, vocab_size=int(hf["vocab_size"]),
                tie_embeddings=bool(hf.get("tie_word_embeddings", family == "gpt2")))
  if family == "gpt2":
    if hf.get("scale_attn_by_inverse_layer_idx"):
      raise UserError("gpt2 setting scale_attn_by_inverse_layer_idx=true is not supported")
    if not hf.get("scale_attn_weights", True):
      raise UserError("gpt2 setting scale_attn_weights=false is not supported")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _GPT2_ACTIVATIONS:
      raise UserError(f"gpt2 activation_function={activation!r} is not supported; expected one "
                      f"of {sorted(_GPT2_ACTIVATIONS)}")
    d = int(hf["n_embd"])
    common["tie_embeddings"] = True
    return ModelConfig(**common, d_model=d, n_layers=int(hf["n_layer"]), n_heads=int(hf["n_head"]),
                       d_ff=int(hf.get("n_inner") or 4 * d),
                       activation=_GPT2_ACTIVATIONS[activation], norm="layernorm",
                       norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), positions="learned",
                       max_len=int(hf["n_positions"]), qkv_bias=True, out_bias=True,
                       mlp_bias=True)

  activation = hf.get("hidden_act", "silu")
  if activation not in _GATED_ACTIVATIONS:
    raise UserError(f"{family} hidden_act={activation!r} is not supported; expected one of "
                    f"{sorted(_GATED_ACTIVATIONS)}")
  d, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
  theta, llama3 = _rope(hf)
  attention_bias = bool(hf.get("attention_bias", False))
  values = dict(common, d_model=d, n_layers=int(hf["num_hidden_layers"]), n_heads=heads,
                n_kv_heads=int(hf.get("num_key_value_heads") or heads),
                d_head=int(hf.get("head_dim") or d // heads), d_ff=int(hf["intermediate_size"]),
                activation=_GATED_ACTIVATIONS[activation], norm="rmsnorm",
                norm_eps=float(hf.get("rms_norm_eps", 1e-6)), positions="rope",
                rope_theta=theta, rope_llama3_scaling=llama3,
                max_len=int(hf.get("max_position_embeddings", 2048)),
                qkv_bias=attention_bias, out_bias=attention_bias,
                mlp_bias=bool(hf.get("mlp_bias", False)))
  if family == "mistral":
    values["sliding_window"] = hf.get("sliding_window")
  elif family == "qwen2":
    sliding = hf.get("use_sliding_window") or "sliding_attention" in (hf.get("layer_types") or [])
    if sliding:
      raise UserError("qwen2 use_sliding_window=true (sliding windows on some layers only) is "
                      "not supported")
    values.update(qkv_bias=True, out_bias=False)
  elif family == "olmo":
    values.update(norm="layernorm_nonparam", norm_eps=_OLMO_LAYER_NORM_EPS,
                  clip_qkv=hf.get("clip_qkv"))
  elif family == "olmo2":
    values.update(norm_position="post", qk_norm=True)
  return ModelConfig(**values)


def infer_family(cfg: ModelConfig) -> str:
  """The HF family that expresses a ModelConfig (for export)."""
  if cfg.positions == "learned":
    return "gpt2"
  if cfg.norm_position == "post":
    return "olmo2"
  if cfg.norm == "layernorm_nonparam":
    return "olmo"
  if cfg.qkv_bias and not cfg.out_bias:
    return "qwen2"
  if cfg.sliding_window:
    return "mistral"
  return "llama"


def hf_config_from_model(cfg: ModelConfig, family: str, extra: dict | None = None) -> dict:
  """A config.json for `family` that describes `cfg`; UserError if the family cannot."""
  def need(ok: bool, what: str):
    if not ok:
      raise UserError(f"cannot export to {family}: the model has {what}")

  if family not in FAMILIES:
    raise UserError(f"export family {family!r}: expected one of {FAMILIES}")
  need(cfg.dtype in ("float32", "bfloat16", "float16"), f"dtype {cfg.dtype}")
  need(cfg.mask_mode == "causal", f"mask_mode {cfg.mask_mode} (Hugging Face decoders are causal)")
  hf = {"architectures": [ARCHITECTURES[family]], "model_type": family,
        "vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_embeddings,
        "dtype": cfg.param_dtype, "torch_dtype": cfg.param_dtype}
  if family == "gpt2":
    need(cfg.positions == "learned" and cfg.norm == "layernorm" and cfg.tie_embeddings,
         "no learned positions, LayerNorm and tied embeddings")
    need(cfg.qkv_bias and cfg.out_bias and cfg.mlp_bias, "projections without biases")
    need(cfg.activation in ("gelu", "gelu_exact", "relu"), f"activation {cfg.activation}")
    need(cfg.num_kv_heads == cfg.n_heads and cfg.head_dim * cfg.n_heads == cfg.d_model,
         "grouped-query attention or a head size other than d_model / n_heads")
    activation = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu"}[cfg.activation]
    hf.update(n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff,
              n_positions=cfg.max_len, activation_function=activation,
              layer_norm_epsilon=cfg.norm_eps, scale_attn_weights=True,
              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return {**hf, **(extra or {})}

  need(cfg.positions == "rope" and cfg.gated, "no rope or no gated MLP")
  need(cfg.activation in ("swiglu", "geglu"), f"activation {cfg.activation}")
  expected_norm = {"olmo": "layernorm_nonparam"}.get(family, "rmsnorm")
  need(cfg.norm == expected_norm, f"norm {cfg.norm}; {family} uses {expected_norm}")
  need((cfg.norm_position == "post") == (family == "olmo2") and cfg.qk_norm == (family == "olmo2"),
       "post-norm blocks with q/k norms" if family != "olmo2" else "pre-norm blocks")
  need(cfg.sliding_window is None or family == "mistral", "a sliding window")
  need(cfg.clip_qkv is None or family == "olmo", "clip_qkv")
  if family == "qwen2":
    need(cfg.qkv_bias and not cfg.out_bias, "no q/k/v biases or an output bias")
  else:
    need(cfg.qkv_bias == cfg.out_bias, "q/k/v biases but no output bias (a qwen2 layout)")
    need(not cfg.qkv_bias or family in ("llama", "olmo", "olmo2"), "attention biases")
  need(not cfg.mlp_bias or family == "llama", "MLP biases")
  rope = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
  if cfg.rope_llama3_scaling:
    factor, low, high, original = cfg.rope_llama3_scaling
    rope.update(rope_type="llama3", factor=factor, low_freq_factor=low, high_freq_factor=high,
                original_max_position_embeddings=original)
  hf.update(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim, intermediate_size=cfg.d_ff,
            hidden_act={"swiglu": "silu", "geglu": "gelu_pytorch_tanh"}[cfg.activation],
            max_position_embeddings=cfg.max_len, rope_parameters=rope,
            rope_theta=cfg.rope_theta, attention_bias=cfg.qkv_bias and family != "qwen2",
            mlp_bias=cfg.mlp_bias)
  if family != "olmo":
    hf["rms_norm_eps"] = cfg.norm_eps
  if family == "mistral":
    hf["sliding_window"] = cfg.sliding_window
  if family == "qwen2":
    hf.update(use_sliding_window=False, sliding_window=None)
  if family == "olmo":
    hf["clip_qkv"] = cfg.clip_qkv
  return {**hf, **(extra or {})}
