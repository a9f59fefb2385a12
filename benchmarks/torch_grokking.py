"""A straightforward PyTorch version of the grokking run, the peer of benchmarks/grokking_speed.py.

The same model (1 layer, 4 heads, d_model 128, d_mlp 512, ReLU, no LayerNorm, learned
positions, untied unembedding), the same full-batch AdamW and the same evaluation cadence on the
whole table, in eager PyTorch, with two readouts:

  all positions  (`last_only=False`) the way a researcher would write it: every position goes
                 through attention, the MLP and the unembedding, and the answer is read at the
                 last one;
  last position  (`last_only=True`) the work llmjax does: keys and values at every position,
                 but one query, one MLP row and one unembedding row per example (the '='
                 position). Both compute the same function (tests/test_benchmarks.py).

`load_llmjax_params` copies an llmjax Decoder's parameters into the model.
"""

import math
import time

import numpy as np
import torch
from torch import nn


class GrokTransformer(nn.Module):
  def __init__(self, vocab: int, length: int, d_model=128, n_heads=4, d_ff=512, std=0.02):
    super().__init__()
    self.n_heads, self.d_head = n_heads, d_model // n_heads
    self.embed = nn.Embedding(vocab, d_model)
    self.pos = nn.Parameter(torch.zeros(length, d_model))
    self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
    self.out = nn.Linear(d_model, d_model, bias=False)
    self.up = nn.Linear(d_model, d_ff, bias=False)
    self.down = nn.Linear(d_ff, d_model, bias=False)
    self.unembed = nn.Linear(d_model, vocab, bias=False)
    for p in self.parameters():
      nn.init.normal_(p, std=std)
    self.register_buffer("causal", torch.tril(torch.ones(length, length, dtype=torch.bool)))

  def forward(self, tokens, last_only: bool = False):
    """Logits at the last position, [B, V]."""
    b, length = tokens.shape
    x = self.embed(tokens) + self.pos[:length]
    q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
    if last_only:  # the last query attends to every position: no mask needed
      q, x = q[:, :, -1:], x[:, -1:]
    scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
    if not last_only:
      scores = scores.masked_fill(~self.causal[:length, :length], float("-inf"))
    attn = scores.softmax(-1) @ v
    x = x + self.out(attn.transpose(1, 2).reshape(b, x.shape[1], -1))
    x = x + self.down(torch.relu(self.up(x)))
    return self.unembed(x[:, -1])


def load_llmjax_params(model: GrokTransformer, params) -> None:
  """Copies an llmjax Decoder's parameters (the grokking model: no biases, no norms) in."""
  def tensor(x):
    return torch.as_tensor(np.asarray(x, np.float32))

  attn = params["layer_0"]["attn"]
  d_model = attn["query"]["kernel"].shape[0]
  qkv = np.concatenate([np.asarray(attn[n]["kernel"]).reshape(d_model, -1)
                        for n in ("query", "key", "value")], axis=1)  # [D, 3 H Dh]
  with torch.no_grad():
    model.embed.weight.copy_(tensor(params["embed"]["embedding"]))
    model.pos.copy_(tensor(params["pos_embed"]))
    model.qkv.weight.copy_(tensor(qkv.T))
    model.out.weight.copy_(tensor(np.asarray(attn["out"]["kernel"]).reshape(-1, d_model).T))
    model.up.weight.copy_(tensor(np.asarray(params["layer_0"]["mlp"]["up"]["kernel"]).T))
    model.down.weight.copy_(tensor(np.asarray(params["layer_0"]["mlp"]["down"]["kernel"]).T))
    model.unembed.weight.copy_(tensor(np.asarray(params["unembed"]["kernel"]).T))


def train(inputs: np.ndarray, targets: np.ndarray, train_rows: np.ndarray, vocab: int,
          steps: int, eval_every: int, lr: float, betas, weight_decay: float, std: float,
          seed: int, last_only: bool = False) -> dict:
  """Trains one seed; returns the wall-clock seconds and the final accuracies."""
  torch.manual_seed(seed)
  start = time.perf_counter()
  model = GrokTransformer(vocab, inputs.shape[1], std=std)
  optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas,
                                weight_decay=weight_decay)
  x_all = torch.as_tensor(inputs, dtype=torch.long)
  y_all = torch.as_tensor(targets, dtype=torch.long)
  rows = torch.as_tensor(train_rows, dtype=torch.long)
  train_mask = torch.zeros(len(targets), dtype=torch.bool)
  train_mask[rows] = True
  x_train, y_train = x_all[rows], y_all[rows]
  history = []
  for step in range(1, steps + 1):
    loss = nn.functional.cross_entropy(model(x_train, last_only), y_train)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if step % eval_every == 0 or step == steps:
      with torch.no_grad():
        correct = model(x_all, last_only).argmax(-1) == y_all
      history.append((step, correct[train_mask].float().mean().item(),
                      correct[~train_mask].float().mean().item()))
  return {"seconds": time.perf_counter() - start, "train_accuracy": history[-1][1],
          "test_accuracy": history[-1][2]}
