"""Shared tree checks: ``stacked_axes`` validation and the stacked-layer shape check, in every transform."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import mimetic_jax as mj
from mimetic_jax._tree import common_stack, flatten, match_parts

KEY = jax.random.key(0)


def attention_tree(lead_q=(), lead_k=()):
    """A Flax-layout attention block (d 8, 2 heads of 4) with optional leading (stacked) axes."""
    qkv = (8, 2, 4)
    return {
        "params": {
            "attn": {
                "query": {"kernel": jnp.zeros((*lead_q, *qkv))},
                "key": {"kernel": jnp.zeros((*lead_k, *qkv))},
                "value": {"kernel": jnp.zeros((*lead_q, *qkv))},
                "out": {"kernel": jnp.zeros((*lead_q, 2, 4, 8))},
            }
        }
    }


@pytest.mark.parametrize(
    "call",
    [
        lambda t, s: mj.mimetic_attention(t, KEY, stacked_axes=s),
        lambda t, s: mj.find_attention_blocks(t, stacked_axes=s),
        lambda t, s: mj.mimetic_ssm(t, KEY, stacked_axes=s, allow_empty=True),
        lambda t, s: mj.mimetic_conv(t, KEY, stacked_axes=s, allow_empty=True),
        lambda t, s: mj.analyze(t, stacked_axes=s),
    ],
    ids=["mimetic_attention", "find_attention_blocks", "mimetic_ssm", "mimetic_conv", "analyze"],
)
@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_stacked_axes_must_be_a_non_negative_int(call, bad):
    with pytest.raises(ValueError, match=r"stacked_axes must be an int >= 0"):
        call(attention_tree(), bad)


def test_block_whose_kernels_disagree_on_the_stacked_axes_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"attention block 'params/attn'.*do not share stacked_axes=1"):
        mj.find_attention_blocks(attention_tree(lead_q=(3,), lead_k=(2,)), stacked_axes=1)


def test_common_stack_returns_the_shared_leading_axes_and_rejects_arrays_without_own_axes():
    assert common_stack("b", [(3, 8, 2), (3, 4)], 1) == (3,)
    assert common_stack("b", [(8, 2), (4,)], 0) == ()
    with pytest.raises(ValueError, match="b: shapes"):
        common_stack("b", [(3, 8), (3,)], 1)


def test_match_parts_finds_blocks_whose_parts_sit_in_sibling_subtrees_sorted_and_filtered():
    flat = flatten(
        {
            "b": {"self": {"q": {"kernel": 1}}, "out": {"kernel": 2}},
            "a": {"self": {"q": {"kernel": 3}}, "out": {"kernel": 4}},
            "c": {"self": {"q": {"kernel": 5}}},
            "self": {"q": {"kernel": 6}},
            "out": {"kernel": 7},
        }
    )
    parts = [("self", "q", "kernel"), ("out", "kernel")]
    matches, partial = match_parts(flat, parts, None, None, root=True)
    assert [p for p, _ in matches] == [(), ("a",), ("b",)]  # the root holds both parts; sorted by path
    assert matches[1][1] == (("a", "self", "q", "kernel"), ("a", "out", "kernel"))
    assert partial == [(("c",), (1,))]  # c has the query but no out
    assert [p for p, _ in match_parts(flat, parts, None, None, root=False)[0]] == [("a",), ("b",)]
    assert [p for p, _ in match_parts(flat, parts, None, "^b", root=False)[0]] == [("a",)]
    assert [p for p, _ in match_parts(flat, parts, "b", None, root=True)[0]] == [("b",)]


def test_match_parts_compares_list_indices_by_name():
    flat = {("layers", 0, "attn", "q"): 1, ("layers", 0, "attn", "o"): 2}
    ((parent, paths),) = match_parts(flat, [("attn", "q"), ("attn", "o")], None, None, root=False)[0]
    assert parent == ("layers", 0) and paths[0] == ("layers", 0, "attn", "q")
