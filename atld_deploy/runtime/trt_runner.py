"""TensorRT backend (TensorRT 10/11 Python API): a serialized engine run on a CUDA stream.

Inputs are made CUDA tensors (kept as they are when they already are), every I/O tensor is bound with
`set_tensor_address`, outputs are allocated from the shapes TensorRT derives for the actual input shape
(never the profile's max), and `execute_async_v3` runs on a private stream ordered after torch's current one.
The engine's sidecar (TensorRT version, GPU, source-graph hash) is checked by the caller before opening.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import EngineError
from ..export.manifest import TensorSpec
from .runner import Array, Runner

log = logging.getLogger(__name__)

TRT_INSTALL = "pip install 'atld-deploy[tensorrt]' on a machine with an NVIDIA GPU"


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine whose I/O tensors are described by the manifest's source graph."""

    backend = "tensorrt"

    def __init__(
        self,
        path: Path,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        min_batch: int,
        max_batch: int,
    ) -> None:
        super().__init__(inputs, outputs, device="cuda", min_batch=min_batch, max_batch=max_batch)
        self.path = Path(path)
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._engine_outputs: dict[str, str] = {}

    def _open(self) -> None:
        try:
            import tensorrt as trt
        except ImportError as e:
            raise EngineError(f"TensorRT is not installed: {TRT_INSTALL}") from e
        import torch

        if not torch.cuda.is_available():
            raise EngineError("TensorRT needs a CUDA GPU and torch sees none")
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise EngineError(
                f"TensorRT {trt.__version__} could not deserialize {self.path} (built by another TensorRT version "
                f"or for another GPU?); rebuild it with `atld-deploy export RUN --out ART --trt` on this machine"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        wanted = {t.name for t in self.inputs} | {t.name for t in self.outputs}
        if not wanted <= set(names):
            raise EngineError(f"{self.path} has I/O tensors {sorted(names)}, the manifest expects {sorted(wanted)}")
        # every engine output needs an address, including ones the manifest's caller does not read
        self._engine_outputs = {
            n: str(np.dtype(trt.nptype(engine.get_tensor_dtype(n))))
            for n in names
            if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT
        }
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = torch.cuda.Stream()

    def _infer(self, feeds: Mapping[str, Array], batch: int) -> dict[str, Array]:  # noqa: ARG002
        import torch

        ctx = self._context
        caller = torch.cuda.current_stream()
        bound: list[Any] = []
        for spec in self.inputs:
            x = feeds[spec.name]
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(x)
            x = x.to("cuda", non_blocking=True).contiguous()
            bound.append(x)
            if not ctx.set_input_shape(spec.name, tuple(x.shape)):
                raise EngineError(f"{self.path} rejected input shape {tuple(x.shape)} for {spec.name!r}")
            ctx.set_tensor_address(spec.name, x.data_ptr())
        out: dict[str, Any] = {}
        for name, dtype in self._engine_outputs.items():
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))  # from the actual input shape
            y = torch.empty(shape, dtype=getattr(torch, dtype), device="cuda")
            ctx.set_tensor_address(name, y.data_ptr())
            out[name] = y
        self._stream.wait_stream(caller)  # inputs produced on the caller's stream must be ready
        if not ctx.execute_async_v3(self._stream.cuda_stream):
            raise EngineError(f"TensorRT execution of {self.path} failed; run with --verbose for TensorRT's log")
        for t in (*bound, *out.values()):
            t.record_stream(self._stream)  # the caching allocator must not reuse them before the engine is done
        caller.wait_stream(self._stream)  # callers see finished outputs in their own stream order
        return {t.name: out[t.name] for t in self.outputs}

    def _close(self) -> None:
        self._context = None
        self._engine = None
        self._stream = None
