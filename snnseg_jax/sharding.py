"""Where arrays live: a 1-D `('data',)` mesh over all devices, batches split along it.

The one place that decides placement. Parameters, optimizer state and statistics are replicated;
batches are sharded on their leading axis. Several hosts would call `jax.distributed.initialize()`
before building the mesh and feed each host's slice of the batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from snnseg_jax.cli import UserError


def data_mesh() -> Mesh:
    """All devices along one `data` axis (also on a single device)."""
    return Mesh(np.array(jax.devices()), ("data",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`."""
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, name: str) -> None:
    """Raises a `UserError` unless `batch_size` splits evenly over the mesh."""
    devices = mesh.devices.size
    if batch_size < 1 or batch_size % devices:
        raise UserError(f"{name} must be a positive multiple of the number of devices ({devices}), "
                        f"got {batch_size}")


def put_batch(batch: dict, sharding: NamedSharding) -> dict:
    """A host batch placed on the devices with `sharding`."""
    return jax.device_put(batch, sharding)
