"""Where arrays live: a 1-D `('data',)` mesh over the devices of every process, batches split along it.

The one place that decides placement. Parameters, optimizer state and statistics are replicated;
batches are sharded on their leading axis. With several processes (hosts), `start_processes` joins
them through `jax.distributed.initialize()`, and each process reads only the rows of every global
batch that its own devices hold (`process_share`), so the global batches, and with them the losses,
do not depend on how many processes or devices share the work.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from snnseg_jax.cli import UserError

if TYPE_CHECKING:
    from snnseg_jax.data import Dataset


def start_processes(
    initialize: bool, coordinator_address: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
    """Joins the processes of a multi-host run with `jax.distributed.initialize()` if `initialize`.

    Empty / non-positive / negative arguments are left to JAX, which reads them from SLURM, Open
    MPI or a Cloud TPU pod (and the coordinator from `JAX_COORDINATOR_ADDRESS`). Must run before
    anything else touches JAX; a second call in the same process does nothing.
    """
    if not initialize or jax.distributed.is_initialized():
        return
    # JAX's preemption service would take SIGTERM for sync points of its own; training handles the
    # signals itself, alike with one process or several (`preemption`). (Older JAX lacks the option.)
    with contextlib.suppress(AttributeError):
        jax.config.update("jax_enable_preemption_service", False)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address or None,
            num_processes=num_processes if num_processes > 0 else None,
            process_id=process_id if process_id >= 0 else None,
        )
    except (ValueError, TypeError) as error:  # what JAX could neither read nor detect
        raise UserError(
            f"could not start the distributed run (config.distributed): {error}. Outside "
            f"SLURM, Open MPI and Cloud TPU pods set config.distributed.coordinator_address, "
            f"num_processes and process_id"
        ) from None


def is_primary() -> bool:
    """Whether this process writes the run's logs and reports (process 0)."""
    return jax.process_index() == 0


def data_mesh() -> Mesh:
    """All devices of all processes along one `data` axis (also on a single device)."""
    return Mesh(np.array(jax.devices()), ("data",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`."""
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def any_process(flag: bool, mesh: Mesh) -> jax.Array | np.bool_:
    """Whether `flag` is true in any process: a replicated boolean computed by a collective over `mesh`.

    Every process must call it alike (the same number of times, in the same order among its other
    computations). It is dispatched, not waited for: read it later with `bool(...)`. With one process
    the flag is already everyone's: no collective, nothing dispatched.
    """
    if jax.process_count() == 1:
        return np.bool_(flag)
    local = np.full(len(mesh.local_devices), flag)
    votes = jax.make_array_from_process_local_data(batch_sharding(mesh), local, (mesh.devices.size,))
    return _any_of(mesh)(votes)


@functools.cache
def _any_of(mesh: Mesh):
    return jax.jit(jnp.any, out_shardings=replicated(mesh))


def describe(mesh: Mesh) -> str:
    """The devices and processes of `mesh`, in words: "2 cpu devices (cpu) in 1 process"."""
    devices, processes = mesh.devices.size, jax.process_count()
    kinds = sorted({device.device_kind for device in mesh.devices.flat})
    platform = mesh.devices.flat[0].platform
    return (
        f"{devices} {platform} device{'s' if devices > 1 else ''} ({', '.join(kinds)}) in {processes} "
        f"process{'es' if processes > 1 else ''}"
    )


def check_batch_size(batch_size: int, mesh: Mesh, name: str) -> None:
    """Raises a `UserError` unless `batch_size` splits evenly over the mesh."""
    devices = mesh.devices.size
    if batch_size < 1 or batch_size % devices:
        raise UserError(f"{name} must be a positive multiple of the number of devices ({devices}), got {batch_size}")


def local_rows(batch_size: int, mesh: Mesh) -> np.ndarray:
    """The rows of a global batch of `batch_size` that this process's devices hold, ascending."""
    slices = batch_sharding(mesh).addressable_devices_indices_map((batch_size,)).values()
    return np.unique(np.concatenate([np.arange(batch_size)[index] for index in slices]))


def put_batch(batch: dict, sharding: NamedSharding) -> dict:
    """A batch on the devices with `sharding`, each process giving the rows of its own devices.

    `batch` holds the global batch's shape; a process reads only its devices' rows of it (the rows
    `process_share` fills), so the other rows may be placeholders.
    """
    return {
        name: jax.make_array_from_callback(rows.shape, sharding, lambda index, rows=rows: rows[index])
        for name, rows in batch.items()
    }


class ProcessShare:
    """A dataset whose reads fill only this process's rows of each global batch (others zero).

    `read(indices, rng)` takes the indices of a whole global batch (of at most `batch_size`; an
    evaluation batch may be short and is padded later) and returns arrays of that length. Each
    example's augmentation draws from its own generator, seeded from `rng` by its row, so an example
    is augmented alike whichever process reads it.
    """

    def __init__(self, dataset: Dataset, batch_size: int, rows: np.ndarray):
        self.dataset, self.batch_size, self.rows = dataset, batch_size, rows
        self.class_names, self.in_channels = dataset.class_names, dataset.in_channels

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        if len(indices) > self.batch_size:
            raise ValueError(f"read {len(indices)} examples from a share of batches of {self.batch_size}")
        mine = self.rows[self.rows < len(indices)]
        if rng is None or not len(mine):
            inputs, labels = self.dataset.read(indices[mine])
        else:
            seeds = rng.integers(2**63, size=len(indices))  # the same draws on every process
            examples = [self.dataset.read(indices[row : row + 1], np.random.default_rng(seeds[row])) for row in mine]
            inputs, labels = (np.concatenate(arrays) for arrays in zip(*examples))
        if len(mine) == len(indices):
            return inputs, labels
        return _scatter_rows(inputs, mine, len(indices)), _scatter_rows(labels, mine, len(indices))


def _scatter_rows(values: np.ndarray, rows: np.ndarray, length: int) -> np.ndarray:
    full = np.zeros((length, *values.shape[1:]), values.dtype)
    full[rows] = values
    return full


def process_share(dataset: Dataset, batch_size: int, mesh: Mesh) -> ProcessShare:
    """`dataset` read as this process's share of global batches of `batch_size` on `mesh`."""
    return ProcessShare(dataset, batch_size, local_rows(batch_size, mesh))
