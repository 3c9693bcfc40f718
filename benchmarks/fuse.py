"""FuseInit benchmark: a shallower net initialized by fusing two layers of a trained deeper one.

Claim tested (Ghods et al. 2020, arXiv:2001.10509): a shallower network whose two
neighbouring layers come from the MSE-optimal fusion of a trained deeper network's layers
trains better than the same shallower network from random init, sometimes as well as the
deeper one.

Protocol, per data set (scikit-learn digits, MNIST-1D) and per architecture:

* MLP: deep = Dense(W)-relu-Dense(W)-relu-Dense(W)-relu-Dense(10) on flattened pixels;
  shallow = Dense(W)-relu-Dense(W)-relu-Dense(10). Fused pair: deep Dense_1, Dense_2 →
  shallow Dense_1 (``fuse.dense_dense_from_data`` / ``fuse.dense_dense``).
* CNN: deep = 3 × [Conv(C, k, SAME)-relu] - flatten - Dense(10) (C = 8); shallow: the middle two
  convs replaced by one Conv(C, 2k-1, SAME) (``fuse.conv_conv_from_data`` /
  ``fuse.conv_conv``, white stationary closed form). k = 3×3 on digits, 1×3 on MNIST-1D.

1. Phase 1: the deep net trains ``--steps1`` (MLP, 500) / ``--cnn-steps1`` (CNN, 200)
   steps (seeds 0..S-1, one vmapped program).
2. Fusion (``mimetic_jax.fuse.fuse_params``): the fused pair's inputs are the trained
   deep net's activations on the whole training set. Two inits: ``fused-data`` (the
   data-driven linear MMSE, what the authors' code does; ridge 1e-5) and ``fused-gauss``
   (the Gaussian closed form with the inputs' empirical mean and covariance; for the CNN the
   white-stationary closed form with per-channel mean and channel covariance). All other
   layers are copied from the deep net.
3. Phase 2: ``--steps2`` / ``--cnn-steps2`` more steps (500 / 200) for four arms, same
   data order per seed:
   ``shallow-random`` (the shallower net from its default Flax init), ``fused-data``,
   ``fused-gauss`` and ``deep`` (the deep net continuing from phase 1). Each arm restarts
   the same schedule (warm-up 10 %, cosine to 0, AdamW wd 0.05, lr ``--lr``), so they are
   compared at equal phase-2 steps; the random-init shallow net has seen the phase-1 steps fewer
   steps in total (the paper's comparison: same training of the shallower net).

Reported: test accuracy (mean ± std over seeds, ddof=1) of each arm at each phase-2
checkpoint (step 0 = right after fusion), and the fusion MSE of the data-driven fit.
One learning rate for all arms (no sweep).

Run: ``python benchmarks/fuse.py [--quick] [--datasets digits mnist1d] [--seeds 3]``.
"""

from __future__ import annotations

import _report
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mimetic_jax import fuse
from mimetic_jax.experiments.tasks import load_dataset
from mimetic_jax.experiments.training import checkpoint_steps, stack_trees, train_models, unstack_tree

ARMS = ("shallow-random", "fused-data", "fused-gauss", "deep")
KERNEL = {"digits": (3, 3), "mnist1d": (1, 3)}


class MLP(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for i, w in enumerate(self.widths):
            x = nn.Dense(w, name=f"Dense_{i}")(x)
            if i < len(self.widths) - 1:
                x = nn.relu(x)
        return x


class CNN(nn.Module):
    channels: int
    kernels: tuple[tuple[int, int], ...]
    num_classes: int

    @nn.compact
    def __call__(self, x):
        for i, k in enumerate(self.kernels):
            x = nn.relu(nn.Conv(self.channels, k, padding="SAME", name=f"Conv_{i}")(x))
        return nn.Dense(self.num_classes, name="Dense_0")(x.reshape(x.shape[0], -1))


def models(kind: str, dataset: str, width: int, channels: int, num_classes: int):
    """``(deep, shallow, deep layer names, shallow layer names)``; the fused pair is at index 1."""
    if kind == "mlp":
        deep, shallow = MLP((width,) * 3 + (num_classes,)), MLP((width,) * 2 + (num_classes,))
        return deep, shallow, [f"Dense_{i}" for i in range(4)], [f"Dense_{i}" for i in range(3)]
    k = KERNEL[dataset]
    big = tuple(2 * a - 1 for a in k)
    deep, shallow = CNN(channels, (k, k, k), num_classes), CNN(channels, (k, big), num_classes)
    return deep, shallow, ["Conv_0", "Conv_1", "Conv_2", "Dense_0"], ["Conv_0", "Conv_1", "Dense_0"]


def layer_inputs(model, params, x, prev: str, batch: int = 1024) -> np.ndarray:
    """``relu`` of layer ``prev``'s output: the fused pair's inputs, over ``x`` in batches."""

    @jax.jit
    def one(xb):
        _, state = model.apply(
            params, xb, capture_intermediates=lambda mdl, _: mdl.name == prev, mutable=["intermediates"]
        )
        return jax.nn.relu(state["intermediates"][prev]["__call__"][0])

    return np.concatenate([np.asarray(one(x[i : i + batch])) for i in range(0, len(x), batch)])


def fuse_one(kind, deep_p, shallow_p, h, names_d, names_s, ridge):
    """Data-driven and Gaussian fused parameters of one seed, and the data fit's MSE."""
    common = dict(deep_layers=names_d, shallow_layers=names_s)
    if kind == "mlp":
        data = fuse.fuse_params(deep_p, shallow_p, 1, inputs=h, ridge=ridge, batch_size=4096, **common)
        flat = h.reshape(len(h), -1).astype(np.float64)
        gauss = fuse.fuse_params(deep_p, shallow_p, 1, mean=flat.mean(0), cov=np.cov(flat.T, ddof=0), **common)
        p = deep_p["params"]
        *_, mse = fuse.dense_dense_from_data(
            p["Dense_1"]["kernel"],
            p["Dense_1"]["bias"],
            p["Dense_2"]["kernel"],
            p["Dense_2"]["bias"],
            h,
            ridge=ridge,
            return_mse=True,
            batch_size=4096,
        )
        return data, gauss, float(mse)
    pad = ("SAME", "SAME")
    data = fuse.fuse_params(deep_p, shallow_p, 1, inputs=h, ridge=ridge, padding=pad, batch_size=512, **common)
    chan = h.reshape(-1, h.shape[-1]).astype(np.float64)
    gauss = fuse.fuse_params(
        deep_p,
        shallow_p,
        1,
        mean=chan.mean(0),
        cov=np.cov(chan.T, ddof=0),
        padding=pad,
        input_shape=h.shape[1:],
        **common,
    )
    p = deep_p["params"]
    _, mse = fuse.conv_conv_from_data(
        p["Conv_1"]["kernel"],
        p["Conv_1"]["bias"],
        p["Conv_2"]["kernel"],
        p["Conv_2"]["bias"],
        h,
        padding=pad,
        ridge=ridge,
        return_mse=True,
        batch_size=512,
    )
    return data, gauss, float(mse)


def run_one(kind: str, data, cfg: dict) -> dict:
    deep, shallow, names_d, names_s = models(kind, data.name, cfg["width"], cfg["channels"], data.num_classes)
    seeds = list(range(cfg["seeds"]))
    keys = [jax.random.split(jax.random.key(s), 3) for s in seeds]
    sample = jnp.asarray(data.x_train[:1])
    deep_init, shallow_init = jax.jit(deep.init), jax.jit(shallow.init)
    deep0 = [deep_init(k[0], sample) for k in keys]
    shallow0 = [shallow_init(k[1], sample) for k in keys]
    data_keys = jnp.stack([k[2] for k in keys])
    lr, bs = cfg["lr"], cfg["batch_size"]
    steps1, steps2 = cfg["steps"][kind]
    _report.log(f"  {kind}: phase 1, deep net, {steps1} steps")
    h1 = train_models(
        deep.apply,
        stack_trees(deep0),
        data_keys,
        data,
        steps=steps1,
        learning_rate=lr,
        batch_size=bs,
        eval_steps=checkpoint_steps(steps1, cfg["checkpoints"]),
    )
    deep1 = [unstack_tree(h1.params, i) for i in seeds]
    fused_data, fused_gauss, mses = [], [], []
    prev = names_d[0]
    for i in seeds:
        h = layer_inputs(deep, deep1[i], data.x_train, prev)
        a, b, m = fuse_one(kind, deep1[i], shallow0[i], h, names_d, names_s, cfg["ridge"])
        fused_data.append(a)
        fused_gauss.append(b)
        mses.append(m)
    _report.log(f"  {kind}: fusion MSE (data fit) {np.mean(mses):.4g}; phase 2, {steps2} steps")
    eval2 = (0,) + checkpoint_steps(steps2, cfg["checkpoints"])
    n = len(seeds)
    hs = train_models(
        shallow.apply,
        stack_trees(shallow0 + fused_data + fused_gauss),
        jnp.concatenate([data_keys] * 3),
        data,
        steps=steps2,
        learning_rate=lr,
        batch_size=bs,
        eval_steps=eval2,
    )
    hd = train_models(
        deep.apply, h1.params, data_keys, data, steps=steps2, learning_rate=lr, batch_size=bs, eval_steps=eval2
    )
    acc = {
        "shallow-random": hs.test_accuracy[:n],
        "fused-data": hs.test_accuracy[n : 2 * n],
        "fused-gauss": hs.test_accuracy[2 * n :],
        "deep": hd.test_accuracy,
    }
    out = {
        "phase1_steps": h1.steps.tolist(),
        "phase1_deep": h1.test_accuracy.tolist(),
        "steps": [int(s) for s in hs.steps],
        "fusion_mse_data": mses,
        "seconds": {"phase1": h1.seconds, "phase2_shallow": hs.seconds, "phase2_deep": hd.seconds},
    }
    out.update({arm: acc[arm].tolist() for arm in ARMS})
    _report.log(f"  {kind}: final " + ", ".join(f"{a} {acc[a][:, -1].mean():.4f}" for a in ARMS))
    return out


def markdown(cfg: dict, results: dict) -> str:
    parts = [
        f"MLP width {cfg['width']} (deep 4 dense layers, shallow 3); CNN {cfg['channels']} channels (deep 3 convs, "
        f"shallow 2: the middle pair fused into one conv of size 2k-1), SAME padding. Phase 1 (deep net) + "
        f"phase 2 (every arm, same schedule) steps: MLP {cfg['steps']['mlp'][0]} + {cfg['steps']['mlp'][1]}, CNN "
        f"{cfg['steps']['cnn'][0]} + {cfg['steps']['cnn'][1]} (fewer: convolutions are slow on this CPU). AdamW lr "
        f"{cfg['lr']:g}, wd 0.05, warm-up 10 %, cosine to 0, batch {cfg['batch_size']}; {cfg['seeds']} seeds; "
        "test accuracy in %, mean ± std over seeds (ddof=1). Step 0 = right after fusion (for `deep`: the end of "
        "phase 1). `shallow-random` has had no phase 1."
    ]
    for name, r in results.items():
        for kind, m in r.items():
            rows = []
            for c, step in enumerate(m["steps"]):
                rows.append(
                    [step]
                    + [
                        _report.fmt_pm(
                            100 * np.mean(np.asarray(m[a])[:, c]), 100 * np.std(np.asarray(m[a])[:, c], ddof=1), 2
                        )
                        for a in ARMS
                    ]
                )
            p1 = np.asarray(m["phase1_deep"])[:, -1]
            parts.append(
                f"## {name}, {kind.upper()}\n\nDeep net after phase 1: "
                f"{_report.fmt_pm(100 * p1.mean(), 100 * p1.std(ddof=1), 2)} %. Data-driven fusion MSE "
                f"(per example, summed over the fused layer's outputs): {np.mean(m['fusion_mse_data']):.4g}."
                "\n\n" + _report.md_table(["phase-2 step"] + list(ARMS), rows)
            )
    return "\n\n".join(parts)


def _extra(p) -> None:
    p.add_argument("--datasets", nargs="+", choices=sorted(KERNEL), default=["digits", "mnist1d"])
    p.add_argument("--kinds", nargs="+", choices=["mlp", "cnn"], default=["mlp", "cnn"])
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick 2)")
    p.add_argument("--steps1", type=int, default=None, help="MLP deep-net steps (default 500; quick 30)")
    p.add_argument("--steps2", type=int, default=None, help="MLP phase-2 steps (default 500; quick 30)")
    p.add_argument("--cnn-steps1", type=int, default=None, help="CNN deep-net steps (default 200; quick 30)")
    p.add_argument("--cnn-steps2", type=int, default=None, help="CNN phase-2 steps (default 200; quick 30)")
    p.add_argument("--checkpoints", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--ridge", type=float, default=1e-5)


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    cfg = {
        "datasets": args.datasets,
        "kinds": args.kinds,
        "seeds": args.seeds or (2 if q else 3),
        "steps": {
            "mlp": [args.steps1 or (30 if q else 500), args.steps2 or (30 if q else 500)],
            "cnn": [args.cnn_steps1 or (30 if q else 200), args.cnn_steps2 or (30 if q else 200)],
        },
        "checkpoints": args.checkpoints,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "width": args.width if not q else 32,
        "channels": args.channels if not q else 4,
        "ridge": args.ridge,
    }
    run = _report.Run("fuse", "FuseInit: shallower nets from fused deeper nets", args)
    results: dict = {}
    run.data.update({"config": cfg, "datasets": results})
    run.partial_markdown = lambda: markdown(cfg, results)
    for kind in cfg["kinds"]:  # all MLPs first: the CNNs are the slow part on CPU
        for name in cfg["datasets"]:
            data = load_dataset(name)
            results.setdefault(name, {})
            run.stage(f"{name}: {kind}")
            results[name][kind] = run_one(kind, data, cfg)
            run.finish(markdown(cfg, results))
    print(markdown(cfg, results))


if __name__ == "__main__":
    main()
