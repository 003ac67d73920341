"""The data sets: scikit-learn's 8x8 digits and Fashion-MNIST (28x28), split once and for all.

Digits: `load_digits` holds 1,797 grey-scale images with pixel values 0 .. 16 (5-bit unsigned
integers) and 10 classes. The split is a fixed stratified 80/20 split (`random_state=0`), so every
tool in the project (training, evaluation, the golden model, the hardware cosimulation) sees the
same 360 test images in the same order. Hyperparameters are chosen on a validation split carved
from the 1,437 training images (`digits_train_val`, seeded, stratified), never on the test split.

Fashion-MNIST: the four standard IDX files (`read_idx`), 60,000 training and 10,000 test images
of 28x28 8-bit pixels, 10 classes, MIT licence. The test split ships in the repository
(`data/fashion-mnist/`), so evaluation, tests and simulation need nothing installed; the training
split is read from, in this order, the `directory` argument, the `FASHION_MNIST_DIR` environment
variable, or `/usr/share/datasets/fashion-mnist/` (Debian: `apt-get install
dataset-fashion-mnist`). `fashion_train_val` carves a seeded, stratified validation split from
the training set; `fashion_pixels` turns 8-bit images into network inputs (fewer pixel bits,
zero-padded to a power-of-two grid).
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Height and width of a digits image.
IMAGE_SIZE = 8
#: Largest pixel value in the data set (pixels are 0 .. 16).
PIXEL_MAX = 16
#: Bits of an unsigned pixel (0 .. 31 fits 0 .. 16).
PIXEL_BITS = 5
NUM_CLASSES = 10


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0)
    for array in (x_train, y_train, x_test, y_test):
        array.setflags(write=False)
    return x_train, y_train, x_test, y_test


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return `(x_train, y_train, x_test, y_test)`.

    Images are read-only uint8 arrays of shape (B, 8, 8) with values 0 .. 16, labels int64
    arrays of shape (B,). The split holds 1,437 training and 360 test images.
    """
    return _split()


def digits_test() -> tuple[np.ndarray, np.ndarray]:
    """The 360 test images (uint8, (360, 8, 8)) and their labels."""
    _, _, x_test, y_test = _split()
    return x_test, y_test


def _stratified_holdout(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a seeded, stratified holdout of `size` items (sorted)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * size / len(labels)
    take = np.floor(share).astype(int)
    for i in np.argsort(-(share - take), kind="stable")[:size - int(take.sum())]:
        take[i] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:n]
              for c, n in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked))


def split_validation(images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0):
    """Carve a seeded, stratified validation split of `size` images from a training set.

    Returns `(x_train, y_train, x_val, y_val)`; the two parts are disjoint and together hold
    every input image once, each in its original order.
    """
    if not 0 < size < len(labels):
        raise ValueError(f"validation size must be 1 .. {len(labels) - 1}, got {size}")
    val = _stratified_holdout(np.asarray(labels), size, seed)
    keep = np.ones(len(labels), dtype=bool)
    keep[val] = False
    return images[keep], labels[keep], images[val], labels[val]


#: Digits images held out of the 1,437 training images for choosing hyperparameters.
DIGITS_VAL_SIZE = 144


def digits_train_val(seed: int = 0, size: int = DIGITS_VAL_SIZE):
    """`(x_train, y_train, x_val, y_val)`: the digits training split minus a seeded, stratified
    validation split of `size` images (the test split is untouched)."""
    x_train, y_train, _, _ = _split()
    return split_validation(x_train, y_train, size, seed)


# ---- Fashion-MNIST ------------------------------------------------------------------------------

#: Where Debian's `dataset-fashion-mnist` installs the IDX files.
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Environment variable naming another folder holding the IDX files.
FASHION_ENV = "FASHION_MNIST_DIR"
#: The test split shipped with the repository (MIT licence, see its README).
SHIPPED_FASHION_DIR = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist"
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
FASHION_SIZE = 28
#: Validation images carved from the 60,000 training images (seeded, stratified).
FASHION_VAL_SIZE = 5000


class DatasetError(ValueError):
    """An IDX file is corrupt, truncated or inconsistent with its partner."""


class DatasetMissing(FileNotFoundError):
    """The data set files are not where they were looked for; the message says how to get them."""


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed when its name ends in .gz).

    Raises `DatasetMissing` when the file does not exist and `DatasetError` naming the file
    when the magic number, the type code, the dimensions or the length are wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetMissing(f"IDX file {path} does not exist")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as error:
        raise DatasetError(f"{path}: cannot read ({error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DatasetError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated header ({ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(f"{path}: holds {len(raw)} bytes, its header {shape} needs "
                           f"{expected}")
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())


def fashion_dirs(split: str, directory: str | Path | None = None) -> list[Path]:
    """The folders searched for `split` ("train" or "test"), in order."""
    if directory is not None:
        return [Path(directory)]
    dirs = [Path(os.environ[FASHION_ENV])] if os.environ.get(FASHION_ENV) else []
    dirs.append(DEBIAN_FASHION_DIR)
    if split == "test":
        dirs.insert(0, SHIPPED_FASHION_DIR)
    return dirs


def fashion_load(split: str, directory: str | Path | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `split` ("train" or "test"): uint8 images (B, 28, 28), int64 labels (B,).

    A missing file raises `DatasetMissing` naming the folders tried and both ways to get the
    files; a corrupt one raises `DatasetError`.
    """
    if split not in FASHION_FILES:
        raise ValueError(f"unknown split {split!r}; known: train, test")
    return _fashion_load(split, None if directory is None else str(directory),
                         os.environ.get(FASHION_ENV, ""))


@lru_cache(maxsize=4)
def _fashion_load(split: str, directory: str | None, _env: str):
    tried = fashion_dirs(split, directory)
    image_name, label_name = FASHION_FILES[split]
    for folder in tried:
        if (folder / image_name).is_file() and (folder / label_name).is_file():
            images = read_idx(folder / image_name)
            labels = read_idx(folder / label_name)
            if images.ndim != 3 or images.shape[1:] != (FASHION_SIZE, FASHION_SIZE):
                raise DatasetError(f"{folder / image_name}: shape {images.shape}, expected "
                                   f"(N, {FASHION_SIZE}, {FASHION_SIZE})")
            if labels.ndim != 1 or len(labels) != len(images):
                raise DatasetError(f"{folder / label_name}: {labels.shape} labels for "
                                   f"{len(images)} images")
            if labels.max(initial=0) >= NUM_CLASSES:
                raise DatasetError(f"{folder / label_name}: labels must be 0 .. 9")
            images = images.astype(np.uint8)
            labels = labels.astype(np.int64)
            images.setflags(write=False)
            labels.setflags(write=False)
            return images, labels
    where = ", ".join(str(folder) for folder in tried)
    raise DatasetMissing(
        f"Fashion-MNIST {split} files ({image_name}, {label_name}) not found in {where}. "
        f"Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, into "
        f"{DEBIAN_FASHION_DIR}), or download the four IDX .gz files and set "
        f"{FASHION_ENV}=<folder> (or pass --data-dir).")


def fashion_test(directory: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 Fashion-MNIST test images (uint8, (10000, 28, 28)) and labels."""
    return fashion_load("test", directory)


def fashion_train_val(seed: int = 0, size: int = FASHION_VAL_SIZE,
                      directory: str | Path | None = None):
    """`(x_train, y_train, x_val, y_val)`: the 60,000 training images minus a seeded,
    stratified validation split of `size` (5,000 by default)."""
    images, labels = fashion_load("train", directory)
    return split_validation(images, labels, size, seed)


def fashion_pixels(images, bits: int = 4, pad: int = 2) -> np.ndarray:
    """8-bit images (B, H, W) -> network inputs: the top `bits` bits, `pad` zero columns added
    on the left and on the right.

    The default turns 28x28 into 28x32 pixels of 0 .. 15, the shape the Fashion models read
    (a 3x3 conv on the accelerator needs a power-of-two grid width; rows are free).
    """
    array = np.asarray(images)
    if array.ndim != 3:
        raise ValueError(f"images have shape {array.shape}; expected (B, H, W)")
    if not 1 <= bits <= 8:
        raise ValueError(f"pixel bits must be 1 .. 8, got {bits}")
    array = (array.astype(np.uint8) >> (8 - bits)).astype(np.uint8)
    return np.pad(array, ((0, 0), (0, 0), (pad, pad)))


def fit_images(images, shape) -> np.ndarray:
    """Zero-pad a batch `(B, H, W)` or `(B, C, H, W)` to a model's input `shape` (`(H, W)`,
    or `(C, H, W)` whose last two entries count), the same number of rows above and below and
    of columns left and right; images already of that size come back unchanged.

    The Fashion-MNIST test split is 28x32 (`test_split`); the 64-token models read 32x32.
    Raises ValueError when an image is larger than `shape` or the padding cannot be centred.
    """
    array = np.asarray(images)
    h, w = (int(v) for v in tuple(shape)[-2:])
    if array.ndim not in (3, 4):
        raise ValueError(f"images have shape {array.shape}; expected (B, H, W) or (B, C, H, W)")
    dh, dw = h - array.shape[-2], w - array.shape[-1]
    if (dh, dw) == (0, 0):
        return array
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f"{array.shape[-2]}x{array.shape[-1]} images do not pad evenly to the "
                         f"model's {h}x{w} input")
    widths = [(0, 0)] * (array.ndim - 2) + [(dh // 2, dh // 2), (dw // 2, dw // 2)]
    return np.pad(array, widths)


def check_images(images, size: int | tuple = IMAGE_SIZE, channels: int = 1,
                 pixel_max: int = PIXEL_MAX) -> np.ndarray:
    """Validate a batch of images and return it as an int64 array of shape (B, C, H, W).

    `size` is H = W or `(H, W)`. Accepts (B, H, W) for one-channel images or (B, C, H, W).
    Raises `ValueError` naming the expected shape when the shape is wrong, and when pixels are
    not integers in 0 .. pixel_max.
    """
    array = np.asarray(images)
    h, w = (size, size) if np.ndim(size) == 0 else tuple(size)
    expected = f"(B, {channels}, {h}, {w})"
    if channels == 1:
        expected = f"(B, {h}, {w}) or {expected}"
    if array.ndim == 3 and channels == 1:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1:] != (channels, h, w) or array.shape[0] < 1:
        raise ValueError(f"images have shape {tuple(np.shape(images))}; expected {expected} "
                         "with B >= 1")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError("images must hold integer pixel values")
    if array.min() < 0 or array.max() > pixel_max:
        raise ValueError(f"pixel values must lie in 0 .. {pixel_max}, got "
                         f"[{array.min()}, {array.max()}]")
    return array.astype(np.int64)


#: Fashion-MNIST: pixel bits of the network input (8-bit pixels shifted right by 4).
FASHION_PIXEL_BITS = 4

DATASETS = ("digits", "fashion")


def test_split(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The test split of `dataset` as network inputs and labels: the 360 digits, or the 10,000
    Fashion-MNIST images (shipped) at `FASHION_PIXEL_BITS` bits, padded to 28x32 as the models
    were trained."""
    if dataset == "digits":
        return digits_test()
    if dataset != "fashion":
        raise ValueError(f"unknown dataset {dataset!r}; one of {', '.join(DATASETS)}")
    x, y = fashion_test()
    return fashion_pixels(x, FASHION_PIXEL_BITS), y
