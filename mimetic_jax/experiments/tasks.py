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
- ``"fashion-mnist"``: Fashion-MNIST (Xiao et al., 2017), 60,000 + 10,000 images
  ``(N, 28, 28, 1)``, 10 classes, read from a folder of MNIST-format IDX files (plain or
  ``.gz``): Debian's ``dataset-fashion-mnist`` package, or the files torchvision, tfds,
  Keras or the original site put on disk (:func:`load_fashion_mnist`). Nothing is downloaded.

Synthetic sequence tasks (for state space models, Trockman et al. 2024), jittable and seedable:
:func:`copying` and :func:`mqar` (multi-query associative recall) draw batches of token
sequences with a loss mask on the answer positions; :func:`sequence_dataset` turns them
into a :class:`Dataset` of token sequences whose labels are ``-1`` off the answers (the
masked loss of :mod:`mimetic_jax.experiments.training`).

Example:
    >>> from mimetic_jax.experiments.tasks import load_dataset
    >>> data = load_dataset("digits")
    >>> data.x_train.shape[1:], data.num_classes
    ((8, 8, 1), 10)
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import inspect
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Dataset",
    "DATASETS",
    "DatasetNotFoundError",
    "FASHION_MNIST_DIRS",
    "SEQUENCE_TASKS",
    "SequenceBatch",
    "copying",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist1d",
    "load_dataset",
    "mqar",
    "read_idx",
    "sequence_dataset",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification data set split into train and test parts.

    A sequence task (:func:`sequence_dataset`) uses the same fields with ``x`` ``(N, L)``
    int32 tokens and ``y`` ``(N, L)`` int32 targets, ``-1`` where no loss is taken.

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
        return tuple(self.x_train.shape[1:])


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

    bunch: Any = _sk_load_digits()  # a Bunch (return_X_y=False)
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

    args: Any = get_dataset_args()
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


# --------------------------------------------------------------------------- Fashion-MNIST (IDX files)

DATA_ENV = "MIMETIC_JAX_DATA"
"""Environment variable naming a data folder (used when no ``data_dir`` is given)."""

FASHION_MNIST_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)
"""Where installed packages put Fashion-MNIST (Debian's ``dataset-fashion-mnist``)."""

_FASHION_INSTALL = (
    "Fashion-MNIST is read from MNIST-format IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or .gz). Install them with "
    "'apt-get install dataset-fashion-mnist' (Debian/Ubuntu, into /usr/share/datasets/fashion-mnist), or put "
    f"the four files in a folder and pass it as data_dir= / --data-dir, or set {DATA_ENV} to it"
)
_IDX_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# IDX type codes (the third byte of the magic number) -> big-endian NumPy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are not on this machine; the message says how to install them."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), plain or gzip-compressed, into a NumPy array.

    Layout (LeCun et al., the MNIST site): a 4-byte magic number ``0x00 0x00 T D`` (``T``
    the element type: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
    ``0x0D`` float32, ``0x0E`` float64; ``D`` the number of dimensions), then ``D`` big-endian
    uint32 sizes, then the elements in C order. A gzip file is recognized by its content.

    Raises:
        ValueError: if the magic number or the size of the file is not that of an IDX file.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
        >>> _ = f.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
        >>> read_idx(f)
        array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(
            f"{path} is not an IDX file: its magic number is {raw[:4].hex() or 'missing'}, expected 0000TTDD "
            f"(TT an element type among {', '.join(f'{t:02x}' for t in _IDX_DTYPES)}, DD >= 1 dimensions)"
        )
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: its header declares {ndim} dimensions")
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path} holds {len(raw)} bytes, its header (shape {shape}, {dtype}) says {expected}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz`` (also ``train-images.idx3-ubyte``, the original site's spelling)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _fashion_mnist_folder(data_dir: str | os.PathLike | None) -> Path:
    """The first folder holding the four IDX files: ``data_dir``, else ``$MIMETIC_JAX_DATA``, else the packages'.

    A given folder is searched as is, then its ``fashion-mnist`` and ``FashionMNIST/raw``
    (torchvision's layout) sub-folders.
    """
    if data_dir is not None:
        roots, where = [Path(data_dir)], f"data_dir={str(data_dir)!r}"
    elif os.environ.get(DATA_ENV):
        roots, where = [Path(os.environ[DATA_ENV])], f"{DATA_ENV}={os.environ[DATA_ENV]!r}"
    else:
        roots, where = [Path(d) for d in FASHION_MNIST_DIRS], "the default location " + ", ".join(FASHION_MNIST_DIRS)
    for root in roots:
        for folder in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw"):
            if all(_idx_file(folder, stem) for stem in _IDX_STEMS.values()):
                return folder
    raise DatasetNotFoundError(f"Fashion-MNIST not found in {where}. {_FASHION_INSTALL}.")


def _subset(labels: np.ndarray, size: int | None, seed: int, what: str) -> np.ndarray:
    """Sorted indices of a class-stratified random subset of ``size`` examples (all when ``None``)."""
    n = labels.size
    if size is None or size == n:
        return np.arange(n)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 < size <= n:
        raise ValueError(f"{what} must be an integer in [1, {n}] or None, got {size!r}")
    return _split_indices(labels, size / n, seed)[1]


@functools.lru_cache(maxsize=4)
def _fashion_mnist(folder: Path, seed: int, num_train: int | None, num_test: int | None) -> Dataset:
    arrays = {k: read_idx(_idx_file(folder, stem) or folder / stem) for k, stem in _IDX_STEMS.items()}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{folder}: {part} images {x.shape} and labels {y.shape} must be (N, H, W) and (N,) with equal N"
            )
    idx_train = _subset(arrays["y_train"], num_train, seed, "num_train")
    idx_test = _subset(arrays["y_test"], num_test, seed + 1, "num_test")
    x_train = (arrays["x_train"][idx_train].astype(np.float32) / 255.0)[..., None]
    x_test = (arrays["x_test"][idx_test].astype(np.float32) / 255.0)[..., None]
    y_train, y_test = arrays["y_train"][idx_train], arrays["y_test"][idx_test]
    return _make(x_train, y_train, x_test, y_test, 10, "fashion-mnist")


def load_fashion_mnist(
    seed: int = 0,
    *,
    data_dir: str | os.PathLike | None = None,
    num_train: int | None = None,
    num_test: int | None = None,
) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) as ``(N, 28, 28, 1)`` images, from IDX files on disk.

    The folder is ``data_dir`` if given, else ``$MIMETIC_JAX_DATA``, else Debian's
    ``dataset-fashion-mnist`` install path (:data:`FASHION_MNIST_DIRS`); in each, the folder
    itself, then its ``fashion-mnist`` and ``FashionMNIST/raw`` sub-folders are tried. The files
    are the standard ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, plain or ``.gz`` (:func:`read_idx`).
    Pixels (0..255) are scaled to ``[0, 1]``, then standardized with the training part's mean
    and std. ``num_train`` / ``num_test``: a class-stratified random subset of that size,
    drawn with ``seed`` (the seed has no effect on the full sets). Cached per folder and
    arguments.

    Raises:
        DatasetNotFoundError: (a ``FileNotFoundError``) the files are in none of the folders;
            the message names the install command.
        ValueError: a file is not an IDX file, or a subset size is out of range.

    Example:
        >>> data = load_fashion_mnist(num_train=1000, num_test=500)  # doctest: +SKIP
        >>> data.x_train.shape, data.x_test.shape, data.num_classes  # doctest: +SKIP
        ((1000, 28, 28, 1), (500, 28, 28, 1), 10)
    """
    return _fashion_mnist(_fashion_mnist_folder(data_dir).resolve(), int(seed), num_train, num_test)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "fashion-mnist": load_fashion_mnist,
}
"""Loaders by name; each takes a ``seed`` keyword argument (and its own options, e.g. ``data_dir``)."""


def load_dataset(name: str, *, seed: int = 0, **options: Any) -> Dataset:
    """Load a data set by name (``"digits"``, ``"mnist1d"`` or ``"fashion-mnist"``).

    Args:
        name: one of :data:`DATASETS`.
        seed: passed to the loader (split seed for digits, generation seed for MNIST-1D,
            subset seed for Fashion-MNIST).
        **options: the loader's own keyword arguments, e.g. ``data_dir`` and ``num_train``
            of :func:`load_fashion_mnist`.

    Raises:
        ValueError: if ``name`` is not a known data set.
        TypeError: if an option is not one of that loader's.

    Example:
        >>> load_dataset("mnist1d").image_shape
        (1, 40, 1)
    """
    try:
        loader = DATASETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in DATASETS)
        raise ValueError(f"name must be one of {valid}, got {name!r}") from None
    accepted = set(inspect.signature(loader).parameters) - {"seed"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"load_dataset({name!r}) got unknown option(s) {', '.join(unknown)}; "
            f"it accepts {', '.join(sorted(accepted)) or 'only seed'}"
        )
    return loader(seed=seed, **options)


# --------------------------------------------------------------------------- synthetic sequence tasks


class SequenceBatch(NamedTuple):
    """A batch of a sequence task: predict ``targets[:, t]`` from ``inputs[:, :t+1]`` where ``mask``.

    Attributes:
        inputs: ``(B, L)`` int32 tokens.
        targets: ``(B, L)`` int32 next-token targets (meaningful where ``mask``).
        mask: ``(B, L)`` bool, true on the answer positions (the loss mask).
    """

    inputs: Any
    targets: Any
    mask: Any


def _task_key(key: Any) -> Any:
    import jax
    import jax.numpy as jnp

    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(f"key must be a PRNG key (jax.random.key or PRNGKey), got {key.dtype}{list(key.shape)}")


def _lazy_jit(fn: Callable, static_argnums: tuple[int, ...]) -> Callable:
    """``jax.jit(fn, static_argnums)``, compiled at first use (``tasks`` imports JAX lazily)."""
    cache: dict[str, Callable] = {}

    @functools.wraps(fn)
    def wrapper(*args):
        if "jit" not in cache:
            import jax

            cache["jit"] = jax.jit(fn, static_argnums=static_argnums)
        return cache["jit"](*args)

    return wrapper


def copying(key: Any, batch_size: int, *, num_tokens: int = 16, vocab_size: int = 16) -> SequenceBatch:
    """Copying: ``x_1 … x_n ▷ x_1 … x_n``; the model must repeat the ``n`` tokens after the marker ``▷``.

    Token 0 is the copy marker, the tokens to copy are uniform on ``[1, vocab_size)``.
    The full sequence ``s = (x_1..x_n, 0, x_1..x_n)`` is shifted for next-token
    prediction: ``inputs = s[:-1]``, ``targets = s[1:]``, length ``2n``; the mask covers
    the last ``n`` positions, whose targets are ``x_1 … x_n`` (teacher forcing).
    Jittable (sizes are static), same key → same batch.

    Example:
        >>> import jax
        >>> b = copying(jax.random.key(0), 2, num_tokens=4, vocab_size=10)
        >>> b.inputs.shape, int(b.mask.sum())
        ((2, 8), 8)
        >>> bool((b.targets[:, 4:] == b.inputs[:, :4]).all())
        True
    """
    from mimetic_jax import _checks

    batch_size = _checks.positive_int("batch_size", batch_size)
    n = _checks.positive_int("num_tokens", num_tokens)
    vocab_size = _checks.positive_int("vocab_size", vocab_size)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2 (marker + one token), got {vocab_size}")
    return _copying(_task_key(key), batch_size, n, vocab_size)


@functools.partial(_lazy_jit, static_argnums=(1, 2, 3))
def _copying(key, batch_size, n, vocab_size):
    import jax
    import jax.numpy as jnp

    tokens = jax.random.randint(key, (batch_size, n), 1, vocab_size, jnp.int32)
    seq = jnp.concatenate([tokens, jnp.zeros((batch_size, 1), jnp.int32), tokens], axis=1)
    mask = jnp.broadcast_to(jnp.arange(2 * n) >= n, (batch_size, 2 * n))
    return SequenceBatch(seq[:, :-1], seq[:, 1:], mask)


def mqar(key: Any, batch_size: int, *, seq_len: int = 64, num_pairs: int = 8, vocab_size: int = 64) -> SequenceBatch:
    """Multi-query associative recall (MQAR, Arora et al. 2023, the Zoology layout).

    ``inputs = k_1 v_1 … k_P v_P`` then a query section: each of the ``P`` keys once, in
    random order, at random even offsets, filler token 0 elsewhere. At a query position
    the target is the key's value (mask true); the value is not in the input. Keys are
    distinct, drawn from ``[1, 1 + K)``, values from ``[1 + K, vocab_size)``,
    ``K = (vocab_size − 1) // 2``. Needs ``P <= K`` and ``(seq_len − 2P) // 2 >= P``.
    Jittable, same key → same batch.

    Example:
        >>> import jax
        >>> b = mqar(jax.random.key(0), 3, seq_len=16, num_pairs=4, vocab_size=20)
        >>> b.inputs.shape, b.mask.sum(axis=1).tolist()
        ((3, 16), [4, 4, 4])
    """
    from mimetic_jax import _checks

    batch_size = _checks.positive_int("batch_size", batch_size)
    seq_len = _checks.positive_int("seq_len", seq_len)
    p = _checks.positive_int("num_pairs", num_pairs)
    vocab_size = _checks.positive_int("vocab_size", vocab_size)
    k = (vocab_size - 1) // 2
    if p > k:
        raise ValueError(
            f"num_pairs ({p}) must not exceed the number of keys (vocab_size - 1) // 2 = {k} "
            f"(vocab_size={vocab_size}): keys are distinct"
        )
    slots = (seq_len - 2 * p) // 2
    if slots < p:
        raise ValueError(
            f"seq_len ({seq_len}) is too short for num_pairs={p}: needs seq_len >= 4 * num_pairs "
            f"= {4 * p} (context 2P, then P queries at even offsets)"
        )
    return _mqar(_task_key(key), batch_size, seq_len, p, vocab_size)


@functools.partial(_lazy_jit, static_argnums=(1, 2, 3, 4))
def _mqar(key, batch_size, seq_len, p, vocab_size):
    import jax
    import jax.numpy as jnp

    k = (vocab_size - 1) // 2
    slots = (seq_len - 2 * p) // 2

    def one(ex_key):
        kk, kv, ks, kq = jax.random.split(ex_key, 4)
        keys = jax.random.permutation(kk, k)[:p].astype(jnp.int32) + 1
        values = jax.random.randint(kv, (p,), 1 + k, vocab_size, jnp.int32)
        pos = 2 * p + 2 * jax.random.permutation(ks, slots)[:p]
        order = jax.random.permutation(kq, p)
        context = jnp.stack([keys, values], axis=1).reshape(-1)
        inputs = jnp.zeros(seq_len, jnp.int32).at[: 2 * p].set(context).at[pos].set(keys[order])
        targets = jnp.zeros(seq_len, jnp.int32).at[pos].set(values[order])
        mask = jnp.zeros(seq_len, bool).at[pos].set(True)
        return inputs, targets, mask

    return SequenceBatch(*jax.vmap(one)(jax.random.split(key, batch_size)))


SEQUENCE_TASKS: dict[str, Callable[..., SequenceBatch]] = {"copying": copying, "mqar": mqar}
"""Synthetic sequence tasks by name; each is ``task(key, batch_size, **options)``."""


def sequence_dataset(
    name: str, *, seed: int = 0, num_train: int = 8192, num_test: int = 1024, **options: Any
) -> Dataset:
    """A :class:`Dataset` of ``num_train + num_test`` fresh examples of a sequence task.

    ``x`` are the ``(N, L)`` int32 input tokens, ``y`` the ``(N, L)`` int32 targets with
    ``-1`` off the answer positions (the loss mask of :func:`mimetic_jax.experiments.training.cross_entropy`;
    accuracy is over answer positions), ``num_classes`` the vocabulary size. Train and test
    come from ``jax.random.key(seed)`` split in two.

    Example:
        >>> data = sequence_dataset("copying", num_train=64, num_test=16, num_tokens=8)
        >>> data.x_train.shape, data.num_classes, int((data.y_train >= 0).sum(axis=1)[0])
        ((64, 16), 16, 8)
    """
    import jax

    try:
        task = SEQUENCE_TASKS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in SEQUENCE_TASKS)
        raise ValueError(f"name must be one of {valid}, got {name!r}") from None
    k_train, k_test = jax.random.split(jax.random.key(seed))
    arrays = []
    for k, n in ((k_train, num_train), (k_test, num_test)):
        b = task(k, n, **options)
        arrays += [np.array(b.inputs, np.int32), np.array(np.where(b.mask, b.targets, -1), np.int32)]
    _freeze(*arrays)
    vocab = options.get("vocab_size", inspect.signature(task).parameters["vocab_size"].default)
    return Dataset(arrays[0], arrays[1], arrays[2], arrays[3], int(vocab), name)
