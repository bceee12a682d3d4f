"""What `Classifier.predict` accepts, turned into the graphs' input: float32 NCHW in [0, 1].

Accepted (numpy arrays or torch tensors, CPU or CUDA; torch tensors stay on their device):

    uint8    [H, W, C] one image, or [N, H, W, C] a batch        (0..255, as decoded from a file)
    float    [C, H, W] one image, or [N, C, H, W] a batch        (0..1; float16/32/64, made float32)

H and W must equal the model's size and C its channel count; anything else is one DataError naming the
expected shapes (resizing is the caller's decision; `decode_image` does it for files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from .runner import dtype_name

FLOAT_DTYPES = ("float16", "float32", "float64")


@dataclass(frozen=True)
class InputBatch:
    """A batch ready for a runner: `images` float32 NCHW, and whether the caller passed a single image."""

    images: Any
    single: bool
    is_torch: bool


def _expected(channels: int, size: int) -> str:
    return (
        f"uint8 [{size}, {size}, {channels}] or [N, {size}, {size}, {channels}] (HWC/NHWC, 0..255), "
        f"or float [{channels}, {size}, {size}] or [N, {channels}, {size}, {size}] (CHW/NCHW, 0..1)"
    )


def as_batch(images: Any, channels: int, size: int) -> InputBatch:
    """Validate `images` and convert them to float32 NCHW in [0, 1] (numpy stays numpy, torch stays torch).

    Raises:
        DataError: not an array, an unsupported dtype, a wrong rank, size or channel count, or float values
            outside [0, 1]; the message says what was received and what is expected.
    """
    is_torch = type(images).__module__.startswith("torch")
    if not is_torch and not isinstance(images, np.ndarray):
        if isinstance(images, (list, tuple)) and images and all(isinstance(a, np.ndarray) for a in images):
            images = np.stack(images)
        else:
            raise DataError(f"predict() takes a numpy array or a torch tensor, received {type(images).__name__}")
    dtype = dtype_name(images)
    shape = tuple(int(d) for d in images.shape)
    if dtype == "uint8":
        single = len(shape) == 3
        if len(shape) not in (3, 4) or shape[-3:] != (size, size, channels):
            raise DataError(f"received uint8 images of shape {list(shape)}; expected {_expected(channels, size)}")
        x = images[None] if single else images
        if is_torch:
            x = x.permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        else:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        return InputBatch(x, single, is_torch)
    if dtype in FLOAT_DTYPES:
        single = len(shape) == 3
        if len(shape) not in (3, 4) or shape[-3:] != (channels, size, size):
            raise DataError(f"received {dtype} images of shape {list(shape)}; expected {_expected(channels, size)}")
        x = images[None] if single else images
        if is_torch:
            x = x.float().contiguous()
            lo, hi = (float(v) for v in (x.min(), x.max())) if x.numel() else (0.0, 0.0)
        else:
            x = np.ascontiguousarray(x, dtype=np.float32)
            lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"received float images with values in [{lo:g}, {hi:g}]; float input must be in [0, 1] "
                f"(divide 0..255 data by 255, or pass it as uint8 HWC)"
            )
        return InputBatch(x, single, is_torch)
    raise DataError(f"received images of dtype {dtype}; expected {_expected(channels, size)}")
