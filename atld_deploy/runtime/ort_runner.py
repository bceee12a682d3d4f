"""ONNX Runtime backend: CPU provider, or the CUDA provider with IOBinding so GPU tensors never visit the host.

`onnxruntime` (extra `cpu`) and `onnxruntime-gpu` (extra `gpu`) install the same module; install exactly one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import EngineError
from ..artifact import TensorSpec
from .runner import Array, Runner, batch_shape

log = logging.getLogger(__name__)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
GPU_INSTALL = "pip install 'atld-deploy[gpu]' (after `pip uninstall onnxruntime`)"


def ort_reason(e: BaseException) -> str:
    """ONNX Runtime's whole message on one line: it may hold line breaks (a node's name, a source location)
    and the part after the first one is often the part that says what is wrong."""
    return str(e).strip().replace("\r", "\\r").replace("\n", "\\n")


def available_providers() -> list[str] | None:
    """ONNX Runtime's providers on this machine, or None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return list(ort.get_available_providers())


class OnnxRuntimeRunner(Runner):
    """Runs one `.onnx` graph with ONNX Runtime on `device` ("cpu" or "cuda")."""

    backend = "onnxruntime"

    def __init__(
        self,
        path: Path,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        device: str = "cpu",
        threads: int = 0,
        spin: bool = False,
        iobinding: bool | None = None,
    ) -> None:
        super().__init__(inputs, outputs, device=device)
        if device not in PROVIDERS:
            raise EngineError(f"onnxruntime device must be one of {sorted(PROVIDERS)}, got {device!r}")
        self.path = Path(path)
        self.threads = threads  # 0: ONNX Runtime's default (one per physical core)
        # Idle intra-op threads spin by default, burning the cores that decoder threads (and other processes) need
        self.spin = spin
        self.iobinding = device == "cuda" if iobinding is None else iobinding  # always on cuda
        self._session: Any = None

    def _open(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise EngineError("onnxruntime is not installed: pip install 'atld-deploy[cpu]' (or [gpu])") from e
        provider = PROVIDERS[self.device]
        if provider not in ort.get_available_providers():
            raise EngineError(
                f"ONNX Runtime has no {provider} here (it has {ort.get_available_providers()}); "
                + (f"for the GPU: {GPU_INSTALL}" if self.device == "cuda" else "reinstall onnxruntime")
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        opts.log_severity_level = 3
        providers = [provider] if self.device == "cpu" else [provider, PROVIDERS["cpu"]]
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/... types
            raise EngineError(f"ONNX Runtime cannot load {self.path}: {ort_reason(e)}") from e
        if provider not in self._session.get_providers():
            raise EngineError(f"ONNX Runtime fell back from {provider} for {self.path}; check the CUDA/cuDNN install")

    def describe(self) -> str:
        return f"onnxruntime ({PROVIDERS[self.device]})"

    def _infer(self, feeds: Mapping[str, Array], batch: int) -> dict[str, Array]:
        if self.iobinding:
            return self._infer_iobinding(feeds, batch)
        host = {k: (v if isinstance(v, np.ndarray) else v.detach().cpu().numpy()) for k, v in feeds.items()}
        names = [t.name for t in self.outputs]
        try:
            values = self._session.run(names, host)
        except Exception as e:  # noqa: BLE001
            raise EngineError(f"ONNX Runtime failed on {self.path}: {ort_reason(e)}") from e
        return dict(zip(names, values))

    def _infer_iobinding(self, feeds: Mapping[str, Array], batch: int) -> dict[str, Array]:
        """Bind torch tensors on the runner's device as inputs and preallocated ones as outputs (no copies).

        On cuda this is what keeps GPU tensors on the GPU; on cpu it is the same code path (used by tests).
        Outputs are sized from the actual batch, never from a maximum.
        """
        import torch

        if self.device == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
            ort_device, index = "cuda", int(device.index or 0)
        else:
            device, ort_device, index = torch.device("cpu"), "cpu", 0
        binding = self._session.io_binding()
        keep: list[Any] = []  # keep bound tensors alive until the run returns
        for spec in self.inputs:
            x = feeds[spec.name]
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(x)
            x = x.to(device).contiguous()
            keep.append(x)
            binding.bind_input(spec.name, ort_device, index, np.dtype(spec.dtype).type, tuple(x.shape), x.data_ptr())
        out: dict[str, Any] = {}
        for spec in self.outputs:
            y = torch.empty(batch_shape(spec, batch), dtype=getattr(torch, spec.dtype), device=device)
            binding.bind_output(spec.name, ort_device, index, np.dtype(spec.dtype).type, tuple(y.shape), y.data_ptr())
            out[spec.name] = y
        if self.device == "cuda":
            torch.cuda.current_stream(device).synchronize()  # inputs written on torch's stream must be ready
        try:
            self._session.run_with_iobinding(binding)
        except Exception as e:  # noqa: BLE001
            raise EngineError(f"ONNX Runtime ({ort_device}, IOBinding) failed on {self.path}: {ort_reason(e)}") from e
        binding.synchronize_outputs()
        del keep
        return out if self.device == "cuda" else {k: v.numpy() for k, v in out.items()}

    def _close(self) -> None:
        self._session = None
