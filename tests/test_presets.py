"""mimetic(tree, key, preset=...): report = changed paths, equality with the single transforms, jit, errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import mimetic_jax as mj
from mimetic_jax._tree import flatten, path_name
from mimetic_jax.experiments.models import ConvMixer, ConvNeXt, MambaLM, ViT

IMG = jnp.zeros((1, 8, 8, 1))
TOK = jnp.zeros((1, 8), jnp.int32)

MODELS = {
    "vit": (ViT(10, width=16, depth=2, num_heads=2), IMG),
    "convmixer": (ConvMixer(10, width=16, depth=2), IMG),
    "convnext": (ConvNeXt(10, dims=(8, 16), depths=(1, 1)), IMG),
    "mamba": (MambaLM(vocab_size=16, d_model=16, n_layer=2, d_state=4), TOK),
}

# The single transforms each preset stands for, in order; rule i gets fold_in(key, i).
SINGLE = {
    "vit": lambda t, k: mj.mimetic_attention(t, jax.random.fold_in(k, 0)),
    "convmixer": lambda t, k: mj.mimetic_conv(t, jax.random.fold_in(k, 0)),
    "convnext": lambda t, k: mj.mimetic_conv(t, jax.random.fold_in(k, 0)),
    "mamba": lambda t, k: mj.mimetic_ssm(t, jax.random.fold_in(k, 0)),
}


@functools.cache
def _shapes(name):
    model, x = MODELS[name]
    return jax.eval_shape(model.init, jax.random.key(0), x)


def _init(name, seed=0):
    """The reference model's parameter tree with i.i.d. normal values (``model.init`` itself is slow
    eagerly on this CPU box and its values do not matter for which paths a preset changes)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), s.dtype), _shapes(name))


@functools.cache
def _eager(preset):
    return mj.mimetic(_init(preset), jax.random.key(1), preset=preset, report=True)


def _changed(a, b) -> set[str]:
    fa, fb = flatten(a), flatten(b)
    assert fa.keys() == fb.keys()
    return {path_name(p) for p in fa if not np.array_equal(np.asarray(fa[p]), np.asarray(fb[p]))}


@pytest.mark.parametrize("preset", sorted(MODELS))
def test_preset_changes_exactly_the_reported_paths_and_equals_the_single_transforms(preset):
    params, key = _init(preset), jax.random.key(1)
    new, report = _eager(preset)
    assert _changed(params, new) == report.paths
    assert report.paths  # something happened
    assert [e.scheme for e in report.entries] == [r.scheme for r in mj.PRESETS[preset]]
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(SINGLE[preset](params, key))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert mj.mimetic_plan(params, preset=preset) == report
    assert str(report).count("\n") == len(report.paths) + len(report.entries) - 1  # one line per rule and per path


def test_mamba2_preset_changes_exactly_the_reported_paths():
    shapes = jax.eval_shape(
        MambaLM(vocab_size=16, d_model=16, n_layer=2, d_state=4, version=2, headdim=8).init, jax.random.key(0), TOK
    )
    params = jax.tree.map(lambda s: jnp.full(s.shape, 0.1, s.dtype), shapes)
    new, report = mj.mimetic(params, jax.random.key(1), preset="mamba", ngroups=1, report=True)
    assert _changed(params, new) == report.paths
    assert any(p.endswith("dt_bias") for p in report.paths)


def test_under_jit_with_out_shardings_equals_eager_and_returns_the_report():
    params = _init("vit")
    eager, rep = _eager("vit")
    mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    shardings = jax.tree.map(lambda a: NamedSharding(mesh, P("x") if a.shape[0] % 8 == 0 else P()), params)
    fn = jax.jit(lambda p, k: mj.mimetic(p, k, preset="vit", report=True), out_shardings=(shardings, None))
    jitted, rep_jit = fn(params, jax.random.key(1))
    assert rep_jit == rep
    for a, b, s in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), jax.tree.leaves(shardings)):
        assert a.sharding.is_equivalent_to(s, a.ndim)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_user_rules_follow_the_preset_with_their_own_key_and_patterns():
    params = _init("convmixer")
    key = jax.random.key(1)
    rules = [
        mj.Rule("mlp", {"mean": 0.5}, include="block_1/pointwise", name="late shift"),
        {"scheme": "emergence", "options": {"alpha": 2.0}},
    ]
    new, report = mj.mimetic(params, key, preset="convmixer", rules=rules, report=True)
    assert [e.label for e in report.entries] == ["conv", "late shift", "emergence"]
    assert report.entries[1].paths == ("params/block_1/pointwise/kernel",)
    assert report.by_path()["params/block_1/pointwise/kernel"] == ("late shift", "emergence")
    assert _changed(params, new) == report.paths
    ref = mj.emergence_scale(mj.mimetic_mlp(_eager("convmixer")[0], mean=0.5, include="block_1/pointwise"), alpha=2.0)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_rule_with_a_key_gets_fold_in_of_its_index():
    params = _init("convmixer")
    key = jax.random.key(2)
    new = mj.mimetic(
        params, key, rules=[mj.Rule("mlp"), mj.Rule("conv", {"sigma_start": 1.0}, include="block_0/depthwise")]
    )
    ref = mj.mimetic_conv(
        mj.mimetic_mlp(params), jax.random.fold_in(key, 1), sigma_start=1.0, include="block_0/depthwise"
    )
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_nnx_module_is_updated_in_place_by_rules():
    m = nnx.MultiHeadAttention(4, 32, decode=False, rngs=nnx.Rngs(0))
    before = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(m, nnx.Param)))
    out, report = mj.mimetic(m, jax.random.key(1), rules=[mj.Rule("attention", {"value_output": False})], report=True)
    assert out is m
    assert _changed(before, m) == report.paths == {"query/kernel", "key/kernel"}


def test_rules_alone_without_a_preset():
    params = _init("convmixer")
    new, report = mj.mimetic(params, jax.random.key(0), rules=[mj.Rule("mlp", {"mean": 0.5})], report=True)
    assert report.paths == {"params/block_0/pointwise/kernel", "params/block_1/pointwise/kernel"}
    assert _changed(params, new) == report.paths


def test_unknown_preset_is_an_error_listing_the_presets():
    with pytest.raises(ValueError, match=r"unknown preset 'resnet'.*convmixer"):
        mj.mimetic(_init("vit"), jax.random.key(0), preset="resnet")


def test_a_preset_rule_that_matches_nothing_is_skipped_and_reported():
    params = _init("vit")
    new, rep = mj.mimetic(params, jax.random.key(0), preset="convmixer", rules=[mj.Rule("mlp")], report=True)
    assert rep.entries[0].skipped and rep.entries[0].scheme == "conv"
    assert "matched nothing (preset rule, skipped)" in str(rep)
    assert not rep.entries[1].skipped  # the user's mlp rule still ran
    w0 = params["params"]["block_0"]["mlp_in"]["kernel"]
    w1 = new["params"]["block_0"]["mlp_in"]["kernel"]
    assert float(jnp.mean(w1 - w0)) == pytest.approx(mj.mlp.DEFAULT_MEAN * float(w0.std()), rel=1e-4)
    with pytest.raises(ValueError, match="no rule matches anything in the tree"):
        mj.mimetic(params, jax.random.key(0), preset="convmixer")
    with pytest.raises(ValueError, match="no rule matches anything in the tree"):
        mj.mimetic({"params": {"embed": {"embedding": jnp.zeros((4, 4))}}}, jax.random.key(0), preset="vit")


def test_a_user_rule_that_matches_nothing_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"rule 0 \('conv', scheme 'conv'.*matches nothing"):
        mj.mimetic(_init("vit"), jax.random.key(0), rules=[mj.Rule("conv")])
    with pytest.raises(ValueError, match=r"rule 1 \('late'.*include='block_9'.*matches nothing"):
        mj.mimetic(
            _init("vit"), jax.random.key(0), preset="vit", rules=[mj.Rule("attention", include="block_9", name="late")]
        )


def test_bad_rules_are_errors():
    params, key = _init("vit"), jax.random.key(0)
    with pytest.raises(ValueError, match="pass preset="):
        mj.mimetic(params, key)
    with pytest.raises(ValueError, match=r"Rule scheme must be one of \[.*\], got 'dropout'"):
        mj.Rule("dropout")
    with pytest.raises(ValueError, match=r"rules\[0\]: Rule scheme must be one of \[.*\], got 'dropout'"):
        mj.mimetic(params, key, rules=[{"scheme": "dropout"}])
    with pytest.raises(ValueError, match=r"Rule include='\[' is not a valid regular expression"):
        mj.Rule("mlp", include="[")
    with pytest.raises(TypeError, match=r"Rule exclude must be a regular expression \(a str\) or None, got 3"):
        mj.Rule("mlp", exclude=3)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['sigma'\] for scheme 'attention'"):
        mj.mimetic(params, key, rules=[mj.Rule("attention", {"sigma": 1.0})])
    with pytest.raises(ValueError, match="takes no include/exclude"):
        mj.mimetic(params, key, rules=[mj.Rule("emergence", include="block_0")])
    with pytest.raises(TypeError, match="wrap it in a list"):
        mj.mimetic(params, key, rules=mj.Rule("mlp"))
    with pytest.raises(TypeError, match=r"rules\[0\] must be a Rule or a mapping"):
        mj.mimetic(params, key, rules=["mlp"])


def _attention_tree(rng=np.random.default_rng(0)):
    """A 3-D (head-carrying) FLAX block and a flat one, whose head count nothing gives."""
    d, h, k = 16, 2, 8

    def block(q, o):
        return {n: {"kernel": jnp.asarray(0.2 * rng.standard_normal(s), jnp.float32)} for n, s in zip(
            ("query", "key", "value", "out"), (q, q, q, o))}  # fmt: skip

    return {"a_heads": block((d, h, k), (h, k, d)), "b_flat": block((d, h * k), (h * k, d))}


def test_a_preset_skips_a_block_it_cannot_express_and_reports_why():
    tree, key = _attention_tree(), jax.random.key(3)
    new, rep = mj.mimetic(tree, key, preset="vit", report=True)
    (entry,) = rep.entries
    assert entry.excluded == ("b_flat",) and "do not carry the head count" in entry.reason
    assert not entry.skipped and _changed(tree, new) == rep.paths == {
        f"a_heads/{n}/kernel" for n in ("query", "key", "value", "out")
    }
    text = str(rep)
    assert "skipped 1 block(s) it cannot express: b_flat" in text and "reason: attention block 'b_flat'" in text
    assert mj.mimetic_plan(tree, preset="vit") == rep
    # exactly the transform with those blocks excluded; the same under jit (the report is static data)
    ref = mj.mimetic_attention(tree, jax.random.fold_in(key, 0), exclude="^b_flat$")
    jax.tree.map(np.testing.assert_array_equal, new, ref)
    jitted, rep_jit = jax.jit(lambda t, k: mj.mimetic(t, k, preset="vit", report=True))(tree, key)
    assert rep_jit == rep
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), jitted, new)
    # a head count makes the block expressible again: nothing skipped
    _, rep2 = mj.mimetic(tree, key, preset="vit", num_heads=2, report=True)
    assert rep2.entries[0].excluded == () and rep2.entries[0].reason is None and len(rep2.paths) == 8


def test_explicit_rules_and_single_transforms_keep_raising_on_a_block_they_cannot_express():
    tree, key = _attention_tree(), jax.random.key(3)
    with pytest.raises(
        ValueError, match=r"rule 0 \('attention', scheme 'attention'\): attention block 'b_flat'.*num_heads="
    ):
        mj.mimetic(tree, key, rules=[mj.Rule("attention")])
    with pytest.raises(ValueError, match=r"rule 0 .*'b_flat'"):
        mj.mimetic_plan(tree, rules=[mj.Rule("attention")])
    with pytest.raises(ValueError, match=r"attention block 'b_flat'.*do not carry the head count"):
        mj.mimetic_attention(tree, key)
    # a preset all of whose blocks are skipped changes nothing: an error that gives the reason
    with pytest.raises(
        ValueError, match=r"no rule matches anything.*skipped every block it found: attention block 'b_flat'"
    ):
        mj.mimetic({"b_flat": tree["b_flat"]}, key, preset="vit")


def test_call_include_and_exclude_narrow_every_rule_that_takes_patterns():
    params, key = _init("vit"), jax.random.key(1)
    _, full = mj.mimetic(params, key, preset="vit", rules=[mj.Rule("mlp")], report=True)
    new, rep = mj.mimetic(params, key, preset="vit", rules=[mj.Rule("mlp")], include="block_1", report=True)
    for whole, part in zip(full.entries, rep.entries):
        assert part.paths and set(part.paths) == {p for p in whole.paths if "block_1" in p}
    assert _changed(params, new) == rep.paths
    assert mj.mimetic_plan(params, preset="vit", rules=[mj.Rule("mlp")], include="block_1") == rep
    # the same as the single transforms with the patterns given to each
    ref = mj.mimetic_mlp(
        mj.mimetic_attention(params, jax.random.fold_in(key, 0), include="block_1"), include="block_1/mlp_in"
    )
    jax.tree.map(np.testing.assert_array_equal, new, ref)
    # a rule's own exclude and the call's both exclude; its own include and the call's must both match
    _, rep = mj.mimetic(
        params, key, preset="vit", rules=[mj.Rule("mlp", exclude="block_0"), mj.Rule("attention", include="attn")],
        include="params/", exclude="block_1/attn", report=True,
    )  # fmt: skip
    assert rep.entries[0].paths == rep.entries[2].paths and all("block_0/attn" in p for p in rep.entries[0].paths)
    assert rep.entries[1].paths == ("params/block_1/mlp_in/kernel",)
    with pytest.raises(
        ValueError,
        match=r"rule 1 \('mlp'.*exclude='block_0'; the call's include=None, exclude='block_1'\) matches nothing",
    ):
        mj.mimetic(params, key, preset="vit", rules=[mj.Rule("mlp", exclude="block_0")], exclude="block_1")


def test_call_patterns_are_checked_and_need_a_rule_that_takes_them():
    params, key = _init("vit"), jax.random.key(0)
    with pytest.raises(ValueError, match=r"include='\[' is not a valid regular expression"):
        mj.mimetic(params, key, preset="vit", include="[")
    with pytest.raises(TypeError, match=r"exclude must be a regular expression \(a str\) or None, got 3"):
        mj.mimetic_plan(params, preset="vit", exclude=3)
    with pytest.raises(TypeError, match=r"include=/exclude= but no rule's transform takes patterns"):
        mj.mimetic(params, key, rules=[mj.Rule("emergence", {"alpha": 2.0})], include="block_0")


def test_a_mamba2_block_whose_group_count_is_ambiguous_is_skipped_by_the_preset_with_the_reason():
    shapes = jax.eval_shape(
        MambaLM(vocab_size=16, d_model=16, n_layer=1, d_state=8, version=2, headdim=8, ngroups=2).init,
        jax.random.key(0),
        TOK,
    )
    params = jax.tree.map(lambda s: jnp.full(s.shape, 0.1, s.dtype), shapes)  # G·N = 16 with 4 heads: G in 1, 2, 4
    with pytest.raises(ValueError, match=r"no rule matches anything.*skipped every block it found: .*pass ngroups="):
        mj.mimetic(params, jax.random.key(1), preset="mamba")
    with pytest.raises(ValueError, match=r"rule 0 \('ssm', scheme 'ssm'\): .*pass ngroups="):
        mj.mimetic(params, jax.random.key(1), rules=[mj.Rule("ssm")])
    _, rep = mj.mimetic(params, jax.random.key(1), preset="mamba", ngroups=2, report=True)
    assert rep.entries[0].paths and rep.entries[0].excluded == ()
