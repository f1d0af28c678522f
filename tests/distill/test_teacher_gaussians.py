"""The teacher with a 3D prior (GaussianLiftTeacher): interface, x0 prediction conversions, DDIM determinism,
save/load, training with extra supervision cameras, and distillation from it (the student starts as its first step).

CPU only and slow per step (the reference rasteriser renders every denoise), so batches are 1-2 objects, the ODE runs
3 steps and the trainer is built and trained once for the module."""
import json
import math

import pytest
import torch

from dd3g_sdk.errors import InputError
from dd3g_sdk.model.pepd import PEPDConfig
from dd3g_distill.teacher import (DiffusersMVTeacher, GaussianLiftTeacher, MultiViewTeacher, TeacherConfig,
                                  load_teacher_folder, prediction_to_epsilon, prediction_to_x0)
from dd3g_distill.train_teacher import TeacherTrainer, TrainConfig

from distill_helpers import CONFIG, loss_before_after, ode_inputs  # noqa: E402

torch.set_num_threads(1)

TRAIN_STEPS = 4


@pytest.fixture(scope="module")
def gl_teacher():
    return GaussianLiftTeacher.from_pepd_config(PEPDConfig.preset("tiny"), seed=0).eval()


def _tiny_gaussians_config(**kw) -> TrainConfig:
    base = dict(unet_preset="tiny", num_objects=3, num_val_objects=2, render_supersample=1, batch_size=2,
                max_steps=8, warmup_steps=1, log_every=1, val_every=2, ckpt_every=2, lr=2e-3, ema_decay=0.9,
                denoiser="gaussians", prediction_type="sample", extra_views=2, cond_drop_prob=0.0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained():
    """A tiny gaussians-teacher trainer after TRAIN_STEPS steps on the batch of step 0, with that batch's loss
    before and after."""
    tr = TeacherTrainer(_tiny_gaussians_config(), "cpu")
    before, after = loss_before_after(tr, TRAIN_STEPS)
    return tr, tr.batch_for_step(0), before, after


# ---- 1. interface -----------------------------------------------------------------------------------------------

def test_interface_and_denoise_is_the_render_of_the_gaussians(gl_teacher):
    t = gl_teacher
    assert isinstance(t, MultiViewTeacher)
    assert t.prediction_type == "sample" and t.scheduler.config.prediction_type == "sample"
    assert t.config.denoiser == "gaussians" and t.sample_space == "pixels"
    assert t.sample_shape == (4, 3, 32, 32) and t.viewmats.shape == (4, 4, 4)
    g = torch.Generator().manual_seed(0)
    cond = t.condition(torch.rand(2, 3, 48, 48, generator=g))  # any input size: resized to the denoiser's side
    assert cond["image"].shape == (2, 3, 32, 32)
    x = torch.randn(2, *t.sample_shape, generator=g)
    with torch.no_grad():
        out = t.denoise(x, 500, cond)
        # x0 prediction = the renders of the lifted Gaussians at the view cameras, mapped to [-1, 1]
        gs = t.gaussians(x, 500, cond)
        rgb, alpha = t.render(gs, t.viewmats.expand(2, -1, -1, -1))
        # per-object timesteps: object 0 as before, object 1 at another t
        out_t = t.denoise(x, torch.tensor([500, 900]), cond, t.viewmats)
        # another x_t for object 1 only
        x2 = x.clone()
        x2[1] = torch.randn(x2[1].shape, generator=g)
        out_x = t.denoise(x2, 500, cond)
    assert out.shape == (2, 4, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert alpha.shape == (2, 4, 1, 32, 32)
    torch.testing.assert_close(out, 2 * rgb - 1, atol=1e-6, rtol=0)
    assert gs["means"].shape[:2] == gs["opacities"].shape and gs["means"].shape[0] == 2
    torch.testing.assert_close(out_t[0], out[0], atol=1e-5, rtol=0)
    assert (out_t[1] - out[1]).abs().max() > 1e-4  # depends on t
    torch.testing.assert_close(out_x[0], out[0], atol=1e-5, rtol=0)
    assert (out_x[1] - out[1]).abs().max() > 1e-4  # depends on x_t
    with pytest.raises(ValueError):
        t.denoise(torch.randn(2, 3, 3, 32, 32), 10, cond)  # 3 views, the teacher has 4


# ---- 2. prediction conversions ------------------------------------------------------------------------------------

def _forward_process(alphas_cumprod):
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(2, 4, 3, 32, 32, generator=g) * 2 - 1
    eps = torch.randn(2, 4, 3, 32, 32, generator=g)
    t = torch.tensor([100, 900])
    a = alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)
    return x0, eps, t, a, a.sqrt() * x0 + (1 - a).sqrt() * eps


def test_sample_prediction_conversions(gl_teacher):
    x0, eps, t, _, x_t = _forward_process(gl_teacher.scheduler.alphas_cumprod)
    assert gl_teacher.to_x0(x0, x_t, t) is x0
    torch.testing.assert_close(gl_teacher.to_epsilon(x0, x_t, t), eps, atol=1e-4, rtol=1e-4)


def test_prediction_types_agree(gl_teacher):
    """The exact eps, v and x0 of one (x0, eps, t) convert to the same eps and the same x0."""
    x0, eps, t, a, x_t = _forward_process(gl_teacher.scheduler.alphas_cumprod)
    exact = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}
    for kind, pred in exact.items():
        torch.testing.assert_close(prediction_to_epsilon(pred, x_t, a, kind), eps, atol=1e-4, rtol=1e-4,
                                   msg=lambda m: f"{kind} -> epsilon: {m}")
        torch.testing.assert_close(prediction_to_x0(pred, x_t, a, kind), x0, atol=1e-4, rtol=1e-4,
                                   msg=lambda m: f"{kind} -> x0: {m}")
    # a wrong label gives another answer (the conversions do read the type)
    assert (prediction_to_epsilon(exact["sample"], x_t, a, "epsilon") - eps).abs().max() > 0.1
    for fn in (prediction_to_epsilon, prediction_to_x0):
        with pytest.raises(ValueError, match="prediction_type"):
            fn(eps, x_t, a, "velocity")


# ---- 3. the DDIM ODE --------------------------------------------------------------------------------------------

def test_ode_is_deterministic_and_depends_on_the_noise(gl_teacher):
    t = gl_teacher
    cond, n1, n2 = ode_inputs(t)
    views, traj = t.ode(n1, cond, steps=3, return_trajectory=True)
    again = t.ode(n1.clone(), cond, steps=3)
    other = t.ode(n2, cond, steps=3)
    assert views.shape == (1, 4, 3, 32, 32) and views.min() >= 0 and views.max() <= 1
    assert torch.equal(views, again)
    # a random denoiser's renders vary little with x_t (mean change 6e-4, max 1.4e-2 measured), but they do vary
    assert (views - other).abs().max() > 2e-3 and (views - other).abs().mean() > 1e-4
    assert len(traj["states"]) == 3 + 1 and traj["states"].shape == (4, 1, 4, 3, 32, 32)
    assert len(traj["timesteps"]) == 3 and traj["pred_x0"].shape == (3, 1, 4, 3, 32, 32)
    torch.testing.assert_close(views, ((traj["states"][-1] + 1) / 2).clamp(0, 1))


# ---- 4. save / load and config checks ------------------------------------------------------------------------------

def test_save_load_round_trip(gl_teacher, tmp_path):
    t = gl_teacher
    out = t.save_pretrained(tmp_path / "gs", dtype=None)
    for f in ("denoiser/config.json", "denoiser/model.safetensors", "scheduler/scheduler_config.json", "teacher.json"):
        assert (out / f).is_file(), f
    assert json.loads((out / "teacher.json").read_text())["denoiser"] == "gaussians"
    back = load_teacher_folder(out)
    assert isinstance(back, GaussianLiftTeacher) and back.config == t.config and not back.training
    assert back.scheduler.config.prediction_type == "sample"
    g = torch.Generator().manual_seed(3)
    cond_img, x = torch.rand(1, 3, 32, 32, generator=g), torch.randn(1, *t.sample_shape, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(back.denoise(x, 400, back.condition(cond_img)),
                                   t.denoise(x, 400, t.condition(cond_img)), atol=0, rtol=0)
    # the UNet teacher's loader refuses a gaussians folder
    with pytest.raises(InputError):
        DiffusersMVTeacher.from_pretrained(out)


def test_load_teacher_folder_bad_folders(gl_teacher, tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_teacher_folder(tmp_path / "nope")
    root = gl_teacher.save_pretrained(tmp_path / "bad", dtype=None)
    good = (root / "teacher.json").read_text()
    (root / "teacher.json").write_text(good[: len(good) // 2])  # truncated
    with pytest.raises(InputError):
        load_teacher_folder(root)
    (root / "teacher.json").write_text(json.dumps({**json.loads(good), "denoiser": "voxels"}))
    with pytest.raises(InputError):
        load_teacher_folder(root)
    (root / "teacher.json").unlink()
    with pytest.raises(InputError):
        load_teacher_folder(root)


def test_configs_refuse_mismatched_denoiser_and_prediction():
    with pytest.raises(ValueError):
        TeacherConfig(denoiser="gaussians", prediction_type="epsilon")
    with pytest.raises(ValueError):
        TeacherConfig(denoiser="unet", prediction_type="sample")
    with pytest.raises(ValueError):
        TeacherConfig(denoiser="voxels", prediction_type="sample")
    with pytest.raises(ValueError):
        TrainConfig(denoiser="unet", extra_views=2)
    with pytest.raises(ValueError):
        TrainConfig(denoiser="gaussians", prediction_type="v_prediction")
    # the valid combinations build
    assert TeacherConfig(denoiser="gaussians", prediction_type="sample").denoiser == "gaussians"
    assert TrainConfig(denoiser="gaussians", prediction_type="sample", extra_views=2).extra_views == 2


# ---- 5. training ------------------------------------------------------------------------------------------------

def test_trainer_batch_carries_the_extra_views(trained):
    tr, batch, _, _ = trained
    assert isinstance(tr.teacher, GaussianLiftTeacher) and tr.teacher.prediction_type == "sample"
    assert batch["x0"].shape == (2, 4, 3, 32, 32) and batch["extra_x0"].shape == (2, 2, 3, 32, 32)
    for k in ("x0", "extra_x0"):
        assert batch[k].min() >= -1 and batch[k].max() <= 1
    # the extra views are other pictures of the same objects, not copies of the V views
    for e in range(2):
        assert all((batch["extra_x0"][:, e] - batch["x0"][:, v]).abs().mean() > 1e-3 for v in range(4))
    assert tr.data.shape[1] == 4 + 2 and tr.all_viewmats.shape == (6, 4, 4)


def _azimuth_elevation(cam) -> tuple[float, float, float]:
    c = cam.cam_to_world[:3, 3]
    r = float(math.sqrt((c ** 2).sum()))
    return math.degrees(math.atan2(c[0], c[2])) % 360.0, math.degrees(math.asin(c[1] / r)), r


def test_extra_cameras_elevations_and_intrinsics():
    cfg = _tiny_gaussians_config()
    cams = cfg.extra_cameras(32)
    views = cfg.views.cameras(32, 32)
    assert len(cams) == 2
    for k, cam in enumerate(cams):
        _, el, r = _azimuth_elevation(cam)
        assert el == pytest.approx(cfg.extra_elevations_deg[k % len(cfg.extra_elevations_deg)], abs=1e-6)
        assert r == pytest.approx(cfg.views.radius, abs=1e-6)
        assert (cam.K == views[0].K).all() and cam.width == 32 and cam.height == 32
    # the shipped configuration (E = V = 4): azimuths halfway between the view set's
    az4 = sorted(_azimuth_elevation(c)[0] for c in _tiny_gaussians_config(extra_views=4).extra_cameras(32))
    assert az4 == pytest.approx([45.0, 135.0, 225.0, 315.0], abs=1e-6)


def test_extra_cameras_azimuths_lie_between_the_views():
    cfg = _tiny_gaussians_config()
    view_az = cfg.views.azimuths()
    for cam in cfg.extra_cameras(32):
        az, _, _ = _azimuth_elevation(cam)
        gap = min(min(abs(az - v) % 360.0, 360.0 - abs(az - v) % 360.0) for v in view_az)
        assert gap > 1.0, (az, view_az)


def test_training_steps_lower_the_loss(trained):
    tr, _, before, after = trained
    assert tr.step == TRAIN_STEPS
    assert after < 0.9 * before, (before, after)
    # the loss covers the extra cameras too: with them out of it, it is another number
    batch = tr.batch_for_step(0)
    with torch.no_grad():
        a = tr.alphas_cumprod[batch["t"]].view(-1, 1, 1, 1, 1)
        x_t = a.sqrt() * batch["x0"] + (1 - a).sqrt() * batch["noise"]
        g = tr.teacher.gaussians(x_t, batch["t"], tr.teacher.condition(batch["cond_image"]))
        rgb, _ = tr.teacher.render(g, tr.all_viewmats.expand(2, -1, -1, -1), tr.all_Ks.expand(2, -1, -1, -1))
        want = torch.nn.functional.mse_loss(rgb * 2 - 1, torch.cat([batch["x0"], batch["extra_x0"]], 1))
    assert float(want) == pytest.approx(after, rel=1e-5, abs=1e-7)


def test_export_opens_as_a_gaussians_teacher(trained, tmp_path):
    tr = trained[0]
    out = tr.export(tmp_path / "teacher")
    t = load_teacher_folder(out)
    assert isinstance(t, GaussianLiftTeacher) and t.config == tr.teacher.config
    assert json.loads((out / "training.json").read_text())["steps"] == TRAIN_STEPS
    names = [n for n, p in tr.teacher.named_parameters() if p.requires_grad]
    ema = dict(zip(names, tr.ema))
    theirs = dict(t.named_parameters())
    assert set(theirs) == set(ema)
    for n in names:  # the EMA in fp16, loaded into fp32
        assert theirs[n].dtype == torch.float32
        torch.testing.assert_close(theirs[n], ema[n].half().float(), atol=0, rtol=0)
    # the EMA is not the raw weights (the export really wrote the EMA)
    assert any((ema[n] - p.detach()).abs().max() > 1e-6 for n, p in tr.teacher.named_parameters() if n in ema)


def test_checkpoint_resumes_the_same_state(trained, tmp_path):
    tr, batch, _, after = trained
    tr.save_checkpoint(tmp_path / "run")
    fresh = TeacherTrainer(tr.cfg, "cpu")
    assert fresh.step == 0
    with torch.no_grad():
        assert float(fresh.loss(batch)) != pytest.approx(after, rel=1e-3)  # a fresh model is elsewhere
    assert fresh.load_checkpoint(tmp_path / "run")
    assert fresh.step == tr.step == TRAIN_STEPS
    with torch.no_grad():
        assert float(fresh.loss(batch)) == float(tr.loss(batch))
    for e, f in zip(tr.ema, fresh.ema):
        assert torch.equal(e, f)


# ---- 6. distillation from a gaussians teacher ------------------------------------------------------------------

def _distill_config(*overrides):
    from dd3g_distill.train import load_distill_config

    # the tiny preset as it is (the teacher's PEPD), not the 16x16 variant of the tiny distill config
    return load_distill_config(CONFIG, ["model=tiny", "model_overrides={}", *overrides])


def test_student_starts_as_the_teachers_first_step():
    from dd3g_distill.train import GAUSSIAN_KEYS, build_model

    # a teacher seed other than build_model's, so that only the loading can make them equal
    teacher = GaussianLiftTeacher.from_pepd_config(PEPDConfig.preset("tiny"), seed=5).eval()
    student, info = build_model(_distill_config("train.init_from_teacher=true"), teacher, seed=0)
    assert info["phase2_loaded"] > 0 and info["skipped"] == 0
    assert info["loaded"] == len(teacher.denoiser.state_dict())
    plain, _ = build_model(_distill_config("train.init_from_teacher=false"), teacher, seed=0)
    student.eval()
    plain.eval()
    g = torch.Generator().manual_seed(6)
    image, noise = torch.rand(1, 3, 32, 32, generator=g), torch.randn(1, *teacher.sample_shape, generator=g)
    vm = teacher.viewmats.unsqueeze(0)
    with torch.no_grad():
        got = student(image, noise, vm)
        want = teacher.gaussians(noise, teacher.num_train_timesteps - 1, teacher.condition(image), vm)
        other = plain(image, noise, vm)
    for k in GAUSSIAN_KEYS:
        assert got[k].shape == want[k].shape, k
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=0, msg=lambda m: f"{k}: {m}")
    assert (other["means"] - want["means"]).abs().max() > 1e-4  # without the loading it is another model


def test_sds_with_the_gaussians_teacher(gl_teacher):
    """sds_terms converts the x0 prediction to epsilon: finite surrogate, and its gradient on the views is
    2 g / numel with g = (1 - a)(to_epsilon(denoise(x_t)) - eps); nothing flows into the teacher."""
    from dd3g_distill.losses import sds_terms

    t = gl_teacher
    g = torch.Generator().manual_seed(7)
    views = torch.rand(1, *t.sample_shape, generator=g).requires_grad_(True)
    cond = t.condition(torch.rand(1, 3, 32, 32, generator=g))
    eps = torch.randn(1, *t.sample_shape, generator=g)
    ts = torch.tensor([300])
    vm = t.viewmats.unsqueeze(0)
    ab = t.scheduler.alphas_cumprod
    s = sds_terms(views, t, cond, vm, ts, eps, ab)
    assert torch.isfinite(s["sds"]) and torch.isfinite(s["sds_grad_rms"]) and s["sds_grad_rms"] > 0
    s["sds"].backward()
    assert views.grad is not None and torch.isfinite(views.grad).all() and views.grad.abs().max() > 0
    assert all(p.grad is None for p in t.parameters())
    a = ab[ts].float().view(-1, 1, 1, 1, 1)
    x_t = a.sqrt() * (views.detach() * 2 - 1) + (1 - a).sqrt() * eps
    with torch.no_grad():
        eps_hat = t.to_epsilon(t.denoise(x_t, ts, cond, vm), x_t, ts)
    grad = (1 - a) * (eps_hat - eps)
    torch.testing.assert_close(views.grad, 2 * grad / grad.numel(), atol=1e-9, rtol=1e-4)
