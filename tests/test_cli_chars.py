"""Tests of ``mimetic-jax compare --task chars`` (mimetic_jax.experiments.cli_chars), on a tiny text in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mimetic_jax.experiments.cli import build_parser, main, resolve_options
from mimetic_jax.experiments.text import ENV_VAR, INSTALL

TEXT = "O Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name.\n" * 40


def test_chars_gets_its_own_defaults_and_rejects_other_tasks_options():
    parser = build_parser()
    a = resolve_options(parser.parse_args(["compare", "--task", "chars"]))
    assert (a.lr, a.batch_size, a.depth, a.heads, a.method, a.context) == (3e-3, 32, 2, 4, "exact", 64)
    assert a.data_dir is None and a.dataset is None and a.state is None
    for argv, flag in (
        (["--task", "chars", "--state", "4"], "--state"),
        (["--task", "chars", "--dataset", "digits"], "--dataset"),
        (["--context", "32"], "--context is an option of --task chars only"),
        (["--task", "mqar", "--data-dir", "x"], "--data-dir is an option of --task image, chars only"),
    ):
        with pytest.raises(ValueError, match=flag):
            resolve_options(parser.parse_args(["compare", *argv]))


def test_a_missing_corpus_exits_2_with_the_install_command_and_no_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    out = subprocess.run(
        [sys.executable, "-m", "mimetic_jax", "compare", "--task", "chars", "--data-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert INSTALL in out.stderr and "--data-dir" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_compare_chars_end_to_end_reports_bits_per_character(tmp_path, capsys):
    (tmp_path / "play.txt").write_text(TEXT)
    out = tmp_path / "run"
    argv = ["compare", "--task", "chars", "--data-dir", str(tmp_path / "play.txt"), "--steps", "6", "--seeds", "2"]
    argv += ["--checkpoints", "2", "--width", "16", "--depth", "1", "--heads", "2", "--context", "16"]
    assert main([*argv, "--batch-size", "8", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| step | default (bits/char) | mimetic (bits/char) | mimetic − default (bits/char) |" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "chars" and results["unit"] == "bits/char" and results["steps"] == [3, 6]
    bpc = np.asarray(results["default"]["per_seed"])
    vocab = len(set(TEXT))
    assert bpc.shape == (2, 2) and (bpc > 0).all() and (bpc < 2 * np.log2(vocab)).all()  # bits, not percent
    np.testing.assert_allclose(
        np.asarray(results["difference"]["per_seed"]),
        np.asarray(results["mimetic"]["per_seed"]) - bpc,
        rtol=1e-6,
    )
    assert results["config"]["vocab_size"] == vocab and "dataset" not in results["config"]
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
