"""Labelled images as uint8 tensors: MNIST-style idx files, CIFAR-10 python batches and image folders.

Every reader returns an `ImageSet` (images `(N, C, H, W)` uint8, labels `(N,)` long, class names in label
order). Problems are `DataError`s that name the file. CIFAR-10 batches are pickles, so they are read by
an unpickler that builds nothing but numpy arrays, lists, dicts and bytes: a pickle that asks for any
other callable (`os.system`, `builtins.eval`, ...) is refused before it runs.
"""

from __future__ import annotations

import codecs
import gzip
import math
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from attnkit.data.datasets import data_root
from attnkit.errors import DataError, UserError

try:
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer


@dataclass
class ImageSet:
    """Images with their labels.

    Attributes:
        images: `(N, C, H, W)` uint8, C = 1 (grayscale) or 3 (RGB), 0 = black.
        labels: `(N,)` long, each in `0..len(classes) - 1`.
        classes: class names; label i is `classes[i]`.
        source: the file or folder read.
        notes: what was skipped, and other things the user should hear about.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.long or self.labels.shape != self.images.shape[:1]:
            shape = tuple(self.labels.shape)
            raise ValueError(f"labels must be long ({self.images.shape[0]},), got {self.labels.dtype} {shape}")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
            raise ValueError(f"labels must lie in 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return self.images.shape[0]


# ---------------------------------------------------------------------------------------------- idx files

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, columns)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip signature (whatever the file's name)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, zlib.error) as error:  # a cut-off .gz raises EOFError
        raise DataError(f"{path}: cannot be read ({error})") from None


def _parse_idx(path: Path, data: bytes, magic: int) -> np.ndarray:
    """An idx file's array, after checking its magic number and that the data is exactly as long as promised."""
    ndim = magic & 0xFF
    what = "images" if ndim == 3 else "labels"
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes, too short for an idx file")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path}: magic number {found}, expected {magic} (idx {what}: unsigned bytes, {ndim} dimension(s))"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated inside the {header}-byte header")
    shape = tuple(int.from_bytes(data[i : i + 4], "big") for i in range(4, header, 4))
    if any(size == 0 for size in shape[1:]):
        raise DataError(f"{path}: the header gives images of {shape[1]}x{shape[2]} pixels")
    expected, present = math.prod(shape), len(data) - header
    if present < expected:
        raise DataError(
            f"{path}: truncated: the header promises {' x '.join(map(str, shape))} = {expected} bytes of data, "
            f"the file holds {present}"
        )
    if present > expected:
        raise DataError(f"{path}: {present - expected} bytes after the {expected} that the header promises")
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(shape)


def read_idx(images_path: Path | str, labels_path: Path | str, classes: list[str] | None = None) -> ImageSet:
    """Read an MNIST-style pair of idx files (plain or gzip-compressed).

    Args:
        images_path: idx3 unsigned-byte file (magic 2051): N images of H x W pixels.
        labels_path: idx1 unsigned-byte file (magic 2049): N labels.
        classes: class names in label order (default "0", "1", ... up to the largest label).

    Returns:
        An `ImageSet` with images `(N, 1, H, W)` uint8 and labels `(N,)` long.
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images = _parse_idx(images_path, _read_maybe_gzip(images_path), IDX_IMAGES_MAGIC)  # (N, H, W)
    labels = _parse_idx(labels_path, _read_maybe_gzip(labels_path), IDX_LABELS_MAGIC)  # (N,)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if not len(images):
        raise DataError(f"{images_path}: holds no images")
    top = int(labels.max())
    if classes is None:
        classes = [str(i) for i in range(top + 1)]
    elif top >= len(classes):
        raise DataError(f"{labels_path}: label {top} is outside the {len(classes)} classes")
    return ImageSet(
        torch.from_numpy(images.copy()).unsqueeze(1),  # (N, 1, H, W); copy: frombuffer's array is read-only
        torch.from_numpy(labels.astype(np.int64)),
        list(classes),
        source=str(images_path),
    )


# ------------------------------------------------------------------------------------ CIFAR-10 batches

# Every callable a CIFAR-10 batch needs, by the (module, name) a pickle spells it with. The real batches
# are Python 2 pickles (protocol 2) that build arrays with numpy.core.multiarray._reconstruct, numpy.ndarray
# and numpy.dtype; a batch re-pickled by Python 3 spells the same with numpy._core (numpy >= 2), needs
# _codecs.encode for bytes under protocol 2, and numpy's _frombuffer under protocol 5.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, bytes and numpy arrays; refuses every other global."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")  # Python 2 `str` becomes bytes, as the CIFAR page says
        self.path = path

    def find_class(self, module: str, name: str):
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path}: refused to unpickle {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
                "lists and bytes, so this file is not one (or is unsafe)"
            ) from None


def _load_batch(path: Path) -> dict[str, object]:
    """A CIFAR batch or meta file as a dict with str keys."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (a CIFAR-10 python batch)")
    try:
        with open(path, "rb") as handle:
            loaded = _BatchUnpickler(handle, path).load()
    except DataError:
        raise
    except Exception as error:  # a damaged pickle can fail in many ways; all mean the same to the user
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: holds a {type(loaded).__name__}, expected the dict of a CIFAR-10 batch")
    return {key.decode("latin-1") if isinstance(key, bytes) else str(key): value for key, value in loaded.items()}


CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def read_cifar10(directory: Path | str, split: str = "train") -> ImageSet:
    """Read CIFAR-10's python batches (`data_batch_1`..`data_batch_5`, `test_batch`, `batches.meta`).

    Args:
        directory: the folder holding the batches, or the folder that holds `cifar-10-batches-py/`
            (what the official archive unpacks to).
        split: "train" (the five data batches, in order) or "test".

    Returns:
        An `ImageSet` with images `(N, 3, 32, 32)` uint8 (RGB) and the class names of `batches.meta`.
    """
    directory = Path(directory)
    if split not in CIFAR10_BATCHES:
        raise DataError(f"CIFAR-10 has splits train and test, not {split!r}")
    if not (directory / "batches.meta").is_file() and (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    meta_path = directory / "batches.meta"
    names = _load_batch(meta_path).get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, bytes | str) for n in names):
        raise DataError(f"{meta_path}: has no list of label_names")
    classes = [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    images, labels = [], []
    for name in CIFAR10_BATCHES[split]:
        path = directory / name
        batch = _load_batch(path)
        data, batch_labels = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: 'data' should be a uint8 array of N x 3072 (3 x 32 x 32), found {found}")
        if batch_labels is None:
            hint = " (CIFAR-100 has fine_labels; this reader is for CIFAR-10)" if "fine_labels" in batch else ""
            raise DataError(f"{path}: has no 'labels'{hint}")
        try:
            batch_labels = np.asarray(batch_labels, dtype=np.int64)
        except (TypeError, ValueError):
            raise DataError(f"{path}: 'labels' are not integers") from None
        if batch_labels.shape != (len(data),):
            raise DataError(f"{path}: {len(data)} images but {batch_labels.size} labels")
        if len(batch_labels) and not 0 <= batch_labels.min() <= batch_labels.max() < len(classes):
            raise DataError(f"{path}: labels outside 0..{len(classes) - 1} (the classes of {meta_path})")
        images.append(data)
        labels.append(batch_labels)
    # Each row is the red plane, then green, then blue, each 32 x 32 row-major: exactly (3, 32, 32).
    stacked = np.concatenate(images).reshape(-1, 3, 32, 32)  # (N, 3, 32, 32), a fresh writable array
    return ImageSet(torch.from_numpy(stacked), torch.from_numpy(np.concatenate(labels)), classes, str(directory))


# ------------------------------------------------------------------------------------------ image folders

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = {"1", "L", "LA"}
_WIDE_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N"}  # more than 8 bits a sample


def _check_size(size: tuple[int, int] | None) -> None:
    if size is not None and (len(size) != 2 or any(int(s) != s or s < 1 for s in size)):
        raise UserError(f"image size must be two positive integers (height, width), got {size}")


def _image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(Pillow mode, (width, height)) of an image file, reading only its header."""
    from PIL import Image  # Pillow comes with matplotlib

    try:
        with Image.open(path) as image:
            mode, size = image.mode, image.size
    except (OSError, ValueError) as error:  # UnidentifiedImageError is an OSError
        raise DataError(f"{path}: not a readable image ({error})") from None
    if mode in _WIDE_MODES:
        raise DataError(f"{path}: has {mode} pixels (16-bit or float); only 8-bit images are supported")
    return mode, size


def _load_image(path: Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """One image as `(C, H, W)` uint8, converted to L (C=1) or RGB (C=3, alpha dropped) and resized to `size`
    (H, W) with bilinear filtering when it differs."""
    from PIL import Image

    height, width = size
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.array(image, dtype=np.uint8)  # (H, W) or (H, W, 3)
    except (OSError, ValueError) as error:  # e.g. "image file is truncated"
        raise DataError(f"{path}: not a readable image ({error})") from None
    return torch.from_numpy(array.reshape(height, width, channels)).permute(2, 0, 1)  # (C, H, W)


def read_image(path: Path | str, *, channels: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """One image file as a model expects it (e.g. for `predict`).

    Args:
        channels: 1 (converted to grayscale) or 3 (RGB; an alpha channel is dropped).
        size: (H, W) to resize to with bilinear filtering; None keeps the file's size.

    Returns:
        `(C, H, W)` uint8.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels}")
    _check_size(size)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    _, (width, height) = _image_header(path)
    return _load_image(path, channels, size or (height, width))


def read_image_folder(
    root: Path | str,
    *,
    size: tuple[int, int] | None = None,
    classes: list[str] | None = None,
    channels: int | None = None,
) -> ImageSet:
    """Read `root/<class_name>/*.png|jpg|jpeg` (suffixes in any case), classes and files sorted by name.

    All images must have one size (a DataError names the first that differs) unless `size` is given.
    Files with other suffixes, hidden files and nested folders are skipped, and counted in `notes`.

    Args:
        size: (H, W) to resize every image to, with bilinear filtering.
        classes: class names in label order (e.g. the training folder's, to read a test folder with
            the same labels); every class folder must be one of them. Default: the folders' names, sorted.
        channels: 1 or 3; default 1 when every image is grayscale (Pillow modes 1, L, LA), else 3 (RGB,
            alpha dropped, palettes expanded).

    Returns:
        An `ImageSet` with images `(N, C, H, W)` uint8.
    """
    root = Path(root)
    _check_size(size)
    if channels not in (None, 1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels}")
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    entries = sorted(root.iterdir())
    folders = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    if not folders:
        raise DataError(f"{root}: no class folders; expected {root}/<class_name>/*.png (or .jpg, .jpeg)")
    names = [folder.name for folder in folders]
    if classes is None:
        classes = names
    else:
        unknown = [name for name in names if name not in classes]
        if unknown:
            raise DataError(f"{root}: class folder {unknown[0]!r} is not one of the classes {', '.join(classes)}")
    skipped = len(entries) - len(folders)
    files: list[tuple[Path, int]] = []
    for folder in folders:
        label = classes.index(folder.name)
        found = 0
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                files.append((path, label))
                found += 1
            else:
                skipped += 1
        if not found:
            raise DataError(f"{folder}: class folder without .png, .jpg or .jpeg images")
    headers = [_image_header(path) for path, _ in files]
    if size is None:
        first_path, (width, height) = files[0][0], headers[0][1]
        for (path, _), (_, (w, h)) in zip(files, headers, strict=True):
            if (w, h) != (width, height):
                raise DataError(
                    f"{path}: is {w}x{h} pixels but {first_path} is {width}x{height}; images must all have "
                    "one size, or give a size to resize them to"
                )
        size = (height, width)
    if channels is None:
        channels = 1 if all(mode in _GRAY_MODES for mode, _ in headers) else 3
    images = torch.empty((len(files), channels, *size), dtype=torch.uint8)  # (N, C, H, W)
    for i, (path, _) in enumerate(files):
        images[i] = _load_image(path, channels, size)
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    notes = [f"skipped {skipped} entries that are not .png/.jpg/.jpeg files in a class folder"] if skipped else []
    return ImageSet(images, labels, list(classes), source=str(root), notes=notes)


# ------------------------------------------------------------------------------------ datasets by name

VISION_FOLDERS = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10"}
MNIST_CLASSES = [str(digit) for digit in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(directory: Path, stem: str) -> Path:
    """`stem`, `stem.gz`, or the dotted spelling some mirrors use (`train-images.idx3-ubyte`)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{directory}: {stem}.gz (or {stem}) is missing")


def load_vision_dataset(name: str, data_dir: Path | str | None = None, split: str = "train") -> ImageSet:
    """Read a split of a standard image dataset.

    Args:
        name: "mnist", "fashion_mnist" or "cifar10".
        data_dir: the dataset's own folder (default `$ATTNKIT_DATA/<name>`, else `~/.cache/attnkit/data/<name>`).
        split: "train" or "test".

    Returns:
        An `ImageSet`: `(N, 1, 28, 28)` for MNIST and Fashion-MNIST (60000 train, 10000 test), `(N, 3, 32, 32)`
        for CIFAR-10 (50000 / 10000).
    """
    if name not in VISION_FOLDERS:
        raise DataError(f"unknown image dataset {name!r}; known: {', '.join(VISION_FOLDERS)}")
    if split not in ("train", "test"):
        raise DataError(f"{name} has splits train and test, not {split!r}")
    directory = Path(data_dir) if data_dir else data_root() / VISION_FOLDERS[name]
    if not directory.is_dir():
        raise DataError(f"{directory}: dataset {name} not found; set ATTNKIT_DATA or give --data-dir")
    if name == "cifar10":
        return read_cifar10(directory, split)
    images_stem, labels_stem = IDX_FILES[split]
    classes = MNIST_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES
    return read_idx(_find_idx(directory, images_stem), _find_idx(directory, labels_stem), classes)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images scaled to [0, 1] (the values `normalize` takes).

    Args:
        images: `(N, C, H, W)` uint8.
        chunk: images summed at a time (in float64, so large sets cost little memory and lose no precision).

    Returns:
        (mean, std), each a tuple of C floats.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or not len(images):
        raise ValueError(f"expected non-empty uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].to(torch.float64).div_(255)  # (n, C, H, W)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = images.numel() // channels
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
