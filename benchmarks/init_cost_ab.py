"""The ``fast`` whole-model init before and after the CPU changes of issue 17, in one process.

Issue 17 asks for ``mimetic_attention(..., method="fast")`` within 1.2× of the default
``model.init``. On a shared 2-core box the load swings between runs, so the change is
measured here as an A/B inside one process: the models of ``init_cost.py`` (ViT-B/16,
GPT-2-medium), three arms compiled with ``jax.jit`` and called in alternating rounds
(``_report.time_jit_interleaved``):

* ``default``: ``model.init``;
* ``fast (before)``: ``mimetic_attention(..., method="fast")`` with the two pieces this change
  replaced put back: Cholesky QR's triangular inverse by LAPACK ``trsm``
  (``jax.scipy.linalg.solve_triangular``, looped one matrix at a time on CPU) and the rounds
  of ``kronecker_orthogonal`` as one three-operand ``einsum`` (copies of the earlier code, below);
* ``fast (after)``: the library as it is (``lower_inverse``: matrix products; the rounds as
  ``tensordot`` + ``matmul``).

``--change cpu-batch`` (results ``init_cost_ab_cpu_batch.*``) measures a later change the same
way: ``fast (before)`` draws the layers of equal shape in batches of
``attention.FAST_GROUP_ELEMENTS`` (``2**26``) elements, as before on every backend;
``fast (after)`` in the CPU batches of ``attention.FAST_GROUP_ELEMENTS_CPU``.

``jax.clear_caches()`` runs before each arm is traced, so each executable holds its own code.
The load average is recorded with every timing (the JSON's ``machine`` and each arm).

Run: ``python benchmarks/init_cost_ab.py [--quick] [--models vit,gpt] [--rounds N] [--change trsm|cpu-batch]``.
"""

from __future__ import annotations

import contextlib

import _report
import init_cost
import jax
import jax.numpy as jnp

from mimetic_jax import _linalg, attention, mimetic_attention


@_linalg.cpu_sequential
def trsm_inverse(lower):
    """The triangular inverse before this change (LAPACK ``trsm``; on CPU SciPy's OpenBLAS)."""
    return jax.scipy.linalg.solve_triangular(lower, jnp.eye(lower.shape[0], dtype=lower.dtype), lower=True)


def einsum_kronecker(key, n, dtype=jnp.float32, work=_linalg.NO_WORK):
    """``kronecker_orthogonal`` before this change: each round one three-operand ``einsum``."""
    a = _linalg.balanced_divisor(n)
    b = n // a
    q = None
    for round_key in jax.random.split(key, _linalg.KRONECKER_ROUNDS if a > 1 else 1):
        k_perm, k_a, k_b = jax.random.split(round_key, 3)
        qa, qb = _linalg.haar_columns(k_a, a, a, dtype), _linalg.haar_columns(k_b, b, b, dtype)
        if q is None:
            q = work.rows(jnp.kron(qa, qb), axis=1)
        else:
            q = q[jax.random.permutation(k_perm, n)]
            q = work.rows(jnp.einsum("ij,kl,jlm->ikm", qa, qb, q.reshape(a, b, n)).reshape(n, n), axis=1)
    return q


class Before:
    """Swap the earlier pieces into ``_linalg`` for the duration of a trace."""

    def __enter__(self):
        self.saved = (_linalg.lower_inverse, _linalg.kronecker_orthogonal)
        _linalg.lower_inverse, _linalg.kronecker_orthogonal = trsm_inverse, einsum_kronecker
        jax.clear_caches()

    def __exit__(self, *exc):
        _linalg.lower_inverse, _linalg.kronecker_orthogonal = self.saved
        jax.clear_caches()


def as_is():
    """The library as it is, traced afresh (no cached trace of the other arm): ``fast (after)`` of every change."""
    jax.clear_caches()
    return contextlib.nullcontext()


class AcceleratorBatches:
    """Draw in batches of ``FAST_GROUP_ELEMENTS`` on CPU too (the code before ``FAST_GROUP_ELEMENTS_CPU``)."""

    def __enter__(self):
        self.saved = attention.FAST_GROUP_ELEMENTS_CPU
        attention.FAST_GROUP_ELEMENTS_CPU = attention.FAST_GROUP_ELEMENTS
        jax.clear_caches()

    def __exit__(self, *exc):
        attention.FAST_GROUP_ELEMENTS_CPU = self.saved
        jax.clear_caches()


#: ``--change``: (the context of ``fast (before)``, what the table says it is, result-file suffix).
CHANGES = {
    "trsm": (
        Before,
        "`fast (before)` puts back LAPACK `trsm` for the triangular inverse and the three-operand `einsum` "
        "in `kronecker_orthogonal`",
        "",
    ),
    "cpu-batch": (
        AcceleratorBatches,
        "`fast (before)` draws the layers in batches of `FAST_GROUP_ELEMENTS` (2**26 elements: all layers of "
        "these models at once) as before on every backend; `fast (after)` in batches of "
        "`FAST_GROUP_ELEMENTS_CPU` (2**21: one layer)",
        "cpu_batch",
    ),
}


def main() -> None:
    def extra(p):
        p.add_argument("--models", default="vit,gpt", help="comma-separated subset: vit,gpt")
        p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: init_cost's repeats)")
        p.add_argument("--change", choices=sorted(CHANGES), default="trsm", help="which change to measure")

    args = _report.parse_args(__doc__.splitlines()[0], extra)
    before, described, suffix = CHANGES[args.change]
    if suffix and not args.tag:
        args.tag = suffix
    run = _report.Run("init_cost_ab", "Init cost of fast before/after issue 17's CPU changes (one process)", args)
    results: list[dict] = []
    run.data["models"] = results
    run.data["timings"] = {}
    wanted = args.models.split(",")
    cases = [c for c, tag in zip(init_cost.cases(args.quick), ("vit", "gpt")) if tag in wanted]
    key = jax.random.key(0)
    for case in cases:
        model, x, heads = case.model, case.x, case.num_heads

        def default(k, model=model, x=x):
            return model.init(k, x)

        def fast(k, model=model, x=x, heads=heads):
            return mimetic_attention(model.init(k, x), jax.random.fold_in(k, 1), method="fast", num_heads=heads)

        rounds = args.rounds or case.repeats
        run.stage(f"{case.name}: default, fast (before), fast (after), {rounds} interleaved rounds")
        timings = _report.time_jit_interleaved(
            {"default": default, "fast (before)": fast, "fast (after)": fast},
            key,
            repeats=rounds,
            trace_in={"fast (before)": before, "fast (after)": as_is},
        )
        res = {"model": case.name, "params": sum(v.size for v in jax.tree.leaves(jax.eval_shape(default, key)))}
        for arm, t in timings.items():
            res[f"{arm} median_s"] = t["median_s"]
        run.data["timings"][case.name] = timings  # per arm: trace, compile, every call (a table per model)
        for arm in ("fast (before)", "fast (after)"):
            res[f"ratio {arm}"] = timings[arm]["median_s"] / timings["default"]["median_s"]
            res[f"cpu ratio {arm}"] = timings[arm]["median_cpu_s"] / timings["default"]["median_cpu_s"]
        _report.log(
            f"  ratios: before {res['ratio fast (before)']:.3f}, after {res['ratio fast (after)']:.3f} "
            f"(CPU time: {res['cpu ratio fast (before)']:.3f}, {res['cpu ratio fast (after)']:.3f})"
        )
        results.append(res)
    rows = [
        [
            r["model"],
            arm,
            _report.fmt_s(r[f"{arm} median_s"]),
            "1" if arm == "default" else f"{r[f'ratio {arm}']:.2f}",
            "1" if arm == "default" else f"{r[f'cpu ratio {arm}']:.2f}",
            str(run.data["timings"][r["model"]][arm]["load_average_before"]),
        ]
        for r in results
        for arm in ("default", "fast (before)", "fast (after)")
    ]
    body = (
        "Steady state: median over interleaved rounds of the three compiled functions (one process). "
        f"{described}; `fast (after)` is the library as it is. Ratios against the default "
        "`model.init` (wall and process CPU time).\n\n"
        + _report.md_table(["model", "arm", "steady (median)", "ratio", "CPU-time ratio", "load before"], rows)
    )
    run.finish(body)


if __name__ == "__main__":
    main()
