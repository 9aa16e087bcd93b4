"""raynas.data and trials.batches: every loader on tiny generated files, batch determinism, and the
restricted unpickler.

Nothing here downloads; every test runs on CPU in well under a few seconds.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from raynas.data import (
    DATASETS,
    DEBIAN_FASHION_MNIST,
    DataError,
    check_dataset,
    RestrictedUnpickler,
    load_dataset,
    restricted_pickle_load,
)
from trials.batches import BatchStream, Dataset, crop_flip, normalize, split_indices

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n: int, c: int, side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, side, side), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# Writers for the on-disk formats
# --------------------------------------------------------------------------------------------------


def _py2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle writes it (SHORT_BINSTRING / BINSTRING)."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _py2_value(v: object) -> bytes:
    if isinstance(v, str):
        return _py2_str(v.encode())
    if isinstance(v, list):
        return b"](" + b"".join(_py2_value(e) for e in v) + b"e"
    if isinstance(v, int):
        return b"J" + struct.pack("<i", v)
    assert isinstance(v, np.ndarray) and v.dtype == np.uint8 and v.ndim == 2
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        + b"(K\x01J" + struct.pack("<i", v.shape[0]) + b"J" + struct.pack("<i", v.shape[1]) + b"\x86"
        + b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89" + _py2_str(v.tobytes()) + b"tb"
    )  # fmt: skip


def py2_pickle(d: dict[str, object]) -> bytes:
    """Bytes as the official CIFAR python release has them: Python 2 cPickle protocol 2, numpy.core globals."""
    items = b"".join(_py2_str(k.encode()) + _py2_value(v) for k, v in d.items())
    return b"\x80\x02}(" + items + b"u."


def write_cifar10_python(root: Path, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    """A tiny cifar-10-batches-py/: batches 1, 3, 5 and test in the genuine Python 2 bytes, 2 and 4 with
    pickle.dump (what torchvision's own writers and re-packed copies produce)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    xs, ys = [], []
    for i, fname in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if fname == "test_batch" else n_train
        x = _images(n, 3, 32, seed=i).reshape(n, 3072)
        y = [(i + j) % 10 for j in range(n)]
        entry = {"batch_label": f"fake {fname}", "labels": y, "data": x, "filenames": [f"{j}.png" for j in range(n)]}
        if i % 2 == 0:
            (d / fname).write_bytes(py2_pickle(entry))
        else:
            with open(d / fname, "wb") as f:
                pickle.dump(
                    {k.encode(): v for k, v in entry.items()}, f, protocol=2
                )  # bytes keys, like encoding="bytes"
        xs.append(x)
        ys.append(np.array(y))
    return {
        "train_x": np.concatenate(xs[:5]).reshape(-1, 3, 32, 32),
        "train_y": np.concatenate(ys[:5]),
        "test_x": xs[5].reshape(-1, 3, 32, 32),
        "test_y": ys[5],
    }


def write_idx(path: Path, arr: np.ndarray) -> None:
    raw = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def test_digits_loads_with_fixed_split() -> None:
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset) and ds.name == "digits"
    assert ds.train_x.shape == (1438, 1, 8, 8) and ds.test_x.shape == (359, 1, 8, 8)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert (ds.in_channels, ds.resolution, ds.num_classes) == (1, 8, 10)
    assert int(ds.train_x.max()) == 255 and set(ds.train_y.tolist()) == set(range(10))
    assert ds.crop_padding == 0 and ds.flip is False
    again = load_dataset("digits")
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)
    pix = ds.train_x.double() / 255
    assert ds.mean[0] == pytest.approx(pix.mean().item()) and ds.std[0] == pytest.approx(pix.std().item(), rel=1e-3)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DataError, match="valid names: cifar10, cifar100, svhn") as e:
        load_dataset("mnist")
    assert all(n in str(e.value) for n in DATASETS)


def test_cifar10_python_release(tmp_path: Path) -> None:
    want = write_cifar10_python(tmp_path)
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        ds = load_dataset("cifar10", data_dir)
        assert ds.train_x.shape == (30, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
        assert np.array_equal(ds.train_x.numpy(), want["train_x"])
        assert np.array_equal(ds.train_y.numpy(), want["train_y"])
        assert np.array_equal(ds.test_x.numpy(), want["test_x"])
        assert np.array_equal(ds.test_y.numpy(), want["test_y"])
        assert (ds.num_classes, ds.crop_padding, ds.flip) == (10, 4, True)


def test_cifar10_python_release_missing_batch(tmp_path: Path) -> None:
    write_cifar10_python(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4 is missing"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_python_release(tmp_path: Path) -> None:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    x = _images(5, 3, 32, seed=1).reshape(5, 3072)
    for split in ("train", "test"):
        entry = {"data": x, "fine_labels": [0, 99, 50, 3, 7], "coarse_labels": [0, 19, 1, 2, 3]}
        with open(d / split, "wb") as f:
            pickle.dump(entry, f)
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.train_y.tolist() == [0, 99, 50, 3, 7]
    assert np.array_equal(ds.test_x.numpy(), x.reshape(5, 3, 32, 32))


def _write_png_folder(root: Path, per_class: dict[str, int]) -> dict[str, list[np.ndarray]]:
    from PIL import Image

    out: dict[str, list[np.ndarray]] = {}
    for split, n in per_class.items():
        for label, cls in enumerate(CIFAR10_CLASSES):
            (root / split / cls).mkdir(parents=True)
            for j in range(n):
                img = _images(1, 3, 32, seed=100 * label + j + (50 if split == "test" else 0))[0]
                Image.fromarray(img.transpose(1, 2, 0)).save(root / split / cls / f"{j:04d}.png")
                out.setdefault(f"{split}:{label}", []).append(img)
    return out


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10_image_folder(tmp_path: Path, nested: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYNAS_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    root = data / "cifar10-jpeg" if nested else data
    imgs = _write_png_folder(root, {"train": 3, "test": 1})
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    data.chmod(0o555)  # a read-only data directory is only read
    for p in data.rglob("*"):
        if p.is_dir():
            p.chmod(0o555)
    ds = load_dataset("cifar10", data)
    assert ds.train_x.shape == (30, 3, 32, 32) and ds.test_x.shape == (10, 3, 32, 32)
    assert ds.test_y.tolist() == list(range(10))  # test keeps folder order; class index = sorted name rank
    for label in range(10):
        assert np.array_equal(ds.test_x[label].numpy(), imgs[f"test:{label}"][0])
    assert sorted(ds.train_y.tolist()) == sorted(list(range(10)) * 3)
    assert ds.train_y.tolist() != sorted(ds.train_y.tolist())  # fixed shuffle, not class-grouped
    for x, y in zip(ds.train_x, ds.train_y):  # every image still carries its own label
        assert any(np.array_equal(x.numpy(), im) for im in imgs[f"train:{int(y)}"])
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # nothing written into the data
    assert [p.name.split("-")[:2] for p in sorted((tmp_path / "cache" / "images").glob("*.npz"))] == [
        ["cifar10", "test"], ["cifar10", "train"]]
    cached = load_dataset("cifar10", data)  # second load from the cache: identical
    assert torch.equal(cached.train_x, ds.train_x) and torch.equal(cached.train_y, ds.train_y)
    for p in [data, *data.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)


def test_check_dataset_locates_and_prebuilds_image_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYNAS_CACHE", str(tmp_path / "cache"))
    _write_png_folder(tmp_path, {"train": 1, "test": 1})
    assert check_dataset("cifar10", tmp_path) == tmp_path
    [cache] = (tmp_path / "cache" / "images").glob("cifar10-train-*.npz")
    cache.write_bytes(b"not a zip")  # a corrupt cache is rebuilt, not trusted
    assert load_dataset("cifar10", tmp_path).train_x.shape == (10, 3, 32, 32)
    assert check_dataset("digits") is None
    with pytest.raises(DataError, match="--data-dir"):
        check_dataset("svhn", tmp_path)


def test_image_folder_wrong_class_count(tmp_path: Path) -> None:
    for cls in ("cat", "dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        (tmp_path / "test" / cls).mkdir(parents=True)
    with pytest.raises(DataError, match="has 2 class folders, expected 10"):
        load_dataset("cifar10", tmp_path)


def test_imagenet16_drops_classes_above_120(tmp_path: Path) -> None:
    d = tmp_path / "ImageNet16"
    d.mkdir()
    want_x, want_y = [], []
    for i, fname in enumerate([f"train_data_batch_{k}" for k in range(1, 11)] + ["val_data"]):
        x = _images(4, 3, 16, seed=i).reshape(4, 768)
        y = [1, 120, 121, 1000] if i % 2 == 0 else [60, 119, 500, 2]
        with open(d / fname, "wb") as f:
            pickle.dump({"data": x, "labels": y, "mean": np.zeros(768, np.float64)}, f)
        keep = [j for j, label in enumerate(y) if label <= 120]
        want_x.append(x[keep].reshape(-1, 3, 16, 16))
        want_y.append(np.array(y)[keep] - 1)
    ds = load_dataset("imagenet16-120", tmp_path)
    assert ds.num_classes == 120 and (ds.resolution, ds.crop_padding, ds.flip) == (16, 2, True)
    assert ds.train_x.shape == (25, 3, 16, 16) and ds.test_x.shape == (2, 3, 16, 16)
    assert np.array_equal(ds.train_x.numpy(), np.concatenate(want_x[:10]))
    assert np.array_equal(ds.train_y.numpy(), np.concatenate(want_y[:10]))
    assert ds.test_y.tolist() == [0, 119]
    assert ds.mean[0] == pytest.approx(122.68 / 255) and ds.std[2] == pytest.approx(65.09 / 255)


def test_svhn_mat(tmp_path: Path) -> None:
    from scipy.io import savemat

    x = _images(5, 3, 32, seed=3)  # N,C,H,W
    for split in ("train", "test"):
        savemat(
            tmp_path / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": np.array([[10], [1], [9], [10], [5]])}
        )
    ds = load_dataset("svhn", tmp_path)
    assert ds.train_y.tolist() == [0, 1, 9, 0, 5]
    assert np.array_equal(ds.train_x.numpy(), x) and ds.flip is True and ds.crop_padding == 4  # RobustDARTS flips SVHN


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path: Path, gz: bool) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    sfx = ".gz" if gz else ""
    x = _images(7, 1, 28, seed=5)[:, 0]
    write_idx(raw / f"train-images-idx3-ubyte{sfx}", x)
    write_idx(raw / f"train-labels-idx1-ubyte{sfx}", np.arange(7) % 10)
    write_idx(raw / f"t10k-images-idx3-ubyte{sfx}", x[:3])
    write_idx(raw / f"t10k-labels-idx1-ubyte{sfx}", np.array([9, 8, 7]))
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.train_x.shape == (7, 1, 28, 28) and np.array_equal(ds.train_x[:, 0].numpy(), x)
    assert ds.train_y.tolist() == list(range(7)) and ds.test_y.tolist() == [9, 8, 7]
    assert (ds.in_channels, ds.crop_padding, ds.flip) == (1, 2, True)


def test_fashion_mnist_debian_package() -> None:
    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Debian package dataset-fashion-mnist not installed ({DEBIAN_FASHION_MNIST} absent)")
    ds = load_dataset("fashion-mnist")
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(ds.train_y), torch.full((10,), 6000))
    assert (ds.train_x.double() / 255).mean().item() == pytest.approx(ds.mean[0], abs=1e-3)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "imagenet16-120", "fashion-mnist"])
def test_missing_data_dir_error_names_path_and_flag(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_dataset(name, missing)
    msg = str(e.value)
    assert "\n" not in msg and str(missing) in msg and "--data-dir" in msg
    if name != "imagenet16-120":
        assert "--download" in msg


# --------------------------------------------------------------------------------------------------
# Restricted unpickler
# --------------------------------------------------------------------------------------------------


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        RestrictedUnpickler(io.BytesIO(evil)).load()
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "data_batch_1").write_bytes(evil)
    with pytest.raises(DataError, match="refusing to load global os.system"):
        load_dataset("cifar10", tmp_path)
    for module, name in (("builtins", "eval"), ("posix", "system"), ("subprocess", "Popen"), ("numpy", "load")):
        blob = f"c{module}\n{name}\n(S'1'\ntR.".encode()
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            restricted_pickle_load(io.BytesIO(blob))
    assert not marker.exists()  # nothing ran


def test_restricted_unpickler_reads_numpy_arrays_of_every_protocol() -> None:
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        obj = restricted_pickle_load(io.BytesIO(pickle.dumps({"data": x, "n": np.int64(3)}, protocol=proto)))
        assert np.array_equal(obj["data"], x) and obj["n"] == 3
    assert np.array_equal(restricted_pickle_load(io.BytesIO(py2_pickle({"data": x})))["data"], x)


# --------------------------------------------------------------------------------------------------
# Splits and batches
# --------------------------------------------------------------------------------------------------


def test_split_indices_disjoint_and_covering() -> None:
    for seed in (None, 0, 1):
        a, b = split_indices(101, 0.5, seed)
        assert len(a) == 50 and len(b) == 51
        assert torch.equal(torch.sort(torch.cat([a, b])).values, torch.arange(101))
    a, b = split_indices(10, 0.5)  # DARTS' reference: indices[:split], indices[split:]
    assert a.tolist() == [0, 1, 2, 3, 4] and b.tolist() == [5, 6, 7, 8, 9]
    assert torch.equal(split_indices(50, 0.5, 3)[0], split_indices(50, 0.5, 3)[0])
    assert not torch.equal(split_indices(50, 0.5, 3)[0], split_indices(50, 0.5, 4)[0])
    with pytest.raises(ValueError):
        split_indices(10, 1.0)


def _stream(x: torch.Tensor, **kw: object) -> BatchStream:
    args: dict[str, object] = dict(
        indices=None, batch_size=8, mean=(0.5,) * x.shape[1], std=(0.25,) * x.shape[1],
        crop_padding=4, flip=True, augment=True,
    )  # fmt: skip
    args.update(kw)
    return BatchStream(x, torch.arange(len(x)), **args)  # type: ignore[arg-type]


def _run(stream: BatchStream, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(stream.epoch(torch.Generator().manual_seed(seed)))


def test_batchstream_deterministic_per_seed() -> None:
    x = torch.from_numpy(_images(40, 3, 32, seed=0))
    s = _stream(x)
    assert len(s) == 5
    a, b, c = _run(s, 0), _run(s, 0), _run(s, 1)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    for xb, yb in a:
        assert xb.shape == (8, 3, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64


def test_batchstream_resumes_from_epoch_boundary() -> None:
    x = torch.from_numpy(_images(20, 3, 16, seed=2))
    s = _stream(x, batch_size=6, drop_last=False, crop_padding=2)
    assert len(s) == 4
    g = torch.Generator().manual_seed(7)
    next(iter(s.epoch(g)))  # consume one batch only: randomness was drawn for the whole epoch anyway
    state = g.get_state()
    second = list(s.epoch(g))
    g2 = torch.Generator()
    g2.set_state(state)
    resumed = list(s.epoch(g2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(second, resumed))
    assert [len(y) for _, y in second] == [6, 6, 6, 2]
    assert sorted(torch.cat([y for _, y in second]).tolist()) == list(range(20))


def test_no_augmentation_returns_exactly_normalised_input() -> None:
    x = torch.from_numpy(_images(24, 3, 8, seed=4))
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    for kw in (dict(augment=False), dict(augment=True, crop_padding=0, flip=False)):
        s = _stream(x, mean=mean, std=std, **kw)
        for xb, yb in _run(s, 3):
            assert torch.equal(xb, normalize(x[yb], mean, std))
    # in-order evaluation pass without a generator
    ev = _stream(x, indices=torch.arange(5, 24), batch_size=10, augment=False, drop_last=False, mean=mean, std=std)
    got = list(ev.epoch())
    assert torch.cat([y for _, y in got]).tolist() == list(range(5, 24))
    assert torch.equal(torch.cat([xb for xb, _ in got]), normalize(x[5:], mean, std))
    with pytest.raises(ValueError, match="needs a generator"):
        next(iter(_stream(x).epoch()))


def test_normalize_matches_torchvision() -> None:
    from torchvision.transforms import Normalize

    x = torch.from_numpy(_images(2, 3, 8, seed=6))
    mean, std = (0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)
    ref = Normalize(mean, std)(x.float() / 255)
    assert torch.allclose(normalize(x, mean, std), ref, atol=1e-6)


def test_crop_flip_matches_per_image_reference() -> None:
    x = torch.from_numpy(_images(16, 3, 10, seed=8))
    p = 3
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 2 * p + 1, (2, 16), generator=g)
    flips = torch.randint(0, 2, (16,), generator=g).bool()
    got = crop_flip(x, p, dy, dx, flips)
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for i in range(16):
        ref = padded[i, :, dy[i] : dy[i] + 10, dx[i] : dx[i] + 10]
        assert torch.equal(got[i], ref.flip(-1) if flips[i] else ref)
    assert got.shape == x.shape and got.dtype == torch.uint8
    assert torch.equal(crop_flip(x, 0, torch.zeros(16, dtype=torch.long), torch.zeros(16, dtype=torch.long)), x)


def test_batchstream_augmentation_keeps_shape_and_pads_with_zero_pixels() -> None:
    x = torch.full((32, 1, 6, 6), 255, dtype=torch.uint8)
    s = _stream(x, mean=(0.0,), std=(1.0,), crop_padding=2, batch_size=32)
    ((xb, _),) = _run(s, 0)
    assert xb.shape == (32, 1, 6, 6)
    assert set(xb.unique().tolist()) == {0.0, 1.0}  # white image, black padding shifted in
    assert (xb == 0).any(dim=(1, 2, 3)).float().mean() > 0.5


def test_batchstream_too_few_samples() -> None:
    with pytest.raises(ValueError, match="no batch"):
        _stream(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), batch_size=8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batchstream_same_batches_on_cuda_with_cpu_generator() -> None:
    x = torch.from_numpy(_images(40, 3, 32, seed=9))
    cpu, gpu = _run(_stream(x), 5), _run(_stream(x, device="cuda"), 5)
    for (xa, ya), (xb, yb) in zip(cpu, gpu):
        assert torch.equal(ya, yb.cpu()) and torch.allclose(xa, xb.cpu(), atol=1e-6)
