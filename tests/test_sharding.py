"""Sharded init on 8 fake CPU devices (tests/conftest.py): every path gives the unsharded numbers, placed right.

Paths: a tree passed in, closed over, or created inside the ``jit``; Auto and Explicit meshes;
``shardings=``; eager calls on sharded trees; NNX models with ``nnx.with_partitioning``; the
SSM, conv and MLP transforms; ``out_sharding`` of every initializer. The per-device memory is
measured in ``benchmarks/sharded_memory.py`` (compiled memory analysis), not here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import mimetic_jax as mj
from mimetic_jax import _sharding

L, D, HD = 2, 64, 8
KEY = jax.random.key(3)


class _Layer(nn.Module):
    heads: int
    kv_heads: int

    @nn.compact
    def __call__(self, x, _):
        q = nn.Dense(self.heads * HD, use_bias=False, name="q_proj")(x)
        k = nn.Dense(self.kv_heads * HD, use_bias=False, name="k_proj")(x)
        v = nn.Dense(self.kv_heads * HD, use_bias=False, name="v_proj")(x)
        return x + nn.Dense(D, use_bias=False, name="o_proj")(q + jnp.tile(k + v, self.heads // self.kv_heads)), None


class _Stack(nn.Module):
    """LLaMA-style attention kernels, layers stacked by nn.scan (q/k: template regime; v/o: rotation or template)."""

    heads: int = 8
    kv_heads: int = 8

    @nn.compact
    def __call__(self, x):
        scan = nn.scan(_Layer, variable_axes={"params": 0}, split_rngs={"params": True}, length=L)
        return scan(self.heads, self.kv_heads, name="layers")(x, None)[0]


def _mesh(axis_type: str):
    return jax.make_mesh((8,), ("x",), axis_types=(getattr(AxisType, axis_type),))


def _setup(axis_type: str, kv_heads: int = 8):
    model = _Stack(kv_heads=kv_heads)
    params = model.init(jax.random.key(0), jnp.zeros((1, D)))
    mesh = _mesh(axis_type)
    shardings = jax.tree.map(lambda a: NamedSharding(mesh, P(None, "x", None)), params)  # along d_in
    return model, params, mesh, shardings


#: A sharded `fast` draw against the unsharded one: the same bits on some CPUs, within one or two float32
#: ulp on others (XLA:CPU compiles the partitioned program differently by machine: 6e-8 measured on an
#: AMD EPYC without AVX-512). `exact` and the unsharded programs stay bit for bit.
FAST_ULP = 1e-7


def _assert_same(out, ref, shardings, atol=0.0):
    for a, b, s in zip(jax.tree.leaves(out), jax.tree.leaves(ref), jax.tree.leaves(shardings)):
        assert a.sharding.is_equivalent_to(s, a.ndim), (a.sharding, s)
        if atol:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("method", ["fast", pytest.param("exact", marks=pytest.mark.slow)])
def test_created_inside_jit_with_shardings_is_bit_identical_and_placed(method):
    model, params, mesh, shardings = _setup("Auto")
    kw = dict(method=method, num_heads=8, stacked_axes=1)
    ref = mj.mimetic_attention(params, KEY, **kw)

    def init(k):
        return mj.mimetic_attention(model.init(jax.random.key(0), jnp.zeros((1, D))), k, shardings=shardings, **kw)

    with jax.set_mesh(mesh):
        out = jax.jit(init, out_shardings=shardings)(KEY)
    _assert_same(out, ref, shardings, atol=FAST_ULP if method == "fast" else 0.0)


@pytest.mark.slow  # 14-27 s on 2 cores; .ci/run's slow pass
def test_grouped_query_closed_over_and_passed_in_equal_the_unsharded_draw():
    _, params, mesh, shardings = _setup("Auto", kv_heads=2)
    kw = dict(method="fast", num_heads=8, num_kv_heads=2, stacked_axes=1)
    ref = mj.mimetic_attention(params, KEY, **kw)
    sharded = jax.device_put(params, shardings)
    closed = jax.jit(lambda k: mj.mimetic_attention(sharded, k, **kw), out_shardings=shardings)(KEY)
    _assert_same(closed, ref, shardings, atol=FAST_ULP)
    with jax.set_mesh(mesh):  # a traced argument on an Auto mesh: the rows follow the context mesh
        passed = jax.jit(lambda p, k: mj.mimetic_attention(p, k, **kw), out_shardings=shardings)(sharded, KEY)
    _assert_same(passed, ref, shardings, atol=FAST_ULP)
    _assert_same(mj.mimetic_attention(sharded, KEY, **kw), ref, shardings, atol=FAST_ULP)  # eager keeps the shardings


@pytest.mark.slow  # 14-27 s on 2 cores; .ci/run's slow pass
def test_explicit_mesh_reads_the_shardings_from_the_types():
    _, params, mesh, shardings = _setup("Explicit")
    kw = dict(method="fast", num_heads=8, stacked_axes=1)
    ref = mj.mimetic_attention(params, KEY, **kw)
    sharded = jax.device_put(params, shardings)
    with jax.set_mesh(mesh):
        out = jax.jit(lambda p, k: mj.mimetic_attention(p, k, **kw))(sharded, KEY)  # no out_shardings
    _assert_same(out, ref, shardings, atol=FAST_ULP)


@pytest.mark.slow  # 14-27 s on 2 cores; .ci/run's slow pass
def test_nnx_with_partitioning_on_an_explicit_mesh():
    mesh = _mesh("Explicit")
    base = nnx.initializers.lecun_normal()

    def make(init, out_init):
        return nnx.MultiHeadAttention(
            num_heads=4,
            in_features=D,
            qkv_features=D,
            decode=False,
            kernel_init=init,
            out_kernel_init=out_init,
            rngs=nnx.Rngs(0),
        )

    ref = mj.mimetic_attention(make(base, base), KEY, method="fast")
    with jax.set_mesh(mesh):  # query/key/value (d, H, k) along d, out (H, k, d) along d
        model = make(nnx.with_partitioning(base, ("x", None, None)), nnx.with_partitioning(base, (None, None, "x")))
        before = {k: v.sharding for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
        mj.mimetic_attention(model, KEY, method="fast")
        after = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    for path, value in nnx.to_flat_state(nnx.state(ref, nnx.Param)):
        assert after[path].sharding.is_equivalent_to(before[path], value.ndim)
        np.testing.assert_array_equal(np.asarray(after[path]), np.asarray(value))


def test_shardings_option_is_checked():
    _, params, mesh, shardings = _setup("Auto")
    with pytest.raises(TypeError, match="structure of the tree"):
        mj.mimetic_attention(params, KEY, num_heads=8, stacked_axes=1, shardings=NamedSharding(mesh, P()))
    wrong = {"params": {"other": NamedSharding(mesh, P())}}
    with pytest.raises(ValueError, match="not a leaf of the tree"):
        mj.mimetic_attention(params, KEY, num_heads=8, stacked_axes=1, shardings=wrong)


def test_gram_is_the_same_bits_whatever_the_row_sharding():
    x = jax.random.normal(jax.random.key(0), (256, 16))
    ref = _linalg_gram(x, _sharding.Work())
    for n in (2, 4, 8):
        mesh = jax.make_mesh((n,), ("x",), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])
        work = _sharding.Work(mesh, ("x",))
        out = jax.jit(lambda a, w=work: _linalg_gram(a, w))(jax.device_put(x, NamedSharding(mesh, P("x"))))
        np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    plain = np.asarray(x).T.astype(np.float64) @ np.asarray(x).astype(np.float64)
    np.testing.assert_allclose(np.asarray(ref), plain, rtol=1e-5, atol=1e-4)


def _linalg_gram(x, work):
    from mimetic_jax import _linalg

    return _linalg.gram(x, x, work)


# --------------------------------------------------------------------------- other transforms


@pytest.mark.parametrize("axis_type", ["Auto", pytest.param("Explicit", marks=pytest.mark.slow)])
def test_ssm_conv_and_mlp_transforms_keep_shardings(axis_type):
    from mimetic_jax.experiments.models import ConvMixer, MambaLM

    mesh = _mesh(axis_type)

    def spec(a):
        return NamedSharding(mesh, P(*([None] * (a.ndim - 1)), "x") if a.shape[-1] % 8 == 0 else P())

    cases = [
        (MambaLM(vocab_size=16, d_model=32, n_layer=2, d_state=8), jnp.zeros((1, 8), jnp.int32), mj.mimetic_ssm),
        (ConvMixer(10, width=16, depth=2), jnp.zeros((1, 8, 8, 1)), mj.mimetic_conv),
    ]
    for model, x, transform in cases:
        params = model.init(jax.random.key(0), x)
        shardings = jax.tree.map(spec, params)
        ref = transform(params, KEY)
        sharded = jax.device_put(params, shardings)
        with jax.set_mesh(mesh):
            out = jax.jit(transform, out_shardings=shardings)(sharded, KEY)
        _assert_same(out, ref, shardings)
    params = ConvMixer(10, width=16, depth=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    shardings = jax.tree.map(spec, params)
    with jax.set_mesh(mesh):
        out = jax.jit(mj.mimetic_mlp)(jax.device_put(params, shardings))
    # the relative mean shift reads each layer's std: a sharded reduction, 1 float32 ulp (3e-8 measured)
    _assert_same(out, mj.mimetic_mlp(params), shardings, atol=1e-7)


# --------------------------------------------------------------------------- initializers


#: name -> (the initializer, built in the test; a shape whose last axis the mesh splits)
INITIALIZERS = {
    "qkv_init fast": (lambda: mj.qkv_init(4, 16, method="fast"), (64, 192)),
    "qkv_init exact": (lambda: mj.qkv_init(4, 16), (64, 3, 4, 16)),
    "qkv_init grouped": (lambda: mj.qkv_init(4, 16, num_kv_heads=2, method="fast"), (64, 128)),
    "depthwise_conv_init": (lambda: mj.depthwise_conv_init(0, 2, sigma_start=1.0, sigma_end=3.0), (5, 5, 1, 16)),
    "mean_shift_init": (lambda: mj.mean_shift_init(0.05), (64, 256)),
    "a_log_init": (lambda: mj.a_log_init(), (64, 16)),
    "dt_bias_init": (lambda: mj.dt_bias_init(), (64,)),
    "identity_conv_init": (lambda: mj.identity_conv_init(), (4, 1, 64)),
    "sincos_1d": (lambda: mj.sincos_1d(), (16, 64)),
    "sincos_2d": (lambda: mj.sincos_2d(), (16, 64)),
    "emergence_init": (lambda: mj.emergence_init(jax.nn.initializers.he_normal(), 0, 3, alpha=2.0), (64, 32)),
}
#: One initializer per scheme module in the default run (Auto mesh); the rest, and every Explicit case,
#: in the slow pass (each case compiles three programs: 38 s for all of them on 2 cores).
DEFAULT_INITIALIZERS = {"qkv_init fast", "depthwise_conv_init", "mean_shift_init", "a_log_init", "emergence_init"}


@pytest.mark.parametrize(
    ("axis_type", "name"),
    [
        pytest.param(axis, name, marks=() if axis == "Auto" and name in DEFAULT_INITIALIZERS else pytest.mark.slow)
        for axis in ("Auto", "Explicit")
        for name in INITIALIZERS
    ],
)
def test_every_initializer_honours_out_sharding(axis_type, name):
    mesh = _mesh(axis_type)
    build, shape = INITIALIZERS[name]
    init = build()
    sharding = NamedSharding(mesh, P(*([None] * (len(shape) - 1)), "x"))
    ref = jax.jit(lambda k: init(k, shape))(KEY)
    with jax.set_mesh(mesh):
        out = jax.jit(lambda k: init(k, shape, out_sharding=sharding))(KEY)
    assert out.sharding.is_equivalent_to(sharding, len(shape)), name
    # fast: the rotation regime's Kronecker products, partitioned; mean_shift: the draw's std, a
    # sharded reduction (relative shift): a few float32 ulp (3e-8 measured)
    if "fast" in name or "mean_shift" in name:
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-7, rtol=0, err_msg=name)
    else:  # the same program unsharded: the same bits
        np.testing.assert_array_equal(np.asarray(out), np.asarray(ref), err_msg=name)
    # eagerly the samplers are separate programs: XLA may fuse differently (a few float32 ulp)
    np.testing.assert_allclose(np.asarray(out), np.asarray(init(KEY, shape)), atol=1e-6, rtol=0, err_msg=name)


# --------------------------------------------------------------------------- no context mesh
#
# As users write it: `jax.make_mesh`'s default (Explicit) mesh or an Auto one, the tree
# `device_put` onto it, then the transform called eagerly or under `jit` with no `jax.set_mesh`.


def _emergence(tree, key):
    # `device_put` (like any tree map) sorts dict keys, so the forward order is given (emergence's docstring)
    return mj.emergence_scale(tree, order=["stem", "block_0", "block_1", "head"])


def _no_context_cases():
    from mimetic_jax.experiments.models import ConvMixer, MambaLM

    attention = nn.MultiHeadDotProductAttention(num_heads=4)
    return {
        "attention fast": (attention, jnp.ones((1, 8, 64)), lambda t, k: mj.mimetic_attention(t, k, method="fast")),
        "attention exact": (attention, jnp.ones((1, 8, 64)), lambda t, k: mj.mimetic_attention(t, k)),
        "mimetic vit": (attention, jnp.ones((1, 8, 64)), lambda t, k: mj.mimetic(t, k, preset="vit")),
        "ssm": (MambaLM(vocab_size=16, d_model=32, n_layer=2, d_state=8), jnp.zeros((1, 8), jnp.int32), mj.mimetic_ssm),
        "conv": (ConvMixer(10, width=16, depth=2), jnp.zeros((1, 8, 8, 1)), mj.mimetic_conv),
        "mlp": (ConvMixer(10, width=16, depth=2), jnp.zeros((1, 8, 8, 1)), lambda t, k: mj.mimetic_mlp(t)),
        "emergence": (ConvMixer(10, width=16, depth=2), jnp.zeros((1, 8, 8, 1)), _emergence),
    }


#: The default run: every transform but `exact` (22 s) eagerly on the default (Explicit) mesh and two
#: under `jit`; the rest of the grid (Auto meshes, the other `jit` cases) in the slow pass.
_NO_CONTEXT_DEFAULT = {"attention fast", "mimetic vit", "ssm", "conv", "mlp", "emergence"}
_NO_CONTEXT_DEFAULT_JIT = {"attention fast", "ssm"}


def _no_context_marks(axis: str, mode: str, name: str):
    default = _NO_CONTEXT_DEFAULT if mode == "eager" else _NO_CONTEXT_DEFAULT_JIT
    return () if axis == "Explicit" and name in default else pytest.mark.slow


@pytest.mark.parametrize(
    ("axis_type", "mode", "name"),
    [
        pytest.param(axis, mode, name, marks=_no_context_marks(axis, mode, name))
        for axis in ("Explicit", "Auto")
        for mode in ("eager", "jit")
        for name in ("attention fast", "attention exact", "mimetic vit", "ssm", "conv", "mlp", "emergence")
    ],
)
def test_transforms_work_without_a_context_mesh_and_keep_every_sharding(axis_type, mode, name):
    model, x, transform = _no_context_cases()[name]
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(getattr(AxisType, axis_type),) * 2)

    def spec(a):  # the last axis over "model" where it divides, as a tensor-parallel user would
        return NamedSharding(mesh, P(*([None] * (a.ndim - 1)), "model") if a.shape[-1] % 2 == 0 else P())

    params = model.init(jax.random.key(0), x)
    shardings = jax.tree.map(spec, params)
    ref = transform(params, KEY)
    sharded = jax.device_put(params, shardings)
    assert jax.sharding.get_abstract_mesh().empty  # no context mesh anywhere in this test
    if mode == "eager":
        out = transform(sharded, KEY)
    else:  # an Explicit mesh carries the shardings in the types; on an Auto one `out_shardings` says them
        out = jax.jit(transform, out_shardings=shardings if axis_type == "Auto" else None)(sharded, KEY)
    # the sharded programs partition reductions (Gram matrices, a layer's std): float32 rounding
    _assert_same(out, ref, shardings, atol=2e-6)


@pytest.mark.parametrize("name", ["qkv_init fast", "depthwise_conv_init", "mean_shift_init"])
def test_initializers_without_a_context_mesh_fail_under_jit_as_jax_initializers_do(name):
    # On an Explicit mesh `out_sharding=` under `jit` needs `jax.set_mesh`, for JAX's own initializers
    # too: ours raise JAX's message, not one about lowering platforms. Eagerly ours place the array.
    mesh = _mesh("Explicit")
    build, shape = INITIALIZERS[name]
    init = build()
    sharding = NamedSharding(mesh, P(*([None] * (len(shape) - 1)), "x"))

    def draw(k, f):
        return f(k, shape, out_sharding=sharding)

    with pytest.raises(ValueError) as theirs:
        jax.jit(lambda k: draw(k, jax.nn.initializers.lecun_normal()))(KEY)
    with pytest.raises(ValueError) as ours:
        jax.jit(lambda k: draw(k, init))(KEY)
    assert "mesh" in str(theirs.value) and "lowering_platforms" not in str(ours.value)
    assert str(ours.value).split(" of aval")[0] == str(theirs.value).split(" of aval")[0]
    out = draw(KEY, init)
    assert out.sharding.is_equivalent_to(sharding, len(shape))
    np.testing.assert_allclose(np.asarray(out), np.asarray(init(KEY, shape)), atol=1e-6, rtol=0)
