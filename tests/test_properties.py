"""Property-based tests (hypothesis) of every public callable of the scheme modules.

For each callable: random valid inputs give finite outputs of the documented shape and
dtype; random bad inputs raise the documented error naming the argument; and, for the
initializers that take a key, the same key gives the same array eagerly, under
``jax.jit`` and under ``jax.vmap``. Sizes are small and drawn from short lists (so jit
caches hit) and the default run uses few examples: the whole file takes well under a
minute on two cores. The ``slow`` variants (``-m slow``) rerun every property with 60 examples.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mimetic_jax as mj
from mimetic_jax import _checks
from mimetic_jax.fuse import Moments

FAST = settings(max_examples=6, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))

DTYPES = st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16])
SEEDS = st.integers(0, 2**31 - 1)


def prop(examples=3, **strategies):
    """Build a fast test (``examples`` examples: each new shape or dtype compiles) and a ``slow`` one."""

    def deco(body):
        fast = settings(FAST, max_examples=examples)(given(**strategies)(body))
        slow = pytest.mark.slow(SLOW(given(**strategies)(body)))
        return fast, slow

    return deco


def finite(x, shape, dtype):
    x = jnp.asarray(x)
    assert x.shape == tuple(shape), (x.shape, shape)
    assert x.dtype == jnp.dtype(dtype), (x.dtype, dtype)
    assert bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))), "non-finite output"


def same_key_same_array(fn, seed, atol=0.0):
    """``fn(key)`` eagerly == under jit == under vmap (row i of a vmapped batch of keys).

    ``fn`` is a module-level function so that ``jax.jit(fn)`` hits the compilation cache
    from one example to the next.
    """
    keys = jax.random.split(jax.random.key(seed), 2)
    eager = [fn(k) for k in keys]
    jitted = jax.jit(fn)(keys[0])
    mapped = jax.vmap(fn)(keys)
    for got, i in ((jitted, 0), (mapped[0], 0), (mapped[1], 1)):
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(eager[i], np.float32), rtol=atol, atol=atol)


def rng(seed):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- bad-input strategies

BAD_KEYS = st.sampled_from(
    [
        None,
        0,
        3,
        1.0,
        "key",
        np.zeros(2, np.int32),
        np.zeros(4, np.uint32),
        np.zeros((2, 2), np.uint32),
        np.zeros(2, np.float32),
    ]
)
BAD_SIZES = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=2**31, max_value=2**70),
    st.sampled_from([1.5, "8", None, True, 2.0]),
)
BAD_REALS = st.sampled_from([float("nan"), float("inf"), -float("inf"), "0.5", None, [1.0]])


def raises_naming(kinds, name, call):
    with pytest.raises(kinds) as info:
        call()
    assert re.search(re.escape(name), str(info.value)), (name, str(info.value))


# --------------------------------------------------------------------------- attention sizes / keys


def _query_key_valid(d_in, heads, k, method, dtype, seed):
    h, h_kv = heads
    w_q, w_k = mj.query_key(jax.random.key(seed), d_in, h, k, num_kv_heads=h_kv, method=method, dtype=dtype)
    finite(w_q, (d_in, h, k), dtype)
    finite(w_k, (d_in, h_kv, k), dtype)
    w_v, w_o = mj.value_output(jax.random.key(seed), d_in, h, k, num_kv_heads=h_kv, method=method, dtype=dtype)
    finite(w_v, (d_in, h_kv, k), dtype)
    finite(w_o, (h, k, d_in), dtype)


# Few shapes: each new one compiles the attention programs (seconds on a shared 2-core box).
test_query_key_valid, test_query_key_valid_slow = prop(
    examples=2,
    d_in=st.just(8),
    heads=st.sampled_from([(1, 1), (2, 1)]),
    k=st.just(4),
    method=st.sampled_from(["exact", "fast"]),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
    seed=SEEDS,
)(_query_key_valid)


# The attention samplers' eager / jit / vmap agreement is tested in test_attention.py (and through
# bc_kernels below); here they would only add compile time.


@FAST
@given(arg=st.sampled_from(["d_in", "num_heads", "head_dim", "num_kv_heads", "d_kv"]), bad=BAD_SIZES)
def test_query_key_bad_sizes_name_the_argument(arg, bad):
    kwargs = {"d_in": 8, "num_heads": 1, "head_dim": 4, arg: bad}
    call = lambda: mj.query_key(jax.random.key(0), **kwargs)
    if arg in ("num_kv_heads", "d_kv") and bad is None:
        call()  # None means the default
        return
    raises_naming((TypeError, ValueError), arg, call)


KEYED = {
    "query_key": lambda key: mj.query_key(key, 8, 1, 4),
    "value_output": lambda key: mj.value_output(key, 8, 1, 4),
    "qkv_init": lambda key: mj.qkv_init(1, 4)(key, (8, 12)),
    "bc_kernels": lambda key: mj.bc_kernels(key, 8, 4),
    "depthwise_conv_init": lambda key: mj.depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0)(key, (3, 3, 1, 2)),
    "mean_shift_init": lambda key: mj.mean_shift_init(0.1)(key, (4, 4)),
    "a_log_init": lambda key: mj.a_log_init()(key, (4,)),
    "emergence_init": lambda key: mj.emergence_init(jax.nn.initializers.lecun_normal(), 0, 2)(key, (4, 4)),
}


@settings(FAST, max_examples=24)
@given(bad=BAD_KEYS, which=st.sampled_from(sorted(KEYED)))
def test_bad_keys_name_the_key_in_every_keyed_initializer(bad, which):
    raises_naming((TypeError, ValueError), "key", lambda: KEYED[which](bad))


def _sincos_valid(temperature, length, dim, dtype):
    finite(mj.sincos_1d(temperature=temperature)(None, (length, dim), dtype), (length, dim), dtype)
    finite(mj.sincos_2d(temperature=temperature)(None, (1, length, dim), dtype), (1, length, dim), dtype)


def _conv_covariance_valid(k, sigma, scale):
    cov = mj.conv_filter_covariance(k, sigma, scale=scale)
    taps = k * k if isinstance(k, int) else math.prod(k)
    finite(cov, (taps, taps), jnp.float32)
    np.testing.assert_array_equal(cov, cov.T)
    assert float(np.linalg.eigvalsh(np.asarray(cov, np.float64))[0]) > -1e-5 * scale**2 * taps


test_sincos_valid, test_sincos_valid_slow = prop(
    temperature=st.floats(1e-3, 1e8), length=st.sampled_from([1, 4, 9]), dim=st.sampled_from([4, 8]), dtype=DTYPES
)(_sincos_valid)


@FAST
@given(bad=st.one_of(st.floats(max_value=0.0), BAD_REALS))
def test_sincos_bad_temperature_names_it(bad):
    raises_naming((TypeError, ValueError), "temperature", lambda: mj.sincos_1d(temperature=bad))
    raises_naming((TypeError, ValueError), "temperature", lambda: mj.sincos_2d(temperature=bad))


# --------------------------------------------------------------------------- conv


test_conv_covariance_valid, test_conv_covariance_valid_slow = prop(
    examples=10, k=st.sampled_from([1, 2, 3, (3,), (2, 3)]), sigma=st.floats(1e-3, 1e3), scale=st.floats(1e-3, 1e3)
)(_conv_covariance_valid)


def _depthwise_valid(layer_of, sigmas, shape, dtype, seed):
    init = mj.depthwise_conv_init(*layer_of, sigma_start=sigmas[0], sigma_end=sigmas[1])
    finite(init(jax.random.key(seed), shape, dtype), shape, dtype)
    w = init(jax.random.key(seed), shape, jnp.float32)
    cov = mj.filter_covariance(w, center=shape[-1] > 1)
    finite(cov, (math.prod(shape[:-2]),) * 2, jnp.float32)
    assert mj.resize_covariance(cov, shape[:-2], shape[:-2]).shape == cov.shape
    layers = mj.transfer_covariances([cov, cov], 3)
    assert len(layers) == 3 and all(c.shape == cov.shape for c in layers)


test_depthwise_valid, test_depthwise_valid_slow = prop(
    layer_of=st.sampled_from([(0, 1), (0, 3), (2, 3)]),
    sigmas=st.tuples(st.floats(0.05, 10), st.floats(0.05, 10)),
    shape=st.sampled_from([(3, 3, 1, 4), (5, 1, 3), (2, 3, 1, 2)]),
    dtype=DTYPES,
    seed=SEEDS,
)(_depthwise_valid)


_DEPTHWISE = mj.depthwise_conv_init(1, 3, sigma_start=1.0, sigma_end=2.0)


def _depthwise(kk):
    return _DEPTHWISE(kk, (3, 3, 1, 4))


@settings(FAST, max_examples=2)
@given(seed=SEEDS)
def test_depthwise_same_key_same_array_eager_jit_vmap(seed):
    same_key_same_array(_depthwise, seed)


@FAST
@given(
    arg=st.sampled_from(["sigma_start", "sigma_end"]),
    bad=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1e154, exclude_min=False), BAD_REALS),
)
def test_depthwise_bad_sigma_names_it(arg, bad):
    kwargs = {"sigma_start": 1.0, "sigma_end": 1.0, arg: bad}
    raises_naming((TypeError, ValueError), arg, lambda: mj.depthwise_conv_init(0, 2, **kwargs))


@FAST
@given(
    shape=st.sampled_from([(3, 3, 1, 4), (3, 1, 2)]),
    index=st.integers(0, 35),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_filter_covariance_nonfinite_kernel_names_it(shape, index, bad):
    w = np.ones(shape, np.float32)
    w.flat[index % w.size] = bad
    raises_naming(ValueError, "kernel", lambda: mj.filter_covariance(jnp.asarray(w)))


@FAST
@given(new=st.one_of(st.integers(max_value=0), st.integers(min_value=2**31, max_value=2**40)))
def test_resize_bad_new_size_names_it(new):
    raises_naming(
        ValueError, "new_kernel_size", lambda: mj.resize_covariance(mj.conv_filter_covariance(3, 1.0), 3, new)
    )


# --------------------------------------------------------------------------- mlp


def _mean_shift_valid(mean, shape, dtype, seed):
    finite(mj.mean_shift_init(mean)(jax.random.key(seed), shape, dtype), shape, dtype)


def _ssm_parts_valid(bounds, delta, shape, dtype, seed):
    low, high = sorted(bounds)
    a = mj.a_log_init(low, high)(jax.random.key(seed), shape, dtype)
    finite(a, shape, dtype)
    af = np.asarray(a, np.float32)
    # rounding to bf16 / f16: relative, plus float16's subnormal spacing near 0
    tol = 0.01 * max(abs(low), abs(high)) + float(jnp.finfo(dtype).smallest_subnormal)
    assert af.min() >= low - tol and af.max() <= high + tol
    b = mj.dt_bias_init(delta)(None, shape, dtype)
    finite(b, shape, dtype)
    np.testing.assert_allclose(np.asarray(jax.nn.softplus(b.astype(jnp.float32))), delta, rtol=0.02, atol=1e-3)
    finite(mj.identity_conv_init()(None, (4, 1) + shape[-1:], dtype), (4, 1) + shape[-1:], dtype)
    r = mj.min_retention(a.astype(jnp.float32), delta, 64)
    assert 0.0 <= float(r) <= 1.0


test_mean_shift_valid, test_mean_shift_valid_slow = prop(
    mean=st.floats(-100, 100), shape=st.sampled_from([(4, 6), (1, 1, 3, 4), (2, 3, 4)]), dtype=DTYPES, seed=SEEDS
)(_mean_shift_valid)


_MEAN_SHIFT = mj.mean_shift_init(0.1)


def _mean_shift(kk):
    return _MEAN_SHIFT(kk, (4, 6))


@settings(FAST, max_examples=2)
@given(seed=SEEDS)
def test_mean_shift_same_key_same_array_eager_jit_vmap(seed):
    # eager runs op by op, jit fuses ``base + mean``: equal up to one float32 rounding
    same_key_same_array(_mean_shift, seed, atol=2e-7)


@FAST
@given(mean=st.floats(65520.0, 1e30), sign=st.sampled_from([1, -1]))
def test_mean_shift_float16_overflow_names_mean(mean, sign):
    raises_naming(ValueError, "mean", lambda: mj.mean_shift_init(sign * mean)(jax.random.key(0), (2, 2), jnp.float16))


# --------------------------------------------------------------------------- ssm


test_ssm_parts_valid, test_ssm_parts_valid_slow = prop(
    bounds=st.tuples(st.floats(-20, 5), st.floats(-20, 5)),
    delta=st.floats(1e-4, 100.0),
    shape=st.sampled_from([(4,), (2, 3)]),
    dtype=DTYPES,
    seed=SEEDS,
)(_ssm_parts_valid)


def _bc_kernels_valid(d_in, d_state, groups, dtype, seed):
    for w in mj.bc_kernels(jax.random.key(seed), d_in, d_state, num_groups=groups, dtype=dtype):
        finite(w, (d_in, groups, d_state), dtype)


test_bc_kernels_valid, test_bc_kernels_valid_slow = prop(
    d_in=st.just(8),
    d_state=st.sampled_from([2, 8]),
    groups=st.sampled_from([1, 2]),
    dtype=st.sampled_from([jnp.float32, jnp.float16]),
    seed=SEEDS,
)(_bc_kernels_valid)


_A_LOG = mj.a_log_init()


def _a_log(kk):
    return _A_LOG(kk, (3, 4))


def _bc(kk):
    return mj.bc_kernels(kk, 8, 4)[0]


@settings(FAST, max_examples=2)
@given(seed=SEEDS)
def test_ssm_same_key_same_array_eager_jit_vmap(seed):
    same_key_same_array(_a_log, seed)
    same_key_same_array(_bc, seed, atol=1e-5)


@FAST
@given(arg=st.sampled_from(["d_in", "d_state", "num_groups"]), bad=BAD_SIZES)
def test_bc_kernels_bad_sizes_name_the_argument(arg, bad):
    kwargs = {"d_in": 8, "d_state": 4, "num_groups": 1, arg: bad}
    raises_naming((TypeError, ValueError), arg, lambda: mj.bc_kernels(jax.random.key(0), **kwargs))


@FAST
@given(delta=st.floats(65505.0, 1e30))
def test_dt_bias_float16_overflow_names_delta(delta):
    raises_naming(ValueError, "delta", lambda: mj.dt_bias_init(delta)(None, (3,), jnp.float16))


@FAST
@given(arg=st.sampled_from(["a_log", "delta"]), bad=st.sampled_from([np.nan, np.inf, -np.inf]), where=st.integers(0, 3))
def test_min_retention_nonfinite_names_the_array(arg, bad, where):
    values = {"a_log": np.full(4, -4.0, np.float32), "delta": np.ones(4, np.float32)}
    values[arg][where] = bad
    raises_naming(
        ValueError, arg, lambda: mj.min_retention(jnp.asarray(values["a_log"]), jnp.asarray(values["delta"]), 8)
    )


# --------------------------------------------------------------------------- emergence


def _emergence_factors_valid(n, alpha):
    c = mj.emergence_factors(n, alpha)
    assert len(c) == n and all(math.isfinite(x) and x > 0 for x in c)
    assert c[n // 2] == 1.0


test_emergence_factors_valid, test_emergence_factors_valid_slow = prop(
    examples=10, n=st.integers(1, 40), alpha=st.floats(0.2, 5.0)
)(_emergence_factors_valid)


@FAST
@given(n=st.integers(2, 500), alpha=st.floats(1e3, 1e300))
def test_emergence_factors_overflow_names_alpha(n, alpha):
    p = n // 2
    try:
        representable = all(0.0 < alpha ** (k - p) < math.inf for k in (0, n - 1))
    except OverflowError:
        representable = False
    if representable:
        assert len(mj.emergence_factors(n, alpha)) == n
    else:
        raises_naming(ValueError, "alpha", lambda: mj.emergence_factors(n, alpha))


def _emergence_init_valid(layer_of, alpha, dtype, seed, shape):
    init = mj.emergence_init(jax.nn.initializers.lecun_normal(), *layer_of, alpha=alpha)
    finite(init(jax.random.key(seed), shape, dtype), shape, dtype)


test_emergence_init_valid, test_emergence_init_valid_slow = prop(
    layer_of=st.sampled_from([(0, 1), (0, 3), (2, 3), (4, 5)]),
    alpha=st.floats(0.5, 2.0),
    dtype=DTYPES,
    seed=SEEDS,
    shape=st.sampled_from([(4, 4), (3, 3, 2, 4)]),
)(_emergence_init_valid)


_EMERGENCE = mj.emergence_init(jax.nn.initializers.lecun_normal(), 0, 3, alpha=2.0)


def _emergence(kk):
    return _EMERGENCE(kk, (4, 4))


@settings(FAST, max_examples=2)
@given(seed=SEEDS)
def test_emergence_init_same_key_same_array_eager_jit_vmap(seed):
    same_key_same_array(_emergence, seed, atol=2e-7)


def _emergence_scale_valid(widths, alpha, dtype):
    tree = {
        f"Dense_{i}": {"kernel": jnp.ones((a, b), dtype), "bias": jnp.ones(b, dtype)}
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
    }
    layers = mj.emergence_layers(tree, alpha=alpha)
    assert [lay.factor for lay in layers] == list(mj.emergence_factors(len(widths) - 1, alpha))
    out = mj.emergence_scale(tree, alpha=alpha)
    for i, lay in enumerate(layers):
        finite(out[f"Dense_{i}"]["kernel"], tree[f"Dense_{i}"]["kernel"].shape, dtype)
        np.testing.assert_array_equal(out[f"Dense_{i}"]["bias"], tree[f"Dense_{i}"]["bias"])


test_emergence_scale_valid, test_emergence_scale_valid_slow = prop(
    widths=st.lists(st.sampled_from([2, 3]), min_size=2, max_size=6), alpha=st.floats(0.5, 2.0), dtype=DTYPES
)(_emergence_scale_valid)


def _emergence_measure_valid(widths, batch, seed, paths, graph):
    g = rng(seed)
    acts = [g.standard_normal((batch, w)) for w in widths]
    adj = [g.integers(0, 2, (a, b)) for a, b in zip(widths[:-1], widths[1:])] if graph else None
    e = mj.emergence_measure(acts, adjacency=adj, paths=paths)
    log_e = mj.emergence_measure(acts, adjacency=adj, paths=paths, log=True)
    assert e.shape == log_e.shape == (batch,) and e.dtype == np.float64
    assert np.all(np.isfinite(e)) and np.all(e >= 0) and not np.any(np.isnan(log_e))
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(log_e, np.log(e), rtol=1e-9)


test_emergence_measure_valid, test_emergence_measure_valid_slow = prop(
    examples=10,
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=6),
    batch=st.integers(0, 3),
    seed=SEEDS,
    paths=st.sampled_from(["all", "to_output"]),
    graph=st.booleans(),
)(_emergence_measure_valid)


@FAST
@given(layer=st.integers(0, 3), where=st.integers(0, 11), bad=st.sampled_from([np.nan, np.inf]))
def test_emergence_measure_nonfinite_names_the_layer(layer, where, bad):
    acts = [np.ones((2, 6)) for _ in range(4)]
    acts[layer].flat[where] = bad
    raises_naming(ValueError, f"activations[{layer}]", lambda: mj.emergence_measure(acts))


# --------------------------------------------------------------------------- fuse


def _dense_layers(g, d_in, d_hid, d_out, dtype):
    arrs = (
        g.standard_normal((d_in, d_hid)) / np.sqrt(d_in),
        0.3 * g.standard_normal(d_hid),
        g.standard_normal((d_hid, d_out)) / np.sqrt(d_hid),
        0.3 * g.standard_normal(d_out),
    )
    return tuple(jnp.asarray(a, dtype) for a in arrs)


def _fuse_dense_valid(dims, dtype, seed, activation):
    g = rng(seed)
    d_in, _, d_out = dims
    layers = _dense_layers(g, *dims, dtype)
    a = g.standard_normal((d_in, d_in))
    cov = jnp.asarray(a @ a.T / d_in + 0.1 * np.eye(d_in), jnp.float32)
    mean = jnp.asarray(g.standard_normal(d_in), jnp.float32)
    w, b = mj.dense_dense(*layers, mean=mean, cov=cov, activation=activation)
    finite(w, (d_in, d_out), dtype)
    finite(b, (d_out,), dtype)
    mse = mj.fusion_mse(*layers, mean=mean, cov=cov, activation=activation)
    finite(mse, (), jnp.float32)
    assert float(mse) >= 0
    m, c = mj.relu_moments(mean, cov)
    finite(m, (d_in,), jnp.float32)
    finite(c, (d_in, d_in), jnp.float32)
    x = jnp.asarray(g.standard_normal((16, d_in)), dtype)
    w2, b2, mse2 = mj.dense_dense_from_data(*layers, x, activation=activation, return_mse=True)
    finite(w2, (d_in, d_out), dtype)
    finite(mse2, (), jnp.float32)
    moments = Moments.zeros(d_in).update(x)
    mu, cv = moments.mean_cov()
    np.testing.assert_allclose(mu, np.asarray(x, np.float32).mean(0), atol=1e-5)
    finite(cv, (d_in, d_in), cv.dtype)


# One example by default (each compiles five programs; test_fuse.py covers dtypes and activations);
# 60 when slow.
test_fuse_dense_valid, test_fuse_dense_valid_slow = prop(
    examples=1,
    dims=st.sampled_from([(3, 4, 2), (4, 4, 3)]),
    dtype=DTYPES,
    seed=SEEDS,
    activation=st.sampled_from(["relu", "identity"]),
)(_fuse_dense_valid)


def _fuse_conv_valid(size, stride, dtype, seed):
    g = rng(seed)
    k1 = jnp.asarray(g.standard_normal((2, 2, 1, 2)) / 2, dtype)
    k2 = jnp.asarray(g.standard_normal((2, 2, 2, 2)) / 3, dtype)
    b1, b2 = jnp.zeros(2, dtype), jnp.zeros(2, dtype)
    x = jnp.asarray(g.standard_normal((3, size, size, 1)), dtype)
    fused = mj.conv_conv(k1, b1, k2, b2, strides=(stride, 1), mean=0.0, cov=1.0)
    finite(fused.kernel, (2 + stride, 2 + stride, 1, 2), dtype)
    fit = mj.conv_conv_from_data(k1, b1, k2, b2, x, strides=(stride, 1))
    finite(fit.kernel, fused.kernel.shape, dtype)
    assert fit.strides == fused.strides and fit.padding == fused.padding
    out = (size - 2) // stride + 1
    w2 = jnp.asarray(g.standard_normal((out * out * 2, 3)) / 4, dtype)
    w, b = mj.conv_dense(k1, b1, w2, jnp.zeros(3, dtype), input_shape=(size, size, 1), strides=stride)
    finite(w, (size * size, 3), dtype)
    w, b = mj.conv_dense_from_data(k1, b1, w2, jnp.zeros(3, dtype), x, strides=stride)
    finite(w, (size * size, 3), dtype)


test_fuse_conv_valid, test_fuse_conv_valid_slow = prop(
    examples=1,
    size=st.sampled_from([5, 6]),
    stride=st.sampled_from([1, 2]),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
    seed=SEEDS,
)(_fuse_conv_valid)


@FAST
@given(
    arg=st.sampled_from(["w1", "b1", "w2", "b2", "mean", "cov"]),
    where=st.integers(0, 15),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_fuse_nonfinite_arrays_name_the_argument(arg, where, bad):
    g = rng(where)
    w1, b1, w2, b2 = (np.array(a, np.float32) for a in _dense_layers(g, 3, 4, 2, jnp.float32))
    values = {
        "w1": w1,
        "b1": b1,
        "w2": w2,
        "b2": b2,
        "mean": np.zeros(3, np.float32),
        "cov": np.eye(3, dtype=np.float32),
    }
    values[arg].flat[where % values[arg].size] = bad
    v = {k: jnp.asarray(a) for k, a in values.items()}
    raises_naming(
        ValueError, arg, lambda: mj.dense_dense(v["w1"], v["b1"], v["w2"], v["b2"], mean=v["mean"], cov=v["cov"])
    )
    raises_naming(
        ValueError, arg, lambda: mj.fusion_mse(v["w1"], v["b1"], v["w2"], v["b2"], mean=v["mean"], cov=v["cov"])
    )
    if arg not in ("mean", "cov"):
        raises_naming(
            ValueError, arg, lambda: mj.dense_dense_from_data(v["w1"], v["b1"], v["w2"], v["b2"], jnp.ones((4, 3)))
        )


@FAST
@given(where=st.integers(0, 50), bad=st.sampled_from([np.nan, np.inf]), conv=st.booleans())
def test_fuse_nonfinite_data_names_x(where, bad, conv):
    x = np.ones((3, 5, 5, 1), np.float32)
    x.flat[where % x.size] = bad
    k1, b1 = jnp.ones((2, 2, 1, 2)), jnp.zeros(2)
    if conv:
        call = lambda: mj.conv_conv_from_data(k1, b1, jnp.ones((2, 2, 2, 2)), jnp.zeros(2), jnp.asarray(x))
    else:
        call = lambda: mj.conv_dense_from_data(k1, b1, jnp.ones((32, 1)), jnp.zeros(1), jnp.asarray(x))
    raises_naming(ValueError, "x", call)


@FAST
@given(size=st.integers(1, 3))
def test_conv_conv_from_data_input_smaller_than_the_window_is_an_error(size):
    k = jnp.ones((3, 3, 1, 1))
    raises_naming(
        ValueError,
        "does not fit",
        lambda: mj.conv_conv_from_data(k, jnp.zeros(1), k, jnp.zeros(1), jnp.ones((2, size + 1, size + 1, 1))),
    )


@FAST
@given(dim=BAD_SIZES)
def test_moments_bad_dim_names_it(dim):
    raises_naming((TypeError, ValueError), "dim", lambda: Moments.zeros(dim))


@FAST
@given(seed=SEEDS, dtype=st.sampled_from([jnp.float32, jnp.bfloat16]))
def test_fuse_params_valid_dense_model(seed, dtype):
    g = rng(seed)
    w1, b1, w2, b2 = _dense_layers(g, 3, 4, 2, dtype)
    deep = {"Dense_0": {"kernel": w1, "bias": b1}, "Dense_1": {"kernel": w2, "bias": b2}}
    shallow = {"Dense_0": {"kernel": jnp.zeros((3, 2), dtype), "bias": jnp.zeros(2, dtype)}}
    out = mj.fuse_params(deep, shallow, 0, mean=0.0, cov=1.0)
    finite(out["Dense_0"]["kernel"], (3, 2), dtype)
    out = mj.fuse_params(deep, shallow, 0, inputs=jnp.asarray(g.standard_normal((8, 3)), dtype))
    finite(out["Dense_0"]["bias"], (2,), dtype)


def _forward_order_valid(widths):
    import flax.linen as nn

    names = [f"{chr(ord('z') - i)}_dense" for i in range(len(widths))]  # alphabetical order = reverse call order

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            for name, w in zip(names, widths):
                x = nn.relu(nn.Dense(w, name=name)(x))
            return x

    assert mj.forward_order(Net(), jnp.ones((1, 3))) == [[n] for n in names]


test_forward_order_valid, test_forward_order_valid_slow = prop(
    examples=2, widths=st.lists(st.sampled_from([2, 3]), min_size=1, max_size=4)
)(_forward_order_valid)


def test_the_size_limits_are_what_the_docs_say():
    assert _checks.MAX_DIM == 2**31 - 1 and _checks.MAX_ELEMENTS == 2**34


@FAST
@given(
    arg=st.sampled_from(["k1", "b1", "k2", "b2"]),
    where=st.integers(0, 40),
    bad=st.sampled_from([np.nan, np.inf]),
    dense=st.booleans(),
)
def test_conv_fusion_nonfinite_layers_name_the_argument(arg, where, bad, dense):
    shapes = {"k1": (2, 2, 1, 2), "b1": (2,), "k2": (32, 1) if dense else (2, 2, 2, 2), "b2": (1,) if dense else (2,)}
    values = {k: np.ones(v, np.float32) for k, v in shapes.items()}
    values[arg].flat[where % values[arg].size] = bad
    v = [jnp.asarray(values[k]) for k in ("k1", "b1", "k2", "b2")]
    name = "w2" if dense and arg == "k2" else arg
    if dense:
        raises_naming(ValueError, name, lambda: mj.conv_dense(*v, input_shape=(5, 5, 1)))
    else:
        raises_naming(ValueError, name, lambda: mj.conv_conv(*v))
