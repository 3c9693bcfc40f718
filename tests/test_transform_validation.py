"""Bad input to the whole-model transforms: a TypeError/ValueError naming the argument, before anything is drawn."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mimetic_jax as mj
from mimetic_jax.experiments.models import ConvMixer

KEY = jax.random.key(0)


def _attention(dtype=jnp.float32):
    params = nn.MultiHeadDotProductAttention(num_heads=2).init(KEY, jnp.ones((1, 4, 16)))
    return jax.tree.map(lambda x: x.astype(dtype), params)


def _convmixer(dtype=jnp.float32):
    v = ConvMixer(10, width=8, depth=2).init(KEY, jnp.zeros((1, 8, 8, 1)))
    return jax.tree.map(lambda x: x.astype(dtype), v)


TRANSFORMS = {
    "attention": lambda tree, key: mj.mimetic_attention(tree, key),
    "conv": lambda tree, key: mj.mimetic_conv(tree, key),
    "mimetic": lambda tree, key: mj.mimetic(tree, key, preset="vit"),
}
TREES = {"attention": _attention, "conv": _convmixer, "mimetic": _attention}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize(
    "bad_key", [None, 0, np.zeros(2, np.int32), np.zeros(4, np.uint32)], ids=["None", "int", "int32[2]", "uint32[4]"]
)
def test_a_bad_key_is_a_type_error_naming_key(name, bad_key):
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        TRANSFORMS[name](TREES[name](), bad_key)


def test_a_batch_of_keys_is_a_value_error_pointing_at_vmap():
    with pytest.raises(ValueError, match="key must be a single PRNG key.*jax.vmap"):
        mj.mimetic_attention(_attention(), jax.random.split(KEY, 3))


@pytest.mark.parametrize("name", ["attention", "conv"])
def test_integer_kernels_are_rejected_instead_of_truncated(name):
    with pytest.raises(TypeError, match="kernel .* dtype must be a floating dtype"):
        TRANSFORMS[name](TREES[name](jnp.int32), KEY)


def test_half_precision_kernels_are_accepted_and_kept():
    for dtype in (jnp.bfloat16, jnp.float16):
        out = mj.mimetic_attention(_attention(dtype), KEY)
        assert {x.dtype for x in jax.tree.leaves(out)} == {jnp.dtype(dtype)}
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(out))


def test_include_and_exclude_must_be_valid_regular_expressions():
    with pytest.raises(ValueError, match=r"include='\[' is not a valid regular expression"):
        mj.mimetic_attention(_attention(), KEY, include="[")
    with pytest.raises(ValueError, match=r"exclude='\(' is not a valid regular expression"):
        mj.mimetic_conv(_convmixer(), KEY, exclude="(")
    with pytest.raises(TypeError, match="include must be a regular expression"):
        mj.find_mlp_layers(_convmixer(), include=3)


def test_head_counts_and_stacked_axes_are_checked_by_name():
    flat = {"attn": {n: {"kernel": jnp.zeros((16, 16))} for n in ("q_proj", "k_proj", "v_proj", "o_proj")}}
    with pytest.raises(ValueError, match="num_heads must be a positive int"):
        mj.mimetic_attention(flat, KEY, num_heads=0)
    with pytest.raises(ValueError, match="num_kv_heads must be a positive int"):
        mj.mimetic_attention(flat, KEY, num_heads=4, num_kv_heads=-1)
    with pytest.raises(ValueError, match="stacked_axes must be an int >= 0, got -1"):
        mj.mimetic_attention(flat, KEY, num_heads=4, stacked_axes=-1)
    with pytest.raises(ValueError, match="config has no head count"):
        mj.mimetic_attention(flat, KEY, config={"hidden_size": 16})


def test_an_option_no_rule_takes_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"option\(s\) \['sigma_start'\] that no rule's transform takes"):
        mj.mimetic(_attention(), KEY, rules=[mj.Rule("attention")], sigma_start=1.0)


def test_value_options_are_named_as_themselves():
    with pytest.raises(ValueError, match="value_alpha must be finite, got nan"):
        mj.mimetic_attention(_attention(), KEY, value_alpha=float("nan"))
    with pytest.raises(ValueError, match="value_beta must be finite, got inf"):
        mj.mimetic_attention(_attention(), KEY, value_beta=float("inf"))
    with pytest.raises(ValueError, match="sign must be one of"):
        mj.mimetic_attention(_attention(), KEY, sign=2)


def test_a_mean_that_overflows_a_half_precision_kernel_is_an_error():
    tree = {"block": {"mlp_in": {"kernel": jnp.zeros((4, 8), jnp.float16)}}}
    with pytest.raises(ValueError, match="mean overflows the output dtype float16"):
        mj.mimetic_mlp(tree, mean=7e4)


def test_the_key_is_checked_before_the_rules():
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        mj.mimetic({"nothing": jnp.zeros(2)}, None, preset="vit")


def test_finders_and_masks_name_bad_arguments():
    v = _convmixer()
    for fn in (mj.find_depthwise_convs, mj.find_mlp_layers, mj.filter_covariances, mj.freeze_mask):
        with pytest.raises(TypeError, match="include must be a regular expression"):
            fn(v, include=3)
        with pytest.raises(ValueError, match="stacked_axes must be an int >= 0"):
            fn(v, stacked_axes=-2)
    with pytest.raises(ValueError, match="unknown preset 'vitt'"):
        mj.mimetic_plan(v, preset="vitt")
    with pytest.raises(TypeError, match="tree must be a linen variable dict"):
        mj.find_ssm_blocks(7)
    with pytest.raises(ValueError, match="ngroups must be"):
        mj.find_ssm_blocks(v, ngroups=0)
    with pytest.raises(TypeError, match="AttentionLayout out must be a name"):
        mj.AttentionLayout(out=3, qkv="qkv")
    with pytest.raises(ValueError, match="packing must be 'qkv' or 'heads'"):
        mj.AttentionLayout(out="o", qkv="qkv", packing="interleaved")
    with pytest.raises(TypeError, match="transposed must be a bool"):
        mj.AttentionLayout(out="o", qkv="qkv", transposed="yes")


@pytest.mark.parametrize("which", ["alpha", "beta", "value_alpha", "value_beta"])
def test_alpha_beta_that_overflow_float16_kernels_are_errors_not_inf(which):
    pair = "value_alpha .* and value_beta" if which.startswith("value") else "alpha .* and beta"
    with pytest.raises(ValueError, match=rf"{pair} .* overflow the output dtype float16"):
        mj.mimetic_attention(_attention(jnp.float16), KEY, **{which: 1e12})
    out = mj.mimetic_attention(_attention(jnp.bfloat16), KEY, **{which: 1e12})
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(out))


def test_mimetic_ssm_alpha_that_overflows_float16_bc_kernels_is_an_error():
    from mimetic_jax.experiments.models import MambaLM

    params = MambaLM(vocab_size=8, d_model=8, n_layer=1, d_state=4).init(KEY, jnp.zeros((1, 4), jnp.int32))
    half = jax.tree.map(lambda x: x.astype(jnp.float16), params)
    with pytest.raises(ValueError, match=r"alpha .* and beta .* overflow the output dtype float16"):
        mj.mimetic_ssm(half, KEY, alpha=1e12)
    with pytest.raises(ValueError, match="alpha must be finite"):
        mj.mimetic_ssm(params, KEY, alpha=float("nan"))


def test_a_head_count_that_contradicts_kernels_carrying_heads_is_an_error_not_ignored():
    tree = _attention()  # linen (d, H=2, k) kernels
    with pytest.raises(ValueError, match="num_heads=3: the kernels carry 2 heads"):
        mj.mimetic_attention(tree, KEY, num_heads=3)
    with pytest.raises(ValueError, match="num_kv_heads=1: the kernels carry 2 heads"):
        mj.mimetic_attention(tree, KEY, num_kv_heads=1)
    with pytest.raises(ValueError, match="num_heads must be at most"):
        mj.mimetic_attention(tree, KEY, num_heads=10**12)
    out = mj.mimetic_attention(tree, KEY, num_heads=2)  # agreeing is fine
    assert jax.tree.structure(out) == jax.tree.structure(tree)


@pytest.mark.parametrize("scale", [1e160, 1e-200, 0.0])
def test_mimetic_conv_scale_has_depthwise_conv_inits_range(scale):
    # 1e160 used to raise OverflowError from scale**2
    with pytest.raises(ValueError, match="scale must"):
        mj.mimetic_conv(_convmixer(), KEY, scale=scale)


def test_mimetic_conv_scale_that_overflows_a_float16_kernel_is_an_error():
    with pytest.raises(ValueError, match="scale overflows the output dtype float16"):
        mj.mimetic_conv(_convmixer(jnp.float16), KEY, scale=1e4)


def test_mimetic_conv_names_the_bad_covariance_by_index():
    cov = np.asarray(mj.conv_filter_covariance(5, 1.0))  # ConvMixer's 5×5 depthwise kernels, two layers
    with pytest.raises(ValueError, match=r"covariances\[1\] .*positive semi-definite"):
        mj.mimetic_conv(_convmixer(), KEY, covariances=[cov, -np.eye(25)])
    with pytest.raises(TypeError, match="covariances must be None or a list"):
        mj.mimetic_conv(_convmixer(), KEY, covariances=3)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_, jnp.complex64])
def test_emergence_scale_rejects_non_float_kernels_instead_of_truncating(dtype):
    tree = {f"Dense_{i}": {"kernel": jnp.ones((3, 3), dtype)} for i in range(3)}
    with pytest.raises(TypeError, match="kernel 'Dense_0/kernel' dtype must be a floating dtype"):
        mj.emergence_scale(tree, alpha=2.0)


def test_mimetic_ssm_a_log_range_and_layouts_are_checked_by_name():
    from mimetic_jax.experiments.models import MambaLM

    params = MambaLM(vocab_size=8, d_model=8, n_layer=1, d_state=4).init(KEY, jnp.zeros((1, 4), jnp.int32))
    for bad in [(-8.0,), None, "ab", (-8.0, -6.0, -4.0)]:
        with pytest.raises(TypeError, match="a_log_range must be a pair"):
            mj.mimetic_ssm(params, KEY, a_log_range=bad)
    with pytest.raises(TypeError, match="got one SSMLayout; wrap it in a list"):
        mj.mimetic_ssm(params, KEY, layouts=mj.MAMBA1)
    for bad in (None, 3, []):
        with pytest.raises(TypeError, match="layouts must be a non-empty sequence of SSMLayout"):
            mj.find_ssm_blocks(params, layouts=bad)


def test_rule_options_must_be_a_mapping_or_pairs():
    with pytest.raises(TypeError, match="Rule options must be a mapping or a sequence of"):
        mj.Rule("conv", options=3)
    assert mj.Rule("mlp", options=[("mean", 0.1)]) == mj.Rule("mlp", options={"mean": 0.1})


def test_a_stacked_axes_that_hides_every_kernel_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"stacked_axes=5.*fit with stacked_axes=0: is stacked_axes=5 right\?"):
        mj.mimetic_conv(_convmixer(), KEY, stacked_axes=5)
    with pytest.raises(ValueError, match=r"no first MLP layer .*stacked_axes=5"):
        mj.mimetic_mlp({"block": {"mlp_in": {"kernel": jnp.ones((4, 8))}}}, stacked_axes=5)


# --------------------------------------------------------------------------- mimetic_plan checks option values

PLAN_BAD_OPTIONS = {
    # (tree, preset, rules, shared options, the transform called alone) -> its error names the option
    "attention alpha nan": ("attention", "vit", None, {"alpha": float("nan")}, "alpha must be finite"),
    "attention method": ("attention", "vit", None, {"method": "svd"}, "method must be one of"),
    "attention sign": ("attention", None, [{"scheme": "attention", "options": {"sign": 0}}], {}, "sign must be one of"),
    "attention distribution": ("attention", "vit", None, {"distribution": "cauchy"}, "distribution must be one of"),
    "attention alpha too large": ("attention", "vit", None, {"alpha": 1e30}, "alpha .* too large"),
    "conv sigma_start": ("conv", "convmixer", None, {"sigma_start": -1.0}, "sigma_start must be positive"),
    "conv scale": ("conv", "convmixer", None, {"scale": float("inf")}, "scale must be finite"),
    "conv displacement": ("conv", "convmixer", None, {"displacement": 3}, "displacement must be a function"),
    "mlp mean": ("conv", None, [{"scheme": "mlp", "options": {"mean": float("nan")}}], {}, "mean must be finite"),
    "mlp relative": ("conv", None, [{"scheme": "mlp", "options": {"relative": "yes"}}], {}, "relative must be True"),
}


@pytest.mark.parametrize("name", sorted(PLAN_BAD_OPTIONS))
def test_mimetic_plan_checks_option_values_with_the_transforms_own_checks(name):
    which, preset, rules, options, message = PLAN_BAD_OPTIONS[name]
    tree = TREES[which]()
    kinds = (TypeError, ValueError)
    with pytest.raises(kinds, match=message) as plan_err:
        mj.mimetic_plan(tree, preset=preset, rules=rules, **options)
    with pytest.raises(kinds, match=message) as call_err:
        mj.mimetic(tree, KEY, preset=preset, rules=rules, **options)
    # the same check, not a copy: the plan's message is the transform's own, behind the rule's name
    assert type(plan_err.value) is type(call_err.value)
    assert str(plan_err.value) == str(call_err.value)
    assert str(plan_err.value).startswith("rule 0 (")


def test_mimetic_plan_with_valid_options_still_matches_the_report():
    tree = _attention()
    plan = mj.mimetic_plan(tree, preset="vit", alpha=0.5, method="fast")
    _, report = mj.mimetic(tree, KEY, preset="vit", alpha=0.5, method="fast", report=True)
    assert plan == report and plan.entries[0].paths


def test_mimetic_plan_runs_the_checks_that_read_the_tree_on_its_shapes():
    tree = _attention(jnp.float16)
    with pytest.raises(ValueError, match=r"rule 0 \('attention'.*alpha \(1e\+12\) and beta .* float16") as plan_err:
        mj.mimetic_plan(tree, preset="vit", alpha=1e12)
    with pytest.raises(ValueError, match=r"alpha \(1e\+12\) and beta .* float16") as call_err:
        mj.mimetic(tree, KEY, preset="vit", alpha=1e12)
    assert str(plan_err.value).endswith(str(call_err.value))
    assert mj.mimetic_plan(tree, preset="vit", alpha=1e3).entries[0].paths  # within float16: planned


def test_mimetic_plan_leaves_an_nnx_module_untouched():
    from flax import nnx

    m = nnx.MultiHeadAttention(num_heads=2, in_features=16, decode=False, rngs=nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(m))
    assert mj.mimetic_plan(m, preset="vit").entries[0].paths
    with pytest.raises(ValueError, match="alpha must be finite"):
        mj.mimetic_plan(m, preset="vit", alpha=float("nan"))
    after = nnx.state(m)
    assert all(
        isinstance(x, jax.Array) and np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(after), jax.tree.leaves(before))
    )


def test_a_bad_pattern_is_an_error_even_where_no_path_is_searched():
    v = _convmixer()
    with pytest.raises(ValueError, match=r"depthwise_include='\[' is not a valid regular expression"):
        mj.analyze(v, depthwise_include="[")
    with pytest.raises(ValueError, match=r"include='\(' is not a valid regular expression"):
        mj.find_mlp_layers({"nothing": jnp.zeros(2)}, include="(")
