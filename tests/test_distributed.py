"""Many hosts, shown on one: two processes joined by ``jax.distributed`` initialize one sharded model.

Each process (4 CPU devices, gloo collectives, coordinator on 127.0.0.1) creates the model
inside ``jax.jit(init, out_shardings=...)`` over the 8 global devices; the shards each process
holds equal the single-process result with the same key.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import _distributed_init as dist
import jax
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # two fresh JAX processes: 20-60 s on 2 cores

WORKER = pathlib.Path(dist.__file__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_hold_the_shards_of_the_single_process_result(tmp_path):
    port = str(_free_port())
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    env = {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=4".strip()}
    env["PYTHONPATH"] = os.pathsep.join([str(pathlib.Path.cwd()), env.get("PYTHONPATH", "")])
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(i), port, str(tmp_path / f"{i}.npz")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)
    ref = {
        jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(dist.init(dist.key()))
    }
    seen: dict[str, set[int]] = {}
    for i in range(2):
        with np.load(tmp_path / f"{i}.npz") as shards:
            assert len(shards.files) == 4 * len(ref)  # four devices' shards of every leaf
            for name in shards.files:
                path, rows = name.split("|")
                start, stop = (int(r) for r in rows.split(":"))
                # within float32 rounding: XLA partitions the row-split construction (as in test_sharding)
                np.testing.assert_allclose(shards[name], ref[path][:, start:stop], atol=1e-7, rtol=0, err_msg=name)
                seen.setdefault(path, set()).update(range(start, stop))
    assert all(rows == set(range(dist.D)) for rows in seen.values()) and set(seen) == set(ref)
