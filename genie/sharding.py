"""Data parallelism over every device, with an optional FSDP switch.

One mesh axis, `data`. Batches are split along it. Parameters and optimizer state are
replicated, or with `fsdp=True` each array of at least `FSDP_MIN_SIZE` elements is split along
its largest axis that the device count divides (the rule big_vision calls "fsdp"), so no
module needs sharding annotations. XLA inserts the all-gathers and reduce-scatters.

Multi-host: `genie train STAGE --distributed` calls `jax.distributed.initialize()` before
anything else; the loader then reads a disjoint part of the data on each host and
`jax.make_array_from_process_local_data` assembles the global batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
FSDP_MIN_SIZE = 2**14


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def parameter_spec(shape: tuple[int, ...], devices: int, fsdp: bool) -> P:
    if not fsdp or devices == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
        return P()
    for axis in np.argsort(shape)[::-1]:
        if shape[axis] % devices == 0:
            spec = [None] * len(shape)
            spec[axis] = DATA_AXIS
            return P(*spec)
    return P()


def state_shardings(state, mesh: Mesh, *, fsdp: bool):
    return jax.tree.map(
        lambda x: NamedSharding(mesh, parameter_spec(np.shape(x), mesh.size, fsdp)), state
    )


def shard_state(state, mesh: Mesh, *, fsdp: bool):
    """Places every array of `state` (an nnx.State or any pytree) on the mesh."""
    return jax.device_put(state, state_shardings(state, mesh, fsdp=fsdp))
