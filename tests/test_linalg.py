"""mimetic_jax._linalg: decompositions batch safely on CPU (the jaxlib 0.10 thread-pool deadlock)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mimetic_jax as mj
from mimetic_jax import _linalg


def test_cpu_sequential_svd_equals_the_native_batched_svd():
    a = jax.random.normal(jax.random.key(0), (2, 3, 12, 12))
    looped = jax.jit(jax.vmap(jax.vmap(_linalg._svd)))(a)  # nested vmap recurses through the rule
    native = jax.vmap(jax.vmap(lambda m: jnp.linalg.svd(m, full_matrices=False)))(a)
    for x, y in zip(looped, native):
        np.testing.assert_allclose(np.abs(x), np.abs(y), atol=1e-5)  # up to SVD signs
    np.testing.assert_allclose(jnp.einsum("...ik,...k,...kj->...ij", *looped), a, atol=1e-5)


def test_cpu_sequential_broadcasts_unbatched_arguments():
    add = _linalg.cpu_sequential(lambda x, y: x @ y)
    x = jax.random.normal(jax.random.key(1), (4, 3, 3))
    y = jnp.eye(3) * 2.0
    out = jax.vmap(add, in_axes=(0, None))(x, y)
    np.testing.assert_allclose(out, 2.0 * x, rtol=1e-6)


def _lapack_operand_ranks(hlo: str) -> list[int]:
    """Rank of the first operand of every LAPACK custom call in compiled HLO text."""
    shapes = re.findall(r'custom_call_target="lapack_\w+".*?operand_layout_constraints=\{\w+\[([\d,]*)\]', hlo)
    return [len(s.split(",")) for s in shapes]


def test_vmapped_samplers_call_lapack_one_matrix_at_a_time_on_cpu():
    def draw(k):
        return (
            *mj.query_key(k, 64, 4, 16, num_kv_heads=2),
            *mj.value_output(k, 64, 4, 16, method="fast", rotate_heads=True),
            *mj.query_key(k, 64, 4, 8, method="fast", num_kv_heads=2),
        )

    hlo = jax.jit(jax.vmap(draw)).lower(jax.random.split(jax.random.key(0), 3)).compile().as_text()
    ranks = _lapack_operand_ranks(hlo)
    assert len(ranks) >= 3  # svd, qr, cholesky all appear (triangular inverses are matrix products)
    assert ranks == [2] * len(ranks), ranks  # no batched LAPACK kernel: those can deadlock the CPU pool


@pytest.mark.parametrize("n", [1, 2, 3, 8, 17, 64, 100])
def test_lower_inverse_is_the_triangular_solve_to_rounding(n):
    x = jax.random.normal(jax.random.key(n), (2, 3, 2 * n + 4, n))
    lower = jnp.linalg.cholesky(jnp.einsum("...dr,...ds->...rs", x, x))
    inv = jax.jit(_linalg.lower_inverse)(lower)
    ref = jax.scipy.linalg.solve_triangular(lower, jnp.broadcast_to(jnp.eye(n), lower.shape), lower=True)
    assert inv.shape == lower.shape
    np.testing.assert_array_equal(jnp.triu(inv, 1), 0.0)
    np.testing.assert_allclose(inv, ref, rtol=0, atol=2e-6 * float(jnp.abs(ref).max()))
    np.testing.assert_allclose(inv @ lower, jnp.broadcast_to(jnp.eye(n), lower.shape), atol=2e-6)


def test_orthonormalize_calls_no_lapack_triangular_solve():
    """SciPy's OpenBLAS trsm (jaxlib's CPU kernel) made the fast init's time vary 5 ms - 1.1 s on a busy box."""
    x = jax.random.normal(jax.random.key(0), (3, 4, 96, 16))
    hlo = jax.jit(jax.vmap(jax.vmap(_linalg.orthonormalize))).lower(x).compile().as_text()
    assert "trsm" not in hlo and "lapack_spotrf" in hlo
    q = jax.jit(jax.vmap(jax.vmap(_linalg.orthonormalize)))(x)
    np.testing.assert_allclose(
        jnp.einsum("...dr,...ds->...rs", q, q), jnp.broadcast_to(jnp.eye(16), (3, 4, 16, 16)), atol=2e-6
    )


@pytest.mark.slow  # about 25 s on 2 cores; runs in .ci/run's slow pass
def test_jitted_init_of_many_attention_blocks_finishes_on_cpu():
    """Regression: with batched LAPACK calls this hung forever on 2 CPU cores (jaxlib 0.10.2)."""
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, flax.linen as nn, mimetic_jax as mj
        class M(nn.Module):
            @nn.compact
            def __call__(self, x):
                for i in range(16):
                    x = x + nn.MultiHeadDotProductAttention(num_heads=4, name=f"a{i}")(x)
                return x
        x = jnp.ones((1, 4, 32))
        for method in ("exact", "fast"):
            f = jax.jit(lambda k: mj.mimetic_attention(M().init(k, x), k, method=method))
            for seed in range(3):
                jax.block_until_ready(f(jax.random.key(seed)))
        print("finished")
    """)
    env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("n", [384, 389])  # 16×24 factors; a prime: one exact Haar QR
def test_kronecker_orthogonal_is_orthogonal_with_haar_like_entries(n):
    q = np.asarray(_linalg.kronecker_orthogonal(jax.random.key(3), n), np.float64)
    np.testing.assert_allclose(q @ q.T, np.eye(n), atol=2e-6)
    x = (q * np.sqrt(n)).ravel()
    # Haar: √n Q_ij → N(0, 1); over N = n² entries the sample mean of x² has std √(2/N)
    # and that of x⁴ std √(96/N) (Gaussian moments; entries are nearly independent).
    big_n = x.size
    assert abs(np.mean(x**2) - 1.0) < 1e-5  # rows are unit vectors: exact up to rounding
    assert abs(np.mean(x**4) - 3.0) < 5 * np.sqrt(96 / big_n)
    assert np.abs(x).max() < np.sqrt(2 * np.log(2 * big_n)) + 1.0  # no heavy tail left from the start


def test_kronecker_orthogonal_one_round_alone_is_not_haar_like():
    """The test above can fail: a single Kronecker product of Haar factors has heavy fourth moments."""
    n = 384
    qa = np.linalg.qr(np.random.default_rng(0).standard_normal((16, 16)))[0]
    qb = np.linalg.qr(np.random.default_rng(1).standard_normal((24, 24)))[0]
    x = (np.kron(qa, qb) * np.sqrt(n)).ravel()
    assert np.mean(x**4) - 3.0 > 5 * np.sqrt(96 / x.size)


def test_kronecker_orthogonal_same_key_same_matrix_under_jit_and_vmap():
    keys = jax.random.split(jax.random.key(4), 3)
    eager = [_linalg.kronecker_orthogonal(k, 12) for k in keys]
    batched = jax.jit(jax.vmap(lambda k: _linalg.kronecker_orthogonal(k, 12)))(keys)
    np.testing.assert_allclose(np.stack(eager), batched, atol=1e-6)
    assert not np.allclose(eager[0], eager[1])


@pytest.mark.parametrize(
    "rows,cols,rank,blocks,regime",
    [
        (96, 96, 48, 1, "template"),
        (96, 96, 49, 1, "exact"),
        (96, 96, 95, 1, "exact"),
        (96, 96, 96, 1, "rotation"),
        (96, 64, 48, 1, "template"),
        (96, 64, 50, 1, "exact"),
        (96, 64, 64, 1, "rotation"),
        (64, 96, 64, 1, "rotation"),
        (96, 96, 95, 2, "template"),
        (96, 96, 96, 2, "rotation"),
        (96, 64, 64, 3, "rotation"),
        (64, 96, 16, 2, "exact"),
    ],
)
def test_fast_regime_rules(rows, cols, rank, blocks, regime):
    assert _linalg.fast_regime(rows, cols, rank, blocks) == regime


@pytest.mark.parametrize("rows,cols,rank", [(48, 48, 30), (48, 32, 28), (32, 48, 28)])
def test_fast_factors_in_the_exact_regime_are_the_exact_factors_of_the_same_key(rows, cols, rank):
    key = jax.random.key(7)
    fast = jax.jit(lambda k: _linalg.fast_factors(k, rows, cols, rank, 0.7, 0.7))(key)
    exact = jax.jit(lambda k: _linalg.exact_factors(_linalg.identity_target(k, rows, cols, 0.7, 0.7, "normal"), rank))(
        key
    )
    for f, e in zip(fast, exact):
        assert f.shape == e.shape
        np.testing.assert_array_equal(f, e)


def test_exact_factors_of_a_stack_share_the_best_right_space_and_balance_the_factors():
    g, rows, cols, rank = 3, 40, 32, 8
    targets = np.asarray(
        _linalg.stacked_targets(jax.random.split(jax.random.key(8), g), rows, cols, 0.7, 0.7, "normal"), np.float64
    )
    left, right = (np.asarray(x, np.float64) for x in _linalg.exact_factors(jnp.asarray(targets, jnp.float32), rank, g))
    assert left.shape == (g * rows, rank) and right.shape == (cols, rank)
    v = np.linalg.svd(targets)[2][:rank].T
    np.testing.assert_allclose(left @ right.T, targets @ v @ v.T, atol=1e-4)
    # g^{1/4}: one block's left factor has, on average, the shared right factor's column norms.
    np.testing.assert_allclose((left**2).sum(0) / g, (right**2).sum(0), rtol=1e-4)


@pytest.mark.parametrize("rows,cols,rank,blocks", [(96, 96, 24, 2), (96, 64, 32, 4), (96, 96, 96, 2)])
def test_fast_factors_of_a_stack_match_the_exact_spectrum_and_diagonal(rows, cols, rank, blocks):
    """Per block, ``left_h @ right.T`` against the exact group construction: singular values and diagonal mean."""
    keys = jax.random.split(jax.random.key(9), 6)

    def per_block(left, right):
        prods = np.einsum(
            "khir,kjr->khij",
            np.asarray(left, np.float64).reshape(len(keys), blocks, rows, rank),
            np.asarray(right, np.float64),
        )
        n = min(rows, cols)
        return np.linalg.svd(prods, compute_uv=False)[..., :rank].mean((0, 1)), np.einsum("khii->", prods[..., :n, :n])

    def exact(k):
        return _linalg.exact_factors(
            _linalg.stacked_targets(jax.random.split(k, blocks), rows, cols, 0.7, 0.7, "normal"), rank, blocks
        )

    sv_f, diag_f = per_block(
        *jax.jit(jax.vmap(lambda k: _linalg.fast_factors(k, rows, cols, rank, 0.7, 0.7, blocks=blocks)))(keys)
    )
    sv_e, diag_e = per_block(*jax.jit(jax.vmap(exact))(keys))
    np.testing.assert_allclose(sv_f, sv_e, rtol=0.05, atol=0.02 * sv_e[0])  # the smallest of a full rank are noisy
    assert abs(diag_f - diag_e) < 0.02 * abs(diag_e)


@pytest.mark.parametrize("n,b,r", [(64, 32, 32), (80, 32, 32), (48, 8, 16)])  # Householder, Householder, Cholesky
def test_complement_basis_is_orthonormal_and_orthogonal_to_the_basis(n, b, r):
    keys = jax.random.split(jax.random.key(10), 64)

    def one(k):
        kb, kx = jax.random.split(k)
        basis = _linalg.haar_columns(kb, n, b)
        return basis, _linalg.complement_basis(basis, jax.random.normal(kx, (n, r)))

    basis, p = (np.asarray(x, np.float64) for x in jax.jit(jax.vmap(one))(keys))
    np.testing.assert_allclose(np.einsum("kir,kis->krs", p, p), np.broadcast_to(np.eye(r), (64, r, r)), atol=1e-5)
    np.testing.assert_allclose(np.einsum("kib,kir->kbr", basis, p), 0.0, atol=1e-5)


@pytest.mark.parametrize("blocks", [1, 2])
def test_template_product_has_the_template_singular_values_at_the_boundary(blocks):
    """Regression: at rank = rows/2 the complement of EQ is as wide as P, and the Cholesky QR of the projected
    Gaussian lost orthogonality (up to 0.9 at d 96 in 64 keys) or gave NaN (3 of 32 draws at d 384)."""
    d, rank = 64, 32 if blocks == 1 else 60  # blocks 2: the complement has 2·64 − 60 = 68 dimensions for 60 columns
    keys = jax.random.split(jax.random.key(11), 32)
    left, right = (
        np.asarray(x, np.float64)
        for x in jax.jit(jax.vmap(lambda k: _linalg.fast_factors(k, d, d, rank, 0.7, 0.7, blocks=blocks)))(keys)
    )
    s, _ = _linalg.spectral_template(d, d, rank, 0.7, 0.7, "normal", blocks)
    sv = np.linalg.svd(np.einsum("kir,kjr->kij", left, right), compute_uv=False)[:, :rank]
    np.testing.assert_allclose(sv, np.broadcast_to(s, sv.shape), rtol=1e-4)
