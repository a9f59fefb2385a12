"""Import Hugging Face checkpoints (config.json + *.safetensors) into llmjax, and export back.

Import reads one tensor at a time through the safetensors numpy API (no torch) and places each
parameter straight into its sharding with `jax.make_array_from_callback`: host memory holds one
tensor at a time, never a second full copy of the model, and in a multi-process run every
process only materialises the slices its devices hold.

Export writes `model.safetensors` (or numbered shards plus `model.safetensors.index.json` when
larger than `max_shard_bytes`) and a config.json that transformers loads.
"""

import contextlib
import dataclasses
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from llmjax import runio
from llmjax.data.readers import read_json_object
from llmjax.errors import UserError
from llmjax.interop.hf_config import (hf_config_from_model, infer_family,
                                      model_config_from_hf)
from llmjax.interop.hf_weights import canonical_hf_name, ignorable, tensor_maps
from llmjax.models import ModelConfig, decoder_layout, decoder_params
from llmjax.parallel import Parallel

_INDEX = "model.safetensors.index.json"


def read_hf_config(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"{directory}: no config.json (expected a Hugging Face model directory)")
  return read_json_object(path)


def safetensors_files(directory: str) -> list[str]:
  """The checkpoint's files: those named by the shard index, else every *.safetensors."""
  index = os.path.join(directory, _INDEX)
  if os.path.isfile(index):
    try:
      with open(index) as f:
        names = sorted(set(json.load(f)["weight_map"].values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
      raise UserError(f"{index}: not a shard index with a 'weight_map' ({e})") from None
  else:
    names = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
  if not names:
    raise UserError(f"{directory}: no *.safetensors files (only safetensors checkpoints are "
                    "supported; convert .bin files with transformers first)")
  missing = [n for n in names if not os.path.isfile(os.path.join(directory, n))]
  if missing:
    raise UserError(f"{directory}: shard {missing[0]} named in {_INDEX} is missing")
  return [os.path.join(directory, n) for n in names]


def _get(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def load_hf(directory: str, parallel: Parallel | None = None, dtype: str | None = None,
            **overrides) -> tuple[ModelConfig, Any, str]:
  """Loads an HF checkpoint directory.

  Args:
    directory: holds config.json and *.safetensors (single file or sharded with an index).
    parallel: the mesh to place parameters on; default all devices, data parallel.
    dtype: parameter and compute dtype; default the checkpoint's (see model_config_from_hf).
    overrides: ModelConfig fields to change that do not alter the math (e.g. attention_impl).
  Returns:
    (ModelConfig, params placed in their shardings, family name).
  """
  from safetensors import safe_open

  hf = read_hf_config(directory)
  cfg = model_config_from_hf(hf, dtype)
  if overrides:
    cfg = dataclasses.replace(cfg, **overrides)
  if cfg.scan_layers:
    raise UserError("imported models use unscanned layers; leave scan_layers false")
  family = hf["model_type"]
  parallel = parallel or Parallel.from_config({"data": -1})
  abstract = decoder_layout(cfg, parallel)
  maps = {m.hf_name: m for m in tensor_maps(cfg, family)}
  params: dict = {}
  for path in safetensors_files(directory):
    with _open_safetensors(path, safe_open) as f:
      for raw_name in f.keys():
        name = canonical_hf_name(raw_name, family)
        if name not in maps:
          if ignorable(name, family, cfg):
            continue
          raise UserError(f"{os.path.basename(path)}: tensor {raw_name!r} has no counterpart in "
                          f"a {family} model configured by config.json")
        tensor_map = maps.pop(name)
        shapes = [tuple(_get(abstract, p).shape) for p in tensor_map.paths]
        try:
          hf_array = f.get_tensor(raw_name)
        except Exception as e:  # noqa: BLE001 - safetensors reports damage in several types
          raise UserError(f"{path}: tensor {raw_name!r} cannot be read; the file is damaged "
                          f"({str(e).splitlines()[0]})") from None
        expected = tensor_map.expected_hf_shape(shapes)
        if tuple(hf_array.shape) != expected:
          raise UserError(f"{os.path.basename(path)}: tensor {raw_name!r} has shape "
                          f"{tuple(hf_array.shape)}; config.json implies {expected}")
        for p, value in zip(tensor_map.paths, tensor_map.to_llmjax(hf_array, shapes)):
          value = value.astype(_get(abstract, p).dtype)
          _set(params, p, jax.make_array_from_callback(value.shape, _get(abstract, p).sharding,
                                                       lambda index, v=value: v[index]))
  if maps:
    raise UserError(f"{directory}: checkpoint lacks tensor {sorted(maps)[0]!r} that a {family} "
                    "model configured by its config.json needs")
  return cfg, params, family


@contextlib.contextmanager
def _open_safetensors(path: str, safe_open):
  """safe_open, with an empty, truncated or foreign file as one UserError naming it."""
  try:
    handle = safe_open(path, framework="numpy")
  except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...
    raise UserError(f"{path}: not a readable safetensors file "
                    f"({str(e).splitlines()[0] or type(e).__name__})") from None
  with handle as f:
    yield f


def _host_array(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def unstack_layers(cfg: ModelConfig, params: dict) -> dict:
  """Scanned params (a leading layer axis under 'layers/block') as layer_0..layer_{N-1}."""
  if "layers" not in params:
    return params
  out = {k: v for k, v in params.items() if k != "layers"}
  for i in range(cfg.n_layers):
    out[f"layer_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"]["block"])
  return out


def save_hf(directory: str, cfg: ModelConfig, params: Any, family: str | None = None,
            dtype: str | None = None, max_shard_bytes: int = 4 << 30,
            extra_config: dict | None = None) -> str:
  """Writes params (a Decoder's, or a wrapper's: its decoder part) as an HF checkpoint of
  `family` (default: inferred from cfg).

  Args:
    dtype: tensor dtype in the files; default the params' own.
    extra_config: more config.json keys (e.g. bos_token_id, eos_token_id).
  Returns:
    the family written.
  """
  from safetensors.numpy import save_file

  family = family or infer_family(cfg)
  hf = hf_config_from_model(cfg, family, extra_config)
  params = unstack_layers(cfg, decoder_params(params))
  tensors = {}
  for m in tensor_maps(cfg, family):
    arrays = [_host_array(_get(params, p)) for p in m.paths]
    tensor = m.to_hf(arrays)
    tensors[m.hf_name] = tensor.astype(jnp.dtype(dtype)) if dtype else tensor
  if dtype:
    hf["dtype"] = hf["torch_dtype"] = dtype
  if not runio.is_writer():
    return family
  os.makedirs(directory, exist_ok=True)
  shards, current, size = [], {}, 0
  for name, tensor in tensors.items():
    if current and size + tensor.nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name], size = tensor, size + tensor.nbytes
  shards.append(current)
  metadata = {"format": "pt"}  # transformers checks for it
  if len(shards) == 1:
    save_file(shards[0], os.path.join(directory, "model.safetensors"), metadata)
  else:
    weight_map = {}
    digits = max(5, int(math.log10(len(shards))) + 1)
    for i, shard in enumerate(shards):
      name = f"model-{i + 1:0{digits}d}-of-{len(shards):0{digits}d}.safetensors"
      save_file(shard, os.path.join(directory, name), metadata)
      weight_map.update({t: name for t in shard})
    runio.write_json(os.path.join(directory, _INDEX), {
        "metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
        "weight_map": weight_map})
  runio.write_json(os.path.join(directory, "config.json"), hf)
  return family
