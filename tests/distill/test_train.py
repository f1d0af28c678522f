"""PEPD training on CPU with the tiny config: each loss term lowers itself, SDS maths, checkpoints, exact resume
after kill -9 and SIGTERM, NaN guard."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dd3g_sdk.errors import InputError

from distill_helpers import CONFIG, ROOT, tiny_setup  # noqa: E402,F401


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from dd3g_distill.quadruples import QuadrupleSet
    from dd3g_distill.train import load_teacher

    torch.set_num_threads(1)
    tdir, ddir = tiny_setup(tmp_path_factory)
    return load_teacher(tdir), QuadrupleSet.load(ddir), tdir, ddir


def _cfg(tdir, ddir, out, *overrides):
    from dd3g_distill.train import load_distill_config

    return load_distill_config(CONFIG, [f"teacher={tdir}", f"data={ddir}", f"out={out}", *overrides])


def _one_step(model, batch, cfg, teacher, lr=1e-3):
    from dd3g_distill.train import loss_terms

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    total, terms, _ = loss_terms(model, batch, cfg, step=cfg.train.steps, teacher=teacher)
    opt.zero_grad()
    total.backward()
    opt.step()
    with torch.no_grad():
        total2, terms2, _ = loss_terms(model, batch, cfg, step=cfg.train.steps, teacher=teacher)
    return terms, terms2


@pytest.mark.parametrize("term", ["mse", "ssim", "mask"])
def test_each_explicit_term_is_lowered_by_one_step(tiny, tmp_path, term):
    from dd3g_distill.train import build_model

    teacher, data, tdir, ddir = tiny
    w = {"mse": 0.0, "ssim": 0.0, "mask": 0.0, term: 1.0}
    cfg = _cfg(tdir, ddir, tmp_path, "loss.implicit=false", *(f"loss.w_{k}={v}" for k, v in w.items()))
    model, info = build_model(cfg, teacher)
    assert info["loaded"] > 0 and info["skipped"] == 0  # representation alignment: all teacher tensors fit
    before, after = _one_step(model, data.batch([0, 1, 2, 3]), cfg, teacher)
    assert after[term] < before[term], (term, before[term].item(), after[term].item())


def test_extra_ground_truth_views_are_supervised(tiny, tmp_path):
    """With train.extra_views the explicit terms also cover the extra cameras: the loss is the mean over C and the
    extra views (checked against renders at each set separately), and one step lowers it."""
    from dd3g_distill.losses import explicit_terms
    from dd3g_distill.train import build_model, loss_terms, render_batch

    teacher, data, tdir, ddir = tiny
    cfg = _cfg(tdir, ddir, tmp_path, "train.target=gt", "train.extra_views=2", "loss.implicit=false",
               "train.init_from_teacher=false")
    model, _ = build_model(cfg, teacher)
    batch = data.batch([0, 1, 2, 3])
    _, terms, _ = loss_terms(model, batch, cfg, step=0)
    with torch.no_grad():
        g = model(batch["image"], batch["noise"], batch["viewmats"])
        parts = []
        for vm, K, gt, m in ((batch["viewmats"], batch["Ks"], batch["gt"], batch["gt_mask"]),
                             (batch["extra_viewmats"], batch["extra_Ks"], batch["extra_gt"], batch["extra_mask"])):
            rgb, a = render_batch(g, vm, K, 16, 16)
            parts.append(explicit_terms(rgb.flatten(0, 1), a.flatten(0, 1), gt.flatten(0, 1), m.flatten(0, 1))["mse"])
    v, e = batch["viewmats"].shape[1], batch["extra_viewmats"].shape[1]
    torch.testing.assert_close(terms["mse"].detach(), (v * parts[0] + e * parts[1]) / (v + e), rtol=1e-4, atol=1e-7)
    assert abs(parts[0] - parts[1]) > 1e-4  # the extra views are other images, not a copy of C
    before, after = _one_step(model, batch, cfg, None)
    assert after["total"] < before["total"]


def test_extra_views_need_ground_truth_and_stored_views(tiny, tmp_path):
    from dd3g_distill.train import train

    teacher, data, tdir, ddir = tiny
    with pytest.raises(ValueError, match="extra_views needs target 'gt'"):
        _cfg(tdir, ddir, tmp_path, "train.extra_views=2")
    cfg = _cfg(tdir, ddir, tmp_path, "train.target=gt", "train.extra_views=3", "loss.implicit=false",
               "train.init_from_teacher=false")
    with pytest.raises(InputError, match="hold 2 extra views"):
        train(cfg, data=data, progress=False)


def test_depth_l1_reads_the_camera_depth_of_each_pixel_gaussian():
    """Reference: Gaussians put at a known camera depth along each pixel's ray (camera frame -> world by hand),
    k of them per pixel offset by known amounts; the loss is the mean |offset| over the object's pixels only."""
    from dd3g_distill.losses import depth_l1
    from dd3g_sdk.cameras import orbit_camera, stack_viewmats

    rng = np.random.default_rng(3)
    b, v, h, k = 2, 3, 5, 2
    vm = np.stack([stack_viewmats([orbit_camera(40.0 * i + 7 * j, 10.0 * j, 2.0) for i in range(v)])
                   for j in range(b)])  # [b, v, 4, 4]
    gt = rng.uniform(1.5, 2.5, (b, v, h, h)) * (rng.uniform(size=(b, v, h, h)) > 0.3)
    off = np.array([0.05, -0.15])  # per Gaussian of a pixel
    means = np.zeros((b, v, h, h, k, 3))
    for bi in range(b):
        for vi in range(v):
            R, t = vm[bi, vi, :3, :3].astype(np.float64), vm[bi, vi, :3, 3].astype(np.float64)
            for y in range(h):
                for x in range(h):
                    d = np.array([x - 2.0, y - 2.0, 6.0])  # any ray: only its camera z matters
                    for ki in range(k):
                        z = (gt[bi, vi, y, x] or 2.0) + off[ki]
                        means[bi, vi, y, x, ki] = R.T @ (d / d[2] * z - t)
    got = depth_l1(torch.tensor(means.reshape(b, -1, 3)), torch.tensor(vm), torch.tensor(gt))
    assert abs(got.item() - np.abs(off).mean()) < 1e-6
    with pytest.raises(ValueError, match="not 3 views"):
        depth_l1(torch.zeros(b, 7, 3), torch.tensor(vm), torch.tensor(gt))  # 7 is no multiple of 3 x 5 x 5


def test_depth_term_needs_ground_truth_and_is_lowered_by_one_step(tiny, tmp_path):
    from dd3g_distill.train import build_model

    teacher, data, tdir, ddir = tiny
    with pytest.raises(ValueError, match="w_depth needs"):
        _cfg(tdir, ddir, tmp_path, "loss.w_depth=1.0")
    cfg = _cfg(tdir, ddir, tmp_path, "train.target=gt", "loss.implicit=false", "train.init_from_teacher=false",
               "loss.w_mse=0", "loss.w_ssim=0", "loss.w_mask=0", "loss.w_depth=1.0")
    model, _ = build_model(cfg, teacher)
    batch = data.batch([0, 1, 2, 3])
    assert (batch["gt_depth"] > 0).float().mean() > 0.05
    before, after = _one_step(model, batch, cfg, None, lr=1e-2)
    assert after["depth"] < before["depth"], (before["depth"].item(), after["depth"].item())


def test_own_view_render_matches_rendering_each_view_alone(tiny, tmp_path):
    """Reference twin: each view's slice of the Gaussians rendered by itself at its own camera gives the same
    pixels (float32 rounding), and differs from rendering all views' Gaussians together."""
    from dd3g_distill.train import GAUSSIAN_KEYS, build_model, own_view_render, render_batch

    teacher, data, tdir, ddir = tiny
    model, _ = build_model(_cfg(tdir, ddir, tmp_path), teacher)
    batch = data.batch([0, 1])
    with torch.no_grad():
        g = model(batch["image"], batch["noise"], batch["viewmats"])
        vm, Ks = batch["viewmats"], batch["Ks"]
        h = int(batch["noise"].shape[-1])
        rgb, alpha = own_view_render(g, vm, Ks, h)
        b, v = vm.shape[:2]
        n = g["means"].shape[1] // v
        assert rgb.shape == (b, v, 3, h, h) and alpha.shape == (b, v, 1, h, h)
        for i in range(b):
            for j in range(v):
                gi = {k: g[k][i:i + 1, j * n:(j + 1) * n] for k in GAUSSIAN_KEYS}
                r, a = render_batch(gi, vm[i:i + 1, j:j + 1], Ks[i:i + 1, j:j + 1], h, h)
                torch.testing.assert_close(rgb[i, j], r[0, 0], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(alpha[i, j], a[0, 0], rtol=1e-5, atol=1e-5)
        together, _ = render_batch(g, vm, Ks, h, h)
        assert (together - rgb).abs().max() > 1e-3


@pytest.mark.parametrize("target", ["teacher", "gt"])
def test_own_view_term_is_lowered_by_one_step(tiny, tmp_path, target):
    """loss.w_own_view adds the explicit terms of the own-view renders (`own_mse`, `own_ssim`, `own_mask`); with
    a weight that dominates the objective one step lowers them, for either target (gt with extra views: only the
    source cameras' targets are read). It is part of explicit supervision: without it, a config error."""
    from dd3g_distill.train import build_model

    teacher, data, tdir, ddir = tiny
    with pytest.raises(ValueError, match="w_own_view"):
        _cfg(tdir, ddir, tmp_path, "loss.explicit=false", "loss.w_own_view=1.0")
    extra = ["train.target=gt", "train.extra_views=2", "train.init_from_teacher=false"] if target == "gt" else []
    cfg = _cfg(tdir, ddir, tmp_path, "loss.implicit=false", "loss.w_own_view=100.0", *extra)
    model, _ = build_model(cfg, teacher)
    before, after = _one_step(model, data.batch([0, 1, 2, 3]), cfg, teacher)
    lc = cfg.loss
    own, own2 = (t["own_mse"] + lc.w_ssim * t["own_ssim"] + lc.w_mask * t["own_mask"] for t in (before, after))
    assert own2 < own, (own.item(), own2.item())
    assert before["own_mse"] != before["mse"]  # a different render from the all-views one


def test_ema_update_matches_a_per_tensor_lerp(tiny, tmp_path):
    """Reference twin of the multi-tensor EMA: ema <- ema + (1 - d)(model - ema) per tensor, d = min(decay,
    (1 + step) / (10 + step)), equal within float32 rounding."""
    import copy

    from dd3g_distill.train import _ema_update, build_model

    teacher, data, tdir, ddir = tiny
    model, _ = build_model(_cfg(tdir, ddir, tmp_path), teacher)
    ema = copy.deepcopy(model).requires_grad_(False)
    ref = copy.deepcopy(ema)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    for step in (0, 5, 500):
        _ema_update(ema, model, 0.99, step)
        d = min(0.99, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for pr, pm in zip(ref.parameters(), model.parameters()):
                pr.add_((1.0 - d) * (pm - pr))
    for a, b in zip(ema.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


class AnalyticVerifier(torch.nn.Module):
    """A 'teacher' whose denoiser is exact for one known clean sample x*: eps_hat = (x_t - sqrt(ab) x*) / sqrt(1 - ab).

    SDS with it must pull the renders towards x*. Its parameter `p` would receive a gradient if anything were
    back-propagated through the verifier.
    """
    prediction_type = "epsilon"

    def __init__(self, x_star, alphas_cumprod):
        super().__init__()
        self.x_star = x_star  # [B, V, 3, h, w] in [-1, 1]
        self.alphas_cumprod = alphas_cumprod
        self.p = torch.nn.Parameter(torch.ones(()))

    def condition(self, image):
        return {"image": image}

    def denoise(self, x_t, t, cond, viewmats=None):
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        return self.p * (x_t - ab.sqrt() * self.x_star) / (1 - ab).sqrt()


def _check_sds_draws_are_keyed_per_sample(device):
    from dd3g_distill.losses import draw_sds_noise

    ts, eps = draw_sds_noise([7, 11, 13], (2, 3, 8, 8), 5, 50, device)
    assert ts.device.type == eps.device.type == torch.device(device).type
    assert ts.shape == (3,) and eps.shape == (3, 2, 3, 8, 8) and bool(((ts >= 5) & (ts <= 50)).all())
    ts1, eps1 = draw_sds_noise([13], (2, 3, 8, 8), 5, 50, device)  # the same sample in another batch (DDP rank)
    assert torch.equal(ts1[0], ts[2]) and torch.equal(eps1[0], eps[2])
    assert not torch.equal(eps[0], eps[1])
    big = draw_sds_noise([1, 2], (4, 3, 64, 64), 0, 9, device)[1]
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02


def test_sds_draws_are_keyed_per_sample_on_cpu():
    """Each sample's SDS timestep and noise depend on its seed only (the DDP invariance), and on the CPU they are
    the seeded CPU generator's numbers (reference: the draws written out by hand)."""
    from dd3g_distill.losses import draw_sds_noise

    _check_sds_draws_are_keyed_per_sample("cpu")
    g = torch.Generator().manual_seed(11)
    t_ref = torch.randint(5, 51, (1,), generator=g)
    e_ref = torch.randn((2, 3, 8, 8), generator=g)
    ts, eps = draw_sds_noise([7, 11], (2, 3, 8, 8), 5, 50, "cpu")
    assert torch.equal(ts[1:], t_ref) and torch.equal(eps[1], e_ref)


@pytest.mark.gpu
def test_sds_draws_are_keyed_per_sample_on_cuda():
    """The same on CUDA, where the draws are made on the GPU by CUDA generators (no CPU work, no copy)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    _check_sds_draws_are_keyed_per_sample("cuda")


def test_sds_gradient_matches_its_formula_and_skips_the_teacher():
    from dd3g_distill.losses import sds_terms

    torch.manual_seed(0)
    ab = torch.linspace(0.999, 0.01, 1000)
    views = torch.rand(2, 4, 3, 8, 8, requires_grad=True)
    teacher = AnalyticVerifier(torch.rand(2, 4, 3, 8, 8) * 2 - 1, ab)
    t = torch.tensor([100, 700])
    eps = torch.randn(2, 4, 3, 8, 8)
    s = sds_terms(views, teacher, teacher.condition(None), None, t, eps, ab)
    s["sds"].backward()
    # reference twin: d/dviews of 0.5 mean((x0 - sg(x0 - g))^2) = 2 g / numel, g = (1 - ab_t)(eps_hat - eps)
    a = ab[t].view(-1, 1, 1, 1, 1)
    x0 = views.detach() * 2 - 1
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    g = (1 - a) * ((x_t - a.sqrt() * teacher.x_star) / (1 - a).sqrt() - eps)
    torch.testing.assert_close(views.grad, 2 * g / g.numel(), rtol=1e-5, atol=1e-9)
    assert teacher.p.grad is None  # nothing flowed through the verifier


def test_implicit_step_pulls_renders_towards_the_verifier(tiny, tmp_path):
    from dd3g_distill.train import build_model, render_batch

    teacher, data, tdir, ddir = tiny
    cfg = _cfg(tdir, ddir, tmp_path, "loss.explicit=false", "loss.w_sds=1.0")
    model, _ = build_model(cfg, teacher)
    batch = data.batch([0, 1, 2, 3])
    x_star = batch["oi"] * 2 - 1
    verifier = AnalyticVerifier(x_star, teacher.scheduler.alphas_cumprod.float())

    def dist():
        with torch.no_grad():
            rgb, _ = render_batch(model(batch["image"], batch["noise"], batch["viewmats"]), batch["viewmats"],
                                  batch["Ks"], 16, 16)
        return ((rgb * 2 - 1 - x_star) ** 2).mean().item()

    d0 = dist()
    terms, _ = _one_step(model, batch, cfg, verifier)
    assert terms["sds_grad_rms"] > 0
    assert verifier.p.grad is None
    assert dist() < d0


def test_real_teacher_sds_reaches_the_student_only(tiny, tmp_path):
    from dd3g_distill.train import build_model, loss_terms

    teacher, data, tdir, ddir = tiny
    cfg = _cfg(tdir, ddir, tmp_path, "loss.explicit=false")
    model, _ = build_model(cfg, teacher)
    total, terms, w = loss_terms(model, data.batch([4, 5]), cfg, step=cfg.train.steps, teacher=teacher)
    assert set(terms) == {"sds", "sds_grad_rms", "total"} and torch.isfinite(total)
    assert 0.04 < w <= 0.05  # the end of the sigmoid ramp: close to w_sds
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_sigmoid_ramp_and_lr_schedule():
    from dd3g_distill.losses import sigmoid_ramp
    from dd3g_distill.train import TrainConfig, lr_factor

    assert sigmoid_ramp(50, 100, 0.5, 10.0) == pytest.approx(0.5)
    assert sigmoid_ramp(0, 100, 0.5, 10.0) == pytest.approx(1 / (1 + 2.718281828459045 ** 5))
    vals = [sigmoid_ramp(s, 100) for s in range(0, 101, 10)]
    assert vals == sorted(vals) and vals[-1] > 0.99
    tc = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, tc) == pytest.approx(0.1) and lr_factor(9, tc) == pytest.approx(1.0)
    assert lr_factor(60, tc) == pytest.approx(0.55)  # half-way through the cosine
    assert lr_factor(110, tc) == pytest.approx(0.1)


def test_checkpoint_round_trip(tiny, tmp_path):
    from dd3g_distill.train import (_param_groups, build_model, latest_checkpoint, load_checkpoint, loss_terms,
                                    save_checkpoint)

    teacher, data, tdir, ddir = tiny
    cfg = _cfg(tdir, ddir, tmp_path, "loss.implicit=false")
    model, _ = build_model(cfg, teacher)
    ema = build_model(cfg, teacher, seed=1)[0].requires_grad_(False)
    opt = torch.optim.AdamW(_param_groups(model, cfg.train))
    for g in opt.param_groups:
        g["lr"] = 1e-3
    loss_terms(model, data.batch([0, 1]), cfg, 0)[0].backward()
    opt.step()
    torch.manual_seed(123)
    save_checkpoint(tmp_path, 1, model, ema, opt, torch.device("cpu"), {"global_batch": 4}, keep=2)
    expect_rng = torch.rand(3)
    m2, e2 = build_model(cfg, teacher, seed=7)[0], build_model(cfg, teacher, seed=8)[0]
    o2 = torch.optim.AdamW(_param_groups(m2, cfg.train))
    st = load_checkpoint(latest_checkpoint(tmp_path), m2, e2, o2, torch.device("cpu"))
    assert st["step"] == 1 and st["global_batch"] == 4
    torch.testing.assert_close(torch.rand(3), expect_rng, rtol=0, atol=0)
    for a, b in [(model.state_dict(), m2.state_dict()), (ema.state_dict(), e2.state_dict())]:
        assert all(torch.equal(a[k], b[k]) for k in a)
    s1, s2 = opt.state_dict(), o2.state_dict()
    assert [g["lr"] for g in s1["param_groups"]] == [g["lr"] for g in s2["param_groups"]]
    for pid, st1 in s1["state"].items():
        for k, v in st1.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][pid][k])), (pid, k)
    # the EMA folder is a PEPD checkpoint
    from dd3g_sdk.model import PEPD

    assert PEPD.from_pretrained(latest_checkpoint(tmp_path)).num_gaussians == model.num_gaussians


def _wait_for(pred, proc, timeout=240.0):
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"training process ended early (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.05)


@pytest.mark.slow
def test_resume_after_kill_9_and_sigterm_matches_a_straight_run(tiny, tmp_path):
    from dd3g_distill.train import latest_checkpoint, read_metrics, train

    teacher, data, tdir, ddir = tiny
    straight = _cfg(tdir, ddir, tmp_path / "straight")
    train(straight, teacher=teacher, data=data, progress=False)
    ref = {r["step"]: r for r in read_metrics(straight.out)}
    assert sorted(ref) == [1, 2, 3, 4, 5, 6]

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dd3g_distill.cli", "distill", "--config", str(CONFIG), "--stage", "train",
           "--no-progress", "--set", f"teacher={tdir}", "--set", f"data={ddir}", "--set", f"out={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # 1) kill -9 as soon as the first checkpoint (step 2) exists
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (out / "checkpoints" / "latest.json").is_file(), p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "final").exists()
    # 2) restart (here, in-process); SIGTERM once it has resumed and logged a step: it checkpoints and returns
    resumed_at = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    cfg = dataclasses.replace(straight, out=str(out))

    def sigterm_when_resumed():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 240:
            try:
                done = any(r["step"] > resumed_at for r in read_metrics(out))
            except ValueError:  # a line being written
                done = False
            if done:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=sigterm_when_resumed, daemon=True)
    watcher.start()
    summary = train(cfg, teacher=teacher, data=data, progress=False)
    watcher.join()
    stopped = json.loads((latest_checkpoint(out) / "train_state" / "state.json").read_text())["step"]
    assert not summary["finished"] and resumed_at < stopped == summary["step"] < 6
    # 3) finish in this process
    summary = train(cfg, teacher=teacher, data=data, progress=False)
    assert summary["finished"]
    got = {r["step"]: r for r in read_metrics(out)}
    assert sorted(got) == sorted(ref)
    for s in ref:  # CPU float32, same ops in the same order: equal up to rounding noise
        for k in ("total", "mse", "ssim", "mask", "sds"):
            assert got[s][k] == pytest.approx(ref[s][k], rel=1e-5, abs=1e-7), (s, k)


def test_nan_guard_names_the_step_and_the_term(tiny, tmp_path):
    from dd3g_distill.quadruples import QuadrupleSet
    from dd3g_distill.train import train

    teacher, data, tdir, ddir = tiny
    t = dict(data.t)
    t["noise"] = t["noise"].clone()
    t["noise"][:, 0, 0, 0, 0] = float("nan")
    bad = QuadrupleSet(t, data.manifest, data.root)
    cfg = _cfg(tdir, ddir, tmp_path, "loss.implicit=false")
    with pytest.raises(FloatingPointError, match=r"step 0: loss term '\w+' is nan"):
        train(cfg, teacher=teacher, data=bad, progress=False)


def _losses_with_compile(tdir, ddir, out, teacher, data, backend, *extra):
    from dd3g_distill.train import read_metrics, train

    cfg = _cfg(tdir, ddir, out, "train.steps=3", "train.log_every=1", f"train.compile={backend}", *extra)
    summary = train(cfg, teacher=teacher, data=data, progress=False)
    return summary, {r["step"]: r for r in read_metrics(out)}


@pytest.mark.slow
def test_compiled_forward_trains_like_eager(tiny, tmp_path):
    """train.compile: the traced graphs (aot_eager: dynamo capture + AOT autograd, no code generation) give the
    same loss curve as eager on CPU, and the checkpoint holds the plain module's names."""
    from dd3g_distill.train import latest_checkpoint

    torch._dynamo.reset()
    teacher, data, tdir, ddir = tiny
    _, eager = _losses_with_compile(tdir, ddir, tmp_path / "eager", teacher, data, "")
    summary, traced = _losses_with_compile(tdir, ddir, tmp_path / "traced", teacher, data, "aot_eager")
    assert summary["finished"] and sorted(traced) == sorted(eager) == [1, 2, 3]
    for s in eager:
        for k in ("total", "mse", "ssim", "mask", "sds"):
            assert traced[s][k] == pytest.approx(eager[s][k], rel=1e-4, abs=1e-6), (s, k)
    assert json.loads((latest_checkpoint(tmp_path / "traced") / "config.json").read_text())["kind"] == "pepd"
    from safetensors import safe_open

    with safe_open(str(latest_checkpoint(tmp_path / "traced") / "model.safetensors"), framework="pt") as f:
        assert not any("_orig_mod" in k for k in f.keys())
    torch._dynamo.reset()


@pytest.mark.gpu
def test_inductor_forward_trains_like_eager_on_cuda(tiny, tmp_path):
    """The same with inductor on CUDA (fp32, bf16 off, so the comparison is not drowned in rounding)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch._dynamo.reset()
    teacher, data, tdir, ddir = tiny
    # teacher and data loaded by train() itself, onto the GPU
    _, eager = _losses_with_compile(tdir, ddir, tmp_path / "eager", None, None, "", "train.bf16=false")
    _, fused = _losses_with_compile(tdir, ddir, tmp_path / "fused", None, None, "inductor", "train.bf16=false")
    for s in eager:
        for k in ("total", "mse", "mask"):
            assert fused[s][k] == pytest.approx(eager[s][k], rel=1e-3, abs=1e-5), (s, k)
    torch._dynamo.reset()
