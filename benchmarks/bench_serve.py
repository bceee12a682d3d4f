"""Serving overhead: `atld-deploy serve` (Triton via PyTriton) against the same runtime called in-process.

    .venv-serve/bin/python benchmarks/bench_serve.py ART [--clients 1,4,16] [--seconds 10] [--batch 1]
        [--protocol http|grpc] [--backend onnxruntime] [--output docs/measurements/serve.json]

For each client count c, c threads send requests of `batch` digits for `seconds` each, first to a `serve`
process started here on free loopback ports (uint8 model), then straight to `Classifier.predict` in this
process (the same backend and device): throughput (images/s) and p50/p99 latency per request. Prints
in-process / served throughput (the serving overhead factor) and writes every figure, with the command,
commit, date, machine and versions, to the measurement file. Runs in the serve venv (`make bench-serve`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from atld_deploy.measure import write_measurement
from atld_deploy.runtime import Classifier
from atld_deploy.runtime.serve import free_ports

START_TIMEOUT_S = 300


def digits(n: int) -> np.ndarray:
    """n real test digits as uint8 NHWC (repeated when n exceeds the test split)."""
    from atld_deploy.data import load_dataset

    test = load_dataset("digits").test
    x, _ = test.batch([i % len(test) for i in range(n)])
    return (x.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()


def load(clients: int, seconds: float, call: Callable[[int], None]) -> dict[str, float]:
    """`clients` threads calling `call(request_index)` for `seconds`; throughput and latency percentiles."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        k = 0
        while time.perf_counter() < stop:
            t = time.perf_counter()
            call(i * 1_000_003 + k)
            latencies[i].append(time.perf_counter() - t)
            k += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array([v for per in latencies for v in per]) * 1e3
    return {"requests": int(lat.size), "seconds": round(wall, 3), "requests_per_s": lat.size / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


class ServeProcess:
    """`atld-deploy serve ART` on free loopback ports; SIGTERM on exit."""

    def __init__(self, art: Path, backend: str, device: str, log: Path) -> None:
        self.http, self.grpc, self.metrics = free_ports(3)
        cmd = [sys.executable, "-m", "atld_deploy", "serve", str(art), "--http-port", str(self.http), "--grpc-port",
               str(self.grpc), "--metrics-port", str(self.metrics), "--backend", backend, "--device", device]
        self.log = log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        import tritonclient.http as http

        client = http.InferenceServerClient(f"127.0.0.1:{self.http}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if client.is_model_ready("atld_uint8"):
                    client.close()
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        raise SystemExit(f"serve not ready after {START_TIMEOUT_S} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def served_call(protocol: str, port: int, images: np.ndarray, batch: int, clients: int) -> Callable[[int], None]:
    """One client per thread (tritonclient clients are not shared between threads)."""
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    mod = http if protocol == "http" else grpc
    local = threading.local()

    def call(k: int) -> None:
        if not hasattr(local, "client"):
            local.client = mod.InferenceServerClient(f"127.0.0.1:{port}", **({"concurrency": 1} if mod is http else {}))
        s = (k * batch) % (len(images) - batch + 1)
        inp = mod.InferInput("images_uint8", [batch, *images.shape[1:]], "UINT8")
        inp.set_data_from_numpy(images[s:s + batch])
        local.client.infer("atld_uint8", [inp])

    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("art", type=Path)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=1, help="images per request")
    ap.add_argument("--protocol", choices=("http", "grpc"), default="http")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--output", type=Path, default=Path("docs/measurements/serve.json"))
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    images = digits(max(256, 4 * args.batch))
    loadavg_before = [round(v, 2) for v in os.getloadavg()]

    server = ServeProcess(args.art, args.backend, args.device, args.output.with_suffix(".log"))
    served: dict[str, dict[str, float]] = {}
    try:
        server.wait_ready()
        port = server.http if args.protocol == "http" else server.grpc
        for c in clients:
            call = served_call(args.protocol, port, images, args.batch, c)
            load(c, min(2.0, args.seconds), call)  # warm-up: connections, first batches
            served[str(c)] = load(c, args.seconds, call)
            print(f"served     {c:>2} clients: {served[str(c)]['requests_per_s'] * args.batch:8.0f} images/s  "
                  f"p50 {served[str(c)]['p50_ms']:.2f} ms  p99 {served[str(c)]['p99_ms']:.2f} ms", flush=True)
    finally:
        server.stop()

    in_process: dict[str, dict[str, float]] = {}
    with Classifier.load(args.art, backend=args.backend, device=args.device) as clf:
        def direct(k: int) -> None:
            s = (k * args.batch) % (len(images) - args.batch + 1)
            clf.predict(images[s:s + args.batch])

        for c in clients:
            load(c, min(2.0, args.seconds), direct)
            in_process[str(c)] = load(c, args.seconds, direct)
            print(f"in-process {c:>2} clients: {in_process[str(c)]['requests_per_s'] * args.batch:8.0f} images/s  "
                  f"p50 {in_process[str(c)]['p50_ms']:.2f} ms  p99 {in_process[str(c)]['p99_ms']:.2f} ms", flush=True)
        backend = clf.runner.describe()

    ratio = {c: in_process[c]["requests_per_s"] / served[c]["requests_per_s"] for c in served}
    for c, r in ratio.items():
        print(f"{c:>2} clients: in-process / served throughput = {r:.2f}x")
    from importlib import metadata

    extra_versions = {n: metadata.version(n) for n in ("nvidia-pytriton", "tritonclient")}
    command = " ".join([Path(sys.executable).name, *sys.argv])
    write_measurement(args.output, command, {
        "backend": backend, "protocol": args.protocol, "images_per_request": args.batch, "seconds": args.seconds,
        "served": served, "in_process": in_process, "overhead_throughput_ratio": ratio,
    }, loadavg_before=loadavg_before, serve_versions=extra_versions)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
