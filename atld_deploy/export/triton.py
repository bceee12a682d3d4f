"""NVIDIA Triton Inference Server model repository from an artifact directory.

    REPO/<name>/config.pbtxt          platform onnxruntime_onnx, model.onnx = the IMT pipeline graph
    REPO/<name>/1/model.onnx
    REPO/<name>/labels.txt            class names (Triton's classification extension)
    REPO/<name>_trt/config.pbtxt      platform tensorrt_plan, when the artifact has an engine
    REPO/<name>_trt/1/model.plan

Dims in config.pbtxt leave out the batch dimension (`max_batch_size` > 0). Outputs whose only
dimension is the batch (p_natural) are declared as dims [1] with `reshape { shape: [] }`, Triton's
documented form for per-example scalars.

Class and tensor names are written verbatim, so names a line-based or quoted-string reader would split
are refused before anything is written. Every file goes through an atomic write (a planted symlink is
replaced, its target never written).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..io import copy_file_atomic, write_bytes_atomic
from ..names import check_names
from .manifest import BATCH, MANIFEST, GraphEntry, Manifest, TensorSpec

_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int64": "TYPE_INT64"}


@dataclass(frozen=True)
class TritonOptions:
    name: str = "atld"
    graph: str = "pipeline"  # or "classifier" (no IMT)
    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (8, 32, 64)
    max_queue_delay_us: int = 500
    instances: int = 1
    kind: str = "KIND_GPU"  # KIND_GPU | KIND_CPU

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ConfigError(f"Triton model name must be letters, digits, '_' or '-', got {self.name!r}")
        if self.max_batch_size < 1 or self.instances < 1:
            raise ConfigError("Triton max_batch_size and instance count must be >= 1")
        if self.kind not in ("KIND_GPU", "KIND_CPU"):
            raise ConfigError(f"Triton instance kind must be KIND_GPU or KIND_CPU, got {self.kind!r}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ConfigError(f"preferred batch sizes {bad} must lie in 1..max_batch_size ({self.max_batch_size})")


def _tensor(t: TensorSpec, labels: bool) -> str:
    if not t.shape or t.shape[0] != BATCH:
        raise ConfigError(f"tensor {t.name} has no leading batch dimension ({t.shape}); Triton batching needs one")
    dims = [int(d) for d in t.shape[1:]]
    if t.dtype not in _TRITON_TYPES:
        raise ConfigError(f"tensor {t.name} has dtype {t.dtype}, which this writer does not map to a Triton type")
    body = [f'    name: "{t.name}"', f"    data_type: {_TRITON_TYPES[t.dtype]}"]
    if dims:
        body.append(f"    dims: [ {', '.join(map(str, dims))} ]")
    else:
        body += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    if labels:
        body.append('    label_filename: "labels.txt"')
    return "  {\n" + "\n".join(body) + "\n  }"


def config_pbtxt(model_name: str, platform: str, graph: GraphEntry, opts: TritonOptions) -> str:
    """The text-format ModelConfig for one model.

    Raises:
        ConfigError: a tensor name that would break out of its quoted string, or a tensor Triton cannot batch.
    """
    check_names([*graph.input_names(), *graph.output_names()], "tensor name", f"the manifest entry of {graph.file}",
                ConfigError, "re-export the artifact")
    inputs = ",\n".join(_tensor(t, False) for t in graph.inputs)
    outputs = ",\n".join(_tensor(t, t.name == "logits") for t in graph.outputs)
    preferred = ", ".join(str(b) for b in opts.preferred_batch_sizes)
    return (
        f'name: "{model_name}"\nplatform: "{platform}"\nmax_batch_size: {opts.max_batch_size}\n'
        f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {opts.max_queue_delay_us}\n}}\n"
        f"instance_group [\n  {{\n    count: {opts.instances}\n    kind: {opts.kind}\n  }}\n]\n"
    )


def _write_model(repo: Path, model_name: str, src: Path, filename: str, config: str, labels: str) -> Path:
    d = repo / model_name
    copy_file_atomic(src, d / "1" / filename)
    write_bytes_atomic(d / "labels.txt", labels.encode())
    write_bytes_atomic(d / "config.pbtxt", config.encode())
    return d


def write_triton_repo(art_dir: str | Path, repo: str | Path, opts: TritonOptions = TritonOptions()) -> list[Path]:
    """Write (or update) Triton model folders for `opts.graph` of the artifact; returns the model folders.

    Raises:
        ExportError: the artifact is missing or tampered (hashes are checked first).
        ConfigError: invalid options, class or tensor names Triton's files cannot carry, or a max batch larger
        than the engine's profile allows (all checked before anything is written).
    """
    art, repo = Path(art_dir), Path(repo)
    m = Manifest.load(art)
    graph = m.graphs[opts.graph] if opts.graph in m.graphs else None
    if graph is None:
        raise ConfigError(f"graph {opts.graph!r} is not in {art} (it has {', '.join(sorted(m.graphs))})")
    check_names(m.classes, "class name", art / MANIFEST, ConfigError, "re-export from a run with safe class names")
    labels = "\n".join(m.classes) + "\n"
    models = [(opts.name, m.graph_path(art, opts.graph), "model.onnx",
               config_pbtxt(opts.name, "onnxruntime_onnx", graph, opts))]
    engine = m.engines.get(opts.graph)
    if engine is not None:
        if opts.max_batch_size > engine.max_batch:
            raise ConfigError(f"max_batch_size {opts.max_batch_size} exceeds the engine's profile max {engine.max_batch}; "
                              f"rebuild with --max-batch {opts.max_batch_size} or lower --triton-max-batch")
        name = f"{opts.name}_trt"
        models.append((name, m.engine_path(art, opts.graph), "model.plan", config_pbtxt(name, "tensorrt_plan", graph, opts)))
    return [_write_model(repo, name, src, filename, config, labels) for name, src, filename, config in models]
