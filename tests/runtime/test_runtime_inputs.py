"""What predict() accepts: uint8 HWC/NHWC and float CHW/NCHW, numpy or torch, and the errors for the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atld_deploy.errors import DataError
from atld_deploy.runtime.inputs import as_batch


def test_uint8_nhwc_becomes_float_nchw_divided_by_255() -> None:
    x = np.arange(2 * 8 * 8 * 3, dtype=np.int64).reshape(2, 8, 8, 3).astype(np.uint8)
    b = as_batch(x, channels=3, size=8)
    assert b.images.dtype == np.float32 and b.images.shape == (2, 3, 8, 8) and not b.single
    np.testing.assert_array_equal(b.images[1, 2], x[1, :, :, 2].astype(np.float32) / 255.0)


def test_single_images_get_a_batch_dimension() -> None:
    hwc = np.full((8, 8, 1), 255, np.uint8)
    b = as_batch(hwc, channels=1, size=8)
    assert b.single and b.images.shape == (1, 1, 8, 8) and b.images.max() == 1.0
    chw = np.zeros((1, 8, 8), np.float64)
    b = as_batch(chw, channels=1, size=8)
    assert b.single and b.images.shape == (1, 1, 8, 8) and b.images.dtype == np.float32


def test_torch_input_stays_torch_and_matches_numpy() -> None:
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    bt = as_batch(torch.from_numpy(x), channels=1, size=8)
    bn = as_batch(x, channels=1, size=8)
    assert bt.is_torch and isinstance(bt.images, torch.Tensor)
    np.testing.assert_array_equal(bt.images.numpy(), bn.images)


def test_list_of_arrays_is_stacked() -> None:
    b = as_batch([np.zeros((8, 8, 1), np.uint8)] * 3, channels=1, size=8)
    assert b.images.shape == (3, 1, 8, 8)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((8, 8, 3), np.uint8), r"uint8 images of shape \[8, 8, 3\].*\[8, 8, 1\]"),  # channel count
        (np.zeros((2, 16, 16, 1), np.uint8), r"shape \[2, 16, 16, 1\]"),  # size
        (np.zeros((2, 8, 8, 1), np.float32), r"float32 images of shape \[2, 8, 8, 1\].*\[N, 1, 8, 8\]"),  # NHWC float
        (np.zeros((8, 8), np.uint8), r"shape \[8, 8\]"),  # rank
        (np.zeros((2, 1, 8, 8), np.int32), r"dtype int32"),
        (np.full((2, 1, 8, 8), 255.0, np.float32), r"values in \[255, 255\].*must be in \[0, 1\]"),
        ("images/", r"numpy array or a torch tensor, received str"),
    ],
)
def test_bad_input_is_one_data_error_naming_what_was_expected(images: object, match: str) -> None:
    with pytest.raises(DataError, match=match):
        as_batch(images, channels=1, size=8)


def test_runtime_imports_neither_training_code_nor_heavy_backends() -> None:
    import subprocess
    import sys

    code = (
        "import sys, atld_deploy.runtime as r; r.Classifier, r.infer_folder, r.run_bench; "
        "print(sorted(m for m in ('atld_deploy.train', 'onnxruntime', 'tensorrt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
