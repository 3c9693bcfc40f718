"""Cost of the covariance init of ConvNeXt-T's depthwise layers against the default init.

ConvNeXt-T (Liu et al. 2022): stages of widths 96, 192, 384, 768 and depths 3, 3, 9, 3,
so 18 depthwise ``7×7`` kernels ``(7, 7, 1, C)`` (0.32 M weights: 49·(3·96 +
3·192 + 9·384 + 3·768)). Measured in one process, each under ``jax.jit`` (trace, compile,
first run, median of later runs; the layers' calls alternate between the two arms,
``_report.time_jit_interleaved``):

* layers: ``[lecun_normal()(k_i, shape_i)]`` (Flax's default conv init) against
  ``[depthwise_conv_init(i, 18, σ defaults)(k_i, shape_i)]``;
* whole model: ``ConvNeXt-T.init`` against ``mimetic_conv(ConvNeXt-T.init(...))``
  (``mimetic_jax.experiments.models.ConvNeXt``, 28.6 M parameters, init input one 32×32 image).

Target (issue 3): covariance / default <= 1.2 for the layers. The box has 2 CPU cores
shared with other jobs: the load average is recorded with each timing.

Run: ``python benchmarks/conv_init_cost.py [--quick]`` (``--quick``: layers only, fewer repeats).
"""

from __future__ import annotations

import _report
import jax
import jax.numpy as jnp

from mimetic_jax import depthwise_conv_init, mimetic_conv
from mimetic_jax.conv import DEFAULT_SIGMA_END, DEFAULT_SIGMA_START
from mimetic_jax.experiments.models import ConvNeXt

TARGET_RATIO = 1.2
DIMS, DEPTHS = (96, 192, 384, 768), (3, 3, 9, 3)
SHAPES = [(7, 7, 1, d) for d, n in zip(DIMS, DEPTHS) for _ in range(n)]


def default_layers(key):
    init = jax.nn.initializers.lecun_normal()
    return [init(jax.random.fold_in(key, i), s) for i, s in enumerate(SHAPES)]


def covariance_layers(key):
    n = len(SHAPES)
    return [
        depthwise_conv_init(i, n, sigma_start=DEFAULT_SIGMA_START, sigma_end=DEFAULT_SIGMA_END)(
            jax.random.fold_in(key, i), s
        )
        for i, s in enumerate(SHAPES)
    ]


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0])
    repeats = 5 if args.quick else 30
    run = _report.Run("conv_init_cost", "Init cost: covariance depthwise init of ConvNeXt-T vs default", args)
    key = jax.random.key(0)
    rows, data = (
        [],
        {
            "config": {
                "shapes": SHAPES,
                "repeats": repeats,
                "sigma": [DEFAULT_SIGMA_START, DEFAULT_SIGMA_END],
                "target_ratio": TARGET_RATIO,
            }
        },
    )
    run.stage("layers")
    # the layers take milliseconds: 10× the repeats, calls of the two arms alternating
    both = _report.time_jit_interleaved(
        {"default": default_layers, "covariance": covariance_layers}, key, repeats=10 * repeats
    )
    t_def, t_cov = both["default"], both["covariance"]
    data["layers"] = {"default": t_def, "covariance": t_cov}
    rows.append(
        [
            "18 depthwise layers",
            _report.fmt_s(t_def["median_s"]),
            _report.fmt_s(t_cov["median_s"]),
            f"{t_cov['median_s'] / t_def['median_s']:.2f}",
            f"{t_cov['first_call_s'] / t_def['first_call_s']:.2f}",
        ]
    )
    _report.log(rows[-1])
    if not args.quick:
        run.stage("whole model")
        model = ConvNeXt(1000, dims=DIMS, depths=DEPTHS, patch_size=4)
        x = jnp.zeros((1, 32, 32, 3))
        t_m = _report.time_jit(lambda k: model.init(k, x), key, repeats=max(3, repeats // 6))
        t_mc = _report.time_jit(
            lambda k: mimetic_conv(model.init(k, x), jax.random.fold_in(k, 1)), key, repeats=max(3, repeats // 6)
        )
        data["model"] = {"default": t_m, "covariance": t_mc}
        rows.append(
            [
                "ConvNeXt-T whole init",
                _report.fmt_s(t_m["median_s"]),
                _report.fmt_s(t_mc["median_s"]),
                f"{t_mc['median_s'] / t_m['median_s']:.2f}",
                f"{t_mc['first_call_s'] / t_m['first_call_s']:.2f}",
            ]
        )
        _report.log(rows[-1])
    run.data.update(data)
    body = (
        f"ConvNeXt-T depthwise kernels {len(SHAPES)} × (7, 7, 1, C), C in {DIMS}; σ "
        f"{DEFAULT_SIGMA_START:g}→{DEFAULT_SIGMA_END:g}. Steady state = median of {10 * repeats} (layers; "
        "calls of the two arms alternate) or "
        f"{max(3, repeats // 6)} (whole model) calls of the compiled function; first call = trace + compile + "
        "run. The machine and its load are in the header above.\n\n"
        + _report.md_table(["what", "default", "covariance", "ratio (steady)", "ratio (first call)"], rows)
    )
    run.finish(body)
    print(body)


if __name__ == "__main__":
    main()
