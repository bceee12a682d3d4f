"""Batch inference on Ray Data: one `Classifier` per actor, streaming reads, restarts and retries from Ray.

From your own Ray pipeline (`pip install 'atld-deploy[ray]'`):

    import ray
    from atld_deploy.runtime.ray_data import ArtifactPredictor

    ds = ray.data.read_binary_files("s3://bucket/images/", include_paths=True)   # or read_images(..., include_paths=True)
    preds = ds.map_batches(ArtifactPredictor, fn_constructor_kwargs={"art": "/models/art"},
                           batch_size=64, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=2),
                           num_gpus=1)                        # one actor per GPU; num_cpus=1 on a CPU cluster
    preds.write_parquet("s3://bucket/predictions.parquet")

`ArtifactPredictor` takes a batch in any of Ray Data's layouts -- `bytes` + `path` (`read_binary_files`: decoded
here by the project's own decoder, so a broken file is an error row, exactly as `infer` writes it), `image` +
`path` (`read_images`: arrays already at the model's size), or `path` alone (files each worker can open) -- and
returns the columns `infer` writes: path, label, class, confidence, p_natural, error, and suspect when the
artifact has a detector threshold. A row is either a prediction (error null) or an error (everything but path
null); a file that cannot be decoded never fails the job.

`infer_ray` is what `atld-deploy infer IMAGES --executor ray` runs: it walks a local folder exactly as `infer`
does (same order, same error rows for FIFOs and dangling links) or reads any URI `read_binary_files` accepts,
runs the actor pool sized by `plan_pool`, and writes the same JSON Lines / CSV as local `infer` (atomically)
or a Parquet dataset for an output ending in `.parquet`.

Sizing (`plan_pool`): Ray Data's read and write tasks each need one CPU, so the actors together never take the
last free CPU -- two one-CPU actors on a two-CPU cluster leave the reads nothing and the job never finishes.
On a CPU cluster: one CPU per actor, as many actors as the free CPUs less one (at least one actor; on a
one-CPU cluster it takes no CPU reservation). With free GPUs (and --device not cpu): one actor per GPU (or per
`gpus_per_actor` of one), each with one CPU while the free CPUs less one allow, else a share of them.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, DataError, EngineError
from ..imageio import DEFAULT_MAX_PIXELS, check_max_pixels
from .classifier import Classifier, resolve_mode, to_host
from .folder import Entry, FolderSummary, _decode_chunk, walk_files
from .outputs import Row, open_writer, output_format

log = logging.getLogger(__name__)

RAY_INSTALL = "pip install 'atld-deploy[ray]'"
READ_CPUS = 1.0  # what one Ray Data read/write task asks for: never given to the actors
COLUMNS = ("path", "label", "class", "confidence", "p_natural", "error")


def import_ray() -> Any:
    """The `ray` module with Ray Data, or one EngineError naming the install command."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra's [data] part (pyarrow, pandas)
    except ImportError as e:
        raise EngineError(f"--executor ray needs Ray Data, which is not installed ({e}): {RAY_INSTALL}") from e
    return ray


class ArtifactPredictor:
    """A callable class for `Dataset.map_batches`: loads the artifact once per actor, classifies each batch.

    Args:
        art: the artifact directory, readable on every node.
        backend, device, imt, allow_unverified, public_key: as for `Classifier.load` (on each node `auto` picks
            that node's best backend: TensorRT, ONNX Runtime CUDA/CPU, PyTorch).
        max_pixels: refuse (as an error row) files that would decode to more pixels (see `atld_deploy.imageio`).
    """

    def __init__(self, art: str | os.PathLike[str], backend: str = "auto", device: str = "auto",
                 imt: bool | str = "auto", allow_unverified: bool = False,
                 public_key: str | os.PathLike[str] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.clf = Classifier.load(art, backend=backend, device=device, imt=imt, allow_unverified=allow_unverified,
                                   public_key=public_key)
        self.max_pixels = check_max_pixels(max_pixels)
        self.suspect = self.clf.threshold is not None
        self._tmp = tempfile.mkdtemp(prefix="atld-ray-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)

    def __call__(self, batch: Mapping[str, Any]) -> Any:
        """One batch (a dict of columns, `batch_format="numpy"`) -> a pyarrow Table of prediction rows."""
        if "path" not in batch:
            raise DataError(f"the batch has columns {sorted(batch)}, expected `path` with `bytes` or `image` "
                            f"(read_binary_files / read_images with include_paths=True) or alone")
        paths = [str(p) for p in batch["path"]]
        if "image" in batch:
            errors, images = self._arrays(batch["image"])
        elif "bytes" in batch:
            errors, images = self._bytes(paths, batch["bytes"])
        else:
            files = [str(f) for f in batch["file"]] if "file" in batch else paths
            # a column of only "" or nulls may arrive as floats: only text is a walk error
            walk = [e if isinstance(e, str) and e else None for e in batch["error"]] if "error" in batch else \
                [None] * len(paths)
            decoded = _decode_chunk([Entry(f, p, e) for f, p, e in zip(files, paths, walk)],
                                    self.clf.channels, self.clf.size, self.max_pixels)
            errors, images = decoded.errors, decoded.images
        return self._table(paths, errors, images)

    def _arrays(self, column: Any) -> tuple[list[str | None], np.ndarray | None]:
        """`read_images` arrays: used as they are when already uint8 at the model's size, else an error row."""
        c, s = self.clf.channels, self.clf.size
        errors: list[str | None] = []
        ok: list[np.ndarray] = []
        for a in column:
            a = np.asarray(a)
            a = a[:, :, None] if a.ndim == 2 else a
            if a.dtype != np.uint8 or a.shape != (s, s, c):
                errors.append(f"image array is {a.dtype} {'x'.join(map(str, a.shape))}, expected uint8 {s}x{s}x{c}: "
                              f"read with size=({s}, {s}) and mode={'L' if c == 1 else 'RGB'!r}, or use "
                              f"read_binary_files to decode as `infer` does")
            else:
                errors.append(None)
                ok.append(a)
        return errors, np.stack(ok) if ok else None

    def _bytes(self, paths: list[str], column: Any) -> tuple[list[str | None], np.ndarray | None]:
        """`read_binary_files` contents, decoded by the project's decoder through a file in this actor's
        scratch folder (the decoder's checks and fast path work on files)."""
        entries = []
        for i, data in enumerate(column):
            tmp = os.path.join(self._tmp, f"{i}{os.path.splitext(paths[i])[1][:16]}")
            with open(tmp, "wb") as f:
                f.write(bytes(data))
            entries.append(Entry(tmp, paths[i]))
        try:
            decoded = _decode_chunk(entries, self.clf.channels, self.clf.size, self.max_pixels)
        finally:
            for entry in entries:
                os.unlink(entry.path)
        return decoded.errors, decoded.images

    def _table(self, paths: list[str], errors: list[str | None], images: np.ndarray | None) -> Any:
        import pyarrow as pa

        n = 0 if images is None else len(images)
        labels: list[int] = []
        conf: list[float] = []
        p_nat: list[float | None] = [None] * n
        flags: list[bool | None] = [None] * n
        if n:
            x = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)  # type: ignore[union-attr]
            out = self.clf.run_float_batch(x)
            lab, cf, sus = self.clf.scores(out)
            labels = to_host(lab).tolist()
            # rounded as local `infer` writes them, in float64 (a rounded float32 prints 17 digits)
            conf = to_host(cf).astype(np.float64).round(6).tolist()
            if "p_natural" in out:
                p_nat = to_host(out["p_natural"]).astype(np.float64).round(6).tolist()
            if sus is not None:
                flags = [bool(v) for v in to_host(sus).tolist()]
        cols: dict[str, list[Any]] = {k: [] for k in COLUMNS + ("suspect",)}
        it = iter(range(n))
        classes = self.clf.manifest.classes
        for path, err in zip(paths, errors):
            j = next(it) if err is None else None
            cols["path"].append(path)
            cols["error"].append(err)
            cols["label"].append(None if j is None else labels[j])
            cols["class"].append(None if j is None else classes[labels[j]])
            cols["confidence"].append(None if j is None else conf[j])
            cols["p_natural"].append(None if j is None else p_nat[j])
            cols["suspect"].append(None if j is None else flags[j])
        types = {"path": pa.string(), "label": pa.int64(), "class": pa.string(), "confidence": pa.float64(),
                 "p_natural": pa.float64(), "error": pa.string(), "suspect": pa.bool_()}
        names = list(COLUMNS) + (["suspect"] if self.suspect else [])
        return pa.table({k: pa.array(cols[k], type=types[k]) for k in names})

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)


@dataclass(frozen=True)
class Pool:
    """The actor pool: how many actors and what each reserves."""

    actors: int
    cpus: float
    gpus: float

    def describe(self) -> str:
        return f"Ray Data, {self.actors} actor(s) x {self.cpus:g} CPU / {self.gpus:g} GPU"


def plan_pool(free: Mapping[str, float], device: str = "auto", actors: int | None = None,
              cpus_per_actor: float | None = None, gpus_per_actor: float | None = None) -> Pool:
    """The actor pool for a cluster with `free` resources (`ray.available_resources()`); see the module
    docstring for the defaults. Given values are kept, and refused when they leave the reads no CPU.

    Raises:
        ConfigError: a count below 1, a negative share, GPUs asked for where the cluster has none free, or
            actors that would take every free CPU.
    """
    free_cpu, free_gpu = float(free.get("CPU", 0.0)), float(free.get("GPU", 0.0))
    if actors is not None and actors < 1:
        raise ConfigError(f"--ray-actors must be at least 1, got {actors}")
    for flag, v in (("--ray-cpus-per-actor", cpus_per_actor), ("--ray-gpus-per-actor", gpus_per_actor)):
        if v is not None and v < 0:
            raise ConfigError(f"{flag} must be 0 or more, got {v:g}")
    spare = max(0.0, free_cpu - READ_CPUS)  # what the actors may take between them
    use_gpu = (gpus_per_actor or 0) > 0 or (gpus_per_actor is None and device != "cpu" and free_gpu >= 1)
    if use_gpu:
        gpus = gpus_per_actor if gpus_per_actor is not None else 1.0
        if gpus > free_gpu:
            raise ConfigError(f"--ray-gpus-per-actor {gpus:g} but the cluster has {free_gpu:g} free GPU(s); pass "
                              f"--ray-gpus-per-actor 0 (or --device cpu) to run on CPUs")
        n = actors if actors is not None else max(1, int(free_gpu // gpus))
        cpus = cpus_per_actor if cpus_per_actor is not None else min(1.0, math.floor(100 * spare / n) / 100)
    else:
        gpus = 0.0
        cpus = cpus_per_actor if cpus_per_actor is not None else (1.0 if spare >= 1 else 0.0)
        n = actors if actors is not None else (max(1, int(spare // cpus)) if cpus > 0 else 1)
    if n * cpus > spare + 1e-9:
        raise ConfigError(f"{n} actor(s) x {cpus:g} CPU take {n * cpus:g} of the cluster's {free_cpu:g} free CPUs, "
                          f"leaving less than the {READ_CPUS:g} its read and write tasks need (the job would never "
                          f"finish): lower --ray-actors or --ray-cpus-per-actor, or leave them to the defaults")
    if n * gpus > free_gpu + 1e-9:
        raise ConfigError(f"{n} actor(s) x {gpus:g} GPU need {n * gpus:g} GPUs, the cluster has {free_gpu:g} free: "
                          f"lower --ray-actors or --ray-gpus-per-actor")
    return Pool(n, cpus, gpus)


def is_uri(images: str | os.PathLike[str]) -> bool:
    """True for object-storage and other URIs (`s3://`, `gs://`, ...) that only Ray Data reads."""
    return "://" in os.fspath(images)


def check_ray_request(images: str | os.PathLike[str], output: Path, overwrite: bool) -> str:
    """The checks of an `--executor ray` request that need neither Ray nor a model; returns `parquet`,
    `jsonl` or `csv`.

    Raises:
        DataError: a local IMAGES that is neither a folder nor a file. ConfigError: a bad output extension or
            an existing output without `overwrite`.
    """
    if not is_uri(images) and not (os.path.isdir(images) or os.path.isfile(images)):
        raise DataError(f"{images} is neither a folder nor an image file; `infer` takes a folder of images, one "
                        f"image, or (with --executor ray) a URI such as s3://bucket/images/")
    fmt = "parquet" if output.suffix.lower() == ".parquet" else None
    if fmt is None:
        try:
            fmt = output_format(output)
        except ConfigError:
            raise ConfigError(f"--output must end in .jsonl, .csv or (with --executor ray) .parquet, got "
                              f"{output.name!r}") from None
    if output.exists() and not overwrite:
        raise ConfigError(f"{output} already exists; pass --overwrite to replace it (--resume is for --executor local)")
    if output.exists() and fmt == "parquet" and not _is_parquet_dataset(output):
        raise ConfigError(f"{output} exists and is not a Parquet dataset this tool wrote; --overwrite replaces only "
                          f"those: choose another --output")
    return fmt


def _is_parquet_dataset(path: Path) -> bool:
    return path.is_dir() and all(p.is_file() and p.suffix == ".parquet" for p in path.iterdir())


def _local_items(root: Path, output: Path) -> list[dict[str, Any]]:
    """`walk_files(root)` as Ray rows (the output itself left out, as local `infer` does)."""
    exclude = output.resolve()
    return [{"path": e.rel, "file": e.path, "error": e.error or ""} for e in walk_files(root)
            if not Path(e.path).resolve() == exclude]


def infer_ray(images: str | os.PathLike[str], art: str | os.PathLike[str], output: str | os.PathLike[str], *,
              address: str | None = None, actors: int | None = None, cpus_per_actor: float | None = None,
              gpus_per_actor: float | None = None, backend: str = "auto", device: str = "auto",
              imt: bool | str = "auto", batch_size: int = 64, max_pixels: int = DEFAULT_MAX_PIXELS,
              overwrite: bool = False, allow_unverified: bool = False,
              public_key: str | os.PathLike[str] | None = None, progress: bool = True,
              predictor: type[ArtifactPredictor] = ArtifactPredictor) -> FolderSummary:
    """Classify every file under `images` on Ray Data and write one row per file to `output`.

    Args:
        images: a local folder or file (walked as `infer` walks it) or a URI `read_binary_files` accepts.
        art: the artifact directory (checked here first; each actor loads it again).
        output: .jsonl / .csv (the same lines as local `infer`, written atomically) or DIR.parquet (a dataset).
        address: the cluster to join (`auto`: the one `ray start` or $RAY_ADDRESS names); None: the cluster
            this process already joined, else $RAY_ADDRESS if set, else a new local one stopped at the end.
        actors, cpus_per_actor, gpus_per_actor: the pool (default: `plan_pool`).
        predictor: the callable class to run (a subclass of `ArtifactPredictor`).
        Others: as for `infer_folder` / `Classifier.load`.

    Raises:
        EngineError: Ray Data is not installed, or Ray lost or duplicated rows.
        ConfigError, DataError, ArtifactError: as for `check_ray_request`, `plan_pool` and `Classifier.load`.
    """
    t0 = time.perf_counter()
    output = Path(output)
    ray = import_ray()
    fmt = check_ray_request(images, output, overwrite)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    check_max_pixels(max_pixels)
    from ..signing import open_artifact

    manifest = open_artifact(art, allow_unverified=allow_unverified, public_key=public_key)  # before any cluster
    resolve_mode(Path(art), manifest, imt)  # a mode the artifact cannot serve fails here, not in every actor
    suspect = manifest.suspect_threshold() is not None
    items = None if is_uri(images) else _local_items(Path(images), output)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=progress)
    try:
        pool = plan_pool(ray.available_resources(), device, actors, cpus_per_actor, gpus_per_actor)
        log.info("ray: %s", pool.describe())
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows in walk order, as local `infer` writes them
        ctx.enable_progress_bars = progress
        if items is not None:
            ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // batch_size, 10_000)))
        else:
            ds = ray.data.read_binary_files(os.fspath(images), include_paths=True)
        kwargs = {"art": os.fspath(art), "backend": backend, "device": device, "imt": imt,
                  "allow_unverified": allow_unverified, "public_key": public_key, "max_pixels": max_pixels}
        preds = ds.map_batches(predictor, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                               compute=ray.data.ActorPoolStrategy(size=pool.actors), num_cpus=pool.cpus,
                               num_gpus=pool.gpus)  # Ray Data restarts dead actors and retries their batches
        wanted = None if items is None else [item["path"] for item in items]
        if fmt == "parquet":
            classified, unreadable = _write_parquet(preds, output, wanted)
        else:
            classified, unreadable = _write_lines(preds, output, suspect, wanted)
    finally:
        if started:
            ray.shutdown()
    return FolderSummary(classified=classified, unreadable=unreadable, skipped=0, previous_classified=0,
                         previous_unreadable=0, seconds=time.perf_counter() - t0, backend=pool.describe(),
                         output=output)


def check_complete(paths: list[str], wanted: list[str] | None, output: Path) -> None:
    """Every file of the walk exactly once in the rows Ray returned (`wanted` None: a URI, not walked here);
    checked before the output is put in place.

    Raises:
        EngineError: a file missing or repeated (the output is then not to be trusted).
    """
    if wanted is None or (len(paths) == len(wanted) and set(paths) == set(wanted)):
        return
    seen: dict[str, int] = {}
    for p in paths:
        seen[p] = seen.get(p, 0) + 1
    missing = [p for p in wanted if p not in seen]
    repeated = sorted(p for p, n in seen.items() if n > 1)
    raise EngineError(f"Ray returned {len(paths)} rows for {len(wanted)} files ({len(missing)} missing, e.g. "
                      f"{missing[:3]}; {len(repeated)} repeated, e.g. {repeated[:3]}): {output} was not written; "
                      f"rerun the job")


def _row(rec: Mapping[str, Any]) -> Row:
    return (rec["path"], rec["label"], rec["class"], rec["confidence"], rec["p_natural"], rec["error"],
            rec.get("suspect"))


def _write_lines(preds: Any, output: Path, suspect: bool, wanted: list[str] | None) -> tuple[int, int]:
    """Stream the rows into a temporary file beside `output`, renamed over it once complete."""
    from ..io import atomic_path

    classified = unreadable = 0
    paths: list[str] = []
    with atomic_path(output) as tmp:
        named = tmp.with_suffix(output.suffix)  # the writer picks its format by the extension
        try:
            writer = open_writer(named, fresh=True, suspect=suspect)
            try:
                for table in preds.iter_batches(batch_format="pyarrow", batch_size=None):
                    rows = [_row(r) for r in table.to_pylist()]
                    writer.write_rows(rows)
                    paths += [r[0] for r in rows]
                    n_err = sum(r[5] is not None for r in rows)
                    unreadable += n_err
                    classified += len(rows) - n_err
            finally:
                writer.close()
            check_complete(paths, wanted, output)
            os.replace(named, tmp)
        finally:
            named.unlink(missing_ok=True)
    return classified, unreadable


def _write_parquet(preds: Any, output: Path, wanted: list[str] | None) -> tuple[int, int]:
    """Write the dataset into a fresh folder beside `output`, then put it in place of the old one (which
    `check_ray_request` made sure is a Parquet dataset)."""
    import pyarrow.parquet as pq

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        preds.write_parquet(os.fspath(tmp))
        table = pq.read_table(tmp, columns=["path", "error"])
        check_complete([str(p) for p in table.column("path").to_pylist()], wanted, output)
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
            os.replace(output, old / "data")
            os.replace(tmp, output)
            shutil.rmtree(old)
        else:
            os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    classified = table.column("error").null_count
    return classified, table.num_rows - classified


def infer_ray_cli(images: str, art: str | os.PathLike[str], output: Path, *, imt: str,
                  local_only: Mapping[str, bool], **kwargs: Any) -> FolderSummary:
    """`atld-deploy infer --executor ray`: refuses the options only local `infer` has, maps the CLI's IMT mode
    as local `infer` does (auto: the pipeline as exported), then `infer_ray`.

    Raises:
        ConfigError: --resume, --shard or --workers given; as for `infer_ray` otherwise.
    """
    given = [flag for flag, on in local_only.items() if on]
    if given:
        raise ConfigError(f"{', '.join(given)} work with --executor local only (Ray Data retries failed batches and "
                          f"splits the work itself); drop {'them' if len(given) > 1 else 'it'} or use --executor local")
    mode: bool | str = imt if imt in ("imt", "imt-plus") else imt != "static"
    return infer_ray(images, art, output, imt=mode, **kwargs)
