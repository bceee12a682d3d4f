"""`infer_folder`: classify every file under a folder, streaming, with decoding overlapped with inference.

Which files: every regular file under IMAGES, recursively, in a stable order (entries sorted by name within
each directory, depth first), whatever its extension -- so a broken or mislabelled file gets an `error` line
instead of being silently skipped. Hidden files and directories (names starting with ".") and the output
file itself are skipped. Symlinks are followed for files (a dangling one gets an error line), not for
directories (no cycles).

How: the main thread walks the folder lazily and submits chunks of paths to a pool of decoder threads
(`decode_image`: EXIF orientation, mode conversion, resize); at most `2 * workers + 2` chunks are in flight,
so memory stays flat however many files there are. Decoded images are stacked into batches of `batch_size`,
run through the `Classifier`, and written with the unreadable files' error lines in walk order, one flushed
write per batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import ConfigError, DataError
from ..imageio import decode_image
from .classifier import Classifier, _host, _softmax_max
from .outputs import open_writer, output_format, read_done

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


def walk_files(root: Path) -> Iterator[tuple[Path, str | None]]:
    """Yield `(path, None)` for every candidate file under `root`, or `(dir, reason)` for an unreadable directory."""
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        yield Path(root), f"cannot list directory ({e.strerror or e})"
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            yield from walk_files(path)
        else:
            yield path, None


def _decode_chunk(paths: list[tuple[Path, str | None]], channels: int, size: int) -> list[tuple[np.ndarray | None, str | None]]:
    out: list[tuple[np.ndarray | None, str | None]] = []
    for path, listing_error in paths:
        if listing_error is not None:
            out.append((None, listing_error))
            continue
        try:
            out.append((decode_image(path, channels, size), None))
        except DataError as e:
            out.append((None, _error_text(path, e)))
        except Exception as e:  # noqa: BLE001 - one bad file (a decompression bomb, a codec bug) never stops the run
            out.append((None, f"cannot decode image ({type(e).__name__}: {e})"))
    return out


def _error_text(path: Path, e: DataError) -> str:
    """The decoder's message without the path (the line has it), naming empty files plainly."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    return str(e).removeprefix(f"{path}: ")


def _chunked(it: Iterator[tuple[Path, str | None]], n: int) -> Iterator[list[tuple[Path, str | None]]]:
    chunk: list[tuple[Path, str | None]] = []
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
    imt: bool = True,
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    classifier: Classifier | None = None,
    progress: Callable[[int], None] | None = None,
) -> FolderSummary:
    """Classify every file under `images_dir` and write one line per file to `output` (.jsonl or .csv).

    Args:
        images_dir: the folder to walk (recursively, stable order; see the module docstring).
        art_dir: the artifact directory (ignored when `classifier` is given).
        output: the predictions file; its extension picks JSON Lines or CSV.
        backend, device, imt: as for `Classifier.load`.
        batch_size: images per inference call.
        workers: decoder threads (default: the machine's CPU count, at most 8).
        resume: append to an existing output, skipping the files it already lists.
        overwrite: replace an existing output instead of refusing.
        classifier: an already loaded Classifier to use (its backend/imt settings win).
        progress: called with the number of files finished after each batch.

    Returns:
        The counts (`FolderSummary`); `all_classified` is False when any file could not be read.

    Raises:
        DataError: `images_dir` is not a directory, or the existing output is not a predictions file.
        ConfigError: bad batch size / workers / output extension, or an existing output without
            `resume` or `overwrite`.
        ExportError, EngineError: as for `Classifier.load`.
    """
    t0 = time.perf_counter()
    root, output = Path(images_dir), Path(output)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; `infer` takes a folder of images")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    output_format(output)
    if output.exists() and output.stat().st_size > 0 and not (resume or overwrite):
        raise ConfigError(f"{output} already exists; pass --resume to continue it or --overwrite to replace it")
    done = read_done(output) if resume else None
    own = classifier is None
    if classifier is None:
        if art_dir is None:
            raise ConfigError("infer_folder needs art_dir or a loaded classifier")
        classifier = Classifier.load(art_dir, backend=backend, device=device, imt=imt, batch_size=batch_size)
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = open_writer(output, fresh=not resume)
    exclude = output.resolve()
    skipped = 0

    def todo() -> Iterator[tuple[Path, str | None]]:
        nonlocal skipped
        for path, err in walk_files(root):
            if path.name == exclude.name and path.resolve() == exclude:
                continue
            if done is not None and path.relative_to(root).as_posix() in done.paths:
                skipped += 1
                continue
            yield path, err

    counts = {"classified": 0, "unreadable": 0}
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="atld-decode") as pool:
            _pipeline(root, classifier, todo(), pool, 2 * workers + 2, batch_size, writer, counts, progress)
    finally:
        writer.close()
        if own:
            classifier.close()
    return FolderSummary(
        classified=counts["classified"], unreadable=counts["unreadable"], skipped=skipped,
        previous_classified=done.classified if done else 0, previous_unreadable=done.unreadable if done else 0,
        seconds=time.perf_counter() - t0, backend=classifier.runner.describe(), output=output,
    )


def _pipeline(
    root: Path,
    clf: Classifier,
    files: Iterator[tuple[Path, str | None]],
    pool: ThreadPoolExecutor,
    max_inflight: int,
    batch_size: int,
    writer: Any,
    counts: dict[str, int],
    progress: Callable[[int], None] | None,
) -> None:
    """Decode ahead on `pool` (bounded), batch, infer, and write lines in walk order."""
    chunks = _chunked(files, min(CHUNK_FILES, batch_size))
    inflight: deque[tuple[list[tuple[Path, str | None]], Future[Any]]] = deque()
    pending: list[tuple[str, np.ndarray | None, str | None]] = []  # (relative path, image, error) in walk order
    n_images = 0

    def refill() -> None:
        while len(inflight) < max_inflight:
            chunk = next(chunks, None)
            if chunk is None:
                return
            inflight.append((chunk, pool.submit(_decode_chunk, chunk, clf.channels, clf.size)))

    refill()
    while inflight:
        chunk, fut = inflight.popleft()
        refill()
        for (path, _), (img, err) in zip(chunk, fut.result()):
            pending.append((path.relative_to(root).as_posix(), img, err))
            n_images += img is not None
        if n_images >= batch_size:
            # flush whole batches; keep the remainder (and error lines after it) for the next one
            cut = _cut_after(pending, batch_size)
            _flush(clf, pending[:cut], writer, counts, progress)
            pending = pending[cut:]
            n_images = sum(img is not None for _, img, _ in pending)
    while pending:
        cut = _cut_after(pending, batch_size)
        _flush(clf, pending[:cut], writer, counts, progress)
        pending = pending[cut:]


def _cut_after(pending: list[tuple[str, np.ndarray | None, str | None]], batch_size: int) -> int:
    """Index just after the `batch_size`-th image in `pending` (or its end)."""
    seen = 0
    for i, (_, img, _) in enumerate(pending):
        seen += img is not None
        if seen == batch_size:
            return i + 1
    return len(pending)


def _flush(
    clf: Classifier,
    items: list[tuple[str, np.ndarray | None, str | None]],
    writer: Any,
    counts: dict[str, int],
    progress: Callable[[int], None] | None,
) -> None:
    images = [img for _, img, _ in items if img is not None]
    results: list[dict[str, Any]] = []
    if images:
        x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        out = clf.run_float_batch(x)
        labels, conf = (_host(a) for a in _softmax_max(out["logits"]))
        p = _host(out["p_natural"]) if "p_natural" in out else None
        classes = clf.manifest.classes
        results = [
            {"label": int(labels[i]), "class": classes[int(labels[i])], "confidence": round(float(conf[i]), 6),
             "p_natural": None if p is None else round(float(p[i]), 6)}
            for i in range(len(images))
        ]
    records: list[dict[str, Any]] = []
    it = iter(results)
    for rel, img, err in items:
        if img is None:
            records.append({"path": rel, "error": err})
            counts["unreadable"] += 1
        else:
            records.append({"path": rel, **next(it)})
            counts["classified"] += 1
    writer.write(records)
    if progress is not None:
        progress(len(items))
