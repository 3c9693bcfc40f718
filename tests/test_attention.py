"""Mimetic self-attention samplers (SPEC §1): math, statistics, determinism, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import mimetic_jax as mj
from mimetic_jax import _linalg


def qk_products(w_q, w_k):
    """Per-head ``W_q^h W_k^hT`` (query head h uses key head h // g)."""
    g = w_q.shape[1] // w_k.shape[1]
    return np.einsum("ihk,jhk->hij", np.asarray(w_q, np.float64), np.repeat(np.asarray(w_k, np.float64), g, axis=1))


def vo_product(w_v, w_o):
    g = w_o.shape[0] // w_v.shape[1]
    return np.einsum("ihk,hkj->ij", np.repeat(np.asarray(w_v, np.float64), g, axis=1), np.asarray(w_o, np.float64))


def head_targets(key, d_in, d_kv, heads, alpha, beta, distribution="normal"):
    keys = jax.random.split(key, heads)
    return [np.asarray(_linalg.identity_target(k, d_in, d_kv, alpha, beta, distribution), np.float64) for k in keys]


def best_rank(a, r):
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    return (u[:, :r] * s[:r]) @ vt[:r]


def diag_offdiag(p):
    d = np.diagonal(p, axis1=-2, axis2=-1)
    n = p.shape[-1]
    off = p - np.einsum("...i,ij->...ij", d, np.eye(n))
    return d.mean(axis=-1), np.sqrt((off**2).sum(axis=(-2, -1)) / (n * n - n))


# --------------------------------------------------------------------------- query/key


def test_query_key_equals_numpy_recipe_for_same_z():
    key, d, heads, k = jax.random.key(3), 48, 3, 16
    w_q, w_k = mj.query_key(key, d, heads, k)
    for h, a in enumerate(head_targets(key, d, d, heads, 0.7, 0.7)):
        u, s, vt = np.linalg.svd(a)
        ref_q, ref_k = u[:, :k] * np.sqrt(s[:k]), vt[:k].T * np.sqrt(s[:k])
        signs = np.sign(np.sum(ref_q * np.asarray(w_q[:, h]), axis=0))  # SVD signs are arbitrary
        np.testing.assert_allclose(np.asarray(w_q[:, h]), ref_q * signs, atol=2e-4)
        np.testing.assert_allclose(np.asarray(w_k[:, h]), ref_k * signs, atol=2e-4)


def test_query_key_product_is_best_rank_k_approximation():
    key, d, heads, k = jax.random.key(0), 64, 2, 16
    prods = qk_products(*mj.query_key(key, d, heads, k))
    for p, a in zip(prods, head_targets(key, d, d, heads, 0.7, 0.7)):
        np.testing.assert_allclose(p, best_rank(a, k), atol=1e-4)
        assert np.linalg.matrix_rank(p, tol=1e-4) == k


def test_query_key_matches_spec_sanity_numbers():
    # SPEC §1, d=192, H=3, k=64: diag mean ~0.40 (2 digits), off-diagonal std ~0.05 (1 digit).
    prods = np.concatenate([qk_products(*mj.query_key(jax.random.key(s), 192, 3, 64)) for s in range(2)])
    diag, off = diag_offdiag(prods)
    assert abs(diag.mean() - 0.40) < 0.01
    assert abs(off.mean() - 0.05) < 0.005


def test_fast_query_key_matches_exact_statistics():
    exact = np.concatenate([qk_products(*mj.query_key(jax.random.key(s), 192, 3, 64)) for s in range(2)])
    fast = np.concatenate([qk_products(*mj.query_key(jax.random.key(s), 192, 3, 64, method="fast")) for s in range(2)])
    (de, oe), (df, of) = diag_offdiag(exact), diag_offdiag(fast)
    # The head-to-head spread of the exact diag mean is ~5e-4; the template is averaged over 4096 values.
    assert abs(de.mean() - df.mean()) < 0.005
    assert abs(oe.mean() - of.mean()) / oe.mean() < 0.03
    se = np.linalg.svd(exact, compute_uv=False)[:, :64].mean(0)
    sf = np.linalg.svd(fast, compute_uv=False)[:, :64].mean(0)
    np.testing.assert_allclose(sf, se, rtol=0.05)
    assert np.linalg.matrix_rank(fast[0], tol=1e-4) == 64


@pytest.mark.parametrize("method", ["exact", "fast"])
@pytest.mark.parametrize("d,heads,k", [(48, 3, 16), (96, 2, 64), (64, 4, 64), (64, 2, 32)])
def test_without_groups_the_arrays_are_the_per_head_recipe_bit_for_bit(d, heads, k, method):
    """num_kv_heads == num_heads: each head is `exact_factors`/`fast_factors` of its own key (the published recipe
    for exact), recomputed here one head at a time; the group construction must not change a bit of it."""
    key = jax.random.key(21)
    w_q, w_k = mj.query_key(key, d, heads, k, method=method)

    @jax.jit
    def one_head(kk):
        if method == "exact" or _linalg.fast_regime(d, d, k) == "exact":
            return _linalg.exact_factors(_linalg.identity_target(kk, d, d, 0.7, 0.7, "normal"), k)
        return _linalg.fast_factors(kk, d, d, k, 0.7, 0.7)

    for h, kk in enumerate(jax.random.split(key, heads)):
        ref_q, ref_k = one_head(kk)
        np.testing.assert_array_equal(w_q[:, h], ref_q)
        np.testing.assert_array_equal(w_k[:, h], ref_k)


def group_stacks(key, d, heads, kv_heads):
    """The exact recipe's targets of each key group, ``(H_kv, g, d, d)``."""
    return np.stack(head_targets(key, d, d, heads, 0.7, 0.7)).reshape(kv_heads, heads // kv_heads, d, d)


def test_grouped_query_key_space_is_the_top_right_space_of_the_stacked_targets():
    key, d, heads, k, kv = jax.random.key(5), 64, 6, 16, 2
    w_q, w_k = mj.query_key(key, d, heads, k, num_kv_heads=kv)
    prods = qk_products(w_q, w_k).reshape(kv, 3, d, d)
    for j, targets in enumerate(group_stacks(key, d, heads, kv)):
        v = np.linalg.svd(targets.reshape(-1, d))[2][:k].T  # top-k right singular vectors of [A_1; A_2; A_3]
        np.testing.assert_allclose(prods[j], targets @ v @ v.T, atol=1e-4)  # each head: A_h projected onto V
        wk = np.asarray(w_k[:, j], np.float64)
        np.testing.assert_allclose(wk @ np.linalg.pinv(wk), v @ v.T, atol=1e-4)  # W_k spans V


@pytest.mark.parametrize("d_kv", [None, 48])
def test_grouped_query_every_head_is_the_least_squares_fit_to_its_target(d_kv):
    key, d, k = jax.random.key(6), 64, 16
    w_q, w_k = mj.query_key(key, d, 4, k, num_kv_heads=2, d_kv=d_kv)
    targets = head_targets(key, d, d_kv or d, 4, 0.7, 0.7)
    for h in range(4):
        wk = np.asarray(w_k[:, h // 2], np.float64)
        # argmin_W ||W wk^T - A||_F  <=>  wk W^T = A^T in least squares
        ref = np.linalg.lstsq(wk, targets[h].T, rcond=None)[0].T
        np.testing.assert_allclose(np.asarray(w_q[:, h]), ref, atol=1e-4)
    # Balanced: one query head's factor has the norm of the shared key factor, on average over the group.
    for j in range(2):
        q_norm = np.mean([np.sum(np.asarray(w_q[:, h]) ** 2) for h in (2 * j, 2 * j + 1)])
        np.testing.assert_allclose(q_norm, np.sum(np.asarray(w_k[:, j]) ** 2), rtol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_query_error_is_the_optimum_and_below_the_first_head_construction(seed):
    key, d, heads, k, kv = jax.random.key(30 + seed), 96, 4, 24, 2
    prods = qk_products(*mj.query_key(key, d, heads, k, num_kv_heads=kv)).reshape(kv, 2, d, d)
    for j, targets in enumerate(group_stacks(key, d, heads, kv)):
        group_err = np.sum((targets - prods[j]) ** 2)
        v1 = np.linalg.svd(targets[0])[2][:k].T  # the previous construction: key space of the first head
        first_err = np.sum((targets - targets @ v1 @ v1.T) ** 2)
        s = np.linalg.svd(targets.reshape(-1, d), compute_uv=False)
        np.testing.assert_allclose(group_err, np.sum(s[k:] ** 2), rtol=1e-4)  # Eckart–Young on the stack
        assert group_err < first_err


def position_levels(w_q, w_k, kv_heads):
    """Per-draw diagonal mean of each position inside a group, averaged over the groups: ``(draws, g)``."""
    diag, _ = diag_offdiag(np.stack([qk_products(q, k) for q, k in zip(w_q, w_k)]))
    return diag.reshape(len(diag), kv_heads, -1).mean(1)


def equal_levels(levels, sigmas=5.0):
    """Each position's mean level equals position 0's within ``sigmas`` standard errors of the paired difference."""
    diff = levels[:, 1:] - levels[:, :1]
    se = diff.std(axis=0, ddof=1) / np.sqrt(len(diff))
    return bool(np.all(np.abs(diff.mean(axis=0)) <= sigmas * se))


@pytest.mark.parametrize("method", ["exact", "fast"])
@pytest.mark.parametrize("d,heads,k,kv", [(64, 4, 16, 2), (64, 6, 8, 2), (64, 4, 32, 1)])
def test_grouped_query_heads_of_a_group_have_equal_diagonal_levels(d, heads, k, kv, method):
    keys = jax.random.split(jax.random.key(40), 12)
    w_q, w_k = jax.jit(jax.vmap(lambda kk: mj.query_key(kk, d, heads, k, num_kv_heads=kv, method=method)))(keys)
    levels = position_levels(np.asarray(w_q, np.float64), np.asarray(w_k, np.float64), kv)
    assert equal_levels(levels)
    assert levels.mean() > 0.1
    # Power check: the previous construction (the first head's key space), on the exact recipe's targets, fails it.
    old = []
    for kk in keys:
        stacks = group_stacks(kk, d, heads, kv)
        v1 = [np.linalg.svd(t[0])[2][:k].T for t in stacks]
        old.append([[np.trace(a @ v @ v.T) / d for a in t] for t, v in zip(stacks, v1)])
    assert not equal_levels(np.asarray(old).mean(1))


def regime_diagonals(kind, d, r, method, keys):
    """Per-draw diagonal mean of the query/key product (one head of size ``r``, first ``min`` diagonal) or of the
    value/out product (rank ``r`` in heads of 4)."""
    if kind == "query_key":
        fn = lambda kk: mj.query_key(kk, d, 1, r, method=method)
        w_q, w_k = jax.jit(jax.vmap(fn))(keys)
        return np.array([diag_offdiag(qk_products(q, k))[0][0] for q, k in zip(w_q, w_k)])
    fn = lambda kk: mj.value_output(kk, d, r // 4, 4, method=method)
    w_v, w_o = jax.jit(jax.vmap(fn))(keys)
    return np.array([diag_offdiag(vo_product(v, o))[0] for v, o in zip(w_v, w_o)])


@pytest.mark.parametrize("kind", ["query_key", "value_output"])
@pytest.mark.parametrize(
    "r,regime", [(12, "template"), (48, "template"), (64, "exact"), (80, "exact"), (96, "rotation")]
)
def test_fast_matches_the_exact_diagonal_in_every_rank_regime(kind, r, regime):
    """Issue 15 item 3: fast was 25 % low for d/2 < r < d. Tolerance: 5 standard errors of the difference of the two
    means over 8 keys (fast's template-regime diagonal is deterministic, its spread zero), plus 0.5 % of the level
    for the template's own estimate."""
    d = 96
    assert _linalg.fast_regime(d, d, r) == regime
    keys = jax.random.split(jax.random.key(50), 8)
    exact = regime_diagonals(kind, d, r, "exact", keys)
    fast = regime_diagonals(kind, d, r, "fast", keys)
    if regime == "exact":  # fast draws the target: the same arrays
        np.testing.assert_array_equal(fast, exact)
    se = np.sqrt((exact.var(ddof=1) + fast.var(ddof=1)) / len(keys))
    assert abs(fast.mean() - exact.mean()) <= 5 * se + 0.005 * abs(exact.mean())
    previous = (0.7 if kind == "query_key" else -0.4) * r / d  # the old fast's random subspace, in expectation
    if regime == "exact":
        assert abs(previous - exact.mean()) > 20 * se + 0.005 * abs(exact.mean())  # the test would have caught it


def test_cross_attention_uses_rectangular_identity():
    key, d_in, d_kv, k = jax.random.key(7), 48, 32, 8
    w_q, w_k = mj.query_key(key, d_in, 2, k, d_kv=d_kv)
    assert w_q.shape == (d_in, 2, k) and w_k.shape == (d_kv, 2, k)
    for p, a in zip(qk_products(w_q, w_k), head_targets(key, d_in, d_kv, 2, 0.7, 0.7)):
        np.testing.assert_allclose(np.diagonal(a).mean(), 0.7, atol=0.1)  # I_{d_in×d_kv} on the diagonal
        np.testing.assert_allclose(p, best_rank(a, k), atol=1e-4)


@pytest.mark.parametrize("d_in,d_kv", [(96, 64), (64, 96)])
def test_fast_cross_attention_keeps_the_spectrum(d_in, d_kv):
    exact = qk_products(*mj.query_key(jax.random.key(0), d_in, 4, 16, d_kv=d_kv))
    fast = qk_products(*mj.query_key(jax.random.key(0), d_in, 4, 16, d_kv=d_kv, method="fast"))
    assert fast.shape == exact.shape == (4, d_in, d_kv)
    se = np.linalg.svd(exact, compute_uv=False)[:, :16].mean(0)
    sf = np.linalg.svd(fast, compute_uv=False)[:, :16].mean(0)
    np.testing.assert_allclose(sf, se, rtol=0.1)
    de = np.einsum("hii->h", exact[:, :64, :64]).mean()
    df = np.einsum("hii->h", fast[:, :64, :64]).mean()
    assert abs(de - df) / abs(de) < 0.1


def test_uniform_distribution_has_the_same_variance():
    n, u = (
        diag_offdiag(qk_products(*mj.query_key(jax.random.key(1), 128, 2, 64, distribution=dist)))
        for dist in ("normal", "uniform")
    )
    assert abs(n[0].mean() - u[0].mean()) < 0.02
    assert abs(n[1].mean() - u[1].mean()) / n[1].mean() < 0.05
    z = np.asarray(_linalg.identity_target(jax.random.key(0), 128, 128, 1.0, 0.0, "uniform"))
    assert np.abs(z).max() <= np.sqrt(3 / 128) + 1e-6


# --------------------------------------------------------------------------- value/out


def vo_target(key, d_in, d_out, alpha, beta):
    k_target = jax.random.split(key)[0]
    return np.asarray(_linalg.identity_target(k_target, d_in, d_out, alpha, beta, "normal"), np.float64)


def test_value_output_is_exactly_the_target_when_heads_fill_the_width():
    key = jax.random.key(2)
    w_v, w_o = mj.value_output(key, 96, 3, 32)
    np.testing.assert_allclose(vo_product(w_v, w_o), vo_target(key, 96, 96, 0.4, -0.4), atol=1e-4)


def test_value_output_is_best_rank_approximation_when_heads_are_narrower():
    key = jax.random.key(2)
    w_v, w_o = mj.value_output(key, 96, 2, 24)
    np.testing.assert_allclose(vo_product(w_v, w_o), best_rank(vo_target(key, 96, 96, 0.4, -0.4), 48), atol=1e-4)


def test_value_output_sign_plus_one_flips_the_identity():
    key = jax.random.key(4)
    minus = vo_product(*mj.value_output(key, 64, 4, 16))
    plus = vo_product(*mj.value_output(key, 64, 4, 16, sign=1))
    np.testing.assert_allclose(plus - minus, 0.8 * np.eye(64), atol=1e-4)


def test_value_output_wider_than_model_is_exact_and_has_no_dead_channels():
    key = jax.random.key(8)
    w_v, w_o = mj.value_output(key, 32, 4, 16)  # H k = 64 > d = 32
    np.testing.assert_allclose(vo_product(w_v, w_o), vo_target(key, 32, 32, 0.4, -0.4), atol=1e-4)
    assert np.linalg.norm(np.asarray(w_v).reshape(32, -1), axis=0).min() > 1e-3


def test_head_rotation_keeps_the_product_and_balances_the_heads():
    key = jax.random.key(0)
    w_v, w_o = mj.value_output(key, 192, 3, 64)
    r_v, r_o = mj.value_output(key, 192, 3, 64, rotate_heads=True)
    np.testing.assert_allclose(vo_product(r_v, r_o), vo_product(w_v, w_o), atol=1e-4)

    def per_head(v, o):
        return np.array([np.trace(np.asarray(v[:, h]) @ np.asarray(o[h])) / 192 for h in range(3)])

    plain, rotated = per_head(w_v, w_o), per_head(r_v, r_o)
    np.testing.assert_allclose(plain, [-0.23, -0.13, -0.04], atol=0.03)  # issue 2's measurement
    assert np.ptp(rotated) < 0.5 * np.ptp(plain)


def test_fast_value_output_at_full_rank_has_the_target_law():
    d, alpha, beta = 256, 0.4, 0.4
    p = vo_product(*mj.value_output(jax.random.key(9), d, 4, 64, method="fast"))
    diag, off = diag_offdiag(p)
    # diag = -β + α (QG)_ii, each of variance α²/d: the mean of d of them has std α/d.
    assert abs(diag - (-beta)) < 5 * alpha / d
    # off-diagonal entries have std α/√d; relative error of the estimate ~ 1/√(2 n), n = d² - d.
    assert abs(off - alpha / np.sqrt(d)) / (alpha / np.sqrt(d)) < 5 / np.sqrt(2 * (d * d - d))


def test_grouped_value_output_product_and_equal_split():
    key = jax.random.key(10)
    w_v, w_o = mj.value_output(key, 64, 8, 16, num_kv_heads=4)
    assert w_v.shape == (64, 4, 16) and w_o.shape == (8, 16, 64)
    np.testing.assert_allclose(vo_product(w_v, w_o), vo_target(key, 64, 64, 0.4, -0.4), atol=1e-4)
    np.testing.assert_allclose(w_o[0], w_o[1], atol=0)


# --------------------------------------------------------------------------- determinism and dtypes


@pytest.mark.parametrize("method", ["exact", "fast"])
@pytest.mark.parametrize(
    "d,heads,k,kv",
    [
        pytest.param(32, 4, 8, None, marks=pytest.mark.slow),  # the default run keeps one GQA and one MHA shape
        (32, 4, 8, 2),
        pytest.param(16, 4, 16, 2, marks=pytest.mark.slow),
        (24, 1, 16, None),
    ],
)
def test_same_key_same_arrays_eager_jit_and_vmap(method, d, heads, k, kv):
    # Grouped heads in fast's template (32, 4, 8, 2) and rotation (16, 4, 16, 2) regimes; (24, 1, 16): query/key
    # and value/out ranks 16 between d/2 and d (fast's exact regime).
    keys = jax.random.split(jax.random.key(11), 3)

    def fn(kk):
        return mj.query_key(kk, d, heads, k, num_kv_heads=kv, method=method) + mj.value_output(
            kk, d, heads, k, num_kv_heads=kv, method=method
        )

    eager = [fn(k) for k in keys]
    jitted = [jax.jit(fn)(k) for k in keys]
    mapped = jax.vmap(fn)(keys)
    for i in range(3):
        for e, j, m in zip(eager[i], jitted[i], mapped):
            np.testing.assert_allclose(e, j, atol=1e-6)
            np.testing.assert_allclose(e, m[i], atol=1e-5)


def test_legacy_uint32_keys_give_the_same_arrays_as_typed_keys():
    a = mj.query_key(jax.random.PRNGKey(3), 32, 2, 8)
    b = mj.query_key(jax.random.key(3), 32, 2, 8)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
@pytest.mark.parametrize("method", ["exact", "fast"])
def test_sharded_over_8_devices_equals_unsharded(method, axis_type):
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("x",), axis_types=(getattr(jax.sharding.AxisType, axis_type),))
    sharding = NamedSharding(mesh, P("x"))
    init = mj.qkv_init(4, 16, method=method)
    ref = init(jax.random.key(12), (64, 3, 4, 16))
    with jax.set_mesh(mesh):
        sharded = jax.jit(lambda k: init(k, (64, 3, 4, 16), out_sharding=sharding))(jax.random.key(12))
    assert sharded.sharding.is_equivalent_to(sharding, 4)
    # Same random bits, rows computed where they live; was up to 6.6e-5 when the Gram matrices' reduction
    # order followed the sharding (now fixed-order blocks); eager vs sharded jit: a few float32 ulp.
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(ref), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_outputs_are_float32_math_cast_at_the_end(dtype, strict_promotion):
    key = jax.random.key(13)
    full = mj.query_key(key, 64, 4, 16) + mj.value_output(key, 64, 4, 16)
    low = mj.query_key(key, 64, 4, 16, dtype=dtype) + mj.value_output(key, 64, 4, 16, dtype=dtype)
    for f, lo in zip(full, low):
        assert lo.dtype == dtype
        np.testing.assert_array_equal(np.asarray(lo), np.asarray(f.astype(dtype)))


# --------------------------------------------------------------------------- fused kernels


def test_qkv_init_stacked_layout_holds_query_key_and_value():
    key = jax.random.key(14)
    w = mj.qkv_init(4, 16)(key, (64, 3, 4, 16))
    k_qk, k_vo = jax.random.split(key)
    w_q, w_k = mj.query_key(k_qk, 64, 4, 16)
    w_v, _ = mj.value_output(k_vo, 64, 4, 16)
    np.testing.assert_array_equal(w[:, 0], w_q)
    np.testing.assert_array_equal(w[:, 1], w_k)
    np.testing.assert_array_equal(w[:, 2], w_v)


def test_qkv_init_flat_layout_with_grouped_heads_in_a_dense_layer():
    import flax.linen as nn

    init = mj.qkv_init(4, 8, num_kv_heads=2, method="fast")
    params = nn.Dense((4 + 2 * 2) * 8, kernel_init=init).init(jax.random.key(0), jnp.ones((1, 32)))
    w = params["params"]["kernel"]
    assert w.shape == (32, 64)
    w_q, w_k = w[:, :32].reshape(32, 4, 8), w[:, 32:48].reshape(32, 2, 8)
    diag, _ = diag_offdiag(qk_products(w_q, w_k))
    assert diag.min() > 0.1  # every head of a group carries the identity


@pytest.mark.parametrize("shape", [(64, 3, 4, 8), (64, 100), (64, 2, 4, 16), (64,)])
def test_qkv_init_rejects_shapes_that_do_not_fit(shape):
    with pytest.raises(ValueError, match="shape"):
        mj.qkv_init(4, 16)(jax.random.key(0), shape)


def test_qkv_init_rejects_integer_dtype():
    with pytest.raises(TypeError, match="dtype"):
        mj.qkv_init(4, 16)(jax.random.key(0), (64, 3, 4, 16), jnp.int32)


# --------------------------------------------------------------------------- position embeddings


def test_sincos_1d_values_at_known_positions():
    emb = np.asarray(mj.sincos_1d()(None, (10, 8)))
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(emb[3, 0], np.sin(3.0), atol=1e-6)  # highest frequency is 1
    np.testing.assert_allclose(emb[:, 3], np.sin(np.arange(10) * 1e-4), atol=1e-6)  # lowest is 1/temperature


def test_sincos_2d_is_row_major_over_the_grid_and_broadcasts():
    emb = np.asarray(mj.sincos_2d((2, 3))(None, (5, 6, 8)))
    assert emb.shape == (5, 6, 8)
    # token t sits at row t // 3, column t % 3; first quarter is sin(x), third quarter sin(y)
    np.testing.assert_allclose(emb[0, :, 0], np.sin([0, 1, 2, 0, 1, 2]), atol=1e-6)
    np.testing.assert_allclose(emb[0, :, 4], np.sin([0, 0, 0, 1, 1, 1]), atol=1e-6)
    np.testing.assert_array_equal(emb[0], emb[4])


@pytest.mark.parametrize(
    "make,shape,match",
    [
        (lambda: mj.sincos_1d(), (4, 7), "even"),
        (lambda: mj.sincos_2d(), (10, 8), "grid"),
        (lambda: mj.sincos_2d((2, 2)), (4, 6), "divisible by 4"),
        (lambda: mj.sincos_2d(), (16,), "rank"),
    ],
)
def test_position_embeddings_reject_bad_shapes(make, shape, match):
    with pytest.raises(ValueError, match=match):
        make()(None, shape)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(d_in=0), ValueError, "d_in"),
        (dict(d_in=-3), ValueError, "d_in"),
        (dict(d_in=32.0), TypeError, "d_in"),
        (dict(num_heads=0), ValueError, "num_heads"),
        (dict(head_dim=0), ValueError, "head_dim"),
        (dict(head_dim=64), ValueError, "head_dim"),
        (dict(num_kv_heads=3), ValueError, "multiple of num_kv_heads"),
        (dict(d_kv=4), ValueError, "d_kv"),
        (dict(distribution="laplace"), ValueError, "distribution"),
        (dict(method="svd"), ValueError, "method"),
        (dict(dtype=jnp.int32), TypeError, "dtype"),
        (dict(alpha=float("nan")), ValueError, "alpha"),
        (dict(beta="0.7"), TypeError, "beta"),
    ],
)
def test_query_key_rejects_bad_input_naming_the_argument(kwargs, error, match):
    args = dict(d_in=32, num_heads=4, head_dim=8) | kwargs
    with pytest.raises(error, match=match):
        mj.query_key(jax.random.key(0), args.pop("d_in"), args.pop("num_heads"), args.pop("head_dim"), **args)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(sign=0), ValueError, "sign"),
        (dict(d_out=4), ValueError, "d_out"),
        (dict(rotate_heads="yes"), TypeError, "rotate_heads"),
        (dict(num_kv_heads=5), ValueError, "num_kv_heads"),
        (dict(dtype=jnp.uint8), TypeError, "dtype"),
    ],
)
def test_value_output_rejects_bad_input_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        mj.value_output(jax.random.key(0), 32, 4, 8, **kwargs)


def test_a_batch_of_keys_is_rejected_with_a_hint_to_vmap():
    with pytest.raises(ValueError, match="vmap"):
        mj.query_key(jax.random.split(jax.random.key(0), 2), 32, 4, 8)
