"""`infer_folder`: classify every file under a folder, streaming, with decoding overlapped with inference.

Which files: every file under IMAGES, recursively, in a stable order (entries sorted by name within each
directory, depth first), whatever its extension -- so a broken or mislabelled file gets an `error` line
instead of being silently skipped. Hidden files and directories (names starting with ".") and the output
file itself are skipped. Symlinks are followed for files (a dangling one gets an error line), not for
directories (no cycles). Anything that is not a regular file -- a FIFO, a socket, a device, a symlinked
directory -- gets one error line ("not a regular file (fifo)") and is never opened.

How: a producer thread walks the folder lazily and submits chunks of 16 paths to a pool of decoder threads
(`decode_image`: EXIF orientation, mode conversion, resize; each chunk comes back as one stacked uint8 array,
relative paths and error texts), through a queue holding at most `2 * workers + 2` chunks, so memory stays flat
however many files there are. The main thread only concatenates decoded chunks into batches of exactly
`batch_size` images, runs the `Classifier` (which releases the GIL while the decoders work ahead) and writes the
lines, error lines included, in walk order: one flushed write per batch.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import time
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from ..errors import ConfigError, DataError
from ..imageio import DEFAULT_MAX_PIXELS, check_max_pixels, decode_image, file_kind
from .classifier import Classifier, to_host
from .outputs import Row, Writer, open_writer, output_format, read_done
from .shard import Shard

log = logging.getLogger(__name__)

CHUNK_FILES = 16  # files per decode task: amortises the pool's per-task overhead on tiny images


@dataclass(frozen=True)
class FolderSummary:
    """Counts for one `infer_folder` call (`previous_*`: lines already in the output when resuming)."""

    classified: int
    unreadable: int
    skipped: int
    previous_classified: int
    previous_unreadable: int
    seconds: float
    backend: str
    output: Path

    @property
    def images_per_s(self) -> float:
        done = self.classified + self.unreadable
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def all_classified(self) -> bool:
        """True when no line of the output (old or new) is an error line."""
        return self.unreadable == 0 and self.previous_unreadable == 0

    def __str__(self) -> str:
        return self.line()

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        parts = [f"{self.classified} classified", f"{self.unreadable} unreadable"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped (already in the output, "
                         f"{self.previous_unreadable} of them unreadable)")
        return (f"{', '.join(parts)} in {self.seconds:.1f} s ({self.images_per_s:.0f} images/s, "
                f"{self.backend}) -> {self.output}")


class Entry(NamedTuple):
    """One candidate file: its path to open, its path relative to the walked folder ("/"-separated) and, for a
    directory that could not be listed, why (then `path` is that directory)."""

    path: str
    rel: str
    error: str | None = None


def default_workers(device: str) -> int:
    """Decoder threads: on the CPU the model's own threads need the other half of the cores; on a GPU decoding is
    the only CPU work. At most 8 (`benchmarks/bench_infer.py --workers N` compares counts)."""
    cpus = os.cpu_count() or 1
    return max(1, min(8, cpus if device == "cuda" else cpus // 2))


def walk_files(root: str | Path, _prefix: str = "") -> Iterator[Entry]:
    """Yield an `Entry` for every candidate file under `root` (and one with `error` per unlistable directory).

    Plain strings, not `Path`s: on folders of tiny images building two `Path`s per file cost a fifth of decoding.
    A `root` that is a file yields that one file.
    """
    if not _prefix and os.path.isfile(root):
        yield Entry(os.fspath(root), os.path.basename(root))
        return
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        yield Entry(os.fspath(root), _prefix.rstrip("/") or ".", f"cannot list directory ({e.strerror or e})")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            yield from walk_files(entry.path, f"{_prefix}{entry.name}/")
        else:
            yield Entry(entry.path, _prefix + entry.name, _not_regular(entry))


def check_request(images: Path, output: Path, resume: bool, overwrite: bool, batch_size: int = 64,
                  workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Every check of an `infer` request that needs no model, so the CLI runs it before loading one.

    Raises:
        DataError: IMAGES is neither a folder nor a file. ConfigError: bad numbers, output extension, or an
            existing output without `resume` or `overwrite`.
    """
    if not images.is_dir() and not images.is_file():
        raise DataError(f"{images} is neither a folder nor an image file; `infer` takes a folder of images or one image")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    check_max_pixels(max_pixels)
    output_format(output)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pick one")
    if output.exists() and output.stat().st_size > 0 and not (resume or overwrite):
        raise ConfigError(f"{output} already exists; pass --resume to continue it or --overwrite to replace it")


def count_files(root: str | Path) -> int:
    """How many entries `walk_files(root)` yields (the progress bar's total): a walk that opens no file."""
    return sum(1 for _ in walk_files(root))


def _not_regular(entry: os.DirEntry[str]) -> str | None:
    """Why `entry` (not a directory itself) will not be opened, or None for a regular file or a dangling link
    (which the decoder reports as missing). `is_file` costs no system call for a plain file."""
    try:
        if entry.is_file():
            return None
        mode = entry.stat().st_mode
    except OSError:
        return None
    kind = file_kind(mode)
    return f"not a regular file ({kind}; symlinked directories are not walked)" if kind == "directory" else \
        f"not a regular file ({kind})"


@dataclass
class _Decoded:
    """One decoded chunk: per file its relative path and error (None when readable); the readable images stacked."""

    rels: list[str]
    errors: list[str | None]
    images: np.ndarray | None  # uint8 [n_readable, H, W, C]


def _decode_chunk(entries: list[Entry], channels: int, size: int,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> _Decoded:
    errors: list[str | None] = []
    images: list[np.ndarray] = []
    for entry in entries:
        if entry.error is not None:
            errors.append(entry.error)
            continue
        try:
            images.append(decode_image(entry.path, channels, size, max_pixels))
            errors.append(None)
        except DataError as e:
            errors.append(_error_text(entry.path, e))
        except Exception as e:  # noqa: BLE001 - one bad file (a decompression bomb, a codec bug) never stops the run
            errors.append(f"cannot decode image ({type(e).__name__}: {e})")
    return _Decoded([e.rel for e in entries], errors, np.stack(images) if images else None)


def _error_text(path: str, e: DataError) -> str:
    """The decoder's message without the path (the line has it), naming empty files plainly."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:  # a device also has size 0
            return "empty file (0 bytes)"
    except OSError:
        pass
    return str(e).removeprefix(f"{path}: ")


def _chunked(it: Iterator[Entry], n: int) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    for item in it:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def infer_folder(
    images_dir: str | Path,
    art_dir: str | Path | None = None,
    output: str | Path = "predictions.jsonl",
    backend: str = "auto",
    batch_size: int = 64,
    imt: bool | str = "auto",
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    classifier: Classifier | None = None,
    progress: Callable[[int], None] | None = None,
    shard: Shard | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FolderSummary:
    """Classify every file under `images_dir` and write one line per file to `output` (.jsonl or .csv).

    Args:
        images_dir: the folder to walk (recursively, stable order; see the module docstring).
        art_dir: the artifact directory (ignored when `classifier` is given).
        output: the predictions file; its extension picks JSON Lines or CSV.
        backend, device, imt: as for `Classifier.load`.
        batch_size: images per inference call.
        workers: decoder threads (default: `default_workers`: half the CPUs when the model runs on the CPU,
            all of them on a GPU; at most 8).
        resume: append to an existing output, skipping the files it already lists.
        overwrite: replace an existing output instead of refusing.
        classifier: an already loaded Classifier to use (its backend/imt settings win).
        progress: called with the number of files finished after each batch.
        shard: classify only the files this shard owns (`Shard.parse("i/n")`; see `runtime/shard.py`).
        max_pixels: refuse (as an error line) images that would decode to more pixels than this
            (`imageio.DEFAULT_MAX_PIXELS`; it bounds each decoder thread's memory, see `atld_deploy.imageio`).

    Returns:
        The counts (`FolderSummary`); `all_classified` is False when any file could not be read.

    Raises:
        DataError: `images_dir` is not a directory, or the existing output is not a predictions file.
        ConfigError: bad batch size / workers / max_pixels / output extension, or an existing output without
            `resume` or `overwrite`.
        ExportError, EngineError: as for `Classifier.load`.
    """
    t0 = time.perf_counter()
    root, output = Path(images_dir), Path(output)
    check_request(root, output, resume, overwrite, batch_size, workers, max_pixels)
    done = read_done(output) if resume else None
    own = classifier is None
    if classifier is None:
        if art_dir is None:
            raise ConfigError("infer_folder needs art_dir or a loaded classifier")
        classifier = Classifier.load(art_dir, backend=backend, device=device, imt=imt, batch_size=batch_size)
    workers = workers if workers is not None else default_workers(classifier.device)
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = open_writer(output, fresh=not resume, suspect=classifier.threshold is not None)
    exclude = output.resolve()
    skipped = 0

    def todo() -> Iterator[Entry]:
        nonlocal skipped
        for entry in walk_files(root):
            if os.path.basename(entry.path) == exclude.name and Path(entry.path).resolve() == exclude:
                continue
            if shard is not None and not shard.owns(entry.rel):
                continue
            if done is not None and entry.rel in done.paths:
                skipped += 1
                continue
            yield entry

    stream = _Stream(root, classifier, writer, batch_size, progress, max_pixels)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="atld-decode") as pool:
            stream.run(todo(), pool, 2 * workers + 2)
    finally:
        writer.close()
        if own:
            classifier.close()
    counts = stream.counts
    return FolderSummary(
        classified=counts["classified"], unreadable=counts["unreadable"], skipped=skipped,
        previous_classified=done.classified if done else 0, previous_unreadable=done.unreadable if done else 0,
        seconds=time.perf_counter() - t0, backend=classifier.runner.describe(), output=output,
    )


class _Stream:
    """Decoded chunks in, prediction lines out, in walk order, in batches of exactly `batch_size` images."""

    def __init__(self, root: Path, clf: Classifier, writer: Writer, batch_size: int,
                 progress: Callable[[int], None] | None, max_pixels: int) -> None:
        self.root, self.clf, self.writer, self.batch_size, self.progress = root, clf, writer, batch_size, progress
        self.max_pixels = max_pixels
        self.images: list[np.ndarray] = []  # decoded, not yet inferred (uint8 NHWC pieces)
        self.n_images = 0
        self.lines: deque[tuple[str, str | None]] = deque()  # (relative path, error) not yet written
        self.counts = {"classified": 0, "unreadable": 0}
        self.classes = list(clf.manifest.classes)

    def run(self, files: Iterator[Entry], pool: ThreadPoolExecutor, max_inflight: int) -> None:
        """Walk and submit on a producer thread (bounded queue); infer and write on this thread."""
        q: queue.Queue[Future[_Decoded] | BaseException | None] = queue.Queue(maxsize=max_inflight)
        stop = threading.Event()

        def produce() -> None:
            try:
                for chunk in _chunked(files, min(CHUNK_FILES, self.batch_size)):
                    fut = pool.submit(_decode_chunk, chunk, self.clf.channels, self.clf.size, self.max_pixels)
                    while not stop.is_set():
                        try:
                            q.put(fut, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(None)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
                q.put(e)

        producer = threading.Thread(target=produce, name="atld-walk", daemon=True)
        producer.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                self._add(item.result())
                while self.n_images >= self.batch_size:
                    self._infer_and_write(self.batch_size)
                if self.n_images == 0 and self.lines:  # only error lines waiting: write them now
                    self._infer_and_write(0)
            while self.n_images or self.lines:
                self._infer_and_write(min(self.n_images, self.batch_size))
        finally:
            stop.set()
            while producer.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    producer.join(0.05)

    def _add(self, part: _Decoded) -> None:
        self.lines.extend(zip(part.rels, part.errors))
        if part.images is not None:
            self.images.append(part.images)
            self.n_images += len(part.images)

    def _infer_and_write(self, n: int) -> None:
        """Infer the next `n` decoded images, then write every line up to the next image not yet inferred."""
        results: list[tuple[int, str, float, float | None]] = []
        flags: list[bool | None] = [None] * n
        if n:
            pool = np.concatenate(self.images) if len(self.images) > 1 else self.images[0]
            batch, rest = pool[:n], pool[n:]
            self.images, self.n_images = ([rest] if len(rest) else []), len(rest)
            x = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
            out = self.clf.run_float_batch(x)
            labels, conf, suspect = self.clf.scores(out)
            labels, conf = to_host(labels), to_host(conf)
            # float64 before rounding: a rounded float32 prints as 0.30695098638534546
            p = to_host(out["p_natural"]).astype(np.float64).round(6).tolist() if "p_natural" in out else [None] * n
            if suspect is not None:
                flags = [bool(v) for v in to_host(suspect).tolist()]
            results = list(zip(labels.tolist(), [self.classes[i] for i in labels.tolist()],
                               conf.astype(np.float64).round(6).tolist(), p))
        rows: list[Row] = []
        it = iter(zip(results, flags))
        n_left = len(results)
        while self.lines:
            rel, err = self.lines[0]
            if err is None:
                if n_left == 0:
                    break  # its image is in the next batch
                n_left -= 1
                result, flag = next(it)
                rows.append((rel, *result, None, flag))
            else:
                rows.append((rel, None, None, None, None, err, None))
            self.lines.popleft()
        n_err = sum(r[5] is not None for r in rows)
        self.counts["unreadable"] += n_err
        self.counts["classified"] += len(rows) - n_err
        self.writer.write_rows(rows)
        if self.progress is not None:
            self.progress(len(rows))
