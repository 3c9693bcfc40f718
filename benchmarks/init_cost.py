"""Cost of a whole-model mimetic init against the default init, in one process.

Two models, built in Flax linen (only their parameters matter; ``model.init`` runs on a
tiny input whose shape does not change any parameter):

* **ViT-B/16**: patch embedding ``Conv 16×16×3→768``, class token, learned position
  embedding for 196+1 tokens (a parameter of fixed shape, sliced to the input), 12 blocks
  of pre-LN ``nn.MultiHeadDotProductAttention`` (12 heads, Flax ``query/key/value/out``
  kernels ``(768, 12, 64)``) and a ``Dense 768→3072→768`` MLP, final LayerNorm, 1000-way
  head. 86.6 M parameters. Init input: one 32×32 RGB image.
* **GPT-2-medium**: token embedding ``50257×1024``, position embedding ``1024×1024``, 24
  blocks of pre-LN causal attention written with flat ``nn.Dense`` projections
  ``q_proj/k_proj/v_proj/o_proj`` (``1024×1024`` kernels with biases, the Hugging Face
  layout; ``mimetic_attention(..., num_heads=16)``) and a ``Dense 1024→4096→1024`` MLP,
  final LayerNorm, output tied to the token embedding. 354.8 M parameters. Init input:
  one sequence of 8 tokens.

For each model, in one process: (a) ``jax.jit(lambda k: model.init(k, x))``, (b)
``jax.jit(lambda k: mimetic_attention(model.init(k, x), fold_in(k, 1), method=m))`` for
``m`` in ``fast`` and ``exact``. Trace, compile and first run are timed separately; then
the compiled functions are called in alternating rounds (``_report.time_jit_interleaved``:
a change of load on a shared machine hits every arm alike; ``exact``, much slower, only
in the first rounds) and the steady state is the median over the rounds. The ratios
mimetic/default are reported for the steady state and for the first call (trace +
compile + run). Target (issue 17): ``fast``/default <= 1.2.

Run: ``python benchmarks/init_cost.py [--quick]``.
"""

from __future__ import annotations

import dataclasses

import _report
import flax.linen as nn
import jax
import jax.numpy as jnp

from mimetic_jax import find_attention_blocks, mimetic_attention

TARGET_RATIO = 1.2

# --------------------------------------------------------------------------- models


class ViTBlock(nn.Module):
    dim: int
    heads: int
    mlp: int

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm(name="ln1")(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.dim, name="attn")(y)
        x = x + y
        y = nn.LayerNorm(name="ln2")(x)
        y = nn.Dense(self.mlp, name="fc1")(y)
        y = nn.Dense(self.dim, name="fc2")(nn.gelu(y))
        return x + y


class ViT(nn.Module):
    layers: int
    dim: int
    heads: int
    mlp: int
    patch: int = 16
    num_patches: int = 196
    num_classes: int = 1000

    @nn.compact
    def __call__(self, img):
        p = self.patch
        x = nn.Conv(self.dim, (p, p), strides=(p, p), padding="VALID", name="patch_embed")(img)
        b = x.shape[0]
        x = x.reshape(b, -1, self.dim)
        if x.shape[1] > self.num_patches:
            raise ValueError(f"input has {x.shape[1]} patches, the position embedding {self.num_patches}")
        cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, self.num_patches + 1, self.dim))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.dim)), x], axis=1)
        x = x + pos[:, : x.shape[1]]
        for i in range(self.layers):
            x = ViTBlock(self.dim, self.heads, self.mlp, name=f"block_{i}")(x)
        x = nn.LayerNorm(name="ln_f")(x)
        return nn.Dense(self.num_classes, name="head")(x[:, 0])


class CausalSelfAttention(nn.Module):
    dim: int
    heads: int

    @nn.compact
    def __call__(self, x):
        b, t, _ = x.shape
        k = self.dim // self.heads
        q = nn.Dense(self.dim, name="q_proj")(x).reshape(b, t, self.heads, k)
        kk = nn.Dense(self.dim, name="k_proj")(x).reshape(b, t, self.heads, k)
        v = nn.Dense(self.dim, name="v_proj")(x).reshape(b, t, self.heads, k)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, kk) / jnp.sqrt(k).astype(x.dtype)
        mask = jnp.tril(jnp.ones((t, t), bool))
        w = jax.nn.softmax(jnp.where(mask, logits, -1e9), axis=-1)
        y = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, t, self.dim)
        return nn.Dense(self.dim, name="o_proj")(y)


class GPTBlock(nn.Module):
    dim: int
    heads: int
    mlp: int

    @nn.compact
    def __call__(self, x):
        x = x + CausalSelfAttention(self.dim, self.heads, name="attn")(nn.LayerNorm(name="ln1")(x))
        y = nn.Dense(self.mlp, name="fc")(nn.LayerNorm(name="ln2")(x))
        return x + nn.Dense(self.dim, name="proj")(nn.gelu(y))


class GPT(nn.Module):
    layers: int
    dim: int
    heads: int
    mlp: int
    vocab: int
    context: int

    @nn.compact
    def __call__(self, tokens):
        wte = nn.Embed(self.vocab, self.dim, embedding_init=nn.initializers.normal(0.02), name="wte")
        wpe = nn.Embed(self.context, self.dim, embedding_init=nn.initializers.normal(0.01), name="wpe")
        x = wte(tokens) + wpe(jnp.arange(tokens.shape[1]))[None]
        for i in range(self.layers):
            x = GPTBlock(self.dim, self.heads, self.mlp, name=f"h_{i}")(x)
        return wte.attend(nn.LayerNorm(name="ln_f")(x))


@dataclasses.dataclass
class Case:
    name: str
    model: nn.Module
    x: jax.Array
    num_heads: int | None  # for mimetic_attention on flat kernels
    layout: str
    exact_repeats: int
    repeats: int


def cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case(
                "ViT-tiny (quick)",
                ViT(layers=2, dim=192, heads=3, mlp=768, num_patches=4, num_classes=10),
                jnp.zeros((1, 32, 32, 3)),
                None,
                "nn.MultiHeadDotProductAttention (query/key/value/out)",
                2,
                3,
            ),
            Case(
                "GPT-tiny (quick)",
                GPT(layers=2, dim=256, heads=4, mlp=1024, vocab=1000, context=128),
                jnp.zeros((1, 8), jnp.int32),
                4,
                "flat Dense q_proj/k_proj/v_proj/o_proj",
                2,
                3,
            ),
        ]
    return [
        Case(
            "ViT-B/16",
            ViT(layers=12, dim=768, heads=12, mlp=3072),
            jnp.zeros((1, 32, 32, 3)),
            None,
            "nn.MultiHeadDotProductAttention (query/key/value/out)",
            3,
            10,
        ),
        Case(
            "GPT-2-medium",
            GPT(layers=24, dim=1024, heads=16, mlp=4096, vocab=50257, context=1024),
            jnp.zeros((1, 8), jnp.int32),
            16,
            "flat Dense q_proj/k_proj/v_proj/o_proj",
            1,
            10,
        ),
    ]


def count(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


def run_case(case: Case, run: _report.Run, results: list[dict], methods: tuple[str, ...]) -> dict:
    model, x = case.model, case.x
    shapes = jax.eval_shape(lambda k: model.init(k, x), jax.random.key(0))
    blocks = find_attention_blocks(shapes, num_heads=case.num_heads)
    res: dict = {
        "model": case.name,
        "attention_layout": case.layout,
        "params": count(shapes),
        "attention_blocks": len(blocks),
        "block_sizes": [dict(d=b.d_in, heads=b.num_heads, head_dim=b.head_dim) for b in blocks[:1]],
        "timings": {},
    }
    results.append(res)  # partial results are visible to the deadlock watchdog
    key = jax.random.key(0)

    def default(k):
        return model.init(k, x)

    def mimetic(method):
        def f(k):
            return mimetic_attention(
                model.init(k, x), jax.random.fold_in(k, 1), method=method, num_heads=case.num_heads
            )

        return f

    _report.log(f"{case.name}: {res['params'] / 1e6:.1f} M params, {len(blocks)} attention blocks")
    fns = {"default": default, **{m: mimetic(m) for m in methods}}
    run.stage(f"{case.name}: {', '.join(fns)} (jit, {case.repeats} interleaved rounds)")

    def compiled(label, t):
        _report.log(
            f"  {label:8s} trace {t['trace_s']:.2f} s, compile {t['compile_s']:.2f} s, first run {t['first_run_s']:.2f} s"
        )

    timings = _report.time_jit_interleaved(
        fns,
        key,
        repeats=case.repeats,
        repeats_of={"exact": case.exact_repeats},
        on_compiled=compiled,
    )
    for label, t in timings.items():
        res["timings"][label] = t
        if label != "default":
            d = timings["default"]
            res[f"ratio_{label}_steady"] = t["median_s"] / d["median_s"]
            res[f"ratio_{label}_first_call"] = t["first_call_s"] / d["first_call_s"]
            res[f"ratio_{label}_steady_cpu"] = t["median_cpu_s"] / d["median_cpu_s"]
        _report.log(f"  {label:8s} median {t['median_s']:.3f} s over {t['repeats']}")
    return res


def markdown(results: list[dict]) -> str:
    rows = []
    for r in results:
        for label in ("default", "fast", "exact"):
            if label not in r["timings"]:
                rows.append([r["model"] if label == "default" else "", label, "not measured", "", "", "", "", "", ""])
                continue
            t = r["timings"][label]
            ratio_s = "1" if label == "default" else f"{r.get(f'ratio_{label}_steady', float('nan')):.2f}"
            ratio_f = "1" if label == "default" else f"{r.get(f'ratio_{label}_first_call', float('nan')):.2f}"
            flag = ""
            if label != "default" and f"ratio_{label}_steady" in r:
                flag = " ✅" if r[f"ratio_{label}_steady"] <= TARGET_RATIO else " ❌"
            rows.append(
                [
                    r["model"] if label == "default" else "",
                    "default `model.init`" if label == "default" else f"mimetic `{label}`",
                    _report.fmt_s(t["trace_s"]),
                    _report.fmt_s(t["compile_s"]),
                    _report.fmt_s(t["first_run_s"]),
                    _report.fmt_s(t["first_call_s"]),
                    f"{_report.fmt_s(t['median_s'])} (n={t['repeats']})",
                    ratio_s + flag,
                    ratio_f,
                ]
            )
    table = _report.md_table(
        [
            "model",
            "init",
            "trace s",
            "compile s",
            "first run s",
            "first call s (trace+compile+run)",
            "steady s (median)",
            "steady ratio vs default",
            "first-call ratio vs default",
        ],
        rows,
    )
    models = "\n".join(
        f"- **{r['model']}**: {r['params'] / 1e6:.1f} M parameters, {r['attention_blocks']} attention blocks "
        f"({r['attention_layout']}; d={r['block_sizes'][0]['d']}, H={r['block_sizes'][0]['heads']}, "
        f"k={r['block_sizes'][0]['head_dim']})."
        for r in results
    )
    return (
        f"{models}\n\nAll timings in one process, `jax.jit` of the whole init; mimetic = "
        "`mimetic_attention(model.init(k, x), fold_in(k, 1), method=m)` re-initializing every attention block's "
        "query/key/value/out kernels. `steady` = median of later calls of the compiled function (n repeats), "
        "the calls of the arms alternate round by round (`exact` only in the first rounds). "
        "`first call` = trace + XLA compile + first run. Target: steady ratio <= "
        f"{TARGET_RATIO} (✅ met, ❌ not met). The trace of `fast` includes the one-off host-side spectral template "
        "(NumPy SVDs of reference matrices, cached per shape).\n\n" + table + "\n"
    )


def main() -> None:
    def extra(p):
        p.add_argument("--methods", default="fast,exact", help="mimetic methods to time, in this order")
        p.add_argument("--models", default=None, help="comma-separated subset: vit,gpt")

    args = _report.parse_args(__doc__.splitlines()[0], extra)
    methods = tuple(m for m in args.methods.split(",") if m)
    run = _report.Run("init_cost", "Init cost: mimetic vs default whole-model init", args)
    results: list[dict] = []
    run.data.update({"target_ratio": TARGET_RATIO, "models": results})
    run.partial_markdown = lambda: markdown(results)
    chosen = cases(args.quick)
    if args.models:
        wanted = args.models.split(",")
        chosen = [c for c, tag in zip(chosen, ("vit", "gpt")) if tag in wanted]
    run.data["methods"] = list(methods)
    for c in chosen:
        run_case(c, run, results, methods)
    run.finish(markdown(results))


if __name__ == "__main__":
    main()
