"""The real `atld-deploy` CLI in a subprocess, for the hostile-input tests: a hard time limit (a hang fails the
test instead of stalling the suite), the child's own peak RSS, and a fingerprint of every entry under a folder
so a test can show that nothing outside the command's output was written or deleted."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIME_LIMIT_S = 120  # start-up (torch, onnxruntime) takes seconds; a hang is anything far beyond that


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str
    max_rss_mb: float  # the child's peak resident set size


def run_cli(*args: str | os.PathLike[str], timeout: float = TIME_LIMIT_S) -> Result:
    """Run `python -m atld_deploy ARGS`; fail the test (after killing the child) if it outlives `timeout`."""
    cmd = [sys.executable, "-m", "atld_deploy", *map(os.fspath, args)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    streams: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, s=s: streams.__setitem__(n, s.read()), daemon=True)
               for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: this child's own rusage (peak RSS)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    out, err = (streams[n].decode(errors="replace") for n in ("out", "err"))
    if proc.returncode == -9:
        pytest.fail(f"{' '.join(cmd[2:])} did not finish within {timeout} s (a hang); stderr: {err[-2000:]}")
    return Result(proc.returncode, out, err, usage.ru_maxrss / 1024)


def fingerprint(root: Path) -> dict[str, str]:
    """Every entry under `root` (never opening anything but regular files): path -> content hash or kind."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.fsdecode(os.path.relpath(p, os.fsencode(root)))
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    found[rel] = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                found[rel] = "link -> " + os.fsdecode(os.readlink(p))
            else:
                found[rel] = stat.filemode(st.st_mode)[0]
    return found


def assert_only_written(root: Path, before: dict[str, str], *outputs: Path) -> None:
    """Nothing under `root` changed since `before` except the files `outputs` (new or rewritten)."""
    skip = {os.path.relpath(p, root) for p in outputs}
    after = fingerprint(root)
    assert {k: v for k, v in after.items() if k not in skip} == {k: v for k, v in before.items() if k not in skip}


def read_jsonl(path: Path) -> dict[str, dict]:
    """Rows of a JSON Lines predictions file by path (each path once)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_path = {r["path"]: r for r in rows}
    assert len(by_path) == len(rows), "a file appears twice"
    return by_path


def write_digits(folder: Path, *names: str) -> Path:
    """8x8 grayscale PNGs (the tiny artifacts' input size) named `names`, each a different constant level."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("L", (8, 8), 40 + 50 * i).save(folder / name, "PNG")
    return folder
