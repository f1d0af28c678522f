"""PEPD: the one-pass student of DD3G. (image, teacher noise N, cameras) -> pixel-aligned 3D Gaussians.

Architecture (Qin et al. 2025, "Distilling Multi-view Diffusion Models into 3D Generators"):

    image [B,3,S,S] 0..1 ──ImageTokenizer──> image tokens [B,T,D] ─────────────────────────┐ (cross-attention)
    noise [B,V,3,h,w] ⊕ image ──MVUNet at t=T-1 (Phase 1, Pattern Extraction; the teacher's  │
        denoiser, loadable from its weights)──> last up-block features [B*V,C0,h,w] ⊕ eps ⊕ input
    ──patchify p x p per view──> Gaussian tokens [B, V*(h/p)^2, W] (+ view and position embeddings)
    ──Phase 2, Progressive Decoding: decoder_depth blocks of (self-attention over all views' tokens,
        cross-attention to the image tokens, MLP); readout heads at increasing depth:
        after 1/3 of the blocks: position (depth along the pixel ray + small offset)
        after 2/3: scale + rotation;  at the end: opacity + colour (SH)
    ──> each token emits gaussians_per_token = k * p^2 Gaussians, k per feature pixel (pixel-aligned).

Outputs are activated values in the dd3g_sdk.gaussians conventions (world units, the object in [-0.5,0.5]^3):
    means [B,N,3] = ray origin + depth * unit ray direction + offset; depth = |camera centre| + depth_half_range *
        (2 sigmoid - 1), offset = offset_max * tanh, so every mean lies within depth_half_range + sqrt(3)
        offset_max of the sphere of radius |camera centre| around the camera (the origin's distance);
    scales [B,N,3] linear std-devs in [scale_min, scale_max] (sigmoid, computed in fp32);
    quats [B,N,4] wxyz unit; opacities [B,N] in (0,1) (sigmoid);
    sh [B,N,K,3], K=(sh_degree+1)^2: sh[:,:,0] = (rgb - 0.5)/C0 with rgb = sigmoid in (0,1), higher bands
        sh_rest_max * tanh.
N = V * h * h * k, ordered (view, pixel row, pixel column, k). Rays use the view set's fixed intrinsics at
resolution h (pixel centres at +0.5) and the given world-to-camera `viewmats` (OpenCV frame; R orthonormal,
so the camera centre is -R^T t without a matrix inverse).

Export: static shapes except the batch, no data-dependent control flow, SDPA attention; traces with
torch.onnx.export (TorchScript exporter, opset 17+). Weights: `save_pretrained(dir)` writes config.json (the
`PEPDConfig` fields, including the marker "kind": "pepd") and model.safetensors; `from_pretrained(dir)` never
unpickles.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cameras import ViewSetConfig, stack_viewmats
from ..config import load_config, save_config
from ..errors import InputError
from ..gaussians import C0
from .layers import multihead_sdpa
from .unet import (ImageTokenizer, MVUNet, MVUNetConfig, camera_input, camera_ray_dirs, condition_sample,
                   count_parameters, load_matching, pixel_rays, ray_map, repeat_tokens)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
KIND = "pepd"


@dataclass(frozen=True)
class PEPDConfig:
    """PEPD hyper-parameters. `kind` is a fixed marker ("pepd") so that a config.json says what it configures.

    Units: sizes in pixels; depth_half_range, offset_max, scale_min/max in world units (the object fits
    [-0.5, 0.5]^3, cameras at `views.radius`).
    """
    kind: str = KIND
    unet: MVUNetConfig = field(default_factory=MVUNetConfig)  # Phase 1 = the teacher's denoiser config
    views: ViewSetConfig = field(default_factory=ViewSetConfig)
    image_size: int = 64  # S, input image side
    noise_size: int = 64  # h = w, the teacher's sample resolution (= unet.sample_size)
    patch_size: int = 4  # p: feature pixels per Gaussian token side
    decoder_width: int = 128
    decoder_depth: int = 4
    decoder_heads: int = 4
    decoder_mlp_ratio: int = 4
    gaussians_per_token: int = 16  # k * p^2, k Gaussians per feature pixel
    sh_degree: int = 0
    depth_half_range: float = 0.9  # depth along a ray in |cam centre| +- this (the object's bounding sphere 0.87)
    offset_max: float = 0.05  # bound of the free 3D offset of a mean from its ray
    scale_min: float = 1e-3
    scale_max: float = 0.1
    sh_rest_max: float = 0.5  # bound of the SH coefficients of bands >= 1
    # Fraction of the input side that the object's longer side spans in the images the model is trained on: the
    # SDK frames a user's image to it (dd3g_sdk.preprocess.PreprocessConfig.for_model). 0.57 is the median of the
    # procedural world's view-0 renders (5-95 %: 0.45-0.70, 256 train objects); training inputs are not re-framed.
    input_fill: float = 0.57

    def __post_init__(self) -> None:
        if self.kind != KIND:
            raise ValueError(f"kind must be {KIND!r}, got {self.kind!r}")
        u = self.unet
        if u.sample_size != self.noise_size:
            raise ValueError(f"unet.sample_size {u.sample_size} must equal noise_size {self.noise_size}")
        if u.num_views != self.views.num_views:
            raise ValueError(f"unet.num_views {u.num_views} must equal views.num_views {self.views.num_views}")
        if u.in_channels != 6 + u.ray_channels or u.out_channels != 3:
            raise ValueError(f"the Phase-1 UNet must take {6 + u.ray_channels} channels (noise + image"
                             f"{' + rays' if u.camera_rays else ''}) and predict 3 (epsilon)")
        if u.camera_dim != 16:
            raise ValueError("unet.camera_dim must be 16 (a flattened 4x4 world-to-camera matrix)")
        if self.noise_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide noise_size {self.noise_size}")
        if self.gaussians_per_token < 1 or self.gaussians_per_token % (self.patch_size ** 2):
            raise ValueError(f"gaussians_per_token {self.gaussians_per_token} must be a positive multiple of "
                             f"patch_size^2 = {self.patch_size ** 2} (pixel-aligned Gaussians)")
        if self.decoder_width % self.decoder_heads:
            raise ValueError(f"decoder_heads {self.decoder_heads} must divide decoder_width {self.decoder_width}")
        if self.decoder_depth < 3:
            raise ValueError("decoder_depth must be >= 3 (position, shape and appearance read out at 1/3, 2/3, 3/3)")
        if not 0 <= self.sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {self.sh_degree}")
        if not 0 < self.scale_min < self.scale_max:
            raise ValueError("need 0 < scale_min < scale_max")
        if self.image_size < 1 or self.depth_half_range <= 0 or self.offset_max < 0 or self.sh_rest_max < 0:
            raise ValueError("image_size and depth_half_range must be > 0, offset_max and sh_rest_max >= 0")
        if not 0.0 < self.input_fill <= 1.0:
            raise ValueError(f"input_fill must be in (0, 1], got {self.input_fill}")
        if self.depth_half_range >= self.views.radius:
            raise ValueError("depth_half_range must be smaller than the camera radius (Gaussians behind the camera)")

    @property
    def num_views(self) -> int:
        return self.views.num_views

    @property
    def gaussians_per_pixel(self) -> int:
        return self.gaussians_per_token // self.patch_size ** 2

    @property
    def num_gaussians(self) -> int:
        return self.num_views * self.noise_size ** 2 * self.gaussians_per_pixel

    @property
    def sh_coeffs(self) -> int:
        return (self.sh_degree + 1) ** 2

    @classmethod
    def preset(cls, name: str) -> "PEPDConfig":
        """"tiny" (CI, < 1M parameters, 32x32), "small" (shipped default, 64x64, the small teacher's UNet),
        "base" (paper-like scale: wider UNet and decoder, 2 Gaussians per pixel)."""
        if name == "tiny":
            unet = MVUNetConfig(sample_size=32, block_out_channels=(16, 32),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                                attention_head_dim=8, cross_attention_dim=32, norm_num_groups=8, image_patch_size=8)
            return cls(unet=unet, image_size=32, noise_size=32, patch_size=4, decoder_width=64, decoder_depth=3,
                       decoder_heads=4, gaussians_per_token=16)
        if name == "small":
            return cls()
        if name == "base":
            unet = MVUNetConfig(sample_size=64, block_out_channels=(128, 256, 512), layers_per_block=2,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                attention_head_dim=64, cross_attention_dim=512, norm_num_groups=32,
                                image_patch_size=4)
            return cls(unet=unet, image_size=64, noise_size=64, patch_size=4, decoder_width=512, decoder_depth=12,
                       decoder_heads=8, gaussians_per_token=32)
        raise ValueError(f"unknown PEPD preset {name!r}; choose tiny, small or base")

    def with_unet(self, unet: MVUNetConfig) -> "PEPDConfig":
        """This config with another Phase-1 UNet (e.g. the teacher's), noise size following it."""
        return replace(self, unet=unet, noise_size=unet.sample_size)


# ---- Phase 2 blocks ------------------------------------------------------------------------------------------

class DecoderBlock(nn.Module):
    """Pre-LN transformer block over Gaussian tokens: self-attention (all views), cross-attention to image
    tokens, GELU MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.cross_q = nn.Linear(width, width)
        self.cross_kv = nn.Linear(width, 2 * width)
        self.cross_proj = nn.Linear(width, width)
        self.norm3 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:  # x: [B, L, W], context: [B, T, W]
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self.proj(multihead_sdpa(q, k, v, self.heads))
        k, v = self.cross_kv(context).chunk(2, dim=-1)
        x = x + self.cross_proj(multihead_sdpa(self.cross_q(self.norm2(x)), k, v, self.heads))
        return x + self.fc2(F.gelu(self.fc1(self.norm3(x))))


class Head(nn.Module):
    """LayerNorm + Linear readout: [B, L, W] -> [B, L, gaussians_per_token * channels]."""

    def __init__(self, width: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, out)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x))


class PEPD(nn.Module):
    """The DD3G student generator. See the module docstring for the architecture and output conventions."""

    def __init__(self, cfg: PEPDConfig):
        super().__init__()
        self.config = cfg
        V, h, p, W = cfg.num_views, cfg.noise_size, cfg.patch_size, cfg.decoder_width
        c0 = cfg.unet.block_out_channels[0]
        self.tokens_per_view = (h // p) ** 2

        # Phase 1: the teacher's image encoder and denoiser
        self.image_encoder = ImageTokenizer.for_unet(cfg.unet)
        self.unet = MVUNet(cfg.unet)

        # fusion: per-pixel features (C0) ⊕ eps (3) ⊕ the UNet input (noise 3 + image 3 [+ rays 6]), patchified
        self.patch_embed = nn.Linear(p * p * (c0 + 3 + cfg.unet.in_channels), W)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, self.tokens_per_view, W))
        self.view_embed = nn.Parameter(torch.zeros(1, V, 1, W))
        self.context_proj = nn.Linear(cfg.unet.cross_attention_dim, W)
        self.context_norm = nn.LayerNorm(W)

        # Phase 2: progressive decoding
        self.blocks = nn.ModuleList([DecoderBlock(W, cfg.decoder_heads, cfg.decoder_mlp_ratio)
                                     for _ in range(cfg.decoder_depth)])
        G, K = cfg.gaussians_per_token, cfg.sh_coeffs
        self.readout = (cfg.decoder_depth // 3, 2 * cfg.decoder_depth // 3)  # blocks before position / shape
        self.head_position = Head(W, G * 4)  # depth logit, offset (3)
        self.head_shape = Head(W, G * 7)  # scale logits (3), quaternion (4)
        self.head_appearance = Head(W, G * (1 + 3 * K))  # opacity logit, colour logits (3), SH rest (3(K-1))

        # constants of the fixed view set (derived from the config: not saved with the weights)
        self.register_buffer("ray_dirs_cam", camera_ray_dirs(cfg.views.fov_deg, h), persistent=False)  # [h*h, 3]
        self.register_buffer("default_viewmats", torch.from_numpy(stack_viewmats(cfg.views.cameras(h, h))),
                             persistent=False)  # [V, 4, 4]
        self.register_buffer("timestep", torch.full((1,), float(cfg.unet.num_train_timesteps - 1)),
                             persistent=False)
        self._init_weights()

    # ---- initialisation ------------------------------------------------------------------------------------
    def _init_weights(self) -> None:
        cfg, W = self.config, self.config.decoder_width
        decoder = [self.patch_embed, self.context_proj, *self.blocks]
        for m in (mod for part in decoder for mod in part.modules()):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.view_embed, std=0.02)
        # heads: small weights so that the initial output is a sensible blob that still depends on the inputs
        # (logit std ~0.1); biases put every Gaussian at the origin's depth, about half a pixel wide, identity
        # rotation, opacity 0.5, grey
        for head in (self.head_position, self.head_shape, self.head_appearance):
            nn.init.normal_(head.linear.weight, std=0.1 / math.sqrt(W))
            nn.init.zeros_(head.linear.bias)
        G = cfg.gaussians_per_token
        pixel = 2 * cfg.views.radius * math.tan(math.radians(cfg.views.fov_deg) / 2) / cfg.noise_size
        s0 = min(max(0.5 * pixel, cfg.scale_min * 1.01), cfg.scale_max * 0.99)
        u = (s0 - cfg.scale_min) / (cfg.scale_max - cfg.scale_min)
        with torch.no_grad():
            b = self.head_shape.linear.bias.view(G, 7)
            b[:, :3] = math.log(u / (1 - u))
            b[:, 3] = 1.0  # quaternion w

    # ---- properties ----------------------------------------------------------------------------------------
    @property
    def num_gaussians(self) -> int:
        return self.config.num_gaussians

    @property
    def noise_shape(self) -> tuple[int, int, int, int]:  # (V, 3, h, w) of one object's teacher noise
        h = self.config.noise_size
        return (self.config.num_views, 3, h, h)

    @property
    def image_shape(self) -> tuple[int, int, int]:  # (3, S, S)
        return (3, self.config.image_size, self.config.image_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embed.weight.device

    def num_parameters(self) -> int:
        return count_parameters(self)

    def parameter_groups(self) -> dict[str, int]:
        """Parameter counts per part: Phase 1 (image encoder, UNet), fusion, Phase 2 (decoder, heads)."""
        fusion = [self.patch_embed, self.context_proj, self.context_norm]
        return {
            "phase1.image_encoder": count_parameters(self.image_encoder),
            "phase1.unet": count_parameters(self.unet),
            "fusion": sum(count_parameters(m) for m in fusion) + self.pos_embed.numel() + self.view_embed.numel(),
            "phase2.blocks": count_parameters(self.blocks),
            "phase2.heads": sum(count_parameters(m) for m in (self.head_position, self.head_shape,
                                                               self.head_appearance)),
        }

    def summary(self) -> str:
        cfg = self.config
        groups = self.parameter_groups()
        lines = [f"PEPD: {self.num_parameters():,} parameters, {self.num_gaussians:,} Gaussians "
                 f"({cfg.num_views} views x {cfg.noise_size}x{cfg.noise_size} pixels x {cfg.gaussians_per_pixel}),"
                 f" SH degree {cfg.sh_degree}",
                 f"  inputs: image [B,{','.join(map(str, self.image_shape))}], "
                 f"noise [B,{','.join(map(str, self.noise_shape))}]",
                 f"  Phase 1 UNet: channels {tuple(cfg.unet.block_out_channels)}, {cfg.unet.layers_per_block} "
                 f"layer(s)/block, {cfg.unet.num_image_tokens} image tokens",
                 f"  Phase 2: {cfg.decoder_depth} blocks x width {cfg.decoder_width}, "
                 f"{cfg.num_views * self.tokens_per_view} Gaussian tokens of {cfg.gaussians_per_token} Gaussians"]
        lines += [f"  {name:22s} {n:>12,}" for name, n in groups.items()]
        return "\n".join(lines)

    # ---- forward -------------------------------------------------------------------------------------------
    def camera_rays(self, viewmats: Tensor) -> tuple[Tensor, Tensor]:
        """viewmats [B, V, 4, 4] world-to-camera -> (origins [B, V, 1, 3], unit directions [B, V, h*h, 3]),
        world frame, float32, pixels in row-major order."""
        return pixel_rays(viewmats, self.ray_dirs_cam)

    def _patchify(self, x: Tensor) -> Tensor:
        """[B*V, C, h, h] per-view maps -> [B, V, L, p*p*C] tokens, L = (h/p)^2 row-major patches, each patch
        flattened as (row in patch, column in patch, channel)."""
        cfg = self.config
        V, p, n, c = cfg.num_views, cfg.patch_size, cfg.noise_size // cfg.patch_size, x.shape[1]
        x = x.reshape(-1, V, c, n, p, n, p).permute(0, 1, 3, 5, 4, 6, 2)
        return x.reshape(-1, V, n * n, p * p * c)

    def _unpatchify(self, x: Tensor, channels: int) -> Tensor:
        """[B, V*L, G*channels] token outputs -> [B, V, h*h, k, channels] in pixel order."""
        cfg = self.config
        V, p, k = cfg.num_views, cfg.patch_size, cfg.gaussians_per_pixel
        n = cfg.noise_size // p
        x = x.reshape(-1, V, n, n, p, p, k, channels).permute(0, 1, 2, 4, 3, 5, 6, 7)
        return x.reshape(-1, V, cfg.noise_size ** 2, k, channels)

    def forward(self, image: Tensor, noise: Tensor, viewmats: Tensor | None = None,
                timestep: Tensor | int | None = None) -> dict[str, Tensor]:
        """image [B, 3, S, S] in 0..1, noise [B, V, 3, h, w] (the teacher's initial noise), viewmats
        [B, V, 4, 4] world-to-camera or None (the config's view set) -> dict of float32 tensors:
        means [B, N, 3], scales [B, N, 3], quats [B, N, 4] (wxyz), opacities [B, N], sh [B, N, K, 3].

        `timestep` (int or [B], 0..T-1) is for PEPD used as a denoiser (`GaussianLiftTeacher`: `noise` is then the
        noisy views x_t); None is the student's fixed t = T-1."""
        cfg = self.config
        V, h, p = cfg.num_views, cfg.noise_size, cfg.patch_size
        # shapes are static when tracing for export (only the batch is dynamic): check them eagerly only
        if not torch.jit.is_tracing() and (tuple(image.shape[1:]) != self.image_shape
                                           or tuple(noise.shape[1:]) != self.noise_shape):
            raise ValueError(f"PEPD expects image [B,{','.join(map(str, self.image_shape))}] and noise "
                             f"[B,{','.join(map(str, self.noise_shape))}], got {list(image.shape)} and "
                             f"{list(noise.shape)}")
        if viewmats is None:
            viewmats = self.default_viewmats.unsqueeze(0).expand(image.shape[0], V, 4, 4)
        dtype = self.dtype
        image, noise = image.to(dtype), noise.to(dtype)

        # Phase 1: pattern extraction at t = T-1, the teacher's first denoising step from this noise
        tokens = self.image_encoder(image)  # [B, T, D]
        rays = ray_map(*self.camera_rays(viewmats), h).to(dtype) if cfg.unet.camera_rays else None
        sample = condition_sample(noise, image, rays)  # [B*V, 6 (+6 rays), h, h]
        if timestep is None:
            t = self.timestep
        else:  # one timestep per object -> per view (b * V + v), as the UNet sees the views
            t = torch.as_tensor(timestep, device=image.device).float().reshape(-1)
            t = t.expand(image.shape[0]).repeat_interleave(V) if t.numel() == 1 else t.repeat_interleave(V)
        eps, feats = self.unet(sample, t, repeat_tokens(tokens, V), camera_input(viewmats).to(dtype),
                               return_features=True)

        # fusion: pixel features -> Gaussian tokens (+ view, position); image tokens -> decoder context
        x = self._patchify(torch.cat([feats, eps, sample], dim=1))  # [B, V, L, p*p*(C0 + 3 + Cin)]
        x = self.patch_embed(x) + self.pos_embed + self.view_embed  # [B, V, L, W]
        x = x.reshape(-1, V * self.tokens_per_view, cfg.decoder_width)
        context = self.context_norm(self.context_proj(tokens))  # [B, T, W]

        # Phase 2: progressive decoding, heads read out at increasing depth
        outs = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x, context)
            if i + 1 == self.readout[0]:
                outs["position"] = self.head_position(x)
            if i + 1 == self.readout[1]:
                outs["shape"] = self.head_shape(x)
        outs["appearance"] = self.head_appearance(x)
        return self._activate(outs, viewmats)

    def _activate(self, outs: dict[str, Tensor], viewmats: Tensor) -> dict[str, Tensor]:
        """Raw head outputs -> activated Gaussians (all in float32)."""
        cfg = self.config
        K = cfg.sh_coeffs
        pos = self._unpatchify(outs["position"].float(), 4)  # [B, V, P, k, 4]
        shape = self._unpatchify(outs["shape"].float(), 7)
        app = self._unpatchify(outs["appearance"].float(), 1 + 3 * K)

        origins, dirs = self.camera_rays(viewmats)  # [B,V,1,3], [B,V,P,3]
        radius = torch.sqrt((origins * origins).sum(-1, keepdim=True)).unsqueeze(-2)  # [B, V, 1, 1, 1]
        r = cfg.depth_half_range
        depth = radius - r + 2 * r * torch.sigmoid(pos[..., :1])  # [B, V, P, k, 1]
        means = origins.unsqueeze(-2) + depth * dirs.unsqueeze(-2) + cfg.offset_max * torch.tanh(pos[..., 1:])

        scales = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * torch.sigmoid(shape[..., :3])
        q = shape[..., 3:]
        quats = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + 1e-12)

        opacities = torch.sigmoid(app[..., 0])
        rgb = torch.sigmoid(app[..., 1:4])
        sh0 = ((rgb - 0.5) / C0).unsqueeze(-2)  # [B, V, P, k, 1, 3]
        if K > 1:
            rest = cfg.sh_rest_max * torch.tanh(app[..., 4:]).reshape(*app.shape[:-1], K - 1, 3)
            sh = torch.cat([sh0, rest], dim=-2)
        else:
            sh = sh0
        n = cfg.num_gaussians
        return {"means": means.reshape(-1, n, 3), "scales": scales.reshape(-1, n, 3),
                "quats": quats.reshape(-1, n, 4), "opacities": opacities.reshape(-1, n),
                "sh": sh.reshape(-1, n, K, 3)}

    # ---- teacher weights -----------------------------------------------------------------------------------
    def init_from_teacher(self, unet_state_dict: dict[str, Tensor],
                          image_encoder_state_dict: dict[str, Tensor] | None = None,
                          image_encoder_prefix: str = "") -> tuple[list[str], list[str]]:
        """Copy the teacher's denoiser (and optionally image encoder) weights into Phase 1 where names and
        shapes match (representation alignment). Returns (loaded, skipped) tensor names; image-encoder names
        are reported as "image_encoder.<name>"."""
        loaded, skipped = load_matching(self.unet, unet_state_dict)
        if image_encoder_state_dict is not None:
            lo, sk = load_matching(self.image_encoder, image_encoder_state_dict, prefix=image_encoder_prefix)
            loaded += [f"image_encoder.{k}" for k in lo]
            skipped += [f"image_encoder.{k}" for k in sk]
        return loaded, skipped

    # ---- persistence ---------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write config.json and model.safetensors (atomic writes) into `directory` (created if missing).
        `dtype` (e.g. torch.float16 for a small shipped checkpoint) casts the stored tensors; loading casts
        them back to the model's dtype."""
        from safetensors.torch import save

        from .. import __version__
        from .._fileio import atomic_write_bytes

        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise InputError(d, "cannot save: it is a file, not a folder")
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to(device="cpu", dtype=dtype or v.dtype).contiguous()
                   for k, v in self.state_dict().items()}
        atomic_write_bytes(d / WEIGHTS_NAME, save(tensors, metadata={"kind": KIND, "dd3g_sdk": __version__}))
        save_config(self.config, d / CONFIG_NAME)
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu") -> "PEPD":
        """Rebuild a PEPD saved with `save_pretrained`. Unknown config keys, a missing/truncated/foreign
        weights file and missing, extra or mis-shaped tensors raise InputError naming the file.
        dtype None keeps float32."""
        d = Path(directory)
        if not d.is_dir():
            raise InputError(d, f"not a PEPD folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
        cfg = load_config(PEPDConfig, d / CONFIG_NAME)
        tensors = read_safetensors(d / WEIGHTS_NAME)
        model = cls(cfg)
        check_state_dict(model, tensors, d / WEIGHTS_NAME)
        model.load_state_dict(tensors, strict=True)  # copies, casting to the model's float32
        model.eval()
        return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """All tensors of a safetensors file, or InputError naming it (missing, truncated, not safetensors)."""
    if not path.is_file():
        raise InputError(path, "weights file not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise InputError(path, f"not a readable safetensors file ({type(e).__name__}: {e})") from None


def check_state_dict(model: nn.Module, tensors: dict[str, Tensor], path: Path) -> None:
    """InputError naming `path` unless `tensors` has exactly the model's names, shapes and floating dtypes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing:
        raise InputError(path, f"{len(missing)} tensor(s) missing for this config, e.g. {', '.join(missing[:3])}")
    if extra:
        raise InputError(path, f"{len(extra)} unexpected tensor(s) for this config, e.g. {', '.join(extra[:3])}")
    for k, v in own.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise InputError(path, f"tensor {k} has shape {list(tensors[k].shape)}, the config needs {list(v.shape)}")
        if not tensors[k].is_floating_point():
            raise InputError(path, f"tensor {k} has dtype {tensors[k].dtype}, expected floating point")


__all__ = ["PEPD", "PEPDConfig"]
