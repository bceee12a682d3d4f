"""Networks: a CIFAR-style WideResNet classifier of any depth/width and the ATLD discriminator on logits.

Every classifier takes float NCHW images in [0, 1] and normalises inside, so attacks, export and serving
all see the same function (the graph you attack is the graph you ship).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError


class Normalize(nn.Module):
    """(x - mean) / std with per-channel constants stored as buffers (exported as initializers)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class _PreActBlock(nn.Module):
    """Pre-activation basic block (BN-ReLU-conv3x3-BN-ReLU-conv3x3) of Zagoruyko & Komodakis."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        # As in the reference WRN: the projection shortcut sees the activated input.
        sc = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(F.relu(self.bn2(o)))
        return o + sc


class WideResNet(nn.Module):
    """CIFAR-style WRN-d-k: 3 groups of (d-4)/6 pre-activation blocks, widths 16k/32k/64k, strides 1/2/2."""

    def __init__(
        self,
        depth: int,
        widen: int,
        num_classes: int,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}")
        if widen < 1 or num_classes < 2 or in_channels < 1:
            raise ConfigError(f"invalid WideResNet widen={widen}, num_classes={num_classes}, in_channels={in_channels}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.normalize = Normalize(mean or [0.5] * in_channels, std or [0.5] * in_channels)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        for g, stride in enumerate((1, 2, 2)):
            for i in range(n):
                blocks.append(_PreActBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1], stride if i == 0 else 1))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.blocks(self.stem(self.normalize(x)))
        o = F.relu(self.bn(o))
        return self.fc(o.mean(dim=(2, 3)))


class _ResidualLinearBlock(nn.Module):
    """A pre-activation WRN block on a 1x1 map: its 3x3 convolutions reduce to their centre tap (Linear)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm1d(c_in)
        self.fc1 = nn.Linear(c_in, c_out, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.fc2 = nn.Linear(c_out, c_out, bias=False)
        self.shortcut = None if c_in == c_out else nn.Linear(c_in, c_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        sc = x if self.shortcut is None else self.shortcut(o)
        o = self.fc1(o)
        o = self.fc2(F.relu(self.bn2(o)))
        return o + sc


def _conv_init(linear: nn.Linear, taps: int) -> None:
    """He-normal init of a k x k convolution with `taps` = k*k, applied to the Linear its centre tap became."""
    nn.init.normal_(linear.weight, 0.0, math.sqrt(2.0 / (taps * linear.out_features)))


class Discriminator(nn.Module):
    """ATLD's discriminator on the classifier's logits.

    The authors run a WRN-28-5 body on logits reshaped to C x 1 x 1; on a 1x1 map that body is exactly this
    residual MLP. Returns `(natural_logit [B], class_logits [B, C])`; `sigmoid(natural_logit)` is the
    probability that the input is natural (clean). This project uses the "natural" convention throughout.
    """

    def __init__(self, num_classes: int, depth: int = 28, widen: int = 5) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(f"discriminator depth must be 6n+4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.num_classes = num_classes
        self.stem = nn.Linear(num_classes, widths[0], bias=False)
        blocks: list[nn.Module] = []
        for g in range(3):
            for i in range(n):
                blocks.append(_ResidualLinearBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1]))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm1d(widths[3])
        self.head = nn.Linear(widths[3], 1 + num_classes)
        # the authors' WRN init: normal(0, sqrt(2 / (k*k*out))) per conv, here on the tap that survives;
        # the heads keep nn.Linear's default weights with a zero bias
        _conv_init(self.stem, taps=9)
        for block in self.blocks:
            _conv_init(block.fc1, taps=9)
            _conv_init(block.fc2, taps=9)
            if block.shortcut is not None:
                _conv_init(block.shortcut, taps=1)
        nn.init.zeros_(self.head.bias)

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = F.relu(self.bn(self.blocks(self.stem(logits))))
        out = self.head(o)
        return out[:, 0], out[:, 1:]


# ---------------------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[..., nn.Module]
    doc: str


_REGISTRY: dict[str, ModelSpec] = {}
_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")


def register_model(name: str, doc: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelSpec(name, fn, doc)
        return fn

    return deco


@register_model("wrn-D-K", "CIFAR-style WideResNet of depth D (6n+4) and widen factor K, e.g. wrn-28-10, wrn-16-4")
def _wrn(depth: int, widen: int, **kw: object) -> nn.Module:
    return WideResNet(depth, widen, **kw)  # type: ignore[arg-type]


def model_names() -> list[str]:
    return ["wrn-28-10", "wrn-16-4", "wrn-10-2", "wrn-D-K (any D=6n+4, K>=1)"]


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """Build a classifier by registry name (e.g. ``wrn-16-4``).

    Raises:
        ConfigError: unknown name; the message lists valid names.
    """
    m = _WRN.match(name)
    if m is None:
        raise ConfigError(f"unknown architecture {name!r}; valid: {', '.join(model_names())}")
    return _REGISTRY["wrn-D-K"].factory(
        int(m.group(1)), int(m.group(2)), num_classes=num_classes, in_channels=in_channels, mean=mean, std=std
    )


def create_discriminator(num_classes: int, depth: int = 28, widen: int = 5) -> Discriminator:
    return Discriminator(num_classes, depth=depth, widen=widen)
