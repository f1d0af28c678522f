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
    rc = _run(tmp_path, "--models", "gt_only,gt_only_c", "--steps", "2", "--total-train-seconds", "60")
    assert rc == 0
    plan = json.loads((tmp_path / "work" / "plan.json").read_text())
    assert plan["steps"] == 2 and plan["key"]["models"] == ["gt_only", "gt_only_c"]
    summary = json.loads((tmp_path / "work" / "results" / "distill_ablation.json").read_text())
    assert set(summary["models"]) == {"gt_only", "gt_only_c"}
    # gt_only reads the quadruples' extra ground-truth cameras, gt_only_c does not
    assert "train.extra_views=2" in summary["ablations"]["gt_only"]
    assert not any(o.startswith("train.extra_views") for o in summary["ablations"]["gt_only_c"])
    for m in ("gt_only", "gt_only_c"):
        assert summary["models"][m]["training"]["steps_done"] == 2
    assert (tmp_path / "out" / "distill_results.tar").is_file()
    assert (tmp_path / "out" / "pepd-small.config.json").is_file()
    # the same work folder cannot be reused for another set of models: the plan would not match
    with pytest.raises(SystemExit, match="belongs to another run"):
        _run(tmp_path, "--models", "gt_only", "--steps", "2", "--total-train-seconds", "60")


def test_unknown_model_fails_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        _run(tmp_path, "--models", "gt_only,nope")
    assert not (tmp_path / "work").exists()
