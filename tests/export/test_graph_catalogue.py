"""The graph catalogue drives every stage: export writes its kinds, and the runtime's PyTorch backend and the
backend selector accept exactly its kinds (the ONNX side is test_export_pipeline.py's and test_parity_runners.py's)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from atld_deploy.errors import ArtifactError, EngineError
from atld_deploy.export.exporter import ExportOptions, engine_sources, exported_kinds
from atld_deploy.export.parity import graph_feed
from atld_deploy.graphs import GRAPH_KEYS, GRAPHS, kind_of
from atld_deploy.imt import IMTPipeline
from atld_deploy.run import load_run


def test_every_kind_is_exported_by_some_option_and_the_defaults_by_none() -> None:
    assert [k.key for k in exported_kinds(ExportOptions())] == [k for k in GRAPH_KEYS if GRAPHS[k].option is None]
    assert {k.key for k in exported_kinds(ExportOptions(uint8_input=True, fp16=True))} == set(GRAPH_KEYS)
    fp16 = {k.key for k in exported_kinds(ExportOptions(trt=True, precision="fp16"))}
    assert {"pipeline_fp16", "classifier_fp16"} <= fp16
    assert all(k.precision == "fp32" for k in exported_kinds(ExportOptions(trt=True)))  # fp32 engines: no float16 graph


def test_engines_are_built_from_the_graphs_of_their_precision_under_the_served_keys() -> None:
    assert engine_sources("fp32", GRAPH_KEYS) == {"classifier": "classifier", "pipeline": "pipeline"}
    assert engine_sources("fp16", GRAPH_KEYS) == {"pipeline": "pipeline_fp16", "classifier": "classifier_fp16"}
    # an artifact without the float16 classifier (exported before it existed) gets the float16 pipeline only
    assert engine_sources("fp16", [k for k in GRAPH_KEYS if k != "classifier_fp16"]) == {"pipeline": "pipeline_fp16"}
    for precision in ("fp32", "fp16"):  # an engine serves in place of a graph with the same tensor contract
        for engine, source in engine_sources(precision, GRAPH_KEYS).items():
            assert GRAPHS[source].specs(10, 3, 32) == GRAPHS[engine].specs(10, 3, 32), (engine, source)


def test_float16_kinds_trace_in_float16_unless_overridden(tiny_run: Path) -> None:
    from atld_deploy.export.trace import graph_module

    run = load_run(tiny_run)
    for key in ("classifier_fp16", "pipeline_fp16"):
        kind = kind_of(key)
        half = graph_module(kind, run.classifier, run.discriminator, run.imt_config())
        assert torch.float16 in {p.dtype for p in half.parameters()}, key  # the classifier's weights in float16
        full = graph_module(kind, run.classifier, run.discriminator, run.imt_config(), precision="fp32")
        # what the torch backend and parity's reference compute
        assert {p.dtype for p in full.parameters()} == {torch.float32}, key


def test_unknown_kind_is_one_clear_error() -> None:
    with pytest.raises(ArtifactError, match=r"graph 'pipeline_bf16' is not a kind this atld-deploy knows \(it knows "
                                            r"classifier, .*pipeline_fp16, classifier_fp16\); re-export"):
        kind_of("pipeline_bf16")


def test_specs_follow_the_catalogue_and_optional_outputs_only_on_request() -> None:
    ins, outs = GRAPHS["pipeline_uint8"].specs(10, 3, 32)
    assert [(t.name, t.dtype, t.shape) for t in ins] == [("images_uint8", "uint8", ["batch", 32, 32, 3])]
    assert [t.name for t in outs] == ["logits", "p_natural"] and outs[0].shape == ["batch", 10]
    _, kept = GRAPHS["pipeline_uint8"].specs(10, 3, 32, keep_optional=True)
    assert kept[-1].name == "images_imt" and kept[-1].shape == ["batch", 3, 32, 32]
    _, disc = GRAPHS["discriminator"].specs(10, 3, 32)
    assert [(t.name, t.shape) for t in disc] == [("natural_logit", ["batch"]), ("class_logits", ["batch", 10])]


def _independent_reference(run, key: str, feed: torch.Tensor) -> dict[str, np.ndarray]:
    """What each kind computes, written out here from the core modules (not from the catalogue's modules)."""
    pipe = IMTPipeline(run.classifier, run.discriminator, run.imt_config())
    if key in ("classifier", "classifier_fp16"):
        with torch.no_grad():
            return {"logits": run.classifier(feed).numpy()}
    if key == "discriminator":
        with torch.no_grad():
            nat, cls = run.discriminator(feed)
        return {"natural_logit": nat.numpy(), "class_logits": cls.numpy()}
    x = feed.permute(0, 3, 1, 2).float() / 255.0 if key == "pipeline_uint8" else feed
    logits, p, _ = pipe(x)
    return {"logits": logits.detach().numpy(), "p_natural": p.detach().numpy()}


@pytest.mark.parametrize("key", GRAPH_KEYS)
def test_torch_backend_computes_every_kind(tiny_run: Path, key: str) -> None:
    from atld_deploy.runtime.torch_runner import TorchRunner

    run = load_run(tiny_run)
    kind = GRAPHS[key]
    ins, outs = kind.specs(run.shape.num_classes, run.shape.channels, run.shape.size)
    x = torch.rand(5, run.shape.channels, run.shape.size, run.shape.size, generator=torch.Generator().manual_seed(3))
    feed = graph_feed(kind, x, run.classifier)
    with TorchRunner(tiny_run, key, run.imt_config(), ins, outs) as runner:
        got = runner.infer({kind.input.name: feed.numpy()})
    want = _independent_reference(run, key, feed)
    assert set(got) == {t.name for t in kind.outputs}
    for name, ref in want.items():  # the float16 kinds are served in float32 by the torch backend: the same numbers
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-6, err_msg=f"{key}: {name}")


def test_selector_opens_every_kind_on_torch_and_refuses_one_outside_the_catalogue(tiny_artifacts: Path) -> None:
    from atld_deploy.artifact import GraphEntry, Manifest
    from atld_deploy.runtime.select import open_runner
    from atld_deploy.runtime.torch_runner import TorchRunner

    m = Manifest.load(tiny_artifacts)
    k, c, s = len(m.classes), m.input["channels"], m.input["size"]
    # every kind as a manifest could list it (the torch backend needs only the run copy and the specs)
    graphs = {key: GraphEntry(f"{key}.onnx", *GRAPHS[key].specs(k, c, s), "0" * 64, GRAPHS[key].precision)
              for key in GRAPH_KEYS}
    every = dataclasses.replace(m, graphs=graphs)
    for key in GRAPH_KEYS:
        runner, _ = open_runner(tiny_artifacts, every, key, backend="torch", device="cpu")
        assert isinstance(runner, TorchRunner) and runner.kind is GRAPHS[key]
        runner.close()
    stranger = dataclasses.replace(m, graphs={**m.graphs, "pipeline_bf16": m.graphs["pipeline"]})
    with pytest.raises(EngineError, match=r"torch \(cpu\): no 'pipeline_bf16' graph"):
        open_runner(tiny_artifacts, stranger, "pipeline_bf16", backend="torch", device="cpu")
