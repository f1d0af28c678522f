"""The teacher's evaluation script (dd3g_distill.eval_teacher) end to end on the random tiny teacher (CPU),
with the sample scores over several noises checked against samples drawn here."""
from __future__ import annotations

import json
import math

import pytest
import torch

from distill_helpers import tiny_setup


def test_eval_teacher_writes_scores_and_sample_scores(tmp_path_factory, tmp_path, capsys):
    from dd3g_distill.eval_teacher import ground_truth, main, sample_teacher
    from dd3g_distill.evaluate import SAMPLE_SEED_STRIDE
    from dd3g_distill.teacher import load_teacher_folder

    torch.set_num_threads(1)
    tdir, _ = tiny_setup(tmp_path_factory)
    args = ["--teacher", str(tdir), "--count", "2", "--steps", "2", "--device", "cpu", "--grid-rows", "2"]
    assert main(args + ["--samples", "2", "--json", str(tmp_path / "k2.json"), "--grid", str(tmp_path / "g.png")]) == 0
    assert main(args + ["--json", str(tmp_path / "k1.json")]) == 0
    assert "sample scores" in capsys.readouterr().out
    k2, k1 = (json.loads((tmp_path / f).read_text()) for f in ("k2.json", "k1.json"))
    assert k2["samples"] == 2 and (tmp_path / "g.png").is_file()
    t2, t1 = k2["results"]["teacher_guidance_1"], k1["results"]["teacher_guidance_1"]
    assert "sample_scores" not in t1
    assert t2["psnr_novel_views"] == t1["psnr_novel_views"]  # the first noise is the usual run
    s = t2["sample_scores"]
    assert s["energy"] == pytest.approx(s["error"] - s["spread"] / 2, abs=1e-9)
    # the spread by hand: the same teacher, the second noise of every object is seed k + SAMPLE_SEED_STRIDE
    teacher = load_teacher_folder(tdir, "cpu")
    cond = ground_truth(2, teacher.config.resolution, teacher, "test", 2)["views"][:, 0]
    x0 = sample_teacher(teacher, cond, [0, 1], 2, 1.0)
    x1 = sample_teacher(teacher, cond, [SAMPLE_SEED_STRIDE, 1 + SAMPLE_SEED_STRIDE], 2, 1.0)
    spread = ((x0[:, 1:].double() - x1[:, 1:].double()) ** 2).flatten(1).mean(1).sqrt().mean()
    assert s["spread"] == pytest.approx(float(spread), rel=1e-4) and s["spread"] > 0
    # baselines are deterministic: no spread, energy = error, calibration undefined (null in strict JSON)
    for name in ("baseline_white", "baseline_copy_input"):
        b = k2["results"][name]["sample_scores"]
        assert b["spread"] == 0 and b["energy"] == b["error"] > 0 and b["calibration"] is None
        assert math.isfinite(b["mean_psnr"])


def test_eval_teacher_rejects_bad_samples(tmp_path_factory, capsys):
    from dd3g_distill.eval_teacher import main

    tdir, _ = tiny_setup(tmp_path_factory)
    assert main(["--teacher", str(tdir), "--samples", "0", "--device", "cpu"]) == 2
    assert "--samples must be >= 1" in capsys.readouterr().err
