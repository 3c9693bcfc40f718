"""Small image data sets that ship offline, as arrays ready for a vision model.

Every loader returns a :class:`Dataset` of NHWC ``float32`` images and ``int32`` labels,
standardized with the mean and standard deviation of the *training* split (one scalar
each, so that constant border pixels cause no division by zero). Loaded data sets are
cached: calling a loader twice with the same arguments returns the same object.

- ``"digits"``: scikit-learn's 8x8 hand-written digits (1797 images, 10 classes), which
  ship inside scikit-learn. Images ``(N, 8, 8, 1)``.
- ``"mnist1d"``: MNIST-1D (Greydanus, 2020), *generated* locally by the ``mnist1d``
  package (nothing is downloaded). Each length-40 signal is one image row:
  ``(N, 1, 40, 1)``, so a ViT with patch size ``(1, p)`` makes ``40 / p`` tokens.

Example:
    >>> from mimetic_jax.tasks import load_dataset
    >>> data = load_dataset("digits")
    >>> data.x_train.shape[1:], data.num_classes
    ((8, 8, 1), 10)
"""
from __future__ import annotations

import dataclasses
import functools
import random
from typing import Callable

import numpy as np

__all__ = ["Dataset", "DATASETS", "load_digits", "load_mnist1d", "load_dataset"]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification data set split into train and test parts.

    Attributes:
        x_train: training images, ``(N, H, W, C)`` float32.
        y_train: training labels, ``(N,)`` int32 in ``[0, num_classes)``.
        x_test: test images, ``(M, H, W, C)`` float32.
        y_test: test labels, ``(M,)`` int32.
        num_classes: number of classes.
        name: the data set's name, as given to :func:`load_dataset`.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")


def _split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test split of ``range(len(labels))``, deterministic in ``seed``.

    Each class contributes ``round(test_fraction * count)`` examples to the test part.
    Both index arrays are sorted.
    """
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = int(round(test_fraction * members.size))
        test.append(rng.permutation(members)[:take])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(labels.size), test_idx)
    return train_idx, test_idx


def _standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the training mean and divide by the training std (scalars), as float32."""
    mean = x_train.mean(dtype=np.float64)
    std = x_train.std(dtype=np.float64)
    scale = 1.0 / std if std > 0 else 1.0
    return (
        ((x_train - mean) * scale).astype(np.float32),
        ((x_test - mean) * scale).astype(np.float32),
    )


def _freeze(*arrays: np.ndarray) -> None:
    """Make the arrays read-only: a cached data set is shared between callers."""
    for a in arrays:
        a.flags.writeable = False


def _make(x_train, y_train, x_test, y_test, num_classes: int, name: str) -> Dataset:
    x_train, x_test = _standardize(x_train, x_test)
    y_train = np.asarray(y_train, dtype=np.int32)
    y_test = np.asarray(y_test, dtype=np.int32)
    _freeze(x_train, y_train, x_test, y_test)
    return Dataset(x_train, y_train, x_test, y_test, int(num_classes), name)


@functools.lru_cache(maxsize=8)
def load_digits(seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's 8x8 digits as ``(N, 8, 8, 1)`` images, split by ``seed``.

    Pixels (integers 0..16) are scaled to ``[0, 1]``, then standardized with the
    training split's mean and std. The split is stratified by class and depends only on
    ``seed`` and ``test_fraction``.

    Args:
        seed: seed of the train/test split.
        test_fraction: fraction of each class held out for testing, in ``(0, 1)``.

    Example:
        >>> data = load_digits()
        >>> data.x_train.shape, data.x_test.shape
        ((1347, 8, 8, 1), (450, 8, 8, 1))
    """
    _check_fraction(test_fraction)
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[..., None]
    labels = bunch.target
    train_idx, test_idx = _split_indices(labels, test_fraction, seed)
    return _make(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], 10, "digits")


def _generate_mnist1d(seed: int) -> dict:
    """Run ``mnist1d.data.make_dataset`` with ``seed``, leaving the global RNGs untouched.

    ``make_dataset`` seeds Python's and NumPy's global generators; their states are
    restored afterwards so that loading data has no side effect on the caller.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@functools.lru_cache(maxsize=8)
def load_mnist1d(seed: int = 0) -> Dataset:
    """MNIST-1D generated locally, as ``(N, 1, 40, 1)`` images (one row per signal).

    Uses ``mnist1d.data.make_dataset`` with the package's default arguments (5000
    examples, 80 % train, length 40) and ``seed`` as the generation seed; the package's
    published file corresponds to ``seed=42``. Nothing is downloaded. Generation takes a
    few seconds; the result is cached. The signals are re-standardized with the training
    split's mean and std.

    Layout: a signal of length 40 is an image of height 1 and width 40, so a ViT with
    ``patch_size=(1, p)`` sees ``40 / p`` tokens and a 2-D position grid ``(1, 40 / p)``.

    Example:
        >>> data = load_mnist1d()
        >>> data.x_train.shape, data.x_test.shape
        ((4000, 1, 40, 1), (1000, 1, 40, 1))
    """
    raw = _generate_mnist1d(seed)
    x_train = np.asarray(raw["x"], dtype=np.float64)[:, None, :, None]
    x_test = np.asarray(raw["x_test"], dtype=np.float64)[:, None, :, None]
    return _make(x_train, raw["y"], x_test, raw["y_test"], 10, "mnist1d")


DATASETS: dict[str, Callable[..., Dataset]] = {"digits": load_digits, "mnist1d": load_mnist1d}
"""Loaders by name; each takes a ``seed`` keyword argument."""


def load_dataset(name: str, *, seed: int = 0) -> Dataset:
    """Load a data set by name (``"digits"`` or ``"mnist1d"``).

    Args:
        name: one of :data:`DATASETS`.
        seed: passed to the loader (split seed for digits, generation seed for MNIST-1D).

    Raises:
        ValueError: if ``name`` is not a known data set.

    Example:
        >>> load_dataset("mnist1d").image_shape
        (1, 40, 1)
    """
    try:
        loader = DATASETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in DATASETS)
        raise ValueError(f"name must be one of {valid}, got {name!r}") from None
    return loader(seed=seed)
