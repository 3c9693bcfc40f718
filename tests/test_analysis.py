"""analyze(): mimetic-initialized models show the specified structure, default-initialized ones do not."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mimetic_jax as mj
from mimetic_jax.experiments.models import ConvMixer, MambaLM, ViT, query_key_products, value_output_products
from mimetic_jax.ssm import A_LOG_RANGE, DELTA

WIDTH = 64  # d: default-init scores are N(0, 1/d), so |score| < 4/sqrt(d) = 0.5 at 4 sigma


@functools.cache
def _vit():
    params = jax.jit(ViT(10, width=WIDTH, depth=2, num_heads=2).init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    return params, mj.mimetic(params, jax.random.key(1), preset="vit")


def test_mimetic_vit_has_query_key_diagonal_and_negative_value_out_diagonal_and_default_does_not():
    default, mimetic = (mj.analyze(p) for p in _vit())
    bound = 4 / math.sqrt(WIDTH)
    # mimetic: W_q W_kᵀ ≈ 0.7 Z + 0.7 I, Z entries ~ N(0, 1/d): ratio ≈ sqrt(d) = 8
    assert min(r for a in mimetic.attention for r in a.qk_diag_ratio) > 4
    assert max(abs(r) for a in default.attention for r in a.qk_diag_ratio) < bound
    # mimetic: W_v W_o ≈ 0.4 Z − 0.4 I
    assert all(-0.5 < a.vo_diag_mean < -0.3 and a.vo_diag_ratio < -3 for a in mimetic.attention)
    assert all(abs(a.vo_diag_ratio) < bound for a in default.attention)


def test_attention_scores_equal_the_direct_products():
    params = _vit()[1]
    scores = mj.analyze(params).attention
    for s, qk, vo in zip(scores, query_key_products(params), value_output_products(params)):
        qk = np.asarray(qk, np.float64)
        np.testing.assert_allclose(s.qk_diag_mean, np.diagonal(qk, axis1=1, axis2=2).mean(1), rtol=1e-5)
        off = ~np.eye(WIDTH, dtype=bool)
        np.testing.assert_allclose(s.qk_diag_ratio, [np.diag(p).mean() / p[off].std() for p in qk], rtol=1e-5)
        np.testing.assert_allclose(s.vo_diag_mean, np.diag(np.asarray(vo, np.float64)).mean(), rtol=1e-5)


def test_stacked_layers_are_scored_like_separate_ones():
    params = _vit()[1]["params"]
    stacked = {
        "layers": {"attn": jax.tree.map(lambda *x: jnp.stack(x), params["block_0"]["attn"], params["block_1"]["attn"])}
    }
    got = mj.analyze(stacked, stacked_axes=1).attention
    want = mj.analyze(_vit()[1]).attention
    assert [s.name for s in got] == ["layers/attn[0]", "layers/attn[1]"]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.qk_diag_ratio, w.qk_diag_ratio, rtol=1e-6)
        assert g.vo_diag_mean == pytest.approx(w.vo_diag_mean, rel=1e-6)


def test_mlp_mean_is_the_shift_of_the_same_draw():
    default, mimetic = (mj.analyze(p).mlp for p in _vit())
    assert [m.name for m in mimetic] == ["params/block_0/mlp_in", "params/block_1/mlp_in"]
    for d, m in zip(default, mimetic):
        assert m.mean - d.mean == pytest.approx(mj.mlp.DEFAULT_MEAN, abs=1e-6)


def test_grouped_flat_attention_layout_matches_a_direct_computation():
    d, h, h_kv, k = 32, 4, 2, 8
    rng = np.random.default_rng(0)
    shapes = {"q_proj": (d, h * k), "k_proj": (d, h_kv * k), "v_proj": (d, h_kv * k), "o_proj": (h * k, d)}
    params = {
        "attn": {
            n: {"kernel": jnp.asarray(rng.standard_normal(s) / math.sqrt(s[0]), jnp.float32)} for n, s in shapes.items()
        }
    }
    params = mj.mimetic_attention(params, jax.random.key(0), num_heads=h, num_kv_heads=h_kv)
    (s,) = mj.analyze(params, num_heads=h).attention
    w = {n: np.asarray(v["kernel"], np.float64) for n, v in params["attn"].items()}
    q, kk = w["q_proj"].reshape(d, h, k), w["k_proj"].reshape(d, h_kv, k)
    v, o = w["v_proj"].reshape(d, h_kv, k), w["o_proj"].reshape(h, k, d)
    for head in range(h):
        p = q[:, head] @ kk[:, head // 2].T
        assert s.qk_diag_mean[head] == pytest.approx(np.diag(p).mean(), rel=1e-6)
    vo = sum(v[:, head // 2] @ o[head] for head in range(h))
    assert s.vo_diag_mean == pytest.approx(np.diag(vo).mean(), rel=1e-6)
    assert min(s.qk_diag_ratio) > 2 and s.vo_diag_ratio < -2


def test_mimetic_depthwise_filters_have_correlated_neighbouring_taps_and_default_ones_do_not():
    channels = 256  # one tap-pair correlation has std 1/sqrt(C) = 0.06; the means below average ~40 pairs
    params = jax.jit(ConvMixer(10, width=channels, depth=2).init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    default, mimetic = (
        mj.analyze(params).conv,
        mj.analyze(mj.mimetic(params, jax.random.key(1), preset="convmixer")).conv,
    )
    assert len(mimetic) == 2
    assert all(c.neighbour_corr > 0.08 and c.neighbour_corr > c.far_corr + 0.05 for c in mimetic)
    assert all(abs(c.neighbour_corr) < 0.05 and abs(c.far_corr) < 0.05 for c in default)


def test_mimetic_ssm_retains_its_state_as_specified_and_default_forgets_faster():
    length = 64
    params = jax.jit(MambaLM(vocab_size=16, d_model=16, n_layer=2, d_state=4).init)(
        jax.random.key(0), jnp.zeros((1, 8), jnp.int32)
    )
    new = mj.mimetic(params, jax.random.key(1), preset="mamba")
    default, mimetic = mj.analyze(params, length=length).ssm, mj.analyze(new, length=length).ssm
    for i, s in enumerate(mimetic):
        a_log = new["params"][f"layers_{i}"]["mixer"]["A_log"]
        assert s.retention_min == pytest.approx(float(mj.min_retention(a_log, DELTA, length)), rel=1e-4)
        # every channel decays no faster than exp(-Δ e^{max A_log}) per step
        assert s.decay_min >= math.exp(-DELTA * math.exp(A_LOG_RANGE[1])) - 1e-6
        assert s.bc_diag_ratio > 1
    assert all(d.retention_min < m.retention_min for d, m in zip(default, mimetic))


def test_plot_analysis_draws_one_panel_per_score_family():
    fig = mj.plot_analysis(mj.analyze(_vit()[1]), title="ViT")
    assert len(fig.axes) == 3  # query/key, value/out, MLP mean


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="analyze found no attention block"):
        mj.analyze({"params": {"embed": {"embedding": jnp.zeros((4, 4))}}})
    with pytest.raises(ValueError, match="length must be a positive int, got 0"):
        mj.analyze(_vit()[0], length=0)
    with pytest.raises(TypeError, match="plot_analysis takes an Analysis"):
        mj.plot_analysis({"attention": []})
    with pytest.raises(TypeError, match="tree must be a linen variable dict"):
        mj.analyze([1, 2])


def test_bfloat16_trees_keep_their_dtype_and_are_scored_in_float64():
    shapes = {"query": (32, 2, 16), "key": (32, 2, 16), "value": (32, 2, 16), "out": (2, 16, 32)}
    params = {"attn": {n: {"kernel": jnp.zeros(s, jnp.bfloat16)} for n, s in shapes.items()}}
    params = mj.mimetic(params, jax.random.key(0), rules=[mj.Rule("attention")])
    assert params["attn"]["query"]["kernel"].dtype == jnp.bfloat16
    (s,) = mj.analyze(params).attention
    assert min(s.qk_diag_ratio) > 2 and s.vo_diag_ratio < -2


def test_include_restricts_every_kind_to_the_matching_layer():
    got = mj.analyze(_vit()[1], include="block_1/")
    assert [a.name for a in got.attention] == ["params/block_1/attn"]
    assert [m.name for m in got.mlp] == ["params/block_1/mlp_in"]
    whole = mj.analyze(_vit()[1])
    assert got.attention[0] == whole.attention[1] and got.mlp[0] == whole.mlp[1]


def test_exclude_drops_the_matching_layer_of_every_kind():
    got = mj.analyze(_vit()[1], exclude="block_0")
    assert [a.name for a in got.attention] == ["params/block_1/attn"]
    assert [m.name for m in got.mlp] == ["params/block_1/mlp_in"]
    assert [m.name for m in mj.analyze(_vit()[1], exclude="mlp").mlp] == []


def test_include_and_exclude_filter_depthwise_convs():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 8))
    params = {f"block_{i}": {"depthwise": {"kernel": kernel}} for i in range(3)}
    names = [c.name for c in mj.analyze(params).conv]
    assert names == ["block_0/depthwise", "block_1/depthwise", "block_2/depthwise"]
    assert [c.name for c in mj.analyze(params, include=names[1]).conv] == [names[1]]
    assert [c.name for c in mj.analyze(params, exclude=names[1]).conv] == [names[0], names[2]]


def test_a_filter_that_leaves_nothing_is_an_error_naming_include_and_exclude():
    with pytest.raises(ValueError, match=r"include='nothing_matches', exclude=None.*change include/exclude"):
        mj.analyze(_vit()[1], include="nothing_matches")
    with pytest.raises(ValueError, match=r"include=None, exclude='block'"):
        mj.analyze(_vit()[1], exclude="block")
