"""Each validation rule of the scheme modules raises a clear error that names the argument.

One test per rule of ``mimetic_jax/_checks.py`` and one row per bad call found by the
fuzz of issue 16 (scheme modules: attention sizes/keys, conv, mlp, ssm, emergence, fuse):
the error type, and a message holding the argument's name and what was expected. Valid
input that used to be rejected (bfloat16 covariances, an empty batch, a long
``length``) is accepted. Everything here is small and eager: the file runs in seconds.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimetic_jax import (
    _checks,
    a_log_init,
    bc_kernels,
    conv_conv,
    conv_conv_from_data,
    conv_dense,
    conv_dense_from_data,
    conv_filter_covariance,
    dense_dense,
    dense_dense_from_data,
    depthwise_conv_init,
    dt_bias_init,
    emergence_factors,
    emergence_init,
    emergence_layers,
    emergence_measure,
    emergence_scale,
    filter_covariance,
    fold_batchnorm,
    forward_order,
    fuse_params,
    fusion_mse,
    identity_conv_init,
    mean_shift_init,
    min_retention,
    qkv_init,
    query_key,
    relu_moments,
    resize_covariance,
    sincos_1d,
    sincos_2d,
    transfer_covariances,
    value_output,
)
from mimetic_jax.fuse import Moments

K = jax.random.key(0)
NAN = float("nan")
LECUN = jax.nn.initializers.lecun_normal()


def _dense(d_in=3, d_hid=4, d_out=2):
    return jnp.ones((d_in, d_hid)) / 4, jnp.zeros(d_hid), jnp.ones((d_hid, d_out)) / 4, jnp.zeros(d_out)


def _conv(c0=1, c1=2, c2=2):
    return jnp.ones((3, 3, c0, c1)) / 9, jnp.zeros(c1), jnp.ones((3, 3, c1, c2)) / 9, jnp.zeros(c2)


def _nan_at(shape, index=0):
    x = np.ones(shape, np.float32)
    x.flat[index] = np.nan
    return jnp.asarray(x)


COV3 = conv_filter_covariance(3, 1.0)

# --------------------------------------------------------------------------- the _checks rules


def test_size_bounds_a_dimension_before_anything_is_allocated():
    assert _checks.size("d_in", 2**31 - 1) == 2**31 - 1
    with pytest.raises(ValueError, match=r"d_in must be at most 2147483647, got 2147483648"):
        _checks.size("d_in", 2**31)
    with pytest.raises(ValueError, match=r"d_in must be a positive int, got 0"):
        _checks.size("d_in", 0)
    with pytest.raises(TypeError, match=r"d_in must be a positive int, got True"):
        _checks.size("d_in", True)
    with pytest.raises(TypeError, match=r"d_in must be a positive int, got 2.0 of type float"):
        _checks.size("d_in", 2.0)


def test_elements_bounds_the_arrays_a_call_would_make(monkeypatch):
    monkeypatch.setattr(_checks, "memory_bytes", lambda: None)  # the element bound alone
    _checks.elements("a × b", 2**34)
    with pytest.raises(ValueError, match=r"a × b = 17179869185 elements exceeds the limit of 17179869184"):
        _checks.elements("a × b", 7, 2**34 + 1)


def test_shape_of_bounds_each_axis_and_the_element_count():
    assert _checks.shape_of("shape", (2, 3), (2,)) == (2, 3)
    with pytest.raises(ValueError, match=r"shape\[1\] must be at most"):
        _checks.shape_of("shape", (2, 2**31), (2,))
    with pytest.raises(ValueError, match=r"shape \(65536, 65536, 65536\) = .* elements exceeds the limit"):
        _checks.shape_of("shape", (2**16,) * 3, (3,))


@pytest.mark.parametrize(
    "bad, kind",
    [
        (None, TypeError),
        (0, TypeError),
        (1.5, TypeError),
        ("key", TypeError),
        ([0, 0], TypeError),
        (np.zeros(2, np.int32), TypeError),
        (jnp.zeros(2, jnp.int32), TypeError),
        (jnp.zeros(4, jnp.uint32), TypeError),
        (jnp.zeros((2, 2), jnp.uint32), TypeError),
        (jax.random.split(K, 2), ValueError),
    ],
)
def test_prng_key_rejects_everything_but_one_key_and_names_it(bad, kind):
    with pytest.raises(kind, match=r"^key must be"):
        _checks.prng_key("key", bad)


def test_prng_key_accepts_typed_raw_numpy_and_traced_keys_unchanged():
    raw = jax.random.PRNGKey(3)
    assert jnp.array_equal(jax.random.key_data(_checks.prng_key("key", raw)), raw)
    assert jnp.array_equal(jax.random.key_data(_checks.prng_key("key", np.asarray(raw))), raw)
    assert _checks.prng_key("key", K) is K
    out = jax.jit(lambda k: jax.random.key_data(_checks.prng_key("key", k)))(raw)
    assert jnp.array_equal(out, raw)


def test_real_range_and_positive_float_name_the_interval():
    assert _checks.real_range("t", 1.0, 0.0, 2.0) == 1.0
    with pytest.raises(ValueError, match=r"t must lie in \[0, 2\], got 3"):
        _checks.real_range("t", 3.0, 0.0, 2.0)
    with pytest.raises(ValueError, match=r"t must lie in \(0, inf\), got 0"):
        _checks.real_range("t", 0.0, 0.0, None, low_open=True)
    with pytest.raises(ValueError, match=r"t must be > 0, got -1"):
        _checks.positive_float("t", -1)
    with pytest.raises(ValueError, match=r"t must be finite, got nan"):
        _checks.positive_float("t", NAN)


def test_fits_dtype_knows_float16_saturates_and_bfloat16_does_not():
    _checks.fits_dtype("mean", 65504.0, jnp.float16)
    _checks.fits_dtype("mean", 7e4, jnp.bfloat16)
    with pytest.raises(ValueError, match=r"mean overflows the output dtype float16 \(7e\+04\).*6.55e\+04"):
        _checks.fits_dtype("mean", 7e4, jnp.float16)
    with pytest.raises(ValueError, match=r"alpha overflows the output dtype float32 \(c = 1e\+39\)"):
        _checks.fits_dtype("alpha", 1e39, jnp.float32, "c")


def test_target_fits_bounds_the_factors_in_the_output_dtype_and_the_target_in_float32():
    _checks.target_fits("alpha", 1e9, "beta", 0.7, jnp.float16)  # √(3e9) ≈ 5.5e4 < 65504
    _checks.target_fits("alpha", 1e18, "beta", 1.0, jnp.bfloat16)  # bfloat16 has float32's range
    with pytest.raises(ValueError, match=r"alpha \(1e\+10\) and beta \(0.7\) overflow the output dtype float16"):
        _checks.target_fits("alpha", 1e10, "beta", 0.7, jnp.float16)
    with pytest.raises(ValueError, match=r"value_alpha \(0.4\) and value_beta \(-1e\+10\) overflow .* float16"):
        _checks.target_fits("value_alpha", 0.4, "value_beta", -1e10, jnp.float16)
    with pytest.raises(
        ValueError, match=r"alpha \(1e\+20\) and beta \(0.7\) are too large for the float32 computation"
    ):
        _checks.target_fits("alpha", 1e20, "beta", 0.7, jnp.float32)


@pytest.mark.parametrize("method", ["exact", "fast"])
@pytest.mark.parametrize("which", ["alpha", "beta"])
def test_query_key_and_value_output_alpha_beta_that_overflow_float16_are_errors(method, which):
    # these used to return inf (float16) or NaN (float32 from alpha = 1e39)
    kw = {which: 1e10, "method": method, "dtype": jnp.float16}
    for fn in (query_key, value_output):
        with pytest.raises(ValueError, match=r"alpha .* and beta .* overflow the output dtype float16"):
            fn(K, 16, 2, 8, **kw)
        with pytest.raises(ValueError, match=r"alpha .* and beta .* too large for the float32 computation"):
            fn(K, 16, 2, 8, **{which: 1e39, "method": method})
    w_q, w_k = query_key(K, 16, 2, 8, **{**kw, which: 1e8})  # a large value that fits
    assert bool(jnp.all(jnp.isfinite(w_q))) and bool(jnp.all(jnp.isfinite(w_k)))


@pytest.mark.parametrize("which", ["alpha", "beta", "value_alpha", "value_beta"])
def test_qkv_init_names_the_pair_that_overflows_float16(which):
    init = qkv_init(2, 4, **{which: 1e12})
    pair = "value_alpha .* and value_beta" if which.startswith("value") else "alpha .* and beta"
    with pytest.raises(ValueError, match=rf"^{pair} .* overflow the output dtype float16"):
        init(K, (8, 24), jnp.float16)
    assert bool(jnp.all(jnp.isfinite(init(K, (8, 24), jnp.bfloat16))))


@pytest.mark.parametrize(
    "value",
    [
        np.array([1.0, np.nan]),
        jnp.array([np.inf]),
        _nan_at((2, 3), 5).astype(jnp.bfloat16),
        jnp.array([1.0, -np.inf], jnp.float16),
    ],
)
def test_finite_array_rejects_nan_and_inf_in_every_float_dtype(value):
    with pytest.raises(ValueError, match=r"^x must be finite"):
        _checks.finite_array("x", value)


def test_finite_array_passes_finite_integer_and_traced_arrays():
    _checks.finite_array("x", np.arange(3))
    _checks.finite_array("x", jnp.ones(3, jnp.bfloat16))
    jax.jit(lambda x: _checks.finite_array("x", x) or x)(jnp.array([np.nan]))  # traced: cannot be checked


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, "float32"])
def test_float_dtype_accepts_every_float_width(dtype):
    assert jnp.issubdtype(_checks.float_dtype("dtype", dtype), jnp.floating)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.complex64, "nonsense", bool])
def test_float_dtype_rejects_the_rest_with_the_name(dtype):
    with pytest.raises(TypeError, match=r"^dtype must be a floating dtype"):
        _checks.float_dtype("dtype", dtype)


# --------------------------------------------------------------------------- bad calls, one row each

BAD_CALLS = {
    # attention (size/key/option checks only)
    "sincos_1d temperature 0": (lambda: sincos_1d(temperature=0), ValueError, "temperature must lie in"),
    "sincos_1d temperature < 0": (lambda: sincos_1d(temperature=-3.0), ValueError, "temperature must lie in"),
    "sincos_2d temperature nan": (lambda: sincos_2d(temperature=NAN), ValueError, "temperature must be finite"),
    "sincos_2d grid 2**31": (lambda: sincos_2d((2**31, 1)), ValueError, r"grid\[0\] must be at most"),
    # found by benchmarks/fuzz_public_api.py (second run)
    "dense_dense w1 None": (
        lambda: dense_dense(None, jnp.zeros(2), jnp.ones((2, 1)), jnp.zeros(1), mean=0.0, cov=1.0),
        TypeError,
        "w1 must be a floating array, got None",
    ),
    "dense_dense overflows float32": (
        lambda: dense_dense(jnp.full((2, 2), 1e30), jnp.zeros(2), jnp.ones((2, 1)), jnp.zeros(1), mean=0.0, cov=1.0),
        ValueError,
        "dense_dense: the inputs are finite but the result is not finite in float32",
    ),
    "fusion_mse overflows float32": (
        lambda: fusion_mse(jnp.ones((2, 2)), jnp.full(2, 1e30), jnp.ones((2, 1)), jnp.zeros(1), mean=0.0, cov=1.0),
        ValueError,
        "fusion_mse: the inputs are finite but the result is not finite in float32",
    ),
    "dense_dense_from_data x None": (
        lambda: dense_dense_from_data(jnp.ones((2, 2)), jnp.zeros(2), jnp.ones((2, 1)), jnp.zeros(1), None),
        TypeError,
        "x must be an array",
    ),
    "emergence_measure complex activations": (
        lambda: emergence_measure([np.ones((2, 3)), np.ones((2, 3), np.complex64)]),
        TypeError,
        r"activations\[1\] must be a real array, got a complex one",
    ),
    "emergence_measure complex adjacency": (
        lambda: emergence_measure([np.ones((2, 3)), np.ones((2, 3))], adjacency=[np.ones((3, 3), np.complex64)]),
        TypeError,
        r"adjacency\[0\] must be a real array",
    ),
    "forward_order unknown method": (
        lambda: forward_order(nn.Dense(2), jnp.ones((1, 2)), method="nope"),
        ValueError,
        "method must be None, a method of the model or its name, got 'nope'",
    ),
    "depthwise_conv_init traced covariance": (
        lambda: jax.jit(lambda c: depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, covariance=c))(jnp.eye(9)),
        TypeError,
        "covariance must be a concrete array",
    ),
    "mean_shift_init base of the wrong shape": (
        lambda: mean_shift_init(0.1, base=lambda k, s, d=jnp.float32: jnp.zeros((2,), d))(K, (4, 4)),
        ValueError,
        r"base must return an array of the requested shape \(4, 4\), got shape \(2,\)",
    ),
    "filter_covariance center not a bool": (
        lambda: filter_covariance(jnp.ones((3, 3, 1, 4)), center="yes"),
        TypeError,
        "center must be a bool",
    ),
    "min_retention a_log None": (lambda: min_retention(None, 1.0, 8), TypeError, "a_log must be a real number"),
    "min_retention delta a string": (
        lambda: min_retention(jnp.ones(2), "0.5", 8),
        TypeError,
        "delta must be a real number",
    ),
    "conv_conv stride makes a huge fused window": (
        lambda: conv_conv(
            jnp.ones((2, 2, 1, 1)), jnp.zeros(1), jnp.ones((2, 2, 1, 1)), jnp.zeros(1), strides=(2**20, 1)
        ),
        ValueError,
        r"the fused kernel \(window \(\d+, \d+\) × c_in × c_out, the window from k1, k2 and strides "
        r"\(\(1048576, 1048576\), \(1, 1\)\)\) = \d+ elements exceeds the limit",
    ),
    "conv_conv_from_data huge padding": (
        lambda: conv_conv_from_data(
            jnp.ones((2, 2, 1, 1)),
            jnp.zeros(1),
            jnp.ones((2, 2, 1, 1)),
            jnp.zeros(1),
            jnp.ones((2, 4, 4, 1)),
            padding=(((2**40, 0), (0, 0)), "VALID"),
        ),
        ValueError,
        r"padding\[0\] pads must be at most",
    ),
    "conv_conv empty kernel": (
        lambda: conv_conv(jnp.ones((0, 2, 1, 1)), jnp.zeros(1), jnp.ones((2, 2, 1, 1)), jnp.zeros(1)),
        ValueError,
        "k1 must have no empty axis",
    ),
    "relu_moments overflows float32": (
        lambda: relu_moments(jnp.full(2, 1e30), jnp.eye(2)),
        ValueError,
        "relu_moments: the inputs are finite but the result is not finite",
    ),
    "dense_dense_from_data activation returning NaN": (
        lambda: dense_dense_from_data(
            jnp.ones((2, 2)),
            jnp.zeros(2),
            jnp.ones((2, 1)),
            jnp.zeros(1),
            jnp.ones((4, 2)),
            activation=lambda z: z * NAN,
        ),
        ValueError,
        "the least-squares fit: the inputs are finite but the result is not finite",
    ),
    "fuse_params deep not a tree": (
        lambda: fuse_params(None, {"a": {"kernel": jnp.ones((2, 2))}}, 0, mean=0.0, cov=1.0),
        TypeError,
        "^deep: tree must be",
    ),
    "fuse_params integer shallow": (
        lambda: fuse_params(
            {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}},
            {"a": {"kernel": jnp.ones((2, 2), jnp.int32)}},
            0,
            mean=0.0,
            cov=1.0,
        ),
        TypeError,
        "shallow a/kernel dtype must be a floating dtype",
    ),
    "fuse_params deep_layers an int": (
        lambda: fuse_params(
            {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}},
            {"a": {"kernel": jnp.ones((2, 2))}},
            0,
            mean=0.0,
            cov=1.0,
            deep_layers=3,
        ),
        TypeError,
        "deep_layers must be None or a sequence",
    ),
    "sincos_2d grid an int": (lambda: sincos_2d(4), TypeError, r"grid must be None or a pair"),
    "sincos_2d grid of one": (lambda: sincos_2d((4,)), TypeError, r"grid must be None or a pair"),
    "query_key 10**12 heads": (lambda: query_key(K, 16, 10**12, 8), ValueError, "num_heads must be at most"),
    "query_key d_in 2**31": (lambda: query_key(K, 2**31, 1, 8), ValueError, "d_in must be at most"),
    "query_key d_in 10**12": (lambda: query_key(K, 10**12, 1, 8), ValueError, "d_in must be at most"),
    "query_key d_in² too big": (lambda: query_key(K, 2**20, 1, 8), ValueError, "exceeds the limit"),
    "query_key key None": (lambda: query_key(None, 8, 1, 4), TypeError, "key must be a PRNG key"),
    "query_key key uint32[4]": (lambda: query_key(jnp.zeros(4, jnp.uint32), 8, 1, 4), TypeError, "key must be"),
    "value_output d_out 2**31": (lambda: value_output(K, 8, 1, 4, d_out=2**31), ValueError, "d_out must be at most"),
    "value_output key int32[2]": (lambda: value_output(jnp.zeros(2, jnp.int32), 8, 1, 4), TypeError, "key must be"),
    "qkv_init value_alpha nan": (lambda: qkv_init(2, 4, value_alpha=NAN), ValueError, "value_alpha must be finite"),
    "qkv_init value_beta str": (lambda: qkv_init(2, 4, value_beta="x"), TypeError, "value_beta must be a real"),
    "qkv_init sign": (lambda: qkv_init(2, 4, sign=0), ValueError, "sign must be one of"),
    "qkv_init key 0": (lambda: qkv_init(1, 4)(0, (8, 12)), TypeError, "key must be a PRNG key"),
    # conv
    "depthwise sigma 1e-200": (
        lambda: depthwise_conv_init(0, 2, sigma_start=1e-200, sigma_end=1e-200),
        ValueError,
        "sigma_start must lie in",
    ),
    "depthwise sigma_end 1e200": (
        lambda: depthwise_conv_init(0, 2, sigma_start=1.0, sigma_end=1e200),
        ValueError,
        "sigma_end must lie in",
    ),
    "depthwise scale 1e-300": (
        lambda: depthwise_conv_init(0, 2, sigma_start=1.0, sigma_end=1.0, scale=1e-300),
        ValueError,
        "scale must lie in",
    ),
    "depthwise scale overflows f16": (
        lambda: depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, scale=1e4)(K, (3, 3, 1, 2), jnp.float16),
        ValueError,
        "scale overflows the output dtype float16",
    ),
    "depthwise displacement": (
        lambda: depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, displacement=3),
        TypeError,
        "displacement must be a function",
    ),
    "depthwise key None": (
        lambda: depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0)(None, (3, 3, 1, 2)),
        TypeError,
        "key must be a PRNG key",
    ),
    "depthwise covariance nan": (
        lambda: depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, covariance=_nan_at((9, 9))),
        ValueError,
        "covariance",
    ),
    "conv_filter_covariance sigma 1e200": (lambda: conv_filter_covariance(3, 1e200), ValueError, "sigma must lie in"),
    "conv_filter_covariance scale 1e200": (
        lambda: conv_filter_covariance(3, 1.0, scale=1e200),
        ValueError,
        "scale² must be a positive normal float32",
    ),
    "conv_filter_covariance kernel 10**6": (
        lambda: conv_filter_covariance(10**6, 1.0),
        ValueError,
        "covariance of kernel_size .* exceeds the limit",
    ),
    "resize new size 0": (lambda: resize_covariance(COV3, 3, 0), ValueError, "new_kernel_size must be a positive"),
    "resize kernel_size 0": (lambda: resize_covariance(COV3, 0, 3), ValueError, "kernel_size must be a positive"),
    "resize covariance inf": (
        lambda: resize_covariance(jnp.full((9, 9), jnp.inf), 3, 5),
        ValueError,
        "covariance has non-finite entries",
    ),
    "filter_covariance nan kernel": (
        lambda: filter_covariance(_nan_at((3, 3, 1, 4), 7)),
        ValueError,
        "kernel must be finite",
    ),
    "transfer not a sequence": (lambda: transfer_covariances(COV3, 2), TypeError, "covariances must be a sequence"),
    "transfer empty": (lambda: transfer_covariances([], 2), ValueError, "covariances must hold at least one"),
    "transfer bad unused source": (
        lambda: transfer_covariances([COV3, _nan_at((9, 9))], 1),
        ValueError,
        r"covariances\[1\] has non-finite entries",
    ),
    "transfer not square": (
        lambda: transfer_covariances([jnp.ones(9)], 2),
        ValueError,
        r"covariances\[0\] must be a K×K matrix",
    ),
    "transfer size vs kernel": (
        lambda: transfer_covariances([COV3], 2, kernel_size=2, new_kernel_size=3),
        ValueError,
        r"covariances\[0\] must have shape \(4, 4\)",
    ),
    "transfer num_layers 0": (lambda: transfer_covariances([COV3], 0), ValueError, "num_layers must be a positive"),
    "transfer one size only": (
        lambda: transfer_covariances([COV3], 2, kernel_size=3),
        ValueError,
        "pass both kernel_size and new_kernel_size",
    ),
    # mlp
    "mean_shift overflows f16": (
        lambda: mean_shift_init(7e4)(K, (4, 4), jnp.float16),
        ValueError,
        "mean overflows the output dtype float16",
    ),
    "mean_shift key None": (lambda: mean_shift_init(0.1)(None, (4, 4)), TypeError, "key must be a PRNG key"),
    "mean_shift key uint32[4]": (
        lambda: mean_shift_init(0.1)(jnp.zeros(4, jnp.uint32), (4, 4)),
        TypeError,
        "key must be",
    ),
    "mean_shift shape 2**31": (lambda: mean_shift_init(0.1)(K, (2**31, 1)), ValueError, r"shape\[0\] must be at"),
    # ssm
    "dt_bias overflows f16": (
        lambda: dt_bias_init(7e4)(K, (8,), jnp.float16),
        ValueError,
        r"delta overflows the output dtype float16 \(softplus⁻¹\(delta\)",
    ),
    "a_log overflows f16": (
        lambda: a_log_init(-7e4, -4)(K, (4,), jnp.float16),
        ValueError,
        "low overflows the output dtype float16",
    ),
    "a_log low nan": (lambda: a_log_init(NAN, -4), ValueError, r"low \(a_log_range\[0\]\) must be finite"),
    "a_log low > high": (lambda: a_log_init(-1.0, -4.0), ValueError, "a_log_range must have low <= high"),
    "a_log key int": (lambda: a_log_init()(7, (4,)), TypeError, "key must be a PRNG key"),
    "bc_kernels num_groups 0": (
        lambda: bc_kernels(K, 16, 4, num_groups=0),
        ValueError,
        "num_groups must be a positive int",
    ),
    "bc_kernels num_groups 10**12": (
        lambda: bc_kernels(K, 16, 4, num_groups=10**12),
        ValueError,
        "num_groups must be at most",
    ),
    "bc_kernels elements": (lambda: bc_kernels(K, 2**20, 4), ValueError, r"d_in × d_in = .* exceeds the limit"),
    "bc_kernels d_in 2**31": (lambda: bc_kernels(K, 2**31, 4), ValueError, "d_in must be at most"),
    "bc_kernels alpha nan": (lambda: bc_kernels(K, 16, 4, alpha=NAN), ValueError, "alpha must be finite"),
    "bc_kernels key None": (lambda: bc_kernels(None, 16, 4), TypeError, "key must be a PRNG key"),
    "identity_conv shape": (lambda: identity_conv_init()(K, (4, 2, 3)), ValueError, "shape must be a depthwise"),
    "min_retention nan a_log": (lambda: min_retention(jnp.array([NAN]), 1.0, 4), ValueError, "a_log must be finite"),
    "min_retention inf delta": (
        lambda: min_retention(jnp.array([-4.0]), jnp.inf, 4),
        ValueError,
        "delta must be finite",
    ),
    "min_retention delta <= 0": (
        lambda: min_retention(jnp.array([-4.0]), jnp.array([1.0, 0.0]), 4),
        ValueError,
        "delta must be > 0",
    ),
    "min_retention length 0": (
        lambda: min_retention(jnp.array([-4.0]), 1.0, 0),
        ValueError,
        "length must be a positive int",
    ),
    "min_retention empty a_log": (lambda: min_retention(jnp.zeros(0), 1.0, 3), ValueError, "a_log must not be empty"),
    "min_retention complex": (lambda: min_retention(jnp.array([1j]), 1.0, 3), TypeError, "a_log must be a real"),
    # emergence
    "emergence_factors overflow": (lambda: emergence_factors(400, 1e6), ValueError, "alpha=1e\\+06 gives layer"),
    "emergence_factors 2**31 layers": (lambda: emergence_factors(2**31), ValueError, "num_layers must be at most"),
    "emergence_init key None": (lambda: emergence_init(LECUN, 0, 2)(None, (3, 3)), TypeError, "key must be a PRNG"),
    "emergence_init key int32": (
        lambda: emergence_init(LECUN, 0, 2)(jnp.zeros(2, jnp.int32), (3, 3)),
        TypeError,
        "key must be",
    ),
    "emergence_init factor f16": (
        lambda: emergence_init(LECUN, 2, 3, alpha=1e5)(K, (3, 3), jnp.float16),
        ValueError,
        "alpha overflows the output dtype float16",
    ),
    "emergence_init shape": (lambda: emergence_init(LECUN, 0, 2)(K, (3, 0)), ValueError, r"shape\[1\] must be a"),
    "emergence_scale factor f16": (
        lambda: emergence_scale({f"l{i}": {"kernel": jnp.ones(2, jnp.float16)} for i in range(3)}, alpha=1e5),
        ValueError,
        "alpha overflows the output dtype float16",
    ),
    "emergence_layers kernel name": (
        lambda: emergence_layers({"a": {"kernel": jnp.ones(2)}}, kernel=3),
        TypeError,
        "kernel must be the leaf name",
    ),
    "emergence_layers alpha 0": (
        lambda: emergence_layers({"a": {"kernel": jnp.ones(2)}}, alpha=0.0),
        ValueError,
        "alpha must be > 0",
    ),
    "emergence_layers pivot": (
        lambda: emergence_layers({"a": {"kernel": jnp.ones(2)}}, pivot=2),
        ValueError,
        "pivot must be a layer index",
    ),
    "forward_order not linen": (
        lambda: forward_order(lambda x: x, jnp.ones(2)),
        TypeError,
        "model must be a flax.linen Module",
    ),
    "emergence_measure nan": (
        lambda: emergence_measure([np.ones((1, 3)), np.array([[1.0, NAN]])]),
        ValueError,
        r"activations\[1\] must be finite",
    ),
    "emergence_measure strings": (
        lambda: emergence_measure([np.array([["a"]]), np.ones((1, 1))]),
        TypeError,
        r"activations\[0\] must be a real array",
    ),
    "emergence_measure traced": (
        lambda: jax.jit(lambda a: emergence_measure([a, a]))(jnp.ones((1, 2))),
        TypeError,
        r"activations\[0\] must be a concrete array",
    ),
    "emergence_measure log": (
        lambda: emergence_measure([np.ones((1, 2))] * 2, log="yes"),
        TypeError,
        "log must be a bool",
    ),
    "emergence_measure adjacency nan": (
        lambda: emergence_measure([np.ones((1, 2))] * 2, adjacency=[_nan_at((2, 2))]),
        ValueError,
        r"adjacency\[0\] must be a finite",
    ),
    # fuse
    "dense_dense nan w1": (
        lambda: dense_dense(_nan_at((3, 4)), *_dense()[1:], mean=0.0, cov=1.0),
        ValueError,
        "w1 must be finite",
    ),
    "dense_dense inf mean": (
        lambda: dense_dense(*_dense(), mean=jnp.array([0, np.inf, 0]), cov=1.0),
        ValueError,
        "mean must be finite",
    ),
    "dense_dense nan cov": (lambda: dense_dense(*_dense(), mean=0.0, cov=NAN), ValueError, "cov must be finite"),
    "dense_dense not an array": (lambda: dense_dense("w", *_dense()[1:], mean=0.0, cov=1.0), TypeError, "w1 must be"),
    "fusion_mse nan b2": (
        lambda: fusion_mse(*_dense()[:3], jnp.array([0.0, NAN]), mean=0.0, cov=1.0),
        ValueError,
        "b2 must be finite",
    ),
    "relu_moments nan mean": (
        lambda: relu_moments(jnp.array([NAN, 0.0]), jnp.eye(2)),
        ValueError,
        "mean must be finite",
    ),
    "relu_moments nan cov": (lambda: relu_moments(jnp.zeros(2), _nan_at((2, 2), 1)), ValueError, "cov must be finite"),
    "relu_moments mean rank": (
        lambda: relu_moments(jnp.zeros((2, 2)), jnp.eye(2)),
        ValueError,
        r"mean must have shape \(d,\)",
    ),
    "dense_from_data nan x": (
        lambda: dense_dense_from_data(*_dense(), _nan_at((5, 3), 4)),
        ValueError,
        "x must be finite",
    ),
    "dense_from_data nan later batch": (
        lambda: dense_dense_from_data(*_dense(), [jnp.ones((4, 3)), _nan_at((4, 3))]),
        ValueError,
        "x must be finite",
    ),
    "dense_from_data batch_size": (
        lambda: dense_dense_from_data(*_dense(), jnp.ones((5, 3)), batch_size=0),
        ValueError,
        "batch_size must be a positive int",
    ),
    "dense_from_data ridge": (
        lambda: dense_dense_from_data(*_dense(), jnp.ones((5, 3)), ridge=-1.0),
        ValueError,
        "ridge must be >= 0",
    ),
    "dense_from_data empty": (lambda: dense_dense_from_data(*_dense(), []), ValueError, "x must hold at least one"),
    "conv_dense nan k1": (
        lambda: conv_dense(_nan_at((3, 3, 1, 2)), jnp.zeros(2), jnp.ones((8, 1)), jnp.zeros(1), input_shape=(4, 4, 1)),
        ValueError,
        "k1 must be finite",
    ),
    "conv_dense input_shape": (
        lambda: conv_dense(*_conv()[:2], jnp.ones((8, 1)), jnp.zeros(1), input_shape=(4, 0, 1)),
        ValueError,
        r"input_shape\[1\] must be a positive int",
    ),
    "conv_dense_from_data nan x": (
        lambda: conv_dense_from_data(*_conv()[:2], jnp.ones((8, 1)), jnp.zeros(1), _nan_at((2, 4, 4, 1))),
        ValueError,
        "x must be finite",
    ),
    "conv_dense_from_data w2 shape": (
        lambda: conv_dense_from_data(*_conv()[:2], jnp.ones((9, 1)), jnp.zeros(1), jnp.ones((2, 4, 4, 1))),
        ValueError,
        r"w2 must have shape \(8, d_out\)",
    ),
    "conv_conv inf b1": (
        lambda: conv_conv(_conv()[0], jnp.array([0.0, np.inf]), *_conv()[2:]),
        ValueError,
        "b1 must be finite",
    ),
    "conv_conv strides": (
        lambda: conv_conv(*_conv(), strides=(0, 1)),
        ValueError,
        r"strides\[0\]\[0\] must be a positive int",
    ),
    "conv_conv k2 too big for input": (
        lambda: conv_conv(*_conv(), input_size=(4, 4)),
        ValueError,
        "k2 of shape .* does not fit k1's output of size",
    ),
    "conv_conv_from_data input < window": (
        lambda: conv_conv_from_data(*_conv(), jnp.ones((2, 4, 4, 1))),
        ValueError,
        "k2 of shape .* does not fit",
    ),
    "conv_conv_from_data strided window": (
        lambda: conv_conv_from_data(
            *_conv(), jnp.ones((2, 5, 5, 1)), strides=(1, 2), padding=("VALID", ((0, 0), (0, 0)))
        ),
        None,
        None,
    ),
    "conv_conv_from_data nan x": (
        lambda: conv_conv_from_data(*_conv(), _nan_at((2, 6, 6, 1))),
        ValueError,
        "x must be finite",
    ),
    "conv_conv_from_data x channels": (
        lambda: conv_conv_from_data(*_conv(), jnp.ones((2, 6, 6, 3))),
        ValueError,
        r"x must have shape \(n, \*spatial\[2\], 1\)",
    ),
    "Moments.zeros 0": (lambda: Moments.zeros(0), ValueError, "dim must be a positive int"),
    "Moments.zeros too big": (lambda: Moments.zeros(2**20), ValueError, r"dim × dim = .* exceeds the limit"),
    "Moments.mean_cov empty": (lambda: Moments.zeros(3).mean_cov(), ValueError, "Moments holds no rows"),
    "Moments.update nan": (lambda: Moments.zeros(2).update(_nan_at((3, 2))), ValueError, "z must be finite"),
    "Moments.update shape": (
        lambda: Moments.zeros(2).update(jnp.ones((3, 4))),
        ValueError,
        r"z must have shape \(\*, 2\)",
    ),
    "Moments.update complex": (
        lambda: Moments.zeros(1).update(jnp.ones((3, 1), jnp.complex64)),
        TypeError,
        "z must be a real array",
    ),
    "fuse_params index float": (
        lambda: fuse_params(
            {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}},
            {"a": {"kernel": jnp.ones((2, 2))}},
            0.5,
            mean=0.0,
            cov=1.0,
        ),
        TypeError,
        "index must be an int",
    ),
    "fuse_params nan kernel": (
        lambda: fuse_params(
            {"a": {"kernel": _nan_at((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}},
            {"a": {"kernel": jnp.ones((2, 2))}},
            0,
            mean=0.0,
            cov=1.0,
        ),
        ValueError,
        "w1 must be finite",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_call_raises_an_error_naming_the_argument(name):
    call, kind, message = BAD_CALLS[name]
    if kind is None:  # a row that documents a call that must work
        call()
        return
    with pytest.raises(kind, match=message) as info:
        call()
    assert "Traceback" not in str(info.value)


# --------------------------------------------------------------------------- valid input accepted


def test_bfloat16_and_float16_covariances_are_accepted_and_give_the_float32_result():
    f32 = resize_covariance(COV3, 3, 5)
    for dt in (jnp.bfloat16, jnp.float16):
        low = resize_covariance(COV3.astype(dt), 3, 5)
        assert low.dtype == jnp.float32 and low.shape == (25, 25)
        np.testing.assert_allclose(low, f32, atol=1e-2)
        w = depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, covariance=COV3.astype(dt))(K, (3, 3, 1, 4))
        assert bool(jnp.all(jnp.isfinite(w)))
    assert [c.shape for c in transfer_covariances([COV3.astype(jnp.bfloat16)], 2)] == [(9, 9), (9, 9)]


def test_an_empty_batch_gives_an_empty_emergence_measure():
    for log in (False, True):
        out = emergence_measure([np.ones((0, 3)), np.ones((0, 2)), np.ones((0, 4, 4, 2))], log=log)
        assert out.shape == (0,) and out.dtype == np.float64


def test_emergence_measure_is_zero_without_inactive_nodes_and_inf_on_overflow_never_nan():
    assert emergence_measure([np.ones((1, 1000))] * 121).tolist() == [0.0]
    assert emergence_measure([np.ones((1, 1000))] * 121, log=True).tolist() == [-np.inf]
    acts = [np.zeros((1, 1000))] + [np.ones((1, 1000))] * 120  # ~1000**120 paths: beyond float64
    assert emergence_measure(acts).tolist() == [np.inf]
    log_e = emergence_measure(acts, log=True)[0]
    assert np.isfinite(log_e) and log_e > np.log(np.finfo(np.float64).max)
    acts = [np.zeros((1, 300))] + [np.ones((1, 300))] * 130  # ~300**129 paths, through the graph code
    adj = [np.ones((300, 300))] * 130
    assert emergence_measure(acts, adjacency=adj).tolist() == [np.inf]
    assert emergence_measure([np.ones((1, 300))] * 131, adjacency=adj).tolist() == [0.0]


def test_min_retention_accepts_any_length():
    assert float(min_retention(jnp.array([-8.0, -4.0]), 1.0, 10**12)) == 0.0
    assert float(min_retention(jnp.array([-30.0]), 1.0, 10**12)) > 0.9


def test_min_retention_under_jit_skips_the_value_checks_it_documents():
    out = jax.jit(lambda a: min_retention(a, 1.0, 4))(jnp.array([-4.0]))
    np.testing.assert_allclose(out, np.exp(-4 * np.exp(-4.0)), rtol=1e-6)


def test_fuse_checks_the_values_eagerly_and_skips_them_under_jit_as_documented():
    w1, b1, w2, b2 = _dense()
    eager = dense_dense(w1, b1, w2, b2, mean=0.0, cov=1.0)
    traced = jax.jit(lambda a: dense_dense(a, b1, w2, b2, mean=0.0, cov=1.0))(w1)
    np.testing.assert_allclose(traced[0], eager[0], rtol=1e-6)
    bad = jax.jit(lambda a: dense_dense(a, b1, w2, b2, mean=0.0, cov=1.0))(_nan_at((3, 4)))
    assert bool(jnp.isnan(bad[0]).any())  # the documented gap: call eagerly to have the check


def test_the_sigma_and_scale_limits_are_usable_values():
    lo, hi = __import__("mimetic_jax.conv", fromlist=["SIGMA_RANGE"]).SIGMA_RANGE
    for sigma in (lo, hi):
        cov = conv_filter_covariance(3, sigma)
        assert bool(jnp.all(jnp.isfinite(cov)))
    np.testing.assert_array_equal(conv_filter_covariance(3, lo), jnp.eye(9))
    np.testing.assert_array_equal(conv_filter_covariance(3, hi), jnp.ones((9, 9)))


def test_forward_order_is_unchanged_for_a_linen_model():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="b")(nn.Dense(3, name="a")(x))

    assert forward_order(Net(), jnp.ones((1, 2))) == [["a"], ["b"]]


def test_every_message_names_what_was_expected_and_what_came():
    msgs = []
    for name in ("query_key d_in 2**31", "dt_bias overflows f16", "resize new size 0", "bc_kernels num_groups 0"):
        call, kind, _ = BAD_CALLS[name]
        with pytest.raises(kind) as info:
            call()
        msgs.append(str(info.value))
    for m in msgs:
        assert re.search(r"must|overflows", m) and re.search(r"got|\(", m), m


# --------------------------------------------------------------------------- leftovers of the fuzz (issue 16)

GIB = 2**30


def test_memory_bytes_reads_a_positive_bound_no_larger_than_the_host():
    limit = _checks.memory_bytes()
    assert limit is not None and limit > 0
    if jax.default_backend() == "cpu":
        import os

        assert limit <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_an_array_beyond_the_machines_memory_is_a_value_error_naming_the_sizes(monkeypatch):
    monkeypatch.setattr(_checks, "memory_bytes", lambda: 8 * GIB)
    _checks.elements("a × b", 2 * GIB)  # 8 GiB of float32: exactly the memory, allowed
    with pytest.raises(ValueError, match=r"a × b = 2147483649 elements needs 8 GiB .* more than the 8 GiB"):
        _checks.elements("a × b", 2 * GIB + 1)
    _checks.shape_of("shape", (4, GIB), (2,))  # an initializer's shape: 2 bytes an element (float16)
    with pytest.raises(ValueError, match=r"shape \(4, 1073741825\) = 4294967300 elements needs 8 GiB .* than the 8"):
        _checks.shape_of("shape", (4, GIB + 1), (2,))
    # the fuzz's case at the element bound: 2**34 elements per B/C kernel (64 GiB) on an 8 GiB machine
    with pytest.raises(ValueError, match=r"num_groups × d_state.* needs 64 GiB"):
        bc_kernels(K, 2**12, 4, num_groups=2**20)
    with pytest.raises(ValueError, match=r"num_heads × head_dim.* needs"):
        query_key(K, 2**12, 2**15, 2**6)  # 2**33 elements: under the element bound, over the memory


def test_dt_bias_init_rejects_a_delta_that_underflows_the_output_dtype():
    with pytest.raises(ValueError, match=r"delta underflows the output dtype float32 \(1e-300\).*1\.175e-38"):
        dt_bias_init(1e-300)(K, (4,))
    with pytest.raises(ValueError, match=r"delta underflows the output dtype float16"):
        dt_bias_init(1e-5)(K, (4,), jnp.float16)  # float16's smallest normal value: 6.1e-5
    for delta, dtype in ((1e-30, jnp.float32), (1e-4, jnp.float16), (1.0, jnp.bfloat16)):
        b = dt_bias_init(delta)(K, (4,), dtype)
        back = jax.nn.softplus(b.astype(jnp.float32))
        np.testing.assert_allclose(back, delta, rtol=1e-2)  # Δ = softplus(bias) = delta, as documented


def test_an_exception_of_the_users_displacement_passes_through_with_a_note_naming_it():
    def broken(delta, sigma):
        raise ZeroDivisionError("my bug")

    with pytest.raises(ZeroDivisionError, match="my bug") as info:
        conv_filter_covariance(3, 1.0, displacement=broken)
    notes = getattr(info.value, "__notes__", [])
    if hasattr(info.value, "add_note"):  # Python >= 3.11
        assert any("displacement=" in n and "(9, 9, 2)" in n for n in notes), notes
    with pytest.raises(TypeError, match=r"displacement must return a real \(K, K\) array, got str"):
        conv_filter_covariance(3, 1.0, displacement=lambda d, s: "not an array")


def test_an_overflowing_fusion_names_the_largest_input():
    w1, b1, w2, b2 = _dense()
    with pytest.raises(ValueError, match=r"rescale w1 \(max \|w1\| = 1e\+30\), .*b1") as info:
        dense_dense(w1 * 4e30, b1, w2, b2, mean=0.0, cov=1.0)
    assert "not finite in float32" in str(info.value)
    x = jnp.full((8, 3), 1e30)
    with pytest.raises(ValueError, match=r"rescale .* or the data x$"):
        dense_dense_from_data(w1, b1, w2, b2, x)
    with pytest.raises(ValueError, match=r"the data z \(the rows added with update\)"):
        Moments.zeros(3).update(jnp.full((4, 3), 3e19) * jnp.arange(4.0)[:, None]).mean_cov()


def test_moments_name_z_for_a_missing_or_empty_batch_and_take_integer_rows():
    with pytest.raises(TypeError, match=r"z must be a real array of shape \(n, 3\), got None"):
        Moments.zeros(3).update(None)
    with pytest.raises(ValueError, match=r"add a batch z of at least one row with update\(z\)"):
        Moments.zeros(3).update(jnp.ones((0, 3))).mean_cov()
    mean, cov = Moments.zeros(2).update(np.array([[1, 2], [3, 4]], np.int32)).mean_cov()
    np.testing.assert_allclose(mean, [2.0, 3.0])
    np.testing.assert_allclose(cov, [[1.0, 1.0], [1.0, 1.0]])


def test_fold_batchnorm_rejects_an_empty_kernel():
    with pytest.raises(ValueError, match=r"kernel must have no empty axis, got shape \(0, 4\)"):
        fold_batchnorm(jnp.ones((0, 4)), jnp.zeros(4), mean=jnp.zeros(4), var=jnp.ones(4))
