"""A plain PyTorch Llama-style decoder: the peer of benchmarks/train_throughput.py.

RMSNorm, rotary positions (rotate-half), SwiGLU MLP, multi-head causal attention through
torch's scaled_dot_product_attention, untied embeddings: the same architecture as
llmjax.models.Decoder with ModelConfig(activation='swiglu', norm='rmsnorm', positions='rope').
"""

import torch
from torch import nn


class RMSNorm(nn.Module):
  def __init__(self, d: int, eps: float = 1e-6):
    super().__init__()
    self.scale, self.eps = nn.Parameter(torch.ones(d)), eps

  def forward(self, x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.scale


def rope(x, theta: float = 10_000.0):
  """x: [B, H, L, K], rotate-half layout."""
  length, half = x.shape[-2], x.shape[-1] // 2
  inv_freq = 1.0 / theta ** (torch.arange(half, dtype=torch.float32) / half)
  angles = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq
  sin, cos = angles.sin(), angles.cos()
  x1, x2 = x[..., :half], x[..., half:]
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
  def __init__(self, d: int, heads: int, d_ff: int):
    super().__init__()
    self.heads = heads
    self.attn_norm, self.mlp_norm = RMSNorm(d), RMSNorm(d)
    self.qkv = nn.Linear(d, 3 * d, bias=False)
    self.out = nn.Linear(d, d, bias=False)
    self.gate = nn.Linear(d, d_ff, bias=False)
    self.up = nn.Linear(d, d_ff, bias=False)
    self.down = nn.Linear(d_ff, d, bias=False)

  def forward(self, x):
    b, length, d = x.shape
    q, k, v = self.qkv(self.attn_norm(x)).view(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
    attn = nn.functional.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
    x = x + self.out(attn.transpose(1, 2).reshape(b, length, d))
    h = self.mlp_norm(x)
    return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))


class LlamaStyle(nn.Module):
  def __init__(self, vocab: int, d: int, layers: int, heads: int, d_ff: int):
    super().__init__()
    self.embed = nn.Embedding(vocab, d)
    self.blocks = nn.ModuleList([Block(d, heads, d_ff) for _ in range(layers)])
    self.norm = RMSNorm(d)
    self.unembed = nn.Linear(d, vocab, bias=False)
    for name, p in self.named_parameters():
      if p.dim() > 1:
        nn.init.normal_(p, std=0.02)

  def forward(self, tokens):
    x = self.embed(tokens)
    for block in self.blocks:
      x = block(x)
    return self.unembed(self.norm(x))
