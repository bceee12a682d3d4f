"""The one small interface every backend implements: `open()`, `infer(feeds) -> outputs`, `close()`.

The base class checks what it is fed against the graph's `TensorSpec`s from the manifest (names, dtypes,
ranks, fixed dimensions, one consistent batch size within the runner's limits) and only then calls the
backend's `_infer` hook, so every backend sees valid input and reports bad input the same way.

Arrays are numpy arrays or torch tensors. A runner on `device="cpu"` returns numpy arrays; a runner on
`device="cuda"` returns torch CUDA tensors (outputs stay on the GPU).
"""

from __future__ import annotations

import abc
import logging
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ..errors import DataError, EngineError
from ..artifact import BATCH, TensorSpec

log = logging.getLogger(__name__)

Array = Any  # numpy.ndarray | torch.Tensor (torch is imported lazily by the backends that need it)


def dtype_name(a: Array) -> str:
    """`float32`, `uint8`, ... for a numpy array or a torch tensor alike."""
    if isinstance(a, np.ndarray):
        return a.dtype.name
    return str(a.dtype).removeprefix("torch.")


def to_host(a: Array) -> np.ndarray:
    """A runner output as a numpy array on the host (cuda runners return torch CUDA tensors)."""
    return a if isinstance(a, np.ndarray) else a.detach().cpu().numpy()


def is_dynamic(dim: int | str) -> bool:
    """A manifest dimension that is not a fixed integer (the batch dimension)."""
    return not isinstance(dim, int)


def batch_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    """The concrete shape of `spec` for a given batch size."""
    return tuple(batch if is_dynamic(d) else int(d) for d in spec.shape)


def _fmt_shape(shape: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class Runner(abc.ABC):
    """A graph (one of the manifest's `graphs`) bound to one backend on one device.

    Subclasses set `backend` and implement `_open`, `_infer` and `_close`.
    """

    backend: ClassVar[str] = "?"

    def __init__(
        self,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        device: str = "cpu",
        max_batch: int | None = None,
        min_batch: int = 1,
    ) -> None:
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.device = device
        self.max_batch = max_batch
        self.min_batch = min_batch
        self._is_open = False

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> "Runner":
        """Load the graph/engine/modules. Idempotent. Raises EngineError if the backend cannot load it."""
        if not self._is_open:
            self._open()
            self._is_open = True
        return self

    def close(self) -> None:
        """Release the session/engine. Idempotent."""
        if self._is_open:
            self._close()
            self._is_open = False

    def __enter__(self) -> "Runner":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._is_open

    def describe(self) -> str:
        """A short human-readable label, e.g. `onnxruntime (cpu)`."""
        return f"{self.backend} ({self.device})"

    # ------------------------------------------------------------------ inference
    def infer(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """Run the graph on one batch.

        Args:
            feeds: one array per graph input, keyed by input name.

        Returns:
            One array per graph output, keyed by output name (numpy on cpu, torch CUDA tensors on cuda).

        Raises:
            DataError: a missing or unexpected input name, a wrong dtype, rank or dimension, or a batch size
                outside what this runner accepts.
            EngineError: the runner is not open.
        """
        if not self._is_open:
            raise EngineError(f"{self.describe()} runner is not open; call open() or use it as a context manager")
        batch = self.check_feeds(feeds)
        return self._infer(feeds, batch)

    def check_feeds(self, feeds: Mapping[str, Array]) -> int:
        """Validate `feeds` against the input specs and return the batch size."""
        expected = [t.name for t in self.inputs]
        if set(feeds) != set(expected):
            raise DataError(f"{self.describe()} expects inputs {expected}, received {sorted(feeds)}")
        batch: int | None = None
        for spec in self.inputs:
            a = feeds[spec.name]
            got_dtype = dtype_name(a)
            if got_dtype != spec.dtype:
                raise DataError(f"input {spec.name!r} must be {spec.dtype}, received {got_dtype}")
            shape = tuple(int(d) for d in a.shape)
            if len(shape) != len(spec.shape):
                raise DataError(
                    f"input {spec.name!r} must have shape {_fmt_shape(spec.shape)}, received {list(shape)}"
                )
            for got, want in zip(shape, spec.shape):
                if is_dynamic(want):
                    if batch is not None and got != batch:
                        raise DataError(f"inputs disagree on the {BATCH} size: {batch} vs {got} in {spec.name!r}")
                    batch = got
                elif got != want:
                    raise DataError(
                        f"input {spec.name!r} must have shape {_fmt_shape(spec.shape)}, received {list(shape)}"
                    )
        if batch is None:
            batch = 1
        if batch < self.min_batch or (self.max_batch is not None and batch > self.max_batch):
            hi = "any" if self.max_batch is None else str(self.max_batch)
            raise DataError(
                f"{self.describe()} accepts batches of {self.min_batch} to {hi} images, received {batch}; "
                f"split the input (Classifier.predict does this for you)"
            )
        return batch

    # ------------------------------------------------------------------ backend hooks
    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feeds: Mapping[str, Array], batch: int) -> dict[str, Array]: ...

    def _close(self) -> None:  # most backends release everything on garbage collection
        return None
