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
from ..artifact import TensorSpec
from .runner import Array, Runner

log = logging.getLogger(__name__)

TRT_INSTALL = "pip install 'atld-deploy[tensorrt]' on a machine with an NVIDIA GPU"

# trt.DataType member name -> torch dtype name; the I/O types TensorRT 10 and 11 engines can have that torch
# can hold (FP8/INT4/FP4/E8M0 cannot be, and never appear at the I/O of the graphs atld-deploy exports)
_TORCH_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}


def torch_dtype_name(trt: Any, dtype: Any) -> str | None:
    """The torch dtype name (`float32`, `bool`, ...) of a `trt.DataType`, or None if torch has no equivalent."""
    for trt_name, torch_name in _TORCH_DTYPES.items():
        if getattr(trt.DataType, trt_name, None) == dtype:
            return torch_name
    return None


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
        from ..export.trt import import_tensorrt, trt_logger

        trt = import_tensorrt()  # names what is wrong when the package is present but broken
        import torch

        if not torch.cuda.is_available():
            raise EngineError(f"TensorRT needs a CUDA GPU and torch sees none: {TRT_INSTALL}")

        runtime = trt.Runtime(trt_logger())
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())  # None on failure, per the API
        if engine is None:
            raise EngineError(
                f"TensorRT {trt.__version__} could not deserialize {self.path} (built by another TensorRT version "
                f"or for another GPU?); rebuild it with `atld-deploy export RUN --output ART --trt` on this machine"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        modes = {n: engine.get_tensor_mode(n) for n in names}
        engine_inputs = {n for n in names if modes[n] == trt.TensorIOMode.INPUT}
        want_in, want_out = {t.name for t in self.inputs}, {t.name for t in self.outputs}
        if engine_inputs != want_in or not want_out <= set(names) - engine_inputs:
            raise EngineError(
                f"{self.path} has inputs {sorted(engine_inputs)} and outputs {sorted(set(names) - engine_inputs)}, the "
                f"manifest expects inputs {sorted(want_in)} and outputs {sorted(want_out)}; rebuild the engine with "
                f"`atld-deploy export RUN --output ART --trt`"
            )
        dtypes: dict[str, str] = {}
        for n in names:
            dt = torch_dtype_name(trt, engine.get_tensor_dtype(n))
            if dt is None:
                raise EngineError(f"{self.path}: I/O tensor {n!r} has TensorRT type {engine.get_tensor_dtype(n)}, which torch cannot hold")
            dtypes[n] = dt
        for spec in (*self.inputs, *self.outputs):  # the engine must read/write what the manifest promises
            if dtypes[spec.name] != spec.dtype:
                raise EngineError(
                    f"{self.path}: tensor {spec.name!r} is {dtypes[spec.name]} in the engine but {spec.dtype} in the "
                    f"manifest; rebuild the engine from the artifact's graph with `atld-deploy export RUN --output ART --trt`"
                )
        # every engine output needs an address, including ones the manifest's caller does not read
        self._engine_outputs = {n: dtypes[n] for n in names if modes[n] == trt.TensorIOMode.OUTPUT}
        context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context for {self.path} (out of GPU memory?)")
        self._engine = engine
        self._context = context
        self._stream = torch.cuda.Stream()

    def _infer(self, feeds: Mapping[str, Array], batch: int) -> dict[str, Array]:  # noqa: ARG002
        import torch

        ctx = self._context
        caller = torch.cuda.current_stream()
        bound: list[Any] = []
        for spec in self.inputs:
            x = feeds[spec.name]
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(np.ascontiguousarray(x))
            x = x.to("cuda", non_blocking=True).contiguous()
            bound.append(x)
            shape = tuple(int(d) for d in x.shape)
            if not ctx.set_input_shape(spec.name, shape):
                raise EngineError(
                    f"{self.path} rejected input shape {list(shape)} for {spec.name!r} (outside the engine's batch "
                    f"profile {self.min_batch}-{self.max_batch}?)"
                )
            if not ctx.set_tensor_address(spec.name, x.data_ptr()):
                raise EngineError(f"TensorRT refused the device buffer of input {spec.name!r} for {self.path}")
        out: dict[str, Any] = {}
        for name, dtype in self._engine_outputs.items():
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))  # derived from the input shapes just set
            if any(d < 0 for d in shape):
                raise EngineError(
                    f"TensorRT could not derive the shape of output {name!r} of {self.path} from the input shapes "
                    f"(got {list(shape)}); the graph's outputs must depend only on the batch size"
                )
            y = torch.empty(shape, dtype=getattr(torch, dtype), device="cuda")
            if not ctx.set_tensor_address(name, y.data_ptr()):
                raise EngineError(f"TensorRT refused the device buffer of output {name!r} for {self.path}")
            out[name] = y
        self._stream.wait_stream(caller)  # inputs produced on the caller's stream must be ready
        if not ctx.execute_async_v3(self._stream.cuda_stream):
            raise EngineError(f"TensorRT execution of {self.path} failed; run with --verbose for TensorRT's log")
        for t in (*bound, *out.values()):
            t.record_stream(self._stream)  # the caching allocator must not reuse them before the engine is done
        caller.wait_stream(self._stream)  # callers see finished outputs in their own stream order
        return {t.name: out[t.name] for t in self.outputs}

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()  # no enqueued work may outlive the context that runs it
        self._context = None
        self._engine = None
        self._stream = None
