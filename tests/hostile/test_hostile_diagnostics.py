"""A graph ONNX Runtime refuses: its whole reason reaches the user, and `--backend auto` says it fell back.

The graph is rehashed into the manifest, as a careless re-export (or a tamperer) would leave it, so the
artifact passes its hash check and the refusal comes from ONNX Runtime itself. Its node's name holds a line
break, so a reason cut at the first line loses the part that says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cli_probe import assert_only_written, fingerprint, read_jsonl, run_cli, write_digits

WHY = "Unrecognized attribute: foo for operator Relu"  # ONNX Runtime's words, after the line break


@pytest.fixture()
def refused_art(tiny_artifacts: Path, tmp_path: Path) -> Path:
    from onnx import TensorProto, helper

    art = Path(shutil.copytree(tiny_artifacts, tmp_path / "art"))
    node = helper.make_node("Relu", ["images"], ["logits"], name="evil\nnode", foo=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    (art / "pipeline.onnx").write_bytes(data)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["graphs"]["pipeline"]["sha256"] = hashlib.sha256(data).hexdigest()
    (art / "manifest.json").write_text(json.dumps(manifest))
    return art


def test_onnxruntime_refusal_reaches_the_user_whole_on_one_line(refused_art: Path, tmp_path: Path) -> None:
    images = write_digits(tmp_path / "images", "a.png")
    before = fingerprint(tmp_path)
    r = run_cli("infer", images, "-a", refused_art, "-o", tmp_path / "p.jsonl", "--backend", "onnxruntime",
                "--no-progress")
    assert r.code == 2
    [line] = [x for x in r.err.splitlines() if x.startswith("error:")]
    assert "ONNX Runtime cannot load" in line and "pipeline.onnx" in line and WHY in line
    assert "Traceback" not in r.err
    assert_only_written(tmp_path, before)


def test_backend_auto_says_on_stderr_which_backend_it_fell_back_to_and_why(refused_art: Path,
                                                                           tmp_path: Path) -> None:
    images = write_digits(tmp_path / "images", "a.png")
    out = tmp_path / "p.jsonl"
    before = fingerprint(tmp_path)
    r = run_cli("infer", images, "-a", refused_art, "-o", out, "--no-progress")
    assert r.code == 0, r.err
    [line] = [x for x in r.err.splitlines() if "fell back" in x]
    assert line.startswith("WARNING ") and "backend auto fell back to torch (cpu) for 'pipeline'" in line
    assert "onnxruntime (cpu): failed to open: ONNX Runtime cannot load" in line and WHY in line
    assert set(read_jsonl(out)["a.png"]) == {"path", "label", "class", "confidence", "p_natural"}
    assert_only_written(tmp_path, before, out)


def test_backend_auto_names_the_backends_it_passed_over_even_when_nothing_failed(tiny_artifacts: Path,
                                                                                 tmp_path: Path) -> None:
    images = write_digits(tmp_path / "images", "a.png")
    r = run_cli("infer", images, "-a", tiny_artifacts, "-o", tmp_path / "p.jsonl", "--no-progress")
    assert r.code == 0, r.err
    [line] = [x for x in r.err.splitlines() if "backend auto" in x]
    assert "backend auto fell back to" in line and "tensorrt (cuda): " in line  # the best candidate, and why not
