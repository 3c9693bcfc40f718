"""Tests of the ``mimetic-jax`` command line (mimetic_jax.cli)."""
from __future__ import annotations

import json
import runpy
import sys

import numpy as np
import pytest

from mimetic_jax.cli import main, parse_patch

TINY = ["--width", "16", "--depth", "1", "--heads", "2", "--batch-size", "32", "--no-progress"]


@pytest.mark.slow
def test_compare_end_to_end(tmp_path, capsys):
    pytest.importorskip("mimetic_jax.transforms")
    out = tmp_path / "run"
    code = main(["compare", "--steps", "20", "--seeds", "1", "--checkpoints", "2", *TINY, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "default" in printed and "mimetic" in printed and "mimetic - default" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == [10, 20]
    assert results["seeds"] == [0]
    assert np.asarray(results["default"]["test_accuracy"]).shape == (1, 2)
    assert np.asarray(results["mimetic"]["test_accuracy"]).shape == (1, 2)
    assert len(results["difference"]["mean"]) == 2
    assert results["config"]["patch"] == [2, 2] and results["config"]["dataset"] == "digits"
    png = (out / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("task", ["copying", "mqar"])
def test_compare_sequence_task_end_to_end(task, tmp_path, capsys):
    out = tmp_path / task
    code = main(["compare", "--task", task, "--steps", "4", "--seeds", "1", "--checkpoints", "2", "--width", "16",
                 "--depth", "1", "--state", "4", "--no-progress", "--out", str(out)])
    assert code == 0
    assert "mimetic - default" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == [2, 4] and results["config"]["lr"] == 3e-3 and results["config"]["batch_size"] == 32
    assert np.asarray(results["mimetic"]["test_accuracy"]).shape == (1, 2)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["compare", "--task", "sorting"],
        ["compare", "--task", "mqar", "--state", "100", "--width", "16"],
        ["compare", "--task", "mqar", "--model", "convmixer"],
        ["compare", "--task", "copying", "--schemes", "conv"],
        ["train"],
        ["compare", "--seeds", "0"],
        ["compare", "--steps", "-5"],
        ["compare", "--dataset", "cifar10"],
        ["compare", "--method", "slow"],
        ["compare", "--lr", "0"],
        ["compare", "--patch", "2x"],
        ["compare", "--patch", "3"],  # does not divide 8x8
        ["compare", "--width", "30"],
        ["compare", "--warmup-steps", "400"],
    ],
)
def test_bad_options_exit_nonzero(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path)] if argv[:1] == ["compare"] else argv)
    assert exc.value.code != 0
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--dataset", "--seeds", "--steps", "--width", "--depth", "--heads", "--patch", "--lr",
                   "--batch-size", "--method", "--out", "--checkpoints"):
        assert option in text


def test_python_dash_m_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["mimetic_jax", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("mimetic_jax", run_name="__main__")
    assert exc.value.code == 0 and "compare" in capsys.readouterr().out


def test_parse_patch():
    assert parse_patch("2", "digits") == (2, 2)
    assert parse_patch("4", "mnist1d") == (1, 4)
    assert parse_patch("1x5", "mnist1d") == (1, 5)
    assert parse_patch("2X4", "digits") == (2, 4)
    for bad in ("", "x", "0", "2x0", "1x2x3", "a"):
        with pytest.raises(ValueError, match="--patch"):
            parse_patch(bad, "digits")
