"""Quadruple generation: determinism, sharding, resume, integrity checks (tiny teacher, 16x16, CPU)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dd3g_sdk.errors import InputError
from dd3g_sdk.noise import draw_noise

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "distill_tiny.json"


def _tiny_teacher():
    from dd3g_distill.teacher import DiffusersMVTeacher
    from dd3g_distill.train import load_distill_config, model_config

    cfg = load_distill_config(CONFIG)
    return DiffusersMVTeacher.from_unet_config(model_config(cfg).unet, seed=0).eval(), cfg


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from dd3g_distill.quadruples import generate_quadruples

    torch.set_num_threads(1)
    teacher, cfg = _tiny_teacher()
    root = tmp_path_factory.mktemp("quad")
    res = generate_quadruples(cfg.quadruples, root / "a", teacher, progress=False)
    return teacher, cfg, root, res


def _shas(d: Path) -> dict:
    return {s["file"]: s["sha256"] for s in json.loads((d / "manifest.json").read_text())["shards"]}


def test_contents_match_their_definition(world):
    from dd3g_distill.quadruples import QuadrupleSet, render_input, teacher_cameras, to_u8

    teacher, cfg, root, res = world
    q = cfg.quadruples
    assert res["done"] == [0, 1] and res["manifest"]
    data = QuadrupleSet.load(root / "a")
    assert len(data) == q.num_objects
    t = data.t
    assert t["index"].tolist() == list(range(q.num_objects))
    # N: the SDK's seeded noise; C: the teacher's cameras
    for k in (0, 5):
        np.testing.assert_array_equal(t["noise"][k].numpy(), draw_noise(q.seed_offset + k, teacher.sample_shape))
    vm, K = teacher_cameras(teacher)
    np.testing.assert_array_equal(t["viewmats"][3].numpy(), vm)
    np.testing.assert_array_equal(t["Ks"][3].numpy(), K)
    # II: the plain view-0 render, the same pixels for PEPD and the teacher; OI: the teacher's ODE from (N, II)
    img = render_input(q.split, [6], q.image_size, q.input_render_size, teacher.views[0])
    np.testing.assert_array_equal(t["image"][6].numpy(), to_u8(img[0]))
    np.testing.assert_array_equal(t["cond_image"][6].numpy(), to_u8(img[0]))
    # PEPD's Gaussians are pixel-aligned with view 0, so its input must be too: the input matches the ground truth
    # at view 0 up to anti-aliasing (input 2x supersampled, ground truth not: 22.8 dB here), far better than the
    # same comparison shifted by one pixel (15.4 dB; format v2's re-framed input scored 12.7 dB at 64 px)
    assert q.image_size == t["gt"].shape[-1]
    img_u, gt0 = t["image"].double() / 255, t["gt"][:, 0].double() / 255
    psnr = lambda a, b: -10 * math.log10(float((a - b).pow(2).mean()))  # noqa: E731
    aligned, shifted = psnr(img_u, gt0), psnr(img_u[..., 1:], gt0[..., :-1])
    assert aligned > 20.0 and aligned > shifted + 5.0, (aligned, shifted)
    ci = t["cond_image"][6:7].float() / 255
    with torch.no_grad():
        oi = teacher.ode(t["noise"][6:7], teacher.condition(ci), steps=q.ode_steps)
    diff = np.abs(to_u8(oi[0].numpy()).astype(int) - t["oi"][6].numpy().astype(int))
    assert diff.max() <= 1  # batch composition may change the last bit of a float, never more than 1/255
    # ground truth: white background outside the coverage, object inside
    gt, m = t["gt"].float() / 255, t["gt_mask"].float() / 255
    assert (gt[m.expand_as(gt) == 0] == 1).all()
    assert 0.02 < m.mean() < 0.8


def test_sharded_generation_is_deterministic(world, tmp_path):
    from dd3g_distill.quadruples import generate_quadruples

    teacher, cfg, root, _ = world
    # the same data again, as two processes would make it: rank 1 first, then rank 0
    r1 = generate_quadruples(cfg.quadruples, tmp_path / "b", teacher, shard=(1, 2), progress=False)
    assert r1["done"] == [1] and r1["manifest"] is None  # shard 0 is missing: no manifest yet
    r0 = generate_quadruples(cfg.quadruples, tmp_path / "b", teacher, shard=(0, 2), progress=False)
    assert r0["done"] == [0] and r0["manifest"]
    assert _shas(tmp_path / "b") == _shas(root / "a")


def test_resume_skips_finished_shards_and_redoes_damaged_ones(world, tmp_path):
    from dd3g_distill.quadruples import QuadrupleSet, generate_quadruples

    teacher, cfg, root, _ = world
    d = tmp_path / "c"
    r = generate_quadruples(cfg.quadruples, d, teacher, progress=False, max_shards=1)  # "interrupted" after one
    assert r["done"] == [0] and not (d / "manifest.json").exists()
    # a time-boxed job publishes its finished prefix
    from dd3g_distill.quadruples import finish_prefix

    cut, manifest = finish_prefix(d, cfg.quadruples, teacher)
    assert cut.num_objects == cfg.quadruples.shard_size and manifest is not None
    assert QuadrupleSet.load(d).t["index"].tolist() == list(range(cfg.quadruples.shard_size))
    r = generate_quadruples(cfg.quadruples, d, teacher, progress=False)
    assert r["skipped"] == [0] and r["done"] == [1]
    assert _shas(d) == _shas(root / "a")
    # a damaged shard fails the checksum when read, and is regenerated by the next run
    p = d / "shard_00001.safetensors"
    blob = bytearray(p.read_bytes())
    blob[-10] ^= 0xFF
    p.write_bytes(bytes(blob))
    with pytest.raises(InputError, match="sha256"):
        QuadrupleSet.load(d)
    r = generate_quadruples(cfg.quadruples, d, teacher, progress=False)
    assert r["skipped"] == [0] and r["done"] == [1]
    assert _shas(d) == _shas(root / "a")
    # another generation config never reuses the old shards
    other = dataclasses.replace(cfg.quadruples, seed_offset=1)
    r = generate_quadruples(other, d, teacher, progress=False, max_shards=0)
    assert r["skipped"] == [] and r["done"] == []


def test_missing_manifest_is_reported_with_the_folder(tmp_path):
    from dd3g_distill.quadruples import QuadrupleSet

    with pytest.raises(InputError, match="manifest.json"):
        QuadrupleSet.load(tmp_path)


def test_extra_views_hold_ground_truth_at_seeded_cameras(world):
    """Extra ground-truth cameras: a pure function of the object, on the teacher's sphere looking at the origin,
    inside the stated elevation range, and the stored renders are the world's renders at those cameras."""
    from dd3g_distill.quadruples import (EXTRA_ELEVATION_DEG, QuadrupleSet, extra_cameras, render_ground_truth,
                                         to_u8)

    teacher, cfg, root, _ = world
    q = cfg.quadruples
    assert q.extra_views == 2
    cam0 = teacher.views[0]
    vm, K = extra_cameras(q.split, 5, q.extra_views, cam0)
    vm2, _ = extra_cameras(q.split, 5, q.extra_views, cam0)
    np.testing.assert_array_equal(vm, vm2)
    assert not np.allclose(vm, extra_cameras(q.split, 6, q.extra_views, cam0)[0])
    r = float(np.linalg.norm(cam0.position))
    for m in extra_cameras(q.split, 3, 64, cam0)[0].astype(np.float64):
        centre = -m[:3, :3].T @ m[:3, 3]
        assert abs(np.linalg.norm(centre) - r) < 1e-4
        origin_cam = m[:3, 3]  # the world origin in camera coordinates: straight ahead
        assert abs(origin_cam[0]) < 1e-4 and abs(origin_cam[1]) < 1e-4 and origin_cam[2] > 0
        el = np.degrees(np.arcsin(centre[1] / r))
        assert EXTRA_ELEVATION_DEG[0] - 1e-3 <= el <= EXTRA_ELEVATION_DEG[1] + 1e-3
    np.testing.assert_allclose(K, np.broadcast_to(cam0.K.astype(np.float32), K.shape))
    t = QuadrupleSet.load(root / "a").t
    assert t["extra_gt"].shape == (q.num_objects, q.extra_views, 3, 16, 16)
    np.testing.assert_array_equal(t["extra_viewmats"][5].numpy(), vm)
    gt, mask, _ = render_ground_truth(q.split, [5], vm, K, 16, q.supersample)
    # rendered in a batch of objects there: the last bit of a float may differ, never more than 1/255
    assert np.abs(t["extra_gt"][5].numpy().astype(int) - to_u8(gt[0]).astype(int)).max() <= 1
    assert np.abs(t["extra_mask"][5].numpy().astype(int) - to_u8(mask[0]).astype(int)).max() <= 1
    assert t["extra_mask"].float().mean() > 0.02  # the object is in view


def test_ground_truth_only_store_skips_the_teacher_and_keeps_everything_else(world, tmp_path):
    """quadruples.teacher_outputs=false: the same tensors as the full store, byte for byte, except `oi`, which is
    not made; its manifest says so, a reader asking for `oi` gets a one-line error, and so does training that
    needs the teacher's outputs, while the ground-truth target trains on it."""
    from dd3g_distill.quadruples import QuadrupleSet, config_hash, generate_quadruples, teacher_identity
    from dd3g_distill.train import load_distill_config, train

    teacher, cfg, root, _ = world
    q = dataclasses.replace(cfg.quadruples, teacher_outputs=False)
    assert config_hash(q, teacher_identity(teacher)) != config_hash(cfg.quadruples, teacher_identity(teacher))
    generate_quadruples(q, tmp_path / "gt", teacher, progress=False)
    full, gt_only = QuadrupleSet.load(root / "a"), QuadrupleSet.load(tmp_path / "gt")
    assert "oi" not in gt_only.t and set(full.t) - set(gt_only.t) == {"oi"}
    for k, v in gt_only.t.items():
        assert torch.equal(v, full.t[k]), k
    with pytest.raises(InputError, match="no teacher outputs"):
        QuadrupleSet.load(tmp_path / "gt", keys=["image", "oi"])
    common = [f"data={tmp_path / 'gt'}", "train.steps=1", "train.tensorboard=false", "loss.implicit=false",
              "train.init_from_teacher=false"]
    with pytest.raises(InputError, match="no teacher outputs"):
        train(load_distill_config(CONFIG, common + [f"out={tmp_path / 'r1'}"]), teacher=teacher, device="cpu",
              progress=False)
    summary = train(load_distill_config(CONFIG, common + [f"out={tmp_path / 'r2'}", "train.target=gt"]),
                    teacher=teacher, device="cpu", progress=False)
    assert summary["step"] == 1
