"""What `train` tells a person: a start summary, plain per-epoch lines with an ETA, and on Ctrl-C the exact
command that continues the run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from snapshot import tree

ARGS = ["--arch", "wrn-10-1", "--method", "standard", "--no-progress"]


def _start(out: Path, *extra: str) -> subprocess.Popen[str]:
    # SIGINT back to its default in the child: a shell starts background jobs with it ignored, and Python then
    # installs no KeyboardInterrupt handler, so the signal this test sends would never arrive
    return subprocess.Popen([sys.executable, "-m", "atld_deploy", "train", "--output", str(out), *ARGS, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_summary_and_plain_epoch_lines(tmp_path: Path) -> None:
    proc = _start(tmp_path / "run", "--epochs", "2")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "train (new run) ->" in err and "1437 train / 360 test images, 10 classes" in err
    assert "M parameters; eps 0.2" in err and "device cpu" in err
    lines = [l for l in err.splitlines() if l.startswith("epoch ")]
    assert len(lines) == 2 and all("ETA" in l and "check" in l for l in lines), err
    assert "trained standard wrn-10-1 on digits for 2 epochs" in out


# far more epochs than any machine trains before the signal lands (an idle one does a tiny epoch in a second)
LONG = "100000"


def test_ctrl_c_names_the_resume_command(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start(out, "--epochs", LONG)
    try:
        deadline = time.time() + 400
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "no epoch finished"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert f"Continue with: atld-deploy train --output {out} --resume" in err and "Traceback" not in err


def test_ctrl_c_before_the_first_epoch_of_an_overwrite_puts_the_old_run_back(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = tree(run)
    old_metrics = (run / "metrics.jsonl").read_bytes()
    proc = _start(run, "--epochs", LONG, "--overwrite")
    try:
        deadline = time.time() + 300
        # the old run moved aside (or, on a fast machine, the new run's first epoch already saved)
        while not any(p.name.startswith(".run.replaced-") for p in tmp_path.iterdir()) and not (
                (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_bytes() != old_metrics):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    if "was put back" in err:
        assert tree(run) == before
    else:  # the first epoch was already saved when the signal landed: the new run is the run now
        assert "--resume" in err and (run / "checkpoint.pt").exists()
