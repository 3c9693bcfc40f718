"""Low-rank factorization of "identity plus noise" targets, exact and fast.

Every structured product in the package (query·key, value·out, the SSM's C·B)
has the same shape of problem: find ``left`` (rows × r) and ``right``
(cols × r) whose product ``left @ right.T`` is the best rank-``r``
approximation of a random target

    A = α Z + β I_{rows×cols},    Z_ij iid, Var Z_ij = 1 / max(rows, cols)

(``I_{rows×cols}`` the rectangular identity). Two ways are offered:

``exact_factors``
    The published construction (Trockman & Kolter 2023): draw ``A``, take its
    SVD ``U S Vᵀ`` and return ``U[:, :r] √S``, ``V[:, :r] √S``. Costs
    ``rows·cols`` random numbers and a full SVD per target.

``fast_factors`` (this project's construction)
    Draws about one random number per weight and never forms ``A``. Two
    regimes, both invariant under rotations like the exact recipe:

    * *Rotation regime* (``r = min(rows, cols)``, or ``2r > max(rows, cols)``):
      with ``Q`` Haar-orthonormal on the smaller side, ``AᵀQ = βEᵀQ + αZᵀQ``
      and ``ZᵀQ`` is again iid Gaussian (rotation invariance), so
      ``left = c Q``, ``right = (βEᵀQ + αG)/c`` gives ``left @ right.T =
      Q Qᵀ A`` without drawing ``Z``. At full rank this *is* the target, with
      exactly the target's law for Gaussian ``Z`` *whatever the law of* ``Q``, as
      long as it is orthogonal and independent of ``G``; so at full rank ``Q`` comes
      from rounds of small Haar Kronecker factors (:func:`kronecker_orthogonal`,
      approximately Haar, ``O(n²√n)`` in a few products) instead of the ``O(n³)``
      QR. Below full rank it is the projection onto a random subspace, weaker on
      the diagonal than the best one. ``c`` balances the two factors' Frobenius norms.
    * *Template regime* (``r < min`` and ``2r <= max``): the exact factors are
      ``U_r √s`` and ``V_r √s`` whose statistics are set by the singular values
      ``s_i`` and the alignments ``c_i = u_iᵀ E v_i``. Both concentrate for
      large matrices, so we estimate them once per configuration from a few
      reference-size SVDs on the host (``spectral_template``, cached), and
      build ``V = Q``, ``U = E Q diag(c) + P diag(√(1-c²))`` with ``Q, P``
      Haar and ``P ⟂ EQ``. Then the product has the exact recipe's expected
      singular values (exactly), diagonal mean ``Σ c_i s_i / d`` and
      Frobenius norm; the benchmark ``benchmarks/product_statistics.py``
      compares the rest.

Batched LAPACK on CPU (a workaround, ours)
    jaxlib 0.10's CPU LAPACK kernels (``gesdd``, ``geqrf``, ``potrf``, ``trsm``, ...)
    split a *batch* of matrices over XLA's intra-op thread pool and block until the
    pieces finish. When as many batched calls run at once as the pool has threads
    (independent attention blocks in one jitted model init, or several virtual CPU
    devices), every thread waits for work queued behind it and the process hangs
    forever. Seen here: a jitted ``mimetic_attention`` of an 8-block model on a
    2-core machine. Every decomposition below therefore goes through
    :func:`cpu_sequential`, which under ``vmap`` loops over the batch one matrix at a
    time on CPU (one LAPACK call per matrix runs inline and cannot wait on the
    pool) and keeps the native batched kernel on GPU and TPU. Same numbers either
    way: the matrices are decomposed independently.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

#: Largest side of the reference matrices behind ``spectral_template``.
TEMPLATE_SIZE = 384
#: Singular values pooled (over reference samples) per template.
TEMPLATE_POOL = 4096
#: Rounds of Kronecker-Haar factors in :func:`kronecker_orthogonal` (2 are already Haar-like at n = 768).
KRONECKER_ROUNDS = 3


def cpu_sequential(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (arrays in, arrays out), batched under ``vmap`` by a loop on CPU, natively elsewhere.

    A ``jax.custom_batching.custom_vmap`` rule: on the CPU platform the batch is
    mapped with ``lax.map`` (one unbatched call per element; nested ``vmap`` recurses),
    on other platforms with ``jax.vmap(fn)``. The platform is chosen when the
    computation is lowered (``lax.platform_dependent``), so one jitted function
    serves every backend. See the module docstring for why.
    """

    @jax.custom_batching.custom_vmap
    def wrapped(*args):
        return fn(*args)

    @wrapped.def_vmap
    def _rule(axis_size, in_batched, *args):
        args = [a if b else jnp.broadcast_to(a, (axis_size, *a.shape)) for a, b in zip(args, in_batched)]
        out = jax.lax.platform_dependent(
            *args,
            cpu=lambda *xs: jax.lax.map(lambda ys: wrapped(*ys), xs),
            default=jax.vmap(fn),
        )
        return out, jax.tree.map(lambda _: True, out)

    return functools.wraps(fn)(wrapped)


@cpu_sequential
def _cholesky(m: Array) -> Array:
    return jnp.linalg.cholesky(m)


@cpu_sequential
def _lower_inverse(lower: Array) -> Array:
    return jax.scipy.linalg.solve_triangular(lower, jnp.eye(lower.shape[0], dtype=lower.dtype), lower=True)


@cpu_sequential
def _qr(x: Array) -> tuple[Array, Array]:
    return tuple(jnp.linalg.qr(x))


@cpu_sequential
def _svd(a: Array) -> tuple[Array, Array, Array]:
    return tuple(jnp.linalg.svd(a, full_matrices=False))


def noise(key: Array, shape: tuple[int, ...], scale_dim: int, distribution: str, dtype) -> Array:
    """iid entries with variance ``1/scale_dim``: normal, or uniform on ``±√(3/scale_dim)``."""
    if distribution == "normal":
        return jax.random.normal(key, shape, dtype) * jnp.asarray(1.0 / math.sqrt(scale_dim), dtype)
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * jnp.asarray(math.sqrt(3.0 / scale_dim), dtype)


def identity_target(
    key: Array, rows: int, cols: int, alpha: float, beta: float, distribution: str, dtype=jnp.float32
) -> Array:
    """Draw ``α Z + β I_{rows×cols}`` with ``Var Z_ij = 1/max(rows, cols)``."""
    z = noise(key, (rows, cols), max(rows, cols), distribution, dtype)
    return jnp.asarray(alpha, dtype) * z + jnp.asarray(beta, dtype) * jnp.eye(rows, cols, dtype=dtype)


def embed_rows(x: Array, rows: int) -> Array:
    """``I_{rows×n} @ x`` for ``x`` of shape ``(n, r)``: zero-pad or truncate the rows."""
    n = x.shape[0]
    if rows >= n:
        return jnp.pad(x, ((0, rows - n), (0, 0)))
    return x[:rows]


def orthonormalize(x: Array) -> Array:
    """Orthonormal basis of the columns of a well-conditioned tall ``x`` (Cholesky QR).

    ``Q = X R⁻¹`` with ``RᵀR = XᵀX``: the ``Q`` factor of the QR decomposition with a
    positive diagonal, so a Gaussian ``X`` gives a Haar-distributed ``Q``. Matrix
    products only (Householder QR batches poorly on CPU). Callers keep
    ``2 r <= n``, where a Gaussian ``X`` has condition number below about 6.
    """
    return x @ _lower_inverse(_cholesky(x.T @ x)).T


def haar_columns(key: Array, n: int, r: int, dtype=jnp.float32) -> Array:
    """``n × r`` matrix with Haar-distributed orthonormal columns (``r <= n``)."""
    g = jax.random.normal(key, (n, r), dtype)
    if 2 * r <= n:
        return orthonormalize(g)
    q, upper = _qr(g)
    return q * jnp.sign(jnp.diagonal(upper))


def balanced_divisor(n: int) -> int:
    """The largest divisor of ``n`` that is at most ``√n`` (``1`` for a prime ``n``)."""
    a = math.isqrt(n)
    while n % a:
        a -= 1
    return a


def kronecker_orthogonal(key: Array, n: int, dtype=jnp.float32) -> Array:
    """A random ``n × n`` orthogonal matrix from rounds of small Haar Kronecker factors (ours; approximately Haar).

    With ``n = a·b`` (``a`` the largest divisor of ``n`` up to ``√n``):
    ``Q = K_R P_R ⋯ K_2 P_2 K_1`` for ``R = KRONECKER_ROUNDS`` rounds, each
    ``K_r = A_r ⊗ B_r`` with ``A_r``, ``B_r`` Haar on ``a×a`` and ``b×b`` (Householder
    QR of small Gaussians) and ``P_r`` a uniform random permutation. One round gives
    entries that are products of two Gaussian-like factors (fourth moment of ``√n Q``
    about 9, against 3 for Haar); after a permutation, every entry of the next round is
    a sum of ``a·b`` such products and the law is Haar-like: at ``n = 768`` (``24×32``),
    2 and 3 rounds give fourth moments 3.01 and 2.99, the largest entry and the
    spread of correlations between the squared entries of two columns as a Haar
    sample's. For a prime ``n`` (``a = 1``) a single round is one exact Haar QR.

    Cost ``O(R n² (a + b))`` flops in a few batched products, ``R(a² + b²) + R n``
    random numbers and ``2R`` small QRs; at ``n = 768``, jitted on 2 CPU cores, about
    5 ms against 170 ms for the 40 layers of Givens rotations this replaced (a
    parallel Kac walk) and 90 ms for the Householder QR of an ``n×n`` Gaussian.
    Exactly orthogonal up to float rounding; ``tests/test_linalg.py`` checks
    orthogonality and Haar-like moments. Used where only
    orthogonality matters for the product: the full-rank rotation regime of
    :func:`fast_factors`.
    """
    a = balanced_divisor(n)
    b = n // a
    q = None
    for round_key in jax.random.split(key, KRONECKER_ROUNDS if a > 1 else 1):
        k_perm, k_a, k_b = jax.random.split(round_key, 3)
        qa, qb = haar_columns(k_a, a, a, dtype), haar_columns(k_b, b, b, dtype)
        if q is None:
            q = jnp.kron(qa, qb)
        else:
            q = q[jax.random.permutation(k_perm, n)]
            q = jnp.einsum("ij,kl,jlm->ikm", qa, qb, q.reshape(a, b, n)).reshape(n, n)
    return q


def exact_factors(a: Array, rank: int) -> tuple[Array, Array]:
    """``(U_r √S_r, V_r √S_r)`` from the SVD of ``a``: their product is the best rank-``r`` approximation."""
    u, s, vt = _svd(a)
    root = jnp.sqrt(s[:rank])
    return u[:, :rank] * root, vt[:rank].T * root


def fit_left(a_right: Array, right: Array) -> Array:
    """Least-squares ``L`` minimizing ``‖L rightᵀ − A‖`` given ``A @ right``, for orthogonal
    columns of ``right``.

    ``L = A R (RᵀR)⁻¹`` and ``RᵀR`` is diagonal here, so this is a column scaling;
    zero columns stay zero instead of dividing by zero.
    """
    sq = jnp.sum(right * right, axis=0)
    return a_right * jnp.where(sq > 0, 1.0 / jnp.where(sq > 0, sq, 1.0), 0.0)


def _numpy_target(rng: np.random.Generator, rows: int, cols: int, alpha: float, beta: float, distribution: str):
    big = max(rows, cols)
    if distribution == "normal":
        z = rng.standard_normal((rows, cols)) / math.sqrt(big)
    else:
        z = rng.uniform(-1.0, 1.0, (rows, cols)) * math.sqrt(3.0 / big)
    return alpha * z + beta * np.eye(rows, cols)


@functools.lru_cache(maxsize=256)
def spectral_template(
    rows: int, cols: int, rank: int, alpha: float, beta: float, distribution: str
) -> tuple[np.ndarray, np.ndarray]:
    """Expected top-``rank`` singular values ``s_i`` and alignments ``u_iᵀ E v_i`` of the exact recipe.

    Estimated on the host from SVDs of reference targets of the same aspect ratio,
    largest side at most ``TEMPLATE_SIZE`` (the spectrum of ``α Z + β I`` with
    ``Var Z = 1/d`` does not depend on ``d`` in the large-``d`` limit), averaged
    over enough samples to pool ``TEMPLATE_POOL`` values, and interpolated in the
    quantile ``(i + ½)/min(rows, cols)``. Deterministic (fixed NumPy seed) and
    cached, so it costs nothing under ``jit`` after the first trace.
    """
    scale = min(1.0, TEMPLATE_SIZE / max(rows, cols))
    r0, c0 = max(1, round(rows * scale)), max(1, round(cols * scale))
    m0 = min(r0, c0)
    samples = min(16, max(1, math.ceil(TEMPLATE_POOL / m0)))
    rng = np.random.default_rng(20230516)
    s_sum = np.zeros(m0)
    c_sum = np.zeros(m0)
    for _ in range(samples):
        u, s, vt = np.linalg.svd(_numpy_target(rng, r0, c0, alpha, beta, distribution), full_matrices=False)
        s_sum += s
        c_sum += np.einsum("ji,ij->i", u[:m0], vt[:, :m0])
    q0 = (np.arange(m0) + 0.5) / m0
    q = (np.arange(rank) + 0.5) / min(rows, cols)
    return np.interp(q, q0, s_sum / samples), np.clip(np.interp(q, q0, c_sum / samples), -1.0, 1.0)


def _rotation_factors(key, rows, cols, rank, alpha, beta, dtype):
    # Requires rows >= cols: Q lives on the (smaller) column side.
    kq, kg = jax.random.split(key)
    q = kronecker_orthogonal(kq, cols, dtype) if rank == cols else haar_columns(kq, cols, rank, dtype)
    g = noise(kg, (rows, rank), max(rows, cols), "normal", dtype)
    c = (beta**2 + alpha**2 * rows / max(rows, cols)) ** 0.25 or 1.0
    left = (jnp.asarray(beta, dtype) * embed_rows(q, rows) + jnp.asarray(alpha, dtype) * g) / c
    return left, q * jnp.asarray(c, dtype)


def _template_factors(key, rows, cols, rank, alpha, beta, distribution, dtype):
    # Requires rows >= cols and 2 * rank <= rows.
    s, c = spectral_template(rows, cols, rank, alpha, beta, distribution)
    kq, kp = jax.random.split(key)
    q = haar_columns(kq, cols, rank, dtype)
    eq = embed_rows(q, rows)
    x = jax.random.normal(kp, (rows, rank), dtype)
    p = orthonormalize(x - eq @ (eq.T @ x))
    root = jnp.asarray(np.sqrt(s), dtype)
    u = eq * jnp.asarray(c, dtype) + p * jnp.asarray(np.sqrt(1.0 - c**2), dtype)
    return u * root, q * root


def fast_factors(
    key: Array,
    rows: int,
    cols: int,
    rank: int,
    alpha: float,
    beta: float,
    distribution: str = "normal",
    dtype=jnp.float32,
) -> tuple[Array, Array]:
    """Factors ``(left, right)`` whose product mimics the best rank-``r`` approximation of ``αZ + βI``.

    See the module docstring for the two regimes. About ``(rows + cols)·r``
    random numbers, one Cholesky QR of an ``n × r`` matrix, no ``rows × cols``
    target. Random factors are Gaussian whatever ``distribution`` (for uniform
    ``Z`` they are Gaussian in the limit by the central limit theorem);
    ``distribution`` enters through the template.
    """
    if rows < cols:
        right, left = fast_factors(key, cols, rows, rank, alpha, beta, distribution, dtype)
        return left, right
    if rank == cols or 2 * rank > rows:
        return _rotation_factors(key, rows, cols, rank, alpha, beta, dtype)
    return _template_factors(key, rows, cols, rank, alpha, beta, distribution, dtype)
