"""Export stage: ONNX graphs (classifier, discriminator, the IMT pipeline as one graph), static checks,
parity against PyTorch, TensorRT engines. The artifact contract is `manifest.py`.

Heavy libraries (onnx, onnxruntime, tensorrt, polygraphy) are imported inside the functions that need them.
"""

from __future__ import annotations

from .exporter import ExportOptions, export_run
from .manifest import FORMAT_VERSION, MANIFEST, EngineEntry, GraphEntry, Manifest, TensorSpec
from .parity import ParityReport
from .trt import check_engine_sidecar, tensorrt_status
from .verify import verify_artifacts

__all__ = [
    "FORMAT_VERSION", "MANIFEST", "EngineEntry", "ExportOptions", "GraphEntry", "Manifest", "ParityReport", "TensorSpec",
    "check_engine_sidecar", "export_run", "tensorrt_status", "verify_artifacts",
]
