"""Train the small multi-view teacher on the procedural world (pixel space, epsilon prediction, DDIM noise).

    python -m dd3g_distill.train_teacher --config configs/teacher_procworld.json --run runs/teacher \
        --time-limit 480 --export distill/dd3g_distill/teachers/procworld-mv64

Data: `num_objects` train-split objects rendered once at start (V views at the view set's cameras, white
background, `render_supersample`^2 samples per pixel) into a uint8 cache on the training device; the
condition image is view 0 of the same render (the input view). Each step draws objects, timesteps and noise
from a generator seeded by (seed, step), so a run resumed from a checkpoint takes exactly the batches that an
uninterrupted run would have taken.

Target: epsilon (the project's default) or v (`prediction_type: "v_prediction"`, which keeps the x0
estimate well conditioned at the high-noise end; see the teacher card). With `denoiser: "gaussians"` the teacher
is a `GaussianLiftTeacher` (a PEPD that lifts x_t to 3D Gaussians): the target is x0 (`prediction_type: "sample"`),
and the same Gaussians are also rendered at `extra_views` more cameras per object and compared with the ground
truth there, so that the denoiser learns 3D, not only the V views (the cache then holds V + extra_views views).

Optimisation: AdamW, linear warm-up then cosine decay to `lr_min_ratio` at `max_steps`, gradient clipping,
bf16 autocast on CUDA (fp32 on CPU), EMA of the weights (the EMA is what gets exported). Classifier-free
guidance training: the condition image is replaced by the null (grey) image with probability
`cond_drop_prob`.

Checkpoints (`run/ckpt-XXXXXXX/`: model, ema and optimizer state as safetensors + state.json; `run/latest.json`
points at the newest) are written to a temporary folder and renamed, so an interrupted write never leaves a
broken checkpoint; the run resumes from `latest.json` automatically. `--time-limit` stops cleanly (with a
checkpoint) before a command limit. Progress: tqdm; TensorBoard scalars (loss, val_loss, lr, it/s) in `run/tb/`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import struct
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save

from dd3g_sdk._fileio import atomic_write_bytes, atomic_write_text
from dd3g_sdk.cameras import ViewSetConfig, stack_intrinsics, stack_viewmats
from dd3g_sdk.config import from_dict, load_config, save_config, to_dict
from dd3g_sdk.errors import InputError

from .data.world import RenderConfig, composite_white, object_spec, render
from .teacher import DiffusersMVTeacher, GaussianLiftTeacher, TeacherConfig, check_denoiser, load_teacher_folder


@dataclass(frozen=True)
class TrainConfig:
    """Teacher training. `unet_preset` names `PEPDConfig.preset(...).unet` (the UNet PEPD Phase 1 shares);
    `unet_width` scales its channels and image-token width (rounded to multiples of lcm(norm groups, head width)),
    for a teacher wider than the student: the small teacher's training is launch-bound (9.6 steps/s at batch 64
    and 128 alike on an H200), so width costs little wall time per step. PEPD Phase 1 then loads only the teacher
    tensors whose shapes match (1 of 375 at width 2: conv_out's bias)."""
    unet_preset: str = "small"
    unet_width: float = 1.0
    camera_rays: bool = False  # per-pixel Plücker rays as 6 more UNet input channels (MVUNetConfig.camera_rays)
    views: ViewSetConfig = field(default_factory=ViewSetConfig)
    num_objects: int = 8192  # train-split objects 0..N-1 in the render cache
    num_val_objects: int = 32  # val-split objects for the validation loss
    render_supersample: int = 2
    render_chunk: int = 256  # objects per render call (memory)
    batch_size: int = 16  # objects per step (x V views)
    lr: float = 2e-4
    lr_min_ratio: float = 0.1
    warmup_steps: int = 200
    max_steps: int = 6000  # the cosine schedule ends here
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cond_drop_prob: float = 0.1
    bf16: bool = True  # autocast on CUDA
    seed: int = 0
    log_every: int = 25
    val_every: int = 250
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    guidance_scale: float = 1.0  # written into teacher.json as ode()'s default
    prediction_type: str = "epsilon"  # or "v_prediction" (v = sqrt(a) eps - sqrt(1 - a) x0); "sample" for gaussians
    # "unet" (DiffusersMVTeacher) or "gaussians" (GaussianLiftTeacher: the denoiser is PEPD of `unet_preset`)
    denoiser: str = "unet"
    extra_views: int = 0  # gaussians only: ground truth at this many more cameras supervises the same Gaussians
    extra_elevations_deg: tuple[float, ...] = (40.0, 0.0)  # the extra cameras' elevations, in turn

    def __post_init__(self) -> None:
        for name in ("num_objects", "batch_size", "max_steps", "log_every", "val_every", "ckpt_every",
                     "keep_checkpoints", "render_supersample", "render_chunk", "num_val_objects"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        check_denoiser(self.denoiser, self.prediction_type)
        if self.extra_views < 0 or (self.extra_views and self.denoiser != "gaussians"):
            raise ValueError("extra_views must be >= 0, and > 0 only for denoiser 'gaussians' (a UNet renders no "
                             "other camera)")
        if self.extra_views and not self.extra_elevations_deg:
            raise ValueError("extra_views needs at least one entry in extra_elevations_deg")
        if not 0 <= self.cond_drop_prob < 1 or not 0 <= self.ema_decay < 1 or self.lr <= 0:
            raise ValueError("need 0 <= cond_drop_prob < 1, 0 <= ema_decay < 1, lr > 0")
        if not self.unet_width > 0:
            raise ValueError(f"unet_width must be > 0, got {self.unet_width}")

    def unet_config(self):
        from dd3g_sdk.model.pepd import PEPDConfig

        u = PEPDConfig.preset(self.unet_preset).unet
        if u.num_views != self.views.num_views:
            u = replace(u, num_views=self.views.num_views)
        if self.camera_rays != u.camera_rays:
            u = replace(u, camera_rays=self.camera_rays)
            u = replace(u, in_channels=6 + u.ray_channels)  # noisy view + condition image [+ rays]
        if self.unet_width != 1.0:
            q = math.lcm(u.norm_num_groups, u.attention_head_dim)

            def scaled(c: int) -> int:
                return max(q, round(c * self.unet_width / q) * q)

            u = replace(u, block_out_channels=tuple(scaled(c) for c in u.block_out_channels),
                        cross_attention_dim=scaled(u.cross_attention_dim))
        return u

    def pepd_config(self):
        """The denoiser of a "gaussians" teacher: PEPD of `unet_preset` with this UNet and view set."""
        from dd3g_sdk.model.pepd import PEPDConfig

        u = self.unet_config()
        return replace(PEPDConfig.preset(self.unet_preset), unet=u, views=self.views, noise_size=u.sample_size)

    def extra_cameras(self, size: int) -> list:
        """The `extra_views` supervision cameras: azimuths 180 / V + 360 k / E (the first halfway between views 0
        and 1), elevations taken from `extra_elevations_deg` in turn; the view set's radius and fov."""
        from dd3g_sdk.cameras import orbit_camera

        v, e = self.views, self.extra_views
        elev = self.extra_elevations_deg
        return [orbit_camera(180.0 / v.num_views + 360.0 * k / e, elev[k % len(elev)], v.radius, v.fov_deg, size, size)
                for k in range(e)]


# ---- TensorBoard event files without the tensorboard package -------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class EventWriter:
    """Writes TensorBoard scalar events (TFRecord of `Event` protobufs, encoded by hand).

    Only what scalars need: Event{wall_time=1 (double), step=2 (int64), file_version=3 | summary=5},
    Summary{value=1}, Summary.Value{tag=1 (string), simple_value=2 (float)}. The host training the teacher
    may lack the tensorboard package; TensorBoard reads these files as usual.
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._f = open(self.path, "ab")
        self._write(b"\x09" + struct.pack("<d", time.time()) + b"\x1a" + _varint(13) + b"brain.Event:2")

    def _write(self, event: bytes) -> None:
        header = struct.pack("<Q", len(event))
        self._f.write(header + struct.pack("<I", _masked_crc(header)) + event
                      + struct.pack("<I", _masked_crc(event)))

    def scalar(self, tag: str, value: float, step: int) -> None:
        t = tag.encode()
        val = b"\x0a" + _varint(len(t)) + t + b"\x15" + struct.pack("<f", float(value))
        summ = b"\x0a" + _varint(len(val)) + val
        ev = (b"\x09" + struct.pack("<d", time.time()) + b"\x10" + _varint(int(step))
              + b"\x2a" + _varint(len(summ)) + summ)
        self._write(ev)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


# ---- data -----------------------------------------------------------------------------------------------------

def render_cache(split: str, count: int, size: int, viewmats: np.ndarray, Ks: np.ndarray, supersample: int,
                 chunk: int, device, progress: bool = False) -> torch.Tensor:
    """Objects 0..count-1 of `split` seen from the C cameras viewmats [C, 4, 4], Ks [C, 3, 3] (pixels at `size`),
    on white -> uint8 [count, C, 3, size, size] on `device`."""
    from tqdm import tqdm

    out = torch.empty((count, len(viewmats), 3, size, size), dtype=torch.uint8, device=device)
    cfg = RenderConfig(supersample=supersample)
    for i in tqdm(range(0, count, chunk), disable=not progress, desc=f"render {split} cache", mininterval=5):
        specs = [object_spec(split, k) for k in range(i, min(i + chunk, count))]
        img = composite_white(render(specs, viewmats, Ks, size, size, cfg, device).rgba)
        out[i:i + len(specs)] = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return out


def _to_float(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 255.0


# ---- training -------------------------------------------------------------------------------------------------

class TeacherTrainer:
    """Holds the teacher, its EMA, the optimiser and the render caches; one `train_step` per batch."""

    def __init__(self, cfg: TrainConfig, device="cpu", progress: bool = False):
        self.cfg = cfg
        self.device = torch.device(device)
        ucfg = cfg.unet_config()
        tcfg = TeacherConfig(views=cfg.views, resolution=ucfg.sample_size, guidance_scale=cfg.guidance_scale,
                             prediction_type=cfg.prediction_type, camera_rays=ucfg.camera_rays, denoiser=cfg.denoiser)
        if cfg.denoiser == "gaussians":
            self.teacher = GaussianLiftTeacher.from_pepd_config(cfg.pepd_config(), tcfg, seed=cfg.seed).to(self.device)
        else:
            self.teacher = DiffusersMVTeacher.from_unet_config(ucfg, tcfg, seed=cfg.seed).to(self.device)
        self.teacher.train()
        self.params = [p for p in self.teacher.parameters() if p.requires_grad]
        self.ema = [p.detach().clone().float() for p in self.params]
        decay, no_decay = [], []
        for n, p in self.teacher.named_parameters():
            (no_decay if p.ndim < 2 or "norm" in n or "pos_embed" in n else decay).append(p)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.99),
                                     eps=1e-8, fused=self.device.type == "cuda")  # fused: fewer launches
        self.step = 0
        self.elapsed_s = 0.0
        self.initialised_from: str | None = None  # a teacher folder the weights started from (`init_from`)
        res = ucfg.sample_size
        # the cameras of the cache, which a "gaussians" teacher is supervised at: the view set's, then the extra ones
        cams = cfg.views.cameras(res, res) + (cfg.extra_cameras(res) if cfg.extra_views else [])
        vm, Ks = stack_viewmats(cams), stack_intrinsics(cams)  # [V + E, 4, 4], [V + E, 3, 3]
        self.data = render_cache("train", cfg.num_objects, res, vm, Ks, cfg.render_supersample, cfg.render_chunk,
                                 self.device, progress)
        self.val_data = render_cache("val", cfg.num_val_objects, res, vm, Ks, cfg.render_supersample,
                                     cfg.render_chunk, self.device, progress)
        self.all_viewmats = torch.from_numpy(vm).to(self.device)
        self.all_Ks = torch.from_numpy(Ks).to(self.device)
        self.alphas_cumprod = self.teacher.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self._val_batch = self._make_batch(self.val_data, cfg.seed + 7_777_777, drop=False)
        self.use_amp = cfg.bf16 and self.device.type == "cuda"

    # -- batches --
    def _generator(self, seed: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        return g

    def _make_batch(self, data: torch.Tensor, seed: int, drop: bool = True) -> dict:
        g = self._generator(seed)
        b = min(self.cfg.batch_size, data.shape[0])
        idx = torch.randint(0, data.shape[0], (b,), device=self.device, generator=g)
        views = _to_float(data[idx])  # [B, V (+E), 3, h, w] 0..1
        t = torch.randint(0, self.teacher.num_train_timesteps, (b,), device=self.device, generator=g)
        V = self.cfg.views.num_views
        noise = torch.randn(views[:, :V].shape, device=self.device, generator=g)
        cond_img = views[:, 0].clone()
        if drop and self.cfg.cond_drop_prob > 0:
            dropped = torch.rand(b, device=self.device, generator=g) < self.cfg.cond_drop_prob
            cond_img[dropped] = 0.5  # the null condition (TeacherConfig / DiffusersMVTeacher.null_condition)
        return {"x0": views[:, :V] * 2 - 1, "extra_x0": views[:, V:] * 2 - 1, "t": t, "noise": noise,
                "cond_image": cond_img}

    def batch_for_step(self, step: int) -> dict:
        """The batch of training step `step` (a pure function of the seed, the step and the cache)."""
        return self._make_batch(self.data, self.cfg.seed * 1_000_003 + step)

    # -- loss and steps --
    def loss(self, batch: dict) -> torch.Tensor:
        a = self.alphas_cumprod[batch["t"]].view(-1, 1, 1, 1, 1)
        x_t = a.sqrt() * batch["x0"] + (1 - a).sqrt() * batch["noise"]
        if self.cfg.denoiser == "gaussians":
            return self._gaussian_loss(batch, x_t)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            cond = self.teacher.condition(batch["cond_image"])
            pred = self.teacher.denoise(x_t, batch["t"], cond)
        target = batch["noise"] if self.cfg.prediction_type == "epsilon" else \
            a.sqrt() * batch["noise"] - (1 - a).sqrt() * batch["x0"]
        return torch.nn.functional.mse_loss(pred.float(), target)

    def _gaussian_loss(self, batch: dict, x_t: torch.Tensor) -> torch.Tensor:
        """x0 loss of a GaussianLiftTeacher: MSE in the [-1, 1] range between the renders of the Gaussians it
        lifts from x_t and the ground truth, at the V cameras and the extra ones together."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            cond = self.teacher.condition(batch["cond_image"])
            g = self.teacher.gaussians(x_t, batch["t"], cond)
        b = x_t.shape[0]
        rgb, _ = self.teacher.render(g, self.all_viewmats.expand(b, -1, -1, -1), self.all_Ks.expand(b, -1, -1, -1))
        return torch.nn.functional.mse_loss(rgb.float() * 2 - 1, torch.cat([batch["x0"], batch["extra_x0"]], 1))

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        p = min(1.0, (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps))
        return c.lr * (c.lr_min_ratio + (1 - c.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))

    def train_step(self, batch: dict | None = None) -> float:
        """One optimiser step on `batch` (default: this step's batch); updates the EMA; returns the loss."""
        self.teacher.train()
        batch = batch if batch is not None else self.batch_for_step(self.step)
        lr = self.lr_at(self.step)
        for gr in self.opt.param_groups:
            gr["lr"] = lr
        loss = self.loss(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))  # short memory early on
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach().float() for p in self.params], 1 - decay)
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def val_loss(self) -> float:
        self.teacher.eval()
        return float(self.loss(self._val_batch))

    # -- checkpoints --
    def save_checkpoint(self, run_dir: str | os.PathLike) -> Path:
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{self.step:07d}"
        final, tmp = run / name, run / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        names = [n for n, p in self.teacher.named_parameters() if p.requires_grad]
        atomic_write_bytes(tmp / "model.safetensors",
                           save({n: p.detach().float().cpu().contiguous() for n, p in zip(names, self.params)}))
        atomic_write_bytes(tmp / "ema.safetensors",
                           save({n: e.cpu().contiguous() for n, e in zip(names, self.ema)}))
        osd = self.opt.state_dict()
        flat = {f"{i}.{k}": v.detach().cpu().contiguous() for i, st in osd["state"].items() for k, v in st.items()
                if torch.is_tensor(v)}
        atomic_write_bytes(tmp / "optim.safetensors", save(flat))
        groups = [{k: v for k, v in g.items()} for g in osd["param_groups"]]
        state = {"step": self.step, "elapsed_s": self.elapsed_s, "config": to_dict(self.cfg),
                 "param_groups": groups, "param_names": names}
        atomic_write_text(tmp / "state.json", json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(run / "latest.json", json.dumps({"step": self.step, "dir": name}) + "\n")
        ckpts = sorted(p for p in run.glob("ckpt-*") if p.is_dir())
        for old in ckpts[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self, run_dir: str | os.PathLike) -> bool:
        """Resume from `run_dir/latest.json` if there is one; returns whether it resumed."""
        latest = Path(run_dir) / "latest.json"
        if not latest.is_file():
            return False
        try:
            ck = Path(run_dir) / json.loads(latest.read_text())["dir"]
            state = json.loads((ck / "state.json").read_text())
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise InputError(latest, f"unreadable checkpoint pointer ({e})") from None
        saved_cfg = from_dict(TrainConfig, state["config"], source=ck / "state.json")
        if saved_cfg != self.cfg:
            raise InputError(ck, "checkpoint was trained with another config; use a new --run folder")
        names = [n for n, p in self.teacher.named_parameters() if p.requires_grad]
        if state["param_names"] != names:
            raise InputError(ck, "checkpoint parameters do not match the model")
        model, ema = load_file(ck / "model.safetensors"), load_file(ck / "ema.safetensors")
        with torch.no_grad():
            for n, p, e in zip(names, self.params, self.ema):
                p.copy_(model[n])
                e.copy_(ema[n])
        flat = load_file(ck / "optim.safetensors")
        osd: dict = {"state": {}, "param_groups": state["param_groups"]}
        for key, v in flat.items():
            i, k = key.split(".", 1)
            osd["state"].setdefault(int(i), {})[k] = v.to(self.device) if k != "step" else v
        self.opt.load_state_dict(osd)
        self.step, self.elapsed_s = int(state["step"]), float(state["elapsed_s"])
        return True

    def init_from(self, teacher_dir: str | os.PathLike) -> None:
        """Start from an exported teacher folder's weights (weights and EMA; the optimiser starts fresh).

        For continuing a committed teacher whose training checkpoint is gone (only the fp16 EMA is kept):
        the config must build the same network (same parameter names and shapes).
        """
        src = load_teacher_folder(teacher_dir)
        if src.prediction_type != self.teacher.prediction_type:
            raise InputError(teacher_dir, f"teacher predicts {src.prediction_type}, the config says "
                                          f"{self.teacher.prediction_type}")
        theirs = dict(src.named_parameters())
        with torch.no_grad():
            for (n, p), e in zip([(n, p) for n, p in self.teacher.named_parameters() if p.requires_grad], self.ema):
                q = theirs.get(n)
                if q is None or q.shape != p.shape:
                    raise InputError(teacher_dir, f"parameter {n} is missing or has another shape; the config "
                                                  f"must build the same network")
                p.copy_(q.float())
                e.copy_(q.float())
        self.initialised_from = str(teacher_dir)

    # -- export --
    def export(self, out_dir: str | os.PathLike, extra: dict | None = None,
               max_shard_size: str = "10GB") -> Path:
        """Write the EMA weights as an fp16 teacher folder (+ training.json with how it was trained)."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e)
        try:
            out = self.teacher.save_pretrained(out_dir, dtype=torch.float16, max_shard_size=max_shard_size)
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)
        info = {"train_config": to_dict(self.cfg), "steps": self.step, "train_seconds": round(self.elapsed_s, 1),
                "num_parameters": sum(p.numel() for p in self.params), "weights": "EMA, fp16",
                "initialised_from": self.initialised_from}
        info.update(extra or {})
        atomic_write_text(Path(out) / "training.json", json.dumps(info, indent=2) + "\n")
        return Path(out)


def train(cfg: TrainConfig, run_dir: str | os.PathLike, device="cpu", time_limit_s: float | None = None,
          max_steps: int | None = None, progress: bool = True,
          init_from: str | os.PathLike | None = None) -> TeacherTrainer:
    """Train (resuming from `run_dir` if it holds a checkpoint) until `max_steps` (default cfg.max_steps)
    or `time_limit_s` seconds of this call; checkpoint at the end. Returns the trainer.
    `init_from`: a teacher folder whose weights a fresh run starts from (ignored when resuming)."""
    from tqdm import tqdm

    t_start = time.time()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.json")
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    trainer = TeacherTrainer(cfg, device, progress)
    resumed = trainer.load_checkpoint(run)
    if init_from is not None and not resumed:
        trainer.init_from(init_from)
    render_s = time.time() - t_start
    end = cfg.max_steps if max_steps is None else min(max_steps, cfg.max_steps)
    tb = EventWriter(run / "tb")
    print(f"teacher: {sum(p.numel() for p in trainer.params) / 1e6:.2f}M params, device {device}, "
          f"{'resumed at step ' + str(trainer.step) if resumed else 'fresh start'}, data ready in {render_s:.1f}s",
          flush=True)
    bar = tqdm(total=end, initial=trainer.step, disable=not progress, mininterval=10, desc="train teacher")
    run_loss, n_loss, t_log, s_log = 0.0, 0, time.time(), trainer.step
    t_seg = time.time()
    try:
        while trainer.step < end:
            if time_limit_s is not None and time.time() - t_start > time_limit_s:
                break
            loss = trainer.train_step()
            run_loss, n_loss = run_loss + loss, n_loss + 1
            bar.update(1)
            s = trainer.step
            if s % cfg.log_every == 0:
                now = time.time()
                ips = (s - s_log) / max(now - t_log, 1e-9)
                tb.scalar("train/loss", run_loss / n_loss, s)
                tb.scalar("train/lr", trainer.lr_at(s - 1), s)
                tb.scalar("train/steps_per_s", ips, s)
                bar.set_postfix(loss=f"{run_loss / n_loss:.4f}", it_s=f"{ips:.1f}")
                run_loss, n_loss, t_log, s_log = 0.0, 0, now, s
            if s % cfg.val_every == 0:
                tb.scalar("val/loss", trainer.val_loss(), s)
                tb.flush()
            if s % cfg.ckpt_every == 0:
                trainer.elapsed_s += time.time() - t_seg
                t_seg = time.time()
                trainer.save_checkpoint(run)
    finally:
        bar.close()
        trainer.elapsed_s += time.time() - t_seg
        tb.scalar("val/loss", trainer.val_loss(), trainer.step)
        tb.close()
    trainer.save_checkpoint(run)
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dd3g_distill.train_teacher", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="TrainConfig JSON (configs/teacher_procworld.json)")
    ap.add_argument("--run", required=True, help="run folder: checkpoints, TensorBoard events")
    ap.add_argument("--device", default=None)
    ap.add_argument("--time-limit", type=float, default=None, help="stop (with a checkpoint) after this many s")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--init-from", default=None, help="a fresh run starts from this teacher folder's weights")
    ap.add_argument("--export", default=None, help="write the fp16 EMA teacher folder here at the end")
    ap.add_argument("--max-shard-size", default="10GB")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        trainer = train(cfg, args.run, device, args.time_limit, args.max_steps, not args.no_progress,
                        args.init_from)
        print(f"stopped at step {trainer.step} ({trainer.elapsed_s:.0f}s of training in total)", flush=True)
        if args.export:
            extra = {"device": torch.cuda.get_device_name() if trainer.device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "cuda": torch.version.cuda,
                     "date": time.strftime("%Y-%m-%d")}
            out = trainer.export(args.export, extra, args.max_shard_size)
            print(f"exported the EMA teacher (fp16) to {out}")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
