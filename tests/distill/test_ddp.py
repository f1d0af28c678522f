"""Issue #7, CPU part: `torchrun --nproc-per-node 2` (gloo) trains the tiny config and matches the
single-process loss curve at the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill_helpers import CONFIG, ROOT, tiny_setup  # noqa: E402,F401


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_match_one_process(tmp_path_factory, tmp_path):
    from dd3g_distill.train import load_distill_config, read_metrics, train

    torch.set_num_threads(1)
    tdir, ddir = tiny_setup(tmp_path_factory)
    common = [f"teacher={tdir}", f"data={ddir}", "train.steps=3", "train.checkpoint_every_steps=0"]
    # both loss terms on: the SDS draws are keyed per sample, so the split over ranks does not change them
    single = load_distill_config(CONFIG, common + [f"out={tmp_path / 'single'}"])
    train(single, progress=False)
    ref = read_metrics(single.out)

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
           "-m", "dd3g_distill.cli", "distill", "--config", str(CONFIG), "--stage", "train", "--no-progress"]
    for o in common + [f"out={out}"]:
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world"] == 2 and summary["finished"]
    got = read_metrics(out)
    assert [r["step"] for r in got] == [r["step"] for r in ref] == [1, 2, 3]
    for a, b in zip(ref, got):
        for k in ("total", "mse", "ssim", "mask", "sds", "grad_norm"):
            # the same global batch, split 2 + 2: equal up to float reduction order
            assert b[k] == pytest.approx(a[k], rel=2e-4, abs=1e-6), (a["step"], k, a[k], b[k])
    # rank 0 alone wrote the run folder; both ranks ended with the same weights (DDP keeps them in sync)
    assert (out / "final" / "model.safetensors").is_file()
