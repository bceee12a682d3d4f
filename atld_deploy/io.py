"""Files in and out.

Writes are atomic: a reader sees either the old file or the complete new one, never a partial one. The
temporary file is created exclusively (`O_EXCL`, so never through an existing name or symlink) under a
fresh random name beside the target, with mode 0o666 so the kernel applies the umask exactly as for a
plain `open()` (0644 under umask 022), then renamed over the target; the final file keeps that mode
whatever the writer did in between. A symlink at the target is replaced, its target never written.

Reads accept regular files only: a FIFO, socket, device or directory named like a manifest, config or
weights file is refused with the caller's error instead of blocking on it or reading it forever. JSON
files are capped at `MAX_JSON_BYTES`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from .errors import AtldError

MAX_JSON_BYTES = 16 << 20  # manifests, run configs and sidecars are kilobytes; 16 MiB is far past any real one
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO for reading must not wait for a writer
_O_BINARY = getattr(os, "O_BINARY", 0)
_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
)


# ------------------------------------------------------------------------------------------------ writing

def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty temporary file beside `path` and return (write fd, its path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # a name that is taken (by anything, a symlink included) is never reused
            continue


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; not every platform or file system lets a directory be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _settle(tmp: Path, mode: int) -> None:
    """fsync the file now at `tmp` and give it `mode`: a writer that opens by name may have replaced our
    file with its own (safetensors writes a 0600 temporary and renames it over the name it was given)."""
    fd = os.open(tmp, os.O_RDONLY | _O_NOFOLLOW | _O_BINARY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{tmp} is no longer a regular file")
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_fd(path: str | os.PathLike[str]) -> Iterator[tuple[int, Path]]:
    """Yield (fd, temporary path) beside `path`; on success the file is fsynced and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)  # 0o666 less the umask, as the kernel applied it
        yield fd, tmp
        os.close(fd)
        fd = -1
        _settle(tmp, mode)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # still there only when something failed; it is ours (created exclusively)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary path beside `path` for a writer that opens files by name (torch.save,
    safetensors, matplotlib); on success it is fsynced and renamed over `path`."""
    with _atomic_fd(path) as (_fd, tmp):
        yield tmp


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    with _atomic_fd(path) as (fd, _tmp):
        f = os.fdopen(os.dup(fd), "wb")
        with f:
            yield f


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    with _atomic_file(path) as f:
        f.write(data)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Replace `path` with `obj` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def copy_file_atomic(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Replace `dest` with a copy of the file `src` atomically (a symlink at `dest` is replaced, not followed)."""
    with open(src, "rb") as fin, _atomic_file(dest) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ reading

def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def require_regular_file(path: str | os.PathLike[str], error: type[AtldError], hint: str,
                         missing: str | None = None) -> os.stat_result:
    """Stat `path` (following symlinks) and raise `error` unless it is a regular file.

    For readers that open by name (safetensors, torch.load): a FIFO would block them, a device would be
    read forever. Returns the stat result.
    Raises:
        error: missing ("PATH is missing[: missing]; hint"), or a directory, FIFO, socket or device.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise error(f"{path} is missing{': ' + missing if missing else ''}; {hint}") from e
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror}); {hint}") from e
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path} is {_kind(st.st_mode)}, not a regular file; {hint}")
    return st


def read_regular_bytes(path: str | os.PathLike[str], error: type[AtldError], hint: str, max_bytes: int,
                       missing: str | None = None) -> bytes:
    """Read a regular file of at most `max_bytes`, checking its type on the open descriptor (no race).

    Raises:
        error: missing, not a regular file, unreadable, or larger than `max_bytes`.
    """
    require_regular_file(path, error, hint, missing)  # before opening: opening some devices has effects
    try:
        fd = os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_BINARY)
    except OSError as e:  # it changed between the stat and the open, or is not readable
        raise error(f"{path} cannot be read ({e.strerror}); {hint}") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path} is {_kind(st.st_mode)}, not a regular file; {hint}")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{path} is larger than the {max_bytes >> 20} MiB this file may have; {hint}")
    return data


def read_json(path: Path, error: type[AtldError], missing: str, hint: str) -> Any:
    """Parse a JSON file of at most `MAX_JSON_BYTES`, raising `error` with `hint` (what to do) when it is
    missing, not a regular file, too large, nested too deeply or not valid JSON."""
    data = read_regular_bytes(path, error, hint, MAX_JSON_BYTES, missing)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError as e:
        raise error(f"{path} is nested too deeply to be a real atld-deploy file; {hint}") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, integers with too many digits
        raise error(f"{path} is not valid JSON ({e}); {hint}") from e
