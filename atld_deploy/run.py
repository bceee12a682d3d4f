"""Run directories: what training writes and what every later stage reads.

    RUN/config.json              resolved TrainConfig + data shape + format version
    RUN/classes.json             class names, index = label
    RUN/classifier.safetensors   classifier weights (latest completed epoch)
    RUN/discriminator.safetensors  discriminator weights (ATLD runs only)
    RUN/metrics.jsonl            one JSON object per completed epoch
    RUN/checkpoint.pt            resume state: weights, optimisers, schedulers, RNG, epoch (tensors only)
    RUN/summary.json             written when training finishes

Loading never unpickles arbitrary objects: weights are safetensors, the checkpoint is read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .errors import CheckpointError
from .imt import IMTConfig
from .io import read_json, require_regular_file
from .models import Discriminator, create_discriminator, create_model
from .schema import LIMITS, RUN_CONFIG_SCHEMA, check_arch_bounds, validate

RUN_FORMAT = 1
RUN_KIND = "atld-deploy/run"  # the marker in config.json: only a directory carrying it is a run the tool may replace
CONFIG = "config.json"
CLASSES = "classes.json"
CLASSIFIER = "classifier.safetensors"
DISCRIMINATOR = "discriminator.safetensors"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
RUN_FILES = (CONFIG, CLASSES, CLASSIFIER, DISCRIMINATOR, METRICS, CHECKPOINT, SUMMARY)  # everything training writes


@dataclass(frozen=True)
class DataShape:
    channels: int
    size: int
    num_classes: int


def build_networks(cfg: TrainConfig, shape: DataShape) -> tuple[nn.Module, Discriminator | None]:
    classifier = create_model(cfg.arch, shape.num_classes, in_channels=shape.channels)
    disc = create_discriminator(shape.num_classes, cfg.d_depth, cfg.d_widen) if cfg.method == "atld" else None
    return classifier, disc


def _read_json(path: Path) -> Any:
    return read_json(path, CheckpointError, f"{path.parent} is not a complete atld-deploy run directory",
                     "retrain or restore the run directory")


def _load_weights(module: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    if path.exists():  # a FIFO would block the reader, a device would be read forever
        require_regular_file(path, CheckpointError, "put the run's own weights file back, or retrain")
    try:
        state = load_file(str(path))
    except FileNotFoundError as e:
        raise CheckpointError(f"{path} is missing; the run did not finish an epoch — resume it with --resume") from e
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({e}); retrain or restore it") from e
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match the architecture in config.json ({str(e).splitlines()[0]})") from e


@dataclass
class Run:
    """A trained run: `.classifier` ([0,1] images -> logits), `.discriminator` (logits ->
    `(natural_logit, class_logits)`; None for baselines), `.config`, `.classes`, `.shape`."""

    path: Path
    config: TrainConfig
    classes: tuple[str, ...]
    shape: DataShape
    classifier: nn.Module
    discriminator: Discriminator | None

    def imt_config(self, mode: str = "plus", eps: float | None = None) -> IMTConfig:
        """IMT parameters for this run: by default the training eps, the run's IMT+ band (its data set's
        preset: 0.3-0.7, SVHN 0.3-0.6), factor 0.5."""
        return IMTConfig(mode=mode, eps=self.config.eps if eps is None else eps, band=self.config.imt_band)  # type: ignore[arg-type]


def read_run_meta(path: str | Path) -> tuple[TrainConfig, tuple[str, ...], DataShape]:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"run directory {path} does not exist; train one with `atld-deploy train --output {path}`")
    meta = _read_json(path / CONFIG)
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path / CONFIG} has format {meta.get('format') if isinstance(meta, dict) else '?'}, expected {RUN_FORMAT}")
    # bounds before anything is built from it: a hostile d_depth or num_classes is one line, not a huge allocation
    validate(meta, RUN_CONFIG_SCHEMA, path / CONFIG, CheckpointError, "retrain or restore the run directory")
    check_arch_bounds(str(meta["config"].get("arch", "")), path / CONFIG, CheckpointError)
    try:
        cfg = TrainConfig.from_dict(meta["config"])
        shape = DataShape(**meta["data"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG} is incomplete ({e}); retrain") from e
    classes = _read_json(path / CLASSES)
    if not isinstance(classes, list) or len(classes) != shape.num_classes or not all(
            isinstance(c, str) and 0 < len(c) <= LIMITS["class_name_chars"] for c in classes):
        raise CheckpointError(f"{path / CLASSES} must list {shape.num_classes} class names (strings of at most "
                              f"{LIMITS['class_name_chars']} characters), as config.json says; retrain or restore it")
    return cfg, tuple(classes), shape


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a finished (or in-progress) run's latest weights, modules in eval mode.

    Raises:
        CheckpointError: missing, corrupt or mismatched files (the message names the file).
    """
    path = Path(path)
    cfg, classes, shape = read_run_meta(path)
    classifier, disc = build_networks(cfg, shape)
    _load_weights(classifier, path / CLASSIFIER)
    if disc is not None:
        _load_weights(disc, path / DISCRIMINATOR)
        disc.to(device).eval()
    classifier.to(device).eval()
    return Run(path, cfg, classes, shape, classifier, disc)


def run_meta(cfg: TrainConfig, shape: DataShape) -> dict[str, Any]:
    return {"kind": RUN_KIND, "format": RUN_FORMAT, "config": cfg.to_dict(), "data": shape.__dict__}


def is_run_marker(meta: Any) -> bool:
    """True if parsed `config.json` is a run's: the marker, or (runs written before it) the run format's shape."""
    if not isinstance(meta, dict):
        return False
    if meta.get("kind") == RUN_KIND:
        return True
    return "kind" not in meta and meta.get("format") == RUN_FORMAT and isinstance(meta.get("config"), dict) \
        and isinstance(meta.get("data"), dict) and set(meta) == {"format", "config", "data"}
