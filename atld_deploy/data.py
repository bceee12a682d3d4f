"""Data sets: the embedded digits, CIFAR-10/100, SVHN and any image folder, as [0,1] float images.

CIFAR and SVHN are read from their real on-disk formats (python pickles, .mat files); torchvision is used
to download them (`--download`), which also verifies checksums. The reader itself does not insist on
checksums so that small files in the same format (the tests') load the same way.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError
from .names import check_names

DATASETS = ("digits", "cifar10", "cifar100", "svhn", "folder")
DIGITS_SPLIT_SEED = 0  # the fixed train/test split of the embedded digits (1,437 / 360)
DIGITS_TEST_SIZE = 360
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


class ImageTensorDataset(Dataset):
    """In-memory images stored as integers (NCHW) with a divisor that maps them to [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, divisor: float) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise DataError(f"images must be NCHW with one label each, got {tuple(images.shape)} and {len(labels)} labels")
        self.images, self.labels, self.divisor = images, labels.long(), float(divisor)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float() / self.divisor, int(self.labels[i])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[idx].float() / self.divisor, self.labels[idx]


@dataclass(frozen=True)
class DataBundle:
    train: ImageTensorDataset
    test: ImageTensorDataset
    classes: tuple[str, ...]
    channels: int
    size: int
    augment: str  # "crop-flip" | "none"
    skipped: int = 0  # files in the data folders that are not images (folder data sets)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ------------------------------------------------------------------------------------------------ digits

def load_digits_bundle() -> DataBundle:
    """scikit-learn's 1,797 8x8 handwritten digit scans, 17 grey levels, split 1,437 / 360 by a fixed seed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1)  # values 0..16
    labels = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = DIGITS_TEST_SIZE
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    return DataBundle(
        ImageTensorDataset(images[train_idx], labels[train_idx], 16.0),
        ImageTensorDataset(images[test_idx], labels[test_idx], 16.0),
        tuple(str(i) for i in range(10)),
        channels=1,
        size=8,
        augment="none",
    )


# ------------------------------------------------------------------------------------------------- CIFAR

class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: dicts of bytes/str/lists and numpy arrays, no other globals."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_cifar_batch(path: Path, key: str = "data") -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding failure is a malformed file
        raise DataError(f"{path} is not a readable CIFAR python batch ({e}); delete it and re-run with --download") from e
    if not isinstance(d, dict) or key not in d:
        raise DataError(f"{path} is not a CIFAR python file (no '{key}' entry); delete it and re-run with --download")
    return d


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "label_names", "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
}


def _cifar_split(root: Path, files: Sequence[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for name in files:
        d = _read_cifar_batch(root / name)
        data = np.asarray(d["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or label_key not in d:
            raise DataError(f"{root / name}: expected 'data' of shape [N, 3072] and '{label_key}', got {data.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def load_cifar_bundle(name: str, data_dir: Path, download: bool) -> DataBundle:
    folder, train_files, test_files, meta_file, names_key, label_key = _CIFAR[name]
    root = data_dir / folder
    if download:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        for train in (True, False):
            cls(str(data_dir), train=train, download=True)
    missing = [f for f in [*train_files, *test_files, meta_file] if not (root / f).is_file()]
    if missing:
        raise DataError(
            f"{name} not found: expected {', '.join(missing)} in {root} (the python version of the data set); "
            f"pass --download to fetch it, or --data-dir pointing at the folder that contains {folder}/"
        )
    meta = _read_cifar_batch(root / meta_file, names_key)
    classes = tuple(str(c) for c in meta[names_key])  # type: ignore[union-attr]
    check_names(classes, "class name", root / meta_file, DataError, "delete the file and re-run with --download")
    xtr, ytr = _cifar_split(root, train_files, label_key)
    xte, yte = _cifar_split(root, test_files, label_key)
    n = 10 if name == "cifar10" else 100
    if len(classes) != n:
        raise DataError(f"{root / meta_file}: expected {n} names under '{names_key}', got {len(classes)}")
    return DataBundle(ImageTensorDataset(xtr, ytr, 255.0), ImageTensorDataset(xte, yte, 255.0), classes, 3, 32, "crop-flip")


# -------------------------------------------------------------------------------------------------- SVHN

def _read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import scipy.io

    try:
        m = scipy.io.loadmat(str(path))
        x, y = np.asarray(m["X"]), np.asarray(m["y"]).reshape(-1)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path} is not a readable SVHN .mat file with X and y ({e}); delete it and re-run with --download") from e
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"{path}: expected X of shape [32, 32, 3, N] and N labels, got {x.shape} and {len(y)}")
    y = y.astype(np.int64) % 10  # SVHN stores the digit 0 as label 10
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8)), torch.from_numpy(y)


def load_svhn_bundle(data_dir: Path, download: bool) -> DataBundle:
    if download:
        import torchvision

        for split in ("train", "test"):
            torchvision.datasets.SVHN(str(data_dir), split=split, download=True)
    paths = {s: data_dir / f"{s}_32x32.mat" for s in ("train", "test")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"SVHN not found: expected {', '.join(missing)} (the cropped-digits format); pass --download to fetch it")
    xtr, ytr = _read_svhn_mat(paths["train"])
    xte, yte = _read_svhn_mat(paths["test"])
    return DataBundle(ImageTensorDataset(xtr, ytr, 255.0), ImageTensorDataset(xte, yte, 255.0), tuple(str(i) for i in range(10)), 3, 32, "none")


# ------------------------------------------------------------------------------------------------ folder

def iter_image_files(root: Path) -> Iterator[Path]:
    """Image files under `root`, recursively, in a stable (sorted) order."""
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            yield p


def _load_folder_split(split_dir: Path, classes: Sequence[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from .imageio import decode_image

    xs, ys = [], []
    for label, c in enumerate(classes):
        for p in iter_image_files(split_dir / c):
            xs.append(decode_image(p, channels=3, size=size))
            ys.append(label)
    if not xs:
        raise DataError(f"{split_dir} holds no images in class folders {list(classes)[:5]}...")
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous(), torch.tensor(ys)


def load_folder_bundle(data_dir: Path, size: int) -> DataBundle:
    """ImageFolder layout: DIR/train/<class>/*.png and DIR/test/<class>/*.png, images resized to size x size RGB."""
    train_dir, test_dir = data_dir / "train", data_dir / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise DataError(f"image folder {data_dir} must contain train/<class>/... and test/<class>/... (torchvision ImageFolder layout)")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    check_names(classes, "class folder", train_dir, DataError, "rename the folder")  # test/ must use the same names
    if len(classes) < 2:
        raise DataError(f"{train_dir} must hold at least two class folders, found {classes}")
    test_classes = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    if set(test_classes) - set(classes):
        raise DataError(f"{test_dir} has classes not in train/: {sorted(set(test_classes) - set(classes))}")
    xtr, ytr = _load_folder_split(train_dir, classes, size)
    xte, yte = _load_folder_split(test_dir, classes, size)
    skipped = sum(1 for split in (train_dir, test_dir) for c in classes if (split / c).is_dir()
                  for p in (split / c).rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES)
    return DataBundle(ImageTensorDataset(xtr, ytr, 255.0), ImageTensorDataset(xte, yte, 255.0), tuple(classes), 3, size,
                      "crop-flip", skipped)


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False, image_size: int = 32) -> DataBundle:
    """Load a data set by name.

    Raises:
        DataError: unknown name, missing or malformed files (the message names the path and what was expected).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        return load_digits_bundle()
    if data_dir is None:
        raise DataError(f"--data-dir is required for dataset {name!r}")
    data_dir = Path(data_dir)
    if not data_dir.exists() and not download:
        raise DataError(f"data directory {data_dir} does not exist; create it or pass --download")
    if name in _CIFAR:
        return load_cifar_bundle(name, data_dir, download)
    if name == "svhn":
        return load_svhn_bundle(data_dir, download)
    return load_folder_bundle(data_dir, image_size)


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random crop (padding 4, zero fill) and horizontal flip on a batch, driven by `generator`."""
    if kind == "none":
        return x
    b, _, h, w = x.shape
    pad = 4
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = (dy.view(b, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = (dx.view(b, 1) + torch.arange(w).view(1, w)).to(x.device)
    cols = torch.where(flip.view(b, 1).to(x.device), cols.flip(1), cols)
    bi = torch.arange(b, device=x.device).view(b, 1, 1)
    out = xp.permute(0, 2, 3, 1)[bi, rows.view(b, h, 1), cols.view(b, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()
