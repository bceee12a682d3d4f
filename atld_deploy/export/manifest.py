"""The artifact contract: what `atld-deploy export` writes and every runtime reads.

    ART/manifest.json        this file's `Manifest`, the single source of truth for consumers
    ART/classifier.onnx      images [batch,C,H,W] float32 in [0,1] -> logits [batch,K]
    ART/discriminator.onnx   logits [batch,K] -> natural_logit [batch], class_logits [batch,K]
    ART/pipeline.onnx        images -> logits (of the IMT-transformed input), p_natural (of the input as it
                             arrived), optionally images_imt (the transformed input)
    ART/pipeline_uint8.onnx  optional: images_uint8 [batch,H,W,C] uint8 -> the same outputs
    ART/*.engine + *.json    optional TensorRT engines and their sidecars
    ART/parity.json          the last parity report (export or `atld-deploy verify`)
    ART/run/                 a copy of the run (config.json, classes.json, *.safetensors): `load_run(ART/"run")`

Every file listed in `graphs` and `engines` carries its SHA-256; `Manifest.load` checks them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..imt import IMTConfig
from ..io import read_json, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ARTIFACT_FORMAT = "atld-deploy/artifact"  # the marker: only a manifest carrying it makes a directory ours
FORMAT_VERSION = 3  # 2: run_files (hashes of the run/ copy); 3: the "format" marker
RUN_DIR = "run"
# what export copies from the run into ART/run/ (the names of atld_deploy.run, kept here torch-free)
RUN_COPY = ("config.json", "classes.json", "classifier.safetensors", "discriminator.safetensors")
PARITY = "parity.json"
BATCH = "batch"  # the name of the dynamic batch dimension in every graph
GRAPH_KEYS = ("classifier", "discriminator", "pipeline", "pipeline_uint8")
REEXPORT_HINT = "re-export with `atld-deploy export RUN --out ART`"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. `shape` entries are ints or the string "batch" (dynamic)."""

    name: str
    dtype: str
    shape: list[int | str]
    meaning: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        return cls(name=str(d["name"]), dtype=str(d["dtype"]), shape=list(d["shape"]), meaning=str(d["meaning"]))


@dataclass(frozen=True)
class GraphEntry:
    """An ONNX graph file in the artifact directory and its interface."""

    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sha256: str
    precision: str = "fp32"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GraphEntry":
        return cls(
            file=str(d["file"]),
            inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
            outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
            sha256=str(d["sha256"]),
            precision=str(d.get("precision", "fp32")),
        )

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]


@dataclass(frozen=True)
class EngineEntry:
    """A serialized TensorRT engine built from `source_graph` (a key of `Manifest.graphs`)."""

    file: str
    source_graph: str
    precision: str
    sidecar: str
    sha256: str
    min_batch: int
    opt_batch: int
    max_batch: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineEntry":
        return cls(
            file=str(d["file"]), source_graph=str(d["source_graph"]), precision=str(d["precision"]),
            sidecar=str(d["sidecar"]), sha256=str(d["sha256"]), min_batch=int(d["min_batch"]),
            opt_batch=int(d["opt_batch"]), max_batch=int(d["max_batch"]),
        )


@dataclass(frozen=True)
class Manifest:
    """Everything a consumer (Python or C++) needs to use the exported graphs without our code."""

    format_version: int
    classes: list[str]
    input: dict[str, Any]
    imt: dict[str, Any]
    graphs: dict[str, GraphEntry]
    engines: dict[str, EngineEntry] = field(default_factory=dict)
    verified: bool = False
    producer: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    run_files: dict[str, str] = field(default_factory=dict)  # ART/run/<name> -> SHA-256 (the torch backend's weights)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"format": ARTIFACT_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: Path | str = MANIFEST) -> "Manifest":
        """Build from parsed JSON. Raises ExportError on an unknown version or missing keys."""
        if not isinstance(d, dict) or d.get("format") != ARTIFACT_FORMAT and "format_version" not in d:
            raise ExportError(f"{where} is not an atld-deploy artifact manifest (no \"format\": \"{ARTIFACT_FORMAT}\"); "
                              f"{REEXPORT_HINT}")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ExportError(
                f"{where} has format_version {version!r}, this atld-deploy reads {FORMAT_VERSION}; {REEXPORT_HINT}"
            )
        try:
            return cls(
                format_version=int(d["format_version"]),
                classes=[str(c) for c in d["classes"]],
                input=dict(d["input"]),
                imt=dict(d["imt"]),
                graphs={k: GraphEntry.from_dict(g) for k, g in d["graphs"].items()},
                engines={k: EngineEntry.from_dict(e) for k, e in d.get("engines", {}).items()},
                verified=bool(d.get("verified", False)),
                producer=dict(d.get("producer", {})),
                run=dict(d.get("run", {})),
                run_files={str(k): str(v) for k, v in d["run_files"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ExportError(f"{where} is incomplete or malformed ({type(e).__name__}: {e}); {REEXPORT_HINT}") from e

    @classmethod
    def load(cls, art_dir: str | Path, check_hashes: bool = True) -> "Manifest":
        """Read `ART/manifest.json` and (by default) check every listed file's SHA-256.

        Raises:
            ExportError: missing directory or manifest, bad JSON, unknown format version, a listed file
                missing, or a SHA-256 mismatch (the message names the file).
        """
        art = Path(art_dir)
        if not art.is_dir():
            raise ExportError(f"artifact directory {art} does not exist; create it with `atld-deploy export RUN --out {art}`")
        path = art / MANIFEST
        d = read_json(path, ExportError, f"{art} is not an atld-deploy artifact directory", REEXPORT_HINT)
        m = cls.from_dict(d, where=path)
        if check_hashes:
            m.check_files(art)
        return m

    def check_files(self, art_dir: str | Path) -> None:
        """Check that every graph, engine and run/ file exists and matches its recorded SHA-256.

        A missing `run/` directory as a whole is allowed (artifacts shipped for ONNX Runtime/TensorRT only; the
        PyTorch backend and `verify` then say they need it); a `run/` with a changed or missing file is not.
        """
        art = Path(art_dir)
        entries: list[tuple[str, str]] = [(g.file, g.sha256) for g in self.graphs.values()]
        entries += [(e.file, e.sha256) for e in self.engines.values()]
        if (art / RUN_DIR).exists():
            entries += [(f"{RUN_DIR}/{name}", digest) for name, digest in self.run_files.items()]
        for name, digest in entries:
            p = art / name
            if not p.is_file():
                raise ExportError(f"{p} is listed in {art / MANIFEST} but missing; {REEXPORT_HINT}")
            actual = sha256_file(p)
            if actual != digest:
                raise ExportError(
                    f"{p} has SHA-256 {actual[:16]}..., the manifest records {digest[:16]}...: the file was modified "
                    f"or damaged after export; {REEXPORT_HINT}"
                )

    def save(self, art_dir: str | Path) -> Path:
        """Write `ART/manifest.json` atomically and return its path."""
        path = Path(art_dir) / MANIFEST
        write_json_atomic(path, self.to_dict())
        return path

    # ------------------------------------------------------------------ accessors
    def graph_path(self, art_dir: str | Path, key: str) -> Path:
        """Path of graph `key` (classifier, discriminator, pipeline, pipeline_uint8)."""
        if key not in self.graphs:
            raise ExportError(
                f"graph {key!r} is not in this artifact (it has: {', '.join(sorted(self.graphs))}); "
                f"re-export with the option that produces it"
            )
        return Path(art_dir) / self.graphs[key].file

    def engine_path(self, art_dir: str | Path, key: str) -> Path:
        """Path of TensorRT engine `key` (e.g. pipeline, classifier)."""
        if key not in self.engines:
            raise ExportError(
                f"no TensorRT engine {key!r} in this artifact (it has: {', '.join(sorted(self.engines)) or 'none'}); "
                f"build it with `atld-deploy export RUN --out ART --trt` on the GPU machine"
            )
        return Path(art_dir) / self.engines[key].file

    def imt_config(self) -> IMTConfig:
        """The IMT parameters the pipeline graph was exported with, as the core `IMTConfig`."""
        return IMTConfig.from_dict(self.imt)

    def run_dir(self, art_dir: str | Path) -> Path:
        """The copy of the run inside the artifact (`load_run` works on it)."""
        return Path(art_dir) / RUN_DIR

    def with_verified(self, verified: bool) -> "Manifest":
        return replace(self, verified=verified)


def is_artifact_manifest(d: Any) -> bool:
    """True if parsed JSON `d` is an atld-deploy manifest: the current marker, or an older format's shape."""
    if not isinstance(d, dict):
        return False
    if d.get("format") == ARTIFACT_FORMAT:
        return True
    return d.get("format_version") in (1, 2) and isinstance(d.get("graphs"), dict) and isinstance(d.get("classes"), list)


def artifact_entries(d: Any) -> dict[str, frozenset[str] | None]:
    """Every entry export may have written into an artifact directory described by manifest JSON `d`:
    {name: None for a file, or the names the run/ copy may hold}. Names are taken from the manifest only if
    they are plain file names."""
    names: dict[str, frozenset[str] | None] = {PARITY: None, RUN_DIR: frozenset(RUN_COPY), "timing.cache": None}
    listed = []
    for section in ("graphs", "engines"):
        for entry in (d.get(section) or {}).values() if isinstance(d.get(section), dict) else ():
            if isinstance(entry, dict):
                listed += [entry.get("file"), entry.get("sidecar")]
    for name in listed:
        if isinstance(name, str) and name and "/" not in name and "\\" not in name and name not in (".", ".."):
            names[name] = None
    return names


def input_spec(channels: int, size: int, resize_policy: str) -> dict[str, Any]:
    """The `input` section: what the float pipeline's `images` input expects."""
    return {
        "name": "images",
        "dtype": "float32",
        "layout": "NCHW",
        "shape": [BATCH, channels, size, size],
        "channels": channels,
        "size": size,
        "range": [0.0, 1.0],
        "normalization": "inside the graph",
        "resize_policy": resize_policy,
        "uint8_variant": {
            "name": "images_uint8", "dtype": "uint8", "layout": "NHWC", "shape": [BATCH, size, size, channels],
            "range": [0, 255], "note": "divided by 255 inside pipeline_uint8.onnx",
        },
    }
