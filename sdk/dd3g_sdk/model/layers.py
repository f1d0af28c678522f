"""Small torch building blocks shared by the Phase-1 UNet (`unet.py`) and PEPD (`pepd.py`).

Everything here is export-friendly: static shapes except the batch, no data-dependent control flow, attention
through `torch.nn.functional.scaled_dot_product_attention` (ONNX: MatMul/Softmax, TensorRT: fused MHA).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(timesteps: Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
                       max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, the DDPM/diffusers formula.

    timesteps [N] -> [N, dim] float32. Frequencies exp(-ln(max_period) * k / (dim/2 - freq_shift)), k < dim/2;
    the halves are (cos, sin) when `flip_sin_to_cos` (diffusers' UNet2DConditionModel default) else (sin, cos).
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    args = timesteps.reshape(-1, 1).float() * freqs.reshape(1, -1)
    sin, cos = torch.sin(args), torch.cos(args)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    if dim % 2 == 1:  # odd widths get a zero column, as in diffusers
        emb = F.pad(emb, (0, 1))
    return emb


def multihead_sdpa(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Multi-head scaled dot-product attention on packed heads.

    q [B, Lq, H*d], k and v [B, Lk, H*d] -> [B, Lq, H*d]; softmax(q k^T / sqrt(d)) v per head.
    """
    b, lq, c = q.shape
    d = c // heads
    q = q.reshape(b, lq, heads, d).transpose(1, 2)
    k = k.reshape(b, -1, heads, d).transpose(1, 2)
    v = v.reshape(b, -1, heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, lq, c)


def multihead_attention_reference(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """The plain-matmul twin of `multihead_sdpa` (for tests): same shapes, explicit softmax in float64."""
    b, lq, c = q.shape
    d = c // heads
    qh = q.double().reshape(b, lq, heads, d).permute(0, 2, 1, 3)
    kh = k.double().reshape(b, -1, heads, d).permute(0, 2, 1, 3)
    vh = v.double().reshape(b, -1, heads, d).permute(0, 2, 1, 3)
    w = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return (w @ vh).permute(0, 2, 1, 3).reshape(b, lq, c).to(q.dtype)


class GEGLU(nn.Module):
    """GELU-gated linear unit (Shazeer 2020): proj to 2*dim_out, value * gelu(gate). Same as diffusers' GEGLU."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)
