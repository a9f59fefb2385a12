"""The knowledge-entropy pass: llmjax against transformers with down-projection hooks.

  python benchmarks/knowledge_entropy_speed.py [--layers 4] [--hidden 256] [--docs 64]

One random Llama-style checkpoint made by transformers (saved, then imported by llmjax); the
same documents (random token ids, 128-512 tokens) through both. llmjax: KnowledgeEntropyProbe
(one jitted pass per batch, sums on device, padding excluded), timed after a first call that
compiles its length buckets. transformers: the same batches (right-padded, attention mask,
eval, no_grad), forward pre-hooks on each `down_proj` adding |input| over real tokens, the
logits computed as the model always does. Prints one JSON line: tokens/s of each, their ratio,
and the largest difference of the layer entropies (they must agree).
"""

import argparse
import json
import tempfile
import time

import numpy as np
import torch
import transformers

from llmjax.experiments.knowledge_entropy.entropy import KnowledgeEntropyProbe, layer_entropy
from llmjax.parallel import Parallel
from llmjax.weights import load_model


def torch_layer_entropy(model, documents, batch_size: int) -> np.ndarray:
  sums = [torch.zeros(model.config.intermediate_size, dtype=torch.float64)
          for _ in model.model.layers]
  mask_holder = {}

  def accumulate(n):
    def hook(module, args):
      weight = mask_holder["mask"][..., None].to(args[0].dtype)
      sums[n] += (args[0].abs() * weight).double().sum((0, 1))
    return hook
  hooks = [layer.mlp.down_proj.register_forward_pre_hook(accumulate(n))
           for n, layer in enumerate(model.model.layers)]
  order = sorted(range(len(documents)), key=lambda i: len(documents[i]))
  tokens = 0
  with torch.no_grad():
    for start in range(0, len(order), batch_size):
      chunk = [documents[i] for i in order[start:start + batch_size]]
      length = max(len(d) for d in chunk)
      ids = torch.zeros((len(chunk), length), dtype=torch.long)
      mask = torch.zeros((len(chunk), length), dtype=torch.long)
      for b, doc in enumerate(chunk):
        ids[b, :len(doc)], mask[b, :len(doc)] = torch.tensor(doc), 1
      mask_holder["mask"] = mask
      model(input_ids=ids, attention_mask=mask)
      tokens += int(mask.sum())
  for hook in hooks:
    hook.remove()
  return layer_entropy(torch.stack(sums).numpy() / tokens)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--docs", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=8)
  args = parser.parse_args()
  torch.manual_seed(0)
  config = transformers.LlamaConfig(hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                                    num_hidden_layers=args.layers, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=2048)
  model = transformers.LlamaForCausalLM(config).eval()
  rng = np.random.default_rng(0)
  documents = [rng.integers(3, 2048, size=int(n)).tolist()
               for n in rng.integers(128, 513, size=args.docs)]
  tokens = sum(len(d) for d in documents)
  with tempfile.TemporaryDirectory() as directory:
    model.save_pretrained(directory)
    parallel = Parallel.from_config({"data": -1})
    loaded = load_model(f"hf:{directory}", parallel)
  probe = KnowledgeEntropyProbe(loaded.config, parallel, batch_size=args.batch_size,
                                length_bucket=128)
  start = time.perf_counter()
  probe.coefficient_stats(loaded.params, documents)
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  ours = probe.coefficient_stats(loaded.params, documents).layer_entropy_N
  llmjax_s = time.perf_counter() - start
  start = time.perf_counter()
  theirs = torch_layer_entropy(model, documents, args.batch_size)
  torch_s = time.perf_counter() - start
  print(json.dumps({
      "benchmark": "knowledge_entropy_speed", "layers": args.layers, "hidden": args.hidden,
      "documents": args.docs, "tokens": tokens, "batch_size": args.batch_size,
      "llmjax_first_call_s": round(first_s, 2), "llmjax_s": round(llmjax_s, 3),
      "transformers_s": round(torch_s, 3),
      "llmjax_tokens_per_s": round(tokens / llmjax_s), "transformers_tokens_per_s":
      round(tokens / torch_s), "speedup": round(torch_s / llmjax_s, 2),
      "max_entropy_difference": float(np.abs(ours - theirs).max())}))


if __name__ == "__main__":
  main()
