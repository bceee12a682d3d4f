"""A real `atld-deploy serve` process on 127.0.0.1 with free ports, and the helpers its tests share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# PyTriton pins numpy<2, so the default venv does not have it: these tests run in the serve venv
# (`make test-serve`) and skip elsewhere, saying so.
SKIP_REASON = "nvidia-pytriton is not in this venv (it pins numpy<2): run `make test-serve`"
for _module in ("pytriton.triton", "tritonclient.http", "tritonclient.grpc"):
    pytest.importorskip(_module, reason=SKIP_REASON)

from atld_deploy.runtime.serve import free_ports  # noqa: E402

START_TIMEOUT_S = 180  # Triton's start and two model loads, with room for a busy machine
STOP_TIMEOUT_S = 60
MAX_BATCH = 8  # small, so a batch over the limit is cheap to send


@dataclass
class Served:
    """A running server process and its ports."""

    proc: subprocess.Popen[str]
    http: int
    grpc: int
    metrics: int
    log: Path

    def stop(self) -> int:
        """SIGTERM, then wait (killed after STOP_TIMEOUT_S); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def serve_cmd(art: Path, ports: list[int], *extra: str) -> list[str]:
    return [sys.executable, "-m", "atld_deploy", "serve", str(art), "--http-port", str(ports[0]), "--grpc-port",
            str(ports[1]), "--metrics-port", str(ports[2]), "--backend", "onnxruntime", "--device", "cpu", *extra]


def start_server(art: Path, log: Path, *extra: str) -> Served:
    """Start `serve` and wait (at most START_TIMEOUT_S) until both models are ready over HTTP."""
    import tritonclient.http as http

    ports = free_ports(3)
    out = log.open("w")
    proc = subprocess.Popen(serve_cmd(art, ports, "--max-batch", str(MAX_BATCH), *extra), stdout=out,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    served = Served(proc, *ports, log=log)
    deadline = time.monotonic() + START_TIMEOUT_S
    client = http.InferenceServerClient(f"127.0.0.1:{ports[0]}")
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if client.is_model_ready("atld") and client.is_model_ready("atld_uint8"):
                    return served
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
    finally:
        client.close()
    served.stop()
    raise AssertionError(f"serve was not ready after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
