"""The multi-view diffusion teacher: one interface, and a diffusers implementation loaded from a local folder.

`MultiViewTeacher` is what distillation talks to. A teacher declares its view set (V cameras, view 0 = the
input view), its sample space and prediction type, and offers
    condition(image [B, 3, S, S] in 0..1)                  -> cond (opaque to callers)
    denoise(x_t [B, V, 3, h, w], t, cond, viewmats)       -> prediction [B, V, 3, h, w] (epsilon here)
    ode(noise [B, V, 3, h, w], cond, steps)               -> views [B, V, 3, h, w] in 0..1
`ode` is the deterministic DDIM trajectory (eta = 0) from the given initial noise; with
`return_trajectory=True` it also returns the intermediate states. The sample space x is kept in [-1, 1]
(pixels mapped by x = 2 * image - 1; `encode`/`decode` convert), the usual diffusion range: at t = T-1, x is
~N(0, 1) noise; `denoise` takes and `ode` walks x in that range, and only `ode`'s output is mapped back to 0..1.

`DiffusersMVTeacher` is a pixel-space teacher (DESIGN.md "The model and the teacher"):
- `unet/`: diffusers `UNet2DConditionModel(**MVUNetConfig.to_diffusers_kwargs())`, input = noisy view (3)
  ⊕ condition image (3) [⊕ per-pixel Plücker rays (6) when the UNet takes 12 channels: `MVUNetConfig.camera_rays`;
  the rays use the view set's field of view with the given world-to-camera matrices],
  camera = flattened 4x4 world-to-camera matrix through `class_embedding`
  ("projection"), cross-attention (attn2) to image tokens, and `MultiViewAttnProcessor` on every attn1
  (self-attention over the tokens of all V views of an object);
- `scheduler/`: diffusers `DDIMScheduler` (training noise and the ODE);
- `image_encoder/`: `TeacherImageEncoder`, a diffusers ModelMixin/ConfigMixin around `ImageTokenizer`;
- `teacher.json`: `TeacherConfig` (view set, resolution, prediction type, sample space, default guidance).
Every folder is diffusers `save_pretrained` output (safetensors), so `from_pretrained(local_dir)` needs no
network and never unpickles.

`GaussianLiftTeacher` is a pixel-space teacher with a 3D prior (DESIGN.md "A teacher with a 3D prior"; the idea of
DMV3D, Xu et al. 2023): its denoiser is a PEPD network that reads the noisy views x_t (in place of the noise) and
the timestep, emits 3D Gaussians, and renders them at the V cameras; the renders are its x0 prediction
(`prediction_type` "sample"), so every step's views come from one 3D object and agree with each other by
construction. Folder: `denoiser/` (PEPD `save_pretrained`: config.json + model.safetensors), `scheduler/`
(diffusers), `teacher.json` with `"denoiser": "gaussians"`. `load_teacher_folder(folder)` opens either kind.

Classifier-free guidance: the null condition is a uniform grey image (0.5, i.e. 0 after the [-1, 1] map);
training drops the image to it with some probability; `ode(..., guidance_scale=g)` mixes
eps_uncond + g (eps_cond - eps_uncond). g = 1 is plain conditional sampling (one UNet pass per step).
"""
from __future__ import annotations

import copy
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, DDIMScheduler, ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from dd3g_sdk.cameras import Camera, ViewSetConfig, stack_intrinsics, stack_viewmats
from dd3g_sdk.config import from_dict, load_config, save_config
from dd3g_sdk.errors import InputError
from dd3g_sdk.model.unet import (RAY_CHANNELS, ImageTokenizer, MVUNetConfig, camera_input, camera_ray_dirs,
                                 condition_sample, pixel_rays, ray_map, repeat_tokens)

from .prediction import prediction_to_epsilon, prediction_to_x0

TEACHER_KIND = "dd3g-mv-teacher"
TEACHER_CONFIG_NAME = "teacher.json"


# ---- the interface --------------------------------------------------------------------------------------------

class MultiViewTeacher(ABC):
    """A multi-view diffusion model as distillation sees it. Images are 0..1; the sample space is [-1, 1]."""

    @property
    @abstractmethod
    def views(self) -> list[Camera]:
        """The V cameras of the generated views at the sample resolution (view 0 = the input view)."""

    @property
    @abstractmethod
    def sample_shape(self) -> tuple[int, int, int, int]:
        """(V, C, h, w) of one object's sample (the shape of the initial noise)."""

    @property
    @abstractmethod
    def prediction_type(self) -> str:
        """What `denoise` predicts: "epsilon", "v_prediction" or "sample" (x0; diffusers names)."""

    @property
    def sample_space(self) -> str:
        """"pixels" (x = 2 image - 1) or "latents" (then `encode`/`decode` are the VAE)."""
        return "pixels"

    def encode(self, images: Tensor) -> Tensor:  # [B, V, 3, H, W] 0..1 -> x [B, V, C, h, w]
        return images * 2.0 - 1.0

    def decode(self, x: Tensor) -> Tensor:  # x [B, V, C, h, w] -> [B, V, 3, H, W] 0..1
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)

    @abstractmethod
    def condition(self, image: Tensor) -> Any:
        """image [B, 3, S, S] in 0..1 (white background) -> the condition that `denoise`/`ode` take."""

    @abstractmethod
    def denoise(self, x_t: Tensor, t: Tensor | int, cond: Any, viewmats: Tensor | None = None) -> Tensor:
        """x_t [B, V, C, h, w] (sample space), t (int or [B], 0..T-1), viewmats [V, 4, 4] / [B, V, 4, 4]
        world-to-camera (None = the teacher's view set) -> prediction [B, V, C, h, w]."""

    @abstractmethod
    def ode(self, noise: Tensor, cond: Any, steps: int = 50, return_trajectory: bool = False,
            guidance_scale: float | None = None, viewmats: Tensor | None = None):
        """Deterministic DDIM from `noise` [B, V, C, h, w] -> views [B, V, 3, H, W] in 0..1
        (and, with return_trajectory, a dict: timesteps [S], states [S+1, B, V, C, h, w], pred_x0 [S, ...])."""


# ---- multi-view self-attention ------------------------------------------------------------------------------

class MultiViewAttnProcessor:
    """diffusers attention processor for self-attention over all V views of an object.

    The UNet sees the V views of each object as consecutive batch items ([B*V, L, C], index = b * V + v);
    this processor regroups them to [B, V*L, C] so that every token attends to the tokens of every view,
    then splits the result back. Same projections (to_q/k/v/out) as diffusers' own processor, so with
    num_views = 1 it computes exactly what `AttnProcessor2_0` does.
    """

    def __init__(self, num_views: int):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.num_views = int(num_views)

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, *args, **kwargs) -> Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("MultiViewAttnProcessor is for self-attention (attn1) only")
        if attention_mask is not None:
            raise ValueError("MultiViewAttnProcessor does not support attention masks")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            n, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(n, c, h * w).transpose(1, 2)
        n, length, c = hidden_states.shape  # [B*V, L, C]
        v = self.num_views
        if n % v:
            raise ValueError(f"batch {n} is not a multiple of num_views {v}")
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        x = hidden_states.reshape(n // v, v * length, c)  # [B, V*L, C]: views side by side
        q, k, val = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        heads = attn.heads
        d = k.shape[-1] // heads
        q, k, val = (t.view(n // v, -1, heads, d).transpose(1, 2) for t in (q, k, val))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        out = F.scaled_dot_product_attention(q, k, val, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(n // v, v * length, heads * d).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        out = out.reshape(n, length, -1)  # back to [B*V, L, C]
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(n, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def set_multiview_attention(unet: nn.Module, num_views: int) -> int:
    """Put `MultiViewAttnProcessor(num_views)` on every attn1 of `unet` (others keep diffusers' default).

    Returns the number of attn1 layers changed.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs = {}
    n = 0
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            procs[name] = MultiViewAttnProcessor(num_views)
            n += 1
        else:
            procs[name] = AttnProcessor2_0()
    unet.set_attn_processor(procs)
    return n


# ---- the image encoder as a diffusers model -------------------------------------------------------------------

class TeacherImageEncoder(ModelMixin, ConfigMixin):
    """image [B, 3, S, S] 0..1 -> tokens [B, T, dim]: `ImageTokenizer` in diffusers save/load format.

    Parameter names are "tokenizer." + ImageTokenizer's (load into PEPD's tokenizer with that prefix).
    """
    config_name = "config.json"

    @register_to_config
    def __init__(self, image_size: int = 64, patch_size: int = 8, dim: int = 256):
        super().__init__()
        self.tokenizer = ImageTokenizer(image_size, patch_size, dim)

    def forward(self, image: Tensor) -> Tensor:  # image: [B, 3, S, S] 0..1
        return self.tokenizer(image)


# ---- config ---------------------------------------------------------------------------------------------------

def check_denoiser(denoiser: str, prediction_type: str) -> None:
    """ValueError unless `denoiser` is "unet" (predicting epsilon or v) or "gaussians" (predicting the sample)."""
    if denoiser not in ("unet", "gaussians"):
        raise ValueError(f"denoiser must be 'unet' or 'gaussians', got {denoiser!r}")
    allowed = ("sample",) if denoiser == "gaussians" else ("epsilon", "v_prediction")
    if prediction_type not in allowed:
        raise ValueError(f"a {denoiser!r} teacher predicts {' or '.join(allowed)}, got {prediction_type!r}")


@dataclass(frozen=True)
class TeacherConfig:
    """`teacher.json`. resolution = h = w of the views (pixels); guidance_scale = `ode`'s default."""
    kind: str = TEACHER_KIND
    views: ViewSetConfig = field(default_factory=ViewSetConfig)
    resolution: int = 64
    channels: int = 3
    prediction_type: str = "epsilon"
    sample_space: str = "pixels"
    guidance_scale: float = 1.0
    default_steps: int = 50
    # The ODE's starting state (see DiffusersMVTeacher.ode): "white" puts the expected signal of a white
    # background under the noise at the first timestep, "none" starts from the noise as it is.
    init_prior: str = "white"
    zero_mean_noise: bool = True  # remove each view's per-channel mean from the noise before starting
    # The UNet also reads each view's per-pixel Plücker rays (6 input channels; `MVUNetConfig.camera_rays`),
    # computed from the world-to-camera matrices and this view set's field of view.
    camera_rays: bool = False
    # "unet": a diffusers UNet predicts epsilon or v per view (DiffusersMVTeacher); "gaussians": a PEPD network
    # predicts 3D Gaussians whose renders are x0 (GaussianLiftTeacher, prediction_type "sample").
    denoiser: str = "unet"

    def __post_init__(self) -> None:
        if self.kind != TEACHER_KIND:
            raise ValueError(f"kind must be {TEACHER_KIND!r}, got {self.kind!r}")
        check_denoiser(self.denoiser, self.prediction_type)
        if self.sample_space != "pixels":
            raise ValueError("DiffusersMVTeacher supports sample_space 'pixels' only")
        if self.init_prior not in ("none", "white"):
            raise ValueError(f"init_prior must be 'none' or 'white', got {self.init_prior!r}")
        if self.resolution < 8 or self.channels != 3 or self.default_steps < 1 or self.guidance_scale < 0:
            raise ValueError("need resolution >= 8, channels == 3, default_steps >= 1, guidance_scale >= 0")


def default_scheduler(prediction_type: str = "epsilon", num_train_timesteps: int = 1000):
    """The DDIM scheduler of the project's teachers.

    Cosine noise schedule (good for 64x64 pixels), x0 estimates clipped to [-1, 1], "leading" timestep
    spacing: S steps visit T - T/S, T - 2T/S, ..., 0 (980, 960, ... for 50 steps). Not "trailing" (which
    starts at T-1 = 999): there alpha_bar is 2e-9, so an epsilon model's x0 estimate (x - sqrt(1-a) eps) /
    sqrt(a) amplifies its error ~2e4 times and the first step writes clipped garbage into the sample,
    which the rest of the trajectory cannot undo (measured on procworld-mv64).
    """
    return DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True, steps_offset=0,
                         prediction_type=prediction_type, timestep_spacing="leading")


# ---- what both teachers share: the folder, the view set, the conversions, the DDIM ODE ----------------------

def _teacher_root(local_dir: str | os.PathLike) -> Path:
    root = Path(local_dir)
    if not root.is_dir():
        raise InputError(root, "teacher folder not found")
    return root


def _teacher_json(root: Path, denoiser: str) -> TeacherConfig:
    """root/teacher.json, which must name `denoiser`; InputError naming the file otherwise."""
    config = load_config(TeacherConfig, root / TEACHER_CONFIG_NAME)
    if config.denoiser != denoiser:
        raise InputError(root / TEACHER_CONFIG_NAME, f"denoiser is {config.denoiser!r}, not {denoiser!r}: open the "
                                                     f"folder with load_teacher_folder")
    return config


class DDIMTeacher(nn.Module, MultiViewTeacher):
    """The parts of a pixel-space teacher that do not depend on its denoiser: the view set (buffers), the
    scheduler, prediction conversions and the DDIM `ode`. Subclasses give `condition`, `denoise`, persistence."""

    def __init__(self, scheduler, config: TeacherConfig):
        super().__init__()
        if scheduler.config.prediction_type != config.prediction_type:
            raise ValueError(f"scheduler predicts {scheduler.config.prediction_type}, teacher.json says "
                             f"{config.prediction_type}")
        self.scheduler = scheduler
        self.config = config
        cams = self.views
        self.register_buffer("_viewmats", torch.from_numpy(stack_viewmats(cams)), persistent=False)
        self.register_buffer("_Ks", torch.from_numpy(stack_intrinsics(cams)), persistent=False)
        self.register_buffer("_ray_dirs", camera_ray_dirs(config.views.fov_deg, config.resolution), persistent=False)

    # -- interface --
    @property
    def views(self) -> list[Camera]:
        r = self.config.resolution
        return self.config.views.cameras(r, r)

    @property
    def viewmats(self) -> Tensor:  # [V, 4, 4] float32, on the teacher's device
        return self._viewmats

    @property
    def sample_shape(self) -> tuple[int, int, int, int]:
        r = self.config.resolution
        return (self.config.views.num_views, self.config.channels, r, r)

    @property
    def prediction_type(self) -> str:
        return self.config.prediction_type

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def null_condition(self, batch: int, size: int | None = None) -> dict:
        """The classifier-free-guidance null condition: a uniform 0.5 grey image (0 in [-1, 1])."""
        s = size or self.config.resolution
        return self.condition(torch.full((batch, 3, s, s), 0.5, device=self.device, dtype=self.dtype))

    def _viewmats_for(self, viewmats: Tensor | None, b: int) -> Tensor:
        vm = self._viewmats if viewmats is None else viewmats.to(self.device)
        if vm.ndim == 3:
            vm = vm.unsqueeze(0).expand(b, *vm.shape)
        if vm.shape != (b, self.config.views.num_views, 4, 4):
            raise ValueError(f"viewmats must be [V, 4, 4] or [B, V, 4, 4] with B={b}, "
                             f"V={self.config.views.num_views}; got {list(vm.shape)}")
        return vm

    def _check_sample(self, x_t: Tensor) -> None:
        if (x_t.shape[1], *x_t.shape[2:]) != self.sample_shape:
            raise ValueError(f"x_t must be [B, {', '.join(map(str, self.sample_shape))}], got {list(x_t.shape)}")

    def to_epsilon(self, pred: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        """A `denoise` output -> the noise estimate epsilon. pred, x_t [B, V, C, h, w]; t int or [B]."""
        return prediction_to_epsilon(pred, x_t, self._alpha_bar(t, x_t), self.prediction_type)

    def to_x0(self, pred: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        """A `denoise` output -> the (unclipped) estimate of the clean sample x0 in [-1, 1] range."""
        return prediction_to_x0(pred, x_t, self._alpha_bar(t, x_t), self.prediction_type)

    def _alpha_bar(self, t, like: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=self.scheduler.alphas_cumprod.device).long().reshape(-1)
        a = self.scheduler.alphas_cumprod[t].to(like.device, torch.float32)
        return a.reshape(-1, *([1] * (like.ndim - 1)))

    def make_scheduler(self, steps: int):
        """A fresh copy of the scheduler set to `steps` DDIM steps (no state shared between calls)."""
        sch = DDIMScheduler.from_config(self.scheduler.config)
        sch.set_timesteps(steps, device=self.device)
        return sch

    def initial_state(self, noise: Tensor, scheduler) -> Tensor:
        """noise [B, V, 3, h, w] -> the ODE's state at the scheduler's first timestep (see `ode`)."""
        n = noise * scheduler.init_noise_sigma
        if self.config.zero_mean_noise:
            n = n - n.mean(dim=(-2, -1), keepdim=True)
        if self.config.init_prior == "none":
            return n
        a = scheduler.alphas_cumprod[int(scheduler.timesteps[0])].to(n.device, n.dtype)
        return a.sqrt() * torch.ones_like(n) + (1 - a).sqrt() * n

    @torch.no_grad()
    def ode(self, noise: Tensor, cond: dict, steps: int | None = None, return_trajectory: bool = False,
            guidance_scale: float | None = None, viewmats: Tensor | None = None):
        """Deterministic DDIM (eta = 0) from `noise` [B, V, 3, h, w] (~N(0, 1)).

        The state at the first timestep t0 (980 for 50 steps) is
            x_t0 = sqrt(a) * prior + sqrt(1 - a) * n,   a = alpha_bar(t0),
        with n = noise minus its per-view, per-channel spatial mean if `config.zero_mean_noise`, and
        prior = a white image (x = +1) if `config.init_prior == "white"` (else 0, i.e. x_t0 = n).
        Why: the cosine schedule's alpha_bar(t0) is not 0 (sqrt(a) = 0.03 at 980), and the network reads
        the image's mean colour from that residual signal; pure noise says "mean 0, grey", and a random
        per-channel mean of the noise says "tinted" (measured: grey/tinted backgrounds and garbled objects
        without these two). Both are deterministic functions of the noise, so (noise, cond) -> views is
        still a function, as distillation needs.

        Guidance mixes the two predictions, pred_u + g (pred_c - pred_u): for a fixed x_t every prediction type
        is an affine function of epsilon, so this is the usual epsilon mix whatever the teacher predicts.

        Returns views [B, V, 3, h, w] in 0..1; with return_trajectory also a dict of
        timesteps [S] (long), states [S+1, B, V, 3, h, w] (x_t0 and the x after each step, in the [-1, 1]
        range) and pred_x0 [S, B, V, 3, h, w] (the clipped x0 estimate of each step).
        """
        steps = steps or self.config.default_steps
        g = self.config.guidance_scale if guidance_scale is None else float(guidance_scale)
        sch = self.make_scheduler(steps)
        x = self.initial_state(noise.to(self.device, torch.float32), sch)
        b = x.shape[0]
        if g != 1.0:
            null = self.null_condition(b, cond["image"].shape[-1])
            both = {k: torch.cat([null[k], cond[k]]) for k in cond}
            vm2 = None if viewmats is None else self._viewmats_for(viewmats, b).repeat(2, 1, 1, 1)
        states, x0s = [x], []
        for t in sch.timesteps:
            if g != 1.0:
                p_u, p_c = self.denoise(torch.cat([x, x]), t, both, vm2).chunk(2)
                pred = p_u + g * (p_c - p_u)
            else:
                pred = self.denoise(x, t, cond, viewmats)
            out = sch.step(pred, t, x, eta=0.0)
            x = out.prev_sample
            if return_trajectory:
                states.append(x)
                x0s.append(out.pred_original_sample)
        views = self.decode(x)
        if not return_trajectory:
            return views
        return views, {"timesteps": sch.timesteps.detach().cpu().long(), "states": torch.stack(states),
                       "pred_x0": torch.stack(x0s)}


# ---- the diffusers teacher ------------------------------------------------------------------------------------

class DiffusersMVTeacher(DDIMTeacher):
    """Pixel-space multi-view teacher built from diffusers parts (see the module docstring)."""

    def __init__(self, unet: nn.Module, scheduler, image_encoder: nn.Module, config: TeacherConfig = TeacherConfig()):
        if config.denoiser != "unet":
            raise ValueError(f"DiffusersMVTeacher needs teacher.json denoiser 'unet', got {config.denoiser!r}")
        super().__init__(scheduler, config)
        ucfg = unet.config
        cin = 2 * config.channels + (RAY_CHANNELS if config.camera_rays else 0)
        if ucfg.in_channels != cin or ucfg.out_channels != config.channels:
            raise ValueError(f"UNet must take {cin} channels and predict {config.channels}, got "
                             f"{ucfg.in_channels} -> {ucfg.out_channels}")
        if ucfg.sample_size != config.resolution:
            raise ValueError(f"UNet sample_size {ucfg.sample_size} != teacher resolution {config.resolution}")
        self.unet = unet
        self.image_encoder = image_encoder
        set_multiview_attention(self.unet, config.views.num_views)

    # -- construction --
    @classmethod
    def from_unet_config(cls, unet_cfg: MVUNetConfig, config: TeacherConfig | None = None, seed: int | None = None):
        """A randomly initialised teacher for `MVUNetConfig` `unet_cfg` (training starts here)."""
        config = config or TeacherConfig(views=ViewSetConfig(num_views=unet_cfg.num_views),
                                         resolution=unet_cfg.sample_size, camera_rays=unet_cfg.camera_rays)
        if unet_cfg.num_views != config.views.num_views:
            raise ValueError(f"unet num_views {unet_cfg.num_views} != view set {config.views.num_views}")
        if unet_cfg.camera_rays != config.camera_rays:
            raise ValueError(f"unet camera_rays {unet_cfg.camera_rays} != teacher.json camera_rays {config.camera_rays}")
        if seed is not None:
            torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg.to_diffusers_kwargs())
        tok = ImageTokenizer.for_unet(unet_cfg)
        enc = TeacherImageEncoder(tok.image_size, tok.patch_size, tok.dim)
        return cls(unet, default_scheduler(config.prediction_type, unet_cfg.num_train_timesteps), enc, config)

    @classmethod
    def from_pretrained(cls, local_dir: str | os.PathLike, device: Any = "cpu",
                        dtype: torch.dtype = torch.float32) -> "DiffusersMVTeacher":
        """Load a teacher folder (unet/, scheduler/, image_encoder/, teacher.json) from disk; no network."""
        root = _teacher_root(local_dir)
        for sub in ("unet", "scheduler", "image_encoder"):
            if not (root / sub / ("scheduler_config.json" if sub == "scheduler" else "config.json")).is_file():
                raise InputError(root / sub, "missing: a teacher folder needs unet/, scheduler/, image_encoder/ "
                                             "(diffusers save_pretrained) and teacher.json")
        config = _teacher_json(root, "unet")
        kw = dict(torch_dtype=dtype, use_safetensors=True, local_files_only=True)
        try:
            unet = UNet2DConditionModel.from_pretrained(root / "unet", **kw)
            enc = TeacherImageEncoder.from_pretrained(root / "image_encoder", **kw)
            scheduler = DDIMScheduler.from_pretrained(root / "scheduler", local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise InputError(root, f"cannot load teacher: {str(e).splitlines()[0]}") from None
        teacher = cls(unet, scheduler, enc, config)
        return teacher.to(device).eval()

    def save_pretrained(self, out_dir: str | os.PathLike, dtype: torch.dtype | None = torch.float16,
                        max_shard_size: str = "10GB") -> Path:
        """Write the teacher folder (weights cast to `dtype`, None = as they are). Overwrites its files."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        unet, enc = self.unet, self.image_encoder
        if dtype is not None:
            unet, enc = copy.deepcopy(unet).to(dtype), copy.deepcopy(enc).to(dtype)
        unet.save_pretrained(out / "unet", safe_serialization=True, max_shard_size=max_shard_size)
        enc.save_pretrained(out / "image_encoder", safe_serialization=True)
        self.scheduler.save_pretrained(out / "scheduler")
        save_config(self.config, out / TEACHER_CONFIG_NAME)
        return out

    def condition(self, image: Tensor) -> dict:
        """image [B, 3, S, S] 0..1 -> {"image": [B, 3, S, S] 0..1, "tokens": [B, T, D]}."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, S, S], got {list(image.shape)}")
        image = image.to(self.device, self.dtype)
        return {"image": image, "tokens": self.image_encoder(image)}

    def denoise(self, x_t: Tensor, t: Tensor | int, cond: dict, viewmats: Tensor | None = None) -> Tensor:
        """x_t [B, V, 3, h, w] in the diffusion range; t int or [B] (0..T-1) -> the prediction
        [B, V, 3, h, w] (float32) of `prediction_type` (`to_epsilon` / `to_x0` convert)."""
        b, v = x_t.shape[:2]
        self._check_sample(x_t)
        x_t = x_t.to(self.device, self.dtype)
        t = torch.as_tensor(t, device=self.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(b)
        t = t.repeat_interleave(v)  # [B*V], view index fastest (b * V + v)
        vm = self._viewmats_for(viewmats, b)
        rays = ray_map(*pixel_rays(vm, self._ray_dirs), x_t.shape[-1]) if self.config.camera_rays else None
        sample = condition_sample(x_t, cond["image"].to(x_t.dtype), rays)
        cam = camera_input(vm.to(x_t.dtype))
        ctx = repeat_tokens(cond["tokens"].to(x_t.dtype), v)
        out = self.unet(sample, t, encoder_hidden_states=ctx, class_labels=cam).sample
        return out.float().reshape(b, v, *out.shape[1:])


# ---- the teacher with a 3D prior ------------------------------------------------------------------------------

DENOISER_DIR = "denoiser"


class GaussianLiftTeacher(DDIMTeacher):
    """Pixel-space multi-view teacher whose denoiser lifts the noisy views to 3D Gaussians and renders them.

    denoise(x_t, t, cond) = 2 * render(PEPD(image, x_t, cameras, t), cameras) - 1: an x0 prediction
    ("sample") of the V views that are renders of one set of Gaussians. The renderer is the distillation's
    differentiable one (gsplat on CUDA, the reference rasteriser on CPU), composited on white.
    """

    def __init__(self, denoiser: nn.Module, scheduler, config: TeacherConfig):
        if config.denoiser != "gaussians":
            raise ValueError(f"GaussianLiftTeacher needs teacher.json denoiser 'gaussians', got {config.denoiser!r}")
        super().__init__(scheduler, config)
        pc = denoiser.config
        if pc.views != config.views or pc.noise_size != config.resolution:
            raise ValueError(f"the denoiser's view set/resolution ({pc.views}, {pc.noise_size}) differ from "
                             f"teacher.json's ({config.views}, {config.resolution})")
        if pc.unet.camera_rays != config.camera_rays:
            raise ValueError(f"the denoiser's camera_rays {pc.unet.camera_rays} != teacher.json {config.camera_rays}")
        self.denoiser = denoiser

    # -- construction --
    @classmethod
    def from_pepd_config(cls, pepd_cfg, config: TeacherConfig | None = None, seed: int | None = None):
        """A randomly initialised teacher whose denoiser is `PEPD(pepd_cfg)` (training starts here)."""
        from dd3g_sdk.model.pepd import PEPD

        config = config or TeacherConfig(views=pepd_cfg.views, resolution=pepd_cfg.noise_size,
                                         prediction_type="sample", denoiser="gaussians",
                                         camera_rays=pepd_cfg.unet.camera_rays)
        if seed is not None:
            torch.manual_seed(seed)
        sched = default_scheduler("sample", pepd_cfg.unet.num_train_timesteps)
        return cls(PEPD(pepd_cfg), sched, config)

    @classmethod
    def from_pretrained(cls, local_dir: str | os.PathLike, device: Any = "cpu",
                        dtype: torch.dtype = torch.float32) -> "GaussianLiftTeacher":
        """Load a folder of denoiser/ (PEPD), scheduler/ (diffusers) and teacher.json; no network, no pickle."""
        from dd3g_sdk.model.pepd import PEPD

        root = _teacher_root(local_dir)
        config = _teacher_json(root, "gaussians")
        if not (root / "scheduler" / "scheduler_config.json").is_file():
            raise InputError(root / "scheduler", "missing: a teacher folder needs denoiser/, scheduler/ and teacher.json")
        denoiser = PEPD.from_pretrained(root / DENOISER_DIR, dtype=dtype)
        try:
            scheduler = DDIMScheduler.from_pretrained(root / "scheduler", local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(root / "scheduler", f"cannot load the scheduler: {str(e).splitlines()[0]}") from None
        try:
            teacher = cls(denoiser, scheduler, config)
        except ValueError as e:
            raise InputError(root, str(e)) from None
        return teacher.to(device).eval()

    def save_pretrained(self, out_dir: str | os.PathLike, dtype: torch.dtype | None = torch.float16,
                        max_shard_size: str = "10GB") -> Path:
        """Write the teacher folder (denoiser weights cast to `dtype`, None = as they are). `max_shard_size` is
        accepted for the common signature; the denoiser is one file."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.denoiser.save_pretrained(out / DENOISER_DIR, dtype=dtype)
        self.scheduler.save_pretrained(out / "scheduler")
        save_config(self.config, out / TEACHER_CONFIG_NAME)
        return out

    # -- interface --
    def condition(self, image: Tensor) -> dict:
        """image [B, 3, S, S] 0..1 -> {"image": [B, 3, s, s] 0..1}, resized to the denoiser's input side s (the
        denoiser encodes it at every step)."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, S, S], got {list(image.shape)}")
        image = image.to(self.device, self.dtype)
        s = self.denoiser.config.image_size
        if tuple(image.shape[-2:]) != (s, s):
            image = F.interpolate(image, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return {"image": image}

    def gaussians(self, x_t: Tensor, t: Tensor | int, cond: dict, viewmats: Tensor | None = None) -> dict:
        """x_t [B, V, 3, h, w], t int or [B] -> the denoiser's Gaussians (PEPD's dict: means [B, N, 3], ...)."""
        b = x_t.shape[0]
        self._check_sample(x_t)
        vm = self._viewmats_for(viewmats, b)
        return self.denoiser(cond["image"], x_t.to(self.device), vm, timestep=t)

    def render(self, gaussians: dict, viewmats: Tensor, Ks: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Gaussians of B objects at cameras viewmats [B, C, 4, 4] (Ks [B, C, 3, 3], None = the view set's
        intrinsics) -> rgb [B, C, 3, h, w] on white 0..1, alpha [B, C, 1, h, w] (differentiable)."""
        from .train import render_batch

        b, c = viewmats.shape[:2]
        if Ks is None:
            Ks = self._Ks[:1].expand(b, c, 3, 3)
        r = self.config.resolution
        return render_batch(gaussians, viewmats.to(self.device), Ks.to(self.device), r, r)

    def denoise(self, x_t: Tensor, t: Tensor | int, cond: dict, viewmats: Tensor | None = None) -> Tensor:
        """x_t [B, V, 3, h, w] in the diffusion range; t int or [B] (0..T-1) -> x0 [B, V, 3, h, w] (float32,
        in [-1, 1]): the renders of the denoiser's Gaussians at the V cameras."""
        vm = self._viewmats_for(viewmats, x_t.shape[0])
        rgb, _ = self.render(self.gaussians(x_t, t, cond, vm), vm)
        return rgb.float() * 2.0 - 1.0


def load_teacher_folder(local_dir: str | os.PathLike, device: Any = "cpu",
                        dtype: torch.dtype = torch.float32) -> DDIMTeacher:
    """Open a teacher folder of either kind (teacher.json's `denoiser` says which); eval mode."""
    root = _teacher_root(local_dir)
    config = load_config(TeacherConfig, root / TEACHER_CONFIG_NAME)
    cls = GaussianLiftTeacher if config.denoiser == "gaussians" else DiffusersMVTeacher
    return cls.from_pretrained(root, device, dtype)


__all__ = ["DDIMTeacher", "DiffusersMVTeacher", "GaussianLiftTeacher", "MultiViewAttnProcessor", "MultiViewTeacher",
           "TeacherConfig", "TeacherImageEncoder", "check_denoiser", "default_scheduler", "load_teacher_folder",
           "prediction_to_epsilon", "prediction_to_x0", "set_multiview_attention"]
