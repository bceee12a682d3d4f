"""Runtime stage: serve an exported artifact with TensorRT, ONNX Runtime or PyTorch.

    Classifier.load(ART, backend="auto") / .predict(images)   the embedding API
    infer_folder(IMAGES, ART, "preds.jsonl")                   a folder -> one prediction line per file
    run_bench(ART)                                             throughput and latency per backend
    open_runner(ART, manifest, graph, backend, device)         the low-level runner of one graph

Depends on the core and the export stage's manifest only (never on the training code); onnxruntime and
tensorrt are imported inside the runners that need them.
"""

from __future__ import annotations

from .bench import BenchRow, run_bench
from .classifier import Classifier, Prediction
from .folder import FolderSummary, infer_folder
from .runner import Runner
from .select import BACKENDS, PassedOver, open_runner

__all__ = [
    "BACKENDS", "BenchRow", "Classifier", "FolderSummary", "PassedOver", "Prediction", "Runner",
    "infer_folder", "open_runner", "run_bench",
]
