"""``mimetic-jax compare --model convmixer --schemes ...`` (conv and MLP schemes on the command line)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mimetic_jax.experiments.cli import UsageError, main, parse_schemes


@pytest.mark.slow
def test_compare_convmixer_with_conv_and_mlp_schemes(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "compare",
            "--model",
            "convmixer",
            "--schemes",
            "conv,mlp",
            "--steps",
            "4",
            "--seeds",
            "1",
            "--checkpoints",
            "1",
            "--width",
            "8",
            "--depth",
            "1",
            "--batch-size",
            "32",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "ConvMixer C=8 L=1 on digits: default vs mimetic init (conv + mlp)" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["schemes"] == ["conv", "mlp"] and results["config"]["model"] == "convmixer"
    assert "heads" not in results["config"] and "method" not in results["config"]  # no attention in a ConvMixer
    assert np.asarray(results["mimetic"]["per_seed"]).shape == (1, 1)
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert "| 4 |" in (out / "results.md").read_text()


def test_parse_schemes_defaults_and_errors():
    assert parse_schemes(None, "vit") == ("attention",)
    assert parse_schemes("mlp, conv,mlp", "convmixer") == ("mlp", "conv")
    with pytest.raises(UsageError, match="--schemes for --model convmixer must be a comma-separated subset of"):
        parse_schemes("attention", "convmixer")
    with pytest.raises(UsageError, match="got ','"):
        parse_schemes(",", "vit")


def test_bad_scheme_exits_nonzero(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["compare", "--model", "vit", "--schemes", "conv", "--out", str(tmp_path)])
    assert err.value.code == 2 and "--schemes" in capsys.readouterr().err
