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
    ART/model.sig            optional: a signature over every file (`atld-deploy sign`)

Torch-free: export and every runtime import it. `Manifest.load` validates manifest.json against the published
schema (atld_deploy.schema) before building anything, confines every file it names to plain names inside the
artifact, requires the listing to be complete (every file a backend loads, with its SHA-256) and checks the
hashes. Hashes catch accidents and tampering that forgot the manifest; signatures (atld_deploy.signing) catch
tampering that rewrote it. The full contract is docs/ARTIFACT.md.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ArtifactError, ExportError
from .io import read_json, sha256_file, write_json_atomic
from .schema import MANIFEST_SCHEMA, validate

if TYPE_CHECKING:
    from .imt import IMTConfig

log = logging.getLogger(__name__)

__all__ = [
    "ARTIFACT_FORMAT", "BATCH", "CARD_FILE", "FORMAT_VERSION", "MANIFEST", "PARITY", "REEXPORT_HINT",
    "RUN_COPY", "RUN_DIR", "SIGNATURE", "TIMING_CACHE", "EngineEntry", "GraphEntry", "Manifest", "TensorSpec", "artifact_entries",
    "confined", "external_data_files", "input_spec", "is_artifact_manifest",
]

MANIFEST = "manifest.json"
ARTIFACT_FORMAT = "atld-deploy/artifact"  # the marker: only a manifest carrying it makes a directory ours
FORMAT_VERSION = 3  # 2: run_files (hashes of the run/ copy); 3: the "format" marker
RUN_DIR = "run"
# what export copies from the run into ART/run/ (the names of atld_deploy.run, kept here torch-free)
RUN_COPY = ("config.json", "classes.json", "classifier.safetensors", "discriminator.safetensors")
PARITY = "parity.json"
CARD_FILE = "CARD.md"  # the robustness card a person reads (its figures are listed in `files` too)
SIGNATURE = "model.sig"
TIMING_CACHE = "timing.cache"
BATCH = "batch"  # the name of the dynamic batch dimension in every graph
REEXPORT_HINT = "re-export with `atld-deploy export RUN --output ART`"


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
    sidecar_sha256: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineEntry":
        return cls(
            file=str(d["file"]), source_graph=str(d["source_graph"]), precision=str(d["precision"]),
            sidecar=str(d["sidecar"]), sha256=str(d["sha256"]), min_batch=int(d["min_batch"]),
            opt_batch=int(d["opt_batch"]), max_batch=int(d["max_batch"]), sidecar_sha256=str(d["sidecar_sha256"]),
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
    files: dict[str, str] = field(default_factory=dict)  # other vouched-for files (e.g. the card) -> SHA-256
    # written by `atld-deploy card` (all optional: an artifact without them serves uncalibrated, without a threshold)
    calibration: dict[str, Any] = field(default_factory=dict)  # temperature per IMT mode, ECE before/after
    detector: dict[str, Any] = field(default_factory=dict)  # p_natural threshold at a measured false-positive rate
    card: dict[str, Any] = field(default_factory=dict)  # the robustness card: per-mode accuracies, n, eps, seed

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = {"format": ARTIFACT_FORMAT, **asdict(self)}
        for key in ("calibration", "detector", "card"):  # absent rather than empty: the schema requires their fields
            if not d[key]:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: Path | str = MANIFEST) -> "Manifest":
        """Build from parsed JSON, validated against the schema first.

        Raises:
            ArtifactError: not a manifest, an older format, or any violation of the schema (one line naming it).
        """
        if not isinstance(d, dict) or d.get("format") != ARTIFACT_FORMAT and "format_version" not in d:
            raise ArtifactError(f"{where} is not an atld-deploy artifact manifest (no \"format\": \"{ARTIFACT_FORMAT}\"); "
                                f"{REEXPORT_HINT}")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"{where} has format_version {version!r}, this atld-deploy reads {FORMAT_VERSION}; {REEXPORT_HINT}"
            )
        validate(d, MANIFEST_SCHEMA, where, ArtifactError, REEXPORT_HINT)
        m = cls(
            format_version=int(d["format_version"]),
            classes=[str(c) for c in d["classes"]],
            input=dict(d["input"]),
            imt=dict(d["imt"]),
            graphs={k: GraphEntry.from_dict(g) for k, g in d["graphs"].items()},
            engines={k: EngineEntry.from_dict(e) for k, e in d["engines"].items()},
            verified=bool(d["verified"]),
            producer=dict(d.get("producer", {})),
            run=dict(d.get("run", {})),
            run_files={str(k): str(v) for k, v in d["run_files"].items()},
            files={str(k): str(v) for k, v in d.get("files", {}).items()},
            calibration=dict(d.get("calibration", {})),
            detector=dict(d.get("detector", {})),
            card=dict(d.get("card", {})),
        )
        m._check_consistent(where)
        return m

    def _check_consistent(self, where: Path | str) -> None:
        """What the schema cannot say: the class count matches every logits output, engines name real graphs."""
        k = len(self.classes)
        for key, g in self.graphs.items():
            for t in g.outputs + g.inputs:
                if t.name in ("logits", "class_logits") and t.shape[-1] != k:
                    raise ArtifactError(f"{where}: graph {key!r} {t.name} has {t.shape[-1]} classes but the manifest "
                                        f"names {k}; {REEXPORT_HINT}")
        for key, e in self.engines.items():
            if e.source_graph not in self.graphs:
                raise ArtifactError(f"{where}: engine {key!r} is built from {e.source_graph!r}, which is not a graph "
                                    f"of this artifact; {REEXPORT_HINT}")
            if not e.min_batch <= e.opt_batch <= e.max_batch:
                raise ArtifactError(f"{where}: engine {key!r} batch profile {e.min_batch}/{e.opt_batch}/{e.max_batch} "
                                    f"is not ordered; {REEXPORT_HINT}")
        names = [n for n, _ in self.listed_files()]
        if len(names) != len(set(names)):
            raise ArtifactError(f"{where}: a file is listed twice; {REEXPORT_HINT}")
        if self.card and CARD_FILE not in self.files:
            raise ArtifactError(f"{where} carries a robustness card but does not list {CARD_FILE} with its SHA-256, so "
                                f"the card cannot be checked; rewrite it with `atld-deploy card ART`")

    @classmethod
    def load(cls, art_dir: str | Path, check_hashes: bool = True) -> "Manifest":
        """Read `ART/manifest.json` and (by default) check every listed file (confinement, completeness, SHA-256).

        Raises:
            ArtifactError: missing directory or manifest, not a regular file, bad JSON, unknown format version,
                a schema violation, a listed file missing, outside the artifact or modified (the message names it).
        """
        art = Path(art_dir)
        if not art.is_dir():
            raise ArtifactError(f"artifact directory {art} does not exist; create it with `atld-deploy export RUN --output {art}`")
        path = art / MANIFEST
        d = read_json(path, ArtifactError, f"{art} is not an atld-deploy artifact directory", REEXPORT_HINT)
        m = cls.from_dict(d, where=path)
        if check_hashes:
            m.check_files(art)
        return m

    def listed_files(self, art_dir: str | Path | None = None) -> list[tuple[str, str]]:
        """(relative name, SHA-256) of every file the manifest vouches for. `run/` files are included when
        `art_dir` is None or has a run/ directory (it may be left out as a whole for ONNX/TensorRT-only shipping)."""
        entries: list[tuple[str, str]] = [(g.file, g.sha256) for g in self.graphs.values()]
        entries += [(e.file, e.sha256) for e in self.engines.values()]
        entries += [(e.sidecar, e.sidecar_sha256) for e in self.engines.values()]
        entries += sorted(self.files.items())
        if art_dir is None or os.path.lexists(Path(art_dir) / RUN_DIR):
            entries += [(f"{RUN_DIR}/{name}", digest) for name, digest in sorted(self.run_files.items())]
        return entries

    def check_files(self, art_dir: str | Path) -> None:
        """Check every file the manifest vouches for: inside the artifact, complete, unmodified.

        A missing `run/` directory as a whole is allowed (artifacts shipped for ONNX Runtime/TensorRT only; the
        PyTorch backend and `verify` then say they need it); a `run/` with a changed, missing or unlisted file is
        not. Graphs must not load external data (export never writes any, so none can be vouched for).
        """
        art = Path(art_dir)
        if os.path.lexists(art / RUN_DIR) and set(self.run_files) != set(RUN_COPY):
            missing = sorted(set(RUN_COPY) - set(self.run_files))
            raise ArtifactError(f"{art / MANIFEST} does not list every file of run/ (missing: {', '.join(missing) or 'none'}; "
                                f"unexpected: {', '.join(sorted(set(self.run_files) - set(RUN_COPY))) or 'none'}), so the "
                                f"weights the PyTorch backend loads would go unchecked; {REEXPORT_HINT}")
        for name, digest in self.listed_files(art):
            p = confined(art, name)
            if not p.is_file():
                raise ArtifactError(f"{p} is listed in {art / MANIFEST} but missing; {REEXPORT_HINT}")
            if sha256_file(p) != digest:
                raise ArtifactError(f"{p} does not match the SHA-256 that {art / MANIFEST} records: the file was "
                                    f"modified or damaged after export; {REEXPORT_HINT}")
        for key, g in self.graphs.items():
            external = external_data_files(art / g.file)
            if external:
                raise ArtifactError(f"{art / g.file} (graph {key!r}) loads external data ({', '.join(external[:3])}) that "
                                    f"the manifest cannot vouch for; {REEXPORT_HINT}")

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
                f"build it with `atld-deploy export RUN --output ART --trt` on the GPU machine"
            )
        return Path(art_dir) / self.engines[key].file

    def imt_config(self) -> "IMTConfig":
        """The IMT parameters the pipeline graph was exported with, as the core `IMTConfig` (imports torch)."""
        from .imt import IMTConfig

        return IMTConfig.from_dict(self.imt)

    def require_verified(self, art_dir: str | Path, allow_unverified: bool = False) -> None:
        """Refuse to serve an artifact whose manifest does not record a passed verification.

        Raises:
            ArtifactError: `verified` is false and `allow_unverified` was not given.
        """
        if not self.verified and not allow_unverified:
            raise ArtifactError(f"{art_dir} has not passed parity verification (verified: false in its manifest): run "
                                f"`atld-deploy verify {art_dir} --record`, or pass --allow-unverified to serve it anyway")

    def run_dir(self, art_dir: str | Path) -> Path:
        """The copy of the run inside the artifact (`load_run` works on it)."""
        return Path(art_dir) / RUN_DIR

    def temperature(self, mode: str) -> float:
        """The calibration temperature of IMT mode `mode` (static | imt | imt-plus); 1.0 when not calibrated."""
        return float(self.calibration.get("temperature", {}).get(mode, 1.0))

    def suspect_threshold(self) -> float | None:
        """The p_natural below which an input is flagged `suspect`, or None when the artifact has no detector."""
        t = self.detector.get("threshold")
        return None if t is None else float(t)

    def with_verified(self, verified: bool) -> "Manifest":
        return replace(self, verified=verified)


def confined(art: Path, name: str) -> Path:
    """`art/name` if `name` is a plain relative name that stays inside `art` (a symlink only if its target does).

    Raises:
        ArtifactError: an absolute name, a `..` component, a backslash, or a path that resolves outside `art`.
    """
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts) or len(parts) > 2:
        raise ArtifactError(f"the manifest of {art} names {name!r}, which is not a plain file name inside the artifact; "
                            f"refusing to open it ({REEXPORT_HINT})")
    p = art / name
    root = art.resolve()
    try:
        p.resolve().relative_to(root)
    except ValueError:
        raise ArtifactError(f"{p} leads outside the artifact directory {art} (a symbolic link); refusing to open it; "
                            f"{REEXPORT_HINT}") from None
    return p


def external_data_files(graph: Path) -> list[str]:
    """The external-data files an ONNX graph references (parsed without loading any data)."""
    import onnx

    try:
        model = onnx.load(str(graph), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a damaged file
        raise ArtifactError(f"{graph} is not a readable ONNX graph ({type(e).__name__}); {REEXPORT_HINT}") from None
    names = []
    for t in list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            names += [e.value for e in t.external_data if e.key == "location"]
    return sorted(set(names))


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
    names: dict[str, frozenset[str] | None] = {PARITY: None, RUN_DIR: frozenset(RUN_COPY), TIMING_CACHE: None,
                                               SIGNATURE: None}
    listed = list(d.get("files") or {}) if isinstance(d.get("files"), dict) else []
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
