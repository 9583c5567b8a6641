"""Image readers (idx files, CIFAR-10 batches, image folders) on files written here, the real MNIST and
Fashion-MNIST where present, and the batch transforms against hand-computed values and their invariants."""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.data.images import (
    FASHION_MNIST_CLASSES,
    channel_stats,
    load_vision_dataset,
    read_cifar10,
    read_idx,
    read_image,
    read_image_folder,
)
from attnkit.data.transforms import (
    RAND_AUGMENT_OPS,
    _rotate_by,
    normalize,
    rand_augment_lite,
    random_crop,
    random_horizontal_flip,
    random_rotation,
    to_float,
)
from attnkit.errors import DataError

SHARED = "/work/shared/data"


# ---------------------------------------------------------------------------------------------- idx files


def _idx(magic: int, array: np.ndarray) -> bytes:
    """An idx file: big-endian magic, one uint32 per dimension, then the uint8 payload."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def _write(path, data: bytes):
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


IMAGES = (np.arange(3 * 4 * 5) * 7 % 256).astype(np.uint8).reshape(3, 4, 5)  # 3 images of 4 x 5 pixels
LABELS = np.array([2, 0, 1], dtype=np.uint8)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    images = _write(tmp_path / f"images-idx3-ubyte{suffix}", _idx(2051, IMAGES))
    labels = _write(tmp_path / f"labels-idx1-ubyte{suffix}", _idx(2049, LABELS))
    data = read_idx(images, labels)
    assert data.images.dtype == torch.uint8 and data.images.shape == (3, 1, 4, 5)
    assert torch.equal(data.images[:, 0], torch.from_numpy(IMAGES))
    assert data.labels.dtype == torch.long and data.labels.tolist() == [2, 0, 1]
    assert data.classes == ["0", "1", "2"] and data.source == str(images) and len(data) == 3
    named = read_idx(images, labels, classes=["a", "b", "c", "d"])
    assert named.classes == ["a", "b", "c", "d"]
    with pytest.raises(DataError, match="label 2 is outside the 2 classes"):
        read_idx(images, labels, classes=["a", "b"])


def test_idx_bad_magic_truncation_and_counts(tmp_path):
    labels = _write(tmp_path / "labels", _idx(2049, LABELS))
    swapped = _write(tmp_path / "images", _idx(2049, LABELS))  # a label file where images belong
    with pytest.raises(DataError, match="images: magic number 2049, expected 2051"):
        read_idx(swapped, labels)
    good = _idx(2051, IMAGES)
    short = _write(tmp_path / "short-images", good[:-1])
    with pytest.raises(DataError, match=r"short-images: truncated: the header promises 3 x 4 x 5 = 60 bytes"):
        read_idx(short, labels)
    header_only = _write(tmp_path / "cut-header", good[:10])
    with pytest.raises(DataError, match="cut-header: truncated inside the 16-byte header"):
        read_idx(header_only, labels)
    long = _write(tmp_path / "long-images", good + b"\0")
    with pytest.raises(DataError, match="long-images: 1 bytes after the 60"):
        read_idx(long, labels)
    cut_gz = tmp_path / "cut-images.gz"
    cut_gz.write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(DataError, match=r"cut-images\.gz: cannot be read"):
        read_idx(cut_gz, labels)
    images = _write(tmp_path / "images", good)
    four = _write(tmp_path / "four-labels", _idx(2049, np.array([0, 1, 2, 3])))
    with pytest.raises(DataError, match=r"images has 3 images but .*four-labels has 4 labels"):
        read_idx(images, four)
    with pytest.raises(DataError, match="nowhere: no such file"):
        read_idx(tmp_path / "nowhere", labels)


def test_load_vision_dataset_finds_idx_files_by_their_standard_names(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    _write(folder / "t10k-images-idx3-ubyte.gz", _idx(2051, IMAGES))
    _write(folder / "t10k-labels.idx1-ubyte", _idx(2049, LABELS))  # the dotted spelling of some mirrors
    monkeypatch.setenv("ATTNKIT_DATA", str(tmp_path))
    test = load_vision_dataset("mnist", split="test")
    assert test.images.shape == (3, 1, 4, 5) and test.classes == [str(d) for d in range(10)]
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz .* is missing"):
        load_vision_dataset("mnist", split="train")
    with pytest.raises(DataError, match="splits train and test, not 'valid'"):
        load_vision_dataset("mnist", split="valid")
    with pytest.raises(DataError, match="unknown image dataset 'svhn'"):
        load_vision_dataset("svhn")
    with pytest.raises(DataError, match="dataset fashion_mnist not found"):
        load_vision_dataset("fashion_mnist")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_mnist_and_fashion_mnist(name):
    folder = os.path.join(SHARED, name)
    if not os.path.isdir(folder):
        pytest.skip(f"{folder} is not here")
    train, test = load_vision_dataset(name, folder, "train"), load_vision_dataset(name, folder, "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.shape == (60000,) and test.labels.shape == (10000,)
    for split in (train, test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.long
        assert split.labels.min() == 0 and split.labels.max() == 9 and len(split.classes) == 10
    mean, std = channel_stats(train.images)
    if name == "mnist":
        assert train.labels[0] == 5 and train.classes == [str(d) for d in range(10)]
        assert mean[0] == pytest.approx(0.1307, abs=1e-4) and std[0] == pytest.approx(0.3081, abs=1e-4)
    else:
        assert train.labels.bincount().tolist() == [6000] * 10 and test.labels.bincount().tolist() == [1000] * 10
        assert train.classes == FASHION_MNIST_CLASSES and train.classes[9] == "Ankle boot"
        assert mean[0] == pytest.approx(0.2860, abs=1e-4) and std[0] == pytest.approx(0.3530, abs=1e-4)


def test_channel_stats_by_hand():
    images = torch.tensor([[[[0, 255]], [[51, 51]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
    mean, std = channel_stats(images, chunk=1)
    assert mean == pytest.approx((0.5, 0.2)) and std == pytest.approx((0.5, 0.0), abs=1e-7)


# ------------------------------------------------------------------------------------ CIFAR-10 batches

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (SHORT_BINSTRING / BINSTRING), as cPickle wrote the real batches."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _pickle(obj, style: str) -> bytes:
    if style == "python2":
        buffer = io.BytesIO()
        _Python2Pickler(buffer, protocol=2).dump(obj)
        # numpy 1.x (and the real batches) spell the module numpy.core.multiarray
        return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    return pickle.dumps(obj, protocol=2 if style == "protocol2" else pickle.HIGHEST_PROTOCOL)


def _cifar_folder(folder, style: str, per_batch: int = 4):
    """batches.meta and five training batches plus a test batch of random images; returns the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    meta = {b"label_names": [name.encode() for name in CIFAR_CLASSES], b"num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(_pickle(meta, style))
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"a.png"] * per_batch}
        (folder / name).write_bytes(_pickle(batch, style))
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("style", ["python2", "protocol2", "highest"])
def test_cifar10_batches(tmp_path, style):
    written = _cifar_folder(tmp_path / "cifar-10-batches-py", style)
    train = read_cifar10(tmp_path, "train")  # finds the folder the official archive unpacks to
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes == CIFAR_CLASSES
    first, labels = written["data_batch_1"]
    # Each row: 1024 red values, then 1024 green, then 1024 blue, each plane row by row.
    assert torch.equal(train.images[0, 1], torch.from_numpy(first[0, 1024:2048].reshape(32, 32)))
    assert train.labels[:4].tolist() == labels
    assert train.labels[16:].tolist() == written["data_batch_5"][1]
    test = load_vision_dataset("cifar10", tmp_path / "cifar-10-batches-py", "test")
    assert torch.equal(test.images.reshape(4, -1), torch.from_numpy(written["test_batch"][0]))


class _Exploit:
    """Unpickles by calling `function(argument)`."""

    def __init__(self, function, argument: str):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return (self.function, (self.argument,))


def test_cifar10_refuses_pickles_that_call_anything_else(tmp_path):
    _cifar_folder(tmp_path, "highest")
    marker = tmp_path / "pwned"
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(os.system, f"touch {marker}")}, protocol))
        with pytest.raises(DataError, match=r"test_batch: refused to unpickle \w+\.system"):
            read_cifar10(tmp_path, "test")
        assert not marker.exists()
    (tmp_path / "batches.meta").write_bytes(pickle.dumps(_Exploit(eval, "1 + 1")))
    with pytest.raises(DataError, match=r"batches\.meta: refused to unpickle builtins\.eval"):
        read_cifar10(tmp_path, "test")


def test_cifar10_damaged_files(tmp_path):
    _cifar_folder(tmp_path, "highest")
    good = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR-10 batch"):
        read_cifar10(tmp_path, "test")
    flat = {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(flat))
    with pytest.raises(DataError, match=r"'data' should be a uint8 array of N x 3072 .*found uint8 \(2, 1024\)"):
        read_cifar10(tmp_path, "test")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(DataError, match="2 images but 1 labels"):
        read_cifar10(tmp_path, "test")
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: no such file"):
        read_cifar10(tmp_path, "train")


# ------------------------------------------------------------------------------------------ image folders


def _save(path, array: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _pixels(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_image_folder_classes_sizes_and_modes(tmp_path):
    root = tmp_path / "train"
    cat, dog1, dog2 = _pixels(1, (4, 6, 3)), _pixels(2, (4, 6, 3)), _pixels(3, (4, 6, 3))
    _save(root / "dog" / "b.png", dog2)
    _save(root / "dog" / "a.png", dog1)
    _save(root / "cat" / "x.PNG", cat)
    (root / "cat" / "notes.txt").write_text("not an image")
    data = read_image_folder(root)
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 1, 1]
    assert data.images.shape == (3, 3, 4, 6) and data.images.dtype == torch.uint8
    for i, array in enumerate([cat, dog1, dog2]):  # PNG is lossless: the pixels come back exactly
        assert torch.equal(data.images[i], torch.from_numpy(array).permute(2, 0, 1))
    assert data.notes == ["skipped 1 entries that are not .png/.jpg/.jpeg files in a class folder"]

    odd = _save(root / "dog" / "c.png", _pixels(4, (5, 6, 3)))
    with pytest.raises(DataError, match=r"dog/c.png: is 6x5 pixels but .*cat/x.PNG is 6x4"):
        read_image_folder(root)
    resized = read_image_folder(root, size=(8, 3))
    assert resized.images.shape == (4, 3, 8, 3)
    odd.unlink()

    flat = np.full((4, 6, 3), (200, 10, 90), dtype=np.uint8)  # bilinear resizing keeps a flat colour
    _save(root / "dog" / "flat.png", flat)
    resized = read_image_folder(root, size=(8, 3))
    assert resized.images.shape == (4, 3, 8, 3)
    assert resized.images[3].tolist() == [[[200] * 3] * 8, [[10] * 3] * 8, [[90] * 3] * 8]

    gray = tmp_path / "gray"
    _save(gray / "a" / "1.png", _pixels(5, (4, 6)))
    _save(gray / "b" / "2.png", _pixels(6, (4, 6)))
    assert read_image_folder(gray).images.shape == (2, 1, 4, 6)  # all grayscale: one channel
    assert read_image_folder(gray, channels=3).images.shape == (2, 3, 4, 6)
    _save(gray / "b" / "3.jpg", _pixels(7, (4, 6, 3)))
    assert read_image_folder(gray).images.shape == (3, 3, 4, 6)  # one colour image: all RGB


def test_image_folder_given_classes_and_errors(tmp_path):
    test = tmp_path / "test"
    _save(test / "dog" / "a.png", _pixels(1, (4, 4, 3)))
    assert read_image_folder(test, classes=["cat", "dog"]).labels.tolist() == [1]
    with pytest.raises(DataError, match="class folder 'dog' is not one of the classes cat, bird"):
        read_image_folder(test, classes=["cat", "bird"])
    (test / "cat").mkdir()
    with pytest.raises(DataError, match=r"cat: class folder without \.png, \.jpg or \.jpeg images"):
        read_image_folder(test)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no class folders"):
        read_image_folder(empty)
    with pytest.raises(DataError, match="absent: no such folder"):
        read_image_folder(tmp_path / "absent")
    broken = tmp_path / "broken" / "cls" / "bad.png"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"bad\.png: not a readable image"):
        read_image_folder(tmp_path / "broken")


def test_read_image_converts_and_resizes(tmp_path):
    path = _save(tmp_path / "one.png", np.full((4, 6, 3), 120, dtype=np.uint8))
    assert read_image(path, channels=3).shape == (3, 4, 6)
    image = read_image(path, channels=1, size=(28, 28))
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and int(image[0, 5, 5]) == 120


# ------------------------------------------------------------------------------------------ transforms


def test_to_float_and_normalize_by_hand():
    images = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
    x = to_float(images)
    assert x.dtype == torch.float32 and torch.allclose(x, torch.tensor([[[[0.0, 1.0]], [[0.2, 0.4]]]]))
    out = normalize(x, mean=(0.5, 0.2), std=(0.5, 0.1))
    # channel 0: (0 - 0.5) / 0.5 = -1, (1 - 0.5) / 0.5 = 1; channel 1: (0.2 - 0.2) / 0.1 = 0, (0.4 - 0.2) / 0.1 = 2
    assert torch.allclose(out, torch.tensor([[[[-1.0, 1.0]], [[0.0, 2.0]]]]), atol=1e-6)
    assert torch.allclose(normalize(x[0], (0.5, 0.2), (0.5, 0.1)), out[0], atol=1e-6)  # (C, H, W) too
    with pytest.raises(ValueError, match="1 means and 1 stds for 2 channel"):
        normalize(x, (0.5,), (0.5,))
    with pytest.raises(TypeError):
        to_float(x)


def _batch(seed: int, shape=(8, 3, 6, 5)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_horizontal_flip():
    x = _batch(0)
    once = random_horizontal_flip(x, p=1.0)
    assert torch.equal(once, x.flip(-1)) and not torch.equal(once, x)
    assert torch.equal(random_horizontal_flip(once, p=1.0), x)
    assert torch.equal(random_horizontal_flip(x, p=0.0), x)
    x = _batch(1, (64, 1, 4, 4))
    out = random_horizontal_flip(x, 0.5, torch.Generator().manual_seed(3))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and 10 < sum(flipped) < 54
    assert torch.equal(out, random_horizontal_flip(x, 0.5, torch.Generator().manual_seed(3)))


def test_random_crop_shapes_identity_and_seeds():
    x = _batch(0)
    assert torch.equal(random_crop(x, (6, 5), padding=0, generator=torch.Generator().manual_seed(1)), x)
    assert random_crop(x, 4, padding=2).shape == (8, 3, 4, 4)
    assert random_crop(x, (9, 7), padding=2).shape == (8, 3, 9, 7)
    first = random_crop(x, (6, 5), padding=3, generator=torch.Generator().manual_seed(7))
    again = random_crop(x, (6, 5), padding=3, generator=torch.Generator().manual_seed(7))
    other = random_crop(x, (6, 5), padding=3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    with pytest.raises(ValueError, match="cannot cut 11x5 from 6x5 images padded by 2"):
        random_crop(x, (11, 5), padding=2)


def test_random_crop_is_a_window_of_the_zero_padded_image():
    B, C, H, W, p = 12, 2, 5, 4, 2
    x = torch.arange(1, B * C * H * W + 1, dtype=torch.float64).reshape(B, C, H, W)  # no zeros, all distinct
    out = random_crop(x, (H, W), padding=p, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = set()
    for b in range(B):
        assert set(out[b].unique().tolist()) <= {0.0, *x[b].unique().tolist()}  # padding or this image's pixels
        matches = [
            (i, j)
            for i in range(2 * p + 1)
            for j in range(2 * p + 1)
            if torch.equal(out[b], padded[b, :, i : i + H, j : j + W])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len({i for i, _ in offsets}) > 1 and len({j for _, j in offsets}) > 1  # drawn per image, on both axes


def test_rand_augment_lite_keeps_shape_dtype_and_range():
    x = _batch(0, (32, 3, 16, 16))
    out = rand_augment_lite(x, torch.Generator().manual_seed(0), n_ops=3, magnitude=1.0)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)
    assert torch.equal(out, rand_augment_lite(x, torch.Generator().manual_seed(0), n_ops=3, magnitude=1.0))
    assert not torch.equal(out, rand_augment_lite(x, torch.Generator().manual_seed(1), n_ops=3, magnitude=1.0))
    for name in RAND_AUGMENT_OPS:
        one = rand_augment_lite(x, torch.Generator().manual_seed(2), n_ops=1, magnitude=1.0, ops=[name])
        assert one.shape == x.shape and one.min() >= 0 and one.max() <= 1 and not torch.equal(one, x), name
        still = rand_augment_lite(x, torch.Generator().manual_seed(2), n_ops=2, magnitude=0.0, ops=[name])
        assert torch.allclose(still, x, atol=1e-5), name  # magnitude 0 changes nothing
    assert torch.equal(rand_augment_lite(x, n_ops=0), x)
    with pytest.raises(ValueError, match="before normalize"):
        rand_augment_lite(x - 0.5)
    with pytest.raises(ValueError, match="unknown op"):
        rand_augment_lite(x, ops=["solarize"])


def test_rand_augment_translate_and_cutout_by_hand():
    x = _batch(0, (1, 2, 10, 10))
    # u = 1 shifts by round(1 * 0.3 * 10) = 3 rows down; u = 0.5 does not shift the columns.
    shifted = RAND_AUGMENT_OPS["translate"](x, torch.tensor([[1.0, 0.5]]), 1.0)
    assert torch.allclose(shifted[..., 3:, :], x[..., :-3, :], atol=1e-6)
    assert torch.equal(shifted[..., :3, :], torch.zeros(1, 2, 3, 10))
    ones = torch.ones(1, 1, 8, 8)
    cut = RAND_AUGMENT_OPS["cutout"](ones, torch.tensor([[0.5, 0.5]]), 1.0)  # a 4 x 4 square centred at (4, 4)
    assert torch.equal(cut[0, 0, 2:6, 2:6], torch.zeros(4, 4)) and int(cut.sum()) == 64 - 16


def test_rotation_by_a_quarter_turn_is_rot90():
    x = _batch(0, (2, 3, 9, 9))
    quarter = torch.full((2,), math.pi / 2)
    # Positive angles turn the picture anticlockwise as displayed (row 0 at the top), as rot90 does.
    assert torch.allclose(_rotate_by(x, quarter), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(_rotate_by(x, -quarter), torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5)


def test_random_rotation_turns_each_image_by_at_most_the_given_angle():
    size, centre = 31, 15
    x = torch.zeros(256, 1, size, size)
    x[..., centre - 1 : centre + 2, centre + 9 : centre + 12] = 1.0  # a 3 x 3 dot 10 pixels right of centre
    out = random_rotation(x, 20.0, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    grid = torch.arange(size, dtype=torch.float32) - centre
    mass = out.sum(dim=(1, 2, 3))  # (B,)
    rows = (out[:, 0].sum(dim=2) * grid).sum(dim=1) / mass  # (B,) centre of mass, from the image centre
    cols = (out[:, 0].sum(dim=1) * grid).sum(dim=1) / mass
    angles = torch.rad2deg(torch.atan2(rows, cols))  # (B,) 0 for the dot where it started
    assert torch.allclose(mass, torch.full_like(mass, 9.0), atol=0.05)  # the dot stays whole
    assert torch.allclose(torch.hypot(rows, cols), torch.full_like(mass, 10.0), atol=0.05)  # at its radius
    assert angles.abs().max() <= 20.0 + 0.5
    assert angles.min() < -15 and angles.max() > 15  # both ways, across the whole range
    assert torch.equal(out, random_rotation(x, 20.0, torch.Generator().manual_seed(0)))
    assert torch.equal(random_rotation(x, 0.0), x)
    with pytest.raises(ValueError, match="degrees"):
        random_rotation(x, 200.0)
    with pytest.raises(TypeError, match="float"):
        random_rotation(x.to(torch.uint8), 10.0)


@pytest.mark.gpu
def test_transforms_on_cuda_match_cpu_with_a_cpu_generator():
    x = _batch(0, (16, 3, 12, 12))
    for transform in (
        lambda t, g: random_crop(t, 12, padding=2, generator=g),
        lambda t, g: random_horizontal_flip(t, 0.5, g),
        lambda t, g: rand_augment_lite(t, g, n_ops=2, magnitude=0.8),
        lambda t, g: random_rotation(t, 30.0, g),
    ):
        cpu = transform(x, torch.Generator().manual_seed(5))
        cuda = transform(x.cuda(), torch.Generator().manual_seed(5))
        assert cuda.device.type == "cuda" and torch.allclose(cuda.cpu(), cpu, atol=1e-5)
