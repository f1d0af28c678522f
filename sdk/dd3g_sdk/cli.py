"""The `dd3g` command line.

    dd3g generate examples/toy_robot.png -o out/ --preview
    dd3g render out/toy_robot.ply --views 8 -o out/turntable.gif
    dd3g info out/toy_robot.ply
    dd3g view out/toy_robot.ply
    dd3g export CKPT --format onnx --fp16 -o model.onnx        (needs dd3g-sdk[export])
    dd3g distill --config configs/distill_small.json           (needs dd3g-sdk[distill])
    dd3g evaluate CKPT                                         (needs dd3g-sdk[distill])
    dd3g bench --quick --json bench.json

Bad input prints one line `dd3g: error: <file>: <problem>` and exits with status 2; nothing is written.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .errors import InputError, report
from .gaussians import INVISIBLE_OPACITY

# Commands whose code lives in other packages (or heavier modules) are imported only when they run, so that
# `dd3g --help` and `dd3g info` stay fast and work without torch.
#   name: (module, add_arguments function, run function, one-line help)
LAZY_COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "view": ("dd3g_sdk.viewer", "add_view_arguments", "run_view", "look at Gaussians in the browser"),
    "export": ("dd3g_export.cli", "add_export_arguments", "run_export", "export a checkpoint to ONNX or TensorRT"),
    "distill": ("dd3g_distill.cli", "add_distill_arguments", "run_distill", "distil PEPD from a teacher"),
    "evaluate": ("dd3g_distill.cli", "add_evaluate_arguments", "run_evaluate",
                 "evaluate a checkpoint on held-out procedural objects"),
    "bench": ("dd3g_sdk.bench", "add_bench_arguments", "run_bench", "benchmark what this machine supports"),
}


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint folder, .onnx or .engine (default: embedded model)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"])


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None


def build_parser(lazy: dict[str, Callable] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dd3g", description="One image to 3D Gaussians (DD3G / PEPD).",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dd3g-sdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log backend choices and timings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser("generate", help="image(s) to Gaussians (.ply or .splat)",
                       description="Generate 3D Gaussians from RGBA/RGB images. RGBA alpha is the object mask.")
    g.add_argument("images", nargs="+", type=Path, help="PNG/JPEG/WebP files")
    g.add_argument("-o", "--out", type=Path, required=True, help="output folder (created if missing)")
    g.add_argument("--seed", type=int, default=0, help="picks one of the plausible objects (default 0)")
    g.add_argument("--seeds", type=_seeds, default=None, help="several seeds, e.g. 0,1,2: one file per seed")
    g.add_argument("--format", choices=["ply", "splat"], default="ply")
    g.add_argument("--preview", action="store_true", help="also write a turntable GIF (reference rasteriser)")
    g.add_argument("--preview-format", choices=["gif", "mp4"], default="gif")
    g.add_argument("--preview-size", type=int, default=192)
    g.add_argument("--min-opacity", type=float, default=INVISIBLE_OPACITY,
                   help="drop Gaussians below this opacity (default 1/255: those that no renderer draws, so the "
                        "pictures are unchanged and the files smaller; 0 keeps all)")
    g.add_argument("--view", action="store_true", help="open the browser viewer on the result")
    _add_model_arguments(g)

    r = sub.add_parser("render", help="render a .ply/.splat from orbit cameras",
                       description="Render turntable views. The output type follows -o: .gif, .mp4, .png "
                                   "(a strip of the views) or a folder (one PNG per view).")
    r.add_argument("file", type=Path)
    r.add_argument("-o", "--out", type=Path, required=True)
    r.add_argument("--views", type=int, default=8)
    r.add_argument("--size", type=int, default=256)
    r.add_argument("--elevation", type=float, default=20.0)
    r.add_argument("--radius", type=float, default=2.0)
    r.add_argument("--fov", type=float, default=40.0)
    r.add_argument("--background", type=float, nargs=3, default=(1.0, 1.0, 1.0))

    i = sub.add_parser("info", help="counts, bounds and SH degree of a .ply/.splat")
    i.add_argument("file", type=Path)
    i.add_argument("--json", action="store_true", help="print JSON")

    for name, (module, add_fn, _run, help_) in LAZY_COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if lazy is not None and name in lazy:
            lazy[name](p)
    return parser


def _lazy(name: str) -> tuple[Callable, Callable]:
    module, add_fn, run_fn, _ = LAZY_COMMANDS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        extra = {"export": "export", "distill": "distill", "evaluate": "distill", "view": "view"}.get(name, "dev")
        raise SystemExit(f"dd3g: error: `dd3g {name}` needs more packages ({e.name or e}); "
                         f"pip install 'dd3g-sdk[{extra}]'") from None
    return getattr(mod, add_fn), getattr(mod, run_fn)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    lazy = {}
    if command in LAZY_COMMANDS:
        add, run = _lazy(command)
        lazy[command] = add
    args = build_parser(lazy).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    # One line per warning on the console (the source line of a library is no help to a CLI user).
    warnings.formatwarning = lambda message, category, *a, **k: f"dd3g: warning: {message}\n"
    if args.command is None:
        build_parser().print_help()
        return 0
    try:
        if args.command in LAZY_COMMANDS:
            return int(run(args) or 0)
        return {"generate": cmd_generate, "render": cmd_render, "info": cmd_info}[args.command](args)
    except (InputError, FileNotFoundError, IsADirectoryError) as e:
        return report(e, 2)
    except KeyboardInterrupt:
        print("dd3g: interrupted", file=sys.stderr)
        return 130


# ---- commands ----------------------------------------------------------------------------------------

def cmd_generate(args) -> int:
    import numpy as np
    from PIL import Image

    from ._fileio import atomic_write_text
    from .generator import Generator
    from .io import write_gaussians

    for path in args.images:  # fail before any model load or write
        if not path.is_file():
            raise InputError(path, "no such file" if not path.exists() else "not a file")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(args.out, "output must be a folder")
    gen = Generator.from_pretrained(args.model, backend=args.backend, device=args.device, precision=args.precision)
    seeds = args.seeds or [args.seed]
    inputs = [gen.preprocess(p) for p in args.images]  # every image is checked before anything is written
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(p, x, s) for p, x in zip(args.images, inputs) for s in seeds]
    results = []
    batches = range(0, len(jobs), 8)
    if len(jobs) > 1:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="generate", unit="batch")
    for k in batches:
        chunk = jobs[k:k + 8]
        results += gen.generate(np.stack([x for _, x, _ in chunk]), [s for *_, s in chunk],
                                min_opacity=args.min_opacity)
    written = []
    for (path, x, s), g in zip(jobs, results):
        stem = path.stem if len(seeds) == 1 else f"{path.stem}_s{s}"
        target = args.out / f"{stem}.{args.format}"
        write_gaussians(g, target)
        input_png = args.out / f"{path.stem}_input.png"
        Image.fromarray((x.transpose(1, 2, 0) * 255 + 0.5).clip(0, 255).astype(np.uint8)).save(input_png)
        meta = {"input_image": input_png.name, "source_image": str(path), "seed": s, "model": gen.info.source,
                "num_gaussians": len(g), "dd3g_sdk": __version__}
        atomic_write_text(target.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
        line = f"{target}  ({len(g)} Gaussians, seed {s})"
        if args.preview:
            cams = gen.turntable(8, size=args.preview_size)
            prev = args.out / f"{stem}_turntable.{args.preview_format}"
            _write_animation(gen.render(g, cams).rgb, prev)
            line += f"  preview {prev}"
        print(line)
        written.append(target)
    if args.view:
        return _lazy("view")[1](argparse.Namespace(files=written, port=8080, host="127.0.0.1", no_browser=False))
    return 0


def _write_animation(frames, path: Path) -> Path:
    """frames [C,H,W,3] float 0..1 -> GIF (Pillow) or MP4 (imageio-ffmpeg), atomically."""
    import numpy as np

    from ._fileio import atomic_write

    u8 = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
    if path.suffix.lower() == ".mp4":
        import imageio.v2 as imageio

        tmp = path.with_name(f".{path.name}.tmp.mp4")
        try:
            imageio.mimwrite(tmp, list(u8), fps=8, macro_block_size=1)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
    from PIL import Image

    imgs = [Image.fromarray(f) for f in u8]
    with atomic_write(path) as f:
        imgs[0].save(f, format="GIF", save_all=True, append_images=imgs[1:], duration=150, loop=0)
    return path


def cmd_render(args) -> int:
    import numpy as np
    from PIL import Image

    from ._fileio import atomic_write
    from .cameras import turntable
    from .io import read_gaussians
    from .render import render

    g = read_gaussians(args.file)
    cams = turntable(args.views, args.elevation, args.radius, args.fov, args.size, args.size)
    rgb = render(g, cams, background=tuple(args.background)).rgb
    out: Path = args.out
    suffix = out.suffix.lower()
    if suffix in (".gif", ".mp4"):
        _write_animation(rgb, out)
    elif suffix in (".png", ".jpg", ".jpeg", ".webp"):
        strip = (np.concatenate(list(rgb), axis=1).clip(0, 1) * 255 + 0.5).astype(np.uint8)
        with atomic_write(out) as f:
            Image.fromarray(strip).save(f, format=Image.registered_extensions()[suffix])
    else:
        out.mkdir(parents=True, exist_ok=True)
        for k, frame in enumerate(rgb):
            with atomic_write(out / f"view_{k:03d}.png") as f:
                Image.fromarray((frame.clip(0, 1) * 255 + 0.5).astype(np.uint8)).save(f, format="PNG")
    print(f"{out}  ({len(cams)} views, {args.size}x{args.size})")
    return 0


def cmd_info(args) -> int:
    from .io import describe, read_gaussians

    d = describe(read_gaussians(args.file))
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(f"{args.file}")
        for k, v in d.items():
            print(f"  {k:>14}: {v}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
