"""Data set loaders: a local directory first, else a checksummed download into a cache.

Checksums are of the *decompressed* files, so re-compressed copies are accepted too.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np
import torch

MNIST_FILES = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CACHE = Path(os.environ.get("RL_INSENS_CACHE", Path.home() / ".cache" / "rl-insens"))


def _read_idx(path: Path, expected_sha256: str) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise ValueError(f"{path} is corrupt or not MNIST: sha256 {digest}, expected {expected_sha256}")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find_or_download(name: str, data_dir: Path | None) -> Path:
    for folder in ([data_dir] if data_dir else []) + [CACHE / "mnist"]:
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.exists():
                return candidate
    if data_dir is not None:
        raise FileNotFoundError(f"no {name}[.gz] in {data_dir}")
    target = CACHE / "mnist" / f"{name}.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    urllib.request.urlretrieve(MNIST_URL + f"{name}.gz", partial)
    try:
        raw = gzip.decompress(partial.read_bytes())
        if hashlib.sha256(raw).hexdigest() != MNIST_FILES[name]:
            raise ValueError(f"downloaded {name} does not match its checksum")
    except Exception:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return target


def load_mnist(data_dir: str | Path | None = None, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as float images ``[N, 1, 28, 28]`` in [0, 1] and int64 labels.

    ``data_dir`` holds the four IDX files (gzipped or not); without it the cache is used and
    filled by a download, every file checked against its known sha256.
    """
    prefix = "train" if train else "t10k"
    data_dir = Path(data_dir) if data_dir is not None else None
    images = _read_idx(_find_or_download(f"{prefix}-images-idx3-ubyte", data_dir),
                       MNIST_FILES[f"{prefix}-images-idx3-ubyte"])
    labels = _read_idx(_find_or_download(f"{prefix}-labels-idx1-ubyte", data_dir),
                       MNIST_FILES[f"{prefix}-labels-idx1-ubyte"])
    x = torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))
