"""FuseInit layer fusion (SPEC §6): closed forms vs data, moments, conv algebra, models, errors."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from mimetic_jax import fuse


def dense_pair(key, d_in=6, d_hid=12, d_out=5, bias_scale=0.3):
    k = jax.random.split(key, 4)
    return (
        jax.random.normal(k[0], (d_in, d_hid)) / np.sqrt(d_in),
        bias_scale * jax.random.normal(k[1], (d_hid,)),
        jax.random.normal(k[2], (d_hid, d_out)) / np.sqrt(d_hid),
        bias_scale * jax.random.normal(k[3], (d_out,)),
    )


def random_cov(key, d, corr=0.6):
    a = jax.random.normal(key, (d, d))
    c = corr * (a @ a.T) / d + (1 - corr) * jnp.eye(d)
    return c


def gaussian(key, n, mean, cov):
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    return np.random.default_rng(seed).multivariate_normal(np.asarray(mean, np.float64), np.asarray(cov, np.float64), n)


def pair_output(x, w1, b1, w2, b2, act=jax.nn.relu):
    return act(x @ w1 + b1) @ w2 + b2


# --------------------------------------------------------------------------- ReLU moments


def test_bivariate_normal_cdf_matches_scipy_up_to_high_correlation():
    a = jnp.array([-1.5, -0.3, 0.4, 1.2, 0.7, -2.0])
    b = jnp.array([0.5, -0.3, 1.1, 1.2, 0.69, -2.1])
    for rho in (-0.95, 0.3, 0.8, 0.99):
        got = np.asarray(fuse._bvn_cdf(a, b, jnp.full(a.shape, rho)))
        want = [stats.multivariate_normal.cdf([ai, bi], cov=[[1, rho], [rho, 1]]) for ai, bi in zip(a, b)]
        np.testing.assert_allclose(got, want, atol=2e-6, err_msg=f"rho={rho}")


def test_relu_moments_match_monte_carlo():
    key = jax.random.key(0)
    d, n = 5, 200_000
    mean = jnp.array([0.8, -0.5, 0.0, 1.5, -2.0])
    a = jax.random.normal(jax.random.key(1), (d, d))
    a = a.at[1].set(0.97 * a[0] + 0.1 * a[1]).at[3].set(-0.9 * a[2] + 0.3 * a[3])  # strong +/- correlations
    cov = a @ a.T / d
    assert np.abs(np.corrcoef(gaussian(key, 1000, mean, cov).T)[[0, 2], [1, 3]]).min() > 0.85
    a = np.maximum(gaussian(key, n, mean, cov), 0)
    m, c = fuse.relu_moments(mean, cov)
    ac = a - a.mean(0)
    mc_cov = ac.T @ ac / n
    # standard errors from the sample itself; 5 sigma
    se_mean = a.std(0) / np.sqrt(n)
    se_cov = np.sqrt(((ac[:, :, None] * ac[:, None, :] - mc_cov) ** 2).mean(0) / n)
    assert np.all(np.abs(np.asarray(m) - a.mean(0)) < 5 * se_mean + 1e-6)
    assert np.all(np.abs(np.asarray(c) - mc_cov) < 5 * se_cov + 1e-6)


def test_relu_moments_of_degenerate_inputs_are_relu_of_mean():
    m, c = fuse.relu_moments(jnp.array([1.0, -1.0, 2.0]), jnp.zeros((3, 3)))
    np.testing.assert_allclose(m, [1.0, 0.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(c, np.zeros((3, 3)), atol=1e-6)


# --------------------------------------------------------------------------- dense → dense


def test_dense_closed_form_and_data_driven_agree_as_sample_grows():
    w1, b1, w2, b2 = dense_pair(jax.random.key(2))
    mean, cov = 0.2 * jnp.ones(6), random_cov(jax.random.key(3), 6)
    w, b = fuse.dense_dense(w1, b1, w2, b2, mean=mean, cov=cov)
    errs = []
    for n in (2_000, 128_000):
        x = gaussian(jax.random.key(4), n, mean, cov).astype(np.float32)
        wd, bd = fuse.dense_dense_from_data(w1, b1, w2, b2, x, ridge=0.0, batch_size=16_384)
        errs.append(max(float(jnp.abs(wd - w).max()), float(jnp.abs(bd - b).max())))
    # estimation error ~ 1/sqrt(n): 64x the data, 8x smaller; allow 4x
    assert errs[1] < errs[0] / 4, errs
    assert errs[1] < 0.02, errs


def test_fusion_mse_predicts_the_fused_layers_error_and_matches_data_fit():
    w1, b1, w2, b2 = dense_pair(jax.random.key(5))
    mean, cov = jnp.zeros(6), random_cov(jax.random.key(6), 6)
    w, b = fuse.dense_dense(w1, b1, w2, b2, mean=mean, cov=cov)
    mse = float(fuse.fusion_mse(w1, b1, w2, b2, mean=mean, cov=cov))
    n = 200_000
    x = gaussian(jax.random.key(7), n, mean, cov)
    err = ((pair_output(x, *map(np.asarray, (w1, b1, w2, b2))) - (x @ np.asarray(w) + np.asarray(b))) ** 2).sum(1)
    assert abs(err.mean() - mse) < 5 * err.std() / np.sqrt(n), (err.mean(), mse)
    *_, data_mse = fuse.dense_dense_from_data(
        w1, b1, w2, b2, x.astype(np.float32), ridge=0.0, return_mse=True, batch_size=50_000
    )
    assert abs(float(data_mse) - mse) < 5 * err.std() / np.sqrt(n)
    assert mse > 0.01  # a real nonlinearity: the bound is not trivially zero


def test_identity_activation_fuses_to_exact_composition():
    w1, b1, w2, b2 = dense_pair(jax.random.key(8))
    w, b = fuse.dense_dense(w1, b1, w2, b2, mean=jnp.ones(6), cov=jnp.eye(6), activation="identity")
    np.testing.assert_allclose(w, w1 @ w2, atol=1e-5)
    np.testing.assert_allclose(b, b1 @ w2 + b2, atol=1e-5)
    assert float(fuse.fusion_mse(w1, b1, w2, b2, mean=0.0, cov=1.0, activation="identity")) == 0.0


def test_data_driven_accepts_any_activation_and_iterable_batches():
    w1, b1, w2, b2 = dense_pair(jax.random.key(9))
    x = np.asarray(jax.random.normal(jax.random.key(10), (3000, 6)))
    whole = fuse.dense_dense_from_data(w1, b1, w2, b2, x, activation="tanh", batch_size=3000)
    parts = fuse.dense_dense_from_data(
        w1, b1, w2, b2, (x[i : i + 700] for i in range(0, 3000, 700)), activation=jnp.tanh
    )
    np.testing.assert_allclose(whole[0], parts[0], atol=2e-5)
    np.testing.assert_allclose(whole[1], parts[1], atol=2e-5)
    # least squares: equals numpy's fit with an intercept
    xa = np.concatenate([x, np.ones((3000, 1))], 1)
    ref = np.linalg.lstsq(xa, pair_output(x, *map(np.asarray, (w1, b1, w2, b2)), act=np.tanh), rcond=None)[0]
    np.testing.assert_allclose(whole[0], ref[:-1], atol=1e-4)
    np.testing.assert_allclose(whole[1], ref[-1], atol=1e-4)


def test_outputs_keep_input_dtype_bfloat16():
    w1, b1, w2, b2 = (v.astype(jnp.bfloat16) for v in dense_pair(jax.random.key(11)))
    w, b = fuse.dense_dense(w1, b1, w2, b2, mean=0.0, cov=1.0)
    assert w.dtype == b.dtype == jnp.bfloat16


def test_closed_form_is_jittable_and_deterministic():
    w1, b1, w2, b2 = dense_pair(jax.random.key(12))
    f = lambda *a: fuse.dense_dense(*a, mean=jnp.zeros(6), cov=jnp.eye(6))
    eager, jitted = f(w1, b1, w2, b2), jax.jit(f)(w1, b1, w2, b2)
    np.testing.assert_allclose(eager[0], jitted[0], atol=1e-6)


# --------------------------------------------------------------------------- moments


def test_moments_stream_matches_float64_reference_with_large_mean():
    rng = np.random.default_rng(0)
    z = (1e3 + rng.standard_normal((400 * 50, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 2]])).astype(np.float32)
    update = jax.jit(fuse.Moments.update)
    m = fuse.Moments.zeros(3)
    for i in range(0, z.shape[0], 50):
        m = update(m, z[i : i + 50])
    mean, cov = m.mean_cov()
    z64 = z.astype(np.float64)
    np.testing.assert_allclose(mean, z64.mean(0), rtol=1e-7)
    np.testing.assert_allclose(cov, np.cov(z64.T, ddof=0), rtol=2e-4, atol=2e-4)
    assert float(m.count.sum()) == z.shape[0]


# --------------------------------------------------------------------------- convolutions


def random_params(model, x, seed):
    """A model's parameter tree filled with N(0, 1/fan_in) values, without compiling its init."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x[:1])
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]) or 1), jnp.float32), shapes
    )


def conv_pair(key, window1, window2, c0=2, c1=4, c2=3):
    k = jax.random.split(key, 4)
    k1 = jax.random.normal(k[0], window1 + (c0, c1)) / np.sqrt(np.prod(window1) * c0)
    k2 = jax.random.normal(k[1], window2 + (c1, c2)) / np.sqrt(np.prod(window2) * c1)
    return k1, 0.2 * jax.random.normal(k[2], (c1,)), k2, 0.2 * jax.random.normal(k[3], (c2,))


@functools.partial(jax.jit, static_argnums=(3, 4))
def flax_conv(x, kernel, bias, strides, padding):
    layer = nn.Conv(kernel.shape[-1], kernel.shape[:-2], strides=strides, padding=padding)
    return layer.apply({"params": {"kernel": kernel, "bias": bias}}, x)


@pytest.mark.parametrize("rank", [1, 2])
def test_identity_conv_conv_equals_flax_composition(rank):
    w1, w2 = ((3,), (2,)) if rank == 1 else ((3, 2), (2, 3))
    s1, s2 = ((2,), (1,)) if rank == 1 else ((2, 1), (1, 2))
    k1, b1, k2, b2 = conv_pair(jax.random.key(13), w1, w2)
    x = jax.random.normal(jax.random.key(14), (3,) + (11,) * rank + (2,))
    f = fuse.conv_conv(k1, b1, k2, b2, strides=(s1, s2), activation="identity")
    pair = flax_conv(flax_conv(x, k1, b1, s1, "VALID"), k2, b2, s2, "VALID")
    fused = flax_conv(x, f.kernel, f.bias, f.strides, f.padding)
    assert f.kernel.shape[:-2] == tuple(a + s * (b - 1) for a, s, b in zip(w1, s1, w2))
    np.testing.assert_allclose(fused, pair, atol=1e-5)


def test_same_padding_fused_conv_has_pair_output_shape_and_interior():
    k1, b1, k2, b2 = conv_pair(jax.random.key(15), (3, 3), (3, 3))
    x = jax.random.normal(jax.random.key(16), (2, 17, 18, 2))
    strides = ((2, 2), (2, 2))  # both strides enter the composed padding; stride 1 twice: the CNN test
    f = fuse.conv_conv(
        k1, b1, k2, b2, strides=strides, padding=("SAME", "SAME"), input_size=(17, 18), activation="identity"
    )
    pair = flax_conv(flax_conv(x, k1, b1, strides[0], "SAME"), k2, b2, strides[1], "SAME")
    fused = flax_conv(x, f.kernel, f.bias, f.strides, f.padding)
    assert fused.shape == pair.shape == (2, 5, 5, 3)
    np.testing.assert_allclose(fused[:, 1:-1, 1:-1], pair[:, 1:-1, 1:-1], atol=1e-5)


@pytest.mark.parametrize("rank", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_conv_conv_composition_equals_least_squares_for_white_input(rank):
    w1, w2 = ((3,), (3,)) if rank == 1 else ((3, 3), (2, 2))
    s1 = (2,) * rank
    k1, b1, k2, b2 = conv_pair(jax.random.key(17), w1, w2)
    mean, var = jnp.array([0.3, -0.2]), 1.5
    n, size = (4000, 40) if rank == 1 else (600, 20)
    x = mean + np.sqrt(var) * jax.random.normal(jax.random.key(18), (n,) + (size,) * rank + (2,))
    closed = fuse.conv_conv(k1, b1, k2, b2, mean=mean, cov=var, strides=(s1, 1))
    fit, mse = fuse.conv_conv_from_data(k1, b1, k2, b2, x, strides=(s1, 1), ridge=0.0, return_mse=True)
    assert fit.strides == closed.strides and fit.padding == closed.padding
    rows = n * ((size - w1[0]) // 2 + 1 - w2[0] + 1) ** rank
    # regression coefficient error ~ sqrt(mse / (rows var)); 6 sigma
    tol = 6 * np.sqrt(float(mse) / (rows * var))
    np.testing.assert_allclose(fit.kernel, closed.kernel, atol=tol)
    np.testing.assert_allclose(fit.bias, closed.bias, atol=3 * tol * np.prod(fit.kernel.shape[:-1]) ** 0.5)


# --------------------------------------------------------------------------- across pooling and BatchNorm


def direct_patch_lstsq(x, z2, window, strides, pads):
    """Reference: float64 ``numpy.linalg.lstsq`` of each output position's z2 on its zero-padded input patch.

    Returns the kernel ``(*window, c0, c2)``, the bias, the fit's MSE (summed over outputs), its predictions and
    the number of rows.
    """
    x, z2 = np.asarray(x, np.float64), np.asarray(z2, np.float64)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    sizes = [(xp.shape[1 + i] - w) // s + 1 for i, (w, s) in enumerate(zip(window, strides))]
    assert tuple(sizes) == z2.shape[1:-1]
    cols = [
        xp[(slice(None), *(slice(p * s, p * s + w) for p, s, w in zip(pos, strides, window)))].reshape(len(x), -1)
        for pos in np.ndindex(*sizes)
    ]
    a = np.stack(cols, 1).reshape(-1, cols[0].shape[1])  # rows (example, position), features (*window, c0)
    y = z2.reshape(-1, z2.shape[-1])
    design = np.concatenate([a, np.ones((len(a), 1))], axis=1)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    pred = design @ coef
    kernel = coef[:-1].reshape(*window, x.shape[-1], y.shape[-1])
    return kernel, coef[-1], ((y - pred) ** 2).sum(1).mean(), pred, len(a)


def flax_pool(h, pool):
    op = nn.max_pool if pool.kind == "max" else nn.avg_pool
    rank = h.ndim - 2
    window = (pool.window,) * rank if isinstance(pool.window, int) else tuple(pool.window)
    strides = (pool.strides,) * rank if isinstance(pool.strides, int) else tuple(pool.strides)
    return op(h, window, strides=strides, padding=pool.padding)


def pooled_pair_output(x, k1, b1, k2, b2, strides, padding, pool):
    """conv -> ReLU -> pool -> conv with Flax's own layers (independent of fuse's pooling code)."""
    h = flax_pool(jax.nn.relu(flax_conv(x, k1, b1, strides[0], padding[0])), pool)
    return flax_conv(h, k2, b2, strides[1], padding[1])


POOL_CASES = {
    "2d-valid": {
        "rank": 2,
        "w1": (3, 3),
        "w2": (2, 2),
        "strides": ((1, 1), (1, 1)),
        "padding": ("VALID", "VALID"),
        "window": (2, 2),
        "pool_strides": (2, 2),
        "pool_padding": "VALID",
        "n": 48,
        "size": 10,
    },
    "1d-same-strided": {
        "rank": 1,
        "w1": (3,),
        "w2": (3,),
        "strides": ((2,), (1,)),
        "padding": ("SAME", "SAME"),
        "window": (3,),
        "pool_strides": (2,),
        "pool_padding": "SAME",
        "n": 200,
        "size": 31,
    },
}


@pytest.mark.parametrize("case", list(POOL_CASES))
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_conv_pool_conv_data_fit_equals_direct_least_squares(kind, case):
    c = POOL_CASES[case]
    k1, b1, k2, b2 = conv_pair(jax.random.key(40), c["w1"], c["w2"], c0=2, c1=3, c2=2)
    pool = fuse.Pool(kind, c["window"], c["pool_strides"], c["pool_padding"])
    x = np.asarray(jax.random.normal(jax.random.key(41), (c["n"],) + (c["size"],) * c["rank"] + (2,)))
    fit, mse = fuse.conv_conv_from_data(
        k1,
        b1,
        k2,
        b2,
        x,
        strides=c["strides"],
        padding=c["padding"],
        pool=pool,
        ridge=0.0,
        return_mse=True,
        batch_size=16,
    )
    z2 = pooled_pair_output(x, k1, b1, k2, b2, c["strides"], c["padding"], pool)
    # the fused geometry: composed window w1 + s1 (wp - 1) + s1 sp (w2 - 1), stride s1 sp s2, pads p1 + s1 pp + s1 sp p2
    s1, sp = c["strides"][0], c["pool_strides"]
    want = tuple(a + s * (p - 1) + s * q * (b - 1) for a, s, p, q, b in zip(c["w1"], s1, c["window"], sp, c["w2"]))
    assert fit.kernel.shape == want + (2, 2)
    assert fit.strides == tuple(s * q for s, q in zip(s1, sp))
    kernel, bias, ref_mse, pred, rows = direct_patch_lstsq(x, z2, want, fit.strides, fit.padding)
    # both are the exact least-squares solution on the same sample: they must agree far inside the
    # coefficients' sampling error sqrt(mse / (rows var x)) (var x = 1), here to a tenth of it
    tol = 0.1 * np.sqrt(ref_mse / rows)
    np.testing.assert_allclose(fit.kernel, kernel, atol=tol)
    np.testing.assert_allclose(fit.bias, bias, atol=tol * np.sqrt(np.prod(want) * 2))
    np.testing.assert_allclose(float(mse), ref_mse, rtol=1e-3)
    # the FusedConv, run as an nn.Conv, gives the least-squares predictions at every output position
    fused = flax_conv(x, fit.kernel, fit.bias, fit.strides, fit.padding)
    assert fused.shape == z2.shape
    np.testing.assert_allclose(np.asarray(fused).reshape(pred.shape), pred, atol=20 * tol * np.sqrt(np.prod(want) * 2))
    assert ref_mse < 0.5 * float(np.var(np.asarray(z2).reshape(-1, 2), axis=0).sum())  # a real fit, not a trivial one


def test_avg_pool_closed_form_equals_least_squares_for_white_gaussian_input():
    k1, b1, k2, b2 = conv_pair(jax.random.key(42), (3,), (3,))
    pool = fuse.Pool("avg", 2, 2)
    mean, var, n, size = jnp.array([0.3, -0.2]), 1.5, 3000, 40
    x = mean + np.sqrt(var) * jax.random.normal(jax.random.key(43), (n, size, 2))
    closed = fuse.conv_conv(k1, b1, k2, b2, mean=mean, cov=var, pool=pool)
    fit, mse = fuse.conv_conv_from_data(k1, b1, k2, b2, x, pool=pool, ridge=0.0, return_mse=True)
    assert closed.kernel.shape == fit.kernel.shape == (3 + 1 + 2 * 2, 2, 3)
    assert closed.strides == fit.strides == (2,) and closed.padding == fit.padding
    rows = n * ((size - 2) // 2 - 2)
    tol = 6 * np.sqrt(float(mse) / (rows * var))  # 6 sigma of the regression coefficients
    np.testing.assert_allclose(fit.kernel, closed.kernel, atol=tol)
    np.testing.assert_allclose(fit.bias, closed.bias, atol=3 * tol * np.prod(fit.kernel.shape[:-1]) ** 0.5)


def test_identity_avg_pool_closed_form_is_the_exact_composition():
    k1, b1, k2, b2 = conv_pair(jax.random.key(44), (3, 2), (2, 3))
    pool = fuse.Pool("avg", (2, 3), (2, 1))
    x = jax.random.normal(jax.random.key(45), (3, 17, 15, 2))
    f = fuse.conv_conv(k1, b1, k2, b2, strides=((1, 2), 1), pool=pool, activation="identity")
    h = nn.avg_pool(flax_conv(x, k1, b1, (1, 2), "VALID"), (2, 3), strides=(2, 1))
    pair = flax_conv(h, k2, b2, (1, 1), "VALID")
    np.testing.assert_allclose(flax_conv(x, f.kernel, f.bias, f.strides, f.padding), pair, atol=1e-5)


def test_fuse_params_passes_the_pool_to_the_conv_pair():
    k1, b1, k2, b2 = conv_pair(jax.random.key(48), (3,), (3,), c0=2, c1=3, c2=2)
    pool = fuse.Pool("max", 2, 2)
    x = np.asarray(jax.random.normal(jax.random.key(49), (64, 20, 2)))
    direct = fuse.conv_conv_from_data(k1, b1, k2, b2, x, pool=pool)
    deep = {"a": {"kernel": k1, "bias": b1}, "b": {"kernel": k2, "bias": b2}}
    shallow = {"c": {"kernel": jnp.zeros(direct.kernel.shape), "bias": jnp.zeros(2)}}
    out = fuse.fuse_params(deep, shallow, 0, inputs=x, pool=pool)
    np.testing.assert_array_equal(out["c"]["kernel"], direct.kernel)
    np.testing.assert_array_equal(out["c"]["bias"], direct.bias)


def test_max_pool_has_no_closed_form_and_bad_pools_are_errors():
    k1, b1, k2, b2 = conv_pair(jax.random.key(46), (3,), (3,))
    with pytest.raises(ValueError, match="pool.kind must be 'avg' for the closed form conv_conv: max pooling is not"):
        fuse.conv_conv(k1, b1, k2, b2, pool=fuse.Pool("max", 2, 2))
    with pytest.raises(ValueError, match="pool.kind must be one of"):
        fuse.conv_conv(k1, b1, k2, b2, pool=fuse.Pool("min", 2, 2))
    with pytest.raises(TypeError, match="pool must be None or a Pool"):
        fuse.conv_conv(k1, b1, k2, b2, pool="max")
    with pytest.raises(ValueError, match="pool.padding='SAME' needs the input's spatial size"):
        fuse.conv_conv(k1, b1, k2, b2, pool=fuse.Pool("avg", 2, 2, "SAME"))
    with pytest.raises(ValueError, match="pool.padding must be smaller than the pool window"):
        fuse.conv_conv_from_data(k1, b1, k2, b2, np.zeros((2, 12, 2), np.float32), pool=fuse.Pool("max", 2, 2, 2))
    with pytest.raises(ValueError, match="pool window .* does not fit"):
        fuse.conv_conv(k1, b1, k2, b2, pool=fuse.Pool("avg", 9, 1), input_size=(10,))
    w1, bb1, w2, bb2 = dense_pair(jax.random.key(47))
    with pytest.raises(ValueError, match="pool is supported between two convs only"):
        fuse.fuse_params(
            {"a": {"kernel": w1, "bias": bb1}, "b": {"kernel": w2, "bias": bb2}},
            {"c": {"kernel": w1[:, :5], "bias": bb2}},
            0,
            mean=0.0,
            cov=1.0,
            pool=fuse.Pool("avg", 2, 2),
        )


def flax_batchnorm(h, stats):
    bn = nn.BatchNorm(use_running_average=True, epsilon=stats["epsilon"])
    return bn.apply(
        {
            "params": {"scale": stats["scale"], "bias": stats["offset"]},
            "batch_stats": {"mean": stats["mean"], "var": stats["var"]},
        },
        h,
    )


def bn_stats(key, c, epsilon=1e-3):
    k = jax.random.split(key, 4)
    return {
        "mean": jax.random.normal(k[0], (c,)),
        "var": jax.random.uniform(k[1], (c,), minval=0.2, maxval=3.0),
        "scale": 1 + 0.3 * jax.random.normal(k[2], (c,)),
        "offset": 0.5 * jax.random.normal(k[3], (c,)),
        "epsilon": epsilon,
    }


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_fold_batchnorm_on_the_output_side_is_exact(rank):
    shape = {0: (5, 4), 1: (3, 5, 4), 2: (3, 2, 5, 4)}[rank]
    kernel, bias = jax.random.normal(jax.random.key(50), shape), jax.random.normal(jax.random.key(51), (4,))
    stats = bn_stats(jax.random.key(52), 4)
    x = jax.random.normal(jax.random.key(53), (6,) + (9,) * rank + (5,))
    layer = (lambda x, k, b: x @ k + b) if rank == 0 else (lambda x, k, b: flax_conv(x, k, b, (1,) * rank, "SAME"))
    for b in (bias, None):
        kf, bf = fuse.fold_batchnorm(kernel, b, **{k: v for k, v in stats.items()})
        ref = flax_batchnorm(layer(x, kernel, jnp.zeros(4) if b is None else b), stats)
        np.testing.assert_allclose(layer(x, kf, bf), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", [0, 2])
def test_fold_batchnorm_on_the_input_side_is_exact_for_dense_and_valid_convs(rank):
    shape = (5, 4) if rank == 0 else (3, 2, 5, 4)
    kernel, bias = jax.random.normal(jax.random.key(54), shape), jax.random.normal(jax.random.key(55), (4,))
    stats = bn_stats(jax.random.key(56), 5)
    h = jax.random.normal(jax.random.key(57), (6,) + (9,) * rank + (5,))
    layer = (lambda x, k, b: x @ k + b) if rank == 0 else (lambda x, k, b: flax_conv(x, k, b, (1,) * rank, "VALID"))
    kf, bf = fuse.fold_batchnorm(kernel, bias, side="input", **stats)
    np.testing.assert_allclose(layer(h, kf, bf), layer(flax_batchnorm(h, stats), kernel, bias), rtol=1e-5, atol=1e-5)


def test_conv_batchnorm_relu_maxpool_conv_fuses_after_folding_as_direct_least_squares():
    k1, _, k2, b2 = conv_pair(jax.random.key(58), (3, 3), (3, 3), c0=2, c1=3, c2=2)
    stats = bn_stats(jax.random.key(59), 3, epsilon=1e-5)
    pool = fuse.Pool("max", 2, 2)
    x = np.asarray(jax.random.normal(jax.random.key(60), (40, 12, 12, 2)))
    # the deep pair as a model runs it: conv (no bias) -> BatchNorm (inference) -> ReLU -> max pool -> conv
    h = flax_pool(jax.nn.relu(flax_batchnorm(flax_conv(x, k1, jnp.zeros(3), (1, 1), "VALID"), stats)), pool)
    z2 = flax_conv(h, k2, b2, (1, 1), "VALID")
    kf, bf = fuse.fold_batchnorm(
        k1, None, mean=stats["mean"], var=stats["var"], scale=stats["scale"], offset=stats["offset"]
    )
    fit, mse = fuse.conv_conv_from_data(kf, bf, k2, b2, x, pool=pool, ridge=0.0, return_mse=True)
    kernel, bias, ref_mse, _, rows = direct_patch_lstsq(x, z2, fit.kernel.shape[:-2], fit.strides, fit.padding)
    tol = 0.1 * np.sqrt(ref_mse / rows)  # a tenth of the coefficients' sampling error (var x = 1)
    np.testing.assert_allclose(fit.kernel, kernel, atol=tol)
    np.testing.assert_allclose(fit.bias, bias, atol=tol * np.sqrt(kernel[..., 0].size))
    np.testing.assert_allclose(float(mse), ref_mse, rtol=1e-3)


def test_fold_batchnorm_keeps_the_kernel_dtype_and_is_the_same_under_jit():
    kernel, bias = jax.random.normal(jax.random.key(63), (3, 3, 2, 4)), jax.random.normal(jax.random.key(64), (4,))
    stats = {k: v for k, v in bn_stats(jax.random.key(65), 4).items() if k != "epsilon"}
    eager = fuse.fold_batchnorm(kernel, bias, **stats)
    jitted = jax.jit(lambda k, b, s: fuse.fold_batchnorm(k, b, **s))(kernel, bias, stats)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    k16, b16 = fuse.fold_batchnorm(kernel.astype(jnp.bfloat16), bias.astype(jnp.bfloat16), **stats)
    assert k16.dtype == b16.dtype == jnp.bfloat16
    ref = fuse.fold_batchnorm(
        kernel.astype(jnp.bfloat16).astype(jnp.float32), bias.astype(jnp.bfloat16).astype(jnp.float32), **stats
    )
    np.testing.assert_array_equal(k16, ref[0].astype(jnp.bfloat16))  # computed in float32, cast once at the end
    np.testing.assert_array_equal(b16, ref[1].astype(jnp.bfloat16))


def test_fold_batchnorm_errors_name_the_argument():
    kernel = jnp.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"mean must have shape \(4\)"):
        fuse.fold_batchnorm(kernel, None, mean=jnp.zeros(2), var=jnp.ones(4))
    with pytest.raises(ValueError, match=r"var must have shape \(2\)"):
        fuse.fold_batchnorm(kernel, None, mean=jnp.zeros(2), var=jnp.ones(4), side="input")
    with pytest.raises(ValueError, match="var \\+ epsilon must be > 0"):
        fuse.fold_batchnorm(kernel, None, mean=jnp.zeros(4), var=jnp.zeros(4), epsilon=0.0)
    with pytest.raises(ValueError, match="side must be one of"):
        fuse.fold_batchnorm(kernel, None, mean=jnp.zeros(4), var=jnp.ones(4), side="both")
    with pytest.raises(ValueError, match="kernel must be a dense"):
        fuse.fold_batchnorm(jnp.ones(4), None, mean=jnp.zeros(4), var=jnp.ones(4))
    with pytest.raises(ValueError, match=r"bias must have shape \(4\)"):
        fuse.fold_batchnorm(kernel, jnp.ones(3), mean=jnp.zeros(4), var=jnp.ones(4))
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        fuse.fold_batchnorm(kernel, None, mean=jnp.zeros(4), var=jnp.ones(4), epsilon=-1.0)


@pytest.mark.parametrize("correlated", [True, False])
def test_joint_channel_fit_has_at_most_the_mse_of_per_channel_pair_fits(correlated):
    k1, b1, k2, b2 = conv_pair(jax.random.key(61), (3,), (3,), c0=3, c1=4, c2=2)
    z = np.asarray(jax.random.normal(jax.random.key(62), (400, 24, 3)))
    mix = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.6, 0.0, 0.8]]) if correlated else np.eye(3)
    x = z @ mix.T  # unit-variance channels, correlation 0.8 / 0.6 with channel 0, or independent
    fit, mse = fuse.conv_conv_from_data(k1, b1, k2, b2, x, ridge=0.0, return_mse=True)
    window = fit.kernel.shape[:-2]
    z2 = flax_conv(jax.nn.relu(flax_conv(x, k1, b1, (1,), "VALID")), k2, b2, (1,), "VALID")
    # per pair: slice h[m -> n] from channel m alone (its own intercept), the slices summed, one common bias
    y = np.asarray(z2, np.float64).reshape(-1, 2)
    kernel = np.zeros(fit.kernel.shape)
    for m in range(3):
        kernel[..., m, :] = direct_patch_lstsq(x[..., m : m + 1], z2, window, (1,), ((0, 0),))[0][..., 0, :]
    pred = np.array(flax_conv(x, jnp.asarray(kernel, jnp.float32), jnp.zeros(2), (1,), "VALID"), np.float64).reshape(
        -1, 2
    )
    pred += (y - pred).mean(0)  # the best common bias
    pair_mse = ((y - pred) ** 2).sum(1).mean()
    joint_mse = direct_patch_lstsq(x, z2, window, (1,), ((0, 0),))[2]
    np.testing.assert_allclose(float(mse), joint_mse, rtol=1e-3)
    assert joint_mse <= pair_mse * (1 + 1e-9)  # the joint fit minimizes over every kernel of this shape
    if correlated:  # summing per-channel regressions counts shared signal once per correlated channel
        assert joint_mse < 0.5 * pair_mse
    else:  # independent channels: the per-pair normal equations decouple, up to sampling error
        assert pair_mse < 1.1 * joint_mse


def conv_matrix(k1, shape, strides, padding):
    """The conv as an explicit matrix (reference only)."""
    d = int(np.prod(shape))
    eye = jnp.eye(d).reshape((d,) + shape)
    out = fuse._conv(eye, k1, strides, fuse._pads("p", padding, k1.shape[:-2], strides, shape[:-1]))
    return out.reshape(d, -1)


def test_conv_dense_equals_dense_dense_on_explicit_conv_matrix():
    shape = (6, 5, 2)
    k1, b1, _, _ = conv_pair(jax.random.key(19), (3, 3), (1, 1), c1=3)
    h1 = conv_matrix(k1, shape, (2, 1), "SAME")
    w2 = jax.random.normal(jax.random.key(20), (h1.shape[1], 4)) / 6
    b2 = jnp.arange(4.0)
    b1_full = jnp.tile(b1, h1.shape[1] // 3)
    d = int(np.prod(shape))
    mean = jnp.linspace(-0.5, 0.5, d)
    for cov in (0.7, random_cov(jax.random.key(21), d)):
        w, b = fuse.conv_dense(
            k1, b1, w2, b2, input_shape=shape, mean=mean.reshape(shape), cov=cov, strides=(2, 1), padding="SAME"
        )
        full_cov = cov * jnp.eye(d) if np.ndim(cov) == 0 else cov
        wr, br = fuse.dense_dense(h1, b1_full, w2, b2, mean=mean, cov=full_cov)
        np.testing.assert_allclose(w, wr, atol=1e-5)
        np.testing.assert_allclose(b, br, atol=1e-5)
    # channel covariance (white in space)
    chan = jnp.array([[1.0, 0.4], [0.4, 0.5]])
    w, _ = fuse.conv_dense(k1, b1, w2, b2, input_shape=shape, cov=chan, strides=(2, 1), padding="SAME")
    wr, _ = fuse.dense_dense(h1, b1_full, w2, b2, mean=0.0, cov=jnp.kron(jnp.eye(d // 2), chan))
    np.testing.assert_allclose(w, wr, atol=1e-5)


def test_conv_dense_data_fit_reproduces_pair_output_within_its_mse():
    shape = (7, 2)
    k1, b1, _, _ = conv_pair(jax.random.key(22), (3,), (1,), c1=3)
    w2, b2 = jax.random.normal(jax.random.key(23), (5 * 3, 4)) / 4, jnp.zeros(4)
    x = np.asarray(jax.random.normal(jax.random.key(24), (20_000,) + shape))
    w, b, mse = fuse.conv_dense_from_data(k1, b1, w2, b2, x, ridge=0.0, return_mse=True, batch_size=5000)
    z2 = jax.nn.relu(flax_conv(x, k1, b1, 1, "VALID")).reshape(len(x), -1) @ w2 + b2
    err = ((x.reshape(len(x), -1) @ w + b - z2) ** 2).sum(1).mean()
    np.testing.assert_allclose(err, mse, rtol=1e-3)
    closed = fuse.conv_dense(k1, b1, w2, b2, input_shape=shape)
    assert float(jnp.abs(closed[0] - w).max()) < 0.05


# --------------------------------------------------------------------------- whole models


class MLP(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for i, w in enumerate(self.widths):
            x = nn.Dense(w)(x)
            if i < len(self.widths) - 1:
                x = nn.relu(x)
        return x


def test_fuse_params_linen_output_matches_deep_within_computed_mse():
    deep, shallow = MLP((16, 12, 3)), MLP((16, 3))
    x = np.asarray(jax.random.normal(jax.random.key(25), (8000, 5)))
    pd, ps = random_params(deep, x, 26), random_params(shallow, x, 27)
    h = jax.nn.relu(x @ pd["params"]["Dense_0"]["kernel"] + pd["params"]["Dense_0"]["bias"])
    out = fuse.fuse_params(pd, ps, 1, inputs=h)
    np.testing.assert_array_equal(out["params"]["Dense_0"]["kernel"], pd["params"]["Dense_0"]["kernel"])
    *_, mse = fuse.dense_dense_from_data(
        pd["params"]["Dense_1"]["kernel"],
        pd["params"]["Dense_1"]["bias"],
        pd["params"]["Dense_2"]["kernel"],
        pd["params"]["Dense_2"]["bias"],
        h,
        ridge=1e-5,
        return_mse=True,
    )
    err = ((jax.jit(deep.apply)(pd, x) - jax.jit(shallow.apply)(out, x)) ** 2).sum(1).mean()
    np.testing.assert_allclose(err, mse, rtol=1e-3)
    # fusing the first pair (Gaussian closed form): shallow layer 1 is deep layer 2, copied
    ps0 = random_params(MLP((12, 3)), x, 28)
    pg = fuse.fuse_params(pd, ps0, 0, mean=jnp.zeros(5), cov=jnp.eye(5))
    np.testing.assert_array_equal(pg["params"]["Dense_1"]["kernel"], pd["params"]["Dense_2"]["kernel"])
    w, _ = fuse.dense_dense(
        pd["params"]["Dense_0"]["kernel"],
        pd["params"]["Dense_0"]["bias"],
        pd["params"]["Dense_1"]["kernel"],
        pd["params"]["Dense_1"]["bias"],
        mean=0.0,
        cov=1.0,
    )
    np.testing.assert_array_equal(pg["params"]["Dense_0"]["kernel"], w)


class NNXNet(nnx.Module):
    def __init__(self, widths, rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


def test_fuse_params_nnx_module_updated_in_place_matches_gaussian_mse():
    deep, shallow = NNXNet((4, 10, 10, 3), nnx.Rngs(0)), NNXNet((4, 10, 3), nnx.Rngs(1))
    mean, cov = jnp.full(4, 0.1), random_cov(jax.random.key(28), 4)
    l0, l1 = deep.layers[1], deep.layers[2]
    x = gaussian(jax.random.key(29), 100_000, mean, cov).astype(np.float32)
    h = np.asarray(jax.nn.relu(deep.layers[0](x)))
    hm, hc = h.mean(0), np.cov(h.T, ddof=0)
    assert fuse.fuse_params(deep, shallow, 1, mean=hm, cov=hc) is shallow
    np.testing.assert_array_equal(shallow.layers[0].kernel[...], deep.layers[0].kernel[...])
    w, b = fuse.dense_dense(l0.kernel[...], l0.bias[...], l1.kernel[...], l1.bias[...], mean=hm, cov=hc)
    np.testing.assert_allclose(shallow.layers[1].kernel[...], w, atol=1e-6)


def test_fuse_params_conv_conv_builds_the_shallow_cnn():
    class CNN(nn.Module):
        windows: tuple

        @nn.compact
        def __call__(self, x):
            for w in self.windows:
                x = nn.relu(nn.Conv(4, w, padding="SAME")(x))
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    deep, shallow = CNN(((3, 3), (3, 3), (3, 3))), CNN(((3, 3), (5, 5)))
    x = np.asarray(jax.random.normal(jax.random.key(30), (200, 6, 6, 1)))
    pd, ps = random_params(deep, x, 31), random_params(shallow, x, 32)
    h = jax.nn.relu(flax_conv(x, pd["params"]["Conv_0"]["kernel"], pd["params"]["Conv_0"]["bias"], 1, "SAME"))
    out = fuse.fuse_params(pd, ps, 1, inputs=h, padding=("SAME", "SAME"))
    assert out["params"]["Conv_1"]["kernel"].shape == (5, 5, 4, 4)
    # the fused conv reproduces the pair's output within the fit's computed MSE
    c1, c2, f = pd["params"]["Conv_1"], pd["params"]["Conv_2"], out["params"]["Conv_1"]
    a1 = jax.nn.relu(flax_conv(h, c1["kernel"], c1["bias"], 1, "SAME"))
    pair = flax_conv(a1, c2["kernel"], c2["bias"], 1, "SAME")
    err = ((flax_conv(h, f["kernel"], f["bias"], 1, "SAME") - pair) ** 2).sum(-1).mean()
    _, mse = fuse.conv_conv_from_data(
        c1["kernel"], c1["bias"], c2["kernel"], c2["bias"], h, padding=("SAME", "SAME"), return_mse=True
    )
    np.testing.assert_allclose(err, mse, rtol=1e-3)
    np.testing.assert_array_equal(out["params"]["Dense_0"]["kernel"], pd["params"]["Dense_0"]["kernel"])
    wrong = random_params(CNN(((3, 3), (3, 3))), x, 33)
    with pytest.raises(ValueError, match="shallow params/Conv_1/kernel has shape"):
        fuse.fuse_params(pd, wrong, 1, mean=0.0, cov=1.0, padding=("SAME", "SAME"), input_shape=(6, 6, 4))


# --------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    w1, b1, w2, b2 = dense_pair(jax.random.key(33))
    with pytest.raises(ValueError, match=r"w2 must have shape \(12, \*\)"):
        fuse.dense_dense(w1, b1, w2[:5], b2, mean=0.0, cov=1.0)
    with pytest.raises(ValueError, match="cov must be positive semi-definite"):
        fuse.dense_dense(w1, b1, w2, b2, mean=0.0, cov=jnp.diag(jnp.array([1.0, -1, 1, 1, 1, 1])))
    with pytest.raises(ValueError, match=r"cov must have shape \(6, 6\)"):
        fuse.dense_dense(w1, b1, w2, b2, mean=0.0, cov=jnp.eye(5))
    with pytest.raises(ValueError, match="activation must be one of .*closed form, got 'tanh'"):
        fuse.dense_dense(w1, b1, w2, b2, mean=0.0, cov=1.0, activation="tanh")
    with pytest.raises(ValueError, match="activation must be one of"):
        fuse.dense_dense_from_data(w1, b1, w2, b2, np.zeros((4, 6)), activation="swish!")
    with pytest.raises(TypeError, match="w1 must be a floating dtype"):
        fuse.dense_dense(jnp.ones((6, 12), jnp.int32), b1, w2, b2, mean=0.0, cov=1.0)
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        fuse.dense_dense_from_data(w1, b1, w2, b2, np.zeros((4, 6)), ridge=-1.0)
    k1, cb1, k2, cb2 = conv_pair(jax.random.key(34), (3, 3), (3, 3))
    with pytest.raises(ValueError, match="needs the input's spatial size"):
        fuse.conv_conv(k1, cb1, k2, cb2, padding=("SAME", "SAME"))
    with pytest.raises(ValueError, match="k2 must read k1's 4 output channels"):
        fuse.conv_conv(k1, cb1, k2[:, :, :2], cb2)
    with pytest.raises(ValueError, match="padding\\[0\\] must be 'VALID', 'SAME'"):
        fuse.conv_conv(k1, cb1, k2, cb2, padding=("CIRCULAR", "VALID"))
    with pytest.raises(ValueError, match="k2 must be a conv kernel of rank 4"):
        fuse.conv_conv(k1, cb1, k2[0], cb2)
    with pytest.raises(ValueError, match=r"w2 must have shape \(144, d_out\)"):
        fuse.conv_dense(k1, cb1, jnp.ones((10, 3)), jnp.zeros(3), input_shape=(6, 6, 2), padding="SAME")
    with pytest.raises(ValueError, match="pass either inputs"):
        fuse.fuse_params({"a": {"kernel": w1}, "b": {"kernel": w2}}, {"c": {"kernel": w1}}, 0)
