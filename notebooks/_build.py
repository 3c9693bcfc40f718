"""Write the notebooks of this folder from the cell lists below (stored without outputs).

Run ``python notebooks/_build.py`` after editing a cell here; the ``.ipynb`` files are the
generated, committed artifacts (Colab opens them directly). The repository address has one
place, ``[project.urls] Repository`` in ``pyproject.toml`` (:func:`repository`): from it come
the Colab badges and what the setup cell installs outside a checkout; while there is none, the
notebooks have no badge and the setup cell installs ``mimetic_jax[cli]`` by name (it says how
to point it elsewhere). Every notebook has one code
cell tagged ``parameters`` (papermill convention) holding its budget; ``tests/test_notebooks.py``
runs each notebook with that cell overridden to a tiny budget.
"""

from __future__ import annotations

import pathlib
import re

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent
PYPROJECT = HERE.parent / "pyproject.toml"
BRANCH = "main"


def repository(pyproject: pathlib.Path = PYPROJECT) -> str | None:
    """The repository address, from its one place: ``[project.urls] Repository`` in ``pyproject.toml``.

    ``None`` while the project declares none (not yet published): then the notebooks carry no
    Colab badge and their setup cell installs the package by its name (see :func:`setup_cell`).
    """
    text = pyproject.read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the one key by hand
        section = re.search(r"(?ms)^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", text)
        match = section and re.search(r'(?m)^\s*"?Repository"?\s*=\s*"([^"]+)"', section.group(1))
        return match.group(1) if match else None
    return tomllib.loads(text).get("project", {}).get("urls", {}).get("Repository")


def requirement(repo: str | None) -> str:
    """What the setup cell installs outside a checkout: the repository by git when known, else the package name."""
    return f"mimetic_jax[cli] @ git+{repo}" if repo else "mimetic_jax[cli]"


def colab_url(repo: str | None, name: str) -> str | None:
    """The Colab address of ``notebooks/<name>.ipynb`` of a GitHub repository (``None`` otherwise)."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", repo or "")
    if not match:
        return None
    return f"https://colab.research.google.com/github/{match[1]}/{match[2]}/blob/{BRANCH}/notebooks/{name}.ipynb"


def setup_cell(repo: str | None) -> str:
    """The first code cell: install mimetic_jax when it is not importable (a fresh Colab runtime)."""
    if repo:
        where = f"from its repository, {repo}"
    else:
        where = "by its package name (this notebook was generated before the repository had an address)"
    return f'''# Setup: install mimetic_jax when it is not importable (a fresh Colab runtime); a checkout uses its copy.
# Outside a checkout it is installed {where}.
# To install it from elsewhere, set REQUIREMENT (or the environment variable MIMETIC_JAX_REQUIREMENT) to any
# pip requirement: "mimetic_jax[cli] @ git+https://<repository address>", a wheel, or a folder you uploaded.
import os
REQUIREMENT = os.environ.get("MIMETIC_JAX_REQUIREMENT", "{requirement(repo)}")
try:
    import mimetic_jax
except ImportError:
    if os.path.exists("../pyproject.toml"):  # running from notebooks/ of a checkout
        %pip install -q -e "..[cli]"
    else:  # Colab / anywhere else
        %pip install -q "{{REQUIREMENT}}"
    import importlib, site
    site.main(); importlib.invalidate_caches()  # see the fresh install without a kernel restart
    try:
        import mimetic_jax
    except ImportError:
        raise ImportError(f"mimetic_jax is not installed and pip could not install {{REQUIREMENT!r}} (see its "
                          "message above). Set REQUIREMENT in this cell to where the package is: "
                          '"mimetic_jax[cli] @ git+https://<repository address>", a wheel, or an uploaded '
                          "checkout folder.") from None

import jax
print(f"mimetic_jax {{mimetic_jax.__version__}}, JAX {{jax.__version__}}, backend: {{jax.default_backend()}}",
      jax.devices())'''


NNX_NOTE = (
    "Every transform used here takes a Flax linen params dict (as below), an `nnx.State`, or an "
    "`nnx.Module` (updated in place); `quickstart.ipynb` shows the NNX path."
)

PLOT_HELPER = '''import numpy as np
import matplotlib.pyplot as plt

def plot_curves(ax, steps, curves, title, ylabel="test accuracy (%)"):
    """curves: name -> (seeds, checkpoints) in [0, 1]: mean over seeds, ± std band (ddof=1) from 2 seeds."""
    for name, acc in curves.items():
        acc = 100 * np.asarray(acc)
        n, mean = acc.shape[0], acc.mean(0)
        ax.plot(steps, mean, marker="o", label=f"{name} (mean of {n} seeds)" if n > 1 else f"{name} (1 seed)")
        if n > 1:
            std = acc.std(0, ddof=1)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="training step", ylabel=ylabel, title=title)
    ax.legend()'''


def badge(name: str, repo: str | None) -> str:
    """The Colab badge and a blank line, or nothing while the repository address is unknown."""
    url = colab_url(repo, name)
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})\n\n" if url else ""


def notebook(name: str, title: str, intro: str, params: str, cells: list[tuple[str, str]]) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    nb.metadata["accelerator"] = "GPU"
    repo = repository()
    note = "" if name == "quickstart" else f"\n\n{NNX_NOTE}"
    nb.cells = [new_markdown_cell(f"# {title}\n\n{badge(name, repo)}{intro}{note}"), new_code_cell(setup_cell(repo))]
    p = new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells.append(
        new_markdown_cell(
            "Budget (small by default so that the notebook runs on a CPU in a few minutes; raise it on a GPU/TPU):"
        )
    )
    nb.cells.append(p)
    for kind, src in cells:
        nb.cells.append(new_markdown_cell(src) if kind == "md" else new_code_cell(src))
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name}-{i}"
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nbformat.validate(nb)
    nbformat.write(nb, HERE / f"{name}.ipynb")


NOTEBOOKS: dict = {}

# --------------------------------------------------------------------------------------------
NOTEBOOKS["quickstart"] = dict(
    title="mimetic_jax quickstart",
    intro="""Structured weight initializers for JAX/Flax, in one page: re-initialize the attention of a
layer *mimetically* (Flax linen and Flax NNX), initialize a model you already have in one call,
then train a small ViT on scikit-learn's digits with the default and the mimetic init, paired by
seed.

**Mimetic initialization** (Trockman & Kolter, *Mimetic Initialization of Self-Attention Layers*,
ICML 2023, arXiv:2305.09828): trained attention heads have query/key products with a positive
diagonal and value/output products with a negative one. The init draws each head's weights so that

$$W_q^{(h)} W_k^{(h)\\top} \\approx \\alpha_1 Z_h + \\beta_1 I, \\qquad W_v W_o \\approx \\alpha_2 Z - \\beta_2 I,$$

per head $h$ and per layer, with $Z$ random Gaussian matrices (entries $\\mathcal N(0, 1/d)$,
published $\\alpha_1 = \\beta_1 = 0.7$, $\\alpha_2 = \\beta_2 = 0.4$), by a low-rank
factorization of the right-hand side (`method="exact"`, the published construction).

Every transform of the package takes a linen params dict (returns a new one), an `nnx.State`
(returns a new one) or an `nnx.Module` (updated in place).""",
    params="STEPS = 150      # training steps\nSEEDS = 2        # paired seeds\nWIDTH, DEPTH, HEADS = 32, 2, 2",
    cells=[
        (
            "md",
            "## 1. One call on an attention layer\n\nFlax linen: initialize as usual, then transform the "
            "parameters (a pure function: a new tree, same structure).",
        ),
        (
            "code",
            """import jax.numpy as jnp
import flax.linen as nn
import mimetic_jax as mj

attn = nn.MultiHeadDotProductAttention(num_heads=HEADS)
x = jnp.ones((1, 16, WIDTH))
params = attn.init(jax.random.key(0), x)
mimetic = mj.mimetic_attention(params, jax.random.key(1))   # a new tree; same structure
print(jax.tree.map(jnp.shape, mimetic))""",
        ),
        ("md", "Flax NNX, Flax's recommended API: the same call on a module updates it in place."),
        (
            "code",
            """from flax import nnx

nnx_attn = nnx.MultiHeadAttention(num_heads=HEADS, in_features=WIDTH, decode=False, rngs=nnx.Rngs(0))
nnx_default_q = jnp.array(nnx_attn.query.kernel[...])          # a copy, to compare with
mj.mimetic_attention(nnx_attn, jax.random.key(1))               # in place
print("query kernel (d, heads, head dim):", nnx_attn.query.kernel.shape,
      "changed:", bool((nnx_attn.query.kernel[...] != nnx_default_q).any()))
print("the module still runs:", nnx_attn(x).shape)""",
        ),
        (
            "code",
            PLOT_HELPER
            + '''

def qk_product(q, k, head=0):
    """W_q^h W_k^hT of one head, from (d, heads, head dim) query and key kernels."""
    return np.asarray(q[:, head] @ k[:, head].T)

products = {
    "linen, default init": qk_product(params["params"]["query"]["kernel"], params["params"]["key"]["kernel"]),
    "linen, mimetic init": qk_product(mimetic["params"]["query"]["kernel"], mimetic["params"]["key"]["kernel"]),
    "NNX, mimetic init": qk_product(nnx_attn.query.kernel[...], nnx_attn.key.kernel[...]),
}
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), layout="constrained")
vmax = max(abs(m).max() for m in products.values())
for ax, (name, m) in zip(axes, products.items()):
    image = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set(title=f"{name}\\n$W_q W_k^T$, head 0 ({WIDTH}x{WIDTH})", xlabel="key feature", ylabel="query feature")
fig.colorbar(image, ax=axes, shrink=0.8)
plt.show()
for name, m in products.items():
    print(f"{name:20s} mean diagonal {np.diag(m).mean():+.3f}, mean |off-diagonal| "
          f"{np.abs(m - np.diag(np.diag(m))).mean():.3f}")''',
        ),
        (
            "md",
            """## 2. A model you already have, in one call: `mj.mimetic`

`mj.mimetic(tree, key, preset=...)` finds the parts each scheme of a preset applies to by their
names and shapes and re-draws only those. The `"vit"` preset: mimetic attention (every attention
block), then the MLP mean shift of the first MLP layer (`mj.mimetic_mlp`). `report=True` says
which leaves changed. Here a pre-LayerNorm transformer encoder written the usual way, first in
linen, then in NNX.""",
        ),
        (
            "code",
            """class Block(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, x):
        x = x + nn.MultiHeadDotProductAttention(self.heads, name="attention")(nn.LayerNorm()(x))
        h = nn.gelu(nn.Dense(4 * self.width, name="fc1")(nn.LayerNorm()(x)))
        return x + nn.Dense(self.width, name="fc2")(h)


class Encoder(nn.Module):
    width: int
    heads: int
    depth: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = Block(self.width, self.heads)(x)
        return x


encoder = Encoder(WIDTH, HEADS, DEPTH)
enc_params = encoder.init(jax.random.key(0), x)
enc_params, report = mj.mimetic(enc_params, jax.random.key(1), preset="vit", report=True)
print(report)""",
        ),
        (
            "code",
            """class NNXBlock(nnx.Module):
    def __init__(self, width, heads, *, rngs):
        self.norm1, self.norm2 = nnx.LayerNorm(width, rngs=rngs), nnx.LayerNorm(width, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(num_heads=heads, in_features=width, decode=False, rngs=rngs)
        self.fc1, self.fc2 = nnx.Linear(width, 4 * width, rngs=rngs), nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(nnx.gelu(self.fc1(self.norm2(x))))


class NNXEncoder(nnx.Module):
    def __init__(self, width, heads, depth, *, rngs):
        self.blocks = nnx.List([NNXBlock(width, heads, rngs=rngs) for _ in range(depth)])

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


nnx_encoder = NNXEncoder(WIDTH, HEADS, DEPTH, rngs=nnx.Rngs(0))
_, report = mj.mimetic(nnx_encoder, jax.random.key(1), preset="vit", report=True)   # in place
print(report)
print("output:", nnx_encoder(x).shape)""",
        ),
        (
            "md",
            """## 3. Default vs mimetic ViT on digits

`paired_inits` draws, per seed, one default init and the same tree with only its attention
kernels re-drawn mimetically; `train_models` trains all of them side by side (one `vmap`ped
program, same data order within a pair). The same comparison from the command line:
`mimetic-jax compare --seeds 2 --steps 150 --width 32 --depth 2 --heads 2`.""",
        ),
        (
            "code",
            """from mimetic_jax.experiments.models import ViT
from mimetic_jax.experiments.tasks import load_digits
from mimetic_jax.experiments.training import checkpoint_steps, paired_inits, stack_trees, train_models

data = load_digits()
model = ViT(data.num_classes, width=WIDTH, depth=DEPTH, num_heads=HEADS, patch_size=(2, 2))
default, mimetic_p, keys = paired_inits(model, data.x_train, list(range(SEEDS)))
history = train_models(model.apply, stack_trees(default + mimetic_p), jnp.stack(keys + keys), data,
                       steps=STEPS, learning_rate=3e-3, batch_size=64, eval_steps=checkpoint_steps(STEPS, 4))
acc = history.test_accuracy
curves = {"default": acc[:SEEDS], "mimetic": acc[SEEDS:]}
print(f"{history.seconds:.0f} s on {jax.default_backend()}; final test accuracy:",
      {k: f"{100 * v[:, -1].mean():.1f}%" for k, v in curves.items()})""",
        ),
        (
            "code",
            """fig, ax = plt.subplots(figsize=(5.5, 3.8))
plot_curves(ax, history.steps, curves,
            f"ViT d={WIDTH}, {DEPTH} blocks, {HEADS} heads on digits\\n{STEPS} steps, batch 64, lr 3e-3")
plt.show()""",
        ),
        (
            "md",
            """At a small budget the curves are noisy; the package's benchmarks (`benchmarks/`, README
"Results") report the measured effect with several seeds. Next: `vit.ipynb` (per-head structure,
`exact` vs `fast`), `convmixer.ipynb`, `mamba_recall.ipynb`, `emergence.ipynb`, `fuseinit.ipynb`.""",
        ),
    ],
)

# --------------------------------------------------------------------------------------------
NOTEBOOKS["vit"] = dict(
    title="Mimetic self-attention in a Vision Transformer",
    intro="""Trockman & Kolter, *Mimetic Initialization of Self-Attention Layers*, ICML 2023
(arXiv:2305.09828). In trained ViTs each head's query/key product $W_q^{(h)} W_k^{(h)\\top}$ has a
clearly positive diagonal (tokens attend to similar tokens) and the value/output product
$W_v^{(h)} W_o^{(h)}$ a negative one. Mimetic init draws, for every head,

$$W_q^{(h)} W_k^{(h)\\top} \\approx \\alpha_1 Z_h + \\beta_1 I \\;\\text{(one } Z_h \\text{ per head)}, \\qquad
W_v W_o \\approx \\alpha_2 Z - \\beta_2 I \\;\\text{(one } Z \\text{ per layer)}, \\qquad Z_{jk} \\sim \\mathcal N(0, 1/d),$$

and factors the right-hand sides at rank $d_{head}$: `method="exact"` (the published one: SVD
$A = U S V^\\top$ of each target, $W_q = U_k S_k^{1/2}$, $W_k = V_k S_k^{1/2}$, the best rank-$k$
approximation) or `method="fast"` (ours: no $d \\times d$ target is drawn; the product has the
exact recipe's expected spectrum, diagonal mean and norm). Published defaults
$\\alpha_1 = \\beta_1 = 0.7$, $\\alpha_2 = \\beta_2 = 0.4$.

Here: the per-head structure of a ViT before and after the transform, exact vs fast, and a
paired training comparison on digits.""",
    params="STEPS = 300\nSEEDS = 3\nWIDTH, DEPTH, HEADS = 32, 2, 2\nLR = 3e-3",
    cells=[
        (
            "code",
            PLOT_HELPER
            + """
import jax.numpy as jnp
import mimetic_jax as mj
from mimetic_jax.experiments.models import ViT, query_key_products, value_output_products
from mimetic_jax.experiments.tasks import load_digits
from mimetic_jax.experiments.training import checkpoint_steps, init_params, stack_trees, train_models

data = load_digits()
model = ViT(data.num_classes, width=WIDTH, depth=DEPTH, num_heads=HEADS, patch_size=(2, 2))
params = init_params(model, jax.random.key(0), data.x_train)
inits = {"default": params,
         "mimetic (exact)": mj.mimetic_attention(params, jax.random.key(1), method="exact"),
         "mimetic (fast)": mj.mimetic_attention(params, jax.random.key(1), method="fast")}
print("attention blocks found:", [b.path for b in mj.find_attention_blocks(params)])""",
        ),
        ("md", "## Structure: $W_q W_k^\\top$ of block 0, head 0 (top row) and $W_v W_o$ of block 0 (bottom row)"),
        (
            "code",
            """def diag_stats(m):
    m = np.asarray(m)
    off = m - np.diag(np.diag(m))
    return np.diag(m).mean(), np.abs(off).mean()

fig, axes = plt.subplots(2, len(inits), figsize=(3.2 * len(inits), 6.2))
for j, (name, p) in enumerate(inits.items()):
    for i, (label, prods) in enumerate([("$W_q W_k^T$", query_key_products(p)),
                                        ("$W_v W_o$", value_output_products(p))]):
        m = np.asarray(prods[0][0] if i == 0 else prods[0])   # q·k: block 0, head 0; v·o: block 0
        v = np.abs(m).max()
        axes[i, j].imshow(m, cmap="RdBu_r", vmin=-v, vmax=v)
        axes[i, j].set_title(f"{name}\\n{label}", fontsize=9)
        axes[i, j].axis("off")
plt.tight_layout(); plt.show()

for name, p in inits.items():
    qk = [diag_stats(h) for block in query_key_products(p) for h in block]
    vo = [diag_stats(block) for block in value_output_products(p)]
    print(f"{name:16s} q·k diag {np.mean([a for a, _ in qk]):+.3f} (|off| {np.mean([b for _, b in qk]):.3f})   "
          f"v·o diag {np.mean([a for a, _ in vo]):+.3f} (|off| {np.mean([b for _, b in vo]):.3f})")""",
        ),
        (
            "md",
            """## Training: default vs mimetic, paired by seed

Per seed, one `model.init` draw; the mimetic model is that draw with only the attention kernels
replaced; both see the same minibatches. All models train in one vmapped program
(`mimetic_jax.experiments.training.train_models`: AdamW, warm-up, cosine).""",
        ),
        (
            "code",
            """from mimetic_jax.experiments.training import paired_inits

seeds = list(range(SEEDS))
default, exact, keys = paired_inits(model, data.x_train, seeds, method="exact")
history = train_models(model.apply, stack_trees(default + exact), jnp.stack(keys + keys), data,
                       steps=STEPS, learning_rate=LR, batch_size=64, eval_steps=checkpoint_steps(STEPS, 5))
curves = {"default": history.test_accuracy[:SEEDS], "mimetic": history.test_accuracy[SEEDS:]}
diff = 100 * (curves["mimetic"][:, -1] - curves["default"][:, -1])
print(f"{history.seconds:.0f} s. Final accuracy: default {100 * curves['default'][:, -1].mean():.1f}%, "
      f"mimetic {100 * curves['mimetic'][:, -1].mean():.1f}%; paired difference {diff.mean():+.1f} pp "
      f"(per seed: {', '.join(f'{d:+.1f}' for d in diff)})")

fig, ax = plt.subplots(figsize=(5, 3.5))
plot_curves(ax, history.steps, curves, f"ViT {WIDTH}x{DEPTH}, {HEADS} heads, digits, {STEPS} steps, lr {LR:g}")
plt.show()""",
        ),
        (
            "md",
            """## Does training grow the structure by itself?

The diagonal of the default model's $W_q W_k^\\top$ after training, against its value at init
(the paper's observation is that trained heads move towards the mimetic pattern).""",
        ),
        (
            "code",
            """from mimetic_jax.experiments.training import unstack_tree

def mean_qk_diag(p):
    return np.mean([diag_stats(h)[0] for block in query_key_products(p) for h in block])

before = [mean_qk_diag(p) for p in default]
after = [mean_qk_diag(unstack_tree(history.params, i)) for i in range(SEEDS)]
print("default init, mean diag of W_q W_k^T: at init", np.round(before, 3), "after training", np.round(after, 3))""",
        ),
    ],
)

# --------------------------------------------------------------------------------------------
NOTEBOOKS["convmixer"] = dict(
    title="Covariance-structured depthwise filters in a ConvMixer",
    intro="""Trockman, Willmott & Kolter, *Understanding the Covariance Structure of Convolutional
Filters*, ICLR 2023 (arXiv:2210.03651). The depthwise filters of trained ConvMixers/ConvNeXts have
a structured covariance: neighbouring taps are correlated, more so in deeper layers. Drawing every
$k \\times k$ filter of layer $\\ell$ iid from $\\mathcal N(0, \\Sigma_\\ell)$ with a handcrafted
$\\Sigma_\\ell$ speeds up training, even with the filters **frozen**.

`mimetic_jax.mimetic_conv` uses (our reconstruction; the paper's exact construction is not
published, see SPEC §2)

$$\\Sigma_\\ell[(i,j),(i',j')] = s^2 \\exp\\Big(-\\frac{(i-i')^2 + (j-j')^2}{2\\sigma_\\ell^2}\\Big),
\\qquad \\sigma_\\ell = \\sigma_{start} + (\\sigma_{end} - \\sigma_{start})\\frac{\\ell}{L-1},$$

with $s^2$ the variance of Flax's default (`lecun_normal`) depthwise kernel. Only depthwise
kernels change; `freeze_mask` keeps them fixed during training.""",
    params="STEPS = 200\nSEEDS = 2\nWIDTH, DEPTH, KERNEL = 16, 3, 5\nLR = 3e-3\nTRAIN_FROZEN = True",
    cells=[
        (
            "code",
            PLOT_HELPER
            + """
import flax.linen as nn
import jax.numpy as jnp
import mimetic_jax as mj
from mimetic_jax.experiments.models import ConvMixer
from mimetic_jax.experiments.tasks import load_digits
from mimetic_jax.experiments.training import checkpoint_steps, stack_trees, train_models

data = load_digits()
model = ConvMixer(data.num_classes, width=WIDTH, depth=DEPTH, kernel_size=KERNEL)
variables = jax.jit(model.init)(jax.random.key(0), jnp.asarray(data.x_train[:1]))
structured = mj.mimetic_conv(variables, jax.random.key(1))
print("depthwise kernels:", [s.path for s in mj.find_depthwise_convs(variables)])""",
        ),
        (
            "md",
            """## What the init looks like

Left: a few filters of the last depthwise layer of the model. Right: the covariance of the centre
tap with every other tap (`mj.filter_covariance`), estimated from 4096 filters drawn by Flax's
default initializer and by the structured initializer of the first and last depthwise layer
(`mj.depthwise_conv_init`, with `mimetic_conv`'s default $\\sigma_{start}, \\sigma_{end}$, which
`benchmarks/conv_training.py` chose).""",
        ),
        (
            "code",
            """fig, axes = plt.subplots(2, 5, figsize=(11, 4.5))
for row, (name, v) in enumerate([("default", variables), ("covariance", structured)]):
    k = np.asarray(v["params"][f"block_{DEPTH - 1}"]["depthwise"]["kernel"])   # (kh, kw, 1, C)
    for j in range(3):
        axes[row, j].imshow(k[:, :, 0, j], cmap="RdBu_r")
        axes[row, j].set_title(f"{name}: filter {j}", fontsize=9)
    for j, layer in enumerate([0, DEPTH - 1]):
        from mimetic_jax.conv import DEFAULT_SIGMA_END, DEFAULT_SIGMA_START
        init = (nn.initializers.lecun_normal() if name == "default" else
                mj.depthwise_conv_init(layer, DEPTH, sigma_start=DEFAULT_SIGMA_START, sigma_end=DEFAULT_SIGMA_END))
        many = init(jax.random.key(layer), (KERNEL, KERNEL, 1, 4096))
        cov = np.asarray(mj.filter_covariance(many))
        centre = cov.shape[0] // 2
        axes[row, 3 + j].imshow(cov[centre].reshape(KERNEL, KERNEL), cmap="viridis")
        axes[row, 3 + j].set_title(f"{name}\\ncov(centre, ·), layer {layer}", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
plt.tight_layout(); plt.show()""",
        ),
        (
            "md",
            """## Training: default vs covariance init (BatchNorm statistics updated in training)

Per seed one `model.init` draw; the covariance model re-draws only its depthwise kernels; both
see the same minibatches.""",
        ),
        (
            "code",
            """def run(frozen):
    trees, keys = [], []
    for seed in range(SEEDS):
        init_key, scheme_key, data_key = jax.random.split(jax.random.key(seed), 3)
        v = jax.jit(model.init)(init_key, jnp.asarray(data.x_train[:1]))
        trees += [v, mj.mimetic_conv(v, scheme_key)]
        keys += [data_key, data_key]
    h = train_models(model.apply, stack_trees(trees), jnp.stack(keys), data, steps=STEPS, learning_rate=LR,
                     batch_size=32, eval_steps=checkpoint_steps(STEPS, 4), mutable=("batch_stats",),
                     frozen=mj.freeze_mask(trees[0]) if frozen else None)
    acc = h.test_accuracy.reshape(SEEDS, 2, -1)
    return h, {"default": acc[:, 0], "covariance": acc[:, 1]}

results = {"trained filters": run(False)}
if TRAIN_FROZEN:
    results["frozen filters"] = run(True)

fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
for ax, (title, (h, curves)) in zip(axes[0], results.items()):
    plot_curves(ax, h.steps, curves, f"ConvMixer {WIDTH}x{DEPTH} on digits, {title}, {STEPS} steps")
    print(title, {k: f"{100 * v[:, -1].mean():.1f}%" for k, v in curves.items()}, f"({h.seconds:.0f} s)")
plt.tight_layout(); plt.show()""",
        ),
        (
            "md",
            """The MLP mean shift of the same authors (`mj.mimetic_mlp(variables, mean=...)`, shifting
the first MLP layer's kernel by a constant) is a one-line addition to `run`; see
`benchmarks/conv_training.py` for the measured effect of both at several seeds.""",
        ),
    ],
)

# --------------------------------------------------------------------------------------------
NOTEBOOKS["mamba_recall"] = dict(
    title="Mimetic init helps Mamba learn to recall (MQAR)",
    intro="""Trockman, Harutyunyan, Kolter, Kumar & Bhojanapalli, *Mimetic Initialization Helps State
Space Models Learn to Recall*, arXiv:2410.11135. Unrolled, a selective SSM is a linear attention
with a decay mask:

$$y_i = \\sum_{j \\le i} (C_i \\cdot B_j) \\Big(\\prod_{k=j+1}^{i} e^{\\Delta_k A}\\Big) \\Delta_j x_j,
\\qquad B_t = W_B u_t,\\; C_t = W_C u_t.$$

`mimetic_jax.mimetic_ssm` makes a Mamba block *start* as causal linear attention:

1. **transition near identity**: $A_{log} \\sim U[-8, -4]$ (so $e^{\\Delta A} \\approx 1$: the state
   keeps what it saw) and $\\Delta = 1$ through the `dt_proj` bias;
2. **B/C coupling**: $W_C W_B^\\top \\approx \\alpha Z + \\beta I$ at rank $N$ (the state size), so
   $C_i \\cdot B_j \\approx \\beta\\, u_i^\\top u_j$: tokens attend to similar tokens.

The numeric values ($A_{log}$ range, $\\Delta$, $\\alpha = \\beta = 0.7$) are this project's (the
paper's are not available to us; SPEC §4). Task: multi-query associative recall (MQAR): key/value
pairs, then queries of the keys; the model must output each key's value.""",
    params=(
        "# At these values training takes more than 8 minutes on a (shared) 2-core CPU: use a GPU/TPU runtime,\n"
        "# or lower STEPS for a first look.\n"
        "STEPS = 300\nSEEDS = 2\nVERSION = 1          # Mamba-1 or Mamba-2\n"
        "# On Mamba-1 MQAR the learning rate matters as much as the init (README, SSM results):\n"
        "# at d_model 64 mimetic init solved it at LR 1e-3 in every seed and stalled at 3e-3.\n"
        "D_MODEL, LAYERS, D_STATE = 32, 2, 8\nSEQ_LEN, PAIRS, VOCAB = 32, 4, 32\nBATCH, LR = 64, 3e-3"
    ),
    cells=[
        (
            "code",
            PLOT_HELPER
            + """
import jax.numpy as jnp
import mimetic_jax as mj
from mimetic_jax.experiments.models import MambaLM
from mimetic_jax.experiments.tasks import sequence_dataset
from mimetic_jax.experiments.training import checkpoint_steps, stack_trees, train_models

data = sequence_dataset("mqar", seed=0, num_train=max(STEPS, 1) * BATCH, num_test=256,
                        seq_len=SEQ_LEN, num_pairs=PAIRS, vocab_size=VOCAB)
model = MambaLM(vocab_size=data.num_classes, d_model=D_MODEL, n_layer=LAYERS, d_state=D_STATE, version=VERSION)
print("an example (inputs / targets, -1 = not scored):")
print(data.x_train[0]); print(data.y_train[0])
params = jax.jit(model.init)(jax.random.key(0), jnp.asarray(data.x_train[:1]))
mimetic = mj.mimetic_ssm(params, jax.random.key(1))
print("Mamba blocks:", [b.path for b in mj.find_ssm_blocks(params)])""",
        ),
        (
            "md",
            """## What changes: how much of a token the state keeps $L$ steps later

For every state entry, $e^{-L\\,\\Delta\\, e^{A_{log}}}$ with $\\Delta = \\mathrm{softplus}(b_{dt})$
(block 0, $L$ = sequence length).""",
        ),
        (
            "code",
            """def retention(p, length=SEQ_LEN):
    mixer = p["params"]["layers_0"]["mixer"]
    a_log = np.asarray(mixer["A_log"])
    bias = np.asarray(mixer["dt_bias"] if "dt_bias" in mixer else mixer["dt_proj"]["bias"])
    delta = np.log1p(np.exp(bias))
    delta = delta[:, None] if a_log.ndim == 2 else delta   # Mamba-1: (channels, N); Mamba-2: (heads,)
    return np.exp(-length * delta * np.exp(a_log)).ravel()

fig, ax = plt.subplots(figsize=(5, 3.2))
bins = np.linspace(0, 1, 41)
for name, p in [("default", params), ("mimetic", mimetic)]:
    ax.hist(retention(p), bins=bins, alpha=0.6, label=name)
ax.set(xlabel=f"retention after {SEQ_LEN} steps", ylabel="state entries", title="block 0")
ax.legend(); plt.show()""",
        ),
        ("md", "## Training on MQAR, paired by seed (same base draw and data order)"),
        (
            "code",
            """trees, keys = [], []
for seed in range(SEEDS):
    init_key, scheme_key, data_key = jax.random.split(jax.random.key(seed), 3)
    p = jax.jit(model.init)(init_key, jnp.asarray(data.x_train[:1]))
    trees += [p, mj.mimetic_ssm(p, scheme_key)]
    keys += [data_key, data_key]
history = train_models(model.apply, stack_trees(trees), jnp.stack(keys), data, steps=STEPS, learning_rate=LR,
                       batch_size=BATCH, eval_steps=checkpoint_steps(STEPS, 4), eval_batch_size=256)
acc = history.test_accuracy.reshape(SEEDS, 2, -1)
curves = {"default": acc[:, 0], "mimetic": acc[:, 1]}
print(f"{history.seconds:.0f} s; final recall accuracy:", {k: f"{100 * v[:, -1].mean():.1f}%" for k, v in curves.items()})
fig, ax = plt.subplots(figsize=(5, 3.5))
plot_curves(ax, history.steps, curves, f"Mamba-{VERSION} on MQAR (L {SEQ_LEN}, {PAIRS} pairs), {STEPS} steps",
            ylabel="answer accuracy (%)")
plt.show()""",
        ),
        (
            "md",
            """Measured at larger budgets (several seeds, copying and MQAR, Mamba-1 and -2):
`benchmarks/ssm_recall.py` and the README's SSM section.""",
        ),
    ],
)

# --------------------------------------------------------------------------------------------
NOTEBOOKS["emergence"] = dict(
    title="Emergence-promoting initialization",
    intro="""Li, George & Silva, *Advancing Neural Network Performance through Emergence-Promoting
Initialization Scheme*, arXiv:2407.19044; the measure: Li et al., *A Categorical Framework for
Quantifying Emergent Effects in Network Topology*, arXiv:2311.17403.

**Scaling.** Draw the usual weights, then multiply the kernel of layer $k$ of $L$ (forward order)
by

$$c_k = \\alpha^{\\,k - p}, \\qquad p = \\lfloor L/2 \\rfloor,$$

so input-side layers shrink and output-side layers grow ($\\alpha > 1$; a third-party
implementation uses $\\alpha = 1.1$, the authors' repository holds no code). For a bias-free ReLU MLP of odd depth the function is unchanged (ReLU is
positively homogeneous), but the pattern of active units is not.

**Emergence measure.** With node $x$ *active* on an example when its value exceeds 0.05,

$$E = \\sum_{x \\text{ inactive}} \\; \\sum_{y \\text{ active},\\, x \\to y} \\big|\\text{paths from } y
\\text{ through active nodes}\\big|,$$

computed by `mimetic_jax.emergence_measure` (in log space for wide nets). Here: $\\log_{10} E$ at init
over an $\\alpha$ sweep, and training of the scaled MLPs vs $\\alpha = 1$ on digits.""",
    params="EPOCHS = 6\nSEEDS = 2\nALPHAS = [1.0, 1.1, 1.5, 2.0]\nWIDTH, HIDDEN_LAYERS = 128, 4\nLR, BATCH = 1e-3, 64",
    cells=[
        (
            "code",
            PLOT_HELPER
            + '''
import flax.linen as nn
import jax.numpy as jnp
import mimetic_jax as mj
from mimetic_jax.experiments.tasks import load_digits
from mimetic_jax.experiments.training import stack_trees, train_models


class MLP(nn.Module):
    widths: tuple

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for w in self.widths:
            x = nn.relu(nn.Dense(w, kernel_init=nn.initializers.he_normal())(x))
            self.sow("intermediates", "act", x)
        return nn.Dense(10, kernel_init=nn.initializers.he_normal())(x)


def activations(model, variables, x):
    """[input, hidden ReLU outputs..., logits]: the layers of the emergence measure."""
    logits, state = model.apply(variables, x, mutable=["intermediates"])
    return [np.asarray(x)] + [np.asarray(h) for h in state["intermediates"]["act"]] + [np.asarray(logits)]


data = load_digits()
model = MLP((WIDTH,) * HIDDEN_LAYERS)
x0, probe = jnp.asarray(data.x_train[:1]), jnp.asarray(data.x_train[:512])
variables = jax.jit(model.init)(jax.random.key(0), x0)
for layer in mj.emergence_layers(variables, alpha=1.5):
    print(layer)''',
        ),
        ("md", "## The measure at init, per $\\alpha$ (mean over 512 training images)"),
        (
            "code",
            """trees, keys, labels, log10_e = [], [], [], {}
for alpha in ALPHAS:
    for seed in range(SEEDS):
        init_key, data_key = jax.random.split(jax.random.key(seed))
        v = jax.jit(model.init)(init_key, x0)
        v = mj.emergence_scale(v, alpha=alpha) if alpha != 1.0 else v
        trees.append(v); keys.append(data_key); labels.append((alpha, seed))
        log10_e.setdefault(alpha, []).append(float(np.mean(mj.emergence_measure(
            activations(model, v, probe), log=True)) / np.log(10)))
spread = lambda e: f" ± {np.std(e, ddof=1):.2f} (std over {len(e)} seeds)" if len(e) > 1 else " (1 seed)"
for alpha, e in log10_e.items():
    print(f"alpha {alpha:4.2f}: log10 E at init = {np.mean(e):.2f}{spread(e)}")""",
        ),
        ("md", "## Training: every $\\alpha$, paired by seed (same base draw and data order)"),
        (
            "code",
            """steps_per_epoch = data.x_train.shape[0] // BATCH
steps = max(1, EPOCHS * steps_per_epoch)
history = train_models(model.apply, stack_trees(trees), jnp.stack(keys), data, steps=steps, learning_rate=LR,
                       batch_size=BATCH, warmup_steps=0,
                       eval_steps=sorted({0, min(steps, steps_per_epoch), steps}))
acc = history.test_accuracy.reshape(len(ALPHAS), SEEDS, -1)
curves = {f"α = {a:g}": acc[i] for i, a in enumerate(ALPHAS)}

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
plot_curves(axes[0], history.steps, curves, f"MLP {WIDTH}x{HIDDEN_LAYERS} on digits, {EPOCHS} epochs")
axes[1].errorbar(ALPHAS, [np.mean(log10_e[a]) for a in ALPHAS], marker="o",
                 yerr=[np.std(log10_e[a], ddof=1) for a in ALPHAS] if SEEDS > 1 else None)
axes[1].set(xlabel="α", ylabel="log10 E at init (mean over 512 images)",
            title="emergence measure" + (f" (± std, {SEEDS} seeds)" if SEEDS > 1 else " (1 seed)"))
plt.tight_layout(); plt.show()
for a, c in curves.items():
    print(f"{a}: final accuracy {100 * c[:, -1].mean():.1f}% (paired diff to α = 1: "
          f"{100 * (c[:, -1] - acc[0, :, -1]).mean():+.1f} pp)")""",
        ),
        (
            "md",
            """The package's own sweep (`benchmarks/emergence.py`: MLPs and CNNs, with and without
BatchNorm) found no $\\alpha$ whose effect on accuracy differs from no scaling beyond seed noise;
the default stays $\\alpha = 1.1$, the value of a third-party implementation.""",
        ),
    ],
)

# --------------------------------------------------------------------------------------------
NOTEBOOKS["fuseinit"] = dict(
    title="FuseInit: a shallower network from two fused layers of a trained deeper one",
    intro="""Ghods, Lan, Goldstein & Studer, *MSE-Optimal Neural Network Initialization via Layer Fusion*,
CISS 2020 (arXiv:2001.10509). Train a deep net, then replace two neighbouring layers
$f(x) = W_2^\\top \\sigma(W_1^\\top x + b_1) + b_2$ by the single affine layer that is closest to them
in mean squared error over the layer's inputs $x$:

$$(W, b) = \\arg\\min_{W, b} \\; \\mathbb E_x \\big\\| f(x) - (W^\\top x + b) \\big\\|^2
\\;\\Rightarrow\\; W = \\Sigma_{xx}^{-1} \\Sigma_{x f}, \\quad b = \\mathbb E f - W^\\top \\mathbb E x .$$

`mimetic_jax.fuse.fuse_params(deep, shallow, index, inputs=...)` does it from data (the authors'
recipe, with a small ridge), or in closed form for Gaussian inputs (`mean=`, `cov=`; ReLU moments of
a Gaussian); every other layer is copied. The fused shallow net then trains on.""",
    params="STEPS1 = 300       # deep-net training\nSTEPS2 = 200       # after fusion\nSEEDS = 2\nWIDTH = 64\nLR, BATCH = 3e-3, 64",
    cells=[
        (
            "code",
            PLOT_HELPER
            + """
import flax.linen as nn
import jax.numpy as jnp
from mimetic_jax import fuse
from mimetic_jax.experiments.tasks import load_digits
from mimetic_jax.experiments.training import checkpoint_steps, stack_trees, train_models, unstack_tree


class MLP(nn.Module):
    hidden: int       # hidden Dense layers
    width: int

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for _ in range(self.hidden):
            x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(10)(x)


data = load_digits()
deep, shallow = MLP(3, WIDTH), MLP(2, WIDTH)     # Dense_0..Dense_3  vs  Dense_0..Dense_2
x0 = jnp.asarray(data.x_train[:1])
seeds = list(range(SEEDS))
keys = [jax.random.split(jax.random.key(s))[1] for s in seeds]
deep_inits = [jax.jit(deep.init)(jax.random.key(s), x0) for s in seeds]
phase1 = train_models(deep.apply, stack_trees(deep_inits), jnp.stack(keys), data, steps=STEPS1,
                      learning_rate=LR, batch_size=BATCH, eval_steps=[STEPS1])
print(f"deep net after {STEPS1} steps: {100 * phase1.test_accuracy[:, -1].mean():.1f}% ({phase1.seconds:.0f} s)")""",
        ),
        (
            "md",
            """## Fuse deep layers `Dense_1`, `Dense_2` into shallow `Dense_1`

The pair's inputs are the trained deep net's `Dense_0` ReLU outputs on the training set.""",
        ),
        (
            "code",
            """def dense0_outputs(p, x):
    k, b = p["params"]["Dense_0"]["kernel"], p["params"]["Dense_0"]["bias"]
    return jax.nn.relu(jnp.asarray(x).reshape(len(x), -1) @ k + b)

trained = [unstack_tree(phase1.params, i) for i in range(SEEDS)]
fused, random_shallow = [], []
for s, p in zip(seeds, trained):
    h = dense0_outputs(p, data.x_train)
    base = jax.jit(shallow.init)(jax.random.key(100 + s), x0)
    fused.append(fuse.fuse_params(p, base, 1, inputs=h))
    random_shallow.append(base)
    mse = fuse.fusion_mse(p["params"]["Dense_1"]["kernel"], p["params"]["Dense_1"]["bias"],
                          p["params"]["Dense_2"]["kernel"], p["params"]["Dense_2"]["bias"],
                          mean=h.mean(0), cov=jnp.cov(h.T, bias=True))
    print(f"seed {s}: Gaussian-model MSE of the best linear fit of the pair: {float(mse):.4f}")

evaluate = lambda model, params: float((model.apply(params, jnp.asarray(data.x_test)).argmax(-1) == data.y_test).mean())
print("accuracy right after fusion, before any shallow training:",
      [f"{100 * evaluate(shallow, p):.1f}%" for p in fused], "(random shallow:",
      [f"{100 * evaluate(shallow, p):.1f}%" for p in random_shallow], ")")""",
        ),
        ("md", "## Phase 2: the shallow net from fusion vs from random init (same data order)"),
        (
            "code",
            """phase2 = train_models(shallow.apply, stack_trees(random_shallow + fused), jnp.stack(keys + keys), data,
                      steps=STEPS2, learning_rate=LR, batch_size=BATCH, eval_steps=checkpoint_steps(STEPS2, 4))
curves = {"shallow, random init": phase2.test_accuracy[:SEEDS], "shallow, FuseInit": phase2.test_accuracy[SEEDS:]}
fig, ax = plt.subplots(figsize=(5, 3.5))
plot_curves(ax, phase2.steps, curves, f"MLP on digits after fusion, {STEPS2} steps")
ax.axhline(100 * phase1.test_accuracy[:, -1].mean(), color="gray", ls="--", label="deep net (phase 1)")
ax.legend(); plt.show()
print({k: f"{100 * v[:, -1].mean():.1f}%" for k, v in curves.items()})""",
        ),
        (
            "md",
            """`benchmarks/fuse.py` measures this at several seeds on digits and MNIST-1D, for MLPs and
CNNs (`fuse.conv_conv` fuses two convolutions into one with a larger kernel).""",
        ),
    ],
)


def main() -> None:
    for name, spec in NOTEBOOKS.items():
        notebook(name, **spec)


if __name__ == "__main__":
    main()
