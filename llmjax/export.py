"""Export a trained llmjax run as a Hugging Face directory that transformers and vLLM load:

  python -m llmjax.export RUN OUT_DIR [--dtype bfloat16|float16|float32] [--family NAME]
                          [--overwrite]

RUN: an llmjax run (its latest checkpoint), RUN/checkpoints/STEP, or a pipeline stage's run
(e.g. W/sft). Writes model.safetensors (sharded past 4 GiB, with an index), config.json, the
tokenizer files the run came with (where its tokenizer is an hf: directory) and that
directory's generation_config.json. The tensors are in the source checkpoint's dtype by default:
the dtype of the hf: checkpoint the run (or the run it started from) was initialised from, else
the run's parameter dtype; `--dtype` chooses. OUT_DIR is written whole or not at all: files go to
a temporary directory beside it, renamed into place at the end. Bad input: one `error:` line,
exit 2 (not a run, a model with no Hugging Face layout, an OUT_DIR that is not empty without
--overwrite).
"""

import argparse
import os
import shutil
import sys
import tempfile

from llmjax.data.readers import read_json_object
from llmjax.errors import UserError

DTYPES = ("bfloat16", "float16", "float32")
# What an hf: tokenizer directory may hold that transformers and vLLM read.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json")
GENERATION_CONFIG = "generation_config.json"
_INIT_DEPTH = 16  # how far a chain of runs started from runs is followed


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m llmjax.export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("run", help="an llmjax run, RUN/checkpoints/STEP or a pipeline stage")
  parser.add_argument("out_dir", help="the Hugging Face directory to write")
  parser.add_argument("--dtype", default="", help=f"one of {DTYPES} (default: the source "
                      "checkpoint's)")
  parser.add_argument("--family", default="", help="the HF model family (default: inferred "
                      "from the model: llama, mistral, qwen2, olmo, olmo2, gpt2)")
  parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
  args = parser.parse_args(argv)
  try:
    written = export(args.run, args.out_dir, args.dtype, args.family, args.overwrite)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {written['family']} in {written['dtype']} to {args.out_dir}"
        + ("" if written["tokenizer"] else " (no Hugging Face tokenizer: the run's tokenizer is "
           f"{written['tokenizer_spec'] or 'unset'})"), file=sys.stderr)
  return 0


def export(run: str, out_dir: str, dtype: str = "", family: str = "",
           overwrite: bool = False) -> dict:
  """Writes `run` to `out_dir` (see the module docstring); returns what was written:
  {"family", "dtype", "tokenizer" (files copied), "tokenizer_spec"}."""
  if dtype and dtype not in DTYPES:
    raise UserError(f"--dtype {dtype}: expected one of {DTYPES}")
  if run.startswith("hf:"):
    raise UserError(f"{run}: already a Hugging Face directory; export takes an llmjax run")
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise UserError(f"{out_dir}: exists and is not a directory")
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise UserError(f"{out_dir}: not empty; pass --overwrite to replace it")
  from llmjax.interop import save_hf
  from llmjax.parallel import Parallel
  from llmjax.weights import load_model
  from llmjax.weights.load import RunCheckpoint
  source = RunCheckpoint.parse(run)
  loaded = load_model(run, Parallel.from_config({"data": -1}))
  dtype = dtype or source_dtype(source.path, source.config, loaded.config.param_dtype)
  tokenizer_spec = source.tokenizer
  extra = {}
  if loaded.tokenizer is not None:
    extra = {key: value for key, value in (("bos_token_id", loaded.tokenizer.bos_id),
                                           ("eos_token_id", loaded.tokenizer.eos_id),
                                           ("pad_token_id", loaded.tokenizer.pad_id))
             if value is not None and value >= 0}
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.export-", dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(staging, 0o777 & ~umask)  # a directory as any other (mkdtemp's is private)
  try:
    written_family = save_hf(staging, loaded.config, loaded.params, family or None, dtype,
                             extra_config=extra)
    copied = _copy_tokenizer(tokenizer_spec, staging)
    _replace(staging, out_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return {"family": written_family, "dtype": dtype, "tokenizer": copied,
          "tokenizer_spec": tokenizer_spec}


def source_dtype(path: str, config: dict, param_dtype: str) -> str:
  """The dtype of the checkpoint a run's params came from: following `init` (and
  `train.init_from`) through runs started from runs to an hf: directory's config.json dtype;
  the run's parameter dtype where the chain starts from a seed or a run no longer there."""
  from llmjax.weights.load import RunCheckpoint
  for _ in range(_INIT_DEPTH):
    start = config.get("init") or config.get("train", {}).get("init_from") or ""
    if start.startswith("hf:"):
      try:
        hf = read_json_object(os.path.join(start[len("hf:"):], "config.json"))
      except (UserError, OSError):
        return param_dtype  # the source directory is gone: the run's own dtype
      saved = hf.get("dtype") or hf.get("torch_dtype")
      return saved if saved in DTYPES else "float32"
    if not start:
      break
    try:
      run = RunCheckpoint.parse(start if os.path.isabs(start) else os.path.join(path, start))
    except UserError:
      break
    path, config = run.path, run.config
  return param_dtype if param_dtype in DTYPES else "float32"


def _copy_tokenizer(spec: str, out_dir: str) -> list[str]:
  """The tokenizer files of an hf: tokenizer directory (and its generation config), copied;
  other tokenizers (byte, spm:) have no Hugging Face files to copy."""
  if not spec.startswith("hf:"):
    return []
  directory = spec[len("hf:"):]
  copied = []
  for name in TOKENIZER_FILES + (GENERATION_CONFIG,):
    if os.path.isfile(os.path.join(directory, name)):
      shutil.copyfile(os.path.join(directory, name), os.path.join(out_dir, name))
      copied.append(name)
  return copied


def _replace(staging: str, out_dir: str) -> None:
  """`staging` renamed to `out_dir`; an existing `out_dir` (checked before) removed after."""
  old = None
  if os.path.exists(out_dir):
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-",
                           dir=os.path.dirname(os.path.abspath(out_dir)))
    os.rmdir(old)
    os.rename(out_dir, old)
  os.rename(staging, out_dir)
  if old:
    shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
  sys.exit(main())
