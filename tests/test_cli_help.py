"""`atld-deploy --help` lists every stage's commands without importing torch, ONNX Runtime or TensorRT."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from atld_deploy.cli import main
rc = main(["--help"])
heavy = sorted(m for m in ("torch", "onnxruntime", "tensorrt", "torchattacks", "onnx") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def test_help_is_light_and_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY:\n" in out.stdout or out.stdout.rstrip().endswith("HEAVY:"), out.stdout[-300:]
    for command in ("train", "eval", "reproduce", "figures", "export", "verify", "infer", "bench", "merge", "demo"):
        assert f" {command} " in out.stdout, command
    assert "--version" in out.stdout
