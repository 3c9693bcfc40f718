"""Fuzz every public callable of mimetic_jax with bad and valid input (issue 16's acceptance check).

Calls each public callable of ``mimetic_jax.__all__``, ``mimetic_jax.fuse`` and
``mimetic_jax.nn`` with about 2,400 inputs: wrong ranks, sizes, dtypes (int, bool,
complex, bf16, fp16), keys (``None``, ``0``, ``int32[2]``, ``uint32[4]``, batches, typed
and raw keys), options out of range, NaN/inf arrays, unmatched trees, huge sizes and half
precision, and classifies each outcome:

* ``ok``: valid input, finite result (and the result's check, where a case has one, holds);
* ``clear``: a ``ValueError``/``TypeError`` raised inside mimetic_jax whose message names the argument
  (or, in the two cases marked ``passthrough``, an error that is not ours by design and passes
  through unchanged: the user's own ``displacement`` callable raising, its exception carrying a
  note that names the argument; Flax's own module rejecting its own configuration);
* ``unclear``: any other exception, or one that does not name the argument or comes from JAX/Python;
* ``crash``: the worker process died (abort, out of memory), an XLA runtime error, or a hang (timeout);
* ``nan``: a silent NaN/inf in the result;
* ``wrong``: bad input accepted with a finite result, or a valid result failing its check;
* ``rejected``: valid input that raised.

Cases run in a worker process with an address-space limit (``--memory-gib``, default 8)
and a per-case timeout: a case that kills the worker is a ``crash`` and the next worker
resumes after it, so huge sizes are never allowed to allocate more than the limit.

    python benchmarks/fuzz_public_api.py            # writes benchmarks/results/fuzz_public_api.{json,md}
    python benchmarks/fuzz_public_api.py --list     # the cases, without running them
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import select
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUTCOMES = ("ok", "clear", "unclear", "crash", "nan", "wrong", "rejected")
HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class Case:
    func: str  # the public callable under test
    label: str  # what the input is
    thunk: Callable[[], Any]
    expect: str  # "valid", "bad" or "either" (either is fine; no crash, NaN or unclear error)
    names: tuple[str, ...] = ()  # a clear error names one of these
    nonfinite_ok: bool = False  # the result may hold inf/NaN by contract
    check: Callable[[Any], str | None] | None = None  # for valid results: None or what is wrong
    # An error that is not ours by design and passes through unchanged: "user" (the user's own
    # callable raised; its exception propagates, with a PEP 678 note naming the argument) or
    # "flax" (Flax's own module rejects its own configuration, as plain Flax does). Such an error
    # is clear when it comes from there and names the argument (its message or its note).
    passthrough: str | None = None


# --------------------------------------------------------------------------- the cases


def build_cases() -> list[Case]:  # one flat list of cases, grouped by module
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import mimetic_jax as mj
    import mimetic_jax.nn as mjnn
    from mimetic_jax.experiments.models import ConvMixer, MambaLM, ViT
    from mimetic_jax.fuse import Moments, Pool

    K = jax.random.key(0)
    NAN, INF = float("nan"), float("inf")
    LECUN = jax.nn.initializers.lecun_normal()
    cases: list[Case] = []

    def add(func, label, thunk, expect, names=(), **kw):
        cases.append(Case(func, label, thunk, expect, tuple([names] if isinstance(names, str) else names), **kw))

    BAD_KEYS = {
        "None": None,
        "int 0": 0,
        "str": "key",
        "int32[2]": np.zeros(2, np.int32),
        "uint32[4]": np.zeros(4, np.uint32),
        "uint32[2,2]": np.zeros((2, 2), np.uint32),
        "float32[2]": np.zeros(2, np.float32),
        "key batch": jax.random.split(K, 3),
    }
    GOOD_KEYS = {
        "typed key": K,
        "raw PRNGKey": jax.random.PRNGKey(0),
        "numpy raw key": np.asarray(jax.random.PRNGKey(1)),
    }

    def keys(func, call):
        for label, k in BAD_KEYS.items():
            add(func, f"key={label}", lambda k=k: call(k), "bad", "key")
        for label, k in GOOD_KEYS.items():
            add(func, f"key={label}", lambda k=k: call(k), "valid")

    BAD_SIZES = {
        "0": 0,
        "-1": -1,
        "True": True,
        "2.5": 2.5,
        "'4'": "4",
        "2**31": 2**31,
        "10**12": 10**12,
    }

    def sizes(func, arg, call, extra=(), none_ok=False):
        for label, v in BAD_SIZES.items():
            add(func, f"{arg}={label}", lambda v=v: call(v), "bad", arg)
        add(func, f"{arg}=None", lambda: call(None), "either" if none_ok else "bad", arg)
        add(func, f"{arg}=np.int64(2)", lambda: call(np.int64(2)), "either", arg)
        for label, v, exp in extra:
            add(func, f"{arg}={label}", lambda v=v: call(v), exp, arg)

    BAD_REALS = {"nan": NAN, "inf": INF, "-inf": -INF, "'0.5'": "0.5", "None": None, "[1.0]": [1.0]}

    def reals(func, arg, call, bad=(), either=(), valid=(), names=None, none_ok=False, array_ok=False):
        """``array_ok``: the argument is documented to take an array as well (``min_retention``'s
        ``delta``), so the list ``[1.0]`` is valid input there, not a bad real."""
        names = names or arg
        for label, v in BAD_REALS.items():
            if label == "None" and none_ok:
                add(func, f"{arg}=None", lambda v=v: call(v), "either", names)
                continue
            if label == "[1.0]" and array_ok:
                add(func, f"{arg}=[1.0]", lambda v=v: call(v), "valid", names)
                continue
            add(func, f"{arg}={label}", lambda v=v: call(v), "bad", names)
        for v in bad:
            add(func, f"{arg}={v!r}", lambda v=v: call(v), "bad", names)
        for v in either:
            add(func, f"{arg}={v!r}", lambda v=v: call(v), "either", names)
        for v in valid:
            add(func, f"{arg}={v!r}", lambda v=v: call(v), "valid", names)

    BAD_DTYPES = {
        "int32": jnp.int32,
        "bool": jnp.bool_,
        "complex64": jnp.complex64,
        "'float'": "flaot",
    }
    HALF = {"bfloat16": jnp.bfloat16, "float16": jnp.float16, "float32": jnp.float32}

    def dtypes(func, call, arg="dtype", check=None):
        for label, d in BAD_DTYPES.items():
            add(func, f"{arg}={label}", lambda d=d: call(d), "bad", arg)
        for label, d in HALF.items():
            add(func, f"{arg}={label}", lambda d=d: call(d), "valid", check=check(d) if check else None)

    def out_dtype(want):
        def check(out):
            leaves = [x for x in jax.tree.leaves(out) if hasattr(x, "dtype")]
            got = {str(x.dtype) for x in leaves}
            return None if got == {str(jnp.dtype(want))} else f"dtypes {got}, expected {jnp.dtype(want)}"

        return check

    RELATED = {
        **dict.fromkeys(
            ("dense_dense", "fusion_mse", "dense_dense_from_data"), ("w1", "b1", "w2", "b2", "mean", "cov", "x")
        ),
        "relu_moments": ("mean", "cov"),
        **dict.fromkeys(("conv_conv", "conv_conv_from_data"), ("k1", "b1", "k2", "b2", "x", "input_size")),
        **dict.fromkeys(("conv_dense", "conv_dense_from_data"), ("k1", "b1", "w2", "b2", "x", "input_shape")),
        "fold_batchnorm": ("kernel", "bias", "mean", "var", "scale", "offset"),
        "emergence_measure": ("activations", "adjacency"),
        "fuse_params": ("inputs", "x", "w1"),
        "Moments": ("z", "dim"),
    }

    def arrays(
        func,
        arg,
        base,
        call,
        names=None,
        rank=True,
        empty="either",
        half="either",
        ints="bad",
        lists="either",
        related=(),
        grow="bad",
        none="bad",
        shrink="bad",
    ):
        """Mutations of one array argument; ``base`` is a valid NumPy array.

        A shape that no longer matches another argument may be reported under that argument's
        name (``related``): ``w2 must have shape (24, d_out)`` for a changed ``k1`` is clear.
        """
        names = names or arg
        related = tuple(related) or RELATED.get(func, ())
        shaped = tuple([names] if isinstance(names, str) else names) + related
        base = np.asarray(base)
        for bad, label, numpy in ((NAN, "NaN", False), (INF, "inf", True), (-INF, "-inf", False)):
            if base.size:
                a = base.astype(np.float32).copy()
                a.flat[a.size // 2] = bad
                if numpy:
                    add(func, f"{arg} with {label} (numpy)", lambda a=a: call(a), "bad", names)
                else:
                    add(func, f"{arg} with {label}", lambda a=a: call(jnp.asarray(a)), "bad", names)
        if rank:
            add(func, f"{arg} rank+1", lambda: call(jnp.asarray(base)[None]), "bad", shaped)
            if base.ndim:
                add(
                    func,
                    f"{arg} rank-1",
                    lambda: call(jnp.asarray(base)[0]),
                    shrink if base.ndim > 1 else "either",
                    shaped,
                )
                grown = np.concatenate([base, base[:1]], axis=0) if base.shape[0] else base
                add(func, f"{arg} axis 0 + 1", lambda g=grown: call(jnp.asarray(g)), grow, shaped)
        add(func, f"{arg} int32", lambda: call(jnp.asarray(base).astype(jnp.int32)), ints, names)
        add(func, f"{arg} bool", lambda: call(jnp.asarray(base).astype(bool)), ints, names)
        add(func, f"{arg} complex64", lambda: call(jnp.asarray(base).astype(jnp.complex64)), "bad", names)
        add(func, f"{arg} None", lambda: call(None), none, names)
        for label, d in (("bfloat16", jnp.bfloat16), ("float16", jnp.float16)):
            add(func, f"{arg} {label}", lambda d=d: call(jnp.asarray(base).astype(d)), half, names)
        add(func, f"{arg} as list", lambda: call(base.tolist()), lists, names)
        if base.ndim:
            add(func, f"{arg} empty axis 0", lambda: call(jnp.asarray(base)[:0]), empty, shaped)
        add(
            func,
            f"{arg} huge values 1e30",
            lambda: call(jnp.asarray(np.full(base.shape, 1e30, np.float32))),
            "either",
            names,
        )

    def finite_dtype_check(want):
        return out_dtype(want)

    # ------------------------------------------------------------------ attention samplers
    def qk(key=K, d_in=8, num_heads=2, head_dim=4, **kw):
        return mj.query_key(key, d_in, num_heads, head_dim, **kw)

    def vo(key=K, d_in=8, num_heads=2, head_dim=4, **kw):
        return mj.value_output(key, d_in, num_heads, head_dim, **kw)

    for name, fn, other in (("query_key", qk, "d_kv"), ("value_output", vo, "d_out")):
        add(name, "valid", lambda fn=fn: fn(), "valid")
        add(name, "valid fast", lambda fn=fn: fn(method="fast"), "valid")
        add(name, "valid uniform", lambda fn=fn: fn(distribution="uniform"), "valid")
        add(name, "valid gqa", lambda fn=fn: fn(num_kv_heads=1), "valid")
        add(name, f"valid {other}=12", lambda fn=fn, o=other: fn(**{o: 12}), "valid")
        keys(name, lambda k, fn=fn: fn(key=k))
        for arg in ("d_in", "num_heads", "head_dim", "num_kv_heads", other):
            sizes(name, arg, lambda v, fn=fn, arg=arg: fn(**{arg: v}), none_ok=arg in ("num_kv_heads", other))
        add(name, "head_dim > d_in", lambda fn=fn: fn(d_in=4, head_dim=8), "bad", "head_dim")
        add(
            name,
            "num_heads not a multiple of num_kv_heads",
            lambda fn=fn: fn(num_heads=3, num_kv_heads=2),
            "bad",
            "num_kv_heads",
        )
        add(
            name,
            "d_in×heads×head_dim huge",
            lambda fn=fn: fn(d_in=2**20, num_heads=2**14, head_dim=2**10),
            "bad",
            ("d_in", "elements"),
        )
        add(
            name,
            "d_in=2**31-1 (allocates d×d)",
            lambda fn=fn: fn(d_in=2**31 - 1, head_dim=1),
            "bad",
            ("d_in", "elements"),
        )
        for arg in ("alpha", "beta"):
            reals(name, arg, lambda v, fn=fn, arg=arg: fn(**{arg: v}), either=(0.0, -1.0, 1e-300), bad=(1e300, 1e39))
            for m in ("exact", "fast"):
                add(
                    name,
                    f"{arg}=1e12 float16 {m}",
                    lambda fn=fn, arg=arg, m=m: fn(**{arg: 1e12}, dtype=jnp.float16, method=m),
                    "bad",
                    (arg, "float16"),
                )
                add(
                    name,
                    f"{arg}=1e8 float16 {m}",
                    lambda fn=fn, arg=arg, m=m: fn(**{arg: 1e8}, dtype=jnp.float16, method=m),
                    "either",
                    (arg, "float16"),
                )
                add(
                    name,
                    f"{arg}=1e30 float32 {m}",
                    lambda fn=fn, arg=arg, m=m: fn(**{arg: 1e30}, method=m),
                    "either",
                    (arg, "float32"),
                )
                add(
                    name,
                    f"{arg}=1e30 bfloat16 {m}",
                    lambda fn=fn, arg=arg, m=m: fn(**{arg: 1e30}, dtype=jnp.bfloat16, method=m),
                    "either",
                    (arg, "bfloat16"),
                )
        add(name, "distribution='gauss'", lambda fn=fn: fn(distribution="gauss"), "bad", "distribution")
        add(name, "method='svd'", lambda fn=fn: fn(method="svd"), "bad", "method")
        add(name, "method=None", lambda fn=fn: fn(method=None), "bad", "method")
        dtypes(name, lambda d, fn=fn: fn(dtype=d), check=out_dtype)
    add("value_output", "sign=0", lambda: vo(sign=0), "bad", "sign")
    add("value_output", "sign=2", lambda: vo(sign=2), "bad", "sign")
    add("value_output", "sign=1.0", lambda: vo(sign=1.0), "either", "sign")
    add("value_output", "sign='-'", lambda: vo(sign="-"), "bad", "sign")
    add("value_output", "rotate_heads='yes'", lambda: vo(rotate_heads="yes"), "bad", "rotate_heads")
    add("value_output", "rotate_heads=True", lambda: vo(rotate_heads=True), "valid")

    def qkv(num_heads=2, head_dim=4, key=K, shape=(8, 24), dtype=jnp.float32, **kw):
        return mj.qkv_init(num_heads, head_dim, **kw)(key, shape, dtype)

    add("qkv_init", "valid flat", lambda: qkv(), "valid")
    add("qkv_init", "valid (d,3,H,k)", lambda: qkv(shape=(8, 3, 2, 4)), "valid")
    add("qkv_init", "valid gqa", lambda: qkv(num_kv_heads=1, shape=(8, 16)), "valid")
    keys("qkv_init", lambda k: qkv(key=k))
    for arg in ("num_heads", "head_dim"):
        sizes("qkv_init", arg, lambda v, arg=arg: qkv(**{arg: v}))
    sizes("qkv_init", "num_kv_heads", lambda v: qkv(num_kv_heads=v), none_ok=True)
    for arg in ("alpha", "beta", "value_alpha", "value_beta"):
        reals("qkv_init", arg, lambda v, arg=arg: qkv(**{arg: v}), either=(0.0, -2.0))
        add(
            "qkv_init",
            f"{arg}=1e12 float16",
            lambda arg=arg: qkv(**{arg: 1e12}, dtype=jnp.float16),
            "bad",
            (arg, "float16"),
        )
        add("qkv_init", f"{arg}=1e12 bfloat16", lambda arg=arg: qkv(**{arg: 1e12}, dtype=jnp.bfloat16), "either", arg)
    for label, shp in (
        ("rank 3", (8, 3, 8)),
        ("wrong width", (8, 23)),
        ("(d,3,H,k) wrong heads", (8, 3, 3, 4)),
        ("zero d", (0, 24)),
        ("negative", (8, -24)),
        ("huge d", (2**40, 24)),
        ("int", 24),
        ("None", None),
        ("floats", (8.0, 24.0)),
    ):
        add("qkv_init", f"shape {label}", lambda s=shp: qkv(shape=s), "bad", "shape")
    dtypes("qkv_init", lambda d: qkv(dtype=d), check=out_dtype)
    add("qkv_init", "dtype None (float32)", lambda: qkv(dtype=None), "valid")
    add("qkv_init", "sign=0", lambda: qkv(sign=0), "bad", "sign")
    add("qkv_init", "rotate_heads=1", lambda: qkv(rotate_heads=1), "bad", "rotate_heads")
    add("qkv_init", "distribution=None", lambda: qkv(distribution=None), "bad", "distribution")

    for name, fn in (("sincos_1d", mj.sincos_1d), ("sincos_2d", mj.sincos_2d)):
        shape = (16, 8) if name == "sincos_1d" else (1, 16, 8)
        add(name, "valid", lambda fn=fn, s=shape: fn()(None, s), "valid")
        reals(
            name,
            "temperature",
            lambda v, fn=fn, s=shape: fn(temperature=v)(None, s),
            bad=(0.0, -1.0, 1e300, 1e-320),
            either=(1e-30, 1e30, 1.0),
        )
        for label, shp in (
            ("odd width", (16, 7) if name == "sincos_1d" else (1, 16, 6)),
            ("rank 1", (16,)),
            ("rank 5", (1, 1, 1, 16, 8)),
            ("zero", (0, 8)),
            ("huge", (2**33, 2**4)),
            ("None", None),
        ):
            add(name, f"shape {label}", lambda fn=fn, s=shp: fn()(None, s), "bad", "shape")
        dtypes(name, lambda d, fn=fn, s=shape: fn()(None, s, d), check=out_dtype)
    add("sincos_2d", "grid=(4,4)", lambda: mj.sincos_2d((4, 4))(None, (1, 16, 8)), "valid")
    add(
        "sincos_2d",
        "grid not matching tokens",
        lambda: mj.sincos_2d((4, 5))(None, (1, 16, 8)),
        "bad",
        ("grid", "shape"),
    )
    add("sincos_2d", "grid=(0,4)", lambda: mj.sincos_2d((0, 4)), "bad", "grid")
    add("sincos_2d", "grid=(2**40,1)", lambda: mj.sincos_2d((2**40, 1)), "bad", "grid")
    add("sincos_2d", "grid=4", lambda: mj.sincos_2d(4), "bad", "grid")
    add("sincos_2d", "grid=(4,)", lambda: mj.sincos_2d((4,)), "bad", "grid")
    add("sincos_2d", "grid=('a','b')", lambda: mj.sincos_2d(("a", "b")), "bad", "grid")

    # ------------------------------------------------------------------ attention transforms
    def mha(dtype=jnp.float32, heads=2, width=16):
        p = nn.MultiHeadDotProductAttention(num_heads=heads).init(K, jnp.ones((1, 4, width)))
        return jax.tree.map(lambda x: x.astype(dtype), p)

    MHA = mha()
    FLAT = {"attn": {n: {"kernel": jnp.ones((16, 16)) * 0.1} for n in ("q_proj", "k_proj", "v_proj", "o_proj")}}
    VIT = ViT(num_classes=3, width=16, depth=2, num_heads=2).init(K, jnp.zeros((1, 4, 4, 3)))

    def same_structure(tree):
        def check(out):
            a, b = jax.tree.structure(out), jax.tree.structure(tree)
            if a != b:
                return "tree structure changed"
            for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(tree)):
                if getattr(x, "shape", None) != getattr(y, "shape", None) or getattr(x, "dtype", None) != getattr(
                    y, "dtype", None
                ):
                    return f"leaf changed shape/dtype: {getattr(y, 'shape', None)} {getattr(y, 'dtype', None)} -> {getattr(x, 'shape', None)} {getattr(x, 'dtype', None)}"
            return None

        return check

    def transform_common(name, call, tree, opts_ok, key=True):
        """Common bad trees for a whole-model transform ``call(tree, key, **opts)``."""
        add(name, "valid", lambda: call(tree, K), "valid", check=same_structure(tree))
        for d in (jnp.bfloat16, jnp.float16):
            t = jax.tree.map(lambda x, d=d: x.astype(d) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
            add(name, f"valid {jnp.dtype(d)} tree", lambda t=t: call(t, K), "valid", check=same_structure(t))
        ti = jax.tree.map(lambda x: x.astype(jnp.int32), tree)
        add(name, "int32 kernels", lambda: call(ti, K), "bad", ("kernel", "dtype", "tree"))
        tb = jax.tree.map(lambda x: x.astype(bool), tree)
        add(name, "bool kernels", lambda: call(tb, K), "bad", ("kernel", "dtype", "tree"))
        tc = jax.tree.map(lambda x: x.astype(jnp.complex64), tree)
        add(name, "complex kernels", lambda: call(tc, K), "bad", ("kernel", "dtype", "tree"))
        if key:
            keys(name, lambda k: call(tree, k))
        for label, bad in (
            ("None", None),
            ("int", 3),
            ("str", "params"),
            ("list of arrays", [jnp.ones(3)]),
            ("empty dict", {}),
        ):
            add(name, f"tree={label}", lambda bad=bad: call(bad, K), "either", ("tree", "found no", "no "))
        for arg, vals in opts_ok.items():
            for v, exp in vals:
                add(name, f"{arg}={v!r}", lambda arg=arg, v=v: call(tree, K, **{arg: v}), exp, arg)
        for arg in ("include", "exclude"):
            add(name, f"{arg}='['", lambda arg=arg: call(tree, K, **{arg: "["}), "bad", arg)
            add(name, f"{arg}=3", lambda arg=arg: call(tree, K, **{arg: 3}), "bad", arg)
        add(name, "stacked_axes=-1", lambda: call(tree, K, stacked_axes=-1), "bad", "stacked_axes")
        add(name, "stacked_axes=1.5", lambda: call(tree, K, stacked_axes=1.5), "bad", "stacked_axes")
        add(name, "stacked_axes=5", lambda: call(tree, K, stacked_axes=5), "either", "stacked_axes")
        add(name, "unknown option", lambda: call(tree, K, nonsense=1), "bad", "nonsense")

    def attn_call(tree, key, **kw):
        return mj.mimetic_attention(tree, key, **kw)

    att_opts = {
        a: [(NAN, "bad"), (INF, "bad"), ("x", "bad"), (None, "bad"), (0.0, "either"), (1e12, "either")]
        for a in ("alpha", "beta", "value_alpha", "value_beta")
    }
    att_opts.update(
        sign=[(0, "bad"), (2, "bad"), ("-", "bad"), (1, "valid")],
        distribution=[("gauss", "bad"), (None, "bad"), ("uniform", "valid")],
        method=[("svd", "bad"), ("fast", "valid")],
        rotate_heads=[("y", "bad"), (True, "valid")],
        query_key=[("y", "either"), (False, "valid")],
        value_output=[(None, "either"), (False, "valid")],
        num_heads=[(0, "bad"), (-2, "bad"), (3, "bad"), (2.0, "bad"), (10**12, "bad"), (2, "valid")],
        num_kv_heads=[(0, "bad"), (3, "bad"), (1, "either")],
        layouts=[(mj.FLAX, "either"), ([], "bad"), (["FLAX"], "bad"), (None, "bad"), ([3], "bad")],
        config=[
            (3, "bad"),
            ({"hidden_size": 16}, "bad"),
            ({"num_attention_heads": 0}, "bad"),
            ({"num_attention_heads": 2}, "valid"),
        ],
        allow_empty=[("no", "either"), (True, "valid")],
    )
    transform_common("mimetic_attention", attn_call, MHA, att_opts)
    add(
        "mimetic_attention",
        "flat q/k/v/o with num_heads=0",
        lambda: mj.mimetic_attention(FLAT, K, num_heads=0),
        "bad",
        "num_heads",
    )
    add(
        "mimetic_attention",
        "flat q/k/v/o with num_heads=3",
        lambda: mj.mimetic_attention(FLAT, K, num_heads=3),
        "bad",
        "num_heads",
    )
    add(
        "mimetic_attention",
        "flat q/k/v/o with num_heads=4",
        lambda: mj.mimetic_attention(FLAT, K, num_heads=4),
        "valid",
    )
    add(
        "mimetic_attention", "flat q/k/v/o without num_heads", lambda: mj.mimetic_attention(FLAT, K), "bad", "num_heads"
    )
    bad_shapes = {"attn": {**FLAT["attn"], "k_proj": {"kernel": jnp.ones((16, 12))}}}
    add(
        "mimetic_attention",
        "unmatched kernel shapes",
        lambda: mj.mimetic_attention(bad_shapes, K, num_heads=4),
        "bad",
        ("k_proj", "shape", "kernel"),
    )
    missing = {"attn": {n: v for n, v in FLAT["attn"].items() if n != "v_proj"}}
    add(
        "mimetic_attention",
        "missing v_proj",
        lambda: mj.mimetic_attention(missing, K, num_heads=4),
        "bad",
        ("found no", "no attention", "v_proj"),
    )
    nan_tree = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(NAN), MHA)
    add(
        "mimetic_attention",
        "NaN in kernels (replaced)",
        lambda: mj.mimetic_attention(nan_tree, K),
        "either",
        "kernel",
        nonfinite_ok=True,
    )
    add("mimetic_attention", "ViT variables", lambda: mj.mimetic_attention(VIT, K), "valid", check=same_structure(VIT))
    add("mimetic_attention", "under jit", lambda: jax.jit(lambda t, k: mj.mimetic_attention(t, k))(MHA, K), "valid")
    add(
        "mimetic_attention",
        "vmapped keys",
        lambda: jax.vmap(lambda k: mj.mimetic_attention(MHA, k))(jax.random.split(K, 2)),
        "valid",
    )

    add("find_attention_blocks", "valid", lambda: mj.find_attention_blocks(MHA), "valid")
    for label, bad in (("None", None), ("int", 3), ("empty", {})):
        add("find_attention_blocks", f"tree={label}", lambda bad=bad: mj.find_attention_blocks(bad), "either", "tree")
    for arg, v in (
        ("include", "["),
        ("exclude", 3),
        ("num_heads", 0),
        ("num_kv_heads", -1),
        ("stacked_axes", -1),
        ("layouts", mj.HF),
        ("layouts", None),
        ("layouts", [1]),
        ("config", "cfg"),
    ):
        add(
            "find_attention_blocks",
            f"{arg}={v!r}",
            lambda arg=arg, v=v: mj.find_attention_blocks(MHA, **{arg: v}),
            "bad" if arg != "layouts" or v != mj.HF else "either",
            arg,
        )
    add(
        "find_attention_blocks",
        "flat num_heads=0",
        lambda: mj.find_attention_blocks(FLAT, num_heads=0),
        "bad",
        "num_heads",
    )
    add("heads_from_config", "valid dict", lambda: mj.heads_from_config({"num_attention_heads": 4}), "valid")
    add(
        "heads_from_config",
        "object",
        lambda: mj.heads_from_config(type("C", (), {"num_attention_heads": 4})()),
        "valid",
    )
    for label, cfg in (
        ("None", None),
        ("int", 3),
        ("heads=0", {"num_attention_heads": 0}),
        ("heads='4'", {"num_attention_heads": "4"}),
        ("heads=-1", {"num_heads": -1}),
        ("kv=0", {"num_attention_heads": 4, "num_key_value_heads": 0}),
        ("heads=True", {"num_attention_heads": True}),
    ):
        add(
            "heads_from_config",
            f"config {label}",
            lambda cfg=cfg: mj.heads_from_config(cfg),
            "either",
            ("config", "heads"),
        )
    for label, kw, exp in (
        ("valid", dict(out="o", qkv="qkv"), "valid"),
        ("out=3", dict(out=3, qkv="qkv"), "bad"),
        ("no qkv", dict(out="o"), "bad"),
        ("both", dict(out="o", qkv="qkv", query="q", key="k", value="v"), "bad"),
        ("packing", dict(out="o", qkv="qkv", packing="x"), "bad"),
        ("transposed", dict(out="o", qkv="qkv", transposed=1), "bad"),
        ("kernel=None", dict(out="o", qkv="qkv", kernel=None), "bad"),
        ("empty out", dict(out="", qkv="qkv"), "bad"),
        ("query only", dict(out="o", query="q"), "bad"),
    ):
        add(
            "AttentionLayout",
            label,
            lambda kw=kw: mj.AttentionLayout(**kw),
            exp,
            ("out", "qkv", "query", "key", "value", "packing", "transposed", "kernel"),
        )

    # nn modules
    def linen_mha(**kw):
        return mjnn.MultiHeadDotProductAttention(num_heads=2, **kw).init(K, jnp.ones((1, 4, 16)))

    add("nn.MultiHeadDotProductAttention", "valid", lambda: linen_mha(), "valid")
    add(
        "nn.MultiHeadDotProductAttention",
        "param_dtype bfloat16",
        lambda: linen_mha(param_dtype=jnp.bfloat16),
        "valid",
        check=out_dtype(jnp.bfloat16),
    )
    add("nn.MultiHeadDotProductAttention", "param_dtype float16", lambda: linen_mha(param_dtype=jnp.float16), "valid")
    for arg, v in (
        ("alpha", NAN),
        ("beta", INF),
        ("value_alpha", "x"),
        ("value_beta", None),
        ("sign", 0),
        ("method", "svd"),
        ("rotate_heads", "y"),
    ):
        add("nn.MultiHeadDotProductAttention", f"{arg}={v!r}", lambda arg=arg, v=v: linen_mha(**{arg: v}), "bad", arg)
    add(
        "nn.MultiHeadDotProductAttention",
        "alpha=1e12 float16",
        lambda: linen_mha(alpha=1e12, param_dtype=jnp.float16),
        "bad",
        ("alpha", "float16"),
    )
    add(
        "nn.MultiHeadDotProductAttention",
        "num_heads=3 for width 16",
        lambda: mjnn.MultiHeadDotProductAttention(num_heads=3).init(K, jnp.ones((1, 4, 16))),
        "bad",
        ("num_heads", "divisible", "features"),
        # Flax's own module (our drop-in's base class) rejects its own configuration before our
        # code runs, with the AssertionError plain nn.MultiHeadDotProductAttention gives: not our input.
        passthrough="flax",
    )

    def nnx_mha(**kw):
        return mjnn.MultiHeadAttention(num_heads=2, in_features=16, decode=False, rngs=nnx.Rngs(0), **kw)

    add("nn.MultiHeadAttention", "valid", lambda: nnx.state(nnx_mha()), "valid")
    for arg, v in (
        ("alpha", NAN),
        ("beta", INF),
        ("value_alpha", "x"),
        ("sign", 2),
        ("method", None),
        ("rotate_heads", "y"),
    ):
        add("nn.MultiHeadAttention", f"{arg}={v!r}", lambda arg=arg, v=v: nnx_mha(**{arg: v}), "bad", arg)
    add("nn.MultiHeadAttention", "param_dtype float16", lambda: nnx.state(nnx_mha(param_dtype=jnp.float16)), "valid")
    add(
        "nn.MultiHeadAttention",
        "alpha=1e12 float16",
        lambda: nnx_mha(alpha=1e12, param_dtype=jnp.float16),
        "bad",
        ("alpha", "float16"),
    )

    # ------------------------------------------------------------------ conv
    cfc = mj.conv_filter_covariance
    add("conv_filter_covariance", "valid", lambda: cfc(3, 1.0), "valid")
    add("conv_filter_covariance", "valid (2,3)", lambda: cfc((2, 3), 1.0), "valid")
    sizes("conv_filter_covariance", "kernel_size", lambda v: cfc(v, 1.0))
    for label, v in (
        ("(3,0)", (3, 0)),
        ("(3,3,3)", (3, 3, 3)),
        ("()", ()),
        ("(2**17,2**17)", (2**17, 2**17)),
        ("(3.0,3)", (3.0, 3)),
    ):
        add("conv_filter_covariance", f"kernel_size={label}", lambda v=v: cfc(v, 1.0), "bad", "kernel_size")
    reals(
        "conv_filter_covariance",
        "sigma",
        lambda v: cfc(3, v),
        bad=(0.0, -1.0, 1e200, 1e-200),
        either=(1e-3, 1e3, 1e100),
    )
    reals(
        "conv_filter_covariance",
        "scale",
        lambda v: cfc(3, 1.0, scale=v),
        bad=(1e200, 1e-200),
        either=(0.0, -1.0, 1e-3, 1e3),
    )
    add("conv_filter_covariance", "displacement=3", lambda: cfc(3, 1.0, displacement=3), "bad", "displacement")
    add(
        "conv_filter_covariance",
        "displacement returns NaN",
        lambda: cfc(3, 1.0, displacement=lambda d, s: jnp.full(d.shape[:-1] if d.ndim > 2 else d.shape, NAN)),
        "bad",
        "displacement",
    )
    add(
        "conv_filter_covariance",
        "displacement not PSD",
        lambda: cfc(3, 1.0, displacement=lambda *a: -jnp.eye(9)),
        "bad",
        "displacement",
    )
    add(
        "conv_filter_covariance",
        "displacement raises",
        lambda: cfc(3, 1.0, displacement=lambda *a: 1 / 0),
        "either",
        "displacement",
        passthrough="user",  # the user's ZeroDivisionError, unchanged, with a note naming displacement
    )

    COV = np.asarray(cfc(3, 1.0))
    COV5 = np.asarray(cfc(5, 1.0))

    def dwi(layer=0, num_layers=2, key=K, shape=(3, 3, 1, 4), dtype=jnp.float32, **kw):
        kw = {"sigma_start": 1.0, "sigma_end": 1.0, **kw}
        return mj.depthwise_conv_init(layer, num_layers, **kw)(key, shape, dtype)

    add("depthwise_conv_init", "valid", lambda: dwi(), "valid")
    add("depthwise_conv_init", "valid covariance", lambda: dwi(covariance=COV), "valid")
    add(
        "depthwise_conv_init",
        "valid 1-D (5,1,3)",
        lambda: dwi(shape=(5, 1, 3), covariance=np.asarray(cfc(5, 1.0))[:5, :5] if False else None),
        "valid",
    )
    keys("depthwise_conv_init", lambda k: dwi(key=k))
    sizes("depthwise_conv_init", "num_layers", lambda v: dwi(num_layers=v))
    for v, exp in ((-1, "bad"), (2, "bad"), (1.0, "bad"), (None, "bad"), (True, "bad")):
        add("depthwise_conv_init", f"layer={v!r}", lambda v=v: dwi(layer=v), exp, "layer")
    for arg in ("sigma_start", "sigma_end"):
        reals("depthwise_conv_init", arg, lambda v, arg=arg: dwi(**{arg: v}), bad=(0.0, -1.0, 1e-200, 1e200))
    reals("depthwise_conv_init", "scale", lambda v: dwi(scale=v), bad=(0.0, -1.0, 1e200, 1e-200), none_ok=True)
    add(
        "depthwise_conv_init",
        "scale=1e4 float16",
        lambda: dwi(scale=1e4, dtype=jnp.float16),
        "bad",
        ("scale", "float16"),
    )
    add(
        "depthwise_conv_init",
        "scale=1e-6 float16",
        lambda: dwi(scale=1e-6, dtype=jnp.float16),
        "bad",
        ("scale", "float16"),
    )
    arrays(
        "depthwise_conv_init", "covariance", COV, lambda c: dwi(covariance=c), half="valid", empty="bad", none="either"
    )
    add("depthwise_conv_init", "covariance not PSD", lambda: dwi(covariance=-np.eye(9)), "bad", "covariance")
    add(
        "depthwise_conv_init",
        "covariance not symmetric",
        lambda: dwi(covariance=np.triu(np.ones((9, 9)))),
        "bad",
        "covariance",
    )
    add(
        "depthwise_conv_init",
        "covariance wrong size for kernel",
        lambda: dwi(covariance=np.eye(4)),
        "bad",
        ("covariance", "shape"),
    )
    add(
        "depthwise_conv_init",
        "covariance traced",
        lambda: jax.jit(lambda c: dwi(covariance=c))(COV),
        "bad",
        "covariance",
    )
    for label, shp in (
        ("rank 2", (3, 4)),
        ("not depthwise (3,3,2,4)", (3, 3, 2, 4)),
        ("zero", (3, 0, 1, 4)),
        ("huge", (2**20, 2**20, 1, 2**10)),
        ("None", None),
        ("rank 5", (1, 3, 3, 1, 4)),
    ):
        add("depthwise_conv_init", f"shape {label}", lambda s=shp: dwi(shape=s), "bad", "shape")
    dtypes("depthwise_conv_init", lambda d: dwi(dtype=d), check=out_dtype)
    add("depthwise_conv_init", "displacement=None", lambda: dwi(displacement=None), "bad", "displacement")

    W = np.asarray(dwi(shape=(3, 3, 1, 4)))
    add("filter_covariance", "valid", lambda: mj.filter_covariance(W), "valid")
    add(
        "filter_covariance",
        "valid 1 filter uncentered",
        lambda: mj.filter_covariance(W[..., :1], center=False),
        "valid",
    )
    add(
        "filter_covariance", "1 filter centered", lambda: mj.filter_covariance(W[..., :1]), "bad", ("kernel", "filters")
    )
    arrays(
        "filter_covariance",
        "kernel",
        W,
        lambda w: mj.filter_covariance(w),
        half="valid",
        empty="bad",
        grow="either",
        shrink="either",  # (3, 3, 1, 4)[0] is (3, 1, 4): a 1-D depthwise kernel, valid input
    )
    add(
        "filter_covariance",
        "kernel (3,3,2,4) not depthwise",
        lambda: mj.filter_covariance(np.ones((3, 3, 2, 4))),
        "bad",
        "kernel",
    )
    add("filter_covariance", "center='yes'", lambda: mj.filter_covariance(W, center="yes"), "bad", "center")
    add("filter_covariance", "traced kernel", lambda: jax.jit(mj.filter_covariance)(W), "valid")

    add("resize_covariance", "valid", lambda: mj.resize_covariance(COV, 3, 5), "valid")
    add("resize_covariance", "valid shrink", lambda: mj.resize_covariance(COV, 3, 2), "valid")
    arrays("resize_covariance", "covariance", COV, lambda c: mj.resize_covariance(c, 3, 5), half="valid", empty="bad")
    sizes("resize_covariance", "kernel_size", lambda v: mj.resize_covariance(COV, v, 5))
    cases[-1].names += ("covariance",)  # np.int64(2): "covariance must have shape (4, 4) for this kernel"
    sizes("resize_covariance", "new_kernel_size", lambda v: mj.resize_covariance(COV, 3, v))
    add(
        "resize_covariance",
        "kernel_size mismatching covariance",
        lambda: mj.resize_covariance(COV, 4, 5),
        "bad",
        ("kernel_size", "covariance"),
    )
    add(
        "resize_covariance",
        "new_kernel_size (2**17,2**17)",
        lambda: mj.resize_covariance(COV, 3, (2**17, 2**17)),
        "bad",
        "new_kernel_size",
    )
    add("resize_covariance", "not PSD", lambda: mj.resize_covariance(-np.eye(9), 3, 5), "bad", "covariance")

    add("transfer_covariances", "valid", lambda: mj.transfer_covariances([COV, COV], 3), "valid")
    add(
        "transfer_covariances",
        "valid resized",
        lambda: mj.transfer_covariances([COV], 2, kernel_size=3, new_kernel_size=5),
        "valid",
    )
    sizes("transfer_covariances", "num_layers", lambda v: mj.transfer_covariances([COV], v))
    arrays(
        "transfer_covariances",
        "covariances[1]",
        COV,
        lambda c: mj.transfer_covariances([COV, c], 2),
        half="valid",
        empty="bad",
        names=("covariances",),
    )
    for label, v in (("[]", []), ("None", None), ("one array", COV), ("int", 3), ("mixed sizes", [COV, np.eye(4)])):
        add(
            "transfer_covariances",
            f"covariances={label}",
            lambda v=v: mj.transfer_covariances(v, 2),
            "bad" if label not in ("one array", "mixed sizes") else "either",
            "covariances",
        )
    add(
        "transfer_covariances",
        "only kernel_size",
        lambda: mj.transfer_covariances([COV], 2, kernel_size=3),
        "bad",
        ("kernel_size", "new_kernel_size"),
    )
    add(
        "transfer_covariances",
        "new_kernel_size=0",
        lambda: mj.transfer_covariances([COV], 2, kernel_size=3, new_kernel_size=0),
        "bad",
        "new_kernel_size",
    )

    CM = ConvMixer(10, width=8, depth=2).init(K, jnp.zeros((1, 8, 8, 1)))

    def conv_call(tree, key, **kw):
        return mj.mimetic_conv(tree, key, **kw)

    conv_opts = {
        a: [(NAN, "bad"), (0.0, "bad"), (-1.0, "bad"), (1e200, "bad"), ("x", "bad"), (None, "bad"), (5.0, "valid")]
        for a in ("sigma_start", "sigma_end")
    }
    conv_opts.update(
        scale=[(NAN, "bad"), (0.0, "bad"), (1e200, "bad"), (2.0, "valid"), (None, "valid")],
        covariances=[
            ([COV5], "bad"),  # ConvMixer here has two 5×5 depthwise layers
            ([COV5, COV5], "valid"),
            ([COV, COV], "bad"),
            ([], "bad"),
            ([np.eye(4)], "bad"),
            ([COV5, -np.eye(25)], "bad"),
            ([COV5, np.full((25, 25), NAN)], "bad"),
            (COV, "either"),
            (3, "bad"),
        ],
        displacement=[(3, "bad"), (None, "bad")],
        allow_empty=[(True, "valid")],
    )
    transform_common("mimetic_conv", conv_call, CM, conv_opts)
    add(
        "mimetic_conv",
        "scale=1e4 on float16",
        lambda: mj.mimetic_conv(jax.tree.map(lambda x: x.astype(jnp.float16), CM), K, scale=1e4),
        "bad",
        ("scale", "float16"),
    )
    for fname, fn in (
        ("find_depthwise_convs", mj.find_depthwise_convs),
        ("filter_covariances", mj.filter_covariances),
        ("freeze_mask", mj.freeze_mask),
    ):
        add(fname, "valid", lambda fn=fn: fn(CM), "valid", nonfinite_ok=True)
        for label, bad in (("None", None), ("int", 3), ("empty", {})):
            add(fname, f"tree={label}", lambda fn=fn, bad=bad: fn(bad), "either", "tree")
        for arg, v in (
            ("include", "["),
            ("exclude", 3),
            ("stacked_axes", -1),
            ("stacked_axes", "0"),
            ("include", None),
        ):
            add(
                fname,
                f"{arg}={v!r}",
                lambda fn=fn, arg=arg, v=v: fn(CM, **{arg: v}),
                "either" if v is None else "bad",
                arg,
            )
    add("filter_covariances", "center=2", lambda: mj.filter_covariances(CM, center=2), "bad", "center")
    add(
        "filter_covariances",
        "int32 tree",
        lambda: mj.filter_covariances(jax.tree.map(lambda x: x.astype(jnp.int32), CM)),
        "bad",
        ("kernel", "dtype"),
    )
    add(
        "filter_covariances",
        "NaN tree",
        lambda: mj.filter_covariances(jax.tree.map(lambda x: x * NAN, CM)),
        "bad",
        "kernel",
    )

    # ------------------------------------------------------------------ mlp
    def msi(mean=0.1, key=K, shape=(4, 6), dtype=jnp.float32, **kw):
        return mj.mean_shift_init(mean, **kw)(key, shape, dtype)

    add("mean_shift_init", "valid", lambda: msi(), "valid")
    keys("mean_shift_init", lambda k: msi(key=k))
    reals("mean_shift_init", "mean", lambda v: msi(mean=v), bad=(1e300,), either=(0.0, -5.0, 1e30))
    add("mean_shift_init", "mean=7e4 float16", lambda: msi(mean=7e4, dtype=jnp.float16), "bad", ("mean", "float16"))
    add("mean_shift_init", "mean=-7e4 float16", lambda: msi(mean=-7e4, dtype=jnp.float16), "bad", ("mean", "float16"))
    add("mean_shift_init", "mean=1e39 float32", lambda: msi(mean=1e39), "bad", ("mean", "float32"))
    for label, shp in (
        ("rank 1", (4,)),
        ("rank 6", (1,) * 5 + (4,)),
        ("zero", (0, 4)),
        ("huge", (2**30, 2**30)),
        ("None", None),
        ("negative", (4, -6)),
    ):
        add("mean_shift_init", f"shape {label}", lambda s=shp: msi(shape=s), "bad", "shape")
    dtypes("mean_shift_init", lambda d: msi(dtype=d), check=out_dtype)
    add("mean_shift_init", "base=None", lambda: msi(base=None), "bad", "base")
    add(
        "mean_shift_init",
        "base returns NaN",
        lambda: msi(base=lambda k, s, d=jnp.float32: jnp.full(s, NAN, d)),
        "either",
        "base",
        nonfinite_ok=True,
    )
    add(
        "mean_shift_init",
        "base returns wrong shape",
        lambda: msi(base=lambda k, s, d=jnp.float32: jnp.zeros((2,), d)),
        "bad",
        ("base", "shape"),
    )

    MLP = {
        "block": {
            "mlp_in": {"kernel": jnp.ones((4, 8)) * 0.1, "bias": jnp.zeros(8)},
            "mlp_out": {"kernel": jnp.ones((8, 4))},
        }
    }

    def mlp_call(tree, key, **kw):
        return mj.mimetic_mlp(tree, **kw)

    mlp_opts = {
        "mean": [
            (NAN, "bad"),
            (INF, "bad"),
            ("x", "bad"),
            (None, "bad"),
            (0.0, "valid"),
            (-1.0, "valid"),
            (1e300, "bad"),
        ],
        "allow_empty": [(True, "valid")],
    }
    transform_common("mimetic_mlp", mlp_call, MLP, mlp_opts, key=False)
    add(
        "mimetic_mlp",
        "mean=7e4 on float16",
        lambda: mj.mimetic_mlp(jax.tree.map(lambda x: x.astype(jnp.float16), MLP), mean=7e4),
        "bad",
        ("mean", "float16"),
    )
    add("mimetic_mlp", "under jit", lambda: jax.jit(lambda t: mj.mimetic_mlp(t))(MLP), "valid")
    add("find_mlp_layers", "valid", lambda: mj.find_mlp_layers(MLP), "valid")
    for label, bad in (("None", None), ("int", 3), ("empty", {})):
        add("find_mlp_layers", f"tree={label}", lambda bad=bad: mj.find_mlp_layers(bad), "either", "tree")
    for arg, v in (("include", "("), ("exclude", 3), ("stacked_axes", -1)):
        add("find_mlp_layers", f"{arg}={v!r}", lambda arg=arg, v=v: mj.find_mlp_layers(MLP, **{arg: v}), "bad", arg)

    # ------------------------------------------------------------------ ssm
    def ali(low=-8.0, high=-4.0, key=K, shape=(4, 8), dtype=jnp.float32):
        return mj.a_log_init(low, high)(key, shape, dtype)

    add("a_log_init", "valid", lambda: ali(), "valid")
    keys("a_log_init", lambda k: ali(key=k))
    reals("a_log_init", "low", lambda v: ali(low=v), bad=(0.0, 1e300), either=(-20.0, -1e4))
    reals("a_log_init", "high", lambda v: ali(high=v), bad=(-10.0, -1e300), either=(0.0, 3.0, 100.0))
    add("a_log_init", "low=-7e4 float16", lambda: ali(low=-7e4, dtype=jnp.float16), "bad", ("low", "float16"))
    add("a_log_init", "high=7e4 float16", lambda: ali(high=7e4, dtype=jnp.float16), "bad", ("high", "float16"))
    add("a_log_init", "low=high", lambda: ali(low=-4.0), "valid")
    for label, shp in (("zero", (0, 4)), ("huge", (2**30, 2**30)), ("None", None), ("negative", (-4,)), ("rank 0", ())):
        add(
            "a_log_init",
            f"shape {label}",
            lambda s=shp: ali(shape=s),
            "either" if label == "rank 0" else "bad",
            "shape",
        )
    dtypes("a_log_init", lambda d: ali(dtype=d), check=out_dtype)

    def dbi(delta=1.0, shape=(8,), dtype=jnp.float32):
        return mj.dt_bias_init(delta)(None, shape, dtype)

    add("dt_bias_init", "valid", lambda: dbi(), "valid")
    add("dt_bias_init", "key ignored", lambda: mj.dt_bias_init(0.5)(K, (8,)), "valid")
    reals("dt_bias_init", "delta", lambda v: dbi(delta=v), bad=(0.0, -1.0, 1e300, 1e-300), either=(1e-30, 1e3, 1e30))
    add("dt_bias_init", "delta=7e4 float16", lambda: dbi(delta=7e4, dtype=jnp.float16), "bad", ("delta", "float16"))
    add(
        "dt_bias_init", "delta=1e-8 float16", lambda: dbi(delta=1e-8, dtype=jnp.float16), "either", ("delta", "float16")
    )
    for label, shp in (("zero", (0,)), ("huge", (2**40,)), ("None", None), ("negative", (-4,))):
        add("dt_bias_init", f"shape {label}", lambda s=shp: dbi(shape=s), "bad", "shape")
    dtypes("dt_bias_init", lambda d: dbi(dtype=d), check=out_dtype)

    def ici(shape=(4, 1, 8), dtype=jnp.float32):
        return mj.identity_conv_init()(None, shape, dtype)

    add("identity_conv_init", "valid", lambda: ici(), "valid")
    for label, shp in (
        ("rank 2", (4, 8)),
        ("(4,2,8)", (4, 2, 8)),
        ("zero", (0, 1, 8)),
        ("huge", (2**20, 1, 2**20)),
        ("None", None),
    ):
        add("identity_conv_init", f"shape {label}", lambda s=shp: ici(shape=s), "bad", "shape")
    dtypes("identity_conv_init", lambda d: ici(dtype=d), check=out_dtype)

    def bck(key=K, d_in=8, d_state=4, **kw):
        return mj.bc_kernels(key, d_in, d_state, **kw)

    add("bc_kernels", "valid", lambda: bck(), "valid")
    add("bc_kernels", "valid groups", lambda: bck(num_groups=2), "valid")
    keys("bc_kernels", lambda k: bck(key=k))
    for arg in ("d_in", "d_state", "num_groups"):
        sizes("bc_kernels", arg, lambda v, arg=arg: bck(**{arg: v}))
    add("bc_kernels", "d_state > d_in", lambda: bck(d_in=4, d_state=8), "bad", "d_state")
    add(  # at the element bound of 2**34 (64 GiB of float32 per array): a clear error where memory is smaller
        "bc_kernels",
        "num_groups=2**20, d_in=2**12 (2**34 elements, at the bound)",
        lambda: bck(d_in=2**12, num_groups=2**20),
        "either",
        ("num_groups", "elements"),
    )
    add(
        "bc_kernels",
        "num_groups=2**21, d_in=2**12",
        lambda: bck(d_in=2**12, num_groups=2**21),
        "bad",
        ("num_groups", "elements"),
    )
    for arg in ("alpha", "beta"):
        reals("bc_kernels", arg, lambda v, arg=arg: bck(**{arg: v}), either=(0.0, -1.0), bad=(1e300,))
        add(
            "bc_kernels",
            f"{arg}=1e12 float16",
            lambda arg=arg: bck(**{arg: 1e12}, dtype=jnp.float16),
            "bad",
            (arg, "float16"),
        )
    add("bc_kernels", "distribution='x'", lambda: bck(distribution="x"), "bad", "distribution")
    add("bc_kernels", "method='x'", lambda: bck(method="x"), "bad", "method")
    dtypes("bc_kernels", lambda d: bck(dtype=d), check=out_dtype)

    A = np.full(8, -4.0, np.float32)
    add("min_retention", "valid", lambda: mj.min_retention(A, 1.0, 64), "valid")
    add("min_retention", "valid delta array", lambda: mj.min_retention(A, np.ones(8, np.float32), 64), "valid")
    add("min_retention", "length=10**12", lambda: mj.min_retention(A, 1.0, 10**12), "valid")
    arrays(
        "min_retention",
        "a_log",
        A,
        lambda a: mj.min_retention(a, 1.0, 64),
        half="valid",
        empty="bad",
        rank=False,
        ints="either",
    )
    arrays(
        "min_retention",
        "delta",
        np.ones(8, np.float32),
        lambda d: mj.min_retention(A, d, 64),
        half="valid",
        empty="bad",
        rank=False,
        ints="either",
    )
    reals(
        "min_retention",
        "delta",
        lambda v: mj.min_retention(A, v, 64),
        bad=(0.0, -1.0),
        either=(1e30, 1e-30),
        array_ok=True,  # "delta may be an array of per-channel steps"
    )
    for v, exp in ((0, "bad"), (-1, "bad"), (1.5, "bad"), (None, "bad"), (True, "bad"), (2**70, "valid")):
        add("min_retention", f"length={v!r}", lambda v=v: mj.min_retention(A, 1.0, v), exp, "length")
    add(
        "min_retention", "a_log > 0", lambda: mj.min_retention(np.full(8, 50.0, np.float32), 1.0, 64), "either", "a_log"
    )
    add(
        "min_retention",
        "delta shape mismatch",
        lambda: mj.min_retention(A, np.ones(3, np.float32), 64),
        "either",  # documented: the largest step is used
        ("delta", "a_log", "shape"),
    )

    LM = MambaLM(vocab_size=8, d_model=8, n_layer=1, d_state=4).init(K, jnp.zeros((1, 4), jnp.int32))
    LM2 = MambaLM(vocab_size=8, d_model=16, n_layer=1, d_state=4, version=2).init(K, jnp.zeros((1, 4), jnp.int32))

    def ssm_call(tree, key, **kw):
        return mj.mimetic_ssm(tree, key, **kw)

    ssm_opts = {
        a: [(NAN, "bad"), ("x", "bad"), (None, "bad"), (0.0, "either"), (1e300, "bad")] for a in ("alpha", "beta")
    }
    ssm_opts.update(
        a_log_range=[
            ((-4.0, -8.0), "bad"),
            ((NAN, -4.0), "bad"),
            ((-8.0,), "bad"),
            (None, "bad"),
            ("x", "bad"),
            ((-8.0, 1e300), "bad"),  # named as high
            ((-2.0, -1.0), "valid"),
        ],
        delta=[(0.0, "bad"), (-1.0, "bad"), (NAN, "bad"), (1e300, "bad"), (2.0, "valid")],
        transition=[("y", "either"), (False, "valid")],
        bc=[(False, "valid")],
        conv=[(True, "valid")],
        distribution=[("x", "bad")],
        method=[("x", "bad"), ("fast", "valid")],
        ngroups=[(0, "bad"), (-1, "bad"), (3, "either"), (1.5, "bad")],  # Mamba-1 has no groups
        layouts=[(mj.MAMBA1, "either"), ([], "bad"), (None, "bad"), ([3], "bad")],
        allow_empty=[(True, "valid")],
    )
    transform_common("mimetic_ssm", ssm_call, LM, ssm_opts)
    for c in cases:
        if c.func == "mimetic_ssm" and c.label.startswith("a_log_range="):
            c.names += ("low", "high")  # a_log_range=(low, high) is checked as a_log_init's low and high
    add("mimetic_ssm", "Mamba-2 valid", lambda: mj.mimetic_ssm(LM2, K, ngroups=1), "valid", check=same_structure(LM2))
    add(
        "mimetic_ssm",
        "delta=7e4 on float16",
        lambda: mj.mimetic_ssm(
            jax.tree.map(lambda x: x.astype(jnp.float16) if jnp.issubdtype(x.dtype, jnp.floating) else x, LM),
            K,
            delta=7e4,
        ),
        "bad",
        ("delta", "float16"),
    )
    add("find_ssm_blocks", "valid", lambda: mj.find_ssm_blocks(LM), "valid")
    for label, bad in (("None", None), ("int", 3), ("empty", {})):
        add("find_ssm_blocks", f"tree={label}", lambda bad=bad: mj.find_ssm_blocks(bad), "either", "tree")
    for arg, v in (("include", "["), ("ngroups", 0), ("stacked_axes", -1), ("layouts", 3)):
        add("find_ssm_blocks", f"{arg}={v!r}", lambda arg=arg, v=v: mj.find_ssm_blocks(LM, **{arg: v}), "bad", arg)

    # ------------------------------------------------------------------ emergence
    ef = mj.emergence_factors
    add("emergence_factors", "valid", lambda: ef(4), "valid")
    sizes("emergence_factors", "num_layers", lambda v: ef(v))
    reals("emergence_factors", "alpha", lambda v: ef(4, v), bad=(0.0, -1.0), either=(1e6, 1e-6))
    add("emergence_factors", "alpha=1e6, 400 layers", lambda: ef(400, 1e6), "bad", "alpha")
    add("emergence_factors", "alpha=1e-6, 400 layers", lambda: ef(400, 1e-6), "bad", "alpha")
    for v, exp in (
        (0, "valid"),
        (3, "valid"),
        (4, "bad"),
        (-1, "bad"),
        ("middle", "either"),
        ("x", "bad"),
        (1.5, "bad"),
        (True, "bad"),
    ):
        add("emergence_factors", f"pivot={v!r}", lambda v=v: ef(4, 1.1, v), exp, "pivot")

    def ei(base=LECUN, layer=0, num_layers=2, alpha=1.1, key=K, shape=(4, 4), dtype=jnp.float32, **kw):
        return mj.emergence_init(base, layer, num_layers, alpha, **kw)(key, shape, dtype)

    add("emergence_init", "valid", lambda: ei(), "valid")
    keys("emergence_init", lambda k: ei(key=k))
    sizes("emergence_init", "num_layers", lambda v: ei(num_layers=v))
    for v in (-1, 2, 1.0, None):
        add("emergence_init", f"layer={v!r}", lambda v=v: ei(layer=v), "bad", "layer")
    reals("emergence_init", "alpha", lambda v: ei(alpha=v), bad=(0.0, -1.0))
    add(
        "emergence_init",
        "alpha=1e6 float16 (factor 1e6)",
        lambda: ei(alpha=1e6, layer=1, num_layers=2, pivot=0, dtype=jnp.float16),
        "bad",
        ("alpha", "float16"),
    )
    add("emergence_init", "base=None", lambda: ei(base=None), "bad", "base")
    add("emergence_init", "pivot=5", lambda: ei(pivot=5), "bad", "pivot")
    dtypes("emergence_init", lambda d: ei(dtype=d), check=out_dtype)
    for label, shp in (("zero", (0, 4)), ("None", None), ("huge", (2**30, 2**30))):
        add("emergence_init", f"shape {label}", lambda s=shp: ei(shape=s), "bad", "shape")

    DENSE = {f"Dense_{i}": {"kernel": jnp.ones((3, 3)) * 0.5, "bias": jnp.zeros(3)} for i in range(3)}

    def em_call(tree, key, **kw):
        return mj.emergence_scale(tree, **kw)

    em_opts = {
        "alpha": [
            (NAN, "bad"),
            (0.0, "bad"),
            (-1.0, "bad"),
            ("x", "bad"),
            (None, "bad"),
            (2.0, "valid"),
            (1e300, "bad"),
        ],
        "pivot": [(5, "bad"), (-1, "bad"), ("x", "bad"), (0, "valid")],
        "order": [
            (["Dense_2", "Dense_1", "Dense_0"], "valid"),
            (["nope"], "bad"),
            ([], "either"),
            (3, "bad"),
            ([["Dense_0"], ["Dense_1"]], "either"),
        ],
        "kernel": [("", "bad"), (3, "bad"), ("weight", "either")],
    }

    def em_common(name, call, tree):
        add(name, "valid", lambda: call(tree, K), "valid")
        for d in (jnp.bfloat16, jnp.float16):
            t = jax.tree.map(lambda x, d=d: x.astype(d), tree)
            add(name, f"valid {jnp.dtype(d)} tree", lambda t=t: call(t, K), "valid")
        for dl, d in (("int32", jnp.int32), ("bool", bool), ("complex64", jnp.complex64)):
            t = jax.tree.map(lambda x, d=d: x.astype(d), tree)
            add(
                name,
                f"{dl} kernels",
                lambda t=t: call(t, K),
                "bad" if name == "emergence_scale" else "either",
                ("kernel", "dtype"),
            )
        for label, bad in (("None", None), ("int", 3), ("empty", {})):
            add(name, f"tree={label}", lambda bad=bad: call(bad, K), "either", "tree")
        for arg, vals in em_opts.items():
            for v, exp in vals:
                add(name, f"{arg}={v!r}", lambda arg=arg, v=v: call(tree, K, **{arg: v}), exp, arg)
        add(
            name,
            "alpha=1e6 on float16",
            lambda: call(jax.tree.map(lambda x: x.astype(jnp.float16), tree), K, alpha=1e6),
            "bad" if name == "emergence_scale" else "either",  # emergence_layers makes no arrays
            ("alpha", "float16"),
        )

    em_common("emergence_scale", em_call, DENSE)
    em_common("emergence_layers", lambda t, k, **kw: mj.emergence_layers(t, **kw), DENSE)
    for c in cases:
        if c.func == "emergence_layers" and c.label == "alpha=1e+300":
            c.expect = "either"  # three layers: factors 1e-300, 1, 1e300 are finite floats; no array is made
    add("emergence_scale", "under jit", lambda: jax.jit(lambda t: mj.emergence_scale(t))(DENSE), "valid")

    g = np.random.default_rng(0)
    ACTS = [g.standard_normal((4, 5)) for _ in range(3)]
    emm = mj.emergence_measure
    add("emergence_measure", "valid", lambda: emm(ACTS), "valid")
    add("emergence_measure", "valid log", lambda: emm(ACTS, log=True), "valid", nonfinite_ok=True)
    add("emergence_measure", "empty batch", lambda: emm([a[:0] for a in ACTS]), "valid")
    add(
        "emergence_measure",
        "121 layers of 1000 units (overflow)",
        lambda: emm([np.ones((1, 1000))] * 121),
        "valid",
        nonfinite_ok=True,
    )
    arrays(
        "emergence_measure",
        "activations[1]",
        ACTS[1],
        lambda a: emm([ACTS[0], a, ACTS[2]]),
        half="valid",
        names=("activations",),
        empty="bad",
        ints="either",
    )
    for label, v in (
        ("[]", []),
        ("one layer", ACTS[:1]),
        ("None", None),
        ("array", np.ones((3, 4, 5))),
        ("str", "acts"),
    ):
        add("emergence_measure", f"activations={label}", lambda v=v: emm(v), "either", "activations")
    add("emergence_measure", "batch mismatch", lambda: emm([ACTS[0], ACTS[1][:2], ACTS[2]]), "bad", "activations")
    reals("emergence_measure", "threshold", lambda v: emm(ACTS, threshold=v), either=(-1.0, 0.0, 1e30))
    for arg, v in (("paths", "some"), ("node", "x"), ("log", "yes"), ("paths", None)):
        add("emergence_measure", f"{arg}={v!r}", lambda arg=arg, v=v: emm(ACTS, **{arg: v}), "bad", arg)
    ADJ = [np.ones((5, 5)), np.ones((5, 5))]
    add("emergence_measure", "valid adjacency", lambda: emm(ACTS, adjacency=ADJ), "valid")
    arrays(
        "emergence_measure",
        "adjacency[0]",
        ADJ[0],
        lambda a: emm(ACTS, adjacency=[a, ADJ[1]]),
        names=("adjacency",),
        half="either",
        ints="either",
        empty="bad",
    )
    add("emergence_measure", "adjacency too short", lambda: emm(ACTS, adjacency=ADJ[:1]), "bad", "adjacency")
    add(
        "emergence_measure",
        "traced activations",
        lambda: jax.jit(lambda a: emm([a, a]))(jnp.ones((2, 3))),
        "bad",
        "activations",
    )

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.relu(nn.Dense(3)(x)))

    add("forward_order", "valid", lambda: mj.forward_order(Net(), jnp.ones((1, 3))), "valid")
    add("forward_order", "model=None", lambda: mj.forward_order(None, jnp.ones((1, 3))), "bad", "model")
    add("forward_order", "model=params", lambda: mj.forward_order(DENSE, jnp.ones((1, 3))), "bad", "model")
    add(
        "forward_order",
        "wrong input shape",
        lambda: mj.forward_order(Net(), jnp.ones((1, 3, 3, 3, 3))),
        "either",
        ("model", "input"),
    )
    add(
        "forward_order",
        "method='nope'",
        lambda: mj.forward_order(Net(), jnp.ones((1, 3)), method="nope"),
        "bad",
        "method",
    )

    # ------------------------------------------------------------------ fuse
    w1, b1 = g.standard_normal((3, 4)).astype(np.float32) / 2, np.zeros(4, np.float32)
    w2, b2 = g.standard_normal((4, 2)).astype(np.float32) / 2, np.zeros(2, np.float32)
    MEAN, CV = np.zeros(3, np.float32), np.eye(3, dtype=np.float32)
    X = g.standard_normal((16, 3)).astype(np.float32)
    DEN = dict(w1=w1, b1=b1, w2=w2, b2=b2)

    def dd(fn, data=False, **kw):
        args = {**DEN, **kw}
        pos = [args.pop(n) for n in ("w1", "b1", "w2", "b2")]
        if data:
            return fn(*pos, args.pop("x", X), **args)
        args.setdefault("mean", MEAN)
        args.setdefault("cov", CV)
        return fn(*pos, **args)

    for fname, fn, data in (
        ("dense_dense", mj.dense_dense, False),
        ("fusion_mse", mj.fusion_mse, False),
        ("dense_dense_from_data", mj.dense_dense_from_data, True),
    ):
        add(fname, "valid", lambda fn=fn, data=data: dd(fn, data), "valid")
        add(fname, "valid identity", lambda fn=fn, data=data: dd(fn, data, activation="identity"), "valid")
        for arg, base in DEN.items():
            arrays(
                fname,
                arg,
                base,
                lambda a, fn=fn, data=data, arg=arg: dd(fn, data, **{arg: a}),
                empty="bad",
                half="either",
                lists="either",
            )
        add(
            fname,
            "activation='swish'",
            lambda fn=fn, data=data: dd(fn, data, activation="swish"),
            "bad" if not data else "either",
            "activation",
        )
        add(fname, "activation=3", lambda fn=fn, data=data: dd(fn, data, activation=3), "bad", "activation")
        add(
            fname,
            "w2 rows mismatch",
            lambda fn=fn, data=data: dd(fn, data, w2=np.ones((5, 2), np.float32)),
            "bad",
            ("w2", "w1"),
        )
        if data:
            arrays(fname, "x", X, lambda x, fn=fn: dd(fn, True, x=x), empty="bad", half="either", grow="either")
            reals(fname, "ridge", lambda v, fn=fn: dd(fn, True, ridge=v), bad=(-1.0,), either=(0.0, 1e30))
            sizes(fname, "batch_size", lambda v, fn=fn: dd(fn, True, batch_size=v))
            add(fname, "x iterable of batches", lambda fn=fn: dd(fn, True, x=iter([X[:8], X[8:]])), "valid")
            add(fname, "x batches of mixed widths", lambda fn=fn: dd(fn, True, x=[X, X[:, :2]]), "bad", "x")
            add(fname, "x empty iterable", lambda fn=fn: dd(fn, True, x=[]), "bad", "x")
            add(fname, "return_mse='y'", lambda fn=fn: dd(fn, True, return_mse="y"), "either", "return_mse")
            add(fname, "callable activation", lambda fn=fn: dd(fn, True, activation=jax.nn.gelu), "valid")
            add(
                fname,
                "callable activation returning NaN",
                lambda fn=fn: dd(fn, True, activation=lambda z: z * NAN),
                "bad",
                "activation",
            )
            add(
                fname,
                "collinear x (ridge=0)",
                lambda fn=fn: dd(fn, True, x=np.ones((16, 3), np.float32), ridge=0.0),
                "either",
                ("x", "ridge"),
            )
        else:
            arrays(fname, "mean", MEAN, lambda m, fn=fn: dd(fn, mean=m), empty="bad", half="either", rank=False)
            arrays(fname, "cov", CV, lambda c, fn=fn: dd(fn, cov=c), empty="bad", half="either")
            add(fname, "cov not PSD", lambda fn=fn: dd(fn, cov=-np.eye(3)), "bad", "cov")
            add(fname, "cov scalar", lambda fn=fn: dd(fn, cov=2.0), "valid")
            add(fname, "cov scalar negative", lambda fn=fn: dd(fn, cov=-2.0), "bad", "cov")
            add(fname, "mean scalar", lambda fn=fn: dd(fn, mean=0.5), "valid")
            add(fname, "traced cov", lambda fn=fn: jax.jit(lambda c: dd(fn, cov=c))(CV), "valid")
            add(fname, "cov huge 1e30", lambda fn=fn: dd(fn, cov=np.eye(3, dtype=np.float32) * 1e30), "either", "cov")

    add("relu_moments", "valid", lambda: mj.relu_moments(MEAN, CV), "valid")
    arrays("relu_moments", "mean", MEAN, lambda m: mj.relu_moments(m, CV), empty="bad", half="either")
    arrays("relu_moments", "cov", CV, lambda c: mj.relu_moments(MEAN, c), empty="bad", half="either")
    add("relu_moments", "cov zero", lambda: mj.relu_moments(MEAN, np.zeros((3, 3), np.float32)), "either", "cov")
    add("relu_moments", "cov not PSD", lambda: mj.relu_moments(MEAN, -CV), "bad", "cov")

    add("Moments", "valid", lambda: Moments.zeros(3).update(X).mean_cov(), "valid")
    sizes("Moments", "dim", lambda v: Moments.zeros(v))
    add("Moments", "dim=2**20 (dim² > 2**34)", lambda: Moments.zeros(2**20), "bad", "dim")
    add(
        "Moments",
        "mean_cov of nothing",
        lambda: Moments.zeros(3).mean_cov(),
        "bad",
        ("count", "no rows", "Moments", "empty"),
    )
    arrays(
        "Moments",
        "z",
        X,
        lambda z: Moments.zeros(3).update(z).mean_cov(),
        empty="either",
        half="either",
        ints="either",  # the moments of integer rows are well defined ("z: finite, real"); bool is rejected
        names=("z",),
        grow="either",
    )
    add("Moments", "update jitted", lambda: jax.jit(lambda z: Moments.zeros(3).update(z))(X).mean_cov(), "valid")
    add("Moments", "update with 1 row", lambda: Moments.zeros(3).update(X[:1]).mean_cov(), "either", "z")

    K1 = g.standard_normal((2, 2, 1, 2)).astype(np.float32) / 2
    K2 = g.standard_normal((2, 2, 2, 2)).astype(np.float32) / 3
    CB = np.zeros(2, np.float32)
    XC = g.standard_normal((3, 5, 5, 1)).astype(np.float32)
    CONV = dict(k1=K1, b1=CB, k2=K2, b2=CB)

    def cc(fn, data=False, **kw):
        args = {**CONV, **kw}
        pos = [args.pop(n) for n in ("k1", "b1", "k2", "b2")]
        if data:
            return fn(*pos, args.pop("x", XC), **args)
        return fn(*pos, **args)

    for fname, fn, data in (("conv_conv", mj.conv_conv, False), ("conv_conv_from_data", mj.conv_conv_from_data, True)):
        add(fname, "valid", lambda fn=fn, data=data: cc(fn, data), "valid")
        add(fname, "valid strides (2,1)", lambda fn=fn, data=data: cc(fn, data, strides=(2, 1)), "valid")
        add(fname, "valid SAME", lambda fn=fn, data=data: cc(fn, data, padding=("SAME", "SAME")), "either")
        for arg, base in CONV.items():
            arrays(
                fname,
                arg,
                base,
                lambda a, fn=fn, data=data, arg=arg: cc(fn, data, **{arg: a}),
                empty="bad",
                half="either",
                grow="either" if arg in ("k1", "k2") else "bad",  # a taller kernel is another valid layer
            )
        for label, v in (
            ("(0,1)", (0, 1)),
            ("(-1,1)", (-1, 1)),
            ("1", 1),
            ("None", None),
            ("(2**40,1)", (2**40, 1)),
            ("('a',1)", ("a", 1)),
        ):
            add(
                fname,
                f"strides={label}",
                lambda fn=fn, data=data, v=v: cc(fn, data, strides=v),
                "either" if label == "1" else "bad",
                "strides",
            )
        for label, v in (
            ("('X','VALID')", ("X", "VALID")),
            ("None", None),
            ("'VALID'", "VALID"),
            ("((-1,0),...)", (((-1, 0), (0, 0)), "VALID")),
            ("huge", (((2**40, 0), (0, 0)), "VALID")),
        ):
            add(
                fname,
                f"padding={label}",
                lambda fn=fn, data=data, v=v: cc(fn, data, padding=v),
                "either" if label == "'VALID'" else "bad",
                "padding",
            )
        add(
            fname,
            "activation='swish'",
            lambda fn=fn, data=data: cc(fn, data, activation="swish"),
            "bad" if not data else "either",
            "activation",
        )
        add(fname, "pool avg", lambda fn=fn, data=data: cc(fn, data, pool=Pool("avg", 2, 1)), "either", "pool")
        add(
            fname,
            "pool max",
            lambda fn=fn, data=data: cc(fn, data, pool=Pool("max", 2, 1)),
            "either" if not data else "valid",
            "pool",
        )
        for label, p in (
            ("kind", Pool("min", 2, 1)),
            ("window 0", Pool("avg", 0, 1)),
            ("strides -1", Pool("avg", 2, -1)),
            ("int", 3),
            ("window huge", Pool("avg", 2**40, 1)),
        ):
            add(fname, f"pool {label}", lambda fn=fn, data=data, p=p: cc(fn, data, pool=p), "bad", "pool")
        add(
            fname,
            "k2 channels mismatch",
            lambda fn=fn, data=data: cc(fn, data, k2=np.ones((2, 2, 3, 2), np.float32)),
            "bad",
            ("k2", "k1"),
        )
        if data:
            arrays(fname, "x", XC, lambda x, fn=fn: cc(fn, True, x=x), empty="bad", half="either", grow="either")
            add(fname, "x smaller than the window", lambda fn=fn: cc(fn, True, x=XC[:, :2, :2]), "bad", ("x", "fit"))
            reals(fname, "ridge", lambda v, fn=fn: cc(fn, True, ridge=v), bad=(-1.0,), either=(0.0,))
            sizes(fname, "batch_size", lambda v, fn=fn: cc(fn, True, batch_size=v))
        else:
            add(fname, "mean (2,)", lambda fn=fn: cc(fn, mean=np.zeros(1, np.float32)), "either", "mean")
            add(fname, "mean NaN", lambda fn=fn: cc(fn, mean=NAN), "bad", "mean")
            add(fname, "cov NaN", lambda fn=fn: cc(fn, cov=NAN), "bad", "cov")
            add(fname, "cov -1", lambda fn=fn: cc(fn, cov=-1.0), "bad", "cov")
            add(fname, "cov (1,1)", lambda fn=fn: cc(fn, cov=np.eye(1, dtype=np.float32)), "either", "cov")
            add(fname, "cov (5,5)", lambda fn=fn: cc(fn, cov=np.eye(5, dtype=np.float32)), "bad", "cov")
            add(fname, "input_size=(5,5)", lambda fn=fn: cc(fn, input_size=(5, 5)), "valid")
            add(
                fname,
                "input_size=(2,2) too small",
                lambda fn=fn: cc(fn, input_size=(2, 2)),
                "bad",
                ("input_size", "fit"),
            )
            add(fname, "input_size=(0,5)", lambda fn=fn: cc(fn, input_size=(0, 5)), "bad", "input_size")
            add(fname, "input_size=(2**40,5)", lambda fn=fn: cc(fn, input_size=(2**40, 5)), "bad", "input_size")
            add(fname, "strides (2**20,2**20)", lambda fn=fn: cc(fn, strides=(2**20, 2**20)), "either", "strides")

    W2 = g.standard_normal((32, 1)).astype(np.float32) / 4
    CD = dict(k1=K1, b1=CB, w2=W2, b2=np.zeros(1, np.float32))

    def cd(fn, data=False, **kw):
        args = {**CD, **kw}
        pos = [args.pop(n) for n in ("k1", "b1", "w2", "b2")]
        if data:
            return fn(*pos, args.pop("x", XC), **args)
        args.setdefault("input_shape", (5, 5, 1))
        return fn(*pos, **args)

    for fname, fn, data in (
        ("conv_dense", mj.conv_dense, False),
        ("conv_dense_from_data", mj.conv_dense_from_data, True),
    ):
        add(fname, "valid", lambda fn=fn, data=data: cd(fn, data), "valid")
        for arg, base in CD.items():
            arrays(
                fname,
                arg,
                base,
                lambda a, fn=fn, data=data, arg=arg: cd(fn, data, **{arg: a}),
                empty="bad",
                half="either",
            )
        for label, v in (("0", 0), ("-1", -1), ("2**40", 2**40), ("None", None), ("'x'", "x"), ("(1,2,3)", (1, 2, 3))):
            add(
                fname,
                f"strides={label}",
                lambda fn=fn, data=data, v=v: cd(fn, data, strides=v),
                "bad",
                ("strides", "w2"),
            )
        for label, v in (("'X'", "X"), ("None", None), ("-1", -1), ("huge", 2**40)):
            add(
                fname,
                f"padding={label}",
                lambda fn=fn, data=data, v=v: cd(fn, data, padding=v),
                "bad",
                ("padding", "w2"),
            )
        add(
            fname,
            "activation='swish'",
            lambda fn=fn, data=data: cd(fn, data, activation="swish"),
            "bad" if not data else "either",
            "activation",
        )
        if data:
            arrays(fname, "x", XC, lambda x, fn=fn: cd(fn, True, x=x), empty="bad", half="either", grow="either")
            reals(fname, "ridge", lambda v, fn=fn: cd(fn, True, ridge=v), bad=(-1.0,), either=(0.0,))
            sizes(fname, "batch_size", lambda v, fn=fn: cd(fn, True, batch_size=v))
        else:
            for label, v in (
                ("(5,5)", (5, 5)),
                ("(5,5,2)", (5, 5, 2)),
                ("(0,5,1)", (0, 5, 1)),
                ("(2**40,5,1)", (2**40, 5, 1)),
                ("None", None),
                ("(1,1,1)", (1, 1, 1)),
                ("(6,6,1)", (6, 6, 1)),
            ):
                add(
                    fname,
                    f"input_shape={label}",
                    lambda fn=fn, v=v: cd(fn, input_shape=v),
                    "bad",
                    ("input_shape", "w2", "k1"),
                )
            add(fname, "mean NaN", lambda fn=fn: cd(fn, mean=NAN), "bad", "mean")
            add(fname, "cov -1", lambda fn=fn: cd(fn, cov=-1.0), "bad", "cov")
            add(fname, "cov (25,25) full", lambda fn=fn: cd(fn, cov=np.eye(25, dtype=np.float32)), "valid")
            add(fname, "cov (7,7)", lambda fn=fn: cd(fn, cov=np.eye(7, dtype=np.float32)), "bad", "cov")

    FB = dict(kernel=w1, bias=b1)
    add("fold_batchnorm", "valid", lambda: mj.fold_batchnorm(w1, b1, mean=np.zeros(4), var=np.ones(4)), "valid")
    add(
        "fold_batchnorm",
        "valid input side",
        lambda: mj.fold_batchnorm(w1, b1, mean=np.zeros(3), var=np.ones(3), side="input"),
        "valid",
    )
    for arg, base in FB.items():
        arrays(
            "fold_batchnorm",
            arg,
            base,
            lambda a, arg=arg: mj.fold_batchnorm(**{**FB, arg: a}, mean=np.zeros(4), var=np.ones(4)),
            empty="bad",
            half="either",
            rank=arg != "kernel",  # a kernel of another rank or width is another valid layer
            none="either" if arg == "bias" else "bad",  # bias=None: no bias
        )
    for arg in ("mean", "var", "scale", "offset"):
        base = np.ones(4, np.float32)
        arrays(
            "fold_batchnorm",
            arg,
            base,
            lambda a, arg=arg: mj.fold_batchnorm(w1, b1, **{"mean": np.zeros(4), "var": np.ones(4), arg: a}),
            empty="bad",
            half="either",
            rank=False,
            none="either",  # None: the identity statistic
        )
    add(
        "fold_batchnorm",
        "var negative",
        lambda: mj.fold_batchnorm(w1, b1, mean=np.zeros(4), var=-np.ones(4)),
        "bad",
        "var",
    )
    add(
        "fold_batchnorm",
        "var + epsilon = 0",
        lambda: mj.fold_batchnorm(w1, b1, mean=np.zeros(4), var=np.zeros(4), epsilon=0.0),
        "bad",
        ("var", "epsilon"),
    )
    reals(
        "fold_batchnorm",
        "epsilon",
        lambda v: mj.fold_batchnorm(w1, b1, mean=np.zeros(4), var=np.ones(4), epsilon=v),
        bad=(-1.0,),
        either=(0.0, 1e30),
    )
    add(
        "fold_batchnorm",
        "side='x'",
        lambda: mj.fold_batchnorm(w1, b1, mean=np.zeros(4), var=np.ones(4), side="x"),
        "bad",
        "side",
    )

    DEEP = {
        "Dense_0": {"kernel": jnp.asarray(w1), "bias": jnp.asarray(b1)},
        "Dense_1": {"kernel": jnp.asarray(w2), "bias": jnp.asarray(b2)},
    }
    SHALLOW = {"Dense_0": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}}
    fp = mj.fuse_params
    add(
        "fuse_params",
        "valid moments",
        lambda: fp(DEEP, SHALLOW, 0, mean=0.0, cov=1.0),
        "valid",
        check=same_structure(SHALLOW),
    )
    add("fuse_params", "valid data", lambda: fp(DEEP, SHALLOW, 0, inputs=X), "valid", check=same_structure(SHALLOW))
    for v, exp in ((1, "bad"), (-1, "bad"), (1.0, "bad"), (None, "bad"), (True, "bad"), (10**12, "bad")):
        add("fuse_params", f"index={v!r}", lambda v=v: fp(DEEP, SHALLOW, v, mean=0.0, cov=1.0), exp, "index")
    add("fuse_params", "neither inputs nor moments", lambda: fp(DEEP, SHALLOW, 0), "bad", ("inputs", "mean", "cov"))
    add("fuse_params", "only mean", lambda: fp(DEEP, SHALLOW, 0, mean=0.0), "bad", ("cov", "mean"))
    add(
        "fuse_params",
        "inputs and moments",
        lambda: fp(DEEP, SHALLOW, 0, inputs=X, mean=0.0, cov=1.0),
        "either",
        ("inputs", "mean"),
    )
    arrays(
        "fuse_params",
        "inputs",
        X,
        lambda x: fp(DEEP, SHALLOW, 0, inputs=x),
        empty="bad",
        half="either",
        names=("inputs", "x"),
        grow="either",
    )
    for label, t in (
        ("None", None),
        ("int", 3),
        ("empty", {}),
        ("int32 deep", jax.tree.map(lambda x: x.astype(jnp.int32), DEEP)),
        ("NaN deep", jax.tree.map(lambda x: x * NAN, DEEP)),
        ("one layer", {"Dense_0": DEEP["Dense_0"]}),
    ):
        add(
            "fuse_params",
            f"deep={label}",
            lambda t=t: fp(t, SHALLOW, 0, mean=0.0, cov=1.0),
            "bad",
            ("deep", "w1", "w2", "b1", "b2", "kernel"),
        )
    for label, t in (
        ("None", None),
        ("empty", {}),
        ("wrong shape", {"Dense_0": {"kernel": jnp.zeros((3, 5)), "bias": jnp.zeros(5)}}),
        ("int32", jax.tree.map(lambda x: x.astype(jnp.int32), SHALLOW)),
    ):
        add(
            "fuse_params",
            f"shallow={label}",
            lambda t=t: fp(DEEP, t, 0, mean=0.0, cov=1.0),
            "bad",
            ("shallow", "kernel"),
        )
    add(
        "fuse_params",
        "shallow bfloat16",
        lambda: fp(DEEP, jax.tree.map(lambda x: x.astype(jnp.bfloat16), SHALLOW), 0, mean=0.0, cov=1.0),
        "either",
        "shallow",
    )
    add(
        "fuse_params",
        "deep_layers unknown",
        lambda: fp(DEEP, SHALLOW, 0, mean=0.0, cov=1.0, deep_layers=["nope", "Dense_1"]),
        "bad",
        ("deep_layers", "nope"),
    )
    add(
        "fuse_params",
        "deep_layers=3",
        lambda: fp(DEEP, SHALLOW, 0, mean=0.0, cov=1.0, deep_layers=3),
        "bad",
        "deep_layers",
    )
    add(
        "fuse_params",
        "shallow_layers unknown",
        lambda: fp(DEEP, SHALLOW, 0, mean=0.0, cov=1.0, shallow_layers=["x"]),
        "bad",
        ("shallow_layers", "x"),
    )
    add(
        "fuse_params",
        "activation='swish'",
        lambda: fp(DEEP, SHALLOW, 0, mean=0.0, cov=1.0, activation="swish"),
        "bad",
        "activation",
    )
    add("fuse_params", "ridge=-1", lambda: fp(DEEP, SHALLOW, 0, inputs=X, ridge=-1.0), "bad", "ridge")
    add("fuse_params", "batch_size=0", lambda: fp(DEEP, SHALLOW, 0, inputs=X, batch_size=0), "bad", "batch_size")
    add("fuse_params", "cov NaN", lambda: fp(DEEP, SHALLOW, 0, mean=0.0, cov=NAN), "bad", "cov")
    add("fuse_params", "mean inf", lambda: fp(DEEP, SHALLOW, 0, mean=INF, cov=1.0), "bad", "mean")

    # ------------------------------------------------------------------ presets and analysis
    for preset, tree in (("vit", VIT), ("convmixer", CM), ("mamba", LM)):
        add(
            "mimetic",
            f"preset {preset}",
            lambda p=preset, t=tree: mj.mimetic(t, K, preset=p),
            "valid",
            check=same_structure(tree),
        )
        add("mimetic_plan", f"preset {preset}", lambda p=preset, t=tree: mj.mimetic_plan(t, preset=p), "valid")
    keys("mimetic", lambda k: mj.mimetic(VIT, k, preset="vit"))
    for label, kw, exp, names in (
        ("preset 'vitt'", dict(preset="vitt"), "bad", "preset"),
        ("preset 3", dict(preset=3), "bad", "preset"),
        ("no preset, no rules", {}, "bad", ("preset", "rules")),
        ("rules=[]", dict(rules=[]), "either", "rules"),
        ("rules=['attention']", dict(rules=["attention"]), "either", "rules"),
        ("rules=[3]", dict(rules=[3]), "bad", "rules"),
        # rules as mappings: a bad Rule(...) raises when it is built, which must happen inside the case
        ("rules=Rule('x')", dict(rules=[{"scheme": "x"}]), "bad", ("scheme", "rules")),
        ("rule option bad", dict(rules=[mj.Rule("attention", {"alpha": NAN})]), "bad", "alpha"),
        ("rule option unknown", dict(rules=[mj.Rule("attention", {"nonsense": 1})]), "bad", "nonsense"),
        ("rule include '['", dict(rules=[{"scheme": "attention", "include": "["}]), "bad", "include"),
        ("option for no rule", dict(preset="vit", sigma_start=1.0), "bad", "sigma_start"),
        ("alpha nan", dict(preset="vit", alpha=NAN), "bad", "alpha"),
        ("alpha 1e12 on float16 tree", dict(preset="vit", alpha=1e12, _tree="f16"), "bad", ("alpha", "float16")),
        ("preset and rules", dict(preset="vit", rules=[mj.Rule("attention")]), "either", ("preset", "rules")),
        ("report='y'", dict(preset="vit", report="y"), "either", "report"),
        ("report=True", dict(preset="vit", report=True), "valid", ()),
    ):
        tree = VIT
        if kw.pop("_tree", None) == "f16":
            tree = jax.tree.map(lambda x: x.astype(jnp.float16), VIT)
        add("mimetic", label, lambda kw=kw, t=tree: mj.mimetic(t, K, **kw), exp, names)
        if "report" not in kw:
            # the plan runs the transforms' checks (option values, and each kernel's dtype on the
            # tree's shapes): it accepts and rejects what mimetic does
            add("mimetic_plan", label, lambda kw=kw, t=tree: mj.mimetic_plan(t, **kw), exp, names)
    for label, t in (("None", None), ("int", 3), ("int32 tree", jax.tree.map(lambda x: x.astype(jnp.int32), VIT))):
        add(
            "mimetic",
            f"tree={label}",
            lambda t=t: mj.mimetic(t, K, preset="vit"),
            "bad" if "int32" in label else "either",
            ("tree", "kernel", "dtype"),
        )
        add("mimetic_plan", f"tree={label}", lambda t=t: mj.mimetic_plan(t, preset="vit"), "either", ("tree", "kernel"))
    for label, kw, exp in (
        ("valid", dict(scheme="attention"), "valid"),
        ("scheme 'x'", dict(scheme="x"), "bad"),
        ("scheme 3", dict(scheme=3), "bad"),
        ("options 3", dict(scheme="conv", options=3), "bad"),
        ("include 3", dict(scheme="mlp", include=3), "bad"),
        ("options list", dict(scheme="mlp", options=[("mean", 0.1)]), "valid"),
    ):
        add("Rule", label, lambda kw=kw: mj.Rule(**kw), exp, ("scheme", "options", "include"))

    for label, t, exp in (
        ("ViT", VIT, "valid"),
        ("ConvMixer", CM, "valid"),
        ("Mamba", LM, "valid"),
        ("MHA bf16", mha(jnp.bfloat16), "valid"),
        ("None", None, "either"),
        ("int", 3, "either"),
        ("empty", {}, "either"),
        ("int32 tree", jax.tree.map(lambda x: x.astype(jnp.int32), VIT), "either"),
        ("NaN tree", jax.tree.map(lambda x: x * NAN, MHA), "either"),
    ):
        add(
            "analyze",
            f"tree={label}",
            lambda t=t: mj.analyze(t),
            exp,
            ("tree", "kernel", "dtype"),
            nonfinite_ok=label == "NaN tree",
        )
    for arg, v in (
        ("num_heads", 0),
        ("num_heads", 3),
        ("length", 0),
        ("length", 10**12),
        ("length", -1),
        ("ngroups", 0),
        ("stacked_axes", -1),
        ("depthwise_include", "["),
        ("mlp_include", 3),
        ("include", "("),
        ("layouts", 3),
        ("ssm_layouts", 3),
        ("config", "cfg"),
    ):
        add(
            "analyze",
            f"{arg}={v!r}",
            lambda arg=arg, v=v: mj.analyze(VIT, **{arg: v}),
            "either" if (arg, v) == ("length", 10**12) else "bad",
            (arg, arg.split("_")[-1]),  # mlp_include is checked as an include, ssm_layouts as layouts
        )
    AN = mj.analyze(VIT)
    add("plot_analysis", "valid", lambda: mj.plot_analysis(AN), "either", ("matplotlib",), nonfinite_ok=True)
    add("plot_analysis", "analysis=None", lambda: mj.plot_analysis(None), "bad", "analysis")
    add("plot_analysis", "analysis=dict", lambda: mj.plot_analysis({}), "bad", "analysis")
    add("plot_analysis", "title=3", lambda: mj.plot_analysis(AN, title=3), "either", "title", nonfinite_ok=True)
    add("Analysis", "length=0", lambda: mj.Analysis(length=0), "either", "length")
    return cases


# --------------------------------------------------------------------------- classification


def _nonfinite(out) -> bool:
    import jax
    import numpy as np

    try:
        leaves = jax.tree.leaves(out)
    except Exception:
        leaves = [out]
    for x in leaves:
        if isinstance(x, (float, np.floating)) and not math.isfinite(float(x)):
            return True
        if hasattr(x, "dtype") and hasattr(x, "shape"):
            try:
                if np.issubdtype(np.dtype(x.dtype), np.inexact) or str(x.dtype) == "bfloat16":
                    if not np.all(
                        np.isfinite(np.asarray(x, dtype=np.float64 if str(x.dtype) != "bfloat16" else np.float32))
                    ):
                        return True
            except TypeError:
                continue
    return False


def _materialize(out):
    """Block on every array of the result (so that a runtime error happens here)."""
    import jax

    try:
        for x in jax.tree.leaves(out):
            if hasattr(x, "block_until_ready"):
                x.block_until_ready()
    except TypeError:
        pass


def classify(case: Case) -> tuple[str, str]:
    try:
        out = case.thunk()
        _materialize(out)
    except Exception as err:  # the fuzz records every failure
        msg = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        tb = traceback.extract_tb(err.__traceback__)
        where = tb[-1].filename if tb else ""
        ours = "/mimetic_jax/" in where and "/experiments/" not in where
        kind = type(err).__name__
        if "XlaRuntimeError" in kind or "JaxRuntimeError" in kind or isinstance(err, MemoryError):
            return "crash", msg
        if case.expect == "valid":
            return "rejected", msg
        text = " ".join([str(err), *getattr(err, "__notes__", ())]).lower()
        named = any(n.lower() in text for n in case.names) if case.names else True
        # Python's own "unexpected keyword argument 'x'" names the argument as clearly as we could
        signature = isinstance(err, TypeError) and "unexpected keyword argument" in str(err)
        if isinstance(err, (ValueError, TypeError)) and named and (ours or signature):
            return "clear", msg
        passed = {"user": Path(where).resolve() == Path(__file__).resolve(), "flax": "/flax/" in where}
        if case.passthrough is not None and passed.get(case.passthrough) and named:
            return "clear", f"{msg} [{case.passthrough}'s own error, passed through]"
        return "unclear", f"{msg} [raised in {Path(where).name}:{tb[-1].lineno if tb else '?'}]"
    if not case.nonfinite_ok and _nonfinite(out):
        return "nan", "result holds NaN/inf"
    if case.expect == "bad":
        return "wrong", "bad input accepted"
    if case.check is not None:
        problem = case.check(out)
        if problem:
            return "wrong", problem
    return "ok", ""


# --------------------------------------------------------------------------- worker / driver


def worker(start: int, memory_gib: float) -> None:
    limit = int(memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import warnings

    warnings.simplefilter("ignore")
    import jax

    jax.config.update("jax_traceback_filtering", "off")
    cases = build_cases()
    for i in range(start, len(cases)):
        print(json.dumps({"i": i, "started": True}), flush=True)
        t = time.perf_counter()
        outcome, detail = classify(cases[i])
        print(
            json.dumps({"i": i, "outcome": outcome, "detail": detail, "s": round(time.perf_counter() - t, 3)}),
            flush=True,
        )


def run_all(timeout: float, memory_gib: float, limit: int | None) -> list[dict]:
    import jax  # noqa: F401 - the case list, for labels

    cases = build_cases()
    n = len(cases) if limit is None else min(limit, len(cases))
    results: dict[int, dict] = {}
    start = 0
    while start < n:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(start), "--memory-gib", str(memory_gib)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")},
        )
        current, deadline = None, time.monotonic() + 300  # the worker's startup (imports, the case list)
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # hang
                proc.kill()
                proc.wait()
                i = start if current is None else current
                results[i] = {"outcome": "crash", "detail": f"hang: no result after {timeout:.0f} s"}
                start = i + 1
                break
            line = proc.stdout.readline()
            if not line:  # the worker died
                proc.wait()
                i = start if current is None else current
                results[i] = {"outcome": "crash", "detail": f"worker died (exit {proc.returncode})"}
                start = i + 1
                break
            rec = json.loads(line)
            if rec.get("started"):
                current, deadline = rec["i"], time.monotonic() + timeout
                if current >= n:
                    proc.kill()
                    proc.wait()
                    start = n
                    break
                continue
            results[rec["i"]] = {"outcome": rec["outcome"], "detail": rec["detail"], "s": rec["s"]}
            print(
                f"[{rec['i'] + 1}/{n}] {rec['outcome']:8s} {cases[rec['i']].func}: {cases[rec['i']].label}",
                file=sys.stderr,
                flush=True,
            )
            start = rec["i"] + 1
            if start >= n:
                proc.kill()
                proc.wait()
                break
    return [
        {
            "func": c.func,
            "label": c.label,
            "expect": c.expect,
            **results.get(i, {"outcome": "crash", "detail": "never ran"}),
        }
        for i, c in enumerate(cases[:n])
    ]


def write(rows: list[dict], out: Path, seconds: float, memory_gib: float = 8.0) -> None:
    counts = Counter(r["outcome"] for r in rows)
    funcs = sorted({r["func"] for r in rows})
    summary = {
        "inputs": len(rows),
        "callables": len(funcs),
        "outcomes": {k: counts.get(k, 0) for k in OUTCOMES},
        "seconds": round(seconds, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    import _report  # the machine, as every result file records it (imported here: the workers never need it)

    machine = _report.machine()
    out.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "summary": summary, "cases": rows}, indent=1) + "\n"
    )
    lines = [
        "# Fuzz of the public API (issue 16)",
        "",
        f"{len(rows)} inputs to {len(funcs)} public callables, {seconds:.0f} s "
        "(`python benchmarks/fuzz_public_api.py`).",
        "",
        f"Machine: {machine.get('cpu_model')} ({machine.get('usable_cores')} usable cores, "
        f"{machine.get('mem_total_gib')} GiB, {machine.get('os')}); Python {machine.get('python')}, "
        f"JAX {machine.get('jax')}, Flax {machine.get('flax')} on {machine.get('backend')}; load average "
        f"{(machine.get('load_average_at_start') or ['?'])[0]} at the start; {machine.get('date_utc')}. Each case "
        f"ran in a worker process limited to {memory_gib:g} GiB of address space.",
        "",
        "| outcome | count | meaning |",
        "|---|---|---|",
    ]
    meaning = {
        "ok": "valid input, finite result of the right shape and dtype",
        "clear": "ValueError/TypeError raised by mimetic_jax, naming the argument (or an error passed through, below)",
        "unclear": "an error not naming the argument, of another type, or raised inside JAX/Python",
        "crash": "process died, XLA runtime error, or hang",
        "nan": "silent NaN/inf in the result",
        "wrong": "bad input accepted, or a valid result failing its check",
        "rejected": "valid input rejected",
    }
    for k in OUTCOMES:
        lines.append(f"| {k} | {counts.get(k, 0)} | {meaning[k]} |")
    passed = [r for r in rows if r["outcome"] == "clear" and "passed through]" in r["detail"]]
    if passed:
        lines += ["", "## Errors that are not ours, passed through unchanged (counted `clear`)", ""]
        lines += [f"- `{r['func']}`, {r['label']}: {r['detail']}" for r in passed]
    lines += ["", "## Cases that are not `ok` or `clear`", ""]
    bad = [r for r in rows if r["outcome"] not in ("ok", "clear")]
    if not bad:
        lines.append("None.")
    else:
        lines += ["| outcome | callable | input | detail |", "|---|---|---|---|"]
        for r in bad:
            detail = r["detail"].replace("|", "\\|")
            lines.append(f"| {r['outcome']} | `{r['func']}` | {r['label'].replace('|', '/')} | {detail} |")
    lines += [
        "",
        "## Per callable",
        "",
        "| callable | " + " | ".join(OUTCOMES) + " |",
        "|---|" + "---|" * len(OUTCOMES),
    ]
    for f in funcs:
        c = Counter(r["outcome"] for r in rows if r["func"] == f)
        lines.append(f"| `{f}` | " + " | ".join(str(c.get(k, 0)) for k in OUTCOMES) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--memory-gib", type=float, default=8.0, help="address-space limit of the worker")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds one case may take before it counts as a hang")
    ap.add_argument("--limit", type=int, default=None, help="run only the first N cases")
    ap.add_argument("--list", action="store_true", help="print the cases and exit")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "fuzz_public_api")
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker, args.memory_gib)
        return
    if args.list:
        cases = build_cases()
        for c in cases:
            print(f"{c.expect:6s} {c.func}: {c.label}")
        print(f"{len(cases)} cases, {len({c.func for c in cases})} callables", file=sys.stderr)
        return
    t = time.perf_counter()
    rows = run_all(args.timeout, args.memory_gib, args.limit)
    write(rows, args.out, time.perf_counter() - t, args.memory_gib)
    counts = Counter(r["outcome"] for r in rows)
    print(json.dumps({k: counts.get(k, 0) for k in OUTCOMES}))


if __name__ == "__main__":
    main()
