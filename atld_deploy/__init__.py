"""atld-deploy: train, evaluate, export and serve ATLD adversarially robust classifiers.

The public names are imported lazily, so `atld-deploy --help` does not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["IMTConfig", "IMTPipeline", "Run", "imt_transform", "load_run", "__version__"]

_LAZY = {"IMTConfig": "imt", "IMTPipeline": "imt", "imt_transform": "imt", "Run": "run", "load_run": "run"}

if TYPE_CHECKING:
    from .imt import IMTConfig, IMTPipeline, imt_transform
    from .run import Run, load_run


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
