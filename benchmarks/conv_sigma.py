"""Covariance filters: which σ schedule, paired seeds, trained and frozen (ConvMixer on digits).

The package default of :func:`mimetic_jax.mimetic_conv` is ``σ 0.5 → 0.5`` (constant in depth),
picked from a 2-seed sweep (``conv_training.py``). The published description has the filter
covariance spreading with depth; a 5-seed control found ``0.5 → 2`` ahead with frozen filters.
This benchmark settles the default with ``--seeds`` (default 10) paired seeds:

* schedules :data:`SCHEDULES`: constant (0.5, 1, 2) and growing with depth (0.5 → 2, 0.5 → 4,
  1 → 3), plus Flax's default init (i.i.d. filters);
* each trained with the filters learning and with the filters frozen (``freeze_mask``), the
  paper's test of whether the structure alone carries training.

Pairing: for seed ``s`` every schedule starts from the same ``model.init`` draw (only the
depthwise kernels re-drawn, from the same key) and sees the same minibatches
(``conv_training.train_variants``). Reported: final test accuracy (and at the first
checkpoint), mean ± std over seeds, and each schedule's paired difference to the current
default (``σ 0.5 → 0.5``) and to the default init: mean ± std, seeds ahead, paired t-test.

Run: ``python benchmarks/conv_sigma.py [--quick] [--seeds N] [--steps N]`` (2-core CPU: about
20 minutes when the machine is otherwise idle).
"""

from __future__ import annotations

import _report
import numpy as np
from conv_training import train_variants
from training import paired_stats

from mimetic_jax.experiments.models import ConvMixer
from mimetic_jax.experiments.tasks import load_dataset

SCHEDULES = [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0), (0.5, 2.0), (0.5, 4.0), (1.0, 3.0)]
REFERENCE = "cov σ 0.5→0.5"


def _extra(p) -> None:
    p.add_argument("--seeds", type=int, default=None, help="paired seeds (default 10; quick 2)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 300; quick 20)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=32)


def _contrast(a: np.ndarray, b: np.ndarray) -> str:
    s = paired_stats(b, a)
    p = "—" if s["p"] is None else f"{s['p']:.2g}"
    return f"{100 * s['diff_mean']:+.2f} ± {100 * s['diff_std']:.2f} ({s['wins']}/{s['n']}, p {p})"


def table(res: dict) -> str:
    rows = []
    for name, acc in res["acc"].items():
        acc = np.asarray(acc)
        first, last = acc[:, 0], acc[:, -1]
        ref, default = np.asarray(res["acc"][REFERENCE])[:, -1], np.asarray(res["acc"]["default"])[:, -1]
        rows.append(
            [
                name,
                _report.fmt_pm(100 * first.mean(), 100 * first.std(ddof=1), 2),
                _report.fmt_pm(100 * last.mean(), 100 * last.std(ddof=1), 2),
                "—" if name == "default" else _contrast(last, default),
                "—" if name == REFERENCE else _contrast(last, ref),
            ]
        )
    steps = res["steps"]
    return _report.md_table(
        ["init", f"step {steps[0]}", f"step {steps[-1]} (final)", "− default init (pp)", f"− {REFERENCE} (pp)"], rows
    )


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    cfg = {
        "steps": args.steps or (20 if q else 300),
        "seeds": args.seeds or (2 if q else 10),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "width": 16,
        "depth": 3,
        "kernel": 5,
    }
    run = _report.Run("conv_sigma", "Covariance filters: σ schedules, paired seeds, trained and frozen", args)
    res: dict = {}
    run.data.update({"config": cfg, "results": res})
    data = load_dataset("digits")
    mixer = ConvMixer(data.num_classes, width=cfg["width"], depth=cfg["depth"], kernel_size=cfg["kernel"])
    schedules = SCHEDULES[:1] + SCHEDULES[3:4] if q else SCHEDULES
    variants = {"default": ("default", None, 0.0)}
    variants |= {f"cov σ {s0:g}→{s1:g}": ("cov", (s0, s1), 0.0) for s0, s1 in schedules}
    seeds = list(range(cfg["seeds"]))
    checkpoints = (cfg["steps"] // 3, cfg["steps"])
    parts = []
    for frozen in (False, True):
        label = "frozen filters" if frozen else "trained filters"
        run.stage(label)
        r = train_variants(mixer, data, seeds, variants, cfg, checkpoints, frozen=frozen, mutable=("batch_stats",))
        res[label] = {"acc": {k: v.tolist() for k, v in r["acc"].items()}, "steps": r["steps"], "seconds": r["seconds"]}
        parts.append(f"### {label} ({r['seconds']:.0f} s)\n\n" + table(res[label]))
    body = (
        f"digits; ConvMixer width {cfg['width']}, depth {cfg['depth']}, kernel {cfg['kernel']}, patch 1 (BatchNorm); "
        f"{cfg['steps']} steps, batch {cfg['batch_size']}, lr {cfg['lr']:g}, AdamW wd 0.05, warm-up 10 %, cosine. "
        f"{cfg['seeds']} paired seeds. Test accuracy in %, mean ± std over seeds (ddof=1); contrasts: paired "
        "difference of final accuracy in percentage points, mean ± std (seeds ahead / seeds, paired t-test p).\n\n"
        + "\n\n".join(parts)
        + "\n"
    )
    run.finish(body)


if __name__ == "__main__":
    main()
