"""Mimetic SSM init on copying and MQAR: default vs mimetic vs each part alone, paired seeds.

What it measures: masked-token test accuracy (and the fraction of test sequences with
every answer right) of a small Mamba language model (``mimetic_jax.experiments.models.MambaLM``:
``--layers`` layers, ``d_model``, state ``N``; Mamba-1 by default, ``--versions 1 2``
for both) trained with

* ``default``: Mamba's own init (``A_log = log(1..N)``, ``Δ ~ logU[1e-3, 1e-1]``, ...);
* ``mimetic``: ``mimetic_ssm(params, key)`` with the package defaults (transition + B/C);
* ``mimetic+conv``: the same plus the identity short conv on every channel;
* ``mimetic+bcconv`` / ``mimetic-noconv``: identity conv on Mamba-2's B/C channels only / conv untouched;
* ``transition``, ``bc``, ``conv``: each part alone (``mimetic_ssm(..., transition=…, bc=…, conv=…)``).

``--sweep`` trains the inits of :data:`SWEEP` instead: the package default against one
option changed at a time (α/β of the B/C product, the ``A_log`` range, Δ), each also paired
against ``mimetic``; that sweep set the defaults of ``mimetic_ssm`` (README).

All inits of a seed start from the same ``model.init`` parameters (only the re-initialized
leaves differ) and see the same minibatches in the same order; all models of a
configuration train in one vmapped ``mimetic_jax.experiments.training.train_models`` program (AdamW,
weight decay 0.05 on kernels, linear warm-up 10 %, cosine to 0, the masked loss), at equal
steps. Training data: ``steps × batch`` fresh examples (each seen once), test: 512 others.

Tasks (``mimetic_jax.experiments.tasks``): copying ``n`` tokens (vocabulary 16) for ``n`` in
``--copy-lengths``; MQAR (sequence length 64, 8 pairs, vocabulary 64) for the state sizes
``--mqar-states``.

Also: training step time (jitted forward + backward + AdamW, one model, batch 32) of the
reference Mamba-1 and Mamba-2 blocks at two sizes.

Run: ``python benchmarks/ssm_recall.py [--quick]`` (full run: ~6 min on one H200; on the
2-core CPU box use ``--quick`` or fewer configurations).
"""

from __future__ import annotations

import _report
import jax
import jax.numpy as jnp
import numpy as np
import optax
from training import paired_stats

from mimetic_jax.experiments.models import MambaLM
from mimetic_jax.experiments.tasks import sequence_dataset
from mimetic_jax.experiments.training import checkpoint_steps, cross_entropy, make_optimizer, stack_trees, train_models
from mimetic_jax.ssm import mimetic_ssm

#: init name -> mimetic_ssm options (None: the model's default init).
INITS: dict[str, dict | None] = {
    "default": None,
    "mimetic": {},
    "mimetic+conv": {"conv": True},
    "mimetic+bcconv": {"conv": "bc"},
    "mimetic-noconv": {"conv": False},
    "transition": {"transition": True, "bc": False},
    "bc": {"transition": False, "bc": True},
    "conv": {"transition": False, "bc": False, "conv": True},
}

#: ``--sweep``: the package default (``mimetic``) against one option changed at a time, to
#: pick the defaults of ``mimetic_ssm`` (α/β of the B/C product, the ``A_log`` range, Δ).
SWEEP: dict[str, dict | None] = {
    "default": None,
    "mimetic": {},
    "alpha0.3-beta1": {"alpha": 0.3, "beta": 1.0},
    "alpha1-beta0.3": {"alpha": 1.0, "beta": 0.3},
    "alpha0.4-beta0.4": {"alpha": 0.4, "beta": 0.4},
    "alpha1-beta1": {"alpha": 1.0, "beta": 1.0},
    "alog-10:-6": {"a_log_range": (-10.0, -6.0)},
    "alog-6:-2": {"a_log_range": (-6.0, -2.0)},
    "alog-4:-1": {"a_log_range": (-4.0, -1.0)},
    "alog-3:0": {"a_log_range": (-3.0, 0.0)},
    "delta0.1": {"delta": 0.1},
    "delta3": {"delta": 3.0},
}
OPTIONS = {**INITS, **SWEEP}


def pairs_with_mimetic(inits) -> bool:
    """Whether a run also pairs each init against ``mimetic`` (the package defaults): when it trains
    ``mimetic`` and some other option (a sweep, or a part such as ``mimetic+bcconv``)."""
    return "mimetic" in inits and any(name not in ("default", "mimetic") for name in inits)


def _extra(p) -> None:
    p.add_argument("--tasks", nargs="+", choices=("copying", "mqar"), default=["copying", "mqar"])
    p.add_argument("--versions", nargs="+", type=int, choices=(1, 2), default=[1])
    p.add_argument("--copy-lengths", nargs="+", type=int, default=None, help="tokens to copy (default 16 32)")
    p.add_argument("--mqar-states", nargs="+", type=int, default=None, help="state sizes for MQAR (default 8 32)")
    p.add_argument("--copy-state", type=int, default=8, help="state size for copying")
    p.add_argument("--copy-steps", type=int, default=None, help="default 800 (quick 30)")
    p.add_argument("--mqar-steps", type=int, default=None, help="default 2000 (quick 30)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per init (default 3; quick 2)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--d-model", type=int, default=None, help="default 64 (quick 32)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument(
        "--scan",
        choices=("parallel", "sequential", "quadratic"),
        default="parallel",
        help="the blocks' scan (same results; on CPU sequential is the faster one for Mamba-1, quadratic, "
        "the SSD L×L form, for Mamba-2; Mamba-1 runs sequential when quadratic is asked for)",
    )
    p.add_argument(
        "--inits",
        nargs="+",
        choices=list(OPTIONS),
        default=None,
        help=f"default: {' '.join(INITS)}; --sweep: {' '.join(SWEEP)}",
    )
    p.add_argument("--sweep", action="store_true", help="the option sweep (SWEEP) instead of the parts (INITS)")
    p.add_argument("--no-timing", action="store_true", help="skip the step-time measurement")


def exact_sequences(model, params_stack, data) -> np.ndarray:
    """Fraction of test sequences with every answer position right, per model."""
    x, y = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    def one(p):
        preds = jnp.argmax(model.apply(p, x), axis=-1)
        return jnp.mean(jnp.all((preds == y) | (y < 0), axis=1))

    return np.asarray(jax.jit(jax.vmap(one))(params_stack))


def run_config(model, data, inits, seeds, steps, cfg) -> dict:
    init = jax.jit(model.init)
    sample = jnp.asarray(data.x_train[:1])
    trees, keys = [], []
    for name in inits:
        for seed in seeds:
            init_key, mimetic_key, data_key = jax.random.split(jax.random.key(seed), 3)
            params = init(init_key, sample)
            if OPTIONS[name] is not None:
                params = mimetic_ssm(params, mimetic_key, config=model, **OPTIONS[name])
            trees.append(params)
            keys.append(data_key)  # the same data order for every init of a seed
    history = train_models(
        model.apply,
        stack_trees(trees),
        jnp.stack(keys),
        data,
        steps=steps,
        learning_rate=cfg["lr"],
        batch_size=cfg["batch_size"],
        eval_steps=checkpoint_steps(steps, 4),
        eval_batch_size=512,
    )
    exact = exact_sequences(model, history.params, data)
    n = len(seeds)
    out = {"steps": history.steps.tolist(), "seconds": history.seconds, "inits": {}}
    for i, name in enumerate(inits):
        out["inits"][name] = {
            "accuracy": history.test_accuracy[i * n : (i + 1) * n].tolist(),
            "final_loss": history.train_loss[i * n : (i + 1) * n, -1].tolist(),
            "exact": exact[i * n : (i + 1) * n].tolist(),
        }
    if "default" in inits:
        base = np.asarray(out["inits"]["default"]["accuracy"])[:, -1]
        out["paired_vs_default"] = {
            name: paired_stats(base, np.asarray(r["accuracy"])[:, -1])
            for name, r in out["inits"].items()
            if name != "default"
        }
    if pairs_with_mimetic(inits):  # each option against the package default too
        base = np.asarray(out["inits"]["mimetic"]["accuracy"])[:, -1]
        out["paired_vs_mimetic"] = {
            name: paired_stats(base, np.asarray(r["accuracy"])[:, -1])
            for name, r in out["inits"].items()
            if name not in ("default", "mimetic")
        }
    return out


def step_time(version: int, d_model: int, length: int, d_state: int, batch: int, repeats: int) -> dict:
    model = MambaLM(vocab_size=64, d_model=d_model, n_layer=2, d_state=d_state, version=version)
    x = jax.random.randint(jax.random.key(0), (batch, length), 0, 64)
    params = model.init(jax.random.key(1), x)
    opt = make_optimizer(1e-3, 100, warmup_steps=10)
    state = opt.init(params)

    def step(params, state, x):
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(model.apply(p, x), x))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    t = _report.time_jit(step, params, state, x, repeats=repeats)
    n_params = sum(int(np.size(v)) for v in jax.tree.leaves(params))
    return {
        "version": version,
        "d_model": d_model,
        "length": length,
        "d_state": d_state,
        "batch": batch,
        "params": n_params,
        **t,
    }


def _acc_cell(a: list, digits: int = 1) -> str:
    a = 100 * np.asarray(a, dtype=float)
    return _report.fmt_pm(a.mean(), a.std(ddof=1) if a.size > 1 else 0.0, digits)


def _paired_cells(s: dict | None) -> list[str]:
    if s is None:
        return ["—", "—", "—"]
    return [f"{100 * s['diff_mean']:+.1f}", "—" if s["p"] is None else f"{s['p']:.2g}", f"{s['wins']}/{s['n']}"]


def markdown(cfg: dict, results: dict, timing: list) -> str:
    parts = [
        f"Mamba LM, {cfg['layers']} layers, d_model {cfg['d_model']}, expand 2, conv 4 (Mamba-2: headdim 16, 1 group); "
        f"AdamW lr {cfg['lr']:g} (wd 0.05 on kernels, warm-up 10 %, cosine to 0), batch {cfg['batch_size']}, "
        f"{cfg['seeds']} seeds per init, paired (same base parameters and data order per seed). "
        "Accuracy = masked-token test accuracy in %, mean ± std over seeds (ddof=1); exact = % of test sequences "
        "with every answer right; Δ = paired difference to default at the final step (percentage points), "
        "p = paired t-test, W = seeds where the init beats default"
        + (
            "; Δ vs mimetic, p, W: the same against `mimetic` (the package defaults)."
            if pairs_with_mimetic(cfg["inits"])
            else "."
        )
    ]
    for label, r in results.items():
        rows = []
        for name, v in r["inits"].items():
            acc = np.asarray(v["accuracy"])
            cells = [_acc_cell(acc[:, c]) for c in range(acc.shape[1])]
            row = [name, *cells, _acc_cell(v["exact"]), *_paired_cells(r.get("paired_vs_default", {}).get(name))]
            if "paired_vs_mimetic" in r:
                row += _paired_cells(r["paired_vs_mimetic"].get(name))
            rows.append(row)
        head = ["init", *[f"acc @ {s}" for s in r["steps"]], "exact @ end", "Δ", "p", "W"]
        if "paired_vs_mimetic" in r:
            head += ["Δ vs mimetic", "p", "W"]
        parts.append(f"## {label} ({r['seconds']:.0f} s for all models)\n\n" + _report.md_table(head, rows))
    if timing:
        rows = [
            [
                f"Mamba-{t['version']}",
                t["d_model"],
                t["d_state"],
                t["length"],
                t["batch"],
                t["params"],
                _report.fmt_s(t["compile_s"]),
                f"{1e3 * t['median_s']:.2f}",
            ]
            for t in timing
        ]
        parts.append(
            "## Training step time (jitted forward + backward + AdamW, 2 layers, one model)\n\n"
            + _report.md_table(
                ["block", "d_model", "N", "length", "batch", "params", "compile (s)", "step (ms, median)"], rows
            )
        )
    return "\n\n".join(parts)


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    cfg = {
        "tasks": args.tasks,
        "versions": args.versions,
        "inits": args.inits or list(SWEEP if args.sweep else INITS),
        "copy_lengths": args.copy_lengths or ([8] if q else [16, 32]),
        "mqar_states": args.mqar_states or ([8] if q else [8, 32]),
        "copy_state": args.copy_state,
        "copy_steps": args.copy_steps or (30 if q else 800),
        "mqar_steps": args.mqar_steps or (30 if q else 2000),
        "seeds": args.seeds or (2 if q else 3),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "d_model": args.d_model or (32 if q else 64),
        "layers": args.layers,
        "scan": args.scan,
    }
    run = _report.Run("ssm_recall", "Mimetic SSM init on copying and MQAR, paired seeds", args)
    results: dict = {}
    timing: list = []
    run.data.update({"config": cfg, "results": results, "timing": timing})
    run.partial_markdown = lambda: markdown(cfg, results, timing)
    seeds = list(range(cfg["seeds"]))
    for version in cfg["versions"]:
        for task in cfg["tasks"]:
            if task == "copying":
                configs = [
                    (
                        f"copying {n} tokens, N {cfg['copy_state']}",
                        cfg["copy_state"],
                        cfg["copy_steps"],
                        {"num_tokens": n, "vocab_size": 16},
                    )
                    for n in cfg["copy_lengths"]
                ]
            else:
                configs = [
                    (
                        f"MQAR L 64, 8 pairs, N {n}",
                        n,
                        cfg["mqar_steps"],
                        {"seq_len": 64, "num_pairs": 8, "vocab_size": 64},
                    )
                    for n in cfg["mqar_states"]
                ]
            for label, d_state, steps, opts in configs:
                label = f"Mamba-{version}, {label}, {steps} steps"
                run.stage(label)
                data = sequence_dataset(
                    task, seed=100 + d_state, num_train=steps * cfg["batch_size"], num_test=512, **opts
                )
                model = MambaLM(
                    vocab_size=data.num_classes,
                    d_model=cfg["d_model"],
                    n_layer=cfg["layers"],
                    d_state=d_state,
                    version=version,
                    scan="sequential" if cfg["scan"] == "quadratic" and version == 1 else cfg["scan"],
                )
                r = results[label] = run_config(model, data, cfg["inits"], seeds, steps, cfg)
                _report.log(
                    f"  {r['seconds']:.0f} s; final acc "
                    + ", ".join(
                        f"{k} {100 * np.mean(np.asarray(v['accuracy'])[:, -1]):.1f}" for k, v in r["inits"].items()
                    )
                )
                run.finish(markdown(cfg, results, timing))
    if not args.no_timing:
        run.stage("step time")
        sizes = [(32, 32, 8)] if q else [(64, 64, 16), (256, 256, 16)]
        for version in (1, 2):
            for d_model, length, d_state in sizes:
                timing.append(step_time(version, d_model, length, d_state, 32, 3 if q else 20))
                _report.log(f"  Mamba-{version} d {d_model} L {length}: {1e3 * timing[-1]['median_s']:.2f} ms")
    run.finish(markdown(cfg, results, timing))
    print(markdown(cfg, results, timing))


if __name__ == "__main__":
    main()
