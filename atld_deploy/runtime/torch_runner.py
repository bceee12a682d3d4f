"""PyTorch backend: the run copied into the artifact, run through the core IMT. This is the reference.

It runs every kind of the graph catalogue with the module the catalogue names for it (`export.trace.
graph_module`, the one the graph was traced from), a float16 kind in float32: the reference it was judged
against."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import AtldError, EngineError
from ..artifact import TensorSpec
from ..graphs import GRAPH_KEYS, GRAPHS
from ..imt import IMTConfig
from .runner import Array, Runner

log = logging.getLogger(__name__)


class TorchRunner(Runner):
    """Runs graph `graph` of the manifest with the core PyTorch modules loaded from `run_dir`."""

    backend = "torch"

    def __init__(
        self,
        run_dir: Path,
        graph: str,
        imt: IMTConfig,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        device: str = "cpu",
    ) -> None:
        super().__init__(inputs, outputs, device=device)
        if graph not in GRAPHS:
            raise EngineError(f"the torch backend cannot run graph {graph!r}; it runs {', '.join(GRAPH_KEYS)}")
        self.run_dir = Path(run_dir)
        self.graph = graph
        self.kind = GRAPHS[graph]
        self.imt = imt
        self._module: Any = None

    def _open(self) -> None:
        import torch

        from ..run import load_run

        if self.device == "cuda" and not torch.cuda.is_available():
            raise EngineError("the torch backend was asked for device 'cuda' but torch sees no CUDA GPU")
        try:
            run = load_run(self.run_dir, device=self.device)
        except AtldError as e:
            raise EngineError(f"the torch backend cannot load the run copy in {self.run_dir}: {e}") from e
        if self.kind.needs_discriminator and run.discriminator is None:
            raise EngineError(f"{self.run_dir} has no discriminator (a baseline run), so it cannot run {self.graph!r}")
        from ..export.trace import graph_module

        self._module = graph_module(self.kind, run.classifier, run.discriminator, self.imt, precision="fp32")

    def _infer(self, feeds: Mapping[str, Array], batch: int) -> dict[str, Array]:  # noqa: ARG002
        import torch

        (x,) = (feeds[t.name] for t in self.inputs)
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        x = x.to(self.device)
        from ..export.trace import outputs_of

        with torch.no_grad():  # IMT turns gradients back on for its own step only
            out = outputs_of(self.kind, self._module, x)
        wanted = {t.name: out[t.name].detach() for t in self.outputs}
        if self.device == "cpu":
            return {k: v.numpy() for k, v in wanted.items()}
        return wanted

    def _close(self) -> None:
        self._module = None
