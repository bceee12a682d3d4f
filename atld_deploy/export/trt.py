"""TensorRT engines (10.x and 11.x) from the exported ONNX graphs, their sidecars, and sidecar checks.

Written against TensorRT's documented Python API; `tensorrt` is imported only inside these functions. Every
TensorRT name used here and in `runtime/trt_runner.py` is checked against the real bindings of several
versions by `trt_api.py` (read from this source, so keep calls on `trt` and on the objects it returns).
fp32 builds clear TF32; fp16 builds parse a float16 ONNX graph (float32 I/O) strongly typed, because
TensorRT 11 has no FP16 builder flag and takes precision from the graph's own types.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EngineError
from ..io import sha256_file, write_bytes_atomic, write_json_atomic
from ..io import read_json

log = logging.getLogger(__name__)

TIMING_CACHE = "timing.cache"
REBUILD_HINT = "rebuild the engines on this machine with `atld-deploy export RUN --output ART --trt`"
NOT_INSTALLED = "the TensorRT Python package `tensorrt` is not installed (pip install 'atld-deploy[tensorrt]', TensorRT 10.x or 11.x)"


def import_tensorrt() -> Any:
    """The `tensorrt` module.

    Raises:
        EngineError: it is not installed, or it is installed but fails to import (the error is quoted: a
            missing shared library is the usual case, and "not installed" would send the user the wrong way).
    """
    try:
        import tensorrt
    except ModuleNotFoundError as e:
        if e.name == "tensorrt":
            raise EngineError(NOT_INSTALLED) from e
        raise EngineError(_broken(e)) from e
    except Exception as e:  # noqa: BLE001 - a broken install raises ImportError, OSError, RuntimeError, ...
        raise EngineError(_broken(e)) from e
    return tensorrt


def _broken(e: BaseException) -> str:
    return (
        f"the TensorRT Python package `tensorrt` is installed but cannot be imported ({type(e).__name__}: {e}); "
        "install the TensorRT libraries it names (pip install 'atld-deploy[tensorrt]' brings them) or add their "
        "folder to LD_LIBRARY_PATH"
    )


def tensorrt_status() -> str:
    """'' when TensorRT and a CUDA GPU are usable here, else a sentence naming exactly what is missing."""
    try:
        tensorrt = import_tensorrt()
    except EngineError as e:
        return str(e)
    if trt_major(tensorrt) < 10:
        return (
            f"TensorRT {getattr(tensorrt, '__version__', '?')} is installed, but atld-deploy needs TensorRT 10.x or 11.x "
            "(pip install 'atld-deploy[tensorrt]')"
        )
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False); TensorRT engines need one"
    except Exception as e:  # noqa: BLE001 - a broken CUDA setup raises various errors
        return f"CUDA is not usable here ({e})"
    return ""


def trt_major(trt: Any) -> int:
    """Major version of an imported `tensorrt` module (0 when it cannot be read)."""
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 0


_LOGGER: Any = None


def trt_logger() -> Any:
    """The process-wide `trt.Logger`. TensorRT keeps a single logger pointer for every builder and runtime in a
    process (a second, different logger only earns a warning and is ignored), so all of atld-deploy shares one.
    It reports warnings and errors, and also TensorRT's info messages when atld-deploy logs at DEBUG (--verbose)."""
    global _LOGGER
    import tensorrt as trt

    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    _LOGGER.min_severity = trt.Logger.INFO if log.isEnabledFor(logging.DEBUG) else trt.Logger.WARNING
    return _LOGGER


def machine_identity() -> dict[str, Any]:
    """TensorRT version, GPU name and compute capability of the current CUDA device, the one TensorRT builds
    for and runs on (needs TensorRT and a GPU)."""
    import tensorrt as trt
    import torch

    dev = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(dev)
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(dev), "compute_capability": f"{major}.{minor}"}


@dataclass(frozen=True)
class EngineBuild:
    """What to build: profile over the batch dimension, precision, workspace."""

    precision: str = "fp32"
    min_batch: int = 1
    opt_batch: int = 64
    max_batch: int = 256
    workspace_mb: int = 4096


def build_engine(onnx_path: Path, engine_path: Path, sidecar_path: Path, spec: EngineBuild, cache_path: Path) -> dict[str, Any]:
    """Parse `onnx_path`, build a serialized engine to `engine_path` and its sidecar; return the sidecar.

    Raises:
        EngineError: TensorRT/GPU missing, the parser rejects the graph (its errors are quoted), or the
            build fails.
    """
    missing = tensorrt_status()
    if missing:
        raise EngineError(missing)
    if spec.precision not in ("fp32", "fp16"):
        raise EngineError(f"unknown engine precision {spec.precision!r}; use 'fp32' or 'fp16'")
    if not 1 <= spec.min_batch <= spec.opt_batch <= spec.max_batch:
        raise EngineError(
            f"the batch profile must satisfy 1 <= min <= opt <= max, got {spec.min_batch}/{spec.opt_batch}/{spec.max_batch}"
        )
    import tensorrt as trt

    logger = trt_logger()
    builder = trt.Builder(logger)
    # TensorRT 10: networks are always explicit-batch (EXPLICIT_BATCH is deprecated and ignored), and
    # STRONGLY_TYPED makes the float16 graph's own types decide the precision. TensorRT 11: EXPLICIT_BATCH is
    # removed and every network is strongly typed (STRONGLY_TYPED is kept, deprecated and ignored). So the flag
    # is set wherever it exists, whatever the version string says.
    flags = 0
    if spec.precision == "fp16" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no parser error recorded"
        raise EngineError(
            f"TensorRT {trt.__version__}'s ONNX parser rejected {onnx_path}: {errors}. Check that the graph's opset "
            f"and operators are supported by this TensorRT version (onnx-tensorrt's operator list), or re-export it"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    if spec.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 is on by default and breaks fp32 parity
    profile = builder.create_optimization_profile()
    dynamic = 0
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = tuple(int(d) for d in t.shape)
        if not shape or all(d >= 0 for d in shape):
            continue  # static input: nothing for the profile to say
        if shape[0] >= 0 or any(d < 0 for d in shape[1:]):
            raise EngineError(
                f"input {t.name!r} of {onnx_path.name} has shape {list(shape)}; atld-deploy builds engines only for graphs "
                f"whose single dynamic dimension is the leading batch dimension; re-export the graph"
            )
        rest = shape[1:]
        profile.set_shape(t.name, (spec.min_batch, *rest), (spec.opt_batch, *rest), (spec.max_batch, *rest))
        dynamic += 1
    if dynamic and config.add_optimization_profile(profile) < 0:
        raise EngineError(f"TensorRT rejected the batch profile {spec.min_batch}/{spec.opt_batch}/{spec.max_batch} for {onnx_path.name}")
    cache = _attach_timing_cache(config, cache_path)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(
            f"TensorRT failed to build an engine from {onnx_path.name} (see the TensorRT log above; rerun with "
            f"--verbose for more, or raise the workspace limit of {spec.workspace_mb} MiB)"
        )
    build_seconds = round(time.perf_counter() - t0, 1)
    write_bytes_atomic(engine_path, bytes(plan))
    used = config.get_timing_cache()  # the attached cache, now holding this build's timings
    if used is None:
        used = cache
    if used is not None:
        write_bytes_atomic(cache_path, bytes(used.serialize()))
    sidecar = dict(
        machine_identity(),
        engine=engine_path.name,
        onnx=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        precision=spec.precision,
        min_batch=spec.min_batch,
        opt_batch=spec.opt_batch,
        max_batch=spec.max_batch,
        build_seconds=build_seconds,
    )
    write_json_atomic(sidecar_path, sidecar)
    log.info("built %s (%s, batch %d-%d) in %.0f s", engine_path.name, spec.precision, spec.min_batch, spec.max_batch, sidecar["build_seconds"])
    return sidecar


def _attach_timing_cache(config: Any, cache_path: Path) -> Any:
    """Attach the timing cache at `cache_path` to `config` (a fresh one if the file is missing, unreadable, or
    was made on another GPU or TensorRT version; the stale file is then overwritten after the build)."""
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if blob:
        log.warning("ignoring timing cache %s: it was made on another GPU or TensorRT version; starting a new one", cache_path)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("TensorRT could not create a timing cache; building without one")
        return None
    return cache


def check_engine_sidecar(sidecar_path: str | Path, onnx_path: str | Path | None = None) -> dict[str, Any]:
    """Check that an engine's sidecar matches this machine (TensorRT version, GPU, compute capability) and,
    if given, the SHA-256 of its ONNX source. Returns the sidecar.

    Raises:
        EngineError: missing/corrupt sidecar, TensorRT or GPU missing, or any mismatch; the message names
            the recorded and actual values and says how to rebuild.
    """
    side = read_json(Path(sidecar_path), EngineError, "every engine needs its sidecar", REBUILD_HINT)
    if onnx_path is not None:
        actual = sha256_file(onnx_path)
        if actual != side.get("onnx_sha256"):
            raise EngineError(
                f"engine {side.get('engine')} was built from an ONNX file with SHA-256 {str(side.get('onnx_sha256'))[:16]}..., "
                f"but {Path(onnx_path).name} now has {actual[:16]}...; {REBUILD_HINT}"
            )
    missing = tensorrt_status()
    if missing:
        raise EngineError(f"cannot load engine {side.get('engine')}: {missing}")
    here = machine_identity()
    for key in ("tensorrt", "gpu", "compute_capability"):
        if side.get(key) != here[key]:
            raise EngineError(
                f"engine {side.get('engine')} was built for {key} {side.get(key)!r}, this machine has {here[key]!r}; "
                f"a TensorRT engine only runs on the TensorRT version and GPU architecture that built it; {REBUILD_HINT}"
            )
    return side
