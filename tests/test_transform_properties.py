"""Property-based tests (hypothesis) of the whole-model transforms.

Small models (or parameter dicts) are built from drawn sizes, then: every leaf keeps its
shape and dtype; leaves the transform does not own come back unchanged; the same key gives
the same tree, eagerly and under ``jax.jit``; and a bad option or key drawn from a
strategy raises ``ValueError``/``TypeError`` naming the argument, before anything is drawn.
Sizes come from short lists (each new shape compiles) and the examples are few: the file
takes well under a minute on two cores.
"""

from __future__ import annotations

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mimetic_jax as mj
from mimetic_jax._tree import flatten, path_name
from mimetic_jax.experiments.models import ConvMixer, MambaLM

FAST = settings(max_examples=5, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
FEW = settings(FAST, max_examples=3)
KEY = jax.random.key(0)
DTYPES = st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16])
SEEDS = st.integers(0, 2**31 - 1)
BAD_KEYS = st.sampled_from([None, 0, 1.5, "key", np.zeros(2, np.int32), np.zeros(4, np.uint32), np.zeros(3, np.uint32)])
BAD_REALS = st.sampled_from([float("nan"), float("inf"), -float("inf"), "0.5", None, [1.0]])


def cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def leaves(tree):
    return {path_name(p): v for p, v in flatten(tree).items()}


def assert_same_layout(out, tree):
    """Same paths, shapes and dtypes; every leaf finite."""
    a, b = leaves(out), leaves(tree)
    assert a.keys() == b.keys()
    for name, x in a.items():
        assert x.shape == b[name].shape and x.dtype == b[name].dtype, name
        assert bool(jnp.all(jnp.isfinite(jnp.asarray(x, jnp.float32)))), name


def changed(out, tree):
    a, b = leaves(out), leaves(tree)
    return {n for n in a if not np.array_equal(np.asarray(a[n], np.float32), np.asarray(b[n], np.float32))}


def assert_trees_equal(x, y, atol=0.0):
    for p, v in leaves(x).items():
        np.testing.assert_allclose(
            np.asarray(v, np.float32), np.asarray(leaves(y)[p], np.float32), atol=atol, err_msg=p
        )


def raises_naming(name, call, kinds=(TypeError, ValueError)):
    with pytest.raises(kinds) as info:
        call()
    assert re.search(re.escape(name), str(info.value)), (name, str(info.value))


# --------------------------------------------------------------------------- models from drawn sizes


def attention_params(heads, head_dim, dtype, seed=0):
    width = heads * head_dim
    p = nn.MultiHeadDotProductAttention(num_heads=heads).init(jax.random.key(seed), jnp.ones((1, 2, width)))
    return cast(p, dtype)


def convmixer(width, depth, kernel, dtype, seed=0):
    v = ConvMixer(3, width=width, depth=depth, kernel_size=kernel).init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)))
    return cast(v, dtype)


def mlp_tree(d, hidden, depth, dtype, seed=0):
    g = np.random.default_rng(seed)
    return {
        f"block_{i}": {
            "mlp_in": {"kernel": jnp.asarray(g.standard_normal((d, hidden)), dtype), "bias": jnp.zeros(hidden, dtype)},
            "mlp_out": {"kernel": jnp.asarray(g.standard_normal((hidden, d)), dtype)},
            "norm": {"scale": jnp.ones(d, dtype)},
        }
        for i in range(depth)
    }


def dense_chain(widths, dtype, seed=0):
    g = np.random.default_rng(seed)
    return {
        f"Dense_{i}": {"kernel": jnp.asarray(g.standard_normal((a, b)), dtype), "bias": jnp.asarray(g.random(b), dtype)}
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
    }


_MAMBA: dict = {}


def mamba(version, d_state, dtype):
    if (version, d_state) not in _MAMBA:
        model = MambaLM(vocab_size=8, d_model=16, n_layer=1, d_state=d_state, version=version)
        _MAMBA[version, d_state] = model.init(KEY, jnp.zeros((1, 4), jnp.int32))
    return cast(_MAMBA[version, d_state], dtype)


# --------------------------------------------------------------------------- mimetic_attention


@FEW
@given(
    heads=st.sampled_from([1, 2]),
    head_dim=st.sampled_from([2, 4]),
    dtype=DTYPES,
    seed=SEEDS,
    method=st.sampled_from(["exact", "fast"]),
)
def test_mimetic_attention_keeps_layout_redraws_only_kernels_and_is_deterministic(heads, head_dim, dtype, seed, method):
    tree = attention_params(heads, head_dim, dtype)
    key = jax.random.key(seed)
    out = mj.mimetic_attention(tree, key, method=method)
    assert_same_layout(out, tree)
    assert changed(out, tree) <= {n for n in leaves(tree) if n.endswith("/kernel")}
    assert all(n.endswith("/kernel") for n in changed(out, tree))
    assert_trees_equal(mj.mimetic_attention(tree, key, method=method), out)
    jitted = jax.jit(lambda t, k: mj.mimetic_attention(t, k, method=method))(tree, key)
    assert_trees_equal(jitted, out, atol=1e-5 if dtype == jnp.float32 else 1e-2)


@FAST
@given(
    arg=st.sampled_from(["alpha", "beta", "value_alpha", "value_beta"]),
    bad=st.one_of(BAD_REALS, st.floats(1e20, 1e300)),
)
def test_mimetic_attention_bad_real_options_name_the_argument(arg, bad):
    raises_naming(arg, lambda: mj.mimetic_attention(attention_params(2, 2, jnp.float32), KEY, **{arg: bad}))


@FAST
@given(bad=BAD_KEYS, which=st.sampled_from(["attention", "conv", "ssm", "mimetic"]))
def test_every_keyed_transform_names_a_bad_key(bad, which):
    calls = {
        "attention": lambda: mj.mimetic_attention(attention_params(2, 2, jnp.float32), bad),
        "conv": lambda: mj.mimetic_conv(convmixer(4, 1, 3, jnp.float32), bad),
        "ssm": lambda: mj.mimetic_ssm(mamba(1, 4, jnp.float32), bad),
        "mimetic": lambda: mj.mimetic(attention_params(2, 2, jnp.float32), bad, preset="vit"),
    }
    raises_naming("key", calls[which])


@FAST
@given(
    arg=st.sampled_from(["num_heads", "num_kv_heads"]),
    bad=st.one_of(st.integers(max_value=0), st.integers(2**31, 2**70), st.sampled_from([1.5, "2", True])),
)
def test_flat_attention_head_counts_name_the_argument(arg, bad):
    flat = {"attn": {n: {"kernel": jnp.zeros((8, 8))} for n in ("q_proj", "k_proj", "v_proj", "o_proj")}}
    kw = {"num_heads": 2, arg: bad}
    raises_naming(arg, lambda: mj.mimetic_attention(flat, KEY, **kw))


@FEW
@given(dtype=st.sampled_from([jnp.int32, jnp.int8, jnp.bool_, jnp.complex64]), which=st.sampled_from(["attn", "conv"]))
def test_non_float_kernels_are_rejected_with_the_kernel_named(dtype, which):
    if which == "attn":
        tree = jax.tree.map(lambda x: x.astype(dtype), attention_params(2, 2, jnp.float32))
        call = lambda: mj.mimetic_attention(tree, KEY)
    else:
        tree = jax.tree.map(lambda x: x.astype(dtype), convmixer(4, 1, 3, jnp.float32))
        call = lambda: mj.mimetic_conv(tree, KEY)
    raises_naming("kernel", call, TypeError)


# --------------------------------------------------------------------------- mimetic_conv


@FAST
@given(
    width=st.sampled_from([2, 4]),
    depth=st.sampled_from([1, 2]),
    kernel=st.sampled_from([3, 5]),
    dtype=DTYPES,
    seed=SEEDS,
)
def test_mimetic_conv_keeps_layout_redraws_only_depthwise_kernels_and_is_deterministic(
    width, depth, kernel, dtype, seed
):
    tree = convmixer(width, depth, kernel, dtype)
    key = jax.random.key(seed)
    out = mj.mimetic_conv(tree, key)
    assert_same_layout(out, tree)
    sites = {path_name(s.path) for s in mj.find_depthwise_convs(tree)}
    assert len(sites) == depth
    assert changed(out, tree) <= sites
    assert_trees_equal(mj.mimetic_conv(tree, key), out)
    assert_trees_equal(jax.jit(mj.mimetic_conv)(tree, key), out, atol=1e-6 if dtype == jnp.float32 else 1e-2)
    mask = mj.freeze_mask(tree)
    assert {n for n, v in leaves(mask).items() if v} == sites


@FAST
@given(
    arg=st.sampled_from(["sigma_start", "sigma_end", "scale"]),
    bad=st.one_of(BAD_REALS.filter(lambda v: v is not None), st.floats(max_value=0.0), st.floats(1e160, 1e300)),
)
def test_mimetic_conv_bad_options_name_the_argument(arg, bad):
    raises_naming(arg, lambda: mj.mimetic_conv(convmixer(4, 1, 3, jnp.float32), KEY, **{arg: bad}))


# --------------------------------------------------------------------------- mimetic_mlp


@FAST
@given(
    d=st.sampled_from([2, 4]),
    hidden=st.sampled_from([3, 8]),
    depth=st.integers(1, 3),
    mean=st.floats(-1.0, 1.0),
    dtype=DTYPES,
)
def test_mimetic_mlp_shifts_only_the_first_kernels_and_jit_agrees(d, hidden, depth, mean, dtype):
    tree = mlp_tree(d, hidden, depth, dtype)
    out = mj.mimetic_mlp(tree, mean=mean)
    assert_same_layout(out, tree)
    firsts = {f"block_{i}/mlp_in/kernel" for i in range(depth)}
    assert changed(out, tree) <= firsts
    assert_trees_equal(jax.jit(lambda t: mj.mimetic_mlp(t, mean=mean))(tree), out)


@FAST
@given(bad=st.one_of(BAD_REALS, st.floats(1e39, 1e300)), dtype=st.sampled_from([jnp.float32, jnp.float16]))
def test_mimetic_mlp_bad_mean_names_it(bad, dtype):
    raises_naming("mean", lambda: mj.mimetic_mlp(mlp_tree(2, 3, 1, dtype), mean=bad))


# --------------------------------------------------------------------------- mimetic_ssm


@FEW
@given(version=st.sampled_from([1, 2]), d_state=st.sampled_from([2, 4]), dtype=DTYPES, seed=SEEDS)
def test_mimetic_ssm_keeps_layout_and_is_deterministic(version, d_state, dtype, seed):
    tree = mamba(version, d_state, dtype)
    key = jax.random.key(seed)
    ssm = functools.partial(mj.mimetic_ssm, ngroups=1)  # the fixture's Mamba-2 has G = 1; shapes fit G = 2 too
    out = ssm(tree, key)
    assert_same_layout(out, tree)
    assert all("mixer" in n for n in changed(out, tree))  # embeddings and norms untouched
    assert_trees_equal(ssm(tree, key), out)
    assert_trees_equal(jax.jit(ssm)(tree, key), out, atol=1e-5 if dtype == jnp.float32 else 1e-2)


@FAST
@given(
    arg=st.sampled_from(["delta", "alpha", "beta", "a_log_range"]),
    bad=st.one_of(BAD_REALS.filter(lambda v: v is not None), st.floats(1e300, 1e308)),
)
def test_mimetic_ssm_bad_options_name_the_argument(arg, bad):
    kw = {arg: (bad, -4.0) if arg == "a_log_range" else bad}
    name = "low" if arg == "a_log_range" else arg
    raises_naming(name, lambda: mj.mimetic_ssm(mamba(1, 4, jnp.float32), KEY, **kw))


# --------------------------------------------------------------------------- emergence_scale


@FAST
@given(widths=st.lists(st.sampled_from([2, 3]), min_size=2, max_size=6), alpha=st.floats(0.25, 4.0), dtype=DTYPES)
def test_emergence_scale_multiplies_each_kernel_by_its_factor_only(widths, alpha, dtype):
    tree = dense_chain(widths, dtype)
    out = mj.emergence_scale(tree, alpha=alpha)
    assert_same_layout(out, tree)
    factors = mj.emergence_factors(len(widths) - 1, alpha)
    for i, c in enumerate(factors):
        name = f"Dense_{i}"
        np.testing.assert_array_equal(out[name]["bias"], tree[name]["bias"])
        want = np.asarray(tree[name]["kernel"], np.float32) * c
        np.testing.assert_allclose(
            np.asarray(out[name]["kernel"], np.float32), want, rtol=1e-2 if dtype != jnp.float32 else 1e-6
        )
    assert_trees_equal(jax.jit(lambda t: mj.emergence_scale(t, alpha=alpha))(tree), out)


EMERGENCE_BAD = {
    "alpha": [float("nan"), float("inf"), -1.0, 0.0, "x", None, 1e300],
    "pivot": [99, -1, "x", 1.5],
    "kernel": ["", 3, None],
}


@FAST
@given(arg_bad=st.sampled_from([(a, b) for a, bs in EMERGENCE_BAD.items() for b in bs]))
def test_emergence_scale_bad_options_name_the_argument(arg_bad):
    arg, bad = arg_bad
    raises_naming(arg, lambda: mj.emergence_scale(dense_chain([2, 3, 2], jnp.float32), **{arg: bad}))


# --------------------------------------------------------------------------- mimetic / mimetic_plan


@FEW
@given(heads=st.sampled_from([1, 2]), head_dim=st.sampled_from([2, 4]), dtype=DTYPES, seed=SEEDS)
def test_mimetic_changes_exactly_what_its_plan_lists(heads, head_dim, dtype, seed):
    tree = {
        "attn": attention_params(heads, head_dim, dtype)["params"],
        **mlp_tree(heads * head_dim, 3, 1, dtype),
    }
    plan = mj.mimetic_plan(tree, preset="vit")
    out, report = mj.mimetic(tree, jax.random.key(seed), preset="vit", report=True)
    assert report == plan
    planned = {p for e in plan.entries for p in e.paths}
    assert_same_layout(out, tree)
    assert changed(out, tree) <= planned
    jitted = jax.jit(lambda t, k: mj.mimetic(t, k, preset="vit"))(tree, jax.random.key(seed))
    assert_trees_equal(jitted, out, atol=1e-5 if dtype == jnp.float32 else 1e-2)


@FAST
@given(
    preset=st.one_of(st.text(max_size=6).filter(lambda s: s not in mj.PRESETS), st.integers(), st.just(None)),
    with_rules=st.booleans(),
)
def test_mimetic_plan_bad_preset_names_it(preset, with_rules):
    tree = attention_params(2, 2, jnp.float32)
    if preset is None and not with_rules:
        raises_naming("preset", lambda: mj.mimetic_plan(tree))
        return
    if preset is None:
        raises_naming("rules", lambda: mj.mimetic_plan(tree, rules=[3]))
        return
    raises_naming("preset", lambda: mj.mimetic_plan(tree, preset=preset))


# --------------------------------------------------------------------------- analyze


@FEW
@given(heads=st.sampled_from([1, 2]), head_dim=st.sampled_from([2, 4]), dtype=DTYPES)
def test_analyze_scores_every_block_found_with_finite_numbers(heads, head_dim, dtype):
    tree = {"attn": attention_params(heads, head_dim, dtype)["params"], **mlp_tree(heads * head_dim, 3, 2, dtype)}
    a = mj.analyze(tree)
    assert len(a.attention) == len(mj.find_attention_blocks(tree)) == 1
    assert len(a.attention[0].qk_diag_ratio) == heads
    assert len(a.mlp) == 2
    for x in jax.tree.leaves(a.to_dict()):
        if isinstance(x, float):
            assert np.isfinite(x)


@FAST
@given(
    arg=st.sampled_from(["num_heads", "length", "ngroups", "stacked_axes"]),
    bad=st.sampled_from([0, -1, 1.5, "2", True]),
)
def test_analyze_bad_arguments_name_them(arg, bad):
    if arg == "stacked_axes" and bad == 0:
        bad = -1
    raises_naming(arg, lambda: mj.analyze(attention_params(2, 2, jnp.float32), **{arg: bad}))


# --------------------------------------------------------------------------- fuse_params


@FAST
@given(
    dims=st.sampled_from([(3, 4, 2), (2, 5, 3), (4, 4, 4)]),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
    seed=SEEDS,
    moments=st.booleans(),
)
def test_fuse_params_writes_only_the_fused_layer_in_its_shape_and_dtype(dims, dtype, seed, moments):
    d_in, d_hid, d_out = dims
    deep = {**dense_chain([d_in, d_hid, d_out], dtype, seed), "head": {"kernel": jnp.ones((d_out, 1), dtype)}}
    shallow = {"Dense_0": {"kernel": jnp.zeros((d_in, d_out), dtype), "bias": jnp.zeros(d_out, dtype)}}
    shallow["head"] = deep["head"]
    if moments:
        out = mj.fuse_params(deep, shallow, 0, mean=0.0, cov=1.0)
    else:
        x = jnp.asarray(np.random.default_rng(seed).standard_normal((16, d_in)), dtype)
        out = mj.fuse_params(deep, shallow, 0, inputs=x)
    assert_same_layout(out, shallow)
    assert changed(out, shallow) <= {"Dense_0/kernel", "Dense_0/bias"}


@FAST
@given(
    index=st.one_of(st.integers(max_value=-1), st.integers(min_value=1), st.sampled_from([None, 0.0, "0", True])),
)
def test_fuse_params_bad_index_names_it(index):
    deep = dense_chain([3, 4, 2], jnp.float32)
    shallow = {"Dense_0": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}}
    raises_naming("index", lambda: mj.fuse_params(deep, shallow, index, mean=0.0, cov=1.0))
