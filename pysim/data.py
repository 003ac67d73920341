"""The data set: scikit-learn's 8x8 handwritten digits, split once and for all.

`load_digits` holds 1,797 grey-scale images with pixel values 0 .. 16 (5-bit unsigned integers)
and 10 classes. The split is a fixed stratified 80/20 split (`random_state=0`), so every tool in
the project (training, evaluation, the golden model, the hardware cosimulation) sees the same
360 test images in the same order.
"""

from __future__ import annotations

from functools import lru_cache

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


def check_images(images, size: int = IMAGE_SIZE, channels: int = 1,
                 pixel_max: int = PIXEL_MAX) -> np.ndarray:
    """Validate a batch of images and return it as an int64 array of shape (B, C, H, W).

    Accepts (B, H, W) for one-channel images or (B, C, H, W). Raises `ValueError` naming the
    expected shape when the shape is wrong, and when pixels are not integers in 0 .. pixel_max.
    """
    array = np.asarray(images)
    expected = f"(B, {channels}, {size}, {size})"
    if channels == 1:
        expected = f"(B, {size}, {size}) or {expected}"
    if array.ndim == 3 and channels == 1:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1:] != (channels, size, size) or array.shape[0] < 1:
        raise ValueError(f"images have shape {tuple(np.shape(images))}; expected {expected} "
                         "with B >= 1")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError("images must hold integer pixel values")
    if array.min() < 0 or array.max() > pixel_max:
        raise ValueError(f"pixel values must lie in 0 .. {pixel_max}, got "
                         f"[{array.min()}, {array.max()}]")
    return array.astype(np.int64)
