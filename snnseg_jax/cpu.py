"""Process and compiler settings that make training on CPU faster.

Entry points call `keep_freed_memory()` once, before the first computation, and compile their
steps with `jax.jit(..., compiler_options=compiler_options())`. Results do not change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import jax
import jax.numpy as jnp

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8

# YNNPACK (XLA's CPU library for dots, convolutions and reductions) for matrix products and
# reductions only: its convolution weight gradients run 1.5-2x slower than XLA's own convolutions.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def keep_freed_memory() -> bool:
    """Makes glibc malloc keep freed memory for reuse instead of returning it to the system.

    XLA on CPU allocates its buffers afresh at every step; glibc serves large ones with new
    memory mappings that the kernel zero-fills page by page on first touch, which costs about a
    tenth of a train step here. Kept memory is reused without that cost; the process keeps its
    peak memory. Call before the first computation, so that XLA's threads, created then, share
    one arena (it only concerns host memory: harmless with an accelerator). Returns whether the
    settings took effect (False without glibc).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all([mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, 2**31 - 1), mallopt(_M_ARENA_MAX, 1)])


@functools.lru_cache(maxsize=None)
def compiler_options() -> dict[str, str]:
    """XLA compiler options for the train and eval steps on the default backend (empty off CPU,
    and where this XLA does not know them)."""
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(jnp.negative).lower(jnp.zeros(2)).compile(compiler_options=_CPU_OPTIONS)
    except Exception:  # an XLA without these options: its defaults
        return {}
    return dict(_CPU_OPTIONS)
