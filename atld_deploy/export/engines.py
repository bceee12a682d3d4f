"""Other engines that C/C++ users embed the exported graphs in: ONNX Runtime (the reference here), the ONNX
reference evaluator, OpenVINO (f32 precision hint) and OpenCV's DNN module.

`compare_engines(graph, feeds, engines)` runs one `.onnx` file on each engine that is installed and holds
every output to the float32 bar parity uses: max |err| within `THRESHOLDS["fp32"].abs_err` of
max(1, max |ONNX Runtime output|), and the output's shape equal to ONNX Runtime's. An engine that is not
installed is reported with the reason, never counted as a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError

ENGINES = ("onnxruntime", "reference", "openvino", "opencv")
Feeds = Mapping[str, np.ndarray]


def _onnxruntime(path: Path, feeds: Feeds) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def _reference(path: Path, feeds: Feeds) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(path))
    return dict(zip(evaluator.output_names, evaluator.run(None, dict(feeds))))


def _openvino(path: Path, feeds: Feeds) -> dict[str, np.ndarray]:
    import openvino as ov

    # f32 precision hint: without it OpenVINO may run bf16/f16 on CPUs that have them
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(dict(feeds))
    return {out.get_any_name(): np.asarray(result[out]) for out in compiled.outputs}


def _opencv(path: Path, feeds: Feeds) -> dict[str, np.ndarray]:
    import cv2

    net = cv2.dnn.readNetFromONNX(str(path))
    for name, value in feeds.items():
        net.setInput(value, name)
    names = list(net.getUnconnectedOutLayersNames())
    return dict(zip(names, net.forward(names)))


RUNNERS: dict[str, tuple[str, Callable[[Path, Feeds], dict[str, np.ndarray]]]] = {
    "onnxruntime": ("onnxruntime", _onnxruntime),
    "reference": ("onnx", _reference),
    "openvino": ("openvino", _openvino),
    "opencv": ("cv2", _opencv),
}


def engine_version(name: str) -> str | None:
    """The installed version of engine `name`, or None when it is not installed."""
    import importlib

    try:
        module = importlib.import_module(RUNNERS[name][0])
    except ImportError:
        return None
    return str(getattr(module, "__version__", "unknown"))


def parse_engines(value: str | Sequence[str]) -> tuple[str, ...]:
    """`"onnxruntime,openvino"` -> the engine names, checked against `ENGINES`."""
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    bad = [v for v in items if v not in ENGINES]
    if bad or not items:
        raise ConfigError(f"--engines got {','.join(bad or items) or 'nothing'}; expected a comma-separated list "
                          f"of {', '.join(ENGINES)}")
    return tuple(items)


@dataclass
class EngineResult:
    """One engine on one graph: its version, the max |err| per output against ONNX Runtime, and what failed."""

    engine: str
    version: str | None
    max_abs_err: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        return self.skipped is None and not self.failures


def judge(engine: str, got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], bar: float) -> EngineResult:
    """Hold `got` to `ref` output by output: same names, same shapes, max |err| <= bar * max(1, max |ref|)."""
    result = EngineResult(engine, engine_version(engine))
    for name, want in ref.items():
        if name not in got:
            result.failures.append(f"{name}: missing (the engine returned {sorted(got)})")
            continue
        have = np.asarray(got[name])
        if have.shape != want.shape:
            result.failures.append(f"{name}: shape {list(have.shape)}, expected {list(want.shape)}")
            continue
        err = float(np.max(np.abs(have.astype(np.float64) - want))) if want.size else 0.0
        result.max_abs_err[name] = err
        scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
        if not err <= bar * scale:  # NaN fails too
            result.failures.append(f"{name}: max |err| {err:.2e} over the bar {bar * scale:.2e}")
    return result


def random_feeds(path: str | Path, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for the graph at `path` from its own declared inputs: images in [0, 1], uint8 frames 0..255,
    logits ~ N(0, 1); a dynamic dimension gets `batch`."""
    import onnx

    rng = np.random.default_rng(seed)
    feeds = {}
    for value in onnx.load(str(path), load_external_data=False).graph.input:
        t = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in t.shape.dim]
        if t.elem_type == onnx.TensorProto.UINT8:
            feeds[value.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif value.name == "logits":
            feeds[value.name] = rng.normal(size=shape).astype(np.float32)
        else:
            feeds[value.name] = rng.random(shape, dtype=np.float32)
    return feeds


def check_artifact_engines(art_dir: str | Path, engines: str | Sequence[str], batch: int = 16,
                           seed: int = 0) -> dict[str, list[EngineResult]]:
    """Every ONNX graph of the artifact at `art_dir` on each of `engines` (what `verify --engines` runs):
    ONNX Runtime is held to PyTorch by parity, the other engines to ONNX Runtime here.

    Raises:
        ConfigError: an unknown engine name. ExportError: the manifest is missing or a file was modified.
    """
    from ..artifact import Manifest

    art = Path(art_dir)
    manifest = Manifest.load(art)
    names = parse_engines(engines)
    return {key: compare_engines(art / entry.file, random_feeds(art / entry.file, batch, seed), names)
            for key, entry in manifest.graphs.items()}


def format_engine_table(results: Mapping[str, Sequence[EngineResult]]) -> str:
    """One line per graph and engine: agrees / DISAGREES (why) / skipped (why), with the version."""
    lines = []
    for graph, rows in results.items():
        for r in rows:
            state = f"skipped: {r.skipped}" if r.skipped else "agrees" if r.passed else "DISAGREES: " + "; ".join(r.failures)
            errs = ", ".join(f"{k} {v:.1e}" for k, v in r.max_abs_err.items())
            lines.append(f"{graph:24s} {r.engine:12s} {r.version or '-':14.14s} {state}"
                         + (f" (max |err| {errs})" if errs else ""))
    return "\n".join(lines)


def compare_engines(graph: str | Path, feeds: Feeds, engines: Sequence[str] = ENGINES,
                    bar: float | None = None) -> list[EngineResult]:
    """Run `graph` on ONNX Runtime and on each of `engines`, judged as the module docstring says.

    Args:
        graph: an `.onnx` file.
        feeds: input name -> array (what ONNX Runtime is fed too).
        engines: names from `ENGINES`; "onnxruntime" compares ONNX Runtime with itself (a sanity row).
        bar: the relative max |err| allowed; default the fp32 parity bar.
    Returns:
        One `EngineResult` per engine, in the order asked; a missing engine has `skipped` set.
    """
    from .parity import THRESHOLDS

    bar = THRESHOLDS["fp32"].abs_err if bar is None else bar
    path = Path(graph)
    ref = _onnxruntime(path, feeds)
    results = []
    for name in parse_engines(list(engines)):
        if engine_version(name) is None:
            results.append(EngineResult(name, None, skipped=f"{RUNNERS[name][0]} is not installed"))
            continue
        try:
            got = RUNNERS[name][1](path, feeds)
        except Exception as e:  # noqa: BLE001 - each engine raises its own kinds; the reason is the result
            results.append(EngineResult(name, engine_version(name), failures=[
                f"cannot run {path.name}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"]))
            continue
        results.append(judge(name, got, ref, bar))
    return results
