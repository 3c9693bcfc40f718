"""Tests of the mimetic SSM init (mimetic_jax.ssm, mimetic_ssm), the reference Mamba blocks and the recall tasks."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mimetic_jax as mj
from mimetic_jax.experiments.models import MambaLM
from mimetic_jax.experiments.models.mamba import linear_recurrence, linear_recurrence_sequential
from mimetic_jax.experiments.tasks import copying, mqar, sequence_dataset
from mimetic_jax.experiments.training import cross_entropy


def _zeros_like_init(model):
    """Random normal parameters of ``model``'s shapes (cheap: no model init is run)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)


@pytest.fixture(scope="module", params=[1, 2])
def lm(request):
    model = MambaLM(vocab_size=16, d_model=16, n_layer=2, d_state=8, version=request.param)
    tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, 16)
    return model, jax.jit(model.init)(jax.random.key(0), tokens), tokens


# --------------------------------------------------------------------------- scan and blocks


def test_parallel_scan_equals_sequential_recurrence():
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.uniform(ka, (3, 50, 4, 2), minval=0.5, maxval=1.0)
    b = jax.random.normal(kb, (3, 50, 4, 2))
    par, seq = linear_recurrence(a, b), linear_recurrence_sequential(a, b)
    np.testing.assert_allclose(par, seq, rtol=1e-5, atol=1e-5)
    # and the plain Python loop
    a_np, b_np = np.asarray(a), np.asarray(b)
    h, ref = np.zeros((3, 4, 2)), []
    for t in range(50):
        h = a_np[:, t] * h + b_np[:, t]
        ref.append(h)
    np.testing.assert_allclose(seq, np.stack(ref, 1), rtol=1e-5, atol=1e-5)


def test_block_parallel_scan_equals_sequential_scan(lm):
    model, params, tokens = lm
    parallel, sequential = jax.jit(model.apply), jax.jit(model.clone(scan="sequential").apply)
    for p in (params, mj.mimetic_ssm(params, jax.random.key(1), conv=True, config=model)):
        np.testing.assert_allclose(parallel(p, tokens), sequential(p, tokens), rtol=1e-4, atol=1e-5)


def test_causal_conv_equals_flax_grouped_conv_in_parameters_output_and_gradient():
    from mimetic_jax.experiments.models.mamba import CausalConv, torch_bias_init, torch_linear_init

    channels, d_conv = 12, 4
    ours = CausalConv(channels, d_conv)
    flax_conv = nn.Conv(
        channels,
        (d_conv,),
        padding=((d_conv - 1, 0),),
        feature_group_count=channels,
        kernel_init=torch_linear_init(),
        bias_init=torch_bias_init(d_conv),
    )
    x = jax.random.normal(jax.random.key(1), (3, 10, channels))
    p_ours, p_flax = ours.init(jax.random.key(0), x), flax_conv.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, p_ours, p_flax)  # same names, shapes and values
    np.testing.assert_allclose(ours.apply(p_ours, x), flax_conv.apply(p_flax, x), rtol=1e-6, atol=1e-6)
    g_ours = jax.grad(lambda p: jnp.sum(ours.apply(p, x) ** 2))(p_ours)
    g_flax = jax.grad(lambda p: jnp.sum(flax_conv.apply(p, x) ** 2))(p_flax)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), g_ours, g_flax)


def test_mamba2_quadratic_scan_equals_the_parallel_scan_with_groups_and_gradients():
    tokens = jax.random.randint(jax.random.key(3), (2, 24), 0, 16)
    model = MambaLM(vocab_size=16, d_model=16, n_layer=2, d_state=8, version=2, headdim=8, ngroups=2)
    params = mj.mimetic_ssm(jax.jit(model.init)(jax.random.key(0), tokens), jax.random.key(1), conv="bc", config=model)
    quadratic = model.clone(scan="quadratic")

    @jax.jit
    def value_and_grad(p):
        out = {}
        for name, m in (("quadratic", quadratic), ("parallel", model)):
            out[name] = jax.value_and_grad(lambda p, m=m: cross_entropy(m.apply(p, tokens), tokens))(p)
        return out

    out = value_and_grad(params)
    np.testing.assert_allclose(out["quadratic"][0], out["parallel"][0], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), out["quadratic"][1], out["parallel"][1]
    )
    np.testing.assert_allclose(
        jax.jit(quadratic.apply)(params, tokens), jax.jit(model.apply)(params, tokens), rtol=1e-4, atol=1e-5
    )


def test_quadratic_scan_on_mamba1_names_the_scan_and_the_version():
    model = MambaLM(vocab_size=16, d_model=16, n_layer=1, d_state=8, version=1, scan="quadratic")
    with pytest.raises(ValueError, match="scan='quadratic'.*version=2"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))


def test_blocks_are_causal(lm):
    model, params, tokens = lm
    changed = tokens.at[:, 10].set((tokens[:, 10] + 1) % 16)
    apply = jax.jit(model.apply)
    a, b = apply(params, tokens), apply(params, changed)
    np.testing.assert_allclose(a[:, :10], b[:, :10], rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(a[:, 10:] - b[:, 10:]).max()) > 1e-4


def test_default_init_is_mambas(lm):
    model, params, _ = lm
    mixer = params["params"]["layers_0"]["mixer"]
    if model.version == 1:
        np.testing.assert_allclose(mixer["A_log"][5], np.log(np.arange(1, 9)), rtol=1e-6)
        dt = jax.nn.softplus(mixer["dt_proj"]["bias"])
    else:
        a = np.exp(mixer["A_log"])
        assert a.min() >= 1.0 and a.max() <= 16.0
        dt = jax.nn.softplus(mixer["dt_bias"])
    assert float(dt.min()) >= 1e-4 - 1e-7 and float(dt.max()) <= 0.1 + 1e-6
    np.testing.assert_array_equal(mixer["D"], 1.0)


# --------------------------------------------------------------------------- pure initializers


def test_a_log_init_range_and_retention():
    a = mj.a_log_init(-8.0, -4.0)(jax.random.key(0), (128, 16))
    assert float(a.min()) >= -8.0 and float(a.max()) <= -4.0
    # uniform: mean -6, std 4/sqrt(12); sample of 2048 -> tolerance 5 standard errors
    assert abs(float(a.mean()) + 6.0) < 5 * (4 / math.sqrt(12)) / math.sqrt(a.size)
    # the state keeps at least exp(-L Δ e^{-4}) of any input over L = 64 steps with Δ = 1
    assert float(mj.min_retention(a, 1.0, 64)) >= math.exp(-64 * math.exp(-4.0)) > 0.3


def test_dt_bias_gives_target_delta():
    for delta in (0.01, 1.0, 5.0):
        b = mj.dt_bias_init(delta)(jax.random.key(0), (7,), jnp.float32)
        np.testing.assert_allclose(jax.nn.softplus(b), delta, rtol=1e-5)


def test_identity_conv_is_the_identity_map():
    conv = jax.numpy.asarray(mj.identity_conv_init()(None, (4, 1, 6)))
    x = jax.random.normal(jax.random.key(0), (2, 9, 6))
    y = jax.lax.conv_general_dilated(
        x, conv, (1,), [(3, 0)], dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=6
    )
    np.testing.assert_allclose(y, x, rtol=1e-6)


def _diagonal_dominant(p: np.ndarray) -> bool:
    """``C·B`` diagonal-dominant: diagonal mean above twice the off-diagonal std, ≥ 95 % of it positive.

    The rank-N truncation of ``αZ + βI`` keeps a ratio of about 2.5 at ``N/d = 1/16 .. 1/8``
    (5.5 at ``N/d = 1/2``) with every diagonal entry positive; a random (default) init
    gives a ratio near 0 and half the diagonal positive.
    """
    diag, off = np.diagonal(p), p[~np.eye(len(p), dtype=bool)]
    return bool(diag.mean() > 2 * off.std() and (diag > 0).mean() >= 0.95)


@pytest.mark.parametrize("d_in,n", [(128, 8), (64, 32)])
def test_bc_products_are_diagonal_dominant(d_in, n):
    w_b, w_c = mj.bc_kernels(jax.random.key(0), d_in, n, num_groups=2)
    assert w_b.shape == w_c.shape == (d_in, 2, n)
    for g in range(2):
        p = np.asarray(w_c[:, g] @ w_b[:, g].T)
        assert _diagonal_dominant(p)
        off = p[~np.eye(d_in, dtype=bool)]
        assert abs(off.mean()) < 5 * off.std() / math.sqrt(d_in)  # off-diagonal centred (d_in-ish dof)
    # same key, same kernels; under jit too
    again = jax.jit(lambda k: mj.bc_kernels(k, d_in, n, num_groups=2))(jax.random.key(0))
    np.testing.assert_allclose(again[0], w_b, rtol=1e-5, atol=1e-6)


def test_initializers_keep_dtype():
    for init in (mj.a_log_init(), mj.dt_bias_init(), mj.identity_conv_init()):
        assert init(jax.random.key(0), (4, 1, 8), jnp.bfloat16).dtype == jnp.bfloat16
    assert mj.bc_kernels(jax.random.key(0), 32, 4, dtype=jnp.bfloat16)[0].dtype == jnp.bfloat16


def test_initializer_errors():
    with pytest.raises(
        ValueError, match="d_state \\(40\\) must not exceed the B/C projection input width d_in \\(32\\)"
    ):
        mj.bc_kernels(jax.random.key(0), 32, 40)
    with pytest.raises(ValueError, match="delta must be positive"):
        mj.dt_bias_init(0.0)
    with pytest.raises(ValueError, match="a_log_range must have low <= high"):
        mj.a_log_init(-2.0, -4.0)
    with pytest.raises(ValueError, match="depthwise conv kernel"):
        mj.identity_conv_init()(None, (4, 2, 8))
    with pytest.raises(TypeError, match="floating dtype"):
        mj.a_log_init()(jax.random.key(0), (3,), jnp.int32)


# --------------------------------------------------------------------------- whole-tree transform


def test_mimetic_ssm_structure_and_untouched_leaves(lm):
    model, params, _ = lm
    new = mj.mimetic_ssm(params, jax.random.key(1), config=model)
    flat_old, flat_new = mj._tree.flatten(params), mj._tree.flatten(new)
    changed = {"/".join(p[2:]) for p in flat_old if not np.array_equal(flat_old[p], flat_new[p])}
    if model.version == 1:
        assert changed == {"mixer/A_log", "mixer/dt_proj/bias", "mixer/x_proj/kernel"}
    else:
        assert changed == {"mixer/A_log", "mixer/dt_bias", "mixer/in_proj/kernel"}
    blocks = mj.find_ssm_blocks(params, config=model)
    assert [b.name for b in blocks] == ["params/layers_0/mixer", "params/layers_1/mixer"]
    for block in blocks:
        layer = block.path[1]
        mixer, old = new["params"][layer]["mixer"], params["params"][layer]["mixer"]
        assert float(mj.min_retention(mixer["A_log"], 1.0, 64)) > 0.3
        name = "x_proj" if model.version == 1 else "in_proj"
        dt = mixer["dt_proj"]["bias"] if model.version == 1 else mixer["dt_bias"]
        np.testing.assert_allclose(jax.nn.softplus(dt), 1.0, rtol=1e-5)
        w, w_old = mixer[name]["kernel"], old[name]["kernel"]
        lo, n = block.bc_offset, block.d_state
        np.testing.assert_array_equal(w[:, :lo], w_old[:, :lo])  # Δ (Mamba-1), z and x (Mamba-2) columns kept
        np.testing.assert_array_equal(w[:, lo + 2 * n :], w_old[:, lo + 2 * n :])
        w_b, w_c = w[:, lo : lo + n], w[:, lo + n : lo + 2 * n]
        assert _diagonal_dominant(np.asarray(w_c @ w_b.T))
        old_b, old_c = w_old[:, lo : lo + n], w_old[:, lo + n : lo + 2 * n]
        assert not _diagonal_dominant(np.asarray(old_c @ old_b.T))  # Mamba's default is not


def test_mimetic_ssm_conv_option_and_jit(lm):
    model, params, tokens = lm
    new = mj.mimetic_ssm(params, jax.random.key(1), transition=False, bc=False, conv=True, config=model)
    conv = new["params"]["layers_1"]["mixer"]["conv1d"]
    np.testing.assert_array_equal(conv["kernel"][:-1], 0.0)
    np.testing.assert_array_equal(conv["kernel"][-1], 1.0)
    np.testing.assert_array_equal(conv["bias"], 0.0)
    jitted = jax.jit(lambda p, k: mj.mimetic_ssm(p, k, conv=True, config=model))(params, jax.random.key(1))
    eager = mj.mimetic_ssm(params, jax.random.key(1), conv=True, config=model)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert jnp.isfinite(jax.jit(model.apply)(jitted, tokens)).all()


def test_conv_bc_is_the_identity_on_mamba2_b_c_channels_only_and_leaves_mamba1_alone(lm):
    model, params, _ = lm
    new = mj.mimetic_ssm(params, jax.random.key(1), transition=False, bc=False, conv="bc", config=model)
    old = params["params"]["layers_1"]["mixer"]["conv1d"]
    conv = new["params"]["layers_1"]["mixer"]["conv1d"]
    if model.version == 1:  # B/C come from x_proj after the one conv: nothing to do
        jax.tree.map(np.testing.assert_array_equal, new, params)
        return
    gn = 2 * model.d_state  # B and C of one group
    np.testing.assert_array_equal(conv["kernel"][..., :-gn], old["kernel"][..., :-gn])  # x keeps its conv
    np.testing.assert_array_equal(conv["bias"][:-gn], old["bias"][:-gn])
    np.testing.assert_array_equal(conv["kernel"][:-1, :, -gn:], 0.0)
    np.testing.assert_array_equal(conv["kernel"][-1, :, -gn:], 1.0)
    np.testing.assert_array_equal(conv["bias"][-gn:], 0.0)


def test_conv_option_must_be_a_bool_or_bc(lm):
    _, params, _ = lm
    for bad in ("all", 1, None):
        with pytest.raises(ValueError, match=f"conv must be True, False or 'bc', got {bad!r}"):
            mj.mimetic_ssm(params, jax.random.key(1), conv=bad)


def test_mimetic_ssm_patterns_nnx_and_stacked():
    model = MambaLM(vocab_size=8, d_model=16, n_layer=2, d_state=4)
    params = _zeros_like_init(model)
    only0 = mj.mimetic_ssm(params, jax.random.key(1), include="layers_0")
    np.testing.assert_array_equal(
        only0["params"]["layers_1"]["mixer"]["A_log"], params["params"]["layers_1"]["mixer"]["A_log"]
    )
    assert float(only0["params"]["layers_0"]["mixer"]["A_log"].max()) <= -4.0
    assert len(mj.find_ssm_blocks(params, exclude="layers_1")) == 1
    # other names through a layout
    renamed = jax.tree_util.tree_map(lambda x: x, params)
    renamed["params"]["layers_0"]["mixer"]["A_log_custom"] = renamed["params"]["layers_0"]["mixer"].pop("A_log")
    lay = mj.SSMLayout(version=1, a_log="A_log_custom", x_proj="x_proj", dt_proj="dt_proj")
    assert [b.name for b in mj.find_ssm_blocks(renamed, layouts=[lay])] == ["params/layers_0/mixer"]
    # stacked layers (nn.scan layout): each slice its own draw
    mixer = params["params"]["layers_0"]["mixer"]
    stacked = {"blocks": jax.tree.map(lambda x: jnp.stack([x, x, x]), mixer)}
    out = mj.mimetic_ssm(stacked, jax.random.key(2), stacked_axes=1)
    a = out["blocks"]["A_log"]
    assert a.shape == (3,) + mixer["A_log"].shape and not np.array_equal(a[0], a[1])
    # NNX state
    state = nnx.State({"mixer": jax.tree.map(nnx.Param, mixer)})
    new_state = mj.mimetic_ssm(state, jax.random.key(1))
    assert isinstance(new_state, nnx.State)
    assert float(new_state["mixer"]["A_log"][...].max()) <= -4.0


def test_mimetic_ssm_errors(lm):
    _, params, _ = lm
    with pytest.raises(ValueError, match="no SSM block found"):
        mj.mimetic_ssm({"dense": {"kernel": jnp.ones((3, 3))}}, jax.random.key(0))
    assert mj.mimetic_ssm({"dense": {"kernel": jnp.ones((3, 3))}}, jax.random.key(0), allow_empty=True)
    with pytest.raises(TypeError, match="layouts must hold SSMLayout"):
        mj.mimetic_ssm(params, jax.random.key(0), layouts=["mamba"])
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        mj.SSMLayout(version=3)
    with pytest.raises(ValueError, match="nothing to do"):
        mj.mimetic_ssm(params, jax.random.key(0), transition=False, bc=False)
    bad = jax.tree_util.tree_map(lambda x: x, params)
    mixer = bad["params"]["layers_0"]["mixer"]
    mixer["A_log"] = jnp.concatenate([mixer["A_log"], mixer["A_log"][..., :1]], axis=-1)  # one state too many
    with pytest.raises(ValueError, match="inconsistent shapes"):
        mj.mimetic_ssm(bad, jax.random.key(0))


def test_state_larger_than_projection_is_an_error():
    params = _zeros_like_init(MambaLM(vocab_size=8, d_model=8, n_layer=1, d_state=12, version=2))
    with pytest.raises(ValueError, match="d_state=12 is larger than the B/C projection allows"):
        mj.mimetic_ssm(params, jax.random.key(0), ngroups=1)


# --------------------------------------------------------------------------- tasks and masked loss


def test_copying_answers_are_right_by_construction():
    b = copying(jax.random.key(0), 8, num_tokens=6, vocab_size=10)  # jitted inside
    assert b.inputs.shape == b.targets.shape == b.mask.shape == (8, 12)
    np.testing.assert_array_equal(b.inputs[:, 6], 0)  # the copy marker
    np.testing.assert_array_equal(b.targets[:, 6:], b.inputs[:, :6])  # answers = the tokens, in order
    np.testing.assert_array_equal(b.targets[:, :-1], b.inputs[:, 1:])  # next-token targets
    assert b.mask[:, 6:].all() and not b.mask[:, :6].any()
    assert int(b.inputs[:, :6].min()) >= 1 and int(b.inputs.max()) <= 9
    np.testing.assert_array_equal(copying(jax.random.key(0), 8, num_tokens=6, vocab_size=10).inputs, b.inputs)


def test_mqar_answers_are_right_by_construction():
    b = mqar(jax.random.key(1), 16, seq_len=40, num_pairs=6, vocab_size=33)
    assert b.inputs.shape == (16, 40)
    for x, y, m in zip(np.asarray(b.inputs), np.asarray(b.targets), np.asarray(b.mask)):
        keys, values = x[:12:2], x[1:12:2]
        assert len(set(keys)) == 6 and keys.min() >= 1 and keys.max() <= 16 and values.min() >= 17
        table = dict(zip(keys, values))
        pos = np.flatnonzero(m)
        assert len(pos) == 6 and (pos >= 12).all() and ((pos - 12) % 2 == 0).all()
        assert sorted(x[pos]) == sorted(keys)  # every key queried once
        assert all(y[p] == table[x[p]] for p in pos)  # the answer is the key's value
        rest = np.setdiff1d(np.arange(12, 40), pos)
        assert (x[rest] == 0).all()


def test_task_errors():
    with pytest.raises(ValueError, match="num_pairs \\(40\\) must not exceed the number of keys"):
        mqar(jax.random.key(0), 2, seq_len=256, num_pairs=40, vocab_size=64)
    with pytest.raises(ValueError, match="seq_len \\(20\\) is too short for num_pairs=8"):
        mqar(jax.random.key(0), 2, seq_len=20, num_pairs=8)
    with pytest.raises(TypeError, match="num_tokens must be a positive int"):
        copying(jax.random.key(0), 2, num_tokens=2.5)
    with pytest.raises(ValueError, match="name must be one of 'copying', 'mqar'"):
        sequence_dataset("sort")


def test_sequence_dataset_and_masked_loss():
    # the sizes of test_mqar_answers_are_right_by_construction: one compiled generator for both tests
    data = sequence_dataset("mqar", seed=1, num_train=16, num_test=16, seq_len=40, num_pairs=6, vocab_size=33)
    assert data.x_train.shape == data.x_test.shape == (16, 40) and data.num_classes == 33
    assert ((data.y_train >= 0).sum(axis=1) == 6).all()
    assert not np.array_equal(data.x_train, data.x_test)
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((16, 40, 33)), jnp.float32)
    labels = jnp.asarray(data.y_train)
    valid = np.asarray(labels) >= 0
    logp = np.asarray(jax.nn.log_softmax(logits))
    expected = -np.mean(logp[valid, np.asarray(labels)[valid]])
    np.testing.assert_allclose(cross_entropy(logits, labels), expected, rtol=1e-5)


# --------------------------------------------------------------------------- Mamba-2 group count


def _mamba2(ngroups: int, d_state: int = 8):
    model = MambaLM(vocab_size=16, d_model=16, n_layer=1, d_state=d_state, version=2, headdim=8, ngroups=ngroups)
    return model, _zeros_like_init(model)


def test_mamba2_group_count_is_never_guessed_from_shapes_that_fit_several():
    model, params = _mamba2(ngroups=2)  # 4 heads, G·N = 16: G could be 1, 2 or 4
    with pytest.raises(ValueError, match=r"G·N = 16 with 4 heads, which fits ngroups G in \[1, 2, 4\]; pass ngroups="):
        mj.mimetic_ssm(params, jax.random.key(0))
    with pytest.raises(ValueError, match="pass ngroups="):
        mj.find_ssm_blocks(params)


@pytest.mark.parametrize("source", ["ngroups", "config", "module as config"])
def test_mamba2_group_count_comes_from_the_option_a_config_or_the_module(source):
    model, params = _mamba2(ngroups=2)
    kw = {"ngroups": {"ngroups": 2}, "config": {"config": {"n_groups": 2}}, "module as config": {"config": model}}
    (block,) = mj.find_ssm_blocks(params, **kw[source])
    assert (block.ngroups, block.d_state) == (2, 8)
    new = mj.mimetic_ssm(params, jax.random.key(1), **kw[source])
    mixer = new["params"]["layers_0"]["mixer"]
    w = np.asarray(mixer["in_proj"]["kernel"], np.float64)
    w_b, w_c = np.split(w[:, block.bc_offset : block.bc_offset + 2 * 2 * 8], 2, axis=1)
    for g in range(2):  # the documented construction per group: W_C W_Bᵀ's diagonal is positive
        prod = w_c[:, g * 8 : (g + 1) * 8] @ w_b[:, g * 8 : (g + 1) * 8].T
        assert np.mean(np.diag(prod)) > 3 * np.std(prod - np.diag(np.diag(prod)))


def test_mamba2_group_count_is_one_where_the_shapes_allow_no_other():
    _, params = _mamba2(ngroups=1, d_state=3)  # G·N = 3 with 4 heads: only G = 1 divides both
    (block,) = mj.find_ssm_blocks(params)
    assert (block.ngroups, block.d_state) == (1, 3)
