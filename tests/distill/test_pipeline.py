"""The one-GPU ablation driver (dd3g_distill.pipeline) on CPU with the tiny config: a run through every stage, the
step budget kept in plan.json across calls, and early failures for bad arguments."""
from __future__ import annotations

import json

import pytest

from distill_helpers import CONFIG


def _run(tmp_path, *extra):
    from dd3g_distill.pipeline import main

    return main(["--config", str(CONFIG), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                 "--random-teacher", "--calib-steps", "2", "--eval-reserve", "30", "--deadline", "400", *extra])


def test_pipeline_runs_every_stage_and_keeps_its_plan(tmp_path):
    args = ("--models", "gt_only,gt_only_c", "--min-steps", "1", "--max-steps", "2", "--total-train-seconds", "1")
    assert _run(tmp_path, *args) == 0
    plan = json.loads((tmp_path / "work" / "plan.json").read_text())
    assert plan["steps"] in (1, 2) and plan["key"]["models"] == ["gt_only", "gt_only_c"]
    assert set(plan["step_s"]) == {"gt_only", "gt_only_c"}  # sized by the calibration
    summary = json.loads((tmp_path / "work" / "results" / "distill_ablation.json").read_text())
    assert set(summary["models"]) == {"gt_only", "gt_only_c"}
    # gt_only reads the quadruples' extra ground-truth cameras, gt_only_c does not
    assert "train.extra_views=2" in summary["ablations"]["gt_only"]
    assert not any(o.startswith("train.extra_views") for o in summary["ablations"]["gt_only_c"])
    for m in ("gt_only", "gt_only_c"):
        assert summary["models"][m]["training"]["steps_done"] == plan["steps"]
    assert (tmp_path / "out" / "distill_results.tar").is_file()
    assert (tmp_path / "out" / "pepd-small.config.json").is_file()
    # every model's fp16 weights come back too, each a loadable PEPD folder
    import io
    import tarfile

    from dd3g_sdk.model import PEPD

    parts = sorted((tmp_path / "out").glob("models_fp16.tar.part*"))
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts))) as tar:
        tar.extractall(tmp_path / "fp16", filter="data")
    for m in ("gt_only", "gt_only_c"):
        assert PEPD.from_pretrained(tmp_path / "fp16" / m).num_gaussians > 0
    # a later call of the same command reads the plan (no calibration, the plan's data set) and finds the runs done
    (tmp_path / "work" / "calib").rename(tmp_path / "work" / "calib_first")
    assert _run(tmp_path, *args) == 0
    assert not (tmp_path / "work" / "calib").exists()
    assert json.loads((tmp_path / "work" / "plan.json").read_text()) == plan
    # the same work folder cannot be reused for another set of models: the plan would not match
    with pytest.raises(SystemExit, match="belongs to another run"):
        _run(tmp_path, "--models", "gt_only", "--steps", "2", "--total-train-seconds", "60")


def test_unknown_model_fails_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        _run(tmp_path, "--models", "gt_only,nope")
    assert not (tmp_path / "work").exists()


def _result(psnr: list[float], corr: float, iou: float = 0.5) -> dict:
    return {"metrics": {"novel_psnr": sum(psnr) / len(psnr), "gaussian_depth_corr": corr, "novel_iou": iou},
            "per_object": {"novel_psnr": psnr}}


def test_default_choice_prefers_geometry_only_within_noise():
    from dd3g_distill.pipeline import pick_default

    base = [15.0, 17.0, 16.0, 18.0, 14.0, 16.5, 15.5, 17.5]
    noisy = [b + d for b, d in zip(base, [0.3, -0.2, 0.1, -0.3, 0.2, -0.1, 0.25, -0.2])]  # mean +0.006, sem ~0.08
    far = [b - 1.0 + d for b, d in zip(base, [0.1, -0.1] * 4)]  # 1 dB behind
    # a statistical tie goes to the model whose Gaussians sit at the right depth
    best, rec = pick_default({"a": _result(noisy, corr=0.01), "b": _result(base, corr=0.6)})
    assert rec["leader_by_psnr"] == "a" and best == "b" and set(rec["tied"]) == {"a", "b"}
    assert rec["gaps_to_leader"]["b"]["psnr_gap"] == pytest.approx(sum(noisy) / 8 - sum(base) / 8, abs=1e-4)
    # a clear lead in PSNR is not given away for geometry
    best, rec = pick_default({"a": _result(base, corr=0.01), "b": _result(far, corr=0.9)})
    assert best == "a" and rec["tied"] == ["a"]
    # an undefined depth correlation (NaN) ranks last among tied models
    best, _ = pick_default({"a": _result(noisy, corr=float("nan")), "b": _result(base, corr=0.0)})
    assert best == "b"


def test_every_ablation_is_a_valid_config_and_reads_extra_views_where_it_should():
    """Each model's overrides build a DistillConfig (a typo in a key is an error there); the ground-truth models
    except gt_only_c read the extra views, the distilled ones cannot (the teacher has none)."""
    from dd3g_distill.pipeline import ABLATIONS, ablation_overrides
    from dd3g_distill.train import load_distill_config

    for name in ABLATIONS:
        cfg = load_distill_config(CONFIG, ablation_overrides(name, 2))
        assert cfg.train.extra_views == (2 if name.startswith("gt_") and name != "gt_only_c" else 0), name
        assert (cfg.train.target == "gt") == name.startswith("gt_"), name
    own = load_distill_config(CONFIG, ablation_overrides("gt_depth_own", 0)).loss
    assert own.w_depth == 1.0 and own.w_own_view == 1.0


def test_ground_truth_only_store_refuses_distilled_models_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="no_iv read the teacher's outputs"):
        _run(tmp_path, "--models", "gt_only,no_iv", "--set", "quadruples.teacher_outputs=false")
    assert not (tmp_path / "work").exists()
