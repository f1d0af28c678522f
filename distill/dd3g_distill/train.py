"""PEPD joint optimisation: explicit supervision + implicit verification, from pre-generated quadruples.

    dd3g distill --config configs/distill_small.json                       # quadruples (if missing) + training
    torchrun --nproc-per-node 4 -m dd3g_distill.cli distill --config configs/distill_small.json   # DDP

One training step, per object of the batch (image II, noise N, cameras C, teacher output OI):
    Gaussians = PEPD(II, N, C)                                   (bf16 autocast on CUDA)
    views, alpha = rasterise(Gaussians, C)                        (gsplat on CUDA, the reference rasteriser on CPU)
    explicit = w_mse MSE(views, OI) + w_ssim (1 - SSIM) + w_mask MSE(alpha, mask(OI))
    implicit = w_sds(step) * SDS(views | frozen teacher)         (w_sds on a sigmoid ramp over training)
The "3D data only" baseline sets `train.target = "gt"`: the same explicit loss against ground-truth renders.
Representation alignment (`train.init_from_teacher`): Phase 1 starts from the teacher's denoiser weights.

Run folder (`out`):
    config.json                       the resolved DistillConfig
    metrics.jsonl                     one line per logged step (rank 0)
    tb/                               TensorBoard events (rank 0)
    checkpoints/latest.json           -> the newest complete checkpoint folder
    checkpoints/step_00001000/        config.json + model.safetensors (EMA weights: a PEPD/Generator folder)
                    train_state/      raw.safetensors, optim.safetensors + optim.json, rng.safetensors, state.json
    final/                            config.json + model.safetensors (EMA) at the end of training
Checkpoints are written atomically (a temporary folder renamed into place, then latest.json replaced) every
`checkpoint_every_s` seconds, every `checkpoint_every_steps` steps, on SIGTERM/SIGINT and at the end. A run
restarts from latest.json and continues exactly: the data order, the SDS draws and the learning rate are
functions of the step, and optimizer, EMA and RNG states are restored. Nothing is pickled.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from dd3g_sdk._fileio import atomic_write_bytes, atomic_write_text
from dd3g_sdk.config import from_dict, to_dict
from dd3g_sdk.errors import InputError
from dd3g_sdk.model.unet import load_matching

from .evaluate import EvalConfig
from .losses import LossConfig, depth_l1, draw_sds_noise, explicit_terms, sds_terms, sigmoid_ramp, teacher_mask
from .quadruples import EXTRA_KEYS, NO_TEACHER_OUTPUTS, QuadrupleConfig, QuadrupleSet

log = logging.getLogger("dd3g_distill")


# ---- configuration ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Steps and batch sizes are global (summed over DDP ranks)."""
    init_from_teacher: bool = True  # representation alignment: Phase 1 starts from the teacher's weights
    target: str = "teacher"  # explicit-supervision target: "teacher" (OI, distillation) or "gt" (3D data only)
    extra_views: int = 0  # with target "gt": also supervise at this many of the stored extra ground-truth cameras
    steps: int = 20000
    batch_size: int = 16  # global batch; must divide by the number of ranks
    lr: float = 3e-4
    lr_pretrained: float = 1e-4  # learning rate of the teacher-initialised Phase 1 (with init_from_teacher)
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 200
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    ema_decay: float = 0.999
    bf16: bool = True  # bf16 autocast of the model on CUDA (ignored on CPU)
    seed: int = 0
    log_every: int = 10
    checkpoint_every_s: float = 300.0  # wall-clock checkpoint interval (0 = off)
    checkpoint_every_steps: int = 0  # step checkpoint interval (0 = off)
    keep_checkpoints: int = 2
    max_time_s: float = 0.0  # stop (with a checkpoint) after this much training time in this process (0 = off)
    tensorboard: bool = True
    # torch.compile backend for PEPD's forward (and so its backward): "" = eager. "inductor" fuses the kernels of a
    # launch-bound step on CUDA (~10,900 aten ops per forward + backward of "small"); "aot_eager" traces the same
    # graphs without generating code (what the CPU test checks; inductor on 2 CPU cores compiles for minutes).
    compile: str = ""

    def __post_init__(self) -> None:
        if self.target not in ("teacher", "gt"):
            raise ValueError(f"TrainConfig.target must be 'teacher' or 'gt', got {self.target!r}")
        if self.extra_views and self.target != "gt":
            # extra cameras carry ground truth: a distilled model reading them would no longer be distilled
            raise ValueError("TrainConfig.extra_views needs target 'gt' (the teacher has no views beyond C)")
        if self.extra_views < 0:
            raise ValueError("TrainConfig.extra_views must be >= 0")
        for name in ("steps", "batch_size", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("TrainConfig.ema_decay must be in [0, 1)")
        if self.lr <= 0 or self.lr_pretrained <= 0:
            raise ValueError("learning rates must be > 0")


@dataclass(frozen=True)
class DistillConfig:
    """Everything `dd3g distill` needs. Paths are relative to the working directory."""
    teacher: str = "distill/dd3g_distill/teachers/procworld-mv64"  # teacher folder ("" = none: gt target only)
    model: str = "small"  # PEPDConfig preset: tiny, small or base
    model_overrides: dict = field(default_factory=dict)  # PEPDConfig fields merged onto the preset (nested)
    data: str = "data/quadruples/procworld-train"  # quadruple folder (generated there if missing)
    out: str = "runs/distill-small"  # run folder
    quadruples: QuadrupleConfig = field(default_factory=QuadrupleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.train.target == "teacher" and not self.teacher:
            raise ValueError("distilling from the teacher's output needs a teacher folder (or train.target='gt')")
        if self.loss.implicit and not self.teacher:
            raise ValueError("implicit verification needs a teacher (or loss.implicit=false)")
        if self.train.init_from_teacher and not self.teacher:
            raise ValueError("representation alignment needs a teacher (or train.init_from_teacher=false)")
        if self.loss.w_depth and self.train.target != "gt":
            # the teacher has no depth: a distilled model that read it would no longer be distilled
            raise ValueError("loss.w_depth needs train.target='gt' (ground-truth depth is 3D data)")


def apply_overrides(data: dict, overrides: Sequence[str], source=None) -> dict:
    """`KEY.SUB=VALUE` strings onto a config dict; VALUE is JSON (strings may be bare)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise InputError(source, f"override {item!r} is not KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError(source, f"override {key!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


def load_distill_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> DistillConfig:
    """Read a DistillConfig JSON (unknown keys are an error; '_comment' keys are allowed and dropped)."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(p, "config file not found")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(p, f"not valid JSON ({e})") from None
    data = _drop_comments(apply_overrides(data, overrides, path))
    return from_dict(DistillConfig, data, source=path)


def _drop_comments(d):
    if isinstance(d, dict):
        return {k: _drop_comments(v) for k, v in d.items() if not k.startswith("_")}
    return d


# ---- environment ------------------------------------------------------------------------------------------------

def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def load_teacher(path: str | os.PathLike, device=None):
    """The frozen teacher from a folder (teacher.json + diffusers UNet or PEPD denoiser), eval mode, no gradients."""
    from .teacher import load_teacher_folder

    p = Path(path)
    if not p.is_dir():
        raise InputError(p, "teacher folder not found")
    teacher = load_teacher_folder(p)
    return freeze_teacher(teacher, device)


def freeze_teacher(teacher, device=None):
    if device is not None and hasattr(teacher, "to"):
        teacher = teacher.to(device) or teacher
    for m in _modules_of(teacher):
        m.eval()
        m.requires_grad_(False)
    return teacher


def _modules_of(obj) -> list[torch.nn.Module]:
    if isinstance(obj, torch.nn.Module):
        return [obj]
    return [v for v in vars(obj).values() if isinstance(v, torch.nn.Module)]


def alphas_cumprod_of(teacher) -> Tensor:
    for name in ("alphas_cumprod",):
        v = getattr(teacher, name, None)
        if v is not None:
            return torch.as_tensor(v, dtype=torch.float32)
    sched = getattr(teacher, "scheduler", None)
    if sched is not None and getattr(sched, "alphas_cumprod", None) is not None:
        return torch.as_tensor(sched.alphas_cumprod, dtype=torch.float32)
    raise AttributeError("teacher exposes no alphas_cumprod (needed for implicit verification)")


def teacher_unet_state(teacher) -> tuple[dict, dict | None]:
    """(denoiser state_dict, image-encoder state_dict or None) of the teacher."""
    pepd = getattr(teacher, "denoiser", None)
    if pepd is not None:  # GaussianLiftTeacher: a PEPD, the same names as the student's
        return pepd.unet.state_dict(), pepd.image_encoder.state_dict()
    unet = getattr(teacher, "unet")
    enc = getattr(teacher, "image_encoder", None)
    if enc is None:
        return unet.state_dict(), None
    # DiffusersMVTeacher wraps PEPD's ImageTokenizer as "tokenizer.*": strip that prefix
    sd = enc.state_dict()
    return unet.state_dict(), {k.removeprefix("tokenizer."): v for k, v in sd.items()}


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | torch.device | None = None) -> Dist:
    """torchrun's environment -> a process group (NCCL on CUDA, gloo on CPU); a single process otherwise."""
    import torch.distributed as tdist

    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local = int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device(device) if device is not None else pick_device()
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not tdist.is_initialized():
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off (shared hosts)
        tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return Dist(rank, world, local, dev, True)
    return Dist(rank, world, local, dev, False)


# ---- rendering ------------------------------------------------------------------------------------------------

def render_batch(g: dict[str, Tensor], viewmats: Tensor, Ks: Tensor, width: int, height: int,
                 background: float = 1.0) -> tuple[Tensor, Tensor]:
    """Differentiable render of B objects' Gaussians into their cameras.

    g: dict(means [B,N,3], quats [B,N,4], scales [B,N,3], opacities [B,N], sh [B,N,K,3]) activated;
    viewmats [B,C,4,4], Ks [B,C,3,3]. Returns rgb [B,C,3,H,W] composited on `background`, alpha [B,C,1,H,W].
    gsplat on CUDA (imported here, never at module load), the torch reference rasteriser on CPU.
    """
    means, quats, scales = g["means"].float(), g["quats"].float(), g["scales"].float()
    opac, sh = g["opacities"].float(), g["sh"].float()
    b, c = viewmats.shape[:2]
    if means.is_cuda:
        from gsplat import rasterization

        k = sh.shape[-2]
        c_ = lambda t: t.contiguous()  # noqa: E731 - expanded camera tensors are views; the kernels want dense
        # No `backgrounds=`: gsplat 1.5.3's packed path checks them against an empty batch shape and fails for
        # batched cameras. Its colour output is the premultiplied sum, so compositing here is the same thing.
        rgb, alpha, _ = rasterization(c_(means), c_(quats), c_(scales), c_(opac), c_(sh), c_(viewmats.float()),
                                      c_(Ks.float()), width, height, sh_degree=int(math.isqrt(k)) - 1)
        rgb = rgb + (1.0 - alpha) * background
        return rgb.permute(0, 1, 4, 2, 3), alpha.permute(0, 1, 4, 2, 3)
    from dd3g_sdk.render.reference import rasterize

    rgbs, alphas = [], []
    bg = torch.full((3,), background, device=means.device)
    for i in range(b):
        rgb, alpha, _ = rasterize(means[i], quats[i], scales[i], opac[i], sh[i], viewmats[i].float(), Ks[i].float(),
                                  width, height, background=bg)
        rgbs.append(rgb.permute(0, 3, 1, 2))
        alphas.append(alpha.permute(0, 3, 1, 2))
    return torch.stack(rgbs), torch.stack(alphas)


GAUSSIAN_KEYS = ("means", "quats", "scales", "opacities", "sh")


def own_view_render(g: dict[str, Tensor], viewmats: Tensor, Ks: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Each source view's pixel-aligned Gaussians rendered alone at that view's own camera.

    g: as `render_batch`, N = V * (Gaussians per view) in view-major order (as PEPD emits them);
    viewmats [B,V,4,4], Ks [B,V,3,3]: the V source cameras. Returns rgb [B,V,3,size,size], alpha [B,V,1,size,size].
    Why: rendered all together, view 0's Gaussians (the ones that see the input) can explain every camera, and
    the other views' Gaussians fade out (docs/distill.md, "16,384 objects"); alone, each view must show its own
    camera's picture.
    """
    b, v = viewmats.shape[:2]
    gv = {k: g[k].reshape(b * v, g[k].shape[1] // v, *g[k].shape[2:]) for k in GAUSSIAN_KEYS}
    rgb, alpha = render_batch(gv, viewmats.reshape(b * v, 1, 4, 4), Ks.reshape(b * v, 1, 3, 3), size, size)
    return rgb.reshape(b, v, *rgb.shape[2:]), alpha.reshape(b, v, *alpha.shape[2:])


# ---- model ------------------------------------------------------------------------------------------------------

def model_config(cfg: DistillConfig):
    """The PEPDConfig of a run: the preset with `model_overrides` merged in (nested dicts merge)."""
    from dd3g_sdk.model import PEPDConfig

    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    base = to_dict(PEPDConfig.preset(cfg.model))
    return from_dict(PEPDConfig, merge(base, cfg.model_overrides), source="model_overrides")


def build_model(cfg: DistillConfig, teacher=None, seed: int = 0):
    """A fresh PEPD of the config's preset; with representation alignment, Phase 1 from the teacher."""
    from dd3g_sdk.model import PEPD, PEPDConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PEPD(model_config(cfg))
    info = {"loaded": 0, "skipped": 0}
    if cfg.train.init_from_teacher:
        if teacher is None:
            raise ValueError("init_from_teacher needs the teacher")
        unet_sd, enc_sd = teacher_unet_state(teacher)
        loaded, skipped = model.init_from_teacher({k: v.float().cpu() for k, v in unet_sd.items()},
                                                  {k: v.float().cpu() for k, v in enc_sd.items()} if enc_sd else None)
        if not loaded:
            raise InputError(cfg.teacher, "representation alignment loaded no tensor: the teacher's denoiser "
                                          f"does not match the PEPD preset {cfg.model!r}")
        info = {"loaded": len(loaded), "skipped": len(skipped), "skipped_names": skipped[:10]}
        pepd = getattr(teacher, "denoiser", None)
        if pepd is not None:
            # A teacher with a 3D prior is itself a PEPD: Phase 2 (fusion, decoder, heads) starts from it too, so
            # the student starts as the teacher's first ODE step and learns the rest of the trajectory.
            rest = {k: v.float().cpu() for k, v in pepd.state_dict().items()
                    if not k.startswith(("unet.", "image_encoder."))}
            lo, sk = load_matching(model, rest)
            info.update(loaded=info["loaded"] + len(lo), skipped=info["skipped"] + len(sk), phase2_loaded=len(lo))
    return model, info


def _param_groups(model, cfg: TrainConfig):
    """AdamW groups: teacher-initialised Phase 1 at lr_pretrained, the rest at lr; no decay on 1-D tensors."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        pre = cfg.init_from_teacher and (name.startswith("unet.") or name.startswith("image_encoder."))
        decay = p.ndim >= 2 and "embed" not in name.split(".")[-1]
        groups.setdefault((pre, decay), []).append(p)
    out = []
    for (pre, decay), params in sorted(groups.items()):
        out.append({"params": params, "base_lr": cfg.lr_pretrained if pre else cfg.lr, "lr": 0.0,
                    "weight_decay": cfg.weight_decay if decay else 0.0, "name": f"{'phase1' if pre else 'new'}"
                                                                                f"{'' if decay else '_nodecay'}"})
    return out


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


# ---- checkpoints (safetensors + JSON, no pickle) ----------------------------------------------------------------

def _save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict | None = None) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                                  metadata=metadata))


def _load_tensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError(path, "checkpoint file missing")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"not a readable safetensors file ({e})") from None


def optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """An optimizer's state_dict split into tensors (safetensors) and JSON (param groups, scalars)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    groups = meta["param_groups"]
    for g in groups:
        for k in ("betas",):
            if k in g:
                g[k] = tuple(g[k])
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_to_tensors(device: torch.device) -> dict[str, Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def rng_from_tensors(t: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(t["cpu"])
    if device.type == "cuda" and "cuda" in t:
        torch.cuda.set_rng_state(t["cuda"], device)


def save_checkpoint(run: Path, step: int, model, ema, opt, device, extra: dict, keep: int) -> Path:
    """Write checkpoints/step_XXXXXXXX atomically (temp folder + rename), then point latest.json at it."""
    ckdir = run / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = ckdir / name
    tmp = ckdir / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    ema.save_pretrained(tmp)  # config.json + model.safetensors (EMA): loadable by PEPD / Generator / evaluate
    ts = tmp / "train_state"
    ts.mkdir()
    _save_tensors(ts / "raw.safetensors", model.state_dict())
    ot, ometa = optimizer_to_files(opt)
    _save_tensors(ts / "optim.safetensors", ot)
    atomic_write_text(ts / "optim.json", json.dumps(ometa) + "\n")
    _save_tensors(ts / "rng.safetensors", rng_to_tensors(device))
    atomic_write_text(ts / "state.json", json.dumps({"step": step, **extra}, indent=2) + "\n")
    if final.exists():  # the same step saved twice (e.g. SIGTERM right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(ckdir / "latest.json", json.dumps({"step": step, "dir": name}) + "\n")
    old = sorted(p for p in ckdir.glob("step_*") if p.is_dir() and p.name != name)
    for p in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run: Path) -> Path | None:
    p = run / "checkpoints" / "latest.json"
    if not p.is_file():
        return None
    try:
        d = run / "checkpoints" / json.loads(p.read_text())["dir"]
    except (json.JSONDecodeError, KeyError) as e:
        raise InputError(p, f"unreadable checkpoint pointer ({e})") from None
    if not (d / "train_state" / "state.json").is_file():
        raise InputError(d, "checkpoint named by latest.json is incomplete")
    return d


def load_checkpoint(ck: Path, model, ema, opt, device) -> dict:
    from dd3g_sdk.model.pepd import check_state_dict

    raw = _load_tensors(ck / "train_state" / "raw.safetensors")
    check_state_dict(model, raw, ck / "train_state" / "raw.safetensors")
    model.load_state_dict(raw)
    ema_sd = _load_tensors(ck / "model.safetensors")
    check_state_dict(ema, ema_sd, ck / "model.safetensors")
    ema.load_state_dict(ema_sd)
    optimizer_from_files(opt, {k: v.to(device) for k, v in _load_tensors(ck / "train_state" / "optim.safetensors").items()},
                         json.loads((ck / "train_state" / "optim.json").read_text()))
    rng_from_tensors(_load_tensors(ck / "train_state" / "rng.safetensors"), device)
    return json.loads((ck / "train_state" / "state.json").read_text())


# ---- the training loop ------------------------------------------------------------------------------------------

class _Stop:
    """SIGTERM / SIGINT set a flag; the loop checkpoints and leaves at the end of the current step."""

    def __init__(self):
        self.flag = False
        self._old: dict = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def loss_terms(model, batch: dict, cfg: DistillConfig, step: int, teacher=None, alphas: Tensor | None = None,
               autocast: bool = False) -> tuple[Tensor, dict[str, Tensor], float]:
    """The training objective on one batch: (total, dict of terms incl. "total", SDS weight used).

    batch: image [B,3,S,S] 0..1, noise [B,V,3,h,w], viewmats [B,V,4,4], Ks [B,V,3,3] (pixels at h), index [B]
    (object ids: they key the SDS draws), oi [B,V,3,h,w] (target "teacher") or gt, gt_mask ("gt"), and
    cond_image [B,3,S,S] (the teacher's condition, for implicit verification); with train.extra_views E also
    extra_viewmats [B,>=E,4,4], extra_Ks, extra_gt [B,>=E,3,h,w], extra_mask [B,>=E,1,h,w].
    Explicit terms average over all supervised cameras (C, then the E extra ones); SDS sees the C renders only.
    """
    tc, lc = cfg.train, cfg.loss
    dev = batch["image"].device
    h = int(batch["noise"].shape[-1])
    V, E = int(batch["viewmats"].shape[1]), tc.extra_views
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
        out = model(batch["image"], batch["noise"], batch["viewmats"])
    vm, Ks = batch["viewmats"], batch["Ks"]
    if E:
        vm = torch.cat([vm, batch["extra_viewmats"][:, :E]], 1)
        Ks = torch.cat([Ks, batch["extra_Ks"][:, :E]], 1)
    rgb_all, alpha_all = render_batch(out, vm, Ks, h, h)
    rgb = rgb_all[:, :V]
    terms: dict[str, Tensor] = {}
    total = rgb.new_zeros(())
    if lc.explicit:
        if tc.target == "teacher":
            target = batch["oi"]
            mask = teacher_mask(target.flatten(0, 1), lc.mask_threshold)
        else:
            target, mask = batch["gt"], batch["gt_mask"]
            if E:
                target = torch.cat([target, batch["extra_gt"][:, :E]], 1)
                mask = torch.cat([mask, batch["extra_mask"][:, :E]], 1)
            mask = mask.flatten(0, 1)

        def weighted(t: dict[str, Tensor]) -> Tensor:
            return lc.w_mse * t["mse"] + lc.w_ssim * t["ssim"] + lc.w_mask * t["mask"]

        e = explicit_terms(rgb_all.flatten(0, 1), alpha_all.flatten(0, 1), target.flatten(0, 1), mask)
        terms.update(e)
        total = total + weighted(e)
        if lc.w_own_view:
            own_rgb, own_alpha = own_view_render(out, batch["viewmats"], batch["Ks"], h)
            t_c = target[:, :V].flatten(0, 1)  # the V source cameras come first (extra views after them)
            m_c = mask.view(rgb.shape[0], -1, *mask.shape[1:])[:, :V].flatten(0, 1)
            o = explicit_terms(own_rgb.flatten(0, 1), own_alpha.flatten(0, 1), t_c, m_c)
            terms.update({f"own_{k}": t for k, t in o.items()})
            total = total + lc.w_own_view * weighted(o)
    if lc.w_depth:
        terms["depth"] = depth_l1(out["means"], batch["viewmats"], batch["gt_depth"])
        total = total + lc.w_depth * terms["depth"]
    sds_w = 0.0
    if lc.implicit:
        if alphas is None:
            alphas = alphas_cumprod_of(teacher).to(dev)
        num_t = len(alphas)
        sds_w = lc.w_sds * sigmoid_ramp(step, tc.steps, lc.sds_ramp_center, lc.sds_ramp_sharpness)
        seeds = [sample_seed(tc.seed, step, int(i)) for i in batch["index"].tolist()]
        t_lo, t_hi = int(lc.sds_t_min * (num_t - 1)), int(lc.sds_t_max * (num_t - 1))
        ts, eps = draw_sds_noise(seeds, tuple(rgb.shape[1:]), t_lo, t_hi, dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            with torch.no_grad():
                cond = teacher.condition(batch["cond_image"])  # the plain render the teacher was trained on
                null = teacher.null_condition(len(seeds), batch["cond_image"].shape[-1]) \
                    if lc.sds_guidance != 1.0 else None
            s = sds_terms(rgb, teacher, cond, batch["viewmats"], ts, eps, alphas, lc.sds_guidance, null)
        terms.update(s)
        total = total + sds_w * s["sds"]
    terms["total"] = total
    return total, terms, sds_w


def sample_seed(seed: int, step: int, index: int) -> int:
    """The seed of one sample's SDS draw: a function of (run seed, step, dataset index) only."""
    return int(np.random.SeedSequence([int(seed), int(step), int(index)]).generate_state(1, np.uint64)[0] >> 1)


def train(cfg: DistillConfig, *, teacher=None, data: QuadrupleSet | None = None, device=None,
          progress: bool = True, stop_after: int | None = None) -> dict:
    """Train (or resume) the run in `cfg.out`. Returns a summary dict (rank 0 writes all files).

    `teacher` / `data` may be passed in (tests); otherwise they are loaded from the config's folders.
    `stop_after` ends this call after that many steps *in total* (with a checkpoint), as a SIGTERM would.
    """
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DistributedSampler

    dist = init_distributed(device)
    dev = dist.device
    tc, lc = cfg.train, cfg.loss
    run = Path(cfg.out)
    if tc.batch_size % dist.world:
        raise InputError(None, f"train.batch_size {tc.batch_size} must divide by the number of ranks {dist.world}")
    local_batch = tc.batch_size // dist.world
    need_teacher = lc.implicit or tc.init_from_teacher or (tc.target == "teacher" and data is None)
    if teacher is None and need_teacher and cfg.teacher:
        teacher = load_teacher(cfg.teacher, dev)
    elif teacher is not None:
        teacher = freeze_teacher(teacher, dev)
    if data is None:
        data = QuadrupleSet.load(cfg.data, device=dev)
    if len(data) < tc.batch_size:
        raise InputError(cfg.data, f"{len(data)} quadruples are fewer than one batch of {tc.batch_size}")
    if tc.target == "teacher" and "oi" not in data.t:
        raise InputError(cfg.data, NO_TEACHER_OUTPUTS)

    model, init_info = build_model(cfg, teacher, seed=tc.seed)
    if model.config.image_size != data.t["image"].shape[-1]:
        raise InputError(cfg.data, f"quadruple images are {data.t['image'].shape[-1]} px, the {cfg.model} preset "
                                   f"reads {model.config.image_size} px (quadruples.image_size)")
    if tuple(model.noise_shape) != tuple(data.t["noise"].shape[1:]):
        raise InputError(cfg.data, f"quadruple noise {list(data.t['noise'].shape[1:])} does not match the model's "
                                   f"{list(model.noise_shape)}")
    model.to(dev)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(_param_groups(model, tc), betas=(tc.beta1, tc.beta2))
    alphas = alphas_cumprod_of(teacher).to(dev) if lc.implicit else None

    step, trained_s = 0, 0.0
    ck = latest_checkpoint(run)
    if ck is not None:
        st = load_checkpoint(ck, model, ema, opt, dev)
        if st.get("global_batch") != tc.batch_size:
            raise InputError(ck, f"checkpoint was trained with global batch {st.get('global_batch')}, "
                                 f"config says {tc.batch_size}")
        step, trained_s = int(st["step"]), float(st.get("trained_s", 0.0))
        if dist.is_main:
            log.info("resuming %s at step %d", ck, step)
    ddp = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None) if dist.world > 1 else model
    # compiled forward for the loss only: weights, EMA, clipping and checkpoints keep using `model` (no "_orig_mod."
    # names in saved state)
    fwd = torch.compile(ddp, backend=tc.compile) if tc.compile else ddp

    writer = None
    if dist.is_main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
        _truncate_metrics(run / "metrics.jsonl", step)
        if tc.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(run / "tb"), purge_step=step)
            except ImportError:  # pragma: no cover - optional
                log.warning("tensorboard is not installed: logging to metrics.jsonl only")

    sampler = DistributedSampler(range(len(data)), num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                 seed=tc.seed, drop_last=True)
    steps_per_epoch = len(sampler) // local_batch
    autocast = dev.type == "cuda" and tc.bf16
    keys = ["image", "noise", "viewmats", "Ks", "index"] + (["oi"] if tc.target == "teacher" else ["gt", "gt_mask"]) \
        + (["gt_depth"] if lc.w_depth else []) \
        + (["cond_image"] if lc.implicit else []) + (list(EXTRA_KEYS) if tc.extra_views else [])
    if tc.extra_views:
        stored = int(data.t["extra_gt"].shape[1]) if "extra_gt" in data.t else 0
        if stored < tc.extra_views:
            raise InputError(cfg.data, f"train.extra_views is {tc.extra_views} but the quadruples hold {stored} extra "
                                       f"views per object (set quadruples.extra_views and regenerate)")
    epoch_cache: tuple[int, list[int]] | None = None
    last_save = time.monotonic()
    t_start = time.perf_counter()
    end = min(tc.steps, stop_after) if stop_after is not None else tc.steps
    metrics_f = open(run / "metrics.jsonl", "a") if dist.is_main else None
    bar = None
    if dist.is_main and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, initial=step, desc=f"distill {cfg.model}", unit="step")
    last_terms: dict[str, float] = {}
    samples_t0, samples_step0 = time.perf_counter(), step
    try:
        with _Stop() as stop:
            while step < end:
                t_step = time.perf_counter()
                epoch, pos = divmod(step, steps_per_epoch)
                if epoch_cache is None or epoch_cache[0] != epoch:
                    sampler.set_epoch(epoch)
                    epoch_cache = (epoch, list(sampler))
                idx = epoch_cache[1][pos * local_batch:(pos + 1) * local_batch]
                batch = data.batch(idx, keys)
                f = lr_factor(step, tc)
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * f
                total, terms, sds_w = loss_terms(fwd, batch, cfg, step, teacher=teacher, alphas=alphas,
                                                 autocast=autocast)
                opt.zero_grad(set_to_none=True)
                total.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                           tc.grad_clip if tc.grad_clip > 0 else float("inf"))
                # One small collective per step: loss terms (mean over ranks), stop / save flags (sum).
                names = sorted(terms)
                now = time.monotonic()
                want_save = dist.is_main and tc.checkpoint_every_s > 0 and now - last_save >= tc.checkpoint_every_s
                # per process, as documented: a resumed run gets the whole allowance again
                over_time = dist.is_main and tc.max_time_s > 0 and time.perf_counter() - t_start >= tc.max_time_s
                vec = torch.stack([terms[n].detach().float() for n in names] + [grad_norm.detach().float()]
                                  + [torch.tensor(float(v), device=dev) for v in (stop.flag or over_time, want_save)])
                if dist.world > 1:
                    vec[:len(names) + 1] /= dist.world
                    tdist.all_reduce(vec)
                vals = vec.tolist()
                for n, v in zip(names + ["grad_norm"], vals):
                    if not math.isfinite(v):
                        raise FloatingPointError(f"step {step}: loss term '{n}' is {v} (NaN guard; the last "
                                                 f"checkpoint is {latest_checkpoint(run)})")
                opt.step()
                _ema_update(ema, model, tc.ema_decay, step)
                step += 1
                dt = time.perf_counter() - t_step
                last_terms = dict(zip(names + ["grad_norm"], vals))
                stop_now, save_now = vals[-2] > 0, vals[-1] > 0
                if dist.is_main:
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{last_terms['total']:.4f}")
                    if step % tc.log_every == 0 or step == end:
                        el = time.perf_counter() - samples_t0
                        rec = {"step": step, **{k: round(v, 7) for k, v in last_terms.items()}, "lr": opt.param_groups[0]["lr"],
                               "sds_weight": sds_w, "step_s": round(dt, 4),
                               "samples_per_s": round((step - samples_step0) * tc.batch_size / max(el, 1e-9), 2)}
                        metrics_f.write(json.dumps(rec) + "\n")
                        metrics_f.flush()
                        if writer is not None:
                            for k, v in rec.items():
                                if k != "step":
                                    writer.add_scalar(f"train/{k}", v, step)
                        samples_t0, samples_step0 = time.perf_counter(), step
                periodic = tc.checkpoint_every_steps > 0 and step % tc.checkpoint_every_steps == 0
                if save_now or periodic or stop_now or step == end:
                    trained = trained_s + time.perf_counter() - t_start
                    if dist.is_main:
                        save_checkpoint(run, step, model, ema, opt, dev,
                                        {"global_batch": tc.batch_size, "trained_s": trained, "world": dist.world,
                                         "model": cfg.model, "init": init_info}, tc.keep_checkpoints)
                    last_save = time.monotonic()
                    if dist.world > 1:
                        tdist.barrier()
                if stop_now:
                    break
    finally:
        if bar is not None:
            bar.close()
        if metrics_f is not None:
            metrics_f.close()
        if writer is not None:
            writer.close()
    trained = trained_s + time.perf_counter() - t_start
    finished = step >= tc.steps
    if finished and dist.is_main:
        ema.save_pretrained(run / "final")
    summary = {"step": step, "finished": finished, "trained_s": round(trained, 2), "out": str(run),
               "last": last_terms, "world": dist.world, "init": init_info}
    if dist.is_main:
        atomic_write_text(run / "summary.json", json.dumps(summary, indent=2) + "\n")
    if dist.initialised_here:
        tdist.destroy_process_group()
    return summary


@torch.no_grad()
def _ema_update(ema, model, decay: float, step: int) -> None:
    d = min(decay, (1.0 + step) / (10.0 + step))
    # one multi-tensor kernel instead of one per parameter tensor (475 in the small preset): the step is
    # launch-bound on the GPU
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop logged lines beyond the resumed step, so a resumed run's curve has no duplicates."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def read_metrics(run: str | os.PathLike) -> list[dict]:
    p = Path(run) / "metrics.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.is_file() else []
