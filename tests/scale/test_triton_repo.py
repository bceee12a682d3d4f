"""Triton model repository: the generated config parses as Triton's own ModelConfig and matches the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from atld_deploy.errors import ConfigError

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] is in the dev extra")
from google.protobuf import text_format  # noqa: E402

from atld_deploy.export.manifest import Manifest  # noqa: E402
from atld_deploy.export.triton import TritonOptions, config_pbtxt, write_triton_repo  # noqa: E402


def _parse(path: Path) -> "model_config_pb2.ModelConfig":
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_repo_matches_manifest(tiny_artifacts: Path, tmp_path: Path) -> None:
    m = Manifest.load(tiny_artifacts)
    repo = tmp_path / "repo"
    opts = TritonOptions(name="digits", max_batch_size=32, preferred_batch_sizes=(4, 16), instances=2, kind="KIND_CPU")
    [model_dir] = write_triton_repo(tiny_artifacts, repo, opts)
    assert model_dir == repo / "digits"
    cfg = _parse(model_dir / "config.pbtxt")
    graph = m.graphs["pipeline"]
    assert cfg.name == "digits" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
    assert [i.name for i in cfg.input] == graph.input_names()
    assert list(cfg.input[0].dims) == graph.inputs[0].shape[1:] == [m.input["channels"], m.input["size"], m.input["size"]]
    assert cfg.input[0].data_type == model_config_pb2.TYPE_FP32
    outputs = {o.name: o for o in cfg.output}
    assert set(outputs) == set(graph.output_names())
    assert list(outputs["logits"].dims) == [len(m.classes)] and outputs["logits"].label_filename == "labels.txt"
    assert list(outputs["p_natural"].dims) == [1] and list(outputs["p_natural"].reshape.shape) == []
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.instance_group[0].count == 2 and cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert (model_dir / "1" / "model.onnx").read_bytes() == m.graph_path(tiny_artifacts, "pipeline").read_bytes()
    assert (model_dir / "labels.txt").read_text().splitlines() == m.classes
    assert not (repo / "digits_trt").exists()  # no engine in a CPU-built artifact


def test_plan_config_and_classifier_graph(tiny_artifacts: Path) -> None:
    m = Manifest.load(tiny_artifacts)
    text = config_pbtxt("digits_trt", "tensorrt_plan", m.graphs["classifier"], TritonOptions())
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert cfg.platform == "tensorrt_plan" and [o.name for o in cfg.output] == ["logits"]
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="preferred batch sizes \\[128\\]"):
        TritonOptions(max_batch_size=64, preferred_batch_sizes=(8, 128))
    with pytest.raises(ConfigError, match="model name"):
        TritonOptions(name="a b")


def test_export_cli_writes_the_triton_repo(tiny_run: Path, tmp_path: Path) -> None:
    from atld_deploy.cli import main

    repo = tmp_path / "repo"
    rc = main(["export", str(tiny_run), "--out", str(tmp_path / "art"), "--skip-parity", "--triton", str(repo),
               "--triton-kind", "KIND_CPU", "--triton-max-batch", "16"])
    assert rc == 0
    cfg = _parse(repo / "atld" / "config.pbtxt")
    assert cfg.max_batch_size == 16 and list(cfg.dynamic_batching.preferred_batch_size) == [8]
    assert (repo / "atld" / "1" / "model.onnx").read_bytes() == (tmp_path / "art" / "pipeline.onnx").read_bytes()
