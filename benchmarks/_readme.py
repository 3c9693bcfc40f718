"""Write the README's "Results at a glance" block from ``benchmarks/results/*.json``.

``python benchmarks/_readme.py`` rewrites the block of ``README.md`` between ``<!-- results:begin -->``
and ``<!-- results:end -->``; ``--check`` only says whether it is current (exit status 1 if not),
which ``tests/test_figures.py`` also asserts. Every figure in the block is a reference resolved by
``benchmarks/_figures.py`` (``{fig}`STEM:PATH#FORMAT```), so a result file changed or replaced
changes the README when this script runs, and a README edited by hand fails the test.

A row of the table is one entry of :data:`ROWS`: the scheme, what training shows, what the init
costs. Adding a result to the README is one line there; the block then lists the file with its
machine, versions and date below the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _figures as figures

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def paired(stem: str, arm: str, base: str, col: int = -1) -> str:
    """A paired difference of two arms' per-seed accuracy (seeds × checkpoints), column ``col``, in pp."""
    d = f"{stem}:{arm}~minus:{base}~col:{col}"
    return f"{{fig}}`{d}~mean#%+.1f±` pp (n {{fig}}`{d}~n`, p {{fig}}`{d}~p#.2g`)"


def final(stem: str, part: str, what: str = "final") -> str:
    """A training benchmark's paired result (``diff_mean ± diff_std`` pp, p) at ``part/<what>``."""
    p = f"{stem}:{part}/{what}/"
    return f"{{fig}}`{p}diff_mean#%+.1f±` pp (n {{fig}}`{p}n`, p {{fig}}`{p}p#.2g`)"


def bits(stem: str, config: str, i: int) -> str:
    """A language benchmark's paired difference of validation bits per character (mimetic − default) at checkpoint ``i``."""
    p = f"{stem}:results/{config}/paired_vs_default/mimetic/[{i}]/"
    return f"{{fig}}`{p}diff_mean#+.3f±` (n {{fig}}`{p}n`, p {{fig}}`{p}p#.2g`)"


def emergence(alpha: str) -> str:
    p = f"emergence:summary/paired_vs_alpha1/{alpha}/final/"
    return f"{{fig}}`{p}mean#%+.1f` pp (n {{fig}}`{p}n`, p {{fig}}`{p}p#.2g`)"


def ratio(stem: str, model: str, arm: str, spec: str = ".2f") -> str:
    """A whole-model init's steady-state time over the default init's (``init_cost.py``)."""
    return f"{{fig}}`{stem}:models/[model={model}]/ratio_{arm}_steady#{spec}`×"


SSM = "results/{task}/paired_vs_default/mimetic"
CONV = "results/convmixer/acc/"
FUSE = "datasets/{d}/{k}/"

#: (scheme, does it train better?, init cost against the default init). ``{fig}``/``{src}``
#: references are resolved from the result files; everything else is prose.
ROWS: list[tuple[str, str, str]] = [
    (
        "mimetic self-attention",
        "ViT on Fashion-MNIST, end: `exact` "
        + paired("fashion_mnist_vit", "results/acc/exact", "results/acc/default")
        + ", `fast` "
        + paired("fashion_mnist_vit", "results/acc/fast", "results/acc/default")
        + "; on digits "
        + final("training", "datasets/digits/main")
        + "; Shakespeare characters, bits/char at step 60: "
        + bits("shakespeare_transformer", "DecoderLM d 64, 2 blocks, context 64, 300 steps", 1)
        + ", end: "
        + bits("shakespeare_transformer", "DecoderLM d 64, 2 blocks, context 64, 300 steps", -1),
        "`fast`: ViT-B/16 "
        + ratio("init_cost", "ViT-B/16", "fast")
        + ", GPT-2-medium "
        + ratio("init_cost", "GPT-2-medium", "fast")
        + " (CPU); ViT-B/16 "
        + ratio("init_cost.gpu", "ViT-B/16", "fast")
        + " (H200); `exact`: ViT-B/16 "
        + ratio("init_cost_exact", "ViT-B/16", "exact", ".0f")
        + " (CPU)",
    ),
    (
        "covariance depthwise filters",
        "ConvMixer on Fashion-MNIST, end: "
        + paired("fashion_mnist_convmixer", "results/acc/covariance", "results/acc/default")
        + "; frozen filters "
        + paired("fashion_mnist_convmixer", "results/acc/covariance, frozen", "results/acc/default, frozen"),
        "18 ConvNeXt-T layers: {fig}`conv_init_cost:layers/covariance/median_s~div:layers/default/median_s#.2f`× (CPU), "
        "{fig}`conv_init_cost.gpu:layers/covariance/median_s~div:layers/default/median_s#.2f`× (H200)",
    ),
    (
        "MLP mean shift",
        "mean 0.1 on top of mimetic attention, ViT, step 400: "
        + paired(
            "conv_training_400steps_10seeds",
            "results/vit/acc/mimetic attention + mean",
            "results/vit/acc/mimetic attention",
        )
        + "; on the BatchNorm ConvMixer, step 133: "
        + paired("conv_training_400steps_10seeds", CONV + "default + mean", CONV + "default", 0),
        "not measured (one shifted draw)",
    ),
    (
        "mimetic SSM (Mamba)",
        "Shakespeare characters, bits/char at the end: Mamba-1 "
        + bits("shakespeare_mamba", "Mamba-1 d 64, 2 layers, context 64, 250 steps", -1)
        + ", Mamba-2 "
        + bits("shakespeare_mamba", "Mamba-2 d 64, 2 layers, context 64, 250 steps", -1)
        + "; copying 16 tokens, Mamba-1 "
        + final("ssm_recall.gpu", "results/Mamba-1, copying 16 tokens, N 8, 800 steps/paired_vs_default", "mimetic")
        + ", Mamba-2 "
        + final("ssm_recall.gpu", "results/Mamba-2, copying 16 tokens, N 8, 800 steps/paired_vs_default", "mimetic")
        + "; Mamba-2 MQAR "
        + final("ssm_recall.gpu", "results/Mamba-2, MQAR L 64, 8 pairs, N 8, 2000 steps/paired_vs_default", "mimetic")
        + "; Mamba-1 MQAR at d 128, lr 3e-3: "
        + final(
            "ssm_recall_m1mqar_d128.gpu",
            "results/Mamba-1, MQAR L 64, 8 pairs, N 16, 4000 steps/paired_vs_default",
            "mimetic",
        ),
        "not measured (a few small draws per block)",
    ),
    (
        "emergence layer scaling",
        "final accuracy against α = 1 on digits: α 1.25 " + emergence("1.25") + ", α 2 " + emergence("2"),
        "not measured (one multiply per layer)",
    ),
    (
        "FuseInit",
        "fused (data) − shallow net from random init, end of training: digits MLP "
        + paired(
            "fuse", FUSE.format(d="digits", k="mlp") + "fused-data", FUSE.format(d="digits", k="mlp") + "shallow-random"
        )
        + ", MNIST-1D CNN "
        + paired(
            "fuse",
            FUSE.format(d="mnist1d", k="cnn") + "fused-data",
            FUSE.format(d="mnist1d", k="cnn") + "shallow-random",
        ),
        "not measured",
    ),
]

INTRO = (
    "Generated from `benchmarks/results/*.json` by `python benchmarks/_readme.py` (not edited by hand). "
    "pp: percentage points of test accuracy, mimetic − default unless stated, mean ± std of the per-seed "
    "paired differences over n seeds, p of a paired t-test; init cost: steady-state time of the jitted whole-model "
    "init over the default init's. The CPU is a development machine shared with other jobs (load averages in each "
    "file). Every other configuration and the caveats: each scheme's page."
)


def block() -> str:
    """The README's results block, from the result files."""
    lines = [
        INTRO,
        "",
        "| scheme | does it train better? | init cost vs the default init | results |",
        "|---|---|---|---|",
    ]
    used: list[str] = []
    for scheme, train, cost in ROWS:
        stems = []
        for kind, arg in figures.references(train + cost):
            stem = figures.stem_of(kind, arg)
            if stem not in stems:
                stems.append(stem)
        used += [s for s in stems if s not in used]
        cells = [scheme, figures.expand(train), figures.expand(cost), ", ".join(f"`{s}`" for s in stems)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    groups: dict[str, list[str]] = {}
    for stem in used:
        where, _, date = figures.machine(stem).rpartition(", ")
        groups.setdefault(where, []).append(f"`{stem}` {date}")
    lines += ["", "Measured on: " + "; ".join(f"{where}: {', '.join(items)}" for where, items in groups.items()) + "."]
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """``text`` (the README) with its results block regenerated."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"README.md needs a {BEGIN} ... {END} block")
    return f"{head}{BEGIN}\n{block()}{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's block is not current")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print("README.md's results block is out of date: run python benchmarks/_readme.py")
            return 1
        return 0
    if new != text:
        README.write_text(new, encoding="utf-8")
        print("rewrote README.md's results block")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
