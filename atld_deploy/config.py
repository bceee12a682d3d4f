"""Typed, frozen configuration of a training run, validated on construction and saved beside every run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

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
    lr_milestones: tuple[int, ...] = (20, 25)  # epochs, resolved by make_config from the preset's fractions
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
    imt_band: tuple[float, float] = (0.3, 0.7)  # IMT+ halves the step where low < p_natural < high (SVHN: 0.6)
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
        milestones = tuple(self.lr_milestones)
        if any(isinstance(m, bool) or not float(m).is_integer() or m < 0 for m in milestones) or list(milestones) != sorted(milestones):
            raise ConfigError(f"lr_milestones are epoch numbers in increasing order, got {list(milestones)}; "
                              "make_config turns fractions of the run into epochs")
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in milestones))
        lo, hi = (float(b) for b in self.imt_band)
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"imt_band must satisfy 0 <= low < high <= 1, got {list(self.imt_band)}")
        object.__setattr__(self, "imt_band", (lo, hi))
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"unknown device {self.device!r}")

    @property
    def step_size(self) -> float:
        return self.pgd_step_size if self.pgd_step_size is not None else self.eps / 4

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        d["imt_band"] = list(self.imt_band)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config fields {sorted(unknown)}")
        d = dict(d)
        for name in ("lr_milestones", "imt_band"):  # JSON lists; runs written before imt_band keep the default
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# The paper's settings per data set (docs/METHOD.md); digits' are this project's own.
# lr_milestones are fractions of the run's length (the paper's epochs 60 and 90 of 400), so a shortened or
# lengthened run decays at the same relative points; make_config turns them into epochs.
PRESETS: dict[str, dict[str, Any]] = {
    "digits": dict(arch="wrn-10-2", epochs=30, batch_size=50, lr=0.1, lr_milestones=(20 / 30, 25 / 30), eps=0.2),
    "cifar10": dict(arch="wrn-28-10", epochs=400, batch_size=50, lr=0.1, lr_milestones=(60 / 400, 90 / 400), eps=8 / 255),
    "cifar100": dict(arch="wrn-28-10", epochs=400, batch_size=50, lr=0.1, lr_milestones=(60 / 400, 90 / 400), eps=8 / 255,
                     invariance_divisor=10.0),
    "svhn": dict(arch="wrn-28-10", epochs=400, batch_size=50, lr=0.01, lr_milestones=(60 / 400, 90 / 400), eps=8 / 255,
                 imt_band=(0.3, 0.6)),  # the authors' SVHN IMT+ code tests 0.3 < p < 0.6
    "folder": dict(arch="wrn-16-4", epochs=100, batch_size=64, lr=0.1, lr_milestones=(0.5, 0.75), eps=8 / 255),
}


def parse_milestones(text: str) -> tuple[float, ...]:
    """`"0.5,0.75"` -> (0.5, 0.75). Raises ConfigError on anything that is not a comma-separated number list."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--lr-milestones takes comma-separated numbers such as 0.5,0.75, got {text!r}") from None


def milestone_epochs(milestones: Sequence[float], epochs: int) -> tuple[int, ...]:
    """Learning-rate milestones as epoch numbers for a run of `epochs`.

    A value in (0, 1) is a fraction of the run: the rate decays from the first epoch that starts at or after
    that point (epoch ceil(f * epochs)). A whole number is already an epoch number.

    Raises:
        ConfigError: a value that is neither, with an example of each.
    """
    out = []
    for m in milestones:
        if 0.0 < m < 1.0:
            out.append(max(1, math.ceil(m * epochs - 1e-9)))  # the tolerance absorbs 0.15 * 400 = 60.000000000000007
        elif m >= 0 and float(m).is_integer():
            out.append(int(m))
        else:
            raise ConfigError(f"lr milestone {m} is neither a fraction of the run in (0, 1) nor a whole epoch number; "
                              "write 0.5,0.75 to decay at half and three quarters of the run, or 60,90 for those epochs")
    return tuple(sorted(out))


def make_config(dataset: str, **overrides: Any) -> TrainConfig:
    """The preset of `dataset` with `overrides` (None values are ignored) applied.

    `lr_milestones` (preset or override: fractions of the run, epoch numbers, or a string such as "0.5,0.75")
    is resolved into epochs of the run's final length.
    """
    if dataset not in PRESETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    values: dict[str, Any] = {**PRESETS[dataset], **{k: v for k, v in overrides.items() if v is not None}}
    if isinstance(values.get("lr_milestones"), str):
        values["lr_milestones"] = parse_milestones(values["lr_milestones"])
    values["lr_milestones"] = milestone_epochs(values["lr_milestones"], int(values["epochs"]))
    return TrainConfig(dataset=dataset, **values)
