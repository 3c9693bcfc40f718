"""One sharded model init, run by :mod:`tests.test_distributed` in two processes joined by ``jax.distributed``.

As a script: ``python tests/_distributed_init.py PROCESS_ID PORT OUT.npz`` joins a 2-process CPU
cluster on 127.0.0.1 (4 devices each, gloo collectives), creates the model inside
``jax.jit(init, out_shardings=...)`` over the 8 global devices and saves this process's shards.
"""

from __future__ import annotations

import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

LAYERS, D, HEADS = 2, 64, 8
OPTIONS = {"method": "fast", "num_heads": HEADS, "stacked_axes": 1}


class _Layer(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        q, k, v = (nn.Dense(D, use_bias=False, name=n)(x) for n in ("q_proj", "k_proj", "v_proj"))
        return x + nn.Dense(D, use_bias=False, name="o_proj")(q + k + v), None


class Stack(nn.Module):
    """LLaMA-style attention kernels, layers stacked by ``nn.scan``."""

    @nn.compact
    def __call__(self, x):
        scan = nn.scan(_Layer, variable_axes={"params": 0}, split_rngs={"params": True}, length=LAYERS)
        return scan(name="layers")(x, None)[0]


def init(key, shardings=None):
    """The model's params with mimetic attention (``shardings``: where the kernels will live)."""
    import mimetic_jax as mj

    params = Stack().init(jax.random.key(0), jnp.zeros((1, D)))
    return mj.mimetic_attention(params, key, shardings=shardings, **OPTIONS)


def key():
    return jax.random.key(11)


def _main(process_id: int, port: str, out: str) -> None:
    import numpy as np

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    mesh = jax.make_mesh((8,), ("x",))
    shapes = jax.eval_shape(lambda: Stack().init(jax.random.key(0), jnp.zeros((1, D))))
    shardings = jax.tree.map(lambda _: NamedSharding(mesh, P(None, "x", None)), shapes)  # along d_in
    with jax.set_mesh(mesh):
        params = jax.jit(lambda k: init(k, shardings), out_shardings=shardings)(key())
    saved = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        assert leaf.sharding.is_equivalent_to(NamedSharding(mesh, P(None, "x", None)), leaf.ndim)
        for shard in leaf.addressable_shards:
            rows = shard.index[1]
            saved[f"{jax.tree_util.keystr(path)}|{rows.start}:{rows.stop}"] = np.asarray(shard.data)
    np.savez(out, **saved)


if __name__ == "__main__":
    os.environ["JAX_PLATFORMS"] = "cpu"
    _main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
