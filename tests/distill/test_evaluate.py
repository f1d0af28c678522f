"""Evaluation: metric functions against hand-computed values, the training SSIM against a loop twin, and
`dd3g evaluate` end to end on a tiny checkpoint (CPU)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from distill_helpers import CONFIG, ROOT, ssim_loops, tiny_setup  # noqa: E402,F401


# ---- metrics against hand-computed values ----------------------------------------------------------------

def test_psnr_iou_and_aggregation_by_hand():
    from dd3g_distill.evaluate import aggregate, mean_finite, psnr_from_mse
    from dd3g_distill.metrics import iou, psnr

    a = torch.full((2, 3, 4, 4), 0.5)
    b = a.clone()
    b[0] += 0.1  # MSE 0.01 -> 20 dB
    b[1, :, :2] += 0.2  # half the pixels off by 0.2: MSE 0.02 -> 10 log10(50) = 16.9897 dB
    torch.testing.assert_close(psnr(b, a), torch.tensor([20.0, 10 * math.log10(50)]), rtol=1e-5, atol=1e-4)
    assert psnr_from_mse(0.01) == pytest.approx(20.0) and psnr_from_mse(0.0) == math.inf
    m1 = torch.zeros(4, 4, dtype=torch.bool)
    m2 = m1.clone()
    m1[:2, :2] = True  # 4 pixels
    m2[1:3, 1:3] = True  # 4 pixels, 1 shared -> 1 / 7
    assert iou(m1, m2).item() == pytest.approx(1 / 7)
    assert iou(m1, m1).item() == 1.0 and iou(torch.zeros_like(m1), torch.zeros_like(m1)).item() == 1.0
    assert mean_finite([20.0, math.inf, float("nan"), 10.0]) == 15.0
    assert math.isnan(mean_finite([math.inf]))
    # calibration ratios (infinite for a model that ignores its noise) by their median, the rest by mean_finite
    assert aggregate({"a": [1.0, 3.0, math.inf], "novel_calibration": [1.0, math.inf, 2.0], "b": []}) == \
        {"a": 2.0, "novel_calibration": 2.0}


def test_training_ssim_matches_its_loop_twin_and_the_metric():
    from dd3g_distill.losses import ssim
    from dd3g_distill.metrics import ssim as ssim_metric

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 3, 14, 14)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
    got = ssim(torch.from_numpy(x), torch.from_numpy(y), window=11)
    ref = [ssim_loops(x[i].astype(np.float64), y[i].astype(np.float64), 11) for i in range(2)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-5)  # float32 sums of 121 terms
    np.testing.assert_allclose(ssim_metric(torch.from_numpy(x), torch.from_numpy(y)).numpy(), ref, rtol=1e-6)
    assert ssim(torch.from_numpy(x), torch.from_numpy(x)).numpy() == pytest.approx([1.0, 1.0], abs=1e-6)
    # small images use a smaller (odd) window, still against the twin
    xs, ys = x[:1, :, :6, :6], y[:1, :, :6, :6]
    np.testing.assert_allclose(ssim(torch.from_numpy(xs), torch.from_numpy(ys)).numpy(),
                               [ssim_loops(xs[0].astype(np.float64), ys[0].astype(np.float64), 5)], rtol=1e-4)


def test_teacher_mask_by_hand():
    from dd3g_distill.losses import teacher_mask

    img = torch.ones(1, 3, 2, 2)
    img[0, :, 0, 0] = torch.tensor([0.2, 0.9, 0.3])  # object
    img[0, :, 0, 1] = 0.99  # white within the tolerance: background
    img[0, 2, 1, 1] = 0.9  # one channel off by 0.1: object
    assert teacher_mask(img, 0.04)[0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_novel_cameras_avoid_the_teacher_views():
    from dd3g_distill.evaluate import EvalConfig, novel_cameras
    from dd3g_sdk.cameras import ViewSetConfig

    vs = ViewSetConfig()
    cams, vm, K = novel_cameras(EvalConfig(), vs, 32)
    teacher = np.stack([c.world_to_cam for c in vs.cameras(32, 32)])
    assert len(cams) == 16
    for m in vm:  # no novel camera coincides with a teacher camera
        assert np.abs(teacher - m[None]).reshape(4, -1).max(1).min() > 0.05
    # all on the orbit radius, looking at the origin
    for c in cams:
        assert np.linalg.norm(c.position) == pytest.approx(vs.radius, rel=1e-6)


# ---- end to end --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from dd3g_distill.train import load_distill_config, train

    torch.set_num_threads(1)
    tdir, ddir = tiny_setup(tmp_path_factory)
    out = tmp_path_factory.mktemp("eval-run")
    cfg = load_distill_config(CONFIG, [f"teacher={tdir}", f"data={ddir}", f"out={out}", "train.steps=2"])
    train(cfg, progress=False)
    return cfg, tdir, out


def test_dd3g_evaluate_prints_and_writes_json(trained, tmp_path, capsys):
    from dd3g_distill.cli import add_evaluate_arguments, run_evaluate
    import argparse

    cfg, tdir, run = trained
    p = argparse.ArgumentParser()
    add_evaluate_arguments(p)
    args = p.parse_args([str(run), "--json", str(tmp_path / "e.json"), "--picture", str(tmp_path / "t.png"),
                         "--no-progress"])
    assert run_evaluate(args) == 0
    printed = capsys.readouterr().out
    assert "| model |" in printed and "PSNR novel" in printed
    res = json.loads((tmp_path / "e.json").read_text())
    m = res["metrics"]
    assert res["num_objects"] == cfg.eval.num_objects and res["checkpoint"].endswith("final")
    for k in ("novel_psnr", "novel_ssim", "novel_iou", "student_vs_teacher_psnr", "student_vs_gt_teacher_views_psnr",
              "teacher_vs_gt_psnr", "gaussian_depth_error", "gaussian_depth_corr"):
        assert math.isfinite(m[k]), k
    assert 0 < m["gaussian_depth_error"] < 2 and -1 <= m["gaussian_depth_corr"] <= 1
    assert 0 <= m["novel_iou"] <= 1 and -1 <= m["novel_ssim"] <= 1 and m["novel_psnr"] > 0
    assert len(res["per_object"]["novel_psnr"]) == cfg.eval.num_objects
    assert res["inference"]["median_ms"] > 0 and res["environment"]["device"] == "cpu"
    from PIL import Image

    im = Image.open(tmp_path / "t.png")
    assert im.size == (9 * 96, 2 * 96)  # input + 8 views; a prediction row and a ground-truth row


def test_depth_agreement_against_hand_values():
    import torch

    from dd3g_distill.evaluate import depth_agreement

    gt = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    err, corr = depth_agreement(torch.tensor([[9.0, 1.5], [2.5, 3.5]]), gt)  # off-object pixel ignored
    assert abs(err - 0.5) < 1e-12 and abs(corr - 1.0) < 1e-12
    err, corr = depth_agreement(torch.tensor([[0.0, 3.0], [2.0, 1.0]]), gt)  # reversed order: corr -1
    assert abs(err - 4 / 3) < 1e-12 and abs(corr + 1.0) < 1e-12
    assert all(math.isnan(x) for x in depth_agreement(torch.ones(2, 2), torch.zeros(2, 2)))


def test_other_views_share_against_hand_values():
    import torch

    from dd3g_distill.evaluate import other_views_share

    op = torch.tensor([[0.4, 0.4, 0.1, 0.1, 0.0, 0.0],   # 3 views of 2 Gaussians: 0.8 / 0.2 / 0.0
                       [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])  # even: 2/3 outside view 0
    share = other_views_share(op, 3)
    assert torch.allclose(share, torch.tensor([0.2, 2 / 3]), atol=1e-7)
    assert other_views_share(torch.zeros(1, 4), 2).item() == 0.0  # all transparent: 0, not NaN


def test_evaluate_rejects_a_non_checkpoint(tmp_path):
    from dd3g_distill.evaluate import resolve_checkpoint
    from dd3g_sdk.errors import InputError

    with pytest.raises(InputError, match="not a PEPD checkpoint"):
        resolve_checkpoint(tmp_path)


def test_sample_scores_over_k_noises_match_renders_by_hand(trained):
    """eval.samples = 3: the j-th noise of object k is draw_noise(seed_offset + k + j * SAMPLE_SEED_STRIDE), the
    first sample is the usual evaluation (its novel PSNR unchanged), and each object's error / spread are the RMS
    distances of those three renders, recomputed here from the model and the ground truth."""
    from dataclasses import replace

    from dd3g_sdk.model import PEPD
    from dd3g_sdk.noise import draw_noise
    from dd3g_distill.evaluate import SAMPLE_SEED_STRIDE, EvalSet, evaluate_model, format_table, resolve_checkpoint
    from dd3g_distill.train import render_batch

    cfg, _, run = trained
    model = PEPD.from_pretrained(resolve_checkpoint(run))
    mc = model.config
    ecfg = replace(cfg.eval, teacher_gap=False, num_objects=2, batch_size=2, samples=3, timing_runs=1)
    es = EvalSet(ecfg, mc.views, mc.image_size, model.noise_shape, None, "cpu", progress=False)
    res = evaluate_model(model, es)
    one = evaluate_model(model, EvalSet(replace(ecfg, samples=1), mc.views, mc.image_size, model.noise_shape, None,
                                        "cpu", progress=False))
    assert res["per_object"]["novel_psnr"] == one["per_object"]["novel_psnr"]
    assert "novel_energy" not in one["metrics"]
    b = es.batches[0]
    vm, K = torch.from_numpy(es.vm_n), torch.from_numpy(es.K_n)
    R = ecfg.render_size
    for i, k in enumerate(b["index"]):
        renders = []
        for j in range(3):
            noise = torch.from_numpy(draw_noise(ecfg.seed_offset + k + j * SAMPLE_SEED_STRIDE, model.noise_shape))
            with torch.no_grad():
                g = model(b["image"][i:i + 1], noise[None])
                renders.append(render_batch(g, vm[None], K[None], R, R)[0][0].double())
        gt = b["gt_novel"][i].double()
        rms = lambda a, c: float(((a - c) ** 2).mean().sqrt())  # noqa: E731
        error = sum(rms(r, gt) for r in renders) / 3
        spread = sum(rms(renders[p], renders[q]) for p in range(3) for q in range(3) if p != q) / 6
        assert res["per_object"]["novel_error"][i] == pytest.approx(error, abs=2e-4)
        assert res["per_object"]["novel_spread"][i] == pytest.approx(spread, abs=2e-4)
        assert spread > 0  # PEPD reads its noise: other seeds, other Gaussians
        assert res["per_object"]["novel_energy"][i] == pytest.approx(error - spread / 2, abs=2e-4)
    m = res["metrics"]
    assert m["novel_calibration"] > 0 and m["novel_sample_psnr"] > 0 and m["novel_mean_psnr"] > 0
    assert "energy score novel" in format_table({"k3": res}) and "energy" not in format_table({"k1": one})


def test_turntable_picture_with_several_seeds_of_one_object(trained, tmp_path):
    """indices [0, 0, 0] with three seeds: three sample rows, then one ground-truth row; the first seed's row and
    the ground truth are those of the plain one-object picture, and other seeds draw other samples."""
    from PIL import Image

    from dd3g_sdk.model import PEPD
    from dd3g_distill.evaluate import resolve_checkpoint, turntable_picture

    _, _, run = trained
    model = PEPD.from_pretrained(resolve_checkpoint(run))
    kw = dict(views=4, size=32, input_render_size=64)
    one = np.asarray(Image.open(turntable_picture(model, "test", [0], tmp_path / "one.png", **kw)))
    three = np.asarray(Image.open(turntable_picture(model, "test", [0, 0, 0], tmp_path / "three.png",
                                                    seeds=[0, 7, 11], **kw)))
    assert one.shape == (2 * 32, 5 * 32, 3) and three.shape == (4 * 32, 5 * 32, 3)
    np.testing.assert_array_equal(three[:32], one[:32])  # seed 0 = the default seed of object 0
    np.testing.assert_array_equal(three[96:], one[32:])  # one ground-truth row, after the samples
    assert np.abs(three[32:64, 32:].astype(int) - three[:32, 32:].astype(int)).max() > 0
    with pytest.raises(ValueError, match="seeds"):
        turntable_picture(model, "test", [0, 1], tmp_path / "bad.png", seeds=[0], **kw)
