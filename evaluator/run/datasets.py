"""The registered datasets' test sets through torchvision: the first N samples in the file's order, as uint8
tensors. Which torchvision class reads a dataset, with which split arguments and in which format (a CIFAR
pickle or an SVHN .mat file), is said by ``evaluator/registry/datasets.yaml``.

torchvision's loaders refuse any file whose md5 differs from the official one, and the CIFAR classes also require
the training batches even for the test split. The benchmark reads only the test file, and tests and the
demo use tiny files in the real formats, so the two loaders are subclassed to change *only* their md5 tables
(built on first use, so importing this module does not import torchvision); the parsing is torchvision's own. The md5 check moves
here: :attr:`TestSet.official` says whether the file is the official one. A CIFAR-10 file that is not the
official one is first read with a restricted unpickler that allows only numpy arrays, so an unknown pickle
never runs code.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from evaluator.errors import APBError
from evaluator.registry.datasets import Dataset, get_dataset

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SVHN_FILE = "test_32x32.mat"


@dataclass(frozen=True, eq=False)
class TestSet:
    """The first N test samples: ``images`` uint8 N x 3 x 32 x 32 (held once), ``labels`` int64 N."""

    __test__ = False  # not a pytest test class

    dataset: str
    images: torch.Tensor
    labels: torch.Tensor
    source: Path  # the file the samples were read from
    official: bool  # the file's md5 is the official one (False for tiny test or demo files)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, indices: slice | Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images of *indices* as float32 in [0, 1] and their labels."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(indices, dtype=torch.long)
        return self.images[indices].to(torch.float32).div_(255.0), self.labels[indices]


def load_test_set(dataset: str, data_dir: Path, n: int | None = None, *, download: bool = False) -> TestSet:
    """The first *n* (all when None) samples of the *dataset* test split found in *data_dir*.

    *data_dir* is torchvision's ``root``: it holds ``cifar-10-batches-py/`` or ``test_32x32.mat``. With
    *download*, missing files are downloaded by torchvision and checked against the official md5."""
    try:
        spec = get_dataset(dataset)
    except ValueError as error:
        raise APBError(str(error), file="dataset") from None
    data_dir = Path(data_dir)
    if n is not None and n < 1:
        raise APBError(f"the number of test samples must be positive, got {n}", file="--n")
    images, labels, source, official = _READERS[spec.format](spec, data_dir, download)
    if n is not None and n > len(labels):
        raise APBError(f"asked for the first {n} samples but {source} holds only {len(labels)}: pass --n "
                       f"{len(labels)} (or n={len(labels)} in Python), or use the full official test set", file=str(source))
    stop = len(labels) if n is None else n
    return TestSet(dataset, torch.from_numpy(np.ascontiguousarray(images[:stop])),
                   torch.as_tensor(np.asarray(labels[:stop]), dtype=torch.int64), source, official)


@contextlib.contextmanager
def _network_errors_named(dataset: str, url: str, data_dir: Path) -> Iterator[None]:
    """A failed test-set download as one line (no network, a refused connection, a timeout), not a traceback."""
    import urllib.error

    try:
        yield
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise APBError(f"could not download the {dataset} test set from {url} ({reason}); without a network, copy "
                       f"the official test files into {data_dir} and run without --download", file="--download") from None


# ----------------------------------------------------------------------------------------------- CIFAR-10

def _torchvision_class(spec: Dataset) -> type:
    """The torchvision.datasets class the registry names for *spec*."""
    import torchvision.datasets

    found = getattr(torchvision.datasets, spec.torchvision_class, None)
    if not isinstance(found, type):
        raise APBError(f"datasets.{spec.name}.torchvision.class: torchvision.datasets has no class "
                       f"{spec.torchvision_class!r}; name one it has", file="evaluator/registry/datasets.yaml")
    return found


def _read_cifar(spec: Dataset, data_dir: Path, download: bool) -> tuple[np.ndarray, list, Path, bool]:
    from torchvision.datasets.utils import download_and_extract_archive

    base = _torchvision_class(spec)
    folder = data_dir / base.base_folder  # type: ignore[attr-defined]
    test_file, meta_file = folder / base.test_list[0][0], folder / base.meta["filename"]  # type: ignore[attr-defined]
    if download and not (test_file.is_file() and meta_file.is_file()):
        with _network_errors_named(spec.name, base.url, data_dir):  # type: ignore[attr-defined]
            download_and_extract_archive(base.url, str(data_dir), filename=base.filename,  # type: ignore[attr-defined]
                                         md5=base.tgz_md5)  # type: ignore[attr-defined]
    _require_files(data_dir, [test_file, meta_file], spec.name)
    official = (_md5(test_file) == base.test_list[0][1]  # type: ignore[attr-defined]
                and _md5(meta_file) == base.meta["md5"])  # type: ignore[attr-defined]
    if not official:
        for path in (test_file, meta_file):
            _refuse_unsafe_pickle(path)
    loaded = _cifar_test_file_class(base)(str(data_dir), **spec.split_arguments)
    return loaded.data.transpose(0, 3, 1, 2), loaded.targets, test_file, official


@functools.cache
def _cifar_test_file_class(base: type) -> type:
    class _CifarTestFile(base):
        """torchvision's CIFAR class that reads the test batch without the training batches; md5s are checked
        by :func:`_read_cifar` (official or not) instead of refusing every non-official file."""

        train_list: list = []
        test_list = [[base.test_list[0][0], None]]  # type: ignore[attr-defined]
        meta = {**base.meta, "md5": None}  # type: ignore[attr-defined]

    return _CifarTestFile


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except what a pickled numpy array needs (the CIFAR-10 batch format)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to import {module}.{name}")
        return super().find_class(module, name)


def _refuse_unsafe_pickle(path: Path) -> None:
    """Read *path* with :class:`_NumpyOnlyUnpickler`; an APBError if it needs anything else."""
    try:
        _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as error:  # noqa: BLE001 - any failure means torchvision must not unpickle it
        raise APBError(f"is not the official CIFAR-10 file and is not a plain pickle of numpy arrays "
                       f"({error}); delete it and run again with --download", file=str(path)) from None


def write_cifar10_test(root: Path, images_nhwc_uint8: np.ndarray, labels: Sequence[int]) -> Path:
    """Write ``<root>/cifar-10-batches-py/test_batch`` and ``batches.meta`` in the real CIFAR-10 format
    (a pickled dict with ``data`` N x 3072 uint8 in channel-major order and ``labels``); returns the folder."""
    images = _check_images(images_nhwc_uint8, labels)
    folder = Path(root) / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    batch = {"batch_label": "testing batch 1 of 1",
             "labels": [int(label) for label in labels],
             "data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1)),
             "filenames": [f"test_{i:05d}.png" for i in range(len(images))]}
    meta = {"num_cases_per_batch": len(images), "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


# ----------------------------------------------------------------------------------------------- SVHN

def _read_svhn(spec: Dataset, data_dir: Path, download: bool) -> tuple[np.ndarray, np.ndarray, Path, bool]:
    from torchvision.datasets.utils import download_url

    base = _torchvision_class(spec)
    split = spec.split_arguments["split"]
    url, filename, md5 = base.split_list[split]  # type: ignore[attr-defined]
    path = data_dir / filename
    if download and not path.is_file():
        with _network_errors_named(spec.name, url, data_dir):
            download_url(url, str(data_dir), filename, md5)
    _require_files(data_dir, [path], spec.name)
    official = _md5(path) == md5
    try:
        loaded = _svhn_test_file_class(base, split)(str(data_dir), **spec.split_arguments)
    except (ValueError, KeyError, OSError) as error:
        raise APBError(f"is not a readable {spec.name} .mat file ({error})", file=str(path)) from None
    return loaded.data, loaded.labels, path, official


@functools.cache
def _svhn_test_file_class(base: type, split: str) -> type:
    class _SvhnTestFile(base):
        """torchvision's SVHN class whose md5 is checked by :func:`_read_svhn` instead of refusing non-official
        files (``.mat`` files are parsed by scipy and cannot run code)."""

        split_list = {**base.split_list, split: [*base.split_list[split][:2], None]}  # type: ignore[attr-defined]

    return _SvhnTestFile


def write_svhn_test(root: Path, images: np.ndarray, labels: Sequence[int]) -> Path:
    """Write ``<root>/test_32x32.mat`` in the real SVHN format: ``X`` 32 x 32 x 3 x N uint8 and ``y`` N x 1
    with labels 1..10, where 10 stands for the digit 0. *images* are N x 32 x 32 x 3 uint8, *labels* 0..9."""
    from scipy.io import savemat

    images = _check_images(images, labels)
    digits = np.asarray(labels, dtype=np.uint8)
    path = Path(root) / SVHN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"X": np.ascontiguousarray(images.transpose(1, 2, 3, 0)),
                        "y": np.where(digits == 0, 10, digits).reshape(-1, 1).astype(np.uint8)})
    return path


# ----------------------------------------------------------------------------------------------- shared

Reader = Callable[[Dataset, Path, bool], tuple[np.ndarray, "np.ndarray | list", Path, bool]]
_READERS: dict[str, Reader] = {"cifar-pickle": _read_cifar, "svhn-mat": _read_svhn}  # by the registry's format


def _check_images(images: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"images must be uint8 N x 32 x 32 x 3, got {images.dtype} {images.shape}")
    if len(labels) != len(images) or any(not 0 <= int(label) <= 9 for label in labels):
        raise ValueError("labels must be one integer in 0..9 per image")
    return images


def _require_files(data_dir: Path, paths: list[Path], dataset: str) -> None:
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise APBError(f"the {dataset} test set is not in the data directory (missing {', '.join(missing)}); "
                       f"pass the folder that holds it with --data-dir, or add --download to fetch it there",
                       file=str(data_dir))


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
