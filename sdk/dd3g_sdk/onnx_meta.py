"""The dd3g metadata of an exported model, read without torch (numpy + onnxruntime are enough).

`dd3g export` writes these keys into an ONNX file's `metadata_props` (and, for a TensorRT engine, into the
sidecar JSON beside it), so that the SDK can load an `.onnx` or `.engine` alone:

    dd3g.format             "1": the version of this metadata layout
    dd3g.model              "PEPD"
    dd3g.config             the model config (JSON of PEPDConfig)
    dd3g.image_size         S: input image side in pixels
    dd3g.noise_shape        JSON [V, 3, h, w]: the teacher noise for one image
    dd3g.num_gaussians      N per image
    dd3g.sh_degree          SH degree of the `sh` output (K = (degree + 1)^2)
    dd3g.views              JSON of ViewSetConfig: the fixed cameras baked into the graph
    dd3g.gaussian_layout    JSON: name -> shape, dtype, units of every output
    dd3g.inputs             JSON: name -> shape, dtype, range of every input
    dd3g.camera_convention  one line of text (OpenCV camera frame, world +y up, ...)
    dd3g.precision          "fp32" or "fp16": weights/compute of the graph (inputs/outputs are always float32)
    dd3g.dynamic_batch      "true" or "false"
    dd3g.opset              ONNX opset of the graph
    dd3g.sdk_version        dd3g_sdk.__version__ of the exporter

No export date is stored, so that one checkpoint exported twice gives the same bytes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from .cameras import ViewSetConfig
from .config import from_dict
from .errors import InputError

PREFIX = "dd3g."
FORMAT_VERSION = "1"
REQUIRED_KEYS = ("format", "model", "config", "image_size", "noise_shape", "num_gaussians", "sh_degree", "views",
                 "gaussian_layout", "inputs", "camera_convention", "precision", "dynamic_batch", "opset",
                 "sdk_version")
PRECISIONS = ("fp32", "fp16")
INPUT_NAMES = ("image", "noise")

CAMERA_CONVENTION = ("OpenCV camera frame (x right, y down, z forward); world +y up; object in [-0.5,0.5]^3 at the "
                     "origin; orbit position = r*(cos el sin az, sin el, cos el cos az); view 0 = input view")


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """All `metadata_props` of the ONNX file at `path` (every key, dd3g or not).

    Parsed with `onnx` when it is installed (without loading external weights), else with onnxruntime's
    `get_modelmeta()`. Raises InputError for a missing, empty, truncated or non-ONNX file, and for external
    data whose path points outside the model's folder.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "ONNX file not found")
    if p.stat().st_size == 0:
        raise InputError(p, "ONNX file is empty")
    try:
        import onnx
    except ImportError:
        return _read_with_onnxruntime(p)
    return _read_with_onnx(p, onnx)


def _read_with_onnx(p: Path, onnx) -> dict[str, str]:
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # DecodeError, truncated protobuf, ...
        raise InputError(p, f"not a valid ONNX file ({type(e).__name__}: {_short(e)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise InputError(p, "not a valid ONNX file (no graph)")
    check_external_data(p, external_data_locations(model))
    return {e.key: e.value for e in model.metadata_props}


def _read_with_onnxruntime(p: Path) -> dict[str, str]:
    import onnxruntime as ort

    # onnxruntime validates external-data paths itself (it refuses paths that escape the model's folder).
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise InputError(p, ort_load_problem(e)) from None
    return dict(sess.get_modelmeta().custom_metadata_map)


def ort_load_problem(e: Exception) -> str:
    """A one-line description of why onnxruntime could not load a model."""
    msg = _short(e)
    if "escapes model directory" in msg or "outside" in msg and "external" in msg.lower():
        return f"external data path points outside the model's folder ({msg})"
    return f"not a valid ONNX model for onnxruntime ({msg})"


def external_data_locations(model) -> list[str]:
    """The `location` of every external-data tensor in an onnx ModelProto (subgraphs included)."""
    out: list[str] = []

    def tensor(t) -> None:
        if t.data_location == 1:  # TensorProto.EXTERNAL
            loc = [e.value for e in t.external_data if e.key == "location"]
            out.append(loc[0] if loc else "")

    def graph(g) -> None:
        for t in g.initializer:
            tensor(t)
        for st in g.sparse_initializer:
            tensor(st.values)
            tensor(st.indices)
        for n in g.node:
            for a in n.attribute:
                if a.HasField("t"):
                    tensor(a.t)
                for t in a.tensors:
                    tensor(t)
                if a.HasField("g"):
                    graph(a.g)
                for sg in a.graphs:
                    graph(sg)

    graph(model.graph)
    for f in model.functions:
        for n in f.node:
            for a in n.attribute:
                if a.HasField("t"):
                    tensor(a.t)
    return out


def check_external_data(model_path: Path, locations: list[str]) -> None:
    """Refuse external-data locations that are empty, absolute, or resolve outside the model's folder
    (`..`, symlinks): a model file must never make the loader read arbitrary files."""
    folder = model_path.resolve().parent
    for loc in locations:
        if not loc:
            raise InputError(model_path, "external data tensor without a location")
        if os.path.isabs(loc) or Path(loc).drive:
            raise InputError(model_path, f"external data path {loc!r} is absolute; it must be inside the model's "
                                         "folder")
        target = (folder / loc).resolve()
        if folder != target and folder not in target.parents:
            raise InputError(model_path, f"external data path {loc!r} points outside the model's folder")
        if not target.is_file():
            raise InputError(model_path, f"external data file {loc!r} is missing")


def dd3g_metadata(meta: Mapping[str, str]) -> dict[str, str]:
    """The dd3g keys of `meta`, without the prefix."""
    return {k[len(PREFIX):]: v for k, v in meta.items() if k.startswith(PREFIX)}


def parse_metadata(meta: Mapping[str, str], source: str | os.PathLike):
    """dd3g metadata (prefixed keys, as in metadata_props) -> `ModelInfo`. InputError names `source`."""
    from .backends.base import ModelInfo

    d = dd3g_metadata(meta)
    if not d:
        raise InputError(source, "no dd3g metadata: not a model exported by `dd3g export` (or its metadata was "
                                 "stripped)")
    missing = [PREFIX + k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise InputError(source, f"dd3g metadata incomplete: missing {', '.join(missing)}")
    if d["format"] != FORMAT_VERSION:
        raise InputError(source, f"dd3g metadata format {d['format']!r} is not supported (this SDK reads "
                                 f"{FORMAT_VERSION!r}); re-export the model with this version")
    if d["model"] != "PEPD":
        raise InputError(source, f"wrong model type {d['model']!r} (expected 'PEPD')")
    if d["precision"] not in PRECISIONS:
        raise InputError(source, f"dd3g.precision must be one of {PRECISIONS}, got {d['precision']!r}")
    try:
        config = json.loads(d["config"])
        views = from_dict(ViewSetConfig, json.loads(d["views"]), source=source)
        noise_shape = tuple(int(x) for x in json.loads(d["noise_shape"]))
        image_size, n, sh_degree = int(d["image_size"]), int(d["num_gaussians"]), int(d["sh_degree"])
        json.loads(d["gaussian_layout"]), json.loads(d["inputs"])
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        if isinstance(e, InputError):
            raise
        raise InputError(source, f"dd3g metadata is malformed ({_short(e)})") from None
    if not isinstance(config, dict):
        raise InputError(source, "dd3g.config must be a JSON object")
    if len(noise_shape) != 4 or noise_shape[1] != 3 or noise_shape[0] != views.num_views:
        raise InputError(source, f"dd3g.noise_shape {list(noise_shape)} does not match [V=views, 3, h, w]")
    if image_size <= 0 or n <= 0 or not 0 <= sh_degree <= 3:
        raise InputError(source, "dd3g metadata has a non-positive size or an SH degree outside 0..3")
    return ModelInfo(image_size=image_size, noise_shape=noise_shape, num_gaussians=n, sh_degree=sh_degree,
                     views=views, config=config, source=str(source), precision=d["precision"])


def read_model_info(path: str | os.PathLike):
    """`ModelInfo` of an exported `.onnx` file, from its metadata alone (the graph is not run)."""
    return parse_metadata(read_onnx_metadata(path), path)


def _short(e: BaseException, limit: int = 240) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."
