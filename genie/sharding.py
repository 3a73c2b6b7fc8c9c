"""Data parallelism over every device, with an optional FSDP switch.

A mesh of two named axes, `data` x `fsdp` (`mesh_for`). Batches are split over both, so every
device reads its own part of the batch. Parameters and optimizer state are replicated, or with
`fsdp=True` each array of at least `FSDP_MIN_SIZE` elements is split over the `fsdp` axis
along its largest dimension that the axis size divides (the rule big_vision calls "fsdp"), and
replicated over `data`: with `fsdp_devices` = all devices (the default) that is plain FSDP,
with fewer it is hybrid sharding (FSDP within groups of devices, data parallel across them).
`parameter_spec` is the one partitioning rule, so no module needs sharding annotations; XLA
inserts the all-gathers and reduce-scatters.

Models are created sharded (`create_sharded`: initialised under jit with these shardings as
outputs), so no process ever holds an unsharded copy, and checkpoints restore into those
sharded arrays.

Multi-host: `genie train STAGE --distributed` calls `initialize_distributed` before anything
else; the loader then reads a disjoint part of the data on each host and
`jax.make_array_from_process_local_data` assembles the global batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # a batch is split over every device
FSDP_MIN_SIZE = 2**14


def make_mesh(devices=None, *, fsdp_devices: int = 1) -> Mesh:
    """`devices` (default: all) as a (data, fsdp) mesh with `fsdp_devices` on the fsdp axis."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    if fsdp_devices < 1 or devices.size % fsdp_devices:
        raise ValueError(
            f"fsdp_devices {fsdp_devices} does not divide the {devices.size} devices into groups"
        )
    return Mesh(devices.reshape(devices.size // fsdp_devices, fsdp_devices), BATCH_AXES)


def mesh_for(config) -> Mesh:
    """The mesh a run of `config` trains on: with `fsdp`, `fsdp_devices` devices (0: all) on
    the fsdp axis; without, every device on the data axis."""
    if config.fsdp_devices and not config.fsdp:
        raise ValueError(f"fsdp_devices {config.fsdp_devices} needs --fsdp")
    fsdp_devices = (config.fsdp_devices or jax.device_count()) if config.fsdp else 1
    return make_mesh(fsdp_devices=fsdp_devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh (both axes)."""
    return NamedSharding(mesh, P(BATCH_AXES))


def parameter_spec(shape: tuple[int, ...], devices: int, fsdp: bool) -> P:
    """The partitioning rule of every parameter and optimizer-state array: with `fsdp`, arrays
    of at least FSDP_MIN_SIZE elements are split over the fsdp axis (of `devices` devices)
    along their largest dimension it divides; everything else is replicated."""
    if not fsdp or devices == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
        return P()
    for axis in np.argsort(shape)[::-1]:
        if shape[axis] % devices == 0:
            spec = [None] * len(shape)
            spec[axis] = FSDP_AXIS
            return P(*spec)
    return P()


def state_shardings(state, mesh: Mesh, *, fsdp: bool):
    """The sharding of every array of `state` (arrays or jax.ShapeDtypeStructs) on `mesh`."""
    devices = mesh.shape[FSDP_AXIS]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, parameter_spec(tuple(x.shape), devices, fsdp)), state
    )


def create_sharded(make: Callable[[], object], mesh: Mesh, *, fsdp: bool):
    """Builds the nnx object `make()` returns (a module, an optimizer or a tuple or dict of
    them) with every array created directly in its sharding: `make` runs under jit with the
    shardings as outputs, after an abstract pass (nnx.eval_shape) that costs no memory."""
    graphdef, abstract = nnx.split(nnx.eval_shape(make))
    shardings = state_shardings(abstract, mesh, fsdp=fsdp)
    state = jax.jit(lambda: nnx.split(make())[1], out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def replicated(tree, mesh: Mesh):
    """Every array of `tree` as a full copy on every device of `mesh` (for pictures: a
    function of replicated inputs has outputs each process can read whole)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


# Environment variables read by `initialize_distributed` when a setting is not given.
DISTRIBUTED_ENV = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """`jax.distributed.initialize` with the standard settings from arguments, else from the
    environment (DISTRIBUTED_ENV), else detected by jax (SLURM, Open MPI, TPU pods). On CPU the
    processes talk through gloo collectives (one CPU device per process)."""
    settings = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    for name, variable in DISTRIBUTED_ENV.items():
        if settings[name] is None and os.environ.get(variable):
            value = os.environ[variable]
            settings[name] = value if name == "coordinator_address" else int(value)
    given = {name: value for name, value in settings.items() if value is not None}
    if given and len(given) < len(settings):
        missing = sorted(set(settings) - set(given))
        flags = ", ".join(
            f"--{name.replace('_', '-')} (or {DISTRIBUTED_ENV[name]})" for name in missing
        )
        raise ValueError(f"--distributed outside a detected cluster also needs {flags}")
    # Only the CPU backend reads this; accelerators keep their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**given)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (a collective: every process must call
    it at the same point)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
