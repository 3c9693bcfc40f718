"""Emergence-promoting scaling and the emergence measure (SPEC §5): invariances, factors, measure, errors."""

from __future__ import annotations

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mimetic_jax as mj
from mimetic_jax.experiments.models import ViT


def bias_free_mlp(depth: int, width: int = 16, out: int = 3) -> nn.Sequential:
    layers = []
    for _ in range(depth - 1):
        layers += [nn.Dense(width, use_bias=False), nn.relu]
    return nn.Sequential(layers + [nn.Dense(out, use_bias=False)])


def kernels(params) -> dict[str, np.ndarray]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat if "kernel" in jax.tree_util.keystr(p)}


X = jax.random.normal(jax.random.key(7), (32, 5))


# --------------------------------------------------------------------------- scaling: function and factors


@pytest.mark.parametrize("depth", [3, 5])
@pytest.mark.parametrize("alpha", [1.1, 3.0])
def test_odd_depth_bias_free_relu_mlp_computes_the_same_function(depth, alpha):
    mlp = bias_free_mlp(depth)
    params = mlp.init(jax.random.key(0), X)
    scaled = mj.emergence_scale(params, alpha=alpha)
    assert not np.allclose(kernels(params)[next(iter(kernels(params)))], kernels(scaled)[next(iter(kernels(scaled)))])
    np.testing.assert_allclose(mlp.apply(scaled, X), mlp.apply(params, X), rtol=1e-5, atol=1e-5)


def test_even_depth_bias_free_relu_mlp_output_scales_by_alpha_to_minus_half_depth():
    mlp, alpha = bias_free_mlp(4), 1.5
    params = mlp.init(jax.random.key(0), X)
    scaled = mj.emergence_scale(params, alpha=alpha)
    np.testing.assert_allclose(mlp.apply(scaled, X), alpha**-2 * mlp.apply(params, X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "depth,expected",
    [
        (4, (1 / 4, 1 / 2, 1, 2)),  # pivot 2: c_k = 2^(k-2)
        (5, (1 / 4, 1 / 2, 1, 2, 4)),  # pivot 2, product 1
        (1, (1,)),
    ],
)
def test_factors_are_alpha_to_k_minus_floor_half_depth(depth, expected):
    assert mj.emergence_factors(depth, alpha=2.0) == pytest.approx(expected, rel=1e-12)
    mlp = bias_free_mlp(depth) if depth > 1 else nn.Dense(3, use_bias=False)
    params = mlp.init(jax.random.key(1), X)
    before, after = kernels(params), kernels(mj.emergence_scale(params, alpha=2.0))
    ratios = [float(np.median(after[k] / before[k])) for k in before]  # dict order = forward order here
    assert ratios == pytest.approx(expected, rel=1e-6)
    for k in before:
        np.testing.assert_allclose(after[k], before[k] * ratios[list(before).index(k)], rtol=1e-6)


def test_explicit_pivot_moves_the_unit_factor():
    assert mj.emergence_factors(3, alpha=2.0, pivot=0) == pytest.approx((1, 2, 4))


@pytest.mark.parametrize("depth", range(1, 9))
def test_symmetric_pivot_factors_multiply_to_one_for_every_depth(depth):
    for alpha in (1.1, 1.5, 3.0):
        factors = mj.emergence_factors(depth, alpha=alpha, pivot="symmetric")
        assert math.prod(factors) == pytest.approx(1.0, rel=1e-13, abs=0)
        # exponents k - (L-1)/2: consecutive ratios are alpha, symmetric about the middle
        assert [b / a for a, b in itertools.pairwise(factors)] == pytest.approx([alpha] * (depth - 1), rel=1e-13)
        assert [a * b for a, b in zip(factors, factors[::-1])] == pytest.approx([1.0] * depth, rel=1e-13)


@pytest.mark.parametrize("depth", [1, 3, 5, 7])
def test_symmetric_pivot_is_bit_identical_to_the_default_for_odd_depth(depth):
    assert mj.emergence_factors(depth, 1.37, "symmetric") == mj.emergence_factors(depth, 1.37)


def test_default_pivot_is_unchanged_by_the_symmetric_option():
    assert mj.emergence_factors(4, alpha=2.0) == (0.25, 0.5, 1.0, 2.0)
    assert mj.emergence_factors(6, alpha=2.0) == (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


@pytest.mark.parametrize("depth", [2, 4, 6])
def test_symmetric_pivot_keeps_an_even_depth_bias_free_relu_mlp_function(depth):
    mlp, alpha = bias_free_mlp(depth), 1.5
    params = mlp.init(jax.random.key(0), X)
    scaled = mj.emergence_scale(params, alpha=alpha, pivot="symmetric")
    before, after = kernels(params), kernels(scaled)
    assert all(not np.allclose(before[k], after[k]) for k in before)  # every layer is scaled
    ref = mlp.apply(params, X)
    np.testing.assert_allclose(mlp.apply(scaled, X), ref, rtol=1e-5, atol=1e-6)
    # the default pivot does not: it scales the output by alpha^(-L/2)
    default = mlp.apply(mj.emergence_scale(params, alpha=alpha), X)
    np.testing.assert_allclose(default, alpha ** (-depth / 2) * ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(default, ref, rtol=1e-2)


def test_symmetric_pivot_reaches_emergence_init_and_emergence_layers():
    base = jax.nn.initializers.lecun_normal()
    key = jax.random.key(3)
    w = mj.emergence_init(base, layer=0, num_layers=4, alpha=4.0, pivot="symmetric")(key, (3, 3))
    np.testing.assert_allclose(w, base(key, (3, 3)) / 8, rtol=1e-6)
    params = bias_free_mlp(4).init(jax.random.key(0), X)
    factors = [l.factor for l in mj.emergence_layers(params, alpha=4.0, pivot="symmetric")]
    assert factors == pytest.approx([1 / 8, 1 / 2, 2, 8], rel=1e-12)


@pytest.mark.parametrize("pivot", ["middle", "SYMMETRIC", ""])
def test_unknown_pivot_string_is_an_error(pivot):
    with pytest.raises(ValueError, match=r"pivot must be an int layer index, None or 'symmetric', got"):
        mj.emergence_factors(4, 1.1, pivot)


def test_measure_falls_with_alpha_through_lost_active_units_not_the_path_convention():
    """Module docstring: the scales compound through the ReLU layers, hidden units drop below the threshold."""
    mlp = bias_free_mlp(5, width=64)
    x = jax.random.normal(jax.random.key(11), (64, 5))
    params = mlp.init(jax.random.key(2), x)

    def activations(p):
        out, h = [x], x
        for i, w in enumerate(kernels(p).values()):  # forward order
            h = h @ w if i == 4 else jax.nn.relu(h @ w)
            out.append(h)
        np.testing.assert_allclose(h, mlp.apply(p, x), rtol=1e-5, atol=1e-6)
        return out

    acts = {a: activations(mj.emergence_scale(params, alpha=a)) for a in (1.0, 2.0)}
    active = {a: [float((h > 0.05).mean()) for h in v[1:-1]] for a, v in acts.items()}
    assert all(s < b for s, b in zip(active[2.0], active[1.0]))  # every hidden layer loses active units
    for paths in ("all", "to_output"):  # both readings of "paths" fall
        e = {a: mj.emergence_measure(v, paths=paths, log=True).mean() for a, v in acts.items()}
        assert e[2.0] < e[1.0] - 1.0
    # activity by sign (threshold 0) is invariant to positive scaling: then E does not move at all
    e0 = {a: mj.emergence_measure(v, threshold=0.0) for a, v in acts.items()}
    np.testing.assert_array_equal(e0[2.0], e0[1.0])


def test_biases_and_norm_parameters_are_untouched():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.LayerNorm()(nn.Dense(8)(x)))
            x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Dense(8)(x)))
            return nn.Dense(2)(x)

    variables = jax.jit(Net().init)(jax.random.key(0), X)
    scaled = mj.emergence_scale(variables, alpha=1.7)
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_flatten_with_path(variables)[0], jax.tree_util.tree_flatten_with_path(scaled)[0]
    ):
        if "kernel" not in jax.tree_util.keystr(path):
            np.testing.assert_array_equal(a, b)
    assert len(mj.emergence_layers(variables)) == 3


def test_initializer_form_equals_base_draw_times_factor_in_caller_dtype():
    base = jax.nn.initializers.glorot_normal()
    key = jax.random.key(3)
    for layer, c in enumerate(mj.emergence_factors(3, alpha=1.3)):
        init = mj.emergence_init(base, layer, 3, alpha=1.3)
        np.testing.assert_allclose(init(key, (6, 4)), c * base(key, (6, 4)), rtol=1e-6)
        w = init(key, (6, 4), jnp.bfloat16)
        assert w.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(w, np.float32), c * np.asarray(base(key, (6, 4)), np.float32), rtol=1e-2)


def test_scale_under_jit_equals_eager_and_keeps_dtypes():
    mlp = bias_free_mlp(3)
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), mlp.init(jax.random.key(0), X))
    eager = mj.emergence_scale(params, alpha=1.2)
    jitted = jax.jit(lambda p: mj.emergence_scale(p, alpha=1.2))(params)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        assert a.dtype == b.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_scale_keeps_shardings_eagerly_and_under_jit_with_out_shardings():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    mlp = bias_free_mlp(3, width=16)
    params = mlp.init(jax.random.key(0), X)
    shardings = jax.tree.map(lambda a: NamedSharding(mesh, P(None, "x") if a.shape[-1] % 8 == 0 else P()), params)
    sharded = jax.device_put(params, shardings)
    eager = mj.emergence_scale(sharded, alpha=1.3)
    jitted = jax.jit(lambda p: mj.emergence_scale(p, alpha=1.3), out_shardings=shardings)(sharded)
    for a, b, s in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), jax.tree.leaves(shardings)):
        assert a.sharding.is_equivalent_to(s, a.ndim) and b.sharding.is_equivalent_to(s, b.ndim)
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- forward order and grouping


def test_numbered_layers_of_a_jitted_init_are_put_in_numeric_order():
    mlp = bias_free_mlp(12, width=4)
    params = jax.eval_shape(
        mlp.init, jax.random.key(0), X
    )  # jit/eval_shape sort keys: layers_0, layers_10, layers_12, layers_14, ...
    names = [layer.names[0] for layer in mj.emergence_layers(params)]
    assert names == [f"params/layers_{2 * i}/kernel" for i in range(12)]


def test_residual_blocks_share_one_index_and_forward_order_fixes_sorted_keys():
    model = ViT(10, width=8, depth=3, num_heads=2)
    x = jnp.zeros((1, 8, 8, 1))
    order = mj.forward_order(model, x)
    assert [unit[0].split("/")[0] for unit in order] == ["patch_embed", "block_0", "block_1", "block_2", "head"]
    params = jax.jit(model.init)(jax.random.key(0), x)  # keys sorted: block_*, head, ln_final, patch_embed
    layers = mj.emergence_layers(params, alpha=2.0, order=order)
    assert [len(layer.paths) for layer in layers] == [1, 6, 6, 6, 1]  # q, k, v, out, mlp_in, mlp_out per block
    scaled = mj.emergence_scale(params, alpha=2.0, order=order)
    for name, c in [("patch_embed", 0.25), ("block_0", 0.5), ("block_1", 1.0), ("block_2", 2.0), ("head", 4.0)]:
        ks, ka = kernels(params["params"][name]), kernels(scaled["params"][name])
        for k in ks:
            np.testing.assert_allclose(ka[k], c * ks[k], rtol=1e-6)


def test_dict_in_definition_order_groups_top_level_units_and_expands_lists():
    w = jnp.ones((2, 2))
    params = {
        "params": {
            "patch_embed": {"kernel": w, "bias": jnp.zeros(2)},
            "encoder": {
                "layers_0": {"attn": {"query": {"kernel": w}}, "Dense_0": {"kernel": w}, "Dense_1": {"kernel": w}},
                "layers_1": {"attn": {"query": {"kernel": w}}, "Dense_0": {"kernel": w}, "Dense_1": {"kernel": w}},
                "norm": {"scale": jnp.ones(2)},
            },
            "head": {"kernel": w},
        }
    }
    layers = mj.emergence_layers(params, alpha=2.0)
    assert [layer.names for layer in layers] == [
        ("params/patch_embed/kernel",),
        tuple(f"params/encoder/layers_0/{m}/kernel" for m in ("attn/query", "Dense_0", "Dense_1")),
        tuple(f"params/encoder/layers_1/{m}/kernel" for m in ("attn/query", "Dense_0", "Dense_1")),
        ("params/head/kernel",),
    ]
    assert [layer.factor for layer in layers] == [0.25, 0.5, 1.0, 2.0]


def test_nnx_module_uses_definition_order_expands_lists_and_updates_in_place():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.zeta_in = nnx.Linear(5, 8, use_bias=False, rngs=rngs)
            self.blocks = nnx.List([nnx.Linear(8, 8, use_bias=False, rngs=rngs) for _ in range(11)])
            self.alpha_out = nnx.Linear(8, 3, use_bias=False, rngs=rngs)

        def __call__(self, x):
            x = self.zeta_in(x)
            for b in self.blocks:
                x = b(nnx.relu(x))
            return self.alpha_out(nnx.relu(x))

    net = Net(nnx.Rngs(0))
    y = net(X)
    names = [layer.names[0] for layer in mj.emergence_layers(net)]
    assert names == ["zeta_in/kernel"] + [f"blocks/{i}/kernel" for i in range(11)] + ["alpha_out/kernel"]
    w0 = np.asarray(net.zeta_in.kernel[...])
    out = mj.emergence_scale(net, alpha=1.5)  # 13 layers, odd: same function
    assert out is net
    np.testing.assert_allclose(np.asarray(net.zeta_in.kernel[...]), w0 * 1.5**-6, rtol=1e-6)
    np.testing.assert_allclose(net(X), y, rtol=1e-4, atol=1e-5)


def test_nnx_state_returns_a_new_state():
    net = nnx.Sequential(nnx.Linear(5, 4, rngs=nnx.Rngs(0)), nnx.Linear(4, 2, rngs=nnx.Rngs(1)))
    state = nnx.state(net, nnx.Param)
    new = mj.emergence_scale(state, alpha=2.0)
    assert isinstance(new, nnx.State)
    k_old, k_new = kernels(nnx.to_pure_dict(state)), kernels(nnx.to_pure_dict(new))
    assert [float(np.median(k_new[k] / k_old[k])) for k in k_old] == pytest.approx([0.5, 1.0])


def test_explicit_order_scales_only_named_layers_and_groups_lists():
    mlp = bias_free_mlp(3)
    params = mlp.init(jax.random.key(0), X)
    scaled = mj.emergence_scale(params, alpha=2.0, order=[["layers_0", "params/layers_2"], ("layers_4",)])
    before, after = kernels(params), kernels(scaled)
    ratios = [float(np.median(after[k] / before[k])) for k in before]
    assert ratios == pytest.approx([0.5, 0.5, 1.0])  # 2 layers, pivot 1
    part = kernels(mj.emergence_scale(params, alpha=2.0, order=["layers_2", "layers_4"]))
    np.testing.assert_array_equal(part[next(iter(part))], before[next(iter(before))])  # layers_0 not named


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("alpha", [0.0, -1.1])
def test_alpha_not_positive_is_an_error(alpha):
    params = bias_free_mlp(3).init(jax.random.key(0), X)
    with pytest.raises(ValueError, match=r"alpha must be > 0.*got"):
        mj.emergence_scale(params, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        mj.emergence_factors(3, alpha)


def test_alpha_not_finite_or_not_a_number_is_an_error():
    with pytest.raises(ValueError, match="alpha must be finite"):
        mj.emergence_factors(3, float("nan"))
    with pytest.raises(TypeError, match="alpha must be a real number"):
        mj.emergence_factors(3, "1.1")


@pytest.mark.parametrize("pivot", [3, -1])
def test_pivot_outside_the_layers_is_an_error(pivot):
    params = bias_free_mlp(3).init(jax.random.key(0), X)
    with pytest.raises(ValueError, match=r"pivot must be a layer index in \[0, 2\] \(3 layers\), got"):
        mj.emergence_scale(params, alpha=1.1, pivot=pivot)


def test_order_naming_missing_paths_is_an_error():
    params = bias_free_mlp(3).init(jax.random.key(0), X)
    with pytest.raises(ValueError, match=r"order\[1\] names 'layers_1', which holds no kernel"):
        mj.emergence_scale(params, order=["layers_0", "layers_1"])
    with pytest.raises(ValueError, match=r"order\[1\] and order\[0\] both contain"):
        mj.emergence_scale(params, order=["layers_0", ["layers_2", "layers_0"]])
    with pytest.raises(TypeError, match="order must be a non-empty sequence"):
        mj.emergence_scale(params, order="layers_0")


def test_tree_without_kernels_and_bad_initializer_arguments_are_errors():
    with pytest.raises(ValueError, match="no 'kernel' leaf"):
        mj.emergence_scale({"params": {"LayerNorm_0": {"scale": jnp.ones(3)}}})
    with pytest.raises(TypeError, match="tree must be"):
        mj.emergence_scale(3)
    with pytest.raises(ValueError, match="no 'kernel' leaf"):  # a pytree without kernels (any pytree is accepted)
        mj.emergence_scale([jnp.ones(3)])
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, 2\]"):
        mj.emergence_init(jax.nn.initializers.lecun_normal(), 3, 3)
    with pytest.raises(TypeError, match="base must be an initializer"):
        mj.emergence_init("he", 0, 3)
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        mj.emergence_init(jax.nn.initializers.lecun_normal(), 0, 3)(jax.random.key(0), (2, 2), jnp.int32)


# --------------------------------------------------------------------------- the measure


def brute_force_measure(active: list[np.ndarray], adjacency: list[np.ndarray], paths: str) -> int:
    """Enumerate every path explicitly (no memoization) on one example."""
    last = len(active) - 1

    def walks(l: int, i: int) -> int:  # paths starting at active node (l, i), all nodes active
        count = 1 if (paths == "all" or l == last) else 0
        if l < last:
            for j in np.flatnonzero(adjacency[l][i]):
                if active[l + 1][j]:
                    count += walks(l + 1, j)
        return count

    total = 0
    for l in range(last):
        for x in np.flatnonzero(~active[l]):
            for y in np.flatnonzero(adjacency[l][x]):
                if active[l + 1][y]:
                    total += walks(l + 1, y)
    return total


@pytest.mark.parametrize("paths", ["all", "to_output"])
def test_measure_equals_brute_force_path_enumeration_on_random_graphs(paths):
    rng = np.random.default_rng(0)
    for trial in range(20):
        widths = rng.integers(1, 6, size=rng.integers(2, 6))
        batch = 3
        acts = [rng.normal(size=(batch, w)) for w in widths]
        adj = [rng.random((a, b)) < 0.6 for a, b in zip(widths[:-1], widths[1:])]
        got = mj.emergence_measure(acts, adjacency=adj, paths=paths)
        got_log = mj.emergence_measure(acts, adjacency=adj, paths=paths, log=True)
        dense = mj.emergence_measure(acts, paths=paths)
        full = [np.ones_like(a) for a in adj]
        for b in range(batch):
            active = [a[b] > 0.05 for a in acts]
            ref = brute_force_measure(active, adj, paths)
            assert got[b] == ref, (trial, b)
            assert (np.exp(got_log[b]) == pytest.approx(ref, rel=1e-12)) if ref else got_log[b] == -np.inf
            assert dense[b] == brute_force_measure(active, full, paths)


def test_closed_form_counts_example_by_hand():
    x = np.array([[1.0, 0.0, 0.01]])  # 1 active of 3 (0.01 < threshold)
    h = np.array([[0.2, 0.3, -1.0]])  # 2 of 3
    y = np.array([[0.5, 0.0]])  # 1 of 2
    # all paths: Q_2 = 1, Q_1 = 1 + 1 = 2; E = (3-1)·2·2 + (3-2)·1·1 = 9.  to_output: 2·2·1 + 1·1 = 5.
    assert mj.emergence_measure([x, h, y])[0] == 9
    assert mj.emergence_measure([x, h, y], paths="to_output")[0] == 5


def test_measure_is_finite_for_wide_and_deep_networks():
    rng = np.random.default_rng(1)
    acts = [rng.normal(size=(4, 2048)) for _ in range(13)]  # E ~ 1000^12: beyond float32, fine in float64
    e = mj.emergence_measure(acts)
    assert np.all(np.isfinite(e)) and np.all(e > 3.4e38)
    np.testing.assert_allclose(np.log(e), mj.emergence_measure(acts, log=True), rtol=1e-12)
    deep = [rng.normal(size=(2, 1024)) for _ in range(150)]  # E ~ 500^149 overflows float64; log E does not
    log_e = mj.emergence_measure(deep, log=True)
    assert np.all(np.isfinite(log_e)) and np.all(log_e > 800)
    assert np.all(np.isinf(mj.emergence_measure(deep)))
    log_graph = mj.emergence_measure(deep[:40], log=True, adjacency=[np.ones((1024, 1024), bool)] * 39)
    np.testing.assert_allclose(log_graph, mj.emergence_measure(deep[:40], log=True), rtol=1e-12)


def test_channel_nodes_are_spatial_means_of_feature_maps():
    rng = np.random.default_rng(2)
    fmap = rng.normal(size=(2, 4, 4, 3))
    vec = rng.normal(size=(2, 5))
    by_channel = mj.emergence_measure([fmap, vec], node="channel")
    np.testing.assert_array_equal(by_channel, mj.emergence_measure([fmap.mean(axis=(1, 2)), vec]))
    by_unit = mj.emergence_measure([fmap, vec], node="unit")
    np.testing.assert_array_equal(by_unit, mj.emergence_measure([fmap.reshape(2, -1), vec]))


def test_measure_bad_input_errors():
    a = np.ones((2, 3))
    with pytest.raises(ValueError, match="at least two arrays"):
        mj.emergence_measure([a])
    with pytest.raises(ValueError, match=r"activations\[1\] has batch size 3, the first activation has 2"):
        mj.emergence_measure([a, np.ones((3, 3))])
    with pytest.raises(ValueError, match=r"activations\[0\] must have a batch axis.*got shape \(3,\)"):
        mj.emergence_measure([np.ones(3), a])
    with pytest.raises(ValueError, match=r"adjacency\[0\] must have shape \(3, 3\).*got \(3, 2\)"):
        mj.emergence_measure([a, a], adjacency=[np.ones((3, 2))])
    with pytest.raises(ValueError, match="one matrix per pair"):
        mj.emergence_measure([a, a], adjacency=[])
    with pytest.raises(ValueError, match="paths must be one of"):
        mj.emergence_measure([a, a], paths="some")
    with pytest.raises(ValueError, match="threshold must be finite"):
        mj.emergence_measure([a, a], threshold=math.inf)
