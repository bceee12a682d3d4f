"""Serve a `Classifier` on a Triton Inference Server through PyTriton (the `serve` extra).

Two models share one loaded classifier (one backend session, one copy of the weights):

    <name>         input  images        float32 [N, C, H, W] in [0, 1]
    <name>_uint8   input  images_uint8  uint8   [N, H, W, C] (0..255, as decoded from a file)

and both answer with the same outputs (Triton adds the batch dimension N to every one of them):

    logits      float32 [N, K]   raw logits (of the IMT-transformed image when IMT is on)
    label       int64   [N, 1]
    class_name  BYTES   [N, 1]   UTF-8 class name of `label`
    confidence  float32 [N, 1]   calibrated softmax probability of `label`
    p_natural   float32 [N, 1]   discriminator's probability that the input is natural (every IMT mode)
    suspect     BOOL    [N, 1]   p_natural below the card's detector threshold (only when the artifact has one)

The outputs are exactly what `Classifier.predict` gives, so the mode, calibration and threshold are the
runtime's (`--imt auto` follows the artifact's card).

Per-image scalars are [N, 1], not [N]: PyTriton declares every output with a per-example shape of at least
one dimension. Triton itself refuses a request with the wrong dtype, per-image shape or a batch above the
max batch (its message names the expected type, shape or limit); values outside [0, 1] are refused by the
classifier's own input check. The dynamic batcher joins concurrent requests up to the max batch, and a
refused value refuses the requests batched with it as well (their whole batch carries the message).

PyTriton imports numpy<2 only: this module is imported by `serve` alone, never by the rest of the runtime.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sysconfig
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, EngineError
from .classifier import Classifier

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
UINT8_SUFFIX = "_uint8"
INSTALL_HINT = "install the serve extra: `make serve-venv` (or pip install 'atld-deploy[serve]', which needs numpy<2)"


@dataclass(frozen=True)
class ServeOptions:
    """Where and how `serve` listens. Ports must differ; `max_batch` None means the classifier's own limit."""

    host: str = LOOPBACK
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    name: str = "atld"
    max_batch: int | None = None
    max_queue_delay_us: int = 500

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if any(not 1 <= p <= 65535 for p in ports) or len(set(ports)) != 3:
            raise ConfigError(f"--http-port, --grpc-port and --metrics-port must be three different ports in 1..65535, "
                              f"got {list(ports)}")
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ConfigError(f"--name must be letters, digits, '_' or '-', got {self.name!r}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"--max-queue-delay-us must be 0 or more, got {self.max_queue_delay_us}")


def max_batch(clf: Classifier, asked: int | None) -> int:
    """The served max batch: the classifier's limit (an engine's profile max, else its chunk), or lower if asked.

    Raises:
        ConfigError: `asked` is above what the backend accepts in one call.
    """
    limit = clf.chunk
    if asked is None:
        return limit
    if asked > limit:
        raise ConfigError(f"--max-batch {asked} is above the largest batch {clf.runner.describe()} takes in one call "
                          f"({limit}); pass at most {limit}")
    return asked


def require_pytriton() -> None:
    """Raises EngineError (with the way to install it) when PyTriton cannot be imported here."""
    try:
        import pytriton.triton  # noqa: F401
    except ImportError as e:
        raise EngineError(f"serve needs nvidia-pytriton, which is not importable here ({e}); {INSTALL_HINT}") from e


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """n distinct ports nobody listens on now on `host` (bound to port 0 together, so the kernel picks distinct
    ones), for tests and benchmarks that start a server."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def check_ports_free(opts: ServeOptions) -> None:
    """Refuse before starting anything when a port is taken (Triton would otherwise fail after a long start).

    Raises:
        ConfigError: a port cannot be bound on `opts.host`, naming it.
    """
    for flag, port in (("--http-port", opts.http_port), ("--grpc-port", opts.grpc_port),
                       ("--metrics-port", opts.metrics_port)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((opts.host, port))
            except OSError as e:
                raise ConfigError(f"{flag} {port}: cannot listen on {opts.host}:{port} ({e.strerror}); "
                                  f"stop what uses it or pick another port") from e


def libpython_first() -> None:
    """Put this interpreter's libpython first on LD_LIBRARY_PATH, which Triton's Python backend stub inherits.

    The stub links `libpython3.X.so.1.0` by name and runs this interpreter's standard library; the system's
    libpython of another patch release (pyenv or a venv beside Debian's python3.11) crashes its
    multiprocessing with "'_thread.RLock' object has no attribute '_recursion_count'".
    """
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not libdir or not soname or not os.path.exists(os.path.join(libdir, soname)):
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])


def output_arrays(clf: Classifier, images: np.ndarray) -> dict[str, np.ndarray]:
    """`clf.predict(images)` as the served outputs (numpy, shapes as in the module docstring)."""
    pred = clf.predict(images)
    out = {
        "logits": np.asarray(pred.logits, dtype=np.float32),
        "label": np.asarray(pred.labels, dtype=np.int64).reshape(-1, 1),
        "class_name": np.array([[c.encode("utf-8")] for c in pred.classes], dtype=object).reshape(-1, 1),
        "confidence": np.asarray(pred.confidence, dtype=np.float32).reshape(-1, 1),
    }
    if pred.p_natural is not None:
        out["p_natural"] = np.asarray(pred.p_natural, dtype=np.float32).reshape(-1, 1)
    if pred.suspect is not None:
        out["suspect"] = np.asarray(pred.suspect, dtype=np.bool_).reshape(-1, 1)
    return out


def _infer_function(clf: Classifier, input_name: str) -> Callable[..., dict[str, np.ndarray]]:
    from pytriton.decorators import batch

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return output_arrays(clf, inputs[input_name])

    return infer


def _tensors(clf: Classifier) -> tuple[list[Any], list[Any], list[Any]]:
    """PyTriton tensor declarations: float input, uint8 input, outputs (per example, without the batch).

    The outputs are those of one prediction on a blank image, so they follow whatever the classifier reports
    (p_natural without a discriminator graph, suspect without a threshold are left out)."""
    from pytriton.model_config import Tensor

    c, s = clf.channels, clf.size
    probe = output_arrays(clf, np.zeros((1, s, s, c), np.uint8))
    dtypes = {"class_name": bytes}
    outputs = [Tensor(name=n, dtype=dtypes.get(n, a.dtype.type), shape=a.shape[1:]) for n, a in probe.items()]
    return ([Tensor(name="images", dtype=np.float32, shape=(c, s, s))],
            [Tensor(name="images_uint8", dtype=np.uint8, shape=(s, s, c))], outputs)


class Server:
    """A running Triton server bound to one classifier. `start()`, then `wait()` until a signal, then `stop()`."""

    def __init__(self, clf: Classifier, opts: ServeOptions) -> None:
        self.clf = clf
        self.opts = opts
        self.max_batch = max_batch(clf, opts.max_batch)
        self._triton: Any = None
        self._stop = threading.Event()
        self._previous: dict[int, Any] = {}

    @property
    def models(self) -> list[str]:
        """The served model names: float input first, uint8 input second."""
        return [self.opts.name, self.opts.name + UINT8_SUFFIX]

    def start(self) -> None:
        """Start Triton and load both models; returns once they are ready.

        Raises:
            EngineError: PyTriton is not installed, or Triton did not start (its reason in the message).
            ConfigError: a port is already taken.
        """
        require_pytriton()
        from pytriton.model_config import DynamicBatcher, ModelConfig
        from pytriton.triton import Triton, TritonConfig

        check_ports_free(self.opts)
        libpython_first()
        o = self.opts
        config = TritonConfig(http_address=o.host, http_port=o.http_port, grpc_address=o.host, grpc_port=o.grpc_port,
                              metrics_address=o.host, metrics_port=o.metrics_port, exit_timeout_secs=5,
                              allow_gpu_metrics=False)
        float_in, uint8_in, outputs = _tensors(self.clf)
        model_config = ModelConfig(max_batch_size=self.max_batch,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=o.max_queue_delay_us))
        triton = Triton(config=config)
        self._catch_signals()  # from here on: a SIGTERM during the start-up also ends in a clean stop
        try:
            for name, inputs, input_name in zip(self.models, (float_in, uint8_in), ("images", "images_uint8")):
                triton.bind(model_name=name, infer_func=_infer_function(self.clf, input_name), inputs=inputs,
                            outputs=outputs, config=model_config, strict=True)
            triton.run()
        except Exception as e:
            triton.stop()
            self.stop()
            raise EngineError(f"Triton did not start on {o.host} (HTTP {o.http_port}, gRPC {o.grpc_port}): {e}") from e
        self._triton = triton

    def urls(self) -> dict[str, str]:
        """Client addresses: HTTP and gRPC inference, Prometheus metrics."""
        o = self.opts
        return {"http": f"{o.host}:{o.http_port}", "grpc": f"{o.host}:{o.grpc_port}",
                "metrics": f"http://{o.host}:{o.metrics_port}/metrics"}

    def _catch_signals(self) -> None:
        """SIGTERM and SIGINT set the stop event instead of killing the process (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, lambda *_: self._stop.set())

    def wait(self, poll_s: float = 1.0) -> None:
        """Block until SIGTERM/SIGINT (caught from `start()` on) or until Triton dies.

        Raises:
            EngineError: the Triton server stopped by itself.
        """
        while not self._stop.wait(poll_s):
            if self._triton is None or not self._triton.is_alive():
                raise EngineError("the Triton server stopped by itself; see its log above")

    def stop(self) -> None:
        """Stop Triton (waits for in-flight requests up to its exit timeout) and free the ports."""
        if self._triton is not None:
            self._triton.stop()
            self._triton = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
