"""`dd3g distill` and `dd3g evaluate` (the `dd3g` command imports this module lazily).

    dd3g distill --config configs/distill_small.json                       # quadruples if missing, then train
    dd3g distill --config configs/distill_small.json --set train.steps=500 --set out=runs/try
    dd3g distill --config configs/distill_small.json --stage quadruples --shard 0/4     # one part of the data
    torchrun --nproc-per-node 4 -m dd3g_distill.cli distill --config configs/distill_small.json  # DDP
    dd3g evaluate runs/distill-small --json runs/distill-small/eval.json --picture turntable.png

`python -m dd3g_distill.cli distill|evaluate ...` is the same without the `dd3g` front end (used by torchrun).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from dd3g_sdk.errors import InputError, report


def add_distill_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="distillation config JSON (see docs/distill.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. train.steps=1000 or loss.implicit=false (repeatable)")
    p.add_argument("--stage", choices=["all", "quadruples", "train"], default="all",
                   help="quadruples: generate the data only; train: train on existing data; all: both")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="quadruple shards of this process (default: torchrun's RANK/WORLD_SIZE)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:K (default: cuda:LOCAL_RANK when available)")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="leave (with a checkpoint) once STEP steps are done; the run resumes later")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_distill(args: argparse.Namespace) -> int:
    import os

    from .quadruples import generate_quadruples
    from .train import init_distributed, load_distill_config, load_teacher, train

    cfg = load_distill_config(args.config, args.set)
    progress = not args.no_progress
    teacher = None
    if args.stage in ("all", "quadruples") and not (Path(cfg.data) / "manifest.json").is_file():
        shard = _parse_shard(args.shard)
        dist = init_distributed(args.device) if shard is None and int(os.environ.get("WORLD_SIZE", 1)) > 1 else None
        device = dist.device if dist is not None else _device(args.device)
        if not cfg.teacher:
            raise InputError(args.config, "generating quadruples needs a teacher folder (config key 'teacher')")
        teacher = load_teacher(cfg.teacher, device)
        res = generate_quadruples(cfg.quadruples, cfg.data, teacher, device, shard=shard, progress=progress)
        if dist is not None:  # everyone waits for every shard, then the manifest exists for all ranks
            import torch.distributed as tdist

            tdist.barrier()
            if dist.is_main:
                from .quadruples import config_hash, teacher_identity, write_manifest_if_complete

                write_manifest_if_complete(Path(cfg.data), cfg.quadruples, teacher_identity(teacher),
                                           config_hash(cfg.quadruples, teacher_identity(teacher)))
            tdist.barrier()
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"quadruples: wrote shards {res['done']}, skipped {res['skipped']} in {res['seconds']:.1f} s "
                  f"-> {cfg.data}")
    if args.stage in ("all", "train"):
        if teacher is not None and not (cfg.loss.implicit or cfg.train.init_from_teacher):
            teacher = None
        summary = train(cfg, teacher=teacher, device=args.device, progress=progress, stop_after=args.stop_after)
        if int(os.environ.get("RANK", 0)) == 0:
            print(json.dumps(summary))
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():  # opened above for the quadruple stage
        tdist.destroy_process_group()
    return 0


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a PEPD folder (config.json + model.safetensors) or a run folder")
    p.add_argument("--config", type=Path, default=None,
                   help="distillation config JSON: its `eval` section and `teacher` (default: the run's config.json "
                        "when CKPT is in a run folder, else built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. eval.num_objects=8")
    p.add_argument("--teacher", default=None, help="teacher folder for the student-vs-teacher gap ('' = skip)")
    p.add_argument("--num-objects", type=int, default=None, help="held-out objects to evaluate")
    p.add_argument("--json", type=Path, default=None, help="write the results here (default: CKPT/eval.json)")
    p.add_argument("--picture", type=Path, default=None, help="also write a turntable picture (PNG)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_table, resolve_checkpoint, turntable_picture, write_result
    from .train import load_distill_config, load_teacher, pick_device

    ck = resolve_checkpoint(args.checkpoint)
    cfg_path = args.config
    if cfg_path is None:  # a checkpoint inside a run folder: the run's own config
        for parent in [ck, *ck.parents][:4]:
            if (parent / "config.json").is_file() and (parent / "checkpoints").is_dir():
                cfg_path = parent / "config.json"
                break
    cfg = load_distill_config(cfg_path, args.set)
    ecfg = cfg.eval
    if args.num_objects is not None:
        from dataclasses import replace

        ecfg = replace(ecfg, num_objects=args.num_objects)
    device = pick_device(args.device)
    teacher_dir = cfg.teacher if args.teacher is None else args.teacher
    teacher = load_teacher(teacher_dir, device) if teacher_dir and ecfg.teacher_gap else None
    res = evaluate(ck, ecfg, teacher=teacher, device=device, progress=not args.no_progress)
    out = args.json or (ck / "eval.json")
    write_result(res, out)
    print(format_table({ck.name if ck.name not in ("final",) else ck.parent.name: res}))
    print(f"wrote {out}")
    if args.picture is not None:
        from dd3g_sdk.model import PEPD

        model = PEPD.from_pretrained(ck)
        k = list(range(ecfg.first_index, ecfg.first_index + min(ecfg.picture_objects, ecfg.num_objects)))
        turntable_picture(model, ecfg.split, k, args.picture, ecfg.seed_offset, device=device)
        print(f"wrote {args.picture}")
    return 0


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(None, f"--shard must look like I/N, got {text!r}") from None
    return i, n


def _device(name: str | None):
    from .train import pick_device

    return pick_device(name)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dd3g_distill.cli")
    sub = ap.add_subparsers(dest="command", required=True)
    add_distill_arguments(sub.add_parser("distill", help="distil PEPD from a teacher"))
    add_evaluate_arguments(sub.add_parser("evaluate", help="evaluate a checkpoint on held-out objects"))
    args = ap.parse_args(argv)
    try:
        return {"distill": run_distill, "evaluate": run_evaluate}[args.command](args)
    except InputError as e:
        return report(e, 2)


if __name__ == "__main__":
    sys.exit(main())
