"""snnseg_jax: spiking neural networks for semantic segmentation, trained with surrogate gradients."""

import jax

__version__ = "0.1.0"

# The one JAX setting of the project. Random bits are generated shard by shard where a sharded batch
# lives (no gathering), and their values depend on the key and the shape alone, so the Poisson
# spikes are the same on one device or many. The default since JAX 0.5; set because the older
# algorithm draws other bits.
jax.config.update("jax_threefry_partitionable", True)
