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
    return (jax.random.normal(k[0], (d_in, d_hid)) / np.sqrt(d_in),
            bias_scale * jax.random.normal(k[1], (d_hid,)),
            jax.random.normal(k[2], (d_hid, d_out)) / np.sqrt(d_hid),
            bias_scale * jax.random.normal(k[3], (d_out,)))


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
    *_, data_mse = fuse.dense_dense_from_data(w1, b1, w2, b2, x.astype(np.float32), ridge=0.0, return_mse=True,
                                              batch_size=50_000)
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
    parts = fuse.dense_dense_from_data(w1, b1, w2, b2, (x[i:i + 700] for i in range(0, 3000, 700)),
                                       activation=jnp.tanh)
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
    f = lambda *a: fuse.dense_dense(*a, mean=jnp.zeros(6), cov=jnp.eye(6))  # noqa: E731
    eager, jitted = f(w1, b1, w2, b2), jax.jit(f)(w1, b1, w2, b2)
    np.testing.assert_allclose(eager[0], jitted[0], atol=1e-6)


# --------------------------------------------------------------------------- moments


def test_moments_stream_matches_float64_reference_with_large_mean():
    rng = np.random.default_rng(0)
    z = (1e3 + rng.standard_normal((400 * 50, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 2]])).astype(np.float32)
    update = jax.jit(fuse.Moments.update)
    m = fuse.Moments.zeros(3)
    for i in range(0, z.shape[0], 50):
        m = update(m, z[i:i + 50])
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
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]) or 1),
                                              jnp.float32), shapes)


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
    f = fuse.conv_conv(k1, b1, k2, b2, strides=strides, padding=("SAME", "SAME"), input_size=(17, 18),
                       activation="identity")
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
        w, b = fuse.conv_dense(k1, b1, w2, b2, input_shape=shape, mean=mean.reshape(shape), cov=cov,
                               strides=(2, 1), padding="SAME")
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
    *_, mse = fuse.dense_dense_from_data(pd["params"]["Dense_1"]["kernel"], pd["params"]["Dense_1"]["bias"],
                                         pd["params"]["Dense_2"]["kernel"], pd["params"]["Dense_2"]["bias"], h,
                                         ridge=1e-5, return_mse=True)
    err = ((jax.jit(deep.apply)(pd, x) - jax.jit(shallow.apply)(out, x)) ** 2).sum(1).mean()
    np.testing.assert_allclose(err, mse, rtol=1e-3)
    # fusing the first pair (Gaussian closed form): shallow layer 1 is deep layer 2, copied
    ps0 = random_params(MLP((12, 3)), x, 28)
    pg = fuse.fuse_params(pd, ps0, 0, mean=jnp.zeros(5), cov=jnp.eye(5))
    np.testing.assert_array_equal(pg["params"]["Dense_1"]["kernel"], pd["params"]["Dense_2"]["kernel"])
    w, _ = fuse.dense_dense(pd["params"]["Dense_0"]["kernel"], pd["params"]["Dense_0"]["bias"],
                            pd["params"]["Dense_1"]["kernel"], pd["params"]["Dense_1"]["bias"], mean=0.0, cov=1.0)
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
    _, mse = fuse.conv_conv_from_data(c1["kernel"], c1["bias"], c2["kernel"], c2["bias"], h, padding=("SAME", "SAME"),
                                      return_mse=True)
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
