"""`atld-deploy serve` against the real Triton server that PyTriton bundles, over HTTP and gRPC.

A single client's request runs alone through the same Classifier, so its results must equal
`Classifier.predict` bit for bit. Concurrent requests may be joined by the dynamic batcher into one larger
batch, whose kernels may round differently: those are held to the float32 parity bound instead
(max |err| <= 1e-3 x max(1, |ref|)), and to identical labels.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from served import MAX_BATCH, Served, free_ports, port_is_free, serve_cmd, start_server  # skips without PyTriton

import tritonclient.grpc as grpc  # noqa: E402
import tritonclient.http as http  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

OUTPUTS = ("logits", "label", "class_name", "confidence", "p_natural")
FP32_BOUND = 1e-3  # the project's float32 parity bound, relative to max(1, |ref|)
CONCURRENT_CLIENTS = 4
REQUESTS_PER_CLIENT = 6
CONCURRENT_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """64 test digits as uint8 NHWC [64, 8, 8, 1], the server's uint8 input."""
    from atld_deploy.data import load_dataset

    x, _ = load_dataset("digits").test.batch(list(range(64)))
    return (x.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()


@pytest.fixture(scope="module")
def clf(tiny_artifacts: Path):  # noqa: ANN201
    from atld_deploy.runtime import Classifier

    with Classifier.load(tiny_artifacts, backend="onnxruntime", device="cpu") as c:
        yield c


def as_float(x: np.ndarray) -> np.ndarray:
    return (x.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)


def request(mod, x: np.ndarray) -> tuple[str, list]:  # noqa: ANN001
    """(model name, inputs) for a uint8 NHWC or float32 NCHW batch, for the tritonclient module `mod`."""
    name, tensor = ("atld_uint8", "images_uint8") if x.dtype == np.uint8 else ("atld", "images")
    inp = mod.InferInput(tensor, list(x.shape), {np.uint8: "UINT8", np.float32: "FP32"}.get(x.dtype.type, "FP64"))
    inp.set_data_from_numpy(x)
    return name, [inp]


def infer(client, mod, x: np.ndarray) -> dict[str, np.ndarray]:  # noqa: ANN001
    name, inputs = request(mod, x)
    res = client.infer(name, inputs, outputs=[mod.InferRequestedOutput(o) for o in OUTPUTS])
    return {o: res.as_numpy(o) for o in OUTPUTS}


def expected(clf, x: np.ndarray) -> dict[str, np.ndarray]:  # noqa: ANN001
    p = clf.predict(x)
    n = len(p)
    return {"logits": p.logits, "label": p.labels.reshape(n, 1), "class_name": np.array(p.classes).reshape(n, 1),
            "confidence": p.confidence.reshape(n, 1), "p_natural": p.p_natural.reshape(n, 1)}


def assert_exact(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    n, k = want["logits"].shape
    assert got["logits"].dtype == np.float32 and got["logits"].shape == (n, k)
    for o in ("label", "class_name", "confidence", "p_natural"):
        assert got[o].shape == (n, 1), o  # per-image scalars arrive as [N, 1]
    assert got["label"].dtype == np.int64
    names = np.vectorize(lambda b: b.decode("utf-8"))(got["class_name"])
    assert np.array_equal(names, want["class_name"])
    for o in ("logits", "label", "confidence", "p_natural"):
        assert np.array_equal(got[o], want[o]), o


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert np.array_equal(got["label"], want["label"])
    for o in ("logits", "confidence", "p_natural"):
        ref = want[o]
        assert np.abs(got[o] - ref).max() <= FP32_BOUND * max(1.0, float(np.abs(ref).max())), o


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_a_lone_request_gives_exactly_predicts_results(server: Served, clf, digits: np.ndarray,  # noqa: ANN001
                                                      protocol: str, dtype: str) -> None:
    mod, port = (http, server.http) if protocol == "http" else (grpc, server.grpc)
    x = digits[:MAX_BATCH] if dtype == "uint8" else as_float(digits[:MAX_BATCH])
    client = mod.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        got = infer(client, mod, x)
    finally:
        client.close()
    assert_exact(got, expected(clf, x))
    assert len(set(got["label"].ravel())) > 1  # a real model's answers, not one constant row


def test_concurrent_clients_all_get_their_own_answers(server: Served, clf, digits: np.ndarray) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    jobs = [[(int(s), int(n)) for s, n in zip(rng.integers(0, 64 - MAX_BATCH, REQUESTS_PER_CLIENT),
                                              rng.integers(1, MAX_BATCH + 1, REQUESTS_PER_CLIENT))]
            for _ in range(CONCURRENT_CLIENTS)]

    def client_run(i: int) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        mod = http if i % 2 == 0 else grpc  # both protocols at once
        port = server.http if mod is http else server.grpc
        c = mod.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            return [(digits[s:s + n], infer(c, mod, digits[s:s + n])) for s, n in jobs[i]]
        finally:
            c.close()

    with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
        results = [f.result(timeout=CONCURRENT_TIMEOUT_S) for f in
                   [pool.submit(client_run, i) for i in range(CONCURRENT_CLIENTS)]]
    assert sum(len(r) for r in results) == CONCURRENT_CLIENTS * REQUESTS_PER_CLIENT
    for per_client in results:
        for x, got in per_client:
            assert got["logits"].shape[0] == len(x)
            assert_close(got, expected(clf, x))


BAD_REQUESTS = [
    ("uint8 of the wrong size", np.zeros((2, 9, 9, 1), np.uint8), r"Expected \[-1,8,8,1\], got \[2,9,9,1\]"),
    ("uint8 with 3 channels", np.zeros((2, 8, 8, 3), np.uint8), r"Expected \[-1,8,8,1\], got \[2,8,8,3\]"),
    ("float NHWC", np.zeros((2, 8, 8, 1), np.float32), r"Expected \[-1,1,8,8\], got \[2,8,8,1\]"),
    ("float64", np.zeros((2, 1, 8, 8), np.float64), r"data-type is 'FP64', but model 'atld' expects 'FP32'"),
    ("batch over the limit", np.zeros((MAX_BATCH + 1, 8, 8, 1), np.uint8), rf"batch-size must be <= {MAX_BATCH}"),
    ("float outside [0, 1]", np.full((2, 1, 8, 8), 2.0, np.float32), r"float input must be in \[0, 1\]"),
]


@pytest.mark.parametrize(("what", "x", "message"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_a_bad_request_is_refused_and_the_next_good_one_served(server: Served, clf, digits: np.ndarray,  # noqa: ANN001
                                                               what: str, x: np.ndarray, message: str) -> None:
    client = http.InferenceServerClient(f"127.0.0.1:{server.http}")
    try:
        name, inputs = request(http, x)
        if x.dtype == np.float64:
            name = "atld"  # the float model, sent the wrong dtype
        with pytest.raises(InferenceServerException, match=message):
            client.infer(name, inputs)
        assert_exact(infer(client, http, digits[:3]), expected(clf, digits[:3]))
    finally:
        client.close()


def test_health_readiness_and_metrics(server: Served) -> None:
    client = http.InferenceServerClient(f"127.0.0.1:{server.http}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("atld") and client.is_model_ready("atld_uint8")
        assert not client.is_model_ready("no_such_model")  # readiness means something
        meta = client.get_model_metadata("atld_uint8")
        assert {o["name"]: o["shape"] for o in meta["outputs"]}["p_natural"] == [-1, 1]
        assert client.get_model_config("atld")["max_batch_size"] == MAX_BATCH
    finally:
        client.close()
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=30).read().decode()
    assert 'nv_inference_request_success{model="atld_uint8"' in text


def test_sigterm_stops_it_and_frees_the_ports(tiny_artifacts: Path, tmp_path: Path) -> None:
    served = start_server(tiny_artifacts, tmp_path / "serve.log", "--imt", "static")
    client = http.InferenceServerClient(f"127.0.0.1:{served.http}")
    try:
        assert client.is_server_ready()
    finally:
        client.close()
    assert served.stop() == 0, served.log.read_text()[-3000:]
    log = served.log.read_text()
    assert "running 'classifier'" in log and "IMT mode static" in log and "serve: stopped" in log
    assert all(port_is_free(p) for p in (served.http, served.grpc, served.metrics))


def run_serve(art: Path, *extra: str, ports: list[int] | None = None) -> subprocess.CompletedProcess[str]:
    """`serve` expected to refuse before it starts a server (hence a short timeout)."""
    return subprocess.run(serve_cmd(art, ports or free_ports(3), *extra), capture_output=True, text=True,
                          timeout=120)


def test_a_taken_port_is_refused_before_loading(tiny_artifacts: Path) -> None:
    import socket

    ports = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen()
        res = run_serve(tiny_artifacts, ports=ports)
    assert res.returncode == 2
    assert f"--grpc-port {ports[1]}: cannot listen on 127.0.0.1:{ports[1]}" in res.stderr, res.stderr


def test_an_unverified_artifact_needs_allow_unverified(tiny_artifacts: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    d = json.loads((art / "manifest.json").read_text())
    d["verified"] = False
    (art / "manifest.json").write_text(json.dumps(d))
    res = run_serve(art)
    assert res.returncode == 2 and "has not passed parity verification" in res.stderr, res.stderr


@pytest.mark.parametrize(("extra", "message"), [
    (("--max-batch", "100000"), "--max-batch 100000 is above the largest batch"),
    (("--name", "a b"), "--name must be letters"),
    (("--imt", "plus-plus"), "IMT mode must be one of auto, static, imt, imt-plus, got 'plus-plus'"),
])
def test_bad_options_are_one_line(tiny_artifacts: Path, extra: tuple[str, ...], message: str) -> None:
    res = run_serve(tiny_artifacts, *extra)
    assert res.returncode == 2 and message in res.stderr, res.stderr
