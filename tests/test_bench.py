"""The supervised benchmark's pieces: noise variants, data loaders, training and the report."""

import gzip
import hashlib
import math

import numpy as np
import pytest
import torch

from rl_insens.bench import data, noise
from rl_insens.bench.supervised import TrainSettings, evaluate_accuracy, mnist_markdown, train_twoconv


def digits(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        y, x = torch.randint(6, 20, (2,), generator=generator).tolist()
        images[i, 0, y:y + 5, x:x + 2] = torch.rand(5, 2, generator=generator) * 0.9 + 0.1
    return images


def test_outline_is_exactly_within_three_pixels():
    images = digits()
    for metric, distance in (("chebyshev", lambda dy, dx: max(abs(dy), abs(dx))),
                             ("euclidean", lambda dy, dx: math.hypot(dy, dx))):
        mask = noise.outline_mask(images, metric=metric)
        for i in range(len(images)):
            ys, xs = np.nonzero(images[i, 0].numpy() > 0)
            for y in range(28):
                for x in range(28):
                    near = any(distance(y - a, x - b) <= 3 for a, b in zip(ys, xs, strict=True))
                    assert bool(mask[i, 0, y, x]) == near


def test_frame_keeps_as_many_clean_pixels_as_outline_from_the_border():
    images = digits()
    outline = noise.outline_mask(images)
    frame = noise.frame_mask(images, outline)
    assert torch.equal(frame.flatten(1).sum(1), outline.flatten(1).sum(1))
    assert (frame & (images > 0)).sum() == (images > 0).sum()
    y, x = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    depth = torch.minimum(torch.minimum(y, x), torch.minimum(27 - y, 27 - x))
    for i in range(len(images)):
        extra = frame[i, 0] & ~(images[i, 0] > 0)
        assert depth[extra].max() <= depth[~frame[i, 0]].min()  # the border fills first
    variants = noise.noisy_variants(images, sigma=1.0, seed=3)
    for name, mask in (("gauss", images > 0), ("outline", outline), ("frame", frame)):
        assert torch.equal(variants[name][mask], images[mask])
    for name, mask in (("outline", outline), ("frame", frame)):  # one noise field for all variants
        assert torch.equal(variants["gauss"][~mask], variants[name][~mask])


def write_idx(path, array: np.ndarray, compress=True) -> str:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return hashlib.sha256(raw).hexdigest()


def test_idx_reader_checks_the_decompressed_content(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    digest = write_idx(tmp_path / "imgs.gz", images)
    assert np.array_equal(data._read_idx(tmp_path / "imgs.gz", digest), images)
    write_idx(tmp_path / "plain", images, compress=False)
    assert np.array_equal(data._read_idx(tmp_path / "plain", digest), images)  # same content, other form
    with pytest.raises(ValueError, match="corrupt or not MNIST"):
        data._read_idx(tmp_path / "imgs.gz", "0" * 64)


def test_mnist_loader_refuses_wrong_files_and_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        data.load_mnist(tmp_path)
    for name in data.MNIST_FILES:
        write_idx(tmp_path / f"{name}.gz", np.zeros((3, 28, 28) if "images" in name else (3,)))
    with pytest.raises(ValueError, match="corrupt or not MNIST"):
        data.load_mnist(tmp_path)


def test_two_epoch_training_smoke_run():
    images = digits(300)
    labels = (images.flatten(1).argmax(1) % 3)
    settings = TrainSettings(epochs=2, min_epochs=1, validation=60, batch_size=64)
    model, log = train_twoconv(images, labels, 3, settings, progress=False)
    assert log["epochs_run"] == 2 and len(log["validation_accuracy"]) == 2
    assert 0 <= evaluate_accuracy(model, images, labels) <= 100


def test_report_table():
    noisy = {"gauss": 40.0, "outline": 85.0, "frame": 42.0}
    row = {"clean": 99.0, **noisy}
    report = {"neurons": 38144, "seeds": [0], "noise": {"sigma": 1.0, "clip": False},
              "paper": {"accuracy": {"clean": 99.4, "gauss": 31.7, "outline": 86.0, "frame": 44.9},
                        "active_percent": {"clean": 17, "gauss": 25, "outline": 27, "frame": 23}},
              "accuracy": {k: {"mean": v, "sd": 0.0} for k, v in row.items()},
              "active_percent": {k: {"mean": 20.0, "sd": 0.0} for k in row},
              "per_seed": [{"sweep": {"sigma=1.0,clip=False": noisy}}]}
    table = mnist_markdown(report)
    assert "| outline | 85.0 ± 0.0 | 86.0 |" in table
