"""examples/cpp builds with CMake against the openvino wheel's C++ package and gives the Python runtime's results.

Bars, stated before looking: logits and p_natural within the float32 parity bound (max |err| <= 1e-3 x
max(1, |ref|)); labels equal wherever the reference's top two logits are further apart than twice that
bound (closer pairs are ties that either engine may break either way), and always equal to the argmax of
the program's own logits.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpp"
BUILD_TIMEOUT_S = 900  # configure + compile, with room for a busy machine
RUN_TIMEOUT_S = 120
FP32_BOUND = 1e-3
N_IMAGES = 64

_missing = [what for what, ok in [
    ("cmake", shutil.which("cmake") is not None),
    ("a C++ compiler (c++)", shutil.which("c++") is not None),
    ("the openvino wheel (the cpp extra)", importlib.util.find_spec("openvino") is not None),
    ("the nlohmann-json wheel (the cpp extra)", importlib.util.find_spec("nlohmann_json") is not None),
] if not ok]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"this machine lacks {', '.join(_missing)}")


def cmake_args() -> list[str]:
    """Where the wheels keep OpenVINO's CMake package and nlohmann/json.hpp (found without importing them)."""
    ov = Path(importlib.util.find_spec("openvino").origin).parent  # type: ignore[union-attr,arg-type]
    nj = Path(importlib.util.find_spec("nlohmann_json").origin).parent  # type: ignore[union-attr,arg-type]
    return [f"-DOpenVINO_DIR={ov / 'cmake'}", f"-DNLOHMANN_JSON_INCLUDE_DIR={nj / 'include'}"]


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("cpp-build")
    for cmd in (["cmake", "-S", str(EXAMPLE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *cmake_args()],
                ["cmake", "--build", str(build)]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return build / "atld_classify"


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """N_IMAGES test digits as uint8 NHWC, the layout the program reads."""
    from atld_deploy.data import load_dataset

    x, _ = load_dataset("digits").test.batch(list(range(N_IMAGES)))
    return (x.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()


def run_program(program: Path, art: Path, images: np.ndarray, tmp: Path) -> list[dict]:
    raw = tmp / "images.u8"
    raw.write_bytes(images.tobytes())
    res = subprocess.run([str(program), str(art), str(raw), str(len(images))], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def disagreements(rows: list[dict], pred) -> list[str]:  # noqa: ANN001
    """Each way the program's rows miss the reference Prediction by more than the stated bars."""
    logits = np.array([r["logits"] for r in rows], dtype=np.float32)
    p_nat = np.array([r["p_natural"] for r in rows], dtype=np.float32)
    problems = []
    if logits.shape != pred.logits.shape:
        return [f"logits shape {logits.shape}, expected {pred.logits.shape}"]
    for name, got, ref in (("logits", logits, pred.logits), ("p_natural", p_nat, pred.p_natural)):
        err = float(np.abs(got - ref).max())
        if err > FP32_BOUND * max(1.0, float(np.abs(ref).max())):
            problems.append(f"{name} max |err| {err:.3g}")
    top2 = np.sort(pred.logits, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > 2 * FP32_BOUND * max(1.0, float(np.abs(pred.logits).max()))
    labels = np.array([r["label"] for r in rows])
    if not np.array_equal(labels[decided], pred.labels[decided]):
        problems.append(f"labels differ on {int((labels[decided] != pred.labels[decided]).sum())} decided images")
    if not np.array_equal(labels, logits.argmax(axis=1)):
        problems.append("a label is not the argmax of its own logits")
    return problems


def test_the_cpp_example_matches_the_python_runtime(program: Path, tiny_artifacts: Path, digits: np.ndarray,
                                                    tmp_path: Path) -> None:
    from atld_deploy.runtime import Classifier

    with Classifier.load(tiny_artifacts, backend="onnxruntime", device="cpu") as clf:
        pred = clf.predict(digits)
        classes = clf.classes
    rows = run_program(program, tiny_artifacts, digits, tmp_path)
    assert len(rows) == N_IMAGES
    assert disagreements(rows, pred) == []
    assert all(r["class"] == classes[r["label"]] for r in rows)
    assert all(abs(r["confidence"] - c) <= FP32_BOUND for r, c in zip(rows, pred.confidence))
    suspect = pred.suspect if pred.suspect is not None else np.zeros(N_IMAGES, bool)  # no card: nothing suspect
    assert [r["suspect"] for r in rows] == suspect.tolist()
    assert len({r["label"] for r in rows}) > 1  # a real model's answers, not one constant row


def test_the_comparison_catches_other_images(program: Path, tiny_artifacts: Path, digits: np.ndarray,
                                             tmp_path: Path) -> None:
    from atld_deploy.runtime import Classifier

    with Classifier.load(tiny_artifacts, backend="onnxruntime", device="cpu") as clf:
        pred = clf.predict(digits)
    rows = run_program(program, tiny_artifacts, 255 - digits, tmp_path)  # inverted: a different input
    assert any(p.startswith("logits max |err|") for p in disagreements(rows, pred))


def test_a_short_images_file_is_refused(program: Path, tiny_artifacts: Path, digits: np.ndarray,
                                        tmp_path: Path) -> None:
    raw = tmp_path / "images.u8"
    raw.write_bytes(digits[:3].tobytes())
    res = subprocess.run([str(program), str(tiny_artifacts), str(raw), "4"], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_S)
    assert res.returncode == 1
    assert "holds 192 bytes, not 4 uint8 images of 8x8x1" in res.stderr
