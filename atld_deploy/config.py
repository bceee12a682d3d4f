"""Typed, frozen configuration of a training run, validated on construction and saved beside every run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .data import DATASETS
from .errors import ConfigError

METHODS = ("atld", "standard", "pgd-at", "fgsm-rs", "feature-scattering")
INVARIANCE = ("mse", "divergence")  # the authors' code | the paper's eq. (6)/(7)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. `eps` is in [0, 1] pixel units."""

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    image_size: int = 32  # folder data sets only: images are resized to this
    method: str = "atld"
    arch: str = "wrn-10-2"
    epochs: int = 30
    batch_size: int = 50
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    lr_milestones: tuple[int, ...] = (20, 25)
    lr_gamma: float = 0.1
    eps: float = 0.2
    label_smoothing: float = 0.5
    # ATLD
    d_lr: float = 1e-3
    d_momentum: float = 0.9
    d_weight_decay: float = 2e-4
    d_iters: int = 2
    d_depth: int = 28
    d_widen: int = 5
    invariance: str = "mse"
    invariance_divisor: float = 2.0  # MSE weight is scale / divisor (CIFAR-100: 10)
    # PGD-AT
    pgd_steps: int = 7
    pgd_step_size: float | None = None  # default eps / 4
    # Feature Scattering
    ot_epsilon: float = 1.0
    ot_iters: int = 30
    # monitoring and machinery
    eval_pgd_n: int = 200  # held-out test examples for the per-epoch quick PGD-20
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.invariance not in INVARIANCE:
            raise ConfigError(f"invariance must be one of {INVARIANCE}, got {self.invariance!r}")
        if not 0.0 <= self.eps <= 1.0:
            raise ConfigError(f"eps is in [0,1] pixel units (8/255 = 0.0314 for CIFAR), got {self.eps}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("epochs", "batch_size", "d_iters", "pgd_steps", "ot_iters", "image_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.d_lr <= 0:
            raise ConfigError("learning rates must be positive")
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in self.lr_milestones))
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"unknown device {self.device!r}")

    @property
    def step_size(self) -> float:
        return self.pgd_step_size if self.pgd_step_size is not None else self.eps / 4

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config fields {sorted(unknown)}")
        d = dict(d)
        if "lr_milestones" in d:
            d["lr_milestones"] = tuple(d["lr_milestones"])
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# The paper's settings per data set (atld-method.md); digits' are this project's own (README).
PRESETS: dict[str, dict[str, Any]] = {
    "digits": dict(arch="wrn-10-2", epochs=30, batch_size=50, lr=0.1, lr_milestones=(20, 25), eps=0.2),
    "cifar10": dict(arch="wrn-28-10", epochs=400, batch_size=50, lr=0.1, lr_milestones=(60, 90), eps=8 / 255),
    "cifar100": dict(arch="wrn-28-10", epochs=400, batch_size=50, lr=0.1, lr_milestones=(60, 90), eps=8 / 255, invariance_divisor=10.0),
    "svhn": dict(arch="wrn-28-10", epochs=400, batch_size=50, lr=0.01, lr_milestones=(60, 90), eps=8 / 255),
    "folder": dict(arch="wrn-16-4", epochs=100, batch_size=64, lr=0.1, lr_milestones=(50, 75), eps=8 / 255),
}


def make_config(dataset: str, **overrides: Any) -> TrainConfig:
    """The preset of `dataset` with `overrides` (None values are ignored) applied."""
    if dataset not in PRESETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    values: dict[str, Any] = {**PRESETS[dataset], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(dataset=dataset, **values)


