"""Issue #7: DD3G distillation on K processes (torchrun + DDP/NCCL): throughput, loss match, kill-a-rank resume.

    # GPU host with 2 GPUs (one device call):
    NCCL_NVLS_ENABLE=0 python distill/scripts/multi_gpu.py --config configs/distill_small.json --nproc 2 \
        --json $OUT/distill_multi_gpu.json
    # CPU check of the same script (gloo): a tiny teacher folder from `python -m dd3g_distill.pipeline ...
    #   --random-teacher` or the tests
    python distill/scripts/multi_gpu.py --config configs/distill_tiny.json --set teacher=/tmp/work/teacher \
        --nproc 2 --objects 16 --steps 12 --batch 4 --kill-at 6 --ckpt-every 3 --json /tmp/mg.json

What it does, in order (every process is started by torchrun; nothing here schedules work itself):
1. quadruple generation of the same objects with 1 and with K processes (shard i on rank i % K): wall
   time, objects/s, and whether the two data sets are byte-identical (manifest checksums);
2. PEPD training for a fixed number of steps at the same global batch with 1 and with K processes:
   samples/s (median step time after the first steps) and the scaling efficiency, and the per-step
   loss of the two runs side by side;
3. the same K-process run again, with rank 1 killed (SIGKILL) once step `--kill-at` is logged: torchrun
   stops the job (no elastic restarts); the identical command is started again, resumes from the last
   checkpoint and finishes; its losses are compared with the uninterrupted K-process run.
Writes one JSON (host, GPUs, versions, date, all numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def torchrun(nproc: int, args: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", str(nproc), "--max-restarts", "0", "-m", "dd3g_distill.cli", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NCCL_NVLS_ENABLE": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def distill_args(config: Path, stage: str, overrides: list[str]) -> list[str]:
    out = ["distill", "--config", str(config), "--stage", stage, "--no-progress"]
    for o in overrides:
        out += ["--set", o]
    return out


def run_to_end(nproc: int, args: list[str], log: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    rc = torchrun(nproc, args, log).wait()
    return rc, time.perf_counter() - t0


def metrics(run: Path) -> dict[int, dict]:
    rows = {}
    p = run / "metrics.jsonl"
    if p.is_file():
        for line in p.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[int(r["step"])] = r
    return rows


def worker_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun worker `rank` (a child of `parent` whose environment says RANK=rank)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (d / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(d.name)
    return None


def loss_comparison(a: dict[int, dict], b: dict[int, dict], key: str = "total") -> dict:
    steps = sorted(set(a) & set(b))
    diffs = [abs(a[s][key] - b[s][key]) for s in steps]
    rel = [d / max(abs(a[s][key]), 1e-12) for d, s in zip(diffs, steps)]
    # "within noise": compare the gap with the step-to-step spread of the reference curve itself
    spread = statistics.pstdev([a[s][key] - a[p][key] for p, s in zip(steps, steps[1:])]) if len(steps) > 2 else 0.0
    return {"steps_compared": len(steps), "first_step": steps[0] if steps else None,
            "max_abs_diff": max(diffs, default=0.0), "mean_abs_diff": statistics.fmean(diffs) if diffs else 0.0,
            "max_rel_diff": max(rel, default=0.0), "step_to_step_spread_of_reference": spread,
            "first_10_reference": [round(a[s][key], 6) for s in steps[:10]],
            "first_10_other": [round(b[s][key], 6) for s in steps[:10]]}


def throughput(rows: dict[int, dict], batch: int, skip: int) -> dict:
    times = [r["step_s"] for s, r in sorted(rows.items()) if s > skip]
    med = statistics.median(times)
    return {"median_step_s": med, "samples_per_s": batch / med, "steps_timed": len(times)}


def environment(nproc: int) -> dict:
    import torch

    env = {"host": platform.node(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "python": platform.python_version(), "torch": torch.__version__, "nproc": nproc,
           "backend": "nccl" if torch.cuda.is_available() else "gloo"}
    if torch.cuda.is_available():
        env.update(gpu_count=torch.cuda.device_count(),
                   gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                   cuda=torch.version.cuda, nccl=".".join(map(str, torch.cuda.nccl.version())),
                   NCCL_NVLS_ENABLE=os.environ.get("NCCL_NVLS_ENABLE"))
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--objects", type=int, default=512, help="quadruples generated (each way)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32, help="global batch (the same for 1 and K processes)")
    ap.add_argument("--kill-at", type=int, default=70, help="kill rank 1 once this step is logged")
    ap.add_argument("--ckpt-every", type=int, default=40, help="checkpoint every this many steps")
    ap.add_argument("--skip", type=int, default=10, help="steps left out of the timing (warm-up)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dd3g-multi"))
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    k = args.nproc
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"what": "issue #7: torchrun + DDP distillation, 1 vs K processes", "environment": environment(k),
                    "config": str(args.config), "overrides": args.set, "objects": args.objects,
                    "steps": args.steps, "global_batch": args.batch}

    def save():
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")

    # 1. quadruples, 1 and K processes
    quad = {}
    for n in (1, k):
        data = work / f"quad-{n}"
        ov = [*args.set, f"data={data}", f"quadruples.num_objects={args.objects}"]
        rc, wall = run_to_end(n, distill_args(args.config, "quadruples", ov), work / f"quad-{n}.log")
        man = data / "manifest.json"
        quad[n] = {"rc": rc, "wall_s": round(wall, 2), "objects_per_s_wall": round(args.objects / wall, 2)}
        if man.is_file():
            m = json.loads(man.read_text())
            quad[n]["checksums"] = sorted(str(s.get("sha256")) for s in m.get("shards", []))
        print(f"quadruples x{n}: rc {rc}, {wall:.1f} s", flush=True)
    same = quad[1].get("checksums") is not None and quad[1].get("checksums") == quad[k].get("checksums")
    result["quadruples"] = {str(n): {kk: v for kk, v in q.items() if kk != "checksums"} for n, q in quad.items()}
    result["quadruples"]["identical_data"] = same
    save()
    data = work / f"quad-{k}"

    # 2. training, 1 and K processes, same global batch
    def train_args(out: Path, ckpt: int = 0) -> list[str]:
        ov = [*args.set, f"data={data}", f"out={out}", f"train.steps={args.steps}", f"train.batch_size={args.batch}",
              "train.log_every=1", "train.checkpoint_every_s=0", f"train.checkpoint_every_steps={ckpt}",
              "train.tensorboard=false"]
        return distill_args(args.config, "train", ov)

    runs = {}
    for n in (1, k):
        out = work / f"train-{n}"
        rc, wall = run_to_end(n, train_args(out), work / f"train-{n}.log")
        rows = metrics(out)
        runs[n] = rows
        result.setdefault("training", {})[str(n)] = {"rc": rc, "wall_s": round(wall, 2), "steps_logged": len(rows),
                                                     **(throughput(rows, args.batch, args.skip) if rows else {})}
        print(f"train x{n}: rc {rc}, {wall:.1f} s, {len(rows)} steps", flush=True)
        save()
    t1, tk = result["training"]["1"], result["training"][str(k)]
    if "samples_per_s" in t1 and "samples_per_s" in tk:
        result["scaling"] = {"speedup": tk["samples_per_s"] / t1["samples_per_s"],
                             "efficiency": tk["samples_per_s"] / (k * t1["samples_per_s"])}
    result["loss_match_1_vs_k"] = loss_comparison(runs[1], runs[k])
    save()

    # 3. kill rank 1 mid-run, then start the same command again
    out = work / "train-kill"
    cmd = train_args(out, args.ckpt_every)
    p = torchrun(k, cmd, work / "kill-1.log")
    killed = None
    t0 = time.perf_counter()
    while p.poll() is None and time.perf_counter() - t0 < 400:
        if max(metrics(out), default=0) >= args.kill_at:
            pid = worker_pid(p.pid, 1)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = {"pid": pid, "at_logged_step": max(metrics(out))}
                break
        time.sleep(0.2)
    rc1 = p.wait(timeout=300)
    latest = out / "checkpoints" / "latest.json"
    resume_from = json.loads(latest.read_text())["step"] if latest.is_file() else None
    rc2, wall2 = run_to_end(k, cmd, work / "kill-2.log")
    rows = metrics(out)
    resumed = [s for s in rows if resume_from is not None and s > resume_from]
    result["kill_and_resume"] = {
        "killed": killed, "first_run_rc": rc1, "checkpoint_step_after_kill": resume_from,
        "second_run_rc": rc2, "second_run_wall_s": round(wall2, 2), "final_step": max(rows, default=None),
        "finished": (out / "summary.json").is_file() and json.loads((out / "summary.json").read_text()).get("finished"),
        "resumed_vs_uninterrupted": loss_comparison(runs[k], {s: rows[s] for s in resumed}),
        "first_run_log_tail": (work / "kill-1.log").read_text()[-1500:]}
    save()
    print(json.dumps({kk: v for kk, v in result.items() if kk not in ("kill_and_resume",)}, indent=1)[:4000])
    print(json.dumps({kk: v for kk, v in result["kill_and_resume"].items() if kk != "first_run_log_tail"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
