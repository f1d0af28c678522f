"""The teacher's multi-view denoiser, written out in plain torch: PEPD's Phase 1 (Pattern Extraction).

`MVUNetConfig.to_diffusers_kwargs()` gives the kwargs of the diffusers `UNet2DConditionModel` that the teacher
uses as its denoiser (distill/ builds it and puts a multi-view attention processor on every `attn1`).
`MVUNet` is a hand-written torch UNet with exactly the same parameter names, shapes and maths, so that the
teacher's `state_dict()` loads into it with `strict=True` (representation alignment: PEPD Phase 1 starts from
the teacher's weights), and so that PEPD exports to ONNX without diffusers.

Shared conventions of the teacher and PEPD (both sides must call the helpers below, not re-implement them):
- `sample` [B*V, 6, h, w] = noisy view (3 channels, the diffusion range, ~N(0, 1) at t = T-1)
  ⊕ condition image mapped to [-1, 1] and resized to h (`condition_sample`). Views of one object are
  consecutive along the batch axis: index = b * V + v.
- camera [B*V, 16] = the row-major flattened 4x4 world-to-camera matrix (`camera_input`), OpenCV frame.
- With `camera_rays`, the sample also carries each view's per-pixel Plücker rays (6 channels after the image:
  unit direction d and moment o x d, world frame; `pixel_rays` + `ray_map`), so that every pixel, and every
  token of the multi-view attention, knows which ray it sees (`in_channels` 12).
- encoder_hidden_states [B*V, T, cross_attention_dim] = `ImageTokenizer(image)` tokens repeated per view.
- Multi-view self-attention: in every transformer block, attn1 attends over the tokens of all V views of an
  object ([B*V, L, C] -> [B, V*L, C]); attn2 is cross-attention to the image tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import GEGLU, multihead_sdpa, timestep_embedding

RAY_CHANNELS = 6  # input channels of the Plücker ray map (`ray_map`: direction and moment)
DOWN_BLOCK_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")


@dataclass(frozen=True)
class MVUNetConfig:
    """Config of the teacher's denoiser and of PEPD Phase 1 (the same network).

    `attention_head_dim` is the real width of one attention head (channels per head). diffusers' UNet names
    the number of heads `attention_head_dim` for historical reasons; `to_diffusers_kwargs()` converts.
    The default is the small teacher (procworld-mv64): 64x64 pixels, 4 views.
    """
    sample_size: int = 64  # h = w of the noisy views, pixels
    in_channels: int = 6  # noisy view (3) + condition image (3) [+ Plücker rays (6) with camera_rays]
    out_channels: int = 3  # epsilon
    # Sized for the edge: multi-view attention only at 16x16 and 8x8 (4 views x 256 tokens at most), so that
    # the shipped model stays a few MB in fp16 and near 10 GFLOP an object.
    block_out_channels: tuple[int, ...] = (32, 48, 64, 96)
    layers_per_block: int = 1
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    attention_head_dim: int = 32  # channels per head
    cross_attention_dim: int = 96  # width of the image tokens
    norm_num_groups: int = 16
    norm_eps: float = 1e-5
    camera_dim: int = 16  # flattened 4x4 world-to-camera matrix
    num_views: int = 4
    num_train_timesteps: int = 1000
    image_patch_size: int = 8  # ImageTokenizer patch: T = (sample_size / image_patch_size)^2 image tokens
    # Per-pixel Plücker ray maps in the input: a flattened 4x4 through the class embedding tells a view which
    # camera it is but not where each pixel's ray goes, and the multi-view attention's tokens carry no position
    # at all; the rays give both (the usual camera conditioning of multi-view diffusion models).
    camera_rays: bool = False

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        if n < 1 or len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError("block_out_channels, down_block_types and up_block_types must have the same length "
                             f"(got {n}, {len(self.down_block_types)}, {len(self.up_block_types)})")
        bad = [t for t in self.down_block_types if t not in DOWN_BLOCK_TYPES] + \
              [t for t in self.up_block_types if t not in UP_BLOCK_TYPES]
        if bad:
            raise ValueError(f"unsupported block type(s) {bad}; down: {DOWN_BLOCK_TYPES}, up: {UP_BLOCK_TYPES}")
        for c in self.block_out_channels:
            if c <= 0 or c % self.norm_num_groups:
                raise ValueError(f"block_out_channels {c} must be a positive multiple of norm_num_groups "
                                 f"{self.norm_num_groups}")
        attn_channels = [self.block_out_channels[-1]]  # the mid block always has attention
        attn_channels += [c for c, t in zip(self.block_out_channels, self.down_block_types) if "CrossAttn" in t]
        attn_channels += [c for c, t in zip(self.block_out_channels[::-1], self.up_block_types) if "CrossAttn" in t]
        for c in attn_channels:
            if c % self.attention_head_dim:
                raise ValueError(f"attention_head_dim {self.attention_head_dim} must divide {c} channels")
        if self.sample_size % (2 ** (n - 1)):
            raise ValueError(f"sample_size {self.sample_size} must be divisible by 2^{n - 1} (the downsamplings)")
        if self.sample_size % self.image_patch_size:
            raise ValueError(f"image_patch_size {self.image_patch_size} must divide sample_size {self.sample_size}")
        for name in ("layers_per_block", "num_views", "camera_dim", "cross_attention_dim", "num_train_timesteps",
                     "in_channels", "out_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def ray_channels(self) -> int:
        """Input channels taken by the ray map (6 with camera_rays, else 0)."""
        return RAY_CHANNELS if self.camera_rays else 0

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @property
    def num_image_tokens(self) -> int:
        return (self.sample_size // self.image_patch_size) ** 2

    def heads(self, channels: int) -> int:
        return max(1, channels // self.attention_head_dim)

    def to_diffusers_kwargs(self) -> dict:
        """kwargs of `diffusers.UNet2DConditionModel` with the same parameters and maths as `MVUNet(self)`."""
        return dict(
            sample_size=self.sample_size,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            center_input_sample=False,
            flip_sin_to_cos=True,
            freq_shift=0,
            down_block_types=tuple(self.down_block_types),
            mid_block_type="UNetMidBlock2DCrossAttn",
            up_block_types=tuple(self.up_block_types),
            only_cross_attention=False,
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            downsample_padding=1,
            mid_block_scale_factor=1,
            dropout=0.0,
            act_fn="silu",
            norm_num_groups=self.norm_num_groups,
            norm_eps=self.norm_eps,
            cross_attention_dim=self.cross_attention_dim,
            transformer_layers_per_block=1,
            # diffusers reads this as the number of heads per level (see the class docstring)
            attention_head_dim=tuple(self.heads(c) for c in self.block_out_channels),
            use_linear_projection=True,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=self.camera_dim,
            upcast_attention=False,
            resnet_time_scale_shift="default",
            time_embedding_type="positional",
            conv_in_kernel=3,
            conv_out_kernel=3,
        )


# ---- shared input helpers (teacher and PEPD) ------------------------------------------------------------------

def resize_image(image: Tensor, size: int) -> Tensor:
    """image [B, C, H, W] -> [B, C, size, size]. Integer downscales use a box filter (avg-pool: exact area
    average, exports as AveragePool); other factors bilinear (align_corners=False). Identity if already `size`."""
    h, w = image.shape[-2], image.shape[-1]
    if h == size and w == size:
        return image
    if h == w and h > size and h % size == 0:
        return F.avg_pool2d(image, kernel_size=h // size)
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)


def condition_sample(x_t: Tensor, image: Tensor, rays: Tensor | None = None) -> Tensor:
    """UNet input: x_t [B, V, 3, h, w] (diffusion range) ⊕ image [B, 3, S, S] in 0..1 [⊕ rays [B*V, 6, h, w]]
    -> [B*V, 6 (+6), h, w].

    The condition image is resized to h and mapped to [-1, 1], the same for every view; `rays` (`ray_map`) is
    appended when the UNet has `camera_rays`.
    """
    b, v, c, h, w = x_t.shape
    cond = resize_image(image, h).to(x_t.dtype) * 2.0 - 1.0  # [B, 3, h, w]
    cond = cond.unsqueeze(1).expand(b, v, cond.shape[1], h, w)
    sample = torch.cat([x_t, cond], dim=2).reshape(b * v, c + cond.shape[2], h, w)
    if rays is None:
        return sample
    return torch.cat([sample, rays.to(sample.dtype)], dim=1)


def camera_ray_dirs(fov_deg: float, size: int) -> Tensor:
    """Unit ray directions [size*size, 3] (float32, camera frame: x right, y down, z forward) through the
    pixel centres of a size x size pinhole camera with field of view `fov_deg`, pixels in row-major order."""
    f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    c = (torch.arange(size, dtype=torch.float64) + 0.5 - size / 2) / f
    i, j = torch.meshgrid(c, c, indexing="ij")  # i: row (y), j: column (x)
    d = torch.stack([j, i, torch.ones_like(j)], -1).reshape(-1, 3)
    return (d / d.norm(dim=-1, keepdim=True)).float()


def pixel_rays(viewmats: Tensor, dirs_cam: Tensor) -> tuple[Tensor, Tensor]:
    """viewmats [B, V, 4, 4] world-to-camera, dirs_cam [P, 3] (`camera_ray_dirs`) -> (origins [B, V, 1, 3],
    unit directions [B, V, P, 3]), world frame, float32."""
    vm = viewmats.float()
    R, t = vm[..., :3, :3], vm[..., :3, 3:]  # [B,V,3,3], [B,V,3,1]
    origins = -(t.transpose(-1, -2) @ R)  # (-R^T t)^T = -t^T R: [B, V, 1, 3]
    dirs = dirs_cam.float() @ R  # (R^T d)^T = d^T R: [B, V, P, 3], unit as R is orthonormal
    return origins, dirs


def ray_map(origins: Tensor, dirs: Tensor, size: int) -> Tensor:
    """Plücker coordinates of each pixel's ray: origins [B, V, 1, 3], dirs [B, V, size*size, 3] (`pixel_rays`)
    -> [B*V, 6, size, size] = (d, o x d). The moment is written out (no cross op) so that it exports to ONNX."""
    o = origins.expand_as(dirs)
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = dirs.unbind(-1)
    m = torch.stack([oy * dz - oz * dy, oz * dx - ox * dz, ox * dy - oy * dx], -1)
    rays = torch.cat([dirs, m], -1)  # [B, V, P, 6]
    return rays.reshape(-1, size, size, 6).permute(0, 3, 1, 2)


def camera_input(viewmats: Tensor) -> Tensor:
    """viewmats [B, V, 4, 4] world-to-camera -> [B*V, 16], row-major (the UNet's class-embedding input)."""
    return viewmats.reshape(-1, 16)


def repeat_tokens(tokens: Tensor, num_views: int) -> Tensor:
    """tokens [B, T, D] -> [B*V, T, D] (each object's tokens repeated for its V views)."""
    b, t, d = tokens.shape
    return tokens.unsqueeze(1).expand(b, num_views, t, d).reshape(b * num_views, t, d)


class ImageTokenizer(nn.Module):
    """The image encoder of the teacher and of PEPD: image [B, 3, S, S] in 0..1 -> tokens [B, T, dim].

    The image is resized to `image_size` (`resize_image`), mapped to [-1, 1], cut into patch x patch patches
    by a strided Conv2d, LayerNorm'ed, and a learned positional embedding is added. T = (image_size/patch)^2.
    """

    def __init__(self, image_size: int, patch_size: int, dim: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide image_size {image_size}")
        self.image_size, self.patch_size, self.dim = image_size, patch_size, dim
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)
        self.pos_embed = nn.Parameter(torch.randn(1, (image_size // patch_size) ** 2, dim) * 0.02)

    @classmethod
    def for_unet(cls, cfg: MVUNetConfig) -> "ImageTokenizer":
        """The tokenizer that goes with a UNet config (tokens of width cross_attention_dim)."""
        return cls(cfg.sample_size, cfg.image_patch_size, cfg.cross_attention_dim)

    def forward(self, image: Tensor) -> Tensor:  # image: [B, 3, S, S] in 0..1
        x = resize_image(image, self.image_size) * 2.0 - 1.0
        x = self.proj(x).flatten(2).transpose(1, 2)  # [B, T, dim]
        return self.norm(x) + self.pos_embed


# ---- building blocks (names and maths of diffusers) ------------------------------------------------------------

class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv, + projected time embedding, GroupNorm-SiLU-conv, + (1x1-projected) input."""

    def __init__(self, cin: int, cout: int, temb: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # x: [N, cin, H, W], emb: [N, temb]
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nn.Module):
    """diffusers-named attention (to_q/to_k/to_v without bias, to_out.0 with bias).

    Self-attention (context None) with num_views > 1 attends over all views of an object: the batch of
    [B*V, L, C] tokens is viewed as [B, V*L, C].
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, num_views: int = 1):
        super().__init__()
        self.heads, self.num_views = heads, num_views
        cdim = dim if context_dim is None else context_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(cdim, dim, bias=False)
        self.to_v = nn.Linear(cdim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:  # x: [N, L, C], context: [N, T, Cc]
        n, length, c = x.shape
        if context is None:
            if self.num_views > 1:
                x = x.reshape(-1, self.num_views * length, c)
            context = x
        out = multihead_sdpa(self.to_q(x), self.to_k(context), self.to_v(context), self.heads)
        return self.to_out[0](out).reshape(n, length, c)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        # net.1 is diffusers' Dropout(0): Identity keeps the indices (net.0.proj, net.2) identical
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm block: multi-view self-attention, cross-attention to image tokens, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, context_dim: int, num_views: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, None, num_views)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:  # x: [N, L, C], context: [N, T, Cc]
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2D(nn.Module):
    """diffusers' Transformer2DModel with use_linear_projection=True and one block ("SpatialTransformer3D")."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int, num_views: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, context_dim, num_views)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:  # x: [N, C, H, W]
        n, c, h, w = x.shape
        t = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c))
        for blk in self.transformer_blocks:
            t = blk(t, context)
        return self.proj_out(t).reshape(n, h, w, c).permute(0, 3, 1, 2) + x


class Downsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """DownBlock2D (attn=False) or CrossAttnDownBlock2D (attn=True). Returns (h, skip tensors)."""

    def __init__(self, cfg: MVUNetConfig, cin: int, cout: int, attn: bool, downsample: bool):
        super().__init__()
        g, eps, temb = cfg.norm_num_groups, cfg.norm_eps, cfg.time_embed_dim
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, temb, g, eps)
                                      for i in range(cfg.layers_per_block)])
        if attn:
            self.attentions = nn.ModuleList([
                Transformer2D(cout, cfg.heads(cout), cfg.cross_attention_dim, g, cfg.num_views)
                for _ in range(cfg.layers_per_block)])
        else:
            self.attentions = None
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if downsample else None

    def forward(self, x: Tensor, emb: Tensor, context: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, emb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """UpBlock2D / CrossAttnUpBlock2D: layers_per_block + 1 resnets, each eating one skip tensor."""

    def __init__(self, cfg: MVUNetConfig, cin: int, cout: int, cprev: int, attn: bool, upsample: bool):
        super().__init__()
        g, eps, temb = cfg.norm_num_groups, cfg.norm_eps, cfg.time_embed_dim
        n = cfg.layers_per_block + 1
        self.resnets = nn.ModuleList([
            ResnetBlock2D((cprev if i == 0 else cout) + (cin if i == n - 1 else cout), cout, temb, g, eps)
            for i in range(n)])
        if attn:
            self.attentions = nn.ModuleList([
                Transformer2D(cout, cfg.heads(cout), cfg.cross_attention_dim, g, cfg.num_views) for _ in range(n)])
        else:
            self.attentions = None
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if upsample else None

    def forward(self, x: Tensor, skips: list[Tensor], emb: Tensor, context: Tensor) -> Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips[-1 - i]], dim=1), emb)  # the last skip first, as diffusers pops
            if self.attentions is not None:
                x = self.attentions[i](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    """UNetMidBlock2DCrossAttn: resnet, transformer, resnet."""

    def __init__(self, cfg: MVUNetConfig, c: int):
        super().__init__()
        g, eps, temb = cfg.norm_num_groups, cfg.norm_eps, cfg.time_embed_dim
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, temb, g, eps), ResnetBlock2D(c, c, temb, g, eps)])
        self.attentions = nn.ModuleList([Transformer2D(c, cfg.heads(c), cfg.cross_attention_dim, g, cfg.num_views)])

    def forward(self, x: Tensor, emb: Tensor, context: Tensor) -> Tensor:
        x = self.resnets[0](x, emb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, emb)


class MVUNet(nn.Module):
    """Multi-view denoiser with diffusers `UNet2DConditionModel` parameter names (see module docstring)."""

    def __init__(self, cfg: MVUNetConfig):
        super().__init__()
        self.config = cfg
        ch = cfg.block_out_channels
        n = len(ch)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], cfg.time_embed_dim)
        self.class_embedding = TimestepEmbedding(cfg.camera_dim, cfg.time_embed_dim)
        self.down_blocks = nn.ModuleList([
            DownBlock(cfg, ch[max(i - 1, 0)], ch[i], "CrossAttn" in t, downsample=i < n - 1)
            for i, t in enumerate(cfg.down_block_types)])
        self.mid_block = MidBlock(cfg, ch[-1])
        rch = ch[::-1]
        self.up_blocks = nn.ModuleList([
            UpBlock(cfg, rch[min(i + 1, n - 1)], rch[i], rch[max(i - 1, 0)], "CrossAttn" in t, upsample=i < n - 1)
            for i, t in enumerate(cfg.up_block_types)])
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)

    def forward(self, sample: Tensor, timestep: Tensor | float, encoder_hidden_states: Tensor, camera: Tensor,
                return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """sample [B*V, Cin, H, W], timestep [B*V] or scalar (0..T-1), encoder_hidden_states [B*V, T, D],
        camera [B*V, 16] -> eps [B*V, Cout, H, W] (and, with return_features, the last up block's output
        before conv_norm_out, [B*V, C0, H, W])."""
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([float(timestep)], device=sample.device)
        t = timestep.reshape(-1).float().expand(sample.shape[0])
        emb = self.time_embedding(timestep_embedding(t, self.config.block_out_channels[0]).to(sample.dtype))
        emb = emb + self.class_embedding(camera.to(sample.dtype))
        context = encoder_hidden_states.to(sample.dtype)

        x = self.conv_in(sample)
        skips = [x]
        for blk in self.down_blocks:
            x, res = blk(x, emb, context)
            skips += res
        x = self.mid_block(x, emb, context)
        for blk in self.up_blocks:
            k = len(blk.resnets)
            x = blk(x, skips[-k:], emb, context)
            skips = skips[:-k]
        features = x
        eps = self.conv_out(F.silu(self.conv_norm_out(x)))
        return (eps, features) if return_features else eps


def load_matching(module: nn.Module, state_dict: dict[str, Tensor], prefix: str = "") -> tuple[list[str], list[str]]:
    """Copy the tensors of `state_dict` whose name (after removing `prefix`) and shape match `module`'s.

    Returns (loaded, skipped): names (as in `state_dict`) copied, and names not copied (unknown name or other
    shape). Parameters of `module` without a match keep their values. Copies cast to the module's dtype.
    """
    own = module.state_dict()
    loaded, skipped = [], []
    with torch.no_grad():
        for name, value in state_dict.items():
            key = name[len(prefix):] if prefix and name.startswith(prefix) else name
            if key in own and tuple(own[key].shape) == tuple(value.shape):
                own[key].copy_(value.to(dtype=own[key].dtype, device=own[key].device))
                loaded.append(name)
            else:
                skipped.append(name)
    return loaded, skipped


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["RAY_CHANNELS", "ImageTokenizer", "MVUNet", "MVUNetConfig", "camera_input", "camera_ray_dirs",
           "condition_sample", "count_parameters", "load_matching", "pixel_rays", "ray_map", "repeat_tokens",
           "resize_image"]

