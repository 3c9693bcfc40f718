"""The one-call transforms on model code this project did not write.

transformers' Flax models (the 4.x line) built from small configs with random weights,
Equinox modules, and Flax's own linen/NNX modules: every block is found with no custom
layout, the new kernels are exactly the samplers' draws in the model's own orientation,
every other leaf is unchanged, and the model still runs.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mimetic_jax as mj
from mimetic_jax._tree import flatten

transformers = pytest.importorskip("transformers")
eqx = pytest.importorskip("equinox")

D, H, LAYERS = 32, 4, 2
KEY = jax.random.key(7)


class _ClipCompat(types.ModuleType):
    """``jax.numpy`` with the ``a_min``/``a_max`` keywords that transformers' T5 still passes to ``clip``."""

    def __init__(self) -> None:
        super().__init__("jnp_clip_compat")
        self.__dict__.update(jnp.__dict__)
        self.clip = lambda x, a_min=None, a_max=None: jnp.clip(x, a_min, a_max)


_ENCODER = {"hidden_size": D, "num_hidden_layers": LAYERS, "num_attention_heads": H, "intermediate_size": 64}
_VISION = {**_ENCODER, "image_size": 16, "patch_size": 4}
_TEXT = {**_ENCODER, "vocab_size": 50}

#: family -> (transformers model class, its config class, the config, input, output field)
_HF_MODELS = {
    "vit": ("FlaxViTModel", "ViTConfig", _VISION, "pixels", "last_hidden_state"),
    "bert": ("FlaxBertModel", "BertConfig", _TEXT, "ids", "last_hidden_state"),
    "roberta": ("FlaxRobertaModel", "RobertaConfig", _TEXT, "ids", "last_hidden_state"),
    "gpt2": (
        "FlaxGPT2LMHeadModel",
        "GPT2Config",
        {"n_embd": D, "n_layer": LAYERS, "n_head": H, "vocab_size": 50, "n_positions": 16},
        "ids",
        "logits",
    ),
    "llama": ("FlaxLlamaForCausalLM", "LlamaConfig", {**_TEXT, "num_key_value_heads": 2}, "ids", "logits"),
    "clip": ("FlaxCLIPVisionModel", "CLIPVisionConfig", _VISION, "pixels", "last_hidden_state"),
    "distilbert": (
        "FlaxDistilBertModel",
        "DistilBertConfig",
        {"dim": D, "n_layers": LAYERS, "n_heads": H, "hidden_dim": 64, "vocab_size": 50},
        "ids",
        "last_hidden_state",
    ),
    "albert": ("FlaxAlbertModel", "AlbertConfig", {**_TEXT, "embedding_size": 16}, "ids", "last_hidden_state"),
    "bloom": (
        "FlaxBloomModel",
        "BloomConfig",
        {"hidden_size": D, "n_layer": LAYERS, "n_head": H, "vocab_size": 50},
        "ids",
        "last_hidden_state",
    ),
}


def _hf(name: str, monkeypatch: pytest.MonkeyPatch):
    """A small transformers Flax model, its params and a forward function."""
    t = transformers
    ids = jnp.ones((1, 8), jnp.int32)
    if name == "t5":
        from transformers.models.t5 import modeling_flax_t5

        monkeypatch.setattr(modeling_flax_t5, "jnp", _ClipCompat())
        m = t.FlaxT5Model(t.T5Config(d_model=D, d_kv=8, num_heads=H, d_ff=64, num_layers=LAYERS, vocab_size=50), seed=0)
        return m, lambda p: m(ids, decoder_input_ids=ids, params=p).last_hidden_state
    model_cls, config_cls, config, inputs, field = _HF_MODELS[name]
    m = getattr(t, model_cls)(getattr(t, config_cls)(**config), seed=0)
    x = {"ids": ids, "pixels": jnp.ones((1, 3, 16, 16))}[inputs]
    return m, lambda p: getattr(m(x, params=p), field)


#: family -> (expected layout name, attention blocks in the model)
FAMILIES = {
    "vit": ("HF_VIT", LAYERS),
    "bert": ("HF_BERT", LAYERS),
    "roberta": ("HF_BERT", LAYERS),
    "gpt2": ("GPT2", LAYERS),
    "llama": ("HF", LAYERS),
    "clip": ("HF_OUT_PROJ", LAYERS),
    "t5": ("T5", 3 * LAYERS),  # encoder self, decoder self and decoder cross attention
    "distilbert": ("DISTILBERT", LAYERS),
    "albert": ("ALBERT", 1),  # one layer group, shared by every layer
    "bloom": ("BLOOM", LAYERS),  # fused query_key_value packed per head
}


def _expected(block: mj.AttentionBlock, i: int, key: jax.Array) -> tuple[jax.Array, ...]:
    """Block ``i``'s kernels straight from the samplers, in Flax's 3-D layout."""
    k_qk, k_vo = jax.random.split(jax.random.fold_in(key, i))
    w_q, w_k = mj.query_key(
        k_qk, block.d_in, block.num_heads, block.head_dim, num_kv_heads=block.num_kv_heads, d_kv=block.d_kv
    )
    w_v, w_o = mj.value_output(
        k_vo, block.d_kv, block.num_heads, block.head_dim, num_kv_heads=block.num_kv_heads, d_out=block.d_out
    )
    return w_q, w_k, w_v, w_o


def _kernels(block: mj.AttentionBlock, flat: dict) -> tuple[np.ndarray, ...]:
    """Block kernels read back from a tree, in Flax's 3-D layout (the test's own reading of each layout)."""
    lay, h, g, k = block.layout, block.num_heads, block.num_kv_heads, block.head_dim

    def get(name):
        path = block.kernel_path(name)
        x = np.asarray(flat[tuple(path)], np.float32)
        return x.T if lay.transposed else x

    out = get(lay.out).reshape(h, k, block.d_out)
    if lay.kv is not None:  # query + fused key/value packed [k | v]
        kk, v = np.split(get(lay.kv), [g * k], axis=1)
        return get(lay.query).reshape(-1, h, k), kk.reshape(-1, g, k), v.reshape(-1, g, k), out
    if lay.qkv is None:
        q, kk, v = (get(n) for n in (lay.query, lay.key, lay.value))
        return (q.reshape(block.d_in, h, k), kk.reshape(block.d_kv, g, k), v.reshape(block.d_kv, g, k), out)
    fused = get(lay.qkv)
    if lay.packing == "heads":
        per_head = fused.reshape(-1, h, 3, k)
        return per_head[:, :, 0], per_head[:, :, 1], per_head[:, :, 2], out
    q, kk, v = np.split(fused, [h * k, (h + g) * k], axis=1)
    return q.reshape(-1, h, k), kk.reshape(-1, g, k), v.reshape(-1, g, k), out


#: Families whose case runs in the slow pass only (``.ci/run`` runs both): RoBERTa repeats BERT's layout;
#: ALBERT, CLIP and T5 are the costliest cases (5-15 s each on 2 cores).
SLOW_FAMILIES = {"roberta", "albert", "clip", "t5"}


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW_FAMILIES else f for f in sorted(FAMILIES)]
)
def test_transformers_flax_models_get_mimetic_attention_with_no_custom_layout(family, monkeypatch):
    model, forward = _hf(family, monkeypatch)
    params = model.params
    new = mj.mimetic_attention(params, KEY, config=model.config)
    blocks = mj.find_attention_blocks(params, config=model.config)
    layout, count = FAMILIES[family]
    assert len(blocks) == count and {b.layout.name for b in blocks} == {layout}
    old_flat, new_flat = flatten(params), flatten(new)
    changed = set()
    for i, block in enumerate(blocks):
        want = _expected(block, i, KEY)
        got = _kernels(block, new_flat)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, np.asarray(w), atol=1e-6)
        changed |= {tuple(block.kernel_path(n)) for n in block.layout.names}
        # the structure itself: every head's query·key diagonal is positive, value·out's negative
        q, kk, v, o = got
        grp = block.num_heads // block.num_kv_heads
        qk = [np.mean(np.diag(q[:, j] @ kk[:, j // grp].T)) for j in range(block.num_heads)]
        vo = np.mean(np.diag(np.einsum("dhk,hke->de", np.repeat(v, grp, axis=1), o)))
        assert min(qk) > 0.1 and vo < -0.05
    for path, x in old_flat.items():
        y = new_flat[path]
        assert y.shape == x.shape and y.dtype == x.dtype
        if path not in changed:
            np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    out = forward(new)
    assert np.all(np.isfinite(np.asarray(out)))
    scores = mj.analyze(new, config=model.config)  # analysis reads the same blocks, none skipped
    assert len(scores.attention) == count and min(min(a.qk_diag_ratio) for a in scores.attention) > 1


def test_mimetic_one_call_on_llama_takes_the_transform_options(monkeypatch):
    model, forward = _hf("llama", monkeypatch)
    new, rep = mj.mimetic(model.params, KEY, preset="vit", rules=[mj.Rule("mlp")], config=model.config, report=True)
    assert [e.scheme for e in rep.entries] == ["attention", "mlp"]
    assert len(rep.entries[0].paths) == 4 * LAYERS
    assert any("gate_proj" in p for p in rep.entries[1].paths)
    same, _ = mj.mimetic(
        model.params, KEY, preset="vit", rules=[mj.Rule("mlp")], num_heads=H, num_kv_heads=2, report=True
    )
    jax.tree.map(np.testing.assert_array_equal, same, new)
    assert np.isfinite(np.asarray(forward(new))).all()


def test_gpt2_kernels_stored_out_in_are_written_back_transposed(monkeypatch):
    model, _ = _hf("gpt2", monkeypatch)
    new = mj.mimetic_attention(model.params, KEY, config=model.config)
    c_attn = new["transformer"]["h"]["0"]["attn"]["c_attn"]["kernel"]
    assert c_attn.shape == (3 * D, D)  # (out, in), as GPT-2's Conv1D stores it
    q, k = np.asarray(c_attn[:D].T), np.asarray(c_attn[D : 2 * D].T)  # (in, H k)
    hd = D // H
    diag = [np.mean(np.diag(q[:, h * hd : (h + 1) * hd] @ k[:, h * hd : (h + 1) * hd].T)) for h in range(H)]
    assert min(diag) > 0.1


def test_bf16_transformers_params_keep_their_dtype_and_jit_gives_the_eager_arrays(monkeypatch):
    model, _ = _hf("bert", monkeypatch)
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), model.params)
    eager = mj.mimetic_attention(params, KEY, config=model.config)
    jitted = jax.jit(lambda p, k: mj.mimetic_attention(p, k, config=model.config))(params, KEY)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_errors_name_the_missing_out_projection_and_the_fix(monkeypatch):
    model, _ = _hf("bert", monkeypatch)
    with pytest.raises(ValueError, match=r"has query, key, value but no out.*AttentionLayout\(query='self/query'"):
        mj.mimetic_attention(model.params, KEY, layouts=[mj.FLAX])
    with pytest.raises(ValueError, match="pass num_heads=.*config=model.config"):
        mj.mimetic_attention(model.params, KEY)


# --------------------------------------------------------------------------- Equinox


def test_equinox_attention_is_found_by_its_module_and_returned_as_a_new_module():
    m = eqx.nn.MultiheadAttention(num_heads=H, query_size=D, key=jax.random.key(0))
    new = mj.mimetic_attention(m, KEY)
    assert type(new) is type(m) and new is not m
    (block,) = mj.find_attention_blocks(m)
    assert (block.layout.name, block.num_heads, block.head_dim) == ("EQUINOX", H, D // H)
    want = _expected(block, 0, KEY)
    got = (
        new.query_proj.weight.T.reshape(D, H, -1),
        new.key_proj.weight.T.reshape(D, H, -1),
        new.value_proj.weight.T.reshape(D, H, -1),
        new.output_proj.weight.T.reshape(H, -1, D),
    )
    for w, g in zip(want, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-6)
    x = jnp.ones((5, D))
    assert new(x, x, x).shape == (5, D)
    jitted = eqx.filter_jit(lambda mod, k: mj.mimetic_attention(mod, k))(m, KEY)
    np.testing.assert_array_equal(np.asarray(jitted.query_proj.weight), np.asarray(new.query_proj.weight))


def test_equinox_depthwise_conv_is_found_by_its_groups_and_mlp_by_its_first_linear():
    class Block(eqx.Module):
        mixer: eqx.nn.Conv2d
        stem: eqx.nn.Conv2d
        mlp: eqx.nn.MLP

        def __init__(self, key):
            k1, k2, k3 = jax.random.split(key, 3)
            self.mixer = eqx.nn.Conv2d(8, 8, 3, groups=8, padding=1, key=k1)
            self.stem = eqx.nn.Conv2d(1, 8, 3, key=k2)  # (8, 1, 3, 3) like a depthwise kernel, groups=1
            self.mlp = eqx.nn.MLP(8, 8, 16, 1, key=k3)

    block = Block(jax.random.key(0))
    sites = mj.find_depthwise_convs(block)
    assert [s.name for s in sites] == ["mixer/weight"] and sites[0].shape == (3, 3, 1, 8)
    new = mj.mimetic_conv(block, KEY, sigma_start=2.0, sigma_end=2.0)
    assert new.mixer.weight.shape == (8, 1, 3, 3)
    np.testing.assert_array_equal(np.asarray(new.stem.weight), np.asarray(block.stem.weight))
    # covariance-structured filters: neighbouring taps correlate (i.i.d. filters would not)
    taps = np.asarray(new.mixer.weight).reshape(8, 9)
    ref = mj.depthwise_conv_init(0, 1, sigma_start=2.0, sigma_end=2.0)(jax.random.fold_in(KEY, 0), (3, 3, 1, 8))
    np.testing.assert_allclose(taps, np.asarray(ref).reshape(9, 8).T, atol=1e-6)
    shifted = mj.mimetic_mlp(block, mean=0.25, relative=False)
    delta = np.asarray(shifted.mlp.layers[0].weight - block.mlp.layers[0].weight)
    np.testing.assert_allclose(delta, 0.25, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(shifted.mlp.layers[1].weight), np.asarray(block.mlp.layers[1].weight))


# --------------------------------------------------------------------------- Flax's own modules


def test_nnx_depthwise_conv_is_found_by_feature_group_count_whatever_its_name():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.mix = nnx.Conv(8, 8, (3, 3), feature_group_count=8, rngs=rngs)
            self.gray = nnx.Conv(1, 8, (3, 3), rngs=rngs)

    net = Net(nnx.Rngs(0))
    assert [s.name for s in mj.find_depthwise_convs(net)] == ["mix/kernel"]


def test_timm_style_fused_qkv_and_proj_are_recognized():
    import flax.linen as nn

    class Attn(nn.Module):
        @nn.compact
        def __call__(self, x):
            qkv = nn.Dense(3 * D, name="qkv")(x)
            return nn.Dense(D, name="proj")(qkv[..., :D])

    params = Attn().init(jax.random.key(0), jnp.ones((1, 4, D)))
    (block,) = mj.find_attention_blocks(params, num_heads=H)
    assert block.layout.name == "TIMM"
    new = mj.mimetic_attention(params, KEY, num_heads=H)
    got = _kernels(block, flatten(new))
    for w, g in zip(_expected(block, 0, KEY), got):
        np.testing.assert_allclose(g, np.asarray(w), atol=1e-6)


def test_per_head_packing_puts_each_heads_query_key_value_together():
    lay = mj.AttentionLayout(qkv="qkv", out="out", packing="heads", name="NEOX")
    k = D // H
    params = {"attn": {"qkv": {"kernel": jnp.zeros((D, 3 * D))}, "out": {"kernel": jnp.zeros((D, D))}}}
    new = mj.mimetic_attention(params, KEY, layouts=[lay], num_heads=H)
    fused = np.asarray(new["attn"]["qkv"]["kernel"]).reshape(D, H, 3, k)
    (block,) = mj.find_attention_blocks(params, layouts=[lay], num_heads=H)
    w_q, w_k, w_v, _ = _expected(block, 0, KEY)
    np.testing.assert_allclose(fused[:, :, 0], np.asarray(w_q), atol=1e-6)
    np.testing.assert_allclose(fused[:, :, 1], np.asarray(w_k), atol=1e-6)
    np.testing.assert_allclose(fused[:, :, 2], np.asarray(w_v), atol=1e-6)


def test_drop_in_linen_module_has_flax_parameters_and_starts_mimetic():
    import flax.linen as nn

    class Outer(nn.Module):
        cls: type

        @nn.compact
        def __call__(self, x):
            return self.cls(num_heads=H, name="attn")(x)

    x = jnp.ones((2, 8, D))
    ours = jax.jit(Outer(mj.nn.MultiHeadDotProductAttention).init)(jax.random.key(0), x)
    flax_ = Outer(nn.MultiHeadDotProductAttention).init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, flax_)
    np.testing.assert_array_equal(
        np.asarray(ours["params"]["attn"]["query"]["bias"]), np.asarray(flax_["params"]["attn"]["query"]["bias"])
    )
    (b,) = mj.find_attention_blocks(ours["params"]["attn"])
    q, kk, v, o = _kernels(b, flatten(ours["params"]["attn"]))
    assert min(np.mean(np.diag(q[:, h] @ kk[:, h].T)) for h in range(H)) > 0.1
    assert np.mean(np.diag(np.einsum("dhk,hke->de", v, o))) < -0.05
    y_ours = Outer(mj.nn.MultiHeadDotProductAttention).apply(ours, x)
    y_flax = Outer(nn.MultiHeadDotProductAttention).apply(ours, x)  # same forward function
    np.testing.assert_allclose(np.asarray(y_ours), np.asarray(y_flax), atol=1e-6)


def test_drop_in_nnx_module_starts_mimetic_and_runs():
    from flax import nnx

    m = mj.nn.MultiHeadAttention(H, D, rngs=nnx.Rngs(0), decode=False)
    ref = nnx.MultiHeadAttention(H, D, rngs=nnx.Rngs(0), decode=False)
    assert jax.tree.map(jnp.shape, nnx.state(m, nnx.Param)) == jax.tree.map(jnp.shape, nnx.state(ref, nnx.Param))
    q, kk = np.asarray(m.query.kernel[...]), np.asarray(m.key.kernel[...])
    assert min(np.mean(np.diag(q[:, h] @ kk[:, h].T)) for h in range(H)) > 0.1
    assert m(jnp.ones((2, 8, D))).shape == (2, 8, D)


def test_stacked_kernels_without_stacked_axes_get_a_hint():
    params = {"attn": {n: {"kernel": jnp.zeros((3, D, H, D // H))} for n in ("query", "key", "value")}}
    params["attn"]["out"] = {"kernel": jnp.zeros((3, H, D // H, D))}
    with pytest.raises(ValueError, match="pass stacked_axes=1"):
        mj.mimetic_attention(params, KEY)


def test_transposed_kernels_get_an_orientation_hint():
    params = {"attn": {"qkv": {"kernel": jnp.zeros((3 * D, D))}, "out": {"kernel": jnp.zeros((D, D))}}}
    with pytest.raises(ValueError, match=r"stored \(out, in\).*transposed=True"):
        mj.mimetic_attention(params, KEY, num_heads=H)


def test_bad_layouts_are_type_errors_naming_the_argument():
    with pytest.raises(TypeError, match="wrap it in a list"):
        mj.mimetic_attention({"a": jnp.zeros(2)}, KEY, layouts=mj.FLAX)
    with pytest.raises(TypeError, match=r"layouts\[1\] must be an AttentionLayout"):
        mj.find_attention_blocks({"a": jnp.zeros(2)}, layouts=[mj.FLAX, "HF"])
    with pytest.raises(TypeError, match="AttentionLayout out must be a name"):
        mj.AttentionLayout(out=("", "x"), qkv="qkv")
    assert mj.AttentionLayout(out=("output", "dense"), qkv="qkv").out == "output/dense"
    with pytest.raises(ValueError, match="config has no head count"):
        mj.heads_from_config({"hidden_size": 4})


def test_stacked_conv_and_mlp_kernels_without_stacked_axes_get_a_hint():
    params = {
        "block": {"depthwise": {"kernel": jnp.zeros((3, 5, 5, 1, 8))}, "mlp_in": {"kernel": jnp.zeros((3, 8, 16))}}
    }
    with pytest.raises(ValueError, match="pass stacked_axes=1"):
        mj.mimetic_conv(params, KEY)
    with pytest.raises(ValueError, match="pass stacked_axes=1"):
        mj.mimetic_mlp({"block": {"mlp_in": {"kernel": jnp.zeros((3, 8, 16))}}})


def test_a_closed_over_sharded_tree_is_transformed_under_jit_with_out_shardings():
    import flax.linen as nn
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
    params = nn.MultiHeadDotProductAttention(num_heads=H).init(jax.random.key(0), jnp.ones((1, 4, 64)))
    spec = jax.tree.map(lambda x: NamedSharding(mesh, P("d") if x.shape[0] % 8 == 0 else P()), params)
    sharded = jax.device_put(params, spec)
    out = jax.jit(lambda k: mj.mimetic_attention(sharded, k), out_shardings=spec)(KEY)  # closed over, not an argument
    eager = mj.mimetic_attention(params, KEY)
    for a, b, s in zip(jax.tree.leaves(out), jax.tree.leaves(eager), jax.tree.leaves(spec)):
        assert a.sharding.is_equivalent_to(s, a.ndim)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def _assert_documented_draws(params, new, config):
    """Every block's kernels are the samplers' draws with the block's own head count; nothing else moved."""
    blocks = mj.find_attention_blocks(params, config=config)
    new_flat = flatten(new)
    for i, block in enumerate(blocks):
        for w, g in zip(_expected(block, i, KEY), _kernels(block, new_flat)):
            np.testing.assert_allclose(g, np.asarray(w), atol=1e-6)
    return {b.name: b.num_heads for b in blocks}


def test_encoder_decoder_configs_give_each_side_its_own_head_count():
    t = transformers
    config = t.BartConfig(
        vocab_size=50, d_model=D, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=16,
    )  # fmt: skip
    m = t.FlaxBartModel(config, seed=0)
    new = mj.mimetic_attention(m.params, KEY, config=m.config)
    heads = _assert_documented_draws(m.params, new, m.config)
    # the decoder's cross-attention ("encoder_attn") is the decoder's: BART builds it with decoder_attention_heads
    assert heads == {
        "encoder/layers/0/self_attn": 4,
        "decoder/layers/0/self_attn": 2,
        "decoder/layers/0/encoder_attn": 2,
    }
    ids = jnp.ones((1, 8), jnp.int32)
    assert np.all(np.isfinite(np.asarray(m(ids, decoder_input_ids=ids, params=new).last_hidden_state)))
    with pytest.raises(ValueError, match="under neither 'encoder' nor 'decoder': pass num_heads="):
        mj.heads_from_config(m.config, "shared/attention")


@pytest.mark.slow  # CLIP: one of the costliest cases (as in SLOW_FAMILIES)
def test_composite_configs_are_read_in_the_sub_config_of_each_part():
    t = transformers
    text = {
        "vocab_size": 50,
        "hidden_size": D,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    vision = {"hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
    config = t.CLIPConfig(
        text_config=text, vision_config={**vision, "image_size": 16, "patch_size": 8}, projection_dim=16
    )
    m = t.FlaxCLIPModel(config, seed=0)
    new = mj.mimetic(m.params, KEY, preset="vit", config=m.config)
    heads = _assert_documented_draws(m.params, mj.mimetic_attention(m.params, KEY, config=m.config), m.config)
    assert heads == {"text_model/encoder/layers/0/self_attn": 2, "vision_model/encoder/layers/0/self_attn": 4}
    new_flat, old_flat = flatten(new), flatten(m.params)
    assert any(not np.array_equal(np.asarray(new_flat[p]), np.asarray(old_flat[p])) for p in old_flat)
    with pytest.raises(ValueError, match="composite .*text_config, vision_config"):
        mj.heads_from_config(m.config)


def _haiku_params():
    hk = pytest.importorskip("haiku")

    def forward(x, image):
        y = hk.MultiHeadAttention(num_heads=H, key_size=D // H, w_init=hk.initializers.VarianceScaling(1.0))(x, x, x)
        conv = hk.DepthwiseConv2D(channel_multiplier=1, kernel_shape=5, name="depthwise_conv")(image)
        return hk.nets.MLP([64, D], name="mlp")(y), conv

    model = hk.transform(forward)
    x, image = jnp.ones((1, 8, D)), jnp.ones((1, 8, 8, 16))
    return model, model.init(jax.random.key(0), x, image), (x, image)


def test_haiku_trees_are_found_through_their_slash_joined_module_keys():
    model, params, inputs = _haiku_params()
    assert "multi_head_attention/query" in params and "w" in params["multi_head_attention/query"]
    (block,) = mj.find_attention_blocks(params, num_heads=H)
    assert block.layout.name == "HAIKU" and block.name == "multi_head_attention"
    new = mj.mimetic_attention(params, KEY, num_heads=H)
    assert set(new) == set(params) and all(set(new[k]) == set(params[k]) for k in params)  # keys kept as Haiku's
    for w, g in zip(_expected(block, 0, KEY), _kernels(block, flatten(new))):
        np.testing.assert_allclose(g, np.asarray(w), atol=1e-6)
    np.testing.assert_array_equal(new["multi_head_attention/query"]["b"], params["multi_head_attention/query"]["b"])
    conv = mj.mimetic_conv(params, KEY)  # the depthwise conv's `w` (kh, kw, 1, C): Flax's order
    assert not np.array_equal(conv["depthwise_conv"]["w"], params["depthwise_conv"]["w"])
    assert np.array_equal(conv["mlp/~/linear_0"]["w"], params["mlp/~/linear_0"]["w"])
    assert [s.name for s in mj.find_mlp_layers(params)] == ["mlp/~/linear_0/w"]  # hk.nets.MLP's first layer
    out = model.apply(mj.mimetic(params, KEY, preset="vit", num_heads=H), None, *inputs)
    assert all(np.all(np.isfinite(np.asarray(o))) for o in out)


def test_gpt2_with_cross_attention_gets_the_documented_draws_in_both_blocks():
    t = transformers
    config = t.GPT2Config(n_embd=D, n_layer=LAYERS, n_head=H, vocab_size=50, n_positions=16, add_cross_attention=True)
    m = t.FlaxGPT2LMHeadModel(config, seed=0)
    blocks = mj.find_attention_blocks(m.params, config=m.config)
    assert [(b.name.split("/")[-1], b.layout.name) for b in blocks] == [
        ("attn", "GPT2"),
        ("crossattention", "GPT2_CROSS"),
    ] * LAYERS
    new = mj.mimetic_attention(m.params, KEY, config=m.config)
    assert set(_assert_documented_draws(m.params, new, m.config).values()) == {H}
    cross = new["transformer"]["h"]["0"]["crossattention"]
    assert cross["q_attn"]["kernel"].shape == (D, D) and cross["c_attn"]["kernel"].shape == (2 * D, D)  # (out, in)
    # everything but the attention kernels is unchanged (biases, layer norms, MLP, embeddings)
    changed = {tuple(b.kernel_path(n)) for b in blocks for n in b.layout.names}
    old_flat, new_flat = flatten(m.params), flatten(new)
    for path, x in old_flat.items():
        if path not in changed:
            np.testing.assert_array_equal(np.asarray(new_flat[path]), np.asarray(x))
    # one structure at a time: query_key=False keeps q_attn and the key half of c_attn, value_output=False the rest
    vo_only = flatten(mj.mimetic_attention(m.params, KEY, config=m.config, query_key=False))
    qk_only = flatten(mj.mimetic_attention(m.params, KEY, config=m.config, value_output=False))
    q_path, kv_path, o_path = (tuple(blocks[1].kernel_path(n)) for n in blocks[1].layout.names)
    for part, keep, draw in ((slice(0, D), vo_only, qk_only), (slice(D, 2 * D), qk_only, vo_only)):
        np.testing.assert_array_equal(np.asarray(keep[kv_path][part]), np.asarray(old_flat[kv_path][part]))
        np.testing.assert_array_equal(np.asarray(draw[kv_path][part]), np.asarray(new_flat[kv_path][part]))
    np.testing.assert_array_equal(np.asarray(vo_only[q_path]), np.asarray(old_flat[q_path]))
    np.testing.assert_array_equal(np.asarray(qk_only[o_path]), np.asarray(old_flat[o_path]))
    # the one-call preset takes the block, its plan is its report, the analysis reads it, the model runs
    one, rep = mj.mimetic(m.params, KEY, preset="vit", config=m.config, report=True)
    assert mj.mimetic_plan(m.params, preset="vit", config=m.config) == rep
    assert len(rep.entries[0].paths) == 5 * LAYERS and rep.entries[0].reason is None
    ref = mj.mimetic_attention(m.params, jax.random.fold_in(KEY, 0), config=m.config)  # rule 0: fold_in(key, 0)
    jax.tree.map(np.testing.assert_array_equal, one, ref)
    scores = mj.analyze(new, config=m.config)
    assert len(scores.attention) == 2 * LAYERS and min(min(a.qk_diag_ratio) for a in scores.attention) > 1
    assert max(a.vo_diag_mean for a in scores.attention) < -0.05
    ids, enc = jnp.ones((1, 8), jnp.int32), jnp.ones((1, 5, D))
    assert np.all(np.isfinite(np.asarray(m(ids, encoder_hidden_states=enc, params=new).logits)))


@pytest.mark.slow  # a ViT encoder and a GPT-2 decoder: about 25 s to build on the busy 2-core box
def test_vision_encoder_decoder_with_a_gpt2_decoder_reads_each_side():
    t = transformers
    enc = t.ViTConfig(
        hidden_size=48, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, image_size=16, patch_size=8
    )
    dec = t.GPT2Config(n_embd=D, n_layer=1, n_head=2, vocab_size=50, n_positions=16, add_cross_attention=True)
    m = t.FlaxVisionEncoderDecoderModel(t.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec), seed=0)
    new = mj.mimetic_attention(m.params, KEY, config=m.config)
    heads = _assert_documented_draws(m.params, new, m.config)
    assert heads == {
        "decoder/transformer/h/0/attn": 2,
        "decoder/transformer/h/0/crossattention": 2,
        "encoder/encoder/layer/0/attention": 4,
    }
    cross = mj.find_attention_blocks(m.params, config=m.config)[1]
    assert cross.layout.name == "GPT2_CROSS" and (cross.d_in, cross.d_kv) == (D, D)
    rep = mj.mimetic_plan(m.params, preset="vit", config=m.config)  # the one call takes all three blocks
    assert len(rep.entries[0].paths) == 2 + 3 + 4 and rep.entries[0].excluded == ()
    out = m(jnp.ones((1, 3, 16, 16)), decoder_input_ids=jnp.ones((1, 5), jnp.int32), params=new).logits
    assert np.all(np.isfinite(np.asarray(out)))
