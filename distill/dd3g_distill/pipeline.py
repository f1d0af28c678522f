"""One GPU step of DD3G distillation, within a deadline: quadruples -> the four ablation models trained
concurrently on one GPU with the same step budget -> evaluation -> pictures -> the default model.

    . .gpu/install.sh && export PYTHONPATH=$PWD/sdk:$PWD/export:$PWD/distill:$PYTHONPATH && \\
        python -m dd3g_distill.pipeline --config configs/distill_small.json --out $OUT --deadline 540

    # CPU smoke run (minutes): the tiny config, a random tiny teacher written first
    python -m dd3g_distill.pipeline --config configs/distill_tiny.json --out /tmp/out --work /tmp/work \\
        --deadline 600 --random-teacher

Models (same data, same number of steps, same batch; trained at the same time as four processes):
    full     explicit supervision + implicit verification, Phase 1 from the teacher (representation alignment)
    no_iv    without implicit verification
    no_ra    without representation alignment (Phase 1 from scratch)
    gt_only  "3D data only": explicit supervision against ground-truth renders, no teacher anywhere; also at the
             quadruples' extra ground-truth cameras when they have some (quadruples.extra_views)
    gt_only_c  the same at the teacher's cameras C only (what gt_only was before extra views; shows their effect)
    gt_depth   gt_only plus the ground-truth depth of the pixel-aligned Gaussians (loss.w_depth = 1)
    gt_own     gt_only plus each view's Gaussians rendered alone at its own camera (loss.w_own_view = 1)
    gt_depth_own  gt_depth and gt_own together
Steps: a short concurrent calibration run measures the slowest model's step time; the real runs get
steps = training time left / that step time (and a wall-clock cap as a safety net, reported if it hits).
With --total-train-seconds T the budget is T / that step time, kept in WORK/plan.json, and training spans
several calls of the same command (checkpoints resume exactly; a call that does not finish exits 3). The
work folder must survive between the calls (on the GPU host: the same warm machine, /tmp is kept).

$OUT receives: distill_results.tar (results JSON, ablation table, pictures, metrics logs, TensorBoard events,
the example pictures, pipeline log), the chosen default model (fp16) split in parts below 16 MiB
(pepd-small.safetensors.partNN + pepd-small.config.json + pepd-small.sha256) and every model's fp16 weights
(models_fp16.tar.partNN + .sha256: one PEPD folder per model): join with `cat`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Sequence

ABLATIONS: dict[str, list[str]] = {
    "full": [],
    "no_iv": ["loss.implicit=false"],
    "no_ra": ["train.init_from_teacher=false"],
    "gt_only": ["train.target=gt", "loss.implicit=false", "train.init_from_teacher=false"],
    "gt_only_c": ["train.target=gt", "loss.implicit=false", "train.init_from_teacher=false"],
    "gt_depth": ["train.target=gt", "loss.implicit=false", "train.init_from_teacher=false", "loss.w_depth=1.0"],
    "gt_own": ["train.target=gt", "loss.implicit=false", "train.init_from_teacher=false", "loss.w_own_view=1.0"],
    "gt_depth_own": ["train.target=gt", "loss.implicit=false", "train.init_from_teacher=false", "loss.w_depth=1.0",
                     "loss.w_own_view=1.0"],
}
DEFAULT_MODELS = ("full", "no_iv", "no_ra", "gt_only")


def ablation_overrides(name: str, extra_views: int) -> list[str]:
    """The --set overrides of one ablation; the ground-truth models except gt_only_c read every extra ground-truth
    view the quadruples hold."""
    if name not in ABLATIONS:
        raise SystemExit(f"pipeline: unknown model {name!r} (one of {', '.join(ABLATIONS)})")
    extra = name.startswith("gt_") and name != "gt_only_c" and extra_views
    return ABLATIONS[name] + ([f"train.extra_views={extra_views}"] if extra else [])
PART_BYTES = 15 * 1024 * 1024


class Clock:
    def __init__(self, deadline: float):
        self.t0 = time.perf_counter()
        self.deadline = deadline
        self.events: list[tuple[str, float]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.deadline - self.elapsed()

    def mark(self, name: str) -> None:
        self.events.append((name, round(self.elapsed(), 1)))
        print(f"[{self.elapsed():7.1f} s] {name}", flush=True)


def launch(name: str, config: Path, overrides: Sequence[str], log: Path, extra: Sequence[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dd3g_distill.cli", "distill", "--config", str(config), "--stage", "train",
           "--no-progress", *extra]
    for o in overrides:
        cmd += ["--set", o]
    f = open(log, "w")
    return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def calibrate(models, args, base, overrides, work: Path, clock: "Clock") -> dict[str, float]:
    """All models at once for `--calib-steps` steps; the median step time of the second half of each, in s."""
    from .train import read_metrics

    procs = {m: launch(m, args.config, args.set + base + overrides[m] + [
        f"out={work / 'calib' / m}", "train.steps=1000000", "train.log_every=1", "train.checkpoint_every_s=0",
        "train.tensorboard=false"], work / f"calib_{m}.log", ["--stop-after", str(args.calib_steps)])
        for m in models}
    rc = wait_all(procs, max(60.0, clock.left() - args.eval_reserve))
    step_s = {}
    for m in models:
        rows = read_metrics(work / "calib" / m)
        tail = [r["step_s"] for r in rows[len(rows) // 2:]]
        if rc[m] != 0 or not tail:
            print((work / f"calib_{m}.log").read_text()[-3000:])
            raise SystemExit(f"pipeline: calibration of {m} failed (rc {rc[m]})")
        step_s[m] = statistics.median(tail)
    return step_s


def wait_all(procs: dict[str, subprocess.Popen], timeout: float) -> dict[str, int]:
    t0 = time.perf_counter()
    rc = {}
    for name, p in procs.items():
        try:
            rc[name] = p.wait(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            p.terminate()  # SIGTERM: the run checkpoints and leaves
            try:
                rc[name] = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                rc[name] = -9
    return rc


def pick_default(results: dict[str, dict], z: float = 2.0) -> tuple[str, dict]:
    """The model to ship, from evaluation results ({model: evaluate_model output}): the highest mean novel-view
    PSNR, except that every model within `z` standard errors of that leader (the paired per-object difference
    over the same test objects) is tied with it, and among tied models the one whose Gaussians' depth correlates
    best with the truth (`gaussian_depth_corr`; then novel IoU) wins. Same pictures within noise, real geometry:
    a 0.01 dB lead (64 objects: standard error ~0.1 dB) does not outweigh Gaussians at the wrong depth.
    Returns (name, record of the choice)."""
    def metric(m: str, k: str) -> float:
        v = results[m]["metrics"].get(k, float("nan"))
        return float("-inf") if v != v else float(v)  # NaN (undefined) ranks last

    leader = max(results, key=lambda m: metric(m, "novel_psnr"))
    lead = results[leader]["per_object"]["novel_psnr"]
    tied, gaps = [leader], {}
    for m in results:
        if m == leader:
            continue
        d = [a - b for a, b in zip(lead, results[m]["per_object"]["novel_psnr"])]
        sem = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("inf")
        gaps[m] = {"psnr_gap": round(statistics.mean(d), 4), "sem": round(sem, 4)}
        if statistics.mean(d) <= z * sem:
            tied.append(m)
    best = max(tied, key=lambda m: (metric(m, "gaussian_depth_corr"), metric(m, "novel_iou")))
    reason = (f"{best}: best novel PSNR" if best == leader else
              f"{best}: tied with {leader} on novel PSNR (gap {gaps[best]['psnr_gap']:.3f} +- "
              f"{gaps[best]['sem']:.3f} dB, within {z:g} standard errors) with better Gaussian depth (corr "
              f"{metric(best, 'gaussian_depth_corr'):.3f} vs {metric(leader, 'gaussian_depth_corr'):.3f})")
    return best, {"leader_by_psnr": leader, "tied": tied, "gaps_to_leader": gaps, "z": z, "reason": reason}


def split_file(path: Path, out: Path, stem: str) -> list[str]:
    data = path.read_bytes()
    names = []
    for i in range(0, len(data), PART_BYTES):
        n = f"{stem}.part{i // PART_BYTES:02d}"
        (out / n).write_bytes(data[i:i + PART_BYTES])
        names.append(n)
    (out / f"{stem}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dd3g_distill.pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, required=True, help="results folder ($OUT on the GPU host)")
    ap.add_argument("--work", type=Path, default=Path("runs/pipeline"), help="scratch folder (quadruples, runs)")
    ap.add_argument("--deadline", type=float, default=540.0, help="seconds for the whole pipeline")
    ap.add_argument("--quad-seconds", type=float, default=100.0, help="time box of quadruple generation")
    ap.add_argument("--eval-reserve", type=float, default=110.0, help="seconds kept for evaluation and export")
    ap.add_argument("--calib-steps", type=int, default=16)
    ap.add_argument("--min-steps", type=int, default=50)
    ap.add_argument("--max-steps", type=int, default=None, help="upper bound of the step budget")
    ap.add_argument("--steps", type=int, default=None, help="the step budget itself (no calibration)")
    ap.add_argument("--total-train-seconds", type=float, default=None,
                    help="size the budget for this much training over several calls: each call trains until its "
                         "deadline and exits 3 until every run has finished, then evaluates (same --work)")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated subset of the ablations")
    ap.add_argument("--random-teacher", action="store_true", help="CPU smoke test: a random teacher of the config")
    args = ap.parse_args(argv)
    for m in filter(None, args.models.split(",")):
        ablation_overrides(m, 0)  # an unknown name fails now, not after the quadruples

    import torch

    from dd3g_sdk.config import to_dict

    from .evaluate import EvalSet, evaluate_model, format_table, turntable_picture
    from .quadruples import finish_prefix, generate_quadruples
    from .train import load_distill_config, load_teacher, model_config, pick_device, read_metrics

    cfg = load_distill_config(args.config, args.set)
    if not cfg.quadruples.teacher_outputs:  # a ground-truth-only store: fail now, not after generating it
        need = [m for m in filter(None, args.models.split(",")) if "train.target=gt" not in ABLATIONS[m]]
        if need:
            raise SystemExit(f"pipeline: {', '.join(need)} read the teacher's outputs, which "
                             f"quadruples.teacher_outputs=false does not make")
    clock = Clock(args.deadline)
    out, work = args.out, args.work
    out.mkdir(parents=True, exist_ok=True)
    res_dir = work / "results"
    for d in (work, res_dir):
        d.mkdir(parents=True, exist_ok=True)
    dev = pick_device()
    log: dict = {"device": str(dev), "torch": torch.__version__, "config": str(args.config)}
    if dev.type == "cuda":
        log.update(gpu=torch.cuda.get_device_name(dev), cuda=torch.version.cuda)
    teacher_dir = Path(cfg.teacher)
    if args.random_teacher:
        from .teacher import DiffusersMVTeacher

        teacher_dir = work / "teacher"
        DiffusersMVTeacher.from_unet_config(model_config(cfg).unet, seed=0).save_pretrained(teacher_dir, dtype=None)
    teacher = load_teacher(teacher_dir, dev)
    data_dir = work / "quadruples"
    clock.mark("teacher loaded")

    # 1) quadruples, time-boxed; the finished prefix becomes the data set
    plan_path = work / "plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    qwant = cfg.quadruples
    if plan is not None:  # a later call of a multi-call run: the data set is the one the plan was made for
        import dataclasses

        qwant = dataclasses.replace(qwant, num_objects=int(plan["key"]["objects"]))
    q = generate_quadruples(qwant, data_dir, teacher, dev, max_seconds=args.quad_seconds, progress=False)
    qcfg, manifest = finish_prefix(data_dir, qwant, teacher)
    if manifest is None:
        raise SystemExit("pipeline: no quadruple shard finished within --quad-seconds")
    log["quadruples"] = {"objects": qcfg.num_objects, "seconds": round(q["seconds"], 1),
                         "objects_per_s": round(len(q["done"]) * qcfg.shard_size / max(q["seconds"], 1e-9), 2),
                         "config": to_dict(qcfg)}
    clock.mark(f"quadruples: {qcfg.num_objects} objects in {q['seconds']:.0f} s")

    models = [m for m in args.models.split(",") if m]
    base = [f"teacher={teacher_dir}", f"data={data_dir}", f"quadruples.num_objects={qcfg.num_objects}"]

    # 2) the step budget: a short concurrent calibration measures the slowest model's step time. Without
    # --total-train-seconds all steps fit this call; with it the budget spans several calls, and plan.json keeps
    # it so that every later call resumes the same runs towards the same step count.
    overrides = {m: ablation_overrides(m, qcfg.extra_views) for m in models}
    plan_key = {"models": models, "config": str(args.config), "set": args.set, "objects": qcfg.num_objects}
    if plan is not None and plan.get("key") != plan_key:
        raise SystemExit(f"pipeline: {plan_path} belongs to another run ({plan.get('key')}); use another --work")
    if plan is None:
        step_s = calibrate(models, args, base, overrides, work, clock) if args.steps is None else {}
        if args.steps is not None:
            steps = args.steps
        else:
            slowest = max(step_s.values())
            budget = args.total_train_seconds or (clock.left() - args.eval_reserve - 25.0)  # 25 s: start-up
            steps = max(args.min_steps, int(budget / (slowest * 1.08)))
        if args.max_steps:
            steps = min(steps, args.max_steps)
        plan = {"key": plan_key, "steps": steps, "step_s": step_s}
        if args.total_train_seconds:
            plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    steps = int(plan["steps"])
    train_time = clock.left() - args.eval_reserve - 25.0
    log["calibration"] = {"step_s": plan["step_s"], "train_time_s": round(train_time, 1), "steps": steps}
    clock.mark(f"step budget: {steps} steps each (step times {plan['step_s']}); {train_time:.0f} s in this call")

    # 3) the real runs: same steps, same batch, same data; a wall-clock cap per call as a safety net (a run that
    # reaches it checkpoints and resumes in the next call)
    cap = max(30.0, train_time * (1.0 if args.total_train_seconds else 1.15))
    t_train = time.perf_counter()
    procs = {m: launch(m, args.config, args.set + base + overrides[m] + [
        f"out={work / 'runs' / m}", f"train.steps={steps}", f"train.max_time_s={cap:.0f}"],
        work / f"train_{m}.log") for m in models}
    rc = wait_all(procs, clock.left() - args.eval_reserve + 20.0)
    runs = {}
    for m in models:
        run = work / "runs" / m
        summ = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
        runs[m] = {"rc": rc[m], "steps_done": summ.get("step"), "finished": summ.get("finished"),
                   "trained_s": summ.get("trained_s"), "last": summ.get("last"), "init": summ.get("init")}
        if not summ:
            print((work / f"train_{m}.log").read_text()[-3000:])
    log["training"] = {"wall_s": round(time.perf_counter() - t_train, 1), "steps": steps, "runs": runs}
    clock.mark(f"training done: {json.dumps({m: (r['steps_done'], r['finished']) for m, r in runs.items()})}")
    if args.total_train_seconds and not all(r["finished"] for r in runs.values()):
        print("pipeline: training unfinished; run the same command again (same --work) to continue")
        return 3

    # 4) evaluation on held-out objects, the same set for every model
    from dd3g_sdk.model import PEPD

    from .evaluate import resolve_checkpoint

    mcfg = model_config(cfg)
    es = EvalSet(cfg.eval, mcfg.views, mcfg.image_size, (mcfg.num_views, 3, mcfg.noise_size, mcfg.noise_size),
                 teacher if cfg.eval.teacher_gap else None, dev, progress=False)
    clock.mark(f"evaluation set: {len(es.indices)} objects in {es.seconds:.0f} s")
    results = {}
    fp16_dir = work / "fp16"
    for m in models:
        try:
            ck = resolve_checkpoint(work / "runs" / m)
        except Exception as e:  # noqa: BLE001 - a failed run is reported, not fatal
            print(f"pipeline: no checkpoint for {m}: {e}")
            continue
        model = PEPD.from_pretrained(ck)
        r = evaluate_model(model, es)
        r["checkpoint"] = str(ck)
        r["training"] = runs[m]
        r["metrics_log"] = read_metrics(work / "runs" / m)
        results[m] = r
        (res_dir / f"distill_eval_{m}.json").write_text(json.dumps(r, indent=2) + "\n")
        turntable_picture(model, cfg.eval.split, es.indices[:cfg.eval.picture_objects], res_dir / f"distill_{m}.png",
                          cfg.eval.seed_offset, device=dev)
        model.half().save_pretrained(fp16_dir / m)  # every model's shippable form, saved once while it is loaded
        del model
    table = format_table(results)
    clock.mark("evaluation done")

    # 5) the default: the best by novel-view PSNR; statistical ties go to the model with real geometry
    best, choice = pick_default(results)
    clock.mark(f"default choice: {choice['reason']}")
    default_dir = fp16_dir / best
    model = PEPD.from_pretrained(default_dir).to(dev)  # what the SDK will load: fp16 weights, fp32 compute
    fp16_eval = evaluate_model(model, es)
    # examples: the bundled hand-drawn RGBA image and a test-split object rendered by the world
    examples = Path("examples")
    pics = {}
    try:
        from dd3g_sdk.preprocess import PreprocessConfig, load_image

        from .data.world import write_input_folder

        ex_dir = work / "examples"
        k = cfg.eval.first_index + cfg.eval.num_objects + 36  # a test object outside the evaluated ones
        p = write_input_folder("test", 1, ex_dir, size=256, start=k, supersample=2, batch=1, device=dev,
                               view_set=mcfg.views, progress=False)[0]
        shutil.copy(p, res_dir / "procworld_test.png")
        turntable_picture(model, "test", [k], res_dir / "default_procworld_test.png", cfg.eval.seed_offset, device=dev)
        pics["procworld_test"] = {"object": k, "seed": cfg.eval.seed_offset + k}
        robot = examples / "toy_robot.png"
        if robot.is_file():
            img = load_image(robot, PreprocessConfig.framing(mcfg.image_size, mcfg.input_fill))
            turntable_picture(model, "test", [0], res_dir / "default_toy_robot.png", 0, device=dev, images=[img])
            pics["toy_robot"] = {"seed": 0}
    except Exception as e:  # noqa: BLE001 - pictures must not lose the numbers
        print(f"pipeline: example pictures failed: {type(e).__name__}: {e}")
    parts = split_file(default_dir / "model.safetensors", out, "pepd-small.safetensors")
    shutil.copy(default_dir / "config.json", out / "pepd-small.config.json")
    clock.mark(f"default = {best}; fp16 parts {parts}")

    summary = {"environment": results[best]["environment"] if results else log, "pipeline": log,
               "table_markdown": table, "best": best, "default_choice": choice,
               "default_fp16_eval": fp16_eval["metrics"],
               "default_fp16_inference": fp16_eval["inference"], "examples": pics,
               "models": {m: {"metrics": r["metrics"], "inference": r["inference"], "training": r["training"]}
                          for m, r in results.items()},
               "ablations": overrides, "timeline": clock.events}
    (res_dir / "distill_ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
    (res_dir / "pipeline_log.json").write_text(json.dumps(log, indent=2) + "\n")
    with tarfile.open(out / "distill_results.tar", "w") as tar:
        tar.add(res_dir, arcname="results")
        for m in models:
            for name in ("metrics.jsonl", "summary.json", "config.json"):
                p = work / "runs" / m / name
                if p.is_file():
                    tar.add(p, arcname=f"runs/{m}/{name}")
            if (work / "runs" / m / "tb").is_dir():
                tar.add(work / "runs" / m / "tb", arcname=f"runs/{m}/tb")
            for phase in ("calib", "train"):
                lp = work / f"{phase}_{m}.log"
                if lp.is_file():
                    tar.add(lp, arcname=f"logs/{phase}_{m}.log")
    # every model's EMA weights in fp16 too (8.6 MB each for "small"), so that a later choice of default or a CPU
    # diagnosis needs no device time; skipped when the deadline is near
    if clock.left() > 20.0:
        with tarfile.open(work / "models_fp16.tar", "w") as tar:
            for m in results:
                tar.add(fp16_dir / m, arcname=m)
        split_file(work / "models_fp16.tar", out, "models_fp16.tar")
    clock.mark("written")
    print(table)
    print(f"best: {best}  (fp16 default: novel PSNR {fp16_eval['metrics']['novel_psnr']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
