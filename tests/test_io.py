"""The core io module: atomic writes honour the umask like a plain open(); read_json and
require_regular_file read only (bounded) regular files and refuse anything else with the caller's error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atld_deploy.errors import CheckpointError, ExportError
from atld_deploy.io import MAX_JSON_BYTES, read_json, require_regular_file

HANG_LIMIT_S = 60  # a subprocess that has not answered by then is hung on a blocking open

# every writer of the io module plus a plain open(), each under the umask given on the command line
_MODES_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    os.umask(int(sys.argv[2], 8))
    from atld_deploy.io import atomic_path, copy_file_atomic, write_bytes_atomic, write_json_atomic
    d = Path(sys.argv[1])
    with open(d / "plain.bin", "w") as f:
        f.write("x")
    write_bytes_atomic(d / "bytes.bin", b"x")
    write_json_atomic(d / "sub" / "obj.json", {"a": 1})
    with atomic_path(d / "path.bin") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"x")
    with atomic_path(d / "renamed.bin") as tmp:  # a writer that replaces the file it was given by its own
        fd = os.open(d / "own.tmp", os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        os.replace(d / "own.tmp", tmp)
    copy_file_atomic(d / "plain.bin", d / "copy.bin")
    names = ["plain.bin", "bytes.bin", "sub/obj.json", "path.bin", "renamed.bin", "copy.bin"]
    print(json.dumps({n: os.stat(d / n).st_mode & 0o777 for n in names} | {"sub/": os.stat(d / "sub").st_mode & 0o777}))
""")


@pytest.mark.parametrize("umask, file_mode", [(0o022, 0o644), (0o077, 0o600)], ids=["umask-022", "umask-077"])
def test_every_writer_honours_the_umask_like_plain_open(tmp_path: Path, umask: int, file_mode: int) -> None:
    # a subprocess, so the test runner's own umask is never changed
    done = subprocess.run([sys.executable, "-c", _MODES_SCRIPT, str(tmp_path), f"{umask:o}"],
                          capture_output=True, text=True, timeout=HANG_LIMIT_S)
    assert done.returncode == 0, done.stderr
    modes = json.loads(done.stdout)
    assert modes.pop("sub/") == 0o777 & ~umask
    assert modes == {name: file_mode for name in modes}, {k: oct(v) for k, v in modes.items()}


def _process_umask() -> int:
    """This process's umask, read without setting it (os.umask would change it for every thread)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        pytest.skip("this platform has no /proc/self/status to read the umask from")
    line = next((ln for ln in status.splitlines() if ln.startswith("Umask:")), None)
    if line is None:
        pytest.skip("this kernel does not report the umask in /proc/self/status")
    return int(line.split()[1], 8)


def test_runs_and_artifacts_have_the_modes_plain_open_gives(tiny_run: Path, tiny_artifacts: Path) -> None:
    want = 0o666 & ~_process_umask()  # the fixtures were written by this process
    modes = {str(p): p.stat().st_mode & 0o777 for root in (tiny_run, tiny_artifacts) for p in root.rglob("*")
             if p.is_file()}
    assert any(p.endswith("manifest.json") for p in modes) and any(p.endswith(".onnx") for p in modes)
    assert {p: oct(m) for p, m in modes.items() if m != want} == {}


def _read(path: Path) -> object:
    return read_json(path, ExportError, "not an artifact", "re-export it")


@pytest.mark.parametrize("content, reason", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("1" * 5000, "not valid JSON"),  # more digits than Python converts: a ValueError, not a JSONDecodeError
], ids=["deep-nesting", "huge-integer"])
def test_read_json_refuses_hostile_content_cleanly(tmp_path: Path, content: str | bytes, reason: str) -> None:
    p = tmp_path / "manifest.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ExportError, match=reason):
        _read(p)


def test_read_json_caps_the_size(tmp_path: Path) -> None:
    p = tmp_path / "manifest.json"
    p.write_bytes(b" " * MAX_JSON_BYTES + b"{}")  # valid JSON, one byte past the cap
    with pytest.raises(ExportError, match=r"larger than the 16 MiB"):
        _read(p)
    p.write_bytes(b" " * (MAX_JSON_BYTES - 2) + b"{}")  # exactly at the cap
    assert _read(p) == {}


def test_read_json_refuses_a_directory_and_a_device(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").mkdir()
    with pytest.raises(ExportError, match=r"manifest\.json is a directory, not a regular file.*re-export it"):
        _read(tmp_path / "manifest.json")
    if not os.path.exists("/dev/zero"):
        pytest.skip("this machine has no /dev/zero")
    with pytest.raises(ExportError, match=r"/dev/zero is a character device, not a regular file"):
        _read(Path("/dev/zero"))


# read_json and require_regular_file on a FIFO, in a subprocess so a blocking open cannot hang the suite
_FIFO_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from atld_deploy.errors import CheckpointError
    from atld_deploy.io import read_json, require_regular_file
    p = Path(sys.argv[1])
    for call in (lambda: read_json(p, CheckpointError, "no run", "retrain"),
                 lambda: require_regular_file(p, CheckpointError, "retrain")):
        try:
            call()
        except CheckpointError as e:
            print(e)
""")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="this platform has no named pipes")
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    try:
        done = subprocess.run([sys.executable, "-c", _FIFO_SCRIPT, str(fifo)], capture_output=True, text=True,
                              timeout=HANG_LIMIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading a FIFO hung for {HANG_LIMIT_S} s")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(f"{fifo} is a FIFO (named pipe), not a regular file" in ln for ln in lines), lines
    assert lines[0].endswith("retrain") and lines[1].endswith("retrain")


def test_require_regular_file(tmp_path: Path) -> None:
    f = tmp_path / "classifier.safetensors"
    f.write_bytes(b"x")
    require_regular_file(f, CheckpointError, "retrain")  # a regular file passes
    link = tmp_path / "link.safetensors"
    link.symlink_to(f)
    require_regular_file(link, CheckpointError, "retrain")  # a symlink to a regular file is read like one
    with pytest.raises(CheckpointError, match=r"is missing; retrain"):
        require_regular_file(tmp_path / "none", CheckpointError, "retrain")
    with pytest.raises(CheckpointError, match=r"is a directory, not a regular file; retrain"):
        require_regular_file(tmp_path, CheckpointError, "retrain")
