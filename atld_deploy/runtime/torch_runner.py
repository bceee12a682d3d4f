"""PyTorch backend: the run copied into the artifact, run through the core IMT. This is the reference."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import AtldError, EngineError
from ..artifact import TensorSpec
from ..imt import IMTConfig
from .runner import Array, Runner

log = logging.getLogger(__name__)

# Graph key -> function(run, imt_config) returning a callable from the first input tensor to named outputs.
GraphFn = Callable[[Any], dict[str, Any]]


def _pipeline_fn(run: Any, cfg: IMTConfig) -> GraphFn:
    from ..imt import IMTPipeline

    pipe = IMTPipeline(run.classifier, run.discriminator, cfg)

    def fn(x: Any) -> dict[str, Any]:
        logits, p, x_t = pipe(x)
        return {"logits": logits, "p_natural": p, "images_imt": x_t}

    return fn


def _pipeline_uint8_fn(run: Any, cfg: IMTConfig) -> GraphFn:
    inner = _pipeline_fn(run, cfg)
    return lambda x: inner(x.permute(0, 3, 1, 2).float() / 255.0)


def _classifier_fn(run: Any, cfg: IMTConfig) -> GraphFn:  # noqa: ARG001 - same signature as the others
    return lambda x: {"logits": run.classifier(x)}


def _discriminator_fn(run: Any, cfg: IMTConfig) -> GraphFn:  # noqa: ARG001
    def fn(logits: Any) -> dict[str, Any]:
        natural_logit, class_logits = run.discriminator(logits)
        return {"natural_logit": natural_logit, "class_logits": class_logits}

    return fn


GRAPH_FNS: dict[str, Callable[[Any, IMTConfig], GraphFn]] = {
    "pipeline": _pipeline_fn,
    "pipeline_uint8": _pipeline_uint8_fn,
    "classifier": _classifier_fn,
    "discriminator": _discriminator_fn,
}
NEEDS_DISCRIMINATOR = {"pipeline", "pipeline_uint8", "discriminator"}


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
        if graph not in GRAPH_FNS:
            raise EngineError(f"the torch backend cannot run graph {graph!r}; it runs {sorted(GRAPH_FNS)}")
        self.run_dir = Path(run_dir)
        self.graph = graph
        self.imt = imt
        self._fn: GraphFn | None = None

    def _open(self) -> None:
        import torch

        from ..run import load_run

        if self.device == "cuda" and not torch.cuda.is_available():
            raise EngineError("the torch backend was asked for device 'cuda' but torch sees no CUDA GPU")
        try:
            run = load_run(self.run_dir, device=self.device)
        except AtldError as e:
            raise EngineError(f"the torch backend cannot load the run copy in {self.run_dir}: {e}") from e
        if self.graph in NEEDS_DISCRIMINATOR and run.discriminator is None:
            raise EngineError(f"{self.run_dir} has no discriminator (a baseline run), so it cannot run {self.graph!r}")
        self._fn = GRAPH_FNS[self.graph](run, self.imt)

    def _infer(self, feeds: Mapping[str, Array], batch: int) -> dict[str, Array]:  # noqa: ARG002
        import torch

        (x,) = (feeds[t.name] for t in self.inputs)
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        x = x.to(self.device)
        assert self._fn is not None  # open() set it
        with torch.no_grad():  # IMT turns gradients back on for its own step only
            out = self._fn(x)
        wanted = {t.name: out[t.name].detach() for t in self.outputs}
        if self.device == "cpu":
            return {k: v.numpy() for k, v in wanted.items()}
        return wanted

    def _close(self) -> None:
        self._fn = None
