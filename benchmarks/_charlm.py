"""Shared part of the Shakespeare character-level benchmarks (``shakespeare_transformer.py``, ``shakespeare_mamba.py``).

One protocol for both: the corpus (``mimetic_jax.experiments.text.load_corpus``: the
``shakespeare`` package, or ``--data-dir``), ``steps × batch`` training windows of
``context`` characters drawn once from seed 0 (each seen once, the same for every model),
256 fixed validation windows spread over the last 10 % of the text. For each seed ``s``,
``jax.random.key(s)`` splits into an init key, a mimetic key and a data key: every init of
the seed starts from the same ``model.init(init_key)`` draw (an init only re-draws what its
scheme changes, with ``mimetic_key``) and sees the same minibatches in the same order (the data
key). All inits × seeds of one model train in one vmapped
``mimetic_jax.experiments.training.train_models`` program (AdamW, weight decay 0.05 on
kernels and embeddings, warm-up 10 %, cosine to 0). Reported: validation bits per character
(mean cross-entropy over all ``256 × context`` validation characters / ln 2) at every
checkpoint; per checkpoint, each init against ``default``: the paired difference (bits,
negative = better), its 95 % confidence interval (Student t) and the paired t-test
(``training.paired_stats``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import _report
import jax
import jax.numpy as jnp
import numpy as np
from training import paired_stats

from mimetic_jax.experiments.text import CorpusNotFound, bits_per_char, char_dataset, load_corpus
from mimetic_jax.experiments.training import checkpoint_steps, stack_trees, train_models

#: init name -> transform ``(variables, key) -> variables`` (None: the model's default init), or
#: ``(base, fn)``: ``fn(variables)`` applied to init ``base``'s parameters of the same seed.
Inits = dict[str, Callable | tuple[str, Callable] | None]


def add_common_args(p) -> None:
    p.add_argument("--data-dir", default=None, help="a .txt file or folder (default: the shakespeare package)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="seed pairs (default 10; quick 2)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--context", type=int, default=None, help="characters per window")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--checkpoints", type=int, default=None, help="validation evaluations, evenly spaced")


def load_data(args, context: int, num_train: int):
    """The corpus and its windows; a missing corpus ends the script with the install message."""
    try:
        corpus = load_corpus(args.data_dir)
    except CorpusNotFound as err:
        sys.exit(f"error: {err}")
    data = char_dataset(corpus, context=context, num_train=num_train, num_valid=256, seed=0)
    info = {
        "source": corpus.source,
        "train_chars": int(corpus.train.size),
        "valid_chars": int(corpus.valid.size),
        "vocab_size": corpus.vocab_size,
        "train_windows": int(data.x_train.shape[0]),
        "valid_windows": int(data.x_test.shape[0]),
    }
    return data, info


def _train_group(model, data, inits: Inits, seeds: list[int], cfg: dict):
    """One vmapped program: every init of ``inits`` for every seed of ``seeds``; returns the history."""
    init = jax.jit(model.init)
    sample = jnp.asarray(data.x_train[:1])
    trees, keys = [], []
    made: dict[tuple[str, int], object] = {}
    for name, transform in inits.items():
        for seed in seeds:
            init_key, mimetic_key, data_key = jax.random.split(jax.random.key(seed), 3)
            if transform is None:
                params = init(init_key, sample)
            elif isinstance(transform, tuple):
                params = transform[1](made[transform[0], seed])
            else:
                params = transform(init(init_key, sample), mimetic_key)
            made[name, seed] = params
            trees.append(params)
            keys.append(data_key)  # the same data order for every init of a seed
    return train_models(
        model.apply,
        stack_trees(trees),
        jnp.stack(keys),
        data,
        steps=cfg["steps"],
        learning_rate=cfg["lr"],
        batch_size=cfg["batch_size"],
        eval_steps=(0, *checkpoint_steps(cfg["steps"], cfg["checkpoints"])),
        eval_batch_size=cfg.get("eval_batch_size", 256),
    )


def train_inits(model, data, inits: Inits, seeds: list[int], cfg: dict) -> dict:
    """Train every init over ``seeds``, paired; bits per character per checkpoint.

    All inits × seeds train in one vmapped program, or, with ``cfg["seeds_per_program"]``, in
    programs of that many seeds each (less memory; a pair always shares a program and results
    do not depend on the grouping).
    """
    group = cfg.get("seeds_per_program") or len(seeds)
    n_inits = len(inits)
    parts = [seeds[i : i + group] for i in range(0, len(seeds), group)]
    histories = [_train_group(model, data, inits, part, cfg) for part in parts]
    steps = histories[0].steps

    def per_init(field: str, k: int) -> np.ndarray:  # (seeds, checkpoints) of init k, seeds in order
        return np.concatenate(
            [
                np.asarray(getattr(h, field)).reshape(n_inits, len(p), -1)[k]
                for h, p in zip(histories, parts, strict=True)
            ]
        )

    out: dict = {"steps": steps.tolist(), "seconds": sum(h.seconds for h in histories), "inits": {}}
    for k, name in enumerate(inits):
        out["inits"][name] = {
            "bpc": bits_per_char(per_init("test_loss", k)).tolist(),
            "accuracy": per_init("test_accuracy", k).tolist(),
            "train_loss_last": per_init("train_loss", k)[:, -1].tolist(),
        }
    base = np.asarray(out["inits"]["default"]["bpc"])
    out["paired_vs_default"] = {
        name: [paired_stats(base[:, c], np.asarray(r["bpc"])[:, c]) for c in range(base.shape[1])]
        for name, r in out["inits"].items()
        if name != "default"
    }
    _report.log(
        f"  {out['seconds']:.0f} s; final bpc "
        + ", ".join(f"{k} {np.mean(np.asarray(v['bpc'])[:, -1]):.4f}" for k, v in out["inits"].items())
    )
    return out


def _pm(a) -> str:
    a = np.asarray(a, dtype=float)
    return _report.fmt_pm(a.mean(), a.std(ddof=1) if a.size > 1 else 0.0, 3)


def _diff(s: dict) -> list[str]:
    ci = "—" if s["ci95"] is None else f"[{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]"
    p = "—" if s["p"] is None else f"{s['p']:.2g}"
    return [f"{s['diff_mean']:+.3f}", ci, p, f"{s['losses']}/{s['n']}"]


def markdown_block(label: str, r: dict) -> str:
    """Tables of one model: bits per character per checkpoint, then the paired differences."""
    steps = r["steps"]
    rows = [[name, *(_pm(np.asarray(v["bpc"])[:, c]) for c in range(len(steps)))] for name, v in r["inits"].items()]
    parts = [
        f"## {label} ({r['seconds']:.0f} s for all models)",
        "Validation bits per character, mean ± std over seeds (ddof=1):\n\n"
        + _report.md_table(["init", *(f"step {s}" for s in steps)], rows),
    ]
    diff_rows = [
        [name, steps[c], *_diff(stats[c])] for name, stats in r["paired_vs_default"].items() for c in range(len(steps))
    ]
    parts.append(
        "Paired difference init − default (bits per character; negative = better), 95 % CI (Student t), "
        "paired t-test p, seeds where the init is better:\n\n"
        + _report.md_table(["init", "step", "Δ bpc", "95 % CI", "p", "better"], diff_rows)
    )
    return "\n\n".join(parts)


def budget_text(cfg: dict, wall_s: float | None, cpu_s: float | None = None) -> str:
    wall = "" if wall_s is None else f"; whole script {wall_s / 60:.1f} min wall"
    wall += "" if cpu_s is None else f", {cpu_s / 60:.1f} min of CPU time (both cores together)"
    return (
        f"Budget: {cfg['steps']} steps × batch {cfg['batch_size']} × context {cfg['context']} characters, "
        f"{cfg['seeds']} seeds per init{wall} on this machine (2-core CPU, shared with other jobs, "
        "run under `nice`)."
    )


def plot(results: dict, path, title: str) -> None:
    """Per model: bits per character vs step (mean ± std band) and the paired difference with its 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.8 * len(results)), squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for row, (label, r) in enumerate(results.items()):
        steps = np.asarray(r["steps"])
        ax, dax = axes[row]
        for color, (name, v) in zip(colors, r["inits"].items(), strict=False):
            b = np.asarray(v["bpc"])
            keep = steps > 0  # step 0 (about log2 V) would flatten the curves
            mean, std = b.mean(axis=0)[keep], b.std(axis=0, ddof=1)[keep] if b.shape[0] > 1 else 0 * b[0][keep]
            ax.plot(steps[keep], mean, marker="o", ms=3, color=color, label=name)
            ax.fill_between(steps[keep], mean - std, mean + std, color=color, alpha=0.2, lw=0)
        ax.set(xlabel="training step", ylabel="validation bits / char", title=f"{label}: mean ± std")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        for k, (color, (name, stats)) in enumerate(zip(colors[1:], r["paired_vs_default"].items(), strict=False)):
            mean = np.array([s["diff_mean"] for s in stats])
            lo = np.array([s["ci95"][0] if s["ci95"] else s["diff_mean"] for s in stats])
            hi = np.array([s["ci95"][1] if s["ci95"] else s["diff_mean"] for s in stats])
            x = steps + (k - 0.5) * 0.01 * max(steps.max(), 1)
            dax.errorbar(x, mean, yerr=[mean - lo, hi - mean], marker="o", ms=3, capsize=3, color=color, label=name)
        dax.axhline(0.0, color="black", lw=0.8, ls="--")
        dax.set(
            xlabel="training step",
            ylabel="init − default (bits / char)",
            title="paired difference, 95 % CI (negative = better)",
        )
        dax.grid(alpha=0.3)
        dax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_path(run) -> object:
    """``results/NAME[.quick].png`` beside the run's JSON and markdown."""
    _report.RESULTS.mkdir(parents=True, exist_ok=True)
    return _report.RESULTS / (f"{run.name}.quick.png" if run.quick else f"{run.name}.png")
