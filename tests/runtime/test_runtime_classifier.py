"""Classifier.load / predict on real exported artifacts: backends agree, batching is invisible, bad input is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atld_deploy.errors import DataError, EngineError
from atld_deploy.runtime import Classifier
from atld_deploy.runtime.torch_runner import TorchRunner


@pytest.fixture(scope="module")
def digits_batch() -> np.ndarray:
    """37 real test digits as uint8 NHWC (an odd count, so batches never divide it evenly)."""
    from atld_deploy.data import load_dataset

    x, _ = load_dataset("digits").test.batch(list(range(37)))
    return (x.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def ort(tiny_artifacts: Path) -> Classifier:
    return Classifier.load(tiny_artifacts, backend="onnxruntime", device="cpu")


@pytest.fixture(scope="module")
def ref(tiny_artifacts: Path) -> Classifier:
    return Classifier.load(tiny_artifacts, backend="torch", device="cpu")


def test_prediction_fields(ort: Classifier, digits_batch: np.ndarray) -> None:
    p = ort.predict(digits_batch)
    assert len(p) == 37 and p.labels.dtype == np.int64 and p.logits.shape == (37, 10)
    assert p.classes == [ort.classes[i] for i in p.labels]
    z = p.logits - p.logits.max(1, keepdims=True)
    np.testing.assert_allclose(p.confidence, 1 / np.exp(z).sum(1), rtol=1e-5)
    assert ((p.p_natural > 0) & (p.p_natural < 1)).all()
    assert p.records()[0].keys() == {"label", "class", "confidence", "p_natural"}


def test_onnxruntime_matches_the_torch_reference(ort: Classifier, ref: Classifier, digits_batch: np.ndarray) -> None:
    a, b = ort.predict(digits_batch), ref.predict(digits_batch)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.p_natural, b.p_natural, atol=1e-5)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-4)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_same_image_same_result_alone_and_in_any_batch(
    tiny_artifacts: Path, digits_batch: np.ndarray, backend: str
) -> None:
    full = Classifier.load(tiny_artifacts, backend=backend, device="cpu").predict(digits_batch)
    for bs in (1, 5, 16):
        clf = Classifier.load(tiny_artifacts, backend=backend, device="cpu", batch_size=bs)
        part = clf.predict(digits_batch)
        np.testing.assert_array_equal(part.labels, full.labels)
        np.testing.assert_allclose(part.logits, full.logits, atol=1e-4)
        np.testing.assert_allclose(part.p_natural, full.p_natural, atol=1e-5)
    alone = Classifier.load(tiny_artifacts, backend=backend, device="cpu").predict(digits_batch[11])  # one HWC image
    assert len(alone) == 1 and alone.labels[0] == full.labels[11]
    np.testing.assert_allclose(alone.logits[0], full.logits[11], atol=1e-4)


def test_inputs_above_the_max_batch_are_split(ort: Classifier, digits_batch: np.ndarray) -> None:
    whole = ort.predict(digits_batch)
    clf = Classifier(ort.art, ort.manifest, ort.graph, ort.runner, [])
    ort.runner.max_batch = 4  # as a TensorRT engine built with max batch 4 would report
    try:
        with pytest.raises(DataError, match="batches of 1 to 4 images, received 37"):
            ort.runner.infer({"images": np.zeros((37, 1, 8, 8), np.float32)})
        assert clf.chunk == 4
        split = clf.predict(digits_batch)
    finally:
        ort.runner.max_batch = None
    np.testing.assert_array_equal(split.labels, whole.labels)
    np.testing.assert_allclose(split.logits, whole.logits, atol=1e-4)


def test_float_nchw_and_torch_input_agree_with_uint8(ort: Classifier, digits_batch: np.ndarray) -> None:
    u = ort.predict(digits_batch)
    f = ort.predict(digits_batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    t = ort.predict(torch.from_numpy(digits_batch))
    np.testing.assert_array_equal(f.labels, u.labels)
    assert isinstance(t.labels, torch.Tensor) and isinstance(t.p_natural, torch.Tensor)
    np.testing.assert_array_equal(t.labels.numpy(), u.labels)


def test_no_imt_runs_the_classifier_graph(tiny_artifacts: Path, digits_batch: np.ndarray) -> None:
    from atld_deploy.run import load_run

    clf = Classifier.load(tiny_artifacts, backend="onnxruntime", device="cpu", imt=False)
    p = clf.predict(digits_batch)
    # static mode still reports p_natural (the discriminator graph on the classifier's logits): the pipeline's
    with Classifier.load(tiny_artifacts, backend="onnxruntime", device="cpu", imt="imt-plus") as pipe:
        np.testing.assert_allclose(p.p_natural, pipe.predict(digits_batch).p_natural, atol=1e-5)
    assert clf.graph == "classifier" and clf.mode == "static"
    x = torch.from_numpy(digits_batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    with torch.no_grad():
        expected = load_run(tiny_artifacts / "run").classifier(x).numpy()
    np.testing.assert_allclose(p.logits, expected, atol=1e-4)


def test_wrong_channels_is_one_clear_error(ort: Classifier) -> None:
    with pytest.raises(DataError, match=r"expected uint8 \[8, 8, 1\]"):
        ort.predict(np.zeros((4, 8, 8, 3), np.uint8))


def test_runner_checks_names_dtypes_and_shapes(ort: Classifier) -> None:
    r = ort.runner
    with pytest.raises(DataError, match=r"expects inputs \['images'\], received \['x'\]"):
        r.infer({"x": np.zeros((1, 1, 8, 8), np.float32)})
    with pytest.raises(DataError, match="must be float32, received float64"):
        r.infer({"images": np.zeros((1, 1, 8, 8), np.float64)})
    with pytest.raises(DataError, match=r"must have shape \[batch, 1, 8, 8\], received \[1, 1, 9, 8\]"):
        r.infer({"images": np.zeros((1, 1, 9, 8), np.float32)})
    out = r.infer({"images": np.zeros((3, 1, 8, 8), np.float32)})
    assert out["logits"].shape == (3, 10) and out["p_natural"].shape == (3,)


def test_closed_runner_refuses(tiny_artifacts: Path) -> None:
    clf = Classifier.load(tiny_artifacts, backend="torch", device="cpu")
    assert isinstance(clf.runner, TorchRunner)
    clf.close()
    with pytest.raises(EngineError, match="not open"):
        clf.predict(np.zeros((1, 8, 8, 1), np.uint8))


def test_iobinding_path_gives_the_same_outputs(ort: Classifier) -> None:
    """The IOBinding code the CUDA provider uses, run on the CPU device (real ONNX Runtime, bound torch buffers)."""
    from atld_deploy.runtime.ort_runner import OnnxRuntimeRunner

    r = ort.runner
    assert isinstance(r, OnnxRuntimeRunner)
    bound = OnnxRuntimeRunner(r.path, r.inputs, r.outputs, device="cpu", iobinding=True).open()
    x = np.random.default_rng(1).random((5, 1, 8, 8), dtype=np.float32)
    a, b = r.infer({"images": x}), bound.infer({"images": torch.from_numpy(x)})
    assert a.keys() == b.keys() and b["logits"].shape == (5, 10) and b["p_natural"].shape == (5,)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
