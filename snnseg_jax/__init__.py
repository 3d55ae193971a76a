"""snnseg_jax: spiking neural networks for semantic segmentation, trained with surrogate gradients."""

__version__ = "0.1.0"
