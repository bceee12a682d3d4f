"""`infer --executor ray` on a real two-CPU local Ray cluster: the same rows as local `infer`, broken files
included, in JSON Lines and in Parquet; an actor that dies on its first batch loses and repeats nothing.

Parity bar: the same backend (ONNX Runtime CPU) on the same decoded pixels, only batched differently; float32
results of one row do not depend on its batch beyond rounding, so confidence and p_natural (written rounded to
6 decimals) may differ by one unit in the last place: 2e-6 allows two.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="Ray Data is not installed here (pip install 'atld-deploy[ray]')")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed here (it comes with the ray extra)")

from atld_deploy.cli import main  # noqa: E402
from atld_deploy.runtime.outputs import iter_rows  # noqa: E402
from atld_deploy.runtime.ray_data import ArtifactPredictor, infer_ray  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray cluster takes tens of seconds to start on a loaded machine
TOL = 2e-6
LIMIT_S = 600  # the whole module: a hang (the pool taking every CPU) fails instead of blocking the suite
BROKEN = ["broken/dangling.png", "broken/empty.png", "broken/fifo", "broken/notes.txt", "broken/truncated.png"]


@pytest.fixture(scope="module", autouse=True)
def cluster(tiny_artifacts: Path) -> Iterator[None]:
    """A real local Ray cluster with two CPUs, like this machine, stopped after the module (the artifact is
    trained first, so the time limit counts Ray's work only)."""
    def hung(*_: Any) -> None:
        raise TimeoutError(f"the Ray tests ran past {LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(LIMIT_S)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 test-split digits in two folders, plus one file of each broken kind (a FIFO included)."""
    from atld_deploy.data import load_dataset

    root = tmp_path_factory.mktemp("ray") / "images"
    x, _ = load_dataset("digits").test.batch(list(range(40)))
    for i, img in enumerate(x):
        (root / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8), "L").save(root / f"d{i % 2}/{i:02d}.png")
    (root / "broken").mkdir()
    (root / "broken/empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (root / "broken/truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "broken/notes.txt").write_text("notes\n")
    os.symlink(root / "broken/missing.png", root / "broken/dangling.png")
    os.mkfifo(root / "broken/fifo")
    return root


@pytest.fixture(scope="module")
def local(images: Path, tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    out = tmp_path_factory.mktemp("local") / "preds.jsonl"
    assert main(["infer", str(images), "-a", str(tiny_artifacts), "-o", str(out), "--backend", "onnxruntime",
                 "--no-progress"]) == 3
    rows = list(iter_rows(out))
    assert sorted(r[0] for r in rows if r[5] is not None) == BROKEN
    return rows


def assert_same_rows(got: list[tuple], want: list[tuple]) -> None:
    """Per path: the same label and class, numbers within TOL, the same error text."""
    assert [r[0] for r in got] == [r[0] for r in want]  # every file once, in walk order
    for g, w in zip(got, want):
        assert (g[0], g[1], g[2], g[5]) == (w[0], w[1], w[2], w[5])
        if w[5] is None:
            assert abs(g[3] - w[3]) <= TOL and abs(g[4] - w[4]) <= TOL, (g, w)


def test_jsonl_with_the_default_pool_on_two_cpus_matches_local_infer(images: Path, tiny_artifacts: Path,
                                                                     local: list[tuple], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "preds.jsonl"
    assert main(["infer", str(images), "-a", str(tiny_artifacts), "-o", str(out), "--backend", "onnxruntime",
                 "--executor", "ray", "--no-progress"]) == 3
    assert_same_rows(list(iter_rows(out)), local)
    summary = capsys.readouterr().out
    assert "40 classified, 5 unreadable" in summary and "1 actor(s) x 1 CPU" in summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]  # no temporary file left


def test_parquet_dataset_matches_local_infer(images: Path, tiny_artifacts: Path, local: list[tuple],
                                             tmp_path: Path) -> None:
    out = tmp_path / "preds.parquet"
    summary = infer_ray(images, tiny_artifacts, out, backend="onnxruntime", imt=True, batch_size=16,
                        progress=False)
    assert (summary.classified, summary.unreadable) == (40, 5)
    table = pq.read_table(out)
    assert table.column_names == ["path", "label", "class", "confidence", "p_natural", "error"]
    rows = [(r["path"], r["label"], r["class"], r["confidence"], r["p_natural"], r["error"]) for r in table.to_pylist()]
    assert_same_rows(rows, local)
    with pytest.raises(Exception, match="already exists; pass --overwrite"):
        infer_ray(images, tiny_artifacts, out, progress=False)


def test_an_actor_that_exits_on_its_first_batch_loses_and_repeats_nothing(images: Path, tiny_artifacts: Path,
                                                                         local: list[tuple],
                                                                         tmp_path: Path) -> None:
    marker = tmp_path / "died"

    class DiesOnce(ArtifactPredictor):
        """Kills its own process on the first batch any actor gets (once: the marker survives the restart)."""

        def __call__(self, batch: Any) -> Any:
            if not marker.exists():
                marker.touch()
                os._exit(1)
            return super().__call__(batch)

    out = tmp_path / "preds.jsonl"
    summary = infer_ray(images, tiny_artifacts, out, backend="onnxruntime", imt=True, batch_size=8,
                        progress=False, predictor=DiesOnce)
    assert marker.exists()  # the actor did die
    assert (summary.classified, summary.unreadable) == (40, 5)
    assert_same_rows(list(iter_rows(out)), local)


def test_bytes_and_image_layouts_give_the_same_rows(images: Path, tiny_artifacts: Path, local: list[tuple],
                                                    tmp_path: Path) -> None:
    # a URI goes through read_binary_files (the object-storage path), decoded by the project's decoder
    folder = tmp_path / "uri"
    folder.mkdir()
    wanted = {r[0]: r for r in local if r[0].startswith("d0/") or r[0] in ("broken/empty.png", "broken/notes.txt")}
    for rel in wanted:
        (folder / rel.replace("/", "_")).write_bytes((images / rel).read_bytes())
    out = tmp_path / "uri.jsonl"
    infer_ray(f"local://{folder}", tiny_artifacts, out, backend="onnxruntime", imt=True, progress=False)
    got = {Path(r[0]).name: r for r in iter_rows(out)}
    want = {rel.replace("/", "_"): r for rel, r in wanted.items()}
    names = sorted(want)
    assert sorted(got) == names
    assert_same_rows([(n, *got[n][1:]) for n in names], [(n, *want[n][1:]) for n in names])
    assert got["broken_empty.png"][5] == "empty file (0 bytes)"

    # read_images' arrays (the docstring's own pipeline): used as they are at the model's size
    ds = ray.data.read_images(str(images / "d1"), size=(8, 8), mode="L", include_paths=True)
    table = ds.map_batches(ArtifactPredictor, fn_constructor_kwargs={"art": str(tiny_artifacts), "imt": True,
                                                                     "backend": "onnxruntime"},
                           batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1).take_all()
    by_name = {Path(r["path"]).name: (r["label"], r["error"]) for r in table}
    d1 = {Path(r[0]).name: (r[1], r[5]) for r in local if r[0].startswith("d1/")}
    assert by_name == d1


def test_csv_with_a_detector_threshold_has_the_same_suspect_flags(images: Path, tiny_artifacts: Path,
                                                                  tmp_path: Path) -> None:
    from dataclasses import replace

    from atld_deploy.artifact import Manifest

    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    m = Manifest.load(art)
    replace(m, detector={"threshold": 0.5, "fpr": 0.05}).save(art)  # a threshold without fitting one
    outs = {}
    for executor in ("local", "ray"):
        outs[executor] = tmp_path / f"{executor}.csv"
        assert main(["infer", str(images), "-a", str(art), "-o", str(outs[executor]), "--backend", "onnxruntime",
                     "--executor", executor, "--no-progress"]) == 3
    local, remote = (list(iter_rows(outs[e])) for e in ("local", "ray"))
    assert_same_rows(remote, local)
    assert [r[6] for r in remote] == [r[6] for r in local]
    assert {r[6] for r in local if r[5] is None} <= {True, False} and any(r[6] is not None for r in local)
    assert outs["ray"].read_text().splitlines()[0] == '"path","label","class","confidence","p_natural","error","suspect"'
