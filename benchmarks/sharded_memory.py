"""Per-device memory of sharded mimetic init against the default init (compile only, 8 fake CPU devices).

Every configuration is a model created inside ``jax.jit(init, out_shardings=...)`` over a
mesh of N fake CPU devices (``--xla_force_host_platform_device_count=8``), its kernels
sharded along their input axis (``P(None, "x", None)`` for layers stacked by ``nn.scan``).
Nothing runs: each program is lowered and compiled, and XLA's memory analysis gives the
per-device bytes (arguments + outputs + temporaries; an upper bound on the peak, as XLA
reports it). ``default`` is ``jax.jit(model.init)``, ``mimetic`` the same init followed by the
transform inside the same ``jit``; the ratio mimetic / default is the figure of merit
(target ≤ 1.2).

* attention stacks with flat ``q_proj/k_proj/v_proj/o_proj`` kernels (LLaMA layout):
  LLaMA-7B-shaped (32 layers, d 4096, 32 heads of 128), LLaMA-70B-shaped (80 layers, d 8192,
  64 heads, 8 key/value heads of 128) and two smaller ones, ``mimetic_attention(...,
  method="fast", shardings=out_shardings)``; the 7B one also without ``shardings=`` (rows
  split over the context mesh) and on 1, 2, 4 and 8 devices; ``--layer-axis``: instead, the
  7B and 70B stacks sharded along their layer axis only (``P("x", None, None)``, whole
  kernels per device), written as ``sharded_memory_layer_axis.*``;
* ``mimetic_ssm(..., method="fast")`` on a Mamba-1 LM, ``mimetic_conv`` on a ConvMixer, ``mimetic_mlp`` on a ViT
  (the package's reference models), kernels sharded along their last axis.

Run: ``python benchmarks/sharded_memory.py [--quick]``.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import time

import _report

GIB = 2**30
ATTENTION = {
    "GPT-2-medium-like (24 × d 1024, 16 heads)": dict(layers=24, d=1024, heads=16, kv_heads=16, head_dim=64),
    "LLaMA-7B-like (32 × d 4096, 32 heads)": dict(layers=32, d=4096, heads=32, kv_heads=32, head_dim=128),
    "LLaMA-70B-like (80 × d 8192, 64 heads, 8 kv)": dict(layers=80, d=8192, heads=64, kv_heads=8, head_dim=128),
}
QUICK_ATTENTION = {"small (4 × d 512, 4 heads)": dict(layers=4, d=512, heads=4, kv_heads=4, head_dim=128)}
SEVEN_B = "LLaMA-7B-like (32 × d 4096, 32 heads)"


def _stack(shape: dict):
    import flax.linen as nn
    import jax.numpy as jnp

    d, h, kv, hd = shape["d"], shape["heads"], shape["kv_heads"], shape["head_dim"]

    class Layer(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            q = nn.Dense(h * hd, use_bias=False, name="q_proj")(x)
            k = nn.Dense(kv * hd, use_bias=False, name="k_proj")(x)
            v = nn.Dense(kv * hd, use_bias=False, name="v_proj")(x)
            return x + nn.Dense(d, use_bias=False, name="o_proj")(q + jnp.tile(k + v, h // kv)), None

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            scan = nn.scan(Layer, variable_axes={"params": 0}, split_rngs={"params": True}, length=shape["layers"])
            return scan(name="layers")(x, None)[0]

    return Stack(), jnp.zeros((1, d))


def _memory(fn, mesh, shardings) -> dict:
    import jax

    t = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = jax.jit(fn, out_shardings=shardings).lower(jax.random.key(0)).compile()
    m = compiled.memory_analysis()
    out = {
        "argument_bytes": m.argument_size_in_bytes,
        "output_bytes": m.output_size_in_bytes,
        "temp_bytes": m.temp_size_in_bytes,
        "compile_s": time.perf_counter() - t,
    }
    out["total_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"]
    return out


def _mesh(devices: int):
    import jax

    return jax.make_mesh((devices,), ("x",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:devices])


#: where the stacked attention kernels are split: their input axis, or the layer axis only
SPECS = {"rows": (None, "x", None), "layers": ("x", None, None)}


def attention(shape: dict, devices: int, given: bool, split: str = "rows") -> dict:
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import mimetic_jax as mj

    model, x = _stack(shape)
    mesh = _mesh(devices)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    shardings = jax.tree.map(lambda a: NamedSharding(mesh, P(*SPECS[split])), shapes)
    kw = dict(method="fast", num_heads=shape["heads"], num_kv_heads=shape["kv_heads"], stacked_axes=1)
    if given:
        kw["shardings"] = shardings
    res = {"default": _memory(lambda k: model.init(k, x), mesh, shardings)}
    res["mimetic"] = _memory(lambda k: mj.mimetic_attention(model.init(k, x), k, **kw), mesh, shardings)
    res["ratio"] = res["mimetic"]["total_bytes"] / res["default"]["total_bytes"]
    return res


def other(name: str, quick: bool) -> dict:
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import mimetic_jax as mj
    from mimetic_jax.experiments.models import ConvMixer, MambaLM, ViT

    if name == "mimetic_ssm":
        width = 256 if quick else 1024
        model = MambaLM(vocab_size=256, d_model=width, n_layer=4 if quick else 12, d_state=16)
        x = jnp.zeros((1, 8), jnp.int32)

        def transform(p, k):
            return mj.mimetic_ssm(p, k, method="fast")
    elif name == "mimetic_conv":
        model = ConvMixer(10, width=256 if quick else 1024, depth=4 if quick else 16)
        x = jnp.zeros((1, 32, 32, 3))
        transform = mj.mimetic_conv
    else:
        model = ViT(10, width=256 if quick else 1024, depth=4 if quick else 24, num_heads=8)
        x = jnp.zeros((1, 32, 32, 3))

        def transform(p, k):
            del k
            return mj.mimetic_mlp(p)

    mesh = _mesh(8)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)

    def spec(a):
        return NamedSharding(mesh, P(*([None] * (a.ndim - 1)), "x") if a.shape[-1] % 8 == 0 else P())

    shardings = jax.tree.map(spec, shapes)
    res = {"default": _memory(lambda k: model.init(k, x), mesh, shardings)}
    res["mimetic"] = _memory(lambda k: transform(model.init(k, x), k), mesh, shardings)
    res["ratio"] = res["mimetic"]["total_bytes"] / res["default"]["total_bytes"]
    return res


def _gib(b: float) -> str:
    return f"{b / GIB:.3f}"


def markdown(data: dict) -> str:
    rows = []
    for r in data["rows"]:
        d, m = r["default"], r["mimetic"]
        rows.append(
            [
                r["model"],
                r["transform"],
                r["devices"],
                _gib(d["output_bytes"]),
                _gib(d["total_bytes"]),
                _gib(m["temp_bytes"]),
                _gib(m["total_bytes"]),
                f"{r['ratio']:.2f}",
            ]
        )
    table = _report.md_table(
        [
            "model",
            "transform",
            "devices",
            "weights per device (GiB)",
            "default: per device (GiB)",
            "mimetic: temporaries (GiB)",
            "mimetic: per device (GiB)",
            "mimetic / default",
        ],
        rows,
    )
    return (
        "Per-device bytes from XLA's compiled memory analysis (arguments + outputs + temporaries; "
        "compile only, nothing executed), each model created inside `jax.jit(init, out_shardings=...)`, "
        "kernels sharded along their input axis (where the transform column says so, along the layer axis only). `default` = `model.init`; `mimetic` = the same init and the "
        'transform in the same `jit`. Attention: `method="fast"`; `shardings=` = the `out_shardings` passed to '
        "the transform, `context mesh` = not passed (rows split over the mesh of `jax.set_mesh`).\n\n" + table
    )


def layer_axis(run) -> None:
    """The 7B and 70B stacks with their kernels split over the layer axis only."""
    for name in (SEVEN_B, "LLaMA-70B-like (80 × d 8192, 64 heads, 8 kv)"):
        label = 'mimetic_attention shardings=, layer axis P("x", None, None)'
        run.stage(f"{name}: {label}, 8 devices")
        res = attention(ATTENTION[name], 8, True, split="layers")
        run.data["rows"].append(dict(model=name, shape=ATTENTION[name], transform=label, devices=8, **res))
        _report.log(f"  ratio {res['ratio']:.3f}, mimetic {_gib(res['mimetic']['total_bytes'])} GiB")
    run.finish(markdown(run.data))


def main() -> None:
    args = _report.parse_args(
        __doc__.splitlines()[0],
        lambda p: p.add_argument("--layer-axis", action="store_true", help="only the layer-axis-sharded stacks"),
    )
    if args.layer_axis and not args.tag:
        args.tag = "layer_axis"
    run = _report.Run("sharded_memory", "Per-device memory of sharded mimetic init (compile only)", args)
    run.data["rows"] = []
    run.partial_markdown = lambda: markdown(run.data)
    if args.layer_axis:
        return layer_axis(run)
    shapes = QUICK_ATTENTION if args.quick else ATTENTION
    plan = [(name, s, 8, True) for name, s in shapes.items()]
    if not args.quick:
        plan += [(SEVEN_B, ATTENTION[SEVEN_B], 8, False)]
        plan += [(SEVEN_B, ATTENTION[SEVEN_B], n, True) for n in (1, 2, 4)]
    for name, shape, devices, given in plan:
        label = "mimetic_attention " + ("shardings=" if given else "context mesh")
        run.stage(f"{name}: {label}, {devices} devices")
        res = attention(shape, devices, given)
        run.data["rows"].append(dict(model=name, shape=shape, transform=label, devices=devices, **res))
        _report.log(f"  ratio {res['ratio']:.3f}, mimetic {_gib(res['mimetic']['total_bytes'])} GiB")
    for name in ("mimetic_ssm", "mimetic_conv", "mimetic_mlp"):
        run.stage(name)
        res = other(name, args.quick)
        model = {"mimetic_ssm": "Mamba-1 LM", "mimetic_conv": "ConvMixer", "mimetic_mlp": "ViT"}[name]
        size = (
            "(quick)"
            if args.quick
            else {"mimetic_ssm": "12 × d 1024", "mimetic_conv": "16 × 1024", "mimetic_mlp": "24 × 1024"}[name]
        )
        run.data["rows"].append(dict(model=f"{model} {size}", transform=name, devices=8, **res))
        _report.log(f"  ratio {res['ratio']:.3f}")
    run.finish(markdown(run.data))


if __name__ == "__main__":
    main()
