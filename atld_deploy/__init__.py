"""atld-deploy: train, evaluate, export and serve ATLD adversarially robust classifiers."""

from .imt import IMTConfig, IMTPipeline, imt_transform
from .run import Run, load_run

__version__ = "0.1.0"
__all__ = ["IMTConfig", "IMTPipeline", "Run", "imt_transform", "load_run", "__version__"]
