"""The supervised benchmark's pieces: noise variants, data loaders, training and the report."""

import gzip
import hashlib
import math

import numpy as np
import pytest
import torch

from rl_insens.bench import data, noise
from rl_insens.bench.tables import mnist_markdown
from rl_insens.bench.training import TrainSettings, evaluate_accuracy, train_twoconv


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


def test_mnist_download_is_checked_kept_in_the_cache_and_not_repeated(tmp_path, monkeypatch):
    server, cache = tmp_path / "server", tmp_path / "cache"
    server.mkdir()
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    digests = {"t10k-images-idx3-ubyte": write_idx(server / "t10k-images-idx3-ubyte.gz", images),
               "t10k-labels-idx1-ubyte": write_idx(server / "t10k-labels-idx1-ubyte.gz", np.array([7, 0, 3]))}
    monkeypatch.setattr(data, "MNIST_FILES", digests)
    monkeypatch.setattr(data, "MNIST_URL", server.as_uri() + "/")
    monkeypatch.setattr(data, "CACHE", cache)
    x, y = data.load_mnist(train=False)
    assert torch.equal(x[:, 0], torch.from_numpy(images).float() / 255) and y.tolist() == [7, 0, 3]
    for name in digests:
        (server / f"{name}.gz").unlink()
    assert torch.equal(data.load_mnist(train=False)[0], x)  # from the cache, not the server
    write_idx(server / "t10k-images-idx3-ubyte.gz", images + 1)  # the server now serves other bytes
    monkeypatch.setattr(data, "CACHE", tmp_path / "fresh")
    with pytest.raises(ValueError, match="does not match its checksum"):
        data.load_mnist(train=False)
    assert not any((tmp_path / "fresh" / "mnist").iterdir())  # not even a partial file is kept


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
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).float()
    # The best epoch's model comes back: on the validation tail it scores that epoch's accuracy.
    best = max(log["validation_accuracy"])
    assert 100 * float(correct[-60:].mean()) == pytest.approx(best)
    assert log["best_epoch"] == 1 + log["validation_accuracy"].index(best)
    assert evaluate_accuracy(model, images, labels, batch=7) == pytest.approx(100 * float(correct.mean()))


def test_report_table():
    noisy = {"gauss": 40.0, "outline": 85.0, "frame": 42.0}
    row = {"clean": 99.0, **noisy}
    report = {"neurons": 38144, "seeds": [0], "noise": {"sigma": 1.0, "clip": False},
              "paper": {"accuracy": {"clean": 99.4, "gauss": 31.7, "outline": 86.0, "frame": 44.9},
                        "active_percent": {"clean": 17, "gauss": 25, "outline": 27, "frame": 23}},
              "accuracy": {k: {"mean": v, "sd": 1.0, "ci95": 0.7, "values": [v - 1, v + 1]}
                           for k, v in row.items()},
              "active_percent": {k: {"mean": 20.0, "sd": 0.0, "ci95": 0.0, "values": [20.0, 20.0]}
                                 for k in row},
              "per_seed": [{"sweep": {"sigma=1.0,clip=False": noisy}}]}
    table = mnist_markdown(report)
    assert "| outline | 85.0 ± 0.7 [84.0-86.0] | 86.0 | 20.0 ± 0.0 [20.0-20.0] | 27 |" in table


def test_cifar_batch_reader_on_a_tiny_batch_in_the_real_format(tmp_path):
    import pickle
    import tarfile

    images = np.arange(4 * 3072, dtype=np.int64).reshape(4, 3072) % 256
    raw = pickle.dumps({b"data": images.astype(np.uint8), b"labels": [3, 1, 4, 1]}, protocol=2)
    md5 = hashlib.md5(raw).hexdigest()
    x, y = data.read_cifar_batch(raw, md5, "tiny")
    assert x.shape == (4, 3, 32, 32) and x[1, 0, 0, 0] == images[1, 0] and list(y) == [3, 1, 4, 1]
    with pytest.raises(ValueError, match="corrupt or not CIFAR-10"):
        data.read_cifar_batch(raw, data.CIFAR10_BATCHES["test_batch"], "test_batch")
    # the loader finds batches inside the archive and checks each against the published md5
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(raw)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder / "test_batch", arcname="cifar-10-batches-py/test_batch")
    (folder / "test_batch").unlink()
    with pytest.raises(ValueError, match="corrupt or not CIFAR-10"):
        data.load_cifar10(tmp_path, train=False)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        data.load_cifar10(tmp_path / "nowhere", train=True)


def norb_matrix(array: np.ndarray, magic: int) -> bytes:
    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    header = np.array([magic, array.ndim, *dims], dtype="<i4").tobytes()
    return header + array.astype("<i4" if magic == 0x1E3D4C54 else np.uint8).tobytes()


def test_norb_reader_on_tiny_files_in_the_real_format(tmp_path):
    images = (np.arange(3 * 2 * 96 * 96) % 251).reshape(3, 2, 96, 96)
    labels = np.array([4, 0, 2])
    dat, cat = norb_matrix(images, 0x1E3D4C55), norb_matrix(labels, 0x1E3D4C54)
    assert np.array_equal(data.read_norb_matrix(dat, hashlib.md5(dat).hexdigest(), "dat"), images)
    assert np.array_equal(data.read_norb_matrix(cat, hashlib.md5(cat).hexdigest(), "cat"), labels)
    with pytest.raises(ValueError, match="corrupt or not smallNORB"):
        data.read_norb_matrix(dat, "0" * 32, "dat")
    name = data.SMALLNORB_FILES[False, "dat"][0]
    (tmp_path / f"{name}.gz").write_bytes(gzip.compress(dat))
    with pytest.raises(ValueError, match="corrupt or not smallNORB"):
        data.load_smallnorb(tmp_path, train=False)
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(data.SMALLNORB_ENCODINGS["neg_mean"](x), -data.SMALLNORB_ENCODINGS["mean"](x))


def test_cifar_augmentation_crops_and_keeps_each_channel_mean():
    """Each output is one 24x24 window of its image with the contrast scaled about each channel's
    mean: centred, it is the window's centred pixels times one factor in CONTRAST, and its
    channel means are the window's."""
    from rl_insens.bench.training import CONTRAST, centre_crop, cifar_augment

    images = torch.rand(5, 3, 32, 32)
    out = cifar_augment(images, torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 24, 24) and centre_crop(images).shape == (5, 3, 24, 24)
    positions = set()
    for image, augmented in zip(images, out, strict=True):
        windows = image.unfold(1, 24, 1).unfold(2, 24, 1).permute(1, 2, 0, 3, 4).reshape(81, 3, 24, 24)
        means = windows.mean((2, 3), keepdim=True)
        centred, window_centred = augmented - augmented.mean((1, 2), keepdim=True), windows - means
        factor = (centred * window_centred).sum((1, 2, 3)) / window_centred.square().sum((1, 2, 3))
        residual = (centred - factor[:, None, None, None] * window_centred).abs().amax((1, 2, 3))
        best = int(residual.argmin())
        assert residual[best] < 1e-5 and CONTRAST[0] <= factor[best] <= CONTRAST[1]
        assert torch.allclose(augmented.mean((1, 2)), means[best].flatten(), atol=1e-6, rtol=0)
        positions.add(best)
    assert len(positions) > 1  # crops at random places


def fake_loader(shape, classes, n_train=260, n_test=40):
    def load(data_dir, train=True):
        generator = torch.Generator().manual_seed(int(train))
        n = n_train if train else n_test
        labels = torch.randint(0, classes, (n,), generator=generator)
        return torch.rand(n, *shape, generator=generator), labels

    return load


@pytest.mark.slow
def test_cifar10_and_smallnorb_benchmark_smoke_runs(tmp_path, monkeypatch):
    import rl_insens.bench.supervised as supervised
    from rl_insens.bench.training import centre_crop
    from rl_insens.nets import TwoConv

    monkeypatch.setattr(supervised, "TrainSettings", lambda seed, epochs: TrainSettings(
        seed=seed, epochs=epochs, min_epochs=1, validation=60, batch_size=64))
    report = supervised.cifar10_benchmark(None, tmp_path / "c", seeds=(0,), epochs=1, progress=False,
                                          load=fake_loader((3, 32, 32), 10))
    test_x, test_y = fake_loader((3, 32, 32), 10)(None, train=False)
    model = TwoConv((3, 24, 24), 10)
    model.load_state_dict(torch.load(tmp_path / "c" / "models" / "cifar10_seed0.pt", weights_only=True))
    with torch.no_grad():  # the saved model, tested on the centre crops
        expected = 100 * float((model.eval()(centre_crop(test_x)).argmax(1) == test_y).float().mean())
    assert report["per_seed"][0]["epochs_run"] == 1
    assert report["accuracy"]["mean"] == pytest.approx(expected) == report["per_seed"][0]["accuracy"]
    assert (tmp_path / "c" / "cifar10_methods.png").exists()
    assert "| CIFAR-10 |" in (tmp_path / "c" / "cifar10.md").read_text()
    report = supervised.smallnorb_benchmark(None, tmp_path / "s", seeds=(0,), epochs=1, progress=False,
                                            load=fake_loader((1, 24, 24), 5))
    assert set(report["encodings"]) == {"norb", "neg", "mean", "neg_mean"}
    table = (tmp_path / "s" / "smallnorb.md").read_text()
    assert "| smallNORB neg_mean |" in table and "| 83.6 |" in table


def test_seed_summaries_give_the_textbook_95_percent_t_interval():
    """Two seeds 0 and 2: sd √2, so the half-width is t(0.975, 1 dof) = 12.706 (a table's value)."""
    from rl_insens.bench.tables import _interval, mean_sd

    summary = mean_sd([0.0, 2.0])
    assert summary["mean"] == 1.0 and abs(summary["ci95"] - 12.706) < 1e-3
    assert _interval(summary) == "1.0 ± 12.7 [0.0-2.0]"
