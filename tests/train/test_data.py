"""Data loaders on small files written in each data set's real on-disk format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from atld_deploy.data import load_dataset
from atld_deploy.errors import DataError


def _write_cifar(root: Path, name: str, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        files, label_key, meta_name, meta = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels", "batches.meta", {"label_names": [f"c{i}" for i in range(10)]}
        k = 10
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        files, label_key, meta_name, meta = ["train", "test"], "fine_labels", "meta", {"fine_label_names": [f"f{i}" for i in range(100)]}
        k = 100
    for fname in files:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: [int(v) for v in rng.integers(0, k, n)], "batch_label": fname}
        with open(folder / fname, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / meta_name, "wb") as f:
        pickle.dump(meta, f)
    return folder


@pytest.mark.parametrize("name,train_n,classes", [("cifar10", 30, 10), ("cifar100", 6, 100)])
def test_cifar_python_pickles(tmp_path: Path, name: str, train_n: int, classes: int) -> None:
    folder = _write_cifar(tmp_path, name)
    b = load_dataset(name, tmp_path)
    assert len(b.train) == train_n and len(b.test) == 6 and b.num_classes == classes and b.channels == 3
    x, y = b.train[0]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
    # the first image is the first row of data_batch_1 / train, channel-major as the format defines
    with open(folder / ("data_batch_1" if name == "cifar10" else "train"), "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"][0]
    assert np.allclose(x.numpy().reshape(-1) * 255, raw)


def test_cifar_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar10 not found: expected .*data_batch_1.*--download"):
        load_dataset("cifar10", tmp_path)
    folder = _write_cifar(tmp_path, "cifar10")
    (folder / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="data_batch_3 is not a readable CIFAR python batch"):
        load_dataset("cifar10", tmp_path)


def test_cifar_reader_refuses_foreign_pickles(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path, "cifar10")

    import builtins

    class Evil:
        def __reduce__(self):  # noqa: D105
            return (getattr(builtins, "exec"), ("print('owned')",))

    # pickle names a callable by its module and qualname; name builtins.print explicitly, since other libraries
    # (Ray's tqdm integration) replace builtins.print in a process that imported them
    payload = pickle.dumps({"data": Evil(), "labels": []}, protocol=0, fix_imports=False).replace(b"\nexec\n", b"\nprint\n")
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_dataset("cifar10", tmp_path)


def test_svhn_mat_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 3)):
        y = np.array([[10], [1], [2], [3], [4]][:n], dtype=np.uint8)
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": y})
    b = load_dataset("svhn", tmp_path)
    assert len(b.train) == 5 and len(b.test) == 3
    assert b.train.labels.tolist() == [0, 1, 2, 3, 4]  # label 10 means digit 0
    raw = scipy.io.loadmat(tmp_path / "train_32x32.mat")["X"]
    assert np.allclose(b.train[1][0].numpy().transpose(1, 2, 0) * 255, raw[:, :, :, 1])


def test_svhn_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"SVHN not found: expected .*train_32x32.mat"):
        load_dataset("svhn", tmp_path)


def test_image_folder(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for c, colour in (("cat", 200), ("dog", 30)):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 20), (colour, i, 0)).save(d / f"{i}.png")
    b = load_dataset("folder", tmp_path, image_size=16)
    assert b.classes == ("cat", "dog") and len(b.train) == 4 and b.size == 16
    x, y = b.train[0]
    assert x.shape == (3, 16, 16) and y == 0 and abs(x[0].mean().item() - 200 / 255) < 1e-3


def test_image_folder_wrong_layout(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="must contain train/<class>/... and test/<class>/..."):
        load_dataset("folder", tmp_path)


def test_digits_split_is_fixed() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert len(a.train) == 1437 and len(a.test) == 360 and a.channels == 1 and a.size == 8
    assert (a.test.images == b.test.images).all()
    assert a.train.images.max() == 16  # 17 grey levels, mapped by /16


def test_unknown_dataset_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnist'; choose one of digits, cifar10"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nope")
