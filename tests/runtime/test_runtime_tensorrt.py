"""GPU backends: a TensorRT engine built by the export stage, and ONNX Runtime's CUDA provider with IOBinding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atld_deploy.runtime import Classifier


@pytest.fixture(scope="module")
def trt_artifacts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atld_deploy.export.trt import tensorrt_status

    missing = tensorrt_status()  # checked before training the tiny run: skipping here costs nothing
    if missing:
        pytest.skip(f"TensorRT backend not testable here: {missing}")
    from atld_deploy.export import export_run

    art = tmp_path_factory.mktemp("trt") / "art"
    export_run(request.getfixturevalue("tiny_run"), art, trt=True, opt_batch=8, max_batch=16)
    return art


@pytest.mark.tensorrt
def test_tensorrt_matches_torch_keeps_cuda_tensors_on_gpu_and_splits(trt_artifacts: Path) -> None:
    import torch

    x = torch.rand(40, 1, 8, 8, device="cuda")  # 40 > the engine's max batch 16
    trt = Classifier.load(trt_artifacts)
    assert trt.backend == "tensorrt" and trt.runner.max_batch == 16
    p = trt.predict(x)
    assert p.logits.device.type == "cuda" and p.labels.device.type == "cuda"
    ref = Classifier.load(trt_artifacts, backend="torch", device="cpu").predict(x.cpu())
    np.testing.assert_array_equal(p.labels.cpu().numpy(), ref.labels.numpy())
    np.testing.assert_allclose(p.p_natural.cpu().numpy(), ref.p_natural.numpy(), atol=1e-3)


@pytest.mark.gpu
def test_onnxruntime_cuda_iobinding_matches_cpu(request: pytest.FixtureRequest) -> None:
    import torch

    from atld_deploy.runtime.ort_runner import available_providers

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    if "CUDAExecutionProvider" not in (available_providers() or []):
        pytest.skip("onnxruntime-gpu is not installed (no CUDAExecutionProvider)")
    art = request.getfixturevalue("tiny_artifacts")
    x = torch.rand(9, 1, 8, 8, device="cuda")
    gpu = Classifier.load(art, backend="onnxruntime", device="cuda").predict(x)
    cpu = Classifier.load(art, backend="onnxruntime", device="cpu").predict(x.cpu().numpy())
    assert gpu.logits.device.type == "cuda"
    np.testing.assert_array_equal(gpu.labels.cpu().numpy(), cpu.labels)
