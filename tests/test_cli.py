"""Tests of the ``mimetic-jax`` command line (mimetic_jax.experiments.cli, mimetic_jax.experiments.cli_ssm)."""

from __future__ import annotations

import json
import pathlib
import runpy
import subprocess
import sys

import numpy as np
import pytest

from mimetic_jax.experiments.cli import build_parser, format_table, main, parse_patch, resolve_options, summarize

TINY_VIT = ["--width", "16", "--depth", "1", "--heads", "2", "--batch-size", "32"]
TINY_SSM = ["--width", "16", "--depth", "1", "--state", "4"]


def check_outputs(out, *, seeds: int, steps: list[int]) -> dict:
    """The three outputs of every task exist and parse; returns results.json."""
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == steps and results["seeds"] == list(range(seeds))
    for arm in ("default", "mimetic", "difference"):
        assert np.asarray(results[arm]["per_seed"]).shape == (seeds, len(steps))
        assert len(results[arm]["mean"]) == len(steps)
        assert (results[arm]["std"] is None) == (seeds == 1)  # a spread only from two seeds
    np.testing.assert_allclose(
        np.asarray(results["difference"]["per_seed"]),
        np.asarray(results["mimetic"]["per_seed"]) - np.asarray(results["default"]["per_seed"]),
    )
    assert results["machine"]["backend"] and results["machine"]["jax"]
    table = (out / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(r.split("|")[1]) for r in rows] == steps
    assert ("±" in table) == (seeds > 1)
    png = (out / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    return results


@pytest.mark.slow
def test_compare_vit_end_to_end_writes_json_table_and_figure(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["compare", "--steps", "6", "--seeds", "2", "--checkpoints", "2", *TINY_VIT, "--no-progress", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| step | default (%) | mimetic (%) | mimetic − default (pp) |" in printed
    results = check_outputs(out, seeds=2, steps=[3, 6])
    assert results["task"] == "image" and results["config"]["patch"] == [2, 2]
    assert results["config"]["dataset"] == "digits" and results["config"]["method"] == "exact"
    assert "state" not in results["config"] and "ssm_version" not in results["config"]  # only options it used
    assert (out / "results.md").read_text().split("\n\n")[-1].strip() in printed


@pytest.mark.slow
def test_compare_vit_on_mnist1d_end_to_end(tmp_path):
    pytest.importorskip("mnist1d")
    out = tmp_path / "run"
    assert (
        main(
            [
                "compare",
                "--dataset",
                "mnist1d",
                "--steps",
                "2",
                "--seeds",
                "1",
                "--checkpoints",
                "1",
                *TINY_VIT,
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = check_outputs(out, seeds=1, steps=[2])
    assert results["config"]["patch"] == [1, 4] and results["config"]["dataset"] == "mnist1d"


@pytest.mark.slow
@pytest.mark.parametrize("task", ["copying", "mqar"])
def test_compare_sequence_task_end_to_end(task, tmp_path, capsys):
    out = tmp_path / task
    code = main(
        [
            "compare",
            "--task",
            task,
            "--steps",
            "4",
            "--seeds",
            "1",
            "--checkpoints",
            "2",
            *TINY_SSM,
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mimetic − default (pp)" in printed and "±" not in printed.split("\n\n")[2]
    results = check_outputs(out, seeds=1, steps=[2, 4])
    assert results["task"] == task and results["config"]["lr"] == 3e-3 and results["config"]["batch_size"] == 32
    assert "dataset" not in results["config"] and "heads" not in results["config"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required"),
        (["compare", "--task", "sorting"], "invalid choice"),
        (["compare", "--task", "mqar", "--state", "100", "--width", "16"], "--state 100"),
        (["compare", "--task", "mqar", "--model", "convmixer"], "--model is an option of --task image only"),
        (["compare", "--task", "copying", "--schemes", "conv"], "--schemes is an option of --task image only"),
        (["compare", "--task", "copying", "--dataset", "mnist1d"], "--dataset is an option of --task image only"),
        (["compare", "--task", "mqar", "--heads", "2"], "--heads"),
        (["compare", "--task", "mqar", "--patch", "2"], "--patch"),
        (["compare", "--task", "mqar", "--method", "fast"], "--method"),
        (["compare", "--state", "4"], "--state is an option of --task copying, mqar only"),
        (["compare", "--ssm-version", "1"], "--ssm-version"),
        (["compare", "--model", "convmixer", "--heads", "2"], "--heads is an option of --model vit only"),
        (["compare", "--model", "convmixer", "--method", "fast"], "--method is an option of --model vit only"),
        (["compare", "--schemes", "mlp", "--method", "fast"], "--method chooses the attention construction"),
        (["train"], "invalid choice"),
        (["compare", "--seeds", "0"], "--seeds"),
        (["compare", "--steps", "-5"], "--steps"),
        (["compare", "--steps", "4", "--checkpoints", "5"], "--checkpoints must be at most --steps=4"),
        (["compare", "--dataset", "cifar10"], "--dataset"),
        (["compare", "--method", "slow"], "--method"),
        (["compare", "--lr", "0"], "--lr"),
        (["compare", "--weight-decay", "-1"], "--weight-decay"),
        (["compare", "--patch", "2x"], "--patch"),
        (["compare", "--patch", "3"], "--patch 3x3 must divide"),  # does not divide 8x8
        (["compare", "--width", "30"], "--width must be a multiple of 4"),
        (["compare", "--warmup-steps", "400"], "--warmup-steps"),
    ],
)
def test_bad_or_conflicting_options_exit_2_naming_the_option(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path)] if argv[:1] == ["compare"] else argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and message in err
    assert not (tmp_path / "results.json").exists()


def test_a_missing_extra_exits_1_naming_the_package_and_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # makes `import mnist1d` raise ImportError
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--dataset", "mnist1d", "--out", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "--dataset mnist1d needs the package 'mnist1d'" in err and 'pip install "mimetic_jax[experiments]"' in err
    assert "Traceback" not in err and not (tmp_path / "results.json").exists()


def test_each_task_gets_its_own_defaults():
    parser = build_parser()
    image = resolve_options(parser.parse_args(["compare"]))
    assert (image.lr, image.batch_size, image.depth, image.heads, image.method, image.schemes) == (
        1e-3,
        128,
        4,
        4,
        "exact",
        "attention",
    )
    assert image.state is None and image.ssm_version is None
    conv = resolve_options(parser.parse_args(["compare", "--model", "convmixer"]))
    assert conv.schemes == "conv" and conv.heads is None and conv.method is None
    seq = resolve_options(parser.parse_args(["compare", "--task", "copying"]))
    assert (seq.lr, seq.batch_size, seq.depth, seq.state, seq.ssm_version) == (3e-3, 32, 2, 8, 2)
    assert seq.dataset is None and seq.model is None and seq.heads is None


def test_help_describes_every_task_and_groups_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for words in (
        "ViT",
        "ConvMixer",
        "copying",
        "multi-query associative recall",
        "results.json",
        "results.md",
        "compare.png",
        "options of --task image only",
        "options of --task copying and --task mqar only",
        'pip install "mimetic_jax[experiments]"',
    ):
        assert words in text
    for option in (
        "--dataset",
        "--seeds",
        "--steps",
        "--width",
        "--depth",
        "--heads",
        "--patch",
        "--lr",
        "--batch-size",
        "--method",
        "--out",
        "--checkpoints",
        "--state",
        "--ssm-version",
        "--schemes",
    ):
        assert option in text
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "ConvMixer" in top and "Mamba" in top and "copying" in top


def test_python_dash_m_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["mimetic_jax", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("mimetic_jax", run_name="__main__")
    assert exc.value.code == 0 and "compare" in capsys.readouterr().out


def test_table_shows_a_spread_only_from_two_seeds():
    steps = np.array([5, 10])
    one = format_table(steps, np.array([[0.5, 0.6]]), np.array([[0.55, 0.7]]))
    assert "±" not in one and "| 10 | 60.00 | 70.00 | +10.00 |" in one
    two = format_table(steps, np.array([[0.5, 0.6], [0.7, 0.8]]), np.array([[0.5, 0.6], [0.9, 0.8]]))
    # std with ddof=1 over (0.5, 0.7) is 0.1414: 14.14 pp; paired difference (0, 0.2) -> +10.00 ± 14.14
    assert "| 5 | 60.00 ± 14.14 | 70.00 ± 28.28 | +10.00 ± 14.14 |" in two
    assert summarize(np.array([[0.5]]))["std"] is None


def test_parse_patch():
    assert parse_patch("2", "digits") == (2, 2)
    assert parse_patch("4", "mnist1d") == (1, 4)
    assert parse_patch("1x5", "mnist1d") == (1, 5)
    assert parse_patch("2X4", "digits") == (2, 4)
    for bad in ("", "x", "0", "2x0", "1x2x3", "a"):
        with pytest.raises(ValueError, match="--patch"):
            parse_patch(bad, "digits")


def _base_install(tmp_path, blocked: tuple[str, ...]):
    """Run ``python -m mimetic_jax compare`` with ``blocked`` unimportable, as in an install without extras.

    The packages are blocked after ``import mimetic_jax``: optax comes with flax (which imports it)
    in every install; the harness must still report it as the extra's.
    """
    argv = [
        "mimetic-jax",
        "compare",
        "--steps",
        "2",
        "--checkpoints",
        "1",
        "--seeds",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    script = (
        f"import runpy, sys, mimetic_jax\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
        f"sys.argv = {argv!r}\nrunpy.run_module('mimetic_jax', run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=pathlib.Path(__file__).resolve().parent.parent,
    )


def test_a_base_install_command_prints_which_extra_to_install(tmp_path):
    run = _base_install(tmp_path, ("optax", "sklearn", "matplotlib", "tqdm", "mnist1d"))
    assert run.returncode == 1, run.stderr
    assert 'pip install "mimetic_jax[experiments]"' in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "run").exists()


def test_a_harness_module_missing_past_the_checks_is_reported_as_the_extra(tmp_path):
    # sklearn imports, its datasets module does not: the import inside the task fails, not require().
    run = _base_install(tmp_path, ("sklearn.datasets",))
    assert run.returncode == 1, run.stderr
    assert "'sklearn'" in run.stderr and 'pip install "mimetic_jax[experiments]"' in run.stderr
    assert "Traceback" not in run.stderr
