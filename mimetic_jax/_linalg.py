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
    Draws about one random number per weight and never forms ``A``. Three
    regimes, chosen by :func:`fast_regime` from the sizes alone, each invariant
    under rotations like the exact recipe:

    * *Rotation regime* (``r = min(rows, cols)``, full rank): with ``Q``
      orthogonal on the smaller side, ``AᵀQ = βEᵀQ + αZᵀQ`` and ``ZᵀQ`` is again
      iid Gaussian (rotation invariance), so ``left = c Q``, ``right = (βEᵀQ +
      αG)/c`` gives ``left @ right.T = Q Qᵀ A = A`` without drawing ``Z``: exactly
      the target's law for Gaussian ``Z`` *whatever the law of* ``Q``, as long as it
      is orthogonal and independent of ``G``; so ``Q`` comes from rounds of small
      Haar Kronecker factors (:func:`kronecker_orthogonal`, approximately Haar,
      ``O(n²√n)`` in a few products) instead of the ``O(n³)`` QR. ``c`` balances
      the two factors' Frobenius norms.
    * *Template regime* (``r < min`` and ``2r <= max``): the exact factors are
      ``U_r √s`` and ``V_r √s`` whose statistics are set by the singular values
      ``s_i`` and the alignments ``c_i = u_iᵀ E v_i``. Both concentrate for
      large matrices, so we estimate them once per configuration from a few
      reference-size SVDs on the host (``spectral_template``, cached), and
      build ``V = Q``, ``U = E Q diag(c) + P diag(√(1-c²))`` with ``Q, P``
      Haar and ``P ⟂ EQ`` (:func:`complement_basis`). Then the product has
      the exact recipe's expected singular values (exactly), diagonal mean
      ``Σ c_i s_i / d`` and Frobenius norm; the benchmarks
      ``benchmarks/product_statistics.py`` and ``attention_regimes.py``
      compare the rest.
    * *Exact regime* (``max/2 < r < min``, e.g. a head of 128 at ``d = 192``):
      ``P`` has no room beside ``EQ``, and the projection of the rotation regime
      onto a random ``r``-dimensional subspace keeps only ``β r/d`` of the
      identity (0.47 instead of the exact recipe's 0.62 at ``d = 192``, ``r = 128``:
      25 % low). Here the factors hold ``(rows + cols) r > rows·cols`` numbers
      anyway, so ``fast_factors`` draws the target and returns the exact factors,
      the same arrays as ``exact_factors`` of ``identity_target`` with the same key.

``blocks > 1``: a shared right factor for several targets (ours)
    Grouped-query attention: ``g`` targets ``A_1 … A_g`` (rows × cols each, one
    per query head of a group) share one key factor. The best shared right space
    of rank ``r`` (least squares over the group, Eckart–Young) is the top-``r``
    right singular space ``V`` of the vertical stack ``[A_1; …; A_g]`` (the top
    eigenvectors of ``Σ A_hᵀ A_h``); each left factor is then its own target's
    least-squares fit ``A_h V (…)⁻¹`` and each product ``A_h V Vᵀ``. The heads are
    exchangeable, so every head of a group has the same expected diagonal. With
    the stack's SVD ``U S Vᵀ`` we return ``left = U √S g^{1/4}`` (the stack of the
    ``g`` left factors) and ``right = V √S g^{-1/4}``, which balances one head's
    factor against the shared one; for ``g = 1`` this is ``exact_factors``.
    The fast version applies the same three regimes to the stack, whose identity
    part is ``β√g Ẽ`` with ``Ẽ = [E; …; E]/√g`` (orthonormal columns when
    ``rows >= cols``): full rank ``r = cols`` is the rotation regime with the
    block-tiled identity (every head exactly its target's law), ``r < cols`` the
    template regime with the stack's template (``2r <= g·rows`` always holds), and
    ``rows < cols`` (where ``Ẽ`` is not orthonormal) the exact regime.

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

    The triangular inverse of Cholesky QR avoids LAPACK altogether
    (:func:`lower_inverse`, matrix products): jaxlib's CPU ``trsm`` is the one of SciPy's
    OpenBLAS, whose own threads fight XLA's pool for the cores, and on a busy 2-core
    machine the 144 Cholesky factorizations and inversions of ``64 × 64`` of ViT-B's
    query/key heads took 6 ms in one run and 1.1 s in another.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mimetic_jax._sharding import Work

Array = jax.Array
#: No work split: every construction below runs as written (unsharded, or left to XLA's propagation).
NO_WORK = Work()
#: Row blocks of a Gram matrix (at most; a power of two dividing the rows), summed in a fixed order: up to
#: this many row shards compute their blocks locally and give the same bits as one device.
GRAM_BLOCKS = 8

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
        batched = [
            a if b else jnp.broadcast_to(a, (axis_size, *a.shape)) for a, b in zip(args, in_batched, strict=True)
        ]
        out = jax.lax.platform_dependent(
            *batched,
            cpu=lambda *xs: jax.lax.map(lambda ys: wrapped(*ys), xs),
            default=jax.vmap(fn),
        )
        return out, jax.tree.map(lambda _: True, out)

    return functools.wraps(fn)(wrapped)


@cpu_sequential
def _cholesky(m: Array) -> Array:
    return jnp.linalg.cholesky(m)


def lower_inverse(lower: Array) -> Array:
    """Inverse of a lower-triangular ``n × n`` matrix (leading axes batched), by matrix products only.

    Blocked inversion level by level: the inverses of the diagonal blocks of size ``b``
    give those of size ``2b`` through ``[[A, 0], [C, D]]⁻¹ = [[A⁻¹, 0], [−D⁻¹ C A⁻¹, D⁻¹]]``,
    ``log₂ n`` levels of batched products (``n`` padded with an identity block to a power
    of two), about ``2n³/3`` flops. It replaces LAPACK's ``trsm`` (``solve_triangular``):
    on CPU jaxlib calls the ``trsm`` of SciPy's OpenBLAS, whose own threads, beside XLA's
    pool on a busy 2-core machine, made 144 factorizations and inversions of ``64 × 64``
    take 6 ms in one run and 1.1 s in another (the ``fast`` init before and after:
    ``benchmarks/results/init_cost_ab.md``); these products run in XLA and batch under
    ``vmap`` on every backend. For the well-conditioned Cholesky factors
    of :func:`orthonormalize` the result matches ``trsm`` to float rounding.
    """
    n = lower.shape[-1]
    size = 1 << max(0, (n - 1).bit_length())
    batch = lower.shape[:-2]
    if size > n:
        eye = jnp.broadcast_to(jnp.eye(size - n, dtype=lower.dtype), (*batch, size - n, size - n))
        lower = jnp.concatenate(
            [
                jnp.pad(lower, [(0, 0)] * len(batch) + [(0, 0), (0, size - n)]),
                jnp.concatenate([jnp.zeros((*batch, size - n, n), lower.dtype), eye], axis=-1),
            ],
            axis=-2,
        )
    # blocks[..., j, :, :]: the inverse of the j-th diagonal block of the current size
    blocks = (1.0 / jnp.diagonal(lower, axis1=-2, axis2=-1))[..., None, None]
    b = 1
    while b < size:
        m = size // (2 * b)
        tiles = lower.reshape(*batch, m, 2 * b, m, 2 * b)
        diag = jnp.diagonal(tiles, axis1=-4, axis2=-2)  # (..., 2b, 2b, m)
        c = jnp.moveaxis(diag, -1, -3)[..., b:, :b]  # (..., m, b, b): lower-left block of each pair
        pairs = blocks.reshape(*batch, m, 2, b, b)
        a_inv, d_inv = pairs[..., 0, :, :], pairs[..., 1, :, :]
        c_inv = -(d_inv @ c) @ a_inv
        top = jnp.concatenate([a_inv, jnp.zeros_like(a_inv)], axis=-1)
        bottom = jnp.concatenate([c_inv, d_inv], axis=-1)
        blocks = jnp.concatenate([top, bottom], axis=-2)
        b *= 2
    return blocks.reshape(*batch, size, size)[..., :n, :n]


@cpu_sequential
def _qr(x: Array) -> tuple[Array, Array]:
    q, r = jnp.linalg.qr(x)
    return q, r


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


def stacked_targets(
    keys: Array, rows: int, cols: int, alpha: float, beta: float, distribution: str, dtype=jnp.float32
) -> Array:
    """``identity_target`` of each key, stacked vertically: ``(len(keys)·rows, cols)``."""
    draw = functools.partial(
        identity_target, rows=rows, cols=cols, alpha=alpha, beta=beta, distribution=distribution, dtype=dtype
    )
    return jax.vmap(draw)(keys).reshape(-1, cols)


def embed_rows(x: Array, rows: int) -> Array:
    """``I_{rows×n} @ x`` for ``x`` of shape ``(n, r)``: zero-pad or truncate the rows."""
    n = x.shape[0]
    if rows >= n:
        return jnp.pad(x, ((0, rows - n), (0, 0)))
    return x[:rows]


def gram(x: Array, y: Array, work: Work = NO_WORK) -> Array:
    """``xᵀ y`` summed over fixed row blocks in a fixed order: the same bits however the rows are sharded.

    The rows are cut into ``gcd(n, GRAM_BLOCKS)`` blocks; each block's product is one local
    matrix product (on the device that holds those rows when ``work`` splits them), the
    ``r × s`` partial products are gathered on every device and added pairwise in a fixed
    tree. A plain ``x.T @ y`` over sharded rows is a partial product per device plus an
    all-reduce, whose order depends on the device count: Cholesky QR amplifies that
    difference (up to 6.6e-5 in a value factor, about 500 ulp).
    """
    n = x.shape[0]
    b = math.gcd(n, GRAM_BLOCKS)
    parts = jnp.einsum("bnr,bns->brs", x.reshape(b, n // b, x.shape[1]), y.reshape(b, n // b, y.shape[1]))
    parts = work.replicated(parts)
    while parts.shape[0] > 1:
        half = parts.shape[0] // 2
        parts = parts[:half] + parts[half:]
    return parts[0]


def orthonormalize(x: Array, work: Work = NO_WORK) -> Array:
    """Orthonormal basis of the columns of a well-conditioned tall ``x`` (Cholesky QR).

    ``Q = X R⁻¹`` with ``RᵀR = XᵀX``: the ``Q`` factor of the QR decomposition with a
    positive diagonal, so a Gaussian ``X`` gives a Haar-distributed ``Q``. Matrix
    products and one ``r × r`` Cholesky (Householder QR batches poorly on CPU; the
    inverse of ``Rᵀ`` is :func:`lower_inverse`). Callers keep
    ``2 r <= n``, where a Gaussian ``X`` has condition number below about 6. ``work``
    splits the rows: everything but the ``r × r`` Gram matrix (:func:`gram`) is row-local.
    """
    x = work.rows(x)
    inverse = work.replicated(lower_inverse(_cholesky(gram(x, x, work))))
    return work.rows(x @ inverse.T)


def complement_basis(basis: Array, x: Array, work: Work = NO_WORK) -> Array:
    """Orthonormal basis of the columns of ``x`` projected off the orthonormal columns of ``basis``.

    For a Gaussian ``x`` (``n × r``) it is Haar-distributed in the orthogonal complement of
    ``basis`` (``n × b``, ``b + r <= n``). The projected ``x`` is a Gaussian in ``n − b``
    dimensions: when ``2r <= n − b`` it is well conditioned and goes through
    :func:`orthonormalize` (matrix products); otherwise its condition number has a heavy
    tail (unbounded when ``r = n − b``: a square Gaussian), which Cholesky QR squares in
    float32, so the basis comes from a Householder QR of ``[basis, x]`` (columns after
    ``basis``, signs fixed as in :func:`haar_columns`): orthonormal and orthogonal to
    ``basis`` to rounding, whatever the conditioning.
    """
    b, r = basis.shape[1], x.shape[1]
    if b + 2 * r <= x.shape[0]:
        basis, x = work.rows(basis), work.rows(x)
        return orthonormalize(x - basis @ gram(basis, x, work), work)
    q, upper = _qr(jnp.concatenate([basis, x], axis=1))
    return q[:, b:] * jnp.sign(jnp.diagonal(upper)[b:])


def haar_columns(key: Array, n: int, r: int, dtype=jnp.float32, work: Work = NO_WORK) -> Array:
    """``n × r`` matrix with Haar-distributed orthonormal columns (``r <= n``)."""
    g = jax.random.normal(key, (n, r), dtype)
    if 2 * r <= n:
        return orthonormalize(g, work)
    q, upper = _qr(g)
    return q * jnp.sign(jnp.diagonal(upper))


def balanced_divisor(n: int) -> int:
    """The largest divisor of ``n`` that is at most ``√n`` (``1`` for a prime ``n``)."""
    a = math.isqrt(n)
    while n % a:
        a -= 1
    return a


def kronecker_orthogonal(key: Array, n: int, dtype=jnp.float32, work: Work = NO_WORK) -> Array:
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
    :func:`fast_factors`. Every column is computed on its own: ``work`` splits the columns.
    """
    a = balanced_divisor(n)
    b = n // a
    q = None
    for round_key in jax.random.split(key, KRONECKER_ROUNDS if a > 1 else 1):
        k_perm, k_a, k_b = jax.random.split(round_key, 3)
        qa, qb = haar_columns(k_a, a, a, dtype), haar_columns(k_b, b, b, dtype)
        if q is None:
            q = work.rows(jnp.kron(qa, qb), axis=1)
        else:
            q = q[jax.random.permutation(k_perm, n)]
            # (A ⊗ B) q as two plain (batched) products, A first: each reads and writes its operands
            # in their layout (one einsum of the three made XLA transpose n² twice; 37 % slower on CPU)
            t = work.rows(jnp.tensordot(qa, q.reshape(a, b, n), axes=1), axis=2)
            q = work.rows(jnp.matmul(qb, t).reshape(n, n), axis=1)
    assert q is not None  # at least one round
    return q


def exact_factors(a: Array, rank: int, blocks: int = 1) -> tuple[Array, Array]:
    """``(U_r √S_r, V_r √S_r)`` from the SVD of ``a``: their product is the best rank-``r`` approximation.

    ``blocks = g > 1``: ``a`` is the vertical stack of ``g`` targets and the factors are
    ``(U_r √S_r g^{1/4}, V_r √S_r g^{-1/4})``: a shared right factor spanning the best
    common right space, and the stack of the ``g`` least-squares left factors (module
    docstring).
    """
    u, s, vt = _svd(a)
    root = jnp.sqrt(s[:rank])
    balance = jnp.asarray(blocks**0.25, root.dtype)  # × 1 when blocks == 1
    return u[:, :rank] * (root * balance), vt[:rank].T * (root / balance)


def _numpy_target(rng: np.random.Generator, rows: int, cols: int, alpha: float, beta: float, distribution: str):
    big = max(rows, cols)
    if distribution == "normal":
        z = rng.standard_normal((rows, cols)) / math.sqrt(big)
    else:
        z = rng.uniform(-1.0, 1.0, (rows, cols)) * math.sqrt(3.0 / big)
    return alpha * z + beta * np.eye(rows, cols)


@functools.lru_cache(maxsize=256)
def spectral_template(
    rows: int, cols: int, rank: int, alpha: float, beta: float, distribution: str, blocks: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Expected top-``rank`` singular values ``s_i`` and alignments ``u_iᵀ Ẽ v_i`` of the exact recipe.

    Of the vertical stack of ``blocks`` independent ``rows × cols`` targets (one target
    when ``blocks = 1``), ``Ẽ = [E; …; E]/√blocks``. Estimated on the host from SVDs of
    reference targets (of a stack: the eigendecomposition of its Gram matrix) of the
    same aspect ratio, largest side of a block at most ``TEMPLATE_SIZE`` (the spectrum
    of ``α Z + β I`` with ``Var Z = 1/d`` does not depend on ``d`` in the large-``d``
    limit), averaged over enough samples to pool ``TEMPLATE_POOL`` values, and
    interpolated in the quantile
    ``(i + ½)/min(blocks·rows, cols)``. Deterministic (fixed NumPy seed) and cached, so
    it costs nothing under ``jit`` after the first trace.
    """
    scale = min(1.0, TEMPLATE_SIZE / max(rows, cols))
    r0, c0 = max(1, round(rows * scale)), max(1, round(cols * scale))
    m0 = min(blocks * r0, c0)
    samples = min(16, max(1, math.ceil(TEMPLATE_POOL / m0)))
    rng = np.random.default_rng(20230516)
    s_sum = np.zeros(m0)
    c_sum = np.zeros(m0)
    for _ in range(samples):
        targets = [_numpy_target(rng, r0, c0, alpha, beta, distribution) for _ in range(blocks)]
        if blocks == 1:
            u, s, vt = np.linalg.svd(targets[0], full_matrices=False)
            s_sum += s
            c_sum += np.einsum("ji,ij->i", u[:m0], vt[:, :m0])
            continue
        # A stack of g·r0 rows: its right singular vectors and values from the c0×c0 Gram matrix
        # Σ A_hᵀA_h (float64; the stack is tall, so no tiny singular values), and
        # c_i = u_iᵀẼv_i = v_iᵀ(Ẽᵀ stack)v_i / s_i with Ẽᵀ stack = Σ_h EᵀA_h / √g. A few
        # products instead of an SVD of the whole stack (template of d 4096, g 32 on 2 CPU cores: 1.6 s, not 46 s).
        w, v = np.linalg.eigh(sum(a.T @ a for a in targets))
        v = v[:, ::-1][:, :m0]
        s = np.sqrt(np.maximum(w[::-1][:m0], 0.0))
        e_stack = np.eye(c0, r0) @ sum(targets) / math.sqrt(blocks)
        s_sum += s
        c_sum += np.einsum("ji,jk,ki->i", v, e_stack, v) / s
    q0 = (np.arange(m0) + 0.5) / m0
    q = (np.arange(rank) + 0.5) / min(blocks * rows, cols)
    return np.interp(q, q0, s_sum / samples), np.clip(np.interp(q, q0, c_sum / samples), -1.0, 1.0)


def fast_regime(rows: int, cols: int, rank: int, blocks: int = 1) -> str:
    """Which construction :func:`fast_factors` uses: ``"rotation"``, ``"template"`` or ``"exact"``.

    ``blocks = 1``: rotation at full rank ``r = min(rows, cols)``, template when
    ``2r <= max(rows, cols)``, exact in between (where a template has no room and a
    random subspace keeps too little of the identity). ``blocks > 1`` (a shared
    right factor): exact when ``rows < cols``, else rotation at ``r = cols`` and
    template below. See the module docstring.
    """
    if blocks > 1:
        if rows < cols:
            return "exact"
        return "rotation" if rank == cols else "template"
    if rank == min(rows, cols):
        return "rotation"
    return "template" if 2 * rank <= max(rows, cols) else "exact"


def _tile_rows(x: Array, blocks: int) -> Array:
    """``[x; …; x]`` (``blocks`` copies stacked vertically)."""
    return x if blocks == 1 else jnp.tile(x, (blocks, 1))


def _rotation_factors(key, rows, cols, alpha, beta, dtype, blocks, work):
    # Requires rows >= cols and rank == cols: Q is a full rotation of the (smaller) column side.
    kq, kg = jax.random.split(key)
    q = kronecker_orthogonal(kq, cols, dtype, work)
    g = work.rows(noise(kg, (blocks * rows, cols), max(rows, cols), "normal", dtype))
    c = (beta**2 + alpha**2 * rows / max(rows, cols)) ** 0.25 or 1.0
    left = (jnp.asarray(beta, dtype) * _tile_rows(embed_rows(q, rows), blocks) + jnp.asarray(alpha, dtype) * g) / c
    return work.rows(left), q * jnp.asarray(c, dtype)


def _template_factors(key, rows, cols, rank, alpha, beta, distribution, dtype, blocks, work):
    # Requires rows >= cols and 2 * rank <= blocks * rows.
    s, c = spectral_template(rows, cols, rank, alpha, beta, distribution, blocks)
    kq, kp = jax.random.split(key)
    q = haar_columns(kq, cols, rank, dtype, work)
    eq = work.rows(_tile_rows(embed_rows(q, rows), blocks) * jnp.asarray(1.0 / math.sqrt(blocks), dtype))  # Ẽ Q
    x = work.rows(jax.random.normal(kp, (blocks * rows, rank), dtype))
    p = complement_basis(eq, x, work)
    root = jnp.asarray(np.sqrt(s), dtype)
    u = eq * jnp.asarray(c, dtype) + p * jnp.asarray(np.sqrt(1.0 - c**2), dtype)
    balance = jnp.asarray(blocks**0.25, dtype)  # as in exact_factors (× 1 when blocks == 1)
    return work.rows(u * (root * balance)), work.rows(q * (root / balance))


def fast_factors(
    key: Array,
    rows: int,
    cols: int,
    rank: int,
    alpha: float,
    beta: float,
    distribution: str = "normal",
    dtype=jnp.float32,
    blocks: int = 1,
    work: Work = NO_WORK,
) -> tuple[Array, Array]:
    """Factors ``(left, right)`` whose product mimics the best rank-``r`` approximation of ``αZ + βI``.

    See the module docstring for the three regimes (:func:`fast_regime`). In the
    rotation and template regimes about ``(rows + cols)·r`` random numbers, one QR
    of an ``n × r`` matrix (Cholesky QR, or Householder near the template boundary:
    :func:`complement_basis`), no ``rows × cols`` target. Random factors are
    Gaussian whatever ``distribution`` (for uniform ``Z`` they are Gaussian in the
    limit by the central limit theorem); ``distribution`` enters through the
    template. In the exact regime: the exact factors of the target drawn from
    ``key`` (``blocks > 1``: of the targets drawn from ``jax.random.split(key, blocks)``).

    ``blocks = g > 1``: ``g`` targets share the right factor, as in
    :func:`exact_factors`; ``left`` is the stack ``(g·rows, r)`` of their left factors.

    ``work`` (:class:`mimetic_jax._sharding.Work`) splits the rows of every ``n × r`` piece
    over mesh axes in the rotation and template regimes (the exact regime's SVD is not
    split); the numbers do not depend on it (:func:`gram`).
    """
    regime = fast_regime(rows, cols, rank, blocks)
    if regime == "exact":
        keys = key[None] if blocks == 1 else jax.random.split(key, blocks)
        return exact_factors(stacked_targets(keys, rows, cols, alpha, beta, distribution, dtype), rank, blocks)
    if rows < cols:  # blocks == 1 here: the regimes are symmetric
        right, left = fast_factors(key, cols, rows, rank, alpha, beta, distribution, dtype, work=work)
        return left, right
    if regime == "rotation":
        return _rotation_factors(key, rows, cols, alpha, beta, dtype, blocks, work)
    return _template_factors(key, rows, cols, rank, alpha, beta, distribution, dtype, blocks, work)
