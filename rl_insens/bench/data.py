"""Data set loaders for the supervised benchmarks: a local directory first, else a checksummed
download into a cache.

MNIST (IDX files), CIFAR-10 (its Python pickle batches, unpickled only once their md5 is the
published one) and smallNORB (the NORB binary matrix format), each as float images in [0, 1]
and int64 labels.

Checksums are of the *decompressed* files, so re-compressed copies are accepted too. Every
download goes through :func:`_download` (a partial file, kept only if its checksum fits) and
every gzipped file is read by :func:`_contents`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_path

MNIST_FILES = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CACHE = Path(os.environ.get("RL_INSENS_CACHE", Path.home() / ".cache" / "rl-insens"))
"""Where downloads go: ``$RL_INSENS_CACHE``, else ``~/.cache/rl-insens``."""


def _read_idx(path: Path, expected_sha256: str) -> np.ndarray:
    raw = _contents(path)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise ValueError(f"{path} is corrupt or not MNIST: sha256 {digest}, expected {expected_sha256}")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(data_dir: str | Path | None = None, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as float images ``[N, 1, 28, 28]`` in [0, 1] and int64 labels.

    ``data_dir`` holds the four IDX files (gzipped or not); without it the cache is used and
    filled by a download, every file checked against its known sha256.
    """
    prefix = "train" if train else "t10k"
    data_dir = Path(data_dir) if data_dir is not None else None
    images, labels = (
        _read_idx(_local_or_download(name, data_dir, "mnist", MNIST_URL, "sha256", MNIST_FILES[name]),
                  MNIST_FILES[name])
        for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    )
    x = torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BATCHES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
"""md5 of each extracted batch file, as published with the data set."""


def read_cifar_batch(raw: bytes, expected_md5: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch, checked before it is unpickled.

    Args:
        raw: the batch file's bytes.
        expected_md5: its published md5; other bytes are refused before unpickling.
        name: the batch's name, for the error message.

    Returns:
        uint8 images ``[N, 3, 32, 32]`` and int64 labels.
    """
    import pickle

    digest = hashlib.md5(raw).hexdigest()
    if digest != expected_md5:
        raise ValueError(f"{name} is corrupt or not CIFAR-10: md5 {digest}, expected {expected_md5}")
    batch = pickle.loads(raw, encoding="bytes")  # safe-load: only after its md5 equals the published file's
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[b"labels"], dtype=np.int64)


def _cifar_bytes(name: str, data_dir: Path | None) -> bytes:
    """Batch ``name``, extracted in ``data_dir`` (or the cache) or read from the archive there;
    without ``data_dir`` the archive is downloaded into the cache first if need be."""
    import tarfile

    root = data_dir if data_dir is not None else CACHE
    for folder in (root, root / "cifar-10-batches-py"):
        if (folder / name).exists():
            return (folder / name).read_bytes()
    archive = root / "cifar-10-python.tar.gz"
    if not archive.exists():
        if data_dir is not None:
            raise FileNotFoundError(f"no CIFAR-10 batch {name} (nor cifar-10-python.tar.gz) in {data_dir}")
        _download(CIFAR10_URL, archive, "md5", CIFAR10_ARCHIVE_MD5)
    with tarfile.open(archive) as tar:
        return tar.extractfile(f"cifar-10-batches-py/{name}").read()


def load_cifar10(
    data_dir: str | Path | None = None, train: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 as float images ``[N, 3, 32, 32]`` in [0, 1] and labels; every batch md5-checked."""
    data_dir = Path(data_dir) if data_dir is not None else None
    names = [n for n in CIFAR10_BATCHES if (n != "test_batch") == train]
    parts = [read_cifar_batch(_cifar_bytes(n, data_dir), CIFAR10_BATCHES[n], n) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images).float().div_(255), torch.from_numpy(labels)


SMALLNORB_URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
SMALLNORB_FILES = {
    (True, "dat"): ("smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat", "8138a0902307b32dfa0025a36dfa45ec"),
    (True, "cat"): ("smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat", "fd5120d3f770ad57ebe620eb61a0b633"),
    (False, "dat"): ("smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat", "e9920b7f7b2869a8f1a12e945b2c166c"),
    (False, "cat"): ("smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat", "fd5120d3f770ad57ebe620eb61a0b633"),
}
"""Names and md5 of the decompressed files (the same labels file serves both splits)."""
NORB_TYPES = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.int32}


def read_norb_matrix(raw: bytes, expected_md5: str, name: str) -> np.ndarray:
    """A NORB binary matrix: magic, rank, max(3, rank) dimensions, then little-endian data.

    Args:
        raw: the file's decompressed bytes.
        expected_md5: their published md5; other bytes are refused.
        name: the file's name, for the error message.

    Returns:
        The matrix, its dimensions and type as the file gives them.
    """
    digest = hashlib.md5(raw).hexdigest()
    if digest != expected_md5:
        raise ValueError(f"{name} is corrupt or not smallNORB: md5 {digest}, expected {expected_md5}")
    magic, rank = np.frombuffer(raw[:8], dtype="<i4").astype(np.int64) & 0xFFFFFFFF
    if int(magic) not in NORB_TYPES:
        raise ValueError(f"{name} has an unknown matrix type {int(magic):#x}")
    dims = np.frombuffer(raw[8: 8 + 4 * max(3, int(rank))], dtype="<i4")[: int(rank)]
    dtype = np.dtype(NORB_TYPES[int(magic)]).newbyteorder("<")
    return np.frombuffer(raw, dtype=dtype, offset=8 + 4 * max(3, int(rank))).reshape(tuple(dims))


def load_smallnorb(
    data_dir: str | Path | None = None, train: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """smallNORB's first-camera images ``[24300, 1, 96, 96]`` in [0, 1] (black 0, white 1) and
    the 5 category labels; the files may be gzipped or not, each md5-checked once decompressed."""
    data_dir = Path(data_dir) if data_dir is not None else None
    arrays = {}
    for kind in ("dat", "cat"):
        name, md5 = SMALLNORB_FILES[train, kind]
        path = _local_or_download(name, data_dir, "smallnorb", SMALLNORB_URL, "md5", md5)
        arrays[kind] = read_norb_matrix(_contents(path), md5, name)
    images = torch.from_numpy(arrays["dat"][:, 0].copy()).float().div_(255).unsqueeze(1)
    return images, torch.from_numpy(arrays["cat"].astype(np.int64))


SMALLNORB_ENCODINGS = {
    "norb": lambda x: x,  # black 0 .. white 1
    "neg": lambda x: 1 - x,  # white 0 .. black 1
    "mean": lambda x: 2 * x - 1,  # black -1 .. white +1
    "neg_mean": lambda x: 1 - 2 * x,  # white -1 .. black +1
}
"""The paper's four smallNORB encodings (section 4.1)."""


def _local_or_download(name: str, data_dir: Path | None, cache_folder: str, url: str, algorithm: str,
                       expected: str) -> Path:
    """``name`` (gzipped or not) from ``data_dir`` when given, else from the cache, else downloaded
    into the cache from ``url + name + ".gz"`` and checked there against ``expected``."""
    folder = data_dir if data_dir is not None else CACHE / cache_folder
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.exists():
            return candidate
    if data_dir is not None:
        raise FileNotFoundError(f"no {name}[.gz] in {data_dir}")
    target = CACHE / cache_folder / f"{name}.gz"
    _download(f"{url}{name}.gz", target, algorithm, expected, decompressed=True)
    return target


def _download(url: str, target: Path, algorithm: str, expected: str, decompressed: bool = False) -> None:
    """Fetch ``url`` to ``target`` through a partial file, keeping it only if its checksum fits
    (of its gzip content when ``decompressed``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as partial:
        urllib.request.urlretrieve(url, partial)
        content = _contents(partial) if decompressed else partial.read_bytes()
        if hashlib.new(algorithm, content).hexdigest() != expected:
            raise ValueError(f"the download of {url} does not match its checksum")


def _contents(path: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in ``.gz``."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{path} is not a readable gzip file ({error})") from None
