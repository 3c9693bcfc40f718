"""Tests of the Fashion-MNIST loader (MNIST-format IDX files) on tiny files written here.

None of these needs the real data set (Debian's ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from mimetic_jax.experiments import cli
from mimetic_jax.experiments.tasks import (
    DATASETS,
    DatasetNotFoundError,
    load_dataset,
    load_fashion_mnist,
    read_idx,
)

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array`` (uint8, int16, int32, float32 or float64), written independently of the reader."""
    code = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    header = bytes([0, 0, code[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, array: np.ndarray, gz: bool) -> None:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)


def fake_fashion(folder, gz: bool, n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Write four IDX files of random 28x28 uint8 images with balanced labels; return the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        STEMS[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        STEMS[1]: rng.permutation(np.arange(n_train) % 10).astype(np.uint8),
        STEMS[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        STEMS[3]: rng.permutation(np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, a in arrays.items():
        write(folder / (stem + ".gz" if gz else stem), a, gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-3, 0, 7], dtype=np.int8),
        np.array([[-300, 2], [5, 30000]], dtype=np.int16),
        np.array([-(2**31), 2**31 - 1], dtype=np.int32),
        np.array([1.5, -2.25, np.pi], dtype=np.float32),
        np.array([[1e300, -1e-300]], dtype=np.float64),
    ],
    ids=["uint8-3d", "int8", "int16", "int32", "float32", "float64"],
)
def test_read_idx_returns_what_was_written(tmp_path, array, gz):
    path = tmp_path / "a-idx"
    write(path, array, gz)
    out = read_idx(path)
    assert out.shape == array.shape and out.dtype == array.dtype
    assert out.dtype.byteorder in ("=", "|")  # native order, usable by JAX
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "not an IDX file.*magic number is 01000801"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "not an IDX file"),  # unknown type code
        (b"\x00\x00\x08\x00", "not an IDX file"),  # zero dimensions
        (b"\x00\x00", "not an IDX file.*magic number is 0000,"),  # too short
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated"),  # header cut
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "holds 10 bytes.*says 11"),  # data cut
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "holds 10 bytes.*says 9"),  # trailing bytes
    ],
)
def test_read_idx_rejects_bad_files_with_a_value_error(tmp_path, raw, match):
    for gz in (False, True):
        path = tmp_path / f"bad{gz}"
        path.write_bytes(gzip.compress(raw) if gz else raw)
        with pytest.raises(ValueError, match=match):
            read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_loader_parses_the_files_scales_and_standardizes_with_train_statistics(tmp_path, gz):
    arrays = fake_fashion(tmp_path / "fm", gz)
    data = load_fashion_mnist(data_dir=tmp_path / "fm")
    assert data.name == "fashion-mnist" and data.num_classes == 10 and data.image_shape == (28, 28, 1)
    np.testing.assert_array_equal(data.y_train, arrays[STEMS[1]])
    np.testing.assert_array_equal(data.y_test, arrays[STEMS[3]])
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    train = arrays[STEMS[0]].astype(np.float64) / 255.0
    mean, std = train.mean(), train.std()
    np.testing.assert_allclose(data.x_train[..., 0], (train - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.x_test[..., 0], (arrays[STEMS[2]] / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    assert not data.x_train.flags.writeable


def test_loader_finds_the_folder_from_the_environment_and_sub_folders(tmp_path, monkeypatch):
    arrays = fake_fashion(tmp_path / "root" / "fashion-mnist", gz=True, seed=1)
    monkeypatch.setenv("MIMETIC_JAX_DATA", str(tmp_path / "root"))
    np.testing.assert_array_equal(load_dataset("fashion-mnist").y_train, arrays[STEMS[1]])
    # torchvision's layout, given as data_dir (which wins over the environment variable).
    other = fake_fashion(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False, seed=2)
    np.testing.assert_array_equal(load_fashion_mnist(data_dir=tmp_path / "tv").y_test, other[STEMS[3]])


def test_subsets_are_stratified_seeded_and_checked(tmp_path):
    fake_fashion(tmp_path, gz=False, n_train=100, n_test=50)
    a = load_dataset("fashion-mnist", data_dir=tmp_path, num_train=30, num_test=20, seed=0)
    assert a.x_train.shape == (30, 28, 28, 1) and a.x_test.shape == (20, 28, 28, 1)
    assert np.bincount(a.y_train, minlength=10).tolist() == [3] * 10
    b = load_dataset("fashion-mnist", data_dir=tmp_path, num_train=30, num_test=20, seed=1)
    assert not np.array_equal(a.x_train, b.x_train)
    for bad in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match="num_train must be an integer in \\[1, 100\\]"):
            load_fashion_mnist(data_dir=tmp_path, num_train=bad)


def test_a_missing_data_set_is_one_error_with_the_install_command(tmp_path, monkeypatch):
    fake_fashion(tmp_path / "partial", gz=False)
    (tmp_path / "partial" / STEMS[2]).unlink()
    for folder in (tmp_path / "nowhere", tmp_path / "partial"):
        with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
            load_fashion_mnist(data_dir=folder)
        assert isinstance(err.value, FileNotFoundError) and str(folder) in str(err.value)
    monkeypatch.setenv("MIMETIC_JAX_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match="MIMETIC_JAX_DATA="):
        load_dataset("fashion-mnist")


def test_registered_and_options_checked():
    assert DATASETS["fashion-mnist"] is load_fashion_mnist
    with pytest.raises(TypeError, match="unknown option.*data_dir"):
        load_dataset("digits", data_dir="/x")


def test_cli_missing_data_set_exits_1_with_the_install_command(tmp_path, capsys):
    argv = ["compare", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path)]
    argv += ["--steps", "2", "--seeds", "1", "--checkpoints", "1"]
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--no-progress", "--out", str(tmp_path / "out")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and "Traceback" not in err


def test_cli_data_dir_only_with_fashion_mnist(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["compare", "--dataset", "digits", "--data-dir", "/x"])
    assert exc.value.code == 2
    assert "--data-dir is an option of --dataset fashion-mnist only" in capsys.readouterr().err


def test_cli_trains_on_fashion_mnist_files(tmp_path):
    fake_fashion(tmp_path / "fm", gz=True, n_train=64, n_test=20)
    out = tmp_path / "out"
    argv = ["compare", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "fm"), "--steps", "2"]
    argv += ["--seeds", "1", "--checkpoints", "1", "--batch-size", "16", "--width", "16", "--depth", "1"]
    argv += ["--patch", "7", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0
    assert (out / "results.json").is_file() and (out / "compare.png").is_file()


def test_the_real_files_when_installed():
    """Debian's dataset-fashion-mnist (or $MIMETIC_JAX_DATA): 60,000 + 10,000 balanced images; skipped if absent."""
    try:
        data = load_fashion_mnist()
    except DatasetNotFoundError as err:
        pytest.skip(str(err))
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(data.y_train).tolist() == [6000] * 10 and np.bincount(data.y_test).tolist() == [1000] * 10
    assert data.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the published first labels
