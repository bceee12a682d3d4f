"""What `serve` checks before it starts a server, and the outputs it declares: no PyTriton needed, so these
run in the default venv as well as in the serve venv."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import numpy as np
import pytest

from atld_deploy.cli import main
from atld_deploy.errors import ConfigError
from atld_deploy.runtime.serve import ServeOptions, check_ports_free, free_ports, max_batch, output_arrays


@pytest.mark.parametrize(("kw", "message"), [
    ({"http_port": 8001}, r"three different ports in 1..65535, got \[8001, 8001, 8002\]"),
    ({"metrics_port": 70000}, r"three different ports in 1..65535, got \[8000, 8001, 70000\]"),
    ({"name": "a/b"}, "--name must be letters, digits"),
    ({"max_batch": 0}, "--max-batch must be at least 1, got 0"),
    ({"max_queue_delay_us": -1}, "--max-queue-delay-us must be 0 or more, got -1"),
])
def test_bad_options_are_refused(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServeOptions(**kw)


def test_a_taken_port_is_named() -> None:
    http_port, grpc_port, metrics_port = free_ports(3)
    opts = ServeOptions(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    check_ports_free(opts)  # all free: no error
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", metrics_port))
        taken.listen()
        with pytest.raises(ConfigError, match=f"--metrics-port {metrics_port}: cannot listen on 127.0.0.1"):
            check_ports_free(opts)


def test_outputs_and_max_batch_follow_the_classifier(tiny_artifacts: Path) -> None:
    from atld_deploy.runtime import Classifier

    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    with Classifier.load(tiny_artifacts, backend="onnxruntime", device="cpu") as clf:
        out = output_arrays(clf, x)
        pred = clf.predict(x)
        assert max_batch(clf, None) == clf.chunk and max_batch(clf, 8) == 8
        with pytest.raises(ConfigError, match=f"--max-batch {clf.chunk + 1} is above the largest batch"):
            max_batch(clf, clf.chunk + 1)
    assert {k: (v.dtype.kind, v.shape) for k, v in out.items()} == {
        "logits": ("f", (5, 10)), "label": ("i", (5, 1)), "class_name": ("O", (5, 1)), "confidence": ("f", (5, 1)),
        "p_natural": ("f", (5, 1))}  # no card: no suspect
    assert np.array_equal(out["logits"], pred.logits) and np.array_equal(out["p_natural"][:, 0], pred.p_natural)
    assert [b.decode() for b in out["class_name"][:, 0]] == pred.classes


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is not None, reason="PyTriton is installed in this venv")
def test_without_pytriton_serve_says_how_to_get_it(tiny_artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tiny_artifacts)]) == 2
    err = capsys.readouterr().err
    assert "serve needs nvidia-pytriton" in err and "make serve-venv" in err and len(err.strip().splitlines()) == 1
