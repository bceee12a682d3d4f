"""Export stage: ONNX graphs (classifier, discriminator, the IMT pipeline as one graph), static checks,
parity against PyTorch, TensorRT engines. The artifact contract is `atld_deploy.artifact`.

Heavy libraries (onnx, onnxruntime, tensorrt) are imported inside the functions that need them, and the names
below are loaded on first use, so importing one submodule (e.g. `export.trace` from the PyTorch backend)
does not load the exporter.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ExportOptions": "exporter", "export_run": "exporter", "ParityReport": "parity", "check_engine_sidecar": "trt",
    "tensorrt_status": "trt", "verify_artifacts": "verify", "FORMAT_VERSION": "manifest", "MANIFEST": "manifest",
    "EngineEntry": "manifest", "GraphEntry": "manifest", "Manifest": "manifest", "TensorSpec": "manifest",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
