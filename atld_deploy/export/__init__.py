"""Export stage: ONNX graphs (classifier, discriminator, the IMT pipeline as one graph), static checks,
parity against PyTorch, TensorRT engines. The artifact contract is `manifest.py`.

Heavy libraries (onnx, onnxruntime, tensorrt, polygraphy) are imported inside the functions that need them.
"""

from __future__ import annotations

from .manifest import FORMAT_VERSION, MANIFEST, EngineEntry, GraphEntry, Manifest, TensorSpec

__all__ = ["FORMAT_VERSION", "MANIFEST", "EngineEntry", "GraphEntry", "Manifest", "TensorSpec"]
