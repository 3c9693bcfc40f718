"""Tests of mimetic_jax.experiments.tasks: offline data sets."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mimetic_jax.experiments.tasks import DATASETS, Dataset, load_dataset, load_digits, load_mnist1d


def test_digits_shapes_and_dtypes():
    data = load_digits()
    assert isinstance(data, Dataset)
    assert data.x_train.shape == (1347, 8, 8, 1) and data.x_test.shape == (450, 8, 8, 1)
    assert data.y_train.shape == (1347,) and data.y_test.shape == (450,)
    assert data.x_train.dtype == np.float32 and data.x_test.dtype == np.float32
    assert data.y_train.dtype == np.int32 and data.y_test.dtype == np.int32
    assert data.num_classes == 10 and data.name == "digits"
    assert data.image_shape == (8, 8, 1)
    assert set(np.unique(data.y_train)) == set(range(10)) == set(np.unique(data.y_test))


def test_digits_standardized_with_train_statistics():
    data = load_digits()
    assert abs(float(data.x_train.mean())) < 1e-5
    assert float(data.x_train.std()) == pytest.approx(1.0, abs=1e-5)
    # The test part uses the training statistics: close to, not exactly, standardized.
    assert abs(float(data.x_test.mean())) < 0.1


def test_digits_split_is_deterministic_and_stratified():
    a = load_digits.__wrapped__(seed=0)
    b = load_digits.__wrapped__(seed=0)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    c = load_digits(seed=1)
    assert not np.array_equal(a.y_train, c.y_train)
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 40 and counts.max() <= 50  # about a quarter of ~180 per class
    # Train and test are disjoint: no test image appears among the training images.
    train_rows = {row.tobytes() for row in a.x_train.reshape(len(a.x_train), -1)}
    duplicates = sum(row.tobytes() in train_rows for row in a.x_test.reshape(len(a.x_test), -1))
    assert duplicates < 5  # a few digits images are exact duplicates of each other in the raw data


def test_loaders_are_cached_and_read_only():
    assert load_digits() is load_digits()
    data = load_digits()
    with pytest.raises(ValueError):
        data.x_train[0, 0, 0, 0] = 1.0


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 2])
def test_digits_bad_test_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=fraction)


def test_mnist1d_is_generated_locally_as_one_row_images():
    np_state, py_state = np.random.get_state(), random.getstate()
    data = load_mnist1d()
    # make_dataset seeds the global generators; the loader must leave them as they were.
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    assert data.x_train.shape == (4000, 1, 40, 1) and data.x_test.shape == (1000, 1, 40, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert data.num_classes == 10 and data.name == "mnist1d"
    assert abs(float(data.x_train.mean())) < 1e-5
    assert float(data.x_train.std()) == pytest.approx(1.0, abs=1e-5)


def test_load_dataset_dispatch():
    assert load_dataset("digits") is load_digits(seed=0)
    assert {"digits", "mnist1d", "fashion-mnist"} <= set(DATASETS)


@pytest.mark.parametrize("name", ["cifar10", "", None])
def test_load_dataset_unknown_name(name):
    with pytest.raises(ValueError, match="name must be one of 'digits', 'mnist1d'"):
        load_dataset(name)
